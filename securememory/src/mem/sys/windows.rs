//! Windows: every wrapper the rest of the crate names, with the Win32 calls
//! (through `windows-sys`) where Windows has one, and
//! `ErrorKind::Unsupported` where it has none (memory files, hole punching,
//! resource limits); `Options::resolve` refuses the options that would need
//! those before any of them runs.
//!
//! | POSIX here | Win32 |
//! |---|---|
//! | `mmap` (anonymous) / `munmap` | `VirtualAlloc(MEM_RESERVE \| MEM_COMMIT)` / `VirtualFree(MEM_RELEASE)` |
//! | `mprotect` | `VirtualProtect` (`PAGE_NOACCESS`, `PAGE_READONLY`, `PAGE_READWRITE`) |
//! | `mlock` | `VirtualLock` (bounded by the minimum working set) |
//! | `MADV_DONTDUMP` | `WerRegisterExcludedMemoryBlock` (Windows Error Reporting dumps only) |
//! | fork handlers, wipe-on-fork | nothing: Windows has no `fork` |

use std::io;

use windows_sys::Win32::Foundation::S_OK;
use windows_sys::Win32::System::ErrorReporting::{
    WerRegisterExcludedMemoryBlock, WerUnregisterExcludedMemoryBlock,
};
use windows_sys::Win32::System::Memory::{
    VirtualAlloc, VirtualFree, VirtualLock, VirtualProtect, VirtualQuery, MEMORY_BASIC_INFORMATION,
    MEM_COMMIT, MEM_DECOMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_GUARD, PAGE_NOACCESS,
    PAGE_PROTECTION_FLAGS, PAGE_READONLY, PAGE_READWRITE,
};
use windows_sys::Win32::System::SystemInformation::{
    GetSystemInfo, GlobalMemoryStatusEx, MEMORYSTATUSEX, SYSTEM_INFO,
};
use windows_sys::Win32::System::Threading::GetCurrentProcessId;

use super::Limit;
use crate::mem::inject::{self, Op};
use crate::mem::once::ForkSafeOnce;

/// Stand-ins for the descriptor types of `std::os::fd`, which Windows lacks.
/// No descriptor is ever made here (every call that would make one is
/// refused), so [`OwnedFd`] has no value.
pub(crate) mod fd {
    /// A descriptor number.
    pub(crate) type RawFd = i32;
    /// A descriptor that cannot exist on Windows.
    pub(crate) enum OwnedFd {}
    /// As `std::os::fd::AsRawFd`.
    pub(crate) trait AsRawFd {
        fn as_raw_fd(&self) -> RawFd;
    }
    /// As `std::os::fd::IntoRawFd`.
    pub(crate) trait IntoRawFd {
        fn into_raw_fd(self) -> RawFd;
    }
    impl AsRawFd for OwnedFd {
        fn as_raw_fd(&self) -> RawFd {
            match *self {}
        }
    }
    impl IntoRawFd for OwnedFd {
        fn into_raw_fd(self) -> RawFd {
            match self {}
        }
    }
    /// What `from_stdin` reads: a handle, read with `ReadFile`.
    pub(crate) type BorrowedFd<'a> = std::os::windows::io::BorrowedHandle<'a>;
}
use fd::{BorrowedFd, OwnedFd, RawFd};

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} is not available on windows"),
    )
}

/// Page protections the library uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prot {
    None,
    Read,
    ReadWrite,
}

impl Prot {
    fn bits(self) -> PAGE_PROTECTION_FLAGS {
        match self {
            Prot::None => PAGE_NOACCESS,
            Prot::Read => PAGE_READONLY,
            Prot::ReadWrite => PAGE_READWRITE,
        }
    }
}

/// The page size, read once.
///
/// # References
/// - GetSystemInfo, `dwPageSize`
pub(crate) fn page_size() -> usize {
    static PAGE: ForkSafeOnce<usize> = ForkSafeOnce::new();
    *PAGE.get_or_init(|| {
        // SAFETY: SYSTEM_INFO is plain old data; all-zero is a valid value.
        let mut info: SYSTEM_INFO = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-buffer.
        unsafe { GetSystemInfo(&mut info) };
        match info.dwPageSize {
            0 => 4096,
            n => n as usize,
        }
    })
}

