//! Which evaluations become full-fidelity feature events, and which get debug copies
//! (docs/reference/events.md §1.2):
//!
//! ```text
//! producer says  = trackEvents || inExperiment      when the event carries trackEvents
//!                = true                             when it does not: its SDK already
//!                                                   chose it (SDKs send tracked ones only)
//! full event     = override(flag) applied to what the producer says
//! debug copy     = debugEventsUntilDate > creationDate
//! sampling       = only by an override's `sampling_ratio` N: keep 1 in N (0 = none),
//!                  chosen by a hash of the input position (deterministic under replay)
//! ```
//! A `samplingRatio` that arrives on an event was applied by its SDK already: it is
//! passed through, never applied again (as LaunchDarkly's Relay does), and multiplied
//! by an override's ratio when flagtally samples further.
//! LaunchDarkly never sends full events for unknown flags; its decoder marks those
//! evaluations `trackEvents: false`.
//!
//! Overrides match the flag key exactly or by glob (`checkout-*`); the first matching
//! override wins. Decisions are memoised per flag key; when the first override's glob
//! is `*` or `**` (it matches every key: a pipeline without a feature topic has one),
//! its decision is every flag's, with no lookup.

use compact_str::CompactString;
use globset::{Glob, GlobMatcher};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::output::SourcePos;
use crate::event::Evaluation;

/// What an override does to full-fidelity events of the flags it matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullEvents {
    /// Follow the producer (the default).
    #[default]
    Producer,
    /// Emit a full event for every evaluation.
    Always,
    /// Never emit full events (summaries only).
    Never,
}

/// One per-flag override.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// A flag key, or a glob over flag keys (`*`, `?`, `[ab]`).
    pub flags: String,
    #[serde(default)]
    pub full_events: FullEvents,
    /// Keep 1 in N full events of these flags (overrides the event's samplingRatio).
    #[serde(default)]
    pub sampling_ratio: Option<u64>,
}

/// Gating configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// Emit debug copies when `debugEventsUntilDate` says so.
    #[serde(default = "yes")]
    pub debug_events: bool,
}

fn yes() -> bool {
    true
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            overrides: Vec::new(),
            debug_events: true,
        }
    }
}

/// An invalid glob in an override.
#[derive(Debug, thiserror::Error)]
#[error("overrides[{index}].flags: {pattern:?} is not a valid glob: {source}")]
pub struct GlobError {
    pub index: usize,
    pub pattern: String,
    #[source]
    pub source: globset::Error,
}

#[derive(Clone, Copy, Debug)]
struct Decision {
    full: FullEvents,
    sampling_ratio: Option<u64>,
}

/// What the gate decided for one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub full: bool,
    pub debug: bool,
    /// The sampling ratio to record on the emitted event (when ≠ 1).
    pub sampling_ratio: Option<u64>,
    /// An override samples this flag's full events (keeps 1 in N, N ≠ 1).
    pub sampled: bool,
}

const MEMO_CAP: usize = 100_000;

#[derive(Debug)]
pub struct Gate {
    matchers: Vec<(GlobMatcher, Decision)>,
    /// The decision for every flag, when the first override matches every key.
    uniform: Option<Decision>,
    debug_events: bool,
    memo: FxHashMap<CompactString, Decision>,
}

impl Gate {
    pub fn new(config: &GateConfig) -> Result<Self, GlobError> {
        let mut matchers = Vec::with_capacity(config.overrides.len());
        for (index, o) in config.overrides.iter().enumerate() {
            let glob = Glob::new(&o.flags).map_err(|source| GlobError {
                index,
                pattern: o.flags.clone(),
                source,
            })?;
            matchers.push((
                glob.compile_matcher(),
                Decision {
                    full: o.full_events,
                    sampling_ratio: o.sampling_ratio,
                },
            ));
        }
        // `*` matches any text, separators included (globset's default), and so does
        // `**`: the first override decides for every flag.
        let uniform = config
            .overrides
            .first()
            .filter(|o| matches!(o.flags.as_str(), "*" | "**"))
            .and(matchers.first())
            .map(|(_, d)| *d);
        Ok(Self {
            matchers,
            uniform,
            debug_events: config.debug_events,
            memo: FxHashMap::default(),
        })
    }

