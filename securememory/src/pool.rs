//! The pool: small secrets packed into shared locked pages.
//!
//! Secrets of up to [`MAX_SLOT`] bytes go into slots of the next power-of-two
//! size class. Slots live in chunks: one region of [`CHUNK_PAGES`] data pages
//! (one page when that does not fit the locked-memory budget) between two
//! guard pages, on the memfd backend (locked, do-not-dump,
//! do-not-fork, `PROT_NONE` for its whole life). A slot is written and
//! wiped with `pwrite` and read with `pread` on the memory file, so the
//! chunk's pages never become readable: reading one secret never exposes its
//! page-mates, and no access changes a page table.
//!
//! Creating a secret in a free slot makes no mapping, locking or protection
//! system call: one `pwrite` places the bytes. Closing makes one `pwrite`
//! (the wipe). A chunk that becomes empty is returned to the operating
//! system unless it is the only empty chunk of its class (hysteresis, so a
//! create/close loop does not map and unmap a chunk each time).
//!
//! A pool with [`PoolProtection::ProtectionKey`](crate::PoolProtection)
//! keeps separate chunks tagged with a memory protection key instead
//! (`mem::pkey`): read-write in the page tables, closed to every thread that never opened the key, and
//! opened in the calling thread only for the copy into, out of, or over a
//! slot. Creating, reading and closing a secret in a free slot then makes no
//! system call at all.

use std::sync::{Arc, Mutex};

use crate::access::Drained;
use crate::error::{Error, Result};
use crate::mem::memfile::GENERATIONS;
use crate::mem::pkey::Pkey;
use crate::mem::region::{Backing, Region, RegionSpec};
use crate::mem::release_once::ReleaseOnce;
use crate::mem::{scratch, sys};
use crate::metrics;
use crate::options::LockPolicy;
use crate::source::Source;

/// The largest secret the pool holds; larger ones get pages of their own.
pub const MAX_SLOT: usize = 1024;
/// The smallest slot.
const MIN_SLOT: usize = 16;
/// Data pages per chunk.
pub(crate) const CHUNK_PAGES: usize = 16;
/// Data pages of a chunk made when a full-size one does not fit in the
/// locked-memory budget (a 64 KiB container limit, say).
pub(crate) const SMALL_CHUNK_PAGES: usize = 1;
/// Size classes: 16, 32, ..., MAX_SLOT.
const CLASSES: usize = (MAX_SLOT / MIN_SLOT).trailing_zeros() as usize + 1;

struct Chunk {
    region: Region,
    slot_size: usize,
    pages: usize,
}

struct Entry {
    chunk: Arc<Chunk>,
    free: Vec<u32>,
    slots: u32,
}

struct Class {
    /// Chunks by id; `None` for ids whose chunk was returned.
    chunks: Vec<Option<Entry>>,
    /// A chunk id likely to have a free slot.
    hint: usize,
}

/// The size classes of the two pools, per fork generation: `[g][0]` holds
/// `PROT_NONE` chunks, `[g][1]` chunks tagged with the protection key. A
/// secret never shares a page with secrets of the other kind. A fork child
/// starts on tables of its own: its parent's chunks are not mapped in it
/// (`MADV_DONTFORK`), and a parent thread may have held a class lock at the
/// fork.
type Classes = [Mutex<Class>; CLASSES];
static CLASSES_STATE: [[Classes; 2]; GENERATIONS] = [const {
    [const {
        [const {
            Mutex::new(Class {
                chunks: Vec::new(),
                hint: 0,
            })
        }; CLASSES]
    }; 2]
}; GENERATIONS];

/// The class table of this fork generation for chunks with key `key` (or none).
fn classes(key: Option<Pkey>) -> Result<&'static Classes> {
    let generation = crate::mem::fork::generation() as usize;
    let tables = CLASSES_STATE.get(generation).ok_or_else(|| {
        Error::Unsupported(format!(
            "pooled layout: fork chain deeper than {GENERATIONS} processes"
        ))
    })?;
    Ok(&tables[usize::from(key.is_some())])
}

fn class_of(len: usize) -> usize {
    let size = len.max(MIN_SLOT).next_power_of_two();
    (size / MIN_SLOT).trailing_zeros() as usize
}

/// The slot a secret of `len` bytes takes, or `None` if it is too large for the pool.
pub(crate) fn slot_size(len: usize) -> Option<usize> {
    (len <= MAX_SLOT).then(|| MIN_SLOT << class_of(len))
}

