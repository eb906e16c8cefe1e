//! The accesses this thread is inside, innermost last: so that `close`
//! from inside an access fails instead of waiting for itself, nesting has
//! a bound, and a purge knows which accesses it cannot wait for.

use std::cell::Cell;

use crate::access::Gate;
use crate::error::{Error, Result};

/// The deepest nesting of accesses tracked per thread.
const MAX_NESTING: usize = 32;

/// Gates of the secrets this thread is inside an access of, so that `close`
/// from inside an access fails instead of waiting for itself.
struct ActiveStack {
    depth: Cell<usize>,
    gates: [Cell<usize>; MAX_NESTING],
}

thread_local! {
    static ACTIVE: ActiveStack = const {
        ActiveStack {
            depth: Cell::new(0),
            gates: [const { Cell::new(0) }; MAX_NESTING],
        }
    };
}

/// Marks this thread as inside an access of one secret until dropped.
pub(super) struct Active;

impl Active {
    #[inline]
    pub(super) fn push(gate: &Gate) -> Result<Active> {
        ACTIVE.with(|a| {
            let depth = a.depth.get();
            if depth == MAX_NESTING {
                return Err(Error::NestingTooDeep(MAX_NESTING));
            }
            a.gates[depth].set(gate as *const Gate as usize);
            a.depth.set(depth + 1);
            Ok(Active)
        })
    }

    pub(super) fn contains(gate: &Gate) -> bool {
        let me = gate as *const Gate as usize;
        ACTIVE
            .try_with(|a| a.gates[..a.depth.get()].iter().any(|g| g.get() == me))
            .unwrap_or(false)
    }
}

impl Drop for Active {
    #[inline]
    fn drop(&mut self) {
        let _ = ACTIVE.try_with(|a| a.depth.set(a.depth.get() - 1));
    }
}

/// Whether this thread is inside an access of the secret with this gate (a
/// purge cannot wait for it).
pub(crate) fn inside_access(gate: &Gate) -> bool {
    Active::contains(gate)
}
