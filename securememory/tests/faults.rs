//! Every failure of the system calls behind a secret, injected with
//! `test_hooks::fail_next`, surfaces as the right typed error and leaks
//! nothing: no secret counted in use, no byte counted locked, no change to
//! `VmLck` or to the mappings in `/proc/self/maps`; a failed `new` leaves
//! the caller's buffer as it was.
//!
//! Every test runs in a re-executed child of its own (`child_test!`), alone,
//! so that the process-wide figures move only by what it does. Faults are
//! per thread, so each is injected on the thread that makes the call.
//!
//! The creation sequence (`mem/region.rs`, `Region::create` and `map`), in
//! order; `FaultOp::X #n` is the `n`-th call of that operation (the `skip`
//! given to `fail_next`):
//!
//! | step | page | guarded | pooled (new chunk) |
//! | --- | --- | --- | --- |
//! | canary (`getrandom`) | - | Random #0 | - |
//! | reserve guard\|data\|guard | - | Mmap #0 | Mmap #0 |
//! | memfd: map the file range | Mmap #0 | Mmap #1 | Mmap #1 |
//! | anonymous: data pages | Mmap #0 | ProtectRead #0 (to read-write) | - |
//! | memfd_secret: create, size, map | MemfdSecret, Ftruncate, Mmap #0 | MemfdSecret, Ftruncate, Mmap #1 | - |
//! | mlock (not memfd_secret; memfd locks in its mmap call with `MAP_LOCKED`, checked before it) | Mlock #0 | Mlock #0 | Mlock #0 |
//! | shared (memfd, memfd_secret, pool chunk): MADV_DONTFORK, right after the map, inside the fork fence | Madvise #0 | Madvise #0 | Madvise #0 |
//! | MADV_DONTDUMP | Madvise #0 (anonymous), #1 (shared) | same | Madvise #1 |
//! | anonymous: MADV_WIPEONFORK | Madvise #1 | Madvise #1 | - |
//! | fill (`create_random`) | Random #0 | Random #1 | Random #0 (in scratch) |
//! | hide | ProtectNone #0 | ProtectNone #0 | ProtectNone #0 |
//! | pooled with a protection key: tag the chunk | - | - | PkeyMprotect #0 |
//! | pooled: place the bytes | - | - | Pwrite #0 (none with a protection key) |

#[macro_use]
mod common;
mod support_parity;

use std::io::{Cursor, Read};

use common::configs::{all, copy_configs, Config};
use common::library_error;
use common::procfs::{is_locked_at, perms_at};
use common::rlimit::memlock;
use securememory::test_hooks::{clear_faults, data_pages, fail_next, take_last_wiped, FaultOp};
use securememory::{
    stats, system, Backend, Error, LockPolicy, ProcessLimit, ProtectedFactory, Secret,
    SecretFactory, POOL_MAX_SLOT,
};
use support_parity::{pattern, warm_up, Footprint};

use libc::{EACCES, EAGAIN, EINVAL, EIO, EMFILE, ENOMEM, ENOSPC, ENOSYS, EPERM};

fn page() -> usize {
    system::report().page_size
}

fn round(n: usize) -> usize {
    n.div_ceil(page()) * page()
}

/// Whether a secret of `len` bytes goes into a pool slot.
fn slotted(cfg: &Config, len: usize) -> bool {
    cfg.is_pooled() && len <= POOL_MAX_SLOT
}

/// (data pages, whole mapping) in bytes of the region a creation of `len`
/// bytes maps: the secret's own, or a new pool chunk (16 data pages).
fn geometry(cfg: &Config, len: usize) -> (usize, usize) {
    if slotted(cfg, len) {
        (16 * page(), 18 * page())
    } else if cfg.is_guarded() {
        let d = round(len + 16);
        (d, d + 2 * page())
    } else {
        (round(len), round(len))
    }
}

#[derive(Clone, Copy, Debug)]
enum Ctor {
    New,
    Random,
    Reader,
}

