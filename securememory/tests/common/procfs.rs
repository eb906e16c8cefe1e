//! Readers of this process's `/proc/self` files: `maps`, `smaps`, `status`
//! fields, threads and `mem`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The `start-end` range at the head of a `maps`/`smaps` mapping line.
fn range_of(line: &str) -> Option<(usize, usize)> {
    let (lo, hi) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        usize::from_str_radix(lo, 16).ok()?,
        usize::from_str_radix(hi, 16).ok()?,
    ))
}

/// The permissions column (`rw-s`, `---p`, ...) of a mapping line.
fn perms_of(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or("")
}

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub line: String,
}

impl Mapping {
    /// The permissions column, e.g. `---p`.
    pub fn perms(&self) -> &str {
        perms_of(&self.line)
    }
}

/// The mappings of `/proc/self/maps`.
pub fn maps() -> Vec<Mapping> {
    let text = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    text.lines()
        .map(|line| {
            let (start, end) = range_of(line).unwrap_or((0, 0));
            Mapping {
                start,
                end,
                line: line.to_string(),
            }
        })
        .collect()
}

/// The `/proc/self/maps` mapping that contains `addr`, if any.
pub fn mapping_at(addr: usize) -> Option<Mapping> {
    maps().into_iter().find(|m| m.start <= addr && addr < m.end)
}

/// The permissions (`rw-s`, `---p`, ...) of the mapping holding `addr`;
/// `None` if nothing is mapped there.
pub fn perms_at(addr: usize) -> Option<String> {
    mapping_at(addr).map(|m| m.perms().to_string())
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

impl Vma {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    /// The permissions column, e.g. `---p`.
    pub fn perms(&self) -> &str {
        perms_of(&self.header)
    }
}

/// The mappings of `/proc/self/smaps` with their `Rss`, `Locked` and `VmFlags`.
pub fn smaps() -> Vec<Vma> {
    let text = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut out: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let (Some((start, end)), false) = (range_of(line), first.ends_with(':')) {
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

/// The `/proc/self/smaps` mapping containing `addr`, if any.
pub fn vma_at(addr: usize) -> Option<Vma> {
    smaps()
        .into_iter()
        .find(|v| v.start <= addr && addr < v.end)
}

/// Whether the mapping holding `addr` is locked (`mlock`ed: the `lo` flag
/// in its `VmFlags` in `/proc/self/smaps`).
pub fn is_locked_at(addr: usize) -> bool {
    vma_at(addr)
        .unwrap_or_else(|| panic!("no mapping at {addr:#x} in /proc/self/smaps"))
        .has_flag("lo")
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
