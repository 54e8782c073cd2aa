//! TLS and SASL for every Kafka client flagtally makes (the pipeline's consumer and
//! producer, the checkpoint store, the sinks' consumers and dead-letter producers,
//! `topics`, `gen`): the `[kafka]` keys, the files they name, and what a failed
//! connection means in those keys' terms.
//!
//! Secrets ([`Secret`]) never print: their `Debug` is `"<redacted>"`. A password may
//! be given as `<key>_file`, read when the configuration is loaded (at start and on
//! reload); a secret file others can read is warned about.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::KafkaConfig;

/// A secret value: kept, passed to the client, never printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `security.protocol`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    pub fn librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// The SASL mechanisms flagtally configures by name (others pass through
/// `[kafka.properties]`).
pub const MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

// The TLS and SASL keys are fields of `[kafka]` ([`KafkaConfig`]); what they mean
// to the client, and their checks, are here.
impl KafkaConfig {
    /// The librdkafka properties these keys set (before the pass-through ones).
    pub fn security_properties(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let path = |p: &PathBuf| p.display().to_string();
        if let Some(p) = self.security_protocol {
            out.push(("security.protocol", p.librdkafka().to_owned()));
        }
        if let Some(m) = &self.sasl_mechanism {
            out.push(("sasl.mechanism", m.clone()));
        }
        if let Some(u) = &self.sasl_username {
            out.push(("sasl.username", u.clone()));
        }
        if let Some(p) = &self.sasl_password {
            out.push(("sasl.password", p.expose().to_owned()));
        }
        if let Some(f) = &self.tls_ca_file {
            out.push(("ssl.ca.location", path(f)));
        }
        if let Some(f) = &self.tls_cert_file {
            out.push(("ssl.certificate.location", path(f)));
        }
        if let Some(f) = &self.tls_key_file {
            out.push(("ssl.key.location", path(f)));
        }
        if let Some(p) = &self.tls_key_password {
            out.push(("ssl.key.password", p.expose().to_owned()));
        }
        if let Some(s) = &self.sasl_oauthbearer_client_secret {
            out.push(("sasl.oauthbearer.client.secret", s.expose().to_owned()));
        }
        out
    }

    /// Reads the `*_file` secrets into their keys; problems (both forms given, a file
    /// that cannot be read) to `problems`, a secret file others may read to
    /// `warnings`.
    pub fn read_secret_files(&mut self, problems: &mut Vec<String>, warnings: &mut Vec<String>) {
        for (key, file, value) in [
            (
                "kafka.sasl_password",
                &self.sasl_password_file,
                &mut self.sasl_password,
            ),
            (
                "kafka.tls_key_password",
                &self.tls_key_password_file,
                &mut self.tls_key_password,
            ),
            (
                "kafka.sasl_oauthbearer_client_secret",
                &self.sasl_oauthbearer_client_secret_file,
                &mut self.sasl_oauthbearer_client_secret,
            ),
        ] {
            let Some(file) = file else { continue };
            if value.is_some() {
                problems.push(format!("{key}: set both it and {key}_file; keep one"));
                continue;
            }
            match read_secret(file, warnings) {
                Ok(secret) => *value = Some(secret),
                Err(e) => problems.push(format!("{key}_file: {e}")),
            }
        }
    }

