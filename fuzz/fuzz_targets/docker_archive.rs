//! Fuzz target `docker_archive`: see `hoist_fuzz::archive` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoist_fuzz::archive::check(data));
