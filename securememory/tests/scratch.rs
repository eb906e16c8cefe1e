//! The copy path's per-thread scratch buffer (`mem/scratch.rs`), where the
//! outside review broke it:
//!
//! - no lock is held while user code runs: with the memlock budget used up,
//!   thread A inside a closure closes secret T while thread B is inside an
//!   access of T; both finish (the old shared fallback buffer's mutex
//!   deadlocked here), and B gets its bytes or a typed error;
//! - nested accesses (10, and the 32 the nesting limit allows) of 1000-byte
//!   pooled secrets each see their own bytes; the 33rd is `NestingTooDeep`;
//!   extra scratch regions go away when the outermost access ends;
//! - `Layout::Guarded`: reading one byte past the end of the slice dies by
//!   SIGSEGV on the copy path (outermost and nested) as on the window path;
//! - a scratch that cannot be locked is `Error::LockFailed` naming the limit
//!   (or the kernel's error) under `LockPolicy::Require`, never a silent
//!   window and never `Unsupported`, and it is tried again on the next
//!   access; under `AllowUnlocked` the access works, counted and logged;
//! - in a fork child the scratch is locked again (mlock is not inherited).
//!
//! Tests that need a memlock limit run in a child without `CAP_IPC_LOCK`
//! (root ignores the limit); those whose outcome is a crash or a hang run
//! in a child the parent watches.

#[macro_use]
mod common;
mod support_child;
mod support_proc;

use std::io::Read as _;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::child::{describe, is_child, role, Child, CHILD_ENV, DONE};
use common::procfs::{is_locked_at, vma_at};
use common::rlimit::{memlock, CAP_IPC_LOCK};
use securememory::{
    stats, test_hooks, AccessPath, Backend, Error, Layout, LockPolicy, Options, ProtectedFactory,
    Secret, SecretFactory,
};
use support_child::{announce_fatal_access, assert_segv_after_marker, no_core_file};
use support_proc::{capture_tracing, fork_and_wait};

/// The soft memlock limit of the workers.
const LIMIT: u64 = 64 * 1024;
/// How long a worker may take before it counts as hung (it needs well under a second).
const HANG: Duration = Duration::from_secs(60);

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as u8).wrapping_mul(37) ^ (j as u8).wrapping_add(1) | 1)
        .collect()
}

fn pooled(lock: LockPolicy) -> ProtectedFactory {
    ProtectedFactory::new(Options::default().layout(Layout::Pooled).lock(lock)).unwrap()
}

fn copy_page() -> ProtectedFactory {
    ProtectedFactory::default()
}

/// In a worker: no `CAP_IPC_LOCK` in any thread, and a soft limit of [`LIMIT`].
fn no_cap_small_limit() {
    common::rlimit::no_ipc_lock_soft_limit(LIMIT);
}

/// One-page copy-path secrets until the budget refuses: after this no
/// thread that has no scratch yet can lock one.
fn fill_budget() -> Vec<Secret> {
    common::rlimit::fill_budget(&copy_page(), LIMIT, |i| value(i, 32))
}

/// Start this test binary as a worker running `test` as `role`, without
/// `CAP_IPC_LOCK` in its bounding set; kill it and fail if it has not ended
/// within [`HANG`]; fail unless it got to its end.
fn run_watched(test: &str, role: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: runs in the forked child before exec; only prctl, which is
    // async-signal-safe, and no allocation.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_CAPBSET_DROP,
                CAP_IPC_LOCK as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn the worker");
    // Drain the pipes on threads so a chatty worker cannot block on them.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > HANG {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out_t.join().unwrap(), err_t.join().unwrap());
    let shown = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    let Some(status) = status else {
        panic!("{test}/{role}: the worker hung (killed after {HANG:?})\n{shown}");
    };
    assert!(
        status.success() && stdout.contains(DONE),
        "{test}/{role}: worker failed ({})\n{shown}",
        describe(status)
    );
    stdout
}

// ---------------------------------------------------------------------------
// Defect 5: no lock held while user code runs.

