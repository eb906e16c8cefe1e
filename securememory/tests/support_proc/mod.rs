//! Shared helpers of the process-level tests (`guarantee_fork.rs`,
//! `guarantee_memfd_secret.rs`, `guarantee_descriptor.rs`, `memlock_limit.rs`,
//! `pool_capacity.rs`): the configurations, re-executing this test binary as
//! a clean worker process, `fork`, reading memory through `/proc/self/mem`,
//! capabilities, resource limits and a `tracing` capture.
//!
//! Each test file uses only part of this module.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};

use securememory::{Backend, Layout, Options};

/// Set in a re-executed test binary: the role (usually a configuration
/// name) the worker plays. Its presence is what makes a test act as worker.
pub const ROLE_ENV: &str = "SECUREMEMORY_PROC_ROLE";

/// Printed by a worker on stdout when it got to the end, so the parent can
/// tell "passed" from "ran no test at all" (a wrong `--exact` name exits 0).
pub const DONE: &str = "PROC-WORKER-DONE";

/// `CAP_IPC_LOCK` (linux/capability.h): lifts `RLIMIT_MEMLOCK`.
pub const CAP_IPC_LOCK: u32 = 14;

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// The role of this process, if it is a re-executed worker.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// One backend x layout configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub name: &'static str,
    pub backend: Backend,
    pub layout: Layout,
}

impl Config {
    /// Factory options of this configuration (access path: the backend's default).
    pub fn options(&self) -> Options {
        Options::default().backend(self.backend).layout(self.layout)
    }

    /// Whether the mapping is shared (memfd, memfd_secret): `MADV_DONTFORK`.
    pub fn shared(&self) -> bool {
        self.backend != Backend::Anonymous
    }
}

/// Every configuration: three backends, three layouts, pooled on memfd only.
pub const ALL: [Config; 7] = [
    Config {
        name: "memfd-page",
        backend: Backend::Memfd,
        layout: Layout::Page,
    },
    Config {
        name: "memfd-guarded",
        backend: Backend::Memfd,
        layout: Layout::Guarded,
    },
    Config {
        name: "memfd-pooled",
        backend: Backend::Memfd,
        layout: Layout::Pooled,
    },
    Config {
        name: "anonymous-page",
        backend: Backend::Anonymous,
        layout: Layout::Page,
    },
    Config {
        name: "anonymous-guarded",
        backend: Backend::Anonymous,
        layout: Layout::Guarded,
    },
    Config {
        name: "memfd_secret-page",
        backend: Backend::MemfdSecret,
        layout: Layout::Page,
    },
    Config {
        name: "memfd_secret-guarded",
        backend: Backend::MemfdSecret,
        layout: Layout::Guarded,
    },
];

/// The configuration called `name`.
pub fn config(name: &str) -> Config {
    *ALL.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no configuration {name}"))
}

/// Whether `memfd_secret` works here; if not, prints a loud `SKIPPED:` line
/// naming `what` and returns `false`.
pub fn memfd_secret_or_skip(what: &str) -> bool {
    match securememory::memfd_secret_status() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED: {what}: memfd_secret is unavailable on this machine: {why}");
            false
        }
    }
}

/// The configurations of `configs` this machine can run (MemfdSecret ones
/// are skipped loudly where the kernel refuses `memfd_secret`).
pub fn available(configs: &[Config]) -> Vec<Config> {
    configs
        .iter()
        .copied()
        .filter(|c| c.backend != Backend::MemfdSecret || memfd_secret_or_skip(c.name))
        .collect()
}

/// What a worker process did.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panic (showing the worker's output) unless it exited 0 and printed [`DONE`].
    pub fn assert_done(&self, what: &str) {
        assert!(
            self.status.success() && self.stdout.contains(DONE),
            "{what}: worker failed: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            describe(self.status),
            self.stdout,
            self.stderr
        );
    }
}

/// "exit code N" or "signal N".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{status:?}"),
    }
}

