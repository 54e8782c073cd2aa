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

    /// Records `key` as seen at `time_ms`; true if it was not seen before (an index
    /// event is due).
    pub fn first_sighting(&mut self, key: CompactString, time_ms: i64) -> bool {
        self.roll(time_ms);
        self.seen.put(key, ()).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupes_evicts_and_flushes() {
        let mut c = IndexCache::new(NonZeroUsize::new(2).unwrap(), 1000);
        assert!(c.first_sighting("a".into(), 10));
        assert!(!c.first_sighting("a".into(), 20));
        assert!(c.first_sighting("b".into(), 30));
        assert!(c.first_sighting("c".into(), 40)); // evicts a
        assert!(c.first_sighting("a".into(), 50));
        assert!(!c.first_sighting("c".into(), 999));
        assert!(c.first_sighting("c".into(), 1000)); // next interval: cleared
        assert!(!c.first_sighting("c".into(), 500)); // older times do not clear
    }
}
