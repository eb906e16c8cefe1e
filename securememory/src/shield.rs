//! The one door through which the library calls user code on its own behalf:
//! the program's `metrics` recorder and its `tracing` subscriber.
//!
//! Such code may panic. A panic that unwound through the library between two
//! state changes could leave a secret half-closed (released twice, or
//! readable at rest), so [`shield`] catches it and drops it: a panicking
//! recorder or subscriber loses that one report and nothing else. Callers
//! also make these calls only with no library lock held and every invariant
//! restored, since the code called may re-enter the library.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// Set while this thread runs the library's code inside a panic hook.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with every report on this thread skipped: for the purge's panic
/// hook, where a panic (which [`shield`] would catch elsewhere) aborts the
/// process at once ("panicked while processing panic"), before the purge
/// is done and although the program would have caught its own panic.
pub(crate) fn quiet<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            QUIET.with(|q| q.set(self.0));
        }
    }
    let _restore = Restore(QUIET.with(|q| q.replace(true)));
    f()
}

/// Run `report` (a metric or a log event), swallowing any panic it raises;
/// skipped inside [`quiet`].
#[inline]
pub(crate) fn shield(report: impl FnOnce()) {
    if QUIET.with(Cell::get) {
        return;
    }
    // AssertUnwindSafe: `report` only reads the values it publishes; nothing
    // of the library's is left half-changed if it unwinds.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(report)) {
        // The payload is user data too: its destructor may panic as well.
        if let Err(again) = catch_unwind(AssertUnwindSafe(|| drop(payload))) {
            std::mem::forget(again);
        }
    }
}