/// One secret's slot. Releasing it wipes it and gives it back, once: later
/// releases do nothing, and dropping a slot not yet released releases it (a
/// panic between taking a slot and wrapping it in a secret leaks nothing).
pub(crate) struct Slot {
    chunk: Arc<Chunk>,
    class: usize,
    id: usize,
    index: u32,
    released: ReleaseOnce,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl Slot {
    fn offset(&self) -> usize {
        self.index as usize * self.chunk.slot_size
    }

    /// Kernel copy of `[pos, pos + buf.len())` of the slot into `buf`.
    #[inline]
    pub(crate) fn copy_out(&self, pos: usize, buf: &mut [u8]) -> Result<()> {
        self.chunk.region.copy_out(self.offset() + pos, buf)
    }

    /// Wipe the slot (at once) and return it to its class. Only the first
    /// call does: a slot given back twice would be handed to two secrets.
    /// A chunk this leaves empty and returns is unmapped when its last
    /// `Slot` value is dropped (see [`release_closed`](Self::release_closed)).
    pub(crate) fn release(&self) -> Result<()> {
        self.release_with(None)
    }

    /// [`release`](Self::release) by a secret's `close`: a chunk this
    /// leaves empty and returns is wiped, unlocked and unmapped now, not
    /// when the closed secrets that held its slots are dropped.
    pub(crate) fn release_closed(&self, drained: &Drained) -> Result<()> {
        self.release_with(Some(drained))
    }

    fn release_with(&self, drained: Option<&Drained>) -> Result<()> {
        self.released.run(|| self.release_now(drained))
    }

    /// The release itself (`ReleaseOnce` makes it run once).
    fn release_now(&self, drained: Option<&Drained>) -> Result<()> {
        if crate::mem::fork::generation() != self.chunk_fork_gen() {
            // A fork child: the chunk is not mapped here and the class lock
            // may have been held by a parent thread at the fork. Touch nothing.
            return Ok(());
        }
        let wiped = self
            .chunk
            .region
            .wipe_in(self.offset(), self.chunk.slot_size);
        #[cfg(feature = "test-hooks")]
        crate::mem::observe::wiped(|| self.snapshot());
        give_back(
            self.chunk.region.key(),
            self.class,
            self.id,
            self.index,
            drained,
        );
        wiped
    }

    pub(crate) fn chunk_fork_gen(&self) -> u64 {
        self.chunk.region.fork_gen()
    }

    /// Address of the slot in its chunk (tests, bench check).
    pub(crate) fn addr(&self) -> usize {
        self.chunk.region.data_addr() + self.offset()
    }

    /// The slot's bytes now (test hook).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.chunk.slot_size];
        let _ = self.copy_out(0, &mut out);
        out
    }
}

/// Take a slot for a secret of `len` bytes and write its bytes from `src`,
/// in a chunk tagged with `key` (or a `PROT_NONE` one).
pub(crate) fn create(
    len: usize,
    src: &mut Source<'_>,
    lock: LockPolicy,
    key: Option<Pkey>,
) -> Result<Slot> {
    let class = class_of(len);
    let slot = take(class, lock, key)?;
    // A fork from user code (a metrics recorder, the caller's reader) on
    // this thread goes on here in the child too, where the chunk is not
    // mapped: never write into it there.
    let mine = || {
        if crate::mem::fork::generation() == slot.chunk_fork_gen() {
            Ok(())
        } else {
            Err(Error::Forked)
        }
    };
    let placed = match src {
        // The caller's bytes go straight into the slot.
        Source::Bytes(b) => mine().and_then(|()| slot.chunk.region.write_in(slot.offset(), b)),
        // Random or read bytes are staged in this thread's locked, wiped
        // scratch buffer, never in ordinary memory.
        _ => stage(len, src, lock, |buf| {
            mine()?;
            slot.chunk.region.write_in(slot.offset(), buf)
        }),
    };
    if let Err(e) = placed {
        // Wipe whatever part was written and give the slot back (also what
        // dropping it would do if placing had panicked).
        let _ = slot.release();
        return Err(e);
    }
    Ok(slot)
}

