//! How the pool keeps its shared pages unreadable at rest.

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
    /// alone. No system call per create (from bytes), read or close in a free slot. Refused with
    /// [`Error::Unsupported`](crate::Error::Unsupported) where the machine
    /// has no protection keys, or where the allocating thread's PKRU
    /// already allowed the key (see [`protection_keys_status`]).
    ProtectionKey,
    /// `ProtectionKey` where keys work and the kernel reports the CPU not
    /// affected by Meltdown (see [`keys_resist_speculation`]), else `ProtNone`.
    Auto,
}

/// Whether memory protection keys work in this process: `Ok`, or why not.
/// The first call allocates the key the pool uses (one of the 15 a process
/// has), access-disabled in the calling thread, and refuses it if that
/// thread's PKRU allowed it before (the program or the system default
/// opens keys).
pub fn protection_keys_status() -> Result<(), String> {
    crate::mem::pkey::pool_key().map(|_| ())
}

/// Whether the kernel reports this CPU not affected by Meltdown
/// (`/sys/devices/system/cpu/vulnerabilities/meltdown` says "Not affected").
/// CPUs affected by Meltdown were also shown to read across protection keys
/// speculatively (Meltdown-PK), so [`PoolProtection::Auto`] uses keys only
/// where this is `true`. Unknown (the file unreadable) counts as affected.
pub fn keys_resist_speculation() -> bool {
    std::fs::read_to_string("/sys/devices/system/cpu/vulnerabilities/meltdown")
        .is_ok_and(|s| s.trim() == "Not affected")
}
