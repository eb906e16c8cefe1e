//! Attack (sealed layout + signal purge): the signal handler replaces every
//! registered mapping with zero pages, the sealing key's pool page among
//! them. A program whose own handler lets it go on then makes new sealed
//! secrets: they must not be sealed under the zeroed (all-zero, public)
//! key, whose ciphertexts in the unlocked arena (swap) would be plaintext
//! to anyone.
#![cfg(target_os = "linux")]

mod common;

use std::io::Read;

use common::child::{self, Child};
use common::sealed::sealing_key;
use securememory::SecretFactory;
use securememory::{purge_on_signals, Error, Layout, Options, ProtectedFactory};

extern "C" fn programs_handler(_sig: libc::c_int) {}

#[test]
fn sealed_secrets_made_after_a_signal_purge_get_a_live_key() {
    const NAME: &str = "sealed_secrets_made_after_a_signal_purge_get_a_live_key";
    if child::is_child(NAME) {
        // SAFETY: a handler that does nothing, installed before the purge's.
        unsafe {
            libc::signal(
                libc::SIGUSR1,
                programs_handler as *const () as libc::sighandler_t,
            )
        };
        purge_on_signals(&[libc::SIGUSR1]).expect("install");
        let f = ProtectedFactory::new(Options::default().layout(Layout::Sealed)).expect("factory");
        let before = f.new(&mut b"made before the purge".to_vec()).expect("new");
        assert!(
            sealing_key(&before, 0).iter().any(|&b| b != 0),
            "control: a random key"
        );
        // SAFETY: raising a signal whose handlers are installed above.
        unsafe { libc::raise(libc::SIGUSR1) };
        assert!(matches!(before.with_bytes(|_| ()), Err(Error::Purged)));
        let after = f
            .new(&mut b"made after the purge".to_vec())
            .expect("new after");
        assert_eq!(
            after.with_bytes(|b| b.to_vec()).unwrap(),
            b"made after the purge"
        );
        let key = sealing_key(&after, 0);
        assert_eq!(key.len(), 32);
        assert!(
            key.iter().any(|&b| b != 0),
            "a secret made after the signal purge is sealed under an all-zero key"
        );
        child::done();
        return;
    }
    let run = Child::new(NAME, NAME).run();
    assert!(
        run.status.success() && run.stdout.contains(child::DONE),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
}

/// An access in flight when the signal purge lands: the purge's docs say a
/// copy-path access in flight returns `Purged`. A sealed access whose key
/// copy or ciphertext read saw the zeroed page fails to open: that must be
/// `Purged` too, not `AuthenticationFailed` (which says memory corruption
/// or tampering, logs an error and counts a failure).
#[test]
fn a_sealed_access_in_flight_at_a_signal_purge_is_purged() {
    const NAME: &str = "a_sealed_access_in_flight_at_a_signal_purge_is_purged";
    if child::is_child(NAME) {
        // SAFETY: a handler that does nothing, installed before the purge's.
        unsafe {
            libc::signal(
                libc::SIGUSR1,
                programs_handler as *const () as libc::sighandler_t,
            )
        };
        purge_on_signals(&[libc::SIGUSR1]).expect("install");
        let f = ProtectedFactory::new(Options::default().layout(Layout::Sealed)).expect("factory");
        let mut wrong = Vec::new();
        for _ in 0..100 {
            let s = f.new(&mut [7u8; 32]).expect("new");
            let started = std::sync::atomic::AtomicBool::new(false);
            let first_error = std::thread::scope(|sc| {
                let reader = sc.spawn(|| {
                    let mut buf = [0u8; 32];
                    loop {
                        started.store(true, std::sync::atomic::Ordering::Release);
                        if let Err(e) = s.with_bytes(|b| assert_eq!(b, &[7u8; 32])) {
                            return format!("{e:?}");
                        }
                        if let Err(e) = s.reader().read(&mut buf) {
                            return format!("{e:?}");
                        }
                    }
                });
                while !started.load(std::sync::atomic::Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                // SAFETY: raising a signal whose handlers are installed above.
                unsafe { libc::raise(libc::SIGUSR1) };
                reader.join().expect("reader")
            });
            if !first_error.contains("Purged") {
                wrong.push(first_error);
            }
        }
        assert!(
            wrong.is_empty(),
            "accesses in flight at the purge: {wrong:?}"
        );
        assert_eq!(securememory::stats().sealed_auth_failures, 0);
        child::done();
        return;
    }
    let run = Child::new(NAME, NAME).run();
    assert!(
        run.status.success() && run.stdout.contains(child::DONE),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
}
