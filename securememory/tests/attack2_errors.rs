//! Attacks on the error classification: does a refusal name its real cause?
//!
//! - The host program locked memory of its own up to `RLIMIT_MEMLOCK` (the
//!   library's budget does not see it), and `RLIMIT_AS` leaves room for the
//!   secret's mapping and not much more: the kernel's `mlock` refusal
//!   (`ENOMEM`, the memlock limit) must be `Error::LockFailed`, not
//!   `LimitReached` blaming the address space (the mapping already exists;
//!   `mlock` needs no address space).
//! - Descriptors exhausted when the first memory-file secret (the default
//!   backend) is made: the memory file cannot be opened. That is the
//!   descriptor limit (`LimitReached`), not `Unsupported` (which says the
//!   kernel or a filter lacks the backend), and it is not remembered.

#[macro_use]
mod common;

use common::child::in_worker;
use common::mem::lock_own;
use common::rlimit::{set_memlock, CAP_IPC_LOCK};
use securememory::{
    memfd_secret_status, protection_keys_status, Backend, Error, Layout, Options, PoolProtection,
    ProcessLimit, ProtectedFactory, SecretFactory,
};

/// `VmSize` of this process in bytes (the kernel's address-space count).
fn vm_size() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

fn set_as(soft: u64, hard: u64) {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: a valid rlimit for the kernel to read.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &r) }, 0);
}

#[test]
fn mlock_refused_by_memlock_near_rlimit_as_is_lock_failed() {
    in_worker(
        "mlock_refused_by_memlock_near_rlimit_as_is_lock_failed",
        "attack2-mlock-near-as",
        &[CAP_IPC_LOCK],
        || {
            let page = common::page_size() as u64;
            let limit = 16 * page;
            set_memlock(Some(limit), Some(limit));
            let f = ProtectedFactory::new(Options::default().backend(Backend::Anonymous)).unwrap();
            // Warm up every lazy path (and show one secret fits).
            let warm = f.new(&mut [1u8; 32]).unwrap();
            warm.close().unwrap();
            // Its page, kept ready, is locked memory too: given back, so
            // the creation below maps and locks a new one.
            securememory::release_ready_pages();
            // The host program's own locked memory: the whole limit.
            let own = lock_own(limit as usize);
            // Room for the secret's one page, no more.
            let mut old = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: a valid rlimit for the kernel to fill.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
            let mut src = [2u8; 32];
            set_as(vm_size() + page, old.rlim_max);
            let r = f.new(&mut src);
            set_as(old.rlim_cur, old.rlim_max);
            // Control: the same room without the host's lock is enough.
            // SAFETY: our own mapping, locked above.
            assert_eq!(unsafe { libc::munlock(own, limit as usize) }, 0);
            let mut src2 = [3u8; 32];
            set_as(vm_size() + page, old.rlim_max);
            let control = f.new(&mut src2);
            set_as(old.rlim_cur, old.rlim_max);
            let control = control.expect("the address space had room for the secret");
            control.close().unwrap();
            let e = r.map(drop).expect_err("the kernel refuses the lock");
            println!("refusal: {e}");
            assert!(
                !matches!(
                    &e,
                    Error::LimitReached {
                        limit: ProcessLimit::AddressSpace { .. },
                        ..
                    }
                ),
                "an mlock refused by the memlock limit is blamed on RLIMIT_AS: {e:?}"
            );
            assert!(matches!(&e, Error::LockFailed { .. }), "{e:?}");
        },
    );
}

child_test! {
    fn exhausted_descriptors_at_the_first_memfd_secret_name_the_descriptor_limit() {
        let f = ProtectedFactory::new(Options::default()).unwrap();
        common::rlimit::lower_nofile(256);
        let mut files = Vec::new();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            files.push(file);
        }
        let r = f.new(&mut [4u8; 32]).map(drop);
        drop(files);
        let e = r.expect_err("no descriptor for the memory file");
        println!("refusal: {e}");
        assert!(
            matches!(
                &e,
                Error::LimitReached {
                    limit: ProcessLimit::Descriptors { .. },
                    ..
                }
            ),
            "exhausted descriptors at the memory file's opening: {e:?}"
        );
        // Not remembered.
        let s = f.new(&mut [5u8; 32]).unwrap();
        assert_eq!(s.with_bytes(|b| b[0]).unwrap(), 5);
    }
}

child_test! {
    /// A sandbox entered after start-up: `Auto` resolved to `MemfdSecret`
    /// first, then a seccomp filter denies `memfd_secret`. The refusals
    /// table says "Auto falls back to Memfd": a factory made after the
    /// filter must work.
    fn memfd_secret_denied_after_auto_resolved() {
        if memfd_secret_status().is_err() {
            eprintln!("SKIPPED: no memfd_secret here");
            return;
        }
        let before = ProtectedFactory::new(Options::default().backend(Backend::Auto)).unwrap();
        assert_eq!(before.options().backend, Backend::MemfdSecret);
        before.new(&mut [1u8; 16]).unwrap().close().unwrap();
        // No ready page: the next creation asks for a new memfd_secret file.
        securememory::release_ready_pages();
        common::seccomp::deny(&[(libc::SYS_memfd_secret, libc::EPERM)]).unwrap();
        let old = before.new(&mut [2u8; 16]).map(drop);
        println!("factory made before the filter: {old:?}");
        assert!(matches!(old, Err(Error::Unsupported(_))), "{old:?}");
        let after = ProtectedFactory::new(Options::default().backend(Backend::Auto)).unwrap();
        let r = after.new(&mut [3u8; 16]).map(|s| s.with_bytes(|b| b[0]));
        println!("Auto factory made after the filter: {:?}, {r:?}", after.options().backend);
        assert!(matches!(r, Ok(Ok(3))), "Auto after the filter: {r:?}");
    }
}

child_test! {
    /// Every protection key taken by the host program when the first keyed
    /// pool is asked for: refused. Once the host frees its keys, a keyed
    /// pool works: running out of keys is a resource, not "this machine
    /// lacks keys", and must not be remembered.
    fn protection_keys_used_up_are_not_remembered() {
        // Ask nothing of the library before the keys are taken.
        let mut taken = Vec::new();
        loop {
            // SAFETY: pkey_alloc takes two integers.
            let k = unsafe { libc::syscall(libc::SYS_pkey_alloc, 0 as libc::c_ulong, 1 as libc::c_ulong) };
            if k < 0 {
                break;
            }
            taken.push(k);
        }
        if taken.is_empty() {
            eprintln!("SKIPPED: no protection keys here");
            return;
        }
        let keyed = Options::default()
            .layout(Layout::Pooled)
            .pool_protection(PoolProtection::ProtectionKey);
        let refused = ProtectedFactory::new(keyed).map(drop);
        println!("with every key taken: {refused:?}");
        assert!(refused.is_err());
        for k in taken {
            // SAFETY: pkey_free takes an integer; no page carries our keys.
            unsafe { libc::syscall(libc::SYS_pkey_free, k as libc::c_ulong) };
        }
        assert_eq!(protection_keys_status(), Ok(()), "keys free again");
        let f = ProtectedFactory::new(keyed).expect("a keyed pool once keys are free");
        let s = f.new(&mut [9u8; 16]).unwrap();
        assert_eq!(s.with_bytes(|b| b[0]).unwrap(), 9);
    }
}