    /// What no single key can say wrong: the combinations, and the files (readable,
    /// the client certificate within its validity).
    pub fn check_security(&self, problems: &mut Vec<String>) {
        let protocol = self.security_protocol.unwrap_or(Protocol::Plaintext);
        let sasl_keys = self.sasl_mechanism.is_some()
            || self.sasl_username.is_some()
            || self.sasl_password.is_some();
        if sasl_keys && !protocol.sasl() {
            problems.push(
                "kafka.security_protocol: SASL keys are set; use \"sasl_ssl\" (or \"sasl_plaintext\")"
                    .to_owned(),
            );
        }
        if protocol.sasl() {
            match self.sasl_mechanism.as_deref() {
                None => problems.push(format!(
                    "kafka.sasl_mechanism: {} needs one of {}",
                    protocol.librdkafka(),
                    MECHANISMS.join(", ")
                )),
                Some(m) if !MECHANISMS.contains(&m) => problems.push(format!(
                    "kafka.sasl_mechanism: {m:?} is not one of {}",
                    MECHANISMS.join(", ")
                )),
                Some("OAUTHBEARER") => {}
                Some(m) => {
                    if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                        problems.push(format!("kafka.sasl_username: {m} needs a user name"));
                    }
                    if self.sasl_password.is_none() {
                        problems.push(format!(
                            "kafka.sasl_password: {m} needs a password (or kafka.sasl_password_file)"
                        ));
                    }
                }
            }
        }
        if self.sasl_oauthbearer_client_secret.is_some() {
            // The mechanism as librdkafka will see it: the key, else a pass-through
            // property.
            let mechanism = self.sasl_mechanism.as_deref().or_else(|| {
                ["sasl.mechanism", "sasl.mechanisms"]
                    .iter()
                    .find_map(|k| self.properties.get(*k).map(String::as_str))
            });
            if mechanism != Some("OAUTHBEARER") {
                problems.push(
                    "kafka.sasl_oauthbearer_client_secret: set for sasl_mechanism = \"OAUTHBEARER\" only"
                        .to_owned(),
                );
            }
            if self
                .properties
                .contains_key("sasl.oauthbearer.client.secret")
            {
                problems.push(
                    "kafka.sasl_oauthbearer_client_secret: also set as kafka.properties.\"sasl.oauthbearer.client.secret\"; keep one"
                        .to_owned(),
                );
            }
        }
        let tls_keys = self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.tls_key_file.is_some();
        if tls_keys && !protocol.tls() {
            problems.push(
                "kafka.security_protocol: TLS files are set; use \"ssl\" or \"sasl_ssl\""
                    .to_owned(),
            );
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push(
                "kafka.tls_cert_file, kafka.tls_key_file: a client certificate needs its key, and a key its certificate"
                    .to_owned(),
            );
        }
        for (key, file) in [
            ("kafka.tls_ca_file", &self.tls_ca_file),
            ("kafka.tls_cert_file", &self.tls_cert_file),
            ("kafka.tls_key_file", &self.tls_key_file),
        ] {
            if let Some(f) = file
                && let Err(e) = std::fs::File::open(f)
            {
                problems.push(format!("{key}: cannot read {}: {e}", f.display()));
            }
        }
        if let Some(f) = &self.tls_cert_file
            && let Ok(pem) = std::fs::read_to_string(f)
            && let Err(e) = within_validity(&pem, now_secs())
        {
            problems.push(format!("kafka.tls_cert_file: {}: {e}", f.display()));
        }
    }
}

/// A secret from a file: its content less one trailing newline. A relative path is
/// read in systemd's credentials directory (`$CREDENTIALS_DIRECTORY`, set for a unit
/// with `LoadCredential=`) when there is one: `sasl_password_file = "kafka-password"`.
pub fn read_secret(file: &Path, warnings: &mut Vec<String>) -> Result<Secret, String> {
    let resolved = secret_path(file);
    let file = resolved.as_path();
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(file)
            && meta.permissions().mode() & 0o004 != 0
        {
            warnings.push(format!(
                "{} holds a secret and any user can read it (mode {:o}); chmod o-r it",
                file.display(),
                meta.permissions().mode() & 0o777
            ));
        }
    }
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(format!("{} is empty", file.display()));
    }
    Ok(Secret::new(text))
}

/// Where a secret file is read: a relative path in systemd's credentials directory
/// (`$CREDENTIALS_DIRECTORY`) when there is one, any other path as it is.
pub fn secret_path(file: &Path) -> std::path::PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if file.is_relative() => Path::new(&dir).join(file),
        _ => file.to_path_buf(),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whether the first certificate of `pem` is valid at `now` (Unix seconds); else
/// which bound it misses, with the date.
pub fn within_validity(pem: &str, now: i64) -> Result<(), String> {
    let (not_before, not_after) = validity(pem)?;
    let date = |t: i64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0).unsigned_abs()),
        )
        .to_string()
    };
    if now > not_after {
        return Err(format!("the certificate expired on {}", date(not_after)));
    }
    if now < not_before {
        return Err(format!(
            "the certificate is not valid before {}",
            date(not_before)
        ));
    }
    Ok(())
}

/// The validity (notBefore, notAfter, Unix seconds) of the first certificate in `pem`.
pub fn validity(pem: &str) -> Result<(i64, i64), String> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN).ok_or("no PEM certificate in the file")?;
    let body = &pem[start + BEGIN.len()..];
    let end = body.find(END).ok_or("an unterminated PEM certificate")?;
    let b64: String = body[..end].split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the certificate is not base64: {e}"))?;
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    //   serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, … } }
    let bad = || "not an X.509 certificate".to_owned();
    let (tag, cert, _) = der_item(&der).ok_or_else(bad)?;
    if tag != 0x30 {
        return Err(bad());
    }
    let (tag, mut tbs, _) = der_item(cert).ok_or_else(bad)?;
    if tag != 0x30 {
        return Err(bad());
    }
    let mut fields = Vec::with_capacity(5);
    while fields.len() < 5 {
        let (tag, content, rest) = der_item(tbs).ok_or_else(bad)?;
        tbs = rest;
        if fields.is_empty() && tag == 0xA0 {
            continue; // the explicit version
        }
        fields.push((tag, content));
    }
    let (tag, validity) = fields[3];
    if tag != 0x30 {
        return Err(bad());
    }
    let (t1, before, rest) = der_item(validity).ok_or_else(bad)?;
    let (t2, after, _) = der_item(rest).ok_or_else(bad)?;
    Ok((der_time(t1, before)?, der_time(t2, after)?))
}

