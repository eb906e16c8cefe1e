//! Private anonymous memory: mapped read-write for filling, locked with
//! `mlock` when the budget counted it, `MADV_WIPEONFORK` so that a fork
//! child gets zeroed pages. At rest `PROT_NONE`; read through a window only
//! (no file to copy from). Wiped in place at release.

use super::{map_err, Region};
use crate::error::Error;
use crate::mem::sys::{self, Advice, Prot};
use crate::options::LockPolicy;

/// Map the data pages read-write (inside the guard reservation if there is
/// one), then lock them if the budget counted them.
pub(super) fn map(region: &mut Region, guard: bool, lock: LockPolicy) -> Result<(), Error> {
    let data_len = region.data_len;
    if guard {
        // SAFETY: the data pages are inside the reservation owned by `region`.
        unsafe { sys::mprotect(region.data, data_len, Prot::ReadWrite) }.map_err(|source| {
            Error::ProtectFailed {
                to: "read-write",
                source,
            }
        })?;
    } else {
        region.base = sys::mmap_anonymous(data_len, Prot::ReadWrite).map_err(map_err(data_len))?;
        region.data = region.base;
    }
    if region.counted > 0 {
        // SAFETY: the data pages are the mapping just made and owned by `region`.
        if let Err(e) = unsafe { sys::mlock(region.data, data_len) } {
            region.lock_refused(lock, e)?;
        }
    }
    Ok(())
}

/// Private memory: a child copied before this has the pages with nothing
/// written yet; one copied later gets them zeroed. (Shared mappings get
/// `MADV_DONTFORK` inside the fork fence instead, when they are mapped.)
pub(super) fn wipe_on_fork(region: &Region) -> Result<(), Error> {
    // SAFETY: the data pages are owned by `region`.
    unsafe { sys::madvise(region.data, region.data_len, Advice::WipeOnFork) }
        .map_err(super::advise_err("MADV_WIPEONFORK"))
}
