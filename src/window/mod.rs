//! Window: the pure event-time engine. No clock reads, no I/O: the caller passes each
//! event with its input position and the current wall-clock time, calls [`Engine::tick`]
//! now and then, and collects [`Output`]s.
//!
//! Invariants:
//! - tumbling windows `[start, start + size)`, aligned to the epoch plus `offset`;
//! - one watermark per input partition: highest event time seen − allowed lateness; a
//!   window closes when the watermark reaches its end, and an event whose window has
//!   closed is late (→ [`LatePolicy`]);
//! - a partition with no records for `idle_timeout` of wall-clock time is idle: all its
//!   open windows close at once (their end becomes its watermark), so windows close
//!   even when traffic stops. The watermark does not otherwise follow the wall clock:
//!   where an event is counted must depend on the input alone (replay, below);
//! - memory is bounded by `max_open_windows`, `max_late_corrections` and `max_keys`
//!   (distinct flag × variation × version counters in open windows), all per
//!   partition; hitting a cap closes the partition's oldest window (or correction)
//!   early (flagged, counted), never drops counts. The caps also bound a checkpoint
//!   (`pipeline::checkpoint::worst_case_bytes`);
//! - the same events with the same ticks yield the same outputs, in the same order;
//! - recovery: [`Engine::checkpoint`] describes a partition's state after some offset
//!   in a few numbers (watermark, and which accumulators are open since where);
//!   [`Engine::restore`] plus re-reading from [`Checkpoint::replay_from`] rebuilds
//!   exactly that state, emitting nothing for the re-read part; from the checkpoint's
//!   offset on, outputs are the same as the first run's, byte for byte;
//! - a checkpoint carries the window settings it was made under ([`Settings`]). Restored
//!   under other settings, the partition re-reads with the checkpoint's window grid,
//!   closes everything it held at the checkpoint's offset (flagged early) and goes on
//!   under the new settings in a new *settings epoch*, which is part of every summary id
//!   from then on: no summary of the old settings shares an id with one of the new.

mod gate;
mod index;
mod output;
mod summary;

pub use summary::MAX_COUNT;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

pub use gate::{FullEvents, GateConfig, GlobError, Override, Verdict, sampled_in};
pub use output::*;

use crate::event::{Contexts, Evaluation, Event, EventTime, Scope};
use gate::Gate;
use index::IndexCache;
use summary::WindowAcc;

/// What happens to an evaluation whose window was already emitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LatePolicy {
    /// Emit an additional, additive summary for that window, marked late.
    #[default]
    Correction,
    /// Send the event to the late-event topic.
    DeadLetter,
    /// Drop it, counting it in a metric.
    Drop,
}

/// Window settings, all durations in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    pub size_ms: i64,
    /// Windows start at `offset + k × size` (e.g. −2 h for days in UTC+2).
    pub offset_ms: i64,
    pub allowed_lateness_ms: i64,
    /// `None`: partitions never go idle.
    pub idle_timeout_ms: Option<i64>,
    pub late_policy: LatePolicy,
    pub max_open_windows: usize,
    /// Late corrections open at once per partition; one more closes the oldest.
    pub max_late_corrections: usize,
    pub max_keys: usize,
}

impl WindowConfig {
    /// What a checkpoint records of these settings: the window grid, and a fingerprint
    /// of everything that decides where a window closes.
    pub fn settings(&self) -> Settings {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for n in [
            self.size_ms,
            self.offset_ms,
            self.allowed_lateness_ms,
            self.late_policy as i64,
            self.max_open_windows as i64,
            self.max_late_corrections as i64,
            self.max_keys as i64,
        ] {
            h.update(&n.to_le_bytes());
        }
        Settings {
            size_ms: self.size_ms,
            offset_ms: self.offset_ms,
            fingerprint: h.digest(),
        }
    }
}

/// The window settings a checkpoint was made under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub size_ms: i64,
    pub offset_ms: i64,
    /// XXH3-64 of size, offset, lateness, late policy and the three caps.
    pub fingerprint: u64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            size_ms: 60_000,
            offset_ms: 0,
            allowed_lateness_ms: 10_000,
            idle_timeout_ms: Some(30_000),
            late_policy: LatePolicy::Correction,
            max_open_windows: 64,
            max_late_corrections: 256,
            max_keys: 1_000_000,
        }
    }
}

