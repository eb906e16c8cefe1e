//! Accesses that need no window (the copy path, a keyed pool slot) tell
//! `close` they are in flight through a slot of their own thread, not the
//! secret's shared state word (issue 12, item 3). What must still hold:
//!
//! - `close` waits for every such access in flight: a thread parked inside
//!   `with_bytes` (also nested eight deep on one secret, past the seven
//!   slots a thread has, so the deepest counts in the shared word) keeps
//!   `close` from returning until it is let go, on every copy-path layout;
//! - more threads than there are slot records (1024) all reading one secret
//!   while it is closed: every read is the bytes or `Closed`, and close
//!   returns;
//! - a fork child inherits the slots of the parent's threads, which do not
//!   exist in it: with a parent thread parked inside an access, the child
//!   (made by glibc's `fork` or a raw `fork`/`clone` system call) closes the
//!   parent's secret at once, frees it, and makes, reads and closes secrets
//!   of its own (which may land at the freed secret's address) without
//!   waiting. A hang there is caught by an alarm in the child.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;
mod support_proc;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

use common::child::{describe, in_worker};
use securememory::{
    Error, Layout, Options, PoolProtection, ProtectedFactory, Secret, SecretFactory,
};

/// Every test secret's bytes.
const KEY: &[u8; 32] = b"0123456789abcdef0123456789ABCDEF";

/// The copy-path configurations (the keyed pool where the machine has keys).
fn copy_factories() -> Vec<(&'static str, ProtectedFactory)> {
    let mut v = vec![
        ("memfd/page", ProtectedFactory::default()),
        (
            "memfd/guarded",
            ProtectedFactory::new(Options::default().layout(Layout::Guarded)).unwrap(),
        ),
        (
            "memfd/pooled",
            ProtectedFactory::new(Options::default().layout(Layout::Pooled)).unwrap(),
        ),
    ];
    if securememory::protection_keys_status().is_ok() {
        v.push((
            "memfd/pooled-pkey",
            ProtectedFactory::new(
                Options::default()
                    .layout(Layout::Pooled)
                    .pool_protection(PoolProtection::ProtectionKey),
            )
            .unwrap(),
        ));
    } else {
        eprintln!("SKIPPED: pooled-pkey case: no protection keys here");
    }
    v
}

