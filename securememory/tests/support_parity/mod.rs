//! Shared helpers of `go_parity.rs`, `faults.rs` and `observability.rs`: the
//! factory configurations every behaviour is checked in, the re-exec
//! machinery for tests that read process-wide figures (counters, `VmLck`,
//! `/proc/self/maps`), and a footprint of those figures for leak checks.
//!
//! Each test file uses only part of this module.
#![allow(dead_code)]

use std::process::Command;

use securememory::{stats, AccessPath, Backend, Layout, Options, ProtectedFactory, SecretFactory};

/// Set in a re-executed test binary to the name of the test it must run as
/// the child (its presence is what makes the test body run).
pub const CHILD_ENV: &str = "SECUREMEMORY_PARITY_CHILD";

/// A distinctive secret: a test that finds any of its forms in text output
/// (ASCII, hex, decimal) has found a leak.
pub const TOPSECRET: &[u8; 20] = b"TOPSECRET-0123456789";

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
    pub fn is_window(&self) -> bool {
        self.opts.access == AccessPath::Window
    }
    pub fn is_copy(&self) -> bool {
        self.opts.access == AccessPath::Copy
    }
    pub fn is_pooled(&self) -> bool {
        self.opts.layout == Layout::Pooled
    }
    pub fn is_guarded(&self) -> bool {
        self.opts.layout == Layout::Guarded
    }
    /// Whether a secret of `len` bytes takes the window when accessed: the
    /// window path, or the copy path's fallback for secrets larger than the
    /// scratch buffer (pooled secrets that fit a slot never do).
    pub fn window_for(&self, len: usize) -> bool {
        if self.is_window() {
            return true;
        }
        if self.is_pooled() && len <= securememory::POOL_MAX_SLOT {
            return false;
        }
        len > securememory::scratch_capacity()
    }
}

/// Every valid configuration: the three backends, the three layouts (pooled
/// is memfd only) and, on memfd, both access paths. `MemfdSecret` ones are
/// left out, with a loud `SKIPPED:` line, where the kernel refuses
/// `memfd_secret`.
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

/// The configurations whose accesses go through an `mprotect` window.
pub fn window_configs() -> Vec<Config> {
    all().into_iter().filter(Config::is_window).collect()
}

/// The configurations on the copy path (`pread` of the memory file).
pub fn copy_configs() -> Vec<Config> {
    all().into_iter().filter(Config::is_copy).collect()
}

/// Whether this process runs as the child of `test`.
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(test)
}

/// Run `body` in a re-executed copy of this test binary that runs only the
/// test `test` (which must be the name of the calling `#[test]` function at
/// the crate root), alone and on one thread, so that process-wide figures
/// (counters, locked memory, mappings) move only by what `body` does. In the
/// parent: spawn the child and fail unless it ran that one test and passed.
pub fn in_child(test: &str, body: impl FnOnce()) {
    if is_child(test) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .output()
        .expect("spawn the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Pass the child's notes (SKIPPED lines, say) through to the parent.
    for line in stderr.lines().filter(|l| l.starts_with("SKIPPED:")) {
        eprintln!("{line}");
    }
    assert!(
        out.status.success(),
        "child for {test} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "child for {test} did not run exactly that test:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

/// A `#[test]` whose body runs in a child process of its own (see
/// [`in_child`]). Use at the crate root of a test file that declares this
/// module with `#[macro_use]`.
#[allow(unused_macros)]
macro_rules! child_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            support_parity::in_child(stringify!($name), || $body)
        }
    };
}

/// `VmLck` of this process in KiB.
pub fn vm_lck_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmLck in /proc/self/status")
}

/// The process-wide figures a failed creation must leave as they were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub allocated: u64,
    pub in_use: u64,
    pub bytes_locked: u64,
    pub vm_lck_kib: u64,
    /// Lines of `/proc/self/maps`.
    pub map_lines: usize,
    /// Bytes of all mappings except the main heap and stack (which move by
    /// themselves); a leaked mapping merged with a neighbour still shows here.
    pub mapped_bytes: u64,
}

