//! Fuzz target `trust`: see `hoist_fuzz::trust` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoist_fuzz::trust::check(data));
