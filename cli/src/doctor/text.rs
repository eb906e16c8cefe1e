//! The text report (`Display` of the findings): one section per fact, each
//! in words a person can act on, then the live check and the verdict.

use std::fmt::{self, Formatter};

use securememory::{system, AccessPath};

use super::capacity::pooled_in;
use super::findings::{CoreDumps, Findings};
use crate::units::Bytes;

/// A count of secrets, or "no limit".
fn count(v: Option<u64>) -> String {
    v.map_or_else(|| "no limit".to_string(), |n| format!("about {n}"))
}

/// The whole text report, ending in a newline.
impl fmt::Display for Findings {
    fn fmt(&self, o: &mut Formatter<'_>) -> fmt::Result {
        platform(o, self)?;
        memlock(o, self)?;
        memfd_secret(o, self)?;
        core(o, &self.core_dumps)?;
        mappings(o, self)?;
        protection_keys(o, self)?;
        backends(o, self)?;
        super::sealed::text(o, &self.sealed)?;
        live_check(o, self)?;
        verdict(o, self)
    }
}

/// Off Linux only: the options this system cannot honour.
fn platform(o: &mut Formatter<'_>, f: &Findings) -> fmt::Result {
    let p = &f.platform;
    if p.unavailable_options.is_empty() {
        return Ok(());
    }
    writeln!(
        o,
        "Platform: {}; not available here (refused with Error::Unsupported): {}",
        p.os,
        p.unavailable_options.join(", ")
    )
}

fn memlock(o: &mut Formatter<'_>, f: &Findings) -> fmt::Result {
    let m = &f.memlock;
    let small = (system::POOL_SMALL_CHUNK_PAGES * f.page_size) as u64;
    writeln!(
        o,
        "Locked memory (RLIMIT_MEMLOCK): secrets are locked into RAM so they are never swapped"
    )?;
    if m.limit_unknown {
        writeln!(
            o,
            "  limit: unknown (the limit could not be read: prlimit64 refused, a seccomp filter?); the library counts what it locks and the kernel decides each request"
        )?;
    } else {
        writeln!(o, "  limit: soft {}, hard {}", Bytes(m.soft), Bytes(m.hard))?;
    }
    if m.cap_ipc_lock {
        writeln!(
            o,
            "  CAP_IPC_LOCK: yes{}: the process may lock memory past the limit, so the limit does not apply here",
            if m.running_as_root { " (running as root)" } else { "" }
        )?;
    } else if m.running_as_root {
        writeln!(
            o,
            "  CAP_IPC_LOCK: no, although running as root (a container or a dropped capability?): the limit applies"
        )?;
    } else {
        writeln!(o, "  CAP_IPC_LOCK: no: the limit applies")?;
    }
    if m.limit_unknown && !m.cap_ipc_lock {
        writeln!(
            o,
            "  allows: unknown; pool chunks are made one page at a time so that the kernel's own answer decides"
        )?;
        return Ok(());
    }
    if !m.limit_applies {
        writeln!(
            o,
            "  allows: any number of secrets, as far as locked memory goes"
        )?;
        if let Some(soft) = m.soft {
            let usable = soft.saturating_sub(m.scratch_bytes_per_thread);
            writeln!(
                o,
                "  (without CAP_IPC_LOCK the soft limit would allow about {} one-page or {} pooled {}-byte secrets)",
                usable / f.page_size as u64,
                pooled_in(usable, f.page_size as u64),
                m.pooled_secret_len,
            )?;
        }
        return Ok(());
    }
    let scratch = Bytes(Some(m.scratch_bytes_per_thread));
    writeln!(
        o,
        "  allows {} one-page secrets ({} bytes each, after {scratch} for one reading thread's scratch buffer; each further reading thread takes {scratch} more)",
        count(m.one_page_secrets),
        f.page_size,
    )?;
    writeln!(
        o,
        "  allows {} pooled {}-byte secrets (Layout::Pooled: {} per {} chunk, or {} per {} chunk where a full one does not fit; each slot size needs chunks of its own)",
        count(m.pooled_secrets),
        m.pooled_secret_len,
        m.pool_chunk_bytes / m.pooled_slot_bytes,
        Bytes(Some(m.pool_chunk_bytes)),
        small / m.pooled_slot_bytes,
        Bytes(Some(small)),
    )?;
    writeln!(
        o,
        "  if that is too low, raise the limit of the process that uses secrets:"
    )?;
    writeln!(
        o,
        "    shell:   ulimit -l <KiB> (up to the hard limit, {}, without privilege) or ulimit -l unlimited (as root)",
        Bytes(m.hard)
    )?;
    writeln!(o, "    docker:  docker run --ulimit memlock=<bytes>:<bytes> (or -1:-1 for unlimited), or --cap-add IPC_LOCK")?;
    writeln!(o, "    systemd: LimitMEMLOCK=<bytes> (or infinity) in the unit's [Service] section, or AmbientCapabilities=CAP_IPC_LOCK")?;
    writeln!(
        o,
        "    or pack small secrets into shared pages with Layout::Pooled"
    )
}

fn memfd_secret(o: &mut Formatter<'_>, f: &Findings) -> fmt::Result {
    writeln!(o, "\nmemfd_secret: pages removed from the kernel's direct map (unreadable through /proc/pid/mem, ptrace, the kernel)")?;
    match &f.memfd_secret.reason {
        None => writeln!(o, "  available: yes; Backend::MemfdSecret works here (its pages count against RLIMIT_MEMLOCK)"),
        Some(why) => {
            writeln!(o, "  available: no: {why}")?;
            writeln!(
                o,
                "  Backend::Auto falls back to Backend::Memfd; Backend::MemfdSecret would fail"
            )
        }
    }
}

