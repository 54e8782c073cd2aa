//! The daemon over TLS and SASL (Apache Kafka's own listeners, started by
//! `scripts/infra.sh` beside the plaintext one): SASL_SSL with SCRAM-SHA-512 and a
//! CA-verified certificate, and mutual TLS. Every client — the pipeline's consumer and
//! producer, the checkpoint store, a file sink's consumer — connects through the
//! configured listener, in at-least-once and exactly-once mode, and the counts stay
//! exact. A wrong password, an unknown CA and an expired client certificate each give
//! one error naming the setting, in the log, in `/readyz` and at exit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use flagtally::generate::{GenConfig, Tally};

/// The `[kafka]` keys of each way in.
fn sasl_keys(tls: &TlsBroker, password: &str, ca: &Path) -> String {
    format!(
        "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"{}\"\nsasl_password = \"{password}\"\ntls_ca_file = \"{}\"\n",
        tls.user,
        ca.display()
    )
}

fn mtls_keys(tls: &TlsBroker, cert: &str) -> String {
    format!(
        "security_protocol = \"ssl\"\ntls_ca_file = \"{dir}/ca.pem\"\ntls_cert_file = \"{dir}/{cert}.pem\"\ntls_key_file = \"{dir}/{cert}.key\"\n",
        dir = tls.dir.display()
    )
}

/// A one-worker configuration over `t`, reaching the cluster at `address` with `keys`,
/// with a file sink (NDJSON) over the summary topic; `extra` goes under
/// `[processing]`.
fn config(t: &Topics, address: &str, keys: &str, dir: &Path, extra: &str) -> String {
    let plain = broker();
    let cfg = t
        .config_with_threads(plain, "size = \"10s\"\nidle_timeout = \"1s\"", 1)
        .replace(
            &format!("brokers = \"{plain}\"\n"),
            &format!("brokers = \"{address}\"\n{keys}"),
        )
        .replace("[processing]\n", &format!("[processing]\n{extra}"));
    format!(
        "{cfg}\n[[sinks]]\nname = \"files\"\ntype = \"file\"\ntopics = [\"{summary}\"]\npath = \"{dir}\"\nbatch_timeout = \"300ms\"\n",
        summary = t.summary,
        dir = dir.display()
    )
}

fn setup(n: usize) -> (Topics, Tally) {
    let (broker, t, records, tally) = sink_case(
        n,
        GenConfig {
            flags: 5,
            tracked_one_in: 10,
            ..GenConfig::default()
        },
    );
    produce(&broker, &t.input, 2, &records);
    (t, tally)
}

/// The evaluations the file sink's NDJSON summaries count.
fn file_total(dir: &Path) -> u64 {
    fn walk(dir: &Path, total: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, total);
            } else if path.extension().is_some_and(|x| x == "ndjson") {
                for line in std::fs::read_to_string(&path).unwrap_or_default().lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    for f in v["features"].as_object().into_iter().flatten() {
                        for c in f.1["counters"].as_array().into_iter().flatten() {
                            *total += c["count"].as_u64().unwrap();
                        }
                    }
                }
            }
        }
    }
    let mut total = 0;
    walk(dir, &mut total);
    total
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir()
        .join("flagtally-tests")
        .join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the daemon through `address` with `keys` until the summaries on the topic and
/// in the sink's files count every evaluation once.
fn runs_exactly(address: &str, keys: &str, exactly_once: bool, name: &str) {
    runs_exactly_after(address, keys, exactly_once, name, &|_| {});
}

