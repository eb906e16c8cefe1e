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
//! Which memory backs the pages is a [`Backing`], asked for by the caller;
//! the region keeps what it got (with the data that goes with it) and each
//! backing's own file says how it maps, copies, zeroes and releases:
//! - `anonymous.rs`: a private anonymous mapping, `MADV_WIPEONFORK`.
//! - `memory_file.rs`: a range of the process-wide memory file, mapped
//!   shared, `MADV_DONTFORK`, read through `pread`, or for a pool chunk
//!   tagged with a protection key, through user-space copies.
//! - `secret_file.rs`: a `memfd_secret` file of its own, mapped shared,
//!   `MADV_DONTFORK`, locked by the kernel and out of its direct map.
//!
//! This file holds what every backing shares: the layout, the budget, the
//! fork checks, protection and windows, and the release that runs once.

use std::sync::atomic::{AtomicBool, Ordering};

use super::release_once::ReleaseOnce;

mod anonymous;
mod memory_file;
mod registered;
mod release;
mod secret_file;
mod store;
mod window;

#[cfg(feature = "test-hooks")]
pub(crate) use store::set_keep as keep_ready_pages;
pub(crate) use store::{drain as drain_ready, ready_pages};

use super::pkey::Pkey;
use super::sys::{self, Advice, Prot};
use crate::error::Error;
use crate::mem::budget;
use crate::mem::fork;
use crate::metrics;
use crate::options::LockPolicy;
use memory_file::FileRange;
pub(crate) use window::RegionWindow;

/// Which memory a new region is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backing {
    /// Private anonymous memory.
    Anonymous,
    /// A range of the process-wide memory file; with a key, the data pages
    /// are tagged with it once made (pool chunks).
    MemoryFile { key: Option<Pkey> },
    /// A `memfd_secret` file of the region's own.
    SecretFile,
}

/// The backing a region got, with what it holds of it: impossible mixes
/// (a key on anonymous memory, a memory-file region without its range)
/// cannot be built.
#[derive(Clone, Copy)]
enum Mapped {
    Anonymous,
    MemoryFile(FileRange),
    SecretFile,
}

/// What to build.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegionSpec {
    /// Usable bytes needed; rounded up to whole pages.
    pub len: usize,
    pub guard: bool,
    pub backing: Backing,
    pub lock: LockPolicy,
}

/// An owned, page-aligned mapping of secret memory. See the module docs.
pub(crate) struct Region {
    base: *mut u8,
    total: usize,
    data: *mut u8,
    data_len: usize,
    backing: Mapped,
    /// Bytes counted in the locked-memory budget.
    counted: u64,
    /// Fork generation at creation: in a fork child the region is not ours.
    fork_gen: u64,
    released: ReleaseOnce,
    /// Set when the pages could not be hidden after a window and were wiped.
    hide_failed: AtomicBool,
    /// The entry of the data pages in the purge registry, once mapped.
    ticket: Option<crate::mem::registry::Ticket>,
    /// Whether its release may park it in the store of ready pages (a
    /// secret's own page, made whole; see `store.rs`).
    reusable: bool,
    /// A ready page dropped unused: wiped when it was parked, so its
    /// release unmaps without wiping again.
    wiped_at_rest: bool,
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
    move |source| crate::mem::limits::map_error(bytes, source)
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
    /// so far is undone (wiped, unlocked, unmapped, uncounted). Memory-file
    /// pages asked for with a key are tagged with it last.
    pub(crate) fn create(
        spec: RegionSpec,
        fill: impl FnOnce(&mut [u8]) -> Result<(), Error>,
    ) -> Result<Region, Error> {
        let mut fill = Some(fill);
        loop {
            match Region::create_once(spec, &mut fill) {
                // The kernel refused to lock (the budget gave the ready pages
                // back already when it was the one to refuse): ready pages
                // are locked memory too; give them back and ask again.
                Err(Error::LockFailed { .. } | Error::LimitReached { .. })
                    if fill.is_some() && store::drain() > 0 => {}
                r => return r,
            }
        }
    }

