//! Helpers of `go_parity.rs`, `faults.rs` and `observability.rs`: a
//! footprint of the process-wide figures (counters, `VmLck`,
//! `/proc/self/maps`) for leak checks, test patterns, and the forms a leaked
//! secret could take in text output.
//!
//! Each test file uses only part of this module.
#![allow(dead_code)]

use securememory::{stats, ProtectedFactory, SecretFactory};

use crate::common::configs::Config;
use crate::common::procfs::{maps, vm_lck_kib};

/// A distinctive secret: a test that finds any of its forms in text output
/// (ASCII, hex, decimal) has found a leak.
pub const TOPSECRET: &[u8; 20] = b"TOPSECRET-0123456789";

/// The process-wide figures a failed creation must leave as they were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub allocated: u64,
    pub in_use: u64,
    pub bytes_locked: u64,
    pub vm_lck_kib: u64,
    /// Lines of `/proc/self/maps`.
    pub map_lines: usize,
    /// Bytes of all mappings except the main heap and stack (which move by
    /// themselves); a leaked mapping merged with a neighbour still shows here.
    pub mapped_bytes: u64,
}

impl Footprint {
    pub fn now() -> Footprint {
        let maps = maps();
        let mapped_bytes = maps
            .iter()
            .filter(|m| !m.line.ends_with("[heap]") && !m.line.ends_with("[stack]"))
            .map(|m| m.end.saturating_sub(m.start) as u64)
            .sum();
        let s = stats();
        Footprint {
            allocated: s.allocated,
            in_use: s.in_use,
            bytes_locked: s.bytes_locked,
            vm_lck_kib: vm_lck_kib(),
            map_lines: maps.len(),
            mapped_bytes,
        }
    }

    /// Fail with `what` unless the figures now equal `self`.
    pub fn assert_unchanged(&self, what: &str) {
        let now = Footprint::now();
        if &now != self {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
            panic!("{what}: leaked something\n before: {self:?}\n after:  {now:?}\n/proc/self/maps now:\n{maps}");
        }
    }
}

/// Create and close one secret of `cfg` and make one access of each kind, so
/// that the lazily created process-wide memory file, this thread's scratch
/// buffer and (for pooled) a pool chunk of the class of `len` exist before a
/// footprint is taken.
pub fn warm_up(cfg: &Config, len: usize) {
    let f = cfg.factory();
    let s = f
        .create_random(len)
        .unwrap_or_else(|e| panic!("{}: warm-up: {e}", cfg.name));
    s.with_bytes(|b| assert_eq!(b.len(), len)).unwrap();
    s.close().unwrap();
    // The copy path's scratch buffer is per thread, made on first use.
    let d = ProtectedFactory::default().create_random(16).unwrap();
    d.with_bytes(|_| ()).unwrap();
    d.close().unwrap();
}

/// A test pattern of `len` bytes that differs at every position of a page.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Every text form of `secret` a leak could take: the ASCII, hex (lower and
/// upper, plain and spaced) and decimal list forms, each of a 4-byte window
/// (8 for ASCII) or longer, so that a partial leak is caught too.
pub fn leak_forms(secret: &[u8]) -> Vec<String> {
    let mut forms = vec![String::from_utf8_lossy(secret).into_owned()];
    // Any 8 consecutive characters of the ASCII form.
    for w in secret.windows(8) {
        forms.push(String::from_utf8_lossy(w).into_owned());
    }
    for w in secret.windows(4) {
        forms.push(w.iter().map(|b| format!("{b:02x}")).collect());
        forms.push(w.iter().map(|b| format!("{b:02X}")).collect());
        forms.push(
            w.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        forms.push(
            w.iter()
                .map(|b| format!("{b}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        forms.push(
            w.iter()
                .map(|b| format!("0x{b:x}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    forms
}

/// Fail if `text` contains any form of `secret` (see [`leak_forms`]).
pub fn assert_no_leak(text: &str, secret: &[u8], what: &str) {
    for form in leak_forms(secret) {
        assert!(
            !text.contains(&form),
            "{what}: contains {form:?} of the secret:\n{text}"
        );
    }
}
