//! FeatBit (`featbit/featbit`) → canonical events. Formats: docs/reference/events.md §3.
//!
//! Two shapes, told apart by the first byte:
//! - an object: a `featbit-insights` Kafka message `{uuid, distinct_id, env_id, event,
//!   properties, timestamp}`, whose `properties` is a JSON *string* holding an object
//!   (decoded as a second stage; its errors are reported under `properties.…`) and whose
//!   `timestamp` is microseconds. `event: "FlagValue"` is an evaluation; any other event
//!   (a metric type, usually `CustomEvent`) is a custom event.
//! - an array: the SDK insight payload (`POST /api/public/insight/track`), entries of
//!   `{user, variations, metrics}` with millisecond timestamps. Each variation and each
//!   metric is decoded on its own, so a bad one costs only itself; an entry whose user
//!   is bad costs that entry.
//!
//! FeatBit carries no flag version, and the Kafka topic no variation value: both are
//! left empty (`None`, `null`), never invented. The context is a `user` whose body holds
//! the name (when not empty) and, in the SDK payload, the customized properties as
//! top-level attributes.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::util::{self, Str};
use super::{DecodeError, Decoded, Dialect, Limits, Reason};
use crate::event::{
    ContextKey, Contexts, Custom, Evaluation, Event, EventTime, Json, Scope, TimeUnit, VariationRef,
};

const D: Dialect = Dialect::Featbit;

/// The `event` of an evaluation on the `featbit-insights` topic.
const FLAG_VALUE: &str = "FlagValue";

/// Decodes one record: an insights message or an SDK insight payload.
pub(crate) fn decode(value: &[u8], limits: &Limits, out: &mut Decoded) {
    match value.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => payload(value, limits, out),
        _ => match message(value, limits) {
            Ok(event) => out.events.push(event),
            Err(e) => out.errors.push(e),
        },
    }
}

/// A `featbit-insights` message.
#[derive(Debug, Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    distinct_id: Option<Str<'a>>,
    #[serde(borrow)]
    env_id: Option<Str<'a>>,
    #[serde(borrow)]
    event: Option<Str<'a>>,
    /// JSON text of a [`Properties`] object.
    #[serde(borrow)]
    properties: Option<Str<'a>>,
    timestamp: Option<serde_json::Number>,
}

/// A message's `properties`: those of a `FlagValue` and those of a metric.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Properties<'a> {
    #[serde(borrow)]
    env_id: Option<Str<'a>>,
    #[serde(borrow)]
    feature_flag_key: Option<Str<'a>>,
    #[serde(default, deserialize_with = "experiment")]
    send_to_experiment: bool,
    #[serde(borrow)]
    user_key_id: Option<Str<'a>>,
    #[serde(borrow)]
    user_name: Option<Str<'a>>,
    #[serde(borrow)]
    variation_id: Option<Str<'a>>,
    #[serde(borrow)]
    event_name: Option<Str<'a>>,
    numeric_value: Option<f64>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
}

/// A FeatBit user: `{keyId, name, customizedProperties: [{name, value}]}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct User<'a> {
    #[serde(borrow)]
    key_id: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    customized_properties: Option<Vec<&'a RawValue>>,
}

#[derive(Debug, Deserialize)]
struct Property<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

/// One entry of the SDK payload; its parts are decoded one by one.
#[derive(Debug, Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow)]
    variations: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    metrics: Option<Vec<&'a RawValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Variation<'a> {
    #[serde(borrow)]
    feature_flag_key: Option<Str<'a>>,
    #[serde(borrow)]
    variation: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "experiment")]
    send_to_experiment: bool,
    timestamp: Option<serde_json::Number>,
}

#[derive(Debug, Deserialize)]
struct Served<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metric<'a> {
    #[serde(borrow)]
    event_name: Option<Str<'a>>,
    numeric_value: Option<f64>,
    timestamp: Option<serde_json::Number>,
}

/// `sendToExperiment`: a boolean, or (in tags and some producers) `"true"`/`"false"`.
fn experiment<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a boolean")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    d.deserialize_any(V)
}

