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

/// Places where the library holds a lock, where a test can run code
/// ([`at`]) to park a thread or raise a signal while the lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockPoint {
    /// A pool size class's lock, taking a free slot.
    PoolClass,
    /// The memory file's allocator lock, taking a range.
    MemoryFile,
    /// A secret's gate mutex, in `close`.
    GateClose,
    /// The purge's list of live secrets, registering a secret.
    LiveList,
}

static AT_LOCK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Run `f(point)` at every lock point from now on (`None`: stop).
pub(crate) fn set_at_lock(f: Option<fn(LockPoint)>) {
    AT_LOCK.store(
        f.map_or(0, |f| f as usize),
        std::sync::atomic::Ordering::Release,
    );
}

/// A lock point: the test's function, if one is set, runs here.
pub(crate) fn at(point: LockPoint) {
    let f = AT_LOCK.load(std::sync::atomic::Ordering::Acquire);
    if f != 0 {
        // SAFETY: only `set_at_lock` stores a non-zero value, and it stores
        // a `fn(LockPoint)`.
        let f: fn(LockPoint) = unsafe { std::mem::transmute::<usize, fn(LockPoint)>(f) };
        f(point);
    }
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
