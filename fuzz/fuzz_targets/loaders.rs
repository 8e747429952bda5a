#![no_main]
//! See bearerd::fuzzing::loaders: the same check the property tests run.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bearerd::fuzzing::loaders(data));
