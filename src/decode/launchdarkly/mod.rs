//! LaunchDarkly analytics events: one SDK event, a `/bulk` array of them, or the Data
//! Export envelope `{project, environment, event, version}` around one.
//!
//! Every generation is read: an inline `context` (single or multi), schema-4
//! `contextKeys`, and schema ≤ 3 `userKey` / inline `user` (+ `contextKind:
//! "anonymousUser"`). Kinds: `feature` and `debug` → [`Evaluation`]; `custom`;
//! `identify`; `index`; `summary` (re-aggregated); `alias` and unknown kinds are passed
//! through unchanged. flagtally's own outputs are valid input too (`variationName`,
//! string versions), so instances can be chained (1 m → 1 h → 1 d).
//!
//! `creationDate` is milliseconds (µs/ns recognised by magnitude, never seconds).

mod fast;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Number;
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::util::{self, RawText, Str, at, first_byte};
use super::{DecodeError, Decoded, Dialect, Limits, Reason};
use crate::event::{
    ContextEvent, ContextKey, Contexts, Custom, Evaluation, Event, EventTime, FlagVersion, Json,
    PassThrough, Scope, Summary, SummaryCounter, SummaryFlag, TimeUnit, VariationRef,
};

const D: Dialect = Dialect::Launchdarkly;
const UNIT: TimeUnit = TimeUnit::MillisOrFiner;

/// The union of every field of every kind and generation. Unknown fields are ignored,
/// as LaunchDarkly's own decoders do.
#[derive(Default, Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    kind: Option<Str<'a>>,
    #[serde(rename = "creationDate")]
    creation_date: Option<Number>,
    #[serde(borrow)]
    key: Option<Str<'a>>,
    #[serde(borrow)]
    version: Option<RawText<'a>>,
    #[serde(borrow)]
    context: Option<RawText<'a>>,
    /// The plain kind and key at the head of `context`, when the fast path read them
    /// there (`{"kind":"…","key":"…",…}`); never set by serde.
    #[serde(skip)]
    context_head: Option<(&'a str, &'a str)>,
    #[serde(rename = "contextKeys", borrow)]
    context_keys: Option<RawText<'a>>,
    #[serde(rename = "userKey", borrow)]
    user_key: Option<Str<'a>>,
    #[serde(borrow)]
    user: Option<RawText<'a>>,
    #[serde(rename = "contextKind", borrow)]
    context_kind: Option<Str<'a>>,
    variation: Option<Number>,
    #[serde(rename = "variationName", borrow)]
    variation_name: Option<Str<'a>>,
    #[serde(borrow)]
    value: Option<RawText<'a>>,
    #[serde(borrow)]
    default: Option<RawText<'a>>,
    #[serde(rename = "prereqOf", borrow)]
    prereq_of: Option<Str<'a>>,
    #[serde(borrow)]
    reason: Option<RawText<'a>>,
    #[serde(rename = "trackEvents")]
    track_events: Option<bool>,
    #[serde(rename = "debugEventsUntilDate")]
    debug_until: Option<Number>,
    #[serde(rename = "samplingRatio")]
    sampling_ratio: Option<u64>,
    #[serde(rename = "excludeFromSummaries")]
    exclude_from_summaries: Option<bool>,
    #[serde(borrow)]
    data: Option<RawText<'a>>,
    #[serde(rename = "metricValue")]
    metric_value: Option<f64>,
    #[serde(rename = "startDate")]
    start_date: Option<Number>,
    #[serde(rename = "endDate")]
    end_date: Option<Number>,
    #[serde(borrow)]
    features: Option<RawText<'a>>,
    // The Data Export envelope.
    #[serde(borrow)]
    event: Option<RawText<'a>>,
    #[serde(borrow)]
    project: Option<Str<'a>>,
    #[serde(borrow)]
    environment: Option<Str<'a>>,
}

