//! The source stage: an rdkafka consumer group over the input topics, auto-commit off.
//! Rebalances are queued by the consumer's context and handled by the pipeline right
//! after the poll that reported them, before any record of a new partition. The
//! records themselves are read a batch at a time ([`Batch`], `src/source/records.rs`)
//! from a queue of the worker's own, to which each partition is routed as it is
//! assigned.

mod records;

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::admin::Admin;
use crate::kafka::KafkaConfig;
use crate::window::PartitionId;

use records::RecordQueue;
pub use records::{BATCH, Batch, ReadError, Record, unreadable_batch_end};

/// A change of assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    Assigned(Vec<PartitionId>),
    Revoked(Vec<PartitionId>),
    /// Being revoked, and the group waits for [`SourceContext::finish_revocation`]: the
    /// pipeline commits what it has done with these partitions first, so that their
    /// next owner starts where this one stopped instead of repeating outputs since the
    /// last commit (Kafka Streams commits on revocation too).
    Revoking(Vec<PartitionId>),
}

#[derive(Debug)]
pub struct SourceContext {
    changes: Mutex<Vec<Assignment>>,
    /// Whether `changes` may hold anything: the pipeline asks after every poll, and a
    /// load is cheaper than the lock.
    pending: AtomicBool,
    admin: Arc<Admin>,
    /// Whether a revocation waits for the pipeline's commit (at-least-once mode; an
    /// exactly-once worker aborts its open transaction instead).
    commit_on_revoke: bool,
    /// Set once the consumer is dropped (by [`Source`]'s `Drop`, before it closes):
    /// from then on revocations complete at once, so that closing the consumer never waits
    /// on a commit nobody will make.
    closing: AtomicBool,
    /// The revocation the group waits for, if any (what to unassign).
    revoking: Mutex<Option<TopicPartitionList>>,
    /// Where assigned partitions send their records (none once [`Source`] is
    /// dropping: the queue goes before the consumer, and a partition assigned while
    /// the consumer closes is not read).
    records: Mutex<Option<RecordQueue>>,
}

impl SourceContext {
    /// The assignment changes since the last call, in order.
    pub fn take_changes(&self) -> Vec<Assignment> {
        // A plain load first: the swap is a locked instruction, paid only when set.
        if !self.pending.load(Ordering::Relaxed) || !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        self.changes
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    /// Completes a revocation reported as [`Assignment::Revoking`]: the partitions
    /// leave the assignment and the group's rebalance goes on. Does nothing when none
    /// is waiting.
    pub fn finish_revocation(&self, consumer: &BaseConsumer<Self>) -> KafkaResult<()> {
        let Some(tpl) = self.revoking.lock().ok().and_then(|mut r| r.take()) else {
            return Ok(());
        };
        unassign(consumer, &tpl)
    }

    /// From now on revocations complete at once; one waiting is completed now.
    pub fn close(&self, consumer: &BaseConsumer<Self>) -> KafkaResult<()> {
        self.closing.store(true, Ordering::Relaxed);
        self.finish_revocation(consumer)
    }

    /// Routes the partitions of `tpl` to the record queue, before they are assigned.
    fn route(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let Ok(queue) = self.records.lock() else {
            return;
        };
        let Some(queue) = queue.as_ref() else {
            return;
        };
        for e in tpl.elements() {
            if !queue.route(consumer.client().native_ptr(), e.topic(), e.partition()) {
                // Its records then come through the consumer queue, all of them, in
                // order: the pipeline reads those too.
                tracing::warn!(
                    topic = e.topic(),
                    partition = e.partition(),
                    "could not route a partition to the record queue"
                );
            }
        }
    }

    fn push(&self, change: Assignment) {
        if let Ok(mut c) = self.changes.lock() {
            c.push(change);
        }
        self.pending.store(true, Ordering::Release);
    }
}

/// Takes `tpl` out of the assignment, as the protocol in use wants it.
fn unassign(consumer: &BaseConsumer<SourceContext>, tpl: &TopicPartitionList) -> KafkaResult<()> {
    match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
        _ => consumer.unassign(),
    }
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<PartitionId> {
    tpl.elements()
        .iter()
        .map(|e| PartitionId::new(e.topic(), e.partition()))
        .collect()
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.admin.metrics.consumer_statistics(&statistics);
    }

    /// librdkafka's global errors: a connection refused for a reason in the
    /// configuration's terms (credentials, certificates) is named in `/readyz`.
    fn error(&self, error: KafkaError, reason: &str) {
        match crate::kafka::security::diagnose(reason) {
            Some(problem) => {
                if self.admin.health.set_kafka_problem(Some(problem.clone())) {
                    tracing::error!("{problem}");
                }
            }
            None => tracing::error!("librdkafka error: {error}: {reason}"),
        }
    }
}

