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
//! Both forms end in the same `validate`: bounded, non-empty keys, sorted distinct
//! contexts, sane times. Invariant: for every valid event, `encode_avro` and
//! `serde_json::to_vec` both round-trip to an equal [`Event`] (except that native JSON
//! reads an optional JSON payload of `null` as absent).
//!
//! Avro is read and written by a direct codec for the fixed schema (`wire`), about
//! ten times faster than apache-avro's generic values; apache-avro parses the schema,
//! computes its fingerprint, and is the tests' oracle for every byte.

use std::borrow::Cow;
use std::io::Read;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use compact_str::CompactString;
use serde::Deserialize;
use serde_json::value::RawValue;
use smallvec::SmallVec;

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

    /// Writes `value` as single-object encoding with apache-avro (the tests' oracle).
    #[cfg(test)]
    pub(crate) fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&self.header);
        apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
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
    let mut r = wire::Reader::new(datum);
    let mut event = read_event(&mut r, "").map_err(|p| p.into_decode_error(d))?;
    if !r.is_empty() {
        return Err(avro_err(format!(
            "{} unread bytes after the datum",
            r.remaining()
        )));
    }
    validate(&mut event, d, "", limits)?;
    Ok(event)
}

/// Encodes `event` as native Avro: single-object encoding with `schemas/event.avsc`.
///
/// Counts and sampling ratios above `i64::MAX` are written as `i64::MAX` (Avro has no
/// unsigned long). Empty only if `event.avsc` does not parse, which a test rules out.
pub fn encode_avro(event: &Event) -> Vec<u8> {
    let Ok(native) = event_schema() else {
        return Vec::new();
    };
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&native.header);
    write_event(event, &mut buf);
    buf
}

/// Avro's binary encoding, for the fixed schemas in `schemas/`.
///
/// Writing and reading records field by field in schema order, instead of through
/// apache-avro's generic `Value` tree (a cloned field name per field, a box per union,
/// a hash map per record), is about ten times faster. The schemas' fingerprints are
/// pinned by a test, and tests check these codecs byte for byte against apache-avro.
pub(crate) mod wire {
    use crate::event::{FlagVersion, VariationRef};

    pub(crate) fn long(buf: &mut Vec<u8>, n: i64) {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z >= 0x80 {
            buf.push((z as u8) | 0x80);
            z >>= 7;
        }
        buf.push(z as u8);
    }

