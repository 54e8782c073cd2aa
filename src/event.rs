//! The canonical event: what every dialect decodes into and every later stage reads.
//!
//! Invariants:
//! - a field the producer's dialect lacks is `None`; nothing is invented;
//! - times are epoch milliseconds ([`EventTime`]), whatever unit the producer used;
//! - JSON payloads (values, defaults, contexts, reasons) are kept as compact JSON text
//!   ([`Json`]), so they are written back byte for byte as they came, minus whitespace;
//! - the serde form of [`Event`] *is* the native JSON dialect (`decode::native`), so
//!   `serde_json::to_vec(&event)` and the native decoder round-trip.

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use smallvec::SmallVec;

/// A point in event time, in milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventTime(i64);

/// The unit a producer is documented to write its timestamps in.
///
/// Producers are not always faithful to their documentation (go-feature-flag documents
/// seconds, yet some producers send milliseconds), so [`EventTime::from_unit`] reads the
/// magnitude as well. The rule, for a non-negative integer `n`:
///
/// | `n` is below | read as |
/// |---|---|
/// | 10^11 | seconds (until the year 5138) — only when the nominal unit is seconds or finer-by-magnitude |
/// | 10^14 | milliseconds (from 1973 to the year 5138) |
/// | 10^17 | microseconds |
/// | otherwise | nanoseconds |
///
/// A nominal unit of milliseconds never reads a value as seconds: LaunchDarkly's
/// `creationDate` is always milliseconds, and its own test vectors use values like `1000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// Seconds, but milliseconds, microseconds and nanoseconds are recognised by magnitude.
    SecondsOrFiner,
    /// Milliseconds, but microseconds and nanoseconds are recognised by magnitude.
    MillisOrFiner,
}

const SECONDS_BELOW: f64 = 1e11;
const MILLIS_BELOW: f64 = 1e14;
const MICROS_BELOW: f64 = 1e17;

impl EventTime {
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Normalises a producer's timestamp to milliseconds (see [`TimeUnit`] for the rule).
    /// Fractions are kept down to the millisecond. Negative, non-finite and out-of-range
    /// values are refused with `None`.
    pub fn from_unit(n: f64, unit: TimeUnit) -> Option<Self> {
        if !n.is_finite() || n < 0.0 {
            return None;
        }
        let ms = if n < SECONDS_BELOW && unit == TimeUnit::SecondsOrFiner {
            n * 1e3
        } else if n < MILLIS_BELOW {
            n
        } else if n < MICROS_BELOW {
            n / 1e3
        } else {
            n / 1e6
        };
        // Nanoseconds as f64 reach ~1.8e19 for u64 input; anything past the year 275 760
        // (JavaScript's limit) is not a real time.
        if ms > 8.64e15 {
            return None;
        }
        Some(Self(ms as i64))
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A flag version, in the type its producer used: LaunchDarkly counts versions with
/// integers, go-feature-flag names them with strings. FeatBit has none.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlagVersion {
    Int(i64),
    Str(CompactString),
}

impl fmt::Display for FlagVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Str(s) => f.write_str(s),
        }
    }
}

/// Which variation was served: LaunchDarkly's index, or a name (go-feature-flag's
/// variation name, FeatBit's variation id). Outputs write `variation` for an index and
/// `variationName` for a name. "No variation" (the application's fallback was served) is
/// `Option::None` around this type, and is distinct from index 0.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VariationRef {
    Index(u32),
    Name(CompactString),
}

/// A JSON value kept as compact text (no insignificant whitespace).
///
/// Equality is textual, which is what determinism needs: the same input yields the
/// same bytes out. Shared (`Arc`): an index event or a counter's first value reuses the
/// evaluation's text instead of copying it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Json(std::sync::Arc<str>);

impl Json {
    /// The JSON `null`.
    pub fn null() -> Self {
        Self("null".into())
    }

    /// A JSON string holding `s`.
    pub fn string(s: &str) -> Self {
        // Serialising a &str cannot fail.
        Self(serde_json::to_string(s).unwrap_or_default().into())
    }

