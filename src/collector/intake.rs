//! One request: the key, the body (inflated, bounded, the endpoint's JSON), the
//! payload id, then one record written and acknowledged.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use serde_json::value::RawValue;

use super::CollectorConfig;
use super::dedupe::{self, Payloads, Seen};
use crate::admin::Admin;
use crate::kafka::KafkaConfig;
use crate::kafka::security::Secret;

/// The header names of a collected record.
pub mod headers {
    /// The environment the key maps to (the name outputs carry it under too).
    pub const ENV: &str = crate::emit::header::ENV;
    /// The SDK, as its `User-Agent` said (at most 256 bytes).
    pub const SDK: &str = "flagtally-sdk";
    /// LaunchDarkly's `X-LaunchDarkly-Payload-ID`.
    pub const PAYLOAD_ID: &str = "flagtally-payload-id";
    /// LaunchDarkly's `X-LaunchDarkly-Event-Schema`.
    pub const LD_SCHEMA: &str = "flagtally-ld-event-schema";
    /// The endpoint it came through (`ld-bulk`, `featbit-track`, …).
    pub const ENDPOINT: &str = "flagtally-endpoint";
}

/// Where a request came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    LdBulk,
    LdDiagnostic,
    LdClientBulk,
    LdClientDiagnostic,
    LdMobileBulk,
    LdMobileDiagnostic,
    GoffCollector,
    GoffWebhook,
    FeatbitTrack,
}

impl Endpoint {
    pub const ALL: [Self; 9] = [
        Self::LdBulk,
        Self::LdDiagnostic,
        Self::LdClientBulk,
        Self::LdClientDiagnostic,
        Self::LdMobileBulk,
        Self::LdMobileDiagnostic,
        Self::GoffCollector,
        Self::GoffWebhook,
        Self::FeatbitTrack,
    ];

    /// The metrics' and the header's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::LdBulk => "ld-bulk",
            Self::LdDiagnostic => "ld-diagnostic",
            Self::LdClientBulk => "ld-client-bulk",
            Self::LdClientDiagnostic => "ld-client-diagnostic",
            Self::LdMobileBulk => "ld-mobile-bulk",
            Self::LdMobileDiagnostic => "ld-mobile-diagnostic",
            Self::GoffCollector => "goff-collector",
            Self::GoffWebhook => "goff-webhook",
            Self::FeatbitTrack => "featbit-track",
        }
    }

    /// What an accepted payload is answered: 202, as LaunchDarkly's Relay Proxy does;
    /// 200 on FeatBit's route, as FeatBit's server does (its Python SDK re-posts a batch
    /// answered anything but 200, which would count it twice).
    fn accepted(self) -> StatusCode {
        match self {
            Self::FeatbitTrack => StatusCode::OK,
            _ => StatusCode::ACCEPTED,
        }
    }

    fn diagnostic(self) -> bool {
        matches!(
            self,
            Self::LdDiagnostic | Self::LdClientDiagnostic | Self::LdMobileDiagnostic
        )
    }

    fn launchdarkly(self) -> bool {
        matches!(
            self,
            Self::LdBulk
                | Self::LdDiagnostic
                | Self::LdClientBulk
                | Self::LdClientDiagnostic
                | Self::LdMobileBulk
                | Self::LdMobileDiagnostic
        )
    }
}

/// The collector's state, shared by its requests.
pub struct Intake {
    producer: FutureProducer,
    topic: String,
    diagnostic_topic: Option<String>,
    max_body_bytes: usize,
    produce_timeout: Duration,
    webhook_secret: Option<Secret>,
    /// key → environment.
    keys: HashMap<String, String>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    payloads: Arc<Payloads>,
    admin: Arc<Admin>,
}

