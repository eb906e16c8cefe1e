//! The locked-memory budget: every byte this library locks is counted against
//! the soft `RLIMIT_MEMLOCK`, so a request that would pass the limit is refused
//! with a clear error before the kernel is asked (unless the process holds
//! `CAP_IPC_LOCK`, which lifts the limit).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, MemlockReport};
use crate::mem::sys;
use crate::metrics;

static LOCKED: AtomicU64 = AtomicU64::new(0);

/// Capability number of `CAP_IPC_LOCK` (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// What to do when memory cannot be locked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LockPolicy {
    /// Refuse with [`Error::LockFailed`] (the default).
    #[default]
    Require,
    /// Keep going with unlocked (swappable) memory, with a `tracing` warning
    /// and the `secret.unlocked` counter raised each time. An explicit opt-in
    /// for machines that cannot lock at all; never chosen silently.
    AllowUnlocked,
}

/// Bytes the library holds locked right now (in this process: a fork
/// child starts at zero).
pub(crate) fn locked_bytes() -> u64 {
    let _ = crate::fork::generation();
    LOCKED.load(Ordering::Relaxed)
}

/// In a fork child, once, before its own code uses the library: nothing is
/// locked there (`mlock` is not inherited, and the parent's shared and
/// wiped-on-fork pages are not the child's), so the count starts at zero.
/// The parent's regions released in the child give nothing back (see
/// `Region::release`). Async-signal-safe: one atomic store.
pub(crate) fn reset_in_fork_child() {
    LOCKED.store(0, Ordering::Relaxed);
}

/// Whether the calling thread has `CAP_IPC_LOCK` in its effective set (the
/// capability lifts the memlock limit; the kernel checks the thread that
/// locks, so this is asked of that thread each time, one `capget`).
pub(crate) fn has_ipc_lock() -> bool {
    sys::thread_has_effective_cap(CAP_IPC_LOCK).unwrap_or(false)
}

/// The soft limit that applies to this thread, if any.
fn applicable_limit() -> Option<u64> {
    if has_ipc_lock() {
        None
    } else {
        sys::memlock_limit().soft
    }
}

/// Whether `bytes` more would fit in the budget now (does not count them).
pub(crate) fn fits(bytes: u64) -> bool {
    applicable_limit().is_none_or(|soft| locked_bytes() + bytes <= soft)
}

/// The report for a refusal of `requested` bytes.
pub(crate) fn report(requested: u64) -> MemlockReport {
    let l = sys::memlock_limit();
    MemlockReport {
        requested,
        locked_by_library: locked_bytes(),
        soft: l.soft,
        hard: l.hard,
    }
}

/// A lock error for `requested` bytes with the kernel's (or our) reason.
pub(crate) fn lock_error(requested: u64, source: io::Error) -> Error {
    metrics::refused();
    Error::LockFailed {
        report: report(requested),
        source,
    }
}

/// Count `bytes` as locked, or refuse if that would pass the soft limit.
pub(crate) fn reserve(bytes: u64) -> Result<(), Error> {
    let _ = crate::fork::generation();
    let soft = applicable_limit();
    let counted = LOCKED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| match soft {
        Some(soft) if now + bytes > soft => None,
        _ => Some(now + bytes),
    });
    if counted.is_err() {
        return Err(lock_error(
            bytes,
            io::Error::other(
                "refused by securememory's locked-memory budget before asking the kernel",
            ),
        ));
    }
    metrics::locked_changed(locked_bytes());
    Ok(())
}

/// Give back `bytes` counted by [`reserve`].
pub(crate) fn release(bytes: u64) {
    LOCKED.fetch_sub(bytes, Ordering::Relaxed);
    metrics::locked_changed(locked_bytes());
}
