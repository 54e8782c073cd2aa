//! go-feature-flag: `FeatureEvent` and `TrackingEvent`
//! (`thomaspoignant/go-feature-flag: exporter/feature_event.go`,
//! `exporter/tracking_event.go`) → canonical events. Formats: docs/reference/events.md §2.
//!
//! A record is one event object, a JSON array of them, or the relay's collector
//! envelope `{"meta"|"metadata": {…}, "events": […]}`, whose meta replaces each feature
//! event's `metadata` (as the relay does). Every element of a batch is decoded on its
//! own: a bad one costs one [`DecodeError`] naming its index; the others still decode.
//!
//! Mapping:
//! - `feature` → [`Evaluation`]: `variation` is a name; `"SdkDefault"` or `default: true`
//!   means the application's fallback was served (no variation), and with
//!   `default: true` the served value *is* that fallback, so it is also `default`.
//!   `version` is a string (`""` too: the flag exists but has no version configured, which
//!   is not LaunchDarkly's "unknown flag") or an integer. `source` and `metadata` are kept
//!   verbatim in `meta`; `metadata.environment` (a string) becomes the scope's env.
//! - `tracking` → [`Custom`]: `trackingEventDetails` is the data, its numeric `value`
//!   the metric value; `evaluationContext` attributes go into the context body.
//! - `creationDate` is seconds; milliseconds and microseconds are read by magnitude.
//! - `contextKind` `anonymousUser` gives a `user` context with `"anonymous": true`.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::util::{self, Origin, RawObject, Str};
use super::{DecodeError, Decoded, Dialect, Limits, Reason};
use crate::event::{
    ContextKey, Contexts, Custom, Evaluation, Event, FlagVersion, Json, Scope, TimeUnit,
    VariationRef,
};

const D: Dialect = Dialect::Goff;

/// The variation name go-feature-flag writes when the SDK's default was served.
const SDK_DEFAULT: &str = "SdkDefault";

/// Decodes one record: an event, an array of events, or a collector envelope.
pub(crate) fn decode(value: &[u8], limits: &Limits, out: &mut Decoded) {
    match value.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => batch(value, limits, out),
        _ => object(value, limits, out),
    }
}

/// Where an event sits in the record; its error paths are built only on error.
#[derive(Clone, Copy, Debug)]
enum Loc {
    Root,
    /// The n-th element of a top-level array.
    Item(usize),
    /// The n-th element of an envelope's `events`.
    Event(usize),
}

impl Loc {
    fn prefix(self) -> String {
        match self {
            Self::Root => String::new(),
            Self::Item(i) => format!("[{i}]"),
            Self::Event(i) => format!("events[{i}]"),
        }
    }

    fn at(self, field: &str) -> String {
        util::at(&self.prefix(), field)
    }
}

/// One event object, or the collector envelope: a single struct, so that one parse
/// serves both (`events` present ⇒ envelope).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent<'a> {
    #[serde(borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    context_kind: Option<Str<'a>>,
    #[serde(borrow)]
    user_key: Option<Str<'a>>,
    creation_date: Option<serde_json::Number>,
    #[serde(borrow)]
    key: Option<Str<'a>>,
    #[serde(borrow)]
    variation: Option<Str<'a>>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    default: Option<bool>,
    #[serde(borrow)]
    version: Option<Version<'a>>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    /// An event's metadata, or (in an envelope) the alias of `meta`.
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    evaluation_context: Option<&'a RawValue>,
    #[serde(borrow)]
    tracking_event_details: Option<&'a RawValue>,
    /// Envelope only.
    #[serde(borrow)]
    meta: Option<&'a RawValue>,
    /// Envelope only.
    #[serde(borrow)]
    events: Option<Vec<&'a RawValue>>,
}

/// A flag version: go-feature-flag writes strings; integers are accepted too.
#[derive(Debug)]
enum Version<'a> {
    Str(Cow<'a, str>),
    Int(i64),
}