/// Index-event settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexConfig {
    pub enabled: bool,
    pub capacity: NonZeroUsize,
    pub flush_interval_ms: i64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            capacity: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
            flush_interval_ms: 5 * 60_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineConfig {
    pub window: WindowConfig,
    pub gate: GateConfig,
    pub index: IndexConfig,
}

/// Running totals, for metrics and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub evaluations_counted: u64,
    pub excluded_from_summaries: u64,
    /// Evaluations not counted because a summary counts them (`decode::counting`).
    pub counted_by_summary: u64,
    pub late_corrected: u64,
    pub late_dead_lettered: u64,
    pub late_dropped: u64,
    pub early_closes: u64,
    /// Late corrections closed early because `max_late_corrections` were open.
    pub corrections_closed_early: u64,
    /// Partitions restored from a checkpoint made under other window settings.
    pub settings_changes: u64,
    pub summaries: u64,
    pub full_events: u64,
    pub debug_events: u64,
    pub sampled_out: u64,
    pub index_events: u64,
    /// Events re-read to rebuild open windows after a restart or rebalance.
    pub replayed: u64,
}

/// An accumulator open at a checkpoint: which window, and from which input position
/// on it counts events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccMark {
    pub window_start: i64,
    /// A late correction rather than the window's regular summary.
    pub late: bool,
    pub part: u32,
    /// (offset, index within the record) of the first event it counted.
    pub first: (i64, u32),
}

/// A partition's engine state after every record before `next_offset`, small enough to
/// travel as one short record of the checkpoint topic (see `pipeline::checkpoint`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub next_offset: i64,
    pub max_time: Option<i64>,
    pub watermark: Option<i64>,
    /// The partition is idle at `next_offset`: its windows are (or are to be) closed.
    pub idle: bool,
    pub open: Vec<AccMark>,
    /// Next part numbers of windows closed early and not yet passed by the watermark.
    pub next_part: Vec<(i64, u32)>,
    /// The settings it was made under; `None` in checkpoints older than the field,
    /// which are taken to match.
    pub settings: Option<Settings>,
    /// The settings epoch: how many times this partition's settings changed.
    pub epoch: u32,
}

impl Checkpoint {
    /// A partition never processed before: start at `next_offset` with nothing open.
    pub fn fresh(next_offset: i64) -> Self {
        Self {
            next_offset,
            max_time: None,
            watermark: None,
            idle: false,
            open: Vec::new(),
            next_part: Vec::new(),
            settings: None,
            epoch: 0,
        }
    }

    /// Where re-reading must start: the first position any open accumulator counted,
    /// or `next_offset` when nothing is open. This is the offset to commit.
    pub fn replay_from(&self) -> i64 {
        self.open
            .iter()
            .map(|m| m.first.0)
            .min()
            .unwrap_or(self.next_offset)
            .min(self.next_offset)
    }
}

#[derive(Debug)]
struct PartitionState {
    max_time: i64,
    watermark: i64,
    last_activity: i64,
    /// Set once the partition is idle: the wall-clock time its watermark last moved.
    idle_mark: Option<i64>,
    open: BTreeMap<i64, WindowAcc>,
    corrections: BTreeMap<i64, WindowAcc>,
    /// Next part number of windows closed early whose end the watermark has not reached.
    next_part: BTreeMap<i64, u32>,
    index: IndexCache,
    /// Distinct keys held in this partition's open windows and corrections.
    keys: usize,
    index_on: bool,
    /// Set while re-reading input that was already processed (see [`Checkpoint`]).
    replay: Option<Checkpoint>,
    /// The window grid (size, offset) the re-read part was counted on.
    replay_grid: (i64, i64),
    /// The restored checkpoint was made under other settings: what it held closes when
    /// the re-read part ends.
    settings_changed: bool,
    /// Part of every summary id when above 0 (see the module documentation).
    epoch: u32,
}

/// Settings and totals shared by all partitions.
#[derive(Debug)]
struct Shared {
    window: WindowConfig,
    counts: Counts,
    keys: usize,
}

