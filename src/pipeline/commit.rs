//! The commit cycle: flush the producer, rewind on any failed delivery, write the
//! changed partitions' checkpoints, commit the group offsets (in exactly-once mode all
//! in the transaction), and only then close the partitions found idle. See the
//! module above for the order and why it is safe.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::producer::Outgoing;
use super::{KAFKA_TIMEOUT, State, checkpoint, guard, now_ms};
use crate::emit::header;
use crate::kafka::producer::headers;
use crate::source::Source;
use crate::window::PartitionId;

impl State {
    pub(super) fn commit_cycle_if_due(&mut self, consumer: &Source) -> anyhow::Result<()> {
        let due = self.last_commit.elapsed() >= self.settings.commit_interval
            || self.engine.idle_due(self.now).iter().any(|pid| {
                self.part_index(&pid.topic, pid.partition)
                    .is_some_and(|i| !self.parts[i].idle_held)
            });
        if due {
            for c in &mut self.counting {
                let mut found = guard::Findings::default();
                c.guard.tick(self.now, &mut found);
                if !found.is_empty() {
                    c.report(&found);
                }
            }
            self.commit_cycle(consumer, true)?;
        }
        Ok(())
    }

    /// One commit cycle (see the module docs). Returns whether it committed.
    pub(super) fn commit_cycle(
        &mut self,
        consumer: &Source,
        close_idle: bool,
    ) -> anyhow::Result<bool> {
        let started = Instant::now();
        let before = self.stats.commits;
        let committed = self.commit_cycle_inner(consumer, close_idle)?;
        if self.stats.commits > before {
            let m = &self.admin.metrics;
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
            m.commits.inc();
            self.admin.health.set_outputs_connected(self.worker(), true);
        } else if committed && !self.admin.health.worker_connected(self.worker()) {
            // Nothing to commit: ask the broker whether it is back.
            let back = self
                .producer
                .check_connection(Duration::from_secs(1))
                .is_ok();
            self.admin.health.set_outputs_connected(self.worker(), back);
        }
        Ok(committed)
    }

