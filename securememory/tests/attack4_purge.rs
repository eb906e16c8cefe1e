//! Attacks on the emergency purge's promises (README "Emergency purge"):
//! a signal purge under a copy-path closure, a purge at the end of a deep
//! fork chain, `purge()` racing creation, access and drop on other
//! threads, the signal handler's disposition and `errno` handling, and
//! `purge_on_signals` given signals it cannot handle.
//!
//! Each test runs in a child process of its own (a purge is process-wide).
// Linux only: uses Linux interfaces (procfs, fork, capabilities, rlimits).
#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use securememory::{
    purge, purge_on_signals, stats, AccessPath, Backend, Error, Layout, Options, ProtectedFactory,
    SecretFactory,
};

const LIMIT: Duration = Duration::from_secs(60);

fn in_child(test: &str, body: impl FnOnce()) {
    common::child::in_child_within(test, LIMIT, "hung", body);
}

extern "C" fn keep_going(_: libc::c_int) {}

/// The program's own SIGHUP handler returns (the process lives on), and the
/// purge handler is chained in front of it.
fn purge_on_sighup_and_live_on() {
    // SAFETY: installs a handler of this test's that does nothing.
    unsafe { libc::signal(libc::SIGHUP, keep_going as *const () as libc::sighandler_t) };
    assert_eq!(purge_on_signals(&[libc::SIGHUP]).unwrap(), [libc::SIGHUP]);
}

fn factory(backend: Backend, layout: Layout, access: AccessPath) -> ProtectedFactory {
    ProtectedFactory::new(
        Options::default()
            .backend(backend)
            .layout(layout)
            .access(access),
    )
    .unwrap()
}

/// A copy-path closure running when a signal's purge arrives reads its
/// scratch buffer, which the purge replaces with zeros: the bytes it reads
/// afterwards are zeros, whole before. The README said copy-path accesses
/// "return `Error::Purged` instead of torn bytes"; that is so for the copy
/// only, not for a closure already running on the copy.
#[test]
fn copy_path_closure_running_sees_zeros_after_a_signal_purge() {
    in_child(
        "copy_path_closure_running_sees_zeros_after_a_signal_purge",
        || {
            purge_on_sighup_and_live_on();
            let f = factory(Backend::Memfd, Layout::Page, AccessPath::Copy);
            let bytes = vec![0xA5u8; 64];
            let s = Arc::new(f.new(&mut bytes.clone()).unwrap());
            let (inside, signalled) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
            let reader = {
                let (s, inside, signalled) = (s.clone(), inside.clone(), signalled.clone());
                std::thread::spawn(move || {
                    s.with_bytes(|b| {
                        let before = b.to_vec();
                        inside.wait();
                        signalled.wait();
                        (before, b.to_vec())
                    })
                })
            };
            inside.wait();
            // SAFETY: a signal to this thread; the purge handler runs, then
            // the program's, which returns.
            unsafe { libc::raise(libc::SIGHUP) };
            signalled.wait();
            let (before, after) = reader.join().unwrap().expect("the access itself succeeds");
            assert_eq!(before, bytes, "whole before the signal");
            assert!(
                after.iter().all(|&x| x == 0),
                "the closure's scratch was destroyed by the signal's purge"
            );
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
        },
    );
}

/// Fork generations the library keeps a list of live secrets for (as many
/// as have a memory file).
const GENERATIONS: usize = 16;

