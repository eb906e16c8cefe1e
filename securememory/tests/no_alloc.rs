//! No heap allocation on the access path: a counting global allocator counts
//! the allocations made by the current thread (a const thread-local, so other
//! test threads do not interfere and counting itself allocates nothing).
//! After a warm-up access (the first copy-path access on a thread creates its
//! scratch buffer), 10,000 calls each of `with_bytes`, `with_bytes_func` and
//! `reader().read_exact` into a stack buffer must allocate zero times, for
//! every backend, layout and access path. A control shows the counter sees a
//! closure that allocates.
#![cfg(target_os = "linux")]

mod common;

use std::hint::black_box;
use std::io::Read;

use common::counting_alloc::{allocations, Counting};
use securememory::{AccessPath, Backend, Error, Layout, Options, ProtectedFactory, SecretFactory};

#[global_allocator]
static GLOBAL: Counting = Counting;

const CALLS: usize = 10_000;

fn check(name: &str, opts: Options, len: usize) {
    let factory = ProtectedFactory::new(opts).unwrap();
    let mut src: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
    let expected_sum: u64 = src.iter().map(|&b| u64::from(b)).sum();
    let secret = factory.new(&mut src).unwrap();
    let mut buf = [0u8; 12 * 1024];
    let buf = &mut buf[..len];
    let sum = |b: &[u8]| b.iter().map(|&x| u64::from(x)).sum::<u64>();

    // Warm-up: the scratch buffer, the store, the at-fork handler.
    assert_eq!(secret.with_bytes(sum).unwrap(), expected_sum, "{name}");
    assert_eq!(
        secret.with_bytes_func(|b| Ok::<_, Error>(sum(b))).unwrap(),
        expected_sum
    );
    secret.reader().read_exact(buf).unwrap();

    let n = allocations(|| {
        for _ in 0..CALLS {
            black_box(secret.with_bytes(|b| black_box(b[0])).unwrap());
        }
    });
    assert_eq!(
        n, 0,
        "{name}: with_bytes allocated {n} times in {CALLS} calls"
    );

    let n = allocations(|| {
        for _ in 0..CALLS {
            black_box(
                secret
                    .with_bytes_func(|b| Ok::<_, Error>(black_box(b[0])))
                    .unwrap(),
            );
        }
    });
    assert_eq!(
        n, 0,
        "{name}: with_bytes_func allocated {n} times in {CALLS} calls"
    );

    let n = allocations(|| {
        for _ in 0..CALLS {
            secret.reader().read_exact(buf).unwrap();
            black_box(&buf);
        }
    });
    assert_eq!(
        n, 0,
        "{name}: reader().read_exact allocated {n} times in {CALLS} calls"
    );
    assert_eq!(sum(buf), expected_sum, "{name}: the reads were real");

    // Control: the counter sees an allocation inside the access.
    let n = allocations(|| {
        black_box(secret.with_bytes(|b| b.to_vec()).unwrap());
    });
    assert!(
        n > 0,
        "{name}: the counting allocator missed a closure that allocates"
    );
    secret.close().unwrap();
    eprintln!(
        "{name}: {CALLS} calls each of with_bytes, with_bytes_func, read_exact: 0 allocations"
    );
}

#[test]
fn access_paths_do_not_allocate() {
    let memfd = Options::default().backend(Backend::Memfd);
    let anon = Options::default()
        .backend(Backend::Anonymous)
        .access(AccessPath::Window);
    check("memfd/page/copy", memfd.access(AccessPath::Copy), 32);
    check("memfd/page/window", memfd.access(AccessPath::Window), 32);
    check("anonymous/page/window", anon, 32);
    check(
        "memfd/guarded/copy",
        memfd.access(AccessPath::Copy).layout(Layout::Guarded),
        32,
    );
    check("anonymous/guarded/window", anon.layout(Layout::Guarded), 32);
    check(
        "memfd/pooled/copy",
        memfd.access(AccessPath::Copy).layout(Layout::Pooled),
        32,
    );
    check(
        "memfd/sealed/copy",
        memfd.access(AccessPath::Copy).layout(Layout::Sealed),
        32,
    );
    check(
        "memfd/page/copy/12KiB (window fallback)",
        memfd.access(AccessPath::Copy),
        12 * 1024,
    );
    match securememory::memfd_secret_status() {
        Ok(()) => {
            let secret = Options::default()
                .backend(Backend::MemfdSecret)
                .access(AccessPath::Window);
            check("memfd_secret/page/window", secret, 32);
            check(
                "memfd_secret/guarded/window",
                secret.layout(Layout::Guarded),
                32,
            );
        }
        Err(why) => eprintln!("SKIPPED: memfd_secret configurations: {why}"),
    }
}

#[test]
fn counter_counts_this_thread_only() {
    assert_eq!(
        allocations(|| drop(black_box(vec![1u8; 64]))),
        1,
        "one Vec, one allocation"
    );
    assert_eq!(
        allocations(|| {
            black_box([1u8; 64]);
        }),
        0,
        "an array allocates nothing"
    );
    let mut other = 0;
    let here = allocations(|| {
        // Spawning allocates on this thread; the Vec is counted on the other.
        other = std::thread::spawn(|| allocations(|| drop(black_box(vec![1u8; 64]))))
            .join()
            .unwrap();
    });
    assert_eq!(other, 1);
    assert!(here > 0);
}
