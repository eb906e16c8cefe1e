//! Helpers of the guarantee tests whose expected outcome is a child killed
//! by SIGSEGV (`guarantee_no_access.rs`, `guarantee_guarded.rs`), and the
//! known secret bytes of the guarantee tests.
//!
//! Each test file uses only part of this module.
#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;

use crate::common::child::Run;

/// Printed by a child on stderr right before the operation that must kill
/// it, so the parent can tell "died there" from "died earlier".
pub const MARKER: &str = "GUARANTEE-CHILD: reached the fatal access";

/// Assert the child reached [`MARKER`] (so it did not die of something
/// else earlier) and then died by SIGSEGV.
pub fn assert_segv_after_marker(run: &Run, what: &str) {
    assert!(
        run.stderr.contains(MARKER),
        "{what}: the child never reached the fatal access\n{}",
        run.describe()
    );
    assert_eq!(
        run.status.signal(),
        Some(libc::SIGSEGV),
        "{what}: the child should have died by SIGSEGV\n{}",
        run.describe()
    );
}

/// In a child, just before the fatal access: announce it (unbuffered).
pub fn announce_fatal_access(detail: &str) {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    eprintln!("{MARKER}: {detail}");
}

/// In a child that is meant to crash: no core file (a CI machine may have
/// core dumps on; the crash is expected and its core would litter the tree).
pub fn no_core_file() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct passed by
    // reference; setrlimit only changes this (child) process's limit.
    let r = unsafe {
        if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) == 0 {
            lim.rlim_cur = 0;
            libc::setrlimit(libc::RLIMIT_CORE, &lim)
        } else {
            -1
        }
    };
    if r != 0 {
        eprintln!("note: could not set RLIMIT_CORE to 0 in the child");
    }
}

/// The test's 32 known, all non-zero bytes.
pub fn known_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, x) in b.iter_mut().enumerate() {
        *x = 0xA0 ^ (i as u8 + 1);
    }
    b
}
