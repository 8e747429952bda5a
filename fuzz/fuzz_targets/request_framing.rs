#![no_main]
//! See bearerd::fuzzing::request_framing: the same check the property tests run.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bearerd::fuzzing::request_framing(data));
