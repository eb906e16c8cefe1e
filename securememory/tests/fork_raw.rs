//! Forks that skip glibc's at-fork handlers (issue 9, items 3 and 8): a
//! child made by a raw `fork` or `clone` system call.
//!
//! - The parent's secrets are `Error::Forked` there (never `Ok`, never
//!   zeros; the closure never runs), on every backend and layout; the memory
//!   file's descriptor, still open when the child starts (nothing closes a
//!   descriptor at a raw fork), is closed by the child's first library call;
//!   closing and dropping the parent's secrets returns at once; the child
//!   makes and reads secrets of its own in every configuration.
//! - The locked-memory budget starts at zero in a fork child (glibc's and a
//!   raw one): `mlock` is not inherited, so the parent's bytes are not the
//!   child's. Under a memlock limit the parent used up, the child can still
//!   make a secret, and releasing the parent's secrets there subtracts
//!   nothing.

#[macro_use]
mod common;
mod support_proc;

use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use common::child::{describe, in_worker};
use common::configs::{self, Config};
use common::library_error;
use common::procfs::{smaps, vm_lck_kib};
use common::rlimit::CAP_IPC_LOCK;
use securememory::test_hooks::{clear_faults, fail_next, store_fd, FaultOp};
use securememory::{stats, Error, ProtectedFactory, Secret, SecretFactory};
use support_proc::fork_and_wait;

/// How the child is made.
#[derive(Clone, Copy, Debug)]
enum RawFork {
    /// `syscall(SYS_fork)` (x86_64 has it; newer architectures only `clone`).
    #[cfg(target_arch = "x86_64")]
    Fork,
    /// `syscall(SYS_clone, SIGCHLD, 0, ...)`: what `fork` is made of.
    Clone,
}

fn kinds() -> Vec<RawFork> {
    vec![
        #[cfg(target_arch = "x86_64")]
        RawFork::Fork,
        RawFork::Clone,
    ]
}

/// Make a child with a raw system call (no at-fork handler runs); in it run
/// `child` and `_exit` with its code (101 on panic); in the parent wait.
/// Call from a single-threaded worker: glibc's locks are not made safe for
/// the child by a raw fork.
fn raw_fork_and_wait(kind: RawFork, child: impl FnOnce() -> i32) -> ExitStatus {
    io::stdout().flush().ok();
    io::stderr().flush().ok();
    // SAFETY: both make a copy of this process, as fork(2) does; the child
    // runs only `child` and `_exit`s. With a zero stack argument the clone
    // child runs on its copy of this stack, like a fork child.
    let pid = unsafe {
        match kind {
            #[cfg(target_arch = "x86_64")]
            RawFork::Fork => libc::syscall(libc::SYS_fork),
            RawFork::Clone => {
                libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0)
            }
        }
    };
    assert!(pid >= 0, "{kind:?}: {}", io::Error::last_os_error());
    if pid == 0 {
        common::run_and_exit(child);
    }
    // The child signals SIGCHLD at exit, so it is waited for like a fork's.
    ExitStatus::from_raw(common::wait_status(pid as libc::pid_t))
}

/// Whether `fd` is an open descriptor.
fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD reads descriptor flags; no memory is passed.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

const PARENTS: &[u8] = b"the parent's secret, 32 bytes.!!";
const CHILDS: &[u8] = b"a raw fork child's own secret";

child_test! {
    fn raw_fork_child_gets_forked_and_makes_its_own() {
        let configs = configs::all();
        for kind in kinds() {
            for cfg in &configs {
                raw_fork_case(kind, cfg, &configs);
            }
            println!("{kind:?}: Error::Forked for the parent's secrets, descriptor closed, own secrets work, in {} configurations", configs.len());
        }
    }
}

fn raw_fork_case(kind: RawFork, cfg: &Config, configs: &[Config]) {
    let secret = cfg.factory().new(&mut PARENTS.to_vec()).expect("create");
    let fd = store_fd();
    let status = raw_fork_and_wait(kind, || match raw_child(&secret, fd, configs) {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("{kind:?} child ({}): {why}", cfg.name);
            1
        }
    });
    assert!(
        status.success(),
        "{kind:?} child ({}): {}",
        cfg.name,
        describe(status)
    );
    // The parent is untouched by what the child did.
    assert_eq!(
        secret.with_bytes(<[u8]>::to_vec).unwrap(),
        PARENTS,
        "{}",
        cfg.name
    );
    secret.close().unwrap();
}

