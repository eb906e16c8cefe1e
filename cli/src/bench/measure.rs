//! Timing: warm-up, time-boxed batches, the median of the batches; the
//! parallel runner (one thread per core on one secret, like Go's
//! `b.RunParallel`: ns/op is wall time over all threads' operations); and
//! the floor samples.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

/// How long to warm up and how to batch.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: &'static str,
    /// Warm-up time of a row (also calibrates the batch size).
    pub warmup: Duration,
    /// Target length of one timed batch.
    pub batch: Duration,
    /// Timed batches per row; the row reports their median.
    pub batches: usize,
    /// Batches per floor sample, and the length of each.
    pub floor_batches: usize,
    pub floor_batch: Duration,
}

impl Plan {
    /// Under 30 seconds for the whole run on 2 cores.
    pub fn quick() -> Plan {
        Plan {
            name: "quick",
            warmup: Duration::from_millis(40),
            batch: Duration::from_millis(30),
            batches: 5,
            floor_batches: 3,
            floor_batch: Duration::from_millis(10),
        }
    }

    /// Stable figures: a few minutes.
    pub fn full() -> Plan {
        Plan {
            name: "full",
            warmup: Duration::from_millis(300),
            batch: Duration::from_millis(120),
            batches: 15,
            floor_batches: 7,
            floor_batch: Duration::from_millis(40),
        }
    }
}

/// The median of `v` (sorted in place); `NaN` if empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Warm up and calibrate with `run(iters) -> elapsed`, then time
/// `plan.batches` batches; the median ns per op. One call of `run(n)` does
/// `n * ops_per_iter` operations.
fn batches(
    plan: &Plan,
    ops_per_iter: u64,
    mut run: impl FnMut(u64) -> Result<Duration, String>,
) -> Result<f64, String> {
    let mut n = 1u64;
    let mut spent = Duration::ZERO;
    let mut per_iter_ns;
    loop {
        let d = run(n)?;
        spent += d;
        per_iter_ns = d.as_nanos() as f64 / n as f64;
        if spent >= plan.warmup {
            break;
        }
        if d < plan.warmup / 4 {
            n = n.saturating_mul(2);
        }
    }
    let iters = ((plan.batch.as_nanos() as f64 / per_iter_ns.max(1.0)) as u64).max(1);
    let mut samples = Vec::with_capacity(plan.batches);
    for _ in 0..plan.batches {
        let d = run(iters)?;
        samples.push(d.as_nanos() as f64 / (iters * ops_per_iter) as f64);
    }
    Ok(median(&mut samples))
}

/// Median ns per op of `op` on `threads` threads at once; `op(n)` does `n`
/// operations on the calling thread. One thread runs on the calling thread.
pub fn ns_per_op(
    threads: usize,
    plan: &Plan,
    op: &(dyn Fn(u64) -> Result<(), String> + Sync),
) -> Result<f64, String> {
    if threads <= 1 {
        return batches(plan, 1, |n| {
            let t = std::time::Instant::now();
            op(n)?;
            Ok(t.elapsed())
        });
    }
    parallel(threads, plan, op)
}

/// The parallel form: `threads` workers that live for the whole row, and
/// batches started and ended by a barrier. The calling thread only keeps
/// time (it sleeps in the barrier while the workers run).
fn parallel(
    threads: usize,
    plan: &Plan,
    op: &(dyn Fn(u64) -> Result<(), String> + Sync),
) -> Result<f64, String> {
    // Workers plus the timing thread.
    let barrier = Barrier::new(threads + 1);
    // Operations per worker in the next batch; 0 tells workers to stop.
    let iters = AtomicU64::new(0);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                barrier.wait();
                let n = iters.load(Ordering::Acquire);
                if n == 0 {
                    break;
                }
                if let Err(e) = op(n) {
                    failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                }
                barrier.wait();
            });
        }
        let result = batches(plan, threads as u64, |n| {
            iters.store(n, Ordering::Release);
            let t = std::time::Instant::now();
            barrier.wait();
            barrier.wait();
            let d = t.elapsed();
            match failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(e) => Err(e),
                None => Ok(d),
            }
        });
        // Release the workers whatever happened.
        iters.store(0, Ordering::Release);
        barrier.wait();
        result
    })
}

/// One floor sample: the median ns per iteration of `plan.floor_batches`
/// batches of [`securememory::system::mprotect_floor`], on this thread.
pub fn floor_sample(plan: &Plan) -> f64 {
    let probe = 256;
    let per_iter = securememory::system::mprotect_floor(probe).as_nanos() as f64 / probe as f64;
    let iters = ((plan.floor_batch.as_nanos() as f64 / per_iter.max(1.0)) as u64).max(16);
    let mut samples: Vec<f64> = (0..plan.floor_batches)
        .map(|_| securememory::system::mprotect_floor(iters).as_nanos() as f64 / iters as f64)
        .collect();
    median(&mut samples)
}
