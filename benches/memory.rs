//! Memory is bounded by keys, not events: 10 M LaunchDarkly feature events, each from a
//! distinct context, over 100 000 flag × variation keys (20 000 flags × 5 variations,
//! one version), spread evenly over one hour of event time — one hour-long window, so
//! every key stays open to the end. The events are decoded and pushed through the
//! window engine (summaries, index dedupe with its default cache) on four partitions,
//! as the processor does; the resident memory is sampled as events go by.
//!
//! Run with `cargo bench --bench memory` (a few minutes); prints RSS after each 10 %
//! and MiB per million open keys. Optional argument: the number of events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use flagtally::decode::{Decoded, Decoder, Dialect, Limits};
use flagtally::window::{Engine, EngineConfig, PartitionId, SourcePos, WindowConfig};

const FLAGS: u64 = 20_000;
const VARIATIONS: u64 = 5;
const HOUR_MS: u64 = 3_600_000;
/// 2026-01-01T00:00:00Z: an hour boundary.
const START_MS: u64 = 1_767_225_600_000;

fn kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo test --all-targets` runs benches with `--bench`-less arguments: keep it short.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let events: u64 = match args.iter().find(|a| !a.starts_with('-')) {
        Some(n) => n.parse().expect("the number of events"),
        None if args.iter().any(|a| a == "--bench") => 10_000_000,
        None => 200_000,
    };
    let decoder = Decoder::new(Dialect::Launchdarkly, Limits::default());
    let mut engine = Engine::new(EngineConfig {
        window: WindowConfig {
            size_ms: 3_600_000,
            allowed_lateness_ms: 60_000,
            ..WindowConfig::default()
        },
        ..EngineConfig::default()
    })
    .unwrap();
    let partitions: Vec<PartitionId> = (0..4).map(|p| PartitionId::new("memory", p)).collect();
    let mut decoded = Decoded::default();
    let mut outputs = Vec::with_capacity(4096);
    let mut record = String::with_capacity(256);
    let baseline = kib("VmRSS:");
    let started = Instant::now();
    println!(
        "{events} events, {} keys, one hour of event time; RSS before: {:.1} MiB",
        FLAGS * VARIATIONS,
        baseline as f64 / 1024.0
    );
    for i in 0..events {
        use std::fmt::Write as _;
        record.clear();
        let flag = i % FLAGS;
        let variation = (i / FLAGS) % VARIATIONS;
        let time = START_MS + i * HOUR_MS / events;
        write!(
            record,
            r#"{{"kind":"feature","creationDate":{time},"key":"flag-{flag}","version":1,"context":{{"kind":"user","key":"user-{i}"}},"variation":{variation},"value":{variation},"default":0}}"#
        )
        .unwrap();
        decoded.clear();
        decoder.decode(record.as_bytes(), &mut decoded);
        assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        let p = (i % 4) as usize;
        for ev in decoded.events.drain(..) {
            let pos = SourcePos {
                partition: partitions[p].clone(),
                offset: (i / 4) as i64,
                index: 0,
            };
            engine.push(&pos, ev, 0, &mut outputs);
        }
        outputs.clear();
        if (i + 1) % (events / 10).max(1) == 0 {
            let rss = kib("VmRSS:");
            println!(
                "{:>10} events: {:>7} open keys, RSS {:>6.1} MiB ({:.1} s)",
                i + 1,
                engine.keys(),
                rss as f64 / 1024.0,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let peak = kib("VmHWM:");
    let keys = engine.keys() as f64;
    let per_million = (peak.saturating_sub(baseline)) as f64 / 1024.0 / (keys / 1e6);
    println!(
        "peak RSS {:.1} MiB; {keys} open keys; {per_million:.0} MiB per million open keys (peak − before)",
        peak as f64 / 1024.0
    );
}
