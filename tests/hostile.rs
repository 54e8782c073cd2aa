//! Hostile input on Apache Kafka: records built to crash, stall or loop the daemon,
//! mixed into 100 000 good ones. The daemon must never exit; every good evaluation is
//! counted exactly; every bad record becomes exactly one dead letter with the right
//! reason; forged `flagtally-*` headers are never taken for flagtally's own; outputs the
//! broker refuses become dead letters instead of a rewind loop; and a file sink writes
//! nowhere outside its directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use flagtally::decode::{Decoded, Decoder, Dialect, Limits};
use flagtally::generate::{GenConfig, GenDialect, Generator};
use flagtally::kafka::producer::block_on;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _};

const WINDOW_MS: i64 = 10_000;

/// Header name/value pairs to send with a record.
type Headers = Vec<(&'static str, &'static str)>;

/// One bad (or borderline) record, the reason its dead letter must carry (`None`: the
/// decoder's own verdict, computed below), and headers to send with it.
struct Case {
    value: Vec<u8>,
    reason: Option<&'static str>,
    headers: Headers,
}

fn case(value: impl Into<Vec<u8>>, reason: Option<&'static str>) -> Case {
    Case {
        value: value.into(),
        reason,
        headers: Vec::new(),
    }
}

fn corpus(t: i64) -> Vec<Case> {
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let mut envelope = String::new();
    for _ in 0..20_000 {
        envelope.push_str(r#"{"project":"p","environment":"e","event":"#);
    }
    envelope.push_str(&feature(t, "f", "u"));
    envelope.push_str(&"}".repeat(20_000));
    let batch = |n: usize| {
        let one = format!(
            r#"{{"kind":"feature","creationDate":{t},"key":"fl","userKey":"u","value":1}}"#
        );
        format!("[{}]", vec![one; n].join(","))
    };
    let with_value = |v: &str| {
        format!(
            r#"{{"kind":"feature","creationDate":{t},"key":"fv","version":1,"userKey":"u","variation":0,"value":{v}}}"#
        )
    };
    let mut invalid_utf8 = feature(t, "f", "u").into_bytes();
    invalid_utf8[60] = 0xff;
    let mut cases = vec![
        case(
            format!(r#"{{"kind":"feature","value":{}}}"#, deep(100_000)),
            Some("too_deep"),
        ),
        case(envelope, Some("too_deep")),
        case(with_value(&deep(63)), None),
        case(
            with_value(&format!("\"{}\"", "x".repeat(300 << 10))),
            Some("string_too_long"),
        ),
        case(
            with_value(&format!("\"{}\"", "x".repeat((256 << 10) - 10))),
            None,
        ),
        case(batch(10_000), None),
        case(batch(10_001), Some("too_many_events")),
        case(
            with_value(&format!(r#"{{"{}":1}}"#, "k".repeat(1025))),
            Some("name_too_long"),
        ),
        case(with_value("1e999"), Some("invalid_value")),
        case(with_value(&"9".repeat(400)), Some("invalid_value")),
        case(
            r#"{"kind":"feature","creationDate":1e30,"key":"f","userKey":"u","value":1}"#
                .to_owned(),
            None,
        ),
        case(invalid_utf8, None),
        case(
            [
                b"\xef\xbb\xbf".as_slice(),
                feature(t, "bom", "u").as_bytes(),
            ]
            .concat(),
            None,
        ),
        case(
            format!(
                r#"{{"kind":"feature","kind":"custom","creationDate":{t},"key":"f","userKey":"u","value":1}}"#
            ),
            None,
        ),
        case(
            vec![b'{'; 1 << 20]
                .into_iter()
                .chain(*b"}")
                .collect::<Vec<u8>>(),
            Some("too_large"),
        ),
        case(b"\0\0\0\0".to_vec(), None),
        case(b"".to_vec(), Some("empty")),
        // Far in the future (a phone a year ahead) and far in the past.
        case(
            feature(t + 366 * 86_400_000, "future", "u"),
            Some("future_time"),
        ),
        case(feature(1, "past", "u"), None),
        case(feature(-5, "negative", "u"), None),
        // Context kinds: a multi-kind context with 65 kinds, a summary flag naming 65.
        case(
            {
                let kinds: Vec<String> = (0..65)
                    .map(|i| format!(r#""k{i}":{{"key":"x"}}"#))
                    .collect();
                format!(
                    r#"{{"kind":"feature","creationDate":{t},"key":"f","version":1,"context":{{"kind":"multi",{}}},"variation":0,"value":true}}"#,
                    kinds.join(",")
                )
            },
            Some("too_many_kinds"),
        ),
        case(
            {
                let kinds: Vec<String> = (0..65).map(|i| format!(r#""k{i}""#)).collect();
                format!(
                    r#"{{"kind":"summary","startDate":{t},"endDate":{t},"features":{{"f":{{"default":false,"counters":[{{"variation":0,"version":1,"value":true,"count":1}}],"contextKinds":[{}]}}}}}}"#,
                    kinds.join(",")
                )
            },
            Some("too_many_kinds"),
        ),
        // FeatBit: 10 001 variations inside one entry (depth 3, past the limits pass).
        case(
            {
                let one = format!(
                    r#"{{"featureFlagKey":"f","variation":{{"id":"v","value":"true"}},"timestamp":{t}}}"#
                );
                format!(
                    r#"[{{"user":{{"keyId":"u"}},"variations":[{}]}}]"#,
                    vec![one; 10_001].join(",")
                )
            },
            Some("too_many_events"),
        ),
    ];
    // Forged headers on a bad record: its dead letter must carry them renamed.
    cases.push(Case {
        value: b"not json".to_vec(),
        reason: None,
        headers: vec![
            ("flagtally-id", "forged-id"),
            ("flagtally-kind", "x/../../../escaped"),
            ("flagtally-error-reason", "forged"),
        ],
    });
    cases
}

#[test]
fn hostile_records_never_stop_the_daemon_and_each_is_one_dead_letter() {
    let broker = broker();
    let t = Topics::named();
    // Input topics take records up to 2 MiB (over the default limit, to carry the
    // oversize case); the feature topic refuses records over 4 KiB, so outputs with a
    // large context are refused by the broker.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let topics = t.all(2);
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, parts)| {
            let topic = NewTopic::new(name, *parts, TopicReplication::Fixed(1));
            if *name == t.input {
                topic.set("max.message.bytes", "3145728")
            } else if *name == t.feature {
                topic.set("max.message.bytes", "4096")
            } else {
                topic
            }
        })
        .collect();
    for r in block_on(admin.create_topics(&new, &AdminOptions::new())).unwrap() {
        r.unwrap();
    }

    let start = now_ms() - 3_600_000;
    let mut g = Generator::new(GenConfig {
        dialect: GenDialect::Mixed,
        flags: 8,
        contexts: 500,
        tracked_one_in: 50,
        start_ms: start,
        step_ms: 20,
        seed: 53,
        ..GenConfig::default()
    });
    let good: Vec<Vec<u8>> = (0..100_000).map(|_| g.next_record()).collect();
    let mid = start + 1_000_000;
    let cases = corpus(mid);
    // Tracked evaluations with a 6 KB context attribute: their feature events are over
    // the feature topic's 4 KiB limit.
    let big_context = format!("\"{}\"", "a".repeat(6000));
    let refused: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            format!(
                r#"{{"kind":"feature","creationDate":{mid},"key":"big","version":1,"context":{{"kind":"user","key":"big-{i}","blob":{big_context}}},"variation":0,"value":true,"trackEvents":true}}"#
            )
            .into_bytes()
        })
        .collect();

    // Interleave: a bad record every 3 000 good ones.
    let mut records: Vec<(Vec<u8>, Headers)> = Vec::new();
    let mut bad_at: HashMap<usize, usize> = HashMap::new();
    let mut extra = cases.iter().enumerate().peekable();
    let mut big = refused.iter();
    for (i, r) in good.iter().enumerate() {
        if i % 3_000 == 1 {
            if let Some((k, c)) = extra.next() {
                bad_at.insert(records.len(), k);
                records.push((c.value.clone(), c.headers.clone()));
            } else if let Some(b) = big.next() {
                records.push((b.clone(), Vec::new()));
            }
        }
        records.push((r.clone(), Vec::new()));
    }
    assert!(
        extra.peek().is_none() && big.next().is_none(),
        "every case placed"
    );

    // The oracle: what the decode stage says of each record (default limits).
    let decoder = Decoder::new(Dialect::Auto, Limits::default());
    let mut expected_reason: BTreeMap<usize, String> = BTreeMap::new();
    let mut counted: Vec<Vec<u8>> = Vec::new();
    for (i, (v, _)) in records.iter().enumerate() {
        let mut out = Decoded::default();
        decoder.decode(v, &mut out);
        let declared = bad_at.get(&i).and_then(|k| cases[*k].reason);
        if declared == Some("future_time") {
            expected_reason.insert(i, "future_time".to_owned());
            continue;
        }
        if let Some(e) = out.errors.first() {
            if let Some(want) = declared {
                assert_eq!(e.reason.code(), want, "case {:?}", bad_at.get(&i));
            }
            expected_reason.insert(i, e.reason.code().to_owned());
        } else {
            assert!(
                declared.is_none(),
                "case {:?} decoded cleanly",
                bad_at.get(&i)
            );
        }
        counted.push(v.clone());
    }
    let want = expected_windows(&counted, WINDOW_MS);

    let p: flagtally::kafka::producer::PolledProducer<rdkafka::producer::DefaultProducerContext> =
        ClientConfig::new()
            .set("bootstrap.servers", broker)
            .set("enable.idempotence", "true")
            .set("message.max.bytes", "4000000")
            .set("linger.ms", "10")
            .create()
            .unwrap();
    for (i, (v, hs)) in records.iter().enumerate() {
        let mut headers = OwnedHeaders::new();
        for (k, val) in hs {
            headers = headers.insert(Header {
                key: k,
                value: Some(*val),
            });
        }
        let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&t.input)
            .partition((i % 2) as i32)
            .payload(v.as_slice())
            .headers(headers);
        flagtally::kafka::producer::send_waiting(&p, rec, &|| false).unwrap();
    }
    p.flush(Duration::from_secs(120)).unwrap();

    let dir = std::env::temp_dir()
        .join("flagtally-tests")
        .join(unique("hostile-files"));
    let sink_dir = dir.join("sink");
    std::fs::create_dir_all(&sink_dir).unwrap();
    let config = format!(
        r#"{base}
[[sinks]]
name = "hostile-files"
type = "file"
topics = ["{summary}", "{feature}"]
path = "{sink}"
format = "ndjson"
batch_timeout = "300ms"
"#,
        base = t
            .config(
                broker,
                "size = \"10s\"\nlateness = \"2s\"\nidle_timeout = \"2s\""
            )
            .replace(
                "[window]\n",
                "[input]\nfuture_policy = \"dead-letter\"\n\n[window]\n"
            ),
        summary = t.summary,
        feature = t.feature,
        sink = sink_dir.display(),
    );
    let mut f = Flagtally::start(&config, &t.group);

    // Every good evaluation, exactly, per window.
    let expected_total = total(&want);
    let recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(240),
        summed_counters(expected_total),
    );
    let got = window_tally(dedupe(&recs).values());
    assert_eq!(
        total(&got),
        expected_total,
        "evaluations counted; log:\n{}",
        f.log_text()
    );
    assert_eq!(got, want, "per window");

    // Every bad record: one dead letter with the right reason; plus one per refused
    // output.
    let n_dead = expected_reason.len() + refused.len();
    let dlq = read_until(
        broker,
        &t.dead_letter,
        Duration::from_secs(120),
        distinct_ids(n_dead as u64),
    );
    let dead = dedupe(&dlq);
    assert_eq!(dead.len(), n_dead, "dead letters; log:\n{}", f.log_text());
    let mut seen_refused = 0;
    for r in dead.values() {
        assert_eq!(r.header("flagtally-kind"), Some("dead-letter"));
        let reason = r.header("flagtally-error-reason").unwrap();
        if reason == "refused" {
            assert_eq!(r.header("flagtally-refused-kind"), Some("feature"));
            seen_refused += 1;
            continue;
        }
        let partition: usize = r
            .header("flagtally-source-partition")
            .unwrap()
            .parse()
            .unwrap();
        let offset: usize = r
            .header("flagtally-source-offset")
            .unwrap()
            .parse()
            .unwrap();
        let i = offset * 2 + partition;
        assert_eq!(
            Some(reason),
            expected_reason.get(&i).map(String::as_str),
            "record {i} (case {:?})",
            bad_at.get(&i)
        );
        let original = &records[i].0;
        match r.header("flagtally-truncated") {
            Some(n) => {
                assert_eq!(n.parse::<usize>().unwrap(), original.len());
                assert!(r.value.len() < original.len() && original.starts_with(&r.value));
            }
            None => assert_eq!(&r.value, original, "the original bytes"),
        }
        if original.as_slice() == b"not json" {
            // Forged headers travel renamed; flagtally's own are the only ones named so.
            assert_eq!(r.header("original-flagtally-id"), Some("forged-id"));
            assert_eq!(
                r.header("original-flagtally-kind"),
                Some("x/../../../escaped")
            );
            assert_eq!(r.header("original-flagtally-error-reason"), Some("forged"));
            assert_ne!(r.header("flagtally-id"), Some("forged-id"));
        }
    }
    assert_eq!(
        seen_refused,
        refused.len(),
        "every refused output set aside"
    );

    // The daemon is still running, and the file sink wrote only inside its directory.
    assert!(
        f.child.try_wait().unwrap().is_none(),
        "the daemon exited; log:\n{}",
        f.log_text()
    );
    assert!(eventually(Duration::from_secs(30), || {
        walk(&sink_dir)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "ndjson"))
    }));
    let outside: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| !p.starts_with(&sink_dir))
        .collect();
    assert!(
        outside.is_empty(),
        "files outside the sink's directory: {outside:?}"
    );
    assert!(f.stop(Duration::from_secs(25)).success());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// One event dated a year ahead among 100 000 (a phone with a wrong clock), under the
