//! Reading records a batch at a time.
//!
//! rdkafka's `poll` hands over one record per call, and each call pays for a queue
//! wait set-up, a clock read, an event wrapper and a reference count allocated on the
//! heap. Measured on the drain benchmark's topic (1 M records, Apache Kafka), that path
//! alone took a no-op consumer 0.49–0.74 CPU-s, against 0.31–0.38 CPU-s reading the same
//! records through librdkafka's batch call (`rd_kafka_consume_batch_queue`), which rdkafka
//! does not expose. So the worker's consumer routes every partition it is assigned to
//! an application queue of its own ([`RecordQueue`]) and reads that a batch at a time
//! ([`Batch`]), while rdkafka's `poll` still serves the consumer queue, which then carries
//! only the group's events (rebalances, errors, statistics, commit results).
//!
//! This is the one module of the source with `unsafe` code: the calls into librdkafka
//! (here too the one rdkafka lacks for the consumer's group generation), and the
//! records' fields read as rdkafka reads them. Each `unsafe` block says why it holds.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::Timestamp;
use rdkafka::bindings as rd;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage};

/// The group generation (or member epoch) of the consumer `rk`, as its commits carry
/// it: rdkafka's `ConsumerGroupMetadata` does not expose it. -1 when in none.
pub(super) fn group_generation(rk: *mut rd::rd_kafka_t) -> i32 {
    // SAFETY: `rk` is a live consumer's handle (the caller's); the metadata returned
    // is a copy owned here, read once and destroyed.
    unsafe {
        let metadata = rd::rd_kafka_consumer_group_metadata(rk);
        if metadata.is_null() {
            return -1;
        }
        let generation = rd::rd_kafka_consumer_group_metadata_generation_id(metadata);
        rd::rd_kafka_consumer_group_metadata_destroy(metadata);
        generation
    }
}

/// The most records one [`Batch`] holds.
pub const BATCH: usize = 1024;

/// An application queue (`rd_kafka_queue_new`) that assigned partitions forward their
/// fetched records to. It must be destroyed before its client: [`super::Source`]'s
/// `Drop` takes it out of the consumer's context first.
#[derive(Debug)]
pub(super) struct RecordQueue(NonNull<rd::rd_kafka_queue_t>);

// SAFETY: librdkafka's queues are locked internally; a handle may be used and
// destroyed from any thread. (The consumer's context, which holds it, must be `Send`.)
unsafe impl Send for RecordQueue {}

impl RecordQueue {
    /// A new queue of the client `rk` (a live `rd_kafka_t`).
    pub(super) fn new(rk: *mut rd::rd_kafka_t) -> Option<Self> {
        // SAFETY: `rk` is the consumer's live handle; the queue is destroyed before it.
        NonNull::new(unsafe { rd::rd_kafka_queue_new(rk) }).map(Self)
    }

    /// Makes the partition's fetched records come to this queue. Called before the
    /// partition is assigned, so that none of its records goes to the consumer queue
    /// first (their order within the partition would be lost between the two queues).
    /// librdkafka keeps an application's forward when the fetch starts, and clears it
    /// when the fetch stops: each assignment routes its partitions again.
    pub(super) fn route(&self, rk: *mut rd::rd_kafka_t, topic: &str, partition: i32) -> bool {
        let Ok(topic) = CString::new(topic) else {
            return false;
        };
        // SAFETY: `rk` is live and `topic` a C string; the partition's queue handle is
        // a new reference, released right after its forward is set (the forward keeps
        // its own reference to this queue).
        unsafe {
            let pq = rd::rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition);
            if pq.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(pq, self.0.as_ptr());
            rd::rd_kafka_queue_destroy(pq);
        }
        true
    }

    /// Moves up to `max` records into `into` (which has room for them), waiting up to
    /// `wait` for the batch to fill; returns how many came.
    fn consume(
        &self,
        wait: Duration,
        into: &mut Vec<NonNull<rd::rd_kafka_message_t>>,
        max: usize,
    ) -> usize {
        let max = max.min(into.capacity() - into.len());
        if max == 0 {
            return 0;
        }
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let spare = into
            .spare_capacity_mut()
            .as_mut_ptr()
            .cast::<*mut rd::rd_kafka_message_t>();
        // SAFETY: `spare` has room for `max` pointers; librdkafka writes at most `max`
        // and returns how many (or -1 on an error, which is 0 here).
        let n = unsafe { rd::rd_kafka_consume_batch_queue(self.0.as_ptr(), ms, spare, max) };
        let n = usize::try_from(n).unwrap_or(0).min(max);
        // SAFETY: the first `n` spare slots were just written with message pointers,
        // which librdkafka never returns null.
        unsafe { into.set_len(into.len() + n) };
        n
    }
}

