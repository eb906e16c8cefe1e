//! macOS and FreeBSD: the calls whose Linux versions live in `mapping`,
//! `file` and `process` under `cfg(target_os = "linux")`, with the same
//! names. The POSIX calls (map, protect, lock, rlimits, fork handlers) are
//! shared with Linux. What these systems lack is refused here with
//! `ErrorKind::Unsupported`; `Options::resolve` refuses the options that
//! would need it before any of these runs.
//!
//! Bindings come from `libc`, as on Linux: `rustix` covers the POSIX calls
//! already shared, but neither `minherit` nor `MADV_NOCORE`.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use super::last_error;
use super::mapping::{mlock, mmap_shared_flags, munmap, Advice, LockedMapError, Prot};
use crate::mem::inject::{self, Op};

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} is not available on {}", std::env::consts::OS),
    )
}

/// [`mmap_shared`](super::mmap_shared), then `mlock`: these systems have no
/// `MAP_LOCKED`. On a refused lock the mapping is undone (a fixed one is
/// left as the caller's reservation was: unmapped).
///
/// # Safety
/// As for [`mmap_shared`](super::mmap_shared).
///
/// # References
/// - mmap(2), mlock(2)
pub(crate) unsafe fn mmap_shared_locked(
    at: Option<*mut u8>,
    len: usize,
    prot: Prot,
    fd: RawFd,
    offset: u64,
) -> Result<*mut u8, LockedMapError> {
    inject::check(Op::Mlock).map_err(LockedMapError::Lock)?;
    // SAFETY: forwarded to the caller.
    let p =
        unsafe { mmap_shared_flags(at, len, prot, fd, offset, 0) }.map_err(LockedMapError::Map)?;
    // SAFETY: `p` is the mapping made just above.
    if let Err(e) = unsafe { mlock(p, len) } {
        // SAFETY: the mapping made just above; nothing points into it yet.
        let _ = unsafe { munmap(p, len) };
        return Err(LockedMapError::Lock(e));
    }
    Ok(p)
}

/// Give the kernel advice about `[addr, addr + len)`:
///
/// | advice | FreeBSD | macOS |
/// |---|---|---|
/// | `DontDump` | `madvise(MADV_NOCORE)` | nothing: no per-range exclusion exists; `CoreDumps::DisableForProcess` is the only policy `resolve` accepts there |
/// | `WipeOnFork` | `minherit(INHERIT_ZERO)` | `minherit(VM_INHERIT_NONE)`: the child has no mapping there |
/// | `DontFork` | `minherit(INHERIT_NONE)` | `minherit(VM_INHERIT_NONE)` |
///
/// # Safety
/// The range must be a mapping the caller owns.
///
/// # References
/// - FreeBSD madvise(2) `MADV_NOCORE`, minherit(2); macOS minherit(2)
pub(crate) unsafe fn madvise(addr: *mut u8, len: usize, advice: Advice) -> io::Result<()> {
    inject::check(Op::Madvise)?;
    let r = match advice {
        #[cfg(target_os = "freebsd")]
        // SAFETY: changes only whether the range is dumped.
        Advice::DontDump => unsafe { libc::madvise(addr.cast(), len, libc::MADV_NOCORE) },
        #[cfg(not(target_os = "freebsd"))]
        Advice::DontDump => 0,
        Advice::WipeOnFork => {
            // SAFETY: changes only what a fork child inherits of the range.
            unsafe { libc::minherit(addr.cast(), len, INHERIT_ZERO_OR_NONE) }
        }
        // SAFETY: changes only what a fork child inherits of the range.
        Advice::DontFork => unsafe { libc::minherit(addr.cast(), len, INHERIT_NONE) },
    };
    if r == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

#[cfg(target_os = "freebsd")]
const INHERIT_ZERO_OR_NONE: libc::c_int = libc::INHERIT_ZERO;
#[cfg(target_os = "freebsd")]
const INHERIT_NONE: libc::c_int = libc::INHERIT_NONE;
#[cfg(not(target_os = "freebsd"))]
const INHERIT_ZERO_OR_NONE: libc::c_int = libc::VM_INHERIT_NONE;
#[cfg(not(target_os = "freebsd"))]
const INHERIT_NONE: libc::c_int = libc::VM_INHERIT_NONE;

/// Whether a page marked `WipeOnFork` reads as zeros in a fork child (so
/// the fork sentinel can use it). On macOS the child has no page there.
pub(crate) const WIPE_ON_FORK_ZEROES: bool = cfg!(target_os = "freebsd");

/// An anonymous memory file: FreeBSD has `memfd_create`; macOS has none.
///
/// # References
/// - FreeBSD memfd_create(3)
pub(crate) fn memfd_create(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    inject::check(Op::MemfdCreate)?;
    #[cfg(target_os = "freebsd")]
    {
        use std::os::fd::FromRawFd;
        // SAFETY: `name` is a valid NUL-terminated string.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(last_error());
        }
        // SAFETY: the kernel just returned this descriptor to us alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
    #[cfg(not(target_os = "freebsd"))]
    {
        let _ = name;
        Err(unsupported("memfd_create"))
    }
}

/// `memfd_secret` is Linux's alone.
pub(crate) fn memfd_secret() -> io::Result<OwnedFd> {
    inject::check(Op::MemfdSecret)?;
    Err(unsupported("memfd_secret"))
}

/// Hole punching (Linux `fallocate`) is not used here: the pool that needs
/// it is Linux-only.
pub(crate) fn punch_hole(_fd: RawFd, _offset: u64, _len: u64) -> io::Result<()> {
    Err(unsupported("punching holes in a memory file"))
}

/// Whether the process is dumpable: no portable query here.
pub(crate) fn dumpable() -> Option<bool> {
    None
}

/// Linux capabilities do not exist here.
pub(crate) fn thread_has_effective_cap(_cap: u32) -> Option<bool> {
    None
}