/// Create a secret of `len` bytes with `how`; for `new`, check the caller's
/// buffer: wiped on success, untouched on failure.
fn create(f: &ProtectedFactory, how: Ctor, len: usize) -> Result<Secret, Error> {
    match how {
        Ctor::New => {
            let want = pattern(len, 5);
            let mut buf = want.clone();
            let r = f.new(&mut buf);
            match &r {
                Ok(_) => assert!(buf.iter().all(|&b| b == 0), "new did not wipe the source"),
                Err(e) => assert_eq!(buf, want, "a failed new ({e}) changed the caller's buffer"),
            }
            r
        }
        Ctor::Random => f.create_random(len),
        Ctor::Reader => f.from_reader(&mut Cursor::new(pattern(len, 6)), len),
    }
}

type Check = Box<dyn Fn(&Error) -> bool>;

/// One injected failure in the creation sequence.
struct Case {
    op: FaultOp,
    skip: u32,
    errno: i32,
    /// The call it hits.
    step: &'static str,
    check: Check,
}

fn case(op: FaultOp, skip: u32, errno: i32, step: &'static str, check: Check) -> Case {
    Case {
        op,
        skip,
        errno,
        step,
        check,
    }
}

fn map_failed(bytes: usize, errno: i32) -> Check {
    Box::new(
        move |e| matches!(e, Error::MapFailed { bytes: b, source } if *b == bytes && source.raw_os_error() == Some(errno)),
    )
}

fn lock_failed(requested: usize, errno: i32) -> Check {
    Box::new(move |e| {
        matches!(e, Error::LockFailed { report, source }
            if report.requested == requested as u64 && source.raw_os_error() == Some(errno))
    })
}

fn protect_failed(to: &'static str, errno: i32) -> Check {
    Box::new(
        move |e| matches!(e, Error::ProtectFailed { to: t, source } if *t == to && source.raw_os_error() == Some(errno)),
    )
}

fn advise_failed(advice: &'static str, errno: i32) -> Check {
    Box::new(
        move |e| matches!(e, Error::AdviseFailed { advice: a, source } if *a == advice && source.raw_os_error() == Some(errno)),
    )
}

/// Inject `c`, create a secret of `len` bytes with `how`, and check the
/// error and that nothing leaked.
fn expect_creation_fails(cfg: &Config, len: usize, how: Ctor, c: &Case) {
    let f = cfg.factory();
    let base = Footprint::now();
    fail_next(c.op, c.skip, c.errno);
    let r = create(&f, how, len);
    clear_faults();
    let what = format!(
        "{} len {len} {how:?}: {:?} #{} ({})",
        cfg.name, c.op, c.skip, c.step
    );
    match r {
        Ok(_) => panic!("{what}: creation succeeded despite the fault"),
        Err(e) => assert!((c.check)(&e), "{what}: unexpected error {e:?}"),
    }
    base.assert_unchanged(&what);
}

