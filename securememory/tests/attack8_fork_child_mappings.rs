//! A reader that forks by a raw `fork` system call in the middle of a
//! staged fill into a ready page, and in the child makes secrets of its own
//! before returning. The parent's ready page is not mapped in the child
//! (`MADV_DONTFORK`), so the child's new mappings may land where it was.
//! The child's creation returns `Error::Forked`; dropping the parent's page
//! there must not unmap (or uncount) what the child made since: the
//! child's own secrets still read back and close cleanly, and a page the
//! child mapped itself exactly where the parent's page was stays mapped.
// Linux only: fork.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::io::{self, Read, Write};

use common::procfs::read_proc_mem;
use securememory::test_hooks::data_pages;
use securememory::{Layout, Options, ProtectedFactory, Secret, SecretFactory};

struct Forks<'a> {
    f: &'a ProtectedFactory,
    at: usize,
    child: Option<libc::pid_t>,
    made: Vec<Secret>,
    /// The parent's ready page (its data page), mapped anew by the child.
    page: usize,
    marker: bool,
}

impl Read for Forks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= 16 && self.child.is_none() {
            io::stdout().flush().ok();
            io::stderr().flush().ok();
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a copy of this process, as fork(2) makes.
            let pid = unsafe { libc::syscall(libc::SYS_fork) } as libc::pid_t;
            #[cfg(not(target_arch = "x86_64"))]
            // SAFETY: `clone` with SIGCHLD and no stack is a fork.
            let pid = unsafe {
                libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0)
            } as libc::pid_t;
            assert!(pid >= 0);
            self.child = Some(pid);
            if pid == 0 {
                let len = common::page_size();
                // SAFETY: a new private page at an address the child does not
                // have mapped (the parent's page is MADV_DONTFORK); refused,
                // not replaced, if something is there.
                let p = unsafe {
                    libc::mmap(
                        self.page as *mut libc::c_void,
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    )
                };
                if p as usize == self.page {
                    // SAFETY: the page just mapped.
                    unsafe { std::ptr::write_bytes(p as *mut u8, 0x77, len) };
                    self.marker = true;
                }
                for i in 0..16u8 {
                    self.made
                        .push(self.f.new(&mut [i + 1; 32]).expect("child's own secret"));
                }
            }
        }
        let end = if self.at < 16 { 16 } else { 32 };
        let n = buf.len().min(end - self.at);
        buf[..n].fill(0x42);
        self.at += n;
        Ok(n)
    }
}

fn child_side(r: Forks<'_>, made: bool) -> i32 {
    if made {
        eprintln!("the child got a usable secret");
        return 1;
    }
    if !r.marker {
        eprintln!("the child could not map the parent's page address");
        return 4;
    }
    match read_proc_mem(r.page, common::page_size()) {
        Ok(b) if b.iter().all(|&x| x == 0x77) => {}
        other => {
            eprintln!(
                "the child's own page at the parent's address: {:?}",
                other.map(|b| b[0])
            );
            return 5;
        }
    }
    for (i, s) in r.made.into_iter().enumerate() {
        match s.with_bytes(|b| b.to_vec()) {
            Ok(b) if b == vec![i as u8 + 1; 32] => {}
            other => {
                eprintln!("child's secret {i}: {other:?}");
                return 2;
            }
        }
        if let Err(e) = s.close() {
            eprintln!("child's secret {i}: close {e}");
            return 3;
        }
    }
    0
}

child_test! {
    fn dropping_the_parents_page_in_the_child_leaves_the_childs_mappings() {
        for (name, opts) in [
            ("memfd page", Options::default()),
            ("memfd guarded", Options::default().layout(Layout::Guarded)),
        ] {
            let f = ProtectedFactory::new(opts).unwrap();
            let warm = f.new(&mut [1u8; 32]).unwrap();
            let page = data_pages(&warm).0;
            warm.close().unwrap();
            let mut r = Forks { f: &f, at: 0, child: None, made: Vec::new(), page, marker: false };
            let got = f.from_reader(&mut r, 32);
            if r.child == Some(0) {
                let made = got.is_ok_and(|s| s.with_bytes(|_| ()).is_ok());
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child_side(r, made)))
                    .unwrap_or(101);
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(code) };
            }
            let pid = r.child.expect("no fork");
            let status = common::wait_status(pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "{name}: child status {status:#x}"
            );
            let s = got.unwrap();
            assert_eq!(data_pages(&s).0, page, "{name}: not the ready page");
            assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), vec![0x42; 32], "{name}");
            s.close().unwrap();
        }
    }
}
