//! `securememory doctor`: what this machine offers and limits, in words a
//! person can act on, or (`--json`) as one JSON object for scripts.
//!
//! The facts come from `securememory::system::report()`, taken before
//! anything is allocated, plus a live check: one default secret, one pooled
//! secret (and one `Backend::Auto` secret where that differs from the
//! default) are created, read back and closed. The command fails (non-zero
//! exit) only when no secret can be created at all.
//!
//! In the JSON, sizes are bytes and `null` for a limit means unlimited (or,
//! for a count, that nothing limits it).

use std::fmt::Write as _;

use securememory::system::{self, SystemReport};
use securememory::{AccessPath, Backend, Layout, Options, ProtectedFactory, SecretFactory};
use serde::Serialize;

/// Options of `securememory doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// Below this many secrets, a limit is named in the verdict.
const FEW: u64 = 1024;
/// The pooled secret size the report counts in (a typical key).
const POOLED_LEN: usize = 32;

/// Everything the doctor found; printed as text or serialised as JSON.
#[derive(Serialize)]
struct Findings {
    /// "ready", "works with limits" or "no secret can be created".
    verdict: &'static str,
    /// Short reasons behind a verdict other than "ready".
    limits: Vec<String>,
    page_size: usize,
    memlock: Memlock,
    memfd_secret: MemfdSecret,
    core_dumps: CoreDumps,
    mappings: Mappings,
    protection_keys: ProtectionKeys,
    backends: Backends,
    live_check: Vec<LiveCheck>,
}

#[derive(Serialize)]
struct Memlock {
    soft: Option<u64>,
    hard: Option<u64>,
    cap_ipc_lock: bool,
    /// Whether the soft limit binds this process (no CAP_IPC_LOCK, not unlimited).
    limit_applies: bool,
    running_as_root: bool,
    /// Locked by each thread that reads through the copy path.
    scratch_bytes_per_thread: u64,
    /// Locked memory the pool takes at a time.
    pool_chunk_bytes: u64,
    pooled_secret_len: usize,
    pooled_slot_bytes: u64,
    /// One-page secrets the limit allows after one thread's scratch (`null`: no limit).
    one_page_secrets: Option<u64>,
    /// Pooled secrets of `pooled_secret_len` bytes the limit allows (`null`: no limit).
    pooled_secrets: Option<u64>,
}

#[derive(Serialize)]
struct MemfdSecret {
    available: bool,
    /// Why not, when not available.
    reason: Option<String>,
}

#[derive(Serialize)]
struct CoreDumps {
    rlimit_soft: Option<u64>,
    rlimit_hard: Option<u64>,
    core_pattern: Option<String>,
    /// The program a `|` core_pattern pipes dumps to.
    pipe_handler: Option<String>,
    dumpable: Option<bool>,
    /// Always true: secret pages carry MADV_DONTDUMP.
    secrets_excluded: bool,
}

#[derive(Serialize)]
struct Mappings {
    max_map_count: Option<u64>,
    /// Mappings this process had before the live check.
    in_use: Option<u64>,
    /// One mapping per one-page secret.
    one_page_secrets: Option<u64>,
    /// Three mappings per guarded secret (guard | data | guard).
    guarded_secrets: Option<u64>,
    /// Three mappings per pool chunk of pooled secrets.
    pooled_secrets: Option<u64>,
}

#[derive(Serialize)]
struct ProtectionKeys {
    present: bool,
    /// Not used by securememory yet.
    used: bool,
}

#[derive(Serialize)]
struct Backends {
    default: String,
    default_access_path: String,
    auto: String,
    auto_access_path: String,
}

#[derive(Serialize)]
struct LiveCheck {
    name: &'static str,
    ok: bool,
    backend: Option<String>,
    access_path: Option<String>,
    error: Option<String>,
}

/// Run the doctor. `Err` only when no secret can be created on this machine.
pub fn run(args: DoctorArgs) -> Result<(), Box<dyn std::error::Error>> {
    let f = examine();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        print!("{}", render(&f));
    }
    if f.live_check.iter().any(|c| c.ok) {
        Ok(())
    } else {
        Err("no secret can be created on this machine; see the report above".into())
    }
}

