//! The probe for `memfd_secret`: whether this kernel (and its filters)
//! lets this process make secret memory. Run inside the fork fence (so no
//! fork copies the probe's descriptor or mapping); its public status is
//! `backend::memfd_secret_status`.
//!
//! Only "this kernel lacks it" is remembered for the life of the process;
//! success is asked again (a filter installed later refuses the call from
//! then on), and a refusal for lack of a resource is probed again.

use std::sync::atomic::{AtomicBool, Ordering};

use super::once::ForkSafeOnce;
use super::{budget, fork, limits, sys};
use crate::error::Error;

/// `memfd_secret_status` as a typed error: [`Error::Unsupported`] when the
/// kernel lacks it (remembered), else the resource error (not remembered).
pub(crate) fn memfd_secret_check() -> Result<(), Error> {
    static FINAL: ForkSafeOnce<Result<(), String>> = ForkSafeOnce::new();
    if let Some(status) = FINAL.get() {
        return status.clone().map_err(Error::Unsupported);
    }
    // Success is not final: a seccomp filter installed later (a sandbox
    // entered after start-up) refuses the call from then on. After one full
    // probe worked, the call alone is asked again (no page is mapped).
    // Fenced like a secret's creation: no fork copies the probe's
    // descriptor or mapping.
    fork::install();
    let asked = {
        let _fence = fork::fence();
        if WORKED.load(Ordering::Acquire) {
            sys::memfd_secret().map(drop).map_err(|e| ("create", e))
        } else {
            sys::try_memfd_secret_page()
        }
    };
    // Classified outside the fence (a refusal's error calls the metrics
    // recorder, user code).
    let probe = match asked {
        Ok(()) => Probe::Final(Ok(())),
        Err((stage, e)) => classify(stage, e),
    };
    match probe {
        Probe::Final(Ok(())) => {
            WORKED.store(true, Ordering::Release);
            Ok(())
        }
        Probe::Final(status) => FINAL
            .get_or_init(|| status)
            .clone()
            .map_err(Error::Unsupported),
        Probe::Transient(e) => Err(e),
    }
}

/// Set once a full probe worked.
static WORKED: AtomicBool = AtomicBool::new(false);

enum Probe {
    /// Works, or the kernel lacks it: the same for the life of the process.
    Final(Result<(), String>),
    /// Failed for lack of a resource: try again next time.
    Transient(Error),
}

/// What a refusal at `stage` of the probe means.
fn classify(stage: &'static str, e: std::io::Error) -> Probe {
    let page = sys::page_size();
    let lacks = |why: String| Probe::Final(Err(why));
    match (stage, e.raw_os_error()) {
        ("create", Some(libc::ENOSYS)) => lacks(format!(
            "the kernel has no memfd_secret system call, or it is disabled (needs Linux 5.14+ \
             built with CONFIG_SECRETMEM, and on some kernels secretmem.enable=1): {e}"
        )),
        ("create", Some(libc::EINVAL)) => {
            lacks(format!("this kernel's memfd_secret refuses its flags: {e}"))
        }
        ("create", Some(libc::EPERM | libc::EACCES)) => lacks(format!(
            "memfd_secret is refused here (a seccomp filter or a security module): {e}"
        )),
        // Descriptors, mappings, address space, memlock: as themselves.
        ("map", Some(libc::EAGAIN)) => Probe::Transient(budget::lock_error(page as u64, e)),
        (_, _) => match limits::explain(page, &e) {
            Some(limit) => Probe::Transient(Error::LimitReached {
                bytes: page,
                limit,
                source: e,
            }),
            None => Probe::Transient(Error::MapFailed {
                bytes: page,
                source: e,
            }),
        },
    }
}
