//! A sink worker: reads output topics as its own consumer group and delivers batches to
//! one destination, on a thread of its own, so a slow or broken destination never stalls
//! the processor or another sink.
//!
//! - Records are read `read_committed` from the group's committed offset (committed
//!   only after the destination acknowledged, so never past it); records before the
//!   destination's own position ([`Destination::stored_offsets`], written with the
//!   data) are skipped: the destination's position is the truth.
//! - A batch (up to `batch_size` records or `batch_timeout`) is written whole or not at
//!   all. While the destination fails transiently (unreachable, timeouts, HTTP 5xx, 408,
//!   429, serialization failures), the worker stops reading and retries with capped
//!   exponential backoff and jitter; nothing is skipped. A permanent refusal
//!   ([`is_permanent`]: HTTP 4xx, constraint violations, data the destination cannot
//!   encode) is bisected down to the records refused, which go to the sink's
//!   dead-letter topic with the reason; the rest is written and the sink moves on.
//! - A panic in a sink is caught: the sink is reported not ready and restarted.
//! - Group offsets are committed after the destination acknowledged (for lag
//!   monitoring; resuming uses the destination's position).
//! - A rebalance drops the revoked partitions' records from the batch being gathered
//!   (all of them under an eager rebalance; under `cooperative-sticky` the kept
//!   partitions' records stay, as their fetch positions go on) and re-reads the
//!   destination's positions.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};

use super::destination::{Destination, SinkRecord, is_permanent};
use super::{Delivery, Kind, Plan, SinkConfig};
use crate::admin::Admin;
use crate::deadletter::Refusal;
use crate::emit::header;
use crate::kafka::KafkaConfig;

/// Exponential backoff with full jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The next wait: a random duration up to `initial × 2^attempt`, capped at `max`.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt += 1;
        cap.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[derive(Default)]
struct SinkContext {
    rebalanced: AtomicBool,
    /// Partitions revoked since the worker last looked: their records leave the batch
    /// being gathered (their new owner reads them from the last commit).
    revoked: Mutex<Vec<(String, i32)>>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.revoked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(
                        tpl.elements()
                            .iter()
                            .map(|e| (e.topic().to_owned(), e.partition())),
                    );
                self.rebalanced.store(true, Ordering::Relaxed);
            }
            Rebalance::Assign(_) => self.rebalanced.store(true, Ordering::Relaxed),
            Rebalance::Error(_) => {}
        }
    }
}

type SinkConsumer = BaseConsumer<SinkContext>;

/// A running sink.
pub struct Worker {
    name: String,
    config: Delivery,
    consumer: SinkConsumer,
    destination: Box<dyn Destination>,
    admin: Arc<Admin>,
    /// Per topic partition: the destination holds everything before this offset.
    floor: BTreeMap<(String, i32), i64>,
    /// Records the destination refuses for good go here, with the reason.
    dead_letters: Option<DeadLetters>,
}

/// A sink's dead-letter topic: its producer, its `max.message.bytes`, and the dead
/// letters sent and not yet confirmed (flushed, each delivery report seen) — none may
/// be outstanding when the destination's position or the group offset moves past
/// their records.
struct DeadLetters {
    topic: String,
    producer: crate::kafka::producer::PolledProducer<Confirmations>,
    limit: usize,
    unconfirmed: Vec<Letter>,
}

