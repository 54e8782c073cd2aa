//! Helpers every JSON dialect shares: parsing with precise error paths, bounded keys,
//! timestamps, and LaunchDarkly-style context objects.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::{DecodeError, Dialect, Limits, Reason};
use crate::event::{ContextKey, Contexts, EventTime, Json, TimeUnit};

/// Joins a path prefix and a field name: `at("events[2]", "key")` → `events[2].key`
/// (the Avro codec's, which reports its paths the same way).
pub(crate) use crate::avro::event::at;

pub(crate) fn first_byte(value: &[u8]) -> Option<u8> {
    value.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Parses `bytes` as `T`. The fast path is plain serde_json; on failure the record is
/// parsed again, slowly, to find the path of the offending field.
pub(crate) fn parse<'a, T: Deserialize<'a>>(
    dialect: Dialect,
    prefix: &str,
    bytes: &'a [u8],
) -> Result<T, DecodeError> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(v) => Ok(v),
        Err(first) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let (path, err) = match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Ok(_) => (String::new(), first),
                Err(e) => {
                    let path = e.path().to_string();
                    (path, e.into_inner())
                }
            };
            // `.` is serde_path_to_error's root; `?` a segment it could not name (a
            // key being read when the input ended): the path stops before it.
            let mut path = if path == "." { String::new() } else { path };
            while path == "?" || path.ends_with(".?") {
                path.truncate(path.len().saturating_sub(2));
            }
            Err(DecodeError::new(
                dialect,
                at(prefix, &path),
                classify(&err, bytes),
            ))
        }
    }
}

/// Maps a serde_json error onto a [`Reason`].
pub(crate) fn classify(err: &serde_json::Error, bytes: &[u8]) -> Reason {
    if let Err(e) = std::str::from_utf8(bytes)
        && (err.is_syntax() || err.is_data())
    {
        let msg = err.to_string();
        if msg.contains("unicode") || msg.contains("UTF-8") || msg.contains("utf-8") {
            return Reason::Utf8(e.valid_up_to());
        }
    }
    let msg = err.to_string();
    match err.classify() {
        serde_json::error::Category::Data => {
            if let Some(rest) = msg.strip_prefix("invalid type: ") {
                let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
                let expected = expected.split(" at line").next().unwrap_or(expected);
                return Reason::WrongType {
                    expected: leak_expected(expected),
                    found: found.to_owned(),
                };
            }
            if msg.starts_with("missing field") {
                return Reason::Missing;
            }
            Reason::Invalid(msg)
        }
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            Reason::Syntax(msg)
        }
        serde_json::error::Category::Io => Reason::Invalid(msg),
    }
}

/// serde's "expected" texts come from a small fixed set (type names of our own
/// structs); map the common ones to static strings and keep the rest generic.
fn leak_expected(expected: &str) -> &'static str {
    match expected {
        e if e.contains("i64") || e.contains("u64") || e.contains("u32") => "an integer",
        e if e.contains("f64") || e.contains("number") => "a number",
        e if e.contains("a string") || e.contains("borrowed string") => "a string",
        e if e.contains("a boolean") => "a boolean",
        e if e.contains("sequence") => "an array",
        e if e.contains("map") || e.contains("struct") || e.contains("object") => "an object",
        _ => "another type",
    }
}

