//! The process-wide memory file that backs `Backend::Memfd` secrets.
//!
//! One `memfd` holds every such secret at its own page-aligned offset, so the
//! number of descriptors does not grow with the number of secrets. Accesses
//! copy a secret out with `pread` on this descriptor: the kernel reads the
//! page through its own mapping, and the secret's user-space mapping stays
//! `PROT_NONE` throughout, so no page table changes and no other CPU is
//! interrupted.
//!
//! The descriptor is a new way in, so it is fenced:
//! - close-on-exec (`MFD_CLOEXEC`): it does not survive `exec`;
//! - mode `0000`: it cannot be reopened through `/proc/<pid>/fd/N` without
//!   `CAP_DAC_OVERRIDE`;
//! - closed in a fork child by the at-fork handler (see `fork`), before the
//!   child runs any code of its own.

use std::collections::HashMap;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::Error;
use crate::mem::sys;

/// Grow the file by at least this much at a time (sparse: costs no memory).
const GROW_BY: u64 = 16 << 20;
/// Freed (already wiped) ranges kept allocated for reuse, up to this many
/// bytes; past it, freed pages are punched out and go back to the system.
/// Reuse skips a page allocation and a `fallocate` per secret.
const KEEP_FREED: u64 = 1 << 20;

/// The descriptor, or -1 once closed in a fork child.
static FD: AtomicI32 = AtomicI32::new(-1);
static INIT: OnceLock<Result<(), String>> = OnceLock::new();
static ALLOC: Mutex<PageAlloc> = Mutex::new(PageAlloc {
    next: 0,
    size: 0,
    kept: None,
    kept_bytes: 0,
    punched: None,
});

struct PageAlloc {
    /// First never-used offset.
    next: u64,
    /// Current file size.
    size: u64,
    /// Freed ranges by length whose pages are still allocated (zeroed);
    /// reused first.
    kept: Option<HashMap<u64, Vec<u64>>>,
    /// Bytes in `kept`.
    kept_bytes: u64,
    /// Freed ranges by length whose pages were punched out; reused before
    /// the file grows.
    punched: Option<HashMap<u64, Vec<u64>>>,
}

fn init() -> Result<(), Error> {
    let r = INIT.get_or_init(|| {
        crate::fork::install();
        let fd = sys::memfd_create(c"securememory").map_err(|e| format!("memfd_create: {e}"))?;
        sys::fchmod_none(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .map_err(|e| format!("fchmod: {e}"))?;
        FD.store(fd.into_raw_fd(), Ordering::Release);
        Ok(())
    });
    match r {
        Ok(()) => Ok(()),
        Err(why) => Err(Error::Unsupported(format!("memfd backend unavailable: {why}"))),
    }
}

/// The descriptor for this process, or `Forked` in a fork child.
#[inline]
pub(crate) fn fd() -> Result<RawFd, Error> {
    let fd = FD.load(Ordering::Acquire);
    if fd < 0 {
        Err(Error::Forked)
    } else {
        Ok(fd)
    }
}

/// Reserve `len` bytes (a page multiple) of the file; returns the offset.
pub(crate) fn alloc(len: u64) -> Result<u64, Error> {
    init()?;
    let fd = fd()?;
    let mut a = ALLOC.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(off) = a.kept.as_mut().and_then(|f| f.get_mut(&len)).and_then(Vec::pop) {
        a.kept_bytes -= len;
        return Ok(off);
    }
    if let Some(off) = a.punched.as_mut().and_then(|f| f.get_mut(&len)).and_then(Vec::pop) {
        return Ok(off);
    }
    let off = a.next;
    if off + len > a.size {
        let size = (off + len).max(a.size + GROW_BY);
        sys::ftruncate(&BorrowedRaw(fd), size).map_err(|e| Error::MapFailed {
            bytes: len as usize,
            source: e,
        })?;
        a.size = size;
    }
    a.next = off + len;
    Ok(off)
}

/// Return a range the caller has wiped; its offset is kept for reuse. Its
/// pages stay allocated (holding zeros) while fewer than `KEEP_FREED` bytes
/// are kept that way; past that they are punched out of the file.
pub(crate) fn free(off: u64, len: u64) {
    let Ok(fd) = fd() else { return };
    let mut a = ALLOC.lock().unwrap_or_else(|p| p.into_inner());
    if a.kept_bytes + len <= KEEP_FREED {
        a.kept_bytes += len;
        a.kept.get_or_insert_with(HashMap::new).entry(len).or_default().push(off);
        return;
    }
    drop(a);
    // Punching frees the page frames; failure only costs memory until exit.
    let _ = sys::punch_hole(fd, off, len);
    let mut a = ALLOC.lock().unwrap_or_else(|p| p.into_inner());
    a.punched.get_or_insert_with(HashMap::new).entry(len).or_default().push(off);
}

/// Called only from the at-fork child handler: forget and close the
/// descriptor so the child cannot read the parent's secrets through it.
pub(crate) fn close_in_fork_child() {
    let fd = FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        sys::close_raw(fd);
    }
}

/// The store's descriptor, if open in this process (test hook).
#[cfg(feature = "test-hooks")]
pub(crate) fn raw_fd_for_tests() -> Option<RawFd> {
    let fd = FD.load(Ordering::Acquire);
    (fd >= 0).then_some(fd)
}

struct BorrowedRaw(RawFd);
impl std::os::fd::AsRawFd for BorrowedRaw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}