/// What thread B got from its access of T.
fn b_outcome_is_typed(r: &Result<Vec<u8>, Error>, expect: &[u8]) {
    match r {
        Ok(bytes) => assert_eq!(bytes, expect, "B read wrong bytes"),
        Err(Error::Closed | Error::LockFailed { .. }) => {}
        Err(e) => panic!("B got an unexpected error: {e:?}"),
    }
}

fn close_inside_closure_worker(lock: LockPolicy) {
    no_cap_small_limit();
    let pool = pooled(lock);
    let t = pool.new(&mut value(1, 32)).unwrap();
    let s = pool.new(&mut value(2, 32)).unwrap();
    let _held = fill_budget();
    let (a_in, a_in_rx) = mpsc::channel::<()>();
    let (b_go, b_go_rx) = mpsc::channel::<()>();
    let (s, t) = (&s, &t);
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(move || {
            s.with_bytes(move |bytes| {
                assert_eq!(bytes, value(2, 32));
                a_in.send(()).unwrap();
                // Let B get into its access of T before closing T.
                b_go_rx.recv().unwrap();
                std::thread::sleep(Duration::from_millis(300));
                t.close()
            })
        });
        let b = scope.spawn(move || {
            // Err: A never got into its closure (its sender was dropped).
            let _ = a_in_rx.recv();
            let _ = b_go.send(());
            t.with_bytes(|bytes| bytes.to_vec())
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    println!(
        "{lock:?}: A got {a:?}, B got {:?}",
        b.as_ref().map(|_| "its bytes")
    );
    b_outcome_is_typed(&b, &value(1, 32));
    match lock {
        // Neither thread can get a locked scratch: typed refusals.
        LockPolicy::Require => {
            assert!(matches!(a, Err(Error::LockFailed { .. })), "A: {a:?}");
            assert!(matches!(b, Err(Error::LockFailed { .. })), "B: {b:?}");
        }
        // Both get unlocked scratch: A's closure ran and closed T.
        LockPolicy::AllowUnlocked => {
            assert!(matches!(a, Ok(Ok(()))), "A: {a:?}");
            assert!(t.is_closed());
        }
    }
}

#[test]
fn close_inside_a_closure_while_another_thread_accesses_finishes() {
    const TEST: &str = "close_inside_a_closure_while_another_thread_accesses_finishes";
    match role().as_deref() {
        Some("require") => close_inside_closure_worker(LockPolicy::Require),
        Some("allow-unlocked") => close_inside_closure_worker(LockPolicy::AllowUnlocked),
        Some(_) => return,
        None => {
            for r in ["require", "allow-unlocked"] {
                print!("{}", run_watched(TEST, r));
            }
            return;
        }
    }
    common::child::done();
}

// ---------------------------------------------------------------------------
// Defect 6: nesting.

/// Access `secrets[0]`, and inside it the rest, each checking its bytes
/// before and after the inner accesses. Returns how deep it got, or the
/// error of the innermost access that failed.
fn nest(secrets: &[Secret], values: &[Vec<u8>]) -> Result<usize, Error> {
    let Some((first, rest)) = secrets.split_first() else {
        return Ok(0);
    };
    first.with_bytes(|b| {
        assert_eq!(b, values[0], "depth {}", values.len());
        let inner = nest(rest, &values[1..]);
        assert_eq!(
            b,
            values[0],
            "depth {} after the inner accesses",
            values.len()
        );
        inner.map(|d| d + 1)
    })?
}

fn nested(
    factory: &ProtectedFactory,
    what: &str,
    len: usize,
    depth: usize,
) -> Result<usize, Error> {
    let values: Vec<Vec<u8>> = (0..depth).map(|i| value(i, len)).collect();
    let secrets: Vec<Secret> = values
        .iter()
        .map(|v| factory.new(&mut v.clone()).unwrap())
        .collect();
    let r = nest(&secrets, &values);
    println!("{what}: {depth} nested accesses of {len} bytes: {r:?}");
    r
}

#[test]
fn nested_accesses_each_see_their_own_bytes() {
    // A fresh thread, so its scratch starts empty.
    std::thread::spawn(|| {
        let pool = pooled(LockPolicy::Require);
        assert_eq!(nested(&pool, "pooled", 1000, 10).unwrap(), 10);
        assert_eq!(test_hooks::scratch_regions().len(), 1, "extra regions kept");
        assert_eq!(nested(&pool, "pooled", 1000, 32).unwrap(), 32);
        assert_eq!(test_hooks::scratch_regions().len(), 1, "extra regions kept");
        // Copies that each need a region of their own.
        let big = 5000;
        assert!(
            big * 2 > securememory::scratch_capacity() && big <= securememory::scratch_capacity()
        );
        assert_eq!(nested(&copy_page(), "page", big, 32).unwrap(), 32);
        assert_eq!(test_hooks::scratch_regions().len(), 1, "extra regions kept");
        let r = nested(&pool, "pooled", 1000, 33);
        assert!(matches!(r, Err(Error::NestingTooDeep(32))), "{r:?}");
    })
    .join()
    .unwrap();
}

#[test]
fn a_panic_in_a_nested_access_unwinds_the_scratch() {
    std::thread::spawn(|| {
        let pool = pooled(LockPolicy::Require);
        let secrets: Vec<Secret> = (0..12)
            .map(|i| pool.new(&mut value(i, 1000)).unwrap())
            .collect();
        fn nest_then_panic(secrets: &[Secret]) {
            let (first, rest) = secrets.split_first().unwrap();
            let _ = first.with_bytes(|_| {
                if rest.is_empty() {
                    panic!("panic in the innermost of 12 nested accesses");
                }
                nest_then_panic(rest)
            });
        }
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| nest_then_panic(&secrets)));
        assert!(r.is_err());
        assert_eq!(test_hooks::scratch_regions().len(), 1);
        // Everything given back: the same nesting works again.
        let values: Vec<Vec<u8>> = (0..12).map(|i| value(i, 1000)).collect();
        assert_eq!(nest(&secrets, &values).unwrap(), 12);
    })
    .join()
    .unwrap();
}

