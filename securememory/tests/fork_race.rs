//! A `fork()` at any instant, from any thread, never hands a secret to the
//! child: not mid-creation (issue 9, item 1).
//!
//! In a worker process one thread forks in a loop while two others create
//! and close secrets on every backend and layout (the pool kept full enough
//! that new chunks are made all the time). Each fork child scans its own
//! memory for any secret the parent ever made: every mapping of
//! `/proc/self/maps` (read through `/proc/self/mem`, which reads `PROT_NONE`
//! pages too; `memfd_secret` mappings, which that file cannot read, directly)
//! and every inherited descriptor that is a memory file. It exits with a
//! code that says whether it found one.
//!
//! Recognising "any secret the parent ever made" without a list: every value
//! is `[tag, r, f(r), g(r)]` (four words), `r` random per secret, `tag`,
//! `f` and `g` keyed by words drawn at random once per run. A hit is a
//! 32-byte run that checks, which no unrelated memory does by chance.
//! Values are built in a staging page advised `MADV_DONTFORK` (so the
//! test's own copy is never in a child) and handed to the factory, which
//! wipes it. The library places secrets 8-byte aligned, so the scan looks
//! at 8-byte aligned words.
//!
//! A second test has two threads forking at once (200 forks each).
//!
//! `SECUREMEMORY_FORK_STRESS=N` runs N forks instead of the default 2000.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;
mod support_proc;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::configs::{self, Config};
use securememory::{Layout, SecretFactory};

const DEFAULT_FORKS: usize = 2000;
/// Pooled secrets held at once per round: more than a 32-byte chunk's
/// 2048 slots, so every round makes a new chunk.
const POOLED_HELD: usize = 2100;
const PAGE_HELD: usize = 8;
/// Secrets made per ordinary round.
const ROUND: usize = 64;

/// Exit codes of a fork child.
const CLEAN: i32 = 0;
const HIT_MEMORY: i32 = 3;
const HIT_DESCRIPTOR: i32 = 4;

