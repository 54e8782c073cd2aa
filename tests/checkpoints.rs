//! Checkpoints on Apache Kafka: one partition's checkpoint driven to its topic's limit
//! by late corrections (issue 25, item 3), a restart under changed window settings
//! (item 10), and a stale checkpoint delivered late by a member that had lost the
//! partition (found by the chaos run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use flagtally::window::WindowConfig;
use rdkafka::producer::Producer as _;

/// The checkpoint records of partition 0 of `input`, in order.
fn checkpoint_records(broker: &str, t: &Topics) -> Vec<Rec> {
    let key = format!("{}/{}/0", t.group, t.input);
    read_until(
        broker,
        &format!("{}-checkpoints", t.group),
        Duration::from_secs(10),
        |_| false,
    )
    .into_iter()
    .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
    .collect()
}

/// Their texts.
fn checkpoints(broker: &str, t: &Topics) -> Vec<String> {
    checkpoint_records(broker, t)
        .into_iter()
        .map(|r| String::from_utf8(r.value).unwrap())
        .collect()
}

/// The settings of the test below, with `corrections` late corrections allowed.
fn window(corrections: usize) -> (String, WindowConfig) {
    let text = format!(
        "size = \"1s\"\nlateness = \"1s\"\nidle_timeout = \"off\"\nmax_open_windows = 4\nmax_late_corrections = {corrections}"
    );
    let config = WindowConfig {
        size_ms: 1_000,
        allowed_lateness_ms: 1_000,
        idle_timeout_ms: None,
        max_open_windows: 4,
        max_late_corrections: corrections,
        ..WindowConfig::default()
    };
    (text, config)
}

/// A checkpoint topic sized to the largest checkpoint the settings allow: a setting
/// one correction larger is refused at start, naming what to change; at the limit,
/// 400 late events in 400 different past seconds hold the partition at its cap of 40
/// open corrections (the most a checkpoint can describe) through a SIGKILL and a
/// restart, every checkpoint fits, and every evaluation is counted once.
#[test]
fn a_checkpoint_full_of_late_corrections_fits_its_topic() {
    let broker = broker();
    let t = Topics::create(broker, 1);
    let (text, settings) = window(40);
    let worst = flagtally::pipeline::checkpoint::worst_case_bytes(&settings);
    let limit = worst + flagtally::deadletter::fit::RECORD_MARGIN;
    let topic = format!("{}-checkpoints", t.group);
    alter_topic(broker, &topic, "max.message.bytes", &limit.to_string());
    // The broker answers the change before its metadata shows it.
    assert!(eventually(Duration::from_secs(30), || topic_config(
        broker,
        &topic,
        "max.message.bytes"
    ) == Some(
        limit.to_string()
    )));

    // One correction more than fits: refused before anything is read.
    let (over, _) = window(41);
    let mut refused = Flagtally::start(&t.config(broker, &over), &unique("refused"));
    let status = refused
        .wait(Duration::from_secs(60))
        .expect("refused at start");
    assert!(!status.success());
    let log = refused.log_text();
    assert!(
        log.contains("window.max_late_corrections (41)") && log.contains("max.message.bytes"),
        "{log}"
    );

    // At the limit: runs, and its checkpoints fit.
    let config = t.config_with_threads(broker, &text, 1);
    let mut f = Flagtally::start(&config, &t.group);
    let now = now_ms();
    let p = producer(broker);
    send(&p, &t.input, 0, feature(now, "f", "u0").as_bytes());
    for i in 0..400 {
        send(
            &p,
            &t.input,
            0,
            feature(now - 10_000 - i * 1_000, "f", "u1").as_bytes(),
        );
    }
    p.flush(Duration::from_secs(60)).unwrap();
    // A checkpoint holding the full set of corrections is written…
    let full = |cp: &String| cp.matches("/l/").count() == 40;
    assert!(
        eventually(Duration::from_secs(60), || checkpoints(broker, &t)
            .iter()
            .any(full)),
        "{}",
        f.log_text()
    );
    // …and read back by a restart after a crash.
    f.crash();
    f = Flagtally::start(&config, &t.group);
    f.wait_log("checkpoints loaded", 1, Duration::from_secs(60));
    // The watermark moves on: the last corrections close with the open window, and
    // the event at +5 s with its own (the one at +10 s stays open).
    send(&p, &t.input, 0, feature(now + 5_000, "f", "u2").as_bytes());
    send(&p, &t.input, 0, feature(now + 10_000, "f", "u3").as_bytes());
    p.flush(Duration::from_secs(60)).unwrap();
    let summaries = read_until(
        broker,
        &t.summary,
        Duration::from_secs(120),
        summed_counters(402),
    );
    assert_eq!(total(&window_tally(dedupe(&summaries).values())), 402);
    let all = checkpoints(broker, &t);
    let largest = all.iter().map(String::len).max().unwrap();
    assert!(
        largest <= worst,
        "a checkpoint of {largest} bytes, over the bound {worst}"
    );
    // The bound assumes every number at its widest (20 characters); real ones are
    // shorter, so a checkpoint at the cap takes about a third of it.
    assert!(
        all.iter().any(full),
        "the corrections never filled a checkpoint: largest {largest} of {worst}"
    );
    let log = f.log_text();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(f.stop(Duration::from_secs(30)).success());
    report(&format!(
        "checkpoints: 40 open corrections, largest checkpoint {largest} B of a {worst} B bound (topic limit {limit} B)"
    ));
}

