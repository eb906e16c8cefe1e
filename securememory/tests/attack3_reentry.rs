//! Attack: a `metrics` recorder that closes the very secret whose release it
//! is reporting, when that `close` was called from 32 nested accesses of
//! other secrets (the deepest nesting the library allows). The README
//! promises such a re-entrant close "returns `Ok(())` at once"; it must not
//! wait for itself. Public API only; the child is killed after 20 s.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::child::{role, Child, DONE};
use common::procfs::vm_lck_kib;
use common::recorder::HookRecorder;
use securememory::{
    stats, AccessPath, Backend, Error, Layout, Options, ProtectedFactory, Secret, SecretFactory,
};

thread_local! {
    /// The secret the recorder closes at its next call on this thread.
    static CLOSE_ME: RefCell<Option<Arc<Secret>>> = const { RefCell::new(None) };
}
static REENTRANT_CLOSES: AtomicUsize = AtomicUsize::new(0);
static REENTRANT_FAILED: AtomicUsize = AtomicUsize::new(0);
/// While set, every recorder call panics (after any re-entrant close).
static PANIC_ALWAYS: AtomicBool = AtomicBool::new(false);

/// Every recorder call: close `CLOSE_ME` if set (once per call).
fn on_call() {
    let s = CLOSE_ME.try_with(|c| c.borrow().clone()).ok().flatten();
    if let Some(s) = s {
        match s.close() {
            Ok(()) => REENTRANT_CLOSES.fetch_add(1, Ordering::SeqCst),
            Err(_) => REENTRANT_FAILED.fetch_add(1, Ordering::SeqCst),
        };
    }
    if PANIC_ALWAYS.load(Ordering::SeqCst) {
        panic!("recorder panics (expected)");
    }
}

const CLOSING_RECORDER: HookRecorder = HookRecorder {
    on_register: |_| {},
    on_use: Some(on_call),
};

/// Run `depth` nested accesses of `outer`, then `body` at the deepest.
fn nested(outer: &[Secret], depth: usize, body: &mut dyn FnMut()) {
    if depth == 0 {
        body();
        return;
    }
    outer[depth - 1]
        .with_bytes(|_| nested(outer, depth - 1, body))
        .expect("a nested access within the limit");
}

/// Close `victim` from `depth` nested accesses while the recorder closes it
/// again from the release's report.
fn close_reentered_at_depth(victim_factory: &ProtectedFactory, depth: usize) {
    let f = ProtectedFactory::default();
    let outer: Vec<Secret> = (0..depth)
        .map(|i| f.new(&mut [i as u8 + 1; 32]).expect("create"))
        .collect();
    let victim = Arc::new(victim_factory.new(&mut [7u8; 64]).expect("create"));
    let before = REENTRANT_CLOSES.load(Ordering::SeqCst);
    let mut closed = None;
    nested(&outer, depth, &mut || {
        CLOSE_ME.with(|c| *c.borrow_mut() = Some(Arc::clone(&victim)));
        closed = Some(victim.close());
        CLOSE_ME.with(|c| *c.borrow_mut() = None);
    });
    assert!(matches!(closed, Some(Ok(()))), "depth {depth}: {closed:?}");
    assert!(
        REENTRANT_CLOSES.load(Ordering::SeqCst) > before,
        "depth {depth}: no re-entrant close"
    );
    assert_eq!(REENTRANT_FAILED.load(Ordering::SeqCst), 0, "depth {depth}");
    assert!(matches!(victim.with_bytes(|_| ()), Err(Error::Closed)));
}

fn child_body() {
    std::panic::set_hook(Box::new(|i| {
        if !i.to_string().contains("(expected)") {
            eprintln!("{i}");
        }
    }));
    metrics::set_global_recorder(CLOSING_RECORDER).expect("install the recorder");
    let page = ProtectedFactory::default();
    let pooled = ProtectedFactory::new(Options::default().layout(Layout::Pooled)).expect("pooled");
    // Warm this thread's scratch and the pool (their first use reports too).
    for f in [&page, &pooled] {
        f.new(&mut [1u8; 64]).unwrap().with_bytes(|_| ()).unwrap();
    }
    for depth in [0, 1, 31, 32] {
        close_reentered_at_depth(&page, depth);
        close_reentered_at_depth(&pooled, depth);
        println!("depth {depth}: held");
    }
    nesting_and_unwinding();
}

/// 32 nested accesses over every path (copy, window, larger than the
/// scratch, pooled), the 33rd refused; then a panic at the deepest that
/// unwinds through all 32 while dropping secrets whose close reports to a
/// recorder that panics too. No abort, nothing readable, the per-thread
/// nesting count restored, counters and `VmLck` back.
fn nesting_and_unwinding() {
    let facs = [
        ProtectedFactory::default(),
        ProtectedFactory::new(Options::default().access(AccessPath::Window)).unwrap(),
        ProtectedFactory::new(
            Options::default()
                .backend(Backend::Anonymous)
                .layout(Layout::Guarded),
        )
        .unwrap(),
        ProtectedFactory::new(Options::default().layout(Layout::Pooled)).unwrap(),
    ];
    let mk = |i: usize| {
        let len = if i % 5 == 4 { 9000 } else { 40 };
        facs[i % 4]
            .new(&mut vec![i as u8 + 1; len])
            .expect("create")
    };
    let warm: Vec<Secret> = (0..32).map(mk).collect();
    nested(&warm, 32, &mut || {});
    drop(warm);
    let (base, lck) = (stats(), vm_lck_kib());
    let outer: Vec<Secret> = (0..32).map(mk).collect();
    let mut refused = None;
    nested(&outer, 32, &mut || {
        refused = Some(outer[0].with_bytes(|_| ()));
    });
    assert!(
        matches!(refused, Some(Err(Error::NestingTooDeep(32)))),
        "{refused:?}"
    );
    PANIC_ALWAYS.store(true, Ordering::SeqCst);
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        nested(&outer, 32, &mut || {
            // Dropped while unwinding: its close reports to the panicking recorder.
            let _dropped_in_unwind = [mk(1), mk(3), mk(4)];
            panic!("closure panics at the deepest (expected)");
        })
    }));
    PANIC_ALWAYS.store(false, Ordering::SeqCst);
    assert!(unwound.is_err());
    for (i, s) in outer.iter().enumerate() {
        assert!(!s.is_readable_now().unwrap(), "secret {i} readable at rest");
    }
    // The nesting count came back to zero: 32 fit again.
    nested(&outer, 32, &mut || {});
    for (i, s) in outer.iter().enumerate() {
        let len = s.len();
        assert_eq!(
            s.with_bytes(|b| b.to_vec()).unwrap(),
            vec![i as u8 + 1; len]
        );
    }
    drop(outer);
    let now = stats();
    assert_eq!(
        (now.in_use, now.pool_slots_used, now.bytes_locked),
        (base.in_use, base.pool_slots_used, base.bytes_locked)
    );
    assert_eq!(vm_lck_kib(), lck, "VmLck");
    println!("nesting and unwinding: held");
}

/// Re-run this test as a child; kill it after `limit` (a hang).
fn run_child(test: &str, limit: Duration) -> Result<String, String> {
    Child::new(test, test).run_until_done(limit, "hang")
}

#[test]
fn reentrant_close_from_32_nested_accesses_returns() {
    const NAME: &str = "reentrant_close_from_32_nested_accesses_returns";
    if role().as_deref() == Some(NAME) {
        child_body();
        println!("{DONE}");
        return;
    }
    if let Err(why) = run_child(NAME, Duration::from_secs(20)) {
        panic!("{why}");
    }
}