impl Footprint {
    pub fn now() -> Footprint {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        let mut map_lines = 0;
        let mut mapped_bytes = 0;
        for line in maps.lines() {
            map_lines += 1;
            if line.ends_with("[heap]") || line.ends_with("[stack]") {
                continue;
            }
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = range.split_once('-') {
                let a = u64::from_str_radix(a, 16).unwrap_or(0);
                let b = u64::from_str_radix(b, 16).unwrap_or(0);
                mapped_bytes += b.saturating_sub(a);
            }
        }
        let s = stats();
        Footprint {
            allocated: s.allocated,
            in_use: s.in_use,
            bytes_locked: s.bytes_locked,
            vm_lck_kib: vm_lck_kib(),
            map_lines,
            mapped_bytes,
        }
    }

    /// Fail with `what` unless the figures now equal `self`.
    pub fn assert_unchanged(&self, what: &str) {
        let now = Footprint::now();
        if &now != self {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
            panic!("{what}: leaked something\n before: {self:?}\n after:  {now:?}\n/proc/self/maps now:\n{maps}");
        }
    }
}

/// Create and close one secret of `cfg` and make one access of each kind, so
/// that the lazily created process-wide memory file, this thread's scratch
/// buffer and (for pooled) a pool chunk of the class of `len` exist before a
/// footprint is taken.
pub fn warm_up(cfg: &Config, len: usize) {
    let f = cfg.factory();
    let s = f
        .create_random(len)
        .unwrap_or_else(|e| panic!("{}: warm-up: {e}", cfg.name));
    s.with_bytes(|b| assert_eq!(b.len(), len)).unwrap();
    s.close().unwrap();
    // The copy path's scratch buffer is per thread, made on first use.
    let d = ProtectedFactory::default().create_random(16).unwrap();
    d.with_bytes(|_| ()).unwrap();
    d.close().unwrap();
}

/// A test pattern of `len` bytes that differs at every position of a page.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Every text form of `secret` a leak could take: the ASCII, hex (lower and
/// upper, plain and spaced) and decimal list forms, each of a 4-byte window
/// (8 for ASCII) or longer, so that a partial leak is caught too.
pub fn leak_forms(secret: &[u8]) -> Vec<String> {
    let mut forms = vec![String::from_utf8_lossy(secret).into_owned()];
    // Any 8 consecutive characters of the ASCII form.
    for w in secret.windows(8) {
        forms.push(String::from_utf8_lossy(w).into_owned());
    }
    for w in secret.windows(4) {
        forms.push(w.iter().map(|b| format!("{b:02x}")).collect());
        forms.push(w.iter().map(|b| format!("{b:02X}")).collect());
        forms.push(
            w.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        forms.push(
            w.iter()
                .map(|b| format!("{b}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        forms.push(
            w.iter()
                .map(|b| format!("0x{b:x}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    forms
}

/// Fail if `text` contains any form of `secret` (see [`leak_forms`]).
pub fn assert_no_leak(text: &str, secret: &[u8], what: &str) {
    for form in leak_forms(secret) {
        assert!(
            !text.contains(&form),
            "{what}: contains {form:?} of the secret:\n{text}"
        );
    }
}

/// The permissions (`rw-s`, `---p`, ...) of the mapping holding `addr`, from
/// `/proc/self/maps`; `None` if nothing is mapped there.
pub fn perms_at(addr: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let (a, b) = parts.next()?.split_once('-')?;
        let (a, b) = (
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        );
        (a <= addr && addr < b).then(|| parts.next().unwrap_or("").to_string())
    })
}

/// Soft and hard `RLIMIT_MEMLOCK` from `/proc/self/limits` (`None`: unlimited).
pub fn memlock_limits() -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .expect("Max locked memory in /proc/self/limits");
    let mut v = line["Max locked memory".len()..]
        .split_whitespace()
        .map(|x| x.parse::<u64>().ok());
    (v.next().flatten(), v.next().flatten())
}

/// Whether the mapping holding `addr` is locked (`mlock`ed: the `lo` flag
/// in its `VmFlags` in `/proc/self/smaps`).
pub fn is_locked_at(addr: usize) -> bool {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = head.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a <= addr && addr < b;
                continue;
            }
        }
        if inside && line.starts_with("VmFlags:") {
            return line.split_whitespace().any(|f| f == "lo");
        }
    }
    panic!("no mapping at {addr:#x} in /proc/self/smaps")
}
