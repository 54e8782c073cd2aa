//! Avro, as flagtally reads and writes it: the framing (Avro single-object encoding,
//! and the Confluent wire format on input), the direct codec for the fixed schemas in
//! `schemas/` ([`wire`]), the canonical event's codec ([`event`]) and the output
//! schemas ([`schemas`]).
//!
//! Used by `decode::native` (native Avro input) and `emit::avro` (Avro output). Records
//! are read and written field by field in schema order, about ten times faster than
//! apache-avro's generic values; apache-avro parses the schemas, computes their
//! fingerprints, and is the tests' oracle for every byte.

pub mod event;
pub mod schemas;
pub mod wire;

use std::io::Read;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;

use crate::event::Event;

/// The text of `schemas/event.avsc`.
pub const EVENT_SCHEMA: &str = include_str!("../../schemas/event.avsc");

/// The first byte of the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0x00;
/// The first two bytes of Avro single-object encoding (v1).
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// A parsed schema and its single-object header.
#[derive(Debug)]
pub struct Parsed {
    pub schema: Schema,
    /// `0xC3 0x01` + the 8-byte little-endian Rabin fingerprint.
    pub header: [u8; 10],
}

impl Parsed {
    /// Parses `text` (an embedded schema; a test proves each one parses).
    pub fn new(name: &str, text: &str) -> Result<Self, String> {
        let schema = Schema::parse_str(text).map_err(|e| format!("{name}: {e}"))?;
        let fingerprint = schema.fingerprint::<Rabin>();
        let mut header = [0u8; 10];
        header[..2].copy_from_slice(&SINGLE_OBJECT_MAGIC);
        if fingerprint.bytes.len() != 8 {
            return Err(format!("{name}: Rabin fingerprint is not 8 bytes"));
        }
        header[2..].copy_from_slice(&fingerprint.bytes);
        Ok(Self { schema, header })
    }

    pub fn fingerprint(&self) -> &[u8] {
        &self.header[2..]
    }

    /// Writes `value` as single-object encoding with apache-avro (the tests' oracle).
    #[cfg(test)]
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&self.header);
        apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|w| w.write_value_ref(&mut buf, value))
            .map_err(|e| e.to_string())?;
        Ok(buf)
    }

    /// Reads one datum that must fill `datum` exactly.
    pub fn read_datum(&self, datum: &[u8]) -> Result<Value, String> {
        let mut reader = Exact {
            rest: datum,
            hit_end: false,
        };
        let value = GenericDatumReader::builder(&self.schema)
            .build()
            .and_then(|r| r.read_value(&mut reader))
            .map_err(|e| {
                if reader.hit_end {
                    format!("the datum is truncated ({} bytes): {e}", datum.len())
                } else {
                    e.to_string()
                }
            })?;
        if reader.hit_end {
            return Err(format!("the datum is truncated ({} bytes)", datum.len()));
        }
        if !reader.rest.is_empty() {
            return Err(format!(
                "{} unread bytes after the datum",
                reader.rest.len()
            ));
        }
        Ok(value)
    }
}

/// A byte-slice reader that refuses, and remembers, any read past its end.
///
/// apache-avro reads only with `read_exact`, so a short read is always a truncated
/// datum. Failing with `InvalidData` (not `UnexpectedEof`, which apache-avro turns
/// into a null for strings, booleans and unions) stops decoding at the first one.
struct Exact<'a> {
    rest: &'a [u8],
    hit_end: bool,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rest.len() < buf.len() {
            self.hit_end = true;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "read past the end of the datum",
            ));
        }
        self.rest.read(buf)
    }
}

/// Lower-case hex of a fingerprint, in wire order.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

static EVENT: LazyLock<Result<Parsed, String>> =
    LazyLock::new(|| Parsed::new("event.avsc", EVENT_SCHEMA));

pub fn event_schema() -> Result<&'static Parsed, String> {
    EVENT.as_ref().map_err(Clone::clone)
}

/// Encodes `event` as native Avro: single-object encoding with `schemas/event.avsc`.
///
/// Counts and sampling ratios above `i64::MAX` are written as `i64::MAX` (Avro has no
/// unsigned long). Empty only if `event.avsc` does not parse, which a test rules out.
pub fn encode_event(event: &Event) -> Vec<u8> {
    let Ok(native) = event_schema() else {
        return Vec::new();
    };
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&native.header);
    event::write_event(event, &mut buf);
    buf
}

/// Reads a datum written with `writer` and resolves it to `reader` (Avro schema
/// resolution: fields matched by name, defaults for the missing, promotions), then
/// writes it with `reader`: the bytes the direct codec reads. The datum must be read
/// whole.
pub fn resolve_datum(writer: &Schema, reader: &Parsed, datum: &[u8]) -> Result<Vec<u8>, String> {
    let mut input = Exact {
        rest: datum,
        hit_end: false,
    };
    let value = GenericDatumReader::builder(writer)
        .reader_schema(&reader.schema)
        .build()
        .and_then(|r| r.read_value(&mut input))
        .map_err(|e| {
            if input.hit_end {
                format!("the datum is truncated ({} bytes): {e}", datum.len())
            } else {
                format!("the writer schema does not resolve to event.avsc: {e}")
            }
        })?;
    if !input.rest.is_empty() {
        return Err(format!("{} unread bytes after the datum", input.rest.len()));
    }
    let mut out = Vec::with_capacity(datum.len() + 16);
    apache_avro::writer::datum::GenericDatumWriter::builder(&reader.schema)
        .build()
        .and_then(|w| w.write_value_ref(&mut out, &value))
        .map_err(|e| format!("the resolved datum does not fit event.avsc: {e}"))?;
    Ok(out)
}
