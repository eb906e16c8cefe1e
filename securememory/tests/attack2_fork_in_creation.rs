//! A fork taken by user code that the library calls in the middle of making
//! a secret, on the creating thread: the `metrics` recorder (the budget's
//! gauge before the mapping, `secret.allocated` after the storage is made),
//! a `tracing` subscriber (the "secret created" event), or the caller's own
//! reader in `from_reader`. The creation then goes on in the child too. The
//! child must never get a secret that reads as zeros (its private copy was
//! wiped by `MADV_WIPEONFORK`) or that its `close()` does not wipe and
//! release: its `new()` gives `Error::Forked`, or a secret with the real
//! bytes whose close leaves the books right (`VmLck` equals
//! `stats().bytes_locked`), and never a crash. (One exception, in the
//! README: a reader that forks and then writes into the memory file's pages
//! it was lent faults in its own code in the child.)

#[macro_use]
mod common;
mod support_proc;

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;

use common::procfs::vm_lck_kib;
use common::recorder::HookRecorder;
use securememory::{
    protection_keys_status, stats, Backend, Error, Layout, Options, PoolProtection,
    ProtectedFactory, Secret, SecretFactory,
};

/// The metric whose registration forks next (once), if any.
static FORK_AT: Mutex<Option<&'static str>> = Mutex::new(None);
/// Set in the child of such a fork.
static IN_CHILD: AtomicBool = AtomicBool::new(false);
/// The pid of the last such child, in the parent.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Fork here; the child goes on with the caller's code (`IN_CHILD` set).
fn fork_here() {
    io::stdout().flush().ok();
    io::stderr().flush().ok();
    // SAFETY: glibc fork; the child goes on with this thread's code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        IN_CHILD.store(true, Ordering::Release);
    } else {
        CHILD.store(pid, Ordering::Release);
    }
}

fn maybe_fork(name: &str) {
    let mut at = FORK_AT.lock().unwrap();
    if *at == Some(name) {
        *at = None;
        drop(at);
        fork_here();
    }
}

const FORKING_RECORDER: HookRecorder = HookRecorder {
    on_register: maybe_fork,
    on_use: None,
};

/// A reader that forks after handing out half of the bytes.
struct ForkingReader<'a> {
    bytes: &'a [u8],
    at: usize,
    forked: bool,
}

impl Read for ForkingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.forked && self.at >= self.bytes.len() / 2 {
            self.forked = true;
            fork_here();
        }
        let end = (self.at + buf.len())
            .min(self.bytes.len())
            .min(self.bytes.len().div_ceil(2).max(self.at + 1));
        let n = end - self.at;
        buf[..n].copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(n)
    }
}

/// In the child: judge what `new()` gave; the exit code says it.
fn judge_in_child(what: &str, made: Result<Secret, Error>, want: &[u8]) -> i32 {
    let code = match made {
        Err(Error::Forked) => 0,
        Err(e) => {
            eprintln!("{what}: child got {e:?}");
            0
        }
        Ok(s) => {
            match s.with_bytes(|b| b.to_vec()) {
                Err(Error::Forked) => 0,
                Ok(b) if b == want => match s.close() {
                    Ok(()) => {
                        let lck = vm_lck_kib() * 1024;
                        let books = stats().bytes_locked;
                        if lck == books {
                            0
                        } else {
                            eprintln!("{what}: child closed its secret: VmLck {lck} B, bytes_locked {books}");
                            3
                        }
                    }
                    Err(e) => {
                        eprintln!("{what}: child close {e:?}");
                        4
                    }
                },
                Ok(b) if b.iter().all(|&x| x == 0) => {
                    eprintln!("{what}: the child's secret reads as {} zeros", b.len());
                    1
                }
                other => {
                    eprintln!("{what}: child read {other:?}");
                    2
                }
            }
        }
    };
    io::stderr().flush().ok();
    code
}

fn configs() -> Vec<(&'static str, Options)> {
    let mut v = vec![
        ("memfd page", Options::default()),
        ("memfd guarded", Options::default().layout(Layout::Guarded)),
        ("pooled", Options::default().layout(Layout::Pooled)),
        ("anonymous", Options::default().backend(Backend::Anonymous)),
        (
            "anonymous guarded",
            Options::default()
                .backend(Backend::Anonymous)
                .layout(Layout::Guarded),
        ),
    ];
    if protection_keys_status().is_ok() {
        v.push((
            "pooled key",
            Options::default()
                .layout(Layout::Pooled)
                .pool_protection(PoolProtection::ProtectionKey),
        ));
    }
    v
}