/// The window of grid (size, offset) that holds `t`.
fn window_on(grid: (i64, i64), t: EventTime) -> Window {
    let (size, offset) = grid;
    let start = (t.as_millis() - offset).div_euclid(size) * size + offset;
    Window {
        start: EventTime::from_millis(start),
        end: EventTime::from_millis(start + size),
    }
}

impl Shared {
    fn window_of(&self, t: EventTime) -> Window {
        window_on((self.window.size_ms, self.window.offset_ms), t)
    }

    fn close(
        &mut self,
        acc: WindowAcc,
        partition: &PartitionId,
        late: bool,
        reason: CloseReason,
        out: &mut Vec<Output>,
    ) {
        self.keys -= acc.keys;
        let mut closed = Vec::new();
        acc.close(partition, late, reason, &mut closed);
        self.counts.summaries += closed.len() as u64;
        out.extend(closed.into_iter().map(Output::Summary));
    }
}

/// Puts `output` at `at` in `out`: a push when nothing came after it (the common
/// case), which saves `Vec::insert`'s call to move the tail.
fn insert_at(out: &mut Vec<Output>, at: usize, output: Output) {
    if at == out.len() {
        out.push(output);
    } else {
        out.insert(at, output);
    }
}

/// The index event for the first sighting of `context` at `t`.
fn index_output(scope: Scope, context: Contexts, t: EventTime, pos: &SourcePos) -> Output {
    Output::Index {
        scope,
        context,
        creation_date: t,
        pos: pos.clone(),
    }
}

impl PartitionState {
    fn new(cfg: &IndexConfig) -> Self {
        Self {
            index_on: cfg.enabled,
            max_time: i64::MIN,
            watermark: i64::MIN,
            last_activity: i64::MIN,
            idle_mark: None,
            open: BTreeMap::new(),
            corrections: BTreeMap::new(),
            next_part: BTreeMap::new(),
            index: IndexCache::new(cfg.capacity, cfg.flush_interval_ms),
            keys: 0,
            replay: None,
            replay_grid: (1, 0),
            settings_changed: false,
            epoch: 0,
        }
    }

    /// The accumulator that counts an event of window `w`: an open window, a late
    /// correction, or `None` when the late policy takes the event elsewhere.
    fn acc_for(
        &mut self,
        shared: &mut Shared,
        pid: &PartitionId,
        w: Window,
        out: &mut Vec<Output>,
    ) -> Option<&mut WindowAcc> {
        let start = w.start.as_millis();
        if w.end.as_millis() <= self.watermark {
            return match shared.window.late_policy {
                LatePolicy::Correction => {
                    shared.counts.late_corrected += 1;
                    if !self.corrections.contains_key(&start) {
                        while self.corrections.len() >= shared.window.max_late_corrections.max(1) {
                            self.close_oldest_correction(shared, pid, out);
                        }
                    }
                    let epoch = self.epoch;
                    Some(
                        self.corrections
                            .entry(start)
                            .or_insert_with(|| WindowAcc::new(w, 0, epoch)),
                    )
                }
                LatePolicy::DeadLetter => {
                    shared.counts.late_dead_lettered += 1;
                    None
                }
                LatePolicy::Drop => {
                    shared.counts.late_dropped += 1;
                    None
                }
            };
        }
        if !self.open.contains_key(&start) {
            while self.open.len() >= shared.window.max_open_windows.max(1) {
                self.close_oldest_early(shared, pid, out);
            }
            let part = self.next_part.get(&start).copied().unwrap_or(0);
            self.open.insert(start, WindowAcc::new(w, part, self.epoch));
        }
        self.open.get_mut(&start)
    }

    fn close_oldest_early(
        &mut self,
        shared: &mut Shared,
        pid: &PartitionId,
        out: &mut Vec<Output>,
    ) {
        if let Some((start, acc)) = self.open.pop_first() {
            self.next_part.insert(start, acc.part + 1);
            shared.counts.early_closes += 1;
            self.keys -= acc.keys;
            shared.close(acc, pid, false, CloseReason::Early, out);
        }
    }

    /// Closes the correction of the oldest window: a later late event of that window
    /// starts another, told apart by where it starts (see `emit::record_id`).
    fn close_oldest_correction(
        &mut self,
        shared: &mut Shared,
        pid: &PartitionId,
        out: &mut Vec<Output>,
    ) {
        if let Some((_, acc)) = self.corrections.pop_first() {
            shared.counts.corrections_closed_early += 1;
            shared.counts.early_closes += 1;
            self.keys -= acc.keys;
            shared.close(acc, pid, true, CloseReason::Early, out);
        }
    }