/// In the process at the end of a fork chain past the library's 16
/// generations, `purge()` still makes every access fail with
/// `Error::Purged`, but it closes nothing there: it has no list of that
/// process's secrets. Their memory is released at their close or drop (as
/// the README now says).
#[test]
fn purge_past_the_sixteenth_fork_generation() {
    in_child("purge_past_the_sixteenth_fork_generation", || {
        let f = factory(Backend::Anonymous, Layout::Page, AccessPath::Window);
        let mut depth = 0;
        // Each process makes a secret (so its fork is noticed: one more
        // generation), then forks the next and passes its status up.
        let mine = loop {
            let s = f.new(&mut [7u8; 32]).unwrap();
            if depth == GENERATIONS {
                break s;
            }
            // SAFETY: fork; the child goes on with this loop and `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid != 0 {
                let status = common::wait_status(pid);
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    100
                };
                if depth == 0 {
                    assert_eq!(code, 0, "the deepest process's check failed");
                    return;
                }
                common::run_and_exit(|| code);
            }
            drop(s);
            depth += 1;
        };
        common::run_and_exit(|| {
            let in_use = stats().in_use;
            let closed = purge();
            let purged = matches!(mine.with_bytes(|_| ()), Err(Error::Purged));
            eprintln!(
                "generation {depth}: purge closed {closed}, in use {in_use} -> {}",
                stats().in_use
            );
            // Exactly as documented: purged, not closed by the purge.
            let ok = purged && closed == 0 && stats().in_use == in_use;
            drop(mine);
            i32::from(!(ok && stats().in_use == in_use - 1))
        });
    });
}

/// `purge()` called again and again while other threads create, read and
/// drop secrets of several configurations, one of them also calling
/// `purge()`: every access sees its bytes whole or `Error::Purged`, a
/// secret made after a purge returned is readable until the next purge
/// starts, nothing hangs, a secret whose creation began after a purge
/// started is not closed by it (before: if it reached the list of live
/// secrets before that purge read the list, it was closed, and its
/// accesses failed with `Error::Closed` though the program never closed it), and once every secret is gone the secret count
/// and the locked bytes are back where they started.
#[test]
fn purge_racing_creation_access_and_drop() {
    in_child("purge_racing_creation_access_and_drop", || {
        let configs = [
            (Backend::Memfd, Layout::Page, AccessPath::Copy),
            (Backend::Memfd, Layout::Pooled, AccessPath::Copy),
            (Backend::Memfd, Layout::Guarded, AccessPath::Window),
            (Backend::Anonymous, Layout::Page, AccessPath::Window),
        ];
        // Warm each thread-independent once-per-process state first.
        drop(factory(configs[0].0, configs[0].1, configs[0].2).new(&mut [1; 8]));
        securememory::release_ready_pages();
        let start = stats();
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let (stop, bad) = (stop.clone(), bad.clone());
                let (b, l, a) = configs[t];
                std::thread::spawn(move || {
                    let f = factory(b, l, a);
                    let mut n = 0u8;
                    while !stop.load(Ordering::Relaxed) {
                        n = n.wrapping_add(1) | 1;
                        let want = vec![n; 40 + t];
                        let s = f.new(&mut want.clone()).unwrap();
                        for _ in 0..3 {
                            match s.with_bytes(|x| x == &want[..]) {
                                Ok(true) | Err(Error::Purged) => {}
                                other => {
                                    eprintln!("thread {t}: {other:?}");
                                    bad.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        if t == 3 && n % 8 == 1 {
                            purge();
                        }
                        if n % 3 == 0 {
                            let _ = s.close();
                        }
                    }
                })
            })
            .collect();
        for _ in 0..400 {
            purge();
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(
            bad.load(Ordering::Relaxed),
            0,
            "torn bytes or a wrong error"
        );
        securememory::release_ready_pages();
        let end = stats();
        assert_eq!(end.in_use, start.in_use, "secrets left in use");
        // The pool keeps its chunks (locked) for the next secrets.
        let pool = (end.pool_pages - start.pool_pages) * page_size();
        assert_eq!(
            end.bytes_locked,
            start.bytes_locked + pool,
            "locked bytes left: {start:?} -> {end:?}"
        );
        // A secret made now is an ordinary one.
        let s = factory(Backend::Memfd, Layout::Page, AccessPath::Copy)
            .new(&mut [9u8; 16])
            .unwrap();
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), [9u8; 16]);
    });
}

fn flags_of(sig: i32) -> libc::c_int {
    // SAFETY: plain old data; all-zero is valid.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the disposition.
    assert_eq!(
        unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) },
        0
    );
    old.sa_flags
}

