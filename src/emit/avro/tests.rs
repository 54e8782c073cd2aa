use super::*;
use crate::decode::native::tests::{
    event_to_value, null, opt_long, opt_string, saturating, version_value,
};
use crate::event::{FlagVersion, VariationRef};
use apache_avro::types::Value;
use serde_json::Value as JsonValue;

// The oracle: outputs as apache-avro `Value`s, which apache-avro validates against
// each schema and encodes; the direct writer must agree byte for byte.

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn json_opt(j: Option<&Json>) -> Value {
    opt_string(j.map(Json::as_str))
}

fn time(t: EventTime) -> Value {
    Value::Long(t.as_millis())
}

fn variation_fields(v: Option<&VariationRef>) -> [(&'static str, Value); 2] {
    let (index, name) = match v {
        None => (None, None),
        Some(VariationRef::Index(i)) => (Some(i64::from(*i)), None),
        Some(VariationRef::Name(n)) => (None, Some(n.as_str())),
    };
    [
        ("variation", opt_long(index)),
        ("variationName", opt_string(name)),
    ]
}

fn context(c: &Contexts, redact_anonymous: bool) -> Value {
    let mut text = Vec::new();
    crate::emit::launchdarkly::context(&mut text, c, redact_anonymous);
    Value::String(String::from_utf8(text).unwrap())
}

fn scope_fields(s: &Scope) -> [(&'static str, Value); 2] {
    [
        ("env", opt_string(s.env.as_deref())),
        ("project", opt_string(s.project.as_deref())),
    ]
}

fn to_record(out: &Output) -> Value {
    let mut f: Vec<(&str, Value)> = Vec::with_capacity(16);
    match out {
        Output::Summary(s) => {
            f.push(("startDate", time(s.start_date)));
            f.push(("endDate", time(s.end_date)));
            f.push(("flagKey", string(&s.flag_key)));
            f.push(("default", string(s.default.as_str())));
            let counters = s
                .counters
                .iter()
                .map(|c| {
                    let mut cf = Vec::with_capacity(5);
                    cf.extend(variation_fields(c.variation.as_ref()));
                    cf.push(("version", version_value(c.version.as_ref())));
                    cf.push(("value", string(c.value.as_str())));
                    cf.push(("count", Value::Long(saturating(c.count))));
                    record(cf)
                })
                .collect();
            f.push(("counters", Value::Array(counters)));
            let kinds = s.context_kinds.iter().map(|k| string(k)).collect();
            f.push(("contextKinds", Value::Array(kinds)));
            f.push(("windowStart", time(s.window.start)));
            f.push(("windowEnd", time(s.window.end)));
            f.push(("late", Value::Boolean(s.late)));
            f.push(("early", Value::Boolean(s.reason == CloseReason::Early)));
            f.push(("partition", string(&s.partition.to_string())));
            f.extend(scope_fields(&s.scope));
        }
        Output::Feature {
            event: e, debug, ..
        } => {
            f.push((
                "kind",
                if *debug {
                    Value::Enum(1, "debug".into())
                } else {
                    Value::Enum(0, "feature".into())
                },
            ));
            f.push(("creationDate", time(e.creation_date)));
            f.push(("key", string(&e.flag_key)));
            f.push(("version", version_value(e.version.as_ref())));
            f.push(("context", context(&e.context, !*debug)));
            f.extend(variation_fields(e.variation.as_ref()));
            f.push(("value", string(e.value.as_str())));
            f.push(("default", json_opt(e.default.as_ref())));
            f.push(("prereqOf", opt_string(e.prereq_of.as_deref())));
            f.push(("reason", json_opt(e.reason.as_ref())));
            f.push(("samplingRatio", opt_long(e.sampling_ratio.map(saturating))));
            f.extend(scope_fields(&e.scope));
        }
        Output::Index {
            scope,
            context: c,
            creation_date,
            ..
        } => {
            f.push(("creationDate", time(*creation_date)));
            f.push(("context", context(c, false)));
            f.extend(scope_fields(scope));
        }
        Output::Identify { event: e, .. } => {
            f.push(("creationDate", time(e.creation_date)));
            f.push(("context", context(&e.context, false)));
            f.push(("samplingRatio", opt_long(e.sampling_ratio.map(saturating))));
            f.extend(scope_fields(&e.scope));
        }
        Output::Custom { event: e, .. } => {
            f.push(("creationDate", time(e.creation_date)));
            f.push(("key", string(&e.key)));
            f.push(("data", json_opt(e.data.as_ref())));
            f.push(("contextKeys", string(e.context.keys_object().as_str())));
            f.push((
                "metricValue",
                match e.metric_value {
                    None => null(),
                    Some(m) => Value::Union(1, Box::new(Value::Double(m))),
                },
            ));
            f.push(("samplingRatio", opt_long(e.sampling_ratio.map(saturating))));
            f.extend(scope_fields(&e.scope));
        }
        Output::PassThrough { event: e, .. } => {
            f.push(("kind", string(&e.kind)));
            f.push((
                "creationDate",
                opt_long(e.creation_date.map(EventTime::as_millis)),
            ));
            f.push(("body", string(e.body.as_str())));
            f.extend(scope_fields(&e.scope));
        }
        Output::Late { event, window, .. } => {
            f.push(("event", event_to_value(event)));
            f.push(("windowStart", time(window.start)));
            f.push(("windowEnd", time(window.end)));
        }
    }
    record(f)
}

use crate::decode::native::tests::events;
use crate::event::{ContextEvent, ContextKey, Custom, Evaluation, Event, PassThrough};
use crate::window::{ClosedSummary, Counter, PartitionId, SourcePos, Window};

fn j(text: &str) -> Json {
    Json::parse(text).unwrap()
}

fn pos() -> SourcePos {
    SourcePos {
        partition: PartitionId::new("evals", 3),
        offset: 42,
        index: 1,
    }
}

fn multi() -> Contexts {
    Contexts::multi(&[("org", "o"), ("user", "u")])
}

fn summary() -> ClosedSummary {
    ClosedSummary {
        scope: Scope {
            project: Some("p".into()),
            env: Some("prod".into()),
        },
        flag_key: "flag1".into(),
        window: Window {
            start: EventTime::from_millis(60_000),
            end: EventTime::from_millis(120_000),
        },
        partition: PartitionId::new("evals", 3),
        start_date: EventTime::from_millis(60_100),
        end_date: EventTime::from_millis(60_200),
        default: j(r#""d1""#),
        counters: vec![
            Counter {
                variation: None,
                version: Some(FlagVersion::Int(11)),
                value: j(r#""d1""#),
                count: 1,
            },
            Counter {
                variation: Some(VariationRef::Index(0)),
                version: Some(FlagVersion::Int(11)),
                value: j(r#"{"a":1}"#),
                count: 2,
            },
            Counter {
                variation: Some(VariationRef::Name("Blue".into())),
                version: Some(FlagVersion::Str("v7".into())),
                value: j(r#""blue""#),
                count: 3,
            },
            Counter {
                variation: Some(VariationRef::Name("Red".into())),
                version: None,
                value: j(r#""red""#),
                count: 4,
            },
        ],
        context_kinds: vec!["org".into(), "user".into()],
        kinds_dropped: 0,
        late: true,
        reason: CloseReason::Early,
        part: 1,
        first_offset: 7,
        first_index: 0,
        epoch: 0,
    }
}

fn evaluation() -> Evaluation {
    Evaluation {
        scope: Scope {
            project: None,
            env: Some("prod".into()),
        },
        flag_key: "flag1".into(),
        variation: Some(VariationRef::Index(1)),
        version: Some(FlagVersion::Int(11)),
        value: j("true"),
        default: Some(j("false")),
        context: multi(),
        creation_date: EventTime::from_millis(1000),
        reason: Some(j(r#"{"kind":"FALLTHROUGH"}"#)),
        in_experiment: false,
        prereq_of: Some("parent".into()),
        track_events: Some(true),
        debug_events_until_date: None,
        sampling_ratio: Some(3),
        exclude_from_summaries: false,
        debug: false,
        counted_by_summary: false,
        meta: None,
    }
}

/// Every output kind, each with the LaunchDarkly JSON it must read back as.
fn cases() -> Vec<(Output, &'static str)> {
    let named_debug = Evaluation {
        variation: Some(VariationRef::Name("Default".into())),
        version: Some(FlagVersion::Str("127".into())),
        default: None,
        context: Contexts {
            keys: smallvec::smallvec![ContextKey {
                kind: "user".into(),
                key: "u".into()
            }],
            body: Some(j(
                r#"{"kind":"user","key":"u","anonymous":true,"name":"Red"}"#,
            )),
        },
        reason: None,
        prereq_of: None,
        sampling_ratio: Some(1),
        ..evaluation()
    };
    let fallback = Evaluation {
        variation: None,
        version: None,
        default: Some(Json::null()),
        value: j("null"),
        context: Contexts::single("user", "u"),
        reason: None,
        prereq_of: None,
        sampling_ratio: None,
        ..evaluation()
    };
    let null_default = ClosedSummary {
        default: Json::null(),
        counters: vec![Counter {
            variation: Some(VariationRef::Index(0)),
            version: Some(FlagVersion::Int(1)),
            value: j("1.5"),
            count: 1,
        }],
        context_kinds: vec!["user".into()],
        kinds_dropped: 0,
        late: false,
        reason: CloseReason::Watermark,
        scope: Scope::default(),
        ..summary()
    };
    vec![
        (
            Output::Summary(summary()),
            r#"{"kind":"summary","startDate":60100,"endDate":60200,"features":{"flag1":{"default":"d1","counters":[{"version":11,"value":"d1","count":1},{"variation":0,"version":11,"value":{"a":1},"count":2},{"variationName":"Blue","version":"v7","value":"blue","count":3},{"variationName":"Red","unknown":true,"value":"red","count":4}],"contextKinds":["org","user"]}}}"#,
        ),
        (
            Output::Summary(null_default),
            r#"{"kind":"summary","startDate":60100,"endDate":60200,"features":{"flag1":{"default":null,"counters":[{"variation":0,"version":1,"value":1.5,"count":1}],"contextKinds":["user"]}}}"#,
        ),
        (
            Output::Feature {
                event: Box::new(evaluation()),
                debug: false,
                pos: pos(),
            },
            r#"{"kind":"feature","creationDate":1000,"key":"flag1","version":11,"context":{"kind":"multi","org":{"key":"o"},"user":{"key":"u"}},"variation":1,"value":true,"default":false,"prereqOf":"parent","reason":{"kind":"FALLTHROUGH"},"samplingRatio":3}"#,
        ),
        (
            Output::Feature {
                event: Box::new(named_debug),
                debug: true,
                pos: pos(),
            },
            r#"{"kind":"debug","creationDate":1000,"key":"flag1","version":"127","context":{"kind":"user","key":"u","anonymous":true,"name":"Red"},"variationName":"Default","value":true,"default":null}"#,
        ),
        (
            Output::Feature {
                event: Box::new(fallback),
                debug: false,
                pos: pos(),
            },
            r#"{"kind":"feature","creationDate":1000,"key":"flag1","context":{"kind":"user","key":"u"},"value":null,"default":null}"#,
        ),
        (
            Output::Index {
                scope: Scope::default(),
                context: multi(),
                creation_date: EventTime::from_millis(999),
                pos: pos(),
            },
            r#"{"kind":"index","creationDate":999,"context":{"kind":"multi","org":{"key":"o"},"user":{"key":"u"}}}"#,
        ),
        (
            Output::Identify {
                event: ContextEvent {
                    scope: Scope {
                        project: None,
                        env: Some("e".into()),
                    },
                    context: Contexts::single("org", "o:1"),
                    creation_date: EventTime::from_millis(5),
                    sampling_ratio: None,
                },
                pos: pos(),
            },
            r#"{"kind":"identify","creationDate":5,"context":{"kind":"org","key":"o:1"}}"#,
        ),
        (
            Output::Custom {
                event: Box::new(Custom {
                    scope: Scope::default(),
                    key: "checkout".into(),
                    context: Contexts::single("user", "u"),
                    data: None,
                    metric_value: Some(0.0),
                    creation_date: EventTime::from_millis(100_000),
                    sampling_ratio: None,
                }),
                pos: pos(),
            },
            r#"{"kind":"custom","creationDate":100000,"key":"checkout","contextKeys":{"user":"u"},"metricValue":0}"#,
        ),
        (
            Output::Custom {
                event: Box::new(Custom {
                    scope: Scope::default(),
                    key: "eventkey".into(),
                    context: multi(),
                    data: Some(j(r#"{"d":[1,"x"]}"#)),
                    metric_value: Some(2.5),
                    creation_date: EventTime::from_millis(100_000),
                    sampling_ratio: Some(2),
                }),
                pos: pos(),
            },
            r#"{"kind":"custom","creationDate":100000,"key":"eventkey","data":{"d":[1,"x"]},"contextKeys":{"org":"o","user":"u"},"metricValue":2.5,"samplingRatio":2}"#,
        ),
        (
            Output::Custom {
                event: Box::new(Custom {
                    scope: Scope::default(),
                    key: "k".into(),
                    context: Contexts::single("user", "u"),
                    data: Some(Json::null()),
                    metric_value: None,
                    creation_date: EventTime::from_millis(1),
                    sampling_ratio: None,
                }),
                pos: pos(),
            },
            r#"{"kind":"custom","creationDate":1,"key":"k","contextKeys":{"user":"u"}}"#,
        ),
        (
            Output::PassThrough {
                event: PassThrough {
                    scope: Scope::default(),
                    kind: "alias".into(),
                    body: j(r#"{"kind":"alias","key":"new","previousKey":"old","creationDate":9}"#),
                    creation_date: Some(EventTime::from_millis(9)),
                },
                pos: pos(),
            },
            r#"{"kind":"alias","key":"new","previousKey":"old","creationDate":9}"#,
        ),
        (
            Output::Late {
                event: Box::new(Event::evaluation(evaluation())),
                window: Window {
                    start: EventTime::from_millis(0),
                    end: EventTime::from_millis(60_000),
                },
                pos: pos(),
            },
            r#"{"type":"evaluation","env":"prod","flagKey":"flag1","variation":1,"version":11,"value":true,"default":false,"context":{"keys":[{"kind":"org","key":"o"},{"kind":"user","key":"u"}]},"creationDate":1000,"reason":{"kind":"FALLTHROUGH"},"prereqOf":"parent","trackEvents":true,"samplingRatio":3}"#,
        ),
    ]
}

#[test]
fn every_schema_parses() {
    let schemas = Schemas::load(None);
    for kind in OutputKind::ALL {
        schemas.schema(kind).unwrap();
        assert_eq!(schemas.fingerprint(kind).unwrap().len(), 8);
        Schema::parse_str(Schemas::schema_text(kind)).unwrap();
    }
    // Feature and debug share a schema; the others are distinct.
    let mut fps: Vec<_> = OutputKind::ALL
        .iter()
        .filter(|k| **k != OutputKind::Debug)
        .map(|k| schemas.fingerprint(*k).unwrap())
        .collect();
    fps.sort();
    fps.dedup();
    assert_eq!(fps.len(), 7);
}

/// Readers of single-object records look schemas up by fingerprint: a schema
/// change is a new fingerprint, so it must be deliberate (and `schemas/README.md`
/// updated with it).
#[test]
fn fingerprints_are_pinned() {
    let schemas = Schemas::load(None);
    let pinned = [
        (OutputKind::Summary, "4e678b36587deffa"),
        (OutputKind::Feature, "4b89513325f890ba"),
        (OutputKind::Debug, "4b89513325f890ba"),
        (OutputKind::Index, "8aa5562ccfa9215a"),
        (OutputKind::Identify, "cb9e023bf6e52404"),
        (OutputKind::Custom, "67a87cf4a422a182"),
        (OutputKind::PassThrough, "d8a27a5af1ecafde"),
        (OutputKind::Late, "d8a9ee1e71503051"),
    ];
    for (kind, hex) in pinned {
        assert_eq!(
            avro::hex(&schemas.fingerprint(kind).unwrap()),
            hex,
            "{kind:?}"
        );
    }
    assert_eq!(
        avro::hex(avro::event_schema().unwrap().fingerprint()),
        "46493c93068c1ef7"
    );
}

#[test]
fn the_late_schema_embeds_the_canonical_event() {
    let late = Schemas::load(None).schema(OutputKind::Late).unwrap();
    let Schema::Record(late) = late else {
        panic!("late.avsc is not a record")
    };
    let event = &avro::event_schema().unwrap().schema;
    assert_eq!(late.fields[0].name, "event");
    assert_eq!(
        late.fields[0].schema.canonical_form(),
        event.canonical_form()
    );
}

#[test]
fn the_direct_writer_matches_apache_avro() {
    let schemas = Schemas::load(None);
    for (out, _) in cases() {
        let kind = OutputKind::of(&out);
        let oracle = schemas.get(kind).unwrap().encode(&to_record(&out)).unwrap();
        assert_eq!(schemas.encode(&out).unwrap(), oracle, "{kind:?}");
    }
}

#[test]
fn every_output_kind_reads_back_as_launchdarkly_json() {
    let schemas = Schemas::load(None);
    for (out, expected) in cases() {
        let kind = OutputKind::of(&out);
        let bytes = schemas.encode(&out).unwrap();
        assert_eq!(bytes[..2], [0xC3, 0x01]);
        assert_eq!(bytes[2..10], schemas.fingerprint(kind).unwrap());
        let back = schemas.decode(kind, &bytes).unwrap();
        assert_eq!(back.to_string(), expected, "{kind:?}");
    }
}

#[test]
fn a_late_record_round_trips_every_canonical_event() {
    let schemas = Schemas::load(None);
    for event in events() {
        let out = Output::Late {
            event: Box::new(event.clone()),
            window: Window {
                start: EventTime::from_millis(0),
                end: EventTime::from_millis(60_000),
            },
            pos: pos(),
        };
        let bytes = schemas.encode(&out).unwrap();
        let back = schemas.decode(OutputKind::Late, &bytes).unwrap();
        assert_eq!(back, serde_json::to_value(&event).unwrap());
    }
}

#[test]
fn records_carry_provenance() {
    let schemas = Schemas::load(None);
    let bytes = schemas.encode(&Output::Summary(summary())).unwrap();
    let rec = schemas.decode_record(OutputKind::Summary, &bytes).unwrap();
    assert_eq!(
        rec.to_string(),
        r#"{"startDate":60100,"endDate":60200,"flagKey":"flag1","default":"\"d1\"","counters":[{"variation":null,"variationName":null,"version":11,"value":"\"d1\"","count":1},{"variation":0,"variationName":null,"version":11,"value":"{\"a\":1}","count":2},{"variation":null,"variationName":"Blue","version":"v7","value":"\"blue\"","count":3},{"variation":null,"variationName":"Red","version":null,"value":"\"red\"","count":4}],"contextKinds":["org","user"],"windowStart":60000,"windowEnd":120000,"late":true,"early":true,"partition":"evals/3","env":"prod","project":"p"}"#
    );
    let (feature, _) = &cases()[2];
    let bytes = schemas.encode(feature).unwrap();
    let rec = schemas.decode_record(OutputKind::Feature, &bytes).unwrap();
    assert_eq!(rec["env"], "prod");
    assert_eq!(rec["project"], JsonValue::Null);
    assert_eq!(rec["samplingRatio"], 3);
    let (late, _) = cases().pop().unwrap();
    let bytes = schemas.encode(&late).unwrap();
    let rec = schemas.decode_record(OutputKind::Late, &bytes).unwrap();
    assert_eq!(rec["windowEnd"], 60_000);
    assert_eq!(rec["event"]["type"], "evaluation");
}

#[test]
fn debug_records_use_the_feature_schema() {
    let schemas = Schemas::load(None);
    let (debug, _) = &cases()[3];
    let bytes = schemas.encode(debug).unwrap();
    assert_eq!(
        schemas.decode(OutputKind::Feature, &bytes).unwrap(),
        schemas.decode(OutputKind::Debug, &bytes).unwrap()
    );
}

#[test]
fn bad_records_are_errors_never_panics() {
    let schemas = Schemas::load(None);
    let bytes = schemas.encode(&Output::Summary(summary())).unwrap();
    let err = |kind, b: &[u8]| match schemas.decode(kind, b) {
        Err(EmitError::Avro { kind, detail }) => format!("{kind}: {detail}"),
        Ok(v) => panic!("decoded {v}"),
    };
    assert!(err(OutputKind::Summary, b"").contains("too short"));
    assert!(err(OutputKind::Summary, &[0u8; 12]).contains("not single-object"));
    let wrong = err(OutputKind::Feature, &bytes);
    assert!(wrong.contains("feature.avsc"), "{wrong}");
    let ours = avro::hex(&schemas.fingerprint(OutputKind::Summary).unwrap());
    assert!(wrong.contains(&ours), "{wrong}");
    for len in 10..bytes.len() {
        err(OutputKind::Summary, &bytes[..len]);
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(err(OutputKind::Summary, &long).contains("unread"));
    for i in 10..bytes.len() {
        for b in [0x00, 0x7F, 0x80, 0xFF] {
            let mut flipped = bytes.clone();
            flipped[i] = b;
            let _ = schemas.decode(OutputKind::Summary, &flipped);
            let _ = schemas.decode_record(OutputKind::Summary, &flipped);
        }
    }
}

#[test]
fn huge_counts_saturate() {
    let mut s = summary();
    s.counters[0].count = u64::MAX;
    let schemas = Schemas::load(None);
    let bytes = schemas.encode(&Output::Summary(s)).unwrap();
    let back = schemas.decode(OutputKind::Summary, &bytes).unwrap();
    assert_eq!(back["features"]["flag1"]["counters"][0]["count"], i64::MAX);
}

// Avro output read back must equal the JSON output, event for event, over generated
// traffic of every dialect: both encoders describe the same LaunchDarkly events, and
// sinks read either. (Was tests/avro_json_agree.rs; the reader is test code now.)
mod agree {
    use serde_json::Value;

    use super::super::Schemas;
    use crate::decode::{Decoded, Decoder, Dialect, Limits};
    use crate::emit::{EmitConfig, Emitter, Format};
    use crate::generate::{GenConfig, GenDialect, Generator};
    use crate::window::{Engine, EngineConfig, LatePolicy, PartitionId, SourcePos, WindowConfig};

    fn outputs(dialect: GenDialect, policy: LatePolicy) -> Vec<crate::window::Output> {
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
        let schemas = Schemas::load(None);
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

    #[test]
    fn registry_ids_frame_records_in_the_confluent_wire_format() {
        let mut ids = crate::emit::avro::SchemaIds::default();
        ids.set(crate::emit::OutputKind::Summary, 0x0102_0304);
        let framed = Schemas::load(Some(&ids));
        let plain = Schemas::load(None);
        for o in outputs(GenDialect::Launchdarkly, LatePolicy::Correction) {
            let a = framed.encode(&o).unwrap();
            let b = plain.encode(&o).unwrap();
            if crate::emit::OutputKind::of(&o) == crate::emit::OutputKind::Summary {
                // 0x00, the id big-endian, then the same datum.
                assert_eq!(a[..5], [0x00, 1, 2, 3, 4]);
                assert_eq!(a[5..], b[10..]);
            } else {
                assert_eq!(a, b, "kinds without an id keep single-object encoding");
            }
        }
    }
}
