//! Secrets made from random bytes, a reader or a descriptor into a ready
//! page of the memory file (staged in the thread's scratch, then one write
//! through the file) leave no copy of their bytes anywhere in the process
//! once the creation returns: every mapping is read through
//! `/proc/self/mem` and the bytes are found only in the secret's own data
//! page. The control: inside an access the scan finds them in the scratch.
//! Also with a reader that comes back into the library during the fill
//! (a nested `from_reader` into a ready page, a secret larger than the
//! scratch, accesses, closes), and with creations nested deeper than the
//! scratch has regions for (they must fall back, not fail).
// Linux only: procfs.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use common::mem::anon_rw;
use common::procfs::read_proc_mem;
use common::scan::Scanner;
use securememory::test_hooks::{data_pages, scratch_regions};
use securememory::{stats, Layout, Options, ProtectedFactory, Secret, SecretFactory};

/// Needles are kept XOR this, so the test itself holds no plaintext.
const MASK: u8 = 0xa7;
const LEN: usize = 64;

/// Byte `i` of the stream `seed` (computed where it is written).
fn gen(seed: u32, i: usize) -> u8 {
    let mut x = seed.wrapping_mul(0x9e37_79b9) ^ (i as u32).wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    (x ^ (x >> 16)) as u8
}

fn masked_stream(seed: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| gen(seed, i) ^ MASK).collect()
}

/// A reader of the stream `seed`, written straight into the buffer; `during`
/// runs once, after the first half.
struct Gen<'a> {
    seed: u32,
    at: usize,
    len: usize,
    during: Option<Box<dyn FnMut() + 'a>>,
}

impl Gen<'_> {
    fn new(seed: u32, len: usize) -> Self {
        Gen {
            seed,
            at: 0,
            len,
            during: None,
        }
    }
}

impl Read for Gen<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.len / 2 {
            if let Some(mut f) = self.during.take() {
                f();
            }
        }
        let half = if self.at < self.len / 2 {
            self.len / 2
        } else {
            self.len
        };
        let n = buf.len().min(half - self.at);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = gen(self.seed, self.at + i);
        }
        self.at += n;
        Ok(n)
    }
}

fn page_range(s: &Secret) -> Range<usize> {
    let (a, l) = data_pages(s);
    a..a + l
}

fn one_ready_page(f: &ProtectedFactory) {
    f.new(&mut [1u8; 32]).unwrap().close().unwrap();
    assert!(stats().ready_pages >= 1, "no ready page");
}

fn scratch_is_zeros() -> bool {
    scratch_regions()
        .into_iter()
        .all(|(a, l)| read_proc_mem(a, l).unwrap().iter().all(|&b| b == 0))
}

/// A pipe holding the stream `seed`, written from a page wiped afterwards.
fn pipe_with(seed: u32, len: usize) -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: valid out-array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh descriptors, owned here.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let p = anon_rw(4096) as *mut u8;
    // SAFETY: the page just mapped; `len` <= 4096.
    let src = unsafe { std::slice::from_raw_parts_mut(p, len) };
    for (i, b) in src.iter_mut().enumerate() {
        *b = gen(seed, i);
    }
    std::fs::File::from(w).write_all(src).unwrap();
    for b in src.iter_mut() {
        // SAFETY: a byte of the page above.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    r
}

/// Make a secret into a ready page with `how`, then check the scan.
fn check(scan: &mut Scanner, f: &ProtectedFactory, name: &str, how: &str, guarded: bool) {
    one_ready_page(f);
    let ready = stats().ready_pages;
    let seed = 0x1000 + how.len() as u32 + u32::from(guarded);
    let s = match how {
        "create_random" => f.create_random(LEN).unwrap(),
        "from_reader" => f.from_reader(&mut Gen::new(seed, LEN), LEN).unwrap(),
        _ => f.from_fd(pipe_with(seed, LEN).as_fd(), LEN).unwrap(),
    };
    assert_eq!(
        stats().ready_pages,
        ready - 1,
        "{name} {how}: no ready page taken"
    );
    assert!(
        scratch_is_zeros(),
        "{name} {how}: staged bytes left in the scratch"
    );
    let page = page_range(&s);
    let addr = securememory::test_hooks::data_address(&s);
    if guarded {
        assert_eq!(
            addr + LEN,
            page.end,
            "{name} {how}: not flush against the guard"
        );
    }
    // The control, and the needle for random bytes.
    let (needle, inside) = s
        .with_bytes(|b| {
            let m: Vec<u8> = b.iter().map(|x| x ^ MASK).collect();
            let hits = scan.find(&m);
            (m, hits)
        })
        .unwrap();
    if how != "create_random" {
        assert_eq!(
            needle,
            masked_stream(seed, LEN),
            "{name} {how}: wrong bytes"
        );
    }
    assert!(
        inside.iter().any(|a| !page.contains(a)),
        "{name} {how}: the scan sees no copy inside an access"
    );
    let after = scan.find(&needle);
    assert_eq!(
        after,
        vec![addr],
        "{name} {how}: the bytes sit outside the secret"
    );
    s.close().unwrap();
    assert!(
        scan.find(&needle).is_empty(),
        "{name} {how}: left after close"
    );
}

