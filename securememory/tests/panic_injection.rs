//! User code the library calls (the program's `metrics` recorder, its
//! `tracing` subscriber, the caller's closure) may panic or re-enter the
//! library at any point; no promise may break.
//!
//! - Panic injection: a recorder and a subscriber, installed process-wide,
//!   that panic at their N-th call (one global countdown), for every N across
//!   one cycle (create, access, nested access, reader read, a panicking
//!   closure, `from_reader` with a panicking reader, close, drop) in every
//!   configuration. After every step no secret is readable at rest; after
//!   the cycle each reads its own bytes or reports `Closed`, no pool slot is
//!   shared by two live secrets, no recorder panic escaped, and the counters
//!   and `VmLck` are back where they started.
//! - Re-entrancy: a recorder whose every call creates, reads and closes a
//!   pooled and a one-page secret, and closes the secret whose close it is
//!   reporting; the same cycle must finish (the parent kills the child after
//!   60 s and fails).
//!
//! Each configuration runs in a child process of its own: the recorder and
//! the subscriber are process-wide, and the counters are too.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;
mod support_parity;

use std::cell::{Cell, RefCell};
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::child::{role, Child, DONE};
use common::configs::{all_with_sealed as all, by_name, Config};
use common::procfs::vm_lck_kib;
use common::recorder::HookRecorder;
use securememory::{stats, Error, Layout, Options, ProtectedFactory, Secret, SecretFactory, Stats};
use support_parity::pattern;

/// What the injected panics say (the panic hook keeps them off stderr).
const INJECTED: &str = "injected panic (test recorder/subscriber)";

/// Calls until the injected panic: the call that brings it from 1 to 0
/// panics; 0 means never.
static COUNTDOWN: AtomicU64 = AtomicU64::new(0);
/// Calls made into the recorder and the subscriber (to size the cycle).
static CALLS: AtomicU64 = AtomicU64::new(0);

/// One call into user code: count it, and panic if it is the chosen one.
fn tick() {
    CALLS.fetch_add(1, Ordering::Relaxed);
    reenter();
    let armed = COUNTDOWN
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .unwrap_or(0);
    if armed == 1 {
        panic!("{INJECTED}");
    }
}

/// The recorder: registering a metric and every handle operation is a call.
const PANICKING_RECORDER: HookRecorder = HookRecorder {
    on_register: |_| tick(),
    on_use: Some(tick),
};

/// The subscriber: every event (and the check before it) is a call.
struct PanickingSubscriber;

impl tracing::Subscriber for PanickingSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        tick();
        true
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        tick();
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Install both, once per process, and keep the injected panics quiet.
fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        metrics::set_global_recorder(PANICKING_RECORDER).expect("install the recorder");
        tracing::subscriber::set_global_default(PanickingSubscriber)
            .expect("install the subscriber");
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied());
            if !msg.is_some_and(|m| m == INJECTED || m == CLOSURE_PANIC || m == READER_PANIC) {
                default(info);
            }
        }));
    });
}

/// What the caller's own panicking closure says.
const CLOSURE_PANIC: &str = "the caller's closure panics";

/// Panics that escaped the library (a recorder's or subscriber's).
static ESCAPED: AtomicUsize = AtomicUsize::new(0);

/// Run one step of the cycle; a panic out of it is counted, not propagated,
/// so the checks after the cycle still run.
fn step<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(_) => {
            ESCAPED.fetch_add(1, Ordering::Relaxed);
            eprintln!("a panic escaped the library in step: {what}");
            None
        }
    }
}

/// Bytes of the cycle's secrets: `seed` names the secret.
fn bytes(seed: u8) -> Vec<u8> {
    pattern(32, seed)
}

