//! The list of live secrets that [`purge`](super::purge) closes: weak
//! references to each secret's gate and storage, one list per fork
//! generation (a child starts on a list its parent's threads never locked;
//! its parent's secrets are not on it). No user code runs under the lock.

use std::sync::{Arc, Mutex, Weak};

use super::Storage;
use crate::access::Gate;

/// Fork generations with a list (as many as have a memory file).
const GENERATIONS: usize = 16;

type List = Vec<(Weak<Gate>, Weak<Storage>)>;

static LIVE: [Mutex<List>; GENERATIONS] = [const { Mutex::new(Vec::new()) }; GENERATIONS];

fn list(generation: u64) -> Option<std::sync::MutexGuard<'static, List>> {
    let m = LIVE.get(usize::try_from(generation).ok()?)?;
    Some(m.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Put a new secret on the list of the generation its memory was made in.
/// Dropped secrets are pruned when the list would grow.
pub(crate) fn register(gate: &Arc<Gate>, storage: &Arc<Storage>) {
    let Some(mut l) = list(storage.fork_gen()) else {
        return;
    };
    if l.len() == l.capacity() {
        l.retain(|(g, _)| g.strong_count() > 0);
        // Grow when mostly live, so pruning stays amortised O(1).
        if l.len() >= l.capacity() / 2 {
            let more = l.capacity().max(16);
            l.reserve(more);
        }
    }
    #[cfg(feature = "test-hooks")]
    crate::lock_point::at(crate::lock_point::LockPoint::LiveList);
    l.push((Arc::downgrade(gate), Arc::downgrade(storage)));
}

/// The live secrets of `generation`, kept alive while the purge closes them
/// (their owners may drop them meanwhile).
pub(crate) fn take_all(generation: u64) -> Vec<(Arc<Gate>, Arc<Storage>)> {
    let Some(mut l) = list(generation) else {
        return Vec::new();
    };
    l.retain(|(g, _)| g.strong_count() > 0);
    l.iter()
        .filter_map(|(g, s)| Some((g.upgrade()?, s.upgrade()?)))
        .collect()
}
