//! The smoke test over every configuration, Linux-only ones included.
#![cfg(target_os = "linux")]

use securememory::*;
use std::io::Read;

#[test]
fn smoke_all_layouts() {
    for opts in [
        Options::default(),
        Options::default().layout(Layout::Guarded),
        Options::default().layout(Layout::Pooled),
        Options::default().backend(Backend::Anonymous),
        Options::default()
            .backend(Backend::Anonymous)
            .layout(Layout::Guarded),
        Options::default().backend(Backend::MemfdSecret),
        Options::default()
            .backend(Backend::MemfdSecret)
            .layout(Layout::Guarded),
    ] {
        let f = ProtectedFactory::new(opts).unwrap();
        let mut src = *b"0123456789abcdef0123456789abcdef";
        let s = f.new(&mut src).unwrap();
        assert_eq!(src, [0; 32]);
        assert_eq!(
            s.with_bytes(|b| b.to_vec()).unwrap(),
            b"0123456789abcdef0123456789abcdef",
            "{opts:?}"
        );
        assert!(!s.is_readable_now().unwrap(), "{opts:?}");
        let mut out = Vec::new();
        s.reader().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"0123456789abcdef0123456789abcdef");
        let n = s
            .with_bytes(|_| s.with_bytes(|b| b.len()).unwrap())
            .unwrap();
        assert_eq!(n, 32);
        assert!(matches!(
            s.with_bytes(|_| s.close()).unwrap(),
            Err(Error::CloseWithinAccess)
        ));
        s.close().unwrap();
        s.close().unwrap();
        assert!(matches!(s.with_bytes(|_| ()), Err(Error::Closed)));
        println!("{opts:?}: {s:?}");
    }
}

/// How `pool_protection` resolves: `ProtNone` by default, `Auto` to the key
/// only where keys work and the CPU is not affected by Meltdown, an explicit
/// key refused off the pooled layout (and where keys do not work).
#[test]
fn pool_protection_resolves_as_documented() {
    let pooled = Options::default().layout(Layout::Pooled);
    let resolved = |o: Options| ProtectedFactory::new(o).map(|f| f.options().pool_protection);
    assert_eq!(resolved(pooled).unwrap(), PoolProtection::ProtNone);
    let keys = protection_keys_status().is_ok();
    let auto_wants = if keys && keys_resist_speculation() {
        PoolProtection::ProtectionKey
    } else {
        PoolProtection::ProtNone
    };
    assert_eq!(
        resolved(pooled.pool_protection(PoolProtection::Auto)).unwrap(),
        auto_wants
    );
    assert_eq!(
        resolved(Options::default().pool_protection(PoolProtection::Auto)).unwrap(),
        PoolProtection::ProtNone,
        "Auto off the pooled layout"
    );
    let off_pool = resolved(Options::default().pool_protection(PoolProtection::ProtectionKey));
    assert!(
        matches!(&off_pool, Err(Error::Unsupported(m)) if m.contains("Layout::Pooled")),
        "{off_pool:?}"
    );
    let explicit = resolved(pooled.pool_protection(PoolProtection::ProtectionKey));
    if keys {
        assert_eq!(explicit.unwrap(), PoolProtection::ProtectionKey);
    } else {
        eprintln!("SKIPPED: explicit ProtectionKey pool: no protection keys here");
        assert!(matches!(explicit, Err(Error::Unsupported(_))));
    }
}