    /// After counting: keeps the distinct-key cap. The cap is per partition so that
    /// where a window closes early depends only on the partition's own input, never on
    /// how partitions interleave: a replay must split windows exactly as the first run.
    fn enforce_key_cap(&mut self, shared: &mut Shared, pid: &PartitionId, out: &mut Vec<Output>) {
        while self.keys > shared.window.max_keys && !self.open.is_empty() {
            self.close_oldest_early(shared, pid, out);
        }
        if self.keys > shared.window.max_keys {
            for (_, acc) in std::mem::take(&mut self.corrections) {
                shared.counts.early_closes += 1;
                self.keys -= acc.keys;
                shared.close(acc, pid, true, CloseReason::Early, out);
            }
        }
    }

    fn observe(
        &mut self,
        shared: &mut Shared,
        pid: &PartitionId,
        t: EventTime,
        out: &mut Vec<Output>,
    ) {
        self.max_time = self.max_time.max(t.as_millis());
        let wm = self
            .max_time
            .saturating_sub(shared.window.allowed_lateness_ms);
        if wm > self.watermark {
            self.watermark = wm;
            self.close_ready(shared, pid, CloseReason::Watermark, out);
        }
    }

    /// Closes every open window the watermark has passed; late corrections close with
    /// them.
    fn close_ready(
        &mut self,
        shared: &mut Shared,
        pid: &PartitionId,
        reason: CloseReason,
        out: &mut Vec<Output>,
    ) {
        let mut closed_any = false;
        while let Some(entry) = self.open.first_entry() {
            if entry.get().window.end.as_millis() > self.watermark {
                break;
            }
            let acc = entry.remove();
            self.keys -= acc.keys;
            shared.close(acc, pid, false, reason, out);
            closed_any = true;
        }
        let wm = self.watermark;
        self.next_part
            .retain(|start, _| start + shared.window.size_ms > wm);
        if closed_any {
            self.close_corrections(shared, pid, out);
        }
    }

    fn close_corrections(&mut self, shared: &mut Shared, pid: &PartitionId, out: &mut Vec<Output>) {
        for (_, acc) in std::mem::take(&mut self.corrections) {
            self.keys -= acc.keys;
            shared.close(acc, pid, true, CloseReason::Watermark, out);
        }
    }

    fn close_all(
        &mut self,
        shared: &mut Shared,
        pid: &PartitionId,
        reason: CloseReason,
        out: &mut Vec<Output>,
    ) {
        let newest_end = self
            .open
            .last_key_value()
            .map(|(_, a)| a.window.end.as_millis());
        for (_, acc) in std::mem::take(&mut self.open) {
            self.keys -= acc.keys;
            shared.close(acc, pid, false, reason, out);
        }
        if let Some(end) = newest_end {
            self.watermark = self.watermark.max(end);
        }
        // A window closed early and still ahead of the watermark keeps its next part
        // number: reopening it as part 0 would repeat an id already emitted.
        let (wm, size) = (self.watermark, shared.window.size_ms);
        self.next_part
            .retain(|start, _| start.saturating_add(size) > wm);
        self.close_corrections(shared, pid, out);
    }

    /// Emits an index event before the event that first shows this context.
    fn index_if_new(
        &mut self,
        shared: &mut Shared,
        scope: &Scope,
        context: &Contexts,
        t: EventTime,
        pos: &SourcePos,
        out: &mut Vec<Output>,
    ) {
        if self.index_due(shared, context, t) {
            out.push(index_output(scope.clone(), context.clone(), t, pos));
        }
    }

    /// Whether `context`, seen at `t`, is due an index event (counted if so).
    fn index_due(&mut self, shared: &mut Shared, context: &Contexts, t: EventTime) -> bool {
        let due = self.index.first_sighting_of(context, t.as_millis());
        shared.counts.index_events += u64::from(due);
        due
    }

