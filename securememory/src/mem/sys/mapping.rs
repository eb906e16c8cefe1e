//! Mappings: map, unmap, protect, lock, advise; the page size; the wipe of
//! a mapped range.

use std::io;
use std::os::fd::RawFd;

use super::last_error;
use crate::mem::inject::{self, Op};
use crate::mem::once::ForkSafeOnce;

/// `PROT_*` values the library uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prot {
    None,
    Read,
    ReadWrite,
}

impl Prot {
    fn bits(self) -> libc::c_int {
        match self {
            Prot::None => libc::PROT_NONE,
            Prot::Read => libc::PROT_READ,
            Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// The system page size, read once.
///
/// # References
/// - sysconf(3), `_SC_PAGESIZE`
pub(crate) fn page_size() -> usize {
    static PAGE: ForkSafeOnce<usize> = ForkSafeOnce::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n <= 0 {
            4096
        } else {
            n as usize
        }
    })
}

/// Map `len` bytes of fresh private anonymous memory.
///
/// # References
/// - mmap(2)
pub(crate) fn mmap_anonymous(len: usize, prot: Prot) -> io::Result<*mut u8> {
    inject::check(Op::Mmap)?;
    // SAFETY: a NULL hint without MAP_FIXED lets the kernel choose an unused
    // range, so no existing mapping can be replaced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot.bits(),
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(last_error())
    } else {
        Ok(p.cast())
    }
}

/// Map `len` bytes of `fd` at `offset` as a shared mapping. With `at`, the
/// mapping replaces the pages at that address (`MAP_FIXED`).
///
/// # Safety
/// When `at` is given, `[at, at + len)` must lie inside a mapping the caller
/// owns and that no reference points into.
///
/// # References
/// - mmap(2)
pub(crate) unsafe fn mmap_shared(
    at: Option<*mut u8>,
    len: usize,
    prot: Prot,
    fd: RawFd,
    offset: u64,
) -> io::Result<*mut u8> {
    // SAFETY: forwarded to the caller.
    unsafe { mmap_shared_flags(at, len, prot, fd, offset, 0) }
}

/// Why [`mmap_shared_locked`] failed.
#[derive(Debug)]
pub(crate) enum LockedMapError {
    /// The lock was refused (`EAGAIN`: past `RLIMIT_MEMLOCK`; `EPERM`).
    Lock(io::Error),
    /// The mapping itself failed.
    Map(io::Error),
}

#[cfg(target_os = "linux")]
/// [`mmap_shared`], locked and populated at once (`MAP_LOCKED |
/// MAP_POPULATE`): one system call instead of `mmap` then `mlock`.
///
/// # Safety
/// As for [`mmap_shared`].
///
/// # References
/// - mmap(2): `MAP_LOCKED`, `MAP_POPULATE`; `EAGAIN` when too much memory
///   is locked
pub(crate) unsafe fn mmap_shared_locked(
    at: Option<*mut u8>,
    len: usize,
    prot: Prot,
    fd: RawFd,
    offset: u64,
) -> Result<*mut u8, LockedMapError> {
    inject::check(Op::Mlock).map_err(LockedMapError::Lock)?;
    // SAFETY: forwarded to the caller.
    unsafe {
        mmap_shared_flags(
            at,
            len,
            prot,
            fd,
            offset,
            libc::MAP_LOCKED | libc::MAP_POPULATE,
        )
    }
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EPERM) => LockedMapError::Lock(e),
        _ => LockedMapError::Map(e),
    })
}

