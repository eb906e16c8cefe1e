//! The release of a region: wipe, unlock, unmap, give back its count and
//! its range of the memory file; once, whoever asks first (the owner with
//! its proof, or `Drop`).

use super::{Mapped, Region};
use crate::access::Drained;
use crate::error::Error;
use crate::mem::budget;
use crate::mem::fork;
use crate::mem::sys::{self, Prot};

impl Region {
    /// Wipe, unlock and unmap; `_drained` proves that no access is in flight
    /// or can start. Runs once; later calls do nothing. In a fork child the
    /// memory is not ours (not mapped, or zeroed): nothing to wipe.
    pub(crate) fn release(&self, _drained: &Drained) -> Result<(), Error> {
        self.release_once()
    }

    /// [`release`](Self::release) for callers that prove quiescence otherwise
    /// (`Drop`'s exclusive borrow).
    fn release_once(&self) -> Result<(), Error> {
        self.released.run(|| self.release_now())
    }

    /// The release itself (see [`ReleaseOnce`](crate::mem::release_once::ReleaseOnce)
    /// for the once).
    fn release_now(&self) -> Result<(), Error> {
        let mut wiped = Ok(());
        let ours = self.fork_gen == fork::generation();
        if ours && !self.base.is_null() && !self.wiped_at_rest {
            wiped = self.wipe();
            // Wiped and whole: kept mapped (and registered) for the next secret.
            if wiped.is_ok() && self.park() {
                return Ok(());
            }
        }
        self.unregister();
        if !ours {
            if matches!(self.backing, Mapped::Anonymous) && !self.base.is_null() {
                // SAFETY: private mappings are copied into the child (zeroed by
                // WIPEONFORK); this one is ours to unmap.
                let _ = unsafe { sys::munmap(self.base, self.total) };
            }
            return Ok(());
        }
        if !self.base.is_null() {
            // munmap also unlocks, so no separate munlock call is made.
            // SAFETY: the whole mapping is ours and no reference into it remains.
            if let Err(e) = unsafe { sys::munmap(self.base, self.total) } {
                return Err(self.unmap_refused(e, wiped));
            }
        }
        // Also when mapping the range failed: nothing was written to it.
        if let Mapped::MemoryFile(range) = self.backing {
            range.file.free(range.off, self.data_len as u64);
        }
        if self.counted > 0 {
            budget::release(self.counted);
        }
        // A mapping released earlier may be unmappable now.
        crate::mem::stranded::retry();
        wiped
    }

    /// Wipe the data pages (test hooks record what is left).
    fn wipe(&self) -> Result<(), Error> {
        let wiped = match self.backing {
            Mapped::MemoryFile(_) => self.wipe_in(0, self.data_len),
            _ => self.set_prot(Prot::ReadWrite).map(|()| {
                // SAFETY: the pages were just made writable, and the
                // caller's proof (see `release`) says no access is in flight.
                unsafe { sys::wipe(self.data, self.data_len) }
            }),
        };
        #[cfg(feature = "test-hooks")]
        crate::mem::observe::wiped(|| self.snapshot());
        wiped
    }

    /// The kernel refused to unmap the (wiped) pages: they stay mapped and
    /// locked, so they stay counted and their file range is not given back
    /// for reuse; hide them again and keep them for a later retry.
    fn unmap_refused(&self, e: std::io::Error, wiped: Result<(), Error>) -> Error {
        if !matches!(self.backing, Mapped::MemoryFile(_)) {
            // The wipe made them writable; the memory file's are PROT_NONE.
            let _ = self.set_prot(Prot::None);
        }
        if let Err(w) = wiped {
            crate::shield::shield(
                || tracing::error!(error = %w, "securememory: wiping a closed secret failed"),
            );
        }
        crate::mem::stranded::keep(crate::mem::stranded::Stranded {
            base: self.base,
            total: self.total,
            counted: self.counted,
            file: match self.backing {
                Mapped::MemoryFile(range) => Some((range.file, range.off, self.data_len as u64)),
                _ => None,
            },
        });
        let err = crate::mem::limits::unmap_error(self.total, e);
        crate::shield::shield(
            || tracing::error!(error = %err, "securememory: the kernel refused to unmap a closed secret"),
        );
        err
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // The exclusive borrow: no view, no access, no gate left.
        let _ = self.release_once();
    }
}
