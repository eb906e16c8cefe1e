//! An owned mapping that holds secret bytes: its layout, locking, advice and
//! protection, and on release a wipe, unlock and unmap.
//!
//! ```text
//!   base                data                               data + data_len
//!    |                   |                                       |
//!    v                   v                                       v
//!    +-------------------+---------------------------------------+-------------------+
//!    | guard page        | data pages (locked, do-not-dump,      | guard page        |
//!    | PROT_NONE, never  | wipe-on-fork or do-not-fork;          | PROT_NONE, never  |
//!    | readable          | PROT_NONE at rest)                    | readable          |
//!    +-------------------+---------------------------------------+-------------------+
//!                        | ... padding ... | canary | secret     |
//!                                                       flush against the trailing guard,
//!                                                       so a one-byte overrun faults
//! ```
//!
//! Without guard pages the region is the data pages alone. The secret's
//! placement inside the data pages (and the canary) is decided by the
//! guarded layout (`storage/guarded.rs`); this type only knows pages.
//!
//! Backing memory:
//! - `Anonymous`: a private anonymous mapping, `MADV_WIPEONFORK`.
//! - `Memfd`: a range of the process-wide memory file (`memfile`), mapped
//!   shared, `MADV_DONTFORK`. Reads go through `pread` on the file.
//!   A pool chunk may instead be tagged with a protection key
//!   ([`Region::tag_with_key`]): read-write in the page tables, closed to
//!   every thread that never opened the key (see `pkey`), and copied to and from in user space with the
//!   key open in the copying thread for the copy alone (see `pkey`).
//! - `MemfdSecret`: a `memfd_secret` file of its own, mapped shared,
//!   `MADV_DONTFORK`; the kernel locks these pages itself and removes them
//!   from its direct map.

use std::sync::atomic::{AtomicBool, Ordering};

use super::pkey::{self, Pkey};
use super::sys::{self, Advice, Prot};
use crate::access::{Drained, Entered, Turn, Window};
use crate::budget;
use crate::error::Error;
use crate::memfile::{self, MemoryFile};
use crate::options::LockPolicy;
use crate::{fork, metrics};

/// Which memory backs a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackingKind {
    Anonymous,
    Memfd,
    MemfdSecret,
}

/// What to build.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegionSpec {
    /// Usable bytes needed; rounded up to whole pages.
    pub len: usize,
    pub guard: bool,
    pub backing: BackingKind,
    pub lock: LockPolicy,
}

/// An owned, page-aligned mapping of secret memory. See the module docs.
pub(crate) struct Region {
    base: *mut u8,
    total: usize,
    data: *mut u8,
    data_len: usize,
    backing: BackingKind,
    /// The memory file and the offset of the data pages in it (`Memfd` only).
    file: Option<&'static MemoryFile>,
    file_off: u64,
    /// Bytes counted in the locked-memory budget.
    counted: u64,
    /// Fork generation at creation: in a fork child the region is not ours.
    fork_gen: u64,
    released: AtomicBool,
    /// Set when the pages could not be hidden after a window and were wiped.
    hide_failed: AtomicBool,
    /// The protection key the data pages are tagged with, if any.
    key: Option<Pkey>,
    /// The entry of the data pages in the purge registry, once mapped.
    ticket: Option<super::registry::Ticket>,
}

// SAFETY: the raw pointers name a mapping this value owns exclusively; all
// access to the bytes goes through the access gate of the owner, which
// orders it across threads. Nothing here is tied to the creating thread.
unsafe impl Send for Region {}
// SAFETY: as above; shared references only read the pointers, and every
// mutation of the mapping (protect, wipe, unmap) is serialised by the owner's
// gate or happens in `release`, which runs once.
unsafe impl Sync for Region {}

/// Round `n` up to whole pages, or `None` on overflow.
pub(crate) fn round_to_pages(n: usize) -> Option<usize> {
    let p = sys::page_size();
    n.checked_add(p - 1).map(|v| v / p * p)
}