impl Intake {
    pub fn new(
        config: &CollectorConfig,
        kafka: &KafkaConfig,
        topic: String,
        admin: Arc<Admin>,
    ) -> anyhow::Result<Self> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            // The SDK hears 503 at `produce_timeout`; the record is written on (Kafka
            // may have it already) until `delivery_timeout`.
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().max(1000).to_string(),
            );
        kafka.apply(&mut cc, &kafka.producer_properties);
        let producer: FutureProducer = cc
            .create()
            .map_err(|e| anyhow::anyhow!("collector: creating its Kafka producer: {e}"))?;
        let keys = config
            .keys
            .iter()
            .filter_map(|k| Some((k.key.as_ref()?.expose().to_owned(), k.environment.clone())))
            .collect();
        Ok(Self {
            producer,
            topic,
            diagnostic_topic: config.diagnostic_topic.clone(),
            max_body_bytes: config.max_body_bytes,
            produce_timeout: config.produce_timeout,
            webhook_secret: config.webhook_secret.clone(),
            keys,
            limiter: config
                .rate_limit
                .map(|r| RateLimiter::keyed(Quota::per_second(r))),
            payloads: Arc::default(),
            admin,
        })
    }

    /// Delivers what is queued (at stop).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::error!("collector: flushing its producer: {e}");
        }
    }

    async fn handle(
        &self,
        endpoint: Endpoint,
        path_key: Option<String>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        let bytes = body.len();
        let (status, events, retry_after, message) =
            match self.take(endpoint, path_key, headers, body).await {
                Ok(events) => (endpoint.accepted(), events, None, String::new()),
                Err(r) => (r.status, 0, r.retry_after, r.message),
            };
        self.admin.metrics.collector_request(
            endpoint.name(),
            status.as_u16(),
            events,
            bytes as u64,
        );
        let mut response = (status, message).into_response();
        if let Some(after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after));
        }
        response
    }

    async fn take(
        &self,
        endpoint: Endpoint,
        path_key: Option<String>,
        headers: &HeaderMap,
        raw: Bytes,
    ) -> Result<u64, Refusal> {
        // The key, and its environment.
        let key = match path_key {
            Some(k) => k,
            None => bearer(headers)
                .ok_or_else(|| Refusal::new(StatusCode::UNAUTHORIZED, "no key in Authorization"))?,
        };
        let env = self
            .keys
            .get(&key)
            .ok_or_else(|| Refusal::new(StatusCode::UNAUTHORIZED, "unknown key"))?;
        if endpoint == Endpoint::GoffWebhook
            && let Some(secret) = &self.webhook_secret
        {
            let expected = crate::sink::http::signature(secret.expose(), &raw);
            let given = headers
                .get("x-hub-signature-256")
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            if !constant_time_eq(given, expected.as_bytes()) {
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "X-Hub-Signature-256 does not match the body",
                ));
            }
        }
        if let Some(limiter) = &self.limiter
            && limiter.check_key(&key).is_err()
        {
            return Err(
                Refusal::new(StatusCode::TOO_MANY_REQUESTS, "over this key's rate limit").retry(1),
            );
        }
        let body = self.inflate(headers, raw)?;
        let (events, context_key) = shape(endpoint, &body)?;
        // A retried LaunchDarkly payload.
        let payload_id = headers
            .get("x-launchdarkly-payload-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| {
                endpoint.launchdarkly() && !id.is_empty() && id.len() <= dedupe::MAX_ID_BYTES
            });
        if let Some(id) = payload_id
            && self.claim_payload(env, id).await?
        {
            return Ok(0);
        }
        let topic = if endpoint.diagnostic() {
            match &self.diagnostic_topic {
                Some(t) => t.as_str(),
                None => {
                    self.admin.metrics.collector_diagnostic_dropped();
                    return Ok(0);
                }
            }
        } else {
            self.topic.as_str()
        };
        let mut record_headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: headers::ENV,
                value: Some(env.as_bytes()),
            })
            .insert(Header {
                key: headers::ENDPOINT,
                value: Some(endpoint.name().as_bytes()),
            });
        // FeatBit's Node SDK names itself in X-User-Agent only.
        if let Some(agent) = headers
            .get(header::USER_AGENT)
            .or_else(|| headers.get("x-user-agent"))
        {
            let agent = agent.as_bytes();
            record_headers = record_headers.insert(Header {
                key: headers::SDK,
                value: Some(&agent[..agent.len().min(256)]),
            });
        }
        if let Some(id) = payload_id {
            record_headers = record_headers.insert(Header {
                key: headers::PAYLOAD_ID,
                value: Some(id.as_bytes()),
            });
        }
        if let Some(schema) = headers.get("x-launchdarkly-event-schema") {
            let schema = schema.as_bytes();
            record_headers = record_headers.insert(Header {
                key: headers::LD_SCHEMA,
                value: Some(&schema[..schema.len().min(16)]),
            });
        }
        let mut record = FutureRecord::to(topic)
            .payload(body.as_ref())
            .headers(record_headers);
        if let Some(k) = &context_key {
            record = record.key(k.as_bytes());
        }
        let started = Instant::now();
        let sent = match self.producer.send_result(record) {
            Ok(mut delivery) => {
                match tokio::time::timeout(self.produce_timeout, &mut delivery).await {
                    Ok(Ok(result)) => result.map(|_| ()).map_err(|(e, _)| e),
                    Ok(Err(_)) => Err(KafkaError::Canceled),
                    Err(_) => {
                        // Not acknowledged in time: the SDK hears 503 and may retry.
                        // Kafka may have the record already, so it is written on (up to
                        // `delivery_timeout`), and a retry of its payload id waits for
                        // it instead of writing it again.
                        if let Some(id) = payload_id {
                            let payloads = Arc::clone(&self.payloads);
                            let (env, id) = (env.to_owned(), id.to_owned());
                            tokio::spawn(async move {
                                match delivery.await {
                                    Ok(Ok(_)) => payloads.written(&env, &id),
                                    _ => payloads.failed(&env, &id),
                                }
                            });
                        }
                        tracing::warn!(
                            "collector: {topic} did not acknowledge within {:?}; answering 503, still writing",
                            self.produce_timeout
                        );
                        return Err(Refusal::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "Kafka did not acknowledge the payload in time",
                        )
                        .retry(5));
                    }
                }
            }
            Err((e, _)) => Err(e),
        };
        self.admin
            .metrics
            .collector_produce_seconds(started.elapsed().as_secs_f64());
        match sent {
            Ok(()) => {
                if let Some(id) = payload_id {
                    self.payloads.written(env, id);
                }
                Ok(events)
            }
            Err(e) => {
                if let Some(id) = payload_id {
                    self.payloads.failed(env, id);
                }
                tracing::warn!("collector: writing to {topic}: {e}");
                Err(match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) => {
                        Refusal::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "the payload is over the topic's message size",
                        )
                    }
                    _ => Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Kafka did not acknowledge the payload",
                    )
                    .retry(5),
                })
            }
        }
    }

    /// Claims a LaunchDarkly payload id; true when it is written already (acknowledged
    /// again, no second record). A retry of one still being written waits for that
    /// write, up to `produce_timeout`: written, it is acknowledged; failed, this
    /// attempt writes it; still going, 503.
    async fn claim_payload(&self, env: &str, id: &str) -> Result<bool, Refusal> {
        let deadline = Instant::now() + self.produce_timeout;
        loop {
            match self.payloads.claim(env, id) {
                Seen::New => return Ok(false),
                Seen::Written => {
                    self.admin.metrics.collector_duplicate();
                    return Ok(true);
                }
                Seen::InFlight if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Seen::InFlight => {
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "this payload is still being written",
                    )
                    .retry(5));
                }
            }
        }
    }

    /// The body, gzip-inflated when it says so, within `max_body_bytes`.
    fn inflate(&self, headers: &HeaderMap, raw: Bytes) -> Result<Bytes, Refusal> {
        match headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.as_bytes().to_ascii_lowercase())
            .as_deref()
        {
            None | Some(b"identity") => Ok(raw),
            Some(b"gzip") => {
                let mut out = Vec::with_capacity(raw.len() * 4);
                let limit = self.max_body_bytes as u64 + 1;
                flate2::read::GzDecoder::new(raw.as_ref())
                    .take(limit)
                    .read_to_end(&mut out)
                    .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("not gzip: {e}")))?;
                if out.len() > self.max_body_bytes {
                    return Err(Refusal::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("over {} bytes once inflated", self.max_body_bytes),
                    ));
                }
                Ok(Bytes::from(out))
            }
            Some(other) => Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding {:?}: only gzip",
                    String::from_utf8_lossy(other)
                ),
            )),
        }
    }
}

