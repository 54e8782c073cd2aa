//! The processor's producer: idempotent (or transactional in exactly-once mode), one
//! per process, writing every output kind and the dead letters.
//!
//! Delivery is tracked by counters: the pipeline commits offsets after a successful
//! [`Producer::flush`] with no failure since the previous commit, so it never needs to
//! know which record failed — a transient failure rewinds to the last commit. A
//! permanent one (the broker refuses the record itself: too large, invalid, not
//! authorized) would fail again on every retry: such records are kept aside as
//! [`Refused`] for the pipeline to dead-letter, and do not count as failures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext};

use crate::admin::Admin;
use crate::kafka::producer::{PolledProducer, flush_threaded, send_waiting};
use crate::kafka::{DEFAULT_TOPIC_LIMIT, KafkaConfig, describe_limits};

/// Counts deliveries; remembers the last failure for the log; feeds the produce latency
/// and error metrics.
#[derive(Debug)]
pub struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    refused: Mutex<Vec<Refused>>,
    admin: Arc<Admin>,
    /// The pipeline worker this producer belongs to (its health slot).
    worker: usize,
    /// Request retries at the last statistics report.
    retries_seen: AtomicU64,
    /// `window.lateness` in ms: a summary is due at its window's end plus this.
    lateness_ms: i64,
}

/// A record the broker refused for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    /// The payload, up to [`Refused::KEPT`] bytes (a dead letter carries no more).
    pub value: Vec<u8>,
    /// The payload's full length.
    pub value_len: usize,
    /// Its `flagtally-id` and `flagtally-kind` headers.
    pub id: Option<String>,
    pub kind: Option<String>,
    pub error: String,
    /// flagtally's own headers of the record (each value capped), for a dead letter's
    /// stub.
    pub own_headers: Vec<(String, Vec<u8>)>,
}

/// flagtally's own headers among `headers` (not forwarded input headers), values
/// capped to [`crate::deadletter::fit::MAX_STUB_VALUE`].
fn own_headers<'a>(
    headers: impl Iterator<Item = rdkafka::message::Header<'a, &'a [u8]>>,
) -> Vec<(String, Vec<u8>)> {
    use crate::deadletter::fit;
    headers
        .filter(|h| h.key.starts_with(fit::OWN_PREFIX) && !h.key.starts_with(fit::RAW_NAME_PREFIX))
        .map(|h| {
            let v = h.value.unwrap_or_default();
            (
                h.key.to_owned(),
                v[..v.len().min(fit::MAX_STUB_VALUE)].to_vec(),
            )
        })
        .collect()
}

impl Refused {
    pub const KEPT: usize = 1 << 20;