/// Bytes of physical memory.
///
/// # References
/// - GlobalMemoryStatusEx
pub(crate) fn physical_memory() -> Option<u64> {
    // SAFETY: MEMORYSTATUSEX is plain old data; all-zero is a valid value.
    let mut st: MEMORYSTATUSEX = unsafe { std::mem::zeroed() };
    st.dwLength = std::mem::size_of::<MEMORYSTATUSEX>() as u32;
    // SAFETY: `st` is a valid, sized out-buffer.
    (unsafe { GlobalMemoryStatusEx(&mut st) } != 0).then_some(st.ullTotalPhys)
}

/// Reserve and commit `len` bytes of fresh private memory.
///
/// # References
/// - VirtualAlloc
pub(crate) fn mmap_anonymous(len: usize, prot: Prot) -> io::Result<*mut u8> {
    inject::check(Op::Mmap)?;
    // SAFETY: a NULL address lets the system choose an unused range.
    let p = unsafe { VirtualAlloc(std::ptr::null(), len, MEM_RESERVE | MEM_COMMIT, prot.bits()) };
    if p.is_null() {
        Err(last_error())
    } else {
        Ok(p.cast())
    }
}

/// Shared file mappings back the Linux memory file only.
///
/// # Safety
/// None needed; kept `unsafe` to match the Unix signature.
pub(crate) unsafe fn mmap_shared(
    _at: Option<*mut u8>,
    _len: usize,
    _prot: Prot,
    _fd: RawFd,
    _offset: u64,
) -> io::Result<*mut u8> {
    inject::check(Op::Mmap)?;
    Err(unsupported("a shared file mapping"))
}

/// Why [`mmap_shared_locked`] failed.
#[derive(Debug)]
pub(crate) enum LockedMapError {
    /// The lock was refused.
    Lock(io::Error),
    /// The mapping itself failed.
    Map(io::Error),
}

/// As [`mmap_shared`].
///
/// # Safety
/// None needed; kept `unsafe` to match the Unix signature.
pub(crate) unsafe fn mmap_shared_locked(
    _at: Option<*mut u8>,
    _len: usize,
    _prot: Prot,
    _fd: RawFd,
    _offset: u64,
) -> Result<*mut u8, LockedMapError> {
    inject::check(Op::Mlock).map_err(LockedMapError::Lock)?;
    Err(LockedMapError::Map(unsupported("a shared file mapping")))
}

