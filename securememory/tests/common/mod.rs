//! Helpers shared by the integration tests: the factory configurations
//! every behaviour is checked in ([`configs`]), re-executing this test
//! binary as a child process ([`child`]), readers of `/proc/self`
//! ([`procfs`]), resource limits ([`rlimit`]) and a counting allocator
//! ([`counting_alloc`]).
//!
//! Each test binary compiles this whole module and uses only part of it.
#![allow(dead_code)]

#[macro_use]
pub mod child;
pub mod configs;
pub mod counting_alloc;
pub mod procfs;
pub mod rlimit;
pub mod seccomp;

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}