impl DeadLetters {
    /// Queues `letter` with `key` and `value`, fitted to the topic; as its stub when it
    /// is one or nothing but a stub fits.
    fn send(&self, letter: &Letter, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        use crate::deadletter::fit;
        let own_size: usize = letter.own.iter().map(|(k, v)| fit::header_size(k, v)).sum();
        let plan = if letter.stub {
            fit::Fit::Stub
        } else {
            fit::fit_dead_letter(self.limit, own_size, key.len(), &[], value.len())
        };
        let own: Vec<(&str, &[u8])> = letter
            .own
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let (pairs, key, value) = if plan == fit::Fit::Stub {
            let stub = fit::stub_headers(&own, letter.value_len, letter.key_len, 0);
            (stub, None, &[][..])
        } else {
            let kept = match plan {
                fit::Fit::Cut { value_kept, .. } => value_kept,
                _ => value.len(),
            };
            let mut pairs = letter.own.clone();
            if kept < value.len() {
                pairs.push((
                    crate::deadletter::header::TRUNCATED.to_owned(),
                    value.len().to_string().into_bytes(),
                ));
            }
            (pairs, Some(key), &value[..kept])
        };
        let hs =
            crate::kafka::producer::headers(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        let mut record: rdkafka::producer::BaseRecord<'_, [u8], [u8]> =
            rdkafka::producer::BaseRecord::to(&self.topic)
                .payload(value)
                .headers(hs);
        if let Some(key) = key {
            record = record.key(key);
        }
        crate::kafka::producer::send_waiting(&self.producer, record, &|| false)
            .with_context(|| format!("writing a dead letter to {}", self.topic))?;
        Ok(())
    }
}

/// What a dead letter's stub needs: flagtally's headers and the sizes left out.
struct Letter {
    id: String,
    own: Vec<(String, Vec<u8>)>,
    value_len: usize,
    key_len: usize,
    stub: bool,
}

/// Delivery reports of the dead-letter producer: the ids of the dead letters that
/// failed, each with the error and whether it is permanent (a refusal: the dead letter
/// itself can never be written).
#[derive(Default)]
struct Confirmations {
    failed: Mutex<Vec<(String, String, bool)>>,
}

impl ClientContext for Confirmations {}

impl rdkafka::producer::ProducerContext for Confirmations {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        use rdkafka::message::Headers as _;
        if let Err((e, m)) = result {
            let id = m
                .headers()
                .and_then(|hs| hs.iter().find(|h| h.key == header::ID))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            let permanent = e
                .rdkafka_error_code()
                .is_some_and(crate::deadletter::fit::is_permanent);
            if let Ok(mut f) = self.failed.lock() {
                f.push((id, e.to_string(), permanent));
            }
        }
    }
}

impl SinkRecord {
    fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        let offset = m.offset();
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset,
            kind: header_text(m, header::KIND).unwrap_or_default(),
            id: header_text(m, header::ID)
                .unwrap_or_else(|| format!("{}/{}/{}", m.topic(), m.partition(), offset)),
            value: m.payload().unwrap_or_default().to_vec(),
            window_start: header_text(m, header::WINDOW_START).and_then(|v| v.parse().ok()),
            window_end: header_text(m, header::WINDOW_END).and_then(|v| v.parse().ok()),
            late: header_text(m, header::LATE).is_some_and(|v| v == "true"),
            source: header_text(m, header::SOURCE),
        }
    }
}