/// Every structural step of the creation of a secret of `len` bytes in `cfg`
/// (see the table at the top), with the error it must give.
fn creation_cases(cfg: &Config, len: usize) -> Vec<Case> {
    let (data, total) = geometry(cfg, len);
    let guard = cfg.is_guarded() || slotted(cfg, len);
    let g = guard as u32;
    let mut v = Vec::new();
    if guard {
        v.push(case(
            FaultOp::Mmap,
            0,
            ENOMEM,
            "mmap of the PROT_NONE reservation",
            map_failed(total, ENOMEM),
        ));
    }
    match cfg.backend() {
        Backend::Memfd => {
            v.push(case(
                FaultOp::Mmap,
                g,
                ENOMEM,
                "mmap of the memory file's range",
                map_failed(data, ENOMEM),
            ));
        }
        Backend::Anonymous if guard => v.push(case(
            FaultOp::ProtectRead,
            0,
            ENOMEM,
            "mprotect(READ|WRITE) of the data pages inside the reservation",
            protect_failed("read-write", ENOMEM),
        )),
        Backend::Anonymous => {
            v.push(case(
                FaultOp::Mmap,
                0,
                ENOMEM,
                "mmap of the private data pages",
                map_failed(data, ENOMEM),
            ));
        }
        Backend::MemfdSecret => {
            v.push(case(
                FaultOp::MemfdSecret,
                0,
                ENOSYS,
                "memfd_secret",
                Box::new(|e| matches!(e, Error::Unsupported(m) if m.contains("memfd_secret"))),
            ));
            v.push(case(
                FaultOp::Ftruncate,
                0,
                ENOSPC,
                "ftruncate of the memfd_secret file",
                map_failed(data, ENOSPC),
            ));
            v.push(case(
                FaultOp::Mmap,
                g,
                EINVAL,
                "mmap of the memfd_secret file",
                map_failed(data, EINVAL),
            ));
            v.push(case(
                FaultOp::Mmap,
                g,
                EAGAIN,
                "mmap of the memfd_secret file refused by the kernel's memlock charge",
                lock_failed(data, EAGAIN),
            ));
            // ENOMEM is not the memlock charge (that is EAGAIN): with no
            // limit explaining it, a plain MapFailed.
            v.push(case(
                FaultOp::Mmap,
                g,
                ENOMEM,
                "mmap of the memfd_secret file, out of memory",
                map_failed(data, ENOMEM),
            ));
        }
        other => panic!("unexpected backend {other:?}"),
    }
    if cfg.backend() != Backend::MemfdSecret {
        v.push(case(
            FaultOp::Mlock,
            0,
            ENOMEM,
            "mlock of the data pages",
            lock_failed(data, ENOMEM),
        ));
    }
    // Shared mappings get MADV_DONTFORK first (inside the fork fence, before
    // anything else); private ones MADV_WIPEONFORK after MADV_DONTDUMP.
    let shared = cfg.backend() != Backend::Anonymous || slotted(cfg, len);
    let (fork_advice, fork_nth, dump_nth) = if shared {
        ("MADV_DONTFORK", 0, 1)
    } else {
        ("MADV_WIPEONFORK", 1, 0)
    };
    v.push(case(
        FaultOp::Madvise,
        dump_nth,
        EINVAL,
        "madvise(MADV_DONTDUMP)",
        advise_failed("MADV_DONTDUMP", EINVAL),
    ));
    v.push(case(
        FaultOp::Madvise,
        fork_nth,
        EINVAL,
        "madvise of the fork advice",
        advise_failed(fork_advice, EINVAL),
    ));
    v.push(case(
        FaultOp::ProtectNone,
        0,
        EACCES,
        "mprotect(PROT_NONE) once the pages are filled",
        protect_failed("none", EACCES),
    ));
    if cfg.uses_key() && slotted(cfg, len) {
        v.push(case(
            FaultOp::PkeyMprotect,
            0,
            ENOSPC,
            "pkey_mprotect tagging the new chunk with the pool's key",
            protect_failed("read-write with a protection key", ENOSPC),
        ));
    }
    v
}

/// The length of the secrets a creation-fault test makes in `cfg`, and the
/// warm-up for it: for pooled, a *different* size class is warmed, so that
/// every creation needs a new chunk (no failed creation leaves one).
fn warm_for_creation(cfg: &Config, len: usize) {
    if slotted(cfg, len) {
        warm_up(cfg, 16);
    } else {
        warm_up(cfg, len);
    }
}

child_test! {
    /// mmap, memfd_secret, ftruncate, mprotect, mlock and madvise failing at
    /// each step of a creation, for every constructor and configuration.
    fn creation_fault_at_every_step_leaks_nothing() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        for cfg in all() {
            for len in [100, 10000] {
                warm_for_creation(&cfg, len);
                for c in creation_cases(&cfg, len) {
                    for how in [Ctor::New, Ctor::Random, Ctor::Reader] {
                        expect_creation_fails(&cfg, len, how, &c);
                    }
                }
                // The factory still works afterwards.
                let s = create(&cfg.factory(), Ctor::New, len).unwrap();
                assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), pattern(len, 5), "{}", cfg.name);
            }
        }
    }
}