/// [`runs_exactly`], calling `before` with the topics before the daemon starts.
fn runs_exactly_after(
    address: &str,
    keys: &str,
    exactly_once: bool,
    name: &str,
    before: &dyn Fn(&Topics),
) {
    let (t, tally) = setup(4_000);
    before(&t);
    let dir = temp_dir(name);
    let extra = if exactly_once {
        format!(
            "exactly_once = true\ntransactional_id = \"{}-tx\"\n",
            t.group
        )
    } else {
        String::new()
    };
    let d = Flagtally::start(&config(&t, address, keys, &dir, &extra), &unique(name));
    let want = tally.evaluations();
    let summaries = read_until(
        broker(),
        &t.summary,
        Duration::from_secs(90),
        summed_counters(want),
    );
    assert!(
        eventually(Duration::from_secs(60), || file_total(&dir) >= want),
        "{name}: the file sink holds {} of {want}\n{}",
        file_total(&dir),
        d.log_text()
    );
    assert!(d.stop(Duration::from_secs(30)).success(), "{name}");
    assert_eq!(total(&window_tally(&summaries)), want, "{name}: the topic");
    assert_eq!(file_total(&dir), want, "{name}: the files");
}

/// The ACLs `config` needs over `t`, as docs/operations.md ("ACLs") lists them: one
/// line per ACL for `tests/python/grant_acls.py`.
fn needed_acls(t: &Topics, transactional_id: Option<&str>) -> String {
    let checkpoints = format!("{}-checkpoints", t.group);
    let mut acls = vec![
        format!("TOPIC LITERAL {} READ", t.input),
        // The group, and the checkpoint reader's and the dead-letter probe's, which
        // are named after it.
        format!("GROUP PREFIXED {} READ", t.group),
        format!("TOPIC LITERAL {checkpoints} READ"),
    ];
    for topic in [
        &t.summary,
        &t.feature,
        &t.index,
        &t.late,
        &t.dead_letter,
        &checkpoints,
    ] {
        acls.push(format!("TOPIC LITERAL {topic} WRITE"));
        acls.push(format!("TOPIC LITERAL {topic} DESCRIBE_CONFIGS"));
    }
    // The file sink reads the summaries in its own group.
    acls.push(format!("TOPIC LITERAL {} READ", t.summary));
    acls.push("GROUP LITERAL flagtally-sink-files READ".to_owned());
    if let Some(id) = transactional_id {
        acls.push(format!("TRANSACTIONAL_ID PREFIXED {id} WRITE"));
    }
    acls.join("\n")
}

