//! Guarantee: `purge()` wipes and closes every live secret of the process,
//! of every backend, layout and access path; every later access returns
//! `Error::Purged`; accesses in flight see their bytes whole or that error;
//! the memory reads as zeros when released (test observation point); a purge
//! from inside an access closure or from a metrics recorder reporting a
//! close completes; the panic hook purges before the panic unwinds.
//!
//! Each test runs in a child process of its own (a purge is process-wide),
//! killed if it hangs (a purge that waited for itself).

mod common;

use std::cell::Cell;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::configs;
use securememory::{purge, stats, test_hooks, Error, Secret, SecretFactory};

const LIMIT: Duration = Duration::from_secs(180);

/// Run `body` in a child of its own, which must finish within [`LIMIT`].
fn in_child(test: &str, body: impl FnOnce()) {
    common::child::in_child_within(test, LIMIT, "a purge waited forever", body);
}

/// Recognisable non-zero bytes, different per secret.
fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 251 + 1) as u8)
        .collect()
}

/// One secret per configuration and size: a small one, and one larger than
/// the scratch (the window on the copy path; own pages on the pooled layout).
fn secrets_everywhere() -> Vec<(String, Secret, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, config) in configs::all().into_iter().enumerate() {
        let factory = config.factory();
        for (j, len) in [32, securememory::scratch_capacity() + 100]
            .into_iter()
            .enumerate()
        {
            let bytes = pattern(2 * i + j, len);
            let secret = factory.new(&mut bytes.clone()).expect("create");
            out.push((format!("{}-{len}", config.name), secret, bytes));
        }
    }
    out
}

fn assert_purged(name: &str, s: &Secret) {
    assert!(
        matches!(s.with_bytes(|_| ()), Err(Error::Purged)),
        "{name}: access after purge"
    );
    let e = s
        .reader()
        .read(&mut [0u8; 8])
        .expect_err("read after purge");
    assert!(
        matches!(common::library_error(&e), Some(Error::Purged)),
        "{name}: read after purge: {e}"
    );
    assert!(s.is_closed(), "{name}: not closed");
    assert!(s.close().is_ok(), "{name}: close after purge");
}

fn assert_zeros(wiped: &[Vec<u8>]) {
    for (i, w) in wiped.iter().enumerate() {
        assert!(
            w.iter().all(|&b| b == 0),
            "wipe {i} ({} bytes) left non-zero bytes",
            w.len()
        );
    }
}

/// Every secret, read by four threads in a loop (whole bytes or `Purged`,
/// nothing else), is purged by one call; each release reads as zeros.
#[test]
fn purge_wipes_and_closes_every_secret_under_readers() {
    in_child("purge_wipes_and_closes_every_secret_under_readers", || {
        let secrets = secrets_everywhere();
        let reads = AtomicUsize::new(0);
        let before = stats();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (secrets, reads) = (&secrets, &reads);
                scope.spawn(move || loop {
                    let mut live = 0;
                    for (name, s, bytes) in secrets.iter().skip(t) {
                        let mut buf = vec![0u8; bytes.len()];
                        match s.with_bytes(|b| b == &bytes[..]) {
                            Ok(true) => live += 1,
                            Ok(false) => panic!("{name}: an access saw torn bytes"),
                            Err(Error::Purged) => {}
                            Err(e) => panic!("{name}: {e}"),
                        }
                        match s.reader().read_exact(&mut buf) {
                            Ok(()) => assert_eq!(buf, *bytes, "{name}: a read saw torn bytes"),
                            Err(e) => assert!(
                                matches!(common::library_error(&e), Some(Error::Purged)),
                                "{name}: {e}"
                            ),
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    if live == 0 {
                        return;
                    }
                });
            }
            while reads.load(Ordering::Relaxed) < 200 {
                std::thread::yield_now();
            }
            test_hooks::collect_wipes();
            let n = purge();
            let wiped = test_hooks::take_all_wiped();
            // A reader whose access ended after the purge began may have
            // released a secret itself (counted in `stats` too, below).
            assert!(
                n > 0 && n <= secrets.len(),
                "secrets purged by this call: {n}"
            );
            assert!(
                wiped.len() >= n,
                "{} releases recorded for {n} secrets",
                wiped.len()
            );
            assert_zeros(&wiped);
        });
        for (name, s, _) in &secrets {
            assert_purged(name, s);
        }
        let after = stats();
        assert_eq!(after.purged - before.purged, secrets.len() as u64);
        assert_eq!(after.in_use, before.in_use - secrets.len() as u64);
        // A purge is an event, not a mode: new secrets work.
        let fresh = configs::all()[0].factory().new(&mut [7u8; 16]).unwrap();
        assert_eq!(fresh.with_bytes(|b| b[0]).unwrap(), 7);
        println!("purged {} secrets under 4 reading threads", secrets.len());
    });
}

