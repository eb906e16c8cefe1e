//! The process: resource limits, core dumps, dumpability, capabilities,
//! fork handlers, pid, yielding, randomness, physical memory.

use std::io;

use super::last_error;
use super::mapping::page_size;
use super::Limit;
use crate::mem::once::ForkSafeOnce;

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

fn to_limit(v: libc::rlim_t) -> Option<u64> {
    if v == libc::RLIM_INFINITY {
        None
    } else {
        // `rlim_t` is signed on FreeBSD; a finite limit is not negative.
        #[allow(clippy::unnecessary_cast)]
        Some(v as u64)
    }
}

/// The type `getrlimit` takes its resource as (glibc names it).
#[cfg(target_os = "linux")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_os = "linux"))]
type Resource = libc::c_int;

fn get_rlimit(resource: Resource) -> io::Result<Limit> {
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

#[cfg(target_os = "linux")]
/// Whether the process is dumpable, or `None` if the kernel will not say.
///
/// # References
/// - prctl(2), `PR_GET_DUMPABLE`
pub(crate) fn dumpable() -> Option<bool> {
    // SAFETY: PR_GET_DUMPABLE takes no pointer arguments.
    let r = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    (r >= 0).then_some(r != 0)
}

#[cfg(target_os = "linux")]
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
