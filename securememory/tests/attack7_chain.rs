//! Attacks on the purge handler's chain to the program's own handler
//! (README "Emergency purge": it is called "as the kernel would have called
//! it"):
//! - a one-shot (`SA_RESETHAND`) handler and the same signal sent to two
//!   threads at once: it runs at most once, the other delivery takes the
//!   default action (SIGTERM kills);
//! - a one-shot handler for a signal whose default is to ignore it: after
//!   it ran, the signal no longer interrupts a blocking `read` (the kernel
//!   would ignore it), even though the handler had no `SA_RESTART`;
//! - an `SA_SIGINFO` handler gets the kernel's siginfo (`raise`, `kill`,
//!   `sigqueue` and its value) and context (a mask it writes there is the
//!   mask after it returns);
//! - `signal()` (glibc: `SA_RESTART`): a `read` blocked in another thread is
//!   restarted; without `SA_RESTART`, it fails with `EINTR`;
//! - a signal the program ignores is left alone; `purge_on_signals` twice
//!   with a one-shot handler still runs it once.
//!
//! Each test runs in a child process of its own (handlers are process-wide).
// Linux only: Linux's signal numbering, siginfo layout and /proc.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use common::child::{done, is_child, Child};
use securememory::{purge_on_signals, Error, ProtectedFactory, SecretFactory};

static CALLS: AtomicUsize = AtomicUsize::new(0);

fn install_programs(sig: libc::c_int, handler: usize, flags: libc::c_int) {
    // SAFETY: plain old data; all-zero is valid.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    // SAFETY: installs a handler of this test's.
    assert_eq!(
        unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) },
        0
    );
}

fn in_child(test: &str, body: impl FnOnce()) {
    common::child::in_child_within(test, Duration::from_secs(30), "hung", body);
}

fn write_out(msg: &[u8]) {
    // SAFETY: write is async-signal-safe; `msg` is valid.
    unsafe { libc::write(1, msg.as_ptr().cast(), msg.len()) };
}

fn pause_briefly() {
    std::thread::sleep(Duration::from_millis(1));
}

/// One-shot: counts, says so, then waits a while for the other delivery
/// (which must kill the process meanwhile).
extern "C" fn one_shot_waits(_: libc::c_int) {
    CALLS.fetch_add(1, Ordering::SeqCst);
    write_out(b"ONE-SHOT-RAN\n");
    for _ in 0..1000 {
        if CALLS.load(Ordering::SeqCst) > 1 {
            break;
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        // SAFETY: nanosleep is async-signal-safe; `ts` is valid.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
}

const TWO: &str = "one_shot_handler_and_two_threads_at_once";

#[test]
fn one_shot_handler_and_two_threads_at_once() {
    if is_child(TWO) {
        install_programs(
            libc::SIGTERM,
            one_shot_waits as *const () as usize,
            libc::SA_RESETHAND,
        );
        purge_on_signals(&[libc::SIGTERM]).unwrap();
        let s = ProtectedFactory::default().new(&mut [7u8; 16]).unwrap();
        let ready = std::sync::Arc::new(std::sync::Barrier::new(3));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let ready = ready.clone();
                std::thread::spawn(move || {
                    ready.wait();
                    std::thread::park_timeout(Duration::from_secs(5));
                })
            })
            .collect();
        ready.wait();
        for t in &threads {
            // SAFETY: a live thread of this process.
            unsafe { libc::pthread_kill(t.as_pthread_t() as libc::pthread_t, libc::SIGTERM) };
        }
        for t in threads {
            t.join().unwrap();
        }
        println!(
            "SURVIVED: the one-shot handler ran {} times, secret purged: {}",
            CALLS.load(Ordering::SeqCst),
            matches!(s.with_bytes(|_| ()), Err(Error::Purged))
        );
        done();
        return;
    }
    let (status, out) = Child::new(TWO, TWO).run_merged(Duration::from_secs(30));
    assert!(
        out.matches("ONE-SHOT-RAN").count() <= 1,
        "the one-shot handler ran twice\n{out}"
    );
    assert!(!out.contains("SURVIVED"), "{out}");
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(libc::SIGTERM),
        "{out}"
    );
}

