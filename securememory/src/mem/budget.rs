//! The locked-memory budget: every byte this library locks is counted against
//! the soft `RLIMIT_MEMLOCK`, so a request that would pass the limit is refused
//! with a clear error before the kernel is asked (unless the process holds
//! `CAP_IPC_LOCK`, which lifts the limit).

use std::io;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::once::ForkSafeOnce;
use super::{fork, sys};
use crate::error::{Error, MemlockReport};
use crate::metrics;

static LOCKED: AtomicU64 = AtomicU64::new(0);

/// Capability number of `CAP_IPC_LOCK` (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// Bytes the library holds locked right now (in this process: a fork
/// child starts at zero).
pub(crate) fn locked_bytes() -> u64 {
    let _ = fork::generation();
    LOCKED.load(Ordering::Relaxed)
}

/// In a fork child, once, before its own code uses the library: nothing is
/// locked there (`mlock` is not inherited, and the parent's shared and
/// wiped-on-fork pages are not the child's), so the count starts at zero.
/// The parent's regions released in the child give nothing back (see
/// `Region::release`). A fork child hook (see [`fork::on_child`]):
/// async-signal-safe, one atomic store.
fn reset_in_fork_child(_new_generation: u64) {
    LOCKED.store(0, Ordering::Relaxed);
}

/// Register [`reset_in_fork_child`] with `fork`, once, before the first
/// byte is counted.
fn hook_fork_child() {
    static HOOKED: ForkSafeOnce<()> = ForkSafeOnce::new();
    HOOKED.get_or_init(|| fork::on_child(reset_in_fork_child));
}

/// Whether the calling thread has `CAP_IPC_LOCK` in its effective set (the
/// capability lifts the memlock limit; the kernel checks the thread that
/// locks, so this is asked of that thread each time, one `capget`).
pub(crate) fn has_ipc_lock() -> bool {
    sys::thread_has_effective_cap(CAP_IPC_LOCK).unwrap_or(false)
}

/// The memlock limit that applies to the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Applicable {
    /// No limit: `CAP_IPC_LOCK`, or an unlimited soft limit.
    None,
    /// The soft limit in bytes.
    Soft(u64),
    /// The limit could not be read (`prlimit64` refused): the budget
    /// counts but does not refuse, and the kernel's answer decides.
    Unknown,
}

fn applicable_limit() -> Applicable {
    if has_ipc_lock() {
        return Applicable::None;
    }
    match sys::memlock_limit() {
        Ok(l) => l.soft.map_or(Applicable::None, Applicable::Soft),
        Err(_) => Applicable::Unknown,
    }
}

/// What gives locked pages back when the budget would refuse a request:
/// the store of ready pages (`region/store.rs`, above this file, so a
/// plain `fn() -> bool` registered by it: whether it gave any back).
static RECLAIM: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

/// Register `f` as the reclaim hook (once; the store's drain).
pub(crate) fn on_refusal(f: fn() -> bool) {
    RECLAIM.store(f as *mut (), Ordering::Release);
}

/// Run the reclaim hook, if any: whether it gave back locked pages.
fn reclaim() -> bool {
    let p = RECLAIM.load(Ordering::Acquire);
    if p.is_null() {
        return false;
    }
    // SAFETY: a non-null value was stored by `on_refusal` from a
    // `fn() -> bool`; on Linux function and data pointers have the same
    // size and representation, and the function lives as long as the program.
    let f = unsafe { std::mem::transmute::<*mut (), fn() -> bool>(p) };
    f()
}

/// Whether `bytes` more would fit in the budget now (does not count them),
/// after the store of ready pages gave its pages back if it had to.
pub(crate) fn fits(bytes: u64) -> bool {
    fits_now(bytes) || (reclaim() && fits_now(bytes))
}

/// Whether `bytes` more would fit in the budget now (does not count them).
/// With the limit unknown, only a request of one page does: callers that
/// can shrink a request (the pool's chunks) then ask the kernel for as
/// little as possible, and its answer decides.
fn fits_now(bytes: u64) -> bool {
    match applicable_limit() {
        Applicable::None => true,
        Applicable::Soft(soft) => locked_bytes() + bytes <= soft,
        Applicable::Unknown => bytes <= sys::page_size() as u64,
    }
}

/// The report for a refusal of `requested` bytes.
pub(crate) fn report(requested: u64) -> MemlockReport {
    let l = sys::memlock_limit();
    let (soft, hard) = l.as_ref().map_or((None, None), |l| (l.soft, l.hard));
    MemlockReport {
        requested,
        locked_by_library: locked_bytes(),
        soft,
        hard,
        limit_unknown: l.is_err(),
        denied: false,
    }
}

/// Whether the refusal cannot be the memlock limit: Linux has `mlock`, so
/// `ENOSYS` is a filter's answer; and the kernel answers `EPERM` for locking
/// only when the soft limit is zero and the thread lacks `CAP_IPC_LOCK`, so
/// otherwise a filter or a security module did.
fn denied_by_filter(report: &MemlockReport, source: &io::Error) -> bool {
    match source.raw_os_error() {
        Some(libc::ENOSYS) => true,
        Some(libc::EPERM) => !report.limit_unknown && (has_ipc_lock() || report.soft != Some(0)),
        _ => false,
    }
}

/// A lock error for `requested` bytes with the kernel's (or our) reason.
/// An `ENOMEM` that the map count explains (locking part of a mapping
/// splits it) is reported as that limit ([`Error::LimitReached`]), not as
/// memlock. Never the address space: the pages are mapped already, and
/// locking them takes none.
pub(crate) fn lock_error(requested: u64, source: io::Error) -> Error {
    let limit = super::limits::explain(requested as usize, &source)
        .filter(|l| !matches!(l, crate::error::ProcessLimit::AddressSpace { .. }));
    if let Some(limit) = limit {
        return Error::LimitReached {
            bytes: requested as usize,
            limit,
            source,
        };
    }
    metrics::refused();
    let mut report = report(requested);
    report.denied = denied_by_filter(&report, &source);
    Error::LockFailed { report, source }
}

/// Count `bytes` as locked, or refuse if that would pass the soft limit.
pub(crate) fn reserve(bytes: u64) -> Result<(), Error> {
    hook_fork_child();
    let _ = fork::generation();
    let limit = applicable_limit();
    let count = || {
        LOCKED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| match limit {
            Applicable::Soft(soft) if now + bytes > soft => None,
            _ => Some(now + bytes),
        })
    };
    // Ready pages are given back before a refusal.
    let counted = count().or_else(|_| if reclaim() { count() } else { Err(0) });
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

/// Give back `bytes` counted by [`reserve`]. Never below zero: a count
/// taken before a fork and given back in the child (which starts from zero,
/// see [`reset_in_fork_child`]) must not wrap around.
pub(crate) fn release(bytes: u64) {
    let _ = LOCKED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
        Some(now.saturating_sub(bytes))
    });
    metrics::locked_changed(locked_bytes());
}
