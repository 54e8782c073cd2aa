//! The fast path of the LaunchDarkly decoder: reads one event object into the same
//! [`Raw`] fields serde would, without serde's per-field machinery (which costs about
//! 0.5 µs for a 260-byte event, the whole per-event budget of the hot path).
//!
//! - top-level keys, `"…"` strings without escapes, digits-only integers and the
//!   literals `true`/`false`/`null` are read directly;
//! - every value kept as raw JSON (contexts, values, reasons) and every ignored field is
//!   checked by a small validating scanner that follows the JSON grammar exactly as
//!   serde_json's does for raw values (escapes, `\u` hex digits, number grammar,
//!   literals, nesting of any depth, iteratively);
//! - numbers other than plain integers are handed to serde_json;
//! - anything unusual — escapes in keys or read strings, a repeated field, a value of
//!   an unexpected type, trailing bytes, invalid UTF-8, invalid JSON — returns `None`,
//!   and the caller falls back to serde, which also names the error precisely.
//!
//! `decode_both_ways` and the differential property test and fuzz target check that
//! both paths agree on every input.

use std::borrow::Cow;

use serde_json::Number;
use smallvec::SmallVec;

use super::Raw;
use crate::decode::util::{RawText, Str};

/// Reads one event object, or declines with `None`.
pub(super) fn parse(bytes: &[u8]) -> Option<Raw<'_>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut s = Scan { text, i: 0 };
    let mut raw = Raw::default();
    let mut seen: u32 = 0;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            let key = s.plain_string()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let bit = field(&mut s, &mut raw, key)?;
            if bit != 0 {
                if seen & bit != 0 {
                    return None; // repeated field: serde reports it
                }
                seen |= bit;
            }
            s.ws();
            match s.peek()? {
                b',' => {
                    s.i += 1;
                    s.ws();
                }
                b'}' => {
                    s.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == bytes.len()).then_some(raw)
}

/// The fields of [`Raw`]; each one's discriminant is its bit in the "seen" mask.
#[derive(Clone, Copy)]
enum Field {
    Kind,
    CreationDate,
    Key,
    Version,
    Context,
    ContextKeys,
    UserKey,
    User,
    ContextKind,
    Variation,
    VariationName,
    Value,
    Default,
    PrereqOf,
    Reason,
    TrackEvents,
    DebugUntil,
    SamplingRatio,
    Exclude,
    Data,
    MetricValue,
    StartDate,
    EndDate,
    Features,
    Event,
    Project,
    Environment,
}

/// Names a field by length first, so each key costs one or two comparisons.
fn which(key: &str) -> Option<Field> {
    use Field::*;
    let candidates: &[(&str, Field)] = match key.len() {
        3 => &[("key", Key)],
        4 => &[("kind", Kind), ("user", User), ("data", Data)],
        5 => &[("value", Value), ("event", Event)],
        6 => &[("reason", Reason)],
        7 => &[
            ("version", Version),
            ("context", Context),
            ("default", Default),
            ("userKey", UserKey),
            ("endDate", EndDate),
            ("project", Project),
        ],
        8 => &[("prereqOf", PrereqOf), ("features", Features)],
        9 => &[("variation", Variation), ("startDate", StartDate)],
        11 => &[
            ("contextKeys", ContextKeys),
            ("contextKind", ContextKind),
            ("trackEvents", TrackEvents),
            ("metricValue", MetricValue),
            ("environment", Environment),
        ],
        12 => &[("creationDate", CreationDate)],
        13 => &[
            ("variationName", VariationName),
            ("samplingRatio", SamplingRatio),
        ],
        20 => &[
            ("debugEventsUntilDate", DebugUntil),
            ("excludeFromSummaries", Exclude),
        ],
        _ => &[],
    };
    candidates
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, f)| *f)
}

