//! Mappings of closed secrets that the kernel refused to unmap (`munmap`
//! fails with `ENOMEM` at the map-count limit when a range in the middle of
//! a mapping is removed). Their bytes are wiped; they stay mapped, locked
//! and counted in the budget, as the kernel holds them, and their range of
//! the memory file is not given back, so it is never mapped a second time.
//! Each later release tries to unmap them again; only then are they
//! uncounted and their range freed.

use std::sync::Mutex;

use super::sys;
use crate::budget;
use crate::store::Store;

/// One mapping the kernel would not unmap.
pub(crate) struct Stranded {
    pub base: *mut u8,
    pub total: usize,
    /// Bytes counted in the budget for it.
    pub counted: u64,
    /// Its range of the memory file (offset, length), if any.
    pub file: Option<(&'static Store, u64, u64)>,
    pub fork_gen: u64,
}

// SAFETY: the pointer names a mapping no one else refers to any more (its
// region was released); only `retry`, under the mutex, touches it.
unsafe impl Send for Stranded {}

static STRANDED: Mutex<Vec<Stranded>> = Mutex::new(Vec::new());

/// Keep `s` until a later [`retry`] unmaps it.
pub(crate) fn keep(s: Stranded) {
    STRANDED.lock().unwrap_or_else(|p| p.into_inner()).push(s);
}

/// Try again to unmap every stranded mapping of this fork generation; give
/// back the budget and the file range of those the kernel now unmaps.
pub(crate) fn retry() {
    let mut list = STRANDED.lock().unwrap_or_else(|p| p.into_inner());
    if list.is_empty() {
        return;
    }
    let generation = crate::fork::generation();
    list.retain(|s| {
        if s.fork_gen != generation {
            // A fork child: not its mapping to unmap (and not its store).
            return true;
        }
        // SAFETY: the mapping was owned by a released region and nothing
        // refers to it; it is unmapped at most once (removed on success).
        if unsafe { sys::munmap(s.base, s.total) }.is_err() {
            return true;
        }
        if let Some((store, off, len)) = s.file {
            store.free(off, len);
        }
        if s.counted > 0 {
            budget::release(s.counted);
        }
        false
    });
}
