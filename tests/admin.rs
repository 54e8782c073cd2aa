//! The admin endpoints over a pipeline run in this process (Apache Kafka): `/readyz`
//! flips to 200 once partitions are assigned and outputs are connected, `/metrics`
//! names every documented metric with the run's numbers, `/healthz` answers 503 once
//! the pipeline drains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use flagtally::admin::{self, Admin};
use flagtally::config::Config;
use flagtally::generate::{GenConfig, GenDialect, Generator};
use flagtally::pipeline::Pipeline;

/// Every metric docs/operations.md documents (Prometheus names, counters with `_total`).
const DOCUMENTED: &[&str] = &[
    "flagtally_records_in_total",
    "flagtally_events_in_total",
    "flagtally_decode_errors_total",
    "flagtally_dead_letters_total",
    "flagtally_events_out_total",
    "flagtally_late_events_total",
    "flagtally_replayed_records_total",
    "flagtally_open_windows",
    "flagtally_distinct_keys",
    "flagtally_assigned_partitions",
    "flagtally_consumer_lag",
    "flagtally_commit_duration_seconds",
    "flagtally_produce_latency_seconds",
    "flagtally_commits_total",
    "flagtally_commit_failures_total",
    "flagtally_ready",
    "flagtally_rewinds_total",
    "flagtally_sink_errors_total",
    "flagtally_sink_retries_total",
    "flagtally_config_reloads_total",
    "flagtally_build_info",
];

#[test]
fn endpoints_follow_the_pipeline() {
    let broker = broker().to_owned();
    let t = Topics::create(&broker, 2);
    let mut g = Generator::new(GenConfig {
        dialect: GenDialect::Mixed,
        flags: 4,
        malformed_one_in: 50,
        ..GenConfig::default()
    });
    let records: Vec<Vec<u8>> = (0..2000).map(|_| g.next_record()).collect();
    let tally = g.into_tally();
    produce(&broker, &t.input, 2, &records);

    let admin = Arc::new(Admin::default());
    let addr = admin::serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&admin))
        .unwrap()
        .to_string();
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    let (status, body) = http_get(&addr, "/readyz").unwrap();
    assert_eq!((status, body.trim()), (503, "outputs not connected"));

    let config =
        Config::parse(&t.config(&broker, "size = \"10s\"\nidle_timeout = \"1s\"")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let pipeline = {
        let (stop, admin) = (Arc::clone(&stop), Arc::clone(&admin));
        std::thread::spawn(move || {
            let mut p = Pipeline::new(
                config.pipeline_plan(0).unwrap(),
                Arc::new(AtomicBool::new(false)),
                admin,
            )
            .unwrap();
            p.run(&stop, &mut |_| {}).unwrap();
        })
    };
    assert!(eventually(Duration::from_secs(30), || {
        http_get(&addr, "/readyz").is_some_and(|(s, _)| s == 200)
    }));

    // Every evaluation summarised: the metrics carry the run's numbers.
    let summaries = read_until(
        &broker,
        &t.summary,
        Duration::from_secs(60),
        summed_counters(tally.evaluations()),
    );
    assert!(!summaries.is_empty());
    let metric = |name: &str| -> f64 {
        let (_, body) = http_get(&addr, "/metrics").unwrap();
        body.lines()
            .filter(|l| l.starts_with(name))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert!(eventually(Duration::from_secs(10), || {
        metric("flagtally_records_in_total") == 2000.0
    }));
    assert_eq!(
        metric("flagtally_dead_letters_total"),
        tally.malformed as f64
    );
    assert_eq!(
        metric("flagtally_decode_errors_total"),
        tally.malformed as f64
    );
    assert_eq!(
        metric("flagtally_events_in_total"),
        tally.evaluations() as f64
    );
    assert_eq!(metric("flagtally_assigned_partitions"), 2.0);
    assert!(metric("flagtally_events_out_total{kind=\"summary\"}") >= 1.0);
    assert!(metric("flagtally_commits_total") >= 1.0);
    // Each summary's delivery is timed against its window's close (late corrections'
    // and other records' are not).
    let on_time = summaries
        .iter()
        .filter(|r| !r.headers.contains_key("flagtally-late"))
        .count();
    assert!(on_time > 0);
    assert!(eventually(Duration::from_secs(10), || {
        metric("flagtally_summary_latency_seconds_count") >= on_time as f64
    }));
    assert!(
        metric("flagtally_summary_latency_seconds_count")
            <= metric("flagtally_events_out_total{kind=\"summary\"}")
    );
    assert!(
        metric("flagtally_produce_latency_seconds_count")
            > metric("flagtally_summary_latency_seconds_count")
    );
    // Consumer lag comes from librdkafka's statistics, every 5 s.
    assert!(eventually(Duration::from_secs(15), || {
        http_get(&addr, "/metrics")
            .is_some_and(|(_, b)| b.contains("# TYPE flagtally_consumer_lag"))
    }));
    let (_, body) = http_get(&addr, "/metrics").unwrap();
    for name in DOCUMENTED {
        assert!(
            body.contains(&format!("# TYPE {name}"))
                || body.contains(&format!("# TYPE {}", name.trim_end_matches("_total"))),
            "{name} missing from\n{body}"
        );
    }
    for dialect in ["launchdarkly", "goff", "featbit"] {
        assert!(
            body.contains(&format!("dialect=\"{dialect}\"")),
            "{dialect} missing from\n{body}"
        );
    }

    // Draining: healthz and readyz answer 503.
    stop.store(true, Ordering::Relaxed);
    pipeline.join().unwrap();
    assert_eq!(
        http_get(&addr, "/healthz").unwrap(),
        (503, "draining\n".to_owned())
    );
    assert_eq!(
        http_get(&addr, "/readyz").unwrap(),
        (503, "draining\n".to_owned())
    );
}
