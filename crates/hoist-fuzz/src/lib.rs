//! The checks behind hoist's fuzz targets.
//!
//! Each target in `fuzz/fuzz_targets/` is one line that calls a check here, and
//! `tests/replay.rs` runs the same checks over every file in `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` under plain `cargo test` (stable Rust, no cargo-fuzz). A
//! crash the fuzzer finds (`fuzz/artifacts/<target>/crash-*`) becomes a regression test by
//! copying the file into `fuzz/regressions/<target>/`.
//!
//! A check panics when an invariant breaks; "does not panic" is only the floor. Each
//! module says what it asserts:
//! - [`reference`](mod@reference): digests, references, repository names, platforms and media types
//!   round-trip through their string forms (a reference's `to_string()` and its familiar
//!   form parse back to the same value);
//! - [`manifest`]: manifest/index classification keeps the size limit, never accepts both
//!   `manifests` and `layers`, keeps the declared media type, hashes the exact bytes,
//!   round-trips, and schema 1 converts to a manifest and config that hoist reads back;
//! - [`config`]: image configs, chain IDs by Docker's definition, the layer-count check;
//! - [`layer`]: arbitrary bytes as a plain, gzip or zstd layer through the one tar parser
//!   and applied into a fresh root: a sentinel directory beside the root never changes,
//!   every entry the parser hands out is clean, and the applier agrees with the parser;
//! - [`archive`]: arbitrary bytes as a `docker save` archive through `hoist-transport`'s
//!   reader: image IDs, layer/diff ID counts, clean entry names inside the archive, tags
//!   that select their image, layers that match their diff IDs and sizes, and a
//!   synthesised manifest that reads back;
//! - [`trust`](mod@trust): policy files, signature payloads, registries.d files, OpenPGP
//!   messages and cosign signatures, as read from untrusted stores.
//!
//! Nothing but `fuzz/` and this crate's tests depend on it, so fuzz code never reaches a
//! release build.

pub mod archive;
pub mod config;
pub mod layer;
pub mod manifest;
pub mod reference;
pub mod scratch;
pub mod trust;

/// A fuzz target: its name (the directory under `fuzz/corpus/`) and its check.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// Runs one input; panics when an invariant breaks.
    pub check: fn(&[u8]),
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "reference",
        check: reference::check,
    },
    Target {
        name: "manifest",
        check: manifest::check,
    },
    Target {
        name: "config",
        check: config::check,
    },
    Target {
        name: "layer",
        check: layer::check,
    },
    Target {
        name: "docker_archive",
        check: archive::check,
    },
    Target {
        name: "trust",
        check: trust::check,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