/// One cycle: create, access, nested access, reader read, a closure that
/// panics, close, drop. Returns the secrets still held, with their bytes.
/// Results are not checked here (only that the step returned): a step that
/// misreads is caught by the checks after the cycle.
fn cycle(f: &ProtectedFactory, seed: u8) -> Vec<(Secret, Vec<u8>)> {
    let mut held = Vec::new();
    let a = step("create a", || f.new(&mut bytes(seed))).and_then(Result::ok);
    let b = step("create b", || f.new(&mut bytes(seed + 1))).and_then(Result::ok);
    let c = step("create c", || f.new(&mut bytes(seed + 2))).and_then(Result::ok);
    at_rest("create", [a.as_ref(), b.as_ref(), c.as_ref()]);
    if let Some(a) = &a {
        step("access", || a.with_bytes(|x| x == bytes(seed).as_slice()));
        at_rest("access", [Some(a), b.as_ref(), c.as_ref()]);
        if let Some(b) = &b {
            step("nested access", || {
                a.with_bytes(|_| b.with_bytes(|y| y == bytes(seed + 1).as_slice()))
            });
            at_rest("nested access", [Some(a), Some(b), c.as_ref()]);
        }
        step("reader read", || {
            let mut out = [0u8; 32];
            a.reader().read_exact(&mut out).map(|()| out)
        });
        at_rest("reader read", [Some(a), b.as_ref(), c.as_ref()]);
        // The caller's own panic: it is the caller's, and is expected out.
        let r = catch_unwind(AssertUnwindSafe(|| {
            a.with_bytes(|_| std::panic::panic_any(CLOSURE_PANIC))
        }));
        if let Err(p) = r {
            if p.downcast_ref::<&str>() != Some(&CLOSURE_PANIC) {
                ESCAPED.fetch_add(1, Ordering::Relaxed);
                eprintln!("a panic escaped the library in step: panicking closure");
            }
        }
        at_rest("panicking closure", [Some(a), b.as_ref(), c.as_ref()]);
    }
    // The caller's reader panics while the secret is being placed (a pool
    // slot is taken by then): nothing may leak.
    let r = catch_unwind(AssertUnwindSafe(|| f.from_reader(&mut PanickingReader, 32)));
    match r {
        Err(p) if p.downcast_ref::<&str>() == Some(&READER_PANIC) => {}
        Err(_) => {
            ESCAPED.fetch_add(1, Ordering::Relaxed);
            eprintln!("a panic escaped the library in step: panicking reader");
        }
        Ok(_) => panic!("from_reader returned though its reader panicked"),
    }
    at_rest("panicking reader", [a.as_ref(), b.as_ref(), c.as_ref()]);
    if let Some(b) = &b {
        step("close", || b.close());
        at_rest("close", [a.as_ref(), Some(b), c.as_ref()]);
    }
    if let Some(c) = c {
        step("drop", || drop(c));
        at_rest("drop", [a.as_ref(), b.as_ref(), None]);
    }
    if let Some(a) = a {
        held.push((a, bytes(seed)));
    }
    if let Some(b) = b {
        held.push((b, bytes(seed + 1)));
    }
    held
}

/// What the caller's panicking reader says.
const READER_PANIC: &str = "the caller's reader panics";

/// A `Read` that panics (the caller's code, run while a secret is placed).
struct PanickingReader;

impl Read for PanickingReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        std::panic::panic_any(READER_PANIC)
    }
}

/// Times a secret was readable between two steps of a cycle (at rest).
static READABLE: AtomicUsize = AtomicUsize::new(0);

/// After a step: none of the cycle's secrets may be readable.
fn at_rest(after: &str, secrets: [Option<&Secret>; 3]) {
    for s in secrets.into_iter().flatten() {
        if s.is_readable_now().expect("read smaps") {
            READABLE.fetch_add(1, Ordering::Relaxed);
            eprintln!("a secret is readable at rest after step: {after}");
        }
    }
}

/// The figures that must come back: secrets open, pool slots used, locked bytes.
fn figures() -> (u64, u64, u64, u64) {
    // Closed one-page secrets' pages are kept ready (locked): give them back.
    securememory::release_ready_pages();
    let s: Stats = stats();
    (s.in_use, s.pool_slots_used, s.bytes_locked, vm_lck_kib())
}

