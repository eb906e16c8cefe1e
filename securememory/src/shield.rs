//! The one door through which the library calls user code on its own behalf:
//! the program's `metrics` recorder and its `tracing` subscriber.
//!
//! Such code may panic. A panic that unwound through the library between two
//! state changes could leave a secret half-closed (released twice, or
//! readable at rest), so [`shield`] catches it and drops it: a panicking
//! recorder or subscriber loses that one report and nothing else. Callers
//! also make these calls only with no library lock held and every invariant
//! restored, since the code called may re-enter the library.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Run `report` (a metric or a log event), swallowing any panic it raises.
#[inline]
pub(crate) fn shield(report: impl FnOnce()) {
    // AssertUnwindSafe: `report` only reads the values it publishes; nothing
    // of the library's is left half-changed if it unwinds.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(report)) {
        // The payload is user data too: its destructor may panic as well.
        if let Err(again) = catch_unwind(AssertUnwindSafe(|| drop(payload))) {
            std::mem::forget(again);
        }
    }
}