// ---------------------------------------------------------------------------
// Defect 10: guarded copies sit flush against a guard page.

fn guarded(access: AccessPath) -> ProtectedFactory {
    ProtectedFactory::new(
        Options::default()
            .backend(Backend::Memfd)
            .layout(Layout::Guarded)
            .access(access),
    )
    .unwrap()
}

/// In a child: read the last byte of `bytes`, check the next page is a
/// guard (mapped, no access), then read one byte past the end.
fn read_one_past(what: &str, bytes: &[u8]) {
    let last = bytes.as_ptr() as usize + bytes.len() - 1;
    // SAFETY: `last` is the slice's last byte.
    let b = unsafe { std::ptr::read_volatile(last as *const u8) };
    assert_eq!(b, bytes[bytes.len() - 1]);
    let guard = vma_at(last + 1).unwrap_or_else(|| panic!("{what}: nothing mapped past the end"));
    assert_eq!(
        guard.perms(),
        "---p",
        "{what}: not a guard page past the end: {guard:?}"
    );
    announce_fatal_access(&format!("{what}: reads one byte past the end"));
    // SAFETY: deliberately invalid: one byte past the slice is a guard
    // page; this read must kill the process.
    let b = unsafe { std::ptr::read_volatile((last + 1) as *const u8) };
    eprintln!("{what}: read {b:#x} past the end and lived");
}

fn guarded_child(case: &str) {
    no_core_file();
    let copy = guarded(AccessPath::Copy);
    let known = value(7, 32);
    let g = copy.new(&mut known.clone()).unwrap();
    match case {
        "copy" => {
            g.with_bytes(|b| read_one_past(case, b)).unwrap();
        }
        "window" => {
            let w = guarded(AccessPath::Window).new(&mut known.clone()).unwrap();
            w.with_bytes(|b| read_one_past(case, b)).unwrap();
        }
        // Inside a page-layout copy (which sits flush against the guard).
        "nested-in-page" => {
            let outer = copy_page().new(&mut value(3, 100)).unwrap();
            outer
                .with_bytes(|_| g.with_bytes(|b| read_one_past(case, b)).unwrap())
                .unwrap();
        }
        // Inside another guarded copy and a pooled one.
        "nested-in-guarded" => {
            let outer = copy.new(&mut value(4, 64)).unwrap();
            let pooled = pooled(LockPolicy::Require).new(&mut value(5, 100)).unwrap();
            outer
                .with_bytes(|_| {
                    pooled
                        .with_bytes(|_| g.with_bytes(|b| read_one_past(case, b)).unwrap())
                        .unwrap()
                })
                .unwrap();
        }
        other => panic!("no case {other}"),
    }
}