impl Drop for RecordQueue {
    fn drop(&mut self) {
        // SAFETY: the handle is owned and destroyed once. Partitions still forwarding
        // here hold their own reference; librdkafka discards what they enqueue after.
        unsafe { rd::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// Records read from the worker's record queue in one call, owned until the next fill or the
/// batch's drop. It borrows the consumer (`'c`): librdkafka's records must be destroyed
/// before their client.
#[derive(Debug)]
pub struct Batch<'c> {
    records: Vec<NonNull<rd::rd_kafka_message_t>>,
    _consumer: PhantomData<&'c ()>,
}

impl<'c> Batch<'c> {
    pub(super) fn new() -> Self {
        Self {
            records: Vec::with_capacity(BATCH),
            _consumer: PhantomData,
        }
    }

    /// Replaces the batch's records with what `queue` holds, up to [`BATCH`]. When it
    /// holds none, waits up to `wait` for one, and then takes what else came with it:
    /// a light stream is read as its records come, not when a batch has filled.
    pub(super) fn fill(&mut self, queue: &RecordQueue, wait: Duration) -> usize {
        self.clear();
        if queue.consume(Duration::ZERO, &mut self.records, BATCH) == 0
            && !wait.is_zero()
            && queue.consume(wait, &mut self.records, 1) == 1
        {
            queue.consume(Duration::ZERO, &mut self.records, BATCH - 1);
        }
        self.records.len()
    }

    /// Destroys the records held.
    pub fn clear(&mut self) {
        for m in self.records.drain(..) {
            // SAFETY: each record was handed over by librdkafka and is destroyed once.
            unsafe { rd::rd_kafka_message_destroy(m.as_ptr()) }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// The records in the order read (within a partition, the log's order), each a
    /// record or the error librdkafka reported in its place.
    pub fn iter(&self) -> impl Iterator<Item = Result<Record<'_>, ReadError>> {
        self.records.iter().map(|m| {
            // SAFETY: held records are live until `clear`, which needs `&mut self`.
            Record::checked(unsafe { m.as_ref() })
        })
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One record, borrowed from a [`Batch`] (or from rdkafka's [`BorrowedMessage`]). It
/// reads its fields as rdkafka's `BorrowedMessage` does.
#[derive(Clone, Copy)]
pub struct Record<'a>(&'a rd::rd_kafka_message_t);

impl std::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .finish_non_exhaustive()
    }
}

impl<'a> Record<'a> {
    /// A record read by rdkafka's `poll`.
    pub fn of(m: &'a BorrowedMessage<'_>) -> Self {
        // SAFETY: `m` owns a live message for at least `'a`.
        Self(unsafe { &*m.ptr() })
    }

    /// The record's headers as bytes, `(name, value)`, in order. Header names are
    /// bytes in the Kafka protocol, and any producer can send one that is not UTF-8:
    /// rdkafka's own accessor ([`Message::headers`], then `Headers::iter`/`get`) panics
    /// on such a name, so flagtally reads every input header through this instead.
    pub fn header_bytes(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut hs = std::ptr::null_mut();
        // SAFETY: the record is live; librdkafka parses its headers once and keeps
        // them with the record, so they live as long as it does ('a).
        let err = unsafe { rd::rd_kafka_message_headers(self.0, &mut hs) };
        let hs = (err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !hs.is_null())
            .then_some(hs);
        (0..).map_while(move |idx| {
            let hs = hs?;
            let mut name = std::ptr::null();
            let mut value = std::ptr::null();
            let mut size = 0;
            // SAFETY: `hs` is the record's live header list; librdkafka writes the
            // three out-parameters, or returns an error past the last header.
            let err =
                unsafe { rd::rd_kafka_header_get_all(hs, idx, &mut name, &mut value, &mut size) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            // SAFETY: a header's name is a C string and its value `size` bytes (or
            // null), both owned by the header list, which lives as long as the record.
            let name = unsafe { CStr::from_ptr(name) }.to_bytes();
            Some((name, unsafe { bytes(value, size) }))
        })
    }

    /// The value of the first header named exactly `name` (a present header without a
    /// value is `Some(&[])`).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.header_bytes()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v.unwrap_or_default())
    }

    fn checked(m: &'a rd::rd_kafka_message_t) -> Result<Self, ReadError> {
        if m.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Ok(Self(m));
        }
        Err(ReadError::of(m))
    }
}

/// An error librdkafka reported in a record's place, with where it happened when it
/// says (a fetch error names its partition and offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError {
    pub code: RDKafkaErrorCode,
    /// Empty when the error names no topic.
    pub topic: String,
    /// −1 when the error names no partition, likewise the offset.
    pub partition: i32,
    pub offset: i64,
    /// librdkafka's text (e.g. "Decompression (codec 0x4) of message at 50 … failed").
    pub reason: String,
}

impl ReadError {
    fn of(m: &rd::rd_kafka_message_t) -> Self {
        // SAFETY: `m` is a live error message: its topic handle, when set, and its
        // error string (librdkafka's `rd_kafka_message_errstr`) live as long as it.
        let topic = if m.rkt.is_null() {
            String::new()
        } else {
            unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(m.rkt)) }
                .to_string_lossy()
                .into_owned()
        };
        let text = unsafe { rd::rd_kafka_message_errstr(m) };
        let reason = if text.is_null() {
            String::new()
        } else {
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        Self {
            code: RDKafkaErrorCode::from(m.err),
            topic,
            partition: m.partition,
            offset: m.offset,
            reason,
        }
    }