thread_local! {
    /// Whether the fast path is used (tests turn it off to compare both paths).
    static FAST: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Decodes `value` twice through the decode stage, with the fast path (the limits
/// checked as it reads) and without it (the limits scan, then serde), for differential
/// tests and fuzzing: both must agree on every input, whatever the limits.
#[doc(hidden)]
pub fn decode_both_ways(dialect: Dialect, limits: &Limits, value: &[u8]) -> (Decoded, Decoded) {
    let decoder = super::Decoder::new(dialect, *limits);
    let mut fast = Decoded::default();
    decoder.decode(value, &mut fast);
    FAST.with(|f| f.set(false));
    let mut slow = Decoded::default();
    decoder.decode(value, &mut slow);
    FAST.with(|f| f.set(true));
    (fast, slow)
}

fn fast_enabled() -> bool {
    FAST.with(std::cell::Cell::get)
}

/// A record the fast path reads whole (one event object or a batch of them) within
/// `limits`, decoded in that one pass: the caller skips its limits scan. Returns
/// `false`, with `out` untouched, when the fast path declines; the caller then checks
/// the limits and decodes as usual, and both ways give the same result.
pub(crate) fn decode_in_one_pass(value: &[u8], limits: &Limits, out: &mut Decoded) -> bool {
    if !fast_enabled() {
        return false;
    }
    let (mut one, mut batch) = (fast::Parsed::default(), Vec::new());
    let Some(is_batch) = fast::parse_record(value, &fast::Bounds::of(limits), &mut one, &mut batch)
    else {
        return false;
    };
    push_parsed(is_batch, &one, &batch, limits, out);
    true
}

/// `auto` on a record the fast path reads whole: the dialect its top level says, and
/// for LaunchDarkly the events too (`out.dialect` set). `None` when the fast path
/// declines; for another dialect, `out` is untouched and that dialect decodes it (the
/// record is within `limits`).
pub(crate) fn detect_in_one_pass(
    value: &[u8],
    limits: &Limits,
    out: &mut Decoded,
) -> Option<Result<Dialect, String>> {
    if !fast_enabled() {
        return None;
    }
    let (mut one, mut batch) = (fast::Parsed::default(), Vec::new());
    let is_batch = fast::parse_record(value, &fast::Bounds::of(limits), &mut one, &mut batch)?;
    let found = match (is_batch, batch.first()) {
        (false, _) => super::auto::detect_object(&one),
        (true, None) => Ok(D),
        (true, Some(first)) => super::auto::detect_element(first),
    };
    if found == Ok(D) {
        out.dialect = Some(D);
        push_parsed(is_batch, &one, &batch, limits, out);
    }
    Some(found)
}

/// The events of a record the fast path read: `one`, or each of `batch`.
fn push_parsed(
    is_batch: bool,
    one: &fast::Parsed<'_>,
    batch: &[fast::Parsed<'_>],
    limits: &Limits,
    out: &mut Decoded,
) {
    let mut push = |result| match result {
        Ok(ev) => out.events.push(ev),
        Err(e) => out.errors.push(e),
    };
    if !is_batch {
        return push(from_raw(
            &one.raw,
            one.text,
            "",
            limits,
            &Scope::default(),
            false,
        ));
    }
    for (i, p) in batch.iter().enumerate() {
        let path = format!("[{i}]");
        push(from_raw(
            &p.raw,
            p.text,
            &path,
            limits,
            &Scope::default(),
            false,
        ));
    }
}

pub(crate) fn decode(value: &[u8], limits: &Limits, out: &mut Decoded) {
    match first_byte(value) {
        Some(b'[') => match util::parse::<Vec<&RawValue>>(D, "", value) {
            Ok(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("[{i}]");
                    match one(item.get().as_bytes(), &path, limits, &Scope::default()) {
                        Ok(ev) => out.events.push(ev),
                        Err(e) => out.errors.push(e),
                    }
                }
            }
            Err(e) => out.errors.push(e),
        },
        _ => match one(value, "", limits, &Scope::default()) {
            Ok(ev) => out.events.push(ev),
            Err(e) => out.errors.push(e),
        },
    }
}

fn one(bytes: &[u8], path: &str, limits: &Limits, scope: &Scope) -> Result<Event, DecodeError> {
    one_in(bytes, path, limits, scope, false)
}

/// One event; `in_envelope`: read from a Data Export envelope's `event`, where another
/// envelope is refused (one level at most: no recursion driven by the input).
fn one_in(
    bytes: &[u8],
    path: &str,
    limits: &Limits,
    scope: &Scope,
    in_envelope: bool,
) -> Result<Event, DecodeError> {
    if first_byte(bytes) != Some(b'{') {
        // Let serde name what it found.
        util::parse::<util::RawObject<'_>>(D, path, bytes)?;
    }
    // The fast path reads the common shapes without serde's machinery and declines
    // anything unusual; serde then reads the record and names any error precisely.
    // (The limits were checked for the whole record already.)
    let raw: Raw<'_> = match fast::parse(bytes, &fast::Bounds::NONE) {
        Some(raw) if fast_enabled() => raw,
        _ => {
            // The fast path refuses numbers no float holds; serde keeps them.
            if let Some(detail) = super::unrepresentable_number(bytes) {
                return Err(DecodeError::new(
                    D,
                    path.to_owned(),
                    Reason::Invalid(detail),
                ));
            }
            util::parse(D, path, bytes)?
        }
    };
    from_raw(&raw, bytes, path, limits, scope, in_envelope)
}

/// The event a record's fields make; `bytes`: the event object's text.
fn from_raw(
    raw: &Raw<'_>,
    bytes: &[u8],
    path: &str,
    limits: &Limits,
    scope: &Scope,
    in_envelope: bool,
) -> Result<Event, DecodeError> {
    let Some(kind) = raw.kind.as_deref() else {
        if let Some(inner) = raw.event {
            if in_envelope {
                return Err(DecodeError::new(D, path.to_owned(), Reason::NestedEnvelope));
            }
            return envelope(raw, inner, path, limits);
        }
        return Err(DecodeError::new(D, at(path, "kind"), Reason::Missing));
    };
    let field = |name: &str| at(path, name);
    match kind {
        "feature" | "debug" => evaluation(raw, kind == "debug", path, limits, scope),
        "custom" => Ok(Event::Custom(Box::new(Custom {
            scope: scope.clone(),
            key: util::key(D, || field("key"), raw.key.as_deref(), limits)?,
            context: contexts(raw, path, limits)?,
            data: raw.data.map(RawText::to_json),
            metric_value: raw.metric_value,
            creation_date: creation(raw, path)?,
            sampling_ratio: raw.sampling_ratio,
        }))),
        "identify" | "index" => {
            let ev = ContextEvent {
                scope: scope.clone(),
                context: contexts(raw, path, limits)?,
                creation_date: creation(raw, path)?,
                sampling_ratio: raw.sampling_ratio,
            };
            Ok(if kind == "index" {
                Event::Index(Box::new(ev))
            } else {
                Event::Identify(Box::new(ev))
            })
        }
        "summary" => summary(raw, path, limits, scope),
        other => {
            let kind = util::key(D, || field("kind"), Some(other), limits)?;
            let creation_date = match &raw.creation_date {
                None => None,
                Some(n) => Some(util::time(D, || field("creationDate"), Some(n), UNIT)?),
            };
            let text = std::str::from_utf8(bytes)
                .map_err(|e| DecodeError::new(D, path.to_owned(), Reason::Utf8(e.valid_up_to())))?;
            Ok(Event::PassThrough(Box::new(PassThrough {
                scope: scope.clone(),
                kind,
                body: Json::parse(text)
                    .map_err(|e| DecodeError::new(D, path.to_owned(), util::classify(&e, bytes)))?,
                creation_date,
            })))
        }
    }
}

/// `{"project":…,"environment":…,"event":{…},"version":1}`: the ids become the event's
/// scope.
fn envelope(
    raw: &Raw<'_>,
    inner: RawText<'_>,
    path: &str,
    limits: &Limits,
) -> Result<Event, DecodeError> {
    let scope = Scope {
        project: util::opt_key(D, || at(path, "project"), raw.project.as_deref(), limits)?,
        env: util::opt_key(
            D,
            || at(path, "environment"),
            raw.environment.as_deref(),
            limits,
        )?,
    };
    let inner_path = at(path, "event");
    one_in(inner.get().as_bytes(), &inner_path, limits, &scope, true)
}

fn creation(raw: &Raw<'_>, path: &str) -> Result<EventTime, DecodeError> {
    util::time(
        D,
        || at(path, "creationDate"),
        raw.creation_date.as_ref(),
        UNIT,
    )
}

fn evaluation(
    raw: &Raw<'_>,
    debug: bool,
    path: &str,
    limits: &Limits,
    scope: &Scope,
) -> Result<Event, DecodeError> {
    let field = |name: &str| at(path, name);
    let variation = match (&raw.variation, &raw.variation_name) {
        (Some(n), _) => Some(VariationRef::Index(
            n.as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    DecodeError::new(
                        D,
                        field("variation"),
                        Reason::Invalid(format!("{n} is not a variation index")),
                    )
                })?,
        )),
        (None, Some(name)) => Some(VariationRef::Name(util::key(
            D,
            || field("variationName"),
            Some(name),
            limits,
        )?)),
        (None, None) => None,
    };
    let reason = raw.reason.map(RawText::to_json);
    let version = version(raw.version, || field("version"), limits)?;
    // No version means the flag was unknown to the evaluator: it served the fallback
    // (no variation, as Relay counts it), and gets no full event unless the producer
    // asks for one explicitly. Said here, where the dialect's meaning is known.
    let known = version.is_some();
    let variation = if known { variation } else { None };
    let in_experiment = known
        && reason
            .as_ref()
            .is_some_and(|r| r.as_str().contains("\"inExperiment\":true"));
    let track_events = if known {
        raw.track_events
    } else {
        Some(raw.track_events == Some(true))
    };
    Ok(Event::evaluation(Evaluation {
        scope: scope.clone(),
        flag_key: util::key(D, || field("key"), raw.key.as_deref(), limits)?,
        variation,
        version,
        value: raw.value.map_or_else(Json::null, RawText::to_json),
        default: Some(raw.default.map_or_else(Json::null, RawText::to_json)),
        context: contexts(raw, path, limits)?,
        creation_date: creation(raw, path)?,
        reason,
        in_experiment,
        prereq_of: util::opt_key(D, || field("prereqOf"), raw.prereq_of.as_deref(), limits)?,
        track_events,
        debug_events_until_date: match &raw.debug_until {
            None => None,
            Some(n) => Some(util::time(
                D,
                || field("debugEventsUntilDate"),
                Some(n),
                UNIT,
            )?),
        },
        sampling_ratio: raw.sampling_ratio,
        exclude_from_summaries: raw.exclude_from_summaries.unwrap_or(false),
        debug,
        counted_by_summary: false,
        meta: None,
    }))
}