child_test! {
    /// mlock refused (ENOMEM, EAGAIN, EPERM), or for memfd_secret the
    /// kernel's memlock charge at mmap (EAGAIN, EPERM): `LockFailed` whose report names the
    /// bytes requested, the soft and hard limits and what the library held
    /// locked before, and whose message says how to raise the limit (for
    /// EPERM, which the limit cannot explain here, that a filter denied
    /// it); the refusal is counted and nothing leaks.
    fn mlock_refusal_is_lock_failed_with_the_limits() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        let (soft, hard) = memlock();
        for cfg in all() {
            let len = 100;
            warm_for_creation(&cfg, len);
            let (data, _) = geometry(&cfg, len);
            let (op, skip) = match cfg.backend() {
                Backend::MemfdSecret => (FaultOp::Mmap, cfg.is_guarded() as u32),
                _ => (FaultOp::Mlock, 0),
            };
            // memfd_secret's memlock charge at mmap answers EAGAIN (or EPERM);
            // its ENOMEM is another limit (see hostile.rs).
            let errnos: &[i32] = match cfg.backend() {
                Backend::MemfdSecret => &[EAGAIN, EPERM],
                _ => &[ENOMEM, EAGAIN, EPERM],
            };
            for &errno in errnos {
                let f = cfg.factory();
                let base = Footprint::now();
                let before = stats();
                fail_next(op, skip, errno);
                let r = create(&f, Ctor::New, len);
                clear_faults();
                let what = format!("{} errno {errno}", cfg.name);
                let e = r.err().unwrap_or_else(|| panic!("{what}: created despite the refusal"));
                let Error::LockFailed { report, source } = &e else {
                    panic!("{what}: expected LockFailed, got {e:?}");
                };
                assert_eq!(source.raw_os_error(), Some(errno), "{what}");
                assert_eq!(report.requested, data as u64, "{what}: requested");
                assert_eq!((report.soft, report.hard), (soft, hard), "{what}: limits");
                assert_eq!(report.locked_by_library, before.bytes_locked, "{what}: locked_by_library");
                let msg = e.to_string();
                // EPERM while the limit allows locking (this test runs with
                // CAP_IPC_LOCK) is a filter's denial: no advice to raise it.
                let denied = errno == EPERM;
                assert_eq!(report.denied, denied, "{what}: denied");
                let needles: &[&str] = if denied {
                    &["seccomp", "a higher limit would not help"]
                } else {
                    &["RLIMIT_MEMLOCK", "ulimit -l", "LimitMEMLOCK=", "--ulimit memlock="]
                };
                for needle in needles.iter().copied().chain([data.to_string().as_str()]) {
                    assert!(msg.contains(needle), "{what}: message lacks {needle:?}: {msg}");
                }
                assert_eq!(stats().lock_refusals, before.lock_refusals + 1, "{what}: refusal not counted");
                base.assert_unchanged(&what);
            }
        }
    }
}

child_test! {
    /// With `LockPolicy::AllowUnlocked` a refused mlock is not an error: the
    /// secret is made unlocked, counted in `unlocked_allocations`, not in
    /// `bytes_locked` nor `VmLck`, and works; closing it leaves nothing.
    /// (memfd_secret pages are always locked by the kernel: not applicable.)
    fn mlock_refusal_with_allow_unlocked_goes_on_unlocked() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        for cfg in all().into_iter().filter(|c| c.backend() != Backend::MemfdSecret) {
            let len = 100;
            warm_for_creation(&cfg, len);
            let f = ProtectedFactory::new(cfg.opts.lock(LockPolicy::AllowUnlocked)).unwrap();
            let base = Footprint::now();
            let before = stats();
            fail_next(FaultOp::Mlock, 0, ENOMEM);
            let s = create(&f, Ctor::New, len).unwrap_or_else(|e| panic!("{}: {e}", cfg.name));
            clear_faults();
            let now = Footprint::now();
            assert_eq!(stats().unlocked_allocations, before.unlocked_allocations + 1, "{}", cfg.name);
            assert_eq!(now.bytes_locked, base.bytes_locked, "{}: unlocked bytes counted as locked", cfg.name);
            assert_eq!(now.vm_lck_kib, base.vm_lck_kib, "{}: VmLck moved", cfg.name);
            assert!(!is_locked_at(data_pages(&s).0), "{}: the pages are locked after all", cfg.name);
            assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), pattern(len, 5), "{}", cfg.name);
            s.close().unwrap();
            if slotted(&cfg, len) {
                // The pool keeps its one empty chunk (unlocked) for reuse.
                continue;
            }
            let mut want = base.clone();
            want.allocated += 1;
            want.assert_unchanged(&format!("{}: after close", cfg.name));
        }
    }
}

