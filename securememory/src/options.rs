//! Every option of a factory, as plain data. What `Auto` stands for on this
//! machine and which combinations are allowed is decided in `resolve.rs`
//! (above the probes it asks).

/// The memory that backs secrets. The default is `Memfd` on Linux and
/// `Anonymous` elsewhere (the only backend other systems have).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A range of one process-wide memory file (`memfd_create`), mapped
    /// shared, locked, do-not-dump, do-not-fork, `PROT_NONE` at rest. Allows
    /// the copy access path (reads are a kernel copy; the mapping never
    /// becomes readable, except in a `with_bytes` of a secret larger than
    /// the scratch buffer). The default on Linux; Linux only.
    Memfd,
    /// Private anonymous memory, locked, do-not-dump, wipe-on-fork,
    /// `PROT_NONE` at rest; read through an `mprotect` window. Asherah Go's
    /// design. The one backend on macOS, FreeBSD and Windows (there:
    /// `VirtualAlloc`, `VirtualLock`, `PAGE_NOACCESS` at rest).
    Anonymous,
    /// `memfd_secret` (Linux 5.14+): pages removed from the kernel's direct
    /// map, so not readable through `/proc/<pid>/mem`, by ptrace, or by most
    /// of the kernel. Locked by the kernel (counted against
    /// `RLIMIT_MEMLOCK`), do-not-fork, `PROT_NONE` at rest; read through an
    /// `mprotect` window. Linux only.
    MemfdSecret,
    /// `MemfdSecret` where this kernel allows it, else `Memfd` (always
    /// `Memfd` with `Layout::Pooled`). Whether the
    /// kernel allows it is probed until the answer is final (see
    /// [`memfd_secret_status`](crate::memfd_secret_status)); ask [`Backend::resolve`](Backend::resolve) which one you get.
    /// `Anonymous` on systems other than Linux.
    Auto,
}

impl Default for Backend {
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            Backend::Memfd
        } else {
            Backend::Anonymous
        }
    }
}

/// How secrets are laid out in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Pages of its own for each secret (Asherah Go's `protectedmemory`).
    #[default]
    Page,
    /// Pages of its own between two guard pages, the secret flush against the
    /// trailing guard and a random canary in front of it, checked at close
    /// (Asherah Go's memguard-based implementation). On the copy path the
    /// copy the closure sees is flush against a guard page too, so reading
    /// one byte past its end faults on either path.
    Guarded,
    /// Small secrets (up to [`pool::MAX_SLOT`](crate::POOL_MAX_SLOT) bytes)
    /// share locked pages, fenced by guard pages; larger ones get pages of
    /// their own. Needs the memfd backend. Every read is a copy into the
    /// reader's scratch buffer (a kernel copy, or with
    /// [`PoolProtection::ProtectionKey`] a user-space copy with the key open
    /// in that thread for the copy alone), so a secret's page-mates are not
    /// exposed while it is read.
    Pooled,
    /// Encrypted at rest (AES-256-GCM), for more secrets than the
    /// memlock limit allows: the ciphertexts live in unlocked memory left
    /// out of core dumps and zeroed in fork children, the sealing key in a
    /// locked pool slot (protected as [`Options::pool_protection`] says).
    /// Every access copies the key into the calling thread's scratch buffer
    /// and opens the secret there, beside it; both are wiped when the
    /// access returns. A ciphertext that fails authentication is
    /// [`Error::AuthenticationFailed`](crate::Error::AuthenticationFailed).
    /// Secrets of up to [`SEALED_MAX_LEN`](crate::SEALED_MAX_LEN) bytes;
    /// memfd backend and copy path only.
    Sealed,
}

/// How an access reaches the bytes. Chosen on the factory
/// ([`Options::access`](crate::Options)) and reported by
/// [`Secret::access_path`](crate::Secret::access_path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AccessPath {
    /// The copy path where the backend allows it (memfd), else the window.
    #[default]
    Auto,
    /// The kernel copies the secret (`pread` on the memory file) into a
    /// per-thread locked, do-not-dump, wipe-on-fork scratch buffer that is
    /// wiped when the closure returns. The secret's own pages stay
    /// `PROT_NONE` throughout: no page-table change, no cross-CPU interrupt.
    /// A secret larger than the scratch buffer
    /// ([`scratch_capacity`](crate::scratch_capacity)) uses the window instead.
    /// A pool with [`PoolProtection::ProtectionKey`](crate::PoolProtection)
    /// is the exception to the kernel copy and to `PROT_NONE`: its pages are
    /// read-write in the page tables, denied by the key, and the copy is a
    /// user-space copy (no vector register) with the key open in the calling
    /// thread.
    Copy,
    /// The secret's pages are made readable (`mprotect`) while at least one
    /// access is in flight; overlapping accesses share one window. The
    /// closure sees the secret in place. Asherah Go's design.
    Window,
}

/// What to do when memory cannot be locked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LockPolicy {
    /// Refuse with [`Error::LockFailed`](crate::Error::LockFailed) (the default).
    #[default]
    Require,
    /// Keep going with unlocked (swappable) memory, with a `tracing` warning
    /// and the `secret.unlocked` counter raised each time. An explicit opt-in
    /// for machines that cannot lock at all; never chosen silently.
    AllowUnlocked,
}

/// Core-dump policy. The default is `ExcludeSecrets`, except on macOS:
/// there no call leaves a range of memory out of a core dump, so the only
/// policy that keeps secrets out of one is `DisableForProcess`, and it is
/// the default (`ExcludeSecrets` is refused with
/// [`Error::Unsupported`](crate::Error::Unsupported)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoreDumps {
    /// Leave secrets out of core dumps with `MADV_DONTDUMP` on their pages
    /// (FreeBSD: `MADV_NOCORE`); the rest of the process still dumps (the
    /// default, except on macOS).
    ExcludeSecrets,
    /// Also set the process's `RLIMIT_CORE` to zero when the factory is made,
    /// as Asherah Go does: no core file at all. Process-wide and permanent.
    DisableForProcess,
}

