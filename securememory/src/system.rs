//! What this machine offers and limits, for `securememory doctor` and for
//! programs that want to check before they start.

use crate::backend::memfd_secret_status;
use crate::mem::sys;
use crate::options::Backend;

/// A report of the machine's secure-memory facilities.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SystemReport {
    /// Page size in bytes.
    pub page_size: usize,
    /// `RLIMIT_MEMLOCK` soft limit in bytes (`None`: unlimited, or unknown
    /// when [`memlock_unknown`](Self::memlock_unknown)).
    pub memlock_soft: Option<u64>,
    /// `RLIMIT_MEMLOCK` hard limit in bytes (`None`: unlimited).
    pub memlock_hard: Option<u64>,
    /// The memlock limit could not be read (`prlimit64` refused): the two
    /// fields above are unknown, not unlimited.
    pub memlock_unknown: bool,
    /// Whether the process has `CAP_IPC_LOCK` (which lifts the memlock limit).
    pub cap_ipc_lock: bool,
    /// Bytes this library holds locked now.
    pub locked_by_library: u64,
    /// `Ok` if `memfd_secret` works here, else why not.
    pub memfd_secret: Result<(), String>,
    /// `RLIMIT_CORE` soft limit in bytes (`None`: unlimited; `Some(0)`: no core files).
    pub core_soft: Option<u64>,
    /// `RLIMIT_CORE` hard limit.
    pub core_hard: Option<u64>,
    /// `/proc/sys/kernel/core_pattern`, if readable.
    pub core_pattern: Option<String>,
    /// Whether the process is dumpable (`prctl(PR_GET_DUMPABLE)`).
    pub dumpable: Option<bool>,
    /// `/proc/sys/vm/max_map_count`, if readable.
    pub max_map_count: Option<u64>,
    /// Whether the CPU and kernel offer memory protection keys (`pku` and `ospke` in `/proc/cpuinfo`).
    pub protection_keys: bool,
    /// The backend `Backend::Auto` resolves to here.
    pub auto_backend: Backend,
    /// The operating system (`std::env::consts::OS`).
    pub os: &'static str,
    /// The options this operating system cannot honour (refused with
    /// [`Error::Unsupported`](crate::Error::Unsupported)), by their Rust
    /// names; empty on Linux.
    pub unavailable_options: Vec<&'static str>,
}

impl SystemReport {
    /// Bytes left for secrets under the memlock limit: the soft limit less
    /// what this library already holds and less the scratch buffer the
    /// reading thread keeps (`None`: no limit applies, or it is unknown:
    /// see [`memlock_unknown`](Self::memlock_unknown)).
    pub fn lockable_bytes_left(&self) -> Option<u64> {
        if self.cap_ipc_lock {
            return None;
        }
        self.memlock_soft.map(|soft| {
            soft.saturating_sub(self.locked_by_library)
                .saturating_sub(crate::mem::scratch::capacity() as u64)
        })
    }

    /// How many secrets of one page each the memlock limit allows, counting
    /// what this library already holds and one reading thread's scratch
    /// buffer (`None`: no limit applies, or it is unknown).
    pub fn one_page_secrets_allowed(&self) -> Option<u64> {
        self.lockable_bytes_left()
            .map(|b| b / self.page_size as u64)
    }
}

/// Data pages in one chunk of the pool (`Layout::Pooled`). The pool locks
/// memory a chunk at a time, and each slot size in use has chunks of its own.
pub const POOL_CHUNK_PAGES: usize = crate::pool::CHUNK_PAGES;

/// Data pages of the smaller chunk the pool makes when a full one does not
/// fit in the memlock budget.
pub const POOL_SMALL_CHUNK_PAGES: usize = crate::pool::SMALL_CHUNK_PAGES;

/// Bytes of the (unlocked) ciphertext arena a sealed secret of `len` bytes
/// takes: its ciphertext and 16-byte tag, in a power-of-two slot of at
/// least 32 bytes; `None` past [`SEALED_MAX_LEN`](crate::SEALED_MAX_LEN).
pub fn sealed_arena_slot_size(len: usize) -> Option<usize> {
    if len > crate::storage::SEALED_MAX_LEN {
        return None;
    }
    crate::mem::arena::slot_size(len + 16)
}

/// The machine's physical memory in bytes, if the kernel says.
pub fn physical_memory() -> Option<u64> {
    sys::physical_memory()
}