    /// Takes JSON text that serde_json has already validated, dropping whitespace
    /// outside strings.
    pub fn from_raw(raw: &RawValue) -> Self {
        Self::from_valid_text(raw.get())
    }

    /// Serialises a `serde_json::Value`.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self(value.to_string().into())
    }

    /// Parses and validates `text` as JSON.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Ok(Self::from_raw(raw))
    }

    /// Takes JSON text that has already been validated (by serde_json or the
    /// LaunchDarkly fast path's validator), dropping whitespace outside strings.
    pub(crate) fn from_valid_text(text: &str) -> Self {
        Self::from_text(text, false)
    }

    /// [`Json::from_valid_text`] for text known to hold no whitespace outside its
    /// strings (the LaunchDarkly fast path's validator saw none): taken as it is.
    pub(crate) fn from_compact_text(text: &str) -> Self {
        Self::from_text(text, true)
    }

    fn from_text(text: &str, compact: bool) -> Self {
        if text.len() <= RECENT_MAX_LEN {
            return recent(text, compact);
        }
        Self::compact(text, compact)
    }

    fn compact(text: &str, compact: bool) -> Self {
        if !compact && may_have_insignificant_whitespace(text.as_bytes()) {
            Self(minify(text).into())
        } else {
            Self(text.into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_null(&self) -> bool {
        &*self.0 == "null"
    }

    /// Parses the text into a `serde_json::Value` (cold paths only).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

/// Whether valid JSON text may hold whitespace outside its strings. Raw tabs and line
/// breaks cannot occur inside JSON strings, so any of them is insignificant; a space is
/// suspect only beside a structural character (`{[,:` before it or `}],:` after it),
/// which spaces inside ordinary strings ("User 123") are not. A false "yes" only costs
/// a minify; a "no" is always right.
/// Longest text [`recent`] keeps.
const RECENT_MAX_LEN: usize = 48;

thread_local! {
    /// Short JSON texts seen lately on this thread, by a hash of their text: values and
    /// defaults such as `"on"`, `true` or `"fallback"` repeat on nearly every
    /// evaluation, and sharing one copy saves an allocation and a free per value.
    static RECENT: std::cell::RefCell<[Option<Json>; 256]> =
        const { std::cell::RefCell::new([const { None }; 256]) };
}

/// `text` as [`Json`], shared with an equal text seen lately when there is one. Only
/// compact texts are kept, so a text equal to a kept one is compact too.
fn recent(text: &str, compact: bool) -> Json {
    let slot = recent_slot(text.as_bytes());
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some(json) = &recent[slot]
            && json.as_str() == text
        {
            return json.clone();
        }
        let json = Json::compact(text, compact);
        if json.as_str() == text {
            recent[slot] = Some(json.clone());
        }
        json
    })
}

/// [`recent`]'s slot for a text of at most [`RECENT_MAX_LEN`] bytes: a hash of its
/// length and its first and last eight bytes (two loads, not a loop over every byte;
/// texts alike in those share a slot, which costs a miss, never a wrong answer).
fn recent_slot(b: &[u8]) -> usize {
    let word = |bytes: &[u8]| {
        let mut w = [0u8; 8];
        w[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(w)
    };
    let n = b.len();
    let (head, tail) = if n >= 8 {
        (word(&b[..8]), word(&b[n - 8..]))
    } else {
        (word(b), 0)
    };
    let h = (head ^ tail.rotate_left(29) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 56) as usize
}

fn may_have_insignificant_whitespace(b: &[u8]) -> bool {
    if memchr::memchr3(b'\n', b'\r', b'\t', b).is_some() {
        return true;
    }
    memchr::memchr_iter(b' ', b).any(|i| {
        let before = i.checked_sub(1).map(|j| b[j]);
        let after = b.get(i + 1).copied();
        matches!(before, None | Some(b'{' | b'[' | b',' | b':'))
            || matches!(after, None | Some(b'}' | b']' | b',' | b':' | b' '))
    })
}

/// Removes whitespace outside string literals from valid JSON text.
fn minify(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Emits the text verbatim: it is valid JSON by construction.
        match RawValue::from_string(self.0.to_string()) {
            Ok(raw) => raw.serialize(serializer),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through `serde_json::Value`, not `RawValue`: the native dialect's tagged,
        // flattened structs are buffered by serde, and a buffer cannot hold raw text.
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Self::from_value(&value))
    }
}

/// One individual context: its kind and key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContextKey {
    pub kind: CompactString,
    pub key: CompactString,
}