/// Check what the cycle left: nothing readable at rest, every secret its own
/// bytes or `Closed`, and (creating more secrets) no slot shared.
fn check_after(cfg: &Config, n: u64, f: &ProtectedFactory, held: &[(Secret, Vec<u8>)]) {
    let at = format!("{} (panic at call {n})", cfg.name);
    for (s, want) in held {
        assert!(
            !s.is_readable_now().expect("read smaps"),
            "{at}: a secret is readable at rest"
        );
        match s.with_bytes(|b| b == want.as_slice()) {
            Ok(true) | Err(Error::Closed) => {}
            Ok(false) => panic!("{at}: a secret does not read its own bytes"),
            Err(e) => panic!("{at}: a secret cannot be read: {e}"),
        }
    }
    // A slot released twice is on the free list twice: two of these would
    // get it, and the first would then read the second's bytes.
    let fresh: Vec<(Secret, Vec<u8>)> = (0..8u8)
        .map(|i| {
            let want = pattern(32, 100 + i);
            let s = f
                .new(&mut want.clone())
                .unwrap_or_else(|e| panic!("{at}: create: {e}"));
            (s, want)
        })
        .collect();
    for (s, want) in held.iter().chain(&fresh) {
        match s.with_bytes(|b| b == want.as_slice()) {
            Ok(true) | Err(Error::Closed) => {}
            Ok(false) => panic!("{at}: two live secrets share memory (a slot released twice)"),
            Err(e) => panic!("{at}: a secret cannot be read: {e}"),
        }
    }
    for (s, _) in &fresh {
        assert!(
            !s.is_readable_now().expect("read smaps"),
            "{at}: readable at rest"
        );
        s.close().unwrap_or_else(|e| panic!("{at}: close: {e}"));
    }
}

/// The child's work for one configuration: the cycle with a panic injected
/// at every call it makes into user code, in turn.
fn inject_every_call(cfg: &Config) {
    install();
    let f = cfg.factory();
    // Warm up (memory file, scratch buffer, a pool chunk) with no panics,
    // and count the calls one cycle makes.
    drop(cycle(&f, 1));
    let base = figures();
    let before = CALLS.load(Ordering::Relaxed);
    let held = cycle(&f, 1);
    let calls = CALLS.load(Ordering::Relaxed) - before;
    drop(held);
    assert!(
        calls > 0,
        "{}: the cycle made no call into user code",
        cfg.name
    );
    assert_eq!(
        figures(),
        base,
        "{}: a clean cycle moved the figures",
        cfg.name
    );
    // Every N is tried even after a failure, so that a broken build shows
    // each invariant it breaks, not only the first.
    let mut failures = Vec::new();
    let mut base = base;
    let mut reported = 0;
    for n in 1..=calls + 1 {
        COUNTDOWN.store(n, Ordering::Relaxed);
        let held = cycle(&f, 10);
        let fired = COUNTDOWN.swap(0, Ordering::Relaxed) == 0;
        let at = format!("{} (panic at call {n})", cfg.name);
        checked(&mut failures, || check_after(cfg, n, &f, &held));
        drop(held);
        let now = figures();
        if now != base {
            failures.push(format!(
                "{at}: (in_use, pool_slots_used, bytes_locked, VmLck KiB) did not return: {now:?} != {base:?}"
            ));
            base = now;
        }
        if READABLE.swap(0, Ordering::Relaxed) != 0 {
            failures.push(format!(
                "{at}: a secret was readable at rest during the cycle"
            ));
        }
        if ESCAPED.swap(0, Ordering::Relaxed) != 0 {
            failures.push(format!(
                "{at}: a recorder/subscriber panic escaped the library"
            ));
        }
        if !fired && n <= calls {
            failures.push(format!("{at}: call {n} was never made"));
        }
        // Shown as found too: a later N may abort the process.
        for f in &failures[reported..] {
            eprintln!("FAILED: {f}");
        }
        reported = failures.len();
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{}: injected a panic at each of {calls} calls", cfg.name);
}

/// Run the checks `f`; a failed one (a panic) is added to `failures`.
fn checked(failures: &mut Vec<String>, f: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a check failed".into());
        failures.push(msg);
    }
}

