//! Fuzzes past the decoders: any bytes → decode (auto) → window engine → emit → every
//! warehouse sink's formatting: NDJSON, CSV (header and template), Avro and Parquet
//! files, webhook and Segment bodies. Whatever flagtally emitted, no sink may panic, and
//! a sink that refuses a record must say so as an error.
#![no_main]

use std::sync::OnceLock;

use flagtally::sink::file::{FileFormat, FileSettings, Files};
use flagtally::sink::http::{Http, HttpFormat, HttpSettings};
use flagtally::sink::destination::SinkRecord;
use libfuzzer_sys::fuzz_target;

fn files() -> &'static Vec<Files> {
    static F: OnceLock<Vec<Files>> = OnceLock::new();
    F.get_or_init(|| {
        let settings = |format, codec: &str, csv_template: Option<&str>| FileSettings {
            dir: std::env::temp_dir().join("flagtally-fuzz-never-written"),
            format,
            csv_template: csv_template.map(str::to_owned),
            name_template: flagtally::sink::file::DEFAULT_NAME.to_owned(),
            partition_by_time: true,
            codec: codec.to_owned(),
        };
        [
            settings(FileFormat::Ndjson, "", None),
            settings(FileFormat::Csv, "", None),
            settings(
                FileFormat::Csv,
                "",
                Some("{{ .Kind}};{{ .ContextKind}};{{ .UserKey}};{{ .CreationDate}};{{ .Key}};{{ .Variation}};{{ .Value}};{{ .Default}};{{ .Source}}\n"),
            ),
            settings(FileFormat::Avro, "deflate", None),
            settings(FileFormat::Parquet, "zstd", None),
        ]
        .into_iter()
        .map(|s| Files::new(s).expect("file sink settings"))
        .collect()
    })
}

fn http() -> &'static Vec<Http> {
    static H: OnceLock<Vec<Http>> = OnceLock::new();
    H.get_or_init(|| {
        [HttpFormat::Webhook, HttpFormat::Segment]
            .into_iter()
            .map(|format| {
                Http::new(HttpSettings {
                    format,
                    url: "http://127.0.0.1:9/never-sent".to_owned(),
                    headers: Default::default(),
                    secret: Some(flagtally::kafka::security::Secret::new("s")),
                    meta: Default::default(),
                    write_key: Some(flagtally::kafka::security::Secret::new("k")),
                    max_events: 100,
                    rate_limit: None,
                    timeout: std::time::Duration::from_secs(1),
                })
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let records = flagtally_fuzz_common::outputs(flagtally::decode::Dialect::Auto, data);
    if records.is_empty() {
        return;
    }
    let header = |r: &flagtally::emit::Record, name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let batch: Vec<SinkRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| SinkRecord {
            topic: "out".to_owned(),
            partition: 0,
            offset: i as i64,
            kind: r.kind.name().to_owned(),
            id: r.id.hyphenated().to_string(),
            value: r.value.clone(),
            window_start: header(r, "flagtally-window-start").and_then(|v| v.parse().ok()),
            window_end: header(r, "flagtally-window-end").and_then(|v| v.parse().ok()),
            late: header(r, "flagtally-late").is_some(),
            source: header(r, "flagtally-source"),
        })
        .collect();
    for f in files() {
        // An error is a refusal the worker sets aside; a panic is a bug.
        if let Ok(out) = f.render(&batch) {
            for (path, _) in out {
                assert!(
                    !path.split('/').any(|c| c == ".." || c == "."),
                    "path outside the sink: {path}"
                );
            }
        }
    }
    for h in http() {
        let _ = h.body(&batch);
    }
});

#[path = "../common.rs"]
mod flagtally_fuzz_common;
