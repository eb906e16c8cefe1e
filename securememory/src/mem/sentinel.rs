//! The fork sentinel: one word in a private anonymous page advised
//! `MADV_WIPEONFORK`. The kernel zeroes that page in every fork child,
//! however the child was made (glibc's `fork`, a raw `fork`/`clone`/`clone3`
//! system call, `_Fork`), so a word that was non-zero and reads zero says
//! "this process is a fork child that has not noticed yet". Reading it is
//! one load, no system call.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::sys::{self, Advice, Prot};

/// Null until [`install`] succeeds; then a word in a page mapped for the
/// life of the process (never unmapped), so the pointer stays valid.
static WORD: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());

/// Map the sentinel page and set the word to `armed` (non-zero). On
/// failure (a kernel without `MADV_WIPEONFORK`, before Linux 4.14) the
/// sentinel stays absent and [`load`] returns `None`.
///
/// # References
/// - madvise(2): `MADV_WIPEONFORK`
pub(crate) fn install(armed: u64) -> std::io::Result<()> {
    assert_ne!(armed, 0, "an armed sentinel is non-zero");
    if !WORD.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    if !sys::WIPE_ON_FORK_ZEROES {
        // macOS: a child would have no page here, and reading it would fault.
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no zero-on-fork page on this system",
        ));
    }
    let page = sys::page_size();
    let p = sys::mmap_anonymous(page, Prot::ReadWrite)?;
    // SAFETY: `p` is the page just mapped, owned here alone.
    let advised = unsafe { sys::madvise(p, page, Advice::WipeOnFork) };
    if let Err(e) = advised {
        // SAFETY: the page just mapped; nothing refers to it.
        let _ = unsafe { sys::munmap(p, page) };
        return Err(e);
    }
    let word = p.cast::<AtomicU64>();
    // SAFETY: the page is page-aligned (so aligned for a u64), read-write,
    // and never unmapped once published; an `AtomicU64` over it is valid.
    unsafe { (*word).store(armed, Ordering::Relaxed) };
    if WORD
        .compare_exchange(
            std::ptr::null_mut(),
            word,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // Another thread installed one first: ours was never published.
        // SAFETY: our page, unpublished.
        let _ = unsafe { sys::munmap(p, page) };
    }
    Ok(())
}

#[inline]
fn word() -> Option<&'static AtomicU64> {
    let p = WORD.load(Ordering::Acquire);
    // SAFETY: non-null only after `install` published a word in a page that
    // stays mapped read-write for the life of the process.
    unsafe { p.as_ref() }
}

/// The word now, or `None` if no sentinel is installed.
#[inline]
pub(crate) fn load() -> Option<u64> {
    word().map(|w| w.load(Ordering::Acquire))
}

/// Compare-and-swap the word; `false` if it was not `current` (or there is
/// no sentinel).
pub(crate) fn claim(current: u64, new: u64) -> bool {
    word().is_some_and(|w| {
        w.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })
}

/// Set the word (publishing everything done before).
pub(crate) fn store(value: u64) {
    if let Some(w) = word() {
        w.store(value, Ordering::Release);
    }
}
