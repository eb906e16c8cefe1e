//! `securememory doctor` run as a user would: the built binary, its text and
//! its JSON, checked against what this test process reads from the kernel
//! itself; and in a child with a tiny memlock limit and no CAP_IPC_LOCK,
//! where the report must name the limit and the fix.
#![cfg(target_os = "linux")]

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_securememory");
/// Capability number of CAP_IPC_LOCK (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// getrlimit as the JSON spells it: bytes, `null` for unlimited.
fn rlimit(resource: libc::__rlimit_resource_t) -> (Value, Value) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit struct for the kernel to fill.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut r) }, 0);
    let v = |x: libc::rlim_t| {
        if x == libc::RLIM_INFINITY {
            Value::Null
        } else {
            Value::from(x)
        }
    };
    (v(r.rlim_cur), v(r.rlim_max))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

fn has_cap_ipc_lock() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    eff & (1 << CAP_IPC_LOCK) != 0
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn doctor(args: &[&str]) -> Output {
    Command::new(BIN).arg("doctor").args(args).output().unwrap()
}

fn parse(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{}", show(out)))
}

#[test]
fn text_report_covers_every_topic() {
    let out = doctor(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let s = text(&out.stdout);
    for needle in [
        "RLIMIT_MEMLOCK",
        "CAP_IPC_LOCK",
        "memfd_secret",
        "RLIMIT_CORE",
        "core_pattern",
        "dumpable",
        "MADV_DONTDUMP",
        "CoreDumps::DisableForProcess",
        "vm.max_map_count",
        "Protection keys (pku)",
        "Backend::Auto picks",
        "default: Memfd with the Copy access path",
        "default secret (Memfd, Copy): ok",
        "Verdict: ",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
    }
}

#[test]
fn json_report_matches_what_this_process_reads() {
    let out = doctor(&["--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let j = parse(&out);
    let page = page_size();
    assert_eq!(j["page_size"], page);

    let (soft, hard) = rlimit(libc::RLIMIT_MEMLOCK);
    let m = &j["memlock"];
    assert_eq!(m["soft"], soft, "memlock soft vs getrlimit");
    assert_eq!(m["hard"], hard, "memlock hard vs getrlimit");
    let cap = has_cap_ipc_lock();
    assert_eq!(m["cap_ipc_lock"], cap);
    let applies = !cap && !soft.is_null();
    assert_eq!(m["limit_applies"], applies);
    let scratch = m["scratch_bytes_per_thread"].as_u64().unwrap();
    assert_eq!(scratch, securememory::scratch_capacity() as u64);
    if applies {
        let expect = soft.as_u64().unwrap().saturating_sub(scratch) / page;
        assert_eq!(m["one_page_secrets"], expect);
        assert!(m["pooled_secrets"].as_u64().unwrap() >= expect);
    } else {
        assert!(m["one_page_secrets"].is_null() && m["pooled_secrets"].is_null());
    }

    let (core_soft, core_hard) = rlimit(libc::RLIMIT_CORE);
    let c = &j["core_dumps"];
    assert_eq!(c["rlimit_soft"], core_soft);
    assert_eq!(c["rlimit_hard"], core_hard);
    let pattern = read_trimmed("/proc/sys/kernel/core_pattern");
    assert_eq!(c["core_pattern"].as_str(), pattern.as_deref());
    assert_eq!(
        c["pipe_handler"].is_null(),
        !pattern.unwrap_or_default().starts_with('|')
    );
    assert_eq!(c["secrets_excluded"], true);
    assert!(c["dumpable"].is_boolean());

    let maps = &j["mappings"];
    let max: u64 = read_trimmed("/proc/sys/vm/max_map_count")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(maps["max_map_count"], max);
    let in_use = maps["in_use"].as_u64().unwrap();
    assert!(in_use > 0 && in_use < max, "in_use {in_use}");
    assert_eq!(maps["one_page_secrets"], max - in_use);
    assert_eq!(maps["guarded_secrets"], (max - in_use) / 3);

    let ms = &j["memfd_secret"];
    let available = ms["available"].as_bool().unwrap();
    if available {
        assert!(ms["reason"].is_null());
    } else {
        assert!(!ms["reason"].as_str().unwrap().is_empty());
    }
    assert_eq!(available, securememory::memfd_secret_status().is_ok());

    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let pku = flags.contains(&"pku") && flags.contains(&"ospke");
    assert_eq!(j["protection_keys"]["present"], pku);
    let usable = securememory::protection_keys_status().is_ok();
    assert_eq!(j["protection_keys"]["usable"], usable);
    assert_eq!(j["protection_keys"]["reason"].is_null(), usable);
    assert_eq!(
        j["protection_keys"]["resists_speculation"],
        securememory::keys_resist_speculation()
    );

    let b = &j["backends"];
    assert_eq!(b["default"], "Memfd");
    assert_eq!(b["default_access_path"], "Copy");
    let (auto, auto_path) = if available {
        ("MemfdSecret", "Window")
    } else {
        ("Memfd", "Copy")
    };
    assert_eq!(b["auto"], auto);
    assert_eq!(b["auto_access_path"], auto_path);

    let checks = j["live_check"].as_array().unwrap();
    let named = |n: &str| {
        checks
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("no {n}"))
    };
    assert_eq!(named("default secret")["ok"], true, "{checks:?}");
    assert_eq!(named("default secret")["backend"], "Memfd");
    assert_eq!(named("pooled 32-byte secret")["ok"], true, "{checks:?}");
    assert_eq!(named("sealed 32-byte secret")["ok"], true, "{checks:?}");
    let sealed = &j["sealed"];
    assert_eq!(sealed["arena_bytes_per_secret"], 64, "{sealed}");
    assert!(sealed["fits_memlock"].is_boolean(), "{sealed}");
    assert_eq!(
        sealed["in_use"], 0,
        "the live check closed its secret: {sealed}"
    );

    let verdict = j["verdict"].as_str().unwrap();
    let limits = j["limits"].as_array().unwrap();
    match verdict {
        "ready" => assert!(limits.is_empty()),
        "works with limits" => assert!(!limits.is_empty()),
        other => panic!("verdict {other:?} on a machine where secrets work"),
    }
}

/// Run the binary with RLIMIT_MEMLOCK set to `bytes` and CAP_IPC_LOCK gone,
/// or `None` (after a loud SKIPPED) where the capability cannot be dropped.
fn doctor_with_memlock(bytes: u64, args: &[&str]) -> Option<Output> {
    let mut cmd = if has_cap_ipc_lock() {
        // Dropped from the bounding and inheritable sets, root's exec of the
        // binary gets no CAP_IPC_LOCK (its permitted set is the bounding set).
        let mut c = Command::new("setpriv");
        c.args([
            "--inh-caps=-ipc_lock",
            "--bounding-set=-ipc_lock",
            "--",
            BIN,
        ]);
        c
    } else {
        Command::new(BIN)
    };
    cmd.arg("doctor").args(args);
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: the closure runs in the forked child before exec and calls only
    // setrlimit, which is async-signal-safe; `limit` is a plain copy.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    match cmd.output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: setpriv (util-linux) not found; cannot drop CAP_IPC_LOCK for the doctor child");
            None
        }
        Err(e) => panic!("could not run the doctor child: {e}"),
    }
}