fn grant(principal: &str, acls: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(python())
        .arg(repo().join("tests/python/grant_acls.py"))
        .args([broker(), principal])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(acls.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "grant_acls.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A user that is no super user, granted exactly the documented ACLs (StandardAuthorizer
/// on the test broker), runs the daemon — at-least-once and exactly-once, a file sink
/// included — and the counts come out exact.
#[test]
fn the_documented_acls_are_enough() {
    let tls = tls_broker();
    let ca = tls.dir.join("ca.pem");
    let keys = sasl_keys(tls, &tls.acl_password, &ca).replace(
        &format!("sasl_username = \"{}\"", tls.user),
        &format!("sasl_username = \"{}\"", tls.acl_user),
    );
    let principal = format!("User:{}", tls.acl_user);

    // `validate --broker` names what the principal lacks, then that nothing is.
    let t = Topics::create(broker(), 1);
    let dir = temp_dir("acls-validate");
    let path = dir.join("flagtally.toml");
    std::fs::write(&path, config(&t, &tls.sasl_ssl, &keys, &dir, "")).unwrap();
    let validate = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flagtally"))
            .args(["validate", "--broker", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = validate();
    assert!(!ok, "{text}");
    assert!(text.contains("missing ACLs"), "{text}");
    assert!(text.contains(&format!("topic {}: Read", t.input)), "{text}");
    assert!(
        // The file sink reads the summaries too.
        text.contains(&format!(
            "topic {}: Read, Write, DescribeConfigs",
            t.summary
        )),
        "{text}"
    );
    assert!(text.contains(&format!("group {}: Read", t.group)), "{text}");
    assert!(
        !text.contains("missing topics"),
        "hidden is not missing: {text}"
    );
    grant(&principal, &needed_acls(&t, None));
    let (ok, text) = validate();
    assert!(ok, "{text}");
    assert!(
        text.contains("every operation flagtally needs is allowed"),
        "{text}"
    );

    for exactly_once in [false, true] {
        runs_exactly_after(&tls.sasl_ssl, &keys, exactly_once, "acls", &|t| {
            let tx = format!("{}-tx", t.group);
            grant(
                &principal,
                &needed_acls(t, exactly_once.then_some(tx.as_str())),
            );
        });
    }
}

/// An OAuth 2 token endpoint (tests/python/oidc_token.py) on a free port, stopped when
/// dropped.
struct TokenEndpoint {
    child: std::process::Child,
    url: String,
    issued: std::path::PathBuf,
}

impl TokenEndpoint {
    fn start(tls: &TlsBroker, secret: &str) -> Self {
        use std::io::BufRead as _;
        let port = free_port();
        let mut child = std::process::Command::new(python())
            .arg(repo().join("tests/python/oidc_token.py"))
            .arg(port.to_string())
            .arg(tls.dir.join("oauth.key"))
            .args(["flagtally-client", secret, &tls.oidc_user])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/token"),
            issued: tls.dir.join(format!("{port}-issued")),
        }
    }

    fn issued(&self) -> u64 {
        std::fs::read_to_string(&self.issued)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SASL/OAUTHBEARER with OIDC: librdkafka fetches a token from the endpoint (the
/// client-credentials grant) and the broker checks its signature against the JWKS;
/// every client of the daemon connects so, in both modes, and counts stay exact.
#[test]
fn the_daemon_counts_exactly_over_oauthbearer_with_oidc_token_fetch() {
    let tls = tls_broker();
    let endpoint = TokenEndpoint::start(tls, "client-secret-1");
    let keys = format!(
        "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"OAUTHBEARER\"\ntls_ca_file = \"{ca}\"\nproperties = {{ \"sasl.oauthbearer.method\" = \"oidc\", \"sasl.oauthbearer.client.id\" = \"flagtally-client\", \"sasl.oauthbearer.client.secret\" = \"client-secret-1\", \"sasl.oauthbearer.token.endpoint.url\" = \"{url}\", \"sasl.oauthbearer.scope\" = \"kafka\" }}\n",
        ca = tls.dir.join("ca.pem").display(),
        url = endpoint.url
    );
    runs_exactly(&tls.sasl_ssl, &keys, false, "oidc");
    // The client secret as a secret key of [kafka], read from a file.
    let dir = temp_dir("oidc-secret");
    let file = dir.join("client-secret");
    std::fs::write(&file, "client-secret-1\n").unwrap();
    let keys = keys.replace(
        ", \"sasl.oauthbearer.client.secret\" = \"client-secret-1\"",
        "",
    ) + &format!(
        "sasl_oauthbearer_client_secret_file = \"{}\"\n",
        file.display()
    );
    runs_exactly(&tls.sasl_ssl, &keys, true, "oidc-eos");
    assert!(endpoint.issued() >= 2, "the client fetched its tokens");
}

#[test]
fn the_daemon_counts_exactly_over_sasl_ssl_and_mutual_tls() {
    let tls = tls_broker();
    let ca = tls.dir.join("ca.pem");
    let sasl = sasl_keys(tls, &tls.password, &ca);
    let mtls = mtls_keys(tls, "client");
    // The second mutual-TLS run with the client key encrypted, its passphrase from a
    // file (kafka.tls_key_password_file).
    let dir = temp_dir("tls-key-password");
    let key_password = dir.join("key-password");
    std::fs::write(&key_password, format!("{}\n", tls.client_key_password)).unwrap();
    let encrypted = mtls.replace(
        "client.key\"\n",
        &format!(
            "client-encrypted.key\"\ntls_key_password_file = \"{}\"\n",
            key_password.display()
        ),
    );
    assert!(encrypted.contains("tls_key_password_file"), "{encrypted}");
    runs_exactly(&tls.sasl_ssl, &sasl, false, "tls-sasl");
    runs_exactly(&tls.sasl_ssl, &sasl, true, "tls-sasl-eos");
    runs_exactly(&tls.mtls, &mtls, false, "tls-mtls");
    runs_exactly(&tls.mtls, &encrypted, true, "tls-mtls-eos");
}

#[test]
fn the_password_may_come_from_a_file() {
    let tls = tls_broker();
    let dir = temp_dir("tls-secret");
    let file = dir.join("kafka-password");
    std::fs::write(&file, format!("{}\n", tls.password)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let keys = sasl_keys(tls, "unused", &tls.dir.join("ca.pem")).replace(
        "sasl_password = \"unused\"\n",
        &format!("sasl_password_file = \"{}\"\n", file.display()),
    );
    runs_exactly(&tls.sasl_ssl, &keys, false, "tls-file");
}

/// Starts the daemon with `keys` against `address`: it waits, not ready, with
/// `/readyz` naming `setting`; stopped, it exits 1 with a last line naming it. No
/// secret in the log.
fn refused(address: &str, keys: &str, setting: &str, name: &str) {
    let t = Topics::create(broker(), 1);
    let dir = temp_dir(name);
    let admin = format!("127.0.0.1:{}", free_port());
    let mut d = Flagtally::start_with_env(
        &config(&t, address, keys, &dir, ""),
        &unique(name),
        &[("FLAGTALLY__ADMIN__LISTEN", admin.as_str())],
    );
    let mut seen = None;
    let named = eventually(Duration::from_secs(30), || {
        seen = http_get(&admin, "/readyz");
        seen.as_ref()
            .is_some_and(|(s, body)| *s == 503 && body.contains(setting))
    });
    assert!(named, "{name}: /readyz said {seen:?}\n{}", d.log_text());
    // Still waiting for the setting to be fixed: it retries, it does not exit.
    assert!(d.wait(Duration::from_secs(2)).is_none(), "{}", d.log_text());
    d.signal("TERM");
    let status = d.wait(Duration::from_secs(30));
    let log = d.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{name}: {log}");
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last.contains("flagtally:") && last.contains(setting),
        "{name}: the exit line {last:?}\n{log}"
    );
    assert!(!log.contains("wrong-secret"), "{name}: a secret in the log");
}

#[test]
fn refusals_name_the_setting() {
    let tls = tls_broker();
    let ca = tls.dir.join("ca.pem");
    refused(
        &tls.sasl_ssl,
        &sasl_keys(tls, "wrong-secret", &ca),
        "kafka.sasl_password",
        "tls-badpw",
    );
    refused(
        &tls.sasl_ssl,
        &sasl_keys(tls, &tls.password, &tls.dir.join("other-ca.pem")),
        "kafka.tls_ca_file",
        "tls-unknown-ca",
    );
    // Mutual TLS without a client certificate.
    refused(
        &tls.mtls,
        &format!(
            "security_protocol = \"ssl\"\ntls_ca_file = \"{}\"\n",
            ca.display()
        ),
        "kafka.tls_cert_file",
        "tls-no-cert",
    );
}

#[test]
fn an_expired_client_certificate_is_refused_before_connecting() {
    // flagtally reads its own certificate's validity: an expired one is a configuration
    // error naming the file and the date, from `validate` and `run` alike.
    let tls = tls_broker();
    let t = Topics::create(broker(), 1);
    let dir = temp_dir("tls-expired");
    let cfg = config(&t, &tls.mtls, &mtls_keys(tls, "expired"), &dir, "");
    let path = dir.join("flagtally.toml");
    std::fs::write(&path, &cfg).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flagtally"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("kafka.tls_cert_file") && text.contains("expired on 2021-01-01"),
        "{text}"
    );
    let mut d = Flagtally::start(&cfg, &unique("tls-expired"));
    let status = d.wait(Duration::from_secs(30));
    let log = d.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains("kafka.tls_cert_file") && log.contains("expired"),
        "{log}"
    );
}

#[test]
fn the_managed_kafka_examples_validate() {
    // config/examples/: each file as shipped, its secret and certificate paths pointed
    // at the test's files through the environment overlay (as an operator would
    // override them per host).
    let tls = tls_broker();
    let dir = temp_dir("tls-examples");
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let files = |name: &str| tls.dir.join(name).display().to_string();
    for (example, env) in [
        (
            "msk",
            vec![(
                "FLAGTALLY__KAFKA__SASL_PASSWORD_FILE",
                secret.display().to_string(),
            )],
        ),
        (
            "confluent-cloud",
            vec![(
                "FLAGTALLY__KAFKA__SASL_PASSWORD_FILE",
                secret.display().to_string(),
            )],
        ),
        (
            "event-hubs",
            vec![(
                "FLAGTALLY__KAFKA__SASL_PASSWORD_FILE",
                secret.display().to_string(),
            )],
        ),
        (
            "aiven",
            vec![
                ("FLAGTALLY__KAFKA__TLS_CA_FILE", files("ca.pem")),
                ("FLAGTALLY__KAFKA__TLS_CERT_FILE", files("client.pem")),
                ("FLAGTALLY__KAFKA__TLS_KEY_FILE", files("client.key")),
            ],
        ),
    ] {
        let path = repo().join(format!("config/examples/{example}.toml"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flagtally"))
            .args(["validate", "--config"])
            .arg(&path)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{example}: {text}");
        assert!(!text.contains("s3cret"), "{example}: the secret printed");
    }
}

/// Under systemd, `LoadCredential=kafka-password:…` puts the secret in
/// `$CREDENTIALS_DIRECTORY`, and a relative `*_file` key is read there; a secret file
/// any user can read is warned about (by `validate`, at start and on each reload).
#[test]
fn a_relative_secret_file_is_read_from_systemd_credentials() {
    let tls = tls_broker();
    let dir = temp_dir("tls-credentials");
    let credentials = dir.join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    let secret = credentials.join("kafka-password");
    std::fs::write(&secret, format!("{}\n", tls.password)).unwrap();
    let keys = sasl_keys(tls, "unused", &tls.dir.join("ca.pem")).replace(
        "sasl_password = \"unused\"\n",
        "sasl_password_file = \"kafka-password\"\n",
    );
    let config = dir.join("flagtally.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ninput_topics = [\"in\"]\n{keys}[output]\ndead_letter_topic = \"dlq\"\ntopics.summary = \"sums\"\n",
            tls.sasl_ssl
        ),
    )
    .unwrap();
    let validate = |mode: u32, credentials_dir: Option<&std::path::Path>| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flagtally"));
        cmd.args(["validate", "--config"])
            .arg(&config)
            .current_dir(&dir)
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(d) = credentials_dir {
            cmd.env("CREDENTIALS_DIRECTORY", d);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains(&tls.password), "the secret printed: {text}");
        (out.status.success(), text)
    };
    let (ok, text) = validate(0o600, Some(&credentials));
    assert!(ok, "{text}");
    assert!(!text.contains("any user can read it"), "{text}");
    let (ok, text) = validate(0o644, Some(&credentials));
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "{} holds a secret and any user can read it (mode 644)",
            secret.display()
        )),
        "{text}"
    );
    // Without the directory, the relative path is read where it stands: not there.
    let (ok, text) = validate(0o600, None);
    assert!(!ok, "{text}");
    assert!(
        text.contains("kafka.sasl_password_file: cannot read kafka-password"),
        "{text}"
    );
}

/// A receiver that answers every request with `status`, counting them.
fn receiver(status: u16) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&hits);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            if read_http_request(&stream).is_some() {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        }
    });
    (addr, hits)
}

