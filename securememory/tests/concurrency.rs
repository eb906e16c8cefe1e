//! The foundation issue's concurrency test, for every access path and
//! configuration: 8 threads access one secret in a loop while another thread
//! (or several) closes it.
//!
//! What each case proves:
//! - every access either sees the exact bytes or fails with `Error::Closed`
//!   (no other error, never wrong bytes), and nothing crashes;
//! - `close` returns only after the last access ended: a shared `inside`
//!   counter is raised at the start of each closure and lowered at its end;
//!   right after `close` returns the closer sets `closed_returned` and then
//!   reads `inside`, which must be 0. A closure raises `inside` and then reads
//!   `closed_returned`, which must be false. With SeqCst on both sides (the
//!   Dekker pattern) any closure that ran after `close` returned is caught by
//!   one of the two checks;
//! - every access that began after `close` returned fails with `Closed`;
//! - concurrent closers all return `Ok`, and all accesses afterwards fail.
#![cfg(target_os = "linux")]

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use securememory::{
    AccessPath, Backend, Error, Layout, Options, ProtectedFactory, Secret, SecretFactory,
};

const THREADS: usize = 8;
/// How long the accessors hammer the secret before it is closed.
const HAMMER: Duration = Duration::from_millis(30);
/// Larger than the per-thread scratch buffer (2 pages): the copy path falls
/// back to the window on every `with_bytes`, while the reader still reads by
/// kernel copy, so copy-path and window accesses overlap on one secret.
const LARGE: usize = 12 * 1024;

struct Case {
    name: &'static str,
    opts: Options,
    len: usize,
}

fn cases() -> Vec<Case> {
    let memfd = Options::default().backend(Backend::Memfd);
    let anon = Options::default()
        .backend(Backend::Anonymous)
        .access(AccessPath::Window);
    let secret = Options::default()
        .backend(Backend::MemfdSecret)
        .access(AccessPath::Window);
    let mut v = vec![
        Case {
            name: "memfd/page/copy",
            opts: memfd.access(AccessPath::Copy),
            len: 32,
        },
        Case {
            name: "memfd/page/window",
            opts: memfd.access(AccessPath::Window),
            len: 32,
        },
        Case {
            name: "anonymous/page/window",
            opts: anon,
            len: 32,
        },
        Case {
            name: "memfd/guarded/copy",
            opts: memfd.access(AccessPath::Copy).layout(Layout::Guarded),
            len: 32,
        },
        Case {
            name: "memfd/guarded/window",
            opts: memfd.access(AccessPath::Window).layout(Layout::Guarded),
            len: 32,
        },
        Case {
            name: "anonymous/guarded/window",
            opts: anon.layout(Layout::Guarded),
            len: 32,
        },
        Case {
            name: "memfd/pooled/copy",
            opts: memfd.access(AccessPath::Copy).layout(Layout::Pooled),
            len: 32,
        },
        Case {
            name: "memfd/page/copy/12KiB (window fallback)",
            opts: memfd.access(AccessPath::Copy),
            len: LARGE,
        },
        Case {
            name: "memfd/guarded/copy/12KiB (window fallback)",
            opts: memfd.access(AccessPath::Copy).layout(Layout::Guarded),
            len: LARGE,
        },
        Case {
            name: "anonymous/page/window/12KiB",
            opts: anon,
            len: LARGE,
        },
    ];
    match securememory::memfd_secret_status() {
        Ok(()) => {
            v.push(Case {
                name: "memfd_secret/page/window",
                opts: secret,
                len: 32,
            });
            v.push(Case {
                name: "memfd_secret/guarded/window",
                opts: secret.layout(Layout::Guarded),
                len: 32,
            });
        }
        Err(why) => eprintln!("SKIPPED: memfd_secret cases: {why}"),
    }
    v
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// What the accessors do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// `with_bytes` only; one closer.
    WithBytes,
    /// `with_bytes`, `with_bytes_func` and `reader().read_exact` mixed; one closer.
    Mixed,
    /// `with_bytes` only; several closers at once.
    ManyClosers,
}