fn core(o: &mut Formatter<'_>, c: &CoreDumps) -> fmt::Result {
    writeln!(o, "\nCore dumps")?;
    let soft_note = match (c.rlimit_soft, &c.pipe_handler) {
        (Some(0), None) => " (no core file is written)",
        _ => "",
    };
    writeln!(
        o,
        "  RLIMIT_CORE: soft {}{soft_note}, hard {}",
        Bytes(c.rlimit_soft),
        Bytes(c.rlimit_hard)
    )?;
    match (&c.core_pattern, &c.pipe_handler) {
        (Some(p), Some(h)) => writeln!(
            o,
            "  core_pattern: {p}\n    a pipe: dumps go to the program {h}, not to a file (the kernel starts it even with RLIMIT_CORE 0 and passes the limit on; systemd-coredump honors it)"
        )?,
        (Some(p), None) if p.contains('/') => {
            writeln!(o, "  core_pattern: {p} (a file at that path)")?
        }
        (Some(p), None) => writeln!(
            o,
            "  core_pattern: {p} (a file in the crashing process's working directory)"
        )?,
        (None, _) => writeln!(o, "  core_pattern: unreadable")?,
    }
    let dumpable = match c.dumpable {
        Some(true) => "yes",
        Some(false) => "no (the kernel writes no core dump of this process)",
        None => "unknown",
    };
    writeln!(o, "  dumpable: {dumpable}")?;
    writeln!(
        o,
        "  secrets are left out of every core dump by MADV_DONTDUMP on their pages, whatever the settings above;\n  to write no core file at all, opt in with CoreDumps::DisableForProcess (RLIMIT_CORE 0 for the whole process)"
    )
}

fn mappings(o: &mut Formatter<'_>, f: &Findings) -> fmt::Result {
    let m = &f.mappings;
    writeln!(
        o,
        "\nMappings (vm.max_map_count): each secret is one mapping, a guarded one three"
    )?;
    let (Some(max), Some(used)) = (m.max_map_count, m.in_use) else {
        return writeln!(
            o,
            "  unknown (/proc/sys/vm/max_map_count or /proc/self/maps unreadable)"
        );
    };
    writeln!(o, "  limit {max}; this process uses {used}")?;
    writeln!(
        o,
        "  allows {} one-page secrets, {} guarded secrets, {} pooled {}-byte secrets (three mappings per chunk of {})",
        count(m.one_page_secrets),
        count(m.guarded_secrets),
        count(m.pooled_secrets),
        f.memlock.pooled_secret_len,
        f.memlock.pool_chunk_bytes / f.memlock.pooled_slot_bytes,
    )?;
    writeln!(
        o,
        "  to raise it: sysctl -w vm.max_map_count=<n> (keep it in /etc/sysctl.d/)"
    )
}

fn protection_keys(o: &mut Formatter<'_>, f: &Findings) -> fmt::Result {
    let k = &f.protection_keys;
    writeln!(
        o,
        "\nProtection keys (pku): {} in the CPU flags",
        if k.present { "present" } else { "not present" }
    )?;
    match &k.reason {
        None => {
            writeln!(
                o,
                "  usable: yes. PoolProtection::ProtectionKey creates, reads and closes pooled secrets with no system call"
            )?;
            writeln!(
                o,
                "  {}",
                if k.resists_speculation {
                    "the kernel reports this CPU not affected by Meltdown: PoolProtection::Auto uses the key"
                } else {
                    "the kernel does not report this CPU unaffected by Meltdown (Meltdown-PK reads across keys speculatively): PoolProtection::Auto keeps PROT_NONE pages"
                }
            )
        }
        Some(why) => writeln!(
            o,
            "  usable: no ({why}); pooled secrets use PROT_NONE pages and kernel copies"
        ),
    }
}

fn backends(o: &mut Formatter<'_>, f: &Findings) -> fmt::Result {
    let b = &f.backends;
    writeln!(o, "\nBackends")?;
    writeln!(
        o,
        "  default: {:?} with the {:?} access path (ProtectedFactory::default(): each read of a secret of up to {} bytes is a pread into a locked per-thread scratch buffer and its pages stay PROT_NONE; larger secrets are read through an mprotect window)",
        b.default,
        b.default_access_path,
        securememory::scratch_capacity()
    )?;
    let how = if b.auto_access_path == AccessPath::Copy {
        "reads are a pread, as for the default"
    } else {
        "pages are made readable with mprotect while an access is in flight"
    };
    writeln!(
        o,
        "  Backend::Auto picks: {:?} with the {:?} access path ({how})",
        b.auto, b.auto_access_path
    )
}

fn live_check(o: &mut Formatter<'_>, f: &Findings) -> fmt::Result {
    writeln!(o, "\nLive check (create, read back, close)")?;
    for c in &f.live_check {
        write!(o, "  {}", c.name)?;
        if let (Some(b), Some(p)) = (c.backend, c.access_path) {
            write!(o, " ({b:?}, {p:?})")?;
        }
        match &c.error {
            None => writeln!(o, ": ok")?,
            Some(e) => writeln!(o, ": FAILED: {e}")?,
        }
    }
    Ok(())
}

fn verdict(o: &mut Formatter<'_>, f: &Findings) -> fmt::Result {
    writeln!(o)?;
    if f.limits.is_empty() {
        writeln!(o, "Verdict: {}", f.verdict)
    } else {
        writeln!(o, "Verdict: {}: {}", f.verdict, f.limits.join("; "))
    }
}