    pub(super) fn commit_cycle_inner(
        &mut self,
        consumer: &Source,
        close_idle: bool,
    ) -> anyhow::Result<bool> {
        self.last_commit = Instant::now();
        if self.abortable.get() {
            self.abort_if_failed(consumer)?;
            return Ok(false);
        }
        if consumer.assignment_lost() {
            // The session timed out (a broker outage, a stall): another member may own
            // these partitions already. No checkpoint and no idle close from here — an
            // idle close is a wall-clock decision the new owner would not share — until
            // the next poll serves the revocation.
            tracing::warn!(
                "the group assignment is lost (session timed out); no checkpoints until the rebalance"
            );
            return Ok(true);
        }
        let now = now_ms();
        // Held partitions are in `idle_due` too (nothing reached their engine since).
        let idle = if close_idle {
            self.engine.idle_due(now)
        } else {
            Vec::new()
        };
        let transactional = self.producer.is_transactional();
        if !transactional && let Err(e) = self.producer.flush(KAFKA_TIMEOUT) {
            tracing::warn!("outputs not yet acknowledged ({e}); commit postponed");
            self.admin
                .health
                .set_outputs_connected(self.worker(), false);
            return Ok(false);
        }
        let refused = self.producer.deliveries().take_refused();
        if !refused.is_empty() {
            if transactional {
                // A refused record leaves the transaction abortable: abort, and let the
                // re-read set those records aside before they are sent.
                for r in &refused {
                    if let Some(id) = &r.id {
                        self.divert(id);
                    }
                }
                tracing::warn!(
                    refused = refused.len(),
                    "the broker refused outputs; aborting the transaction to set them aside"
                );
                self.producer
                    .abort_transaction(KAFKA_TIMEOUT)
                    .context("aborting the transaction")?;
                self.rewind(consumer)?;
                return Ok(false);
            }
            for r in refused {
                self.set_aside(r)?;
            }
            // Their dead letters are acknowledged in the next cycle, before any commit.
            return Ok(false);
        }
        let failed = self.producer.deliveries().failed();
        if failed > self.failures_seen {
            self.failures_seen = failed;
            let last = self.producer.deliveries().last_error().unwrap_or_default();
            tracing::error!("{last}; rewinding every partition to its last commit");
            self.admin
                .health
                .set_outputs_connected(self.worker(), false);
            if transactional {
                self.producer
                    .abort_transaction(KAFKA_TIMEOUT)
                    .context("aborting the transaction")?;
            }
            self.rewind(consumer)?;
            return Ok(false);
        }
        // Checkpoints first, acknowledged; then the group offsets.
        let generation = consumer.generation();
        let mut tpl = TopicPartitionList::new();
        let mut planned = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            let Some(next) = part.next_offset else {
                continue;
            };
            let cp = self.engine.checkpoint(
                part.pid(),
                next,
                part.idle_held || idle.contains(part.pid()),
            );
            let text = checkpoint::encode(&cp);
            if part.committed.as_deref() == Some(text.as_str()) {
                continue;
            }
            let offset = cp.replay_from();
            if offset >= 0 {
                tpl.add_partition_offset(
                    &part.pid().topic,
                    part.pid().partition,
                    Offset::Offset(offset),
                )?;
            }
            tracing::debug!(partition = %part.pid(), offset, checkpoint = %text, "checkpoint");
            let key = self.store.key(part.pid());
            let epoch = generation.max(part.epoch).to_string();
            let sent = self.producer.send(
                Outgoing {
                    topic: self.store.topic(),
                    key: Some(key.as_bytes()),
                    value: text.as_bytes(),
                    headers: headers([
                        (header::KIND, b"checkpoint".as_slice()),
                        (checkpoint::EPOCH, epoch.as_bytes()),
                    ]),
                    timestamp_ms: None,
                    summary: false,
                },
                &self.give_up(),
            );
            match sent {
                Ok(()) => {}
                Err(e) if self.transaction_failed(&e) => return Ok(false),
                Err(e) => {
                    self.admin.metrics.commit_failed("checkpoint");
                    return Err(e).context("writing a checkpoint");
                }
            }
            planned.push((i, text));
        }
        if planned.is_empty() && !(transactional && self.sent_since_commit) {
            self.go_idle(&idle, now)?;
            return Ok(true);
        }
        let result = if transactional {
            let group = consumer
                .group_metadata()
                .context("the consumer has no group metadata")?;
            self.producer
                .commit_transaction(&tpl, &group, KAFKA_TIMEOUT, &self.give_up())
        } else {
            // The checkpoints are sent: wait for them whatever it takes, unless the
            // session times out meanwhile. Going on without knowing whether an idle
            // checkpoint landed could let a replay close windows this run did not.
            let waiting = Instant::now();
            let mut warned = Duration::ZERO;
            while let Err(e) = self.producer.flush(Duration::from_secs(1)) {
                self.beat();
                self.admin
                    .health
                    .set_outputs_connected(self.worker(), false);
                if waiting.elapsed() >= warned + KAFKA_TIMEOUT {
                    warned = waiting.elapsed();
                    tracing::warn!("checkpoints not yet acknowledged ({e}); waiting");
                }
                if self.hard_stop.load(Ordering::Relaxed) {
                    anyhow::bail!("stopped while checkpoints were in flight");
                }
                if consumer.assignment_lost() {
                    // Another member may own the partitions by now, restored from
                    // older checkpoints: these must not land after its own. What is
                    // not yet sent fails here; the revocation follows.
                    tracing::warn!(
                        "the group assignment was lost while checkpoints waited; dropping what is not yet sent"
                    );
                    self.producer.purge_queued();
                    return Ok(false);
                }
            }
            if self.producer.deliveries().failed() > self.failures_seen {
                // A checkpoint failed: the next cycle sees the failure and rewinds.
                self.admin.metrics.commit_failed("checkpoint");
                return Ok(false);
            }
            if tpl.count() > 0 {
                consumer.commit(&tpl, CommitMode::Sync)
            } else {
                Ok(())
            }
        };
        if let Err(e) = result {
            if transactional {
                self.admin.metrics.commit_failed("transaction");
                tracing::error!("transaction failed ({e}); aborting and rewinding");
                if let Err(e) = self.producer.abort_transaction(KAFKA_TIMEOUT) {
                    anyhow::bail!("aborting the transaction failed: {e}");
                }
                self.rewind(consumer)?;
                return Ok(false);
            }
            // The checkpoints are written: the group offset catches up next cycle.
            self.admin.metrics.commit_failed("offsets");
            tracing::warn!("committing group offsets failed ({e}); retrying next cycle");
            if consumer.assignment_lost() {
                // No longer a member (a failed commit is one way to learn it): another
                // member may own the partitions and decide their idle closes.
                return Ok(false);
            }
            if !idle.is_empty() {
                // Maybe still the owner, maybe not (librdkafka reports some refusals
                // mid-rebalance without marking the assignment lost). The idle
                // checkpoints are durable, and any restore from them closes those
                // windows here; but if another member restored before they landed,
                // it closes them later, and closing them now would give one id two
                // contents. So: neither close nor read on — hold the partitions,
                // paused, until a commit is accepted (then close) or they are revoked
                // (their next owner closes them).
                self.hold_idle(consumer, &idle)?;
                return Ok(false);
            }
        }
        self.stats.commits += 1;
        self.sent_since_commit = false;
        for (i, text) in planned {
            self.parts[i].committed = Some(text);
        }
        self.go_idle(&idle, now)?;
        if close_idle {
            // Held partitions were among `idle`: closed just now.
            self.release_held(consumer)?;
        }
        Ok(true)
    }

    /// Holds idle partitions whose group commit failed (see [`State::commit_cycle`]).
    fn hold_idle(&mut self, consumer: &Source, idle: &[PartitionId]) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        for part in self.parts.iter_mut().filter(|p| idle.contains(p.pid())) {
            if !part.idle_held {
                part.idle_held = true;
                tpl.add_partition(&part.at.partition.topic, part.at.partition.partition);
            }
        }
        if tpl.count() > 0 {
            tracing::warn!(
                partitions = tpl.count(),
                "idle partitions held (windows open, reading paused) until a group commit is accepted"
            );
            consumer.pause(&tpl).context("pausing held partitions")?;
        }
        Ok(())
    }

    /// Resumes held partitions (their windows were just closed) from where they were.
    fn release_held(&mut self, consumer: &Source) -> anyhow::Result<()> {
        for part in self.parts.iter_mut().filter(|p| p.idle_held) {
            part.idle_held = false;
            let pid = &part.at.partition;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&pid.topic, pid.partition);
            consumer.resume(&tpl).context("resuming a held partition")?;
            if let Some(next) = part.next_offset {
                consumer
                    .seek(
                        &pid.topic,
                        pid.partition,
                        Offset::Offset(next),
                        KAFKA_TIMEOUT,
                    )
                    .with_context(|| format!("moving {pid} back to {next} after holding it"))?;
            }
        }
        Ok(())
    }

    pub(super) fn go_idle(&mut self, idle: &[PartitionId], now: i64) -> anyhow::Result<()> {
        for pid in idle {
            self.engine.go_idle(pid, now, &mut self.outputs);
        }
        self.send_outputs(None)
    }

    /// Forgets everything not committed and re-reads it.
    pub(super) fn rewind(&mut self, consumer: &Source) -> anyhow::Result<()> {
        self.stats.rewinds += 1;
        self.admin.metrics.rewinds.inc();
        self.sent_since_commit = false;
        // Held partitions sent nothing since their idle checkpoint (outputs before it
        // were acknowledged): they stay as they are.
        let pids: Vec<PartitionId> = self
            .parts
            .iter()
            .filter(|p| !p.idle_held)
            .map(|p| p.pid().clone())
            .collect();
        self.restore(consumer, &pids, true)
    }

    /// Whether a send failed because the open transaction did (exactly-once mode): a
    /// broker restart can leave it needing an abort ("skipped sequence numbers …
    /// requires epoch bump", found by a 20-minute chaos run), and the producer then
    /// refuses every send with `State`. Marks it for [`State::abort_if_failed`]; what
    /// was not sent is re-read after the rewind.
    pub(super) fn transaction_failed(&self, e: &KafkaError) -> bool {
        let failed = self.producer.is_transactional()
            && e.rdkafka_error_code() == Some(RDKafkaErrorCode::State);
        if failed && !self.abortable.replace(true) {
            tracing::warn!("the transaction failed ({e}); aborting it and rewinding");
        }
        failed
    }

    /// Aborts a failed transaction and rewinds every partition to its last checkpoint.
    pub(super) fn abort_if_failed(&mut self, consumer: &Source) -> anyhow::Result<()> {
        if !self.abortable.get() {
            return Ok(());
        }
        self.outputs.clear();
        self.producer
            .abort_transaction(KAFKA_TIMEOUT)
            .context("aborting the failed transaction")?;
        self.abortable.set(false);
        self.rewind(consumer)
    }
}
