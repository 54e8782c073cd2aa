//! The processor against Apache Kafka: exact counts, crashes, takeovers, a broker
//! restart, bad input, idle partitions, shutdown, and an independent reader. The one
//! fault Kafka cannot play on demand — a broker that vanishes and returns with its
//! data while the test runs in-process — also runs on librdkafka's mock cluster.
//! Each test makes its own topics and group; the flagtally binary runs as a child.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use flagtally::generate::Tally;

const WINDOW_MS: i64 = 10_000;
const WINDOW: &str = r#"size = "10s"
lateness = "2s"
idle_timeout = "2s""#;

/// Reads the summary topic until its deduplicated counters add up to `expected`
/// evaluations (or the timeout), then checks them window by window.
fn assert_summaries(broker: &str, t: &Topics, records: &[Vec<u8>], tally: &Tally) -> usize {
    let expected = tally.evaluations();
    let recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(240),
        summed_counters(expected),
    );
    let unique = dedupe(&recs);
    let got = window_tally(unique.values());
    if total(&got) != expected {
        let diff = window_diff(&got, &expected_windows(records, WINDOW_MS), &unique);
        panic!("summed counters {} != {expected}:\n{diff}", total(&got));
    }
    assert_eq!(
        got,
        expected_windows(records, WINDOW_MS),
        "counters per window"
    );
    let mut per_key: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for ((f, v, ver, _), n) in &got {
        *per_key
            .entry((f.clone(), v.clone(), ver.clone()))
            .or_default() += n;
    }
    assert_eq!(
        per_key, tally.counters,
        "counters per flag, variation, version"
    );
    recs.len() - unique.len()
}

/// Reads the feature topic until every tracked evaluation's feature event is there
/// (or the timeout), checks them one to one, and returns the records read.
fn assert_features(broker: &str, t: &Topics, tally: &Tally) -> Vec<Rec> {
    let recs = read_until(
        broker,
        &t.feature,
        Duration::from_secs(120),
        distinct_ids(tally.tracked),
    );
    assert_eq!(
        dedupe(&recs).len() as u64,
        tally.tracked,
        "feature events one to one"
    );
    recs
}

/// A small deterministic random source for kill times (seed printed on failure).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn counts_are_exact_across_dialects_and_partitions() {
    let broker = broker();
    let t = Topics::create(broker, 4);
    let (records, tally) = generated(200_000, 7);
    produce(broker, &t.input, 4, &records);
    // One worker: this test counts duplicates. On the test broker (no initial rebalance
    // delay) a second worker may join after the first has started, and in at-least-once
    // mode, where the first cannot commit before handing partitions over, they are
    // re-read from their last commit (see `Topics::config_with_threads`);
    // `tests/workers.rs` checks that several workers write the same records as one, and
    // `a_joining_instance_starts_where_the_first_stopped` the commit on revocation.
    let f = Flagtally::start(&t.config_with_threads(broker, WINDOW, 1), &t.group);
    let dups = assert_summaries(broker, &t, &records, &tally);
    assert_eq!(dups, 0, "no crash, no duplicates");
    assert_features(broker, &t, &tally);
    assert!(f.stop(Duration::from_secs(25)).success());
    other_teams_read_the_outputs(broker, &t, &tally);
}