/// Shared observations of one case.
#[derive(Default)]
struct Observed {
    inside: AtomicUsize,
    closed_returned: AtomicBool,
    successes: AtomicUsize,
    closed_errors: AtomicUsize,
    /// Violations: wrong bytes, another error, an access after close returned,
    /// a reader inside when close returned, close failing.
    violations: Mutex<Vec<String>>,
}

impl Observed {
    fn violation(&self, what: String) {
        let mut v = self.violations.lock().unwrap();
        if v.len() < 20 {
            v.push(what);
        }
    }

    /// The closure body: raise `inside`, check the flag and the bytes, lower `inside`.
    fn in_access(&self, bytes: &[u8], expected: &[u8]) -> bool {
        self.inside.fetch_add(1, SeqCst);
        let late = self.closed_returned.load(SeqCst);
        let right = bytes == expected;
        self.inside.fetch_sub(1, SeqCst);
        if late {
            self.violation("a closure started after close returned".into());
        }
        if !right {
            self.violation(format!("wrong bytes seen ({} bytes)", bytes.len()));
        }
        right
    }

    /// Right after a `close` returned on this thread.
    fn after_close(&self, secret: &Secret, r: securememory::Result<()>) {
        self.closed_returned.store(true, SeqCst);
        let inside = self.inside.load(SeqCst);
        if inside != 0 {
            self.violation(format!(
                "{inside} closure(s) still inside when close returned"
            ));
        }
        if let Err(e) = r {
            self.violation(format!("close failed: {e}"));
        }
        if !secret.is_closed() {
            self.violation("is_closed() false after close returned".into());
        }
    }

    /// Record the outcome of one access; returns whether it failed with `Closed`.
    fn outcome(&self, began_after_close: bool, r: Result<bool, Error>) -> bool {
        match r {
            Ok(_) if began_after_close => {
                self.violation("an access that began after close returned succeeded".into());
                false
            }
            Ok(_) => {
                self.successes.fetch_add(1, SeqCst);
                false
            }
            Err(Error::Closed) => {
                self.closed_errors.fetch_add(1, SeqCst);
                true
            }
            Err(e) => {
                self.violation(format!("unexpected error: {e:?}"));
                false
            }
        }
    }
}

/// One access of kind `op`; `Ok(right bytes)` or the library error.
fn access(
    secret: &Secret,
    obs: &Observed,
    expected: &[u8],
    op: usize,
    buf: &mut [u8],
) -> Result<bool, Error> {
    match op {
        0 => secret.with_bytes(|b| obs.in_access(b, expected)),
        1 => secret.with_bytes_func(|b| Ok::<_, Error>(obs.in_access(b, expected))),
        _ => match secret.reader().read_exact(buf) {
            Ok(()) => {
                let right = buf == expected;
                if !right {
                    obs.violation("reader returned wrong bytes".into());
                }
                Ok(right)
            }
            Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
                Some(Error::Closed) => Err(Error::Closed),
                _ => Err(Error::Unsupported(format!("reader error: {e}"))),
            },
        },
    }
}

fn accessor(
    secret: &Secret,
    obs: &Observed,
    expected: &[u8],
    mode: Mode,
    id: usize,
    start: &Barrier,
) {
    let mut buf = vec![0u8; expected.len()];
    start.wait();
    let mut i = id;
    loop {
        let op = if mode == Mode::Mixed { i % 3 } else { 0 };
        i += 1;
        let began_after_close = obs.closed_returned.load(SeqCst);
        let closed = obs.outcome(
            began_after_close,
            access(secret, obs, expected, op, &mut buf),
        );
        if closed {
            // Closed is sticky: every kind of access keeps failing.
            for op in 0..3 {
                match access(secret, obs, expected, op, &mut buf) {
                    Err(Error::Closed) => {}
                    other => obs.violation(format!("access kind {op} after Closed: {other:?}")),
                }
            }
            return;
        }
    }
}

