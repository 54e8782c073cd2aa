//! Emit: engine [`Output`]s → output records (key, value, headers, deterministic id).
//!
//! - `launchdarkly` writes LaunchDarkly's JSON shapes in go-sdk-events key order;
//! - `avro` writes the same events with the schemas in `schemas/` (and reads them back);
//! - this file routes each output to its kind, derives its id and headers, and wraps
//!   values in the Data Export envelope when configured.
//!
//! Ids come from the output's provenance only (input topic, partition, offset, index;
//! or scope, flag, window, partition and part for summaries): never a clock or a random
//! number, so a replay re-emits byte-identical records with the same ids.

pub mod avro;
pub mod launchdarkly;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use uuid::Uuid;
use xxhash_rust::xxh3::Xxh3;

use crate::event::Scope;
use crate::window::{Output, SourcePos};

/// The kind of an output record; each kind goes to its own topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    Summary,
    Feature,
    Debug,
    Index,
    Identify,
    Custom,
    PassThrough,
    Late,
}

impl OutputKind {
    pub const ALL: [Self; 8] = [
        Self::Summary,
        Self::Feature,
        Self::Debug,
        Self::Index,
        Self::Identify,
        Self::Custom,
        Self::PassThrough,
        Self::Late,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Summary => "summary",
            Self::Feature => "feature",
            Self::Debug => "debug",
            Self::Index => "index",
            Self::Identify => "identify",
            Self::Custom => "custom",
            Self::PassThrough => "passthrough",
            Self::Late => "late",
        }
    }

    pub fn of(out: &Output) -> Self {
        match out {
            Output::Summary(_) => Self::Summary,
            Output::Feature { debug: false, .. } => Self::Feature,
            Output::Feature { debug: true, .. } => Self::Debug,
            Output::Index { .. } => Self::Index,
            Output::Identify { .. } => Self::Identify,
            Output::Custom { .. } => Self::Custom,
            Output::PassThrough { .. } => Self::PassThrough,
            Output::Late { .. } => Self::Late,
        }
    }
}

/// How record values are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// LaunchDarkly's JSON shapes.
    #[default]
    Json,
    /// Avro with the schemas in `schemas/`, as single-object encoding (a 2-byte marker
    /// and the schema's 8-byte fingerprint, then the datum).
    Avro,
}

/// What a record value is wrapped in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Envelope {
    /// The bare LaunchDarkly event.
    #[default]
    None,
    /// LaunchDarkly Data Export: `{"project":…,"environment":…,"event":{…},"version":1}`.
    /// The ids come from the input when it carries them, else from here.
    DataExport {
        #[serde(default)]
        project: Option<String>,
        #[serde(default)]
        environment: Option<String>,
    },
}

/// Which key feature events are written with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureKey {
    /// The context's fully-qualified key: one context's events stay in order.
    #[default]
    Context,
    /// The flag key.
    Flag,
    /// No key (round-robin partitioning).
    None,
}

/// How outputs are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmitConfig {
    pub format: Format,
    pub envelope: Envelope,
    pub feature_key: FeatureKey,
    /// Avro outputs: the Schema Registry ids, resolved at start (`None`: Avro
    /// single-object encoding).
    pub schema_ids: Option<avro::SchemaIds>,
}

