//! Attack: the caller's `Read` given to `from_reader` is user code that runs
//! while the library places the secret (into its pages, or staged in this
//! thread's scratch for a pooled secret). A reader that re-enters the
//! library from every `read` (reads other secrets on every path, creates and
//! closes secrets, nests another `from_reader`, and at the end panics) must
//! neither hang nor corrupt anything: the secret gets the reader's bytes,
//! nothing is readable at rest, and counters and `VmLck` come back.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;
use std::time::Duration;

use common::procfs::vm_lck_kib;
use securememory::{
    stats, AccessPath, Backend, Layout, Options, ProtectedFactory, Secret, SecretFactory,
};

fn factories() -> Vec<ProtectedFactory> {
    let o = Options::default();
    vec![
        ProtectedFactory::default(),
        ProtectedFactory::new(o.access(AccessPath::Window)).unwrap(),
        ProtectedFactory::new(o.layout(Layout::Guarded)).unwrap(),
        ProtectedFactory::new(o.layout(Layout::Pooled)).unwrap(),
        ProtectedFactory::new(
            o.backend(Backend::Anonymous)
                .access(AccessPath::Window)
                .layout(Layout::Guarded),
        )
        .unwrap(),
    ]
}

/// Gives `left` bytes of 0x5a, up to 97 at a time, re-entering the library
/// before each; nests one `from_reader` of its own per level; panics at
/// the end if `panic_at_end`.
struct Reentrant<'a> {
    left: usize,
    others: &'a [Secret],
    facs: &'a [ProtectedFactory],
    depth: usize,
    panic_at_end: bool,
}

impl Read for Reentrant<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for (i, s) in self.others.iter().enumerate() {
            let want = s.len();
            assert!(matches!(
                s.with_bytes(|b| b.iter().all(|&x| x == i as u8 + 1)),
                Ok(true)
            ));
            assert_eq!(want, s.len());
        }
        for f in self.facs {
            let t = f.new(&mut [9u8; 40]).expect("create inside read");
            assert!(matches!(t.with_bytes(|b| b[0]), Ok(9)));
            t.close().expect("close inside read");
            let _ = stats();
        }
        // Nest from the first read only (each level would multiply the work).
        if self.depth > 0 {
            let mut inner = Reentrant {
                left: 24,
                others: self.others,
                facs: self.facs,
                depth: self.depth - 1,
                panic_at_end: false,
            };
            for f in self.facs {
                inner.left = 24;
                let s = f.from_reader(&mut inner, 24).expect("nested from_reader");
                assert!(matches!(
                    s.with_bytes(|b| b.iter().all(|&x| x == 0x5a)),
                    Ok(true)
                ));
            }
            self.depth = 0;
        }
        if self.left == 0 {
            if self.panic_at_end {
                panic!("reader panics (expected)");
            }
            return Ok(0);
        }
        let n = buf.len().min(self.left).min(97);
        buf[..n].fill(0x5a);
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn from_reader_with_a_reentrant_and_panicking_reader() {
    thread::spawn(|| {
        thread::sleep(Duration::from_secs(240));
        eprintln!("attack3_reader_reenters: hang");
        std::process::abort();
    });
    std::panic::set_hook(Box::new(|i| {
        if !i.to_string().contains("(expected)") {
            eprintln!("{i}");
        }
    }));
    let facs = factories();
    let others: Vec<Secret> = facs
        .iter()
        .enumerate()
        .map(|(i, f)| {
            f.new(&mut vec![i as u8 + 1; if i == 3 { 900 } else { 9000 }])
                .unwrap()
        })
        .collect();
    // Warm up (this thread's scratch, the pools).
    for f in &facs {
        let mut r = Reentrant {
            left: 24,
            others: &others,
            facs: &facs,
            depth: 0,
            panic_at_end: false,
        };
        drop(f.from_reader(&mut r, 24).unwrap());
    }
    // Ready pages of closed secrets are locked too: compare without them.
    securememory::release_ready_pages();
    let (base, lck) = (stats(), vm_lck_kib());
    for f in &facs {
        for len in [24, 1000] {
            let mut r = Reentrant {
                left: len,
                others: &others,
                facs: &facs,
                depth: 2,
                panic_at_end: false,
            };
            let s = f.from_reader(&mut r, len).expect("from_reader");
            assert!(matches!(
                s.with_bytes(|b| b.iter().all(|&x| x == 0x5a)),
                Ok(true)
            ));
            assert!(!s.is_readable_now().unwrap());
            // The reader runs dry after `len - 1` bytes and panics.
            let mut p = Reentrant {
                left: len - 1,
                others: &others,
                facs: &facs,
                depth: 1,
                panic_at_end: true,
            };
            assert!(catch_unwind(AssertUnwindSafe(|| f.from_reader(&mut p, len))).is_err());
        }
    }
    for s in &others {
        assert!(!s.is_readable_now().unwrap());
    }
    securememory::release_ready_pages();
    let now = stats();
    assert_eq!(
        (now.in_use, now.pool_slots_used, now.bytes_locked),
        (base.in_use, base.pool_slots_used, base.bytes_locked)
    );
    assert_eq!(vm_lck_kib(), lck, "VmLck");
}
