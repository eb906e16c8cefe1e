//! Protection changes, windows and views: how the pages are opened and
//! hidden, always under a proof that nothing reads them meanwhile (the
//! gate's [`Turn`] or [`Drained`], an exclusive borrow), and a view's bytes
//! tied to a live [`Entered`].

use std::sync::atomic::Ordering;

use super::Region;
use crate::access::{Drained, Entered, Turn, Window};
use crate::error::Error;
use crate::mem::sys::{self, Prot};
use crate::metrics;

impl Region {
    /// Change the data pages' protection, for the region's owner alone: the
    /// exclusive borrow proves that no view into the pages exists (a view
    /// borrows the region) and that no access gate manages them.
    pub(crate) fn protect(&mut self, prot: Prot) -> Result<(), Error> {
        self.set_prot(prot)
    }

    /// Change the data pages' protection. For this module's files alone: every caller holds a
    /// proof that nothing reads the pages meanwhile (the gate's [`Turn`] or
    /// [`Drained`], or an exclusive borrow).
    pub(super) fn set_prot(&self, prot: Prot) -> Result<(), Error> {
        // SAFETY: the data pages are ours; every caller (see above) ensures
        // no reference into them outlives a change to `None`.
        unsafe { sys::mprotect(self.data, self.data_len, prot) }.map_err(|source| {
            Error::ProtectFailed {
                to: match prot {
                    Prot::None => "none",
                    Prot::Read => "read",
                    Prot::ReadWrite => "read-write",
                },
                source,
            }
        })
    }

    /// The bytes `[off, off + len)` of the data pages while a window is open.
    pub(crate) fn view<'a, W: Window>(
        &'a self,
        off: usize,
        len: usize,
        proof: &'a Entered<'a, W>,
    ) -> &'a [u8] {
        assert!(proof.through_window(), "view needs an open window");
        assert!(off.checked_add(len).is_some_and(|end| end <= self.data_len));
        // SAFETY: `off + len <= data_len` (asserted above): inside the data pages.
        let start = unsafe { self.data.add(off) };
        // SAFETY: `proof` is a live window entry of this region's gate, so the
        // pages are readable and stay so until `proof` is dropped, which the
        // lifetime ties the slice to; the range is inside the data pages.
        unsafe { std::slice::from_raw_parts(start, len) }
    }

    /// Read `[off, off + buf.len())` while no access is in flight (at close,
    /// which `_drained` proves): through the memory file, or by opening and
    /// closing the pages.
    pub(crate) fn read_at_rest(
        &self,
        off: usize,
        buf: &mut [u8],
        _drained: &Drained,
    ) -> Result<(), Error> {
        assert!(off
            .checked_add(buf.len())
            .is_some_and(|end| end <= self.data_len));
        if self.can_copy() {
            return self.copy_out(off, buf);
        }
        self.set_prot(Prot::Read)?;
        // SAFETY: `off + buf.len() <= data_len` (asserted above).
        let start = unsafe { self.data.add(off) };
        // SAFETY: just made readable; `_drained` proves no access is in
        // flight, so nothing else changes the protection before `hide`.
        buf.copy_from_slice(unsafe { std::slice::from_raw_parts(start, buf.len()) });
        self.hide()
    }

    /// Hide the pages again after a window; if that fails, wipe them (they
    /// are still readable, so can be made writable) and report the failure.
    /// Private: callers hold the gate's [`Turn`] or [`Drained`] (no reader
    /// inside). Logs nothing (it runs under the gate's mutex): the window
    /// reports a failure once the mutex is released.
    fn hide(&self) -> Result<(), Error> {
        let r = self.set_prot(Prot::None);
        if r.is_err() {
            self.hide_failed.store(true, Ordering::Release);
            if self.set_prot(Prot::ReadWrite).is_ok() {
                // SAFETY: the pages were just made writable; no reader is
                // inside (see above).
                unsafe { sys::wipe(self.data, self.data_len) };
            }
        }
        r
    }

    /// Read the data pages now (test hook; opens them if needed).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.data_len];
        if self.can_copy() {
            let _ = self.copy_out(0, &mut out);
        } else if self.set_prot(Prot::Read).is_ok() {
            // SAFETY: just made readable; test-only, single-threaded use.
            out.copy_from_slice(unsafe { std::slice::from_raw_parts(self.data, self.data_len) });
        }
        out
    }

    /// Flip one byte of the data pages (test hook to damage a canary).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn poke(&self, off: usize, xor: u8) -> Result<(), Error> {
        if self.can_copy() {
            let mut b = [0u8];
            self.copy_out(off, &mut b)?;
            self.write_in(off, &[b[0] ^ xor])
        } else {
            self.set_prot(Prot::ReadWrite)?;
            // SAFETY: test-only; the caller passes an offset inside the data pages.
            let at = unsafe { self.data.add(off) };
            // SAFETY: just made writable; test-only, no access in flight.
            unsafe { *at ^= xor };
            self.set_prot(Prot::None)
        }
    }
}

/// A region seen as an access window: open = readable, close = hidden. Only
/// the gate can open or close it (each takes the gate's [`Turn`]).
pub(crate) struct RegionWindow<'a>(&'a Region);

impl<'a> RegionWindow<'a> {
    pub(crate) fn new(region: &'a Region) -> Self {
        RegionWindow(region)
    }
}

impl Window for RegionWindow<'_> {
    fn open(&self, _turn: &Turn) -> Result<(), Error> {
        self.0.set_prot(Prot::Read)
    }
    fn close(&self, _turn: &Turn) -> Result<(), Error> {
        self.0.hide()
    }
    fn changed(&self, result: &Result<(), Error>) {
        // Counted whether or not it succeeded, as before: a change was tried.
        metrics::protection_changed();
        if result.is_err() && self.0.hide_failed() {
            crate::shield::shield(|| {
                tracing::error!(
                    "securememory: could not make a secret unreadable again; it was wiped and closed"
                )
            });
        }
    }
}
