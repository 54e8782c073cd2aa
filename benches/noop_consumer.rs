//! The baseline of the end-to-end drain benchmark (`scripts/bench-drain.sh`): a
//! librdkafka consumer that does nothing with the records it reads. It drains TOPIC
//! until it has read COUNT records and prints wall-clock seconds and records/s.
//!
//! usage: noop_consumer BROKER TOPIC COUNT
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        // `cargo test --all-targets` runs benches without arguments: nothing to do.
        eprintln!("usage: noop_consumer BROKER TOPIC COUNT");
        return;
    }
    let (broker, topic, count) = (&args[1], &args[2], args[3].parse::<u64>().unwrap());
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", broker)
        .set("group.id", format!("noop-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    if std::env::var_os("NOOP_AS_FLAGTALLY").is_some() {
        // flagtally's own consumer settings (src/source.rs), to compare like with like.
        cc.set("statistics.interval.ms", "5000")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed");
    }
    let c: BaseConsumer = cc.create().unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut n = 0u64;
    let mut bytes = 0usize;
    let mut started = None;
    while n < count {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
            n += 1;
        }
    }
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!(
        "noop: {n} records, {bytes} bytes, {secs:.2} s, {:.0} records/s",
        n as f64 / secs
    );
}
