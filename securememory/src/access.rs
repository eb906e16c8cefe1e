//! The access / close state machine of one secret. It knows nothing about
//! pages: a [`Window`] is told when the first reader arrives (open) and when
//! the last one leaves (close). Model-checked with loom (`access_loom.rs`).
//!
//! One atomic word holds the whole state, in the manner of std's futex
//! RwLock. Accesses that overlap one already in flight take a lock-free fast
//! path (one compare-and-swap); only the first-reader and last-reader
//! transitions, and closing, take the `transition` mutex.

use crate::sync::{AtomicUsize, Condvar, Mutex};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Set once `close` has begun: no new access may start.
const CLOSING: usize = 1 << (usize::BITS - 1);
/// Set while the window is open (pages readable). Changed only under the
/// `transition` mutex. Invariant: `readers > 0` on the window path implies OPEN.
const OPEN: usize = 1 << (usize::BITS - 2);
/// Set once the memory has been released; only under the mutex.
const CLOSED: usize = 1 << (usize::BITS - 3);
/// The number of accesses in flight.
const READERS: usize = CLOSED - 1;

/// Opens and closes the access window of some memory.
pub(crate) trait Window {
    /// Make the memory readable. Called with no reader inside.
    fn open(&self) -> Result<(), crate::Error>;
    /// Make the memory unreadable again. Called when the last reader left.
    fn close(&self) -> Result<(), crate::Error>;
}

/// The state of one secret's accesses.
pub(crate) struct Gate {
    state: AtomicUsize,
    transition: Mutex<()>,
    drained: Condvar,
}

impl Gate {
    pub(crate) fn new() -> Self {
        Gate {
            state: AtomicUsize::new(0),
            transition: Mutex::new(()),
            drained: Condvar::new(),
        }
    }

