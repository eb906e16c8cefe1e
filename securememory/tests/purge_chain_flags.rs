//! `purge_on_signals` lets a signal take its course "as if the handler had
//! not been there": the program's own handler, installed before, is called
//! as the kernel would have called it. Two things the kernel does besides
//! calling it:
//! - `SA_RESETHAND` (a one-shot handler, as `sysv_signal` installs): the
//!   handler runs for the first signal only; the next one takes the
//!   default action (SIGTERM kills).
//! - The mask: the handler runs with the interrupted code's mask plus its
//!   own `sa_mask` plus the signal itself (unless `SA_NODEFER`), not with
//!   every signal blocked as the purge handler itself runs.
//!
//! Each test runs in a child process of its own (handlers are process-wide).
// Linux only: the children use Linux's signal numbering and `raise`.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::child::{done, is_child, Child};
use securememory::{purge_on_signals, Error, ProtectedFactory, SecretFactory};

static CALLS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count(_: libc::c_int) {
    CALLS.fetch_add(1, Ordering::SeqCst);
}

/// Install `handler` for `sig` with `flags` and `mask` as the program's own.
fn install_programs(sig: libc::c_int, handler: usize, flags: libc::c_int, mask: &[libc::c_int]) {
    // SAFETY: plain old data; all-zero is valid.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    // SAFETY: `sa_mask` is a valid sigset_t to fill.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    for &m in mask {
        // SAFETY: as above; `m` is a valid signal number.
        unsafe { libc::sigaddset(&mut act.sa_mask, m) };
    }
    // SAFETY: `handler` is an `extern "C" fn(c_int)` of this test's.
    assert_eq!(
        unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) },
        0
    );
}

const ONE_SHOT: &str = "one_shot_handler_runs_once_then_the_default_kills";
const SURVIVED: &str = "SURVIVED-THE-SECOND-SIGTERM";

#[test]
fn one_shot_handler_runs_once_then_the_default_kills() {
    if is_child(ONE_SHOT) {
        install_programs(
            libc::SIGTERM,
            count as *const () as usize,
            libc::SA_RESETHAND,
            &[],
        );
        purge_on_signals(&[libc::SIGTERM]).unwrap();
        let s = ProtectedFactory::default().new(&mut [7u8; 16]).unwrap();
        // SAFETY: a signal to this thread.
        unsafe { libc::raise(libc::SIGTERM) };
        assert_eq!(CALLS.load(Ordering::SeqCst), 1, "the handler ran once");
        assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
        println!("FIRST-HANDLED");
        // The kernel would have reset SIGTERM to its default: this kills.
        // SAFETY: as above.
        unsafe { libc::raise(libc::SIGTERM) };
        println!(
            "{SURVIVED}: the one-shot handler ran {} times",
            CALLS.load(Ordering::SeqCst)
        );
        done();
        return;
    }
    let run = Child::new(ONE_SHOT, ONE_SHOT).run();
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains("FIRST-HANDLED"), "{out}");
    assert!(
        !out.contains(SURVIVED),
        "SA_RESETHAND was not honoured\n{out}"
    );
    assert_eq!(run.status.signal(), Some(libc::SIGTERM), "{out}");
}

/// What the program's handler found blocked while it ran.
static SAW_OWN_MASK: AtomicBool = AtomicBool::new(false);
static SAW_SIGNAL: AtomicBool = AtomicBool::new(false);
static SAW_OTHER: AtomicBool = AtomicBool::new(false);

extern "C" fn look_at_mask(_: libc::c_int) {
    // SAFETY: plain old data; all-zero is valid.
    let mut now: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: reads this thread's mask (async-signal-safe).
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now) };
    // SAFETY: `now` is a valid sigset_t.
    let blocked = |sig| unsafe { libc::sigismember(&now, sig) } == 1;
    SAW_OWN_MASK.store(blocked(libc::SIGUSR2), Ordering::SeqCst);
    SAW_SIGNAL.store(blocked(libc::SIGHUP), Ordering::SeqCst);
    SAW_OTHER.store(blocked(libc::SIGINT), Ordering::SeqCst);
    CALLS.fetch_add(1, Ordering::SeqCst);
}

fn mask_seen(flags: libc::c_int) -> (bool, bool, bool) {
    install_programs(
        libc::SIGHUP,
        look_at_mask as *const () as usize,
        flags,
        &[libc::SIGUSR2],
    );
    purge_on_signals(&[libc::SIGHUP]).unwrap();
    // SAFETY: a signal to this thread.
    unsafe { libc::raise(libc::SIGHUP) };
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "the handler ran once");
    (
        SAW_OWN_MASK.load(Ordering::SeqCst),
        SAW_SIGNAL.load(Ordering::SeqCst),
        SAW_OTHER.load(Ordering::SeqCst),
    )
}

fn in_child(test: &str, body: impl FnOnce()) {
    common::child::in_child_within(test, std::time::Duration::from_secs(60), "hung", body);
}

#[test]
fn programs_handler_runs_with_its_own_mask() {
    in_child("programs_handler_runs_with_its_own_mask", || {
        let (own, signal, other) = mask_seen(0);
        assert!(own, "the handler's sa_mask (SIGUSR2) was not blocked");
        assert!(signal, "the signal itself was not blocked (no SA_NODEFER)");
        assert!(
            !other,
            "SIGINT, in no mask, was blocked: the handler ran with the purge's mask"
        );
    });
}

#[test]
fn programs_nodefer_handler_runs_with_the_signal_unblocked() {
    in_child(
        "programs_nodefer_handler_runs_with_the_signal_unblocked",
        || {
            let (own, signal, other) = mask_seen(libc::SA_NODEFER);
            assert!(own, "the handler's sa_mask (SIGUSR2) was not blocked");
            assert!(!signal, "SA_NODEFER: the signal itself was blocked");
            assert!(!other, "SIGINT, in no mask, was blocked");
        },
    );
}