/// A bounded excerpt of producer text for an error message.
pub(crate) fn excerpt(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A required, bounded, non-empty string field.
pub(crate) fn key(
    dialect: Dialect,
    path: impl FnOnce() -> String,
    value: Option<&str>,
    limits: &Limits,
) -> Result<CompactString, DecodeError> {
    match value {
        None => Err(DecodeError::new(dialect, path(), Reason::Missing)),
        Some("") => Err(DecodeError::new(
            dialect,
            path(),
            Reason::Invalid("must not be empty".into()),
        )),
        Some(s) if s.len() > limits.max_key_bytes => Err(DecodeError::new(
            dialect,
            path(),
            Reason::StringTooLong {
                len: s.len(),
                limit: limits.max_key_bytes,
            },
        )),
        Some(s) => Ok(CompactString::from(s)),
    }
}

/// An optional, bounded string field; empty means absent.
pub(crate) fn opt_key(
    dialect: Dialect,
    path: impl FnOnce() -> String,
    value: Option<&str>,
    limits: &Limits,
) -> Result<Option<CompactString>, DecodeError> {
    match value {
        None | Some("") => Ok(None),
        v => key(dialect, path, v, limits).map(Some),
    }
}

/// A required timestamp in the given nominal unit.
pub(crate) fn time(
    dialect: Dialect,
    path: impl FnOnce() -> String,
    value: Option<&serde_json::Number>,
    unit: TimeUnit,
) -> Result<EventTime, DecodeError> {
    let Some(n) = value else {
        return Err(DecodeError::new(dialect, path(), Reason::Missing));
    };
    opt_time_number(n, unit).ok_or_else(|| {
        DecodeError::new(
            dialect,
            path(),
            Reason::Invalid(format!("{n} is not a timestamp (negative or out of range)")),
        )
    })
}

pub(crate) fn opt_time_number(n: &serde_json::Number, unit: TimeUnit) -> Option<EventTime> {
    n.as_f64().and_then(|f| EventTime::from_unit(f, unit))
}

/// An integer field that may have been written as a float with no fraction.
pub(crate) fn int(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// A JSON object's keys and raw values, without allocating for the values.
/// Used to read context objects, whose attribute names are open-ended.
#[derive(Debug, Default)]
pub(crate) struct RawObject<'a> {
    pub fields: SmallVec<[(Cow<'a, str>, &'a RawValue); 8]>,
}

impl<'a> RawObject<'a> {
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = RawObject::default();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.fields.push((k, v));
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The parts of a context object the decoder needs, read in one pass: `kind`, `key`,
/// and (only while the kind is unknown or `multi`) the other fields' raw values.
#[derive(Debug, Default)]
struct ContextShape<'a> {
    kind: Option<Result<Cow<'a, str>, &'a RawValue>>,
    key: Option<Result<Cow<'a, str>, &'a RawValue>>,
    others: SmallVec<[(Cow<'a, str>, &'a RawValue); 4]>,
}

impl<'de: 'a, 'a> Deserialize<'de> for ContextShape<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ContextShape<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = ContextShape::default();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    match k.as_ref() {
                        "kind" => out.kind = Some(map.next_value::<StrOrRaw<'de>>()?.0),
                        "key" => out.key = Some(map.next_value::<StrOrRaw<'de>>()?.0),
                        _ => {
                            let keep = match &out.kind {
                                None => true,
                                Some(Ok(kind)) => kind == "multi",
                                Some(Err(_)) => false,
                            };
                            if keep {
                                out.others.push((k, map.next_value()?));
                            } else {
                                map.next_value::<de::IgnoredAny>()?;
                            }
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string, or the raw text of whatever else was there (for the error message).
struct StrOrRaw<'a>(Result<Cow<'a, str>, &'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for StrOrRaw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        Ok(Self(raw_str(raw).ok_or(raw)))
    }
}

/// The fast path for the shape nearly every SDK writes: an object that starts
/// `{"kind":"…","key":"…"` with no escapes in either string. `text` is valid JSON
/// (serde_json checked it); anything else returns `None` and takes the full parse.
fn leading_kind_and_key(text: &str) -> Option<(&str, &str)> {
    fn string(rest: &str) -> Option<(&str, &str)> {
        // Kinds and keys are short: a plain loop beats memchr's setup.
        let end = rest.bytes().position(|b| b == b'"' || b == b'\\')?;
        (rest.as_bytes()[end] == b'"').then(|| (&rest[..end], &rest[end + 1..]))
    }
    let rest = text.strip_prefix(r#"{"kind":""#)?;
    let (kind, rest) = string(rest)?;
    let rest = rest.strip_prefix(r#","key":""#)?;
    let (key, rest) = string(rest)?;
    // The key must be a whole member: followed by `,` or `}` (no other "key" wins
    // later: JSON objects with repeated names are not contexts any SDK writes).
    matches!(rest.as_bytes().first(), Some(b',' | b'}')).then_some((kind, key))
}

/// A string read from raw JSON; `None` if the value is not a string.
fn raw_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
}

fn kind_ok(kind: &str) -> bool {
    kind != "kind"
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The common single context, `{"kind":…,"key":…,…}` with plain kind and key within
/// the limits, read without a parse (`None`: [`context`] parses it).
fn simple_context(raw: RawText<'_>, limits: &Limits) -> Option<Contexts> {
    let (kind, key) = leading_kind_and_key(raw.get())?;
    single_context(kind, key, raw, limits)
}

/// The single context `raw`, whose leading members are the plain strings `kind` and
/// `key` (its reader found them there), if both are valid and within the limits
/// (`None`: [`context`] reads it).
pub(crate) fn single_context(
    kind: &str,
    key: &str,
    raw: RawText<'_>,
    limits: &Limits,
) -> Option<Contexts> {
    (kind != "multi"
        && kind_ok(kind)
        && !kind.is_empty()
        && !key.is_empty()
        && kind.len() <= limits.max_key_bytes
        && key.len() <= limits.max_key_bytes)
        .then(|| Contexts {
            keys: smallvec::smallvec![ContextKey {
                kind: kind.into(),
                key: key.into(),
            }],
            body: Some(raw.to_json()),
        })
}

/// Reads a LaunchDarkly context object of any generation: a single context
/// (`{"kind":"org","key":…}`), a multi-context (`{"kind":"multi","user":{…},…}`), or an
/// old-style user (no `kind`: a `user` context). The object is kept as received.
/// `path` is built only when the context needs a parse (the common single context
/// needs none).
pub(crate) fn context(
    dialect: Dialect,
    path: impl FnOnce() -> String,
    raw: RawText<'_>,
    limits: &Limits,
) -> Result<Contexts, DecodeError> {
    if let Some(c) = simple_context(raw, limits) {
        return Ok(c);
    }
    let text = raw;
    let raw = raw.get();
    let path = &path();
    let shape: ContextShape<'_> = parse(dialect, path, raw.as_bytes())?;
    let string = |v: &Option<Result<Cow<'_, str>, &RawValue>>,
                  field: &str|
     -> Result<Option<String>, DecodeError> {
        match v {
            None => Ok(None),
            Some(Ok(s)) => Ok(Some(s.to_string())),
            Some(Err(other)) => Err(DecodeError::new(
                dialect,
                at(path, field),
                Reason::WrongType {
                    expected: "a string",
                    found: other.get().chars().take(40).collect(),
                },
            )),
        }
    };
    let kind = match &shape.kind {
        None => None,
        Some(Ok(k)) => Some(k.as_ref()),
        Some(Err(_)) => {
            string(&shape.kind, "kind")?;
            None
        }
    };
    let key_of = |v: &Option<Result<Cow<'_, str>, &RawValue>>,
                  p: &str|
     -> Result<CompactString, DecodeError> {
        match v {
            Some(Ok(s)) => key(dialect, || at(p, "key"), Some(s), limits),
            Some(Err(other)) => Err(DecodeError::new(
                dialect,
                at(p, "key"),
                Reason::WrongType {
                    expected: "a string",
                    found: other.get().chars().take(40).collect(),
                },
            )),
            None => Err(DecodeError::new(dialect, at(p, "key"), Reason::Missing)),
        }
    };
    match kind {
        Some("multi") => {
            super::check_kinds(shape.others.len())
                .map_err(|r| DecodeError::new(dialect, path, r))?;
            let mut keys: SmallVec<[ContextKey; 1]> = SmallVec::new();
            for (name, sub) in &shape.others {
                let sub_path = at(path, name);
                if !kind_ok(name) || name == "multi" {
                    return Err(DecodeError::new(
                        dialect,
                        sub_path,
                        Reason::Invalid(format!("{name:?} is not a valid context kind")),
                    ));
                }
                let sub_shape: ContextShape<'_> = parse(dialect, &sub_path, sub.get().as_bytes())?;
                keys.push(ContextKey {
                    kind: key(dialect, || sub_path.clone(), Some(name), limits)?,
                    key: key_of(&sub_shape.key, &sub_path)?,
                });
            }
            if keys.is_empty() {
                return Err(DecodeError::new(
                    dialect,
                    path,
                    Reason::Invalid("a multi-context needs at least one context".into()),
                ));
            }
            keys.sort();
            Ok(Contexts {
                keys,
                body: Some(text.to_json()),
            })
        }
        Some(kind) => {
            if !kind_ok(kind) {
                return Err(DecodeError::new(
                    dialect,
                    at(path, "kind"),
                    Reason::Invalid(format!("{kind:?} is not a valid context kind")),
                ));
            }
            let kind = key(dialect, || at(path, "kind"), Some(kind), limits)?;
            let key = key_of(&shape.key, path)?;
            Ok(Contexts {
                keys: smallvec::smallvec![ContextKey { kind, key }],
                body: Some(text.to_json()),
            })
        }
        None => {
            // An old-style user, kept as received, as LaunchDarkly's Relay forwards it:
            // it is still a valid context for every LaunchDarkly consumer.
            let key = key_of(&shape.key, path)?;
            Ok(Contexts {
                keys: smallvec::smallvec![ContextKey {
                    kind: "user".into(),
                    key,
                }],
                body: Some(text.to_json()),
            })
        }
    }
}

/// Deserialises a field that must be an object into its raw text (to keep the exact
/// JSON) while still refusing other types with a typed error.
pub(crate) fn expect_object(
    dialect: Dialect,
    path: impl FnOnce() -> String,
    raw: &RawValue,
) -> Result<(), DecodeError> {
    if raw.get().starts_with('{') {
        Ok(())
    } else {
        Err(DecodeError::new(
            dialect,
            path(),
            Reason::WrongType {
                expected: "an object",
                found: raw.get().chars().take(40).collect(),
            },
        ))
    }
}

/// Valid JSON text borrowed from the input: what `&RawValue` is, but constructible by
/// the LaunchDarkly fast path once its own validator has checked the text, which then
/// also knows whether the text is compact (no whitespace outside strings).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawText<'a> {
    text: &'a str,
    compact: bool,
}

impl<'a> RawText<'a> {
    /// `text` must be valid JSON (the caller validated it); `compact`: it holds no
    /// whitespace outside its strings (`false` when not known).
    pub(crate) fn validated(text: &'a str, compact: bool) -> Self {
        Self { text, compact }
    }

    pub(crate) fn get(&self) -> &'a str {
        self.text
    }

    pub(crate) fn to_json(self) -> Json {
        if self.compact {
            Json::from_compact_text(self.text)
        } else {
            Json::from_valid_text(self.text)
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(|raw| Self::validated(raw.get(), false))
    }
}

/// A string field, borrowed from the input when it holds no escapes.
///
/// `Option<Cow<'a, str>>` cannot borrow (serde's `Cow` impl always allocates); wrapping
/// the `Cow` in this newtype can: `Option<Str<'a>>` with `#[serde(borrow)]`.
#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct Str<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// For a batch that failed to parse only because some bytes are not UTF-8: a copy in
/// which every byte of every invalid sequence is replaced by `?`, or `None` if `bytes`
/// is valid UTF-8.
///
/// Invalid sequences never contain ASCII bytes, so the copy has the same JSON structure
/// and the same byte offsets as the original. Parsing the copy finds the batch's
/// elements; each element is then decoded from the ORIGINAL bytes at the same offsets
/// ([`original_span`]), so only the elements holding bad bytes fail, with their own path.
pub(crate) fn patch_utf8(bytes: &[u8]) -> Option<Vec<u8>> {
    if std::str::from_utf8(bytes).is_ok() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        out.resize(out.len() + chunk.invalid().len(), b'?');
    }
    Some(out)
}

/// The bytes of `original` at the offsets `raw` occupies in `patched` (see
/// [`patch_utf8`]); `raw` must borrow from `patched`. Empty if it does not.
fn original_span<'a>(original: &'a [u8], patched: &[u8], raw: &RawValue) -> &'a [u8] {
    let text = raw.get();
    let start = (text.as_ptr() as usize).wrapping_sub(patched.as_ptr() as usize);
    start
        .checked_add(text.len())
        .and_then(|end| original.get(start..end))
        .unwrap_or_default()
}

/// Where the parts of a container parsed by [`parse_container`] point: into the record,
/// or into its UTF-8-patched copy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin<'a> {
    original: &'a [u8],
    patched: Option<&'a [u8]>,
}

