//! The store of ready pages: one-page regions of a closed secret, kept
//! mapped so that the next secret of the same shape is one write into a
//! ready page instead of a new mapping, and a close is one wipe.
//!
//! A region enters the store (is parked) only when its release has wiped
//! it and it is exactly as a new one would be at rest: one data page,
//! locked and counted in the budget, do-not-dump, wipe-on-fork (private) or
//! do-not-fork (shared), `PROT_NONE`, made in this fork generation, still
//! in the purge registry and never wiped by a purge since it was registered
//! (a purge replaces anonymous and `memfd_secret` pages with plain ones).
//! It stays registered while parked, so the signal path's purge still sees
//! it, and it is unregistered before it is ever unmapped.
//!
//! Bounds and give-back:
//! - at most [`PER_KIND`] (64) pages per kind (backing, with or without
//!   guard pages), on [`SHARDS`] shelves of equal size: a thread parks on
//!   and takes from its own shelf first, so threads creating and closing
//!   at once mostly take different locks; past the bound a release unmaps
//!   as before;
//! - the pages stay counted in the memlock budget; a request the budget
//!   would refuse first empties the store ([`drain`], the budget's reclaim
//!   hook) and is asked again;
//! - one store per fork generation, as for the memory file: a fork child
//!   never takes a page of its parent's (nor touches a lock a parent's
//!   thread may have held at the fork).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{Mapped, Region};
use crate::error::Error;
use crate::mem::once::ForkSafeOnce;
use crate::mem::registry::{self, Ticket};
use crate::mem::sys::{self, Prot};
use crate::mem::{budget, fork};

/// Ready pages kept per kind; past it, released pages go back to the OS.
pub(crate) const PER_KIND: usize = 64;

/// Off only in tests of the mapping path itself (`test_hooks::keep_ready_pages`).
static KEEP: AtomicBool = AtomicBool::new(true);

/// Keep released pages ready (the default), or unmap every one (test hook).
#[cfg(feature = "test-hooks")]
pub(crate) fn set_keep(on: bool) {
    KEEP.store(on, Ordering::Relaxed);
    if !on {
        drain();
    }
}

/// Fork generations with a store (as many as have a memory file).
const GENERATIONS: usize = crate::mem::memfile::GENERATIONS;

/// Kinds: three backings, with or without guard pages.
const KINDS: usize = 6;

/// Shelves per kind, and the pages each holds.
const SHARDS: usize = 4;
const PER_SHELF: usize = PER_KIND / SHARDS;

/// A parked region: what it owns, without the once-only release state.
#[derive(Clone, Copy)]
struct Parked {
    base: *mut u8,
    total: usize,
    data: *mut u8,
    backing: Mapped,
    counted: u64,
    ticket: Ticket,
}

// SAFETY: a parked mapping is owned by the shelf alone, under its mutex;
// nothing reads or writes its pages until it is handed out again.
unsafe impl Send for Parked {}

struct Shelf {
    pages: [Option<Parked>; PER_SHELF],
    len: usize,
}

static SHELVES: [[[Mutex<Shelf>; SHARDS]; KINDS]; GENERATIONS] = [const {
    [const {
        [const {
            Mutex::new(Shelf {
                pages: [None; PER_SHELF],
                len: 0,
            })
        }; SHARDS]
    }; KINDS]
}; GENERATIONS];

fn kind(backing: Mapped, guard: bool) -> usize {
    let b = match backing {
        Mapped::Anonymous => 0,
        Mapped::MemoryFile(_) => 1,
        Mapped::SecretFile => 2,
    };
    b * 2 + usize::from(guard)
}

