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
//!    [`crate::window::Checkpoint::replay_from`] — in exactly-once mode all of it in the transaction;
//! 4. only then, and only if the group commit was accepted, close the partitions found
//!    idle in step 3's checkpoints: the decision is durable before its outputs exist,
//!    so a replay makes the same one, and the accepted commit shows no other member
//!    had taken the partitions before it landed (else they are held, paused).
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
mod commit;
mod counters;
mod guard;
mod letters;
pub mod pool;
pub mod producer;
mod recovery;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rdkafka::Message as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::admin::Admin;
use crate::deadletter::fit;
use crate::deadletter::header as dead_letter_header;
use crate::decode::counting::CountRules;
use crate::decode::counting::{self};
use crate::decode::{DecodeError, Decoded, Decoder, Reason};
use crate::emit::{EmitConfig, Topics};
use crate::emit::{Emitter, OutputKind, header};
use crate::kafka::producer::headers;
use crate::source::{BATCH, Record, Source};
use crate::source::{SourceSettings, UnreadablePolicy};
use crate::window::{Engine, Output, PartitionId, SourcePos};
use crate::window::{EngineConfig, GateConfig};
use counters::{Counters, Pending, TopicCounting};
use producer::ProducerSettings;
use producer::{Outgoing, Producer, Refused};

/// What one pipeline worker takes from the configuration (`Config::pipeline_plan`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// This worker's number (0 … `processing.threads` − 1).
    pub worker: usize,
    pub source: SourceSettings,
    pub producer: ProducerSettings,
    /// `processing.checkpoint_topic`.
    pub checkpoint_topic: String,
    pub decoder: Decoder,
    /// The engine, computing only what some topic receives.
    pub engine: EngineConfig,
    pub emit: EmitConfig,
    /// `[output.topics]`.
    pub topics: Topics,
    /// `output.dead_letter_topic`.
    pub dead_letter_topic: Option<String>,
    /// `output.max_dead_letter_bytes`.
    pub max_dead_letter_bytes: usize,
    /// Where each input topic's evaluations are counted from.
    pub counting: CountRules,
    /// `input.max_future_skew`, in ms.
    pub max_future_skew_ms: i64,
    pub future_policy: FuturePolicy,
    pub unreadable_batches: UnreadablePolicy,
    /// `processing.commit_interval`.
    pub commit_interval: Duration,
}

/// What happens to an event dated more than `input.max_future_skew` past its record's
/// timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FuturePolicy {
    /// Counted at its record's timestamp.
    #[default]
    Clamp,
    /// Not counted: its record goes to the dead-letter topic (reason `future_time`).
    DeadLetter,
}

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
    /// The epoch of the checkpoint restored from: this worker's checkpoints carry it,
    /// or the group generation if higher (see `checkpoint`).
    epoch: i32,
    /// Found idle, its idle checkpoint written, but no group commit accepted since:
    /// nothing proves this member still owned the partition when the checkpoint
    /// landed, so its windows stay open, and the partition paused, until one is (see
    /// the commit cycle).
    idle_held: bool,
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
    settings: Settings,
    producer: Producer,
    store: checkpoint::Store,
    decoder: Decoder,
    engine: Engine,
    emitter: Emitter,
    parts: Vec<Part>,
    outputs: Vec<Output>,
    /// The value buffer of the output being encoded, kept between records.
    value_buf: Vec<u8>,
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

