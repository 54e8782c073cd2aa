//! Dead letters, for the pipeline and the sinks alike: the headers that say what went
//! wrong and where ([`header`]), and making each one fit what the dead-letter topic
//! accepts, error classes and header forwarding included ([`fit`]).

pub mod fit;

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