/// One DER item of `bytes`: its tag, its content, and what follows it.
fn der_item(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, 0x18)
/// in Unix seconds.
fn der_time(tag: u8, bytes: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "a certificate time is not text")?;
    let digits = text
        .strip_suffix('Z')
        .ok_or("a certificate time is not in UTC")?;
    let full = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i64 = digits[..2].parse().map_err(|_| "a bad certificate time")?;
            format!("{}{digits}", if yy >= 50 { "19" } else { "20" })
        }
        (0x18, 14) => digits.to_owned(),
        _ => return Err(format!("an unknown certificate time {text:?}")),
    };
    if !full.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("a bad certificate time {text:?}"));
    }
    let stamp = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    let t = humantime::parse_rfc3339(&stamp).map_err(|e| format!("{stamp}: {e}"))?;
    Ok(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    })
}

/// What a librdkafka connection error means in the configuration's terms, for the
/// errors an operator causes: wrong credentials, a CA that did not sign the broker's
/// certificate, a client certificate the broker refuses, TLS against a plaintext
/// listener and the reverse. `None` for anything else (the broker is down, …).
pub fn diagnose(reason: &str) -> Option<String> {
    // librdkafka appends "(after 310ms in state AUTH_REQ, 1 identical error(s)
    // suppressed)": not part of what is wrong, and it differs between retries.
    let reason = reason.split(" (after ").next().unwrap_or(reason);
    let r = reason.to_ascii_lowercase();
    let said = |what: &str| format!("{what} (librdkafka: {})", cap(reason));
    if r.contains("sasl authentication error") || r.contains("authentication failed") {
        return Some(said(
            "kafka.sasl_username / kafka.sasl_password: the broker refused the credentials",
        ));
    }
    if r.contains("certificate verify failed") || r.contains("unable to get local issuer") {
        return Some(said(
            "kafka.tls_ca_file: the broker's certificate does not chain to a trusted CA",
        ));
    }
    if r.contains("alert certificate unknown")
        || r.contains("alert bad certificate")
        || r.contains("alert certificate expired")
        || r.contains("alert certificate revoked")
        || r.contains("alert unknown ca")
    {
        return Some(said(
            "kafka.tls_cert_file: the broker refused this client's certificate (expired, or not signed by a CA it trusts)",
        ));
    }
    if r.contains("alert certificate required")
        || (r.contains("alert handshake failure") && r.contains("ssl"))
    {
        return Some(said(
            "kafka.tls_cert_file: the broker wants a client certificate (mutual TLS)",
        ));
    }
    if r.contains("wrong version number") || r.contains("packet length too long") {
        return Some(said(
            "kafka.security_protocol: TLS against a listener that does not speak it",
        ));
    }
    if r.contains("disconnected while requesting apiversion")
        || r.contains("broker might require sasl")
        || r.contains("possibly caused by") && r.contains("ssl")
    {
        return Some(said(
            "kafka.security_protocol: the listener wants another protocol (TLS or SASL)",
        ));
    }
    None
}