    fn decision(&mut self, flag: &CompactString) -> Decision {
        const PRODUCER: Decision = Decision {
            full: FullEvents::Producer,
            sampling_ratio: None,
        };
        if self.matchers.is_empty() {
            return PRODUCER;
        }
        if let Some(d) = self.uniform {
            return d;
        }
        if let Some(d) = self.memo.get(flag.as_str()) {
            return *d;
        }
        let d = self
            .matchers
            .iter()
            .find(|(m, _)| m.is_match(flag.as_str()))
            .map_or(PRODUCER, |(_, d)| *d);
        if self.memo.len() >= MEMO_CAP {
            self.memo.clear();
        }
        self.memo.insert(flag.clone(), d);
        d
    }

    /// Decides for one evaluation read at `pos`.
    pub fn judge(&mut self, ev: &Evaluation, pos: &SourcePos) -> Verdict {
        let d = self.decision(&ev.flag_key);
        let sampled = d.sampling_ratio.is_some_and(|n| n != 1);
        let debug = self.debug_events
            && !ev.debug
            && ev
                .debug_events_until_date
                .is_some_and(|until| until > ev.creation_date);
        if ev.debug {
            // An input debug event is already a debug copy.
            return Verdict {
                full: false,
                debug: self.debug_events,
                sampling_ratio: ev.sampling_ratio,
                sampled,
            };
        }
        let ratio = match d.sampling_ratio {
            None => ev.sampling_ratio,
            Some(n) => Some(n.saturating_mul(ev.sampling_ratio.unwrap_or(1))),
        };
        let producer = match ev.track_events {
            Some(track) => track || ev.in_experiment,
            None => true,
        };
        let wanted = match d.full {
            FullEvents::Producer => producer,
            FullEvents::Always => true,
            FullEvents::Never => false,
        };
        let full = wanted && sampled_in(d.sampling_ratio, pos);
        Verdict {
            full,
            debug,
            sampling_ratio: ratio,
            sampled,
        }
    }
}

