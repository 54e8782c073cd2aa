//! The daemon's configuration: one TOML (or YAML) file, overridden by environment
//! variables `FLAGTALLY__SECTION__KEY`, → a checked [`Config`].
//!
//! Loading has three steps, each reporting every problem it finds with its path:
//! 1. the file is parsed into a tree (syntax errors name line and column) and the
//!    environment overrides are applied to it ([`apply_env`]);
//! 2. the tree is deserialised into [`Config`]: unknown keys, wrong types and bad
//!    durations (`"30s"`) or sizes (`"64MiB"`) are errors; after each error the bad key
//!    is set aside and deserialisation retried, so one run lists them all;
//! 3. [`Config::check`] validates what single keys cannot (topics present, policies that
//!    need a topic, override globs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

mod env;
mod plan;
mod read;

pub use env::{ENV_PREFIX, apply_env, changed_paths};

use crate::cli::parse_override;
use crate::decode::counting::CountFrom;
use crate::decode::{Decoder, Dialect, Limits};
use crate::emit::{EmitConfig, Envelope, FeatureKey, Format, OutputKind, Topics};
pub use crate::kafka::KafkaConfig;
pub use crate::pipeline::FuturePolicy;
use crate::registry::RegistryConfig;
use crate::sink::SinkConfig;
pub use crate::source::UnreadablePolicy;
use crate::units::de::{
    any_duration, listen, optional_duration, positive_duration, signed_millis, size,
};
use crate::units::millis;
use crate::window::{EngineConfig, GateConfig, IndexConfig, LatePolicy, Override, WindowConfig};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub input: InputConfig,
    #[serde(default)]
    pub window: WindowSection,
    #[serde(default)]
    pub index: IndexSection,
    #[serde(default)]
    pub full_events: FullEventsSection,
    #[serde(default)]
    pub output: OutputSection,
    #[serde(default)]
    pub processing: ProcessingSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub admin: AdminSection,
    /// The HTTP intake for the SDKs' event posts (off unless `listen` is set).
    #[serde(default)]
    pub collector: crate::collector::CollectorConfig,
    /// Warehouse sinks, each its own consumer group over output topics (read apart
    /// from the rest, by `read::sinks`).
    #[serde(default, skip_deserializing)]
    pub sinks: Vec<SinkConfig>,
    /// What loading found worth a warning (a secret file others can read), for the
    /// log once logging is set up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    pub dialect: Dialect,
    /// Bytes, or a size string (`"4MiB"`).
    #[serde(deserialize_with = "size")]
    pub max_record_bytes: usize,
    #[serde(deserialize_with = "size")]
    pub max_key_bytes: usize,
    /// Deepest JSON nesting accepted.
    pub max_depth: usize,
    /// Longest JSON string value accepted (bytes, or a size string).
    #[serde(deserialize_with = "size")]
    pub max_string_bytes: usize,
    /// Most events in one record.
    pub max_events_per_record: usize,
    /// How far an event's time may be past its Kafka record's timestamp (a client
    /// with a wrong clock); beyond it, `future_policy` applies.
    #[serde(deserialize_with = "any_duration")]
    pub max_future_skew: Duration,
    pub future_policy: FuturePolicy,
    /// What happens at a record batch the Kafka client cannot read (corrupt, or in a
    /// format it lacks): `skip` (default) | `stop`.
    pub unreadable_batches: UnreadablePolicy,
    /// Where evaluations are counted from, for every input topic without a setting of
    /// its own in `input.topics` (`decode::counting`): `payload` (default) | `summaries` |
    /// `events`.
    pub count_from: CountFrom,
    /// Settings of one input topic, by name: `[input.topics."ld-data-export"]`.
    pub topics: BTreeMap<String, InputTopic>,
}

/// The settings of one input topic.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputTopic {
    /// Overrides `input.count_from` for this topic.
    pub count_from: Option<CountFrom>,
}

impl InputConfig {
    /// Where `topic`'s evaluations are counted from.
    pub fn count_from(&self, topic: &str) -> CountFrom {
        self.topics
            .get(topic)
            .and_then(|t| t.count_from)
            .unwrap_or(self.count_from)
    }
}