/// A refused mapping: the limit that explains it, or `MapFailed`.
fn map_err(bytes: usize) -> impl FnOnce(std::io::Error) -> Error {
    move |source| crate::limits::map_error(bytes, source)
}

/// A refused `memfd_secret` file: a descriptor or memory limit is reported
/// as that limit (transient, retried next time); anything else means this
/// kernel or its filter does not allow the call.
fn memfd_secret_err(bytes: usize) -> impl FnOnce(std::io::Error) -> Error {
    move |e| match crate::limits::explain(bytes, &e) {
        Some(limit) => Error::LimitReached {
            bytes,
            limit,
            source: e,
        },
        None => Error::Unsupported(format!("memfd_secret unavailable: {e}")),
    }
}

/// The largest data pages a region maps: half of what a pointer offset may
/// span, so adding the two guard pages can never overflow.
pub(crate) const MAX_DATA_LEN: usize = isize::MAX as usize / 2;

/// The largest secret the factory accepts (`isize::MAX / 4`): half of
/// [`MAX_DATA_LEN`], so the canary and the rounding to whole pages always fit.
pub(crate) const MAX_SECRET_LEN: usize = MAX_DATA_LEN / 2;

fn advise_err(advice: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::AdviseFailed { advice, source }
}

impl Region {
    /// Build a region, let `fill` write the data pages while they are
    /// writable, then make them `PROT_NONE`. On any failure everything done
    /// so far is undone (wiped, unlocked, unmapped, uncounted).
    pub(crate) fn create(
        spec: RegionSpec,
        fill: impl FnOnce(&mut [u8]) -> Result<(), Error>,
    ) -> Result<Region, Error> {
        let data_len = match round_to_pages(spec.len) {
            Some(n) if n > 0 && n <= MAX_DATA_LEN => n,
            _ => {
                return Err(Error::InvalidSize {
                    size: spec.len,
                    reason: "too large to map",
                })
            }
        };
        let page = sys::page_size();
        let total = data_len + if spec.guard { 2 * page } else { 0 };
        fork::install();
        // In a fork child not yet noticed, this empties the budget first.
        let fork_gen = fork::generation();

        // Count the bytes before asking the kernel, so the error names the
        // limit rather than a bare ENOMEM.
        let mut counted = 0;
        let wants_lock =
            spec.backing == BackingKind::MemfdSecret || spec.lock == LockPolicy::Require;
        match budget::reserve(data_len as u64) {
            Ok(()) => counted = data_len as u64,
            Err(e) if wants_lock => return Err(e),
            Err(_) => {
                metrics::unlocked();
                crate::shield::shield(|| {
                    tracing::warn!(bytes = data_len, "securememory: memlock budget exhausted; this secret is NOT locked (LockPolicy::AllowUnlocked)")
                });
            }
        }

        let mut region = Region {
            base: std::ptr::null_mut(),
            total,
            data: std::ptr::null_mut(),
            data_len,
            backing: spec.backing,
            file: None,
            file_off: 0,
            counted,
            fork_gen,
            released: AtomicBool::new(false),
            hide_failed: AtomicBool::new(false),
            key: None,
            ticket: None,
        };
        region.map(spec.guard, spec.lock)?;
        region.ticket = Some(region.register());

        if spec.backing == BackingKind::Anonymous && region.counted > 0 {
            // SAFETY: the data pages are the mapping just made and owned by `region`.
            if let Err(e) = unsafe { sys::mlock(region.data, data_len) } {
                region.lock_refused(spec.lock, e)?;
            }
        }
        // SAFETY: the whole range is the mapping owned by `region`.
        unsafe { sys::madvise(region.base, total, Advice::DontDump) }
            .map_err(advise_err("MADV_DONTDUMP"))?;
        if spec.backing == BackingKind::Anonymous {
            // Private memory: a child copied before this has the pages with
            // nothing written yet. (Shared mappings got `MADV_DONTFORK`
            // inside the fork fence, in `map`.)
            // SAFETY: the data pages are owned by `region`.
            unsafe { sys::madvise(region.data, data_len, Advice::WipeOnFork) }
                .map_err(advise_err("MADV_WIPEONFORK"))?;
        }

        {
            // SAFETY: the data pages are mapped read-write (see `map`), owned
            // by `region`, and no other reference to them exists yet.
            let bytes = unsafe { std::slice::from_raw_parts_mut(region.data, data_len) };
            fill(bytes)?;
        }
        region.set_prot(Prot::None)?;
        // A fork from user code called during the creation (a metrics
        // recorder, a `tracing` subscriber, the caller's reader) goes on
        // here in the child, with pages that are the parent's (gone, or
        // zeroed) or made after the fork outside the child's budget: no
        // secret there. Released as the child's own (wiped, unmapped).
        let now = fork::generation();
        if now != fork_gen {
            region.fork_gen = now;
            return Err(Error::Forked);
        }
        Ok(region)
    }