/// A flag version: an integer (LaunchDarkly) or a string (flagtally's own output for
/// go-feature-flag input). `null` means unknown.
fn version(
    raw: Option<RawText<'_>>,
    path: impl Fn() -> String,
    limits: &Limits,
) -> Result<Option<FlagVersion>, DecodeError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    // The common case, a plain integer, read directly (what serde would read).
    if (1..=15).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text.len() == 1 || !text.starts_with('0'))
        && let Ok(v) = text.parse::<i64>()
    {
        return Ok(Some(FlagVersion::Int(v)));
    }
    if text.starts_with('"') {
        let s: Cow<'_, str> = serde_json::from_str(text)
            .map_err(|e| DecodeError::new(D, path(), util::classify(&e, text.as_bytes())))?;
        return Ok(util::opt_key(D, path, Some(&s), limits)?.map(FlagVersion::Str));
    }
    let n: Number = serde_json::from_str(text).map_err(|_| {
        DecodeError::new(
            D,
            path(),
            Reason::WrongType {
                expected: "an integer or a string",
                found: text.chars().take(40).collect(),
            },
        )
    })?;
    util::int(&n)
        .map(|v| Some(FlagVersion::Int(v)))
        .ok_or_else(|| {
            DecodeError::new(
                D,
                path(),
                Reason::Invalid(format!("{n} is not an integer version")),
            )
        })
}

