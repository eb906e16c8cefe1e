//! `RLIMIT_MEMLOCK` of this process.

use std::io;

/// The current `RLIMIT_MEMLOCK` as (soft, hard); `None` is unlimited.
pub fn memlock() -> (Option<u64>, Option<u64>) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for the kernel to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) }, 0);
    let f = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    (f(r.rlim_cur), f(r.rlim_max))
}

/// Set `RLIMIT_MEMLOCK` (process-wide); `None` is unlimited.
pub fn set_memlock(soft: Option<u64>, hard: Option<u64>) {
    let r = libc::rlimit {
        rlim_cur: soft.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: hard.unwrap_or(libc::RLIM_INFINITY),
    };
    // SAFETY: `r` is a valid rlimit for the kernel to read.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) };
    assert_eq!(
        rc,
        0,
        "setrlimit(RLIMIT_MEMLOCK): {}",
        io::Error::last_os_error()
    );
}
