//! Loom model of the access / close state machine ([`crate::access::Gate`]).
//!
//! Run (release mode, bound 2: about 40 s of CPU on 2 cores):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p securememory --lib --release access_loom
//! ```
//!
//! Under `--cfg loom`, `crate::sync` gives the gate loom's atomics, mutex and
//! condvar, so the code model-checked is the code shipped. Each model runs
//! under `loom::model::Builder` with a preemption bound of 3 (override with
//! `LOOM_MAX_PREEMPTIONS`): loom explores every interleaving of the threads'
//! atomic operations, lock acquisitions and condvar wake-ups (spurious ones
//! included) that needs at most that many preemptions, and every value each
//! atomic load may read under the C++11 memory model with the orderings the
//! gate is written with. (The mock's own bookkeeping uses `SeqCst`, which loom
//! treats as `AcqRel`; no check below relies on more than happens-before.)
//! Both bugs this model found are caught at bound 2, which CI uses.
//!
//! The memory behind the gate is a mock [`Window`]: `open` and `close` flip a
//! loom `AtomicBool` `readable` and count themselves; the secret's bytes are a
//! loom `UnsafeCell` that readers read and `release` writes (the wipe), so loom
//! reports any read of the bytes that is not ordered before the wipe.
//!
//! Proven, in every interleaving explored:
//! - (a) while a window reader is inside (between a successful `enter_window`
//!   and its `leave`), the window is open: the mock's `close` asserts that no
//!   window reader is inside, and each window reader asserts `readable` once
//!   inside. `open` is only called on a closed window and `close` only on an
//!   open one (never twice in a row), and neither after `release`.
//! - (b) once every thread has finished, the window is closed (`readable` is
//!   false) and there were as many closes as opens.
//! - (c) `close` waits: when it returns no reader is inside, the window is
//!   closed, `release` ran exactly once (also with two concurrent closers,
//!   both of which return only after it ran), every read of the bytes happens
//!   before the wipe, and any later `enter` or `enter_window` returns
//!   `Err(Closed)`. A reader never observes that a `close` returned while it
//!   is inside.
//! - (d) the first-reader and last-reader transitions: two concurrent window
//!   readers (each order of arrival and departure, including one arriving
//!   while the other is hiding the window); a copy-path reader (`enter`)
//!   concurrent with two window readers; a reader (window or copy, one or
//!   two) racing `close`; a copy-path access that falls back to the window
//!   (enter, leave, enter_window: what `with_bytes` does for a secret larger
//!   than the scratch buffer) racing a window reader.
//! - (e) a failed window close (the memory cannot be hidden) closes the gate
//!   for good, with a concurrent reader, and `close` still releases once.
//! - (f) a window close that panics (as one reporting to a panicking metrics
//!   recorder did) closes the gate for good and still wakes a waiting
//!   `close`, which releases once; a release that panics runs once, and a
//!   concurrent second `close` returns (it does not wait forever) without
//!   running it again.
//! - (g) accesses that need no window (copy path, keyed pool) publish the
//!   gate in a hazard slot of their thread (`hazard.rs`), and `close` waits
//!   for every one of them: one or two such readers racing `close`, nested
//!   accesses of one gate on one thread (one more than the thread has slots,
//!   the last counted in the state word instead), an access whose closure
//!   panics (its slot cleared while unwinding, the closer woken), and a
//!   thread's record given back at its exit and claimed by the next thread
//!   while a `close` runs. An access that finds CLOSING after publishing
//!   backs out and wakes the closer.
//! - (h) a window entrant that finds the window shut announces itself; a
//!   last reader that sees the announcement leaves the window open and the
//!   entrant joins it, or, if `close` began meanwhile, hides it: covered by
//!   the two-window-reader models above, with and without a `close` (a
//!   missed hide fails (b) or (c); a missed wake-up is a deadlock loom
//!   reports: without the entrant's hide when it finds the gate closing,
//!   `window_readers_racing_close` deadlocks with the window left open).
//!
//! Bugs this model found in the first version of `access.rs` (both fixed
//! there; both also reproduced by `tests/concurrency.rs`):
//! 1. Window reader joining a window being hidden. W1, the last window
//!    reader, leaves (readers 0, OPEN still set), takes the mutex and starts
//!    hiding the window; a copy-path reader enters (readers 1); W2 sees OPEN
//!    with readers > 0 and takes the lock-free fast path into the window that
//!    is being hidden (a SIGSEGV for a 12 KiB secret on the copy path, whose
//!    every `with_bytes` first counts in on the copy path). Fix: the last
//!    reader clears OPEN by compare-and-swap (only while readers are 0)
//!    before hiding, so W2's fast path fails and it waits on the mutex.
//! 2. Window hidden after release. The last reader leaves (readers 0, OPEN
//!    still set); `close` takes the mutex first, sees no reader and releases
//!    (wipes and unmaps); then the reader takes the mutex and hides the
//!    window: `mprotect(PROT_NONE)` on unmapped memory (`ProtectFailed` from
//!    an access that succeeded, or another mapping's protection changed if
//!    the address was reused). Fix: `close` also waits while OPEN is set.
//!
//! Not covered: the nesting bookkeeping of `Secret` (a thread-local stack,
//! single-threaded by construction), the syscalls behind a real window, and
//! interleavings that need more preemptions than the bound.