/// Who an event is about.
///
/// `keys` lists the individual contexts sorted by kind (one for a single context,
/// several for a multi-context). `body` is the inline context object in LaunchDarkly's
/// current shape (`{"kind":…,"key":…,…}`), when the producer sent one; dialects that only
/// send keys leave it `None`, and outputs then write the minimal `{kind, key}` form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contexts {
    pub keys: SmallVec<[ContextKey; 1]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Json>,
}

impl Contexts {
    /// A single context of `kind` with `key` and no attributes.
    pub fn single(kind: &str, key: &str) -> Self {
        Self {
            keys: smallvec::smallvec![ContextKey {
                kind: kind.into(),
                key: key.into(),
            }],
            body: None,
        }
    }

    /// A multi-context of (kind, key) pairs, without attributes.
    pub fn multi(parts: &[(&str, &str)]) -> Self {
        let mut keys: SmallVec<[ContextKey; 1]> = parts
            .iter()
            .map(|(kind, key)| ContextKey {
                kind: (*kind).into(),
                key: (*key).into(),
            })
            .collect();
        keys.sort();
        Self { keys, body: None }
    }

    /// LaunchDarkly's fully-qualified key: a `user` context's bare key; otherwise
    /// `kind:key` with `%` and `:` escaped; a multi-context joins its parts, sorted by
    /// kind, with `:`.
    pub fn fully_qualified_key(&self) -> CompactString {
        if let Some(key) = self.bare_key() {
            return key.into();
        }
        let mut out = CompactString::default();
        for (i, part) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            out.push_str(&part.kind);
            out.push(':');
            for c in part.key.chars() {
                match c {
                    '%' => out.push_str("%25"),
                    ':' => out.push_str("%3A"),
                    c => out.push(c),
                }
            }
        }
        out
    }

    /// The fully-qualified key when it is the context's key as it is: a single `user`
    /// context.
    pub fn bare_key(&self) -> Option<&str> {
        match self.keys.as_slice() {
            [only] if only.kind == "user" => Some(&only.key),
            _ => None,
        }
    }

    /// The inline context object: the producer's, or `{kind, key}` built from the keys.
    pub fn to_object(&self) -> Json {
        if let Some(body) = &self.body {
            return body.clone();
        }
        let mut obj = serde_json::Map::new();
        match self.keys.as_slice() {
            [only] => {
                obj.insert("kind".into(), only.kind.as_str().into());
                obj.insert("key".into(), only.key.as_str().into());
            }
            parts => {
                obj.insert("kind".into(), "multi".into());
                for part in parts {
                    obj.insert(
                        part.kind.to_string(),
                        serde_json::json!({ "key": part.key.as_str() }),
                    );
                }
            }
        }
        Json::from_value(&serde_json::Value::Object(obj))
    }

    /// The `contextKeys` object of older LaunchDarkly events: `{kind: key}`.
    pub fn keys_object(&self) -> Json {
        let obj: serde_json::Map<String, serde_json::Value> = self
            .keys
            .iter()
            .map(|k| (k.kind.to_string(), k.key.as_str().into()))
            .collect();
        Json::from_value(&serde_json::Value::Object(obj))
    }
}

/// Where an event belongs beyond its flag: the Data Export envelope's project and
/// environment, go-feature-flag's `metadata.environment`, FeatBit's `env_id`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<CompactString>,
}

