//! Fuzzes the launchdarkly decoder: any bytes must decode to events or errors, never a panic,
//! and every decoded event must go through the window engine and the emitter.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flagtally_fuzz_common::check(flagtally::decode::Dialect::Launchdarkly, data);
});

#[path = "../common.rs"]
mod flagtally_fuzz_common;
