//! LaunchDarkly's JSON shapes, in go-sdk-events key order (docs/reference/events.md §1):
//!
//! | kind | keys, in order |
//! |---|---|
//! | summary | kind, startDate, endDate, features{flag: default, counters[variation?, version \| unknown, value, count], contextKinds} |
//! | feature / debug | kind, creationDate, key, version?, context, variation? \| variationName?, value, default, prereqOf?, reason?, samplingRatio? |
//! | index | kind, creationDate, context |
//! | identify | kind, creationDate, context, samplingRatio? |
//! | custom | kind, creationDate, key, data?, contextKeys, metricValue?, samplingRatio? |
//!
//! One flag per summary record; counters sorted by (variation, version) with "no
//! variation" first, then indexes, then names, and unknown versions first; context kinds
//! sorted. Integers are written without `.0`. A name-only variation (go-feature-flag,
//! FeatBit) is written as `variationName`.
//!
//! Contexts: attributes named in `_meta.privateAttributes` are redacted in every output,
//! and in feature events (not debug or index) every attribute of an anonymous context is
//! too, listed in `_meta.redactedAttributes`, as LaunchDarkly's context formatter does.
//! References are attribute names or `/`-paths into nested objects.
//!
//! Late events (dead-letter policy) are written as flagtally's native JSON, so they can
//! be re-read with `dialect = "native"`.

use serde_json::{Map, Value};

use crate::event::{Contexts, EventTime, FlagVersion, Json, VariationRef};
use crate::window::{ClosedSummary, Output};

/// Writes the output's LaunchDarkly event.
pub fn write(out: &Output, buf: &mut Vec<u8>) {
    match out {
        Output::Summary(s) => summary(s, buf),
        Output::Feature { event, debug, .. } => {
            let e = event.as_ref();
            begin(
                buf,
                if *debug { "debug" } else { "feature" },
                e.creation_date,
            );
            name(buf, "key");
            string(buf, &e.flag_key);
            if let Some(v) = &e.version {
                name(buf, "version");
                version(buf, v);
            }
            name(buf, "context");
            context(buf, &e.context, !*debug);
            match &e.variation {
                Some(VariationRef::Index(i)) => {
                    name(buf, "variation");
                    int(buf, i64::from(*i));
                }
                Some(VariationRef::Name(n)) => {
                    name(buf, "variationName");
                    string(buf, n);
                }
                None => {}
            }
            name(buf, "value");
            raw(buf, &e.value);
            name(buf, "default");
            match &e.default {
                Some(d) => raw(buf, d),
                None => buf.extend_from_slice(b"null"),
            }
            if let Some(p) = &e.prereq_of {
                name(buf, "prereqOf");
                string(buf, p);
            }
            if let Some(r) = &e.reason {
                name(buf, "reason");
                raw(buf, r);
            }
            sampling_ratio(buf, e.sampling_ratio);
            buf.push(b'}');
        }
        Output::Index {
            context: c,
            creation_date,
            ..
        } => {
            begin(buf, "index", *creation_date);
            name(buf, "context");
            context(buf, c, false);
            buf.push(b'}');
        }
        Output::Identify { event, .. } => {
            begin(buf, "identify", event.creation_date);
            name(buf, "context");
            context(buf, &event.context, false);
            sampling_ratio(buf, event.sampling_ratio);
            buf.push(b'}');
        }
        Output::Custom { event, .. } => {
            begin(buf, "custom", event.creation_date);
            name(buf, "key");
            string(buf, &event.key);
            if let Some(d) = event.data.as_ref().filter(|d| !d.is_null()) {
                name(buf, "data");
                raw(buf, d);
            }
            name(buf, "contextKeys");
            raw(buf, &event.context.keys_object());
            if let Some(m) = event.metric_value {
                name(buf, "metricValue");
                number(buf, m);
            }
            sampling_ratio(buf, event.sampling_ratio);
            buf.push(b'}');
        }
        Output::PassThrough { event, .. } => raw(buf, &event.body),
        Output::Late { event, .. } => {
            // Serialising our own types to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, event.as_ref());
        }
    }
}

