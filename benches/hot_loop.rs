//! The decode + window loop of `decode_window/launchdarkly` without criterion, for
//! counting instructions: `scripts/bench-instructions.sh` runs it under cachegrind
//! with one round and with four, and divides the difference by the events of three
//! rounds, so setup (generating the records) cancels out. Instructions per event are
//! deterministic where wall time on a shared VM moves by ±20 % between runs.
//!
//! `cargo bench --bench hot_loop -- ROUNDS` (default 50) prints the rate as well.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failure report

use std::hint::black_box;

use flagtally::decode::{Decoded, Decoder, Dialect, Limits};
use flagtally::generate::{GenConfig, GenDialect, Generator};
use flagtally::window::{Engine, EngineConfig, PartitionId, SourcePos};

/// Records per round, as in `benches/decode_window.rs`.
const BATCH: usize = 20_000;

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let mut g = Generator::new(GenConfig {
        dialect: GenDialect::Launchdarkly,
        flags: 200,
        contexts: 100_000,
        ..GenConfig::default()
    });
    let input: Vec<Vec<u8>> = (0..BATCH).map(|_| g.next_record()).collect();
    let decoder = Decoder::new(Dialect::Launchdarkly, Limits::default());
    let partition = PartitionId::new("bench", 0);
    let started = std::time::Instant::now();
    let mut events = 0u64;
    for _ in 0..rounds {
        // A fresh engine per round, as criterion's `iter_batched_ref` gives each batch.
        let mut engine = Engine::new(EngineConfig::default()).unwrap();
        let mut decoded = Decoded::default();
        let mut outputs = Vec::with_capacity(1024);
        for (offset, r) in input.iter().enumerate() {
            decoded.clear();
            decoder.decode(black_box(r), &mut decoded);
            for (index, ev) in decoded.events.drain(..).enumerate() {
                let pos = SourcePos {
                    partition: partition.clone(),
                    offset: offset as i64,
                    index: index as u32,
                };
                engine.push(&pos, ev, 0, &mut outputs);
                events += 1;
            }
            if outputs.len() >= 1024 {
                black_box(&outputs);
                outputs.clear();
            }
        }
        black_box(outputs);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "hot_loop: {events} events in {secs:.3} s, {:.3} M events/s",
        events as f64 / secs / 1e6
    );
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
