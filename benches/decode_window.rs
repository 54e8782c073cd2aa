//! Hot-path throughput: decode + window, one core, per dialect.
//!
//! Each iteration decodes a batch of generated records and pushes every event through
//! the window engine (summaries, feature-event gating, index dedupe), as the processor
//! does. Target: ≥ 2 M LaunchDarkly feature events/s. Run with `cargo bench --bench
//! decode_window`; results are recorded in docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

mod shared;

use flagtally::decode::{Decoded, Decoder, Dialect, Limits};
use flagtally::generate::GenDialect;
use flagtally::window::{Engine, EngineConfig, PartitionId, SourcePos};
use shared::{BATCH, decode_and_push, records};

fn bench(c: &mut Criterion) {
    let cases = [
        (
            "launchdarkly",
            GenDialect::Launchdarkly,
            Dialect::Launchdarkly,
        ),
        ("goff", GenDialect::Goff, Dialect::Goff),
        ("featbit", GenDialect::Featbit, Dialect::Featbit),
        ("native", GenDialect::Native, Dialect::Native),
        ("auto-mixed", GenDialect::Mixed, Dialect::Auto),
    ];
    let mut decode = c.benchmark_group("decode");
    decode.throughput(Throughput::Elements(BATCH as u64));
    for (name, generator, dialect) in cases {
        let input = records(generator);
        let decoder = Decoder::new(dialect, Limits::default());
        decode.bench_function(name, |b| {
            let mut out = Decoded::default();
            b.iter(|| {
                for r in &input {
                    out.clear();
                    decoder.decode(black_box(r), &mut out);
                }
            })
        });
    }
    decode.finish();

    let mut window = c.benchmark_group("window");
    window.throughput(Throughput::Elements(BATCH as u64));
    for (name, generator, dialect) in cases {
        let input = records(generator);
        let decoder = Decoder::new(dialect, Limits::default());
        let partition = PartitionId::new("bench", 0);
        window.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut decoded = Decoded::default();
                    for r in &input {
                        decoder.decode(r, &mut decoded);
                    }
                    let engine =
                        Engine::new(EngineConfig::default()).unwrap_or_else(|e| panic!("{e}"));
                    (engine, decoded.events)
                },
                |(mut engine, events)| {
                    let mut outputs = Vec::with_capacity(1024);
                    for (offset, ev) in events.into_iter().enumerate() {
                        let pos = SourcePos {
                            partition: partition.clone(),
                            offset: offset as i64,
                            index: 0,
                        };
                        engine.push(&pos, ev, 0, &mut outputs);
                        if outputs.len() >= 1024 {
                            black_box(&outputs);
                            outputs.clear();
                        }
                    }
                    (engine, outputs)
                },
                BatchSize::LargeInput,
            )
        });
    }
    window.finish();

    let mut group = c.benchmark_group("decode_window");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, generator, dialect) in cases {
        let input = records(generator);
        let decoder = Decoder::new(dialect, Limits::default());
        let partition = PartitionId::new("bench", 0);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || Engine::new(EngineConfig::default()).unwrap_or_else(|e| panic!("{e}")),
                |engine| decode_and_push(&decoder, engine, &partition, &input),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
