//! The file sink: four sinks (NDJSON, CSV, Avro with deflate, Parquet with zstd) over the
//! summary and feature topics, fed by the flagtally binary over Apache Kafka.
//! The files are read back by Python's `csv` module, `fastavro` and `pyarrow`
//! (`tests/python/read_files.py`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use flagtally::generate::{GenConfig, Tally};

fn read_files(dir: &Path) -> serde_json::Value {
    let out = std::process::Command::new(python())
        .arg(repo().join("tests/python/read_files.py"))
        .arg(dir.join("csv"))
        .arg(dir.join("avro"))
        .arg(dir.join("parquet"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Evaluations in the NDJSON summaries.
fn ndjson_total(dir: &Path) -> u64 {
    let mut tally = Tally::default();
    let mut stack = vec![dir.join("ndjson")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ndjson") {
                for line in std::fs::read_to_string(&p).unwrap().lines() {
                    tally.add_summary_json(line).unwrap();
                }
            }
        }
    }
    tally.evaluations()
}

fn config(t: &Topics, broker: &str, dir: &Path) -> String {
    // One worker: a second one joining is a rebalance, whose replay repeats summaries in
    // the topic (at least once, same ids); the exact file counts below are about the
    // formats, not about deduplication.
    let mut cfg = t.config_with_threads(broker, "size = \"10s\"\nidle_timeout = \"1s\"", 1);
    for (format, extra) in [
        ("ndjson", ""),
        ("csv", ""),
        ("avro", "codec = \"deflate\"\n"),
        ("parquet", "codec = \"zstd\"\n"),
    ] {
        cfg.push_str(&format!(
            r#"
[[sinks]]
name = "files-{format}"
type = "file"
topics = ["{summary}", "{feature}"]
path = "{dir}/{format}"
format = "{format}"
batch_size = 2000
batch_timeout = "300ms"
{extra}"#,
            summary = t.summary,
            feature = t.feature,
            dir = dir.display(),
        ));
    }
    cfg
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

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir()
        .join("flagtally-tests")
        .join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn files_hold_exactly_the_outputs() {
    let (broker, t, records, tally) = setup(20_000);
    let dir = temp_dir("files");
    produce(&broker, &t.input, 2, &records);
    let d = Flagtally::start(&config(&t, &broker, &dir), &unique("files"));
    // Each format's sink reads both topics at its own pace: wait until every one has
    // written everything (a stop ends a sink where it is; it reads the rest after a
    // restart), then check that nothing is there twice.
    assert!(
        eventually(Duration::from_secs(90), || {
            let v = read_files(&dir);
            ndjson_total(&dir) >= tally.evaluations()
                && v["csv_summary_total"].as_u64() >= Some(tally.evaluations())
                && v["csv_feature_rows"].as_u64() >= Some(tally.tracked)
                && v["avro_summary_total"].as_u64() >= Some(tally.evaluations())
                && v["avro_feature_ids"].as_u64() >= Some(tally.tracked)
                && v["parquet_summary_total"].as_u64() >= Some(tally.evaluations())
                && v["parquet_feature_rows"].as_u64() >= Some(tally.tracked)
        }),
        "{} of {}: {}\n{}",
        ndjson_total(&dir),
        tally.evaluations(),
        read_files(&dir),
        d.log_text()
    );
    assert!(d.stop(Duration::from_secs(20)).success());
    let v = read_files(&dir);
    assert_eq!(ndjson_total(&dir), tally.evaluations());
    assert_eq!(v["csv_summary_total"], tally.evaluations());
    assert_eq!(v["csv_feature_rows"], tally.tracked);
    assert_eq!(v["avro_summary_total"], tally.evaluations());
    assert_eq!(v["avro_feature_ids"], tally.tracked);
    // Every topic record once: as many distinct positions as records.
    assert_eq!(v["avro_positions"], v["avro_records"]);
    assert_eq!(v["temp_files"], 0);
    // Parquet, read by pyarrow: typed columns, exact counts.
    assert_eq!(v["parquet_summary_total"], tally.evaluations());
    assert_eq!(v["parquet_feature_rows"], tally.tracked);
    let types = &v["parquet_types"];
    assert_eq!(types["count"], "int64");
    assert_eq!(types["creation_date"], "timestamp[ms, tz=UTC]");
    assert_eq!(types["late"], "bool");
    assert_eq!(types["partition"], "int32");
    // Partitioned by kind and event time.
    assert!(
        dir.join("ndjson/kind=summary/dt=2026-01-01/hour=00")
            .is_dir()
    );
    assert!(dir.join("avro/kind=feature/dt=2026-01-01/hour=00").is_dir());
}

#[test]
fn crashes_leave_no_duplicate_records() {
    let (broker, t, records, tally) = setup(20_000);
    let dir = temp_dir("filescrash");
    let cfg = config(&t, &broker, &dir);
    let name = unique("filescrash");
    let producer = {
        let (broker, topic) = (broker.clone(), t.input.clone());
        std::thread::spawn(move || {
            for chunk in records.chunks(1000) {
                produce(&broker, &topic, 2, chunk);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    for i in 0..3 {
        let d = Flagtally::start(&cfg, &format!("{name}-{i}"));
        std::thread::sleep(Duration::from_millis(2500 + 700 * i));
        d.crash();
    }
    producer.join().unwrap();
    let d = Flagtally::start(&cfg, &format!("{name}-final"));
    assert!(
        eventually(Duration::from_secs(90), || {
            let v = read_files(&dir);
            v["avro_summary_total"].as_u64() >= Some(tally.evaluations())
                && v["avro_feature_ids"].as_u64() >= Some(tally.tracked)
        }),
        "{}\n{}",
        read_files(&dir),
        d.log_text()
    );
    assert!(d.stop(Duration::from_secs(20)).success());
    let v = read_files(&dir);
    // Deduplicated by record id (the processor may re-emit identical records after a
    // crash), the counts are exact; and no topic record is in the files twice.
    assert_eq!(v["avro_summary_total"], tally.evaluations());
    assert_eq!(v["avro_feature_ids"], tally.tracked);
    assert_eq!(v["avro_positions"], v["avro_records"]);
    let mut n = 0;
    let topic_records = read_until(&broker, &t.summary, Duration::from_secs(10), |_| false).len()
        + read_until(&broker, &t.feature, Duration::from_secs(10), |_| {
            n += 1;
            false
        })
        .len();
    assert_eq!(v["avro_records"].as_u64().unwrap(), topic_records as u64);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A disk that takes no more: the process's file-size limit is set (with `prlimit`)
/// below one batch file, so every write fails part-way (EFBIG, as ENOSPC would). The
/// daemon keeps running, retries, leaves no temporary file behind, and once the limit
/// is lifted writes every feature event.
///
/// While the limit holds, a batch is written only when it is full (1 000 events, about
/// 300 KB): its timeout (20 s) is far longer than the pipeline takes to fill one, and a
/// batch that failed is retried whole. A short timeout let a slow run write batches
/// small enough to fit under the limit.
#[test]
fn a_full_disk_leaves_no_partial_files_and_recovers() {
    let (broker, t, records, tally) = setup(20_000);
    let dir = temp_dir("fulldisk");
    let mut cfg = t.config(&broker, "size = \"10s\"\nidle_timeout = \"1s\"");
    cfg.push_str(&format!(
        r#"
[[sinks]]
name = "features"
type = "file"
topics = ["{feature}"]
path = "{dir}"
format = "ndjson"
batch_size = 1000
batch_timeout = "20s"
retry_initial = "200ms"
retry_max = "1s"
"#,
        feature = t.feature,
        dir = dir.display(),
    ));
    let mut d = Flagtally::start(&cfg, &unique("fulldisk"));
    let pid = d.pid();
    let prlimit = |size: &str| {
        let status = std::process::Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--fsize={size}"))
            .status()
            .unwrap();
        assert!(status.success(), "prlimit --fsize={size}");
    };
    // 64 KiB: the log stays under it for a while; a batch of 1 000 feature events
    // (about 300 KB) never fits.
    prlimit("65536:unlimited");
    produce(&broker, &t.input, 2, &records);
    d.wait_log("File too large", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    assert!(d.wait(Duration::ZERO).is_none(), "the daemon exited");
    let lines = |dir: &Path| -> std::collections::BTreeSet<String> {
        files_under(dir)
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let partial: Vec<_> = files_under(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(partial.is_empty(), "temporary files left: {partial:?}");
    assert_eq!(lines(&dir).len(), 0, "no batch fits while the disk is full");
    prlimit("unlimited:unlimited");
    assert!(
        eventually(Duration::from_secs(90), || lines(&dir).len() as u64
            >= tally.tracked),
        "{} of {} feature events after the disk has room; log:\n{}",
        lines(&dir).len(),
        tally.tracked,
        d.log_text()
    );
    assert_eq!(lines(&dir).len() as u64, tally.tracked);
    let leftovers: Vec<_> = files_under(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert!(d.stop(Duration::from_secs(30)).success());
}
