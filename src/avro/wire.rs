//! Avro's binary encoding, for the fixed schemas in `schemas/`.
//!
//! Writing and reading records field by field in schema order, instead of through
//! apache-avro's generic `Value` tree (a cloned field name per field, a box per union,
//! a hash map per record), is about ten times faster. The schemas' fingerprints are
//! pinned by a test, and tests check these codecs byte for byte against apache-avro.

use crate::event::{FlagVersion, VariationRef};

pub fn long(buf: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// A count, saturated to `i64::MAX` (Avro has no unsigned long).
pub fn count(buf: &mut Vec<u8>, n: u64) {
    long(buf, i64::try_from(n).unwrap_or(i64::MAX));
}

pub fn string(buf: &mut Vec<u8>, s: &str) {
    long(buf, s.len() as i64);
    buf.extend_from_slice(s.as_bytes());
}

pub fn boolean(buf: &mut Vec<u8>, b: bool) {
    buf.push(u8::from(b));
}

/// `["null", "string"]`.
pub fn opt_string(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => long(buf, 0),
        Some(s) => {
            long(buf, 1);
            string(buf, s);
        }
    }
}

/// `["null", "long"]`.
pub fn opt_long(buf: &mut Vec<u8>, n: Option<i64>) {
    match n {
        None => long(buf, 0),
        Some(n) => {
            long(buf, 1);
            long(buf, n);
        }
    }
}

/// `["null", "double"]`.
pub fn opt_double(buf: &mut Vec<u8>, n: Option<f64>) {
    match n {
        None => long(buf, 0),
        Some(n) => {
            long(buf, 1);
            buf.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// `["null", "boolean"]`.
pub fn opt_bool(buf: &mut Vec<u8>, b: Option<bool>) {
    match b {
        None => long(buf, 0),
        Some(b) => {
            long(buf, 1);
            boolean(buf, b);
        }
    }
}

/// A version as `["null", "long", "string"]`.
pub fn version(buf: &mut Vec<u8>, v: Option<&FlagVersion>) {
    match v {
        None => long(buf, 0),
        Some(FlagVersion::Int(n)) => {
            long(buf, 1);
            long(buf, *n);
        }
        Some(FlagVersion::Str(s)) => {
            long(buf, 2);
            string(buf, s);
        }
    }
}

/// A variation as one `["null", "long", "string"]` (index or name).
pub fn variation(buf: &mut Vec<u8>, v: Option<&VariationRef>) {
    match v {
        None => long(buf, 0),
        Some(VariationRef::Index(i)) => {
            long(buf, 1);
            long(buf, i64::from(*i));
        }
        Some(VariationRef::Name(s)) => {
            long(buf, 2);
            string(buf, s);
        }
    }
}

/// A variation as LaunchDarkly's two fields, `variation` (`["null", "long"]`, an
/// index) then `variationName` (`["null", "string"]`, a name).
pub fn variation_pair(buf: &mut Vec<u8>, v: Option<&VariationRef>) {
    match v {
        None => opt_long(buf, None),
        Some(VariationRef::Index(i)) => opt_long(buf, Some(i64::from(*i))),
        Some(VariationRef::Name(_)) => opt_long(buf, None),
    }
    match v {
        Some(VariationRef::Name(s)) => opt_string(buf, Some(s)),
        _ => opt_string(buf, None),
    }
}

/// An array: one block of `items` then the end marker.
pub fn array<T>(buf: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    if !items.is_empty() {
        long(buf, items.len() as i64);
        for i in items {
            item(buf, i);
        }
    }
    long(buf, 0);
}

/// Reads a datum; every error says what was wrong, the caller says where.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(datum: &'a [u8]) -> Self {
        Self { rest: datum }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err(format!(
                "the datum is truncated: {n} bytes needed, {} left",
                self.rest.len()
            ));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn long(&mut self) -> Result<i64, String> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let [b] = self.take(1)?.try_into().map_err(|_| String::new())?;
            z |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err("a variable-length integer longer than 10 bytes".into())
    }

    /// A non-negative long that fits the rest of the datum (a length or a count of
    /// items that take at least a byte each).
    fn len(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        let len = usize::try_from(n).map_err(|_| format!("negative length {n}"))?;
        if len > self.rest.len() {
            return Err(format!(
                "the datum is truncated: a length of {len}, {} bytes left",
                self.rest.len()
            ));
        }
        Ok(len)
    }

    /// A union branch or enum symbol index below `n`.
    pub fn index(&mut self, n: usize) -> Result<usize, String> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < n)
            .ok_or_else(|| format!("index {i} is not below {n}"))
    }

    pub fn str(&mut self) -> Result<&'a str, String> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).map_err(|e| format!("not UTF-8: {e}"))
    }

    pub fn boolean(&mut self) -> Result<bool, String> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            b => Err(format!("boolean byte 0x{:02x}", b[0])),
        }
    }

    pub fn double(&mut self) -> Result<f64, String> {
        let bytes: [u8; 8] = self.take(8)?.try_into().map_err(|_| String::new())?;
        Ok(f64::from_le_bytes(bytes))
    }

    pub fn opt<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.index(2)? {
            0 => Ok(None),
            _ => read(self).map(Some),
        }
    }

    pub fn opt_str(&mut self) -> Result<Option<&'a str>, String> {
        self.opt(Self::str)
    }

    pub fn opt_long(&mut self) -> Result<Option<i64>, String> {
        self.opt(Self::long)
    }

    /// `["null", "long", "string"]`: `Ok(Err(n))` for a long, `Ok(Ok(s))` for a
    /// string.
    pub fn long_or_str(&mut self) -> Result<Option<Result<&'a str, i64>>, String> {
        match self.index(3)? {
            0 => Ok(None),
            1 => self.long().map(|n| Some(Err(n))),
            _ => self.str().map(|s| Some(Ok(s))),
        }
    }

    /// The next block's item count; 0 ends the array. (A negative count is followed
    /// by the block's size in bytes, which is skipped.)
    pub fn block(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
        }
        let count =
            usize::try_from(n.unsigned_abs()).map_err(|_| format!("array block of {n} items"))?;
        if count > self.rest.len() {
            return Err(format!(
                "the datum is truncated: an array block of {count} items, {} bytes left",
                self.rest.len()
            ));
        }
        Ok(count)
    }

    /// Reads an array, calling `item` with each item's index.
    pub fn array<E>(
        &mut self,
        mut item: impl FnMut(&mut Self, usize) -> Result<(), E>,
        wrap: impl Fn(String) -> E,
    ) -> Result<(), E> {
        let mut i = 0;
        loop {
            let n = self.block().map_err(&wrap)?;
            if n == 0 {
                return Ok(());
            }
            for _ in 0..n {
                item(self, i)?;
                i += 1;
            }
        }
    }
}