/// Writes the output wrapped in LaunchDarkly's Data Export envelope. Ids come from the
/// event's scope when it has them, else from `project`/`environment`.
pub fn write_data_export(
    out: &Output,
    project: Option<&str>,
    environment: Option<&str>,
    buf: &mut Vec<u8>,
) {
    let scope = match out {
        Output::Summary(s) => Some(&s.scope),
        Output::Feature { event, .. } => Some(&event.scope),
        Output::Index { scope, .. } => Some(scope),
        Output::Identify { event, .. } => Some(&event.scope),
        Output::Custom { event, .. } => Some(&event.scope),
        Output::PassThrough { event, .. } => Some(&event.scope),
        Output::Late { event, .. } => Some(event.scope()),
    };
    let p = scope.and_then(|s| s.project.as_deref()).or(project);
    let e = scope.and_then(|s| s.env.as_deref()).or(environment);
    buf.extend_from_slice(b"{\"project\":");
    opt_string(buf, p);
    buf.extend_from_slice(b",\"environment\":");
    opt_string(buf, e);
    buf.extend_from_slice(b",\"event\":");
    write(out, buf);
    buf.extend_from_slice(b",\"version\":1}");
}

fn summary(s: &ClosedSummary, buf: &mut Vec<u8>) {
    begin_kind(buf, "summary");
    name(buf, "startDate");
    int(buf, s.start_date.as_millis());
    name(buf, "endDate");
    int(buf, s.end_date.as_millis());
    name(buf, "features");
    buf.push(b'{');
    string(buf, &s.flag_key);
    buf.extend_from_slice(b":{\"default\":");
    raw(buf, &s.default);
    name(buf, "counters");
    buf.push(b'[');
    for (i, c) in s.counters.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'{');
        let mut first = true;
        let mut key = |buf: &mut Vec<u8>, k: &str| {
            if !first {
                buf.push(b',');
            }
            first = false;
            string(buf, k);
            buf.push(b':');
        };
        match &c.variation {
            Some(VariationRef::Index(v)) => {
                key(buf, "variation");
                int(buf, i64::from(*v));
            }
            Some(VariationRef::Name(n)) => {
                key(buf, "variationName");
                string(buf, n);
            }
            None => {}
        }
        match &c.version {
            Some(v) => {
                key(buf, "version");
                version(buf, v);
            }
            None => {
                key(buf, "unknown");
                buf.extend_from_slice(b"true");
            }
        }
        key(buf, "value");
        raw(buf, &c.value);
        key(buf, "count");
        int(buf, c.count as i64);
        buf.push(b'}');
    }
    buf.push(b']');
    name(buf, "contextKinds");
    buf.push(b'[');
    for (i, k) in s.context_kinds.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        string(buf, k);
    }
    buf.extend_from_slice(b"]}}}");
}

/// `samplingRatio`, written only when set and not 1.
fn sampling_ratio(buf: &mut Vec<u8>, ratio: Option<u64>) {
    if let Some(n) = ratio.filter(|n| *n != 1) {
        name(buf, "samplingRatio");
        int(buf, i64::try_from(n).unwrap_or(i64::MAX));
    }
}

fn begin_kind(buf: &mut Vec<u8>, kind: &str) {
    buf.extend_from_slice(b"{\"kind\":");
    string(buf, kind);
}

fn begin(buf: &mut Vec<u8>, kind: &str, t: EventTime) {
    begin_kind(buf, kind);
    name(buf, "creationDate");
    int(buf, t.as_millis());
}

/// `,"name":` — every key but the first of an object.
fn name(buf: &mut Vec<u8>, n: &str) {
    buf.push(b',');
    string(buf, n);
    buf.push(b':');
}

