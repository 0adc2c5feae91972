//! The store's one error type.

use std::io;
use std::path::PathBuf;

use hoist_types::{Digest, MediaType, Mismatch, Reference, TypeError};

/// Everything that can go wrong in the store. Every message names the path, digest or
/// reference concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("cannot {op}{}", hoist_types::io_path(.path))]
    Io {
        /// What was being done (`"read"`, `"create directory"`, `"rename into"`, …).
        op: &'static str,
        /// The path concerned, when there is one.
        path: Option<PathBuf>,
        /// The OS error.
        source: io::Error,
    },
    /// The store directory cannot be written (read-only filesystem or permissions).
    #[error(
        "cannot write {path} (the store needs write access; choose a store directory you can write to)"
    )]
    NotWritable {
        /// The path that could not be written.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The store was opened read-only and a change was asked for.
    #[error(
        "the store at {path} is read-only for this process (no write access): this command needs to change it"
    )]
    ReadOnly {
        /// The store's root.
        path: PathBuf,
    },
    /// The filesystem holding the store is full (or a quota is exhausted).
    #[error(
        "no space left to {action} {path} (free space on the store's filesystem and try again)"
    )]
    NoSpace {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The directory is not empty and holds neither an OCI layout nor a hoist store.
    #[error(
        "{path} is not empty and is neither an OCI image layout nor a hoist store; refusing to use it as a store"
    )]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },
    /// The store was written by a newer (or unknown) version of hoist.
    #[error(
        "store layout version {found:?} in {path} is not supported (this hoist supports version {supported})"
    )]
    UnsupportedVersion {
        /// The version file.
        path: PathBuf,
        /// What it says.
        found: String,
        /// The version this code reads and writes.
        supported: &'static str,
    },
    /// A metadata file (index.json, an image record, oci-layout) is not valid.
    #[error("invalid {what} in {path}: {reason}")]
    Corrupt {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it is invalid.
        reason: String,
    },
    /// A blob is not in the store.
    #[error("blob {digest} is not in the store (looked for {path})")]
    BlobNotFound {
        /// The digest.
        digest: Digest,
        /// Where it would be.
        path: PathBuf,
    },
    /// The pull a [`crate::Store::following`] handle followed failed: what it was reading
    /// or building from its downloads must not be published.
    #[error("the pull being followed failed: {reason}")]
    PullFailed {
        /// The pull's error, as text (the pull reports it in full).
        reason: String,
    },
    /// Written content does not hash to the expected digest; nothing was stored.
    #[error("digest mismatch writing blob {expected}: content hashes to {actual}")]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of what was written.
        actual: Digest,
    },
    /// Written content does not have the expected size; nothing was stored.
    #[error("size mismatch writing blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The expected size.
        expected: u64,
        /// The size written (or found).
        actual: u64,
    },
    /// A stored blob no longer hashes to its name: the store is damaged.
    #[error("stored blob {path} is corrupt: it hashes to {actual}, not {expected}")]
    CorruptBlob {
        /// The blob file.
        path: PathBuf,
        /// Its name.
        expected: Digest,
        /// What its content hashes to.
        actual: Digest,
    },
    /// A blob is larger than the caller's limit.
    #[error("blob {digest} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// The limit.
        limit: u64,
    },
    /// A stored manifest, index or config cannot be parsed.
    #[error("invalid {what} {digest}")]
    InvalidDocument {
        /// `"manifest"`, `"index"` or `"config"`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The parser's error.
        source: TypeError,
    },
    /// The manifest given to `commit_image` is not an image manifest.
    #[error("manifest {digest} has media type {media_type}, which is not an image manifest")]
    NotAnImageManifest {
        /// The blob.
        digest: Digest,
        /// Its media type.
        media_type: MediaType,
    },
    /// The index given to `commit_image` is not an index.
    #[error("index {digest} has media type {media_type}, which is not an image index")]
    NotAnIndex {
        /// The blob.
        digest: Digest,
        /// Its media type.
        media_type: MediaType,
    },
    /// The index given to `commit_image` does not list the manifest.
    #[error("index {index} does not list manifest {manifest}")]
    IndexMissingManifest {
        /// The index.
        index: Digest,
        /// The manifest.
        manifest: Digest,
    },
    /// The manifest has a different number of layers than its config has diff IDs.
    #[error(
        "manifest {manifest} has {layers} layers but config {config} lists {diff_ids} diff IDs"
    )]
    LayerCountMismatch {
        /// The manifest.
        manifest: Digest,
        /// The config.
        config: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// No image matches a name, ID or prefix.
    #[error("no image {query:?} in the store")]
    ImageNotFound {
        /// What was asked for.
        query: String,
    },
    /// No image has this name.
    #[error("no image is named {name} in the store")]
    NameNotFound {
        /// The name.
        name: Reference,
    },
    /// An ID prefix matches several images.
    #[error("image ID prefix {prefix:?} is ambiguous: it matches {}", list(.candidates))]
    AmbiguousPrefix {
        /// The prefix.
        prefix: String,
        /// The matching image IDs.
        candidates: Vec<Digest>,
    },
    /// An ID prefix shorter than the minimum (4 hex characters).
    #[error("image ID prefix {prefix:?} is too short: give at least {min} hex characters")]
    PrefixTooShort {
        /// The prefix.
        prefix: String,
        /// The minimum length.
        min: usize,
    },
    /// A string that is neither a reference, a digest nor an ID prefix.
    #[error("{input:?} is neither an image reference nor an image ID")]
    InvalidQuery {
        /// The input.
        input: String,
        /// Why it is not a reference.
        source: TypeError,
    },
    /// A name given to tag or untag carries a digest instead of a tag.
    #[error("{reference} is not a tag name (it has a digest or no tag)")]
    NotATag {
        /// The reference.
        reference: Reference,
    },
    /// Removing an image by ID when several names point at it needs force.
    #[error(
        "image {id} is referenced by several names ({}); remove them by name, or force the removal",
        list(.names)
    )]
    MultipleNames {
        /// The image.
        id: Digest,
        /// Its names.
        names: Vec<Reference>,
    },
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl StoreError {
    /// An I/O error, reported as [`StoreError::NotWritable`] when it is a permission or
    /// read-only-filesystem error.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                StoreError::NotWritable { path, source }
            }
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::NoSpace {
                action,
                path,
                source,
            },
            _ => StoreError::Io {
                op: action,
                path: Some(path),
                source,
            },
        }
    }

    /// The digest or size mismatch this error is, if it is one (a blob written or found
    /// with other bytes than its name or descriptor says).
    pub fn mismatch(&self) -> Option<Mismatch> {
        match self {
            StoreError::DigestMismatch { expected, actual }
            | StoreError::CorruptBlob {
                expected, actual, ..
            } => Some(Mismatch::Digest {
                expected: expected.clone(),
                actual: actual.clone(),
            }),
            StoreError::SizeMismatch {
                expected, actual, ..
            } => Some(Mismatch::Size {
                expected: *expected,
                actual: *actual,
            }),
            StoreError::InvalidDocument { source, .. }
            | StoreError::InvalidQuery { source, .. } => source.mismatch(),
            _ => None,
        }
    }

    /// An I/O error reported verbatim (for reads, where "not writable" would mislead).
    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            op: "read",
            path: Some(path.into()),
            source,
        }
    }
}
