//! Guarantees of the sealed layout (`Layout::Sealed`, issue 13):
//!
//! - the API behaves as for every layout (new wipes its source,
//!   create_random, from_reader, with_bytes, with_bytes_func, reader,
//!   close, drop, metrics);
//! - plaintext is never at rest: a scan of every mapping of the process
//!   through `/proc/self/mem` finds the secret inside an access (the
//!   control: in the scratch buffer) and nowhere after creation nor after
//!   an access; the ciphertext is found in the arena alone;
//! - a fork child's access is `Forked`, the arena reads as zeros there, and
//!   the child seals secrets of its own under a key of its own;
//! - one flipped bit of the ciphertext or of the tag is
//!   `Error::AuthenticationFailed` (never bytes), and so is a ciphertext
//!   copied from another secret's slot; close then still wipes it;
//! - 20,000 (`SECUREMEMORY_SEALED_MILLION=1`: 1,000,000) 32-byte sealed
//!   secrets held and read back by a process without `CAP_IPC_LOCK` under
//!   a 64 KiB memlock limit;
//! - the scratch reservations an access used are zeros after it.
//!
//! Each runs in a child process (process-wide figures, scans, fork, limits).

#[macro_use]
mod common;
mod support_proc;

use std::ops::Range;

use common::child::in_worker;
use common::mem::anon_rw;
use common::procfs::read_proc_mem;
use common::rlimit::CAP_IPC_LOCK;
use common::scan::Scanner;
use securememory::{
    stats, test_hooks, Error, Layout, Options, ProtectedFactory, Secret, SecretFactory,
    SEALED_MAX_LEN,
};
use support_proc::fork_and_wait;

/// Every needle is held XOR this mask, so the test's own memory never
/// holds the bytes it looks for.
const MASK: u8 = 0xa7;

fn sealed() -> ProtectedFactory {
    ProtectedFactory::new(Options::default().layout(Layout::Sealed)).expect("sealed factory")
}

fn masked(b: &[u8]) -> Vec<u8> {
    b.iter().map(|x| x ^ MASK).collect()
}

/// The mapping (from `/proc/self/maps`) holding `addr`.
fn mapping_of(addr: usize) -> Range<usize> {
    common::procfs::mapping_at(addr)
        .map(|m| m.start..m.end)
        .expect("a mapping")
}

child_test! {
    fn api_behaves_as_every_layout() {
        let f = sealed();
        assert_eq!(f.options().layout, Layout::Sealed);
        let before = stats();
        let mut src = *b"0123456789abcdef0123456789ABCDEF";
        let s = f.new(&mut src).unwrap();
        assert_eq!(src, [0u8; 32], "new wipes its source");
        assert_eq!(s.len(), 32);
        assert_eq!(s.access_path(), securememory::AccessPath::Copy);
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), b"0123456789abcdef0123456789ABCDEF");
        let sum: u32 = s
            .with_bytes_func(|b| Ok::<_, Error>(b.iter().map(|&x| x as u32).sum()))
            .unwrap();
        assert_eq!(sum, b"0123456789abcdef0123456789ABCDEF".iter().map(|&x| x as u32).sum());
        use std::io::Read;
        let mut all = Vec::new();
        s.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all, b"0123456789abcdef0123456789ABCDEF");
        let mut r = s.reader();
        let mut four = [0u8; 4];
        let mut pieces = Vec::new();
        while r.read(&mut four).unwrap() > 0 {
            pieces.extend_from_slice(&four);
        }
        assert_eq!(pieces, b"0123456789abcdef0123456789ABCDEF");
        assert!(!s.is_readable_now().unwrap(), "the key's slot is not readable at rest");

        let after = stats();
        assert_eq!(after.sealed_in_use, before.sealed_in_use + 1);
        assert!(after.sealed_arena_bytes > 0);

        let random = f.create_random(64).unwrap();
        let bytes = random.with_bytes(|b| b.to_vec()).unwrap();
        assert_ne!(bytes, vec![0u8; 64]);
        assert_eq!(random.with_bytes(|b| b.to_vec()).unwrap(), bytes);
        let read = f.from_reader(&mut &[9u8; 100][..], 100).unwrap();
        assert_eq!(read.with_bytes(|b| b.to_vec()).unwrap(), vec![9u8; 100]);
        let biggest = f.from_reader(&mut &vec![5u8; SEALED_MAX_LEN][..], SEALED_MAX_LEN).unwrap();
        assert!(biggest.with_bytes(|b| b.iter().all(|&x| x == 5)).unwrap());
        assert!(matches!(
            f.create_random(SEALED_MAX_LEN + 1),
            Err(Error::InvalidSize { .. })
        ));

        // Many secrets: each opens to its own bytes; locked memory does not grow.
        let locked = stats().bytes_locked;
        let many: Vec<Secret> = (0..5000u32)
            .map(|i| f.new(&mut i.to_le_bytes().repeat(8)).unwrap())
            .collect();
        for (i, m) in many.iter().enumerate() {
            assert_eq!(m.with_bytes(|b| b.to_vec()).unwrap(), (i as u32).to_le_bytes().repeat(8));
        }
        assert_eq!(stats().bytes_locked, locked, "ciphertexts are not locked");
        drop(many);

        s.close().unwrap();
        assert!(s.is_closed());
        assert!(matches!(s.with_bytes(|_| ()), Err(Error::Closed)));
        s.close().unwrap();
        drop((random, read, biggest));
        assert_eq!(stats().sealed_in_use, before.sealed_in_use);
    }
}