    /// A count, saturated to `i64::MAX` (Avro has no unsigned long).
    pub(crate) fn count(buf: &mut Vec<u8>, n: u64) {
        long(buf, i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn string(buf: &mut Vec<u8>, s: &str) {
        long(buf, s.len() as i64);
        buf.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn boolean(buf: &mut Vec<u8>, b: bool) {
        buf.push(u8::from(b));
    }

    /// `["null", "string"]`.
    pub(crate) fn opt_string(buf: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => long(buf, 0),
            Some(s) => {
                long(buf, 1);
                string(buf, s);
            }
        }
    }

    /// `["null", "long"]`.
    pub(crate) fn opt_long(buf: &mut Vec<u8>, n: Option<i64>) {
        match n {
            None => long(buf, 0),
            Some(n) => {
                long(buf, 1);
                long(buf, n);
            }
        }
    }

    /// `["null", "double"]`.
    pub(crate) fn opt_double(buf: &mut Vec<u8>, n: Option<f64>) {
        match n {
            None => long(buf, 0),
            Some(n) => {
                long(buf, 1);
                buf.extend_from_slice(&n.to_le_bytes());
            }
        }
    }

    /// `["null", "boolean"]`.
    pub(crate) fn opt_bool(buf: &mut Vec<u8>, b: Option<bool>) {
        match b {
            None => long(buf, 0),
            Some(b) => {
                long(buf, 1);
                boolean(buf, b);
            }
        }
    }

    /// A version as `["null", "long", "string"]`.
    pub(crate) fn version(buf: &mut Vec<u8>, v: Option<&FlagVersion>) {
        match v {
            None => long(buf, 0),
            Some(FlagVersion::Int(n)) => {
                long(buf, 1);
                long(buf, *n);
            }
            Some(FlagVersion::Str(s)) => {
                long(buf, 2);
                string(buf, s);
            }
        }
    }

    /// A variation as one `["null", "long", "string"]` (index or name).
    pub(crate) fn variation(buf: &mut Vec<u8>, v: Option<&VariationRef>) {
        match v {
            None => long(buf, 0),
            Some(VariationRef::Index(i)) => {
                long(buf, 1);
                long(buf, i64::from(*i));
            }
            Some(VariationRef::Name(s)) => {
                long(buf, 2);
                string(buf, s);
            }
        }
    }

    /// A variation as LaunchDarkly's two fields, `variation` (`["null", "long"]`, an
    /// index) then `variationName` (`["null", "string"]`, a name).
    pub(crate) fn variation_pair(buf: &mut Vec<u8>, v: Option<&VariationRef>) {
        match v {
            None => opt_long(buf, None),
            Some(VariationRef::Index(i)) => opt_long(buf, Some(i64::from(*i))),
            Some(VariationRef::Name(_)) => opt_long(buf, None),
        }
        match v {
            Some(VariationRef::Name(s)) => opt_string(buf, Some(s)),
            _ => opt_string(buf, None),
        }
    }

    /// An array: one block of `items` then the end marker.
    pub(crate) fn array<T>(buf: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
        if !items.is_empty() {
            long(buf, items.len() as i64);
            for i in items {
                item(buf, i);
            }
        }
        long(buf, 0);
    }

    /// Reads a datum; every error says what was wrong, the caller says where.
    #[derive(Debug)]
    pub(crate) struct Reader<'a> {
        rest: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub(crate) fn new(datum: &'a [u8]) -> Self {
            Self { rest: datum }
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.rest.is_empty()
        }

        pub(crate) fn remaining(&self) -> usize {
            self.rest.len()
        }

        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if n > self.rest.len() {
                return Err(format!(
                    "the datum is truncated: {n} bytes needed, {} left",
                    self.rest.len()
                ));
            }
            let (head, tail) = self.rest.split_at(n);
            self.rest = tail;
            Ok(head)
        }

        pub(crate) fn long(&mut self) -> Result<i64, String> {
            let mut z: u64 = 0;
            for i in 0..10 {
                let [b] = self.take(1)?.try_into().map_err(|_| String::new())?;
                z |= u64::from(b & 0x7F) << (7 * i);
                if b & 0x80 == 0 {
                    return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
                }
            }
            Err("a variable-length integer longer than 10 bytes".into())
        }

        /// A non-negative long that fits the rest of the datum (a length or a count of
        /// items that take at least a byte each).
        fn len(&mut self) -> Result<usize, String> {
            let n = self.long()?;
            let len = usize::try_from(n).map_err(|_| format!("negative length {n}"))?;
            if len > self.rest.len() {
                return Err(format!(
                    "the datum is truncated: a length of {len}, {} bytes left",
                    self.rest.len()
                ));
            }
            Ok(len)
        }

        /// A union branch or enum symbol index below `n`.
        pub(crate) fn index(&mut self, n: usize) -> Result<usize, String> {
            let i = self.long()?;
            usize::try_from(i)
                .ok()
                .filter(|i| *i < n)
                .ok_or_else(|| format!("index {i} is not below {n}"))
        }

        pub(crate) fn str(&mut self) -> Result<&'a str, String> {
            let len = self.len()?;
            std::str::from_utf8(self.take(len)?).map_err(|e| format!("not UTF-8: {e}"))
        }

        pub(crate) fn boolean(&mut self) -> Result<bool, String> {
            match self.take(1)? {
                [0] => Ok(false),
                [1] => Ok(true),
                b => Err(format!("boolean byte 0x{:02x}", b[0])),
            }
        }

        pub(crate) fn double(&mut self) -> Result<f64, String> {
            let bytes: [u8; 8] = self.take(8)?.try_into().map_err(|_| String::new())?;
            Ok(f64::from_le_bytes(bytes))
        }

