//! Summary accumulation, exactly as LaunchDarkly's summarizer counts
//! (go-sdk-events `event_summarizer.go`):
//! - counters are keyed per flag by (variation, version) only; a counter keeps the
//!   first value it saw, a flag the first default (`null` for a prerequisite);
//! - no version ⇒ `unknown` counter; no variation ⇒ the fallback was served;
//! - `contextKinds` collects every individual kind; `startDate`/`endDate` are the
//!   min/max creation dates actually counted;
//! - summaries are additive, so an input summary merges counter by counter.

use compact_str::CompactString;
/// hashbrown's map for its `entry_ref`: a lookup by reference that clones the key only
/// to insert it.
type HashMap<K, V> = hashbrown::HashMap<K, V, rustc_hash::FxBuildHasher>;
use smallvec::SmallVec;

use super::output::{CloseReason, ClosedSummary, Counter, PartitionId, Window};
use crate::event::{Evaluation, FlagVersion, Json, Scope, Summary, VariationRef};

/// The largest counter value: 2^53 - 1, the largest integer that JavaScript, Go's
/// float64 JSON numbers and every other reader of the output hold exactly (and well
/// inside PostgreSQL's bigint). Summary inputs above it are refused at decode.
pub const MAX_COUNT: u64 = (1 << 53) - 1;

#[derive(Debug)]
struct CounterAcc {
    variation: Option<VariationRef>,
    version: Option<FlagVersion>,
    value: Json,
    count: u64,
}

#[derive(Debug)]
struct FlagAcc {
    default: Option<Json>,
    counters: SmallVec<[CounterAcc; 2]>,
    kinds: SmallVec<[CompactString; 2]>,
    /// Distinct kinds left out past [`crate::decode::MAX_CONTEXT_KINDS`].
    kinds_dropped: u32,
    start_date: i64,
    end_date: i64,
}

impl FlagAcc {
    fn new() -> Self {
        Self {
            default: None,
            counters: SmallVec::new(),
            kinds: SmallVec::new(),
            kinds_dropped: 0,
            start_date: i64::MAX,
            end_date: i64::MIN,
        }
    }

    /// Adds `count` to the (variation, version) counter; returns whether the counter is
    /// new (a new distinct key).
    fn count(
        &mut self,
        variation: &Option<VariationRef>,
        version: &Option<FlagVersion>,
        value: impl FnOnce() -> Json,
        count: u64,
    ) -> bool {
        if let Some(c) = self
            .counters
            .iter_mut()
            .find(|c| &c.variation == variation && &c.version == version)
        {
            // Never wraps: past the largest integer every JSON reader holds exactly
            // (2^53 - 1), a counter stays there.
            c.count = c.count.saturating_add(count).min(MAX_COUNT);
            return false;
        }
        self.counters.push(CounterAcc {
            variation: variation.clone(),
            version: version.clone(),
            value: value(),
            count: count.min(MAX_COUNT),
        });
        true
    }

    /// Adds a kind: at most [`crate::decode::MAX_CONTEXT_KINDS`] distinct ones (each
    /// insert then costs a bounded search and shift); further ones are counted.
    fn kind(&mut self, kind: &str) {
        if let Err(at) = self.kinds.binary_search_by(|k| k.as_str().cmp(kind)) {
            if self.kinds.len() >= crate::decode::MAX_CONTEXT_KINDS {
                self.kinds_dropped = self.kinds_dropped.saturating_add(1);
                return;
            }
            self.kinds.insert(at, kind.into());
        }
    }

    fn dates(&mut self, start: i64, end: i64) {
        self.start_date = self.start_date.min(start);
        self.end_date = self.end_date.max(end);
    }
}

/// The counters of one window (or one late correction of a window) of one partition.
#[derive(Debug)]
pub(crate) struct WindowAcc {
    pub window: Window,
    /// The flags of events with no project or environment (nearly all of them), kept
    /// apart from the scoped ones so that finding one costs one hash lookup, not two.
    unscoped: HashMap<CompactString, FlagAcc>,
    scoped: HashMap<Scope, HashMap<CompactString, FlagAcc>>,
    /// Distinct (flag, variation, version) keys held.
    pub keys: usize,
    /// Lowest input position (offset, index within the record) counted.
    pub first: (i64, u32),
    /// The part number this accumulator will close as (see [`ClosedSummary::part`]).
    pub part: u32,
    /// The partition's settings epoch (see [`ClosedSummary::epoch`]).
    pub epoch: u32,
}

