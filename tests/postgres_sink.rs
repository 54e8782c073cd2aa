//! The PostgreSQL sink against a real PostgreSQL (the machine's, started by
//! `scripts/infra.sh postgres` if down), fed by the flagtally binary over Apache
//! Kafka. Each test writes into a schema of its own; the rows are read back with
//! SQL and compared with the generator's tally.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use flagtally::generate::{GenConfig, GenDialect, Generator, Tally};

fn count(db: &mut postgres::Client, schema: &str, table: &str) -> u64 {
    db.query_one(&format!("SELECT count(*) FROM \"{schema}\".{table}"), &[])
        .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap())
        .unwrap_or(0)
}

fn setup(n: usize) -> (String, Topics, Vec<Vec<u8>>, Tally) {
    sink_case(
        n,
        GenConfig {
            flags: 6,
            malformed_one_in: 100,
            tracked_one_in: 10,
            ..GenConfig::default()
        },
    )
}

fn config(t: &Topics, broker: &str, url: &str, schema: &str) -> String {
    format!(
        r#"{base}
[[sinks]]
name = "{schema}"
type = "postgres"
topics = ["{summary}", "{feature}", "{index}"]
url = "{url}"
schema = "{schema}"
featbit_env_id = "env-1"
batch_size = 500
batch_timeout = "200ms"
retry_initial = "100ms"
retry_max = "1s"
"#,
        // One worker: a second one's join replays, repeating records in the topics (at
        // least once, same ids), which the position and dead-letter counts below see.
        base = t.config_with_threads(broker, "size = \"10s\"\nidle_timeout = \"1s\"", 1),
        summary = t.summary,
        feature = t.feature,
        index = t.index,
    )
}

fn wait_exact(db: &mut postgres::Client, schema: &str, tally: &Tally, d: &Flagtally) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if counted(db, schema).values().sum::<u64>() >= tally.evaluations() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // A little longer: anything written twice would show now.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        counted(db, schema),
        tally.counters,
        "summary counters in PostgreSQL differ from the tally; log:\n{}",
        d.log_text()
    );
}

#[test]
fn rows_equal_the_tally() {
    let url = postgres_url();
    let (broker, t, records, tally) = setup(20_000);
    let schema = unique("ft_pg").replace('-', "_");
    produce(&broker, &t.input, 2, &records);
    let name = unique("pg");
    let d = Flagtally::start(&config(&t, &broker, &url, &schema), &name);
    let mut db = sql(&url);
    wait_exact(&mut db, &schema, &tally, &d);
    // One row per tracked evaluation; index events present; positions stored.
    assert!(eventually(Duration::from_secs(20), || {
        count(&mut db, &schema, "flagtally_feature_events") == tally.tracked
    }));
    assert!(count(&mut db, &schema, "flagtally_context_events") > 0);
    // FeatBit's events table: one FlagValue row per feature event.
    assert_eq!(count(&mut db, &schema, "events"), tally.tracked);
    let row = db
        .query_one(
            &format!(
                "SELECT distinct_id, env_id, event, properties ->> 'featureFlagKey',
                        properties ->> 'userKeyId', properties ->> 'tag_1'
                 FROM \"{schema}\".events LIMIT 1"
            ),
            &[],
        )
        .unwrap();
    let flag: String = row.get(3);
    assert_eq!(row.get::<_, String>(0), format!("env-1-{flag}"));
    assert_eq!(
        (row.get::<_, String>(1), row.get::<_, String>(2)),
        ("env-1".to_owned(), "FlagValue".to_owned())
    );
    assert!(row.get::<_, String>(4).starts_with("user-"));
    assert!(!row.get::<_, String>(5).is_empty());
    let stored: i64 = db
        .query_one(
            &format!(
                "SELECT COALESCE(sum(next_offset), 0)::bigint FROM \"{schema}\".flagtally_sink_offsets WHERE topic = $1"
            ),
            &[&t.feature],
        )
        .unwrap()
        .get(0);
    assert_eq!(u64::try_from(stored).unwrap(), tally.tracked);
    // Context kinds and window bounds come through.
    let row = db
        .query_one(
            &format!(
                "SELECT context_kinds, window_end - window_start, late
                 FROM \"{schema}\".flagtally_summary_counters LIMIT 1"
            ),
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, Vec<String>>(0), ["user"]);
    assert!(!row.get::<_, bool>(2));
    assert!(d.stop(Duration::from_secs(20)).success());
}

