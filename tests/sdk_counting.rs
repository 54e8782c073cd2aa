//! Every evaluation counted once, fed what LaunchDarkly's real server SDKs send: their
//! `/bulk` payloads hold their own summary events beside full-fidelity feature events
//! of tracked flags (copies of evaluations the summary already counts).
//!
//! The payloads are made here by the real SDKs — the Python server SDK
//! (`launchdarkly-server-sdk` 9.15.0) and the Node server SDK
//! (`@launchdarkly/node-server-sdk`) — offline from a flag file, posting to a capture
//! server on 127.0.0.1 (`tests/sdk/`; `scripts/infra.sh sdks` installs them once). The
//! oracle is the SDKs' own summaries: flagtally's summaries must add up to theirs per
//! flag, variation and version, and its feature events must match theirs one to one —
//! through `summarize` and through `run` on Apache Kafka, for one payload per record
//! (`count_from = "payload"`) and for one event per record, Data Export style
//! (`count_from = "summaries"`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use flagtally::generate::Tally;
use serde_json::Value;

/// The SDK test clients: `(python, node_modules)` from `scripts/infra.sh sdks`.
fn sdks() -> &'static (String, String) {
    static SDKS: OnceLock<(String, String)> = OnceLock::new();
    SDKS.get_or_init(|| {
        let from_env = (
            std::env::var("FLAGTALLY_TEST_LD_PYTHON"),
            std::env::var("FLAGTALLY_TEST_LD_NODE_MODULES"),
        );
        if let (Ok(py), Ok(node)) = from_env {
            return (py, node);
        }
        let out = Command::new("bash")
            .arg(repo().join("scripts/infra.sh"))
            .arg("sdks")
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/infra.sh sdks: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} not in infra.sh sdks output {text:?}"))
                .to_owned()
        };
        (
            var("FLAGTALLY_TEST_LD_PYTHON"),
            var("FLAGTALLY_TEST_LD_NODE_MODULES"),
        )
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Sdk {
    Python,
    Node,
}

/// What one SDK run posted: its `/bulk` bodies, one per line, as received.
#[derive(Debug)]
struct Capture {
    file: PathBuf,
    payloads: Vec<String>,
}

impl Capture {
    fn events(&self) -> impl Iterator<Item = Value> + '_ {
        self.payloads
            .iter()
            .flat_map(|p| match serde_json::from_str::<Value>(p).unwrap() {
                Value::Array(events) => events,
                other => vec![other],
            })
    }

    /// The SDK's own count: its summaries' counters per flag, variation and version.
    fn sdk_tally(&self) -> Tally {
        let mut t = Tally::default();
        for e in self.events() {
            t.add_summary_json(&e.to_string()).unwrap();
        }
        t
    }

    /// The SDK's full-fidelity events, by kind.
    fn count(&self, kind: &str) -> u64 {
        self.events().filter(|e| e["kind"] == kind).count() as u64
    }

    /// One event per line in LaunchDarkly's Data Export envelope, as a Data Export
    /// destination or a forwarding Relay writes them: feature and summary events
    /// interleaved in the order the SDK sent them.
    fn data_export_records(&self) -> Vec<Vec<u8>> {
        self.events()
            .map(|e| {
                serde_json::json!({"project": "p", "environment": "e", "event": e, "version": 1})
                    .to_string()
                    .into_bytes()
            })
            .collect()
    }
}

const EVALUATIONS: &str = "3000";

