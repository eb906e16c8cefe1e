//! The memlock test of the foundation issue, and the `AllowUnlocked` opt-in.
//!
//! Root ignores `RLIMIT_MEMLOCK` (`CAP_IPC_LOCK`), so each test runs in a
//! worker process started without `CAP_IPC_LOCK` in any of its threads (it
//! is dropped from the bounding set before exec, and again from the worker
//! thread's effective and permitted sets), which checks that before going
//! on, then sets a 64 KiB soft limit (hard limit unchanged).
//!
//! Baseline: the copy path gives each thread a locked scratch buffer the
//! first time it reads a secret, counted in `bytes_locked` and in `VmLck`
//! and kept until the thread exits. The worker does one access before it
//! reads its starting `VmLck` and `bytes_locked`, and does everything on
//! that one thread (the harness's main thread never touches a secret), so
//! the baseline already includes the scratch buffer and the secrets alone
//! move the figures afterwards.
#![cfg(target_os = "linux")]

mod common;
mod support_proc;

use common::child::in_worker;
use common::configs::memfd_secret_or_skip;
use common::procfs::vm_lck_kib;
use common::rlimit::{memlock, CAP_IPC_LOCK};
use securememory::{
    stats, Backend, Error, LockPolicy, Options, ProtectedFactory, Secret, SecretFactory,
};
use support_proc::capture_tracing;

const LIMIT: u64 = 64 * 1024;

/// Worker setup: no CAP_IPC_LOCK anywhere, a small soft limit, a warm scratch buffer.
fn setup() -> (u64, u64) {
    common::rlimit::no_ipc_lock_soft_limit(LIMIT);
    // Probe memfd_secret now, under the limit (it maps one page and unmaps it).
    let _ = securememory::memfd_secret_status();
    let warm = ProtectedFactory::default().new(&mut [7u8; 32]).unwrap();
    assert_eq!(warm.with_bytes(|b| b[0]).unwrap(), 7);
    warm.close().unwrap();
    // Its page, kept ready for the next secret, is given back: the
    // baseline is the scratch buffer alone.
    securememory::release_ready_pages();
    let base = (vm_lck_kib(), stats().bytes_locked);
    println!(
        "baseline after the first access: VmLck {} kB, bytes_locked {}",
        base.0, base.1
    );
    assert!(base.1 > 0, "the scratch buffer should be counted as locked");
    assert!(
        base.1 <= LIMIT / 2,
        "baseline {} leaves too little of the limit to test",
        base.1
    );
    base
}

/// A distinct 32-byte value per index.
fn value(i: usize) -> [u8; 32] {
    let mut v = [0u8; 32];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8) ^ 0xa5;
    }
    v
}

fn limit_text(v: Option<u64>) -> String {
    v.map_or("unlimited".to_string(), |b| b.to_string())
}

fn refuse_worker() {
    let (base_lck, base_locked) = setup();
    let page = common::page_size() as u64;
    let (soft, hard) = memlock();
    assert_eq!(soft, Some(LIMIT));
    let mut configs = vec![
        ("default (memfd)", Options::default()),
        ("anonymous", Options::default().backend(Backend::Anonymous)),
    ];
    if memfd_secret_or_skip("memlock refusal for Backend::MemfdSecret") {
        configs.push((
            "memfd_secret",
            Options::default().backend(Backend::MemfdSecret),
        ));
    }
    for (name, opts) in configs {
        let factory = ProtectedFactory::new(opts).unwrap();
        let before = stats();
        let mut held: Vec<Secret> = Vec::new();
        let err = loop {
            let mut v = value(held.len());
            match factory.new(&mut v) {
                Ok(s) => held.push(s),
                Err(e) => {
                    // A failed creation leaves the caller's bytes for a retry.
                    assert_eq!(v, value(held.len()), "{name}: source wiped on failure");
                    break e;
                }
            }
            assert!(
                held.len() < 1000,
                "{name}: never refused under a {LIMIT}-byte limit"
            );
        };
        let after = stats();
        // The budget is exact: every page that fits was granted, then refused.
        let expect = (LIMIT - base_locked) / page;
        assert_eq!(held.len() as u64, expect, "{name}: secrets before refusal");
        let Error::LockFailed { report, .. } = &err else {
            panic!("{name}: expected Error::LockFailed, got {err:?}");
        };
        assert_eq!(report.requested, page, "{name}");
        assert_eq!(report.soft, soft, "{name}");
        assert_eq!(report.hard, hard, "{name}");
        assert_eq!(
            report.locked_by_library,
            base_locked + expect * page,
            "{name}"
        );
        let msg = err.to_string();
        for needle in [
            "RLIMIT_MEMLOCK".to_string(),
            limit_text(soft),
            limit_text(hard),
            page.to_string(),
            "ulimit -l".into(),
            "docker run --ulimit memlock=".into(),
            "LimitMEMLOCK=".into(),
            "Layout::Pooled".into(),
        ] {
            assert!(
                msg.contains(&needle),
                "{name}: the error does not mention {needle:?}: {msg}"
            );
        }
        assert!(
            after.lock_refusals > before.lock_refusals,
            "{name}: lock_refusals did not rise"
        );
        // The refusal leaked nothing.
        assert_eq!(after.in_use, before.in_use + expect, "{name}");
        assert_eq!(after.bytes_locked, base_locked + expect * page, "{name}");
        let lck = vm_lck_kib();
        assert!(
            lck * 1024 <= LIMIT,
            "{name}: VmLck {lck} kB above the limit"
        );
        for (i, s) in held.iter().enumerate() {
            assert_eq!(
                s.with_bytes(|b| b.to_vec()).unwrap(),
                value(i),
                "{name}: secret {i}"
            );
        }
        println!("{name}: {} one-page secrets, then: {msg}", held.len());
        println!("{name}: VmLck {lck} kB while held");

        for s in &held {
            s.close().unwrap();
        }
        drop(held);
        assert_back_at_start(name, base_lck, base_locked);
        assert_eq!(stats().in_use, before.in_use, "{name}");
    }
}

