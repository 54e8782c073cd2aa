//! The file sink: NDJSON, CSV or Avro object container files in a local directory,
//! partitioned by kind and event time (`kind=…/dt=YYYY-MM-DD/hour=HH/`).
//!
//! One batch writes one file per (directory, topic partition), named from the topic,
//! the partition and the file's first offset: a batch re-read after a crash (its offsets
//! were not committed yet) starts at the same offset and writes the same names again,
//! replacing the first attempt's files instead of adding to them. A file is written
//! under a temporary name, synced, and renamed into place, so readers never see a part.
//! Batches close by count (`batch_size`), size (`batch_bytes`) or age
//! (`batch_timeout`): those are the rolling rules.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use apache_avro::Schema;
use apache_avro::types::{Record, Value as AvroValue};
use serde_json::Value;

use super::destination::{Destination, SinkRecord};
use super::record::{View, context_of};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One JSON event per line, as on the topic.
    Ndjson,
    /// A header and one row per event (one per counter for summaries), RFC 4180
    /// quoting; or a go-feature-flag template per row.
    Csv,
    /// An Avro object container file (`schemas/file-record.avsc`).
    Avro,
    /// Parquet with typed columns (one row per event, one per counter for summaries).
    Parquet,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
            Self::Avro => "avro",
            Self::Parquet => "parquet",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSettings {
    pub dir: PathBuf,
    pub format: FileFormat,
    /// A go-feature-flag CSV template (`{{ .Kind}};{{ .Key}};…`): rows rendered with
    /// it, no header.
    pub csv_template: Option<String>,
    /// The file name: `{{ .Topic}}`, `{{ .Partition}}`, `{{ .Offset}}` (required),
    /// `{{ .Kind}}`, `{{ .Format}}`, `{{ .Hostname}}`, `{{ .Timestamp}}` (the first
    /// event's time, Unix seconds: deterministic, unlike go-feature-flag's flush time).
    pub name_template: String,
    /// `kind=…/dt=…/hour=…/` directories (else all files in `dir`).
    pub partition_by_time: bool,
    /// The compression codec: Avro `null` | `deflate`; Parquet `none` | `snappy` |
    /// `zstd`.
    pub codec: String,
}

/// The keys of a `type = "file"` sink.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// ndjson | csv | avro | parquet.
    #[serde(default = "default_format")]
    pub format: FileFormat,
    /// csv: a go-feature-flag row template instead of the header and columns.
    #[serde(default)]
    pub csv_template: Option<String>,
    /// The file name template; must contain `{{ .Offset}}`.
    #[serde(default = "default_name")]
    pub file_name: String,
    /// `kind=…/dt=…/hour=…/` directories by event time.
    #[serde(default = "yes")]
    pub partition_by_time: bool,
    /// avro `null` | `deflate`; parquet `none` | `snappy` | `zstd` (default: `null`
    /// for avro, `zstd` for parquet).
    #[serde(default)]
    pub codec: String,
}

pub(crate) fn default_format() -> FileFormat {
    FileFormat::Ndjson
}
pub(crate) fn default_name() -> String {
    DEFAULT_NAME.to_owned()
}
pub(crate) fn yes() -> bool {
    true
}

/// How files are written, for the file and the S3 sinks alike (the keys both have).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLayout {
    pub format: FileFormat,
    pub csv_template: Option<String>,
    pub file_name: String,
    pub partition_by_time: bool,
    pub codec: String,
}

impl FileLayout {
    /// The codec, defaulted per format.
    fn codec(&self) -> String {
        match (self.codec.as_str(), self.format) {
            ("", FileFormat::Parquet) => "zstd".to_owned(),
            ("", _) => "null".to_owned(),
            (c, _) => c.to_owned(),
        }
    }

    /// The settings of files written into `dir`.
    pub fn settings(&self, dir: PathBuf) -> FileSettings {
        FileSettings {
            dir,
            format: self.format,
            csv_template: self.csv_template.clone(),
            name_template: self.file_name.clone(),
            partition_by_time: self.partition_by_time,
            codec: self.codec(),
        }
    }

