//! Index-event dedupe, after LaunchDarkly's: an LRU of fully-qualified context keys
//! (capacity 1000 by default), cleared whole every `flush_interval` (5 minutes).
//!
//! Two deliberate differences, both for deterministic output under replay:
//! - one cache per input partition (not per process), so what one partition emits does
//!   not depend on how the consumer interleaved partitions;
//! - the interval is measured in event time: the cache is cleared when an event's time
//!   crosses into the next interval (aligned to the epoch), not by a wall-clock timer.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;

use compact_str::CompactString;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::event::Contexts;

#[derive(Debug)]
pub(crate) struct IndexCache {
    seen: KeySet,
    interval_ms: i64,
    epoch: i64,
}

impl IndexCache {
    pub fn new(capacity: NonZeroUsize, interval_ms: i64) -> Self {
        Self {
            seen: KeySet::new(capacity),
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
        self.seen.insert(key)
    }
}

/// A least-recently-used set of context keys with room for `capacity` of them: a slab
/// of entries chained most recent first, and a hash table of slab indices. Each entry
/// keeps its key's hash, so evicting the oldest entry to make room for a new key costs
/// no second hash and no key comparison (the general-purpose `lru` crate hashes the
/// new key twice and the evicted one once, per miss).
#[derive(Debug)]
struct KeySet {
    capacity: usize,
    table: HashTable<u32>,
    slots: Vec<Slot>,
    /// Most recently used slot, or [`NIL`].
    newest: u32,
    /// Least recently used slot, or [`NIL`].
    oldest: u32,
}

#[derive(Debug)]
struct Slot {
    key: CompactString,
    hash: u64,
    /// The next newer slot, or [`NIL`].
    newer: u32,
    /// The next older slot, or [`NIL`].
    older: u32,
}

const NIL: u32 = u32::MAX;

impl KeySet {
    fn new(capacity: NonZeroUsize) -> Self {
        Self {
            // Slab indices are u32 (NIL excepted): four billion contexts is past any
            // memory this cache could be given.
            capacity: capacity.get().min(NIL as usize),
            table: HashTable::new(),
            slots: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    fn clear(&mut self) {
        self.table.clear();
        self.slots.clear();
        self.newest = NIL;
        self.oldest = NIL;
    }

    /// Marks `key` as the most recently used; true if it was not in the set (it is
    /// now, the least recently used key making room for it when the set is full).
    fn insert(&mut self, key: &str) -> bool {
        let hash = FxBuildHasher.hash_one(key);
        let slots = &self.slots;
        if let Some(&i) = self
            .table
            .find(hash, |&i| slots[i as usize].key.as_str() == key)
        {
            self.touch(i);
            return false;
        }
        let i = if self.slots.len() < self.capacity {
            self.slots.push(Slot {
                key: CompactString::new(key),
                hash,
                newer: NIL,
                older: NIL,
            });
            (self.slots.len() - 1) as u32
        } else {
            let i = self.oldest;
            let old = self.slots[i as usize].hash;
            if let Ok(entry) = self.table.find_entry(old, |&j| j == i) {
                entry.remove();
            }
            self.unlink(i);
            let slot = &mut self.slots[i as usize];
            slot.key.clear();
            slot.key.push_str(key);
            slot.hash = hash;
            i
        };
        let slots = &self.slots;
        self.table
            .insert_unique(hash, i, |&j| slots[j as usize].hash);
        self.link_newest(i);
        true
    }

    fn touch(&mut self, i: u32) {
        if self.newest != i {
            self.unlink(i);
            self.link_newest(i);
        }
    }

    fn unlink(&mut self, i: u32) {
        let Slot { newer, older, .. } = self.slots[i as usize];
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
    }

    fn link_newest(&mut self, i: u32) {
        let previous = self.newest;
        let slot = &mut self.slots[i as usize];
        slot.newer = NIL;
        slot.older = previous;
        match previous {
            NIL => self.oldest = i,
            p => self.slots[p as usize].newer = i,
        }
        self.newest = i;
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

    proptest::proptest! {
        /// The set agrees with the plain definition of an LRU cache (a list, most
        /// recent first, cut to capacity) for any sequence of keys, capacities and
        /// clears; keys past the inline size and repeated keys included.
        #[test]
        fn key_set_is_an_lru_cache(
            capacity in 1usize..6,
            ops in proptest::collection::vec((0u8..12, proptest::bool::weighted(0.03)), 0..300),
        ) {
            let mut set = KeySet::new(NonZeroUsize::new(capacity).unwrap());
            let mut model: Vec<String> = Vec::new();
            for (k, clear) in ops {
                if clear {
                    set.clear();
                    model.clear();
                    continue;
                }
                let key = if k % 3 == 0 {
                    format!("a-context-key-longer-than-inline-{k}")
                } else {
                    format!("k{k}")
                };
                let new = match model.iter().position(|m| *m == key) {
                    Some(p) => {
                        model.remove(p);
                        false
                    }
                    None => true,
                };
                model.insert(0, key.clone());
                model.truncate(capacity);
                proptest::prop_assert_eq!(set.insert(&key), new, "key {}", key);
                proptest::prop_assert_eq!(set.table.len(), model.len());
            }
            // The chain, newest to oldest, is the model's list.
            let mut chain = Vec::new();
            let mut i = set.newest;
            while i != NIL {
                chain.push(set.slots[i as usize].key.to_string());
                i = set.slots[i as usize].older;
            }
            proptest::prop_assert_eq!(chain, model);
        }
    }
}