    /// From a record that was never sent (the producer refused it locally).
    pub fn of(rec: &Outgoing<'_>, error: &KafkaError) -> Self {
        use rdkafka::message::Headers as _;
        let header = |name: &str| {
            rec.headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        Self {
            topic: rec.topic.to_owned(),
            key: rec.key.map(<[u8]>::to_vec),
            value: rec.value[..rec.value.len().min(Self::KEPT)].to_vec(),
            value_len: rec.value.len(),
            id: header(crate::emit::header::ID),
            kind: header(crate::emit::header::KIND),
            error: error.to_string(),
            own_headers: own_headers(rec.headers.iter()),
        }
    }
}

/// Send times travel with each record as its delivery opaque: nanoseconds since this
/// instant (no allocation per record).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The opaque's lowest bit says whether the record is a summary ([`Outgoing::summary`]);
/// the next, whether it carries its send time ([`TIMED_BIT`]); the send time is kept to
/// the nanosecond less those bits.
const SUMMARY_BIT: usize = 1;

/// Set when the opaque carries the record's send time: every summary, and one other
/// record in [`TIME_ONE_IN`]. Reading the clock twice per record (at the send, at the
/// report) was 2–3 % of the pipeline's CPU with every evaluation tracked; the produce
/// latency histogram is as telling from a sample.
const TIMED_BIT: usize = 2;

/// Records other than summaries: one in this many is timed.
const TIME_ONE_IN: u32 = 16;

fn nanos_since_epoch() -> usize {
    usize::try_from(epoch().elapsed().as_nanos()).unwrap_or(usize::MAX)
}

impl Deliveries {
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// The records refused for good since the last call.
    pub fn take_refused(&self) -> Vec<Refused> {
        self.refused
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

impl ClientContext for Deliveries {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.admin
            .metrics
            .producer_statistics(&statistics, &self.retries_seen);
    }

    /// librdkafka's global errors. Losing every broker makes the instance not ready
    /// until the next successful commit cycle (which sets it ready again).
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(problem) = crate::kafka::security::diagnose(reason) {
            self.admin.health.set_outputs_connected(self.worker, false);
            if self.admin.health.set_kafka_problem(Some(problem.clone())) {
                tracing::error!("{problem}");
            }
        } else if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.admin.health.set_outputs_connected(self.worker, false);
            tracing::warn!("the producer lost every broker: {reason}");
        } else {
            tracing::error!("librdkafka error: {error}: {reason}");
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (sent_at, summary) = (
            opaque & !(SUMMARY_BIT | TIMED_BIT),
            opaque & SUMMARY_BIT != 0,
        );
        let now = (opaque & TIMED_BIT != 0).then(nanos_since_epoch);
        if let Some(now) = now {
            self.admin
                .metrics
                .produce_seconds
                .observe(now.saturating_sub(sent_at) as f64 / 1e9);
        }
        match result {
            Ok(msg) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(now) = now
                    && let Some(deadline_ms) = summary
                        .then(|| summary_deadline(msg, self.lateness_ms))
                        .flatten()
                {
                    let now_ms = i64::try_from(now / 1_000_000).unwrap_or(i64::MAX);
                    self.admin
                        .metrics
                        .summary_latency_seconds
                        .observe(now_ms.saturating_sub(deadline_ms).max(0) as f64 / 1e3);
                }
            }
            Err((e, msg))
                if e.rdkafka_error_code()
                    .is_some_and(crate::deadletter::fit::is_permanent) =>
            {
                use rdkafka::Message as _;
                use rdkafka::message::Headers as _;
                let header = |name: &str| {
                    msg.headers()
                        .and_then(|hs| hs.iter().find(|h| h.key == name))
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                let value = msg.payload().unwrap_or_default();
                let refused = Refused {
                    topic: msg.topic().to_owned(),
                    key: msg.key().map(<[u8]>::to_vec),
                    value: value[..value.len().min(Refused::KEPT)].to_vec(),
                    value_len: value.len(),
                    id: header(crate::emit::header::ID),
                    kind: header(crate::emit::header::KIND),
                    error: e.to_string(),
                    own_headers: msg
                        .headers()
                        .map_or_else(Vec::new, |hs| own_headers(hs.iter())),
                };
                self.admin.metrics.sink("kafka").errors.inc();
                if let Ok(mut r) = self.refused.lock() {
                    r.push(refused);
                }
            }
            Err((e, msg)) => {
                use rdkafka::Message as _;
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.admin.metrics.sink("kafka").errors.inc();
                let text = format!(
                    "delivery to {}/{} failed: {e}",
                    msg.topic(),
                    msg.partition()
                );
                tracing::error!("{text}");
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(text);
                }
            }
        }
    }
}

/// For a record sent as an on-time summary ([`Outgoing::summary`]): its window's close
/// deadline (end plus lateness), in ms.
fn summary_deadline(msg: &rdkafka::message::BorrowedMessage<'_>, lateness_ms: i64) -> Option<i64> {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;
    msg.headers()?
        .iter()
        .find(|h| h.key == crate::emit::header::WINDOW_END)?
        .value
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
        .map(|e| e.saturating_add(lateness_ms))
}

/// One record to write.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: OwnedHeaders,
    pub timestamp_ms: Option<i64>,
    /// A summary (not a late correction): its delivery is timed against its window's
    /// close (`flagtally_summary_latency_seconds`). Only these have their headers read
    /// back when delivered.
    pub summary: bool,
}

pub struct Producer {
    inner: PolledProducer<Deliveries>,
    transactional: bool,
    /// Each output topic's `max.message.bytes`, as the broker described it.
    limits: std::collections::HashMap<String, usize>,
    /// The producer's own `message.max.bytes`.
    message_max: usize,
    /// The smallest of `limits` (and of the limit assumed for a topic not among them):
    /// a record under it fits every topic.
    smallest_limit: usize,
    /// Records sent other than summaries, for timing one in [`TIME_ONE_IN`].
    sent: std::sync::atomic::AtomicU32,
}

/// What the producer takes from the configuration.
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    /// The brokers and the client properties.
    pub kafka: KafkaConfig,
    /// This worker's number (metrics, logs).
    pub worker: usize,
    /// Exactly-once mode: this worker's `transactional.id`, resolved; `None`: an
    /// idempotent producer without transactions.
    pub transactional_id: Option<String>,
    /// The largest input record accepted (`input.max_record_bytes`): the producer's
    /// `message.max.bytes` leaves room for an output that large plus headers.
    pub max_record_bytes: usize,
    /// Every topic written (outputs, dead letters, checkpoints), distinct or not.
    pub topics: Vec<String>,
    /// Ask the broker for each topic's `max.message.bytes` (else Kafka's default).
    pub describe_topics: bool,
    /// `window.lateness` in ms (a summary's latency is measured from its window's end
    /// plus it).
    pub lateness_ms: i64,
}

