//! What the library tells the outside: the `metrics` facade (a recorder the
//! program installs sees `secret.allocated`, `secret.inuse`,
//! `secret.allocation.seconds` and the other figures of `stats()`), and
//! `tracing` debug events on creation and close that never carry a byte of
//! the secret.
//!
//! Each test runs in a re-executed child of its own (`child_test!`): a
//! recorder is process-wide, and the gauges carry process-wide figures that
//! other tests' secrets would move.

#[macro_use]
mod common;
mod support_parity;

use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::sync::{Arc, Mutex};

use common::configs::{all, Config};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use securememory::test_hooks::{clear_faults, corrupt_canary, fail_next, FaultOp};
use securememory::{stats, Error, LockPolicy, ProtectedFactory, SecretFactory};
use support_parity::{assert_no_leak, pattern, TOPSECRET};

/// Metric name -> value recorded since the last snapshot (counters: the
/// increase; gauges: the last value set, 0 if none; histograms: the samples).
fn snapshot(s: &Snapshotter) -> HashMap<String, DebugValue> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key.key().name().to_string(), value))
        .collect()
}

fn counter(m: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match m.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        Some(other) => panic!("{name} is not a counter: {other:?}"),
    }
}

fn gauge(m: &HashMap<String, DebugValue>, name: &str) -> Option<f64> {
    match m.get(name) {
        Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
        None => None,
        Some(other) => panic!("{name} is not a gauge: {other:?}"),
    }
}

