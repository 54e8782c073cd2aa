//! The native dialect: flagtally's canonical [`Event`], as JSON or as Avro.
//!
//! - **JSON** (`native`): the serde form of [`Event`], tagged by `"type"`; one object or
//!   an array of them, each element decoded on its own (`[3].context.keys`).
//! - **Avro** (`native-avro`): one record of `schemas/event.avsc` per Kafka record, in
//!   the Confluent wire format (`0x00`, a 4-byte big-endian schema id, the datum; any
//!   id is accepted, since there is one native schema) or Avro single-object encoding
//!   (`0xC3 0x01`, the schema's 8-byte CRC-64-AVRO fingerprint, the datum; the
//!   fingerprint must be `event.avsc`'s). [`crate::avro::encode_event`] writes the
//!   latter.
//!
//! Both forms end in the same `validate`: bounded, non-empty keys, sorted distinct
//! contexts, sane times. Invariant: for every valid event, `avro::encode_event` and
//! `serde_json::to_vec` both round-trip to an equal [`Event`] (except that native JSON
//! reads an optional JSON payload of `null` as absent).
//!
//! The Avro framing and the event codec live in [`crate::avro`]; this module checks
//! the frame's schema and validates what the codec read.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::util::{at, parse};
use super::{DecodeError, Decoded, Dialect, Limits, Reason};
use crate::avro::event::{Fault, Problem, read_event};
use crate::avro::{CONFLUENT_MAGIC, event_schema, hex, wire};
use crate::event::{Contexts, Event, EventTime, FlagVersion, Scope, VariationRef};
use crate::registry::writers::{Lookup, Writer, Writers};

/// Latest accepted time (JavaScript's limit, as in [`EventTime::from_unit`]).
const MAX_MILLIS: i64 = 8_640_000_000_000_000;

