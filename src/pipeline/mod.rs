//! The processor: consume → decode → window → emit → produce, with recovery by replay.
//!
//! One thread runs the loop (one per worker, [`pool`]: each worker is a whole pipeline
//! with its own partitions); librdkafka's own threads fetch and deliver. Each turn of
//! the loop reads up to [`crate::source::BATCH`] records at once ([`crate::source::Batch`])
//! and then serves the group's events (rebalances) through the consumer's poll. Every
//! `commit_interval` (and whenever a partition goes idle) the loop runs a commit cycle:
//! 1. flush the producer: every output derived from what was read is acknowledged;
//! 2. any delivery failure since the last cycle → rewind every partition to its last
//!    commit (nothing derived from uncommitted input is trusted);
//! 3. write each changed partition's checkpoint to the checkpoint topic
//!    ([`checkpoint`]) and wait for it, then commit the group offset
//!    [`Checkpoint::replay_from`] — in exactly-once mode all of it in the transaction;
//! 4. only then close the partitions found idle in step 3's checkpoints: the decision
//!    is durable before its outputs exist, so a replay makes the same one.
//!
//! A revocation in at-least-once mode waits for one more cycle (without idle closes)
//! before the partitions leave ([`crate::source::Assignment::Revoking`]), so their next
//! owner starts where this worker stopped.
//!
//! On assignment (start, rebalance, rewind) a partition is restored from its latest
//! checkpoint: records before the checkpoint's `next_offset` are re-read to rebuild open
//! windows and emit nothing; from there on, outputs are byte-identical to the first
//! run's, with the same ids.

pub mod checkpoint;
mod guard;
pub mod pool;
pub mod producer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::admin::Admin;
use crate::config::{Config, FuturePolicy};
use crate::deadletter::fit;
use crate::deadletter::header as dead_letter_header;
use crate::decode::counting::{self, CountFrom};
use crate::decode::{DecodeError, Decoded, Decoder, Dialect, Reason};
use crate::emit::{Emitter, OutputKind, dead_letter_id, header, refused_id};
use crate::kafka::producer::headers;
use crate::metrics::Metrics;
use crate::source::{Assignment, BATCH, Record, Source};
use crate::window::{Checkpoint, Engine, Output, PartitionId, SourcePos};
use producer::{Outgoing, Producer, Refused};

/// Most output ids remembered as refused (they are set aside again on a replay).
const MAX_DIVERTED: usize = 100_000;

/// Totals of one run, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    pub replayed_records: u64,
    pub dead_letters: u64,
    pub outputs: [u64; 8],
    pub commits: u64,
    pub rewinds: u64,
    /// Records the consumer delivered again without a rebalance or rewind (skipped).
    pub redelivered: u64,
    /// Records before a restored checkpoint's replay start (skipped).
    pub skipped_before_replay: u64,
    /// Records read while the group assignment was lost (skipped: their partitions
    /// may have a new owner already, which reads them).
    pub skipped_while_lost: u64,
}

impl Stats {
    /// Adds another worker's totals.
    pub fn add(&mut self, other: &Stats) {
        self.records += other.records;
        self.replayed_records += other.replayed_records;
        self.dead_letters += other.dead_letters;
        for (a, b) in self.outputs.iter_mut().zip(other.outputs) {
            *a += b;
        }
        self.commits += other.commits;
        self.rewinds += other.rewinds;
        self.redelivered += other.redelivered;
        self.skipped_before_replay += other.skipped_before_replay;
        self.skipped_while_lost += other.skipped_while_lost;
    }
}

/// An assigned input partition.
#[derive(Debug)]
struct Part {
    /// The partition, and the position of the event being processed: one per partition,
    /// updated per event, so the partition id's `Arc` is not counted up and down for
    /// each record.
    at: SourcePos,
    /// Next offset to process; `None` until the first record after assignment
    /// (or the restored checkpoint's, when it had one).
    next_offset: Option<i64>,
    /// The restored checkpoint's replay start: records before it were fully accounted
    /// for before the checkpoint (the consumer starts at the group offset, which may be
    /// older when a commit failed): skipped.
    replay_from: i64,
    /// Records before this offset were processed before (replay: emit nothing).
    replay_until: i64,
    /// The offset after the last record read since the restore: the consumer reads
    /// forward, so a record before it is one it delivered again.
    read_to: Option<i64>,
    /// The checkpoint last written, to skip identical ones.
    committed: Option<String>,
}

impl Part {
    fn pid(&self) -> &PartitionId {
        &self.at.partition
    }
}

pub struct Pipeline {
    consumer: Source,
    state: State,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    config: Config,
    producer: Producer,
    store: checkpoint::Store,
    decoder: Decoder,
    engine: Engine,
    emitter: Emitter,
    parts: Vec<Part>,
    outputs: Vec<Output>,
    decoded: Decoded,
    last_commit: Instant,
    /// Wall-clock ms, read once per batch of records.
    now: i64,
    failures_seen: u64,
    sent_since_commit: bool,
    /// Exactly-once: the open transaction failed (the producer refuses sends with
    /// `State`): nothing more is sent until it is aborted and the partitions rewound.
    abortable: std::cell::Cell<bool>,
    /// Ids of outputs the broker refused for good: a replay sets them aside at once (in
    /// exactly-once mode a refusal aborts the transaction, and the re-read must not
    /// send the record again).
    /// How often each was refused: a dead letter refused once is written again as its
    /// stub, one refused twice is given up (counted, logged).
    diverted: std::collections::HashMap<String, u8>,
    stats: Stats,
    hard_stop: Arc<AtomicBool>,
    admin: Arc<Admin>,
    counters: Counters,
    /// The counting rule of each input topic seen, with its guard.
    counting: Vec<TopicCounting>,
}

/// One input topic's counting rule ([`crate::decode::counting`]), the guard that
/// watches it, and its counters.
#[derive(Debug)]
struct TopicCounting {
    topic: String,
    count_from: CountFrom,
    guard: guard::Guard,
    /// Evaluations and summaries not counted.
    not_counted: [Pending; 2],
    mismatches: [Counter; 3],
    /// Each kind of mismatch is logged once per worker.
    warned: [bool; 3],
}

impl TopicCounting {
    fn new(metrics: &Metrics, topic: &str, count_from: CountFrom) -> Self {
        let labels = |kind: &str| vec![("topic", topic.to_owned()), ("kind", kind.to_owned())];
        Self {
            topic: topic.to_owned(),
            count_from,
            guard: guard::Guard::new(count_from),
            not_counted: ["evaluation", "summary"]
                .map(|k| Pending::new(metrics.not_counted.get_or_create(&labels(k)).clone())),
            mismatches: guard::Mismatch::ALL.map(|m| {
                metrics
                    .count_mismatches
                    .get_or_create(&labels(m.code()))
                    .clone()
            }),
            warned: [false; 3],
        }
    }