fn examine() -> Findings {
    // Facts first, so the counts describe a process that holds nothing yet.
    let r = system::report();
    let maps_in_use = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .map(|m| m.lines().count() as u64);
    let memlock = memlock(&r);
    let mappings = mappings(&r, maps_in_use);
    let live_check = live_checks(r.auto_backend);

    let mut limits = Vec::new();
    for c in live_check.iter().filter(|c| !c.ok) {
        limits.push(format!("the {} failed", c.name));
    }
    if let Some(n) = memlock.one_page_secrets.filter(|&n| n < FEW) {
        limits.push(format!(
            "RLIMIT_MEMLOCK ({}) allows only about {n} one-page secrets",
            amount(memlock.soft)
        ));
    }
    if let (Some(n), Some(max)) = (mappings.one_page_secrets, mappings.max_map_count) {
        if n < FEW {
            limits.push(format!(
                "vm.max_map_count ({max}) leaves room for only about {n} more mappings"
            ));
        }
    }
    if let Err(why) = &r.memfd_secret {
        limits.push(format!("memfd_secret is unavailable ({why})"));
    }
    let verdict = if !live_check.iter().any(|c| c.ok) {
        "no secret can be created"
    } else if limits.is_empty() {
        "ready"
    } else {
        "works with limits"
    };

    let pipe_handler = r.core_pattern.as_deref().and_then(pipe_handler);
    Findings {
        verdict,
        limits,
        page_size: r.page_size,
        memfd_secret: MemfdSecret {
            available: r.memfd_secret.is_ok(),
            reason: r.memfd_secret.clone().err(),
        },
        core_dumps: CoreDumps {
            rlimit_soft: r.core_soft,
            rlimit_hard: r.core_hard,
            core_pattern: r.core_pattern.clone(),
            pipe_handler,
            dumpable: r.dumpable,
            secrets_excluded: true,
        },
        protection_keys: ProtectionKeys {
            present: r.protection_keys,
            used: false,
        },
        backends: Backends {
            default: format!("{:?}", Backend::default()),
            default_access_path: format!("{:?}", access_path_of(Backend::default())),
            auto: format!("{:?}", r.auto_backend),
            auto_access_path: format!("{:?}", access_path_of(r.auto_backend)),
        },
        memlock,
        mappings,
        live_check,
    }
}

/// The path `AccessPath::Auto` takes on a backend.
fn access_path_of(b: Backend) -> AccessPath {
    match b.resolve() {
        Backend::Memfd => AccessPath::Copy,
        _ => AccessPath::Window,
    }
}

fn running_as_root() -> bool {
    // Effective uid: the second number of the `Uid:` line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn pool_shape(page: u64) -> (u64, u64) {
    let chunk = (system::POOL_CHUNK_PAGES as u64) * page;
    let slot = system::pool_slot_size(POOLED_LEN).unwrap_or(POOLED_LEN) as u64;
    (chunk, slot)
}

/// Pooled secrets that fit in `usable` locked bytes: full chunks first,
/// then the pool's small chunks in what is left (as the pool itself does).
fn pooled_in(usable: u64, page: u64) -> u64 {
    let (chunk, slot) = pool_shape(page);
    let small = (system::POOL_SMALL_CHUNK_PAGES as u64) * page;
    usable / chunk * (chunk / slot) + usable % chunk / small * (small / slot)
}

fn memlock(r: &SystemReport) -> Memlock {
    let page = r.page_size as u64;
    let scratch = securememory::scratch_capacity() as u64;
    let (chunk, slot) = pool_shape(page);
    let limit_applies = !r.cap_ipc_lock && r.memlock_soft.is_some();
    let usable = r.memlock_soft.filter(|_| limit_applies).map(|soft| {
        soft.saturating_sub(r.locked_by_library)
            .saturating_sub(scratch)
    });
    Memlock {
        soft: r.memlock_soft,
        hard: r.memlock_hard,
        cap_ipc_lock: r.cap_ipc_lock,
        limit_applies,
        running_as_root: running_as_root(),
        scratch_bytes_per_thread: scratch,
        pool_chunk_bytes: chunk,
        pooled_secret_len: POOLED_LEN,
        pooled_slot_bytes: slot,
        one_page_secrets: usable.map(|u| u / page),
        pooled_secrets: usable.map(|u| pooled_in(u, page)),
    }
}

