//! Avro output read back must equal the JSON output, event for event: both encoders
//! describe the same LaunchDarkly events, and sinks read either.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use serde_json::Value;

use flagtally::decode::{Decoded, Decoder, Dialect, Limits};
use flagtally::emit::avro::Schemas;
use flagtally::emit::{EmitConfig, Emitter, Format};
use flagtally::generate::{GenConfig, GenDialect, Generator};
use flagtally::window::{Engine, EngineConfig, LatePolicy, PartitionId, SourcePos, WindowConfig};

fn outputs(dialect: GenDialect, policy: LatePolicy) -> Vec<flagtally::window::Output> {
    let mut g = Generator::new(GenConfig {
        dialect,
        skew_ms: 120_000,
        step_ms: 50,
        tracked_one_in: 3,
        ..GenConfig::default()
    });
    let decoder = Decoder::new(Dialect::Auto, Limits::default());
    let mut engine = Engine::new(EngineConfig {
        window: WindowConfig {
            size_ms: 10_000,
            allowed_lateness_ms: 1_000,
            late_policy: policy,
            ..WindowConfig::default()
        },
        ..EngineConfig::default()
    })
    .unwrap();
    let mut out = Vec::new();
    let partition = PartitionId::new("t", 3);
    let extra: [&[u8]; 6] = [
        br#"{"kind":"custom","creationDate":1767225600000,"key":"buy","contextKeys":{"user":"u","org":"o"},"data":{"sku":"x"},"metricValue":2.5,"samplingRatio":3}"#,
        br#"{"kind":"identify","creationDate":1767225600001,"context":{"kind":"user","key":"v","name":"V","anonymous":true}}"#,
        br#"{"kind":"alias","creationDate":1767225600002,"key":"a","previousKey":"b"}"#,
        br#"{"kind":"feature","creationDate":1767225600003,"key":"f","version":2,"context":{"kind":"multi","user":{"key":"u"},"org":{"key":"o","name":"O"}},"variation":0,"value":[1,2],"default":null,"debugEventsUntilDate":1767225700000,"reason":{"kind":"RULE_MATCH","ruleIndex":0,"inExperiment":true},"prereqOf":"p","trackEvents":false}"#,
        br#"{"kind":"custom","creationDate":1767225600004,"key":"view","userKey":"w"}"#,
        br#"{"kind":"feature","creationDate":1767225600005,"key":"g","version":1,"context":{"kind":"user","key":"x","anonymous":true,"email":"e","_meta":{"privateAttributes":["/email"]}},"variation":1,"value":1,"default":0,"trackEvents":true,"debugEventsUntilDate":1767225900000}"#,
    ];
    for (offset, record) in extra.iter().enumerate() {
        let mut d = Decoded::default();
        decoder.decode(record, &mut d);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        for (i, ev) in d.events.into_iter().enumerate() {
            let pos = SourcePos {
                partition: partition.clone(),
                offset: -(offset as i64) - 1,
                index: i as u32,
            };
            engine.push(&pos, ev, 0, &mut out);
        }
    }
    for offset in 0..3000 {
        let mut d = Decoded::default();
        decoder.decode(&g.next_record(), &mut d);
        for (i, ev) in d.events.into_iter().enumerate() {
            let pos = SourcePos {
                partition: partition.clone(),
                offset,
                index: i as u32,
            };
            engine.push(&pos, ev, 0, &mut out);
        }
    }
    engine.flush_all(&mut out);
    out
}

#[test]
fn avro_reads_back_as_the_json_event() {
    let json = Emitter::new(EmitConfig::default());
    let avro = Emitter::new(EmitConfig {
        format: Format::Avro,
        ..EmitConfig::default()
    });
    let schemas = Schemas::load();
    let mut kinds = std::collections::BTreeSet::new();
    for (dialect, policy) in [
        (GenDialect::Launchdarkly, LatePolicy::Correction),
        (GenDialect::Mixed, LatePolicy::DeadLetter),
        (GenDialect::Native, LatePolicy::Correction),
    ] {
        for o in outputs(dialect, policy) {
            let j = json.emit(&o).unwrap();
            let a = avro.emit(&o).unwrap();
            assert_eq!((j.kind, j.id, &j.key), (a.kind, a.id, &a.key));
            let want: Value = serde_json::from_slice(&j.value).unwrap();
            let got = schemas.decode(a.kind, &a.value).unwrap();
            assert_eq!(got, want, "{:?}", a.kind);
            kinds.insert(a.kind);
        }
    }
    assert_eq!(kinds.len(), 8, "covered {kinds:?}");
}
