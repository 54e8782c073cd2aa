//! flagtally's entry point: parse the command line, run the command, map the outcome
//! to an exit code. Everything else lives in the library.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

use flagtally::cli::{Cli, Command};
use flagtally::emit::Emitter;
use flagtally::offline;
use flagtally::window::Engine;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flagtally: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Summarize(args) => {
            let inputs = offline::open_inputs(&args.files)?;
            let mut engine = Engine::new(args.engine_config())?;
            let emitter = Emitter::new(args.emit_config());
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            let mut diag = std::io::stderr().lock();
            offline::summarize(
                inputs,
                &args.decoder(),
                &mut engine,
                &emitter,
                &mut out,
                &mut diag,
            )?;
            Ok(())
        }
    }
}

/// mimalloc: the hot path allocates small strings per event; it is measurably faster
/// than the system allocator there (see README, benchmarks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
