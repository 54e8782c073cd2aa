//! The floor of full-fidelity output (`scripts/bench-drain.sh` with `FULL=1`): a
//! librdkafka consumer that produces each record it reads, once, to an output topic,
//! with the producer settings flagtally's pipeline uses (`src/pipeline/producer.rs`:
//! idempotent, `acks=all`, `linger.ms` 5, `murmur2_random`, no delivery timeout), the
//! record's key and headers passed on. It drains TOPIC until it has read COUNT records,
//! waits until every produced record is acknowledged, and prints wall-clock seconds and
//! records/s. Its CPU less the no-op consumer's is librdkafka's own price of producing.
//!
//! With `shaped` as a fifth argument, each record goes out with the four headers every
//! flagtally output record carries (`flagtally-id`, a 36-byte UUID text;
//! `flagtally-kind`; `content-type`; `flagtally-source`, `topic/partition/offset#0`)
//! instead of the input's: librdkafka's price of a record shaped as flagtally's are
//! (each header is an allocation of librdkafka's, written into the batch, and freed).
//!
//! usage: noop_pipe BROKER TOPIC OUT_TOPIC COUNT [shaped]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(5..=6).contains(&args.len()) {
        // `cargo test --all-targets` runs benches without arguments: nothing to do.
        eprintln!("usage: noop_pipe BROKER TOPIC OUT_TOPIC COUNT [shaped]");
        return;
    }
    let shaped = args.get(5).is_some_and(|a| a == "shaped");
    let (broker, topic, out, count) = (
        &args[1],
        &args[2],
        &args[3],
        args[4].parse::<u64>().unwrap(),
    );
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", format!("noop-pipe-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "0")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut n = 0u64;
    let mut started = None;
    const ID_STEM: &[u8] = b"00000000-0000-8000-8000-";
    let (mut id, mut source) = (ID_STEM.to_vec(), Vec::with_capacity(64));
    while n < count {
        p.poll(Duration::ZERO);
        let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        started.get_or_insert_with(Instant::now);
        let mut rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(out).payload(m.payload().unwrap_or_default());
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if shaped {
            // The values vary per record, as flagtally's do, built without `core::fmt`
            // or an allocation (this pipe's own cost, kept small).
            let mut digits = itoa::Buffer::new();
            let offset = digits.format(m.offset()).as_bytes();
            id.truncate(ID_STEM.len());
            id.extend_from_slice(offset);
            id.resize(36, b'0');
            source.clear();
            source.extend_from_slice(m.topic().as_bytes());
            source.push(b'/');
            source.extend_from_slice(itoa::Buffer::new().format(m.partition()).as_bytes());
            source.push(b'/');
            source.extend_from_slice(offset);
            source.extend_from_slice(b"#0");
            let pairs: [(&str, &[u8]); 4] = [
                ("flagtally-id", &id),
                ("flagtally-kind", b"feature"),
                ("content-type", b"application/json"),
                ("flagtally-source", &source),
            ];
            let headers =
                pairs
                    .iter()
                    .fold(OwnedHeaders::new_with_capacity(4), |h, &(key, value)| {
                        h.insert(Header {
                            key,
                            value: Some(value),
                        })
                    });
            rec = rec.headers(headers);
        } else if let Some(h) = m.headers() {
            rec = rec.headers(h.detach());
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    p.poll(Duration::from_millis(10));
                    rec = back;
                }
                Err((e, _)) => panic!("producing: {e}"),
            }
        }
        n += 1;
    }
    p.flush(Duration::from_secs(120)).unwrap();
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!(
        "pipe: {n} records in and out, {secs:.2} s, {:.0} records/s",
        n as f64 / secs
    );
}