        pub(crate) fn opt<T>(
            &mut self,
            read: impl FnOnce(&mut Self) -> Result<T, String>,
        ) -> Result<Option<T>, String> {
            match self.index(2)? {
                0 => Ok(None),
                _ => read(self).map(Some),
            }
        }

        pub(crate) fn opt_str(&mut self) -> Result<Option<&'a str>, String> {
            self.opt(Self::str)
        }

        pub(crate) fn opt_long(&mut self) -> Result<Option<i64>, String> {
            self.opt(Self::long)
        }

        /// `["null", "long", "string"]`: `Ok(Err(n))` for a long, `Ok(Ok(s))` for a
        /// string.
        pub(crate) fn long_or_str(&mut self) -> Result<Option<Result<&'a str, i64>>, String> {
            match self.index(3)? {
                0 => Ok(None),
                1 => self.long().map(|n| Some(Err(n))),
                _ => self.str().map(|s| Some(Ok(s))),
            }
        }

        /// The next block's item count; 0 ends the array. (A negative count is followed
        /// by the block's size in bytes, which is skipped.)
        pub(crate) fn block(&mut self) -> Result<usize, String> {
            let n = self.long()?;
            if n < 0 {
                self.long()?;
            }
            let count = usize::try_from(n.unsigned_abs())
                .map_err(|_| format!("array block of {n} items"))?;
            if count > self.rest.len() {
                return Err(format!(
                    "the datum is truncated: an array block of {count} items, {} bytes left",
                    self.rest.len()
                ));
            }
            Ok(count)
        }

        /// Reads an array, calling `item` with each item's index.
        pub(crate) fn array<E>(
            &mut self,
            mut item: impl FnMut(&mut Self, usize) -> Result<(), E>,
            wrap: impl Fn(String) -> E,
        ) -> Result<(), E> {
            let mut i = 0;
            loop {
                let n = self.block().map_err(&wrap)?;
                if n == 0 {
                    return Ok(());
                }
                for _ in 0..n {
                    item(self, i)?;
                    i += 1;
                }
            }
        }
    }
}

const TYPES: [&str; 6] = [
    "evaluation",
    "custom",
    "identify",
    "index",
    "summary",
    "passThrough",
];

/// An event's fields in `event.avsc` order, set or not according to its type.
#[derive(Default)]
struct Flat<'a> {
    ty: usize,
    flag_key: Option<&'a str>,
    key: Option<&'a str>,
    kind: Option<&'a str>,
    creation_date: Option<EventTime>,
    variation: Option<&'a VariationRef>,
    version: Option<&'a FlagVersion>,
    value: Option<&'a Json>,
    default: Option<&'a Json>,
    context: Option<&'a Contexts>,
    reason: Option<&'a Json>,
    in_experiment: bool,
    prereq_of: Option<&'a str>,
    track_events: Option<bool>,
    debug_events_until_date: Option<EventTime>,
    sampling_ratio: Option<u64>,
    exclude_from_summaries: bool,
    debug: bool,
    meta: Option<&'a Json>,
    data: Option<&'a Json>,
    metric_value: Option<f64>,
    start_date: Option<EventTime>,
    end_date: Option<EventTime>,
    features: &'a [SummaryFlag],
    body: Option<&'a Json>,
}

