#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imagegen::fuzzing::feed_index(data));