/// The per-run keys of the value shape (see the module docs).
#[derive(Clone, Copy)]
struct Keys {
    tag: u64,
    k1: u64,
    k2: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: every input bit reaches every output bit.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Keys {
    fn random() -> Keys {
        let w = random_words::<3>();
        Keys {
            tag: w[0] | 1,
            k1: w[1],
            k2: w[2],
        }
    }
    fn f(&self, r: u64) -> u64 {
        mix(r ^ self.k1)
    }
    fn g(&self, r: u64) -> u64 {
        mix(r.rotate_left(17) ^ self.k2)
    }
    /// Whether the four words at `w` are one of our values.
    fn is_value(&self, w: &[u64]) -> bool {
        w.len() >= 4 && w[0] == self.tag && w[2] == self.f(w[1]) && w[3] == self.g(w[1])
    }
}

fn random_words<const N: usize>() -> [u64; N] {
    let mut out = [0u64; N];
    for w in &mut out {
        let mut b = [0u8; 8];
        // SAFETY: `b` is a valid 8-byte buffer for the kernel to fill.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
        assert_eq!(n, 8, "getrandom");
        *w = u64::from_ne_bytes(b);
    }
    out
}

fn forks() -> usize {
    std::env::var("SECUREMEMORY_FORK_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_FORKS)
}

child_test! {
    fn fork_during_creation_never_leaks_a_secret() {
        stress(1, forks());
    }
}

child_test! {
    /// Two threads forking at once: the prepare handlers count forkers, so
    /// neither waits for the other and no creator is let in while either
    /// fork is under way.
    fn two_threads_forking_at_once_never_leak_a_secret() {
        stress(2, 200);
    }
}

/// One page of private memory that a fork child does not get.
struct Staging(*mut u64);
// SAFETY: the page is used by one creator thread at a time.
unsafe impl Send for Staging {}

impl Staging {
    fn new() -> Staging {
        let page = common::page_size();
        let p = common::mem::anon_rw(page);
        // SAFETY: `p` is the page just mapped.
        assert_eq!(unsafe { libc::madvise(p, page, libc::MADV_DONTFORK) }, 0);
        Staging(p.cast())
    }

    /// Write a fresh value word by word (no 32-byte copy of it anywhere
    /// else) and return it as the source slice for the factory.
    fn fill(&mut self, keys: &Keys) -> &mut [u8] {
        let r = random_words::<1>()[0];
        // SAFETY: the staging page is ours, read-write, 4 words fit in it.
        unsafe {
            self.0.write_volatile(keys.tag);
            self.0.add(1).write_volatile(r);
            self.0.add(2).write_volatile(keys.f(r));
            self.0.add(3).write_volatile(keys.g(r));
            std::slice::from_raw_parts_mut(self.0.cast::<u8>(), 32)
        }
    }
}

/// `forkers` threads fork `each` times while two threads make secrets.
fn stress(forkers: usize, each: usize) {
    let keys = Keys::random();
    let configs = configs::all();
    let backends: Vec<_> = configs.iter().map(|c| c.name).collect();
    println!("configurations: {backends:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let creators: Vec<_> = (0..2)
        .map(|t| {
            let (stop, created, configs) = (stop.clone(), created.clone(), configs.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || creator(t, &configs, keys, &stop, &created))
                .expect("spawn creator")
        })
        .collect();
    let forkers: Vec<_> = (0..forkers)
        .map(|_| {
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || forker(each, keys))
                .expect("spawn forker")
        })
        .collect();
    let mut tally = (0, 0, 0, 0);
    for f in forkers {
        let t = f.join().expect("forker");
        tally = (tally.0 + t.0, tally.1 + t.1, tally.2 + t.2, tally.3 + t.3);
    }
    let (clean, memory, descriptor, other) = tally;
    stop.store(true, Ordering::Relaxed);
    for c in creators {
        c.join().expect("creator");
    }
    let made = created.load(Ordering::Relaxed);
    let n = clean + memory + descriptor + other;
    println!(
        "{n} forks while {made} secrets were made: {clean} clean children, {memory} saw a \
         secret in memory, {descriptor} through a descriptor, {other} failed otherwise"
    );
    assert!(made > n, "too few secrets made ({made}) to race {n} forks");
    assert_eq!(
        (memory, descriptor, other),
        (0, 0, 0),
        "fork children saw the parent's secrets"
    );
}

fn creator(t: usize, configs: &[Config], keys: Keys, stop: &AtomicBool, created: &AtomicUsize) {
    let factories: Vec<_> = configs.iter().map(|c| (c, c.factory())).collect();
    let mut staging = Staging::new();
    let mut round = t;
    while !stop.load(Ordering::Relaxed) {
        let (cfg, factory) = &factories[round % factories.len()];
        round += 1;
        // Most rounds keep a few secrets alive and make many (each one a
        // mapping, or a slot); every fifth pooled round fills more than a
        // chunk, so chunks are made and returned all the time.
        let (make, keep) = if cfg.layout() == Layout::Pooled && round % 5 == 0 {
            (POOLED_HELD, POOLED_HELD)
        } else {
            (ROUND, PAGE_HELD)
        };
        let mut live = std::collections::VecDeque::with_capacity(keep);
        for _ in 0..make {
            let secret = factory
                .new(staging.fill(&keys))
                .unwrap_or_else(|e| panic!("{}: create: {e}", cfg.name));
            live.push_back(secret);
            created.fetch_add(1, Ordering::Relaxed);
            if live.len() > keep {
                let old = live.pop_front().expect("not empty");
                old.close()
                    .unwrap_or_else(|e| panic!("{}: close: {e}", cfg.name));
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        for s in live {
            s.close()
                .unwrap_or_else(|e| panic!("{}: close: {e}", cfg.name));
        }
    }
}

/// Fork `n` times; returns the children by exit code: clean, hit in
/// memory, hit through a descriptor, anything else.
fn forker(n: usize, keys: Keys) -> (usize, usize, usize, usize) {
    let mut tally = (0, 0, 0, 0);
    for _ in 0..n {
        // SAFETY: the child only scans its memory and `_exit`s; glibc's fork
        // leaves malloc usable in the child, and it takes no Rust lock that
        // another thread might hold (it writes with write(2) directly).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = std::panic::catch_unwind(|| scan(&keys)).unwrap_or(101);
            // SAFETY: leave at once, running nothing of the parent's.
            unsafe { libc::_exit(code) };
        }
        let status = common::wait_status(pid);
        match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
            Some(CLEAN) => tally.0 += 1,
            Some(HIT_MEMORY) => tally.1 += 1,
            Some(HIT_DESCRIPTOR) => tally.2 += 1,
            _ => tally.3 += 1,
        }
    }
    tally
}

/// Say why on stderr without taking std's stderr lock (another thread of
/// the parent may have held it at the fork).
fn note(msg: &str) {
    let line = format!("fork child: {msg}\n");
    // SAFETY: writes from a valid buffer of that length.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Runs in the fork child: look for any of the parent's values.
fn scan(keys: &Keys) -> i32 {
    if let Some(where_) = scan_memory(keys) {
        note(&format!("a parent's secret in memory: {where_}"));
        return HIT_MEMORY;
    }
    if let Some(where_) = scan_descriptors(keys) {
        note(&format!("a parent's secret through a descriptor: {where_}"));
        return HIT_DESCRIPTOR;
    }
    CLEAN
}

fn find(keys: &Keys, bytes: &[u8]) -> bool {
    let tag = keys.tag.to_ne_bytes();
    let word = |i: usize| u64::from_ne_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let mut from = 0;
    while from + 32 <= bytes.len() {
        // glibc's memmem: the test runs unoptimised, the scan must not.
        // SAFETY: both ranges are valid for the lengths given.
        let hit = unsafe {
            libc::memmem(
                bytes[from..].as_ptr().cast(),
                bytes.len() - from,
                tag.as_ptr().cast(),
                8,
            )
        };
        if hit.is_null() {
            return false;
        }
        let i = hit as usize - bytes.as_ptr() as usize;
        if i % 8 == 0
            && i + 32 <= bytes.len()
            && keys.is_value(&[word(i), word(i + 8), word(i + 16), word(i + 24)])
        {
            return true;
        }
        from = i + 1;
    }
    false
}

/// Every mapping; resident pages only (`mincore`), except shared ones,
/// which are read whole.
fn scan_memory(keys: &Keys) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mem = File::open("/proc/self/mem").ok()?;
    let page = common::page_size();
    for line in maps.lines() {
        let mut cols = line.split_whitespace();
        let (Some(range), Some(perms)) = (cols.next(), cols.next()) else {
            continue;
        };
        let path = cols.nth(3).unwrap_or("");
        if matches!(path, "[vvar]" | "[vsyscall]" | "[vvar_vclock]") {
            continue;
        }
        // Read-only private mappings of a file (program text and constants)
        // hold the file's bytes, never a value made at run time.
        let file_backed = path.starts_with('/') && !path.starts_with("/memfd:");
        if file_backed && !perms.contains('w') && perms.ends_with('p') {
            continue;
        }
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            continue;
        };
        if path.starts_with("/secretmem") {
            // /proc/self/mem cannot read these: read them in place.
            if read_in_place(lo, hi - lo, |b| find(keys, b)) {
                return Some(line.to_string());
            }
            continue;
        }
        let shared = perms.ends_with('s');
        let resident = resident_pages(lo, hi - lo, page);
        let mut buf = vec![0u8; page * 64];
        let mut at = lo;
        while at < hi {
            let len = (hi - at).min(buf.len());
            let first = (at - lo) / page;
            let any = shared
                || resident
                    .as_ref()
                    .is_none_or(|r| r[first..first + len / page].iter().any(|&v| v & 1 != 0));
            if any {
                if let Ok(n) = mem.read_at(&mut buf[..len], at as u64) {
                    if find(keys, &buf[..n]) {
                        return Some(line.to_string());
                    }
                }
            }
            at += len;
        }
    }
    None
}

/// `mincore` of a range; `None` if the kernel will not say.
fn resident_pages(addr: usize, len: usize, page: usize) -> Option<Vec<u8>> {
    let mut v = vec![0u8; len.div_ceil(page)];
    // SAFETY: `v` has one byte per page of the range.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, v.as_mut_ptr()) };
    (r == 0).then_some(v)
}

/// Make `[addr, addr + len)` of this (child) process readable and look at it.
fn read_in_place(addr: usize, len: usize, look: impl Fn(&[u8]) -> bool) -> bool {
    // SAFETY: a mapping of this process, listed in its maps; the child owns
    // its address space and nothing else runs in it.
    unsafe {
        if libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_READ) != 0 {
            return false;
        }
        look(std::slice::from_raw_parts(addr as *const u8, len))
    }
}