/// A `featbit-insights` message → an evaluation or a custom event.
fn message(bytes: &[u8], limits: &Limits) -> Result<Event, DecodeError> {
    let msg: Message<'_> = util::parse(D, "", bytes)?;
    let event = util::key(D, || "event".into(), msg.event.as_deref(), limits)?;
    let creation_date = util::time(
        D,
        || "timestamp".into(),
        msg.timestamp.as_ref(),
        TimeUnit::SecondsOrFiner,
    )?;
    let Some(text) = msg.properties else {
        return Err(DecodeError::new(D, "properties", Reason::Missing));
    };
    refuse_array(text.as_bytes(), || "properties".into())?;
    // A JSON document inside a string: the record's own check could not see into it.
    super::limits::check(text.as_bytes(), limits)
        .map_err(|reason| DecodeError::new(D, "properties", reason))?;
    let props: Properties<'_> = util::parse(D, "properties", text.as_bytes())?;
    let env = match util::opt_key(D, || "env_id".into(), msg.env_id.as_deref(), limits)? {
        Some(env) => Some(env),
        None => util::opt_key(
            D,
            || "properties.envId".into(),
            props.env_id.as_deref(),
            limits,
        )?,
    };
    let scope = Scope { project: None, env };
    if event == FLAG_VALUE {
        let flag_key = util::key(
            D,
            || "properties.featureFlagKey".into(),
            props.feature_flag_key.as_deref(),
            limits,
        )?;
        let variation = util::key(
            D,
            || "properties.variationId".into(),
            props.variation_id.as_deref(),
            limits,
        )?;
        let user_key = util::key(
            D,
            || "properties.userKeyId".into(),
            props.user_key_id.as_deref(),
            limits,
        )?;
        let name = props.user_name.as_deref().filter(|n| !n.is_empty());
        let body = util::user_body(&user_key, name, &[], false);
        let context = user(user_key, body);
        return Ok(Event::evaluation(evaluation(
            scope,
            flag_key,
            VariationRef::Name(variation),
            Json::null(),
            context,
            creation_date,
            props.send_to_experiment,
        )));
    }
    // A metric: named by `eventName`, or by `distinct_id` when that is absent.
    let key = match props.event_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => util::key(D, || "properties.eventName".into(), Some(name), limits)?,
        None => match msg.distinct_id.as_deref() {
            Some(id) => util::key(D, || "distinct_id".into(), Some(id), limits)?,
            None => return Err(DecodeError::new(D, "properties.eventName", Reason::Missing)),
        },
    };
    let Some(user) = props.user else {
        return Err(DecodeError::new(D, "properties.user", Reason::Missing));
    };
    let context = user_context(user.get().as_bytes(), "properties.user", limits)?;
    Ok(Event::Custom(Box::new(Custom {
        scope,
        key,
        context,
        data: None,
        metric_value: props.numeric_value,
        creation_date,
        sampling_ratio: None,
    })))
}

/// The SDK insight payload: an array of entries.
fn payload(bytes: &[u8], limits: &Limits, out: &mut Decoded) {
    let mut scratch = None;
    let (entries, origin) =
        match util::parse_container::<Vec<&RawValue>>(D, String::new, bytes, &mut scratch) {
            Ok(parsed) => parsed,
            Err(e) => return out.errors.push(e),
        };
    // The limits pass counts the entries (elements at the top level), not what they
    // hold (variations and metrics, one level further down): those are counted here,
    // against the same limit, before any of them is read.
    let mut budget = limits.max_events;
    for (i, raw) in entries.into_iter().enumerate() {
        match entry(i, origin.bytes(raw), limits, &mut budget, out) {
            Ok(()) => {}
            Err(e) if matches!(e.reason, Reason::TooManyEvents { .. }) => {
                // Refused whole, like a record past the limits pass.
                out.events.clear();
                out.errors.clear();
                return out.errors.push(e);
            }
            Err(e) => out.errors.push(e),
        }
    }
}

