//! Offline mode (`flagtally summarize`): the daemon's decode → window → emit stages over
//! files instead of topics.
//!
//! Each line of an input is one record (as a Kafka record value would be; binary
//! `native-avro` records are written base64-encoded, one per line); its position
//! is (file name, partition 0, line number), so ids are as deterministic as the daemon's.
//! Every output record value goes to `out` as one NDJSON line; dead letters and late
//! events (under the `dead-letter` policy) go to `diag` as JSON lines, followed by one
//! count line. All windows close at the end of input.

use std::io::{self, BufRead, Write};

use serde_json::json;

use base64::Engine as _;

use crate::decode::counting::{self, CountFrom};
use crate::decode::{DecodeError, Decoded, Decoder, Dialect, Reason};
use crate::emit::{Emitter, OutputKind, Record};
use crate::window::{Engine, Output, PartitionId, SourcePos};

/// What a run saw and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub records: u64,
    pub events: u64,
    pub dead_letters: u64,
    /// Records written, per output kind (indexed like [`OutputKind::ALL`]).
    pub written: [u64; OutputKind::ALL.len()],
}

impl Report {
    pub fn written(&self, kind: OutputKind) -> u64 {
        self.written[kind as usize]
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flagtally summarize: {} records, {} events, {} dead letters",
            self.records, self.events, self.dead_letters
        )?;
        for kind in OutputKind::ALL {
            write!(f, ", {} {}", self.written(kind), kind.name())?;
        }
        Ok(())
    }
}

/// Runs the stages over `inputs` (name, reader) in order, counting evaluations as
/// `count_from` says ([`crate::decode::counting`]).
pub fn summarize<R: BufRead>(
    inputs: Vec<(String, R)>,
    decoder: &Decoder,
    count_from: CountFrom,
    engine: &mut Engine,
    emitter: &Emitter,
    out: &mut dyn Write,
    diag: &mut dyn Write,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut decoded = Decoded::default();
    let mut outputs = Vec::new();
    let mut line = Vec::new();
    for (name, mut reader) in inputs {
        let partition = PartitionId::new(name.as_str(), 0);
        let mut offset: i64 = -1;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            offset += 1;
            let record = trim(&line);
            if record.is_empty() {
                continue;
            }
            report.records += 1;
            decoded.clear();
            if decoder.dialect() == Dialect::NativeAvro {
                match base64::engine::general_purpose::STANDARD.decode(record) {
                    Ok(bytes) => decoder.decode(&bytes, &mut decoded),
                    Err(e) => decoded.errors.push(DecodeError::new(
                        Dialect::NativeAvro,
                        "",
                        Reason::Invalid(format!("not a base64 line: {e}")),
                    )),
                }
            } else {
                decoder.decode(record, &mut decoded);
            }
            for err in decoded.errors.drain(..) {
                report.dead_letters += 1;
                let line = json!({
                    "deadLetter": {
                        "source": format!("{name}:{}", offset + 1),
                        "dialect": err.dialect.name(),
                        "path": err.path,
                        "reason": err.reason.code(),
                        "detail": err.to_string(),
                        "value": String::from_utf8_lossy(record),
                    }
                });
                writeln!(diag, "{line}")?;
            }
            counting::apply(count_from, &mut decoded.events);
            for (index, event) in decoded.events.drain(..).enumerate() {
                report.events += 1;
                let pos = SourcePos {
                    partition: partition.clone(),
                    offset,
                    index: index as u32,
                };
                engine.push(&pos, event, 0, &mut outputs);
            }
            write_outputs(&mut outputs, emitter, &mut report, out, diag)?;
        }
    }
    engine.flush_all(&mut outputs);
    write_outputs(&mut outputs, emitter, &mut report, out, diag)?;
    out.flush()?;
    writeln!(diag, "{report}")?;
    Ok(report)
}

fn write_outputs(
    outputs: &mut Vec<Output>,
    emitter: &Emitter,
    report: &mut Report,
    out: &mut dyn Write,
    diag: &mut dyn Write,
) -> anyhow::Result<()> {
    for o in outputs.drain(..) {
        let Record { kind, value, .. } = emitter.emit(&o)?;
        report.written[kind as usize] += 1;
        let sink: &mut dyn Write = if kind == OutputKind::Late { diag } else { out };
        sink.write_all(&value)?;
        sink.write_all(b"\n")?;
    }
    Ok(())
}

fn trim(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &line[start..end]
}

/// Opens the named files (`-` is stdin; none means stdin).
pub fn open_inputs(files: &[String]) -> io::Result<Vec<(String, Box<dyn BufRead>)>> {
    if files.is_empty() {
        return Ok(vec![("stdin".into(), Box::new(io::stdin().lock()))]);
    }
    files
        .iter()
        .map(|f| -> io::Result<(String, Box<dyn BufRead>)> {
            if f == "-" {
                Ok(("stdin".into(), Box::new(io::stdin().lock())))
            } else {
                let file = std::fs::File::open(f)
                    .map_err(|e| io::Error::new(e.kind(), format!("{f}: {e}")))?;
                Ok((
                    f.clone(),
                    Box::new(io::BufReader::with_capacity(1 << 20, file)),
                ))
            }
        })
        .collect()
}
