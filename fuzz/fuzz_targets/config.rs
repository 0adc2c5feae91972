//! Fuzz target `config`: see `hoist_fuzz::config` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoist_fuzz::config::check(data));