    /// Replays one already-processed event: counts it into the accumulator it went to
    /// the first time (the one open since at or before its position), feeds the index
    /// cache, and emits nothing.
    fn replay_push(&mut self, shared: &mut Shared, pos: &SourcePos, event: &Event) {
        let at = (pos.offset, pos.index);
        let index_on = self.index_on;
        match event {
            Event::Evaluation(ev) => {
                let t = ev.creation_date;
                if index_on && !ev.debug {
                    self.index.first_sighting_of(&ev.context, t.as_millis());
                }
                if ev.debug || ev.exclude_from_summaries || ev.counted_by_summary {
                    return;
                }
                if let Some(acc) = self.replay_acc(t, at) {
                    let new = acc.add_evaluation(ev, at);
                    shared.keys += new;
                    self.keys += new;
                }
            }
            Event::Summary(s) => {
                if let Some(acc) = self.replay_acc(s.end_date, at) {
                    let new = acc.add_summary(s, at);
                    shared.keys += new;
                    self.keys += new;
                }
            }
            Event::Custom(c) if index_on => {
                self.index
                    .first_sighting_of(&c.context, c.creation_date.as_millis());
            }
            Event::Identify(e) => {
                self.index
                    .first_sighting_of(&e.context, e.creation_date.as_millis());
            }
            Event::Index(e) => {
                self.index
                    .first_sighting_of(&e.context, e.creation_date.as_millis());
            }
            Event::Custom(_) | Event::PassThrough(_) => {}
        }
    }

    fn replay_acc(&mut self, t: EventTime, at: (i64, u32)) -> Option<&mut WindowAcc> {
        let start = window_on(self.replay_grid, t).start.as_millis();
        let since = |late: bool| {
            self.replay.as_ref().and_then(|cp| {
                cp.open
                    .iter()
                    .find(|m| m.window_start == start && m.late == late)
                    .map(|m| m.first)
            })
        };
        if since(false).is_some_and(|first| first <= at) {
            return self.open.get_mut(&start);
        }
        if since(true).is_some_and(|first| first <= at) {
            return self.corrections.get_mut(&start);
        }
        None
    }

    /// Takes over the checkpoint's watermark and idle state once the re-read part is
    /// done; a checkpoint taken as the partition went idle closes its windows now,
    /// exactly as the first run did.
    fn finish_replay(
        &mut self,
        shared: &mut Shared,
        pid: &PartitionId,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        let Some(cp) = self.replay.take() else {
            return;
        };
        self.max_time = cp.max_time.unwrap_or(i64::MIN);
        self.watermark = cp.watermark.unwrap_or(i64::MIN);
        self.next_part = cp.next_part.iter().copied().collect();
        self.last_activity = now_ms;
        if cp.idle {
            self.idle_mark = Some(now_ms);
            self.close_all(shared, pid, CloseReason::Idle, out);
        } else if self.settings_changed {
            // What the old settings held closes here, in the new epoch; the new
            // settings start from this offset with nothing open.
            self.close_all(shared, pid, CloseReason::Early, out);
        }
        self.settings_changed = false;
    }

    fn replay_start(&self) -> Option<i64> {
        self.open
            .values()
            .chain(self.corrections.values())
            .map(|a| a.first.0)
            .min()
    }
}

/// The window engine over all assigned partitions.
#[derive(Debug)]
pub struct Engine {
    shared: Shared,
    gate: Gate,
    index: IndexConfig,
    partitions: FxHashMap<PartitionId, PartitionState>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Self, GlobError> {
        Ok(Self {
            gate: Gate::new(&config.gate)?,
            index: config.index,
            shared: Shared {
                window: WindowConfig {
                    size_ms: config.window.size_ms.max(1),
                    ..config.window
                },
                counts: Counts::default(),
                keys: 0,
            },
            partitions: FxHashMap::default(),
        })
    }

    /// Replaces the full-fidelity rules (a reload); the next events follow them.
    pub fn set_gate(&mut self, config: &GateConfig) -> Result<(), GlobError> {
        self.gate = Gate::new(config)?;
        Ok(())
    }

    pub fn counts(&self) -> &Counts {
        &self.shared.counts
    }

    /// Distinct counters held in open windows and corrections.
    pub fn keys(&self) -> usize {
        self.shared.keys
    }

    pub fn open_windows(&self) -> usize {
        self.partitions.values().map(|p| p.open.len()).sum()
    }

