//! The worker's consumer (`flagtally::source`) reads records a batch at a time from a
//! queue of its own, to which each partition is routed as it is assigned; rdkafka's
//! `poll` serves only the group's events. On librdkafka's mock cluster (in-process,
//! the same client code as against Kafka):
//! - every record comes through the batches, whole (key, value or none, timestamp,
//!   headers) and in its partition's order, and none through `poll`;
//! - partitions that move to another member and back are routed again: librdkafka
//!   clears a partition's forward when its fetch stops, and keeps an application's
//!   forward flag, so a partition not routed again would never be read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Topics;
use flagtally::config::Config;
use flagtally::source::{Assignment, Record, Source};
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Message};

/// What a record carried, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: Option<i64>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Seen {
    fn of(r: &Record<'_>) -> Self {
        Self {
            partition: r.partition(),
            offset: r.offset(),
            key: r.key().map(<[u8]>::to_vec),
            value: r.payload().map(<[u8]>::to_vec),
            timestamp: r.timestamp().to_millis(),
            headers: r
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// The record number `i` of a round sent to `partition`: some without a key, some
/// without a value, some with headers.
fn expected(i: usize, partition: i32) -> Seen {
    Seen {
        partition,
        offset: -1,
        key: (!i.is_multiple_of(7)).then(|| format!("key-{i}").into_bytes()),
        value: (!i.is_multiple_of(11)).then(|| format!("{{\"n\":{i}}}").into_bytes()),
        timestamp: Some(1_700_000_000_000 + i as i64),
        headers: if i.is_multiple_of(5) {
            vec![
                ("origin".to_owned(), format!("sdk-{i}").into_bytes()),
                ("empty".to_owned(), Vec::new()),
            ]
        } else {
            Vec::new()
        },
    }
}

/// Sends records `from..to` round-robin over `partitions`; returns what each is.
fn send(broker: &str, topic: &str, partitions: i32, from: usize, to: usize) -> Vec<Seen> {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let mut sent = Vec::new();
    for i in from..to {
        let e = expected(i, (i % partitions as usize) as i32);
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(e.partition)
            .timestamp(e.timestamp.unwrap());
        if let Some(k) = &e.key {
            r = r.key(k.as_slice());
        }
        if let Some(v) = &e.value {
            r = r.payload(v.as_slice());
        }
        if !e.headers.is_empty() {
            let mut hs = OwnedHeaders::new();
            for (k, v) in &e.headers {
                hs = hs.insert(Header {
                    key: k,
                    value: Some(v.as_slice()),
                });
            }
            r = r.headers(hs);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
        p.poll(Duration::ZERO);
        sent.push(e);
    }
    p.flush(Duration::from_secs(30)).unwrap();
    sent
}

fn source(broker: &str, t: &Topics) -> Source {
    let config = Config::parse(&format!(
        r#"
[kafka]
brokers = "{broker}"
group_id = "{group}"
input_topics = ["{input}"]
# The mock cluster's coordinator rebalances after a member's session timeout (45 s by
# default), whether a member joins or leaves.
consumer_properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "200" }}

[output]
dead_letter_topic = "{dlq}"
topics.summary = "{summary}"
"#,
        group = t.group,
        input = t.input,
        dlq = t.dead_letter,
        summary = t.summary,
    ))
    .unwrap();
    flagtally::source::consumer(
        &config.pipeline_plan(0).unwrap().source,
        Arc::new(flagtally::admin::Admin::default()),
    )
    .unwrap()
}

/// A consumer driven as the pipeline drives it, keeping what it reads.
struct Reader {
    source: Source,
    seen: Vec<Seen>,
    largest_batch: usize,
    /// Records `poll` handed over (none expected: every partition is routed).
    polled: usize,
}

impl Reader {
    fn new(broker: &str, t: &Topics) -> Self {
        Self {
            source: source(broker, t),
            seen: Vec::new(),
            largest_batch: 0,
            polled: 0,
        }
    }

    /// One turn: a batch, then the group's events; a revocation is completed at once
    /// (the pipeline commits first).
    fn turn(&mut self) {
        let mut batch = self.source.batch();
        let n = self.source.read(&mut batch, Duration::from_millis(50));
        self.largest_batch = self.largest_batch.max(n);
        for r in batch.iter() {
            self.seen.push(Seen::of(&r.unwrap()));
        }
        drop(batch);
        for _ in 0..16 {
            match self.source.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    self.polled += 1;
                    self.seen.push(Seen::of(&Record::of(&m)));
                }
                Some(Err(e)) => panic!("consumer error: {e}"),
                None => {}
            }
            for change in self.source.context().take_changes() {
                if let Assignment::Revoking(_) = change {
                    self.source
                        .context()
                        .finish_revocation(&self.source)
                        .unwrap();
                }
            }
        }
    }

    fn assigned(&self) -> usize {
        self.source.assignment().unwrap().count()
    }

    fn read(&self) -> BTreeSet<(i32, i64)> {
        self.seen.iter().map(|s| (s.partition, s.offset)).collect()
    }
}

