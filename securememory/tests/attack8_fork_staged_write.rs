//! A reader that forks while a secret is made from it into a ready page of
//! the memory file (the staged fill: the bytes go into the thread's scratch,
//! then one write through the file). The creation goes on in the child as
//! well. The child must not write into the parent's memory file: its staged
//! copy was zeroed by `MADV_WIPEONFORK` and its descriptor is the parent's
//! file, so such a write would overwrite the parent's new secret. The child
//! must also never get a usable secret from the parent's page.
//!
//! The child waits (in the reader) until the parent's creation has
//! returned, so its write, if it makes one, lands last.
// Linux only: fork, pipes.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::io::{self, Read, Write};

use securememory::{stats, Error, Layout, Options, ProtectedFactory, Secret, SecretFactory};

const LEN: usize = 64;

#[derive(Clone, Copy)]
enum Fork {
    /// glibc `fork` (at-fork handlers run).
    Glibc,
    /// A raw `fork` system call (no at-fork handler).
    Raw,
}

fn fork_now(how: Fork) -> libc::pid_t {
    io::stdout().flush().ok();
    io::stderr().flush().ok();
    let pid = match how {
        // SAFETY: glibc fork; the child goes on with this thread's code.
        Fork::Glibc => unsafe { libc::fork() },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a copy of this process, as fork(2) makes.
        Fork::Raw => unsafe { libc::syscall(libc::SYS_fork) as libc::pid_t },
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: `clone` with SIGCHLD and no stack is a fork.
        Fork::Raw => unsafe {
            libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0)
                as libc::pid_t
        },
    };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    pid
}

/// Hands out half the bytes, forks, and in the child waits on `gate` until
/// the parent's creation is done before handing out the rest.
struct ForkingReader {
    bytes: [u8; LEN],
    at: usize,
    how: Fork,
    gate: libc::c_int,
    child: Option<libc::pid_t>,
}

impl Read for ForkingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= LEN / 2 && self.child.is_none() {
            let pid = fork_now(self.how);
            self.child = Some(pid);
            if pid == 0 {
                let mut b = [0u8; 1];
                // SAFETY: reads one byte into a valid buffer.
                let n = unsafe { libc::read(self.gate, b.as_mut_ptr().cast(), 1) };
                if n != 1 {
                    // SAFETY: ends the child at once.
                    unsafe { libc::_exit(20) };
                }
            }
        }
        let end = (self.at + buf.len()).min(if self.at < LEN / 2 { LEN / 2 } else { LEN });
        let n = end - self.at;
        buf[..n].copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(n)
    }
}

/// The child's verdict on its own creation: never a usable secret.
fn child_verdict(made: Result<Secret, Error>) -> i32 {
    match made {
        Err(_) => 0,
        Ok(s) => match s.with_bytes(|b| b.to_vec()) {
            Err(_) => 0,
            Ok(_) => 1,
        },
    }
}

fn one(name: &str, opts: Options, how: Fork) -> Result<(), String> {
    let f = ProtectedFactory::new(opts).unwrap();
    f.new(&mut [1u8; 32]).unwrap().close().unwrap();
    if stats().ready_pages == 0 {
        return Err(format!("{name}: no ready page"));
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: valid out-array of two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut want = [0u8; LEN];
    for (i, b) in want.iter_mut().enumerate() {
        *b = 0xa0 ^ i as u8;
    }
    let mut r = ForkingReader {
        bytes: want,
        at: 0,
        how,
        gate: fds[0],
        child: None,
    };
    let made = f.from_reader(&mut r, LEN);
    if r.child == Some(0) {
        let code = child_verdict(made);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    let s = made.map_err(|e| format!("{name}: parent: {e}"))?;
    let pid = r.child.ok_or(format!("{name}: no fork"))?;
    // Let the child finish its creation, then wait for it.
    // SAFETY: writes one byte from a valid buffer.
    assert_eq!(unsafe { libc::write(fds[1], [1u8].as_ptr().cast(), 1) }, 1);
    let status = common::wait_status(pid);
    // SAFETY: our own descriptors.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    let got = s.with_bytes(|b| b.to_vec()).unwrap();
    s.close().unwrap();
    let mut failures = Vec::new();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        failures.push(format!("{name}: child status {status:#x}"));
    }
    if got != want {
        let zeros = got.iter().take_while(|&&b| b == 0).count();
        failures.push(format!(
            "{name}: the parent's secret was overwritten after the fork ({zeros} leading zeros)"
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

child_test! {
    fn a_reader_that_forks_leaves_the_parents_staged_secret_alone() {
        let mut failures = Vec::new();
        for how in [Fork::Glibc, Fork::Raw] {
            for (name, opts) in [
                ("memfd page", Options::default()),
                ("memfd guarded", Options::default().layout(Layout::Guarded)),
            ] {
                let what = format!("{name}, {}", match how { Fork::Glibc => "glibc fork", Fork::Raw => "raw fork" });
                if let Err(e) = one(&what, opts, how) {
                    failures.push(e);
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
