//! `securememory doctor`: what this machine offers and limits, in words a
//! person can act on, or (`--json`) as one JSON object for scripts.
//!
//! The facts come from `securememory::system::report()`, taken before
//! anything is allocated, plus a live check: one default secret, one pooled
//! secret (and one `Backend::Auto` secret where that differs from the
//! default) are created, read back and closed. The command fails (non-zero
//! exit) only when no secret can be created at all.
//!
//! In the JSON, sizes are bytes and `null` for a limit means unlimited (or,
//! for a count, that nothing limits it).
//!
//! The parts, one job each:
//! - [`findings`]: what the doctor reports, field by field (`--json` prints it as is).
//! - [`facts`]: the facts reported as read (memfd_secret, core dumps, protection keys, backends).
//! - [`capacity`]: how many secrets locked memory and vm.max_map_count allow.
//! - [`live_check`]: the secrets created, read back and closed.
//! - [`sealed`]: what the limits allow sealed secrets, and their counters.
//! - [`verdict`]: the verdict and the limits behind it.
//! - [`text`]: the text report (the findings' `Display`).

mod capacity;
mod facts;
mod findings;
mod live_check;
mod sealed;
mod text;
mod verdict;

use securememory::system;

use findings::Findings;

/// Options of `securememory doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// The pooled secret size the report counts in (a typical key), and the size
/// of every live-check secret.
const POOLED_LEN: usize = 32;

/// Why `securememory doctor` exits with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no secret can be created on this machine; see the report above")]
    NoSecret,
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Run the doctor. `Err` only when no secret can be created on this machine
/// (or the JSON cannot be written).
pub fn run(args: DoctorArgs) -> Result<(), Error> {
    let f = examine();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        print!("{f}");
    }
    if verdict::any_secret_created(&f.live_check) {
        Ok(())
    } else {
        Err(Error::NoSecret)
    }
}

fn examine() -> Findings {
    // Facts first, so the counts describe a process that holds nothing yet.
    let r = system::report();
    let maps_in_use = facts::mappings_in_use();
    let memlock = capacity::memlock(&r);
    let mappings = capacity::mappings(&r, maps_in_use);
    let live_check = live_check::live_checks(r.auto_backend);
    let limits = verdict::limits(&r, &memlock, &mappings, &live_check);
    Findings {
        verdict: verdict::verdict(&live_check, &limits),
        limits,
        page_size: r.page_size,
        memlock,
        memfd_secret: facts::memfd_secret(&r),
        core_dumps: facts::core_dumps(&r),
        mappings,
        protection_keys: facts::protection_keys(&r),
        backends: facts::backends(&r),
        sealed: sealed::sealed(&r),
        live_check,
        platform: findings::Platform {
            os: r.os,
            unavailable_options: r.unavailable_options.clone(),
        },
    }
}