impl<'de: 'a, 'a> Deserialize<'de> for Version<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Version<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Version::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Version::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Version::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(Version::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                serde_json::Number::from_f64(v)
                    .as_ref()
                    .and_then(util::int)
                    .map(Version::Int)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// Event metadata, read once per envelope (or once per event outside one).
#[derive(Debug, Default)]
struct Meta<'a> {
    raw: Option<&'a RawValue>,
    env: Option<CompactString>,
}

impl<'a> Meta<'a> {
    /// Reads a metadata object found at `path`: it is kept verbatim, and its
    /// `environment`, when a string, names the scope's env.
    fn read(
        raw: Option<&'a RawValue>,
        path: impl Fn() -> String,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        util::expect_object(D, &path, raw)?;
        #[derive(Deserialize)]
        struct Fields<'a> {
            #[serde(borrow, default)]
            environment: AnyStr<'a>,
        }
        let fields: Fields<'_> = match serde_json::from_str(raw.get()) {
            Ok(f) => f,
            Err(_) => util::parse(D, &path(), raw.get().as_bytes())?,
        };
        let env = util::opt_key(
            D,
            || util::at(&path(), "environment"),
            fields.environment.0.as_deref(),
            limits,
        )?;
        Ok(Self {
            raw: Some(raw),
            env,
        })
    }
}

