//! Making every record flagtally writes fit, whatever the input: error texts and paths
//! capped, dead-letter payloads truncated to what the dead-letter topic accepts, input
//! headers that claim to be flagtally's renamed, and produce errors told apart into
//! transient (retry by rewinding) and permanent (set the record aside).

use std::borrow::Cow;

use rdkafka::types::RDKafkaErrorCode;

use crate::decode::DecodeError;

/// Longest error text of one decode error in a dead letter's header.
pub const MAX_ERROR_BYTES: usize = 512;
/// Most errors listed in one dead letter (the count header has them all).
pub const MAX_ERRORS_LISTED: usize = 8;
/// Longest JSON path in a dead letter's header.
pub const MAX_PATH_BYTES: usize = 256;

/// Input headers named with this prefix are flagtally's own on output; on input they
/// are somebody else's and are forwarded under [`FORWARDED_PREFIX`].
pub const OWN_PREFIX: &str = "flagtally-";
pub const FORWARDED_PREFIX: &str = "original-";

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn cap(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// The `flagtally-error` header: each error capped, at most [`MAX_ERRORS_LISTED`].
pub fn error_text(errors: &[DecodeError]) -> String {
    let mut text = String::new();
    for (i, e) in errors.iter().take(MAX_ERRORS_LISTED).enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        text.push_str(&cap(&e.to_string(), MAX_ERROR_BYTES));
    }
    if errors.len() > MAX_ERRORS_LISTED {
        text.push_str(&format!(
            "; … and {} more",
            errors.len() - MAX_ERRORS_LISTED
        ));
    }
    text
}

/// The name an input header is forwarded under: `flagtally-*` names are renamed, so no
/// reader of an output topic can mistake them for flagtally's own.
pub fn forwarded_name(name: &str) -> Cow<'_, str> {
    if name
        .get(..OWN_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(OWN_PREFIX))
    {
        Cow::Owned(format!("{FORWARDED_PREFIX}{name}"))
    } else {
        Cow::Borrowed(name)
    }
}

/// A forwarded header's name from its bytes: a UTF-8 name as [`forwarded_name`]; a name
/// that is not UTF-8 (the Kafka protocol allows any bytes) as [`RAW_NAME_PREFIX`] and
/// the bytes percent-encoded (every byte outside ASCII `!`..`~`, and `%`, as `%XX`).
/// Lossless, and unambiguous: no input name can produce the prefix, since input names
/// starting with `flagtally-` are forwarded under [`FORWARDED_PREFIX`].
pub fn forwarded_name_bytes(name: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(name) {
        Ok(text) => forwarded_name(text),
        Err(_) => {
            use std::fmt::Write as _;
            let mut out = String::with_capacity(RAW_NAME_PREFIX.len() + name.len() * 3);
            out.push_str(RAW_NAME_PREFIX);
            for &b in name {
                if (b'!'..=b'~').contains(&b) && b != b'%' {
                    out.push(char::from(b));
                } else {
                    let _ = write!(out, "%{b:02X}");
                }
            }
            Cow::Owned(out)
        }
    }
}

/// The name under which a header whose name is not UTF-8 is forwarded
/// ([`forwarded_name_bytes`]).
pub const RAW_NAME_PREFIX: &str = "flagtally-raw-name:";

/// Longest header value a dead letter's stub keeps.
pub const MAX_STUB_VALUE: usize = 256;

/// Bytes a record needs in a batch beyond its key, value and header bytes (the batch
/// header, per-record lengths and varints), with room to spare.
pub const RECORD_MARGIN: usize = 512;

/// Bytes one header takes in a record, about (name, value, their lengths).
pub fn header_size(name: &str, value: &[u8]) -> usize {
    name.len() + value.len() + 8
}

/// How a dead letter fits its topic: which forwarded input headers it keeps (the
/// first `headers_kept`, in order) and how much of the payload, or that nothing but a
/// stub fits ([`stub_headers`]). Deterministic: the same record and limit always give
/// the same dead letter, so a replay writes the same content under the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    Whole,
    Cut {
        headers_kept: usize,
        value_kept: usize,
    },
    Stub,
}

/// [`Fit`] for a dead letter of `own` bytes of flagtally's headers, a key, input
/// headers of the sizes given and a payload, within `limit` bytes. Input headers get at
/// most half of what is left beside the key and flagtally's headers (those that do
/// not fit are dropped, their count in a header), the payload the rest (cut, its
/// original length in a header).
pub fn fit_dead_letter(
    limit: usize,
    own: usize,
    key: usize,
    input_headers: &[usize],
    value: usize,
) -> Fit {
    // Room for the headers a cut adds (truncated, headers dropped).
    const CUT_HEADERS: usize = 96;
    let all = own + key + input_headers.iter().sum::<usize>() + value;
    if all <= limit {
        return Fit::Whole;
    }
    let Some(budget) = limit.checked_sub(own + key + CUT_HEADERS) else {
        return Fit::Stub;
    };
    let mut used = 0;
    let mut headers_kept = 0;
    for h in input_headers {
        if used + h > budget / 2 {
            break;
        }
        used += h;
        headers_kept += 1;
    }
    Fit::Cut {
        headers_kept,
        value_kept: value.min(budget - used),
    }
}