/// The independent reader: Python's confluent-kafka reads the output topics and checks
/// the documented shapes.
fn other_teams_read_the_outputs(broker: &str, t: &Topics, tally: &Tally) {
    let out = std::process::Command::new(python())
        .arg(repo().join("tests/python/read_outputs.py"))
        .args([broker, &t.summary, &t.feature])
        .arg(tally.evaluations().to_string())
        .arg(tally.tracked.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python reader failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ok"), "{text}");
}

#[test]
fn sigkill_three_times_loses_nothing_and_duplicates_are_identical() {
    let broker = broker();
    let t = Topics::create(broker, 4);
    let (records, tally) = generated(200_000, 11);
    let records = Arc::new(records);
    let (h, input_done) = produce_paced(
        broker,
        &t.input,
        Arc::clone(&records),
        4,
        20,
        Duration::from_millis(400),
    );
    let seed = std::process::id() as u64;
    let mut rng = Lcg(seed);
    let config = t.config(broker, WINDOW);
    for round in 0..3 {
        let f = Flagtally::start(&config, &format!("{}-{round}", t.group));
        f.wait_log("restored", 1, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
        eprintln!("crash round {round} (seed {seed})");
        f.crash();
    }
    let f = Flagtally::start(&config, &format!("{}-final", t.group));
    h.join().unwrap();
    assert!(input_done.load(Ordering::Relaxed));
    let dups = assert_summaries(broker, &t, &records, &tally);
    assert_features(broker, &t, &tally);
    report(&format!(
        "crash test: {dups} identical duplicate summaries after 3 SIGKILLs"
    ));
    assert!(f.stop(Duration::from_secs(25)).success());
}

/// An instance named `{group}-{suffix}`, once it has restored its first partitions.
fn started(config: &str, t: &Topics, suffix: &str) -> Flagtally {
    let f = Flagtally::start(config, &format!("{}-{suffix}", t.group));
    f.wait_log("restored", 1, Duration::from_secs(60));
    f
}

/// Writes `records` to the input in 12 chunks, one every 500 ms, on a thread; the
/// caller acts 2 s in, mid-stream.
fn paced_input(
    broker: &str,
    t: &Topics,
    records: &Arc<Vec<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    let (h, _) = produce_paced(
        broker,
        &t.input,
        Arc::clone(records),
        4,
        12,
        Duration::from_millis(500),
    );
    std::thread::sleep(Duration::from_secs(2));
    h
}

/// Two instances in one group; `stop_a` takes the first one out mid-stream; the other
/// must take over its partitions and the counts stay exact.
fn takeover(broker: &str, t: &Topics, n: usize, stop_a: impl FnOnce(Flagtally)) {
    let (records, tally) = generated(n, 13);
    let records = Arc::new(records);
    // One worker per instance: the assertion below reads one consumer's assignments.
    let config = t.config_with_threads(broker, WINDOW, 1);
    let a = started(&config, t, "a");
    let b = started(&config, t, "b");
    let h = paced_input(broker, t, &records);
    stop_a(a);
    h.join().unwrap();
    assert_summaries(broker, t, &records, &tally);
    assert_features(broker, t, &tally);
    let log = b.log_text();
    assert!(
        log.matches("partitions assigned partitions=4").count() >= 1,
        "b was assigned all four partitions after a left; log:\n{log}"
    );
    assert!(b.stop(Duration::from_secs(25)).success());
}

/// An instance that leaves (SIGTERM: it drains and leaves the group) hands its
/// partitions over at once.
#[test]
fn a_surviving_instance_takes_over_when_another_leaves() {
    let broker = broker();
    let t = Topics::create(broker, 4);
    takeover(broker, &t, 60_000, |a| {
        assert!(a.stop(Duration::from_secs(25)).success());
    });
}

/// A second instance joins mid-stream and takes partitions from the first. In
/// at-least-once mode the first commits before it hands them over (the group waits for
/// it), so each partition's next owner starts where the first stopped: nothing is
/// written twice. Without that commit, everything written since the last one (up to a
/// commit interval of feature events) was written again by the next owner.
#[test]
fn a_joining_instance_starts_where_the_first_stopped() {
    let broker = broker();
    let t = Topics::create(broker, 4);
    let (records, tally) = generated(60_000, 31);
    let records = Arc::new(records);
    let config = t.config_with_threads(broker, WINDOW, 1);
    let a = started(&config, &t, "a");
    let h = paced_input(broker, &t, &records);
    let b = started(&config, &t, "b");
    h.join().unwrap();
    let summary_dups = assert_summaries(broker, &t, &records, &tally);
    let features = assert_features(broker, &t, &tally);
    assert_eq!(
        (summary_dups, features.len() - dedupe(&features).len()),
        (0, 0),
        "no summary or feature event written twice across the join"
    );
    let log = a.log_text();
    assert!(
        log.contains("committed before handing the partitions over"),
        "the first instance commits on revocation; log:\n{log}"
    );
    assert!(a.stop(Duration::from_secs(25)).success());
    assert!(b.stop(Duration::from_secs(25)).success());
}

/// SIGKILL one of two instances: Kafka's group coordinator evicts it once its session
/// (6 s in these tests) times out, and the survivor takes its partitions.
#[test]
fn a_surviving_instance_takes_over_a_killed_ones_partitions() {
    let broker = broker();
    let t = Topics::create(broker, 4);
    takeover(broker, &t, 60_000, Flagtally::crash);
}

/// The broker is unreachable for 10 s mid-stream (librdkafka's mock cluster takes its
/// only broker down and up again, keeping its data): flagtally reconnects by itself and
/// the counts stay exact. The outage outlasts the group session, so the instance also
/// loses and regains its partitions while group commits fail — this test found that
/// records before a checkpoint's replay start (the consumer restarts at the older group
/// offset) must be skipped, not counted again.
///
/// The mock keeps only the newest 5 MiB of each partition (`max_size` in librdkafka's
/// `rdkafka_mock.c`, not configurable) and silently deletes older record batches. The
/// outage makes flagtally write outputs again since its last checkpoint (at least
/// once), and with two feature partitions those duplicates once pushed one past 5 MiB:
/// the oldest feature events were gone before the test read them. So the feature topic
/// has eight partitions here (about 1 MiB each), and the test checks that the mock
/// kept every record before it counts them.
#[test]
fn flagtally_rides_out_a_broker_outage() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let broker = mock.bootstrap_servers();
    let t = Topics::named();
    for (topic, partitions) in t.all(4) {
        let partitions = if topic == t.feature { 8 } else { partitions };
        mock.create_topic(&topic, partitions, 1).unwrap();
    }
    let (records, tally) = generated(30_000, 29);
    let (first, second) = records.split_at(15_000);
    produce(&broker, &t.input, 4, first);
    let f = Flagtally::start(&t.config(&broker, WINDOW), &t.group);
    let some = read_until(&broker, &t.summary, Duration::from_secs(60), |_| true);
    assert!(!some.is_empty(), "summaries before the outage");
    mock.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(10));
    mock.broker_up(1).unwrap();
    produce(&broker, &t.input, 4, second);
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_exact_or_print_logs(&broker, &t, &records, &tally, &[&f]);
    }));
    for topic in [&t.input, &t.summary, &t.feature] {
        let low: Vec<i64> = watermarks(&broker, topic).iter().map(|w| w.0).collect();
        assert!(
            low.iter().all(|&o| o == 0),
            "the mock cluster deleted the oldest records of {topic} (it keeps 5 MiB per \
             partition), so the counts cannot be checked; low watermarks {low:?}"
        );
    }
    if let Err(e) = checked {
        std::panic::resume_unwind(e);
    }
    assert!(f.stop(Duration::from_secs(25)).success());
}

