//! The daemon as operators run it: `validate`, `quickstart`, `gen`, systemd's notify
//! protocol, SIGHUP reloads and the admin endpoints. Every test runs the real binary;
//! the broker is the test Apache Kafka (quickstart runs its own in-process mock cluster).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use flagtally::decode::{Decoded, Decoder, Dialect, Limits};
use flagtally::event::Event;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flagtally"))
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir()
        .join("flagtally-tests")
        .join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn quickstart_counts_match_the_generators_tally() {
    let out = temp("quickstart");
    let run = bin()
        .args([
            "quickstart",
            "--count",
            "3000",
            "--rate",
            "0",
            "--plain",
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    // The printed totals: counted == generated, dead letters == malformed.
    let numbers = |prefix: &str| -> (u64, u64) {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in\n{stdout}"));
        let n: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        (n[0], n[1])
    };
    let (counted, generated) = numbers("evaluations: counted");
    assert_eq!(counted, generated, "{stdout}");
    let (dead, malformed) = numbers("dead letters:");
    assert_eq!(dead, malformed, "{stdout}");
    assert!(malformed > 0 && generated + malformed == 3000, "{stdout}");
    assert!(stdout.contains("result: exact"), "{stdout}");
    // Every flag row of the final table is checked against the tally.
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("flag-")).collect();
    assert_eq!(rows.len(), 8, "{stdout}");
    assert!(rows.iter().all(|r| r.ends_with("  ok")), "{stdout}");
    // The files hold what the table says.
    let lines = |f: &str| {
        std::fs::read_to_string(out.join(f))
            .unwrap()
            .lines()
            .count() as u64
    };
    assert_eq!(lines("dead-letters.ndjson"), malformed);
    let mut tally = flagtally::generate::Tally::default();
    for line in std::fs::read_to_string(out.join("summaries.ndjson"))
        .unwrap()
        .lines()
    {
        tally.add_summary_json(line).unwrap();
    }
    assert_eq!(tally.evaluations(), counted);
    assert!(lines("features.ndjson") > 0 && lines("index.ndjson") > 0);
}

#[test]
fn validate_exit_codes_and_messages() {
    let dir = temp("validate");
    let good = dir.join("good.toml");
    std::fs::write(&good, include_str!("../config/flagtally.toml")).unwrap();
    let run = bin()
        .args(["validate", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&run.stdout).contains("valid"));

    // Every problem, with its path, in one run.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[kafka]\ninput_topics = []\n[window]\nsize = \"soon\"\ncolour = \"red\"\n",
    )
    .unwrap();
    let run = bin()
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    for needle in [
        "problems",
        "window.size: \"soon\"",
        "window.colour: unknown field",
    ] {
        assert!(err.contains(needle), "{needle} missing from {err}");
    }

    // An environment override is checked like the file, and wins over it.
    let run = bin()
        .args(["validate", "--config"])
        .arg(&good)
        .env("FLAGTALLY__PROCESSING__COMMIT_INTERVAL", "0s")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("processing.commit_interval"), "{err}");

    // YAML, and a file that is not there.
    let yaml = dir.join("flagtally.yaml");
    std::fs::write(
        &yaml,
        "kafka: {input_topics: [in]}\noutput: {dead_letter_topic: dlq, topics: {summary: s}}\n",
    )
    .unwrap();
    let run = bin()
        .args(["validate", "--config"])
        .arg(&yaml)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    let run = bin()
        .args(["validate", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("cannot read"));
}

/// Reads notify datagrams until one holds `want` (each datagram may hold several
/// lines); returns everything read.
fn notified(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = text.lines().any(|l| l == want);
            seen.push(text);
            if found {
                return;
            }
        }
    }
    panic!("no {want} within 30 s; got {seen:?}");
}

