//! The command line: raw arguments → validated settings for each command.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::decode::counting::CountFrom;
use crate::decode::{Decoder, Dialect, Limits};
use crate::emit::{EmitConfig, Envelope, FeatureKey, Format};
pub use crate::units::duration;
use crate::units::{millis, signed_duration};
use crate::window::{
    EngineConfig, FullEvents, GateConfig, IndexConfig, LatePolicy, Override, WindowConfig,
};

#[derive(Debug, Parser)]
#[command(
    name = "flagtally",
    version,
    about = "Turns raw feature-flag evaluation events into LaunchDarkly-shaped summaries, feature events and warehouse rows",
    long_about = "Turns raw feature-flag evaluation events (LaunchDarkly, go-feature-flag, FeatBit or \
flagtally's own schema) read from Kafka into LaunchDarkly-shaped summary events, \
full-fidelity feature events and index, identify and custom events on output topics.\n\n\
New here? `flagtally quickstart` runs the whole pipeline on this machine with nothing \
installed. To run the daemon: `flagtally validate --config FILE`, then \
`flagtally run --config FILE` (config/flagtally.toml documents every key)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summarise raw events from files (one record per line) without a broker.
    ///
    /// Writes every output event as NDJSON on stdout (summaries, feature, index,
    /// identify, custom, pass-through), in LaunchDarkly's shapes; dead letters, late
    /// events and a one-line count report go to stderr. All windows close at the end.
    Summarize(SummarizeArgs),
    /// Run the processor (the daemon): consume the input topics as a consumer group,
    /// write the output topics.
    ///
    /// SIGTERM/SIGINT drain (deliver, commit) and exit 0; a second signal exits at once
    /// with code 2; a drain longer than `processing.shutdown_deadline` exits 3. SIGHUP
    /// re-reads the file. Speaks systemd's notify protocol under `Type=notify`.
    Run(RunArgs),
    /// Run only the collector (`[collector]`): the HTTP intake that writes the SDKs'
    /// event posts to the input topic, with the admin server. `run` also starts it
    /// when `collector.listen` is set. SIGTERM/SIGINT answer the requests in flight,
    /// flush and exit 0.
    Collect(RunArgs),
    /// Check a configuration file (and FLAGTALLY__ environment overrides) without
    /// running: exit 0 when it is valid, else 1 with every problem listed.
    Validate(ValidateArgs),
    /// See flagtally work in a minute, with nothing installed: an in-process broker,
    /// generated evaluations in three dialects (some malformed), the full pipeline, a
    /// live table of counts, output files in a local folder.
    ///
    /// Stops when the summaries account for every generated evaluation (or on Ctrl-C)
    /// and checks the counts against the generator's exact tally: exit 0 when they
    /// match.
    Quickstart(QuickstartArgs),
    /// Load generator: write realistic raw evaluation records to a topic on any broker,
    /// then print the exact tally a correct processor must count.
    Gen(GenArgs),
    /// The topics a configuration reads and writes: `check` lists the missing ones
    /// (exit 1 if any), `create` makes them (idempotent).
    #[command(subcommand)]
    Topics(TopicsCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum TopicsCommand {
    /// List every topic the configuration names, and which the broker lacks.
    Check(TopicsCheckArgs),
    /// Create the missing ones: input and output topics with `--partitions`, the
    /// checkpoint topic compacted with one partition, output topics with `--retention`.
    Create(TopicsCreateArgs),
}

#[derive(Debug, Args)]
pub struct TopicsCheckArgs {
    /// The configuration file.
    #[arg(long, short, env = "FLAGTALLY_CONFIG")]
    pub config: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct TopicsCreateArgs {
    /// The configuration file.
    #[arg(long, short, env = "FLAGTALLY_CONFIG")]
    pub config: std::path::PathBuf,
    /// Partitions of input and output topics (more partitions: more instances and
    /// workers can share the work).
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor (default: the broker's `default.replication.factor`).
    #[arg(long)]
    pub replication_factor: Option<i32>,
    /// `retention.ms` of output, dead-letter and late topics, e.g. `7d`; `broker` keeps
    /// the broker's default. Their records carry event time as their timestamp.
    #[arg(long, default_value = "7d")]
    pub retention: String,
    /// Print what would be created, create nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (TOML).
    #[arg(long, short, env = "FLAGTALLY_CONFIG")]
    pub config: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The configuration file (TOML, or YAML when it ends in .yaml/.yml).
    #[arg(long, short, env = "FLAGTALLY_CONFIG")]
    pub config: std::path::PathBuf,
    /// Also connect to the brokers and report each missing topic (exit 1 if any).
    #[arg(long)]
    pub broker: bool,
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// How many records to generate (at most 40000: the in-process broker is small).
    #[arg(long, default_value_t = 20_000)]
    pub count: u64,
    /// Records per second written by the generator (0: as fast as possible).
    #[arg(long, default_value_t = 4000)]
    pub rate: u64,
    /// How many distinct flags.
    #[arg(long, default_value_t = 8)]
    pub flags: u32,
    /// One record in N is malformed, to show dead letters (0: none).
    #[arg(long, default_value_t = 200)]
    pub malformed_one_in: u64,
    /// Where the output files go (replaced on each run).
    #[arg(long, default_value = "flagtally-quickstart")]
    pub out: std::path::PathBuf,
    /// Print progress lines instead of redrawing the table (the default when stdout is
    /// not a terminal).
    #[arg(long)]
    pub plain: bool,
    /// Also serve /metrics, /healthz and /readyz at this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub admin: Option<std::net::SocketAddr>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Broker list (`bootstrap.servers`).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long)]
    pub topic: String,
    /// Create the topic with this many partitions if it is missing (without it, a
    /// missing topic is an error naming the command that creates it).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// How many records to write.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Records per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// The dialect; `mixed` rotates LaunchDarkly, go-feature-flag and FeatBit.
    #[arg(long, value_enum, default_value_t = crate::generate::GenDialect::Launchdarkly)]
    pub dialect: crate::generate::GenDialect,
    /// How many distinct flags.
    #[arg(long, default_value_t = 20)]
    pub flags: u32,
    /// Variations per flag.
    #[arg(long, default_value_t = 3)]
    pub variations: u32,
    /// How many distinct contexts (users).
    #[arg(long, default_value_t = 1000)]
    pub contexts: u32,
    /// Records arrive up to this far out of order in event time, in ms.
    #[arg(long, default_value_t = 0)]
    pub skew_ms: i64,
    /// Event-time step between records, in ms.
    #[arg(long, default_value_t = 1)]
    pub step_ms: i64,
    /// Event time of the first record, in ms since the epoch (default: `count` ×
    /// `step_ms` before now, so the last record is stamped about now).
    #[arg(long)]
    pub start_ms: Option<i64>,
    /// One record in N is malformed (0: none).
    #[arg(long, default_value_t = 0)]
    pub malformed_one_in: u64,
    /// One evaluation in N is tracked (full-fidelity) (0: none).
    #[arg(long, default_value_t = 10)]
    pub tracked_one_in: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the tally as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Extra librdkafka producer properties, `KEY=VALUE` (repeatable), e.g.
    /// `security.protocol=SASL_SSL`.
    #[arg(long = "property", short = 'X', value_name = "KEY=VALUE", value_parser = key_value)]
    pub properties: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct SummarizeArgs {
    /// Input dialect; `auto` detects it per record.
    #[arg(long, value_enum, default_value_t = Dialect::Auto)]
    pub dialect: Dialect,
    /// Window size (e.g. 10s, 1m, 1h, 1d).
    #[arg(long, default_value = "1m", value_parser = duration)]
    pub window: Duration,
    /// Window alignment offset from the epoch, e.g. -2h for days in UTC+2.
    #[arg(long, default_value = "0s", value_parser = signed_duration, allow_hyphen_values = true)]
    pub window_offset: i64,
    /// How far out of order events may arrive before their window closes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lateness: Duration,
    /// What to do with events whose window was already emitted.
    #[arg(long, value_enum, default_value_t = LatePolicy::Correction)]
    pub late_policy: LatePolicy,
    /// Where evaluations are counted from (`input.count_from`): `payload` counts a
    /// record's summaries and, in a record without one, its evaluations; `summaries`
    /// counts summaries only (one event per line from a summarizing source, such as
    /// Data Export); `events` counts evaluations only.
    #[arg(long, value_enum, default_value_t = CountFrom::Payload)]
    pub count_from: CountFrom,
    /// Do not emit index events.
    #[arg(long)]
    pub no_index: bool,
    /// A per-flag override of full-fidelity events: `FLAGS=always|never|producer[:N]`,
    /// FLAGS a flag key or a glob (`checkout-*`), N to keep 1 in N. Repeatable; the first
    /// match wins.
    #[arg(long = "full-events", value_name = "FLAGS=MODE[:N]", value_parser = parse_override)]
    pub overrides: Vec<Override>,
    /// Wrap each event in LaunchDarkly's Data Export envelope.
    #[arg(long)]
    pub data_export: bool,
    /// Data Export project id, when the input carries none.
    #[arg(long, requires = "data_export")]
    pub project: Option<String>,
    /// Data Export environment id, when the input carries none.
    #[arg(long, requires = "data_export")]
    pub environment: Option<String>,
    /// Input files; `-` or none reads stdin. One record per line; `native-avro` records
    /// base64-encoded.
    pub files: Vec<String>,
}

impl SummarizeArgs {
    pub fn decoder(&self) -> Decoder {
        Decoder::new(self.dialect, Limits::default())
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            window: WindowConfig {
                size_ms: millis(self.window),
                offset_ms: self.window_offset,
                allowed_lateness_ms: millis(self.lateness),
                idle_timeout_ms: None,
                late_policy: self.late_policy,
                ..WindowConfig::default()
            },
            index: IndexConfig {
                enabled: !self.no_index,
                ..IndexConfig::default()
            },
            gate: GateConfig {
                overrides: self.overrides.clone(),
                ..GateConfig::default()
            },
        }
    }

    pub fn emit_config(&self) -> EmitConfig {
        EmitConfig {
            format: Format::Json,
            envelope: if self.data_export {
                Envelope::DataExport {
                    project: self.project.clone(),
                    environment: self.environment.clone(),
                }
            } else {
                Envelope::None
            },
            feature_key: FeatureKey::Context,
            schema_ids: None,
        }
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

/// `FLAGS=always|never|producer[:N]`.
pub(crate) fn parse_override(s: &str) -> Result<Override, String> {
    let (flags, mode) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected FLAGS=always|never|producer[:N]"))?;
    let (mode, ratio) = match mode.split_once(':') {
        Some((m, n)) => (
            m,
            Some(
                n.parse::<u64>()
                    .map_err(|_| format!("{s:?}: {n:?} is not a whole number"))?,
            ),
        ),
        None => (mode, None),
    };
    let full_events = match mode {
        "always" => FullEvents::Always,
        "never" => FullEvents::Never,
        "producer" => FullEvents::Producer,
        other => return Err(format!("{s:?}: {other:?} is not always, never or producer")),
    };
    if flags.is_empty() {
        return Err(format!("{s:?}: no flag key or glob before '='"));
    }
    Ok(Override {
        flags: flags.to_owned(),
        full_events,
        sampling_ratio: ratio,
    })
}
