//! The LaunchDarkly fast path and the serde path must decode every input identically
//! (events and errors alike).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (fast, slow) = flagtally::decode::launchdarkly::decode_both_ways(data);
    assert_eq!(fast.events, slow.events);
    assert_eq!(fast.errors, slow.errors);
});