impl Default for CoreDumps {
    fn default() -> Self {
        if cfg!(target_os = "macos") {
            CoreDumps::DisableForProcess
        } else {
            CoreDumps::ExcludeSecrets
        }
    }
}

/// How pooled secrets ([`Layout::Pooled`](crate::Layout::Pooled)) are kept
/// unreadable outside an access. Ignored by the other layouts (an explicit
/// [`ProtectionKey`](PoolProtection::ProtectionKey) with them is refused).
///
/// | | `ProtNone` (default) | `ProtectionKey` |
/// |---|---|---|
/// | pool pages in the page tables | `PROT_NONE`, always | read-write, tagged with a protection key |
/// | who can read a slot at rest | no thread | no thread that never opened the key (see below) |
/// | during an access | nobody: the bytes are copied into the thread's scratch buffer | the same; the key is open in the copying thread only, for the copy alone |
/// | create / read / close in a free slot | one `pwrite` / one `pread` / one `pwrite` | no system call |
/// | stray pointer, `write(2)` from a slot | `SIGSEGV` / `EFAULT` | `SIGSEGV` (`SEGV_PKUERR`) / `EFAULT` |
/// | needs | Linux | x86_64 with PKU (`pku` and `ospke` CPU flags) |
///
/// Both keep the pages locked, out of core dumps and out of fork children.
///
/// A key's rights live in each thread's PKRU register, and nothing sets
/// them in every thread at once. What holds: the library opens the key in
/// the copying thread around each of its copies only, and closes it after
/// (even if it was open before). A thread that never opened it denies it: it
/// holds the kernel's default (every key but 0 denied, unless an
/// administrator changed that default), as do signal handlers. A thread
/// whose PKRU the program set to allow the key (say `WRPKRU 0`, all keys
/// open), or one created by such a thread (new threads inherit PKRU), can
/// read pool pages. The library refuses the key
/// ([`Error::Unsupported`](crate::Error::Unsupported); `Auto` then falls back
/// to `ProtNone`) if the PKRU of the thread that allocates it (the first to
/// ask for it) allowed it before the allocation.
///
/// What the key does not stop: code that runs in the process and executes
/// `WRPKRU` itself (as code that can call `mprotect` defeats `PROT_NONE`),
/// a thread started from inside the library's copy (none is), reads through
/// `/proc/<pid>/mem` or `ptrace` (which bypass `PROT_NONE` as well), and on
/// CPUs affected by the Meltdown-PK flaw, speculative reads (`Auto` does not
/// pick keys there; `PROT_NONE` pages are not present in the page tables,
/// which the kernel's L1TF mitigation covers).
///
/// ```
/// use securememory::{Layout, Options, PoolProtection, ProtectedFactory, SecretFactory};
/// // The protection key where the machine has one (and is not affected by
/// // Meltdown), PROT_NONE pages otherwise.
/// let factory = ProtectedFactory::new(
///     Options::default().layout(Layout::Pooled).pool_protection(PoolProtection::Auto),
/// )?;
/// let key = factory.create_random(32)?;
/// assert_eq!(key.with_bytes(|b| b.len())?, 32);
/// # Ok::<(), securememory::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PoolProtection {
    /// Pool pages are `PROT_NONE` for their whole life; slots are written,
    /// read and wiped by kernel copies on the memory file.
    #[default]
    ProtNone,
    /// Pool pages carry a memory protection key that denies access in every
    /// thread that never opened it (see the table above for what that
    /// covers); the library opens it in the calling thread for each copy
    /// alone. No system call per create (from bytes), read or close in a
    /// free slot. Refused with
    /// [`Error::Unsupported`](crate::Error::Unsupported) where the machine
    /// has no protection keys, or where the allocating thread's PKRU
    /// already allowed the key (see [`protection_keys_status`](crate::protection_keys_status)).
    ProtectionKey,
    /// `ProtectionKey` where keys work and the kernel reports the CPU not
    /// affected by Meltdown (see [`keys_resist_speculation`](crate::keys_resist_speculation)), else `ProtNone`.
    Auto,
}

/// Options of a [`ProtectedFactory`](crate::ProtectedFactory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Options {
    /// The memory that backs secrets.
    pub backend: Backend,
    /// One secret per page, guarded, or pooled.
    pub layout: Layout,
    /// How accesses reach the bytes.
    pub access: AccessPath,
    /// What to do when memory cannot be locked.
    pub lock: LockPolicy,
    /// Core-dump policy.
    pub core_dumps: CoreDumps,
    /// How pooled secrets are kept unreadable at rest.
    pub pool_protection: PoolProtection,
}

impl Options {
    /// Set the backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }
    /// Set the layout.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
    /// Set the access path.
    pub fn access(mut self, access: AccessPath) -> Self {
        self.access = access;
        self
    }
    /// Set the lock policy.
    pub fn lock(mut self, lock: LockPolicy) -> Self {
        self.lock = lock;
        self
    }
    /// Set the core-dump policy.
    pub fn core_dumps(mut self, core_dumps: CoreDumps) -> Self {
        self.core_dumps = core_dumps;
        self
    }
    /// Set how pooled secrets are kept unreadable at rest.
    pub fn pool_protection(mut self, pool_protection: PoolProtection) -> Self {
        self.pool_protection = pool_protection;
        self
    }
}
