//! Guarantee: a secret is unreadable outside the access window.
//!
//! For every configuration a child process creates a secret, checks it reads
//! correctly inside `with_bytes` (and, on the window path, that its own
//! mapping is readable there), then reads the first byte of the secret's
//! protected mapping outside any access. It must die by SIGSEGV right there:
//! the parent checks both the signal and that the child announced the read.

mod common;
mod support_child;

use common::child::Child;
use common::configs::{self, Config};
use securememory::{test_hooks, AccessPath, SecretFactory};
use support_child::{announce_fatal_access, assert_segv_after_marker, known_bytes, no_core_file};

const TEST: &str = "reading_outside_the_window_faults";

#[test]
fn reading_outside_the_window_faults() {
    if let Some(config) = configs::child_config() {
        child(config);
        return;
    }
    for config in configs::all() {
        let out = Child::new(TEST, config.name).run();
        assert_segv_after_marker(&out, config.name);
        assert!(
            out.stderr.contains("inside-ok"),
            "{}: the child skipped the inside checks\n{}",
            config.name,
            out.describe()
        );
        println!(
            "{}: SIGSEGV outside the window, exact bytes inside",
            config.name
        );
    }
}

fn child(config: Config) {
    no_core_file();
    let known = known_bytes();
    let secret = config.factory().new(&mut known.clone()).expect("create");
    assert_eq!(secret.access_path(), config.path());
    let addr = test_hooks::data_address(&secret);
    assert!(
        !secret.is_readable_now().unwrap(),
        "{}: readable at rest",
        config.name
    );

    let inside = secret
        .with_bytes(|bytes| {
            assert_eq!(bytes, known, "{}: wrong bytes inside", config.name);
            let readable = secret.is_readable_now().unwrap();
            if config.path() == AccessPath::Window {
                assert!(
                    readable,
                    "{}: window open but mapping not readable",
                    config.name
                );
                // SAFETY: inside a window-path access the secret's own pages
                // are readable; `addr` is the secret's first byte there.
                let first = unsafe { std::ptr::read_volatile(addr as *const u8) };
                assert_eq!(
                    first, known[0],
                    "{}: in-place read inside the window",
                    config.name
                );
            } else {
                // The copy path never makes the secret's own pages readable.
                assert!(
                    !readable,
                    "{}: copy path made the mapping readable",
                    config.name
                );
            }
            true
        })
        .expect("with_bytes");
    assert!(inside);
    assert!(
        !secret.is_readable_now().unwrap(),
        "{}: readable after the access",
        config.name
    );
    eprintln!("inside-ok");

    announce_fatal_access(&format!(
        "{} reads {addr:#x} outside any access",
        config.name
    ));
    // SAFETY: deliberately invalid: the page is PROT_NONE at rest, so this
    // read must fault and kill the process; that is what the test checks.
    let leaked = unsafe { std::ptr::read_volatile(addr as *const u8) };
    eprintln!(
        "{}: read {leaked:#x} outside the window and survived",
        config.name
    );
    drop(secret);
}
