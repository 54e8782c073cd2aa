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

/// Most members of the detection level a [`Shape`] keeps.
const SHAPE_MEMBERS: usize = 32;

/// `(name, the value's first byte, the string value's raw content)`.
pub(crate) type Member<'a> = (&'a [u8], u8, &'a [u8]);

/// The top level of a JSON record as the limits scan saw it, for `auto`'s detection
/// without a parse of its own: the members of the root object, or of a root array's
/// first element.
#[derive(Debug, Default)]
pub(crate) struct Shape<'a> {
    /// The root's first byte: `{` or `[` (0: not scanned).
    pub root: u8,
    /// For a root array: its first element's first byte (0: empty array).
    pub first_element: u8,
    /// The members, in order.
    pub members: smallvec::SmallVec<[Member<'a>; 16]>,
    /// Whether the shape can be trusted: the root closed with nothing but whitespace
    /// after it, no member name escaped, at most [`SHAPE_MEMBERS`] members.
    pub complete: bool,
}

impl<'a> Shape<'a> {
    /// The first member named `name`: its value's first byte and raw string content.
    pub fn get(&self, name: &str) -> Option<(u8, &'a [u8])> {
        self.members
            .iter()
            .find(|(n, _, _)| *n == name.as_bytes())
            .map(|(_, first, text)| (*first, *text))
    }
}

fn first_non_space(bytes: &[u8]) -> Option<(usize, u8)> {
    bytes
        .iter()
        .enumerate()
        .find(|(_, b)| !b.is_ascii_whitespace())
        .map(|(i, b)| (i, *b))
}

/// Checks `bytes` against `limits`; the error names the first limit exceeded and the
/// byte offset where it happened.
pub(crate) fn check(bytes: &[u8], limits: &Limits) -> Result<(), Reason> {
    scan(bytes, limits, false).map(|_| ())
}

/// [`check`], also returning the record's [`Shape`].
pub(crate) fn check_shape<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Shape<'a>, Reason> {
    scan(bytes, limits, true)
}

/// The scan; `shape`: also keep the top level's members (else the shape stays empty).
fn scan<'a>(bytes: &'a [u8], limits: &Limits, shape_wanted: bool) -> Result<Shape<'a>, Reason> {
    // Per open container at depth 1 and 2: is it an array, and how many commas so far.
    let mut arrays = [(false, 0usize); 3];
    let mut depth = 0usize;
    let mut shape = Shape::default();
    // Members are recorded at this depth (2 for a root array's first element).
    let mut level = 1;
    let mut usable = shape_wanted;
    let mut closed_at = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                let Some(len) = string_len(&bytes[start..]) else {
                    // Unterminated: the dialect's parser names the syntax error.
                    return Ok(Shape::default());
                };
                let end = start + len;
                if depth == 1 && level == 2 && arrays[1].1 == 0 && shape.first_element == 0 {
                    shape.first_element = b'"';
                }
                let after = first_non_space(&bytes[end + 1..]);
                let is_name = after.is_some_and(|(_, b)| b == b':');
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
                if is_name && depth == level && (level == 1 || arrays[1].1 == 0) && usable {
                    let name = &bytes[start..end];
                    let value_at = end + 1 + after.map_or(0, |(j, _)| j) + 1;
                    let (first, text) = match first_non_space(&bytes[value_at.min(bytes.len())..]) {
                        Some((j, b'"')) => {
                            let from = value_at + j + 1;
                            let text = string_len(&bytes[from..])
                                .map_or(&[][..], |n| &bytes[from..from + n]);
                            (b'"', text)
                        }
                        Some((_, b)) => (b, &[][..]),
                        None => (0, &[][..]),
                    };
                    if name.contains(&b'\\') || shape.members.len() >= SHAPE_MEMBERS {
                        usable = false;
                    } else {
                        shape.members.push((name, first, text));
                    }
                }
                i = end + 1;
            }
            open @ (b'[' | b'{') => {
                if depth == 0 {
                    if shape.root != 0 {
                        usable = false;
                    }
                    shape.root = open;
                    if open == b'[' {
                        level = 2;
                    }
                } else if depth == 1 && level == 2 && arrays[1].1 == 0 && shape.first_element == 0 {
                    shape.first_element = open;
                }
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
                if depth == 0 && closed_at.is_none() {
                    closed_at = Some(i);
                }
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
            b => {
                if depth == 1
                    && level == 2
                    && arrays[1].1 == 0
                    && shape.first_element == 0
                    && !b.is_ascii_whitespace()
                {
                    shape.first_element = b;
                }
                i += 1;
            }
        }
    }
    // Only a root that closed once, with nothing after it but whitespace, and members
    // (at level 2) only of the first element: the commas at depth 1 stop recording.
    shape.complete = usable
        && depth == 0
        && closed_at.is_some_and(|c| first_non_space(&bytes[c + 1..]).is_none());
    Ok(shape)
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