child_test! {
    /// A pool chunk made unlocked for an `AllowUnlocked` factory must not
    /// take the secrets of a factory that requires locked memory.
    fn pooled_secret_that_requires_locking_never_lands_in_an_unlocked_chunk() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        let cfg = all().into_iter().find(|c| c.is_pooled()).unwrap();
        let lax = ProtectedFactory::new(cfg.opts.lock(LockPolicy::AllowUnlocked)).unwrap();
        // Let this thread make its scratch buffer first (staging the random
        // bytes), so the injected mlock failure hits the new chunk.
        drop(cfg.factory().create_random(8).unwrap());
        fail_next(FaultOp::Mlock, 0, ENOMEM);
        let unlocked = lax.create_random(100).unwrap();
        clear_faults();
        assert!(!is_locked_at(data_pages(&unlocked).0), "the fault did not take");
        let strict = cfg.factory().create_random(100).unwrap();
        assert!(
            is_locked_at(data_pages(&strict).0),
            "a LockPolicy::Require secret was put in an unlocked pool chunk"
        );
    }
}

child_test! {
    /// The CSPRNG failing: for the fill of `create_random` and for the canary
    /// of a guarded secret (made before anything is mapped), `RandomFailed`
    /// with the OS error, and nothing leaked; a guarded `new` whose canary
    /// fails leaves the caller's buffer.
    fn random_failure_is_random_failed() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        for cfg in all() {
            for len in [100, 10000] {
                // Pooled slots are filled in the scratch buffer: warm the class.
                warm_up(&cfg, len);
                let fill = cfg.is_guarded() as u32;
                let failed = |e: &Error| matches!(e, Error::RandomFailed(io) if io.raw_os_error() == Some(EIO));
                let c = case(FaultOp::Random, fill, EIO, "getrandom filling the secret", Box::new(failed));
                expect_creation_fails(&cfg, len, Ctor::Random, &c);
                if cfg.is_guarded() {
                    let c = case(FaultOp::Random, 0, EIO, "getrandom of the canary", Box::new(failed));
                    for how in [Ctor::New, Ctor::Random, Ctor::Reader] {
                        expect_creation_fails(&cfg, len, how, &c);
                    }
                }
            }
        }
    }
}

/// Secrets whose accesses open an `mprotect` window: the window path, and
/// the copy path's fallback for secrets larger than the scratch buffer.
fn windowed() -> Vec<(Config, usize)> {
    let mut v = Vec::new();
    for cfg in all() {
        for len in [100, 10000] {
            if cfg.window_for(len) {
                v.push((cfg, len));
            }
        }
    }
    v
}

child_test! {
    /// mprotect to read failing when an access opens the window:
    /// `ProtectFailed { to: "read" }`, the closure does not run, the reader
    /// gives the same error inside an `io::Error`, and the secret stays
    /// hidden, open and usable.
    fn protect_read_failure_opening_a_window() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        for (cfg, len) in windowed() {
            warm_up(&cfg, len);
            let s = create(&cfg.factory(), Ctor::New, len).unwrap();
            let base = Footprint::now();
            let what = format!("{} len {len}", cfg.name);
            fail_next(FaultOp::ProtectRead, 0, EACCES);
            let mut ran = false;
            let r = s.with_bytes(|_| ran = true);
            clear_faults();
            assert!(matches!(&r, Err(e) if protect_failed("read", EACCES)(e)), "{what}: {r:?}");
            assert!(!ran, "{what}: the closure ran without a window");
            assert!(!s.is_readable_now().unwrap(), "{what}");

            if cfg.is_window() {
                // (The copy path's reader copies into the caller's buffer
                // whatever the size: no window.)
                fail_next(FaultOp::ProtectRead, 0, EACCES);
                let e = s.reader().read(&mut [0u8; 8]).unwrap_err();
                clear_faults();
                let inner = library_error(&e);
                assert!(matches!(inner, Some(e) if protect_failed("read", EACCES)(e)), "{what}: reader gave {e:?}");
            }

            assert!(!s.is_closed(), "{what}");
            assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), pattern(len, 5), "{what}: unusable");
            assert!(!s.is_readable_now().unwrap(), "{what}");
            base.assert_unchanged(&what);
        }
    }
}