    /// Whether `close` has begun.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Acquire) & CLOSING != 0
    }

    /// Start an access that needs no window (the copy path): only counts it,
    /// so that `close` waits for it.
    #[inline]
    pub(crate) fn enter<'a, W: Window>(&'a self, w: &'a W) -> Result<Entered<'a, W>, crate::Error> {
        let mut s = self.state.load(Relaxed);
        loop {
            if s & CLOSING != 0 {
                return Err(crate::Error::Closed);
            }
            match self.state.compare_exchange_weak(s, s + 1, Acquire, Relaxed) {
                Ok(_) => return Ok(Entered::new(self, w, false)),
                Err(now) => s = now,
            }
        }
    }

    /// Start an access through the window: open it if this is the first reader.
    #[inline]
    pub(crate) fn enter_window<'a, W: Window>(
        &'a self,
        w: &'a W,
    ) -> Result<Entered<'a, W>, crate::Error> {
        let mut s = self.state.load(Relaxed);
        // Fast path: the window is open and another access holds it open.
        while s & CLOSING == 0 && s & OPEN != 0 && s & READERS != 0 {
            match self.state.compare_exchange_weak(s, s + 1, Acquire, Relaxed) {
                Ok(_) => return Ok(Entered::new(self, w, true)),
                Err(now) => s = now,
            }
        }
        self.enter_window_slow(w)?;
        Ok(Entered::new(self, w, true))
    }

    #[cold]
    fn enter_window_slow(&self, w: &impl Window) -> Result<(), crate::Error> {
        let _t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.state.load(Acquire);
        if s & CLOSING != 0 {
            return Err(crate::Error::Closed);
        }
        if s & OPEN == 0 {
            // No window reader can be inside: one inside implies OPEN, and
            // OPEN is only set here, under the mutex (copy-path readers may be).
            w.open()?;
            self.state.fetch_or(OPEN, AcqRel);
        }
        self.state.fetch_add(1, AcqRel);
        Ok(())
    }

    /// End an access started with [`enter`](Self::enter) or
    /// [`enter_window`](Self::enter_window): close the window if this was
    /// the last reader and it is open, and wake a waiting `close`. An error
    /// means the memory could not be hidden again; the gate is then closed
    /// for good.
    #[inline]
    pub(crate) fn leave(&self, w: &impl Window) -> Result<(), crate::Error> {
        let prev = self.state.fetch_sub(1, Release);
        if prev & READERS == 1 && prev & (OPEN | CLOSING) != 0 {
            return self.leave_window_slow(w);
        }
        Ok(())
    }

    #[cold]
    fn leave_window_slow(&self, w: &impl Window) -> Result<(), crate::Error> {
        let _t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = self.state.load(Acquire);
        let mut result = Ok(());
        // Another reader may have come in since our decrement; then it owns
        // the window now. OPEN is cleared (only if still no reader) before the
        // pages are hidden: a copy-path reader's count would otherwise let a
        // window reader take the fast path into a window being closed.
        while s & READERS == 0 && s & OPEN != 0 {
            match self.state.compare_exchange(s, s & !OPEN, AcqRel, Acquire) {
                Ok(_) => {
                    result = w.close();
                    if result.is_err() {
                        // Readable and cannot be hidden: no one may enter again.
                        self.state.fetch_or(CLOSING, AcqRel);
                    }
                    break;
                }
                Err(now) => s = now,
            }
        }
        // Notifying under the mutex orders this wake-up after the closer's
        // check of the reader count, so the closer cannot miss it.
        if s & CLOSING != 0 || result.is_err() {
            self.drained.notify_all();
        }
        result
    }

    /// Stop new accesses, wait for those in flight, then run `release` once
    /// (under the mutex, so a concurrent second `close` returns only after
    /// the first finished). Returns `None` if already closed, else what
    /// `release` returned.
    pub(crate) fn close<R>(&self, release: impl FnOnce() -> R) -> Option<R> {
        self.state.fetch_or(CLOSING, AcqRel);
        let mut t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        // Also wait while OPEN: the last reader has left the count but not
        // yet hidden the window (it does so under the mutex, then notifies).
        while self.state.load(Acquire) & (READERS | OPEN) != 0 {
            t = self.drained.wait(t).unwrap_or_else(|p| p.into_inner());
        }
        if self.state.load(Acquire) & CLOSED != 0 {
            return None;
        }
        let r = release();
        self.state.fetch_or(CLOSED, AcqRel);
        drop(t);
        Some(r)
    }

    /// Stop new accesses without waiting or taking the mutex (a fork child,
    /// where in-flight counts and the mutex belong to the parent's threads).
    /// Returns whether this call was the first to stop them.
    pub(crate) fn abandon(&self) -> bool {
        self.state.fetch_or(CLOSING, AcqRel) & CLOSING == 0
    }

    /// Whether the window is open right now (tests and the bench's check).
    #[allow(dead_code)]
    pub(crate) fn is_open(&self) -> bool {
        self.state.load(Acquire) & OPEN != 0
    }
}

/// One access in flight. Ending it (by [`finish`](Entered::finish), or by
/// drop when the closure panicked) leaves the gate, closing the window if
/// this was the last reader.
pub(crate) struct Entered<'a, W: Window> {
    gate: &'a Gate,
    w: &'a W,
    window: bool,
    done: bool,
}

impl<'a, W: Window> Entered<'a, W> {
    fn new(gate: &'a Gate, w: &'a W, window: bool) -> Self {
        Entered {
            gate,
            w,
            window,
            done: false,
        }
    }

    /// Whether this access holds the window open (the memory is readable).
    pub(crate) fn through_window(&self) -> bool {
        self.window
    }

    /// End the access and report whether the window could be closed.
    pub(crate) fn finish(mut self) -> Result<(), crate::Error> {
        self.done = true;
        self.gate.leave(self.w)
    }
}

impl<W: Window> Drop for Entered<'_, W> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.gate.leave(self.w);
        }
    }
}
