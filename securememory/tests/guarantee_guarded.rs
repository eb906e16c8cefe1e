//! Guarantee: overflows of a guarded secret are caught.
//!
//! Layout (see `mem/region.rs`): `guard | ... canary | secret | guard`, the
//! secret flush against the trailing guard page. For every backend, in a
//! child process and inside a window-path access (so the data pages are
//! readable and only a guard page can explain a fault):
//! - reading the last byte works, writing one byte past the end dies by
//!   SIGSEGV (a write would fault on the read-only window too, so the
//!   read-past-end case below is the one that proves the guard page);
//! - reading the last byte works, reading one byte past the end dies;
//! - reading the first data byte works, reading one byte before the data
//!   pages dies.
//!
//! And in this process: a damaged canary makes `close` report
//! `CanaryDamaged` (counted in the stats) while the memory is still wiped
//! and freed; an intact canary closes cleanly.

mod common;
mod support_child;

use common::child::Child;
use common::configs::{self, Config};
use common::procfs::{smaps, vma_at};
use securememory::{stats, test_hooks, Error, Layout, Secret, SecretFactory};
use support_child::{announce_fatal_access, assert_segv_after_marker, known_bytes, no_core_file};

fn guarded_window() -> Vec<Config> {
    configs::select(|c| c.layout() == Layout::Guarded && c.is_window())
}

/// Run `test` as a child for every guarded window configuration and expect
/// each to die by SIGSEGV at the announced access.
fn expect_segv_in_children(test: &str) {
    let configs = guarded_window();
    assert!(
        configs.len() >= 2,
        "too few guarded configurations: {configs:?}"
    );
    for config in configs {
        let out = Child::new(test, config.name).run();
        assert_segv_after_marker(&out, &format!("{test} / {}", config.name));
        println!("{test} / {}: SIGSEGV", config.name);
    }
}

/// In a child: a guarded secret of the known bytes, inside a window access,
/// hands `f` the secret's slice; the data pages are checked to end exactly
/// where the secret ends.
fn child_inside_window(config: Config, f: impl FnOnce(&Secret, &[u8])) {
    no_core_file();
    let known = known_bytes();
    let secret = config.factory().new(&mut known.clone()).expect("create");
    let (pages, pages_len) = test_hooks::data_pages(&secret);
    assert_guard_pages(&config, pages, pages_len);
    secret
        .with_bytes(|bytes| {
            assert_eq!(bytes, known);
            let end = bytes.as_ptr() as usize + bytes.len();
            assert_eq!(
                end,
                pages + pages_len,
                "{}: secret not flush against the guard",
                config.name
            );
            f(&secret, bytes);
        })
        .expect("with_bytes");
    eprintln!("{}: survived the access", config.name);
}

/// The pages on both sides of the data are this secret's guards: mapped
/// (so no later mapping can land there), no-access, do-not-dump, unlocked.
/// Without this, a fault past the end could be luck (an unmapped neighbour).
fn assert_guard_pages(config: &Config, start: usize, len: usize) {
    let page = common::page_size();
    for (side, addr) in [("leading", start - page), ("trailing", start + len)] {
        let vma = vma_at(addr).unwrap_or_else(|| {
            let near: Vec<String> = smaps()
                .into_iter()
                .filter(|v| v.end + 16 * page > start && v.start < start + len + 16 * page)
                .map(|v| format!("{} [{}]", v.header, v.flags.join(" ")))
                .collect();
            panic!(
                "{}: no {side} guard page at {addr:#x}; nearby:\n{}",
                config.name,
                near.join("\n")
            )
        });
        let guard_like = vma.perms() == "---p" && vma.has_flag("dd") && !vma.has_flag("lo");
        assert!(
            guard_like,
            "{}: {side} neighbour is not a guard page: {vma:#?}",
            config.name
        );
    }
}