/// In the parent: run `test` once per configuration, each in a child whose
/// role is the configuration's name (all at once), killed after `limit`; in
/// such a child, run `body` on its configuration.
fn per_config(test: &'static str, limit: Duration, body: fn(&Config)) {
    if let Some(name) = role() {
        body(&by_name(&name));
        println!("{DONE}");
        return;
    }
    let runs: Vec<_> = all()
        .into_iter()
        .map(|cfg| {
            let run = std::thread::spawn(move || run_with_timeout(test, cfg.name, limit));
            (cfg.name, run)
        })
        .collect();
    let mut failed = Vec::new();
    for (name, run) in runs {
        match run.join().expect("a child's watcher") {
            Ok(out) => print!("{out}"),
            Err(why) => failed.push(format!("== {name}: {why}")),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Re-run this binary's test `test` as a child with role `role`; kill it
/// after `limit` (a deadlock). `Ok(stdout)` if it printed [`DONE`].
fn run_with_timeout(test: &str, role: &str, limit: Duration) -> Result<String, String> {
    Child::new(test, role).run_until_done(limit, "deadlock?")
}

#[test]
fn panicking_recorder_and_subscriber_break_nothing() {
    // Generous: ten children share the machine; this limit only catches a hang.
    per_config(
        "panicking_recorder_and_subscriber_break_nothing",
        Duration::from_secs(300),
        inject_every_call,
    );
}

/// The factories the re-entrant recorder uses.
static REENTRANT: OnceLock<[ProtectedFactory; 2]> = OnceLock::new();
/// Whether the re-entrant recorder calls back now.
static REENTRY_ON: AtomicBool = AtomicBool::new(false);
/// Callbacks begun, run to their end, and failures seen inside them (a
/// panic in a callback is swallowed by the library, so each is counted here).
static REENTRY_BEGUN: AtomicUsize = AtomicUsize::new(0);
static REENTERED: AtomicUsize = AtomicUsize::new(0);
static REENTRY_WRONG: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
    /// A secret the callback also closes (the one being closed, so that the
    /// close re-enters itself from its own release's report).
    static CLOSE_ME: RefCell<Option<Arc<Secret>>> = const { RefCell::new(None) };
}

/// Closes made by the callback of `CLOSE_ME`, and ones that failed.
static SELF_CLOSED: AtomicUsize = AtomicUsize::new(0);
static SELF_CLOSE_FAILED: AtomicUsize = AtomicUsize::new(0);

/// What each recorder call does in the re-entrancy test: create, read and
/// close a pooled and a one-page secret (not from inside its own callback).
fn reenter() {
    // (`try_with`: a thread's scratch buffer is released, and reported,
    // while the thread's locals are being destroyed.)
    if !REENTRY_ON.load(Ordering::Relaxed) || IN_CALLBACK.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    REENTRY_BEGUN.fetch_add(1, Ordering::Relaxed);
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_CALLBACK.with(|c| c.set(false));
        }
    }
    IN_CALLBACK.with(|c| c.set(true));
    let _leave = Leave;
    if let Some(s) = CLOSE_ME.try_with(|c| c.borrow().clone()).ok().flatten() {
        match s.close() {
            Ok(()) => SELF_CLOSED.fetch_add(1, Ordering::Relaxed),
            Err(_) => SELF_CLOSE_FAILED.fetch_add(1, Ordering::Relaxed),
        };
    }
    for f in REENTRANT.get().expect("factories") {
        let want = pattern(24, 7);
        let ok = f.new(&mut want.clone()).is_ok_and(|s| {
            matches!(s.with_bytes(|b| b == want.as_slice()), Ok(true)) && s.close().is_ok()
        });
        if !ok {
            REENTRY_WRONG.fetch_add(1, Ordering::Relaxed);
        }
    }
    REENTERED.fetch_add(1, Ordering::Relaxed);
}

