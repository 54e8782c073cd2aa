//! The producer plumbing every part of flagtally shares (the pipeline's producer, the
//! sinks' dead letters, quickstart, `gen`): a librdkafka producer with its own poll
//! thread ([`PolledProducer`]), sending with backpressure ([`send_waiting`]), flushing,
//! and running the admin API's futures ([`block_on`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::config::{ClientConfig, FromClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, Producer as _, ProducerContext,
};

/// A librdkafka producer with a thread of its own serving its delivery reports, as
/// rdkafka's `ThreadedProducer`, without that one's idle spin.
///
/// rdkafka's `BaseProducer::poll(t)` waits in librdkafka for the time left to its
/// deadline, truncated to whole milliseconds, until the deadline passes. The last wait
/// before it is therefore 0 ms: the loop spins on the clock for the final fraction of a
/// millisecond. `ThreadedProducer` polls for 100 ms at a time, so its thread kept about
/// 1 % of a core busy on an idle producer, for each producer (one per pipeline worker).
/// This thread polls for `POLL`, a whole number of milliseconds plus a few
/// microseconds: librdkafka's wait then ends past the deadline, and the loop with it.
/// After a delivery report the remaining wait is a fraction again, so a busy producer
/// still spins for under a millisecond per poll, as before.
///
/// **Served by its owner** ([`PolledProducer::serve_on_owner`]): the thread that sends
/// serves the reports itself, between records ([`PolledProducer::serve`]), and this
/// thread only catches what is left, every `FALLBACK` (10 ms): an owner blocked elsewhere.
/// librdkafka allocates each record, its header list and each header on the sending
/// thread and frees them when its report is served: on another thread, every one of
/// those frees crosses threads, which the allocator pays for twice (the free, then the
/// owner collecting it), and the report's memory is read on a second core. The
/// pipeline, which sends millions of records, serves its own.
pub struct PolledProducer<C: ProducerContext + 'static> {
    inner: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
    owner_serves: Arc<AtomicBool>,
    /// Records sent since the owner last served reports.
    unserved: std::sync::atomic::AtomicU32,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the polling thread looks for reports the owner left, when the owner
/// serves them: a report is served at most this late (its latency metric with it).
const FALLBACK: Duration = Duration::from_millis(10);

/// Polls the owner makes, at most, each time it serves: reports come one event per
/// produce response (a batch of records), so a few are all that can be waiting.
const SERVE_POLLS: usize = 4;

/// Records sent between two of the owner's serves.
const SERVE_EVERY: u32 = 32;

/// How long the polling thread's `poll` lasts: 100 ms, plus 20 µs for librdkafka's own
/// 100 ms wait to end past rdkafka's deadline. It is also the most a drop waits for the
/// thread.
const POLL: Duration = Duration::from_micros(100_020);

impl<C: ProducerContext + 'static> FromClientConfigAndContext<C> for PolledProducer<C> {
    fn from_config_and_context(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        let inner = Arc::new(BaseProducer::from_config_and_context(config, context)?);
        let stop = Arc::new(AtomicBool::new(false));
        let owner_serves = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("producer-poll".to_owned())
            .spawn({
                let (inner, stop, owner_serves) = (
                    Arc::clone(&inner),
                    Arc::clone(&stop),
                    Arc::clone(&owner_serves),
                );
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        if owner_serves.load(Ordering::Relaxed) {
                            std::thread::sleep(FALLBACK);
                            for _ in 0..SERVE_POLLS {
                                inner.poll(Duration::ZERO);
                            }
                        } else {
                            inner.poll(POLL);
                        }
                    }
                }
            })
            .map_err(|e| {
                KafkaError::ClientCreation(format!("the producer's polling thread: {e}"))
            })?;
        Ok(Self {
            inner,
            stop,
            owner_serves,
            unserved: std::sync::atomic::AtomicU32::new(0),
            thread: Some(thread),
        })
    }
}

impl<C: ProducerContext + 'static> PolledProducer<C> {
    /// From now on the sending thread serves the delivery reports ([`Self::serve`],
    /// [`send_waiting`] and [`flush_threaded`] call it), and the polling thread only
    /// every `FALLBACK` (10 ms).
    pub fn serve_on_owner(&self) {
        self.owner_serves.store(true, Ordering::Relaxed);
    }

    /// Serves the delivery reports waiting, if this producer's owner serves them
    /// ([`Self::serve_on_owner`]) and [`SERVE_EVERY`] records went out since the last
    /// time: a poll finds nothing most of the time, and costs a lock even then.
    fn serve_after_send(&self) {
        if self.owner_serves.load(Ordering::Relaxed)
            && self.unserved.fetch_add(1, Ordering::Relaxed) + 1 >= SERVE_EVERY
        {
            self.serve();
        }
    }

    /// Serves the delivery reports waiting (a few events, without waiting for more).
    pub fn serve(&self) {
        self.unserved.store(0, Ordering::Relaxed);
        for _ in 0..SERVE_POLLS {
            self.inner.poll(Duration::ZERO);
        }
    }
}

impl FromClientConfig for PolledProducer<DefaultProducerContext> {
    fn from_config(config: &ClientConfig) -> KafkaResult<Self> {
        Self::from_config_and_context(config, DefaultProducerContext)
    }
}

impl<C: ProducerContext + 'static> std::fmt::Debug for PolledProducer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledProducer")
            .field("in_flight", &self.inner.in_flight_count())
            .finish_non_exhaustive()
    }
}

impl<C: ProducerContext + 'static> std::ops::Deref for PolledProducer<C> {
    type Target = BaseProducer<C>;

    fn deref(&self) -> &BaseProducer<C> {
        &self.inner
    }
}

impl<C: ProducerContext + 'static> Drop for PolledProducer<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the producer's polling thread panicked");
        }
    }
}

/// Queues one record. While librdkafka's queue is full (the polling thread frees it as
/// deliveries are reported), waits (backpressure) unless `give_up` says to stop.
pub fn send_waiting<C: ProducerContext + 'static>(
    producer: &PolledProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
    give_up: &dyn Fn() -> bool,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.serve_after_send();
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                if give_up() {
                    return Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
                }
                record = back;
                // The queue frees as reports are served: serve them here if this
                // thread is the one that does.
                if producer.owner_serves.load(Ordering::Relaxed) {
                    producer.serve();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits until every record `producer` was given is acknowledged (or failed), up to
/// `timeout`, while the polling thread serves the reports ([`PolledProducer`]; or this
/// loop, when the owner serves them). rdkafka's own `flush`
/// polls the event queue for up to 100 ms at a time, racing the polling thread for the
/// delivery reports: each flush cost up to 100 ms beyond the broker's answer. This one
/// asks librdkafka to send at once (a zero-timeout flush, which skips `linger.ms`) and
/// then watches the queue drain while the polling thread serves the reports.
pub fn flush_threaded<C: ProducerContext + 'static>(
    producer: &PolledProducer<C>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if producer.flush(Duration::ZERO).is_ok() || producer.in_flight_count() == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        if producer.owner_serves.load(Ordering::Relaxed) {
            producer.serve();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Polls a future to completion on this thread (rdkafka's admin calls are futures;
/// flagtally has no async runtime).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Builds a header list from name/value pairs.
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> OwnedHeaders {
    pairs
        .into_iter()
        .fold(OwnedHeaders::new_with_capacity(12), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
}
