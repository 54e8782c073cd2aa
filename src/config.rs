//! The daemon's configuration: one TOML file → a typed [`Config`]. Unknown keys are
//! errors; every duration is a humantime string (`30s`, `1m`, `1h30m`).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::cli::{duration, millis, parse_override, signed_duration};
use crate::decode::{Decoder, Dialect, Limits};
use crate::emit::{EmitConfig, Envelope, FeatureKey, Format, OutputKind};
use crate::window::{EngineConfig, GateConfig, IndexConfig, LatePolicy, Override, WindowConfig};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
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
}

/// The broker, the consumer group and librdkafka pass-through properties.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub group_id: String,
    pub input_topics: Vec<String>,
    /// Any librdkafka property, for consumer and producer alike (security.protocol,
    /// sasl.*, ssl.*, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, String>,
    #[serde(default)]
    pub producer_properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Applies the pass-through properties, shared ones then `role` ones, over
    /// flagtally's own settings (so users can override them).
    pub fn apply(&self, cc: &mut rdkafka::ClientConfig, role: &BTreeMap<String, String>) {
        for (k, v) in self.properties.iter().chain(role) {
            cc.set(k, v);
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    pub dialect: Dialect,
    pub max_record_bytes: usize,
    pub max_key_bytes: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            dialect: Dialect::Auto,
            max_record_bytes: limits.max_record_bytes,
            max_key_bytes: limits.max_key_bytes,
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
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    pub format: Format,
    pub feature_key: FeatureKey,
    pub envelope: Envelope,
    pub topics: TopicsSection,
    /// Undecodable input records, with reason headers.
    pub dead_letter_topic: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsSection {
    pub summary: Option<String>,
    pub feature: Option<String>,
    pub debug: Option<String>,
    pub index: Option<String>,
    pub identify: Option<String>,
    pub custom: Option<String>,
    pub passthrough: Option<String>,
    /// Late events under the `dead-letter` late policy.
    pub late: Option<String>,
}

impl TopicsSection {
    pub fn topic(&self, kind: OutputKind) -> Option<&str> {
        match kind {
            OutputKind::Summary => self.summary.as_deref(),
            OutputKind::Feature => self.feature.as_deref(),
            OutputKind::Debug => self.debug.as_deref(),
            OutputKind::Index => self.index.as_deref(),
            OutputKind::Identify => self.identify.as_deref(),
            OutputKind::Custom => self.custom.as_deref(),
            OutputKind::PassThrough => self.passthrough.as_deref(),
            OutputKind::Late => self.late.as_deref(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingSection {
    /// Outputs and offsets in one Kafka transaction per commit (brokers with
    /// transactions only).
    pub exactly_once: bool,
    /// `transactional.id` in exactly-once mode; default `flagtally-<group>-<host>`.
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
}

impl Default for ProcessingSection {
    fn default() -> Self {
        Self {
            exactly_once: false,
            transactional_id: None,
            checkpoint_topic: "flagtally-checkpoints".to_owned(),
            commit_interval: Duration::from_secs(1),
            shutdown_deadline: Duration::from_secs(30),
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
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and checks a configuration; the message names every problem found.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        if config.kafka.input_topics.is_empty() {
            problems.push("kafka.input_topics: at least one topic is needed".to_owned());
        }
        if config.kafka.group_id.is_empty() {
            problems.push("kafka.group_id: must not be empty".to_owned());
        }
        let t = &config.output.topics;
        if OutputKind::ALL.iter().all(|k| t.topic(*k).is_none()) {
            problems.push("output.topics: no output topic is configured".to_owned());
        }
        if config.window.late_policy == LatePolicy::DeadLetter && t.late.is_none() {
            problems.push(
                "output.topics.late: the dead-letter late policy needs a late topic".to_owned(),
            );
        }
        if config.output.dead_letter_topic.is_none() {
            problems.push(
                "output.dead_letter_topic: needed, undecodable records are never dropped"
                    .to_owned(),
            );
        }
        if let Err(e) = crate::window::Engine::new(config.engine_config()) {
            problems.push(format!("full_events.overrides: {e}"));
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.join("\n"))
        }
    }

    pub fn decoder(&self) -> Decoder {
        Decoder::new(
            self.input.dialect,
            Limits {
                max_record_bytes: self.input.max_record_bytes,
                max_key_bytes: self.input.max_key_bytes,
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
        }
    }
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    duration(&s).map_err(serde::de::Error::custom)
}

fn any_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s == "off" {
        return Ok(None);
    }
    duration(&s).map(Some).map_err(serde::de::Error::custom)
}

fn signed_millis<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    signed_duration(&s).map_err(serde::de::Error::custom)
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

    #[test]
    fn minimal_config_takes_the_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.window.size, Duration::from_secs(60));
        assert_eq!(c.engine_config().window, WindowConfig::default());
        assert_eq!(c.processing.commit_interval, Duration::from_secs(1));
        assert_eq!(c.output.topics.topic(OutputKind::Summary), Some("sums"));
        assert_eq!(c.output.topics.topic(OutputKind::Feature), None);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::parse(&format!("{MINIMAL}\n[window]\nsize = \"0s\"")).unwrap_err();
        assert!(e.contains("must be more than zero"), "{e}");
        let e = Config::parse(&format!("{MINIMAL}\n[window]\nsise = \"1m\"")).unwrap_err();
        assert!(e.contains("unknown field `sise`"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = Config::parse(
            r#"
            [kafka]
            brokers = "b"
            group_id = ""
            input_topics = []
            [window]
            late_policy = "dead-letter"
            "#,
        )
        .unwrap_err();
        for needle in [
            "kafka.input_topics",
            "kafka.group_id",
            "output.topics:",
            "output.topics.late",
            "output.dead_letter_topic",
        ] {
            assert!(e.contains(needle), "{needle} missing from {e}");
        }
    }
}

#[cfg(test)]
mod example {
    /// The shipped example parses and passes validation.
    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../config/flagtally.example.toml");
        super::Config::parse(text).unwrap();
    }
}
