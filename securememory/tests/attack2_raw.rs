//! Raw forks the library cannot see coming: `clone3` (the newest way to
//! make a child; glibc 2.34+ uses it for `fork` too, but called directly
//! it runs no at-fork handler), and what a raw-fork child's own code can
//! keep past its first library call.

#[macro_use]
mod common;

use std::io::{self, Write};

use securememory::test_hooks::store_fd;
use securememory::{Error, Options, ProtectedFactory, SecretFactory};

/// `struct clone_args` of clone3(2), version 0 (64 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// A child by `clone3` (no flags: a copy, like fork). `None` where the
/// kernel or a filter lacks it.
fn clone3() -> Option<libc::pid_t> {
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    io::stdout().flush().ok();
    io::stderr().flush().ok();
    // SAFETY: no CLONE_VM and no stack: the child runs on its copy of this
    // stack, like a fork child; `args` is a valid version-0 struct.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        eprintln!("SKIPPED: clone3: {}", io::Error::last_os_error());
        return None;
    }
    Some(pid as libc::pid_t)
}

fn wait_ok(pid: libc::pid_t) {
    let status = common::wait_status(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
}

fn exit_now(code: i32) -> ! {
    io::stderr().flush().ok();
    // SAFETY: ends the child at once.
    unsafe { libc::_exit(code) }
}

fn fd_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only asks whether the number is open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

child_test! {
    /// A `clone3` child: the parent's secret is `Forked`, the memory file's
    /// descriptor is closed by the first call, and it makes its own.
    fn clone3_child_is_detected() {
        let f = ProtectedFactory::new(Options::default()).unwrap();
        let s = f.new(&mut [6u8; 32]).unwrap();
        let fd = store_fd().unwrap();
        let Some(pid) = clone3() else { return };
        if pid == 0 {
            let held_before = fd_open(fd);
            let code = match s.with_bytes(|b| b.to_vec()) {
                Err(Error::Forked) if held_before && !fd_open(fd) => {
                    match f.new(&mut [7u8; 32]).and_then(|t| t.with_bytes(|b| b[0])) {
                        Ok(7) => 0,
                        other => {
                            eprintln!("own secret: {other:?}");
                            3
                        }
                    }
                }
                Err(Error::Forked) => {
                    eprintln!("descriptor before {held_before}, after {}", fd_open(fd));
                    2
                }
                other => {
                    eprintln!("parent's secret in the clone3 child: {other:?}");
                    1
                }
            };
            exit_now(code);
        }
        wait_ok(pid);
        s.close().unwrap();
    }
}

child_test! {
    /// A raw-fork child that copies the memory file's descriptor (`dup`)
    /// before its first library call keeps that copy after it: the first
    /// call closes only the number the library knows. The README says so.
    fn raw_child_dup_before_first_call_outlives_it() {
        let f = ProtectedFactory::new(Options::default()).unwrap();
        let s = f.new(&mut [8u8; 32]).unwrap();
        let fd = store_fd().unwrap();
        io::stdout().flush().ok();
        // SAFETY: a copy of this process; the child `_exit`s.
        let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: duplicates a descriptor of this process.
            let copy = unsafe { libc::dup(fd) };
            let forked = matches!(s.with_bytes(|b| b.len()), Err(Error::Forked));
            let code = if forked && !fd_open(fd) && fd_open(copy) { 0 } else { 1 };
            exit_now(code);
        }
        wait_ok(pid as libc::pid_t);
        s.close().unwrap();
    }
}

child_test! {
    /// "The child's first call into the library notices the fork": also
    /// when that call is making a factory, or asking for the statistics.
    fn raw_child_first_call_of_any_kind_closes_the_descriptor() {
        let f = ProtectedFactory::new(Options::default()).unwrap();
        let s = f.new(&mut [8u8; 32]).unwrap();
        let fd = store_fd().unwrap();
        type FirstCall = fn() -> bool;
        let calls: [(&str, FirstCall); 2] = [
            ("ProtectedFactory::new", || {
                ProtectedFactory::new(Options::default()).is_ok()
            }),
            ("stats", || securememory::stats().bytes_locked == 0),
        ];
        for (name, call) in calls {
            io::stdout().flush().ok();
            // SAFETY: a copy of this process; the child `_exit`s.
            let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
            assert!(pid >= 0);
            if pid == 0 {
                let ok = call();
                let open = fd_open(fd);
                if open {
                    eprintln!("{name} as the first call: the memory file's descriptor {fd} is still open");
                }
                exit_now(if ok && !open { 0 } else { 1 });
            }
            wait_ok(pid as libc::pid_t);
        }
        s.close().unwrap();
    }
}
