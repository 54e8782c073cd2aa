//! Avro output: every [`Output`] kind as a record of its schema in `schemas/`, written
//! as Avro single-object encoding (`0xC3 0x01`, the schema's 8-byte CRC-64-AVRO
//! fingerprint, little-endian, then the datum), and read back.
//!
//! Each record holds the LaunchDarkly event field for field (JSON payloads as strings
//! of compact JSON text) plus the provenance warehouses need (window bounds, late,
//! input partition, env/project). The tests read every record back (`reader`, test
//! code) as the LaunchDarkly JSON event the JSON emitter writes for the same output.
//!
//! | kind | schema |
//! |---|---|
//! | summary | `summary.avsc` (one flag per record) |
//! | feature, debug | `feature.avsc` (`kind` says which) |
//! | index, identify, custom | `index.avsc`, `identify.avsc`, `custom.avsc` |
//! | passthrough | `passthrough.avsc` (`{kind, creationDate?, body}`) |
//! | late | `late.avsc` (the canonical `event.avsc` record + window bounds) |
//!
//! Records are written field by field in schema order ([`crate::avro::wire`]); tests
//! check every kind byte for byte against apache-avro, which also reads them back.
//! The schemas themselves live in [`crate::avro::schemas`].

use apache_avro::Schema;

use super::{EmitError, OutputKind};
use crate::avro::schemas::Record;
use crate::avro::{self, Parsed, wire};
use crate::event::{Contexts, EventTime, Json, Scope};
use crate::window::{CloseReason, Output};

/// The schema each output kind is written with.
pub fn record(kind: OutputKind) -> Record {
    match kind {
        OutputKind::Summary => Record::Summary,
        OutputKind::Feature | OutputKind::Debug => Record::Feature,
        OutputKind::Index => Record::Index,
        OutputKind::Identify => Record::Identify,
        OutputKind::Custom => Record::Custom,
        OutputKind::PassThrough => Record::PassThrough,
        OutputKind::Late => Record::Late,
    }
}

/// The Schema Registry ids of the output schemas, by kind: a kind with one is written
/// in the Confluent wire format (`0x00`, the id as 4 big-endian bytes, the datum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchemaIds([Option<u32>; OutputKind::ALL.len()]);

impl SchemaIds {
    pub fn set(&mut self, kind: OutputKind, id: u32) {
        self.0[kind as usize] = Some(id);
    }

    pub fn get(&self, kind: OutputKind) -> Option<u32> {
        self.0[kind as usize]
    }
}

/// How each kind's records begin: the single-object header (10 bytes) or the
/// Confluent wire format's (5 bytes).
#[derive(Clone, Copy, Debug)]
pub struct Schemas {
    headers: [([u8; 10], u8); OutputKind::ALL.len()],
}

impl Schemas {
    /// The embedded schemas, framed as single-object encoding, or in the Confluent
    /// wire format for the kinds `ids` names. A schema that failed to parse (which a
    /// test rules out) makes every `encode` fail with [`EmitError::Avro`].
    pub fn load(ids: Option<&SchemaIds>) -> Self {
        let mut headers = [([0u8; 10], 0u8); OutputKind::ALL.len()];
        for kind in OutputKind::ALL {
            let slot = &mut headers[kind as usize];
            if let Some(id) = ids.and_then(|ids| ids.get(kind)) {
                slot.0[0] = avro::CONFLUENT_MAGIC;
                slot.0[1..5].copy_from_slice(&id.to_be_bytes());
                slot.1 = 5;
            } else if let Ok(parsed) = record(kind).parsed() {
                slot.0 = parsed.header;
                slot.1 = 10;
            }
        }
        Self { headers }
    }

    /// The `.avsc` text of a kind's schema, e.g. for an Avro container file's header.
    pub fn schema_text(kind: OutputKind) -> &'static str {
        record(kind).text()
    }

    /// The parsed schema of a kind.
    pub fn schema(&self, kind: OutputKind) -> Result<&'static Schema, EmitError> {
        self.get(kind).map(|p| &p.schema)
    }

    /// The 8-byte CRC-64-AVRO (Rabin) fingerprint of a kind's schema, little-endian,
    /// as it appears in the single-object header.
    pub fn fingerprint(&self, kind: OutputKind) -> Result<[u8; 8], EmitError> {
        let p = self.get(kind)?;
        let mut out = [0u8; 8];
        out.copy_from_slice(p.fingerprint());
        Ok(out)
    }

    fn get(&self, kind: OutputKind) -> Result<&'static Parsed, EmitError> {
        record(kind).parsed().map_err(|e| error(kind, e))
    }

    /// Encodes one output with its kind's schema and framing.
    pub fn encode(&self, out: &Output) -> Result<Vec<u8>, EmitError> {
        let kind = OutputKind::of(out);
        self.get(kind)?;
        let (header, len) = &self.headers[kind as usize];
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&header[..usize::from(*len)]);
        write_output(out, &mut buf);
        Ok(buf)
    }
}