/// One entry: its user, then each variation and metric on its own.
fn entry(
    i: usize,
    bytes: &[u8],
    limits: &Limits,
    budget: &mut usize,
    out: &mut Decoded,
) -> Result<(), DecodeError> {
    let prefix = || format!("[{i}]");
    refuse_array(bytes, prefix)?;
    let mut scratch = None;
    let (entry, origin) = util::parse_container::<Entry<'_>>(D, prefix, bytes, &mut scratch)?;
    let n =
        entry.variations.as_ref().map_or(0, Vec::len) + entry.metrics.as_ref().map_or(0, Vec::len);
    *budget = budget.checked_sub(n).ok_or_else(|| {
        DecodeError::new(
            D,
            "",
            Reason::TooManyEvents {
                limit: limits.max_events,
            },
        )
    })?;
    let user_path = format!("[{i}].user");
    let Some(user) = entry.user else {
        return Err(DecodeError::new(D, user_path, Reason::Missing));
    };
    let context = user_context(origin.bytes(user), &user_path, limits)?;
    for (j, raw) in entry.variations.into_iter().flatten().enumerate() {
        let prefix = || format!("[{i}].variations[{j}]");
        match variation(origin.bytes(raw), prefix, &context, limits) {
            Ok(e) => out.events.push(Event::evaluation(e)),
            Err(e) => out.errors.push(e),
        }
    }
    for (j, raw) in entry.metrics.into_iter().flatten().enumerate() {
        let prefix = || format!("[{i}].metrics[{j}]");
        match metric(origin.bytes(raw), prefix, &context, limits) {
            Ok(e) => out.events.push(Event::Custom(Box::new(e))),
            Err(e) => out.errors.push(e),
        }
    }
    Ok(())
}

fn variation(
    bytes: &[u8],
    prefix: impl Fn() -> String,
    context: &Contexts,
    limits: &Limits,
) -> Result<Evaluation, DecodeError> {
    refuse_array(bytes, &prefix)?;
    let v: Variation<'_> = parse_at(bytes, &prefix)?;
    let at = |field: &str| util::at(&prefix(), field);
    let flag_key = util::key(
        D,
        || at("featureFlagKey"),
        v.feature_flag_key.as_deref(),
        limits,
    )?;
    // A null variation: the flag could not be evaluated; FeatBit rejects these.
    let served = match v.variation {
        None => return Err(DecodeError::new(D, at("variation"), Reason::Missing)),
        Some(raw) => {
            util::expect_object(D, || at("variation"), raw)?;
            util::parse::<Served<'_>>(D, &at("variation"), raw.get().as_bytes())?
        }
    };
    let id = util::key(D, || at("variation.id"), served.id.as_deref(), limits)?;
    let value = match served.value {
        None => Json::null(),
        // FeatBit values are strings (`"true"`, `"42"`): kept as the string they are.
        Some(raw) if raw.get().starts_with('"') => Json::from_raw(raw),
        Some(raw) => {
            return Err(DecodeError::new(
                D,
                at("variation.value"),
                Reason::WrongType {
                    expected: "a string",
                    found: util::excerpt(raw.get()),
                },
            ));
        }
    };
    let creation_date = util::time(
        D,
        || at("timestamp"),
        v.timestamp.as_ref(),
        TimeUnit::MillisOrFiner,
    )?;
    Ok(evaluation(
        Scope::default(),
        flag_key,
        VariationRef::Name(id),
        value,
        context.clone(),
        creation_date,
        v.send_to_experiment,
    ))
}

fn metric(
    bytes: &[u8],
    prefix: impl Fn() -> String,
    context: &Contexts,
    limits: &Limits,
) -> Result<Custom, DecodeError> {
    refuse_array(bytes, &prefix)?;
    let m: Metric<'_> = parse_at(bytes, &prefix)?;
    let at = |field: &str| util::at(&prefix(), field);
    let key = util::key(D, || at("eventName"), m.event_name.as_deref(), limits)?;
    let creation_date = util::time(
        D,
        || at("timestamp"),
        m.timestamp.as_ref(),
        TimeUnit::MillisOrFiner,
    )?;
    Ok(Custom {
        scope: Scope::default(),
        key,
        context: context.clone(),
        data: None,
        metric_value: m.numeric_value,
        creation_date,
        sampling_ratio: None,
    })
}

