//! The text report: one section per fact, each in words a person can act on,
//! then the live check and the verdict.

use std::fmt::Write as _;

use securememory::system;

use super::capacity::pooled_in;
use super::findings::{CoreDumps, Findings};

/// A byte amount as the shell's `ulimit` would think of it.
pub(super) fn amount(v: Option<u64>) -> String {
    match v {
        None => "unlimited".to_string(),
        Some(0) => "0".to_string(),
        Some(b) if b % 1024 == 0 => format!("{} KiB", b / 1024),
        Some(b) => format!("{b} bytes"),
    }
}

/// A count of secrets, or "no limit".
fn count(v: Option<u64>) -> String {
    v.map_or_else(|| "no limit".to_string(), |n| format!("about {n}"))
}

/// The whole text report, ending in a newline.
pub(super) fn render(f: &Findings) -> String {
    let mut o = String::new();
    render_memlock(&mut o, f);
    render_memfd_secret(&mut o, f);
    render_core(&mut o, &f.core_dumps);
    render_mappings(&mut o, f);
    render_protection_keys(&mut o, f);
    render_backends(&mut o, f);
    render_live_check(&mut o, f);
    render_verdict(&mut o, f);
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

fn render_protection_keys(o: &mut String, f: &Findings) {
    let k = &f.protection_keys;
    let _ = writeln!(
        o,
        "\nProtection keys (pku): {} in the CPU flags",
        if k.present { "present" } else { "not present" }
    );
    match &k.reason {
        None => {
            let _ = writeln!(
                o,
                "  usable: yes. PoolProtection::ProtectionKey creates, reads and closes pooled secrets with no system call"
            );
            let _ = writeln!(
                o,
                "  {}",
                if k.resists_speculation {
                    "the kernel reports this CPU not affected by Meltdown: PoolProtection::Auto uses the key"
                } else {
                    "the kernel does not report this CPU unaffected by Meltdown (Meltdown-PK reads across keys speculatively): PoolProtection::Auto keeps PROT_NONE pages"
                }
            );
        }
        Some(why) => {
            let _ = writeln!(
                o,
                "  usable: no ({why}); pooled secrets use PROT_NONE pages and kernel copies"
            );
        }
    }
}

fn render_backends(o: &mut String, f: &Findings) {
    let b = &f.backends;
    let _ = writeln!(o, "\nBackends");
    let _ = writeln!(
        o,
        "  default: {} with the {} access path (ProtectedFactory::default(): each read of a secret of up to {} bytes is a pread into a locked per-thread scratch buffer and its pages stay PROT_NONE; larger secrets are read through an mprotect window)",
        b.default,
        b.default_access_path,
        securememory::scratch_capacity()
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
}

fn render_live_check(o: &mut String, f: &Findings) {
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
}

fn render_verdict(o: &mut String, f: &Findings) {
    let _ = writeln!(o);
    if f.limits.is_empty() {
        let _ = writeln!(o, "Verdict: {}", f.verdict);
    } else {
        let _ = writeln!(o, "Verdict: {}: {}", f.verdict, f.limits.join("; "));
    }
}
