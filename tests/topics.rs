//! Topics as an operator meets them, on Apache Kafka (whose test broker, like most
//! production clusters, does not create topics on demand): `run` and `/readyz` name
//! the missing topics, `topics check` lists them, `topics create` makes them
//! (idempotent; `--dry-run` makes nothing), `validate --broker` reports them, and `gen`
//! fails at once naming the option that creates its topic (or creates it when asked);
//! and the README's daemon steps work as written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn flagtally(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagtally"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn missing_topics_are_named_and_created_from_the_configuration() {
    let broker = broker();
    let t = Topics::named();
    let config = t.config_with_threads(broker, "size = \"10s\"\nidle_timeout = \"2s\"", 1);
    let path = Flagtally::config_path(&t.group);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &config).unwrap();
    let path_s = path.to_str().unwrap();

    // `run` first, as the README has it: it names what is missing.
    let admin = format!("127.0.0.1:{}", free_port());
    let f = Flagtally::start_with_env(
        &config,
        &t.group,
        &[("FLAGTALLY__ADMIN__LISTEN", admin.as_str())],
    );
    assert!(
        eventually(Duration::from_secs(30), || http_get(&admin, "/readyz")
            .is_some_and(|(s, body)| s == 503
                && body.contains("missing topics")
                && body.contains(&format!("{} (input)", t.input))
                && body.contains("flagtally topics create --config"))),
        "{:?}\n{}",
        http_get(&admin, "/readyz"),
        f.log_text()
    );
    assert!(f.log_text().contains("missing topics"));

    // `gen` without --partitions: fails at once, naming the option.
    let started = Instant::now();
    let generated = flagtally(&[
        "gen",
        "--brokers",
        broker,
        "--topic",
        &t.input,
        "--count",
        "500",
    ]);
    assert!(!generated.status.success());
    assert!(
        text(&generated).contains("--partitions"),
        "{}",
        text(&generated)
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // `topics check`: every topic listed, the missing ones named; exit 1.
    let check = flagtally(&["topics", "check", "--config", path_s]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    for name in [&t.input, &t.summary, &t.dead_letter] {
        assert!(
            text(&check).contains(&format!("MISSING {name}")),
            "{}",
            text(&check)
        );
    }
    let validate = flagtally(&["validate", "--broker", "--config", path_s]);
    assert_eq!(validate.status.code(), Some(1), "{}", text(&validate));
    assert!(text(&validate).contains(&t.summary));

    // A dry run creates nothing; the real run creates everything; again, nothing.
    let dry = flagtally(&["topics", "create", "--dry-run", "--config", path_s]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains(&format!("would create {} (input): 6 partitions", t.input)));
    assert_eq!(
        flagtally(&["topics", "check", "--config", path_s])
            .status
            .code(),
        Some(1)
    );
    let create = flagtally(&["topics", "create", "--partitions", "2", "--config", path_s]);
    assert!(create.status.success(), "{}", text(&create));
    assert!(text(&create).contains(&format!(
        "created      {} (summary): 2 partitions",
        t.summary
    )));
    let checkpoints = format!("{}-checkpoints", t.group);
    assert_eq!(
        topic_config(broker, &checkpoints, "cleanup.policy").as_deref(),
        Some("compact")
    );
    assert_eq!(
        topic_config(broker, &t.summary, "retention.ms").as_deref(),
        Some("604800000")
    );
    let again = flagtally(&["topics", "create", "--config", path_s]);
    assert!(again.status.success());
    assert!(!text(&again).contains("created "), "{}", text(&again));
    assert!(
        flagtally(&["topics", "check", "--config", path_s])
            .status
            .success()
    );
    assert!(
        flagtally(&["validate", "--broker", "--config", path_s])
            .status
            .success()
    );

    // Once the topics exist, the waiting daemon reads: ready (the README's steps, run
    // as written, are the test below).
    assert!(
        eventually(Duration::from_secs(60), || http_get(&admin, "/readyz")
            .is_some_and(|(s, _)| s == 200)),
        "{:?}\n{}",
        http_get(&admin, "/readyz"),
        f.log_text()
    );
    assert!(f.stop(Duration::from_secs(30)).success());
}

/// The README's "Running the daemon" block, run as written against the shipped
/// `config/flagtally.toml`: `validate`, `topics create`, `run`, then `gen`, whose
/// evaluations the daemon's summaries count exactly. Only what a test must change is
/// changed: the broker's address, unique topic and group names, and shorter windows
/// (all through the environment overlay, as an operator overrides a shipped file),
/// and a smaller `--count`.
#[test]
fn the_readmes_daemon_steps_work_as_written() {
    let broker = broker();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("## Running the daemon")
        .nth(1)
        .expect("the README has a \"Running the daemon\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("…with a sh block");
    // One command per line, continuations joined, comments dropped.
    let commands: Vec<Vec<String>> = block
        .replace("\\\n", " ")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    let verbs: Vec<&str> = commands.iter().map(|c| c[1].as_str()).collect();
    assert_eq!(verbs, ["validate", "topics", "run", "gen"], "{block}");

    let stem = unique("readme");
    let input = format!("{stem}-evaluations");
    let summaries = format!("{stem}-summaries");
    let admin = format!("127.0.0.1:{}", free_port());
    let env: Vec<(String, String)> = [
        ("KAFKA__BROKERS", broker.to_owned()),
        ("KAFKA__GROUP_ID", stem.clone()),
        ("KAFKA__INPUT_TOPICS", format!("[\"{input}\"]")),
        ("OUTPUT__DEAD_LETTER_TOPIC", format!("{stem}-dead-letters")),
        ("OUTPUT__TOPICS__SUMMARY", summaries.clone()),
        ("OUTPUT__TOPICS__FEATURE", format!("{stem}-features")),
        ("OUTPUT__TOPICS__INDEX", format!("{stem}-index")),
        ("OUTPUT__TOPICS__IDENTIFY", format!("{stem}-identify")),
        ("OUTPUT__TOPICS__CUSTOM", format!("{stem}-custom")),
        (
            "PROCESSING__CHECKPOINT_TOPIC",
            format!("{stem}-checkpoints"),
        ),
        ("PROCESSING__THREADS", "1".to_owned()),
        ("WINDOW__SIZE", "\"10s\"".to_owned()),
        ("WINDOW__LATENESS", "\"2s\"".to_owned()),
        ("WINDOW__IDLE_TIMEOUT", "\"2s\"".to_owned()),
        ("ADMIN__LISTEN", admin.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("FLAGTALLY__{k}"), v))
    .collect();
    let config = repo().join("config/flagtally.toml");
    let command = |words: &[String]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flagtally"));
        for w in &words[1..] {
            match w.as_str() {
                "config/flagtally.toml" => cmd.arg(&config),
                "127.0.0.1:9092" => cmd.arg(broker),
                "flag-evaluations" => cmd.arg(&input),
                "1000000" => cmd.arg("3000"),
                other => cmd.arg(other),
            };
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn");
        cmd
    };

    let validate = command(&commands[0]).output().unwrap();
    assert!(validate.status.success(), "{}", text(&validate));
    let create = command(&commands[1]).output().unwrap();
    assert!(create.status.success(), "{}", text(&create));
    assert!(
        text(&create).contains(&format!("created      {input} (input)")),
        "{}",
        text(&create)
    );
    let log = std::env::temp_dir().join(format!("{stem}.log"));
    let mut run = command(&commands[2])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(60), || http_get(&admin, "/readyz")
            .is_some_and(|(s, _)| s == 200)),
        "{:?}\n{}",
        http_get(&admin, "/readyz"),
        log_text()
    );
    let generated = command(&commands[3]).output().unwrap();
    assert!(generated.status.success(), "{}", text(&generated));
    let out = String::from_utf8_lossy(&generated.stdout);
    let evaluations: u64 = out
        .split("evaluations ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("gen prints its tally: {out}"));
    assert!(evaluations > 0);
    let read = read_until(
        broker,
        &summaries,
        Duration::from_secs(120),
        summed_counters(evaluations),
    );
    assert_eq!(
        total(&window_tally(dedupe(&read).values())),
        evaluations,
        "{}",
        log_text()
    );
    // SIGTERM, as systemd stops it: a drain, then exit 0.
    let killed = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}\n{}", log_text());
}

/// `gen --partitions N` creates its topic when it is missing.
#[test]
fn gen_creates_its_topic_when_asked() {
    let broker = broker();
    let topic = unique("gen-creates");
    let out = flagtally(&[
        "gen",
        "--brokers",
        broker,
        "--topic",
        &topic,
        "--count",
        "100",
        "--partitions",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("created topic {topic} with 3 partitions")),
        "{}",
        text(&out)
    );
    assert_eq!(watermarks(broker, &topic).len(), 3);
}