/// Who the event is about, from whichever generation of field the producer used.
fn contexts(raw: &Raw<'_>, path: &str, limits: &Limits) -> Result<Contexts, DecodeError> {
    let anonymous_user = raw.context_kind.as_deref() == Some("anonymousUser");
    if let Some(ctx) = raw.context {
        if let Some((kind, key)) = raw.context_head
            && let Some(c) = util::single_context(kind, key, ctx, limits)
        {
            return Ok(c);
        }
        return util::context(D, || at(path, "context"), ctx, limits);
    }
    if let Some(keys) = raw.context_keys {
        let obj: util::RawObject<'_> =
            util::parse(D, &at(path, "contextKeys"), keys.get().as_bytes())?;
        let mut out: SmallVec<[ContextKey; 1]> = SmallVec::new();
        for (kind, key) in &obj.fields {
            let p = || at(&at(path, "contextKeys"), kind);
            let key: Cow<'_, str> = serde_json::from_str(key.get()).map_err(|_| {
                DecodeError::new(
                    D,
                    p(),
                    Reason::WrongType {
                        expected: "a string",
                        found: key.get().chars().take(40).collect(),
                    },
                )
            })?;
            out.push(ContextKey {
                kind: util::key(D, p, Some(kind), limits)?,
                key: util::key(D, p, Some(&key), limits)?,
            });
        }
        if out.is_empty() {
            return Err(DecodeError::new(
                D,
                at(path, "contextKeys"),
                Reason::Invalid("no context keys".into()),
            ));
        }
        out.sort();
        return Ok(Contexts {
            keys: out,
            body: None,
        });
    }
    if let Some(user) = raw.user {
        let mut c = util::context(D, || at(path, "user"), user, limits)?;
        if anonymous_user {
            c.body = c.body.map(|b| with_anonymous(&b));
        }
        return Ok(c);
    }
    if let Some(key) = raw.user_key.as_deref() {
        let mut c = Contexts::single(
            "user",
            &util::key(D, || at(path, "userKey"), Some(key), limits)?,
        );
        if anonymous_user {
            c.body = Some(with_anonymous(&c.to_object()));
        }
        return Ok(c);
    }
    Err(DecodeError::new(D, at(path, "context"), Reason::Missing))
}

