//! No heap allocation on the access path, attacked where the access path
//! does more than one copy: nested accesses that need an extra scratch
//! region (made and unmapped around every outermost access), and a thread
//! whose scratch was used up by nesting. Counting allocator as in
//! `no_alloc.rs`.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::hint::black_box;

use securememory::{AccessPath, Backend, Layout, Options, ProtectedFactory, SecretFactory};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the allocator may run while this thread's locals are torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to the system allocator unchanged; counting
// touches only a const-initialised thread-local `Cell` (no allocation, no
// destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations this thread makes while running `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

const CALLS: usize = 1000;

fn guarded() -> ProtectedFactory {
    ProtectedFactory::new(
        Options::default()
            .backend(Backend::Memfd)
            .layout(Layout::Guarded)
            .access(AccessPath::Copy),
    )
    .unwrap()
}

fn page() -> ProtectedFactory {
    ProtectedFactory::new(
        Options::default()
            .backend(Backend::Memfd)
            .access(AccessPath::Copy),
    )
    .unwrap()
}

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
