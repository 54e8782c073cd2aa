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
pub struct PolledProducer<C: ProducerContext + 'static> {
    inner: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long the polling thread's `poll` lasts: 100 ms, plus 20 µs for librdkafka's own
/// 100 ms wait to end past rdkafka's deadline. It is also the most a drop waits for the
/// thread.
const POLL: Duration = Duration::from_micros(100_020);

impl<C: ProducerContext + 'static> FromClientConfigAndContext<C> for PolledProducer<C> {
    fn from_config_and_context(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        let inner = Arc::new(BaseProducer::from_config_and_context(config, context)?);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("producer-poll".to_owned())
            .spawn({
                let (inner, stop) = (Arc::clone(&inner), Arc::clone(&stop));
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        inner.poll(POLL);
                    }
                }
            })
            .map_err(|e| {
                KafkaError::ClientCreation(format!("the producer's polling thread: {e}"))
            })?;
        Ok(Self {
            inner,
            stop,
            thread: Some(thread),
        })
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
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                if give_up() {
                    return Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
                }
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits until every record `producer` was given is acknowledged (or failed), up to
/// `timeout`, while another thread polls it ([`PolledProducer`]). rdkafka's own `flush`
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
