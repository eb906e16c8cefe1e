//! Attacks on the copy path's per-thread scratch (`mem/scratch.rs`) through
//! the public API: what an access leaves behind (panic, nesting, extra
//! regions, fork inside a closure), overlap of nested copies, locked memory
//! after deep nesting and thread exit, and accesses made while a thread is
//! exiting (from a thread-local destructor).

#[macro_use]
mod common;
mod support_proc;

use std::cell::RefCell;
use std::sync::Mutex;

use common::configs::{guarded_copy as guarded, page_copy as page};
use common::procfs::{is_locked_at, read_proc_mem, vm_lck_kib};
use securememory::{
    stats, test_hooks, Error, Layout, Options, ProtectedFactory, Secret, SecretFactory,
};
use support_proc::fork_and_wait;

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as u8).wrapping_mul(29) ^ (j as u8).wrapping_add(3) | 0x81)
        .collect()
}

fn pooled() -> ProtectedFactory {
    ProtectedFactory::new(Options::default().layout(Layout::Pooled)).unwrap()
}

/// Whether `[addr, addr + len)` holds only zeros, read through
/// `/proc/self/mem` (so an unmapped range is an error, not a crash).
fn zeros_at(addr: usize, len: usize) -> std::io::Result<bool> {
    Ok(read_proc_mem(addr, len)?.iter().all(|&b| b == 0))
}

/// Every byte of every scratch region of this thread is zero.
fn scratch_all_zero(what: &str) {
    for (addr, len) in test_hooks::scratch_regions() {
        assert!(
            zeros_at(addr, len).unwrap(),
            "{what}: scratch region {addr:#x}+{len} holds non-zero bytes"
        );
    }
}

// ---------------------------------------------------------------------------
// Wiped on every path.

/// Nested accesses (page, guarded, pooled, so several regions): each inner
/// copy is wiped as soon as its access ends, while the outer ones (and the
/// extra regions) still exist; after the outermost, every byte left is zero.
#[test]
fn attack_nested_copies_disjoint_and_each_wiped_when_it_ends() {
    std::thread::spawn(|| {
        let secrets: Vec<(Secret, Vec<u8>)> = (0..12)
            .map(|i| {
                let v = value(i, [100, 5000, 32, 900][i % 4]);
                let f = match i % 3 {
                    0 => page(),
                    1 => guarded(),
                    _ => pooled(),
                };
                let s = f.new(&mut v.clone()).unwrap();
                (s, v)
            })
            .collect();
        let spans = RefCell::new(Vec::<(usize, usize)>::new());
        fn nest(secrets: &[(Secret, Vec<u8>)], spans: &RefCell<Vec<(usize, usize)>>) {
            let Some(((s, v), rest)) = secrets.split_first() else {
                return;
            };
            s.with_bytes(|b| {
                assert_eq!(b, &v[..]);
                let me = (b.as_ptr() as usize, b.len());
                for &(a, l) in spans.borrow().iter() {
                    assert!(
                        me.0 + me.1 <= a || a + l <= me.0,
                        "copy {me:x?} overlaps a live outer copy {:x?}",
                        (a, l)
                    );
                }
                spans.borrow_mut().push(me);
                nest(rest, spans);
                spans.borrow_mut().pop();
                // The inner copies are gone, their memory (still mapped,
                // in this thread's regions) holds zeros again, and ours is
                // intact.
                assert_eq!(b, &v[..], "an inner access overwrote this copy");
            })
            .unwrap();
        }
        let inner_spans = RefCell::new(Vec::<(usize, usize)>::new());
        // Record each inner access's span, then check it after it ended.
        secrets[0]
            .0
            .with_bytes(|_| {
                for (s, v) in &secrets[1..] {
                    let at = s
                        .with_bytes(|b| {
                            assert_eq!(b, &v[..]);
                            (b.as_ptr() as usize, b.len())
                        })
                        .unwrap();
                    inner_spans.borrow_mut().push(at);
                    assert!(
                        zeros_at(at.0, at.1).unwrap(),
                        "the copy at {at:x?} was not wiped when its access ended"
                    );
                }
            })
            .unwrap();
        nest(&secrets, &spans);
        assert_eq!(test_hooks::scratch_regions().len(), 1);
        scratch_all_zero("after 12 nested accesses");
    })
    .join()
    .unwrap();
}

