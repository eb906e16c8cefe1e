//! Fork safety. A fork child must never see a secret's bytes and must never
//! be handed zeros in their place.
//!
//! Three parts:
//! - The mappings' own advice: `MADV_WIPEONFORK` (private) or
//!   `MADV_DONTFORK` (shared), applied before a byte is written.
//! - The fork fence, for forks that run at-fork handlers (glibc's `fork`):
//!   a creator of a shared mapping holds it from before the first shared
//!   `mmap` (or `memfd_secret`) until `MADV_DONTFORK` is applied and the
//!   `memfd_secret` descriptor is closed; the prepare handler waits until no
//!   creator is inside, so no child is made in that gap.
//! - Detection of every fork child, also one made by a raw `fork`, `clone`
//!   or `clone3` system call or `_Fork`, which skip at-fork handlers: a
//!   sentinel word in a `MADV_WIPEONFORK` page (`mem::sentinel`), zeroed by
//!   the kernel in any child. [`generation`] reads it on every access; the
//!   first call in a child bumps the generation (so the parent's secrets
//!   return [`Error::Forked`](crate::Error::Forked)) and runs the child
//!   hooks: the memory file closes the parent's descriptors, the budget
//!   empties itself (`mlock` is not inherited). Where `MADV_WIPEONFORK` is
//!   missing (Linux before 4.14) it compares a cached pid with `getpid()`
//!   instead: one system call per access.
//!
//! The child hooks are registered by the modules above this one (`budget`,
//! `memfile`) before they hold any state a child must drop, so this file
//! imports neither: plain function pointers in a fixed static array of
//! atomics, which the child handler reads and calls with no lock and no
//! allocation.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use super::once::ForkSafeOnce;
use super::{sentinel, sys};

/// The generation: 0 in the process that first used the library, one more
/// per fork below it. The armed sentinel holds `generation + 1`.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The one-time install. A `ForkSafeOnce`, not a `std::sync::Once`: a fork
/// taken while another thread installs copies a `Once` that no thread of
/// the child will ever finish, and the child's first call would wait forever.
static INSTALL: ForkSafeOnce<()> = ForkSafeOnce::new();
/// The sentinel word (or the cached pid) while a child's work runs.
const BUSY: u64 = u64::MAX;

/// Set when the sentinel could not be made: detection by pid.
static BY_PID: AtomicBool = AtomicBool::new(false);
/// The pid the child work last ran for (or `BUSY`).
static PID: AtomicU64 = AtomicU64::new(0);

/// The fork fence: creators inside (low half), forks announced (high half).
static FENCE: AtomicU64 = AtomicU64::new(0);
const CREATOR: u64 = 1;
const FORKER: u64 = 1 << 32;
const CREATORS: u64 = FORKER - 1;

thread_local! {
    /// How deep this thread is inside the fence (a signal handler may create
    /// or fork while its thread is inside).
    static DEPTH: Cell<u64> = const { Cell::new(0) };
    /// Set while this thread runs the prepare handler.
    static FORKING: Cell<bool> = const { Cell::new(false) };
}

/// Register the at-fork handlers and make the sentinel, once per process.
/// Called before the first secret (or memory file) exists.
pub(crate) fn install() {
    if INSTALL.get().is_none() {
        // Redoing a step after a takeover in a fork child is harmless (the
        // sentinel keeps a published word; a second set of handlers only
        // announces each fork twice). The failures are logged once the
        // install is marked done.
        let mut failed = None;
        INSTALL.get_or_init(|| failed = Some(install_once()));
        if let Some(failed) = failed {
            warn_install_failures(failed);
        }
    }
    // Every entry point installs: so the first call of a raw fork child,
    // whichever it is (a factory, say), also notices the fork.
    let _ = generation();
}

/// Make the sentinel and register the handlers; returns their failures,
/// to be logged once the install is marked done (a subscriber that makes a
/// secret would otherwise wait for this install forever).
fn install_once() -> (Option<std::io::Error>, Option<std::io::Error>) {
    let mut failed = (None, None);
    if let Err(e) = sentinel::install(GENERATION.load(Ordering::Acquire) + 1) {
        PID.store(sys::getpid(), Ordering::Release);
        BY_PID.store(true, Ordering::Release);
        failed.0 = Some(e);
    }
    // Failure leaves the fence without effect; the sentinel still
    // detects every child and the fork advice keeps the bytes out of it.
    if let Err(e) = sys::register_atfork(prepare, parent, child) {
        failed.1 = Some(e);
    }
    failed
}

/// Log what [`install_once`] could not do (user code: outside the install).
fn warn_install_failures(failed: (Option<std::io::Error>, Option<std::io::Error>)) {
    if let Some(e) = failed.0 {
        crate::shield::shield(
            || tracing::warn!(error = %e, "securememory: no MADV_WIPEONFORK sentinel; fork children are detected by pid (one getpid per access)"),
        );
    }
    if let Some(e) = failed.1 {
        crate::shield::shield(
            || tracing::warn!(error = %e, "securememory: pthread_atfork failed; a fork during a secret's creation is not fenced"),
        );
    }
}

/// The current fork generation of this process. Two loads; the first call
/// in a fork child does the child's work (see the module docs).
#[inline]
pub(crate) fn generation() -> u64 {
    match sentinel::load() {
        Some(w) if w != 0 && w != BUSY => w - 1,
        _ => generation_slow(),
    }
}

#[cold]
fn generation_slow() -> u64 {
    if sentinel::load().is_some() {
        return by_sentinel();
    }
    if BY_PID.load(Ordering::Acquire) {
        return by_pid();
    }
    // Not installed yet: no secret exists.
    GENERATION.load(Ordering::Acquire)
}

