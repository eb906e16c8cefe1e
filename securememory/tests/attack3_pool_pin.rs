//! Attack: "Empty chunks go back to the operating system, except one per
//! size class kept as hysteresis" and "Closing wipes, unlocks and unmaps".
//! A program that closes its pooled secrets but keeps the (closed) handles
//! must get the second empty chunk's locked pages back at close, not only
//! when the handles are dropped: `secret.pool.pages` says they are gone.
#![cfg(target_os = "linux")]

mod common;

use securememory::{stats, Layout, Options, ProtectedFactory, SecretFactory};

#[test]
fn closing_every_secret_of_a_chunk_returns_it_though_handles_live() {
    // The 1024-byte class: 64 slots in a 16-page chunk (no other test in
    // this binary uses the pool).
    let f = ProtectedFactory::new(Options::default().layout(Layout::Pooled)).unwrap();
    let base = stats();
    let page = common::page_size() as u64;
    let per_chunk = (16 * page) / 1024;
    let secrets: Vec<_> = (0..per_chunk + 1)
        .map(|i| f.new(&mut [i as u8 | 1; 1000]).unwrap())
        .collect();
    let full = stats();
    assert_eq!(full.pool_pages - base.pool_pages, 32, "two chunks");
    for s in &secrets {
        s.close().unwrap();
    }
    let closed = stats();
    // One empty chunk is kept, the other returned.
    assert_eq!(
        closed.pool_pages - base.pool_pages,
        16,
        "pool_pages after close"
    );
    assert_eq!(
        closed.bytes_locked,
        full.bytes_locked - 16 * page,
        "the returned chunk is still locked while closed handles live"
    );
    drop(secrets);
    assert_eq!(stats().bytes_locked, closed.bytes_locked);
}
