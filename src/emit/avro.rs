//! Avro output: every [`Output`] kind as a record of its schema in `schemas/`, written
//! as Avro single-object encoding (`0xC3 0x01`, the schema's 8-byte CRC-64-AVRO
//! fingerprint, little-endian, then the datum), and read back.
//!
//! Each record holds the LaunchDarkly event field for field (JSON payloads as strings
//! of compact JSON text) plus the provenance warehouses need (window bounds, late,
//! input partition, env/project). [`Schemas::decode`] turns a record back into the
//! LaunchDarkly JSON event — the shape the JSON emitter writes, in go-sdk-events key
//! order — and [`Schemas::decode_record`] into the whole record.
//!
//! | kind | schema |
//! |---|---|
//! | summary | `summary.avsc` (one flag per record) |
//! | feature, debug | `feature.avsc` (`kind` says which) |
//! | index, identify, custom | `index.avsc`, `identify.avsc`, `custom.avsc` |
//! | passthrough | `passthrough.avsc` (`{kind, creationDate?, body}`) |
//! | late | `late.avsc` (the canonical `event.avsc` record + window bounds) |
//!
//! Records are written field by field in schema order (`decode::native::wire`); tests
//! check every kind byte for byte against apache-avro, which also reads them back.

use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::types::Value;
use serde_json::{Map, Value as JsonValue};

use super::{EmitError, OutputKind};
use crate::decode::native::{self, Parsed, wire};
use crate::event::{Contexts, EventTime, FlagVersion, Json, Scope};
use crate::window::{CloseReason, Output};

/// One schema per slot; feature and debug share one.
const FILES: [(&str, &str); 7] = [
    ("summary.avsc", include_str!("../../schemas/summary.avsc")),
    ("feature.avsc", include_str!("../../schemas/feature.avsc")),
    ("index.avsc", include_str!("../../schemas/index.avsc")),
    ("identify.avsc", include_str!("../../schemas/identify.avsc")),
    ("custom.avsc", include_str!("../../schemas/custom.avsc")),
    (
        "passthrough.avsc",
        include_str!("../../schemas/passthrough.avsc"),
    ),
    ("late.avsc", include_str!("../../schemas/late.avsc")),
];

fn slot(kind: OutputKind) -> usize {
    match kind {
        OutputKind::Summary => 0,
        OutputKind::Feature | OutputKind::Debug => 1,
        OutputKind::Index => 2,
        OutputKind::Identify => 3,
        OutputKind::Custom => 4,
        OutputKind::PassThrough => 5,
        OutputKind::Late => 6,
    }
}

static PARSED: LazyLock<Result<Vec<Parsed>, String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, text)| Parsed::new(name, text))
        .collect()
});

/// The parsed output schemas (parsed once per process).
#[derive(Clone, Copy)]
pub struct Schemas {
    parsed: Result<&'static [Parsed], &'static str>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.parsed {
            Ok(all) => f
                .debug_list()
                .entries(all.iter().map(|p| native::hex(p.fingerprint())))
                .finish(),
            Err(e) => f.debug_tuple("Schemas").field(&e).finish(),
        }
    }
}

impl Schemas {
    /// The embedded schemas. A schema that failed to parse (which a test rules out)
    /// makes every `encode`/`decode` fail with [`EmitError::Avro`].
    pub fn load() -> Self {
        Self {
            parsed: PARSED.as_ref().map(Vec::as_slice).map_err(String::as_str),
        }
    }