/// Keeps 1 in `ratio` events, chosen by a hash of the input position.
pub fn sampled_in(ratio: Option<u64>, pos: &SourcePos) -> bool {
    match ratio {
        None | Some(1) => true,
        Some(0) => false,
        Some(n) => {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(pos.partition.topic.as_bytes());
            h.update(&pos.partition.partition.to_le_bytes());
            h.update(&pos.offset.to_le_bytes());
            h.update(&pos.index.to_le_bytes());
            h.digest().is_multiple_of(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Contexts, EventTime};
    use crate::window::PartitionId;

    fn ev(flag: &str, track: Option<bool>) -> Evaluation {
        Evaluation {
            version: Some(crate::event::FlagVersion::Int(1)),
            track_events: track,
            ..Evaluation::new(
                flag,
                Contexts::single("user", "u"),
                EventTime::from_millis(100),
            )
        }
    }

    fn pos(offset: i64) -> SourcePos {
        SourcePos {
            partition: PartitionId::new("t", 0),
            offset,
            index: 0,
        }
    }

    #[test]
    fn producer_choice_experiments_and_overrides() {
        let mut gate = Gate::new(&GateConfig {
            overrides: vec![
                Override {
                    flags: "quiet-*".into(),
                    full_events: FullEvents::Never,
                    sampling_ratio: None,
                },
                Override {
                    flags: "loud".into(),
                    full_events: FullEvents::Always,
                    sampling_ratio: None,
                },
            ],
            debug_events: true,
        })
        .unwrap();
        assert!(gate.judge(&ev("f", None), &pos(0)).full);
        assert!(!gate.judge(&ev("f", Some(false)), &pos(0)).full);
        assert!(gate.judge(&ev("f", Some(true)), &pos(0)).full);
        let mut exp = ev("f", Some(false));
        exp.in_experiment = true;
        assert!(gate.judge(&exp, &pos(0)).full);
        assert!(!gate.judge(&ev("quiet-one", None), &pos(0)).full);
        assert!(!gate.judge(&ev("quiet-one", Some(true)), &pos(0)).full);
        assert!(gate.judge(&ev("loud", Some(false)), &pos(0)).full);
        let mut dbg = ev("f", Some(false));
        dbg.debug_events_until_date = Some(EventTime::from_millis(101));
        let v = gate.judge(&dbg, &pos(0));
        assert!(v.debug && !v.full);
        dbg.debug_events_until_date = Some(EventTime::from_millis(100));
        assert!(!gate.judge(&dbg, &pos(0)).debug);
        let mut sampled = ev("f", None);
        sampled.sampling_ratio = Some(0);
        let v = gate.judge(&sampled, &pos(0));
        assert!(
            v.full,
            "an SDK's ratio is passed through, not applied again"
        );
        assert_eq!(v.sampling_ratio, Some(0));
    }

    /// A first override of `*` or `**` decides every flag without a lookup, exactly as
    /// its glob would: the same verdicts as the general path for every kind of key.
    #[test]
    fn a_first_override_matching_every_flag_decides_alike_without_lookup() {
        let keys = [
            "", "f", "a/b", "/", "a//b", ".hidden", "ü-flag", "x y", "[ab]", "*", "\\",
        ];
        for pattern in ["*", "**"] {
            for (full_events, ratio) in [
                (FullEvents::Never, None),
                (FullEvents::Always, Some(3)),
                (FullEvents::Producer, Some(1)),
            ] {
                let config = GateConfig {
                    overrides: vec![
                        Override {
                            flags: pattern.into(),
                            full_events,
                            sampling_ratio: ratio,
                        },
                        Override {
                            flags: "f".into(),
                            full_events: FullEvents::Always,
                            sampling_ratio: None,
                        },
                    ],
                    debug_events: true,
                };
                let mut fast = Gate::new(&config).unwrap();
                assert!(fast.uniform.is_some(), "{pattern}");
                let mut general = Gate::new(&config).unwrap();
                general.uniform = None;
                for key in keys {
                    for track in [None, Some(false), Some(true)] {
                        for offset in 0..6 {
                            let e = ev(key, track);
                            assert_eq!(
                                fast.judge(&e, &pos(offset)),
                                general.judge(&e, &pos(offset)),
                                "{pattern} {key:?} {track:?} {offset}"
                            );
                        }
                    }
                }
                assert!(fast.memo.is_empty(), "no lookup, nothing memoised");
            }
        }
        // Only a first override decides for all: a later `*` is a fallback.
        let later = Gate::new(&GateConfig {
            overrides: vec![
                Override {
                    flags: "loud".into(),
                    full_events: FullEvents::Always,
                    sampling_ratio: None,
                },
                Override {
                    flags: "*".into(),
                    full_events: FullEvents::Never,
                    sampling_ratio: None,
                },
            ],
            debug_events: true,
        })
        .unwrap();
        assert!(later.uniform.is_none());
    }

    #[test]
    fn sampled_reports_an_overrides_ratio_other_than_one() {
        for (ratio, sampled) in [
            (None, false),
            (Some(1), false),
            (Some(0), true),
            (Some(4), true),
        ] {
            let mut gate = Gate::new(&GateConfig {
                overrides: vec![Override {
                    flags: "s-*".into(),
                    full_events: FullEvents::Always,
                    sampling_ratio: ratio,
                }],
                debug_events: true,
            })
            .unwrap();
            assert_eq!(
                gate.judge(&ev("s-1", None), &pos(0)).sampled,
                sampled,
                "{ratio:?}"
            );
            assert!(
                !gate.judge(&ev("other", None), &pos(0)).sampled,
                "{ratio:?}"
            );
        }
    }

    #[test]
    fn sampling_is_deterministic_and_near_one_in_n() {
        let kept = (0..30_000)
            .filter(|o| sampled_in(Some(3), &pos(*o)))
            .count();
        assert!((9_000..11_000).contains(&kept), "{kept}");
        let again = (0..30_000)
            .filter(|o| sampled_in(Some(3), &pos(*o)))
            .count();
        assert_eq!(kept, again);
        assert!(!sampled_in(Some(0), &pos(1)));
        assert!(sampled_in(Some(1), &pos(1)));
    }

    #[test]
    fn bad_glob_is_reported_with_its_place() {
        let err = Gate::new(&GateConfig {
            overrides: vec![Override {
                flags: "a[".into(),
                full_events: FullEvents::Always,
                sampling_ratio: None,
            }],
            debug_events: true,
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("overrides[0].flags"), "{err}");
    }
}
