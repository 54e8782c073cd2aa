//! `flagtally quickstart`: the whole pipeline on one machine with nothing installed.
//!
//! An in-process Kafka-protocol broker (librdkafka's mock cluster), the generator
//! writing evaluations in the LaunchDarkly, go-feature-flag and FeatBit dialects (some
//! malformed), the processor with default settings (shorter windows and idle timeout,
//! so results show within seconds), and a reader that writes every output topic to
//! NDJSON files and keeps a table of the summary counters, shown live. It ends when
//! the summaries account for every evaluation generated (or on Ctrl-C), and says
//! whether the counts match the generator's tally exactly.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Headers as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _};
use rdkafka::{ClientConfig, Message as _};

use crate::admin::Admin;
use crate::config::Config;
use crate::generate::{GenConfig, GenDialect, Generator, Tally};
use crate::kafka::producer::PolledProducer;
use crate::pipeline::pool::Pool;

/// The mock broker keeps at most 5 MiB per partition: this many records fit in the
/// input partitions with room to spare.
pub const MAX_COUNT: u64 = 40_000;
const INPUT_PARTITIONS: i32 = 4;
const INPUT: &str = "flag-evaluations";
/// Output topics and the file each is written to.
const OUTPUTS: [(&str, &str); 6] = [
    ("flagtally.summaries", "summaries.ndjson"),
    ("flagtally.features", "features.ndjson"),
    ("flagtally.index", "index.ndjson"),
    ("flagtally.identify", "identify.ndjson"),
    ("flagtally.custom", "custom.ndjson"),
    ("flagtally.dead-letters", "dead-letters.ndjson"),
];
const SUMMARIES: &str = OUTPUTS[0].0;
const DEAD_LETTERS: &str = OUTPUTS[5].0;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Records to generate (at most [`MAX_COUNT`]).
    pub count: u64,
    /// Records per second (0: as fast as possible).
    pub rate: u64,
    pub flags: u32,
    /// One record in N is malformed (0: none).
    pub malformed_one_in: u64,
    pub out_dir: PathBuf,
    /// Redraw the table in place (a terminal); else print progress lines.
    pub live: bool,
    /// Serve `/metrics`, `/healthz`, `/readyz` here.
    pub admin: Option<std::net::SocketAddr>,
    pub seed: u64,
}

/// The end of a run: what was generated and what the summaries counted.
#[derive(Debug)]
pub struct Report {
    pub generated: Tally,
    pub counted: BTreeMap<(String, String), u64>,
    pub dead_letters: u64,
    /// Every evaluation counted exactly and every malformed record dead-lettered.
    pub exact: bool,
    pub interrupted: bool,
}

/// What the reader has seen so far.
#[derive(Debug, Default)]
struct Seen {
    summaries: Tally,
    dead_letters: u64,
    records: BTreeMap<&'static str, u64>,
}

/// The processor's configuration: the defaults, over the mock broker's topics, with
/// 10-second windows and a 2-second idle timeout so a short run shows its results.
///
/// One worker: the mock broker's group coordinator (librdkafka's test mock) sometimes
/// holds one of two members joining together in its JoinGroup for 40 s or more, and
/// that member's partitions go unread meanwhile (seen once in CI and in 1 of 12 runs
/// with four quickstarts at once). Workers sharing a group are tested on Apache Kafka.
fn config(brokers: &str) -> anyhow::Result<Config> {
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "flagtally-quickstart"
input_topics = ["{INPUT}"]
[window]
size = "10s"
lateness = "2s"
idle_timeout = "2s"
[output]
dead_letter_topic = "{DEAD_LETTERS}"
[output.topics]
summary = "{SUMMARIES}"
feature = "{}"
index = "{}"
identify = "{}"
custom = "{}"
[processing]
commit_interval = "500ms"
threads = 1
[admin]
listen = "off"
"#,
        OUTPUTS[1].0, OUTPUTS[2].0, OUTPUTS[3].0, OUTPUTS[4].0
    );
    let mut config =
        Config::parse(&text).map_err(|e| anyhow::anyhow!("the embedded configuration: {e}"))?;
    // The mock cluster does not answer DescribeConfigs: Kafka's default limits hold.
    config.output.describe_topics = false;
    Ok(config)
}

