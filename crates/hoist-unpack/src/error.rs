//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use hoist_store::StoreError;
use hoist_types::{Compression, Digest, MediaType, Mismatch, TypeError};

/// Shows a tar path (raw bytes) in messages.
pub(crate) fn show(p: &[u8]) -> String {
    if p.is_empty() {
        "/".to_string()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

/// Everything that can go wrong while reading layers and writing root filesystems. Every
/// message names the layer digest, the entry path or the filesystem path concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// An error inside one layer of an image, with the layer's position and digest.
    #[error("layer {index} ({digest})")]
    Layer {
        /// 1-based position, base first.
        index: usize,
        /// The layer blob's digest.
        digest: Digest,
        /// What went wrong.
        #[source]
        source: Box<UnpackError>,
    },
    /// A filesystem operation on a host path (target, temp or cache directory) failed.
    #[error("cannot {op}{}", hoist_types::io_path(.path))]
    Io {
        /// What was being done (`"read"`, `"create directory"`, `"rename into"`, …).
        op: &'static str,
        /// The path concerned, when there is one.
        path: Option<PathBuf>,
        /// The OS error.
        source: io::Error,
    },
    /// A filesystem operation for one tar entry failed.
    #[error("entry {path:?}: cannot {action}")]
    EntryIo {
        /// The entry's path inside the image.
        path: String,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// An entry that hoist refuses to apply (and why).
    #[error("entry {path:?}: {reason}")]
    BadEntry {
        /// The entry's path inside the image, as written in the tar.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A parent directory of an entry cannot be used.
    #[error("entry {path:?}: parent {parent:?} {reason}")]
    BadParent {
        /// The entry's path.
        path: String,
        /// The parent that cannot be used.
        parent: String,
        /// Why.
        reason: &'static str,
    },
    /// The tar stream is malformed.
    #[error("invalid tar stream at byte {offset}: {reason}")]
    InvalidTar {
        /// Offset of the offending header in the uncompressed stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A limit on untrusted input was exceeded.
    #[error("{what} exceeds the limit of {limit}{}", entry.as_ref().map(|p| format!(" (entry {p:?})")).unwrap_or_default())]
    Limit {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: u64,
        /// The entry concerned, if any.
        entry: Option<String>,
    },
    /// Reading or decompressing the layer stream failed (truncated or corrupt data).
    #[error("cannot read the layer stream")]
    Stream {
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// The blob's content does not match its media type.
    #[error("media type {media_type} declares {declared:?} compression but the content is {found}")]
    CompressionMismatch {
        /// The declared media type.
        media_type: MediaType,
        /// The compression it declares.
        declared: Compression,
        /// What the magic bytes say.
        found: &'static str,
    },
    /// Content compressed in a way hoist does not decode (detected by its magic bytes).
    #[error(
        "{found} compression is not supported (hoist reads gzip, zstd, bzip2, xz and uncompressed tars)"
    )]
    UnsupportedCompression {
        /// The compression found.
        found: &'static str,
    },
    /// Not a layer media type hoist can read.
    #[error("unsupported layer media type {media_type}")]
    UnsupportedMediaType {
        /// The media type.
        media_type: MediaType,
    },
    /// The decompressed layer does not hash to the diff ID of the config.
    #[error("diff ID mismatch: the config says {expected}, the layer hashes to {actual}")]
    DiffIdMismatch {
        /// From the config.
        expected: Digest,
        /// Computed over the decompressed bytes.
        actual: Digest,
    },
    /// The image's manifest and config disagree on the number of layers.
    #[error("image {image} has {layers} layers but {diff_ids} diff IDs")]
    LayerCount {
        /// The image ID.
        image: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// A uid or gid with no mapping in `--uid-map`/`--gid-map`.
    #[error("{kind} {id} of entry {path:?} is outside the {kind} map")]
    Unmapped {
        /// `uid` or `gid`.
        kind: &'static str,
        /// The id.
        id: u32,
        /// The entry.
        path: String,
    },
    /// An id map that does not parse.
    #[error("invalid id map {input:?}: {reason} (want CONTAINER_ID:HOST_ID:SIZE)")]
    InvalidIdMap {
        /// The input.
        input: String,
        /// Why.
        reason: &'static str,
    },
    /// The target exists and is not an empty directory.
    #[error("{path} exists and is not an empty directory")]
    TargetNotEmpty {
        /// The target.
        path: PathBuf,
    },
    /// An option combination or input that hoist does not support.
    #[error("not supported: {what}")]
    Unsupported {
        /// What.
        what: &'static str,
    },
    /// The image's `User` names a user or group the image does not have.
    #[error("the image's User {spec:?} names {what} that is not in its {file}")]
    UnknownUser {
        /// The `User` value.
        spec: String,
        /// `a user` or `a group`.
        what: &'static str,
        /// `/etc/passwd` or `/etc/group`.
        file: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The image config is invalid.
    #[error("invalid image config {digest}")]
    Config {
        /// The config digest.
        digest: Digest,
        /// Why.
        #[source]
        source: TypeError,
    },
    /// Writing the flattened tar failed.
    #[error("cannot write the tar stream")]
    Output {
        /// The writer's error.
        #[source]
        source: io::Error,
    },
    /// A worker thread (decompression, a parallel pass) panicked: a bug in hoist or a
    /// library below it, reported as an error rather than taking the caller down.
    #[error("internal error: the {what} thread panicked")]
    WorkerPanicked {
        /// Which thread.
        what: &'static str,
    },
}

impl UnpackError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        UnpackError::Io {
            op: action,
            path: Some(path.into()),
            source,
        }
    }

    pub(crate) fn entry_io(
        path: &[u8],
        action: &'static str,
        source: impl Into<io::Error>,
    ) -> Self {
        UnpackError::EntryIo {
            path: show(path),
            action,
            source: source.into(),
        }
    }

    pub(crate) fn bad(path: &[u8], reason: &'static str) -> Self {
        UnpackError::BadEntry {
            path: show(path),
            reason,
        }
    }

    pub(crate) fn in_layer(self, index: usize, digest: &Digest) -> Self {
        UnpackError::Layer {
            index,
            digest: digest.clone(),
            source: Box::new(self),
        }
    }

    /// The digest mismatch this error is (through [`UnpackError::Layer`] wrappers), if it
    /// is one: a layer whose content is not its diff ID, or a store's mismatch.
    pub fn mismatch(&self) -> Option<Mismatch> {
        match self.root_cause() {
            UnpackError::DiffIdMismatch { expected, actual } => Some(Mismatch::Digest {
                expected: expected.clone(),
                actual: actual.clone(),
            }),
            UnpackError::Store(e) => e.mismatch(),
            _ => None,
        }
    }

    /// The innermost error (through [`UnpackError::Layer`] wrappers).
    pub fn root_cause(&self) -> &UnpackError {
        match self {
            UnpackError::Layer { source, .. } => source.root_cause(),
            e => e,
        }
    }
}

/// The io::Error payload of a stream over its size cap.
#[derive(Debug)]
pub(crate) struct LimitExceeded(pub u64);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decompressed layer exceeds {} bytes", self.0)
    }
}

impl std::error::Error for LimitExceeded {}

/// Maps an error from reading a [`LayerStream`](crate::LayerStream) to the crate error, recognising the size
/// cap.
pub fn stream_error(e: io::Error) -> UnpackError {
    if let Some(LimitExceeded(limit)) = e.get_ref().and_then(|x| x.downcast_ref::<LimitExceeded>())
    {
        return UnpackError::Limit {
            what: "decompressed layer size",
            limit: *limit,
            entry: None,
        };
    }
    UnpackError::Stream { source: e }
}
