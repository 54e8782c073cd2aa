//! The S3 sink against SeaweedFS (`weed server`, started by `scripts/infra.sh s3`, with
//! credentials enforced), fed by the flagtally binary over Apache Kafka.
//! Objects are listed and read back by pyarrow's own S3 client
//! (`tests/python/s3_files.py`). Each test has its own bucket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use flagtally::generate::{GenConfig, Tally};

fn infra(args: &[&str]) -> String {
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/infra.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn endpoint() -> String {
    std::env::var("FLAGTALLY_TEST_S3").unwrap_or_else(|_| {
        infra(&["s3"])
            .trim_start_matches("export FLAGTALLY_TEST_S3=")
            .to_owned()
    })
}

fn s3py(endpoint: &str, bucket: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(infra(&["python"]))
        .arg(repo().join("tests/python/s3_files.py"))
        .args([endpoint, bucket])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if args[0] == "create" {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

fn setup(n: usize) -> (String, Topics, Vec<Vec<u8>>, Tally) {
    sink_case(
        n,
        GenConfig {
            flags: 6,
            tracked_one_in: 10,
            ..GenConfig::default()
        },
    )
}

fn bucket() -> String {
    unique("ft-s3").replace('_', "-").to_ascii_lowercase()
}

fn config(t: &Topics, broker: &str, endpoint: &str, bucket: &str, secret: &str) -> String {
    // One worker: no rebalance replay repeating summaries in the topic (at least once,
    // same ids), which the exact object counts below do not deduplicate.
    let mut cfg = t.config_with_threads(broker, "size = \"10s\"\nidle_timeout = \"1s\"", 1);
    for format in ["parquet", "ndjson"] {
        cfg.push_str(&format!(
            r#"
[[sinks]]
name = "s3-{format}"
type = "s3"
topics = ["{summary}", "{feature}"]
bucket = "{bucket}"
prefix = "flagtally/{format}/"
endpoint = "{endpoint}"
access_key_id = "flagtally"
secret_access_key = "{secret}"
format = "{format}"
batch_size = 2000
batch_timeout = "300ms"
retry_initial = "100ms"
retry_max = "1s"
"#,
            summary = t.summary,
            feature = t.feature,
        ));
    }
    cfg
}

fn done(v: &serde_json::Value, tally: &Tally) -> bool {
    v["parquet_summary_total"].as_u64() >= Some(tally.evaluations())
        && v["ndjson_summary_total"].as_u64() >= Some(tally.evaluations())
        && v["parquet_feature_rows"].as_u64() >= Some(tally.tracked)
}

#[test]
fn objects_hold_exactly_the_outputs() {
    let endpoint = endpoint();
    let bucket = bucket();
    s3py(&endpoint, &bucket, &["create"]);
    let (broker, t, records, tally) = setup(20_000);
    produce(&broker, &t.input, 2, &records);
    let d = Flagtally::start(
        &config(&t, &broker, &endpoint, &bucket, "flagtally-secret"),
        &unique("s3"),
    );
    let read = || s3py(&endpoint, &bucket, &["read", "flagtally/"]);
    assert!(
        eventually(Duration::from_secs(90), || done(&read(), &tally)),
        "{}\n{}",
        read(),
        d.log_text()
    );
    assert!(d.stop(Duration::from_secs(20)).success());
    let v = read();
    assert_eq!(v["parquet_summary_total"], tally.evaluations());
    assert_eq!(v["ndjson_summary_total"], tally.evaluations());
    assert_eq!(v["parquet_feature_rows"], tally.tracked);
    assert_eq!(v["positions"], v["rows_with_position"]);
}

/// SeaweedFS unreachable for 20 s mid-stream (a proxy cuts every connection and refuses
/// new ones): the sink retries, and the final objects are exact.
#[test]
fn an_object_store_outage_loses_and_doubles_nothing() {
    let endpoint = endpoint();
    let bucket = bucket();
    s3py(&endpoint, &bucket, &["create"]);
    let proxy = CutProxy::start(endpoint.trim_start_matches("http://"));
    let (broker, t, records, tally) = setup(20_000);
    let d = Flagtally::start(
        &config(
            &t,
            &broker,
            &format!("http://{}", proxy.addr),
            &bucket,
            "flagtally-secret",
        ),
        &unique("s3out"),
    );
    let (first, rest) = records.split_at(5000);
    produce(&broker, &t.input, 2, first);
    let read = || s3py(&endpoint, &bucket, &["read", "flagtally/"]);
    assert!(eventually(Duration::from_secs(60), || {
        read()["objects"].as_u64() > Some(0)
    }));
    proxy.cut();
    produce(&broker, &t.input, 2, rest);
    std::thread::sleep(Duration::from_secs(20));
    assert!(d.log_text().contains("write failed"), "{}", d.log_text());
    proxy.restore();
    assert!(
        eventually(Duration::from_secs(90), || done(&read(), &tally)),
        "{}\n{}",
        read(),
        d.log_text()
    );
    assert!(d.stop(Duration::from_secs(20)).success());
    let v = read();
    assert_eq!(v["parquet_summary_total"], tally.evaluations());
    assert_eq!(v["ndjson_summary_total"], tally.evaluations());
    assert_eq!(v["parquet_feature_rows"], tally.tracked);
    assert_eq!(v["positions"], v["rows_with_position"]);
}

#[test]
fn wrong_credentials_and_a_missing_bucket_are_reported() {
    let endpoint = endpoint();
    let (broker, t, _, _) = setup(0);
    let admin = format!("127.0.0.1:{}", free_port());
    let bucket = bucket();
    s3py(&endpoint, &bucket, &["create"]);
    let mut cfg = config(&t, &broker, &endpoint, &bucket, "wrong-secret");
    // The second sink: a bucket that does not exist.
    cfg = cfg.replacen(
        &format!("bucket = \"{bucket}\""),
        "bucket = \"no-such-bucket-flagtally\"",
        2,
    );
    let cfg = cfg.replacen(
        "bucket = \"no-such-bucket-flagtally\"",
        &format!("bucket = \"{bucket}\""),
        1,
    );
    let d = Flagtally::start_with_env(
        &cfg,
        &unique("s3bad"),
        &[("FLAGTALLY__ADMIN__LISTEN", &admin)],
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            http_get(&admin, "/readyz").is_some_and(|(s, body)| {
                s == 503 && body.contains("sink s3-") && body.contains("listing s3://")
            })
        }),
        "{:?}\n{}",
        http_get(&admin, "/readyz"),
        d.log_text()
    );
    let log = d.log_text();
    assert!(log.contains("cannot reach the destination"), "{log}");
    assert_eq!(http_get(&admin, "/healthz").unwrap().0, 200);
    assert!(d.stop(Duration::from_secs(20)).success());
}
