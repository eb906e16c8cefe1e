//! Attacks on the fork machinery (fork fence, `MADV_WIPEONFORK` sentinel,
//! the child's first-call work), each in a child process of its own.
//!
//! - A fork from another thread while the first factory installs the fork
//!   machinery: the child's first library call must not hang.
//! - A chain of glibc forks deeper than the library's per-generation tables:
//!   what each level can still make, as the README says (the README said
//!   every fork child can make secrets of its own; past 16 generations the
//!   memory file and the pool are refused).
//! - A raw-fork child that starts two threads before its first library
//!   call, both calling in at once: one does the child's work, both see the
//!   parent's secrets `Forked` and the descriptor closed.

#[macro_use]
mod common;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use securememory::test_hooks::store_fd;
use securememory::{Backend, Error, Layout, Options, ProtectedFactory, Secret, SecretFactory};

/// Options of the configurations every level of a fork chain tries.
fn chain_configs() -> Vec<(&'static str, Options)> {
    vec![
        ("memfd page", Options::default()),
        ("memfd guarded", Options::default().layout(Layout::Guarded)),
        ("pooled", Options::default().layout(Layout::Pooled)),
        ("anonymous", Options::default().backend(Backend::Anonymous)),
    ]
}

/// Make, read and close a secret with `opts`; `Ok` if every step worked.
fn make_and_read(opts: Options) -> Result<(), Error> {
    let f = ProtectedFactory::new(opts)?;
    let mut src = *b"attack2 fork chain secret bytes!";
    let s = f.new(&mut src)?;
    let back = s.with_bytes(|b| b.to_vec())?;
    assert_eq!(back, b"attack2 fork chain secret bytes!");
    s.close()
}

/// `_exit` at once (no destructors, no buffered output of the parent).
fn exit_now(code: i32) -> ! {
    io::stderr().flush().ok();
    // SAFETY: ends this process at once.
    unsafe { libc::_exit(code) }
}

/// Wait for `pid`; its raw wait status.
fn wait_for(pid: libc::pid_t) -> i32 {
    common::wait_status(pid)
}

