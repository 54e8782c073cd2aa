//! Helpers shared by the decoders' unit tests.

use super::{DecodeError, Decoded, Dialect, Limits};
use crate::event::{Event, Json};

/// A dialect's decode function.
pub(crate) type DecodeFn = fn(&[u8], &Limits, &mut Decoded);

pub(crate) fn run(decode: DecodeFn, input: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    decode(input, &Limits::default(), &mut out);
    out
}

pub(crate) fn json(text: &str) -> Json {
    Json::parse(text).unwrap()
}

/// The one event a good record decodes to.
pub(crate) fn only_event(decode: DecodeFn, input: &str) -> Event {
    let out = run(decode, input.as_bytes());
    assert_eq!(out.errors, vec![], "{input}");
    assert_eq!(out.events.len(), 1, "{input}");
    out.events.into_iter().next().unwrap()
}

/// The one error a bad record decodes to, checked in full but for the message.
pub(crate) fn only_error(
    decode: DecodeFn,
    dialect: Dialect,
    input: &[u8],
    path: &str,
    code: &str,
) -> DecodeError {
    let out = run(decode, input);
    assert_eq!(out.events, vec![], "{}", String::from_utf8_lossy(input));
    assert_eq!(out.errors.len(), 1, "{}", String::from_utf8_lossy(input));
    let e = out.errors.into_iter().next().unwrap();
    assert_eq!(
        (e.dialect, e.path.as_str(), e.reason.code()),
        (dialect, path, code),
        "{e}"
    );
    e
}