pub(super) unsafe fn mmap_shared_flags(
    at: Option<*mut u8>,
    len: usize,
    prot: Prot,
    fd: RawFd,
    offset: u64,
    extra: libc::c_int,
) -> io::Result<*mut u8> {
    inject::check(Op::Mmap)?;
    let (hint, fixed) = match at {
        Some(p) => (p.cast(), libc::MAP_FIXED | extra),
        None => (std::ptr::null_mut(), extra),
    };
    // SAFETY: the caller guarantees a fixed target range is theirs to replace.
    let p = unsafe {
        libc::mmap(
            hint,
            len,
            prot.bits(),
            libc::MAP_SHARED | fixed,
            fd,
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        Err(last_error())
    } else {
        Ok(p.cast())
    }
}

/// Unmap `[addr, addr + len)`.
///
/// # Safety
/// The range must be a mapping the caller owns, with no live reference into it.
///
/// # References
/// - munmap(2)
pub(crate) unsafe fn munmap(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: forwarded to the caller.
    if unsafe { libc::munmap(addr.cast(), len) } == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Change the protection of `[addr, addr + len)`.
///
/// # Safety
/// The range must be a mapping the caller owns; taking away access must not
/// leave a live reference into it.
///
/// # References
/// - mprotect(2)
pub(crate) unsafe fn mprotect(addr: *mut u8, len: usize, prot: Prot) -> io::Result<()> {
    inject::check(match prot {
        Prot::None => Op::ProtectNone,
        _ => Op::ProtectRead,
    })?;
    // SAFETY: forwarded to the caller.
    if unsafe { libc::mprotect(addr.cast(), len, prot.bits()) } == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Lock `[addr, addr + len)` into RAM.
///
/// # Safety
/// The range must be a mapping the caller owns.
///
/// # References
/// - mlock(2)
pub(crate) unsafe fn mlock(addr: *mut u8, len: usize) -> io::Result<()> {
    inject::check(Op::Mlock)?;
    // SAFETY: mlock only changes page residency of a range the caller owns.
    if unsafe { libc::mlock(addr.cast(), len) } == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// `madvise` advice values the library uses.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Advice {
    /// Leave the range out of core dumps.
    DontDump,
    /// A fork child gets zero-filled pages (private anonymous mappings only).
    WipeOnFork,
    /// A fork child does not get the range at all (used for shared mappings).
    DontFork,
}

#[cfg(target_os = "linux")]
/// Give the kernel advice about `[addr, addr + len)`.
///
/// # Safety
/// The range must be a mapping the caller owns.
///
/// # References
/// - madvise(2): `MADV_DONTDUMP`, `MADV_WIPEONFORK`, `MADV_DONTFORK`
pub(crate) unsafe fn madvise(addr: *mut u8, len: usize, advice: Advice) -> io::Result<()> {
    inject::check(Op::Madvise)?;
    let a = match advice {
        Advice::DontDump => libc::MADV_DONTDUMP,
        Advice::WipeOnFork => libc::MADV_WIPEONFORK,
        Advice::DontFork => libc::MADV_DONTFORK,
    };
    // SAFETY: these advice values change only dump/fork behaviour of the range.
    if unsafe { libc::madvise(addr.cast(), len, a) } == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Replace `[addr, addr + len)` in place by fresh private zero pages, the
/// old ones freed by the kernel (a `memfd_secret` page is cleared when
/// freed), with the advice and lock the library's own mappings have (no
/// dump, wiped or not inherited on fork). Nothing is stored through the
/// mapping, so it works whatever the range's protection. Async-signal-safe
/// (system calls only, no fault injection). Advice and lock failures are
/// ignored: the pages hold zeros already.
///
/// # Safety
/// The range must be a mapping the caller owns and that no one unmaps
/// meanwhile: `MAP_FIXED` replaces whatever is there.
///
/// # References
/// - mmap(2) `MAP_FIXED`; madvise(2); minherit(2) (macOS, FreeBSD); mlock(2)
pub(crate) unsafe fn replace_with_zeros(addr: *mut u8, len: usize) -> bool {
    // SAFETY: the caller owns the range and keeps it mapped: MAP_FIXED
    // replaces its own pages only.
    let p = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    #[cfg(target_os = "linux")]
    for advice in [libc::MADV_DONTDUMP, libc::MADV_WIPEONFORK] {
        // SAFETY: advice on the pages just mapped, ours.
        let _ = unsafe { libc::madvise(p, len, advice) };
    }
    #[cfg(target_os = "freebsd")]
    {
        // SAFETY: changes only dump and fork behaviour of the pages just mapped.
        let _ = unsafe { libc::madvise(p, len, libc::MADV_NOCORE) };
        // SAFETY: as above.
        let _ = unsafe { libc::minherit(p, len, libc::INHERIT_ZERO) };
    }
    #[cfg(target_os = "macos")]
    {
        // SAFETY: changes only what a fork child inherits of the pages just mapped.
        let _ = unsafe { libc::minherit(p, len, libc::VM_INHERIT_NONE) };
    }
    // SAFETY: locks the pages just mapped, ours.
    let _ = unsafe { libc::mlock(p, len) };
    true
}

/// Write zeros over `[addr, addr + len)` with stores the compiler may not
/// remove or move past what follows (unlock, unmap); see
/// [`copy::wipe_raw`](crate::mem::copy::wipe_raw).
///
/// # Safety
/// The range must be mapped writable and owned by the caller, with no live
/// shared reference into it.
pub(crate) unsafe fn wipe(addr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is writable and exclusively ours.
    unsafe { crate::mem::copy::wipe_raw(addr, len) }
}
