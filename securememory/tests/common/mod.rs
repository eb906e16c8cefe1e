//! Helpers shared by the integration tests: the factory configurations
//! every behaviour is checked in ([`configs`]), re-executing this test
//! binary as a child process ([`child`]), readers of `/proc/self`
//! ([`procfs`]), resource limits ([`rlimit`]), a counting allocator
//! ([`counting_alloc`]) and memory of the test's own ([`mem`]).
//!
//! Each test binary compiles this whole module and uses only part of it.
#![allow(dead_code)]

#[macro_use]
pub mod child;
pub mod configs;
pub mod counting_alloc;
pub mod mem;
pub mod procfs;
pub mod recorder;
pub mod rlimit;
pub mod scan;
#[cfg(feature = "test-hooks")]
pub mod sealed;
pub mod seccomp;

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// The library's error inside an `io::Error` from a secret's reader.
pub fn library_error(e: &std::io::Error) -> Option<&securememory::Error> {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<securememory::Error>())
}

/// Wait for the child `pid` (retrying on EINTR); its raw wait status.
pub fn wait_status(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: `pid` is a child of this process; valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "waitpid: {e}");
    }
}

/// In a forked child: run `child` and leave with `_exit` of its code (101
/// if it panics), never returning into the test harness.
pub fn run_and_exit(child: impl FnOnce() -> i32) -> ! {
    use std::io::Write;
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
    std::io::stdout().flush().ok();
    std::io::stderr().flush().ok();
    // SAFETY: ends the child at once; nothing of the parent's (atexit
    // handlers, the harness) runs in it.
    unsafe { libc::_exit(code) }
}
