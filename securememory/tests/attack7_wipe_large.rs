//! Attack on the wipe (61a9332: from 256 bytes it is `rep stosq` then
//! `rep stosb`): `guarantee_wipe.rs` closes 32-byte secrets only, which
//! never reach it. Here secrets of lengths around the switch, of a page,
//! of a page and a bit, and of 64 KiB, in every configuration: after
//! `close` and after drop, every byte of the data pages (or pool slot) the
//! release wiped reads zero (`take_last_wiped` reads them after the wipe,
//! before the unmap), and the observation covered all of the secret.
// Linux only: the configurations include memfd and memfd_secret backends.
#![cfg(target_os = "linux")]

mod common;

use common::configs;
use securememory::{test_hooks, Secret, SecretFactory};

const LENS: [usize; 9] = [255, 256, 257, 1000, 4095, 4096, 4097, 5000, 65536];

fn check_wiped(name: &str, how: &str, len: usize, covered: usize) {
    let wiped = test_hooks::take_last_wiped()
        .unwrap_or_else(|| panic!("{name} {len} {how}: nothing was released"));
    // Pages: exactly the data pages; a pool slot: its size class.
    assert!(
        wiped.len() == covered || (wiped.len() >= len && wiped.len() <= len.next_power_of_two()),
        "{name} {len} {how}: observed {} bytes",
        wiped.len()
    );
    let dirty = wiped.iter().filter(|&&b| b != 0).count();
    assert_eq!(dirty, 0, "{name} {len} {how}: {dirty} bytes not wiped");
}

fn make(config: &configs::Config, len: usize) -> (Secret, usize) {
    let known: Vec<u8> = (0..len).map(|i| 0x80 | (i as u8 % 0x7f) | 1).collect();
    let secret = config.factory().new(&mut known.clone()).unwrap();
    assert!(
        secret.with_bytes(|b| b == known).unwrap(),
        "{} {len}: bytes before close",
        config.name
    );
    let covered = test_hooks::data_pages(&secret).1;
    assert!(
        covered >= len,
        "{} {len}: the observation covers {covered} bytes only",
        config.name
    );
    (secret, covered)
}

#[test]
fn large_secrets_are_wiped_in_every_configuration() {
    for config in configs::all() {
        for len in LENS {
            let (secret, covered) = make(&config, len);
            let _ = test_hooks::take_last_wiped();
            secret.close().unwrap();
            check_wiped(config.name, "close", len, covered);

            let (secret, covered) = make(&config, len);
            let _ = test_hooks::take_last_wiped();
            drop(secret);
            check_wiped(config.name, "drop", len, covered);
        }
    }
}
