//! The lock-free registry of every live mapping that may hold secret bytes
//! (a secret's own pages, a pool chunk, a thread's scratch region), and the
//! purge epoch. Read by the signal-path purge ([`wipe_all`]), which may not
//! lock or allocate: registering may allocate (a new block, in ordinary
//! context), reading and wiping never does.
//!
//! Entries live in blocks of [`BLOCK`] that are linked once and never freed.
//! An entry's `state` word says who owns it:
//!
//! ```text
//!   FREE --register--> WRITING --publish--> LIVE --unregister--> FREE
//!                                            |  ^
//!                               a wipe_all   v  |  done
//!                                           BUSY
//! ```
//!
//! The owner unregisters before it unmaps, and waits while a wipe holds the
//! entry (BUSY), so a wipe never touches an address that was unmapped and
//! perhaps reused meanwhile. A wipe runs only in another thread's signal
//! handler or panic hook then (each wiping thread blocks every signal while
//! it wipes), so that wait always ends.
//!
//! Per process: an entry records the pid and fork generation it was made in,
//! and [`wipe_all`] skips entries of any other process (a fork child holds a
//! copy of its parent's registry; the parent's mappings are not its own).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Entries per block.
const BLOCK: usize = 128;

const FREE: u32 = 0;
const WRITING: u32 = 1;
const LIVE: u32 = 2;
const BUSY: u32 = 3;

/// How a mapping's bytes are destroyed by [`wipe_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wipe {
    /// Private anonymous or `memfd_secret` pages: replaced in place by fresh
    /// anonymous zero pages (`mmap` with `MAP_FIXED`).
    Replace,
    /// A range of a memory file: punched out (`fallocate`), so every
    /// mapping of it reads zeros.
    Punch,
}

struct Entry {
    state: AtomicU32,
    wipe: AtomicU32,
    addr: AtomicUsize,
    len: AtomicUsize,
    /// Descriptor and file offset (`Punch` only).
    fd: AtomicU32,
    off: AtomicU64,
    pid: AtomicU64,
    /// The fork generation plus one (the fork sentinel's armed value).
    armed: AtomicU64,
    /// Set when a [`wipe_all`] replaced or punched these pages: the store of
    /// ready pages never hands such a mapping out again.
    purged: AtomicBool,
}

struct Block {
    entries: [Entry; BLOCK],
    used: AtomicUsize,
    next: AtomicPtr<Block>,
}

static HEAD: AtomicPtr<Block> = AtomicPtr::new(std::ptr::null_mut());

/// Bumped by every purge (of either path): a secret made before the bump
/// is purged. Read on every access.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The purge epoch now.
#[inline]
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Start a purge: secrets made before it are purged from now on. Returns
/// the new epoch. Async-signal-safe (one atomic add).
pub(crate) fn bump_epoch() -> u64 {
    EPOCH.fetch_add(1, Ordering::AcqRel).wrapping_add(1)
}

/// A registered mapping; [`unregister`] it before unmapping it. Copied only
/// when the mapping changes owner (a region parked in the store of ready
/// pages and handed out again): one owner unregisters.
#[derive(Clone, Copy)]
pub(crate) struct Ticket(&'static Entry);

fn blocks() -> impl Iterator<Item = &'static Block> {
    let mut p = HEAD.load(Ordering::Acquire);
    std::iter::from_fn(move || {
        // SAFETY: blocks are leaked boxes, published with Release and never
        // freed, so a non-null pointer read with Acquire is a live block.
        let b = unsafe { p.as_ref() }?;
        p = b.next.load(Ordering::Acquire);
        Some(b)
    })
}

fn new_block() -> &'static Block {
    let b: &'static Block = Box::leak(Box::new(Block {
        entries: [const {
            Entry {
                state: AtomicU32::new(FREE),
                wipe: AtomicU32::new(0),
                addr: AtomicUsize::new(0),
                len: AtomicUsize::new(0),
                fd: AtomicU32::new(0),
                off: AtomicU64::new(0),
                pid: AtomicU64::new(0),
                armed: AtomicU64::new(0),
                purged: AtomicBool::new(false),
            }
        }; BLOCK],
        used: AtomicUsize::new(0),
        next: AtomicPtr::new(std::ptr::null_mut()),
    }));
    let mine = b as *const Block as *mut Block;
    let mut head = HEAD.load(Ordering::Acquire);
    loop {
        b.next.store(head, Ordering::Relaxed);
        match HEAD.compare_exchange_weak(head, mine, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return b,
            Err(now) => head = now,
        }
    }
}

fn claim() -> &'static Entry {
    loop {
        for b in blocks() {
            if b.used.load(Ordering::Relaxed) >= BLOCK {
                continue;
            }
            for e in &b.entries {
                if e.state.load(Ordering::Relaxed) == FREE
                    && e.state
                        .compare_exchange(FREE, WRITING, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    b.used.fetch_add(1, Ordering::Relaxed);
                    return e;
                }
            }
        }
        new_block();
    }
}

