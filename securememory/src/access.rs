//! The access / close state machine of one secret. It knows nothing about
//! pages: a [`Window`] is told when the first reader arrives (open) and when
//! the last one leaves (close). Model-checked with loom (`access_loom.rs`).
//!
//! One atomic word holds the whole state, in the manner of std's futex
//! RwLock. Accesses that overlap one already in flight take a lock-free fast
//! path (one compare-and-swap); only the first-reader and last-reader
//! transitions, and closing, take the `transition` mutex.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crate::sync::{AtomicUsize, Condvar, Mutex};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Set once `close` has begun: no new access may start.
const CLOSING: usize = 1 << (usize::BITS - 1);
/// Set while the window is open (pages readable). Changed only under the
/// `transition` mutex. Invariant: `readers > 0` on the window path implies OPEN.
const OPEN: usize = 1 << (usize::BITS - 2);
/// Set, under the mutex, by the one `close` that runs the release, before
/// it runs it: the release runs at most once, even if it unwinds.
const CLOSED: usize = 1 << (usize::BITS - 3);
/// Set, under the mutex, once that release has returned or unwound; other
/// closers wait for it.
const RELEASED: usize = 1 << (usize::BITS - 4);
/// Set, under the mutex, by a `close` that waits for another's release: the
/// wake-up is a system call (futex), made only when someone waits.
const RELEASE_WAITER: usize = 1 << (usize::BITS - 5);
/// The number of accesses in flight.
const READERS: usize = RELEASE_WAITER - 1;

/// Opens and closes the access window of some memory. `open` and `close`
/// run under the gate's mutex and must not call user code; `changed` runs
/// after, with no lock held, and is where a window reports (metrics, logs).
pub(crate) trait Window {
    /// Make the memory readable. Called with no reader inside.
    fn open(&self, turn: &Turn) -> Result<(), crate::error::Error>;
    /// Make the memory unreadable again. Called when the last reader left.
    fn close(&self, turn: &Turn) -> Result<(), crate::error::Error>;
    /// Report what `open` or `close` just did. May call user code.
    fn changed(&self, _result: &Result<(), crate::error::Error>) {}
}

/// Proof, passed to [`Window::open`] and [`Window::close`], that the caller
/// is the gate holding its transition mutex with no window reader inside:
/// only this module makes one, so a window's protection cannot be changed
/// from anywhere else.
pub(crate) struct Turn(());

/// Proof, passed to the release of [`Gate::close`], that no access is in
/// flight and none can start again (so no view of the memory exists): only this module
/// makes one (see [`Gate::close`] and [`Gate::abandon`]), so memory cannot
/// be wiped or unmapped under a live view of it.
pub(crate) struct Drained(());

/// The state of one secret's accesses.
pub(crate) struct Gate {
    state: AtomicUsize,
    transition: Mutex<()>,
    drained: Condvar,
    /// The thread running the release (see [`this_thread`]), so that a
    /// `close` it makes again from a report returns instead of waiting for
    /// itself, however deep that thread's access stack is. Only ever
    /// compared with the reading thread's own identity, which only that
    /// thread writes: no ordering needed.
    releaser: std::sync::atomic::AtomicUsize,
}

thread_local! {
    static THIS_THREAD: u8 = const { 0 };
}

/// An identity of the calling thread, unique among live threads (the
/// address of a thread-local; never destroyed, so usable in destructors).
fn this_thread() -> usize {
    THIS_THREAD.with(|t| t as *const u8 as usize)
}

/// Marks the release finished (returned or unwound) and wakes other closers.
struct Released<'a>(&'a Gate);

impl Drop for Released<'_> {
    fn drop(&mut self) {
        let _t = self.0.transition.lock().unwrap_or_else(|p| p.into_inner());
        if self.0.state.fetch_or(RELEASED, AcqRel) & RELEASE_WAITER != 0 {
            self.0.drained.notify_all();
        }
    }
}

impl Gate {
    pub(crate) fn new() -> Self {
        Gate {
            state: AtomicUsize::new(0),
            transition: Mutex::new(()),
            drained: Condvar::new(),
            releaser: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Whether `close` has begun.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Acquire) & CLOSING != 0
    }

    /// Whether the calling thread is running this gate's release right now
    /// (a `close` made from code the release reports to).
    pub(crate) fn is_releasing_here(&self) -> bool {
        self.state.load(Acquire) & (CLOSED | RELEASED) == CLOSED
            && self.releaser.load(Relaxed) == this_thread()
    }

