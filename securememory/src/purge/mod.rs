//! Emergency purge: wipe and close every live secret of the process, on
//! demand ([`purge`]), on a signal ([`purge_on_signals`]), on a panic
//! ([`purge_on_panic`]) or before a deliberate exit ([`purge_and_exit`]).
//!
//! Two paths:
//! - [`purge`] (also the panic hook and [`purge_and_exit`]): every secret
//!   on the list of live secrets is closed as [`Secret::close`] closes it:
//!   new accesses fail, accesses in flight are waited for (they see their
//!   bytes), then the memory is wiped and released. Accesses made on the
//!   purging thread cannot be waited for (a metrics recorder or a closure
//!   calling `purge`): those secrets are wiped when the access ends.
//! - The signal handler (`mem/signal.rs`): no lock, no allocation, so it
//!   cannot wait for accesses or close secrets; it destroys the bytes of
//!   every registered mapping (`mem/registry.rs`) with system calls.
//!
//! [`Secret::close`]: crate::Secret::close

use crate::storage::live;

use crate::error::{Error, Result};
use crate::mem::fork;
use crate::mem::{registry, signal};
use crate::metrics;
use crate::shield::shield;

/// The signals [`purge_on_signals`] is usually given: SIGINT, SIGTERM,
/// SIGHUP and SIGQUIT.
#[cfg(unix)]
pub const DEFAULT_PURGE_SIGNALS: [i32; 4] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];
/// The signals [`purge_on_signals`] is usually given: SIGINT, SIGTERM,
/// SIGHUP and SIGQUIT by their POSIX numbers (Windows has no POSIX signals:
/// [`purge_on_signals`] refuses them there).
#[cfg(windows)]
pub const DEFAULT_PURGE_SIGNALS: [i32; 4] = [2, 15, 1, 3];

/// Wipe and close every live secret of this process, of every factory,
/// layout and backend, and return how many this call closed.
///
/// From then on every access to a secret made before the call returns
/// [`Error::Purged`]. An access in flight on another thread when the purge
/// starts is waited for, as [`close`](crate::Secret::close) waits, and sees
/// its bytes whole; one on this thread (`purge` called from inside an
/// access closure, or from a metrics recorder or `tracing` subscriber the
/// library is reporting to) cannot be waited for: its secret is wiped and
/// released when that access ends. Each thread's scratch buffer holds a
/// secret's bytes only during an access and is wiped when it ends, so none
/// holds a purged secret's bytes once the purge returns. A secret whose
/// creation is under way is purged too (its accesses fail) and its memory
/// is released at its close. A secret whose creation begins after the call began is not affected.
/// A fork child's secrets are its own: a purge in one process never touches
/// another's. In a process more than 16 processes down a fork chain there
/// is no list of its secrets: they are purged (accesses fail) but not closed
/// here (this returns 0); each is released at its close or drop. Not
/// async-signal-safe (it locks and waits): from a signal,
/// use [`purge_on_signals`].
pub fn purge() -> usize {
    purge_with(Wait::ForAccesses)
}

/// Whether a purge waits for accesses in flight on other threads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// As `close` does: [`purge`].
    ForAccesses,
    /// Not at all (the panic hook, whose thread may hold a lock such an
    /// access waits for): a secret with accesses in flight is released as
    /// the last of them ends (`Settle`), as after a signal's purge.
    Never,
}

fn purge_with(wait: Wait) -> usize {
    let epoch = registry::bump_epoch();
    let secrets = live::take_all(fork::generation(), epoch);
    let (mut wiped, mut deferred) = (0u64, 0u64);
    for (gate, storage) in &secrets {
        if gate.is_releasing_here() || crate::secret::inside_access(gate) {
            // This thread's own access or release: finished on its way out.
            deferred += 1;
            continue;
        }
        let release = |drained: &_| {
            let _ = storage.release(drained);
            metrics::count_closed()
        };
        let released = match wait {
            Wait::ForAccesses => gate.close(release),
            Wait::Never => gate.close_if_idle(release),
        };
        match released {
            Some(in_use) => {
                metrics::closed(in_use);
                wiped += 1;
            }
            None if wait == Wait::Never => deferred += 1,
            None => {}
        }
    }
    drop(secrets);
    metrics::purged(wiped);
    shield(|| {
        tracing::warn!(
            wiped,
            deferred,
            "securememory: purge: every live secret wiped and closed"
        )
    });
    wiped as usize
}

