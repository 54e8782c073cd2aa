//! The Kafka client's settings (`[kafka]`): the brokers, the consumer group, and
//! librdkafka pass-through properties; and what a topic accepts.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use serde::Deserialize;

use super::producer::block_on;
use super::security::{Protocol, Secret};

/// The broker, the consumer group and librdkafka pass-through properties.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub group_id: String,
    /// Static group membership (KIP-345, `group.instance.id`): a stable name per
    /// instance. A restarted instance gets its partitions back at once, without a
    /// rebalance, when it returns within the session timeout; unique per instance.
    pub instance_id: Option<String>,
    pub input_topics: Vec<String>,
    /// Any librdkafka property, for consumer and producer alike (security.protocol,
    /// sasl.*, ssl.*, …).
    #[serde(default)]
    pub properties: Properties,
    #[serde(default)]
    pub consumer_properties: Properties,
    #[serde(default)]
    pub producer_properties: Properties,
    /// `plaintext` (default) | `ssl` | `sasl_plaintext` | `sasl_ssl`.
    pub security_protocol: Option<Protocol>,
    /// `PLAIN` | `SCRAM-SHA-256` | `SCRAM-SHA-512` | `OAUTHBEARER`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    /// A file holding the password (read at start and on reload).
    pub sasl_password_file: Option<PathBuf>,
    /// The CA certificates (PEM) the brokers' certificates must chain to; unset: the
    /// system's.
    pub tls_ca_file: Option<PathBuf>,
    /// This client's certificate (PEM), for brokers that require one (mutual TLS).
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    pub tls_key_password: Option<Secret>,
    pub tls_key_password_file: Option<PathBuf>,
    /// OAUTHBEARER with OIDC: the client secret sent to the token endpoint
    /// (`sasl.oauthbearer.client.secret`; the method, client id and endpoint are
    /// librdkafka properties).
    pub sasl_oauthbearer_client_secret: Option<Secret>,
    pub sasl_oauthbearer_client_secret_file: Option<PathBuf>,
}

/// librdkafka properties as given. Their debug form hides the value of each property
/// that may hold a secret ([`may_hold_secret`]).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Properties(pub BTreeMap<String, String>);

impl std::ops::Deref for Properties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if may_hold_secret(k) { "<redacted>" } else { v };
                (k, shown)
            }))
            .finish()
    }
}

/// Whether a librdkafka property's value may be a secret: passwords, client secrets,
/// JAAS and OAUTHBEARER configurations, and keys given inline.
pub fn may_hold_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "sasl.oauthbearer.config",
        "key.pem",
    ]
    .iter()
    .any(|s| name.contains(s))
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            group_id: "flagtally".to_owned(),
            instance_id: None,
            input_topics: Vec::new(),
            properties: Properties::default(),
            consumer_properties: Properties::default(),
            producer_properties: Properties::default(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            sasl_password_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_key_password: None,
            tls_key_password_file: None,
            sasl_oauthbearer_client_secret: None,
            sasl_oauthbearer_client_secret_file: None,
        }
    }
}

impl KafkaConfig {
    /// Applies the pass-through properties, shared ones then `role` ones, over
    /// flagtally's own settings (so users can override them).
    pub fn apply(&self, cc: &mut rdkafka::ClientConfig, role: &BTreeMap<String, String>) {
        for (k, v) in self.security_properties() {
            cc.set(k, v);
        }
        for (k, v) in self.properties.iter().chain(role) {
            cc.set(k, v);
        }
    }
}

/// Kafka's default `max.message.bytes` (1 MiB + 12), assumed for a topic the broker
/// would not describe.
pub const DEFAULT_TOPIC_LIMIT: usize = 1_048_588;

/// The `max.message.bytes` of each of `topics` (distinct), as the broker describes it;
/// Kafka's default for any it would not describe.
pub fn describe_limits(kafka: &KafkaConfig, topics: &[&str]) -> HashMap<String, usize> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let mut limits: HashMap<String, usize> = topics
        .iter()
        .map(|t| ((*t).to_owned(), DEFAULT_TOPIC_LIMIT))
        .collect();
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &kafka.brokers);
    kafka.apply(&mut cc, &Default::default());
    let Ok(admin) = cc.create::<AdminClient<rdkafka::client::DefaultClientContext>>() else {
        return limits;
    };
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    match block_on(admin.describe_configs(&specs, &options)) {
        Ok(results) => {
            for resource in results.into_iter().flatten() {
                let (rdkafka::admin::OwnedResourceSpecifier::Topic(topic), Some(limit)) = (
                    &resource.specifier,
                    resource
                        .get("max.message.bytes")
                        .and_then(|e| e.value.as_deref())
                        .and_then(|v| v.parse().ok()),
                ) else {
                    continue;
                };
                limits.insert(topic.clone(), limit);
            }
        }
        Err(e) => {
            tracing::warn!("describing the output topics ({e}); assuming Kafka's default limit")
        }
    }
    limits
}
