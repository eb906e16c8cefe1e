//! Attacks on the store of ready pages now that each kind is kept on
//! several shelves, a thread parking on and taking from its own first:
//!
//! - 120 one-page secrets closed at once on 12 threads (more than the
//!   shelves): the store keeps exactly 64 (its bound per kind), the other
//!   56 are unmapped and uncounted; `release_ready_pages()` on a thread
//!   that parked none gives back all 64, after the parkers exited;
//! - pages parked by threads that have exited (one per thread, on every
//!   shelf) serve this thread's next secrets, wiped: every byte of each
//!   reused page is zero but the new secret's;
//! - without `CAP_IPC_LOCK` under a 64 KiB memlock limit, ready pages of
//!   another kind parked by six exited threads change nothing in how many
//!   secrets fit (the store is drained whatever shelf they are on);
//! - a fork child starts with none of its parent's ready pages, whichever
//!   threads parked them, and its creations are new mappings;
//! - after a signal's purge (the process lives on), no page parked on any
//!   shelf before it is handed to a new secret: the first creation of a
//!   kind gives back every purged page of that kind, whatever shelf it is
//!   on; each new secret is locked; all are given back at the end.
// Linux only: uses Linux interfaces (procfs, fork, capabilities, rlimits).
#![cfg(target_os = "linux")]

#[macro_use]
mod common;
mod support_proc;

use std::sync::{Arc, Barrier};

use common::child::{describe, in_worker};
use common::procfs::{read_proc_mem, vma_at};
use common::rlimit::CAP_IPC_LOCK;
use securememory::test_hooks::{data_address, data_pages};
use securememory::{
    purge_on_signals, release_ready_pages, stats, Backend, Error, Layout, Options,
    ProtectedFactory, Secret, SecretFactory,
};
use support_proc::fork_and_wait;

/// The store's bound per kind (backend and layout).
const PER_KIND: u64 = 64;

fn page() -> u64 {
    common::page_size() as u64
}

/// Park one page of `f` from each of `threads` new threads, which then
/// exit. Each makes its secret before the next starts (so each takes the
/// next shard), and all close theirs only once every one is made (so none
/// takes another's page). Their addresses.
fn park_from_exited_threads(f: &Arc<ProtectedFactory>, threads: usize, byte: u8) -> Vec<usize> {
    let all_made = Arc::new(Barrier::new(threads));
    let mut handles = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..threads {
        let (f, all_made) = (f.clone(), all_made.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        handles.push(std::thread::spawn(move || {
            let s = f.new(&mut [byte; 1000]).unwrap();
            tx.send(data_pages(&s).0).unwrap();
            all_made.wait();
            s.close().unwrap();
        }));
        addrs.push(rx.recv().unwrap());
    }
    for h in handles {
        h.join().unwrap();
    }
    addrs
}

child_test! {
    fn store_bound_and_give_back_across_threads() {
        let f = Arc::new(ProtectedFactory::default());
        drop(f.new(&mut [1; 8]).unwrap());
        release_ready_pages();
        let base = stats().bytes_locked;
        let all_made = Arc::new(Barrier::new(12));
        let threads: Vec<_> = (0..12u8)
            .map(|t| {
                let (f, all_made) = (f.clone(), all_made.clone());
                std::thread::spawn(move || {
                    let mine: Vec<Secret> = (0..10).map(|_| f.new(&mut [t; 32]).unwrap()).collect();
                    // 120 distinct pages live at once, then all closed.
                    all_made.wait();
                    drop(mine);
                })
            })
            .collect();
        for h in threads {
            h.join().unwrap();
        }
        let ready = stats().ready_pages;
        assert_eq!(ready, PER_KIND, "ready pages after 120 closes on 12 threads");
        assert_eq!(
            stats().bytes_locked,
            base + PER_KIND * page(),
            "pages past the bound still counted (or kept)"
        );
        release_ready_pages();
        assert_eq!(stats().ready_pages, 0, "pages parked by exited threads not given back");
        assert_eq!(stats().bytes_locked, base, "locked bytes left after release_ready_pages");
        println!("120 closes on 12 threads kept {ready}; all given back from another thread");
    }
}

child_test! {
    fn pages_of_exited_threads_serve_the_next_secrets_wiped() {
        let f = Arc::new(ProtectedFactory::default());
        // This thread's copy-path scratch, counted from now on.
        f.new(&mut [1; 8]).unwrap().with_bytes(|_| ()).unwrap();
        release_ready_pages();
        let parked = park_from_exited_threads(&f, 6, 0xa5);
        assert_eq!(stats().ready_pages, 6);
        let locked = stats().bytes_locked;
        let mut news = Vec::new();
        for i in 0..6u8 {
            let s = f.new(&mut [0x3c ^ i; 7]).unwrap();
            let (at, len) = data_pages(&s);
            assert!(parked.contains(&at), "secret {i} is not on a parked page");
            assert_eq!(len, common::page_size());
            let off = data_address(&s) - at;
            let bytes = read_proc_mem(at, len).unwrap();
            for (j, &b) in bytes.iter().enumerate() {
                let want = if (off..off + 7).contains(&j) { 0x3c ^ i } else { 0 };
                assert_eq!(b, want, "secret {i}: byte {j} of a reused page");
            }
            assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), [0x3c ^ i; 7]);
            news.push(s);
        }
        assert_eq!(stats().ready_pages, 0, "a parked page not taken");
        assert_eq!(stats().bytes_locked, locked, "a new mapping while pages were ready");
        println!("6 pages parked by 6 exited threads reused by this one, wiped");
    }
}

