//! What the low layers wiped, for tests (feature `test-hooks`): a region or a
//! pool slot records its bytes after the wipe and before the unmap, and
//! `test_hooks` reads the record from above. A leaf that imports nothing of
//! the crate, so the observation points need no import pointing up.

use std::cell::{Cell, RefCell};

thread_local! {
    static WIPED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Record the bytes `read` returns as the last wiped ones on this thread,
/// if recording is on here (`read` is not called otherwise: it allocates).
pub(crate) fn wiped(read: impl FnOnce() -> Vec<u8>) {
    if !enabled() {
        return;
    }
    let bytes = read();
    let _ = WIPED.try_with(|w| *w.borrow_mut() = Some(bytes));
}

/// The last record on this thread, taken; `None` if none since the last take.
pub(crate) fn take_wiped() -> Option<Vec<u8>> {
    WIPED.with(|w| w.borrow_mut().take())
}

/// Turn recording on or off for this thread (on by default).
pub(crate) fn set_enabled(on: bool) {
    ENABLED.with(|o| o.set(on));
}

fn enabled() -> bool {
    ENABLED.try_with(|o| o.get()).unwrap_or(true)
}
