//! `RLIMIT_MEMLOCK` (and `RLIMIT_NOFILE`) of this process, and dropping `CAP_IPC_LOCK` (which
//! lifts it) so that the limit binds.

use std::io;

use caps::{CapSet, Capability};
use securememory::{Error, ProtectedFactory, Secret, SecretFactory};

use crate::common::procfs::{status_field, thread_ids};

/// `CAP_IPC_LOCK` (linux/capability.h): lifts `RLIMIT_MEMLOCK`.
pub const CAP_IPC_LOCK: u32 = 14;

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

/// Lower the soft `RLIMIT_NOFILE` to `n` (or the hard limit, if lower), so
/// a test can run out of descriptors quickly.
pub fn lower_nofile(n: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit structs for the kernel to fill and read.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// Check that no thread of this process has `cap` in its effective or
/// permitted set (capabilities are per thread; the library reads
/// `/proc/self/status`, which is the main thread's).
pub fn assert_no_thread_has(cap: u32) {
    for tid in thread_ids() {
        let path = format!("/proc/self/task/{tid}/status");
        for set in ["CapEff", "CapPrm"] {
            let bits = u64::from_str_radix(&status_field(&path, set), 16).expect("cap mask");
            assert_eq!(
                bits & (1 << cap),
                0,
                "thread {tid} still has capability {cap} in {set} ({bits:#x})"
            );
        }
    }
}

/// Drop `CAP_IPC_LOCK` from this thread's effective and permitted sets and
/// check that no thread holds it (run in a worker started without it in its
/// bounding set, see `Child::drop_bounding`).
pub fn drop_ipc_lock() {
    caps::drop(None, CapSet::Effective, Capability::CAP_IPC_LOCK).unwrap();
    caps::drop(None, CapSet::Permitted, Capability::CAP_IPC_LOCK).unwrap();
    assert_no_thread_has(CAP_IPC_LOCK);
}

/// [`drop_ipc_lock`], then a soft `RLIMIT_MEMLOCK` of `limit` bytes (the
/// hard limit unchanged).
pub fn no_ipc_lock_soft_limit(limit: u64) {
    drop_ipc_lock();
    let (_, hard) = memlock();
    set_memlock(Some(limit), hard);
}

/// Secrets of `f` holding `value(i)` until the memlock budget (`limit`
/// bytes) refuses one with `LockFailed`; fails on any other error or if
/// 100 fit.
pub fn fill_budget(
    f: &ProtectedFactory,
    limit: u64,
    value: impl Fn(usize) -> Vec<u8>,
) -> Vec<Secret> {
    let mut held = Vec::new();
    loop {
        match f.new(&mut value(held.len())) {
            Ok(s) => held.push(s),
            Err(Error::LockFailed { .. }) => return held,
            Err(e) => panic!("filling the budget: {e}"),
        }
        assert!(held.len() < 100, "never refused under a {limit}-byte limit");
    }
}

/// Raise `RLIMIT_CORE` and make sure this process is dumpable; `Err(why)` if not.
pub fn enable_core_dumps() -> Result<(), String> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit/prctl read or write only the values passed;
    // they change only this child process's settings.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &unlimited) != 0
            && libc::getrlimit(libc::RLIMIT_CORE, &mut now) == 0
        {
            now.rlim_cur = now.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &now);
        }
        libc::getrlimit(libc::RLIMIT_CORE, &mut now);
        if now.rlim_cur < 1 << 20 {
            return Err(format!("RLIMIT_CORE stays at {} bytes", now.rlim_cur));
        }
        if libc::prctl(libc::PR_GET_DUMPABLE) != 1 && libc::prctl(libc::PR_SET_DUMPABLE, 1) != 0 {
            return Err("the process is not dumpable".into());
        }
    }
    Ok(())
}
