//! The facts reported as read, with no counting: from the system report
//! (memfd_secret, core dumps, protection keys, backends) and from `/proc`
//! (mappings in use, effective uid).

use securememory::system::SystemReport;
use securememory::{AccessPath, Backend, Options, ProtectedFactory};

use super::findings::{Backends, CoreDumps, MemfdSecret, ProtectionKeys};

/// The mappings this process has now (lines of `/proc/self/maps`).
pub(super) fn mappings_in_use() -> Option<u64> {
    std::fs::read_to_string("/proc/self/maps")
        .ok()
        .map(|m| m.lines().count() as u64)
}

pub(super) fn running_as_root() -> bool {
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

pub(super) fn memfd_secret(r: &SystemReport) -> MemfdSecret {
    MemfdSecret {
        available: r.memfd_secret.is_ok(),
        reason: r.memfd_secret.clone().err(),
    }
}

pub(super) fn core_dumps(r: &SystemReport) -> CoreDumps {
    CoreDumps {
        rlimit_soft: r.core_soft,
        rlimit_hard: r.core_hard,
        core_pattern: r.core_pattern.clone(),
        pipe_handler: r.core_pattern.as_deref().and_then(pipe_handler),
        dumpable: r.dumpable,
        secrets_excluded: true,
    }
}

/// The program named by a `|` core_pattern (its file name).
fn pipe_handler(pattern: &str) -> Option<String> {
    let cmd = pattern.strip_prefix('|')?.split_whitespace().next()?;
    Some(cmd.rsplit('/').next().unwrap_or(cmd).to_string())
}

pub(super) fn protection_keys(r: &SystemReport) -> ProtectionKeys {
    let status = securememory::protection_keys_status();
    ProtectionKeys {
        present: r.protection_keys,
        usable: status.is_ok(),
        reason: status.err(),
        resists_speculation: securememory::keys_resist_speculation(),
    }
}

pub(super) fn backends(r: &SystemReport) -> Backends {
    Backends {
        default: Backend::default(),
        default_access_path: access_path_of(Backend::default()),
        auto: r.auto_backend,
        auto_access_path: access_path_of(r.auto_backend),
    }
}

/// The path `AccessPath::Auto` takes on a backend, as the factory resolves it.
fn access_path_of(b: Backend) -> AccessPath {
    ProtectedFactory::new(Options::default().backend(b))
        .map_or(AccessPath::Window, |f| f.options().access)
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
}
