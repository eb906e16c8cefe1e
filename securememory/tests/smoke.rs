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