fn factories() -> [(&'static str, ProtectedFactory, bool); 2] {
    [
        ("memfd page", ProtectedFactory::default(), false),
        (
            "memfd guarded",
            ProtectedFactory::new(Options::default().layout(Layout::Guarded)).unwrap(),
            true,
        ),
    ]
}

child_test! {
    fn no_copy_is_left_after_a_staged_creation() {
        let mut scan = Scanner::new(MASK);
        for (name, f, guarded) in factories() {
            for how in ["create_random", "from_reader", "from_fd"] {
                check(&mut scan, &f, name, how, guarded);
            }
        }
    }
}

child_test! {
    fn a_reader_that_reenters_leaves_no_copy() {
        let mut scan = Scanner::new(MASK);
        for (name, f, _) in factories() {
            let other = f.new(&mut [3u8; 32]).unwrap();
            // Two ready pages: the outer creation's and the nested one's.
            let a = f.new(&mut [1u8; 32]).unwrap();
            let b = f.new(&mut [2u8; 32]).unwrap();
            a.close().unwrap();
            b.close().unwrap();
            let page = common::page_size();
            let big = 3 * page;
            assert!(stats().ready_pages >= 2, "{name}: two ready pages");
            let mut outer = Gen::new(1, LEN);
            let fr = &f;
            let other_ref = &other;
            outer.during = Some(Box::new(move || {
                let inner = fr.from_reader(&mut Gen::new(2, LEN), LEN).unwrap();
                assert_eq!(
                    inner.with_bytes(|b| b.iter().map(|x| x ^ MASK).collect::<Vec<_>>()).unwrap(),
                    masked_stream(2, LEN)
                );
                let large = fr.from_reader(&mut Gen::new(3, big), big).unwrap();
                assert_eq!(large.with_bytes(|b| b[big - 1]).unwrap(), gen(3, big - 1));
                let r = fr.create_random(LEN).unwrap();
                assert_eq!(other_ref.with_bytes(|b| b[0]).unwrap(), 3);
                inner.close().unwrap();
                large.close().unwrap();
                r.close().unwrap();
            }));
            let s = f.from_reader(&mut outer, LEN).unwrap();
            assert!(outer.during.is_none(), "{name}: the reader did not re-enter");
            drop(outer);
            assert!(scratch_is_zeros(), "{name}: staged bytes left in the scratch");
            let addr = securememory::test_hooks::data_address(&s);
            assert_eq!(scan.find(&masked_stream(1, LEN)), vec![addr], "{name}: outer bytes elsewhere");
            assert!(scan.find(&masked_stream(2, LEN)).is_empty(), "{name}: nested secret left");
            assert!(scan.find(&masked_stream(3, 256)).is_empty(), "{name}: large secret left");
            assert_eq!(
                s.with_bytes(|b| b.iter().map(|x| x ^ MASK).collect::<Vec<_>>()).unwrap(),
                masked_stream(1, LEN),
                "{name}: outer secret wrong"
            );
            s.close().unwrap();
            other.close().unwrap();
        }
    }
}

/// `depth` creations, each from a reader that makes the next one while it
/// fills: one full page each, into ready pages.
fn nest(f: &ProtectedFactory, depth: u32, len: usize) -> Vec<(u32, Secret)> {
    let mut made = Vec::new();
    let s = {
        let p = &mut made;
        let mut r = Gen::new(depth, len);
        if depth > 0 {
            r.during = Some(Box::new(move || p.append(&mut nest(f, depth - 1, len))));
        }
        f.from_reader(&mut r, len)
    };
    made.push((depth, s.unwrap_or_else(|e| panic!("depth {depth}: {e}"))));
    made
}

child_test! {
    fn nested_creations_past_the_scratch_fall_back() {
        let page = common::page_size();
        for (name, f, guarded) in factories() {
            let len = if guarded { page - 64 } else { page };
            // More ready pages than the scratch has regions (34).
            let keep: Vec<Secret> = (0..48).map(|_| f.new(&mut [5u8; 32]).unwrap()).collect();
            for s in keep {
                s.close().unwrap();
            }
            let ready = stats().ready_pages;
            let made = nest(&f, 40, len);
            assert_eq!(made.len(), 41, "{name}");
            // Past the 34th nesting the scratch has no region left: those
            // creations must take the window instead, not fail.
            assert!(ready - stats().ready_pages >= 36, "{name}: only {} of {ready} ready pages used", ready - stats().ready_pages);
            assert!(scratch_is_zeros(), "{name}: staged bytes left");
            for (seed, s) in made {
                let ok = s
                    .with_bytes(|b| b.iter().enumerate().all(|(i, &x)| x == gen(seed, i)))
                    .unwrap();
                assert!(ok, "{name}: depth {seed} reads wrong");
                s.close().unwrap();
            }
        }
    }
}
