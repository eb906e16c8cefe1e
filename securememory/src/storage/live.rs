//! The list of live secrets that [`purge`](super::purge) closes: weak
//! references to each secret's gate and storage, one list per fork
//! generation (a child starts on a list its parent's threads never locked;
//! its parent's secrets are not on it). No user code runs under the lock.

use std::sync::{Arc, Mutex, Weak};

use super::Storage;
use crate::access::Gate;

/// Fork generations with a list (as many as have a memory file).
const GENERATIONS: usize = 16;

/// Each secret's gate, storage and purge epoch (when its creation began).
type List = Vec<(Weak<Gate>, Weak<Storage>, u64)>;

static LIVE: [Mutex<List>; GENERATIONS] = [const { Mutex::new(Vec::new()) }; GENERATIONS];

fn list(generation: u64) -> Option<std::sync::MutexGuard<'static, List>> {
    let m = LIVE.get(usize::try_from(generation).ok()?)?;
    Some(m.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Put a new secret, whose creation began in purge epoch `epoch`, on the
/// list of the generation its memory was made in. Dropped secrets are
/// pruned when the list would grow.
pub(crate) fn register(gate: &Arc<Gate>, storage: &Arc<Storage>, epoch: u64) {
    let Some(mut l) = list(storage.fork_gen()) else {
        return;
    };
    if l.len() == l.capacity() {
        l.retain(|(g, ..)| g.strong_count() > 0);
        // Grow when mostly live, so pruning stays amortised O(1).
        if l.len() >= l.capacity() / 2 {
            let more = l.capacity().max(16);
            l.reserve(more);
        }
    }
    #[cfg(feature = "test-hooks")]
    crate::lock_point::at(crate::lock_point::LockPoint::LiveList);
    l.push((Arc::downgrade(gate), Arc::downgrade(storage), epoch));
}

/// The live secrets of `generation` whose creation began before purge
/// epoch `before` (a secret made after the purge began is not its to close,
/// even if it reached the list first), kept alive while the purge closes
/// them (their owners may drop them meanwhile).
pub(crate) fn take_all(generation: u64, before: u64) -> Vec<(Arc<Gate>, Arc<Storage>)> {
    let Some(mut l) = list(generation) else {
        return Vec::new();
    };
    l.retain(|(g, ..)| g.strong_count() > 0);
    l.iter()
        .filter(|&&(.., epoch)| epoch < before)
        .filter_map(|(g, s, _)| Some((g.upgrade()?, s.upgrade()?)))
        .collect()
}