    /// The `.avsc` text of a kind's schema, e.g. for an Avro container file's header.
    pub fn schema_text(kind: OutputKind) -> &'static str {
        FILES[slot(kind)].1
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
        match self.parsed {
            Ok(all) => all.get(slot(kind)).ok_or_else(|| error(kind, "no schema")),
            Err(e) => Err(error(kind, e)),
        }
    }

    /// Encodes one output as single-object encoding with its kind's schema.
    pub fn encode(&self, out: &Output) -> Result<Vec<u8>, EmitError> {
        let parsed = self.get(OutputKind::of(out))?;
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&parsed.header);
        write_output(out, &mut buf);
        Ok(buf)
    }

    /// Reads a record of `kind` back as the LaunchDarkly JSON event (no provenance):
    /// what the JSON emitter writes for the same output. A late record reads back as
    /// the canonical event in native JSON.
    pub fn decode(&self, kind: OutputKind, bytes: &[u8]) -> Result<JsonValue, EmitError> {
        if kind == OutputKind::Late {
            let mut r = wire::Reader::new(self.datum(kind, bytes)?);
            let event = native::read_event(&mut r, "event").map_err(|p| error(kind, p))?;
            for field in ["windowStart", "windowEnd"] {
                r.long().map_err(|e| error(kind, format!("{field}: {e}")))?;
            }
            if !r.is_empty() {
                return Err(error(
                    kind,
                    format!("{} unread bytes after the datum", r.remaining()),
                ));
            }
            return serde_json::to_value(&event).map_err(|e| error(kind, e));
        }
        let value = self.read(kind, bytes)?;
        let fields = Fields::new(value, "").map_err(|e| error(kind, e))?;
        launchdarkly(kind, fields).map_err(|e| error(kind, e))
    }

    /// Reads a record of `kind` back whole, as a JSON object with the schema's field
    /// names and order: unions unwrapped, enums as their symbol, JSON payloads left as
    /// the strings they are in the record.
    pub fn decode_record(&self, kind: OutputKind, bytes: &[u8]) -> Result<JsonValue, EmitError> {
        self.read(kind, bytes).map(generic)
    }

    /// The datum of a single-object record of `kind`, after checking its header.
    fn datum<'b>(&self, kind: OutputKind, bytes: &'b [u8]) -> Result<&'b [u8], EmitError> {
        let parsed = self.get(kind)?;
        let Some((header, datum)) = bytes.split_at_checked(10) else {
            return Err(error(
                kind,
                format!(
                    "{} bytes is too short for single-object encoding",
                    bytes.len()
                ),
            ));
        };
        if header[..2] != native::SINGLE_OBJECT_MAGIC {
            return Err(error(
                kind,
                format!(
                    "not single-object encoding: starts with {}, expected c301",
                    native::hex(&header[..2])
                ),
            ));
        }
        if header[2..] != *parsed.fingerprint() {
            return Err(error(
                kind,
                format!(
                    "schema fingerprint {} is not {}'s {}",
                    native::hex(&header[2..]),
                    FILES[slot(kind)].0,
                    native::hex(parsed.fingerprint())
                ),
            ));
        }
        Ok(datum)
    }

    fn read(&self, kind: OutputKind, bytes: &[u8]) -> Result<Value, EmitError> {
        let datum = self.datum(kind, bytes)?;
        self.get(kind)?
            .read_datum(datum)
            .map_err(|e| error(kind, e))
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
            native::write_event(event, buf);
            time(buf, window.start);
            time(buf, window.end);
        }
    }
}

// ------------------------------------------------------------------------------------
// Record → LaunchDarkly JSON

/// A decoded Avro record, read field by field (each field once).
#[derive(Debug)]
struct Fields {
    path: String,
    fields: Vec<(String, Value)>,
}

fn unexpected(path: &str, expected: &str, found: &Value) -> String {
    let found: String = format!("{found:?}").chars().take(60).collect();
    format!("{path}: expected {expected}, found {found}")
}

impl Fields {
    fn new(value: Value, path: &str) -> Result<Self, String> {
        match value {
            Value::Record(fields) => Ok(Self {
                path: path.to_owned(),
                fields,
            }),
            other => Err(unexpected(path, "a record", &other)),
        }
    }

    fn path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The field's value, with a union unwrapped (`Null` when absent).
    fn take(&mut self, name: &str) -> Value {
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

    fn opt_str(&mut self, name: &str) -> Result<Option<String>, String> {
        match self.take(name) {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(unexpected(&self.path(name), "a string", &other)),
        }
    }

    fn str(&mut self, name: &str) -> Result<String, String> {
        self.opt_str(name)?
            .ok_or_else(|| format!("{}: missing", self.path(name)))
    }

    fn opt_long(&mut self, name: &str) -> Result<Option<i64>, String> {
        match self.take(name) {
            Value::Null => Ok(None),
            Value::Long(n) => Ok(Some(n)),
            Value::Int(n) => Ok(Some(i64::from(n))),
            other => Err(unexpected(&self.path(name), "a long", &other)),
        }
    }

    fn long(&mut self, name: &str) -> Result<i64, String> {
        self.opt_long(name)?
            .ok_or_else(|| format!("{}: missing", self.path(name)))
    }

    fn opt_double(&mut self, name: &str) -> Result<Option<f64>, String> {
        match self.take(name) {
            Value::Null => Ok(None),
            Value::Double(n) => Ok(Some(n)),
            other => Err(unexpected(&self.path(name), "a double", &other)),
        }
    }

    fn symbol(&mut self, name: &str) -> Result<String, String> {
        match self.take(name) {
            Value::Enum(_, s) => Ok(s),
            other => Err(unexpected(&self.path(name), "an enum", &other)),
        }
    }

    fn array(&mut self, name: &str) -> Result<Vec<(String, Value)>, String> {
        match self.take(name) {
            Value::Array(items) => {
                let p = self.path(name);
                Ok(items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{p}[{i}]"), v))
                    .collect())
            }
            other => Err(unexpected(&self.path(name), "an array", &other)),
        }
    }

    /// `["null", "long", "string"]`.
    fn version(&mut self, name: &str) -> Result<Option<FlagVersion>, String> {
        match self.take(name) {
            Value::Null => Ok(None),
            Value::Long(n) => Ok(Some(FlagVersion::Int(n))),
            Value::String(s) => Ok(Some(FlagVersion::Str(s.into()))),
            other => Err(unexpected(&self.path(name), "a long or a string", &other)),
        }
    }

    /// A JSON-text field, parsed.
    fn opt_json(&mut self, name: &str) -> Result<Option<JsonValue>, String> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: not JSON: {e}", self.path(name))),
        }
    }

    fn json(&mut self, name: &str) -> Result<JsonValue, String> {
        self.opt_json(name)?
            .ok_or_else(|| format!("{}: missing", self.path(name)))
    }

    /// `variation` for an index, `variationName` for a name; nothing for neither.
    fn put_variation(&mut self, o: &mut Map<String, JsonValue>) -> Result<(), String> {
        if let Some(i) = self.opt_long("variation")? {
            o.insert("variation".into(), i.into());
        }
        if let Some(name) = self.opt_str("variationName")? {
            o.insert("variationName".into(), name.into());
        }
        Ok(())
    }
}

