//! What the decode + window benches share: the generated input and the loop that runs
//! it through a decoder and an engine, as the processor does.

use std::hint::black_box;

use flagtally::decode::{Decoded, Decoder};
use flagtally::generate::{GenConfig, GenDialect, Generator};
use flagtally::window::{Engine, PartitionId, SourcePos};

/// Records per batch.
pub const BATCH: usize = 20_000;

/// A batch of generated records: 200 flags, 100 000 distinct contexts.
pub fn records(dialect: GenDialect) -> Vec<Vec<u8>> {
    let mut g = Generator::new(GenConfig {
        dialect,
        flags: 200,
        contexts: 100_000,
        ..GenConfig::default()
    });
    (0..BATCH).map(|_| g.next_record()).collect()
}

/// Decodes each record of `input` and pushes its events through `engine`, as the
/// pipeline does; returns the events pushed.
pub fn decode_and_push(
    decoder: &Decoder,
    engine: &mut Engine,
    partition: &PartitionId,
    input: &[Vec<u8>],
) -> usize {
    let mut decoded = Decoded::default();
    let mut outputs = Vec::with_capacity(1024);
    let mut events = 0;
    for (offset, r) in input.iter().enumerate() {
        decoded.clear();
        decoder.decode(black_box(r), &mut decoded);
        // One position per record, as the pipeline keeps it.
        let mut pos = SourcePos {
            partition: partition.clone(),
            offset: offset as i64,
            index: 0,
        };
        for (index, ev) in decoded.events.drain(..).enumerate() {
            pos.index = index as u32;
            engine.push(&pos, ev, 0, &mut outputs);
            events += 1;
        }
        if outputs.len() >= 1024 {
            black_box(&outputs);
            outputs.clear();
        }
    }
    black_box(outputs);
    events
}