/// default clamp policy: it is counted at its record's timestamp, the watermark does
/// not jump, and no later event becomes late.
#[test]
fn a_clock_a_year_ahead_causes_no_late_corrections() {
    let broker = broker();
    let t = Topics::create(broker, 1);
    let start = now_ms() - 600_000;
    let mut g = Generator::new(GenConfig {
        dialect: GenDialect::Launchdarkly,
        flags: 5,
        start_ms: start,
        step_ms: 5,
        seed: 59,
        ..GenConfig::default()
    });
    let mut records: Vec<Vec<u8>> = (0..100_000).map(|_| g.next_record()).collect();
    let mut tally = g.into_tally();
    records.insert(
        1_000,
        feature(now_ms() + 366 * 86_400_000, "wrong-clock", "phone").into_bytes(),
    );
    *tally
        .counters
        .entry(("wrong-clock".to_owned(), "0".to_owned(), "1".to_owned()))
        .or_default() += 1;
    // Each record is stamped as an SDK would send it: at (about) its events' time; the
    // wrong clock's record at its neighbours'.
    let p = producer(broker);
    for (i, v) in records.iter().enumerate() {
        let ts = start + 5 * (i as i64);
        let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&t.input)
            .partition(0)
            .payload(v.as_slice())
            .timestamp(ts);
        flagtally::kafka::producer::send_waiting(&p, rec, &|| false).unwrap();
    }
    p.flush(Duration::from_secs(60)).unwrap();
    let f = Flagtally::start(
        &t.config(
            broker,
            "size = \"10s\"\nlateness = \"2s\"\nidle_timeout = \"2s\"",
        ),
        &t.group,
    );
    let recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(180),
        summed_counters(tally.evaluations()),
    );
    let unique_recs = dedupe(&recs);
    let late = unique_recs
        .values()
        .filter(|r| r.header("flagtally-late") == Some("true"))
        .count();
    assert_eq!(late, 0, "no late corrections");
    let mut per_key: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for ((fl, v, ver, _), n) in window_tally(unique_recs.values()) {
        *per_key.entry((fl, v, ver)).or_default() += n;
    }
    assert_eq!(per_key, tally.counters, "every evaluation counted once");
    assert!(f.stop(Duration::from_secs(25)).success());
}

