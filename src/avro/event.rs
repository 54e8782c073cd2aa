//! The canonical [`Event`] as an `event.avsc` datum: [`write_event`] and
//! [`read_event`], field by field in schema order. Decoding checks only what the
//! schema and the event's types need; `decode::native` validates the result as it
//! does native JSON.

use compact_str::CompactString;
use smallvec::SmallVec;

use super::wire;
use crate::event::{
    ContextEvent, ContextKey, Contexts, Custom, Evaluation, Event, EventTime, FlagVersion, Json,
    PassThrough, Scope, Summary, SummaryCounter, SummaryFlag, VariationRef,
};

/// The `type` enum's symbols, in schema order.
pub(crate) const TYPES: [&str; 6] = [
    "evaluation",
    "custom",
    "identify",
    "index",
    "summary",
    "passThrough",
];

/// An event's fields in `event.avsc` order, set or not according to its type.
#[derive(Default)]
struct Flat<'a> {
    ty: usize,
    flag_key: Option<&'a str>,
    key: Option<&'a str>,
    kind: Option<&'a str>,
    creation_date: Option<EventTime>,
    variation: Option<&'a VariationRef>,
    version: Option<&'a FlagVersion>,
    value: Option<&'a Json>,
    default: Option<&'a Json>,
    context: Option<&'a Contexts>,
    reason: Option<&'a Json>,
    in_experiment: bool,
    prereq_of: Option<&'a str>,
    track_events: Option<bool>,
    debug_events_until_date: Option<EventTime>,
    sampling_ratio: Option<u64>,
    exclude_from_summaries: bool,
    debug: bool,
    meta: Option<&'a Json>,
    data: Option<&'a Json>,
    metric_value: Option<f64>,
    start_date: Option<EventTime>,
    end_date: Option<EventTime>,
    features: &'a [SummaryFlag],
    body: Option<&'a Json>,
}

/// Writes `event` as an `event.avsc` datum.
pub fn write_event(event: &Event, buf: &mut Vec<u8>) {
    let f = match event {
        Event::Evaluation(e) => Flat {
            ty: 0,
            flag_key: Some(&e.flag_key),
            creation_date: Some(e.creation_date),
            variation: e.variation.as_ref(),
            version: e.version.as_ref(),
            value: Some(&e.value),
            default: e.default.as_ref(),
            context: Some(&e.context),
            reason: e.reason.as_ref(),
            in_experiment: e.in_experiment,
            prereq_of: e.prereq_of.as_deref(),
            track_events: e.track_events,
            debug_events_until_date: e.debug_events_until_date,
            sampling_ratio: e.sampling_ratio,
            exclude_from_summaries: e.exclude_from_summaries,
            debug: e.debug,
            meta: e.meta.as_ref(),
            ..Flat::default()
        },
        Event::Custom(e) => Flat {
            ty: 1,
            key: Some(&e.key),
            creation_date: Some(e.creation_date),
            context: Some(&e.context),
            sampling_ratio: e.sampling_ratio,
            data: e.data.as_ref(),
            metric_value: e.metric_value,
            ..Flat::default()
        },
        Event::Identify(e) | Event::Index(e) => Flat {
            ty: if matches!(event, Event::Identify(_)) {
                2
            } else {
                3
            },
            creation_date: Some(e.creation_date),
            context: Some(&e.context),
            sampling_ratio: e.sampling_ratio,
            ..Flat::default()
        },
        Event::Summary(s) => Flat {
            ty: 4,
            start_date: Some(s.start_date),
            end_date: Some(s.end_date),
            features: &s.features,
            ..Flat::default()
        },
        Event::PassThrough(p) => Flat {
            ty: 5,
            kind: Some(&p.kind),
            creation_date: p.creation_date,
            body: Some(&p.body),
            ..Flat::default()
        },
    };
    let scope = event.scope();
    let json = |buf: &mut Vec<u8>, j: Option<&Json>| wire::opt_string(buf, j.map(Json::as_str));
    let ms = |t: Option<EventTime>| t.map(EventTime::as_millis);
    wire::long(buf, f.ty as i64);
    wire::opt_string(buf, scope.project.as_deref());
    wire::opt_string(buf, scope.env.as_deref());
    wire::opt_string(buf, f.flag_key);
    wire::opt_string(buf, f.key);
    wire::opt_string(buf, f.kind);
    wire::opt_long(buf, ms(f.creation_date));
    wire::variation(buf, f.variation);
    wire::version(buf, f.version);
    json(buf, f.value);
    json(buf, f.default);
    match f.context {
        None => wire::long(buf, 0),
        Some(c) => {
            wire::long(buf, 1);
            wire::array(buf, &c.keys, |buf, k| {
                wire::string(buf, &k.kind);
                wire::string(buf, &k.key);
            });
            json(buf, c.body.as_ref());
        }
    }
    json(buf, f.reason);
    wire::boolean(buf, f.in_experiment);
    wire::opt_string(buf, f.prereq_of);
    wire::opt_bool(buf, f.track_events);
    wire::opt_long(buf, ms(f.debug_events_until_date));
    wire::opt_long(
        buf,
        f.sampling_ratio
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
    );
    wire::boolean(buf, f.exclude_from_summaries);
    wire::boolean(buf, f.debug);
    json(buf, f.meta);
    json(buf, f.data);
    wire::opt_double(buf, f.metric_value);
    wire::opt_long(buf, ms(f.start_date));
    wire::opt_long(buf, ms(f.end_date));
    wire::array(buf, f.features, |buf, flag| {
        wire::string(buf, &flag.key);
        json(buf, flag.default.as_ref());
        wire::array(buf, &flag.counters, |buf, c| {
            wire::variation(buf, c.variation.as_ref());
            wire::version(buf, c.version.as_ref());
            wire::string(buf, c.value.as_str());
            wire::count(buf, c.count);
        });
        wire::array(buf, &flag.context_kinds, |buf, k| wire::string(buf, k));
    });
    json(buf, f.body);
}