child_test! {
    /// mprotect back to none failing when the last access leaves the window
    /// (`Region::hide`): the access reports `ProtectFailed { to: "none" }`,
    /// the pages (still readable) have been wiped, and the secret is closed
    /// for good: `is_closed`, every later access is `Closed`; `close` then
    /// unmaps it and leaves nothing.
    fn protect_none_failure_closing_a_window_wipes_and_closes() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        for (cfg, len) in windowed() {
            warm_up(&cfg, len);
            let base = Footprint::now();
            let what = format!("{} len {len}", cfg.name);
            let s = create(&cfg.factory(), Ctor::New, len).unwrap();
            fail_next(FaultOp::ProtectNone, 0, ENOMEM);
            let r = s.with_bytes(|b| b.to_vec());
            clear_faults();
            assert!(matches!(&r, Err(e) if protect_failed("none", ENOMEM)(e)), "{what}: {:?}", r.map(|v| v.len()));
            assert!(s.is_closed(), "{what}: still open after it could not be hidden");
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Closed)), "{what}");
            let e = s.reader().read(&mut [0u8; 8]).unwrap_err();
            assert!(matches!(library_error(&e), Some(Error::Closed)), "{what}: {e:?}");

            // The pages could not be hidden; they must hold no secret byte.
            let (addr, n) = data_pages(&s);
            let perms = perms_at(addr).unwrap_or_else(|| panic!("{what}: data pages unmapped before close"));
            assert!(perms.starts_with('r'), "{what}: expected the wipe's readable pages, got {perms}");
            // SAFETY: `/proc/self/maps` shows `[addr, addr + n)` mapped
            // readable; the secret that owns it is alive, not yet released,
            // and no other thread touches it.
            let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, n) };
            assert!(bytes.iter().all(|&b| b == 0), "{what}: pages not wiped after the failed hide");

            s.close().unwrap();
            drop(s);
            let mut want = base.clone();
            want.allocated += 1;
            want.assert_unchanged(&what);
        }
    }
}

child_test! {
    /// mprotect failing during close (window backends: the wipe makes the
    /// pages writable; guarded ones first read the canary through a window):
    /// `close` reports the protection error, not a damaged canary, and the
    /// memory is released all the same.
    fn protect_failure_at_close_still_releases() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        for cfg in all().into_iter().filter(|c| c.backend() != Backend::Memfd) {
            let len = 100;
            warm_up(&cfg, len);
            let mut cases = vec![(FaultOp::ProtectRead, 0, "read-write", "mprotect(READ|WRITE) for the wipe")];
            if cfg.is_guarded() {
                cases = vec![
                    (FaultOp::ProtectRead, 0, "read", "mprotect(READ) to check the canary"),
                    (FaultOp::ProtectNone, 0, "none", "mprotect(PROT_NONE) after the canary check"),
                    (FaultOp::ProtectRead, 1, "read-write", "mprotect(READ|WRITE) for the wipe"),
                ];
            }
            for (op, skip, to, step) in cases {
                let what = format!("{}: {op:?} #{skip} ({step})", cfg.name);
                let base = Footprint::now();
                let s = create(&cfg.factory(), Ctor::New, len).unwrap();
                fail_next(op, skip, EACCES);
                let r = s.close();
                clear_faults();
                assert!(matches!(&r, Err(e) if protect_failed(to, EACCES)(e)), "{what}: {r:?}");
                assert!(s.is_closed(), "{what}");
                assert!(matches!(s.with_bytes(|_| ()), Err(Error::Closed)), "{what}");
                assert!(s.close().is_ok(), "{what}: second close");
                drop(s);
                let mut want = base.clone();
                want.allocated += 1;
                want.assert_unchanged(&what);
                assert_eq!(stats().canary_failures, 0, "{what}: reported as a damaged canary");
            }
        }
    }
}

