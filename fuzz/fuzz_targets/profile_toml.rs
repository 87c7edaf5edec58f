#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imagegen::fuzzing::profile_toml(data));
