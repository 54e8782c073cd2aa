//! The fast path of the LaunchDarkly decoder: reads one event object, or a batch array
//! of them, into the same [`Raw`] fields serde would, without serde's per-field
//! machinery (which costs about 0.5 µs for a 260-byte event, the whole per-event budget
//! of the hot path). It stays within the structural limits as it reads (depth, string
//! and member-name lengths, events per batch level) and declines past any of them, so a
//! record it reads whole needs no separate limits pass: one pass per record.
//!
//! - top-level keys, `"…"` strings without escapes, digits-only integers and the
//!   literals `true`/`false`/`null` are read directly;
//! - every value kept as raw JSON (contexts, values, reasons) and every ignored field is
//!   checked by a small validating scanner that follows the JSON grammar exactly as
//!   serde_json's does for raw values (escapes, `\u` hex digits, number grammar,
//!   literals, nesting of any depth, iteratively);
//! - numbers other than plain integers are handed to serde_json;
//! - anything unusual — escapes in keys or read strings, a repeated field, a value of
//!   an unexpected type, trailing bytes, invalid UTF-8, invalid JSON — returns `None`,
//!   and the caller falls back to serde, which also names the error precisely.
//!
//! `decode_both_ways` and the differential property test and fuzz target check that
//! the decode stage gives the same result with and without this path (then: the limits
//! pass, and serde), under the default limits and under small ones.

use std::borrow::Cow;

use serde_json::Number;
use smallvec::SmallVec;

use super::Raw;
use crate::decode::Limits;
use crate::decode::auto::Member;
use crate::decode::util::{RawText, Str};

/// The structural limits the fast path stays within (see `decode::limits`): past any
/// of them it declines, and the limits scan then names the limit. Within them, a
/// record the fast path reads whole is one the scan would pass, so the decode stage
/// skips the scan for it: one pass per record.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    /// Longest member name, in bytes as written.
    pub name: usize,
    /// Longest string value, in bytes as written.
    pub string: usize,
    /// Deepest nesting of arrays and objects, the root counted as 1.
    pub depth: usize,
    /// Most elements of an array at depth 1 or 2 (the batch levels).
    pub events: usize,
}

impl Bounds {
    /// No limits: for a record the limits scan has already passed.
    pub const NONE: Bounds = Bounds {
        name: usize::MAX,
        string: usize::MAX,
        depth: usize::MAX,
        events: usize::MAX,
    };

    pub fn of(limits: &Limits) -> Self {
        Self {
            name: limits.max_key_bytes,
            string: limits.max_string_bytes,
            depth: limits.max_depth,
            events: limits.max_events,
        }
    }
}

/// Presence of top-level members the LaunchDarkly reader ignores but `auto`'s detection
/// rules ask about; each one's discriminant is its bit.
#[derive(Clone, Copy)]
pub(super) enum Other {
    Type,
    Properties,
    Uuid,
    DistinctId,
    EnvId,
    Events,
    Source,
    Metadata,
    Variations,
    Metrics,
}

impl Other {
    fn of(key: &str) -> Option<Other> {
        Some(match key {
            "type" => Other::Type,
            "properties" => Other::Properties,
            "uuid" => Other::Uuid,
            "distinct_id" => Other::DistinctId,
            "env_id" => Other::EnvId,
            "events" => Other::Events,
            "source" => Other::Source,
            "metadata" => Other::Metadata,
            "variations" => Other::Variations,
            "metrics" => Other::Metrics,
            _ => return None,
        })
    }
}

/// One event object as the fast path read it, with what `auto` needs to detect it.
#[derive(Default)]
pub(super) struct Parsed<'a> {
    pub raw: Raw<'a>,
    /// The object's text.
    pub text: &'a [u8],
    /// Which [`Raw`] fields were present (null or not): bit `1 << Field as u32`.
    pub seen: u32,
    /// Which [`Other`] members were present: bit `1 << Other as u16`.
    pub other: u16,
}

impl Parsed<'_> {
    pub fn has(&self, f: Field) -> bool {
        self.seen & (1 << f as u32) != 0
    }

    pub fn has_other(&self, o: Other) -> bool {
        self.other & (1 << o as u16) != 0
    }
}

