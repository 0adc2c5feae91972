//! `hoist sync`: many images from a registry (or a skopeo-sync YAML/TOML file naming
//! registries, repositories and tags) into a registry, a directory of `dir:` layouts, one
//! OCI layout, or the store.
//!
//! 1. [`config`]: the sync file, parsed strictly ([`SyncConfig`]).
//! 2. [`plan`](mod@plan): tags listed (`tags/list`, paged) where the file asks for all
//!    tags, a regex or a semver constraint; each image's destination named as skopeo sync
//!    names it: `DEST/` + the last path component of the source (`busybox:1.0`), or the
//!    whole source name with `scoped` (`registry.example.com/repo/busybox:1.0`).
//! 3. [`run`](mod@run): images `image_jobs` at a time. Before copying, the source's
//!    manifest digest is compared with the destination's (registry `HEAD`, the `dir:`
//!    layout's `manifest.json`, the OCI layout's `index.json` entry, the store's record);
//!    an image the destination holds is counted unchanged and not copied. Every copy is
//!    [`crate::copy::copy`]: resume (within and across runs), verification, mounts and
//!    skipping blobs the destination has all come from the engine. A blob that several
//!    images of one destination registry need is uploaded once: the engine claims each
//!    blob while it moves it ([`claims`]), so a copy that needs a blob another copy is
//!    putting waits for that blob alone, then finds it or mounts it from the repository
//!    that holds it. A failure of one image is recorded and the others go on.

pub mod claims;
pub mod config;
pub mod plan;
pub mod run;

use std::path::PathBuf;

pub use claims::{BlobClaims, DestinationClaims};
pub use config::{ConfigFormat, SyncConfig};
pub use plan::{DestKind, Plan, PlannedImage, SyncSource, SyncTarget, destination_for, plan};
pub use run::{ImageResult, Outcome, SyncOptions, SyncReport, run};

use crate::TransportError;

/// Errors of planning a sync (per-image copy failures are in the [`SyncReport`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The sync file is missing, too large, or invalid.
    #[error("sync file {}: {reason}", file.display())]
    Config {
        /// The file.
        file: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// A `--src docker` argument that names no repository or image.
    #[error("source {input:?}: {reason}")]
    BadSource {
        /// The argument.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// A destination that cannot hold an image's name.
    #[error("destination {input:?}: {reason}")]
    BadDestination {
        /// The argument.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// Listing, reading or copying failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}