    pub fn check(&self, at: &str, problems: &mut Vec<String>) {
        if !["{{ .Offset}}", "{{ .Offset }}", "{{.Offset}}"]
            .iter()
            .any(|p| self.file_name.contains(p))
        {
            problems.push(format!(
                "{at}.file_name: must contain {{{{ .Offset}}}} (a retried batch then replaces its files instead of adding new ones)"
            ));
        }
        let codecs: &[&str] = match self.format {
            FileFormat::Avro => &["null", "deflate"],
            FileFormat::Parquet => &["none", "snappy", "zstd"],
            _ => &[],
        };
        if !codecs.is_empty() && !codecs.contains(&self.codec().as_str()) {
            problems.push(format!(
                "{at}.codec: {:?}: one of {}",
                self.codec,
                codecs.join(", ")
            ));
        }
    }
}

impl FileConfig {
    pub fn layout(&self) -> FileLayout {
        FileLayout {
            format: self.format,
            csv_template: self.csv_template.clone(),
            file_name: self.file_name.clone(),
            partition_by_time: self.partition_by_time,
            codec: self.codec.clone(),
        }
    }

    pub fn settings(&self) -> FileSettings {
        self.layout()
            .settings(self.path.clone().unwrap_or_default())
    }

    pub fn check(&self, at: &str, problems: &mut Vec<String>) {
        if self.path.is_none() {
            problems.push(format!("{at}.path: a file sink needs a directory"));
        }
        self.layout().check(at, problems);
    }
}

/// The default name: go-feature-flag's, made deterministic.
pub const DEFAULT_NAME: &str =
    "flag-variation-{{ .Topic}}-{{ .Partition}}-{{ .Offset}}.{{ .Format}}";

/// The Avro schema of file records: the event's main fields typed, the event whole as
/// JSON text.
pub const AVRO_SCHEMA: &str = include_str!("../../schemas/file-record.avsc");

const CSV_HEADER: [&str; 14] = [
    "id",
    "kind",
    "creation_date",
    "flag_key",
    "context_kind",
    "context_key",
    "variation",
    "version",
    "value",
    "default",
    "count",
    "start_date",
    "end_date",
    "late",
];

