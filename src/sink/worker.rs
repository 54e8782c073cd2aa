//! A sink worker: reads output topics as its own consumer group and delivers batches to
//! one destination, on a thread of its own, so a slow or broken destination never stalls
//! the processor or another sink.
//!
//! - Records are read `read_committed` from the group's committed offset (committed
//!   only after the destination acknowledged, so never past it); records before the
//!   destination's own position ([`Destination::stored_offsets`], written with the
//!   data) are skipped: the destination's position is the truth.
//! - A batch (up to `batch_size` records or `batch_timeout`) is written whole or not at
//!   all. While the destination fails, the worker stops reading and retries with
//!   exponential backoff and jitter; nothing is skipped.
//! - Group offsets are committed after the destination acknowledged (for lag
//!   monitoring; resuming uses the destination's position).
//! - A rebalance drops the batch being gathered and re-reads the destination's
//!   positions.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::message::Headers as _;
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};

use crate::admin::Admin;
use crate::config::{KafkaConfig, SinkConfig};
use crate::emit::header;
use crate::metrics::Metrics;

/// One output record, as destinations see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `flagtally-kind`: summary, feature, debug, index, identify, custom, …
    pub kind: String,
    /// `flagtally-id`: deterministic, the same for a record written twice.
    pub id: String,
    pub value: Vec<u8>,
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    pub late: bool,
    pub source: Option<String>,
}

/// Where a sink delivers.
pub trait Destination: Send {
    /// Opens the connection (and whatever the destination needs) or says why not.
    fn connect(&mut self) -> anyhow::Result<()>;
    /// The next offset per partition of `topic` the destination holds data up to.
    fn stored_offsets(&mut self, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>>;
    /// Whether [`Destination::write`] stores the positions with the data (exactly
    /// once); else the group offsets are the position, committed synchronously after
    /// each write (at least once, repeats keyed by record id).
    fn stores_positions(&self) -> bool {
        true
    }
    /// Writes `batch` and records `positions` (next offset per topic partition), all or
    /// nothing.
    fn write(
        &mut self,
        batch: &[SinkRecord],
        positions: &BTreeMap<(String, i32), i64>,
    ) -> anyhow::Result<()>;
}

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
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_) | Rebalance::Revoke(_)) {
            self.rebalanced.store(true, Ordering::Relaxed);
        }
    }
}

type SinkConsumer = BaseConsumer<SinkContext>;

/// A running sink.
pub struct Worker {
    name: String,
    config: SinkConfig,
    consumer: SinkConsumer,
    destination: Box<dyn Destination>,
    admin: Arc<Admin>,
    /// Per topic partition: the destination holds everything before this offset.
    floor: BTreeMap<(String, i32), i64>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn header_text(m: &rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<String> {
    m.headers()
        .and_then(|hs| hs.iter().find(|h| h.key == name))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl Worker {
    pub fn new(
        kafka: &KafkaConfig,
        config: SinkConfig,
        destination: Box<dyn Destination>,
        admin: Arc<Admin>,
    ) -> anyhow::Result<Self> {
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
        })
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
        let written = self
            .admin
            .metrics
            .sink_records
            .get_or_create(&Metrics::sink(&self.name))
            .clone();
        let errors = self
            .admin
            .metrics
            .sink_errors
            .get_or_create(&Metrics::sink(&self.name))
            .clone();
        let retries = self
            .admin
            .metrics
            .sink_retries
            .get_or_create(&Metrics::sink(&self.name))
            .clone();
        let mut batch: Vec<SinkRecord> = Vec::new();
        let mut positions: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let msg = self.consumer.poll(Duration::from_millis(100));
            if self
                .consumer
                .context()
                .rebalanced
                .swap(false, Ordering::Relaxed)
            {
                batch.clear();
                positions.clear();
                if let Err(e) = self.load_positions(stop) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    return Err(e);
                }
                continue;
            }
            if let Some(msg) = msg {
                let m = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(sink = %self.name, "consumer: {e}");
                        continue;
                    }
                };
                if batch.is_empty() {
                    started = Instant::now();
                }
                let offset = m.offset();
                let key = (m.topic().to_owned(), m.partition());
                if self.floor.get(&key).is_some_and(|f| offset < *f) {
                    continue;
                }
                batch.push(SinkRecord {
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    offset,
                    kind: header_text(&m, header::KIND).unwrap_or_default(),
                    id: header_text(&m, header::ID)
                        .unwrap_or_else(|| format!("{}/{}/{}", m.topic(), m.partition(), offset)),
                    value: m.payload().unwrap_or_default().to_vec(),
                    window_start: header_text(&m, header::WINDOW_START)
                        .and_then(|v| v.parse().ok()),
                    window_end: header_text(&m, header::WINDOW_END).and_then(|v| v.parse().ok()),
                    late: header_text(&m, header::LATE).is_some_and(|v| v == "true"),
                    source: header_text(&m, header::SOURCE),
                });
                positions.insert((m.topic().to_owned(), m.partition()), offset + 1);
            }
            let full = batch.len() >= self.config.batch_size
                || batch.iter().map(|r| r.value.len()).sum::<usize>() >= self.config.batch_bytes;
            let due = !batch.is_empty() && started.elapsed() >= self.config.batch_timeout;
            if !(full || due) {
                continue;
            }
            // Deliver, retrying until the destination takes it.
            let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
            loop {
                match self.destination.write(&batch, &positions) {
                    Ok(()) => {
                        written.inc_by(batch.len() as u64);
                        self.set_health(None);
                        break;
                    }
                    Err(e) => {
                        errors.inc();
                        let text = format!("{e:#}");
                        tracing::error!(sink = %self.name, records = batch.len(), "write failed: {text}; retrying");
                        self.set_health(Some(text));
                        if !self.sleep(backoff.next_delay(), stop) {
                            // Stopped: nothing was written; a restart resumes from
                            // the destination's position.
                            return Ok(());
                        }
                        retries.inc();
                    }
                }
            }
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

/// Starts every configured sink on its own thread. They stop when `stop` is set.
pub fn spawn_all(
    config: &crate::config::Config,
    admin: &Arc<Admin>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for sink in &config.sinks {
        let destination: Box<dyn Destination> = match &sink.kind {
            crate::config::SinkKind::Postgres => Box::new(crate::sink::postgres::Postgres::new(
                &sink.name,
                sink.postgres_settings(),
            )),
            crate::config::SinkKind::File => {
                Box::new(crate::sink::file::Files::new(sink.file_settings())?)
            }
            crate::config::SinkKind::S3 => Box::new(crate::sink::s3::S3::new(
                sink.s3_settings(),
                sink.file_settings(),
            )?),
            crate::config::SinkKind::Webhook | crate::config::SinkKind::Segment => {
                Box::new(crate::sink::http::Http::new(sink.http_settings()))
            }
        };
        let mut worker = Worker::new(&config.kafka, sink.clone(), destination, Arc::clone(admin))?;
        let stop = Arc::clone(stop);
        let admin = Arc::clone(admin);
        let name = sink.name.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("sink-{name}"))
                .spawn(move || {
                    if let Err(e) = worker.run(&stop) {
                        tracing::error!(sink = %name, "stopped: {e:#}");
                        admin
                            .health
                            .set_sink(&name, Some(format!("stopped: {e:#}")));
                    }
                })?,
        );
    }
    Ok(handles)
}

/// The problems of sinks, by name, for `/readyz` (`None`: healthy).
pub type SinkHealth = Mutex<BTreeMap<String, Option<String>>>;
