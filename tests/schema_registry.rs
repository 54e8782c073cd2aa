//! The Schema Registry (Apicurio Registry's Confluent-compatible API, started by
//! `scripts/infra.sh registry`): Avro outputs in the Confluent wire format, read back
//! by confluent-kafka's `AvroDeserializer`; `native-avro` input written by
//! confluent-kafka's `AvroSerializer` with two writer schemas, resolved by id; an
//! unknown id and a registry that does not answer, each dead-lettered with its reason;
//! and every schema in `schemas/` checked for BACKWARD compatibility with its released
//! version (`schemas/released/`), so a breaking change fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use flagtally::registry::{Client, RegistryConfig};

/// The test registry's `FLAGTALLY_TEST_REGISTRY*` variables: from the environment
/// when `FLAGTALLY_TEST_REGISTRY` is set, else from the one `scripts/infra.sh registry`
/// starts (or finds running) under `FLAGTALLY_TEST_REGISTRY_NAME` (default `test`):
/// only the tests that need it start it.
fn registry_vars() -> &'static BTreeMap<String, String> {
    static VARS: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    VARS.get_or_init(|| {
        if std::env::var("FLAGTALLY_TEST_REGISTRY").is_ok() {
            return std::env::vars()
                .filter(|(k, _)| k.starts_with("FLAGTALLY_TEST_REGISTRY"))
                .collect();
        }
        let name =
            std::env::var("FLAGTALLY_TEST_REGISTRY_NAME").unwrap_or_else(|_| "test".to_owned());
        let out = std::process::Command::new("bash")
            .arg(repo().join("scripts/infra.sh"))
            .args(["registry", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

/// The test registry's Confluent-compatible API over HTTP.
fn registry() -> &'static str {
    registry_vars()
        .get("FLAGTALLY_TEST_REGISTRY")
        .expect("infra.sh registry prints the URL")
}

fn client(url: &str) -> Client {
    let config: RegistryConfig = toml::from_str(&format!("url = \"{url}\"")).unwrap();
    Client::new(&config).unwrap()
}

/// Runs `tests/python/registry_avro.py` with `args`, killed after 3 minutes at most.
fn python_step(args: &[&str]) -> String {
    let mut child = std::process::Command::new(python())
        .arg(repo().join("tests/python/registry_avro.py"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "registry_avro.py {}: {text}\n{}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// One worker over `t`, Avro outputs framed for the registry at `url`, `dialect` input.
fn config(t: &Topics, url: &str, dialect: &str) -> String {
    t.config_with_threads(broker(), "size = \"1h\"\nidle_timeout = \"1s\"", 1)
        .replace("[output]\n", "[output]\nformat = \"avro\"\n")
        + &format!(
            "\n[input]\ndialect = \"{dialect}\"\n\n[output.schema_registry]\nurl = \"{url}\"\n"
        )
}

/// confluent-kafka's serializer writes the input with two writer schemas (event.avsc
/// itself, and another team's); flagtally resolves both by id, counts every
/// evaluation once, dead-letters an id the registry does not know, and writes Avro
/// outputs that confluent-kafka's deserializer reads back with the same counts.
#[test]
fn registry_framed_avro_in_and_out_with_independent_clients() {
    let url = registry();
    let broker = broker();
    let t = Topics::create(broker, 2);
    let produced = python_step(&[
        "produce",
        broker,
        url,
        &t.input,
        "300",
        "5",
        repo().join("schemas/event.avsc").to_str().unwrap(),
    ]);
    let produced: serde_json::Value = serde_json::from_str(produced.trim()).unwrap();
    let per_flag: BTreeMap<String, u64> =
        serde_json::from_value(produced["per_flag"].clone()).unwrap();
    let tracked = produced["tracked"].as_u64().unwrap();
    let evaluations: u64 = per_flag.values().sum();
    assert_eq!(evaluations, 600);
    // An id no registry holds.
    let mut unknown = vec![0x00, 0x7f, 0xff, 0xff, 0x01];
    unknown.extend_from_slice(&[2, 0]);
    produce(broker, &t.input, 2, &[unknown]);

    let mut ft = Flagtally::start(&config(&t, url, "native-avro"), &unique("registry-io"));
    let read = python_step(&[
        "read",
        broker,
        url,
        &t.summary,
        &t.feature,
        &evaluations.to_string(),
        &tracked.to_string(),
    ]);
    assert!(read.starts_with("ok"), "{read}");
    let read_per_flag: BTreeMap<String, u64> =
        serde_json::from_str(read.lines().nth(1).unwrap()).unwrap();
    assert_eq!(read_per_flag, per_flag);

    let letters = read_until(broker, &t.dead_letter, Duration::from_secs(60), |_| true);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0].header("flagtally-error-reason"),
        Some("unknown_schema")
    );
    let detail = letters[0].header("flagtally-error").unwrap_or_default();
    assert!(detail.contains("schema id 2147483393"), "{detail}");

    // The ids the outputs carry are the registry's, under the topic-name subjects.
    let summary_id = client(url)
        .latest(&format!("{}-value", t.summary))
        .unwrap()
        .0;
    let first = read_until(broker, &t.summary, Duration::from_secs(30), |_| true);
    assert_eq!(first[0].value[0], 0x00);
    assert_eq!(first[0].value[1..5], summary_id.to_be_bytes());
    assert!(ft.wait(Duration::ZERO).is_none(), "{}", ft.log_text());
    assert!(ft.stop(Duration::from_secs(30)).success());
}

/// The outputs' subjects follow `subject_naming`, and `auto_register = false` takes
/// each subject's latest version: refused, naming the subject, while it has none;
/// the registered ids once it has.
#[test]
fn subjects_follow_the_naming_and_latest_versions_serve_without_registering() {
    use flagtally::emit::OutputKind::{Feature, Summary};
    use flagtally::registry::outputs::output_ids;
    let url = registry();
    let stem = unique("subjects");
    let topics: flagtally::emit::Topics = toml::from_str(&format!(
        "summary = \"{stem}-sums\"\nfeature = \"{stem}-events\""
    ))
    .unwrap();
    let settings = |naming: &str, auto: bool| -> RegistryConfig {
        toml::from_str(&format!(
            "url = \"{url}\"\nsubject_naming = \"{naming}\"\nauto_register = {auto}"
        ))
        .unwrap()
    };
    let ids = |naming: &str, auto: bool| {
        let config = settings(naming, auto);
        output_ids(&Client::new(&config).unwrap(), &config, &topics)
    };
    let latest = |subject: &str| client(url).latest(subject).unwrap().0;

    let refused = ids("topic", false).unwrap_err().to_string();
    assert!(
        refused.contains(&format!(
            "subject {stem}-sums-value (the summary output) has no version"
        )),
        "{refused}"
    );
    let registered = ids("topic", true).unwrap();
    assert_eq!(
        registered.get(Summary),
        Some(latest(&format!("{stem}-sums-value")))
    );
    assert_eq!(
        registered.get(Feature),
        Some(latest(&format!("{stem}-events-value")))
    );
    let found = ids("topic", false).unwrap();
    assert_eq!(
        (found.get(Summary), found.get(Feature)),
        (registered.get(Summary), registered.get(Feature))
    );

    let by_topic_record = ids("topic-record", true).unwrap();
    assert_eq!(
        by_topic_record.get(Summary),
        Some(latest(&format!("{stem}-sums-flagtally.output.Summary")))
    );
    assert_eq!(
        by_topic_record.get(Feature),
        Some(latest(&format!("{stem}-events-flagtally.output.Feature")))
    );
    let by_record = ids("record", true).unwrap();
    assert_eq!(
        by_record.get(Summary),
        Some(latest("flagtally.output.Summary"))
    );
    let found = ids("record", false).unwrap();
    assert_eq!(found.get(Feature), Some(latest("flagtally.output.Feature")));
}

/// An https registry: verified against `tls_ca_file` (its CA, which no system store
/// holds); another CA, or none, is refused for the certificate.
#[test]
fn an_https_registry_is_verified_against_its_ca() {
    let vars = registry_vars();
    let url = vars
        .get("FLAGTALLY_TEST_REGISTRY_TLS")
        .expect("infra.sh registry serves HTTPS too (FLAGTALLY_TEST_REGISTRY_TLS)");
    let dir = std::path::Path::new(&vars["FLAGTALLY_TEST_REGISTRY_TLS_DIR"]);
    let client = |ca: Option<&str>| {
        let ca = ca.map_or_else(String::new, |f| {
            format!("tls_ca_file = \"{}\"\n", dir.join(f).display())
        });
        let config: RegistryConfig = toml::from_str(&format!("url = \"{url}\"\n{ca}")).unwrap();
        Client::new(&config).unwrap()
    };
    let subject = format!("{}-value", unique("https"));
    let schema = std::fs::read_to_string(repo().join("schemas/summary.avsc")).unwrap();
    let id = client(Some("ca.pem")).register(&subject, &schema).unwrap();
    assert_eq!(client(Some("ca.pem")).latest(&subject).unwrap().0, id);
    for ca in [Some("other-ca.pem"), None] {
        let e = client(ca).latest(&subject).unwrap_err().to_string();
        assert!(
            e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
            "{ca:?}: {e}"
        );
        assert!(e.contains("127.0.0.1"), "the error names the registry: {e}");
    }
}

/// A registry that does not answer: Confluent-framed input is dead-lettered as
/// `registry_unavailable` (never a silent stall), and Avro outputs wait at start with
/// `/readyz` naming the registry.
#[test]
fn an_unreachable_registry_is_named_never_a_silent_stall() {
    let broker = broker();
    let t = Topics::create(broker, 1);
    let closed = format!("http://127.0.0.1:{}/apis/ccompat/v7", free_port());
    let mut framed = vec![0x00, 0, 0, 0, 7];
    framed.extend_from_slice(&[2, 0]);
    produce(broker, &t.input, 1, &[framed.clone(), framed]);
    let json_out = config(&t, &closed, "native-avro").replace("format = \"avro\"\n", "");
    let admin_in = format!("127.0.0.1:{}", free_port());
    let ft = Flagtally::start_with_env(
        &json_out,
        &unique("registry-down-in"),
        &[("FLAGTALLY__ADMIN__LISTEN", admin_in.as_str())],
    );
    let letters = read_until(broker, &t.dead_letter, Duration::from_secs(60), {
        let mut n = 0;
        move |_| {
            n += 1;
            n == 2
        }
    });
    assert_eq!(letters.len(), 2, "{}", ft.log_text());
    for l in &letters {
        assert_eq!(
            l.header("flagtally-error-reason"),
            Some("registry_unavailable")
        );
    }
    // And counted, by reason.
    let metrics = http_get(&admin_in, "/metrics").unwrap().1;
    assert!(
        metrics.contains(
            "flagtally_decode_errors_total{dialect=\"native-avro\",reason=\"registry_unavailable\"} 2"
        ),
        "{metrics}"
    );
    assert!(ft.stop(Duration::from_secs(30)).success());

    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let ft = Flagtally::start_with_env(
        &config(&t, &closed, "native-avro"),
        &unique("registry-down-out"),
        &[("FLAGTALLY__ADMIN__LISTEN", admin.as_str())],
    );
    let mut last = String::new();
    let named = eventually(Duration::from_secs(30), || {
        last = http_get(&admin, "/readyz")
            .map(|(_, b)| b)
            .unwrap_or_default();
        last.contains("schema registry") && last.contains("127.0.0.1")
    });
    assert!(named, "/readyz: {last}\n{}", ft.log_text());
    let status = ft.stop(Duration::from_secs(30));
    assert!(
        !status.success(),
        "stopped before it could start: not a clean exit"
    );
}

/// Each schema in `schemas/` may follow its released version under BACKWARD
/// compatibility (readers of the new schema read what the released one wrote); and
/// the check bites: a field added without a default is refused.
#[test]
fn every_schema_is_backward_compatible_with_its_release() {
    let client = client(registry());
    let released = repo().join("schemas/released");
    let mut checked = 0;
    for entry in std::fs::read_dir(&released).unwrap() {
        let old = entry.unwrap().path();
        let name = old.file_name().unwrap().to_str().unwrap().to_owned();
        let current = std::fs::read_to_string(repo().join("schemas").join(&name))
            .unwrap_or_else(|e| panic!("schemas/{name} was released and is gone: {e}"));
        let subject = unique(&format!("compat-{}", name.trim_end_matches(".avsc")));
        client.set_compatibility(&subject, "BACKWARD").unwrap();
        client
            .register(&subject, &std::fs::read_to_string(&old).unwrap())
            .unwrap();
        assert!(
            client.compatible(&subject, &current).unwrap(),
            "schemas/{name} is not BACKWARD compatible with its released version \
             (schemas/released/{name}): readers of it cannot read what the release wrote"
        );
        // The same check refuses a breaking change.
        let mut broken: serde_json::Value = serde_json::from_str(&current).unwrap();
        broken["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "addedWithoutDefault", "type": "string"}));
        assert!(
            !client.compatible(&subject, &broken.to_string()).unwrap(),
            "the registry accepted a field added without a default to {name}"
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} released schemas");
}

/// Basic authentication and a bearer token reach the registry in the `Authorization`
/// header, and a refusal's error names the request without the credentials.
#[test]
fn credentials_go_in_the_authorization_header_only() {
    for (keys, expected) in [
        (
            "username = \"team\"\npassword = \"pw-sekrit\"",
            "Basic dGVhbTpwdy1zZWtyaXQ=",
        ),
        ("bearer_token = \"tok-sekrit\"", "Bearer tok-sekrit"),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in [
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"id\":42}",
                "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 40\r\n\r\n{\"error_code\":401,\"message\":\"who are u\"}",
            ] {
                let (mut stream, _) = listener.accept().unwrap();
                seen.push(read_http_request(&stream).unwrap());
                std::io::Write::write_all(&mut stream, answer.as_bytes()).unwrap();
                // Drained before closing (an unread request body would reset it).
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let _ = std::io::Read::read_to_end(&mut stream, &mut Vec::new());
            }
            seen
        });
        let config: RegistryConfig =
            toml::from_str(&format!("url = \"http://{addr}/ccompat\"\n{keys}")).unwrap();
        let client = Client::new(&config).unwrap();
        assert_eq!(client.register("sums-value", "\"string\"").unwrap(), 42);
        let refused = client
            .register("sums-value", "\"string\"")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("HTTP 401") && refused.contains("who are u"),
            "{refused}"
        );
        assert!(!refused.contains("sekrit"), "{refused}");
        let seen = server.join().unwrap();
        assert!(
            seen[0]
                .line
                .starts_with("POST /ccompat/subjects/sums-value/versions")
        );
        assert_eq!(seen[0].headers["authorization"], expected);
    }
}