/// Runs the quickstart until the counts are complete or `stop` is set.
pub fn run(opts: &Options, stop: &Arc<AtomicBool>) -> anyhow::Result<Report> {
    anyhow::ensure!(
        (1..=MAX_COUNT).contains(&opts.count),
        "--count must be between 1 and {MAX_COUNT} (the in-process broker keeps 5 MiB per partition)"
    );
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let mock = MockCluster::new(1).context("starting the in-process broker")?;
    let brokers = mock.bootstrap_servers();
    mock.create_topic(INPUT, INPUT_PARTITIONS, 1)?;
    for (topic, _) in OUTPUTS {
        mock.create_topic(topic, 2, 1)?;
    }
    let config = config(&brokers)?;
    mock.create_topic(&config.processing.checkpoint_topic, 1, 1)?;

    let admin = Arc::new(Admin::default());
    if let Some(addr) = opts.admin {
        let bound = crate::admin::serve(addr, Arc::clone(&admin))
            .with_context(|| format!("admin server on {addr}"))?;
        eprintln!("metrics: http://{bound}/metrics");
    }

    // The processor.
    let pipeline_stop = Arc::new(AtomicBool::new(false));
    let hard_stop = Arc::new(AtomicBool::new(false));
    let workers = (0..config.processing.workers())
        .map(|w| config.pipeline_plan(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pool = Pool::start(workers, &hard_stop, &admin)?;
    let processor = {
        let stop = Arc::clone(&pipeline_stop);
        std::thread::Builder::new()
            .name("pipelines".to_owned())
            .spawn(move || pool.run(&stop, &mut |_| {}))?
    };

    // The reader: output topics → files and the table.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (seen, stop, dir, brokers) = (
            Arc::clone(&seen),
            Arc::clone(&reader_stop),
            opts.out_dir.clone(),
            brokers.clone(),
        );
        std::thread::Builder::new()
            .name("reader".to_owned())
            .spawn(move || read_outputs(&brokers, &dir, &seen, &stop))?
    };

    // The generator.
    let generated = Arc::new(AtomicU64::new(0));
    let mut generator = Some({
        let (generated, stop, opts) = (Arc::clone(&generated), Arc::clone(stop), opts.clone());
        let brokers = brokers.clone();
        std::thread::Builder::new()
            .name("generator".to_owned())
            .spawn(move || generate(&brokers, &opts, &generated, &stop))?
    });
    let join = |g: std::thread::JoinHandle<anyhow::Result<Tally>>| {
        g.join()
            .map_err(|_| anyhow::anyhow!("the generator panicked"))?
    };

    let mut screen = Screen::new(opts.live);
    let started = Instant::now();
    let mut tally: Option<Tally> = None;
    let mut done_at: Option<Instant> = None;
    let records_in = admin.metrics.records_in(INPUT);
    let mut last = (Instant::now(), 0u64);
    let mut rate = 0.0;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(g) = generator.take_if(|g| g.is_finished()) {
            tally = Some(join(g)?);
            done_at = Some(Instant::now());
        }
        let read = records_in.get();
        if last.0.elapsed() >= Duration::from_secs(1) {
            rate = (read - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), read);
        }
        let complete = {
            let seen = lock(&seen);
            screen.draw(&Frame {
                seen: &seen,
                generated: generated.load(Ordering::Relaxed),
                total: opts.count,
                read,
                rate,
                elapsed: started.elapsed(),
            });
            tally.as_ref().is_some_and(|t| {
                seen.summaries.evaluations() >= t.evaluations() && seen.dead_letters >= t.malformed
            })
        };
        if complete || stop.load(Ordering::Relaxed) || processor.is_finished() {
            break;
        }
        if done_at.is_some_and(|d| d.elapsed() > Duration::from_secs(60)) {
            tracing::error!("the summaries did not account for every evaluation within 60 s");
            break;
        }
    }
    let interrupted = stop.load(Ordering::Relaxed);
    pipeline_stop.store(true, Ordering::Relaxed);
    let result = processor
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline panicked"))?;
    // Let the reader take what the drain wrote.
    std::thread::sleep(Duration::from_millis(500));
    reader_stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    result.context("the pipeline")?;
    let generated = match (tally, generator) {
        (Some(t), _) => t,
        (None, Some(g)) => join(g)?,
        (None, None) => anyhow::bail!("the generator's tally is lost"),
    };
    let seen = lock(&seen);
    let counted = seen.summaries.by_flag_variation();
    let exact =
        counted == generated.by_flag_variation() && seen.dead_letters == generated.malformed;
    Ok(Report {
        generated,
        counted,
        dead_letters: seen.dead_letters,
        exact,
        interrupted,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn generate(
    brokers: &str,
    opts: &Options,
    generated: &AtomicU64,
    stop: &AtomicBool,
) -> anyhow::Result<Tally> {
    let mut g = Generator::new(GenConfig {
        dialect: GenDialect::Mixed,
        flags: opts.flags,
        variations: 3,
        contexts: 500,
        // Event time advances 5 ms per record and arrives up to 1 s out of order:
        // 10-second windows close while the run goes on.
        step_ms: 5,
        skew_ms: 1000,
        malformed_one_in: opts.malformed_one_in,
        tracked_one_in: 10,
        seed: opts.seed,
        ..GenConfig::default()
    });
    let producer: PolledProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let pace = Pace::new(opts.rate);
    for i in 0..opts.count {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        pace.wait(i);
        let value = g.next_record();
        let key = format!("{i}");
        let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(INPUT)
            .payload(value.as_slice())
            .key(key.as_bytes());
        crate::kafka::producer::send_waiting(&producer, rec, &|| stop.load(Ordering::Relaxed))?;
        generated.store(i + 1, Ordering::Relaxed);
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(g.into_tally())
}

/// Spreads records evenly over time: record `i` goes out at `i / rate` seconds.
#[derive(Debug)]
pub struct Pace {
    start: Instant,
    rate: u64,
}

impl Pace {
    /// `rate` records per second; 0 never waits.
    pub fn new(rate: u64) -> Self {
        Self {
            start: Instant::now(),
            rate,
        }
    }

    pub fn wait(&self, i: u64) {
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(i as f64 / self.rate as f64);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

fn read_outputs(
    brokers: &str,
    dir: &Path,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "flagtally-quickstart-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let topics: Vec<&str> = OUTPUTS.iter().map(|(t, _)| *t).collect();
    consumer.subscribe(&topics)?;
    let mut files = BTreeMap::new();
    for (topic, file) in OUTPUTS {
        let path = dir.join(file);
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        files.insert(topic, BufWriter::new(f));
    }
    while !stop.load(Ordering::Relaxed) {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            for f in files.values_mut() {
                f.flush()?;
            }
            continue;
        };
        let m = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("quickstart reader: {e}");
                continue;
            }
        };
        let Some((topic, _)) = OUTPUTS.iter().find(|(t, _)| *t == m.topic()) else {
            continue;
        };
        let value = m.payload().unwrap_or_default();
        let out = files
            .get_mut(topic)
            .context("an output file for every topic")?;
        let mut seen = lock(seen);
        *seen.records.entry(topic).or_default() += 1;
        if *topic == DEAD_LETTERS {
            seen.dead_letters += 1;
            let header = |name: &str| {
                m.headers()
                    .and_then(|hs| hs.iter().find(|h| h.key == name))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let line = serde_json::json!({
                "error": header(crate::deadletter::header::ERROR),
                "reason": header(crate::deadletter::header::REASON),
                "source": format!("{}/{}/{}",
                    header(crate::deadletter::header::SOURCE_TOPIC).unwrap_or_default(),
                    header(crate::deadletter::header::SOURCE_PARTITION).unwrap_or_default(),
                    header(crate::deadletter::header::SOURCE_OFFSET).unwrap_or_default()),
                "record": String::from_utf8_lossy(value),
            });
            writeln!(out, "{line}")?;
        } else {
            let text = String::from_utf8_lossy(value);
            if *topic == SUMMARIES {
                seen.summaries
                    .add_summary_json(&text)
                    .context("reading a summary back")?;
            }
            writeln!(out, "{text}")?;
        }
    }
    for f in files.values_mut() {
        f.flush()?;
    }
    Ok(())
}

struct Frame<'a> {
    seen: &'a Seen,
    generated: u64,
    total: u64,
    read: u64,
    rate: f64,
    elapsed: Duration,
}

/// The terminal: a table redrawn in place, or (not a terminal) a progress line now
/// and then.
struct Screen {
    live: bool,
    lines: usize,
    last_line: Instant,
}

impl Screen {
    fn new(live: bool) -> Self {
        Self {
            live,
            lines: 0,
            last_line: Instant::now(),
        }
    }

    fn draw(&mut self, f: &Frame<'_>) {
        let mut out = std::io::stdout().lock();
        if !self.live {
            if self.last_line.elapsed() >= Duration::from_secs(2) {
                self.last_line = Instant::now();
                let _ = writeln!(
                    out,
                    "[{:>5.1}s] generated {}/{}, processed {} ({:.0}/s), evaluations summarised {}, dead letters {}",
                    f.elapsed.as_secs_f64(),
                    f.generated,
                    f.total,
                    f.read,
                    f.rate,
                    f.seen.summaries.evaluations(),
                    f.seen.dead_letters
                );
            }
            return;
        }
        let text = table(f);
        if self.lines > 0 {
            // Up to the table's first line, clear to the end of the screen.
            let _ = write!(out, "\x1b[{}A\x1b[J", self.lines);
        }
        self.lines = text.lines().count();
        let _ = write!(out, "{text}");
        let _ = out.flush();
    }
}

fn table(f: &Frame<'_>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "flagtally quickstart  {:>5.1}s  generated {}/{}  processed {} ({:.0} events/s)  dead letters {}",
        f.elapsed.as_secs_f64(),
        f.generated,
        f.total,
        f.read,
        f.rate,
        f.seen.dead_letters
    );
    s.push_str(&counts_table(&f.seen.summaries.by_flag_variation(), None));
    s
}

/// The counts per flag and variation, one flag per row; with `expected`, a mark per
/// flag saying whether it matches.
pub fn counts_table(
    counted: &BTreeMap<(String, String), u64>,
    expected: Option<&BTreeMap<(String, String), u64>>,
) -> String {
    use std::fmt::Write as _;
    let mut variations: Vec<&String> = counted
        .keys()
        .chain(expected.into_iter().flat_map(|e| e.keys()))
        .map(|(_, v)| v)
        .collect();
    variations.sort();
    variations.dedup();
    let mut flags: Vec<&String> = counted
        .keys()
        .chain(expected.into_iter().flat_map(|e| e.keys()))
        .map(|(f, _)| f)
        .collect();
    flags.sort_by_key(|f| (f.len(), *f));
    flags.dedup();
    let mut s = String::new();
    let _ = write!(s, "{:<12}", "flag");
    for v in &variations {
        let _ = write!(s, " {:>14}", format!("variation {}", v.trim_matches('"')));
    }
    let _ = writeln!(s, " {:>10}", "total");
    for flag in flags {
        let _ = write!(s, "{flag:<12}");
        let mut total = 0;
        let mut matches = true;
        for v in &variations {
            let key = (flag.clone(), (*v).clone());
            let n = counted.get(&key).copied().unwrap_or(0);
            total += n;
            if let Some(e) = expected {
                matches &= e.get(&key).copied().unwrap_or(0) == n;
            }
            let _ = write!(s, " {n:>14}");
        }
        let mark = match expected {
            Some(_) if matches => "  ok",
            Some(_) => "  MISMATCH",
            None => "",
        };
        let _ = writeln!(s, " {total:>10}{mark}");
    }
    s
}

impl Report {
    /// The final table and the check against the generator's tally.
    pub fn render(&self, out_dir: &Path) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let expected = self.generated.by_flag_variation();
        let _ = writeln!(s);
        s.push_str(&counts_table(&self.counted, Some(&expected)));
        let _ = writeln!(
            s,
            "(LaunchDarkly counters name variations by index, go-feature-flag and FeatBit by name)"
        );
        let counted: u64 = self.counted.values().sum();
        let _ = writeln!(
            s,
            "\nevaluations: counted {counted}, generated {}",
            self.generated.evaluations()
        );
        let _ = writeln!(
            s,
            "dead letters: {}, malformed records generated {}",
            self.dead_letters, self.generated.malformed
        );
        let verdict = if self.exact {
            "exact: every evaluation counted once, every malformed record dead-lettered"
        } else if self.interrupted {
            "interrupted: the counts above are partial"
        } else {
            "MISMATCH: the counts differ from the generator's tally"
        };
        let _ = writeln!(s, "result: {verdict}");
        let _ = writeln!(s, "outputs: {}", out_dir.display());
        for (_, file) in OUTPUTS {
            let _ = writeln!(s, "  {}", out_dir.join(file).display());
        }
        s
    }
}

/// Whether stdout is a terminal (the live table redraws in place only there).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