fn reentrant_cycle(cfg: &Config) {
    install();
    let _ = REENTRANT.set([
        ProtectedFactory::new(Options::default().layout(Layout::Pooled)).expect("pooled factory"),
        ProtectedFactory::default(),
    ]);
    let f = cfg.factory();
    // Warm up this thread's scratch buffer and the pool first (see the README).
    drop(cycle(&f, 1));
    for g in REENTRANT.get().unwrap() {
        g.new(&mut [1u8; 24]).unwrap().with_bytes(|_| ()).unwrap();
    }
    let base = figures();
    REENTRY_ON.store(true, Ordering::Relaxed);
    let held = cycle(&f, 10);
    check_after(cfg, 0, &f, &held);
    drop(held);
    // A thread of its own: its first copy-path read makes its scratch
    // buffer, which reports the locked bytes to the recorder, which reads a
    // secret through the copy path on that thread.
    // (`join`, not a scope: it also waits for the thread's locals, its
    // scratch buffer among them, to be dropped.)
    let (g, c) = (f.clone(), *cfg);
    let first = Arc::new(f.new(&mut bytes(30)).expect("create"));
    let first2 = Arc::clone(&first);
    std::thread::spawn(move || {
        // The thread's first access is a read, outside any callback.
        let same = first2.with_bytes(|b| b == bytes(30).as_slice());
        assert!(
            matches!(same, Ok(true)),
            "{}: first read on a new thread",
            c.name
        );
        let held = cycle(&g, 20);
        check_after(&c, 0, &g, &held);
    })
    .join()
    .expect("the cycle on a new thread");
    drop(first);
    // The recorder closes the secret whose close it is reporting (the
    // release reports the locked bytes or the pool's gauges).
    let s = Arc::new(f.new(&mut bytes(40)).expect("create"));
    CLOSE_ME.with(|c| *c.borrow_mut() = Some(Arc::clone(&s)));
    let closed = s.close();
    CLOSE_ME.with(|c| *c.borrow_mut() = None);
    assert!(
        closed.is_ok(),
        "{}: close re-entered by its recorder",
        cfg.name
    );
    assert!(
        SELF_CLOSED.load(Ordering::Relaxed) > 0,
        "{}: no re-entrant close",
        cfg.name
    );
    assert_eq!(
        SELF_CLOSE_FAILED.load(Ordering::Relaxed),
        0,
        "{}: a re-entrant close failed",
        cfg.name
    );
    assert!(matches!(s.with_bytes(|_| ()), Err(Error::Closed)));
    drop(s);
    REENTRY_ON.store(false, Ordering::Relaxed);
    assert_eq!(
        ESCAPED.load(Ordering::Relaxed),
        0,
        "{}: a panic escaped",
        cfg.name
    );
    let begun = REENTRY_BEGUN.load(Ordering::Relaxed);
    assert!(begun > 0, "{}: the recorder never re-entered", cfg.name);
    assert_eq!(
        REENTERED.load(Ordering::Relaxed),
        begun,
        "{}: a re-entrant callback did not finish (it panicked)",
        cfg.name
    );
    assert_eq!(
        REENTRY_WRONG.load(Ordering::Relaxed),
        0,
        "{}: a re-entrant read was wrong",
        cfg.name
    );
    // The new thread's scratch buffer stays locked for the thread's life,
    // and the thread is gone: its pages are unlocked and uncounted.
    assert_eq!(figures(), base, "{}: the figures did not return", cfg.name);
    println!(
        "{}: {} re-entrant callbacks",
        cfg.name,
        REENTERED.load(Ordering::Relaxed)
    );
}

#[test]
fn reentrant_recorder_does_not_deadlock() {
    // Each child takes well under a second: 60 s means a deadlock.
    per_config(
        "reentrant_recorder_does_not_deadlock",
        Duration::from_secs(60),
        reentrant_cycle,
    );
}
