//! Attack on the sealed layout's cipher, now keyed with the AES encryption
//! schedule alone (`AesGcm<Aes256Enc, U12>`): it must still be standard
//! AES-256-GCM with the layout's 96-bit nonce and associated data, so that
//! every ciphertext it made opens, and nothing weaker or different is
//! stored. For secrets of 1 to 4096 bytes, sealed on several threads:
//!
//! - the stored ciphertext and tag, taken with the sealing key (test hooks),
//!   open with the reference `aes_gcm::Aes256Gcm` to the secret's bytes,
//!   and the reference seals those bytes to the very same ciphertext and tag;
//! - each still opens through the library after 2,000 later sealings, from
//!   another thread; and a flipped bit in its last ciphertext byte or any tag
//!   byte is `AuthenticationFailed`, flipped back it opens again.
//!
//! Runs in a child process (a fresh sealing key whose nonces count from 0).
// Linux only: uses Linux interfaces (memfd_create, /proc/self/mem).
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use common::procfs::read_proc_mem;
use common::sealed::sealing_key;
use securememory::test_hooks::{sealed_ciphertext, tamper_sealed};
use securememory::{Error, Layout, Options, ProtectedFactory, Secret, SecretFactory};

const LENS: [usize; 8] = [1, 15, 16, 17, 31, 255, 1000, 4096];

fn plain(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn nonce(id: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&id.to_le_bytes());
    n.into()
}

fn ad(id: u64, len: usize) -> [u8; 32] {
    let mut ad = [0u8; 32];
    ad[..16].copy_from_slice(b"securememory-sv1");
    ad[16..24].copy_from_slice(&id.to_le_bytes());
    ad[24..].copy_from_slice(&(len as u64).to_le_bytes());
    ad
}

/// Check `s` (holding `want`) against the reference AES-256-GCM: some nonce
/// in `ids` opens its stored ciphertext to `want`, and the reference seals
/// `want` under that nonce to the same bytes.
fn check_reference(s: &Secret, want: &[u8], ids: std::ops::Range<u64>) {
    let len = want.len();
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&sealing_key(s, 0)));
    let (at, n) = sealed_ciphertext(s).unwrap();
    assert_eq!(n, len + 16);
    let stored = read_proc_mem(at, n).unwrap();
    let (ct, tag) = stored.split_at(len);
    let id = ids
        .clone()
        .find(|&id| {
            let mut buf = ct.to_vec();
            cipher
                .decrypt_in_place_detached(&nonce(id), &ad(id, len), &mut buf, Tag::from_slice(tag))
                .is_ok()
                && buf == want
        })
        .unwrap_or_else(|| {
            panic!("{len} bytes: no nonce in {ids:?} opens the ciphertext with AES-256-GCM")
        });
    let mut again = want.to_vec();
    let t = cipher
        .encrypt_in_place_detached(&nonce(id), &ad(id, len), &mut again)
        .unwrap();
    assert_eq!(
        again, ct,
        "{len} bytes: ciphertext differs from AES-256-GCM's"
    );
    assert_eq!(
        t.as_slice(),
        tag,
        "{len} bytes: tag differs from AES-256-GCM's"
    );
}

child_test! {
    fn sealed_is_standard_aes_256_gcm_and_keeps_opening() {
        let f = Arc::new(ProtectedFactory::new(Options::default().layout(Layout::Sealed)).unwrap());
        // Sealed on 8 threads, one after the other.
        let mut secrets: Vec<(Secret, Vec<u8>)> = Vec::new();
        for (t, &len) in LENS.iter().enumerate() {
            let f = f.clone();
            let want = plain(len, t as u8);
            let mut src = want.clone();
            let s = std::thread::spawn(move || f.new(&mut src).unwrap()).join().unwrap();
            secrets.push((s, want));
        }
        let sealed_so_far = secrets.len() as u64;
        for (s, want) in &secrets {
            check_reference(s, want, 0..sealed_so_far + 8);
        }
        // 2,000 later sealings on other threads, then each opens again from
        // yet another thread.
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for i in 0..500u32 {
                        let s = f.new(&mut [t as u8 ^ i as u8; 48]).unwrap();
                        assert_eq!(s.with_bytes(|b| b[0]).unwrap(), t as u8 ^ i as u8);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let secrets = Arc::new(secrets);
        let s2 = secrets.clone();
        std::thread::spawn(move || {
            for (s, want) in s2.iter() {
                assert_eq!(&s.with_bytes(|b| b.to_vec()).unwrap(), want, "{} bytes", want.len());
            }
        })
        .join()
        .unwrap();
        for (s, want) in secrets.iter() {
            let len = want.len();
            for at in [len - 1, len, len + 7, len + 15] {
                tamper_sealed(s, at, 0x80).unwrap();
                let mut ran = false;
                let r = s.with_bytes(|_| ran = true);
                assert!(matches!(r, Err(Error::AuthenticationFailed)), "{len} bytes, byte {at}: {r:?}");
                assert!(!ran, "{len} bytes, byte {at}: the closure ran");
                tamper_sealed(s, at, 0x80).unwrap();
                assert_eq!(&s.with_bytes(|b| b.to_vec()).unwrap(), want, "{len} bytes, byte {at} restored");
            }
        }
        println!("{} sealed secrets are standard AES-256-GCM and keep opening", LENS.len());
    }
}
