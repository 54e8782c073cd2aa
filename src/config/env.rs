//! The environment overlay (`FLAGTALLY__SECTION__KEY=value` over the file's tree) and
//! the comparison of two trees that tells a reload what changed.

use serde_json::Value;

/// Environment variables starting with this override the file: `FLAGTALLY__WINDOW__SIZE=5m`
/// sets `window.size`. Segments are lower-cased; values are read as TOML values when
/// they are one (`true`, `42`, `["a","b"]`, `"quoted"`), else as strings. An entry of
/// an array of tables is named by its `name`: `FLAGTALLY__SINKS__WAREHOUSE__URL` sets
/// the `url` of the `[[sinks]]` entry named `warehouse` (in the name, any character
/// but a letter or digit matches `_`: `files-ndjson` is `FILES_NDJSON`).
pub const ENV_PREFIX: &str = "FLAGTALLY__";

/// Applies `FLAGTALLY__…` variables to the tree; returns the ones that cannot apply.
pub fn apply_env(tree: &mut Value, env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            problems.push(format!(
                "{name}: an empty key segment (use FLAGTALLY__SECTION__KEY)"
            ));
            continue;
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(Value::String(raw));
        let mut node = &mut *tree;
        for (i, segment) in path.iter().enumerate() {
            if let Value::Array(items) = node {
                let named = items.iter_mut().find(|t| {
                    t.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| env_name(n) == *segment)
                });
                match named {
                    Some(item) if i + 1 < path.len() => {
                        node = item;
                        continue;
                    }
                    Some(_) => problems.push(format!(
                        "{name}: names the entry {segment} of {}, not one of its keys",
                        path[..i].join(".")
                    )),
                    None => problems.push(format!(
                        "{name}: no entry of {} is named {segment}",
                        path[..i].join(".")
                    )),
                }
                break;
            }
            let Value::Object(map) = node else {
                problems.push(format!("{name}: {} is not a table", path[..i].join(".")));
                break;
            };
            if i + 1 == path.len() {
                map.insert(segment.clone(), value);
                break;
            }
            node = map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
        }
    }
    problems
}

/// A name as an environment variable's segment spells it: lower case, `_` for any
/// character but a letter or digit.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The dotted paths whose values differ between two merged trees.
pub fn changed_paths(old: &Value, new: &Value) -> Vec<String> {
    fn walk(prefix: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) {
        match (old, new) {
            // A table added or removed: compare its keys with an empty table's.
            (Some(Value::Object(a)), None) => walk(
                prefix,
                Some(&Value::Object(a.clone())),
                Some(&Value::Object(serde_json::Map::new())),
                out,
            ),
            (None, Some(Value::Object(b))) => walk(
                prefix,
                Some(&Value::Object(serde_json::Map::new())),
                Some(&Value::Object(b.clone())),
                out,
            ),
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, a.get(k), b.get(k), out);
                }
            }
            (a, b) if a != b => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
}