/// One record, ready for a topic or a sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: OutputKind,
    pub id: Uuid,
    pub key: Option<Bytes48>,
    pub value: Vec<u8>,
    pub headers: SmallVec<[(&'static str, Bytes48); 7]>,
    /// Event time of the record, in ms (a summary's window end − 1).
    pub timestamp_ms: i64,
}

/// A key or header value, inline up to 48 bytes (an id, a kind, a source position, a
/// context key): building an output record's headers allocates nothing.
pub type Bytes48 = SmallVec<[u8; 48]>;

/// Header names; every output record carries `ID`, `KIND` and `SOURCE`.
pub mod header {
    pub const ID: &str = "flagtally-id";
    pub const KIND: &str = "flagtally-kind";
    pub const WINDOW_START: &str = "flagtally-window-start";
    pub const WINDOW_END: &str = "flagtally-window-end";
    pub const LATE: &str = "flagtally-late";
    pub const EARLY: &str = "flagtally-early";
    /// `topic/partition/offset#index` of the input event, or `topic/partition` for a
    /// summary.
    pub const SOURCE: &str = "flagtally-source";
    pub const ENV: &str = "flagtally-env";
    pub const CONTENT_TYPE: &str = "content-type";
}

/// Errors while encoding an output. Encoding our own outputs fails only through a bug
/// or a schema mismatch, so these stop the pipeline rather than dead-letter.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("avro encoding of a {kind} record failed: {detail}")]
    Avro { kind: &'static str, detail: String },
}

/// Turns outputs into records.
#[derive(Debug)]
pub struct Emitter {
    config: EmitConfig,
    avro: Option<avro::Schemas>,
}

impl Emitter {
    pub fn new(config: EmitConfig) -> Self {
        let avro = (config.format == Format::Avro)
            .then(|| avro::Schemas::load(config.schema_ids.as_ref()));
        Self { config, avro }
    }

    pub fn config(&self) -> &EmitConfig {
        &self.config
    }

    /// Encodes one output as a record.
    pub fn emit(&self, out: &Output) -> Result<Record, EmitError> {
        self.emit_into(out, Vec::with_capacity(256))
    }

    /// Encodes one output as a record whose value is written into `buf` (cleared
    /// first): a caller that takes the value back after each record allocates none.
    pub fn emit_into(&self, out: &Output, mut buf: Vec<u8>) -> Result<Record, EmitError> {
        let kind = OutputKind::of(out);
        let id = record_id(out);
        buf.clear();
        let value = match &self.avro {
            Some(schemas) => schemas.encode(out)?,
            None => {
                match &self.config.envelope {
                    Envelope::None => launchdarkly::write(out, &mut buf),
                    Envelope::DataExport {
                        project,
                        environment,
                    } => launchdarkly::write_data_export(
                        out,
                        project.as_deref(),
                        environment.as_deref(),
                        &mut buf,
                    ),
                }
                buf
            }
        };
        let mut headers = SmallVec::new();
        let mut id_text = Uuid::encode_buffer();
        let id_text = id.hyphenated().encode_lower(&mut id_text);
        headers.push((header::ID, Bytes48::from_slice(id_text.as_bytes())));
        headers.push((header::KIND, Bytes48::from_slice(kind.name().as_bytes())));
        let content_type: &[u8] = match self.config.format {
            Format::Json => b"application/json",
            Format::Avro => b"application/avro",
        };
        headers.push((header::CONTENT_TYPE, Bytes48::from_slice(content_type)));
        let (key, timestamp_ms) = match out {
            Output::Summary(s) => {
                headers.push((header::WINDOW_START, ms_bytes(s.window.start.as_millis())));
                headers.push((header::WINDOW_END, ms_bytes(s.window.end.as_millis())));
                if s.late {
                    headers.push((header::LATE, Bytes48::from_slice(b"true")));
                }
                if s.reason == crate::window::CloseReason::Early {
                    headers.push((header::EARLY, Bytes48::from_slice(b"true")));
                }
                headers.push((header::SOURCE, partition_text(&s.partition)));
                (
                    Some(Bytes48::from_slice(s.flag_key.as_bytes())),
                    s.window.end.as_millis() - 1,
                )
            }
            Output::Feature { event, pos, .. } => {
                headers.push((header::SOURCE, position_text(pos)));
                let key = match self.config.feature_key {
                    FeatureKey::Context => Some(event.context.fully_qualified_key()),
                    FeatureKey::Flag => Some(event.flag_key.clone()),
                    FeatureKey::None => None,
                };
                (
                    key.map(|k| Bytes48::from_slice(k.as_bytes())),
                    event.creation_date.as_millis(),
                )
            }
            Output::Index {
                context,
                creation_date,
                pos,
                ..
            } => {
                headers.push((header::SOURCE, position_text(pos)));
                (
                    Some(Bytes48::from_slice(
                        context.fully_qualified_key().as_bytes(),
                    )),
                    creation_date.as_millis(),
                )
            }
            Output::Identify { event, pos } => {
                headers.push((header::SOURCE, position_text(pos)));
                (
                    Some(Bytes48::from_slice(
                        event.context.fully_qualified_key().as_bytes(),
                    )),
                    event.creation_date.as_millis(),
                )
            }
            Output::Custom { event, pos } => {
                headers.push((header::SOURCE, position_text(pos)));
                (
                    Some(Bytes48::from_slice(
                        event.context.fully_qualified_key().as_bytes(),
                    )),
                    event.creation_date.as_millis(),
                )
            }
            Output::PassThrough { event, pos } => {
                headers.push((header::SOURCE, position_text(pos)));
                (None, event.creation_date.map_or(0, |t| t.as_millis()))
            }
            Output::Late { event, window, pos } => {
                headers.push((header::WINDOW_START, ms_bytes(window.start.as_millis())));
                headers.push((header::WINDOW_END, ms_bytes(window.end.as_millis())));
                headers.push((header::SOURCE, position_text(pos)));
                (None, event.time().map_or(0, |t| t.as_millis()))
            }
        };
        if let Some(env) = scope_of(out).and_then(|s| s.env.as_ref()) {
            headers.push((header::ENV, Bytes48::from_slice(env.as_bytes())));
        }
        Ok(Record {
            kind,
            id,
            key,
            value,
            headers,
            timestamp_ms,
        })
    }
}

fn ms_bytes(ms: i64) -> Bytes48 {
    Bytes48::from_slice(itoa::Buffer::new().format(ms).as_bytes())
}

/// `topic/partition`, as [`crate::window::PartitionId`] displays it, without
/// `core::fmt` (once per output record) and without a heap allocation when it fits.
fn partition_text(p: &crate::window::PartitionId) -> Bytes48 {
    let mut out = Bytes48::new();
    out.extend_from_slice(p.topic.as_bytes());
    out.push(b'/');
    out.extend_from_slice(itoa::Buffer::new().format(p.partition).as_bytes());
    out
}

/// `topic/partition/offset#index`, as [`SourcePos`] displays it.
fn position_text(pos: &SourcePos) -> Bytes48 {
    let mut out = partition_text(&pos.partition);
    out.push(b'/');
    out.extend_from_slice(itoa::Buffer::new().format(pos.offset).as_bytes());
    out.push(b'#');
    out.extend_from_slice(itoa::Buffer::new().format(pos.index).as_bytes());
    out
}

fn scope_of(out: &Output) -> Option<&Scope> {
    Some(match out {
        Output::Summary(s) => &s.scope,
        Output::Feature { event, .. } => &event.scope,
        Output::Index { scope, .. } => scope,
        Output::Identify { event, .. } => &event.scope,
        Output::Custom { event, .. } => &event.scope,
        Output::PassThrough { event, .. } => &event.scope,
        Output::Late { event, .. } => event.scope(),
    })
}

/// The deterministic id of an output: a version-8 UUID holding the XXH3-128 hash of
/// the output's provenance, each field length-prefixed so no two provenances collide
/// by concatenation.
pub fn record_id(out: &Output) -> Uuid {
    let mut h = Xxh3::new();
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b"flagtally/1");
    field(OutputKind::of(out).name().as_bytes());
    match out {
        Output::Summary(s) => {
            field(s.scope.project.as_deref().unwrap_or("").as_bytes());
            field(s.scope.env.as_deref().unwrap_or("").as_bytes());
            field(s.flag_key.as_bytes());
            field(&s.window.start.as_millis().to_le_bytes());
            field(&s.window.end.as_millis().to_le_bytes());
            field(s.partition.topic.as_bytes());
            field(&s.partition.partition.to_le_bytes());
            field(&[u8::from(s.late)]);
            field(&s.part.to_le_bytes());
            if s.late {
                // Several corrections of one window are told apart by where they start
                // (a record holding a batch can start two).
                field(&s.first_offset.to_le_bytes());
                field(&s.first_index.to_le_bytes());
            }
            if s.epoch > 0 {
                // Ids of epoch 0 are those from before epochs existed.
                field(b"epoch");
                field(&s.epoch.to_le_bytes());
            }
        }
        other => {
            if let Some(SourcePos {
                partition,
                offset,
                index,
            }) = other.pos()
            {
                field(partition.topic.as_bytes());
                field(&partition.partition.to_le_bytes());
                field(&offset.to_le_bytes());
                field(&index.to_le_bytes());
            }
        }
    }
    Uuid::new_v8(h.digest128().to_be_bytes())
}

