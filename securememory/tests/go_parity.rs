//! Every behaviour of Asherah Go's `protectedmemory` tests, in every factory
//! configuration it applies to (memfd / anonymous / memfd_secret backends;
//! page / guarded / pooled layouts; copy and window access paths).
//!
//! Tests that read the process-wide counters (`stats()`, `/proc/self/maps`)
//! run in a re-executed child of their own (`child_test!`), where nothing
//! else runs; the others run in parallel threads as usual.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;
mod support_parity;

use std::io::{self, Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::configs::{all, Config};
use proptest::prelude::*;
use securememory::{
    stats, system, AccessPath, Backend, Error, ProtectedFactory, Secret, SecretFactory,
};
use support_parity::{assert_no_leak, pattern, warm_up, Footprint, TOPSECRET};

/// Lengths around the slot, scratch-buffer (8 KiB) and page boundaries.
const LENGTHS: [usize; 13] = [
    1, 16, 31, 32, 33, 1024, 1025, 4095, 4096, 4097, 8192, 8193, 10000,
];

fn page() -> u64 {
    system::report().page_size as u64
}

/// Bytes locked for one secret of `len` bytes in `cfg` (pages of its own).
fn locked_for(cfg: &Config, len: usize) -> u64 {
    let need = len as u64 + if cfg.is_guarded() { 16 } else { 0 };
    need.div_ceil(page()) * page()
}

fn read_all(s: &Secret) -> Vec<u8> {
    s.with_bytes(|b| b.to_vec()).unwrap()
}

child_test! {
    /// Go: `TestProtectedMemorySecretFactory_Metrics` / the allocated and
    /// in-use counters: `allocated` counts every creation (new, random,
    /// reader) and never goes down; `in_use` goes up on creation and down on
    /// close (once, however often close is called) and on drop; the locked
    /// bytes follow.
    fn counters_move_on_create_and_close() {
        for cfg in all() {
            let name = cfg.name;
            warm_up(&cfg, 32);
            let f = cfg.factory();
            // A closed secret's page is kept ready (locked) until given back:
            // given back before each figure of the locked bytes.
            securememory::release_ready_pages();
            let before = stats();
            let one = if cfg.is_pooled() { 0 } else { locked_for(&cfg, 32) };

            let a = f.create_random(32).unwrap();
            let s = stats();
            assert_eq!(s.allocated, before.allocated + 1, "{name}: allocated after create_random");
            assert_eq!(s.in_use, before.in_use + 1, "{name}: in_use after create_random");
            assert_eq!(s.bytes_locked, before.bytes_locked + one, "{name}: bytes_locked");

            let b = f.new(&mut pattern(32, 1)).unwrap();
            let c = f.from_reader(&mut Cursor::new(pattern(32, 2)), 32).unwrap();
            let s = stats();
            assert_eq!(s.allocated, before.allocated + 3, "{name}: allocated after new + from_reader");
            assert_eq!(s.in_use, before.in_use + 3, "{name}: in_use after new + from_reader");
            assert_eq!(s.bytes_locked, before.bytes_locked + 3 * one, "{name}: bytes_locked");

            a.close().unwrap();
            securememory::release_ready_pages();
            let s = stats();
            assert_eq!(s.in_use, before.in_use + 2, "{name}: in_use after close");
            assert_eq!(s.allocated, before.allocated + 3, "{name}: allocated never goes down");
            assert_eq!(s.bytes_locked, before.bytes_locked + 2 * one, "{name}: bytes_locked after close");

            // A second close is harmless and counts nothing.
            a.close().unwrap();
            assert_eq!(stats().in_use, before.in_use + 2, "{name}: second close moved in_use");

            drop(b);
            assert_eq!(stats().in_use, before.in_use + 1, "{name}: drop did not close");
            c.close().unwrap();
            drop(c);
            securememory::release_ready_pages();
            let s = stats();
            assert_eq!(s.in_use, before.in_use, "{name}: in_use after all closed");
            assert_eq!(s.allocated, before.allocated + 3, "{name}");
            assert_eq!(s.bytes_locked, before.bytes_locked, "{name}: bytes_locked after all closed");
        }
    }
}

child_test! {
    /// Dropping a secret closes it: it leaves the in-use count, its locked
    /// bytes are given back and its mapping is gone.
    fn drop_closes_the_secret() {
        for cfg in all() {
            warm_up(&cfg, 100);
            let base = Footprint::now();
            let s = cfg.factory().new(&mut pattern(100, 3)).unwrap();
            assert_eq!(stats().in_use, base.in_use + 1, "{}", cfg.name);
            drop(s);
            let mut want = base.clone();
            want.allocated += 1;
            want.assert_unchanged(&format!("{}: after drop", cfg.name));
        }
    }
}

/// Go: `TestProtectedMemorySecret_WithBytes`: the closure sees exactly the
/// bytes given to `new`, and its return value is passed through.
#[test]
fn with_bytes_sees_the_exact_bytes() {
    for cfg in all() {
        let f = cfg.factory();
        for len in LENGTHS {
            let want = pattern(len, 7);
            let s = f.new(&mut want.clone()).unwrap();
            assert_eq!(s.len(), len, "{} len {len}", cfg.name);
            assert_eq!(read_all(&s), want, "{} len {len}", cfg.name);
            let sum = s
                .with_bytes(|b| b.iter().map(|&x| x as u64).sum::<u64>())
                .unwrap();
            assert_eq!(
                sum,
                want.iter().map(|&x| x as u64).sum::<u64>(),
                "{} len {len}",
                cfg.name
            );
            assert!(
                !s.is_readable_now().unwrap(),
                "{} len {len}: readable at rest",
                cfg.name
            );
        }
    }
}

#[derive(Debug)]
enum AppError {
    Lib(Error),
    Mine(&'static str),
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Lib(e)
    }
}

/// Go: `TestProtectedMemorySecret_WithBytesFunc`: the closure sees the exact
/// bytes, its `Ok` comes back as is, its own error comes back as is, and the
/// library's errors convert into the caller's error type.
#[test]
fn with_bytes_func_sees_the_exact_bytes() {
    for cfg in all() {
        let f = cfg.factory();
        for len in [1, 32, 4097, 10000] {
            let want = pattern(len, 9);
            let s = f.new(&mut want.clone()).unwrap();
            let got: Vec<u8> = s.with_bytes_func(|b| Ok::<_, Error>(b.to_vec())).unwrap();
            assert_eq!(got, want, "{} len {len}", cfg.name);
            let r: Result<(), AppError> = s.with_bytes_func(|b| {
                assert_eq!(b, &want[..]);
                Err(AppError::Mine("refused"))
            });
            assert!(
                matches!(r, Err(AppError::Mine("refused"))),
                "{}: {r:?}",
                cfg.name
            );
            s.close().unwrap();
            let r: Result<(), AppError> = s.with_bytes_func(|_| panic!("closure ran after close"));
            assert!(
                matches!(r, Err(AppError::Lib(Error::Closed))),
                "{}: {r:?}",
                cfg.name
            );
        }
    }
}

/// Go: `TestProtectedMemorySecret_IsClosed`, `_Close`,
/// `_WithBytesClosed`, `_WithBytesFuncClosed`: after close every access
/// fails with `Closed` (the closure never runs), `is_closed` says so, and a
/// second close is harmless.
#[test]
fn access_after_close_fails_with_closed() {
    for cfg in all() {
        for len in [32, 10000] {
            let s = cfg.factory().create_random(len).unwrap();
            assert!(!s.is_closed(), "{}", cfg.name);
            s.close().unwrap();
            assert!(s.is_closed(), "{}", cfg.name);
            let r = s.with_bytes(|_| panic!("closure ran after close"));
            assert!(matches!(r, Err(Error::Closed)), "{}: {r:?}", cfg.name);
            let r: Result<(), Error> = s.with_bytes_func(|_| panic!("closure ran after close"));
            assert!(matches!(r, Err(Error::Closed)), "{}: {r:?}", cfg.name);
            s.close().unwrap();
            assert!(s.is_closed(), "{}", cfg.name);
            assert!(!s.is_readable_now().unwrap(), "{}", cfg.name);
            let e = s.reader().read(&mut [0u8; 8]).unwrap_err();
            assert_closed_io(&e, cfg.name);
        }
    }
}

/// Go: `TestProtectedMemorySecretFactory_New` wipes the source: the caller's
/// buffer is all zeros once the secret exists, and the secret holds the bytes.
#[test]
fn new_wipes_the_source() {
    for cfg in all() {
        for len in [1, 32, 1024, 1025, 10000] {
            let want = pattern(len, 11);
            let mut src = want.clone();
            let s = cfg.factory().new(&mut src).unwrap();
            assert!(
                src.iter().all(|&b| b == 0),
                "{} len {len}: source not wiped",
                cfg.name
            );
            assert_eq!(read_all(&s), want, "{} len {len}", cfg.name);
        }
    }
}

/// Go: `TestProtectedMemorySecretFactory_CreateRandom`: the requested length,
/// and a different value each time.
#[test]
fn create_random_gives_the_length_and_fresh_values() {
    for cfg in all() {
        let f = cfg.factory();
        for len in LENGTHS {
            let a = f.create_random(len).unwrap();
            let b = f.create_random(len).unwrap();
            assert_eq!(a.len(), len, "{}", cfg.name);
            assert_eq!(a.with_bytes(|x| x.len()).unwrap(), len, "{}", cfg.name);
            let mut through_reader = Vec::new();
            a.reader().read_to_end(&mut through_reader).unwrap();
            assert_eq!(through_reader, read_all(&a), "{} len {len}", cfg.name);
            if len >= 16 {
                // 2^-128 odds of a false failure.
                assert_ne!(
                    read_all(&a),
                    read_all(&b),
                    "{} len {len}: same random value twice",
                    cfg.name
                );
                assert!(
                    read_all(&a).iter().any(|&x| x != 0),
                    "{} len {len}: all zeros",
                    cfg.name
                );
            }
            assert!(!a.is_readable_now().unwrap(), "{} len {len}", cfg.name);
        }
    }
}

/// Go: size 0 is an error from every constructor.
#[test]
fn size_zero_is_invalid() {
    for cfg in all() {
        let f = cfg.factory();
        let results = [
            f.new(&mut []),
            f.create_random(0),
            f.from_reader(&mut Cursor::new(vec![1u8; 8]), 0),
        ];
        for r in results {
            assert!(
                matches!(r, Err(Error::InvalidSize { size: 0, .. })),
                "{}: {:?}",
                cfg.name,
                r.map(|s| s.len())
            );
        }
    }
}

child_test! {
    /// Go: an impossible size is an error, and leaves nothing behind. Sizes
    /// past `isize::MAX / 4` are refused before any system call
    /// (`InvalidSize`), and so are sizes past the machine's physical memory.
    /// Without `CAP_IPC_LOCK`, a size within RAM but past the memlock limit
    /// is refused by the library's own budget (`LockFailed`).
    fn impossible_sizes_are_typed_errors() {
        let cap = system::report().cap_ipc_lock;
        for cfg in all() {
            warm_up(&cfg, 32);
            let f = cfg.factory();
            let base = Footprint::now();
            for size in [usize::MAX, isize::MAX as usize, isize::MAX as usize / 4 + 1] {
                let r = f.create_random(size);
                assert!(
                    matches!(&r, Err(Error::InvalidSize { size: s, .. }) if *s == size),
                    "{} size {size}: {:?}",
                    cfg.name,
                    r.map(|s| s.len())
                );
            }
            // Past the machine's physical memory: locked memory cannot be
            // swapped, so the library refuses before mmap (with CAP_IPC_LOCK
            // no memlock limit would stop it, and the OOM killer would).
            for size in [isize::MAX as usize / 4, 1usize << 50, 1usize << 40] {
                // Twice: a failure must not poison the next attempt.
                for _ in 0..2 {
                    let r = f.create_random(size);
                    let e = r.err().unwrap_or_else(|| panic!("{}: {size} bytes were granted", cfg.name));
                    assert!(
                        matches!(&e, Error::InvalidSize { size: s, reason } if *s == size && reason.contains("physical memory")),
                        "{} size {size}: {e:?}",
                        cfg.name
                    );
                    base.assert_unchanged(&format!("{}: failed creation of {size} bytes", cfg.name));
                }
            }
            // Within RAM but past the memlock limit (without CAP_IPC_LOCK):
            // the library's budget refuses first.
            if !cap {
                let r = f.create_random(1 << 30);
                assert!(matches!(r, Err(Error::LockFailed { .. })), "{}: {:?}", cfg.name, r.map(|s| s.len()));
                base.assert_unchanged(&format!("{}: 1 GiB refused by the budget", cfg.name));
            }
            // And the factory still works.
            let s = f.new(&mut pattern(32, 1)).unwrap();
            assert_eq!(read_all(&s), pattern(32, 1), "{}", cfg.name);
        }
    }
}

/// A reader that gives `n` bytes and then fails or ends.
struct Short {
    left: usize,
    error: Option<io::ErrorKind>,
}

impl Read for Short {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return match self.error {
                Some(kind) => Err(io::Error::new(kind, "reader broke")),
                None => Ok(0),
            };
        }
        let n = buf.len().min(self.left).min(7);
        buf[..n].fill(0xA5);
        self.left -= n;
        Ok(n)
    }
}

