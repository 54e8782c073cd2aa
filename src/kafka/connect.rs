//! The first connection: before the daemon starts its pipeline and sinks, it asks the
//! brokers for their metadata with the configured settings. A refusal the
//! configuration explains (wrong credentials, a certificate the broker or this client
//! does not trust) is named in `/readyz` and the log, and the daemon waits, retrying
//! every [`RETRY`], until it connects or is stopped. An unreachable broker is an error
//! after [`REACH`], as before.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer as _, ProducerContext};

use super::KafkaConfig;
use super::security::diagnose;
use crate::admin::Health;

/// How long an unreachable broker is waited for.
pub const REACH: Duration = Duration::from_secs(10);
/// How often a refused connection is tried again.
pub const RETRY: Duration = Duration::from_secs(10);

/// Keeps the first connection error the configuration explains.
#[derive(Default)]
struct Refusals(Mutex<Option<String>>);

impl Refusals {
    fn note(&self, text: &str) {
        if let Some(d) = diagnose(text)
            && let Ok(mut seen) = self.0.lock()
        {
            seen.get_or_insert(d);
        }
    }
}

impl ClientContext for Refusals {
    fn error(&self, _: KafkaError, reason: &str) {
        self.note(reason);
    }

    /// A TLS handshake failure reaches only the log (its error callback says "all
    /// brokers down"): read, not printed — librdkafka retries every few hundred ms,
    /// and the refusal is logged once.
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, message: &str) {
        self.note(message);
    }
}

impl ProducerContext for Refusals {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Waits until the brokers answer with `kafka`'s settings (see the module docs).
/// Returns the reason it gave up: unreachable, or stopped while refused.
pub fn first_connection(
    kafka: &KafkaConfig,
    health: &Health,
    stop: &AtomicBool,
) -> Result<(), String> {
    loop {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &kafka.brokers);
        kafka.apply(&mut cc, &kafka.producer_properties);
        let client: BaseProducer<Refusals> = cc
            .create_with_context(Refusals::default())
            .map_err(|e| format!("creating a Kafka client: {e}"))?;
        let started = Instant::now();
        let refusal = loop {
            match client.client().fetch_metadata(None, Duration::from_secs(1)) {
                Ok(_) => {
                    health.set_kafka_problem(None);
                    return Ok(());
                }
                Err(e) => {
                    // Error callbacks are served by polling.
                    client.poll(Duration::ZERO);
                    if let Some(d) = client.context().0.lock().ok().and_then(|d| d.clone()) {
                        break d;
                    }
                    if started.elapsed() >= REACH {
                        return Err(format!("reaching the brokers {}: {e}", kafka.brokers));
                    }
                }
            }
            if stop.load(Ordering::Relaxed) {
                return Err(format!(
                    "stopped while reaching the brokers {}",
                    kafka.brokers
                ));
            }
        };
        if health.set_kafka_problem(Some(refusal.clone())) {
            tracing::error!("{refusal}; retrying every {}s", RETRY.as_secs());
        }
        drop(client);
        let until = Instant::now() + RETRY;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return Err(refusal);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
