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
//!
//! Detection needs no parse of its own: the structural limits scan, which reads every
//! JSON record once anyway, keeps the top level's member names and their values' first
//! bytes ([`Shape`]), and the rules read those. Only a record the scan could not
//! follow (unbalanced, an escaped member name, trailing bytes) is parsed to detect it,
//! so its error says what is wrong.

use serde_json::value::RawValue;

use super::Dialect;
use super::limits::Shape;
use super::util::RawObject;
use super::util::first_byte;

/// The top-level members the rules ask about. Named by a variant, not a string: the
/// LaunchDarkly fast path answers from the bits it set while reading, with no name to
/// compare (detection cost 346 instructions per event when it compared names, of about
/// 6 100 for decode + window; `DIALECT=auto scripts/bench-instructions.sh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Member {
    Kind,
    Type,
    Event,
    Events,
    Properties,
    Uuid,
    DistinctId,
    EnvId,
    Source,
    Metadata,
    Variation,
    Version,
    Context,
    ContextKeys,
    User,
    Variations,
    Metrics,
}

impl Member {
    /// The member's JSON name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Kind => "kind",
            Self::Type => "type",
            Self::Event => "event",
            Self::Events => "events",
            Self::Properties => "properties",
            Self::Uuid => "uuid",
            Self::DistinctId => "distinct_id",
            Self::EnvId => "env_id",
            Self::Source => "source",
            Self::Metadata => "metadata",
            Self::Variation => "variation",
            Self::Version => "version",
            Self::Context => "context",
            Self::ContextKeys => "contextKeys",
            Self::User => "user",
            Self::Variations => "variations",
            Self::Metrics => "metrics",
        }
    }
}

/// The members detection asks about: each one's value's first byte, and `kind`'s
/// string (unescaped only).
pub(crate) trait Members {
    fn first(&self, member: Member) -> Option<u8>;
    fn kind(&self) -> Option<&[u8]>;
}

impl Members for RawObject<'_> {
    fn first(&self, member: Member) -> Option<u8> {
        self.get(member.name())
            .map(|v| v.get().as_bytes().first().copied().unwrap_or(0))
    }

    fn kind(&self) -> Option<&[u8]> {
        self.get("kind")
            .and_then(|k| serde_json::from_str::<&str>(k.get()).ok())
            .map(str::as_bytes)
    }
}

impl Members for Shape<'_> {
    fn first(&self, member: Member) -> Option<u8> {
        self.get(member.name()).map(|(first, _)| first)
    }

    fn kind(&self) -> Option<&[u8]> {
        // A string with an escape is not read as a kind (as serde's borrowed `&str`
        // could not hold it).
        self.get("kind")
            .filter(|(first, text)| *first == b'"' && !text.contains(&b'\\'))
            .map(|(_, text)| text)
    }
}

/// Detects the dialect of a JSON record from the limits scan's [`Shape`]; a shape the
/// scan could not complete falls back to [`detect`].
pub(crate) fn detect_shape(value: &[u8], shape: &Shape<'_>) -> Result<Dialect, String> {
    if !shape.complete {
        return detect(value);
    }
    match (shape.root, shape.first_element) {
        (b'{', _) => detect_object(shape),
        (b'[', 0) => Ok(Dialect::Launchdarkly),
        (b'[', b'{') => detect_element(shape),
        (b'[', _) => Err("the array's first element is not an object".to_owned()),
        _ => detect(value),
    }
}

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
            detect_element(&obj)
        }
        Some(_) => Err("neither a JSON object, a JSON array nor Avro".into()),
        None => Err("the record is blank".into()),
    }
}

/// A root array's first element: FeatBit's SDK payload, or the object rules.
pub(crate) fn detect_element(obj: &impl Members) -> Result<Dialect, String> {
    if obj.first(Member::Kind).is_none()
        && (obj.first(Member::Variations).is_some()
            || obj.first(Member::Metrics).is_some()
            || obj.first(Member::User).is_some())
    {
        return Ok(Dialect::Featbit);
    }
    detect_object(obj)
}

