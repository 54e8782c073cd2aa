//! The HTTP sinks: a go-feature-flag-compatible webhook and Segment's batch API.
//!
//! HTTP endpoints keep no position for us, so delivery is at least once with keys that
//! make repeats harmless: every request carries `Idempotency-Key` (derived from the ids
//! of the records it holds, so a retried request has the same key), and every Segment
//! message its record's id as `messageId` (Segment drops repeated message ids). The
//! worker commits the group offsets synchronously after each acknowledged batch.
//!
//! Requests per second are capped per sink (`rate_limit`, `governor`): evenly spaced,
//! no bursts.

use crate::kafka::security::Secret;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

use super::destination::{Destination, SinkRecord, redact_url};
use super::record::{View, context_of};

/// What the endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpFormat {
    /// go-feature-flag's webhook: `{"meta":{…},"events":[…]}`, optionally signed with
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
    Webhook,
    /// Segment's batch API: `{"batch":[track|identify…]}` with the write key as basic auth.
    Segment,
}

/// The keys of a `type = "webhook"` sink.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The HMAC-SHA256 secret for `X-Hub-Signature-256`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// The `meta` object of each request.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Events per request, at most.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Requests per second, at most (evenly spaced).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// The whole request's timeout (connecting: at most 5 s of it).
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::units::de::positive_duration"
    )]
    pub timeout: Duration,
}

/// The keys of a `type = "segment"` sink.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    /// The endpoint; default `https://api.segment.io/v1/batch`.
    #[serde(default)]
    pub url: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The source's write key.
    #[serde(default)]
    pub write_key: Option<Secret>,
    /// Events per request, at most.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Requests per second, at most (evenly spaced).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// The whole request's timeout (connecting: at most 5 s of it).
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::units::de::positive_duration"
    )]
    pub timeout: Duration,
}

fn default_max_events() -> usize {
    500
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Segment's batch endpoint.
const SEGMENT_URL: &str = "https://api.segment.io/v1/batch";

/// The request keys both HTTP sinks have.
fn check_requests(
    max_events: usize,
    rate_limit: Option<u32>,
    at: &str,
    problems: &mut Vec<String>,
) {
    if rate_limit == Some(0) {
        problems.push(format!(
            "{at}.rate_limit: must be more than zero (or left out)"
        ));
    }
    if max_events == 0 {
        problems.push(format!("{at}.max_events: must be more than zero"));
    }
}

impl WebhookConfig {
    pub fn settings(&self) -> HttpSettings {
        HttpSettings {
            format: HttpFormat::Webhook,
            url: self.url.clone().unwrap_or_default(),
            headers: self.headers.clone(),
            secret: self.secret.clone(),
            meta: self.meta.clone(),
            write_key: None,
            max_events: self.max_events,
            rate_limit: self.rate_limit.and_then(NonZeroU32::new),
            timeout: self.timeout,
        }
    }

    pub fn check(&self, at: &str, problems: &mut Vec<String>) {
        if self.url.as_deref().is_none_or(str::is_empty) {
            problems.push(format!("{at}.url: a webhook sink needs the endpoint URL"));
        }
        check_requests(self.max_events, self.rate_limit, at, problems);
    }
}

impl SegmentConfig {
    pub fn settings(&self) -> HttpSettings {
        HttpSettings {
            format: HttpFormat::Segment,
            url: self.url.clone().unwrap_or_else(|| SEGMENT_URL.to_owned()),
            headers: self.headers.clone(),
            secret: None,
            meta: BTreeMap::new(),
            write_key: self.write_key.clone(),
            max_events: self.max_events,
            rate_limit: self.rate_limit.and_then(NonZeroU32::new),
            timeout: self.timeout,
        }
    }

    pub fn check(&self, at: &str, problems: &mut Vec<String>) {
        if self
            .write_key
            .as_ref()
            .is_none_or(|k| k.expose().is_empty())
        {
            problems.push(format!(
                "{at}.write_key: a segment sink needs the source's write key"
            ));
        }
        check_requests(self.max_events, self.rate_limit, at, problems);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    pub format: HttpFormat,
    pub url: String,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Webhook: the HMAC secret.
    pub secret: Option<Secret>,
    /// Webhook: the `meta` object.
    pub meta: BTreeMap<String, String>,
    /// Segment: the write key.
    pub write_key: Option<Secret>,
    /// Events per request, at most.
    pub max_events: usize,
    /// Requests per second, at most (`None`: no cap).
    pub rate_limit: Option<NonZeroU32>,
    pub timeout: Duration,
}

/// The longest wait for a TCP (and TLS) connection, within the request's `timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Http {
    settings: HttpSettings,
    agent: ureq::Agent,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("url", &redact_url(&self.settings.url))
            .field("format", &self.settings.format)
            .finish_non_exhaustive()
    }
}