impl ConsumerContext for SourceContext {
    /// rdkafka's own rebalance, except that a revocation in at-least-once mode is left
    /// waiting for the pipeline (librdkafka's group waits until the application
    /// unassigns, in the callback or later): the callback runs inside the pipeline's
    /// poll and cannot reach its engine or producer, so the pipeline commits right
    /// after the poll and then calls [`SourceContext::finish_revocation`]. A lost
    /// assignment (the session timed out) is not waited for: another member may own
    /// the partitions already, and nothing may be committed for them.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.route(consumer, tpl);
                let r = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
                    _ => consumer.assign(tpl),
                };
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                self.push(Assignment::Assigned(partitions(tpl)));
                r
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                for e in tpl.elements() {
                    self.admin
                        .metrics
                        .forget_partition(e.topic(), e.partition());
                }
                let wait = self.commit_on_revoke
                    && !self.closing.load(Ordering::Relaxed)
                    && !consumer.assignment_lost()
                    && tpl.count() > 0;
                // Only one revocation waits at a time (the group cannot go on to
                // another before this one completes).
                let waiting = self.revoking.lock().ok().filter(|r| wait && r.is_none());
                if let Some(mut r) = waiting {
                    *r = Some(tpl.clone());
                    drop(r);
                    self.push(Assignment::Revoking(partitions(tpl)));
                    Ok(())
                } else {
                    self.push(Assignment::Revoked(partitions(tpl)));
                    unassign(consumer, tpl)
                }
            }
            other => {
                tracing::error!(
                    "rebalance failed: {}",
                    rdkafka::error::RDKafkaErrorCode::from(other)
                );
                unassign(consumer, tpl)
            }
        };
        if let Err(e) = result {
            tracing::error!("completing a rebalance: {e}");
        }
    }
}

/// The worker's consumer: rdkafka's, with the record queue its partitions are routed
/// to. `poll` (through `Deref`) serves the group's events; [`Source::read`] the records.
pub struct Source {
    consumer: BaseConsumer<SourceContext>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").finish_non_exhaustive()
    }
}

impl Deref for Source {
    type Target = BaseConsumer<SourceContext>;

    fn deref(&self) -> &Self::Target {
        &self.consumer
    }
}

impl Drop for Source {
    /// Before the consumer closes (rdkafka's `Drop`): a revocation waiting for a commit
    /// is completed, and later ones complete at once, so that closing never waits on a
    /// commit nobody will make; and the record queue goes, as librdkafka's queues must
    /// not outlive their client.
    fn drop(&mut self) {
        let context = self.consumer.context();
        if let Err(e) = context.close(&self.consumer) {
            tracing::warn!("completing a revocation: {e}");
        }
        if let Ok(mut q) = context.records.lock() {
            q.take();
        }
    }
}

impl Source {
    /// The group generation this member is in (under the `consumer` group protocol,
    /// its member epoch), as its offset commits carry it. A partition changes owner
    /// only in a newer generation, so it orders checkpoints written by two owners: one
    /// that lost the partition without noticing can have a checkpoint delivered late,
    /// after its successor's (see `pipeline::checkpoint`).
    pub fn generation(&self) -> i32 {
        records::group_generation(self.consumer.client().native_ptr())
    }

    /// An empty batch, to fill with [`Source::read`].
    pub fn batch(&self) -> Batch<'_> {
        Batch::new()
    }

    /// Replaces the records in `batch` with the next ones of the assigned partitions,
    /// up to [`BATCH`], waiting up to `wait` for the first; returns how many came.
    /// Call `poll` as well, between reads: it serves the group's events.
    pub fn read<'c>(&'c self, batch: &mut Batch<'c>, wait: Duration) -> usize {
        match self.consumer.context().records.lock().as_deref() {
            Ok(Some(queue)) => batch.fill(queue, wait),
            // Only while the consumer is dropped (or after a panic elsewhere poisoned
            // the lock): nothing to read, and no reason to spin.
            _ => {
                batch.clear();
                std::thread::sleep(wait);
                0
            }
        }
    }
}

/// What happens at a record batch the Kafka client cannot read. librdkafka fetches
/// such a batch again and again, so left alone its partition would stall there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnreadablePolicy {
    /// Find where the batch ends, write one dead letter naming its offset range
    /// (reason `unreadable_batch`), and read on past it.
    #[default]
    Skip,
    /// Exit 1 with an error naming the partition and offset (`/readyz` says it first).
    Stop,
}

/// What the consumer takes from the configuration.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// The brokers, the group, the input topics and the client properties.
    pub kafka: KafkaConfig,
    /// This worker's `group.instance.id` (static membership), if any.
    pub instance_id: Option<String>,
    /// Exactly-once mode: offsets are committed in transactions, never on revocation.
    pub exactly_once: bool,
}

/// Creates the consumer and subscribes it to the input topics.
pub fn consumer(settings: &SourceSettings, admin: Arc<Admin>) -> Result<Source, KafkaError> {
    let kafka = &settings.kafka;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &kafka.brokers)
        // Consumer lag for the metrics.
        .set("statistics.interval.ms", "5000")
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // In exactly-once mode, never read another producer's aborted records.
        .set("isolation.level", "read_committed")
        // When a partition's fetch queue is full (`queued.min.messages`), librdkafka
        // waits this long before fetching it again: 1 s by default, while a worker
        // drains the 100 000 queued records in about 0.15 s and then waits on an empty
        // queue. 10 ms keeps the queue fed (drain: 150 k → 650 k records/s per worker;
        // `scripts/bench-drain.sh`).
        .set("fetch.queue.backoff.ms", "10");
    if let Some(id) = &settings.instance_id {
        cc.set("group.instance.id", id);
    }
    kafka.apply(&mut cc, &kafka.consumer_properties);
    let consumer: BaseConsumer<SourceContext> = cc.create_with_context(SourceContext {
        changes: Mutex::new(Vec::new()),
        pending: AtomicBool::new(false),
        admin,
        commit_on_revoke: !settings.exactly_once,
        closing: AtomicBool::new(false),
        revoking: Mutex::new(None),
        records: Mutex::new(None),
    })?;
    let queue = RecordQueue::new(consumer.client().native_ptr())
        .ok_or_else(|| KafkaError::ClientCreation("creating the record queue".to_owned()))?;
    if let Ok(mut q) = consumer.context().records.lock() {
        *q = Some(queue);
    }
    let consumer = Source { consumer };
    let topics: Vec<&str> = kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}
