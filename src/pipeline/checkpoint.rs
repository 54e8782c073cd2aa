//! Checkpoints: what a restarted or newly assigned instance needs to know about a
//! partition — where to re-read from and what was already emitted — as a short,
//! versioned text, stored as records of a checkpoint topic (key
//! `<group>/<topic>/<partition>`, latest record wins; compacted when the topic is
//! created by flagtally).
//!
//! Why a topic and not commit metadata: Kafka limits commit metadata to 4 KiB
//! (`offset.metadata.max.bytes`), and some Kafka-protocol brokers accept it without
//! storing it. A checkpoint record is written (and acknowledged) before the group offset
//! is committed, so the committed offset — kept for lag monitoring and as the fetch
//! start — is never past the replay start of the latest checkpoint; re-reading a little
//! more than needed is harmless.
//!
//! A lookup must find the *latest* checkpoint: an older one lacks the idle closes
//! decided after it, and a replay from it would emit different summaries under the
//! same ids. So it reads to the end of everything written, transactions included: in
//! exactly-once mode another instance's checkpoints sit in transactions, and a
//! `read_committed` reader sees nothing past the first open one (the last stable
//! offset). The lookup waits until every transaction open at its start has ended.
//!
//! "Latest" is by writer first, then position. Each record carries its writer's
//! epoch (header [`EPOCH`]): the group generation it was in, or the epoch of the
//! checkpoint it restored from if that is higher. A member that lost its partitions
//! without noticing (a broker outage) may still have a checkpoint in its producer's
//! queue, delivered after the partitions' new owner has restored from an older one,
//! decided idle closes and written its own. By position alone that stale checkpoint
//! would win the next lookup, and a restore from it would close windows elsewhere than
//! the new owner did (the chaos run found this: one summary id, two contents). A
//! partition changes owner only in a newer generation, so a lookup takes the
//! checkpoint of the highest epoch, the latest among equals; records without the header
//! rank lowest. The reader's own generation plays no part: a member restoring while its
//! session has just expired has an old one (a CI run showed this). Carrying the restored
//! epoch forward keeps the order when the group is deleted and made again (its
//! generations restart): new checkpoints tie with the old ones and win by position, as
//! before epochs existed, until the generations pass them.
//!
//! `ft1;n=1200;t=1700000059000;w=1700000049000;i=0;a=1700000040000/o/0/1150.0,…;p=…`
//! - `n` the checkpoint's next offset (everything before it was processed and its
//!   outputs acknowledged); re-reading starts at the lowest `a` offset, or `n`;
//! - `t`, `w` max event time and watermark (`-` for none); `i` 1 when idle;
//! - `a` open accumulators: window start / `o`pen or `l`ate / part / offset.index;
//! - `p` next part numbers of windows closed early: window start / part;
//! - `s` the window settings: size / offset / fingerprint (16 hex digits), and `e` the
//!   settings epoch (see `window`); both absent in checkpoints written before them,
//!   which are taken to match the running settings.
//!
//! A checkpoint's size is bounded by the window settings alone ([`worst_case_bytes`]):
//! at most `max_open_windows` + `max_late_corrections` accumulators and
//! lateness ÷ size + 2 part numbers, each of bounded width. It holds no keys, contexts
//! or counters: those are rebuilt by re-reading. The daemon refuses to start when that
//! bound does not fit the checkpoint topic's `max.message.bytes`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::kafka::KafkaConfig;
use crate::kafka::producer::block_on;
use crate::window::{AccMark, Checkpoint, PartitionId, Settings, WindowConfig};