/// The wall clock, in ms since the epoch.
pub(crate) fn now_ms() -> i64 {
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
        settings: Settings,
        hard_stop: Arc<AtomicBool>,
        admin: Arc<Admin>,
    ) -> anyhow::Result<Self> {
        let engine = Engine::new(settings.engine.clone())?;
        // The checkpoint topic first: the producer sizes its batches to its limit too.
        let store = checkpoint::Store::new(&settings.source.kafka, &settings.checkpoint_topic)
            .context("opening the checkpoint topic")?;
        let producer = Producer::new(&settings.producer, Arc::clone(&admin))
            .context("creating the producer")?;
        if let Err(e) = producer.check_connection(KAFKA_TIMEOUT) {
            // A refusal the configuration explains (credentials, certificates) is
            // named in its terms; else the broker is unreachable.
            return Err(match admin.health.kafka_problem() {
                Some(problem) => anyhow::anyhow!("{problem}"),
                None => anyhow::Error::new(e).context(format!(
                    "reaching the brokers {}",
                    settings.source.kafka.brokers
                )),
            });
        }
        checkpoint::fits(
            &settings.engine.window,
            store.topic(),
            producer.record_limit(store.topic()),
        )
        .map_err(anyhow::Error::msg)?;
        admin.health.set_outputs_connected(settings.worker, true);
        let consumer = crate::source::consumer(&settings.source, Arc::clone(&admin))
            .context("creating the consumer")?;
        Ok(Self {
            consumer,
            state: State {
                decoder: settings.decoder.clone(),
                emitter: Emitter::new(settings.emit.clone()),
                settings,
                producer,
                store,
                engine,
                parts: Vec::new(),
                outputs: Vec::new(),
                value_buf: Vec::with_capacity(1024),
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

    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    /// Applies the settings that can change while running (a reload): the
    /// full-fidelity rules. Events from now on follow them (a replay after a restart
    /// applies the rules of its own time).
    pub fn apply_live(&mut self, gate: &GateConfig) -> anyhow::Result<()> {
        self.state
            .engine
            .set_gate(gate)
            .context("full_events.overrides")?;
        self.state.settings.engine.gate = gate.clone();
        Ok(())
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
        self.settings.worker
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
                m.late_events(policy)
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

    fn process(&mut self, m: &Record<'_>) -> anyhow::Result<()> {
        // Read once: each call measures the C string and checks its UTF-8.
        let topic = m.topic();
        let Some(i) = self.part_index(topic, m.partition()) else {
            // A record of a partition revoked meanwhile: its new owner reads it.
            return Ok(());
        };
        let offset = m.offset();
        let part = &self.parts[i];
        if part.idle_held {
            // Fetched before the pause: read again from `next_offset` on resuming.
            return Ok(());
        }
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
        // The collector's environment (the key the SDK posted with), for the events
        // that name none.
        if let Some(env) = m
            .header(crate::emit::header::ENV)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| !v.is_empty() && v.len() <= 256)
        {
            for e in &mut self.decoded.events {
                let scope = e.scope_mut();
                if scope.env.is_none() {
                    scope.env = Some(env.into());
                }
            }
        }
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
                    .decode_error(e.dialect.name(), e.reason.code());
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

    /// Marks what the topic's counting rule leaves uncounted ([`counting::apply`]); the
    /// guard sees the record first, and neither counts nor warns during a replay.
    fn apply_counting_rule(&mut self, topic: &str, replaying: bool) {
        let i = match self.counting.iter().position(|c| c.topic == topic) {
            Some(i) => i,
            None => {
                let count_from = self.settings.counting.of(topic);
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
        let limit_ms = self.settings.max_future_skew_ms;
        let bound = crate::event::EventTime::from_millis(ts.saturating_add(limit_ms));
        if !self
            .decoded
            .events
            .iter()
            .any(|e| e.time().is_some_and(|t| t > bound))
        {
            return;
        }
        let policy = self.settings.future_policy;
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
            self.admin.metrics.future_events(label).inc_by(moved);
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
        let sent = self.send_each(&outputs, source);
        self.outputs = outputs;
        self.outputs.clear();
        sent
    }

    fn send_each(&mut self, outputs: &[Output], source: Option<&Record<'_>>) -> anyhow::Result<()> {
        for out in outputs {
            let kind = OutputKind::of(out);
            if let Output::Summary(s) = out
                && s.kinds_dropped > 0
            {
                self.admin
                    .metrics
                    .context_kinds_dropped
                    .inc_by(u64::from(s.kinds_dropped));
            }
            if self.settings.topics.topic(kind).is_none() {
                continue;
            }
            let rec = self
                .emitter
                .emit_into(out, std::mem::take(&mut self.value_buf))?;
            let flow = self.send_one(out, kind, &rec, source);
            // The value's buffer serves the next output.
            self.value_buf = rec.value;
            if flow? == Flow::Stop {
                break;
            }
        }
        Ok(())
    }

    /// Sends one encoded output (or sets it aside); `Flow::Stop` when the transaction
    /// failed and the rest of the outputs are moot.
    fn send_one(
        &mut self,
        out: &Output,
        kind: OutputKind,
        rec: &crate::emit::Record,
        source: Option<&Record<'_>>,
    ) -> anyhow::Result<Flow> {
        self.stats.outputs[kind as usize] += 1;
        self.counters.output(kind);
        self.sent_since_commit = true;
        let Some(topic) = self.settings.topics.topic(kind) else {
            return Ok(Flow::Next);
        };
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
            return Ok(Flow::Next);
        }
        let summary = matches!(out, Output::Summary(s) if !s.late);
        // librdkafka takes the header list when it takes the record: a record refused
        // at the send is built again to be set aside.
        let outgoing_of = || Outgoing {
            topic,
            key: rec.key.as_deref(),
            value: &rec.value,
            headers: headers(rec.headers.iter().map(|(k, v)| (*k, v.as_slice()))),
            timestamp_ms: Some(rec.timestamp_ms),
            summary,
        };
        let outgoing = outgoing_of();
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
            return Ok(Flow::Next);
        }
        let sent = self.producer.send(outgoing, &self.give_up());
        match sent {
            Ok(()) => {}
            Err(e) if e.rdkafka_error_code().is_some_and(fit::is_permanent) => {
                let refused = Refused::of(&outgoing_of(), &e);
                self.set_aside(refused)?;
            }
            Err(e) if self.transaction_failed(&e) => return Ok(Flow::Stop),
            Err(e) => return Err(e).with_context(|| format!("producing to {topic}")),
        }
        Ok(Flow::Next)
    }
}

/// Whether to go on with the next output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Next,
    Stop,
}
