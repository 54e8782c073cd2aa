//! Dead letters from the loop: undecodable records, unreadable record batches, late
//! events, and outputs the broker refused for good — each fitted to the dead-letter
//! topic ([`crate::deadletter`]) and sent with the records it came from.

use anyhow::Context as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::{Message as _, Offset};

use super::producer::{Outgoing, Refused};
use super::{KAFKA_TIMEOUT, MAX_DIVERTED, State};
use crate::deadletter::header as dead_letter_header;
use crate::deadletter::{Refusal, fit};
use crate::decode::DecodeError;
use crate::emit::{dead_letter_id, header};
use crate::kafka::producer::headers;
use crate::source::{Record, Source};

impl State {
    /// An error librdkafka reported in a record's place. An unreadable record batch
    /// follows `input.unreadable_batches`: librdkafka would fetch it again and again,
    /// stalling its partition. Any other error is librdkafka's to retry.
    pub(super) fn read_error(
        &mut self,
        consumer: &Source,
        e: &crate::source::ReadError,
    ) -> anyhow::Result<()> {
        if !e.is_unreadable_batch() {
            tracing::warn!("consumer: {e}");
            return Ok(());
        }
        let Some(i) = self.part_index(&e.topic, e.partition) else {
            return Ok(());
        };
        if self.parts[i].read_to.is_some_and(|n| e.offset < n) {
            // Reported again from a fetch made before the skip below.
            return Ok(());
        }
        let policy = self.settings.unreadable_batches;
        let what = format!(
            "unreadable record batch at {}/{} offset {} ({:?}: {})",
            e.topic, e.partition, e.offset, e.code, e.reason
        );
        if policy == crate::source::UnreadablePolicy::Stop {
            self.count_unreadable(&e.topic, "stop");
            let text = format!(
                "{what}; input.unreadable_batches = \"stop\": exiting (\"skip\" dead-letters it and reads on)"
            );
            self.admin.health.set_failed(&text);
            anyhow::bail!(text);
        }
        self.admin
            .health
            .set_input_problem(Some(format!("{what}; skipping it")));
        let mut probe = rdkafka::ClientConfig::new();
        let kafka = &self.settings.source.kafka;
        probe.set("bootstrap.servers", &kafka.brokers);
        kafka.apply(&mut probe, &kafka.consumer_properties);
        probe
            .set("group.id", format!("{}-probe", kafka.group_id))
            .set("isolation.level", "read_committed");
        let end = match crate::source::unreadable_batch_end(
            &probe,
            &e.topic,
            e.partition,
            e.offset,
            &self.give_up(),
        ) {
            Ok(end) => end,
            Err(err) => {
                // The next fetch reports the batch again, and the search starts over.
                tracing::warn!("{what}: finding where it ends failed ({err}); trying again");
                return Ok(());
            }
        };
        self.count_unreadable(&e.topic, "skip");
        let part = &self.parts[i];
        let replaying = e.offset < part.replay_until;
        tracing::error!(
            topic = %e.topic,
            partition = e.partition,
            from = e.offset,
            to = end - 1,
            replaying,
            "{what}: skipped offsets {}–{}{}",
            e.offset,
            end - 1,
            if replaying { " (dead-lettered before the restart)" } else { "; dead-lettered" }
        );
        if !replaying && e.offset >= part.replay_from {
            self.dead_letter_unreadable(e, end, &what)?;
        }
        self.admin.health.add_note(format!(
            "skipped an unreadable record batch: {}/{} offsets {}–{} (dead-lettered)",
            e.topic,
            e.partition,
            e.offset,
            end - 1
        ));
        let now = self.now;
        let part = &mut self.parts[i];
        if replaying && end >= part.replay_until {
            self.engine
                .finish_replay(&part.at.partition, now, &mut self.outputs);
        }
        part.next_offset = Some(end);
        part.read_to = Some(end);
        consumer
            .seek(&e.topic, e.partition, Offset::Offset(end), KAFKA_TIMEOUT)
            .with_context(|| {
                format!(
                    "seeking {}/{} past the unreadable batch",
                    e.topic, e.partition
                )
            })?;
        self.admin.health.set_input_problem(None);
        self.send_outputs(None)
    }