/// A panic in the innermost of nested accesses (several regions): after
/// it is caught, no byte of any secret is left in the thread's scratch.
#[test]
fn attack_panic_in_nested_closure_leaves_nothing() {
    std::thread::spawn(|| {
        let secrets: Vec<Secret> = (0..8)
            .map(|i| {
                let f = if i % 2 == 0 { guarded() } else { page() };
                f.new(&mut value(i, 3000)).unwrap()
            })
            .collect();
        let spans = RefCell::new(Vec::<(usize, usize)>::new());
        fn nest(secrets: &[Secret], spans: &RefCell<Vec<(usize, usize)>>) {
            let (s, rest) = secrets.split_first().unwrap();
            let _ = s.with_bytes(|b| {
                spans.borrow_mut().push((b.as_ptr() as usize, b.len()));
                if rest.is_empty() {
                    panic!("innermost panics");
                }
                nest(rest, spans)
            });
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| nest(&secrets, &spans)));
        assert!(r.is_err());
        let first = test_hooks::scratch_regions()[0];
        for &(a, l) in spans.borrow().iter() {
            if a >= first.0 && a + l <= first.0 + first.1 {
                assert!(zeros_at(a, l).unwrap(), "copy at {a:#x} left after a panic");
            } else {
                // An extra region: it must be gone.
                assert!(
                    read_proc_mem(a, l).is_err(),
                    "extra region at {a:#x} still mapped after the outermost access"
                );
            }
        }
        scratch_all_zero("after a panic in a nested closure");
    })
    .join()
    .unwrap();
}

child_test! {
    /// fork() inside a closure: in the child the outer copy reads zeros
    /// (wipe-on-fork), the child's own nested access gets a locked scratch
    /// of its own and its bytes, and once the inherited access ends the
    /// child's scratch is locked and all zero.
    fn attack_fork_inside_a_closure() {
        let f = page();
        let parent = f.new(&mut value(1, 64)).unwrap();
        let outer = pooled().new(&mut value(2, 64)).unwrap();
        outer
            .with_bytes(|ob| {
                parent
                    .with_bytes(|pb| {
                        let status = fork_and_wait(|| {
                            if ob.iter().any(|&b| b != 0) || pb.iter().any(|&b| b != 0) {
                                eprintln!("fork child: the parent's copies are readable");
                                return 2;
                            }
                            let mine = f.new(&mut value(3, 64)).unwrap();
                            let r = mine.with_bytes(|b| {
                                (b == value(3, 64), is_locked_at(b.as_ptr() as usize))
                            });
                            if !matches!(r, Ok((true, true))) {
                                eprintln!("fork child: nested access gave {r:?}");
                                return 3;
                            }
                            match parent.with_bytes(|_| ()) {
                                Err(Error::Forked) => {}
                                other => {
                                    eprintln!("fork child: parent's secret gave {other:?}");
                                    return 4;
                                }
                            }
                            0
                        });
                        assert_eq!(status.code(), Some(0), "{status:?}");
                    })
                    .unwrap();
            })
            .unwrap();
        // And a fork at rest: the child reads through a locked scratch and
        // leaves it all zero.
        let status = fork_and_wait(|| {
            let mine = f.new(&mut value(4, 64)).unwrap();
            for _ in 0..3 {
                let r = mine.with_bytes(|b| (b == value(4, 64), is_locked_at(b.as_ptr() as usize)));
                if !matches!(r, Ok((true, true))) {
                    eprintln!("fork child at rest: {r:?}");
                    return 5;
                }
            }
            for (a, l) in test_hooks::scratch_regions() {
                if !zeros_at(a, l).unwrap() {
                    return 6;
                }
            }
            0
        });
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}

// ---------------------------------------------------------------------------
// Locked memory after deep nesting and thread exit.

child_test! {
    /// Threads that nest 32 guarded copies (one region each) and pooled
    /// ones, then exit: `VmLck` and `stats().bytes_locked` come back to
    /// what they were, and agree with each other.
    fn attack_deep_nesting_and_thread_exit_leak_no_locked_memory() {
        let g = guarded();
        let p = pooled();
        let gs: Vec<Secret> = (0..32).map(|i| g.new(&mut value(i, 32)).unwrap()).collect();
        let ps: Vec<Secret> = (0..32).map(|i| p.new(&mut value(i, 200)).unwrap()).collect();
        // The pool class the deepest access creates in: its chunk exists
        // (and is kept, empty) before the baseline.
        p.create_random(100).unwrap().close().unwrap();
        let before = (vm_lck_kib() * 1024, stats().bytes_locked);
        fn nest(s: &[Secret], extra: &dyn Fn()) -> usize {
            match s.split_first() {
                None => {
                    extra();
                    0
                }
                Some((f, rest)) => f.with_bytes(|_| nest(rest, extra) + 1).unwrap(),
            }
        }
        // Joined one by one (pthread_join): the end of a scope alone does not
        // wait for the threads' thread-local destructors.
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4).map(|t| {
                let (gs, ps, p) = (&gs, &ps, &p);
                scope.spawn(move || {
                    for _ in 0..3 {
                        // The deepest also stages a pooled create in the scratch.
                        let made = std::cell::Cell::new(None);
                        assert_eq!(nest(gs, &|| made.set(Some(p.create_random(100)))), 32);
                        let made = made.take().unwrap().unwrap();
                        made.close().unwrap();
                        assert_eq!(nest(&ps[t..], &|| ()), 32 - t);
                    }
                    assert_eq!(test_hooks::scratch_regions().len(), 1, "extra regions kept");
                })
            }).collect();
            for h in handles {
                h.join().unwrap();
            }
        });
        let after = (vm_lck_kib() * 1024, stats().bytes_locked);
        assert_eq!(after, before, "(VmLck, bytes_locked) before vs after the threads exited");
        drop(gs);
        drop(ps);
    }
}

