//! Memory protection keys (x86 PKU): the pool's syscall-free alternative to
//! `PROT_NONE`.
//!
//! A page tagged with a key is read-write in the page tables, but every
//! access to it, by user code and by the kernel acting for the thread
//! (`write(2)` from it fails with `EFAULT`), is checked against the calling
//! thread's PKRU register. PKRU is per thread and no call sets it in every
//! thread: pkey_alloc sets the new key's rights (access-disabled) in the
//! calling thread only; a new thread inherits its creator's PKRU; a signal
//! handler, and the first thread of a new program, start from the kernel's
//! default, which denies every key but 0 unless an administrator changed it.
//! So what holds is: the allocating thread's PKRU must have denied the key
//! before allocation (else the key is refused, see `alloc`); any thread that
//! never opened it denies it; the library opens the key in the *current
//! thread only* for a leaf copy into, out of, or over a slot (made by
//! `copy`, which calls no function), and closes it again before any caller
//! code runs, even if it was open before. A thread whose PKRU the program
//! set to allow the key (or inherited from a thread that did) can read pool
//! pages. Opening and closing is the `WRPKRU` instruction: no system call.
//!
//! References: pkeys(7), pkey_alloc(2), pkey_mprotect(2); Intel SDM vol. 3A
//! section 4.6.2 "Protection Keys".

use super::once::ForkSafeOnce;
use std::io;

use super::copy;
use super::inject::{self, Op};

/// An allocated protection key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pkey(u32);

impl Pkey {
    /// PKRU bits of this key: access-disable and write-disable.
    fn bits(self) -> u32 {
        0b11 << (2 * self.0)
    }

    /// The PKRU bit that denies all access to this key's pages.
    #[cfg_attr(
        not(all(target_os = "linux", target_arch = "x86_64")),
        allow(dead_code)
    )]
    fn access_disable_bit(self) -> u32 {
        1 << (2 * self.0)
    }
}

/// The process's pool key, allocated on first use: `Ok`, or why there is
/// none. One key serves every pool chunk (there are only 15).
pub(crate) fn pool_key() -> Result<Pkey, String> {
    static KEY: ForkSafeOnce<Result<Pkey, String>> = ForkSafeOnce::new();
    if let Some(known) = KEY.get() {
        return known.clone();
    }
    // Every key taken (by the program, for now) is not remembered: only a
    // key, or "this machine has none", is.
    let (got, last) = match alloc() {
        Err(Refusal::Now(why)) => return Err(why),
        Err(Refusal::Always(why)) => (Err(why), None),
        Ok(key) => (Ok(key), Some(key)),
    };
    let kept = KEY.get_or_init(|| got).clone();
    if let (Some(mine), Ok(kept)) = (last, &kept) {
        if mine != *kept {
            // Another thread's key was kept first.
            free(mine);
        }
    }
    kept
}

/// Why no key: for the life of the process, or for now.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
enum Refusal {
    Always(String),
    Now(String),
}

/// `PKEY_DISABLE_ACCESS` of pkey_alloc(2) (not in the `libc` crate).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const PKEY_DISABLE_ACCESS: libc::c_ulong = 0x1;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn alloc() -> Result<Pkey, Refusal> {
    let before = os_enabled_pku().then(read_pkru);
    // SAFETY: pkey_alloc takes two integers and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pkey_alloc,
            0 as libc::c_ulong,
            PKEY_DISABLE_ACCESS,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => Refusal::Always("the kernel has no pkey_alloc (needs Linux 4.9+ with CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS)".into()),
            // The kernel answers ENOSPC also when the CPU or kernel lacks
            // keys; with them enabled it means every key is taken.
            Some(libc::ENOSPC) if before.is_some() => Refusal::Now(format!("no protection key available: all 15 keys are taken (not remembered: asked again next time): {e}")),
            Some(libc::ENOSPC | libc::EINVAL) => Refusal::Always(format!("no protection key available (the CPU or kernel lacks pku/ospke): {e}")),
            _ => Refusal::Always(format!("pkey_alloc failed: {e}")),
        });
    }
    let key = Pkey(r as u32);
    // pkey_alloc sets the rights of this thread only. Every other thread
    // keeps what it had: the kernel's default (which new processes and
    // signal handlers start from, and which an administrator can change),
    // or what the program or its parent thread set. The value this thread
    // had before stands for those: if it allowed the key, others may too.
    if let Some(pkru) = before.filter(|pkru| pkru & key.access_disable_bit() == 0) {
        free(key);
        return Err(Refusal::Always(format!(
            "this thread's PKRU ({pkru:#010x}) allowed access to protection key {} before it was allocated: the program or the system default opens keys, so other threads could read the pool",
            key.0
        )));
    }
    Ok(key)
}

/// Whether the kernel enabled protection keys (CPUID.(EAX=7,ECX=0):ECX.OSPKE,
/// bit 4), so that `RDPKRU` does not fault.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn os_enabled_pku() -> bool {
    use std::arch::x86_64::__cpuid_count;
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and only reads identification
    // registers (the intrinsic is `unsafe` on older compilers).
    unsafe {
        __cpuid_count(0, 0).eax >= 7 && __cpuid_count(7, 0).ecx & (1 << 4) != 0
    }
}

