//! Shared by every fuzz target: decode, then push what decoded through the engine and
//! the emitter (JSON and Avro), so the whole pure core sees fuzzed input.
#![allow(dead_code)] // each target uses part of it

use std::sync::OnceLock;

use flagtally::decode::{Decoded, Decoder, Dialect, Limits};
use flagtally::emit::{EmitConfig, Emitter, Format};
use flagtally::window::{Engine, EngineConfig, PartitionId, SourcePos};

fn emitters() -> &'static (Emitter, Emitter) {
    static E: OnceLock<(Emitter, Emitter)> = OnceLock::new();
    E.get_or_init(|| {
        (
            Emitter::new(EmitConfig::default()),
            Emitter::new(EmitConfig {
                format: Format::Avro,
                ..EmitConfig::default()
            }),
        )
    })
}

pub fn check(dialect: Dialect, data: &[u8]) {
    outputs(dialect, data);
}

/// Decodes, windows and emits `data` as JSON records (checking that every output also
/// encodes as Avro); returns the JSON records.
pub fn outputs(dialect: Dialect, data: &[u8]) -> Vec<flagtally::emit::Record> {
    let decoder = Decoder::new(dialect, Limits::default());
    let mut decoded = Decoded::default();
    decoder.decode(data, &mut decoded);
    for e in &decoded.errors {
        // Every error must render.
        let _ = e.to_string();
    }
    let Ok(mut engine) = Engine::new(EngineConfig::default()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let partition = PartitionId::new("fuzz", 0);
    for (i, ev) in decoded.events.drain(..).enumerate() {
        let pos = SourcePos {
            partition: partition.clone(),
            offset: 0,
            index: i as u32,
        };
        engine.push(&pos, ev, 0, &mut out);
    }
    engine.flush_all(&mut out);
    let (json, avro) = emitters();
    let mut records = Vec::with_capacity(out.len());
    for o in &out {
        let record = json.emit(o).expect("our own outputs always encode as JSON");
        serde_json::from_slice::<serde_json::Value>(&record.value)
            .expect("emitted JSON must parse");
        avro.emit(o).expect("our own outputs always encode as Avro");
        records.push(record);
    }
    records
}
