//! Scaling a consumer group of flagtally instances on Apache Kafka, under load: instances
//! joining and leaving with cooperative-sticky assignment, and static membership
//! (KIP-345), where a restarted instance gets its partitions back without a rebalance.
//! One worker per instance: these tests count each instance's assignments (several
//! workers in one process are `tests/workers.rs`'s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use flagtally::generate::Tally;

const WINDOW_MS: i64 = 10_000;
const WINDOW: &str = "size = \"10s\"\nlateness = \"2s\"\nidle_timeout = \"2s\"";

/// Summaries deduplicated by id (repeats byte-identical) equal the input, per window
/// and per counter; feature events one to one.
fn assert_exact(broker: &str, t: &Topics, records: &[Vec<u8>], tally: &Tally) -> usize {
    let recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(180),
        summed_counters(tally.evaluations()),
    );
    let unique_recs = dedupe(&recs);
    let got = window_tally(unique_recs.values());
    assert_eq!(total(&got), tally.evaluations(), "summed counters");
    assert_eq!(got, expected_windows(records, WINDOW_MS), "per window");
    let features = read_until(
        broker,
        &t.feature,
        Duration::from_secs(120),
        distinct_ids(tally.tracked),
    );
    assert_eq!(dedupe(&features).len() as u64, tally.tracked, "features");
    recs.len() - unique_recs.len()
}

/// Records re-read to rebuild state, per restore, from an instance's log lines
/// `restored … from=F replay_until=U`.
fn replayed_per_restore(log: &str) -> Vec<i64> {
    log.lines()
        .filter(|l| l.contains(" restored"))
        .filter_map(|l| {
            let field = |name: &str| -> Option<i64> {
                let at = l.find(&format!("{name}="))? + name.len() + 1;
                l[at..]
                    .split(|c: char| !c.is_ascii_digit() && c != '-')
                    .next()?
                    .parse()
                    .ok()
            };
            Some((field("replay_until")? - field("from")?).max(0))
        })
        .collect()
}