impl Default for InputConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            dialect: Dialect::Auto,
            max_record_bytes: limits.max_record_bytes,
            max_key_bytes: limits.max_key_bytes,
            max_depth: limits.max_depth,
            max_string_bytes: limits.max_string_bytes,
            max_events_per_record: limits.max_events,
            max_future_skew: Duration::from_secs(3600),
            future_policy: FuturePolicy::Clamp,
            unreadable_batches: UnreadablePolicy::Skip,
            count_from: CountFrom::Payload,
            topics: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowSection {
    #[serde(deserialize_with = "positive_duration")]
    pub size: Duration,
    /// Alignment offset from the epoch, e.g. `-2h` for day windows in UTC+2.
    #[serde(deserialize_with = "signed_millis")]
    pub offset: i64,
    #[serde(deserialize_with = "any_duration")]
    pub lateness: Duration,
    /// `"off"` disables idle closing.
    #[serde(deserialize_with = "optional_duration")]
    pub idle_timeout: Option<Duration>,
    pub late_policy: LatePolicy,
    pub max_open_windows: usize,
    pub max_late_corrections: usize,
    pub max_keys: usize,
}

impl Default for WindowSection {
    fn default() -> Self {
        let w = WindowConfig::default();
        Self {
            size: Duration::from_millis(w.size_ms.unsigned_abs()),
            offset: w.offset_ms,
            lateness: Duration::from_millis(w.allowed_lateness_ms.unsigned_abs()),
            idle_timeout: w
                .idle_timeout_ms
                .map(|t| Duration::from_millis(t.unsigned_abs())),
            late_policy: w.late_policy,
            max_open_windows: w.max_open_windows,
            max_late_corrections: w.max_late_corrections,
            max_keys: w.max_keys,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSection {
    pub enabled: bool,
    pub capacity: NonZeroUsize,
    #[serde(deserialize_with = "positive_duration")]
    pub flush_interval: Duration,
}

impl Default for IndexSection {
    fn default() -> Self {
        let i = IndexConfig::default();
        Self {
            enabled: i.enabled,
            capacity: i.capacity,
            flush_interval: Duration::from_millis(i.flush_interval_ms.unsigned_abs()),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FullEventsSection {
    /// `FLAGS=always|never|producer[:N]`, first match wins.
    #[serde(deserialize_with = "overrides")]
    pub overrides: Vec<Override>,
    pub debug_events: bool,
}

impl Default for FullEventsSection {
    fn default() -> Self {
        Self {
            overrides: Vec::new(),
            debug_events: true,
        }
    }
}

/// Output topics per kind; a kind without a topic is not written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    pub format: Format,
    pub feature_key: FeatureKey,
    pub envelope: Envelope,
    pub topics: Topics,
    /// Undecodable input records, with reason headers.
    pub dead_letter_topic: Option<String>,
    /// Largest dead letter (key, value and headers): what the dead-letter topic accepts
    /// (Kafka's default `max.message.bytes` is 1 048 588). Longer payloads are cut,
    /// with a `flagtally-truncated` header giving the original length.
    #[serde(deserialize_with = "size")]
    pub max_dead_letter_bytes: usize,
    /// Whether the producer asks the broker for each output topic's
    /// `max.message.bytes` at startup. Not a file key: off only for the quickstart's
    /// in-process mock cluster, which does not answer DescribeConfigs.
    #[serde(skip, default = "yes")]
    pub describe_topics: bool,
    /// A Schema Registry: Avro outputs in the Confluent wire format, and the writer
    /// schemas of Confluent-framed `native-avro` input.
    pub schema_registry: Option<RegistryConfig>,
}

impl Default for OutputSection {
    fn default() -> Self {
        Self {
            format: Format::default(),
            feature_key: FeatureKey::default(),
            envelope: Envelope::default(),
            topics: Topics::default(),
            dead_letter_topic: None,
            max_dead_letter_bytes: 1_000_000,
            describe_topics: true,
            schema_registry: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingSection {
    /// Outputs and offsets in one Kafka transaction per commit (brokers with
    /// transactions only).
    pub exactly_once: bool,
    /// `transactional.id` in exactly-once mode: stable across restarts of one
    /// instance, distinct between instances. A template: `{group}`, `{instance_id}`,
    /// `{hostname}` (the kernel's: a StatefulSet pod's stable name), `{machine_id}`
    /// (`/etc/machine-id`: a host under systemd), `{env:NAME}` (a variable, e.g. the
    /// pod name from the downward API). Default, when `kafka.instance_id` is set:
    /// `flagtally-{group}-{instance_id}`; exactly-once mode without either is refused.
    pub transactional_id: Option<String>,
    /// Where partition checkpoints are kept (created, compacted, if missing). Several
    /// groups may share it: keys start with the group id.
    pub checkpoint_topic: String,
    /// How often outputs are flushed and offsets committed.
    #[serde(deserialize_with = "positive_duration")]
    pub commit_interval: Duration,
    /// How long a SIGTERM/SIGINT drain may take before the process gives up.
    #[serde(deserialize_with = "positive_duration")]
    pub shutdown_deadline: Duration,
    /// Pipeline workers in this process, each a member of the consumer group with its
    /// own partitions, engine and producer; 0: one per core available.
    pub threads: usize,
}

/// The longest transactional id accepted (Kafka allows longer, but an id this long
/// is a template gone wrong).
const MAX_TRANSACTIONAL_ID: usize = 200;

impl ProcessingSection {
    /// The transactional id of this process (before each worker after the first adds `-N`):
    /// `processing.transactional_id` with its placeholders filled, else
    /// `flagtally-<group>-<instance_id>`. An error names what is missing.
    pub fn transactional_id(
        &self,
        kafka: &KafkaConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, String> {
        let template = match (&self.transactional_id, &kafka.instance_id) {
            (Some(t), _) => t.clone(),
            (None, Some(_)) => "flagtally-{group}-{instance_id}".to_owned(),
            (None, None) => {
                return Err("processing.exactly_once needs a stable id per instance, and none is configured: \
                     set processing.transactional_id (a template: \"flagtally-{machine_id}\" on hosts under systemd, \
                     \"flagtally-{hostname}\" in a Kubernetes StatefulSet, \"flagtally-{env:POD_NAME}\" with the downward API, \
                     or a literal per instance) or kafka.instance_id; without one, every instance would share an id \
                     and fence the others in a restart loop".to_owned());
            }
        };
        let key = "processing.transactional_id";
        let mut out = String::with_capacity(template.len());
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("{key}: an unclosed \"{{\" in {template:?}"));
            };
            let name = &rest[open + 1..open + close];
            let value = match name {
                "group" => Some(kafka.group_id.clone()),
                "instance_id" => kafka.instance_id.clone(),
                "hostname" => std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| env("HOSTNAME")),
                "machine_id" => std::fs::read_to_string("/etc/machine-id").ok(),
                _ => match name.strip_prefix("env:") {
                    Some(var) => env(var),
                    None => {
                        return Err(format!(
                            "{key}: unknown placeholder {{{name}}} (known: {{group}}, {{instance_id}}, {{hostname}}, {{machine_id}}, {{env:NAME}})"
                        ));
                    }
                },
            };
            let value = value.map(|v| v.trim().to_owned()).unwrap_or_default();
            if value.is_empty() {
                return Err(format!(
                    "{key}: {{{name}}} is unset or empty on this machine (template {template:?})"
                ));
            }
            out.push_str(&value);
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        if out.is_empty() || out.len() > MAX_TRANSACTIONAL_ID {
            return Err(format!(
                "{key}: {out:?} must have 1 to {MAX_TRANSACTIONAL_ID} bytes"
            ));
        }
        Ok(out)
    }

    /// The number of workers: `threads`, or the cores available when 0.
    pub fn workers(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        }
        .min(crate::admin::MAX_WORKERS)
    }
}

impl Default for ProcessingSection {
    fn default() -> Self {
        Self {
            exactly_once: false,
            transactional_id: None,
            checkpoint_topic: "flagtally-checkpoints".to_owned(),
            commit_interval: Duration::from_secs(1),
            shutdown_deadline: Duration::from_secs(30),
            threads: 0,
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {}", list(problems))]
    Invalid { path: String, problems: Vec<String> },
}

fn list(problems: &[String]) -> String {
    let mut text = format!(
        "{} problem{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        text.push_str("\n  - ");
        text.push_str(p);
    }
    text
}

/// The configuration's file syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    Toml,
    Yaml,
}

impl Syntax {
    /// YAML for `.yaml`/`.yml`, else TOML.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Self::Yaml,
            _ => Self::Toml,
        }
    }
}

/// Log and admin settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter (`info`, `flagtally=debug,rdkafka=warn`). Unset: `RUST_LOG`,
    /// else `info`. Changes apply on reload.
    pub level: Option<String>,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The admin HTTP server: `/metrics`, `/healthz`, `/readyz`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// `host:port`, or `"off"`.
    #[serde(deserialize_with = "listen")]
    pub listen: Option<SocketAddr>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        }
    }
}

fn yes() -> bool {
    true
}

impl Config {
    /// Reads `path` with the process environment's overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars()).map(|(config, _)| config)
    }

