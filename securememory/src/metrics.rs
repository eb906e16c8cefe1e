//! Counters kept by the library, readable with [`stats`](crate::stats) and published
//! through the `metrics` facade so that a recorder installed by the program
//! picks them up. Names follow Asherah Go's (`secret.allocated`,
//! `secret.inuse`) where it has one.
//!
//! The recorder is user code: every facade call goes through
//! [`shield`](crate::shield::shield) (a panic in it is swallowed), and the
//! library calls these functions only with no lock of its own held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::shield::shield;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static IN_USE: AtomicU64 = AtomicU64::new(0);
static PROTECTION_CHANGES: AtomicU64 = AtomicU64::new(0);
static REFUSALS: AtomicU64 = AtomicU64::new(0);
static UNLOCKED: AtomicU64 = AtomicU64::new(0);
static CANARY_FAILURES: AtomicU64 = AtomicU64::new(0);
static POOL_PAGES: AtomicU64 = AtomicU64::new(0);
static POOL_SLOTS_USED: AtomicU64 = AtomicU64::new(0);
static POOL_SLOTS_TOTAL: AtomicU64 = AtomicU64::new(0);
static PURGED: AtomicU64 = AtomicU64::new(0);
static SEALED_IN_USE: AtomicU64 = AtomicU64::new(0);
static SEAL_FAILURES: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the library's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Secrets created since the process started (`secret.allocated`).
    pub allocated: u64,
    /// Secrets created and not yet closed (`secret.inuse`).
    pub in_use: u64,
    /// Bytes this library holds locked in RAM (`secret.locked.bytes`),
    /// the ready pages below included.
    pub bytes_locked: u64,
    /// Wiped, locked, `PROT_NONE` pages of closed one-page secrets kept
    /// for the next ones (at most 64 per backing and layout; given back
    /// before the memlock budget would refuse a request).
    pub ready_pages: u64,
    /// Page-protection changes made by access windows (`secret.protection_changes`).
    pub protection_changes: u64,
    /// Requests refused for lack of lockable memory (`secret.lock.refused`).
    pub lock_refusals: u64,
    /// Allocations that went ahead unlocked under `LockPolicy::AllowUnlocked` (`secret.unlocked`).
    pub unlocked_allocations: u64,
    /// Damaged canaries found at close (`secret.canary.damaged`).
    pub canary_failures: u64,
    /// Pages held by the pool (`secret.pool.pages`).
    pub pool_pages: u64,
    /// Pool slots in use (`secret.pool.slots.used`).
    pub pool_slots_used: u64,
    /// Pool slots in all pool pages (`secret.pool.slots.total`).
    pub pool_slots_total: u64,
    /// Secrets wiped and closed by a purge (`secret.purged`); a signal's
    /// purge counts nothing (it may not call the recorder).
    pub purged: u64,
    /// Sealed secrets (`Layout::Sealed`) created and not yet closed
    /// (`secret.sealed.inuse`). Their sealing key takes one pool slot per
    /// process (counted in the pool figures), their ciphertexts none.
    pub sealed_in_use: u64,
    /// Bytes of unlocked, no-dump, wipe-on-fork memory mapped for sealed
    /// secrets' ciphertexts (`secret.sealed.arena.bytes`); kept for reuse,
    /// so this is the high-water mark. Not counted in `bytes_locked`.
    pub sealed_arena_bytes: u64,
    /// Sealed secrets whose ciphertext failed authentication when opened
    /// (`secret.sealed.auth_failed`): memory corruption or tampering.
    pub sealed_auth_failures: u64,
}

/// The counters kept here now; `bytes_locked` is left at zero: the budget
/// (in `mem`, below) keeps that one, and [`stats`](crate::stats) fills it in.
pub(crate) fn counters() -> Stats {
    Stats {
        allocated: ALLOCATED.load(Ordering::Relaxed),
        in_use: IN_USE.load(Ordering::Relaxed),
        bytes_locked: 0,
        ready_pages: 0,
        protection_changes: PROTECTION_CHANGES.load(Ordering::Relaxed),
        lock_refusals: REFUSALS.load(Ordering::Relaxed),
        unlocked_allocations: UNLOCKED.load(Ordering::Relaxed),
        canary_failures: CANARY_FAILURES.load(Ordering::Relaxed),
        pool_pages: POOL_PAGES.load(Ordering::Relaxed),
        pool_slots_used: POOL_SLOTS_USED.load(Ordering::Relaxed),
        pool_slots_total: POOL_SLOTS_TOTAL.load(Ordering::Relaxed),
        purged: PURGED.load(Ordering::Relaxed),
        sealed_in_use: SEALED_IN_USE.load(Ordering::Relaxed),
        sealed_arena_bytes: 0,
        sealed_auth_failures: SEAL_FAILURES.load(Ordering::Relaxed),
    }
}