/// Writes `event` as an `event.avsc` datum.
pub(crate) fn write_event(event: &Event, buf: &mut Vec<u8>) {
    let f = match event {
        Event::Evaluation(e) => Flat {
            ty: 0,
            flag_key: Some(&e.flag_key),
            creation_date: Some(e.creation_date),
            variation: e.variation.as_ref(),
            version: e.version.as_ref(),
            value: Some(&e.value),
            default: e.default.as_ref(),
            context: Some(&e.context),
            reason: e.reason.as_ref(),
            in_experiment: e.in_experiment,
            prereq_of: e.prereq_of.as_deref(),
            track_events: e.track_events,
            debug_events_until_date: e.debug_events_until_date,
            sampling_ratio: e.sampling_ratio,
            exclude_from_summaries: e.exclude_from_summaries,
            debug: e.debug,
            meta: e.meta.as_ref(),
            ..Flat::default()
        },
        Event::Custom(e) => Flat {
            ty: 1,
            key: Some(&e.key),
            creation_date: Some(e.creation_date),
            context: Some(&e.context),
            sampling_ratio: e.sampling_ratio,
            data: e.data.as_ref(),
            metric_value: e.metric_value,
            ..Flat::default()
        },
        Event::Identify(e) | Event::Index(e) => Flat {
            ty: if matches!(event, Event::Identify(_)) {
                2
            } else {
                3
            },
            creation_date: Some(e.creation_date),
            context: Some(&e.context),
            sampling_ratio: e.sampling_ratio,
            ..Flat::default()
        },
        Event::Summary(s) => Flat {
            ty: 4,
            start_date: Some(s.start_date),
            end_date: Some(s.end_date),
            features: &s.features,
            ..Flat::default()
        },
        Event::PassThrough(p) => Flat {
            ty: 5,
            kind: Some(&p.kind),
            creation_date: p.creation_date,
            body: Some(&p.body),
            ..Flat::default()
        },
    };
    let scope = event.scope();
    let json = |buf: &mut Vec<u8>, j: Option<&Json>| wire::opt_string(buf, j.map(Json::as_str));
    let ms = |t: Option<EventTime>| t.map(EventTime::as_millis);
    wire::long(buf, f.ty as i64);
    wire::opt_string(buf, scope.project.as_deref());
    wire::opt_string(buf, scope.env.as_deref());
    wire::opt_string(buf, f.flag_key);
    wire::opt_string(buf, f.key);
    wire::opt_string(buf, f.kind);
    wire::opt_long(buf, ms(f.creation_date));
    wire::variation(buf, f.variation);
    wire::version(buf, f.version);
    json(buf, f.value);
    json(buf, f.default);
    match f.context {
        None => wire::long(buf, 0),
        Some(c) => {
            wire::long(buf, 1);
            wire::array(buf, &c.keys, |buf, k| {
                wire::string(buf, &k.kind);
                wire::string(buf, &k.key);
            });
            json(buf, c.body.as_ref());
        }
    }
    json(buf, f.reason);
    wire::boolean(buf, f.in_experiment);
    wire::opt_string(buf, f.prereq_of);
    wire::opt_bool(buf, f.track_events);
    wire::opt_long(buf, ms(f.debug_events_until_date));
    wire::opt_long(
        buf,
        f.sampling_ratio
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
    );
    wire::boolean(buf, f.exclude_from_summaries);
    wire::boolean(buf, f.debug);
    json(buf, f.meta);
    json(buf, f.data);
    wire::opt_double(buf, f.metric_value);
    wire::opt_long(buf, ms(f.start_date));
    wire::opt_long(buf, ms(f.end_date));
    wire::array(buf, f.features, |buf, flag| {
        wire::string(buf, &flag.key);
        json(buf, flag.default.as_ref());
        wire::array(buf, &flag.counters, |buf, c| {
            wire::variation(buf, c.variation.as_ref());
            wire::version(buf, c.version.as_ref());
            wire::string(buf, c.value.as_str());
            wire::count(buf, c.count);
        });
        wire::array(buf, &flag.context_kinds, |buf, k| wire::string(buf, k));
    });
    json(buf, f.body);
}

/// What is wrong with a field of an Avro datum.
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