/// Purge ([`purge`]), then end the process with `code`
/// ([`std::process::exit`]).
pub fn purge_and_exit(code: i32) -> ! {
    purge();
    std::process::exit(code)
}

/// Install a handler that purges on each of `signals` (usually
/// [`DEFAULT_PURGE_SIGNALS`]), then lets the signal take its course: the
/// handler the program had installed is called with the same arguments;
/// with the default action, the default is restored and the signal raised
/// again, so the process ends as that signal ends it (SIGQUIT still dumps
/// core, SIGTERM still kills). A signal the process ignores (`SIG_IGN`)
/// is left ignored, without a handler. Installing twice is harmless.
/// Returns the signals that now have the handler.
///
/// What the handler does, and does not (it runs in a signal handler, so it
/// may not lock or allocate): it destroys the bytes of every mapping that
/// may hold a secret, of every thread (own pages, guarded pages, pool
/// chunks, every thread's scratch buffer): ranges of the memory file are
/// punched out, other pages (anonymous, `memfd_secret`) are replaced in
/// place by fresh zero pages. Later accesses return [`Error::Purged`] and
/// copy-path accesses in flight return it too (checked after the copy).
/// It does not wait for accesses in flight: a closure already running, on
/// either path, may read zeros partway through (the secret's pages or the
/// thread's scratch buffer), and its access returns `Ok`. It closes no secret
/// (that takes locks): memory is unmapped and unlocked at each secret's
/// close or drop. It cannot clear other threads' CPU registers.
///
/// # Errors
/// [`Error::Unsupported`] if `sigaction` refuses a signal (SIGKILL,
/// SIGSTOP, a number out of range); the signals before it keep their handler.
///
/// On Windows, which has no POSIX signals: always [`Error::Unsupported`]
/// (use [`purge_on_panic`], [`purge_and_exit`], or call [`purge`] from a
/// console control handler).
pub fn purge_on_signals(signals: &[i32]) -> Result<Vec<i32>> {
    #[cfg(unix)]
    {
        install_on_signals(signals)
    }
    #[cfg(windows)]
    {
        let _ = signals;
        Err(Error::Unsupported(format!(
            "purge on signals is not available on {}: it has no POSIX signals; \
             purge_on_panic, purge_and_exit and purge are",
            std::env::consts::OS
        )))
    }
}

#[cfg(unix)]
fn install_on_signals(signals: &[i32]) -> Result<Vec<i32>> {
    crate::mem::fork::install();
    let mut installed = Vec::new();
    for &sig in signals {
        match signal::install(sig) {
            Ok(signal::Installed::Yes) => installed.push(sig),
            Ok(signal::Installed::Ignored) => {}
            Err(e) => {
                return Err(Error::Unsupported(format!(
                    "purge handler for signal {sig}: sigaction: {e}"
                )))
            }
        }
    }
    shield(|| tracing::debug!(signals = ?installed, "securememory: purge on signals installed"));
    Ok(installed)
}

/// Whether the purge handler is `sig`'s disposition now: `false` once the
/// program installed a handler of its own in its place (which may or may
/// not chain to it).
pub fn purges_on_signal(sig: i32) -> bool {
    #[cfg(unix)]
    {
        signal::is_installed(sig)
    }
    #[cfg(windows)]
    {
        let _ = sig;
        false
    }
}

/// Install a panic hook that purges ([`purge`]), then calls the hook that
/// was installed before (the default one prints the message), so every
/// secret is wiped before the panic unwinds or aborts. It does not wait for
/// accesses in flight on other threads (one may wait for a lock the
/// panicking thread releases only as it unwinds): each such secret is
/// closed to new accesses at once and wiped and released as the last of
/// them ends. A secret the
/// panicking thread is accessing is wiped when that access unwinds; with
/// `panic = "abort"` its bytes are also destroyed in place, as on the
/// signal path, since the process ends before the access does. The hook's
/// purge makes no `metrics` or `tracing` call (a panic raised there, by a
/// recorder or subscriber, would abort the process mid-purge);
/// [`Stats::purged`](crate::Stats::purged) counts it.
pub fn purge_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        crate::shield::quiet(|| purge_with(Wait::Never));
        if cfg!(panic = "abort") {
            signal::wipe_all_blocked();
        }
        previous(info);
    }));
}
