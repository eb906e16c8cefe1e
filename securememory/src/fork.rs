//! Fork safety. A fork child must never see a secret's bytes and must never
//! be handed zeros in their place. The mappings themselves are advised
//! `MADV_WIPEONFORK` (private) or `MADV_DONTFORK` (shared), and this module
//! keeps a generation number that an at-fork handler bumps in the child, so
//! every access can tell, with one atomic load, that it runs in a child of
//! the process that created the secret and return [`Error::Forked`](crate::Error::Forked).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use crate::mem::sys;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// Runs in the child right after `fork`, before the child's own code: only
/// async-signal-safe work here (an atomic add and a `close`).
extern "C" fn in_child() {
    let now = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    crate::store::close_in_fork_child(now);
}

/// Register the at-fork handler once per process. Called before the first
/// secret (or memory file) exists.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // Failure leaves fork detection off; the mappings' fork advice still
        // keeps the bytes out of the child.
        if let Err(e) = sys::register_atfork(in_child) {
            crate::shield::shield(|| tracing::warn!(error = %e, "securememory: pthread_atfork failed; fork detection disabled"));
        }
    });
}

/// The current fork generation of this process.
#[inline]
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}