/// Apache Kafka killed (kill -9) mid-stream and restarted on the same log directory and
/// port: flagtally rides it out — `/readyz` turns 503 while the broker is gone and 200
/// again after — and the counts stay exact. The checkpoint topic flagtally created is
/// compacted, and the checkpoints written before the crash are still there after it.
#[test]
fn flagtally_rides_out_a_broker_restart() {
    let name = unique("restart");
    let (broker, t, _reset) = broker_of_its_own(&name);
    let checkpoints = format!("{}-checkpoints", t.group);
    let (records, tally) = generated(60_000, 17);
    let (first, second) = records.split_at(30_000);
    produce(&broker, &t.input, 4, first);
    let admin = format!("127.0.0.1:{}", free_port());
    let f = Flagtally::start_with_env(
        &t.config(&broker, WINDOW),
        &t.group,
        &[("FLAGTALLY__ADMIN__LISTEN", &admin), CHECKPOINTS_LOGGED],
    );
    let addr = admin.as_str();
    let ready = |code: u16| move || http_get(addr, "/readyz").is_some_and(|(c, _)| c == code);
    assert!(
        eventually(Duration::from_secs(60), ready(200)),
        "ready before the crash"
    );
    let some = read_until(&broker, &t.summary, Duration::from_secs(60), |_| true);
    assert!(!some.is_empty(), "summaries before the restart");
    assert_eq!(
        topic_config(&broker, &checkpoints, "cleanup.policy").as_deref(),
        Some("compact"),
        "the checkpoint topic is compacted"
    );
    let before = latest_by_key(&broker, &checkpoints);
    assert!(!before.is_empty(), "checkpoints before the crash");

    broker_do("kill", &name);
    assert!(
        eventually(Duration::from_secs(60), ready(503)),
        "/readyz turns 503 while the broker is down; log:\n{}",
        f.log_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    let again = start_broker(&name);
    assert_eq!(again, broker, "the broker comes back on its port");
    assert!(
        eventually(Duration::from_secs(120), ready(200)),
        "/readyz back to 200 after the restart; log:\n{}",
        f.log_text()
    );
    // Every checkpoint written before the crash survived it (or a newer one of the
    // same partition replaced it).
    let after = latest_by_key(&broker, &checkpoints);
    for (key, (offset, value)) in &before {
        let (o, v) = after
            .get(key)
            .expect("a checkpoint key lost in the restart");
        assert!(
            o > offset || v == value,
            "checkpoint {key} at {offset} survived the restart"
        );
    }
    produce(&broker, &t.input, 4, second);
    assert_exact_or_print_logs(&broker, &t, &records, &tally, &[&f]);
    assert!(f.stop(Duration::from_secs(25)).success());
}

/// [`assert_summaries`] and [`assert_features`]; on a failure, the flagtally logs are
/// printed first (they say what each instance did around the fault).
fn assert_exact_or_print_logs(
    broker: &str,
    t: &Topics,
    records: &[Vec<u8>],
    tally: &Tally,
    instances: &[&Flagtally],
) {
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_summaries(broker, t, records, tally);
        assert_features(broker, t, tally);
    }));
    if let Err(e) = checked {
        for f in instances {
            eprintln!("{}:\n{}", f.log.display(), f.log_text());
        }
        std::panic::resume_unwind(e);
    }
}

