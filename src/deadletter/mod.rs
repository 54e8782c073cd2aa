//! Dead letters, for the pipeline and the sinks alike: the headers that say what went
//! wrong and where ([`header`]), the headers of a record refused downstream
//! ([`Refusal`]), and making each one fit what the dead-letter topic accepts, error
//! classes and header forwarding included ([`fit`]).

pub mod fit;

/// A record refused for good after flagtally wrote it — an output the broker refused
/// (too large, invalid, not authorized), or an output record a sink's destination
/// refused (HTTP 4xx, a constraint) — as the headers of its dead letter.
#[derive(Clone, Debug)]
pub struct Refusal<'a> {
    /// The refused record's id (`flagtally-id`); the dead letter's id derives from it,
    /// so a replay sets the same record aside under the same id.
    pub id: &'a str,
    /// Why (capped to [`fit::MAX_ERROR_BYTES`]).
    pub error: &'a str,
    /// The reason code: `refused` (the broker), `sink_rejected` (a destination).
    pub reason: &'static str,
    /// The sink whose destination refused it, if one did.
    pub sink: Option<&'a str>,
    /// The refused record's kind (`flagtally-kind`).
    pub kind: &'a str,
    /// Where the refused record was written (or read from, for a sink).
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
}

impl Refusal<'_> {
    /// The dead letter's headers, in a fixed order.
    pub fn headers(&self) -> Vec<(&'static str, Vec<u8>)> {
        let id = crate::emit::refused_id(self.id).hyphenated().to_string();
        let mut out: Vec<(&'static str, Vec<u8>)> = vec![
            (crate::emit::header::ID, id.into_bytes()),
            (crate::emit::header::KIND, b"dead-letter".to_vec()),
            (
                header::ERROR,
                fit::cap(self.error, fit::MAX_ERROR_BYTES)
                    .as_bytes()
                    .to_vec(),
            ),
            (header::REASON, self.reason.as_bytes().to_vec()),
        ];
        if let Some(sink) = self.sink {
            out.push((header::SINK, sink.as_bytes().to_vec()));
        }
        out.push((header::REFUSED_KIND, self.kind.as_bytes().to_vec()));
        out.push((header::SOURCE_TOPIC, self.topic.as_bytes().to_vec()));
        if let Some(p) = self.partition {
            out.push((header::SOURCE_PARTITION, p.to_string().into_bytes()));
        }
        if let Some(o) = self.offset {
            out.push((header::SOURCE_OFFSET, o.to_string().into_bytes()));
        }
        out
    }
}

/// Headers added to dead letters and late events.
pub mod header {
    /// The full error text (dialect, JSON path, reason), errors joined by `; `.
    pub const ERROR: &str = "flagtally-error";
    /// The machine-readable reason of the first error (`invalid-json`, `late`, …).
    pub const REASON: &str = "flagtally-error-reason";
    pub const DIALECT: &str = "flagtally-error-dialect";
    /// The JSON path of the first error; empty for the whole record.
    pub const PATH: &str = "flagtally-error-path";
    /// How many parts of the record failed (a batch record can fail in places).
    pub const COUNT: &str = "flagtally-error-count";
    pub const SOURCE_TOPIC: &str = "flagtally-source-topic";
    pub const SOURCE_PARTITION: &str = "flagtally-source-partition";
    pub const SOURCE_OFFSET: &str = "flagtally-source-offset";
    /// For an unreadable record batch: the last offset it holds (the first is
    /// `flagtally-source-offset`).
    pub const SOURCE_OFFSET_LAST: &str = "flagtally-source-offset-last";
    /// For a late event: its index within the record.
    pub const EVENT_INDEX: &str = "flagtally-event-index";
    /// Present when the payload was cut to fit: the original payload's length.
    pub const TRUNCATED: &str = "flagtally-truncated";
    /// For an output the broker refused: the kind it had.
    pub const REFUSED_KIND: &str = "flagtally-refused-kind";
    /// For a record a warehouse sink's destination refused: the sink's name.
    pub const SINK: &str = "flagtally-sink";
    /// Present when input headers were left out to fit: how many.
    pub const HEADERS_DROPPED: &str = "flagtally-headers-dropped";
}