fn by_sentinel() -> u64 {
    loop {
        match sentinel::load() {
            Some(0) => {
                if sentinel::claim(0, BUSY) {
                    let now = enter_child();
                    sentinel::store(now + 1);
                    return now;
                }
            }
            Some(BUSY) => sys::yield_now(),
            Some(w) => return w - 1,
            None => return GENERATION.load(Ordering::Acquire),
        }
    }
}

fn by_pid() -> u64 {
    let me = sys::getpid();
    loop {
        let seen = PID.load(Ordering::Acquire);
        if seen == me {
            return GENERATION.load(Ordering::Acquire);
        }
        if seen == BUSY {
            sys::yield_now();
            continue;
        }
        if PID
            .compare_exchange(seen, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let now = enter_child();
            PID.store(me, Ordering::Release);
            return now;
        }
    }
}

/// The child's work, once per fork child. Async-signal-safe (atomics, and
/// the child hooks, which promise the same): the at-fork child handler runs
/// it too.
fn enter_child() -> u64 {
    let now = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    // Creators and forkers counted in the parent are not in this process.
    FENCE.store(0, Ordering::Release);
    run_child_hooks(now);
    now
}

/// Work a fork child must do once, before its own code uses the library,
/// given the child's new generation. It must be async-signal-safe (atomics
/// and `close` only: no lock, no allocation), since the at-fork child
/// handler runs it, and idempotent.
pub(crate) type ChildHook = fn(u64);

/// Room for the child hooks (two are registered today: the budget's and
/// the memory file's).
const HOOKS: usize = 4;

/// The registered child hooks (a `ChildHook` each, or null), filled from
/// the front, never emptied.
static CHILD_HOOKS: [AtomicPtr<()>; HOOKS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; HOOKS];

/// Register `hook` to run in every fork child from now on (registering it
/// again does nothing). Call it before holding any state the hook drops,
/// so that no child copies the state without running the hook.
///
/// # Panics
/// If more distinct hooks are registered than there is room for: a
/// programming error (the registrants are a fixed set of this crate).
pub(crate) fn on_child(hook: ChildHook) {
    let wanted = hook as *mut ();
    for slot in &CHILD_HOOKS {
        match slot.compare_exchange(
            std::ptr::null_mut(),
            wanted,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return,
            Err(seen) if seen == wanted => return,
            Err(_) => {}
        }
    }
    panic!("securememory: more fork child hooks than the {HOOKS} slots");
}

/// Run every registered child hook. Async-signal-safe: atomic loads, and
/// calls of hooks that are.
fn run_child_hooks(new_generation: u64) {
    for slot in &CHILD_HOOKS {
        let p = slot.load(Ordering::Acquire);
        if p.is_null() {
            break;
        }
        // SAFETY: a non-null slot holds a `ChildHook` cast to a pointer by
        // `on_child`, its only writer; on Linux a function pointer and a
        // data pointer have the same size and representation, and the
        // function lives as long as the program.
        let hook = unsafe { std::mem::transmute::<*mut (), ChildHook>(p) };
        hook(new_generation);
    }
}

/// Held while a shared mapping of secret memory exists without
/// `MADV_DONTFORK` (or a `memfd_secret` descriptor is open): no fork that
/// runs at-fork handlers happens meanwhile.
pub(crate) struct Fence {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Enter the fence: wait while a fork is announced, then count in. Cheap: one
/// compare-and-swap when no fork is under way.
pub(crate) fn fence() -> Fence {
    // A raw fork child resets a fence word copied mid-flight first.
    let _ = generation();
    let depth = DEPTH.with(|d| {
        let n = d.get();
        // Counted before entering, so a fork from a signal handler on this
        // thread does not wait for this thread.
        d.set(n + 1);
        n
    });
    // Nested (a signal handler creating while this thread is inside), or
    // this thread is the one forking: waiting would wait for ourselves.
    let no_wait = depth > 0 || FORKING.with(Cell::get);
    let mut w = FENCE.load(Ordering::Relaxed);
    loop {
        if w >= FORKER && !no_wait {
            sys::yield_now();
            w = FENCE.load(Ordering::Relaxed);
            continue;
        }
        match FENCE.compare_exchange_weak(w, w + CREATOR, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => w = now,
        }
    }
    Fence {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        // Never below zero: a fork child starts its count at zero while the
        // forking thread may still be inside.
        let _ = FENCE.fetch_update(Ordering::Release, Ordering::Relaxed, |w| {
            Some(if w & CREATORS != 0 { w - CREATOR } else { w })
        });
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Before `fork`: announce it (new creators wait) and wait until no creator
/// of another thread is inside. Counting forkers lets two threads fork at once.
extern "C" fn prepare() {
    // In a raw fork child that never called in, reset the copied state first.
    let _ = generation();
    let _ = FORKING.try_with(|f| f.set(true));
    FENCE.fetch_add(FORKER, Ordering::AcqRel);
    let mine = DEPTH.try_with(Cell::get).unwrap_or(0);
    while FENCE.load(Ordering::Acquire) & CREATORS > mine {
        sys::yield_now();
    }
}

/// In the parent after `fork`.
extern "C" fn parent() {
    FENCE.fetch_sub(FORKER, Ordering::AcqRel);
    let _ = FORKING.try_with(|f| f.set(false));
}

/// In the child after `fork`, before the child's own code: only
/// async-signal-safe work (atomics and `close`).
extern "C" fn child() {
    FENCE.store(0, Ordering::Release);
    let _ = FORKING.try_with(|f| f.set(false));
    let _ = generation();
}
