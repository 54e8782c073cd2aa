//! Text built from data for file and object names, and times every formatter accepts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The latest instant RFC 3339 can write (9999-12-31T23:59:59.999Z), in ms.
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

/// An event time in ms as a `SystemTime` that every formatter accepts: clamped to
/// [1970, 9999] (an event dated past year 9999 would make RFC 3339 formatting panic).
pub fn bounded_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.clamp(0, MAX_RFC3339_MS).unsigned_abs())
}

/// Longest path component built from data.
pub const MAX_COMPONENT_BYTES: usize = 64;

/// A file or object path component built from data (an event's kind): only
/// `[A-Za-z0-9._-]` kept (anything else becomes `_`), never `.` or `..` or empty, at
/// most [`MAX_COMPONENT_BYTES`] bytes. So no value can name a path outside the sink's
/// place.
pub fn path_component(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_COMPONENT_BYTES)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = out.replace('.', "_");
        if out.is_empty() {
            out.push('_');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_cannot_escape() {
        for (input, want) in [
            ("feature", "feature"),
            ("x/../../..", "x_.._.._.."),
            ("..", "__"),
            (".", "_"),
            ("", "_"),
            ("a\\b\0c", "a_b_c"),
            ("é", "_"),
        ] {
            assert_eq!(path_component(input), want, "{input:?}");
        }
        assert_eq!(path_component(&"k".repeat(500)).len(), MAX_COMPONENT_BYTES);
    }

    #[test]
    fn times_past_year_9999_format() {
        let t = humantime::format_rfc3339_millis(bounded_time(i64::MAX)).to_string();
        assert_eq!(t, "9999-12-31T23:59:59.999Z");
        let t = humantime::format_rfc3339_millis(bounded_time(i64::MIN)).to_string();
        assert_eq!(t, "1970-01-01T00:00:00.000Z");
    }
}
