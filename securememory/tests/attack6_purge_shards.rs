//! Attacks on `purge()` over the sharded list of live secrets (one list
//! per thread shard, eight per fork generation): a purge must close every
//! live secret whatever thread made it, and a secret whose creation began
//! before the purge must never be readable once the purge has returned.
//!
//! - secrets made on three times as many threads as there are shards,
//!   half of them by threads that have exited, held by another thread:
//!   every one is closed, and the purge counts each;
//! - a creation on each shard parked inside the list's lock as the purge
//!   starts (test hook): the purge waits for each and closes each;
//! - creations that began before the purge and register only after it
//!   returned (a reader source held open across the purge, on more
//!   threads than shards): `Purged`, never bytes;
//! - creators on sixteen threads racing repeated purges: a secret whose
//!   creation returned before the purge began is closed by it.
//!
//! Each runs in a child process of its own (a purge is process-wide).
// Linux only: uses Linux interfaces (re-executed child processes).
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use securememory::test_hooks::{at_lock, LockPoint};
use securememory::{
    purge, release_ready_pages, stats, Error, Layout, Options, ProtectedFactory, Secret,
    SecretFactory,
};

/// One factory per layout a secret can be registered from.
fn factories() -> Vec<ProtectedFactory> {
    [
        Layout::Page,
        Layout::Guarded,
        Layout::Pooled,
        Layout::Sealed,
    ]
    .into_iter()
    .map(|l| ProtectedFactory::new(Options::default().layout(l)).expect("factory"))
    .collect()
}

/// Closed and purged: every access fails with `Purged`, no closure runs.
fn assert_purged(s: &Secret, what: &str) {
    assert!(s.is_closed(), "{what}: not closed by the purge");
    let mut ran = false;
    let r = s.with_bytes(|_| ran = true);
    assert!(matches!(r, Err(Error::Purged)), "{what}: access gave {r:?}");
    assert!(!ran, "{what}: a closure ran on a purged secret");
    let e = s.reader().read(&mut [0u8; 4]).unwrap_err();
    assert!(
        matches!(common::library_error(&e), Some(Error::Purged)),
        "{what}: reader gave {e:?}"
    );
}

