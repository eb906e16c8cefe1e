//! The per-thread scratch space the copy path reads a secret into.
//!
//! A thread's scratch is a small stack of regions, each [`SCRATCH_PAGES`]
//! data pages between guard pages, locked, do-not-dump and wipe-on-fork,
//! read-write while they exist. The first is made on the thread's first
//! copy-path access and kept for the thread's life; when a nested access
//! does not fit, another is added, and the extra ones are unmapped when the
//! outermost access ends.
//!
//! [`reserve`] hands out a [`ScratchBuf`]: a guard that derefs to the
//! reserved bytes and wipes them when dropped (on unwind too). Reservations
//! grow downward from the trailing guard page. A reservation with
//! [`Placement::FlushAgainstGuard`] (a guarded secret) ends flush against
//! that guard page, in a region of its own whenever the current one already
//! holds a copy, so reading one byte past such a copy faults. Others start a
//! cache line below the guard (or the reservation before), which keeps the
//! kernel's copy into them fast.
//!
//! No lock is held while the caller's code runs, and a thread never borrows
//! another thread's memory: when no scratch can be had, `reserve` returns the
//! real error (the budget's refusal, the kernel's mlock error, a failed map),
//! and the next call tries again. With [`LockPolicy::AllowUnlocked`] a region
//! that cannot be locked is made unlocked instead (counted and logged by the
//! region), for that access only: the thread keeps only a locked region
//! between accesses. In a fork child the inherited regions (not locked there: `mlock`
//! is not inherited) are dropped without touching the budget, and new ones
//! are made. A thread-local destructor that reads a secret after this
//! thread's stack was destroyed gets a region of its own for that access.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use super::fork;
use super::region::{Backing, Region, RegionSpec};
use super::sys::{self, Prot};
use crate::error::{Error, Result};
use crate::options::LockPolicy;

/// Data pages per region. Secrets larger than this take the window path.
pub(crate) const SCRATCH_PAGES: usize = 2;

/// Regions one thread may hold at once. Accesses nest at most 32 deep
/// (`secret::MAX_NESTING`), and a pool creation may stage inside the deepest.
const MAX_REGIONS: usize = 34;

/// Reservations start 16-byte aligned below the one before.
const ALIGN: usize = 16;

/// Space left above a reservation that need not be flush against the guard
/// page, and the alignment of its start (one cache line).
const GAP: usize = 64;

/// Where a reservation must sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Below the previous reservation, a cache line apart (flush against
    /// the trailing guard page only when a copy near the region's size
    /// needs the room).
    Any,
    /// Always flush against the trailing guard page (a guarded secret).
    FlushAgainstGuard,
}

/// One region of a thread's stack.
struct Slab {
    region: Region,
    /// Offset in the data pages of the lowest reserved byte; `data_len`
    /// when nothing is reserved.
    top: usize,
}

impl Slab {
    fn is_empty(&self) -> bool {
        self.top == self.region.data_len()
    }

    /// Whether a reservation with `lock` may use this region at all.
    fn usable(&self, lock: LockPolicy, gen: u64) -> bool {
        self.region.fork_gen() == gen
            && (lock == LockPolicy::AllowUnlocked || self.region.is_locked())
    }

    /// The start of `len` bytes placed at the top, if they fit.
    fn place(&self, len: usize, at: Placement) -> Option<usize> {
        if at == Placement::FlushAgainstGuard {
            return if self.is_empty() {
                self.top.checked_sub(len)
            } else {
                None
            };
        }
        // A gap of a cache line above the copy, which starts on one: the
        // kernel's copy into a destination that ends flush against an
        // inaccessible page is slow (measured here: a 32-byte `pread` 300 ns
        // became 455 ns). Flush only when a large copy needs the room.
        match self.top.checked_sub(len + GAP) {
            Some(start) => Some(start & !(GAP - 1)),
            None if self.is_empty() => self.top.checked_sub(len),
            None => None,
        }
    }
}

/// This thread's regions and the stack of reservations in them.
struct Stack {
    slabs: RefCell<Vec<Slab>>,
    /// Index of the region holding the innermost live reservation.
    current: Cell<usize>,
    /// Live reservations.
    depth: Cell<usize>,
}

thread_local! {
    static STACK: Stack = const {
        Stack {
            slabs: RefCell::new(Vec::new()),
            current: Cell::new(0),
            depth: Cell::new(0),
        }
    };
}

