//! The memory that backs secrets, and the once-per-process probe for
//! `memfd_secret`.

use std::sync::OnceLock;

use crate::mem::sys;

/// The memory that backs secrets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A range of one process-wide memory file (`memfd_create`), mapped
    /// shared, locked, do-not-dump, do-not-fork, `PROT_NONE` at rest. Allows
    /// the copy access path (reads are a kernel copy; the mapping never
    /// becomes readable). The default.
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
    /// `MemfdSecret` where this kernel allows it, else `Memfd`. Probed once
    /// per process; ask [`Backend::resolve`] which one you get.
    Auto,
}

impl Backend {
    /// The backend this one stands for on this machine (`Auto` resolved).
    pub fn resolve(self) -> Backend {
        match self {
            Backend::Auto if memfd_secret_status().is_ok() => Backend::MemfdSecret,
            Backend::Auto => Backend::Memfd,
            b => b,
        }
    }
}

/// Whether `memfd_secret` works in this process: `Ok`, or why not. Probed
/// once (create, size, map and unmap one page).
pub fn memfd_secret_status() -> Result<(), String> {
    static STATUS: OnceLock<Result<(), String>> = OnceLock::new();
    STATUS.get_or_init(probe_memfd_secret).clone()
}

fn probe_memfd_secret() -> Result<(), String> {
    sys::try_memfd_secret_page().map_err(|(stage, e)| match (stage, e.raw_os_error()) {
        ("create", Some(libc::ENOSYS)) => {
            "the kernel has no memfd_secret system call (needs Linux 5.14+ built with CONFIG_SECRETMEM)".to_string()
        }
        ("create", Some(libc::EPERM | libc::EACCES)) => {
            format!("memfd_secret is refused here (seccomp or a security module?): {e}")
        }
        ("create", Some(libc::ENOMEM)) => {
            format!("memfd_secret is disabled (boot with secretmem.enable=1?): {e}")
        }
        ("map", _) => format!("mapping a memfd_secret page failed (RLIMIT_MEMLOCK too low?): {e}"),
        (stage, _) => format!("memfd_secret {stage} failed: {e}"),
    })
}