    /// The watermark of a partition (`None` before its first event).
    pub fn watermark(&self, pid: &PartitionId) -> Option<EventTime> {
        self.partitions
            .get(pid)
            .filter(|p| p.watermark != i64::MIN)
            .map(|p| EventTime::from_millis(p.watermark))
    }

    /// The lowest input offset that still feeds an open window or correction of the
    /// partition: where a replay must start. `None` when nothing is open.
    pub fn replay_start(&self, pid: &PartitionId) -> Option<i64> {
        self.partitions
            .get(pid)
            .and_then(PartitionState::replay_start)
    }

    /// Processes one event read at `pos`, at wall-clock time `now_ms`.
    pub fn push(&mut self, pos: &SourcePos, event: Event, now_ms: i64, out: &mut Vec<Output>) {
        let Self {
            shared,
            gate,
            index,
            partitions,
        } = self;
        let pid = &pos.partition;
        let st = match partitions.get_mut(pid) {
            Some(st) => st,
            None => partitions
                .entry(pid.clone())
                .or_insert_with(|| PartitionState::new(index)),
        };
        if let Some(cp) = &st.replay {
            if pos.offset < cp.next_offset {
                shared.counts.replayed += 1;
                st.replay_push(shared, pos, &event);
                return;
            }
            st.finish_replay(shared, pid, now_ms, out);
        }
        st.last_activity = now_ms;
        st.idle_mark = None;
        shared.counts.events += 1;
        let index_on = index.enabled;
        match event {
            Event::Evaluation(mut ev) => {
                let t = ev.creation_date;
                // An index event goes before anything else this evaluation causes; it
                // is put in that place at the end, so that it can take the context
                // rather than a copy when nothing else needs the evaluation.
                let index_at = (index_on && !ev.debug && st.index_due(shared, &ev.context, t))
                    .then_some(out.len());
                let verdict = gate.judge(&ev, pos);
                if ev.debug || ev.exclude_from_summaries || ev.counted_by_summary {
                    if ev.exclude_from_summaries {
                        shared.counts.excluded_from_summaries += 1;
                    } else if ev.counted_by_summary {
                        shared.counts.counted_by_summary += 1;
                    }
                } else {
                    let w = shared.window_of(t);
                    match st.acc_for(shared, pid, w, out) {
                        Some(acc) => {
                            let new = acc.add_evaluation(&ev, (pos.offset, pos.index));
                            shared.keys += new;
                            st.keys += new;
                            shared.counts.evaluations_counted += 1;
                            st.enforce_key_cap(shared, pid, out);
                        }
                        None if shared.window.late_policy == LatePolicy::DeadLetter => {
                            out.push(Output::Late {
                                event: Box::new(Event::Evaluation(ev.clone())),
                                window: w,
                                pos: pos.clone(),
                            });
                        }
                        None => {}
                    }
                }
                if verdict.debug {
                    shared.counts.debug_events += 1;
                    let mut copy = ev.clone();
                    copy.debug = true;
                    out.push(Output::Feature {
                        event: copy,
                        debug: true,
                        pos: pos.clone(),
                    });
                }
                if verdict.full {
                    shared.counts.full_events += 1;
                    if let Some(at) = index_at {
                        let index = index_output(ev.scope.clone(), ev.context.clone(), t, pos);
                        insert_at(out, at, index);
                    }
                    ev.sampling_ratio = verdict.sampling_ratio;
                    out.push(Output::Feature {
                        event: ev,
                        debug: false,
                        pos: pos.clone(),
                    });
                } else {
                    if !ev.debug && verdict.sampled {
                        shared.counts.sampled_out += 1;
                    }
                    if let Some(at) = index_at {
                        let Evaluation { scope, context, .. } = *ev;
                        insert_at(out, at, index_output(scope, context, t, pos));
                    }
                }
                st.observe(shared, pid, t, out);
            }
            Event::Summary(s) => {
                let t = s.end_date;
                let w = shared.window_of(t);
                match st.acc_for(shared, pid, w, out) {
                    Some(acc) => {
                        let new = acc.add_summary(&s, (pos.offset, pos.index));
                        shared.keys += new;
                        st.keys += new;
                        st.enforce_key_cap(shared, pid, out);
                    }
                    None if shared.window.late_policy == LatePolicy::DeadLetter => {
                        out.push(Output::Late {
                            event: Box::new(Event::Summary(s)),
                            window: w,
                            pos: pos.clone(),
                        });
                    }
                    None => {}
                }
                st.observe(shared, pid, t, out);
            }
            Event::Custom(c) => {
                let t = c.creation_date;
                if index_on {
                    st.index_if_new(shared, &c.scope, &c.context, t, pos, out);
                }
                // A samplingRatio on the event was applied by its SDK: pass it through.
                out.push(Output::Custom {
                    event: c,
                    pos: pos.clone(),
                });
                st.observe(shared, pid, t, out);
            }
            Event::Identify(e) => {
                let t = e.creation_date;
                // Identify events fill the cache but never cause an index event.
                st.index.first_sighting_of(&e.context, t.as_millis());
                out.push(Output::Identify {
                    event: *e,
                    pos: pos.clone(),
                });
                st.observe(shared, pid, t, out);
            }
            Event::Index(e) => {
                let t = e.creation_date;
                st.index.first_sighting_of(&e.context, t.as_millis());
                out.push(Output::Index {
                    scope: e.scope,
                    context: e.context,
                    creation_date: t,
                    pos: pos.clone(),
                });
                st.observe(shared, pid, t, out);
            }
            Event::PassThrough(p) => {
                let t = p.creation_date;
                out.push(Output::PassThrough {
                    event: *p,
                    pos: pos.clone(),
                });
                if let Some(t) = t {
                    st.observe(shared, pid, t, out);
                }
            }
        }
    }