impl Http {
    pub fn new(settings: HttpSettings) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .timeout_connect(Some(settings.timeout.min(CONNECT_TIMEOUT)))
            // A redirect is never followed: ureq would turn the POST into a GET
            // without a body (301/302/303), which a 2xx would then "acknowledge", and
            // send the credentials, the signature and the idempotency key to whatever
            // host `Location` names. The 3xx comes back to `post` as an answer.
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into();
        // Evenly spaced: one request per 1/rate second (2 % slower, so a receiver's
        // clock never sees more than `rate` in a second), no bursts.
        let limiter = settings.rate_limit.and_then(|r| {
            Quota::with_period(Duration::from_secs_f64(1.02 / f64::from(r.get())))
                .map(RateLimiter::direct)
        });
        Self {
            settings,
            agent,
            limiter,
        }
    }

    fn wait_for_rate_limit(&self) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        while let Err(not_until) = limiter.check() {
            use governor::clock::Clock as _;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            std::thread::sleep(wait.max(Duration::from_millis(1)));
        }
    }

    /// The request body for `records` (those the format carries).
    pub fn body(&self, records: &[SinkRecord]) -> anyhow::Result<Option<Vec<u8>>> {
        let mut events = Vec::with_capacity(records.len());
        for r in records {
            let event = View::of(r)?.event;
            match self.settings.format {
                HttpFormat::Webhook => events.push(event),
                HttpFormat::Segment => {
                    if let Some(message) = segment_message(&r.id, &event) {
                        events.push(message);
                    }
                }
            }
        }
        if events.is_empty() {
            return Ok(None);
        }
        let body = match self.settings.format {
            HttpFormat::Webhook => json!({"meta": self.settings.meta, "events": events}),
            HttpFormat::Segment => json!({"batch": events}),
        };
        Ok(Some(serde_json::to_vec(&body)?))
    }

    fn post(&self, body: &[u8], key: &str) -> anyhow::Result<()> {
        self.wait_for_rate_limit();
        let mut req = self
            .agent
            .post(&self.settings.url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key);
        for (k, v) in &self.settings.headers {
            req = req.header(k, v);
        }
        if let Some(secret) = &self.settings.secret {
            req = req.header("X-Hub-Signature-256", signature(secret.expose(), body));
        }
        if let Some(write_key) = &self.settings.write_key {
            use base64::Engine as _;
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:", write_key.expose()));
            req = req.header("Authorization", format!("Basic {auth}"));
        }
        let resp = req
            .send(body)
            .with_context(|| format!("POST {}", redact_url(&self.settings.url)))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(()),
            // A configuration error (the URL is not the endpoint): reported in
            // `/readyz` and retried until an operator fixes the URL; nothing is set
            // aside and nothing counts as delivered.
            300..=399 => {
                let location = resp
                    .headers()
                    .get("location")
                    .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
                let location = crate::deadletter::fit::cap(
                    location.as_deref().unwrap_or("(no Location)"),
                    512,
                );
                anyhow::bail!(
                    "POST {}: HTTP {status} redirect to {}: flagtally does not follow redirects; set the sink's url to the endpoint itself",
                    redact_url(&self.settings.url),
                    redact_url(&location)
                )
            }
            // The request itself is refused: a retry would be refused again. Not so
            // for 401, 403 and 404: wrong credentials or URL are the destination's
            // configuration, fixed by an operator (reported, retried), not a reason to
            // set every record aside; nor 408 and 429 (try later).
            400..=499 if !matches!(status, 401 | 403 | 404 | 408 | 429) => {
                Err(super::destination::Rejected(format!(
                    "POST {}: HTTP {status}",
                    redact_url(&self.settings.url)
                ))
                .into())
            }
            _ => anyhow::bail!("POST {}: HTTP {status}", redact_url(&self.settings.url)),
        }
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, as GitHub and go-feature-flag sign.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn iso_time(ms: Option<i64>) -> String {
    let ms = ms.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
    });
    humantime::format_rfc3339_millis(super::paths::bounded_time(ms)).to_string()
}