fn cap(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A certificate made by scripts/infra.sh (`openssl ca -startdate 20200101000000Z
    // -enddate 20210101000000Z`, UTCTime).
    const EXPIRED: &str = "-----BEGIN CERTIFICATE-----
MIICrTCCAZUCAhAAMA0GCSqGSIb3DQEBCwUAMBwxGjAYBgNVBAMMEWZsYWd0YWxs
eSB0ZXN0IENBMB4XDTIwMDEwMTAwMDAwMFoXDTIxMDEwMTAwMDAwMFowHDEaMBgG
A1UEAwwRZmxhZ3RhbGx5LWV4cGlyZWQwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAw
ggEKAoIBAQC3hxTmL5B+ajRINHZgdbQYsxrLoeCsfGBsUqCjqsR1QoAd91k3mguM
Rggyh6t3VF+MSFDfMXMhIysjGo0EQfV6VkgBmWLTfZrvaMksFIS8s5rPTEu3gdgL
iivFcEMG0Fd3F61yyE24zJjXj/YcwtbjZNRTsjTpFXqCu0/KwdlS4zpPAicLT+8Y
W4ChXsEr4moOCMewubCK3jE5cJI5FEKO78RWYBmwofzPyIhqpknFcO4ZR3vNn3zQ
I8UyH41j1eyQ9gLrvAOSB3K1nh/HNvq1fszZf5qPO7m7kJTvoc+ChAlOCOH5FBEG
C4A0krndTAcgxm26cqnZXbaLtgMRH3MFAgMBAAEwDQYJKoZIhvcNAQELBQADggEB
AFZ63rQOBFwCoEPvfR9YHwadWjFWFtqHeQ27Iwmrdl+5aTqIIOLtQzOMX8m8Bo+7
v5diIUKEPlxg/+ZV2Ke4qDyhNt1jT3Zyt32ra6lVloes/9GA5opf50VgeNrxg3XM
tKSu7ovTyMOD0DzraHVD/oK7HW7l+vv4eJGPIdV3aXYtoh/rSU1sLKp7qZOqypuS
c2sAZuVbwevzedyInptHDrVVoq4HtTzC2GmepnGfb94U8Aznjz/1kPown8uaCyro
RejjU8kam7xrX2MRpF2qS+qrqc2iXAviTWNUiVGpJwTxVj5aBvwHObt8JVpsoSf1
2YObShFi45UOd3U9OA88AkU=
-----END CERTIFICATE-----
";

    #[test]
    fn a_certificate_s_validity_is_read_from_its_der() {
        let (before, after) = validity(EXPIRED).unwrap();
        assert_eq!(before, 1_577_836_800); // 2020-01-01
        assert_eq!(after, 1_609_459_200); // 2021-01-01
        let e = within_validity(EXPIRED, 1_700_000_000).unwrap_err();
        assert!(e.contains("expired on 2021-01-01"), "{e}");
        assert!(within_validity(EXPIRED, 1_600_000_000).is_ok());
        let e = within_validity(EXPIRED, 1_500_000_000).unwrap_err();
        assert!(e.contains("not valid before 2020-01-01"), "{e}");
        assert!(validity("no pem here").is_err());
        assert!(validity("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").is_err());
        // Cut anywhere, the DER is refused, never read past its end.
        let der_start = EXPIRED.find('\n').unwrap() + 1;
        for cut in (der_start..EXPIRED.len() - 30).step_by(7) {
            let short = format!("{}\n-----END CERTIFICATE-----", &EXPIRED[..cut]);
            let _ = validity(&short);
        }
    }

    #[test]
    fn der_times_both_forms() {
        assert_eq!(der_time(0x17, b"210101000000Z").unwrap(), 1_609_459_200);
        assert_eq!(der_time(0x18, b"20210101000000Z").unwrap(), 1_609_459_200);
        // Two-digit years below 50 are 20xx (RFC 5280).
        assert_eq!(der_time(0x17, b"491231235959Z").unwrap(), 2_524_607_999);
        assert!(der_time(0x17, b"2101010000Z").is_err());
        assert!(der_time(0x18, b"20210101000000").is_err());
    }

    #[test]
    fn connection_errors_name_the_setting() {
        for (reason, key) in [
            (
                "sasl_ssl://127.0.0.1:1/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
                "kafka.sasl_password",
            ),
            (
                "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified",
                "kafka.tls_ca_file",
            ),
            (
                "Receive failed: error:0A000416:SSL routines::ssl/tls alert certificate unknown: SSL alert number 46",
                "kafka.tls_cert_file",
            ),
        ] {
            let d = diagnose(reason).unwrap();
            assert!(d.contains(key), "{d}");
        }
        assert_eq!(
            diagnose("Connect to ipv4#127.0.0.1:1 failed: Connection refused"),
            None
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = KafkaConfig {
            sasl_password: Some(Secret::new("hunter2")),
            ..KafkaConfig::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn keys_are_checked_together() {
        let mut p = Vec::new();
        KafkaConfig {
            sasl_username: Some("u".into()),
            ..KafkaConfig::default()
        }
        .check_security(&mut p);
        assert!(p[0].starts_with("kafka.security_protocol"), "{p:?}");
        let mut p = Vec::new();
        KafkaConfig {
            security_protocol: Some(Protocol::SaslSsl),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            ..KafkaConfig::default()
        }
        .check_security(&mut p);
        assert!(
            p.iter().any(|e| e.starts_with("kafka.sasl_username")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|e| e.starts_with("kafka.sasl_password")),
            "{p:?}"
        );
    }
}
