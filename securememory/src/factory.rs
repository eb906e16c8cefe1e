//! Factories and their options.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use zeroize::Zeroize;

use crate::backend::Backend;
use crate::budget::LockPolicy;
use crate::error::{Error, Result};
use crate::mem::copy;
use crate::mem::pkey::{self, Pkey};
use crate::mem::region::{BackingKind, Region, RegionSpec};
use crate::mem::sys;
use crate::pool_protection::PoolProtection;
use crate::secret::{AccessPath, Secret, Storage, CANARY_LEN};
use crate::{metrics, pool};

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
}

/// Core-dump policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CoreDumps {
    /// Leave secrets out of core dumps with `MADV_DONTDUMP` on their pages;
    /// the rest of the process still dumps (the default).
    #[default]
    ExcludeSecrets,
    /// Also set the process's `RLIMIT_CORE` to zero when the factory is made,
    /// as Asherah Go does: no core file at all. Process-wide and permanent.
    DisableForProcess,
}

/// Options of a [`ProtectedFactory`].
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

/// Makes [`Secret`]s. Asherah Go's `SecretFactory`.
pub trait SecretFactory: Send + Sync {
    /// Copy `bytes` into protected memory and wipe `bytes`. If creation
    /// fails, `bytes` is left as it was (so the caller may retry) and
    /// nothing is leaked.
    #[allow(clippy::new_ret_no_self, clippy::wrong_self_convention)]
    fn new(&self, bytes: &mut [u8]) -> Result<Secret>;

    /// A secret of `len` bytes from the operating system's CSPRNG, written
    /// straight into protected memory.
    fn create_random(&self, len: usize) -> Result<Secret>;

    /// A secret of exactly `len` bytes read from `reader`. The library asks
    /// `reader` to write straight into protected memory (the secret's
    /// pages, or for a pooled secret the thread's locked scratch buffer)
    /// and makes no copy of its own, but whatever buffering `reader` does
    /// is outside its control: a `BufReader`, and std's
    /// [`stdin()`](std::io::stdin) (which is one, 8 KiB on the heap), keep
    /// a copy in ordinary memory that nobody wipes. For a file or pipe use
    /// [`from_fd`](Self::from_fd), for standard input
    /// [`from_stdin`](Self::from_stdin). Fails with [`Error::ReadFailed`]
    /// if the reader ends early.
    #[allow(clippy::wrong_self_convention)]
    fn from_reader(&self, reader: &mut dyn Read, len: usize) -> Result<Secret>;

