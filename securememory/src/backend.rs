//! The memory that backs secrets, and the probe for `memfd_secret`.
//!
//! Only "this kernel lacks it" is remembered for the life of the process
//! (`ENOSYS`, `EINVAL`, or `EPERM`/`EACCES` from a seccomp filter or a
//! security module, none of which go away while it runs). Success is not:
//! a filter installed later refuses the call from then on.
//! A refusal for lack of a resource (descriptors, mappings, address space,
//! the memlock limit) is reported as itself and the next call probes again.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::mem::once::ForkSafeOnce;

use crate::error::Error;
use crate::mem::sys;

/// The memory that backs secrets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A range of one process-wide memory file (`memfd_create`), mapped
    /// shared, locked, do-not-dump, do-not-fork, `PROT_NONE` at rest. Allows
    /// the copy access path (reads are a kernel copy; the mapping never
    /// becomes readable, except in a `with_bytes` of a secret larger than the scratch). The default.
    #[default]
    Memfd,
    /// Private anonymous memory, locked, do-not-dump, wipe-on-fork,
    /// `PROT_NONE` at rest; read through an `mprotect` window. Asherah Go's
    /// design.
    Anonymous,
    /// `memfd_secret` (Linux 5.14+): pages removed from the kernel's direct
    /// map, so not readable through `/proc/<pid>/mem`, by ptrace, or by most
    /// of the kernel. Locked by the kernel (counted against
    /// `RLIMIT_MEMLOCK`), do-not-fork, `PROT_NONE` at rest; read through an
    /// `mprotect` window.
    MemfdSecret,
    /// `MemfdSecret` where this kernel allows it, else `Memfd` (always `Memfd` with `Layout::Pooled`). Whether the
    /// kernel allows it is probed until the answer is final (see
    /// [`memfd_secret_status`]); ask [`Backend::resolve`] which one you get.
    Auto,
}

impl Backend {
    /// The backend this one stands for on this machine (`Auto` resolved).
    /// While a probe fails for lack of a resource (descriptors exhausted,
    /// say) `Auto` resolves to `Memfd` for that call only;
    /// [`ProtectedFactory::new`](crate::ProtectedFactory::new) returns that
    /// error instead.
    pub fn resolve(self) -> Backend {
        self.try_resolve().unwrap_or(Backend::Memfd)
    }

    /// As [`resolve`](Self::resolve), but a probe that failed for lack of a
    /// resource is that error.
    pub(crate) fn try_resolve(self) -> Result<Backend, Error> {
        match self {
            Backend::Auto => match memfd_secret_check() {
                Ok(()) => Ok(Backend::MemfdSecret),
                Err(Error::Unsupported(_)) => Ok(Backend::Memfd),
                Err(e) => Err(e),
            },
            b => Ok(b),
        }
    }
}

/// Whether `memfd_secret` works in this process: `Ok`, or why not. A
/// refusal by the kernel or its filter is remembered; success is asked
/// again at each call (one `memfd_secret` call, as a filter may be installed
/// later), and a failure for lack of a resource is probed again.
pub fn memfd_secret_status() -> Result<(), String> {
    memfd_secret_check().map_err(|e| match e {
        Error::Unsupported(why) => why,
        e => e.to_string(),
    })
}

/// [`memfd_secret_status`] as a typed error: [`Error::Unsupported`] when the
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
    crate::fork::install();
    let asked = {
        let _fence = crate::fork::fence();
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
