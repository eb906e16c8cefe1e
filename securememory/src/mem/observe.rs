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
    let _ = ALL.try_with(|a| {
        if let Some(all) = a.borrow_mut().as_mut() {
            all.push(bytes.clone());
        }
    });
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

thread_local! {
    static ALL: RefCell<Option<Vec<Vec<u8>>>> = const { RefCell::new(None) };
}

/// Keep every record on this thread (not only the last) until [`take_all`].
pub(crate) fn collect_all() {
    ALL.with(|a| *a.borrow_mut() = Some(Vec::new()));
}

/// Every record since [`collect_all`] on this thread; collecting stops.
pub(crate) fn take_all() -> Vec<Vec<u8>> {
    ALL.with(|a| a.borrow_mut().take()).unwrap_or_default()
}