fn samples(m: &HashMap<String, DebugValue>, name: &str) -> Vec<f64> {
    match m.get(name) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
        None => Vec::new(),
        Some(other) => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn install() -> Snapshotter {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("install the metrics recorder");
    snapshotter
}

child_test! {
    /// Creating secrets (every constructor) raises `secret.allocated` by one
    /// each, sets `secret.inuse` to the number open, records one
    /// `secret.allocation.seconds` sample each and publishes the locked bytes;
    /// closing sets `secret.inuse` down and records no allocation.
    fn metrics_follow_creation_and_close() {
        // Each close gives its locked bytes back (no page kept ready).
        securememory::test_hooks::keep_ready_pages(false);
        let snap = install();
        for cfg in all() {
            let name = cfg.name;
            let f = cfg.factory();
            snapshot(&snap);
            let a = f.new(&mut pattern(32, 1)).unwrap();
            let b = f.create_random(32).unwrap();
            let c = f.from_reader(&mut Cursor::new(pattern(32, 2)), 32).unwrap();
            let m = snapshot(&snap);
            assert_eq!(counter(&m, "secret.allocated"), 3, "{name}: secret.allocated");
            assert_eq!(gauge(&m, "secret.inuse"), Some(3.0), "{name}: secret.inuse");
            let t = samples(&m, "secret.allocation.seconds");
            assert_eq!(t.len(), 3, "{name}: allocation time samples {t:?}");
            assert!(t.iter().all(|x| x.is_finite() && *x >= 0.0), "{name}: {t:?}");
            assert_eq!(
                gauge(&m, "secret.locked.bytes"),
                Some(stats().bytes_locked as f64),
                "{name}: secret.locked.bytes"
            );
            if cfg.is_pooled() {
                let s = stats();
                assert_eq!(gauge(&m, "secret.pool.slots.used"), Some(s.pool_slots_used as f64), "{name}");
                assert_eq!(gauge(&m, "secret.pool.pages"), Some(s.pool_pages as f64), "{name}");
                assert_eq!(gauge(&m, "secret.pool.slots.total"), Some(s.pool_slots_total as f64), "{name}");
            }

            a.close().unwrap();
            let m = snapshot(&snap);
            assert_eq!(gauge(&m, "secret.inuse"), Some(2.0), "{name}: secret.inuse after close");
            assert_eq!(counter(&m, "secret.allocated"), 0, "{name}: close counted as an allocation");
            assert!(samples(&m, "secret.allocation.seconds").is_empty(), "{name}");
            drop(b);
            assert_eq!(gauge(&snapshot(&snap), "secret.inuse"), Some(1.0), "{name}: after drop");
            c.close().unwrap();
            c.close().unwrap();
            assert_eq!(stats().in_use, 0, "{name}");
            assert_eq!(gauge(&snapshot(&snap), "secret.inuse"), Some(0.0), "{name}");
        }
    }
}

child_test! {
    /// `secret.protection_changes` counts the window's two mprotect calls
    /// per access (overlapping accesses share one window); the copy path
    /// changes no protection.
    fn metrics_count_protection_changes() {
        let snap = install();
        for cfg in all() {
            let s = cfg.factory().create_random(32).unwrap();
            snapshot(&snap);
            s.with_bytes(|_| s.with_bytes(|_| ()).unwrap()).unwrap();
            let m = snapshot(&snap);
            let want = if cfg.window_for(32) { 2 } else { 0 };
            assert_eq!(counter(&m, "secret.protection_changes"), want, "{}", cfg.name);
        }
    }
}

fn guarded(cfgs: &[Config]) -> Vec<Config> {
    cfgs.iter().copied().filter(Config::is_guarded).collect()
}

child_test! {
    /// The refusal, unlocked and damaged-canary counters.
    fn metrics_count_refusals_unlocked_and_canaries() {
        let snap = install();
        let f = ProtectedFactory::default();
        // This thread's scratch first (locked once, kept): `create_random`
        // stages its bytes there, so the refused lock below is the page's
        // (a new one: the closed secret's ready page is given back).
        f.create_random(32).unwrap().with_bytes(|_| ()).unwrap();
        securememory::release_ready_pages();
        snapshot(&snap);
        fail_next(FaultOp::Mlock, 0, libc::ENOMEM);
        assert!(matches!(f.create_random(32), Err(Error::LockFailed { .. })));
        clear_faults();
        let m = snapshot(&snap);
        assert_eq!(counter(&m, "secret.lock.refused"), 1);
        assert_eq!(counter(&m, "secret.allocated"), 0, "a refused creation counted");

        let lax = ProtectedFactory::new(securememory::Options::default().lock(LockPolicy::AllowUnlocked)).unwrap();
        fail_next(FaultOp::Mlock, 0, libc::ENOMEM);
        let s = lax.create_random(32).unwrap();
        clear_faults();
        let m = snapshot(&snap);
        assert_eq!(counter(&m, "secret.unlocked"), 1);
        assert_eq!(counter(&m, "secret.allocated"), 1);
        drop(s);

        for cfg in guarded(&all()) {
            let s = cfg.factory().create_random(32).unwrap();
            corrupt_canary(&s).unwrap();
            snapshot(&snap);
            assert!(matches!(s.close(), Err(Error::CanaryDamaged)), "{}", cfg.name);
            let m = snapshot(&snap);
            assert_eq!(counter(&m, "secret.canary.damaged"), 1, "{}", cfg.name);
        }
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Run `f` with a subscriber at `level` that writes to the returned text.
fn captured(level: tracing::Level, f: impl FnOnce()) -> String {
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_max_level(level)
        .without_time()
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    buf.text()
}

child_test! {
    /// At debug level a subscriber sees one creation and one close event per
    /// secret, with its length; no event, the error paths' included (a
    /// window that could not be hidden, an unlocked allocation, a damaged
    /// canary, a failing close on drop), carries the secret in any form.
    fn tracing_sees_creation_and_close_never_bytes() {
        let mut made = 0;
        let text = captured(tracing::Level::TRACE, || {
            for cfg in all() {
                let s = cfg.factory().new(&mut TOPSECRET.to_vec()).unwrap();
                s.with_bytes(|b| assert_eq!(b, TOPSECRET)).unwrap();
                s.close().unwrap();
                let r = cfg.factory().from_reader(&mut Cursor::new(TOPSECRET.to_vec()), 20).unwrap();
                drop(r);
                made += 2;
                if cfg.window_for(20) {
                    let s = cfg.factory().new(&mut TOPSECRET.to_vec()).unwrap();
                    fail_next(FaultOp::ProtectNone, 0, libc::ENOMEM);
                    assert!(s.with_bytes(|_| ()).is_err(), "{}", cfg.name);
                    clear_faults();
                    made += 1;
                }
                if cfg.is_guarded() {
                    let s = cfg.factory().new(&mut TOPSECRET.to_vec()).unwrap();
                    corrupt_canary(&s).unwrap();
                    // Dropped: the close error is logged.
                    drop(s);
                    made += 1;
                }
            }
            let lax = ProtectedFactory::new(securememory::Options::default().lock(LockPolicy::AllowUnlocked)).unwrap();
            fail_next(FaultOp::Mlock, 0, libc::ENOMEM);
            let s = lax.new(&mut TOPSECRET.to_vec()).unwrap();
            clear_faults();
            drop(s);
            made += 1;
        });
        let created = text.lines().filter(|l| l.contains("secret created")).collect::<Vec<_>>();
        let closed = text.lines().filter(|l| l.contains("secret closed")).collect::<Vec<_>>();
        assert_eq!(created.len(), made, "creation events:\n{text}");
        assert_eq!(closed.len(), made, "close events:\n{text}");
        for l in created.iter().chain(&closed) {
            assert!(l.contains("DEBUG"), "not a debug event: {l}");
            assert!(l.contains("len=20"), "no length: {l}");
        }
        for needle in ["NOT locked", "wiped and closed", "damaged canary", "error closing a dropped secret"] {
            assert!(text.contains(needle), "no event for {needle:?}:\n{text}");
        }
        assert_no_leak(&text, TOPSECRET, "tracing output");
    }
}

child_test! {
    /// Creation and close are debug events: a subscriber at info level does
    /// not get them.
    fn tracing_creation_and_close_are_debug_level() {
        let text = captured(tracing::Level::INFO, || {
            let s = ProtectedFactory::default().new(&mut TOPSECRET.to_vec()).unwrap();
            s.close().unwrap();
        });
        assert!(!text.contains("secret created") && !text.contains("secret closed"), "{text}");
        let text = captured(tracing::Level::DEBUG, || {
            let s = ProtectedFactory::default().new(&mut TOPSECRET.to_vec()).unwrap();
            s.close().unwrap();
        });
        assert!(text.contains("secret created") && text.contains("secret closed"), "{text}");
    }
}
