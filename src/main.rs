//! flagtally's entry point: parse the command line, run the command, map the outcome
//! to an exit code. Everything else lives in the library.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;

use flagtally::cli::{Cli, Command, GenArgs, RunArgs};
use flagtally::config::Config;
use flagtally::emit::Emitter;
use flagtally::offline;
use flagtally::pipeline::Pipeline;
use flagtally::window::Engine;

/// Exit code after a second SIGTERM/SIGINT: stopped at once, without draining.
const EXIT_HARD_STOP: i32 = 2;
/// Exit code when a drain did not finish within `processing.shutdown_deadline`.
const EXIT_DEADLINE: i32 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
        Command::Run(args) => run_daemon(&args),
        Command::Gen(args) => generate(&args),
    }
}

fn run_daemon(args: &RunArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let deadline = config.processing.shutdown_deadline;
    let stop = Arc::new(AtomicBool::new(false));
    let hard_stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while draining exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_HARD_STOP, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let mut pipeline = Pipeline::new(config, Arc::clone(&hard_stop))?;
    {
        // The drain must finish within the deadline, counted from the first signal.
        let stop = Arc::clone(&stop);
        let hard_stop = Arc::clone(&hard_stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(deadline);
            hard_stop.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(1));
            tracing::error!("drain exceeded the shutdown deadline of {deadline:?}");
            std::process::exit(EXIT_DEADLINE);
        });
    }
    pipeline.run(&stop)?;
    tracing::info!(stats = ?pipeline.stats(), "stopped");
    Ok(())
}

fn generate(args: &GenArgs) -> anyhow::Result<()> {
    use flagtally::generate::{GenConfig, Generator};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};

    let defaults = GenConfig::default();
    let mut g = Generator::new(GenConfig {
        dialect: args.dialect,
        flags: args.flags,
        contexts: args.contexts,
        start_ms: args.start_ms.unwrap_or(defaults.start_ms),
        step_ms: args.step_ms,
        malformed_one_in: args.malformed_one_in,
        tracked_one_in: args.tracked_one_in,
        seed: args.seed,
        ..defaults
    });
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()?;
    for _ in 0..args.count {
        let value = g.next_record();
        let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&args.topic).payload(&value);
        flagtally::sink::kafka::send_waiting(&producer, rec, &|| false)?;
    }
    producer.flush(Duration::from_secs(60))?;
    if args.tally {
        let t = g.tally();
        let counters: Vec<_> = t
            .counters
            .iter()
            .map(|((flag, variation, version), n)| {
                serde_json::json!({"flag": flag, "variation": variation, "version": version, "count": n})
            })
            .collect();
        let report = serde_json::json!({
            "records": t.records,
            "malformed": t.malformed,
            "tracked": t.tracked,
            "evaluations": t.evaluations(),
            "counters": counters,
        });
        println!("{report}");
    }
    Ok(())
}

/// mimalloc: the hot path allocates small strings per event; it is measurably faster
/// than the system allocator there (see README, benchmarks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
