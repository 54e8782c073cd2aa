//! Every compression codec in and out, on Apache Kafka. Producers pick their codec per
//! batch, so one partition can hold plain, gzip, snappy, lz4 and zstd batches in turn
//! (a zstd batch once stalled its partition for good: the client was built without
//! zstd). Each run reads such partitions and writes its outputs with one codec; the
//! summaries must be exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use flagtally::kafka::producer::PolledProducer;
use rdkafka::ClientConfig;
use rdkafka::producer::{DefaultProducerContext, Producer as _};

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const WINDOW: &str = r#"size = "10s"
lateness = "2s"
idle_timeout = "2s""#;

fn producer_with(broker: &str, codec: &str) -> PolledProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.codec", codec)
        .create()
        .unwrap_or_else(|e| panic!("a {codec} producer: {e}"))
}

/// Writes `values` in chunks of 50, each chunk with the next codec in turn (flushed
/// before the next, so the partition holds them in this order), over `partitions`.
fn produce_rotating(broker: &str, topic: &str, partitions: i32, values: &[Vec<u8>]) {
    let producers: Vec<_> = CODECS.iter().map(|c| producer_with(broker, c)).collect();
    for (n, chunk) in values.chunks(50).enumerate() {
        let p = &producers[n % producers.len()];
        for (i, v) in chunk.iter().enumerate() {
            send(p, topic, (i as i32) % partitions, v);
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }
}

#[test]
fn every_codec_in_and_out() {
    let broker = broker();
    let (records, tally) = generated(4_000, 23);
    for out in ["gzip", "snappy", "lz4", "zstd"] {
        let t = Topics::create(broker, 2);
        produce_rotating(broker, &t.input, 2, &records);
        let config = t.config_with_threads(broker, WINDOW, 1).replace(
            "[window]",
            &format!("producer_properties = {{ \"compression.type\" = \"{out}\" }}\n\n[window]"),
        );
        let f = Flagtally::start(&config, &t.group);
        let mut recs = read_until(
            broker,
            &t.summary,
            Duration::from_secs(120),
            summed_counters(tally.evaluations()),
        );
        recs.extend(read_until(
            broker,
            &t.summary,
            Duration::from_secs(4),
            |_| false,
        ));
        let got = per_key(window_tally(dedupe(&recs).values()));
        assert_eq!(
            got, tally.counters,
            "inputs in every codec, outputs in {out}"
        );
        let features = read_until(
            broker,
            &t.feature,
            Duration::from_secs(60),
            distinct_ids(tally.tracked),
        );
        assert_eq!(dedupe(&features).len() as u64, tally.tracked, "{out}");
        // The outputs are stored in that codec (librdkafka sends a batch that would
        // not shrink uncompressed: small summary batches may be plain).
        let want = CODECS.iter().position(|c| *c == out).unwrap() as u8;
        for (topic, at_least_one) in [(&t.summary, false), (&t.feature, true)] {
            let codecs: Vec<u8> = (0..2)
                .flat_map(|p| batch_codecs(&segment(topic, p)))
                .collect();
            assert!(
                codecs.iter().all(|c| *c == want || *c == 0),
                "{topic} in {out}: batch codecs {codecs:?}"
            );
            assert!(
                !at_least_one || codecs.contains(&want),
                "{topic} in {out}: batch codecs {codecs:?}"
            );
        }
        let log = f.log_text();
        assert!(!log.contains("Not implemented"), "{log}");
        assert!(f.stop(Duration::from_secs(25)).success(), "{log}");
    }
}