/// Restarted under other window settings (a graceful stop, then `window.size` 10 s →
/// 20 s and `max_open_windows` 64 → 8), each partition closes what it held at its
/// checkpoint and continues in a new settings epoch: no id names two contents, every
/// evaluation is counted once, and the change is logged and counted in a metric.
#[test]
fn changed_window_settings_start_at_the_checkpoint_in_a_new_epoch() {
    let broker = broker();
    let t = Topics::create(broker, 2);
    let before = t.config_with_threads(
        broker,
        "size = \"10s\"\nlateness = \"2s\"\nidle_timeout = \"off\"",
        1,
    );
    let after = t.config_with_threads(
        broker,
        "size = \"20s\"\nlateness = \"2s\"\nidle_timeout = \"off\"\nmax_open_windows = 8",
        1,
    );
    let now = now_ms() - 120_000;
    let p = producer(broker);
    let mut sent = 0u64;
    let mut burst = |from: i64, n: i64| {
        for i in 0..n {
            let partition = (i % 2) as i32;
            send(
                &p,
                &t.input,
                partition,
                feature(now + from + i * 50, &format!("f{}", i % 3), "u").as_bytes(),
            );
            sent += 1;
        }
        p.flush(Duration::from_secs(60)).unwrap();
    };
    let f = Flagtally::start(&before, &t.group);
    burst(0, 600);
    // Windows still open at the stop: the last 2 s of event time and more.
    f.wait_log("checkpoints loaded", 1, Duration::from_secs(60));
    assert!(eventually(Duration::from_secs(60), || {
        read_until(broker, &t.summary, Duration::from_secs(2), |_| false).len() >= 4
    }));
    std::thread::sleep(Duration::from_secs(2));
    assert!(f.stop(Duration::from_secs(30)).success());

    let admin = format!("127.0.0.1:{}", free_port());
    let g = Flagtally::start_with_env(
        &after,
        &t.group,
        &[("FLAGTALLY__ADMIN__LISTEN", admin.as_str())],
    );
    burst(30_000, 600);
    // Move both partitions' watermarks past everything.
    burst(200_000, 2);
    let summaries = read_until(
        broker,
        &t.summary,
        Duration::from_secs(120),
        summed_counters(sent - 2),
    );
    // `dedupe` asserts that every repeated id repeats the same bytes.
    let unique = dedupe(&summaries);
    assert_eq!(total(&window_tally(unique.values())), sent - 2);
    let log = g.log_text();
    assert_eq!(
        log.matches("the window settings changed since this partition's checkpoint")
            .count(),
        2,
        "{log}"
    );
    assert!(
        eventually(Duration::from_secs(10), || http_get(&admin, "/metrics")
            .is_some_and(
                |(_, body)| body.contains("flagtally_window_settings_changes_total 2")
            )),
        "{log}"
    );
    // Both grids' windows appear: 10 s ones from before, 20 s ones after.
    let sizes: std::collections::BTreeSet<i64> = unique
        .values()
        .map(|r| {
            r.header("flagtally-window-end")
                .unwrap()
                .parse::<i64>()
                .unwrap()
                - r.header("flagtally-window-start")
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
        })
        .collect();
    assert_eq!(sizes, [10_000, 20_000].into_iter().collect());
    assert!(g.stop(Duration::from_secs(30)).success());
}

