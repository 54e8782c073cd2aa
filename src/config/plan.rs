//! The plan: the configuration cut into the settings each component takes. No
//! component below `config` sees [`Config`] itself; each gets its own small struct.

use super::Config;
use crate::decode::counting::CountRules;
use crate::emit::OutputKind;
use crate::pipeline::producer::ProducerSettings;
use crate::pipeline::{self, checkpoint};
use crate::sink;
use crate::source::SourceSettings;
use crate::units::millis;
use crate::window::{EngineConfig, FullEvents, GateConfig, Override};

impl Config {
    /// The decode stage, resolving Confluent-framed native Avro with the registry
    /// when one is configured (each worker keeps the schemas it meets).
    pub fn registry_decoder(&self) -> anyhow::Result<crate::decode::Decoder> {
        let decoder = self.decoder();
        let Some(registry) = &self.output.schema_registry else {
            return Ok(decoder);
        };
        let native = crate::avro::event_schema().map_err(anyhow::Error::msg)?;
        let writers = crate::registry::writers::Writers::new(registry, native.fingerprint())
            .map_err(anyhow::Error::msg)?;
        Ok(decoder.with_writers(std::sync::Arc::new(writers)))
    }

    /// What the warehouse sinks take.
    pub fn sink_plan(&self) -> sink::Plan {
        sink::Plan {
            kafka: self.kafka.clone(),
            dead_letter_topic: self.output.dead_letter_topic.clone(),
            sinks: self.sinks.clone(),
        }
    }

    /// What pipeline worker `worker` takes (0 … `processing.workers()` − 1). Fails
    /// only in exactly-once mode, when the transactional id cannot be made.
    pub fn pipeline_plan(&self, worker: usize) -> anyhow::Result<pipeline::Settings> {
        let p = &self.processing;
        let input = &self.input;
        Ok(pipeline::Settings {
            worker,
            source: SourceSettings {
                kafka: self.kafka.clone(),
                instance_id: self
                    .kafka
                    .instance_id
                    .as_deref()
                    .map(|id| per_worker(id, worker)),
                exactly_once: p.exactly_once,
            },
            producer: self.producer_plan(worker)?,
            checkpoint_topic: p.checkpoint_topic.clone(),
            decoder: self.registry_decoder()?,
            engine: self.engine_for_outputs(),
            emit: self.emit_config(),
            topics: self.output.topics.clone(),
            dead_letter_topic: self.output.dead_letter_topic.clone(),
            max_dead_letter_bytes: self.output.max_dead_letter_bytes,
            counting: CountRules {
                default: input.count_from,
                topics: input
                    .topics
                    .iter()
                    .filter_map(|(t, s)| Some((t.clone(), s.count_from?)))
                    .collect(),
            },
            max_future_skew_ms: millis(input.max_future_skew),
            future_policy: input.future_policy,
            unreadable_batches: input.unreadable_batches,
            commit_interval: p.commit_interval,
        })
    }

    /// What worker `worker`'s producer takes.
    pub fn producer_plan(&self, worker: usize) -> anyhow::Result<ProducerSettings> {
        let p = &self.processing;
        let transactional_id = if p.exactly_once {
            // Stable across restarts of this instance, distinct between instances: a
            // restart fences (and aborts) its predecessor's transaction at once. Each
            // worker its own producer and transaction (Kafka Streams' model too).
            let id = p
                .transactional_id(&self.kafka, &|k| std::env::var(k).ok())
                .map_err(anyhow::Error::msg)?;
            Some(per_worker(&id, worker))
        } else {
            None
        };
        let topics = OutputKind::ALL
            .iter()
            .filter_map(|k| self.output.topics.topic(*k))
            .chain(self.output.dead_letter_topic.as_deref())
            .chain([p.checkpoint_topic.as_str()])
            .map(str::to_owned)
            .collect();
        Ok(ProducerSettings {
            kafka: self.kafka.clone(),
            worker,
            transactional_id,
            max_record_bytes: self.input.max_record_bytes,
            topics,
            describe_topics: self.output.describe_topics,
            lateness_ms: millis(self.window.lateness),
        })
    }

    /// The engine computes only what some topic receives: no index cache without an
    /// index topic, no full-fidelity or debug events without their topics.
    pub fn engine_for_outputs(&self) -> EngineConfig {
        let mut ec = self.engine_config();
        let topics = &self.output.topics;
        ec.index.enabled &= topics.index.is_some();
        ec.gate.debug_events &= topics.debug.is_some();
        if topics.feature.is_none() {
            ec.gate.overrides = vec![Override {
                flags: "*".to_owned(),
                full_events: FullEvents::Never,
                sampling_ratio: None,
            }];
        }
        ec
    }

    /// The full-fidelity rules a running pipeline applies after a reload: `next`'s
    /// `[full_events]` over this configuration's topics (which need a restart).
    pub fn live_gate(&self, next: &Config) -> GateConfig {
        let mut running = self.clone();
        running.full_events = next.full_events.clone();
        running.engine_for_outputs().gate
    }

    /// The check of the worst-case checkpoint against a topic limit, for `validate`.
    pub(super) fn checkpoint_fits(&self, limit: usize) -> Result<(), String> {
        checkpoint::fits(
            &self.engine_config().window,
            &self.processing.checkpoint_topic,
            limit,
        )
    }
}

/// An id made distinct per worker: worker 0 keeps it (a single worker's ids are what
/// they were before workers existed), worker n gets `-n`.
fn per_worker(id: &str, worker: usize) -> String {
    match worker {
        0 => id.to_owned(),
        n => format!("{id}-{n}"),
    }
}
