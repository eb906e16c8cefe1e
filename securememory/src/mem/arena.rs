//! The ciphertext arena of sealed secrets (`Layout::Sealed`): ordinary,
//! unlocked memory that is left out of core dumps and zeroed in fork
//! children.
//!
//! ```text
//!   chunk (CHUNK_BYTES, private anonymous, read-write,
//!          MADV_DONTDUMP + MADV_WIPEONFORK, NOT locked: swap may see it)
//!   +-----------+-----------+-----------+-- ... --+-----------+
//!   | slot 0    | slot 1    | slot 2    |         | bump end  |
//!   | ct || tag | (free,    | ct || tag |         |           |
//!   |           |  zeroed)  |           |         |           |
//!   +-----------+-----------+-----------+-- ... --+-----------+
//! ```
//!
//! Slots come in power-of-two size classes from [`MIN_SLOT`] bytes up to
//! [`MAX_SLOT`]. Each class hands out slots from the chunk it is filling
//! (bump) and from the slots given back (wiped first). Chunks are kept for
//! the life of the process: a freed slot is reused, never unmapped, so the
//! arena's size is its high-water mark ([`mapped_bytes`]).
//!
//! Why not the Rust heap: a heap block lands in every core dump and is
//! copied into every fork child. Why not locked memory: the whole point of
//! sealing is to hold more secrets than the memlock limit allows; a
//! ciphertext is safe to swap.
//!
//! A fork child gets zeros in every chunk (`MADV_WIPEONFORK`) and starts
//! on tables of its own (per fork generation, as the pool does): a parent
//! thread may have held a class lock at the fork, and the parent's slots
//! are never handed out again in the child.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::memfile::GENERATIONS;
use super::sys::{self, Advice, Prot};
use crate::error::{Error, Result};

/// The smallest slot.
pub(crate) const MIN_SLOT: usize = 32;
/// The largest slot.
pub(crate) const MAX_SLOT: usize = 8192;
/// Size classes: 32, 64, ..., MAX_SLOT.
const CLASSES: usize = (MAX_SLOT / MIN_SLOT).trailing_zeros() as usize + 1;
/// Bytes of one chunk (a whole number of pages on every page size Linux uses
/// up to 1 MiB).
const CHUNK_BYTES: usize = 1 << 20;

/// One size class in one fork generation.
struct Class {
    /// Addresses of slots given back (wiped).
    free: Vec<usize>,
    /// The next never-used slot of the chunk being filled, and its end.
    bump: usize,
    end: usize,
}

static TABLES: [[Mutex<Class>; CLASSES]; GENERATIONS] = [const {
    [const {
        Mutex::new(Class {
            free: Vec::new(),
            bump: 0,
            end: 0,
        })
    }; CLASSES]
}; GENERATIONS];

/// Bytes of arena chunks mapped in this process (stats).
static MAPPED: AtomicU64 = AtomicU64::new(0);
/// The fork generation `MAPPED` counts for: a child starts at zero.
static MAPPED_GEN: AtomicU64 = AtomicU64::new(0);

/// Bytes of arena chunks this process has mapped (a fork child's count
/// starts at zero: the parent's chunks are zeros there and never used).
pub(crate) fn mapped_bytes() -> u64 {
    if MAPPED_GEN.load(Ordering::Relaxed) != super::fork::generation() {
        return 0;
    }
    MAPPED.load(Ordering::Relaxed)
}

fn class_of(len: usize) -> usize {
    let size = len.max(MIN_SLOT).next_power_of_two();
    (size / MIN_SLOT).trailing_zeros() as usize
}

/// The slot size that holds `len` bytes, or `None` past [`MAX_SLOT`].
pub(crate) fn slot_size(len: usize) -> Option<usize> {
    (len <= MAX_SLOT).then(|| MIN_SLOT << class_of(len))
}

/// One slot of the arena, owned by one sealed secret. Written once (at
/// creation, before anyone else can see it), read by any number of
/// threads, wiped and given back by [`ArenaSlot::release`] (or when
/// dropped) once no access is in flight.
pub(crate) struct ArenaSlot {
    addr: usize,
    len: usize,
    class: usize,
    fork_gen: u64,
    released: AtomicBool,
}

