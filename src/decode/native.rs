//! The native dialect: flagtally's canonical [`Event`], as JSON or as Avro.
//!
//! - **JSON** (`native`): the serde form of [`Event`], tagged by `"type"`; one object or
//!   an array of them, each element decoded on its own (`[3].context.keys`).
//! - **Avro** (`native-avro`): one record of `schemas/event.avsc` per Kafka record, in
//!   the Confluent wire format (`0x00`, a 4-byte big-endian schema id, the datum; any
//!   id is accepted, since there is one native schema) or Avro single-object encoding
//!   (`0xC3 0x01`, the schema's 8-byte CRC-64-AVRO fingerprint, the datum; the
//!   fingerprint must be `event.avsc`'s). [`encode_avro`] writes the latter.
//!
//! Both forms end in the same [`validate`]: bounded, non-empty keys, sorted distinct
//! contexts, sane times. Invariant: for every valid event, `encode_avro` and
//! `serde_json::to_vec` both round-trip to an equal [`Event`].

use std::borrow::Cow;
use std::io::Read;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use compact_str::CompactString;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::util::{at, parse};
use super::{DecodeError, Decoded, Dialect, Limits, Reason};
use crate::event::{
    ContextEvent, ContextKey, Contexts, Custom, Evaluation, Event, EventTime, FlagVersion, Json,
    PassThrough, Scope, Summary, SummaryCounter, SummaryFlag, VariationRef,
};

/// The text of `schemas/event.avsc`.
pub const EVENT_SCHEMA: &str = include_str!("../../schemas/event.avsc");

/// The first byte of the Confluent wire format.
const CONFLUENT_MAGIC: u8 = 0x00;
/// The first two bytes of Avro single-object encoding (v1).
pub(crate) const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Latest accepted time (JavaScript's limit, as in [`EventTime::from_unit`]).
const MAX_MILLIS: i64 = 8_640_000_000_000_000;

/// A parsed schema and its single-object header.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub schema: Schema,
    /// `0xC3 0x01` + the 8-byte little-endian Rabin fingerprint.
    pub header: [u8; 10],
}

impl Parsed {
    /// Parses `text` (an embedded schema; a test proves each one parses).
    pub(crate) fn new(name: &str, text: &str) -> Result<Self, String> {
        let schema = Schema::parse_str(text).map_err(|e| format!("{name}: {e}"))?;
        let fingerprint = schema.fingerprint::<Rabin>();
        let mut header = [0u8; 10];
        header[..2].copy_from_slice(&SINGLE_OBJECT_MAGIC);
        if fingerprint.bytes.len() != 8 {
            return Err(format!("{name}: Rabin fingerprint is not 8 bytes"));
        }
        header[2..].copy_from_slice(&fingerprint.bytes);
        Ok(Self { schema, header })
    }

    pub(crate) fn fingerprint(&self) -> &[u8] {
        &self.header[2..]
    }

    /// Writes `value` as single-object encoding.
    pub(crate) fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&self.header);
        GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|w| w.write_value_ref(&mut buf, value))
            .map_err(|e| e.to_string())?;
        Ok(buf)
    }

    /// Reads one datum that must fill `datum` exactly.
    pub(crate) fn read_datum(&self, datum: &[u8]) -> Result<Value, String> {
        let mut reader = Exact {
            rest: datum,
            hit_end: false,
        };
        let value = GenericDatumReader::builder(&self.schema)
            .build()
            .and_then(|r| r.read_value(&mut reader))
            .map_err(|e| {
                if reader.hit_end {
                    format!("the datum is truncated ({} bytes): {e}", datum.len())
                } else {
                    e.to_string()
                }
            })?;
        if reader.hit_end {
            return Err(format!("the datum is truncated ({} bytes)", datum.len()));
        }
        if !reader.rest.is_empty() {
            return Err(format!(
                "{} unread bytes after the datum",
                reader.rest.len()
            ));
        }
        Ok(value)
    }
}

/// A byte-slice reader that refuses, and remembers, any read past its end.
///
/// apache-avro reads only with `read_exact`, so a short read is always a truncated
/// datum. Failing with `InvalidData` (not `UnexpectedEof`, which apache-avro turns
/// into a null for strings, booleans and unions) stops decoding at the first one.
struct Exact<'a> {
    rest: &'a [u8],
    hit_end: bool,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rest.len() < buf.len() {
            self.hit_end = true;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "read past the end of the datum",
            ));
        }
        self.rest.read(buf)
    }
}

/// Lower-case hex of a fingerprint, in wire order.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

static EVENT: LazyLock<Result<Parsed, String>> =
    LazyLock::new(|| Parsed::new("event.avsc", EVENT_SCHEMA));

pub(crate) fn event_schema() -> Result<&'static Parsed, String> {
    EVENT.as_ref().map_err(Clone::clone)
}

// ------------------------------------------------------------------------------------
// JSON

/// The tag, and the flattened scope fields: read here first because serde's tagged and
/// flattened structs buffer their content, which loses the path of a bad field.
#[derive(Deserialize)]
#[allow(dead_code)] // `env`/`project` are read only for their type errors.
struct Tag<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    env: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    project: Option<Cow<'a, str>>,
}

/// Decodes native JSON: one event object, or an array of them.
pub(crate) fn decode_json(value: &[u8], limits: &Limits, out: &mut Decoded) {
    let d = Dialect::Native;
    if value.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let items: Vec<&RawValue> = match parse(d, "", value) {
            Ok(items) => items,
            Err(e) => return out.errors.push(e),
        };
        for (i, raw) in items.iter().enumerate() {
            push(
                json_event(raw.get().as_bytes(), &format!("[{i}]"), limits),
                out,
            );
        }
    } else {
        push(json_event(value, "", limits), out);
    }
}

fn push(result: Result<Event, DecodeError>, out: &mut Decoded) {
    match result {
        Ok(event) => out.events.push(event),
        Err(e) => out.errors.push(e),
    }
}

fn json_event(bytes: &[u8], prefix: &str, limits: &Limits) -> Result<Event, DecodeError> {
    json_event_at(bytes, prefix, limits).map_err(|mut e| {
        // serde_path_to_error says `?` where it has no position (syntax errors).
        if let Some(p) = e.path.strip_suffix('?') {
            e.path = p.trim_end_matches('.').to_owned();
        }
        e
    })
}

