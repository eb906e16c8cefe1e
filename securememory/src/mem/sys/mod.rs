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

use std::io;

mod file;
mod mapping;
mod process;

pub(crate) use file::{
    close_raw, fchmod_none, file_id, ftruncate, memfd_create, memfd_secret, pread_exact,
    punch_hole, pwrite_all, read_exact_fd, try_memfd_secret_page,
};
pub(crate) use mapping::{
    madvise, mlock, mmap_anonymous, mmap_shared, mmap_shared_locked, mprotect, munmap, page_size,
    wipe, Advice, LockedMapError, Prot,
};
pub(crate) use process::{
    address_space_limit, core_limit, disable_core_dumps, dumpable, fill_random, getpid,
    memlock_limit, nofile_limit, physical_memory, register_atfork, thread_has_effective_cap,
    yield_now, Limit,
};

fn last_error() -> io::Error {
    io::Error::last_os_error()
}
