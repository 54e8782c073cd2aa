//! Harness for tests against a real broker (Apache Kafka, started by `scripts/infra.sh`): unique
//! names, topic creation, producing generated input, running the flagtally binary as a
//! child process, reading output topics, and the tallies the outputs must match.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flagtally::decode::{Decoded, Decoder, Dialect, Limits};
use flagtally::emit::{EmitConfig, Emitter};
use flagtally::generate::{GenConfig, GenDialect, Generator, Tally};
use flagtally::kafka::producer::{PolledProducer, block_on, send_waiting};
use flagtally::window::{Engine, EngineConfig, Output, PartitionId, SourcePos, WindowConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaResult;
use rdkafka::message::Headers as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _};
use rdkafka::{ClientConfig, Message as _};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/infra.sh start NAME` and returns the broker address. A broker of that
/// name that was stopped or killed restarts on its log directory and port.
pub fn start_broker(name: &str) -> String {
    start_broker_env(name)
        .remove("FLAGTALLY_TEST_BROKER")
        .expect("infra.sh start names the broker")
}

/// `scripts/infra.sh start NAME`'s exports: the plaintext address, the TLS listeners'
/// addresses, the certificates' directory, the SASL user.
pub fn start_broker_env(name: &str) -> BTreeMap<String, String> {
    let out = Command::new("bash")
        .arg(repo().join("scripts/infra.sh"))
        .args(["start", name])
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/infra.sh");
    assert!(out.status.success(), "scripts/infra.sh start {name} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let vars: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .flat_map(str::split_whitespace)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(
        vars.contains_key("FLAGTALLY_TEST_BROKER"),
        "unexpected infra.sh output {text:?}"
    );
    vars
}

/// The test broker's TLS listeners (the same cluster as [`broker`]).
#[derive(Clone, Debug)]
pub struct TlsBroker {
    /// SASL_SSL, SCRAM-SHA-512, the CA-signed certificate.
    pub sasl_ssl: String,
    /// SSL with client certificates required.
    pub mtls: String,
    /// `ca.pem`, `client.pem`/`client.key`, `expired.pem`/`expired.key`,
    /// `other-ca.pem`, and `client-encrypted.key` (`client.key` encrypted with
    /// `client_key_password`).
    pub dir: PathBuf,
    pub client_key_password: String,
    pub user: String,
    pub password: String,
    /// A SCRAM user with only the ACLs a test grants it (the others are super users).
    pub acl_user: String,
    pub acl_password: String,
    /// The subject the OIDC test's tokens name (a super user); `dir/oauth.key` signs
    /// them, `dir/jwks.json` checks them.
    pub oidc_user: String,
}

/// [`TlsBroker`] of the shared test broker: from the environment the test command
/// sets, else from the broker `broker()` started.
pub fn tls_broker() -> &'static TlsBroker {
    static TLS: OnceLock<TlsBroker> = OnceLock::new();
    TLS.get_or_init(|| {
        let vars: BTreeMap<String, String> = match std::env::var("FLAGTALLY_TEST_BROKER_SASL_SSL") {
            Ok(v) if !v.is_empty() => std::env::vars().collect(),
            _ => {
                let _ = broker();
                start_broker_env("cargo-test")
            }
        };
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{k} is not set (scripts/infra.sh start exports it)"))
        };
        TlsBroker {
            sasl_ssl: get("FLAGTALLY_TEST_BROKER_SASL_SSL"),
            mtls: get("FLAGTALLY_TEST_BROKER_MTLS"),
            dir: PathBuf::from(get("FLAGTALLY_TEST_TLS")),
            client_key_password: get("FLAGTALLY_TEST_CLIENT_KEY_PASSWORD"),
            user: get("FLAGTALLY_TEST_SASL_USER"),
            password: get("FLAGTALLY_TEST_SASL_PASSWORD"),
            acl_user: get("FLAGTALLY_TEST_ACL_USER"),
            acl_password: get("FLAGTALLY_TEST_ACL_PASSWORD"),
            oidc_user: get("FLAGTALLY_TEST_OIDC_USER"),
        }
    })
}

/// `scripts/infra.sh ACTION NAME`: `stop` (clean), `kill` (kill -9) or `reset` (stop
/// and delete its data).
pub fn broker_do(action: &str, name: &str) {
    let status = infra_do(action, name).unwrap();
    assert!(status.success(), "infra.sh {action} {name}");
}

/// `infra.sh reset NAME` when dropped: a failed test's broker of its own does not
/// outlive it (nor keep its data).
pub struct ResetOnDrop(pub String);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        let _ = infra_do("reset", &self.0);
    }
}

/// [`broker_do`] without the check: for a guard that must not panic while unwinding.
pub fn infra_do(action: &str, name: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("bash")
        .arg(repo().join("scripts/infra.sh"))
        .args([action, name])
        .status()
}

/// The shared test broker: `FLAGTALLY_TEST_BROKER` when the test command started one,
/// else one started here (and left running for the next test run to reuse).
pub fn broker() -> &'static str {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER.get_or_init(|| match std::env::var("FLAGTALLY_TEST_BROKER") {
        Ok(b) if !b.is_empty() => b,
        _ => start_broker("cargo-test"),
    })
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

pub fn create_topics(broker: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(1)))
        .collect();
    let results = block_on(admin.create_topics(&new, &AdminOptions::new())).unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Creates one topic with topic-level settings (`max.message.bytes`, …).
pub fn create_topic_with(broker: &str, topic: &str, partitions: i32, settings: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let new = settings.iter().fold(
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        |t, (k, v)| t.set(k, v),
    );
    for r in block_on(admin.create_topics(&[new], &AdminOptions::new())).unwrap() {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Changes one setting of an existing topic (while flagtally runs, say).
pub fn alter_topic(broker: &str, topic: &str, name: &str, value: &str) {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(name, value);
    for r in block_on(admin.alter_configs(&[alter], &AdminOptions::new())).unwrap() {
        r.unwrap();
    }
}

/// A topic's configuration value, as the broker describes it.
pub fn topic_config(broker: &str, topic: &str, name: &str) -> Option<String> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let results =
        block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()))
            .unwrap();
    let resource = results.into_iter().next()?.ok()?;
    resource.get(name).and_then(|e| e.value.clone())
}

/// The first segment file of partition `partition` of `topic`, wherever the test
/// broker (`scripts/infra.sh`) keeps it.
pub fn segment(topic: &str, partition: i32) -> PathBuf {
    let infra = std::env::var("FLAGTALLY_INFRA").map_or_else(
        |_| {
            let cache = std::env::var("XDG_CACHE_HOME").map_or_else(
                |_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"),
                PathBuf::from,
            );
            cache.join("flagtally")
        },
        PathBuf::from,
    );
    for run in std::fs::read_dir(infra.join("run")).unwrap().flatten() {
        let file = run
            .path()
            .join("data")
            .join(format!("{topic}-{partition}"))
            .join("00000000000000000000.log");
        if file.exists() {
            return file;
        }
    }
    panic!("no segment file for {topic}-{partition}");
}

/// The compression codec of each record batch in a segment file, as the broker stored
/// it (the low 3 bits of the batch's attributes: 0 none, 1 gzip, 2 snappy, 3 lz4,
/// 4 zstd).
pub fn batch_codecs(file: &Path) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    let (mut at, mut codecs) = (0usize, Vec::new());
    // baseOffset (8), batchLength (4), partitionLeaderEpoch (4), magic (1), crc (4),
    // attributes (2).
    while at + 23 <= bytes.len() {
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        if len == 0 || at + 12 + len > bytes.len() {
            break;
        }
        codecs.push(bytes[at + 22] & 0x07);
        at += 12 + len;
    }
    codecs
}

/// The (low, high) watermarks of each partition of `topic`: a low one above 0 where
/// the broker deleted the oldest records. Retries for up to a minute, so a test that
/// restarts the broker can ask while leadership is still moving.
pub fn watermarks(broker: &str, topic: &str) -> Vec<(i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let attempt = || -> KafkaResult<Vec<(i64, i64)>> {
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = md.topics().first().map_or(0, |t| t.partitions().len());
        (0..partitions as i32)
            .map(|p| c.fetch_watermarks(topic, p, Duration::from_secs(10)))
            .collect()
    };
    loop {
        match attempt() {
            Ok(w) => return w,
            Err(e) if Instant::now() < deadline => {
                eprintln!("watermarks of {topic}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("watermarks of {topic}: {e}"),
        }
    }
}

/// The high watermark of partition 0 of `topic`.
pub fn high_watermark(broker: &str, topic: &str) -> i64 {
    watermarks(broker, topic)[0].1
}

pub fn producer(broker: &str) -> PolledProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .create()
        .unwrap()
}

/// Produces values round-robin over `partitions` partitions (explicitly, so each
/// partition gets its share) and waits until all are acknowledged.
pub fn produce(broker: &str, topic: &str, partitions: i32, values: &[Vec<u8>]) {
    let p = producer(broker);
    for (i, v) in values.iter().enumerate() {
        send(&p, topic, (i as i32) % partitions, v);
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

pub fn send(p: &PolledProducer<DefaultProducerContext>, topic: &str, partition: i32, v: &[u8]) {
    let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(partition).payload(v);
    send_waiting(p, rec, &|| false).unwrap();
}

/// `n` generated records in the three dialects (8 flags, 500 contexts, 1 in 50
/// tracked) and what they hold.
pub fn generated(n: usize, seed: u64) -> (Vec<Vec<u8>>, Tally) {
    let mut g = Generator::new(GenConfig {
        dialect: GenDialect::Mixed,
        flags: 8,
        contexts: 500,
        tracked_one_in: 50,
        seed,
        ..GenConfig::default()
    });
    let records = (0..n).map(|_| g.next_record()).collect();
    (records, g.into_tally())
}

/// A warehouse-sink test's start: the test broker, fresh topics (2 input
/// partitions), and `n` records generated (mixed dialects) with `config`'s flags,
/// contexts, tracked share and malformed share, with what they hold.
pub fn sink_case(n: usize, config: GenConfig) -> (String, Topics, Vec<Vec<u8>>, Tally) {
    let broker = broker().to_owned();
    let t = Topics::create(&broker, 2);
    let mut g = Generator::new(GenConfig {
        dialect: GenDialect::Mixed,
        ..config
    });
    let records: Vec<Vec<u8>> = (0..n).map(|_| g.next_record()).collect();
    (broker, t, records, g.into_tally())
}

/// The topics one flagtally test run uses.
#[derive(Clone, Debug)]
pub struct Topics {
    pub input: String,
    pub summary: String,
    pub feature: String,
    pub index: String,
    pub dead_letter: String,
    pub late: String,
    pub group: String,
}

impl Topics {
    /// Unique names, nothing created.
    pub fn named() -> Self {
        Self {
            input: unique("in"),
            summary: unique("summary"),
            feature: unique("feature"),
            index: unique("index"),
            dead_letter: unique("dlq"),
            late: unique("late"),
            group: unique("group"),
        }
    }

    /// Every topic with its partition count (the checkpoint topic included).
    pub fn all(&self, input_partitions: i32) -> Vec<(String, i32)> {
        vec![
            (self.input.clone(), input_partitions),
            (self.summary.clone(), 2),
            (self.feature.clone(), 2),
            (self.index.clone(), 1),
            (self.dead_letter.clone(), 1),
            (self.late.clone(), 1),
            (format!("{}-checkpoints", self.group), 1),
        ]
    }

    pub fn create(broker: &str, input_partitions: i32) -> Self {
        let t = Self::named();
        let all = t.all(input_partitions);
        let refs: Vec<(&str, i32)> = all.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        create_topics(broker, &refs);
        t
    }

    /// A configuration over these topics with two pipeline workers.
    pub fn config(&self, broker: &str, window: &str) -> String {
        self.config_with_threads(broker, window, 2)
    }

    /// A configuration over these topics with `threads` pipeline workers. Tests that
    /// count records without deduplicating run one: in at-least-once mode a second
    /// worker's join is a rebalance, and where the first cannot commit before handing
    /// partitions over (outputs not acknowledged in time), the new owner re-reads them
    /// from the last commit, repeating outputs in the topics (same ids, same bytes).
    pub fn config_with_threads(&self, broker: &str, window: &str, threads: usize) -> String {
        format!(
            r#"
[kafka]
brokers = "{broker}"
group_id = "{group}"
input_topics = ["{input}"]
consumer_properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}

[window]
{window}

[output]
dead_letter_topic = "{dlq}"
topics.summary = "{summary}"
topics.feature = "{feature}"
topics.index = "{index}"
topics.late = "{late}"

[processing]
checkpoint_topic = "{group}-checkpoints"
commit_interval = "500ms"
shutdown_deadline = "20s"
threads = {threads}
"#,
            group = self.group,
            input = self.input,
            dlq = self.dead_letter,
            summary = self.summary,
            feature = self.feature,
            index = self.index,
            late = self.late,
        )
    }
}

/// A flagtally process.
pub struct Flagtally {
    pub child: Child,
    pub log: PathBuf,
}

impl Flagtally {
    /// Starts `flagtally run` with the admin server off (tests run side by side).
    pub fn start(config: &str, name: &str) -> Self {
        Self::start_with_env(config, name, &[("FLAGTALLY__ADMIN__LISTEN", "off")])
    }

    /// The configuration file a process named `name` reads.
    pub fn config_path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join("flagtally-tests")
            .join(format!("{name}.toml"))
    }

    pub fn start_with_env(config: &str, name: &str, env: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join("flagtally-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = Self::config_path(name);
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flagtally"))
            .args(["run", "--config"])
            .arg(&path)
            .env(
                "RUST_LOG",
                std::env::var("FLAGTALLY_TEST_LOG")
                    .unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL: no drain, no commit.
    pub fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for exit up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `n` lines containing `needle` (assignment, restore, …);
    /// panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().matches(needle).count() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{n} × {needle:?} not logged within {timeout:?}; log:\n{}",
            self.log_text()
        );
    }

    /// SIGTERM, and the exit status within `timeout`.
    pub fn stop(mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        let status = self.wait(timeout);
        let log = self.log_text();
        let _ = self.child.kill();
        status.unwrap_or_else(|| panic!("no exit within {timeout:?} after SIGTERM; log:\n{log}"))
    }
}

impl Drop for Flagtally {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One output record.
#[derive(Clone, Debug)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, Vec<u8>>,
}

impl Rec {
    /// A copy of a consumed record.
    pub fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| std::str::from_utf8(v).unwrap())
    }
}

/// Reads a topic from the beginning until `done(each new record)` says so, or
/// `timeout`; returns every record read.
pub fn read_until(
    broker: &str,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&Rec) -> bool,
) -> Vec<Rec> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut recs = Vec::new();
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            recs.push(Rec::of(&m));
            if done(recs.last().unwrap()) {
                break;
            }
        }
    }
    recs
}

/// Counts distinct ids as records arrive: `done` for [`read_until`].
pub fn distinct_ids(target: u64) -> impl FnMut(&Rec) -> bool {
    let mut seen = std::collections::HashSet::new();
    move |r| {
        seen.insert(r.header("flagtally-id").unwrap_or_default().to_owned());
        seen.len() as u64 >= target
    }
}

/// Sums summary counters of distinct ids as records arrive: `done` for
/// [`read_until`], true once they reach `target` evaluations.
pub fn summed_counters(target: u64) -> impl FnMut(&Rec) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut sum = 0;
    move |r| {
        if seen.insert(r.header("flagtally-id").unwrap_or_default().to_owned()) {
            sum += total(&window_tally([r]));
        }
        sum >= target
    }
}

/// Records deduplicated by their `flagtally-id` header; panics if two copies of one id
/// differ in any byte (key, value or headers).
pub fn dedupe(recs: &[Rec]) -> BTreeMap<String, Rec> {
    let mut by_id: BTreeMap<String, Rec> = BTreeMap::new();
    for r in recs {
        let id = r
            .header("flagtally-id")
            .expect("every output has an id")
            .to_owned();
        match by_id.get(&id) {
            Some(first) => {
                assert_eq!(first.value, r.value, "duplicate {id} differs in value");
                assert_eq!(first.key, r.key, "duplicate {id} differs in key");
                assert_eq!(
                    first.headers, r.headers,
                    "duplicate {id} differs in headers"
                );
            }
            None => {
                by_id.insert(id, r.clone());
            }
        }
    }
    by_id
}

/// Counter totals per (flag, variation, version, window start) of summary records.
pub type WindowTally = BTreeMap<(String, String, String, i64), u64>;

pub fn window_tally<'a>(summaries: impl IntoIterator<Item = &'a Rec>) -> WindowTally {
    let mut out = WindowTally::new();
    for r in summaries {
        let start: i64 = r.header("flagtally-window-start").unwrap().parse().unwrap();
        let mut t = Tally::default();
        t.add_summary_json(std::str::from_utf8(&r.value).unwrap())
            .unwrap();
        for ((f, v, ver), n) in t.counters {
            *out.entry((f, v, ver, start)).or_default() += n;
        }
    }
    out
}

/// A window tally's counters summed over windows: per (flag, variation, version).
pub fn per_key(t: WindowTally) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for ((flag, variation, version, _), n) in t {
        *out.entry((flag, variation, version)).or_default() += n;
    }
    out
}

pub fn total(t: &WindowTally) -> u64 {
    t.values().sum()
}

/// What summaries over `records` must add up to, per window: the records run through
/// one engine in one partition with unbounded lateness (so no event is late), then
/// emitted as LaunchDarkly JSON. Window assignment is all this oracle adds: the
/// per-key totals are also checked against the generator's own tally.
pub fn expected_windows(records: &[Vec<u8>], window_ms: i64) -> WindowTally {
    let decoder = Decoder::new(Dialect::Auto, Limits::default());
    let mut engine = Engine::new(EngineConfig {
        window: WindowConfig {
            size_ms: window_ms,
            allowed_lateness_ms: i64::MAX / 4,
            idle_timeout_ms: None,
            max_open_windows: 1 << 20,
            max_keys: usize::MAX,
            ..WindowConfig::default()
        },
        ..EngineConfig::default()
    })
    .unwrap();
    let emitter = Emitter::new(EmitConfig::default());
    let pid = PartitionId::new("oracle", 0);
    let mut outs = Vec::new();
    let mut decoded = Decoded::default();
    for (offset, r) in records.iter().enumerate() {
        decoded.clear();
        decoder.decode(r, &mut decoded);
        for (index, e) in decoded.events.drain(..).enumerate() {
            let pos = SourcePos {
                partition: pid.clone(),
                offset: offset as i64,
                index: index as u32,
            };
            engine.push(&pos, e, 0, &mut outs);
        }
    }
    engine.flush_all(&mut outs);
    let recs: Vec<Rec> = outs
        .iter()
        .filter(|o| matches!(o, Output::Summary(_)))
        .map(|o| {
            let r = emitter.emit(o).unwrap();
            Rec {
                partition: 0,
                offset: 0,
                key: None,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_vec()))
                    .collect(),
            }
        })
        .collect();
    window_tally(&recs)
}

/// The Python of the test venv (`scripts/infra.sh python`: confluent-kafka, fastavro,
/// pyarrow), for the independent readers in `tests/python/`.
pub fn python() -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/infra.sh"))
        .arg("python")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The test PostgreSQL: `FLAGTALLY_TEST_POSTGRES`, else `scripts/infra.sh postgres`.
pub fn postgres_url() -> String {
    postgres_env()
        .remove("FLAGTALLY_TEST_POSTGRES")
        .expect("infra.sh postgres names the database")
}

/// The test PostgreSQL's exports: its URL, and the CA that signed its TLS certificate
/// (`FLAGTALLY_TEST_POSTGRES_CA`) with a CA that did not (`…_OTHER_CA`).
pub fn postgres_env() -> BTreeMap<String, String> {
    if std::env::var("FLAGTALLY_TEST_POSTGRES").is_ok() {
        return std::env::vars()
            .filter(|(k, _)| k.starts_with("FLAGTALLY_TEST_POSTGRES"))
            .collect();
    }
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/infra.sh"))
        .arg("postgres")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .flat_map(str::split_whitespace)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn sql(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// Summary counters per (flag, variation, version) in a PostgreSQL sink's schema, as the
/// tally names them.
pub fn counted(db: &mut postgres::Client, schema: &str) -> BTreeMap<(String, String, String), u64> {
    let rows = db
        .query(
            &format!(
                "SELECT flag_key, COALESCE(variation::text, ''),
                        CASE WHEN unknown THEN 'unknown' ELSE COALESCE(version::text, '') END,
                        sum(count)::bigint
                 FROM \"{schema}\".flagtally_summary_counters GROUP BY 1, 2, 3"
            ),
            &[],
        )
        .unwrap_or_default();
    rows.iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2)),
                u64::try_from(r.get::<_, i64>(3)).unwrap(),
            )
        })
        .collect()
}

/// Produces `records` over `partitions` partitions in `chunks` slices, pausing `pause`
/// after each, on a thread; the flag turns true once all are acknowledged.
pub fn produce_paced(
    broker: &str,
    topic: &str,
    records: std::sync::Arc<Vec<Vec<u8>>>,
    partitions: i32,
    chunks: usize,
    pause: Duration,
) -> (
    std::thread::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let done = Arc::new(AtomicBool::new(false));
    let (broker, topic, flag) = (broker.to_owned(), topic.to_owned(), Arc::clone(&done));
    let h = std::thread::spawn(move || {
        let p = producer(&broker);
        let per = records.len().div_ceil(chunks);
        for (c, chunk) in records.chunks(per).enumerate() {
            for (i, v) in chunk.iter().enumerate() {
                send(&p, &topic, ((c * per + i) as i32) % partitions, v);
            }
            p.flush(Duration::from_secs(60)).unwrap();
            std::thread::sleep(pause);
        }
        flag.store(true, Ordering::Relaxed);
    });
    (h, done)
}

/// Where two window tallies differ, with the summary records of each differing window
/// (source, late and early flags, body): the message of a failed count.
pub fn window_diff(
    got: &WindowTally,
    want: &WindowTally,
    unique: &BTreeMap<String, Rec>,
) -> String {
    let mut diff = String::new();
    let keys: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).collect();
    for k in keys {
        let (g, w) = (
            got.get(k).copied().unwrap_or(0),
            want.get(k).copied().unwrap_or(0),
        );
        if g == w {
            continue;
        }
        diff += &format!("{k:?}: got {g}, want {w}\n");
        for r in unique.values() {
            if r.header("flagtally-window-start") == Some(&k.3.to_string())
                && r.key.as_deref() == Some(k.0.as_bytes())
            {
                diff += &format!(
                    "  {:?} late={:?} early={:?} {}\n",
                    r.header("flagtally-source"),
                    r.header("flagtally-late"),
                    r.header("flagtally-early"),
                    String::from_utf8_lossy(&r.value)
                );
            }
        }
    }
    diff
}

/// Appends a line to the test's report (`target/test-report.txt`), for numbers worth
/// keeping.
pub fn report(line: &str) {
    let path = repo().join("target/test-report.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

pub fn assert_path_exists(p: &Path) {
    assert!(p.exists(), "{} missing", p.display());
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET: (status, body); `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// Polls `f` every 100 ms until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// One HTTP/1.1 request read from `stream`: its request line, its headers (names
/// lower-cased) and its body (`Content-Length` bytes); `None` if the client went away.
pub struct HttpRequest {
    pub line: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

pub fn read_http_request(stream: &std::net::TcpStream) -> Option<HttpRequest> {
    use std::io::{BufRead as _, Read as _};
    let mut reader = std::io::BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = BTreeMap::new();
    let mut header = String::new();
    loop {
        header.clear();
        reader.read_line(&mut header).ok()?;
        let h = header.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let n: usize = headers
        .get("content-length")
        .map_or(0, |v| v.parse().unwrap_or(0));
    let mut body = vec![0; n];
    reader.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        line,
        headers,
        body,
    })
}