/// `purge()` from inside an access closure: the closure keeps its bytes,
/// the other secrets are wiped at once, and the accessed one when its
/// access ends (on every configuration).
#[test]
fn purge_from_inside_an_access() {
    in_child("purge_from_inside_an_access", || {
        for config in configs::all() {
            let factory = config.factory();
            let bytes = pattern(3, 32);
            let inner = factory.new(&mut bytes.clone()).unwrap();
            let other = factory.new(&mut pattern(4, 32)).unwrap();
            test_hooks::collect_wipes();
            let (intact, n) = inner
                .with_bytes(|b| {
                    let n = purge();
                    (b == &bytes[..], n)
                })
                .unwrap_or_else(|e| panic!("{}: {e}", config.name));
            let wiped = test_hooks::take_all_wiped();
            assert!(intact, "{}: the closure's bytes changed", config.name);
            assert_eq!(
                n, 1,
                "{}: only the other secret closes at once",
                config.name
            );
            assert!(wiped.len() >= 2, "{}: both released", config.name);
            assert_zeros(&wiped);
            assert_purged(config.name, &inner);
            assert_purged(config.name, &other);
        }
    });
}

static ARMED: AtomicBool = AtomicBool::new(false);
static NESTED: AtomicUsize = AtomicUsize::new(0);
static COUNTER_SEEN: AtomicBool = AtomicBool::new(false);

fn purge_once(name: &str) {
    if name == "secret.purged" {
        COUNTER_SEEN.store(true, Ordering::Release);
    }
    // The locked-bytes gauge is reported inside a close's release.
    if name == "secret.locked.bytes" && ARMED.swap(false, Ordering::AcqRel) {
        NESTED.store(purge() + 1, Ordering::Release);
    }
}

/// A metrics recorder that calls `purge()` while a close is releasing its
/// secret (the close is this thread's, further up the stack): completes,
/// and purges everything else; the recorder hears `secret.purged`.
#[test]
fn purge_from_a_recorder_inside_a_close() {
    in_child("purge_from_a_recorder_inside_a_close", || {
        // The close below gives its locked bytes back (no page kept ready):
        // the metric the recorder hears then.
        securememory::test_hooks::keep_ready_pages(false);
        metrics::set_global_recorder(common::recorder::HookRecorder {
            on_register: purge_once,
            on_use: None,
        })
        .expect("recorder");
        let factory = configs::by_name("anonymous-page-window").factory();
        let closing = factory.new(&mut pattern(5, 32)).unwrap();
        let others: Vec<Secret> = (0..3)
            .map(|i| factory.new(&mut pattern(6 + i, 32)).unwrap())
            .collect();
        ARMED.store(true, Ordering::Release);
        closing.close().expect("close");
        assert_eq!(
            NESTED.load(Ordering::Acquire),
            others.len() + 1,
            "the recorder's purge ran and closed the others"
        );
        for s in &others {
            assert_purged("other", s);
        }
        assert!(
            COUNTER_SEEN.load(Ordering::Acquire),
            "the recorder was told secret.purged"
        );
    });
}

static HOOK_SAW_PURGED: AtomicBool = AtomicBool::new(false);
static UNWOUND_AFTER_PURGE: AtomicBool = AtomicBool::new(false);
static WATCHED: std::sync::OnceLock<Vec<Secret>> = std::sync::OnceLock::new();

thread_local! {
    static WIPED_BY_HOOK: Cell<usize> = const { Cell::new(0) };
}

/// Records, on drop while unwinding, whether the purge came first.
struct UnwindWitness;

impl Drop for UnwindWitness {
    fn drop(&mut self) {
        UNWOUND_AFTER_PURGE.store(HOOK_SAW_PURGED.load(Ordering::Acquire), Ordering::Release);
    }
}

/// With `purge_on_panic`, a panic in another thread purges every secret
/// before that thread unwinds: the hook installed before it (called after
/// the purge) sees every secret purged and its memory wiped to zeros, and
/// a value dropped by the unwinding sees the purge done. A secret the
/// panicking thread was accessing is released as its access unwinds.
#[test]
fn panic_hook_purges_before_unwinding() {
    in_child("panic_hook_purges_before_unwinding", || {
        std::panic::set_hook(Box::new(|_| {
            let all = WATCHED.get().expect("secrets");
            let purged = all
                .iter()
                .all(|s| matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
            let wiped = test_hooks::take_all_wiped();
            WIPED_BY_HOOK.with(|w| w.set(wiped.len()));
            let zeros = wiped.iter().all(|w| w.iter().all(|&b| b == 0));
            HOOK_SAW_PURGED.store(
                purged && zeros && wiped.len() >= all.len(),
                Ordering::Release,
            );
        }));
        securememory::purge_on_panic();
        let watched = WATCHED.get_or_init(|| {
            configs::all()
                .into_iter()
                .enumerate()
                .map(|(i, c)| c.factory().new(&mut pattern(i, 32)).unwrap())
                .collect()
        });
        let accessed = configs::by_name("memfd-page-window")
            .factory()
            .new(&mut pattern(9, 32))
            .unwrap();
        let in_use = stats().in_use;
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                test_hooks::collect_wipes();
                let _witness = UnwindWitness;
                panic!("deliberate panic");
            })
            .join()
        });
        assert!(r.is_err(), "the thread panicked");
        assert!(
            HOOK_SAW_PURGED.load(Ordering::Acquire),
            "the previous hook did not see every secret purged and wiped"
        );
        assert!(
            UNWOUND_AFTER_PURGE.load(Ordering::Acquire),
            "the thread unwound before the purge"
        );
        for s in watched {
            assert_purged("watched", s);
        }
        assert_purged("accessed-later", &accessed);
        assert_eq!(stats().in_use, in_use - watched.len() as u64 - 1);

        // A panic inside an access: that secret is released as it unwinds.
        let inside = configs::by_name("anonymous-page-window")
            .factory()
            .new(&mut pattern(10, 32))
            .unwrap();
        let in_use = stats().in_use;
        let r = std::thread::scope(|s| {
            s.spawn(|| inside.with_bytes(|_| panic!("inside an access")))
                .join()
        });
        assert!(r.is_err());
        assert_eq!(stats().in_use, in_use - 1, "released as the access unwound");
        assert_purged("inside", &inside);
    });
}