/// The id of the dead letter standing in for an output the broker refused (too large,
/// invalid, not authorized): derived from the refused record's own id, so a replay
/// sets the same record aside under the same id.
pub fn refused_id(output_id: &str) -> Uuid {
    let mut h = Xxh3::new();
    for bytes in [b"flagtally/1".as_slice(), b"refused", output_id.as_bytes()] {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    Uuid::new_v8(h.digest128().to_be_bytes())
}

/// The deterministic id of a dead letter: the input record it carries.
pub fn dead_letter_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    let mut h = Xxh3::new();
    for bytes in [
        b"flagtally/1".as_slice(),
        b"dead-letter",
        topic.as_bytes(),
        &partition.to_le_bytes(),
        &offset.to_le_bytes(),
    ] {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    Uuid::new_v8(h.digest128().to_be_bytes())
}

/// The topic of each output kind (`[output.topics]`); a kind without one is not
/// computed.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
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

impl Topics {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::PartitionId;

    /// The source header's text is what `Display` writes, extremes included.
    #[test]
    fn source_texts_match_display() {
        for (topic, partition, offset, index) in [
            ("events", 0, 0, 0),
            ("a.b-c_d", 7, 123_456_789, 41),
            ("t", i32::MAX, i64::MAX, u32::MAX),
            (
                "a-topic-name-long-enough-to-spill-past-forty-eight-bytes",
                -1,
                -1,
                3,
            ),
        ] {
            let pos = SourcePos {
                partition: PartitionId::new(topic, partition),
                offset,
                index,
            };
            assert_eq!(position_text(&pos).as_slice(), pos.to_string().as_bytes());
            assert_eq!(
                partition_text(&pos.partition).as_slice(),
                pos.partition.to_string().as_bytes()
            );
        }
        assert_eq!(ms_bytes(-5).as_slice(), b"-5");
    }
}