/// Forged time: two records carry an evaluation dated in the year 275 760, one with a
/// producer timestamp (CreateTime) just as forged — on a topic that accepts any, as
/// Kafka before 4.0 does by default (`message.timestamp.after.max.ms`) — and one with
/// no timestamp at all. Before, neither was bounded and the partition's watermark moved
/// to that year for good; now both are bounded by the processing clock as well: they
/// count at the time they are read, and the records that follow (dated minutes ahead,
/// as a fast clock would) are not late.
#[test]
fn forged_record_times_cannot_move_the_watermark() {
    let broker = broker();
    let t = Topics::create(broker, 1);
    // The input topic again, under its own name, accepting any timestamp.
    let input = unique("in-anytime");
    create_topic_with(
        broker,
        &input,
        1,
        &[("message.timestamp.after.max.ms", "9223372036854775807")],
    );
    let now = now_ms();
    let batch = |start_ms: i64, seed: u64| {
        let mut g = Generator::new(GenConfig {
            dialect: GenDialect::Launchdarkly,
            flags: 5,
            start_ms,
            step_ms: 5,
            seed,
            ..GenConfig::default()
        });
        let records: Vec<Vec<u8>> = (0..10_000).map(|_| g.next_record()).collect();
        (records, g.into_tally())
    };
    let (before, mut tally) = batch(now - 600_000, 61);
    let (after, tally_after) = batch(now + 600_000, 67);
    for (k, n) in tally_after.counters {
        *tally.counters.entry(k).or_default() += n;
    }
    const YEAR_275760: i64 = 8_640_000_000_000_000;
    let forged = feature(YEAR_275760, "forged", "mallory").into_bytes();
    *tally
        .counters
        .entry(("forged".to_owned(), "0".to_owned(), "1".to_owned()))
        .or_default() += 2;
    let p = producer(broker);
    let send_at = |v: &[u8], ts: i64| {
        let rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&input).partition(0).payload(v).timestamp(ts);
        flagtally::kafka::producer::send_waiting(&p, rec, &|| false).unwrap();
    };
    for (i, v) in before.iter().enumerate() {
        send_at(v, now - 600_000 + 5 * i as i64);
    }
    send_at(&forged, YEAR_275760);
    send_at(&forged, -1);
    for (i, v) in after.iter().enumerate() {
        send_at(v, now + 600_000 + 5 * i as i64);
    }
    p.flush(Duration::from_secs(60)).unwrap();
    // What the broker kept: the forged timestamp, and none at all.
    let stamps: Vec<rdkafka::Timestamp> = {
        use rdkafka::Message as _;
        use rdkafka::consumer::{BaseConsumer, Consumer as _};
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker)
            .set("group.id", unique("stamps"))
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&input, 0, rdkafka::Offset::Offset(10_000))
            .unwrap();
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        while out.len() < 2 {
            if let Some(Ok(m)) = c.poll(Duration::from_secs(5)) {
                out.push(m.timestamp());
            }
        }
        out
    };
    assert_eq!(
        stamps,
        [
            rdkafka::Timestamp::CreateTime(YEAR_275760),
            rdkafka::Timestamp::NotAvailable
        ]
    );
    let config = t
        .config(
            broker,
            "size = \"10s\"\nlateness = \"2s\"\nidle_timeout = \"2s\"",
        )
        .replace(&format!("[\"{}\"]", t.input), &format!("[\"{input}\"]"));
    let f = Flagtally::start(&config, &t.group);
    let recs = read_until(
        broker,
        &t.summary,
        Duration::from_secs(180),
        summed_counters(tally.evaluations()),
    );
    let unique_recs = dedupe(&recs);
    let late = unique_recs
        .values()
        .filter(|r| r.header("flagtally-late") == Some("true"))
        .count();
    assert_eq!(late, 0, "no late corrections; log:\n{}", f.log_text());
    assert_eq!(
        per_key(window_tally(unique_recs.values())),
        tally.counters,
        "every evaluation counted once"
    );
    // The forged evaluations count at the time they were read, not in their year.
    let forged_windows: Vec<i64> = window_tally(unique_recs.values())
        .into_keys()
        .filter(|(flag, ..)| flag == "forged")
        .map(|(.., start)| start)
        .collect();
    assert!(
        forged_windows
            .iter()
            .all(|w| (now - WINDOW_MS..now + 600_000).contains(w)),
        "{forged_windows:?}"
    );
    assert!(f.stop(Duration::from_secs(25)).success());
}