    /// Reads `path` with the overrides in `env`; also returns the merged tree (for
    /// telling what a reload changed).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Value), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_text(&text, Syntax::of(path), env).map_err(|problems| ConfigError::Invalid {
            path: path.display().to_string(),
            problems,
        })
    }

    /// A TOML text without overrides (tests, embedded defaults).
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::from_text(text, Syntax::Toml, [])
            .map(|(config, _)| config)
            .map_err(|problems| problems.join("\n"))
    }

    /// Parses, applies `env` overrides, deserialises and checks; every problem found is
    /// reported, each starting with its key path.
    pub fn from_text(
        text: &str,
        syntax: Syntax,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Value), Vec<String>> {
        let mut tree = match syntax {
            Syntax::Toml => toml::from_str::<toml::Table>(text)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::to_value(t).map_err(|e| e.to_string())),
            Syntax::Yaml => serde_yaml_ng::from_str::<Value>(text).map_err(|e| e.to_string()),
        }
        .map_err(|e| vec![format!("syntax: {}", e.trim_end())])?;
        if tree.is_null() {
            tree = Value::Object(serde_json::Map::new());
        }
        let mut problems = apply_env(&mut tree, env);
        let mut rest = tree.clone();
        let sinks = match &mut rest {
            Value::Object(map) => map.remove("sinks"),
            _ => None,
        };
        let config = read::read::<Config>("", rest, &mut problems);
        let mut warnings = Vec::new();
        let sinks = sinks.map_or_else(Vec::new, |s| read::sinks(s, &mut problems, &mut warnings));
        let config = config.map(|mut config| {
            config.kafka.read_secret_files(&mut problems, &mut warnings);
            if let Some(registry) = &mut config.output.schema_registry {
                registry.read_secret_files(&mut problems, &mut warnings);
            }
            config
                .collector
                .read_secret_files(&mut problems, &mut warnings);
            Config {
                sinks,
                warnings,
                ..config
            }
        });
        match config {
            Some(config) if problems.is_empty() => {
                let problems = config.check();
                if problems.is_empty() {
                    Ok((config, tree))
                } else {
                    Err(problems)
                }
            }
            _ => Err(problems),
        }
    }

    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.kafka.input_topics.is_empty() {
            problems.push("kafka.input_topics: at least one topic is needed".to_owned());
        }
        for (key, value) in [
            ("input.max_record_bytes", self.input.max_record_bytes),
            ("input.max_key_bytes", self.input.max_key_bytes),
            ("input.max_depth", self.input.max_depth),
            ("input.max_string_bytes", self.input.max_string_bytes),
            (
                "input.max_events_per_record",
                self.input.max_events_per_record,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        for (key, value) in [
            ("window.max_open_windows", self.window.max_open_windows),
            (
                "window.max_late_corrections",
                self.window.max_late_corrections,
            ),
            ("window.max_keys", self.window.max_keys),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        if let Err(e) = self.checkpoint_fits(crate::kafka::DEFAULT_TOPIC_LIMIT) {
            problems.push(e);
        }
        // A pattern subscription (`^…`) may match any name; plain names must be inputs.
        let patterns = self.kafka.input_topics.iter().any(|t| t.starts_with('^'));
        for name in self.input.topics.keys() {
            if !patterns && !self.kafka.input_topics.contains(name) {
                problems.push(format!(
                    "input.topics.{name}: {name:?} is not one of kafka.input_topics"
                ));
            }
        }
        self.kafka.check_security(&mut problems);
        if let Some(registry) = &self.output.schema_registry {
            registry.check(&mut problems);
        }
        self.collector
            .check(&self.kafka.input_topics, &mut problems);
        let typed: BTreeMap<String, String> = self
            .kafka
            .security_properties()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let have = crate::kafka::features::builtin();
        for (prefix, props) in [
            ("kafka", &typed),
            ("kafka.properties", &self.kafka.properties.0),
            (
                "kafka.consumer_properties",
                &self.kafka.consumer_properties.0,
            ),
            (
                "kafka.producer_properties",
                &self.kafka.producer_properties.0,
            ),
        ] {
            problems.extend(crate::kafka::features::missing(prefix, props, have));
        }
        if let [first, ..] = crate::kafka::features::missing_codecs(have)[..] {
            problems.push(format!(
                "this build's Kafka client (librdkafka) cannot read {first}-compressed record batches (builtin.features: {}); rebuild with every codec",
                have.iter().cloned().collect::<Vec<_>>().join(",")
            ));
        }
        if self.kafka.instance_id.as_deref() == Some("") {
            problems.push(
                "kafka.instance_id: must not be empty (leave it out for a dynamic member)"
                    .to_owned(),
            );
        }
        if self.kafka.group_id.is_empty() {
            problems.push("kafka.group_id: must not be empty".to_owned());
        }
        if self.processing.exactly_once
            && let Err(e) = self
                .processing
                .transactional_id(&self.kafka, &|k| std::env::var(k).ok())
        {
            problems.push(e);
        }
        if self.kafka.brokers.is_empty() {
            problems.push("kafka.brokers: must not be empty".to_owned());
        }
        let t = &self.output.topics;
        if OutputKind::ALL.iter().all(|k| t.topic(*k).is_none()) {
            problems.push("output.topics: no output topic is configured".to_owned());
        }
        if self.window.late_policy == LatePolicy::DeadLetter && t.late.is_none() {
            problems.push(
                "output.topics.late: the dead-letter late policy needs a late topic".to_owned(),
            );
        }
        for sink in &self.sinks {
            let sink = &sink.delivery;
            if let Some(t) = &sink.dead_letter_topic
                && sink.topics.contains(t)
            {
                problems.push(format!(
                    "sinks.{}.dead_letter_topic: {t:?} is one of the sink's own topics (its refusals would come back to it)",
                    sink.name
                ));
            }
        }
        if self.output.max_dead_letter_bytes < 4096 {
            problems.push(
                "output.max_dead_letter_bytes: at least 4096 (room for the headers)".to_owned(),
            );
        }
        if self.output.dead_letter_topic.is_none() {
            problems.push(
                "output.dead_letter_topic: needed, undecodable records are never dropped"
                    .to_owned(),
            );
        }
        if self.processing.checkpoint_topic.is_empty() {
            problems.push("processing.checkpoint_topic: must not be empty".to_owned());
        }
        if self.processing.threads > crate::admin::MAX_WORKERS {
            problems.push(format!(
                "processing.threads: at most {} (0: one per core)",
                crate::admin::MAX_WORKERS
            ));
        }
        if let Err(e) = crate::window::Engine::new(self.engine_config()) {
            problems.push(format!("full_events.overrides: {e}"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let at = format!("sinks[{i}]");
            let name = &sink.delivery.name;
            if name.is_empty() || !names.insert(name.as_str()) {
                problems.push(format!("{at}.name: must be set and unique"));
            }
            sink.delivery.check(&at, &mut problems);
            sink.kind.check(&at, &mut problems);
            if self.output.format != crate::emit::Format::Json {
                problems.push(format!(
                    "{at}: sinks read JSON outputs (output.format = \"json\")"
                ));
            }
        }
        if let Some(level) = &self.log.level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
        {
            problems.push(format!("log.level: {level:?}: {e}"));
        }
        problems
    }

    pub fn decoder(&self) -> Decoder {
        Decoder::new(
            self.input.dialect,
            Limits {
                max_record_bytes: self.input.max_record_bytes,
                max_key_bytes: self.input.max_key_bytes,
                max_depth: self.input.max_depth,
                max_string_bytes: self.input.max_string_bytes,
                max_events: self.input.max_events_per_record,
            },
        )
    }

    pub fn engine_config(&self) -> EngineConfig {
        let w = &self.window;
        EngineConfig {
            window: WindowConfig {
                size_ms: millis(w.size),
                offset_ms: w.offset,
                allowed_lateness_ms: millis(w.lateness),
                idle_timeout_ms: w.idle_timeout.map(millis),
                late_policy: w.late_policy,
                max_open_windows: w.max_open_windows,
                max_late_corrections: w.max_late_corrections,
                max_keys: w.max_keys,
            },
            index: IndexConfig {
                enabled: self.index.enabled,
                capacity: self.index.capacity,
                flush_interval_ms: millis(self.index.flush_interval),
            },
            gate: GateConfig {
                overrides: self.full_events.overrides.clone(),
                debug_events: self.full_events.debug_events,
            },
        }
    }

    pub fn emit_config(&self) -> EmitConfig {
        EmitConfig {
            format: self.output.format,
            envelope: self.output.envelope.clone(),
            feature_key: self.output.feature_key,
            schema_ids: None,
        }
    }
}

fn overrides<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Override>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter()
        .map(|s| parse_override(s))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [kafka]
        brokers = "127.0.0.1:9092"
        group_id = "g"
        input_topics = ["in"]
        [output]
        dead_letter_topic = "dlq"
        topics.summary = "sums"
    "#;

    fn problems(text: &str) -> Vec<String> {
        Config::from_text(text, Syntax::Toml, []).unwrap_err()
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.window.size, Duration::from_secs(60));
        assert_eq!(c.engine_config().window, WindowConfig::default());
        assert_eq!(c.processing.commit_interval, Duration::from_secs(1));
        assert_eq!(c.output.topics.topic(OutputKind::Summary), Some("sums"));
        assert_eq!(c.output.topics.topic(OutputKind::Feature), None);
        assert_eq!(c.admin, AdminSection::default());
        assert_eq!(c.log.format, LogFormat::Human);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::parse(&format!("{MINIMAL}\n[window]\nsize = \"0s\"")).unwrap_err();
        assert!(
            e.contains("window.size: \"0s\": must be more than zero"),
            "{e}"
        );
        let e = Config::parse(&format!("{MINIMAL}\n[window]\nsise = \"1m\"")).unwrap_err();
        assert!(e.contains("window.sise: unknown field `sise`"), "{e}");
    }

    #[test]
    fn every_bad_key_is_reported_in_one_pass_with_its_path() {
        let p = problems(&format!(
            r#"{MINIMAL}
            [window]
            size = "fortnight"
            lateness = 10
            sise = "1m"
            late_policy = "maybe"
            [processing]
            commit_interval = "-1s"
            exactly_once = "yes"
            [input]
            max_record_bytes = "4 parsecs"
            [admin]
            listen = "localhost"
            "#
        ));
        for needle in [
            "window.size: \"fortnight\"",
            "window.lateness: invalid type: integer `10`, expected a string",
            "window.sise: unknown field",
            "window.late_policy: unknown variant `maybe`",
            "processing.commit_interval: \"-1s\"",
            "processing.exactly_once: invalid type: string \"yes\", expected a boolean",
            "input.max_record_bytes: \"4 parsecs\"",
            "admin.listen: \"localhost\"",
        ] {
            assert!(
                p.iter().any(|x| x.starts_with(needle)),
                "{needle} missing from {p:#?}"
            );
        }
        assert_eq!(p.len(), 8, "{p:#?}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let p = problems(
            r#"
            [kafka]
            brokers = "b"
            group_id = ""
            input_topics = []
            [window]
            late_policy = "dead-letter"
            [log]
            level = "flagtally=loud"
            "#,
        );
        for needle in [
            "kafka.input_topics",
            "kafka.group_id",
            "output.topics:",
            "output.topics.late",
            "output.dead_letter_topic",
            "log.level",
        ] {
            assert!(
                p.iter().any(|x| x.starts_with(needle)),
                "{needle} missing from {p:#?}"
            );
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let p = problems("[kafka\nbrokers = 1");
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("syntax: ") && p[0].contains("line 1"),
            "{p:?}"
        );
    }

    /// The configuration's debug form (what a `{:?}` anywhere would print) holds no
    /// secret of any sink, the registry or the brokers.
    #[test]
    fn secrets_never_print() {
        let text = format!(
            "{MINIMAL}
[kafka.properties]
\"sasl.oauthbearer.client.secret\" = \"oidc-SEKRIT-6\"
\"ssl.keystore.password\" = \"ks-SEKRIT-7\"
\"client.id\" = \"shown-as-given\"
[output.schema_registry]
url = \"http://r\"
username = \"u\"
password = \"reg-SEKRIT-1\"
[[sinks]]
name = \"hook\"
type = \"webhook\"
topics = [\"sums\"]
url = \"https://h.example.com/\"
secret = \"hook-SEKRIT-2\"
[[sinks]]
name = \"seg\"
type = \"segment\"
topics = [\"sums\"]
write_key = \"seg-SEKRIT-3\"
[[sinks]]
name = \"s3\"
type = \"s3\"
topics = [\"sums\"]
bucket = \"b\"
endpoint = \"http://127.0.0.1:1\"
access_key_id = \"id\"
secret_access_key = \"s3-SEKRIT-4\"
[[sinks]]
name = \"pg\"
type = \"postgres\"
topics = [\"sums\"]
url = \"postgresql://u:pg-SEKRIT-5@127.0.0.1/db\"
"
        );
        let config = Config::parse(&text).unwrap();
        let shown = format!("{config:?} {:?}", config.sink_plan());
        assert!(!shown.contains("SEKRIT"), "{shown}");
        assert!(shown.contains("shown-as-given"), "{shown}");
    }

    #[test]
    fn the_oidc_client_secret_is_a_secret_key() {
        let dir = std::env::temp_dir().join(format!("flagtally-oidc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("client-secret");
        std::fs::write(&file, "oidc-SEKRIT\n").unwrap();
        let text = MINIMAL.replacen(
            "input_topics = [\"in\"]",
            &format!(
                "input_topics = [\"in\"]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"OAUTHBEARER\"\nsasl_oauthbearer_client_secret_file = \"{}\"",
                file.display()
            ),
            1,
        );
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let props = config.kafka.security_properties();
        assert!(
            props.contains(&("sasl.oauthbearer.client.secret", "oidc-SEKRIT".to_owned())),
            "{props:?}"
        );
        assert!(!format!("{config:?}").contains("SEKRIT"));
        // Given twice, or for another mechanism: refused, naming the key.
        let twice =
            format!("{text}[kafka.properties]\n\"sasl.oauthbearer.client.secret\" = \"x\"\n");
        let e = Config::parse(&twice).unwrap_err();
        assert!(
            e.contains("kafka.sasl_oauthbearer_client_secret: also set"),
            "{e}"
        );
        let scram = text.replace("\"OAUTHBEARER\"", "\"SCRAM-SHA-512\"");
        let e = Config::parse(&scram).unwrap_err();
        assert!(
            e.contains("kafka.sasl_oauthbearer_client_secret: set for sasl_mechanism = \"OAUTHBEARER\" only"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sinks_are_reached_by_name_and_read_secrets_from_files() {
        let dir = std::env::temp_dir().join(format!("flagtally-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("hook-secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let text = format!(
            "{MINIMAL}\n[[sinks]]\nname = \"audit-hook\"\ntype = \"webhook\"\ntopics = [\"sums\"]\nurl = \"https://old.example.com/\"\nsecret_file = \"{}\"\n\n[[sinks]]\nname = \"files\"\ntype = \"file\"\ntopics = [\"sums\"]\npath = \"/tmp/x\"\n",
            secret.display()
        );
        let env = [
            (
                "FLAGTALLY__SINKS__AUDIT_HOOK__URL",
                "https://new.example.com/hook",
            ),
            ("FLAGTALLY__SINKS__FILES__BATCH_SIZE", "7"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let (c, _) = Config::from_text(&text, Syntax::Toml, env).unwrap();
        let crate::sink::Kind::Webhook(hook) = &c.sinks[0].kind else {
            panic!("{:?}", c.sinks[0].kind)
        };
        assert_eq!(hook.url.as_deref(), Some("https://new.example.com/hook"));
        assert_eq!(
            hook.secret
                .as_ref()
                .map(crate::kafka::security::Secret::expose),
            Some("s3cret")
        );
        assert_eq!(c.sinks[1].delivery.batch_size, 7);
        // A sink name that is not there, and a secret given twice, are errors.
        let env = [("FLAGTALLY__SINKS__NOPE__URL", "x")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        let e = Config::from_text(&text, Syntax::Toml, env).unwrap_err();
        assert!(e[0].contains("no entry of sinks is named nope"), "{e:?}");
        let twice = text.replace("secret_file", "secret = \"x\"\nsecret_file");
        let e = Config::from_text(&twice, Syntax::Toml, []).unwrap_err();
        assert!(
            e.iter().any(|p| p.contains("sinks[0].secret: set both")),
            "{e:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn environment_overrides_win_over_the_file() {
        let env = [
            ("FLAGTALLY__KAFKA__BROKERS", "broker-a:9092,broker-b:9092"),
            ("FLAGTALLY__WINDOW__SIZE", "5m"),
            ("FLAGTALLY__PROCESSING__EXACTLY_ONCE", "true"),
            ("FLAGTALLY__PROCESSING__TRANSACTIONAL_ID", "flagtally-pod-0"),
            ("FLAGTALLY__KAFKA__INPUT_TOPICS", r#"["x", "y"]"#),
            ("FLAGTALLY__OUTPUT__TOPICS__FEATURE", "features"),
            ("FLAGTALLY__INPUT__MAX_RECORD_BYTES", "1MiB"),
            (
                "FLAGTALLY__KAFKA__PROPERTIES__SASL.MECHANISM",
                "SCRAM-SHA-512",
            ),
            ("FLAGTALLY_CONFIG", "not an override"),
            ("OTHER", "ignored"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let (c, _) = Config::from_text(MINIMAL, Syntax::Toml, env).unwrap();
        assert_eq!(c.kafka.brokers, "broker-a:9092,broker-b:9092");
        assert_eq!(c.window.size, Duration::from_secs(300));
        assert!(c.processing.exactly_once);
        assert_eq!(c.kafka.input_topics, ["x", "y"]);
        assert_eq!(c.output.topics.feature.as_deref(), Some("features"));
        assert_eq!(c.output.topics.summary.as_deref(), Some("sums"));
        assert_eq!(c.input.max_record_bytes, 1 << 20);
        assert_eq!(c.kafka.properties["sasl.mechanism"], "SCRAM-SHA-512");
    }

    #[test]
    fn a_bad_override_is_named_by_its_path() {
        let env = [("FLAGTALLY__WINDOW__SIZE".to_owned(), "soon".to_owned())];
        let p = Config::from_text(MINIMAL, Syntax::Toml, env).unwrap_err();
        assert!(p[0].starts_with("window.size: \"soon\""), "{p:?}");
    }

    #[test]
    fn yaml_is_accepted() {
        let yaml = r#"
kafka:
  brokers: "127.0.0.1:9092"
  group_id: g
  input_topics: [in]
window:
  size: 5m
  idle_timeout: "off"
output:
  dead_letter_topic: dlq
  topics:
    summary: sums
"#;
        let (c, _) = Config::from_text(yaml, Syntax::Yaml, []).unwrap();
        assert_eq!(c.window.size, Duration::from_secs(300));
        assert_eq!(c.window.idle_timeout, None);
        assert_eq!(Syntax::of(Path::new("/etc/flagtally.yml")), Syntax::Yaml);
    }

    #[test]
    fn changed_paths_lists_leaves() {
        let (_, a) = Config::from_text(MINIMAL, Syntax::Toml, []).unwrap();
        let text = format!(
            "{MINIMAL}\n[log]\nlevel = \"debug\"\n[full_events]\noverrides = [\"a=never\"]"
        );
        let (_, b) = Config::from_text(&text, Syntax::Toml, []).unwrap();
        assert_eq!(
            changed_paths(&a, &b),
            ["full_events.overrides", "log.level"]
        );
        assert!(changed_paths(&a, &a).is_empty());
    }

    #[test]
    fn exactly_once_needs_an_explicit_stable_id() {
        let base = "[kafka]\ninput_topics = [\"in\"]\ngroup_id = \"g\"\n[output]\ndead_letter_topic = \"d\"\ntopics.summary = \"s\"\n[processing]\nexactly_once = true\n";
        let e = Config::parse(base).unwrap_err();
        assert!(
            e.contains("processing.exactly_once needs a stable id per instance"),
            "{e}"
        );
        assert!(
            e.contains("{machine_id}") && e.contains("{hostname}"),
            "{e}"
        );
        let c = Config::parse(&base.replace(
            "[processing]",
            "[processing]\ntransactional_id = \"t-{group}\"",
        ))
        .unwrap();
        let no_env = |_: &str| None;
        assert_eq!(
            c.processing.transactional_id(&c.kafka, &no_env).unwrap(),
            "t-g"
        );
        let c = Config::parse(
            &base.replace("group_id = \"g\"", "group_id = \"g\"\ninstance_id = \"a\""),
        )
        .unwrap();
        assert_eq!(
            c.processing.transactional_id(&c.kafka, &no_env).unwrap(),
            "flagtally-g-a"
        );
        let with = |t: &str| {
            let mut c = c.clone();
            c.processing.transactional_id = Some(t.to_owned());
            c.processing
                .transactional_id(&c.kafka, &|k| (k == "POD").then(|| "pod-1\n".to_owned()))
        };
        assert_eq!(with("x-{env:POD}-{instance_id}").unwrap(), "x-pod-1-a");
        assert!(
            with("x-{env:NOPE}")
                .unwrap_err()
                .contains("{env:NOPE} is unset or empty")
        );
        assert!(
            with("x-{colour}")
                .unwrap_err()
                .contains("unknown placeholder {colour}")
        );
        assert!(with("x-{group").unwrap_err().contains("unclosed"));
        assert!(
            with(&"x".repeat(201))
                .unwrap_err()
                .contains("1 to 200 bytes")
        );
        assert!(!with("{hostname}").unwrap().is_empty());
    }
}

#[cfg(test)]
mod documented {
    use super::*;

    const DOCUMENTED: &str = include_str!("../../config/flagtally.toml");

    /// `config/flagtally.toml` sets every key to its default (except the topics, which
    /// have none): parsed, it equals a file that names only the topics.
    #[test]
    fn the_documented_file_lists_the_real_defaults() {
        let documented = Config::parse(DOCUMENTED).unwrap();
        let topics_only = Config::parse(
            r#"
            [kafka]
            input_topics = ["flag-evaluations"]
            [output]
            dead_letter_topic = "flagtally.dead-letters"
            [output.topics]
            summary = "flagtally.summaries"
            feature = "flagtally.features"
            index = "flagtally.index"
            identify = "flagtally.identify"
            custom = "flagtally.custom"
            "#,
        )
        .unwrap();
        assert_eq!(format!("{documented:?}"), format!("{topics_only:?}"));
    }

    /// Every key the file documents (commented-out ones included) is a real key.
    #[test]
    fn every_documented_key_parses() {
        let uncommented: String = DOCUMENTED
            .lines()
            .map(|l| {
                let t = l.trim_start();
                match t.strip_prefix("# ") {
                    Some(rest)
                        if (rest.contains(" = ") && !rest.starts_with(' '))
                            || rest.starts_with('[') =>
                    {
                        rest
                    }
                    _ => l,
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::parse(&uncommented).unwrap();
        assert_eq!(c.sinks.len(), 5, "every documented sink type");
    }
}
