//! Guarantee: a secret's memory is wiped when it is closed or dropped, and
//! the copy path's scratch buffer is wiped when an access ends.
//!
//! `test_hooks::take_last_wiped()` returns the bytes of the last region (or
//! pool slot) released on this thread, read after the wipe and before the
//! unmap. Each check first proves the secret's bytes were there (non-zero,
//! exact) and that the observation covers the whole data pages (or slot),
//! so an all-zero result means "wiped", not "looked at the wrong place".

mod common;

use common::configs::{self, Config};
use securememory::{test_hooks, AccessPath, Layout, Secret, SecretFactory};

fn make(config: &Config, len: usize) -> (Secret, Vec<u8>) {
    let known: Vec<u8> = (0..len).map(|i| 0x80 | (i as u8 % 0x7f) | 1).collect();
    let secret = config.factory().new(&mut known.clone()).unwrap();
    assert!(known.iter().all(|&b| b != 0));
    assert!(
        secret.with_bytes(|b| b == known).unwrap(),
        "{}: bytes before close",
        config.name
    );
    (secret, known)
}

/// The bytes `take_last_wiped` covers: the data pages, or a pooled slot
/// (`data_pages` gives the slot's address and the secret's length; the
/// slot is the length's power-of-two size class, so equal for 32 bytes).
fn observed_len(secret: &Secret) -> usize {
    test_hooks::data_pages(secret).1
}

fn assert_wiped(what: &str, expected_len: usize) {
    let wiped =
        test_hooks::take_last_wiped().unwrap_or_else(|| panic!("{what}: nothing was released"));
    assert_eq!(
        wiped.len(),
        expected_len,
        "{what}: observed the wrong range"
    );
    let dirty = wiped.iter().filter(|&&b| b != 0).count();
    assert_eq!(dirty, 0, "{what}: {dirty} bytes not wiped");
}

#[test]
fn close_and_drop_wipe_every_configuration() {
    for config in configs::all() {
        let (secret, _) = make(&config, 32);
        let len = observed_len(&secret);
        if config.layout() != Layout::Pooled {
            assert!(
                len >= 4096 && len % 4096 == 0,
                "{}: data pages {len}",
                config.name
            );
        }
        let _ = test_hooks::take_last_wiped();
        secret.close().unwrap();
        assert_wiped(&format!("{} close", config.name), len);

        let (secret, _) = make(&config, 32);
        let len = observed_len(&secret);
        let _ = test_hooks::take_last_wiped();
        drop(secret);
        assert_wiped(&format!("{} drop", config.name), len);
        println!(
            "{}: wiped on close and on drop ({len} bytes observed)",
            config.name
        );
    }
}

#[test]
fn scratch_is_wiped_after_the_access() {
    // A size class of its own (64) for the pool, apart from the other test.
    for config in configs::select(|c| c.path() == AccessPath::Copy) {
        let (secret, known) = make(&config, 64);
        let (start, pages) = test_hooks::data_pages(&secret);
        let at = secret
            .with_bytes(|bytes| {
                let at = bytes.as_ptr() as usize;
                // SAFETY: `at` is the closure's own slice, valid for its length.
                let seen: Vec<u8> = (0..32)
                    .map(|i| unsafe { std::ptr::read_volatile((at + i) as *const u8) })
                    .collect();
                // The raw read below sees the secret while it is there.
                assert_eq!(seen, known[..32], "{}: raw read inside", config.name);
                at
            })
            .unwrap();
        assert!(
            !(start..start + pages).contains(&at),
            "{}: not the scratch",
            config.name
        );
        // SAFETY: `at` is in this thread's scratch buffer, which stays mapped
        // read-write for the thread's life (it is released only when the
        // thread exits), so reading it after the access is sound.
        let after: Vec<u8> = (0..32)
            .map(|i| unsafe { std::ptr::read_volatile((at + i) as *const u8) })
            .collect();
        assert_eq!(
            after, [0u8; 32],
            "{}: scratch not wiped after the access",
            config.name
        );
        println!("{}: scratch at {at:#x} wiped after the access", config.name);
    }
}
