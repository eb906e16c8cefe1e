//! Protection keys are used only where the rights a thread starts with deny
//! them. The library checks, in the thread that allocates the pool's key,
//! that its PKRU denied that key before the allocation: where the program
//! (or the administrator's default, which new processes and signal handlers
//! start from) opens keys, other threads could read the pool, so
//! `ProtectionKey` is refused and `Auto` falls back to `PROT_NONE`.
//!
//! The child opens every key in its PKRU (`WRPKRU 0`) before its first use
//! of the library, as a program that uses keys itself might. Without the
//! check the factory was made and the other threads of such a program
//! could read every pooled secret.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use securememory::{Error, Layout, Options, PoolProtection, ProtectedFactory};

/// Whether the CPU and kernel enable protection keys (`ospke` flag), read
/// without allocating a key (that would defeat the test).
fn ospke() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|s| s.split_whitespace().any(|w| w == "ospke"))
}

#[cfg(target_arch = "x86_64")]
fn open_every_key() {
    // SAFETY: WRPKRU with ospke set (checked by the caller): gives this
    // thread access to every key; no memory is touched.
    unsafe {
        std::arch::asm!("wrpkru", in("eax") 0u32, in("ecx") 0u32, in("edx") 0u32,
            options(nostack, preserves_flags));
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn open_every_key() {}

fn pooled(p: PoolProtection) -> Options {
    Options::default().layout(Layout::Pooled).pool_protection(p)
}

child_test! {
    fn keys_refused_where_threads_start_with_them_open() {
        if !cfg!(target_arch = "x86_64") || !ospke() {
            eprintln!("SKIPPED: default key rights: protection keys unavailable on this machine");
            return;
        }
        open_every_key();
        match ProtectedFactory::new(pooled(PoolProtection::ProtectionKey)) {
            Err(Error::Unsupported(why)) => {
                assert!(why.contains("allowed access"), "reason: {why}");
                println!("refused: {why}");
            }
            other => panic!("ProtectionKey accepted with every key open: {other:?}"),
        }
        let auto = ProtectedFactory::new(pooled(PoolProtection::Auto)).expect("Auto");
        assert_eq!(auto.options().pool_protection, PoolProtection::ProtNone);
        assert!(securememory::protection_keys_status().is_err());
    }
}
