//! The access / close state machine of one secret. It knows nothing about
//! pages: a [`Window`] is told when the first reader arrives (open) and when
//! the last one leaves (close). Model-checked with loom (`access_loom.rs`).
//!
//! One atomic word holds the window's state, in the manner of std's futex
//! RwLock. Window accesses that overlap an open window take a lock-free
//! fast path (one compare-and-swap); only opening and hiding the window, and
//! closing, take the `transition` mutex. A window entrant that finds the
//! window shut (being opened or hidden) announces itself in the word
//! (`WAITER`) before it waits for the mutex: a last reader that sees it
//! leaves the window open for it to join, and an opener's waiters all join
//! the window it opened, so a window is flipped once per burst of
//! overlapping accesses, not once per access. It is open only while an
//! access is inside or announced: no timed linger.
//!
//! Accesses that need no window (the copy path, a keyed pool slot) do not
//! touch the word: each publishes the gate's id in a slot of its own thread
//! (`hazard.rs`), and `close` scans the slots. Their cost does not grow with
//! the number of cores reading one secret.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crate::hazard::{self, Held};

mod entered;
use crate::sync::{fence, AtomicUsize, Condvar, Mutex};
pub(crate) use entered::Entered;
use entered::How;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

/// Set once `close` has begun: no new access may start.
const CLOSING: usize = 1 << (usize::BITS - 1);
/// Set while the window is open (pages readable) and not being hidden.
/// Changed only under the `transition` mutex: set once the window is open,
/// cleared (by compare-and-swap, only with no reader inside and, unless
/// closing, none announced) before it is hidden. Invariant: a window reader
/// inside implies OPEN.
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
/// One window entrant announced, between its failed fast path and its turn
/// on the mutex (where it withdraws the announcement and joins, opens, or
/// finds the gate closing).
const WAITER: usize = 1 << (usize::BITS / 2);
/// The number of window entrants announced.
const WAITERS: usize = (RELEASE_WAITER - 1) & !(WAITER - 1);
/// The number of accesses in flight counted in the word: window readers,
/// and copy-path accesses that found no hazard slot.
const READERS: usize = WAITER - 1;

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
    /// What this gate's accesses publish in their hazard slots: unique in
    /// the process and its fork children (see `hazard.rs`).
    id: u64,
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
            id: hazard::new_id(),
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

    /// Start an access that needs no window (the copy path): only makes
    /// `close` wait for it. It publishes the gate's id in a slot of the
    /// calling thread and reads CLOSING (a line only `close` writes); with
    /// no slot to be had it counts itself in the state word.
    #[inline]
    pub(crate) fn enter<'a, W: Window>(
        &'a self,
        w: &'a W,
    ) -> Result<Entered<'a, W>, crate::error::Error> {
        if let Some(held) = hazard::publish(self.id) {
            // After the publish's SeqCst fence: see `hazard.rs`.
            if self.state.load(Relaxed) & CLOSING != 0 {
                self.unpublish(held);
                return Err(crate::error::Error::Closed);
            }
            return Ok(Entered::new(self, w, How::Slot(held)));
        }
        let mut s = self.state.load(Relaxed);
        loop {
            if s & CLOSING != 0 {
                return Err(crate::error::Error::Closed);
            }
            match self.state.compare_exchange_weak(s, s + 1, Acquire, Relaxed) {
                Ok(_) => return Ok(Entered::new(self, w, How::Counted)),
                Err(now) => s = now,
            }
        }
    }

    /// End a slot access: clear the slot, then (after its SeqCst fence) wake
    /// a `close` that may have seen it. Notified under the mutex, so a closer
    /// between its scan and its wait cannot miss it.
    #[inline]
    fn unpublish(&self, held: Held) {
        held.clear();
        if self.state.load(Relaxed) & CLOSING != 0 {
            let _t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
            self.drained.notify_all();
        }
    }

    /// Start an access through the window: join it if open, else open it
    /// (or join the one another entrant opens meanwhile).
    #[inline]
    pub(crate) fn enter_window<'a, W: Window>(
        &'a self,
        w: &'a W,
    ) -> Result<Entered<'a, W>, crate::error::Error> {
        let mut s = self.state.load(Relaxed);
        // Fast path: the window is open and not being hidden (hiding clears
        // OPEN first, under the mutex, only while no reader is inside).
        while s & (CLOSING | OPEN) == OPEN {
            match self.state.compare_exchange_weak(s, s + 1, Acquire, Relaxed) {
                Ok(_) => return Ok(Entered::new(self, w, How::Window)),
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
        // Announce: a last reader leaving from now on keeps the window open
        // for us, and an opener's window is ours to join.
        let mut s = self.state.fetch_add(WAITER, Relaxed) + WAITER;
        while s & (CLOSING | OPEN) == OPEN {
            let joined = s.wrapping_add(1).wrapping_sub(WAITER);
            match self
                .state
                .compare_exchange_weak(s, joined, Acquire, Relaxed)
            {
                Ok(_) => return Ok(Entered::new(self, w, How::Window)),
                Err(now) => s = now,
            }
        }
        let t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        // Withdraw the announcement under the mutex, where every decision
        // to hide is taken: from here we join, open, or give up.
        let s = self.state.fetch_sub(WAITER, Acquire) - WAITER;
        if s & CLOSING != 0 {
            // A last reader may have left the window open for us: hide it
            // (no one else needs it once closing), then wake the closer.
            let (t, hidden) = self.hide_if_idle(t, w);
            self.drained.notify_all();
            drop(t);
            if let Some(r) = &hidden {
                w.changed(r);
            }
            return Err(crate::error::Error::Closed);
        }
        if s & OPEN != 0 {
            self.state.fetch_add(1, AcqRel);
            return Ok(Entered::new(self, w, How::Window));
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
            Entered::new(self, w, How::Window)
        });
        drop(t);
        w.changed(&opened);
        opened?;
        Ok(entered.expect("opened"))
    }

    /// End an access counted in the state word (a window access, or a copy
    /// access without a slot): hide the window if this was the last reader
    /// and no entrant is announced, and wake a waiting `close`. An error
    /// means the memory could not be hidden again; the gate is then closed
    /// for good.
    #[inline]
    fn leave(&self, w: &impl Window) -> Result<(), crate::error::Error> {
        let prev = self.state.fetch_sub(1, Release);
        // With an entrant announced (and not closing), the window stays
        // open: that entrant withdraws its announcement under the mutex
        // after this decrement and joins (or, closing by then, hides it).
        if prev & READERS == 1 && (prev & CLOSING != 0 || (prev & OPEN != 0 && prev & WAITERS == 0))
        {
            return self.leave_window_slow(w);
        }
        Ok(())
    }

    #[cold]
    fn leave_window_slow(&self, w: &impl Window) -> Result<(), crate::error::Error> {
        let t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        let (t, result) = self.hide_if_idle(t, w);
        // Notifying under the mutex orders this wake-up after the closer's
        // check of the reader count, so the closer cannot miss it.
        if self.state.load(Acquire) & CLOSING != 0 {
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

    /// Under the mutex `t`: hide the window if it is open with no reader
    /// inside and none announced (announced ones do not count once
    /// closing: they will give up). OPEN is cleared by compare-and-swap
    /// before the pages are hidden, so a fast-path entrant cannot join a
    /// window being hidden, and one that joined first keeps it open.
    /// Returns what the hide returned, if one was made; a failed hide
    /// closes the gate for good (readable and cannot be hidden: no one
    /// may enter again) and wakes a waiting `close`.
    fn hide_if_idle<G>(
        &self,
        t: G,
        w: &impl Window,
    ) -> (G, Option<Result<(), crate::error::Error>>) {
        let mut s = self.state.load(Acquire);
        while s & OPEN != 0 && s & READERS == 0 && (s & WAITERS == 0 || s & CLOSING != 0) {
            match self.state.compare_exchange(s, s & !OPEN, AcqRel, Acquire) {
                Ok(_) => {
                    let r = match catch_unwind(AssertUnwindSafe(|| w.close(&Turn(())))) {
                        Ok(r) => r,
                        Err(panic) => self.change_unwound(t, panic),
                    };
                    if r.is_err() {
                        self.state.fetch_or(CLOSING, AcqRel);
                        self.drained.notify_all();
                    }
                    return (t, Some(r));
                }
                Err(now) => s = now,
            }
        }
        (t, None)
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
        // Before the scan of the hazard slots (see `hazard.rs`).
        fence(SeqCst);
        let mut t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        #[cfg(all(feature = "test-hooks", not(loom)))]
        crate::lock_point::at(crate::lock_point::LockPoint::GateClose);
        // Also wait while OPEN: the last reader has left the count but not
        // yet hidden the window (it, or the entrant it left it open for,
        // does so under the mutex, then notifies). Slot accesses notify
        // under the mutex after clearing their slot.
        while self.state.load(Acquire) & (READERS | OPEN) != 0 || hazard::held(self.id) {
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

    /// [`close`](Self::close) for a purged secret at the end of one of its
    /// accesses: stop new accesses and run `release` now if no access is in
    /// flight and no release was claimed; otherwise return `None` at once
    /// (never waits: the last access to leave calls this again and runs it).
    pub(crate) fn close_if_idle<R>(&self, release: impl FnOnce(&Drained) -> R) -> Option<R> {
        self.state.fetch_or(CLOSING, AcqRel);
        // Before the scan of the hazard slots, as in `close`: an access
        // that left its slot before this sees CLOSING and settles itself.
        fence(SeqCst);
        let t = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        if self.state.load(Acquire) & (READERS | OPEN | CLOSED) != 0 || hazard::held(self.id) {
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