/// Re-execute this test binary to run only `test` (single test thread),
/// with [`ROLE_ENV`] set to `role`. Each capability in `drop_bounding` is
/// dropped from the capability bounding set between fork and exec: root
/// regains every capability of the bounding set at `exec`, so this is the
/// way to start a worker none of whose threads (the test harness's main
/// thread included) holds them.
pub fn reexec(test: &str, role: &str, drop_bounding: &[u32]) -> Run {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role);
    let caps = drop_bounding.to_vec();
    if !caps.is_empty() {
        // SAFETY: runs in the forked child before exec; it only calls prctl
        // (async-signal-safe) and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for &cap in &caps {
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().expect("spawn the worker");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Say the worker got to its end (see [`DONE`]).
pub fn done() {
    println!("{DONE}");
}

/// Fork. In the child run `child` and leave with `_exit(code)` (101 if it
/// panics) without returning into the test harness; in the parent wait for
/// the child and return its status.
///
/// Call it from a worker (see [`reexec`]): the harness's other thread is
/// then idle, so no lock is held across the fork.
pub fn fork_and_wait(child: impl FnOnce() -> i32) -> ExitStatus {
    io::stdout().flush().ok();
    io::stderr().flush().ok();
    // SAFETY: fork has no memory-safety preconditions; the child runs only
    // `child` and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        io::stdout().flush().ok();
        io::stderr().flush().ok();
        // SAFETY: ends the child at once; nothing of the parent's (atexit
        // handlers, the harness) runs in it.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted, "waitpid: {e}");
    }
    ExitStatus::from_raw(status)
}

/// `pread` of `[addr, addr + len)` through `/proc/self/mem` (which reads
/// through the kernel's mapping, ignoring `PROT_NONE`). A short read is
/// returned as is.
pub fn read_proc_mem(addr: usize, len: usize) -> io::Result<Vec<u8>> {
    let f = File::open("/proc/self/mem")?;
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, addr as u64)?;
    buf.truncate(n);
    Ok(buf)
}

/// The `/proc/self/maps` line of the mapping that contains `addr`, if any.
pub fn mapping_at(addr: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .find(|line| {
            let range = line.split_whitespace().next().unwrap_or("");
            let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
            let lo = usize::from_str_radix(lo, 16).unwrap_or(0);
            let hi = usize::from_str_radix(hi, 16).unwrap_or(0);
            lo <= addr && addr < hi
        })
        .map(str::to_string)
}

/// A `Name:` field of a `status` file, as text.
pub fn status_field(path: &str, name: &str) -> String {
    let status = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("{path} has no {name}"))
        .trim()
        .to_string()
}

/// `VmLck` of this process in KiB.
pub fn vm_lck_kib() -> u64 {
    let v = status_field("/proc/self/status", "VmLck");
    v.trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmLck is a number")
}

/// Threads of this process.
pub fn thread_ids() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .map(|e| {
            e.expect("task entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Check that no thread of this process has `cap` in its effective or
/// permitted set (capabilities are per thread; the library reads
/// `/proc/self/status`, which is the main thread's).
pub fn assert_no_thread_has(cap: u32) {
    for tid in thread_ids() {
        let path = format!("/proc/self/task/{tid}/status");
        for set in ["CapEff", "CapPrm"] {
            let bits = u64::from_str_radix(&status_field(&path, set), 16).expect("cap mask");
            assert_eq!(
                bits & (1 << cap),
                0,
                "thread {tid} still has capability {cap} in {set} ({bits:#x})"
            );
        }
    }
}

/// The current `RLIMIT_MEMLOCK` as (soft, hard); `None` is unlimited.
pub fn memlock() -> (Option<u64>, Option<u64>) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for the kernel to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) }, 0);
    let f = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    (f(r.rlim_cur), f(r.rlim_max))
}

/// Set `RLIMIT_MEMLOCK` (process-wide); `None` is unlimited.
pub fn set_memlock(soft: Option<u64>, hard: Option<u64>) {
    let r = libc::rlimit {
        rlim_cur: soft.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: hard.unwrap_or(libc::RLIM_INFINITY),
    };
    // SAFETY: `r` is a valid rlimit for the kernel to read.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) };
    assert_eq!(
        rc,
        0,
        "setrlimit(RLIMIT_MEMLOCK): {}",
        io::Error::last_os_error()
    );
}

/// The events a [`Capture`] subscriber saw: level and fields as text.
pub type Events = Arc<Mutex<Vec<(tracing::Level, String)>>>;

/// A minimal `tracing` subscriber that records every event (no spans).
pub struct Capture(pub Events);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), f.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Install a [`Capture`] as the process's global subscriber and return its events.
pub fn capture_tracing() -> Events {
    let events = Events::default();
    tracing::subscriber::set_global_default(Capture(Arc::clone(&events)))
        .expect("no subscriber installed yet");
    events
}