const LIMIT: u64 = 64 * 1024;

#[test]
fn pages_parked_on_every_shelf_are_given_back_before_a_refusal() {
    in_worker(
        "pages_parked_on_every_shelf_are_given_back_before_a_refusal",
        "budget",
        &[CAP_IPC_LOCK],
        budget_worker,
    );
}

/// Secrets of `f` until the budget refuses one with `LockFailed`.
fn fill(f: &ProtectedFactory) -> Vec<Secret> {
    let mut held = Vec::new();
    loop {
        match f.new(&mut [0x3c; 32]) {
            Ok(s) => held.push(s),
            Err(Error::LockFailed { .. }) => return held,
            Err(e) => panic!("expected LockFailed, got {e}"),
        }
        assert!(held.len() < 100, "never refused under a {LIMIT}-byte limit");
    }
}

fn budget_worker() {
    common::rlimit::no_ipc_lock_soft_limit(LIMIT);
    let default = Arc::new(ProtectedFactory::default());
    // The scratch buffer of the copy path, counted from now on.
    let warm = default.new(&mut [1u8; 32]).unwrap();
    warm.with_bytes(|_| ()).unwrap();
    warm.close().unwrap();
    release_ready_pages();
    let base = stats().bytes_locked;
    let fits = (LIMIT - base) / page();
    assert!(fits >= 8, "base {base} leaves too little of the limit");

    // Ready pages of another kind (guarded anonymous), one parked by each
    // of six threads that then exit: on every shelf.
    let other = Arc::new(
        ProtectedFactory::new(
            Options::default()
                .backend(Backend::Anonymous)
                .layout(Layout::Guarded),
        )
        .unwrap(),
    );
    park_from_exited_threads(&other, 6, 0xa5);
    assert_eq!(stats().ready_pages, 6);
    assert_eq!(stats().bytes_locked, base + 6 * page());

    // Default secrets up to the limit, from yet another thread: as many as
    // with an empty store.
    let d = default.clone();
    let held = std::thread::spawn(move || fill(&d)).join().unwrap();
    assert_eq!(
        held.len() as u64,
        fits,
        "secrets before the refusal with 6 ready pages of another kind on every shelf"
    );
    assert_eq!(stats().ready_pages, 0, "the store was not given back");
    drop(held);
    release_ready_pages();
    assert_eq!(stats().bytes_locked, base);
    println!("{fits} secrets fit with pages of another kind parked on every shelf");
}

