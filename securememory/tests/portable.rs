//! What holds on every platform, through the public API alone: the default
//! factory, the anonymous backend in the page and guarded layouts (create,
//! read, nested read, reader, close, closed), and the refusal of each
//! Linux-only option elsewhere with `Error::Unsupported` naming the system.
//! It is the subset CI also runs on Windows (under wine); the Linux-only
//! guarantees have their own tests.

use std::io::Read;

use securememory::*;

const BYTES: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn round_trip(factory: &ProtectedFactory) {
    let mut src = *BYTES;
    let s = factory.new(&mut src).unwrap();
    assert_eq!(src, [0; 32], "the source is wiped");
    assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), BYTES);
    let nested = s.with_bytes(|_| s.with_bytes(|b| b.len()).unwrap());
    assert_eq!(nested.unwrap(), 32);
    let mut out = Vec::new();
    s.reader().read_to_end(&mut out).unwrap();
    assert_eq!(out, BYTES);
    // Where the platform can say (not yet on macOS and FreeBSD), the pages
    // are unreadable at rest.
    if cfg!(any(target_os = "linux", windows)) {
        assert!(!s.is_readable_now().unwrap(), "readable at rest");
        assert!(
            s.with_bytes(|_| s.is_readable_now().unwrap()).unwrap()
                || s.access_path() == AccessPath::Copy
        );
    }
    s.close().unwrap();
    s.close().unwrap();
    assert!(matches!(s.with_bytes(|_| ()), Err(Error::Closed)));
}

#[test]
fn default_factory_works() {
    round_trip(&ProtectedFactory::default());
    let random = ProtectedFactory::default().create_random(32).unwrap();
    assert_eq!(random.with_bytes(|b| b.len()).unwrap(), 32);
}

#[test]
fn anonymous_page_and_guarded_work() {
    for layout in [Layout::Page, Layout::Guarded] {
        let opts = Options::default()
            .backend(Backend::Anonymous)
            .layout(layout);
        let f = ProtectedFactory::new(opts).unwrap();
        assert_eq!(f.options().access, AccessPath::Window);
        round_trip(&f);
    }
}

#[test]
fn auto_resolves_to_what_the_platform_has() {
    let b = Backend::Auto.resolve();
    if cfg!(target_os = "linux") {
        assert!(matches!(b, Backend::Memfd | Backend::MemfdSecret));
    } else {
        assert_eq!(b, Backend::Anonymous);
    }
}

#[cfg(not(target_os = "linux"))]
#[test]
fn linux_only_options_are_refused_naming_the_platform() {
    let os = std::env::consts::OS;
    let refused = [
        Options::default().backend(Backend::Memfd),
        Options::default().backend(Backend::MemfdSecret),
        Options::default().layout(Layout::Pooled),
        Options::default().layout(Layout::Sealed),
        Options::default().access(AccessPath::Copy),
        Options::default()
            .layout(Layout::Pooled)
            .pool_protection(PoolProtection::ProtectionKey),
    ];
    for opts in refused {
        match ProtectedFactory::new(opts) {
            Err(Error::Unsupported(why)) => assert!(why.contains(os), "{why}"),
            other => panic!("{opts:?}: {other:?}"),
        }
    }
}

#[cfg(windows)]
#[test]
fn windows_refuses_a_process_core_limit() {
    let opts = Options::default().core_dumps(CoreDumps::DisableForProcess);
    assert!(matches!(
        ProtectedFactory::new(opts),
        Err(Error::Unsupported(_))
    ));
}

/// No POSIX signals on Windows: the signal purge is refused naming the
/// system, and no signal reports the handler.
#[cfg(windows)]
#[test]
fn windows_refuses_purge_on_signals() {
    match securememory::purge_on_signals(&securememory::DEFAULT_PURGE_SIGNALS) {
        Err(Error::Unsupported(why)) => assert!(why.contains("windows"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!securememory::purges_on_signal(2));
}
