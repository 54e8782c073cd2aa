//! Index-event dedupe, after LaunchDarkly's: an LRU of fully-qualified context keys
//! (capacity 1000 by default), cleared whole every `flush_interval` (5 minutes).
//!
//! Two deliberate differences, both for deterministic output under replay:
//! - one cache per input partition (not per process), so what one partition emits does
//!   not depend on how the consumer interleaved partitions;
//! - the interval is measured in event time: the cache is cleared when an event's time
//!   crosses into the next interval (aligned to the epoch), not by a wall-clock timer.

use std::num::NonZeroUsize;

use compact_str::CompactString;
use lru::LruCache;

use crate::event::Contexts;

#[derive(Debug)]
pub(crate) struct IndexCache {
    seen: LruCache<CompactString, (), rustc_hash::FxBuildHasher>,
    interval_ms: i64,
    epoch: i64,
}

impl IndexCache {
    pub fn new(capacity: NonZeroUsize, interval_ms: i64) -> Self {
        Self {
            seen: LruCache::with_hasher(capacity, rustc_hash::FxBuildHasher),
            interval_ms: interval_ms.max(1),
            epoch: i64::MIN,
        }
    }

    fn roll(&mut self, time_ms: i64) {
        let epoch = time_ms.div_euclid(self.interval_ms);
        if epoch > self.epoch {
            if self.epoch != i64::MIN {
                self.seen.clear();
            }
            self.epoch = epoch;
        }
    }

    /// Records `context` as seen at `time_ms`; true if it was not seen before (an index
    /// event is due). A single `user` context (the common case) is looked up by its
    /// key as it is, with no key built.
    pub fn first_sighting_of(&mut self, context: &Contexts, time_ms: i64) -> bool {
        match context.bare_key() {
            Some(key) => self.first_sighting(key, time_ms),
            None => self.first_sighting(&context.fully_qualified_key(), time_ms),
        }
    }

    /// Records `key` (a fully-qualified context key) as seen at `time_ms`; true if it
    /// was not seen before. A key seen before costs a lookup, no allocation.
    pub fn first_sighting(&mut self, key: &str, time_ms: i64) -> bool {
        self.roll(time_ms);
        if self.seen.get(key).is_some() {
            return false;
        }
        self.seen.put(key.into(), ());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupes_evicts_and_flushes() {
        let mut c = IndexCache::new(NonZeroUsize::new(2).unwrap(), 1000);
        assert!(c.first_sighting("a", 10));
        assert!(!c.first_sighting("a", 20));
        assert!(c.first_sighting("b", 30));
        assert!(c.first_sighting("c", 40)); // evicts a
        assert!(c.first_sighting("a", 50));
        assert!(!c.first_sighting("c", 999));
        assert!(c.first_sighting("c", 1000)); // next interval: cleared
        assert!(!c.first_sighting("c", 500)); // older times do not clear
    }

    #[test]
    fn contexts_are_keyed_by_their_fully_qualified_key() {
        let mut c = IndexCache::new(NonZeroUsize::new(10).unwrap(), 1000);
        // A long user key (a UUID, past the inline size) and its bare-key lookup.
        let user = Contexts::single("user", "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert!(c.first_sighting_of(&user, 10));
        assert!(!c.first_sighting_of(&user, 20));
        assert!(!c.first_sighting("0f8fad5b-d9cb-469f-a165-70867728950e", 30));
        // Other kinds and multi-contexts by `kind:key`, so a user and an org with the
        // same key are two contexts.
        let org = Contexts::single("org", "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert!(c.first_sighting_of(&org, 40));
        assert!(!c.first_sighting("org:0f8fad5b-d9cb-469f-a165-70867728950e", 50));
        let multi = Contexts::multi(&[("user", "u1"), ("org", "o:1")]);
        assert!(c.first_sighting_of(&multi, 60));
        assert!(!c.first_sighting(&multi.fully_qualified_key(), 70));
    }
}
