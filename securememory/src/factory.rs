//! Factories: resolve the options (see `options.rs`), hand out secrets.

use std::io::Read;
#[cfg(unix)]
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::mem::pkey::Pkey;
use crate::mem::region::MAX_SECRET_LEN;
use crate::mem::sys;
use crate::metrics;
use crate::options::{CoreDumps, Options};
use crate::resolve::Resolved;
use crate::secret::Secret;
use crate::source::Source;
use crate::storage::Storage;

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
    /// wiped and gone from the input. Unix only.
    #[cfg(unix)]
    #[allow(clippy::wrong_self_convention)]
    fn from_fd(&self, fd: BorrowedFd<'_>, len: usize) -> Result<Secret>;

    /// [`from_fd`](Self::from_fd) on standard input (descriptor 0),
    /// bypassing std's buffered [`Stdin`](std::io::Stdin): the bytes never
    /// pass through its heap buffer, and what follows them is left for the
    /// program to read. Call it before anything reads stdin through std:
    /// bytes std has already buffered are not seen here. On Windows the
    /// standard input handle is read with `ReadFile` in the same way.
    #[cfg(unix)]
    #[allow(clippy::wrong_self_convention)]
    fn from_stdin(&self, len: usize) -> Result<Secret> {
        self.from_fd(std::io::stdin().as_fd(), len)
    }

    /// See the Unix `from_stdin`: standard input read with `ReadFile`
    /// straight into protected memory, bypassing std's buffer.
    #[cfg(windows)]
    #[allow(clippy::wrong_self_convention)]
    fn from_stdin(&self, len: usize) -> Result<Secret>;
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
        crate::mem::fork::install();
        // The default options (memfd backend, no protection key) probe
        // nothing the kernel may lack, so resolving them cannot fail.
        let Resolved { opts, key } = Options::default()
            .resolve()
            .expect("the default options resolve on every supported system");
        // macOS's default policy (no per-range exclusion there). Lowering
        // the limit is always allowed; a sandbox refusing it must not leave
        // the policy silently unapplied.
        if opts.core_dumps == CoreDumps::DisableForProcess {
            disable_core_dumps().expect("setrlimit(RLIMIT_CORE, 0) for the default policy");
        }
        ProtectedFactory { opts, key }
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
    /// Off Linux, every option the system cannot honour (see the README's
    /// "Platform"), naming the system.
    pub fn new(opts: Options) -> Result<ProtectedFactory> {
        crate::mem::fork::install();
        let Resolved { opts, key } = opts.resolve()?;
        if opts.core_dumps == CoreDumps::DisableForProcess {
            disable_core_dumps()?;
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
        if len > MAX_SECRET_LEN {
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
        // Read before the bytes exist: a purge during the creation purges it.
        let epoch = crate::mem::registry::epoch();
        let storage = Storage::create(len, &mut src, &opts, self.key)?;
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
            epoch,
        ))
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

    #[cfg(unix)]
    fn from_fd(&self, fd: BorrowedFd<'_>, len: usize) -> Result<Secret> {
        self.create(len, Source::Fd(fd))
    }

    #[cfg(windows)]
    fn from_stdin(&self, len: usize) -> Result<Secret> {
        use std::os::windows::io::AsHandle;
        self.create(len, Source::Fd(std::io::stdin().as_handle()))
    }
}

/// Set this process's `RLIMIT_CORE` to zero (soft and hard): no core file is
/// written at all. Process-wide and cannot be undone by an unprivileged
/// process; Asherah Go does this on start. Secrets are already left out of
/// core dumps by `MADV_DONTDUMP` without it (FreeBSD: `MADV_NOCORE`; macOS
/// has no such exclusion, so this is its default policy).
///
/// # Errors
/// [`Error::Unsupported`] if `setrlimit` refuses, and always on Windows
/// (no such limit there).
pub fn disable_core_dumps() -> Result<()> {
    sys::disable_core_dumps()
        .map_err(|e| Error::Unsupported(format!("setrlimit(RLIMIT_CORE, 0): {e}")))
}
