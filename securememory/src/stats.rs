//! [`stats`]: the library's counters, assembled above the two modules that
//! keep them (`metrics`, and the memlock budget in `mem`), so neither
//! imports the other.

use crate::mem::budget;
use crate::metrics::{self, Stats};

/// The library's counters now.
pub fn stats() -> Stats {
    Stats {
        bytes_locked: budget::locked_bytes(),
        sealed_arena_bytes: crate::mem::arena::mapped_bytes(),
        ready_pages: crate::mem::region::ready_pages(),
        ..metrics::counters()
    }
}