    /// Counts and, once per kind, logs what the guard found.
    fn report(&mut self, found: &guard::Findings) {
        for m in guard::Mismatch::ALL {
            let i = m as usize;
            if found.counts[i] == 0 {
                continue;
            }
            self.mismatches[i].inc_by(found.counts[i]);
            if !std::mem::replace(&mut self.warned[i], true) {
                let flag = found.example[i].as_deref().unwrap_or_default();
                tracing::warn!("{}", m.advice(&self.topic, flag, self.count_from));
            }
        }
    }
}

/// A shared counter and the count of this worker not yet added to it.
#[derive(Debug)]
struct Pending {
    counter: Counter,
    count: u64,
}

impl Pending {
    fn new(counter: Counter) -> Self {
        Self { counter, count: 0 }
    }

    /// Adds the pending count to the shared counter.
    fn flush(&mut self) {
        if self.count > 0 {
            self.counter.inc_by(std::mem::take(&mut self.count));
        }
    }
}

/// One input topic's counters: records, and events per dialect.
#[derive(Debug)]
struct TopicCounters {
    topic: String,
    records: Pending,
    events: Vec<(Dialect, Pending)>,
}

/// Metric handles looked up once. Counts are kept here, per worker, and added to the
/// shared metrics once per loop turn ([`Counters::flush`]): the workers of a process
/// share each metric's atomic, and adding to it per record would move its cache line
/// between their cores for every record.
#[derive(Debug)]
struct Counters {
    topics: Vec<TopicCounters>,
    outputs: Vec<Pending>,
    replayed: Pending,
    /// Engine late counts already reported (correction, dead-letter, drop).
    late_seen: [u64; 3],
    /// Corrections closed early and settings changes, as last published.
    engine_seen: [u64; 2],
    /// Open windows, distinct keys and assigned partitions last added to the gauges.
    gauges: [i64; 3],
}

impl Counters {
    fn new(metrics: &Metrics) -> Self {
        Self {
            topics: Vec::new(),
            outputs: OutputKind::ALL
                .iter()
                .map(|k| {
                    Pending::new(
                        metrics
                            .events_out
                            .get_or_create(&Metrics::kind(k.name()))
                            .clone(),
                    )
                })
                .collect(),
            replayed: Pending::new(metrics.replayed_records.clone()),
            late_seen: [0; 3],
            engine_seen: [0; 2],
            gauges: [0; 3],
        }
    }

    /// Counts one input record of `topic` and its events read as `dialect`.
    fn record(&mut self, metrics: &Metrics, topic: &str, dialect: Option<Dialect>, events: u64) {
        let i = match self.topics.iter().position(|t| t.topic == topic) {
            Some(i) => i,
            None => {
                let records = metrics
                    .records_in
                    .get_or_create(&Metrics::topic(topic))
                    .clone();
                self.topics.push(TopicCounters {
                    topic: topic.to_owned(),
                    records: Pending::new(records),
                    events: Vec::new(),
                });
                self.topics.len() - 1
            }
        };
        let TopicCounters {
            records,
            events: dialects,
            ..
        } = &mut self.topics[i];
        records.count += 1;
        let (Some(dialect), 1..) = (dialect, events) else {
            return;
        };
        let j = match dialects.iter().position(|(d, _)| *d == dialect) {
            Some(j) => j,
            None => {
                let labels = vec![
                    ("topic", topic.to_owned()),
                    ("dialect", dialect.name().to_owned()),
                ];
                let counter = metrics.events_in.get_or_create(&labels).clone();
                dialects.push((dialect, Pending::new(counter)));
                dialects.len() - 1
            }
        };
        dialects[j].1.count += events;
    }

    /// Counts one output record of `kind`.
    fn output(&mut self, kind: OutputKind) {
        self.outputs[kind as usize].count += 1;
    }

    /// Adds the counts kept since the last flush to the shared metrics.
    fn flush(&mut self) {
        for t in &mut self.topics {
            t.records.flush();
            t.events.iter_mut().for_each(|(_, p)| p.flush());
        }
        self.outputs.iter_mut().for_each(Pending::flush);
        self.replayed.flush();
    }
}