/// How many fresh processes race a fork against the first install.
fn install_race_trials() -> usize {
    std::env::var("SECUREMEMORY_ATTACK2_INSTALL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// One trial, in a process that has not used the library yet: a thread
/// forks (glibc `fork`) as fast as it can while the main thread makes the
/// first factory; every fork child calls the library once under a 3 s
/// alarm. Returns how many children the alarm killed (hung) and how many
/// forks were made.
fn install_race_once() -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let hung = Arc::new(AtomicUsize::new(0));
    let forks = Arc::new(AtomicUsize::new(0));
    let forker = {
        let (stop, started, hung, forks) =
            (stop.clone(), started.clone(), hung.clone(), forks.clone());
        std::thread::spawn(move || {
            let mut kids = Vec::new();
            // Fork until the factory is made, then a few more.
            let mut after = 0;
            while after < 4 {
                if stop.load(Ordering::Acquire) {
                    after += 1;
                }
                // SAFETY: the child only calls the library and `_exit`s.
                let pid = unsafe { libc::fork() };
                started.store(true, Ordering::Release);
                if pid == 0 {
                    // SAFETY: a SIGALRM (default action: terminate) ends a hung child.
                    unsafe { libc::alarm(3) };
                    let ok = make_and_read(Options::default().backend(Backend::Anonymous)).is_ok();
                    exit_now(if ok { 0 } else { 1 });
                }
                assert!(pid > 0, "fork: {}", io::Error::last_os_error());
                forks.fetch_add(1, Ordering::Relaxed);
                kids.push(pid);
            }
            for pid in kids {
                let status = wait_for(pid);
                if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
                    hung.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    while !started.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let _f = ProtectedFactory::new(Options::default().backend(Backend::Anonymous)).unwrap();
    stop.store(true, Ordering::Release);
    forker.join().unwrap();
    (hung.load(Ordering::Relaxed), forks.load(Ordering::Relaxed))
}

/// A glibc `fork()` from another thread while the first factory is being
/// made (the fork machinery's one-time install in progress) must leave a
/// child whose library calls work, not one that waits forever for an
/// install that no thread of it is running.
#[test]
fn fork_during_first_install_does_not_hang_the_child() {
    const ROLE: &str = "attack2-install-race";
    if common::child::role().as_deref() == Some(ROLE) {
        let (hung, forks) = install_race_once();
        println!("INSTALL-RACE hung={hung} forks={forks}");
        common::child::done();
        return;
    }
    let mut hung_total = 0;
    for _ in 0..install_race_trials() {
        let run =
            common::child::Child::new("fork_during_first_install_does_not_hang_the_child", ROLE)
                .run();
        run.assert_done("install race trial");
        let line = run
            .stdout
            .lines()
            .find(|l| l.contains("INSTALL-RACE"))
            .expect("trial result line")
            .to_string();
        let hung: usize = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("hung="))
            .unwrap()
            .parse()
            .unwrap();
        hung_total += hung;
        if hung_total > 0 {
            break;
        }
    }
    assert_eq!(
        hung_total, 0,
        "{hung_total} fork children hung at their first library call"
    );
}

/// Fork generations that have a memory file, pool tables and stranded
/// list of their own (the README's "Fork, exactly").
const GENERATIONS_WITH_TABLES: u32 = 16;

/// One level of a fork chain: the parent's secret is `Forked` here; every
/// configuration works, or past the per-generation tables is the documented
/// `Unsupported` (memory file and pool) while `Anonymous` still works; then
/// fork the next level and pass its code up.
fn chain_level(level: u32, last: u32, inherited: Option<&Secret>) -> i32 {
    if let Some(s) = inherited {
        match s.with_bytes(|b| b.to_vec()) {
            Err(Error::Forked) => {}
            other => {
                eprintln!("level {level}: parent's secret gave {other:?}");
                return 10;
            }
        }
    }
    let deep = level >= GENERATIONS_WITH_TABLES;
    for (name, opts) in chain_configs() {
        let r = make_and_read(opts);
        eprintln!("level {level}: {name}: {r:?}");
        let as_documented = match (&r, deep, name) {
            (Ok(()), false, _) | (Ok(()), true, "anonymous") => true,
            (Err(Error::Unsupported(why)), true, n) if n != "anonymous" => {
                why.contains("fork chain deeper than 16")
            }
            _ => false,
        };
        if !as_documented {
            eprintln!("CHAIN-FAIL level {level} {name}: {r:?}");
            return 20;
        }
    }
    let own = ProtectedFactory::new(Options::default().backend(Backend::Anonymous))
        .and_then(|f| f.new(&mut [7u8; 16]));
    let own = match own {
        Ok(s) => s,
        Err(e) => {
            eprintln!("CHAIN-FAIL level {level} own secret: {e}");
            return 30;
        }
    };
    if level == last {
        return 0;
    }
    io::stderr().flush().ok();
    // SAFETY: the child runs the next level and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            chain_level(level + 1, last, Some(&own))
        }))
        .unwrap_or(101);
        exit_now(code);
    }
    let status = wait_for(pid);
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        eprintln!(
            "level {}: killed by signal {}",
            level + 1,
            libc::WTERMSIG(status)
        );
        102
    }
}

child_test! {
    /// Eighteen processes in a chain of glibc forks (generations 0 to 17):
    /// each of the first 16 makes, reads and closes secrets of its own in
    /// every layout; deeper ones get `Error::Unsupported` naming the fork
    /// chain for the memory file and the pool, and `Anonymous` secrets work.
    /// Never a hang, a crash, or the parent's bytes.
    fn chained_forks_past_sixteen_get_the_documented_answer() {
        let code = chain_level(0, 17, None);
        assert_eq!(code, 0, "a level of the fork chain failed (see stderr)");
    }
}