pub struct Files {
    settings: FileSettings,
    schema: Schema,
    hostname: String,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// `(YYYY-MM-DD, HH)` in UTC.
fn date_hour(ms: i64) -> (String, String) {
    let s = humantime::format_rfc3339_seconds(super::paths::bounded_time(ms)).to_string();
    (s[..10].to_owned(), s[11..13].to_owned())
}

/// The context kind and key of an event (the one rule all sinks share,
/// [`super::record::context_of`]); empty for none.
fn context(e: &Value) -> (String, String) {
    context_of(e).map_or_else(Default::default, |c| (c.kind, c.key))
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// One row of the tabular formats (CSV, Parquet): an event, or one counter of a
/// summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Row {
    id: String,
    kind: String,
    creation_date: Option<i64>,
    flag_key: String,
    context_kind: String,
    context_key: String,
    /// The variation index or name, as JSON text (`0`, `"on"`); empty for none.
    variation: String,
    /// The version as JSON text; `unknown` for an unknown flag.
    version: String,
    /// JSON text.
    value: String,
    default: String,
    count: Option<i64>,
    start_date: Option<i64>,
    end_date: Option<i64>,
    late: bool,
}

fn json_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The rows of one event: one per counter for summaries.
fn rows(r: &SinkRecord, e: &Value) -> Vec<Row> {
    let kind = text(e.get("kind"));
    if kind == "summary" {
        let mut rows = Vec::new();
        let features = e.get("features").and_then(Value::as_object);
        for (flag, body) in features.into_iter().flatten() {
            let counters = body.get("counters").and_then(Value::as_array);
            for c in counters.into_iter().flatten() {
                rows.push(Row {
                    id: r.id.clone(),
                    kind: kind.clone(),
                    flag_key: flag.clone(),
                    context_kind: body
                        .get("contextKinds")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .map(|k| text(Some(k)))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default(),
                    variation: json_text(c.get("variation").or_else(|| c.get("variationName"))),
                    version: if c.get("unknown") == Some(&Value::Bool(true)) {
                        "unknown".to_owned()
                    } else {
                        json_text(c.get("version"))
                    },
                    value: json_text(c.get("value")),
                    default: json_text(body.get("default")),
                    count: c.get("count").and_then(Value::as_i64),
                    start_date: e.get("startDate").and_then(Value::as_i64),
                    end_date: e.get("endDate").and_then(Value::as_i64),
                    late: r.late,
                    ..Row::default()
                });
            }
        }
        return rows;
    }
    let (context_kind, context_key) = context(e);
    vec![Row {
        id: r.id.clone(),
        kind,
        creation_date: e.get("creationDate").and_then(Value::as_i64),
        flag_key: text(e.get("key")),
        context_kind,
        context_key,
        variation: json_text(e.get("variation").or_else(|| e.get("variationName"))),
        version: json_text(e.get("version")),
        value: json_text(e.get("value")),
        default: json_text(e.get("default")),
        late: r.late,
        ..Row::default()
    }]
}

impl Row {
    fn csv(&self) -> [String; 14] {
        let n = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
        [
            self.id.clone(),
            self.kind.clone(),
            n(self.creation_date),
            self.flag_key.clone(),
            self.context_kind.clone(),
            self.context_key.clone(),
            self.variation.clone(),
            self.version.clone(),
            self.value.clone(),
            self.default.clone(),
            n(self.count),
            n(self.start_date),
            n(self.end_date),
            self.late.to_string(),
        ]
    }
}

/// A go-feature-flag template row. `{{ .CreationDate}}` is in seconds, as there.
fn template_row(template: &str, e: &Value) -> String {
    let (ckind, ckey) = context(e);
    let fields = [
        ("Kind", text(e.get("kind"))),
        ("ContextKind", ckind),
        ("UserKey", ckey),
        (
            "CreationDate",
            e.get("creationDate")
                .and_then(Value::as_i64)
                .map_or(String::new(), |ms| (ms / 1000).to_string()),
        ),
        ("Key", text(e.get("key"))),
        (
            "Variation",
            text(e.get("variationName").or_else(|| e.get("variation"))),
        ),
        ("Value", text(e.get("value"))),
        ("Default", text(e.get("default"))),
        ("Version", text(e.get("version"))),
        ("Source", "SERVER".to_owned()),
    ];
    let mut out = render(template, &fields);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Replaces `{{ .Name}}` / `{{ .Name }}` / `{{.Name}}` with the field's value.
pub fn render(template: &str, fields: &[(&str, String)]) -> String {
    let mut out = template.replace("\\n", "\n");
    for (name, value) in fields {
        for pattern in [
            format!("{{{{ .{name}}}}}"),
            format!("{{{{ .{name} }}}}"),
            format!("{{{{.{name}}}}}"),
        ] {
            out = out.replace(&pattern, value);
        }
    }
    out
}

/// The records of one file.
struct Group<'a> {
    kind: String,
    first_time: i64,
    records: Vec<(&'a SinkRecord, Value)>,
}

impl Files {
    pub fn new(settings: FileSettings) -> anyhow::Result<Self> {
        let schema = Schema::parse_str(AVRO_SCHEMA).context("the file-record Avro schema")?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "localhost".to_owned());
        Ok(Self {
            settings,
            schema,
            hostname,
        })
    }

    fn name(&self, topic: &str, partition: i32, first: i64, g: &Group<'_>) -> String {
        render(
            &self.settings.name_template,
            &[
                ("Topic", topic.to_owned()),
                ("Partition", partition.to_string()),
                ("Offset", format!("{first:020}")),
                ("Kind", g.kind.clone()),
                ("Format", self.settings.format.extension().to_owned()),
                ("Hostname", self.hostname.clone()),
                ("Timestamp", (g.first_time / 1000).to_string()),
            ],
        )
    }

    fn content(&self, records: &[(&SinkRecord, Value)]) -> anyhow::Result<Vec<u8>> {
        match self.settings.format {
            FileFormat::Ndjson => {
                let mut out = Vec::new();
                for (r, _) in records {
                    out.extend_from_slice(&r.value);
                    out.push(b'\n');
                }
                Ok(out)
            }
            FileFormat::Csv => {
                if let Some(t) = &self.settings.csv_template {
                    return Ok(records
                        .iter()
                        .map(|(_, e)| template_row(t, e))
                        .collect::<String>()
                        .into_bytes());
                }
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record(CSV_HEADER)?;
                for (r, e) in records {
                    for row in rows(r, e) {
                        w.write_record(row.csv())?;
                    }
                }
                w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
            }
            FileFormat::Parquet => parquet_file(records, &self.settings.codec),
            FileFormat::Avro => {
                let codec = if self.settings.codec == "deflate" {
                    apache_avro::Codec::Deflate(apache_avro::DeflateSettings::default())
                } else {
                    apache_avro::Codec::Null
                };
                let mut w = apache_avro::Writer::with_codec(&self.schema, Vec::new(), codec)?;
                for (r, e) in records {
                    let mut rec =
                        Record::new(w.schema()).context("the file-record schema is a record")?;
                    let (_, ckey) = context(e);
                    let opt = |s: String| {
                        if s.is_empty() {
                            AvroValue::Union(0, Box::new(AvroValue::Null))
                        } else {
                            AvroValue::Union(1, Box::new(AvroValue::String(s)))
                        }
                    };
                    rec.put("id", r.id.clone());
                    rec.put("kind", text(e.get("kind")));
                    rec.put(
                        "creation_date",
                        match e.get("creationDate").and_then(Value::as_i64) {
                            Some(ms) => AvroValue::Union(1, Box::new(AvroValue::Long(ms))),
                            None => AvroValue::Union(0, Box::new(AvroValue::Null)),
                        },
                    );
                    rec.put("flag_key", opt(text(e.get("key"))));
                    rec.put("context_key", opt(ckey));
                    rec.put("topic", r.topic.clone());
                    rec.put("partition", r.partition);
                    rec.put("offset", r.offset);
                    rec.put("event", String::from_utf8_lossy(&r.value).into_owned());
                    w.append_value(rec)?;
                }
                Ok(w.into_inner()?)
            }
        }
    }
}

/// A Parquet file of the rows of `records`, with typed columns: timestamps in ms (UTC),
/// counts as integers, JSON values as text.
fn parquet_file(records: &[(&SinkRecord, Value)], codec: &str) -> anyhow::Result<Vec<u8>> {
    use std::sync::Arc;

    use arrow_array::builder::{
        BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
    };
    use arrow_array::{ArrayRef, RecordBatch};
    use arrow_schema::{DataType, Field, Schema as ArrowSchema, TimeUnit};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let schema = Arc::new(ArrowSchema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("creation_date", ts(), true),
        Field::new("flag_key", DataType::Utf8, true),
        Field::new("context_kind", DataType::Utf8, true),
        Field::new("context_key", DataType::Utf8, true),
        Field::new("variation", DataType::Utf8, true),
        Field::new("version", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("default", DataType::Utf8, true),
        Field::new("count", DataType::Int64, true),
        Field::new("start_date", ts(), true),
        Field::new("end_date", ts(), true),
        Field::new("late", DataType::Boolean, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ]));
    let mut strings: Vec<StringBuilder> = (0..10).map(|_| StringBuilder::new()).collect();
    let mut times: Vec<TimestampMillisecondBuilder> = (0..3)
        .map(|_| TimestampMillisecondBuilder::new().with_timezone("UTC"))
        .collect();
    let mut count = Int64Builder::new();
    let mut late = BooleanBuilder::new();
    let mut partition = Int32Builder::new();
    let mut offset = Int64Builder::new();
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    for (r, e) in records {
        for row in rows(r, e) {
            let texts = [
                Some(row.id.clone()),
                Some(row.kind.clone()),
                opt(&row.flag_key),
                opt(&row.context_kind),
                opt(&row.context_key),
                opt(&row.variation),
                opt(&row.version),
                opt(&row.value),
                opt(&row.default),
                Some(r.topic.clone()),
            ];
            for (b, v) in strings.iter_mut().zip(texts) {
                b.append_option(v);
            }
            for (b, v) in times
                .iter_mut()
                .zip([row.creation_date, row.start_date, row.end_date])
            {
                b.append_option(v);
            }
            count.append_option(row.count);
            late.append_value(row.late);
            partition.append_value(r.partition);
            offset.append_value(r.offset);
        }
    }
    let mut s: Vec<ArrayRef> = strings
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let mut t: Vec<ArrayRef> = times
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let topic = s.pop().context("the topic column")?;
    let columns: Vec<ArrayRef> = vec![
        s.remove(0),
        s.remove(0),
        t.remove(0),
        s.remove(0),
        s.remove(0),
        s.remove(0),
        s.remove(0),
        s.remove(0),
        s.remove(0),
        s.remove(0),
        Arc::new(count.finish()),
        t.remove(0),
        t.remove(0),
        Arc::new(late.finish()),
        topic,
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    let compression = match codec {
        "snappy" => Compression::SNAPPY,
        "zstd" => Compression::ZSTD(ZstdLevel::default()),
        _ => Compression::UNCOMPRESSED,
    };
    let props = WriterProperties::builder()
        .set_compression(compression)
        .build();
    let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(props))?;
    w.write(&batch)?;
    Ok(w.into_inner()?)
}

/// Writes `bytes` to `path` atomically: a temporary name, synced, then renamed. A
/// failed write (a full disk, a file size limit) removes its temporary file.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("a file name")?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = File::create(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))
        .and_then(|mut f| {
            f.write_all(bytes)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Destination for Files {
    fn connect(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.settings.dir)
            .with_context(|| format!("creating {}", self.settings.dir.display()))?;
        // Writable?
        let probe = self.settings.dir.join(".flagtally-probe");
        std::fs::write(&probe, b"")
            .with_context(|| format!("writing in {}", self.settings.dir.display()))?;
        let _ = std::fs::remove_file(probe);
        Ok(())
    }

    fn write(
        &mut self,
        batch: &[SinkRecord],
        _positions: &BTreeMap<(String, i32), i64>,
    ) -> anyhow::Result<()> {
        for (path, bytes) in self.render(batch)? {
            write_atomically(&self.settings.dir.join(path), &bytes)?;
        }
        Ok(())
    }
}

impl Files {
    /// The files of one batch: (path relative to the sink's root, content). One per
    /// directory and topic partition, named from its first offset.
    pub fn render(&self, batch: &[SinkRecord]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        // (topic, partition) → directory → the file's records, in offset order.
        let mut files: BTreeMap<(String, i32), BTreeMap<String, Group<'_>>> = BTreeMap::new();
        for r in batch {
            let view = View::of(r)?;
            let time = view.time(r);
            let e = view.event;
            // Data names a directory and a file here: never a path outside the sink's.
            let kind = super::paths::path_component(&if r.kind.is_empty() {
                text(e.get("kind"))
            } else {
                r.kind.clone()
            });
            let dir = if self.settings.partition_by_time {
                let (date, hour) = date_hour(time);
                format!("kind={kind}/dt={date}/hour={hour}/")
            } else {
                String::new()
            };
            files
                .entry((r.topic.clone(), r.partition))
                .or_default()
                .entry(dir)
                .or_insert_with(|| Group {
                    kind,
                    first_time: time,
                    records: Vec::new(),
                })
                .records
                .push((r, e));
        }
        let mut out = Vec::new();
        for ((topic, partition), groups) in &files {
            for (dir, g) in groups {
                let first = g.records.first().map_or(0, |(r, _)| r.offset);
                let name = self.name(topic, *partition, first, g);
                out.push((format!("{dir}{name}"), self.content(&g.records)?));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: i64, kind: &str, value: &str) -> SinkRecord {
        SinkRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            kind: kind.into(),
            id: format!("id-{offset}"),
            value: value.as_bytes().to_vec(),
            window_start: None,
            window_end: None,
            late: false,
            source: None,
        }
    }

    #[test]
    fn names_and_templates() {
        let fields = [("Kind", "feature".to_owned()), ("Key", "f".to_owned())];
        assert_eq!(
            render("{{ .Kind}};{{ .Key }};{{.Kind}}\\n", &fields),
            "feature;f;feature\n"
        );
        assert_eq!(
            date_hour(1_767_225_600_000 + 3_600_000 * 5),
            ("2026-01-01".into(), "05".into())
        );
    }

    #[test]
    fn rows_name_the_context_by_the_shared_rule() {
        // A multi-kind context: its user member, as every sink names it
        // (sink::record); a custom event's contextKeys: the same.
        let feature = rec(
            1,
            "feature",
            r#"{"kind":"feature","creationDate":1,"key":"f","context":{"kind":"multi","org":{"key":"o"},"user":{"key":"u"}},"value":true}"#,
        );
        let e = View::of(&feature).unwrap().event;
        let row = &rows(&feature, &e)[0];
        assert_eq!(
            (row.context_kind.as_str(), row.context_key.as_str()),
            ("user", "u")
        );
        let custom = rec(
            2,
            "custom",
            r#"{"kind":"custom","creationDate":1,"key":"buy","contextKeys":{"org":"o","device":"d"}}"#,
        );
        let e = View::of(&custom).unwrap().event;
        let row = &rows(&custom, &e)[0];
        assert_eq!(
            (row.context_kind.as_str(), row.context_key.as_str()),
            ("device", "d")
        );
    }

    #[test]
    fn csv_quotes_and_expands_summaries() {
        let s = rec(
            1,
            "summary",
            r#"{"kind":"summary","startDate":1,"endDate":2,"features":{"f":{"default":"a,b","contextKinds":["user"],"counters":[{"variation":0,"version":3,"value":"x\"y","count":4},{"unknown":true,"value":null,"count":1}]}}}"#,
        );
        let e = View::of(&s).unwrap().event;
        let rows = rows(&s, &e);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].version, "unknown");
        let files = Files::new(FileSettings {
            dir: PathBuf::from("/nonexistent"),
            format: FileFormat::Csv,
            csv_template: None,
            name_template: DEFAULT_NAME.into(),
            partition_by_time: true,
            codec: "null".into(),
        })
        .unwrap();
        let text = String::from_utf8(files.content(&[(&s, e)]).unwrap()).unwrap();
        assert!(text.starts_with("id,kind,creation_date,"), "{text}");
        assert!(text.contains(r#","""x\""y""","""a,b""",4,"#), "{text}");
    }

    #[test]
    fn a_retried_batch_replaces_its_files() {
        let dir = std::env::temp_dir().join(format!("flagtally-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut files = Files::new(FileSettings {
            dir: dir.clone(),
            format: FileFormat::Ndjson,
            csv_template: None,
            name_template: DEFAULT_NAME.into(),
            partition_by_time: true,
            codec: "null".into(),
        })
        .unwrap();
        files.connect().unwrap();
        let f = |o: i64| {
            rec(
                o,
                "feature",
                &format!(
                    r#"{{"kind":"feature","creationDate":{},"key":"f"}}"#,
                    1_767_225_600_000 + o
                ),
            )
        };
        let none = BTreeMap::new();
        files.write(&[f(10), f(11), f(12)], &none).unwrap();
        // The same batch start, fewer records (a crash before the commit): same name.
        files.write(&[f(10), f(11)], &none).unwrap();
        files.write(&[f(12), f(13)], &none).unwrap();
        let hour = dir.join("kind=feature/dt=2026-01-01/hour=00");
        let mut names: Vec<String> = std::fs::read_dir(&hour)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "flag-variation-t-0-00000000000000000010.ndjson",
                "flag-variation-t-0-00000000000000000012.ndjson"
            ]
        );
        let lines: usize = names
            .iter()
            .map(|n| {
                std::fs::read_to_string(hour.join(n))
                    .unwrap()
                    .lines()
                    .count()
            })
            .sum();
        assert_eq!(lines, 4);
    }
}