/// Reads the value of `key` into `raw`; returns the field's bit (0 for unknown fields).
fn field<'a>(s: &mut Scan<'a>, raw: &mut Raw<'a>, key: &str) -> Option<u32> {
    let Some(f) = which(key) else {
        // Ignored, as serde ignores it, but it must still be valid JSON.
        s.value()?;
        return Some(0);
    };
    match f {
        Field::Kind => raw.kind = s.opt_str()?,
        Field::CreationDate => raw.creation_date = s.opt_number()?,
        Field::Key => raw.key = s.opt_str()?,
        Field::Version => raw.version = s.opt_raw()?,
        Field::Context => raw.context = s.opt_raw()?,
        Field::ContextKeys => raw.context_keys = s.opt_raw()?,
        Field::UserKey => raw.user_key = s.opt_str()?,
        Field::User => raw.user = s.opt_raw()?,
        Field::ContextKind => raw.context_kind = s.opt_str()?,
        Field::Variation => raw.variation = s.opt_number()?,
        Field::VariationName => raw.variation_name = s.opt_str()?,
        Field::Value => raw.value = s.opt_raw()?,
        Field::Default => raw.default = s.opt_raw()?,
        Field::PrereqOf => raw.prereq_of = s.opt_str()?,
        Field::Reason => raw.reason = s.opt_raw()?,
        Field::TrackEvents => raw.track_events = s.opt_bool()?,
        Field::DebugUntil => raw.debug_until = s.opt_number()?,
        Field::SamplingRatio => raw.sampling_ratio = s.opt_u64()?,
        Field::Exclude => raw.exclude_from_summaries = s.opt_bool()?,
        Field::Data => raw.data = s.opt_raw()?,
        Field::MetricValue => raw.metric_value = s.opt_f64()?,
        Field::StartDate => raw.start_date = s.opt_number()?,
        Field::EndDate => raw.end_date = s.opt_number()?,
        Field::Features => raw.features = s.opt_raw()?,
        Field::Event => raw.event = s.opt_raw()?,
        Field::Project => raw.project = s.opt_str()?,
        Field::Environment => raw.environment = s.opt_str()?,
    }
    Some(1 << (f as u32))
}

