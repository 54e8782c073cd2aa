//! Reads flagtally's Avro output back (tests only): a record as the LaunchDarkly JSON
//! event the JSON emitter writes for the same output, or whole, with its provenance.
//! apache-avro reads the datum, so this is also the oracle that the direct writer's
//! bytes are what the schemas say.

use apache_avro::types::Value;
use serde_json::{Map, Value as JsonValue};

use super::{EmitError, OutputKind, Schemas, error, record};
use crate::avro::{self, wire};
use crate::event::FlagVersion;

impl Schemas {
    /// Reads a record of `kind` back as the LaunchDarkly JSON event (no provenance):
    /// what the JSON emitter writes for the same output. A late record reads back as
    /// the canonical event in native JSON.
    pub fn decode(&self, kind: OutputKind, bytes: &[u8]) -> Result<JsonValue, EmitError> {
        if kind == OutputKind::Late {
            let mut r = wire::Reader::new(self.datum(kind, bytes)?);
            let event = avro::event::read_event(&mut r, "event").map_err(|p| error(kind, p))?;
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
        if header[..2] != avro::SINGLE_OBJECT_MAGIC {
            return Err(error(
                kind,
                format!(
                    "not single-object encoding: starts with {}, expected c301",
                    avro::hex(&header[..2])
                ),
            ));
        }
        if header[2..] != *parsed.fingerprint() {
            return Err(error(
                kind,
                format!(
                    "schema fingerprint {} is not {}'s {}",
                    avro::hex(&header[2..]),
                    record(kind).file(),
                    avro::hex(parsed.fingerprint())
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
