//! The environment overlay (`FLAGTALLY__SECTION__KEY=value` over the file's tree) and
//! the comparison of two trees that tells a reload what changed.

use serde_json::Value;

/// Environment variables starting with this override the file: `FLAGTALLY__WINDOW__SIZE=5m`
/// sets `window.size`. Segments are lower-cased; values are read as TOML values when
/// they are one (`true`, `42`, `["a","b"]`, `"quoted"`), else as strings.
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