fn run_case(case: &Case, mode: Mode) {
    let factory = ProtectedFactory::new(case.opts).unwrap();
    let expected = pattern(case.len);
    let secret = factory.new(&mut expected.clone()).unwrap();
    if case.len == LARGE {
        assert!(
            LARGE > securememory::scratch_capacity(),
            "{} must exceed the scratch buffer",
            case.name
        );
    }
    let obs = Observed::default();
    let closers = if mode == Mode::ManyClosers { 3 } else { 1 };
    let start = Barrier::new(THREADS + closers);
    let close_now = Barrier::new(closers);
    let started = Instant::now();
    thread::scope(|s| {
        for id in 0..THREADS {
            let (secret, obs, expected, start) = (&secret, &obs, &expected[..], &start);
            s.spawn(move || accessor(secret, obs, expected, mode, id, start));
        }
        for _ in 0..closers {
            let (secret, obs, start, close_now) = (&secret, &obs, &start, &close_now);
            s.spawn(move || {
                start.wait();
                thread::sleep(HAMMER);
                close_now.wait();
                let r = secret.close();
                obs.after_close(secret, r);
            });
        }
    });
    let violations = obs.violations.into_inner().unwrap();
    let (ok, closed) = (obs.successes.load(SeqCst), obs.closed_errors.load(SeqCst));
    assert!(
        violations.is_empty(),
        "{} {mode:?}: {violations:#?}",
        case.name
    );
    assert!(
        ok > 0,
        "{} {mode:?}: no access succeeded before close",
        case.name
    );
    assert_eq!(
        closed, THREADS,
        "{} {mode:?}: every accessor ends on Closed",
        case.name
    );
    assert!(secret.close().is_ok(), "a later close is harmless");
    eprintln!(
        "{} {mode:?}: {ok} accesses succeeded, then Closed ({:?})",
        case.name,
        started.elapsed()
    );
}

#[test]
fn with_bytes_racing_close_every_path() {
    for case in cases() {
        run_case(&case, Mode::WithBytes);
    }
}

#[test]
fn readers_and_with_bytes_func_racing_close_every_path() {
    for case in cases() {
        run_case(&case, Mode::Mixed);
    }
}

#[test]
fn concurrent_closers_every_path() {
    for case in cases() {
        run_case(&case, Mode::ManyClosers);
    }
}

/// Many short rounds on fresh secrets, so that `close` often arrives just as
/// the last reader leaves (and has yet to hide the window): 2 accessors, a
/// close after a varying short spin. Window paths only (copy-path accesses
/// have no window to hide).
#[test]
fn close_racing_the_last_reader_many_rounds() {
    const ROUNDS: usize = 150;
    for case in cases()
        .into_iter()
        .filter(|c| c.opts.access == AccessPath::Window || c.len > securememory::scratch_capacity())
    {
        let factory = ProtectedFactory::new(case.opts).unwrap();
        let expected = pattern(case.len);
        for round in 0..ROUNDS {
            let secret = factory.new(&mut expected.clone()).unwrap();
            let obs = Observed::default();
            let start = Barrier::new(3);
            thread::scope(|s| {
                for id in 0..2 {
                    let (secret, obs, expected, start) = (&secret, &obs, &expected[..], &start);
                    s.spawn(move || accessor(secret, obs, expected, Mode::WithBytes, id, start));
                }
                start.wait();
                let until = Instant::now() + Duration::from_micros((round % 40) as u64 * 5);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                let r = secret.close();
                obs.after_close(&secret, r);
            });
            let violations = obs.violations.into_inner().unwrap();
            assert!(
                violations.is_empty(),
                "{} round {round}: {violations:#?}",
                case.name
            );
        }
    }
}
