//! A real client: a service that encrypts 1 KiB messages with
//! ChaCha20-Poly1305 under a key it keeps in a `Secret`, keyed inside
//! `with_bytes` for every message, so the key is readable only while one
//! message is sealed. Runs the default, pooled and sealed layouts, checks
//! every message opens again, and prints the time per message beside the
//! same cipher keyed from a plain array.
//!
//! `cargo run --release -p securememory --example encrypt_messages`
//! (`securememory bench` has the same comparison as its
//! `chacha20poly1305_1k` rows).

use std::time::Instant;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use securememory::{Layout, Options, ProtectedFactory, Secret, SecretFactory};

const MESSAGE: usize = 1024;
const MESSAGES: u64 = 20_000;

/// A nonce from a message counter: never reused under one key.
fn nonce(n: u64) -> Nonce {
    let mut nonce = Nonce::default();
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    nonce
}

/// Seal message number `n` in place under the key in `key`; the tag.
fn seal(key: &Secret, n: u64, msg: &mut [u8]) -> Result<Tag, Box<dyn std::error::Error>> {
    // The cipher is made from the key inside the access: the key's bytes
    // are readable only for this one message.
    let tag = key.with_bytes(|k| {
        ChaCha20Poly1305::new(Key::from_slice(k)).encrypt_in_place_detached(&nonce(n), b"", msg)
    })?;
    Ok(tag.map_err(|e| format!("seal: {e}"))?)
}

/// Open message number `n` in place; an error if it was tampered with.
fn open(key: &Secret, n: u64, msg: &mut [u8], tag: &Tag) -> Result<(), Box<dyn std::error::Error>> {
    let opened = key.with_bytes(|k| {
        ChaCha20Poly1305::new(Key::from_slice(k)).decrypt_in_place_detached(
            &nonce(n),
            b"",
            msg,
            tag,
        )
    })?;
    Ok(opened.map_err(|e| format!("open: {e}"))?)
}

/// Encrypt and decrypt `MESSAGES` messages under `key`; ns per message
/// (sealing only).
fn run(key: &Secret) -> Result<f64, Box<dyn std::error::Error>> {
    let mut msg = [0u8; MESSAGE];
    let mut sealing = 0u128;
    for n in 0..MESSAGES {
        msg.fill(n as u8);
        let t = Instant::now();
        let tag = seal(key, n, &mut msg)?;
        sealing += t.elapsed().as_nanos();
        open(key, n, &mut msg, &tag)?;
        assert!(
            msg.iter().all(|&b| b == n as u8),
            "message {n} did not round-trip"
        );
    }
    Ok(sealing as f64 / MESSAGES as f64)
}

/// The same cipher keyed from a plain array: ns per message.
fn plain() -> f64 {
    let key = std::hint::black_box([7u8; 32]);
    let mut msg = [0u8; MESSAGE];
    let t = Instant::now();
    for n in 0..MESSAGES {
        let tag = ChaCha20Poly1305::new(Key::from_slice(&key))
            .encrypt_in_place_detached(&nonce(n), b"", &mut msg)
            .expect("seal");
        std::hint::black_box((&msg, tag));
    }
    t.elapsed().as_nanos() as f64 / MESSAGES as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = plain();
    println!("{MESSAGES} messages of {MESSAGE} bytes, ChaCha20-Poly1305, one thread");
    println!("  {:<9} {base:>7.0} ns per message", "plain");
    for (name, layout) in [
        ("default", Layout::Page),
        ("pooled", Layout::Pooled),
        ("sealed", Layout::Sealed),
    ] {
        let factory = ProtectedFactory::new(Options::default().layout(layout))?;
        // The key never exists outside protected memory: drawn from the
        // CSPRNG straight into it (for the sealed layout: into this
        // thread's scratch buffer, then sealed).
        let key = factory.create_random(32)?;
        let ns = run(&key)?;
        println!(
            "  {name:<9} {ns:>7.0} ns per message (+{:.0} ns, {:.2}x plain)",
            ns - base,
            ns / base
        );
        key.close()?;
    }
    Ok(())
}
