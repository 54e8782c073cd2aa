//! A deterministic generator of realistic raw evaluation records in every dialect,
//! with the exact tally of what a correct processor must count. Used by `flagtally
//! summarize` tests, the benchmarks, and the load generator.
//!
//! The same seed always yields the same records. Values and defaults are functions of
//! (flag, variation, version), as with real flags, so "first value" rules cannot make
//! two correct runs disagree.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Which dialect the generator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GenDialect {
    Launchdarkly,
    Goff,
    Featbit,
    Native,
    /// A rotation of LaunchDarkly, go-feature-flag and FeatBit.
    Mixed,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    pub dialect: GenDialect,
    pub flags: u32,
    pub variations: u32,
    pub contexts: u32,
    /// Event time of the first record, in ms.
    pub start_ms: i64,
    /// Event-time step between records, in ms (time advances by `step_ms` per record).
    pub step_ms: i64,
    /// Records arrive up to this far out of order in event time.
    pub skew_ms: i64,
    /// One record in N is malformed (0: none).
    pub malformed_one_in: u64,
    /// One evaluation in N carries `trackEvents: true` (LaunchDarkly) (0: none tracked;
    /// the others say `trackEvents: false`).
    pub tracked_one_in: u64,
    pub seed: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            dialect: GenDialect::Launchdarkly,
            flags: 20,
            variations: 3,
            contexts: 1000,
            start_ms: 1_767_225_600_000,
            step_ms: 1,
            skew_ms: 0,
            malformed_one_in: 0,
            tracked_one_in: 10,
            seed: 1,
        }
    }
}

/// A counter key as it appears in LaunchDarkly summary JSON: the flag key, the
/// variation (`1` or `"name"`, empty for none) and the version (`11`, `"v3"`, or
/// `unknown`).
pub type TallyKey = (String, String, String);

/// Expected counts per counter key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub counters: BTreeMap<TallyKey, u64>,
    /// Evaluations that must be full-fidelity feature events.
    pub tracked: u64,
    pub malformed: u64,
    pub records: u64,
}

impl Tally {
    pub fn evaluations(&self) -> u64 {
        self.counters.values().sum()
    }

    /// Counts per (flag, variation), versions summed.
    pub fn by_flag_variation(&self) -> BTreeMap<(String, String), u64> {
        let mut out = BTreeMap::new();
        for ((flag, variation, _), n) in &self.counters {
            *out.entry((flag.clone(), variation.clone())).or_default() += n;
        }
        out
    }

    /// The tally as JSON: totals and one entry per counter.
    pub fn to_json(&self) -> serde_json::Value {
        let counters: Vec<_> = self
            .counters
            .iter()
            .map(|((flag, variation, version), n)| {
                serde_json::json!({"flag": flag, "variation": variation, "version": version, "count": n})
            })
            .collect();
        serde_json::json!({
            "records": self.records,
            "malformed": self.malformed,
            "tracked": self.tracked,
            "evaluations": self.evaluations(),
            "counters": counters,
        })
    }

    /// Adds the counters of LaunchDarkly summary JSON (one summary per line; other
    /// lines are ignored).
    pub fn add_summary_json(&mut self, line: &str) -> Result<(), serde_json::Error> {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let v = v.get("event").cloned().unwrap_or(v);
        if v.get("kind").and_then(|k| k.as_str()) != Some("summary") {
            return Ok(());
        }
        let Some(features) = v.get("features").and_then(|f| f.as_object()) else {
            return Ok(());
        };
        for (flag, body) in features {
            for c in body
                .get("counters")
                .and_then(|c| c.as_array())
                .into_iter()
                .flatten()
            {
                let variation = c
                    .get("variation")
                    .or_else(|| c.get("variationName"))
                    .map_or(String::new(), |v| v.to_string());
                let version = if c.get("unknown") == Some(&serde_json::Value::Bool(true)) {
                    "unknown".to_owned()
                } else {
                    c.get("version").map_or(String::new(), |v| v.to_string())
                };
                let count = c.get("count").and_then(|n| n.as_u64()).unwrap_or(0);
                *self
                    .counters
                    .entry((flag.clone(), variation, version))
                    .or_default() += count;
            }
        }
        Ok(())
    }
}

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Generates records one at a time, keeping the tally as it goes.
#[derive(Debug)]
pub struct Generator {
    cfg: GenConfig,
    rng: Rng,
    n: u64,
    tally: Tally,
}

const MALFORMED: [&str; 6] = [
    r#"{"kind":"feature","creationDate":"#,
    r#"{"kind":"feature","creationDate":"yesterday","key":"f","userKey":"u"}"#,
    r#"{"kind":"feature","creationDate":1,"userKey":"u"}"#,
    "not json at all",
    r#"[[{"kind":"feature"}]]"#,
    r#"{"uuid":"x","distinct_id":"e-f","env_id":"e","event":"FlagValue","properties":"{broken","timestamp":1}"#,
];