/// A purge signal whose default action is to ignore it (SIGWINCH) lets the
/// process live on, and the handler is put back as it was installed: with
/// `SA_RESTART`, so the program's blocking system calls are not made to
/// fail with `EINTR` by every later such signal (with the default action
/// they never were).
#[test]
fn handler_put_back_after_a_default_ignored_signal_keeps_sa_restart() {
    in_child(
        "handler_put_back_after_a_default_ignored_signal_keeps_sa_restart",
        || {
            assert_eq!(
                purge_on_signals(&[libc::SIGWINCH]).unwrap(),
                [libc::SIGWINCH]
            );
            assert_ne!(flags_of(libc::SIGWINCH) & libc::SA_RESTART, 0);
            // SAFETY: a signal to this thread; its default is to ignore it.
            unsafe { libc::raise(libc::SIGWINCH) };
            assert!(securememory::purges_on_signal(libc::SIGWINCH));
            assert_ne!(
                flags_of(libc::SIGWINCH) & libc::SA_RESTART,
                0,
                "the handler came back without SA_RESTART"
            );
        },
    );
}

extern "C" fn clobber_errno(_: libc::c_int) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = libc::EBADF };
}

/// The handler leaves the interrupted code's `errno` as it was, even when
/// the program's chained handler changes it.
#[test]
fn signal_handler_keeps_errno() {
    in_child("signal_handler_keeps_errno", || {
        // SAFETY: installs a handler of this test's.
        unsafe {
            libc::signal(
                libc::SIGHUP,
                clobber_errno as *const () as libc::sighandler_t,
            )
        };
        purge_on_signals(&[libc::SIGHUP]).unwrap();
        let s = factory(Backend::Memfd, Layout::Page, AccessPath::Copy)
            .new(&mut [3u8; 8])
            .unwrap();
        // SAFETY: this thread's errno slot; then a signal to this thread.
        let after = unsafe {
            *libc::__errno_location() = libc::ENOENT;
            libc::raise(libc::SIGHUP);
            *libc::__errno_location()
        };
        assert_eq!(after, libc::ENOENT, "errno changed by the handler");
        assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
    });
}