    /// Lets wall-clock time pass: idle partitions close their windows.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let Some(idle_after) = self.shared.window.idle_timeout_ms else {
            return;
        };
        let mut pids: Vec<PartitionId> = self.partitions.keys().cloned().collect();
        pids.sort();
        for pid in pids {
            let Some(st) = self.partitions.get_mut(&pid) else {
                continue;
            };
            if now_ms.saturating_sub(st.last_activity) < idle_after {
                continue;
            }
            if st.idle_mark.is_none() && st.replay.is_none() {
                st.idle_mark = Some(now_ms);
                st.close_all(&mut self.shared, &pid, CloseReason::Idle, out);
            }
        }
    }

    /// Makes one partition idle now, closing its open windows (what [`Engine::tick`]
    /// does to each partition in [`Engine::idle_due`]).
    pub fn go_idle(&mut self, pid: &PartitionId, now_ms: i64, out: &mut Vec<Output>) {
        if let Some(st) = self.partitions.get_mut(pid)
            && st.idle_mark.is_none()
            && st.replay.is_none()
        {
            st.idle_mark = Some(now_ms);
            st.close_all(&mut self.shared, pid, CloseReason::Idle, out);
        }
    }

    /// The partitions that [`Engine::tick`] at `now_ms` would find newly idle, sorted.
    /// A caller that must record the decision before acting on it (a checkpoint with
    /// `idle: true`) asks here first.
    pub fn idle_due(&self, now_ms: i64) -> Vec<PartitionId> {
        let Some(idle_after) = self.shared.window.idle_timeout_ms else {
            return Vec::new();
        };
        let mut due: Vec<PartitionId> = self
            .partitions
            .iter()
            .filter(|(_, st)| {
                st.idle_mark.is_none()
                    && st.replay.is_none()
                    && now_ms.saturating_sub(st.last_activity) >= idle_after
            })
            .map(|(pid, _)| pid.clone())
            .collect();
        due.sort();
        due
    }

    /// The state of a partition after every record before `next_offset` was pushed.
    /// `idle` records that the partition goes idle at this point: its open windows
    /// close (see [`Engine::idle_due`]). While the partition is still replaying, the
    /// checkpoint it was restored from is returned unchanged.
    pub fn checkpoint(&self, pid: &PartitionId, next_offset: i64, idle: bool) -> Checkpoint {
        let Some(st) = self.partitions.get(pid) else {
            return Checkpoint {
                settings: Some(self.shared.window.settings()),
                ..Checkpoint::fresh(next_offset)
            };
        };
        if let Some(cp) = &st.replay {
            return cp.clone();
        }
        let mark = |late: bool| {
            move |(start, acc): (&i64, &WindowAcc)| AccMark {
                window_start: *start,
                late,
                part: acc.part,
                first: acc.first,
            }
        };
        Checkpoint {
            next_offset,
            max_time: (st.max_time != i64::MIN).then_some(st.max_time),
            watermark: (st.watermark != i64::MIN).then_some(st.watermark),
            idle: idle || st.idle_mark.is_some(),
            open: st
                .open
                .iter()
                .map(mark(false))
                .chain(st.corrections.iter().map(mark(true)))
                .collect(),
            next_part: st.next_part.iter().map(|(s, p)| (*s, *p)).collect(),
            settings: Some(self.shared.window.settings()),
            epoch: st.epoch,
        }
    }

    /// Starts a partition from a checkpoint: records from [`Checkpoint::replay_from`] up
    /// to `next_offset` rebuild its open windows and emit nothing; the first record at
    /// or after `next_offset` (or [`Engine::finish_replay`]) resumes normal output.
    pub fn restore(
        &mut self,
        pid: &PartitionId,
        cp: Checkpoint,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        self.revoke(pid);
        let mut st = PartitionState::new(&self.index);
        let now = self.shared.window.settings();
        let then = cp.settings.unwrap_or(now);
        st.replay_grid = (then.size_ms.max(1), then.offset_ms);
        st.epoch = cp.epoch;
        if then != now {
            st.settings_changed = true;
            st.epoch = cp.epoch.saturating_add(1);
            self.shared.counts.settings_changes += 1;
            tracing::warn!(
                partition = %pid,
                from = ?then,
                to = ?now,
                offset = cp.next_offset,
                epoch = st.epoch,
                "the window settings changed since this partition's checkpoint: what it held closes at the checkpoint's offset, and the new settings start there in a new settings epoch"
            );
        }
        for m in &cp.open {
            let w = Window {
                start: EventTime::from_millis(m.window_start),
                end: EventTime::from_millis(m.window_start + st.replay_grid.0),
            };
            let acc = WindowAcc::new(w, m.part, st.epoch);
            if m.late {
                st.corrections.insert(m.window_start, acc);
            } else {
                st.open.insert(m.window_start, acc);
            }
        }
        let nothing_to_replay = cp.replay_from() >= cp.next_offset;
        st.replay = Some(cp);
        if nothing_to_replay {
            st.finish_replay(&mut self.shared, pid, now_ms, out);
        }
        self.partitions.insert(pid.clone(), st);
    }

    /// Ends a partition's replay now (its input ends before the checkpoint's
    /// `next_offset`, e.g. the consumer reached the end of the partition).
    pub fn finish_replay(&mut self, pid: &PartitionId, now_ms: i64, out: &mut Vec<Output>) {
        if let Some(st) = self.partitions.get_mut(pid) {
            st.finish_replay(&mut self.shared, pid, now_ms, out);
        }
    }

    /// True while a partition re-reads input it had already processed.
    pub fn is_replaying(&self, pid: &PartitionId) -> bool {
        self.partitions
            .get(pid)
            .is_some_and(|st| st.replay.is_some())
    }

    /// Closes everything a partition holds (end of input, shutdown).
    pub fn flush_partition(&mut self, pid: &PartitionId, out: &mut Vec<Output>) {
        if let Some(st) = self.partitions.get_mut(pid) {
            let now = st.last_activity;
            st.finish_replay(&mut self.shared, pid, now, out);
            st.close_all(&mut self.shared, pid, CloseReason::Flush, out);
        }
    }

    /// Closes everything, partition by partition in a fixed order.
    pub fn flush_all(&mut self, out: &mut Vec<Output>) {
        let mut pids: Vec<PartitionId> = self.partitions.keys().cloned().collect();
        pids.sort();
        for pid in pids {
            self.flush_partition(&pid, out);
        }
    }

    /// Forgets a partition without emitting (it was revoked: its new owner replays it).
    pub fn revoke(&mut self, pid: &PartitionId) {
        if let Some(st) = self.partitions.remove(pid) {
            let held: usize = st
                .open
                .values()
                .chain(st.corrections.values())
                .map(|a| a.keys)
                .sum();
            self.shared.keys -= held;
        }
    }
}

#[cfg(test)]
mod tests;