fn mappings(r: &SystemReport, in_use: Option<u64>) -> Mappings {
    let (chunk, slot) = pool_shape(r.page_size as u64);
    let free = match (r.max_map_count, in_use) {
        (Some(max), Some(used)) => Some(max.saturating_sub(used)),
        _ => None,
    };
    Mappings {
        max_map_count: r.max_map_count,
        in_use,
        one_page_secrets: free,
        guarded_secrets: free.map(|f| f / 3),
        pooled_secrets: free.map(|f| f / 3 * (chunk / slot)),
    }
}

/// The program named by a `|` core_pattern (its file name).
fn pipe_handler(pattern: &str) -> Option<String> {
    let cmd = pattern.strip_prefix('|')?.split_whitespace().next()?;
    Some(cmd.rsplit('/').next().unwrap_or(cmd).to_string())
}

fn live_checks(auto: Backend) -> Vec<LiveCheck> {
    let mut checks = vec![
        live("default secret", Options::default()),
        live(
            "pooled 32-byte secret",
            Options::default().layout(Layout::Pooled),
        ),
    ];
    if auto != Backend::default() {
        checks.push(live(
            "Auto-backend secret",
            Options::default().backend(Backend::Auto),
        ));
    }
    checks
}

/// Create a 32-byte secret with `opts`, read it back, close it.
fn live(name: &'static str, opts: Options) -> LiveCheck {
    let mut check = LiveCheck {
        name,
        ok: false,
        backend: None,
        access_path: None,
        error: None,
    };
    let outcome = (|| -> Result<(), String> {
        let factory = ProtectedFactory::new(opts).map_err(|e| e.to_string())?;
        // A fixed pattern, not a secret.
        let mut bytes = [0x5a_u8; POOLED_LEN];
        let secret = factory.new(&mut bytes).map_err(|e| e.to_string())?;
        check.backend = Some(format!("{:?}", secret.backend()));
        check.access_path = Some(format!("{:?}", secret.access_path()));
        let same = secret
            .with_bytes(|b| b.iter().all(|&x| x == 0x5a))
            .map_err(|e| e.to_string())?;
        secret.close().map_err(|e| e.to_string())?;
        if same {
            Ok(())
        } else {
            Err("the secret read back different bytes".to_string())
        }
    })();
    match outcome {
        Ok(()) => check.ok = true,
        Err(e) => check.error = Some(e),
    }
    check
}

/// A byte amount as the shell's `ulimit` would think of it.
fn amount(v: Option<u64>) -> String {
    match v {
        None => "unlimited".to_string(),
        Some(0) => "0".to_string(),
        Some(b) if b % 1024 == 0 => format!("{} KiB", b / 1024),
        Some(b) => format!("{b} bytes"),
    }
}

fn count(v: Option<u64>) -> String {
    v.map_or_else(|| "no limit".to_string(), |n| format!("about {n}"))
}

fn render(f: &Findings) -> String {
    let mut o = String::new();
    render_memlock(&mut o, f);
    render_memfd_secret(&mut o, f);
    render_core(&mut o, &f.core_dumps);
    render_mappings(&mut o, f);
    render_rest(&mut o, f);
    o
}

