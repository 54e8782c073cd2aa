//! The counting rule: which decoded events are evaluations to count, so that every
//! evaluation is counted once.
//!
//! LaunchDarkly's SDKs (and Relay, and Data Export) *summarize*: a summary event counts
//! every evaluation of its period, and a `feature` event is an extra, full-fidelity copy
//! of one evaluation of a tracked flag (`debug` likewise, and debug copies are never
//! counted anyway). go-feature-flag, FeatBit, flagtally's own generator and the native
//! schema send one event per evaluation and no summaries. So where evaluations come
//! from depends on the source, and an input topic says it with `count_from`:
//!
//! | `count_from` | summaries | evaluations | suits |
//! |---|---|---|---|
//! | `payload` (default) | counted | counted unless their record holds a summary | SDK and Relay `/bulk` payloads (one payload per record), per-evaluation streams, chained roll-ups |
//! | `summaries` | counted | never counted (full-fidelity outputs only) | one event per record from a summarizing source: LaunchDarkly Data Export, Relay forwarding |
//! | `events` | not counted | counted | one event per record where every evaluation is an event and summaries ride along (each evaluation then lands in its own window, not in its summary's) |
//!
//! An evaluation that is not counted still produces everything else: its full-fidelity
//! output (when tracked), its debug copy, its index event. The rule reads only the
//! record and the configuration, so a replay decides the same.

use serde::Deserialize;

use crate::event::Event;

/// Where an input topic's evaluations are counted from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CountFrom {
    /// Per record: a record that holds a summary is counted by its summaries, its
    /// evaluations being copies; a record without one counts its evaluations.
    #[default]
    Payload,
    /// Summaries only: evaluations are copies of what the topic's summaries count.
    Summaries,
    /// Evaluations only: the topic's summaries repeat what its events count.
    Events,
}

impl CountFrom {
    pub fn name(self) -> &'static str {
        match self {
            Self::Payload => "payload",
            Self::Summaries => "summaries",
            Self::Events => "events",
        }
    }
}

/// What the rule decided for one record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decided {
    /// Evaluations (not debug copies) marked as already counted by a summary.
    pub evaluations_not_counted: u32,
    /// Summaries removed from the record: they repeat what its events count.
    pub summaries_not_counted: u32,
}

/// Applies the rule to one record's events: marks the evaluations a summary already
/// counts ([`crate::event::Evaluation::counted_by_summary`]) and, under
/// [`CountFrom::Events`], removes the summaries. Linear in the events; a record with
/// no summary under the default touches nothing but the kinds.
pub fn apply(count_from: CountFrom, events: &mut Vec<Event>) -> Decided {
    let mut decided = Decided::default();
    match count_from {
        CountFrom::Payload => {
            if events.iter().any(|e| matches!(e, Event::Summary(_))) {
                decided.evaluations_not_counted = mark_all(events);
            }
        }
        CountFrom::Summaries => decided.evaluations_not_counted = mark_all(events),
        CountFrom::Events => {
            let before = events.len();
            events.retain(|e| !matches!(e, Event::Summary(_)));
            decided.summaries_not_counted = (before - events.len()) as u32;
        }
    }
    decided
}

fn mark_all(events: &mut [Event]) -> u32 {
    let mut marked = 0;
    for e in events {
        if let Event::Evaluation(ev) = e
            && !ev.debug
        {
            ev.counted_by_summary = true;
            marked += 1;
        }
    }
    marked
}

/// Where each input topic's evaluations are counted from: a topic's own setting
/// (`[input.topics."name"]`), else the default (`input.count_from`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountRules {
    pub default: CountFrom,
    pub topics: std::collections::BTreeMap<String, CountFrom>,
}

impl CountRules {
    /// Where `topic`'s evaluations are counted from.
    pub fn of(&self, topic: &str) -> CountFrom {
        self.topics.get(topic).copied().unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Contexts, Evaluation, EventTime, Summary};

    fn evaluation(debug: bool) -> Event {
        let mut e = Evaluation::new(
            "f",
            Contexts::single("user", "u"),
            EventTime::from_millis(1),
        );
        e.debug = debug;
        Event::evaluation(e)
    }

    fn summary() -> Event {
        Event::Summary(Box::new(Summary {
            scope: Default::default(),
            start_date: EventTime::from_millis(1),
            end_date: EventTime::from_millis(2),
            features: Vec::new(),
        }))
    }

    fn marks(events: &[Event]) -> Vec<bool> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Evaluation(ev) => Some(ev.counted_by_summary),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_payload_with_a_summary_counts_its_summary_only() {
        let mut events = vec![evaluation(false), evaluation(true), summary()];
        let d = apply(CountFrom::Payload, &mut events);
        assert_eq!(d.evaluations_not_counted, 1, "debug copies are not marked");
        assert_eq!(marks(&events), [true, false]);
        assert_eq!(events.len(), 3, "nothing is removed");
    }

    #[test]
    fn a_payload_without_a_summary_counts_its_evaluations() {
        let mut events = vec![evaluation(false), evaluation(false)];
        assert_eq!(apply(CountFrom::Payload, &mut events), Decided::default());
        assert_eq!(marks(&events), [false, false]);
    }

    #[test]
    fn summaries_mode_marks_every_evaluation() {
        let mut events = vec![evaluation(false)];
        let d = apply(CountFrom::Summaries, &mut events);
        assert_eq!(d.evaluations_not_counted, 1);
        assert_eq!(marks(&events), [true]);
    }

    #[test]
    fn events_mode_removes_summaries() {
        let mut events = vec![summary(), evaluation(false), summary()];
        let d = apply(CountFrom::Events, &mut events);
        assert_eq!(d.summaries_not_counted, 2);
        assert_eq!(marks(&events), [false]);
        assert_eq!(events.len(), 1);
    }
}
