//! The kernel floor of the benchmark: what two protection changes around a
//! 32-byte read cost on this machine, with nothing of the library in the way.
//!
//! One locked, private anonymous page, `PROT_NONE` at rest. Each iteration:
//! `mprotect(PROT_READ)`, read 32 bytes (volatile, so the read happens),
//! `mprotect(PROT_NONE)`. One thread. This is Asherah Go's access path
//! reduced to its system calls; every benchmark row is reported as a ratio
//! to it. The calls go through the same [`super::sys`] wrappers as the
//! library's own, so rows and floor pay the same per-call overhead.

use std::io;
use std::time::{Duration, Instant};

use super::sys;

/// Bytes read per iteration, the size of a typical key.
const READ_LEN: usize = 32;

/// The page: mapped, locked and `PROT_NONE`; unmapped on drop.
struct FloorPage {
    ptr: *mut u8,
    len: usize,
}

impl FloorPage {
    fn new() -> io::Result<FloorPage> {
        let len = sys::page_size();
        let ptr = sys::mmap_anonymous(len, sys::Prot::ReadWrite)?;
        let page = FloorPage { ptr, len };
        // SAFETY: `ptr` is the fresh read-write page of `len` bytes mapped
        // just above, owned by `page`; nothing else points into it.
        unsafe { std::ptr::write_bytes(page.ptr, 0xA5, page.len) };
        // SAFETY: the same page, ours; locking it changes no access rights.
        unsafe { sys::mlock(page.ptr, page.len) }?;
        // SAFETY: no reference into the page exists (only the raw pointer).
        unsafe { page.protect(sys::Prot::None) }?;
        Ok(page)
    }

    /// # Safety
    /// No reference into the page may be live when access is taken away.
    #[inline(always)]
    unsafe fn protect(&self, prot: sys::Prot) -> io::Result<()> {
        // SAFETY: the page is our own mapping of `len` bytes; the caller
        // guarantees no reference into it outlives a loss of access.
        unsafe { sys::mprotect(self.ptr, self.len, prot) }
    }

    /// One iteration: open, read 32 bytes, close.
    #[inline(always)]
    fn access(&self) -> io::Result<()> {
        // SAFETY: nothing points into the page; it is ours.
        unsafe { self.protect(sys::Prot::Read) }?;
        let mut out = [0u8; READ_LEN];
        for (i, o) in out.iter_mut().enumerate() {
            // SAFETY: `i < READ_LEN <= len`: inside the page.
            let at = unsafe { self.ptr.add(i) };
            // SAFETY: `at` is inside the page, which is readable now.
            *o = unsafe { std::ptr::read_volatile(at) };
        }
        std::hint::black_box(out);
        // SAFETY: the volatile reads above are done and no reference was made.
        unsafe { self.protect(sys::Prot::None) }
    }
}

impl Drop for FloorPage {
    fn drop(&mut self) {
        // SAFETY: the page is our own mapping and nothing points into it.
        let _ = unsafe { sys::munmap(self.ptr, self.len) };
    }
}

/// Time `iterations` floor iterations (after a short warm-up) and return the
/// total elapsed time of the timed iterations.
pub(crate) fn measure(iterations: u64) -> io::Result<Duration> {
    let page = FloorPage::new()?;
    for _ in 0..iterations.min(64) {
        page.access()?;
    }
    let started = Instant::now();
    for _ in 0..iterations {
        page.access()?;
    }
    Ok(started.elapsed())
}