impl<'a> Origin<'a> {
    /// Whether the container was parsed from the patched copy.
    pub fn is_patched(&self) -> bool {
        self.patched.is_some()
    }

    /// The record's own bytes for a part, to decode it on its own.
    pub fn bytes(&self, raw: &'a RawValue) -> &'a [u8] {
        match self.patched {
            None => raw.get().as_bytes(),
            Some(patched) => original_span(self.original, patched, raw),
        }
    }

    /// The record's own text for a part that is used as a whole; if the part holds
    /// bytes that are not UTF-8, the error names it.
    pub fn raw(
        &self,
        dialect: Dialect,
        path: impl FnOnce() -> String,
        raw: &'a RawValue,
    ) -> Result<&'a RawValue, DecodeError> {
        match self.patched {
            None => Ok(raw),
            Some(_) => parse(dialect, &path(), self.bytes(raw)),
        }
    }
}

/// Parses a container (a batch, an envelope) whose parts are decoded one by one, so
/// that bytes that are not UTF-8 inside one part cost only that part: when the record
/// fails to parse and is not valid UTF-8, its [`patch_utf8`] copy is parsed instead.
///
/// Only the `&RawValue` parts of the result may be used, and only through the returned
/// [`Origin`]: anything else may hold patched text.
pub(crate) fn parse_container<'a, T: Deserialize<'a>>(
    dialect: Dialect,
    prefix: impl FnOnce() -> String,
    bytes: &'a [u8],
    scratch: &'a mut Option<Vec<u8>>,
) -> Result<(T, Origin<'a>), DecodeError> {
    if let Ok(v) = serde_json::from_slice::<T>(bytes) {
        let origin = Origin {
            original: bytes,
            patched: None,
        };
        return Ok((v, origin));
    }
    if let Some(copy) = patch_utf8(bytes) {
        let patched: &'a [u8] = scratch.insert(copy);
        if let Ok(v) = serde_json::from_slice::<T>(patched) {
            let origin = Origin {
                original: bytes,
                patched: Some(patched),
            };
            return Ok((v, origin));
        }
    }
    parse(dialect, &prefix(), bytes).map(|v| {
        // Unreachable in practice: the same bytes failed to parse above.
        let origin = Origin {
            original: bytes,
            patched: None,
        };
        (v, origin)
    })
}

