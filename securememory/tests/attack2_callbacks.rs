//! Forks from inside user code the library calls: a `metrics` recorder and
//! a `tracing` subscriber that `fork()` (glibc's, at-fork handlers run) on
//! every metric and every event. If the library ever called them inside its
//! fork fence (between a shared mapping's creation and its
//! `MADV_DONTFORK`), the prepare handler would not wait (the forking thread
//! is the creator) and the child would keep a shared mapping of secret
//! memory. Every child checks its own mappings and descriptors: no mapping
//! of the memory file or of a `memfd_secret` file, no descriptor to either.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::child::in_worker;
use common::mem::lock_own;
use common::recorder::HookRecorder;
use common::rlimit::{memlock, set_memlock, CAP_IPC_LOCK};
use securememory::{
    memfd_secret_status, Backend, Layout, LockPolicy, Options, ProtectedFactory, SecretFactory,
};

static FORKS: AtomicUsize = AtomicUsize::new(0);
static BAD: AtomicUsize = AtomicUsize::new(0);

/// What a fork child may not hold: a name of the memory file or of a
/// `memfd_secret` file among its mappings or descriptors.
fn child_holds_secret_memory() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if let Some(l) = maps
        .lines()
        .find(|l| l.contains("memfd:securememory") || l.contains("secretmem"))
    {
        return Some(format!("mapping {l}"));
    }
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let t = target.to_string_lossy();
        if t.contains("memfd:securememory") || t.contains("secretmem") {
            return Some(format!("descriptor {:?} -> {t}", entry.file_name()));
        }
    }
    None
}

/// Fork; the child checks itself and `_exit`s; the parent waits.
fn fork_and_check(from: &str) {
    io::stdout().flush().ok();
    io::stderr().flush().ok();
    // SAFETY: the child only reads /proc and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match child_holds_secret_memory() {
            None => 0,
            Some(what) => {
                eprintln!("fork child from {from} holds {what}");
                1
            }
        };
        io::stderr().flush().ok();
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) }
    }
    assert!(pid > 0);
    FORKS.fetch_add(1, Ordering::Relaxed);
    let status = common::wait_status(pid);
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        BAD.fetch_add(1, Ordering::Relaxed);
    }
}

const FORKING_RECORDER: HookRecorder = HookRecorder {
    on_register: fork_and_check,
    on_use: None,
};

struct ForkingSubscriber {
    next: AtomicUsize,
}

impl tracing::Subscriber for ForkingSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) as u64 + 1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        fork_and_check(e.metadata().name());
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn configs(lock: LockPolicy) -> Vec<(&'static str, Options)> {
    let mut v = vec![
        ("memfd page", Options::default().lock(lock)),
        (
            "memfd guarded",
            Options::default().layout(Layout::Guarded).lock(lock),
        ),
        (
            "pooled",
            Options::default().layout(Layout::Pooled).lock(lock),
        ),
        (
            "anonymous",
            Options::default().backend(Backend::Anonymous).lock(lock),
        ),
    ];
    if memfd_secret_status().is_ok() {
        v.push((
            "memfd_secret",
            Options::default().backend(Backend::MemfdSecret),
        ));
        v.push((
            "memfd_secret guarded",
            Options::default()
                .backend(Backend::MemfdSecret)
                .layout(Layout::Guarded),
        ));
    }
    v
}

#[test]
fn forks_from_the_library_callbacks_never_get_secret_memory() {
    in_worker(
        "forks_from_the_library_callbacks_never_get_secret_memory",
        "attack2-callbacks",
        &[CAP_IPC_LOCK],
        || {
            metrics::set_global_recorder(FORKING_RECORDER).unwrap();
            tracing::subscriber::set_global_default(ForkingSubscriber {
                next: AtomicUsize::new(0),
            })
            .unwrap();
            // Plenty of memlock: creations, reads, closes, pool growth.
            let mut held = Vec::new();
            for (_, opts) in configs(LockPolicy::Require) {
                let f = ProtectedFactory::new(opts).unwrap();
                for i in 0..40u8 {
                    let s = f.new(&mut [i; 48]).unwrap();
                    assert_eq!(s.with_bytes(|b| b[0]).unwrap(), i);
                    if i % 2 == 0 {
                        s.close().unwrap();
                    } else {
                        held.push(s);
                    }
                }
            }
            // Memlock used up: the refusal paths (refused, unlocked, the
            // warnings) under `AllowUnlocked` and `Require`.
            let page = common::page_size() as u64;
            let used: u64 = securememory::stats().bytes_locked;
            let hard = memlock().1;
            set_memlock(Some(used + page), hard);
            for lock in [LockPolicy::AllowUnlocked, LockPolicy::Require] {
                for (name, opts) in configs(lock) {
                    let f = match ProtectedFactory::new(opts) {
                        Ok(f) => f,
                        Err(e) => {
                            println!("{name} {lock:?}: factory {e}");
                            continue;
                        }
                    };
                    for i in 0..4u8 {
                        match f.new(&mut [i; 3000]) {
                            Ok(s) => held.push(s),
                            Err(e) => println!("{name} {lock:?}: {e}"),
                        }
                    }
                }
            }
            // The budget agrees but the kernel refuses (the host program
            // locked memory of its own): the kernel-refusal paths, whose
            // warning comes right after the fence.
            let room = 64 * page;
            let used: u64 = securememory::stats().bytes_locked;
            set_memlock(Some(used + room), hard);
            lock_own(room as usize);
            for lock in [LockPolicy::AllowUnlocked, LockPolicy::Require] {
                for (name, opts) in configs(lock) {
                    let Ok(f) = ProtectedFactory::new(opts) else {
                        continue;
                    };
                    match f.new(&mut [5u8; 100]) {
                        Ok(s) => held.push(s),
                        Err(e) => println!("kernel refusal, {name} {lock:?}: {e}"),
                    }
                }
            }
            drop(held);
            let forks = FORKS.load(Ordering::Relaxed);
            println!("forks from callbacks: {forks}");
            assert!(forks > 100, "the callbacks were hardly called: {forks}");
            assert_eq!(
                BAD.load(Ordering::Relaxed),
                0,
                "fork children held secret memory"
            );
        },
    );
}
