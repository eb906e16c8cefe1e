//! Attack on the purge handler's chain: since the program's handler runs
//! with the mask the kernel would give it (b92bfe1), another purge signal
//! can arrive while it runs (before, every signal was blocked until the
//! purge handler returned). Ours then runs nested, for another signal.
//!
//! The program put a handler of its own for SIGTERM in front of ours that
//! chains back to ours (as crash reporters do), then called
//! `purge_on_signals` again (attack4_purge.rs covers this alone: the call
//! back into ours must return at once). Here SIGTERM arrives while the
//! program's SIGHUP handler runs: the call back into ours must still
//! return at once, not call the program's handler again and again until
//! the stack overflows.
//!
//! Each test runs in a child process of its own (handlers are process-wide).
// Linux only: Linux's signal numbering and `raise`.
#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use securememory::{purge_on_signals, Error, ProtectedFactory, SecretFactory};

static FOUND: AtomicUsize = AtomicUsize::new(0);
static CHAINED: AtomicUsize = AtomicUsize::new(0);
static HUP: AtomicUsize = AtomicUsize::new(0);

extern "C" fn keep_going(_: libc::c_int) {}

/// The program's SIGTERM handler in front of ours: chains to what it found.
extern "C" fn chains_to_found(sig: libc::c_int) {
    if CHAINED.fetch_add(1, Ordering::SeqCst) > 10 {
        let msg = b"RECURSION: the program's handler was called back over and over\n";
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(3);
        }
    }
    let found = FOUND.load(Ordering::SeqCst);
    if found > 1 {
        // SAFETY: the address `signal` returned: ours, an SA_SIGINFO
        // handler, called with no info and no context as `signal`
        // handlers chain by hand.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(found) };
        f(sig, std::ptr::null_mut(), std::ptr::null_mut());
    }
}

/// The program's SIGHUP handler: a SIGTERM arrives while it runs.
extern "C" fn hup_then_term(_: libc::c_int) {
    HUP.fetch_add(1, Ordering::SeqCst);
    // SAFETY: a signal to this thread (SIGTERM is in no mask here).
    unsafe { libc::raise(libc::SIGTERM) };
}

#[test]
fn other_purge_signal_inside_the_programs_handler_with_a_chain_back() {
    common::child::in_child_within(
        "other_purge_signal_inside_the_programs_handler_with_a_chain_back",
        Duration::from_secs(30),
        "hung",
        || {
            // SAFETY: installs handlers of this test's.
            unsafe {
                libc::signal(
                    libc::SIGHUP,
                    hup_then_term as *const () as libc::sighandler_t,
                );
                libc::signal(libc::SIGTERM, keep_going as *const () as libc::sighandler_t);
            }
            purge_on_signals(&[libc::SIGHUP, libc::SIGTERM]).unwrap();
            // SAFETY: installs a handler of this test's; keeps ours to chain to.
            let ours = unsafe {
                libc::signal(
                    libc::SIGTERM,
                    chains_to_found as *const () as libc::sighandler_t,
                )
            };
            FOUND.store(ours, Ordering::SeqCst);
            purge_on_signals(&[libc::SIGTERM]).unwrap();
            let s = ProtectedFactory::default().new(&mut [5u8; 16]).unwrap();
            // SAFETY: a signal to this thread.
            unsafe { libc::raise(libc::SIGHUP) };
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
            assert_eq!(HUP.load(Ordering::SeqCst), 1, "the SIGHUP handler ran once");
            assert_eq!(
                CHAINED.load(Ordering::SeqCst),
                1,
                "the program's SIGTERM handler ran once"
            );
        },
    );
}

static NODEFER_CALLS: AtomicUsize = AtomicUsize::new(0);

/// An `SA_NODEFER` handler that raises its own signal once more while it
/// runs: the kernel delivers it at once, nested.
extern "C" fn raise_again(sig: libc::c_int) {
    if NODEFER_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        // SAFETY: a signal to this thread.
        unsafe { libc::raise(sig) };
    }
}

fn install_programs(sig: libc::c_int, flags: libc::c_int) {
    // SAFETY: plain old data; all-zero is valid.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = raise_again as *const () as usize;
    act.sa_flags = flags;
    // SAFETY: installs a handler of this test's.
    assert_eq!(
        unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) },
        0
    );
}