    /// A record batch the client cannot read at a known position: corrupt (a
    /// failed checksum or decompression, a malformed batch) or in a codec or format
    /// it lacks. librdkafka fetches such a batch again and again: left alone, the
    /// partition stalls there.
    pub fn is_unreadable_batch(&self) -> bool {
        matches!(
            self.code,
            RDKafkaErrorCode::BadMessage
                | RDKafkaErrorCode::BadCompression
                | RDKafkaErrorCode::NotImplemented
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
        ) && !self.topic.is_empty()
            && self.partition >= 0
            && self.offset >= 0
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.topic.is_empty() {
            write!(f, "{:?}: {}", self.code, self.reason)
        } else {
            write!(
                f,
                "{}/{} offset {}: {:?}: {}",
                self.topic, self.partition, self.offset, self.code, self.reason
            )
        }
    }
}

/// Where the record batch that `client` cannot read at `offset` of a partition ends:
/// the first offset past it. librdkafka reports such a batch at its base offset and
/// does not say where it ends, so this asks a consumer of its own (assigned, no group)
/// to read from offsets past it: a read inside the batch fails again at the same base,
/// a read past it does not (a record, another batch's error, or the end of the
/// partition). Doubling, then bisecting: about 2 × log2(batch length) reads.
pub fn unreadable_batch_end(
    client: &rdkafka::ClientConfig,
    topic: &str,
    partition: i32,
    base: i64,
    give_up: &dyn Fn() -> bool,
) -> KafkaResult<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = client
        .clone()
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .remove("group.instance.id")
        .create()?;
    let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    // Whether reading from `at` fails at `base`.
    let inside = |at: i64| -> KafkaResult<bool> {
        if at >= high {
            return Ok(false);
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(at))?;
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let client = consumer.client().native_ptr();
        loop {
            if give_up() || std::time::Instant::now() > deadline {
                return Err(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut));
            }
            // SAFETY: the client is live; a returned message is ours to read and
            // destroy, once.
            let Some(m) = NonNull::new(unsafe { rd::rd_kafka_consumer_poll(client, 200) }) else {
                continue;
            };
            let (err, offset) = {
                let m = unsafe { m.as_ref() };
                (ReadError::of(m), m.offset)
            };
            unsafe { rd::rd_kafka_message_destroy(m.as_ptr()) };
            match err.code {
                RDKafkaErrorCode::NoError | RDKafkaErrorCode::PartitionEOF => return Ok(false),
                _ if err.is_unreadable_batch() && err.partition == partition => {
                    return Ok(offset == base);
                }
                // Anything else (a broker reconnecting): librdkafka retries.
                _ => {}
            }
        }
    };
    // `inside(base)` holds; find an offset where it does not, then the boundary.
    let (mut lo, mut step) = (base, 1i64);
    let mut hi = loop {
        let at = base.saturating_add(step).min(high);
        if !inside(at)? {
            break at;
        }
        lo = at;
        step = step.saturating_mul(2);
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if inside(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    consumer.unassign()?;
    hi = hi.max(base + 1);
    Ok(hi)
}

/// `len` bytes at `ptr`, or `None` for a null pointer (no key, no value).
///
/// # Safety
/// A non-null `ptr` points to `len` bytes that live for `'a`.
unsafe fn bytes<'a>(ptr: *const std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    // SAFETY: as the caller promises.
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

impl Message for Record<'_> {
    type Headers = BorrowedHeaders;

    fn key(&self) -> Option<&[u8]> {
        // SAFETY: a record's key is `key_len` bytes, live as long as the record.
        unsafe { bytes(self.0.key, self.0.key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        // SAFETY: a record's value is `len` bytes, live as long as the record.
        unsafe { bytes(self.0.payload, self.0.len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        // A shared borrow of the record: its bytes cannot be handed out mutably.
        None
    }

    fn topic(&self) -> &str {
        // SAFETY: a fetched record's topic handle is live as long as the record, and
        // its name a C string. Kafka's topic names are ASCII.
        unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.0.rkt)) }
            .to_str()
            .unwrap_or_default()
    }

    fn partition(&self) -> i32 {
        self.0.partition
    }

    fn offset(&self) -> i64 {
        self.0.offset
    }

    fn timestamp(&self) -> Timestamp {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the record is live; librdkafka only reads it and writes `kind`.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.0, &mut kind) };
        match kind {
            _ if ms == -1 => Timestamp::NotAvailable,
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => {
                Timestamp::CreateTime(ms)
            }
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => {
                Timestamp::LogAppendTime(ms)
            }
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => {
                Timestamp::NotAvailable
            }
        }
    }

    /// rdkafka's header list: its accessors panic on a name that is not UTF-8, so
    /// flagtally's own code reads [`Record::header_bytes`] instead.
    fn headers(&self) -> Option<&BorrowedHeaders> {
        let mut hs = std::ptr::null_mut();
        // SAFETY: the record is live; librdkafka parses its headers once and keeps
        // them with the record, so they live as long as it does.
        let err = unsafe { rd::rd_kafka_message_headers(self.0, &mut hs) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hs.is_null() {
            return None;
        }
        // SAFETY: `BorrowedHeaders` is rdkafka's zero-sized stand-in for a native
        // header list, used through a reference to it as rdkafka itself does.
        Some(unsafe { &*hs.cast::<BorrowedHeaders>() })
    }
}
