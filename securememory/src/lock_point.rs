//! Test-only lock points (feature `test-hooks`): places where the library
//! holds a lock, where a test runs code of its own (to park a thread there,
//! or raise a signal while the lock is held). A leaf, so that code of every
//! layer, the gate included, can name a point.

use std::sync::RwLock;

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

static AT_LOCK: RwLock<Option<fn(LockPoint)>> = RwLock::new(None);

/// Run `f(point)` at every lock point from now on (`None`: stop).
pub(crate) fn set(f: Option<fn(LockPoint)>) {
    *AT_LOCK.write().unwrap_or_else(|p| p.into_inner()) = f;
}

/// A lock point: the test's function, if one is set, runs here (with no
/// lock of this module held, so it may reach another lock point).
pub(crate) fn at(point: LockPoint) {
    let f = *AT_LOCK.read().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = f {
        f(point);
    }
}