use std::sync::atomic::Ordering::SeqCst;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::sync::Arc;
use loom::thread;

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::access::{Gate, Turn, Window};
use crate::Error;

/// Run `f` under loom with a bounded number of preemptions. `f` runs on a
/// spawned thread, not loom's main one: a thread's hazard record goes back
/// to the registry when its thread-locals drop, and loom drops the main
/// thread's only after the execution's statics (the registry) are gone.
fn check(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    let f = std::sync::Arc::new(f);
    b.check(move || {
        let f = f.clone();
        thread::spawn(move || {
            f();
            crate::hazard::thread_exit();
        })
        .join()
        .unwrap();
    });
}

/// The memory behind the gate, as the model sees it.
#[derive(Default)]
struct Mem {
    readable: AtomicBool,
    opens: AtomicUsize,
    closes: AtomicUsize,
    /// Make the next window close fail (the memory cannot be hidden).
    fail_close: AtomicBool,
    /// Make the next window close panic before hiding the memory.
    panic_close: AtomicBool,
    /// Make the next release panic once it has wiped the memory.
    panic_release: AtomicBool,
    /// A window close failed (the memory stayed readable).
    close_failed: AtomicBool,
    /// Window readers inside (after `enter_window`, before `leave`).
    in_window: AtomicUsize,
    /// All readers inside.
    inside: AtomicUsize,
    released: AtomicBool,
    releases: AtomicUsize,
    close_returned: AtomicBool,
    /// The secret's bytes: read by readers, written by the wipe in `release`.
    bytes: UnsafeCell<u8>,
}

impl Window for Mem {
    fn open(&self, _turn: &Turn) -> Result<(), Error> {
        assert!(!self.released.load(SeqCst), "window opened after release");
        assert!(
            !self.readable.swap(true, SeqCst),
            "window opened while open"
        );
        self.opens.fetch_add(1, SeqCst);
        Ok(())
    }

    fn close(&self, _turn: &Turn) -> Result<(), Error> {
        assert!(
            !self.released.load(SeqCst),
            "window closed after release (mprotect on freed memory)"
        );
        assert_eq!(
            self.in_window.load(SeqCst),
            0,
            "window closed with a window reader inside"
        );
        assert!(self.readable.load(SeqCst), "window closed while closed");
        if self.panic_close.swap(false, SeqCst) {
            // Still readable: the gate must close for good and wake a closer.
            self.close_failed.store(true, SeqCst);
            panic!("{INJECTED}");
        }
        if self.fail_close.swap(false, SeqCst) {
            // Like `Region::hide` failing: still readable, the gate must close.
            self.close_failed.store(true, SeqCst);
            return Err(Error::Unsupported("mock: cannot hide".into()));
        }
        self.readable.store(false, SeqCst);
        self.closes.fetch_add(1, SeqCst);
        Ok(())
    }
}

struct Model {
    gate: Gate,
    mem: Mem,
}

impl Model {
    fn new() -> Arc<Model> {
        Arc::new(Model {
            gate: Gate::new(),
            mem: Mem::default(),
        })
    }

    /// What a reader does while inside.
    fn read(&self) {
        self.mem.inside.fetch_add(1, SeqCst);
        assert!(
            !self.mem.close_returned.load(SeqCst),
            "reader inside after close returned"
        );
        assert!(
            !self.mem.released.load(SeqCst),
            "reader inside after release"
        );
        self.mem.bytes.with(|_| ());
        self.mem.inside.fetch_sub(1, SeqCst);
    }

