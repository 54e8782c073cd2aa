//! Recovery: partitions assigned and revoked. An assigned partition is restored from
//! its latest checkpoint ([`super::checkpoint`]) and replayed from there; a revoked one
//! is forgotten once its last cycle committed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::{KAFKA_TIMEOUT, Part, State, now_ms};
use crate::source::{Assignment, Source};
use crate::window::{Checkpoint, PartitionId, SourcePos};

impl State {
    /// Applies the rebalances reported since the last call; returns whether there were any.
    pub(super) fn handle_assignment_changes(&mut self, consumer: &Source) -> anyhow::Result<bool> {
        let changes = consumer.context().take_changes();
        let changed = !changes.is_empty();
        for change in changes {
            match change {
                Assignment::Revoking(pids) => {
                    // The group waits: commit what this worker did with the partitions
                    // (outputs acknowledged, checkpoints, group offsets), so that their
                    // next owner starts here rather than at the last commit, which would
                    // write again what was written since. Then let the rebalance go on.
                    let committed = self.commit_cycle(consumer, false);
                    let finished = consumer.context().finish_revocation(consumer);
                    match committed? {
                        true => tracing::info!(
                            partitions = pids.len(),
                            "committed before handing the partitions over"
                        ),
                        false => tracing::warn!(
                            partitions = pids.len(),
                            "could not commit before handing the partitions over; their next owner re-reads from the last commit"
                        ),
                    }
                    finished.context("completing the revocation")?;
                    self.forget(consumer, &pids)?;
                }
                Assignment::Revoked(pids) => self.forget(consumer, &pids)?,
                Assignment::Assigned(pids) => {
                    let fresh: Vec<PartitionId> = pids
                        .into_iter()
                        .filter(|pid| self.part_index(&pid.topic, pid.partition).is_none())
                        .collect();
                    self.restore(consumer, &fresh, false)?;
                    self.admin
                        .health
                        .set_assigned(self.worker(), !self.parts.is_empty());
                }
            }
        }
        Ok(changed)
    }

    /// Drops revoked partitions' state without emitting (their new owner replays them).
    pub(super) fn forget(&mut self, consumer: &Source, pids: &[PartitionId]) -> anyhow::Result<()> {
        for pid in pids {
            self.engine.revoke(pid);
        }
        self.parts.retain(|p| !pids.contains(p.pid()));
        self.admin
            .health
            .set_assigned(self.worker(), !self.parts.is_empty());
        if self.producer.is_transactional() && self.sent_since_commit {
            // The open transaction holds outputs of the revoked partitions,
            // whose new owner re-reads them from the last commit:
            // committing it later would show them twice. Abort it and
            // re-read what this instance keeps.
            tracing::info!(
                "partitions revoked mid-transaction: aborting it and re-reading the partitions kept"
            );
            self.producer
                .abort_transaction(KAFKA_TIMEOUT)
                .context("aborting the transaction on revocation")?;
            self.rewind(consumer)?;
        }
        Ok(())
    }

    /// Restores partitions from their latest checkpoints (else from the group's
    /// committed offset, else from the beginning). `seek`: move the consumer there too
    /// (a rewind; a new assignment starts at the committed offset by itself, which is
    /// never past the checkpoint's replay start).
    pub(super) fn restore(
        &mut self,
        consumer: &Source,
        pids: &[PartitionId],
        seek: bool,
    ) -> anyhow::Result<()> {
        if pids.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for pid in pids {
            tpl.add_partition(&pid.topic, pid.partition);
        }
        // The group offsets first, then the checkpoints: an offset is committed only
        // after its checkpoint is acknowledged, so every offset read has its checkpoint
        // in the later read. The other order can pair an offset another member
        // committed meanwhile with no checkpoint, and restore that partition as fresh
        // from the offset (state lost, counts emitted twice).
        let (mut checkpoints, committed) = loop {
            let loaded = consumer
                .committed_offsets(tpl.clone(), KAFKA_TIMEOUT)
                .and_then(|committed| Ok((self.store.load(pids)?, committed)));
            match loaded {
                Ok(v) => break v,
                Err(e) if !self.hard_stop.load(Ordering::Relaxed) => {
                    self.beat();
                    tracing::warn!("reading checkpoints: {e}; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e).context("reading checkpoints"),
            }
        };
        let now = now_ms();
        for elem in committed.elements() {
            let pid = PartitionId::new(elem.topic(), elem.partition());
            let group_offset = match elem.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            // A checkpoint found is written again, in this member's epoch, at the next
            // cycle (its text is not taken as written): one that a member that lost
            // the partition still delivers later must not outrank it.
            let (cp, known, epoch) = match (checkpoints.remove(&pid), group_offset) {
                (Some(found), _) => (found.checkpoint, true, found.epoch.unwrap_or(-1)),
                (None, Some(o)) => (Checkpoint::fresh(o), true, -1),
                (None, None) => (Checkpoint::fresh(-1), false, -1),
            };
            let from = cp.replay_from();
            if let Some(o) = group_offset
                && o > from
            {
                tracing::warn!(partition = %pid, group_offset = o, from, "the group offset is past the checkpoint's replay start (committed by another tool?); re-reading from the checkpoint");
            }
            let replay_until = cp.next_offset;
            tracing::info!(partition = %pid, from, replay_until, "restored");
            self.engine.restore(&pid, cp, now, &mut self.outputs);
            if seek || group_offset.is_some_and(|o| o > from) {
                let target = if known {
                    Offset::Offset(from)
                } else {
                    Offset::Beginning
                };
                if let Err(e) = consumer.seek(&pid.topic, pid.partition, target, KAFKA_TIMEOUT) {
                    anyhow::bail!("moving {pid} to {target:?}: {e}");
                }
            }
            let part = Part {
                at: SourcePos {
                    partition: pid,
                    offset: 0,
                    index: 0,
                },
                next_offset: known.then_some(replay_until),
                replay_from: from,
                replay_until,
                read_to: None,
                committed: None,
                epoch,
                idle_held: false,
            };
            match self.part_index(&part.pid().topic, part.pid().partition) {
                Some(i) => self.parts[i] = part,
                None => self.parts.push(part),
            }
        }
        self.send_outputs(None)?;
        Ok(())
    }
}
