//! `flagtally summarize` end to end: the real binary over a generated file with a known
//! tally.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Write as _;
use std::process::Command;

use flagtally::generate::{GenConfig, GenDialect, Generator, Tally};

fn run(args: &[&str], input: &[u8]) -> (String, String, bool) {
    let dir = std::env::temp_dir().join(format!("flagtally-summarize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!(
        "in-{}.ndjson",
        args.join("_").replace(['/', ' '], "")
    ));
    std::fs::File::create(&file)
        .unwrap()
        .write_all(input)
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flagtally"))
        .arg("summarize")
        .args(args)
        .arg(&file)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.success(),
    )
}

fn generate(cfg: GenConfig, n: usize) -> (Vec<u8>, Tally) {
    let mut g = Generator::new(cfg);
    let mut buf = Vec::new();
    for _ in 0..n {
        buf.extend_from_slice(&g.next_record());
        buf.push(b'\n');
    }
    (buf, g.into_tally())
}

fn summary_tally(stdout: &str) -> Tally {
    let mut t = Tally::default();
    for line in stdout.lines() {
        t.add_summary_json(line).unwrap();
    }
    t
}

#[test]
fn summaries_match_the_generated_tally() {
    let (input, tally) = generate(
        GenConfig {
            dialect: GenDialect::Launchdarkly,
            step_ms: 7,
            skew_ms: 5_000,
            ..GenConfig::default()
        },
        30_000,
    );
    let (stdout, stderr, ok) = run(
        &[
            "--dialect",
            "launchdarkly",
            "--window",
            "1m",
            "--lateness",
            "10s",
        ],
        &input,
    );
    assert!(ok, "{stderr}");
    let got = summary_tally(&stdout);
    assert_eq!(got.counters, tally.counters);
    assert_eq!(got.evaluations(), 30_000);
    let features = stdout
        .lines()
        .filter(|l| l.starts_with(r#"{"kind":"feature""#))
        .count() as u64;
    assert_eq!(features, tally.tracked);
    assert!(
        stderr.contains("30000 records, 30000 events, 0 dead letters"),
        "{stderr}"
    );
    // Same input, same bytes.
    let (again, _, _) = run(
        &[
            "--dialect",
            "launchdarkly",
            "--window",
            "1m",
            "--lateness",
            "10s",
        ],
        &input,
    );
    assert_eq!(stdout, again);
}

#[test]
fn mixed_dialects_with_malformed_records_under_auto() {
    let (input, tally) = generate(
        GenConfig {
            dialect: GenDialect::Mixed,
            malformed_one_in: 50,
            ..GenConfig::default()
        },
        6_000,
    );
    let (stdout, stderr, ok) = run(&["--window", "10s"], &input);
    assert!(ok, "{stderr}");
    assert_eq!(summary_tally(&stdout).counters, tally.counters);
    let dead = stderr
        .lines()
        .filter(|l| l.starts_with(r#"{"deadLetter""#))
        .count() as u64;
    assert_eq!(dead, tally.malformed);
    assert!(tally.malformed > 0);
}

#[test]
fn late_policy_dead_letter_reports_late_events_on_stderr() {
    let input = br#"{"kind":"feature","creationDate":120000,"key":"f","version":1,"userKey":"u","variation":0,"value":1,"trackEvents":false}
{"kind":"feature","creationDate":1000,"key":"f","version":1,"userKey":"u","variation":0,"value":1,"trackEvents":false}
"#;
    let (stdout, stderr, ok) = run(
        &["--lateness", "0s", "--late-policy", "dead-letter", "-"],
        b"",
    );
    assert!(ok, "{stderr}");
    assert!(stdout.is_empty());
    let (stdout, stderr, ok) = run(
        &["--late-policy", "dead-letter", "--lateness", "1ms"],
        input,
    );
    assert!(ok, "{stderr}");
    assert_eq!(summary_tally(&stdout).evaluations(), 1);
    assert!(stderr.contains(r#""type":"evaluation""#), "{stderr}");
    assert!(stderr.contains("1 late"), "{stderr}");
}

#[test]
fn per_flag_overrides_turn_full_events_off_and_on() {
    let (input, tally) = generate(
        GenConfig {
            dialect: GenDialect::Launchdarkly,
            flags: 4,
            ..GenConfig::default()
        },
        2_000,
    );
    let features = |stdout: &str, flag: &str| {
        stdout
            .lines()
            .filter(|l| l.starts_with(r#"{"kind":"feature""#))
            .filter(|l| l.contains(&format!(r#""key":"{flag}""#)))
            .count()
    };
    let (stdout, stderr, ok) = run(
        &[
            "--full-events",
            "flag-0=never",
            "--full-events",
            "flag-[12]=always",
        ],
        &input,
    );
    assert!(ok, "{stderr}");
    assert_eq!(features(&stdout, "flag-0"), 0);
    let evaluations = |flag: &str| -> u64 {
        tally
            .counters
            .iter()
            .filter(|((f, _, _), _)| f == flag)
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(features(&stdout, "flag-1") as u64, evaluations("flag-1"));
    assert_eq!(features(&stdout, "flag-2") as u64, evaluations("flag-2"));
    // Summaries are never affected by full-event overrides.
    assert_eq!(summary_tally(&stdout).counters, tally.counters);
    let (_, stderr, ok) = run(&["--full-events", "flag-0=sometimes"], &input);
    assert!(
        !ok && stderr.contains("is not always, never or producer"),
        "{stderr}"
    );
}

#[test]
fn native_avro_records_are_read_as_base64_lines() {
    use base64::Engine as _;
    use flagtally::decode::{Decoded, Decoder, Dialect, Limits};
    // Native JSON → canonical events → native Avro, one base64 line each.
    let (json, tally) = generate(
        GenConfig {
            dialect: GenDialect::Native,
            ..GenConfig::default()
        },
        500,
    );
    let decoder = Decoder::new(Dialect::Native, Limits::default());
    let mut lines = String::new();
    for line in std::str::from_utf8(&json).unwrap().lines() {
        let mut d = Decoded::default();
        decoder.decode(line.as_bytes(), &mut d);
        for ev in &d.events {
            let avro = flagtally::avro::encode_event(ev);
            lines.push_str(&base64::engine::general_purpose::STANDARD.encode(avro));
            lines.push('\n');
        }
    }
    lines.push_str("not base64!\n");
    let (stdout, stderr, ok) = run(&["--dialect", "native-avro"], lines.as_bytes());
    assert!(ok, "{stderr}");
    assert_eq!(summary_tally(&stdout).counters, tally.counters);
    assert!(stderr.contains("not a base64 line"), "{stderr}");
}