/// A raw-fork child (no at-fork handler ran) that starts two threads before
/// its first library call; both call in at once. Each sees the parent's
/// secret `Forked` and the memory file's descriptor closed; both then make
/// secrets of their own.
fn raw_child_two_threads(parent_secret: &Secret, parent_fd: i32, parent_id: (u64, u64)) -> i32 {
    let go = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..2 {
        let go = go.clone();
        // The secret outlives the threads (joined below); smuggle its address.
        let s = parent_secret as *const Secret as usize;
        threads.push(std::thread::spawn(move || {
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            // SAFETY: the secret lives until after the join.
            let s = unsafe { &*(s as *const Secret) };
            let r = s.with_bytes(|b| b.to_vec());
            let forked = matches!(r, Err(Error::Forked));
            let own = make_and_read(Options::default()).is_ok();
            (forked, own)
        }));
    }
    go.store(true, Ordering::Release);
    let mut code = 0;
    for t in threads {
        match t.join() {
            Ok((true, true)) => {}
            Ok(r) => {
                eprintln!("raw child thread: forked/own = {r:?}");
                code = 1;
            }
            Err(_) => code = 2,
        }
    }
    // The number may now name the child's own memory file: compare files.
    if file_id(parent_fd) == Some(parent_id) {
        eprintln!("raw child: the parent's memory file is still open as {parent_fd}");
        code = 3;
    }
    code
}

/// (device, inode) of the file `fd` names, if it is open.
fn file_id(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; a closed number is an error, not UB.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

child_test! {
    /// Two threads of a raw-fork child race for the child's work (repeated).
    fn raw_fork_child_two_threads_race_for_the_child_work() {
        let f = ProtectedFactory::new(Options::default()).unwrap();
        let s = f.new(&mut [9u8; 32]).unwrap();
        let fd = store_fd().expect("memory file open");
        let id = file_id(fd).expect("memory file identity");
        for _ in 0..50 {
            io::stderr().flush().ok();
            // SAFETY: a copy of this process; the child runs the check and `_exit`s.
            let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
            assert!(pid >= 0);
            if pid == 0 {
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    raw_child_two_threads(&s, fd, id)
                }))
                .unwrap_or(101);
                exit_now(code);
            }
            let status = wait_for(pid as libc::pid_t);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "raw fork child failed: status {status:#x}"
            );
        }
        s.close().unwrap();
    }
}

/// Whether this process holds a `memfd_secret` file: a descriptor to one or
/// a mapping of one.
fn holds_secretmem() -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if maps.contains("secretmem") {
        return true;
    }
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_link(e.path())
                    .map(|t| t.to_string_lossy().contains("secretmem"))
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

child_test! {
    /// The README: no `fork()` lands "while a `memfd_secret` descriptor is
    /// open". The `memfd_secret` probe (each `Auto` or `MemfdSecret` factory,
    /// `memfd_secret_status()`) opens one too: a thread forks all the time
    /// while another probes; no child may hold a `memfd_secret` file.
    fn fork_during_the_memfd_secret_probe_leaves_the_child_none() {
        if securememory::memfd_secret_status().is_err() {
            eprintln!("SKIPPED: no memfd_secret here");
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let forker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut forks, mut bad) = (0usize, 0usize);
                while !stop.load(Ordering::Acquire) {
                    // SAFETY: the child reads /proc and `_exit`s.
                    let pid = unsafe { libc::fork() };
                    if pid == 0 {
                        exit_now(if holds_secretmem() { 1 } else { 0 });
                    }
                    assert!(pid > 0);
                    forks += 1;
                    let status = wait_for(pid);
                    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                        bad += 1;
                    }
                }
                (forks, bad)
            })
        };
        for _ in 0..3000 {
            let _ = ProtectedFactory::new(Options::default().backend(Backend::Auto));
            let _ = securememory::memfd_secret_status();
        }
        stop.store(true, Ordering::Release);
        let (forks, bad) = forker.join().unwrap();
        println!("forks {forks}, children holding a memfd_secret file: {bad}");
        assert_eq!(bad, 0, "{bad} of {forks} fork children held a memfd_secret file");
    }
}
