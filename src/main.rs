//! flagtally's entry point: parse the command line, run the command ([`flagtally::app`]),
//! map the outcome to an exit code.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

use flagtally::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match flagtally::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flagtally: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc: the hot path allocates small strings per event; it is measurably faster
/// than the system allocator there. Its `override` feature (Cargo.toml) makes it the
/// C libraries' `malloc` too: librdkafka allocates every produced record and header on
/// the sending thread and frees them where the delivery report is served (for the
/// collector and the sinks, a polling thread), where glibc's arenas contended (23 % of
/// the CPU of a full-output drain, before the pipeline served its own reports;
/// docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