struct Scan<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Scan<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// `"…"` with no escapes and no control characters.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = &self.bytes()[start..];
        // Keys and flag keys are short: a plain loop beats a vectorised search here.
        let end = rest
            .iter()
            .position(|b| matches!(b, b'"' | b'\\') || *b < 0x20)?;
        if rest[end] != b'"' {
            return None;
        }
        self.i = start + end + 1;
        self.text.get(start..start + end)
    }

    /// `null`, consumed; true if it was there.
    fn null(&mut self) -> bool {
        if self.bytes()[self.i..].starts_with(b"null") && self.delimited(self.i + 4) {
            self.i += 4;
            true
        } else {
            false
        }
    }

    /// Whether a scalar ending at `at` is followed by a delimiter.
    fn delimited(&self, at: usize) -> bool {
        matches!(
            self.bytes().get(at),
            None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
        )
    }

    fn opt_str(&mut self) -> Option<Option<Str<'a>>> {
        if self.null() {
            return Some(None);
        }
        Some(Some(Str(Cow::Borrowed(self.plain_string()?))))
    }

    fn opt_bool(&mut self) -> Option<Option<bool>> {
        if self.null() {
            return Some(None);
        }
        for (lit, v) in [("true", true), ("false", false)] {
            if self.bytes()[self.i..].starts_with(lit.as_bytes())
                && self.delimited(self.i + lit.len())
            {
                self.i += lit.len();
                return Some(Some(v));
            }
        }
        None
    }

    /// The digits of a non-negative integer without leading zeros, if that is what the
    /// next value is (else `None`, position unchanged).
    fn digits(&mut self) -> Option<u64> {
        let rest = &self.bytes()[self.i..];
        let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 18 || (n > 1 && rest[0] == b'0') || !self.delimited(self.i + n) {
            return None;
        }
        let v = rest[..n]
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        self.i += n;
        Some(v)
    }

    fn opt_number(&mut self) -> Option<Option<Number>> {
        if self.null() {
            return Some(None);
        }
        if let Some(v) = self.digits() {
            return Some(Some(Number::from(v)));
        }
        let span = self.value()?;
        serde_json::from_str::<Number>(span).ok().map(Some)
    }

    fn opt_u64(&mut self) -> Option<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        if let Some(v) = self.digits() {
            return Some(Some(v));
        }
        let span = self.value()?;
        serde_json::from_str::<u64>(span).ok().map(Some)
    }

    fn opt_f64(&mut self) -> Option<Option<f64>> {
        if self.null() {
            return Some(None);
        }
        let span = self.value()?;
        serde_json::from_str::<f64>(span).ok().map(Some)
    }

    fn opt_raw(&mut self) -> Option<Option<RawText<'a>>> {
        if self.null() {
            return Some(None);
        }
        Some(Some(RawText::validated(self.value()?)))
    }

    /// Validates one JSON value at the cursor and returns its text.
    fn value(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        // The closers of the containers we are inside, innermost last.
        let mut stack: SmallVec<[u8; 16]> = SmallVec::new();
        loop {
            self.ws();
            match self.peek()? {
                b'{' => {
                    self.i += 1;
                    self.ws();
                    if self.peek()? == b'}' {
                        self.i += 1;
                    } else {
                        stack.push(b'}');
                        self.member_name()?;
                        continue;
                    }
                }
                b'[' => {
                    self.i += 1;
                    self.ws();
                    if self.peek()? == b']' {
                        self.i += 1;
                    } else {
                        stack.push(b']');
                        continue;
                    }
                }
                b'"' => self.string()?,
                b't' => self.literal("true")?,
                b'f' => self.literal("false")?,
                b'n' => self.literal("null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // After a value: close containers, or go on to the next element.
            loop {
                let Some(&closer) = stack.last() else {
                    return self.text.get(start..self.i);
                };
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if closer == b'}' {
                            self.ws();
                            self.member_name()?;
                        }
                        break;
                    }
                    c if c == closer => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"name"` `:` inside an object.
    fn member_name(&mut self) -> Option<()> {
        self.string()?;
        self.ws();
        self.eat(b':')
    }

    /// A string literal: escapes checked, no raw control characters (the text is UTF-8
    /// already).
    fn string(&mut self) -> Option<()> {
        let b = self.bytes();
        self.eat(b'"')?;
        loop {
            match *b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => match *b.get(self.i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    b'u' => {
                        let hex = b.get(self.i + 2..self.i + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.i += 6;
                    }
                    _ => return None,
                },
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
    }

    fn literal(&mut self, lit: &str) -> Option<()> {
        self.bytes()[self.i..]
            .starts_with(lit.as_bytes())
            .then(|| self.i += lit.len())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, and within the range
    /// of a 64-bit float (serde_json's readers refuse `1e999`; such input declines).
    fn number(&mut self) -> Option<()> {
        let b = self.bytes();
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => {
                digits(&mut i);
            }
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return None;
            }
        }
        let mut exponent = false;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            exponent = true;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
        }
        let text = self.text.get(self.i..i)?;
        if (exponent || text.len() > 300) && !text.parse::<f64>().ok()?.is_finite() {
            return None;
        }
        self.i = i;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::decode_both_ways;

    fn agree(text: &str) {
        let (fast, slow) = decode_both_ways(text.as_bytes());
        assert_eq!(fast.events, slow.events, "{text}");
        assert_eq!(fast.errors, slow.errors, "{text}");
    }

    #[test]
    fn common_shapes_take_the_fast_path_and_agree() {
        let text = r#"{"kind":"feature","creationDate":1767225600000,"key":"flag-1","version":3,"context":{"kind":"user","key":"u","name":"User 1"},"variation":2,"value":"v","default":"d","trackEvents":false}"#;
        assert!(super::parse(text.as_bytes()).is_some());
        agree(text);
    }

    #[test]
    fn unusual_shapes_decline_or_agree() {
        for text in [
            r#"{"kind":"fea\"ture"}"#,
            r#"{"kind":"feature","kind":"custom"}"#,
            r#"{"kind":"feature","creationDate":01}"#,
            r#"{"kind":"feature","creationDate":1.5e3,"key":"f","userKey":"u"}"#,
            r#"{"kind":"feature","creationDate":-1,"key":"f","userKey":"u"}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","extra":tru}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u"} x"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u",}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","value":[1,{"a":"]"}]}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","value":"a\"b"}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","trackEvents":truex}"#,
            r#"{"kind":"feature","creationDate":null,"key":"f","userKey":"u"}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","samplingRatio":-2}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","metricValue":1e999}"#,
            r#" { "kind" : "custom" , "creationDate" : 7 , "key" : "k" , "userKey" : "u" } "#,
            "{\"kind\":\"feature\",\"key\":\"a\tb\"}",
            r#"{}"#,
            r#"{"#,
            r#"{"kind""#,
        ] {
            agree(text);
        }
    }

    /// A JSON value of a random type, sometimes malformed.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<u32>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|f| f.to_string()),
            "[a-z\"\\\\ ]{0,6}".prop_map(|s| format!("\"{s}\"")),
            "[a-z]{1,5}".prop_map(|s| format!(r#"{{"kind":"user","key":"{s}"}}"#)),
            "[a-z]{1,5}".prop_map(|s| format!(r#"{{"user":"{s}"}}"#)),
            Just("[1,[2,{\"a\":\"]\"}]]".to_owned()),
            Just("{\"a\":".to_owned()),
            Just("01".to_owned()),
            Just("tru".to_owned()),
            // Grammar corners the validator must judge exactly as serde_json does.
            prop::sample::select(vec![
                r#""\u00e9\n\t\"""#,
                r#""\x""#,
                r#""\u12G4""#,
                r#""\u12""#,
                "1.",
                "-",
                "-0",
                "-01",
                "1e",
                "1e+",
                "1E-7",
                "0.5e10",
                ".5",
                "+1",
                "[1,]",
                "[,1]",
                "[]",
                "{}",
                "[ ]",
                "{ }",
                r#"{"a"1}"#,
                r#"{"a":1,}"#,
                r#"{1:2}"#,
                r#"[[[[[[1]]]]]]"#,
                r#"[[[1]]"#,
                r#"{"a":[1,{"b":null}],"c":"]}"}"#,
                "nul",
                "nulll",
                "true ",
                " false",
                r#"["a" "b"]"#,
                r#"{"a":1 "b":2}"#,
                "[1 2]",
                "\"tab\there\"",
                "1 2",
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,12}",
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("kind"),
            Just("creationDate"),
            Just("key"),
            Just("version"),
            Just("context"),
            Just("contextKeys"),
            Just("userKey"),
            Just("user"),
            Just("contextKind"),
            Just("variation"),
            Just("variationName"),
            Just("value"),
            Just("default"),
            Just("prereqOf"),
            Just("reason"),
            Just("trackEvents"),
            Just("samplingRatio"),
            Just("excludeFromSummaries"),
            Just("metricValue"),
            Just("data"),
            Just("other"),
            Just("ke\\u0079"),
        ]
        .prop_map(str::to_owned)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever the object, the fast path and serde decode it identically.
        #[test]
        fn fast_and_serde_agree(
            kind in prop_oneof![Just("feature"), Just("custom"), Just("identify"), Just("debug"), Just("index")],
            fields in prop::collection::vec((key(), value()), 0..8),
            spaced in any::<bool>(),
        ) {
            let sep = if spaced { " , " } else { "," };
            let mut text = format!(r#"{{"kind":"{kind}","creationDate":1000,"key":"f","userKey":"u""#);
            for (k, v) in &fields {
                text.push_str(sep);
                text.push_str(&format!("\"{k}\":{v}"));
            }
            text.push('}');
            let (fast, slow) = decode_both_ways(text.as_bytes());
            prop_assert_eq!(fast.events, slow.events, "{}", text);
            prop_assert_eq!(fast.errors, slow.errors, "{}", text);
        }
    }
}