child_test! {
    /// pread of the memory file failing on the copy path: `AccessFailed`,
    /// the closure does not run, the reader gives it inside an `io::Error`,
    /// and the secret stays usable. A guarded memfd secret reads its canary
    /// with pread at close: that failure is reported as `AccessFailed` (not
    /// a damaged canary) and the memory is released all the same.
    fn pread_failure_is_access_failed() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        let failed = |e: &Error| matches!(e, Error::AccessFailed(io) if io.raw_os_error() == Some(EIO));
        // A protection-key pool reads by a user-space copy: no pread to fail.
        for cfg in copy_configs().into_iter().filter(|c| !c.uses_key()) {
            let len = 100;
            warm_up(&cfg, len);
            let what = cfg.name;
            let s = create(&cfg.factory(), Ctor::New, len).unwrap();
            let base = Footprint::now();
            fail_next(FaultOp::Pread, 0, EIO);
            let mut ran = false;
            let r = s.with_bytes(|_| ran = true);
            clear_faults();
            assert!(matches!(&r, Err(e) if failed(e)), "{what}: {r:?}");
            assert!(!ran, "{what}: the closure ran on bytes that were not copied");
            fail_next(FaultOp::Pread, 0, EIO);
            let e = s.reader().read(&mut [0u8; 8]).unwrap_err();
            clear_faults();
            assert!(matches!(library_error(&e), Some(e) if failed(e)), "{what}: {e:?}");
            assert!(!s.is_closed(), "{what}");
            assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), pattern(len, 5), "{what}");
            base.assert_unchanged(what);
        }
        for cfg in all().into_iter().filter(|c| c.backend() == Backend::Memfd && c.is_guarded()) {
            warm_up(&cfg, 100);
            let base = Footprint::now();
            let s = create(&cfg.factory(), Ctor::New, 100).unwrap();
            fail_next(FaultOp::Pread, 0, EIO);
            let r = s.close();
            clear_faults();
            assert!(matches!(&r, Err(e) if failed(e)), "{}: canary read at close: {r:?}", cfg.name);
            assert!(s.is_closed());
            drop(s);
            let mut want = base.clone();
            want.allocated += 1;
            want.assert_unchanged(cfg.name);
            assert_eq!(stats().canary_failures, 0, "{}: reported as a damaged canary", cfg.name);
        }
    }
}

child_test! {
    /// pwrite to the memory file failing: placing a pooled secret's bytes in
    /// its slot (`AccessFailed`, the slot is given back, the buffer is the
    /// caller's still), and wiping at close (pooled slot, or a memfd
    /// secret's pages): `close` reports `WipeFailed`, the bytes are zeroed
    /// another way (hole punched in the memory file) and the memory is
    /// released all the same.
    fn pwrite_failure_is_access_failed() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        let failed = |e: &Error| matches!(e, Error::AccessFailed(io) if io.raw_os_error() == Some(EIO));
        let pooled = all().into_iter().find(|c| c.is_pooled() && !c.uses_key()).unwrap();
        warm_up(&pooled, 100);
        for how in [Ctor::New, Ctor::Random, Ctor::Reader] {
            let slots = stats().pool_slots_used;
            let c = case(FaultOp::Pwrite, 0, EIO, "pwrite of the bytes into the slot", Box::new(failed));
            expect_creation_fails(&pooled, 100, how, &c);
            assert_eq!(stats().pool_slots_used, slots, "{how:?}: slot not given back");
        }
        // A protection-key pool wipes by user-space stores: no pwrite to fail.
        for cfg in all().into_iter().filter(|c| c.backend() == Backend::Memfd && !c.uses_key()) {
            warm_up(&cfg, 100);
            let base = Footprint::now();
            let slots = stats().pool_slots_used;
            let s = create(&cfg.factory(), Ctor::New, 100).unwrap();
            fail_next(FaultOp::Pwrite, 0, EIO);
            let r = s.close();
            clear_faults();
            let wipe_failed = |e: &Error| matches!(e, Error::WipeFailed(io) if io.raw_os_error() == Some(EIO));
            assert!(matches!(&r, Err(e) if wipe_failed(e)), "{}: wipe at close: {r:?}", cfg.name);
            // The memory file keeps freed pages for reuse: they must hold
            // zeros even though writing the zeros failed.
            let left = take_last_wiped().expect("release observed");
            assert!(left.iter().all(|&b| b == 0), "{}: secret left in the memory file", cfg.name);
            assert!(s.is_closed());
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Closed)), "{}", cfg.name);
            drop(s);
            let mut want = base.clone();
            want.allocated += 1;
            want.assert_unchanged(cfg.name);
            assert_eq!(stats().pool_slots_used, slots, "{}", cfg.name);
        }
    }
}

