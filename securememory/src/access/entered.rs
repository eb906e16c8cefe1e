//! One access in flight ([`Entered`]), and how its gate knows of it: the
//! proof a view of the memory borrows, and the way out (on unwind too).

use super::{Gate, Window};
use crate::hazard::Held;

/// One access in flight. Ending it (by [`finish`](Entered::finish), or by
/// drop when the closure panicked) leaves the gate, closing the window if
/// this was the last reader.
pub(crate) struct Entered<'a, W: Window> {
    gate: &'a Gate,
    w: &'a W,
    /// `None` once ended.
    how: Option<How>,
}

/// How an access is known to its gate.
pub(super) enum How {
    /// Counted in the state word, holding the window open.
    Window,
    /// Counted in the state word, no window (a copy access with no slot).
    Counted,
    /// In a hazard slot of this thread (a copy access).
    Slot(Held),
}

impl<'a, W: Window> Entered<'a, W> {
    pub(super) fn new(gate: &'a Gate, w: &'a W, how: How) -> Self {
        Entered {
            gate,
            w,
            how: Some(how),
        }
    }

    /// Whether this access holds the window open (the memory is readable).
    pub(crate) fn through_window(&self) -> bool {
        matches!(self.how, Some(How::Window))
    }

    /// End the access and report whether the window could be closed.
    pub(crate) fn finish(mut self) -> Result<(), crate::error::Error> {
        self.end()
    }

    /// Leave the gate, once.
    #[inline]
    fn end(&mut self) -> Result<(), crate::error::Error> {
        match self.how.take() {
            Some(How::Slot(held)) => {
                self.gate.unpublish(held);
                Ok(())
            }
            Some(How::Window | How::Counted) => self.gate.leave(self.w),
            None => Ok(()),
        }
    }
}

impl<W: Window> Drop for Entered<'_, W> {
    fn drop(&mut self) {
        let _ = self.end();
    }
}
