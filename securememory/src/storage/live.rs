//! The list of live secrets that [`purge`](super::purge) closes: weak
//! references to each secret's gate and storage, in [`SHARDS`] lists per
//! fork generation (a child starts on lists its parent's threads never
//! locked; its parent's secrets are not on them). No user code runs under
//! a list's lock.

use std::sync::{Arc, Mutex, Weak};

use super::Storage;
use crate::access::Gate;

/// Fork generations with a list (as many as have a memory file).
const GENERATIONS: usize = 16;

/// Lists per generation: each thread registers on one of them, so that
/// threads creating secrets at once rarely wait on one another's lock
/// (one shared list was a third of the time two creating threads spent).
const SHARDS: usize = 8;

/// Each secret's gate, storage and purge epoch (when its creation began).
type List = Vec<(Weak<Gate>, Weak<Storage>, u64)>;

static LIVE: [[Mutex<List>; SHARDS]; GENERATIONS] =
    [const { [const { Mutex::new(Vec::new()) }; SHARDS] }; GENERATIONS];

fn list(generation: u64, shard: usize) -> Option<std::sync::MutexGuard<'static, List>> {
    let m = LIVE.get(usize::try_from(generation).ok()?)?.get(shard)?;
    Some(m.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Put a new secret, whose creation began in purge epoch `epoch`, on the
/// list of the generation its memory was made in. Dropped secrets are
/// pruned when the list would grow.
pub(crate) fn register(gate: &Arc<Gate>, storage: &Arc<Storage>, epoch: u64) {
    let Some(mut l) = list(storage.fork_gen(), crate::shard::this_thread(SHARDS)) else {
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
    let mut all = Vec::new();
    for shard in 0..SHARDS {
        let Some(mut l) = list(generation, shard) else {
            return all;
        };
        l.retain(|(g, ..)| g.strong_count() > 0);
        all.extend(
            l.iter()
                .filter(|&&(.., epoch)| epoch < before)
                .filter_map(|(g, s, _)| Some((g.upgrade()?, s.upgrade()?))),
        );
    }
    all
}