    /// A secret of exactly `len` bytes read from the descriptor `fd` (a
    /// file, pipe or socket) by read(2) straight into protected memory (the
    /// secret's pages, or for a pooled secret the thread's locked, wiped
    /// scratch buffer): no copy in ordinary memory, and nothing past the
    /// `len` bytes is consumed. Blocks until `len` bytes have come. Fails
    /// with [`Error::ReadFailed`] if the input ends early (or the
    /// descriptor is non-blocking and empty); the bytes read by then are
    /// wiped and gone from the input.
    #[allow(clippy::wrong_self_convention)]
    fn from_fd(&self, fd: BorrowedFd<'_>, len: usize) -> Result<Secret>;

    /// [`from_fd`](Self::from_fd) on standard input (descriptor 0),
    /// bypassing std's buffered [`Stdin`](std::io::Stdin): the bytes never
    /// pass through its heap buffer, and what follows them is left for the
    /// program to read. Call it before anything reads stdin through std:
    /// bytes std has already buffered are not seen here.
    #[allow(clippy::wrong_self_convention)]
    fn from_stdin(&self, len: usize) -> Result<Secret> {
        self.from_fd(std::io::stdin().as_fd(), len)
    }
}

/// Where the bytes of a new secret come from.
pub(crate) enum Source<'a> {
    Bytes(&'a [u8]),
    Random,
    Reader(&'a mut dyn Read),
    /// read(2) on a descriptor: no buffer in between.
    Fd(BorrowedFd<'a>),
}

impl Source<'_> {
    /// Write exactly `dst.len()` bytes into `dst` (protected memory: a new
    /// secret's pages or locked scratch). Every source but `Bytes` is a
    /// kernel copy (or the reader's own); `Bytes` is copied with no vector
    /// register and no `memcpy` (see [`copy`]).
    pub(crate) fn fill(&mut self, dst: &mut [u8]) -> Result<()> {
        match self {
            Source::Bytes(b) => {
                copy::copy(dst, b);
                Ok(())
            }
            Source::Random => sys::fill_random(dst).map_err(Error::RandomFailed),
            Source::Reader(r) => r.read_exact(dst).map_err(Error::ReadFailed),
            Source::Fd(fd) => sys::read_exact_fd(*fd, dst).map_err(Error::ReadFailed),
        }
    }
}

/// The factory of protected-memory secrets. `ProtectedFactory::default()` is
/// one page per secret on the memfd backend with the copy access path.
///
/// ```
/// use securememory::{Layout, Options, ProtectedFactory, SecretFactory};
/// let guarded = ProtectedFactory::new(Options::default().layout(Layout::Guarded))?;
/// let key = guarded.create_random(32)?;
/// assert_eq!(key.len(), 32);
/// # Ok::<(), securememory::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ProtectedFactory {
    opts: Options,
    /// The pool's protection key (`PoolProtection::ProtectionKey` only).
    key: Option<Pkey>,
}

impl Default for ProtectedFactory {
    fn default() -> Self {
        // The process-wide fork machinery exists before the first secret.
        crate::fork::install();
        ProtectedFactory {
            opts: Options::default()
                .backend(Backend::Memfd)
                .access(AccessPath::Copy),
            key: None,
        }
    }
}

impl ProtectedFactory {
    /// A factory with `opts`. Resolves `Backend::Auto` (probing
    /// `memfd_secret` until the answer is final) and checks the combination.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a combination that cannot work: the copy
    /// path or the pooled layout without the memfd backend, the pooled layout on the window path, or an explicit
    /// backend this kernel lacks, or `PoolProtection::ProtectionKey` without
    /// the pooled layout or on a machine without protection keys. For
    /// `MemfdSecret` or `Auto`, a probe refused for lack of a resource is
    /// that error ([`Error::LimitReached`], say); it is not remembered.
    pub fn new(opts: Options) -> Result<ProtectedFactory> {
        crate::fork::install();
        let mut opts = opts;
        opts.backend = match (opts.backend, opts.layout) {
            // The pool reads by kernel copy only: memfd.
            (Backend::Auto, Layout::Pooled) => Backend::Memfd,
            (b, _) => b.try_resolve()?,
        };
        if opts.backend == Backend::MemfdSecret {
            crate::backend::memfd_secret_check()?;
        }
        if opts.layout == Layout::Pooled && opts.backend != Backend::Memfd {
            return Err(Error::Unsupported(format!(
                "the pooled layout needs Backend::Memfd, not {:?}",
                opts.backend
            )));
        }
        opts.access = match (opts.access, opts.backend) {
            (AccessPath::Auto, Backend::Memfd) => AccessPath::Copy,
            (AccessPath::Auto, _) => AccessPath::Window,
            (AccessPath::Copy, Backend::Memfd) => AccessPath::Copy,
            (AccessPath::Copy, b) => {
                return Err(Error::Unsupported(format!(
                    "the copy access path needs Backend::Memfd, not {b:?}"
                )))
            }
            (AccessPath::Window, _) if opts.layout == Layout::Pooled => {
                return Err(Error::Unsupported(
                    "pooled secrets are read by the copy path only".into(),
                ))
            }
            (p, _) => p,
        };
        let key = resolve_pool_protection(&mut opts)?;
        if opts.core_dumps == CoreDumps::DisableForProcess {
            crate::disable_core_dumps()?;
        }
        Ok(ProtectedFactory { opts, key })
    }

    /// The options in force, with `Auto` resolved.
    pub fn options(&self) -> Options {
        self.opts
    }

