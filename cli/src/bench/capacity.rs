//! Capacity: how many 32-byte secrets one process without `CAP_IPC_LOCK`
//! holds at once under the machine's memlock limit.
//!
//! The parent re-executes this binary with the hidden `capacity-child`
//! subcommand. The child drops `CAP_IPC_LOCK` from its effective and
//! permitted sets before it creates anything, keeps `RLIMIT_MEMLOCK` as it
//! is (lowers it to 64 KiB for the sealed layout), creates 32-byte secrets (each with distinct bytes) until one fails or
//! [`MAX_HELD`] are held, reads every one back through `with_bytes`, checks
//! a sample of them is not readable at rest, and prints one JSON line.

use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

#[cfg(target_os = "linux")]
use caps::{CapSet, Capability};
use securememory::{Layout, Options, ProtectedFactory, Secret, SecretFactory};
use serde::{Deserialize, Serialize};

/// Stop counting here.
pub const MAX_HELD: u64 = 1_000_000;

/// Secrets checked for at-rest protection (spread evenly over those held).
const AT_REST_SAMPLE: usize = 200;

/// Which layout the child fills memory with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapacityLayout {
    /// `Layout::Pooled`: slots in shared locked pages.
    Pooled,
    /// `Layout::Page`: one locked page per secret (Asherah Go's design).
    Page,
    /// `Layout::Sealed`: ciphertexts in unlocked memory, under a 64 KiB
    /// memlock limit the child sets itself.
    Sealed,
}

impl CapacityLayout {
    /// The name on the command line and in the table.
    pub fn arg(self) -> &'static str {
        match self {
            CapacityLayout::Pooled => "pooled",
            CapacityLayout::Page => "page",
            CapacityLayout::Sealed => "sealed",
        }
    }
}

/// Options of the hidden `capacity-child` subcommand.
#[derive(clap::Args, Debug)]
pub struct CapacityArgs {
    /// The layout of the secrets.
    #[arg(long, value_enum)]
    pub layout: CapacityLayout,
    /// Stop after holding this many.
    #[arg(long, default_value_t = MAX_HELD)]
    pub max: u64,
}

/// What the child found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Capacity {
    pub layout: CapacityLayout,
    /// Secrets held at once (each verified readable with its own bytes).
    pub held: u64,
    /// Secrets checked not readable at rest.
    pub checked_at_rest: u64,
    /// The error that stopped creation, if it stopped before the cap.
    pub stopped_by: Option<String>,
    /// The child's `RLIMIT_MEMLOCK` soft limit (`None`: unlimited).
    pub memlock_soft: Option<u64>,
    /// Wall time of the child's work.
    pub seconds: f64,
    /// Where the count stopped if nothing refused.
    #[serde(default)]
    pub max: u64,
}

/// Why the capacity child stopped short of a result.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Caps(#[from] caps::errors::CapsError),
    #[cfg(target_os = "linux")]
    #[error("CAP_IPC_LOCK is still in the {0:?} set after dropping it")]
    CapStillSet(CapSet),
    #[error("the library still sees CAP_IPC_LOCK after the drop")]
    LibrarySeesCap,
    #[error(transparent)]
    Secret(#[from] securememory::Error),
    #[error("secret {index} of {held} reads back wrong bytes")]
    WrongBytes { index: usize, held: usize },
    #[error("GUARANTEE BROKEN: secret {index} of {held} is readable at rest")]
    ReadableAtRest { index: usize, held: usize },
    #[error("cannot check secret {index} at rest: {source}")]
    AtRestCheck {
        index: usize,
        source: std::io::Error,
    },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("cannot set RLIMIT_MEMLOCK: {0}")]
    Limit(std::io::Error),
}

/// Why the parent got no result from the capacity child.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    #[error("capacity: cannot find this executable: {0}")]
    Exe(std::io::Error),
    #[error("capacity: cannot start the child: {0}")]
    Spawn(std::io::Error),
    #[error("capacity child ({layout}) failed ({status}): {stderr}")]
    Failed {
        layout: &'static str,
        status: ExitStatus,
        stderr: String,
    },
    #[error("capacity child ({layout}) printed {line:?}: {source}")]
    Output {
        layout: &'static str,
        line: String,
        source: serde_json::Error,
    },
}

/// Distinct bytes for secret `i`: its index in the first 8 bytes, then a
/// pattern derived from it.
fn content(i: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    for (j, x) in b[8..].iter_mut().enumerate() {
        *x = (i.rotate_left(j as u32 * 3) as u8) ^ (j as u8).wrapping_mul(0x9d);
    }
    b
}