#[test]
fn guarded_read_one_past_the_end_dies_on_both_paths() {
    const TEST: &str = "guarded_read_one_past_the_end_dies_on_both_paths";
    if let Some(case) = role() {
        return guarded_child(&case);
    }
    for case in ["copy", "window", "nested-in-page", "nested-in-guarded"] {
        let run = Child::new(TEST, case).run();
        assert_segv_after_marker(&run, &format!("{TEST} / {case}"));
        println!("{case}: SIGSEGV one byte past the end");
    }
}

// ---------------------------------------------------------------------------
// Issue 15.4: a scratch that cannot be locked.

fn refused_worker() {
    let events = capture_tracing();
    no_cap_small_limit();
    let page_secret = copy_page().new(&mut value(1, 32)).unwrap();
    let pooled_secret = pooled(LockPolicy::Require).new(&mut value(2, 32)).unwrap();
    let lax = ProtectedFactory::new(Options::default().lock(LockPolicy::AllowUnlocked)).unwrap();
    let mut held = fill_budget();
    let lax_secret = lax.new(&mut value(3, 32)).unwrap();
    let (soft, hard) = memlock();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for (what, s) in [("page", &page_secret), ("pooled", &pooled_secret)] {
                for attempt in 0..2 {
                    let refusals = stats().lock_refusals;
                    let windows = stats().protection_changes;
                    let r = s.with_bytes(|b| b.to_vec());
                    let Err(Error::LockFailed { report, .. }) = &r else {
                        panic!("{what}: expected LockFailed, got {r:?}");
                    };
                    assert_eq!((report.soft, report.hard), (soft, hard), "{what}");
                    assert_eq!(report.requested, securememory::scratch_capacity() as u64);
                    let msg = r.unwrap_err().to_string();
                    assert!(
                        msg.contains("RLIMIT_MEMLOCK") && msg.contains(&LIMIT.to_string()),
                        "{msg}"
                    );
                    // Asked again each time (not cached), never a window.
                    assert_eq!(
                        stats().lock_refusals,
                        refusals + 1,
                        "{what} attempt {attempt}"
                    );
                    assert_eq!(
                        stats().protection_changes,
                        windows,
                        "{what}: a window was opened"
                    );
                    println!("{what}, attempt {attempt}: {msg}");
                }
            }
            // AllowUnlocked: an unlocked scratch, counted and logged.
            let unlocked = stats().unlocked_allocations;
            events.lock().unwrap().clear();
            assert_eq!(lax_secret.with_bytes(|b| b.to_vec()).unwrap(), value(3, 32));
            assert_eq!(stats().unlocked_allocations, unlocked + 1);
            let warned = events
                .lock()
                .unwrap()
                .iter()
                .any(|(l, t)| *l == tracing::Level::WARN && t.contains("NOT locked"));
            assert!(warned, "no warning for the unlocked scratch");
            // A secret that requires locking never reads into it.
            let r = page_secret.with_bytes(|b| b.to_vec());
            assert!(matches!(r, Err(Error::LockFailed { .. })), "{r:?}");
        });
    });
    // Room again: the next access of a new thread locks a scratch and reads.
    held.truncate(held.len() - 2);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            assert_eq!(
                page_secret.with_bytes(|b| b.to_vec()).unwrap(),
                value(1, 32)
            );
            assert_eq!(
                pooled_secret.with_bytes(|b| b.to_vec()).unwrap(),
                value(2, 32)
            );
            let (addr, _) = test_hooks::scratch_regions()[0];
            assert!(is_locked_at(addr), "the scratch is not locked");
        });
    });
}