/// `from_reader` takes exactly `n` bytes from the reader and leaves the rest.
#[test]
fn from_reader_reads_exactly_n_bytes() {
    for cfg in all() {
        for len in [1, 32, 1024, 1025, 10000] {
            let input = pattern(len + 5, 13);
            let mut cur = Cursor::new(input.clone());
            let s = cfg.factory().from_reader(&mut cur, len).unwrap();
            assert_eq!(
                cur.position(),
                len as u64,
                "{} len {len}: read too much or too little",
                cfg.name
            );
            assert_eq!(read_all(&s), input[..len], "{} len {len}", cfg.name);
        }
    }
}

child_test! {
    /// A reader that ends early or fails gives `ReadFailed` and leaks nothing.
    fn from_reader_short_or_failing_is_read_failed() {
        for cfg in all() {
            for len in [32, 10000] {
                warm_up(&cfg, len);
                let f = cfg.factory();
                let base = Footprint::now();
                let r = f.from_reader(&mut Short { left: len - 1, error: None }, len);
                match r {
                    Err(Error::ReadFailed(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{}", cfg.name),
                    other => panic!("{} len {len}: short reader gave {:?}", cfg.name, other.map(|s| s.len())),
                }
                base.assert_unchanged(&format!("{} len {len}: short reader", cfg.name));
                let r = f.from_reader(&mut Short { left: 3, error: Some(io::ErrorKind::PermissionDenied) }, len);
                match r {
                    Err(Error::ReadFailed(e)) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{}", cfg.name),
                    other => panic!("{} len {len}: failing reader gave {:?}", cfg.name, other.map(|s| s.len())),
                }
                base.assert_unchanged(&format!("{} len {len}: failing reader", cfg.name));
            }
        }
    }
}

fn assert_closed_io(e: &io::Error, what: &str) {
    let inner = e
        .get_ref()
        .unwrap_or_else(|| panic!("{what}: io::Error without inner error: {e:?}"));
    let lib = inner
        .downcast_ref::<Error>()
        .unwrap_or_else(|| panic!("{what}: inner error is not securememory::Error: {inner:?}"));
    assert!(matches!(lib, Error::Closed), "{what}: {lib:?}");
}

/// Go: `TestProtectedMemorySecret_NewReader`, `_ReaderReadAll`,
/// `_ReaderReadClosed`: `read_to_end` gives the bytes; small reads continue
/// where the last ended; at the end `read` gives `Ok(0)` every time (Go's
/// `io.EOF`); a read on a closed secret is an `io::Error` wrapping `Closed`.
#[test]
fn reader_behaves_like_gos() {
    for cfg in all() {
        for len in [1, 10, 32, 1024, 1025, 10000] {
            let want = pattern(len, 17);
            let s = cfg.factory().new(&mut want.clone()).unwrap();

            let mut all = Vec::new();
            assert_eq!(
                s.reader().read_to_end(&mut all).unwrap(),
                len,
                "{}",
                cfg.name
            );
            assert_eq!(all, want, "{} len {len}", cfg.name);

            let mut r = s.reader();
            let mut got = Vec::new();
            let mut buf = [0u8; 4];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                assert!(n <= 4);
                assert_eq!(
                    n,
                    4.min(len - got.len()),
                    "{} len {len}: short read before the end",
                    cfg.name
                );
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, want, "{} len {len}: 4-byte reads", cfg.name);
            for _ in 0..3 {
                assert_eq!(
                    r.read(&mut buf).unwrap(),
                    0,
                    "{}: EOF must repeat",
                    cfg.name
                );
            }
            assert_eq!(
                s.reader().read(&mut []).unwrap(),
                0,
                "{}: empty buffer",
                cfg.name
            );

            // A reader made before close, read after it.
            let mut early = s.reader();
            let mut first = [0u8; 1];
            early.read_exact(&mut first).unwrap();
            assert_eq!(first[0], want[0]);
            s.close().unwrap();
            assert_closed_io(&early.read(&mut buf).unwrap_err(), cfg.name);
            assert_closed_io(&s.reader().read(&mut buf).unwrap_err(), cfg.name);
            let e = s.reader().read_to_end(&mut Vec::new()).unwrap_err();
            assert_closed_io(&e, cfg.name);
        }
    }
}

/// `Debug` of a secret and of its reader shows the length and state and
/// never a byte of the secret, open or closed.
#[test]
fn debug_shows_length_and_state_never_bytes() {
    for cfg in all() {
        let s = cfg.factory().new(&mut TOPSECRET.to_vec()).unwrap();
        let mut r = s.reader();
        r.read_exact(&mut [0u8; 4]).unwrap();
        for text in [
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{r:?}"),
            format!("{r:#?}"),
        ] {
            assert!(text.contains("20"), "{}: length missing: {text}", cfg.name);
            assert!(
                text.contains("closed: false"),
                "{}: state missing: {text}",
                cfg.name
            );
            assert_no_leak(&text, TOPSECRET, cfg.name);
        }
        assert!(format!("{r:?}").contains("pos: 4"), "{}: {r:?}", cfg.name);
        // Inside an access, too.
        let inside = s.with_bytes(|_| format!("{s:?} {r:?}")).unwrap();
        assert_no_leak(&inside, TOPSECRET, cfg.name);
        s.close().unwrap();
        let text = format!("{s:?}");
        assert!(text.contains("closed: true"), "{}: {text}", cfg.name);
        assert_no_leak(&text, TOPSECRET, cfg.name);
        assert_no_leak(&format!("{:?}", s.reader()), TOPSECRET, cfg.name);
    }
}

/// Nested access to the same secret (and to another inside it) works at
/// every depth the library tracks; the window is shut once all have ended.
#[test]
fn nested_access_works() {
    for cfg in all() {
        for len in [32, 10000] {
            let want = pattern(len, 19);
            let f = cfg.factory();
            let s = f.new(&mut want.clone()).unwrap();
            let other = f.new(&mut pattern(len, 20)).unwrap();
            let seen = s
                .with_bytes(|outer| {
                    let inner = s.with_bytes(|b| b.to_vec()).unwrap();
                    let innermost: Vec<u8> = s
                        .with_bytes_func(|b| {
                            Ok::<_, Error>(s.with_bytes(|c| [b, c].concat()).unwrap())
                        })
                        .unwrap();
                    let mut via_reader = Vec::new();
                    s.reader().read_to_end(&mut via_reader).unwrap();
                    let o = other.with_bytes(|b| b.to_vec()).unwrap();
                    assert_eq!(
                        outer,
                        &want[..],
                        "{}: outer view changed by nested accesses",
                        cfg.name
                    );
                    (inner, innermost, via_reader, o)
                })
                .unwrap();
            assert_eq!(seen.0, want, "{}", cfg.name);
            assert_eq!(
                seen.1,
                [want.clone(), want.clone()].concat(),
                "{}",
                cfg.name
            );
            assert_eq!(seen.2, want, "{}", cfg.name);
            assert_eq!(seen.3, pattern(len, 20), "{}", cfg.name);
            assert!(
                !s.is_readable_now().unwrap(),
                "{}: readable after nested accesses",
                cfg.name
            );
            assert!(!other.is_readable_now().unwrap(), "{}", cfg.name);
        }
    }
}

/// The library tracks 32 nested accesses per thread; deeper is a typed error
/// (not a crash), and the secret is fine afterwards.
#[test]
fn nesting_deeper_than_tracked_is_an_error() {
    fn nest(s: &Secret, depth: usize) -> Result<usize, Error> {
        if depth == 0 {
            return Ok(0);
        }
        s.with_bytes(|b| nest(s, depth - 1).map(|d| d + b.len().min(1)))?
    }
    for cfg in all() {
        let s = cfg.factory().create_random(32).unwrap();
        assert_eq!(nest(&s, 32).unwrap(), 32, "{}", cfg.name);
        let r = nest(&s, 33);
        assert!(
            matches!(r, Err(Error::NestingTooDeep(32))),
            "{}: {r:?}",
            cfg.name
        );
        assert!(!s.is_readable_now().unwrap(), "{}", cfg.name);
        assert_eq!(s.with_bytes(|b| b.len()).unwrap(), 32, "{}", cfg.name);
        s.close().unwrap();
    }
}

/// A panic inside the closure ends the access on unwind: the window is shut
/// (`is_readable_now` is false), the thread is no longer inside an access
/// (close works, it is not `CloseWithinAccess`), and the secret stays usable.
#[test]
fn panic_in_closure_shuts_the_window_and_keeps_the_secret() {
    for cfg in all() {
        for len in [32, 10000] {
            let want = pattern(len, 23);
            let s = cfg.factory().new(&mut want.clone()).unwrap();
            let r = catch_unwind(AssertUnwindSafe(|| {
                s.with_bytes(|b| {
                    assert_eq!(b, &want[..]);
                    // The probe sees an open window (so it can see one left open).
                    let open = s.is_readable_now().unwrap();
                    assert_eq!(
                        open,
                        cfg.window_for(len),
                        "{} len {len}: window state inside",
                        cfg.name
                    );
                    panic!("deliberate panic inside with_bytes");
                })
            }));
            assert!(r.is_err(), "{}: the panic did not propagate", cfg.name);
            assert!(
                !s.is_readable_now().unwrap(),
                "{} len {len}: window left open by a panic",
                cfg.name
            );
            assert!(!s.is_closed(), "{}", cfg.name);
            assert_eq!(
                read_all(&s),
                want,
                "{} len {len}: unusable after a panic",
                cfg.name
            );

            // A panic in a nested access: the outer access keeps its view.
            let outer = s
                .with_bytes(|b| {
                    let inner = catch_unwind(AssertUnwindSafe(|| {
                        s.with_bytes(|_| panic!("deliberate nested panic")).unwrap();
                    }));
                    assert!(inner.is_err());
                    b.to_vec()
                })
                .unwrap();
            assert_eq!(outer, want, "{}", cfg.name);
            assert!(
                !s.is_readable_now().unwrap(),
                "{}: window left open by a nested panic",
                cfg.name
            );

            // with_bytes_func too.
            let r = catch_unwind(AssertUnwindSafe(|| {
                let _: Result<(), Error> =
                    s.with_bytes_func(|_| panic!("deliberate panic in with_bytes_func"));
            }));
            assert!(r.is_err());
            assert!(!s.is_readable_now().unwrap(), "{}", cfg.name);
            s.close().unwrap();
            assert!(s.is_closed());
        }
    }
}

/// `close` from inside an access of the same secret on the same thread
/// returns `CloseWithinAccess` (instead of waiting for itself); the secret
/// stays open and usable, and closes normally afterwards. Closing a
/// different secret from inside an access is fine.
#[test]
fn close_within_access_is_an_error_and_the_secret_stays_usable() {
    for cfg in all() {
        for len in [32, 10000] {
            let want = pattern(len, 29);
            let f = cfg.factory();
            let s = f.new(&mut want.clone()).unwrap();
            let other = f.create_random(len).unwrap();
            let r = s.with_bytes(|_| s.close()).unwrap();
            assert!(
                matches!(r, Err(Error::CloseWithinAccess)),
                "{}: {r:?}",
                cfg.name
            );
            let r = s
                .with_bytes(|_| s.with_bytes(|_| s.close()).unwrap())
                .unwrap();
            assert!(
                matches!(r, Err(Error::CloseWithinAccess)),
                "{} nested: {r:?}",
                cfg.name
            );
            let r: Result<(), Error> = s.with_bytes_func(|_| s.close());
            assert!(
                matches!(r, Err(Error::CloseWithinAccess)),
                "{} func: {r:?}",
                cfg.name
            );
            assert!(!s.is_closed(), "{}", cfg.name);
            assert_eq!(read_all(&s), want, "{}", cfg.name);

            s.with_bytes(|_| other.close()).unwrap().unwrap();
            assert!(other.is_closed(), "{}", cfg.name);
            assert!(!s.is_readable_now().unwrap(), "{}", cfg.name);
            s.close().unwrap();
            assert!(s.is_closed());
        }
    }
}

/// The secret reports the backend and access path it was made with, and is
/// `Send + Sync`: other threads read it.
#[test]
fn secret_reports_its_configuration_and_crosses_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    for cfg in all() {
        let s = cfg.factory().new(&mut pattern(64, 31)).unwrap();
        send_sync(&s);
        assert_eq!(s.backend(), cfg.backend(), "{}", cfg.name);
        assert_eq!(s.access_path(), cfg.opts.access, "{}", cfg.name);
        assert_ne!(s.access_path(), AccessPath::Auto);
        std::thread::scope(|t| {
            for _ in 0..2 {
                t.spawn(|| assert_eq!(read_all(&s), pattern(64, 31)));
            }
        });
        assert!(!s.is_empty());
    }
    let d = ProtectedFactory::default().create_random(8).unwrap();
    assert_eq!(
        (d.backend(), d.access_path()),
        (Backend::Memfd, AccessPath::Copy)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// For any bytes (up to past the scratch buffer) and any read size, the
    /// reader gives back exactly the input.
    #[test]
    fn reader_output_equals_input(
        data in proptest::collection::vec(any::<u8>(), 1..=9000),
        chunk in 1usize..=10000,
        which in any::<prop::sample::Index>(),
    ) {
        let configs = all();
        let cfg = &configs[which.index(configs.len())];
        let s = cfg.factory().new(&mut data.clone()).unwrap();
        let mut r = s.reader();
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            prop_assert!(n <= chunk);
            out.extend_from_slice(&buf[..n]);
        }
        prop_assert_eq!(r.read(&mut buf).unwrap(), 0);
        prop_assert_eq!(&out, &data, "{}", cfg.name);
        prop_assert!(!s.is_readable_now().unwrap());
    }
}
