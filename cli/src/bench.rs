//! `securememory bench`: Asherah Go's benchmark set for every implementation,
//! each row in a one-thread form and a form with one thread per core sharing
//! one secret, beside the kernel floor measured in the same run, plus the
//! capacity of a process without `CAP_IPC_LOCK`.
//!
//! The parts, one job each:
//! - [`impls`]: the implementations compared (factories).
//! - [`ops`]: the benchmark operations (what one op is for each row name).
//! - [`runner`]: timing `n` ops on one thread or on a team of threads.
//! - [`measure`]: warm-up, time-boxed batches, medians; the floor samples.
//! - [`check`]: the at-rest check after every row.
//! - [`client`]: the real-client row (a 1 KiB message sealed with a key
//!   from a secret) and its plain-array baseline.
//! - [`capacity`]: the capacity child process and its parent side.
//! - [`report`]: the table and the JSON object.
//!
//! `impls`, `ops`, `runner` and `check` are also the criterion bench's
//! (cli/benches/secrets.rs includes them), so both run the same rows.

mod capacity;
mod check;
mod client;
mod impls;
mod measure;
mod ops;
mod report;
mod runner;

use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use securememory::SecretFactory;

pub use capacity::{capacity_child, CapacityArgs, ChildError};

use capacity::{CapacityError, CapacityLayout};
use check::CheckError;
use impls::FactoryError;
use measure::{Plan, Samples};
use ops::{Op, OpError};
use report::{Header, Report, Timing};

/// Why `securememory bench` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Factory(#[from] FactoryError),
    #[error("row {op} / {imp} / {threads} threads failed: {source}")]
    Row {
        op: &'static str,
        imp: &'static str,
        threads: usize,
        source: OpError,
    },
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    /// Making or closing a row's shared secret.
    #[error(transparent)]
    Secret(#[from] securememory::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Options of `securememory bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Short batches: the whole run (capacity included) in under 30 seconds,
    /// with rougher figures.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object on stdout instead of the table (progress and
    /// notes go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Count sealed 32-byte secrets up to this many in the capacity_sealed_32b
    /// row (default 1,000,000; 200,000 with --quick).
    #[arg(long)]
    pub sealed_max: Option<u64>,
}

/// Run the benchmark and print the table (or the JSON object).
pub fn run(args: BenchArgs) -> Result<(), Error> {
    let started = Instant::now();
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut notes = Vec::new();
    let impls = impls::available(&mut notes)?;
    let thread_forms: Vec<usize> = if cores > 1 { vec![1, cores] } else { vec![1] };
    if cores == 1 {
        notes.push(
            "only one CPU: the parallel form is the one-thread form and is not repeated".into(),
        );
    }

    let total = ((impls.len() * Op::ALL.len() + 1) * thread_forms.len() + 3) as u64;
    let pb = progress_bar(total);
    for n in &notes {
        pb.suspend(|| eprintln!("NOTE: {n}"));
    }

    let mut floor = Samples::first(measure::floor_sample(&plan));
    let mut rows = Vec::new();
    for imp in &impls {
        let secret = imp.factory.new(&mut ops::KEY.clone())?;
        for op in Op::ALL {
            for &threads in &thread_forms {
                pb.set_message(format!("{} {} x{threads}", op.name(), imp.name));
                let ns = measure::ns_per_op(threads, &plan, &|iters| {
                    op.run(&imp.factory, &secret, iters)
                })
                .map_err(|source| Error::Row {
                    op: op.name(),
                    imp: imp.name,
                    threads,
                    source,
                })?;
                check::row(op, imp, &secret)?;
                rows.push(Timing::new(op.name(), imp.name, threads, &secret, ns));
                pb.inc(1);
            }
            floor.push(measure::floor_sample(&plan));
        }
        secret.close()?;
    }
    // The real-client row's baseline: the same cipher keyed from a plain array.
    for &threads in &thread_forms {
        pb.set_message(format!(
            "{} {} x{threads}",
            Op::Chacha1k.name(),
            client::PLAIN
        ));
        let ns = measure::ns_per_op(threads, &plan, &|iters| {
            client::from_plain(iters);
            Ok(())
        })
        .map_err(|source| Error::Row {
            op: Op::Chacha1k.name(),
            imp: client::PLAIN,
            threads,
            source,
        })?;
        rows.push(Timing::plain(
            Op::Chacha1k.name(),
            client::PLAIN,
            threads,
            ns,
        ));
        pb.inc(1);
    }

    pb.set_message("capacity: pooled 32-byte secrets without CAP_IPC_LOCK");
    let pooled = capacity::measure(CapacityLayout::Pooled, capacity::MAX_HELD)?;
    pb.inc(1);
    pb.set_message("capacity: one-page 32-byte secrets without CAP_IPC_LOCK");
    let page = capacity::measure(CapacityLayout::Page, capacity::MAX_HELD)?;
    pb.inc(1);
    let sealed_max = args.sealed_max.unwrap_or(if args.quick {
        capacity::QUICK_SEALED
    } else {
        capacity::MAX_HELD
    });
    pb.set_message(format!(
        "capacity: sealed 32-byte secrets without CAP_IPC_LOCK under a {} KiB limit",
        capacity::SEALED_LIMIT / 1024
    ));
    let sealed = capacity::measure(CapacityLayout::Sealed, sealed_max)?;
    pb.inc(1);
    pb.finish_and_clear();

    let header = Header::collect(&plan, cores, floor, started.elapsed());
    let report = Report::new(header, rows, [pooled, page, sealed], notes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// A bar on stderr; indicatif draws nothing when stderr is not a terminal.
fn progress_bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}
