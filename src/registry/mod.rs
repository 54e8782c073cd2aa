//! A Schema Registry client for the Confluent REST API, as Confluent Schema Registry,
//! Apicurio Registry (at `/apis/ccompat/v7`), Karapace and Redpanda serve it.
//!
//! - **Outputs** ([`outputs`]): at start, each Avro output kind's schema is registered
//!   (or found as the subject's latest version) under its subject, and its records
//!   are written in the Confluent wire format: `0x00`, the schema id (4 bytes,
//!   big-endian), the datum.
//! - **Input** ([`writers`]): a `native-avro` record in the Confluent wire format names
//!   its writer schema by id. Each worker fetches an id once and keeps it; the datum is
//!   read with that schema and resolved to `event.avsc` (Avro schema resolution). An
//!   id the registry does not know, or a registry that does not answer, dead-letters
//!   the record with its own reason (`unknown_schema`, `registry_unavailable`).
//!
//! Requests are blocking (ureq), bounded by `timeout`, and never follow redirects;
//! answers are read up to [`MAX_ANSWER_BYTES`]. The URL is shown redacted, and the
//! password and token never leave the `Authorization` header.

pub mod outputs;
pub mod writers;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::kafka::security::{Secret, read_secret};
use crate::sink::destination::redact_url;
use crate::units::de::positive_duration;

/// Largest registry answer read (a schema with its metadata).
pub const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// `[output.schema_registry]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The Confluent-compatible API's base URL: `https://registry:8081`, or Apicurio's
    /// `http://registry:8080/apis/ccompat/v7`.
    pub url: String,
    /// Basic authentication: the user, with `password` or `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `Authorization: Bearer <token>`, instead of basic authentication.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// The CA certificates (PEM) an `https` registry's certificate must chain to;
    /// unset: the Mozilla roots built into flagtally.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// How an output's subject is named: `topic` (`<topic>-value`, the default),
    /// `record` (the record's full name, `flagtally.output.Summary`) or `topic-record`
    /// (`<topic>-flagtally.output.Summary`).
    #[serde(default)]
    pub subject_naming: SubjectNaming,
    /// Register each output schema at start (the registry answers the existing id
    /// when it is already registered); `false`: use the subject's latest version,
    /// which must be flagtally's schema.
    #[serde(default = "yes")]
    pub auto_register: bool,
    /// Longest wait for one request.
    #[serde(default = "default_timeout", deserialize_with = "positive_duration")]
    pub timeout: Duration,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Confluent's subject name strategies, for the value of an output record.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectNaming {
    /// `<topic>-value` (TopicNameStrategy).
    #[default]
    Topic,
    /// The record's full name (RecordNameStrategy).
    Record,
    /// `<topic>-<record's full name>` (TopicRecordNameStrategy).
    TopicRecord,
}

impl SubjectNaming {
    pub fn subject(self, topic: &str, full_name: &str) -> String {
        match self {
            Self::Topic => format!("{topic}-value"),
            Self::Record => full_name.to_owned(),
            Self::TopicRecord => format!("{topic}-{full_name}"),
        }
    }
}

impl RegistryConfig {
    /// Reads `password_file` and `bearer_token_file` into their keys.
    pub fn read_secret_files(&mut self, problems: &mut Vec<String>, warnings: &mut Vec<String>) {
        const AT: &str = "output.schema_registry";
        for (key, file, value) in [
            ("password", &self.password_file, &mut self.password),
            (
                "bearer_token",
                &self.bearer_token_file,
                &mut self.bearer_token,
            ),
        ] {
            let Some(file) = file else { continue };
            if value.is_some() {
                problems.push(format!("{AT}.{key}: set both it and {key}_file; keep one"));
                continue;
            }
            match read_secret(file, warnings) {
                Ok(secret) => *value = Some(secret),
                Err(e) => problems.push(format!("{AT}.{key}_file: {e}")),
            }
        }
    }

