//! What the engine hands to `emit`: closed summaries and per-event outputs, each with
//! enough provenance (input partition, offset, window) to derive a deterministic id.

use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;

use crate::event::{
    ContextEvent, Contexts, Custom, Evaluation, Event, EventTime, FlagVersion, Json, PassThrough,
    Scope, VariationRef,
};

/// An input partition: the unit that owns a watermark and open windows.
#[derive(Clone, Debug, Eq, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl PartialEq for PartitionId {
    /// Ids of one partition share their topic's `Arc`: compared by pointer first, the
    /// engine's per-event partition lookup needs no string comparison.
    fn eq(&self, other: &Self) -> bool {
        self.partition == other.partition
            && (Arc::ptr_eq(&self.topic, &other.topic) || self.topic == other.topic)
    }
}

impl std::hash::Hash for PartitionId {
    /// The text of the topic and the partition, as a derived `Hash` would: equal ids
    /// hash alike whether or not they share the `Arc`.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.topic.hash(state);
        self.partition.hash(state);
    }
}

impl PartitionId {
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Where one input event came from: its record, and its place within that record
/// (a batch record holds several events).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePos {
    pub partition: PartitionId,
    pub offset: i64,
    pub index: u32,
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.partition, self.offset, self.index)
    }
}

/// A tumbling event-time window, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub start: EventTime,
    pub end: EventTime,
}

/// One counter of a closed summary: evaluations of one flag that served one
/// (variation, version) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub variation: Option<VariationRef>,
    /// `None`: the flag was unknown (written as `"unknown": true`).
    pub version: Option<FlagVersion>,
    /// The first value seen for this counter.
    pub value: Json,
    pub count: u64,
}

/// Why a summary was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The watermark passed the window's end.
    Watermark,
    /// The partition was idle for `idle_timeout`.
    Idle,
    /// A memory cap was hit (open windows or distinct keys): closed before its time.
    Early,
    /// End of input (offline mode) or the partition was flushed (revoked, shutdown).
    Flush,
}

/// The roll-up of one flag over one window of one input partition: one summary event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedSummary {
    pub scope: Scope,
    pub flag_key: CompactString,
    pub window: Window,
    pub partition: PartitionId,
    /// min/max `creationDate` of the evaluations counted (not the window bounds).
    pub start_date: EventTime,
    pub end_date: EventTime,
    /// The first default seen for the flag in this window (`null` if none was).
    pub default: Json,
    /// Sorted by (variation, version): no variation first, then indexes, then names.
    pub counters: Vec<Counter>,
    /// Sorted, distinct, at most [`crate::decode::MAX_CONTEXT_KINDS`].
    pub context_kinds: Vec<CompactString>,
    /// Distinct kinds left out past that limit (not part of the summary's content).
    pub kinds_dropped: u32,
    /// An additive correction for a window already emitted (late events).
    pub late: bool,
    pub reason: CloseReason,
    /// 0 for the regular summary of a window; 1, 2, … for each further summary of the
    /// same (scope, flag, window, partition): late corrections and early closes. Part of
    /// the record id, so each is distinct and each is deterministic.
    pub part: u32,
    /// Lowest input offset counted in this summary (for replay bookkeeping).
    pub first_offset: i64,
    /// Index, within the record at `first_offset`, of the first event counted.
    pub first_index: u32,
    /// The partition's settings epoch: 0 until its window settings first change, then
    /// one more at each change. Part of the record id when above 0.
    pub epoch: u32,
}

/// Everything the engine emits, in the order it must be produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Summary(ClosedSummary),
    /// A full-fidelity feature event (`debug == false`) or a debug copy.
    Feature {
        event: Box<Evaluation>,
        debug: bool,
        pos: SourcePos,
    },
    /// The first sighting of a context (LaunchDarkly index event).
    Index {
        scope: Scope,
        context: Contexts,
        creation_date: EventTime,
        pos: SourcePos,
    },
    Identify {
        event: ContextEvent,
        pos: SourcePos,
    },
    Custom {
        event: Box<Custom>,
        pos: SourcePos,
    },
    /// An event of a kind flagtally does not interpret, unchanged.
    PassThrough {
        event: PassThrough,
        pos: SourcePos,
    },
    /// An event whose window was already emitted, under the `dead-letter` late policy.
    Late {
        event: Box<Event>,
        window: Window,
        pos: SourcePos,
    },
}

impl Output {
    /// The input position a per-event output came from (`None` for summaries).
    pub fn pos(&self) -> Option<&SourcePos> {
        match self {
            Self::Summary(_) => None,
            Self::Feature { pos, .. }
            | Self::Index { pos, .. }
            | Self::Identify { pos, .. }
            | Self::Custom { pos, .. }
            | Self::PassThrough { pos, .. }
            | Self::Late { pos, .. } => Some(pos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal whether or not the topic's `Arc` is shared, and hashed alike either way.
    #[test]
    fn partition_ids_compare_by_text_as_well_as_by_pointer() {
        use std::hash::BuildHasher;
        let a = PartitionId::new("events", 3);
        let shared = a.clone();
        let copied = PartitionId::new(String::from("events"), 3);
        assert!(!Arc::ptr_eq(&a.topic, &copied.topic));
        assert_eq!(a, shared);
        assert_eq!(a, copied);
        assert_ne!(a, PartitionId::new("events", 4));
        assert_ne!(a, PartitionId::new("other", 3));
        let h = rustc_hash::FxBuildHasher;
        assert_eq!(h.hash_one(&a), h.hash_one(&copied));
    }
}