/// A reserved, zero-filled slice of this thread's scratch space. Derefs to
/// the bytes; dropping it wipes them and gives the space back. Not `Send`:
/// it must be dropped on the thread that reserved it, before any
/// reservation made after it (the access path's nesting guarantees both).
pub(crate) struct ScratchBuf {
    ptr: *mut u8,
    len: usize,
    slab: usize,
    prev_top: usize,
    prev_current: usize,
    /// A region of this reservation's own, made when the thread's stack is
    /// already destroyed (an access from a thread-local destructor);
    /// unmapped, after the wipe, when the reservation is dropped.
    own: Option<Region>,
    _not_send: PhantomData<*mut u8>,
}

impl Deref for ScratchBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `[ptr, ptr + len)` lies in the data pages of one of this
        // thread's regions, read-write while it exists; the region stays
        // mapped until this reservation is dropped (regions are only removed
        // when unusable and empty, or when no reservation is live; `own` is
        // dropped with the reservation), and no other reservation overlaps it.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for ScratchBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for ScratchBuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: as in `deref`; no borrow of the bytes outlives `self`.
        unsafe { sys::wipe(self.ptr, self.len) };
        if let Some(own) = self.own.take() {
            // Not in the thread's stack: the region goes with the reservation.
            // (Its release reports through `shield`, which contains a
            // recorder's panic, so this may run while unwinding.)
            drop(own);
            return;
        }
        let _ = STACK.try_with(|s| {
            if let Some(slab) = s.slabs.borrow_mut().get_mut(self.slab) {
                slab.top = self.prev_top;
            }
            s.current.set(self.prev_current);
            let depth = s.depth.get().saturating_sub(1);
            s.depth.set(depth);
            if depth == 0 {
                s.trim();
            }
        });
    }
}

impl Stack {
    /// With no reservation live: unmap the extra regions, and the first
    /// too if it was inherited from a fork parent. Each region is dropped
    /// outside the borrow: its release calls metrics and tracing (user code
    /// that may come back in here; a panic of theirs is contained by
    /// `shield`, so none reaches this `Drop`, perhaps already unwinding).
    #[cold]
    fn trim(&self) {
        let gen = fork::generation();
        loop {
            let dropped = {
                let mut slabs = self.slabs.borrow_mut();
                // An unlocked first region (`AllowUnlocked`, lock refused) is
                // not kept: the next access tries to lock again, and if it
                // cannot, its unlocked region is counted and logged anew.
                let keep = match slabs.first() {
                    Some(first) if first.region.fork_gen() == gen && first.region.is_locked() => 1,
                    _ => 0,
                };
                if slabs.len() <= keep {
                    return;
                }
                slabs.pop()
            };
            drop(dropped);
        }
    }
}

/// A read-write scratch region of [`SCRATCH_PAGES`] data pages between
/// guard pages: locked (or, under `AllowUnlocked`, unlocked if locking is
/// refused), do-not-dump, wipe-on-fork.
fn new_region(lock: LockPolicy) -> Result<Region> {
    let spec = RegionSpec {
        len: capacity(),
        guard: true,
        backing: Backing::Anonymous,
        lock,
    };
    let mut region = Region::create(spec, |_| Ok(()))?;
    region.protect(Prot::ReadWrite)?;
    Ok(region)
}

/// What to do at one region index.
enum Step {
    /// Reserve at this start offset in this region.
    Take(usize),
    /// Look at the next region.
    Next,
    /// Make a region here (there is none, or it is empty and unusable).
    Make,
}

/// Reserve `len` zeroed bytes (at most [`capacity`]) of this thread's
/// scratch space, placed as `at` asks, in locked memory unless `lock`
/// allows otherwise.
///
/// # Errors
/// The error of making a region when none has room (`Error::LockFailed`
/// with the budget's or the kernel's reason, `MapFailed`, ...);
/// `NestingTooDeep` past [`MAX_REGIONS`] regions; `InvalidSize` for a
/// request larger than a region.
#[inline]
pub(crate) fn reserve(len: usize, at: Placement, lock: LockPolicy) -> Result<ScratchBuf> {
    if len > capacity() {
        return Err(Error::InvalidSize {
            size: len,
            reason: "larger than the scratch buffer",
        });
    }
    STACK
        .try_with(|s| reserve_in(s, len, at, lock))
        .unwrap_or_else(|_| reserve_alone(len, lock))
}

