//! Watches one input topic for a `count_from` that does not suit its source
//! ([`crate::decode::counting`]), so a miscount is seen rather than guessed at.
//!
//! Three findings, each a [`Mismatch`]:
//! - [`Mismatch::CountedTwice`]: a flag counted from evaluations *and* from summaries on
//!   the same topic: a summarizing source read one event per record under `payload` or
//!   `events`-with-summaries (`count_from = "summaries"` is the cure);
//! - [`Mismatch::SummaryNotCounted`] (`events`): a summary names a flag none of the
//!   topic's evaluations had: its evaluations are counted nowhere;
//! - [`Mismatch::EvaluationNotSummarized`] (`summaries`): evaluations of a flag that no
//!   summary named within [`HORIZON_MS`] of wall clock: they are counted nowhere.
//!
//! It is a detector, not part of the count: flags are remembered by a 64-bit hash in
//! sets of at most [`MAX_FLAGS`] (past it, new flags are not remembered), so it costs
//! bounded memory. Under the default `payload` it hashes nothing until the topic shows
//! a summary: a stream of plain evaluations pays one branch per event.

use rustc_hash::{FxHashMap, FxHashSet};
use std::hash::BuildHasher;

use crate::decode::counting::CountFrom;
use crate::event::Event;

/// Most flags each set remembers.
pub const MAX_FLAGS: usize = 4096;
/// How long evaluations of a flag may wait for a summary under `summaries` (SDKs flush
/// every few seconds; Relay and Data Export batch for up to a minute or two).
pub const HORIZON_MS: i64 = 5 * 60_000;

/// A sign that the topic's `count_from` does not suit its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mismatch {
    CountedTwice,
    SummaryNotCounted,
    EvaluationNotSummarized,
}

impl Mismatch {
    pub const ALL: [Self; 3] = [
        Self::CountedTwice,
        Self::SummaryNotCounted,
        Self::EvaluationNotSummarized,
    ];

    /// The metric label.
    pub fn code(self) -> &'static str {
        match self {
            Self::CountedTwice => "counted_twice",
            Self::SummaryNotCounted => "summary_not_counted",
            Self::EvaluationNotSummarized => "evaluation_not_summarized",
        }
    }

    /// What the operator should read, for the one warning line.
    pub fn advice(self, topic: &str, flag: &str, count_from: CountFrom) -> String {
        let now = count_from.name();
        match self {
            Self::CountedTwice => format!(
                "input topic {topic:?}: flag {flag:?} is counted from its evaluations and from summaries too (input.count_from = {now:?}); a source that summarizes and writes one event per record (LaunchDarkly Data Export, Relay forwarding) needs input.topics.{topic}.count_from = \"summaries\""
            ),
            Self::SummaryNotCounted => format!(
                "input topic {topic:?}: a summary counts flag {flag:?}, which no evaluation on the topic had, and is not counted (input.count_from = \"events\"); unless every evaluation arrives as an event, set input.topics.{topic}.count_from = \"summaries\" or \"payload\""
            ),
            Self::EvaluationNotSummarized => format!(
                "input topic {topic:?}: flag {flag:?} has evaluations that no summary counted within {} minutes, and they are not counted (input.count_from = \"summaries\"); a source that does not summarize needs input.topics.{topic}.count_from = \"payload\" or \"events\"",
                HORIZON_MS / 60_000
            ),
        }
    }
}

/// Findings of one call: how many of each, and one flag of each to name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub counts: [u64; 3],
    pub example: [Option<String>; 3],
}

impl Findings {
    fn add(&mut self, m: Mismatch, flag: &str) {
        let i = m as usize;
        self.counts[i] += 1;
        if self.example[i].is_none() {
            self.example[i] = Some(flag.to_owned());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&n| n == 0)
    }
}

/// The detector of one input topic.
#[derive(Debug)]
pub struct Guard {
    count_from: CountFrom,
    /// Flags counted from evaluations (`payload`, `events`); under `payload`, only once
    /// a summary was seen.
    counted_evaluations: FxHashSet<u64>,
    /// Flags counted from summaries.
    counted_summaries: FxHashSet<u64>,
    /// `summaries`: flags with uncounted evaluations waiting for a summary, the wall
    /// clock when first seen, and the name for the warning.
    waiting: FxHashMap<u64, (i64, String)>,
}

impl Guard {
    pub fn new(count_from: CountFrom) -> Self {
        Self {
            count_from,
            counted_evaluations: FxHashSet::default(),
            counted_summaries: FxHashSet::default(),
            waiting: FxHashMap::default(),
        }
    }

