//! Attack on the purge handler's chain: a program handler that never
//! returns, but jumps out with `siglongjmp` (as interpreters and test
//! harnesses do to recover from a signal).
//!
//! - The thread's mask after the jump must be what the kernel would have
//!   left: with `sigsetjmp(env, 1)`, the saved mask; with `sigsetjmp(env,
//!   0)`, the mask the program's handler ran with (interrupted mask + its
//!   `sa_mask` + the signal), not every signal blocked as the purge runs.
//! - Later signals must still purge and reach the program's handler. The
//!   run that was jumped out of never cleared its "running" record; a later
//!   delivery of the same signal on the same thread whose frame lies below
//!   that stale record (the signal interrupts deeper code than the first
//!   time, on a thread with no alternate signal stack, as every thread that
//!   C code creates) must not be taken for a nested call and skipped: it
//!   would neither wipe nor call the program's handler.
//!
//! Each test runs in a child process of its own (handlers are process-wide).
// Linux only: glibc's `__sigsetjmp` and Linux's signal numbering.
#![cfg(target_os = "linux")]

mod common;

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use securememory::{purge_on_signals, Error, ProtectedFactory, SecretFactory};

/// glibc's `sigjmp_buf` is 200 bytes on x86_64 (and smaller elsewhere):
/// this is larger.
#[repr(C, align(16))]
struct JmpBuf(UnsafeCell<[u64; 64]>);

// SAFETY: one thread of the child uses it at a time (the one it raises on).
unsafe impl Sync for JmpBuf {}

static ENV: JmpBuf = JmpBuf(UnsafeCell::new([0; 64]));

extern "C" {
    /// `sigsetjmp` (a macro in glibc's header).
    fn __sigsetjmp(env: *mut u64, savemask: libc::c_int) -> libc::c_int;
    fn siglongjmp(env: *mut u64, val: libc::c_int) -> !;
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn jump_out(_: libc::c_int) {
    CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: `ENV` was filled by `__sigsetjmp` in `raise_and_land`, whose
    // frame is live (the signal was raised below it).
    unsafe { siglongjmp(ENV.0.get().cast(), 1) }
}

/// Raise SIGUSR1 from `depth` frames of 16 KiB below a `sigsetjmp`;
/// whether the program's handler jumped back here.
#[inline(never)]
fn raise_and_land(savemask: libc::c_int, depth: usize) -> bool {
    // SAFETY: the buffer is larger than glibc's sigjmp_buf; nothing between
    // the two returns of `__sigsetjmp` is kept in a variable of this frame.
    if unsafe { __sigsetjmp(ENV.0.get().cast(), savemask) } != 0 {
        return true;
    }
    raise_below(depth);
    false
}

#[inline(never)]
fn raise_below(depth: usize) {
    let pad = std::hint::black_box([0u8; 16 << 10]);
    if depth == 0 {
        // SAFETY: a signal to this thread.
        unsafe { libc::raise(libc::SIGUSR1) };
    } else {
        raise_below(depth - 1);
    }
    std::hint::black_box(&pad);
}

fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: plain old data; all-zero is valid.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in sigs {
        // SAFETY: as above; `s` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

fn blocked_now() -> Vec<libc::c_int> {
    // SAFETY: plain old data; all-zero is valid.
    let mut now: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: reads this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now) };
    // SAFETY: `now` is a valid sigset_t.
    (1..32)
        .filter(|&s| unsafe { libc::sigismember(&now, s) } == 1)
        .collect()
}

/// The program's SIGUSR1 handler jumps out; its `sa_mask` is SIGTERM.
fn setup() {
    // SAFETY: plain old data; all-zero is valid.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = jump_out as *const () as usize;
    act.sa_mask = sigset(&[libc::SIGTERM]);
    // SAFETY: installs a handler of this test's.
    assert_eq!(
        unsafe { libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut()) },
        0
    );
    purge_on_signals(&[libc::SIGUSR1]).unwrap();
}

/// Run `body` on a thread of its own with no alternate signal stack (the
/// handler's frames then lie on the thread's stack, below the code the
/// signal interrupted).
fn on_thread_without_altstack(body: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(4 << 20)
        .spawn(move || {
            // SAFETY: plain old data; all-zero is valid.
            let mut ss: libc::stack_t = unsafe { std::mem::zeroed() };
            ss.ss_flags = libc::SS_DISABLE;
            // SAFETY: disables this thread's alternate stack (std's stays
            // mapped and is unmapped at the thread's end).
            assert_eq!(unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) }, 0);
            body();
        })
        .unwrap()
        .join()
        .unwrap();
}

fn in_child(test: &str, body: impl FnOnce()) {
    common::child::in_child_within(test, Duration::from_secs(30), "hung", body);
}

fn purged_by_one_raise(savemask: libc::c_int, depth: usize, round: usize) {
    let s = ProtectedFactory::default().new(&mut [9u8; 32]).unwrap();
    assert!(
        raise_and_land(savemask, depth),
        "round {round}: the program's handler did not jump out (it was not called)"
    );
    assert_eq!(CALLS.load(Ordering::SeqCst), round, "round {round}");
    assert!(
        matches!(s.with_bytes(|_| ()), Err(Error::Purged)),
        "round {round}: the secret was not purged"
    );
}

#[test]
fn siglongjmp_with_saved_mask_restores_it_and_later_signals_purge() {
    in_child(
        "siglongjmp_with_saved_mask_restores_it_and_later_signals_purge",
        || {
            setup();
            on_thread_without_altstack(|| {
                let keep = sigset(&[libc::SIGUSR2]);
                // SAFETY: changes this thread's mask.
                unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &keep, std::ptr::null_mut()) };
                purged_by_one_raise(1, 0, 1);
                assert_eq!(blocked_now(), [libc::SIGUSR2], "mask after siglongjmp");
                // Deeper than the first time: this frame lies below the
                // record the first (jumped-out) run left.
                purged_by_one_raise(1, 4, 2);
                assert_eq!(blocked_now(), [libc::SIGUSR2], "mask after siglongjmp");
                // And shallow again.
                purged_by_one_raise(1, 0, 3);
            });
        },
    );
}

#[test]
fn longjmp_without_saved_mask_keeps_the_handlers_mask() {
    in_child("longjmp_without_saved_mask_keeps_the_handlers_mask", || {
        setup();
        on_thread_without_altstack(|| {
            let keep = sigset(&[libc::SIGUSR2]);
            // SAFETY: changes this thread's mask.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &keep, std::ptr::null_mut()) };
            purged_by_one_raise(0, 0, 1);
            // What the kernel leaves: interrupted (SIGUSR2) + sa_mask
            // (SIGTERM) + the signal (SIGUSR1); SIGINT and the rest open.
            let mut want = vec![libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM];
            want.sort();
            assert_eq!(blocked_now(), want, "mask after a jump that restores none");
        });
    });
}

/// The same on a thread with an alternate signal stack (std gives every
/// thread one): the purge handler runs there, at the same place each time.
#[test]
fn siglongjmp_on_the_alternate_stack_and_later_signals_purge() {
    in_child(
        "siglongjmp_on_the_alternate_stack_and_later_signals_purge",
        || {
            setup();
            std::thread::spawn(|| {
                purged_by_one_raise(1, 0, 1);
                purged_by_one_raise(1, 4, 2);
                purged_by_one_raise(1, 0, 3);
                assert!(blocked_now().is_empty(), "mask after siglongjmp");
            })
            .join()
            .unwrap();
        },
    );
}