fn block_of(e: &'static Entry) -> Option<&'static Block> {
    let at = e as *const Entry as usize;
    blocks().find(|b| {
        let start = b.entries.as_ptr() as usize;
        at >= start && at < start + BLOCK * std::mem::size_of::<Entry>()
    })
}

/// Register `[addr, addr + len)`, wiped as `wipe` says (`fd` and `off` for
/// `Punch`), made in fork generation `generation` of this process.
pub(crate) fn register(
    wipe: Wipe,
    addr: usize,
    len: usize,
    file: Option<(i32, u64)>,
    generation: u64,
) -> Ticket {
    let e = claim();
    e.wipe.store(wipe as u32, Ordering::Relaxed);
    e.addr.store(addr, Ordering::Relaxed);
    e.len.store(len, Ordering::Relaxed);
    let (fd, off) = file.unwrap_or((-1, 0));
    e.fd.store(fd as u32, Ordering::Relaxed);
    e.off.store(off, Ordering::Relaxed);
    e.pid.store(super::sys::getpid(), Ordering::Relaxed);
    e.armed.store(generation + 1, Ordering::Relaxed);
    e.purged.store(false, Ordering::Relaxed);
    e.state.store(LIVE, Ordering::Release);
    Ticket(e)
}

/// Whether a [`wipe_all`] wiped this mapping since it was registered (its
/// pages may have been replaced by plain anonymous ones), or is wiping it now.
pub(crate) fn purged(t: &Ticket) -> bool {
    // Acquire: pairs with the Release that ends the wipe's BUSY hold.
    t.0.state.load(Ordering::Acquire) != LIVE || t.0.purged.load(Ordering::Relaxed)
}

/// Take a mapping out of the registry, waiting while a purge on another
/// thread is wiping it. Call before unmapping it.
pub(crate) fn unregister(t: &Ticket) {
    let e = t.0;
    loop {
        match e
            .state
            .compare_exchange(LIVE, FREE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => break,
            // BUSY: another thread's purge is wiping it; it takes microseconds.
            Err(BUSY) => super::sys::yield_now(),
            Err(_) => break,
        }
    }
    if let Some(b) = block_of(e) {
        b.used.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The purge of the signal path: destroy the bytes of every mapping this
/// process registered, with system calls and atomic stores only (no lock,
/// no allocation, no user code): async-signal-safe. Bumps the epoch first,
/// so accesses that start or finish a copy from now on fail. Returns the
/// number of mappings wiped. The caller blocks signals while it runs (a
/// nested purge on this thread would wait for itself on a BUSY entry).
pub(crate) fn wipe_all() -> usize {
    bump_epoch();
    let me = super::sys::getpid();
    let armed = match super::sentinel::load() {
        // A fork child that has not noticed yet (word zeroed by the kernel,
        // or its child work interrupted): no mapping here is its own yet.
        Some(0) | Some(u64::MAX) => return 0,
        Some(w) => Some(w),
        None => None,
    };
    let mut wiped = 0;
    for b in blocks() {
        for e in &b.entries {
            loop {
                match e
                    .state
                    .compare_exchange(LIVE, BUSY, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        if e.pid.load(Ordering::Relaxed) == me
                            && armed.is_none_or(|w| w == e.armed.load(Ordering::Relaxed))
                        {
                            wipe_entry(e);
                            e.purged.store(true, Ordering::Relaxed);
                            wiped += 1;
                        }
                        e.state.store(LIVE, Ordering::Release);
                        break;
                    }
                    // Another thread's purge holds it: wait until it is done,
                    // so this thread never goes on (and re-raises a fatal
                    // signal) before every mapping is wiped.
                    Err(BUSY) => super::sys::yield_now(),
                    Err(_) => break,
                }
            }
        }
    }
    wiped
}

fn wipe_entry(e: &Entry) {
    let addr = e.addr.load(Ordering::Relaxed);
    let len = e.len.load(Ordering::Relaxed);
    if e.wipe.load(Ordering::Relaxed) == Wipe::Punch as u32 {
        // Only Linux has memory files: no Punch entry exists elsewhere.
        let fd = e.fd.load(Ordering::Relaxed) as i32;
        let _ = super::sys::punch_hole(fd, e.off.load(Ordering::Relaxed), len as u64);
        return;
    }
    // Fresh zero pages in place of the old ones, with the advice and lock
    // the old pages had (a scratch region is used again if the process
    // lives on). No store through the mapping: its owner may be changing
    // its protection right now, and a store into pages just made
    // `PROT_NONE` would fault in this handler. Read-write, so an access in
    // flight through it reads zeros, never faults.
    // SAFETY: `[addr, addr + len)` is a registered mapping, and BUSY keeps
    // its owner from unmapping it until this returns.
    let _ = unsafe { super::sys::replace_with_zeros(addr as *mut u8, len) };
}