/// What is wrong with a field of an Avro datum, and where (a path such as
/// `features[2].counters[0].count`).
#[derive(Debug)]
pub struct Problem {
    pub path: String,
    pub fault: Fault,
}

/// The kinds of wrong: the decoders map each to their dead-letter reason.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The bytes are not a datum of the schema (truncated, a bad union index, …).
    #[error("avro: {0}")]
    Avro(String),
    /// A field a type needs is absent.
    #[error("missing required field")]
    Missing,
    /// A JSON payload field (a string of JSON text) does not parse.
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// A value the canonical event cannot hold (a negative count, …).
    #[error("{0}")]
    Invalid(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.fault)
        } else {
            write!(f, "{}: {}", self.path, self.fault)
        }
    }
}

/// Joins a path prefix and a field name: `features[2]` + `key` → `features[2].key`;
/// the decoders' error paths use it too.
pub(crate) fn at(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else if field.is_empty() {
        prefix.to_owned()
    } else if field.starts_with('[') {
        format!("{prefix}{field}")
    } else {
        format!("{prefix}.{field}")
    }
}

/// Reads one `event.avsc` datum (at `prefix`, for error paths) from `r`, leaving what
/// follows it.
pub fn read_event(r: &mut wire::Reader<'_>, prefix: &str) -> Result<Event, Problem> {
    let problem = |field: &str, fault: Fault| Problem {
        path: at(prefix, field),
        fault,
    };
    let avro = |field: &'static str| move |m: String| problem(field, Fault::Avro(m));
    let ty = r.index(TYPES.len()).map_err(avro("type"))?;
    let project = r.opt_str().map_err(avro("project"))?;
    let env = r.opt_str().map_err(avro("env"))?;
    let flag_key = r.opt_str().map_err(avro("flagKey"))?;
    let key = r.opt_str().map_err(avro("key"))?;
    let kind = r.opt_str().map_err(avro("kind"))?;
    let creation_date = r.opt_long().map_err(avro("creationDate"))?;
    let variation = r.long_or_str().map_err(avro("variation"))?;
    let version = r.long_or_str().map_err(avro("version"))?;
    let value = r.opt_str().map_err(avro("value"))?;
    let default = r.opt_str().map_err(avro("default"))?;
    let mut context = match r.index(2).map_err(avro("context"))? {
        0 => None,
        _ => {
            let mut keys = SmallVec::new();
            r.array(
                |r, i| {
                    let mut s = || -> Result<CompactString, Problem> {
                        r.str()
                            .map(CompactString::from)
                            .map_err(|m| problem(&format!("context.keys[{i}]"), Fault::Avro(m)))
                    };
                    let kind = s()?;
                    let key = s()?;
                    keys.push(ContextKey { kind, key });
                    Ok(())
                },
                avro("context.keys"),
            )?;
            let body = r.opt_str().map_err(avro("context.body"))?;
            Some((keys, body))
        }
    };
    let reason = r.opt_str().map_err(avro("reason"))?;
    let in_experiment = r.boolean().map_err(avro("inExperiment"))?;
    let prereq_of = r.opt_str().map_err(avro("prereqOf"))?;
    let track_events = r.opt(wire::Reader::boolean).map_err(avro("trackEvents"))?;
    let debug_until = r.opt_long().map_err(avro("debugEventsUntilDate"))?;
    let sampling_ratio = r.opt_long().map_err(avro("samplingRatio"))?;
    let exclude_from_summaries = r.boolean().map_err(avro("excludeFromSummaries"))?;
    let debug = r.boolean().map_err(avro("debug"))?;
    let meta = r.opt_str().map_err(avro("meta"))?;
    let data = r.opt_str().map_err(avro("data"))?;
    let metric_value = r.opt(wire::Reader::double).map_err(avro("metricValue"))?;
    let start_date = r.opt_long().map_err(avro("startDate"))?;
    let end_date = r.opt_long().map_err(avro("endDate"))?;
    let mut features = Vec::new();
    r.array(
        |r, i| {
            features.push(read_summary_flag(
                r,
                &at(prefix, &format!("features[{i}]")),
            )?);
            Ok(())
        },
        avro("features"),
    )?;
    let body = r.opt_str().map_err(avro("body"))?;

    // The fields of the type, checked.
    let missing = |field: &str| problem(field, Fault::Missing);
    let json = |v: Option<&str>, field: &str| {
        v.map(|text| Json::parse(text).map_err(|e| problem(field, Fault::Syntax(e.to_string()))))
            .transpose()
    };
    let time =
        |v: Option<i64>, field: &str| v.map(EventTime::from_millis).ok_or_else(|| missing(field));
    let unsigned = |v: Option<i64>, field: &str| {
        v.map(|n| {
            u64::try_from(n).map_err(|_| problem(field, Fault::Invalid(format!("{n} is negative"))))
        })
        .transpose()
    };
    let mut contexts = || -> Result<Contexts, Problem> {
        let (keys, body) = context.take().ok_or_else(|| missing("context"))?;
        Ok(Contexts {
            keys,
            body: json(body, "context.body")?,
        })
    };
    let scope = Scope {
        project: project.map(CompactString::from),
        env: env.map(CompactString::from),
    };
    Ok(match ty {
        0 => Event::evaluation(Evaluation {
            scope,
            flag_key: flag_key.ok_or_else(|| missing("flagKey"))?.into(),
            variation: variation_ref(variation, &|r| problem("variation", r))?,
            version: version.map(flag_version),
            value: json(Some(value.ok_or_else(|| missing("value"))?), "value")?
                .unwrap_or_else(Json::null),
            default: json(default, "default")?,
            context: contexts()?,
            creation_date: time(creation_date, "creationDate")?,
            reason: json(reason, "reason")?,
            in_experiment,
            prereq_of: prereq_of.map(CompactString::from),
            track_events,
            debug_events_until_date: debug_until.map(EventTime::from_millis),
            sampling_ratio: unsigned(sampling_ratio, "samplingRatio")?,
            exclude_from_summaries,
            debug,
            counted_by_summary: false,
            meta: json(meta, "meta")?,
        }),
        1 => Event::Custom(Box::new(Custom {
            scope,
            key: key.ok_or_else(|| missing("key"))?.into(),
            context: contexts()?,
            data: json(data, "data")?,
            metric_value,
            creation_date: time(creation_date, "creationDate")?,
            sampling_ratio: unsigned(sampling_ratio, "samplingRatio")?,
        })),
        2 | 3 => {
            let e = ContextEvent {
                scope,
                context: contexts()?,
                creation_date: time(creation_date, "creationDate")?,
                sampling_ratio: unsigned(sampling_ratio, "samplingRatio")?,
            };
            if ty == 2 {
                Event::Identify(Box::new(e))
            } else {
                Event::Index(Box::new(e))
            }
        }
        4 => Event::Summary(Box::new(Summary {
            scope,
            start_date: time(start_date, "startDate")?,
            end_date: time(end_date, "endDate")?,
            features,
        })),
        _ => Event::PassThrough(Box::new(PassThrough {
            scope,
            kind: kind.ok_or_else(|| missing("kind"))?.into(),
            body: json(Some(body.ok_or_else(|| missing("body"))?), "body")?
                .unwrap_or_else(Json::null),
            creation_date: creation_date.map(EventTime::from_millis),
        })),
    })
}