/// A string, or nothing for any other JSON value. Metadata is the producer's free-form
/// map: an `environment` that is not a string is kept in `meta` but names no scope.
#[derive(Debug, Default)]
struct AnyStr<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for AnyStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(AnyStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AnyStr(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(AnyStr(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(AnyStr(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(AnyStr(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(AnyStr(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(AnyStr(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(AnyStr(None))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(AnyStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A top-level array of events.
fn batch(bytes: &[u8], limits: &Limits, out: &mut Decoded) {
    let mut scratch = None;
    let (items, origin) =
        match util::parse_container::<Vec<&RawValue>>(D, String::new, bytes, &mut scratch) {
            Ok(parsed) => parsed,
            Err(e) => return out.errors.push(e),
        };
    for (i, raw) in items.into_iter().enumerate() {
        element(raw, origin, Loc::Item(i), None, limits, out);
    }
}

/// A top-level object: one event, or a collector envelope.
fn object(bytes: &[u8], limits: &Limits, out: &mut Decoded) {
    let mut scratch = None;
    let (top, origin) =
        match util::parse_container::<RawEvent<'_>>(D, String::new, bytes, &mut scratch) {
            Ok(parsed) => parsed,
            Err(e) => return out.errors.push(e),
        };
    let Some(events) = top.events else {
        // A single event. If only its UTF-8-patched copy parsed, decoding the record
        // itself again reports the bad bytes with their path.
        return if origin.is_patched() {
            single(bytes, Loc::Root, None, limits, out)
        } else {
            emit(event(top, Loc::Root, None, limits), out)
        };
    };
    // The relay's envelope: `meta` (or its alias `metadata`) replaces each event's own.
    let (field, meta) = match (top.meta, top.metadata) {
        (Some(meta), _) => ("meta", Some(meta)),
        (None, metadata) => ("metadata", metadata),
    };
    let meta = match meta {
        None => None,
        Some(raw) => {
            let read = origin
                .raw(D, || field.to_owned(), raw)
                .and_then(|raw| Meta::read(Some(raw), || field.to_owned(), limits));
            match read {
                Ok(meta) => Some(meta),
                Err(e) => return out.errors.push(e),
            }
        }
    };
    for (i, raw) in events.into_iter().enumerate() {
        element(raw, origin, Loc::Event(i), meta.as_ref(), limits, out);
    }
}

/// Decodes one element of a batch or envelope on its own.
fn element<'a>(
    raw: &'a RawValue,
    origin: Origin<'a>,
    loc: Loc,
    envelope: Option<&Meta<'_>>,
    limits: &Limits,
    out: &mut Decoded,
) {
    // Checked first: serde would read an array into a struct, field by field.
    if let Err(e) = util::expect_object(D, || loc.prefix(), raw) {
        return out.errors.push(e);
    }
    single(origin.bytes(raw), loc, envelope, limits, out);
}

/// Decodes one event object from its own bytes.
fn single(bytes: &[u8], loc: Loc, envelope: Option<&Meta<'_>>, limits: &Limits, out: &mut Decoded) {
    let parsed = match serde_json::from_slice::<RawEvent<'_>>(bytes) {
        Ok(ev) => Ok(ev),
        Err(_) => util::parse(D, &loc.prefix(), bytes),
    };
    match parsed {
        Ok(ev) => emit(event(ev, loc, envelope, limits), out),
        Err(e) => out.errors.push(e),
    }
}

fn emit(result: Result<Event, DecodeError>, out: &mut Decoded) {
    match result {
        Ok(ev) => out.events.push(ev),
        Err(e) => out.errors.push(e),
    }
}

fn event(
    ev: RawEvent<'_>,
    loc: Loc,
    envelope: Option<&Meta<'_>>,
    limits: &Limits,
) -> Result<Event, DecodeError> {
    match ev.kind.as_deref() {
        Some("feature") => feature(ev, loc, envelope, limits).map(Event::evaluation),
        Some("tracking") => tracking(ev, loc, envelope, limits).map(|c| Event::Custom(Box::new(c))),
        Some(other) => Err(DecodeError::new(
            D,
            loc.at("kind"),
            Reason::UnknownKind(util::excerpt(other)),
        )),
        None => Err(DecodeError::new(D, loc.at("kind"), Reason::Missing)),
    }
}

fn feature(
    ev: RawEvent<'_>,
    loc: Loc,
    envelope: Option<&Meta<'_>>,
    limits: &Limits,
) -> Result<Evaluation, DecodeError> {
    let flag_key = util::key(D, || loc.at("key"), ev.key.as_deref(), limits)?;
    let context = user(&ev, loc, None, limits)?;
    let creation_date = util::time(
        D,
        || loc.at("creationDate"),
        ev.creation_date.as_ref(),
        TimeUnit::SecondsOrFiner,
    )?;
    let variation = util::opt_key(D, || loc.at("variation"), ev.variation.as_deref(), limits)?;
    let served_default = ev.default.unwrap_or(false);
    let variation = variation
        .filter(|name| !served_default && name != SDK_DEFAULT)
        .map(VariationRef::Name);
    let value = ev.value.map_or_else(Json::null, Json::from_raw);
    let default = served_default.then(|| value.clone());
    let version = match ev.version {
        None => None,
        Some(Version::Int(n)) => Some(FlagVersion::Int(n)),
        // `""` is go-feature-flag's version of a flag that has none configured: the
        // flag exists, so it is a (string) version, not LaunchDarkly's "unknown".
        Some(Version::Str(s)) if s.is_empty() => Some(FlagVersion::Str(Default::default())),
        Some(Version::Str(s)) => Some(FlagVersion::Str(util::key(
            D,
            || loc.at("version"),
            Some(&s),
            limits,
        )?)),
    };
    let own;
    let meta = match envelope {
        Some(meta) => meta,
        None => {
            own = Meta::read(ev.metadata, || loc.at("metadata"), limits)?;
            &own
        }
    };
    Ok(Evaluation {
        scope: Scope {
            project: None,
            env: meta.env.clone(),
        },
        flag_key,
        variation,
        version,
        value,
        default,
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
        meta: producer_meta(ev.source, meta.raw),
    })
}

fn tracking(
    ev: RawEvent<'_>,
    loc: Loc,
    envelope: Option<&Meta<'_>>,
    limits: &Limits,
) -> Result<Custom, DecodeError> {
    let key = util::key(D, || loc.at("key"), ev.key.as_deref(), limits)?;
    let attributes = match ev.evaluation_context {
        None => None,
        Some(raw) => Some(util::parse::<RawObject<'_>>(
            D,
            &loc.at("evaluationContext"),
            raw.get().as_bytes(),
        )?),
    };
    let context = user(&ev, loc, attributes.as_ref(), limits)?;
    let creation_date = util::time(
        D,
        || loc.at("creationDate"),
        ev.creation_date.as_ref(),
        TimeUnit::SecondsOrFiner,
    )?;
    let (data, metric_value) = match ev.tracking_event_details {
        None => (None, None),
        Some(raw) => {
            let path = || loc.at("trackingEventDetails");
            util::expect_object(D, path, raw)?;
            #[derive(Deserialize)]
            struct Details<'a> {
                #[serde(borrow)]
                value: Option<&'a RawValue>,
            }
            let details: Details<'_> = util::parse(D, &path(), raw.get().as_bytes())?;
            let metric = match details.value {
                Some(v)
                    if v.get()
                        .starts_with(|c: char| c == '-' || c.is_ascii_digit()) =>
                {
                    Some(number(v, || loc.at("trackingEventDetails.value"))?)
                }
                _ => None,
            };
            (Some(Json::from_raw(raw)), metric)
        }
    };
    let env = match envelope {
        Some(meta) => meta.env.clone(),
        None => Meta::read(ev.metadata, || loc.at("metadata"), limits)?.env,
    };
    Ok(Custom {
        scope: Scope { project: None, env },
        key,
        context,
        data,
        metric_value,
        creation_date,
        sampling_ratio: None,
    })
}

/// The `user` context of an event: `userKey`, anonymous when `contextKind` says so, with
/// the given attributes. The body is left out when there is nothing beyond the key.
fn user(
    ev: &RawEvent<'_>,
    loc: Loc,
    attributes: Option<&RawObject<'_>>,
    limits: &Limits,
) -> Result<Contexts, DecodeError> {
    let key = util::key(D, || loc.at("userKey"), ev.user_key.as_deref(), limits)?;
    let anonymous = match ev.context_kind.as_deref() {
        None | Some("" | "user") => false,
        Some("anonymousUser") => true,
        Some(other) => {
            return Err(DecodeError::new(
                D,
                loc.at("contextKind"),
                Reason::Invalid(format!(
                    "context kind {:?} is neither \"user\" nor \"anonymousUser\"",
                    util::excerpt(other)
                )),
            ));
        }
    };
    let body = (anonymous || attributes.is_some()).then(|| {
        let fields = attributes.map_or(&[][..], |a| &a.fields[..]);
        util::user_body(&key, None, fields, anonymous)
    });
    Ok(Contexts {
        keys: smallvec::smallvec![ContextKey {
            kind: "user".into(),
            key
        }],
        body,
    })
}

/// `{"source":…,"metadata":…}` with the fields present, verbatim; `None` if neither is.
fn producer_meta(source: Option<&RawValue>, metadata: Option<&RawValue>) -> Option<Json> {
    #[derive(Serialize)]
    struct ProducerMeta<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<&'a RawValue>,
    }
    if source.is_none() && metadata.is_none() {
        return None;
    }
    serde_json::value::to_raw_value(&ProducerMeta { source, metadata })
        .ok()
        .map(|raw| Json::from_raw(&raw))
}

/// A JSON number as a finite `f64`.
fn number(raw: &RawValue, path: impl FnOnce() -> String) -> Result<f64, DecodeError> {
    match serde_json::from_str::<f64>(raw.get()) {
        Ok(n) if n.is_finite() => Ok(n),
        _ => Err(DecodeError::new(
            D,
            path(),
            Reason::Invalid(format!("{} is out of range", util::excerpt(raw.get()))),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::decode::testing::{self, json};
    use crate::event::EventTime;

    fn run_bytes(input: &[u8]) -> Decoded {
        testing::run(decode, input)
    }

    fn run(input: &str) -> Decoded {
        run_bytes(input.as_bytes())
    }

    fn only_event(input: &str) -> Event {
        testing::only_event(decode, input)
    }

    fn only_error(input: &[u8], path: &str, code: &str) -> DecodeError {
        testing::only_error(decode, D, input, path, code)
    }

    fn evaluation(flag: &str, user: &str, ms: i64) -> Evaluation {
        Evaluation::new(
            flag,
            Contexts::single("user", user),
            EventTime::from_millis(ms),
        )
    }

    const FEATURE: &str = r#"{"kind":"feature","contextKind":"anonymousUser","userKey":"EFGH","creationDate":1617970701,
 "key":"random-key","variation":"Default","value":"YO2","default":false,"version":"127",
 "source":"SERVER","metadata":{"environment":"production"}}"#;

    fn feature_expected() -> Evaluation {
        Evaluation {
            scope: Scope {
                project: None,
                env: Some("production".into()),
            },
            variation: Some(VariationRef::Name("Default".into())),
            version: Some(FlagVersion::Str("127".into())),
            value: json(r#""YO2""#),
            context: Contexts {
                body: Some(json(r#"{"kind":"user","key":"EFGH","anonymous":true}"#)),
                ..Contexts::single("user", "EFGH")
            },
            meta: Some(json(
                r#"{"source":"SERVER","metadata":{"environment":"production"}}"#,
            )),
            ..evaluation("random-key", "EFGH", 1_617_970_701_000)
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let ev: RawEvent<'_> = serde_json::from_str(r#"{"key":"plain","userKey":"a\"b"}"#).unwrap();
        assert!(matches!(ev.key.map(|k| k.0), Some(Cow::Borrowed("plain"))));
        assert!(matches!(ev.user_key.map(|k| k.0), Some(Cow::Owned(k)) if k == "a\"b"));
    }

    #[test]
    fn feature_event_of_the_reference() {
        assert_eq!(only_event(FEATURE), Event::evaluation(feature_expected()));
    }

    #[test]
    fn tracking_event_of_the_reference() {
        let input = r#"{"kind":"tracking","contextKind":"user","userKey":"U1","creationDate":1618909178,
            "key":"clicked-checkout","evaluationContext":{"targetingKey":"U1","key":"no","plan":"pro"},
            "trackingEventDetails":{"value":99.77}}"#;
        let expected = Custom {
            scope: Scope::default(),
            key: "clicked-checkout".into(),
            context: Contexts {
                body: Some(json(
                    r#"{"kind":"user","key":"U1","targetingKey":"U1","plan":"pro"}"#,
                )),
                ..Contexts::single("user", "U1")
            },
            data: Some(json(r#"{"value":99.77}"#)),
            metric_value: Some(99.77),
            creation_date: EventTime::from_millis(1_618_909_178_000),
            sampling_ratio: None,
        };
        assert_eq!(only_event(input), Event::Custom(Box::new(expected)));
    }

    #[test]
    fn anonymous_tracking_without_details() {
        let input = r#"{"kind":"tracking","contextKind":"anonymousUser","userKey":"a","creationDate":1,
            "key":"k","evaluationContext":{"anonymous":false,"x":1},"trackingEventDetails":{"value":"12"}}"#;
        let Event::Custom(c) = only_event(input) else {
            panic!("not custom")
        };
        assert_eq!(
            c.context.body,
            Some(json(r#"{"kind":"user","key":"a","x":1,"anonymous":true}"#))
        );
        assert_eq!(c.data, Some(json(r#"{"value":"12"}"#)));
        assert_eq!(c.metric_value, None);

        let input = r#"{"kind":"tracking","userKey":"a","creationDate":1,"key":"k"}"#;
        let Event::Custom(c) = only_event(input) else {
            panic!("not custom")
        };
        assert_eq!(c.context, Contexts::single("user", "a"));
        assert_eq!((c.data, c.metric_value), (None, None));
    }

    #[test]
    fn default_served() {
        // `default: true`: the served value is the application's fallback.
        let input = r#"{"kind":"feature","userKey":"u","creationDate":1617970701,"key":"f",
            "variation":"SdkDefault","value":{"a":[1, 2]},"default":true,"version":""}"#;
        let expected = Evaluation {
            value: json(r#"{"a":[1,2]}"#),
            default: Some(json(r#"{"a":[1,2]}"#)),
            version: Some(FlagVersion::Str("".into())),
            ..evaluation("f", "u", 1_617_970_701_000)
        };
        assert_eq!(only_event(input), Event::evaluation(expected));

        // "SdkDefault" alone: no variation, but no fallback value known either.
        let input = r#"{"kind":"feature","userKey":"u","creationDate":1617970701,"key":"f",
            "variation":"SdkDefault","value":false,"default":false}"#;
        let expected = Evaluation {
            value: json("false"),
            ..evaluation("f", "u", 1_617_970_701_000)
        };
        assert_eq!(only_event(input), Event::evaluation(expected));

        // `default: true` wins over a variation name.
        let input = r#"{"kind":"feature","userKey":"u","creationDate":1,"key":"f",
            "variation":"True","value":true,"default":true}"#;
        let Event::Evaluation(e) = only_event(input) else {
            panic!("not an evaluation")
        };
        assert_eq!((e.variation, e.default), (None, Some(json("true"))));
    }

    #[test]
    fn versions_times_and_missing_value() {
        let input = r#"{"kind":"feature","userKey":"u","creationDate":1617970701123,"key":"f",
            "variation":"True","version":12}"#;
        let expected = Evaluation {
            variation: Some(VariationRef::Name("True".into())),
            version: Some(FlagVersion::Int(12)),
            ..evaluation("f", "u", 1_617_970_701_123)
        };
        assert_eq!(only_event(input), Event::evaluation(expected));

        let input = r#"{"kind":"feature","userKey":"u","creationDate":1617970701.5,"key":"f","version":null}"#;
        assert_eq!(
            only_event(input),
            Event::evaluation(evaluation("f", "u", 1_617_970_701_500))
        );

        // Microseconds by magnitude.
        let input = r#"{"kind":"feature","userKey":"u","creationDate":1617970701123456,"key":"f","source":"PROVIDER_CACHE"}"#;
        let expected = Evaluation {
            meta: Some(json(r#"{"source":"PROVIDER_CACHE"}"#)),
            ..evaluation("f", "u", 1_617_970_701_123)
        };
        assert_eq!(only_event(input), Event::evaluation(expected));
    }

    #[test]
    fn array_of_events() {
        let input = format!(
            r#" [{FEATURE}, {{"kind":"tracking","userKey":"U","creationDate":2,"key":"t"}}] "#
        );
        let out = run(&input);
        assert_eq!(out.errors, vec![]);
        assert_eq!(
            out.events,
            vec![
                Event::evaluation(feature_expected()),
                Event::Custom(Box::new(Custom {
                    scope: Scope::default(),
                    key: "t".into(),
                    context: Contexts::single("user", "U"),
                    data: None,
                    metric_value: None,
                    creation_date: EventTime::from_millis(2000),
                    sampling_ratio: None,
                })),
            ]
        );
        assert_eq!(run("[]").events, vec![]);
        assert_eq!(run("[]").errors, vec![]);
    }

    #[test]
    fn envelope_meta_replaces_event_metadata() {
        for field in ["meta", "metadata"] {
            let input = format!(
                r#"{{"{field}":{{"environment":"staging","sdk":"js"}},"events":[{FEATURE},
                {{"kind":"tracking","userKey":"U","creationDate":2,"key":"t"}}]}}"#
            );
            let out = run(&input);
            assert_eq!(out.errors, vec![]);
            let expected = Evaluation {
                scope: Scope {
                    project: None,
                    env: Some("staging".into()),
                },
                meta: Some(json(
                    r#"{"source":"SERVER","metadata":{"environment":"staging","sdk":"js"}}"#,
                )),
                ..feature_expected()
            };
            assert_eq!(out.events[0], Event::evaluation(expected));
            assert_eq!(out.events[1].scope().env.as_deref(), Some("staging"));
        }
        // No envelope meta: the events keep their own.
        let input = format!(r#"{{"events":[{FEATURE}]}}"#);
        assert_eq!(only_event(&input), Event::evaluation(feature_expected()));
        // A non-string environment is kept in meta but names no scope.
        let input = r#"{"kind":"feature","userKey":"u","creationDate":1,"key":"f","metadata":{"environment":7}}"#;
        let expected = Evaluation {
            meta: Some(json(r#"{"metadata":{"environment":7}}"#)),
            ..evaluation("f", "u", 1000)
        };
        assert_eq!(only_event(input), Event::evaluation(expected));
    }

    #[test]
    fn one_bad_element_costs_only_itself() {
        let input = format!(
            r#"[{FEATURE},{{"kind":"feature","userKey":"u","creationDate":"yesterday","key":"f"}},{FEATURE}]"#
        );
        let out = run(&input);
        assert_eq!(
            out.events,
            vec![
                Event::evaluation(feature_expected()),
                Event::evaluation(feature_expected())
            ]
        );
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].path, "[1].creationDate");
        assert_eq!(out.errors[0].reason.code(), "wrong_type");

        let input = format!(
            r#"{{"meta":{{}},"events":[{FEATURE},{{"kind":"feature","key":"f","creationDate":1}}]}}"#
        );
        let out = run(&input);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].path, "events[1].userKey");
        assert_eq!(out.errors[0].reason, Reason::Missing);
    }

    #[test]
    fn bad_utf8_costs_only_its_element() {
        let good = FEATURE.as_bytes();
        let bad: &[u8] =
            b"{\"kind\":\"feature\",\"userKey\":\"u\",\"creationDate\":1,\"key\":\"f\xff\"}";
        let input = [&b"["[..], good, b",", bad, b",", good, b"]"].concat();
        let out = run_bytes(&input);
        assert_eq!(out.events.len(), 2);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].path, "[1].key");
        assert_eq!(out.errors[0].reason.code(), "utf8");

        let input = [&b"{\"meta\":{},\"events\":["[..], bad, b",", good, b"]}"].concat();
        let out = run_bytes(&input);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].path, "events[0].key");
        assert_eq!(out.errors[0].reason.code(), "utf8");

        // In the envelope's meta, the bad bytes concern every event.
        let input = [&b"{\"meta\":{\"a\":\"\xc3\"},\"events\":["[..], good, b"]}"].concat();
        only_error(&input, "meta", "utf8");
        // In a single event.
        only_error(bad, "key", "utf8");
    }

    #[test]
    fn bad_records_name_the_field() {
        let ok = r#""kind":"feature","userKey":"u","creationDate":1617970701,"key":"f""#;
        let with = |extra: &str| format!("{{{ok},{extra}}}");
        // Truncated.
        only_error(br#"{"kind":"feature","userKey":"u""#, "", "syntax");
        only_error(br#"[{"kind":"feature"},"#, "", "syntax");
        // Wrong types.
        only_error(
            br#"{"kind":"feature","userKey":"u","creationDate":"1617970701","key":"f"}"#,
            "creationDate",
            "wrong_type",
        );
        only_error(
            br#"{"kind":"feature","userKey":42,"creationDate":1,"key":"f"}"#,
            "userKey",
            "wrong_type",
        );
        only_error(
            with(r#""default":"yes""#).as_bytes(),
            "default",
            "wrong_type",
        );
        only_error(
            with(r#""variation":1"#).as_bytes(),
            "variation",
            "wrong_type",
        );
        only_error(
            with(r#""version":1.5"#).as_bytes(),
            "version",
            "invalid_value",
        );
        only_error(
            with(r#""metadata":"prod""#).as_bytes(),
            "metadata",
            "wrong_type",
        );
        only_error(br#"{"kind":7}"#, "kind", "wrong_type");
        // Missing keys.
        only_error(
            br#"{"kind":"feature","userKey":"u","creationDate":1}"#,
            "key",
            "missing_field",
        );
        only_error(
            br#"{"kind":"feature","userKey":"u","key":"f"}"#,
            "creationDate",
            "missing_field",
        );
        only_error(b"{}", "kind", "missing_field");
        only_error(
            br#"{"kind":"feature","userKey":"","creationDate":1,"key":"f"}"#,
            "userKey",
            "invalid_value",
        );
        // Negative, huge and unrepresentable timestamps.
        only_error(
            br#"{"kind":"feature","userKey":"u","creationDate":-1,"key":"f"}"#,
            "creationDate",
            "invalid_value",
        );
        only_error(
            br#"{"kind":"feature","userKey":"u","creationDate":1e30,"key":"f"}"#,
            "creationDate",
            "invalid_value",
        );
        only_error(
            br#"{"kind":"feature","userKey":"u","creationDate":1e400,"key":"f"}"#,
            "creationDate",
            "syntax",
        );
        // Huge numbers elsewhere.
        only_error(
            with(r#""version":99999999999999999999"#).as_bytes(),
            "version",
            "invalid_value",
        );
        let e = only_error(
            br#"{"kind":"tracking","userKey":"u","creationDate":1,"key":"t","trackingEventDetails":{"value":1e999}}"#,
            "trackingEventDetails.value",
            "invalid_value",
        );
        assert_eq!(e.reason, Reason::Invalid("1e999 is out of range".into()));
        // Over-long strings.
        let long = "k".repeat(2048);
        let e = only_error(
            format!(r#"{{"kind":"feature","userKey":"u","creationDate":1,"key":"{long}"}}"#)
                .as_bytes(),
            "key",
            "string_too_long",
        );
        assert_eq!(
            e.reason,
            Reason::StringTooLong {
                len: 2048,
                limit: 1024
            }
        );
        only_error(
            with(&format!(r#""metadata":{{"environment":"{long}"}}"#)).as_bytes(),
            "metadata.environment",
            "string_too_long",
        );
        // Shapes.
        only_error(b"null", "", "wrong_type");
        only_error(b"42", "", "wrong_type");
        only_error(b"", "", "syntax");
        only_error(format!("[[{FEATURE}]]").as_bytes(), "[0]", "wrong_type");
        only_error(br#"{"events":5}"#, "events", "wrong_type");
        only_error(
            format!(r#"{{"meta":[1],"events":[{FEATURE}]}}"#).as_bytes(),
            "meta",
            "wrong_type",
        );
        only_error(
            with(r#""evaluationContext":[1]"#)
                .replace("feature", "tracking")
                .as_bytes(),
            "evaluationContext",
            "wrong_type",
        );
        only_error(
            with(r#""trackingEventDetails":3"#)
                .replace("feature", "tracking")
                .as_bytes(),
            "trackingEventDetails",
            "wrong_type",
        );
        // Kinds.
        let e = only_error(
            br#"{"kind":"summary","userKey":"u","creationDate":1,"key":"f"}"#,
            "kind",
            "unknown_kind",
        );
        assert_eq!(e.reason, Reason::UnknownKind("summary".into()));
        only_error(
            with(r#""contextKind":"org""#).as_bytes(),
            "contextKind",
            "invalid_value",
        );
        // A repeated field is ambiguous (serde names it in the message, not the path).
        let e = only_error(with(r#""key":"g""#).as_bytes(), "", "invalid_value");
        assert!(e.to_string().contains("duplicate field `key`"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_or_kept_without_recursion() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        only_error(format!("[{deep}]").as_bytes(), "[0]", "wrong_type");
        let input = format!(
            r#"{{"kind":"feature","userKey":"u","creationDate":1,"key":"f","value":{deep}}}"#
        );
        let Event::Evaluation(e) = only_event(&input) else {
            panic!("not an evaluation")
        };
        assert_eq!(e.value.as_str(), deep);
        let input = format!(
            r#"{{"kind":"tracking","userKey":"u","creationDate":1,"key":"t","evaluationContext":{{"a":{deep}}},"metadata":{{"environment":{deep}}}}}"#
        );
        assert_eq!(run(&input).events.len(), 1);
    }

    #[test]
    fn never_panics_on_mangled_input() {
        let input = format!(
            r#"{{"meta":{{"environment":"e"}},"events":[{FEATURE},{{"kind":"tracking","userKey":"U","creationDate":2,"key":"t","evaluationContext":{{"a":"é"}},"trackingEventDetails":{{"value":1}}}}]}}"#
        );
        let bytes = input.as_bytes();
        for end in 0..bytes.len() {
            let out = run_bytes(&bytes[..end]);
            assert!(!out.errors.is_empty() || !out.events.is_empty());
        }
        for i in 0..bytes.len() {
            for b in [b'"', b'{', b']', b'\\', 0xff, b'9', b'-'] {
                let mut mangled = bytes.to_vec();
                mangled[i] = b;
                let out = run_bytes(&mangled);
                assert!(!out.errors.is_empty() || !out.events.is_empty());
            }
        }
    }
}
