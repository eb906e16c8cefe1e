//! How the pool keeps its shared pages unreadable at rest: the probes for
//! protection keys (the [`PoolProtection`](crate::PoolProtection) enum itself
//! lives in `options.rs`).

/// Whether memory protection keys work in this process: `Ok`, or why not.
/// The first call allocates the key the pool uses (one of the 15 a process
/// has), access-disabled in the calling thread, and refuses it if that
/// thread's PKRU allowed it before (the program or the system default
/// opens keys).
pub fn protection_keys_status() -> Result<(), String> {
    crate::mem::pkey::pool_key().map(|_| ())
}

/// Whether the kernel reports this CPU not affected by Meltdown
/// (`/sys/devices/system/cpu/vulnerabilities/meltdown` says "Not affected").
/// CPUs affected by Meltdown were also shown to read across protection keys
/// speculatively (Meltdown-PK), so [`PoolProtection::Auto`](crate::PoolProtection::Auto) uses keys only
/// where this is `true`. Unknown (the file unreadable) counts as affected.
pub fn keys_resist_speculation() -> bool {
    std::fs::read_to_string("/sys/devices/system/cpu/vulnerabilities/meltdown")
        .is_ok_and(|s| s.trim() == "Not affected")
}