fn flag_version(v: Result<&str, i64>) -> FlagVersion {
    match v {
        Err(n) => FlagVersion::Int(n),
        Ok(s) => FlagVersion::Str(s.into()),
    }
}

fn variation_ref(
    v: Option<Result<&str, i64>>,
    problem: &dyn Fn(Fault) -> Problem,
) -> Result<Option<VariationRef>, Problem> {
    match v {
        None => Ok(None),
        Some(Ok(name)) => Ok(Some(VariationRef::Name(name.into()))),
        Some(Err(n)) => u32::try_from(n)
            .map(|i| Some(VariationRef::Index(i)))
            .map_err(|_| {
                problem(Fault::Invalid(format!(
                    "variation index {n} is outside 0..=4294967295"
                )))
            }),
    }
}

fn read_summary_flag(r: &mut wire::Reader<'_>, path: &str) -> Result<SummaryFlag, Problem> {
    let problem = |field: &str, fault: Fault| Problem {
        path: at(path, field),
        fault,
    };
    let avro = |field: &'static str| move |m: String| problem(field, Fault::Avro(m));
    let key = r.str().map_err(avro("key"))?.into();
    let default = r
        .opt_str()
        .map_err(avro("default"))?
        .map(|t| Json::parse(t).map_err(|e| problem("default", Fault::Syntax(e.to_string()))))
        .transpose()?;
    let mut counters = Vec::new();
    r.array(
        |r, i| {
            let field = |f: &str| format!("counters[{i}].{f}");
            let wrap = |f: &str| {
                let p = field(f);
                move |m: String| problem(&p, Fault::Avro(m))
            };
            let variation = r.long_or_str().map_err(wrap("variation"))?;
            let version = r.long_or_str().map_err(wrap("version"))?;
            let value = r.str().map_err(wrap("value"))?;
            let count = r.long().map_err(wrap("count"))?;
            counters.push(SummaryCounter {
                variation: variation_ref(variation, &|reason| {
                    problem(&field("variation"), reason)
                })?,
                version: version.map(flag_version),
                value: Json::parse(value)
                    .map_err(|e| problem(&field("value"), Fault::Syntax(e.to_string())))?,
                count: u64::try_from(count).map_err(|_| {
                    problem(
                        &field("count"),
                        Fault::Invalid(format!("{count} is negative")),
                    )
                })?,
            });
            Ok(())
        },
        avro("counters"),
    )?;
    let mut context_kinds = Vec::new();
    r.array(
        |r, i| {
            let k = r
                .str()
                .map_err(|m| problem(&format!("contextKinds[{i}]"), Fault::Avro(m)))?;
            context_kinds.push(k.into());
            Ok(())
        },
        avro("contextKinds"),
    )?;
    Ok(SummaryFlag {
        key,
        default,
        counters,
        context_kinds,
    })
}