fn string(buf: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

fn opt_string(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

fn int(buf: &mut Vec<u8>, n: i64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A JSON number as Go writes a float64: integral values without a fraction.
fn number(buf: &mut Vec<u8>, f: f64) {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        int(buf, f as i64);
    } else if f.is_finite() {
        let _ = serde_json::to_writer(&mut *buf, &f);
    } else {
        buf.extend_from_slice(b"null");
    }
}

fn raw(buf: &mut Vec<u8>, j: &Json) {
    buf.extend_from_slice(j.as_str().as_bytes());
}

fn version(buf: &mut Vec<u8>, v: &FlagVersion) {
    match v {
        FlagVersion::Int(n) => int(buf, *n),
        FlagVersion::Str(s) => string(buf, s),
    }
}

/// Writes a context object, redacting as described in the module docs. Every encoder
/// writes contexts through here, so no format leaks what another redacts.
pub(crate) fn context(buf: &mut Vec<u8>, c: &Contexts, redact_anonymous: bool) {
    let obj = c.to_object();
    let text = obj.as_str();
    let needs_work = text.contains("\"privateAttribute")
        || (redact_anonymous && text.contains("\"anonymous\":true"));
    if !needs_work {
        buf.extend_from_slice(text.as_bytes());
        return;
    }
    let mut value = obj.to_value();
    if let Some(map) = value.as_object_mut() {
        if map.get("kind").and_then(Value::as_str) == Some("multi") {
            for (k, sub) in map.iter_mut() {
                if k != "kind"
                    && let Some(sub) = sub.as_object_mut()
                {
                    redact(sub, redact_anonymous);
                }
            }
        } else {
            redact(map, redact_anonymous);
        }
    }
    let _ = serde_json::to_writer(&mut *buf, &value);
}

/// Attributes that are never redacted.
const PROTECTED: [&str; 5] = ["kind", "key", "anonymous", "_meta", "privateAttributeNames"];

/// Applies a context's private-attribute references (and, when asked, anonymous
/// redaction), recording what was removed in `_meta.redactedAttributes`. Redactions
/// already recorded and other `_meta` fields are kept: an SDK-formatted context passes
/// through unchanged.
fn redact(ctx: &mut Map<String, Value>, redact_anonymous: bool) {
    let anonymous = ctx.get("anonymous") == Some(&Value::Bool(true));
    let mut meta = match ctx.remove("_meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut refs: Vec<String> = Vec::new();
    for list in [
        meta.remove("privateAttributes"),
        ctx.remove("privateAttributeNames"),
    ]
    .into_iter()
    .flatten()
    {
        if let Value::Array(items) = list {
            refs.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
        }
    }
    let mut redacted: Vec<Value> = match meta.remove("redactedAttributes") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    if redact_anonymous && anonymous {
        let names: Vec<String> = ctx
            .keys()
            .filter(|k| !PROTECTED.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in names {
            ctx.remove(&k);
            redacted.push(Value::String(k));
        }
    }
    for r in refs {
        if remove_reference(ctx, &r) {
            redacted.push(Value::String(r));
        }
    }
    if !redacted.is_empty() {
        meta.insert("redactedAttributes".into(), Value::Array(redacted));
    }
    if !meta.is_empty() {
        ctx.insert("_meta".into(), Value::Object(meta));
    }
}

/// Removes the attribute an attribute reference names: a plain name is a top-level
/// attribute; `/a/b` is a path, with `~1` for `/` and `~0` for `~` inside a segment.
fn remove_reference(ctx: &mut Map<String, Value>, reference: &str) -> bool {
    let path: Vec<String> = match reference.strip_prefix('/') {
        None => vec![reference.to_owned()],
        Some(rest) => rest
            .split('/')
            .map(|seg| seg.replace("~1", "/").replace("~0", "~"))
            .collect(),
    };
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    if parents.is_empty() && PROTECTED.contains(&last.as_str()) {
        return false;
    }
    let mut node = ctx;
    for seg in parents {
        match node.get_mut(seg) {
            Some(Value::Object(child)) => node = child,
            _ => return false,
        }
    }
    node.remove(last).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ContextEvent, Custom, Evaluation, Scope};
    use crate::window::{CloseReason, Counter, PartitionId, SourcePos, Window};

    fn pos() -> SourcePos {
        SourcePos {
            partition: PartitionId::new("t", 0),
            offset: 0,
            index: 0,
        }
    }

    fn text(out: &Output) -> String {
        let mut buf = Vec::new();
        write(out, &mut buf);
        String::from_utf8(buf).unwrap()
    }

    fn summary_of(counters: Vec<Counter>) -> Output {
        Output::Summary(ClosedSummary {
            scope: Scope::default(),
            flag_key: "flag1".into(),
            window: Window {
                start: EventTime::from_millis(0),
                end: EventTime::from_millis(60_000),
            },
            partition: PartitionId::new("t", 0),
            start_date: EventTime::from_millis(1000),
            end_date: EventTime::from_millis(1002),
            default: Json::string("d1"),
            counters,
            context_kinds: vec!["org".into(), "user".into()],
            kinds_dropped: 0,
            late: false,
            reason: CloseReason::Watermark,
            part: 0,
            first_offset: 0,
            first_index: 0,
            epoch: 0,
        })
    }

    #[test]
    fn summary_bytes_match_go() {
        let out = summary_of(vec![
            Counter {
                variation: None,
                version: None,
                value: Json::string("d3"),
                count: 1,
            },
            Counter {
                variation: Some(VariationRef::Index(1)),
                version: Some(FlagVersion::Int(11)),
                value: Json::string("a"),
                count: 2,
            },
            Counter {
                variation: Some(VariationRef::Name("blue".into())),
                version: Some(FlagVersion::Str("v2".into())),
                value: Json::string("b"),
                count: 3,
            },
        ]);
        assert_eq!(
            text(&out),
            r#"{"kind":"summary","startDate":1000,"endDate":1002,"features":{"flag1":{"default":"d1","counters":[{"unknown":true,"value":"d3","count":1},{"variation":1,"version":11,"value":"a","count":2},{"variationName":"blue","version":"v2","value":"b","count":3}],"contextKinds":["org","user"]}}}"#
        );
        let mut buf = Vec::new();
        write_data_export(&out, Some("p"), None, &mut buf);
        assert!(
            String::from_utf8(buf)
                .unwrap()
                .starts_with(r#"{"project":"p","environment":null,"event":{"kind":"summary""#)
        );
    }

    fn feature(context: Contexts, debug: bool) -> Output {
        Output::Feature {
            event: Box::new(Evaluation {
                scope: Scope::default(),
                flag_key: "f".into(),
                variation: Some(VariationRef::Index(0)),
                version: Some(FlagVersion::Int(3)),
                value: Json::parse("true").unwrap(),
                default: None,
                context,
                creation_date: EventTime::from_millis(7),
                reason: Some(Json::parse(r#"{"kind":"OFF"}"#).unwrap()),
                in_experiment: false,
                prereq_of: Some("top".into()),
                track_events: None,
                debug_events_until_date: None,
                sampling_ratio: Some(4),
                exclude_from_summaries: false,
                debug,
                counted_by_summary: false,
                meta: None,
            }),
            debug,
            pos: pos(),
        }
    }

    #[test]
    fn feature_event_key_order_and_redaction() {
        let anon = Contexts {
            keys: smallvec::smallvec![crate::event::ContextKey {
                kind: "user".into(),
                key: "u".into()
            }],
            body: Some(
                Json::parse(r#"{"kind":"user","key":"u","anonymous":true,"name":"N","email":"e"}"#)
                    .unwrap(),
            ),
        };
        assert_eq!(
            text(&feature(anon.clone(), false)),
            r#"{"kind":"feature","creationDate":7,"key":"f","version":3,"context":{"kind":"user","key":"u","anonymous":true,"_meta":{"redactedAttributes":["name","email"]}},"variation":0,"value":true,"default":null,"prereqOf":"top","reason":{"kind":"OFF"},"samplingRatio":4}"#
        );
        assert!(
            text(&feature(anon, true)).contains(r#""name":"N","email":"e""#),
            "debug keeps them"
        );
        let private = Contexts {
            keys: smallvec::smallvec![crate::event::ContextKey {
                kind: "org".into(),
                key: "o".into()
            }],
            body: Some(
                Json::parse(r#"{"kind":"org","key":"o","tier":"gold","seats":5,"_meta":{"privateAttributes":["/tier"]}}"#)
                    .unwrap(),
            ),
        };
        let out = Output::Index {
            scope: Scope::default(),
            context: private,
            creation_date: EventTime::from_millis(9),
            pos: pos(),
        };
        assert_eq!(
            text(&out),
            r#"{"kind":"index","creationDate":9,"context":{"kind":"org","key":"o","seats":5,"_meta":{"redactedAttributes":["/tier"]}}}"#
        );
    }

    #[test]
    fn identify_and_custom_shapes() {
        let out = Output::Identify {
            event: ContextEvent {
                scope: Scope::default(),
                context: Contexts::single("user", "u"),
                creation_date: EventTime::from_millis(1000),
                sampling_ratio: None,
            },
            pos: pos(),
        };
        assert_eq!(
            text(&out),
            r#"{"kind":"identify","creationDate":1000,"context":{"kind":"user","key":"u"}}"#
        );
        let custom = |data: Option<Json>, metric: Option<f64>| Output::Custom {
            event: Box::new(Custom {
                scope: Scope::default(),
                key: "eventkey".into(),
                context: Contexts::single("user", "user-key"),
                data,
                metric_value: metric,
                creation_date: EventTime::from_millis(100_000),
                sampling_ratio: None,
            }),
            pos: pos(),
        };
        assert_eq!(
            text(&custom(Some(Json::string("d")), Some(2.5))),
            r#"{"kind":"custom","creationDate":100000,"key":"eventkey","data":"d","contextKeys":{"user":"user-key"},"metricValue":2.5}"#
        );
        assert_eq!(
            text(&custom(Some(Json::null()), Some(0.0))),
            r#"{"kind":"custom","creationDate":100000,"key":"eventkey","contextKeys":{"user":"user-key"},"metricValue":0}"#
        );
        assert_eq!(
            text(&custom(None, None)),
            r#"{"kind":"custom","creationDate":100000,"key":"eventkey","contextKeys":{"user":"user-key"}}"#
        );
    }

    #[test]
    fn strings_are_escaped_and_unicode_kept() {
        let mut buf = Vec::new();
        string(&mut buf, "a\"b\\c\né");
        assert_eq!(String::from_utf8(buf).unwrap(), r#""a\"b\\c\né""#);
    }
}
