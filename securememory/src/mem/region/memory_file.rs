//! A range of the process-wide memory file (`memfile`), mapped shared and
//! `MADV_DONTFORK`, locked in the mapping call when the budget counted it.
//! Reads and writes go through `pread`/`pwrite` on the file (the mapping
//! stays `PROT_NONE`); the release zeroes the range through the file and
//! gives it back. A pool chunk may instead be tagged with a protection key:
//! read-write in the page tables, closed to every thread that never opened
//! the key, and copied to and from in user space with the key open in the
//! copying thread for the copy alone (see `pkey`).

use super::{map_err, Mapped, Region};
use crate::error::Error;
use crate::mem::budget;
use crate::mem::fork;
use crate::mem::memfile::{self, MemoryFile};
use crate::mem::pkey::{self, Pkey};
use crate::mem::sys::{self, Prot};
use crate::options::LockPolicy;

/// The range of the memory file that holds a region's data pages.
#[derive(Clone, Copy)]
pub(super) struct FileRange {
    pub(super) file: &'static MemoryFile,
    /// Offset of the data pages in the file.
    pub(super) off: u64,
    /// The protection key the data pages are tagged with, if any.
    pub(super) key: Option<Pkey>,
}

impl FileRange {
    /// Take `len` bytes of the current memory file (untagged).
    pub(super) fn alloc(len: usize) -> Result<FileRange, Error> {
        let file = memfile::current(len)?;
        let off = file.alloc(len as u64)?;
        Ok(FileRange {
            file,
            off,
            key: None,
        })
    }
}

/// Map `range` over the data pages (inside the guard reservation if there is
/// one), read-write for filling; locked in the same call when the budget
/// counted the pages.
pub(super) fn map(
    region: &mut Region,
    range: FileRange,
    guard: bool,
    lock: LockPolicy,
) -> Result<(), Error> {
    let data_len = region.data_len;
    let fd = range.file.fd()?;
    let at = guard.then_some(region.data);
    // From the shared mapping to its `MADV_DONTFORK`, no fork (that runs
    // at-fork handlers) may copy it: a child would see every secret later
    // placed in this range.
    let fence = fork::fence();
    let mut refused = None;
    // Locked in the same call when the budget counted it (mapped VM_LOCKED
    // and populated: no separate `mlock`).
    let locked = if region.counted > 0 {
        // SAFETY: a fixed target is the data part of our own reservation.
        match unsafe { sys::mmap_shared_locked(at, data_len, Prot::ReadWrite, fd, range.off) } {
            Ok(p) => Some(p),
            Err(sys::LockedMapError::Map(e)) => return Err(map_err(data_len)(e)),
            Err(sys::LockedMapError::Lock(e)) if lock == LockPolicy::Require => {
                drop(fence);
                region.uncount();
                return Err(budget::lock_error(data_len as u64, e));
            }
            Err(sys::LockedMapError::Lock(e)) => {
                refused = Some(e);
                None
            }
        }
    } else {
        None
    };
    let p = match locked {
        Some(p) => p,
        // SAFETY: as above.
        None => unsafe { sys::mmap_shared(at, data_len, Prot::ReadWrite, fd, range.off) }
            .map_err(map_err(data_len))?,
    };
    region.keep_from_fork(p, guard)?;
    drop(fence);
    // The warning (user code: a `tracing` subscriber, metrics) runs outside
    // the fence.
    if let Some(e) = refused {
        region.lock_refused(lock, e)?;
    }
    Ok(())
}

impl Region {
    /// Tag the data pages with protection key `key`: they become read-write
    /// in the page tables and closed by the key to every thread that never
    /// opened it. From then on [`copy_out`](Self::copy_out),
    /// [`write_in`](Self::write_in) and the wipe are user-space copies with
    /// the key open in this thread only.
    pub(super) fn tag_with_key(&mut self, key: Pkey) -> Result<(), Error> {
        // SAFETY: the data pages are ours and PROT_NONE so far: no reference
        // into them exists.
        unsafe { pkey::protect_with(self.data, self.data_len, key) }.map_err(|source| {
            Error::ProtectFailed {
                to: "read-write with a protection key",
                source,
            }
        })?;
        if let Mapped::MemoryFile(range) = &mut self.backing {
            range.key = Some(key);
        }
        Ok(())
    }

