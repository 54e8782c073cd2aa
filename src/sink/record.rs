//! One view of an output record for every sink: the LaunchDarkly event it carries
//! (unwrapped from a Data Export envelope when there is one), the time that places it,
//! and the context it is about, by one rule for all sinks.
//!
//! Sinks read JSON outputs (`output.format = "json"`, checked with the configuration).
//!
//! **Which context a record is about.** A single-kind context is itself. Of a
//! multi-kind context (`{"kind":"multi","org":{…},"user":{…}}`) or of a custom event's
//! `contextKeys` (`{"org":"o","user":"u"}`), the `user` member when there is one —
//! what analytics tools key people by — else the member whose kind sorts first.
//! Before this rule, the HTTP sink took the first member as written, the file sink
//! none, and PostgreSQL none.

use anyhow::Context as _;
use serde_json::Value;

use super::destination::SinkRecord;

/// An output record, read.
#[derive(Clone, Debug, PartialEq)]
pub struct View<'r> {
    /// The LaunchDarkly event (the envelope's `event`, or the record itself).
    pub event: Value,
    /// The event's JSON text, as written (numbers exactly as they are).
    pub text: &'r str,
}

/// A Data Export envelope, for the text of its event.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: &'a serde_json::value::RawValue,
}

/// The context a record is about: its kind and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextRef {
    pub kind: String,
    pub key: String,
}

impl<'r> View<'r> {
    /// Reads `r`'s value; an error (not JSON) names the record.
    pub fn of(r: &'r SinkRecord) -> anyhow::Result<Self> {
        let not_json = || {
            format!(
                "{}/{}/{}: not JSON (output.format must be json)",
                r.topic, r.partition, r.offset
            )
        };
        let value: Value = serde_json::from_slice(&r.value).with_context(not_json)?;
        let whole = std::str::from_utf8(&r.value).with_context(not_json)?;
        let (event, text) = match value {
            Value::Object(mut map) if !map.contains_key("kind") && map.contains_key("event") => {
                let inner: Envelope<'_> = serde_json::from_str(whole).with_context(not_json)?;
                (
                    map.remove("event").unwrap_or(Value::Null),
                    inner.event.get(),
                )
            }
            other => (other, whole),
        };
        Ok(Self { event, text })
    }

    /// A field of the event.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.event.get(field)
    }

    /// The event's `kind`.
    pub fn kind(&self) -> &str {
        self.get("kind").and_then(Value::as_str).unwrap_or_default()
    }

    /// `creationDate`, in ms.
    pub fn creation_date(&self) -> Option<i64> {
        self.get("creationDate").and_then(Value::as_i64)
    }

    /// The time that places the record: its window's start for summaries (from the
    /// header, else `startDate`), else its creation date; 0 when it has none.
    pub fn time(&self, r: &SinkRecord) -> i64 {
        r.window_start
            .or_else(|| self.get("startDate").and_then(Value::as_i64))
            .or_else(|| self.creation_date())
            .unwrap_or(0)
    }

    /// The context the record is about (see the module's rule); `None` for events
    /// without one (summaries).
    pub fn context(&self) -> Option<ContextRef> {
        context_of(&self.event)
    }
}

/// The context `event` is about: its `context`, else its `contextKeys`.
pub fn context_of(event: &Value) -> Option<ContextRef> {
    let key_of = |c: &Value| c.get("key").and_then(Value::as_str).map(str::to_owned);
    if let Some(c) = event.get("context") {
        let kind = c.get("kind").and_then(Value::as_str).unwrap_or("user");
        if kind != "multi" {
            return Some(ContextRef {
                kind: kind.to_owned(),
                key: key_of(c)?,
            });
        }
        let members = c.as_object()?.iter().filter(|(k, _)| *k != "kind");
        let (kind, member) = pick(members)?;
        return Some(ContextRef {
            kind: kind.clone(),
            key: key_of(member)?,
        });
    }
    let keys = event.get("contextKeys")?.as_object()?;
    let (kind, key) = pick(keys.iter())?;
    Some(ContextRef {
        kind: kind.clone(),
        key: key.as_str()?.to_owned(),
    })
}

