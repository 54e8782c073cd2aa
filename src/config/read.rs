//! Reading a tree into typed settings, reporting every bad key at once: on an error,
//! the key is recorded with its path, set aside, and the rest read again.
//!
//! `[[sinks]]` entries are read in two parts: the keys every sink has
//! ([`crate::sink::Delivery`]) and the keys of the entry's `type`
//! ([`crate::sink::Kind`]), each refusing keys it does not know.

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};

use crate::sink::{Delivery, Kind, KindReader, SinkConfig, TYPES};

/// Most problems reported from one file.
const MAX_PROBLEMS: usize = 100;

/// Deserialises `tree` as `T`; every problem goes to `problems` as `path: what`, the
/// path under `prefix` (`sinks[2]`; empty at the top). `None` if there was any.
pub(super) fn read<T: DeserializeOwned>(
    prefix: &str,
    mut tree: Value,
    problems: &mut Vec<String>,
) -> Option<T> {
    let mut failed = false;
    while problems.len() < MAX_PROBLEMS {
        match serde_path_to_error::deserialize::<_, T>(tree.clone()) {
            Ok(value) => return (!failed).then_some(value),
            Err(e) => {
                failed = true;
                problems.push(format!("{}: {}", join(prefix, e.path()), e.inner()));
                if !remove(&mut tree, e.path()) {
                    return None;
                }
            }
        }
    }
    None
}

/// `prefix` and a path inside it: `sinks[2]` + `batch_size` → `sinks[2].batch_size`.
fn join(prefix: &str, path: &serde_path_to_error::Path) -> String {
    let path = path.to_string();
    match (prefix.is_empty(), path.as_str()) {
        (true, _) => path,
        (false, "." | "") => prefix.to_owned(),
        (false, p) if p.starts_with('[') => format!("{prefix}{p}"),
        (false, p) => format!("{prefix}.{p}"),
    }
}

/// Removes the key at `path` (its last map key); false when there is none to remove.
fn remove(tree: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = tree;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Object(map)) => match map.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Object(map)) => map.remove(key).is_some(),
        _ => false,
    }
}

/// The field names a struct deserialises (serde tells them to the deserializer).
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Names(&'static [&'static str]);
    #[derive(Debug)]
    struct Found(&'static [&'static str]);
    impl std::fmt::Display for Found {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names")
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Self(&[])
        }
    }
    impl<'de> Deserializer<'de> for Names {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
            Err(Found(self.0))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Found> {
            Err(Found(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    match T::deserialize(Names(&[])) {
        Ok(_) => &[],
        Err(Found(fields)) => fields,
    }
}

/// Reads the keys of one sink type from what is left of its entry.
struct KeysOf<'a> {
    at: &'a str,
    keys: Option<Map<String, Value>>,
    problems: &'a mut Vec<String>,
}

impl KindReader for KeysOf<'_> {
    fn read<T: DeserializeOwned>(&mut self) -> Option<T> {
        let keys = self.keys.take().unwrap_or_default();
        read(self.at, Value::Object(keys), self.problems)
    }
}

/// The sink keys that hold secrets, each of which may be given as `<key>_file`.
const SECRET_KEYS: [&str; 5] = [
    "url",
    "secret",
    "write_key",
    "access_key_id",
    "secret_access_key",
];

/// Replaces each `<key>_file` of a secret key by `<key>`, read from the file.
fn read_secret_files(
    at: &str,
    keys: &mut Map<String, Value>,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    for key in SECRET_KEYS {
        let file_key = format!("{key}_file");
        let Some(file) = keys.remove(&file_key) else {
            continue;
        };
        let Value::String(path) = file else {
            problems.push(format!("{at}.{file_key}: expected a path"));
            continue;
        };
        if keys.contains_key(key) {
            problems.push(format!("{at}.{key}: set both it and {key}_file; keep one"));
            continue;
        }
        match crate::kafka::security::read_secret(std::path::Path::new(&path), warnings) {
            Ok(secret) => {
                keys.insert(key.to_owned(), Value::String(secret.expose().to_owned()));
            }
            Err(e) => problems.push(format!("{at}.{file_key}: {e}")),
        }
    }
}

/// Reads the `[[sinks]]` array.
pub(super) fn sinks(
    tree: Value,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<SinkConfig> {
    let Value::Array(entries) = tree else {
        problems.push("sinks: expected an array of tables ([[sinks]])".to_owned());
        return Vec::new();
    };
    let common = field_names::<Delivery>();
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("sinks[{i}]");
        let Value::Object(mut keys) = entry else {
            problems.push(format!("{at}: expected a table"));
            continue;
        };
        read_secret_files(&at, &mut keys, problems, warnings);
        let ty = match keys.remove("type") {
            Some(Value::String(ty)) if TYPES.contains(&ty.as_str()) => Some(ty),
            Some(Value::String(ty)) => {
                let expected: Vec<String> = TYPES.iter().map(|t| format!("`{t}`")).collect();
                problems.push(format!(
                    "{at}.type: unknown variant `{ty}`, expected one of {}",
                    expected.join(", ")
                ));
                None
            }
            Some(other) => {
                problems.push(format!("{at}.type: expected a string, found {other}"));
                None
            }
            None => {
                problems.push(format!("{at}: missing field `type`"));
                None
            }
        };
        let (shared, own): (Map<String, Value>, Map<String, Value>) = keys
            .into_iter()
            .partition(|(k, _)| common.contains(&k.as_str()));
        let delivery = read::<Delivery>(&at, Value::Object(shared), problems);
        let kind = ty.and_then(|ty| {
            let mut reader = KeysOf {
                at: &at,
                keys: Some(own),
                problems,
            };
            Kind::read(&ty, &mut reader)
        });
        if let (Some(delivery), Some(kind)) = (delivery, kind) {
            out.push(SinkConfig { delivery, kind });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_the_fields_of_a_struct() {
        let names = field_names::<Delivery>();
        for name in [
            "name",
            "topics",
            "batch_size",
            "retry_max",
            "dead_letter_topic",
        ] {
            assert!(names.contains(&name), "{name} not in {names:?}");
        }
    }
}