    /// Looks at one record's events *before* the counting rule is applied (so removed
    /// summaries are seen too).
    pub fn observe(&mut self, events: &[Event], now_ms: i64, found: &mut Findings) {
        let has_summary = events.iter().any(|e| matches!(e, Event::Summary(_)));
        let (evaluations_counted, summaries_counted) = match self.count_from {
            CountFrom::Payload => (!has_summary, true),
            CountFrom::Summaries => (false, true),
            CountFrom::Events => (true, false),
        };
        for e in events {
            match e {
                Event::Evaluation(ev) if ev.debug || ev.exclude_from_summaries => {}
                Event::Evaluation(ev) if evaluations_counted => {
                    if self.count_from == CountFrom::Payload && self.counted_summaries.is_empty() {
                        continue;
                    }
                    let h = hash(&ev.flag_key);
                    if self.counted_summaries.contains(&h) {
                        found.add(Mismatch::CountedTwice, &ev.flag_key);
                    }
                    remember(&mut self.counted_evaluations, h);
                }
                Event::Evaluation(ev)
                    if self.count_from == CountFrom::Summaries && !has_summary =>
                {
                    let h = hash(&ev.flag_key);
                    if !self.counted_summaries.contains(&h) && self.waiting.len() < MAX_FLAGS {
                        self.waiting
                            .entry(h)
                            .or_insert_with(|| (now_ms, ev.flag_key.to_string()));
                    }
                }
                Event::Summary(s) => {
                    for f in &s.features {
                        let h = hash(&f.key);
                        if summaries_counted {
                            if self.counted_evaluations.contains(&h) {
                                found.add(Mismatch::CountedTwice, &f.key);
                            }
                            remember(&mut self.counted_summaries, h);
                            self.waiting.remove(&h);
                        } else if !self.counted_evaluations.contains(&h) {
                            found.add(Mismatch::SummaryNotCounted, &f.key);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Reports the flags that waited for a summary longer than [`HORIZON_MS`].
    pub fn tick(&mut self, now_ms: i64, found: &mut Findings) {
        self.waiting.retain(|_, (since, flag)| {
            let overdue = now_ms.saturating_sub(*since) > HORIZON_MS;
            if overdue {
                found.add(Mismatch::EvaluationNotSummarized, flag);
            }
            !overdue
        });
    }
}

fn remember(set: &mut FxHashSet<u64>, h: u64) {
    if set.len() < MAX_FLAGS {
        set.insert(h);
    }
}

fn hash(flag: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(flag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Contexts, Evaluation, EventTime, Summary, SummaryFlag};

    fn evaluation(flag: &str) -> Event {
        Event::evaluation(Evaluation::new(
            flag,
            Contexts::single("user", "u"),
            EventTime::from_millis(1),
        ))
    }

    fn summary(flags: &[&str]) -> Event {
        Event::Summary(Box::new(Summary {
            scope: Default::default(),
            start_date: EventTime::from_millis(1),
            end_date: EventTime::from_millis(2),
            features: flags
                .iter()
                .map(|f| SummaryFlag {
                    key: (*f).into(),
                    default: None,
                    counters: Vec::new(),
                    context_kinds: Vec::new(),
                })
                .collect(),
        }))
    }

    fn run(count_from: CountFrom, records: &[Vec<Event>]) -> Findings {
        let mut g = Guard::new(count_from);
        let mut found = Findings::default();
        for (i, r) in records.iter().enumerate() {
            g.observe(r, i as i64, &mut found);
        }
        g.tick(records.len() as i64 + HORIZON_MS + 1, &mut found);
        found
    }

    #[test]
    fn sdk_payloads_under_payload_find_nothing() {
        let bulk = vec![evaluation("a"), summary(&["a", "b"])];
        let found = run(CountFrom::Payload, &[bulk.clone(), bulk]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn one_event_per_record_under_payload_is_counted_twice() {
        let records = [
            vec![evaluation("a")],
            vec![summary(&["a"])],
            vec![evaluation("a")],
            vec![evaluation("c")],
        ];
        let found = run(CountFrom::Payload, &records);
        assert_eq!(found.counts, [1, 0, 0], "found once a summary was seen");
        assert_eq!(found.example[0].as_deref(), Some("a"));
        let advice = Mismatch::CountedTwice.advice("t", "a", CountFrom::Payload);
        assert!(advice.contains("input.topics.t.count_from = \"summaries\""));
    }

    #[test]
    fn one_event_per_record_under_summaries_finds_nothing() {
        let records = [
            vec![evaluation("a")],
            vec![summary(&["a"])],
            vec![evaluation("a")],
        ];
        // The second evaluation of "a" waits until the tick, but a summary named it.
        let found = run(CountFrom::Summaries, &records);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn evaluations_that_no_summary_names_are_found_under_summaries() {
        let found = run(CountFrom::Summaries, &[vec![evaluation("x")]]);
        assert_eq!(found.counts, [0, 0, 1]);
        let mut g = Guard::new(CountFrom::Summaries);
        let mut early = Findings::default();
        g.observe(&[evaluation("x")], 0, &mut early);
        g.tick(HORIZON_MS, &mut early);
        assert!(early.is_empty(), "not before the horizon");
    }

    #[test]
    fn summaries_of_flags_without_events_are_found_under_events() {
        let records = [vec![evaluation("a")], vec![summary(&["a", "b"])]];
        let found = run(CountFrom::Events, &records);
        assert_eq!(found.counts, [0, 1, 0]);
        assert_eq!(found.example[1].as_deref(), Some("b"));
    }

    #[test]
    fn memory_is_bounded() {
        let mut g = Guard::new(CountFrom::Events);
        let mut found = Findings::default();
        for i in 0..(MAX_FLAGS + 100) {
            g.observe(&[evaluation(&format!("f{i}"))], 0, &mut found);
        }
        assert_eq!(g.counted_evaluations.len(), MAX_FLAGS);
    }
}
