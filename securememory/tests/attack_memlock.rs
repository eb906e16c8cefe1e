//! Attacks on the scratch under the memlock limit: a thread that once got
//! an unlocked scratch (`LockPolicy::AllowUnlocked`, budget used up) and
//! reads again, and nested accesses refused an extra region. Workers run
//! without `CAP_IPC_LOCK` (root ignores the limit) under a small limit.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;
mod support_proc;

use common::child::Child;
use common::procfs::is_locked_at;
use common::rlimit::CAP_IPC_LOCK;
use securememory::{
    stats, AccessPath, Backend, Error, Layout, LockPolicy, Options, ProtectedFactory, Secret,
    SecretFactory,
};

const LIMIT: u64 = 64 * 1024;

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as u8).wrapping_mul(13) ^ (j as u8).wrapping_add(5) | 0x11)
        .collect()
}

fn no_cap_small_limit() {
    common::rlimit::no_ipc_lock_soft_limit(LIMIT);
}

/// One-page secrets until the budget refuses.
fn fill_budget() -> Vec<Secret> {
    common::rlimit::fill_budget(&ProtectedFactory::default(), LIMIT, |i| value(i, 32))
}

fn run_worker(test: &str) {
    if common::child::role().is_some() {
        return;
    }
    let run = Child::new(test, test).drop_bounding(&[CAP_IPC_LOCK]).run();
    run.assert_done(test);
    print!("{}", run.stdout);
}

/// AllowUnlocked while the budget is used up: each access that copies into
/// unlocked memory is counted (the README: "the access goes ahead in an
/// unlocked scratch buffer ... with a tracing warning and the
/// `secret.unlocked` counter"; "Never silently"), and once locked memory is
/// available again the thread's scratch is locked ("keeps an 8 KiB locked
/// scratch buffer for its life"), not the unlocked one kept forever.
#[test]
fn attack_unlocked_scratch_is_not_kept_silently() {
    const TEST: &str = "attack_unlocked_scratch_is_not_kept_silently";
    if common::child::is_child(TEST) {
        no_cap_small_limit();
        let lax = ProtectedFactory::new(
            Options::default()
                .backend(Backend::Memfd)
                .access(AccessPath::Copy)
                .lock(LockPolicy::AllowUnlocked),
        )
        .unwrap();
        // Created while the budget has room: this secret itself is locked.
        let s = lax.new(&mut value(1, 32)).unwrap();
        let mut held = fill_budget();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..3 {
                    let before = stats().unlocked_allocations;
                    let locked = s
                        .with_bytes(|b| {
                            assert_eq!(b, value(1, 32));
                            is_locked_at(b.as_ptr() as usize)
                        })
                        .unwrap();
                    assert!(!locked);
                    assert_eq!(
                        stats().unlocked_allocations,
                        before + 1,
                        "access {i}: a locked secret's bytes copied into unlocked memory, not counted"
                    );
                }
                // Room again.
                held.truncate(held.len() - 4);
                let locked = s
                    .with_bytes(|b| is_locked_at(b.as_ptr() as usize))
                    .unwrap();
                assert!(
                    locked,
                    "room in the budget again, but the thread still copies into its unlocked scratch"
                );
            });
        });
        common::child::done();
        return;
    }
    run_worker(TEST);
}

/// Inside an outer access, a guarded secret needs an extra region, and the
/// budget refuses it: `LockFailed` for the inner access (never a window,
/// never an unlocked region), the outer copy intact, and the next outermost
/// access works.
#[test]
fn attack_nested_extra_region_refused_is_lock_failed() {
    const TEST: &str = "attack_nested_extra_region_refused_is_lock_failed";
    if common::child::is_child(TEST) {
        no_cap_small_limit();
        let page = ProtectedFactory::default();
        let guarded = ProtectedFactory::new(
            Options::default()
                .backend(Backend::Memfd)
                .layout(Layout::Guarded)
                .access(AccessPath::Copy),
        )
        .unwrap();
        let outer = page.new(&mut value(1, 32)).unwrap();
        let inner = guarded.new(&mut value(2, 32)).unwrap();
        // This thread's first region, before the budget is used up.
        outer.with_bytes(|_| ()).unwrap();
        let held = fill_budget();
        let windows = stats().protection_changes;
        outer
            .with_bytes(|ob| {
                let r = inner.with_bytes(|b| b.to_vec());
                assert!(matches!(r, Err(Error::LockFailed { .. })), "inner: {r:?}");
                assert_eq!(ob, value(1, 32));
            })
            .unwrap();
        assert_eq!(stats().protection_changes, windows, "a window was opened");
        drop(held);
        outer
            .with_bytes(|_| assert_eq!(inner.with_bytes(|b| b.to_vec()).unwrap(), value(2, 32)))
            .unwrap();
        common::child::done();
        return;
    }
    run_worker(TEST);
}

/// A fork child of a process whose budget is used up holds no locked
/// memory at all (`mlock` is not inherited, shared locked mappings are not
/// forked), yet the library's budget still counts the parent's bytes: the
/// child's first secret and its scratch are refused with a `LockFailed` that
/// blames the memlock limit although the kernel would lock them.
#[test]
fn attack_fork_child_budget_counts_the_parents_bytes() {
    const TEST: &str = "attack_fork_child_budget_counts_the_parents_bytes";
    if common::child::is_child(TEST) {
        no_cap_small_limit();
        let f = ProtectedFactory::default();
        let pool = ProtectedFactory::new(Options::default().layout(Layout::Pooled)).unwrap();
        let mine = f.new(&mut value(1, 32)).unwrap();
        mine.with_bytes(|_| ()).unwrap();
        let held = fill_budget();
        let status = support_proc::fork_and_wait(|| {
            let vm = common::procfs::vm_lck_kib();
            let made = f.new(&mut value(2, 32));
            let read = made.as_ref().map(|s| s.with_bytes(|b| b == value(2, 32)));
            let pooled = pool.create_random(32).map(|s| s.with_bytes(|b| b.len()));
            eprintln!(
                "fork child: VmLck {vm} kB, bytes_locked {}; new: {:?}; read: {:?}; pooled: {:?}",
                stats().bytes_locked,
                made.as_ref().err(),
                read.as_ref().ok(),
                pooled
            );
            match (vm, made.is_ok(), read, pooled) {
                (0, true, Ok(Ok(true)), Ok(Ok(32))) => 0,
                _ => 1,
            }
        });
        assert_eq!(
            status.code(),
            Some(0),
            "fork child: {status:?} (see its stderr)"
        );
        drop(held);
        common::child::done();
        return;
    }
    run_worker(TEST);
}