#[test]
fn scratch_that_cannot_be_locked_is_lock_failed() {
    const TEST: &str = "scratch_that_cannot_be_locked_is_lock_failed";
    if is_child("refused") {
        refused_worker();
        common::child::done();
        return;
    }
    if role().is_none() {
        print!("{}", run_watched(TEST, "refused"));
    }
}

child_test! {
    /// The kernel refusing `mlock` (injected) for the scratch: `LockFailed`
    /// with the kernel's error under `Require` (page and pooled secrets, no
    /// window opened), a working access next time; under `AllowUnlocked`
    /// the access works, counted as unlocked.
    fn scratch_mlock_refused_by_the_kernel() {
        let page = copy_page().new(&mut value(1, 32)).unwrap();
        let grd = guarded(AccessPath::Copy).new(&mut value(2, 32)).unwrap();
        let pool = pooled(LockPolicy::Require).new(&mut value(3, 32)).unwrap();
        for (what, s, v) in [("page", &page, 1), ("guarded", &grd, 2), ("pooled", &pool, 3)] {
            std::thread::scope(|scope| { scope.spawn(move || {
                let windows = stats().protection_changes;
                test_hooks::fail_next(test_hooks::FaultOp::Mlock, 0, libc::EPERM);
                let r = s.with_bytes(|b| b.to_vec());
                test_hooks::clear_faults();
                assert!(
                    matches!(&r, Err(Error::LockFailed { source, .. }) if source.raw_os_error() == Some(libc::EPERM)),
                    "{what}: {r:?}"
                );
                assert_eq!(stats().protection_changes, windows, "{what}: a window was opened");
                assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), value(v, 32), "{what}: retry");
                assert!(is_locked_at(test_hooks::scratch_regions()[0].0));
            }); });
        }
        let lax = ProtectedFactory::new(Options::default().lock(LockPolicy::AllowUnlocked)).unwrap();
        let s = lax.new(&mut value(4, 32)).unwrap();
        std::thread::spawn(move || {
            let unlocked = stats().unlocked_allocations;
            test_hooks::fail_next(test_hooks::FaultOp::Mlock, 0, libc::EPERM);
            let (bytes, locked) = s.with_bytes(|b| (b.to_vec(), is_locked_at(b.as_ptr() as usize))).unwrap();
            test_hooks::clear_faults();
            assert_eq!(bytes, value(4, 32));
            assert!(!locked);
            assert_eq!(stats().unlocked_allocations, unlocked + 1);
            // The unlocked region is not kept: the next access locks one.
            assert!(test_hooks::scratch_regions().is_empty());
            assert!(s.with_bytes(|b| is_locked_at(b.as_ptr() as usize)).unwrap());
        })
        .join()
        .unwrap();
    }
}

// ---------------------------------------------------------------------------
// Defect 8: the scratch in a fork child.

child_test! {
    /// The parent's scratch is locked; after a fork the child reads its own
    /// secret through a scratch that is locked in the child (the inherited
    /// one is not: `mlock` is not inherited).
    fn fork_child_scratch_is_locked() {
        let f = copy_page();
        let parent = f.new(&mut value(1, 32)).unwrap();
        let at = parent.with_bytes(|b| b.as_ptr() as usize).unwrap();
        assert!(is_locked_at(at), "the parent's scratch is not locked");
        let status = fork_and_wait(|| {
            let mine = match f.new(&mut value(2, 32)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("fork child: create: {e}");
                    return 2;
                }
            };
            let r = mine.with_bytes(|b| (b == value(2, 32), is_locked_at(b.as_ptr() as usize)));
            match r {
                Ok((true, true)) => 0,
                Ok((true, false)) => {
                    eprintln!("fork child: its scratch is not locked");
                    3
                }
                other => {
                    eprintln!("fork child: access gave {other:?}");
                    4
                }
            }
        });
        assert_eq!(status.code(), Some(0), "fork child: {status:?} {:?}", status.signal());
    }
}