/// A number as Go writes it: integral values without a fraction.
fn number(n: f64) -> JsonValue {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        JsonValue::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(JsonValue::Null, JsonValue::Number)
    }
}

fn version_json(v: FlagVersion) -> JsonValue {
    match v {
        FlagVersion::Int(n) => n.into(),
        FlagVersion::Str(s) => s.as_str().into(),
    }
}

fn launchdarkly(kind: OutputKind, mut f: Fields) -> Result<JsonValue, String> {
    let mut o = Map::new();
    match kind {
        OutputKind::Summary => {
            o.insert("kind".into(), "summary".into());
            o.insert("startDate".into(), f.long("startDate")?.into());
            o.insert("endDate".into(), f.long("endDate")?.into());
            let flag = f.str("flagKey")?;
            let mut body = Map::new();
            body.insert("default".into(), f.json("default")?);
            let mut counters = Vec::new();
            for (p, v) in f.array("counters")? {
                let mut c = Fields::new(v, &p)?;
                let mut co = Map::new();
                c.put_variation(&mut co)?;
                match c.version("version")? {
                    Some(v) => co.insert("version".into(), version_json(v)),
                    None => co.insert("unknown".into(), true.into()),
                };
                co.insert("value".into(), c.json("value")?);
                co.insert("count".into(), c.long("count")?.into());
                counters.push(JsonValue::Object(co));
            }
            body.insert("counters".into(), counters.into());
            let kinds = f
                .array("contextKinds")?
                .into_iter()
                .map(|(p, v)| match v {
                    Value::String(s) => Ok(s.into()),
                    other => Err(unexpected(&p, "a string", &other)),
                })
                .collect::<Result<Vec<JsonValue>, String>>()?;
            body.insert("contextKinds".into(), kinds.into());
            let mut features = Map::new();
            features.insert(flag, body.into());
            o.insert("features".into(), features.into());
        }
        OutputKind::Feature | OutputKind::Debug => {
            o.insert("kind".into(), f.symbol("kind")?.into());
            o.insert("creationDate".into(), f.long("creationDate")?.into());
            o.insert("key".into(), f.str("key")?.into());
            if let Some(v) = f.version("version")? {
                o.insert("version".into(), version_json(v));
            }
            o.insert("context".into(), f.json("context")?);
            f.put_variation(&mut o)?;
            o.insert("value".into(), f.json("value")?);
            // Go writes `default` always (`null` when the SDK had none).
            o.insert(
                "default".into(),
                f.opt_json("default")?.unwrap_or(JsonValue::Null),
            );
            if let Some(p) = f.opt_str("prereqOf")? {
                o.insert("prereqOf".into(), p.into());
            }
            if let Some(r) = f.opt_json("reason")? {
                o.insert("reason".into(), r);
            }
            if let Some(n) = f.opt_long("samplingRatio")?.filter(|n| *n != 1) {
                o.insert("samplingRatio".into(), n.into());
            }
        }
        OutputKind::Index | OutputKind::Identify => {
            o.insert("kind".into(), kind.name().into());
            o.insert("creationDate".into(), f.long("creationDate")?.into());
            o.insert("context".into(), f.json("context")?);
            if kind == OutputKind::Identify
                && let Some(n) = f.opt_long("samplingRatio")?.filter(|n| *n != 1)
            {
                o.insert("samplingRatio".into(), n.into());
            }
        }
        OutputKind::Custom => {
            o.insert("kind".into(), "custom".into());
            o.insert("creationDate".into(), f.long("creationDate")?.into());
            o.insert("key".into(), f.str("key")?.into());
            // LaunchDarkly omits `data` when null.
            if let Some(d) = f.opt_json("data")?.filter(|d| !d.is_null()) {
                o.insert("data".into(), d);
            }
            o.insert("contextKeys".into(), f.json("contextKeys")?);
            if let Some(m) = f.opt_double("metricValue")? {
                o.insert("metricValue".into(), number(m));
            }
            if let Some(n) = f.opt_long("samplingRatio")?.filter(|n| *n != 1) {
                o.insert("samplingRatio".into(), n.into());
            }
        }
        OutputKind::PassThrough => return f.json("body"),
        OutputKind::Late => return Err("late records are read by Schemas::decode".into()),
    }
    Ok(JsonValue::Object(o))
}

