//! Attack on the sealed layout's cipher, now keyed with the AES encryption
//! schedule alone (`AesGcm<Aes256Enc, U12>`): its key schedule (whose first
//! 32 bytes are the key itself with AES-NI) must still be wiped after every
//! sealing and opening, so the sealing key is nowhere in the process but
//! its locked pool slot. Secrets are sealed and opened on three threads
//! (one of which then exits, two stay), then every mapping is scanned
//! through `/proc/self/mem` for the key. The control: the scan finds the
//! key in its slot.
//!
//! Runs in a child process (process-wide scan).
// Linux only: uses Linux interfaces (memfd_create, /proc/self/mem).
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::sync::{Arc, Barrier};

use common::scan::Scanner;
use common::sealed::sealing_key;
use securememory::test_hooks::data_pages;
use securememory::{Layout, Options, ProtectedFactory, Secret, SecretFactory};

/// The key is held XOR this mask, so the test's own memory never holds it.
const MASK: u8 = 0x6b;

child_test! {
    fn sealing_key_is_only_in_its_slot_after_sealing_and_opening() {
        let f = Arc::new(ProtectedFactory::new(Options::default().layout(Layout::Sealed)).unwrap());
        let probe = f.new(&mut [0x11; 32]).unwrap();
        let key = sealing_key(&probe, MASK);
        let slot = data_pages(&probe).0;
        // Seal and open on three threads: one exits, two stay (idle).
        let used = Arc::new(Barrier::new(3));
        let done = Arc::new(Barrier::new(3));
        let stay: Vec<_> = (0..2u8)
            .map(|t| {
                let (f, used, done) = (f.clone(), used.clone(), done.clone());
                std::thread::spawn(move || {
                    let mine: Vec<Secret> = [1usize, 64, 4096]
                        .iter()
                        .map(|&len| f.new(&mut vec![t; len]).unwrap())
                        .collect();
                    for s in &mine {
                        assert!(s.with_bytes(|b| b.iter().all(|&x| x == t)).unwrap());
                    }
                    used.wait();
                    done.wait();
                })
            })
            .collect();
        let f2 = f.clone();
        std::thread::spawn(move || {
            let s = f2.new(&mut [9; 200]).unwrap();
            assert_eq!(s.with_bytes(|b| b[199]).unwrap(), 9);
        })
        .join()
        .unwrap();
        assert_eq!(probe.with_bytes(|b| b[0]).unwrap(), 0x11);
        used.wait();
        let hits = Scanner::new(MASK).find(&key);
        done.wait();
        for h in stay {
            h.join().unwrap();
        }
        assert!(hits.contains(&slot), "the scan did not find the key in its slot (control): {hits:x?}");
        let elsewhere: Vec<_> = hits.iter().filter(|&&a| a != slot).collect();
        assert!(elsewhere.is_empty(), "the sealing key left at {elsewhere:x?} (slot {slot:x})");
        println!("the sealing key is in its slot alone after sealing and opening on 3 threads");
    }
}
