//! A value computed once per process that a fork child can always finish.
//!
//! `std::sync::OnceLock` waits for the thread that is computing the value.
//! A fork taken while another thread computes it copies that state into a
//! child where no thread will ever finish: the child's first call would wait
//! forever. Here the state names the pid of the computing process; a caller
//! that sees another pid is in such a child and computes the value itself.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

const EMPTY: u64 = 0;
const READY: u64 = u64::MAX;

/// A value set once (see the module docs).
pub(crate) struct ForkSafeOnce<T> {
    /// `EMPTY`, `READY`, or the pid of the process computing it.
    state: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written by one thread (the one that moved `state` to
// its pid) before `state` becomes `READY` (release), and only read after
// `READY` is seen (acquire); `T: Send + Sync` lets it be shared that way.
unsafe impl<T: Send + Sync> Sync for ForkSafeOnce<T> {}

impl<T> ForkSafeOnce<T> {
    pub(crate) const fn new() -> Self {
        ForkSafeOnce {
            state: AtomicU64::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The value, if computed.
    pub(crate) fn get(&self) -> Option<&T> {
        // SAFETY: READY was just seen.
        (self.state.load(Ordering::Acquire) == READY).then(|| unsafe { self.ready_value() })
    }

    /// # Safety
    /// READY was seen (with `Acquire`): the value is written and never
    /// written again.
    unsafe fn ready_value(&self) -> &T {
        // SAFETY: after READY no one writes the cell again, so a shared
        // reference to it is sound for as long as `self` lives.
        let slot = unsafe { &*self.value.get() };
        // SAFETY: READY is stored only after the value was written.
        unsafe { slot.assume_init_ref() }
    }

    /// The value, computing it with `init` if no one has finished yet.
    pub(crate) fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        if self.state.load(Ordering::Acquire) != READY {
            self.init_slow(init);
        }
        // SAFETY: READY was seen (here or in `init_slow`): the value is
        // written and never written again.
        unsafe { self.ready_value() }
    }

    #[cold]
    fn init_slow(&self, init: impl FnOnce() -> T) {
        // The pid from std (getpid(2), not cached by glibc since 2.25), not
        // from `sys`: `sys` keeps its own once-computed values here, so
        // this file imports nothing of `mem` and stays a leaf.
        let me = u64::from(std::process::id());
        loop {
            let seen = self.state.load(Ordering::Acquire);
            if seen == READY {
                return;
            }
            if seen == me {
                // Another thread of this process is computing it.
                std::thread::yield_now();
                continue;
            }
            // Empty, or copied mid-computation from a fork parent.
            if self
                .state
                .compare_exchange(seen, me, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Back to empty if `init` panics, so others do not wait forever.
                struct Reset<'a>(&'a AtomicU64);
                impl Drop for Reset<'_> {
                    fn drop(&mut self) {
                        self.0.store(EMPTY, Ordering::Release);
                    }
                }
                let reset = Reset(&self.state);
                let v = init();
                std::mem::forget(reset);
                // SAFETY: this thread alone holds the state (its pid); no
                // reader looks before READY. A value copied half-made from a
                // fork parent is plain bytes (never dropped): overwritten.
                unsafe { (*self.value.get()).write(v) };
                self.state.store(READY, Ordering::Release);
                return;
            }
        }
    }
}