/// The next offset per topic partition after the records of `slice`.
fn positions_of(slice: &[SinkRecord]) -> BTreeMap<(String, i32), i64> {
    let mut out = BTreeMap::new();
    for r in slice {
        let next = out
            .entry((r.topic.clone(), r.partition))
            .or_insert(r.offset + 1);
        *next = (*next).max(r.offset + 1);
    }
    out
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A header's value as text, read as bytes: any producer may write to the topics a sink
/// reads, and a header name that is not UTF-8 must not panic the sink.
fn header_text(m: &rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<String> {
    crate::source::Record::of(m)
        .header(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl Worker {
    pub fn new(
        kafka: &KafkaConfig,
        config: Delivery,
        destination: Box<dyn Destination>,
        admin: Arc<Admin>,
    ) -> anyhow::Result<Self> {
        let dead_letters = match &config.dead_letter_topic {
            Some(topic) => {
                let mut pc = ClientConfig::new();
                pc.set("bootstrap.servers", &kafka.brokers)
                    .set("enable.idempotence", "true")
                    .set("acks", "all");
                kafka.apply(&mut pc, &kafka.producer_properties);
                let producer = pc
                    .create_with_context(Confirmations::default())
                    .with_context(|| {
                        format!("sink {}: creating its dead-letter producer", config.name)
                    })?;
                let limit = crate::kafka::describe_limits(kafka, &[topic.as_str()])
                    .get(topic.as_str())
                    .copied()
                    .unwrap_or(crate::kafka::DEFAULT_TOPIC_LIMIT);
                Some(DeadLetters {
                    topic: topic.clone(),
                    producer,
                    limit: limit
                        .saturating_sub(crate::deadletter::fit::RECORD_MARGIN)
                        .min(1_000_000),
                    unconfirmed: Vec::new(),
                })
            }
            None => None,
        };
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &kafka.brokers)
            .set("group.id", config.group())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed");
        kafka.apply(&mut cc, &kafka.consumer_properties);
        let consumer: SinkConsumer = cc
            .create_with_context(SinkContext::default())
            .with_context(|| format!("sink {}: creating its consumer", config.name))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        admin
            .health
            .set_sink(&config.name, Some("starting".to_owned()));
        Ok(Self {
            name: config.name.clone(),
            config,
            consumer,
            destination,
            admin,
            floor: BTreeMap::new(),
            dead_letters,
        })
    }

    /// Writes `slice`, retrying transient errors with backoff; a permanent refusal is
    /// bisected down to the refused records, which are set aside. False when stopped.
    /// When it returns true, the destination holds the batch (and its `positions`,
    /// if it stores them) and the dead letters of what it refused are acknowledged.
    fn deliver(
        &mut self,
        slice: &[SinkRecord],
        positions: &BTreeMap<(String, i32), i64>,
        stop: &AtomicBool,
    ) -> anyhow::Result<bool> {
        let mut refused = false;
        if !self.deliver_part(slice, positions, stop, &mut refused)? {
            return Ok(false);
        }
        if refused && self.destination.stores_positions() {
            // The bisection's writes stored the positions of the parts written; this
            // one moves them past records refused at the end of the batch too.
            return self.deliver_part(&[], positions, stop, &mut refused);
        }
        // Before the caller commits the group offsets past them.
        self.flush_dead_letters()?;
        Ok(true)
    }

    /// [`Worker::deliver`] of one part of a batch; `refused` is set when a record of
    /// it is set aside.
    fn deliver_part(
        &mut self,
        slice: &[SinkRecord],
        positions: &BTreeMap<(String, i32), i64>,
        stop: &AtomicBool,
        refused: &mut bool,
    ) -> anyhow::Result<bool> {
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        loop {
            // No position may move past a record whose dead letter is not acknowledged.
            self.flush_dead_letters()?;
            let e = match self.destination.write(slice, positions) {
                Ok(()) => return Ok(true),
                Err(e) => e,
            };
            self.counters().errors.inc();
            let text = format!("{e:#}");
            if is_permanent(&e) {
                if let [poison] = slice {
                    // Its dead letter is flushed before the next write: one flush for
                    // neighbours refused together, and no write of its own.
                    self.set_aside(poison, &text)?;
                    *refused = true;
                    return Ok(true);
                }
                if slice.is_empty() {
                    tracing::error!(sink = %self.name, "the destination refused a position update: {text}");
                    return Ok(true);
                }
                tracing::warn!(sink = %self.name, records = slice.len(), "the destination refused the batch ({text}); bisecting to the refused records");
                let (a, b) = slice.split_at(slice.len() / 2);
                return Ok(self.deliver_part(a, &positions_of(a), stop, refused)?
                    && self.deliver_part(b, &positions_of(b), stop, refused)?);
            }
            tracing::error!(sink = %self.name, records = slice.len(), "write failed: {text}; retrying");
            self.set_health(Some(text));
            if !self.sleep(backoff.next_delay(), stop) {
                // Stopped: nothing was written; a restart resumes from the
                // destination's position.
                return Ok(false);
            }
            self.counters().retries.inc();
        }
    }

    /// This sink's counters.
    fn counters(&self) -> crate::metrics::SinkCounters {
        self.admin.metrics.sink(&self.name)
    }

    /// A record the destination refuses for good: to the sink's dead-letter topic with
    /// the reason (confirmed before the next write: [`Worker::flush_dead_letters`]),
    /// fitted to the topic's `max.message.bytes` (the payload cut, or a stub where not
    /// even the key and headers fit); without a dead-letter topic, logged and counted.
    fn set_aside(&mut self, r: &SinkRecord, error: &str) -> anyhow::Result<()> {
        self.counters().rejected.inc();
        let Some(letters) = &mut self.dead_letters else {
            tracing::error!(sink = %self.name, id = %r.id, "the destination refused a record for good ({error}); no dead-letter topic: dropped");
            return Ok(());
        };
        tracing::warn!(sink = %self.name, id = %r.id, topic = %letters.topic, "the destination refused a record for good ({error}); it goes to the dead-letter topic");
        let id_of = format!("{}/{}", self.name, r.id);
        let own: Vec<(String, Vec<u8>)> = Refusal {
            id: &id_of,
            error,
            reason: "sink_rejected",
            sink: Some(&self.name),
            kind: &r.kind,
            topic: &r.topic,
            partition: Some(r.partition),
            offset: Some(r.offset),
        }
        .headers()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let id = String::from_utf8_lossy(&own[0].1).into_owned();
        let letter = Letter {
            id,
            own,
            value_len: r.value.len(),
            key_len: r.id.len(),
            stub: false,
        };
        letters.send(&letter, r.id.as_bytes(), &r.value)?;
        letters.unconfirmed.push(letter);
        Ok(())
    }

    /// Waits until every dead letter sent is confirmed. One the broker refused is sent
    /// again as its stub (and confirmed in turn); a refused stub is given up, logged.
    fn flush_dead_letters(&mut self) -> anyhow::Result<()> {
        use rdkafka::producer::Producer as _;
        let Some(letters) = &mut self.dead_letters else {
            return Ok(());
        };
        while !letters.unconfirmed.is_empty() {
            crate::kafka::producer::flush_threaded(&letters.producer, Duration::from_secs(60))
                .with_context(|| format!("sink {}: writing dead letters", self.name))?;
            let failed = std::mem::take(
                &mut *letters
                    .producer
                    .context()
                    .failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            let mut sent = std::mem::take(&mut letters.unconfirmed);
            for (id, e, permanent) in failed {
                if !permanent {
                    // Not delivered, but not refused either (the broker out of reach
                    // past the producer's timeout): the sink restarts from its
                    // destination's position and sets the record aside again.
                    anyhow::bail!("sink {}: a dead letter was not delivered: {e}", self.name);
                }
                let Some(mut letter) = sent
                    .iter()
                    .position(|l| l.id == id)
                    .map(|i| sent.swap_remove(i))
                else {
                    continue;
                };
                if letter.stub {
                    tracing::error!(sink = %self.name, id, "the broker refused a dead letter's stub ({e}); given up");
                    continue;
                }
                tracing::warn!(sink = %self.name, id, "the broker refused a dead letter ({e}); writing its stub");
                letter.stub = true;
                letters.send(&letter, &[], &[])?;
                letters.unconfirmed.push(letter);
            }
        }
        Ok(())
    }

    fn set_health(&self, problem: Option<String>) {
        self.admin.health.set_sink(&self.name, problem);
    }

    /// Connects, retrying with backoff while the destination is unreachable (a bad
    /// destination is reported in `/readyz`, not a crash loop). False when stopped.
    fn connect(&mut self, stop: &AtomicBool) -> bool {
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        loop {
            match self.destination.connect() {
                Ok(()) => {
                    self.set_health(None);
                    return true;
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    tracing::error!(sink = %self.name, "cannot reach the destination: {text}; retrying");
                    self.set_health(Some(text));
                }
            }
            if !self.sleep(backoff.next_delay(), stop) {
                return false;
            }
        }
    }

    /// Sleeps; false when stopped meanwhile. The consumer is not polled: a record
    /// polled now could not be written. An outage longer than `max.poll.interval.ms`
    /// makes the worker leave its group; the next poll rejoins, and the rebalance
    /// re-reads from the last commit. Rows are keyed by id, so nothing doubles.
    fn sleep(&self, d: Duration, stop: &AtomicBool) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Reads the destination's positions: records before them are already there.
    fn load_positions(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        let mut floor = BTreeMap::new();
        for topic in &self.config.topics {
            loop {
                match self.destination.stored_offsets(topic) {
                    Ok(o) => {
                        floor.extend(o.into_iter().map(|(p, next)| ((topic.clone(), p), next)));
                        break;
                    }
                    Err(e) => {
                        self.set_health(Some(format!("{e:#}")));
                        tracing::warn!(sink = %self.name, "reading stored offsets: {e:#}; retrying");
                        if !self.sleep(backoff.next_delay(), stop) {
                            anyhow::bail!("stopped");
                        }
                    }
                }
            }
        }
        self.set_health(None);
        tracing::info!(sink = %self.name, positions = ?floor, "resuming after the destination's positions");
        self.floor = floor;
        Ok(())
    }

    /// Runs until `stop`; a batch in flight is finished first.
    pub fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        if !self.connect(stop) {
            return Ok(());
        }
        self.load_positions(stop)?;
        let written = self.counters().records;
        let mut batch: Vec<SinkRecord> = Vec::new();
        let mut positions: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let polled = match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => Some(SinkRecord::of(&m)),
                Some(Err(e)) => {
                    tracing::warn!(sink = %self.name, "consumer: {e}");
                    None
                }
                None => None,
            };
            if self
                .consumer
                .context()
                .rebalanced
                .swap(false, Ordering::Relaxed)
            {
                // Only the revoked partitions' records leave the batch. Under an eager
                // rebalance that is all of them, and every partition assigned again
                // resumes from its last commit. Under `cooperative-sticky` the kept
                // partitions go on from their fetch position: dropping their records
                // here would lose them.
                let revoked = std::mem::take(
                    &mut *self
                        .consumer
                        .context()
                        .revoked
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                if !revoked.is_empty() {
                    batch.retain(|r| {
                        !revoked
                            .iter()
                            .any(|(t, p)| *t == r.topic && *p == r.partition)
                    });
                    positions = positions_of(&batch);
                }
                if let Err(e) = self.load_positions(stop) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    return Err(e);
                }
                // The record polled with the rebalance is from a partition still
                // assigned: it is kept, below.
            }
            if let Some(r) = polled {
                let key = (r.topic.clone(), r.partition);
                if self.floor.get(&key).is_some_and(|f| r.offset < *f) {
                    continue;
                }
                if batch.is_empty() {
                    started = Instant::now();
                }
                positions.insert(key, r.offset + 1);
                batch.push(r);
            }
            let full = batch.len() >= self.config.batch_size
                || batch.iter().map(|r| r.value.len()).sum::<usize>() >= self.config.batch_bytes;
            let due = !batch.is_empty() && started.elapsed() >= self.config.batch_timeout;
            if !(full || due) {
                continue;
            }
            // Deliver, retrying until the destination takes it (or sets aside what
            // it refuses for good).
            if !self.deliver(&batch, &positions, stop)? {
                return Ok(());
            }
            written.inc_by(batch.len() as u64);
            self.set_health(None);
            {
                let mut tpl = TopicPartitionList::new();
                for ((topic, partition), next) in &positions {
                    tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
                }
                let mode = if self.destination.stores_positions() {
                    CommitMode::Async
                } else {
                    CommitMode::Sync
                };
                if let Err(e) = self.consumer.commit(&tpl, mode) {
                    tracing::warn!(sink = %self.name, "group offset commit: {e}");
                }
            }
            batch.clear();
            positions.clear();
        }
        Ok(())
    }
}

/// The destination a sink's configuration names.
fn destination_of(sink: &SinkConfig) -> anyhow::Result<Box<dyn Destination>> {
    Ok(match &sink.kind {
        Kind::Postgres(c) => Box::new(super::postgres::Postgres::new(
            &sink.delivery.name,
            c.settings(),
        )),
        Kind::File(c) => Box::new(super::file::Files::new(c.settings())?),
        Kind::S3(c) => Box::new(super::s3::S3::new(c.settings(), c.file_settings())?),
        Kind::Webhook(c) => Box::new(super::http::Http::new(c.settings())),
        Kind::Segment(c) => Box::new(super::http::Http::new(c.settings())),
    })
}

/// Starts every configured sink on its own thread. They stop when `stop` is set.
pub fn spawn_all(
    plan: &Plan,
    admin: &Arc<Admin>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for sink in &plan.sinks {
        let destination = destination_of(sink)?;
        let mut sink = sink.clone();
        let delivery = &mut sink.delivery;
        if delivery.dead_letter_topic.is_none() {
            // Not a topic the sink reads itself: its refusals would come back to it.
            delivery.dead_letter_topic = plan
                .dead_letter_topic
                .clone()
                .filter(|t| !delivery.topics.contains(t));
        }
        let worker = Worker::new(
            &plan.kafka,
            sink.delivery.clone(),
            destination,
            Arc::clone(admin),
        )?;
        let stop = Arc::clone(stop);
        let admin = Arc::clone(admin);
        let kafka = plan.kafka.clone();
        let name = sink.delivery.name.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("sink-{name}"))
                .spawn(move || supervise(worker, &kafka, &sink, &admin, &stop))?,
        );
    }
    Ok(handles)
}