pub(crate) fn detect_object(obj: &impl Members) -> Result<Dialect, String> {
    let has = |m: Member| obj.first(m).is_some();
    let is_string = |m: Member| obj.first(m) == Some(b'"');
    let is_number = |m: Member| {
        obj.first(m)
            .is_some_and(|b| b == b'-' || b.is_ascii_digit())
    };
    let kind = obj.kind();
    if kind.is_none() {
        if has(Member::Type) {
            return Ok(Dialect::Native);
        }
        if has(Member::Event)
            && has(Member::Properties)
            && (has(Member::Uuid) || has(Member::DistinctId) || has(Member::EnvId))
        {
            return Ok(Dialect::Featbit);
        }
        if has(Member::Events) {
            return Ok(Dialect::Goff);
        }
        if has(Member::Event) {
            return Ok(Dialect::Launchdarkly);
        }
        return Err("an object with no `kind`, `type`, `event` or `events`".into());
    }
    if kind == Some(b"tracking")
        || has(Member::Source)
        || has(Member::Metadata)
        || (is_string(Member::Variation))
        || (is_string(Member::Version) && !has(Member::Context))
    {
        return Ok(Dialect::Goff);
    }
    if has(Member::Context)
        || has(Member::ContextKeys)
        || has(Member::User)
        || is_number(Member::Variation)
        || is_number(Member::Version)
        || kind != Some(b"feature")
    {
        return Ok(Dialect::Launchdarkly);
    }
    Err("a `feature` event that could be LaunchDarkly or go-feature-flag (no context, no variation or version, no source)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Detects by the limits scan's shape, and checks the parse agrees when the text
    /// is valid JSON.
    fn d(text: &str) -> Result<Dialect, String> {
        let shape = crate::decode::limits::check_shape(text.as_bytes(), &Default::default())
            .unwrap_or_default();
        let by_shape = detect_shape(text.as_bytes(), &shape);
        if serde_json::from_str::<serde_json::Value>(text).is_ok() {
            assert_eq!(
                by_shape.is_ok(),
                detect(text.as_bytes()).is_ok(),
                "{text}: {by_shape:?}"
            );
            if let Ok(found) = &by_shape {
                assert_eq!(Ok(*found), detect(text.as_bytes()), "{text}");
            }
        }
        by_shape
    }

    proptest::proptest! {
        /// Objects (and arrays of them) built from the keys and values the rules read:
        /// the shape and the parse detect the same dialect.
        #[test]
        fn the_shape_detects_what_the_parse_detects(
            members in proptest::collection::vec((0usize..19, 0usize..9), 0..8),
            in_array in proptest::bool::ANY,
            spaces in proptest::bool::ANY,
        ) {
            const KEYS: [&str; 19] = [
                "kind", "type", "event", "properties", "uuid", "distinct_id", "env_id",
                "events", "source", "metadata", "context", "contextKeys", "user",
                "variation", "version", "variations", "metrics", "k\\u0069nd", "other",
            ];
            const VALUES: [&str; 9] = [
                "\"feature\"", "\"tracking\"", "\"index\"", "1", "-2", "\"v1\"",
                "{\"kind\":\"user\",\"key\":\"u\"}", "[1,{\"kind\":\"x\"}]", "\"fe\\u0061ture\"",
            ];
            let sep = if spaces { " , " } else { "," };
            let body = members
                .iter()
                .map(|(k, v)| format!("\"{}\"{}:{}", KEYS[*k], if spaces { " " } else { "" }, VALUES[*v]))
                .collect::<Vec<_>>()
                .join(sep);
            let text = if in_array { format!("[{{{body}}}, {{\"kind\":\"tracking\"}}]") } else { format!("{{{body}}}") };
            let _ = d(&text);
        }
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