/// A dead-letter topic with `max.message.bytes` 3 000, in both modes: an 8 KB
/// undecodable record with a 2.5 KB header among good ones becomes one dead letter cut to
/// fit (the header dropped and counted, the payload truncated), and one whose 3.2 KB
/// Kafka key alone is over the limit becomes a stub (source position, reason, sizes).
/// Before, at-least-once mode lost both ("the broker refused a dead letter") and
/// exactly-once mode aborted and rewound forever, committing nothing.
#[test]
fn dead_letters_fit_a_small_dead_letter_topic_in_both_modes() {
    for exactly_once in [false, true] {
        let broker = broker();
        let t = Topics::create(broker, 1);
        let dlq = unique("dlq-small");
        create_topic_with(broker, &dlq, 1, &[("max.message.bytes", "3000")]);
        let mut g = Generator::new(GenConfig {
            dialect: GenDialect::Launchdarkly,
            flags: 3,
            seed: 71,
            ..GenConfig::default()
        });
        let good: Vec<Vec<u8>> = (0..100).map(|_| g.next_record()).collect();
        let tally = g.into_tally();
        let p = producer(broker);
        let big_header = "h".repeat(2500);
        let big_key = vec![b'k'; 3200];
        let undecodable = vec![b'x'; 8192];
        for (i, v) in good.iter().enumerate() {
            if i == 30 {
                let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&t.input)
                    .partition(0)
                    .payload(undecodable.as_slice())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "trace",
                        value: Some(big_header.as_bytes()),
                    }));
                flagtally::kafka::producer::send_waiting(&p, rec, &|| false).unwrap();
            }
            if i == 60 {
                let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&t.input)
                    .partition(0)
                    .key(big_key.as_slice())
                    .payload(b"not json".as_slice());
                flagtally::kafka::producer::send_waiting(&p, rec, &|| false).unwrap();
            }
            send(&p, &t.input, 0, v);
        }
        p.flush(Duration::from_secs(30)).unwrap();
        let mut config = t
            .config(broker, "size = \"10s\"\nidle_timeout = \"1s\"")
            .replace(
                &format!("dead_letter_topic = \"{}\"", t.dead_letter),
                &format!("dead_letter_topic = \"{dlq}\""),
            );
        if exactly_once {
            config = config.replace(
                "[processing]\n",
                &format!(
                    "[processing]\nexactly_once = true\ntransactional_id = \"{}-tx\"\n",
                    t.group
                ),
            );
        }
        let f = Flagtally::start(&config, &t.group);
        let recs = read_until(
            broker,
            &t.summary,
            Duration::from_secs(90),
            summed_counters(tally.evaluations()),
        );
        assert_eq!(
            per_key(window_tally(dedupe(&recs).values())),
            tally.counters,
            "exactly_once = {exactly_once}: every good evaluation; log:\n{}",
            f.log_text()
        );
        let letters = dedupe(&read_until(
            broker,
            &dlq,
            Duration::from_secs(60),
            distinct_ids(2),
        ));
        assert_eq!(
            letters.len(),
            2,
            "exactly_once = {exactly_once}: {letters:?}"
        );
        let cut = letters
            .values()
            .find(|r| r.header("flagtally-source-offset") == Some("30"))
            .expect("the cut dead letter");
        assert_eq!(cut.header("flagtally-headers-dropped"), Some("1"));
        assert_eq!(cut.header("flagtally-truncated"), Some("8192"));
        assert!(cut.header("trace").is_none());
        assert!(cut.value.len() > 1000, "{} bytes kept", cut.value.len());
        assert_eq!(cut.header("flagtally-error-reason"), Some("undetected"));
        let stub = letters
            .values()
            .find(|r| r.header("flagtally-source-offset") == Some("61"))
            .expect("the stub");
        assert_eq!(stub.header("flagtally-stub"), Some("true"));
        assert_eq!(
            stub.header("flagtally-stub-sizes"),
            Some("value=8;key=3200;headers=0")
        );
        assert!(stub.key.is_none() && stub.value.is_empty());
        assert!(stub.header("flagtally-error-reason").is_some());
        let log = f.log_text();
        assert!(!log.contains("refused a dead letter"), "{log}");
        assert!(!log.contains("aborting the transaction"), "{log}");
        assert!(f.stop(Duration::from_secs(25)).success());
    }
}

