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
//! - closed in a fork child: by the at-fork handler (see `fork`) before the
//!   child runs any code of its own after glibc's `fork`; after a raw
//!   `fork`/`clone` system call (no handler runs) by the child's first call
//!   into the library, which notices the fork (until then the child's own
//!   code could use it: Linux has no close-on-fork).
//!
//! A fork child that makes secrets of its own gets a memory file of its own:
//! there is one memory file per fork generation (the depth of the fork chain), each
//! in a slot the parent never touched, so no lock or state copied mid-flight
//! from the parent's threads is ever used in the child.

use super::sys::fd::{AsRawFd, IntoRawFd, RawFd};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

use super::fork;
use super::once::ForkSafeOnce;
use super::sys;
use crate::error::Error;

/// Grow the file by at least this much at a time (sparse: costs no memory).
const GROW_BY: u64 = 16 << 20;
/// Freed (already wiped) ranges kept allocated for reuse, up to this many
/// bytes; past it, freed pages are punched out and go back to the system.
/// Reuse skips a page allocation and a `fallocate` per secret.
const KEEP_FREED: u64 = 1 << 20;
/// Fork generations (depth of the fork chain) that can have a memory file.
pub(crate) const GENERATIONS: usize = 16;

/// One memory file and the allocator of its pages.
pub(crate) struct MemoryFile {
    /// The descriptor, or -1 once closed in a fork child.
    fd: AtomicI32,
    /// The file's (device, inode): a fork child closes the descriptor only
    /// if its number still names this file (after a raw fork the child's own
    /// code may have closed it and reused the number before noticing).
    id: Option<(u64, u64)>,
    alloc: Mutex<PageAlloc>,
}

static FILES: [OnceLock<MemoryFile>; GENERATIONS] = [const { OnceLock::new() }; GENERATIONS];

#[derive(Default)]
struct PageAlloc {
    /// First never-used offset.
    next: u64,
    /// Current file size.
    size: u64,
    /// Freed ranges by length whose pages are still allocated (zeroed);
    /// reused first.
    kept: HashMap<u64, Vec<u64>>,
    /// Bytes in `kept`.
    kept_bytes: u64,
    /// Freed ranges by length whose pages were punched out; reused before
    /// the file grows.
    punched: HashMap<u64, Vec<u64>>,
}

fn open() -> Result<MemoryFile, (&'static str, std::io::Error)> {
    let fd = sys::memfd_create(c"securememory").map_err(|e| ("memfd_create", e))?;
    sys::fchmod_none(fd.as_raw_fd()).map_err(|e| ("fchmod", e))?;
    Ok(MemoryFile {
        id: sys::file_id(fd.as_raw_fd()),
        fd: AtomicI32::new(fd.into_raw_fd()),
        alloc: Mutex::new(PageAlloc::default()),
    })
}

/// The memory file of this process (of this fork generation), made on first
/// use (for a request of `bytes` bytes, which a refusal names).
pub(crate) fn current(bytes: usize) -> Result<&'static MemoryFile, Error> {
    fork::install();
    // Before any file exists: every fork child from then on closes it.
    HOOKED.get_or_init(|| fork::on_child(close_in_fork_child));
    let generation = fork::generation() as usize;
    let slot = FILES.get(generation).ok_or_else(|| {
        Error::Unsupported(format!(
            "memfd backend: fork chain deeper than {GENERATIONS} processes"
        ))
    })?;
    if let Some(store) = slot.get() {
        return Ok(store);
    }
    // A failure is not cached: a transient one (EMFILE, say) must not
    // disable the backend for the life of the process. Two threads may both
    // open a file here; the loser's is closed when it drops. Fenced: a fork
    // must not copy a descriptor that the child handler cannot find yet.
    let fence = fork::fence();
    // A limit (descriptors, memory) is that limit, not "unsupported".
    let store = open().map_err(|(call, e)| match super::limits::explain(bytes, &e) {
        Some(limit) => Error::LimitReached {
            bytes,
            limit,
            source: e,
        },
        None => Error::Unsupported(format!("memfd backend unavailable: {call}: {e}")),
    })?;
    let _ = slot.set(store);
    drop(fence);
    Ok(slot.get().expect("set just above"))
}