    /// Enter the data pages in the purge registry (a signal's purge finds
    /// them there): the memory file's range is punched, other pages replaced.
    fn register(&self) -> super::registry::Ticket {
        use super::registry::{register, Wipe};
        // Not `file_fd()`: its error allocates, and a scratch region is made
        // on the access path (nested accesses).
        match self.file.and_then(|f| f.fd().ok()) {
            Some(fd) => register(
                Wipe::Punch,
                self.data as usize,
                self.data_len,
                Some((fd, self.file_off)),
                self.fork_gen,
            ),
            None => register(
                Wipe::Replace,
                self.data as usize,
                self.data_len,
                None,
                self.fork_gen,
            ),
        }
    }

    /// Stop counting this region's bytes as locked (so that a lock error
    /// reports what was held before the refused request).
    fn uncount(&mut self) {
        budget::release(self.counted);
        self.counted = 0;
    }

    /// The kernel refused to lock the data pages: a lock error under
    /// `LockPolicy::Require`, else go on unlocked, loudly.
    fn lock_refused(&mut self, lock: LockPolicy, e: std::io::Error) -> Result<(), Error> {
        self.uncount();
        if lock == LockPolicy::Require {
            return Err(budget::lock_error(self.data_len as u64, e));
        }
        metrics::unlocked();
        let bytes = self.data_len;
        crate::shield::shield(
            || tracing::warn!(bytes, error = %e, "securememory: mlock refused; this secret is NOT locked (LockPolicy::AllowUnlocked)"),
        );
        Ok(())
    }