/// Turns `readers` until `done` holds, or panics after 60 s naming `what`.
fn turn_until(readers: &mut [&mut Reader], what: &str, done: impl Fn(&[&mut Reader]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(readers) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for r in readers.iter_mut() {
            r.turn();
        }
    }
}

fn topics(
    mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    partitions: i32,
) -> Topics {
    let t = Topics::named();
    for (name, n) in t.all(partitions) {
        mock.create_topic(&name, n, 1).unwrap();
    }
    t
}

#[test]
fn records_come_whole_and_in_order_a_batch_at_a_time() {
    let mock = MockCluster::new(1).unwrap();
    let broker = mock.bootstrap_servers();
    let t = topics(&mock, 3);
    let sent = send(&broker, &t.input, 3, 0, 3_000);
    let mut r = Reader::new(&broker, &t);
    turn_until(&mut [&mut r], "3 000 records", |rs| {
        rs[0].seen.len() >= sent.len()
    });

    assert_eq!(
        r.polled, 0,
        "records came through poll: a partition was not routed"
    );
    assert!(r.largest_batch > 1, "one record per read: not batched");
    assert_eq!(r.seen.len(), sent.len(), "records read more than once");
    // Per partition: offsets 0, 1, 2, … and the records in the order sent.
    let mut by_partition: BTreeMap<i32, Vec<&Seen>> = BTreeMap::new();
    for s in &r.seen {
        by_partition.entry(s.partition).or_default().push(s);
    }
    for (p, read) in by_partition {
        let sent: Vec<&Seen> = sent.iter().filter(|e| e.partition == p).collect();
        assert_eq!(read.len(), sent.len(), "partition {p}");
        for (n, (got, want)) in read.iter().zip(&sent).enumerate() {
            let want = Seen {
                offset: n as i64,
                ..(*want).clone()
            };
            assert_eq!(**got, want, "partition {p}, record {n}");
        }
    }
}

#[test]
fn partitions_moved_away_and_back_are_read_again() {
    let mock = MockCluster::new(1).unwrap();
    let broker = mock.bootstrap_servers();
    let t = topics(&mock, 4);
    let mut a = Reader::new(&broker, &t);
    let first = send(&broker, &t.input, 4, 0, 400);
    turn_until(&mut [&mut a], "the first round", |rs| {
        rs[0].seen.len() >= first.len()
    });

    // A second member joins: the partitions are shared, and those moving to it are
    // revoked from the first.
    let mut b = Reader::new(&broker, &t);
    turn_until(&mut [&mut a, &mut b], "the partitions shared", |rs| {
        rs[1].assigned() > 0 && rs[0].assigned() + rs[1].assigned() == 4
    });
    let second = send(&broker, &t.input, 4, 400, 800);
    turn_until(&mut [&mut a, &mut b], "the second round", |rs| {
        let read: BTreeSet<(i32, i64)> = rs[0].read().union(&rs[1].read()).copied().collect();
        second
            .iter()
            .enumerate()
            .all(|(i, e)| read.contains(&(e.partition, 100 + i as i64 / 4)))
    });
    assert_eq!(b.polled, 0, "records came through the second member's poll");

    // It leaves: every partition comes back to the first, which must route each again.
    drop(b);
    turn_until(&mut [&mut a], "every partition back", |rs| {
        rs[0].assigned() == 4
    });
    let third = send(&broker, &t.input, 4, 800, 1_200);
    turn_until(
        &mut [&mut a],
        "the third round, read by the first member",
        |rs| {
            let read = rs[0].read();
            third
                .iter()
                .enumerate()
                .all(|(i, e)| read.contains(&(e.partition, 200 + i as i64 / 4)))
        },
    );
    assert_eq!(
        a.polled, 0,
        "records came through poll: a partition was not routed"
    );
}