child_test! {
    fn plaintext_is_never_at_rest() {
        let f = sealed();
        let mut scan = Scanner::new(MASK);
        for how in ["create_random", "new"] {
            let s = match how {
                "create_random" => f.create_random(32).unwrap(),
                _ => {
                    // The caller's bytes in a page of the test's own, wiped by `new`.
                    let p = anon_rw(4096) as *mut u8;
                    // SAFETY: the page just mapped, 32 bytes of it.
                    let src = unsafe { std::slice::from_raw_parts_mut(p, 32) };
                    // SAFETY: getrandom writes 32 bytes into the page.
                    assert_eq!(unsafe { libc::getrandom(p.cast(), 32, 0) }, 32);
                    f.new(src).unwrap()
                }
            };
            // The control: inside an access the scan finds the plaintext
            // (in this thread's scratch buffer), so it can see memory.
            let (needle, inside) = s
                .with_bytes(|b| {
                    let m = masked(b);
                    let hits = scan.find(&m);
                    (m, hits)
                })
                .unwrap();
            assert!(!inside.is_empty(), "{how}: the scan does not find the plaintext inside an access");
            let scratch = test_hooks::scratch_regions();
            assert!(
                inside.iter().all(|a| scratch.iter().any(|&(s, l)| (s..s + l).contains(a))),
                "{how}: inside an access the plaintext is outside the scratch: {inside:x?} (scratch {scratch:x?})"
            );
            let after = scan.find(&needle);
            assert!(after.is_empty(), "{how}: plaintext at rest at {after:x?}");

            // The ciphertext: in the arena alone.
            let (ct_addr, ct_len) = test_hooks::sealed_ciphertext(&s).expect("a sealed secret");
            let ct = read_proc_mem(ct_addr, ct_len).unwrap();
            let ct_masked = masked(&ct);
            drop(ct);
            let arena = mapping_of(ct_addr);
            let hits = scan.find(&ct_masked);
            assert!(hits.contains(&ct_addr), "{how}: the ciphertext is not where the hook says");
            assert!(
                hits.iter().all(|a| arena.contains(a)),
                "{how}: the ciphertext is outside the arena: {hits:x?}"
            );
            // The arena is not locked, and is out of dumps and fork children.
            let vma = common::procfs::vma_at(ct_addr).expect("the arena's smaps entry");
            assert!(vma.has_flag("dd"), "{how}: the arena is not do-not-dump");
            assert!(vma.has_flag("wf"), "{how}: the arena is not wipe-on-fork");
            assert!(!vma.has_flag("lo"), "{how}: the arena is locked");
            s.close().unwrap();
            assert_eq!(read_proc_mem(ct_addr, ct_len).unwrap(), vec![0u8; ct_len], "{how}: close wipes the ciphertext");
        }
    }
}

child_test! {
    fn scratch_is_wiped_after_access() {
        let f = sealed();
        let s = f.create_random(48).unwrap();
        let mut seen = Vec::new();
        s.with_bytes(|b| seen = masked(b)).unwrap();
        for (addr, len) in test_hooks::scratch_regions() {
            let now = read_proc_mem(addr, len).unwrap();
            assert!(now.iter().all(|&b| b == 0), "scratch at {addr:x} holds bytes after the access");
        }
        assert_eq!(seen.len(), 48);
    }
}

