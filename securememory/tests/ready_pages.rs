//! The store of ready pages (issue 12, item 2): a closed one-page secret's
//! page is kept, wiped, for the next secret of the same backend and layout.
//! Each test would fail if the store broke a guarantee:
//! - a reused page holds nothing of the secret before (zeros but the new
//!   secret and its canary), and is at rest exactly as a new one: `PROT_NONE`,
//!   locked, do-not-dump, wipe-on-fork or do-not-fork, between guard pages
//!   for a guarded secret, flush against the trailing one;
//! - a fork child (glibc's `fork` and a raw `fork` system call) never takes
//!   a page of its parent's store;
//! - the store gives its pages back before the memlock budget refuses a
//!   request: under a small limit, a full store of another kind changes
//!   nothing in how many secrets fit.
//!
//! Controls (each run against a broken store, then reverted): a release that
//! records its wipe but does not zero fails the first two ("page not wiped
//! at close"); one store for every fork generation fails the fork test ("the
//! child starts with 6 ready pages"); no give-back (neither the budget's
//! reclaim hook nor the retry of a kernel refusal) fails the budget test (8
//! secrets fit instead of 14).
// Linux only: uses Linux interfaces (procfs, fork, capabilities, rlimits).
#![cfg(target_os = "linux")]

#[macro_use]
mod common;
mod support_proc;

use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use common::child::{describe, in_worker};
use common::configs::{self, Config};
use common::procfs::{perms_at, read_proc_mem, vma_at};
use common::rlimit::CAP_IPC_LOCK;
use securememory::test_hooks::{data_address, data_pages, take_last_wiped};
use securememory::{
    release_ready_pages, stats, Backend, Error, Layout, Options, ProtectedFactory, Secret,
    SecretFactory,
};
use support_proc::fork_and_wait;

const OLD: u8 = 0xa5;
const NEW: u8 = 0x3c;

/// Every configuration with pages of its own (the store keeps those).
fn own_page_configs() -> Vec<Config> {
    configs::select(|c| !c.is_pooled())
}

/// One configuration per kind the store keeps apart (backend and layout).
fn one_per_kind() -> Vec<Config> {
    configs::select(|c| !c.is_pooled() && c.on_default_path())
}

/// A secret of the old value, closed: its page wiped and parked. Returns
/// the page's address.
fn park_one(f: &ProtectedFactory, name: &str) -> usize {
    let old = f.new(&mut [OLD; 200]).expect("create the old secret");
    let addr = data_pages(&old).0;
    old.close().expect("close the old secret");
    let wiped = take_last_wiped().expect("the release recorded its wipe");
    assert!(
        wiped.iter().all(|&b| b == 0),
        "{name}: page not wiped at close"
    );
    addr
}

child_test! {
    fn reused_page_holds_nothing_of_the_last_secret() {
        let page = common::page_size();
        for cfg in own_page_configs() {
            let name = cfg.name;
            let f = cfg.factory();
            release_ready_pages();
            assert_eq!(stats().ready_pages, 0, "{name}");
            let addr = park_one(&f, name);
            assert_eq!(stats().ready_pages, 1, "{name}: the closed page is not kept");

            let new = f.new(&mut [NEW; 7]).expect("create the new secret");
            let (at, len) = data_pages(&new);
            assert_eq!((at, len), (addr, page), "{name}: the ready page was not reused");
            assert_eq!(stats().ready_pages, 0, "{name}");
            check_at_rest(&cfg, &new);
            assert_eq!(new.with_bytes(|b| b.to_vec()).unwrap(), vec![NEW; 7], "{name}");
            check_at_rest(&cfg, &new);

            // The whole page, read past PROT_NONE by the kernel: zeros but the
            // new secret (and its canary). memfd_secret pages are out of the
            // kernel's reach: the wipe record below stands for them.
            let off = data_address(&new) - at;
            match read_proc_mem(at, page) {
                Ok(bytes) if bytes.len() == page => {
                    let canary = if cfg.is_guarded() { off - 16..off } else { 0..0 };
                    for (i, &b) in bytes.iter().enumerate() {
                        if (off..off + 7).contains(&i) {
                            assert_eq!(b, NEW, "{name}: byte {i} of the new secret");
                        } else if !canary.contains(&i) {
                            assert_eq!(b, 0, "{name}: byte {i} of a reused page is not zero");
                        }
                    }
                }
                r => assert!(
                    cfg.backend() == Backend::MemfdSecret,
                    "{name}: /proc/self/mem read of the page: {r:?}"
                ),
            }
            // The canary of a reused guarded page is checked at close too.
            new.close().expect("close the new secret");
            let wiped = take_last_wiped().expect("wipe recorded");
            assert!(wiped.iter().all(|&b| b == 0), "{name}: reused page not wiped at close");
            println!("{name}: page reused, nothing of the last secret in it, at rest as new");
        }
        release_ready_pages();
        assert_eq!(stats().ready_pages, 0);
    }
}