/// One Segment message per event: feature/debug → `track "Feature Flag Evaluated"`,
/// custom → `track <key>`, index/identify → `identify`. Summaries have no Segment form
/// (None).
pub fn segment_message(id: &str, event: &Value) -> Option<Value> {
    let kind = event.get("kind")?.as_str()?;
    let user = context_of(event).map(|c| c.key).unwrap_or_default();
    let timestamp = iso_time(event.get("creationDate").and_then(Value::as_i64));
    let field = |k: &str| event.get(k).cloned().unwrap_or(Value::Null);
    match kind {
        "feature" | "debug" => Some(json!({
            "type": "track",
            "event": "Feature Flag Evaluated",
            "userId": user,
            "messageId": id,
            "timestamp": timestamp,
            "properties": {
                "flag_key": field("key"),
                "variation": event.get("variation").or_else(|| event.get("variationName")).cloned().unwrap_or(Value::Null),
                "value": field("value"),
                "default": field("default"),
                "version": field("version"),
                "reason": field("reason"),
                "debug": kind == "debug",
            },
        })),
        "custom" => {
            let mut properties = match event.get("data") {
                Some(Value::Object(m)) => Value::Object(m.clone()),
                Some(v) if !v.is_null() => json!({"data": v}),
                _ => json!({}),
            };
            if let (Some(m), Some(props)) = (event.get("metricValue"), properties.as_object_mut()) {
                props.insert("metric_value".to_owned(), m.clone());
            }
            Some(json!({
                "type": "track",
                "event": field("key"),
                "userId": user,
                "messageId": id,
                "timestamp": timestamp,
                "properties": properties,
            }))
        }
        "index" | "identify" => {
            let mut traits = event.get("context").cloned().unwrap_or(json!({}));
            if let Some(t) = traits.as_object_mut() {
                t.remove("key");
                t.remove("_meta");
            }
            Some(json!({
                "type": "identify",
                "userId": user,
                "messageId": id,
                "timestamp": timestamp,
                "traits": traits,
            }))
        }
        _ => None,
    }
}

impl Destination for Http {
    fn write(
        &mut self,
        batch: &[SinkRecord],
        _positions: &BTreeMap<(String, i32), i64>,
    ) -> anyhow::Result<()> {
        for chunk in batch.chunks(self.settings.max_events.max(1)) {
            let Some(body) = self.body(chunk)? else {
                continue;
            };
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for r in chunk {
                h.update(r.id.as_bytes());
                h.update(b"\n");
            }
            self.post(&body, &format!("{:032x}", h.digest128()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn segment_messages_per_kind() {
        let feature = json!({"kind":"feature","creationDate":1000,"key":"f","version":3,
            "context":{"kind":"user","key":"u1"},"variation":1,"value":true,"default":false});
        let m = segment_message("id-1", &feature).unwrap();
        assert_eq!(m["type"], "track");
        assert_eq!(m["event"], "Feature Flag Evaluated");
        assert_eq!(m["userId"], "u1");
        assert_eq!(m["messageId"], "id-1");
        assert_eq!(m["timestamp"], "1970-01-01T00:00:01.000Z");
        assert_eq!(m["properties"]["flag_key"], "f");
        assert_eq!(m["properties"]["variation"], 1);
        let identify = json!({"kind":"index","creationDate":1,"context":{"kind":"multi","org":{"key":"o","tier":"gold"}}});
        let m = segment_message("id-2", &identify).unwrap();
        assert_eq!(
            (m["type"].as_str(), m["userId"].as_str()),
            (Some("identify"), Some("o"))
        );
        let custom = json!({"kind":"custom","creationDate":1,"key":"checkout","contextKeys":{"user":"u"},"data":{"cart":3},"metricValue":9.5});
        let m = segment_message("id-3", &custom).unwrap();
        assert_eq!(m["event"], "checkout");
        assert_eq!(m["properties"], json!({"cart":3,"metric_value":9.5}));
        assert!(segment_message("id-4", &json!({"kind":"summary"})).is_none());
        // A multi-kind context is keyed by its user member (the rule every sink shares,
        // sink::record), not by the member written first.
        let multi = json!({"kind":"feature","creationDate":1,"key":"f",
            "context":{"kind":"multi","org":{"key":"o"},"user":{"key":"u"}},"value":true});
        assert_eq!(segment_message("id-5", &multi).unwrap()["userId"], "u");
    }
}