/// What `auto`'s rules ask of a top level, answered from the fields read: the first
/// byte of a value where a rule looks at it (`variation`, `version`, `kind`), a stand-in
/// byte for a member whose presence is all that counts.
impl crate::decode::auto::Members for Parsed<'_> {
    fn first(&self, member: Member) -> Option<u8> {
        /// Present; the rules ask nothing of its value.
        const PRESENT: u8 = b'?';
        let raw = |v: Option<RawText<'_>>| v.map_or(b'n', |t| t.get().as_bytes()[0]);
        let other = |o: Other| self.has_other(o).then_some(PRESENT);
        let f = match member {
            Member::Kind => Field::Kind,
            Member::Event => Field::Event,
            Member::Variation => Field::Variation,
            Member::Version => Field::Version,
            Member::Context => Field::Context,
            Member::ContextKeys => Field::ContextKeys,
            Member::User => Field::User,
            Member::Type => return other(Other::Type),
            Member::Events => return other(Other::Events),
            Member::Properties => return other(Other::Properties),
            Member::Uuid => return other(Other::Uuid),
            Member::DistinctId => return other(Other::DistinctId),
            Member::EnvId => return other(Other::EnvId),
            Member::Source => return other(Other::Source),
            Member::Metadata => return other(Other::Metadata),
            Member::Variations => return other(Other::Variations),
            Member::Metrics => return other(Other::Metrics),
        };
        if !self.has(f) {
            return None;
        }
        Some(match f {
            Field::Kind => self.raw.kind.as_ref().map_or(b'n', |_| b'"'),
            // Read as a number (a string variation declines the fast path).
            Field::Variation => self.raw.variation.as_ref().map_or(b'n', |_| b'0'),
            Field::Version => raw(self.raw.version),
            Field::Context => raw(self.raw.context),
            Field::ContextKeys => raw(self.raw.context_keys),
            Field::User => raw(self.raw.user),
            Field::Event => raw(self.raw.event),
            _ => PRESENT,
        })
    }

    fn kind(&self) -> Option<&[u8]> {
        self.raw.kind.as_deref().map(str::as_bytes)
    }
}

/// `bytes` as text, or `None` if they are not UTF-8. The check reads every byte of
/// every record; simdutf8's (already built for the Parquet sink) costs 38 instructions
/// fewer per event than the standard library's, of about 5 800 for decode + window
/// (`scripts/bench-instructions.sh`). Where a record is not UTF-8, the slow path names
/// the offending byte.
fn utf8(bytes: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(bytes).ok()
}

/// Reads one event object, or declines with `None`.
pub(super) fn parse<'a>(bytes: &'a [u8], bounds: &Bounds) -> Option<Raw<'a>> {
    let text = utf8(bytes)?;
    let mut s = Scan::new(text, bounds);
    let mut parsed = Parsed::default();
    s.ws();
    s.object(&mut parsed)?;
    s.ws();
    (s.i == bytes.len()).then_some(parsed.raw)
}

/// Reads a record whole: one event object into `one`, or a batch array of them (each
/// at depth 2) into `batch`; returns whether it was a batch. Declines with `None` if
/// any part of it is unusual or past `bounds`. (The caller's slots are filled in place:
/// a [`Raw`] is 470 bytes, and moving it costs as much as reading it.)
pub(super) fn parse_record<'a>(
    bytes: &'a [u8],
    bounds: &Bounds,
    one: &mut Parsed<'a>,
    batch: &mut Vec<Parsed<'a>>,
) -> Option<bool> {
    let text = utf8(bytes)?;
    let mut s = Scan::new(text, bounds);
    s.ws();
    let is_batch = s.peek()? == b'[';
    if is_batch {
        s.i += 1;
        s.depth = 2;
        s.ws();
        if s.peek()? == b']' {
            s.i += 1;
        } else {
            let mut commas = 0usize;
            loop {
                batch.push(Parsed::default());
                s.object(batch.last_mut()?)?;
                if !s.more(b']')? {
                    break;
                }
                commas += 1;
                if commas >= bounds.events {
                    return None;
                }
            }
        }
    } else {
        s.object(one)?;
        // A lone event's text is the record's, as the serde path reads it.
        one.text = bytes;
    }
    s.ws();
    (s.i == bytes.len()).then_some(is_batch)
}

/// The fields of [`Raw`]; each one's discriminant is its bit in the "seen" mask.
#[derive(Clone, Copy)]
pub(super) enum Field {
    Kind,
    CreationDate,
    Key,
    Version,
    Context,
    ContextKeys,
    UserKey,
    User,
    ContextKind,
    Variation,
    VariationName,
    Value,
    Default,
    PrereqOf,
    Reason,
    TrackEvents,
    DebugUntil,
    SamplingRatio,
    Exclude,
    Data,
    MetricValue,
    StartDate,
    EndDate,
    Features,
    Event,
    Project,
    Environment,
}

/// Names a field. A `match` on the string compiles to a switch on its length and
/// fixed-size comparisons, with no call to `memcmp`.
fn which(key: &str) -> Option<Field> {
    use Field::*;
    Some(match key {
        "key" => Key,
        "kind" => Kind,
        "user" => User,
        "data" => Data,
        "value" => Value,
        "event" => Event,
        "reason" => Reason,
        "version" => Version,
        "context" => Context,
        "default" => Default,
        "userKey" => UserKey,
        "endDate" => EndDate,
        "project" => Project,
        "prereqOf" => PrereqOf,
        "features" => Features,
        "variation" => Variation,
        "startDate" => StartDate,
        "contextKeys" => ContextKeys,
        "contextKind" => ContextKind,
        "trackEvents" => TrackEvents,
        "metricValue" => MetricValue,
        "environment" => Environment,
        "creationDate" => CreationDate,
        "variationName" => VariationName,
        "samplingRatio" => SamplingRatio,
        "debugEventsUntilDate" => DebugUntil,
        "excludeFromSummaries" => Exclude,
        _ => return None,
    })
}

