//! The verdict: "ready", "works with limits" or "no secret can be created",
//! and the short reasons (limits) behind anything but "ready".

use securememory::system::SystemReport;

use super::findings::{LiveCheck, Mappings, Memlock};
use crate::units::Bytes;

/// Below this many secrets, a limit is named in the verdict.
const FEW: u64 = 1024;

/// Whether any live check created (and read back) a secret.
pub(super) fn any_secret_created(live_check: &[LiveCheck]) -> bool {
    live_check.iter().any(|c| c.ok)
}

/// The reasons behind a verdict other than "ready": failed live checks,
/// limits that allow fewer than `FEW` secrets, a missing memfd_secret.
pub(super) fn limits(
    r: &SystemReport,
    memlock: &Memlock,
    mappings: &Mappings,
    live_check: &[LiveCheck],
) -> Vec<String> {
    let mut limits = Vec::new();
    for c in live_check.iter().filter(|c| !c.ok) {
        limits.push(format!("the {} failed", c.name));
    }
    if let Some(n) = memlock.one_page_secrets.filter(|&n| n < FEW) {
        limits.push(format!(
            "RLIMIT_MEMLOCK ({}) allows only about {n} one-page secrets",
            Bytes(memlock.soft)
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
    limits
}

pub(super) fn verdict(live_check: &[LiveCheck], limits: &[String]) -> &'static str {
    if !any_secret_created(live_check) {
        "no secret can be created"
    } else if limits.is_empty() {
        "ready"
    } else {
        "works with limits"
    }
}
