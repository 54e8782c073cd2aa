//! The Kafka client layer, below the pipeline and the sinks alike: the client's
//! settings ([`KafkaConfig`], `[kafka]`), the shared producer plumbing
//! ([`producer`]), what the linked librdkafka can do ([`features`]), and topic limits.

pub mod acl;
pub mod client;
pub mod connect;
pub mod features;
pub mod producer;
pub mod security;

pub use client::{DEFAULT_TOPIC_LIMIT, KafkaConfig, describe_limits};
