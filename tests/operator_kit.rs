//! The operator's kit in docs/ops/ (issue 26, item 7): the Prometheus alert rules have
//! the shape Prometheus loads (groups of rules, each with a `for`, a severity, a summary
//! and a description), the Grafana dashboard the shape Grafana imports (a datasource
//! input, an `instance` variable, panels with targets), and every metric either names
//! is exported by a running daemon at `/metrics`, with the labels it filters and groups
//! by. Prometheus's own checks (promtool check and test rules) are
//! `scripts/check-ops.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::Duration;

use common::*;
use flagtally::generate::{GenConfig, GenDialect, Generator};
use flagtally::metrics::Metrics;

const RULES: &str = "docs/ops/alerts.yml";
const DASHBOARD: &str = "docs/ops/grafana-dashboard.json";

/// Labels Prometheus adds to every scraped series.
const SCRAPE_LABELS: &[&str] = &["instance", "job"];

/// Families a run without faults cannot show: prometheus_client prints a labelled
/// family (its `# HELP` and `# TYPE` lines included) only once it has a child, and these
/// get theirs from a panic in a sink or a record batch the Kafka client cannot read.
/// Their names and labels come from the library's registry instead.
const FAULT_ONLY: &[&str] = &[
    "flagtally_sink_panics_total",
    "flagtally_unreadable_batches_total",
];

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A Prometheus duration: one or more number-unit pairs (`30s`, `1h30m`).
fn is_duration(s: &str) -> bool {
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    !s.is_empty()
}

/// The alert rules' expressions, as ("alert NAME", expr); checks the file's shape on
/// the way.
fn rule_exprs() -> Vec<(String, String)> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(RULES)).unwrap();
    let groups = doc["groups"]
        .as_sequence()
        .expect("alerts.yml: `groups` is a list");
    assert!(!groups.is_empty(), "alerts.yml has no group");
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for group in groups {
        let group_name = group["name"].as_str().expect("every group has a name");
        let rules = group["rules"]
            .as_sequence()
            .unwrap_or_else(|| panic!("group {group_name}: `rules` is a list"));
        assert!(!rules.is_empty(), "group {group_name} has no rule");
        for rule in rules {
            let text = |key: &str| rule[key].as_str().map(str::trim).unwrap_or_default();
            let alert = text("alert");
            assert!(
                !alert.is_empty(),
                "a rule of {group_name} has no alert name"
            );
            assert!(names.insert(alert.to_owned()), "alert {alert} twice");
            let expr = text("expr");
            assert!(!expr.is_empty(), "alert {alert} has no expr");
            assert!(
                is_duration(text("for")),
                "alert {alert}: `for` is {:?}, not a duration",
                rule["for"]
            );
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "alert {alert}: labels.severity is {severity:?}"
            );
            for key in ["summary", "description"] {
                let a = rule["annotations"][key].as_str().unwrap_or_default();
                assert!(
                    !a.trim().is_empty(),
                    "alert {alert} has no annotations.{key}"
                );
            }
            out.push((format!("alert {alert}"), expr.to_owned()));
        }
    }
    out
}

/// The dashboard's expressions (panel targets and template variable queries), as
/// ("panel TITLE (REFID)", expr); checks the file's shape on the way.
fn dashboard_exprs() -> Vec<(String, String)> {
    let d: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let inputs = d["__inputs"].as_array().expect("__inputs: a list");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS datasource input"
    );
    assert!(d["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let variables = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "instance"),
        "no `instance` variable"
    );
    let datasource = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let mut out = Vec::new();
    for v in variables {
        let name = v["name"].as_str().unwrap();
        if v["type"] == "query" {
            assert_eq!(v["datasource"], datasource, "variable {name}");
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap();
            out.push((format!("variable {name}"), q.to_owned()));
        }
    }
    // Rows hold their panels when collapsed: every panel, at any depth.
    let mut panels: Vec<&serde_json::Value> = d["panels"]
        .as_array()
        .expect("panels: a list")
        .iter()
        .collect();
    let mut i = 0;
    while i < panels.len() {
        let p: &serde_json::Value = panels[i];
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        i += 1;
    }
    let mut ids = BTreeSet::new();
    let mut with_targets = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel id twice: {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(
            g["h"].as_u64().unwrap() > 0 && g["y"].is_u64() && w > 0 && x + w <= 24,
            "panel {title}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"], datasource, "panel {title}");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}"));
        assert!(!targets.is_empty(), "panel {title} has no target");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            let ref_id = t["refId"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty() && !ref_id.is_empty(),
                "panel {title}: a target without expr or refId"
            );
            assert_eq!(t["datasource"], datasource, "panel {title} ({ref_id})");
            // Every selector follows the instance picker.
            for r in references(expr) {
                assert!(
                    r.labels.iter().any(|l| l == "instance"),
                    "panel {title} ({ref_id}): {} not filtered by instance",
                    r.name
                );
            }
            out.push((format!("panel {title} ({ref_id})"), expr.to_owned()));
        }
        with_targets += 1;
    }
    assert!(
        with_targets >= 20,
        "only {with_targets} panels with targets"
    );
    out
}

