//! The collector (`[collector]`): the SDKs' event posts, taken unchanged, written to the
//! input topic and acknowledged only then.
//!
//! - LaunchDarkly's real Node and Python server SDKs post through it (its test script's capture
//!   server passes each request on and keeps what the collector accepted): `flagtally
//!   run` counts every evaluation once, equal to the SDK's own summaries, with its
//!   feature events one to one and the key's environment on every output.
//! - A payload retried with the same `X-LaunchDarkly-Payload-ID` is written once; gzip
//!   bodies are inflated; an unknown key is 401, a body over the limit (inflated too)
//!   413, another encoding 415, a body that is not the endpoint's JSON 400, a key over
//!   its rate 429.
//! - `flagtally collect` alone, with no broker to write to: 503 with `Retry-After`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use common::*;
use flagtally::generate::Tally;
use serde_json::Value;

const WINDOW: &str = "size = \"10s\"\nlateness = \"2s\"\nidle_timeout = \"2s\"";
const SDK_KEY: &str = "sdk-flagtally-test";

fn collector_section(port: u16, extra: &str) -> String {
    format!(
        "\n[collector]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n[[collector.keys]]\nkey = \"{SDK_KEY}\"\nenvironment = \"production\"\n\n[[collector.keys]]\nkey = \"fb-secret\"\nenvironment = \"featbit-env\"\n"
    )
}

fn wait_listening(port: u16, f: &Flagtally) {
    assert!(
        eventually(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "the collector never listened:\n{}",
        f.log_text()
    );
}

/// POSTs `body` to the collector; returns the status and the `Retry-After` header.
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut req = agent.post(&format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send(body).unwrap();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), retry)
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

#[test]
fn the_node_sdk_posts_through_the_collector_and_every_evaluation_counts_once() {
    through_the_collector(Sdk::Node);
}

#[test]
fn the_python_sdk_posts_through_the_collector_and_every_evaluation_counts_once() {
    through_the_collector(Sdk::Python);
}

#[derive(Clone, Copy, Debug)]
enum Sdk {
    Node,
    Python,
}

/// The SDK's test script (`tests/sdk/`), posting through the collector at `port`,
/// its accepted bodies kept in `out`.
fn sdk_command(sdk: Sdk, port: u16, out: &std::path::Path) -> Command {
    let (python, node_modules) = ld_sdks();
    let mut cmd = match sdk {
        Sdk::Node => {
            let mut c = Command::new("node");
            c.arg(repo().join("tests/sdk/ld_node_events.mjs"))
                .env("FLAGTALLY_TEST_LD_NODE_MODULES", node_modules);
            c
        }
        Sdk::Python => {
            let mut c = Command::new(python);
            c.arg(repo().join("tests/sdk/ld_python_events.py"));
            c
        }
    };
    cmd.arg("--out")
        .arg(out)
        .args(["--evaluations", "3000", "--flush-every", "500"])
        .args(["--forward", &format!("http://127.0.0.1:{port}")]);
    cmd
}

fn through_the_collector(sdk: Sdk) {
    let broker = broker();
    let t = Topics::create(broker, 2);
    let port = free_port();
    let config = t.config_with_threads(broker, WINDOW, 1) + &collector_section(port, "");
    let f = Flagtally::start(&config, &t.group);
    wait_listening(port, &f);

    let out = std::env::temp_dir().join(format!("flagtally-collector-{sdk:?}-{}.ndjson", t.group));
    let stats = sdk_stats(sdk, sdk_command(sdk, port, &out).output().unwrap(), &f);
    assert_eq!(
        stats["forwarded"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["202".to_owned()]),
        "every post accepted: {stats}"
    );
    let recs = counted_once(broker, &t, &out);
    for r in &recs {
        assert_eq!(
            r.header("flagtally-env"),
            Some("production"),
            "the key's environment"
        );
    }
    // The raw payloads on the input topic carry the collector's headers.
    let input = read_until(broker, &t.input, Duration::from_secs(10), |_| false);
    assert!(!input.is_empty());
    for r in &input {
        assert_eq!(r.header("flagtally-env"), Some("production"));
        assert!(
            r.header("flagtally-endpoint")
                .is_some_and(|e| e.starts_with("ld-"))
        );
        let agent = r.header("flagtally-sdk").unwrap_or_default();
        let name = match sdk {
            Sdk::Node => "Node",
            Sdk::Python => "Python",
        };
        assert!(agent.contains(name), "{agent}");
    }
    assert!(f.stop(Duration::from_secs(25)).success());
    let _ = std::fs::remove_file(&out);
}