#[cfg(target_os = "linux")]
fn drop_ipc_lock() -> Result<(), ChildError> {
    caps::drop(None, CapSet::Effective, Capability::CAP_IPC_LOCK)?;
    caps::drop(None, CapSet::Permitted, Capability::CAP_IPC_LOCK)?;
    for set in [CapSet::Effective, CapSet::Permitted] {
        if caps::has_cap(None, set, Capability::CAP_IPC_LOCK)? {
            return Err(ChildError::CapStillSet(set));
        }
    }
    Ok(())
}

/// The soft memlock limit of the sealed capacity child (issue 13: "a
/// million keys in a 64 KiB container").
pub const SEALED_LIMIT: u64 = 64 * 1024;

/// Sealed secrets counted in a `--quick` run (the full run counts to
/// [`MAX_HELD`]).
pub const QUICK_SEALED: u64 = 200_000;

/// Lower the soft `RLIMIT_MEMLOCK` to `bytes` (hard limit unchanged).
#[cfg(unix)]
fn set_soft_memlock(bytes: u64) -> Result<(), ChildError> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Memlock);
    let current = Some(now.maximum.map_or(bytes, |hard| bytes.min(hard)));
    setrlimit(
        Resource::Memlock,
        Rlimit {
            current,
            maximum: now.maximum,
        },
    )
    .map_err(|e| ChildError::Limit(e.into()))
}

/// Windows has no memlock rlimit (the working set bounds locking): the
/// sealed capacity row reports itself unavailable there.
#[cfg(windows)]
fn set_soft_memlock(_bytes: u64) -> Result<(), ChildError> {
    Err(ChildError::Limit(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no RLIMIT_MEMLOCK on windows: the sealed capacity row is unavailable",
    )))
}

/// Other systems have no Linux capabilities: the memlock limit applies as it is.
#[cfg(not(target_os = "linux"))]
fn drop_ipc_lock() -> Result<(), ChildError> {
    Ok(())
}

/// The child: see the module docs. Prints one JSON line on stdout.
pub fn capacity_child(args: CapacityArgs) -> Result<(), ChildError> {
    drop_ipc_lock()?;
    if securememory::system::report().cap_ipc_lock {
        return Err(ChildError::LibrarySeesCap);
    }
    let layout = match args.layout {
        CapacityLayout::Pooled => Layout::Pooled,
        CapacityLayout::Page => Layout::Page,
        CapacityLayout::Sealed => {
            // The container limit of the issue, whatever this machine's is.
            set_soft_memlock(SEALED_LIMIT)?;
            Layout::Sealed
        }
    };
    let report = securememory::system::report();
    let factory = ProtectedFactory::new(Options::default().layout(layout))?;
    let started = Instant::now();
    // Give this thread its scratch buffer (the copy path reads into it)
    // before the limit is reached, as any thread that reads a secret has.
    factory.new(&mut content(u64::MAX))?.with_bytes(|_| ())?;

    let mut held: Vec<Secret> = Vec::new();
    let mut stopped_by = None;
    for i in 0..args.max {
        match factory.new(&mut content(i)) {
            Ok(s) => held.push(s),
            Err(e) => {
                stopped_by = Some(e.to_string());
                break;
            }
        }
    }
    for (i, s) in held.iter().enumerate() {
        let want = content(i as u64);
        if !s.with_bytes(|b| b == want)? {
            return Err(ChildError::WrongBytes {
                index: i,
                held: held.len(),
            });
        }
    }
    let step = (held.len() / AT_REST_SAMPLE).max(1);
    let mut checked = 0;
    for (i, s) in held.iter().enumerate().step_by(step) {
        let readable = s
            .is_readable_now()
            .map_err(|source| ChildError::AtRestCheck { index: i, source })?;
        if readable {
            return Err(ChildError::ReadableAtRest {
                index: i,
                held: held.len(),
            });
        }
        checked += 1;
    }
    let result = Capacity {
        layout: args.layout,
        held: held.len() as u64,
        checked_at_rest: checked,
        stopped_by,
        memlock_soft: report.memlock_soft,
        seconds: started.elapsed().as_secs_f64(),
        max: args.max,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// The parent: run the child for `layout` and read its result.
pub fn measure(layout: CapacityLayout, max: u64) -> Result<Capacity, CapacityError> {
    let exe = std::env::current_exe().map_err(CapacityError::Exe)?;
    let out = Command::new(exe)
        .args([
            "capacity-child",
            "--layout",
            layout.arg(),
            "--max",
            &max.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(CapacityError::Spawn)?;
    if !out.status.success() {
        return Err(CapacityError::Failed {
            layout: layout.arg(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|source| CapacityError::Output {
        layout: layout.arg(),
        line: line.to_string(),
        source,
    })
}
