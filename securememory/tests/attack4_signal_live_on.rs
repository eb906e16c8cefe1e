//! Attacks on a signal's purge after which the process lives on (the
//! program's SIGHUP handler returns): the purged secrets stay purged and
//! close cleanly, the pages the handler put in place of the old ones are
//! locked and left out of core dumps again, new secrets of every
//! configuration work, and the counts come back once everything is
//! dropped; and a signal that lands in a creation on the creating thread.
// Linux only: uses Linux interfaces (procfs, fork, capabilities, rlimits).
#![cfg(target_os = "linux")]

mod common;

use std::io::Read;

use common::child::in_child;
use common::configs;
use common::procfs::{read_proc_mem, vma_at};
use securememory::{
    purge_on_signals, stats, test_hooks, AccessPath, Backend, Error, Layout, Options,
    ProtectedFactory, Secret, SecretFactory,
};

extern "C" fn keep_going(_: libc::c_int) {}

fn purge_on_sighup_and_live_on() {
    // SAFETY: installs a handler of this test's that does nothing.
    unsafe { libc::signal(libc::SIGHUP, keep_going as *const () as libc::sighandler_t) };
    purge_on_signals(&[libc::SIGHUP]).unwrap();
}

fn raise_sighup() {
    // SAFETY: a signal to this thread: the purge, then the program's handler.
    unsafe { libc::raise(libc::SIGHUP) };
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 13 + seed * 5) % 251 + 1) as u8)
        .collect()
}

fn make_all(seed: usize) -> Vec<(String, Secret, Vec<u8>)> {
    configs::all()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let b = pattern(seed + i, 48);
            let s = c.factory().new(&mut b.clone()).unwrap();
            (c.name.to_string(), s, b)
        })
        .collect()
}

#[test]
fn signal_purge_then_the_process_lives_on() {
    in_child("signal_purge_then_the_process_lives_on", || {
        purge_on_sighup_and_live_on();
        let start = stats();
        let old = make_all(0);
        // Each thread's scratch exists (this one's): read once.
        for (_, s, b) in &old {
            assert_eq!(s.with_bytes(|x| x.to_vec()).unwrap(), *b);
        }
        let scratch = test_hooks::scratch_regions();
        assert!(!scratch.is_empty());
        let own: Vec<(String, usize)> = old
            .iter()
            .filter(|(_, s, _)| s.backend() != Backend::Memfd)
            .map(|(n, s, _)| (n.clone(), test_hooks::data_pages(s).0))
            .collect();
        raise_sighup();
        for (name, s, _) in &old {
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)), "{name}");
            assert!(s.is_closed(), "{name}");
        }
        // Replaced pages: zeros, locked and do-not-dump again.
        let replaced: Vec<(String, usize)> = own
            .into_iter()
            .chain(scratch.iter().map(|&(a, _)| ("scratch".to_string(), a)))
            .collect();
        for (name, at) in &replaced {
            let vma = vma_at(*at).unwrap_or_else(|| panic!("{name}: unmapped"));
            assert!(
                vma.has_flag("dd"),
                "{name}: dumpable after the purge: {vma:?}"
            );
            assert!(
                vma.has_flag("lo"),
                "{name}: not locked after the purge: {vma:?}"
            );
            let bytes = read_proc_mem(*at, 48).unwrap();
            assert!(bytes.iter().all(|&x| x == 0), "{name}: not wiped");
        }
        // Life goes on: new secrets of every configuration work.
        let new = make_all(100);
        for (name, s, b) in &new {
            assert_eq!(s.with_bytes(|x| x.to_vec()).unwrap(), *b, "{name}");
            assert!(!s.is_readable_now().unwrap(), "{name}: readable at rest");
        }
        for (name, s, _) in &old {
            assert!(s.close().is_ok(), "{name}: close after a signal purge");
        }
        drop(old);
        drop(new);
        // Closed one-page secrets keep their pages ready (locked): give
        // them back so the figures compare like for like.
        securememory::release_ready_pages();
        let end = stats();
        assert_eq!(end.in_use, start.in_use);
        let page = 4096; // pool chunks are kept for the next secrets
        assert_eq!(
            end.bytes_locked,
            start.bytes_locked + (end.pool_pages - start.pool_pages) * page + 8192,
            "{start:?} -> {end:?}"
        );
    });
}

/// A reader that raises the purge signal in the middle of its creation, on
/// the creating thread, then writes the bytes.
struct RaisingReader(Vec<u8>);

impl Read for RaisingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        raise_sighup();
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
        Ok(n)
    }
}

/// The README: "A secret being created on another thread at that instant
/// may keep its bytes (its accesses return `Error::Purged`)." The creating
/// thread itself, when the signal lands in its creation and the program's
/// handler returns, goes on to write the bytes too: purged, and its pages
/// hold them until its close.
#[test]
fn signal_in_a_creation_on_the_creating_thread() {
    in_child("signal_in_a_creation_on_the_creating_thread", || {
        purge_on_sighup_and_live_on();
        let f = ProtectedFactory::new(
            Options::default()
                .backend(Backend::Anonymous)
                .layout(Layout::Page)
                .access(AccessPath::Window),
        )
        .unwrap();
        let bytes = pattern(7, 64);
        let s = f
            .from_reader(&mut RaisingReader(bytes.clone()), bytes.len())
            .unwrap();
        assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
        let kept = read_proc_mem(test_hooks::data_address(&s), bytes.len()).unwrap();
        assert_eq!(kept, bytes, "the bytes written after the purge are there");
        assert!(s.close().is_ok());
    });
}

/// A window-path access in flight on another thread when the signal's
/// purge lands: the closure reads zeros from then on (the README says so),
/// the access ends without a fault, and the secret is released as that
/// access ends (the last one out finishes the purge), not only at its close
/// or drop.
#[test]
fn window_access_in_flight_during_a_signal_purge() {
    in_child("window_access_in_flight_during_a_signal_purge", || {
        use std::sync::{Arc, Barrier};
        purge_on_sighup_and_live_on();
        let f = ProtectedFactory::new(
            Options::default()
                .backend(Backend::Anonymous)
                .layout(Layout::Guarded)
                .access(AccessPath::Window),
        )
        .unwrap();
        let bytes = pattern(3, 100);
        let s = Arc::new(f.new(&mut bytes.clone()).unwrap());
        let in_use = stats().in_use;
        let (inside, signalled) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let t = {
            let (s, inside, signalled) = (s.clone(), inside.clone(), signalled.clone());
            std::thread::spawn(move || {
                s.with_bytes(|b| {
                    let before = b.to_vec();
                    inside.wait();
                    signalled.wait();
                    (before, b.to_vec())
                })
            })
        };
        inside.wait();
        raise_sighup();
        signalled.wait();
        let (before, after) = t.join().unwrap().expect("the access ends without error");
        assert_eq!(before, bytes);
        assert!(after.iter().all(|&x| x == 0));
        assert!(matches!(s.with_bytes(|_| ()), Err(Error::Purged)));
        assert_eq!(stats().in_use, in_use - 1, "released as the access ended");
        assert!(s.close().is_ok());
    });
}