/// `depth` accesses of `s` nested on this thread; the deepest marks
/// `inside` and waits for `go`.
fn park_inside(s: &Secret, depth: usize, inside: &AtomicBool, go: &AtomicBool) {
    s.with_bytes(|b| {
        assert_eq!(b, KEY);
        if depth > 1 {
            park_inside(s, depth - 1, inside, go);
        } else {
            inside.store(true, SeqCst);
            while !go.load(SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
        }
    })
    .unwrap();
}

/// Close `s` on another thread while this one is parked `depth` deep
/// inside an access of it; the close must not return before the access is
/// let go.
fn close_waits_for(name: &str, s: &Secret, depth: usize) {
    let inside = AtomicBool::new(false);
    let go = AtomicBool::new(false);
    let closed = AtomicBool::new(false);
    thread::scope(|sc| {
        let reader = sc.spawn(|| park_inside(s, depth, &inside, &go));
        while !inside.load(SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        let closer = sc.spawn(|| {
            s.close().unwrap();
            closed.store(true, SeqCst);
        });
        // Time for a close that does not wait to return (not a timing
        // assertion: a close that waits never sets `closed` here).
        while !s.is_closed() {
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(50));
        let returned_early = closed.load(SeqCst);
        // Let go before any assertion: a failing one must not leave the
        // scope waiting on a parked thread.
        go.store(true, SeqCst);
        reader.join().unwrap();
        closer.join().unwrap();
        assert!(
            !returned_early,
            "{name}, {depth} deep: close returned while an access was in flight"
        );
    });
    assert!(closed.load(SeqCst));
    assert!(matches!(s.with_bytes(|_| ()), Err(Error::Closed)));
}

#[test]
fn close_waits_for_a_parked_copy_access() {
    for (name, f) in copy_factories() {
        for depth in [1, 8] {
            let s = f.new(&mut KEY.to_vec()).unwrap();
            close_waits_for(name, &s, depth);
        }
    }
}

#[test]
fn more_threads_than_slot_records_read_while_closing() {
    const THREADS: usize = 1100;
    let f = ProtectedFactory::default();
    let s = f.new(&mut KEY.to_vec()).unwrap();
    let started = AtomicUsize::new(0);
    let closed = AtomicBool::new(false);
    thread::scope(|sc| {
        for _ in 0..THREADS {
            sc.spawn(|| {
                let mut out = [0u8; 32];
                started.fetch_add(1, SeqCst);
                loop {
                    // Read before the access: a read that began after close
                    // returned must fail (one that ended just before may
                    // see the flag set once it returns).
                    let began_after_close = closed.load(SeqCst);
                    // The reader copies into `out` with no scratch buffer.
                    match s.reader().read_exact(&mut out) {
                        Ok(()) => {
                            assert_eq!(&out, KEY);
                            assert!(!began_after_close, "a read began after close returned");
                        }
                        Err(e) => {
                            assert!(
                                matches!(common::library_error(&e), Some(Error::Closed)),
                                "{e}"
                            );
                            return;
                        }
                    }
                    thread::yield_now();
                }
            });
        }
        while started.load(SeqCst) < THREADS {
            thread::sleep(Duration::from_millis(1));
        }
        s.close().unwrap();
        closed.store(true, SeqCst);
    });
}

/// How the child is made.
#[derive(Clone, Copy, Debug)]
enum Fork {
    /// glibc's `fork` (at-fork handlers run).
    Libc,
    /// `syscall(SYS_fork)`: no at-fork handler.
    #[cfg(target_arch = "x86_64")]
    Raw,
    /// `syscall(SYS_clone, SIGCHLD, 0, ...)`: no at-fork handler.
    RawClone,
}

fn fork_and_wait(kind: Fork, child: impl FnOnce() -> i32) -> ExitStatus {
    if let Fork::Libc = kind {
        return support_proc::fork_and_wait(child);
    }
    // SAFETY: both make a copy of this process, as fork(2) does; the child
    // runs only `child` and `_exit`s. With a zero stack argument the clone
    // child runs on its copy of this stack, like a fork child.
    let pid = unsafe {
        match kind {
            #[cfg(target_arch = "x86_64")]
            Fork::Raw => libc::syscall(libc::SYS_fork),
            _ => libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0),
        }
    };
    assert!(pid >= 0, "{kind:?}: {}", std::io::Error::last_os_error());
    if pid == 0 {
        common::run_and_exit(child);
    }
    ExitStatus::from_raw(common::wait_status(pid as libc::pid_t))
}

/// In the child: the parent's secret `parked` (a parent thread is inside
/// an access of it) closes at once; freed, its address may go to a secret
/// of the child's, which closes without waiting on the parent's slot.
fn child_closes_without_waiting(parked: *mut Secret) -> i32 {
    // A hang is a failure, not a stuck test run.
    // SAFETY: alarm only arms a timer; SIGALRM's default action ends the child.
    unsafe { libc::alarm(20) };
    // SAFETY: `parked` came from `Box::into_raw` in the parent; in the child
    // the parent's other threads (the one using it) do not exist.
    let parked = unsafe { Box::from_raw(parked) };
    if !matches!(parked.with_bytes(|_| ()), Err(Error::Forked)) {
        return 2;
    }
    if parked.close().is_err() {
        return 3;
    }
    drop(parked);
    for (_, f) in copy_factories() {
        for _ in 0..8 {
            let s = Box::new(f.new(&mut KEY.to_vec()).unwrap());
            let ok = s.with_bytes(|b| s.with_bytes(|c| b == c).unwrap()).unwrap();
            if !ok {
                return 4;
            }
            if s.close().is_err() {
                return 5;
            }
        }
    }
    0
}

#[test]
fn fork_child_close_ignores_the_parent_threads_slots() {
    in_worker(
        "fork_child_close_ignores_the_parent_threads_slots",
        "fork-slots",
        &[],
        || {
            let kinds = [
                Fork::Libc,
                #[cfg(target_arch = "x86_64")]
                Fork::Raw,
                Fork::RawClone,
            ];
            for kind in kinds {
                for (name, f) in copy_factories() {
                    let s = Box::into_raw(Box::new(f.new(&mut KEY.to_vec()).unwrap()));
                    let shared = s as usize;
                    let inside = AtomicBool::new(false);
                    let go = AtomicBool::new(false);
                    thread::scope(|sc| {
                        // SAFETY: the box is freed only after this scope.
                        let secret = unsafe { &*(shared as *const Secret) };
                        let parked = sc.spawn(|| park_inside(secret, 1, &inside, &go));
                        while !inside.load(SeqCst) {
                            thread::sleep(Duration::from_millis(1));
                        }
                        let status = fork_and_wait(kind, || child_closes_without_waiting(s));
                        go.store(true, SeqCst);
                        parked.join().unwrap();
                        assert!(
                            status.success(),
                            "{kind:?} {name}: child {}",
                            describe(status)
                        );
                    });
                    // SAFETY: from `Box::into_raw` above; no borrow of it is left.
                    let s = unsafe { Box::from_raw(s) };
                    s.close().unwrap();
                }
            }
        },
    );
}