/// A secret's page at rest: not readable, `PROT_NONE`, locked, do-not-dump,
/// wipe-on-fork (private) or do-not-fork (shared); a guarded secret between
/// `PROT_NONE` guard pages, its last byte against the trailing one.
fn check_at_rest(cfg: &Config, s: &Secret) {
    let name = cfg.name;
    let page = common::page_size();
    let (at, _) = data_pages(s);
    assert!(!s.is_readable_now().unwrap(), "{name}: readable at rest");
    let shared = cfg.backend() != Backend::Anonymous;
    let perms = perms_at(at).expect("mapped");
    assert_eq!(perms, if shared { "---s" } else { "---p" }, "{name}: perms");
    let vma = vma_at(at).expect("in smaps");
    assert!(
        vma.has_flag("dd"),
        "{name}: not do-not-dump: {:?}",
        vma.flags
    );
    assert!(
        vma.locked_kb > 0 || vma.has_flag("lo"),
        "{name}: not locked: {:?}",
        vma.flags
    );
    let fork_flag = if shared { "dc" } else { "wf" };
    assert!(
        vma.has_flag(fork_flag),
        "{name}: no {fork_flag}: {:?}",
        vma.flags
    );
    if cfg.is_guarded() {
        assert_eq!(
            perms_at(at - 1).as_deref(),
            Some("---p"),
            "{name}: leading guard"
        );
        assert_eq!(
            perms_at(at + page).as_deref(),
            Some("---p"),
            "{name}: trailing guard"
        );
        assert_eq!(
            data_address(s) + s.len(),
            at + page,
            "{name}: not flush against the guard"
        );
    }
}

/// Make a child with a raw `fork` system call (no at-fork handler runs), run
/// `child` there and `_exit` with its code; wait in the parent.
fn raw_fork_and_wait(child: impl FnOnce() -> i32) -> ExitStatus {
    io::stdout().flush().ok();
    io::stderr().flush().ok();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: makes a copy of this process, as fork(2) does; the child runs
    // only `child` and `_exit`s.
    let pid = unsafe { libc::syscall(libc::SYS_fork) };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as above; `clone` with SIGCHLD and no stack is a fork.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    assert!(pid >= 0, "raw fork: {}", io::Error::last_os_error());
    if pid == 0 {
        common::run_and_exit(child);
    }
    ExitStatus::from_raw(common::wait_status(pid as libc::pid_t))
}

/// In a fork child: the parent's ready pages are not there for the taking;
/// a new secret gets a page of its own, which the child's own store keeps.
fn child_side(cfgs: &[Config], parked: &[usize]) -> Result<(), String> {
    if stats().ready_pages != 0 {
        return Err(format!(
            "the child starts with {} ready pages",
            stats().ready_pages
        ));
    }
    let page = common::page_size() as u64;
    for (cfg, &addr) in cfgs.iter().zip(parked) {
        let locked = stats().bytes_locked;
        let s = cfg
            .factory()
            .new(&mut [NEW; 32])
            .map_err(|e| format!("{}: create in the child: {e}", cfg.name))?;
        // A new mapping is counted; a ready page taken would not be.
        if stats().bytes_locked != locked + page {
            return Err(format!(
                "{}: the child's secret is not a new mapping",
                cfg.name
            ));
        }
        // A private (wipe-on-fork) page of the parent's is still mapped in
        // the child, so a new one cannot be at its address; a shared one is
        // not mapped here (do-not-fork) and its address may come back.
        let at = data_pages(&s).0;
        if at == addr && cfg.backend() == Backend::Anonymous {
            return Err(format!(
                "{}: the child took the parent's ready page",
                cfg.name
            ));
        }
        if s.with_bytes(|b| b.to_vec()).map_err(|e| e.to_string())? != vec![NEW; 32] {
            return Err(format!("{}: wrong bytes in the child", cfg.name));
        }
        s.close().map_err(|e| e.to_string())?;
    }
    if stats().ready_pages != cfgs.len() as u64 {
        return Err(format!(
            "the child's own store holds {} pages, not {}",
            stats().ready_pages,
            cfgs.len()
        ));
    }
    Ok(())
}