fn raw_child(secret: &Secret, fd: Option<i32>, configs: &[Config]) -> Result<(), String> {
    // Before the first library call the kernel has closed nothing: the
    // README states this limit; this keeps the statement true.
    if let Some(fd) = fd {
        if !is_open(fd) {
            return Err(format!("fd {fd} already closed before any library call"));
        }
    }
    let mut ran = false;
    match secret.with_bytes(|b| {
        ran = true;
        b.to_vec()
    }) {
        Err(Error::Forked) => {}
        other => return Err(format!("with_bytes: {other:?}")),
    }
    if ran {
        return Err("the access closure ran".into());
    }
    if let Some(fd) = fd {
        if is_open(fd) {
            return Err(format!("memory file fd {fd} still open after with_bytes"));
        }
    }
    let mut buf = [0u8; 64];
    match secret.reader().read(&mut buf) {
        Err(e) if matches!(library_error(&e), Some(Error::Forked)) => {}
        other => return Err(format!("reader: {other:?}")),
    }
    if buf != [0u8; 64] {
        return Err("the reader wrote into the buffer".into());
    }
    match secret.with_bytes_func(|b| Ok::<_, Error>(b.to_vec())) {
        Err(Error::Forked) => {}
        other => return Err(format!("with_bytes_func: {other:?}")),
    }
    // New secrets of every configuration, read back.
    for cfg in configs {
        let own = cfg
            .factory()
            .new(&mut CHILDS.to_vec())
            .map_err(|e| format!("{}: create in the child: {e}", cfg.name))?;
        match own.with_bytes(<[u8]>::to_vec) {
            Ok(b) if b == CHILDS => {}
            other => return Err(format!("{}: own secret read back: {other:?}", cfg.name)),
        }
        let mut out = Vec::new();
        own.reader()
            .read_to_end(&mut out)
            .map_err(|e| format!("{}: own reader: {e}", cfg.name))?;
        if out != CHILDS {
            return Err(format!("{}: own reader read the wrong bytes", cfg.name));
        }
        own.close()
            .map_err(|e| format!("{}: own close: {e}", cfg.name))?;
    }
    // Closing the parent's secret neither hangs nor fails.
    secret.close().map_err(|e| format!("close: {e}"))?;
    match secret.with_bytes(|_| ()) {
        Err(Error::Forked) | Err(Error::Closed) => Ok(()),
        other => Err(format!("with_bytes after close: {other:?}")),
    }
}

child_test! {
    /// Without `MADV_WIPEONFORK` (kernels before 4.14; here its madvise is
    /// made to fail before the library's first use) fork children are
    /// detected by pid: a raw fork child still gets `Error::Forked` and its
    /// inherited descriptor closed.
    fn raw_fork_child_detected_by_pid_without_wipeonfork() {
        fail_next(FaultOp::Madvise, 0, libc::EINVAL);
        // The first factory makes the sentinel: its madvise fails.
        let _ = ProtectedFactory::default();
        clear_faults();
        // The fallback is in use: no wipe-on-fork page exists yet (the
        // sentinel would be one).
        assert!(
            !smaps().iter().any(|v| v.has_flag("wf")),
            "a MADV_WIPEONFORK sentinel exists: the fallback is not what runs"
        );
        let cfg = configs::by_name("memfd-page-copy");
        for kind in kinds() {
            raw_fork_case(kind, &cfg, std::slice::from_ref(&cfg));
        }
        println!("pid fallback: raw fork children get Error::Forked and the descriptor closed");
    }
}