#[test]
fn fork_child_gets_forked_and_zeros() {
    in_worker("fork_child_gets_forked_and_zeros", "worker", &[], || {
        let f = sealed();
        let s = f.new(&mut [42u8; 32]).unwrap();
        let (ct_addr, ct_len) = test_hooks::sealed_ciphertext(&s).unwrap();
        assert!(read_proc_mem(ct_addr, ct_len)
            .unwrap()
            .iter()
            .any(|&b| b != 0));
        let status = fork_and_wait(|| {
            if !matches!(s.with_bytes(|_| ()), Err(Error::Forked)) {
                return 2;
            }
            let mut out = [0u8; 32];
            use std::io::Read;
            if s.reader().read(&mut out).is_ok() {
                return 3;
            }
            if read_proc_mem(ct_addr, ct_len).unwrap() != vec![0u8; ct_len] {
                return 4;
            }
            // The child seals under a key of its own.
            let mine = f.new(&mut [7u8; 32]).unwrap();
            if mine.with_bytes(|b| b == [7u8; 32]).unwrap() {
                0
            } else {
                5
            }
        });
        assert_eq!(status.code(), Some(0), "fork child: {status:?}");
        assert_eq!(
            s.with_bytes(|b| b[0]).unwrap(),
            42,
            "the parent still reads its secret"
        );
    });
}

child_test! {
    fn tampering_is_a_typed_error() {
        let f = sealed();
        let before = stats().sealed_auth_failures;
        // One flipped bit anywhere in the ciphertext or the tag.
        for at in [0usize, 17, 31, 32, 47] {
            let s = f.new(&mut [0x5au8; 32]).unwrap();
            test_hooks::tamper_sealed(&s, at, 0x01).unwrap();
            let mut ran = false;
            let r = s.with_bytes(|_| ran = true);
            assert!(matches!(r, Err(Error::AuthenticationFailed)), "byte {at}: {r:?}");
            assert!(!ran, "byte {at}: the closure ran on unauthenticated bytes");
            use std::io::Read;
            let e = s.reader().read(&mut [0u8; 8]).unwrap_err();
            assert!(matches!(common::library_error(&e), Some(Error::AuthenticationFailed)));
            // Flipped back, it opens again: the error is not remembered.
            test_hooks::tamper_sealed(&s, at, 0x01).unwrap();
            assert_eq!(s.with_bytes(|b| b[0]).unwrap(), 0x5a);
            test_hooks::tamper_sealed(&s, at, 0x01).unwrap();
            let (addr, len) = test_hooks::sealed_ciphertext(&s).unwrap();
            s.close().unwrap();
            assert_eq!(read_proc_mem(addr, len).unwrap(), vec![0u8; len], "close wipes a tampered ciphertext");
        }
        assert_eq!(stats().sealed_auth_failures, before + 5 * 2);

        // Swapping: another secret's ciphertext and tag copied into this
        // one's slot do not open (the id and length are authenticated).
        let a = f.new(&mut [1u8; 32]).unwrap();
        let b = f.new(&mut [2u8; 32]).unwrap();
        let (aa, len) = test_hooks::sealed_ciphertext(&a).unwrap();
        let (ba, _) = test_hooks::sealed_ciphertext(&b).unwrap();
        let from_b = read_proc_mem(ba, len).unwrap();
        let from_a = read_proc_mem(aa, len).unwrap();
        for (i, (x, y)) in from_a.iter().zip(&from_b).enumerate() {
            test_hooks::tamper_sealed(&a, i, x ^ y).unwrap();
        }
        assert_eq!(read_proc_mem(aa, len).unwrap(), from_b);
        assert!(matches!(a.with_bytes(|_| ()), Err(Error::AuthenticationFailed)));
        assert_eq!(b.with_bytes(|v| v[0]).unwrap(), 2);
    }
}

const LIMIT: u64 = 64 * 1024;

#[test]
fn capacity_past_the_memlock_limit() {
    in_worker(
        "capacity_past_the_memlock_limit",
        "worker",
        &[CAP_IPC_LOCK],
        || {
            common::rlimit::no_ipc_lock_soft_limit(LIMIT);
            let n: u32 = if std::env::var("SECUREMEMORY_SEALED_MILLION").is_ok() {
                1_000_000
            } else {
                20_000
            };
            let f = sealed();
            let value = |i: u32| {
                let mut v = [0u8; 32];
                v[..4].copy_from_slice(&i.to_le_bytes());
                v[4..8].copy_from_slice(&(!i).to_le_bytes());
                v
            };
            let held: Vec<Secret> = (0..n)
                .map(|i| {
                    f.new(&mut value(i))
                        .unwrap_or_else(|e| panic!("secret {i}: {e}"))
                })
                .collect();
            for (i, s) in held.iter().enumerate() {
                assert!(
                    s.with_bytes(|b| b == value(i as u32)).unwrap(),
                    "secret {i} reads back wrong"
                );
            }
            let st = stats();
            assert!(
                st.bytes_locked <= LIMIT,
                "locked {} past the limit",
                st.bytes_locked
            );
            assert!(st.sealed_in_use >= n as u64);
            println!(
                "{n} sealed 32-byte secrets held under a {LIMIT}-byte memlock limit without CAP_IPC_LOCK; \
                 locked {} bytes, arena {} bytes",
                st.bytes_locked, st.sealed_arena_bytes
            );
        },
    );
}
