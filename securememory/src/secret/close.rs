//! Ending a secret: `close` (and drop, which closes), and the release a
//! purge could not wait for, made by the last access in flight as it ends.

use super::active::Active;
use super::Secret;
use crate::error::{Error, Result};
use crate::mem::fork;
use crate::metrics;
use crate::shield::shield;
use crate::storage::Released;

impl Secret {
    /// Close the secret: stop new accesses, wait for those in flight, then
    /// wipe, unlock and unmap its memory. Idempotent: a second call returns
    /// `Ok(())` once the first has finished (at once if made from a metrics
    /// recorder or `tracing` subscriber that the first one is reporting to).
    /// Afterwards every access fails with [`Error::Closed`].
    ///
    /// # Errors
    /// - [`Error::CloseWithinAccess`] when called from inside an access of
    ///   this same secret on this thread (closing would wait for itself); the
    ///   secret stays open.
    /// - [`Error::CanaryDamaged`] for a guarded secret whose canary was
    ///   overwritten; the memory is wiped and freed all the same.
    /// - [`Error::ProtectFailed`] if the pages could not be made writable to
    ///   wipe; they are unmapped all the same.
    /// - [`Error::WipeFailed`] if writing zeros into the memory file failed;
    ///   the range is punched out of the file instead and released.
    /// - [`Error::UnmapFailed`] if the kernel refused to unmap the wiped
    ///   pages (the map-count limit); they stay mapped and counted, are
    ///   never reused, and a later release unmaps them.
    pub fn close(&self) -> Result<()> {
        if self.gate.is_releasing_here() {
            // This thread is releasing this secret and the code the release
            // reports to (a metrics recorder) closed it again: that close is
            // the one in progress, further up this thread's stack. (Known
            // by the gate, not the access stack, which may be full.)
            return Ok(());
        }
        if Active::contains(&self.gate) {
            return Err(Error::CloseWithinAccess);
        }
        if self.fork_gen != fork::generation() {
            // A fork child: the gate's count and mutex were copied mid-flight
            // from the parent's threads, so waiting could hang forever. Mark
            // it closed without waiting; the memory is not the child's.
            if let Some(drained) = self.gate.abandon() {
                self.storage.release_in_fork_child(&drained);
            }
            return Ok(());
        }
        // The release only changes memory; nothing in it panics or reports
        // while a lock is held. The gate marks it claimed before it runs, so
        // it runs at most once even if it unwinds.
        let released = self.gate.close(|drained| {
            let Released {
                canary_intact,
                wiped,
            } = self.storage.release(drained);
            (canary_intact, wiped, metrics::count_closed())
        });
        let Some((canary, wiped, in_use)) = released else {
            return Ok(());
        };
        // Reported once the secret is closed for good: the recorder and the
        // subscriber may panic (swallowed) or re-enter the library.
        metrics::closed(in_use);
        let (len, backend) = (self.len, self.backend);
        shield(|| tracing::debug!(len, backend = ?backend, "securememory: secret closed"));
        match canary {
            Ok(true) => wiped,
            // A signal's purge zeroed the canary too: no overrun.
            Ok(false) if self.purged() => wiped,
            Ok(false) => {
                metrics::canary_damaged();
                shield(|| {
                    tracing::error!("securememory: damaged canary in front of a guarded secret (out-of-bounds write)")
                });
                Err(Error::CanaryDamaged)
            }
            // The canary could not be read (a failed protection change
            // or copy): that error, not a false report of damage.
            Err(e) => Err(e),
        }
    }

    /// At the end of an access: a purge that could not wait for it (made
    /// on this thread inside an access, or by a signal) releases the secret
    /// now, if no other access is in flight (the last one out does).
    #[cold]
    fn finish_purge(&self) {
        if Active::contains(&self.gate) {
            return;
        }
        let released = self.gate.close_if_idle(|drained| {
            let _ = self.storage.release(drained);
            metrics::count_closed()
        });
        if let Some(in_use) = released {
            metrics::closed(in_use);
            metrics::purged(1);
        }
    }
}

/// Finishes a purge that could not wait for an access, when it ends.
pub(super) struct Settle<'a>(pub(super) &'a Secret);

impl Drop for Settle<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.0.purged() {
            self.0.finish_purge();
        }
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            shield(|| tracing::warn!(error = %e, "securememory: error closing a dropped secret"));
        }
    }
}