/// Take a slot of at least `len` bytes (at most [`MAX_SLOT`]).
///
/// # Errors
/// `InvalidSize` past [`MAX_SLOT`]; the mapping's error when a new chunk
/// cannot be had (`MapFailed`, `LimitReached`), or `AdviseFailed` when the
/// kernel refuses to leave it out of core dumps or fork children.
pub(crate) fn take(len: usize) -> Result<ArenaSlot> {
    let Some(size) = slot_size(len) else {
        return Err(Error::InvalidSize {
            size: len,
            reason: "larger than the sealed arena's largest slot",
        });
    };
    let class = class_of(len);
    let fork_gen = super::fork::generation();
    let table = TABLES.get(fork_gen as usize).ok_or_else(|| {
        Error::Unsupported(format!(
            "sealed layout: fork chain deeper than {GENERATIONS} processes"
        ))
    })?;
    let mut c = table[class].lock().unwrap_or_else(|p| p.into_inner());
    let addr = if let Some(addr) = c.free.pop() {
        addr
    } else {
        if c.bump + size > c.end {
            // No user code runs here (no metrics, no tracing): the class
            // lock may be held while the chunk is mapped.
            let base = new_chunk()?;
            c.bump = base;
            c.end = base + CHUNK_BYTES;
            if MAPPED_GEN.swap(fork_gen, Ordering::Relaxed) != fork_gen {
                MAPPED.store(0, Ordering::Relaxed);
            }
            MAPPED.fetch_add(CHUNK_BYTES as u64, Ordering::Relaxed);
        }
        let addr = c.bump;
        c.bump += size;
        addr
    };
    Ok(ArenaSlot {
        addr,
        len: size,
        class,
        fork_gen,
        released: AtomicBool::new(false),
    })
}

/// Map a chunk: read-write, out of core dumps, zeroed in fork children.
fn new_chunk() -> Result<usize> {
    let p = sys::mmap_anonymous(CHUNK_BYTES, Prot::ReadWrite)
        .map_err(|source| super::limits::map_error(CHUNK_BYTES, source))?;
    for (advice, name) in [
        (Advice::DontDump, "MADV_DONTDUMP"),
        (Advice::WipeOnFork, "MADV_WIPEONFORK"),
    ] {
        // SAFETY: `p` is the mapping just made, owned here.
        if let Err(source) = unsafe { sys::madvise(p, CHUNK_BYTES, advice) } {
            // SAFETY: the mapping just made; nothing points into it.
            let _ = unsafe { sys::munmap(p, CHUNK_BYTES) };
            return Err(Error::AdviseFailed {
                advice: name,
                source,
            });
        }
    }
    Ok(p as usize)
}

impl ArenaSlot {
    /// The fork generation the slot was taken in.
    pub(crate) fn fork_gen(&self) -> u64 {
        self.fork_gen
    }

    /// Address of the slot (tests, the at-rest scan).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    /// Write `bytes` at `off` of the slot. `&mut self`: only the owner,
    /// before the slot is shared.
    pub(crate) fn write_at(&mut self, off: usize, bytes: &[u8]) {
        assert!(
            off.checked_add(bytes.len())
                .is_some_and(|end| end <= self.len),
            "write past the arena slot"
        );
        let dst = (self.addr + off) as *mut u8;
        // SAFETY: inside the slot (checked), a chunk mapped read-write for
        // the process's life, owned by this value alone; `bytes` is a
        // different object (never arena memory).
        unsafe { super::copy::copy_raw(bytes.as_ptr(), dst, bytes.len()) }
    }

    /// Copy `[off, off + buf.len())` of the slot into `buf`. Concurrent
    /// readers are fine: the slot is written only before it is shared and
    /// wiped after every access has ended.
    #[inline]
    pub(crate) fn read_at(&self, off: usize, buf: &mut [u8]) {
        assert!(
            off.checked_add(buf.len())
                .is_some_and(|end| end <= self.len),
            "read past the arena slot"
        );
        let src = (self.addr + off) as *const u8;
        // SAFETY: inside the slot (checked), mapped read-write for the
        // process's life; no writer runs while readers may (see above), and
        // `buf` is not arena memory.
        unsafe { super::copy::copy_raw(src, buf.as_mut_ptr(), buf.len()) }
    }

    /// Wipe the slot and give it back, once: `true` for the call that did.
    /// In a fork child the slot is the parent's (zeros here): left alone,
    /// and never handed out again (`false`).
    pub(crate) fn release(&self) -> bool {
        if self.released.swap(true, Ordering::AcqRel) {
            return false;
        }
        if super::fork::generation() != self.fork_gen {
            return false;
        }
        // SAFETY: the slot is ours and no access is in flight (the owner's
        // gate is drained, or the owner is being dropped).
        unsafe { sys::wipe(self.addr as *mut u8, self.len) };
        if let Some(table) = TABLES.get(self.fork_gen as usize) {
            let mut c = table[self.class].lock().unwrap_or_else(|p| p.into_inner());
            c.free.push(self.addr);
        }
        true
    }

    /// Flip the bits of `xor` in byte `at` of the slot (test hook: tamper
    /// with a ciphertext while no access is in flight).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn poke(&self, at: usize, xor: u8) {
        assert!(at < self.len, "poke past the arena slot");
        let p = (self.addr + at) as *mut u8;
        // SAFETY: inside the slot, mapped read-write; test-only, with no
        // access in flight.
        let old = unsafe { p.read_volatile() };
        // SAFETY: as above.
        unsafe { p.write_volatile(old ^ xor) };
    }
}

impl Drop for ArenaSlot {
    fn drop(&mut self) {
        let _ = self.release();
    }
}