    fn create(&self, len: usize, mut src: Source<'_>) -> Result<Secret> {
        if len == 0 {
            return Err(Error::InvalidSize {
                size: 0,
                reason: "a secret needs at least one byte",
            });
        }
        if len > isize::MAX as usize / 4 {
            return Err(Error::InvalidSize {
                size: len,
                reason: "too large to map",
            });
        }
        // Locked memory cannot be swapped out: a request past the machine's
        // RAM could only end with the OOM killer (with CAP_IPC_LOCK, no
        // memlock limit stops it first).
        if sys::physical_memory().is_some_and(|ram| len as u64 > ram) {
            return Err(Error::InvalidSize {
                size: len,
                reason: "larger than the machine's physical memory",
            });
        }
        let opts = self.opts;
        let started = Instant::now();
        let storage = if opts.layout == Layout::Pooled && len <= pool::MAX_SLOT {
            Storage::Slot(pool::create(len, &mut src, opts.lock, self.key)?)
        } else {
            self.create_pages(len, &mut src, &opts)?
        };
        metrics::created(started.elapsed());
        crate::shield::shield(
            || tracing::debug!(len, backend = ?opts.backend, layout = ?opts.layout, "securememory: secret created"),
        );
        Ok(Secret::new(
            storage,
            len,
            opts.access,
            opts.backend,
            opts.lock,
        ))
    }

    fn create_pages(&self, len: usize, src: &mut Source<'_>, opts: &Options) -> Result<Storage> {
        let guarded = opts.layout == Layout::Guarded;
        let spec = RegionSpec {
            len: if guarded { len + CANARY_LEN } else { len },
            guard: guarded,
            backing: match opts.backend {
                Backend::Anonymous => BackingKind::Anonymous,
                Backend::MemfdSecret => BackingKind::MemfdSecret,
                _ => BackingKind::Memfd,
            },
            lock: opts.lock,
        };
        let mut canary = None;
        if guarded {
            let mut c = [0u8; CANARY_LEN];
            sys::fill_random(&mut c).map_err(Error::RandomFailed)?;
            canary = Some(c);
        }
        let mut off = 0;
        let region = Region::create(spec, |data| {
            if let Some(c) = &canary {
                // Flush against the trailing guard page, canary just before.
                off = data.len() - len;
                data[off - CANARY_LEN..off].copy_from_slice(c);
            }
            src.fill(&mut data[off..off + len])
        })?;
        Ok(Storage::Pages {
            region,
            off,
            canary,
        })
    }
}

/// Resolve `opts.pool_protection` (`Auto`, and to `ProtNone` for layouts
/// other than pooled) and return the pool's key if it uses one.
fn resolve_pool_protection(opts: &mut Options) -> Result<Option<Pkey>> {
    let pooled = opts.layout == Layout::Pooled;
    match (opts.pool_protection, pooled) {
        (PoolProtection::ProtectionKey, false) => Err(Error::Unsupported(
            "PoolProtection::ProtectionKey applies to Layout::Pooled only".into(),
        )),
        (PoolProtection::ProtectionKey, true) => pkey::pool_key()
            .map(Some)
            .map_err(|why| Error::Unsupported(format!("PoolProtection::ProtectionKey: {why}"))),
        (PoolProtection::Auto, true) => {
            let key = pkey::pool_key()
                .ok()
                .filter(|_| crate::pool_protection::keys_resist_speculation());
            opts.pool_protection = match key {
                Some(_) => PoolProtection::ProtectionKey,
                None => PoolProtection::ProtNone,
            };
            Ok(key)
        }
        (_, _) => {
            opts.pool_protection = PoolProtection::ProtNone;
            Ok(None)
        }
    }
}

impl SecretFactory for ProtectedFactory {
    fn new(&self, bytes: &mut [u8]) -> Result<Secret> {
        let s = self.create(bytes.len(), Source::Bytes(bytes))?;
        bytes.zeroize();
        Ok(s)
    }

    fn create_random(&self, len: usize) -> Result<Secret> {
        self.create(len, Source::Random)
    }

    fn from_reader(&self, reader: &mut dyn Read, len: usize) -> Result<Secret> {
        self.create(len, Source::Reader(reader))
    }

    fn from_fd(&self, fd: BorrowedFd<'_>, len: usize) -> Result<Secret> {
        self.create(len, Source::Fd(fd))
    }
}