/// Signals no handler can be installed for are refused with an error, not
/// a panic; the valid ones before them keep theirs; installing twice is
/// harmless (the program's handler is chained once, not to ourselves).
#[test]
fn purge_on_signals_refuses_what_it_cannot_handle() {
    in_child("purge_on_signals_refuses_what_it_cannot_handle", || {
        for bad in [0, -1, 65, 1000, libc::SIGKILL, libc::SIGSTOP] {
            assert!(
                matches!(purge_on_signals(&[bad]), Err(Error::Unsupported(_))),
                "signal {bad}"
            );
            assert!(!securememory::purges_on_signal(bad));
        }
        assert!(purge_on_signals(&[libc::SIGUSR1, libc::SIGKILL]).is_err());
        assert!(securememory::purges_on_signal(libc::SIGUSR1));
        // SAFETY: installs a handler of this test's (before ours: chained).
        unsafe { libc::signal(libc::SIGHUP, keep_going as *const () as libc::sighandler_t) };
        purge_on_signals(&[libc::SIGHUP]).unwrap();
        purge_on_signals(&[libc::SIGHUP]).unwrap();
        let s = factory(Backend::Anonymous, Layout::Page, AccessPath::Window)
            .new(&mut [3u8; 8])
            .unwrap();
        // SAFETY: a signal to this thread: purge, then the program's handler.
        unsafe { libc::raise(libc::SIGHUP) };
        assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
        drop(s);
        let t = factory(Backend::Anonymous, Layout::Page, AccessPath::Window)
            .new(&mut [4u8; 8])
            .unwrap();
        assert_eq!(t.with_bytes(|b| b.to_vec()).unwrap(), [4u8; 8]);
    });
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// The handler the program installed in front of ours, which chains to the
/// one it found (ours), as crash reporters do.
static FOUND: AtomicUsize = AtomicUsize::new(0);
static CHAINED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn chains_to_found(sig: libc::c_int) {
    CHAINED.fetch_add(1, Ordering::Relaxed);
    let found = FOUND.load(Ordering::Relaxed);
    if found > 1 {
        // SAFETY: the address `signal` returned: an SA_SIGINFO handler
        // (ours), called with no info and no context, as `signal` handlers
        // chain by hand.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(found) };
        f(sig, std::ptr::null_mut(), std::ptr::null_mut());
    }
}

/// `purge_on_signals` called again after the program put a handler of its
/// own in front of ours that chains to ours: the second call must not make
/// ours chain back to it (each would call the other until the stack
/// overflows). The signal purges, the program's handler runs, and the
/// process lives on.
#[test]
fn purge_on_signals_again_behind_a_handler_that_chains_to_ours() {
    in_child(
        "purge_on_signals_again_behind_a_handler_that_chains_to_ours",
        || {
            // SAFETY: installs a handler of this test's that returns.
            unsafe { libc::signal(libc::SIGHUP, keep_going as *const () as libc::sighandler_t) };
            purge_on_signals(&[libc::SIGHUP]).unwrap();
            // SAFETY: installs a handler of this test's; keeps ours to chain to.
            let ours = unsafe {
                libc::signal(
                    libc::SIGHUP,
                    chains_to_found as *const () as libc::sighandler_t,
                )
            };
            FOUND.store(ours, Ordering::Relaxed);
            // "Installing twice is harmless."
            purge_on_signals(&[libc::SIGHUP]).unwrap();
            let s = factory(Backend::Anonymous, Layout::Page, AccessPath::Window)
                .new(&mut [3u8; 8])
                .unwrap();
            // SAFETY: a signal to this thread.
            unsafe { libc::raise(libc::SIGHUP) };
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
            assert_eq!(
                CHAINED.load(Ordering::Relaxed),
                1,
                "the program's handler ran once"
            );
        },
    );
}

static ARMED: AtomicBool = AtomicBool::new(false);

fn panic_if_armed_name(_: &str) {
    panic_if_armed();
}

fn panic_if_armed() {
    if ARMED.load(Ordering::Relaxed) {
        panic!("recorder panics");
    }
}

/// The panic hook's purge runs while the thread is already panicking: a
/// panic there is not unwound but aborts the process ("panicked while
/// processing panic"). The library tolerates a panicking `metrics`
/// recorder everywhere else (its reports are shielded); here, a recorder
/// that panics must not abort the purge before every secret is closed, nor
/// turn a caught panic into an abort.
#[test]
fn panic_hook_purge_with_a_panicking_recorder() {
    in_child("panic_hook_purge_with_a_panicking_recorder", || {
        metrics::set_global_recorder(common::recorder::HookRecorder {
            on_register: panic_if_armed_name,
            on_use: Some(panic_if_armed),
        })
        .unwrap();
        securememory::purge_on_panic();
        let f = factory(Backend::Anonymous, Layout::Page, AccessPath::Window);
        let secrets: Vec<_> = (0..5).map(|i| f.new(&mut [i + 1; 16]).unwrap()).collect();
        let in_use = stats().in_use;
        ARMED.store(true, Ordering::Relaxed);
        let r = std::panic::catch_unwind(|| panic!("the program's panic"));
        ARMED.store(false, Ordering::Relaxed);
        assert!(r.is_err());
        for s in &secrets {
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
        }
        assert_eq!(
            stats().in_use,
            in_use - 5,
            "every secret closed by the hook"
        );
    });
}

/// Without the hook: a secret dropped while its thread unwinds reports its
/// close to a recorder that panics; shielded, the panic does not abort.
#[test]
fn drop_while_unwinding_with_a_panicking_recorder() {
    in_child("drop_while_unwinding_with_a_panicking_recorder", || {
        metrics::set_global_recorder(common::recorder::HookRecorder {
            on_register: panic_if_armed_name,
            on_use: Some(panic_if_armed),
        })
        .unwrap();
        let f = factory(Backend::Memfd, Layout::Pooled, AccessPath::Copy);
        let s = f.new(&mut [1; 16]).unwrap();
        let in_use = stats().in_use;
        ARMED.store(true, Ordering::Relaxed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _s = s;
            panic!("the program's panic");
        }));
        ARMED.store(false, Ordering::Relaxed);
        assert!(r.is_err());
        assert_eq!(stats().in_use, in_use - 1);
    });
}

