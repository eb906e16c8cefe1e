//! The only code that makes system calls. Each wrapper has a safe signature
//! where the kernel cannot be made to touch memory we do not own; the ones
//! that take a raw address are `unsafe fn` and state what the caller must
//! guarantee.
//!
//! With the `test-hooks` feature every wrapper first asks [`fault`] whether
//! the test running on this thread wants it to fail, so that each failure
//! path can be exercised without a hostile kernel.

use super::once::ForkSafeOnce;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::inject::{self, Op};

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

fn last_error() -> io::Error {
    io::Error::last_os_error()
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

/// Bytes of physical memory in the machine, if the kernel says.
///
/// # References
/// - sysconf(3), `_SC_PHYS_PAGES`
pub(crate) fn physical_memory() -> Option<u64> {
    static RAM: ForkSafeOnce<Option<u64>> = ForkSafeOnce::new();
    *RAM.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
        (pages > 0).then(|| pages as u64 * page_size() as u64)
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

unsafe fn mmap_shared_flags(
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
    let fd = memfd_secret().map_err(|e| ("create", e))?;
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
        Some((st.st_dev, st.st_ino))
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

/// Fill `buf` from the operating system's CSPRNG.
///
/// # References
/// - getrandom(2)
pub(crate) fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    inject::check(Op::Random)?;
    getrandom::fill(buf).map_err(|e| match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::other(e.to_string()),
    })
}

/// A resource limit's soft and hard values; `None` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit, the one the kernel enforces.
    pub soft: Option<u64>,
    /// The hard limit, the ceiling an unprivileged process may raise the soft limit to.
    pub hard: Option<u64>,
}

fn to_limit(v: libc::rlim_t) -> Option<u64> {
    if v == libc::RLIM_INFINITY {
        None
    } else {
        Some(v)
    }
}

fn get_rlimit(resource: libc::__rlimit_resource_t) -> io::Result<Limit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit struct for the kernel to fill.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        // Refused (a seccomp filter denying prlimit64, say): unknown, which
        // is not the same as unlimited.
        return Err(last_error());
    }
    Ok(Limit {
        soft: to_limit(r.rlim_cur),
        hard: to_limit(r.rlim_max),
    })
}

/// The current `RLIMIT_MEMLOCK`, or why it could not be read.
///
/// # References
/// - getrlimit(2)
pub(crate) fn memlock_limit() -> io::Result<Limit> {
    get_rlimit(libc::RLIMIT_MEMLOCK)
}

/// The current `RLIMIT_AS` (address space), or why it could not be read.
pub(crate) fn address_space_limit() -> io::Result<Limit> {
    get_rlimit(libc::RLIMIT_AS)
}

/// The current `RLIMIT_NOFILE` (descriptors), or why it could not be read.
pub(crate) fn nofile_limit() -> io::Result<Limit> {
    get_rlimit(libc::RLIMIT_NOFILE)
}

/// The current `RLIMIT_CORE` (both `None` if it cannot be read).
pub(crate) fn core_limit() -> Limit {
    get_rlimit(libc::RLIMIT_CORE).unwrap_or(Limit {
        soft: None,
        hard: None,
    })
}

/// Set `RLIMIT_CORE` to zero, soft and hard: no core file for this process.
///
/// # References
/// - setrlimit(2)
pub(crate) fn disable_core_dumps() -> io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit struct for the kernel to read.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &r) } == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Whether the process is dumpable, or `None` if the kernel will not say.
///
/// # References
/// - prctl(2), `PR_GET_DUMPABLE`
pub(crate) fn dumpable() -> Option<bool> {
    // SAFETY: PR_GET_DUMPABLE takes no pointer arguments.
    let r = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    (r >= 0).then_some(r != 0)
}

/// Whether the calling thread has capability number `cap` in its effective
/// set (the set the kernel checks for `mlock`), or `None` if it cannot tell.
///
/// # References
/// - capget(2), `_LINUX_CAPABILITY_VERSION_3`
pub(crate) fn thread_has_effective_cap(cap: u32) -> Option<bool> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: `header` and `data` are valid, correctly laid-out buffers for
    // capget with version 3 (two data structs); pid 0 means this thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    if r != 0 {
        return None;
    }
    let word = data.get((cap / 32) as usize)?;
    Some(word.effective & (1 << (cap % 32)) != 0)
}

/// Register handlers that run around `fork(2)`: `prepare` in the parent
/// before it, `parent` in the parent after it, `child` in the child.
///
/// # References
/// - pthread_atfork(3)
pub(crate) fn register_atfork(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> io::Result<()> {
    // SAFETY: plain function pointers that stay valid for the life of the
    // process.
    let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// This process's id. Async-signal-safe.
///
/// # References
/// - getpid(2)
pub(crate) fn getpid() -> u64 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u64 }
}

/// Give the CPU to another thread (a spin wait's pause). Async-signal-safe.
///
/// # References
/// - sched_yield(2)
pub(crate) fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe {
        libc::sched_yield();
    }
}

/// Write zeros over `[addr, addr + len)` with stores the compiler may not
/// remove or move past what follows (unlock, unmap); see
/// [`copy::wipe_raw`](super::copy::wipe_raw).
///
/// # Safety
/// The range must be mapped writable and owned by the caller, with no live
/// shared reference into it.
pub(crate) unsafe fn wipe(addr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is writable and exclusively ours.
    unsafe { super::copy::wipe_raw(addr, len) }
}
