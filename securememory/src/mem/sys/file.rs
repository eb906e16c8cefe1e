//! Memory files and descriptors: create (`memfd_create`, `memfd_secret`),
//! size, positioned and plain reads and writes, hole punching, permissions,
//! identity, close.

use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::OwnedFd;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};

use super::last_error;
use super::mapping::{mmap_shared, munmap, page_size, Prot};
use crate::mem::inject::{self, Op};

#[cfg(target_os = "linux")]
/// Create an anonymous memory file, close-on-exec.
///
/// # References
/// - memfd_create(2)
pub(crate) fn memfd_create(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    inject::check(Op::MemfdCreate)?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        Err(last_error())
    } else {
        // SAFETY: the kernel just returned this descriptor to us alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

#[cfg(target_os = "linux")]
/// Create a secret-memory file whose pages are removed from the kernel's
/// direct map, close-on-exec.
///
/// # References
/// - memfd_secret(2) (Linux 5.14+)
pub(crate) fn memfd_secret() -> io::Result<OwnedFd> {
    inject::check(Op::MemfdSecret)?;
    // SAFETY: memfd_secret takes only a flags word.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC as libc::c_ulong) };
    if fd < 0 {
        Err(last_error())
    } else {
        // SAFETY: the kernel just returned this descriptor to us alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// Create a `memfd_secret` file, size it to one page, map and unmap it: the
/// whole path a secret would take. On failure, the stage that failed.
pub(crate) fn try_memfd_secret_page() -> Result<(), (&'static str, io::Error)> {
    let fd = super::memfd_secret().map_err(|e| ("create", e))?;
    let page = page_size();
    ftruncate(&fd, page as u64).map_err(|e| ("ftruncate", e))?;
    // SAFETY: no fixed address: the kernel picks a free range.
    let p = unsafe { mmap_shared(None, page, Prot::ReadWrite, fd.as_raw_fd(), 0) }
        .map_err(|e| ("map", e))?;
    // SAFETY: `p` is the one-page mapping made just above; nothing points into it.
    let _ = unsafe { munmap(p, page) };
    Ok(())
}

/// Set the size of the file behind `fd`.
///
/// # References
/// - ftruncate(2)
pub(crate) fn ftruncate(fd: &impl AsRawFd, len: u64) -> io::Result<()> {
    inject::check(Op::Ftruncate)?;
    // SAFETY: no memory is passed to the kernel.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Take away every permission bit of the file behind `fd`, so that it cannot
/// be opened again through `/proc/<pid>/fd/N` by anyone without
/// `CAP_DAC_OVERRIDE`. The descriptor already open keeps its access.
///
/// # References
/// - fchmod(2), proc(5) (`/proc/pid/fd`)
pub(crate) fn fchmod_none(fd: RawFd) -> io::Result<()> {
    // SAFETY: no memory is passed to the kernel.
    if unsafe { libc::fchmod(fd, 0) } == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Borrow `fd` as a `File` for std's positioned I/O (which retries on
/// `EINTR` and short transfers), without taking ownership of it.
fn borrowed_file(fd: RawFd) -> std::mem::ManuallyDrop<std::fs::File> {
    // SAFETY: the caller's descriptor stays open for the duration of the
    // call; `ManuallyDrop` keeps the `File` from closing it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Read exactly `buf.len()` bytes of `fd` from its current position by
/// read(2) calls straight into `buf` (retrying `EINTR` and short reads),
/// with no buffer of our own: nothing past `buf.len()` is consumed. A short
/// file or a closed pipe fails with `UnexpectedEof`.
///
/// # References
/// - read(2)
pub(crate) fn read_exact_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<()> {
    io::Read::read_exact(&mut &*borrowed_file(fd.as_raw_fd()), buf)
}

/// Read exactly `buf.len()` bytes of `fd` at `offset`.
///
/// # References
/// - pread(2)
#[inline]
pub(crate) fn pread_exact(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<()> {
    inject::check(Op::Pread)?;
    std::os::unix::fs::FileExt::read_exact_at(&*borrowed_file(fd), buf, offset)
}

/// Write all of `buf` to `fd` at `offset`.
///
/// # References
/// - pwrite(2)
#[inline]
pub(crate) fn pwrite_all(fd: RawFd, buf: &[u8], offset: u64) -> io::Result<()> {
    inject::check(Op::Pwrite)?;
    std::os::unix::fs::FileExt::write_all_at(&*borrowed_file(fd), buf, offset)
}

#[cfg(target_os = "linux")]
/// Free the pages of `fd` in `[offset, offset + len)`; the file keeps its size.
///
/// # References
/// - fallocate(2), `FALLOC_FL_PUNCH_HOLE`
pub(crate) fn punch_hole(fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: no memory is passed to the kernel.
    let r = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// The identity (device, inode) of the file behind `fd`, or `None` if `fd`
/// is not open. Async-signal-safe.
///
/// # References
/// - fstat(2)
pub(crate) fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-buffer for the kernel to fill.
    if unsafe { libc::fstat(fd, &mut st) } == 0 {
        // The widths differ by system (macOS has a 32-bit `st_dev`).
        #[allow(clippy::unnecessary_cast)]
        Some((st.st_dev as u64, st.st_ino as u64))
    } else {
        None
    }
}

/// Close a raw descriptor. Async-signal-safe: used by the at-fork child handler.
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: the caller owns `fd` and forgets it after this call.
    unsafe {
        libc::close(fd);
    }
}
