//! Running an operation `n` times and timing it: on the calling thread, or
//! split over a team of threads on one secret, like Go's `b.RunParallel`
//! (the time is wall time over all threads' operations). `securememory
//! bench` times its batches with it and the criterion bench its
//! `iter_custom` calls, so both measure the same thing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use super::ops::OpError;

/// `op(n)` runs `n` operations on the calling thread.
pub type OpFn<'a> = dyn Fn(u64) -> Result<(), OpError> + Sync + 'a;

/// Time `n` operations on the calling thread.
pub fn alone(op: &OpFn<'_>, n: u64) -> Result<Duration, OpError> {
    let t = Instant::now();
    op(n)?;
    Ok(t.elapsed())
}

/// Workers that live as long as the team, each waiting on a barrier for its
/// share of the next batch. The calling thread only keeps time.
pub struct Team<'a> {
    threads: usize,
    op: &'a OpFn<'a>,
    /// Workers plus the timing thread.
    barrier: Barrier,
    /// Operations in the next batch, over all workers.
    total: AtomicU64,
    stop: AtomicBool,
    failed: Mutex<Option<OpError>>,
}

/// Run `body` with a team of `threads` workers running `op`; the workers
/// stop when `body` returns or unwinds.
pub fn with_team<R>(threads: usize, op: &OpFn<'_>, body: impl FnOnce(&Team<'_>) -> R) -> R {
    let team = Team {
        threads,
        op,
        barrier: Barrier::new(threads + 1),
        total: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        failed: Mutex::new(None),
    };
    std::thread::scope(|s| {
        for t in 0..threads {
            let team = &team;
            s.spawn(move || team.work(t));
        }
        // Released on unwind too, or the scope would wait on the workers forever.
        let _stop = Stop(&team);
        body(&team)
    })
}

impl Team<'_> {
    /// Time `total` operations split evenly over the workers, all started
    /// together; the first error any worker met, if one did.
    pub fn run(&self, total: u64) -> Result<Duration, OpError> {
        self.total.store(total, Ordering::Release);
        let t = Instant::now();
        self.barrier.wait();
        self.barrier.wait();
        let d = t.elapsed();
        match self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(d),
        }
    }

    fn work(&self, index: usize) {
        let threads = self.threads as u64;
        loop {
            self.barrier.wait();
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let total = self.total.load(Ordering::Acquire);
            let share = total / threads + u64::from((index as u64) < total % threads);
            if let Err(e) = (self.op)(share) {
                self.failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
            self.barrier.wait();
        }
    }
}

struct Stop<'t, 'a>(&'t Team<'a>);

impl Drop for Stop<'_, '_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
        self.0.barrier.wait();
    }
}
