//! The real-client row: encrypt a 1 KiB message with ChaCha20-Poly1305,
//! keyed from the benchmark secret inside `with_bytes` for every message
//! (the cost users judge the library by), and the same cipher keyed from a
//! plain array (the floor of that row: what the message costs without
//! `securememory`). Shared with the criterion bench.

use std::hint::black_box;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use securememory::{Error, Secret};

use super::ops::KEY;

/// Bytes of one message.
pub const MESSAGE: usize = 1024;

/// The implementation name of the plain-array row.
pub const PLAIN: &str = "plain-array";

/// Seal one message in place under `key` with nonce `n` (a counter: no
/// nonce repeats within a run of one thread's messages).
#[inline(always)]
fn seal(key: &[u8], n: u64, msg: &mut [u8; MESSAGE]) {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut nonce = Nonce::default();
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    let tag = cipher
        .encrypt_in_place_detached(&nonce, b"", msg)
        .expect("a 1 KiB message is far below the cipher's limit");
    black_box(tag);
}

/// `iters` messages keyed from `secret` inside `with_bytes`.
pub fn from_secret(secret: &Secret, iters: u64) -> Result<(), Error> {
    let mut msg = [0x42u8; MESSAGE];
    for n in 0..iters {
        secret.with_bytes(|key| seal(key, n, &mut msg))?;
        black_box(&msg);
    }
    Ok(())
}

/// `iters` messages keyed from a plain array.
pub fn from_plain(iters: u64) {
    let key = black_box(KEY);
    let mut msg = [0x42u8; MESSAGE];
    for n in 0..iters {
        seal(&key, n, &mut msg);
        black_box(&msg);
    }
}
