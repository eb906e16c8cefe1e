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
    /// The limits could not be read (`prlimit64` refused, by a seccomp
    /// filter say): `soft` and `hard` are then `None` and mean unknown, not
    /// unlimited, and the kernel's own answer decided.
    pub limit_unknown: bool,
    /// The call was refused with `ENOSYS`, or with `EPERM` although the
    /// limit allows locking (the thread holds `CAP_IPC_LOCK`, or its soft
    /// limit is not zero): a seccomp filter or a security module denied it,
    /// and raising the limit would not help.
    pub denied: bool,
}

fn limit(v: Option<u64>) -> String {
    match v {
        None => "unlimited".to_string(),
        Some(b) => format!("{b} bytes ({} KiB)", b / 1024),
    }
}

/// How to raise the limit on locked memory on this system.
const RAISE_MEMLOCK: &str = if cfg!(target_os = "macos") {
    "`ulimit -l <KiB>` in the shell that starts the process, or for a launchd \
     service `launchctl limit memlock <soft> <hard>` (or the `HardResourceLimits`/\
     `SoftResourceLimits` `MemoryLock` keys of its plist)"
} else if cfg!(target_os = "freebsd") {
    "`ulimit -l <KiB>` in the shell that starts the process, or the `memorylocked` \
     capability of its login class in /etc/login.conf (then `cap_mkdb /etc/login.conf`)"
} else {
    "`ulimit -l <KiB>` in the shell that starts the process, \
     `docker run --ulimit memlock=<bytes>:<bytes>` for a container, \
     `LimitMEMLOCK=<bytes>` in its systemd unit, or grant it CAP_IPC_LOCK"
};

impl fmt::Display for MemlockReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if cfg!(windows) && !self.denied {
            // VirtualLock is bounded by the minimum working set, not a limit.
            return write!(
                f,
                "could not lock {} more bytes into RAM: VirtualLock refused; it can lock \
                 no more than the process's minimum working set (less a few pages). Raise it \
                 with SetProcessWorkingSetSize before creating secrets (larger minimum and \
                 maximum; needs the increase-working-set privilege for large values), or \
                 opt in to unlocked memory with `LockPolicy::AllowUnlocked`; this library \
                 holds {} bytes locked.",
                self.requested, self.locked_by_library,
            );
        }
        if self.denied {
            return write!(
                f,
                "could not lock {} more bytes into RAM: refused although the memlock limit \
                 allows it (soft limit {}), so a seccomp filter or a security module denies \
                 locking memory; a higher limit would not help. Allow `mlock` and \
                 `mmap` with `MAP_LOCKED` in the process's seccomp profile, or opt in to \
                 unlocked memory with `LockPolicy::AllowUnlocked`; this library holds {} bytes \
                 locked.",
                self.requested,
                limit(self.soft),
                self.locked_by_library,
            );
        }
        if self.limit_unknown {
            return write!(
                f,
                "could not lock {} more bytes into RAM: the kernel refused, and the \
                 RLIMIT_MEMLOCK limit is unknown (reading it was refused: a seccomp filter?); \
                 this library already holds {} bytes locked. If the limit is what refused, \
                 raise it: {RAISE_MEMLOCK}; and let it read its limits (allow prlimit64).",
                self.requested, self.locked_by_library,
            );
        }
        if !cfg!(target_os = "linux") {
            return write!(
                f,
                "could not lock {} more bytes into RAM: RLIMIT_MEMLOCK soft limit is {}, hard \
                 limit is {}; this library already holds {} bytes locked. Raise the limit for \
                 the process: {RAISE_MEMLOCK}.",
                self.requested,
                limit(self.soft),
                limit(self.hard),
                self.locked_by_library,
            );
        }
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

/// A per-process limit other than the memlock limit that the kernel refused
/// a request at, with what the process held, for [`Error::LimitReached`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessLimit {
    /// The process has as many memory mappings as `vm.max_map_count` allows.
    MapCount {
        /// Mappings of the process when it was refused (`/proc/self/maps`).
        mappings: u64,
        /// `/proc/sys/vm/max_map_count`.
        max: u64,
    },
    /// The mapping would take the process past its address-space limit.
    AddressSpace {
        /// Bytes of address space the process had mapped.
        mapped: u64,
        /// The soft `RLIMIT_AS` in bytes.
        soft: u64,
    },
    /// The process has no free file descriptor (`EMFILE`).
    Descriptors {
        /// The soft `RLIMIT_NOFILE` (`None`: unknown or unlimited).
        soft: Option<u64>,
    },
    /// The system-wide table of open files is full (`ENFILE`).
    SystemDescriptors,
}