/// Fill `len` bytes of this thread's scratch from `src` and hand them to
/// `place`; the scratch is wiped after, on every path.
fn stage(
    len: usize,
    src: &mut Source<'_>,
    lock: LockPolicy,
    place: impl FnOnce(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = scratch::reserve(len, scratch::Placement::Any, lock)?;
    src.fill(&mut buf)?;
    place(&buf)
}

/// Take a free slot. No user code (the metrics recorder, a `tracing`
/// subscriber) runs while the class lock is held: it may create or close a
/// pooled secret itself. A new chunk is made with the lock released.
fn take(class: usize, lock: LockPolicy, key: Option<Pkey>) -> Result<Slot> {
    let classes = classes(key)?;
    let mut taken = pop_free(&mut lock_class(&classes[class]), lock);
    if taken.is_none() {
        let entry = match new_chunk(class, lock, key) {
            Ok(entry) => entry,
            // Another thread may have made a chunk meanwhile (the budget
            // then had no room for a second one): use its free slot.
            Err(e) => {
                let (id, index, chunk) =
                    pop_free(&mut lock_class(&classes[class]), lock).ok_or(e)?;
                return Ok(wrap(chunk, class, id, index));
            }
        };
        let (pages, slots) = (entry.chunk.pages, entry.slots);
        let mut c = lock_class(&classes[class]);
        let id = match c.chunks.iter().position(Option::is_none) {
            Some(id) => {
                c.chunks[id] = Some(entry);
                id
            }
            None => {
                c.chunks.push(Some(entry));
                c.chunks.len() - 1
            }
        };
        c.hint = id;
        let e = c.chunks[id].as_mut().expect("just inserted");
        let index = e.free.pop().expect("a new chunk has a free slot");
        taken = Some((id, index, Arc::clone(&e.chunk)));
        drop(c);
        metrics::pool_changed(pages as i64, 0, slots as i64);
    }
    let (id, index, chunk) = taken.expect("found or made");
    Ok(wrap(chunk, class, id, index))
}

/// The `Slot` for a slot just taken, made once the class lock is released
/// (its `Drop` takes the lock), and the report of it.
fn wrap(chunk: Arc<Chunk>, class: usize, id: usize, index: u32) -> Slot {
    let slot = Slot {
        chunk,
        class,
        id,
        index,
        released: ReleaseOnce::new(),
    };
    metrics::pool_changed(0, 1, 0);
    slot
}

fn lock_class(m: &Mutex<Class>) -> std::sync::MutexGuard<'_, Class> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A free slot of an existing chunk (id, index, chunk), if any.
fn pop_free(c: &mut Class, lock: LockPolicy) -> Option<(usize, u32, Arc<Chunk>)> {
    let n = c.chunks.len();
    let hint = c.hint;
    let id = (0..n)
        .map(|i| (hint + i) % n)
        // A secret that must be locked never goes into an unlocked chunk
        // (made for a `LockPolicy::AllowUnlocked` factory).
        .find(|&id| {
            c.chunks[id].as_ref().is_some_and(|e| {
                !e.free.is_empty()
                    && (lock == LockPolicy::AllowUnlocked || e.chunk.region.is_locked())
            })
        })?;
    c.hint = id;
    let e = c.chunks[id].as_mut().expect("chosen chunk exists");
    let index = e.free.pop().expect("chosen chunk has a free slot");
    Some((id, index, Arc::clone(&e.chunk)))
}

/// A new chunk for `class`, made without the class lock (making it counts
/// locked memory and reports it); the caller inserts it.
fn new_chunk(class: usize, lock: LockPolicy, key: Option<Pkey>) -> Result<Entry> {
    let page = sys::page_size();
    // A full chunk when it fits the locked-memory budget, else a small one
    // (asking first, so that a fallback is not counted as a refusal).
    let pages = if lock == LockPolicy::AllowUnlocked
        || crate::mem::budget::fits((CHUNK_PAGES * page) as u64)
    {
        CHUNK_PAGES
    } else {
        SMALL_CHUNK_PAGES
    };
    let spec = RegionSpec {
        len: pages * page,
        guard: true,
        backing: Backing::MemoryFile { key },
        lock,
    };
    // Tagged with `key`, if any, as it is made.
    let region = Region::create(spec, |_| Ok(()))?;
    let slot_size = MIN_SLOT << class;
    let slots = (region.data_len() / slot_size) as u32;
    Ok(Entry {
        chunk: Arc::new(Chunk {
            region,
            slot_size,
            pages,
        }),
        // Pop from the end: hand out low slots first.
        free: (0..slots).rev().collect(),
        slots,
    })
}

/// Runs only in the generation that made the chunk (see `Slot::release`).
/// Reports (and drops a returned chunk) after the class lock is released.
fn give_back(key: Option<Pkey>, class: usize, id: usize, index: u32, drained: Option<&Drained>) {
    let Ok(classes) = classes(key) else {
        return;
    };
    let mut c = lock_class(&classes[class]);
    let Some(e) = c.chunks[id].as_mut() else {
        return;
    };
    e.free.push(index);
    let mut returned = None;
    if e.free.len() as u32 == e.slots {
        // This chunk is empty. Keep it if it is the only empty one of its class.
        let other_empty =
            c.chunks.iter().enumerate().any(|(i, o)| {
                i != id && o.as_ref().is_some_and(|o| o.free.len() as u32 == o.slots)
            });
        if other_empty {
            returned = c.chunks[id].take();
        }
    }
    drop(c);
    metrics::pool_changed(0, -1, 0);
    if let Some(e) = returned {
        metrics::pool_changed(-(e.chunk.pages as i64), 0, -(e.slots as i64));
        if let Some(drained) = drained {
            // Out of the table and every slot free: each secret that held
            // one has run its release (its gate closed and drained), so no
            // access of this chunk can happen again. Closed secrets still
            // hold `Arc`s to it; without this it would stay mapped, locked
            // and counted until they are dropped.
            let _ = e.chunk.region.release(drained);
        }
        // Otherwise the region is unmapped when the last slot value holding
        // it is dropped (the one being released, right after this call).
        drop(e);
    }
}
