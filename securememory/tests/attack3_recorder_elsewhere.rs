//! Attack: "none [of the recorder/subscriber calls] is made while a lock of
//! the library is held". The same-thread re-entrancy test cannot see a
//! lock that lets its own holder in again (the fork fence counts nested
//! creators per thread). Here every recorder call hands a full cycle to
//! ANOTHER thread and waits for it: create, read and close on every layout,
//! and a `fork()` (which waits for creators inside the fence). A lock held
//! across the call would make that thread wait for this one: the wait is
//! bounded, and a timeout is reported as a failure.
#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use common::recorder::HookRecorder;
use securememory::{AccessPath, Backend, Layout, Options, ProtectedFactory, SecretFactory};

static ON: AtomicBool = AtomicBool::new(false);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static STUCK: AtomicUsize = AtomicUsize::new(0);
static WRONG: AtomicUsize = AtomicUsize::new(0);
static FACS: OnceLock<Vec<ProtectedFactory>> = OnceLock::new();

thread_local! {
    static HELPER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn cycle_elsewhere() {
    if !ON.load(Ordering::SeqCst) || HELPER.try_with(|h| h.get()).unwrap_or(true) {
        return;
    }
    CALLS.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        HELPER.with(|h| h.set(true));
        for f in FACS.get().unwrap() {
            let ok = f
                .new(&mut [4u8; 40])
                .is_ok_and(|s| matches!(s.with_bytes(|b| b[39]), Ok(4)) && s.close().is_ok());
            if !ok {
                WRONG.fetch_add(1, Ordering::SeqCst);
            }
        }
        // SAFETY (test): the child only calls `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            let mut st = 0;
            unsafe { libc::waitpid(pid, &mut st, 0) };
        }
        let _ = tx.send(());
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        STUCK.fetch_add(1, Ordering::SeqCst);
    }
}

const R: HookRecorder = HookRecorder {
    on_register: |_| {},
    on_use: Some(cycle_elsewhere),
};

#[test]
fn recorder_calls_hold_no_library_lock() {
    metrics::set_global_recorder(R).expect("recorder");
    let o = Options::default();
    let mut facs = vec![
        ProtectedFactory::default(),
        ProtectedFactory::new(o.access(AccessPath::Window)).unwrap(),
        ProtectedFactory::new(o.layout(Layout::Guarded)).unwrap(),
        ProtectedFactory::new(o.layout(Layout::Pooled)).unwrap(),
        ProtectedFactory::new(o.backend(Backend::Anonymous).access(AccessPath::Window)).unwrap(),
    ];
    if securememory::memfd_secret_status().is_ok() {
        facs.push(ProtectedFactory::new(o.backend(Backend::MemfdSecret)).unwrap());
    }
    let _ = FACS.set(facs);
    ON.store(true, Ordering::SeqCst);
    for f in FACS.get().unwrap() {
        // Create (locked bytes, pool growth), access (window changes, a new
        // scratch on a fresh thread), close and drop (release, pool shrink).
        let held: Vec<_> = (0..3).map(|i| f.new(&mut [i + 1; 48]).unwrap()).collect();
        for (i, s) in held.iter().enumerate() {
            assert!(matches!(s.with_bytes(|b| b[0]), Ok(x) if x == i as u8 + 1));
        }
        std::thread::scope(|sc| {
            sc.spawn(|| held[0].with_bytes(|_| ()).unwrap());
        });
        held[1].close().unwrap();
        drop(held);
    }
    ON.store(false, Ordering::SeqCst);
    assert!(
        CALLS.load(Ordering::SeqCst) > 0,
        "the recorder was never called"
    );
    assert_eq!(
        STUCK.load(Ordering::SeqCst),
        0,
        "a recorder call held a lock another thread needed"
    );
    assert_eq!(
        WRONG.load(Ordering::SeqCst),
        0,
        "a cycle on another thread failed"
    );
}
