//! A record batch the client cannot read, on Apache Kafka (issue 24, item 0): 50
//! plain records, 50 in zstd batches whose compressed bytes are then damaged in the
//! broker's own segment file (the broker serves them as they are), and 50 plain ones.
//! librdkafka fetches such a batch again and again; before, the partition stalled there
//! for good, silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::producer::Producer as _;

/// Damages the compressed records of every batch whose base offset is in `range`
/// (their headers stay intact, so the broker still serves them); returns those base
/// offsets.
fn damage(file: &PathBuf, range: std::ops::Range<i64>) -> Vec<i64> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).unwrap();
    let mut at = 0usize;
    let mut damaged = Vec::new();
    while at + 12 <= bytes.len() {
        let base = i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        // The record batch header is 61 bytes; the compressed records follow.
        if range.contains(&base) && len > 49 + 16 {
            f.seek(SeekFrom::Start((at + 61) as u64)).unwrap();
            f.write_all(&[0xAB; 16]).unwrap();
            damaged.push(base);
        }
        at += 12 + len;
    }
    f.sync_all().unwrap();
    damaged
}

#[test]
fn an_unreadable_batch_is_skipped_with_a_dead_letter_or_stops_the_instance() {
    let broker = broker();
    let t = Topics::create(broker, 1);
    let now = now_ms() - 60_000;
    let plain = producer(broker);
    let zstd: flagtally::kafka::producer::PolledProducer<
        rdkafka::producer::DefaultProducerContext,
    > = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("enable.idempotence", "true")
        .set("linger.ms", "50")
        .set("compression.codec", "zstd")
        .create()
        .unwrap();
    for (p, users) in [(&plain, 0..50), (&zstd, 50..100), (&plain, 100..150)] {
        for u in users {
            send(
                p,
                &t.input,
                0,
                feature(now + u as i64, "f", &format!("u{u}")).as_bytes(),
            );
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }
    let damaged = damage(&segment(&t.input, 0), 50..100);
    assert!(!damaged.is_empty() && damaged[0] == 50, "{damaged:?}");

    // skip (the default): the 100 readable evaluations are counted, each damaged batch
    // has one dead letter naming its offsets, and together they name 50–99.
    let admin = format!("127.0.0.1:{}", free_port());
    let f = Flagtally::start_with_env(
        &t.config_with_threads(
            broker,
            "size = \"10m\"\nlateness = \"2s\"\nidle_timeout = \"2s\"",
            1,
        ),
        &t.group,
        &[("FLAGTALLY__ADMIN__LISTEN", admin.as_str())],
    );
    let summaries = read_until(
        broker,
        &t.summary,
        Duration::from_secs(120),
        summed_counters(100),
    );
    assert_eq!(
        total(&window_tally(dedupe(&summaries).values())),
        100,
        "{}",
        f.log_text()
    );
    let letters = read_until(broker, &t.dead_letter, Duration::from_secs(60), {
        let (n, mut seen) = (damaged.len(), 0);
        move |_| {
            seen += 1;
            seen >= n
        }
    });
    let mut ranges: Vec<(i64, i64)> = dedupe(&letters)
        .values()
        .map(|r| {
            assert_eq!(r.header("flagtally-error-reason"), Some("unreadable_batch"));
            assert!(r.value.is_empty());
            (
                r.header("flagtally-source-offset")
                    .unwrap()
                    .parse()
                    .unwrap(),
                r.header("flagtally-source-offset-last")
                    .unwrap()
                    .parse()
                    .unwrap(),
            )
        })
        .collect();
    ranges.sort_unstable();
    assert_eq!(ranges.len(), damaged.len(), "{ranges:?}");
    assert_eq!(
        ranges.iter().map(|r| r.0).collect::<Vec<_>>(),
        damaged,
        "one dead letter per damaged batch, at its base offset"
    );
    assert_eq!(ranges.last().unwrap().1, 99, "{ranges:?}");
    // /readyz stays ready and names each skipped batch (the latest ones it keeps),
    // partition and offsets.
    let (status, readyz) = http_get(&admin, "/readyz").unwrap();
    assert_eq!(status, 200, "{readyz}");
    for (from, to) in ranges.iter().rev().take(flagtally::admin::MAX_NOTES) {
        assert!(
            readyz.contains(&format!(
                "note: skipped an unreadable record batch: {}/0 offsets {from}–{to} (dead-lettered)",
                t.input
            )),
            "{readyz}"
        );
    }
    let (_, metrics) = http_get(&admin, "/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "flagtally_unreadable_batches_total{{topic=\"{}\",policy=\"skip\"}} {}",
            t.input,
            damaged.len()
        )),
        "{metrics}"
    );
    assert!(f.stop(Duration::from_secs(30)).success());

    // stop: another group reads the same partition and exits 1, naming where.
    let stop = t
        .config_with_threads(broker, "size = \"10m\"", 1)
        .replace(
            &format!("group_id = \"{}\"", t.group),
            &format!("group_id = \"{}-stop\"", t.group),
        )
        .replace(
            "[window]",
            "[input]\nunreadable_batches = \"stop\"\n\n[window]",
        );
    let mut g = Flagtally::start(&stop, &format!("{}-stop", t.group));
    let status = g.wait(Duration::from_secs(60)).expect("it stops");
    assert_eq!(status.code(), Some(1));
    let log = g.log_text();
    assert!(
        log.contains(&format!(
            "unreadable record batch at {}/0 offset 50",
            t.input
        )) && log.contains("unreadable_batches = \"stop\""),
        "{log}"
    );
}
