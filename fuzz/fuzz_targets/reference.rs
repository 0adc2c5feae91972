//! Fuzz target `reference`: see `hoist_fuzz::reference` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoist_fuzz::reference::check(data));