fn shelf(
    generation: u64,
    kind: usize,
    shard: usize,
) -> Option<std::sync::MutexGuard<'static, Shelf>> {
    let m = SHELVES
        .get(usize::try_from(generation).ok()?)?
        .get(kind)?
        .get(shard)?;
    Some(m.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The shelves of a kind in the order this thread tries them: its own,
/// then the others.
fn my_shards() -> impl Iterator<Item = usize> {
    let mine = crate::shard::this_thread(SHARDS);
    (0..SHARDS).map(move |i| (mine + i) % SHARDS)
}

/// Every (kind, shelf) of a generation's store.
fn every_shelf() -> impl Iterator<Item = (usize, usize)> {
    (0..KINDS).flat_map(|k| (0..SHARDS).map(move |shard| (k, shard)))
}

/// Register [`drain`] as the budget's reclaim hook, once, before the
/// first page is parked.
fn hook_budget() {
    static HOOKED: ForkSafeOnce<()> = ForkSafeOnce::new();
    HOOKED.get_or_init(|| budget::on_refusal(drain_any));
}

impl Region {
    /// Whether the region is a guarded one (the data pages between guards).
    fn guarded(&self) -> bool {
        self.total != self.data_len
    }

    /// Park the region, just wiped by its release (which then stops there),
    /// if it is as a new one would be at rest; `false` if it must be unmapped.
    pub(super) fn park(&self) -> bool {
        let Some(ticket) = self.ticket else {
            return false;
        };
        let keyed = matches!(self.backing, Mapped::MemoryFile(r) if r.key.is_some());
        if !self.reusable
            || !KEEP.load(Ordering::Relaxed)
            || keyed
            || self.counted == 0
            || self.hide_failed()
            || self.data_len != sys::page_size()
            || registry::purged(&ticket)
        {
            return false;
        }
        let generation = fork::generation();
        if generation != self.fork_gen {
            return false;
        }
        // The wipe made window-backed pages writable (and a test hook's
        // snapshot readable): back to PROT_NONE, as at rest.
        if !matches!(self.backing, Mapped::MemoryFile(_)) && self.set_prot(Prot::None).is_err() {
            return false;
        }
        hook_budget();
        let k = kind(self.backing, self.guarded());
        for shard in my_shards() {
            let Some(mut s) = shelf(generation, k, shard) else {
                return false;
            };
            if s.len == PER_SHELF {
                continue;
            }
            let at = s.len;
            s.pages[at] = Some(Parked {
                base: self.base,
                total: self.total,
                data: self.data,
                backing: self.backing,
                counted: self.counted,
                ticket,
            });
            s.len += 1;
            return true;
        }
        false
    }

    /// A ready region for `spec` from the store, if `spec` asks for one
    /// data page and the store has one of its kind: wiped, locked, do-not-dump,
    /// fork-advised and `PROT_NONE`, as [`Region::create`] makes them. Write
    /// into it with [`fill_ready`](Self::fill_ready) or
    /// [`write_ready`](Self::write_ready), each of which refuses a fork child.
    pub(crate) fn ready(spec: &super::RegionSpec) -> Option<Region> {
        if super::round_to_pages(spec.len) != Some(sys::page_size()) {
            return None;
        }
        Self::take_ready(spec.backing, spec.guard)
    }

    /// A ready one-page region with `backing`, with guard pages or not,
    /// from this generation's store: wiped, locked, `PROT_NONE`. `None` if
    /// the store has none (or keeps none of this kind: keyed pages).
    fn take_ready(backing: super::Backing, guard: bool) -> Option<Region> {
        let b = match backing {
            super::Backing::Anonymous => 0,
            super::Backing::MemoryFile { key: None } => 1,
            super::Backing::MemoryFile { key: Some(_) } => return None,
            super::Backing::SecretFile => 2,
        };
        let generation = fork::generation();
        let k = b * 2 + usize::from(guard);
        loop {
            let p = my_shards().find_map(|shard| {
                let mut s = shelf(generation, k, shard)?;
                if s.len == 0 {
                    return None;
                }
                s.len -= 1;
                let at = s.len;
                s.pages[at].take()
            })?;
            let region = Region::from_parked(p, generation);
            if registry::purged(&p.ticket) {
                // Its pages may be plain ones now: give them back (drop).
                drop(region);
                continue;
            }
            return Some(region);
        }
    }

    fn from_parked(p: Parked, generation: u64) -> Region {
        let mut r = Region::empty(p.total, sys::page_size(), p.backing, p.counted, generation);
        r.base = p.base;
        r.data = p.data;
        r.ticket = Some(p.ticket);
        // Wiped when parked; dropped unused (a purged page, a drain), it
        // is unmapped without a second wipe.
        r.reusable = false;
        r.wiped_at_rest = true;
        r
    }

    /// Write a new secret into a ready page taken by [`take_ready`]:
    /// writable for `fill` alone, then `PROT_NONE` again. From then on the
    /// region is an ordinary one (wiped at release, parked again).
    pub(crate) fn fill_ready(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        // From here on the page may hold bytes: wiped at release, and parked
        // again if nothing went wrong (a failed fill loses no ready page).
        self.wiped_at_rest = false;
        // Not parked again while writable: a fill that panics (a reader
        // source) leaves the page to be wiped and unmapped, never kept open.
        self.reusable = false;
        self.set_prot(Prot::ReadWrite)?;
        let filled = {
            // SAFETY: the data page is ours, just made writable, and no other
            // reference to it exists (the region is not shared yet).
            let bytes = unsafe { std::slice::from_raw_parts_mut(self.data, self.data_len) };
            fill(bytes)
        };
        // A fork child (the fill is user code): the range is the parent's,
        // absent here or private; no protection change to what may now be
        // the child's own mapping there.
        self.refuse_fork_child()?;
        if let Err(e) = self.set_prot(Prot::None) {
            self.hide_failed
                .store(true, std::sync::atomic::Ordering::Release);
            return Err(e);
        }
        // `PROT_NONE` again: whole, parked at release even if the fill failed.
        self.reusable = true;
        filled
    }

    /// Write `bytes` at `off` of a ready memory-file page through the file
    /// (the mapping stays `PROT_NONE`: no page-table change). Refused in a
    /// fork child: a reader that forked (even by a raw system call, which
    /// leaves the parent's descriptor open until the library next looks)
    /// must not write its copy into the parent's file, over the parent's
    /// new secret.
    pub(crate) fn write_ready(&mut self, off: usize, bytes: &[u8]) -> Result<(), Error> {
        self.refuse_fork_child()?;
        self.wiped_at_rest = false;
        self.reusable = true;
        self.write_in(off, bytes)
    }

    /// Before a ready page is written or hidden again: a fork from user code
    /// (a reader source) leaves the child with pages that are not its own.
    /// The page was the parent's before the fork, so it stays the parent's:
    /// released in the child as a parent's region is (nothing unmapped that
    /// the child may have mapped there since, nothing given back to the
    /// child's budget).
    fn refuse_fork_child(&mut self) -> Result<(), Error> {
        if fork::generation() != self.fork_gen {
            self.reusable = false;
            return Err(Error::Forked);
        }
        Ok(())
    }
}

/// The budget's reclaim hook: [`drain`], and whether it gave any page back.
fn drain_any() -> bool {
    drain() > 0
}

/// Give every ready page of this generation back to the OS (unregister,
/// unmap, uncount); returns how many.
pub(crate) fn drain() -> u64 {
    let generation = fork::generation();
    let mut any = 0;
    for (k, shard) in every_shelf() {
        loop {
            let p = {
                let Some(mut s) = shelf(generation, k, shard) else {
                    return any;
                };
                if s.len == 0 {
                    break;
                }
                s.len -= 1;
                let at = s.len;
                s.pages[at].take()
            };
            if let Some(p) = p {
                drop(Region::from_parked(p, generation));
                any += 1;
            }
        }
    }
    any
}

/// Ready pages in this generation's store.
pub(crate) fn ready_pages() -> u64 {
    let generation = fork::generation();
    every_shelf()
        .filter_map(|(k, shard)| shelf(generation, k, shard).map(|s| s.len as u64))
        .sum()
}
