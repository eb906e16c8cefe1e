//! The one error type of the library. No variant carries a byte of a secret.

use std::fmt;
use std::io;

/// Soft and hard `RLIMIT_MEMLOCK` and what was asked, for the lock error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemlockReport {
    /// Bytes this request needed locked.
    pub requested: u64,
    /// Bytes this library held locked when it was refused.
    pub locked_by_library: u64,
    /// Soft limit in bytes (`None`: unlimited).
    pub soft: Option<u64>,
    /// Hard limit in bytes (`None`: unlimited).
    pub hard: Option<u64>,
}

fn limit(v: Option<u64>) -> String {
    match v {
        None => "unlimited".to_string(),
        Some(b) => format!("{b} bytes ({} KiB)", b / 1024),
    }
}

impl fmt::Display for MemlockReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not lock {} more bytes into RAM: RLIMIT_MEMLOCK soft limit is {}, hard limit is {}; \
             this library already holds {} bytes locked. Raise the limit for the process: \
             `ulimit -l <KiB>` (or `ulimit -l unlimited`) in the shell that starts it, \
             `docker run --ulimit memlock=<bytes>:<bytes>` for a container, \
             `LimitMEMLOCK=<bytes>` in its systemd unit, or grant it CAP_IPC_LOCK. \
             Many small secrets fit in far fewer locked pages with `Layout::Pooled`.",
            self.requested,
            limit(self.soft),
            limit(self.hard),
            self.locked_by_library,
        )
    }
}

/// Everything that can go wrong. Messages never contain secret bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The secret was closed; its memory is gone.
    #[error("secret is closed")]
    Closed,

    /// The requested size cannot be a secret (zero, or too large to map).
    #[error("invalid secret size {size}: {reason}")]
    InvalidSize {
        /// The size asked for.
        size: usize,
        /// Why it was refused.
        reason: &'static str,
    },

    /// `mmap` (or a memory file backing it) refused.
    #[error("could not map {bytes} bytes of memory: {source}")]
    MapFailed {
        /// Bytes asked for.
        bytes: usize,
        /// The operating system's error.
        source: io::Error,
    },

    /// Locking memory into RAM was refused, by this library's budget or by the kernel.
    #[error("{report} (os error: {source})")]
    LockFailed {
        /// The limits and the request.
        report: MemlockReport,
        /// The operating system's error (`ENOMEM`/`EAGAIN`/`EPERM`), or the
        /// library's own refusal before asking the kernel.
        source: io::Error,
    },

    /// `mprotect` failed. When the change back to no-access fails, the secret
    /// has been wiped and closed, since it could not be hidden again.
    #[error("could not change memory protection to {to}: {source}")]
    ProtectFailed {
        /// The protection asked for: "read", "read-write" or "none".
        to: &'static str,
        /// The operating system's error.
        source: io::Error,
    },

    /// `madvise` (do-not-dump, wipe-on-fork, do-not-fork) failed.
    #[error("could not advise the kernel ({advice}): {source}")]
    AdviseFailed {
        /// The advice given.
        advice: &'static str,
        /// The operating system's error.
        source: io::Error,
    },

    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    RandomFailed(io::Error),

    /// Reading the secret from the caller's reader failed (or ended early).
    #[error("could not read the secret from the reader: {0}")]
    ReadFailed(io::Error),

    /// Copying the secret out of its memory file failed.
    #[error("could not copy the secret out of protected memory: {0}")]
    AccessFailed(io::Error),

    /// This process is a fork child of the process that created the secret;
    /// its bytes were not inherited.
    #[error("secret belongs to the parent process of a fork; it is not available in the child")]
    Forked,

    /// The canary in front of a guarded secret was overwritten: something
    /// wrote out of bounds. The memory was wiped and freed anyway.
    #[error("canary in front of a guarded secret was damaged (out-of-bounds write detected); the memory was wiped and freed")]
    CanaryDamaged,

    /// `close` was called from inside an access window of the same secret on
    /// the same thread; closing then would wait forever for itself.
    #[error(
        "close called from inside an access of the same secret; close it after the access returns"
    )]
    CloseWithinAccess,

    /// Accesses nested deeper than the library tracks on one thread.
    #[error("too many nested secret accesses on one thread (limit {0})")]
    NestingTooDeep(usize),

    /// The platform or the chosen options cannot provide this.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::other(e)
    }
}

/// Shorthand for results of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