impl Drop for MemoryFile {
    fn drop(&mut self) {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            sys::close_raw(fd);
        }
    }
}

impl MemoryFile {
    /// The descriptor, or `Forked` once closed in a fork child.
    #[inline]
    pub(crate) fn fd(&self) -> Result<RawFd, Error> {
        let fd = self.fd.load(Ordering::Acquire);
        if fd < 0 {
            Err(Error::Forked)
        } else {
            Ok(fd)
        }
    }

    /// Reserve `len` bytes (a page multiple) of the file; returns the offset.
    pub(crate) fn alloc(&self, len: u64) -> Result<u64, Error> {
        let fd = self.fd()?;
        let mut a = self.alloc.lock().unwrap_or_else(|p| p.into_inner());
        #[cfg(feature = "test-hooks")]
        crate::lock_point::at(crate::lock_point::LockPoint::MemoryFile);
        if let Some(off) = a.kept.get_mut(&len).and_then(Vec::pop) {
            a.kept_bytes -= len;
            return Ok(off);
        }
        if let Some(off) = a.punched.get_mut(&len).and_then(Vec::pop) {
            return Ok(off);
        }
        let off = a.next;
        if off + len > a.size {
            let size = (off + len).max(a.size + GROW_BY);
            sys::ftruncate(&RawDescriptor(fd), size).map_err(|source| Error::MapFailed {
                bytes: len as usize,
                source,
            })?;
            a.size = size;
        }
        a.next = off + len;
        Ok(off)
    }

    /// Return a range the caller has wiped; its offset is kept for reuse.
    /// Its pages stay allocated (holding zeros) while fewer than
    /// `KEEP_FREED` bytes are kept that way; past that they are punched out.
    pub(crate) fn free(&self, off: u64, len: u64) {
        let Ok(fd) = self.fd() else { return };
        let mut a = self.alloc.lock().unwrap_or_else(|p| p.into_inner());
        if a.kept_bytes + len <= KEEP_FREED {
            a.kept_bytes += len;
            a.kept.entry(len).or_default().push(off);
            return;
        }
        drop(a);
        // Punching frees the page frames; failure only costs memory until exit.
        let _ = sys::punch_hole(fd, off, len);
        let mut a = self.alloc.lock().unwrap_or_else(|p| p.into_inner());
        a.punched.entry(len).or_default().push(off);
    }
}

/// Set once [`close_in_fork_child`] is registered with `fork`.
static HOOKED: ForkSafeOnce<()> = ForkSafeOnce::new();

/// A fork child hook (see [`fork::on_child`]), run once in a fork child (by
/// the at-fork handler or the first library call): close the descriptors
/// of the memory files of earlier generations so the child cannot read the
/// parent's secrets through them. Only atomic loads, swaps and `close`:
/// async-signal-safe, as the at-fork child handler requires.
fn close_in_fork_child(new_generation: u64) {
    for slot in FILES.iter().take(new_generation as usize) {
        if let Some(store) = slot.get() {
            let fd = store.fd.swap(-1, Ordering::AcqRel);
            // Unknown identity: close all the same (the secrets come first).
            if fd >= 0 && (store.id.is_none() || sys::file_id(fd) == store.id) {
                sys::close_raw(fd);
            }
        }
    }
}

/// The current memory file's descriptor, if open (test hook).
#[cfg(feature = "test-hooks")]
pub(crate) fn raw_fd_for_tests() -> Option<RawFd> {
    let slot = FILES.get(fork::generation() as usize)?;
    slot.get().and_then(|store| store.fd().ok())
}

struct RawDescriptor(RawFd);
impl AsRawFd for RawDescriptor {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}