/// A broker of its own (these tests kill it) with a fresh set of topics, and a guard
/// that stops it and deletes its data when the test ends, failed or not. flagtally
/// creates its checkpoint topic itself (compacted).
fn broker_of_its_own(name: &str) -> (String, Topics, ResetOnDrop) {
    let reset = ResetOnDrop(name.to_owned());
    let broker = start_broker(name);
    let t = Topics::named();
    let all = t.all(4);
    let refs: Vec<(&str, i32)> = all
        .iter()
        .filter(|(n, _)| !n.ends_with("-checkpoints"))
        .map(|(n, p)| (n.as_str(), *p))
        .collect();
    create_topics(&broker, &refs);
    (broker, t, reset)
}

/// Every checkpoint written and read goes to the log, for the one printed on a failure.
const CHECKPOINTS_LOGGED: (&str, &str) = (
    "RUST_LOG",
    "info,flagtally::pipeline=debug,librdkafka=warn,rdkafka=warn",
);

/// Apache Kafka killed (kill -9) in the middle of a rebalance and restarted: a second
/// instance joins while the first is counting, and the broker dies as the new
/// assignment is made, so restores straddle the outage, sessions time out and
/// partitions move again, while idle timeouts pass. The counts stay exact.
///
/// The restart test above once counted 62 evaluations twice in such a sequence. What the
/// log showed, and what this guards: a worker restoring across the outage read the group
/// offsets *after* the checkpoints, got an offset another member had committed meanwhile
/// without its checkpoint, and restored that partition as fresh from it; and it went on
/// processing records although its session had timed out (another member owned the
/// partitions and had decided idle closes it did not know of).
#[test]
fn a_broker_restart_in_the_middle_of_a_rebalance_counts_exactly() {
    let name = unique("rebalance-restart");
    let (broker, t, _reset) = broker_of_its_own(&name);
    let (records, tally) = generated(60_000, 23);
    let (first, second) = records.split_at(30_000);
    produce(&broker, &t.input, 4, first);
    let config = t.config(&broker, WINDOW);
    let start = |who: &str| {
        Flagtally::start_with_env(
            &config,
            &format!("{}-{who}", t.group),
            &[("FLAGTALLY__ADMIN__LISTEN", "off"), CHECKPOINTS_LOGGED],
        )
    };
    let a = start("a");
    let some = read_until(&broker, &t.summary, Duration::from_secs(60), |_| true);
    assert!(!some.is_empty(), "a counts before b joins");
    let b = start("b");
    // The new assignment is made: both instances now read their checkpoints.
    b.wait_log("partitions assigned", 1, Duration::from_secs(60));
    broker_do("kill", &name);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        start_broker(&name),
        broker,
        "the broker comes back on its port"
    );
    produce(&broker, &t.input, 4, second);
    assert_exact_or_print_logs(&broker, &t, &records, &tally, &[&a, &b]);
    // A restore reads the group offsets before the checkpoints, so it never sees an
    // offset newer than its checkpoint. (Before, 3 of 7 runs of this test did.)
    for (who, f) in [("a", &a), ("b", &b)] {
        let log = f.log_text();
        assert!(
            !log.contains("past the checkpoint's replay start"),
            "{who} restored from a checkpoint older than the group offset; log:\n{log}"
        );
    }
    assert!(a.stop(Duration::from_secs(25)).success());
    assert!(b.stop(Duration::from_secs(25)).success());
}