/// Purge signals landing in a thread that is creating, reading and dropping
/// secrets while the registry of mappings grows (hundreds of live secrets,
/// several blocks of entries) and shrinks: no fault, no hang; every access
/// sees its bytes (zeros from the signal on, if it lands in the closure) or
/// `Error::Purged`; at the end the counts are back
/// and a new secret works.
#[test]
fn signals_while_the_registry_grows() {
    in_child("signals_while_the_registry_grows", || {
        use std::os::unix::thread::JoinHandleExt;
        purge_on_sighup_and_live_on();
        let start = stats().in_use;
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let fs = [
                    factory(Backend::Anonymous, Layout::Page, AccessPath::Window),
                    factory(Backend::Memfd, Layout::Page, AccessPath::Copy),
                    factory(Backend::Memfd, Layout::Pooled, AccessPath::Copy),
                ];
                let mut bad = 0;
                let mut round = 0u8;
                while !stop.load(Ordering::Relaxed) {
                    round = round.wrapping_add(1) | 1;
                    let held: Vec<_> = (0..300)
                        .map(|i| fs[i % 3].new(&mut [round; 24]).unwrap())
                        .collect();
                    for s in &held {
                        // A closure the signal lands in reads zeros from then on.
                        match s.with_bytes(|b| b.iter().all(|&x| x == round || x == 0)) {
                            Ok(true) | Err(Error::Purged) => {}
                            _ => bad += 1,
                        }
                    }
                }
                bad
            })
        };
        let thread = worker.as_pthread_t();
        for _ in 0..100 {
            // SAFETY: a signal to a thread of this process that is running.
            unsafe { libc::pthread_kill(thread, libc::SIGHUP) };
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(worker.join().unwrap(), 0, "torn bytes or a wrong error");
        assert_eq!(stats().in_use, start);
        let s = factory(Backend::Anonymous, Layout::Page, AccessPath::Window)
            .new(&mut [2u8; 8])
            .unwrap();
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), [2u8; 8]);
    });
}

/// `purges_on_signal` answers for the signal's disposition now: after the
/// program replaced the purge handler by one of its own (that does not
/// chain to it), the signal no longer purges, and it must say so.
#[test]
fn purges_on_signal_after_the_program_replaced_the_handler() {
    in_child(
        "purges_on_signal_after_the_program_replaced_the_handler",
        || {
            purge_on_signals(&[libc::SIGUSR2]).unwrap();
            assert!(securememory::purges_on_signal(libc::SIGUSR2));
            // SAFETY: installs a handler of this test's that does nothing.
            unsafe { libc::signal(libc::SIGUSR2, keep_going as *const () as libc::sighandler_t) };
            let s = factory(Backend::Anonymous, Layout::Page, AccessPath::Window)
                .new(&mut [3u8; 8])
                .unwrap();
            // SAFETY: a signal to this thread: only the program's handler runs.
            unsafe { libc::raise(libc::SIGUSR2) };
            assert!(s.with_bytes(|_| ()).is_ok(), "no purge ran");
            assert!(
                !securememory::purges_on_signal(libc::SIGUSR2),
                "says it purges on a signal that no longer does"
            );
        },
    );
}

