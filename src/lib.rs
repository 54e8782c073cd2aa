//! flagtally: raw feature-flag evaluation events in, LaunchDarkly-shaped analytics out.
//!
//! # Layout: the stages, in the order data flows through them
//!
//! | module | role |
//! |---|---|
//! | [`event`] | the canonical [`event::Event`] every dialect decodes into |
//! | [`decode`] | record bytes → events, one file per dialect; bad input → [`decode::DecodeError`] |
//! | [`window`] | **pure** event-time engine: watermarks, summaries, feature-event gating, index dedupe |
//! | [`emit`] | engine outputs → record bytes (LaunchDarkly JSON, Data Export envelope, Avro), ids and headers |
//! | [`avro`] | Avro framing, the direct wire codec, the canonical event's codec, the output schemas |
//! | [`source`] | the consumer group over the input topics; rebalances queued for the pipeline |
//! | [`pipeline`] | `flagtally run`: the loop, commit cycles, checkpoints, recovery by replay, the processor's producer |
//! | [`deadletter`] | dead-letter headers, fitting, error classes, forwarding (pipeline and sinks) |
//! | [`kafka`] | the Kafka client layer: `[kafka]` settings, the polled producer, topic limits, `builtin.features` |
//! | [`sink`] | warehouse sinks: each its own consumer group over output topics, one destination each |
//! | [`config`] | the configuration file: TOML/YAML, environment overrides, checks, and the plan (each component's settings) |
//! | [`app`] | each command run: the daemon (signals, watchdog, drain deadline, reload), quickstart, gen, topics |
//! | [`reload`] | SIGHUP: re-read the file, apply what can change live |
//! | [`metrics`] | the Prometheus registry: every family, its labels, the named counts |
//! | [`admin`] | `/metrics`, `/healthz`, `/readyz`; health; systemd notify |
//! | [`topics`] | `flagtally topics check|create`: the topics the configuration names |
//! | [`generate`] | deterministic raw-event generator with exact tallies (tests, benchmarks, `gen`) |
//! | [`offline`] | `flagtally summarize`: the same stages over files, no broker |
//! | [`quickstart`] | `flagtally quickstart`: mock broker, generator, pipeline, live table |
//! | [`cli`], [`units`] | the command line; sizes and durations as people write them |
//!
//! Nothing in `event`, `decode`, `window`, `emit` or `avro` reads a clock or does I/O:
//! time is passed in, and outputs are returned, so the same input always yields the
//! same bytes. No module below [`config`] sees the whole configuration, and the module
//! graph has no cycles (`tests/layout.rs`); docs/architecture.md follows one record
//! through these stages.

pub mod admin;
pub mod app;
pub mod avro;
pub mod cli;
pub mod collector;
pub mod config;
pub mod deadletter;
pub mod decode;
pub mod emit;
pub mod event;
pub mod generate;
pub mod kafka;
pub mod metrics;
pub mod offline;
pub mod pipeline;
pub mod quickstart;
pub mod registry;
pub mod reload;
pub mod sink;
pub mod source;
pub mod topics;
pub mod units;
pub mod window;
