//! The resolution of a factory's options: what each `Auto` stands for on
//! this machine, and which combinations the platform and kernel allow. The
//! probes themselves (`memfd_secret` in `mem::probe`, protection keys in
//! `mem::pkey` and `pool_protection`) stay with what they probe; this file
//! only asks them. The options themselves are plain data in `options.rs`.

use crate::error::{Error, Result};
use crate::mem::pkey::{self, Pkey};
use crate::mem::probe;
use crate::options::{AccessPath, Backend, CoreDumps, Layout, Options, PoolProtection};
use crate::pool_protection;

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
            Backend::Auto if !cfg!(target_os = "linux") => Ok(Backend::Anonymous),
            Backend::Auto => match probe::memfd_secret_check() {
                Ok(()) => Ok(Backend::MemfdSecret),
                Err(Error::Unsupported(_)) => Ok(Backend::Memfd),
                Err(e) => Err(e),
            },
            b => Ok(b),
        }
    }
}

/// Options with every `Auto` resolved and every combination checked, and
/// the pool's protection key if the pool uses one.
pub(crate) struct Resolved {
    pub(crate) opts: Options,
    pub(crate) key: Option<Pkey>,
}

impl Options {
    /// Resolve `Auto` choices (probing `memfd_secret` and protection keys
    /// until the answer is final) and refuse combinations that cannot work
    /// with [`Error::Unsupported`]: the copy path or the pooled layout
    /// without the memfd backend, an explicit backend this kernel lacks,
    /// `PoolProtection::ProtectionKey` without the pooled layout or on a
    /// machine without protection keys. A probe refused for lack of a
    /// resource is that error; it is not remembered. No side effect on the
    /// process (the core-dump policy is applied by the factory).
    pub(crate) fn resolve(self) -> Result<Resolved> {
        refuse_off_linux(&self)?;
        let mut opts = self;
        opts.backend = match (opts.backend, opts.layout) {
            // The pool reads by kernel copy only: memfd.
            (Backend::Auto, Layout::Pooled | Layout::Sealed) => Backend::Memfd,
            (b, _) => b.try_resolve()?,
        };
        if opts.backend == Backend::MemfdSecret {
            probe::memfd_secret_check()?;
        }
        // The sealed layout keeps its key in the pool.
        let shares_pool = matches!(opts.layout, Layout::Pooled | Layout::Sealed);
        if shares_pool && opts.backend != Backend::Memfd {
            return Err(Error::Unsupported(format!(
                "the {:?} layout needs Backend::Memfd, not {:?}",
                opts.layout, opts.backend
            )));
        }
        opts.access = match (opts.access, opts.backend) {
            (AccessPath::Auto, Backend::Memfd) => AccessPath::Copy,
            (AccessPath::Auto, _) => AccessPath::Window,
            (AccessPath::Copy, Backend::Memfd) => AccessPath::Copy,
            (AccessPath::Copy, b) => {
                return Err(Error::Unsupported(format!(
                    "the copy access path needs Backend::Memfd, not {b:?}"
                )))
            }
            (AccessPath::Window, _) if shares_pool => {
                return Err(Error::Unsupported(format!(
                    "{:?} secrets are read by the copy path only",
                    opts.layout
                )))
            }
            (p, _) => p,
        };
        let key = resolve_pool_protection(&mut opts)?;
        Ok(Resolved { opts, key })
    }
}

/// The options [`Options::resolve`] refuses on this system whatever the
/// machine (empty on Linux), by their Rust names.
pub(crate) fn unavailable_here() -> Vec<&'static str> {
    let mut v = Vec::new();
    if !cfg!(target_os = "linux") {
        v.extend([
            "Backend::Memfd",
            "Backend::MemfdSecret",
            "Layout::Pooled",
            "Layout::Sealed",
            "AccessPath::Copy",
            "PoolProtection::ProtectionKey",
        ]);
    }
    if cfg!(target_os = "macos") {
        v.push("CoreDumps::ExcludeSecrets");
    }
    if cfg!(windows) {
        v.push("CoreDumps::DisableForProcess");
    }
    v
}

