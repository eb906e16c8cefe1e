//! The per-thread scratch buffer the copy path reads a secret into.
//!
//! Each thread gets, on its first copy-path access, a small region of its
//! own: guard pages around it, locked, do-not-dump, wipe-on-fork, and
//! read-write for the thread's life. An access reserves a slice of it (a
//! stack, so nested accesses get disjoint slices), the kernel copies the
//! secret in, the closure runs, and the slice is wiped before the access
//! ends, on return and on unwind alike. At rest the buffer holds only zeros.

use std::cell::{Cell, OnceCell};

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

impl Scratch {
    fn new() -> Scratch {
        let spec = RegionSpec {
            len: SCRATCH_PAGES * sys::page_size(),
            guard: true,
            backing: BackingKind::Anonymous,
            lock: LockPolicy::Require,
        };
        let region = Region::create(spec, |_| Ok(()))
            .and_then(|r| r.protect(Prot::ReadWrite).map(|()| r))
            .map_err(|e| tracing::debug!(error = %e, "securememory: no scratch buffer on this thread; using the window path"))
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
/// full; the caller then takes another path.
#[inline]
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    SCRATCH
        .try_with(|cell| {
            let scratch = cell.get_or_init(Scratch::new);
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
            let r = f(buf);
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
