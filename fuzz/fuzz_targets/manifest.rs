//! Fuzz target `manifest`: see `hoist_fuzz::manifest` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoist_fuzz::manifest::check(data));