#[test]
fn systemd_notify_ready_watchdog_reloading_stopping() {
    let broker = broker().to_owned();
    let t = Topics::create(&broker, 2);
    let dir = temp("notify");
    let socket = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let name = unique("notify");
    let socket_text = socket.to_string_lossy().into_owned();
    let mut d = Flagtally::start_with_env(
        &t.config(&broker, "size = \"10s\""),
        &name,
        &[
            ("FLAGTALLY__ADMIN__LISTEN", "off"),
            ("NOTIFY_SOCKET", socket_text.as_str()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut seen = Vec::new();
    notified(&sock, "READY=1", &mut seen);
    notified(&sock, "WATCHDOG=1", &mut seen);
    notified(&sock, "WATCHDOG=1", &mut seen);
    d.signal("HUP");
    notified(&sock, "RELOADING=1", &mut seen);
    assert!(seen.last().unwrap().contains("MONOTONIC_USEC="), "{seen:?}");
    notified(&sock, "READY=1", &mut seen);
    d.signal("TERM");
    notified(&sock, "STOPPING=1", &mut seen);
    let status = d.wait(Duration::from_secs(20)).expect("exit after SIGTERM");
    assert!(status.success(), "{}", d.log_text());
}

#[test]
fn reload_applies_a_valid_change_and_keeps_running_on_an_invalid_one() {
    let broker = broker().to_owned();
    let t = Topics::create(&broker, 2);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let name = unique("reload");
    let base = t.config(&broker, "size = \"10s\"");
    let d = Flagtally::start_with_env(&base, &name, &[("FLAGTALLY__ADMIN__LISTEN", &addr)]);
    let metric = |needle: &str| {
        http_get(&addr, "/metrics")
            .is_some_and(|(status, body)| status == 200 && body.contains(needle))
    };
    assert!(
        eventually(Duration::from_secs(30), || http_get(&addr, "/readyz")
            .is_some_and(|(s, _)| s == 200)),
        "never ready: {}",
        d.log_text()
    );
    let path = Flagtally::config_path(&name);

    // Live: the log level and the full-fidelity rules.
    std::fs::write(
        &path,
        format!(
            "{base}\n[log]\nlevel = \"debug\"\n[full_events]\noverrides = [\"beta-*=always\"]\n"
        ),
    )
    .unwrap();
    d.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || metric(
            "flagtally_config_reloads_total{result=\"applied\"} 1"
        )),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("reload applied"));
    // The new level shows: with traffic, the commit cycles' debug lines appear.
    let mut g = flagtally::generate::Generator::new(flagtally::generate::GenConfig::default());
    let records: Vec<Vec<u8>> = (0..100).map(|_| g.next_record()).collect();
    produce(&broker, &t.input, 2, &records);
    assert!(
        eventually(Duration::from_secs(10), || d.log_text().contains("DEBUG")),
        "{}",
        d.log_text()
    );

    // Invalid: rejected, the process keeps running with the old configuration.
    std::fs::write(
        &path,
        format!("{base}\n[log]\nlevel = \"debug\"\n[window2]\n"),
    )
    .unwrap();
    d.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || metric(
            "flagtally_config_reloads_total{result=\"rejected\"} 1"
        )),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("reload rejected"));
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);

    // A change that needs a restart is reported as such.
    std::fs::write(&path, base.replace("size = \"10s\"", "size = \"20s\"")).unwrap();
    d.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || metric(
            "flagtally_config_reloads_total{result=\"restart-needed\"} 1"
        )),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("need a restart"));
    assert!(d.stop(Duration::from_secs(20)).success());
}

#[test]
fn gen_prints_the_tally_a_reader_finds_in_the_topic() {
    let broker = broker().to_owned();
    let t = Topics::create(&broker, 2);
    let run = bin()
        .args(["gen", "--brokers", &broker, "--topic", &t.input])
        .args([
            "--count",
            "2000",
            "--dialect",
            "mixed",
            "--malformed-one-in",
            "40",
        ])
        .args([
            "--flags",
            "6",
            "--skew-ms",
            "500",
            "--rate",
            "20000",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let tally: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();

    let mut n = 0;
    let recs = read_until(&broker, &t.input, Duration::from_secs(30), |_| {
        n += 1;
        n == 2000
    });
    assert_eq!(recs.len(), 2000);
    let decoder = Decoder::new(Dialect::Auto, Limits::default());
    let mut per_flag: BTreeMap<String, u64> = BTreeMap::new();
    let mut malformed = 0;
    for r in &recs {
        let mut d = Decoded::default();
        decoder.decode(&r.value, &mut d);
        if !d.errors.is_empty() {
            malformed += 1;
        }
        for e in d.events {
            if let Event::Evaluation(e) = e {
                *per_flag.entry(e.flag_key.to_string()).or_default() += 1;
            }
        }
    }
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for c in tally["counters"].as_array().unwrap() {
        *expected
            .entry(c["flag"].as_str().unwrap().to_owned())
            .or_default() += c["count"].as_u64().unwrap();
    }
    assert_eq!(tally["records"], 2000);
    assert_eq!(tally["malformed"].as_u64().unwrap(), malformed);
    assert!(malformed > 0);
    assert_eq!(per_flag, expected);
    assert_eq!(
        tally["evaluations"].as_u64().unwrap(),
        per_flag.values().sum::<u64>()
    );
}
