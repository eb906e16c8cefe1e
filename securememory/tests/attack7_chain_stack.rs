//! Attack on the purge handler's chain: the program's handler is called "as
//! the kernel would have called it" (README "Emergency purge"). The kernel
//! runs a handler installed without `SA_ONSTACK` on the interrupted
//! thread's own stack, however large; std gives every thread a small
//! alternate signal stack (a few KiB, for its stack-overflow report). A
//! program handler that needs more than that (a report formatted in a
//! buffer on the stack) must not overflow it because the purge handler,
//! which runs on the alternate stack, called it there.
//!
//! Each test runs in a child process of its own (handlers are process-wide).
// Linux only: Linux's signal numbering and `raise`.
#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use securememory::{purge_on_signals, Error, ProtectedFactory, SecretFactory};

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Uses 64 KiB of stack.
extern "C" fn big_frame(_: libc::c_int) {
    let buf = std::hint::black_box([1u8; 64 << 10]);
    std::hint::black_box(&buf);
    CALLS.fetch_add(1, Ordering::SeqCst);
}

fn run(flags: libc::c_int, purge: bool) {
    // SAFETY: plain old data; all-zero is valid.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = big_frame as *const () as usize;
    act.sa_flags = flags;
    // SAFETY: installs a handler of this test's.
    assert_eq!(
        unsafe { libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut()) },
        0
    );
    if purge {
        purge_on_signals(&[libc::SIGUSR1]).unwrap();
    }
    // A std thread: it has an alternate signal stack of a few KiB.
    std::thread::spawn(move || {
        let s = ProtectedFactory::default().new(&mut [4u8; 16]).unwrap();
        // SAFETY: a signal to this thread.
        unsafe { libc::raise(libc::SIGUSR1) };
        assert_eq!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)), purge);
    })
    .join()
    .unwrap();
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
}

#[test]
fn programs_handler_without_sa_onstack_runs_on_the_threads_stack() {
    common::child::in_child_within(
        "programs_handler_without_sa_onstack_runs_on_the_threads_stack",
        Duration::from_secs(30),
        "hung",
        || run(0, true),
    );
}

/// Control: without the purge handler the same handler runs fine.
#[test]
fn control_the_handler_alone_runs() {
    common::child::in_child_within(
        "control_the_handler_alone_runs",
        Duration::from_secs(30),
        "hung",
        || run(0, false),
    );
}
