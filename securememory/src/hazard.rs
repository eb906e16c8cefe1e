//! Per-thread hazard slots: how an access that needs no window (the copy
//! path, a keyed pool slot) tells `close` it is in flight without writing a
//! cache line that another core reads on every access.
//!
//! Each thread that makes such an access owns one [`Record`], one cache line
//! of slots, one slot per nested access, each holding the id of the gate it
//! is inside (0: free). Only the owner writes its slots; `close` reads them.
//!
//! The handshake (the store-buffering argument of hazard pointers):
//! - access: publish the gate's id in its next free slot, `fence(SeqCst)`,
//!   then read the gate's CLOSING flag (a line that only `close` writes);
//!   if set, clear the slot and give up;
//! - close: set CLOSING, `fence(SeqCst)`, then scan every record for the id.
//!
//! The two fences are ordered one way or the other: either the access's
//! fence comes first and the scan sees the slot (close waits for it), or
//! the close's comes first and the access sees CLOSING (it backs out). An
//! access ends by clearing its slot (`Release`, so its reads of the secret
//! happen before a close that reads the cleared slot with `Acquire`),
//! `fence(SeqCst)`, then reading CLOSING: if set, it wakes the closer, which
//! scanned (saw the slot) before it cleared it.
//!
//! Records live in one static array: no allocation, no lock, so a fork child
//! copies them in a usable state whatever the parent's threads were doing.
//! A thread claims one on its first such access and gives it back when it
//! exits; `claimed` (a high-water mark) bounds the scan. A thread that finds
//! none free, or nests deeper than [`SLOTS`], or runs while its thread-locals
//! are being destroyed, is told `None` and counts itself in the gate's state
//! word instead (the shared path, correct and slower).
//!
//! Fork: a child inherits the records of the parent's other threads, which
//! do not exist in it; their slots keep what they held forever. They cannot
//! make a child's `close` wait or match a gate of the child: gate ids are
//! handed out by a counter and never reused (a gate made in the child gets
//! an id above every id of the parent's gates), and a gate of the parent is
//! closed in the child by `Gate::abandon`, which does not scan. A raw fork
//! (no at-fork handler) needs nothing more: nothing here is per process.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use crate::sync::{fence, AtomicBool, AtomicU64, AtomicUsize};

/// Slots per thread: nested copy-path accesses deeper than this count
/// themselves in the gate's state word. Seven ids and the owner flag fill
/// one 64-byte line. (Two under loom, to keep the model small.)
#[cfg(not(loom))]
pub(crate) const SLOTS: usize = 7;
#[cfg(loom)]
pub(crate) const SLOTS: usize = 2;

/// Threads with a record at once; more fall back to the state word. The
/// array is zero-initialised (`.bss`): a page is only touched once a
/// record in it is claimed.
#[cfg(not(loom))]
const RECORDS: usize = 1024;
#[cfg(loom)]
const RECORDS: usize = 4;

/// One thread's slots, alone on its cache line.
#[repr(align(64))]
struct Record {
    slots: [AtomicU64; SLOTS],
    owned: AtomicBool,
}

/// Every record, and how many have ever been claimed (the scan's bound).
struct Registry {
    claimed: AtomicUsize,
    #[cfg(not(loom))]
    records: [Record; RECORDS],
    #[cfg(loom)]
    records: Vec<Record>,
}

#[cfg(not(loom))]
impl Record {
    const fn new() -> Record {
        Record {
            slots: [const { AtomicU64::new(0) }; SLOTS],
            owned: AtomicBool::new(false),
        }
    }
}

#[cfg(not(loom))]
static REGISTRY: Registry = Registry {
    claimed: AtomicUsize::new(0),
    records: [const { Record::new() }; RECORDS],
};

#[cfg(loom)]
loom::lazy_static! {
    static ref REGISTRY: Registry = Registry {
        claimed: AtomicUsize::new(0),
        records: (0..RECORDS)
            .map(|_| Record {
                slots: std::array::from_fn(|_| AtomicU64::new(0)),
                owned: AtomicBool::new(false),
            })
            .collect(),
    };
}

/// `Mine::index` before the thread's first claim.
const UNCLAIMED: usize = usize::MAX;
/// `Mine::index` when every record was taken: this thread uses the state word.
const NONE_FREE: usize = usize::MAX - 1;