child_test! {
    fn fork_child_takes_no_page_from_any_shelf() {
        let kinds: Vec<Arc<ProtectedFactory>> = [Layout::Page, Layout::Guarded]
            .into_iter()
            .map(|l| Arc::new(ProtectedFactory::new(Options::default().layout(l)).unwrap()))
            .collect();
        release_ready_pages();
        for f in &kinds {
            park_from_exited_threads(f, 5, 0xa5);
        }
        let parked = stats().ready_pages;
        assert_eq!(parked, 10);
        let status = fork_and_wait(|| {
            if stats().ready_pages != 0 {
                eprintln!("the child starts with {} ready pages", stats().ready_pages);
                return 1;
            }
            // Held to the end, so none is parked and taken again here.
            let mut held = Vec::new();
            for (i, f) in kinds.iter().enumerate() {
                for t in 0..6 {
                    let f = f.clone();
                    let (ok, s) = std::thread::spawn(move || {
                        let locked = stats().bytes_locked;
                        let s = f.new(&mut [0x3c; 16]).unwrap();
                        let fresh = stats().bytes_locked == locked + page();
                        (fresh && s.with_bytes(|b| b == [0x3c; 16]).unwrap(), s)
                    })
                    .join()
                    .unwrap();
                    held.push(s);
                    if !ok {
                        eprintln!("kind {i}, thread {t}: not a new mapping of the child's own");
                        return 1;
                    }
                }
            }
            0
        });
        assert!(status.success(), "fork child: {}", describe(status));
        assert_eq!(stats().ready_pages, parked, "the parent's store changed");
        println!("a fork child took none of {parked} pages parked by 10 threads");
    }
}

extern "C" fn keep_going(_: libc::c_int) {}

child_test! {
    fn no_page_parked_before_a_signal_purge_is_handed_out() {
        // SAFETY: installs a handler of this test's that does nothing.
        unsafe { libc::signal(libc::SIGHUP, keep_going as *const () as libc::sighandler_t) };
        purge_on_signals(&[libc::SIGHUP]).unwrap();
        let kinds: Vec<Arc<ProtectedFactory>> = [
            Options::default(),
            Options::default().layout(Layout::Guarded),
            Options::default().backend(Backend::Anonymous),
        ]
        .into_iter()
        .map(|o| Arc::new(ProtectedFactory::new(o).unwrap()))
        .collect();
        // This thread's copy-path scratch, counted from now on.
        kinds[0].new(&mut [1; 8]).unwrap().with_bytes(|_| ()).unwrap();
        release_ready_pages();
        let base = stats().bytes_locked;
        let parked: Vec<usize> = kinds
            .iter()
            .flat_map(|f| park_from_exited_threads(f, 5, 0xa5))
            .collect();
        // SAFETY: a signal to this thread: the purge, then the handler above.
        unsafe { libc::raise(libc::SIGHUP) };
        let mut news = Vec::new();
        for (i, f) in kinds.iter().enumerate() {
            for t in 0..5u8 {
                let want = [0x40 + t; 24];
                let s = f.new(&mut want.clone()).unwrap();
                let at = data_pages(&s).0;
                // The first take of a kind meets the purged pages of every
                // shelf and gives each back (an address may come back in a
                // new mapping, so the count tells, not the address).
                let left = (kinds.len() - i - 1) as u64 * 5;
                assert_eq!(stats().ready_pages, left, "kind {i}, secret {t}: a page parked before the purge kept or handed out");
                let vma = vma_at(at).expect("mapped");
                assert!(vma.locked_kb > 0 || vma.has_flag("lo"), "kind {i}: not locked: {:?}", vma.flags);
                assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), want);
                news.push(s);
            }
        }
        drop(news);
        release_ready_pages();
        assert_eq!(stats().ready_pages, 0);
        assert_eq!(stats().bytes_locked, base, "locked bytes left");
        println!("none of {} pages parked on every shelf before a signal purge reused", parked.len());
    }
}
