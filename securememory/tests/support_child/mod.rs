//! Shared helpers of the guarantee tests (`guarantee_*.rs`): the list of
//! configurations every guarantee is checked in, the re-exec machinery for
//! tests whose expected outcome is a dead child process, and a small
//! `/proc/self/smaps` reader.
//!
//! Each test file uses only part of this module.
#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

use securememory::{AccessPath, Backend, Layout, Options, ProtectedFactory};

/// Set in a re-executed test binary: the name of the configuration the child
/// runs (its presence is what makes the test act as the child).
pub const CHILD_ENV: &str = "SECUREMEMORY_GUARANTEE_CHILD";

/// Printed by a child on stderr right before the operation that must kill
/// it, so the parent can tell "died there" from "died earlier".
pub const MARKER: &str = "GUARANTEE-CHILD: reached the fatal access";

/// One configuration of the factory.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub name: &'static str,
    pub opts: Options,
}

impl Config {
    pub fn factory(&self) -> ProtectedFactory {
        ProtectedFactory::new(self.opts).unwrap_or_else(|e| panic!("{}: factory: {e}", self.name))
    }
    pub fn backend(&self) -> Backend {
        self.opts.backend
    }
    pub fn layout(&self) -> Layout {
        self.opts.layout
    }
    pub fn path(&self) -> AccessPath {
        self.opts.access
    }
    pub fn is_window(&self) -> bool {
        self.opts.access == AccessPath::Window
    }
}

/// Every configuration a guarantee applies to: the three backends, the three
/// layouts (pooled is memfd only) and, on memfd, both access paths.
/// `MemfdSecret` ones are left out, with a loud `SKIPPED:` line, where the
/// kernel refuses `memfd_secret`.
pub fn all() -> Vec<Config> {
    use AccessPath::{Copy, Window};
    use Backend::{Anonymous, Memfd, MemfdSecret};
    use Layout::{Guarded, Page, Pooled};
    let table: [(&'static str, Backend, Layout, AccessPath); 9] = [
        ("memfd-page-copy", Memfd, Page, Copy),
        ("memfd-page-window", Memfd, Page, Window),
        ("memfd-guarded-copy", Memfd, Guarded, Copy),
        ("memfd-guarded-window", Memfd, Guarded, Window),
        ("memfd-pooled-copy", Memfd, Pooled, Copy),
        ("anonymous-page-window", Anonymous, Page, Window),
        ("anonymous-guarded-window", Anonymous, Guarded, Window),
        ("memfdsecret-page-window", MemfdSecret, Page, Window),
        ("memfdsecret-guarded-window", MemfdSecret, Guarded, Window),
    ];
    let secret_ok = match securememory::memfd_secret_status() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED: Backend::MemfdSecret configurations: memfd_secret is unavailable here: {why}");
            false
        }
    };
    table
        .into_iter()
        .filter(|&(_, b, _, _)| b != MemfdSecret || secret_ok)
        .map(|(name, backend, layout, access)| Config {
            name,
            opts: Options::default()
                .backend(backend)
                .layout(layout)
                .access(access),
        })
        .collect()
}

/// The configurations `keep` selects.
pub fn select(keep: impl Fn(&Config) -> bool) -> Vec<Config> {
    all().into_iter().filter(|c| keep(c)).collect()
}

/// The configuration named `name` (in a child).
pub fn by_name(name: &str) -> Config {
    all()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no configuration named {name}"))
}

/// In a re-executed child: the configuration it was asked to run.
pub fn child_config() -> Option<Config> {
    std::env::var(CHILD_ENV).ok().map(|n| by_name(&n))
}

/// Re-run this test binary's test `test` alone as a child acting for
/// configuration `config`, in directory `dir` if given, with extra `env`.
pub fn run_child(test: &str, config: &str, dir: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, config)
        .envs(env.iter().copied());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output().expect("spawn the child test process")
}

/// Both output streams of a child, for messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {:?}\n--- child stdout ---\n{}\n--- child stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Assert the child reached [`MARKER`] (so it did not die of something
/// else earlier) and then died by SIGSEGV.
pub fn assert_segv_after_marker(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(MARKER),
        "{what}: the child never reached the fatal access\n{}",
        describe(out)
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "{what}: the child should have died by SIGSEGV\n{}",
        describe(out)
    );
}

/// In a child, just before the fatal access: announce it (unbuffered).
pub fn announce_fatal_access(detail: &str) {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    eprintln!("{MARKER}: {detail}");
}

/// In a child that is meant to crash: no core file (a CI machine may have
/// core dumps on; the crash is expected and its core would litter the tree).
pub fn no_core_file() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct passed by
    // reference; setrlimit only changes this (child) process's limit.
    let r = unsafe {
        if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) == 0 {
            lim.rlim_cur = 0;
            libc::setrlimit(libc::RLIMIT_CORE, &lim)
        } else {
            -1
        }
    };
    if r != 0 {
        eprintln!("note: could not set RLIMIT_CORE to 0 in the child");
    }
}

/// One mapping of `/proc/self/smaps`.
#[derive(Debug)]
pub struct Vma {
    pub start: usize,
    pub end: usize,
    pub header: String,
    pub rss_kb: u64,
    pub locked_kb: u64,
    pub flags: Vec<String>,
}

pub fn smaps() -> Vec<Vma> {
    let text = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut out: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let range = first.split_once('-').and_then(|(lo, hi)| {
            Some((
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
            ))
        });
        if let (Some((start, end)), false) = (range, first.ends_with(':')) {
            out.push(Vma {
                start,
                end,
                header: line.to_string(),
                rss_kb: 0,
                locked_kb: 0,
                flags: Vec::new(),
            });
            continue;
        }
        let Some(vma) = out.last_mut() else { continue };
        let kb = || {
            line.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        match first {
            "Rss:" => vma.rss_kb = kb(),
            "Locked:" => vma.locked_kb = kb(),
            "VmFlags:" => vma.flags = line.split_whitespace().skip(1).map(String::from).collect(),
            _ => {}
        }
    }
    out
}

impl Vma {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    /// The permissions column, e.g. `---p`.
    pub fn perms(&self) -> &str {
        self.header.split_whitespace().nth(1).unwrap_or("")
    }
}

/// The mapping containing `addr`, if any.
pub fn vma_at(addr: usize) -> Option<Vma> {
    smaps()
        .into_iter()
        .find(|v| v.start <= addr && addr < v.end)
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// The test's 32 known, all non-zero bytes.
pub fn known_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, x) in b.iter_mut().enumerate() {
        *x = 0xA0 ^ (i as u8 + 1);
    }
    b
}
