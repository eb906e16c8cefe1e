//! Criterion benches with the rows of `securememory bench`: one group per
//! implementation, each row as `<impl>/<row>/threads=1` and
//! `<impl>/<row>/threads=<cores>` (one thread per core on one shared
//! secret; like Go's `b.RunParallel`, the time is wall time over all
//! threads' operations). The floor is `floor/mprotect_read32_none`.
//!
//! `cargo bench -p securememory-cli --bench secrets` (add a filter such as
//! `protected/with_bytes` to run fewer). `securememory bench` prints the
//! same rows as a table with ratios to the floor.
//!
//! The implementations, the operations, the runner and the at-rest check
//! are the CLI's own files, included here, so the two cannot drift apart.

#[path = "../src/bench/check.rs"]
mod check;
#[path = "../src/bench/client.rs"]
mod client;
#[path = "../src/bench/impls.rs"]
mod impls;
#[path = "../src/bench/ops.rs"]
mod ops;
#[path = "../src/bench/runner.rs"]
mod runner;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use securememory::SecretFactory;

use ops::{Op, KEY};

fn benches(c: &mut Criterion) {
    let mut floor = c.benchmark_group("floor");
    floor.bench_function("mprotect_read32_none", |b| {
        b.iter_custom(securememory::system::mprotect_floor)
    });
    floor.finish();

    // The real client's baseline: the cipher keyed from a plain array.
    let mut plain = c.benchmark_group(client::PLAIN);
    plain.bench_function(BenchmarkId::new(Op::Chacha1k.name(), "threads=1"), |b| {
        b.iter_custom(|n| {
            let t = std::time::Instant::now();
            client::from_plain(n);
            t.elapsed()
        })
    });
    plain.finish();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut notes = Vec::new();
    let impls = impls::available(&mut notes).expect("an implementation's factory");
    for n in &notes {
        eprintln!("{n}");
    }
    for imp in &impls {
        let secret = imp.factory.new(&mut KEY.clone()).expect("the row's secret");
        let mut g = c.benchmark_group(imp.name);
        g.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for op in Op::ALL {
            let run = |n| op.run(&imp.factory, &secret, n);
            g.bench_function(BenchmarkId::new(op.name(), "threads=1"), |b| {
                b.iter_custom(|n| runner::alone(&run, n).expect("the row's operation"))
            });
            if cores > 1 {
                let id = BenchmarkId::new(op.name(), format!("threads={cores}"));
                g.bench_function(id, |b| {
                    runner::with_team(cores, &run, |team| {
                        b.iter_custom(|n| team.run(n).expect("the row's operation"))
                    })
                });
            }
            if let Err(e) = check::row(op, imp, &secret) {
                panic!("{e}");
            }
        }
        g.finish();
        secret.close().expect("closing the row's secret");
    }
}

criterion_group!(secrets, benches);
criterion_main!(secrets);