#[test]
fn write_past_end_faults() {
    let Some(config) = configs::child_config() else {
        return expect_segv_in_children("write_past_end_faults");
    };
    child_inside_window(config, |_, bytes| {
        let last = bytes.as_ptr() as usize + bytes.len() - 1;
        // SAFETY: `last` is the secret's last byte, readable in the window.
        assert_eq!(
            unsafe { std::ptr::read_volatile(last as *const u8) },
            bytes[bytes.len() - 1]
        );
        announce_fatal_access(&format!("{} writes one byte past the end", config.name));
        // SAFETY: deliberately invalid: one byte past the secret is the
        // trailing guard page; this write must kill the process.
        unsafe { std::ptr::write_volatile((last + 1) as *mut u8, 0x41) };
    });
}

#[test]
fn read_past_end_faults() {
    let Some(config) = configs::child_config() else {
        return expect_segv_in_children("read_past_end_faults");
    };
    child_inside_window(config, |_, bytes| {
        let last = bytes.as_ptr() as usize + bytes.len() - 1;
        // SAFETY: `last` is the secret's last byte, readable in the window.
        assert_eq!(
            unsafe { std::ptr::read_volatile(last as *const u8) },
            bytes[bytes.len() - 1]
        );
        announce_fatal_access(&format!("{} reads one byte past the end", config.name));
        // SAFETY: deliberately invalid: the trailing guard page; must fault.
        let b = unsafe { std::ptr::read_volatile((last + 1) as *const u8) };
        eprintln!("read {b:#x} past the end");
    });
}

#[test]
fn read_before_start_faults() {
    let Some(config) = configs::child_config() else {
        return expect_segv_in_children("read_before_start_faults");
    };
    child_inside_window(config, |secret, _| {
        let (start, _) = test_hooks::data_pages(secret);
        // SAFETY: the first data page is readable while the window is open.
        let first = unsafe { std::ptr::read_volatile(start as *const u8) };
        eprintln!("first data byte {first:#x}");
        announce_fatal_access(&format!(
            "{} reads one byte before the data pages",
            config.name
        ));
        // SAFETY: deliberately invalid: the leading guard page; must fault.
        let b = unsafe { std::ptr::read_volatile((start - 1) as *const u8) };
        eprintln!("read {b:#x} before the start");
    });
}

#[test]
fn damaged_canary_is_reported_and_memory_still_freed() {
    if configs::child_config().is_some() {
        return;
    }
    for config in configs::select(|c| c.layout() == Layout::Guarded) {
        let factory = config.factory();

        // Control: an intact canary closes cleanly. Its access also creates
        // this thread's scratch buffer (copy path), which stays locked for
        // the thread's life, before the baseline is taken.
        let failures = stats().canary_failures;
        let intact = factory.new(&mut known_bytes()).unwrap();
        assert!(intact.with_bytes(|b| b == known_bytes()).unwrap());
        intact
            .close()
            .unwrap_or_else(|e| panic!("{}: intact canary: {e}", config.name));
        assert_eq!(stats().canary_failures, failures, "{}", config.name);
        let before = stats();

        let secret = factory.new(&mut known_bytes()).unwrap();
        let (_, pages_len) = test_hooks::data_pages(&secret);
        assert!(stats().in_use > before.in_use);
        test_hooks::corrupt_canary(&secret).unwrap();
        // The secret itself is untouched by the damage in front of it.
        assert!(secret.with_bytes(|b| b == known_bytes()).unwrap());
        let _ = test_hooks::take_last_wiped();
        let r = secret.close();
        assert!(
            matches!(r, Err(Error::CanaryDamaged)),
            "{}: close gave {r:?}",
            config.name
        );
        let wiped = test_hooks::take_last_wiped().expect("close released the pages");
        assert_eq!(wiped.len(), pages_len, "{}", config.name);
        assert!(wiped.iter().all(|&b| b == 0), "{}: not wiped", config.name);
        let after = stats();
        assert_eq!(
            after.canary_failures,
            before.canary_failures + 1,
            "{}",
            config.name
        );
        assert_eq!(after.in_use, before.in_use, "{}: not freed", config.name);
        assert_eq!(
            after.bytes_locked, before.bytes_locked,
            "{}: still locked",
            config.name
        );
        assert!(secret.is_closed());
        assert!(
            matches!(secret.close(), Ok(())),
            "{}: second close",
            config.name
        );
        println!(
            "{}: canary damage reported, memory wiped and freed",
            config.name
        );
    }
}
