//! Topics as an operator meets them, on Apache Kafka (whose test broker, like most
//! production clusters, does not create topics on demand): `run` and `/readyz` name
//! the missing topics, `topics check` lists them, `topics create` makes them
//! (idempotent; `--dry-run` makes nothing), `validate --broker` reports them, and `gen`
//! fails at once naming the option that creates its topic — then the README's daemon
//! steps work as written.
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

    // The README's steps: `gen` into the input topic; the running daemon counts it.
    let generated = flagtally(&[
        "gen",
        "--brokers",
        broker,
        "--topic",
        &t.input,
        "--count",
        "500",
        "--json",
    ]);
    assert!(generated.status.success(), "{}", text(&generated));
    let tally: serde_json::Value = serde_json::from_slice(&generated.stdout).unwrap();
    let evaluations = tally["evaluations"].as_u64().unwrap();
    assert!(
        eventually(Duration::from_secs(60), || http_get(&admin, "/readyz")
            .is_some_and(|(s, _)| s == 200)),
        "{:?}",
        http_get(&admin, "/readyz")
    );
    let summaries = read_until(
        broker,
        &t.summary,
        Duration::from_secs(120),
        summed_counters(evaluations),
    );
    assert_eq!(
        total(&window_tally(dedupe(&summaries).values())),
        evaluations
    );
    assert!(f.stop(Duration::from_secs(30)).success());
}