    pub(super) fn count_unreadable(&self, topic: &str, policy: &'static str) {
        self.admin.metrics.unreadable_batch(topic, policy);
    }

    /// The dead letter of an unreadable batch: no key, no payload (none could be
    /// read), its offset range in the source headers.
    pub(super) fn dead_letter_unreadable(
        &mut self,
        e: &crate::source::ReadError,
        end: i64,
        what: &str,
    ) -> anyhow::Result<()> {
        let Some(topic) = self.settings.dead_letter_topic.clone() else {
            return Ok(());
        };
        self.stats.dead_letters += 1;
        self.admin.metrics.dead_letters.inc();
        let id = dead_letter_id(&e.topic, e.partition, e.offset)
            .hyphenated()
            .to_string();
        let (partition, offset, last) = (
            e.partition.to_string(),
            e.offset.to_string(),
            (end - 1).to_string(),
        );
        let text = fit::cap(what, fit::MAX_PATH_BYTES * 4);
        let own: Vec<(&str, &[u8])> = vec![
            (header::ID, id.as_bytes()),
            (header::KIND, b"dead-letter"),
            (dead_letter_header::ERROR, text.as_bytes()),
            (dead_letter_header::REASON, b"unreadable_batch"),
            (dead_letter_header::DIALECT, b"-"),
            (dead_letter_header::PATH, b""),
            (dead_letter_header::COUNT, b"1"),
            (dead_letter_header::SOURCE_TOPIC, e.topic.as_bytes()),
            (dead_letter_header::SOURCE_PARTITION, partition.as_bytes()),
            (dead_letter_header::SOURCE_OFFSET, offset.as_bytes()),
            (dead_letter_header::SOURCE_OFFSET_LAST, last.as_bytes()),
        ];
        self.sent_since_commit = true;
        self.send_fitted(&topic, None, &[], &[], own, None)
    }

    pub(super) fn dead_letter(
        &mut self,
        m: &Record<'_>,
        errors: &[DecodeError],
    ) -> anyhow::Result<()> {
        let Some(topic) = self.settings.dead_letter_topic.clone() else {
            return Ok(());
        };
        self.stats.dead_letters += 1;
        self.admin.metrics.dead_letters.inc();
        let first = &errors[0];
        let text = fit::error_text(errors);
        let path = fit::cap(&first.path, fit::MAX_PATH_BYTES);
        let id = dead_letter_id(m.topic(), m.partition(), m.offset())
            .hyphenated()
            .to_string();
        let count = errors.len().to_string();
        let extra: [(&str, &[u8]); 6] = [
            (header::ID, id.as_bytes()),
            (header::KIND, b"dead-letter"),
            (dead_letter_header::ERROR, text.as_bytes()),
            (dead_letter_header::REASON, first.reason.code().as_bytes()),
            (dead_letter_header::DIALECT, first.dialect.name().as_bytes()),
            (dead_letter_header::PATH, path.as_bytes()),
        ];
        let mut extra = extra.to_vec();
        extra.push((dead_letter_header::COUNT, count.as_bytes()));
        self.sent_since_commit = true;
        self.forward(m, &topic, &extra)
    }

