//! The source stage: an rdkafka consumer group over the input topics, auto-commit off.
//! Rebalances are queued by the consumer's context and handled by the pipeline right
//! after the poll that reported them, before any record of a new partition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use crate::admin::Admin;
use crate::config::Config;
use crate::window::PartitionId;

/// A change of assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    Assigned(Vec<PartitionId>),
    Revoked(Vec<PartitionId>),
}

#[derive(Debug)]
pub struct SourceContext {
    changes: Mutex<Vec<Assignment>>,
    /// Whether `changes` may hold anything: the pipeline asks after every poll, and a
    /// load is cheaper than the lock.
    pending: AtomicBool,
    admin: Arc<Admin>,
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

    fn push(&self, change: Assignment) {
        if let Ok(mut c) = self.changes.lock() {
            c.push(change);
        }
        self.pending.store(true, Ordering::Release);
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
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                for e in tpl.elements() {
                    self.admin
                        .metrics
                        .forget_partition(e.topic(), e.partition());
                }
                self.push(Assignment::Revoked(partitions(tpl)));
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::error!("rebalance failed: {e}"),
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions assigned");
            self.push(Assignment::Assigned(partitions(tpl)));
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