/// Reads the value of field `f` into `raw`.
fn field<'a>(s: &mut Scan<'a>, raw: &mut Raw<'a>, f: Field) -> Option<()> {
    match f {
        Field::Kind => raw.kind = s.opt_str()?,
        Field::CreationDate => raw.creation_date = s.opt_number()?,
        Field::Key => raw.key = s.opt_str()?,
        Field::Version => raw.version = s.opt_raw()?,
        Field::Context => (raw.context, raw.context_head) = s.opt_context()?,
        Field::ContextKeys => raw.context_keys = s.opt_raw()?,
        Field::UserKey => raw.user_key = s.opt_str()?,
        Field::User => raw.user = s.opt_raw()?,
        Field::ContextKind => raw.context_kind = s.opt_str()?,
        Field::Variation => raw.variation = s.opt_number()?,
        Field::VariationName => raw.variation_name = s.opt_str()?,
        Field::Value => raw.value = s.opt_raw()?,
        Field::Default => raw.default = s.opt_raw()?,
        Field::PrereqOf => raw.prereq_of = s.opt_str()?,
        Field::Reason => raw.reason = s.opt_raw()?,
        Field::TrackEvents => raw.track_events = s.opt_bool()?,
        Field::DebugUntil => raw.debug_until = s.opt_number()?,
        Field::SamplingRatio => raw.sampling_ratio = s.opt_u64()?,
        Field::Exclude => raw.exclude_from_summaries = s.opt_bool()?,
        Field::Data => raw.data = s.opt_raw()?,
        Field::MetricValue => raw.metric_value = s.opt_f64()?,
        Field::StartDate => raw.start_date = s.opt_number()?,
        Field::EndDate => raw.end_date = s.opt_number()?,
        Field::Features => raw.features = s.opt_raw()?,
        Field::Event => raw.event = s.opt_raw()?,
        Field::Project => raw.project = s.opt_str()?,
        Field::Environment => raw.environment = s.opt_str()?,
    }
    Some(())
}

/// The offset of the first byte of `bytes` that ends a run of plain string content:
/// `"`, `\` or a control character (below 0x20). Eight bytes at a time: a byte equal to
/// `c` is a zero byte of `w ^ c…c`, and `(x - 0x01…01) & !x & 0x80…80` flags the zero
/// (and below-n, with `n…n`) bytes of `x`, exactly at the lowest one (a borrow only
/// flags bytes above it).
#[inline(always)]
fn special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    // Whole words through `chunks_exact`, whose chunks are known to be eight bytes
    // long: no bounds check per word.
    let mut words = bytes.chunks_exact(8);
    let mut i = 0;
    for chunk in words.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let found = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    words
        .remainder()
        .iter()
        .position(|b| matches!(b, b'"' | b'\\') || *b < 0x20)
        .map(|p| i + p)
}

/// A single context's plain kind and key, as [`Scan::opt_context`] found them.
type Head<'a> = (&'a str, &'a str);

struct Scan<'a> {
    text: &'a str,
    i: usize,
    bounds: Bounds,
    /// The depth of the event object being read (1: the root, 2: a batch element).
    depth: usize,
    /// Set whenever whitespace is skipped: a value read with it clear is compact.
    spaced: bool,
}

impl<'a> Scan<'a> {
    /// A scan from the start of `text`, reading a root object (depth 1).
    fn new(text: &'a str, bounds: &Bounds) -> Self {
        Self {
            text,
            i: 0,
            bounds: *bounds,
            depth: 1,
            spaced: false,
        }
    }

    /// After an element of a container that `close` ends: `Some(true)` past a `,`
    /// (another element follows), `Some(false)` past `close`, `None` for anything else.
    fn more(&mut self, close: u8) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b',' => {
                self.i += 1;
                self.ws();
                Some(true)
            }
            c if c == close => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// One event object at the cursor, into `p` (which starts empty).
    fn object(&mut self, p: &mut Parsed<'a>) -> Option<()> {
        if self.depth > self.bounds.depth {
            return None;
        }
        let start = self.i;
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                let key = self.plain_string(self.bounds.name)?;
                self.ws();
                self.eat(b':')?;
                self.ws();
                match which(key) {
                    Some(f) => {
                        let bit = 1 << (f as u32);
                        if p.seen & bit != 0 {
                            return None; // repeated field: serde reports it
                        }
                        p.seen |= bit;
                        field(self, &mut p.raw, f)?;
                    }
                    None => {
                        if let Some(o) = Other::of(key) {
                            p.other |= 1 << (o as u16);
                        }
                        // Ignored, as serde ignores it, but it must still be valid JSON.
                        self.value()?;
                    }
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        p.text = &self.bytes()[start..self.i];
        Some(())
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn ws(&mut self) {
        // Nearly always no whitespace at all: one comparison says so.
        if self.peek().is_none_or(|b| b > b' ') {
            return;
        }
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
            self.spaced = true;
        }
    }

    /// `"…"` with no escapes and no control characters, at most `limit` bytes long.
    #[inline(always)]
    fn plain_string(&mut self, limit: usize) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = &self.bytes()[start..];
        let end = special(rest)?;
        if rest[end] != b'"' || end > limit {
            return None;
        }
        self.i = start + end + 1;
        self.text.get(start..start + end)
    }