/// This thread's record and how many of its slots are in use (a stack:
/// accesses on one thread end in the reverse order they began).
struct Mine {
    index: Cell<usize>,
    depth: Cell<usize>,
}

impl Mine {
    /// Thread exit: give the record back. Its slots are all clear (no access
    /// outlives its thread's stack frame); if not, keep it out of reuse.
    fn give_back(&self) {
        let i = self.index.replace(NONE_FREE);
        if i < RECORDS && self.depth.get() == 0 {
            REGISTRY.records[i].owned.store(false, Release);
        }
    }
}

/// Loom's thread-local destructors cannot touch its atomics, so the model
/// calls [`thread_exit`] at the end of each thread instead.
#[cfg(not(loom))]
impl Drop for Mine {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// What a thread's exit does to its record (the loom model's threads call
/// this last; shipped code runs it from the thread-local's destructor).
#[cfg(loom)]
pub(crate) fn thread_exit() {
    MINE.with(Mine::give_back);
}

#[cfg(not(loom))]
thread_local! {
    static MINE: Mine = const {
        Mine {
            index: Cell::new(UNCLAIMED),
            depth: Cell::new(0),
        }
    };
}

#[cfg(loom)]
loom::thread_local! {
    static MINE: Mine = Mine {
        index: Cell::new(UNCLAIMED),
        depth: Cell::new(0),
    };
}

/// The first free record, claimed for this thread (`NONE_FREE` if none is).
#[cold]
fn claim() -> usize {
    for (i, r) in REGISTRY.records.iter().enumerate() {
        if !r.owned.load(Relaxed)
            && r.owned
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
        {
            // Before any slot of it is published (the publish's fence
            // orders this for a close's scan).
            REGISTRY.claimed.fetch_max(i + 1, Relaxed);
            return i;
        }
    }
    NONE_FREE
}

/// A published slot: the calling thread is inside an access of the gate
/// whose id it holds. Cleared by [`Held::clear`] on the same thread.
pub(crate) struct Held {
    slot: &'static AtomicU64,
    /// Cleared by the thread that published it (its depth is thread-local).
    _not_send: PhantomData<*const ()>,
}

/// Publish `id` in this thread's next free slot, then `fence(SeqCst)`: the
/// caller reads CLOSING next. `None` when this thread has no slot to give
/// (see the module docs): the caller counts itself in the state word.
#[inline]
pub(crate) fn publish(id: u64) -> Option<Held> {
    MINE.try_with(|m| {
        let mut i = m.index.get();
        if i == UNCLAIMED {
            i = claim();
            m.index.set(i);
        }
        let depth = m.depth.get();
        if i >= RECORDS || depth == SLOTS {
            return None;
        }
        let slot = &REGISTRY.records[i].slots[depth];
        slot.store(id, Relaxed);
        fence(SeqCst);
        m.depth.set(depth + 1);
        Some(Held {
            slot,
            _not_send: PhantomData,
        })
    })
    .ok()
    .flatten()
}

impl Held {
    /// Clear the slot, then `fence(SeqCst)`: the caller reads CLOSING next
    /// and wakes a closer if it is set.
    #[inline]
    pub(crate) fn clear(self) {
        self.slot.store(0, Release);
        fence(SeqCst);
        // Alive: it was when this slot was published, on this thread, and
        // a thread's locals outlive every access it makes.
        let _ = MINE.try_with(|m| m.depth.set(m.depth.get() - 1));
    }
}

/// Whether any thread's slot holds `id`. The caller set CLOSING on the gate
/// and then made a `fence(SeqCst)`; a slot cleared since is read as clear,
/// with the clearing access's reads of the secret ordered before this.
pub(crate) fn held(id: u64) -> bool {
    let n = REGISTRY.claimed.load(Relaxed).min(RECORDS);
    REGISTRY.records[..n]
        .iter()
        .any(|r| r.slots.iter().any(|s| s.load(Acquire) == id))
}

/// A fresh gate id: never 0 (a free slot), never reused (see the module
/// docs on fork). Not loom's: the counter only needs to be unique.
pub(crate) fn new_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}
