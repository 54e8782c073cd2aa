//! Decode: one Kafka record value → zero or more canonical [`Event`]s, plus one
//! [`DecodeError`] for each part that could not be read.
//!
//! One file per dialect. Every decoder is total: it never panics, whatever the bytes,
//! and a bad event inside an otherwise good batch costs only that event. Errors name
//! the dialect, the path of the field inside the record (`events[3].creationDate`) and
//! what was wrong, so a dead letter can be fixed at its source.

mod auto;
pub mod counting;
pub mod featbit;
pub mod goff;
pub mod launchdarkly;
mod limits;
pub mod native;
#[cfg(test)]
mod testing;
mod util;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::registry::writers::Writers;

/// An input dialect. `Auto` detects the dialect of each record (see `decode::auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    Auto,
    #[value(alias = "ld")]
    #[serde(alias = "ld")]
    Launchdarkly,
    #[value(alias = "go-feature-flag")]
    #[serde(alias = "go-feature-flag")]
    Goff,
    Featbit,
    /// flagtally's own schema as JSON (`schemas/event.json.md`).
    Native,
    /// flagtally's own schema as Avro (`schemas/event.avsc`), Confluent wire format or
    /// single-object encoding.
    NativeAvro,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Launchdarkly => "launchdarkly",
            Self::Goff => "goff",
            Self::Featbit => "featbit",
            Self::Native => "native",
            Self::NativeAvro => "native-avro",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What was wrong, as a closed set: the dead-letter `reason` header carries
/// [`Reason::code`], the `detail` header the whole message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("the record is empty")]
    Empty,
    #[error("the record is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("not valid UTF-8 (first bad byte at {0})")]
    Utf8(usize),
    #[error("missing required field")]
    Missing,
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("string of {len} bytes is over the limit of {limit}")]
    StringTooLong { len: usize, limit: usize },
    #[error("member name of {len} bytes at byte {at} is over the limit of {limit}")]
    NameTooLong { len: usize, limit: usize, at: usize },
    #[error("nested deeper than {limit} levels (at byte {at})")]
    TooDeep { limit: usize, at: usize },
    #[error("more than {limit} events in one record")]
    TooManyEvents { limit: usize },
    #[error("an envelope inside an envelope (one level at most)")]
    NestedEnvelope,
    #[error("dated {ahead_ms} ms past its record's timestamp, more than the {limit_ms} ms allowed")]
    FutureTime { ahead_ms: i64, limit_ms: i64 },
    #[error("unknown event kind {0:?}")]
    UnknownKind(String),
    #[error("no dialect recognises this record: {0}")]
    Undetected(String),
    #[error("avro: {0}")]
    Avro(String),
    /// A Confluent-framed record names a schema id the registry does not know (or
    /// whose schema flagtally cannot read).
    #[error("{0}")]
    UnknownSchema(String),
    /// The registry did not answer for the record's schema id.
    #[error("{0}")]
    RegistryUnavailable(String),
    #[error("{count} context kinds, over the limit of {limit}")]
    TooManyKinds { count: usize, limit: usize },
}

/// Most context kinds in one multi-kind context, and in one summary flag's
/// `contextKinds` (input and output alike): LaunchDarkly's contexts carry a handful. A
/// record past it is dead-lettered (`too_many_kinds`); a window's flag collects at most
/// this many distinct kinds from its evaluations, and further ones are left out of its
/// summary and counted (`flagtally_context_kinds_dropped_total`).
pub const MAX_CONTEXT_KINDS: usize = 64;

/// [`Reason::TooManyKinds`] when `count` is over [`MAX_CONTEXT_KINDS`].
pub(crate) fn check_kinds(count: usize) -> Result<(), Reason> {
    if count > MAX_CONTEXT_KINDS {
        return Err(Reason::TooManyKinds {
            count,
            limit: MAX_CONTEXT_KINDS,
        });
    }
    Ok(())
}

impl Reason {
    /// A stable, bounded code for metrics labels and dead-letter headers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLarge { .. } => "too_large",
            Self::Syntax(_) => "syntax",
            Self::Utf8(_) => "utf8",
            Self::Missing => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::Invalid(_) => "invalid_value",
            Self::StringTooLong { .. } => "string_too_long",
            Self::NameTooLong { .. } => "name_too_long",
            Self::TooDeep { .. } => "too_deep",
            Self::TooManyEvents { .. } => "too_many_events",
            Self::NestedEnvelope => "nested_envelope",
            Self::FutureTime { .. } => "future_time",
            Self::UnknownKind(_) => "unknown_kind",
            Self::Undetected(_) => "undetected",
            Self::Avro(_) => "avro",
            Self::UnknownSchema(_) => "unknown_schema",
            Self::RegistryUnavailable(_) => "registry_unavailable",
            Self::TooManyKinds { .. } => "too_many_kinds",
        }
    }
}

/// A part of a record that could not be decoded. It is dead-lettered, never dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{dialect}: {}: {reason}", if path.is_empty() { "record" } else { path.as_str() })]
pub struct DecodeError {
    pub dialect: Dialect,
    /// Where in the record: a JSON path such as `events[3].creationDate`; empty for
    /// the whole record.
    pub path: String,
    pub reason: Reason,
}