/// Runs one SDK once per test process and keeps what it posted.
fn capture(sdk: Sdk) -> &'static Capture {
    static CAPTURES: OnceLock<std::sync::Mutex<BTreeMap<Sdk, &'static Capture>>> = OnceLock::new();
    let mut map = CAPTURES.get_or_init(Default::default).lock().unwrap();
    map.entry(sdk).or_insert_with(|| {
        let (python, node_modules) = sdks();
        let file = std::env::temp_dir().join(format!(
            "flagtally-sdk-{sdk:?}-{}.ndjson",
            std::process::id()
        ));
        let mut cmd = match sdk {
            Sdk::Python => {
                let mut c = Command::new(python);
                c.arg(repo().join("tests/sdk/ld_python_events.py"));
                c
            }
            Sdk::Node => {
                let mut c = Command::new("node");
                c.arg(repo().join("tests/sdk/ld_node_events.mjs"))
                    .env("FLAGTALLY_TEST_LD_NODE_MODULES", node_modules);
                c
            }
        };
        let out = cmd
            .arg("--out")
            .arg(&file)
            .args(["--evaluations", EVALUATIONS])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sdk:?} SDK run failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let payloads: Vec<String> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        let c = Capture { file, payloads };
        let sdk_total = c.sdk_tally().evaluations();
        report(&format!(
            "{sdk:?} SDK: {} payloads, {sdk_total} evaluations in its summaries, {} feature events",
            c.payloads.len(),
            c.count("feature")
        ));
        assert!(c.payloads.len() > 1, "several payloads");
        assert!(c.count("feature") > 0, "tracked flags give feature events");
        assert!(
            sdk_total > c.count("feature"),
            "untracked flags are in the summaries only"
        );
        Box::leak(Box::new(c))
    })
}

/// `flagtally summarize` over `file`; returns its summaries' tally and its output
/// feature events.
fn summarize(file: &std::path::Path, args: &[&str]) -> (Tally, u64) {
    let (tally, features, _) = summarize_output(file, args);
    (tally, features)
}