    /// One access through the window. Returns whether it got in.
    fn window_access(&self) -> bool {
        let entered = match self.gate.enter_window(&self.mem) {
            Ok(e) => e,
            Err(Error::Closed) => return false,
            Err(e) => panic!("enter_window: {e}"),
        };
        assert!(entered.through_window());
        self.mem.in_window.fetch_add(1, SeqCst);
        assert!(
            self.mem.readable.load(SeqCst),
            "window reader inside a closed window"
        );
        self.read();
        self.mem.in_window.fetch_sub(1, SeqCst);
        let _ = entered.finish();
        true
    }

    /// One access through the copy path (no window). Returns whether it got in.
    fn copy_access(&self) -> bool {
        let entered = match self.gate.enter(&self.mem) {
            Ok(e) => e,
            Err(Error::Closed) => return false,
            Err(e) => panic!("enter: {e}"),
        };
        assert!(!entered.through_window());
        self.read();
        let _ = entered.finish();
        true
    }

    /// `depth` copy accesses of this gate nested on one thread (what a
    /// closure that reads the same secret again does). Past the thread's
    /// hazard slots they count themselves in the state word.
    fn nested_copy_access(&self, depth: usize) -> bool {
        let entered = match self.gate.enter(&self.mem) {
            Ok(e) => e,
            Err(Error::Closed) => return false,
            Err(e) => panic!("enter: {e}"),
        };
        self.read();
        if depth > 1 {
            self.nested_copy_access(depth - 1);
        }
        let _ = entered.finish();
        true
    }

    /// A copy access whose closure panics: the access ends by unwinding.
    fn panicking_copy_access(&self) {
        injected(|| {
            let Ok(_entered) = self.gate.enter(&self.mem) else {
                return;
            };
            self.read();
            panic!("{INJECTED}");
        });
    }

    /// `Secret::with_bytes` on the copy path when the secret does not fit the
    /// scratch buffer: count in, find no room, leave, then use the window.
    fn copy_fallback_access(&self) -> bool {
        match self.gate.enter(&self.mem) {
            Ok(e) => drop(e),
            Err(Error::Closed) => return false,
            Err(e) => panic!("enter: {e}"),
        }
        self.window_access()
    }

    /// A purged secret's access on its way out (`Secret`'s `Settle`): run
    /// the release if no access is in flight, else leave it to the last.
    fn settle(&self) -> Option<()> {
        self.gate.close_if_idle(|_drained| self.release())
    }

    /// The release's checks: no reader inside, the window closed, once.
    fn release(&self) {
        assert_eq!(
            self.mem.inside.load(SeqCst),
            0,
            "release with a reader inside"
        );
        if !self.mem.close_failed.load(SeqCst) {
            assert!(
                !self.mem.readable.load(SeqCst),
                "release with the window open"
            );
        }
        self.mem.bytes.with_mut(|_| ());
        assert!(!self.mem.released.swap(true, SeqCst), "release ran twice");
        self.mem.releases.fetch_add(1, SeqCst);
    }

    /// Close the gate; check what must hold when `close` returns.
    fn close(&self) -> Option<()> {
        let r = self.gate.close(|_drained| {
            assert_eq!(
                self.mem.inside.load(SeqCst),
                0,
                "release with a reader inside"
            );
            if !self.mem.close_failed.load(SeqCst) {
                assert!(
                    !self.mem.readable.load(SeqCst),
                    "release with the window open"
                );
            }
            self.mem.bytes.with_mut(|_| ());
            assert!(!self.mem.released.swap(true, SeqCst), "release ran twice");
            self.mem.releases.fetch_add(1, SeqCst);
            if self.mem.panic_release.swap(false, SeqCst) {
                panic!("{INJECTED}");
            }
        });
        self.mem.close_returned.store(true, SeqCst);
        assert_eq!(
            self.mem.inside.load(SeqCst),
            0,
            "reader inside when close returned"
        );
        assert!(
            self.mem.released.load(SeqCst),
            "close returned before release ran"
        );
        assert!(self.gate.is_closed());
        assert!(
            matches!(self.gate.enter(&self.mem), Err(Error::Closed)),
            "enter after close"
        );
        assert!(
            matches!(self.gate.enter_window(&self.mem), Err(Error::Closed)),
            "enter_window after close"
        );
        r
    }