/// Release the allocation that starts at `addr` (`len` is its size: the
/// whole allocation goes), and drop its exclusion from error reports.
///
/// # Safety
/// `addr` must be the base of an allocation the caller owns, with no live
/// reference into it.
///
/// # References
/// - VirtualFree, WerUnregisterExcludedMemoryBlock
pub(crate) unsafe fn munmap(addr: *mut u8, _len: usize) -> io::Result<()> {
    // SAFETY: only drops a registration (none is fine: an error we ignore).
    let _ = unsafe { WerUnregisterExcludedMemoryBlock(addr.cast()) };
    // SAFETY: forwarded to the caller; size 0 with MEM_RELEASE frees the
    // whole allocation.
    if unsafe { VirtualFree(addr.cast(), 0, MEM_RELEASE) } != 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Change the protection of `[addr, addr + len)`.
///
/// # Safety
/// The range must be committed memory the caller owns; taking away access
/// must not leave a live reference into it.
///
/// # References
/// - VirtualProtect
pub(crate) unsafe fn mprotect(addr: *mut u8, len: usize, prot: Prot) -> io::Result<()> {
    inject::check(match prot {
        Prot::None => Op::ProtectNone,
        _ => Op::ProtectRead,
    })?;
    let mut old: PAGE_PROTECTION_FLAGS = 0;
    // SAFETY: forwarded to the caller; `old` is a valid out-pointer.
    if unsafe { VirtualProtect(addr.cast(), len, prot.bits(), &mut old) } != 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Lock `[addr, addr + len)` into the working set (refused past the
/// process's minimum working set: `ERROR_WORKING_SET_QUOTA`).
///
/// # Safety
/// The range must be committed, accessible memory the caller owns.
///
/// # References
/// - VirtualLock, SetProcessWorkingSetSize
pub(crate) unsafe fn mlock(addr: *mut u8, len: usize) -> io::Result<()> {
    inject::check(Op::Mlock)?;
    // SAFETY: changes only residency of a range the caller owns.
    if unsafe { VirtualLock(addr.cast(), len) } != 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Whether any committed page of `[start, end)` is readable now (not
/// `PAGE_NOACCESS` or a guard page), as the system's page tables say.
///
/// # References
/// - VirtualQuery
pub(crate) fn range_readable(start: usize, end: usize) -> io::Result<bool> {
    let mut at = start;
    while at < end {
        // SAFETY: MEMORY_BASIC_INFORMATION is plain old data.
        let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<MEMORY_BASIC_INFORMATION>();
        // SAFETY: only reads the process's page tables into `info`.
        if unsafe { VirtualQuery(at as *const _, &mut info, size) } == 0 {
            return Err(last_error());
        }
        let readable = info.State == MEM_COMMIT
            && info.Protect & (PAGE_NOACCESS | PAGE_GUARD) == 0
            && info.Protect != 0;
        if readable {
            return Ok(true);
        }
        let next = info.BaseAddress as usize + info.RegionSize;
        if next <= at {
            break;
        }
        at = next;
    }
    Ok(false)
}

/// Advice values, as on Unix.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Advice {
    /// Leave the range out of error-report dumps.
    DontDump,
    /// No fork on Windows: nothing to do.
    WipeOnFork,
    /// No fork on Windows: nothing to do.
    DontFork,
}

/// `DontDump` registers the range (which must start an allocation, as
/// [`munmap`] unregisters by base) with Windows Error Reporting, which then
/// leaves it out of the dumps it writes; other dump writers
/// (`MiniDumpWriteDump` from a debugger, say) are not bound by it. A refusal
/// (the registration table is full) is an error, as a refused
/// `MADV_DONTDUMP` is on Linux.
///
/// # Safety
/// The range must be memory the caller owns.
///
/// # References
/// - WerRegisterExcludedMemoryBlock (Windows 10 1703+)
pub(crate) unsafe fn madvise(addr: *mut u8, len: usize, advice: Advice) -> io::Result<()> {
    inject::check(Op::Madvise)?;
    match advice {
        Advice::DontDump => {
            let size = u32::try_from(len).map_err(|_| unsupported("excluding over 4 GiB"))?;
            // SAFETY: records the range in the process's WER table; reads no memory.
            let hr = unsafe { WerRegisterExcludedMemoryBlock(addr.cast(), size) };
            if hr == S_OK {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "WerRegisterExcludedMemoryBlock failed: HRESULT {hr:#010x}"
                )))
            }
        }
        Advice::WipeOnFork | Advice::DontFork => Ok(()),
    }
}

/// No fork: nothing is inherited, so no fork sentinel.
pub(crate) const WIPE_ON_FORK_ZEROES: bool = false;

/// Replace `[addr, addr + len)` in place by zero pages: decommitted (the
/// old pages are freed) and committed again read-write, then locked. Nothing
/// is stored through the range, so it works whatever its protection. Lock
/// failure is ignored: the pages hold zeros already.
///
/// # Safety
/// The range must be committed memory the caller owns and that no one frees
/// meanwhile.
///
/// # References
/// - VirtualFree `MEM_DECOMMIT`, VirtualAlloc `MEM_COMMIT`, VirtualLock
pub(crate) unsafe fn replace_with_zeros(addr: *mut u8, len: usize) -> bool {
    // SAFETY: the caller owns the range; decommitting frees its pages only.
    if unsafe { VirtualFree(addr.cast(), len, MEM_DECOMMIT) } == 0 {
        return false;
    }
    // SAFETY: commits the range just decommitted, still reserved by us.
    let p = unsafe { VirtualAlloc(addr.cast(), len, MEM_COMMIT, PAGE_READWRITE) };
    if p.is_null() {
        return false;
    }
    // SAFETY: locks the pages just committed, ours.
    let _ = unsafe { VirtualLock(p, len) };
    true
}

/// Write zeros over `[addr, addr + len)`; see
/// [`copy::wipe_raw`](crate::mem::copy::wipe_raw).
///
/// # Safety
/// The range must be writable and owned by the caller, with no live shared
/// reference into it.
pub(crate) unsafe fn wipe(addr: *mut u8, len: usize) {
    // SAFETY: forwarded to the caller.
    unsafe { crate::mem::copy::wipe_raw(addr, len) }
}

/// Linux's alone.
pub(crate) fn memfd_create(_name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    inject::check(Op::MemfdCreate)?;
    Err(unsupported("memfd_create"))
}

/// Linux's alone.
pub(crate) fn memfd_secret() -> io::Result<OwnedFd> {
    inject::check(Op::MemfdSecret)?;
    Err(unsupported("memfd_secret"))
}

/// Linux's alone.
pub(crate) fn try_memfd_secret_page() -> Result<(), (&'static str, io::Error)> {
    memfd_secret().map(drop).map_err(|e| ("create", e))
}

/// No memory file on Windows.
pub(crate) fn ftruncate(_fd: &impl fd::AsRawFd, _len: u64) -> io::Result<()> {
    inject::check(Op::Ftruncate)?;
    Err(unsupported("ftruncate"))
}

/// No memory file on Windows.
pub(crate) fn fchmod_none(_fd: RawFd) -> io::Result<()> {
    Err(unsupported("fchmod"))
}

/// Read exactly `buf.len()` bytes from the handle with `ReadFile` calls
/// straight into `buf`: no buffer of ours, nothing consumed past it.
pub(crate) fn read_exact_fd(handle: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<()> {
    use std::os::windows::io::{AsRawHandle, FromRawHandle};
    // SAFETY: the caller's handle stays open for the call; `ManuallyDrop`
    // keeps the `File` from closing it.
    let file = std::mem::ManuallyDrop::new(unsafe {
        std::fs::File::from_raw_handle(handle.as_raw_handle())
    });
    io::Read::read_exact(&mut &*file, buf)
}

/// No memory file on Windows.
pub(crate) fn pread_exact(_fd: RawFd, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
    inject::check(Op::Pread)?;
    Err(unsupported("pread"))
}

/// No memory file on Windows.
pub(crate) fn pwrite_all(_fd: RawFd, _buf: &[u8], _offset: u64) -> io::Result<()> {
    inject::check(Op::Pwrite)?;
    Err(unsupported("pwrite"))
}

/// No memory file on Windows.
pub(crate) fn punch_hole(_fd: RawFd, _offset: u64, _len: u64) -> io::Result<()> {
    Err(unsupported("punching holes"))
}

/// No descriptors on Windows.
pub(crate) fn file_id(_fd: RawFd) -> Option<(u64, u64)> {
    None
}

/// No descriptors on Windows.
pub(crate) fn close_raw(_fd: RawFd) {}

pub(crate) fn memlock_limit() -> io::Result<Limit> {
    Err(unsupported("RLIMIT_MEMLOCK"))
}

/// No `RLIMIT_AS` on Windows.
pub(crate) fn address_space_limit() -> io::Result<Limit> {
    Err(unsupported("RLIMIT_AS"))
}

/// No `RLIMIT_NOFILE` on Windows.
pub(crate) fn nofile_limit() -> io::Result<Limit> {
    Err(unsupported("RLIMIT_NOFILE"))
}

/// No `RLIMIT_CORE` on Windows: unknown.
pub(crate) fn core_limit() -> Limit {
    Limit {
        soft: None,
        hard: None,
    }
}

/// No per-process core-dump switch on Windows (dumps are written by Windows
/// Error Reporting or by another process).
pub(crate) fn disable_core_dumps() -> io::Result<()> {
    Err(unsupported("a per-process core-dump limit"))
}

/// Not a Windows notion.
pub(crate) fn dumpable() -> Option<bool> {
    None
}

/// Linux capabilities do not exist on Windows.
pub(crate) fn thread_has_effective_cap(_cap: u32) -> Option<bool> {
    None
}

/// No fork on Windows: the handlers would never run.
pub(crate) fn register_atfork(
    _prepare: extern "C" fn(),
    _parent: extern "C" fn(),
    _child: extern "C" fn(),
) -> io::Result<()> {
    Ok(())
}

/// This process's id.
pub(crate) fn getpid() -> u64 {
    // SAFETY: no preconditions.
    u64::from(unsafe { GetCurrentProcessId() })
}

/// Give the CPU to another thread.
pub(crate) fn yield_now() {
    std::thread::yield_now();
}