    /// `null`, consumed; true if it was there.
    fn null(&mut self) -> bool {
        if self.bytes()[self.i..].starts_with(b"null") && self.delimited(self.i + 4) {
            self.i += 4;
            true
        } else {
            false
        }
    }

    /// Whether a scalar ending at `at` is followed by a delimiter.
    fn delimited(&self, at: usize) -> bool {
        matches!(
            self.bytes().get(at),
            None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
        )
    }

    fn opt_str(&mut self) -> Option<Option<Str<'a>>> {
        if self.null() {
            return Some(None);
        }
        Some(Some(Str(Cow::Borrowed(
            self.plain_string(self.bounds.string)?,
        ))))
    }

    fn opt_bool(&mut self) -> Option<Option<bool>> {
        if self.null() {
            return Some(None);
        }
        for (lit, v) in [("true", true), ("false", false)] {
            if self.bytes()[self.i..].starts_with(lit.as_bytes())
                && self.delimited(self.i + lit.len())
            {
                self.i += lit.len();
                return Some(Some(v));
            }
        }
        None
    }

    /// The digits of a non-negative integer without leading zeros, if that is what the
    /// next value is (else `None`, position unchanged).
    fn digits(&mut self) -> Option<u64> {
        let rest = &self.bytes()[self.i..];
        // Digits counted and summed in one loop; past 18 of them the sum may wrap, but
        // such a number declines anyway.
        let (mut n, mut v) = (0, 0u64);
        while let Some(d) = rest.get(n).filter(|b| b.is_ascii_digit()) {
            v = v.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            n += 1;
        }
        if n == 0 || n > 18 || (n > 1 && rest[0] == b'0') || !self.delimited(self.i + n) {
            return None;
        }
        self.i += n;
        Some(v)
    }

    fn opt_number(&mut self) -> Option<Option<Number>> {
        if self.null() {
            return Some(None);
        }
        if let Some(v) = self.digits() {
            return Some(Some(Number::from(v)));
        }
        let span = self.value()?;
        serde_json::from_str::<Number>(span).ok().map(Some)
    }

    fn opt_u64(&mut self) -> Option<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        if let Some(v) = self.digits() {
            return Some(Some(v));
        }
        let span = self.value()?;
        serde_json::from_str::<u64>(span).ok().map(Some)
    }

    fn opt_f64(&mut self) -> Option<Option<f64>> {
        if self.null() {
            return Some(None);
        }
        let span = self.value()?;
        serde_json::from_str::<f64>(span).ok().map(Some)
    }

    fn opt_raw(&mut self) -> Option<Option<RawText<'a>>> {
        if self.null() {
            return Some(None);
        }
        self.ws();
        // A lone string or number (a value, a default, a version nearly always) is
        // read directly, without the container walk; either is compact.
        let start = self.i;
        let scalar = match self.peek()? {
            b'"' => Some(self.string(self.bounds.string)),
            b'-' | b'0'..=b'9' => Some(self.number()),
            _ => None,
        };
        if let Some(read) = scalar {
            read?;
            return Some(Some(RawText::validated(
                self.text.get(start..self.i)?,
                true,
            )));
        }
        self.spaced = false;
        let text = self.value()?;
        Some(Some(RawText::validated(text, !self.spaced)))
    }

    /// A `context` value, and its kind and key when it is the common single context.
    /// Its head, `{"kind":"…","key":"…"`, is matched as literal text and two plain
    /// strings (kept for the decoder, which then need not look for them again), and the
    /// rest of the object is validated as any value; anything else (whitespace or an
    /// escape in the head, another member first, `null`) is read by [`Scan::opt_raw`].
    fn opt_context(&mut self) -> Option<(Option<RawText<'a>>, Option<Head<'a>>)> {
        const HEAD: &[u8] = br#"{"kind":""#;
        const KEY: &[u8] = br#","key":""#;
        let start = self.i;
        if self.depth + 1 > self.bounds.depth
            || self.bounds.name < "kind".len()
            || !self.bytes()[start..].starts_with(HEAD)
        {
            return Some((self.opt_raw()?, None));
        }
        self.i += HEAD.len() - 1;
        let head = self.plain_string(self.bounds.string).and_then(|kind| {
            self.bytes()[self.i..].starts_with(KEY).then_some(())?;
            self.i += KEY.len() - 1;
            Some((kind, self.plain_string(self.bounds.string)?))
        });
        let Some(head) = head else {
            self.i = start;
            return Some((self.opt_raw()?, None));
        };
        self.spaced = false;
        let text = match self.plain_members() {
            Some(()) => self.text.get(start..self.i)?,
            None => self.value_rest(start, smallvec::smallvec![b'}'], true)?,
        };
        Some((Some(RawText::validated(text, !self.spaced)), Some(head)))
    }

    /// The rest of an object whose members are compact `"name":` and a string or a
    /// number, read directly up to and past its `}`. At anything else it stops with
    /// `None` and the cursor back after the last member it read whole, where
    /// [`Scan::value_rest`] goes on (and also declines what is invalid).
    fn plain_members(&mut self) -> Option<()> {
        loop {
            match self.peek()? {
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                b',' => {}
                _ => return None,
            }
            let member = self.i;
            self.i += 1;
            let read = self.plain_member();
            if read.is_none() {
                self.i = member;
                return None;
            }
        }
    }

    /// `"name":` and a string or a number, with no whitespace.
    fn plain_member(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string(self.bounds.name)?;
        self.eat(b':')?;
        match self.peek()? {
            b'"' => self.string(self.bounds.string),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// Validates one JSON value at the cursor and returns its text.
    fn value(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        self.value_rest(start, SmallVec::new(), false)
    }

    /// Validates the rest of a JSON value that starts at `start`: `stack` holds the
    /// closers of the containers already open, innermost last; `after_value`: the
    /// cursor is just past a complete element of the innermost one.
    fn value_rest(
        &mut self,
        start: usize,
        mut stack: SmallVec<[u8; 16]>,
        mut after_value: bool,
    ) -> Option<&'a str> {
        // Commas of an array that is this value itself, in a root object: a batch level
        // the limits count events in.
        let mut commas = 0usize;
        loop {
            if !after_value {
                self.ws();
                let c = self.peek()?;
                if matches!(c, b'{' | b'[') && self.depth + 1 + stack.len() > self.bounds.depth {
                    return None;
                }
                match c {
                    b'{' => {
                        self.i += 1;
                        self.ws();
                        if self.peek()? == b'}' {
                            self.i += 1;
                        } else {
                            stack.push(b'}');
                            self.member_name()?;
                            continue;
                        }
                    }
                    b'[' => {
                        self.i += 1;
                        self.ws();
                        if self.peek()? == b']' {
                            self.i += 1;
                        } else {
                            stack.push(b']');
                            continue;
                        }
                    }
                    b'"' => self.string(self.bounds.string)?,
                    b't' => self.literal("true")?,
                    b'f' => self.literal("false")?,
                    b'n' => self.literal("null")?,
                    b'-' | b'0'..=b'9' => self.number()?,
                    _ => return None,
                }
            }
            after_value = false;
            // After a value: close containers, or go on to the next element.
            loop {
                let Some(&closer) = stack.last() else {
                    return self.text.get(start..self.i);
                };
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if closer == b']' && stack.len() == 1 && self.depth == 1 {
                            commas += 1;
                            if commas >= self.bounds.events {
                                return None;
                            }
                        }
                        if closer == b'}' {
                            self.ws();
                            self.member_name()?;
                        }
                        break;
                    }
                    c if c == closer => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"name"` `:` inside an object.
    fn member_name(&mut self) -> Option<()> {
        self.string(self.bounds.name)?;
        self.ws();
        self.eat(b':')
    }

    /// A string literal at most `limit` bytes long as written: escapes checked, no raw
    /// control characters (the text is UTF-8 already).
    #[inline(always)]
    fn string(&mut self, limit: usize) -> Option<()> {
        let b = self.bytes();
        self.eat(b'"')?;
        let start = self.i;
        loop {
            self.i += special(b.get(self.i..)?)?;
            match b[self.i] {
                b'"' => {
                    if self.i - start > limit {
                        return None;
                    }
                    self.i += 1;
                    return Some(());
                }
                b'\\' => match *b.get(self.i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    b'u' => {
                        let hex = b.get(self.i + 2..self.i + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.i += 6;
                    }
                    _ => return None,
                },
                _ => return None, // a control character
            }
        }
    }

    fn literal(&mut self, lit: &str) -> Option<()> {
        self.bytes()[self.i..]
            .starts_with(lit.as_bytes())
            .then(|| self.i += lit.len())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, and within the range
    /// of a 64-bit float (serde_json's readers refuse `1e999`; such input declines).
    fn number(&mut self) -> Option<()> {
        let b = self.bytes();
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => {
                digits(&mut i);
            }
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return None;
            }
        }
        let mut exponent = false;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            exponent = true;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
        }
        let text = self.text.get(self.i..i)?;
        if (exponent || text.len() > 300) && !text.parse::<f64>().ok()?.is_finite() {
            return None;
        }
        self.i = i;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::decode_both_ways;
    use super::{Bounds, Parsed};
    use crate::decode::{Decoded, Dialect, Limits};

    /// Small limits, so that generated records cross them.
    fn tight() -> Limits {
        Limits {
            max_depth: 3,
            max_string_bytes: 8,
            max_key_bytes: 7,
            max_events: 2,
            ..Limits::default()
        }
    }

    /// Whether both ways agree on `text`, as LaunchDarkly and as `auto`, under the
    /// default limits and tight ones; `Err` says how they differ.
    fn agreement(text: &str) -> Result<(), String> {
        agreement_under(text, &[Limits::default(), tight()])
    }

    fn agreement_under(text: &str, all_limits: &[Limits]) -> Result<(), String> {
        for dialect in [Dialect::Launchdarkly, Dialect::Auto] {
            for &limits in all_limits {
                let (fast, slow): (Decoded, Decoded) =
                    decode_both_ways(dialect, &limits, text.as_bytes());
                if (&fast.events, &fast.errors, fast.dialect)
                    != (&slow.events, &slow.errors, slow.dialect)
                {
                    return Err(format!(
                        "{dialect:?}, {limits:?}: {text}\n fast: {:?} {:?}\n slow: {:?} {:?}",
                        fast.events, fast.errors, slow.events, slow.errors
                    ));
                }
            }
        }
        Ok(())
    }

    fn agree(text: &str) {
        agreement(text).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Whether the fast path reads `text` whole within `bounds`.
    fn reads(text: &[u8], bounds: &Bounds) -> bool {
        super::parse_record(text, bounds, &mut Parsed::default(), &mut Vec::new()).is_some()
    }

    /// Each limit just met is read in one pass; just past it, the fast path declines
    /// and the limits scan names the limit.
    #[test]
    fn the_one_pass_stops_exactly_at_each_limit() {
        let l = tight();
        let within = Bounds::of(&l);
        let cases = [
            // (just within, just past)
            (
                r#"{"kind":"x","data":[[1]]}"#,
                r#"{"kind":"x","data":[[[1]]]}"#,
            ),
            (
                r#"{"kind":"x","data":"12345678"}"#,
                r#"{"kind":"x","data":"123456789"}"#,
            ),
            (
                r#"{"kind":"x","data":{"1234567":1}}"#,
                r#"{"kind":"x","data":{"12345678":1}}"#,
            ),
            (
                r#"{"kind":"x","key":"12345678"}"#,
                r#"{"kind":"x","key":"123456789"}"#,
            ),
            (
                r#"{"kind":"x","data":[1,2]}"#,
                r#"{"kind":"x","data":[1,2,3]}"#,
            ),
            (
                r#"[{"kind":"x"},{"kind":"y"}]"#,
                r#"[{"kind":"x"},{"kind":"y"},{"kind":"z"}]"#,
            ),
            (
                r#"[{"kind":"x","data":[1]}]"#,
                r#"[{"kind":"x","data":[[1]]}]"#,
            ),
            (
                r#"{"kind":"x","data":[{},[]]}"#,
                r#"{"kind":"x","data":[{"a":[]}]}"#,
            ),
        ];
        for (ok, past) in cases {
            assert!(reads(ok.as_bytes(), &within), "{ok}");
            assert!(!reads(past.as_bytes(), &within), "{past}");
            agree(ok);
            agree(past);
        }
        // Batch elements' own arrays are not batch levels (depth 3).
        let long = r#"[{"kind":"x","data":[1,2,3,4]}]"#;
        assert!(reads(long.as_bytes(), &Bounds { depth: 9, ..within }));
        agree(long);
    }

    /// The generator's records, the benchmarks' workload, take the one pass.
    #[test]
    fn generated_records_take_the_one_pass() {
        let mut g = crate::generate::Generator::new(crate::generate::GenConfig {
            dialect: crate::generate::GenDialect::Launchdarkly,
            ..Default::default()
        });
        let bounds = Bounds::of(&Limits::default());
        for _ in 0..100 {
            let record = g.next_record();
            assert!(reads(&record, &bounds));
            agree(std::str::from_utf8(&record).unwrap());
        }
    }

    #[test]
    fn common_shapes_take_the_fast_path_and_agree() {
        let text = r#"{"kind":"feature","creationDate":1767225600000,"key":"flag-1","version":3,"context":{"kind":"user","key":"u","name":"User 1"},"variation":2,"value":"v","default":"d","trackEvents":false}"#;
        assert!(super::parse(text.as_bytes(), &Bounds::NONE).is_some());
        agree(text);
    }

    #[test]
    fn unusual_shapes_decline_or_agree() {
        for text in [
            r#"{"kind":"fea\"ture"}"#,
            r#"{"kind":"feature","kind":"custom"}"#,
            r#"{"kind":"feature","creationDate":01}"#,
            r#"{"kind":"feature","creationDate":1.5e3,"key":"f","userKey":"u"}"#,
            r#"{"kind":"feature","creationDate":-1,"key":"f","userKey":"u"}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","extra":tru}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u"} x"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u",}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","value":[1,{"a":"]"}]}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","value":"a\"b"}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","trackEvents":truex}"#,
            r#"{"kind":"feature","creationDate":null,"key":"f","userKey":"u"}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","samplingRatio":-2}"#,
            r#"{"kind":"feature","creationDate":1,"key":"f","userKey":"u","metricValue":1e999}"#,
            r#" { "kind" : "custom" , "creationDate" : 7 , "key" : "k" , "userKey" : "u" } "#,
            "{\"kind\":\"feature\",\"key\":\"a\tb\"}",
            r#"{}"#,
            r#"{"#,
            r#"{"kind""#,
        ] {
            agree(text);
        }
    }

    /// A context whose head (`{"kind":"…","key":"…"`) the scan matches as literal text:
    /// the rest of it is still validated, and anything unusual in the head is read the
    /// general way, with the same result as serde's.
    #[test]
    fn contexts_read_by_their_head_agree() {
        for context in [
            r#"{"kind":"user","key":"u","name":tru}"#,
            r#"{"kind":"user","key":"u","a":{"b":"}"},"c":[1,{"d":2}]}"#,
            r#"{"kind":"user","key":"u" ,"name":"n" }"#,
            r#"{"kind":"user","key":"u"}}"#,
            r#"{"kind":"user","key":"u""#,
            r#"{"kind":"user","key":"u",}"#,
            r#"{"kind":"user","key":"u","name":"a"]"#,
            r#"{"kind":"user","key":5}"#,
            r#"{"kind":"us\"er","key":"u"}"#,
            r#"{"kind":"user","key":"u\u0041"}"#,
            r#"{"kind":"user","key":"u	v"}"#,
            r#"{"kind":"multi","key":"u","user":{"key":"a"}}"#,
            r#"{"kind":"multi","user":{"key":"a"},"org":{"key":"b"}}"#,
            r#"{"kind":"user","key":""}"#,
            r#"{"kind":"","key":"u"}"#,
            r#"{"kind":"us er","key":"u"}"#,
            r#"{"kind":"user","key":"u","key":"v"}"#,
            r#"{"kind":"user","key":"u","a":[[[[[1]]]]]}"#,
            r#"{"kind":"user","key":"0123456789012345678901234567890123456789"}"#,
            r#"{"key":"u","kind":"user"}"#,
            r#"{ "kind":"user","key":"u"}"#,
            // Members after the head read directly (strings, numbers), then by the
            // general walk from the first one that is anything else.
            r#"{"kind":"user","key":"u","name":"n","age":-1.5e2,"score":0}"#,
            r#"{"kind":"user","key":"u","name":"n","tags":["a"],"age":3}"#,
            r#"{"kind":"user","key":"u","age":3,"anonymous":true,"name":"n"}"#,
            r#"{"kind":"user","key":"u","name":"n","x":null}"#,
            r#"{"kind":"user","key":"u","name":"n\"q","age":3}"#,
            r#"{"kind":"user","key":"u","na\u006de":"n"}"#,
            r#"{"kind":"user","key":"u","name":"n","age":01}"#,
            r#"{"kind":"user","key":"u","name":"n","age":1.}"#,
            r#"{"kind":"user","key":"u","name":"n","age":-}"#,
            r#"{"kind":"user","key":"u","name":"n","age" :3}"#,
            r#"{"kind":"user","key":"u","name":"n","age": 3}"#,
            r#"{"kind":"user","key":"u","name":"n","age":3 }"#,
            r#"{"kind":"user","key":"u","name":"n",,"age":3}"#,
            r#"{"kind":"user","key":"u","name":"n","age"}"#,
            r#"{"kind":"user","key":"u","name":"n","age":"#,
            r#"{"kind":"user","key":"u",name:"n"}"#,
            r#"{"kind":"user","key":"u","name":"n"]"#,
        ] {
            agree(&format!(
                r#"{{"kind":"feature","creationDate":1,"key":"f","version":1,"variation":0,"context":{context},"value":true}}"#
            ));
        }
    }

    /// The members after a context's head, read directly, are held to the member-name
    /// and string limits as the general walk holds them: read just within each, and
    /// declined just past it (the limits scan then names the limit).
    #[test]
    fn context_members_read_directly_keep_the_limits() {
        // Room for the top level's names ("creationDate" is 12 bytes).
        let limits = Limits {
            max_key_bytes: 12,
            max_string_bytes: 16,
            ..Limits::default()
        };
        for (member, within) in [
            (r#""abcdefghijkl":"n""#, true),
            (r#""abcdefghijklm":"n""#, false),
            (r#""name":"0123456789abcdef""#, true),
            (r#""name":"0123456789abcdefg""#, false),
            (r#""n":1,"abcdefghijklm":2"#, false),
        ] {
            let text = format!(
                r#"{{"kind":"feature","creationDate":1,"key":"f","version":1,"variation":0,"context":{{"kind":"user","key":"u",{member}}},"value":true}}"#
            );
            assert_eq!(
                reads(text.as_bytes(), &Bounds::of(&limits)),
                within,
                "{text}"
            );
            agreement_under(&text, &[limits]).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// A JSON value of a random type, sometimes malformed.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<u32>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|f| f.to_string()),
            "[a-z\"\\\\ ]{0,6}".prop_map(|s| format!("\"{s}\"")),
            "[a-z]{1,5}".prop_map(|s| format!(r#"{{"kind":"user","key":"{s}"}}"#)),
            "[a-z]{1,5}".prop_map(|s| format!(r#"{{"user":"{s}"}}"#)),
            // Whitespace inside a value the fast path keeps whole (a context read by the
            // simple-context shortcut, short and long), which the kept text drops.
            ("[a-z]{1,5}", "[a-z ]{0,40}", prop::bool::ANY).prop_map(|(k, name, spaced)| {
                let sep = if spaced { " ,\n\t" } else { "," };
                format!(r#"{{"kind":"user","key":"{k}"{sep}"name":"{name}"}}"#)
            }),
            ("[a-z ]{0,60}", prop::bool::ANY).prop_map(|(text, spaced)| {
                let sep = if spaced { " , " } else { "," };
                format!(r#"["{text}"{sep}1{sep}{{"a" : [ true ]}}]"#)
            }),
            Just("[1,[2,{\"a\":\"]\"}]]".to_owned()),
            Just("{\"a\":".to_owned()),
            Just("01".to_owned()),
            Just("tru".to_owned()),
            // Grammar corners the validator must judge exactly as serde_json does.
            prop::sample::select(vec![
                r#""\u00e9\n\t\"""#,
                r#""\x""#,
                r#""\u12G4""#,
                r#""\u12""#,
                "1.",
                "-",
                "-0",
                "-01",
                "1e",
                "1e+",
                "1E-7",
                "0.5e10",
                ".5",
                "+1",
                "[1,]",
                "[,1]",
                "[]",
                "{}",
                "[ ]",
                "{ }",
                r#"{"a"1}"#,
                r#"{"a":1,}"#,
                r#"{1:2}"#,
                r#"[[[[[[1]]]]]]"#,
                r#"[[[1]]"#,
                r#"{"a":[1,{"b":null}],"c":"]}"}"#,
                "nul",
                "nulll",
                "true ",
                " false",
                r#"["a" "b"]"#,
                r#"{"a":1 "b":2}"#,
                "[1 2]",
                "\"tab\there\"",
                "1 2",
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,12}",
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("kind"),
            Just("creationDate"),
            Just("key"),
            Just("version"),
            Just("context"),
            Just("contextKeys"),
            Just("userKey"),
            Just("user"),
            Just("contextKind"),
            Just("variation"),
            Just("variationName"),
            Just("value"),
            Just("default"),
            Just("prereqOf"),
            Just("reason"),
            Just("trackEvents"),
            Just("samplingRatio"),
            Just("excludeFromSummaries"),
            Just("metricValue"),
            Just("data"),
            Just("event"),
            Just("other"),
            // Members only `auto`'s detection asks about.
            Just("type"),
            Just("events"),
            Just("source"),
            Just("metadata"),
            Just("properties"),
            Just("uuid"),
            Just("variations"),
            Just("a-member-name-past-the-tight-limit"),
            Just("ke\\u0079"),
        ]
        .prop_map(str::to_owned)
    }

    proptest! {
        /// The eight-bytes-at-a-time search finds what a byte-by-byte one finds.
        #[test]
        fn special_finds_the_first_special_byte(
            bytes in prop::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff, b'a'..=b'z'],
                0..40,
            ),
        ) {
            let naive = bytes.iter().position(|b| matches!(b, b'"' | b'\\') || *b < 0x20);
            prop_assert_eq!(super::special(&bytes), naive);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever the record (an object, or a batch of them), the one pass and the
        /// scan-then-serde way decode it identically, declared or detected, within the
        /// limits or past them.
        #[test]
        fn fast_and_serde_agree(
            kind in prop_oneof![Just("feature"), Just("custom"), Just("identify"), Just("debug"), Just("index")],
            with_kind in prop::bool::weighted(0.8),
            fields in prop::collection::vec((key(), value()), 0..8),
            spaced in any::<bool>(),
            batch in 0usize..4,
        ) {
            let sep = if spaced { " , " } else { "," };
            let mut text = if with_kind {
                format!(r#"{{"kind":"{kind}","creationDate":1000,"key":"f","userKey":"u""#)
            } else {
                r#"{"creationDate":1000"#.to_owned()
            };
            for (k, v) in &fields {
                text.push_str(sep);
                text.push_str(&format!("\"{k}\":{v}"));
            }
            text.push('}');
            if batch > 0 {
                text = format!("[{}]", vec![text; batch].join(sep));
            }
            prop_assert_eq!(agreement(&text), Ok(()));
        }
    }
}