static SIGNO: AtomicI32 = AtomicI32::new(0);
static CODE: AtomicI32 = AtomicI32::new(0);
static PID: AtomicI32 = AtomicI32::new(0);
static VALUE: AtomicUsize = AtomicUsize::new(0);

/// Records the siginfo, and asks (through the context) for SIGUSR2 to be
/// blocked after it returns.
extern "C" fn with_info(_: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo for this delivery.
    let info = unsafe { &*info };
    SIGNO.store(info.si_signo, Ordering::SeqCst);
    CODE.store(info.si_code, Ordering::SeqCst);
    // SAFETY: every code this test sends fills the pid and value fields.
    PID.store(unsafe { info.si_pid() }, Ordering::SeqCst);
    // SAFETY: as above.
    VALUE.store(
        unsafe { info.si_value() }.sival_ptr as usize,
        Ordering::SeqCst,
    );
    if !ctx.is_null() {
        // SAFETY: the kernel's context for this delivery: the mask written
        // here is the thread's mask when the handler returns.
        unsafe {
            libc::sigaddset(
                &mut (*ctx.cast::<libc::ucontext_t>()).uc_sigmask,
                libc::SIGUSR2,
            )
        };
    }
    CALLS.fetch_add(1, Ordering::SeqCst);
}

fn blocked(sig: libc::c_int) -> bool {
    // SAFETY: plain old data; all-zero is valid.
    let mut now: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: reads this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now) };
    // SAFETY: a valid sigset_t.
    unsafe { libc::sigismember(&now, sig) == 1 }
}

fn unblock(sig: libc::c_int) {
    // SAFETY: plain old data; all-zero is valid.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid sigset_t; changes this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

fn wait_for_calls(n: usize) {
    for _ in 0..5000 {
        if CALLS.load(Ordering::SeqCst) >= n {
            return;
        }
        pause_briefly();
    }
    panic!("the program's handler was not called {n} times");
}

#[test]
fn siginfo_handler_gets_the_kernels_info_and_context() {
    in_child("siginfo_handler_gets_the_kernels_info_and_context", || {
        install_programs(
            libc::SIGUSR1,
            with_info as *const () as usize,
            libc::SA_SIGINFO,
        );
        purge_on_signals(&[libc::SIGUSR1]).unwrap();
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };

        let s = ProtectedFactory::default().new(&mut [1u8; 16]).unwrap();
        // SAFETY: a signal to this thread.
        unsafe { libc::raise(libc::SIGUSR1) };
        wait_for_calls(1);
        assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
        assert_eq!(SIGNO.load(Ordering::SeqCst), libc::SIGUSR1);
        assert_eq!(CODE.load(Ordering::SeqCst), libc::SI_TKILL, "raise");
        assert_eq!(PID.load(Ordering::SeqCst), me);
        assert!(
            blocked(libc::SIGUSR2),
            "the mask the handler wrote into its context was not applied"
        );
        unblock(libc::SIGUSR2);

        // SAFETY: a signal to this process (any thread that takes it).
        unsafe { libc::kill(me, libc::SIGUSR1) };
        wait_for_calls(2);
        assert_eq!(CODE.load(Ordering::SeqCst), libc::SI_USER, "kill");
        assert_eq!(PID.load(Ordering::SeqCst), me);

        let value = libc::sigval {
            sival_ptr: 0x5eed_usize as *mut libc::c_void,
        };
        // SAFETY: a queued signal to this process.
        assert_eq!(unsafe { libc::sigqueue(me, libc::SIGUSR1, value) }, 0);
        wait_for_calls(3);
        assert_eq!(CODE.load(Ordering::SeqCst), libc::SI_QUEUE, "sigqueue");
        assert_eq!(VALUE.load(Ordering::SeqCst), 0x5eed, "sigqueue's value");
        assert_eq!(PID.load(Ordering::SeqCst), me);
    });
}

extern "C" fn count(_: libc::c_int) {
    CALLS.fetch_add(1, Ordering::SeqCst);
}

