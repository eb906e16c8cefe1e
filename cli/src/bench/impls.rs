//! The implementations compared, by the name each row reports in `"impl"`
//! (shared with the criterion bench).

use securememory::{Backend, Layout, Options, PoolProtection, ProtectedFactory};

/// One implementation: a name and the factory that makes its secrets.
pub struct Impl {
    pub name: &'static str,
    pub factory: ProtectedFactory,
}

/// An implementation this machine should run but whose factory was refused.
#[derive(Debug, thiserror::Error)]
#[error("cannot make the {name} factory: {source}")]
pub struct FactoryError {
    pub name: &'static str,
    pub source: securememory::Error,
}

fn with(name: &'static str, opts: Options) -> Result<Impl, FactoryError> {
    let factory = ProtectedFactory::new(opts).map_err(|source| FactoryError { name, source })?;
    Ok(Impl { name, factory })
}

/// Every implementation this machine can run, in table order:
/// - `protected`: `ProtectedFactory::default()` (memfd, one page per secret, copy path);
/// - `guarded`: guard pages and a canary (`Layout::Guarded`);
/// - `pooled`: small secrets packed into shared `PROT_NONE` pages (`Layout::Pooled`);
/// - `pooled-pkey`: the same pool with `PoolProtection::ProtectionKey`, where
///   the machine has protection keys (a note says so otherwise);
/// - `anonymous-window`: a reference, Asherah Go's exact design (private
///   anonymous pages, an `mprotect` window per access);
/// - `memfd_secret`: a reference, `memfd_secret` pages read through a
///   window, where the kernel allows it (a note says so otherwise);
/// - `sealed`: encrypted at rest (`Layout::Sealed`), the key in a
///   `PROT_NONE` pool slot; `sealed-pkey`: the key in a slot behind a
///   protection key, where the machine has them (the pooled-pkey note
///   says so otherwise).
pub fn available(notes: &mut Vec<String>) -> Result<Vec<Impl>, FactoryError> {
    let mut impls = vec![
        Impl {
            name: "protected",
            factory: ProtectedFactory::default(),
        },
        with("guarded", Options::default().layout(Layout::Guarded))?,
        with("pooled", Options::default().layout(Layout::Pooled))?,
    ];
    match securememory::protection_keys_status() {
        Ok(()) => impls.push(with(
            "pooled-pkey",
            Options::default()
                .layout(Layout::Pooled)
                .pool_protection(PoolProtection::ProtectionKey),
        )?),
        Err(why) => notes.push(format!(
            "!!! pooled-pkey rows SKIPPED: protection keys are not available here: {why}"
        )),
    }
    impls.push(with(
        "anonymous-window",
        Options::default().backend(Backend::Anonymous),
    )?);
    match securememory::memfd_secret_status() {
        Ok(()) => impls.push(with(
            "memfd_secret",
            Options::default().backend(Backend::MemfdSecret),
        )?),
        Err(why) => notes.push(format!(
            "!!! memfd_secret rows SKIPPED: memfd_secret is not available here: {why}"
        )),
    }
    impls.push(with("sealed", Options::default().layout(Layout::Sealed))?);
    if securememory::protection_keys_status().is_ok() {
        impls.push(with(
            "sealed-pkey",
            Options::default()
                .layout(Layout::Sealed)
                .pool_protection(PoolProtection::ProtectionKey),
        )?);
    }
    Ok(impls)
}