/// Runs a sink until `stop`; a panic inside it is caught, reported (not ready, a
/// metric, one log line) and the sink started again after a backoff, from its
/// destination's position.
fn supervise(
    mut worker: Worker,
    kafka: &KafkaConfig,
    sink: &SinkConfig,
    admin: &Arc<Admin>,
    stop: &AtomicBool,
) {
    let name = &sink.delivery.name;
    let mut backoff = Backoff::new(sink.delivery.retry_initial, sink.delivery.retry_max);
    loop {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run(stop)));
        let problem = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("stopped: {e:#}"),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                admin.metrics.sink(name).panics.inc();
                format!("panicked: {what}")
            }
        };
        tracing::error!(sink = %name, "{problem}; restarting");
        admin.health.set_sink(name, Some(problem));
        let until = Instant::now() + backoff.next_delay();
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match destination_of(sink)
            .and_then(|d| Worker::new(kafka, sink.delivery.clone(), d, Arc::clone(admin)))
        {
            Ok(w) => worker = w,
            Err(e) => tracing::error!(sink = %name, "restarting: {e:#}"),
        }
    }
}

/// The problems of sinks, by name, for `/readyz` (`None`: healthy).
pub type SinkHealth = Mutex<BTreeMap<String, Option<String>>>;

/// What the sinks' supervisor is asked to do.
enum Command {
    /// Run these sinks instead (a reload): the old ones stop, the new ones start.
    Replace(Box<Plan>),
    Stop,
}