child_test! {
    fn fork_child_never_takes_a_parent_ready_page() {
        let cfgs = one_per_kind();
        release_ready_pages();
        let parked: Vec<usize> = cfgs.iter().map(|c| park_one(&c.factory(), c.name)).collect();
        assert_eq!(stats().ready_pages, cfgs.len() as u64);
        let in_child = || match child_side(&cfgs, &parked) {
            Ok(()) => 0,
            Err(why) => {
                eprintln!("fork child: {why}");
                1
            }
        };
        let status = fork_and_wait(in_child);
        assert!(status.success(), "glibc fork child: {}", describe(status));
        let status = raw_fork_and_wait(in_child);
        assert!(status.success(), "raw fork child: {}", describe(status));
        // The parent's store is untouched and still serves the parent.
        assert_eq!(stats().ready_pages, cfgs.len() as u64);
        for (cfg, &addr) in cfgs.iter().zip(&parked) {
            let s = cfg.factory().new(&mut [NEW; 32]).unwrap();
            assert_eq!(data_pages(&s).0, addr, "{}: the parent lost its ready page", cfg.name);
            s.close().unwrap();
        }
        println!("fork children (glibc and raw) never took one of {} parked pages", cfgs.len());
    }
}

const LIMIT: u64 = 64 * 1024;

#[test]
fn ready_pages_are_given_back_before_a_refusal() {
    in_worker(
        "ready_pages_are_given_back_before_a_refusal",
        "budget",
        &[CAP_IPC_LOCK],
        budget_worker,
    );
}

/// Secrets of `f` until the budget refuses one with `LockFailed`.
fn fill(f: &ProtectedFactory) -> Vec<Secret> {
    let mut held = Vec::new();
    loop {
        match f.new(&mut [NEW; 32]) {
            Ok(s) => held.push(s),
            Err(Error::LockFailed { .. }) => return held,
            Err(e) => panic!("expected LockFailed, got {e}"),
        }
        assert!(held.len() < 100, "never refused under a {LIMIT}-byte limit");
    }
}

fn budget_worker() {
    common::rlimit::no_ipc_lock_soft_limit(LIMIT);
    let page = common::page_size() as u64;
    let default = ProtectedFactory::default();
    // The scratch buffer of the copy path, counted from now on.
    let warm = default.new(&mut [1u8; 32]).unwrap();
    warm.with_bytes(|_| ()).unwrap();
    warm.close().unwrap();
    release_ready_pages();
    let base = stats().bytes_locked;
    let fits = (LIMIT - base) / page;
    assert!(fits >= 8, "base {base} leaves too little of the limit");

    // Fill the store with pages of another kind: guarded anonymous.
    let other = ProtectedFactory::new(
        Options::default()
            .backend(Backend::Anonymous)
            .layout(Layout::Guarded),
    )
    .unwrap();
    let kept: Vec<Secret> = (0..6).map(|_| other.new(&mut [OLD; 32]).unwrap()).collect();
    drop(kept);
    assert_eq!(stats().ready_pages, 6);
    assert_eq!(stats().bytes_locked, base + 6 * page);

    // Default secrets up to the limit: as many as with an empty store.
    let held = fill(&default);
    assert_eq!(
        held.len() as u64,
        fits,
        "secrets before the refusal with 6 ready pages of another kind"
    );
    assert_eq!(stats().ready_pages, 0, "the store was not given back");
    drop(held);
    release_ready_pages();
    assert_eq!(stats().bytes_locked, base);
    println!(
        "{fits} one-page secrets under a {LIMIT}-byte limit with a full store of another kind"
    );
}
