//! Exactly-once mode (`processing.exactly_once = true`).
//!
//! On Apache Kafka, against the real `flagtally` binary: SIGKILLed three times
//! mid-transaction while input flows, a `read_committed` reader from another client
//! (Python's confluent-kafka) sees every summary counter, feature event and dead letter
//! exactly once — no repeats at all; and a second instance with the same transactional
//! id fences the first, which cannot commit again.
//!
//! On librdkafka's mock cluster, for the fault Kafka cannot play on demand (a failing
//! AddOffsetsToTxn): the abort-and-rewind path. The mock accepts every transactional
//! call without storing transactional offsets or hiding aborted records, so those tests
//! prove the call flow only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use flagtally::config::Config;
use flagtally::generate::{GenConfig, Generator};
use flagtally::pipeline::{Pipeline, Stats};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

fn config(broker: &str, t: &Topics) -> Config {
    Config::parse(&format!(
        r#"
[kafka]
brokers = "{broker}"
group_id = "{group}"
input_topics = ["{input}"]

[window]
size = "10s"
idle_timeout = "1s"

[output]
dead_letter_topic = "{dlq}"
topics.summary = "{summary}"

[processing]
exactly_once = true
transactional_id = "{group}-tx"
checkpoint_topic = "{group}-checkpoints"
commit_interval = "200ms"
"#,
        group = t.group,
        input = t.input,
        dlq = t.dead_letter,
        summary = t.summary,
    ))
    .unwrap()
}

