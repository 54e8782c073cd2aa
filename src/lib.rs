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
//! | [`generate`] | deterministic raw-event generator with exact tallies (tests, benchmarks, `gen`) |
//! | [`offline`] | `flagtally summarize`: the same stages over files, no broker |
//! | [`source`] | the consumer group over the input topics; rebalances queued for the pipeline |
//! | [`sink`] | the producer (idempotent or transactional) writing output topics and dead letters |
//! | [`pipeline`] | `flagtally run`: the loop, commit cycles, checkpoints, recovery by replay |
//! | [`features`] | what the linked Kafka client can do (TLS, SASL, codecs) against what the config asks |
//! | [`config`] | the configuration file: TOML/YAML, environment overrides, checks |
//! | [`reload`] | SIGHUP: re-read the file, apply what can change live |
//! | [`metrics`] | the Prometheus registry |
//! | [`admin`] | `/metrics`, `/healthz`, `/readyz`; health; systemd notify |
//! | [`quickstart`] | `flagtally quickstart`: mock broker, generator, pipeline, live table |
//! | [`cli`] | the command line |
//!
//! Nothing in `event`, `decode`, `window` or `emit` reads a clock or does I/O: time is
//! passed in, and outputs are returned, so the same input always yields the same bytes.

pub mod admin;
pub mod app;
pub mod avro;
pub mod cli;
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
pub mod reload;
pub mod sink;
pub mod source;
pub mod topics;
pub mod units;
pub mod window;