fn render_memlock(o: &mut String, f: &Findings) {
    let m = &f.memlock;
    let small = (system::POOL_SMALL_CHUNK_PAGES * f.page_size) as u64;
    let _ = writeln!(
        o,
        "Locked memory (RLIMIT_MEMLOCK): secrets are locked into RAM so they are never swapped"
    );
    let _ = writeln!(
        o,
        "  limit: soft {}, hard {}",
        amount(m.soft),
        amount(m.hard)
    );
    if m.cap_ipc_lock {
        let _ = writeln!(
            o,
            "  CAP_IPC_LOCK: yes{}: the process may lock memory past the limit, so the limit does not apply here",
            if m.running_as_root { " (running as root)" } else { "" }
        );
    } else if m.running_as_root {
        let _ = writeln!(
            o,
            "  CAP_IPC_LOCK: no, although running as root (a container or a dropped capability?): the limit applies"
        );
    } else {
        let _ = writeln!(o, "  CAP_IPC_LOCK: no: the limit applies");
    }
    if !m.limit_applies {
        let _ = writeln!(
            o,
            "  allows: any number of secrets, as far as locked memory goes"
        );
        if let Some(soft) = m.soft {
            let usable = soft.saturating_sub(m.scratch_bytes_per_thread);
            let _ = writeln!(
                o,
                "  (without CAP_IPC_LOCK the soft limit would allow about {} one-page or {} pooled {}-byte secrets)",
                usable / f.page_size as u64,
                pooled_in(usable, f.page_size as u64),
                m.pooled_secret_len,
            );
        }
        return;
    }
    let _ = writeln!(
        o,
        "  allows {} one-page secrets ({} bytes each, after {} for one reading thread's scratch buffer; each further reading thread takes {} more)",
        count(m.one_page_secrets),
        f.page_size,
        amount(Some(m.scratch_bytes_per_thread)),
        amount(Some(m.scratch_bytes_per_thread)),
    );
    let _ = writeln!(
        o,
        "  allows {} pooled {}-byte secrets (Layout::Pooled: {} per {} chunk, or {} per {} chunk where a full one does not fit; each slot size needs chunks of its own)",
        count(m.pooled_secrets),
        m.pooled_secret_len,
        m.pool_chunk_bytes / m.pooled_slot_bytes,
        amount(Some(m.pool_chunk_bytes)),
        small / m.pooled_slot_bytes,
        amount(Some(small)),
    );
    let _ = writeln!(
        o,
        "  if that is too low, raise the limit of the process that uses secrets:"
    );
    let _ = writeln!(
        o,
        "    shell:   ulimit -l <KiB> (up to the hard limit, {}, without privilege) or ulimit -l unlimited (as root)",
        amount(m.hard)
    );
    let _ = writeln!(o, "    docker:  docker run --ulimit memlock=<bytes>:<bytes> (or -1:-1 for unlimited), or --cap-add IPC_LOCK");
    let _ = writeln!(o, "    systemd: LimitMEMLOCK=<bytes> (or infinity) in the unit's [Service] section, or AmbientCapabilities=CAP_IPC_LOCK");
    let _ = writeln!(
        o,
        "    or pack small secrets into shared pages with Layout::Pooled"
    );
}

fn render_memfd_secret(o: &mut String, f: &Findings) {
    let _ = writeln!(o, "\nmemfd_secret: pages removed from the kernel's direct map (unreadable through /proc/pid/mem, ptrace, the kernel)");
    match &f.memfd_secret.reason {
        None => {
            let _ = writeln!(o, "  available: yes; Backend::MemfdSecret works here (its pages count against RLIMIT_MEMLOCK)");
        }
        Some(why) => {
            let _ = writeln!(o, "  available: no: {why}");
            let _ = writeln!(
                o,
                "  Backend::Auto falls back to Backend::Memfd; Backend::MemfdSecret would fail"
            );
        }
    }
}

fn render_core(o: &mut String, c: &CoreDumps) {
    let _ = writeln!(o, "\nCore dumps");
    let soft_note = match (c.rlimit_soft, &c.pipe_handler) {
        (Some(0), None) => " (no core file is written)",
        _ => "",
    };
    let _ = writeln!(
        o,
        "  RLIMIT_CORE: soft {}{soft_note}, hard {}",
        amount(c.rlimit_soft),
        amount(c.rlimit_hard)
    );
    match (&c.core_pattern, &c.pipe_handler) {
        (Some(p), Some(h)) => {
            let _ = writeln!(
                o,
                "  core_pattern: {p}\n    a pipe: dumps go to the program {h}, not to a file (the kernel starts it even with RLIMIT_CORE 0 and passes the limit on; systemd-coredump honors it)"
            );
        }
        (Some(p), None) if p.contains('/') => {
            let _ = writeln!(o, "  core_pattern: {p} (a file at that path)");
        }
        (Some(p), None) => {
            let _ = writeln!(
                o,
                "  core_pattern: {p} (a file in the crashing process's working directory)"
            );
        }
        (None, _) => {
            let _ = writeln!(o, "  core_pattern: unreadable");
        }
    }
    let dumpable = match c.dumpable {
        Some(true) => "yes",
        Some(false) => "no (the kernel writes no core dump of this process)",
        None => "unknown",
    };
    let _ = writeln!(o, "  dumpable: {dumpable}");
    let _ = writeln!(
        o,
        "  secrets are left out of every core dump by MADV_DONTDUMP on their pages, whatever the settings above;\n  to write no core file at all, opt in with CoreDumps::DisableForProcess (RLIMIT_CORE 0 for the whole process)"
    );
}

