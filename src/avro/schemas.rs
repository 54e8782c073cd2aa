//! The output schemas in `schemas/`, embedded and parsed once per process: one per
//! [`Record`] (feature and debug events share `feature.avsc`).

use std::sync::LazyLock;

use super::Parsed;

/// The output record types, one per schema file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// `summary.avsc`: one flag of a summary event per record.
    Summary,
    /// `feature.avsc`: feature and debug events (`kind` says which).
    Feature,
    Index,
    Identify,
    Custom,
    /// `passthrough.avsc`: `{kind, creationDate?, body}`.
    PassThrough,
    /// `late.avsc`: the canonical `event.avsc` record plus its window's bounds.
    Late,
}

/// Each record type's file name and text, in [`Record`] order.
const FILES: [(&str, &str); 7] = [
    ("summary.avsc", include_str!("../../schemas/summary.avsc")),
    ("feature.avsc", include_str!("../../schemas/feature.avsc")),
    ("index.avsc", include_str!("../../schemas/index.avsc")),
    ("identify.avsc", include_str!("../../schemas/identify.avsc")),
    ("custom.avsc", include_str!("../../schemas/custom.avsc")),
    (
        "passthrough.avsc",
        include_str!("../../schemas/passthrough.avsc"),
    ),
    ("late.avsc", include_str!("../../schemas/late.avsc")),
];

static PARSED: LazyLock<Result<Vec<Parsed>, String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, text)| Parsed::new(name, text))
        .collect()
});

impl Record {
    fn slot(self) -> usize {
        self as usize
    }

    /// The schema's file name in `schemas/`.
    pub fn file(self) -> &'static str {
        FILES[self.slot()].0
    }

    /// The schema's `.avsc` text (an Avro container file's header, a registry).
    pub fn text(self) -> &'static str {
        FILES[self.slot()].1
    }

    /// The parsed schema and its single-object header. An error only if an embedded
    /// schema does not parse, which a test rules out.
    pub fn parsed(self) -> Result<&'static Parsed, &'static str> {
        match PARSED.as_ref() {
            Ok(all) => all.get(self.slot()).ok_or("no schema"),
            Err(e) => Err(e.as_str()),
        }
    }
}
