//! The `securememory` command-line tool: `bench` prints the benchmark table,
//! `doctor` reports what this machine offers and limits.

mod bench;
mod doctor;
mod units;

use clap::{Parser, Subcommand};

/// securememory: benchmarks and a machine check for protected-memory secrets.
#[derive(Parser)]
#[command(name = "securememory", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmark table (each row beside the mprotect floor measured in the same run).
    Bench(bench::BenchArgs),
    /// Report memlock limits, memfd_secret, core-dump settings and which backend Auto picks.
    Doctor(doctor::DoctorArgs),
    /// Internal: the capacity measurement, run in a child process.
    #[command(hide = true)]
    CapacityChild(bench::CapacityArgs),
}

/// Why a command failed (printed on stderr, exit status 1).
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Bench(#[from] bench::Error),
    #[error(transparent)]
    Doctor(#[from] doctor::Error),
    #[error(transparent)]
    CapacityChild(#[from] bench::ChildError),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Error> = match cli.command {
        Command::Bench(args) => bench::run(args).map_err(Error::from),
        Command::Doctor(args) => doctor::run(args).map_err(Error::from),
        Command::CapacityChild(args) => bench::capacity_child(args).map_err(Error::from),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("securememory: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
