//! `auto`: picks the dialect of each record from its shape. The rules, in order:
//!
//! | the record | dialect |
//! |---|---|
//! | starts with byte `0x00` (Confluent wire format) or `0xC3 0x01` (Avro single-object) | native-avro |
//! | an object with `type` and no `kind` | native |
//! | an object with `event` and `properties` (and `uuid`, `distinct_id` or `env_id`) | featbit (insights topic) |
//! | an object with `events` and no `kind` (go-feature-flag collector envelope) | goff |
//! | an object with `event` and no `kind` (Data Export envelope) | launchdarkly |
//! | `kind: "tracking"`, or a `source` or `metadata` field, or a string `variation`, or a string `version` without `context` | goff |
//! | any other object with `kind` and one of `context`, `contextKeys`, `user`, an integer `variation` or `version`, or a kind other than `feature` | launchdarkly |
//! | an array whose first element has `variations`, `metrics` or `user` and no `kind` | featbit (SDK payload) |
//! | an array: the rules above applied to its first element; an empty array | launchdarkly |
//!
//! Anything else is undetectable and becomes a `DecodeError` (`undetected`): for
//! example a `feature` event with only `userKey`, no variation, no version and no
//! go-feature-flag field could be either dialect, whose timestamps differ in unit.
//! Detection reads the record's top level once more, so `auto` costs more than a fixed
//! dialect.

use serde_json::value::RawValue;

use super::Dialect;
use super::launchdarkly::first_byte;
use super::util::RawObject;

pub(crate) fn detect(value: &[u8]) -> Result<Dialect, String> {
    match value {
        [0x00, ..] | [0xC3, 0x01, ..] => return Ok(Dialect::NativeAvro),
        _ => {}
    }
    match first_byte(value) {
        Some(b'{') => {
            let obj: RawObject<'_> =
                serde_json::from_slice(value).map_err(|e| format!("not a JSON object: {e}"))?;
            detect_object(&obj)
        }
        Some(b'[') => {
            let items: Vec<&RawValue> =
                serde_json::from_slice(value).map_err(|e| format!("not a JSON array: {e}"))?;
            let Some(first) = items.first() else {
                return Ok(Dialect::Launchdarkly);
            };
            let obj: RawObject<'_> = serde_json::from_str(first.get())
                .map_err(|_| "the array's first element is not an object".to_owned())?;
            if obj.get("kind").is_none()
                && (obj.get("variations").is_some()
                    || obj.get("metrics").is_some()
                    || obj.get("user").is_some())
            {
                return Ok(Dialect::Featbit);
            }
            detect_object(&obj)
        }
        Some(_) => Err("neither a JSON object, a JSON array nor Avro".into()),
        None => Err("the record is blank".into()),
    }
}

fn detect_object(obj: &RawObject<'_>) -> Result<Dialect, String> {
    let has = |k: &str| obj.get(k).is_some();
    let is_string = |k: &str| obj.get(k).is_some_and(|v| v.get().starts_with('"'));
    let is_number = |k: &str| {
        obj.get(k).is_some_and(|v| {
            v.get()
                .starts_with(|c: char| c == '-' || c.is_ascii_digit())
        })
    };
    let kind = obj
        .get("kind")
        .and_then(|k| serde_json::from_str::<&str>(k.get()).ok());
    if kind.is_none() {
        if has("type") {
            return Ok(Dialect::Native);
        }
        if has("event") && has("properties") && (has("uuid") || has("distinct_id") || has("env_id"))
        {
            return Ok(Dialect::Featbit);
        }
        if has("events") {
            return Ok(Dialect::Goff);
        }
        if has("event") {
            return Ok(Dialect::Launchdarkly);
        }
        return Err("an object with no `kind`, `type`, `event` or `events`".into());
    }
    if kind == Some("tracking")
        || has("source")
        || has("metadata")
        || (is_string("variation"))
        || (is_string("version") && !has("context"))
    {
        return Ok(Dialect::Goff);
    }
    if has("context")
        || has("contextKeys")
        || has("user")
        || is_number("variation")
        || is_number("version")
        || kind != Some("feature")
    {
        return Ok(Dialect::Launchdarkly);
    }
    Err("a `feature` event that could be LaunchDarkly or go-feature-flag (no context, no variation or version, no source)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Result<Dialect, String> {
        detect(text.as_bytes())
    }

    #[test]
    fn every_rule() {
        use Dialect::*;
        assert_eq!(d(r#"{"type":"evaluation"}"#), Ok(Native));
        assert_eq!(
            d(
                r#"{"uuid":"x","distinct_id":"e-f","env_id":"e","event":"FlagValue","properties":"{}","timestamp":1}"#
            ),
            Ok(Featbit)
        );
        assert_eq!(d(r#"{"meta":{},"events":[]}"#), Ok(Goff));
        assert_eq!(
            d(r#"{"project":"p","environment":"e","event":{},"version":1}"#),
            Ok(Launchdarkly)
        );
        assert_eq!(d(r#"{"kind":"tracking","userKey":"u"}"#), Ok(Goff));
        assert_eq!(
            d(
                r#"{"kind":"feature","contextKind":"user","userKey":"u","creationDate":1,"key":"k","variation":"True","value":true,"default":false,"version":"","source":"SERVER"}"#
            ),
            Ok(Goff)
        );
        assert_eq!(
            d(r#"{"kind":"feature","userKey":"u","variation":"A"}"#),
            Ok(Goff)
        );
        assert_eq!(
            d(r#"{"kind":"feature","context":{"kind":"user","key":"u"}}"#),
            Ok(Launchdarkly)
        );
        assert_eq!(
            d(r#"{"kind":"feature","context":{},"version":"v1"}"#),
            Ok(Launchdarkly)
        );
        assert_eq!(
            d(r#"{"kind":"feature","userKey":"u","variation":1}"#),
            Ok(Launchdarkly)
        );
        assert_eq!(d(r#"{"kind":"summary","startDate":1}"#), Ok(Launchdarkly));
        assert_eq!(d(r#"{"kind":"alias"}"#), Ok(Launchdarkly));
        assert_eq!(
            d(r#"[{"user":{"keyId":"u"},"variations":[]}]"#),
            Ok(Featbit)
        );
        assert_eq!(d(r#"[{"kind":"index","context":{}}]"#), Ok(Launchdarkly));
        assert_eq!(d(r#"[{"kind":"tracking"}]"#), Ok(Goff));
        assert_eq!(d("[]"), Ok(Launchdarkly));
        assert_eq!(detect(&[0, 0, 0, 0, 1, 2]), Ok(NativeAvro));
        assert_eq!(detect(&[0xC3, 0x01, 9]), Ok(NativeAvro));
    }

    #[test]
    fn undetectable_records_are_errors() {
        assert!(d(r#"{"kind":"feature","userKey":"u","key":"k","creationDate":1}"#).is_err());
        assert!(d(r#"{"hello":"world"}"#).is_err());
        assert!(d("42").is_err());
        assert!(d("   ").is_err());
        assert!(d("{").is_err());
        assert!(d("[1]").is_err());
    }
}
