//! Guarantee: with `purge_on_signals`, a fatal signal wipes every secret of
//! the process before it takes its course, without taking any lock.
//!
//! - SIGQUIT (default action: core dump): a child with a secret of every
//!   configuration, several read in a loop by other threads, sends itself
//!   SIGQUIT. It must die by SIGQUIT with a core file, and no 8-byte piece of
//!   any secret may be in it. The secrets' pages and the readers' scratch
//!   buffers are made dumpable (`MADV_DODUMP`) first, so only the purge keeps
//!   them out; a control child without the handler shows the core then holds
//!   the secrets (the test can see them).
//! - SIGTERM: a handler the program installed first is called after the
//!   purge (chained) and finds every secret's pages zero through
//!   `/proc/self/mem`; the child then dies by SIGTERM. Without the purge
//!   handler the same check finds the secrets (control).
//! - Locks: four threads are parked, holding the pool's class lock, the
//!   memory file's lock, a secret's gate mutex (inside `close`) and the
//!   purge's own list lock; the signal's purge still completes (a child that
//!   hangs is killed and fails the test).
//!
//! The keyed pool (protection keys) has a secret in every child but no
//! reading thread: its copy moves 8 bytes at a time through a CPU register,
//! and a reader stopped mid-copy keeps them there, in the core's register
//! notes; no handler can clear another thread's registers (README).

mod common;

use std::ffi::c_void;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::child::Child;
use common::configs;
use common::mem::contains;
use securememory::test_hooks::{self, LockPoint};
use securememory::{Secret, SecretFactory};

const CANNOT_DUMP: &str = "CANNOT-DUMP";
const RAISING: &str = "PURGE-CHILD: raising";
const SECRETS_FILE: &str = "secrets.bin";
const CLEAN: &str = "CHAINED-CLEAN";
const LEAK: &str = "CHAINED-LEAK";
const LIMIT: Duration = Duration::from_secs(120);

fn page() -> usize {
    common::page_size()
}

/// Make `[addr, addr + len)` (widened to pages) part of core dumps.
fn dodump(addr: usize, len: usize) {
    let start = addr & !(page() - 1);
    let end = (addr + len).div_ceil(page()) * page();
    // SAFETY: changes only the dump flag of the library's own pages; a
    // refusal (memfd_secret pages) is ignored: the kernel never dumps them.
    unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_DODUMP) };
}

/// Data pages of every secret, for the chained handler (no allocation there).
static RANGES: [(AtomicUsize, AtomicUsize); 64] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 64];
static NRANGES: AtomicUsize = AtomicUsize::new(0);
static READY: AtomicUsize = AtomicUsize::new(0);

/// Write `s` to stderr with `write(2)` (async-signal-safe).
fn say(s: &str) {
    // SAFETY: writes from a valid slice to stderr.
    unsafe { libc::write(2, s.as_ptr() as *const c_void, s.len()) };
}

/// The program's own SIGTERM handler (installed before the purge's): read
/// every secret's data pages through `/proc/self/mem` (which ignores the
/// pages' protection) and say whether they are zero; then die by SIGTERM.
extern "C" fn programs_handler(sig: libc::c_int) {
    // SAFETY: open, pread, close, sigaction, raise: async-signal-safe calls
    // on this process's own files; the buffer is on this stack.
    unsafe {
        let fd = libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDONLY);
        let mut leak = fd < 0;
        let mut buf = [0u8; 4096];
        for (a, l) in RANGES.iter().take(NRANGES.load(Ordering::Acquire)) {
            let (addr, len) = (a.load(Ordering::Relaxed), l.load(Ordering::Relaxed));
            let mut done = 0;
            while done < len {
                let n = (len - done).min(buf.len());
                let got = libc::pread(
                    fd,
                    buf.as_mut_ptr() as *mut c_void,
                    n,
                    (addr + done) as libc::off_t,
                );
                // memfd_secret pages cannot be read this way (EIO): skipped.
                if got > 0 && buf[..got as usize].iter().any(|&b| b != 0) {
                    leak = true;
                }
                done += n;
            }
        }
        libc::close(fd);
        say(if leak { LEAK } else { CLEAN });
        say("\n");
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// A secret of every configuration, each written to [`SECRETS_FILE`] with
/// `write(2)` straight from the access's slice (no copy of the test's own
/// in ordinary memory, which the core would hold).
fn create_all() -> Vec<(&'static str, Secret)> {
    // SAFETY: opens a file in the child's directory; closed below.
    let fd = unsafe {
        libc::open(
            c"secrets.bin".as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o600,
        )
    };
    assert!(fd >= 0, "open secrets.bin");
    let mut secrets = Vec::new();
    for config in configs::all() {
        let s = config.factory().create_random(32).expect("create_random");
        // SAFETY: writes from the closure's slice, valid for its length.
        let n = s
            .with_bytes(|b| unsafe { libc::write(fd, b.as_ptr() as *const c_void, b.len()) })
            .expect("read");
        assert_eq!(n, 32);
        let (addr, len) = test_hooks::data_pages(&s);
        dodump(addr, len);
        let i = NRANGES.fetch_add(1, Ordering::AcqRel);
        RANGES[i].0.store(addr, Ordering::Relaxed);
        RANGES[i].1.store(len, Ordering::Relaxed);
        eprintln!("CONFIG {}", config.name);
        secrets.push((config.name, s));
    }
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    secrets
}

/// Readers of every secret but the keyed pool's, each on its own thread,
/// forever; each makes its scratch dumpable after its first access.
fn start_readers(secrets: &'static [(&'static str, Secret)]) -> usize {
    // SAFETY: opens /dev/null; the descriptor is kept for the process's life.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY) };
    let mut n = 0;
    for (name, s) in secrets.iter().filter(|(n, _)| !n.contains("pkey")) {
        n += 1;
        let _ = name;
        std::thread::spawn(move || {
            // The kernel reads the bytes (no copy in this thread's registers).
            // SAFETY: writes from the closure's slice, valid for its length.
            let sink =
                |b: &[u8]| unsafe { libc::write(null, b.as_ptr() as *const c_void, b.len()) };
            s.with_bytes(sink).expect("first read");
            for (addr, len) in test_hooks::scratch_regions() {
                dodump(addr, len);
            }
            READY.fetch_add(1, Ordering::AcqRel);
            loop {
                // After the purge every access fails: keep going.
                let _ = s.with_bytes(sink);
            }
        });
    }
    n
}