/// The counts an SDK test script printed; panics with its output and flagtally's log
/// when it failed.
fn sdk_stats(sdk: Sdk, run: std::process::Output, f: &Flagtally) -> Value {
    let stats = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "the {sdk:?} SDK run failed:\n{stats}\n{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        f.log_text()
    );
    serde_json::from_str(stats.trim()).unwrap()
}

/// Checks flagtally's outputs against the SDK's payloads in `out` (one JSON array per
/// line): summary counters equal the SDK's own summaries, once; feature events one to
/// one. Returns the summary and feature records read.
fn counted_once(broker: &str, t: &Topics, out: &std::path::Path) -> Vec<Rec> {
    // The oracle: the SDK's own summaries in what it posted.
    let mut expected = Tally::default();
    let mut features = 0;
    for line in std::fs::read_to_string(out).unwrap().lines() {
        for e in serde_json::from_str::<Value>(line)
            .unwrap()
            .as_array()
            .unwrap()
        {
            expected.add_summary_json(&e.to_string()).unwrap();
            features += u64::from(e["kind"] == "feature");
        }
    }
    let total = expected.evaluations();
    assert!(
        total >= 3000 && features > 0,
        "{total} evaluations, {features} feature events"
    );
    let mut recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(120),
        summed_counters(total),
    );
    recs.extend(read_until(
        broker,
        &t.summary,
        Duration::from_secs(6),
        |_| false,
    ));
    let got = per_key(window_tally(dedupe(&recs).values()));
    assert_eq!(
        got, expected.counters,
        "counters on Kafka equal the SDK's own"
    );
    let feature_recs = read_until(
        broker,
        &t.feature,
        Duration::from_secs(60),
        distinct_ids(features),
    );
    assert_eq!(dedupe(&feature_recs).len() as u64, features);
    recs.extend(feature_recs);
    recs
}

