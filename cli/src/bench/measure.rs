//! Timing for `securememory bench`: warm-up, time-boxed batches (each run
//! by [`runner`], on one thread or a team of one per core),
//! the median of the batches; and the floor samples.

use std::time::Duration;

use super::ops::OpError;
use super::runner::{self, OpFn};

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

/// Figures of which there is at least one (a row's batches, the floor's
/// samples), so a median, a minimum and a maximum always exist.
#[derive(Clone, Debug)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn first(x: f64) -> Samples {
        Samples(vec![x])
    }

    pub fn push(&mut self, x: f64) {
        self.0.push(x);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    }

    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Warm up and calibrate with `run(n) -> elapsed` (`n` operations), then
/// time `plan.batches` batches (at least one); the median ns per op.
fn batches(
    plan: &Plan,
    mut run: impl FnMut(u64) -> Result<Duration, OpError>,
) -> Result<f64, OpError> {
    let mut n = 1u64;
    let mut spent = Duration::ZERO;
    let mut per_op_ns;
    loop {
        let d = run(n)?;
        spent += d;
        per_op_ns = d.as_nanos() as f64 / n as f64;
        if spent >= plan.warmup {
            break;
        }
        if d < plan.warmup / 4 {
            n = n.saturating_mul(2);
        }
    }
    let iters = ((plan.batch.as_nanos() as f64 / per_op_ns.max(1.0)) as u64).max(1);
    let mut timed = || -> Result<f64, OpError> { Ok(run(iters)?.as_nanos() as f64 / iters as f64) };
    let mut samples = Samples::first(timed()?);
    for _ in 1..plan.batches {
        samples.push(timed()?);
    }
    Ok(samples.median())
}

/// Median ns per op of `op` on `threads` threads at once; `op(n)` does `n`
/// operations on the calling thread. One thread runs on the calling thread.
pub fn ns_per_op(threads: usize, plan: &Plan, op: &OpFn<'_>) -> Result<f64, OpError> {
    if threads <= 1 {
        return batches(plan, |n| runner::alone(op, n));
    }
    runner::with_team(threads, op, |team| batches(plan, |n| team.run(n)))
}

/// One floor sample: the median ns per iteration of `plan.floor_batches`
/// batches (at least one) of [`securememory::system::mprotect_floor`], on
/// this thread.
pub fn floor_sample(plan: &Plan) -> f64 {
    let probe = 256;
    let per_iter = securememory::system::mprotect_floor(probe).as_nanos() as f64 / probe as f64;
    let iters = ((plan.floor_batch.as_nanos() as f64 / per_iter.max(1.0)) as u64).max(16);
    let sample = || securememory::system::mprotect_floor(iters).as_nanos() as f64 / iters as f64;
    let mut samples = Samples::first(sample());
    for _ in 1..plan.floor_batches {
        samples.push(sample());
    }
    samples.median()
}
