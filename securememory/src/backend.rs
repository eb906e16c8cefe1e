//! The memory that backs secrets: the probe for `memfd_secret` (the
//! [`Backend`](crate::Backend) enum itself lives in `options.rs`).
//!
//! Only "this kernel lacks it" is remembered for the life of the process
//! (`ENOSYS`, `EINVAL`, or `EPERM`/`EACCES` from a seccomp filter or a
//! security module, none of which change while it runs) and so is success.
//! A refusal for lack of a resource (descriptors, mappings, address space,
//! the memlock limit) is reported as itself and the next call probes again.

use std::sync::OnceLock;

use crate::error::Error;
use crate::mem::sys;

/// Whether `memfd_secret` works in this process: `Ok`, or why not. A final
/// answer (it works; the kernel lacks it; a filter refuses it) is probed
/// once and remembered; a failure for lack of a resource is probed again
/// at the next call.
pub fn memfd_secret_status() -> Result<(), String> {
    memfd_secret_check().map_err(|e| match e {
        Error::Unsupported(why) => why,
        e => e.to_string(),
    })
}

/// [`memfd_secret_status`] as a typed error: [`Error::Unsupported`] when the
/// kernel lacks it (remembered), else the resource error (not remembered).
pub(crate) fn memfd_secret_check() -> Result<(), Error> {
    static FINAL: OnceLock<Result<(), String>> = OnceLock::new();
    if let Some(status) = FINAL.get() {
        return status.clone().map_err(Error::Unsupported);
    }
    match probe_memfd_secret() {
        Probe::Final(status) => FINAL
            .get_or_init(|| status)
            .clone()
            .map_err(Error::Unsupported),
        Probe::Transient(e) => Err(e),
    }
}

enum Probe {
    /// Works, or the kernel lacks it: the same for the life of the process.
    Final(Result<(), String>),
    /// Failed for lack of a resource: try again next time.
    Transient(Error),
}

fn probe_memfd_secret() -> Probe {
    let page = sys::page_size();
    let (stage, e) = match sys::try_memfd_secret_page() {
        Ok(()) => return Probe::Final(Ok(())),
        Err(failed) => failed,
    };
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
        ("map", Some(libc::EAGAIN)) => Probe::Transient(crate::budget::lock_error(page as u64, e)),
        (_, _) => match crate::limits::explain(page, &e) {
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