/// Marks a context object anonymous (schema ≤ 3 `contextKind: "anonymousUser"`).
fn with_anonymous(body: &Json) -> Json {
    let mut v = body.to_value();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("anonymous".into(), true.into());
    }
    Json::from_value(&v)
}

#[derive(Deserialize)]
struct RawFlag<'a> {
    #[serde(borrow)]
    default: Option<RawText<'a>>,
    #[serde(default, borrow)]
    counters: Vec<RawCounter<'a>>,
    #[serde(rename = "contextKinds", default, borrow)]
    context_kinds: Vec<Str<'a>>,
}

#[derive(Deserialize)]
struct RawCounter<'a> {
    variation: Option<Number>,
    #[serde(rename = "variationName", borrow)]
    variation_name: Option<Str<'a>>,
    #[serde(borrow)]
    version: Option<RawText<'a>>,
    unknown: Option<bool>,
    #[serde(borrow)]
    value: Option<RawText<'a>>,
    count: Option<u64>,
}

fn summary(
    raw: &Raw<'_>,
    path: &str,
    limits: &Limits,
    scope: &Scope,
) -> Result<Event, DecodeError> {
    let field = |name: &str| at(path, name);
    let start_date = util::time(D, || field("startDate"), raw.start_date.as_ref(), UNIT)?;
    let end_date = util::time(D, || field("endDate"), raw.end_date.as_ref(), UNIT)?;
    if end_date < start_date {
        return Err(DecodeError::new(
            D,
            field("endDate"),
            Reason::Invalid("endDate is before startDate".into()),
        ));
    }
    let features_path = field("features");
    let Some(features) = raw.features else {
        return Err(DecodeError::new(D, features_path, Reason::Missing));
    };
    let obj: util::RawObject<'_> = util::parse(D, &features_path, features.get().as_bytes())?;
    let mut flags = Vec::with_capacity(obj.fields.len());
    for (flag_key, body) in &obj.fields {
        let flag_path = at(&features_path, flag_key);
        let flag: RawFlag<'_> = util::parse(D, &flag_path, body.get().as_bytes())?;
        let mut counters = Vec::with_capacity(flag.counters.len());
        for (i, c) in flag.counters.iter().enumerate() {
            let cp = format!("{flag_path}.counters[{i}]");
            let variation = match (&c.variation, &c.variation_name) {
                (Some(n), _) => Some(VariationRef::Index(
                    n.as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| {
                            DecodeError::new(
                                D,
                                at(&cp, "variation"),
                                Reason::Invalid(format!("{n} is not a variation index")),
                            )
                        })?,
                )),
                (None, Some(name)) => Some(VariationRef::Name(util::key(
                    D,
                    || at(&cp, "variationName"),
                    Some(name),
                    limits,
                )?)),
                (None, None) => None,
            };
            let version = if c.unknown == Some(true) {
                None
            } else {
                version(c.version, || at(&cp, "version"), limits)?
            };
            let count = c
                .count
                .ok_or_else(|| DecodeError::new(D, at(&cp, "count"), Reason::Missing))?;
            if count > crate::window::MAX_COUNT {
                return Err(DecodeError::new(
                    D,
                    at(&cp, "count"),
                    Reason::Invalid(format!(
                        "{count} is past 2^53 - 1, the largest count every reader holds exactly"
                    )),
                ));
            }
            counters.push(SummaryCounter {
                variation,
                version,
                value: c.value.map_or_else(Json::null, RawText::to_json),
                count,
            });
        }
        crate::decode::check_kinds(flag.context_kinds.len())
            .map_err(|r| DecodeError::new(D, format!("{flag_path}.contextKinds"), r))?;
        let mut context_kinds = Vec::with_capacity(flag.context_kinds.len());
        for (i, k) in flag.context_kinds.iter().enumerate() {
            context_kinds.push(util::key(
                D,
                || format!("{flag_path}.contextKinds[{i}]"),
                Some(k),
                limits,
            )?);
        }
        flags.push(SummaryFlag {
            key: util::key(D, || flag_path.clone(), Some(flag_key), limits)?,
            default: flag.default.map(RawText::to_json),
            counters,
            context_kinds,
        });
    }
    Ok(Event::Summary(Box::new(Summary {
        scope: scope.clone(),
        start_date,
        end_date,
        features: flags,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decoded {
        let mut out = Decoded::default();
        decode(text.as_bytes(), &Limits::default(), &mut out);
        out
    }

    fn one_event(text: &str) -> Event {
        let out = dec(text);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.events.len(), 1);
        out.events.into_iter().next().unwrap()
    }

    fn err(text: &str) -> DecodeError {
        let out = dec(text);
        assert!(out.events.is_empty(), "{:?}", out.events);
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        out.errors.into_iter().next().unwrap()
    }

    fn eval(ev: Event) -> Evaluation {
        match ev {
            Event::Evaluation(e) => *e,
            other => panic!("not an evaluation: {other:?}"),
        }
    }

    #[test]
    fn feature_event_with_inline_context() {
        let e = eval(one_event(
            r#"{"kind":"feature","creationDate":1000,"key":"flag1","version":11,
                "context":{"kind":"user","key":"u","name":"Red"},"variation":1,"value":"a",
                "default":"d1","reason":{"kind":"FALLTHROUGH","inExperiment":true}}"#,
        ));
        assert_eq!(e.flag_key, "flag1");
        assert_eq!(e.version, Some(FlagVersion::Int(11)));
        assert_eq!(e.variation, Some(VariationRef::Index(1)));
        assert_eq!(e.value.as_str(), r#""a""#);
        assert_eq!(e.default.unwrap().as_str(), r#""d1""#);
        assert_eq!(e.creation_date, EventTime::from_millis(1000));
        assert_eq!(
            e.context.body.unwrap().as_str(),
            r#"{"kind":"user","key":"u","name":"Red"}"#
        );
        assert!(e.in_experiment);
        assert_eq!(e.track_events, None);
        assert!(!e.debug);
    }

    #[test]
    fn every_context_generation() {
        let e = eval(one_event(
            r#"{"kind":"feature","creationDate":1,"key":"f","contextKeys":{"user":"u","org":"o"}}"#,
        ));
        assert_eq!(e.context.fully_qualified_key(), "org:o:user:u");
        assert_eq!(e.context.body, None);
        let e = eval(one_event(
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","contextKind":"anonymousUser"}"#,
        ));
        assert_eq!(
            e.context.body.unwrap().as_str(),
            r#"{"kind":"user","key":"u","anonymous":true}"#
        );
        let e = eval(one_event(
            r#"{"kind":"debug","creationDate":1,"key":"f","user":{"key":"u","name":"B"}}"#,
        ));
        assert!(e.debug);
        assert_eq!(
            e.context.body.unwrap().as_str(),
            r#"{"key":"u","name":"B"}"#
        );
        let e = eval(one_event(
            r#"{"kind":"feature","creationDate":1,"key":"f","context":{"key":"old"}}"#,
        ));
        assert_eq!(e.context.keys[0].kind, "user");
    }

    #[test]
    fn raw_event_flags_are_honoured() {
        let e = eval(one_event(
            r#"{"kind":"feature","creationDate":5,"key":"f","userKey":"u","trackEvents":false,
                "debugEventsUntilDate":99,"samplingRatio":3,"excludeFromSummaries":true,"prereqOf":"p"}"#,
        ));
        assert_eq!(e.track_events, Some(false), "unknown flag: never full");
        assert_eq!(e.debug_events_until_date, Some(EventTime::from_millis(99)));
        assert_eq!(e.sampling_ratio, Some(3));
        assert!(e.exclude_from_summaries);
        assert_eq!(e.prereq_of.as_deref(), Some("p"));
        assert_eq!(e.default, Some(Json::null()));
        assert_eq!(e.variation, None);
        assert_eq!(e.version, None);
    }

    #[test]
    fn bulk_array_keeps_good_events_and_names_the_bad_one() {
        let out = dec(
            r#"[{"kind":"identify","creationDate":1,"context":{"kind":"user","key":"a"}},
                {"kind":"feature","creationDate":"soon","key":"f","userKey":"u"},
                {"kind":"custom","creationDate":2,"key":"ev","contextKeys":{"user":"b"},"metricValue":0}]"#,
        );
        assert_eq!(out.events.len(), 2);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].path, "[1].creationDate");
        assert_eq!(out.errors[0].reason.code(), "wrong_type");
        match &out.events[1] {
            Event::Custom(c) => assert_eq!(c.metric_value, Some(0.0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_export_envelope_sets_the_scope() {
        let ev = one_event(
            r#"{"project":"p1","environment":"e1","version":1,
                "event":{"kind":"feature","creationDate":1,"key":"f","userKey":"u","version":4}}"#,
        );
        let e = eval(ev);
        assert_eq!(e.scope.project.as_deref(), Some("p1"));
        assert_eq!(e.scope.env.as_deref(), Some("e1"));
        assert_eq!(e.version, Some(FlagVersion::Int(4)));
        let bad = err(r#"{"project":"p","environment":"e","event":{"kind":"feature"}}"#);
        assert_eq!(bad.path, "event.key");
    }

    #[test]
    fn summary_input_is_read_counter_by_counter() {
        let ev = one_event(
            r#"{"kind":"summary","startDate":1000,"endDate":1002,
                "features":{"flag1":{"default":"d1","counters":[
                    {"variation":1,"version":11,"value":"a","count":2},
                    {"version":11,"value":"d1","count":1},
                    {"unknown":true,"value":"d3","count":1},
                    {"variationName":"blue","version":"v7","value":"b","count":4}],
                  "contextKinds":["user","org"]}}}"#,
        );
        let Event::Summary(s) = ev else { panic!() };
        assert_eq!(s.features.len(), 1);
        let f = &s.features[0];
        assert_eq!(f.counters.len(), 4);
        assert_eq!(f.counters[2].version, None);
        assert_eq!(
            f.counters[3].variation,
            Some(VariationRef::Name("blue".into()))
        );
        assert_eq!(f.counters[3].version, Some(FlagVersion::Str("v7".into())));
        assert_eq!(f.context_kinds, vec!["user", "org"]);
    }

    #[test]
    fn alias_and_unknown_kinds_pass_through() {
        let ev = one_event(r#"{"kind":"alias","creationDate":3, "key":"new","previousKey":"old"}"#);
        let Event::PassThrough(p) = ev else { panic!() };
        assert_eq!(p.kind, "alias");
        assert_eq!(
            p.body.as_str(),
            r#"{"kind":"alias","creationDate":3,"key":"new","previousKey":"old"}"#
        );
        assert_eq!(p.creation_date, Some(EventTime::from_millis(3)));
    }

    #[test]
    fn bad_inputs_give_precise_errors() {
        let limits = Limits::default();
        let long_key = "k".repeat(limits.max_key_bytes + 1);
        let cases: Vec<(String, &str, &str)> = vec![
            (r#"{"kind":"feature","creationDate":1,"key":"f""#.into(), "", "syntax"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u"} x"#.into(), "", "syntax"),
            (r#""just a string""#.into(), "", "wrong_type"),
            ("null".into(), "", "wrong_type"),
            ("42".into(), "", "wrong_type"),
            ("{}".into(), "kind", "missing_field"),
            (r#"{"kind":7}"#.into(), "kind", "wrong_type"),
            (r#"{"kind":"feature","key":"f","userKey":"u"}"#.into(), "creationDate", "missing_field"),
            (r#"{"kind":"feature","creationDate":-5,"key":"f","userKey":"u"}"#.into(), "creationDate", "invalid_value"),
            (r#"{"kind":"feature","creationDate":1e300,"key":"f","userKey":"u"}"#.into(), "creationDate", "invalid_value"),
            (r#"{"kind":"feature","creationDate":1,"userKey":"u"}"#.into(), "key", "missing_field"),
            (r#"{"kind":"feature","creationDate":1,"key":"","userKey":"u"}"#.into(), "key", "invalid_value"),
            (r#"{"kind":"feature","creationDate":1,"key":5,"userKey":"u"}"#.into(), "key", "wrong_type"),
            (format!(r#"{{"kind":"feature","creationDate":1,"key":"{long_key}","userKey":"u"}}"#), "key", "string_too_long"),
            (r#"{"kind":"feature","creationDate":1,"key":"f"}"#.into(), "context", "missing_field"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","variation":-1}"#.into(), "variation", "invalid_value"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","variation":1.5}"#.into(), "variation", "invalid_value"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","variation":99999999999}"#.into(), "variation", "invalid_value"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","version":[1]}"#.into(), "version", "wrong_type"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","version":1e40}"#.into(), "version", "invalid_value"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","trackEvents":"yes"}"#.into(), "trackEvents", "wrong_type"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","samplingRatio":-1}"#.into(), "samplingRatio", "invalid_value"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","context":{"kind":"user"}}"#.into(), "context.key", "missing_field"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","context":"u"}"#.into(), "context", "wrong_type"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","contextKeys":{"user":1}}"#.into(), "contextKeys.user", "wrong_type"),
            (r#"{"kind":"feature","creationDate":1,"key":"f","contextKeys":{}}"#.into(), "contextKeys", "invalid_value"),
            (r#"{"kind":"custom","creationDate":1,"userKey":"u"}"#.into(), "key", "missing_field"),
            (r#"{"kind":"custom","creationDate":1,"key":"e","userKey":"u","metricValue":"x"}"#.into(), "metricValue", "wrong_type"),
            (r#"{"kind":"identify","creationDate":1}"#.into(), "context", "missing_field"),
            (r#"{"kind":"summary","startDate":5,"endDate":1,"features":{}}"#.into(), "endDate", "invalid_value"),
            (r#"{"kind":"summary","startDate":1,"endDate":2}"#.into(), "features", "missing_field"),
            (r#"{"kind":"summary","startDate":1,"endDate":2,"features":{"f":{"counters":[{"value":1}]}}}"#.into(), "features.f.counters[0].count", "missing_field"),
            (r#"{"kind":"summary","startDate":1,"endDate":2,"features":{"f":{"counters":[{"count":-3}]}}}"#.into(), "features.f.counters[0].count", "invalid_value"),
            (r#"{"kind":"summary","startDate":1,"endDate":2,"features":{"f":{"counters":"x"}}}"#.into(), "features.f.counters", "wrong_type"),
            (r#"[[{"kind":"feature"}]]"#.into(), "[0]", "wrong_type"),
            (format!("{}1{}", "[".repeat(200), "]".repeat(200)), "[0]", "wrong_type"),
        ];
        for (input, path, code) in cases {
            let e = err(&input);
            assert_eq!(e.dialect, Dialect::Launchdarkly, "{input}");
            assert_eq!(
                (e.path.as_str(), e.reason.code()),
                (path, code),
                "{input}: {e}"
            );
        }
    }

    #[test]
    fn an_envelope_inside_an_envelope_is_refused() {
        let inner = r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","value":1}"#;
        let once = format!(r#"{{"project":"p","environment":"e","event":{inner}}}"#);
        assert_eq!(dec(&once).events.len(), 1);
        let twice = format!(r#"{{"project":"p","environment":"e","event":{once}}}"#);
        let e = err(&twice);
        assert_eq!(
            (e.path.as_str(), e.reason.code()),
            ("event", "nested_envelope")
        );
    }

    #[test]
    fn deep_nesting_never_overflows() {
        for depth in [500, 100_000] {
            let text = format!(
                r#"{{"kind":"feature","creationDate":1,"key":"f","userKey":"u","value":{}1{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            let out = dec(&text);
            assert_eq!(out.events.len() + out.errors.len(), 1);
        }
    }

    #[test]
    fn invalid_utf8_and_huge_strings_are_errors() {
        let mut bytes = br#"{"kind":"feature","creationDate":1,"key":""#.to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(br#"","userKey":"u"}"#);
        let mut out = Decoded::default();
        decode(&bytes, &Limits::default(), &mut out);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].reason.code(), "utf8");

        let huge = format!(
            r#"{{"kind":"feature","creationDate":1,"key":"f","userKey":"u","value":"{}"}}"#,
            "x".repeat(10 << 20)
        );
        let decoder = super::super::Decoder::new(Dialect::Launchdarkly, Limits::default());
        let mut out = Decoded::default();
        decoder.decode(huge.as_bytes(), &mut out);
        assert_eq!(out.errors[0].reason.code(), "too_large");
    }
}