    /// What no single key can say wrong.
    pub fn check(&self, problems: &mut Vec<String>) {
        const AT: &str = "output.schema_registry";
        let https = self.url.starts_with("https://");
        if !https && !self.url.starts_with("http://") {
            problems.push(format!(
                "{AT}.url: {} is not an http:// or https:// URL",
                redact_url(&self.url)
            ));
        }
        if self
            .url
            .split_once("://")
            .is_some_and(|(_, rest)| rest.split('/').next().is_some_and(|a| a.contains('@')))
        {
            problems.push(format!(
                "{AT}.url: holds a user name or password; give them as username and \
                 password (or password_file) instead"
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            problems.push(format!("{AT}.password: needs username"));
        }
        if self.username.is_some() && self.password.is_none() {
            problems.push(format!("{AT}.username: needs password or password_file"));
        }
        if self.username.is_some() && self.bearer_token.is_some() {
            problems.push(format!(
                "{AT}: username and bearer_token are two ways to authenticate; keep one"
            ));
        }
        if let Some(ca) = &self.tls_ca_file {
            if !https {
                problems.push(format!("{AT}.tls_ca_file: the url is not https://"));
            }
            if let Err(e) = roots(ca) {
                problems.push(format!("{AT}.tls_ca_file: {e}"));
            }
        }
    }
}

/// The certificates of a PEM file; at least one.
fn roots(file: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("{}: {e}", file.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", file.display()));
    }
    Ok(certs)
}

/// What a request came to, when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered 404: no such subject, version or schema id.
    #[error("{0}")]
    NotFound(String),
    /// The registry answered, refusing: an incompatible or invalid schema, or the
    /// credentials (401, 403, 409, 422, …). Retrying does not help.
    #[error("{0}")]
    Refused(String),
    /// No answer, or a server error: retrying may help.
    #[error("{0}")]
    Unavailable(String),
}

/// A client of one registry.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// The `Authorization` header's value.
    auth: Option<Secret>,
    /// The URL as it may be shown.
    shown: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// Confluent's content type for requests and answers.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl Client {
    pub fn new(config: &RegistryConfig) -> Result<Self, String> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &config.tls_ca_file {
            let certs =
                roots(ca).map_err(|e| format!("output.schema_registry.tls_ca_file: {e}"))?;
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .max_redirects(0)
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into();
        let auth = match (&config.username, &config.password, &config.bearer_token) {
            (Some(user), Some(password), _) => {
                use base64::Engine as _;
                let pair = format!("{user}:{}", password.expose());
                Some(Secret::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )))
            }
            (_, _, Some(token)) => Some(Secret::new(format!("Bearer {}", token.expose()))),
            _ => None,
        };
        Ok(Self {
            agent,
            base: config.url.trim_end_matches('/').to_owned(),
            auth,
            shown: redact_url(&config.url),
        })
    }

    /// The registry's URL, redacted.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Registers `schema` (Avro) under `subject`; the registry answers the existing id
    /// when the subject already holds it.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let answer = self.call(
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(&json!({"schema": schema, "schemaType": "AVRO"})),
        )?;
        self.id_of(&answer, &format!("registering under {subject}"))
    }

    /// The id and text of `subject`'s latest version.
    pub fn latest(&self, subject: &str) -> Result<(u32, String), RegistryError> {
        let answer = self.call("GET", &format!("/subjects/{subject}/versions/latest"), None)?;
        let id = self.id_of(&answer, &format!("the latest version of {subject}"))?;
        let text = answer["schema"].as_str().ok_or_else(|| {
            RegistryError::Refused(format!(
                "{}: the latest version of {subject} has no schema text",
                self.shown
            ))
        })?;
        Ok((id, text.to_owned()))
    }

    /// The text of schema `id`; an error for a schema that is not Avro or uses
    /// references (which flagtally does not follow).
    pub fn schema(&self, id: u32) -> Result<String, RegistryError> {
        let answer = self.call("GET", &format!("/schemas/ids/{id}"), None)?;
        let kind = answer["schemaType"].as_str().unwrap_or("AVRO");
        if kind != "AVRO" {
            return Err(RegistryError::Refused(format!(
                "schema id {id} is {kind}, not Avro"
            )));
        }
        if answer["references"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            return Err(RegistryError::Refused(format!(
                "schema id {id} uses schema references, which flagtally does not follow"
            )));
        }
        answer["schema"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::Refused(format!("schema id {id}: no schema text")))
    }

    /// Sets `subject`'s compatibility level (`BACKWARD`, `NONE`, …).
    pub fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        self.call(
            "PUT",
            &format!("/config/{subject}"),
            Some(&json!({"compatibility": level})),
        )
        .map(drop)
    }

    /// Whether `schema` may follow `subject`'s latest version under its compatibility
    /// level.
    pub fn compatible(&self, subject: &str, schema: &str) -> Result<bool, RegistryError> {
        let answer = self.call(
            "POST",
            &format!("/compatibility/subjects/{subject}/versions/latest"),
            Some(&json!({"schema": schema, "schemaType": "AVRO"})),
        )?;
        answer["is_compatible"].as_bool().ok_or_else(|| {
            RegistryError::Refused(format!(
                "{}: the compatibility answer for {subject} has no is_compatible",
                self.shown
            ))
        })
    }

    fn id_of(&self, answer: &Value, what: &str) -> Result<u32, RegistryError> {
        answer["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                RegistryError::Refused(format!(
                    "{}: {what}: the answer has no 32-bit schema id",
                    self.shown
                ))
            })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, RegistryError> {
        let url = format!("{}{path}", self.base);
        let shown = format!("{method} {}{path}", self.shown);
        let unavailable =
            |e: &dyn std::fmt::Display| RegistryError::Unavailable(format!("{shown}: {e}"));
        let answer = match body {
            Some(body) => {
                let mut req = self
                    .agent
                    .post(&url)
                    .header("Content-Type", CONTENT_TYPE)
                    .header("Accept", CONTENT_TYPE);
                if method == "PUT" {
                    req = self
                        .agent
                        .put(&url)
                        .header("Content-Type", CONTENT_TYPE)
                        .header("Accept", CONTENT_TYPE);
                }
                if let Some(auth) = &self.auth {
                    req = req.header("Authorization", auth.expose());
                }
                req.send(body.to_string().as_bytes())
            }
            None => {
                let mut req = self.agent.get(&url).header("Accept", CONTENT_TYPE);
                if let Some(auth) = &self.auth {
                    req = req.header("Authorization", auth.expose());
                }
                req.call()
            }
        };
        let mut answer = answer.map_err(|e| unavailable(&e))?;
        let status = answer.status().as_u16();
        let text = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| unavailable(&e))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            if value.is_null() {
                return Err(RegistryError::Unavailable(format!(
                    "{shown}: the answer is not JSON"
                )));
            }
            return Ok(value);
        }
        let message = value["message"]
            .as_str()
            .map_or_else(|| text.chars().take(300).collect::<String>(), str::to_owned);
        let detail = format!("{shown}: HTTP {status}: {message}");
        Err(match status {
            404 => RegistryError::NotFound(detail),
            408 | 429 | 500..=599 => RegistryError::Unavailable(detail),
            _ => RegistryError::Refused(detail),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> RegistryConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn subjects_follow_confluents_strategies() {
        let full = "flagtally.output.Summary";
        assert_eq!(SubjectNaming::Topic.subject("sums", full), "sums-value");
        assert_eq!(SubjectNaming::Record.subject("sums", full), full);
        assert_eq!(
            SubjectNaming::TopicRecord.subject("sums", full),
            "sums-flagtally.output.Summary"
        );
        let c = config("url = \"http://r\"\nsubject_naming = \"topic-record\"");
        assert_eq!(c.subject_naming, SubjectNaming::TopicRecord);
        assert!(c.auto_register);
        assert_eq!(c.timeout, Duration::from_secs(10));
    }

    #[test]
    fn the_checks_name_the_key() {
        let problems = |text: &str| {
            let mut p = Vec::new();
            config(text).check(&mut p);
            p
        };
        assert!(problems("url = \"http://registry:8081\"").is_empty());
        assert!(problems("url = \"registry:8081\"")[0].contains("output.schema_registry.url"));
        let p = problems("url = \"https://u:sekrit@registry/\"");
        assert!(p[0].contains("username"), "{p:?}");
        assert!(!p[0].contains("sekrit"), "{p:?}");
        assert!(problems("url = \"http://r\"\nusername = \"u\"")[0].contains("password"));
        let p = problems(
            "url = \"http://r\"\nusername = \"u\"\npassword = \"p\"\nbearer_token = \"t\"",
        );
        assert!(p[0].contains("keep one"), "{p:?}");
        let p = problems("url = \"http://r\"\ntls_ca_file = \"/nonexistent/ca.pem\"");
        assert!(p.iter().any(|p| p.contains("not https")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("cannot read")), "{p:?}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = config("url = \"http://r\"\nusername = \"u\"\npassword = \"pw-sekrit\"");
        let client = Client::new(&c).expect("client");
        assert!(!format!("{c:?} {client:?}").contains("pw-sekrit"));
    }
}