fn json_event_at(bytes: &[u8], prefix: &str, limits: &Limits) -> Result<Event, DecodeError> {
    let d = Dialect::Native;
    // The tag first, then the variant's own struct.
    let tag: Tag<'_> = parse(d, prefix, bytes)?;
    let Some(ty) = tag.ty else {
        return Err(DecodeError::new(d, at(prefix, "type"), Reason::Missing));
    };
    let mut event = match &*ty {
        "evaluation" => Event::Evaluation(variant(prefix, bytes)?),
        "custom" => Event::Custom(variant(prefix, bytes)?),
        "identify" => Event::Identify(variant(prefix, bytes)?),
        "index" => Event::Index(variant(prefix, bytes)?),
        "summary" => Event::Summary(variant(prefix, bytes)?),
        "passThrough" => Event::PassThrough(variant(prefix, bytes)?),
        other => {
            return Err(DecodeError::new(
                d,
                at(prefix, "type"),
                Reason::UnknownKind(other.chars().take(64).collect()),
            ));
        }
    };
    validate(&mut event, d, prefix, limits)?;
    Ok(event)
}

/// Parses one variant's struct. A missing field's path names the field itself (serde
/// reports it at the enclosing object).
fn variant<'a, T: Deserialize<'a>>(prefix: &str, bytes: &'a [u8]) -> Result<T, DecodeError> {
    parse(Dialect::Native, prefix, bytes).map_err(|mut e| {
        if e.reason == Reason::Missing
            && let Err(err) = serde_json::from_slice::<T>(bytes)
            && let Some(name) = err
                .to_string()
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name)
        {
            e.path = at(&e.path, name);
        }
        e
    })
}

// ------------------------------------------------------------------------------------
// Validation, shared by both forms

/// Checks what serde and Avro cannot: bounded non-empty keys, contexts, times.
/// Normalises: contexts sorted by kind; an empty `env`/`project` is absent.
pub(crate) fn validate(
    event: &mut Event,
    d: Dialect,
    prefix: &str,
    limits: &Limits,
) -> Result<(), DecodeError> {
    let v = Check { d, prefix, limits };
    scope(&v, event.scope_mut())?;
    match event {
        Event::Evaluation(e) => {
            v.key("flagKey", &e.flag_key)?;
            if let Some(VariationRef::Name(name)) = &e.variation {
                v.key("variation", name)?;
            }
            if let Some(FlagVersion::Str(s)) = &e.version {
                v.bounded("version", s)?;
            }
            v.contexts("context", &mut e.context)?;
            v.time("creationDate", e.creation_date)?;
            if let Some(p) = &e.prereq_of {
                v.key("prereqOf", p)?;
            }
            if let Some(t) = e.debug_events_until_date {
                v.time("debugEventsUntilDate", t)?;
            }
        }
        Event::Custom(e) => {
            v.key("key", &e.key)?;
            v.contexts("context", &mut e.context)?;
            v.time("creationDate", e.creation_date)?;
            if e.metric_value.is_some_and(|m| !m.is_finite()) {
                return Err(v.err("metricValue", Reason::Invalid("not a finite number".into())));
            }
        }
        Event::Identify(e) | Event::Index(e) => {
            v.contexts("context", &mut e.context)?;
            v.time("creationDate", e.creation_date)?;
        }
        Event::Summary(s) => {
            v.time("startDate", s.start_date)?;
            v.time("endDate", s.end_date)?;
            if s.start_date > s.end_date {
                return Err(v.err(
                    "endDate",
                    Reason::Invalid(format!(
                        "{} is before startDate {}",
                        s.end_date, s.start_date
                    )),
                ));
            }
            for (i, f) in s.features.iter().enumerate() {
                let p = format!("features[{i}]");
                v.key(&at(&p, "key"), &f.key)?;
                for (j, c) in f.counters.iter().enumerate() {
                    if let Some(VariationRef::Name(name)) = &c.variation {
                        v.key(&format!("{p}.counters[{j}].variation"), name)?;
                    }
                    if let Some(FlagVersion::Str(s)) = &c.version {
                        v.bounded(&format!("{p}.counters[{j}].version"), s)?;
                    }
                }
                for (j, k) in f.context_kinds.iter().enumerate() {
                    v.kind(&format!("{p}.contextKinds[{j}]"), k)?;
                }
            }
        }
        Event::PassThrough(p) => {
            v.key("kind", &p.kind)?;
            if let Some(t) = p.creation_date {
                v.time("creationDate", t)?;
            }
        }
    }
    Ok(())
}

fn scope(v: &Check<'_>, scope: &mut Scope) -> Result<(), DecodeError> {
    for (name, field) in [("project", &mut scope.project), ("env", &mut scope.env)] {
        match field {
            Some(s) if s.is_empty() => *field = None,
            Some(s) => v.key(name, s)?,
            None => {}
        }
    }
    Ok(())
}

struct Check<'a> {
    d: Dialect,
    prefix: &'a str,
    limits: &'a Limits,
}