/// Every inherited descriptor that is a memory file (`memfd`) or a
/// `memfd_secret` file.
fn scan_descriptors(keys: &Keys) -> Option<String> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    for entry in dir.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let found = if target.starts_with("/memfd:") {
            scan_memfd(fd, keys)
        } else if target.starts_with("/secretmem") {
            scan_secretmem(fd, keys)
        } else {
            false
        };
        if found {
            return Some(format!("fd {fd} -> {target}"));
        }
    }
    None
}

fn file_size(fd: i32) -> usize {
    // SAFETY: `st` is a valid out-buffer; a bad fd only fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return 0;
    }
    st.st_size as usize
}

/// `pread` of the data (not the holes) of a memory file.
fn scan_memfd(fd: i32, keys: &Keys) -> bool {
    let size = file_size(fd) as i64;
    let file = std::mem::ManuallyDrop::new(
        // SAFETY: borrowed for this call; ManuallyDrop keeps it open.
        unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) },
    );
    let mut buf = vec![0u8; 1 << 16];
    let mut at = 0i64;
    while at < size {
        // SAFETY: plain lseek on a descriptor of ours.
        let data = unsafe { libc::lseek(file.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(file.as_raw_fd(), data, libc::SEEK_HOLE) };
        let end = if hole < 0 { size } else { hole };
        let mut pos = data;
        while pos < end {
            let len = ((end - pos) as usize).min(buf.len());
            match file.read_at(&mut buf[..len], pos as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if find(keys, &buf[..n]) {
                        return true;
                    }
                    pos += n as i64;
                }
            }
        }
        at = end.max(data + 1);
    }
    false
}

/// Map a `memfd_secret` file (it cannot be read with `pread`) and look.
fn scan_secretmem(fd: i32, keys: &Keys) -> bool {
    let size = file_size(fd);
    if size == 0 {
        return false;
    }
    // SAFETY: a fresh shared mapping of the child's own descriptor.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: `p` maps `size` readable bytes.
    let found = find(keys, unsafe { std::slice::from_raw_parts(p.cast(), size) });
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(p, size) };
    found
}