/// Make a secret with a fork armed (by `arm`, inside `make`); in the child
/// judge it and `_exit`; in the parent check the secret and wait. Returns
/// the failures seen.
fn one(what: String, want: &[u8], make: impl FnOnce() -> Result<Secret, Error>) -> Vec<String> {
    CHILD.store(0, Ordering::Release);
    let made = make();
    if IN_CHILD.load(Ordering::Acquire) {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            judge_in_child(&what, made, want)
        }))
        .unwrap_or(101);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) }
    }
    let mut failures = Vec::new();
    let s = made.unwrap_or_else(|e| panic!("{what}: parent: {e}"));
    assert_eq!(
        s.with_bytes(|b| b.to_vec()).unwrap(),
        want,
        "{what}: parent"
    );
    s.close().unwrap();
    let pid = CHILD.load(Ordering::Acquire);
    if pid == 0 {
        failures.push(format!("{what}: no fork happened"));
        return failures;
    }
    let status = common::wait_status(pid);
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        failures.push(format!("{what}: child status {status:#x}"));
    }
    failures
}

child_test! {
    fn a_fork_inside_a_creation_never_leaves_the_child_zeros_or_unwiped_bytes() {
        metrics::set_global_recorder(FORKING_RECORDER).unwrap();
        let want: Vec<u8> = (1..=200u8).collect();
        let mut failures = Vec::new();
        for (name, opts) in configs() {
            let f = ProtectedFactory::new(opts).unwrap();
            // Warm: the store, pool chunk and scratch exist.
            f.new(&mut [1u8; 8]).unwrap().close().unwrap();
            for metric in ["secret.locked.bytes", "secret.allocated"] {
                failures.extend(one(format!("{name}, fork at {metric}"), &want, || {
                    // A fresh mapping (the budget's count moves only then):
                    // no ready page left from the creation before.
                    securememory::release_ready_pages();
                    *FORK_AT.lock().unwrap() = Some(metric);
                    let mut src = want.clone();
                    let r = f.new(&mut src);
                    *FORK_AT.lock().unwrap() = None;
                    r
                }));
            }
            // A reader that forks and then writes into the buffer it was
            // lent (the memory file's pages, not mapped in the child) faults
            // in its own code there: documented, not tried.
            if name.starts_with("memfd") {
                continue;
            }
            failures.extend(one(format!("{name}, fork in from_reader"), &want, || {
                let mut r = ForkingReader { bytes: &want, at: 0, forked: false };
                f.from_reader(&mut r, want.len())
            }));
        }
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        assert!(failures.is_empty(), "{} failures: {failures:#?}", failures.len());
    }
}

/// In the child of a fork taken during an access: the access must be
/// `Error::Forked` (or the real bytes, had they been copied before the
/// fork), never zeros in their place.
fn judge_access_in_child(what: &str, got: Result<Vec<u8>, Error>, want: &[u8]) -> i32 {
    let code = match got {
        Err(Error::Forked) => {
            eprintln!("{what}: child got Forked");
            0
        }
        Ok(b) if b == want => {
            eprintln!("{what}: child read the real bytes");
            0
        }
        Ok(b) if b.iter().all(|&x| x == 0) => {
            eprintln!("{what}: the child's access read {} zeros", b.len());
            1
        }
        other => {
            eprintln!("{what}: child access gave {other:?}");
            2
        }
    };
    io::stderr().flush().ok();
    code
}

child_test! {
    /// A fork from the metrics recorder in the middle of an access (the
    /// window's protection-change counter; the budget gauge while the
    /// thread's first scratch buffer is made): the child's access is never
    /// handed zeros.
    fn a_fork_inside_an_access_never_hands_the_child_zeros() {
        metrics::set_global_recorder(FORKING_RECORDER).unwrap();
        let want: Vec<u8> = (1..=200u8).collect();
        let mut failures = Vec::new();
        for (name, opts) in configs() {
            let f = ProtectedFactory::new(opts).unwrap();
            let s = f.new(&mut want.clone()).unwrap();
            for metric in ["secret.protection_changes", "secret.locked.bytes"] {
                let what = format!("{name}, fork at {metric}");
                // A new thread: its first copy-path access makes its scratch.
                let (got, child, pid) = std::thread::scope(|sc| {
                    sc.spawn(|| {
                        CHILD.store(0, Ordering::Release);
                        *FORK_AT.lock().unwrap() = Some(metric);
                        let got = s.with_bytes(|b| b.to_vec());
                        *FORK_AT.lock().unwrap() = None;
                        if IN_CHILD.load(Ordering::Acquire) {
                            // Only this thread exists in the child: judge here.
                            let code = judge_access_in_child(&what, got, &want);
                            // SAFETY: ends the child at once.
                            unsafe { libc::_exit(code) }
                        }
                        (got, false, CHILD.load(Ordering::Acquire))
                    })
                    .join()
                    .unwrap()
                });
                if child {
                    let code = judge_access_in_child(&what, got, &want);
                    // SAFETY: ends the child at once.
                    unsafe { libc::_exit(code) }
                }
                assert_eq!(got.unwrap(), want, "{what}: parent");
                if pid == 0 {
                    println!("{what}: no fork (the path does not call it)");
                    continue;
                }
                println!("{what}: forked");
                let status = common::wait_status(pid);
                if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                    failures.push(format!("{what}: child status {status:#x}"));
                }
            }
            s.close().unwrap();
        }
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        assert!(failures.is_empty(), "{} failures: {failures:#?}", failures.len());
    }
}