impl Drop for Counters {
    /// A worker that stops, by any path, leaves no count behind.
    fn drop(&mut self) {
        self.flush();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

impl Pipeline {
    /// Ends the worker when its consumer or producer hit a fatal error (for example
    /// `FENCED_INSTANCE_ID`: another instance joined with the same
    /// `kafka.instance_id`). Such a client delivers nothing more, and a process that
    /// only logged it would stay alive and ready without doing anything: the instance
    /// turns not ready, and the process exits non-zero so that systemd or the
    /// orchestrator restarts it with fresh clients. Nothing is committed on the way out:
    /// the restart resumes from the last commit.
    fn fail_on_fatal_error(&self) -> anyhow::Result<()> {
        let fatal = self
            .consumer
            .client()
            .fatal_error()
            .map(|e| ("consumer", e))
            .or_else(|| self.state.producer.fatal_error().map(|e| ("producer", e)));
        let Some((client, (code, reason))) = fatal else {
            return Ok(());
        };
        let text = format!("fatal Kafka {client} error ({code:?}): {reason}");
        self.state.admin.health.set_failed(&text);
        anyhow::bail!("{text}; exiting so that the service manager restarts the instance")
    }

    /// Connects to the broker (consumer subscribed, producer ready). `hard_stop` makes
    /// any wait for the broker give up (a second signal).
    pub fn new(
        config: Config,
        hard_stop: Arc<AtomicBool>,
        admin: Arc<Admin>,
    ) -> anyhow::Result<Self> {
        let engine = Engine::new(Self::engine_config(&config))?;
        // The checkpoint topic first: the producer sizes its batches to its limit too.
        let store = checkpoint::Store::new(&config).context("opening the checkpoint topic")?;
        let producer =
            Producer::new(&config, Arc::clone(&admin)).context("creating the producer")?;
        producer
            .check_connection(KAFKA_TIMEOUT)
            .with_context(|| format!("reaching the brokers {}", config.kafka.brokers))?;
        config
            .checkpoint_fits(producer.record_limit(store.topic()))
            .map_err(anyhow::Error::msg)?;
        admin
            .health
            .set_outputs_connected(config.processing.worker, true);
        let consumer = crate::source::consumer(&config, Arc::clone(&admin))
            .context("creating the consumer")?;
        Ok(Self {
            consumer,
            state: State {
                decoder: config.decoder(),
                emitter: Emitter::new(config.emit_config()),
                config,
                producer,
                store,
                engine,
                parts: Vec::new(),
                outputs: Vec::new(),
                decoded: Decoded::default(),
                last_commit: Instant::now(),
                now: now_ms(),
                failures_seen: 0,
                sent_since_commit: false,
                abortable: std::cell::Cell::new(false),
                diverted: std::collections::HashMap::new(),
                stats: Stats::default(),
                hard_stop,
                counters: Counters::new(&admin.metrics),
                counting: Vec::new(),
                admin,
            },
        })
    }

    /// The engine computes only what some topic receives: no index cache without an
    /// index topic, no full-fidelity or debug events without their topics.
    fn engine_config(config: &Config) -> crate::window::EngineConfig {
        let mut ec = config.engine_config();
        let topics = &config.output.topics;
        ec.index.enabled &= topics.index.is_some();
        ec.gate.debug_events &= topics.debug.is_some();
        if topics.feature.is_none() {
            ec.gate.overrides = vec![crate::window::Override {
                flags: "*".to_owned(),
                full_events: crate::window::FullEvents::Never,
                sampling_ratio: None,
            }];
        }
        ec
    }

    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    /// Applies the settings that can change while running (a reload): the
    /// full-fidelity rules. Events from now on follow them (a replay after a restart
    /// applies the rules of its own time).
    pub fn apply_live(&mut self, config: &Config) -> anyhow::Result<()> {
        let mut next = self.state.config.clone();
        next.full_events = config.full_events.clone();
        self.state
            .engine
            .set_gate(&Self::engine_config(&next).gate)
            .context("full_events.overrides")?;
        self.state.config = next;
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// Runs until `stop` is set, then drains: everything read is delivered and
    /// committed before this returns. `on_turn` runs between batches (reloads,
    /// status reports); it may call [`Pipeline::apply_live`].
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        on_turn: &mut dyn FnMut(&mut Pipeline),
    ) -> anyhow::Result<()> {
        let mut last_report = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.state.beat();
            on_turn(self);
            // Up to a batch of records per turn, waiting for the first when none is
            // there; the clock is read once per batch, after that wait.
            let mut batch = self.consumer.batch();
            self.consumer.read(&mut batch, Duration::from_millis(100));
            self.state.now = now_ms();
            if !batch.is_empty() && self.consumer.assignment_lost() {
                // The session timed out (the broker was out of reach, or a restore
                // outlasted it): another member may own these partitions and have
                // decided idle closes this one does not know of. Emitting from here
                // could count twice; the revocation comes with the next polls, and
                // whoever owns the partitions then re-reads these records.
                self.state.stats.skipped_while_lost += batch.len() as u64;
            } else {
                for record in batch.iter() {
                    match record {
                        Ok(r) => self.state.process(&r)?,
                        Err(e) => self.state.read_error(&self.consumer, &e)?,
                    }
                }
            }
            // The group's events (rebalances, errors, statistics), and records of a
            // partition that could not be routed to the record queue, if any.
            for _ in 0..BATCH {
                let msg = self.consumer.poll(Duration::ZERO);
                let changed = self.state.handle_assignment_changes(&self.consumer)?;
                match msg {
                    Some(Ok(_)) if self.consumer.assignment_lost() => {
                        self.state.stats.skipped_while_lost += 1;
                    }
                    Some(Ok(m)) => self.state.process(&Record::of(&m))?,
                    Some(Err(e)) => tracing::warn!("consumer: {e}"),
                    // A rebalance served: more of it may be queued behind.
                    None if changed => {}
                    None => break,
                }
            }
            self.fail_on_fatal_error()?;
            self.state.abort_if_failed(&self.consumer)?;
            self.state.commit_cycle_if_due(&self.consumer)?;
            self.state.update_metrics();
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                let s = &self.state.stats;
                tracing::info!(
                    records = s.records,
                    replayed = s.replayed_records,
                    dead_letters = s.dead_letters,
                    summaries = s.outputs[OutputKind::Summary as usize],
                    commits = s.commits,
                    open_windows = self.state.engine.open_windows(),
                    "progress"
                );
            }
        }
        self.state.admin.health.set_draining();
        tracing::info!("draining: stop fetching, deliver, commit");
        self.consumer
            .assignment()
            .and_then(|a| self.consumer.pause(&a))
            .unwrap_or_else(|e| tracing::warn!("pausing the consumer: {e}"));
        self.state.handle_assignment_changes(&self.consumer)?;
        while !self.state.commit_cycle(&self.consumer, false)? {
            self.state.beat();
            if self.state.hard_stop.load(Ordering::Relaxed) {
                anyhow::bail!("stopped before the final commit");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

impl State {
    /// This worker's index (`processing.worker`).
    fn worker(&self) -> usize {
        self.config.processing.worker
    }

    /// This worker is alive (a loop turn, or a wait on the broker).
    fn beat(&self) {
        self.admin.health.beat(self.worker());
    }

    /// Counts, gauges and the engine's late counts, once per loop turn. The gauges are
    /// the sums over workers: each adds the change since its last report.
    fn update_metrics(&mut self) {
        self.counters.flush();
        for c in &mut self.counting {
            c.not_counted.iter_mut().for_each(Pending::flush);
        }
        let m = &self.admin.metrics;
        let now = [
            self.engine.open_windows(),
            self.engine.keys(),
            self.parts.len(),
        ]
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        for (i, gauge) in [&m.open_windows, &m.distinct_keys, &m.assigned_partitions]
            .into_iter()
            .enumerate()
        {
            if now[i] != self.counters.gauges[i] {
                gauge.inc_by(now[i] - self.counters.gauges[i]);
                self.counters.gauges[i] = now[i];
            }
        }
        let c = self.engine.counts();
        let late = [c.late_corrected, c.late_dead_lettered, c.late_dropped];
        for (i, policy) in ["correction", "dead-letter", "drop"].iter().enumerate() {
            if late[i] > self.counters.late_seen[i] {
                m.late_events
                    .get_or_create(&vec![("policy", (*policy).to_owned())])
                    .inc_by(late[i] - self.counters.late_seen[i]);
                self.counters.late_seen[i] = late[i];
            }
        }
        let now = [c.corrections_closed_early, c.settings_changes];
        for (i, counter) in [&m.corrections_closed_early, &m.window_settings_changes]
            .into_iter()
            .enumerate()
        {
            counter.inc_by(now[i].saturating_sub(self.counters.engine_seen[i]));
            self.counters.engine_seen[i] = now[i];
        }
    }

    fn part_index(&self, topic: &str, partition: i32) -> Option<usize> {
        self.parts
            .iter()
            .position(|p| p.pid().partition == partition && &*p.pid().topic == topic)
    }

    /// Applies the rebalances reported since the last call; returns whether there were any.
    fn handle_assignment_changes(&mut self, consumer: &Source) -> anyhow::Result<bool> {
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
    fn forget(&mut self, consumer: &Source, pids: &[PartitionId]) -> anyhow::Result<()> {
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
    fn restore(
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
            let (cp, known, stored) = match (checkpoints.remove(&pid), group_offset) {
                (Some(cp), _) => {
                    let text = checkpoint::encode(&cp);
                    (cp, true, Some(text))
                }
                (None, Some(o)) => (Checkpoint::fresh(o), true, None),
                (None, None) => (Checkpoint::fresh(-1), false, None),
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
                committed: stored,
            };
            match self.part_index(&part.pid().topic, part.pid().partition) {
                Some(i) => self.parts[i] = part,
                None => self.parts.push(part),
            }
        }
        self.send_outputs(None)?;
        Ok(())
    }

    fn process(&mut self, m: &Record<'_>) -> anyhow::Result<()> {
        // Read once: each call measures the C string and checks its UTF-8.
        let topic = m.topic();
        let Some(i) = self.part_index(topic, m.partition()) else {
            // A record of a partition revoked meanwhile: its new owner reads it.
            return Ok(());
        };
        let offset = m.offset();
        let part = &self.parts[i];
        if offset < part.replay_from {
            // Before the checkpoint's replay start: nothing of it is needed (the
            // consumer began at an older group offset, e.g. after a failed commit).
            self.stats.skipped_before_replay += 1;
            return Ok(());
        }
        let replaying = offset < part.replay_until;
        if part.read_to.is_some_and(|n| offset < n) {
            // The consumer went back on its own (a session lost during a broker
            // outage resets the fetch position to the group offset): this record is
            // already counted in the engine's state — replayed or processed since the
            // restore — and its outputs are written. Counting it again, in a replay
            // too, would count it twice.
            if self.stats.redelivered == 0 {
                tracing::warn!(partition = %part.pid(), offset, read_to = ?part.read_to, next = ?part.next_offset, "the consumer re-delivers records already read; skipping them");
            }
            self.stats.redelivered += 1;
            return Ok(());
        }
        self.stats.records += 1;
        if replaying {
            self.stats.replayed_records += 1;
            self.counters.replayed.count += 1;
        }
        self.decoded.clear();
        self.decoder
            .decode(m.payload().unwrap_or_default(), &mut self.decoded);
        self.bound_event_times(m.timestamp().to_millis(), replaying);
        self.apply_counting_rule(topic, replaying);
        if !replaying {
            self.counters.record(
                &self.admin.metrics,
                topic,
                self.decoded.dialect,
                self.decoded.events.len() as u64,
            );
            for e in &self.decoded.errors {
                self.admin
                    .metrics
                    .decode_errors
                    .get_or_create(&vec![
                        ("dialect", e.dialect.name().to_owned()),
                        ("reason", e.reason.code().to_owned()),
                    ])
                    .inc();
            }
        }
        if !self.decoded.errors.is_empty() && !replaying {
            let errors = std::mem::take(&mut self.decoded.errors);
            self.dead_letter(m, &errors)?;
            self.decoded.errors = errors;
        }
        let now = self.now;
        let part = &mut self.parts[i];
        part.at.offset = offset;
        for (index, event) in self.decoded.events.drain(..).enumerate() {
            part.at.index = index as u32;
            self.engine.push(&part.at, event, now, &mut self.outputs);
        }
        if replaying && offset + 1 >= part.replay_until {
            self.engine
                .finish_replay(&part.at.partition, now, &mut self.outputs);
        }
        part.next_offset = Some(offset + 1);
        part.read_to = Some(offset + 1);
        self.send_outputs(Some(m))
    }

    /// An error librdkafka reported in a record's place. An unreadable record batch
    /// follows `input.unreadable_batches`: librdkafka would fetch it again and again,
    /// stalling its partition. Any other error is librdkafka's to retry.
    fn read_error(
        &mut self,
        consumer: &Source,
        e: &crate::source::ReadError,
    ) -> anyhow::Result<()> {
        if !e.is_unreadable_batch() {
            tracing::warn!("consumer: {e}");
            return Ok(());
        }
        let Some(i) = self.part_index(&e.topic, e.partition) else {
            return Ok(());
        };
        if self.parts[i].read_to.is_some_and(|n| e.offset < n) {
            // Reported again from a fetch made before the skip below.
            return Ok(());
        }
        let policy = self.config.input.unreadable_batches;
        let what = format!(
            "unreadable record batch at {}/{} offset {} ({:?}: {})",
            e.topic, e.partition, e.offset, e.code, e.reason
        );
        if policy == crate::config::UnreadablePolicy::Stop {
            self.count_unreadable(&e.topic, "stop");
            let text = format!(
                "{what}; input.unreadable_batches = \"stop\": exiting (\"skip\" dead-letters it and reads on)"
            );
            self.admin.health.set_failed(&text);
            anyhow::bail!(text);
        }
        self.admin
            .health
            .set_input_problem(Some(format!("{what}; skipping it")));
        let mut probe = rdkafka::ClientConfig::new();
        probe.set("bootstrap.servers", &self.config.kafka.brokers);
        self.config
            .kafka
            .apply(&mut probe, &self.config.kafka.consumer_properties);
        probe
            .set("group.id", format!("{}-probe", self.config.kafka.group_id))
            .set("isolation.level", "read_committed");
        let end = match crate::source::unreadable_batch_end(
            &probe,
            &e.topic,
            e.partition,
            e.offset,
            &self.give_up(),
        ) {
            Ok(end) => end,
            Err(err) => {
                // The next fetch reports the batch again, and the search starts over.
                tracing::warn!("{what}: finding where it ends failed ({err}); trying again");
                return Ok(());
            }
        };
        self.count_unreadable(&e.topic, "skip");
        let part = &self.parts[i];
        let replaying = e.offset < part.replay_until;
        tracing::error!(
            topic = %e.topic,
            partition = e.partition,
            from = e.offset,
            to = end - 1,
            replaying,
            "{what}: skipped offsets {}–{}{}",
            e.offset,
            end - 1,
            if replaying { " (dead-lettered before the restart)" } else { "; dead-lettered" }
        );
        if !replaying && e.offset >= part.replay_from {
            self.dead_letter_unreadable(e, end, &what)?;
        }
        let now = self.now;
        let part = &mut self.parts[i];
        if replaying && end >= part.replay_until {
            self.engine
                .finish_replay(&part.at.partition, now, &mut self.outputs);
        }
        part.next_offset = Some(end);
        part.read_to = Some(end);
        consumer
            .seek(&e.topic, e.partition, Offset::Offset(end), KAFKA_TIMEOUT)
            .with_context(|| {
                format!(
                    "seeking {}/{} past the unreadable batch",
                    e.topic, e.partition
                )
            })?;
        self.admin.health.set_input_problem(None);
        self.send_outputs(None)
    }

    fn count_unreadable(&self, topic: &str, policy: &str) {
        self.admin
            .metrics
            .unreadable_batches
            .get_or_create(&vec![
                ("topic", topic.to_owned()),
                ("policy", policy.to_owned()),
            ])
            .inc();
    }

    /// The dead letter of an unreadable batch: no key, no payload (none could be
    /// read), its offset range in the source headers.
    fn dead_letter_unreadable(
        &mut self,
        e: &crate::source::ReadError,
        end: i64,
        what: &str,
    ) -> anyhow::Result<()> {
        let Some(topic) = self.config.output.dead_letter_topic.clone() else {
            return Ok(());
        };
        self.stats.dead_letters += 1;
        self.admin.metrics.dead_letters.inc();
        let id = dead_letter_id(&e.topic, e.partition, e.offset)
            .hyphenated()
            .to_string();
        let (partition, offset, last) = (
            e.partition.to_string(),
            e.offset.to_string(),
            (end - 1).to_string(),
        );
        let text = fit::cap(what, fit::MAX_PATH_BYTES * 4);
        let own: Vec<(&str, &[u8])> = vec![
            (header::ID, id.as_bytes()),
            (header::KIND, b"dead-letter"),
            (dead_letter_header::ERROR, text.as_bytes()),
            (dead_letter_header::REASON, b"unreadable_batch"),
            (dead_letter_header::DIALECT, b"-"),
            (dead_letter_header::PATH, b""),
            (dead_letter_header::COUNT, b"1"),
            (dead_letter_header::SOURCE_TOPIC, e.topic.as_bytes()),
            (dead_letter_header::SOURCE_PARTITION, partition.as_bytes()),
            (dead_letter_header::SOURCE_OFFSET, offset.as_bytes()),
            (dead_letter_header::SOURCE_OFFSET_LAST, last.as_bytes()),
        ];
        self.sent_since_commit = true;
        self.send_fitted(&topic, None, &[], &[], own, None)
    }

    /// Marks what the topic's counting rule leaves uncounted ([`counting::apply`]); the
    /// guard sees the record first, and neither counts nor warns during a replay.
    fn apply_counting_rule(&mut self, topic: &str, replaying: bool) {
        let i = match self.counting.iter().position(|c| c.topic == topic) {
            Some(i) => i,
            None => {
                let count_from = self.config.input.count_from(topic);
                let c = TopicCounting::new(&self.admin.metrics, topic, count_from);
                self.counting.push(c);
                self.counting.len() - 1
            }
        };
        let c = &mut self.counting[i];
        if !replaying {
            let mut found = guard::Findings::default();
            c.guard.observe(&self.decoded.events, self.now, &mut found);
            if !found.is_empty() {
                c.report(&found);
            }
        }
        let decided = counting::apply(c.count_from, &mut self.decoded.events);
        if !replaying {
            c.not_counted[0].count += u64::from(decided.evaluations_not_counted);
            c.not_counted[1].count += u64::from(decided.summaries_not_counted);
        }
    }

    /// Event time is bounded by the record's timestamp and by the processing clock,
    /// whichever is earlier: an event dated more than `input.max_future_skew` past it
    /// (a client with a wrong clock, or a forged date) is clamped to it or
    /// dead-lettered, so it cannot drag the watermark ahead and make every later event
    /// of its partition late. The record's timestamp is the broker's own on a topic
    /// with `message.timestamp.type = LogAppendTime`, and the producer's (CreateTime,
    /// forgeable: Kafka before 4.0 accepts any) otherwise; a record without one is
    /// bounded by the clock alone. The timestamp is part of the log, so a replay
    /// decides the same, except where the clock decided (a timestamp ahead of the
    /// clock, or none): an event dated between the first reading's bound and the
    /// replay's (as far apart as the replay is late) can be decided otherwise.
    fn bound_event_times(&mut self, record_ms: Option<i64>, replaying: bool) {
        let ts = record_ms.map_or(self.now, |ts| ts.min(self.now));
        let limit_ms =
            i64::try_from(self.config.input.max_future_skew.as_millis()).unwrap_or(i64::MAX);
        let bound = crate::event::EventTime::from_millis(ts.saturating_add(limit_ms));
        if !self
            .decoded
            .events
            .iter()
            .any(|e| e.time().is_some_and(|t| t > bound))
        {
            return;
        }
        let policy = self.config.input.future_policy;
        let mut moved = 0u64;
        match policy {
            FuturePolicy::Clamp => {
                let to = crate::event::EventTime::from_millis(ts);
                for e in &mut self.decoded.events {
                    if e.time().is_some_and(|t| t > bound) {
                        e.clamp_time(to);
                        moved += 1;
                    }
                }
            }
            FuturePolicy::DeadLetter => {
                let dialect = self.decoded.dialect.unwrap_or(self.decoder.dialect());
                let mut index = 0usize;
                let errors = &mut self.decoded.errors;
                self.decoded.events.retain(|e| {
                    index += 1;
                    match e.time() {
                        Some(t) if t > bound => {
                            errors.push(DecodeError::new(
                                dialect,
                                format!("event {}", index - 1),
                                Reason::FutureTime {
                                    ahead_ms: t.as_millis().saturating_sub(ts),
                                    limit_ms,
                                },
                            ));
                            moved += 1;
                            false
                        }
                        _ => true,
                    }
                });
            }
        }
        if !replaying {
            let label = match policy {
                FuturePolicy::Clamp => "clamp",
                FuturePolicy::DeadLetter => "dead-letter",
            };
            self.admin
                .metrics
                .future_events
                .get_or_create(&vec![("policy", label.to_owned())])
                .inc_by(moved);
        }
    }

    /// For waits on the broker: whether to stop waiting (a second signal). Each call
    /// is also a heartbeat: waiting on a slow broker is not a hang.
    fn give_up(&self) -> impl Fn() -> bool + '_ {
        || {
            self.beat();
            self.hard_stop.load(Ordering::Relaxed)
        }
    }

    /// Sends the engine's outputs; `source` is the record being processed (late
    /// events carry its bytes).
    fn send_outputs(&mut self, source: Option<&Record<'_>>) -> anyhow::Result<()> {
        let outputs = std::mem::take(&mut self.outputs);
        for out in &outputs {
            let kind = OutputKind::of(out);
            if let Output::Summary(s) = out
                && s.kinds_dropped > 0
            {
                self.admin
                    .metrics
                    .context_kinds_dropped
                    .inc_by(u64::from(s.kinds_dropped));
            }
            let Some(topic) = self.config.output.topics.topic(kind) else {
                continue;
            };
            let rec = self.emitter.emit(out)?;
            self.stats.outputs[kind as usize] += 1;
            self.counters.output(kind);
            self.sent_since_commit = true;
            if let (Output::Late { pos, window, .. }, Some(m)) = (out, source) {
                let index = pos.index.to_string();
                let error = format!(
                    "late: the window [{}, {}) was already emitted",
                    window.start.as_millis(),
                    window.end.as_millis()
                );
                let mut extra: Vec<(&str, &[u8])> = rec
                    .headers
                    .iter()
                    .map(|(k, v)| (*k, v.as_slice()))
                    .collect();
                extra.push((dead_letter_header::ERROR, error.as_bytes()));
                extra.push((dead_letter_header::REASON, b"late"));
                extra.push((dead_letter_header::EVENT_INDEX, index.as_bytes()));
                self.forward(m, topic, &extra)?;
                continue;
            }
            let hs = headers(rec.headers.iter().map(|(k, v)| (*k, v.as_slice())));
            let summary = matches!(out, Output::Summary(s) if !s.late);
            let outgoing = Outgoing {
                topic,
                key: rec.key.as_deref(),
                value: &rec.value,
                headers: hs,
                timestamp_ms: Some(rec.timestamp_ms),
                summary,
            };
            let size = rec.key.as_ref().map_or(0, |k| k.len())
                + rec.value.len()
                + rec
                    .headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>();
            let too_large = !self.producer.fits(topic, size);
            let diverted = too_large
                || !self.diverted.is_empty()
                    && rec
                        .headers
                        .iter()
                        .find(|(k, _)| *k == header::ID)
                        .is_some_and(|(_, id)| {
                            std::str::from_utf8(id).is_ok_and(|id| self.diverted.contains_key(id))
                        });
            if diverted {
                let why = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
                let mut refused = Refused::of(&outgoing, &why);
                drop(outgoing);
                refused.error = if too_large {
                    format!("{size} bytes, over the topic's max.message.bytes")
                } else {
                    "refused by the broker before (a replay)".to_owned()
                };
                self.set_aside(refused)?;
                continue;
            }
            let sent = self.producer.send(outgoing, &self.give_up());
            match sent {
                Ok(()) => {}
                Err(e) if e.rdkafka_error_code().is_some_and(fit::is_permanent) => {
                    let hs = headers(rec.headers.iter().map(|(k, v)| (*k, v.as_slice())));
                    let again = Outgoing {
                        topic,
                        key: rec.key.as_deref(),
                        value: &rec.value,
                        headers: hs,
                        timestamp_ms: Some(rec.timestamp_ms),
                        summary,
                    };
                    let refused = Refused::of(&again, &e);
                    drop(again);
                    self.set_aside(refused)?;
                }
                Err(e) if self.transaction_failed(&e) => break,
                Err(e) => return Err(e).with_context(|| format!("producing to {topic}")),
            }
        }
        self.outputs = outputs;
        self.outputs.clear();
        Ok(())
    }

    fn dead_letter(&mut self, m: &Record<'_>, errors: &[DecodeError]) -> anyhow::Result<()> {
        let Some(topic) = self.config.output.dead_letter_topic.clone() else {
            return Ok(());
        };
        self.stats.dead_letters += 1;
        self.admin.metrics.dead_letters.inc();
        let first = &errors[0];
        let text = fit::error_text(errors);
        let path = fit::cap(&first.path, fit::MAX_PATH_BYTES);
        let id = dead_letter_id(m.topic(), m.partition(), m.offset())
            .hyphenated()
            .to_string();
        let count = errors.len().to_string();
        let extra: [(&str, &[u8]); 6] = [
            (header::ID, id.as_bytes()),
            (header::KIND, b"dead-letter"),
            (dead_letter_header::ERROR, text.as_bytes()),
            (dead_letter_header::REASON, first.reason.code().as_bytes()),
            (dead_letter_header::DIALECT, first.dialect.name().as_bytes()),
            (dead_letter_header::PATH, path.as_bytes()),
        ];
        let mut extra = extra.to_vec();
        extra.push((dead_letter_header::COUNT, count.as_bytes()));
        self.sent_since_commit = true;
        self.forward(m, &topic, &extra)
    }

    /// Writes an input record (key, value, headers, timestamp) to `topic`, with `extra`
    /// headers and its source position. Input headers named `flagtally-*` are renamed,
    /// and names that are not UTF-8 percent-encoded ([`fit::forwarded_name_bytes`]); the
    /// payload is cut to what the dead-letter topic accepts, flagged by
    /// [`dead_letter_header::TRUNCATED`].
    fn forward(&self, m: &Record<'_>, topic: &str, extra: &[(&str, &[u8])]) -> anyhow::Result<()> {
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let input: Vec<(std::borrow::Cow<'_, str>, &[u8])> = m
            .header_bytes()
            .map(|(name, value)| (fit::forwarded_name_bytes(name), value.unwrap_or_default()))
            .collect();
        let mut own: Vec<(&str, &[u8])> = extra.to_vec();
        own.push((dead_letter_header::SOURCE_TOPIC, m.topic().as_bytes()));
        own.push((dead_letter_header::SOURCE_PARTITION, partition.as_bytes()));
        own.push((dead_letter_header::SOURCE_OFFSET, offset.as_bytes()));
        self.send_fitted(
            topic,
            m.key(),
            m.payload().unwrap_or_default(),
            &input,
            own,
            m.timestamp().to_millis(),
        )
    }

    /// Sends a dead letter (or late event) fitted to its topic: within
    /// `output.max_dead_letter_bytes` and the topic's own `max.message.bytes`
    /// ([`fit::fit_dead_letter`]: input headers dropped past half the room, the payload
    /// cut); where not even the key and flagtally's headers fit, or where the broker
    /// refused it before (`diverted`), as its stub ([`fit::stub_headers`]). A dead letter
    /// refused twice is given up: counted and logged, never a rewind loop.
    fn send_fitted(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        input: &[(std::borrow::Cow<'_, str>, &[u8])],
        own: Vec<(&str, &[u8])>,
        timestamp_ms: Option<i64>,
    ) -> anyhow::Result<()> {
        let refusals = own
            .iter()
            .find(|(k, _)| *k == header::ID)
            .and_then(|(_, id)| std::str::from_utf8(id).ok())
            .and_then(|id| self.diverted.get(id))
            .copied()
            .unwrap_or(0);
        if refusals >= 2 {
            self.dead_letter_refused(topic, "refused again as a stub");
            return Ok(());
        }
        let limit = self.config.output.max_dead_letter_bytes.min(
            self.producer
                .topic_limit(topic)
                .saturating_sub(fit::RECORD_MARGIN),
        );
        let key_len = key.map_or(0, <[u8]>::len);
        let own_size: usize = own.iter().map(|(k, v)| fit::header_size(k, v)).sum();
        let input_sizes: Vec<usize> = input.iter().map(|(k, v)| fit::header_size(k, v)).collect();
        let plan = if refusals >= 1 {
            fit::Fit::Stub
        } else {
            fit::fit_dead_letter(limit, own_size, key_len, &input_sizes, value.len())
        };
        let (headers_kept, value_kept) = match plan {
            fit::Fit::Whole => (input.len(), value.len()),
            fit::Fit::Cut {
                headers_kept,
                value_kept,
            } => (headers_kept, value_kept),
            fit::Fit::Stub => {
                let stub = fit::stub_headers(&own, value.len(), key_len, input_sizes.iter().sum());
                if stub
                    .iter()
                    .map(|(k, v)| fit::header_size(k, v))
                    .sum::<usize>()
                    > limit
                {
                    self.dead_letter_refused(topic, "not even its stub fits the topic");
                    return Ok(());
                }
                let outgoing = Outgoing {
                    topic,
                    key: None,
                    value: &[],
                    headers: headers(stub.iter().map(|(k, v)| (k.as_str(), v.as_slice()))),
                    timestamp_ms,
                    summary: false,
                };
                return self.send_dead_letter(topic, outgoing);
            }
        };
        let original = (value_kept < value.len()).then(|| value.len().to_string());
        let dropped =
            (headers_kept < input.len()).then(|| (input.len() - headers_kept).to_string());
        let cut = original
            .as_deref()
            .map(|n| (dead_letter_header::TRUNCATED, n.as_bytes()))
            .into_iter()
            .chain(
                dropped
                    .as_deref()
                    .map(|n| (dead_letter_header::HEADERS_DROPPED, n.as_bytes())),
            );
        let outgoing = Outgoing {
            topic,
            key,
            value: &value[..value_kept],
            headers: headers(
                input[..headers_kept]
                    .iter()
                    .map(|(k, v)| (k.as_ref(), *v))
                    .chain(own)
                    .chain(cut),
            ),
            timestamp_ms,
            summary: false,
        };
        self.send_dead_letter(topic, outgoing)
    }

    /// Queues a fitted dead letter; a refusal the producer reports at once is counted
    /// and logged (one reported later by the broker comes back through
    /// [`State::set_aside`]).
    fn send_dead_letter(&self, topic: &str, outgoing: Outgoing<'_>) -> anyhow::Result<()> {
        match self.producer.send(outgoing, &self.give_up()) {
            Ok(()) => Ok(()),
            Err(e) if e.rdkafka_error_code().is_some_and(fit::is_permanent) => {
                self.dead_letter_refused(topic, &e.to_string());
                Ok(())
            }
            Err(e) if self.transaction_failed(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("producing to {topic}")),
        }
    }

    /// Whether a send failed because the open transaction did (exactly-once mode): a
    /// broker restart can leave it needing an abort ("skipped sequence numbers …
    /// requires epoch bump", found by a 20-minute chaos run), and the producer then
    /// refuses every send with `State`. Marks it for [`State::abort_if_failed`]; what
    /// was not sent is re-read after the rewind.
    fn transaction_failed(&self, e: &KafkaError) -> bool {
        let failed = self.producer.is_transactional()
            && e.rdkafka_error_code() == Some(RDKafkaErrorCode::State);
        if failed && !self.abortable.replace(true) {
            tracing::warn!("the transaction failed ({e}); aborting it and rewinding");
        }
        failed
    }

    /// Aborts a failed transaction and rewinds every partition to its last checkpoint.
    fn abort_if_failed(&mut self, consumer: &Source) -> anyhow::Result<()> {
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

    /// The dead-letter topic itself refused a record: it is lost to Kafka, so it is at
    /// least counted and logged.
    fn dead_letter_refused(&self, topic: &str, error: &str) {
        self.admin
            .metrics
            .decode_errors
            .get_or_create(&vec![
                ("dialect", "-".to_owned()),
                ("reason", "dead_letter_refused".to_owned()),
            ])
            .inc();
        tracing::error!(topic, "the broker refused a dead letter: {error}");
    }

    /// An output the broker refused for good goes to the dead-letter topic instead,
    /// with the reason; its id is remembered so a replay sets it aside again.
    fn set_aside(&mut self, r: Refused) -> anyhow::Result<()> {
        let dlq = self.config.output.dead_letter_topic.clone();
        let is_dead_letter =
            r.kind.as_deref() == Some("dead-letter") || dlq.as_deref() == Some(r.topic.as_str());
        if let Some(id) = &r.id {
            self.divert(id);
        }
        if is_dead_letter {
            // Written again as its stub (headers only), unless it was the stub.
            if r.own_headers.iter().any(|(k, _)| k == fit::STUB) {
                self.dead_letter_refused(&r.topic, &r.error);
                return Ok(());
            }
            tracing::warn!(topic = %r.topic, id = ?r.id, "the broker refused a dead letter ({}); writing its stub", r.error);
            let own: Vec<(&str, &[u8])> = r
                .own_headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            self.sent_since_commit = true;
            return self.send_fitted(&r.topic, r.key.as_deref(), &r.value, &[], own, None);
        }
        let Some(dlq) = dlq else {
            self.dead_letter_refused(&r.topic, &r.error);
            return Ok(());
        };
        tracing::warn!(topic = %r.topic, id = ?r.id, "the broker refused an output ({}); it goes to the dead-letter topic", r.error);
        self.stats.dead_letters += 1;
        self.admin.metrics.dead_letters.inc();
        let id = refused_id(r.id.as_deref().unwrap_or_default())
            .hyphenated()
            .to_string();
        let error = fit::cap(&r.error, fit::MAX_ERROR_BYTES).into_owned();
        let original = r.value_len.to_string();
        let mut pairs: Vec<(&str, &[u8])> = vec![
            (header::ID, id.as_bytes()),
            (header::KIND, b"dead-letter"),
            (dead_letter_header::ERROR, error.as_bytes()),
            (dead_letter_header::REASON, b"refused"),
            (dead_letter_header::SOURCE_TOPIC, r.topic.as_bytes()),
            (
                dead_letter_header::REFUSED_KIND,
                r.kind.as_deref().unwrap_or_default().as_bytes(),
            ),
        ];
        if r.value.len() < r.value_len {
            pairs.push((dead_letter_header::TRUNCATED, original.as_bytes()));
        }
        self.sent_since_commit = true;
        self.send_fitted(&dlq, r.key.as_deref(), &r.value, &[], pairs, None)
    }

    /// Remembers one more refusal of the output `id`.
    fn divert(&mut self, id: &str) {
        if self.diverted.len() >= MAX_DIVERTED {
            self.diverted.clear();
        }
        let n = self.diverted.entry(id.to_owned()).or_default();
        *n = n.saturating_add(1);
    }

    fn commit_cycle_if_due(&mut self, consumer: &Source) -> anyhow::Result<()> {
        let due = self.last_commit.elapsed() >= self.config.processing.commit_interval
            || !self.engine.idle_due(self.now).is_empty();
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
    fn commit_cycle(&mut self, consumer: &Source, close_idle: bool) -> anyhow::Result<bool> {
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

    fn commit_cycle_inner(&mut self, consumer: &Source, close_idle: bool) -> anyhow::Result<bool> {
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
        let mut tpl = TopicPartitionList::new();
        let mut planned = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            let Some(next) = part.next_offset else {
                continue;
            };
            let cp = self
                .engine
                .checkpoint(part.pid(), next, idle.contains(part.pid()));
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
            let sent = self.producer.send(
                Outgoing {
                    topic: self.store.topic(),
                    key: Some(key.as_bytes()),
                    value: text.as_bytes(),
                    headers: headers([(header::KIND, b"checkpoint".as_slice())]),
                    timestamp_ms: None,
                    summary: false,
                },
                &self.give_up(),
            );
            match sent {
                Ok(()) => {}
                Err(e) if self.transaction_failed(&e) => return Ok(false),
                Err(e) => return Err(e).context("writing a checkpoint"),
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
            // The checkpoints are sent: wait for them whatever it takes. Going on
            // without knowing whether an idle checkpoint landed could let a replay
            // close windows this run did not.
            while let Err(e) = self.producer.flush(KAFKA_TIMEOUT) {
                self.beat();
                self.admin
                    .health
                    .set_outputs_connected(self.worker(), false);
                tracing::warn!("checkpoints not yet acknowledged ({e}); waiting");
                if self.hard_stop.load(Ordering::Relaxed) {
                    anyhow::bail!("stopped while checkpoints were in flight");
                }
            }
            if self.producer.deliveries().failed() > self.failures_seen {
                // A checkpoint failed: the next cycle sees the failure and rewinds.
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
                tracing::error!("transaction failed ({e}); aborting and rewinding");
                if let Err(e) = self.producer.abort_transaction(KAFKA_TIMEOUT) {
                    anyhow::bail!("aborting the transaction failed: {e}");
                }
                self.rewind(consumer)?;
                return Ok(false);
            }
            // The checkpoints are written: the group offset catches up next cycle.
            tracing::warn!("committing group offsets failed ({e}); retrying next cycle");
            if consumer.assignment_lost() {
                // No longer a member (a failed commit is one way to learn it): another
                // member may own the partitions and decide their idle closes.
                return Ok(false);
            }
            // Still the owner: the idle checkpoints are durable, and any restore from
            // them closes those windows, so this engine closes them too. Keeping them
            // open would let it emit, before its next checkpoint, summaries that a
            // restore from these would not (counted twice).
        }
        self.stats.commits += 1;
        self.sent_since_commit = false;
        for (i, text) in planned {
            self.parts[i].committed = Some(text);
        }
        self.go_idle(&idle, now)?;
        Ok(true)
    }

    fn go_idle(&mut self, idle: &[PartitionId], now: i64) -> anyhow::Result<()> {
        for pid in idle {
            self.engine.go_idle(pid, now, &mut self.outputs);
        }
        self.send_outputs(None)
    }

    /// Forgets everything not committed and re-reads it.
    fn rewind(&mut self, consumer: &Source) -> anyhow::Result<()> {
        self.stats.rewinds += 1;
        self.admin.metrics.rewinds.inc();
        self.sent_since_commit = false;
        let pids: Vec<PartitionId> = self.parts.iter().map(|p| p.pid().clone()).collect();
        self.restore(consumer, &pids, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reach_the_shared_metrics_once_per_flush_and_when_a_worker_stops() {
        let metrics = Metrics::new();
        let records = || {
            metrics
                .records_in
                .get_or_create(&Metrics::topic("in"))
                .get()
        };
        let events = || {
            let labels = vec![
                ("topic", "in".to_owned()),
                ("dialect", "launchdarkly".to_owned()),
            ];
            metrics.events_in.get_or_create(&labels).get()
        };
        let summaries = || {
            metrics
                .events_out
                .get_or_create(&Metrics::kind("summary"))
                .get()
        };
        let mut counters = Counters::new(&metrics);
        counters.record(&metrics, "in", Some(Dialect::Launchdarkly), 3);
        counters.record(&metrics, "in", None, 0);
        counters.output(OutputKind::Summary);
        counters.replayed.count += 1;
        assert_eq!(
            (records(), events(), summaries()),
            (0, 0, 0),
            "kept until the turn ends"
        );
        counters.flush();
        assert_eq!((records(), events(), summaries()), (2, 3, 1));
        assert_eq!(metrics.replayed_records.get(), 1);
        counters.flush();
        assert_eq!(
            (records(), events(), summaries()),
            (2, 3, 1),
            "a flush adds once"
        );
        // A second worker's counts add to the same metrics.
        let mut other = Counters::new(&metrics);
        other.record(&metrics, "in", Some(Dialect::Launchdarkly), 2);
        drop(other);
        counters.record(&metrics, "in", None, 0);
        drop(counters);
        assert_eq!(
            (records(), events()),
            (4, 5),
            "a stopping worker's counts are added"
        );
    }
}