    /// Once every thread has finished.
    fn check_at_rest(&self) {
        assert!(!self.mem.readable.load(SeqCst), "window left open at rest");
        assert_eq!(self.mem.opens.load(SeqCst), self.mem.closes.load(SeqCst));
        assert_eq!(self.mem.inside.load(SeqCst), 0);
        assert!(!self.gate.is_open());
    }
}

/// The message of the panics the mock injects (kept out of the test output).
const INJECTED: &str = "mock: injected panic";

/// Run `f`, catching a panic the mock injected (any other panic goes on).
/// Returns whether one was caught.
fn injected(f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => false,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            if msg.as_deref() == Some(INJECTED) {
                true
            } else {
                std::panic::resume_unwind(p)
            }
        }
    }
}

/// Keep the injected panics' messages out of the output (others still print).
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied());
        if msg != Some(INJECTED) {
            default(info);
        }
    }));
}

/// A model thread: runs `f`, then exits (giving back its hazard record).
fn spawn(m: &Arc<Model>, f: fn(&Model)) -> thread::JoinHandle<()> {
    let m = m.clone();
    thread::spawn(move || {
        f(&m);
        crate::hazard::thread_exit();
    })
}

#[test]
fn access_loom_two_window_readers() {
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| {
            assert!(m.window_access());
            assert!(m.window_access());
        });
        assert!(m.window_access());
        a.join().unwrap();
        m.check_at_rest();
        assert!(m.mem.opens.load(SeqCst) >= 1);
    });
}

#[test]
fn access_loom_copy_reader_with_window_readers() {
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| assert!(m.window_access()));
        let b = spawn(&m, |m| assert!(m.copy_access()));
        assert!(m.window_access());
        a.join().unwrap();
        b.join().unwrap();
        m.check_at_rest();
    });
}

#[test]
fn access_loom_copy_fallback_with_window_reader() {
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| assert!(m.copy_fallback_access()));
        assert!(m.window_access());
        a.join().unwrap();
        m.check_at_rest();
    });
}

#[test]
fn access_loom_window_reader_racing_close() {
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| {
            m.window_access();
        });
        assert_eq!(m.close(), Some(()));
        a.join().unwrap();
        m.check_at_rest();
        assert_eq!(m.mem.releases.load(SeqCst), 1);
    });
}

#[test]
fn access_loom_window_readers_racing_close() {
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| {
            m.window_access();
        });
        let b = spawn(&m, |m| {
            m.window_access();
        });
        assert_eq!(m.close(), Some(()));
        a.join().unwrap();
        b.join().unwrap();
        m.check_at_rest();
    });
}

#[test]
fn access_loom_copy_and_window_readers_racing_close() {
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| {
            m.copy_access();
        });
        let b = spawn(&m, |m| {
            m.window_access();
        });
        assert_eq!(m.close(), Some(()));
        a.join().unwrap();
        b.join().unwrap();
        m.check_at_rest();
    });
}

#[test]
fn access_loom_two_closers_and_a_reader() {
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| {
            m.window_access();
        });
        let b = spawn(&m, |m| {
            m.close();
        });
        m.close();
        a.join().unwrap();
        b.join().unwrap();
        m.check_at_rest();
        assert_eq!(m.mem.releases.load(SeqCst), 1, "release exactly once");
    });
}

#[test]
fn access_loom_two_closers_one_release() {
    check(|| {
        let m = Model::new();
        let b = thread::spawn({
            let m = m.clone();
            move || {
                let r = m.close();
                crate::hazard::thread_exit();
                r
            }
        });
        let mine = m.close();
        let theirs = b.join().unwrap();
        assert!(
            mine.is_some() != theirs.is_some(),
            "exactly one close runs release"
        );
        assert_eq!(m.mem.releases.load(SeqCst), 1);
    });
}

#[test]
fn access_loom_failed_window_close_closes_the_gate() {
    check(|| {
        let m = Model::new();
        m.mem.fail_close.store(true, SeqCst);
        let a = spawn(&m, |m| {
            m.window_access();
        });
        m.window_access();
        a.join().unwrap();
        // Whichever reader left last could not hide the window.
        assert!(m.gate.is_closed(), "a failed window close closes the gate");
        assert!(matches!(m.gate.enter_window(&m.mem), Err(Error::Closed)));
        assert_eq!(m.close(), Some(()));
        assert_eq!(m.mem.releases.load(SeqCst), 1);
    });
}