fn render_mappings(o: &mut String, f: &Findings) {
    let m = &f.mappings;
    let _ = writeln!(
        o,
        "\nMappings (vm.max_map_count): each secret is one mapping, a guarded one three"
    );
    let (Some(max), Some(used)) = (m.max_map_count, m.in_use) else {
        let _ = writeln!(
            o,
            "  unknown (/proc/sys/vm/max_map_count or /proc/self/maps unreadable)"
        );
        return;
    };
    let _ = writeln!(o, "  limit {max}; this process uses {used}");
    let _ = writeln!(
        o,
        "  allows {} one-page secrets, {} guarded secrets, {} pooled {}-byte secrets (three mappings per chunk of {})",
        count(m.one_page_secrets),
        count(m.guarded_secrets),
        count(m.pooled_secrets),
        f.memlock.pooled_secret_len,
        f.memlock.pool_chunk_bytes / f.memlock.pooled_slot_bytes,
    );
    let _ = writeln!(
        o,
        "  to raise it: sysctl -w vm.max_map_count=<n> (keep it in /etc/sysctl.d/)"
    );
}

fn render_rest(o: &mut String, f: &Findings) {
    let _ = writeln!(
        o,
        "\nProtection keys (pku): {} (informational: securememory does not use them yet)",
        if f.protection_keys.present {
            "present"
        } else {
            "not present"
        }
    );

    let b = &f.backends;
    let _ = writeln!(o, "\nBackends");
    let _ = writeln!(
        o,
        "  default: {} with the {} access path (ProtectedFactory::default(): each read is a pread into a locked per-thread scratch buffer; the secret's pages stay PROT_NONE)",
        b.default, b.default_access_path
    );
    let how = if b.auto_access_path == "Copy" {
        "reads are a pread, as for the default"
    } else {
        "pages are made readable with mprotect while an access is in flight"
    };
    let _ = writeln!(
        o,
        "  Backend::Auto picks: {} with the {} access path ({how})",
        b.auto, b.auto_access_path
    );

    let _ = writeln!(o, "\nLive check (create, read back, close)");
    for c in &f.live_check {
        let shape = match (&c.backend, &c.access_path) {
            (Some(b), Some(p)) => format!(" ({b}, {p})"),
            _ => String::new(),
        };
        match &c.error {
            None => {
                let _ = writeln!(o, "  {}{shape}: ok", c.name);
            }
            Some(e) => {
                let _ = writeln!(o, "  {}{shape}: FAILED: {e}", c.name);
            }
        }
    }

    let _ = writeln!(o);
    if f.limits.is_empty() {
        let _ = writeln!(o, "Verdict: {}", f.verdict);
    } else {
        let _ = writeln!(o, "Verdict: {}: {}", f.verdict, f.limits.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_handler_names_the_program() {
        let sd = "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h";
        assert_eq!(pipe_handler(sd).as_deref(), Some("systemd-coredump"));
        let apport = "|/usr/share/apport/apport -p%p -s%s -c%c";
        assert_eq!(pipe_handler(apport).as_deref(), Some("apport"));
        assert_eq!(pipe_handler("core"), None);
        assert_eq!(pipe_handler("/var/crash/core.%p"), None);
    }

    #[test]
    fn pooled_count_uses_full_then_small_chunks() {
        let page = 4096;
        let (chunk, slot) = pool_shape(page);
        let per_small = (system::POOL_SMALL_CHUNK_PAGES as u64) * page / slot;
        assert_eq!(pooled_in(0, page), 0);
        assert_eq!(pooled_in(chunk, page), chunk / slot);
        assert_eq!(
            pooled_in(chunk + 2 * page, page),
            chunk / slot + 2 * per_small
        );
    }
}
