//! Structural limits of a JSON record, checked in one linear pass before any dialect
//! reads it: nesting depth, string and member-name lengths, and events per record (the
//! elements of an array at the top level or one level down, where every dialect keeps
//! its batches). A record past any limit is refused whole, with its own reason, before
//! a recursive reader could overflow its stack or a huge batch could fill memory.
//!
//! The scan does not validate JSON: it only counts. Strings are skipped with `memchr`
//! (escapes honoured), so the cost is a few instructions per structural byte. Whatever
//! it lets through is still parsed by the dialect, which reports syntax errors itself.

use super::{Limits, Reason};

/// Checks `bytes` against `limits`; the error names the first limit exceeded and the
/// byte offset where it happened.
pub(crate) fn check(bytes: &[u8], limits: &Limits) -> Result<(), Reason> {
    // Per open container at depth 1 and 2: is it an array, and how many commas so far.
    let mut arrays = [(false, 0usize); 3];
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                let Some(len) = string_len(&bytes[start..]) else {
                    // Unterminated: the dialect's parser names the syntax error.
                    return Ok(());
                };
                let end = start + len;
                let is_name = bytes[end + 1..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|b| *b == b':');
                if is_name && len > limits.max_key_bytes {
                    return Err(Reason::NameTooLong {
                        len,
                        limit: limits.max_key_bytes,
                        at: i,
                    });
                }
                if !is_name && len > limits.max_string_bytes {
                    return Err(Reason::StringTooLong {
                        len,
                        limit: limits.max_string_bytes,
                    });
                }
                i = end + 1;
            }
            open @ (b'[' | b'{') => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(Reason::TooDeep {
                        limit: limits.max_depth,
                        at: i,
                    });
                }
                if let Some(slot) = arrays.get_mut(depth) {
                    *slot = (open == b'[', 0);
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b',' => {
                if let Some((true, commas)) = arrays.get_mut(depth) {
                    *commas += 1;
                    if *commas >= limits.max_events {
                        return Err(Reason::TooManyEvents {
                            limit: limits.max_events,
                        });
                    }
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The length of the string whose content starts `rest`, up to its closing quote;
/// `None` when it never closes.
fn string_len(rest: &[u8]) -> Option<usize> {
    let mut j = 0;
    loop {
        let k = memchr::memchr2(b'"', b'\\', &rest[j..])?;
        if rest[j + k] == b'\\' {
            j += k + 2;
            if j > rest.len() {
                return None;
            }
        } else {
            return Some(j + k);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_depth: 4,
            max_string_bytes: 10,
            max_key_bytes: 5,
            max_events: 3,
            ..Limits::default()
        }
    }

    fn code(text: &str) -> Option<&'static str> {
        check(text.as_bytes(), &limits()).err().map(|r| r.code())
    }

    #[test]
    fn each_limit_has_its_reason_and_just_under_passes() {
        assert_eq!(code(r#"[[[{"a":1}]]]"#), None);
        assert_eq!(code(r#"[[[[{"a":1}]]]]"#), Some("too_deep"));
        assert_eq!(code(r#"{"a":"0123456789"}"#), None);
        assert_eq!(code(r#"{"a":"0123456789x"}"#), Some("string_too_long"));
        assert_eq!(code(r#"{"abcde":1}"#), None);
        assert_eq!(code(r#"{"abcdef" :1}"#), Some("name_too_long"));
        assert_eq!(code(r#"[1,2,3]"#), None);
        assert_eq!(code(r#"[1,2,3,4]"#), Some("too_many_events"));
        assert_eq!(code(r#"{"ev":[1,2,3,4]}"#), Some("too_many_events"));
        // Commas inside objects and deeper arrays are not events.
        assert_eq!(code(r#"{"a":1,"b":2,"c":3,"d":4}"#), None);
        assert_eq!(code(r#"[{"x":[1,2,3,4,5]}]"#), None);
    }

    #[test]
    fn strings_hide_structure_and_escapes_are_honoured() {
        assert_eq!(code(r#"["[[[[[", "\"[[[["]"#), None);
        assert_eq!(code(r#"["a\\"]"#), None);
        assert_eq!(code("[\"unterminated\\"), None);
        assert_eq!(code("\"\\"), None);
    }

    #[test]
    fn the_reproduced_crash_is_refused_in_linear_time() {
        // The LaunchDarkly Data Export envelope nested 20 000 levels deep.
        let depth = 20_000;
        let mut text = String::new();
        for _ in 0..depth {
            text.push_str(r#"{"project":"p","environment":"e","event":"#);
        }
        text.push_str(r#"{"kind":"feature"}"#);
        text.push_str(&"}".repeat(depth));
        let r = check(text.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(r.code(), "too_deep");
        assert!(r.to_string().contains("64"), "{r}");
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = check(&bytes, &limits());
        }

        #[test]
        fn depth_is_exact(d in 1usize..200) {
            let text = format!("{}{}", "[".repeat(d), "]".repeat(d));
            let l = Limits { max_depth: 64, ..Limits::default() };
            prop_assert_eq!(check(text.as_bytes(), &l).is_ok(), d <= 64);
        }
    }
}
