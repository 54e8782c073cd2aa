//! The decode + window loop of `decode_window/launchdarkly` without criterion, for
//! counting instructions: `scripts/bench-instructions.sh` runs it under cachegrind
//! with one round and with four, and divides the difference by the events of three
//! rounds, so setup (generating the records) cancels out. Instructions per event are
//! deterministic where wall time on a shared VM moves by ±20 % between runs.
//!
//! `cargo bench --bench hot_loop -- ROUNDS` (default 50) prints the rate as well.
//! `DIALECT=auto` decodes them as `auto` (detecting each record) instead of as
//! LaunchDarkly. `THREADS=n` runs n such loops at once, each on its own thread with its own copy of
//! the records, decoder and engine, as the pipeline's workers run: with n = the cores,
//! it shows how decode + window scales with cores when no broker shares them.

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
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
        .max(1);
    let input = records(GenDialect::Launchdarkly);
    let started = std::time::Instant::now();
    let events: usize = std::thread::scope(|s| {
        let loops: Vec<_> = (0..threads)
            .map(|worker| {
                let input = input.clone();
                s.spawn(move || run(worker, rounds, &input))
            })
            .collect();
        loops.into_iter().map(|l| l.join().unwrap()).sum()
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "hot_loop: {events} events in {secs:.3} s, {:.3} M events/s ({threads} thread{})",
        events as f64 / secs / 1e6,
        if threads == 1 { "" } else { "s" }
    );
}

/// One worker's loop: `rounds` passes over `input`, each into a fresh engine.
fn run(worker: usize, rounds: usize, input: &[Vec<u8>]) -> usize {
    // `DIALECT=auto` reads the same LaunchDarkly records as `auto` does: the cost of
    // detecting them.
    let dialect = match std::env::var("DIALECT").as_deref() {
        Ok("auto") => Dialect::Auto,
        _ => Dialect::Launchdarkly,
    };
    let decoder = Decoder::new(dialect, Limits::default());
    let partition = PartitionId::new("bench", i32::try_from(worker).unwrap());
    let mut events = 0;
    for _ in 0..rounds {
        // A fresh engine per round, as criterion's `iter_batched_ref` gives each batch.
        let mut engine = Engine::new(EngineConfig::default()).unwrap();
        events += decode_and_push(&decoder, &mut engine, &partition, input);
    }
    events
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