/// Locked memory, by the kernel's count and the library's, is back where it
/// was before the secrets were made.
fn assert_back_at_start(name: &str, base_lck: u64, base_locked: u64) {
    // Closed one-page secrets' pages are kept ready (locked) until asked back.
    securememory::release_ready_pages();
    assert_eq!(
        vm_lck_kib(),
        base_lck,
        "{name}: VmLck not back at its start"
    );
    assert_eq!(
        stats().bytes_locked,
        base_locked,
        "{name}: bytes_locked not back at its start"
    );
}

fn unlocked_worker() {
    let events = capture_tracing();
    let (base_lck, base_locked) = setup();
    let page = common::page_size() as u64;
    let fit = (LIMIT - base_locked) / page;
    let want = fit as usize + 4;
    for (name, backend) in [("memfd", Backend::Memfd), ("anonymous", Backend::Anonymous)] {
        let factory = ProtectedFactory::new(
            Options::default()
                .backend(backend)
                .lock(LockPolicy::AllowUnlocked),
        )
        .unwrap();
        let before = stats();
        events.lock().unwrap().clear();
        let held: Vec<Secret> = (0..want)
            .map(|i| {
                factory.new(&mut value(i)).unwrap_or_else(|e| {
                    panic!("{name}: secret {i} refused under AllowUnlocked: {e}")
                })
            })
            .collect();
        for (i, s) in held.iter().enumerate() {
            assert_eq!(
                s.with_bytes(|b| b.to_vec()).unwrap(),
                value(i),
                "{name}: secret {i}"
            );
            assert!(
                !s.is_readable_now().unwrap(),
                "{name}: secret {i} readable at rest"
            );
        }
        let after = stats();
        let unlocked = after.unlocked_allocations - before.unlocked_allocations;
        assert_eq!(unlocked, want as u64 - fit, "{name}: unlocked_allocations");
        assert!(after.bytes_locked <= LIMIT, "{name}: locked past the limit");
        assert!(vm_lck_kib() * 1024 <= LIMIT, "{name}: VmLck past the limit");
        let warnings = events
            .lock()
            .unwrap()
            .iter()
            .filter(|(level, text)| *level == tracing::Level::WARN && text.contains("NOT locked"))
            .count() as u64;
        assert_eq!(
            warnings, unlocked,
            "{name}: one tracing warning per unlocked secret"
        );
        println!("{name}: {want} secrets under a {LIMIT}-byte limit, {unlocked} of them unlocked, {warnings} warnings");

        drop(held);
        assert_back_at_start(name, base_lck, base_locked);
    }
}

#[test]
fn memlock_refusal_is_typed_and_leaks_nothing() {
    const TEST: &str = "memlock_refusal_is_typed_and_leaks_nothing";
    in_worker(TEST, "refuse", &[CAP_IPC_LOCK], refuse_worker);
}

#[test]
fn allow_unlocked_goes_past_the_limit_with_warnings() {
    const TEST: &str = "allow_unlocked_goes_past_the_limit_with_warnings";
    in_worker(TEST, "unlocked", &[CAP_IPC_LOCK], unlocked_worker);
}