/// Any Avro value as JSON: records as objects in field order, unions unwrapped, enums
/// as their symbol, bytes as arrays of numbers.
fn generic(v: Value) -> JsonValue {
    match v {
        Value::Null => JsonValue::Null,
        Value::Boolean(b) => b.into(),
        Value::Int(n) => n.into(),
        Value::Long(n) => n.into(),
        Value::Float(n) => {
            serde_json::Number::from_f64(f64::from(n)).map_or(JsonValue::Null, JsonValue::Number)
        }
        Value::Double(n) => {
            serde_json::Number::from_f64(n).map_or(JsonValue::Null, JsonValue::Number)
        }
        Value::String(s) | Value::Enum(_, s) => s.into(),
        Value::Bytes(b) | Value::Fixed(_, b) => b.into(),
        Value::Union(_, inner) => generic(*inner),
        Value::Array(items) => items.into_iter().map(generic).collect(),
        Value::Map(m) => {
            let mut sorted: Vec<_> = m.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            JsonValue::Object(sorted.into_iter().map(|(k, v)| (k, generic(v))).collect())
        }
        Value::Record(fields) => {
            JsonValue::Object(fields.into_iter().map(|(k, v)| (k, generic(v))).collect())
        }
        other => format!("{other:?}").into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::decode::native::tests::{
        event_to_value, null, opt_long, opt_string, saturating, version_value,
    };
    use crate::event::VariationRef;

    // The oracle: outputs as apache-avro `Value`s, which apache-avro validates against
    // each schema and encodes; the direct writer must agree byte for byte.

    fn record(fields: Vec<(&str, Value)>) -> Value {
        Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    fn string(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    fn json_opt(j: Option<&Json>) -> Value {
        opt_string(j.map(Json::as_str))
    }

    fn time(t: EventTime) -> Value {
        Value::Long(t.as_millis())
    }

    fn variation_fields(v: Option<&VariationRef>) -> [(&'static str, Value); 2] {
        let (index, name) = match v {
            None => (None, None),
            Some(VariationRef::Index(i)) => (Some(i64::from(*i)), None),
            Some(VariationRef::Name(n)) => (None, Some(n.as_str())),
        };
        [
            ("variation", opt_long(index)),
            ("variationName", opt_string(name)),
        ]
    }

    fn context(c: &Contexts, redact_anonymous: bool) -> Value {
        let mut text = Vec::new();
        crate::emit::launchdarkly::context(&mut text, c, redact_anonymous);
        Value::String(String::from_utf8(text).unwrap())
    }

    fn scope_fields(s: &Scope) -> [(&'static str, Value); 2] {
        [
            ("env", opt_string(s.env.as_deref())),
            ("project", opt_string(s.project.as_deref())),
        ]
    }

    fn to_record(out: &Output) -> Value {
        let mut f: Vec<(&str, Value)> = Vec::with_capacity(16);
        match out {
            Output::Summary(s) => {
                f.push(("startDate", time(s.start_date)));
                f.push(("endDate", time(s.end_date)));
                f.push(("flagKey", string(&s.flag_key)));
                f.push(("default", string(s.default.as_str())));
                let counters = s
                    .counters
                    .iter()
                    .map(|c| {
                        let mut cf = Vec::with_capacity(5);
                        cf.extend(variation_fields(c.variation.as_ref()));
                        cf.push(("version", version_value(c.version.as_ref())));
                        cf.push(("value", string(c.value.as_str())));
                        cf.push(("count", Value::Long(saturating(c.count))));
                        record(cf)
                    })
                    .collect();
                f.push(("counters", Value::Array(counters)));
                let kinds = s.context_kinds.iter().map(|k| string(k)).collect();
                f.push(("contextKinds", Value::Array(kinds)));
                f.push(("windowStart", time(s.window.start)));
                f.push(("windowEnd", time(s.window.end)));
                f.push(("late", Value::Boolean(s.late)));
                f.push(("early", Value::Boolean(s.reason == CloseReason::Early)));
                f.push(("partition", string(&s.partition.to_string())));
                f.extend(scope_fields(&s.scope));
            }
            Output::Feature {
                event: e, debug, ..
            } => {
                f.push((
                    "kind",
                    if *debug {
                        Value::Enum(1, "debug".into())
                    } else {
                        Value::Enum(0, "feature".into())
                    },
                ));
                f.push(("creationDate", time(e.creation_date)));
                f.push(("key", string(&e.flag_key)));
                f.push(("version", version_value(e.version.as_ref())));
                f.push(("context", context(&e.context, !*debug)));
                f.extend(variation_fields(e.variation.as_ref()));
                f.push(("value", string(e.value.as_str())));
                f.push(("default", json_opt(e.default.as_ref())));
                f.push(("prereqOf", opt_string(e.prereq_of.as_deref())));
                f.push(("reason", json_opt(e.reason.as_ref())));
                f.push(("samplingRatio", opt_long(e.sampling_ratio.map(saturating))));
                f.extend(scope_fields(&e.scope));
            }
            Output::Index {
                scope,
                context: c,
                creation_date,
                ..
            } => {
                f.push(("creationDate", time(*creation_date)));
                f.push(("context", context(c, false)));
                f.extend(scope_fields(scope));
            }
            Output::Identify { event: e, .. } => {
                f.push(("creationDate", time(e.creation_date)));
                f.push(("context", context(&e.context, false)));
                f.push(("samplingRatio", opt_long(e.sampling_ratio.map(saturating))));
                f.extend(scope_fields(&e.scope));
            }
            Output::Custom { event: e, .. } => {
                f.push(("creationDate", time(e.creation_date)));
                f.push(("key", string(&e.key)));
                f.push(("data", json_opt(e.data.as_ref())));
                f.push(("contextKeys", string(e.context.keys_object().as_str())));
                f.push((
                    "metricValue",
                    match e.metric_value {
                        None => null(),
                        Some(m) => Value::Union(1, Box::new(Value::Double(m))),
                    },
                ));
                f.push(("samplingRatio", opt_long(e.sampling_ratio.map(saturating))));
                f.extend(scope_fields(&e.scope));
            }
            Output::PassThrough { event: e, .. } => {
                f.push(("kind", string(&e.kind)));
                f.push((
                    "creationDate",
                    opt_long(e.creation_date.map(EventTime::as_millis)),
                ));
                f.push(("body", string(e.body.as_str())));
                f.extend(scope_fields(&e.scope));
            }
            Output::Late { event, window, .. } => {
                f.push(("event", event_to_value(event)));
                f.push(("windowStart", time(window.start)));
                f.push(("windowEnd", time(window.end)));
            }
        }
        record(f)
    }

    use crate::decode::native::tests::events;
    use crate::event::{ContextEvent, ContextKey, Custom, Evaluation, Event, PassThrough};
    use crate::window::{ClosedSummary, Counter, PartitionId, SourcePos, Window};

    fn j(text: &str) -> Json {
        Json::parse(text).unwrap()
    }

    fn pos() -> SourcePos {
        SourcePos {
            partition: PartitionId::new("evals", 3),
            offset: 42,
            index: 1,
        }
    }

    fn multi() -> Contexts {
        Contexts::multi(&[("org", "o"), ("user", "u")])
    }

    fn summary() -> ClosedSummary {
        ClosedSummary {
            scope: Scope {
                project: Some("p".into()),
                env: Some("prod".into()),
            },
            flag_key: "flag1".into(),
            window: Window {
                start: EventTime::from_millis(60_000),
                end: EventTime::from_millis(120_000),
            },
            partition: PartitionId::new("evals", 3),
            start_date: EventTime::from_millis(60_100),
            end_date: EventTime::from_millis(60_200),
            default: j(r#""d1""#),
            counters: vec![
                Counter {
                    variation: None,
                    version: Some(FlagVersion::Int(11)),
                    value: j(r#""d1""#),
                    count: 1,
                },
                Counter {
                    variation: Some(VariationRef::Index(0)),
                    version: Some(FlagVersion::Int(11)),
                    value: j(r#"{"a":1}"#),
                    count: 2,
                },
                Counter {
                    variation: Some(VariationRef::Name("Blue".into())),
                    version: Some(FlagVersion::Str("v7".into())),
                    value: j(r#""blue""#),
                    count: 3,
                },
                Counter {
                    variation: Some(VariationRef::Name("Red".into())),
                    version: None,
                    value: j(r#""red""#),
                    count: 4,
                },
            ],
            context_kinds: vec!["org".into(), "user".into()],
            kinds_dropped: 0,
            late: true,
            reason: CloseReason::Early,
            part: 1,
            first_offset: 7,
            first_index: 0,
            epoch: 0,
        }
    }

    fn evaluation() -> Evaluation {
        Evaluation {
            scope: Scope {
                project: None,
                env: Some("prod".into()),
            },
            flag_key: "flag1".into(),
            variation: Some(VariationRef::Index(1)),
            version: Some(FlagVersion::Int(11)),
            value: j("true"),
            default: Some(j("false")),
            context: multi(),
            creation_date: EventTime::from_millis(1000),
            reason: Some(j(r#"{"kind":"FALLTHROUGH"}"#)),
            in_experiment: false,
            prereq_of: Some("parent".into()),
            track_events: Some(true),
            debug_events_until_date: None,
            sampling_ratio: Some(3),
            exclude_from_summaries: false,
            debug: false,
            counted_by_summary: false,
            meta: None,
        }
    }

    /// Every output kind, each with the LaunchDarkly JSON it must read back as.
    fn cases() -> Vec<(Output, &'static str)> {
        let named_debug = Evaluation {
            variation: Some(VariationRef::Name("Default".into())),
            version: Some(FlagVersion::Str("127".into())),
            default: None,
            context: Contexts {
                keys: smallvec::smallvec![ContextKey {
                    kind: "user".into(),
                    key: "u".into()
                }],
                body: Some(j(
                    r#"{"kind":"user","key":"u","anonymous":true,"name":"Red"}"#,
                )),
            },
            reason: None,
            prereq_of: None,
            sampling_ratio: Some(1),
            ..evaluation()
        };
        let fallback = Evaluation {
            variation: None,
            version: None,
            default: Some(Json::null()),
            value: j("null"),
            context: Contexts::single("user", "u"),
            reason: None,
            prereq_of: None,
            sampling_ratio: None,
            ..evaluation()
        };
        let null_default = ClosedSummary {
            default: Json::null(),
            counters: vec![Counter {
                variation: Some(VariationRef::Index(0)),
                version: Some(FlagVersion::Int(1)),
                value: j("1.5"),
                count: 1,
            }],
            context_kinds: vec!["user".into()],
            kinds_dropped: 0,
            late: false,
            reason: CloseReason::Watermark,
            scope: Scope::default(),
            ..summary()
        };
        vec![
            (
                Output::Summary(summary()),
                r#"{"kind":"summary","startDate":60100,"endDate":60200,"features":{"flag1":{"default":"d1","counters":[{"version":11,"value":"d1","count":1},{"variation":0,"version":11,"value":{"a":1},"count":2},{"variationName":"Blue","version":"v7","value":"blue","count":3},{"variationName":"Red","unknown":true,"value":"red","count":4}],"contextKinds":["org","user"]}}}"#,
            ),
            (
                Output::Summary(null_default),
                r#"{"kind":"summary","startDate":60100,"endDate":60200,"features":{"flag1":{"default":null,"counters":[{"variation":0,"version":1,"value":1.5,"count":1}],"contextKinds":["user"]}}}"#,
            ),
            (
                Output::Feature {
                    event: Box::new(evaluation()),
                    debug: false,
                    pos: pos(),
                },
                r#"{"kind":"feature","creationDate":1000,"key":"flag1","version":11,"context":{"kind":"multi","org":{"key":"o"},"user":{"key":"u"}},"variation":1,"value":true,"default":false,"prereqOf":"parent","reason":{"kind":"FALLTHROUGH"},"samplingRatio":3}"#,
            ),
            (
                Output::Feature {
                    event: Box::new(named_debug),
                    debug: true,
                    pos: pos(),
                },
                r#"{"kind":"debug","creationDate":1000,"key":"flag1","version":"127","context":{"kind":"user","key":"u","anonymous":true,"name":"Red"},"variationName":"Default","value":true,"default":null}"#,
            ),
            (
                Output::Feature {
                    event: Box::new(fallback),
                    debug: false,
                    pos: pos(),
                },
                r#"{"kind":"feature","creationDate":1000,"key":"flag1","context":{"kind":"user","key":"u"},"value":null,"default":null}"#,
            ),
            (
                Output::Index {
                    scope: Scope::default(),
                    context: multi(),
                    creation_date: EventTime::from_millis(999),
                    pos: pos(),
                },
                r#"{"kind":"index","creationDate":999,"context":{"kind":"multi","org":{"key":"o"},"user":{"key":"u"}}}"#,
            ),
            (
                Output::Identify {
                    event: ContextEvent {
                        scope: Scope {
                            project: None,
                            env: Some("e".into()),
                        },
                        context: Contexts::single("org", "o:1"),
                        creation_date: EventTime::from_millis(5),
                        sampling_ratio: None,
                    },
                    pos: pos(),
                },
                r#"{"kind":"identify","creationDate":5,"context":{"kind":"org","key":"o:1"}}"#,
            ),
            (
                Output::Custom {
                    event: Box::new(Custom {
                        scope: Scope::default(),
                        key: "checkout".into(),
                        context: Contexts::single("user", "u"),
                        data: None,
                        metric_value: Some(0.0),
                        creation_date: EventTime::from_millis(100_000),
                        sampling_ratio: None,
                    }),
                    pos: pos(),
                },
                r#"{"kind":"custom","creationDate":100000,"key":"checkout","contextKeys":{"user":"u"},"metricValue":0}"#,
            ),
            (
                Output::Custom {
                    event: Box::new(Custom {
                        scope: Scope::default(),
                        key: "eventkey".into(),
                        context: multi(),
                        data: Some(j(r#"{"d":[1,"x"]}"#)),
                        metric_value: Some(2.5),
                        creation_date: EventTime::from_millis(100_000),
                        sampling_ratio: Some(2),
                    }),
                    pos: pos(),
                },
                r#"{"kind":"custom","creationDate":100000,"key":"eventkey","data":{"d":[1,"x"]},"contextKeys":{"org":"o","user":"u"},"metricValue":2.5,"samplingRatio":2}"#,
            ),
            (
                Output::Custom {
                    event: Box::new(Custom {
                        scope: Scope::default(),
                        key: "k".into(),
                        context: Contexts::single("user", "u"),
                        data: Some(Json::null()),
                        metric_value: None,
                        creation_date: EventTime::from_millis(1),
                        sampling_ratio: None,
                    }),
                    pos: pos(),
                },
                r#"{"kind":"custom","creationDate":1,"key":"k","contextKeys":{"user":"u"}}"#,
            ),
            (
                Output::PassThrough {
                    event: PassThrough {
                        scope: Scope::default(),
                        kind: "alias".into(),
                        body: j(
                            r#"{"kind":"alias","key":"new","previousKey":"old","creationDate":9}"#,
                        ),
                        creation_date: Some(EventTime::from_millis(9)),
                    },
                    pos: pos(),
                },
                r#"{"kind":"alias","key":"new","previousKey":"old","creationDate":9}"#,
            ),
            (
                Output::Late {
                    event: Box::new(Event::evaluation(evaluation())),
                    window: Window {
                        start: EventTime::from_millis(0),
                        end: EventTime::from_millis(60_000),
                    },
                    pos: pos(),
                },
                r#"{"type":"evaluation","env":"prod","flagKey":"flag1","variation":1,"version":11,"value":true,"default":false,"context":{"keys":[{"kind":"org","key":"o"},{"kind":"user","key":"u"}]},"creationDate":1000,"reason":{"kind":"FALLTHROUGH"},"prereqOf":"parent","trackEvents":true,"samplingRatio":3}"#,
            ),
        ]
    }

    #[test]
    fn every_schema_parses() {
        let schemas = Schemas::load();
        for kind in OutputKind::ALL {
            schemas.schema(kind).unwrap();
            assert_eq!(schemas.fingerprint(kind).unwrap().len(), 8);
            Schema::parse_str(Schemas::schema_text(kind)).unwrap();
        }
        // Feature and debug share a schema; the others are distinct.
        let mut fps: Vec<_> = OutputKind::ALL
            .iter()
            .filter(|k| **k != OutputKind::Debug)
            .map(|k| schemas.fingerprint(*k).unwrap())
            .collect();
        fps.sort();
        fps.dedup();
        assert_eq!(fps.len(), 7);
    }

    /// Readers of single-object records look schemas up by fingerprint: a schema
    /// change is a new fingerprint, so it must be deliberate (and `schemas/README.md`
    /// updated with it).
    #[test]
    fn fingerprints_are_pinned() {
        let schemas = Schemas::load();
        let pinned = [
            (OutputKind::Summary, "4e678b36587deffa"),
            (OutputKind::Feature, "4b89513325f890ba"),
            (OutputKind::Debug, "4b89513325f890ba"),
            (OutputKind::Index, "8aa5562ccfa9215a"),
            (OutputKind::Identify, "cb9e023bf6e52404"),
            (OutputKind::Custom, "67a87cf4a422a182"),
            (OutputKind::PassThrough, "d8a27a5af1ecafde"),
            (OutputKind::Late, "d8a9ee1e71503051"),
        ];
        for (kind, hex) in pinned {
            assert_eq!(
                native::hex(&schemas.fingerprint(kind).unwrap()),
                hex,
                "{kind:?}"
            );
        }
        assert_eq!(
            native::hex(native::event_schema().unwrap().fingerprint()),
            "46493c93068c1ef7"
        );
    }

    #[test]
    fn the_late_schema_embeds_the_canonical_event() {
        let late = Schemas::load().schema(OutputKind::Late).unwrap();
        let Schema::Record(late) = late else {
            panic!("late.avsc is not a record")
        };
        let event = &native::event_schema().unwrap().schema;
        assert_eq!(late.fields[0].name, "event");
        assert_eq!(
            late.fields[0].schema.canonical_form(),
            event.canonical_form()
        );
    }

    #[test]
    fn the_direct_writer_matches_apache_avro() {
        let schemas = Schemas::load();
        for (out, _) in cases() {
            let kind = OutputKind::of(&out);
            let oracle = schemas.get(kind).unwrap().encode(&to_record(&out)).unwrap();
            assert_eq!(schemas.encode(&out).unwrap(), oracle, "{kind:?}");
        }
    }

    #[test]
    fn every_output_kind_reads_back_as_launchdarkly_json() {
        let schemas = Schemas::load();
        for (out, expected) in cases() {
            let kind = OutputKind::of(&out);
            let bytes = schemas.encode(&out).unwrap();
            assert_eq!(bytes[..2], [0xC3, 0x01]);
            assert_eq!(bytes[2..10], schemas.fingerprint(kind).unwrap());
            let back = schemas.decode(kind, &bytes).unwrap();
            assert_eq!(back.to_string(), expected, "{kind:?}");
        }
    }

    #[test]
    fn a_late_record_round_trips_every_canonical_event() {
        let schemas = Schemas::load();
        for event in events() {
            let out = Output::Late {
                event: Box::new(event.clone()),
                window: Window {
                    start: EventTime::from_millis(0),
                    end: EventTime::from_millis(60_000),
                },
                pos: pos(),
            };
            let bytes = schemas.encode(&out).unwrap();
            let back = schemas.decode(OutputKind::Late, &bytes).unwrap();
            assert_eq!(back, serde_json::to_value(&event).unwrap());
        }
    }

    #[test]
    fn records_carry_provenance() {
        let schemas = Schemas::load();
        let bytes = schemas.encode(&Output::Summary(summary())).unwrap();
        let rec = schemas.decode_record(OutputKind::Summary, &bytes).unwrap();
        assert_eq!(
            rec.to_string(),
            r#"{"startDate":60100,"endDate":60200,"flagKey":"flag1","default":"\"d1\"","counters":[{"variation":null,"variationName":null,"version":11,"value":"\"d1\"","count":1},{"variation":0,"variationName":null,"version":11,"value":"{\"a\":1}","count":2},{"variation":null,"variationName":"Blue","version":"v7","value":"\"blue\"","count":3},{"variation":null,"variationName":"Red","version":null,"value":"\"red\"","count":4}],"contextKinds":["org","user"],"windowStart":60000,"windowEnd":120000,"late":true,"early":true,"partition":"evals/3","env":"prod","project":"p"}"#
        );
        let (feature, _) = &cases()[2];
        let bytes = schemas.encode(feature).unwrap();
        let rec = schemas.decode_record(OutputKind::Feature, &bytes).unwrap();
        assert_eq!(rec["env"], "prod");
        assert_eq!(rec["project"], JsonValue::Null);
        assert_eq!(rec["samplingRatio"], 3);
        let (late, _) = cases().pop().unwrap();
        let bytes = schemas.encode(&late).unwrap();
        let rec = schemas.decode_record(OutputKind::Late, &bytes).unwrap();
        assert_eq!(rec["windowEnd"], 60_000);
        assert_eq!(rec["event"]["type"], "evaluation");
    }

    #[test]
    fn debug_records_use_the_feature_schema() {
        let schemas = Schemas::load();
        let (debug, _) = &cases()[3];
        let bytes = schemas.encode(debug).unwrap();
        assert_eq!(
            schemas.decode(OutputKind::Feature, &bytes).unwrap(),
            schemas.decode(OutputKind::Debug, &bytes).unwrap()
        );
    }

    #[test]
    fn bad_records_are_errors_never_panics() {
        let schemas = Schemas::load();
        let bytes = schemas.encode(&Output::Summary(summary())).unwrap();
        let err = |kind, b: &[u8]| match schemas.decode(kind, b) {
            Err(EmitError::Avro { kind, detail }) => format!("{kind}: {detail}"),
            Ok(v) => panic!("decoded {v}"),
        };
        assert!(err(OutputKind::Summary, b"").contains("too short"));
        assert!(err(OutputKind::Summary, &[0u8; 12]).contains("not single-object"));
        let wrong = err(OutputKind::Feature, &bytes);
        assert!(wrong.contains("feature.avsc"), "{wrong}");
        let ours = native::hex(&schemas.fingerprint(OutputKind::Summary).unwrap());
        assert!(wrong.contains(&ours), "{wrong}");
        for len in 10..bytes.len() {
            err(OutputKind::Summary, &bytes[..len]);
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(err(OutputKind::Summary, &long).contains("unread"));
        for i in 10..bytes.len() {
            for b in [0x00, 0x7F, 0x80, 0xFF] {
                let mut flipped = bytes.clone();
                flipped[i] = b;
                let _ = schemas.decode(OutputKind::Summary, &flipped);
                let _ = schemas.decode_record(OutputKind::Summary, &flipped);
            }
        }
    }

    #[test]
    fn huge_counts_saturate() {
        let mut s = summary();
        s.counters[0].count = u64::MAX;
        let schemas = Schemas::load();
        let bytes = schemas.encode(&Output::Summary(s)).unwrap();
        let back = schemas.decode(OutputKind::Summary, &bytes).unwrap();
        assert_eq!(back["features"]["flag1"]["counters"][0]["count"], i64::MAX);
    }
}