pub(crate) fn created(elapsed: Duration) {
    ALLOCATED.fetch_add(1, Ordering::Relaxed);
    let n = IN_USE.fetch_add(1, Ordering::Relaxed) + 1;
    shield(|| metrics::counter!("secret.allocated").increment(1));
    shield(|| metrics::gauge!("secret.inuse").set(n as f64));
    shield(|| metrics::histogram!("secret.allocation.seconds").record(elapsed.as_secs_f64()));
}

/// Count a secret closed. No user code: called inside the release, so that
/// a concurrent `close`, woken when the release ends, sees it counted.
/// Returns the count for [`closed`].
pub(crate) fn count_closed() -> u64 {
    IN_USE.fetch_sub(1, Ordering::Relaxed) - 1
}

/// Publish the in-use count after a close (user code: outside the release).
pub(crate) fn closed(in_use: u64) {
    shield(|| metrics::gauge!("secret.inuse").set(in_use as f64));
}

#[inline]
pub(crate) fn protection_changed() {
    PROTECTION_CHANGES.fetch_add(1, Ordering::Relaxed);
    shield(|| metrics::counter!("secret.protection_changes").increment(1));
}

pub(crate) fn refused() {
    REFUSALS.fetch_add(1, Ordering::Relaxed);
    shield(|| metrics::counter!("secret.lock.refused").increment(1));
}

pub(crate) fn unlocked() {
    UNLOCKED.fetch_add(1, Ordering::Relaxed);
    shield(|| metrics::counter!("secret.unlocked").increment(1));
}

pub(crate) fn canary_damaged() {
    CANARY_FAILURES.fetch_add(1, Ordering::Relaxed);
    shield(|| metrics::counter!("secret.canary.damaged").increment(1));
}

/// Count secrets a purge wiped and closed (user code: no lock held).
pub(crate) fn purged(n: u64) {
    if n == 0 {
        return;
    }
    PURGED.fetch_add(n, Ordering::Relaxed);
    shield(|| metrics::counter!("secret.purged").increment(n));
}

pub(crate) fn locked_changed(bytes: u64) {
    shield(|| metrics::gauge!("secret.locked.bytes").set(bytes as f64));
}

/// A sealed secret was created (`1`) or its ciphertext released (`-1`);
/// `arena` is the ciphertext arena's size now (kept in `mem::arena`).
pub(crate) fn sealed_changed(delta: i64, arena: u64) {
    let n = if delta >= 0 {
        SEALED_IN_USE.fetch_add(delta as u64, Ordering::Relaxed) + delta as u64
    } else {
        let d = delta.unsigned_abs();
        SEALED_IN_USE
            .fetch_sub(d, Ordering::Relaxed)
            .saturating_sub(d)
    };
    shield(|| metrics::gauge!("secret.sealed.inuse").set(n as f64));
    shield(|| metrics::gauge!("secret.sealed.arena.bytes").set(arena as f64));
}

/// A sealed secret's ciphertext failed authentication.
pub(crate) fn seal_failed() {
    SEAL_FAILURES.fetch_add(1, Ordering::Relaxed);
    shield(|| metrics::counter!("secret.sealed.auth_failed").increment(1));
}

pub(crate) fn pool_changed(pages_delta: i64, used_delta: i64, total_delta: i64) {
    fn add(a: &AtomicU64, d: i64) -> u64 {
        if d >= 0 {
            a.fetch_add(d as u64, Ordering::Relaxed) + d as u64
        } else {
            a.fetch_sub((-d) as u64, Ordering::Relaxed) - (-d) as u64
        }
    }
    // Count first (`stats()` must not depend on the recorder), then publish
    // only what changed: a slot taken or given back touches one gauge.
    if pages_delta != 0 {
        let n = add(&POOL_PAGES, pages_delta);
        shield(|| metrics::gauge!("secret.pool.pages").set(n as f64));
    }
    if used_delta != 0 {
        let n = add(&POOL_SLOTS_USED, used_delta);
        shield(|| metrics::gauge!("secret.pool.slots.used").set(n as f64));
    }
    if total_delta != 0 {
        let n = add(&POOL_SLOTS_TOTAL, total_delta);
        shield(|| metrics::gauge!("secret.pool.slots.total").set(n as f64));
    }
}