/// [`summarize`], and the output lines too.
fn summarize_output(file: &std::path::Path, args: &[&str]) -> (Tally, u64, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flagtally"))
        .arg("summarize")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(" 0 dead letters"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut tally = Tally::default();
    let mut features = 0;
    for line in stdout.lines() {
        tally.add_summary_json(line).unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        let v = v.get("event").cloned().unwrap_or(v);
        features += u64::from(v["kind"] == "feature");
    }
    (tally, features, stdout)
}

fn check_summarize(sdk: Sdk) {
    let c = capture(sdk);
    let expected = c.sdk_tally();
    for dialect in ["auto", "launchdarkly"] {
        let (got, features) = summarize(&c.file, &["--dialect", dialect]);
        assert_eq!(
            got.counters, expected.counters,
            "{sdk:?}, --dialect {dialect}: counters per flag, variation, version"
        );
        assert_eq!(features, c.count("feature"), "feature events one to one");
    }
    // Data Export style: one event per line. Counted from summaries, exact; counted
    // per payload (the default), each tracked evaluation would count twice.
    let lines: Vec<u8> = c
        .data_export_records()
        .into_iter()
        .flat_map(|mut r| {
            r.push(b'\n');
            r
        })
        .collect();
    let file = c.file.with_extension("data-export.ndjson");
    std::fs::write(&file, lines).unwrap();
    let (got, features) = summarize(&file, &["--count-from", "summaries"]);
    assert_eq!(
        got.counters, expected.counters,
        "{sdk:?}: Data Export style"
    );
    assert_eq!(features, c.count("feature"));
    let (doubled, _) = summarize(&file, &[]);
    assert_eq!(
        doubled.evaluations(),
        expected.evaluations() + c.count("feature"),
        "one event per record under payload counts tracked evaluations twice"
    );
    // Chained roll-ups: flagtally's own 10 s summaries, re-read into hour windows,
    // stay exact — the summary stream alone under the default, or every output (its
    // feature events beside its summaries) counted from summaries.
    let (_, _, first) = summarize_output(&c.file, &["--window", "10s"]);
    let summaries: String = first
        .lines()
        .filter(|l| l.contains(r#""kind":"summary""#))
        .map(|l| format!("{l}\n"))
        .collect();
    let chained = c.file.with_extension("chained.ndjson");
    for (lines, args) in [
        (summaries, &["--window", "1h"][..]),
        (first, &["--window", "1h", "--count-from", "summaries"][..]),
    ] {
        std::fs::write(&chained, lines).unwrap();
        let (got, _) = summarize(&chained, args);
        assert_eq!(got.counters, expected.counters, "{sdk:?}: chained {args:?}");
    }
}

#[test]
fn python_sdk_payloads_are_counted_once_by_summarize() {
    check_summarize(Sdk::Python);
}

#[test]
fn node_sdk_payloads_are_counted_once_by_summarize() {
    check_summarize(Sdk::Node);
}

const WINDOW: &str = r#"size = "10s"
lateness = "2s"
idle_timeout = "2s""#;

/// `run` on Kafka over `records`, under `input_section`; checks the summaries against
/// the SDK's own and the feature events one to one. Returns the process's log.
fn check_run(sdk: Sdk, records: &[Vec<u8>], input_section: &str) -> String {
    let c = capture(sdk);
    let expected = c.sdk_tally();
    let broker = broker();
    let t = Topics::create(broker, 2);
    produce(broker, &t.input, 2, records);
    let config = format!(
        "{}\n{}",
        t.config_with_threads(broker, WINDOW, 1),
        input_section.replace("INPUT", &t.input)
    );
    let f = Flagtally::start(&config, &t.group);
    let total = expected.evaluations();
    let mut recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(120),
        summed_counters(total),
    );
    // Past the expected total, a quiet period: a double count would show here (every
    // window closes within the idle timeout of the last record).
    recs.extend(read_until(
        broker,
        &t.summary,
        Duration::from_secs(6),
        |_| false,
    ));
    let got = per_key(window_tally(dedupe(&recs).values()));
    assert_eq!(got, expected.counters, "{sdk:?}: counters on Kafka");
    let features = read_until(
        broker,
        &t.feature,
        Duration::from_secs(60),
        distinct_ids(c.count("feature")),
    );
    assert_eq!(dedupe(&features).len() as u64, c.count("feature"));
    let log = f.log_text();
    assert!(f.stop(Duration::from_secs(25)).success(), "{log}");
    log
}

#[test]
fn sdk_payloads_are_counted_once_on_kafka() {
    let py = capture(Sdk::Python);
    let records: Vec<Vec<u8>> = py.payloads.iter().map(|p| p.clone().into_bytes()).collect();
    let log = check_run(Sdk::Python, &records, "");
    assert!(!log.contains("count_from"), "no mismatch warning: {log}");
    let node = capture(Sdk::Node);
    let records: Vec<Vec<u8>> = node
        .payloads
        .iter()
        .map(|p| p.clone().into_bytes())
        .collect();
    check_run(Sdk::Node, &records, "");
}

#[test]
fn a_data_export_topic_counts_from_its_summaries_on_kafka() {
    let c = capture(Sdk::Python);
    let log = check_run(
        Sdk::Python,
        &c.data_export_records(),
        "[input.topics.INPUT]\ncount_from = \"summaries\"",
    );
    assert!(!log.contains("count_from"), "no mismatch warning: {log}");
}

/// The misconfiguration is visible: a Data Export style topic left at the default
/// counts tracked evaluations twice, and says so once, naming the setting.
#[test]
fn a_summarizing_topic_counted_per_payload_is_reported() {
    let c = capture(Sdk::Node);
    let broker = broker();
    let t = Topics::create(broker, 1);
    produce(broker, &t.input, 1, &c.data_export_records());
    let f = Flagtally::start(&t.config_with_threads(broker, WINDOW, 1), &t.group);
    f.wait_log(
        "counted from its evaluations and from summaries",
        1,
        Duration::from_secs(60),
    );
    let log = f.log_text();
    assert!(log.contains("count_from = \"summaries\""), "{log}");
    assert_eq!(
        log.matches("counted from its evaluations and from summaries")
            .count(),
        1,
        "one warning line"
    );
    assert!(f.stop(Duration::from_secs(25)).success());
}
