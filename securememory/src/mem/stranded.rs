//! Mappings of closed secrets that the kernel refused to unmap (`munmap`
//! fails with `ENOMEM` at the map-count limit when a range in the middle of
//! a mapping is removed). Their bytes are wiped; they stay mapped, locked
//! and counted in the budget, as the kernel holds them, and their range of
//! the memory file is not given back, so it is never mapped a second time.
//! Each later release tries to unmap them again; only then are they
//! uncounted and their range freed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::budget;
use super::memfile::{MemoryFile, GENERATIONS};
use super::sys;

/// One mapping the kernel would not unmap.
pub(crate) struct Stranded {
    pub base: *mut u8,
    pub total: usize,
    /// Bytes counted in the budget for it.
    pub counted: u64,
    /// Its range of the memory file (offset, length), if any.
    pub file: Option<(&'static MemoryFile, u64, u64)>,
}

// SAFETY: the pointer names a mapping no one else refers to any more (its
// region was released); only `retry`, under the mutex, touches it.
unsafe impl Send for Stranded {}

/// One list per fork generation, like the stores: a fork child never takes
/// a lock a parent thread may have held at the fork, and never sees the
/// parent's mappings (not its to unmap).
static STRANDED: [Mutex<Vec<Stranded>>; GENERATIONS] =
    [const { Mutex::new(Vec::new()) }; GENERATIONS];
/// Entries in all lists: releases skip the lock while there are none.
static COUNT: AtomicUsize = AtomicUsize::new(0);

fn list() -> Option<&'static Mutex<Vec<Stranded>>> {
    STRANDED.get(super::fork::generation() as usize)
}

/// Keep `s` until a later [`retry`] unmaps it. Past the last generation
/// that has a list it is kept nowhere: still counted, never reused.
pub(crate) fn keep(s: Stranded) {
    if let Some(list) = list() {
        list.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        COUNT.fetch_add(1, Ordering::Relaxed);
    }
}

/// Try again to unmap this generation's stranded mappings; give back the
/// budget and the file range of those the kernel now unmaps.
pub(crate) fn retry() {
    if COUNT.load(Ordering::Relaxed) == 0 {
        return;
    }
    let Some(list) = list() else { return };
    let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
    // Given back after the lock: the budget reports to the metrics recorder,
    // user code that may come back in here.
    let mut unlocked = 0;
    list.retain(|s| {
        // SAFETY: the mapping was owned by a released region of this
        // generation and nothing refers to it; it is unmapped at most once
        // (removed on success).
        if unsafe { sys::munmap(s.base, s.total) }.is_err() {
            return true;
        }
        if let Some((file, off, len)) = s.file {
            file.free(off, len);
        }
        unlocked += s.counted;
        COUNT.fetch_sub(1, Ordering::Relaxed);
        false
    });
    drop(list);
    if unlocked > 0 {
        budget::release(unlocked);
    }
}