child_test! {
    /// A raw fork child whose own code closed the inherited descriptor and
    /// got its number back for a file of its own, before its first library
    /// call: that call leaves the child's file open (it closes the number
    /// only while it still names the memory file).
    fn raw_fork_child_keeps_its_own_file_on_a_reused_descriptor_number() {
        let secret = ProtectedFactory::default().new(&mut PARENTS.to_vec()).expect("create");
        let fd = store_fd().expect("the memory file is open");
        for kind in kinds() {
            let status = raw_fork_and_wait(kind, || {
                // SAFETY: the child's own descriptor table; `fd` is closed and
                // the next open takes the lowest free number, which is `fd`
                // (every lower one is in use: the memory file came later).
                let mine = unsafe {
                    libc::close(fd);
                    libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY)
                };
                if mine != fd {
                    eprintln!("could not reuse fd {fd} (got {mine})");
                    return 2;
                }
                if !matches!(secret.with_bytes(|_| ()), Err(Error::Forked)) {
                    return 3;
                }
                if !is_open(fd) {
                    eprintln!("the library closed the child's own file on fd {fd}");
                    return 4;
                }
                0
            });
            assert!(status.success(), "{kind:?} child: {}", describe(status));
        }
        secret.close().unwrap();
    }
}

const LIMIT: u64 = 64 * 1024;

#[test]
fn fork_child_budget_starts_at_zero() {
    in_worker(
        "fork_child_budget_starts_at_zero",
        "budget",
        &[CAP_IPC_LOCK],
        budget_worker,
    );
}

fn budget_worker() {
    common::rlimit::no_ipc_lock_soft_limit(LIMIT);
    let page = common::page_size() as u64;
    let factory = ProtectedFactory::default();
    // Use the limit up.
    let mut held: Vec<Secret> = Vec::new();
    loop {
        match factory.new(&mut [9u8; 32]) {
            Ok(s) => held.push(s),
            Err(Error::LockFailed { .. }) => break,
            Err(e) => panic!("expected LockFailed, got {e}"),
        }
        assert!(
            held.len() < 1000,
            "never refused under a {LIMIT}-byte limit"
        );
    }
    let used = stats().bytes_locked;
    assert!(used + page > LIMIT, "the parent's budget is full: {used}");
    println!(
        "parent: {} secrets, {used} bytes locked, refused after",
        held.len()
    );

    let in_child = || match budget_child(&held, page) {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("budget child: {why}");
            1
        }
    };
    let status = fork_and_wait(in_child);
    assert!(status.success(), "glibc fork child: {}", describe(status));
    for kind in kinds() {
        let status = raw_fork_and_wait(kind, in_child);
        assert!(status.success(), "{kind:?} child: {}", describe(status));
    }
    // The parent's count is its own, unchanged by its children.
    assert_eq!(stats().bytes_locked, used);
    drop(held);
    securememory::release_ready_pages();
    assert_eq!(stats().bytes_locked, 0);
    println!("fork children (glibc and raw) start with an empty budget and can lock memory");
}

fn budget_child(parents: &[Secret], page: u64) -> Result<(), String> {
    let at_start = stats().bytes_locked;
    if at_start != 0 {
        return Err(format!("bytes_locked starts at {at_start}, not 0"));
    }
    let lck = vm_lck_kib();
    if lck != 0 {
        return Err(format!("VmLck is {lck} kB at the child's start"));
    }
    let own = ProtectedFactory::default()
        .new(&mut [5u8; 32])
        .map_err(|e| format!("create under the parent's used-up limit: {e}"))?;
    if stats().bytes_locked != page {
        return Err(format!(
            "bytes_locked {} after one page",
            stats().bytes_locked
        ));
    }
    // Releasing the parent's secrets here must not subtract their bytes.
    for s in parents {
        s.close()
            .map_err(|e| format!("close a parent's secret: {e}"))?;
    }
    if stats().bytes_locked != page {
        return Err(format!(
            "bytes_locked {} after closing the parent's secrets (expected {page})",
            stats().bytes_locked
        ));
    }
    own.close().map_err(|e| format!("close: {e}"))?;
    // Its page is kept ready (locked) in the child's own store: given back.
    securememory::release_ready_pages();
    match stats().bytes_locked {
        0 => Ok(()),
        n => Err(format!("bytes_locked {n} after closing the child's secret")),
    }
}
