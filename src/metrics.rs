//! Prometheus metrics: one registry per process, served by the admin server
//! ([`crate::admin`]) as text at `/metrics`.
//!
//! Hot-path counters are looked up once and cached by their users (a labelled counter
//! is an `Arc` around an atomic), so counting an event is one atomic add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

// The label sets, each a type: a family's labels are named once, here, and the code
// that counts passes values, never label vectors. Field order is the exposition's.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByTopic {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByTopicDialect {
    topic: String,
    dialect: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByTopicKind {
    topic: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByTopicPolicy {
    topic: String,
    policy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByTopicPartition {
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByDialectReason {
    dialect: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByKind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByPolicy {
    policy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BySink {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByEndpoint {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByEndpointStatus {
    endpoint: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByStage {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByVersion {
    version: &'static str,
}

/// One sink's counters (`kafka`: the processor's own producer).
#[derive(Clone, Debug)]
pub struct SinkCounters {
    /// Records delivered.
    pub records: Counter,
    /// Failed writes (`kafka`: deliveries the broker refused).
    pub errors: Counter,
    /// Retried writes (`kafka`: librdkafka's request retries).
    pub retries: Counter,
    /// Records the destination refused for good (set aside as dead letters).
    pub rejected: Counter,
    /// Panics caught (each restarted the sink).
    pub panics: Counter,
}

/// Every metric flagtally exports, each family with its labels; the names (without
/// the registry's `flagtally_` prefix) are listed in docs/operations.md. Labelled
/// families are reached through the methods below, named for what is counted: a hot
/// path takes its handle once (a counter is an `Arc` around an atomic) and adds to it.
pub struct Metrics {
    registry: Registry,
    /// Input records read, per topic.
    records_in: Family<ByTopic, Counter>,
    /// Canonical events decoded, per topic and dialect.
    events_in: Family<ByTopicDialect, Counter>,
    /// Decode errors, per dialect and reason code.
    decode_errors: Family<ByDialectReason, Counter>,
    /// Decoded events the counting rule did not count, per topic and kind
    /// (`evaluation`: a summary counts it; `summary`: the topic's events count it).
    not_counted: Family<ByTopicKind, Counter>,
    /// Signs that an input topic's `count_from` does not suit its source, per topic and
    /// kind (`counted_twice`, `summary_not_counted`, `evaluation_not_summarized`).
    count_mismatches: Family<ByTopicKind, Counter>,
    /// Records written to the dead-letter topic.
    pub dead_letters: Counter,
    /// Distinct context kinds left out of summaries past `MAX_CONTEXT_KINDS` per flag
    /// and window.
    pub context_kinds_dropped: Counter,
    /// Record batches the Kafka client could not read, per topic and policy.
    unreadable_batches: Family<ByTopicPolicy, Counter>,
    /// Late corrections closed early because `window.max_late_corrections` were open.
    pub corrections_closed_early: Counter,
    /// Partitions restored from a checkpoint made under other window settings.
    pub window_settings_changes: Counter,
    /// Output events written, per kind.
    events_out: Family<ByKind, Counter>,
    /// Late events, per policy (`correction`, `dead-letter`, `drop`).
    late_events: Family<ByPolicy, Counter>,
    /// Events dated too far past their record's timestamp, per policy.
    future_events: Family<ByPolicy, Counter>,
    /// Input records re-read to rebuild state after a restart, rebalance or rewind.
    pub replayed_records: Counter,
    pub open_windows: Gauge,
    /// Distinct flag × variation × version counters in open windows.
    pub distinct_keys: Gauge,
    pub assigned_partitions: Gauge,
    /// Records behind the partition's high watermark (from librdkafka's statistics).
    consumer_lag: Family<ByTopicPartition, Gauge>,
    /// One commit cycle: flush, checkpoints, offset commit.
    pub commit_seconds: Histogram,
    /// From send to the broker's acknowledgement: every summary, and one other record
    /// in 16 (the pipeline's producer; the clock reads were 2–3 % of its CPU).
    pub produce_seconds: Histogram,
    /// From a window's close deadline (its end plus the allowed lateness, in event
    /// time) to the broker's acknowledgement of its summary.
    pub summary_latency_seconds: Histogram,
    pub commits: Counter,
    /// Commit cycles that failed, per stage: `checkpoint` (a checkpoint, or an output
    /// sent in the same cycle, not written or not acknowledged: the next cycle rewinds), `offsets` (the group offset commit:
    /// retried next cycle), `transaction` (exactly-once: aborted and rewound).
    commit_failures: Family<ByStage, Counter>,
    /// 1 while `/readyz` answers 200, else 0 (set when scraped).
    pub ready: Gauge,
    /// Rewinds to the last commit after a failed delivery or transaction.
    pub rewinds: Counter,
    /// Records delivered per sink.
    sink_records: Family<BySink, Counter>,
    /// Failed writes per sink (`kafka`: deliveries the broker refused).
    sink_errors: Family<BySink, Counter>,
    /// Retried writes per sink (`kafka`: librdkafka's request retries).
    sink_retries: Family<BySink, Counter>,
    /// Records a sink's destination refused for good (set aside as dead letters).
    sink_rejected: Family<BySink, Counter>,
    /// Panics caught in sinks (each restarted the sink).
    sink_panics: Family<BySink, Counter>,
    /// SIGHUP reloads, per result (`applied`, `restart-needed`, `rejected`, `unchanged`).
    reloads: Family<ByResult, Counter>,
    /// Collector requests, per endpoint and answered status.
    collector_requests: Family<ByEndpointStatus, Counter>,
    /// Events in accepted collector payloads, per endpoint.
    collector_events: Family<ByEndpoint, Counter>,
    /// Request body bytes (as sent, before inflation), per endpoint.
    collector_bytes: Family<ByEndpoint, Counter>,
    collector_produce_seconds: Histogram,
    collector_duplicates: Counter,
    collector_diagnostics_dropped: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 0.5 ms … ~65 s
    exponential_buckets(0.0005, 2.0, 18)
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 10 ms … ~1.5 h (a backfill's old windows land in the last buckets)
    exponential_buckets(0.01, 1.5, 30)
}

impl Metrics {
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("flagtally"),
            records_in: Family::default(),
            events_in: Family::default(),
            decode_errors: Family::default(),
            not_counted: Family::default(),
            count_mismatches: Family::default(),
            dead_letters: Counter::default(),
            context_kinds_dropped: Counter::default(),
            corrections_closed_early: Counter::default(),
            unreadable_batches: Family::default(),
            window_settings_changes: Counter::default(),
            events_out: Family::default(),
            late_events: Family::default(),
            future_events: Family::default(),
            replayed_records: Counter::default(),
            open_windows: Gauge::default(),
            distinct_keys: Gauge::default(),
            assigned_partitions: Gauge::default(),
            consumer_lag: Family::default(),
            commit_seconds: Histogram::new(seconds_buckets()),
            produce_seconds: Histogram::new(seconds_buckets()),
            summary_latency_seconds: Histogram::new(latency_buckets()),
            commits: Counter::default(),
            commit_failures: Family::default(),
            ready: Gauge::default(),
            rewinds: Counter::default(),
            sink_records: Family::default(),
            sink_errors: Family::default(),
            sink_retries: Family::default(),
            sink_rejected: Family::default(),
            sink_panics: Family::default(),
            reloads: Family::default(),
            collector_requests: Family::default(),
            collector_events: Family::default(),
            collector_bytes: Family::default(),
            collector_produce_seconds: Histogram::new(seconds_buckets()),
            collector_duplicates: Counter::default(),
            collector_diagnostics_dropped: Counter::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "records_in",
            "Input records read, per topic",
            metrics.records_in.clone(),
        );
        r.register(
            "events_in",
            "Canonical events decoded, per topic and dialect",
            metrics.events_in.clone(),
        );
        r.register(
            "decode_errors",
            "Decode errors, per dialect and reason",
            metrics.decode_errors.clone(),
        );
        r.register(
            "not_counted",
            "Decoded events the counting rule did not count, per topic and kind",
            metrics.not_counted.clone(),
        );
        r.register(
            "count_mismatches",
            "Signs that an input topic's count_from does not suit its source, per topic and kind",
            metrics.count_mismatches.clone(),
        );
        r.register(
            "dead_letters",
            "Records written to the dead-letter topic",
            metrics.dead_letters.clone(),
        );
        r.register(
            "events_out",
            "Output events written, per kind",
            metrics.events_out.clone(),
        );
        r.register(
            "late_events",
            "Events later than their window, per late policy",
            metrics.late_events.clone(),
        );
        r.register(
            "future_events",
            "Events dated more than input.max_future_skew past their record's timestamp, per policy",
            metrics.future_events.clone(),
        );
        r.register(
            "replayed_records",
            "Input records re-read to rebuild open windows",
            metrics.replayed_records.clone(),
        );
        r.register(
            "open_windows",
            "Summary windows open",
            metrics.open_windows.clone(),
        );
        r.register(
            "distinct_keys",
            "Flag x variation x version counters in open windows",
            metrics.distinct_keys.clone(),
        );
        r.register(
            "assigned_partitions",
            "Input partitions assigned to this instance",
            metrics.assigned_partitions.clone(),
        );
        r.register(
            "consumer_lag",
            "Records behind the high watermark, per input partition",
            metrics.consumer_lag.clone(),
        );
        r.register(
            "commit_duration_seconds",
            "Commit cycles: flush, checkpoints, offset commit",
            metrics.commit_seconds.clone(),
        );
        r.register(
            "produce_latency_seconds",
            "From send to the broker's acknowledgement (every summary and one other output record in 16)",
            metrics.produce_seconds.clone(),
        );
        r.register(
            "summary_latency_seconds",
            "From a window's end plus lateness (event time) to its summary acknowledged by the broker",
            metrics.summary_latency_seconds.clone(),
        );
        r.register(
            "commits",
            "Commit cycles that committed",
            metrics.commits.clone(),
        );
        r.register(
            "commit_failures",
            "Commit cycles that failed, per stage (checkpoint, offsets, transaction)",
            metrics.commit_failures.clone(),
        );
        r.register(
            "ready",
            "1 while /readyz answers 200 (partitions assigned, outputs connected, no input, sink or topic problem), else 0",
            metrics.ready.clone(),
        );
        r.register(
            "rewinds",
            "Rewinds to the last commit after a failure",
            metrics.rewinds.clone(),
        );
        r.register(
            "sink_records",
            "Records delivered, per sink",
            metrics.sink_records.clone(),
        );
        r.register(
            "sink_errors",
            "Failed writes, per sink",
            metrics.sink_errors.clone(),
        );
        r.register(
            "sink_retries",
            "Retried writes, per sink",
            metrics.sink_retries.clone(),
        );
        r.register(
            "sink_rejected",
            "Records a sink's destination refused for good (set aside as dead letters), per sink",
            metrics.sink_rejected.clone(),
        );
        r.register(
            "sink_panics",
            "Panics caught in a sink (each restarts the sink), per sink",
            metrics.sink_panics.clone(),
        );
        r.register(
            "context_kinds_dropped",
            "Distinct context kinds left out of a summary past the limit per flag and window (64)",
            metrics.context_kinds_dropped.clone(),
        );
        r.register(
            "unreadable_batches",
            "Record batches the Kafka client could not read (corrupt, or a format it lacks), per topic and policy (input.unreadable_batches)",
            metrics.unreadable_batches.clone(),
        );
        r.register(
            "late_corrections_closed_early",
            "Late corrections closed early because window.max_late_corrections were open in a partition",
            metrics.corrections_closed_early.clone(),
        );
        r.register(
            "window_settings_changes",
            "Partitions restored from a checkpoint made under other window settings (each starts a new settings epoch)",
            metrics.window_settings_changes.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads, per result",
            metrics.reloads.clone(),
        );
        r.register(
            "collector_requests",
            "Collector requests, per endpoint and answered HTTP status",
            metrics.collector_requests.clone(),
        );
        r.register(
            "collector_events",
            "Events in the payloads the collector wrote, per endpoint",
            metrics.collector_events.clone(),
        );
        r.register(
            "collector_bytes",
            "Collector request body bytes as sent (before gzip inflation), per endpoint",
            metrics.collector_bytes.clone(),
        );
        r.register(
            "collector_produce_seconds",
            "From a collector payload's send to Kafka's acknowledgement",
            metrics.collector_produce_seconds.clone(),
        );
        r.register(
            "collector_duplicate_payloads",
            "LaunchDarkly payloads retried with a payload id already written (acknowledged, not written again)",
            metrics.collector_duplicates.clone(),
        );
        r.register(
            "collector_diagnostics_dropped",
            "Diagnostic payloads dropped (no collector.diagnostic_topic)",
            metrics.collector_diagnostics_dropped.clone(),
        );
        // Known label sets start at zero, so dashboards and alerts see them at once.
        for policy in ["correction", "dead-letter", "drop"] {
            let _ = metrics.late_events.get_or_create(&ByPolicy { policy });
        }
        for policy in ["clamp", "dead-letter"] {
            let _ = metrics.future_events.get_or_create(&ByPolicy { policy });
        }
        let _ = metrics.sink_errors.get_or_create(&BySink {
            sink: "kafka".to_owned(),
        });
        let _ = metrics.sink_retries.get_or_create(&BySink {
            sink: "kafka".to_owned(),
        });
        for stage in ["checkpoint", "offsets", "transaction"] {
            let _ = metrics.commit_failures.get_or_create(&ByStage { stage });
        }
        for result in ["applied", "restart-needed", "rejected", "unchanged"] {
            let _ = metrics.reloads.get_or_create(&ByResult { result });
        }
        let info: Family<ByVersion, Gauge> = Family::default();
        info.get_or_create(&ByVersion {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        r.register("build_info", "flagtally's version", info);
        metrics
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            let _ = writeln!(text, "# encoding failed");
        }
        text
    }

    /// One collector request: its answer, and for an accepted payload its events.
    pub fn collector_request(&self, endpoint: &'static str, status: u16, events: u64, bytes: u64) {
        let status = match status {
            200 => "200",
            202 => "202",
            400 => "400",
            401 => "401",
            413 => "413",
            415 => "415",
            429 => "429",
            503 => "503",
            _ => "other",
        };
        self.collector_requests
            .get_or_create(&ByEndpointStatus { endpoint, status })
            .inc();
        self.collector_bytes
            .get_or_create(&ByEndpoint { endpoint })
            .inc_by(bytes);
        if events > 0 {
            self.collector_events
                .get_or_create(&ByEndpoint { endpoint })
                .inc_by(events);
        }
    }

    pub fn collector_produce_seconds(&self, seconds: f64) {
        self.collector_produce_seconds.observe(seconds);
    }

    pub fn collector_duplicate(&self) {
        self.collector_duplicates.inc();
    }

    pub fn collector_diagnostic_dropped(&self) {
        self.collector_diagnostics_dropped.inc();
    }

    /// Input records read from `topic`.
    pub fn records_in(&self, topic: &str) -> Counter {
        self.records_in
            .get_or_create(&ByTopic {
                topic: topic.to_owned(),
            })
            .clone()
    }

    /// Canonical events decoded from `topic` as `dialect`.
    pub fn events_in(&self, topic: &str, dialect: &'static str) -> Counter {
        self.events_in
            .get_or_create(&ByTopicDialect {
                topic: topic.to_owned(),
                dialect,
            })
            .clone()
    }

    /// A part of a record `dialect` could not decode, for `reason` (a reason code).
    pub fn decode_error(&self, dialect: &'static str, reason: &'static str) {
        self.decode_errors
            .get_or_create(&ByDialectReason { dialect, reason })
            .inc();
    }

    /// Decoded events of `topic` the counting rule did not count (`kind`:
    /// `evaluation` or `summary`).
    pub fn not_counted(&self, topic: &str, kind: &'static str) -> Counter {
        self.not_counted
            .get_or_create(&ByTopicKind {
                topic: topic.to_owned(),
                kind,
            })
            .clone()
    }

    /// Signs that `topic`'s `count_from` does not suit its source, of one kind.
    pub fn count_mismatches(&self, topic: &str, kind: &'static str) -> Counter {
        self.count_mismatches
            .get_or_create(&ByTopicKind {
                topic: topic.to_owned(),
                kind,
            })
            .clone()
    }

    /// A record batch of `topic` the Kafka client could not read, met under `policy`.
    pub fn unreadable_batch(&self, topic: &str, policy: &'static str) {
        self.unreadable_batches
            .get_or_create(&ByTopicPolicy {
                topic: topic.to_owned(),
                policy,
            })
            .inc();
    }

    /// Output events written of `kind`.
    pub fn events_out(&self, kind: &'static str) -> Counter {
        self.events_out.get_or_create(&ByKind { kind }).clone()
    }

    /// Late events under `policy` (`correction`, `dead-letter`, `drop`).
    pub fn late_events(&self, policy: &'static str) -> Counter {
        self.late_events.get_or_create(&ByPolicy { policy }).clone()
    }

    /// Events dated too far ahead, under `policy` (`clamp`, `dead-letter`).
    pub fn future_events(&self, policy: &'static str) -> Counter {
        self.future_events
            .get_or_create(&ByPolicy { policy })
            .clone()
    }

    /// The counters of sink `name`.
    pub fn sink(&self, name: &str) -> SinkCounters {
        let by = BySink {
            sink: name.to_owned(),
        };
        SinkCounters {
            records: self.sink_records.get_or_create(&by).clone(),
            errors: self.sink_errors.get_or_create(&by).clone(),
            retries: self.sink_retries.get_or_create(&by).clone(),
            rejected: self.sink_rejected.get_or_create(&by).clone(),
            panics: self.sink_panics.get_or_create(&by).clone(),
        }
    }

    /// A commit cycle that failed at `stage` (`checkpoint`, `offsets`, `transaction`).
    pub fn commit_failed(&self, stage: &'static str) {
        self.commit_failures.get_or_create(&ByStage { stage }).inc();
    }

    /// A configuration reload, with its result's label.
    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ByResult { result }).inc();
    }

    /// Takes librdkafka's consumer statistics: lag per assigned partition.
    pub fn consumer_statistics(&self, stats: &rdkafka::Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's "unassigned" bucket; lag is -1 until known.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                self.consumer_lag
                    .get_or_create(&ByTopicPartition {
                        topic: topic.clone(),
                        partition: partition.to_string(),
                    })
                    .set(p.consumer_lag);
            }
        }
    }

    /// Takes one producer's librdkafka statistics: request retries (`seen`: that
    /// producer's total at its previous report).
    pub fn producer_statistics(&self, stats: &rdkafka::Statistics, seen: &AtomicU64) {
        let total: u64 = stats.brokers.values().map(|b| b.txretries).sum();
        let before = seen.swap(total, Ordering::Relaxed);
        if total > before {
            self.sink("kafka").retries.inc_by(total - before);
        }
    }

    /// Forgets a revoked partition's lag (another instance reports it now).
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        self.consumer_lag.remove(&ByTopicPartition {
            topic: topic.to_owned(),
            partition: partition.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_family() {
        let m = Metrics::new();
        m.records_in("in").inc();
        m.events_out("summary").inc_by(3);
        m.produce_seconds.observe(0.002);
        let text = m.render();
        for name in [
            "flagtally_records_in_total{topic=\"in\"} 1",
            "flagtally_events_out_total{kind=\"summary\"} 3",
            "flagtally_produce_latency_seconds_count 1",
            "flagtally_open_windows 0",
            "flagtally_build_info{version=",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