/// Reads one `event.avsc` datum (at `prefix`, for error paths) from `r`, leaving what
/// follows it.
pub(crate) fn read_event(r: &mut wire::Reader<'_>, prefix: &str) -> Result<Event, Problem> {
    let problem = |field: &str, reason: Reason| Problem {
        path: at(prefix, field),
        reason,
    };
    let avro = |field: &'static str| move |m: String| problem(field, Reason::Avro(m));
    let ty = r.index(TYPES.len()).map_err(avro("type"))?;
    let project = r.opt_str().map_err(avro("project"))?;
    let env = r.opt_str().map_err(avro("env"))?;
    let flag_key = r.opt_str().map_err(avro("flagKey"))?;
    let key = r.opt_str().map_err(avro("key"))?;
    let kind = r.opt_str().map_err(avro("kind"))?;
    let creation_date = r.opt_long().map_err(avro("creationDate"))?;
    let variation = r.long_or_str().map_err(avro("variation"))?;
    let version = r.long_or_str().map_err(avro("version"))?;
    let value = r.opt_str().map_err(avro("value"))?;
    let default = r.opt_str().map_err(avro("default"))?;
    let mut context = match r.index(2).map_err(avro("context"))? {
        0 => None,
        _ => {
            let mut keys = SmallVec::new();
            r.array(
                |r, i| {
                    let mut s = || -> Result<CompactString, Problem> {
                        r.str()
                            .map(CompactString::from)
                            .map_err(|m| problem(&format!("context.keys[{i}]"), Reason::Avro(m)))
                    };
                    let kind = s()?;
                    let key = s()?;
                    keys.push(ContextKey { kind, key });
                    Ok(())
                },
                avro("context.keys"),
            )?;
            let body = r.opt_str().map_err(avro("context.body"))?;
            Some((keys, body))
        }
    };
    let reason = r.opt_str().map_err(avro("reason"))?;
    let in_experiment = r.boolean().map_err(avro("inExperiment"))?;
    let prereq_of = r.opt_str().map_err(avro("prereqOf"))?;
    let track_events = r.opt(wire::Reader::boolean).map_err(avro("trackEvents"))?;
    let debug_until = r.opt_long().map_err(avro("debugEventsUntilDate"))?;
    let sampling_ratio = r.opt_long().map_err(avro("samplingRatio"))?;
    let exclude_from_summaries = r.boolean().map_err(avro("excludeFromSummaries"))?;
    let debug = r.boolean().map_err(avro("debug"))?;
    let meta = r.opt_str().map_err(avro("meta"))?;
    let data = r.opt_str().map_err(avro("data"))?;
    let metric_value = r.opt(wire::Reader::double).map_err(avro("metricValue"))?;
    let start_date = r.opt_long().map_err(avro("startDate"))?;
    let end_date = r.opt_long().map_err(avro("endDate"))?;
    let mut features = Vec::new();
    r.array(
        |r, i| {
            features.push(read_summary_flag(
                r,
                &at(prefix, &format!("features[{i}]")),
            )?);
            Ok(())
        },
        avro("features"),
    )?;
    let body = r.opt_str().map_err(avro("body"))?;

    // The fields of the type, checked.
    let missing = |field: &str| problem(field, Reason::Missing);
    let json = |v: Option<&str>, field: &str| {
        v.map(|text| Json::parse(text).map_err(|e| problem(field, Reason::Syntax(e.to_string()))))
            .transpose()
    };
    let time =
        |v: Option<i64>, field: &str| v.map(EventTime::from_millis).ok_or_else(|| missing(field));
    let unsigned = |v: Option<i64>, field: &str| {
        v.map(|n| {
            u64::try_from(n)
                .map_err(|_| problem(field, Reason::Invalid(format!("{n} is negative"))))
        })
        .transpose()
    };
    let mut contexts = || -> Result<Contexts, Problem> {
        let (keys, body) = context.take().ok_or_else(|| missing("context"))?;
        Ok(Contexts {
            keys,
            body: json(body, "context.body")?,
        })
    };
    let scope = Scope {
        project: project.map(CompactString::from),
        env: env.map(CompactString::from),
    };
    Ok(match ty {
        0 => Event::evaluation(Evaluation {
            scope,
            flag_key: flag_key.ok_or_else(|| missing("flagKey"))?.into(),
            variation: variation_ref(variation, &|r| problem("variation", r))?,
            version: version.map(flag_version),
            value: json(Some(value.ok_or_else(|| missing("value"))?), "value")?
                .unwrap_or_else(Json::null),
            default: json(default, "default")?,
            context: contexts()?,
            creation_date: time(creation_date, "creationDate")?,
            reason: json(reason, "reason")?,
            in_experiment,
            prereq_of: prereq_of.map(CompactString::from),
            track_events,
            debug_events_until_date: debug_until.map(EventTime::from_millis),
            sampling_ratio: unsigned(sampling_ratio, "samplingRatio")?,
            exclude_from_summaries,
            debug,
            counted_by_summary: false,
            meta: json(meta, "meta")?,
        }),
        1 => Event::Custom(Box::new(Custom {
            scope,
            key: key.ok_or_else(|| missing("key"))?.into(),
            context: contexts()?,
            data: json(data, "data")?,
            metric_value,
            creation_date: time(creation_date, "creationDate")?,
            sampling_ratio: unsigned(sampling_ratio, "samplingRatio")?,
        })),
        2 | 3 => {
            let e = ContextEvent {
                scope,
                context: contexts()?,
                creation_date: time(creation_date, "creationDate")?,
                sampling_ratio: unsigned(sampling_ratio, "samplingRatio")?,
            };
            if ty == 2 {
                Event::Identify(Box::new(e))
            } else {
                Event::Index(Box::new(e))
            }
        }
        4 => Event::Summary(Box::new(Summary {
            scope,
            start_date: time(start_date, "startDate")?,
            end_date: time(end_date, "endDate")?,
            features,
        })),
        _ => Event::PassThrough(Box::new(PassThrough {
            scope,
            kind: kind.ok_or_else(|| missing("kind"))?.into(),
            body: json(Some(body.ok_or_else(|| missing("body"))?), "body")?
                .unwrap_or_else(Json::null),
            creation_date: creation_date.map(EventTime::from_millis),
        })),
    })
}