    /// Map the pages (and guards) read-write for filling; the memory file's
    /// range is locked in the same call when the budget counted it. On
    /// failure, `release` (from `Drop`) gives back what was taken.
    fn map(&mut self, guard: bool, lock: LockPolicy) -> Result<(), Error> {
        let page = sys::page_size();
        let data_len = self.data_len;
        if guard {
            self.base = sys::mmap_anonymous(self.total, Prot::None).map_err(map_err(self.total))?;
            // SAFETY: base + page lies inside the reservation just made.
            self.data = unsafe { self.base.add(page) };
        }
        match self.backing {
            BackingKind::Anonymous => {
                if guard {
                    // SAFETY: the data pages are inside the reservation owned by self.
                    unsafe { sys::mprotect(self.data, data_len, Prot::ReadWrite) }.map_err(
                        |source| Error::ProtectFailed {
                            to: "read-write",
                            source,
                        },
                    )?;
                } else {
                    self.base = sys::mmap_anonymous(data_len, Prot::ReadWrite)
                        .map_err(map_err(data_len))?;
                    self.data = self.base;
                }
            }
            BackingKind::Memfd => {
                let file = memfile::current(data_len)?;
                self.file_off = file.alloc(data_len as u64)?;
                self.file = Some(file);
                let fd = file.fd()?;
                let at = guard.then_some(self.data);
                // From the shared mapping to its `MADV_DONTFORK`, no fork
                // (that runs at-fork handlers) may copy it: a child would
                // see every secret later placed in this range.
                let fence = fork::fence();
                let mut refused = None;
                // Locked in the same call when the budget counted it (mapped
                // VM_LOCKED and populated: no separate `mlock`).
                let locked = if self.counted > 0 {
                    // SAFETY: a fixed target is the data part of our own reservation.
                    match unsafe {
                        sys::mmap_shared_locked(at, data_len, Prot::ReadWrite, fd, self.file_off)
                    } {
                        Ok(p) => Some(p),
                        Err(sys::LockedMapError::Map(e)) => return Err(map_err(data_len)(e)),
                        Err(sys::LockedMapError::Lock(e)) if lock == LockPolicy::Require => {
                            drop(fence);
                            self.uncount();
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
                    None => unsafe {
                        sys::mmap_shared(at, data_len, Prot::ReadWrite, fd, self.file_off)
                    }
                    .map_err(map_err(data_len))?,
                };
                self.keep_from_fork(p, guard)?;
                drop(fence);
                // The warning (user code: a `tracing` subscriber, metrics)
                // runs outside the fence.
                if let Some(e) = refused {
                    self.lock_refused(lock, e)?;
                }
            }
            BackingKind::MemfdSecret => {
                let at = guard.then_some(self.data);
                // The descriptor and the mapping exist only inside the fence.
                let fence = fork::fence();
                let fd = sys::memfd_secret().map_err(memfd_secret_err(data_len))?;
                sys::ftruncate(&fd, data_len as u64).map_err(map_err(data_len))?;
                // SAFETY: a fixed target is the data part of our own reservation.
                let mapped = unsafe {
                    sys::mmap_shared(
                        at,
                        data_len,
                        Prot::ReadWrite,
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        0,
                    )
                };
                let kept = match &mapped {
                    Ok(p) => self.keep_from_fork(*p, guard),
                    Err(_) => Ok(()),
                };
                // The mapping keeps the file alive; the descriptor is closed here.
                drop(fd);
                drop(fence);
                match mapped {
                    Ok(_) => kept?,
                    // The kernel charges these pages to RLIMIT_MEMLOCK at mmap
                    // and answers EAGAIN past it; ENOMEM is another limit.
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EPERM)) =>
                    {
                        self.uncount();
                        return Err(budget::lock_error(data_len as u64, e));
                    }
                    Err(e) => return Err(map_err(data_len)(e)),
                }
            }
        }
        Ok(())
    }

    /// A shared mapping `p` of the data pages was just made (inside the
    /// fork fence): record it and advise `MADV_DONTFORK`. If the advice is
    /// refused, unmap the data pages before leaving the fence, so no fork
    /// copies a shared mapping of a range that will be reused.
    fn keep_from_fork(&mut self, p: *mut u8, guard: bool) -> Result<(), Error> {
        if !guard {
            self.base = p;
            self.data = p;
        }
        // SAFETY: the data pages are the shared mapping just made, ours.
        let advised = unsafe { sys::madvise(self.data, self.data_len, Advice::DontFork) };
        if let Err(e) = advised {
            // SAFETY: nothing has been written or referenced in the pages yet.
            let _ = unsafe { sys::munmap(self.data, self.data_len) };
            if !guard {
                self.base = std::ptr::null_mut();
            }
            return Err(advise_err("MADV_DONTFORK")(e));
        }
        Ok(())
    }

    /// Size of the data pages.
    pub(crate) fn data_len(&self) -> usize {
        self.data_len
    }

    /// Address of the data pages (tests and the bench's at-rest check).
    pub(crate) fn data_addr(&self) -> usize {
        self.data as usize
    }

    /// The fork generation this region was created in.
    pub(crate) fn fork_gen(&self) -> u64 {
        self.fork_gen
    }

