//! The staged fill of a ready page under a memlock limit that leaves no
//! room for the scratch (no `CAP_IPC_LOCK`, in a worker): with
//! `LockPolicy::Require` the creation still succeeds (the scratch cannot be
//! locked, so it falls back to filling the locked page itself), and the
//! reader is never handed unlocked memory, also when the thread already
//! holds an unlocked scratch region from an `AllowUnlocked` access it is
//! nested in. With `AllowUnlocked` the creation succeeds too.
// Linux only: rlimits, capabilities, procfs.
#![cfg(target_os = "linux")]

mod common;

use std::cell::Cell;
use std::io::{self, Read};

use common::child::in_worker;
use common::procfs::is_locked_at;
use common::rlimit::CAP_IPC_LOCK;
use securememory::{stats, Error, LockPolicy, Options, ProtectedFactory, Secret, SecretFactory};

const LIMIT: u64 = 64 * 1024;

/// Fills with 0x3c, noting whether each buffer it was handed is locked.
struct Watch<'a> {
    unlocked: &'a Cell<usize>,
}

impl Read for Watch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !is_locked_at(buf.as_ptr() as usize) {
            self.unlocked.set(self.unlocked.get() + 1);
        }
        buf.fill(0x3c);
        Ok(buf.len())
    }
}

/// Fill the budget with held one-page secrets, then close one: a ready
/// page, and no room left for a scratch region.
fn full_budget_and_one_ready(f: &ProtectedFactory) -> Vec<Secret> {
    let mut held = Vec::new();
    loop {
        match f.new(&mut [7u8; 32]) {
            Ok(s) => held.push(s),
            Err(Error::LockFailed { .. }) => break,
            Err(e) => panic!("filling the budget: {e}"),
        }
        assert!(held.len() < 100, "never refused under the limit");
    }
    held.pop().unwrap().close().unwrap();
    assert_eq!(stats().ready_pages, 1, "one ready page");
    held
}

/// A secret from the reader into the ready page (the budget full).
fn make(f: &ProtectedFactory, what: &str, unlocked: &Cell<usize>) -> Secret {
    let s = f
        .from_reader(&mut Watch { unlocked }, 48)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        stats().ready_pages,
        0,
        "{what}: the ready page was not used"
    );
    s
}

/// Give the held secrets back, then read `s` (an access needs a scratch).
fn check(s: Secret, held: Vec<Secret>, what: &str) {
    held.into_iter().for_each(|h| h.close().unwrap());
    assert_eq!(
        s.with_bytes(|b| b.to_vec()).unwrap(),
        vec![0x3c; 48],
        "{what}"
    );
    s.close().unwrap();
    securememory::release_ready_pages();
}

fn worker() {
    common::rlimit::no_ipc_lock_soft_limit(LIMIT);
    let require = ProtectedFactory::default();
    let allow = ProtectedFactory::new(Options::default().lock(LockPolicy::AllowUnlocked)).unwrap();

    // Require, no scratch yet on this thread.
    let held = full_budget_and_one_ready(&require);
    let unlocked = Cell::new(0);
    let s = make(&require, "require", &unlocked);
    assert_eq!(
        unlocked.get(),
        0,
        "require: the reader was handed unlocked memory"
    );
    check(s, held, "require");

    // Require, nested in an AllowUnlocked access whose scratch is unlocked.
    let outer = allow.new(&mut [9u8; 32]).unwrap();
    let held = full_budget_and_one_ready(&require);
    // On a new thread: no locked scratch of its own yet, so the outer
    // access's scratch is an unlocked region.
    let (first, s, u) = std::thread::scope(|sc| {
        sc.spawn(|| {
            outer
                .with_bytes(|b| {
                    assert!(
                        !is_locked_at(b.as_ptr() as usize),
                        "setup: the outer access's scratch is locked"
                    );
                    let u = Cell::new(0);
                    let s = make(&require, "require inside an unlocked access", &u);
                    (b[0], s, u.get())
                })
                .unwrap()
        })
        .join()
        .unwrap()
    });
    assert_eq!(first, 9);
    assert_eq!(u, 0, "require inside an unlocked access: unlocked memory");
    check(s, held, "require inside an unlocked access");
    outer.close().unwrap();

    // AllowUnlocked: goes on (the scratch may be unlocked: allowed).
    // (Filled through `require`: `allow` never stops at the limit; ready
    // pages are shared by lock policies.)
    let held = full_budget_and_one_ready(&require);
    let u = Cell::new(0);
    let s = make(&allow, "allow-unlocked", &u);
    println!(
        "allow-unlocked: reader handed unlocked memory {} times",
        u.get()
    );
    check(s, held, "allow-unlocked");
}

#[test]
fn staged_fill_under_a_memlock_limit_never_hands_out_unlocked_memory() {
    const TEST: &str = "staged_fill_under_a_memlock_limit_never_hands_out_unlocked_memory";
    in_worker(TEST, "staged", &[CAP_IPC_LOCK], worker);
}
