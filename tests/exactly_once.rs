//! Exactly-once mode against librdkafka's mock cluster. No broker installable here
//! supports transactions, and the mock cluster accepts every transactional call without
//! storing transactional offsets or hiding aborted records: these tests prove the call
//! flow (init, begin, send offsets, commit, abort, rewind), not exactly-once itself.
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
        let mut p = Pipeline::new(config, Arc::new(AtomicBool::new(false)), admin).unwrap();
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