child_test! {
    /// The process-wide memory file failing to grow (ftruncate, on the first
    /// memfd secret of this process): `MapFailed`, nothing leaked, and the
    /// next creation grows it and works.
    fn memfd_store_growth_failure_is_map_failed() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        let f = ProtectedFactory::default();
        let base = Footprint::now();
        fail_next(FaultOp::Ftruncate, 0, ENOSPC);
        let r = create(&f, Ctor::New, 32);
        clear_faults();
        assert!(matches!(&r, Err(e) if map_failed(page(), ENOSPC)(e)), "{:?}", r.map(|s| s.len()));
        base.assert_unchanged("failed growth of the memory file");
        let s = create(&f, Ctor::New, 32).unwrap();
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), pattern(32, 5));
    }
}

child_test! {
    /// memfd_create failing when the first memfd secret of the process
    /// creates the memory file: a typed error naming it, nothing leaked,
    /// the caller's buffer intact.
    fn memfd_create_failure_is_a_typed_error() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        let f = ProtectedFactory::default();
        let base = Footprint::now();
        fail_next(FaultOp::MemfdCreate, 0, libc::EPERM);
        let r = create(&f, Ctor::New, 32);
        clear_faults();
        assert!(
            matches!(&r, Err(Error::Unsupported(m)) if m.contains("memfd_create")),
            "{:?}",
            r.map(|s| s.len())
        );
        base.assert_unchanged("failed memfd_create");
        // Out of descriptors is that limit, not "unsupported".
        fail_next(FaultOp::MemfdCreate, 0, EMFILE);
        let r = create(&f, Ctor::New, 32);
        clear_faults();
        assert!(
            matches!(&r, Err(Error::LimitReached { limit: ProcessLimit::Descriptors { .. }, .. })),
            "{:?}",
            r.map(|s| s.len())
        );
        base.assert_unchanged("memfd_create out of descriptors");
    }
}

child_test! {
    /// The per-thread scratch buffer failing to be made (its mmap, on a
    /// thread's first copy-path access): the access returns `MapFailed`
    /// with the kernel's error, the closure does not run and no window is
    /// opened (there is no silent switch of path, and no buffer shared
    /// between threads); the failure is not remembered, so the thread's
    /// next access makes its buffer and reads the exact bytes. Nothing is
    /// readable at rest.
    fn scratch_failure_is_reported_and_retried() {
        // The mapping path's faults: every creation maps anew.
        securememory::test_hooks::keep_ready_pages(false);
        let cfgs = copy_configs();
        let secrets: Vec<Secret> = cfgs.iter().map(|c| create(&c.factory(), Ctor::New, 100).unwrap()).collect();
        assert!(cfgs.iter().any(|c| c.is_pooled()), "a pooled secret is among them");
        let before = stats();
        for (cfg, s) in cfgs.iter().zip(&secrets) {
            std::thread::scope(|t| {
                t.spawn(|| {
                    fail_next(FaultOp::Mmap, 0, ENOMEM);
                    let r = s.with_bytes(|_| panic!("the closure ran without a scratch buffer"));
                    clear_faults();
                    assert!(
                        matches!(&r, Err(Error::MapFailed { source, .. }) if source.raw_os_error() == Some(ENOMEM)),
                        "{}: {r:?}",
                        cfg.name
                    );
                    assert!(!s.is_readable_now().unwrap(), "{}", cfg.name);
                    assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), pattern(100, 5), "{}", cfg.name);
                });
            });
        }
        assert_eq!(stats().protection_changes, before.protection_changes, "a window was opened");
        assert_eq!(stats().in_use, before.in_use);
    }
}
