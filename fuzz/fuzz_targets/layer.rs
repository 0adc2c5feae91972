//! Fuzz target `layer`: see `hoist_fuzz::layer` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoist_fuzz::layer::check(data));
