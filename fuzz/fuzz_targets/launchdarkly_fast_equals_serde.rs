//! The decode stage with the LaunchDarkly fast path (one pass, limits checked as it
//! reads) and without it (the limits scan, then serde) must decode every input
//! identically (events and errors alike), as LaunchDarkly and as `auto`, under the
//! default limits and under small ones the input can cross.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use flagtally::decode::{Dialect, Limits, launchdarkly::decode_both_ways};
    let tight = Limits {
        max_depth: 3,
        max_string_bytes: 8,
        max_key_bytes: 7,
        max_events: 2,
        ..Limits::default()
    };
    for dialect in [Dialect::Launchdarkly, Dialect::Auto] {
        for limits in [&Limits::default(), &tight] {
            let (fast, slow) = decode_both_ways(dialect, limits, data);
            assert_eq!(fast.events, slow.events);
            assert_eq!(fast.errors, slow.errors);
            assert_eq!(fast.dialect, slow.dialect);
        }
    }
});