/// Runs a pipeline on a thread until `stop`; returns its stats.
fn spawn(config: Config, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Stats> {
    std::thread::spawn(move || {
        let admin = Arc::new(flagtally::admin::Admin::default());
        let mut p = Pipeline::new(
            config.pipeline_plan(0).unwrap(),
            Arc::new(AtomicBool::new(false)),
            admin,
        )
        .unwrap();
        p.run(&stop, &mut |_| {}).unwrap();
        p.stats().clone()
    })
}

fn setup(mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) -> (String, Topics) {
    let broker = mock.bootstrap_servers();
    let t = Topics::named();
    for (name, partitions) in t.all(2) {
        mock.create_topic(&name, partitions, 1).unwrap();
    }
    (broker, t)
}

fn input(n: usize) -> (Vec<Vec<u8>>, u64) {
    let mut g = Generator::new(GenConfig {
        flags: 5,
        ..GenConfig::default()
    });
    let records: Vec<Vec<u8>> = (0..n).map(|_| g.next_record()).collect();
    (records, g.tally().evaluations())
}

fn summed(broker: &str, topic: &str, expected: u64) -> u64 {
    let recs = read_until(
        broker,
        topic,
        Duration::from_secs(60),
        summed_counters(expected),
    );
    total(&window_tally(dedupe(&recs).values()))
}

#[test]
fn outputs_and_offsets_commit_in_transactions() {
    let mock = MockCluster::new(1).unwrap();
    let (broker, t) = setup(&mock);
    let (records, evaluations) = input(5_000);
    produce(&broker, &t.input, 2, &records);
    let stop = Arc::new(AtomicBool::new(false));
    let h = spawn(config(&broker, &t), Arc::clone(&stop));
    assert_eq!(summed(&broker, &t.summary, evaluations), evaluations);
    stop.store(true, Ordering::Relaxed);
    let stats = h.join().unwrap();
    assert!(stats.commits >= 1, "{stats:?}");
    assert_eq!(stats.rewinds, 0, "{stats:?}");
}

#[test]
fn a_failed_transaction_is_aborted_and_rewound() {
    let mock = MockCluster::new(1).unwrap();
    let (broker, t) = setup(&mock);
    let (records, evaluations) = input(5_000);
    produce(&broker, &t.input, 2, &records);
    // The first commits of a transaction fail in a way the producer reports as
    // abortable: the pipeline must abort, rewind to the last commit and re-read.
    mock.request_errors(
        RDKafkaApiKey::AddOffsetsToTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID; 2],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let h = spawn(config(&broker, &t), Arc::clone(&stop));
    // Aborted records stay visible on the mock cluster; deduplicated by id (and
    // byte-identical, which `dedupe` checks), the counts are exact.
    assert_eq!(summed(&broker, &t.summary, evaluations), evaluations);
    stop.store(true, Ordering::Relaxed);
    let stats = h.join().unwrap();
    assert!(
        stats.rewinds >= 1,
        "the failed transaction rewound: {stats:?}"
    );
    assert!(stats.commits >= 1, "{stats:?}");
}

/// The exactly-once configuration of the binary tests: every output kind, dead letters,
/// a fixed transactional id.
fn eos_config(broker: &str, t: &Topics) -> String {
    t.config(
        broker,
        "size = \"10s\"\nlateness = \"2s\"\nidle_timeout = \"2s\"",
    )
    .replace(
        "[processing]\n",
        &format!(
            "[processing]\nexactly_once = true\ntransactional_id = \"{}-tx\"\n",
            t.group
        ),
    )
}

fn eos_input(n: usize, seed: u64) -> (Vec<Vec<u8>>, flagtally::generate::Tally) {
    let mut g = Generator::new(GenConfig {
        dialect: flagtally::generate::GenDialect::Mixed,
        flags: 8,
        contexts: 500,
        tracked_one_in: 25,
        malformed_one_in: 250,
        seed,
        ..GenConfig::default()
    });
    let records: Vec<Vec<u8>> = (0..n).map(|_| g.next_record()).collect();
    (records, g.into_tally())
}

/// What the Python `read_committed` reader found in one topic.
#[derive(Debug, serde::Deserialize)]
struct Seen {
    committed: u64,
    distinct: u64,
    repeats: u64,
    uncommitted: u64,
    evaluations: u64,
}

fn read_exactly_once(broker: &str, topics: &[&str]) -> std::collections::BTreeMap<String, Seen> {
    let out = std::process::Command::new(python())
        .arg(repo().join("tests/python/read_exactly_once.py"))
        .arg(broker)
        .args(topics)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits (read_committed) until the summaries add up, the features and dead letters are
/// all there, then asks the independent reader: every one exactly once.
fn assert_exactly_once(broker: &str, t: &Topics, tally: &flagtally::generate::Tally) -> String {
    read_until(
        broker,
        &t.summary,
        Duration::from_secs(180),
        summed_counters(tally.evaluations()),
    );
    read_until(
        broker,
        &t.feature,
        Duration::from_secs(60),
        distinct_ids(tally.tracked),
    );
    read_until(
        broker,
        &t.dead_letter,
        Duration::from_secs(60),
        distinct_ids(tally.malformed),
    );
    let seen = read_exactly_once(broker, &[&t.summary, &t.feature, &t.dead_letter]);
    let (s, f, d) = (&seen[&t.summary], &seen[&t.feature], &seen[&t.dead_letter]);
    assert_eq!(s.repeats, 0, "no summary twice: {seen:?}");
    assert_eq!(
        s.evaluations,
        tally.evaluations(),
        "every counter once: {seen:?}"
    );
    assert_eq!(
        (f.repeats, f.distinct),
        (0, tally.tracked),
        "features: {seen:?}"
    );
    assert_eq!(
        (d.repeats, d.distinct),
        (0, tally.malformed),
        "dead letters: {seen:?}"
    );
    format!(
        "summaries {} committed / {} in the log, features {} / {}, dead letters {} / {}",
        s.committed, s.uncommitted, f.committed, f.uncommitted, d.committed, d.uncommitted
    )
}

#[test]
fn sigkill_mid_transaction_three_times_everything_exactly_once_on_kafka() {
    let broker = broker();
    let t = Topics::create(broker, 4);
    let (records, tally) = eos_input(60_000, 43);
    assert!(tally.malformed > 0 && tally.tracked > 0);
    let config = eos_config(broker, &t);
    let feeder = {
        let (broker, topic) = (broker.to_owned(), t.input.clone());
        std::thread::spawn(move || {
            let p = producer(&broker);
            for (c, chunk) in records.chunks(3_000).enumerate() {
                for (i, v) in chunk.iter().enumerate() {
                    send(&p, &topic, ((c * 3_000 + i) % 4) as i32, v);
                }
                rdkafka::producer::Producer::flush(&*p, Duration::from_secs(60)).unwrap();
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    for round in 0..3u64 {
        let f = Flagtally::start(&config, &format!("{}-{round}", t.group));
        assert!(
            eventually(Duration::from_secs(60), || f
                .log_text()
                .contains("restored")),
            "{}",
            f.log_text()
        );
        // Between commits (every 500 ms): a transaction is open when the kill lands.
        std::thread::sleep(Duration::from_millis(
            2_000 + 700 * round + 130 * round * round,
        ));
        f.crash();
    }
    let f = Flagtally::start(&config, &format!("{}-final", t.group));
    feeder.join().unwrap();
    let counts = assert_exactly_once(broker, &t, &tally);
    report(&format!("exactly-once, 3 SIGKILLs: {counts}"));
    assert!(f.stop(Duration::from_secs(25)).success());
}

/// An abort right after a transaction's first records, as when partitions are revoked
/// just after a worker started (the broker's initial rebalance delay is 0 here, so a
/// process's second worker joins after the first began). An abort while a request adding
/// partitions to the transaction is in flight failed: once with `INVALID_TXN_STATE`,
/// fatal to the producer (confluentinc/librdkafka#4849), which stopped the process in
/// `a_second_instance_…`; here, before the producer waited for its records first, by
/// timing out with records stuck (three runs out of three, at the 39th to 81st abort).
/// Every abort must succeed.
#[test]
fn an_abort_right_after_a_transactions_first_records_succeeds() {
    use flagtally::kafka::producer::headers;
    use flagtally::pipeline::producer::{Outgoing, Producer};
    let broker = broker();
    let t = Topics::create(broker, 2);
    let config = Config::parse(&eos_config(broker, &t)).unwrap();
    let producer = Producer::new(
        &config.producer_plan(0).unwrap(),
        Arc::new(flagtally::admin::Admin::default()),
    )
    .unwrap();
    for i in 0..200 {
        // Records to several partitions, added to the transaction in more than one
        // request when some arrive while the first request is in flight.
        for j in 0..30 {
            let topic = [&t.summary, &t.feature, &t.index, &t.dead_letter][j % 4];
            let value = format!("record {i}.{j}");
            let record = Outgoing {
                topic,
                key: Some(value.as_bytes()),
                value: value.as_bytes(),
                headers: headers([]),
                timestamp_ms: None,
                summary: false,
            };
            producer.send(record, &|| false).unwrap();
            if j % 10 == 9 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        // From at once to 5 ms: the window is a partition request's round trip.
        std::thread::sleep(Duration::from_micros(250 * (i as u64 % 21)));
        if let Err(e) = producer.abort_transaction(Duration::from_secs(10)) {
            panic!("abort {i} failed: {e}");
        }
    }
}

/// A zombie: instance A is frozen (SIGSTOP) mid-stream, B starts with the same
/// transactional id and takes over; when A wakes up (SIGCONT) it is fenced — it cannot
/// commit anything and exits with an error — and the outputs stay exactly once.
#[test]
fn a_second_instance_with_the_same_transactional_id_fences_the_first() {
    let broker = broker();
    let t = Topics::create(broker, 2);
    let (records, tally) = eos_input(20_000, 47);
    let (first, second) = records.split_at(10_000);
    let config = eos_config(broker, &t);
    produce(broker, &t.input, 2, first);
    let a = Flagtally::start(&config, &format!("{}-a", t.group));
    let some = read_until(broker, &t.summary, Duration::from_secs(60), |_| true);
    assert!(!some.is_empty(), "a committed something before it froze");
    // Mid-stream: a steady trickle of records (most of them make an output), so that
    // when A freezes its open transaction holds outputs it must still commit or abort —
    // and either meets B's newer epoch. (Frozen once idle, with nothing sent since its
    // last commit, A would never touch its producer again, and so never learn it was
    // fenced: harmless, but not what this test is about.)
    let feeder = {
        let (broker, topic, second) = (broker.to_owned(), t.input.clone(), second.to_vec());
        std::thread::spawn(move || {
            let p = producer(&broker);
            for (i, v) in second.iter().enumerate() {
                send(&p, &topic, (i % 2) as i32, v);
                std::thread::sleep(Duration::from_micros(300));
            }
            rdkafka::producer::Producer::flush(&*p, Duration::from_secs(60)).unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(1_000));
    a.signal("STOP");
    let b = Flagtally::start(&config, &format!("{}-b", t.group));
    assert!(
        eventually(Duration::from_secs(60), || b
            .log_text()
            .contains("restored")),
        "b took over once a's session timed out; log b:\n{}",
        b.log_text()
    );
    feeder.join().unwrap();
    a.signal("CONT");
    let mut a = a;
    let status = a.wait(Duration::from_secs(60));
    let log = a.log_text();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the fenced zombie exits with an error: {status:?}; log a:\n{log}"
    );
    let lower = log.to_lowercase();
    assert!(
        lower.contains("fenced") || lower.contains("epoch"),
        "a says it was fenced; log a:\n{log}"
    );
    let counts = assert_exactly_once(broker, &t, &tally);
    report(&format!("exactly-once, zombie fenced: {counts}"));
    assert!(b.stop(Duration::from_secs(25)).success());
}

/// Two instances from one configuration file and one environment but for the id source
/// (`transactional_id = "…-{env:FLAGTALLY_TEST_POD}"`, the way a StatefulSet or a
/// per-host unit tells its instances apart) run side by side: distinct transactional
/// ids, neither fences the other, both stay up while input flows, and the outputs are
/// exactly once. (The same id fencing the older instance is
/// `a_second_instance_with_the_same_transactional_id_fences_the_first`.)
#[test]
fn instances_with_distinct_ids_from_one_template_run_side_by_side() {
    let broker = broker();
    let t = Topics::create(broker, 4);
    let (records, tally) = eos_input(20_000, 53);
    let config = eos_config(broker, &t).replace(
        &format!("transactional_id = \"{}-tx\"", t.group),
        "transactional_id = \"flagtally-{group}-{env:FLAGTALLY_TEST_POD}\"",
    );
    let (h, _) = produce_paced(
        broker,
        &t.input,
        Arc::new(records),
        4,
        10,
        Duration::from_millis(500),
    );
    let start = |pod: &str| {
        Flagtally::start_with_env(
            &config,
            &format!("{}-{pod}", t.group),
            &[
                ("FLAGTALLY__ADMIN__LISTEN", "off"),
                ("FLAGTALLY_TEST_POD", pod),
            ],
        )
    };
    let mut a = start("pod-0");
    a.wait_log("partitions assigned", 1, Duration::from_secs(60));
    let mut b = start("pod-1");
    b.wait_log("partitions assigned", 1, Duration::from_secs(60));
    h.join().unwrap();
    let counts = assert_exactly_once(broker, &t, &tally);
    for d in [&mut a, &mut b] {
        assert!(
            d.wait(Duration::from_millis(10)).is_none(),
            "both instances still up; log:\n{}",
            d.log_text()
        );
        let lower = d.log_text().to_lowercase();
        assert!(!lower.contains("fenced"), "{}", d.log_text());
    }
    report(&format!(
        "exactly-once, two instances, ids from a template: {counts}"
    ));
    assert!(a.stop(Duration::from_secs(25)).success());
    assert!(b.stop(Duration::from_secs(25)).success());
}

/// `validate` refuses exactly-once mode with no id source, naming the choices.
#[test]
fn exactly_once_without_an_id_source_is_refused_by_validate() {
    let t = Topics::named();
    let config = eos_config("127.0.0.1:9", &t)
        .replace(&format!("transactional_id = \"{}-tx\"\n", t.group), "");
    let path = std::env::temp_dir().join(format!("{}.toml", unique("eos-noid")));
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flagtally"))
        .args(["validate", "--config"])
        .arg(&path)
        .env_remove("FLAGTALLY__PROCESSING__TRANSACTIONAL_ID")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("processing.exactly_once needs a stable id per instance"),
        "{err}"
    );
}
