//! The per-thread scratch buffer the copy path reads a secret into.
//!
//! Each thread gets, on its first copy-path access, a small region of its
//! own: guard pages around it, locked, do-not-dump, wipe-on-fork, and
//! read-write for the thread's life. An access reserves a slice of it (a
//! stack, so nested accesses get disjoint slices), the kernel copies the
//! secret in, the closure runs, and the slice is wiped before the access
//! ends, on return and on unwind alike. At rest the buffer holds only zeros.
//!
//! A thread that cannot get a buffer of its own (the memlock limit was used
//! up before its first access, typically by a full pool) borrows one shared
//! fallback buffer under a lock. The pool reserves that buffer before its
//! first chunk, so a pooled secret, which has no window to fall back to, can
//! always be read.

use std::cell::{Cell, OnceCell};
use std::sync::{Mutex, OnceLock};

use super::region::{Region, RegionSpec};
use super::sys::{self, Prot};
use crate::budget::LockPolicy;
use crate::mem::region::BackingKind;

/// Data pages per thread. Secrets larger than what is free here fall back
/// to the window path.
pub(crate) const SCRATCH_PAGES: usize = 2;

struct Scratch {
    region: Option<Region>,
    used: Cell<usize>,
}

/// A locked, do-not-dump, wipe-on-fork read-write region of `pages` pages
/// between guard pages.
fn scratch_region(pages: usize) -> crate::Result<Region> {
    let spec = RegionSpec {
        len: pages * sys::page_size(),
        guard: true,
        backing: BackingKind::Anonymous,
        lock: LockPolicy::Require,
    };
    let mut region = Region::create(spec, |_| Ok(()))?;
    region.protect(Prot::ReadWrite)?;
    Ok(region)
}

/// The shared fallback buffer and the lock that takes turns on it.
struct Shared {
    region: Region,
    lock: Mutex<()>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

thread_local! {
    /// Whether this thread holds the shared buffer (nested accesses then
    /// cannot take it again).
    static HOLDS_SHARED: Cell<bool> = const { Cell::new(false) };
}

/// Make sure the shared fallback buffer exists (one page). Called before the
/// pool takes locked memory, so it is never the pool that leaves a reader
/// without a buffer.
pub(crate) fn reserve_shared() -> crate::Result<()> {
    if SHARED.get().is_none() {
        let region = scratch_region(1)?;
        // Losing a race drops (wipes, unlocks, unmaps) ours.
        let _ = SHARED.set(Shared {
            region,
            lock: Mutex::new(()),
        });
    }
    Ok(())
}

/// Run `f` on `len` bytes of the shared fallback buffer, under its lock.
fn with_shared<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    let shared = SHARED.get()?;
    if len > shared.region.data_len() || HOLDS_SHARED.try_with(Cell::get).unwrap_or(true) {
        return None;
    }
    let _held = shared.lock.lock().unwrap_or_else(|p| p.into_inner());
    HOLDS_SHARED.with(|h| h.set(true));
    struct Release<'a>(&'a Region, usize);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            // SAFETY: the first `len` bytes of the shared buffer, read-write
            // for the process's life; the closure's borrow has ended.
            unsafe { sys::wipe(self.0.data_ptr(), self.1) };
            let _ = HOLDS_SHARED.try_with(|h| h.set(false));
        }
    }
    let release = Release(&shared.region, len);
    // SAFETY: the shared buffer is read-write for the process's life, and
    // the lock (held until after `release` wipes and drops) gives this call
    // its first `len` bytes alone.
    let buf = unsafe { std::slice::from_raw_parts_mut(shared.region.data_ptr(), len) };
    let r = f(buf);
    drop(release);
    Some(r)
}

impl Scratch {
    fn new() -> Scratch {
        let region = scratch_region(SCRATCH_PAGES)
            .map_err(|e| crate::shield::shield(|| tracing::debug!(error = %e, "securememory: no scratch buffer on this thread; using the window path or the shared buffer")))
            .ok();
        Scratch {
            region,
            used: Cell::new(0),
        }
    }
}

thread_local! {
    static SCRATCH: OnceCell<Scratch> = const { OnceCell::new() };
}

/// Pops a reservation and wipes it, on return or unwind.
struct Reserved<'a> {
    scratch: &'a Scratch,
    start: usize,
    ptr: *mut u8,
    len: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        // SAFETY: `[ptr, ptr + len)` is this reservation's part of the
        // scratch region, read-write for the thread's life; the closure's
        // borrow of it has ended (it is dropped before this guard).
        unsafe { sys::wipe(self.ptr, self.len) };
        self.scratch.used.set(self.start);
    }
}

/// Run `f` on a zeroed, wiped-after-use slice of `len` bytes of this
/// thread's scratch buffer. `None` when the buffer is unavailable or too
/// full (and the shared fallback buffer too); the caller then takes another
/// path.
#[inline]
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    let mut f = Some(f);
    let own = with_own(len, &mut f);
    match (own, f) {
        (Some(r), _) => Some(r),
        (None, Some(f)) => with_shared(len, f),
        (None, None) => None,
    }
}

/// This thread's own buffer; leaves `f` in place if it cannot run it.
#[inline]
fn with_own<R, F: FnOnce(&mut [u8]) -> R>(len: usize, f: &mut Option<F>) -> Option<R> {
    SCRATCH
        .try_with(|cell| {
            // Not `get_or_init`: making the buffer reports to the metrics
            // recorder, which may read a secret on this thread and so make
            // a buffer first; then ours is dropped (wiped, unlocked, unmapped).
            if cell.get().is_none() {
                let _ = cell.set(Scratch::new());
            }
            let scratch = cell.get()?;
            let region = scratch.region.as_ref()?;
            let start = scratch.used.get();
            // Keep reservations 16-byte aligned.
            let end = start.checked_add(len.checked_add(15)? & !15)?;
            if end > region.data_len() {
                return None;
            }
            scratch.used.set(end);
            // SAFETY: `start < data_len` so the offset stays inside the
            // region's data pages.
            let ptr = unsafe { region.data_ptr().add(start) };
            let guard = Reserved {
                scratch,
                start,
                ptr,
                len,
            };
            // SAFETY: `[start, start + len)` is reserved for this call alone:
            // the stack pointer moved past it and moves back only when `guard`
            // drops, after this borrow ends; the pages are read-write.
            let buf = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
            let r = (f.take()?)(buf);
            drop(guard);
            Some(r)
        })
        .ok()
        .flatten()
}

/// Capacity of one thread's scratch buffer in bytes.
pub(crate) fn capacity() -> usize {
    SCRATCH_PAGES * sys::page_size()
}