/// The headers of a dead letter's stub: flagtally's own headers of the full dead
/// letter (id, kind, reason, source position …), each value capped to
/// [`MAX_STUB_VALUE`], with [`STUB`] and the sizes of what was left out. No key, no
/// payload, no input headers: a record that cannot be described within its topic's
/// limit is still accounted for.
pub fn stub_headers(
    own: &[(&str, &[u8])],
    value_bytes: usize,
    key_bytes: usize,
    header_bytes: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = own
        .iter()
        .filter(|(k, _)| *k != STUB && *k != STUB_SIZES)
        .map(|(k, v)| ((*k).to_owned(), v[..v.len().min(MAX_STUB_VALUE)].to_vec()))
        .collect();
    out.push((STUB.to_owned(), b"true".to_vec()));
    out.push((
        STUB_SIZES.to_owned(),
        format!("value={value_bytes};key={key_bytes};headers={header_bytes}").into_bytes(),
    ));
    out
}

/// Present on a dead letter's stub.
pub const STUB: &str = "flagtally-stub";
/// A stub's record sizes: `value=…;key=…;headers=…` (bytes of the record described).
pub const STUB_SIZES: &str = "flagtally-stub-sizes";

/// Produce errors that a retry cannot cure: the record itself, or the permission to
/// write it, is refused. Rewinding on one would loop forever.
pub fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidTimestamp
            | RDKafkaErrorCode::InvalidArgument
            | RDKafkaErrorCode::InvalidRequiredAcks
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_fit_or_become_stubs() {
        assert_eq!(fit_dead_letter(3000, 400, 10, &[100], 1000), Fit::Whole);
        // 2.5 KB of input headers and an 8 KB payload in a 3 000-byte topic: the header
        // is dropped (over half the room) and the payload cut to what is left.
        let f = fit_dead_letter(3000 - RECORD_MARGIN, 400, 10, &[2500], 8000);
        let Fit::Cut {
            headers_kept,
            value_kept,
        } = f
        else {
            panic!("{f:?}")
        };
        assert_eq!(headers_kept, 0);
        assert!(value_kept > 1000 && 400 + 10 + value_kept + 96 <= 3000 - RECORD_MARGIN);
        // Small headers are kept in order, up to half the room (1 804 / 2 here).
        assert_eq!(
            fit_dead_letter(2000, 100, 0, &[300, 300, 300, 300], 5000),
            Fit::Cut {
                headers_kept: 3,
                value_kept: 2000 - 100 - 96 - 900
            }
        );
        // A key or own headers beyond the limit: a stub.
        assert_eq!(fit_dead_letter(1000, 400, 700, &[], 0), Fit::Stub);
        let own: [(&str, &[u8]); 2] = [("flagtally-id", b"x"), ("flagtally-error", &[b'e'; 4000])];
        let stub = stub_headers(&own, 8000, 700, 2500);
        assert_eq!(stub[1].1.len(), MAX_STUB_VALUE);
        assert_eq!(stub.last().unwrap().1, b"value=8000;key=700;headers=2500");
    }
    use crate::decode::{Dialect, Reason};

    #[test]
    fn caps_on_char_boundaries() {
        assert_eq!(cap("short", 10), "short");
        let long = "é".repeat(100);
        let c = cap(&long, 11);
        assert!(c.len() <= 11 && c.ends_with('…'), "{c}");
    }

    #[test]
    fn error_text_is_bounded_whatever_the_errors() {
        let huge = DecodeError::new(Dialect::Goff, "x", Reason::Invalid("y".repeat(1 << 20)));
        let errors = vec![huge; 1000];
        let text = error_text(&errors);
        assert!(
            text.len() <= MAX_ERRORS_LISTED * (MAX_ERROR_BYTES + 2) + 40,
            "{}",
            text.len()
        );
        assert!(
            text.ends_with("and 992 more"),
            "{}",
            &text[text.len() - 40..]
        );
    }

    #[test]
    fn own_headers_are_renamed_others_kept() {
        assert_eq!(forwarded_name("flagtally-id"), "original-flagtally-id");
        assert_eq!(forwarded_name("FlagTally-Kind"), "original-FlagTally-Kind");
        assert_eq!(forwarded_name("traceparent"), "traceparent");
        assert_eq!(forwarded_name("é"), "é");
    }

    #[test]
    fn size_and_authorization_errors_are_permanent_timeouts_not() {
        assert!(is_permanent(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(is_permanent(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert!(!is_permanent(RDKafkaErrorCode::RequestTimedOut));
        assert!(!is_permanent(RDKafkaErrorCode::NotEnoughReplicas));
    }

    #[test]
    fn header_names_that_are_not_utf8_are_forwarded_losslessly() {
        assert_eq!(forwarded_name_bytes(b"trace-id"), "trace-id");
        assert_eq!(
            forwarded_name_bytes(b"flagtally-id"),
            format!("{FORWARDED_PREFIX}flagtally-id")
        );
        assert_eq!(
            forwarded_name_bytes(b"a\xff b%\x00"),
            "flagtally-raw-name:a%FF%20b%25%00"
        );
    }
}