    /// Pointer to the data pages (the scratch buffer writes through it).
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        self.data
    }

    #[inline]
    fn file_fd(&self) -> Result<std::os::fd::RawFd, Error> {
        match self.file {
            Some(file) => file.fd(),
            None => Err(Error::Unsupported("not backed by the memory file".into())),
        }
    }

    /// Whether a failed [`hide`](Self::hide) wiped the pages.
    pub(crate) fn hide_failed(&self) -> bool {
        self.hide_failed.load(Ordering::Acquire)
    }

    /// Whether the data pages are locked in RAM (`memfd_secret` pages always are).
    pub(crate) fn is_locked(&self) -> bool {
        self.counted > 0 || self.backing == BackingKind::MemfdSecret
    }

    /// Whether reads can go through `pread` on the memory file.
    pub(crate) fn can_copy(&self) -> bool {
        self.backing == BackingKind::Memfd
    }

    /// Change the data pages' protection, for the region's owner alone: the
    /// exclusive borrow proves that no view into the pages exists (a view
    /// borrows the region) and that no access gate manages them.
    pub(crate) fn protect(&mut self, prot: Prot) -> Result<(), Error> {
        self.set_prot(prot)
    }

    /// Change the data pages' protection. Private: every caller here holds a
    /// proof that nothing reads the pages meanwhile (the gate's [`Turn`] or
    /// [`Drained`], or an exclusive borrow).
    fn set_prot(&self, prot: Prot) -> Result<(), Error> {
        // SAFETY: the data pages are ours; every caller (see above) ensures
        // no reference into them outlives a change to `None`.
        unsafe { sys::mprotect(self.data, self.data_len, prot) }.map_err(|source| {
            Error::ProtectFailed {
                to: match prot {
                    Prot::None => "none",
                    Prot::Read => "read",
                    Prot::ReadWrite => "read-write",
                },
                source,
            }
        })
    }

    /// The bytes `[off, off + len)` of the data pages while a window is open.
    pub(crate) fn view<'a, W: Window>(
        &'a self,
        off: usize,
        len: usize,
        proof: &'a Entered<'a, W>,
    ) -> &'a [u8] {
        assert!(proof.through_window(), "view needs an open window");
        assert!(off.checked_add(len).is_some_and(|end| end <= self.data_len));
        // SAFETY: `off + len <= data_len` (asserted above): inside the data pages.
        let start = unsafe { self.data.add(off) };
        // SAFETY: `proof` is a live window entry of this region's gate, so the
        // pages are readable and stay so until `proof` is dropped, which the
        // lifetime ties the slice to; the range is inside the data pages.
        unsafe { std::slice::from_raw_parts(start, len) }
    }

    /// Tag the data pages with protection key `key`: they become read-write
    /// in the page tables and closed by the key to every thread that never opened it. From then
    /// on [`copy_out`](Self::copy_out), [`write_in`](Self::write_in) and the
    /// wipe are user-space copies with the key open in this thread only.
    pub(crate) fn tag_with_key(&mut self, key: Pkey) -> Result<(), Error> {
        // SAFETY: the data pages are ours and PROT_NONE so far: no reference
        // into them exists.
        unsafe { pkey::protect_with(self.data, self.data_len, key) }.map_err(|source| {
            Error::ProtectFailed {
                to: "read-write with a protection key",
                source,
            }
        })?;
        self.key = Some(key);
        Ok(())
    }

    /// The protection key of the data pages, if they have one.
    pub(crate) fn key(&self) -> Option<Pkey> {
        self.key
    }

    /// For keyed pages: the key and the address of `[off, off + len)`;
    /// panics unless the range lies inside the data pages. `None` for pages
    /// without a key.
    fn keyed(&self, off: usize, len: usize) -> Option<(Pkey, *mut u8)> {
        let key = self.key?;
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
        let fd = self.file_fd()?;
        sys::pread_exact(fd, buf, self.file_off + off as u64).map_err(Error::AccessFailed)
    }

    /// Write `bytes` at `off` of the data pages: through the memory file, or
    /// for keyed pages by a user-space copy with the key open.
    pub(crate) fn write_in(&self, off: usize, bytes: &[u8]) -> Result<(), Error> {
        if let Some((key, at)) = self.keyed(off, bytes.len()) {
            // SAFETY: as in `copy_out`; the caller owns this range alone.
            unsafe { pkey::copy_in(key, at, bytes) };
            return Ok(());
        }
        let fd = self.file_fd()?;
        sys::pwrite_all(fd, bytes, self.file_off + off as u64).map_err(Error::AccessFailed)
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
            if let Ok(fd) = self.file_fd() {
                let _ = sys::punch_hole(fd, self.file_off + off as u64, len as u64);
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

    /// Read `[off, off + buf.len())` while no access is in flight (at close,
    /// which `_drained` proves): through the memory file, or by opening and
    /// closing the pages.
    pub(crate) fn read_at_rest(
        &self,
        off: usize,
        buf: &mut [u8],
        _drained: &Drained,
    ) -> Result<(), Error> {
        assert!(off
            .checked_add(buf.len())
            .is_some_and(|end| end <= self.data_len));
        if self.can_copy() {
            return self.copy_out(off, buf);
        }
        self.set_prot(Prot::Read)?;
        // SAFETY: `off + buf.len() <= data_len` (asserted above).
        let start = unsafe { self.data.add(off) };
        // SAFETY: just made readable; `_drained` proves no access is in
        // flight, so nothing else changes the protection before `hide`.
        buf.copy_from_slice(unsafe { std::slice::from_raw_parts(start, buf.len()) });
        self.hide()
    }

    /// Hide the pages again after a window; if that fails, wipe them (they
    /// are still readable, so can be made writable) and report the failure.
    /// Private: callers hold the gate's [`Turn`] or [`Drained`] (no reader
    /// inside). Logs nothing (it runs under the gate's mutex): the window
    /// reports a failure once the mutex is released.
    fn hide(&self) -> Result<(), Error> {
        let r = self.set_prot(Prot::None);
        if r.is_err() {
            self.hide_failed.store(true, Ordering::Release);
            if self.set_prot(Prot::ReadWrite).is_ok() {
                // SAFETY: the pages were just made writable; no reader is
                // inside (see above).
                unsafe { sys::wipe(self.data, self.data_len) };
            }
        }
        r
    }

    /// Wipe, unlock and unmap; `_drained` proves that no access is in flight
    /// or can start. Runs once; later calls do nothing. In a fork child the
    /// memory is not ours (not mapped, or zeroed): nothing to wipe.
    pub(crate) fn release(&self, _drained: &Drained) -> Result<(), Error> {
        self.release_once()
    }

    /// [`release`](Self::release) for callers that prove quiescence otherwise
    /// (`Drop`'s exclusive borrow).
    fn release_once(&self) -> Result<(), Error> {
        if self.released.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Out of the purge registry before anything is unmapped.
        if let Some(t) = &self.ticket {
            super::registry::unregister(t);
        }
        let mut wiped = Ok(());
        if self.fork_gen != fork::generation() {
            if self.backing == BackingKind::Anonymous && !self.base.is_null() {
                // SAFETY: private mappings are copied into the child (zeroed by
                // WIPEONFORK); this one is ours to unmap.
                let _ = unsafe { sys::munmap(self.base, self.total) };
            }
            return Ok(());
        }
        if !self.base.is_null() {
            wiped = match self.backing {
                BackingKind::Memfd if self.file.is_some() => self.wipe_in(0, self.data_len),
                _ => self.set_prot(Prot::ReadWrite).map(|()| {
                    // SAFETY: the pages were just made writable, and the
                    // caller's proof (see `release`) says no access is in flight.
                    unsafe { sys::wipe(self.data, self.data_len) }
                }),
            };
            #[cfg(feature = "test-hooks")]
            super::observe::wiped(|| self.snapshot());
            // munmap also unlocks, so no separate munlock call is made.
            // SAFETY: the whole mapping is ours and no reference into it remains.
            if let Err(e) = unsafe { sys::munmap(self.base, self.total) } {
                return Err(self.unmap_refused(e, wiped));
            }
        }
        // Also when mapping the range failed: nothing was written to it.
        if let Some(file) = self.file {
            file.free(self.file_off, self.data_len as u64);
        }
        if self.counted > 0 {
            budget::release(self.counted);
        }
        // A mapping released earlier may be unmappable now.
        super::stranded::retry();
        wiped
    }

    /// The kernel refused to unmap the (wiped) pages: they stay mapped and
    /// locked, so they stay counted and their file range is not given back
    /// for reuse; hide them again and keep them for a later retry.
    fn unmap_refused(&self, e: std::io::Error, wiped: Result<(), Error>) -> Error {
        if self.backing != BackingKind::Memfd {
            // The wipe made them writable; the memory file's are PROT_NONE.
            let _ = self.set_prot(Prot::None);
        }
        if let Err(w) = wiped {
            crate::shield::shield(
                || tracing::error!(error = %w, "securememory: wiping a closed secret failed"),
            );
        }
        super::stranded::keep(super::stranded::Stranded {
            base: self.base,
            total: self.total,
            counted: self.counted,
            file: self
                .file
                .map(|file| (file, self.file_off, self.data_len as u64)),
        });
        let err = crate::limits::unmap_error(self.total, e);
        crate::shield::shield(
            || tracing::error!(error = %err, "securememory: the kernel refused to unmap a closed secret"),
        );
        err
    }

    /// Read the data pages now (test hook; opens them if needed).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.data_len];
        if self.can_copy() {
            let _ = self.copy_out(0, &mut out);
        } else if self.set_prot(Prot::Read).is_ok() {
            // SAFETY: just made readable; test-only, single-threaded use.
            out.copy_from_slice(unsafe { std::slice::from_raw_parts(self.data, self.data_len) });
        }
        out
    }

    /// Flip one byte of the data pages (test hook to damage a canary).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn poke(&self, off: usize, xor: u8) -> Result<(), Error> {
        if self.can_copy() {
            let mut b = [0u8];
            self.copy_out(off, &mut b)?;
            self.write_in(off, &[b[0] ^ xor])
        } else {
            self.set_prot(Prot::ReadWrite)?;
            // SAFETY: test-only; the caller passes an offset inside the data pages.
            let at = unsafe { self.data.add(off) };
            // SAFETY: just made writable; test-only, no access in flight.
            unsafe { *at ^= xor };
            self.set_prot(Prot::None)
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // The exclusive borrow: no view, no access, no gate left.
        let _ = self.release_once();
    }
}

/// A region seen as an access window: open = readable, close = hidden. Only
/// the gate can open or close it (each takes the gate's [`Turn`]).
pub(crate) struct RegionWindow<'a>(&'a Region);

impl<'a> RegionWindow<'a> {
    pub(crate) fn new(region: &'a Region) -> Self {
        RegionWindow(region)
    }
}

impl Window for RegionWindow<'_> {
    fn open(&self, _turn: &Turn) -> Result<(), Error> {
        self.0.set_prot(Prot::Read)
    }
    fn close(&self, _turn: &Turn) -> Result<(), Error> {
        self.0.hide()
    }
    fn changed(&self, result: &Result<(), Error>) {
        // Counted whether or not it succeeded, as before: a change was tried.
        metrics::protection_changed();
        if result.is_err() && self.0.hide_failed() {
            crate::shield::shield(|| {
                tracing::error!(
                    "securememory: could not make a secret unreadable again; it was wiped and closed"
                )
            });
        }
    }
}
