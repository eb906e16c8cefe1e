//! No heap allocation on the access path, attacked where the access path
//! does more than one copy: nested accesses that need an extra scratch
//! region (made and unmapped around every outermost access), and a thread
//! whose scratch was used up by nesting. Counting allocator as in
//! `no_alloc.rs`.

mod common;

use std::hint::black_box;

use common::configs::{guarded_copy as guarded, page_copy as page};
use common::counting_alloc::{allocations, Counting};
use securememory::SecretFactory;

#[global_allocator]
static GLOBAL: Counting = Counting;

const CALLS: usize = 1000;

/// Two nested accesses whose copies cannot share a region: after a warm-up,
/// CALLS of them allocate nothing.
fn nested_pair(name: &str, outer: &securememory::Secret, inner: &securememory::Secret) {
    let run = || {
        outer
            .with_bytes(|a| {
                black_box(inner.with_bytes(|b| black_box(a[0] ^ b[0])).unwrap());
            })
            .unwrap()
    };
    run();
    let n = allocations(|| {
        for _ in 0..CALLS {
            run();
        }
    });
    assert_eq!(n, 0, "{name}: {CALLS} nested accesses allocated {n} times");
}

#[test]
fn attack_nested_accesses_with_extra_regions_do_not_allocate() {
    std::thread::spawn(|| {
        // The test hook's copy of each released region is the test's own
        // allocation, not the library's.
        securememory::test_hooks::observe_wipes(false);
        let g = guarded();
        let (a, b) = (
            g.new(&mut [7u8; 32]).unwrap(),
            g.new(&mut [9u8; 32]).unwrap(),
        );
        nested_pair("guarded in guarded", &a, &b);
        let p = page();
        let (c, d) = (
            p.new(&mut vec![1u8; 5000]).unwrap(),
            p.new(&mut vec![2u8; 5000]).unwrap(),
        );
        nested_pair("5000 bytes in 5000 bytes", &c, &d);
    })
    .join()
    .unwrap();
}
