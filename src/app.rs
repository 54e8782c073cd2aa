//! The application: each command of the command line, run. `run` starts the daemon
//! (logging, the admin server, the pipeline's pool, the warehouse sinks, SIGHUP
//! reload, the watchdog and the drain deadlines); the others are one-shot commands.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, reload};

use crate::admin::{self, Admin, notify};
use crate::cli::{Cli, Command, GenArgs, QuickstartArgs, RunArgs, TopicsCommand, ValidateArgs};
use crate::config::{Config, LogFormat};
use crate::emit::Emitter;
use crate::offline;
use crate::pipeline::pool::Pool;
use crate::reload::{Outcome, Reloader, SetLogLevel};
use crate::window::Engine;

/// Exit code after a second SIGTERM/SIGINT: stopped at once, without draining.
const EXIT_HARD_STOP: i32 = 2;
/// Exit code when a drain did not finish within `processing.shutdown_deadline`.
const EXIT_DEADLINE: i32 = 3;

/// The log filter: the configured level, else `RUST_LOG`, else `info`.
fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| format!("{level:?}: {e}")),
        None => Ok(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))),
    }
}

/// Installs the global subscriber on stderr; returns the way to change its level.
fn init_logging(level: Option<&str>, format: LogFormat) -> SetLogLevel {
    let initial = filter(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(initial);
    let registry = tracing_subscriber::registry().with(layer);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Human => registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init(),
        LogFormat::Json => registry.with(fmt.json().with_ansi(false)).init(),
    }
    Box::new(move |level| {
        let f = filter(level)?;
        handle.reload(f).map_err(|e| e.to_string())
    })
}

