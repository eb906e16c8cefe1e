//! The guarded layout, and all that knows it: the secret sits flush against
//! the trailing guard page (a one-byte overrun faults), a random canary just
//! before it (an overrun from below damages it), checked at close.

use crate::access::Drained;
use crate::error::{Error, Result};
use crate::mem::region::{Backing, Region, RegionSpec};
use crate::mem::sys;
use crate::options::LockPolicy;
use crate::source::Source;

/// Bytes of the canary written in front of a guarded secret.
const CANARY_LEN: usize = 16;

/// A guarded secret's own pages: the secret at `off`, the canary before it.
pub(super) struct Guarded {
    pub(super) region: Region,
    pub(super) off: usize,
    canary: [u8; CANARY_LEN],
}

impl Guarded {
    /// Map guarded pages for `len` bytes, write the canary and the secret
    /// from `src`.
    pub(super) fn create(
        len: usize,
        src: &mut Source<'_>,
        backing: Backing,
        lock: LockPolicy,
    ) -> Result<Guarded> {
        let spec = RegionSpec {
            len: len + CANARY_LEN,
            guard: true,
            backing,
            lock,
        };
        let mut canary = [0u8; CANARY_LEN];
        sys::fill_random(&mut canary).map_err(Error::RandomFailed)?;
        if let Some(mut region) = Region::ready(&spec) {
            // Flush against the trailing guard page, canary just before.
            let off = region.data_len() - len;
            super::fill_ready(&mut region, off, &canary, len, src)?;
            return Ok(Guarded {
                region,
                off,
                canary,
            });
        }
        let mut off = 0;
        let region = Region::create_reusable(spec, |data| {
            // Flush against the trailing guard page, canary just before.
            off = data.len() - len;
            data[off - CANARY_LEN..off].copy_from_slice(&canary);
            src.fill(&mut data[off..off + len])
        })?;
        Ok(Guarded {
            region,
            off,
            canary,
        })
    }

    /// Compare the canary with the one written at creation: `Ok(false)` if
    /// it was damaged, an error if it could not be read.
    pub(super) fn canary_intact(&self, drained: &Drained) -> Result<bool> {
        // After a failed hide the pages (canary included) were wiped on
        // purpose: nothing to check. (A fork child never gets here: `close`
        // returns before.)
        if self.region.hide_failed() {
            return Ok(true);
        }
        let mut now = [0u8; CANARY_LEN];
        self.region
            .read_at_rest(self.off - CANARY_LEN, &mut now, drained)?;
        // Compare without an early exit.
        Ok(now
            .iter()
            .zip(&self.canary)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0)
    }

    /// Flip one byte of the canary (test hook).
    #[cfg(feature = "test-hooks")]
    pub(super) fn corrupt_canary(&self) -> Result<()> {
        self.region.poke(self.off - CANARY_LEN, 0x5a)
    }
}