/// The thread's stack is gone (a thread-local destructor that ran after
/// it reads a secret): a region for this reservation alone, the bytes flush
/// against its trailing guard, unmapped when the reservation is dropped.
#[cold]
fn reserve_alone(len: usize, lock: LockPolicy) -> Result<ScratchBuf> {
    let region = new_region(lock)?;
    let start = region.data_len() - len;
    // SAFETY: `start + len == data_len`, inside the data pages.
    let ptr = unsafe { region.data_ptr().add(start) };
    Ok(ScratchBuf {
        ptr,
        len,
        slab: usize::MAX,
        prev_top: 0,
        prev_current: 0,
        own: Some(region),
        _not_send: PhantomData,
    })
}

fn reserve_in(s: &Stack, len: usize, at: Placement, lock: LockPolicy) -> Result<ScratchBuf> {
    let gen = fork::generation();
    let depth = s.depth.get();
    let mut i = if depth == 0 { 0 } else { s.current.get() };
    loop {
        if i >= MAX_REGIONS {
            return Err(Error::NestingTooDeep(MAX_REGIONS));
        }
        let step = {
            let slabs = s.slabs.borrow();
            match slabs.get(i) {
                None => {
                    // Only code that came back in while a region was made
                    // can have shortened the stack below `i`.
                    i = i.min(slabs.len());
                    Step::Make
                }
                Some(slab) if !slab.usable(lock, gen) => {
                    if slab.is_empty() {
                        Step::Make
                    } else {
                        Step::Next
                    }
                }
                Some(slab) => match slab.place(len, at) {
                    Some(start) => Step::Take(start),
                    None => Step::Next,
                },
            }
        };
        match step {
            Step::Take(start) => return Ok(take(s, i, start, len)),
            Step::Next => i += 1,
            Step::Make => make(s, i, lock, gen)?,
        }
    }
}

/// Record a reservation of `[start, start + len)` in region `i`.
#[inline]
fn take(s: &Stack, i: usize, start: usize, len: usize) -> ScratchBuf {
    let mut slabs = s.slabs.borrow_mut();
    let slab = &mut slabs[i];
    let prev_top = slab.top;
    // The next reservation ends below this one, aligned.
    slab.top = start & !(ALIGN - 1);
    // SAFETY: `start + len <= top <= data_len`, inside the data pages.
    let ptr = unsafe { slab.region.data_ptr().add(start) };
    let prev_current = s.current.replace(i);
    s.depth.set(s.depth.get() + 1);
    ScratchBuf {
        ptr,
        len,
        slab: i,
        prev_top,
        prev_current,
        own: None,
        _not_send: PhantomData,
    }
}

/// Put a new region at index `i` (after the last one, or in place of an
/// empty unusable one). The region is made, and the old one dropped, with
/// no borrow held: both call metrics and tracing.
#[cold]
fn make(s: &Stack, i: usize, lock: LockPolicy, gen: u64) -> Result<()> {
    // Under `AllowUnlocked` a refused lock leaves the region unlocked; the
    // region counts that (`secret.unlocked`) and logs a warning.
    let region = new_region(lock)?;
    let slab = Slab {
        top: region.data_len(),
        region,
    };
    let old = {
        let mut slabs = s.slabs.borrow_mut();
        if i < slabs.len() {
            // Re-check: code called while the region was made may have come
            // back in and changed the stack.
            let usable = slabs[i].usable(lock, gen);
            if usable || !slabs[i].is_empty() {
                Some(slab)
            } else {
                Some(std::mem::replace(&mut slabs[i], slab))
            }
        } else if i == slabs.len() {
            if slabs.capacity() == 0 {
                slabs.reserve_exact(4);
            }
            slabs.push(slab);
            None
        } else {
            Some(slab)
        }
    };
    drop(old);
    Ok(())
}

/// Capacity of one scratch region in bytes: the largest secret the copy
/// path reads without the window.
pub(crate) fn capacity() -> usize {
    SCRATCH_PAGES * sys::page_size()
}

/// The data pages of this thread's scratch regions, as (address, length),
/// outermost first (test hook).
#[cfg(feature = "test-hooks")]
pub(crate) fn regions() -> Vec<(usize, usize)> {
    STACK
        .try_with(|s| {
            s.slabs
                .borrow()
                .iter()
                .map(|slab| (slab.region.data_addr(), slab.region.data_len()))
                .collect()
        })
        .unwrap_or_default()
}