#[test]
fn tiny_memlock_without_cap_names_the_limit_and_the_fix() {
    let page = page_size();
    let scratch = securememory::scratch_capacity() as u64;
    // Room for the scratch buffer and three one-page secrets (the live check
    // holds a pool chunk while it makes the Auto-backend secret).
    let limit = scratch + 3 * page;
    let Some(out) = doctor_with_memlock(limit, &[]) else {
        return;
    };
    assert!(out.status.success(), "{}", show(&out));
    let s = text(&out.stdout);
    let kib = limit / 1024;
    for needle in [
        format!("limit: soft {kib} KiB, hard {kib} KiB"),
        "CAP_IPC_LOCK: no".to_string(),
        "the limit applies".to_string(),
        "allows about 3 one-page secrets".to_string(),
        "ulimit -l".to_string(),
        "docker run --ulimit memlock=".to_string(),
        "LimitMEMLOCK=".to_string(),
        "Layout::Pooled".to_string(),
        "default secret (Memfd, Copy): ok".to_string(),
        format!("Verdict: works with limits: RLIMIT_MEMLOCK ({kib} KiB) allows only about 3 one-page secrets"),
    ] {
        assert!(s.contains(&needle), "missing {needle:?} in:\n{s}");
    }

    let Some(out) = doctor_with_memlock(limit, &["--json"]) else {
        return;
    };
    assert!(out.status.success(), "{}", show(&out));
    let j = parse(&out);
    assert_eq!(j["memlock"]["cap_ipc_lock"], false);
    assert_eq!(j["memlock"]["limit_applies"], true);
    assert_eq!(j["memlock"]["soft"], limit);
    assert_eq!(j["memlock"]["one_page_secrets"], 3);
    assert_eq!(j["verdict"], "works with limits");
}

#[test]
fn no_lockable_memory_fails_with_the_reason() {
    let Some(out) = doctor_with_memlock(0, &[]) else {
        return;
    };
    assert!(
        !out.status.success(),
        "doctor must fail when no secret can be created:\n{}",
        show(&out)
    );
    let s = text(&out.stdout);
    assert!(s.contains("default secret: FAILED: could not lock"), "{s}");
    assert!(s.contains("Verdict: no secret can be created"), "{s}");
    assert!(
        text(&out.stderr).contains("no secret can be created"),
        "{}",
        show(&out)
    );

    let Some(out) = doctor_with_memlock(0, &["--json"]) else {
        return;
    };
    assert!(!out.status.success(), "{}", show(&out));
    let j = parse(&out);
    assert_eq!(j["verdict"], "no secret can be created");
    assert!(j["live_check"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ok"] == false));
    assert_eq!(j["memfd_secret"]["available"], false);
}

#[path = "../../securememory/tests/common/seccomp.rs"]
#[allow(dead_code)]
mod seccomp;

/// With `prlimit64` denied (a seccomp profile), the memlock limit is
/// unknown: doctor says so, and never calls it unlimited.
#[test]
fn unreadable_memlock_limit_is_reported_unknown() {
    let run = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("doctor").args(args);
        // SAFETY: runs in the forked child before exec; it installs a filter
        // for that child alone (prctl and seccomp system calls).
        unsafe {
            cmd.pre_exec(|| seccomp::deny(&[(libc::SYS_prlimit64, libc::EPERM)]));
        }
        cmd.output().expect("run doctor")
    };
    let out = run(&[]);
    let report = text(&out.stdout);
    assert!(
        report.contains("limit: unknown"),
        "doctor must say the limit is unknown\n{}",
        show(&out)
    );
    assert!(
        !report.contains("limit: soft unlimited"),
        "an unreadable limit is not unlimited\n{}",
        show(&out)
    );
    let json = parse(&run(&["--json"]));
    assert_eq!(
        json["memlock"]["limit_unknown"],
        Value::Bool(true),
        "{json}"
    );
}