/// What the chaos run found after a broker restart: a member that lost its partitions
/// without noticing had a checkpoint in its producer's queue, delivered after the new
/// owner had restored, gone idle, closed its windows and written its own checkpoint.
/// Latest by position, the stale one won the next lookup, and the restore from it
/// counted the idle-closed window again under the same id with more events.
///
/// Here: an instance closes a window on idle and stops; the stale checkpoint (one of
/// its own from before the idle close, open window and all, stamped with an older
/// generation as such a member's would be) is written after its last one; a second
/// instance restores and reads on into the same window. It must restore from the
/// newer generation's checkpoint: no id with two contents, every evaluation once.
#[test]
fn a_stale_checkpoint_delivered_late_by_an_older_generation_is_ignored() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::BaseRecord;

    let broker = broker();
    let t = Topics::create(broker, 1);
    let config = t.config_with_threads(
        broker,
        "size = \"10s\"\nlateness = \"2s\"\nidle_timeout = \"3s\"",
        1,
    );
    let base = (now_ms() - 300_000) / 10_000 * 10_000;
    let p = producer(broker);
    let mut sent = 0u64;
    let mut burst = |from: i64, n: i64| {
        for i in 0..n {
            send(
                &p,
                &t.input,
                0,
                feature(base + from + i * 10, &format!("f{}", i % 3), "u").as_bytes(),
            );
            sent += 1;
        }
        p.flush(Duration::from_secs(60)).unwrap();
    };
    let f = Flagtally::start(&config, &t.group);
    f.wait_log("checkpoints loaded", 1, Duration::from_secs(60));
    burst(0, 200);
    // The window closes on idle: its summaries appear, and the last checkpoint says
    // idle with nothing open.
    assert!(
        eventually(Duration::from_secs(60), || checkpoints(broker, &t)
            .last()
            .is_some_and(|text| text.contains(";i=1;a=;"))),
        "no idle checkpoint; log:\n{}",
        f.log_text()
    );
    assert!(f.stop(Duration::from_secs(30)).success());
    let written = checkpoint_records(broker, &t);
    let last = written.last().unwrap();
    let generation: i32 = last
        .header("flagtally-generation")
        .expect("checkpoints carry their writer's generation")
        .parse()
        .unwrap();
    assert!(generation >= 1, "{generation}");
    let stale = written
        .iter()
        .rev()
        .find(|r| String::from_utf8_lossy(&r.value).contains(";i=0;a=1"))
        .expect("a checkpoint with the window open, before the idle close");
    let older = (generation - 1).to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "flagtally-kind",
            value: Some("checkpoint".as_bytes()),
        })
        .insert(Header {
            key: "flagtally-generation",
            value: Some(older.as_bytes()),
        });
    let topic = format!("{}-checkpoints", t.group);
    let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic)
        .key(stale.key.as_deref().unwrap())
        .payload(stale.value.as_slice())
        .headers(headers);
    flagtally::kafka::producer::send_waiting(&p, rec, &|| false).unwrap();

    // Same window again (late now, if the idle close is kept); idle closes it all.
    let g = Flagtally::start(&config, &t.group);
    burst(1_000, 100);
    let summaries = read_until(
        broker,
        &t.summary,
        Duration::from_secs(120),
        summed_counters(sent),
    );
    // `dedupe` asserts that every repeated id repeats the same bytes.
    let unique = dedupe(&summaries);
    assert_eq!(
        total(&window_tally(unique.values())),
        sent,
        "log:\n{}",
        g.log_text()
    );
    assert!(
        g.log_text().contains("a checkpoint of an older epoch"),
        "{}",
        g.log_text()
    );
    assert!(g.stop(Duration::from_secs(30)).success());
}