fn error(kind: OutputKind, detail: impl ToString) -> EmitError {
    EmitError::Avro {
        kind: kind.name(),
        detail: detail.to_string(),
    }
}

// ------------------------------------------------------------------------------------
// Output → datum, in each schema's field order

fn write_output(out: &Output, buf: &mut Vec<u8>) {
    let time = |buf: &mut Vec<u8>, t: EventTime| wire::long(buf, t.as_millis());
    let json = |buf: &mut Vec<u8>, j: Option<&Json>| wire::opt_string(buf, j.map(Json::as_str));
    let context = |buf: &mut Vec<u8>, c: &Contexts, redact_anonymous: bool| {
        let mut text = Vec::with_capacity(128);
        super::launchdarkly::context(&mut text, c, redact_anonymous);
        wire::string(buf, &String::from_utf8_lossy(&text));
    };
    let scope = |buf: &mut Vec<u8>, s: &Scope| {
        wire::opt_string(buf, s.env.as_deref());
        wire::opt_string(buf, s.project.as_deref());
    };
    match out {
        Output::Summary(s) => {
            time(buf, s.start_date);
            time(buf, s.end_date);
            wire::string(buf, &s.flag_key);
            wire::string(buf, s.default.as_str());
            wire::array(buf, &s.counters, |buf, c| {
                wire::variation_pair(buf, c.variation.as_ref());
                wire::version(buf, c.version.as_ref());
                wire::string(buf, c.value.as_str());
                wire::count(buf, c.count);
            });
            wire::array(buf, &s.context_kinds, |buf, k| wire::string(buf, k));
            time(buf, s.window.start);
            time(buf, s.window.end);
            wire::boolean(buf, s.late);
            wire::boolean(buf, s.reason == CloseReason::Early);
            wire::string(buf, &s.partition.to_string());
            scope(buf, &s.scope);
        }
        Output::Feature {
            event: e, debug, ..
        } => {
            wire::long(buf, i64::from(*debug)); // FeatureKind: feature, debug
            time(buf, e.creation_date);
            wire::string(buf, &e.flag_key);
            wire::version(buf, e.version.as_ref());
            context(buf, &e.context, !*debug);
            wire::variation_pair(buf, e.variation.as_ref());
            wire::string(buf, e.value.as_str());
            json(buf, e.default.as_ref());
            wire::opt_string(buf, e.prereq_of.as_deref());
            json(buf, e.reason.as_ref());
            wire::opt_long(
                buf,
                e.sampling_ratio
                    .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            );
            scope(buf, &e.scope);
        }
        Output::Index {
            scope: s,
            context: c,
            creation_date,
            ..
        } => {
            time(buf, *creation_date);
            context(buf, c, false);
            scope(buf, s);
        }
        Output::Identify { event: e, .. } => {
            time(buf, e.creation_date);
            context(buf, &e.context, false);
            wire::opt_long(
                buf,
                e.sampling_ratio
                    .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            );
            scope(buf, &e.scope);
        }
        Output::Custom { event: e, .. } => {
            time(buf, e.creation_date);
            wire::string(buf, &e.key);
            json(buf, e.data.as_ref());
            wire::string(buf, e.context.keys_object().as_str());
            wire::opt_double(buf, e.metric_value);
            wire::opt_long(
                buf,
                e.sampling_ratio
                    .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            );
            scope(buf, &e.scope);
        }
        Output::PassThrough { event: e, .. } => {
            wire::string(buf, &e.kind);
            wire::opt_long(buf, e.creation_date.map(EventTime::as_millis));
            wire::string(buf, e.body.as_str());
            scope(buf, &e.scope);
        }
        Output::Late { event, window, .. } => {
            avro::event::write_event(event, buf);
            time(buf, window.start);
            time(buf, window.end);
        }
    }
}

#[cfg(test)]
mod reader;
#[cfg(test)]
mod tests;