impl DecodeError {
    pub fn new(dialect: Dialect, path: impl Into<String>, reason: Reason) -> Self {
        Self {
            dialect,
            path: path.into(),
            reason,
        }
    }
}

/// Bounds on what one record may contain: input is untrusted. Each is checked in time
/// linear in the record, and each has its own dead-letter reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest record value accepted, in bytes.
    pub max_record_bytes: usize,
    /// Longest flag key, context kind or context key, event key, environment id, and
    /// JSON member name.
    pub max_key_bytes: usize,
    /// Deepest nesting of JSON arrays and objects.
    pub max_depth: usize,
    /// Longest JSON string value, in bytes as written (escapes included).
    pub max_string_bytes: usize,
    /// Most events in one record (elements of a batch array at the top level or one
    /// level down).
    pub max_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_bytes: 1 << 20,
            max_key_bytes: 1024,
            max_depth: 64,
            max_string_bytes: 256 << 10,
            max_events: 10_000,
        }
    }
}

/// What one record decoded into. Reused across records on the hot path.
#[derive(Debug, Default)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub errors: Vec<DecodeError>,
    /// The dialect the record was read as (detected under `auto`); `None` when it
    /// could not be told.
    pub dialect: Option<Dialect>,
}

impl Decoded {
    pub fn clear(&mut self) {
        self.events.clear();
        self.errors.clear();
        self.dialect = None;
    }
}

/// A dialect with its limits: the decode stage.
#[derive(Clone, Debug)]
pub struct Decoder {
    dialect: Dialect,
    limits: Limits,
    /// Native Avro in the Confluent wire format: its writer schemas, from the
    /// registry (`None`: every id is taken to be `event.avsc`).
    writers: Option<Arc<Writers>>,
}

impl Decoder {
    pub fn new(dialect: Dialect, limits: Limits) -> Self {
        Self {
            dialect,
            limits,
            writers: None,
        }
    }

