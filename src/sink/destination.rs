//! What a warehouse sink's destination is to the worker that feeds it: the records it
//! is given ([`SinkRecord`]), the trait it implements ([`Destination`]), and how its
//! errors are told apart (transient: retried; permanent: set aside).

use std::collections::BTreeMap;

/// One output record, as destinations see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `flagtally-kind`: summary, feature, debug, index, identify, custom, …
    pub kind: String,
    /// `flagtally-id`: deterministic, the same for a record written twice.
    pub id: String,
    pub value: Vec<u8>,
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    pub late: bool,
    pub source: Option<String>,
}

/// A destination's refusal that no retry can change (HTTP 4xx, a value it cannot
/// take). Destinations return it (inside `anyhow::Error`) for such answers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Whether a write error is permanent: a [`Rejected`], a PostgreSQL data exception
/// (SQLSTATE class 22) or integrity violation (23), or a record that is not valid JSON
/// (serde_json) or that Avro or Parquet cannot encode. Everything else (I/O,
/// connections, timeouts, serialization failures 40001, 5xx) is transient.
pub fn is_permanent(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Rejected>()
            || c.is::<serde_json::Error>()
            || c.is::<apache_avro::Error>()
            || c.is::<parquet::errors::ParquetError>()
            || c.is::<arrow_schema::ArrowError>()
            || c.downcast_ref::<postgres::Error>()
                .and_then(postgres::Error::code)
                .is_some_and(|code| {
                    let class = &code.code()[..2];
                    class == "22" || class == "23"
                })
    })
}

/// `url` as it may be shown (logs, `/readyz`, dead letters, errors): without its
/// user information, its query, and any path segment that looks like a key (20 or
/// more letters, digits, `-` or `_`, with a digit among them), each replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let (rest, had_query) = match rest.split_once(['?', '#']) {
        Some((r, _)) => (r, true),
        None => (rest, false),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    let keyish = |seg: &str| {
        seg.len() >= 20
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && seg.chars().any(|c| c.is_ascii_digit())
    };
    let path: Vec<&str> = path
        .split('/')
        .map(|seg| if keyish(seg) { "***" } else { seg })
        .collect();
    let mut out = String::with_capacity(url.len());
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    out.push_str(&host);
    out.push_str(&path.join("/"));
    if had_query {
        out.push_str("?***");
    }
    out
}

/// Where a sink delivers. Only [`Destination::write`] is required: by default a
/// destination needs no connecting and keeps no positions of its own (its records are
/// keyed by id, so a batch written twice lands once: at least once, the group offsets
/// the position).
pub trait Destination: Send {
    /// Opens the connection (and whatever the destination needs) or says why not.
    fn connect(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Whether [`Destination::write`] stores the positions with the data (exactly
    /// once, read back by [`Destination::stored_offsets`]); else the group offsets are
    /// the position, committed synchronously after each write.
    fn stores_positions(&self) -> bool {
        false
    }
    /// The next offset per partition of `topic` the destination holds data up to
    /// (none when it keeps no positions).
    fn stored_offsets(&mut self, _topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
        Ok(BTreeMap::new())
    }
    /// Writes `batch` and records `positions` (next offset per topic partition), all or
    /// nothing.
    fn write(
        &mut self,
        batch: &[SinkRecord],
        positions: &BTreeMap<(String, i32), i64>,
    ) -> anyhow::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_what_may_be_secret() {
        for (url, shown) in [
            (
                "https://hooks.example.com/flags",
                "https://hooks.example.com/flags",
            ),
            (
                "https://user:pa55@hooks.example.com/flags?token=abc",
                "https://***@hooks.example.com/flags?***",
            ),
            (
                "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXX1234",
                "https://hooks.slack.com/services/T0000/B0000/***",
            ),
            (
                "postgres://flagtally:s3cret@db:5432/warehouse?sslmode=require",
                "postgres://***@db:5432/warehouse?***",
            ),
            ("127.0.0.1:8080/x", "127.0.0.1:8080/x"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