/// The child: secrets everywhere, readers, then SIGNAL to the process.
fn child(role: &str) {
    let (mode, sig) = role.split_once('-').expect("role is MODE-SIGNAL");
    let sig = if sig == "quit" {
        libc::SIGQUIT
    } else {
        libc::SIGTERM
    };
    if sig == libc::SIGQUIT {
        if let Err(why) = common::rlimit::enable_core_dumps() {
            eprintln!("{CANNOT_DUMP}: {why}");
            return;
        }
    } else {
        // SAFETY: installs a plain handler of this test's.
        unsafe { libc::signal(sig, programs_handler as *const () as libc::sighandler_t) };
    }
    if mode == "purge" {
        let got =
            securememory::purge_on_signals(&securememory::DEFAULT_PURGE_SIGNALS).expect("install");
        assert_eq!(got.len(), 4, "{got:?}");
    }
    let secrets = create_all();
    let secrets: &'static [(&'static str, Secret)] = Box::leak(secrets.into_boxed_slice());
    let readers = start_readers(secrets);
    while READY.load(Ordering::Acquire) < readers {
        std::thread::yield_now();
    }
    eprintln!("{RAISING} with {readers} reading threads");
    // SAFETY: a process-directed signal to ourselves; any thread may take it.
    unsafe { libc::kill(libc::getpid(), sig) };
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn signal_purge_child() {
    // Only ever run as a child of the tests below.
    if let Some(role) = common::child::role() {
        child(&role);
    }
}