/// After `purge()`, the process's locked memory (`VmLck`) and the library's
/// counts are where they were before the purged secrets were made.
#[test]
fn purge_gives_back_locked_memory() {
    in_child("purge_gives_back_locked_memory", || {
        let make = |seed: u8| -> Vec<securememory::Secret> {
            common::configs::all()
                .into_iter()
                .map(|c| {
                    let s = c.factory().new(&mut [seed; 40]).unwrap();
                    assert_eq!(s.with_bytes(|b| b[0]).unwrap(), seed);
                    s
                })
                .collect()
        };
        // Warm: scratch, memory file, pool chunks.
        drop(make(1));
        // Closed one-page secrets keep their pages ready (locked) for the
        // next ones: give them back so the figures compare like for like.
        securememory::release_ready_pages();
        let (lck, before) = (common::procfs::vm_lck_kib(), stats());
        let secrets = make(2);
        assert!(common::procfs::vm_lck_kib() > lck);
        assert_eq!(purge(), secrets.len());
        securememory::release_ready_pages();
        let after = stats();
        assert_eq!(common::procfs::vm_lck_kib(), lck, "VmLck back");
        assert_eq!(after.in_use, before.in_use);
        assert_eq!(after.bytes_locked, before.bytes_locked);
        assert_eq!(after.purged, before.purged + secrets.len() as u64);
    });
}

/// A `from_reader` reader that calls `purge()` (user code the library runs
/// in the middle of a creation, any lock it holds held): no deadlock, the
/// secrets made before are purged, and so is the one being made.
#[test]
fn purge_from_a_creation_reader() {
    in_child("purge_from_a_creation_reader", || {
        struct Purging;
        impl std::io::Read for Purging {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                purge();
                buf.fill(9);
                Ok(buf.len())
            }
        }
        for c in common::configs::all() {
            let f = c.factory();
            let before = f.new(&mut [1u8; 24]).unwrap();
            let made = f.from_reader(&mut Purging, 24).unwrap();
            assert!(
                matches!(before.with_bytes(|_| ()), Err(Error::Purged)),
                "{}",
                c.name
            );
            assert!(
                matches!(made.with_bytes(|_| ()), Err(Error::Purged)),
                "{}",
                c.name
            );
            let in_use = stats().in_use;
            drop(made);
            assert_eq!(stats().in_use, in_use - 1, "{}", c.name);
        }
    });
}

/// The panic hook runs on the panicking thread before it unwinds, so while
/// it still holds whatever it locked. Another thread inside an access that
/// waits for one of those locks cannot end its access until the panic
/// unwinds: a hook that waited for that access (as `purge()` waits) would
/// wait forever, turning a panic the program catches into a hang. The
/// secret is released as that access ends instead.
#[test]
fn panic_hook_does_not_wait_for_an_access_waiting_on_the_panicking_thread() {
    in_child(
        "panic_hook_does_not_wait_for_an_access_waiting_on_the_panicking_thread",
        || {
            use std::sync::Mutex;
            securememory::purge_on_panic();
            let f = factory(Backend::Anonymous, Layout::Page, AccessPath::Window);
            let s = Arc::new(f.new(&mut [6u8; 16]).unwrap());
            let other = f.new(&mut [7u8; 16]).unwrap();
            let in_use = stats().in_use;
            let lock = Arc::new(Mutex::new(()));
            let held = lock.lock().unwrap();
            let inside = Arc::new(Barrier::new(2));
            let t = {
                let (s, lock, inside) = (s.clone(), lock.clone(), inside.clone());
                std::thread::spawn(move || {
                    s.with_bytes(|b| {
                        inside.wait();
                        // Waits for the panicking thread's lock.
                        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
                        b.to_vec()
                    })
                })
            };
            inside.wait();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _held = held;
                panic!("the program's panic, with its lock held");
            }));
            assert!(r.is_err());
            assert!(matches!(other.with_bytes(|_| ()), Err(Error::Purged)));
            assert_eq!(t.join().unwrap().unwrap(), [6u8; 16], "whole bytes");
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
            assert_eq!(stats().in_use, in_use - 2, "both released");
        },
    );
}