/// The dead-letter topic's `max.message.bytes` is lowered to 3 000 while flagtally runs
/// (it read 1 MiB at startup): the broker refuses an 8 KB dead letter, which is then
/// written as its stub — in at-least-once mode at once, in exactly-once mode after one
/// abort and re-read — and the good records around it are all counted.
#[test]
fn a_dead_letter_the_broker_refuses_is_written_as_its_stub_in_both_modes() {
    for exactly_once in [false, true] {
        let broker = broker();
        let t = Topics::create(broker, 1);
        let mut g = Generator::new(GenConfig {
            dialect: GenDialect::Launchdarkly,
            flags: 3,
            seed: 73,
            ..GenConfig::default()
        });
        let good: Vec<Vec<u8>> = (0..100).map(|_| g.next_record()).collect();
        let tally = g.into_tally();
        let mut config = t.config(broker, "size = \"10s\"\nidle_timeout = \"1s\"");
        if exactly_once {
            config = config.replace(
                "[processing]\n",
                &format!(
                    "[processing]\nexactly_once = true\ntransactional_id = \"{}-tx\"\n",
                    t.group
                ),
            );
        }
        let f = Flagtally::start(&config, &t.group);
        f.wait_log("partitions assigned", 1, Duration::from_secs(60));
        alter_topic(broker, &t.dead_letter, "max.message.bytes", "3000");
        let p = producer(broker);
        for (i, v) in good.iter().enumerate() {
            if i == 50 {
                send(&p, &t.input, 0, &[b'x'; 8192]);
            }
            send(&p, &t.input, 0, v);
        }
        p.flush(Duration::from_secs(30)).unwrap();
        let recs = read_until(
            broker,
            &t.summary,
            Duration::from_secs(90),
            summed_counters(tally.evaluations()),
        );
        assert_eq!(
            per_key(window_tally(dedupe(&recs).values())),
            tally.counters,
            "exactly_once = {exactly_once}; log:\n{}",
            f.log_text()
        );
        let letters = dedupe(&read_until(
            broker,
            &t.dead_letter,
            Duration::from_secs(60),
            distinct_ids(1),
        ));
        let stub = letters.values().next().expect("a dead letter");
        assert_eq!(
            stub.header("flagtally-stub"),
            Some("true"),
            "exactly_once = {exactly_once}; log:\n{}",
            f.log_text()
        );
        assert_eq!(
            stub.header("flagtally-stub-sizes"),
            Some("value=8192;key=0;headers=0")
        );
        assert_eq!(stub.header("flagtally-source-offset"), Some("50"));
        assert!(f.log_text().contains("writing its stub") || exactly_once);
        assert!(f.stop(Duration::from_secs(25)).success());
    }
}