/// Run the child as `role` in a fresh directory; the status, its output,
/// the secrets and the core file's bytes (if any).
fn run(role: &str) -> Option<(std::process::ExitStatus, String, Vec<u8>, Vec<u8>)> {
    let dir =
        std::env::temp_dir().join(format!("securememory-purge-{}-{role}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("mkdir");
    let (status, out) = Child::new("signal_purge_child", role)
        .dir(&dir)
        .run_merged(LIMIT);
    let status = status.unwrap_or_else(|| panic!("{role}: the child hung\n{out}"));
    if out.contains(CANNOT_DUMP) {
        eprintln!("SKIPPED: purge core test: the child cannot dump core\n{out}");
        let _ = std::fs::remove_dir_all(&dir);
        return None;
    }
    assert!(
        out.contains(RAISING),
        "{role}: the child did not get to the signal\n{out}"
    );
    let secrets = std::fs::read(dir.join(SECRETS_FILE)).expect("secrets");
    let core = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.file_name().is_some_and(|n| n != SECRETS_FILE))
        .map(|p| std::fs::read(p).expect("core"))
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    Some((status, out, secrets, core))
}

/// The configurations (in the child's order) and whether each secret has
/// an 8-byte piece in `core`.
fn found(out: &str, secrets: &[u8], core: &[u8]) -> Vec<(String, bool)> {
    let names: Vec<String> = out
        .lines()
        // (The harness's "test ... " may start the first line.)
        .filter_map(|l| l.split_once("CONFIG ").map(|(_, n)| n))
        .map(str::to_string)
        .collect();
    assert_eq!(names.len() * 32, secrets.len());
    names
        .into_iter()
        .zip(secrets.chunks(32))
        .map(|(n, s)| (n, s.windows(8).any(|w| contains(core, w))))
        .collect()
}

fn core_lands_in_cwd() -> bool {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let pattern = pattern.trim();
    if pattern.starts_with('|') || pattern.contains('/') {
        eprintln!("SKIPPED: purge core test: core_pattern is {pattern:?}; the core file would not land in the child's directory");
        return false;
    }
    true
}

#[test]
fn sigquit_purges_every_secret_before_the_core_dump() {
    if common::child::role().is_some() || !core_lands_in_cwd() {
        return;
    }
    // Control: without the handler the dumpable secrets are in the core.
    let Some((status, out, secrets, core)) = run("control-quit") else {
        return;
    };
    assert_eq!(status.signal(), Some(libc::SIGQUIT), "control\n{out}");
    assert!(status.core_dumped(), "control: no core\n{out}");
    let seen = found(&out, &secrets, &core);
    for (name, hit) in &seen {
        let visible = !name.contains("memfdsecret") && !name.contains("pkey");
        assert!(
            *hit || !visible,
            "control: {name}'s secret is not in the core: the test cannot see it"
        );
    }

    let (status, out, secrets, core) = run("purge-quit").expect("dumped once");
    assert_eq!(
        status.signal(),
        Some(libc::SIGQUIT),
        "died by SIGQUIT\n{out}"
    );
    assert!(status.core_dumped(), "SIGQUIT still dumps core\n{out}");
    for (name, hit) in found(&out, &secrets, &core) {
        assert!(
            !hit,
            "{name}: a piece of the secret is in the core after the purge\n{out}"
        );
    }
    println!(
        "control saw {} of {} secrets; after the purge none is in a {} KiB core",
        seen.iter().filter(|(_, h)| *h).count(),
        seen.len(),
        core.len() / 1024
    );
}

#[test]
fn sigterm_purges_chains_to_the_programs_handler_and_kills() {
    if common::child::role().is_some() {
        return;
    }
    let (status, out, ..) = run("control-term").expect("no core needed");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "control\n{out}");
    assert!(
        out.contains(LEAK),
        "control: the check does not see the secrets\n{out}"
    );

    let (status, out, ..) = run("purge-term").expect("no core needed");
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "died by SIGTERM\n{out}"
    );
    assert!(
        out.contains(CLEAN),
        "the program's handler ran after the purge and found zeros\n{out}"
    );
}

thread_local! {
    static PARK_AT: std::cell::Cell<Option<LockPoint>> = const { std::cell::Cell::new(None) };
}
static PARKED: AtomicUsize = AtomicUsize::new(0);

fn park_here(point: LockPoint) {
    if PARK_AT.with(|p| p.get()) == Some(point) {
        PARKED.fetch_add(1, Ordering::AcqRel);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn locks_child() {
    // SAFETY: installs a plain handler of this test's.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            programs_handler as *const () as libc::sighandler_t,
        )
    };
    securememory::purge_on_signals(&[libc::SIGTERM]).expect("install");
    let secrets = create_all();
    let secrets: &'static [(&'static str, Secret)] = Box::leak(secrets.into_boxed_slice());
    let to_close = configs::by_name("anonymous-page-window")
        .factory()
        .new(&mut [1u8; 32])
        .unwrap();
    let to_close: &'static Secret = Box::leak(Box::new(to_close));
    test_hooks::at_lock(Some(park_here));
    let points = [
        (LockPoint::PoolClass, "memfd-pooled-copy"),
        (LockPoint::MemoryFile, "memfd-page-copy"),
        (LockPoint::LiveList, "anonymous-page-window"),
        (LockPoint::GateClose, ""),
    ];
    for (point, config) in points {
        std::thread::spawn(move || {
            PARK_AT.with(|p| p.set(Some(point)));
            if point == LockPoint::GateClose {
                let _ = to_close.close();
            } else {
                let _ = configs::by_name(config).factory().new(&mut [2u8; 32]);
            }
            unreachable!("not parked at {point:?}");
        });
    }
    while PARKED.load(Ordering::Acquire) < points.len() {
        std::thread::yield_now();
    }
    let _ = secrets;
    eprintln!(
        "{RAISING} with {} threads parked holding locks",
        points.len()
    );
    // SAFETY: a process-directed signal to ourselves.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn signal_purge_completes_while_threads_hold_every_lock() {
    const ROLE: &str = "locks";
    if common::child::role().as_deref() == Some(ROLE) {
        locks_child();
        return;
    }
    if common::child::role().is_some() {
        return;
    }
    let (status, out) = Child::new("signal_purge_completes_while_threads_hold_every_lock", ROLE)
        .dir(Path::new("/tmp"))
        .run_merged(LIMIT);
    let status = status.unwrap_or_else(|| panic!("the signal's purge hung\n{out}"));
    assert!(out.contains(RAISING), "{out}");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{out}");
    assert!(
        out.contains(CLEAN),
        "purged while every lock was held\n{out}"
    );
}