/// A TCP proxy to `target` that can be cut: while down, every open connection is closed
/// and new ones are refused (accepted and dropped). Stands in for a destination outage.
pub struct CutProxy {
    pub addr: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl CutProxy {
    pub fn start(target: &str) -> Self {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (d, c, target) = (Arc::clone(&down), Arc::clone(&conns), target.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let mut guard = c.lock().unwrap();
                guard.push(client.try_clone().unwrap());
                guard.push(server.try_clone().unwrap());
                drop(guard);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { addr, down, conns }
    }

    /// A proxy in front of the test PostgreSQL at `url`, and the URL through it.
    pub fn postgres(url: &str) -> (Self, String) {
        let pg: postgres::Config = url.parse().unwrap();
        let (host, port) = match (&pg.get_hosts()[0], pg.get_ports()[0]) {
            (postgres::config::Host::Tcp(h), p) => (h.clone(), p),
            _ => panic!("FLAGTALLY_TEST_POSTGRES must be a TCP address"),
        };
        let proxy = Self::start(&format!("{host}:{port}"));
        let password = pg
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        let proxied = format!(
            "postgresql://{}{password}@{}/{}",
            pg.get_user().unwrap_or("postgres"),
            proxy.addr,
            pg.get_dbname().unwrap_or("postgres")
        );
        (proxy, proxied)
    }

    /// Cuts every connection and refuses new ones until [`CutProxy::restore`].
    pub fn cut(&self) {
        self.down.store(true, Ordering::Relaxed);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::Relaxed);
    }
}

/// The wall clock, in ms since the epoch.
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// One LaunchDarkly feature event of flag `key` (variation 0, version 1) for `user`
/// at `t`.
pub fn feature(t: i64, key: &str, user: &str) -> String {
    format!(
        r#"{{"kind":"feature","creationDate":{t},"key":"{key}","version":1,"userKey":"{user}","variation":0,"value":true,"default":false}}"#
    )
}
