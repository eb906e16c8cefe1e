//! The one-release guarantee, in one place: what holds secret memory (a
//! [`Region`](super::region::Region), a pool slot) releases it (wipes it
//! and gives it back) at most once, whoever asks first: its owner's explicit
//! release, or its `Drop`, which also runs while a panic unwinds, so memory
//! taken before a panic is still wiped. A second release would wipe or give
//! back memory already handed to someone else.

use std::sync::atomic::{AtomicBool, Ordering};

/// Marks whether a value's release has run. The owner calls [`run`] from
/// its release and from its `Drop`.
///
/// [`run`]: ReleaseOnce::run
pub(crate) struct ReleaseOnce(AtomicBool);

impl ReleaseOnce {
    /// Not released yet.
    pub(crate) const fn new() -> Self {
        ReleaseOnce(AtomicBool::new(false))
    }

    /// Run `release` if no call did before (from any thread); later calls
    /// return `Ok(())` without running it. The mark is set before `release`
    /// starts, so one that panics is not started again.
    #[inline]
    pub(crate) fn run<E>(&self, release: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        if self.0.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        release()
    }
}

#[cfg(test)]
mod tests {
    use super::ReleaseOnce;
    use std::cell::Cell;

    #[test]
    fn runs_once() {
        let once = ReleaseOnce::new();
        let runs = Cell::new(0);
        let r: Result<(), ()> = once.run(|| {
            runs.set(runs.get() + 1);
            Err(())
        });
        assert_eq!(r, Err(()));
        assert_eq!(
            once.run(|| -> Result<(), ()> { panic!("ran twice") }),
            Ok(())
        );
        assert_eq!(runs.get(), 1);
    }

    /// An owner whose `Drop` releases, as `Region` and `Slot` do.
    struct Owner<'a> {
        once: ReleaseOnce,
        runs: &'a Cell<u32>,
    }

    impl Owner<'_> {
        fn release(&self) -> Result<(), ()> {
            self.once.run(|| {
                self.runs.set(self.runs.get() + 1);
                Ok(())
            })
        }
    }

    impl Drop for Owner<'_> {
        fn drop(&mut self) {
            let _ = self.release();
        }
    }

    #[test]
    fn drop_after_release_does_not_run_again_and_unwinding_releases() {
        let runs = Cell::new(0);
        {
            let owner = Owner {
                once: ReleaseOnce::new(),
                runs: &runs,
            };
            owner.release().unwrap();
        }
        assert_eq!(runs.get(), 1);

        let runs = Cell::new(0);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _owner = Owner {
                once: ReleaseOnce::new(),
                runs: &runs,
            };
            panic!("between taking memory and handing it over");
        }));
        assert!(unwound.is_err());
        assert_eq!(runs.get(), 1);
    }

    #[test]
    fn a_release_that_panicked_is_not_started_again() {
        let once = ReleaseOnce::new();
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = once.run(|| -> Result<(), ()> { panic!("release panicked") });
        }));
        assert!(first.is_err());
        assert_eq!(
            once.run(|| -> Result<(), ()> { panic!("ran twice") }),
            Ok(())
        );
    }
}