/// Give an allocated key back (after refusing it).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn free(key: Pkey) {
    // SAFETY: pkey_free takes an integer; no page carries the key yet.
    unsafe { libc::syscall(libc::SYS_pkey_free, key.0 as libc::c_ulong) };
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn free(_: Pkey) {
    unreachable!("no protection key exists on this architecture")
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn alloc() -> Result<Pkey, Refusal> {
    Err(Refusal::Always(if cfg!(target_os = "linux") {
        "protection keys are supported on x86_64 only".into()
    } else {
        format!(
            "protection keys are supported on Linux (x86_64) only, not on {}",
            std::env::consts::OS
        )
    }))
}

/// Give `[addr, addr + len)` read-write protection and `key`.
///
/// # Safety
/// The range must be a mapping the caller owns.
///
/// # References
/// - pkey_mprotect(2)
#[cfg(target_os = "linux")]
pub(crate) unsafe fn protect_with(addr: *mut u8, len: usize, key: Pkey) -> io::Result<()> {
    inject::check(Op::PkeyMprotect)?;
    // SAFETY: changes protection of a range the caller owns; no reference
    // into it exists yet (the pages were PROT_NONE).
    let r = unsafe {
        libc::syscall(
            libc::SYS_pkey_mprotect,
            addr,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            key.0 as libc::c_int,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// No key can exist off Linux ([`pool_key`] refuses).
#[cfg(not(target_os = "linux"))]
pub(crate) unsafe fn protect_with(_addr: *mut u8, _len: usize, _key: Pkey) -> io::Result<()> {
    inject::check(Op::PkeyMprotect)?;
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn read_pkru() -> u32 {
    let pkru: u32;
    // SAFETY: RDPKRU reads a register; it is only reached once `pool_key`
    // has succeeded or `os_enabled_pku` said yes, which means the CPU and
    // kernel enabled PKU (OSPKE).
    // Not `nomem`/`pure`, so it is never merged across a WRPKRU.
    unsafe {
        std::arch::asm!("rdpkru", in("ecx") 0u32, out("eax") pkru, out("edx") _,
            options(nostack, preserves_flags));
    }
    pkru
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn write_pkru(pkru: u32) {
    // SAFETY: WRPKRU sets this thread's key rights (PKU is enabled, see
    // `read_pkru`). Without `nomem` the compiler treats it as touching
    // memory, so no access to keyed pages is moved across it; the CPU does
    // not execute later loads or stores before it completes.
    unsafe {
        std::arch::asm!("wrpkru", in("eax") pkru, in("ecx") 0u32, in("edx") 0u32,
            options(nostack, preserves_flags));
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn read_pkru() -> u32 {
    unreachable!("no protection key exists on this architecture")
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn write_pkru(_: u32) {
    unreachable!("no protection key exists on this architecture")
}

/// Whether the calling thread may read pages tagged with key `number` now.
/// Key 0 (untagged pages) is always readable; without PKU every page is
/// untagged.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn thread_may_read(number: u32) -> bool {
    if number == 0 || pool_key().is_err() {
        return true;
    }
    read_pkru() & (1 << (2 * number)) == 0
}

/// Run `f` with `key` open in this thread, then close it: on return and on
/// unwind, and closed even if it was open before (no code outside the
/// library may hold it open). Not reentrant: `f` is a leaf copy.
fn with_open<R>(key: Pkey, f: impl FnOnce() -> R) -> R {
    struct CloseOnDrop(u32);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            write_pkru(self.0);
        }
    }
    let pkru = read_pkru();
    let _close = CloseOnDrop(pkru | key.bits());
    write_pkru(pkru & !key.bits());
    f()
}

/// Copy `dst.len()` bytes from keyed memory at `src` into `dst`.
///
/// # Safety
/// `[src, src + dst.len())` must be mapped, tagged with `key` and owned by
/// the caller, with no concurrent writer.
pub(crate) unsafe fn copy_out(key: Pkey, src: *const u8, dst: &mut [u8]) {
    with_open(key, || {
        // SAFETY: the caller guarantees the source range; `dst` is a
        // distinct ordinary buffer, so they do not overlap. `copy_raw`
        // calls no function (nothing interposed runs with the key open)
        // and leaves nothing in vector registers.
        unsafe { copy::copy_raw(src, dst.as_mut_ptr(), dst.len()) }
    })
}

/// Copy `src` into keyed memory at `dst`.
///
/// # Safety
/// `[dst, dst + src.len())` must be mapped, tagged with `key` and owned by
/// the caller, with no concurrent reader or writer.
pub(crate) unsafe fn copy_in(key: Pkey, dst: *mut u8, src: &[u8]) {
    with_open(key, || {
        // SAFETY: the caller guarantees the destination range; `src` is
        // ordinary memory, so they do not overlap. As in `copy_out`.
        unsafe { copy::copy_raw(src.as_ptr(), dst, src.len()) }
    })
}

/// Zero keyed memory `[dst, dst + len)` with stores the compiler keeps.
///
/// # Safety
/// As for [`copy_in`].
pub(crate) unsafe fn wipe(key: Pkey, dst: *mut u8, len: usize) {
    // SAFETY: forwarded to the caller; the key is open for the wipe.
    with_open(key, || unsafe { copy::wipe_raw(dst, len) })
}