/// The member a multi-kind context is keyed by: `user` if present, else the least kind.
fn pick<'a, V>(members: impl Iterator<Item = (&'a String, V)>) -> Option<(&'a String, V)> {
    members.min_by_key(|(kind, _)| (kind.as_str() != "user", kind.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(value: &Value) -> SinkRecord {
        SinkRecord {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            kind: "feature".into(),
            id: "id".into(),
            value: value.to_string().into_bytes(),
            window_start: None,
            window_end: None,
            late: false,
            source: None,
        }
    }

    fn ctx(kind: &str, key: &str) -> Option<ContextRef> {
        Some(ContextRef {
            kind: kind.into(),
            key: key.into(),
        })
    }

    #[test]
    fn one_rule_for_every_context_shape() {
        for (event, want) in [
            (
                json!({"context": {"kind": "user", "key": "u"}}),
                ctx("user", "u"),
            ),
            (
                json!({"context": {"kind": "org", "key": "o"}}),
                ctx("org", "o"),
            ),
            // A context without a kind is a user (LaunchDarkly's old user objects).
            (json!({"context": {"key": "u"}}), ctx("user", "u")),
            // Multi-kind: the user member, wherever it is written.
            (
                json!({"context": {"kind": "multi", "org": {"key": "o"}, "user": {"key": "u"}}}),
                ctx("user", "u"),
            ),
            (
                json!({"context": {"kind": "multi", "user": {"key": "u"}, "org": {"key": "o"}}}),
                ctx("user", "u"),
            ),
            // No user member: the kind that sorts first.
            (
                json!({"context": {"kind": "multi", "org": {"key": "o"}, "device": {"key": "d"}}}),
                ctx("device", "d"),
            ),
            // contextKeys (custom events, redacted feature events): the same rule.
            (
                json!({"contextKeys": {"org": "o", "user": "u"}}),
                ctx("user", "u"),
            ),
            (
                json!({"contextKeys": {"org": "o", "app": "a"}}),
                ctx("app", "a"),
            ),
            (json!({"kind": "summary", "features": {}}), None),
            (json!({"context": {"kind": "user"}}), None),
        ] {
            assert_eq!(context_of(&event), want, "{event}");
        }
    }

    #[test]
    fn the_envelope_is_unwrapped_and_time_placed() {
        let inner =
            json!({"kind": "feature", "creationDate": 5, "context": {"kind": "user", "key": "u"}});
        let envelope = json!({"event": inner.clone(), "envId": "e"});
        for v in [&inner, &envelope] {
            let r = record(v);
            let view = View::of(&r).unwrap();
            assert_eq!(view.event, inner);
            assert_eq!(serde_json::from_str::<Value>(view.text).unwrap(), inner);
            assert_eq!(view.kind(), "feature");
            assert_eq!(view.time(&record(v)), 5);
            assert_eq!(view.context(), ctx("user", "u"));
        }
        let summary = json!({"kind": "summary", "startDate": 10, "endDate": 20, "features": {}});
        let mut r = record(&summary);
        assert_eq!(View::of(&r).unwrap().time(&r), 10);
        r.window_start = Some(3);
        assert_eq!(View::of(&r).unwrap().time(&r), 3);
        // An object with a kind is an event even if it has an `event` field.
        let custom = json!({"kind": "custom", "key": "k", "event": 1});
        assert_eq!(View::of(&record(&custom)).unwrap().event, custom);
        // The text keeps numbers as written (PostgreSQL stores them exactly).
        let exact = SinkRecord {
            value: br#"{"event":{"kind":"feature","value":1.00000000000000000001}}"#.to_vec(),
            ..record(&inner)
        };
        assert_eq!(
            View::of(&exact).unwrap().text,
            r#"{"kind":"feature","value":1.00000000000000000001}"#
        );
        let bad = SinkRecord {
            value: b"{not json".to_vec(),
            ..record(&inner)
        };
        let e = View::of(&bad).unwrap_err().to_string();
        assert!(e.contains("t/0/7: not JSON"), "{e}");
    }
}