/// One flag evaluation (LaunchDarkly `feature`/`debug`, go-feature-flag `FeatureEvent`,
/// FeatBit `FlagValue`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    #[serde(default, flatten)]
    pub scope: Scope,
    pub flag_key: CompactString,
    /// `None`: the application's fallback value was served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation: Option<VariationRef>,
    /// `None`: the flag was unknown to the evaluator (or the dialect has no versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<FlagVersion>,
    /// The value served (`null` when the dialect does not carry it).
    pub value: Json,
    /// The application's fallback value, when the producer sent it (`null` is a value).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<Json>,
    pub context: Contexts,
    pub creation_date: EventTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Json>,
    /// The evaluation is part of an experiment (`reason.inExperiment`, FeatBit's
    /// `sendToExperiment`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub in_experiment: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prereq_of: Option<CompactString>,
    /// The producer's own choice about full-fidelity events; `None` means it did not say
    /// (and so already chose: SDKs only send tracked evaluations as events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_events: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_events_until_date: Option<EventTime>,
    /// Keep 1 in N full-fidelity events (0: none). Summaries are never sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_ratio: Option<u64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclude_from_summaries: bool,
    /// A LaunchDarkly `debug` event: a copy for debugging, never counted in summaries.
    #[serde(default, skip_serializing_if = "is_false")]
    pub debug: bool,
    /// Already counted by a summary event of the same source (the summary in the same
    /// SDK payload, or the topic's summaries under `count_from = "summaries"`): this
    /// event is a full-fidelity copy, not another evaluation. Set by the counting rule
    /// ([`crate::decode::counting`]) after decoding, from the record and the
    /// configuration alone, so a replay decides the same; never read from input.
    #[serde(skip)]
    pub counted_by_summary: bool,
    /// Producer metadata kept verbatim (go-feature-flag `source` and `metadata`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Json>,
}

impl Evaluation {
    /// An evaluation of `flag_key` with every optional field empty: no variation or
    /// version, a `null` value, nothing tracked. Fill the rest with struct update syntax.
    pub fn new(flag_key: &str, context: Contexts, creation_date: EventTime) -> Self {
        Self {
            scope: Scope::default(),
            flag_key: flag_key.into(),
            variation: None,
            version: None,
            value: Json::null(),
            default: None,
            context,
            creation_date,
            reason: None,
            in_experiment: false,
            prereq_of: None,
            track_events: None,
            debug_events_until_date: None,
            sampling_ratio: None,
            exclude_from_summaries: false,
            debug: false,
            counted_by_summary: false,
            meta: None,
        }
    }
}

/// A custom, tracking or metric event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Custom {
    #[serde(default, flatten)]
    pub scope: Scope,
    pub key: CompactString,
    pub context: Contexts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_value: Option<f64>,
    pub creation_date: EventTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_ratio: Option<u64>,
}

/// An identify event, or an index event seen on input (both carry a context).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextEvent {
    #[serde(default, flatten)]
    pub scope: Scope,
    pub context: Contexts,
    pub creation_date: EventTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_ratio: Option<u64>,
}

/// One counter of a summary seen on input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryCounter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation: Option<VariationRef>,
    /// `None` with LaunchDarkly's `"unknown": true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<FlagVersion>,
    pub value: Json,
    pub count: u64,
}

/// One flag of a summary seen on input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryFlag {
    pub key: CompactString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Json>,
    pub counters: Vec<SummaryCounter>,
    #[serde(default)]
    pub context_kinds: Vec<CompactString>,
}

/// A LaunchDarkly summary event seen on input: its counters are additive, so summaries
/// re-aggregate into longer windows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    #[serde(default, flatten)]
    pub scope: Scope,
    pub start_date: EventTime,
    pub end_date: EventTime,
    pub features: Vec<SummaryFlag>,
}

/// An event of a kind flagtally does not interpret (`alias`, future kinds): passed
/// through unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassThrough {
    #[serde(default, flatten)]
    pub scope: Scope,
    pub kind: CompactString,
    pub body: Json,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<EventTime>,
}

/// The canonical event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// Every variant is boxed: an event moves through several queues (the decoder's
    /// output, the engine's input), and a 16-byte event moves for free where a
    /// 200-byte one costs a copy each time.
    Evaluation(Box<Evaluation>),
    Custom(Box<Custom>),
    Identify(Box<ContextEvent>),
    Index(Box<ContextEvent>),
    Summary(Box<Summary>),
    PassThrough(Box<PassThrough>),
}