impl Generator {
    pub fn new(cfg: GenConfig) -> Self {
        let rng = Rng(cfg.seed);
        Self {
            cfg,
            rng,
            n: 0,
            tally: Tally::default(),
        }
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    pub fn into_tally(self) -> Tally {
        self.tally
    }

    /// The next record value.
    pub fn next_record(&mut self) -> Vec<u8> {
        let n = self.n;
        self.n += 1;
        self.tally.records += 1;
        let cfg = &self.cfg;
        if cfg.malformed_one_in > 0 && self.rng.below(cfg.malformed_one_in) == 0 {
            self.tally.malformed += 1;
            let i = self.rng.below(MALFORMED.len() as u64) as usize;
            return MALFORMED[i].as_bytes().to_vec();
        }
        let skew = if cfg.skew_ms > 0 {
            self.rng.below(cfg.skew_ms as u64 + 1) as i64
        } else {
            0
        };
        let t = cfg.start_ms + n as i64 * cfg.step_ms - skew;
        let flag = self.rng.below(u64::from(cfg.flags.max(1)));
        let variation = self.rng.below(u64::from(cfg.variations.max(1)));
        let context = self.rng.below(u64::from(cfg.contexts.max(1)));
        let tracked = cfg.tracked_one_in > 0 && self.rng.below(cfg.tracked_one_in) == 0;
        let version = 1 + flag % 5;
        let dialect = match cfg.dialect {
            GenDialect::Mixed => [
                GenDialect::Launchdarkly,
                GenDialect::Goff,
                GenDialect::Featbit,
            ][(n % 3) as usize],
            d => d,
        };
        let mut s = String::with_capacity(320);
        let key = match dialect {
            GenDialect::Launchdarkly => {
                let _ = write!(
                    s,
                    r#"{{"kind":"feature","creationDate":{t},"key":"flag-{flag}","version":{version},"context":{{"kind":"user","key":"user-{context}","name":"User {context}"}},"variation":{variation},"value":"value-{variation}","default":"fallback","trackEvents":{tracked}}}"#
                );
                if tracked {
                    self.tally.tracked += 1;
                }
                (
                    format!("flag-{flag}"),
                    variation.to_string(),
                    version.to_string(),
                )
            }
            GenDialect::Native => {
                let _ = write!(
                    s,
                    r#"{{"type":"evaluation","flagKey":"flag-{flag}","variation":{variation},"version":{version},"value":"value-{variation}","default":"fallback","context":{{"keys":[{{"kind":"user","key":"user-{context}"}}]}},"creationDate":{t},"trackEvents":{tracked}}}"#
                );
                if tracked {
                    self.tally.tracked += 1;
                }
                (
                    format!("flag-{flag}"),
                    variation.to_string(),
                    version.to_string(),
                )
            }
            GenDialect::Goff => {
                // go-feature-flag writes seconds; keep ms precision by writing ms, which
                // the decoder recognises by magnitude.
                let _ = write!(
                    s,
                    r#"{{"kind":"feature","contextKind":"user","userKey":"user-{context}","creationDate":{t},"key":"flag-{flag}","variation":"var-{variation}","value":"value-{variation}","default":false,"version":"v{version}","source":"SERVER","metadata":{{"environment":"production"}}}}"#
                );
                self.tally.tracked += 1;
                (
                    format!("flag-{flag}"),
                    format!("\"var-{variation}\""),
                    format!("\"v{version}\""),
                )
            }
            GenDialect::Featbit | GenDialect::Mixed => {
                let props = format!(
                    r#"{{"route":"/Variation/GetMultiOptionVariation","flagId":"env-flag-{flag}","envId":"env","accountId":"","projectId":"","featureFlagKey":"flag-{flag}","sendToExperiment":false,"userKeyId":"user-{context}","userName":"User {context}","variationId":"var-{variation}"}}"#
                );
                let props = serde_json::to_string(&props).unwrap_or_default();
                let _ = write!(
                    s,
                    r#"{{"uuid":"{n:08x}-0000-4000-8000-000000000000","distinct_id":"env-flag-{flag}","env_id":"env","event":"FlagValue","properties":{props},"timestamp":{}}}"#,
                    t * 1000
                );
                self.tally.tracked += 1;
                (
                    format!("flag-{flag}"),
                    format!("\"var-{variation}\""),
                    "unknown".to_owned(),
                )
            }
        };
        *self.tally.counters.entry(key).or_default() += 1;
        s.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_records() {
        let cfg = GenConfig {
            dialect: GenDialect::Mixed,
            malformed_one_in: 7,
            skew_ms: 100,
            ..GenConfig::default()
        };
        let mut a = Generator::new(cfg.clone());
        let mut b = Generator::new(cfg);
        for _ in 0..500 {
            assert_eq!(a.next_record(), b.next_record());
        }
        assert_eq!(a.tally(), b.tally());
        assert_eq!(a.tally().evaluations() + a.tally().malformed, 500);
    }
}