    /// The protection key of the data pages, if they have one.
    pub(crate) fn key(&self) -> Option<Pkey> {
        match &self.backing {
            Mapped::MemoryFile(range) => range.key,
            _ => None,
        }
    }

    /// The memory file's range, or an error for pages not backed by it.
    fn file_range(&self) -> Result<&FileRange, Error> {
        match &self.backing {
            Mapped::MemoryFile(range) => Ok(range),
            _ => Err(Error::Unsupported("not backed by the memory file".into())),
        }
    }

    /// For keyed pages: the key and the address of `[off, off + len)`;
    /// panics unless the range lies inside the data pages. `None` for pages
    /// without a key.
    fn keyed(&self, off: usize, len: usize) -> Option<(Pkey, *mut u8)> {
        let key = self.key()?;
        assert!(
            off.checked_add(len).is_some_and(|end| end <= self.data_len),
            "range outside the data pages"
        );
        // SAFETY: `off + len <= data_len` (checked), so the address is inside
        // the data pages of this mapping.
        Some((key, unsafe { self.data.add(off) }))
    }

    /// Copy `[off, off + buf.len())` of the data pages into `buf`: a kernel
    /// copy from the memory file (the mapping stays `PROT_NONE`), or for
    /// keyed pages a user-space copy with the key open for the copy alone.
    #[inline]
    pub(crate) fn copy_out(&self, off: usize, buf: &mut [u8]) -> Result<(), Error> {
        if let Some((key, at)) = self.keyed(off, buf.len()) {
            // SAFETY: the range is inside our keyed data pages (checked);
            // callers serialise writers of a range (slot owner, close).
            unsafe { pkey::copy_out(key, at, buf) };
            return Ok(());
        }
        let range = self.file_range()?;
        sys::pread_exact(range.file.fd()?, buf, range.off + off as u64).map_err(Error::AccessFailed)
    }

    /// Write `bytes` at `off` of the data pages: through the memory file, or
    /// for keyed pages by a user-space copy with the key open.
    pub(crate) fn write_in(&self, off: usize, bytes: &[u8]) -> Result<(), Error> {
        if let Some((key, at)) = self.keyed(off, bytes.len()) {
            // SAFETY: as in `copy_out`; the caller owns this range alone.
            unsafe { pkey::copy_in(key, at, bytes) };
            return Ok(());
        }
        let range = self.file_range()?;
        sys::pwrite_all(range.file.fd()?, bytes, range.off + off as u64)
            .map_err(Error::AccessFailed)
    }

    /// Zero `[off, off + len)` of the data pages (memory file only) at
    /// release. If writing the zeros fails, punch the range out of the file
    /// instead (it then reads as zeros: whole pages are freed, partial ones
    /// zeroed), so no freed range that the file keeps for reuse holds a
    /// secret; the write error is still reported.
    pub(crate) fn wipe_in(&self, off: usize, len: usize) -> Result<(), Error> {
        // A failed write here is a failed wipe, not a failed copy out.
        let r = self.zero_in(off, len).map_err(|e| match e {
            Error::AccessFailed(io) => Error::WipeFailed(io),
            e => e,
        });
        if r.is_err() {
            if let Ok(range) = self.file_range() {
                if let Ok(fd) = range.file.fd() {
                    let _ = sys::punch_hole(fd, range.off + off as u64, len as u64);
                }
            }
        }
        r
    }

    /// Zero `[off, off + len)` of the data pages (memory file only).
    fn zero_in(&self, off: usize, len: usize) -> Result<(), Error> {
        if let Some((key, at)) = self.keyed(off, len) {
            // SAFETY: as in `write_in`.
            unsafe { pkey::wipe(key, at, len) };
            return Ok(());
        }
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len());
            self.write_in(off + done, &ZEROS[..n])?;
            done += n;
        }
        Ok(())
    }
}