/// Three instances join one at a time while input flows, then two leave (SIGTERM);
/// cooperative-sticky assignment moves only the partitions that change hands. Exact.
#[test]
fn scale_out_and_in_under_load_is_exact() {
    let broker = broker();
    let t = Topics::create(broker, 6);
    let (records, tally) = generated(90_000, 31);
    let records = Arc::new(records);
    let config = t.config_with_threads(broker, WINDOW, 1).replace(
        "consumer_properties = {",
        "consumer_properties = { \"partition.assignment.strategy\" = \"cooperative-sticky\",",
    );
    let (h, done) = produce_paced(
        broker,
        &t.input,
        Arc::clone(&records),
        6,
        30,
        Duration::from_millis(400),
    );
    let a = Flagtally::start(&config, &format!("{}-a", t.group));
    a.wait_log("partitions assigned", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let b = Flagtally::start(&config, &format!("{}-b", t.group));
    b.wait_log("partitions assigned", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let c = Flagtally::start(&config, &format!("{}-c", t.group));
    c.wait_log("partitions assigned", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let logs_b_c = (b.log.clone(), c.log.clone());
    assert!(b.stop(Duration::from_secs(25)).success());
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.stop(Duration::from_secs(25)).success());
    h.join().unwrap();
    assert!(done.load(Ordering::Relaxed));
    let dups = assert_exact(broker, &t, &records, &tally);
    let mut replayed = BTreeMap::new();
    replayed.insert("a", replayed_per_restore(&a.log_text()));
    for (name, path) in [("b", &logs_b_c.0), ("c", &logs_b_c.1)] {
        replayed.insert(
            name,
            replayed_per_restore(&std::fs::read_to_string(path).unwrap()),
        );
    }
    report(&format!(
        "scale out/in (6 partitions, 3 joins, 2 leaves): {dups} identical repeats; records replayed per partition restore: {replayed:?}"
    ));
    assert!(a.stop(Duration::from_secs(25)).success());
}

/// Static membership: two instances with `kafka.instance_id`. One is SIGKILLed and
/// restarted at once: it gets its partitions back before the (30 s) session timeout,
/// and the other instance sees no rebalance at all. Exact.
#[test]
fn a_static_member_restarts_without_a_rebalance() {
    let broker = broker();
    let t = Topics::create(broker, 4);
    let (records, tally) = generated(40_000, 37);
    let records = Arc::new(records);
    let config = t.config_with_threads(broker, WINDOW, 1).replace(
        "\"session.timeout.ms\" = \"6000\"",
        "\"session.timeout.ms\" = \"30000\"",
    );
    let with_id = |id: &str| {
        config.replace(
            &format!("group_id = \"{}\"", t.group),
            &format!("group_id = \"{}\"\ninstance_id = \"{id}\"", t.group),
        )
    };
    let a = Flagtally::start(&with_id("a"), &format!("{}-a", t.group));
    a.wait_log("partitions assigned", 1, Duration::from_secs(60));
    let b = Flagtally::start(&with_id("b"), &format!("{}-b", t.group));
    b.wait_log("partitions assigned", 1, Duration::from_secs(60));
    // Both hold partitions once a's share moved to b.
    assert!(
        eventually(Duration::from_secs(60), || {
            a.log_text().matches("partitions revoked").count() >= 1
                && a.log_text().matches("partitions assigned").count() >= 2
        }),
        "a gave b its share; log a:\n{}",
        a.log_text()
    );
    let b_rebalances = |b: &Flagtally| {
        let log = b.log_text();
        log.matches("partitions assigned").count() + log.matches("partitions revoked").count()
    };
    let settled = b_rebalances(&b);
    let (h, _) = produce_paced(
        broker,
        &t.input,
        Arc::clone(&records),
        4,
        10,
        Duration::from_millis(400),
    );
    std::thread::sleep(Duration::from_secs(2));
    a.crash();
    let restarted = Instant::now();
    let a = Flagtally::start(&with_id("a"), &format!("{}-a2", t.group));
    a.wait_log("partitions assigned", 1, Duration::from_secs(60));
    let back = restarted.elapsed();
    assert!(
        back < Duration::from_secs(25),
        "partitions back after {back:?}, before the session timeout"
    );
    h.join().unwrap();
    assert_exact(broker, &t, &records, &tally);
    assert_eq!(
        b_rebalances(&b),
        settled,
        "b saw no rebalance; log b:\n{}",
        b.log_text()
    );
    report(&format!(
        "static membership: a restarted member had its partitions back after {back:?}"
    ));
    assert!(a.stop(Duration::from_secs(25)).success());
    assert!(b.stop(Duration::from_secs(25)).success());
}

/// Two instances with the same `kafka.instance_id`: the broker fences the first when
/// the second joins (`FENCED_INSTANCE_ID`, fatal to its consumer). The fenced instance
/// does not linger as a zombie that logs and stays ready: it exits non-zero, naming
/// the error, and the other instance goes on reading.
#[test]
fn a_fenced_static_member_exits_non_zero() {
    let broker = broker();
    let t = Topics::create(broker, 2);
    let (records, tally) = generated(4_000, 41);
    let config = t.config_with_threads(broker, WINDOW, 1).replace(
        &format!("group_id = \"{}\"", t.group),
        &format!("group_id = \"{}\"\ninstance_id = \"same\"", t.group),
    );
    let mut a = Flagtally::start(&config, &format!("{}-a", t.group));
    a.wait_log("partitions assigned", 1, Duration::from_secs(60));
    let b = Flagtally::start(&config, &format!("{}-b", t.group));
    let status = a.wait(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the fenced instance exits non-zero ({status:?}); log a:\n{}",
        a.log_text()
    );
    let log = a.log_text();
    assert!(log.contains("fatal Kafka consumer error"), "{log}");
    produce(broker, &t.input, 2, &records);
    assert_exact(broker, &t, &records, &tally);
    assert!(b.stop(Duration::from_secs(25)).success());
}
