//! A secret made from random bytes, a reader or a descriptor into a ready
//! page of the memory file is staged in the creating thread's scratch and
//! written through the file: no protection change (the window the fill
//! took before cost two), and the staged bytes are gone from the scratch
//! once the creation returns, also when the reader panics or fails.
//!
//! Each test runs in a child (process-wide counters and the store).
// Linux only: uses Linux interfaces (procfs).
#![cfg(target_os = "linux")]

mod common;

use std::io::{self, Read};

use common::child::in_child;
use common::procfs::read_proc_mem;
use securememory::test_hooks::{clear_faults, data_pages, fail_next, scratch_regions, FaultOp};
use securememory::{stats, Error, ProtectedFactory, Secret, SecretFactory};

/// A closed one-page secret parks its page: the next creation takes it.
fn one_ready_page(f: &ProtectedFactory) {
    f.new(&mut [1u8; 32]).unwrap().close().unwrap();
    assert!(stats().ready_pages >= 1, "no ready page to reuse");
}

/// Every scratch region of this thread, read through `/proc/self/mem`.
fn scratch_is_zeros() -> bool {
    scratch_regions().into_iter().all(|(addr, len)| {
        read_proc_mem(addr, len)
            .expect("read scratch")
            .iter()
            .all(|&b| b == 0)
    })
}

/// Made from a ready page, with no protection change (one injected to fail
/// would fail the creation) and nothing left in
/// the scratch; the secret reads back `want` (if given) and is at rest.
fn made_without_a_window(make: impl FnOnce(&ProtectedFactory) -> Secret, want: Option<&[u8]>) {
    let f = ProtectedFactory::default();
    one_ready_page(&f);
    let ready = stats().ready_pages;
    // Any protection change to a readable or writable page now fails: the
    // creation must not need one.
    fail_next(FaultOp::ProtectRead, 0, libc::EPERM);
    let s = make(&f);
    clear_faults();
    assert_eq!(
        stats().ready_pages,
        ready - 1,
        "the ready page was not taken"
    );
    assert!(scratch_is_zeros(), "the staged bytes stayed in the scratch");
    let (addr, _) = data_pages(&s);
    assert!(
        !s.is_readable_now().unwrap(),
        "the page at {addr:#x} is readable at rest"
    );
    let got = s.with_bytes(|b| b.to_vec()).unwrap();
    if let Some(want) = want {
        assert_eq!(got, want);
    } else {
        assert!(got.iter().any(|&b| b != 0), "random bytes all zero");
    }
}

#[test]
fn create_random_into_a_ready_page_stages_in_scratch() {
    in_child("create_random_into_a_ready_page_stages_in_scratch", || {
        made_without_a_window(|f| f.create_random(32).unwrap(), None);
    });
}

#[test]
fn from_reader_into_a_ready_page_stages_in_scratch() {
    in_child("from_reader_into_a_ready_page_stages_in_scratch", || {
        let want = [0x5au8; 48];
        made_without_a_window(
            |f| f.from_reader(&mut &want[..], want.len()).unwrap(),
            Some(&want),
        );
    });
}

/// A reader that writes its bytes, then fails or panics.
struct Breaks {
    panic: bool,
}

impl Read for Breaks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        buf.fill(0xc3);
        if self.panic {
            panic!("the reader panics");
        }
        Err(io::Error::other("the reader fails"))
    }
}

#[test]
fn a_reader_that_fails_or_panics_leaves_nothing_in_scratch() {
    in_child(
        "a_reader_that_fails_or_panics_leaves_nothing_in_scratch",
        || {
            let f = ProtectedFactory::default();
            one_ready_page(&f);
            let before = stats().in_use;
            let got = f.from_reader(&mut Breaks { panic: false }, 32);
            assert!(matches!(got, Err(Error::ReadFailed(_))), "{got:?}");
            assert!(scratch_is_zeros(), "a failed reader's bytes stayed");
            one_ready_page(&f);
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                f.from_reader(&mut Breaks { panic: true }, 32)
            }));
            assert!(panicked.is_err(), "the reader's panic was swallowed");
            assert!(scratch_is_zeros(), "a panicking reader's bytes stayed");
            assert_eq!(stats().in_use, before, "a secret was left behind");
            // The library is still whole: a creation and an access work.
            let s = f.new(&mut [9u8; 32]).unwrap();
            assert_eq!(s.with_bytes(|b| b[0]).unwrap(), 9);
        },
    );
}

/// A reader that forks (glibc `fork`) after it gave half the bytes.
struct ForksHalfway {
    bytes: Vec<u8>,
    at: usize,
    child: Option<libc::pid_t>,
}

impl Read for ForksHalfway {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.child.is_none() && self.at >= self.bytes.len() / 2 {
            // SAFETY: glibc fork; both processes go on with this code.
            self.child = Some(unsafe { libc::fork() });
        }
        let end = (self.at + buf.len())
            .min(self.bytes.len())
            .min(self.bytes.len().div_ceil(2).max(self.at + 1));
        let n = end - self.at;
        buf[..n].copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(n)
    }
}

/// The child of a reader's fork gets `Forked` or the real bytes, never
/// the zeros its wipe-on-fork scratch holds in place of the first half.
#[test]
fn a_reader_that_forks_never_gives_the_child_zeros() {
    in_child("a_reader_that_forks_never_gives_the_child_zeros", || {
        let f = ProtectedFactory::default();
        one_ready_page(&f);
        let want: Vec<u8> = (1..=32).collect();
        let mut r = ForksHalfway {
            bytes: want.clone(),
            at: 0,
            child: None,
        };
        let made = f.from_reader(&mut r, want.len());
        if r.child == Some(0) {
            let code = match made {
                Err(Error::Forked) => 0,
                Ok(s) if s.with_bytes(|b| b == &want[..]).unwrap_or(false) => 0,
                Ok(_) => 1,
                Err(_) => 2,
            };
            // SAFETY: ends the child at once, as a fork child should.
            unsafe { libc::_exit(code) };
        }
        let pid = r.child.expect("the reader forked");
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child got a secret of wrong bytes (1) or another error (2): status {status:#x}"
        );
        let s = made.expect("the parent's secret");
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), want);
    });
}