extern "C" fn keep_going(_: libc::c_int) {}

fn intact(secrets: &[(Secret, Vec<u8>)]) -> bool {
    secrets
        .iter()
        .all(|(s, b)| s.with_bytes(|x| x == &b[..]).unwrap_or(false))
}

fn make(seed: usize) -> Vec<(Secret, Vec<u8>)> {
    configs::all()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let b = pattern(seed + i, 32);
            (c.factory().new(&mut b.clone()).unwrap(), b)
        })
        .collect()
}

/// A fork child's purge (by a signal, the path that walks the registry of
/// mappings the child inherited a copy of) leaves the parent's secrets
/// whole, the memory file the two once shared included, also from a raw
/// fork child that still holds the file's descriptor; the parent's
/// `purge()` leaves the child's secrets whole. Each purge does purge its
/// own process's secrets.
#[test]
fn purge_in_parent_and_fork_child_are_separate() {
    in_child("purge_in_parent_and_fork_child_are_separate", || {
        // The program's SIGHUP handler returns: the process lives on.
        // SAFETY: installs a handler of this test's.
        unsafe { libc::signal(libc::SIGHUP, keep_going as *const () as libc::sighandler_t) };
        securememory::purge_on_signals(&[libc::SIGHUP]).unwrap();
        let parents = make(0);
        // A raw fork child (no at-fork handler ran; it has not called the
        // library yet) still holds the memory file's descriptor: its purge
        // must not punch the parent's secrets out of the file through it.
        // SAFETY: a raw fork; the child makes two system calls and `_exit`s.
        let raw = unsafe { libc::syscall(libc::SYS_fork) } as libc::pid_t;
        if raw == 0 {
            // SAFETY: kill by the real pid (libc's cached ids are the
            // parent's after a raw fork), then leave at once.
            unsafe {
                libc::syscall(
                    libc::SYS_kill,
                    libc::syscall(libc::SYS_getpid),
                    libc::SIGHUP,
                );
                libc::_exit(0);
            }
        }
        assert_eq!(common::wait_status(raw), 0, "the raw fork child");
        assert!(
            intact(&parents),
            "a raw fork child's purge touched the parent's secrets"
        );
        let (mut to_parent, mut to_child) = ([0i32; 2], [0i32; 2]);
        // SAFETY: pipe fills the arrays with two new descriptors each.
        unsafe {
            assert_eq!(libc::pipe(to_parent.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(to_child.as_mut_ptr()), 0);
        }
        let byte = |fd: i32| {
            let mut b = [0u8];
            // SAFETY: reads one byte into a stack buffer.
            assert_eq!(unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) }, 1);
        };
        // SAFETY: writes one byte from a constant.
        let send = |fd: i32| assert_eq!(unsafe { libc::write(fd, c"x".as_ptr().cast(), 1) }, 1);
        // SAFETY: fork; the child only runs the closure below and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            common::run_and_exit(|| {
                let mine = make(50);
                // SAFETY: a signal to this process; its purge handler runs.
                unsafe { libc::raise(libc::SIGHUP) };
                let purged = mine
                    .iter()
                    .all(|(s, _)| matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
                let forked = parents
                    .iter()
                    .all(|(s, _)| matches!(s.with_bytes(|_| ()), Err(Error::Forked)));
                let fresh = make(80);
                send(to_parent[1]);
                byte(to_child[0]);
                // The parent purged meanwhile.
                i32::from(!(purged && forked && intact(&fresh)))
            });
        }
        byte(to_parent[0]);
        assert!(
            intact(&parents),
            "the child's purge touched the parent's secrets"
        );
        assert_eq!(purge(), parents.len());
        for (s, _) in &parents {
            assert_purged("parent", s);
        }
        send(to_child[1]);
        let status = common::wait_status(pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child: its purge missed its secrets, or the parent's purge touched them (status {status:#x})"
        );
    });
}