/// The warehouse sinks, run by a supervisor thread of their own: a reload hands it the
/// new configuration and returns at once (stopping the old sinks can take as long as
/// their writes in flight; the pipeline never waits for it), and a failed start is
/// retried with backoff until it succeeds or the configuration changes.
pub struct Sinks {
    commands: std::sync::mpsc::Sender<Command>,
    supervisor: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks").finish_non_exhaustive()
    }
}

/// The `/readyz` entry of a failed start.
const START: &str = "(sinks starting)";

impl Sinks {
    pub fn start(plan: Plan, admin: Arc<Admin>) -> std::io::Result<Self> {
        let (commands, inbox) = std::sync::mpsc::channel();
        let supervisor = std::thread::Builder::new()
            .name("sinks".to_owned())
            .spawn(move || supervise_all(plan, &admin, &inbox))?;
        Ok(Self {
            commands,
            supervisor: Some(supervisor),
        })
    }

    /// Restarts the sinks as `plan` says; returns at once.
    pub fn replace(&self, plan: Plan) {
        let _ = self.commands.send(Command::Replace(Box::new(plan)));
    }

    /// Stops every sink (each finishes the batch in flight) and waits for them.
    pub fn stop(mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(s) = self.supervisor.take() {
            let _ = s.join();
        }
    }
}

fn supervise_all(mut plan: Plan, admin: &Arc<Admin>, inbox: &std::sync::mpsc::Receiver<Command>) {
    let stop_all = |running: &mut Option<(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>)>| {
        if let Some((stop, handles)) = running.take() {
            stop.store(true, Ordering::Relaxed);
            for h in handles {
                let _ = h.join();
            }
        }
    };
    let mut running = None;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut retry_at = Instant::now();
    loop {
        if running.is_none() && Instant::now() >= retry_at {
            let stop = Arc::new(AtomicBool::new(false));
            match spawn_all(&plan, admin, &stop) {
                Ok(handles) => {
                    admin.health.set_sink(START, None);
                    backoff.reset();
                    running = Some((stop, handles));
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    tracing::error!("starting the sinks: {text}; retrying");
                    admin.health.set_sink(START, Some(text));
                    retry_at = Instant::now() + backoff.next_delay();
                }
            }
        }
        match inbox.recv_timeout(Duration::from_millis(250)) {
            Ok(Command::Replace(next)) => {
                stop_all(&mut running);
                admin.health.clear_sinks();
                plan = *next;
                backoff.reset();
                retry_at = Instant::now();
            }
            Ok(Command::Stop) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                stop_all(&mut running);
                return;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}
