//! Header names are bytes: the Kafka protocol allows any, and rdkafka's own header
//! accessor panics on a name that is not UTF-8. One such record once crash-looped the
//! daemon (its dead letter forwards the input headers) and the sink worker. Here a
//! producer writes raw header names through librdkafka on good records, undecodable
//! records, a record that becomes a late correction, and records a sink reads, on
//! Apache Kafka: the daemon never exits, every good evaluation is counted, and the
//! bad names are forwarded losslessly into the dead letters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer as _};

const WINDOW: &str = r#"size = "10s"
lateness = "2s"
idle_timeout = "2s""#;

/// Headers with names that are not UTF-8 (and one that is), built through librdkafka
/// itself: rdkafka's `OwnedHeaders::insert` takes only `&str` names.
#[allow(unsafe_code)]
fn raw_headers() -> OwnedHeaders {
    let headers = OwnedHeaders::new_with_capacity(3);
    let ptr = std::ptr::from_ref(headers.as_borrowed())
        .cast_mut()
        .cast::<rdkafka::bindings::rd_kafka_headers_t>();
    for (name, value) in [
        (&b"bad-\xff\xfe"[..], &b"v1"[..]),
        (b"\xc3\x28", b"v2"),
        (b"fine", b"v3"),
    ] {
        // SAFETY: `ptr` is the live header list `headers` owns; librdkafka copies the
        // name (`name.len()` bytes) and the value.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                ptr,
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            )
        };
        assert_eq!(
            err,
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
    }
    headers
}

fn send_with_bad_names(broker: &str, topic: &str, values: &[Vec<u8>]) {
    send_all(broker, topic, values.iter().map(|v| (v.as_slice(), true)));
}

/// Sends `(value, with bad header names)` in order, to partition 0, with one producer.
fn send_all<'a>(broker: &str, topic: &str, values: impl Iterator<Item = (&'a [u8], bool)>) {
    let p = producer(broker);
    for (v, bad) in values {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(0).payload(v);
        if bad {
            rec = rec.headers(raw_headers());
        }
        p.send(rec).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn header_names_that_are_not_utf8_stop_nothing_and_lose_nothing() {
    let broker = broker();
    let t = Topics::create(broker, 1);
    let (records, tally) = generated(600, 31);
    // Good records, every third one with bad names; then undecodable ones with bad
    // names; then one dated an hour back, which becomes a late correction.
    let undecodable = [b"{not json".to_vec(), b"\xff".to_vec()];
    let input = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.as_slice(), i % 3 == 2))
        .take(300)
        .chain(undecodable.iter().map(|r| (r.as_slice(), true)))
        .chain(records[300..].iter().map(|r| (r.as_slice(), true)));
    send_all(broker, &t.input, input);
    let old = chrono_free_ms() - 3_600_000;
    let late = format!(
        r#"{{"kind":"feature","creationDate":{old},"key":"late-flag","version":1,"variation":0,"value":true,"default":false,"context":{{"kind":"user","key":"u"}}}}"#
    );
    let dir = std::env::temp_dir().join(unique("header-bytes-sink"));
    let config = format!(
        r#"{}
[[sinks]]
name = "files"
type = "file"
topics = ["{summary}", "{feature}"]
path = "{dir}"
format = "ndjson"
batch_size = 100
batch_timeout = "300ms"
"#,
        t.config_with_threads(broker, WINDOW, 1),
        summary = t.summary,
        feature = t.feature,
        dir = dir.display()
    );
    let f = Flagtally::start(&config, &t.group);
    let expected = tally.evaluations();
    read_until(
        broker,
        &t.summary,
        Duration::from_secs(120),
        summed_counters(expected),
    );
    // The late record after the windows closed; and records with bad names straight
    // into a topic the sink reads.
    send_with_bad_names(broker, &t.input, &[late.into_bytes()]);
    send_with_bad_names(broker, &t.feature, &[b"{\"kind\":\"feature\"}".to_vec()]);
    let recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(60),
        summed_counters(expected + 1),
    );
    let mut got = per_key(window_tally(dedupe(&recs).values()));
    let late_key = ("late-flag".to_owned(), "0".to_owned(), "1".to_owned());
    assert_eq!(got.remove(&late_key), Some(1), "the late correction");
    assert_eq!(got, tally.counters, "every good evaluation counted");
    // Two dead letters, their bad header names forwarded percent-encoded.
    let dlq = read_until(broker, &t.dead_letter, Duration::from_secs(30), {
        let mut n = 0;
        move |_| {
            n += 1;
            n == 2
        }
    });
    assert_eq!(dlq.len(), 2);
    for d in &dlq {
        assert_eq!(d.header("flagtally-raw-name:bad-%FF%FE"), Some("v1"));
        assert_eq!(d.header("flagtally-raw-name:%C3("), Some("v2"));
        assert_eq!(d.header("fine"), Some("v3"));
    }
    // The sink read past the hostile record too: the daemon is alive and stops cleanly.
    let log = f.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(f.stop(Duration::from_secs(25)).success(), "{log}");
}

fn chrono_free_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