#[test]
fn access_loom_panicking_window_close_closes_the_gate() {
    quiet_injected_panics();
    check(|| {
        let m = Model::new();
        m.mem.panic_close.store(true, SeqCst);
        let a = spawn(&m, |m| {
            injected(|| {
                m.window_access();
            });
        });
        injected(|| {
            m.window_access();
        });
        a.join().unwrap();
        // Whichever reader left last panicked while hiding the window.
        assert!(m.mem.close_failed.load(SeqCst));
        assert!(
            m.gate.is_closed(),
            "a panicking window close closes the gate"
        );
        assert!(!m.gate.is_open());
        assert!(matches!(m.gate.enter_window(&m.mem), Err(Error::Closed)));
        assert_eq!(m.close(), Some(()));
        assert_eq!(m.mem.releases.load(SeqCst), 1);
    });
}

#[test]
fn access_loom_panicking_window_close_racing_close() {
    quiet_injected_panics();
    check(|| {
        let m = Model::new();
        m.mem.panic_close.store(true, SeqCst);
        let a = spawn(&m, |m| {
            injected(|| {
                m.window_access();
            });
        });
        // Must not wait forever for the reader whose window close panicked.
        assert_eq!(m.close(), Some(()));
        a.join().unwrap();
        assert_eq!(m.mem.releases.load(SeqCst), 1);
        assert!(!m.gate.is_open());
    });
}

#[test]
fn access_loom_panicking_release_runs_once() {
    quiet_injected_panics();
    check(|| {
        let m = Model::new();
        m.mem.panic_release.store(true, SeqCst);
        let b = spawn(&m, |m| {
            injected(|| {
                m.close();
            });
        });
        injected(|| {
            m.close();
        });
        b.join().unwrap();
        // One closer ran the release, which panicked; the other returned
        // without running it again (and did not wait forever).
        assert_eq!(m.mem.releases.load(SeqCst), 1, "release exactly once");
        assert!(m.gate.is_closed());
        assert!(m
            .gate
            .close(|_| unreachable!("release ran again"))
            .is_none());
    });
}

/// A purge that could not wait (made on a reader's own thread, or by a
/// signal): each window reader, on its way out, tries `close_if_idle`; the
/// last one out releases, exactly once, with no reader inside.
#[test]
fn access_loom_purged_readers_last_out_releases() {
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| {
            m.window_access();
            m.settle();
        });
        m.window_access();
        m.settle();
        a.join().unwrap();
        m.check_at_rest();
        assert_eq!(m.mem.releases.load(SeqCst), 1, "released exactly once");
    });
}

/// The same racing `purge()`'s close of the gate: one release, which
/// `close` waits for.
#[test]
fn access_loom_purged_reader_racing_close() {
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| {
            m.window_access();
            m.settle();
        });
        m.close();
        a.join().unwrap();
        m.check_at_rest();
        assert_eq!(m.mem.releases.load(SeqCst), 1, "released exactly once");
    });
}

#[test]
fn access_loom_two_copy_readers_racing_close() {
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| {
            m.copy_access();
        });
        let b = spawn(&m, |m| {
            m.copy_access();
        });
        assert_eq!(m.close(), Some(()));
        a.join().unwrap();
        b.join().unwrap();
        m.check_at_rest();
    });
}

#[test]
fn access_loom_nested_copy_accesses_racing_close() {
    check(|| {
        let m = Model::new();
        // One more than the thread's slots: the last counts in the word.
        let a = spawn(&m, |m| {
            m.nested_copy_access(crate::hazard::SLOTS + 1);
        });
        assert_eq!(m.close(), Some(()));
        a.join().unwrap();
        m.check_at_rest();
    });
}

#[test]
fn access_loom_panicking_copy_access_racing_close() {
    quiet_injected_panics();
    check(|| {
        let m = Model::new();
        let a = spawn(&m, |m| m.panicking_copy_access());
        assert_eq!(m.close(), Some(()));
        a.join().unwrap();
        m.check_at_rest();
    });
}

#[test]
fn access_loom_record_reused_racing_close() {
    check(|| {
        let m = Model::new();
        // A's record goes back when it exits; B claims it.
        let a = spawn(&m, |m| assert!(m.copy_access()));
        a.join().unwrap();
        let b = spawn(&m, |m| {
            m.copy_access();
        });
        assert_eq!(m.close(), Some(()));
        b.join().unwrap();
        m.check_at_rest();
    });
}