/// Why a request was refused, as the SDK hears it.
struct Refusal {
    status: StatusCode,
    message: String,
    retry_after: Option<u16>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry(self, seconds: u16) -> Self {
        Self {
            retry_after: Some(seconds),
            ..self
        }
    }
}

/// The key in `Authorization`: raw (LaunchDarkly server SDKs, FeatBit), `api_key …`
/// (LaunchDarkly mobile) or `Bearer …` (go-feature-flag).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let key = ["Bearer", "bearer", "api_key"]
        .iter()
        .find_map(|p| {
            let rest = value.strip_prefix(p)?;
            (rest.is_empty() || rest.starts_with(' ')).then_some(rest)
        })
        .unwrap_or(value)
        .trim();
    (!key.is_empty()).then(|| key.to_owned())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The payload's event count and the first event's context key (the record key), or
/// 400 when the body is not the endpoint's JSON: an array of events (LaunchDarkly,
/// FeatBit), an object (a diagnostic event), or `{"events": […]}` (go-feature-flag).
fn shape(endpoint: Endpoint, body: &[u8]) -> Result<(u64, Option<String>), Refusal> {
    let bad = |what: &str, e: serde_json::Error| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("{}: expected {what}: {e}", endpoint.name()),
        )
    };
    if endpoint.diagnostic() {
        let _: &RawValue = serde_json::from_slice(body).map_err(|e| bad("a JSON object", e))?;
        return Ok((1, None));
    }
    let events: Vec<&RawValue> = match endpoint {
        Endpoint::GoffCollector | Endpoint::GoffWebhook => {
            #[derive(serde::Deserialize)]
            struct Goff<'a> {
                #[serde(borrow)]
                events: Vec<&'a RawValue>,
            }
            serde_json::from_slice::<Goff<'_>>(body)
                .map_err(|e| bad("{\"events\": [...]}", e))?
                .events
        }
        _ => serde_json::from_slice(body).map_err(|e| bad("a JSON array of events", e))?,
    };
    let key = events
        .first()
        .and_then(|first| context_key(endpoint, first));
    Ok((events.len() as u64, key))
}