/// A thread blocked in `read` on a pipe gets `sig`, then a byte arrives:
/// what its `read` returned (`Err` with the errno).
fn read_across_a_signal(sig: libc::c_int, calls_after: usize) -> Result<usize, i32> {
    let mut fds = [0; 2];
    // SAFETY: valid out-array of two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (r, w) = (fds[0], fds[1]);
    let tid = std::sync::Arc::new(AtomicI32::new(0));
    let t = {
        let tid = tid.clone();
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            let mut b = [0u8; 1];
            // SAFETY: `r` is open; `b` is a valid 1-byte buffer.
            let n = unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) };
            if n < 0 {
                Err(std::io::Error::last_os_error().raw_os_error().unwrap())
            } else {
                Ok(n as usize)
            }
        })
    };
    // Until the thread sits in read(2).
    let syscall = format!("{} ", libc::SYS_read);
    for _ in 0..5000 {
        let id = tid.load(Ordering::SeqCst);
        if id != 0 {
            let path = format!("/proc/self/task/{id}/syscall");
            if std::fs::read_to_string(path).is_ok_and(|s| s.starts_with(&syscall)) {
                break;
            }
        }
        pause_briefly();
    }
    // SAFETY: a live thread of this process.
    unsafe { libc::pthread_kill(t.as_pthread_t() as libc::pthread_t, sig) };
    wait_for_calls(calls_after);
    // The handler has run; give an interrupted read time to come back
    // before the byte arrives (a restarted one waits for it).
    for _ in 0..50 {
        if t.is_finished() {
            break;
        }
        pause_briefly();
    }
    // SAFETY: `w` is open; one byte from a valid buffer.
    assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
    let got = t.join().unwrap();
    // SAFETY: both descriptors are ours.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
    got
}

#[test]
fn signal_handler_with_sa_restart_restarts_a_blocked_read() {
    in_child(
        "signal_handler_with_sa_restart_restarts_a_blocked_read",
        || {
            // SAFETY: installs a handler of this test's (glibc: SA_RESTART).
            unsafe { libc::signal(libc::SIGUSR1, count as *const () as libc::sighandler_t) };
            purge_on_signals(&[libc::SIGUSR1]).unwrap();
            assert_eq!(read_across_a_signal(libc::SIGUSR1, 1), Ok(1));
        },
    );
}

#[test]
fn handler_without_sa_restart_interrupts_a_blocked_read() {
    in_child(
        "handler_without_sa_restart_interrupts_a_blocked_read",
        || {
            install_programs(libc::SIGUSR1, count as *const () as usize, 0);
            purge_on_signals(&[libc::SIGUSR1]).unwrap();
            assert_eq!(read_across_a_signal(libc::SIGUSR1, 1), Err(libc::EINTR));
        },
    );
}

/// A one-shot handler with no `SA_RESTART` for SIGWINCH (default: ignore):
/// after it ran, the kernel would ignore SIGWINCH, and a blocked `read`
/// would not see it.
#[test]
fn after_a_one_shot_handler_an_ignored_by_default_signal_does_not_interrupt() {
    in_child(
        "after_a_one_shot_handler_an_ignored_by_default_signal_does_not_interrupt",
        || {
            install_programs(
                libc::SIGWINCH,
                count as *const () as usize,
                libc::SA_RESETHAND,
            );
            purge_on_signals(&[libc::SIGWINCH]).unwrap();
            // SAFETY: a signal to this thread.
            unsafe { libc::raise(libc::SIGWINCH) };
            assert_eq!(CALLS.load(Ordering::SeqCst), 1);
            // The handler is not called again: wait for the purge's epoch
            // instead of a call (a secret made now is purged by it).
            let s = ProtectedFactory::default().new(&mut [1u8; 16]).unwrap();
            let got = read_across_a_signal_purging(libc::SIGWINCH, &s);
            assert_eq!(CALLS.load(Ordering::SeqCst), 1, "the one-shot ran again");
            assert_eq!(
                got,
                Ok(1),
                "SIGWINCH, ignored by default after the one-shot, interrupted read"
            );
        },
    );
}

