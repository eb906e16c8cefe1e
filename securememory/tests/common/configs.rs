//! The factory configurations the tests run in: backend x layout x access
//! path, `MemfdSecret` ones left out (loudly) where the kernel lacks it.

use securememory::{AccessPath, Backend, Layout, Options, PoolProtection, ProtectedFactory};

/// One configuration of the factory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub name: &'static str,
    pub opts: Options,
}

impl Config {
    pub fn factory(&self) -> ProtectedFactory {
        ProtectedFactory::new(self.opts).unwrap_or_else(|e| panic!("{}: factory: {e}", self.name))
    }
    pub fn options(&self) -> Options {
        self.opts
    }
    pub fn backend(&self) -> Backend {
        self.opts.backend
    }
    pub fn layout(&self) -> Layout {
        self.opts.layout
    }
    pub fn path(&self) -> AccessPath {
        self.opts.access
    }
    pub fn is_window(&self) -> bool {
        self.opts.access == AccessPath::Window
    }
    pub fn is_copy(&self) -> bool {
        self.opts.access == AccessPath::Copy
    }
    pub fn is_pooled(&self) -> bool {
        self.opts.layout == Layout::Pooled
    }
    /// Whether pool chunks carry a protection key (`PoolProtection::ProtectionKey`).
    pub fn uses_key(&self) -> bool {
        self.opts.pool_protection == PoolProtection::ProtectionKey
    }
    pub fn is_guarded(&self) -> bool {
        self.opts.layout == Layout::Guarded
    }
    /// Whether the mapping is shared (memfd, memfd_secret): `MADV_DONTFORK`
    /// rather than anonymous memory's `MADV_WIPEONFORK`.
    pub fn shared(&self) -> bool {
        self.opts.backend != Backend::Anonymous
    }
    /// Whether the access path is the one `AccessPath::Auto` resolves to on
    /// this backend: copy on memfd, window elsewhere.
    pub fn on_default_path(&self) -> bool {
        self.is_copy() == (self.opts.backend == Backend::Memfd)
    }
    /// Whether a secret of `len` bytes takes the window when accessed: the
    /// window path, or the copy path's fallback for secrets larger than the
    /// scratch buffer (pooled secrets that fit a slot never do).
    pub fn window_for(&self, len: usize) -> bool {
        if self.is_window() {
            return true;
        }
        if self.is_pooled() && len <= securememory::POOL_MAX_SLOT {
            return false;
        }
        len > securememory::scratch_capacity()
    }
}

/// Whether `memfd_secret` works here; if not, prints a loud `SKIPPED:` line
/// naming `what` and returns `false`.
pub fn memfd_secret_or_skip(what: &str) -> bool {
    available_or_skip(what, "memfd_secret is", securememory::memfd_secret_status())
}

/// Whether memory protection keys work here; if not, prints a loud
/// `SKIPPED:` line naming `what` and returns `false`.
pub fn protection_keys_or_skip(what: &str) -> bool {
    available_or_skip(
        what,
        "protection keys are",
        securememory::protection_keys_status(),
    )
}

/// `true` for `Ok`; for `Err(why)`, a loud `SKIPPED:` line saying that
/// `feature` is unavailable and why, and `false`.
fn available_or_skip(what: &str, feature: &str, status: Result<(), String>) -> bool {
    match status {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED: {what}: {feature} unavailable on this machine: {why}");
            false
        }
    }
}

/// Every valid configuration: the three backends, the three layouts (pooled
/// is memfd only, with `PROT_NONE` pages or a protection key) and, on
/// memfd, both access paths. `MemfdSecret` ones are
/// left out, with a loud `SKIPPED:` line, where the kernel refuses
/// `memfd_secret`.
pub fn all() -> Vec<Config> {
    use AccessPath::{Copy, Window};
    use Backend::{Anonymous, Memfd, MemfdSecret};
    use Layout::{Guarded, Page, Pooled};
    let table: [(&'static str, Backend, Layout, AccessPath); 10] = [
        ("memfd-page-copy", Memfd, Page, Copy),
        ("memfd-page-window", Memfd, Page, Window),
        ("memfd-guarded-copy", Memfd, Guarded, Copy),
        ("memfd-guarded-window", Memfd, Guarded, Window),
        ("memfd-pooled-copy", Memfd, Pooled, Copy),
        ("memfd-pooled-pkey-copy", Memfd, Pooled, Copy),
        ("anonymous-page-window", Anonymous, Page, Window),
        ("anonymous-guarded-window", Anonymous, Guarded, Window),
        ("memfdsecret-page-window", MemfdSecret, Page, Window),
        ("memfdsecret-guarded-window", MemfdSecret, Guarded, Window),
    ];
    let secret_ok = memfd_secret_or_skip("Backend::MemfdSecret configurations");
    let pkey_ok = protection_keys_or_skip("the PoolProtection::ProtectionKey configuration");
    table
        .into_iter()
        .filter(|&(_, b, _, _)| b != MemfdSecret || secret_ok)
        .filter(|&(name, ..)| !name.contains("pkey") || pkey_ok)
        .map(|(name, backend, layout, access)| Config {
            name,
            opts: Options::default()
                .backend(backend)
                .layout(layout)
                .access(access)
                .pool_protection(if name.contains("pkey") {
                    PoolProtection::ProtectionKey
                } else {
                    PoolProtection::ProtNone
                }),
        })
        .collect()
}

/// The sealed layout (`Layout::Sealed`: memfd backend, copy path).
pub fn sealed() -> Config {
    Config {
        name: "memfd-sealed-copy",
        opts: Options::default().layout(Layout::Sealed),
    }
}

/// [`all`] and the sealed layout: for the table-driven tests whose checks
/// hold for it as they are (the model, panic injection); the others
/// check pages and windows, which a sealed secret does not have.
pub fn all_with_sealed() -> Vec<Config> {
    let mut v = all();
    v.push(sealed());
    v
}

/// The configurations `keep` selects.
pub fn select(keep: impl Fn(&Config) -> bool) -> Vec<Config> {
    all().into_iter().filter(|c| keep(c)).collect()
}

/// One configuration per backend x layout, on the backend's default access
/// path (see [`Config::on_default_path`]).
pub fn default_path_configs() -> Vec<Config> {
    select(Config::on_default_path)
}

/// The configurations whose accesses go through an `mprotect` window.
pub fn window_configs() -> Vec<Config> {
    select(Config::is_window)
}

/// The configurations on the copy path (`pread` of the memory file).
pub fn copy_configs() -> Vec<Config> {
    select(Config::is_copy)
}

/// The configuration named `name`.
pub fn by_name(name: &str) -> Config {
    all_with_sealed()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no configuration named {name}"))
}

/// In a re-executed child whose role is a configuration name: that configuration.
pub fn child_config() -> Option<Config> {
    super::child::role().map(|n| by_name(&n))
}

/// A memfd factory with `layout` on the copy path (the scratch tests' subject).
pub fn memfd_copy(layout: Layout) -> ProtectedFactory {
    ProtectedFactory::new(
        Options::default()
            .backend(Backend::Memfd)
            .layout(layout)
            .access(AccessPath::Copy),
    )
    .unwrap()
}

/// Guarded memfd secrets on the copy path.
pub fn guarded_copy() -> ProtectedFactory {
    memfd_copy(Layout::Guarded)
}

/// Page-layout memfd secrets on the copy path.
pub fn page_copy() -> ProtectedFactory {
    memfd_copy(Layout::Page)
}