/// Runs one command line: what `main` does, less the exit code mapping.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_daemon(&args).map(|()| ExitCode::SUCCESS),
        Command::Collect(args) => collect(&args).map(|()| ExitCode::SUCCESS),
        Command::Validate(args) => Ok(validate(&args)),
        command => {
            if matches!(command, Command::Quickstart(_)) && std::env::var_os("RUST_LOG").is_none() {
                // Warnings only: info lines would break the live table.
                let _ = init_logging(Some("warn"), LogFormat::Human);
            } else {
                let _ = init_logging(None, LogFormat::Human);
            }
            match command {
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
                        args.count_from,
                        &mut engine,
                        &emitter,
                        &mut out,
                        &mut diag,
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Command::Quickstart(args) => quickstart(&args),
                Command::Gen(args) => generate(&args).map(|()| ExitCode::SUCCESS),
                Command::Topics(command) => topics(&command),
                Command::Run(_) | Command::Collect(_) | Command::Validate(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

fn validate(args: &ValidateArgs) -> ExitCode {
    match Config::load(&args.config) {
        Ok(config) => {
            for w in &config.warnings {
                let _ = writeln!(std::io::stderr(), "warning: {w}");
            }
            let topics: Vec<&str> = crate::emit::OutputKind::ALL
                .iter()
                .filter_map(|k| config.output.topics.topic(*k))
                .collect();
            println!(
                "{}: valid\n  brokers {}, group {}, input {}\n  outputs {}, dead letters {}",
                args.config.display(),
                config.kafka.brokers,
                config.kafka.group_id,
                config.kafka.input_topics.join(", "),
                topics.join(", "),
                config.output.dead_letter_topic.as_deref().unwrap_or("-"),
            );
            if !args.broker {
                return ExitCode::SUCCESS;
            }
            let planned = crate::topics::plan(&config, &Default::default());
            let acls = crate::topics::lacking_acls(&config);
            match crate::topics::missing(&config, &planned) {
                Ok(missing) => {
                    let mut ok = true;
                    let hidden: Vec<&str> = match &acls {
                        Ok(lines) => lines.iter().map(String::as_str).collect(),
                        Err(_) => Vec::new(),
                    };
                    // A topic the principal may not describe looks missing: named
                    // with the ACLs below, not as missing.
                    let missing: Vec<_> = missing
                        .into_iter()
                        .filter(|p| {
                            !hidden
                                .iter()
                                .any(|l| l.starts_with(&format!("topic {}:", p.name)))
                        })
                        .collect();
                    if missing.is_empty() {
                        println!("  broker {}: every topic exists", config.kafka.brokers);
                    } else {
                        ok = false;
                        let _ = writeln!(
                            std::io::stderr(),
                            "{}",
                            crate::topics::missing_line(&missing, &args.config)
                        );
                    }
                    match acls {
                        Ok(lines) if lines.is_empty() => {
                            println!("  ACLs: every operation flagtally needs is allowed");
                        }
                        Ok(lines) => {
                            ok = false;
                            let _ = writeln!(
                                std::io::stderr(),
                                "missing ACLs (docs/operations.md, \"ACLs\"): {}",
                                lines.join("; ")
                            );
                        }
                        Err(e) => {
                            let _ = writeln!(
                                std::io::stderr(),
                                "ACLs: the brokers did not say what this principal may do: {e}"
                            );
                        }
                    }
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "kafka.brokers {}: cannot read the cluster's topics: {e}",
                        config.kafka.brokers
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::FAILURE
        }
    }
}

/// `flagtally topics check|create`.
fn topics(command: &TopicsCommand) -> anyhow::Result<ExitCode> {
    use crate::topics::{Layout, Outcome, create, describe, missing, missing_line, plan};
    match command {
        TopicsCommand::Check(args) => {
            let config = Config::load(&args.config)?;
            let planned = plan(&config, &Layout::default());
            let absent = missing(&config, &planned)
                .with_context(|| format!("reading the topics of {}", config.kafka.brokers))?;
            for p in &planned {
                let state = if absent.contains(p) { "MISSING" } else { "ok" };
                println!("{state:8}{} ({})", p.name, p.role);
            }
            if absent.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{}", missing_line(&absent, &args.config));
                Ok(ExitCode::FAILURE)
            }
        }
        TopicsCommand::Create(args) => {
            let config = Config::load(&args.config)?;
            anyhow::ensure!(args.partitions >= 1, "--partitions: at least 1");
            let output_retention = match args.retention.as_str() {
                "broker" => None,
                r => Some(
                    humantime::parse_duration(r).with_context(|| format!("--retention {r:?}"))?,
                ),
            };
            let layout = Layout {
                partitions: args.partitions,
                replication: args.replication_factor.unwrap_or(-1),
                output_retention,
            };
            let planned = plan(&config, &layout);
            let done = create(&config, &planned, args.dry_run)
                .with_context(|| format!("creating topics on {}", config.kafka.brokers))?;
            for (p, outcome) in &done {
                let verb = match outcome {
                    Outcome::Exists => "exists",
                    Outcome::Created => "created",
                    Outcome::WouldCreate => "would create",
                };
                println!("{verb:13}{}", describe(p));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Avro outputs with a Schema Registry: each output kind's schema id, registered or
/// looked up. A registry that does not answer is named in `/readyz` and asked again
/// every few seconds until it does (or the daemon is stopped); one that refuses (an
/// incompatible schema, wrong credentials) stops the start with its answer.
fn output_schema_ids(
    config: &Config,
    health: &crate::admin::Health,
    stop: &AtomicBool,
) -> anyhow::Result<Option<crate::emit::avro::SchemaIds>> {
    use crate::registry::{Client, RegistryError, outputs};
    let Some(registry) = &config.output.schema_registry else {
        return Ok(None);
    };
    if config.output.format != crate::emit::Format::Avro {
        return Ok(None);
    }
    let client = Client::new(registry).map_err(anyhow::Error::msg)?;
    loop {
        match outputs::output_ids(&client, registry, &config.output.topics) {
            Ok(ids) => {
                health.set_registry_problem(None);
                tracing::info!(
                    registry = client.shown(),
                    "output schemas registered: {ids:?}"
                );
                return Ok(Some(ids));
            }
            Err(RegistryError::Unavailable(e)) => {
                if health.set_registry_problem(Some(e.clone())) {
                    tracing::error!("schema registry: {e}; retrying every 2s");
                }
            }
            Err(e) => anyhow::bail!("output.schema_registry: {e}"),
        }
        for _ in 0..40 {
            if stop.load(Ordering::Relaxed) {
                anyhow::bail!(
                    "stopped while waiting for the schema registry {}",
                    client.shown()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `flagtally collect`: the collector and the admin server, until SIGTERM/SIGINT.
fn collect(args: &RunArgs) -> anyhow::Result<()> {
    let (config, _) = Config::load_with_env(&args.config, std::env::vars())?;
    let _set_log_level = init_logging(config.log.level.as_deref(), config.log.format);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if config.collector.listen.is_none() {
        anyhow::bail!("collector.listen: set where the collector listens (it is off)");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_HARD_STOP, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let admin = Arc::new(Admin::default());
    if let Some(addr) = config.admin.listen {
        let bound = admin::serve(addr, Arc::clone(&admin))
            .with_context(|| format!("admin.listen: cannot serve on {addr}"))?;
        tracing::info!("admin: http://{bound}/metrics, /healthz, /readyz");
    }
    admin.health.set_workers(0);
    let collector = crate::collector::Collector::start(
        &config.collector,
        &config.kafka,
        &config.kafka.input_topics,
        Arc::clone(&admin),
    )?;
    notify::ready("collecting");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    notify::stopping();
    collector.stop();
    tracing::info!("collector stopped");
    Ok(())
}

fn run_daemon(args: &RunArgs) -> anyhow::Result<()> {
    let (config, tree) = Config::load_with_env(&args.config, std::env::vars())?;
    let set_log_level = init_logging(config.log.level.as_deref(), config.log.format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %args.config.display(), "starting");
    for w in &config.warnings {
        tracing::warn!("{w}");
    }

    // Signals first: a reload or stop right after start must not kill the process.
    let stop = Arc::new(AtomicBool::new(false));
    let hard_stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while draining exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_HARD_STOP, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))?;
    // A file-size limit (systemd's LimitFSIZE, ulimit -f) must fail the sink's write
    // (EFBIG, retried like a full disk), not kill the process.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(AtomicBool::new(false)),
    )?;

    let admin = Arc::new(Admin::default());
    admin.health.set_workers(config.processing.workers());
    admin.health.beat_all();
    if let Some(addr) = config.admin.listen {
        let bound = admin::serve(addr, Arc::clone(&admin))
            .with_context(|| format!("admin.listen: cannot serve on {addr}"))?;
        tracing::info!("admin: http://{bound}/metrics, /healthz, /readyz");
    }
    watch_missing_topics(&config, &args.config, Arc::clone(&admin));
    if let Some(interval) = notify::watchdog_interval() {
        // Fed while the pipeline shows progress; a hung pipeline stops feeding it and
        // systemd restarts the service.
        let admin = Arc::clone(&admin);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(interval);
                if admin.health.since_beat() < interval * 2 {
                    notify::watchdog();
                } else {
                    tracing::error!(
                        since = ?admin.health.since_beat(),
                        "the pipeline shows no progress; not feeding the watchdog"
                    );
                }
            }
        });
    }
    // The brokers first: a refusal the configuration explains is named in /readyz
    // while the daemon waits for it to be fixed (or stopped).
    if let Err(e) = crate::kafka::connect::first_connection(&config.kafka, &admin.health, &stop) {
        admin.health.set_failed(&e);
        anyhow::bail!("{e}");
    }
    let deadline = config.processing.shutdown_deadline;
    // Sinks stop after the pipeline's drain, so they deliver what it wrote last.
    let sinks = crate::sink::worker::Sinks::start(config.sink_plan(), Arc::clone(&admin))?;
    let schema_ids = match output_schema_ids(&config, &admin.health, &stop) {
        Ok(ids) => ids,
        Err(e) => {
            admin.health.set_failed(&format!("{e:#}"));
            return Err(e);
        }
    };
    let mut workers = (0..config.processing.workers())
        .map(|w| config.pipeline_plan(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for w in &mut workers {
        w.emit.schema_ids = schema_ids;
    }
    let collector = match config.collector.listen {
        Some(_) => Some(crate::collector::Collector::start(
            &config.collector,
            &config.kafka,
            &config.kafka.input_topics,
            Arc::clone(&admin),
        )?),
        None => None,
    };
    let pool = Pool::start(workers, &hard_stop, &admin)?;
    // What runs: the file as loaded, with the live keys of later reloads.
    let mut running = config.clone();
    notify::ready("processing");
    {
        // On the first signal: tell systemd and the health check; the drain must then
        // finish within the deadline.
        let stop = Arc::clone(&stop);
        let hard_stop = Arc::clone(&hard_stop);
        let admin = Arc::clone(&admin);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            admin.health.set_draining();
            notify::stopping();
            std::thread::sleep(deadline);
            hard_stop.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(1));
            tracing::error!("drain exceeded the shutdown deadline of {deadline:?}");
            std::process::exit(EXIT_DEADLINE);
        });
    }
    let mut reloader = Reloader::new(args.config.clone(), tree, set_log_level);
    let mut last_status = Instant::now();
    let stats = pool.run(&stop, &mut |p| {
        if reload.swap(false, Ordering::Relaxed) {
            notify::reloading();
            let (outcome, apply) = reloader.reload(std::env::vars());
            match &outcome {
                Outcome::Rejected(e) => {
                    tracing::error!("reload rejected; the running configuration stays: {e}");
                }
                Outcome::Unchanged => tracing::info!("reload: the file says what is running"),
                Outcome::Changed { live, restart } => {
                    if let Some(next) = apply {
                        p.apply_live(&running.live_gate(&next));
                        running.full_events = next.full_events.clone();
                        if live.iter().any(|k| k == "sinks" || k.starts_with("sinks.")) {
                            // The sinks restart with the new entries, on their own
                            // thread (the pipeline does not wait); each resumes from
                            // its own durable position.
                            running.sinks = next.sinks.clone();
                            sinks.replace(running.sink_plan());
                        }
                    }
                    if !live.is_empty() {
                        tracing::info!(changed = ?live, "reload applied");
                    }
                    if !restart.is_empty() {
                        tracing::warn!(changed = ?restart, "reload: these changes need a restart; the running values stay until then");
                    }
                }
            }
            admin.metrics.reload(outcome.label());
            notify::ready("processing");
        }
        if last_status.elapsed() >= Duration::from_secs(5) {
            last_status = Instant::now();
            let s = p.stats();
            notify::status(&format!(
                "processing: {} records, {} dead letters, {} commits",
                s.records, s.dead_letters, s.commits
            ));
        }
    })?;
    tracing::info!(?stats, "stopped");
    if let Some(c) = collector {
        c.stop();
    }
    sinks.stop();
    Ok(())
}

fn quickstart(args: &QuickstartArgs) -> anyhow::Result<ExitCode> {
    use crate::quickstart::{Options, run, stdout_is_terminal};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_HARD_STOP, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let opts = Options {
        count: args.count,
        rate: args.rate,
        flags: args.flags,
        malformed_one_in: args.malformed_one_in,
        out_dir: args.out.clone(),
        live: !args.plain && stdout_is_terminal(),
        admin: args.admin,
        seed: args.seed,
    };
    println!(
        "flagtally quickstart: {} records (LaunchDarkly, go-feature-flag, FeatBit; 1 in {} malformed) \
         through an in-process broker; 10 s windows. Ctrl-C stops.",
        opts.count, opts.malformed_one_in
    );
    let report = run(&opts, &stop)?;
    print!("{}", report.render(&opts.out_dir));
    Ok(if report.exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn generate(args: &GenArgs) -> anyhow::Result<()> {
    use crate::generate::{GenConfig, Generator};
    use crate::kafka::producer::PolledProducer;
    use crate::quickstart::{Pace, counts_table};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _};

    let mut g = Generator::new(GenConfig {
        dialect: args.dialect,
        flags: args.flags,
        variations: args.variations,
        contexts: args.contexts,
        start_ms: args
            .start_ms
            .unwrap_or_else(|| recent_start(args.count, args.step_ms)),
        step_ms: args.step_ms,
        skew_ms: args.skew_ms,
        malformed_one_in: args.malformed_one_in,
        tracked_one_in: args.tracked_one_in,
        seed: args.seed,
    });
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        // Records without keys spread evenly over the partitions (sticky partitioning
        // fills one partition per linger, and skews a short run).
        .set("sticky.partitioning.linger.ms", "0");
    for (k, v) in &args.properties {
        cc.set(k, v);
    }
    let producer: PolledProducer<DefaultProducerContext> = cc.create()?;
    ensure_topic(&cc, &args.topic, args.partitions)?;
    let bar = indicatif::ProgressBar::new(args.count);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} records  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let pace = Pace::new(args.rate);
    for i in 0..args.count {
        pace.wait(i);
        let value = g.next_record();
        let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&args.topic).payload(&value);
        crate::kafka::producer::send_waiting(&producer, rec, &|| false)?;
        if i % 1024 == 0 {
            bar.set_position(i);
        }
    }
    producer.flush(Duration::from_secs(60))?;
    bar.finish();
    let t = g.tally();
    if args.json {
        println!("{}", t.to_json());
    } else {
        print!("{}", counts_table(&t.by_flag_variation(), None));
        println!(
            "records {}, malformed {}, evaluations {}, tracked (full-fidelity) {}",
            t.records,
            t.malformed,
            t.evaluations(),
            t.tracked
        );
    }
    Ok(())
}

/// Names the topics the configuration needs and the broker lacks, in one ERROR line
/// and in `/readyz`, checking again every 10 s until none is missing (the checkpoint
/// topic is left out: flagtally creates it).
fn watch_missing_topics(config: &Config, path: &std::path::Path, admin: Arc<Admin>) {
    let config = config.clone();
    let path = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("topic-check".into())
        .spawn(move || {
            let mut planned = crate::topics::plan(&config, &Default::default());
            planned.retain(|p| p.name != config.processing.checkpoint_topic);
            let mut logged = String::new();
            loop {
                match crate::topics::missing(&config, &planned) {
                    Ok(missing) if missing.is_empty() => {
                        admin.health.set_missing_topics(None);
                        return;
                    }
                    Ok(missing) => {
                        let line = crate::topics::missing_line(&missing, &path);
                        if line != logged {
                            tracing::error!("{line}");
                            logged.clone_from(&line);
                        }
                        admin.health.set_missing_topics(Some(line));
                    }
                    Err(e) => tracing::debug!("checking topics: {e}"),
                }
                std::thread::sleep(Duration::from_secs(10));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("checking topics: {e}");
    }
}

/// The event time of `gen`'s first record when none is given: `count` steps before
/// now, so the last record is stamped about now. flagtally stamps its outputs with
/// event time, and output topics keep records by timestamp (`topics create` gives
/// them 7 days): events from a fixed date long past would have their outputs deleted
/// by the broker's next retention check, minutes after they were written.
fn recent_start(count: u64, step_ms: i64) -> i64 {
    let now = crate::pipeline::now_ms();
    let span = i64::try_from(count)
        .unwrap_or(i64::MAX)
        .saturating_mul(step_ms.max(0));
    now.saturating_sub(span)
}

/// Makes sure `gen` has a topic to write to: creates it with `partitions` when asked,
/// else fails at once (a producer would retry a missing topic for a long time) naming
/// the option that creates it.
fn ensure_topic(
    cc: &rdkafka::ClientConfig,
    topic: &str,
    partitions: Option<i32>,
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = cc.create()?;
    let md = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(15))
        .context("reading the cluster's topics")?;
    if md
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none())
    {
        return Ok(());
    }
    let Some(n) = partitions else {
        anyhow::bail!(
            "topic {topic:?} does not exist; add --partitions N to create it, or create it with `flagtally topics create --config <your config>`"
        );
    };
    let new = NewTopic::new(topic, n, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    for r in crate::kafka::producer::block_on(admin.create_topics([&new], &options))? {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating topic {t}: {e}"),
        }
    }
    eprintln!("created topic {topic} with {n} partitions");
    Ok(())
}