/// `SA_NODEFER`: the same signal delivered while the program's handler runs
/// calls it again, nested, as the kernel would.
#[test]
fn nodefer_handler_is_called_again_for_a_nested_delivery() {
    common::child::in_child_within(
        "nodefer_handler_is_called_again_for_a_nested_delivery",
        Duration::from_secs(30),
        "hung",
        || {
            install_programs(libc::SIGUSR1, libc::SA_NODEFER);
            purge_on_signals(&[libc::SIGUSR1]).unwrap();
            // SAFETY: a signal to this thread.
            unsafe { libc::raise(libc::SIGUSR1) };
            assert_eq!(
                NODEFER_CALLS.load(Ordering::SeqCst),
                2,
                "the nested delivery did not reach the program's handler"
            );
        },
    );
}

const SYSV: &str = "sysv_one_shot_handler_nested_delivery_takes_the_default";
const SYSV_SURVIVED: &str = "SURVIVED-THE-NESTED-SIGTERM";

/// `sysv_signal` (`SA_RESETHAND | SA_NODEFER`): the same signal delivered
/// while the one-shot handler runs takes the default action: SIGTERM kills.
#[test]
fn sysv_one_shot_handler_nested_delivery_takes_the_default() {
    if common::child::is_child(SYSV) {
        install_programs(libc::SIGTERM, libc::SA_RESETHAND | libc::SA_NODEFER);
        purge_on_signals(&[libc::SIGTERM]).unwrap();
        // SAFETY: a signal to this thread.
        unsafe { libc::raise(libc::SIGTERM) };
        println!(
            "{SYSV_SURVIVED}: the handler ran {} times",
            NODEFER_CALLS.load(Ordering::SeqCst)
        );
        common::child::done();
        return;
    }
    let run = common::child::Child::new(SYSV, SYSV).run();
    assert!(!run.stdout.contains(SYSV_SURVIVED), "{}", run.describe());
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&run.status),
        Some(libc::SIGTERM),
        "{}",
        run.describe()
    );
}

static FOUND_INFO: AtomicUsize = AtomicUsize::new(0);
static SIGINT_BLOCKED_AFTER: AtomicUsize = AtomicUsize::new(0);

/// A program handler put in front of ours after `purge_on_signals`, which
/// chains to ours with its own arguments and then goes on: its mask after
/// the call must be its own again.
extern "C" fn chains_then_looks(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    let found = FOUND_INFO.load(Ordering::SeqCst);
    // SAFETY: the SA_SIGINFO handler `sigaction` returned (ours).
    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
        unsafe { std::mem::transmute(found) };
    f(sig, info, ctx);
    // SAFETY: plain old data; all-zero is valid.
    let mut now: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: reads this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now) };
    // SAFETY: a valid sigset_t.
    let blocked = unsafe { libc::sigismember(&now, libc::SIGINT) } == 1;
    SIGINT_BLOCKED_AFTER.store(1 + blocked as usize, Ordering::SeqCst);
}

#[test]
fn direct_call_into_ours_gives_the_callers_mask_back() {
    common::child::in_child_within(
        "direct_call_into_ours_gives_the_callers_mask_back",
        Duration::from_secs(30),
        "hung",
        || {
            // SAFETY: installs a handler of this test's (ours chains to it).
            unsafe { libc::signal(libc::SIGUSR2, keep_going as *const () as libc::sighandler_t) };
            purge_on_signals(&[libc::SIGUSR2]).unwrap();
            // SAFETY: plain old data; all-zero is valid.
            let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
            act.sa_sigaction = chains_then_looks as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO;
            // SAFETY: plain old data; all-zero is valid.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: installs a handler of this test's in front of ours.
            assert_eq!(unsafe { libc::sigaction(libc::SIGUSR2, &act, &mut old) }, 0);
            FOUND_INFO.store(old.sa_sigaction, Ordering::SeqCst);
            let s = ProtectedFactory::default().new(&mut [5u8; 16]).unwrap();
            // SAFETY: a signal to this thread.
            unsafe { libc::raise(libc::SIGUSR2) };
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
            assert_eq!(
                SIGINT_BLOCKED_AFTER.load(Ordering::SeqCst),
                1,
                "after calling ours, the program's handler had SIGINT blocked (2) or did not run (0)"
            );
        },
    );
}