fn context_key(endpoint: Endpoint, event: &RawValue) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(event.get()).ok()?;
    let found = match endpoint {
        Endpoint::FeatbitTrack => v.pointer("/user/keyId"),
        Endpoint::GoffCollector | Endpoint::GoffWebhook => v.get("userKey"),
        _ => v
            .pointer("/context/key")
            .or_else(|| v.pointer("/user/key"))
            .or_else(|| {
                // A multi-kind context: the first kind's key.
                v.get("context")?
                    .as_object()?
                    .values()
                    .find_map(|c| c.get("key"))
            }),
    }?;
    let key = found.as_str()?;
    (key.len() <= 256).then(|| key.to_owned())
}

/// The collector's routes.
pub fn router(intake: Arc<Intake>, max_body_bytes: usize) -> Router {
    async fn fixed(
        endpoint: Endpoint,
        State(intake): State<Arc<Intake>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        intake.handle(endpoint, None, &headers, body).await
    }
    async fn client(
        endpoint: Endpoint,
        State(intake): State<Arc<Intake>>,
        Path(env_id): Path<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        intake.handle(endpoint, Some(env_id), &headers, body).await
    }
    macro_rules! at {
        ($endpoint:expr) => {
            post(|s: State<Arc<Intake>>, h: HeaderMap, b: Bytes| fixed($endpoint, s, h, b))
        };
    }
    macro_rules! at_env {
        ($endpoint:expr) => {
            post(
                |s: State<Arc<Intake>>, p: Path<String>, h: HeaderMap, b: Bytes| {
                    client($endpoint, s, p, h, b)
                },
            )
        };
    }
    Router::new()
        .route("/bulk", at!(Endpoint::LdBulk))
        .route("/diagnostic", at!(Endpoint::LdDiagnostic))
        .route("/events/bulk/{env}", at_env!(Endpoint::LdClientBulk))
        .route(
            "/events/diagnostic/{env}",
            at_env!(Endpoint::LdClientDiagnostic),
        )
        .route("/mobile", at!(Endpoint::LdMobileBulk))
        .route("/mobile/events", at!(Endpoint::LdMobileBulk))
        .route("/mobile/events/bulk", at!(Endpoint::LdMobileBulk))
        .route(
            "/mobile/events/diagnostic",
            at!(Endpoint::LdMobileDiagnostic),
        )
        .route("/v1/data/collector", at!(Endpoint::GoffCollector))
        .route("/goff/webhook", at!(Endpoint::GoffWebhook))
        .route("/api/public/insight/track", at!(Endpoint::FeatbitTrack))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(intake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_in_every_vendors_form() {
        let mut h = HeaderMap::new();
        for (value, key) in [
            ("sdk-123", "sdk-123"),
            ("api_key mob-9", "mob-9"),
            ("Bearer goff-key", "goff-key"),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&h).as_deref(), Some(key));
        }
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn shapes_count_events_and_find_the_first_context_key() {
        let ld = br#"[{"kind":"feature","context":{"kind":"user","key":"u1"}},{"kind":"summary"}]"#;
        assert_eq!(
            shape(Endpoint::LdBulk, ld).ok(),
            Some((2, Some("u1".to_owned())))
        );
        let multi = br#"[{"kind":"index","context":{"kind":"multi","org":{"key":"o1"}}}]"#;
        assert_eq!(
            shape(Endpoint::LdBulk, multi).ok().and_then(|s| s.1),
            Some("o1".to_owned())
        );
        let fb = br#"[{"user":{"keyId":"k"},"variations":[]}]"#;
        assert_eq!(
            shape(Endpoint::FeatbitTrack, fb).ok(),
            Some((1, Some("k".to_owned())))
        );
        let goff = br#"{"meta":{},"events":[{"kind":"feature","userKey":"g"},{}]}"#;
        assert_eq!(
            shape(Endpoint::GoffCollector, goff).ok(),
            Some((2, Some("g".to_owned())))
        );
        let refused = shape(Endpoint::LdBulk, b"{}")
            .err()
            .map(|r| (r.status, r.message));
        assert_eq!(refused.as_ref().map(|r| r.0), Some(StatusCode::BAD_REQUEST));
        assert!(refused.is_some_and(|r| r.1.contains("ld-bulk")));
        assert_eq!(
            shape(Endpoint::LdDiagnostic, br#"{"kind":"diagnostic"}"#).ok(),
            Some((1, None))
        );
    }
}