/// A FeatBit user object (found at `path`) → a `user` context whose body holds the
/// name, when not empty, and the customized properties as attributes.
fn user_context(bytes: &[u8], path: &str, limits: &Limits) -> Result<Contexts, DecodeError> {
    refuse_array(bytes, || path.to_owned())?;
    let user: User<'_> = parse_at(bytes, || path.to_owned())?;
    let key = util::key(
        D,
        || util::at(path, "keyId"),
        user.key_id.as_deref(),
        limits,
    )?;
    let mut attributes: SmallVec<[(Cow<'_, str>, &RawValue); 8]> = SmallVec::new();
    for (k, prop) in user.customized_properties.into_iter().flatten().enumerate() {
        let prop_path = || util::at(path, &format!("customizedProperties[{k}]"));
        util::expect_object(D, prop_path, prop)?;
        let prop: Property<'_> = parse_at(prop.get().as_bytes(), prop_path)?;
        util::key(
            D,
            || util::at(&prop_path(), "name"),
            prop.name.as_deref(),
            limits,
        )?;
        // A property without a value says nothing: it is left out.
        if let (Some(name), Some(value)) = (prop.name, prop.value) {
            attributes.push((name.0, value));
        }
    }
    let name = user.name.as_deref().filter(|n| !n.is_empty());
    let body = util::user_body(&key, name, &attributes, false);
    Ok(self::user(key, body))
}

/// A single `user` context with its body.
fn user(key: CompactString, body: Json) -> Contexts {
    Contexts {
        keys: smallvec::smallvec![ContextKey {
            kind: "user".into(),
            key,
        }],
        body: Some(body),
    }
}

fn evaluation(
    scope: Scope,
    flag_key: CompactString,
    variation: VariationRef,
    value: Json,
    context: Contexts,
    creation_date: EventTime,
    in_experiment: bool,
) -> Evaluation {
    Evaluation {
        scope,
        flag_key,
        variation: Some(variation),
        version: None,
        value,
        default: None,
        context,
        creation_date,
        reason: None,
        in_experiment,
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

/// Parses a part's bytes; the error path is built only on error.
fn parse_at<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    prefix: impl FnOnce() -> String,
) -> Result<T, DecodeError> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(_) => util::parse(D, &prefix(), bytes),
    }
}

/// Refuses an array where an object belongs: serde would read it into a struct, field
/// by field. Other non-objects are left to the parser, which names what it found.
fn refuse_array(bytes: &[u8], prefix: impl FnOnce() -> String) -> Result<(), DecodeError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Err(DecodeError::new(
            D,
            prefix(),
            Reason::WrongType {
                expected: "an object",
                found: util::excerpt(&String::from_utf8_lossy(bytes)),
            },
        )),
        _ => Ok(()),
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

    fn user(body: &str, key: &str) -> Contexts {
        Contexts {
            body: Some(json(body)),
            ..Contexts::single("user", key)
        }
    }

    /// An insights message with the given `event` and `properties` object.
    fn message(event: &str, props: &str) -> String {
        let props = serde_json::to_string(props).unwrap();
        format!(
            r#"{{"uuid":"4be3e7b9-5a4d-4a5f-9d0a-3c4b2a1f0e9d","distinct_id":"env-1-growthbook-test-001","env_id":"env-1","event":"{event}","properties":{props},"timestamp":1702366933320000}}"#
        )
    }

    const FLAG_PROPS: &str = r#"{"route":"/Variation/GetMultiOptionVariation","flagId":"env-1-growthbook-test-001","envId":"env-1","accountId":"","projectId":"","featureFlagKey":"growthbook-test-001","sendToExperiment":true,"userKeyId":"tester-id-6973","userName":"tester-6973","variationId":"7e03db60-1a2b-4c3d-8e9f-0a1b2c3d4e5f","tag_0":"tester-id-6973","tag_1":"7e03db60-1a2b-4c3d-8e9f-0a1b2c3d4e5f","tag_2":"true","tag_3":"tester-6973"}"#;

    fn flag_value_expected() -> Evaluation {
        Evaluation {
            scope: Scope {
                project: None,
                env: Some("env-1".into()),
            },
            flag_key: "growthbook-test-001".into(),
            variation: Some(VariationRef::Name(
                "7e03db60-1a2b-4c3d-8e9f-0a1b2c3d4e5f".into(),
            )),
            version: None,
            value: Json::null(),
            default: None,
            context: user(
                r#"{"kind":"user","key":"tester-id-6973","name":"tester-6973"}"#,
                "tester-id-6973",
            ),
            creation_date: EventTime::from_millis(1_702_366_933_320),
            reason: None,
            in_experiment: true,
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

    #[test]
    fn flag_value_message_of_the_reference() {
        assert_eq!(
            only_event(&message("FlagValue", FLAG_PROPS)),
            Event::evaluation(flag_value_expected())
        );
    }

    #[test]
    fn flag_value_variants() {
        // Milliseconds, the env from the properties, the experiment flag as a string,
        // no user name.
        let input = r#"{"event":"FlagValue","timestamp":1702366933320,
            "properties":"{\"envId\":\"env-2\",\"featureFlagKey\":\"f\",\"sendToExperiment\":\"false\",\"userKeyId\":\"u\",\"userName\":\"\",\"variationId\":\"v\"}"}"#;
        let expected = Evaluation {
            scope: Scope {
                project: None,
                env: Some("env-2".into()),
            },
            flag_key: "f".into(),
            variation: Some(VariationRef::Name("v".into())),
            context: user(r#"{"kind":"user","key":"u"}"#, "u"),
            in_experiment: false,
            ..flag_value_expected()
        };
        assert_eq!(only_event(input), Event::evaluation(expected));
    }

    #[test]
    fn custom_event_message() {
        let props = r#"{"route":"/Metric/Track","type":"CustomEvent","eventName":"checkout","numericValue":1.5,"user":{"keyId":"u1","name":"Bob"},"applicationType":"dotnet","tag_0":"u1","tag_1":"checkout","tag_2":"1.5"}"#;
        let expected = Custom {
            scope: Scope {
                project: None,
                env: Some("env-1".into()),
            },
            key: "checkout".into(),
            context: user(r#"{"kind":"user","key":"u1","name":"Bob"}"#, "u1"),
            data: None,
            metric_value: Some(1.5),
            creation_date: EventTime::from_millis(1_702_366_933_320),
            sampling_ratio: None,
        };
        assert_eq!(
            only_event(&message("CustomEvent", props)),
            Event::Custom(Box::new(expected.clone()))
        );
        // No eventName: the distinct_id names the event.
        let props = r#"{"user":{"keyId":"u1","name":"Bob"},"numericValue":1.5}"#;
        let expected = Custom {
            key: "env-1-growthbook-test-001".into(),
            ..expected
        };
        assert_eq!(
            only_event(&message("PageView", props)),
            Event::Custom(Box::new(expected))
        );
    }

    const PAYLOAD: &str = r#"[{"user":{"keyId":"u1","name":"Alice","customizedProperties":[{"name":"country","value":"FR"}]},
   "variations":[{"featureFlagKey":"flag-a","variation":{"id":"v-1","value":"true"},
                  "sendToExperiment":true,"timestamp":1702366933320}],
   "metrics":[{"route":"index/metric","type":"CustomEvent","eventName":"checkout",
               "numericValue":1,"appType":"goserverside","timestamp":1702366933320}]}]"#;

    fn payload_expected() -> (Evaluation, Custom) {
        let context = user(
            r#"{"kind":"user","key":"u1","name":"Alice","country":"FR"}"#,
            "u1",
        );
        let evaluation = Evaluation {
            scope: Scope::default(),
            flag_key: "flag-a".into(),
            variation: Some(VariationRef::Name("v-1".into())),
            value: Json::string("true"),
            context: context.clone(),
            ..flag_value_expected()
        };
        let custom = Custom {
            scope: Scope::default(),
            key: "checkout".into(),
            context,
            data: None,
            metric_value: Some(1.0),
            creation_date: EventTime::from_millis(1_702_366_933_320),
            sampling_ratio: None,
        };
        (evaluation, custom)
    }

    #[test]
    fn sdk_payload_of_the_reference() {
        let out = run(PAYLOAD);
        assert_eq!(out.errors, vec![]);
        let (evaluation, custom) = payload_expected();
        assert_eq!(
            out.events,
            vec![
                Event::evaluation(evaluation),
                Event::Custom(Box::new(custom))
            ]
        );
    }

    #[test]
    fn sdk_payload_users() {
        // Properties never overwrite kind, key or name; the first of a repeated name
        // wins; a property without a value is left out.
        let input = r#"[{"user":{"keyId":"u","customizedProperties":[{"name":"key","value":"x"},
            {"name":"plan","value":"pro"},{"name":"plan","value":"free"},{"name":"age"},
            {"name":"name","value":"n"}]},
            "variations":[{"featureFlagKey":"f","variation":{"id":"v","value":"1"},"timestamp":5}]}]"#;
        let Event::Evaluation(e) = only_event(input) else {
            panic!("not an evaluation")
        };
        assert_eq!(
            e.context,
            user(r#"{"kind":"user","key":"u","plan":"pro","name":"n"}"#, "u")
        );
        assert!(!e.in_experiment);
        assert_eq!(e.creation_date, EventTime::from_millis(5));
        // An entry with neither variations nor metrics yields nothing.
        let out = run(r#"[{"user":{"keyId":"u"}}]"#);
        assert_eq!((out.events.len(), out.errors.len()), (0, 0));
    }

    #[test]
    fn one_bad_part_costs_only_itself() {
        let (evaluation, custom) = payload_expected();
        let entry = &PAYLOAD[1..PAYLOAD.len() - 1];
        let bad_entry = r#"{"user":{"name":"no key"},"variations":[{"featureFlagKey":"f","variation":{"id":"v","value":"1"},"timestamp":5}]}"#;
        let input = format!("[{entry},{bad_entry},{entry}]");
        let out = run(&input);
        assert_eq!(
            out.events,
            vec![
                Event::evaluation(evaluation.clone()),
                Event::Custom(Box::new(custom.clone())),
                Event::evaluation(evaluation.clone()),
                Event::Custom(Box::new(custom.clone())),
            ]
        );
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].path, "[1].user.keyId");
        assert_eq!(out.errors[0].reason, Reason::Missing);

        // A null variation among good ones.
        let input = r#"[{"user":{"keyId":"u"},"variations":[
            {"featureFlagKey":"f","variation":{"id":"v","value":"1"},"timestamp":5},
            {"featureFlagKey":"g","variation":null,"timestamp":5},
            {"featureFlagKey":"h","variation":{"id":"w","value":"2"},"timestamp":5}],
            "metrics":[{"eventName":"e","timestamp":"soon"},{"eventName":"e","timestamp":6}]}]"#;
        let out = run(input);
        let keys: Vec<_> = out.events.iter().map(|e| e.time()).collect();
        assert_eq!(
            keys,
            vec![
                Some(EventTime::from_millis(5)),
                Some(EventTime::from_millis(5)),
                Some(EventTime::from_millis(6))
            ]
        );
        let errors: Vec<_> = out
            .errors
            .iter()
            .map(|e| (e.path.as_str(), e.reason.code()))
            .collect();
        assert_eq!(
            errors,
            vec![
                ("[0].variations[1].variation", "missing_field"),
                ("[0].metrics[0].timestamp", "wrong_type")
            ]
        );
    }

    #[test]
    fn bad_utf8_costs_only_its_part() {
        let good = br#"{"featureFlagKey":"f","variation":{"id":"v","value":"1"},"timestamp":5}"#;
        let bad = b"{\"featureFlagKey\":\"f\xe2\x82\",\"variation\":{\"id\":\"v\",\"value\":\"1\"},\"timestamp\":5}";
        let entry = [
            &br#"{"user":{"keyId":"u"},"variations":["#[..],
            good,
            b",",
            bad,
            b",",
            good,
            b"]}",
        ]
        .concat();
        let input = [&b"["[..], &entry, b",", &entry, b"]"].concat();
        let out = run_bytes(&input);
        assert_eq!(out.events.len(), 4);
        let errors: Vec<_> = out
            .errors
            .iter()
            .map(|e| (e.path.as_str(), e.reason.code()))
            .collect();
        assert_eq!(
            errors,
            vec![
                ("[0].variations[1].featureFlagKey", "utf8"),
                ("[1].variations[1].featureFlagKey", "utf8")
            ]
        );
        // In the user, the whole entry fails.
        let input = b"[{\"user\":{\"keyId\":\"u\",\"name\":\"\xff\"},\"variations\":[]}]";
        only_error(input, "[0].user.name", "utf8");
        // In an insights message.
        let input =
            b"{\"event\":\"FlagValue\",\"env_id\":\"\xc0\",\"properties\":\"{}\",\"timestamp\":1}";
        only_error(input, "env_id", "utf8");
    }

    #[test]
    fn bad_messages_name_the_field() {
        let flag = |props: &str| message("FlagValue", props);
        // Truncated.
        only_error(br#"{"uuid":"x","event":"FlagValue""#, "", "syntax");
        // Truncated inside `properties`, in its `route` string.
        only_error(
            flag(&FLAG_PROPS[..40]).as_bytes(),
            "properties.route",
            "syntax",
        );
        // `properties` not a string, a string that is not JSON, not an object.
        only_error(
            br#"{"event":"FlagValue","properties":{"featureFlagKey":"f"},"timestamp":1}"#,
            "properties",
            "wrong_type",
        );
        only_error(flag("not json").as_bytes(), "properties", "syntax");
        only_error(flag("[1,2]").as_bytes(), "properties", "wrong_type");
        only_error(
            br#"{"event":"FlagValue","timestamp":1}"#,
            "properties",
            "missing_field",
        );
        // Missing and mistyped properties.
        only_error(
            flag(r#"{"variationId":"v","userKeyId":"u"}"#).as_bytes(),
            "properties.featureFlagKey",
            "missing_field",
        );
        only_error(
            flag(r#"{"featureFlagKey":"f","userKeyId":"u"}"#).as_bytes(),
            "properties.variationId",
            "missing_field",
        );
        only_error(
            flag(r#"{"featureFlagKey":"f","variationId":"v","userKeyId":7}"#).as_bytes(),
            "properties.userKeyId",
            "wrong_type",
        );
        let e = only_error(
            flag(r#"{"featureFlagKey":"f","variationId":"v","userKeyId":"u","sendToExperiment":"maybe"}"#)
                .as_bytes(),
            "properties.sendToExperiment",
            "invalid_value",
        );
        assert!(e.to_string().contains("expected a boolean"), "{e}");
        only_error(
            message(
                "CustomEvent",
                r#"{"eventName":"e","numericValue":1e400,"user":{"keyId":"u"}}"#,
            )
            .as_bytes(),
            "properties.numericValue",
            "syntax",
        );
        only_error(
            message("CustomEvent", r#"{"eventName":"e"}"#).as_bytes(),
            "properties.user",
            "missing_field",
        );
        only_error(
            message("CustomEvent", r#"{"eventName":"e","user":{"keyId":""}}"#).as_bytes(),
            "properties.user.keyId",
            "invalid_value",
        );
        only_error(
            message("CustomEvent", r#"{"eventName":"e","user":["u"]}"#).as_bytes(),
            "properties.user",
            "wrong_type",
        );
        only_error(
            br#"{"event":"CustomEvent","properties":"{\"user\":{\"keyId\":\"u\"}}","timestamp":1}"#,
            "properties.eventName",
            "missing_field",
        );
        // The message itself.
        only_error(b"{}", "event", "missing_field");
        only_error(b"null", "", "wrong_type");
        only_error(b"", "", "syntax");
        only_error(
            br#"{"event":"FlagValue","properties":"{}","timestamp":"1702366933320000"}"#,
            "timestamp",
            "wrong_type",
        );
        only_error(
            br#"{"event":"FlagValue","properties":"{}","timestamp":-1702366933320000}"#,
            "timestamp",
            "invalid_value",
        );
        only_error(
            br#"{"event":"FlagValue","properties":"{}","timestamp":1e30}"#,
            "timestamp",
            "invalid_value",
        );
        only_error(
            br#"{"event":"FlagValue","properties":"{}"}"#,
            "timestamp",
            "missing_field",
        );
        only_error(
            br#"{"event":5,"properties":"{}","timestamp":1}"#,
            "event",
            "wrong_type",
        );
        // Over-long strings.
        let long = "f".repeat(2048);
        let e = only_error(
            flag(&format!(
                r#"{{"featureFlagKey":"{long}","variationId":"v","userKeyId":"u"}}"#
            ))
            .as_bytes(),
            "properties.featureFlagKey",
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
            flag(FLAG_PROPS)
                .replace("\"env-1\"", &format!("\"{long}\""))
                .as_bytes(),
            "env_id",
            "string_too_long",
        );
    }

    #[test]
    fn bad_payloads_name_the_part() {
        let v =
            |variation: &str| format!(r#"[{{"user":{{"keyId":"u"}},"variations":[{variation}]}}]"#);
        // Truncated inside the first entry.
        only_error(&PAYLOAD.as_bytes()[..60], "[0]", "syntax");
        only_error(format!("[{PAYLOAD}]").as_bytes(), "[0]", "wrong_type");
        only_error(b"[1]", "[0]", "wrong_type");
        only_error(br#"[{"variations":[]}]"#, "[0].user", "missing_field");
        only_error(
            br#"[{"user":{"keyId":"u"},"variations":{}}]"#,
            "[0].variations",
            "wrong_type",
        );
        only_error(
            br#"[{"user":{"keyId":"u","customizedProperties":[{"value":"x"}]}}]"#,
            "[0].user.customizedProperties[0].name",
            "missing_field",
        );
        only_error(
            v(r#"{"featureFlagKey":"f","timestamp":1}"#).as_bytes(),
            "[0].variations[0].variation",
            "missing_field",
        );
        only_error(
            v(r#"{"featureFlagKey":"f","variation":{"value":"1"},"timestamp":1}"#).as_bytes(),
            "[0].variations[0].variation.id",
            "missing_field",
        );
        only_error(
            v(r#"{"featureFlagKey":"f","variation":{"id":"v","value":true},"timestamp":1}"#)
                .as_bytes(),
            "[0].variations[0].variation.value",
            "wrong_type",
        );
        only_error(
            v(r#"{"featureFlagKey":"f","variation":"v","timestamp":1}"#).as_bytes(),
            "[0].variations[0].variation",
            "wrong_type",
        );
        only_error(
            v(r#"{"variation":{"id":"v","value":"1"},"timestamp":1}"#).as_bytes(),
            "[0].variations[0].featureFlagKey",
            "missing_field",
        );
        only_error(
            v(r#"{"featureFlagKey":"f","variation":{"id":"v","value":"1"},"timestamp":-5}"#)
                .as_bytes(),
            "[0].variations[0].timestamp",
            "invalid_value",
        );
        only_error(
            v(r#"[{"featureFlagKey":"f"}]"#).as_bytes(),
            "[0].variations[0]",
            "wrong_type",
        );
        only_error(
            br#"[{"user":{"keyId":"u"},"metrics":[{"eventName":"e","numericValue":"1","timestamp":1}]}]"#,
            "[0].metrics[0].numericValue",
            "wrong_type",
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        only_error(format!("[{deep}]").as_bytes(), "[0]", "wrong_type");
        only_error(
            message("FlagValue", &deep).as_bytes(),
            "properties",
            "wrong_type",
        );
        let props =
            format!(r#"{{"featureFlagKey":"f","variationId":"v","userKeyId":"u","x":{deep}}}"#);
        // A JSON document inside the `properties` string is held to the same limits
        // as the record (the record's own check cannot see into a string).
        only_error(
            message("FlagValue", &props).as_bytes(),
            "properties",
            "too_deep",
        );
        let input = format!(
            r#"[{{"user":{{"keyId":"u","customizedProperties":[{{"name":"n","value":{deep}}}]}},"variations":[{deep}]}}]"#
        );
        only_error(input.as_bytes(), "[0].variations[0]", "wrong_type");
    }

    #[test]
    fn never_panics_on_mangled_input() {
        for input in [PAYLOAD.to_owned(), message("FlagValue", FLAG_PROPS)] {
            let bytes = input.as_bytes();
            for end in 0..bytes.len() {
                let out = run_bytes(&bytes[..end]);
                assert!(!out.errors.is_empty() || !out.events.is_empty());
            }
            for i in 0..bytes.len() {
                for b in [b'"', b'{', b']', b'\\', 0xff, b'9', b'-'] {
                    let mut mangled = bytes.to_vec();
                    mangled[i] = b;
                    run_bytes(&mangled);
                }
            }
        }
    }
}