/// The slot a pooled secret of `len` bytes takes (slots are powers of two of
/// at least 16 bytes), or `None` if it is larger than
/// [`POOL_MAX_SLOT`](crate::POOL_MAX_SLOT) and gets pages of its own.
pub fn pool_slot_size(len: usize) -> Option<usize> {
    crate::pool::slot_size(len)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Inspect this machine and process.
pub fn report() -> SystemReport {
    let memlock_read = sys::memlock_limit();
    let memlock_unknown = memlock_read.is_err();
    let memlock = memlock_read.unwrap_or(sys::Limit {
        soft: None,
        hard: None,
    });
    let core = sys::core_limit();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>();
    SystemReport {
        page_size: sys::page_size(),
        memlock_soft: memlock.soft,
        memlock_hard: memlock.hard,
        memlock_unknown,
        cap_ipc_lock: crate::mem::budget::has_ipc_lock(),
        locked_by_library: crate::mem::budget::locked_bytes(),
        memfd_secret: memfd_secret_status(),
        core_soft: core.soft,
        core_hard: core.hard,
        core_pattern: read_trimmed("/proc/sys/kernel/core_pattern"),
        dumpable: sys::dumpable(),
        max_map_count: read_trimmed("/proc/sys/vm/max_map_count").and_then(|s| s.parse().ok()),
        protection_keys: flags.iter().any(|f| f == "pku") && flags.iter().any(|f| f == "ospke"),
        auto_backend: Backend::Auto.resolve(),
        os: std::env::consts::OS,
        unavailable_options: crate::resolve::unavailable_here(),
    }
}

/// Whether any page of `[start, end)` is readable: `VirtualQuery`.
#[cfg(windows)]
pub(crate) fn range_readable(start: usize, end: usize) -> std::io::Result<bool> {
    crate::mem::sys::range_readable(start, end)
}

/// No page-table reader on macOS and FreeBSD yet.
#[cfg(all(unix, not(target_os = "linux")))]
pub(crate) fn range_readable(_start: usize, _end: usize) -> std::io::Result<bool> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("no reader of the page tables on {}", std::env::consts::OS),
    ))
}

/// Whether any mapping overlapping `[start, end)` is readable by the calling
/// thread, per `/proc/self/smaps`: its permissions allow reading and its
/// protection key (if any) is open in this thread's PKRU.
#[cfg(target_os = "linux")]
pub(crate) fn range_readable(start: usize, end: usize) -> std::io::Result<bool> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    // The mapping being read (readable by its permissions), until its
    // `ProtectionKey:` line, if any, says otherwise.
    let mut current: Option<bool> = None;
    for line in smaps.lines() {
        if let Some(readable) = vma_header(line, start, end) {
            if current == Some(true) {
                return Ok(true);
            }
            current = Some(readable);
        } else if let Some(key) = line.strip_prefix("ProtectionKey:") {
            if current == Some(true) {
                let key = key.trim().parse().unwrap_or(0);
                current = Some(crate::mem::pkey::thread_may_read(key));
            }
        }
    }
    Ok(current == Some(true))
}

/// For a mapping's header line of smaps: whether it overlaps `[start, end)`
/// with read permission. `None` for the other lines.
#[cfg(target_os = "linux")]
fn vma_header(line: &str, start: usize, end: usize) -> Option<bool> {
    let mut parts = line.split_whitespace();
    let (range, perms) = (parts.next()?, parts.next()?);
    let (lo, hi) = range.split_once('-')?;
    let (lo, hi) = (
        usize::from_str_radix(lo, 16).ok()?,
        usize::from_str_radix(hi, 16).ok()?,
    );
    Some(lo < end && start < hi && perms.starts_with('r'))
}

/// The kernel floor of `securememory bench`: time `iterations` rounds of
/// `mprotect(PROT_READ)`, a 32-byte read and `mprotect(PROT_NONE)` on one
/// locked anonymous page, on the calling thread, and return the total. Divide
/// by `iterations` for the cost of one access through a protection window
/// with nothing else in the way; benchmark rows are reported as ratios to it.
///
/// # Panics
/// If the page cannot be mapped, locked or protected (the memlock limit
/// leaves no room for one page).
pub fn mprotect_floor(iterations: u64) -> std::time::Duration {
    crate::mem::floor::measure(iterations)
        .unwrap_or_else(|e| panic!("securememory: mprotect floor page failed: {e}"))
}