/// The decode error for what the Avro codec found wrong.
fn problem_error(p: Problem, d: Dialect) -> DecodeError {
    let reason = match p.fault {
        Fault::Avro(m) => Reason::Avro(m),
        Fault::Missing => Reason::Missing,
        Fault::Syntax(m) => Reason::Syntax(m),
        Fault::Invalid(m) => Reason::Invalid(m),
    };
    DecodeError::new(d, p.path, reason)
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
        "evaluation" => Event::evaluation(variant(prefix, bytes)?),
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
                crate::decode::check_kinds(f.context_kinds.len())
                    .map_err(|r| v.err(&format!("{p}.contextKinds"), r))?;
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
        crate::decode::check_kinds(c.keys.len()).map_err(|r| self.err(&keys_path, r))?;
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
pub(crate) fn decode_avro(
    value: &[u8],
    limits: &Limits,
    writers: Option<&Writers>,
    out: &mut Decoded,
) {
    push(avro_event(value, limits, writers), out);
}

fn avro_err(reason: impl Into<String>) -> DecodeError {
    DecodeError::new(Dialect::NativeAvro, "", Reason::Avro(reason.into()))
}

fn avro_event(
    value: &[u8],
    limits: &Limits,
    writers: Option<&Writers>,
) -> Result<Event, DecodeError> {
    let d = Dialect::NativeAvro;
    let native = event_schema().map_err(avro_err)?;
    let resolved;
    let datum = match value {
        [] => return Err(DecodeError::new(d, "", Reason::Empty)),
        [CONFLUENT_MAGIC, rest @ ..] => {
            let (Some(id), Some(datum)) = (rest.get(..4), rest.get(4..)) else {
                return Err(avro_err(format!(
                    "Confluent wire format: the 0x00 magic byte must be followed by a \
                     4-byte schema id, but the record has {} bytes",
                    value.len()
                )));
            };
            let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
            match writers.map(|w| w.get(id)) {
                // No registry: the id is taken to be event.avsc's.
                None => datum,
                Some(Lookup::Found(writer)) => match &*writer {
                    Writer::Native => datum,
                    Writer::Other(schema) => {
                        resolved = crate::avro::resolve_datum(schema, native, datum)
                            .map_err(|e| avro_err(format!("schema id {id}: {e}")))?;
                        &resolved
                    }
                },
                Some(Lookup::Unknown(why)) => {
                    return Err(DecodeError::new(d, "", Reason::UnknownSchema(why)));
                }
                Some(Lookup::Unavailable(why)) => {
                    return Err(DecodeError::new(d, "", Reason::RegistryUnavailable(why)));
                }
            }
        }
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
    let mut r = wire::Reader::new(datum);
    let mut event = read_event(&mut r, "").map_err(|p| problem_error(p, d))?;
    if !r.is_empty() {
        return Err(avro_err(format!(
            "{} unread bytes after the datum",
            r.remaining()
        )));
    }
    validate(&mut event, d, "", limits)?;
    Ok(event)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::avro::event::TYPES;
    use crate::avro::{SINGLE_OBJECT_MAGIC, encode_event as encode_avro};
    use crate::event::{
        ContextEvent, ContextKey, Custom, Evaluation, FlagVersion, Json, PassThrough, Summary,
        SummaryCounter, SummaryFlag, VariationRef,
    };
    use apache_avro::types::Value;
    use proptest::prelude::*;

    // The oracle: events as apache-avro `Value`s, which apache-avro validates against
    // the schema and encodes; the direct codec must agree byte for byte.

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

    pub(crate) fn variation_value(v: Option<&VariationRef>) -> Value {
        match v {
            None => null(),
            Some(VariationRef::Index(i)) => Value::Union(1, Box::new(Value::Long(i64::from(*i)))),
            Some(VariationRef::Name(s)) => Value::Union(2, Box::new(Value::String(s.to_string()))),
        }
    }

    pub(crate) fn saturating(n: u64) -> i64 {
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    pub(crate) fn json_opt(j: Option<&Json>) -> Value {
        opt_string(j.map(Json::as_str))
    }

    pub(crate) fn contexts_value(c: &Contexts) -> Value {
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
            counted_by_summary: false,
            meta: Some(j(
                r#"{"source":"SERVER","metadata":{"environment":"production"}}"#,
            )),
        }
    }

    /// One event of every variant, plus the awkward cases: names and string versions,
    /// nothing optional, multi-contexts, a zero metric, unicode.
    pub(crate) fn events() -> Vec<Event> {
        let minimal = Evaluation::new(
            "f",
            Contexts::single("user", "u"),
            EventTime::from_millis(0),
        );
        let named = Evaluation {
            variation: Some(VariationRef::Name("Variation ✓".into())),
            version: Some(FlagVersion::Str("127".into())),
            context: multi(),
            track_events: Some(true),
            ..minimal.clone()
        };
        vec![
            Event::evaluation(evaluation()),
            Event::evaluation(minimal),
            Event::evaluation(named),
            Event::Custom(Box::new(Custom {
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
            })),
            Event::Custom(Box::new(Custom {
                scope: Scope::default(),
                key: "k".into(),
                context: Contexts::single("org", "o"),
                data: None,
                metric_value: Some(-2.5),
                creation_date: EventTime::from_millis(6),
                sampling_ratio: None,
            })),
            Event::Identify(Box::new(ContextEvent {
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
            })),
            Event::Index(Box::new(ContextEvent {
                scope: Scope {
                    project: Some("p".into()),
                    env: None,
                },
                context: multi(),
                creation_date: EventTime::from_millis(8),
                sampling_ratio: None,
            })),
            Event::Summary(Box::new(Summary {
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
            })),
            Event::PassThrough(Box::new(PassThrough {
                scope: Scope::default(),
                kind: "alias".into(),
                body: j(r#"{"kind":"alias","key":"new","previousKey":"old","creationDate":9}"#),
                creation_date: Some(EventTime::from_millis(9)),
            })),
            Event::PassThrough(Box::new(PassThrough {
                scope: Scope::default(),
                kind: "future".into(),
                body: j(r#"{"kind":"future"}"#),
                creation_date: None,
            })),
        ]
    }

    fn json(text: &str) -> Decoded {
        let mut out = Decoded::default();
        decode_json(text.as_bytes(), &Limits::default(), &mut out);
        out
    }

    fn avro(bytes: &[u8]) -> Decoded {
        let mut out = Decoded::default();
        decode_avro(bytes, &Limits::default(), None, &mut out);
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

    /// The direct codec against apache-avro: the same bytes out, the same value in.
    fn check_against_apache_avro(event: &Event) {
        let native = event_schema().unwrap();
        let oracle = event_to_value(event);
        let direct = encode_avro(event);
        assert_eq!(native.encode(&oracle).unwrap(), direct, "{event:?}");
        assert_eq!(native.read_datum(&direct[10..]).unwrap(), oracle);
    }

    #[test]
    fn the_direct_codec_matches_apache_avro() {
        for event in events() {
            check_against_apache_avro(&event);
        }
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z]{1,8}", "\\PC{1,40}", "[a-z]{130,140}"]
    }

    fn arb_variation() -> impl Strategy<Value = Option<VariationRef>> {
        prop_oneof![
            Just(None),
            any::<u32>().prop_map(|i| Some(VariationRef::Index(i))),
            arb_text().prop_map(|s| Some(VariationRef::Name(s.into()))),
        ]
    }

    fn arb_version() -> impl Strategy<Value = Option<FlagVersion>> {
        prop_oneof![
            Just(None),
            any::<i64>().prop_map(|n| Some(FlagVersion::Int(n))),
            arb_text().prop_map(|s| Some(FlagVersion::Str(s.into()))),
        ]
    }

    prop_compose! {
        fn arb_evaluation()(
            flag in arb_text(),
            variation in arb_variation(),
            version in arb_version(),
            value in arb_text(),
            kind in "[a-z]{1,5}",
            key in arb_text(),
            ms in 0..MAX_MILLIS,
            sampling in proptest::option::of(any::<u64>()),
            track in proptest::option::of(any::<bool>()),
            flags in any::<(bool, bool, bool)>(),
        ) -> Event {
            let mut e = evaluation();
            e.flag_key = flag.into();
            e.variation = variation;
            e.version = version;
            e.value = Json::string(&value);
            e.context = Contexts::single(&kind, &key);
            e.creation_date = EventTime::from_millis(ms);
            e.sampling_ratio = sampling.filter(|n| i64::try_from(*n).is_ok());
            e.track_events = track;
            (e.in_experiment, e.debug, e.exclude_from_summaries) = flags;
            Event::evaluation(e)
        }
    }

    prop_compose! {
        fn arb_summary()(
            counters in proptest::collection::vec(
                (arb_variation(), arb_version(), 0..i64::MAX), 0..20),
            kinds in proptest::collection::vec("[a-z]{1,6}", 0..4),
            start in 0..MAX_MILLIS / 2,
            span in 0..MAX_MILLIS / 2,
        ) -> Event {
            Event::Summary(Box::new(Summary {
                scope: Scope::default(),
                start_date: EventTime::from_millis(start),
                end_date: EventTime::from_millis(start + span),
                features: vec![SummaryFlag {
                    key: "f".into(),
                    default: None,
                    counters: counters
                        .into_iter()
                        .map(|(variation, version, count)| SummaryCounter {
                            variation,
                            version,
                            value: Json::null(),
                            count: count as u64,
                        })
                        .collect(),
                    context_kinds: kinds.into_iter().map(Into::into).collect(),
                }],
            }))
        }
    }

    proptest! {
        #[test]
        fn arbitrary_events_match_apache_avro_and_round_trip(
            event in prop_oneof![arb_evaluation(), arb_summary()],
            metric in any::<f64>().prop_filter("finite", |m| m.is_finite()),
        ) {
            check_against_apache_avro(&event);
            let out = avro(&encode_avro(&event));
            prop_assert_eq!(out.events, vec![event]);
            let custom = Event::Custom(Box::new(Custom {
                scope: Scope::default(),
                key: "k".into(),
                context: Contexts::single("user", "u"),
                data: None,
                metric_value: Some(metric),
                creation_date: EventTime::from_millis(1),
                sampling_ratio: None,
            }));
            check_against_apache_avro(&custom);
            prop_assert_eq!(avro(&encode_avro(&custom)).events, vec![custom]);
        }
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
        let event = Event::evaluation(e);
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