child_test! {
    fn purge_closes_the_secrets_of_every_thread() {
        let fs = Arc::new(factories());
        drop(fs[0].new(&mut [1; 8]).unwrap());
        release_ready_pages();
        let start = stats();
        // 12 threads make secrets and exit, handing them to this thread.
        let exited: Vec<Secret> = (0..12u8)
            .map(|t| {
                let fs = fs.clone();
                std::thread::spawn(move || {
                    fs.iter()
                        .map(|f| f.new(&mut [t + 1; 24]).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .flat_map(|h| h.join().unwrap())
            .collect();
        // 12 threads make secrets, keep them across the purge, and check
        // them after it: 24 threads on 8 shards.
        let made = Arc::new(Barrier::new(13));
        let purged = Arc::new(Barrier::new(13));
        let living: Vec<_> = (0..12u8)
            .map(|t| {
                let (fs, made, purged) = (fs.clone(), made.clone(), purged.clone());
                std::thread::spawn(move || {
                    let mine: Vec<Secret> =
                        fs.iter().map(|f| f.new(&mut [t + 100; 24]).unwrap()).collect();
                    made.wait();
                    purged.wait();
                    for (i, s) in mine.iter().enumerate() {
                        assert_purged(s, &format!("living thread {t}, secret {i}"));
                    }
                })
            })
            .collect();
        made.wait();
        let want = exited.len() + 12 * fs.len();
        let closed = purge();
        // Closed, not only refused: none is still in use (it would be,
        // locked, until its owner dropped it).
        assert_eq!(stats().in_use, start.in_use, "secrets left open by the purge");
        purged.wait();
        for h in living {
            h.join().expect("a living thread's secret survived the purge");
        }
        for (i, s) in exited.iter().enumerate() {
            assert_purged(s, &format!("secret {i} of an exited thread"));
        }
        assert_eq!(closed, want, "purge() counted {closed} of {want} live secrets");
        drop(exited);
        release_ready_pages();
        assert_eq!(stats().in_use, start.in_use, "secrets left in use after the purge");
        println!("{want} secrets of 24 threads (12 exited) closed by one purge");
    }
}

/// Creations parked inside the live list's lock (test hook) so far.
static PARKED: AtomicUsize = AtomicUsize::new(0);
/// Set to let the parked creations go on.
static GO: AtomicBool = AtomicBool::new(false);

std::thread_local! {
    static PARK_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn park_in_live_list(point: LockPoint) {
    if point == LockPoint::LiveList && PARK_HERE.with(|p| p.get()) {
        PARKED.fetch_add(1, Ordering::SeqCst);
        while !GO.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

child_test! {
    fn purge_waits_for_a_registration_on_every_shard() {
        let f = Arc::new(ProtectedFactory::default());
        drop(f.new(&mut [1; 8]).unwrap());
        let start = stats();
        at_lock(Some(park_in_live_list));
        // Eight threads, each taking the next shard on its first creation
        // (made one after another), each parked while it holds its shard's
        // lock registering its second secret.
        let mut held = Vec::new();
        for t in 0..8u8 {
            let f = f.clone();
            let (tx, rx) = mpsc::channel();
            let h = std::thread::spawn(move || {
                let first = f.new(&mut [t; 16]).unwrap();
                tx.send(()).unwrap();
                PARK_HERE.with(|p| p.set(true));
                let second = f.new(&mut [t + 50; 16]).unwrap();
                (first, second)
            });
            rx.recv().unwrap();
            held.push(h);
        }
        while PARKED.load(Ordering::SeqCst) < 8 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The purge starts with every shard's lock held by a creation that
        // began before it; it must wait for each, not skip a busy one.
        let purger = std::thread::spawn(purge);
        std::thread::sleep(Duration::from_millis(50));
        GO.store(true, Ordering::SeqCst);
        let closed = purger.join().unwrap();
        at_lock(None);
        let secrets: Vec<(Secret, Secret)> = held.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(stats().in_use, start.in_use, "secrets left open by the purge");
        for (t, (a, b)) in secrets.iter().enumerate() {
            assert_purged(a, &format!("thread {t}'s first secret"));
            assert_purged(b, &format!("thread {t}'s parked secret"));
        }
        assert_eq!(closed, 16, "purge() closed {closed} of 16");
        println!("a purge waited for a registration on each of 8 shards and closed all 16");
    }
}

/// A reader that hands out its byte only once `go` is set.
struct Held {
    go: Arc<AtomicBool>,
    started: Arc<AtomicUsize>,
    byte: u8,
    told: bool,
}

impl Read for Held {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.told {
            self.told = true;
            self.started.fetch_add(1, Ordering::SeqCst);
        }
        while !self.go.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        buf.fill(self.byte);
        Ok(buf.len())
    }
}

child_test! {
    fn creations_under_way_during_a_purge_are_purged() {
        let fs = Arc::new(factories());
        drop(fs[0].new(&mut [1; 8]).unwrap());
        let go = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        // 12 threads (more than the shards) with a creation under way: begun
        // before the purge, registered on their shards after it returned.
        let threads: Vec<_> = (0..12u8)
            .map(|t| {
                let (fs, go, started) = (fs.clone(), go.clone(), started.clone());
                std::thread::spawn(move || {
                    let f = &fs[usize::from(t) % fs.len()];
                    let mut r = Held { go, started, byte: t + 1, told: false };
                    f.from_reader(&mut r, 40).unwrap()
                })
            })
            .collect();
        while started.load(Ordering::SeqCst) < 12 {
            std::thread::sleep(Duration::from_millis(1));
        }
        purge();
        go.store(true, Ordering::SeqCst);
        let late: Vec<Secret> = threads.into_iter().map(|h| h.join().unwrap()).collect();
        for (t, s) in late.iter().enumerate() {
            assert_purged(s, &format!("creation {t} under way during the purge"));
        }
        // Made after the purge: an ordinary secret.
        let s = fs[0].new(&mut [7; 8]).unwrap();
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), [7; 8]);
        println!("12 creations under way during a purge are Purged");
    }
}

child_test! {
    fn creators_on_sixteen_threads_racing_purges() {
        let fs = Arc::new(factories());
        drop(fs[0].new(&mut [1; 8]).unwrap());
        let began = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = 30;
        let start = stats().in_use;
        for round in 0..rounds {
            began.store(false, Ordering::SeqCst);
            stop.store(false, Ordering::SeqCst);
            // Secrets not made whole before the purge (which it may leave open).
            let after = Arc::new(AtomicUsize::new(0));
            let counted = Arc::new(Barrier::new(17));
            let threads: Vec<_> = (0..16u8)
                .map(|t| {
                    let (fs, began, stop) = (fs.clone(), began.clone(), stop.clone());
                    let (after, counted) = (after.clone(), counted.clone());
                    std::thread::spawn(move || {
                        let f = &fs[usize::from(t) % fs.len()];
                        let mut kept = Vec::new();
                        let mut n = 0u8;
                        while !stop.load(Ordering::SeqCst) && kept.len() < 200 {
                            n = n.wrapping_add(1) | 1;
                            let s = f.new(&mut [n; 20]).unwrap();
                            // Made whole before the purge began?
                            let before = !began.load(Ordering::SeqCst);
                            kept.push((s, n, before));
                        }
                        // Checked once the purge has returned.
                        while !stop.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        let n_after = kept.iter().filter(|k| !k.2).count();
                        after.fetch_add(n_after, Ordering::SeqCst);
                        counted.wait();
                        counted.wait();
                        let mut bad = Vec::new();
                        for (i, (s, n, before)) in kept.iter().enumerate() {
                            match s.with_bytes(|b| b == [*n; 20]) {
                                Err(Error::Purged) => {}
                                Ok(true) if !before => {}
                                r => bad.push(format!(
                                    "thread {t} secret {i} (made before the purge: {before}): {r:?}"
                                )),
                            }
                        }
                        bad
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(2));
            began.store(true, Ordering::SeqCst);
            purge();
            stop.store(true, Ordering::SeqCst);
            counted.wait();
            // Every secret made whole before the purge is closed by it.
            let open = stats().in_use - start;
            let may = after.load(Ordering::SeqCst) as u64;
            assert!(open <= may, "round {round}: {open} secrets open, only {may} made after the purge began");
            counted.wait();
            let bad: Vec<String> = threads.into_iter().flat_map(|h| h.join().unwrap()).collect();
            assert!(bad.is_empty(), "round {round}: {bad:#?}");
        }
        println!("{rounds} purges raced by 16 creating threads: nothing made before one readable after it");
    }
}

/// A secret a thread holds in a thread-local, dropped as the thread exits.
struct HeldAtExit(Option<Secret>);

/// Secrets made by threads as they exit (in a thread-local's destructor).
static MADE_AT_EXIT: std::sync::Mutex<Vec<Secret>> = std::sync::Mutex::new(Vec::new());

impl Drop for HeldAtExit {
    fn drop(&mut self) {
        // Closed here (its page parked from a thread-local destructor), and
        // a new one made and registered on this thread's shard.
        drop(self.0.take());
        let s = ProtectedFactory::default().new(&mut [0x77; 24]).unwrap();
        MADE_AT_EXIT.lock().unwrap().push(s);
    }
}

std::thread_local! {
    static AT_EXIT: std::cell::RefCell<HeldAtExit> = const { std::cell::RefCell::new(HeldAtExit(None)) };
}

child_test! {
    fn secrets_closed_and_made_as_threads_exit_are_purged() {
        let f = Arc::new(ProtectedFactory::default());
        drop(f.new(&mut [1; 8]).unwrap());
        release_ready_pages();
        let start = stats();
        for t in 0..12u8 {
            let f = f.clone();
            std::thread::spawn(move || {
                let s = f.new(&mut [t; 24]).unwrap();
                AT_EXIT.with(|h| h.borrow_mut().0 = Some(s));
            })
            .join()
            .unwrap();
        }
        let made = MADE_AT_EXIT.lock().unwrap().len();
        assert_eq!(made, 12, "secrets made in thread-local destructors");
        assert_eq!(stats().in_use, start.in_use + 12, "the secrets held in thread-locals are not closed");
        for s in MADE_AT_EXIT.lock().unwrap().iter() {
            assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), [0x77; 24]);
        }
        let closed = purge();
        assert_eq!(closed, 12, "purge() closed {closed} of the 12 secrets made as threads exited");
        assert_eq!(stats().in_use, start.in_use, "secrets left open by the purge");
        for s in MADE_AT_EXIT.lock().unwrap().iter() {
            assert_purged(s, "a secret made as its thread exited");
        }
        println!("12 secrets closed and 12 made in thread-local destructors; the purge closed the 12");
    }
}
