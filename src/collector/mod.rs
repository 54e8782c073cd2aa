//! The collector: an HTTP intake that takes the SDKs' event posts unchanged and writes
//! each payload as one raw record to the input topic, answering the SDK only after
//! Kafka acknowledged it (idempotent producer, `acks=all`).
//!
//! | endpoint | who posts it | key |
//! |---|---|---|
//! | `POST /bulk`, `POST /diagnostic` | LaunchDarkly server SDKs | `Authorization: <sdk key>` |
//! | `POST /events/bulk/{envId}`, `/events/diagnostic/{envId}` | LaunchDarkly client-side SDKs (Relay Proxy's paths) | the client-side id in the path |
//! | `POST /mobile/events/bulk`, `/mobile/events/diagnostic` (and `/mobile`, `/mobile/events`) | LaunchDarkly mobile SDKs | `Authorization: api_key <mobile key>` |
//! | `POST /v1/data/collector` | go-feature-flag's relay proxy data collector (its SDKs) | `Authorization: Bearer <api key>` |
//! | `POST /goff/webhook` | go-feature-flag's webhook exporter (`X-Hub-Signature-256` checked when `webhook_secret` is set) | `Authorization` (any of the forms) |
//! | `POST /api/public/insight/track` | FeatBit SDKs | `Authorization: <environment secret>` |
//!
//! Each key maps to an environment (`[[collector.keys]]`), which travels with the
//! record in the `flagtally-env` header and becomes the events' environment when
//! they name none. A LaunchDarkly payload retried with the same
//! `X-LaunchDarkly-Payload-ID` is acknowledged without being written twice (the ids of
//! the last 100 000 payloads are kept, in memory).
//!
//! Answers: 202 once written (200 on FeatBit's route, as FeatBit answers); 400 for a body that is not the endpoint's JSON; 401 for
//! a missing or unknown key (or a bad signature); 413 over `max_body_bytes` (gzip
//! bodies are inflated within the same limit); 415 for an encoding other than gzip;
//! 429 over a key's `rate_limit`; 503 with `Retry-After` when the producer's queue is
//! full or Kafka does not acknowledge within `produce_timeout`.

mod dedupe;
mod intake;
mod tls;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::admin::Admin;
use crate::kafka::KafkaConfig;
use crate::kafka::security::{Secret, read_secret};
use crate::units::de::{listen, positive_duration, size};

pub use intake::Endpoint;

/// `[collector]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where the intake listens (`0.0.0.0:8090`); `off` (the default): no collector.
    #[serde(deserialize_with = "listen")]
    pub listen: Option<SocketAddr>,
    /// The topic payloads are written to; unset: the first of `kafka.input_topics`.
    pub topic: Option<String>,
    /// Where diagnostic events go; unset: they are dropped (and counted).
    pub diagnostic_topic: Option<String>,
    /// Largest request body, after gzip inflation.
    #[serde(deserialize_with = "size")]
    pub max_body_bytes: usize,
    /// Requests per second per key, at most (unset: no limit).
    pub rate_limit: Option<NonZeroU32>,
    /// Longest wait for Kafka's acknowledgement before answering 503: under the SDKs'
    /// own request timeouts (LaunchDarkly's Node SDK: 5 s), so that they hear it.
    #[serde(deserialize_with = "positive_duration")]
    pub produce_timeout: Duration,
    /// How long a payload answered 503 at `produce_timeout` is still being written
    /// (librdkafka's `message.timeout.ms`): Kafka may have it already, so it is not
    /// abandoned, and a LaunchDarkly retry of it (same payload id) waits for it
    /// rather than writing it twice.
    #[serde(deserialize_with = "positive_duration")]
    pub delivery_timeout: Duration,
    /// TLS on the listener: the certificate chain (PEM) and its private key (PEM);
    /// both or neither.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// go-feature-flag's webhook exporter secret: `X-Hub-Signature-256` must match.
    pub webhook_secret: Option<Secret>,
    pub webhook_secret_file: Option<PathBuf>,
    /// The SDK keys, mobile keys, client-side ids, API keys and environment secrets the
    /// collector accepts, each with its environment.
    pub keys: Vec<KeyConfig>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            listen: None,
            topic: None,
            diagnostic_topic: None,
            max_body_bytes: 5 * 1024 * 1024,
            rate_limit: None,
            produce_timeout: Duration::from_secs(4),
            delivery_timeout: Duration::from_secs(300),
            tls_cert_file: None,
            tls_key_file: None,
            webhook_secret: None,
            webhook_secret_file: None,
            keys: Vec::new(),
        }
    }
}

/// One accepted key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    #[serde(default)]
    pub key: Option<Secret>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The environment its events belong to.
    pub environment: String,
}