// ---------------------------------------------------------------------------
// An access from a thread-local destructor.

static TLS_RESULTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct ReadsOnExit(Vec<(&'static Secret, Vec<u8>)>);

impl Drop for ReadsOnExit {
    fn drop(&mut self) {
        for (s, v) in &self.0 {
            let r = s.with_bytes(|b| b == &v[..]);
            TLS_RESULTS
                .lock()
                .unwrap()
                .push(format!("{:?}/{}: {r:?}", s.access_path(), s.len()));
        }
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<ReadsOnExit>> = const { RefCell::new(None) };
}

/// A thread-local whose destructor reads secrets (a cache flushed at
/// thread exit, say): the thread's scratch may already be gone by then
/// (destructors run in reverse order of registration). The read must
/// still give the bytes, or at least one of the errors `with_bytes`
/// documents, not `Unsupported("this thread is exiting")`.
#[test]
fn attack_access_from_a_thread_local_destructor() {
    let copy: &'static Secret = Box::leak(Box::new(page().new(&mut value(1, 32)).unwrap()));
    let pool: &'static Secret = Box::leak(Box::new(pooled().new(&mut value(2, 32)).unwrap()));
    TLS_RESULTS.lock().unwrap().clear();
    std::thread::spawn(move || {
        // Registered first, so destroyed after the scratch.
        ON_EXIT.with(|o| {
            *o.borrow_mut() = Some(ReadsOnExit(vec![
                (copy, value(1, 32)),
                (pool, value(2, 32)),
            ]))
        });
        assert_eq!(copy.with_bytes(|b| b.to_vec()).unwrap(), value(1, 32));
    })
    .join()
    .unwrap();
    let results = TLS_RESULTS.lock().unwrap().clone();
    assert_eq!(results.len(), 2, "{results:?}");
    for r in &results {
        assert!(
            r.ends_with("Ok(true)"),
            "read in a TLS destructor: {results:?}"
        );
    }
}

child_test! {
    /// Threads whose only copy-path accesses happen in a thread-local
    /// destructor (the scratch is first needed while the thread is being
    /// torn down): the bytes are read, and once the threads are joined no
    /// locked memory is left behind (`VmLck`, `bytes_locked`).
    fn attack_first_access_in_a_thread_local_destructor_leaks_nothing() {
        let copy: &'static Secret = Box::leak(Box::new(page().new(&mut value(3, 32)).unwrap()));
        let pool: &'static Secret = Box::leak(Box::new(pooled().new(&mut value(4, 32)).unwrap()));
        let g: &'static Secret = Box::leak(Box::new(guarded().new(&mut value(5, 32)).unwrap()));
        let before = (vm_lck_kib() * 1024, stats().bytes_locked);
        TLS_RESULTS.lock().unwrap().clear();
        for _ in 0..4 {
            std::thread::spawn(move || {
                ON_EXIT.with(|o| {
                    *o.borrow_mut() = Some(ReadsOnExit(vec![
                        (copy, value(3, 32)),
                        (pool, value(4, 32)),
                        (g, value(5, 32)),
                    ]))
                });
            })
            .join()
            .unwrap();
        }
        let results = TLS_RESULTS.lock().unwrap().clone();
        assert_eq!(results.len(), 12, "{results:?}");
        assert!(results.iter().all(|r| r.ends_with("Ok(true)")), "{results:?}");
        let after = (vm_lck_kib() * 1024, stats().bytes_locked);
        assert_eq!(after, before, "(VmLck, bytes_locked) after the threads exited");
    }
}

child_test! {
    /// A copy-path secret larger than the scratch: `with_bytes` opens the
    /// window (two protection changes), `reader()` does not (a `pread`
    /// into the caller's buffer), as the README says.
    fn attack_large_copy_path_secret_window_only_for_with_bytes() {
        use std::io::Read as _;
        let len = securememory::scratch_capacity() + 1;
        let s = page().new(&mut value(6, len)).unwrap();
        let before = stats().protection_changes;
        let mut buf = vec![0u8; len];
        s.reader().read_exact(&mut buf).unwrap();
        assert_eq!(buf, value(6, len));
        assert_eq!(stats().protection_changes, before, "reader() opened the window");
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), value(6, len));
        assert_eq!(stats().protection_changes, before + 2, "with_bytes did not take the window");
    }
}
