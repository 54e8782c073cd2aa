//! Replays the public test vectors in `tests/vectors/*.json` (LaunchDarkly Relay,
//! go-sdk-events, the SDK test harness, go-feature-flag) through decode → window →
//! emit and compares the outputs with what the sources expect.
//!
//! Summaries are compared semantically (flags, counters and context kinds as sets, dates
//! as min/max), because flagtally writes one summary per flag where SDKs write one per
//! flush; single-counter cases marked `exact` are compared byte for byte. Other kinds
//! are compared as multisets of JSON values. All failures are reported together.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;

use serde_json::{Value, json};

use flagtally::decode::{Decoded, Decoder, Dialect, Limits};
use flagtally::emit::{EmitConfig, Emitter, OutputKind};
use flagtally::window::{Engine, EngineConfig, PartitionId, SourcePos};

fn dialect(name: &str) -> Dialect {
    match name {
        "launchdarkly" => Dialect::Launchdarkly,
        "goff" => Dialect::Goff,
        "featbit" => Dialect::Featbit,
        other => panic!("unknown dialect {other}"),
    }
}

/// Runs one case; returns the emitted record values by kind, and the dead letters.
fn run(case: &Value) -> (BTreeMap<&'static str, Vec<String>>, usize) {
    let decoder = Decoder::new(
        dialect(case["dialect"].as_str().unwrap()),
        Limits::default(),
    );
    let mut engine = Engine::new(EngineConfig::default()).unwrap();
    let emitter = Emitter::new(EmitConfig::default());
    let mut outputs = Vec::new();
    let mut dead = 0;
    let partition = PartitionId::new("vectors", 0);
    for (offset, record) in case["input"].as_array().unwrap().iter().enumerate() {
        let bytes = match record {
            // A string element is a raw record value that is not JSON on its own.
            Value::String(s) => s.clone().into_bytes(),
            other => serde_json::to_vec(other).unwrap(),
        };
        let mut decoded = Decoded::default();
        decoder.decode(&bytes, &mut decoded);
        dead += decoded.errors.len();
        for (index, ev) in decoded.events.into_iter().enumerate() {
            let pos = SourcePos {
                partition: partition.clone(),
                offset: offset as i64,
                index: index as u32,
            };
            engine.push(&pos, ev, 0, &mut outputs);
        }
    }
    engine.flush_all(&mut outputs);
    let mut by_kind: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for o in &outputs {
        let r = emitter.emit(o).unwrap();
        by_kind
            .entry(r.kind.name())
            .or_default()
            .push(String::from_utf8(r.value).unwrap());
    }
    (by_kind, dead)
}

/// Makes a value comparable semantically: object keys sorted, and the arrays the
/// sources leave unordered (`_meta.redactedAttributes`) sorted.
fn normalise(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut child) in entries {
                if k == "redactedAttributes"
                    && let Value::Array(a) = &mut child
                {
                    a.sort_by_key(|x| x.to_string());
                }
                normalise(&mut child);
                map.insert(k, child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// Per flag: the default, counters by key (first value, summed count), context kinds.
type FlagTotals = (Value, BTreeMap<String, (Value, u64)>, Vec<String>);

/// A summary list reduced to what the sources assert: per flag, the default, the
/// counters keyed by (variation, version) with value and summed count, the context
/// kinds; and the overall min startDate / max endDate.
fn merge_summaries(summaries: &[Value]) -> Value {
    let mut flags: BTreeMap<String, FlagTotals> = BTreeMap::new();
    let mut start = i64::MAX;
    let mut end = i64::MIN;
    for s in summaries {
        start = start.min(s["startDate"].as_i64().unwrap_or(i64::MAX));
        end = end.max(s["endDate"].as_i64().unwrap_or(i64::MIN));
        for (flag, body) in s["features"].as_object().into_iter().flatten() {
            let entry = flags.entry(flag.clone()).or_insert_with(|| {
                (
                    body.get("default").cloned().unwrap_or(Value::Null),
                    BTreeMap::new(),
                    Vec::new(),
                )
            });
            for c in body["counters"].as_array().into_iter().flatten() {
                let key = json!({
                    "variation": c.get("variation"),
                    "variationName": c.get("variationName"),
                    "version": c.get("version"),
                    "unknown": c.get("unknown"),
                })
                .to_string();
                let slot = entry.1.entry(key).or_insert((c["value"].clone(), 0));
                slot.1 += c["count"].as_u64().unwrap_or(0);
            }
            for k in body["contextKinds"].as_array().into_iter().flatten() {
                let k = k.as_str().unwrap_or_default().to_owned();
                if !entry.2.contains(&k) {
                    entry.2.push(k);
                }
            }
            entry.2.sort();
        }
    }
    json!({
        "startDate": start,
        "endDate": end,
        "flags": flags.into_iter().map(|(k, (d, c, kinds))| (k, json!({
            "default": d,
            "counters": c.into_iter().map(|(k, (v, n))| json!({"key": k, "value": v, "count": n})).collect::<Vec<_>>(),
            "contextKinds": kinds,
        }))).collect::<serde_json::Map<String, Value>>(),
    })
}

fn multiset(values: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = values
        .iter()
        .map(|v| {
            let mut v = v.clone();
            normalise(&mut v);
            v.to_string()
        })
        .collect();
    out.sort();
    out
}

fn check(name: &str, case: &Value) -> Vec<String> {
    let (actual, _dead) = run(case);
    let mut failures = Vec::new();
    let exact = case["exact"].as_bool().unwrap_or(false);
    for (kind, expected) in case["expect"].as_object().unwrap() {
        let expected = expected.as_array().unwrap();
        let kind_name = OutputKind::ALL
            .iter()
            .map(|k| k.name())
            .find(|k| *k == kind)
            .unwrap_or_else(|| panic!("{name}: unknown kind {kind}"));
        let got_text = actual.get(kind_name).cloned().unwrap_or_default();
        let got: Vec<Value> = got_text
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        if kind == "summary" {
            if exact && expected.len() == 1 && got_text.len() == 1 {
                let want = serde_json::to_string(&expected[0]).unwrap();
                if got_text[0] != want {
                    failures.push(format!(
                        "{name}: summary bytes differ\n  want {want}\n  got  {}",
                        got_text[0]
                    ));
                }
            }
            let (w, g) = (merge_summaries(expected), merge_summaries(&got));
            if expected.is_empty() != got.is_empty() || (!expected.is_empty() && w != g) {
                failures.push(format!("{name}: summaries differ\n  want {w}\n  got  {g}"));
            }
        } else {
            let (w, g) = (multiset(expected), multiset(&got));
            if w != g {
                failures.push(format!(
                    "{name}: {kind} events differ\n  want {w:?}\n  got  {g:?}"
                ));
            }
        }
    }
    failures
}

#[test]
fn public_vectors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 25,
        "expected the transcribed vectors in {dir:?}"
    );
    let mut failures = Vec::new();
    for file in &files {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        failures.extend(check(&name, &case));
    }
    assert!(
        failures.is_empty(),
        "{} of {} vector files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
