//! The source stage: an rdkafka consumer group over the input topics, auto-commit off.
//! Rebalances are queued by the consumer's context and handled by the pipeline right
//! after the poll that reported them, before any record of a new partition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::admin::Admin;
use crate::config::Config;
use crate::window::PartitionId;

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
    /// Set once the pipeline stops handling changes (it drains or is dropped): from
    /// then on revocations complete at once, so that closing the consumer never waits
    /// on a commit nobody will make.
    closing: AtomicBool,
    /// The revocation the group waits for, if any (what to unassign).
    revoking: Mutex<Option<TopicPartitionList>>,
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
    pub fn finish_revocation(&self, consumer: &Source) -> KafkaResult<()> {
        let Some(tpl) = self.revoking.lock().ok().and_then(|mut r| r.take()) else {
            return Ok(());
        };
        unassign(consumer, &tpl)
    }

    /// From now on revocations complete at once; one waiting is completed now.
    pub fn close(&self, consumer: &Source) -> KafkaResult<()> {
        self.closing.store(true, Ordering::Relaxed);
        self.finish_revocation(consumer)
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

pub type Source = BaseConsumer<SourceContext>;

/// Creates the consumer and subscribes it to the input topics.
pub fn consumer(config: &Config, admin: Arc<Admin>) -> Result<Source, KafkaError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.brokers)
        // Consumer lag for the metrics.
        .set("statistics.interval.ms", "5000")
        .set("group.id", &config.kafka.group_id)
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
    if let Some(id) = &config.kafka.instance_id {
        cc.set("group.instance.id", config.processing.per_worker(id));
    }
    config
        .kafka
        .apply(&mut cc, &config.kafka.consumer_properties);
    let consumer: Source = cc.create_with_context(SourceContext {
        changes: Mutex::new(Vec::new()),
        pending: AtomicBool::new(false),
        admin,
        commit_on_revoke: !config.processing.exactly_once,
        closing: AtomicBool::new(false),
        revoking: Mutex::new(None),
    })?;
    let topics: Vec<&str> = config
        .kafka
        .input_topics
        .iter()
        .map(String::as_str)
        .collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}