impl Check<'_> {
    fn err(&self, field: &str, reason: Reason) -> DecodeError {
        DecodeError::new(self.d, at(self.prefix, field), reason)
    }

    /// At most `max_key_bytes` (may be empty).
    fn bounded(&self, field: &str, s: &str) -> Result<(), DecodeError> {
        if s.len() > self.limits.max_key_bytes {
            return Err(self.err(
                field,
                Reason::StringTooLong {
                    len: s.len(),
                    limit: self.limits.max_key_bytes,
                },
            ));
        }
        Ok(())
    }

    /// Non-empty, at most `max_key_bytes`.
    fn key(&self, field: &str, s: &str) -> Result<(), DecodeError> {
        if s.is_empty() {
            return Err(self.err(field, Reason::Invalid("must not be empty".into())));
        }
        self.bounded(field, s)
    }

    /// A context kind: a key of ASCII letters, digits, `.`, `_` and `-`, not `kind`
    /// or `multi` (LaunchDarkly's rule).
    fn kind(&self, field: &str, s: &str) -> Result<(), DecodeError> {
        self.key(field, s)?;
        let ok = s != "kind"
            && s != "multi"
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(self.err(
                field,
                Reason::Invalid(format!("{s:?} is not a valid context kind")),
            ));
        }
        Ok(())
    }

    fn time(&self, field: &str, t: EventTime) -> Result<(), DecodeError> {
        if !(0..=MAX_MILLIS).contains(&t.as_millis()) {
            return Err(self.err(
                field,
                Reason::Invalid(format!(
                    "{} is not a timestamp in epoch ms (negative or out of range)",
                    t.as_millis()
                )),
            ));
        }
        Ok(())
    }

    fn contexts(&self, field: &str, c: &mut Contexts) -> Result<(), DecodeError> {
        let keys_path = at(field, "keys");
        if c.keys.is_empty() {
            return Err(self.err(
                &keys_path,
                Reason::Invalid("at least one context is needed".into()),
            ));
        }
        for (i, k) in c.keys.iter().enumerate() {
            let p = format!("{keys_path}[{i}]");
            self.kind(&at(&p, "kind"), &k.kind)?;
            self.key(&at(&p, "key"), &k.key)?;
        }
        c.keys.sort();
        if let Some(pair) = c.keys.windows(2).find(|w| w[0].kind == w[1].kind) {
            return Err(self.err(
                &keys_path,
                Reason::Invalid(format!("context kind {:?} appears twice", pair[0].kind)),
            ));
        }
        if let Some(body) = &c.body
            && !body.as_str().starts_with('{')
        {
            return Err(self.err(
                &at(field, "body"),
                Reason::WrongType {
                    expected: "an object",
                    found: body.as_str().chars().take(40).collect(),
                },
            ));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------
// Avro

/// Decodes one native Avro record (Confluent wire format or single-object encoding).
pub(crate) fn decode_avro(value: &[u8], limits: &Limits, out: &mut Decoded) {
    push(avro_event(value, limits), out);
}

fn avro_err(reason: impl Into<String>) -> DecodeError {
    DecodeError::new(Dialect::NativeAvro, "", Reason::Avro(reason.into()))
}

fn avro_event(value: &[u8], limits: &Limits) -> Result<Event, DecodeError> {
    let d = Dialect::NativeAvro;
    let native = event_schema().map_err(avro_err)?;
    let datum = match value {
        [] => return Err(DecodeError::new(d, "", Reason::Empty)),
        [CONFLUENT_MAGIC, rest @ ..] => rest.get(4..).ok_or_else(|| {
            avro_err(format!(
                "Confluent wire format: the 0x00 magic byte must be followed by a 4-byte \
                 schema id, but the record has {} bytes",
                value.len()
            ))
        })?,
        [0xC3, 0x01, rest @ ..] => {
            let Some(fingerprint) = rest.get(..8) else {
                return Err(avro_err(format!(
                    "single-object encoding: the 0xC3 0x01 marker must be followed by an \
                     8-byte schema fingerprint, but the record has {} bytes",
                    value.len()
                )));
            };
            if fingerprint != native.fingerprint() {
                return Err(avro_err(format!(
                    "single-object encoding: schema fingerprint {} is not event.avsc's {} \
                     (CRC-64-AVRO, little-endian)",
                    hex(fingerprint),
                    hex(native.fingerprint())
                )));
            }
            &rest[8..]
        }
        [first, ..] => {
            return Err(avro_err(format!(
                "not a framed Avro record: starts with 0x{first:02x}, expected 0x00 \
                 (Confluent wire format) or 0xC3 0x01 (single-object encoding)"
            )));
        }
    };
    let datum = native.read_datum(datum).map_err(avro_err)?;
    let mut event = event_from_value(datum, "").map_err(|p| p.into_decode_error(d))?;
    validate(&mut event, d, "", limits)?;
    Ok(event)
}

/// Encodes `event` as native Avro: single-object encoding with `schemas/event.avsc`.
///
/// Counts and sampling ratios above `i64::MAX` are written as `i64::MAX` (Avro has no
/// unsigned long). Empty only if `event.avsc` does not parse, which a test rules out.
pub fn encode_avro(event: &Event) -> Vec<u8> {
    event_schema()
        .and_then(|s| s.encode(&event_to_value(event)))
        .unwrap_or_default()
}

// --- Event → Avro value -------------------------------------------------------------

pub(crate) fn null() -> Value {
    Value::Union(0, Box::new(Value::Null))
}

/// A `["null", "string"]` value.
pub(crate) fn opt_string(s: Option<&str>) -> Value {
    match s {
        None => null(),
        Some(s) => Value::Union(1, Box::new(Value::String(s.to_owned()))),
    }
}

/// A `["null", "long"]` value.
pub(crate) fn opt_long(n: Option<i64>) -> Value {
    match n {
        None => null(),
        Some(n) => Value::Union(1, Box::new(Value::Long(n))),
    }
}

/// A `["null", "long", "string"]` version.
pub(crate) fn version_value(v: Option<&FlagVersion>) -> Value {
    match v {
        None => null(),
        Some(FlagVersion::Int(n)) => Value::Union(1, Box::new(Value::Long(*n))),
        Some(FlagVersion::Str(s)) => Value::Union(2, Box::new(Value::String(s.to_string()))),
    }
}

fn variation_value(v: Option<&VariationRef>) -> Value {
    match v {
        None => null(),
        Some(VariationRef::Index(i)) => Value::Union(1, Box::new(Value::Long(i64::from(*i)))),
        Some(VariationRef::Name(s)) => Value::Union(2, Box::new(Value::String(s.to_string()))),
    }
}

pub(crate) fn saturating(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn json_opt(j: Option<&Json>) -> Value {
    opt_string(j.map(Json::as_str))
}

fn contexts_value(c: &Contexts) -> Value {
    let keys = c
        .keys
        .iter()
        .map(|k| {
            Value::Record(vec![
                ("kind".into(), Value::String(k.kind.to_string())),
                ("key".into(), Value::String(k.key.to_string())),
            ])
        })
        .collect();
    Value::Union(
        1,
        Box::new(Value::Record(vec![
            ("keys".into(), Value::Array(keys)),
            ("body".into(), json_opt(c.body.as_ref())),
        ])),
    )
}

const TYPES: [&str; 6] = [
    "evaluation",
    "custom",
    "identify",
    "index",
    "summary",
    "passThrough",
];

/// The fields of an `event.avsc` record, all unset, in schema order.
struct EventRecord {
    fields: Vec<(String, Value)>,
}

impl EventRecord {
    fn new(ty: usize, scope: &Scope) -> Self {
        let mut fields: Vec<(String, Value)> = [
            "type",
            "project",
            "env",
            "flagKey",
            "key",
            "kind",
            "creationDate",
            "variation",
            "version",
            "value",
            "default",
            "context",
            "reason",
            "inExperiment",
            "prereqOf",
            "trackEvents",
            "debugEventsUntilDate",
            "samplingRatio",
            "excludeFromSummaries",
            "debug",
            "meta",
            "data",
            "metricValue",
            "startDate",
            "endDate",
            "features",
            "body",
        ]
        .into_iter()
        .map(|name| {
            let v = match name {
                "inExperiment" | "excludeFromSummaries" | "debug" => Value::Boolean(false),
                "features" => Value::Array(Vec::new()),
                _ => null(),
            };
            (name.to_owned(), v)
        })
        .collect();
        fields[0].1 = Value::Enum(ty as u32, TYPES[ty].to_owned());
        fields[1].1 = opt_string(scope.project.as_deref());
        fields[2].1 = opt_string(scope.env.as_deref());
        Self { fields }
    }

    fn set(&mut self, name: &str, value: Value) {
        if let Some(slot) = self.fields.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
        }
    }

    fn set_str(&mut self, name: &str, s: &str) {
        self.set(name, opt_string(Some(s)));
    }

    fn set_time(&mut self, name: &str, t: EventTime) {
        self.set(name, opt_long(Some(t.as_millis())));
    }
}

/// Converts an event to an `event.avsc` record.
pub(crate) fn event_to_value(event: &Event) -> Value {
    let ty = match event {
        Event::Evaluation(_) => 0,
        Event::Custom(_) => 1,
        Event::Identify(_) => 2,
        Event::Index(_) => 3,
        Event::Summary(_) => 4,
        Event::PassThrough(_) => 5,
    };
    let mut r = EventRecord::new(ty, event.scope());
    match event {
        Event::Evaluation(e) => {
            r.set_str("flagKey", &e.flag_key);
            r.set_time("creationDate", e.creation_date);
            r.set("variation", variation_value(e.variation.as_ref()));
            r.set("version", version_value(e.version.as_ref()));
            r.set_str("value", e.value.as_str());
            r.set("default", json_opt(e.default.as_ref()));
            r.set("context", contexts_value(&e.context));
            r.set("reason", json_opt(e.reason.as_ref()));
            r.set("inExperiment", Value::Boolean(e.in_experiment));
            r.set("prereqOf", opt_string(e.prereq_of.as_deref()));
            r.set(
                "trackEvents",
                match e.track_events {
                    None => null(),
                    Some(b) => Value::Union(1, Box::new(Value::Boolean(b))),
                },
            );
            r.set(
                "debugEventsUntilDate",
                opt_long(e.debug_events_until_date.map(EventTime::as_millis)),
            );
            r.set("samplingRatio", opt_long(e.sampling_ratio.map(saturating)));
            r.set(
                "excludeFromSummaries",
                Value::Boolean(e.exclude_from_summaries),
            );
            r.set("debug", Value::Boolean(e.debug));
            r.set("meta", json_opt(e.meta.as_ref()));
        }
        Event::Custom(e) => {
            r.set_str("key", &e.key);
            r.set("context", contexts_value(&e.context));
            r.set("data", json_opt(e.data.as_ref()));
            r.set(
                "metricValue",
                match e.metric_value {
                    None => null(),
                    Some(m) => Value::Union(1, Box::new(Value::Double(m))),
                },
            );
            r.set_time("creationDate", e.creation_date);
            r.set("samplingRatio", opt_long(e.sampling_ratio.map(saturating)));
        }
        Event::Identify(e) | Event::Index(e) => {
            r.set("context", contexts_value(&e.context));
            r.set_time("creationDate", e.creation_date);
            r.set("samplingRatio", opt_long(e.sampling_ratio.map(saturating)));
        }
        Event::Summary(s) => {
            r.set_time("startDate", s.start_date);
            r.set_time("endDate", s.end_date);
            let features = s
                .features
                .iter()
                .map(|f| {
                    let counters = f
                        .counters
                        .iter()
                        .map(|c| {
                            Value::Record(vec![
                                ("variation".into(), variation_value(c.variation.as_ref())),
                                ("version".into(), version_value(c.version.as_ref())),
                                ("value".into(), Value::String(c.value.as_str().to_owned())),
                                ("count".into(), Value::Long(saturating(c.count))),
                            ])
                        })
                        .collect();
                    let kinds = f
                        .context_kinds
                        .iter()
                        .map(|k| Value::String(k.to_string()))
                        .collect();
                    Value::Record(vec![
                        ("key".into(), Value::String(f.key.to_string())),
                        ("default".into(), json_opt(f.default.as_ref())),
                        ("counters".into(), Value::Array(counters)),
                        ("contextKinds".into(), Value::Array(kinds)),
                    ])
                })
                .collect();
            r.set("features", Value::Array(features));
        }
        Event::PassThrough(p) => {
            r.set_str("kind", &p.kind);
            r.set_str("body", p.body.as_str());
            r.set(
                "creationDate",
                opt_long(p.creation_date.map(EventTime::as_millis)),
            );
        }
    }
    Value::Record(r.fields)
}

// --- Avro value → Event -------------------------------------------------------------

/// What is wrong with a field of a decoded Avro record.
#[derive(Debug)]
pub(crate) struct Problem {
    pub path: String,
    pub reason: Reason,
}

impl Problem {
    pub(crate) fn into_decode_error(self, d: Dialect) -> DecodeError {
        DecodeError::new(d, self.path, self.reason)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

fn unexpected(path: String, expected: &'static str, found: &Value) -> Problem {
    let found = format!("{found:?}").chars().take(60).collect();
    Problem {
        path,
        reason: Reason::WrongType { expected, found },
    }
}

/// A decoded Avro record, read field by field (each field once).
#[derive(Debug)]
pub(crate) struct Fields {
    path: String,
    fields: Vec<(String, Value)>,
}

impl Fields {
    pub(crate) fn new(value: Value, path: &str) -> Result<Self, Problem> {
        match value {
            Value::Record(fields) => Ok(Self {
                path: path.to_owned(),
                fields,
            }),
            other => Err(unexpected(path.to_owned(), "a record", &other)),
        }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        at(&self.path, name)
    }

    /// The field's value, with a union unwrapped (`Null` when absent).
    pub(crate) fn take(&mut self, name: &str) -> Value {
        let v = self
            .fields
            .iter_mut()
            .find(|(n, _)| n == name)
            .map_or(Value::Null, |(_, v)| std::mem::replace(v, Value::Null));
        match v {
            Value::Union(_, inner) => *inner,
            v => v,
        }
    }

    fn missing(&self, name: &str) -> Problem {
        Problem {
            path: self.path(name),
            reason: Reason::Missing,
        }
    }

    pub(crate) fn opt_str(&mut self, name: &str) -> Result<Option<String>, Problem> {
        match self.take(name) {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(unexpected(self.path(name), "a string", &other)),
        }
    }

    pub(crate) fn str(&mut self, name: &str) -> Result<String, Problem> {
        self.opt_str(name)?.ok_or_else(|| self.missing(name))
    }

    pub(crate) fn opt_key(&mut self, name: &str) -> Result<Option<CompactString>, Problem> {
        Ok(self.opt_str(name)?.map(CompactString::from))
    }

    pub(crate) fn key(&mut self, name: &str) -> Result<CompactString, Problem> {
        self.str(name).map(CompactString::from)
    }

    /// A string holding JSON text.
    pub(crate) fn opt_json(&mut self, name: &str) -> Result<Option<Json>, Problem> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(text) => Json::parse(&text).map(Some).map_err(|e| Problem {
                path: self.path(name),
                reason: Reason::Syntax(e.to_string()),
            }),
        }
    }

    pub(crate) fn json(&mut self, name: &str) -> Result<Json, Problem> {
        self.opt_json(name)?.ok_or_else(|| self.missing(name))
    }

    pub(crate) fn opt_long(&mut self, name: &str) -> Result<Option<i64>, Problem> {
        match self.take(name) {
            Value::Null => Ok(None),
            Value::Long(n) => Ok(Some(n)),
            Value::Int(n) => Ok(Some(i64::from(n))),
            other => Err(unexpected(self.path(name), "a long", &other)),
        }
    }

    pub(crate) fn opt_unsigned(&mut self, name: &str) -> Result<Option<u64>, Problem> {
        match self.opt_long(name)? {
            None => Ok(None),
            Some(n) => u64::try_from(n).map(Some).map_err(|_| Problem {
                path: self.path(name),
                reason: Reason::Invalid(format!("{n} is negative")),
            }),
        }
    }

    pub(crate) fn opt_time(&mut self, name: &str) -> Result<Option<EventTime>, Problem> {
        Ok(self.opt_long(name)?.map(EventTime::from_millis))
    }

    pub(crate) fn time(&mut self, name: &str) -> Result<EventTime, Problem> {
        self.opt_time(name)?.ok_or_else(|| self.missing(name))
    }

    pub(crate) fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, Problem> {
        match self.take(name) {
            Value::Null => Ok(None),
            Value::Boolean(b) => Ok(Some(b)),
            other => Err(unexpected(self.path(name), "a boolean", &other)),
        }
    }

    pub(crate) fn bool(&mut self, name: &str) -> Result<bool, Problem> {
        self.opt_bool(name)?.ok_or_else(|| self.missing(name))
    }

    pub(crate) fn opt_double(&mut self, name: &str) -> Result<Option<f64>, Problem> {
        match self.take(name) {
            Value::Null => Ok(None),
            Value::Double(n) => Ok(Some(n)),
            Value::Float(n) => Ok(Some(f64::from(n))),
            other => Err(unexpected(self.path(name), "a double", &other)),
        }
    }

    /// An enum's symbol.
    pub(crate) fn symbol(&mut self, name: &str) -> Result<String, Problem> {
        match self.take(name) {
            Value::Enum(_, s) => Ok(s),
            Value::Null => Err(self.missing(name)),
            other => Err(unexpected(self.path(name), "an enum", &other)),
        }
    }

    /// An array's items, each with its path.
    pub(crate) fn array(&mut self, name: &str) -> Result<Vec<(String, Value)>, Problem> {
        match self.take(name) {
            Value::Array(items) => {
                let p = self.path(name);
                Ok(items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{p}[{i}]"), v))
                    .collect())
            }
            other => Err(unexpected(self.path(name), "an array", &other)),
        }
    }

    pub(crate) fn opt_record(&mut self, name: &str) -> Result<Option<Fields>, Problem> {
        match self.take(name) {
            Value::Null => Ok(None),
            v => Fields::new(v, &self.path(name)).map(Some),
        }
    }

    /// A `["null", "long", "string"]` version.
    pub(crate) fn version(&mut self, name: &str) -> Result<Option<FlagVersion>, Problem> {
        match self.take(name) {
            Value::Null => Ok(None),
            Value::Long(n) => Ok(Some(FlagVersion::Int(n))),
            Value::String(s) => Ok(Some(FlagVersion::Str(s.into()))),
            other => Err(unexpected(self.path(name), "a long or a string", &other)),
        }
    }

    /// A `["null", "long", "string"]` variation: an index or a name.
    fn variation(&mut self, name: &str) -> Result<Option<VariationRef>, Problem> {
        match self.take(name) {
            Value::Null => Ok(None),
            Value::Long(n) => u32::try_from(n)
                .map(|i| Some(VariationRef::Index(i)))
                .map_err(|_| Problem {
                    path: self.path(name),
                    reason: Reason::Invalid(format!(
                        "variation index {n} is outside 0..=4294967295"
                    )),
                }),
            Value::String(s) => Ok(Some(VariationRef::Name(s.into()))),
            other => Err(unexpected(self.path(name), "a long or a string", &other)),
        }
    }

    fn contexts(&mut self, name: &str) -> Result<Contexts, Problem> {
        let mut c = self.opt_record(name)?.ok_or_else(|| self.missing(name))?;
        let keys = c
            .array("keys")?
            .into_iter()
            .map(|(p, v)| {
                let mut k = Fields::new(v, &p)?;
                Ok(ContextKey {
                    kind: k.key("kind")?,
                    key: k.key("key")?,
                })
            })
            .collect::<Result<_, Problem>>()?;
        Ok(Contexts {
            keys,
            body: c.opt_json("body")?,
        })
    }
}

/// Converts an `event.avsc` record (its path `prefix`) back to an event.
pub(crate) fn event_from_value(value: Value, prefix: &str) -> Result<Event, Problem> {
    let mut r = Fields::new(value, prefix)?;
    let ty = r.symbol("type")?;
    let scope = Scope {
        project: r.opt_key("project")?,
        env: r.opt_key("env")?,
    };
    Ok(match ty.as_str() {
        "evaluation" => Event::Evaluation(Evaluation {
            scope,
            flag_key: r.key("flagKey")?,
            variation: r.variation("variation")?,
            version: r.version("version")?,
            value: r.json("value")?,
            default: r.opt_json("default")?,
            context: r.contexts("context")?,
            creation_date: r.time("creationDate")?,
            reason: r.opt_json("reason")?,
            in_experiment: r.bool("inExperiment")?,
            prereq_of: r.opt_key("prereqOf")?,
            track_events: r.opt_bool("trackEvents")?,
            debug_events_until_date: r.opt_time("debugEventsUntilDate")?,
            sampling_ratio: r.opt_unsigned("samplingRatio")?,
            exclude_from_summaries: r.bool("excludeFromSummaries")?,
            debug: r.bool("debug")?,
            meta: r.opt_json("meta")?,
        }),
        "custom" => Event::Custom(Custom {
            scope,
            key: r.key("key")?,
            context: r.contexts("context")?,
            data: r.opt_json("data")?,
            metric_value: r.opt_double("metricValue")?,
            creation_date: r.time("creationDate")?,
            sampling_ratio: r.opt_unsigned("samplingRatio")?,
        }),
        "identify" | "index" => {
            let e = ContextEvent {
                scope,
                context: r.contexts("context")?,
                creation_date: r.time("creationDate")?,
                sampling_ratio: r.opt_unsigned("samplingRatio")?,
            };
            if ty == "identify" {
                Event::Identify(e)
            } else {
                Event::Index(e)
            }
        }
        "summary" => Event::Summary(Summary {
            scope,
            start_date: r.time("startDate")?,
            end_date: r.time("endDate")?,
            features: r
                .array("features")?
                .into_iter()
                .map(|(p, v)| summary_flag(Fields::new(v, &p)?))
                .collect::<Result<_, _>>()?,
        }),
        "passThrough" => Event::PassThrough(PassThrough {
            scope,
            kind: r.key("kind")?,
            body: r.json("body")?,
            creation_date: r.opt_time("creationDate")?,
        }),
        other => {
            return Err(Problem {
                path: r.path("type"),
                reason: Reason::UnknownKind(other.to_owned()),
            });
        }
    })
}

fn summary_flag(mut f: Fields) -> Result<SummaryFlag, Problem> {
    Ok(SummaryFlag {
        key: f.key("key")?,
        default: f.opt_json("default")?,
        counters: f
            .array("counters")?
            .into_iter()
            .map(|(p, v)| {
                let mut c = Fields::new(v, &p)?;
                Ok(SummaryCounter {
                    variation: c.variation("variation")?,
                    version: c.version("version")?,
                    value: c.json("value")?,
                    count: c.opt_unsigned("count")?.ok_or_else(|| c.missing("count"))?,
                })
            })
            .collect::<Result<_, Problem>>()?,
        context_kinds: f
            .array("contextKinds")?
            .into_iter()
            .map(|(p, v)| match v {
                Value::String(s) => Ok(CompactString::from(s)),
                other => Err(unexpected(p, "a string", &other)),
            })
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn j(text: &str) -> Json {
        Json::parse(text).unwrap()
    }

    fn multi() -> Contexts {
        Contexts {
            keys: smallvec::smallvec![
                ContextKey {
                    kind: "org".into(),
                    key: "o:1".into()
                },
                ContextKey {
                    kind: "user".into(),
                    key: "u".into()
                },
            ],
            body: Some(j(
                r#"{"kind":"multi","org":{"key":"o:1","name":"Acme"},"user":{"key":"u"}}"#,
            )),
        }
    }

    fn evaluation() -> Evaluation {
        Evaluation {
            scope: Scope {
                project: Some("p".into()),
                env: Some("prod".into()),
            },
            flag_key: "flag-1".into(),
            variation: Some(VariationRef::Index(0)),
            version: Some(FlagVersion::Int(42)),
            value: j(r#"{"a":[1,2.5,"x"]}"#),
            default: Some(j("false")),
            context: Contexts::single("user", "u1"),
            creation_date: EventTime::from_millis(1_700_000_000_123),
            reason: Some(j(
                r#"{"kind":"RULE_MATCH","ruleIndex":1,"inExperiment":true}"#,
            )),
            in_experiment: true,
            prereq_of: Some("parent".into()),
            track_events: Some(false),
            debug_events_until_date: Some(EventTime::from_millis(1_700_000_999_000)),
            sampling_ratio: Some(3),
            exclude_from_summaries: true,
            debug: true,
            meta: Some(j(
                r#"{"source":"SERVER","metadata":{"environment":"production"}}"#,
            )),
        }
    }

    /// One event of every variant, plus the awkward cases: names and string versions,
    /// nothing optional, multi-contexts, a zero metric, unicode.
    pub(crate) fn events() -> Vec<Event> {
        let minimal = Evaluation {
            scope: Scope::default(),
            flag_key: "f".into(),
            variation: None,
            version: None,
            value: Json::null(),
            default: None,
            context: Contexts::single("user", "u"),
            creation_date: EventTime::from_millis(0),
            reason: None,
            in_experiment: false,
            prereq_of: None,
            track_events: None,
            debug_events_until_date: None,
            sampling_ratio: None,
            exclude_from_summaries: false,
            debug: false,
            meta: None,
        };
        let named = Evaluation {
            variation: Some(VariationRef::Name("Variation ✓".into())),
            version: Some(FlagVersion::Str("127".into())),
            context: multi(),
            track_events: Some(true),
            ..minimal.clone()
        };
        vec![
            Event::Evaluation(evaluation()),
            Event::Evaluation(minimal),
            Event::Evaluation(named),
            Event::Custom(Custom {
                scope: Scope {
                    project: None,
                    env: Some("e".into()),
                },
                key: "checkout".into(),
                context: multi(),
                data: Some(j(r#"{"cart":3}"#)),
                metric_value: Some(0.0),
                creation_date: EventTime::from_millis(5),
                sampling_ratio: Some(1),
            }),
            Event::Custom(Custom {
                scope: Scope::default(),
                key: "k".into(),
                context: Contexts::single("org", "o"),
                data: None,
                metric_value: Some(-2.5),
                creation_date: EventTime::from_millis(6),
                sampling_ratio: None,
            }),
            Event::Identify(ContextEvent {
                scope: Scope::default(),
                context: Contexts {
                    keys: smallvec::smallvec![ContextKey {
                        kind: "user".into(),
                        key: "u".into()
                    }],
                    body: Some(j(r#"{"kind":"user","key":"u","name":"Red"}"#)),
                },
                creation_date: EventTime::from_millis(7),
                sampling_ratio: Some(0),
            }),
            Event::Index(ContextEvent {
                scope: Scope {
                    project: Some("p".into()),
                    env: None,
                },
                context: multi(),
                creation_date: EventTime::from_millis(8),
                sampling_ratio: None,
            }),
            Event::Summary(Summary {
                scope: Scope {
                    project: None,
                    env: Some("prod".into()),
                },
                start_date: EventTime::from_millis(1000),
                end_date: EventTime::from_millis(1002),
                features: vec![
                    SummaryFlag {
                        key: "flag1".into(),
                        default: Some(j(r#""d1""#)),
                        counters: vec![
                            SummaryCounter {
                                variation: Some(VariationRef::Index(1)),
                                version: Some(FlagVersion::Int(11)),
                                value: j(r#""a""#),
                                count: 2,
                            },
                            SummaryCounter {
                                variation: None,
                                version: Some(FlagVersion::Int(11)),
                                value: j(r#""d1""#),
                                count: 1,
                            },
                            SummaryCounter {
                                variation: Some(VariationRef::Name("on".into())),
                                version: None,
                                value: j(r#""d3""#),
                                count: 1,
                            },
                        ],
                        context_kinds: vec!["org".into(), "user".into()],
                    },
                    SummaryFlag {
                        key: "flag2".into(),
                        default: None,
                        counters: vec![],
                        context_kinds: vec![],
                    },
                ],
            }),
            Event::PassThrough(PassThrough {
                scope: Scope::default(),
                kind: "alias".into(),
                body: j(r#"{"kind":"alias","key":"new","previousKey":"old","creationDate":9}"#),
                creation_date: Some(EventTime::from_millis(9)),
            }),
            Event::PassThrough(PassThrough {
                scope: Scope::default(),
                kind: "future".into(),
                body: j(r#"{"kind":"future"}"#),
                creation_date: None,
            }),
        ]
    }

    fn json(text: &str) -> Decoded {
        let mut out = Decoded::default();
        decode_json(text.as_bytes(), &Limits::default(), &mut out);
        out
    }

    fn avro(bytes: &[u8]) -> Decoded {
        let mut out = Decoded::default();
        decode_avro(bytes, &Limits::default(), &mut out);
        out
    }

    fn one_error(out: Decoded) -> DecodeError {
        assert!(out.events.is_empty(), "unexpected events {:?}", out.events);
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        out.errors.into_iter().next().unwrap()
    }

    fn avro_error(bytes: &[u8]) -> String {
        let e = one_error(avro(bytes));
        assert_eq!(e.dialect, Dialect::NativeAvro);
        assert_eq!(e.reason.code(), "avro", "{e}");
        e.to_string()
    }

    #[test]
    fn event_schema_parses() {
        let s = event_schema().unwrap();
        assert_eq!(s.header[..2], SINGLE_OBJECT_MAGIC);
        assert_eq!(s.fingerprint().len(), 8);
    }

    #[test]
    fn every_variant_round_trips_through_native_json() {
        for event in events() {
            let bytes = serde_json::to_vec(&event).unwrap();
            let out = json(std::str::from_utf8(&bytes).unwrap());
            assert_eq!(out.errors, vec![], "{event:?}");
            assert_eq!(out.events, vec![event]);
        }
    }

    #[test]
    fn a_json_array_decodes_every_element() {
        let all = events();
        let text = serde_json::to_string(&all).unwrap();
        let out = json(&format!("  \n{text}"));
        assert_eq!(out.errors, vec![]);
        assert_eq!(out.events, all);
        assert_eq!(json("[]").events, vec![]);
    }

    #[test]
    fn every_variant_round_trips_through_native_avro() {
        for event in events() {
            let bytes = encode_avro(&event);
            assert_eq!(bytes[..2], SINGLE_OBJECT_MAGIC);
            let out = avro(&bytes);
            assert_eq!(out.errors, vec![], "{event:?}");
            assert_eq!(out.events, vec![event]);
        }
    }

    #[test]
    fn avro_keeps_a_json_null_distinct_from_absent() {
        // Native JSON cannot: `"default":null` reads back as `None` (serde's Option).
        let mut e = evaluation();
        e.default = Some(Json::null());
        e.reason = None;
        let event = Event::Evaluation(e);
        assert_eq!(avro(&encode_avro(&event)).events, vec![event]);
    }

    #[test]
    fn confluent_wire_format_with_any_schema_id() {
        for event in events() {
            let single = encode_avro(&event);
            for id in [0u32, 1, 0xDEAD_BEEF] {
                let mut framed = vec![0x00];
                framed.extend_from_slice(&id.to_be_bytes());
                framed.extend_from_slice(&single[10..]);
                let out = avro(&framed);
                assert_eq!(out.errors, vec![]);
                assert_eq!(out.events, vec![event.clone()]);
            }
        }
    }

    #[test]
    fn avro_framing_errors_say_what_was_expected() {
        assert_eq!(one_error(avro(b"")).reason, Reason::Empty);
        let msg = avro_error(b"{\"type\":\"evaluation\"}");
        assert!(msg.contains("starts with 0x7b"), "{msg}");
        let msg = avro_error(&[0xC3, 0x02, 1, 2, 3, 4, 5, 6, 7, 8, 0]);
        assert!(msg.contains("starts with 0xc3"), "{msg}");
        let msg = avro_error(&[0xC3, 0x01, 1, 2, 3]);
        assert!(msg.contains("8-byte schema fingerprint"), "{msg}");
        let msg = avro_error(&[0x00, 0, 1]);
        assert!(msg.contains("4-byte schema id"), "{msg}");
        assert!(avro_error(&[0x00, 0, 0, 0, 1]).contains("truncated"));
    }

    #[test]
    fn a_foreign_fingerprint_names_both() {
        let mut bytes = encode_avro(&events()[0]);
        bytes[2..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let msg = avro_error(&bytes);
        let ours = hex(event_schema().unwrap().fingerprint());
        assert!(msg.contains("0102030405060708"), "{msg}");
        assert!(msg.contains(&ours), "{msg}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        for event in events() {
            let bytes = encode_avro(&event);
            for len in 0..bytes.len() {
                let out = avro(&bytes[..len]);
                assert!(out.events.is_empty(), "prefix {len} of {event:?} decoded");
                assert_eq!(out.errors.len(), 1);
            }
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode_avro(&events()[1]);
        bytes.push(0);
        assert!(avro_error(&bytes).contains("1 unread bytes"));
    }

    #[test]
    fn garbage_after_the_magic_is_an_error() {
        let header = event_schema().unwrap().header;
        for tail in [
            &[0xFF_u8; 16][..],
            &[0x0C, 0x02, 0x06, b'a', b'b', b'c'][..],
            &[
                0x02, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F,
            ][..],
        ] {
            let mut bytes = header.to_vec();
            bytes.extend_from_slice(tail);
            avro_error(&bytes);
            let mut bytes = vec![0, 0, 0, 0, 7];
            bytes.extend_from_slice(tail);
            avro_error(&bytes);
        }
    }

    fn with_field(event: &Event, name: &str, value: Value) -> Vec<u8> {
        let Value::Record(mut fields) = event_to_value(event) else {
            unreachable!()
        };
        for (n, v) in &mut fields {
            if n == name {
                *v = value.clone();
            }
        }
        event_schema()
            .unwrap()
            .encode(&Value::Record(fields))
            .unwrap()
    }

    #[test]
    fn bad_avro_fields_name_the_field() {
        let ev = &events()[0];
        let e = one_error(avro(&with_field(ev, "flagKey", null())));
        assert_eq!((e.path.as_str(), e.reason), ("flagKey", Reason::Missing));
        let e = one_error(avro(&with_field(ev, "value", opt_string(Some("{nope")))));
        assert_eq!((e.path.as_str(), e.reason.code()), ("value", "syntax"));
        let e = one_error(avro(&with_field(ev, "variation", opt_long(Some(-1)))));
        assert_eq!(
            (e.path.as_str(), e.reason.code()),
            ("variation", "invalid_value")
        );
        let e = one_error(avro(&with_field(ev, "samplingRatio", opt_long(Some(-3)))));
        assert_eq!(e.path, "samplingRatio");
        let e = one_error(avro(&with_field(ev, "creationDate", opt_long(Some(-3)))));
        assert_eq!(
            (e.path.as_str(), e.reason.code()),
            ("creationDate", "invalid_value")
        );
        let e = one_error(avro(&with_field(ev, "context", null())));
        assert_eq!((e.path.as_str(), e.reason), ("context", Reason::Missing));
        let long_key = "k".repeat(2000);
        let e = one_error(avro(&with_field(
            ev,
            "flagKey",
            opt_string(Some(&long_key)),
        )));
        assert_eq!(
            (e.path.as_str(), e.reason.code()),
            ("flagKey", "string_too_long")
        );
        let custom = &events()[3];
        let nan = Value::Union(1, Box::new(Value::Double(f64::NAN)));
        let e = one_error(avro(&with_field(custom, "metricValue", nan)));
        assert_eq!(e.path, "metricValue");
    }

    #[test]
    fn bad_json_names_the_field() {
        let ok = r#""flagKey":"f","value":1,"context":{"keys":[{"kind":"user","key":"u"}]},"creationDate":1"#;
        let eval = |extra: &str| format!(r#"{{"type":"evaluation",{ok}{extra}}}"#);
        assert_eq!(json(&eval("")).events.len(), 1);
        let cases: Vec<(String, &str, &str)> = vec![
            ("{}".into(), "type", "missing_field"),
            (r#"{"type":"nope"}"#.into(), "type", "unknown_kind"),
            (r#"{"type":5}"#.into(), "type", "wrong_type"),
            ("5".into(), "", "wrong_type"),
            (r#"{"type":"evaluation","#.into(), "", "syntax"),
            (r#"{"type":"evaluation"}"#.into(), "flagKey", "missing_field"),
            (eval(r#","env":5"#), "env", "wrong_type"),
            (eval(r#","variation":-1"#), "variation", "invalid_value"),
            (
                eval("").replace(r#""creationDate":1"#, r#""creationDate":"x""#),
                "creationDate",
                "wrong_type",
            ),
            (
                eval("").replace(r#""creationDate":1"#, r#""creationDate":-1"#),
                "creationDate",
                "invalid_value",
            ),
            (
                eval("").replace(r#""flagKey":"f""#, r#""flagKey":"""#),
                "flagKey",
                "invalid_value",
            ),
            (
                eval("").replace(r#","key":"u""#, ""),
                "context.keys[0].key",
                "missing_field",
            ),
            (
                eval("").replace(r#"{"kind":"user","key":"u"}"#, ""),
                "context.keys",
                "invalid_value",
            ),
            (
                eval("").replace(r#""kind":"user""#, r#""kind":"multi""#),
                "context.keys[0].kind",
                "invalid_value",
            ),
            (
                eval("").replace(
                    r#"{"kind":"user","key":"u"}"#,
                    r#"{"kind":"user","key":"u"},{"kind":"user","key":"v"}"#,
                ),
                "context.keys",
                "invalid_value",
            ),
            (
                eval("").replace(r#"}]}"#, r#"}],"body":[1]}"#),
                "context.body",
                "wrong_type",
            ),
            (
                eval("").replace(r#""flagKey":"f""#, &format!(r#""flagKey":"{}""#, "f".repeat(1025))),
                "flagKey",
                "string_too_long",
            ),
            (
                r#"{"type":"custom","key":"k","metricValue":"x","context":{"keys":[{"kind":"user","key":"u"}]},"creationDate":1}"#.into(),
                "metricValue",
                "wrong_type",
            ),
            (
                r#"{"type":"summary","startDate":1,"endDate":2,"features":[{"key":"f","counters":[{"value":1,"count":-1}]}]}"#.into(),
                "features[0].counters[0].count",
                "invalid_value",
            ),
            (
                r#"{"type":"summary","startDate":3,"endDate":2,"features":[]}"#.into(),
                "endDate",
                "invalid_value",
            ),
            (
                r#"{"type":"summary","startDate":1,"endDate":2,"features":[{"key":"f","counters":[],"contextKinds":["a b"]}]}"#.into(),
                "features[0].contextKinds[0]",
                "invalid_value",
            ),
            (r#"{"type":"passThrough","kind":"alias"}"#.into(), "body", "missing_field"),
        ];
        for (text, path, code) in cases {
            let e = one_error(json(&text));
            assert_eq!(e.dialect, Dialect::Native);
            assert_eq!(
                (e.path.as_str(), e.reason.code()),
                (path, code),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn one_bad_element_costs_only_itself() {
        let good = serde_json::to_string(&events()[1]).unwrap();
        let text = format!(r#"[{good},{{"type":"evaluation","flagKey":5}},{good}]"#);
        let out = json(&text);
        assert_eq!(out.events.len(), 2);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].path, "[1].flagKey");
        assert_eq!(out.errors[0].reason.code(), "wrong_type");
        let e = one_error(json(&format!(r#"[{good},{{"type":"x"}}]"#)).tap_events(1));
        assert_eq!(e.path, "[1].type");
    }

    trait TapEvents {
        fn tap_events(self, n: usize) -> Self;
    }

    impl TapEvents for Decoded {
        /// Checks the event count and drops them, to look at the errors alone.
        fn tap_events(mut self, n: usize) -> Self {
            assert_eq!(self.events.len(), n);
            self.events.clear();
            self
        }
    }

    #[test]
    fn the_documented_examples_decode() {
        let doc = include_str!("../../schemas/event.json.md");
        let block = doc
            .split("```json")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let mut n = 0;
        for raw in serde_json::Deserializer::from_str(block).into_iter::<Box<RawValue>>() {
            let out = json(raw.unwrap().get());
            assert_eq!(out.errors, vec![]);
            assert_eq!(out.events.len(), 1);
            n += 1;
        }
        assert_eq!(n, 6);
    }

    #[test]
    fn json_normalises_context_order_and_empty_scope() {
        let text = r#"{"type":"index","env":"","context":{"keys":[{"kind":"user","key":"u"},{"kind":"org","key":"o"}]},"creationDate":1}"#;
        let out = json(text);
        let Some(Event::Index(e)) = out.events.first() else {
            panic!("{:?}", out.errors)
        };
        assert_eq!(e.scope.env, None);
        assert_eq!(e.context.fully_qualified_key(), "org:o:user:u");
    }

    /// An array that claims millions of items, then ends: an error at once, not
    /// millions of null records.
    #[test]
    fn a_huge_array_claim_is_refused_at_the_first_missing_byte() {
        let mut bytes = event_schema().unwrap().header.to_vec();
        // evaluation, 10 null fields, then a context whose `keys` claims 5 M items.
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        bytes.extend_from_slice(&[0x80, 0xAD, 0xE2, 0x04]); // zigzag(5 000 000)
        assert!(avro_error(&bytes).contains("truncated"));
        // A string whose length runs past the end.
        let mut bytes = event_schema().unwrap().header.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 2, 0x7E, b'f']);
        assert!(avro_error(&bytes).contains("truncated"));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let header = event_schema().unwrap().header;
            let mut single = header.to_vec();
            single.extend_from_slice(&tail);
            let out = avro(&single);
            prop_assert_eq!(out.events.len() + out.errors.len(), 1);
            let mut confluent = vec![0, 0, 0, 0, 1];
            confluent.extend_from_slice(&tail);
            let out = avro(&confluent);
            prop_assert_eq!(out.events.len() + out.errors.len(), 1);
            let _ = json(&String::from_utf8_lossy(&tail));
        }

        #[test]
        fn flipped_bytes_never_panic(i in 10usize..200, b in any::<u8>()) {
            for event in events() {
                let mut bytes = encode_avro(&event);
                let n = bytes.len();
                bytes[i % n] = b;
                let out = avro(&bytes);
                prop_assert_eq!(out.events.len() + out.errors.len(), 1);
            }
        }
    }
}
