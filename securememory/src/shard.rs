//! Which of several copies of a shared structure this thread uses, so that
//! threads working at once (creating and closing secrets) mostly take
//! different locks. Threads are handed shards in turn, on first use.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// This thread's shard among `shards` (greater than zero).
pub(crate) fn this_thread(shards: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let n = MINE.with(|m| {
        if m.get() == usize::MAX {
            m.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        m.get()
    });
    n % shards
}