impl Event {
    /// An evaluation event.
    pub fn evaluation(e: Evaluation) -> Self {
        Self::Evaluation(Box::new(e))
    }

    pub fn scope(&self) -> &Scope {
        match self {
            Self::Evaluation(e) => &e.scope,
            Self::Custom(e) => &e.scope,
            Self::Identify(e) | Self::Index(e) => &e.scope,
            Self::Summary(e) => &e.scope,
            Self::PassThrough(e) => &e.scope,
        }
    }

    pub fn scope_mut(&mut self) -> &mut Scope {
        match self {
            Self::Evaluation(e) => &mut e.scope,
            Self::Custom(e) => &mut e.scope,
            Self::Identify(e) | Self::Index(e) => &mut e.scope,
            Self::Summary(e) => &mut e.scope,
            Self::PassThrough(e) => &mut e.scope,
        }
    }

    /// The event time that places the event in a window: its creation date (a
    /// summary's end date; a pass-through without one has none).
    pub fn time(&self) -> Option<EventTime> {
        match self {
            Self::Evaluation(e) => Some(e.creation_date),
            Self::Custom(e) => Some(e.creation_date),
            Self::Identify(e) | Self::Index(e) => Some(e.creation_date),
            Self::Summary(e) => Some(e.end_date),
            Self::PassThrough(e) => e.creation_date,
        }
    }

    /// Moves an event time later than `bound` back to `bound` (a summary's end date; its
    /// start date too when past it). Returns whether it moved.
    pub fn clamp_time(&mut self, bound: EventTime) -> bool {
        let t = match self {
            Self::Evaluation(e) => &mut e.creation_date,
            Self::Custom(e) => &mut e.creation_date,
            Self::Identify(e) | Self::Index(e) => &mut e.creation_date,
            Self::Summary(e) => {
                e.start_date = e.start_date.min(bound);
                &mut e.end_date
            }
            Self::PassThrough(e) => match &mut e.creation_date {
                Some(t) => t,
                None => return false,
            },
        };
        if *t > bound {
            *t = bound;
            true
        } else {
            false
        }
    }