#[test]
fn crashes_during_writes_lose_and_double_nothing() {
    let url = postgres_url();
    let (broker, t, records, tally) = setup(20_000);
    let schema = unique("ft_pgcrash").replace('-', "_");
    let name = unique("pgcrash");
    let cfg = config(&t, &broker, &url, &schema);
    // Input arrives while the daemon is killed three times mid-stream.
    let producer = {
        let (broker, topic) = (broker.clone(), t.input.clone());
        std::thread::spawn(move || {
            for chunk in records.chunks(1000) {
                produce(&broker, &topic, 2, chunk);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    for i in 0..3 {
        let d = Flagtally::start(&cfg, &format!("{name}-{i}"));
        std::thread::sleep(Duration::from_millis(2500 + 700 * i));
        d.crash();
    }
    producer.join().unwrap();
    let d = Flagtally::start(&cfg, &format!("{name}-final"));
    let mut db = sql(&url);
    wait_exact(&mut db, &schema, &tally, &d);
    assert!(eventually(Duration::from_secs(20), || {
        count(&mut db, &schema, "flagtally_feature_events") == tally.tracked
    }));
    assert!(d.stop(Duration::from_secs(20)).success());
}

/// PostgreSQL unreachable for 20 s mid-stream (a proxy between the sink and the server
/// cuts every connection and refuses new ones): the sink retries, the processor keeps
/// processing, and the final rows are exact.
#[test]
fn a_database_outage_delays_but_loses_and_doubles_nothing() {
    let url = postgres_url();
    let (proxy, proxied) = CutProxy::postgres(&url);
    let (broker, t, records, tally) = setup(20_000);
    let schema = unique("ft_pgout").replace('-', "_");
    let d = Flagtally::start(&config(&t, &broker, &proxied, &schema), &unique("pgout"));
    let (first, rest) = records.split_at(5000);
    produce(&broker, &t.input, 2, first);
    let mut db = sql(&url);
    assert!(eventually(Duration::from_secs(60), || {
        counted(&mut db, &schema).values().sum::<u64>() > 0
    }));
    proxy.cut();
    produce(&broker, &t.input, 2, rest);
    std::thread::sleep(Duration::from_secs(20));
    // The processor kept going meanwhile: every summary is already on its topic.
    let mut n = 0;
    read_until(
        &broker,
        &t.summary,
        Duration::from_secs(30),
        summed_counters(tally.evaluations()),
    )
    .iter()
    .for_each(|_| n += 1);
    assert!(n > 0);
    assert!(d.log_text().contains("write failed"), "{}", d.log_text());
    proxy.restore();
    wait_exact(&mut db, &schema, &tally, &d);
    assert!(eventually(Duration::from_secs(20), || {
        count(&mut db, &schema, "flagtally_feature_events") == tally.tracked
    }));
    assert!(d.stop(Duration::from_secs(20)).success());
}

#[test]
fn an_unreachable_database_is_reported_not_fatal() {
    let (broker, t, _, _) = setup(0);
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let cfg = config(
        &t,
        &broker,
        &format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
        "unreachable",
    );
    let d = Flagtally::start_with_env(
        &cfg,
        &unique("pgdown"),
        &[("FLAGTALLY__ADMIN__LISTEN", &admin)],
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            http_get(&admin, "/readyz").is_some_and(|(s, body)| {
                s == 503
                    && body.contains("sink unreachable")
                    && body.contains("connecting to PostgreSQL")
            })
        }),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("cannot reach the destination"));
    assert_eq!(http_get(&admin, "/healthz").unwrap().0, 200);
    assert!(d.stop(Duration::from_secs(20)).success());
}

/// A constraint the operator added (`CHECK (flag_key <> 'flag-3')`) refuses some
/// feature events: PostgreSQL answers SQLSTATE 23514, a permanent error. The sink
/// bisects each refused batch to the rows at fault, sets each aside as one dead letter
/// (reason `sink_rejected`, with PostgreSQL's message), and writes everything else.
#[test]
fn rows_a_constraint_refuses_become_dead_letters() {
    let url = postgres_url();
    let (broker, t, records, tally) = setup(20_000);
    let schema = unique("ft_pgcheck").replace('-', "_");
    let mut db = sql(&url);
    db.batch_execute(&format!(
        "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\";\n{}\n\
         ALTER TABLE flagtally_feature_events ADD CONSTRAINT no_flag_3 CHECK (flag_key <> 'flag-3');",
        std::fs::read_to_string(repo().join("schemas/postgres.sql")).unwrap()
    ))
    .unwrap();
    produce(&broker, &t.input, 2, &records);
    let cfg = format!(
        r#"{base}
[[sinks]]
name = "checked"
type = "postgres"
topics = ["{feature}"]
url = "{url}"
schema = "{schema}"
batch_size = 500
batch_timeout = "200ms"
retry_initial = "100ms"
retry_max = "1s"
"#,
        base = t.config_with_threads(&broker, "size = \"10s\"\nidle_timeout = \"1s\"", 1),
        feature = t.feature,
    );
    let d = Flagtally::start(&cfg, &unique("pgcheck"));
    let features = read_until(
        &broker,
        &t.feature,
        Duration::from_secs(120),
        distinct_ids(tally.tracked),
    );
    let refused: u64 = dedupe(&features)
        .values()
        .filter(|r| String::from_utf8_lossy(&r.value).contains("\"key\":\"flag-3\""))
        .count() as u64;
    assert!(refused > 0, "some feature events are of flag-3");
    // The dead-letter topic also holds the pipeline's own (malformed input).
    let from_sink = |r: &Rec| r.header("flagtally-sink") == Some("checked");
    let mut count_ids = distinct_ids(refused);
    // About 2 300 rows are refused, each found by bisecting its batch (about ten
    // transactions): about a minute here alone, and CI once needed more than 90 s with the
    // sink's old per-row costs. The deadline only bounds the wait.
    let dlq = read_until(&broker, &t.dead_letter, Duration::from_secs(180), |r| {
        from_sink(r) && count_ids(r)
    });
    let dlq: Vec<Rec> = dlq.into_iter().filter(from_sink).collect();
    let set_aside = dedupe(&dlq);
    assert_eq!(
        set_aside.len() as u64,
        refused,
        "one dead letter per refused row; log:\n{}",
        d.log_text()
    );
    for r in set_aside.values() {
        assert_eq!(r.header("flagtally-error-reason"), Some("sink_rejected"));
        assert_eq!(r.header("flagtally-sink"), Some("checked"));
        assert!(
            r.header("flagtally-error").unwrap().contains("no_flag_3"),
            "{:?}",
            r.header("flagtally-error")
        );
        assert!(String::from_utf8_lossy(&r.value).contains("flag-3"));
    }
    assert!(
        eventually(Duration::from_secs(30), || count(
            &mut db,
            &schema,
            "flagtally_feature_events"
        ) == tally.tracked - refused),
        "{} rows of {}; log:\n{}",
        count(&mut db, &schema, "flagtally_feature_events"),
        tally.tracked - refused,
        d.log_text()
    );
    let log = d.log_text();
    assert!(log.contains("bisecting"), "{log}");
    assert!(d.stop(Duration::from_secs(20)).success());
}

/// Sink instances join and leave while input flows, with `cooperative-sticky`
/// assignment (for the processor and the sinks alike): a rebalance moves only the
/// partitions that change hands, and the partitions an instance keeps go on from their
/// fetch position, so the records it had gathered for them must stay in its batch.
/// Batches gather for 2 s, so every rebalance finds records gathered. Rows exact.
#[test]
fn sinks_joining_and_leaving_under_cooperative_sticky_lose_nothing() {
    let url = postgres_url();
    let broker = broker().to_owned();
    let t = Topics::create(&broker, 4);
    let mut g = Generator::new(GenConfig {
        dialect: GenDialect::Mixed,
        flags: 6,
        tracked_one_in: 10,
        ..GenConfig::default()
    });
    let records: Vec<Vec<u8>> = (0..40_000).map(|_| g.next_record()).collect();
    let tally = g.into_tally();
    let schema = unique("ft_pgcoop").replace('-', "_");
    let cfg = config(&t, &broker, &url, &schema)
        .replace(
            "consumer_properties = {",
            "consumer_properties = { \"partition.assignment.strategy\" = \"cooperative-sticky\",",
        )
        .replace("batch_size = 500", "batch_size = 100000")
        .replace("batch_timeout = \"200ms\"", "batch_timeout = \"2s\"");
    let (h, done) = produce_paced(
        &broker,
        &t.input,
        std::sync::Arc::new(records),
        4,
        40,
        Duration::from_millis(500),
    );
    let name = unique("pgcoop");
    let a = Flagtally::start(&cfg, &format!("{name}-a"));
    a.wait_log("partitions assigned", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let b = Flagtally::start(&cfg, &format!("{name}-b"));
    std::thread::sleep(Duration::from_secs(4));
    let c = Flagtally::start(&cfg, &format!("{name}-c"));
    std::thread::sleep(Duration::from_secs(4));
    assert!(b.stop(Duration::from_secs(25)).success());
    std::thread::sleep(Duration::from_secs(3));
    let d = Flagtally::start(&cfg, &format!("{name}-d"));
    std::thread::sleep(Duration::from_secs(4));
    c.crash();
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.stop(Duration::from_secs(25)).success());
    h.join().unwrap();
    assert!(done.load(std::sync::atomic::Ordering::Relaxed));
    let mut db = sql(&url);
    wait_exact(&mut db, &schema, &tally, &a);
    assert!(eventually(Duration::from_secs(30), || {
        count(&mut db, &schema, "flagtally_feature_events") == tally.tracked
    }));
    assert!(a.stop(Duration::from_secs(25)).success());
}

#[test]
fn tls_modes_encrypt_and_verify_as_libpq_does() {
    // The test PostgreSQL serves a certificate for "localhost", signed by the CA
    // scripts/infra.sh made. Each mode connects (or not) as libpq would.
    use flagtally::sink::destination::Destination as _;
    use flagtally::sink::postgres::{Postgres, PostgresSettings};
    let env = postgres_env();
    let ca = env
        .get("FLAGTALLY_TEST_POSTGRES_CA")
        .expect("infra.sh postgres turns TLS on");
    let other = &env["FLAGTALLY_TEST_POSTGRES_OTHER_CA"];
    let base = "postgres:flagtally@127.0.0.1:5432/postgres";
    let by_name = "postgres:flagtally@localhost:5432/postgres";
    let connect = |url: String| {
        let mut p = Postgres::new(
            "tls",
            PostgresSettings {
                url,
                schema: unique("ft_tls").replace('-', "_"),
                create_tables: true,
                featbit_env_id: None,
                timeout: Duration::from_secs(5),
            },
        );
        p.connect().map_err(|e| format!("{e:#}"))
    };
    for url in [
        format!("postgresql://{base}?sslmode=require"),
        format!("postgresql://{base}?sslmode=verify-ca&sslrootcert={ca}"),
        format!("postgresql://{by_name}?sslmode=verify-full&sslrootcert={ca}"),
        format!(
            "host=localhost user=postgres password=flagtally dbname=postgres sslmode=verify-full sslrootcert={ca}"
        ),
        format!("postgresql://{base}?sslmode=disable"),
    ] {
        connect(url.clone()).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    for (url, why) in [
        (
            format!("postgresql://{base}?sslmode=verify-full&sslrootcert={ca}"),
            "not valid for name",
        ),
        (
            format!("postgresql://{by_name}?sslmode=verify-full&sslrootcert={other}"),
            "UnknownIssuer",
        ),
        (
            format!("postgresql://{base}?sslmode=require&sslrootcert={other}"),
            "UnknownIssuer",
        ),
    ] {
        let e = connect(url.clone()).expect_err(&url);
        assert!(e.contains("sslmode=") && e.contains(why), "{url}: {e}");
    }
    // The server's own view: a require connection is encrypted, a disable one is not
    // (each found by the sink's name, its application_name).
    let mut db = sql(&postgres_url());
    for (mode, encrypted) in [("require", true), ("disable", false)] {
        let name = unique("pgssl");
        let mut p = Postgres::new(
            &name,
            PostgresSettings {
                url: format!("postgresql://{base}?sslmode={mode}"),
                schema: unique("ft_tls").replace('-', "_"),
                create_tables: true,
                featbit_env_id: None,
                timeout: Duration::from_secs(5),
            },
        );
        p.connect().unwrap();
        let rows = db
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.application_name = $1",
                &[&format!("flagtally sink {name}")],
            )
            .unwrap();
        assert_eq!(rows.len(), 1, "{mode}: one connection named for the sink");
        assert_eq!(rows[0].get::<_, bool>(0), encrypted, "{mode}");
    }
    // Rows through a verify-full connection (TLS is required in that mode): exact.
    let url = format!("postgresql://{by_name}?sslmode=verify-full&sslrootcert={ca}");
    let (broker, t, records, tally) = setup(2_000);
    produce(&broker, &t.input, 2, &records);
    let schema = unique("ft_pgtls").replace('-', "_");
    let d = Flagtally::start(&config(&t, &broker, &url, &schema), &unique("pgtls"));
    wait_exact(&mut db, &schema, &tally, &d);
    assert!(d.stop(Duration::from_secs(20)).success());
}