/// A metric an expression names, with the label names its selector uses.
#[derive(Debug)]
struct Reference {
    name: String,
    labels: Vec<String>,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// Where a selector's `{…}` body ends (its `}`, outside quoted values).
fn selector_end(body: &str) -> usize {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return i,
            _ => {}
        }
    }
    body.len()
}

/// The label names of a selector's or a sample's braces (`a="x", b=~"y"`).
fn label_names(inner: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_'))
                .collect();
        if name.is_empty() {
            break;
        }
        names.push(name);
        // The operator, then the quoted value.
        while chars.next_if(|c| *c != '"').is_some() {}
        chars.next();
        let mut escaped = false;
        for c in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                break;
            }
        }
    }
    names
}

/// Every `flagtally_…` metric an expression names.
fn references(expr: &str) -> Vec<Reference> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    for (start, _) in expr.match_indices("flagtally_") {
        if start > 0 && is_word(bytes[start - 1]) {
            continue;
        }
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        let labels = match expr[end..].trim_start().strip_prefix('{') {
            Some(body) => label_names(&body[..selector_end(body)]),
            None => Vec::new(),
        };
        out.push(Reference {
            name: expr[start..end].to_owned(),
            labels,
        });
    }
    out
}

/// The label names of an expression's `by`, `without`, `on`, `ignoring` and
/// `group_left`/`group_right` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    for keyword in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        for (i, _) in expr.match_indices(keyword) {
            let after = &expr[i + keyword.len()..];
            if (i > 0 && is_word(bytes[i - 1])) || after.bytes().next().is_some_and(is_word) {
                continue;
            }
            let Some(list) = after.trim_start().strip_prefix('(') else {
                continue;
            };
            let list = &list[..list.find(')').expect("a closed label list")];
            out.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    out
}

/// The sample names of a text exposition, each with the label names its samples carry.
fn samples(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_owned()).or_default();
        if let Some(body) = line[end..].strip_prefix('{') {
            labels.extend(label_names(&body[..selector_end(body)]));
        }
    }
    out
}

/// What in `exprs` the exposition does not back: unknown metric names, and label
/// names no named metric carries.
fn problems(
    exprs: &[(String, String)],
    exported: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (place, expr) in exprs {
        let refs = references(expr);
        let mut carried: BTreeSet<&str> = SCRAPE_LABELS.iter().copied().collect();
        for r in &refs {
            let Some(labels) = exported.get(&r.name) else {
                out.push(format!("{place}: {} is not exported", r.name));
                continue;
            };
            carried.extend(labels.iter().map(String::as_str));
            for l in &r.labels {
                if !SCRAPE_LABELS.contains(&l.as_str()) && !labels.contains(l) {
                    out.push(format!("{place}: {} has no label {l}", r.name));
                }
            }
        }
        if refs.is_empty() {
            continue;
        }
        for l in grouping_labels(expr) {
            if !carried.contains(l.as_str()) {
                out.push(format!(
                    "{place}: no metric of the expression has label {l}"
                ));
            }
        }
    }
    out
}

/// The library's rendering of the [`FAULT_ONLY`] families, each given one child with
/// the labels the code gives it.
fn fault_only_samples() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new();
    m.sink("s").panics.inc();
    m.unreadable_batch("t", "skip");
    let mut s = samples(&m.render());
    s.retain(|name, _| FAULT_ONLY.contains(&name.as_str()));
    assert_eq!(s.len(), FAULT_ONLY.len(), "{s:?}");
    s
}

/// A webhook destination on 127.0.0.1 that answers 503 to the first two requests (the
/// sink retries) and 400 to every later one (the sink bisects the batch and sets each
/// record aside as refused for good).
fn refusing_destination() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut seen = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if read_http_request(&stream).is_none() {
                continue;
            }
            seen += 1;
            let status = if seen <= 2 {
                "503 Service Unavailable"
            } else {
                "400 Bad Request"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    addr
}