    /// A short name of the variant, for metrics and logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Evaluation(e) if e.debug => "debug",
            Self::Evaluation(_) => "evaluation",
            Self::Custom(_) => "custom",
            Self::Identify(_) => "identify",
            Self::Index(_) => "index",
            Self::Summary(_) => "summary",
            Self::PassThrough(_) => "passthrough",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An optional JSON field whose `null` is a value, not an absence.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short texts are shared with an equal one seen lately; texts with whitespace are
    /// still compacted, and never stand in for another text.
    #[test]
    fn short_texts_are_shared_and_still_compact() {
        let a = Json::from_valid_text(r#""fallback""#);
        let b = Json::from_valid_text(r#""fallback""#);
        assert!(std::sync::Arc::ptr_eq(&a.0, &b.0));
        for _ in 0..2 {
            assert_eq!(Json::from_valid_text("[1, 2]").as_str(), "[1,2]");
        }
        assert_eq!(Json::from_valid_text("[1,2]").as_str(), "[1,2]");
        assert_eq!(
            Json::from_valid_text(r#""fallbacl""#).as_str(),
            r#""fallbacl""#
        );
        let long = format!("\"{}\"", "x".repeat(RECENT_MAX_LEN));
        assert_eq!(Json::from_valid_text(&long).as_str(), long);
    }

    /// The slot hash reads only a text's length and ends: texts that differ in the
    /// middle share a slot, and each still comes back as itself.
    #[test]
    fn texts_sharing_a_slot_stay_distinct() {
        let (a, b) = (
            r#""value-for-A-in-the-test""#,
            r#""value-for-B-in-the-test""#,
        );
        assert_eq!(recent_slot(a.as_bytes()), recent_slot(b.as_bytes()));
        for _ in 0..3 {
            assert_eq!(Json::from_valid_text(a).as_str(), a);
            assert_eq!(Json::from_valid_text(b).as_str(), b);
        }
        for short in ["1", "true", r#""on""#, "null"] {
            assert_eq!(Json::from_valid_text(short).as_str(), short);
        }
    }

    #[test]
    fn timestamps_by_magnitude() {
        let s = TimeUnit::SecondsOrFiner;
        let ms = TimeUnit::MillisOrFiner;
        assert_eq!(
            EventTime::from_unit(1_617_970_701.0, s),
            Some(EventTime(1_617_970_701_000))
        );
        assert_eq!(
            EventTime::from_unit(1_617_970_701_123.0, s),
            Some(EventTime(1_617_970_701_123))
        );
        assert_eq!(
            EventTime::from_unit(1_702_366_933_320_000.0, s),
            Some(EventTime(1_702_366_933_320))
        );
        assert_eq!(
            EventTime::from_unit(1_702_366_933_320_000_000.0, s),
            Some(EventTime(1_702_366_933_320))
        );
        assert_eq!(EventTime::from_unit(1000.0, ms), Some(EventTime(1000)));
        assert_eq!(EventTime::from_unit(1000.0, s), Some(EventTime(1_000_000)));
        assert_eq!(
            EventTime::from_unit(1_617_970_701.5, s),
            Some(EventTime(1_617_970_701_500))
        );
        assert_eq!(EventTime::from_unit(-1.0, ms), None);
        assert_eq!(EventTime::from_unit(f64::NAN, ms), None);
        assert_eq!(EventTime::from_unit(1e30, ms), None);
    }

    #[test]
    fn whitespace_detection_never_misses() {
        for text in [
            r#"{"a":"User 1"}"#,
            r#"{ "a":1}"#,
            r#"{"a" :1}"#,
            r#"{"a": 1}"#,
            "[1,\n2]",
            r#"["x y" , 2]"#,
            r#""a, b""#,
            r#"{"k":"v" }"#,
        ] {
            let j = Json::parse(text).unwrap();
            assert_eq!(j.as_str(), minify(text), "{text}");
        }
        assert!(!may_have_insignificant_whitespace(
            br#"{"name":"User 123"}"#
        ));
    }

    #[test]
    fn json_is_compacted_outside_strings_only() {
        let j = Json::parse("{ \"a b\" : [1, 2],\n \"c\":\"x y\" }").unwrap();
        assert_eq!(j.as_str(), r#"{"a b":[1,2],"c":"x y"}"#);
        let j = Json::parse(r#""quote \" and space ""#).unwrap();
        assert_eq!(j.as_str(), r#""quote \" and space ""#);
    }

    #[test]
    fn fully_qualified_keys_follow_launchdarkly() {
        assert_eq!(Contexts::single("user", "u:1").fully_qualified_key(), "u:1");
        assert_eq!(
            Contexts::single("org", "a:b%c").fully_qualified_key(),
            "org:a%3Ab%25c"
        );
        let multi = Contexts::multi(&[("org", "o"), ("user", "u")]);
        assert_eq!(multi.fully_qualified_key(), "org:o:user:u");
        assert_eq!(
            multi.to_object().as_str(),
            r#"{"kind":"multi","org":{"key":"o"},"user":{"key":"u"}}"#
        );
    }

    #[test]
    fn native_json_round_trips() {
        let ev = Event::evaluation(Evaluation {
            scope: Scope {
                project: None,
                env: Some("prod".into()),
            },
            flag_key: "f".into(),
            variation: Some(VariationRef::Index(0)),
            version: Some(FlagVersion::Str("v2".into())),
            value: Json::parse("true").unwrap(),
            default: Some(Json::parse("false").unwrap()),
            context: Contexts::single("user", "u"),
            creation_date: EventTime::from_millis(5),
            reason: None,
            in_experiment: false,
            prereq_of: None,
            track_events: Some(true),
            debug_events_until_date: None,
            sampling_ratio: None,
            exclude_from_summaries: false,
            debug: false,
            counted_by_summary: false,
            meta: None,
        });
        let text = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            text,
            r#"{"type":"evaluation","env":"prod","flagKey":"f","variation":0,"version":"v2","value":true,"default":false,"context":{"keys":[{"kind":"user","key":"u"}]},"creationDate":5,"trackEvents":true}"#
        );
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ev);
    }
}