/// The broker killed (-9) while LaunchDarkly's Node SDK posts, and started again a few
/// seconds later. Posts during the outage hear 503 at `produce_timeout` (2 s, under
/// the SDK's own 5 s request timeout); the SDK retries each once after a second, and
/// the retry waits for the first attempt's write, which goes on in the background
/// (Kafka may have it already). After recovery every evaluation the SDK made is
/// counted once: no payload is written twice, none is lost.
#[test]
fn a_broker_killed_while_the_sdk_posts_loses_and_doubles_nothing() {
    let name = unique("collector-outage");
    let broker = start_broker(&name);
    let _reset = ResetOnDrop(name.clone());
    let t = Topics::create(&broker, 2);
    let port = free_port();
    let config = t.config_with_threads(&broker, WINDOW, 1)
        + &collector_section(port, "produce_timeout = \"2s\"\n");
    let f = Flagtally::start(&config, &t.group);
    wait_listening(port, &f);
    f.wait_log("checkpoints loaded", 1, Duration::from_secs(60));

    let out = std::env::temp_dir().join(format!("flagtally-collector-outage-{}.ndjson", t.group));
    broker_do("kill", &name);
    let sdk = sdk_command(Sdk::Node, port, &out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    start_broker(&name);
    let stats = sdk_stats(Sdk::Node, sdk.wait_with_output().unwrap(), &f);
    let answers = stats["forwarded"].as_object().unwrap();
    assert!(
        answers.contains_key("503") && answers.contains_key("202"),
        "posts refused during the outage, accepted after: {stats}"
    );
    counted_once(&broker, &t, &out);
    // Each payload once on the input topic.
    let input = read_until(&broker, &t.input, Duration::from_secs(10), |_| false);
    let mut ids = std::collections::BTreeSet::new();
    for r in &input {
        if let Some(id) = r.header("flagtally-payload-id") {
            assert!(ids.insert(id.to_owned()), "payload {id} written twice");
        }
    }
    assert!(f.stop(Duration::from_secs(25)).success());
    let _ = std::fs::remove_file(&out);
}

/// LaunchDarkly's SDK test clients: `(venv python, node_modules)` (`scripts/infra.sh sdks`).
fn ld_sdks() -> (String, String) {
    if let (Ok(py), Ok(node)) = (
        std::env::var("FLAGTALLY_TEST_LD_PYTHON"),
        std::env::var("FLAGTALLY_TEST_LD_NODE_MODULES"),
    ) {
        return (py, node);
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/infra.sh"))
        .arg("sdks")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let var = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap()
            .to_owned()
    };
    (
        var("FLAGTALLY_TEST_LD_PYTHON"),
        var("FLAGTALLY_TEST_LD_NODE_MODULES"),
    )
}

#[test]
fn retries_limits_and_refusals_answer_as_an_sdk_expects() {
    let broker = broker();
    let t = Topics::create(broker, 1);
    let port = free_port();
    let config = t.config_with_threads(broker, WINDOW, 1)
        + &collector_section(port, "max_body_bytes = \"4KiB\"\nrate_limit = 50\n");
    let f = Flagtally::start(&config, &t.group);
    wait_listening(port, &f);
    let auth = ("Authorization", SDK_KEY);
    let payload =
        br#"[{"kind":"index","creationDate":1767225600000,"context":{"kind":"user","key":"u-1"}}]"#;

    // The same payload id twice (an SDK's retry): one record.
    let retry = [
        auth,
        (
            "X-LaunchDarkly-Payload-ID",
            "8c8f6b5e-0000-4000-8000-000000000001",
        ),
        ("X-LaunchDarkly-Event-Schema", "4"),
    ];
    assert_eq!(post(port, "/bulk", &retry, payload).0, 202);
    assert_eq!(post(port, "/bulk", &retry, payload).0, 202);
    // gzip, inflated before it is written.
    let zipped = gzip(payload);
    assert_eq!(
        post(
            port,
            "/bulk",
            &[auth, ("Content-Encoding", "gzip")],
            &zipped
        )
        .0,
        202
    );
    // FeatBit's insight endpoint, with its environment secret.
    let featbit = br#"[{"user":{"keyId":"fb-user","name":"F"},"variations":[]}]"#;
    assert_eq!(
        post(
            port,
            "/api/public/insight/track",
            &[("Authorization", "fb-secret")],
            featbit
        )
        .0,
        200,
        "FeatBit's SDKs hear 200, as from FeatBit"
    );

    // Refusals.
    assert_eq!(post(port, "/bulk", &[], payload).0, 401, "no key");
    assert_eq!(
        post(port, "/bulk", &[("Authorization", "sdk-unknown")], payload).0,
        401
    );
    let big = format!("[{}]", vec![r#"{"kind":"index"}"#; 400].join(","));
    assert_eq!(
        post(port, "/bulk", &[auth], big.as_bytes()).0,
        413,
        "over max_body_bytes"
    );
    let bomb = gzip(&vec![b' '; 1 << 20]);
    assert_eq!(
        post(port, "/bulk", &[auth, ("Content-Encoding", "gzip")], &bomb).0,
        413,
        "over the limit once inflated"
    );
    assert_eq!(
        post(port, "/bulk", &[auth, ("Content-Encoding", "br")], payload).0,
        415
    );
    assert_eq!(
        post(port, "/bulk", &[auth], b"{\"not\":\"an array\"}").0,
        400
    );
    let mut limited = 0;
    for _ in 0..200 {
        let (status, retry_after) =
            post(port, "/diagnostic", &[auth], b"{\"kind\":\"diagnostic\"}");
        if status == 429 {
            limited += 1;
            assert_eq!(retry_after.as_deref(), Some("1"));
        }
    }
    assert!(limited > 0, "200 requests at once pass a rate of 50/s");

    // On the input topic: the retried payload once, the gzip one inflated, FeatBit's.
    let input = read_until(broker, &t.input, Duration::from_secs(15), |_| false);
    let values: Vec<&[u8]> = input.iter().map(|r| r.value.as_slice()).collect();
    assert_eq!(
        values,
        vec![&payload[..], &payload[..], &featbit[..]],
        "{input:?}"
    );
    assert_eq!(
        input[0].header("flagtally-payload-id"),
        Some("8c8f6b5e-0000-4000-8000-000000000001")
    );
    assert_eq!(input[0].header("flagtally-ld-event-schema"), Some("4"));
    assert_eq!(
        input[0].key.as_deref(),
        Some(&b"u-1"[..]),
        "keyed by context key"
    );
    assert_eq!(input[2].header("flagtally-env"), Some("featbit-env"));
    assert_eq!(input[2].key.as_deref(), Some(&b"fb-user"[..]));
    assert!(f.stop(Duration::from_secs(25)).success());
}

/// `flagtally collect` alone, its broker unreachable: the SDK hears 503 with
/// `Retry-After` within `produce_timeout`, and SIGTERM ends it with exit 0.
#[test]
fn collect_alone_answers_503_when_kafka_does_not_acknowledge() {
    let port = free_port();
    let dir = std::env::temp_dir().join("flagtally-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", unique("collect")));
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:{}\"\ninput_topics = [\"in\"]\n[output]\ndead_letter_topic = \"d\"\n[output.topics]\nsummary = \"s\"\n[admin]\nlisten = \"off\"\n{}",
            free_port(),
            collector_section(port, "produce_timeout = \"2s\"\n")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flagtally"))
        .args(["collect", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let (status, retry_after) = post(port, "/bulk", &[("Authorization", SDK_KEY)], b"[]");
    assert_eq!(status, 503);
    assert!(retry_after.is_some());
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let code = child.wait().unwrap();
    assert!(code.success(), "{code:?}");
}

/// go-feature-flag's own client program (`scripts/infra.sh goff`).
fn goff_client() -> String {
    if let Ok(c) = std::env::var("FLAGTALLY_TEST_GOFF_CLIENT") {
        return c;
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/infra.sh"))
        .arg("goff")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .strip_prefix("export FLAGTALLY_TEST_GOFF_CLIENT=")
        .unwrap()
        .to_owned()
}

/// Runs go-feature-flag's client with `args`; its own count of events per flag.
fn run_goff(args: &[&str]) -> BTreeMap<String, u64> {
    let out = Command::new(goff_client())
        .args(["--evaluations", "3000", "--seed", "7"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "goff-client: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(text.trim()).unwrap();
    serde_json::from_value(v["per_flag"].clone()).unwrap()
}

/// The evaluations flagtally's summaries count per flag, once `total` are in.
fn summaries_per_flag(t: &Topics, total: u64) -> BTreeMap<String, u64> {
    let broker = broker();
    let mut recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(120),
        summed_counters(total),
    );
    recs.extend(read_until(
        broker,
        &t.summary,
        Duration::from_secs(6),
        |_| false,
    ));
    let mut per_flag = BTreeMap::new();
    for ((flag, _, _), n) in per_key(window_tally(dedupe(&recs).values())) {
        *per_flag.entry(flag).or_insert(0) += n;
    }
    per_flag
}

/// go-feature-flag itself, its webhook exporter posting to the collector (signed, with
/// a key): every event it exported counted once, per flag.
#[test]
fn go_feature_flags_webhook_exporter_through_the_collector() {
    let broker = broker();
    let t = Topics::create(broker, 2);
    let port = free_port();
    let config = t.config_with_threads(broker, WINDOW, 1)
        + &collector_section(port, "webhook_secret = \"hook-secret\"\n")
        + "\n[[collector.keys]]\nkey = \"goff-key\"\nenvironment = \"goff-env\"\n";
    let f = Flagtally::start(&config, &t.group);
    wait_listening(port, &f);
    let expected = run_goff(&[
        "--webhook",
        &format!("http://127.0.0.1:{port}/goff/webhook"),
        "--secret",
        "hook-secret",
        "--auth",
        "goff-key",
    ]);
    let total: u64 = expected.values().sum();
    assert!(total > 0);
    assert_eq!(summaries_per_flag(&t, total), expected, "{}", f.log_text());
    // A body signed with another secret is refused.
    let (status, _) = post(
        port,
        "/goff/webhook",
        &[
            ("Authorization", "Bearer goff-key"),
            ("X-Hub-Signature-256", "sha256=00"),
        ],
        br#"{"meta":{},"events":[]}"#,
    );
    assert_eq!(status, 401);
    assert!(f.stop(Duration::from_secs(25)).success());
}

/// go-feature-flag's Kafka exporter writing straight to the input topic (one event per
/// record, `creationDate` in seconds): every event counted once, per flag.
#[test]
fn go_feature_flags_kafka_exporter_straight_to_the_input_topic() {
    let broker = broker();
    let t = Topics::create(broker, 2);
    let f = Flagtally::start(&t.config_with_threads(broker, WINDOW, 1), &t.group);
    let expected = run_goff(&["--kafka-brokers", broker, "--kafka-topic", &t.input]);
    let total: u64 = expected.values().sum();
    assert!(total > 0);
    assert_eq!(summaries_per_flag(&t, total), expected, "{}", f.log_text());
    assert!(f.stop(Duration::from_secs(25)).success());
}

/// FeatBit's Node and Python server SDKs (`scripts/infra.sh sdks`), posting their insight
/// events through the collector: every evaluation they report counted once, per flag.
#[test]
fn featbits_sdks_post_through_the_collector_and_every_evaluation_counts_once() {
    let (python, _) = ld_sdks();
    let node_modules = std::env::var("FLAGTALLY_TEST_FEATBIT_NODE_MODULES").unwrap_or_else(|_| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/infra.sh"))
            .arg("sdks")
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("export FLAGTALLY_TEST_FEATBIT_NODE_MODULES="))
            .unwrap()
            .to_owned()
    });
    for sdk in ["node", "python"] {
        let broker = broker();
        let t = Topics::create(broker, 2);
        let port = free_port();
        let config = t.config_with_threads(broker, WINDOW, 1) + &collector_section(port, "");
        let f = Flagtally::start(&config, &t.group);
        wait_listening(port, &f);
        let out = std::env::temp_dir().join(format!("flagtally-featbit-{sdk}-{}.ndjson", t.group));
        let mut cmd = if sdk == "node" {
            let mut c = Command::new("node");
            c.arg(repo().join("tests/sdk/featbit_node_events.mjs"))
                .env("FLAGTALLY_TEST_FEATBIT_NODE_MODULES", &node_modules);
            c
        } else {
            let mut c = Command::new(&python);
            c.arg(repo().join("tests/sdk/featbit_python_events.py"));
            c
        };
        let run = cmd
            .arg("--out")
            .arg(&out)
            .args([
                "--sdk-key",
                "fb-secret",
                "--evaluations",
                "2000",
                "--status",
                "200",
            ])
            .args(["--forward", &format!("http://127.0.0.1:{port}")])
            .output()
            .unwrap();
        let stats = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(
            run.status.success(),
            "FeatBit {sdk} SDK run failed:\n{stats}\n{}\n{}",
            String::from_utf8_lossy(&run.stderr),
            f.log_text()
        );
        let stats: Value = serde_json::from_str(stats.trim()).unwrap();
        let expected: BTreeMap<String, u64> =
            serde_json::from_value(stats["per_flag"].clone()).unwrap();
        let total: u64 = expected.values().sum();
        assert_eq!(total, 2000, "{stats}");
        assert_eq!(
            summaries_per_flag(&t, total),
            expected,
            "FeatBit {sdk}: {}",
            f.log_text()
        );
        let input = read_until(broker, &t.input, Duration::from_secs(5), |_| false);
        assert!(
            input
                .iter()
                .all(|r| r.header("flagtally-env") == Some("featbit-env"))
        );
        assert!(f.stop(Duration::from_secs(25)).success());
        let _ = std::fs::remove_file(&out);
    }
}

/// TLS on the listener (the test broker's certificate for 127.0.0.1, made by
/// infra.sh): a client trusting its CA is served; plain HTTP and a client that does not
/// trust it are not.
#[test]
fn the_listener_speaks_tls_with_the_given_certificate() {
    let tls = tls_broker();
    let broker = broker();
    let t = Topics::create(broker, 1);
    let port = free_port();
    let keys = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        tls.dir.join("broker.crt").display(),
        tls.dir.join("broker.key").display()
    );
    let config = t.config_with_threads(broker, WINDOW, 1) + &collector_section(port, &keys);
    let f = Flagtally::start(&config, &t.group);
    wait_listening(port, &f);
    let agent = |ca: &str| -> ureq::Agent {
        let pem = std::fs::read(tls.dir.join(ca)).unwrap();
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            )
            .build()
            .into()
    };
    let payload = br#"[{"kind":"index","creationDate":1767225600000,"context":{"kind":"user","key":"u-tls"}}]"#;
    let url = format!("https://127.0.0.1:{port}/bulk");
    let resp = agent("ca.pem")
        .post(&url)
        .header("Authorization", SDK_KEY)
        .send(&payload[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let untrusted = agent("other-ca.pem")
        .post(&url)
        .header("Authorization", SDK_KEY)
        .send(&payload[..]);
    assert!(
        untrusted.is_err(),
        "a client that does not trust the CA is refused"
    );
    let plain =
        std::panic::catch_unwind(|| post(port, "/bulk", &[("Authorization", SDK_KEY)], payload));
    assert!(
        plain.is_err() || plain.is_ok_and(|(s, _)| s != 202),
        "plain HTTP is not served"
    );
    let input = read_until(broker, &t.input, Duration::from_secs(10), |_| false);
    assert_eq!(input.len(), 1, "{input:?}");
    let log = f.log_text();
    assert!(f.stop(Duration::from_secs(25)).success(), "{log}");
}