    /// One attempt of [`create`](Self::create); `fill` is taken only once
    /// the pages are mapped and locked.
    fn create_once(
        spec: RegionSpec,
        fill: &mut Option<impl FnOnce(&mut [u8]) -> Result<(), Error>>,
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
        let wants_lock = spec.backing == Backing::SecretFile || spec.lock == LockPolicy::Require;
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

        let backing = match spec.backing {
            Backing::Anonymous => Mapped::Anonymous,
            Backing::MemoryFile { .. } => match FileRange::alloc(data_len) {
                Ok(range) => Mapped::MemoryFile(range),
                Err(e) => {
                    // Nothing mapped yet: only the count to give back.
                    if counted > 0 {
                        budget::release(counted);
                    }
                    return Err(e);
                }
            },
            Backing::SecretFile => Mapped::SecretFile,
        };
        let mut region = Region::empty(total, data_len, backing, counted, fork_gen);
        region.map(spec.guard, spec.lock)?;
        region.ticket = Some(region.register());
        // SAFETY: the whole range is the mapping owned by `region`.
        unsafe { sys::madvise(region.base, total, Advice::DontDump) }
            .map_err(advise_err("MADV_DONTDUMP"))?;
        if let Mapped::Anonymous = region.backing {
            anonymous::wipe_on_fork(&region)?;
        }

        {
            // SAFETY: the data pages are mapped read-write (see `map`), owned
            // by `region`, and no other reference to them exists yet.
            let bytes = unsafe { std::slice::from_raw_parts_mut(region.data, data_len) };
            let fill = fill.take().expect("filled once");
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
        if let Backing::MemoryFile { key: Some(key) } = spec.backing {
            // On failure the region is dropped: wiped, unlocked and unmapped.
            region.tag_with_key(key)?;
        }
        Ok(region)
    }

    /// A region value owning nothing mapped yet.
    fn empty(
        total: usize,
        data_len: usize,
        backing: Mapped,
        counted: u64,
        fork_gen: u64,
    ) -> Region {
        Region {
            base: std::ptr::null_mut(),
            total,
            data: std::ptr::null_mut(),
            data_len,
            backing,
            counted,
            fork_gen,
            released: ReleaseOnce::new(),
            hide_failed: AtomicBool::new(false),
            ticket: None,
            reusable: false,
            wiped_at_rest: false,
        }
    }

    /// [`create`](Self::create) for a secret's own pages: its release may
    /// park it in the store of ready pages (see [`ready`](Self::ready)).
    pub(crate) fn create_reusable(
        spec: RegionSpec,
        fill: impl FnOnce(&mut [u8]) -> Result<(), Error>,
    ) -> Result<Region, Error> {
        let mut region = Region::create(spec, fill)?;
        region.reusable = true;
        Ok(region)
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

    /// Map the pages (and guards) read-write for filling, each backing its
    /// own way; locked when the budget counted them. On failure, `release`
    /// (from `Drop`) gives back what was taken.
    fn map(&mut self, guard: bool, lock: LockPolicy) -> Result<(), Error> {
        if guard {
            self.base = sys::mmap_anonymous(self.total, Prot::None).map_err(map_err(self.total))?;
            // SAFETY: base + page lies inside the reservation just made.
            self.data = unsafe { self.base.add(sys::page_size()) };
        }
        match self.backing {
            Mapped::Anonymous => anonymous::map(self, guard, lock),
            Mapped::MemoryFile(range) => memory_file::map(self, range, guard, lock),
            Mapped::SecretFile => secret_file::map(self, guard),
        }
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

    /// Whether a failed [`hide`](Self::hide) wiped the pages.
    pub(crate) fn hide_failed(&self) -> bool {
        self.hide_failed.load(Ordering::Acquire)
    }

    /// Whether the data pages are locked in RAM (`memfd_secret` pages always are).
    pub(crate) fn is_locked(&self) -> bool {
        self.counted > 0 || matches!(self.backing, Mapped::SecretFile)
    }

    /// Whether reads can go through `pread` on the memory file.
    pub(crate) fn can_copy(&self) -> bool {
        matches!(self.backing, Mapped::MemoryFile(_))
    }
}
