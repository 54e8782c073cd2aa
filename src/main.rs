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
/// than the system allocator there (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
