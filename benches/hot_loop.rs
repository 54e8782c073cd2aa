//! The decode + window loop of `decode_window/launchdarkly` without criterion, for
//! counting instructions: `scripts/bench-instructions.sh` runs it under cachegrind
//! with one round and with four, and divides the difference by the events of three
//! rounds, so setup (generating the records) cancels out. Instructions per event are
//! deterministic where wall time on a shared VM moves by ±20 % between runs.
//!
//! `cargo bench --bench hot_loop -- ROUNDS` (default 50) prints the rate as well.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failure report

mod shared;

use flagtally::decode::{Decoder, Dialect, Limits};
use flagtally::generate::GenDialect;
use flagtally::window::{Engine, EngineConfig, PartitionId};
use shared::{decode_and_push, records};

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let input = records(GenDialect::Launchdarkly);
    let decoder = Decoder::new(Dialect::Launchdarkly, Limits::default());
    let partition = PartitionId::new("bench", 0);
    let started = std::time::Instant::now();
    let mut events = 0;
    for _ in 0..rounds {
        // A fresh engine per round, as criterion's `iter_batched_ref` gives each batch.
        let mut engine = Engine::new(EngineConfig::default()).unwrap();
        events += decode_and_push(&decoder, &mut engine, &partition, &input);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "hot_loop: {events} events in {secs:.3} s, {:.3} M events/s",
        events as f64 / secs / 1e6
    );
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