/// [`read_across_a_signal`] for a signal that calls no handler of the
/// program: done once `s` is purged.
fn read_across_a_signal_purging(sig: libc::c_int, s: &securememory::Secret) -> Result<usize, i32> {
    let purged = || matches!(s.with_bytes(|_| ()), Err(Error::Purged));
    // Counts as "called" once the purge is seen.
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            for _ in 0..5000 {
                if purged() {
                    CALLS.fetch_add(1000, Ordering::SeqCst);
                    return;
                }
                pause_briefly();
            }
        });
        let got = read_across_a_signal(sig, 1001);
        watcher.join().unwrap();
        CALLS.fetch_sub(1000, Ordering::SeqCst);
        got
    })
}

#[test]
fn ignored_signal_is_left_alone() {
    in_child("ignored_signal_is_left_alone", || {
        // SAFETY: the program ignores SIGHUP (as nohup leaves it).
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        let _ = purge_on_signals(&[libc::SIGHUP]);
        let s = ProtectedFactory::default().new(&mut [2u8; 16]).unwrap();
        // SAFETY: a signal to this thread; ignored.
        unsafe { libc::raise(libc::SIGHUP) };
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), [2u8; 16]);
        // SAFETY: reads the disposition.
        let now = unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        assert_eq!(now, libc::SIG_IGN, "the ignored signal got a handler");
    });
}

const TWICE: &str = "purge_on_signals_twice_with_a_one_shot_handler";

#[test]
fn purge_on_signals_twice_with_a_one_shot_handler() {
    if is_child(TWICE) {
        install_programs(
            libc::SIGTERM,
            count as *const () as usize,
            libc::SA_RESETHAND,
        );
        purge_on_signals(&[libc::SIGTERM]).unwrap();
        purge_on_signals(&[libc::SIGTERM]).unwrap();
        // SAFETY: a signal to this thread.
        unsafe { libc::raise(libc::SIGTERM) };
        purge_on_signals(&[libc::SIGTERM]).unwrap();
        println!("FIRST-HANDLED {}", CALLS.load(Ordering::SeqCst));
        // SAFETY: as above: the default action now.
        unsafe { libc::raise(libc::SIGTERM) };
        println!("SURVIVED {}", CALLS.load(Ordering::SeqCst));
        done();
        return;
    }
    let run = Child::new(TWICE, TWICE).run();
    assert!(run.stdout.contains("FIRST-HANDLED 1"), "{}", run.describe());
    assert!(!run.stdout.contains("SURVIVED"), "{}", run.describe());
    assert_eq!(
        run.status.signal(),
        Some(libc::SIGTERM),
        "{}",
        run.describe()
    );
}

static SEEN_ERRNO: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_errno(_: libc::c_int) {
    // SAFETY: this thread's errno slot.
    SEEN_ERRNO.store(unsafe { *libc::__errno_location() }, Ordering::SeqCst);
    CALLS.fetch_add(1, Ordering::SeqCst);
}

/// The program's handler finds the interrupted code's `errno`, as the kernel
/// would have shown it, whatever the purge's system calls (some refused,
/// as `MADV_DONTDUMP` on `memfd_secret` pages) left there; and the
/// interrupted code finds it unchanged after.
#[test]
fn programs_handler_sees_the_interrupted_errno() {
    in_child("programs_handler_sees_the_interrupted_errno", || {
        install_programs(libc::SIGUSR1, note_errno as *const () as usize, 0);
        purge_on_signals(&[libc::SIGUSR1]).unwrap();
        let secrets: Vec<_> = common::configs::all()
            .iter()
            .map(|c| c.factory().new(&mut [3u8; 64]).unwrap())
            .collect();
        // SAFETY: this thread's errno slot; then a signal to this thread.
        let after = unsafe {
            *libc::__errno_location() = libc::ENOENT;
            libc::raise(libc::SIGUSR1);
            *libc::__errno_location()
        };
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert_eq!(
            after,
            libc::ENOENT,
            "errno changed for the interrupted code"
        );
        assert_eq!(
            SEEN_ERRNO.load(Ordering::SeqCst),
            libc::ENOENT,
            "the program's handler saw the purge's errno"
        );
        for s in &secrets {
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
        }
    });
}