impl WindowAcc {
    pub fn new(window: Window, part: u32, epoch: u32) -> Self {
        Self {
            window,
            unscoped: HashMap::default(),
            scoped: HashMap::default(),
            keys: 0,
            first: (i64::MAX, u32::MAX),
            part,
            epoch,
        }
    }

    fn flag(&mut self, scope: &Scope, key: &CompactString) -> &mut FlagAcc {
        // One hash and probe per level; the scope and key are cloned only when new.
        let flags = if scope.project.is_none() && scope.env.is_none() {
            &mut self.unscoped
        } else {
            self.scoped.entry_ref(scope).or_default()
        };
        flags.entry_ref(key).or_insert_with(FlagAcc::new)
    }

    /// Counts one evaluation. Returns how many new distinct keys it created (0 or 1).
    pub fn add_evaluation(&mut self, ev: &Evaluation, at: (i64, u32)) -> usize {
        self.first = self.first.min(at);
        let t = ev.creation_date.as_millis();
        let flag = self.flag(&ev.scope, &ev.flag_key);
        if flag.counters.is_empty() && flag.default.is_none() {
            // The first default seen for the flag; a prerequisite's is `null`.
            flag.default = if ev.prereq_of.is_some() {
                Some(Json::null())
            } else {
                ev.default.clone()
            };
        } else if flag.default.is_none() && ev.prereq_of.is_none() {
            flag.default = ev.default.clone();
        }
        let new = flag.count(&ev.variation, &ev.version, || ev.value.clone(), 1);
        for k in &ev.context.keys {
            flag.kind(&k.kind);
        }
        flag.dates(t, t);
        let new = usize::from(new);
        self.keys += new;
        new
    }

    /// Merges an input summary (re-aggregation). Returns the new distinct keys.
    pub fn add_summary(&mut self, s: &Summary, at: (i64, u32)) -> usize {
        self.first = self.first.min(at);
        let mut new = 0;
        for f in &s.features {
            let flag = self.flag(&s.scope, &f.key);
            if flag.default.is_none() {
                flag.default = f.default.clone();
            }
            for c in &f.counters {
                new +=
                    usize::from(flag.count(&c.variation, &c.version, || c.value.clone(), c.count));
            }
            for k in &f.context_kinds {
                flag.kind(k);
            }
            flag.dates(s.start_date.as_millis(), s.end_date.as_millis());
        }
        self.keys += new;
        new
    }

    /// Closes the accumulator into one summary per (scope, flag), sorted by scope then
    /// flag key, counters and kinds in their documented order.
    pub fn close(
        self,
        partition: &PartitionId,
        late: bool,
        reason: CloseReason,
        out: &mut Vec<ClosedSummary>,
    ) {
        let mut scopes: Vec<_> = self.scoped.into_iter().collect();
        if !self.unscoped.is_empty() {
            scopes.push((Scope::default(), self.unscoped));
        }
        scopes.sort_by(|a, b| a.0.cmp(&b.0));
        for (scope, flags) in scopes {
            let mut flags: Vec<_> = flags.into_iter().collect();
            flags.sort_by(|a, b| a.0.cmp(&b.0));
            for (flag_key, acc) in flags {
                let mut counters: Vec<Counter> = acc
                    .counters
                    .into_iter()
                    .map(|c| Counter {
                        variation: c.variation,
                        version: c.version,
                        value: c.value,
                        count: c.count,
                    })
                    .collect();
                counters
                    .sort_by(|a, b| (&a.variation, &a.version).cmp(&(&b.variation, &b.version)));
                out.push(ClosedSummary {
                    scope: scope.clone(),
                    flag_key,
                    window: self.window,
                    partition: partition.clone(),
                    start_date: crate::event::EventTime::from_millis(acc.start_date),
                    end_date: crate::event::EventTime::from_millis(acc.end_date),
                    default: acc.default.unwrap_or_else(Json::null),
                    counters,
                    context_kinds: acc.kinds.into_vec(),
                    kinds_dropped: acc.kinds_dropped,
                    late,
                    reason,
                    part: self.part,
                    first_offset: self.first.0,
                    first_index: self.first.1,
                    epoch: self.epoch,
                });
            }
        }
    }
}
