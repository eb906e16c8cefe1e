//! Capacity of the pool (issue 5): 100,000 secrets of 32 bytes held at once
//! by a process without `CAP_IPC_LOCK` under an 8 MiB `RLIMIT_MEMLOCK`
//! (where one page per secret stops at 2048), each readable with
//! `with_bytes`, each `PROT_NONE` at rest; the pool's figures add up; and
//! closing them all gives the slots back and returns empty chunks to the
//! operating system, keeping at most one (hysteresis).
//!
//! Both pools: `PROT_NONE` pages, and pages tagged with a protection key
//! (where the machine has keys; a loud `SKIPPED:` line otherwise).
//!
//! Runs in a worker process started without `CAP_IPC_LOCK` in any thread
//! (dropped from the bounding set before exec), which sets soft = hard =
//! 8 MiB so the test means the same on any machine. No timing is asserted;
//! the phases' durations are printed.
#![cfg(target_os = "linux")]

mod common;

use std::time::Instant;

use common::child::{self, Child};
use common::configs::protection_keys_or_skip;
use common::procfs::vm_lck_kib;
use common::rlimit::{set_memlock, CAP_IPC_LOCK};
use securememory::{
    stats, Layout, Options, PoolProtection, ProtectedFactory, Secret, SecretFactory,
};

const N: usize = 100_000;
const LEN: usize = 32;
const LIMIT: u64 = 8 << 20;

/// A distinct value per index: the index, then bytes derived from it.
fn value(i: usize) -> [u8; LEN] {
    let mut v = [0u8; LEN];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let mix = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for (j, b) in v[8..].iter_mut().enumerate() {
        *b = (mix >> ((j % 8) * 8)) as u8 ^ j as u8;
    }
    v
}

fn worker(protection: PoolProtection) {
    common::rlimit::drop_ipc_lock();
    set_memlock(Some(LIMIT), Some(LIMIT));
    let page = common::page_size() as u64;

    let factory = ProtectedFactory::new(
        Options::default()
            .layout(Layout::Pooled)
            .pool_protection(protection),
    )
    .unwrap();
    // The first access creates this thread's locked scratch buffer; do it
    // before the baseline. The first secret also tells the chunk size.
    let start = stats();
    let mut held: Vec<Secret> = Vec::with_capacity(N);
    let mut first = value(0);
    held.push(factory.new(&mut first).unwrap());
    assert_eq!(first, [0; LEN], "new wipes the source");
    assert_eq!(held[0].with_bytes(|b| b.to_vec()).unwrap(), value(0));
    let chunk_pages = stats().pool_pages - start.pool_pages;
    let chunk_slots = chunk_pages * page / LEN as u64;
    assert!(chunk_pages >= 1, "the first pooled secret made no chunk");

    let t = Instant::now();
    for i in 1..N {
        let mut v = value(i);
        let s = factory
            .new(&mut v)
            .unwrap_or_else(|e| panic!("secret {i} of {N} refused: {e}"));
        held.push(s);
    }
    let created = t.elapsed();

    let at_peak = stats();
    let used = at_peak.pool_slots_used - start.pool_slots_used;
    let pages = at_peak.pool_pages - start.pool_pages;
    let total = at_peak.pool_slots_total - start.pool_slots_total;
    let needed_pages = (N as u64 * LEN as u64).div_ceil(page);
    assert_eq!(used, N as u64, "pool_slots_used");
    assert!(
        total >= used && total - used < chunk_slots,
        "slots total {total} for {used} used"
    );
    assert!(
        pages >= needed_pages && pages < needed_pages + chunk_pages,
        "{pages} pool pages for {N} secrets of {LEN} bytes (at least {needed_pages})"
    );
    assert!(
        at_peak.bytes_locked >= pages * page,
        "pool pages not all counted as locked"
    );
    assert!(at_peak.bytes_locked <= LIMIT, "locked past the limit");
    assert!(vm_lck_kib() * 1024 <= LIMIT, "VmLck past the limit");
    let vm_lck_peak = vm_lck_kib();

    let t = Instant::now();
    for (i, s) in held.iter().enumerate() {
        let ok = s
            .with_bytes(|b| b == value(i))
            .unwrap_or_else(|e| panic!("secret {i}: {e}"));
        assert!(ok, "secret {i} does not hold its value");
    }
    let verified = t.elapsed();

    let t = Instant::now();
    let mut sampled = 0;
    for s in held.iter().step_by(997) {
        assert!(
            !s.is_readable_now().unwrap(),
            "a pooled secret is readable at rest"
        );
        sampled += 1;
    }
    let sample_time = t.elapsed();

    let t = Instant::now();
    for (i, s) in held.iter().enumerate() {
        s.close()
            .unwrap_or_else(|e| panic!("close secret {i}: {e}"));
    }
    drop(held);
    let closed = t.elapsed();

    let end = stats();
    assert_eq!(
        end.pool_slots_used, start.pool_slots_used,
        "slots still in use after closing all"
    );
    assert_eq!(end.in_use, start.in_use);
    let kept = end.pool_pages - start.pool_pages;
    assert!(
        kept <= chunk_pages,
        "{kept} pool pages kept after closing all (one {chunk_pages}-page chunk allowed)"
    );
    assert!(
        end.bytes_locked <= at_peak.bytes_locked - (pages - kept) * page,
        "pool pages not unlocked"
    );
    assert!(
        vm_lck_kib() * 1024 <= end.bytes_locked,
        "VmLck above the library's count after closing"
    );

    println!(
        "{N} pooled ({protection:?}) {LEN}-byte secrets without CAP_IPC_LOCK under an 8 MiB limit: {pages} pool pages, \
         {} KiB locked (VmLck {vm_lck_peak} kB), chunk of {chunk_pages} pages",
        at_peak.bytes_locked / 1024
    );
    println!(
        "create {created:?}, verify with_bytes {verified:?}, {sampled} at-rest checks {sample_time:?}, close {closed:?}; \
         after closing: {kept} pool pages kept, {} KiB locked",
        end.bytes_locked / 1024
    );
}

/// The pool each worker role fills.
const ROLES: [(&str, PoolProtection); 2] = [
    ("capacity", PoolProtection::ProtNone),
    ("capacity-pkey", PoolProtection::ProtectionKey),
];

#[test]
fn hundred_thousand_pooled_secrets_under_8_mib() {
    const TEST: &str = "hundred_thousand_pooled_secrets_under_8_mib";
    if let Some(role) = child::role() {
        let (_, protection) = ROLES
            .into_iter()
            .find(|(r, _)| *r == role)
            .expect("known role");
        worker(protection);
        child::done();
        return;
    }
    for (role, protection) in ROLES {
        if protection == PoolProtection::ProtectionKey
            && !protection_keys_or_skip("the protection-key pool's capacity")
        {
            continue;
        }
        let t = Instant::now();
        let run = Child::new(TEST, role).drop_bounding(&[CAP_IPC_LOCK]).run();
        run.assert_done(role);
        print!("{}", run.stdout);
        println!("{role}: worker process took {:?}", t.elapsed());
    }
}