/// Reads checkpoints back from the checkpoint topic.
pub struct Store {
    /// Each lookup reads with a new consumer made from this (`read_committed`): a
    /// reused one can hold a stale end-of-partition event or error from an earlier
    /// read, which once ended a read early and restored an old checkpoint.
    reader: ClientConfig,
    /// The same, `read_uncommitted`: its high watermark counts records of open
    /// transactions too.
    peek: ClientConfig,
    topic: String,
    group: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a lookup waits for open transactions on the checkpoint topic to end before
/// it fails (the caller retries). A live instance commits every `commit_interval`; a
/// dead one's transaction is aborted by the broker after `transaction.timeout.ms`.
const STABLE_WAIT: Duration = Duration::from_secs(15);

/// How many records back from the end a lookup reads first; each further attempt
/// reads ten times more. Every commit cycle rewrites the checkpoints of all assigned
/// partitions, so the latest ones sit near the end.
const FIRST_LOOKBACK: i64 = 2_000;

/// The header naming a checkpoint's epoch: its writer's group generation, or more
/// (see the module docs).
pub const EPOCH: &str = "flagtally-generation";

/// A checkpoint as found by a lookup, with its writer's epoch.
#[derive(Clone, Debug)]
pub struct Found {
    pub checkpoint: Checkpoint,
    /// `None` when the record has no (readable) epoch header.
    pub epoch: Option<i32>,
}

/// How a lookup ranks a checkpoint written in epoch `written` (higher wins; equal
/// ranks go to the later record). See the module docs.
pub fn rank(written: Option<i32>) -> i64 {
    written.map_or(-1, |g| i64::from(g.max(-1)))
}

impl Store {
    /// Connects to `topic` (`processing.checkpoint_topic`), creating it (one
    /// partition, compacted) if missing.
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Result<Self, KafkaError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &kafka.brokers);
        kafka.apply(&mut cc, &Default::default());
        let topic = topic.to_owned();
        let admin: AdminClient<DefaultClientContext> = cc.create()?;
        let new =
            NewTopic::new(&topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
        // Best effort: the topic may be managed by someone else, and some brokers
        // refuse the admin API; reading it later tells.
        let exists = admin
            .inner()
            .fetch_metadata(Some(&topic), TIMEOUT)
            .is_ok_and(|m| {
                m.topics()
                    .iter()
                    .any(|t| t.error().is_none() && !t.partitions().is_empty())
            });
        if !exists {
            let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
            match block_on(admin.create_topics([&new], &options)) {
                Ok(created) => {
                    for result in created {
                        match result {
                            Ok(_) => tracing::info!(topic = %topic, "created the checkpoint topic"),
                            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                            Err((t, e)) => tracing::warn!("creating checkpoint topic {t}: {e}"),
                        }
                    }
                }
                Err(e) => tracing::warn!("creating checkpoint topic {topic}: {e}"),
            }
        }
        let reader = cc
            .clone()
            .set("group.id", format!("{}-checkpoint-reader", kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .clone();
        let peek = reader
            .clone()
            .set("isolation.level", "read_uncommitted")
            .clone();
        Ok(Self {
            reader,
            peek,
            topic,
            group: kafka.group_id.clone(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn key(&self, pid: &PartitionId) -> String {
        format!("{}/{}/{}", self.group, pid.topic, pid.partition)
    }

    /// The latest checkpoint of each partition that has one (see the module docs).
    pub fn load(&self, pids: &[PartitionId]) -> Result<HashMap<PartitionId, Found>, KafkaError> {
        let wanted: HashMap<String, &PartitionId> = pids.iter().map(|p| (self.key(p), p)).collect();
        let mut found: HashMap<PartitionId, Found> = HashMap::new();
        let reader: BaseConsumer = self.reader.create()?;
        let peek: BaseConsumer = self.peek.create()?;
        let meta = reader.fetch_metadata(Some(&self.topic), TIMEOUT)?;
        let partitions: Vec<i32> = meta
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        for partition in partitions {
            let (low, high) = peek.fetch_watermarks(&self.topic, partition, TIMEOUT)?;
            self.wait_stable(&reader, partition, high)?;
            let mut lookback = FIRST_LOOKBACK;
            let mut end = high;
            while end > low && wanted.len() > found.len() {
                let start = (end - lookback).max(low);
                let mut latest: HashMap<&PartitionId, Found> = HashMap::new();
                self.read_range(&reader, partition, start, end, |key, value, written| {
                    if let Some(pid) = wanted.get(key)
                        && !found.contains_key(*pid)
                    {
                        match decode(value) {
                            Ok(Some(checkpoint)) => {
                                let beaten = latest
                                    .get(pid)
                                    .is_some_and(|best| rank(best.epoch) > rank(written));
                                if beaten {
                                    tracing::warn!(partition = %pid, epoch = ?written, "a checkpoint of an older epoch written late (by a member that had lost the partition); ignored");
                                } else {
                                    latest.insert(
                                        pid,
                                        Found {
                                            checkpoint,
                                            epoch: written,
                                        },
                                    );
                                }
                            }
                            Ok(None) => {}
                            Err(e) => tracing::error!(partition = %pid, "{e}; ignored"),
                        }
                    }
                })?;
                for (pid, cp) in latest {
                    found.insert(pid.clone(), cp);
                }
                end = start;
                lookback = lookback.saturating_mul(10);
            }
        }
        tracing::info!(
            wanted = pids.len(),
            found = found.len(),
            "checkpoints loaded"
        );
        Ok(found)
    }

    /// Waits until a `read_committed` reader can read up to `high`: every transaction
    /// open below it has committed or aborted. (For such a reader the broker's "latest
    /// offset" is the last stable offset.)
    fn wait_stable(
        &self,
        reader: &BaseConsumer,
        partition: i32,
        high: i64,
    ) -> Result<(), KafkaError> {
        let deadline = std::time::Instant::now() + STABLE_WAIT;
        let mut logged = false;
        loop {
            let (_, stable) = reader.fetch_watermarks(&self.topic, partition, TIMEOUT)?;
            if stable >= high {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut));
            }
            if !logged {
                tracing::info!(topic = %self.topic, partition, stable, high, "waiting for open transactions on the checkpoint topic to end");
                logged = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Reads records `[start, end)` of one partition, calling `each(key, value)`.
    fn read_range(
        &self,
        reader: &BaseConsumer,
        partition: i32,
        start: i64,
        end: i64,
        mut each: impl FnMut(&str, &str, Option<i32>),
    ) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(start))?;
        reader.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut read = 0u64;
        loop {
            if std::time::Instant::now() > deadline {
                return Err(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut));
            }
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if m.offset() >= end {
                        break;
                    }
                    read += 1;
                    let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
                    let value = m.payload().and_then(|v| std::str::from_utf8(v).ok());
                    if let (Some(k), Some(v)) = (key, value) {
                        each(k, v, generation_of(&m));
                    }
                    if m.offset() + 1 >= end {
                        break;
                    }
                }
                // The end of what this reader may read (transaction markers and
                // compacted-away offsets leave gaps before `end`).
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                // Transient (a broker reconnecting): librdkafka retries by itself.
                Some(Err(e)) => tracing::debug!("reading checkpoints: {e}"),
                None => {}
            }
        }
        tracing::debug!(topic = %self.topic, partition, start, end, read, "checkpoints read");
        reader.unassign()
    }
}

/// The generation header of a checkpoint record, if it has a readable one.
fn generation_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<i32> {
    use rdkafka::message::Headers as _;
    m.headers()?
        .iter()
        .find(|h| h.key == EPOCH)
        .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
}

const VERSION: &str = "ft1";

pub fn encode(cp: &Checkpoint) -> String {
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut s = format!(
        "{VERSION};n={};t={};w={};i={};a=",
        cp.next_offset,
        opt(cp.max_time),
        opt(cp.watermark),
        u8::from(cp.idle)
    );
    for (k, m) in cp.open.iter().enumerate() {
        let sep = if k == 0 { "" } else { "," };
        let kind = if m.late { 'l' } else { 'o' };
        let _ = write!(
            s,
            "{sep}{}/{kind}/{}/{}.{}",
            m.window_start, m.part, m.first.0, m.first.1
        );
    }
    s.push_str(";p=");
    for (k, (start, part)) in cp.next_part.iter().enumerate() {
        let sep = if k == 0 { "" } else { "," };
        let _ = write!(s, "{sep}{start}/{part}");
    }
    if let Some(w) = cp.settings {
        let _ = write!(
            s,
            ";s={}/{}/{:016x};e={}",
            w.size_ms, w.offset_ms, w.fingerprint, cp.epoch
        );
    }
    s
}

/// The longest a field can print: an i64 (sign and 19 digits) and a u32.
const I64_WIDTH: usize = 20;
const U32_WIDTH: usize = 10;

/// The most bytes a checkpoint made under `window` can take: fixed fields, every
/// accumulator the caps allow and every part number the lateness allows, each at its
/// widest. Pure arithmetic on the settings; [`encode`] never writes more.
pub fn worst_case_bytes(window: &WindowConfig) -> usize {
    let fixed = "ft1;n=;t=;w=;i=1;a=;p=;s=//;e=".len() + 5 * I64_WIDTH + 16 + U32_WIDTH;
    // `start/l/part/offset.index,`
    let mark = I64_WIDTH + 3 + U32_WIDTH + 1 + I64_WIDTH + 1 + U32_WIDTH + 1;
    // `start/part,`
    let part = I64_WIDTH + 1 + U32_WIDTH + 1;
    let marks = window
        .max_open_windows
        .max(1)
        .saturating_add(window.max_late_corrections.max(1));
    // Windows closed early lie between the watermark less one window and the newest
    // event time (see `window::PartitionState::next_part`).
    let parts = usize::try_from(window.allowed_lateness_ms.max(0) / window.size_ms.max(1) + 2)
        .unwrap_or(usize::MAX);
    fixed
        .saturating_add(marks.saturating_mul(mark))
        .saturating_add(parts.saturating_mul(part))
}

/// Whether every checkpoint the window settings allow fits `topic`, whose records may
/// take `limit` bytes (its `max.message.bytes`, or the producer's, whichever is
/// smaller); else the one line that says what to lower.
pub fn fits(window: &WindowConfig, topic: &str, limit: usize) -> Result<(), String> {
    let worst = worst_case_bytes(window);
    let room = limit.saturating_sub(crate::deadletter::fit::RECORD_MARGIN);
    if worst <= room {
        return Ok(());
    }
    Err(format!(
        "window: a checkpoint under these settings can take {worst} bytes, more than the {room} the checkpoint topic {topic:?} takes (max.message.bytes {limit}); lower window.max_open_windows ({}), window.max_late_corrections ({}) or window.lateness ÷ window.size, or raise the topic's max.message.bytes",
        window.max_open_windows, window.max_late_corrections,
    ))
}

/// Why a checkpoint record could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint {excerpt:?} is not a flagtally checkpoint: {reason}")]
pub struct MetadataError {
    excerpt: String,
    reason: String,
}

/// Reads a checkpoint. `Ok(None)`: empty (nothing recorded).
pub fn decode(metadata: &str) -> Result<Option<Checkpoint>, MetadataError> {
    if metadata.is_empty() {
        return Ok(None);
    }
    parse(metadata).map(Some).map_err(|reason| MetadataError {
        excerpt: metadata.chars().take(80).collect(),
        reason,
    })
}

fn parse(s: &str) -> Result<Checkpoint, String> {
    let mut parts = s.split(';');
    if parts.next() != Some(VERSION) {
        return Err(format!("expected version {VERSION}"));
    }
    let mut field = |name: &str| -> Result<&str, String> {
        let f = parts
            .next()
            .ok_or_else(|| format!("missing field {name}"))?;
        f.strip_prefix(name)
            .and_then(|f| f.strip_prefix('='))
            .ok_or_else(|| format!("expected field {name}, found {f:?}"))
    };
    let int = |f: &str, what: &str| -> Result<i64, String> {
        f.parse()
            .map_err(|_| format!("{what}: {f:?} is not an integer"))
    };
    let opt = |f: &str, what: &str| -> Result<Option<i64>, String> {
        if f == "-" {
            Ok(None)
        } else {
            int(f, what).map(Some)
        }
    };
    let next_offset = int(field("n")?, "n")?;
    let max_time = opt(field("t")?, "t")?;
    let watermark = opt(field("w")?, "w")?;
    let idle = match field("i")? {
        "0" => false,
        "1" => true,
        other => return Err(format!("i: {other:?} is not 0 or 1")),
    };
    let small = |f: &str, what: &str| -> Result<u32, String> {
        f.parse()
            .map_err(|_| format!("{what}: {f:?} is not a small whole number"))
    };
    let mut open = Vec::new();
    for m in field("a")?.split(',').filter(|m| !m.is_empty()) {
        let bad = || format!("a: {m:?} is not start/kind/part/offset.index");
        let mut it = m.split('/');
        let (Some(start), Some(kind), Some(part), Some(first), None) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad());
        };
        let (off, idx) = first.split_once('.').ok_or_else(bad)?;
        open.push(AccMark {
            window_start: int(start, "a")?,
            late: match kind {
                "o" => false,
                "l" => true,
                _ => return Err(bad()),
            },
            part: small(part, "a")?,
            first: (int(off, "a")?, small(idx, "a")?),
        });
    }
    let mut next_part = Vec::new();
    for p in field("p")?.split(',').filter(|p| !p.is_empty()) {
        let (start, part) = p
            .split_once('/')
            .ok_or_else(|| format!("p: {p:?} is not start/part"))?;
        next_part.push((int(start, "p")?, small(part, "p")?));
    }
    let (settings, epoch) = match parts.next() {
        None => (None, 0),
        Some(f) => {
            let w = f
                .strip_prefix("s=")
                .ok_or_else(|| format!("expected field s, found {f:?}"))?;
            let bad = || format!("s: {w:?} is not size/offset/fingerprint");
            let mut it = w.split('/');
            let (Some(size), Some(offset), Some(print), None) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(bad());
            };
            let settings = Settings {
                size_ms: int(size, "s")?,
                offset_ms: int(offset, "s")?,
                fingerprint: u64::from_str_radix(print, 16).map_err(|_| bad())?,
            };
            let e = parts
                .next()
                .and_then(|f| f.strip_prefix("e="))
                .ok_or("missing field e")?;
            (Some(settings), small(e, "e")?)
        }
    };
    if let Some(extra) = parts.next() {
        return Err(format!("unexpected field {extra:?}"));
    }
    Ok(Checkpoint {
        next_offset,
        max_time,
        watermark,
        idle,
        open,
        next_part,
        settings,
        epoch,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_newer_epoch_outranks_a_later_record_of_an_older_one() {
        // The new owner's (epoch 9) against one delivered late by the member that lost
        // the partition in generation 7.
        assert!(rank(Some(9)) > rank(Some(7)));
        // Equal ranks: the later record wins (the caller keeps it).
        assert_eq!(rank(Some(9)), rank(Some(9)));
        // No header (written before it existed) or no generation (-1): lowest.
        assert_eq!(rank(None), -1);
        assert_eq!(rank(Some(-1)), -1);
        assert_eq!(rank(Some(-5)), -1);
        assert!(rank(Some(0)) > rank(None));
    }

    fn arb_checkpoint() -> impl Strategy<Value = Checkpoint> {
        let mark = (
            any::<i64>(),
            any::<bool>(),
            any::<u32>(),
            any::<i64>(),
            any::<u32>(),
        )
            .prop_map(|(window_start, late, part, off, idx)| AccMark {
                window_start,
                late,
                part,
                first: (off, idx),
            });
        (
            any::<i64>(),
            any::<Option<i64>>(),
            any::<Option<i64>>(),
            any::<bool>(),
            proptest::collection::vec(mark, 0..5),
            proptest::collection::vec((any::<i64>(), any::<u32>()), 0..3),
            any::<Option<(i64, i64, u64, u32)>>(),
        )
            .prop_map(
                |(next_offset, max_time, watermark, idle, open, next_part, settings)| Checkpoint {
                    next_offset,
                    max_time,
                    watermark,
                    idle,
                    open,
                    next_part,
                    settings: settings.map(|(size_ms, offset_ms, fingerprint, _)| Settings {
                        size_ms,
                        offset_ms,
                        fingerprint,
                    }),
                    epoch: settings.map_or(0, |s| s.3),
                },
            )
    }

    /// A checkpoint at the bound: every accumulator and part number the settings allow,
    /// every number at its widest.
    fn widest(window: &WindowConfig) -> Checkpoint {
        let marks = window.max_open_windows + window.max_late_corrections;
        let parts = (window.allowed_lateness_ms / window.size_ms + 2) as usize;
        Checkpoint {
            next_offset: i64::MIN,
            max_time: Some(i64::MIN),
            watermark: Some(i64::MIN),
            idle: true,
            open: (0..marks)
                .map(|_| AccMark {
                    window_start: i64::MIN,
                    late: true,
                    part: u32::MAX,
                    first: (i64::MIN, u32::MAX),
                })
                .collect(),
            next_part: vec![(i64::MIN, u32::MAX); parts],
            settings: Some(Settings {
                size_ms: i64::MIN,
                offset_ms: i64::MIN,
                fingerprint: u64::MAX,
            }),
            epoch: u32::MAX,
        }
    }

    #[test]
    fn the_worst_case_bounds_the_widest_checkpoint_tightly() {
        for window in [
            WindowConfig::default(),
            WindowConfig {
                size_ms: 1_000,
                allowed_lateness_ms: 3_600_000,
                max_open_windows: 3,
                max_late_corrections: 1,
                ..WindowConfig::default()
            },
        ] {
            let text = encode(&widest(&window));
            // Within the two list separators the bound counts and a list does not end with.
            let worst = worst_case_bytes(&window);
            assert!(text.len() <= worst && text.len() + 2 >= worst, "{window:?}");
            assert_eq!(decode(&text).unwrap(), Some(widest(&window)));
        }
        // The defaults: about 21 KB, far below Kafka's default 1 MiB.
        assert!(worst_case_bytes(&WindowConfig::default()) < 25_000);
    }

    proptest! {
        #[test]
        fn round_trips(cp in arb_checkpoint()) {
            prop_assert_eq!(decode(&encode(&cp)).unwrap(), Some(cp));
        }

        #[test]
        fn never_panics_on_foreign_metadata(s in ".{0,60}") {
            let _ = decode(&s);
        }
    }

    #[test]
    fn reads_the_documented_example() {
        let cp =
            decode("ft1;n=1200;t=1700000059000;w=1700000049000;i=0;a=1700000040000/o/0/1150.0;p=")
                .unwrap()
                .unwrap();
        assert_eq!(cp.next_offset, 1200);
        assert_eq!(cp.replay_from(), 1150);
        assert_eq!(decode("").unwrap(), None);
    }

    #[test]
    fn foreign_metadata_is_an_error_that_says_why() {
        let e = decode("some-other-tool").unwrap_err();
        assert!(e.to_string().contains("expected version ft1"), "{e}");
        let e = decode("ft1;n=x;t=-;w=-;i=0;a=;p=").unwrap_err();
        assert!(e.to_string().contains("n: \"x\" is not an integer"), "{e}");
    }
}