/// Refuse, naming the platform, what only Linux has: the memory file (and
/// with it the copy path and the pool), `memfd_secret`, protection keys;
/// and on macOS the per-range core-dump exclusion.
fn refuse_off_linux(opts: &Options) -> Result<()> {
    if cfg!(target_os = "linux") {
        return Ok(());
    }
    let refuse = |what: &str, why: &str| {
        Err(Error::Unsupported(format!(
            "{what} is not available on {}: {why}",
            std::env::consts::OS
        )))
    };
    if opts.layout == Layout::Pooled {
        return refuse("Layout::Pooled", "the pool lives in a Linux memory file");
    }
    if opts.layout == Layout::Sealed {
        return refuse(
            "Layout::Sealed",
            "its keys live in the pool, a Linux memory file",
        );
    }
    match opts.backend {
        Backend::Memfd => return refuse("Backend::Memfd", "it is a Linux memory file"),
        Backend::MemfdSecret => return refuse("Backend::MemfdSecret", "memfd_secret is Linux's"),
        Backend::Anonymous | Backend::Auto => {}
    }
    if opts.access == AccessPath::Copy {
        return refuse(
            "AccessPath::Copy",
            "the kernel copy reads the Linux memory file",
        );
    }
    if opts.pool_protection == PoolProtection::ProtectionKey {
        return refuse(
            "PoolProtection::ProtectionKey",
            "protection keys are Linux's",
        );
    }
    if cfg!(target_os = "macos") && opts.core_dumps == CoreDumps::ExcludeSecrets {
        return refuse(
            "CoreDumps::ExcludeSecrets",
            "no call leaves a range of memory out of a core dump; CoreDumps::DisableForProcess \
             (the default there) keeps secrets out of them",
        );
    }
    if cfg!(windows) && opts.core_dumps == CoreDumps::DisableForProcess {
        return refuse(
            "CoreDumps::DisableForProcess",
            "there is no per-process core-dump limit (dumps are written by Windows Error \
             Reporting or another process); CoreDumps::ExcludeSecrets registers each secret's \
             pages with WerRegisterExcludedMemoryBlock",
        );
    }
    Ok(())
}

/// Resolve `opts.pool_protection` (`Auto`, and to `ProtNone` for layouts
/// other than pooled) and return the pool's key if it uses one.
fn resolve_pool_protection(opts: &mut Options) -> Result<Option<Pkey>> {
    // The sealed layout keeps its key in the pool.
    let pooled = matches!(opts.layout, Layout::Pooled | Layout::Sealed);
    match (opts.pool_protection, pooled) {
        (PoolProtection::ProtectionKey, false) => Err(Error::Unsupported(
            "PoolProtection::ProtectionKey applies to Layout::Pooled and Layout::Sealed only"
                .into(),
        )),
        (PoolProtection::ProtectionKey, true) => pkey::pool_key()
            .map(Some)
            .map_err(|why| Error::Unsupported(format!("PoolProtection::ProtectionKey: {why}"))),
        (PoolProtection::Auto, true) => {
            let key = pkey::pool_key()
                .ok()
                .filter(|_| pool_protection::keys_resist_speculation());
            opts.pool_protection = match key {
                Some(_) => PoolProtection::ProtectionKey,
                None => PoolProtection::ProtNone,
            };
            Ok(key)
        }
        (_, _) => {
            opts.pool_protection = PoolProtection::ProtNone;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::LockPolicy;

    /// `ProtectedFactory::default` relies on this: the default options
    /// resolve with no probe that could fail, to what `default` always gave
    /// (memfd, copy path, no protection key).
    #[cfg(target_os = "linux")]
    #[test]
    fn default_options_resolve_to_memfd_copy_without_a_key() {
        let Resolved { opts, key } = Options::default().resolve().unwrap();
        assert_eq!(opts.backend, Backend::Memfd);
        assert_eq!(opts.access, AccessPath::Copy);
        assert_eq!(opts.layout, Layout::Page);
        assert_eq!(opts.pool_protection, PoolProtection::ProtNone);
        assert_eq!(opts.lock, LockPolicy::Require);
        assert_eq!(opts.core_dumps, CoreDumps::ExcludeSecrets);
        assert!(key.is_none());
    }

    /// Elsewhere the defaults resolve to the anonymous backend on the
    /// window path (and on macOS no core files for the process).
    #[cfg(not(target_os = "linux"))]
    #[test]
    fn default_options_resolve_to_anonymous_window() {
        let Resolved { opts, key } = Options::default().resolve().unwrap();
        assert_eq!(opts.backend, Backend::Anonymous);
        assert_eq!(opts.access, AccessPath::Window);
        assert_eq!(opts.layout, Layout::Page);
        assert_eq!(opts.pool_protection, PoolProtection::ProtNone);
        assert_eq!(opts.lock, LockPolicy::Require);
        let dumps = if cfg!(target_os = "macos") {
            CoreDumps::DisableForProcess
        } else {
            CoreDumps::ExcludeSecrets
        };
        assert_eq!(opts.core_dumps, dumps);
        assert!(key.is_none());
    }
}