    /// Resolves the schema ids of Confluent-framed native Avro with `writers`.
    pub fn with_writers(self, writers: Arc<Writers>) -> Self {
        Self {
            writers: Some(writers),
            ..self
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Decodes one record value, appending to `out`.
    pub fn decode(&self, value: &[u8], out: &mut Decoded) {
        if value.is_empty() {
            out.errors
                .push(DecodeError::new(self.dialect, "", Reason::Empty));
            return;
        }
        if value.len() > self.limits.max_record_bytes {
            out.errors.push(DecodeError::new(
                self.dialect,
                "",
                Reason::TooLarge {
                    size: value.len(),
                    limit: self.limits.max_record_bytes,
                },
            ));
            return;
        }
        // LaunchDarkly's fast path checks the limits as it reads: a record it reads
        // whole needs no scan of its own, and gives `auto` the record's top level.
        match self.dialect {
            Dialect::Launchdarkly if launchdarkly::decode_in_one_pass(value, &self.limits, out) => {
                out.dialect = Some(Dialect::Launchdarkly);
                return;
            }
            Dialect::Auto => match launchdarkly::detect_in_one_pass(value, &self.limits, out) {
                Some(Ok(Dialect::Launchdarkly)) => return,
                Some(Ok(found)) => return self.decode_as(found, value, out),
                Some(Err(why)) => {
                    return out.errors.push(DecodeError::new(
                        Dialect::Auto,
                        "",
                        Reason::Undetected(why),
                    ));
                }
                None => {}
            },
            _ => {}
        }
        // JSON (every dialect but native Avro, whose records never start so): the
        // structural limits, before any reader recurses into it. The same scan gives
        // `auto` the record's top level.
        if self.dialect != Dialect::NativeAvro
            && matches!(util::first_byte(value), Some(b'{' | b'['))
        {
            let scanned = if self.dialect == Dialect::Auto {
                limits::check_shape(value, &self.limits)
            } else {
                limits::check(value, &self.limits).map(|()| limits::Shape::default())
            };
            match scanned {
                Err(reason) => {
                    out.errors.push(DecodeError::new(self.dialect, "", reason));
                    return;
                }
                Ok(shape) if self.dialect == Dialect::Auto => {
                    match auto::detect_shape(value, &shape) {
                        Ok(found) => self.decode_as(found, value, out),
                        Err(why) => out.errors.push(DecodeError::new(
                            Dialect::Auto,
                            "",
                            Reason::Undetected(why),
                        )),
                    }
                    return;
                }
                Ok(_) => {}
            }
        }
        self.decode_as(self.dialect, value, out);
    }
}

/// A number no 64-bit float holds (`1e999`, or 300+ digits) passes JSON's grammar, and
/// serde_json keeps it in raw values, but strict readers (serde_json itself, Go) refuse
/// it: a record holding one would make every output it feeds unreadable, so the record
/// is refused whole. Such a number needs an exponent (an `e` or `E` right after a
/// digit) or a run of 300 digits, which always covers two bytes 150 apart at multiples
/// of 150; only records with such a suspect are parsed to find out.
pub(crate) fn unrepresentable_number(bytes: &[u8]) -> Option<String> {
    const STRIDE: usize = 150;
    let exponent =
        memchr::memchr2_iter(b'e', b'E', bytes).any(|i| i > 0 && bytes[i - 1].is_ascii_digit());
    let long_run = || {
        let samples = bytes.iter().step_by(STRIDE);
        let next = bytes.iter().skip(STRIDE).step_by(STRIDE);
        samples
            .zip(next)
            .any(|(a, b)| a.is_ascii_digit() && b.is_ascii_digit())
    };
    if !exponent && !long_run() {
        return None;
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Err(e) if e.to_string().starts_with("number out of range") => Some(format!(
            "a number out of the range of a 64-bit float ({e}); JSON readers refuse it"
        )),
        _ => None,
    }
}

impl Decoder {
    fn decode_as(&self, dialect: Dialect, value: &[u8], out: &mut Decoded) {
        let limits = &self.limits;
        if dialect != Dialect::Auto {
            out.dialect = Some(dialect);
        }
        match dialect {
            Dialect::Auto => match auto::detect(value) {
                Ok(found) => self.decode_as(found, value, out),
                Err(why) => {
                    out.errors
                        .push(DecodeError::new(Dialect::Auto, "", Reason::Undetected(why)))
                }
            },
            // LaunchDarkly checks number ranges itself, for free on its fast path.
            Dialect::Launchdarkly => launchdarkly::decode(value, limits, out),
            _ if let Some(detail) = unrepresentable_number(value) => out
                .errors
                .push(DecodeError::new(dialect, "", Reason::Invalid(detail))),
            Dialect::Goff => goff::decode(value, limits, out),
            Dialect::Featbit => featbit::decode(value, limits, out),
            Dialect::Native => native::decode_json(value, limits, out),
            Dialect::NativeAvro => native::decode_avro(value, limits, self.writers.as_deref(), out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every JSON dialect, through the decode stage: structural limits are checked
    /// before any dialect reads the record, each with its own reason.
    #[test]
    fn every_dialect_refuses_records_past_the_structural_limits() {
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let cases = [
            (
                format!(r#"{{"kind":"feature","value":{deep}}}"#),
                "too_deep",
            ),
            (
                format!(r#"[{}]"#, vec!["{}"; 10_001].join(",")),
                "too_many_events",
            ),
            (
                format!(r#"{{"events":[{}]}}"#, vec!["1"; 10_001].join(",")),
                "too_many_events",
            ),
            (
                format!(r#"{{"v":"{}"}}"#, "x".repeat(300 << 10)),
                "string_too_long",
            ),
            (format!(r#"{{"{}":1}}"#, "k".repeat(2000)), "name_too_long"),
        ];
        for dialect in [
            Dialect::Auto,
            Dialect::Launchdarkly,
            Dialect::Goff,
            Dialect::Featbit,
            Dialect::Native,
        ] {
            let decoder = Decoder::new(dialect, Limits::default());
            for (input, code) in &cases {
                let mut out = Decoded::default();
                decoder.decode(input.as_bytes(), &mut out);
                assert!(out.events.is_empty(), "{dialect}: {code}");
                assert_eq!(out.errors.len(), 1, "{dialect}: {code}");
                assert_eq!(out.errors[0].reason.code(), *code, "{dialect}");
            }
        }
        // Just under every limit, a record still decodes.
        let ok = format!(
            r#"{{"kind":"feature","creationDate":1,"key":"f","userKey":"u","value":{}1{}}}"#,
            "[".repeat(63),
            "]".repeat(63)
        );
        let mut out = Decoded::default();
        Decoder::new(Dialect::Launchdarkly, Limits::default()).decode(ok.as_bytes(), &mut out);
        assert_eq!(
            (out.events.len(), out.errors.len()),
            (1, 0),
            "{:?}",
            out.errors
        );
    }

    #[test]
    fn numbers_no_reader_can_hold_are_refused() {
        let decoder = Decoder::new(Dialect::Launchdarkly, Limits::default());
        for bad in [
            // Found by fuzzing: a pass-through event carrying 1e9999-like numbers.
            r#"[{"kind": "feature=", "x": "c", "derugEventsUntilDate": 99999999e9999}]"#.to_owned(),
            format!(
                r#"{{"kind":"alias","creationDate":1,"n":{}}}"#,
                "9".repeat(400)
            ),
        ] {
            let mut out = Decoded::default();
            decoder.decode(bad.as_bytes(), &mut out);
            assert!(out.events.is_empty(), "{bad}");
            assert_eq!(out.errors.len(), 1);
            assert_eq!(out.errors[0].reason.code(), "invalid_value");
        }
        let mut out = Decoded::default();
        decoder.decode(
            br#"{"kind":"alias","creationDate":1,"n":1e300,"s":"12e5"}"#,
            &mut out,
        );
        assert_eq!(out.events.len(), 1, "{:?}", out.errors);
    }
}