fn flag_version(v: Result<&str, i64>) -> FlagVersion {
    match v {
        Err(n) => FlagVersion::Int(n),
        Ok(s) => FlagVersion::Str(s.into()),
    }
}

fn variation_ref(
    v: Option<Result<&str, i64>>,
    problem: &dyn Fn(Reason) -> Problem,
) -> Result<Option<VariationRef>, Problem> {
    match v {
        None => Ok(None),
        Some(Ok(name)) => Ok(Some(VariationRef::Name(name.into()))),
        Some(Err(n)) => u32::try_from(n)
            .map(|i| Some(VariationRef::Index(i)))
            .map_err(|_| {
                problem(Reason::Invalid(format!(
                    "variation index {n} is outside 0..=4294967295"
                )))
            }),
    }
}

fn read_summary_flag(r: &mut wire::Reader<'_>, path: &str) -> Result<SummaryFlag, Problem> {
    let problem = |field: &str, reason: Reason| Problem {
        path: at(path, field),
        reason,
    };
    let avro = |field: &'static str| move |m: String| problem(field, Reason::Avro(m));
    let key = r.str().map_err(avro("key"))?.into();
    let default = r
        .opt_str()
        .map_err(avro("default"))?
        .map(|t| Json::parse(t).map_err(|e| problem("default", Reason::Syntax(e.to_string()))))
        .transpose()?;
    let mut counters = Vec::new();
    r.array(
        |r, i| {
            let field = |f: &str| format!("counters[{i}].{f}");
            let wrap = |f: &str| {
                let p = field(f);
                move |m: String| problem(&p, Reason::Avro(m))
            };
            let variation = r.long_or_str().map_err(wrap("variation"))?;
            let version = r.long_or_str().map_err(wrap("version"))?;
            let value = r.str().map_err(wrap("value"))?;
            let count = r.long().map_err(wrap("count"))?;
            counters.push(SummaryCounter {
                variation: variation_ref(variation, &|reason| {
                    problem(&field("variation"), reason)
                })?,
                version: version.map(flag_version),
                value: Json::parse(value)
                    .map_err(|e| problem(&field("value"), Reason::Syntax(e.to_string())))?,
                count: u64::try_from(count).map_err(|_| {
                    problem(
                        &field("count"),
                        Reason::Invalid(format!("{count} is negative")),
                    )
                })?,
            });
            Ok(())
        },
        avro("counters"),
    )?;
    let mut context_kinds = Vec::new();
    r.array(
        |r, i| {
            let k = r
                .str()
                .map_err(|m| problem(&format!("contextKinds[{i}]"), Reason::Avro(m)))?;
            context_kinds.push(k.into());
            Ok(())
        },
        avro("contextKinds"),
    )?;
    Ok(SummaryFlag {
        key,
        default,
        counters,
        context_kinds,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
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
