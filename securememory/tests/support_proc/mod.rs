//! Helpers of the process-level tests (`guarantee_fork.rs`,
//! `fork_child_secrets.rs`, `guarantee_descriptor.rs`, `memlock_limit.rs`,
//! `pool_capacity.rs`): `fork` and a `tracing` capture (capabilities and
//! the memlock limit are in `common::rlimit`).
//!
//! Each test file uses only part of this module.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

/// Fork. In the child run `child` and leave with `_exit(code)` (101 if it
/// panics) without returning into the test harness; in the parent wait for
/// the child and return its status.
///
/// Call it from a worker (see `common::child`): the harness's other thread is
/// then idle, so no lock is held across the fork.
pub fn fork_and_wait(child: impl FnOnce() -> i32) -> ExitStatus {
    io::stdout().flush().ok();
    io::stderr().flush().ok();
    // SAFETY: fork has no memory-safety preconditions; the child runs only
    // `child` and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        crate::common::run_and_exit(child);
    }
    ExitStatus::from_raw(crate::common::wait_status(pid))
}

/// The events a [`Capture`] subscriber saw: level and fields as text.
pub type Events = Arc<Mutex<Vec<(tracing::Level, String)>>>;

/// A minimal `tracing` subscriber that records every event (no spans).
pub struct Capture(pub Events);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), f.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Install a [`Capture`] as the process's global subscriber and return its events.
pub fn capture_tracing() -> Events {
    let events = Events::default();
    tracing::subscriber::set_global_default(Capture(Arc::clone(&events)))
        .expect("no subscriber installed yet");
    events
}