/// A `user` context object built from a key, an optional name and open attributes:
/// `{"kind":"user","key":…,"name":…,<attributes>,"anonymous":true}`.
///
/// Attributes never overwrite `kind`, `key`, nor `name` / `anonymous` when those are
/// set here; of repeated attribute names the first wins.
pub(crate) fn user_body(
    key: &str,
    name: Option<&str>,
    attributes: &[(Cow<'_, str>, &RawValue)],
    anonymous: bool,
) -> Json {
    let body = UserBody {
        key,
        name,
        attributes,
        anonymous,
    };
    // Serialising strings and already-valid raw JSON into a string cannot fail.
    match serde_json::value::to_raw_value(&body) {
        Ok(raw) => Json::from_raw(&raw),
        Err(_) => Json::null(),
    }
}

struct UserBody<'x, 'a> {
    key: &'x str,
    name: Option<&'x str>,
    attributes: &'x [(Cow<'a, str>, &'a RawValue)],
    anonymous: bool,
}

impl serde::Serialize for UserBody<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("kind", "user")?;
        map.serialize_entry("key", self.key)?;
        if let Some(name) = self.name {
            map.serialize_entry("name", name)?;
        }
        let reserved = |k: &str| {
            k == "kind"
                || k == "key"
                || (k == "name" && self.name.is_some())
                || (k == "anonymous" && self.anonymous)
        };
        // Few attributes: look back linearly; many: remember names in a set.
        let mut seen = (self.attributes.len() > 16).then(|| {
            rustc_hash::FxHashSet::<&str>::with_capacity_and_hasher(
                self.attributes.len(),
                Default::default(),
            )
        });
        for (i, (k, v)) in self.attributes.iter().enumerate() {
            if reserved(k) {
                continue;
            }
            let repeated = match &mut seen {
                Some(set) => !set.insert(k),
                None => self.attributes[..i].iter().any(|(p, _)| p == k),
            };
            if !repeated {
                map.serialize_entry(k.as_ref(), v)?;
            }
        }
        if self.anonymous {
            map.serialize_entry("anonymous", &true)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(text: &str) -> Result<Contexts, DecodeError> {
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        context(
            Dialect::Launchdarkly,
            || "context".to_owned(),
            RawText::validated(raw.get(), false),
            &Limits::default(),
        )
    }

    #[test]
    fn single_multi_and_old_user_contexts() {
        let c = ctx(r#"{"kind":"org","key":"o1","name":"Acme"}"#).unwrap();
        assert_eq!(c.fully_qualified_key(), "org:o1");
        let c = ctx(r#"{"kind":"multi","user":{"key":"u"},"org":{"key":"o"}}"#).unwrap();
        assert_eq!(c.fully_qualified_key(), "org:o:user:u");
        let c = ctx(r#"{"key":"u","name":"Red","custom":{"tier":"gold"},"privateAttributeNames":["name"],"anonymous":null}"#)
            .unwrap();
        assert_eq!(c.fully_qualified_key(), "u");
        assert_eq!(c.keys[0].kind, "user");
        assert!(
            c.body
                .unwrap()
                .as_str()
                .starts_with(r#"{"key":"u","name":"Red""#)
        );
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_parse() {
        for text in [
            r#"{"kind":"user","key":"u","name":"Red"}"#,
            r#"{"kind":"org","key":"a:b"}"#,
            r#"{"kind":"user","key":"esc\"aped"}"#,
            r#"{"key":"u","kind":"user"}"#,
            r#"{"kind":"multi","key":"x","user":{"key":"u"}}"#,
        ] {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            let full = {
                let shape: ContextShape<'_> = serde_json::from_str(text).unwrap();
                shape.kind.and_then(Result::ok).map(|k| k.into_owned())
            };
            if let Some((kind, key)) = leading_kind_and_key(raw.get()) {
                assert_eq!(Some(kind.to_owned()), full, "{text}");
                assert!(!key.contains('\\'), "{text}");
            }
            // Whichever path runs, the result is the same.
            let c = context(
                Dialect::Launchdarkly,
                || "c".to_owned(),
                RawText::validated(raw.get(), false),
                &Limits::default(),
            );
            let _ = c.map(|c| c.fully_qualified_key());
        }
        assert_eq!(
            leading_kind_and_key(r#"{"kind":"user","key":"u","name":"x"}"#),
            Some(("user", "u"))
        );
        assert_eq!(
            leading_kind_and_key(r#"{"kind":"user","key":"e\"q"}"#),
            None
        );
        assert_eq!(leading_kind_and_key(r#"{"key":"u","kind":"user"}"#), None);
    }

    #[test]
    fn bad_contexts_name_the_field() {
        let e = ctx(r#"{"kind":"user"}"#).unwrap_err();
        assert_eq!(e.path, "context.key");
        assert_eq!(e.reason, Reason::Missing);
        let e = ctx(r#"{"kind":"user","key":5}"#).unwrap_err();
        assert_eq!(e.path, "context.key");
        assert_eq!(e.reason.code(), "wrong_type");
        let e = ctx(r#"{"kind":"multi"}"#).unwrap_err();
        assert_eq!(e.reason.code(), "invalid_value");
        let e = ctx(r#"{"kind":"multi","user":{"name":"x"}}"#).unwrap_err();
        assert_eq!(e.path, "context.user.key");
        let e = ctx(r#"{"kind":"us er","key":"k"}"#).unwrap_err();
        assert_eq!(e.path, "context.kind");
        let e = ctx(r#"[1]"#).unwrap_err();
        assert_eq!(e.reason.code(), "wrong_type");
    }
}
