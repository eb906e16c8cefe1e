//! Criterion benches with the row names of `securememory bench`: one group
//! per implementation, each row as `<impl>/<row>/threads=1` and, through
//! `iter_custom`, `<impl>/<row>/threads=<cores>` (one thread per core on one
//! shared secret; like Go's `b.RunParallel`, the time is wall time over all
//! threads' operations). The floor is `floor/mprotect_read32_none`.
//!
//! `cargo bench -p securememory --bench secrets` (add a filter such as
//! `protected/with_bytes` to run fewer). `securememory bench` prints the same
//! rows as a table with ratios to the floor.

use std::hint::black_box;
use std::io::Read;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use securememory::{
    Backend, Error, Layout, Options, PoolProtection, ProtectedFactory, Secret, SecretFactory,
};

const KEY: [u8; 32] = *b"0123456789abcdef0123456789ABCDEF";

type Op = fn(&ProtectedFactory, &Secret);

fn with_bytes(_: &ProtectedFactory, s: &Secret) {
    s.with_bytes(|b| black_box(<[u8; 32]>::try_from(b).unwrap()))
        .unwrap();
}
fn with_bytes_func(_: &ProtectedFactory, s: &Secret) {
    s.with_bytes_func(|b| Ok::<_, Error>(black_box(<[u8; 32]>::try_from(b).unwrap())))
        .unwrap();
}
fn reader_read_all(_: &ProtectedFactory, s: &Secret) {
    thread_local!(static OUT: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(64)));
    OUT.with_borrow_mut(|out| {
        out.clear();
        s.reader().read_to_end(out).unwrap();
        black_box(out);
    });
}
fn reader_read_full(_: &ProtectedFactory, s: &Secret) {
    let mut out = [0u8; 32];
    s.reader().read_exact(&mut out).unwrap();
    black_box(out);
}
/// Go's `BenchmarkProtectedMemoryReader_Read`: a buffer the secret's length,
/// `Read` until EOF (one read with the bytes, one at EOF).
fn reader_read(_: &ProtectedFactory, s: &Secret) {
    let mut out = [0u8; 32];
    let mut r = s.reader();
    while r.read(&mut out).unwrap() > 0 {
        black_box(&out);
    }
}
/// The same with 4-byte reads: eight accesses (kernel copies) per op.
fn reader_read_4b(_: &ProtectedFactory, s: &Secret) {
    let mut out = [0u8; 4];
    let mut r = s.reader();
    while r.read(&mut out).unwrap() > 0 {
        black_box(&out);
    }
}
fn new_close(f: &ProtectedFactory, _: &Secret) {
    let mut bytes = KEY;
    f.new(black_box(&mut bytes)).unwrap().close().unwrap();
}
fn create_random_close(f: &ProtectedFactory, _: &Secret) {
    f.create_random(32).unwrap().close().unwrap();
}

const ROWS: [(&str, Op); 8] = [
    ("with_bytes", with_bytes),
    ("with_bytes_func", with_bytes_func),
    ("reader_read_all", reader_read_all),
    ("reader_read_full", reader_read_full),
    ("reader_read", reader_read),
    ("reader_read_4b", reader_read_4b),
    ("new_close", new_close),
    ("create_random_close", create_random_close),
];

fn impls() -> Vec<(&'static str, ProtectedFactory)> {
    let make = |o: Options| ProtectedFactory::new(o).unwrap();
    let mut v = vec![
        ("protected", ProtectedFactory::default()),
        ("guarded", make(Options::default().layout(Layout::Guarded))),
        ("pooled", make(Options::default().layout(Layout::Pooled))),
        (
            "anonymous-window",
            make(Options::default().backend(Backend::Anonymous)),
        ),
    ];
    match securememory::protection_keys_status() {
        Ok(()) => v.push((
            "pooled-pkey",
            make(
                Options::default()
                    .layout(Layout::Pooled)
                    .pool_protection(PoolProtection::ProtectionKey),
            ),
        )),
        Err(why) => eprintln!("!!! pooled-pkey benches SKIPPED: {why}"),
    }
    match securememory::memfd_secret_status() {
        Ok(()) => v.push((
            "memfd_secret",
            make(Options::default().backend(Backend::MemfdSecret)),
        )),
        Err(why) => eprintln!("!!! memfd_secret benches SKIPPED: {why}"),
    }
    v
}

/// `iters` ops split over `threads` threads on one secret; wall time from a
/// common start (after each thread's first, untimed op) to a common end.
fn parallel(threads: usize, iters: u64, op: Op, f: &ProtectedFactory, s: &Secret) -> Duration {
    let start = Barrier::new(threads + 1);
    let end = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for t in 0..threads as u64 {
            let n = iters / threads as u64 + u64::from(t < iters % threads as u64);
            let (start, end) = (&start, &end);
            scope.spawn(move || {
                op(f, s); // this thread's scratch buffer, outside the timing
                start.wait();
                for _ in 0..n {
                    op(f, s);
                }
                end.wait();
            });
        }
        start.wait();
        let t0 = Instant::now();
        end.wait();
        t0.elapsed()
    })
}

fn benches(c: &mut Criterion) {
    let mut floor = c.benchmark_group("floor");
    floor.bench_function("mprotect_read32_none", |b| {
        b.iter_custom(securememory::system::mprotect_floor)
    });
    floor.finish();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (name, factory) in impls() {
        let secret = factory.new(&mut KEY.clone()).unwrap();
        let mut g = c.benchmark_group(name);
        g.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for (row, op) in ROWS {
            g.bench_function(BenchmarkId::new(row, "threads=1"), |b| {
                b.iter(|| op(&factory, &secret))
            });
            if cores > 1 {
                g.bench_function(BenchmarkId::new(row, format!("threads={cores}")), |b| {
                    b.iter_custom(|iters| parallel(cores, iters, op, &factory, &secret))
                });
            }
            assert!(
                !secret.is_readable_now().unwrap(),
                "GUARANTEE BROKEN: {name} secret readable at rest after {row}"
            );
        }
        g.finish();
        assert!(
            secret.with_bytes(|b| b == KEY).unwrap(),
            "{name} secret changed"
        );
    }
}

criterion_group!(secrets, benches);
criterion_main!(secrets);