impl CollectorConfig {
    /// Reads `webhook_secret_file` and each key's `key_file`.
    pub fn read_secret_files(&mut self, problems: &mut Vec<String>, warnings: &mut Vec<String>) {
        let mut one = |at: String, file: &Option<PathBuf>, value: &mut Option<Secret>| {
            let Some(file) = file else { return };
            if value.is_some() {
                problems.push(format!("{at}: set both it and its _file form; keep one"));
                return;
            }
            match read_secret(file, warnings) {
                Ok(secret) => *value = Some(secret),
                Err(e) => problems.push(format!("{at}_file: {e}")),
            }
        };
        one(
            "collector.webhook_secret".to_owned(),
            &self.webhook_secret_file,
            &mut self.webhook_secret,
        );
        for (i, k) in self.keys.iter_mut().enumerate() {
            one(format!("collector.keys[{i}].key"), &k.key_file, &mut k.key);
        }
    }

    /// What no single key can say wrong.
    pub fn check(&self, input_topics: &[String], problems: &mut Vec<String>) {
        if self.listen.is_none() {
            return;
        }
        if self.topic.is_none() && !input_topics.iter().any(|t| !t.starts_with('^')) {
            problems.push(
                "collector.topic: needed when kafka.input_topics names no plain topic".to_owned(),
            );
        }
        if self.keys.is_empty() {
            problems.push(
                "collector.keys: the collector accepts no key; add [[collector.keys]] entries"
                    .to_owned(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            match &k.key {
                None => problems.push(format!("collector.keys[{i}]: key or key_file is needed")),
                Some(s) if s.expose().is_empty() => {
                    problems.push(format!("collector.keys[{i}].key: must not be empty"));
                }
                Some(s) if !seen.insert(s.expose().to_owned()) => problems.push(format!(
                    "collector.keys[{i}].key: the same key is listed twice"
                )),
                Some(_) => {}
            }
            if k.environment.is_empty() || k.environment.len() > 256 {
                problems.push(format!("collector.keys[{i}].environment: 1 to 256 bytes"));
            }
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => {}
            (Some(_), Some(_)) => {
                if let Err(e) = tls::server_config(self) {
                    problems.push(e);
                }
            }
            _ => problems.push(
                "collector.tls_cert_file, collector.tls_key_file: give both or neither".to_owned(),
            ),
        }
        if self.delivery_timeout < self.produce_timeout {
            problems
                .push("collector.delivery_timeout: at least collector.produce_timeout".to_owned());
        }
        if self.max_body_bytes < 1024 {
            problems.push("collector.max_body_bytes: at least 1KiB".to_owned());
        }
    }

    /// The topic payloads go to.
    pub fn topic<'a>(&'a self, input_topics: &'a [String]) -> Option<&'a str> {
        self.topic.as_deref().or_else(|| {
            input_topics
                .iter()
                .find(|t| !t.starts_with('^'))
                .map(String::as_str)
        })
    }
}

/// A running collector.
#[derive(Debug)]
pub struct Collector {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    /// Binds the listener and serves on a runtime of its own (one worker per core).
    pub fn start(
        config: &CollectorConfig,
        kafka: &KafkaConfig,
        input_topics: &[String],
        admin: Arc<Admin>,
    ) -> anyhow::Result<Self> {
        let Some(addr) = config.listen else {
            anyhow::bail!("collector.listen is off");
        };
        let topic = config
            .topic(input_topics)
            .ok_or_else(|| anyhow::anyhow!("collector.topic: no topic to write to"))?
            .to_owned();
        let intake = Arc::new(intake::Intake::new(config, kafka, topic, admin)?);
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("collector.listen: cannot listen on {addr}: {e}"))?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("collector")
            .enable_io()
            .enable_time()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = intake::router(Arc::clone(&intake), config.max_body_bytes);
        let acceptor = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(_), Some(_)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                tls::server_config(config).map_err(anyhow::Error::msg)?,
            ))),
            _ => None,
        };
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let thread = std::thread::Builder::new()
            .name("collector".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let result = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => match acceptor {
                            None => {
                                axum::serve(listener, router)
                                    .with_graceful_shutdown(async move {
                                        let _ = rx.await;
                                    })
                                    .await
                            }
                            Some(acceptor) => {
                                tls::serve(listener, acceptor, router, rx).await;
                                Ok(())
                            }
                        },
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        tracing::error!("collector stopped: {e}");
                    }
                });
                intake.flush(Duration::from_secs(10));
            })?;
        tracing::info!(
            "collector: {scheme}://{bound}/ (input topic {})",
            config.topic(input_topics).unwrap_or("-")
        );
        Ok(Self {
            addr: bound,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops accepting, answers the requests in flight, flushes the producer.
    pub fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