/// The producer's `message.max.bytes`: room for an output as large as the largest
/// input record plus headers (a user's `[kafka.producer_properties]` may change it).
fn message_max_bytes(settings: &ProducerSettings) -> usize {
    (settings.max_record_bytes + (64 << 10)).max(1_000_000)
}

/// The `max.message.bytes` of every output topic (and the dead-letter topic). The limit
/// applies to a whole record batch: a batch over it fails every record in it, small
/// ones included, so the producer's `batch.size` is kept under the smallest limit, and
/// an output over its topic's limit is set aside before it is sent.
fn topic_limits(settings: &ProducerSettings) -> std::collections::HashMap<String, usize> {
    let mut topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    // Outputs may share a topic (feature and index events, as LaunchDarkly's stream
    // carries them); librdkafka refuses a DescribeConfigs naming a resource twice.
    topics.sort_unstable();
    topics.dedup();
    if !settings.describe_topics {
        return topics
            .iter()
            .map(|t| ((*t).to_owned(), DEFAULT_TOPIC_LIMIT))
            .collect();
    }
    describe_limits(&settings.kafka, &topics)
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("transactional", &self.transactional)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// The fatal error this producer hit, if any (fenced by a newer instance with the
    /// same `transactional.id`, an idempotence violation): it can send nothing more.
    pub fn fatal_error(&self) -> Option<(rdkafka::types::RDKafkaErrorCode, String)> {
        use rdkafka::producer::Producer as _;
        self.inner.client().fatal_error()
    }

    pub fn new(settings: &ProducerSettings, admin: Arc<Admin>) -> Result<Self, KafkaError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &settings.kafka.brokers)
            .set("statistics.interval.ms", "5000")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // Deliveries never time out: a broker outage stalls the pipeline
            // (backpressure) instead of failing records.
            .set("message.timeout.ms", "0")
            // Keyed records land where Java clients would put them.
            .set("partitioner", "murmur2_random")
            // Room for an output as large as the largest input record plus headers; the
            // broker's own limit (max.message.bytes) may still refuse it, and then
            // the record is set aside as a dead letter (`Refused`).
            .set("message.max.bytes", message_max_bytes(settings).to_string());
        let limits = topic_limits(settings);
        // A batch never larger than the smallest topic limit (less the batch's own
        // overhead), so no small record fails with a large neighbour.
        let smallest = limits
            .values()
            .copied()
            .min()
            .unwrap_or(DEFAULT_TOPIC_LIMIT);
        cc.set(
            "batch.size",
            smallest
                .saturating_sub(1024)
                .clamp(1024, 1_000_000)
                .to_string(),
        );
        let transactional = settings.transactional_id.is_some();
        if let Some(id) = &settings.transactional_id {
            // Stable across restarts of this instance, distinct between instances
            // and workers: a restart fences (and aborts) its predecessor's
            // transaction at once.
            cc.set("transactional.id", id);
        }
        let kafka = &settings.kafka;
        kafka.apply(&mut cc, &kafka.producer_properties);
        let message_max = cc
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_TOPIC_LIMIT);
        let inner: PolledProducer<Deliveries> = cc.create_with_context(Deliveries {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_error: Mutex::new(None),
            refused: Mutex::new(Vec::new()),
            admin,
            worker: settings.worker,
            retries_seen: AtomicU64::new(0),
            lateness_ms: settings.lateness_ms,
        })?;
        // The pipeline thread frees what it allocated (see `PolledProducer`).
        inner.serve_on_owner();
        if transactional {
            inner.init_transactions(Duration::from_secs(30))?;
            inner.begin_transaction()?;
        }
        Ok(Self {
            inner,
            transactional,
            limits,
            message_max,
            smallest_limit: smallest.min(DEFAULT_TOPIC_LIMIT),
            sent: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// The `max.message.bytes` this producer holds `topic` to.
    pub fn topic_limit(&self, topic: &str) -> usize {
        self.limits
            .get(topic)
            .copied()
            .unwrap_or(DEFAULT_TOPIC_LIMIT)
    }

    /// The largest record this producer can write to `topic`: the smaller of the
    /// topic's `max.message.bytes` and the producer's own `message.max.bytes`.
    pub fn record_limit(&self, topic: &str) -> usize {
        self.topic_limit(topic).min(self.message_max)
    }

    /// Whether a record of about `bytes` (key, value and headers) fits `topic`'s
    /// `max.message.bytes` (with room for the batch's own overhead).
    pub fn fits(&self, topic: &str, bytes: usize) -> bool {
        // Most records are far under every limit: no lookup by topic name for them.
        bytes + 256 <= self.smallest_limit || bytes + 256 <= self.topic_limit(topic)
    }

    pub fn deliveries(&self) -> &Deliveries {
        self.inner.context()
    }

    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Queues one record. While librdkafka's queue is full, waits (backpressure) unless
    /// `give_up` says to stop.
    pub fn send(&self, rec: Outgoing<'_>, give_up: &dyn Fn() -> bool) -> Result<(), KafkaError> {
        let timed = rec.summary
            || self
                .sent
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(TIME_ONE_IN);
        let opaque = if timed {
            (nanos_since_epoch() & !(SUMMARY_BIT | TIMED_BIT))
                | TIMED_BIT
                | usize::from(rec.summary)
        } else {
            0
        };
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(rec.topic, opaque)
                .payload(rec.value)
                .headers(rec.headers);
        if let Some(key) = rec.key {
            record = record.key(key);
        }
        if let Some(ts) = rec.timestamp_ms {
            record = record.timestamp(ts);
        }
        send_waiting(&self.inner, record, give_up)
    }

    /// Asks the broker for the cluster's metadata: is it reachable?
    pub fn check_connection(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
    }

    /// Waits until every queued record is delivered or failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        flush_threaded(&self.inner, timeout)
    }

    /// Fails every record still waiting in the client's queues (not yet sent): each is
    /// reported as a failed delivery. For a member that learned it lost its
    /// partitions while checkpoints waited for an outage to end: delivered later, they
    /// would land after their new owner's.
    pub fn purge_queued(&self) {
        self.inner
            .purge(rdkafka::producer::PurgeConfig::default().queue());
    }

    /// Exactly-once: commits the open transaction with the consumer's offsets, then
    /// opens the next one.
    ///
    /// A call that fails with a retriable error (the broker out of reach: the call
    /// timed out) is retried until it succeeds, fails otherwise, or `give_up` says to
    /// stop: librdkafka keeps the commit in progress, and an abort meanwhile is refused
    /// ("Conflicting commit_transaction API call is already in progress" — found by the
    /// chaos run: a broker killed mid-commit ended two exactly-once instances).
    pub fn commit_transaction(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
        timeout: Duration,
        give_up: &dyn Fn() -> bool,
    ) -> Result<(), KafkaError> {
        retrying("sending the offsets to the transaction", give_up, || {
            self.inner
                .send_offsets_to_transaction(offsets, group, timeout)
        })?;
        retrying("committing the transaction", give_up, || {
            self.inner.commit_transaction(timeout)
        })?;
        self.inner.begin_transaction()
    }

    /// Exactly-once: aborts the open transaction (its records are never visible to
    /// read-committed readers) and opens the next one.
    ///
    /// The records in flight are waited for first. librdkafka may send the abort while
    /// a request adding partitions to the transaction is still in flight, and the
    /// coordinator then answers `INVALID_TXN_STATE`, fatal to the producer
    /// (confluentinc/librdkafka#4849), or the abort waits out its timeout on records
    /// stuck behind that request. A record is acknowledged only once its partition is
    /// in the transaction, so with none in flight, no such request is either.
    pub fn abort_transaction(&self, timeout: Duration) -> Result<(), KafkaError> {
        if let Err(e) = flush_threaded(&self.inner, timeout) {
            tracing::warn!("records still in flight before aborting the transaction ({e})");
        }
        retrying("aborting the transaction", &|| false, || {
            self.inner.abort_transaction(timeout)
        })?;
        self.inner.begin_transaction()
    }
}

/// Runs a transactional call again while it fails with an error librdkafka calls
/// retriable (a timeout while the broker is out of reach), until `give_up`; at most
/// [`TXN_RETRIES`] times, a bound on a broker that never comes back.
fn retrying(
    what: &str,
    give_up: &dyn Fn() -> bool,
    mut call: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    let mut tries = 0;
    loop {
        match call() {
            Err(KafkaError::Transaction(e))
                if e.is_retriable() && tries < TXN_RETRIES && !give_up() =>
            {
                tries += 1;
                tracing::warn!("{what}: {e}; retrying");
            }
            other => return other,
        }
    }
}

/// Retries of one transactional call (each waits up to its timeout, 10 s): about an
/// hour, longer than any broker restart, shorter than forever.
const TXN_RETRIES: u32 = 360;
