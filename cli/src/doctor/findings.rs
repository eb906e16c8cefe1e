//! What the doctor found, field by field: the text report is written from
//! these, and `--json` prints them as they are (field order is the JSON's
//! order). Sizes are bytes; `None` (`null`) for a limit means unlimited, for
//! a count that nothing limits it.

use securememory::{AccessPath, Backend};
use serde::{Serialize, Serializer};

/// An option's variant by its Rust name (`"Memfd"`, `"Copy"`), as the JSON
/// spells it.
fn rust_name<T: std::fmt::Debug, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:?}"))
}

fn rust_name_opt<T: std::fmt::Debug, S: Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => rust_name(v, s),
        None => s.serialize_none(),
    }
}

/// Everything the doctor found; printed as text or serialised as JSON.
#[derive(Serialize)]
pub(super) struct Findings {
    /// "ready", "works with limits" or "no secret can be created".
    pub(super) verdict: &'static str,
    /// Short reasons behind a verdict other than "ready".
    pub(super) limits: Vec<String>,
    pub(super) page_size: usize,
    pub(super) memlock: Memlock,
    pub(super) memfd_secret: MemfdSecret,
    pub(super) core_dumps: CoreDumps,
    pub(super) mappings: Mappings,
    pub(super) protection_keys: ProtectionKeys,
    pub(super) backends: Backends,
    pub(super) sealed: super::sealed::Sealed,
    pub(super) live_check: Vec<LiveCheck>,
    pub(super) platform: Platform,
}

/// The operating system and the options it cannot honour.
#[derive(Serialize)]
pub(super) struct Platform {
    pub(super) os: &'static str,
    /// Refused there with `Error::Unsupported` (empty on Linux).
    pub(super) unavailable_options: Vec<&'static str>,
}

#[derive(Serialize)]
pub(super) struct Memlock {
    pub(super) soft: Option<u64>,
    pub(super) hard: Option<u64>,
    /// The limit could not be read (`prlimit64` refused): `soft` and `hard`
    /// are unknown, not unlimited, and the kernel decides each request.
    pub(super) limit_unknown: bool,
    pub(super) cap_ipc_lock: bool,
    /// Whether the soft limit binds this process (no CAP_IPC_LOCK, not unlimited).
    pub(super) limit_applies: bool,
    pub(super) running_as_root: bool,
    /// Locked by each thread that reads through the copy path.
    pub(super) scratch_bytes_per_thread: u64,
    /// Locked memory the pool takes at a time.
    pub(super) pool_chunk_bytes: u64,
    pub(super) pooled_secret_len: usize,
    pub(super) pooled_slot_bytes: u64,
    /// One-page secrets the limit allows after one thread's scratch (`null`: no limit).
    pub(super) one_page_secrets: Option<u64>,
    /// Pooled secrets of `pooled_secret_len` bytes the limit allows (`null`: no limit).
    pub(super) pooled_secrets: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct MemfdSecret {
    pub(super) available: bool,
    /// Why not, when not available.
    pub(super) reason: Option<String>,
}

#[derive(Serialize)]
pub(super) struct CoreDumps {
    pub(super) rlimit_soft: Option<u64>,
    pub(super) rlimit_hard: Option<u64>,
    pub(super) core_pattern: Option<String>,
    /// The program a `|` core_pattern pipes dumps to.
    pub(super) pipe_handler: Option<String>,
    pub(super) dumpable: Option<bool>,
    /// Always true: secret pages carry MADV_DONTDUMP.
    pub(super) secrets_excluded: bool,
}

#[derive(Serialize)]
pub(super) struct Mappings {
    pub(super) max_map_count: Option<u64>,
    /// Mappings this process had before the live check.
    pub(super) in_use: Option<u64>,
    /// One mapping per one-page secret.
    pub(super) one_page_secrets: Option<u64>,
    /// Three mappings per guarded secret (guard | data | guard).
    pub(super) guarded_secrets: Option<u64>,
    /// Three mappings per pool chunk of pooled secrets.
    pub(super) pooled_secrets: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct ProtectionKeys {
    /// `pku` and `ospke` in `/proc/cpuinfo`.
    pub(super) present: bool,
    /// Whether the pool can use one (`PoolProtection::ProtectionKey`).
    pub(super) usable: bool,
    /// Why not, when not usable.
    pub(super) reason: Option<String>,
    /// The kernel reports the CPU not affected by Meltdown (so `Auto` uses keys).
    pub(super) resists_speculation: bool,
}

#[derive(Serialize)]
pub(super) struct Backends {
    #[serde(serialize_with = "rust_name")]
    pub(super) default: Backend,
    #[serde(serialize_with = "rust_name")]
    pub(super) default_access_path: AccessPath,
    #[serde(serialize_with = "rust_name")]
    pub(super) auto: Backend,
    #[serde(serialize_with = "rust_name")]
    pub(super) auto_access_path: AccessPath,
}

#[derive(Serialize)]
pub(super) struct LiveCheck {
    pub(super) name: &'static str,
    pub(super) ok: bool,
    #[serde(serialize_with = "rust_name_opt")]
    pub(super) backend: Option<Backend>,
    #[serde(serialize_with = "rust_name_opt")]
    pub(super) access_path: Option<AccessPath>,
    pub(super) error: Option<String>,
}