#[test]
fn secrets_appear_in_no_log_readiness_metric_or_dead_letter() {
    // The broker's password (SASL_SSL), a webhook's HMAC secret and a token in its
    // URL's query and path: the webhook refuses every request for good (400), so its
    // records become dead letters with the error, and a second webhook fails (503), so
    // /readyz names its error. Segment (its write key; it sends feature events, not
    // summaries), S3 (its keys; the endpoint answers 403) and PostgreSQL (a password
    // in its URL; nothing listens) fail too, each with its secrets. None of the
    // secrets may show anywhere.
    let tls = tls_broker();
    let (t, _tally) = setup(500);
    let dir = temp_dir("tls-leaks");
    let (refusing, refused) = receiver(400);
    let (failing, failed) = receiver(503);
    let token = "tok9SECRETtok9SECRETtok9";
    let hmac = "hmac-SECRET-value";
    let keys = sasl_keys(tls, &tls.password, &tls.dir.join("ca.pem"));
    let mut cfg = config(&t, &tls.sasl_ssl, &keys, &dir, "");
    for (name, addr) in [("refusing", &refusing), ("failing", &failing)] {
        cfg.push_str(&format!(
            "\n[[sinks]]\nname = \"{name}\"\ntype = \"webhook\"\ntopics = [\"{summary}\"]\nurl = \"http://user:{hmac}@{addr}/hooks/{token}?token={token}\"\nsecret = \"{hmac}\"\nbatch_timeout = \"200ms\"\nretry_initial = \"100ms\"\nretry_max = \"200ms\"\ndead_letter_topic = \"{dlq}\"\n",
            summary = t.summary,
            dlq = t.dead_letter,
        ));
    }
    let (forbidding, forbidden) = receiver(403);
    let (write_key, s3_id, s3_key, pg_password) = (
        "seg-SECRET-write-key",
        "AKIDSECRETKEYID",
        "s3-SECRET-access-key",
        "pg-SECRET-password",
    );
    cfg.push_str(&format!(
        "\n[[sinks]]\nname = \"segment\"\ntype = \"segment\"\ntopics = [\"{feature}\"]\nurl = \"http://{failing}/v1/batch\"\nwrite_key = \"{write_key}\"\nbatch_timeout = \"200ms\"\nretry_initial = \"100ms\"\nretry_max = \"200ms\"\n\
         \n[[sinks]]\nname = \"bucket\"\ntype = \"s3\"\ntopics = [\"{summary}\"]\nbucket = \"b\"\nendpoint = \"http://{forbidding}\"\npath_style = true\naccess_key_id = \"{s3_id}\"\nsecret_access_key = \"{s3_key}\"\nbatch_timeout = \"200ms\"\nretry_initial = \"100ms\"\nretry_max = \"200ms\"\n\
         \n[[sinks]]\nname = \"warehouse\"\ntype = \"postgres\"\ntopics = [\"{summary}\"]\nurl = \"postgresql://flagtally:{pg_password}@127.0.0.1:{closed}/db?sslmode=disable\"\nbatch_timeout = \"200ms\"\nretry_initial = \"100ms\"\nretry_max = \"200ms\"\n",
        summary = t.summary,
        feature = t.feature,
        closed = free_port(),
    ));
    let admin = format!("127.0.0.1:{}", free_port());
    let d = Flagtally::start_with_env(
        &cfg,
        &unique("tls-leaks"),
        &[
            ("FLAGTALLY__ADMIN__LISTEN", admin.as_str()),
            ("RUST_LOG", "debug,rdkafka=info,librdkafka=info"),
        ],
    );
    let letters = read_until(broker(), &t.dead_letter, Duration::from_secs(90), |r| {
        r.header("flagtally-error-reason") == Some("sink_rejected")
    });
    let mut readyz = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            readyz = http_get(&admin, "/readyz")
                .map(|(_, b)| b)
                .unwrap_or_default();
            ["failing", "segment", "bucket", "warehouse"]
                .iter()
                .all(|name| readyz.contains(name))
        }),
        "{readyz}\n{}",
        d.log_text()
    );
    let metrics = http_get(&admin, "/metrics").unwrap().1;
    assert!(refused.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(failed.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(forbidden.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let log = d.log_text();
    assert!(d.stop(Duration::from_secs(30)).success());
    let letters_text: String = letters
        .iter()
        .flat_map(|r| {
            r.headers
                .values()
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(letters_text.contains("HTTP 400"), "{letters_text}");
    for (place, text) in [
        ("the log", &log),
        ("/readyz", &readyz),
        ("/metrics", &metrics),
        ("the dead letters", &letters_text),
    ] {
        for secret in [
            tls.password.as_str(),
            token,
            hmac,
            write_key,
            s3_id,
            s3_key,
            pg_password,
        ] {
            assert!(!text.contains(secret), "{place} shows {secret:?}:\n{text}");
        }
    }
}