impl fmt::Display for ProcessLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProcessLimit::MapCount { mappings, max } => write!(
                f,
                "the process has {mappings} memory mappings and vm.max_map_count allows {max} \
                 (not the memlock limit). Raise it: `sysctl -w vm.max_map_count=<n>` (or a file in \
                 /etc/sysctl.d), or make fewer mappings: `Layout::Pooled` keeps many small \
                 secrets in one"
            ),
            ProcessLimit::AddressSpace { mapped, soft } => write!(
                f,
                "the process has {mapped} bytes of address space mapped and its RLIMIT_AS soft \
                 limit is {soft} bytes ({} KiB) (not the memlock limit). Raise it: \
                 `ulimit -v <KiB>` (or `ulimit -v unlimited`) in the shell that starts it, \
                 `LimitAS=<bytes>` in its systemd unit",
                soft / 1024
            ),
            ProcessLimit::Descriptors { soft } => write!(
                f,
                "the process has no free file descriptor: its RLIMIT_NOFILE soft limit is {} \
                 (not the memlock limit). Close descriptors, or raise it: `ulimit -n <n>` in the \
                 shell that starts it, `docker run --ulimit nofile=<n>:<n>`, `LimitNOFILE=<n>` \
                 in its systemd unit; this is not remembered, the next request tries again",
                soft.map_or("unknown or unlimited".to_string(), |n| format!(
                    "{n} descriptors"
                ))
            ),
            ProcessLimit::SystemDescriptors => write!(
                f,
                "the system's table of open files is full (fs.file-max; not the memlock limit); \
                 this is not remembered, the next request tries again"
            ),
        }
    }
}

/// Everything that can go wrong. Messages never contain secret bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The secret was closed; its memory is gone.
    #[error("secret is closed")]
    Closed,

    /// The secret was wiped by a purge ([`purge`](crate::purge), a signal
    /// or a panic with the purge handlers installed); its bytes are gone.
    #[error("secret was purged: every secret of the process was wiped")]
    Purged,

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

    /// The kernel refused for a per-process limit other than the memlock
    /// limit (map count, address space, descriptors); the message names it
    /// and how to raise it. Not remembered: the next request tries again.
    #[error("could not get {bytes} bytes of secret memory: {limit} (os error: {source})")]
    LimitReached {
        /// Bytes asked for.
        bytes: usize,
        /// The limit that refused.
        limit: ProcessLimit,
        /// The operating system's error.
        source: io::Error,
    },

    /// The kernel refused to unmap a closed secret's memory (`munmap`; at the
    /// map-count limit, unmapping part of a mapping needs a new one). The
    /// bytes were wiped; the pages stay mapped, locked and counted in
    /// [`stats`](crate::stats) as the kernel holds them, and are never
    /// handed to another secret. Later releases try to unmap them again.
    #[error("could not unmap {bytes} bytes of a closed secret (wiped; still mapped and counted, retried at the next release): {}{source}", .limit.map(|l| format!("{l}; os error: ")).unwrap_or_default())]
    UnmapFailed {
        /// Bytes of the mapping.
        bytes: usize,
        /// The limit that refused, when one explains it.
        limit: Option<ProcessLimit>,
        /// The operating system's error.
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

    /// Copying the secret into its memory file (placing a pooled secret's
    /// bytes) or out of it (a read, or the canary check at close) failed.
    #[error("could not copy the secret into or out of its protected memory: {0}")]
    AccessFailed(io::Error),

    /// Writing zeros over a secret at close failed. The library then
    /// punches the range out of the memory file (it reads as zeros after)
    /// before it can be reused; the memory is released all the same.
    #[error("could not write zeros over the secret's memory at close: {0}")]
    WipeFailed(io::Error),

    /// This process is a fork child of the process that created the secret;
    /// its bytes were not inherited.
    #[error("secret belongs to the parent process of a fork; it is not available in the child")]
    Forked,

    /// The canary in front of a guarded secret was overwritten: something
    /// wrote out of bounds. The memory was wiped and freed anyway.
    #[error("canary in front of a guarded secret was damaged (out-of-bounds write detected); the memory was wiped and freed")]
    CanaryDamaged,

    /// A sealed secret's ciphertext (`Layout::Sealed`) failed
    /// authentication when opened: the memory holding it was corrupted or
    /// tampered with. No byte of the secret was given out; the secret stays
    /// open (every access fails the same way) until closed.
    #[error("a sealed secret's ciphertext failed authentication (memory corruption or tampering); no bytes were returned")]
    AuthenticationFailed,

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
