//! Warehouse sinks: each reads output topics as a consumer group of its own and
//! delivers them to one destination (files, object storage, PostgreSQL, HTTP).
//!
//! - [`worker`]: the loop every sink runs (read, batch, write, retry, set aside,
//!   commit) and the supervisor that starts, restarts and replaces sinks;
//! - [`destination`]: what a destination implements, and the records it is given;
//! - [`record`]: one view of an output record for every destination (the event
//!   unwrapped from its envelope, its time, the context it is about);
//! - [`mod@file`], [`s3`], [`postgres`], [`http`]: the destinations, each with the
//!   settings of its `[[sinks]]` entry.
//!
//! A `[[sinks]]` entry is read in two parts: the keys every sink has ([`Delivery`]:
//! name, topics, batches, retries, dead letters) and the keys of its `type` ([`Kind`],
//! one struct per type, owned by its destination's module).

pub mod destination;
pub mod file;
pub mod http;
pub mod paths;
pub mod pg_tls;
pub mod postgres;
pub mod record;
pub mod s3;
pub mod worker;

use std::time::Duration;

use serde::Deserialize;

use crate::kafka::KafkaConfig;

/// One `[[sinks]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    pub delivery: Delivery,
    pub kind: Kind,
}

/// The keys every sink has: how it reads its topics and delivers them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Unique; names the sink's consumer group, metrics and stored positions.
    pub name: String,
    /// Output topics to deliver (JSON format).
    pub topics: Vec<String>,
    /// The consumer group; default `flagtally-sink-<name>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Records per write, at most (files: per file, the roll by count).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Bytes per write, about (files: the roll by size).
    #[serde(
        default = "default_batch_bytes",
        deserialize_with = "crate::units::de::size"
    )]
    pub batch_bytes: usize,
    /// A batch is written when this old, full or not.
    #[serde(
        default = "default_batch_timeout",
        deserialize_with = "crate::units::de::positive_duration"
    )]
    pub batch_timeout: Duration,
    /// Backoff while the destination fails: the first wait, doubling up to `retry_max`
    /// (with jitter).
    #[serde(
        default = "default_retry_initial",
        deserialize_with = "crate::units::de::positive_duration"
    )]
    pub retry_initial: Duration,
    #[serde(
        default = "default_retry_max",
        deserialize_with = "crate::units::de::positive_duration"
    )]
    pub retry_max: Duration,
    /// Where records the destination refuses for good (HTTP 4xx, constraint
    /// violations, unencodable values) go, with the reason; default: the processor's
    /// `output.dead_letter_topic`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

fn default_batch_size() -> usize {
    5000
}
fn default_batch_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}
fn default_batch_bytes() -> usize {
    64 << 20
}

impl Delivery {
    pub fn group(&self) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("flagtally-sink-{}", self.name))
    }

    /// What no single key can say wrong, each problem with its path (`at`: the
    /// entry's, `sinks[2]`).
    pub fn check(&self, at: &str, problems: &mut Vec<String>) {
        if self.topics.is_empty() {
            problems.push(format!("{at}.topics: at least one topic is needed"));
        }
        if self.batch_size == 0 {
            problems.push(format!("{at}.batch_size: must be more than zero"));
        }
    }
}

/// The keys of one sink type, by the entry's `type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Exactly once into PostgreSQL (`schemas/postgres.sql`).
    Postgres(postgres::PostgresConfig),
    /// go-feature-flag-compatible webhook (`{"meta":…,"events":[…]}`, HMAC-signed).
    Webhook(http::WebhookConfig),
    /// Segment's batch API.
    Segment(http::SegmentConfig),
    /// NDJSON, CSV, Avro or Parquet files in a local directory.
    File(file::FileConfig),
    /// The same files as objects in an S3-compatible store.
    S3(s3::S3Config),
}

/// The sink types, as `type` names them.
pub const TYPES: [&str; 5] = ["postgres", "webhook", "segment", "file", "s3"];

impl Kind {
    /// Reads the keys of type `ty` (one of [`TYPES`]) with `read`, which deserialises
    /// one struct and reports its problems (the configuration's reader: every bad key,
    /// with its path). `None` for an unknown type, or when a key was wrong.
    pub fn read<R: KindReader>(ty: &str, read: &mut R) -> Option<Self> {
        Some(match ty {
            "postgres" => Self::Postgres(read.read()?),
            "webhook" => Self::Webhook(read.read()?),
            "segment" => Self::Segment(read.read()?),
            "file" => Self::File(read.read()?),
            "s3" => Self::S3(read.read()?),
            _ => return None,
        })
    }

    /// The checks of the type's keys (`at`: the entry's path).
    pub fn check(&self, at: &str, problems: &mut Vec<String>) {
        match self {
            Self::Postgres(c) => c.check(at, problems),
            Self::Webhook(c) => c.check(at, problems),
            Self::Segment(c) => c.check(at, problems),
            Self::File(c) => c.check(at, problems),
            Self::S3(c) => c.check(at, problems),
        }
    }
}

/// Deserialises the keys of one sink type into its struct (implemented by the
/// configuration's reader, which knows where the keys are and reports every problem).
pub trait KindReader {
    fn read<T: serde::de::DeserializeOwned>(&mut self) -> Option<T>;
}

/// What the sinks need from the configuration: the Kafka client, the processor's
/// dead-letter topic (the default for theirs), and the entries.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kafka: KafkaConfig,
    pub dead_letter_topic: Option<String>,
    pub sinks: Vec<SinkConfig>,
}