    /// Start an access that needs no window (the copy path): only counts it,
    /// so that `close` waits for it.
    #[inline]
    pub(crate) fn enter<'a, W: Window>(
        &'a self,
        w: &'a W,
    ) -> Result<Entered<'a, W>, crate::error::Error> {
        let mut s = self.state.load(Relaxed);
        loop {
            if s & CLOSING != 0 {
                return Err(crate::error::Error::Closed);
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
    ) -> Result<Entered<'a, W>, crate::error::Error> {
        let mut s = self.state.load(Relaxed);
        // Fast path: the window is open and another access holds it open.
        while s & CLOSING == 0 && s & OPEN != 0 && s & READERS != 0 {
            match self.state.compare_exchange_weak(s, s + 1, Acquire, Relaxed) {
                Ok(_) => return Ok(Entered::new(self, w, true)),
                Err(now) => s = now,
            }
        }
        self.enter_window_slow(w)
    }

    #[cold]
    fn enter_window_slow<'a, W: Window>(
        &'a self,
        w: &'a W,
    ) -> Result<Entered<'a, W>, crate::error::Error> {
        let t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.state.load(Acquire);
        if s & CLOSING != 0 {
            return Err(crate::error::Error::Closed);
        }
        if s & OPEN != 0 {
            self.state.fetch_add(1, AcqRel);
            return Ok(Entered::new(self, w, true));
        }
        // No window reader can be inside: one inside implies OPEN, and
        // OPEN is only set here, under the mutex (copy-path readers may be).
        let opened = match catch_unwind(AssertUnwindSafe(|| w.open(&Turn(())))) {
            Ok(r) => r,
            Err(panic) => self.change_unwound(t, panic),
        };
        let entered = opened.as_ref().ok().map(|()| {
            self.state.fetch_or(OPEN, AcqRel);
            self.state.fetch_add(1, AcqRel);
            // Counted in: from here an unwind leaves the gate through this.
            Entered::new(self, w, true)
        });
        drop(t);
        w.changed(&opened);
        opened?;
        Ok(entered.expect("opened"))
    }

    /// End an access started with [`enter`](Self::enter) or
    /// [`enter_window`](Self::enter_window): close the window if this was
    /// the last reader and it is open, and wake a waiting `close`. An error
    /// means the memory could not be hidden again; the gate is then closed
    /// for good.
    #[inline]
    pub(crate) fn leave(&self, w: &impl Window) -> Result<(), crate::error::Error> {
        let prev = self.state.fetch_sub(1, Release);
        if prev & READERS == 1 && prev & (OPEN | CLOSING) != 0 {
            return self.leave_window_slow(w);
        }
        Ok(())
    }

    #[cold]
    fn leave_window_slow(&self, w: &impl Window) -> Result<(), crate::error::Error> {
        let t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = self.state.load(Acquire);
        let mut result = None;
        // Another reader may have come in since our decrement; then it owns
        // the window now. OPEN is cleared (only if still no reader) before the
        // pages are hidden: a copy-path reader's count would otherwise let a
        // window reader take the fast path into a window being closed.
        while s & READERS == 0 && s & OPEN != 0 {
            match self.state.compare_exchange(s, s & !OPEN, AcqRel, Acquire) {
                Ok(_) => {
                    let r = match catch_unwind(AssertUnwindSafe(|| w.close(&Turn(())))) {
                        Ok(r) => r,
                        Err(panic) => self.change_unwound(t, panic),
                    };
                    if r.is_err() {
                        // Readable and cannot be hidden: no one may enter again.
                        self.state.fetch_or(CLOSING, AcqRel);
                    }
                    result = Some(r);
                    break;
                }
                Err(now) => s = now,
            }
        }
        // Notifying under the mutex orders this wake-up after the closer's
        // check of the reader count, so the closer cannot miss it.
        if s & CLOSING != 0 || matches!(result, Some(Err(_))) {
            self.drained.notify_all();
        }
        drop(t);
        match result {
            Some(r) => {
                w.changed(&r);
                r
            }
            None => Ok(()),
        }
    }

    /// A window change (`open` or `close`, under the mutex `t`) unwound: the
    /// memory's state is unknown, so close the gate for good (the release
    /// will wipe it) and wake a waiting `close`, release the mutex unpoisoned,
    /// and let the panic go on.
    #[cold]
    fn change_unwound<G>(&self, t: G, panic: Box<dyn Any + Send>) -> ! {
        self.state.fetch_or(CLOSING, AcqRel);
        self.drained.notify_all();
        drop(t);
        resume_unwind(panic)
    }

    /// Stop new accesses, wait for those in flight, then run `release` once.
    /// The release is claimed (CLOSED) under the mutex before it runs, and
    /// it runs with no lock held (it may report to user code that re-enters
    /// the library); a concurrent second `close` returns only after it
    /// returned or unwound. Returns `None` if another `close` ran it, else
    /// what `release` returned.
    pub(crate) fn close<R>(&self, release: impl FnOnce(&Drained) -> R) -> Option<R> {
        self.state.fetch_or(CLOSING, AcqRel);
        let mut t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        // Also wait while OPEN: the last reader has left the count but not
        // yet hidden the window (it does so under the mutex, then notifies).
        while self.state.load(Acquire) & (READERS | OPEN) != 0 {
            t = self.drained.wait(t).unwrap_or_else(|p| p.into_inner());
        }
        if self.state.load(Acquire) & CLOSED != 0 {
            self.state.fetch_or(RELEASE_WAITER, AcqRel);
            while self.state.load(Acquire) & RELEASED == 0 {
                t = self.drained.wait(t).unwrap_or_else(|p| p.into_inner());
            }
            return None;
        }
        self.releaser.store(this_thread(), Relaxed);
        self.state.fetch_or(CLOSED, AcqRel);
        drop(t);
        let _done = Released(self);
        Some(release(&Drained(())))
    }

    /// Stop new accesses without waiting or taking the mutex (a fork child,
    /// where in-flight counts and the mutex belong to the parent's threads,
    /// none of which exists in the child). The proof is given to the first
    /// call only; the caller must not be inside an access of this gate.
    pub(crate) fn abandon(&self) -> Option<Drained> {
        (self.state.fetch_or(CLOSING, AcqRel) & CLOSING == 0).then_some(Drained(()))
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
    pub(crate) fn finish(mut self) -> Result<(), crate::error::Error> {
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