    /// Writes an input record (key, value, headers, timestamp) to `topic`, with `extra`
    /// headers and its source position. Input headers named `flagtally-*` are renamed,
    /// and names that are not UTF-8 percent-encoded ([`fit::forwarded_name_bytes`]); the
    /// payload is cut to what the dead-letter topic accepts, flagged by
    /// [`dead_letter_header::TRUNCATED`].
    pub(super) fn forward(
        &self,
        m: &Record<'_>,
        topic: &str,
        extra: &[(&str, &[u8])],
    ) -> anyhow::Result<()> {
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let input: Vec<(std::borrow::Cow<'_, str>, &[u8])> = m
            .header_bytes()
            .map(|(name, value)| (fit::forwarded_name_bytes(name), value.unwrap_or_default()))
            .collect();
        let mut own: Vec<(&str, &[u8])> = extra.to_vec();
        own.push((dead_letter_header::SOURCE_TOPIC, m.topic().as_bytes()));
        own.push((dead_letter_header::SOURCE_PARTITION, partition.as_bytes()));
        own.push((dead_letter_header::SOURCE_OFFSET, offset.as_bytes()));
        self.send_fitted(
            topic,
            m.key(),
            m.payload().unwrap_or_default(),
            &input,
            own,
            m.timestamp().to_millis(),
        )
    }

    /// Sends a dead letter (or late event) fitted to its topic: within
    /// `output.max_dead_letter_bytes` and the topic's own `max.message.bytes`
    /// ([`fit::fit_dead_letter`]: input headers dropped past half the room, the payload
    /// cut); where not even the key and flagtally's headers fit, or where the broker
    /// refused it before (`diverted`), as its stub ([`fit::stub_headers`]). A dead letter
    /// refused twice is given up: counted and logged, never a rewind loop.
    pub(super) fn send_fitted(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        input: &[(std::borrow::Cow<'_, str>, &[u8])],
        own: Vec<(&str, &[u8])>,
        timestamp_ms: Option<i64>,
    ) -> anyhow::Result<()> {
        let refusals = own
            .iter()
            .find(|(k, _)| *k == header::ID)
            .and_then(|(_, id)| std::str::from_utf8(id).ok())
            .and_then(|id| self.diverted.get(id))
            .copied()
            .unwrap_or(0);
        if refusals >= 2 {
            self.dead_letter_refused(topic, "refused again as a stub");
            return Ok(());
        }
        let limit = self.settings.max_dead_letter_bytes.min(
            self.producer
                .topic_limit(topic)
                .saturating_sub(fit::RECORD_MARGIN),
        );
        let key_len = key.map_or(0, <[u8]>::len);
        let own_size: usize = own.iter().map(|(k, v)| fit::header_size(k, v)).sum();
        let input_sizes: Vec<usize> = input.iter().map(|(k, v)| fit::header_size(k, v)).collect();
        let plan = if refusals >= 1 {
            fit::Fit::Stub
        } else {
            fit::fit_dead_letter(limit, own_size, key_len, &input_sizes, value.len())
        };
        let (headers_kept, value_kept) = match plan {
            fit::Fit::Whole => (input.len(), value.len()),
            fit::Fit::Cut {
                headers_kept,
                value_kept,
            } => (headers_kept, value_kept),
            fit::Fit::Stub => {
                let stub = fit::stub_headers(&own, value.len(), key_len, input_sizes.iter().sum());
                if stub
                    .iter()
                    .map(|(k, v)| fit::header_size(k, v))
                    .sum::<usize>()
                    > limit
                {
                    self.dead_letter_refused(topic, "not even its stub fits the topic");
                    return Ok(());
                }
                let outgoing = Outgoing {
                    topic,
                    key: None,
                    value: &[],
                    headers: headers(stub.iter().map(|(k, v)| (k.as_str(), v.as_slice()))),
                    timestamp_ms,
                    summary: false,
                };
                return self.send_dead_letter(topic, outgoing);
            }
        };
        let original = (value_kept < value.len()).then(|| value.len().to_string());
        let dropped =
            (headers_kept < input.len()).then(|| (input.len() - headers_kept).to_string());
        let cut = original
            .as_deref()
            .map(|n| (dead_letter_header::TRUNCATED, n.as_bytes()))
            .into_iter()
            .chain(
                dropped
                    .as_deref()
                    .map(|n| (dead_letter_header::HEADERS_DROPPED, n.as_bytes())),
            );
        let outgoing = Outgoing {
            topic,
            key,
            value: &value[..value_kept],
            headers: headers(
                input[..headers_kept]
                    .iter()
                    .map(|(k, v)| (k.as_ref(), *v))
                    .chain(own)
                    .chain(cut),
            ),
            timestamp_ms,
            summary: false,
        };
        self.send_dead_letter(topic, outgoing)
    }

    /// Queues a fitted dead letter; a refusal the producer reports at once is counted
    /// and logged (one reported later by the broker comes back through
    /// [`State::set_aside`]).
    pub(super) fn send_dead_letter(
        &self,
        topic: &str,
        outgoing: Outgoing<'_>,
    ) -> anyhow::Result<()> {
        match self.producer.send(outgoing, &self.give_up()) {
            Ok(()) => Ok(()),
            Err(e) if e.rdkafka_error_code().is_some_and(fit::is_permanent) => {
                self.dead_letter_refused(topic, &e.to_string());
                Ok(())
            }
            Err(e) if self.transaction_failed(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("producing to {topic}")),
        }
    }

    /// The dead-letter topic itself refused a record: it is lost to Kafka, so it is at
    /// least counted and logged.
    pub(super) fn dead_letter_refused(&self, topic: &str, error: &str) {
        self.admin.metrics.decode_error("-", "dead_letter_refused");
        tracing::error!(topic, "the broker refused a dead letter: {error}");
    }

    /// An output the broker refused for good goes to the dead-letter topic instead,
    /// with the reason; its id is remembered so a replay sets it aside again.
    pub(super) fn set_aside(&mut self, r: Refused) -> anyhow::Result<()> {
        let dlq = self.settings.dead_letter_topic.clone();
        let is_dead_letter =
            r.kind.as_deref() == Some("dead-letter") || dlq.as_deref() == Some(r.topic.as_str());
        if let Some(id) = &r.id {
            self.divert(id);
        }
        if is_dead_letter {
            // Written again as its stub (headers only), unless it was the stub.
            if r.own_headers.iter().any(|(k, _)| k == fit::STUB) {
                self.dead_letter_refused(&r.topic, &r.error);
                return Ok(());
            }
            tracing::warn!(topic = %r.topic, id = ?r.id, "the broker refused a dead letter ({}); writing its stub", r.error);
            let own: Vec<(&str, &[u8])> = r
                .own_headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            self.sent_since_commit = true;
            return self.send_fitted(&r.topic, r.key.as_deref(), &r.value, &[], own, None);
        }
        let Some(dlq) = dlq else {
            self.dead_letter_refused(&r.topic, &r.error);
            return Ok(());
        };
        tracing::warn!(topic = %r.topic, id = ?r.id, "the broker refused an output ({}); it goes to the dead-letter topic", r.error);
        self.stats.dead_letters += 1;
        self.admin.metrics.dead_letters.inc();
        let headers = Refusal {
            id: r.id.as_deref().unwrap_or_default(),
            error: &r.error,
            reason: "refused",
            sink: None,
            kind: r.kind.as_deref().unwrap_or_default(),
            topic: &r.topic,
            partition: None,
            offset: None,
        }
        .headers();
        let original = r.value_len.to_string();
        let mut pairs: Vec<(&str, &[u8])> =
            headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        if r.value.len() < r.value_len {
            pairs.push((dead_letter_header::TRUNCATED, original.as_bytes()));
        }
        self.sent_since_commit = true;
        self.send_fitted(&dlq, r.key.as_deref(), &r.value, &[], pairs, None)
    }

    /// Remembers one more refusal of the output `id`.
    pub(super) fn divert(&mut self, id: &str) {
        if self.diverted.len() >= MAX_DIVERTED {
            self.diverted.clear();
        }
        let n = self.diverted.entry(id.to_owned()).or_default();
        *n = n.saturating_add(1);
    }
}
