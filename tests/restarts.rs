//! Restarts with a busy, bursty input, on Apache Kafka, the way a new user first tries
//! flagtally: input in paced chunks with pauses longer than the idle timeout (so idle
//! partitions close their windows between chunks), events out of order by more than
//! the allowed lateness (so late corrections are emitted), four partitions, dialect
//! `auto`, one-minute windows over two hours of event time, and a PostgreSQL sink —
//! while the daemon is restarted three times, by SIGTERM or by SIGKILL.
//!
//! What must hold: no `flagtally-id` ever names two different records (every repeat is
//! byte-identical), the summaries deduplicated by id add up exactly per window and per
//! counter, feature events are one to one, and PostgreSQL ends exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flagtally::generate::{GenConfig, GenDialect, Generator, Tally};

const WINDOW_MS: i64 = 60_000;

fn input() -> (Vec<Vec<u8>>, Tally) {
    let mut g = Generator::new(GenConfig {
        dialect: GenDialect::Mixed,
        flags: 7,
        contexts: 2_000,
        // 24 000 records, 300 ms of event time apart: two hours.
        step_ms: 300,
        // Up to 90 s out of order: past the 10 s lateness, so some events are late.
        skew_ms: 90_000,
        malformed_one_in: 500,
        tracked_one_in: 20,
        seed: 41,
        ..GenConfig::default()
    });
    let records = (0..24_000).map(|_| g.next_record()).collect();
    (records, g.into_tally())
}

fn config(t: &Topics, broker: &str, url: &str, schema: &str) -> String {
    format!(
        r#"{base}
[[sinks]]
name = "{schema}"
type = "postgres"
topics = ["{summary}", "{feature}"]
url = "{url}"
schema = "{schema}"
batch_size = 500
batch_timeout = "200ms"
retry_initial = "100ms"
retry_max = "1s"
"#,
        base = t
            .config_with_threads(
                broker,
                "size = \"1m\"\nlateness = \"10s\"\nidle_timeout = \"2s\"\nlate_policy = \"correction\"",
                1,
            ),
        summary = t.summary,
        feature = t.feature,
    )
}

fn restarts(signal: &str) {
    let broker = broker();
    let url = postgres_url();
    let t = Topics::create(broker, 4);
    let schema = unique("ft_restart").replace('-', "_");
    let (records, tally) = input();
    let records = Arc::new(records);
    let cfg = config(&t, broker, &url, &schema);
    let name = unique(&format!("restart-{}", signal.to_lowercase()));
    // Eight chunks, three seconds apart (longer than the 2 s idle timeout).
    let (feeder, _) = produce_paced(
        broker,
        &t.input,
        Arc::clone(&records),
        4,
        8,
        Duration::from_secs(3),
    );
    let mut logs = Vec::new();
    for round in 0..3u64 {
        let f = Flagtally::start(&cfg, &format!("{name}-{round}"));
        // Mid-stream: each run lives through a chunk or two, idle closes included.
        std::thread::sleep(Duration::from_millis(4_000 + 1_500 * round));
        logs.push(f.log_text());
        if signal == "KILL" {
            f.crash();
        } else {
            let status = f.stop(Duration::from_secs(25));
            assert_eq!(status.code(), Some(0), "a drain exits 0");
        }
    }
    let f = Flagtally::start(&cfg, &format!("{name}-final"));
    feeder.join().unwrap();

    // The topic: every repeat byte-identical (dedupe panics otherwise), exact per window.
    let expected = tally.evaluations();
    let recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(180),
        summed_counters(expected),
    );
    let unique_recs = dedupe(&recs);
    let got = window_tally(unique_recs.values());
    if total(&got) != expected {
        let diff = window_diff(&got, &expected_windows(&records, WINDOW_MS), &unique_recs);
        panic!(
            "summed counters {} != {expected} after dedupe by id:\n{diff}",
            total(&got)
        );
    }
    assert_eq!(
        got,
        expected_windows(&records, WINDOW_MS),
        "counters per window"
    );
    let late = unique_recs
        .values()
        .filter(|r| r.header("flagtally-late") == Some("true"))
        .count();
    assert!(
        late > 0,
        "the input has late events: corrections were emitted"
    );
    let features = read_until(
        broker,
        &t.feature,
        Duration::from_secs(120),
        distinct_ids(tally.tracked),
    );
    assert_eq!(
        dedupe(&features).len() as u64,
        tally.tracked,
        "feature events one to one"
    );

    // PostgreSQL: exact counters.
    let mut db = sql(&url);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && counted(&mut db, &schema).values().sum::<u64>() < expected {
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        counted(&mut db, &schema),
        tally.counters,
        "summary counters in PostgreSQL; log:\n{}",
        f.log_text()
    );
    logs.push(f.log_text());
    for log in &logs {
        assert!(
            !log.contains("past the checkpoint's replay start"),
            "every restart found the latest checkpoint; log:\n{log}"
        );
    }
    report(&format!(
        "restarts ({signal}): {} summary records, {} distinct, {late} late corrections",
        recs.len(),
        unique_recs.len()
    ));
    assert!(f.stop(Duration::from_secs(25)).success());
}

#[test]
fn sigterm_restarts_with_bursty_input_end_exact() {
    restarts("TERM");
}

#[test]
fn sigkill_restarts_with_bursty_input_end_exact() {
    restarts("KILL");
}