/// The latest (offset, value) per key of a topic read to its end.
fn latest_by_key(broker: &str, topic: &str) -> BTreeMap<String, (i64, Vec<u8>)> {
    let end = high_watermark(broker, topic);
    let recs = read_until(broker, topic, Duration::from_secs(60), |r| {
        r.offset + 1 >= end
    });
    let mut out = BTreeMap::new();
    for r in recs {
        let key = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap();
        out.insert(key, (r.offset, r.value));
    }
    out
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_with_reasons() {
    let broker = broker();
    let t = Topics::create(broker, 2);
    let (good, tally) = generated(100_000, 19);
    let bad: [&[u8]; 5] = [
        b"not json at all",
        br#"{"kind":"feature","creationDate":"#,
        br#"{"kind":"feature","creationDate":"yesterday","key":"f","context":{"kind":"user","key":"u"}}"#,
        br#"{"what":"is this"}"#,
        b"",
    ];
    let mut records = Vec::with_capacity(101_000);
    let mut bad_at = Vec::new();
    for (i, g) in good.iter().enumerate() {
        if i % 100 == 50 {
            bad_at.push(records.len());
            records.push(bad[(i / 100) % bad.len()].to_vec());
        }
        records.push(g.clone());
    }
    assert_eq!(bad_at.len(), 1000);
    produce(broker, &t.input, 2, &records);
    let f = Flagtally::start(&t.config(broker, WINDOW), &t.group);
    assert_summaries(broker, &t, &good, &tally);
    let mut n = 0;
    let dlq = read_until(broker, &t.dead_letter, Duration::from_secs(60), |_| {
        n += 1;
        n >= 1000
    });
    assert_eq!(dlq.len(), 1000);
    for r in &dlq {
        let partition: i32 = r
            .header("flagtally-source-partition")
            .unwrap()
            .parse()
            .unwrap();
        let offset: usize = r
            .header("flagtally-source-offset")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(r.header("flagtally-source-topic"), Some(t.input.as_str()));
        // Round-robin production: record i went to partition i % 2 at offset i / 2.
        let i = offset * 2 + partition as usize;
        assert_eq!(r.value, records[i], "the original bytes");
        assert!(bad_at.contains(&i));
        let dialect = r.header("flagtally-error-dialect").unwrap();
        assert!(["auto", "launchdarkly"].contains(&dialect), "{dialect}");
        let reason = r.header("flagtally-error-reason").unwrap();
        let expected = match r.value.as_slice() {
            b"" => "empty",
            // Not JSON, so no dialect can be detected; the detail says where it broke.
            br#"{"kind":"feature","creationDate":"# => "undetected",
            br#"{"what":"is this"}"# => "undetected",
            _ => reason,
        };
        assert_eq!(reason, expected, "{:?}", String::from_utf8_lossy(&r.value));
        let error = r.header("flagtally-error").unwrap();
        if r.value.starts_with(br#"{"kind""#) && r.value.len() < 40 {
            assert!(error.contains("EOF while parsing"), "{error}");
        }
        assert!(!error.is_empty());
    }
    assert!(f.stop(Duration::from_secs(25)).success());
}

#[test]
fn an_idle_partition_emits_its_last_window_within_idle_timeout_plus_one_second() {
    let broker = broker();
    let t = Topics::create(broker, 1);
    let f = Flagtally::start(
        &t.config(broker, "size = \"1h\"\nidle_timeout = \"2s\""),
        &t.group,
    );
    f.wait_log("restored", 1, Duration::from_secs(60));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let records: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            format!(
                r#"{{"kind":"feature","creationDate":{now},"key":"idle-flag","version":1,"context":{{"kind":"user","key":"u{i}"}},"variation":0,"value":true,"default":false}}"#
            )
            .into_bytes()
        })
        .collect();
    produce(broker, &t.input, 1, &records);
    let sent = Instant::now();
    let recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(30),
        summed_counters(100),
    );
    let elapsed = sent.elapsed();
    assert_eq!(total(&window_tally(recs.iter())), 100);
    assert!(
        elapsed <= Duration::from_secs(3) + Duration::from_millis(500),
        "idle window emitted after {elapsed:?} (idle_timeout 2 s + 1 s, plus the reader's poll)"
    );
    report(&format!(
        "idle close: summary read {elapsed:?} after the last input"
    ));
    assert!(f.stop(Duration::from_secs(25)).success());
}