#[test]
fn the_promql_scanner_finds_names_and_labels() {
    let expr = r#"sum by (job, sink) (increase(flagtally_sink_errors_total{instance=~"$instance", sink!="a}b"}[10m])) > 0 and on (job) flagtally_up_x unless my_flagtally_y"#;
    let refs = references(expr);
    let names: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["flagtally_sink_errors_total", "flagtally_up_x"]);
    assert_eq!(refs[0].labels, ["instance", "sink"]);
    assert!(refs[1].labels.is_empty());
    assert_eq!(grouping_labels(expr), ["job", "sink", "job"]);
    let s = samples(
        "# TYPE flagtally_a counter\nflagtally_a_total{x=\"1,2\",y=\"q\\\"}\"} 3\nflagtally_b 1\n# EOF\n",
    );
    assert_eq!(
        s["flagtally_a_total"],
        BTreeSet::from(["x".to_owned(), "y".to_owned()])
    );
    assert!(s["flagtally_b"].is_empty());
    assert!(is_duration("1h30m") && is_duration("0m") && !is_duration("10") && !is_duration(""));
}

#[test]
fn the_rules_and_the_dashboard_have_the_shape_prometheus_and_grafana_load() {
    let rules = rule_exprs();
    assert!(rules.len() >= 10, "{rules:?}");
    let dashboard = dashboard_exprs();
    // Each side names metrics, and the scanner finds them.
    for (place, expr) in rules.iter().chain(&dashboard) {
        assert!(
            !references(expr).is_empty() || expr.contains("up{"),
            "{place}: no flagtally metric in {expr}"
        );
    }
}

#[test]
fn every_metric_the_kit_names_is_exported_by_a_running_daemon() {
    let mut exprs = rule_exprs();
    exprs.extend(dashboard_exprs());

    // Records in three dialects with malformed ones among them (decode errors, dead
    // letters), and tracked evaluations whose feature events a webhook sink sends to a
    // destination that refuses them (sink errors, retries, rejected records).
    let broker = broker().to_owned();
    let t = Topics::create(&broker, 2);
    let mut g = Generator::new(GenConfig {
        dialect: GenDialect::Mixed,
        flags: 4,
        malformed_one_in: 20,
        tracked_one_in: 5,
        ..GenConfig::default()
    });
    let records: Vec<Vec<u8>> = (0..400).map(|_| g.next_record()).collect();
    produce(&broker, &t.input, 2, &records);
    let destination = refusing_destination();
    let config = format!(
        r#"{base}
[[sinks]]
name = "hook"
type = "webhook"
topics = ["{feature}"]
url = "http://{destination}/events"
secret = "s3cret"
max_events = 100
batch_timeout = "200ms"
retry_initial = "100ms"
retry_max = "1s"
"#,
        base = t.config_with_threads(&broker, "size = \"10s\"\nidle_timeout = \"1s\"", 1),
        feature = t.feature,
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Flagtally::start_with_env(
        &config,
        &unique("operator-kit"),
        &[("FLAGTALLY__ADMIN__LISTEN", addr.as_str())],
    );

    // Labelled families appear with their first child (consumer lag with librdkafka's
    // statistics, every 5 s): wait until the exposition backs every expression.
    let fault_only = fault_only_samples();
    let mut body = String::new();
    let mut found = Vec::new();
    let backed = eventually(Duration::from_secs(90), || {
        let Some((200, text)) = http_get(&addr, "/metrics") else {
            return false;
        };
        let mut exported = samples(&text);
        for (name, labels) in &fault_only {
            exported
                .entry(name.clone())
                .or_insert_with(|| labels.clone());
        }
        body = text;
        found = problems(&exprs, &exported);
        found.is_empty()
    });
    assert!(
        backed,
        "the kit names what the daemon does not export:\n{}\n\n/metrics:\n{body}\n\nlog:\n{}",
        found.join("\n"),
        d.log_text()
    );
    // The kit covers what the issue asks for.
    let named: BTreeSet<String> = exprs
        .iter()
        .flat_map(|(_, e)| references(e))
        .map(|r| r.name)
        .collect();
    for name in [
        "flagtally_records_in_total",
        "flagtally_events_in_total",
        "flagtally_events_out_total",
        "flagtally_decode_errors_total",
        "flagtally_dead_letters_total",
        "flagtally_consumer_lag",
        "flagtally_commit_duration_seconds_bucket",
        "flagtally_produce_latency_seconds_bucket",
        "flagtally_summary_latency_seconds_bucket",
        "flagtally_open_windows",
        "flagtally_distinct_keys",
        "flagtally_assigned_partitions",
        "flagtally_commits_total",
        "flagtally_sink_records_total",
        "flagtally_sink_errors_total",
        "flagtally_sink_retries_total",
        "flagtally_sink_rejected_total",
        "flagtally_sink_panics_total",
        "flagtally_rewinds_total",
        "flagtally_replayed_records_total",
        "flagtally_config_reloads_total",
        "flagtally_unreadable_batches_total",
        "flagtally_late_events_total",
        "flagtally_future_events_total",
    ] {
        assert!(named.contains(name), "the kit does not use {name}");
    }
}
