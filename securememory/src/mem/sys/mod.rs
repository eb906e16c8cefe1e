//! The only code that makes system calls, grouped by area as a port to
//! another system would replace them: `mapping` (map, protect, lock,
//! advise, page size, wipe), `file` (memory files and descriptors) and
//! `process` (limits, core dumps, capabilities, fork handlers, pid,
//! randomness). Each wrapper has a safe signature where the kernel cannot be
//! made to touch memory we do not own; the ones that take a raw address are
//! `unsafe fn` and state what the caller must guarantee. Everything is
//! re-exported here, so callers name `sys::name` whatever the area.
//!
//! With the `test-hooks` feature every wrapper first asks
//! [`inject`](super::inject) whether the test running on this thread wants it
//! to fail, so that each failure path can be exercised without a hostile
//! kernel.

#[cfg(unix)]
use std::io;

#[cfg(any(target_os = "macos", target_os = "freebsd"))]
mod bsd;
#[cfg(unix)]
mod file;
#[cfg(unix)]
mod mapping;
mod portable;
#[cfg(unix)]
mod process;
#[cfg(windows)]
mod windows;

/// Descriptor types: std's on Unix, stand-ins on Windows (where no
/// descriptor is ever made).
#[cfg(unix)]
pub(crate) mod fd {
    pub(crate) use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};
}
#[cfg(windows)]
pub(crate) use windows::fd;

#[cfg(windows)]
pub(crate) use windows::*;

#[cfg(unix)]
pub(crate) use file::{
    close_raw, fchmod_none, file_id, ftruncate, pread_exact, pwrite_all, read_exact_fd,
    try_memfd_secret_page,
};
#[cfg(unix)]
pub(crate) use mapping::{
    mlock, mmap_anonymous, mmap_shared, mprotect, munmap, page_size, replace_with_zeros, wipe,
    Advice, LockedMapError, Prot,
};
pub(crate) use portable::{fill_random, Limit};
#[cfg(unix)]
pub(crate) use process::{
    address_space_limit, core_limit, disable_core_dumps, getpid, memlock_limit, nofile_limit,
    physical_memory, register_atfork, yield_now,
};

// The calls that differ: Linux's, or their macOS/FreeBSD counterparts.
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
pub(crate) use bsd::{
    dumpable, madvise, memfd_create, memfd_secret, mmap_shared_locked, punch_hole,
    thread_has_effective_cap, WIPE_ON_FORK_ZEROES,
};
#[cfg(target_os = "linux")]
pub(crate) use file::{memfd_create, memfd_secret, punch_hole};
#[cfg(target_os = "linux")]
pub(crate) use mapping::{madvise, mmap_shared_locked};
#[cfg(target_os = "linux")]
pub(crate) use process::{dumpable, thread_has_effective_cap};
/// Whether a page marked `WipeOnFork` reads as zeros in a fork child.
#[cfg(target_os = "linux")]
pub(crate) const WIPE_ON_FORK_ZEROES: bool = true;

#[cfg(unix)]
fn last_error() -> io::Error {
    io::Error::last_os_error()
}