#[test]
fn sigterm_drains_exits_zero_and_a_restart_continues_exactly() {
    let broker = broker();
    let t = Topics::create(broker, 4);
    let (records, tally) = generated(100_000, 23);
    let records = Arc::new(records);
    let config = t.config(broker, WINDOW);
    let f = Flagtally::start(&config, &format!("{}-1", t.group));
    f.wait_log("restored", 1, Duration::from_secs(60));
    let (h, _) = produce_paced(
        broker,
        &t.input,
        Arc::clone(&records),
        4,
        10,
        Duration::from_millis(300),
    );
    std::thread::sleep(Duration::from_secs(2));
    let stopped = Instant::now();
    let status = f.stop(Duration::from_secs(25));
    assert_eq!(status.code(), Some(0), "a drain exits 0");
    report(&format!("SIGTERM drain took {:?}", stopped.elapsed()));
    let f = Flagtally::start(&config, &format!("{}-2", t.group));
    h.join().unwrap();
    assert_summaries(broker, &t, &records, &tally);
    assert_features(broker, &t, &tally);
    assert!(f.stop(Duration::from_secs(25)).success());
}

/// Feature and index events may share one topic (LaunchDarkly's event stream carries
/// both). The producer still learns that topic's `max.message.bytes` from the broker —
/// its batches and the outputs it sets aside depend on it — although the configuration
/// names the topic twice.
#[test]
fn outputs_sharing_a_topic_still_get_its_size_limit() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let broker = broker();
    let t = Topics::named();
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let shared =
        NewTopic::new(&t.feature, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "4096");
    for r in
        flagtally::kafka::producer::block_on(admin.create_topics(&[shared], &AdminOptions::new()))
            .unwrap()
    {
        r.unwrap();
    }
    // The broker describes a topic it has just created only once its metadata is out.
    assert!(eventually(Duration::from_secs(30), || {
        topic_config(broker, &t.feature, "max.message.bytes").as_deref() == Some("4096")
    }));
    let text = t.config(broker, WINDOW).replace(&t.index, &t.feature);
    let config = flagtally::config::Config::parse(&text).unwrap();
    assert_eq!(
        config
            .output
            .topics
            .topic(flagtally::emit::OutputKind::Index),
        Some(t.feature.as_str())
    );
    let producer = flagtally::pipeline::producer::Producer::new(
        &config.producer_plan(0).unwrap(),
        Arc::new(flagtally::admin::Admin::default()),
    )
    .unwrap();
    assert_eq!(producer.topic_limit(&t.feature), 4096);
    assert!(!producer.fits(&t.feature, 5000));
    assert!(producer.fits(&t.feature, 1000));
}
