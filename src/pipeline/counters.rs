//! The loop's counts, kept per worker and added to the shared metrics once per loop
//! turn: records and events per input topic and dialect, outputs per kind, what the
//! counting rule left out and what its guard saw. Handles are looked up once
//! ([`crate::metrics::Metrics`]'s named counters).

use prometheus_client::metrics::counter::Counter;

use super::guard;
use crate::decode::Dialect;
use crate::decode::counting::CountFrom;
use crate::emit::OutputKind;
use crate::metrics::Metrics;

/// One input topic's counting rule ([`crate::decode::counting`]), the guard that
/// watches it, and its counters.
#[derive(Debug)]
pub(super) struct TopicCounting {
    pub(super) topic: String,
    pub(super) count_from: CountFrom,
    pub(super) guard: guard::Guard,
    /// Evaluations and summaries not counted.
    pub(super) not_counted: [Pending; 2],
    pub(super) mismatches: [Counter; 3],
    /// Each kind of mismatch is logged once per worker.
    pub(super) warned: [bool; 3],
}

impl TopicCounting {
    pub(super) fn new(metrics: &Metrics, topic: &str, count_from: CountFrom) -> Self {
        Self {
            topic: topic.to_owned(),
            count_from,
            guard: guard::Guard::new(count_from),
            not_counted: ["evaluation", "summary"]
                .map(|k| Pending::new(metrics.not_counted(topic, k))),
            mismatches: guard::Mismatch::ALL.map(|m| metrics.count_mismatches(topic, m.code())),
            warned: [false; 3],
        }
    }

    /// Counts and, once per kind, logs what the guard found.
    pub(super) fn report(&mut self, found: &guard::Findings) {
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
pub(super) struct Pending {
    pub(super) counter: Counter,
    pub(super) count: u64,
}

impl Pending {
    pub(super) fn new(counter: Counter) -> Self {
        Self { counter, count: 0 }
    }

    /// Adds the pending count to the shared counter.
    pub(super) fn flush(&mut self) {
        if self.count > 0 {
            self.counter.inc_by(std::mem::take(&mut self.count));
        }
    }
}

/// One input topic's counters: records, and events per dialect.
#[derive(Debug)]
pub(super) struct TopicCounters {
    pub(super) topic: String,
    pub(super) records: Pending,
    pub(super) events: Vec<(Dialect, Pending)>,
}

/// Metric handles looked up once. Counts are kept here, per worker, and added to the
/// shared metrics once per loop turn ([`Counters::flush`]): the workers of a process
/// share each metric's atomic, and adding to it per record would move its cache line
/// between their cores for every record.
#[derive(Debug)]
pub(super) struct Counters {
    pub(super) topics: Vec<TopicCounters>,
    pub(super) outputs: Vec<Pending>,
    pub(super) replayed: Pending,
    /// Engine late counts already reported (correction, dead-letter, drop).
    pub(super) late_seen: [u64; 3],
    /// Corrections closed early and settings changes, as last published.
    pub(super) engine_seen: [u64; 2],
    /// Open windows, distinct keys and assigned partitions last added to the gauges.
    pub(super) gauges: [i64; 3],
}

impl Counters {
    pub(super) fn new(metrics: &Metrics) -> Self {
        Self {
            topics: Vec::new(),
            outputs: OutputKind::ALL
                .iter()
                .map(|k| Pending::new(metrics.events_out(k.name())))
                .collect(),
            replayed: Pending::new(metrics.replayed_records.clone()),
            late_seen: [0; 3],
            engine_seen: [0; 2],
            gauges: [0; 3],
        }
    }

    /// Counts one input record of `topic` and its events read as `dialect`.
    pub(super) fn record(
        &mut self,
        metrics: &Metrics,
        topic: &str,
        dialect: Option<Dialect>,
        events: u64,
    ) {
        let i = match self.topics.iter().position(|t| t.topic == topic) {
            Some(i) => i,
            None => {
                let records = metrics.records_in(topic);
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
                let counter = metrics.events_in(topic, dialect.name());
                dialects.push((dialect, Pending::new(counter)));
                dialects.len() - 1
            }
        };
        dialects[j].1.count += events;
    }

    /// Counts one output record of `kind`.
    pub(super) fn output(&mut self, kind: OutputKind) {
        self.outputs[kind as usize].count += 1;
    }

    /// Adds the counts kept since the last flush to the shared metrics.
    pub(super) fn flush(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reach_the_shared_metrics_once_per_flush_and_when_a_worker_stops() {
        let metrics = Metrics::new();
        let records = || metrics.records_in("in").get();
        let events = || metrics.events_in("in", "launchdarkly").get();
        let summaries = || metrics.events_out("summary").get();
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
