//! What can be wrong with an archive: every variant names the member it is about.

use hoist_types::{Digest, Mismatch, TypeError};
use hoist_unpack::UnpackError;

/// What is wrong with an archive. Every variant names the entry it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveProblem {
    /// The tar stream itself is invalid or unsafe (the parser's verdict).
    #[error("invalid tar")]
    Tar(#[from] UnpackError),
    /// A layer that cannot be read (bad compression, over the size limit).
    #[error("{entry}")]
    Layer {
        /// The path.
        entry: String,
        /// What is wrong.
        source: UnpackError,
    },
    /// More headers than [`MAX_ENTRIES`](crate::MAX_ENTRIES).
    #[error("more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// Two entries with one path.
    #[error("{entry}: duplicate entry")]
    Duplicate {
        /// The cleaned path.
        entry: String,
    },
    /// Bytes other than zeros after the end-of-archive marker.
    #[error("data after the end-of-archive marker at offset {offset}")]
    TrailingData {
        /// Where.
        offset: u64,
    },
    /// An entry the format needs is absent.
    #[error("{entry}: missing ({what})")]
    Missing {
        /// The path looked for.
        entry: String,
        /// What it should have been.
        what: &'static str,
    },
    /// An entry that must be a regular file is something else (a link, a directory, ...).
    #[error("{entry}: is a {found}, where a regular file ({what}) is expected")]
    NotRegular {
        /// The path.
        entry: String,
        /// What it is.
        found: &'static str,
        /// What it should have been.
        what: &'static str,
    },
    /// A document over its size limit.
    #[error("{entry}: {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The path.
        entry: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// JSON that does not parse into what the format says.
    #[error("{entry}: invalid JSON")]
    Json {
        /// The path.
        entry: String,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A document that parses but is invalid (a bad digest, media type, config ...).
    #[error("{entry}")]
    Document {
        /// The path.
        entry: String,
        /// What is wrong.
        source: TypeError,
    },
    /// A document that breaks a rule of the format.
    #[error("{entry}: {reason}")]
    Invalid {
        /// The path.
        entry: String,
        /// The rule broken.
        reason: &'static str,
    },
    /// Bytes whose digest is not the one the archive's documents declare.
    #[error("{entry}: digest {actual}, but {expected} was declared")]
    DigestMismatch {
        /// The path.
        entry: String,
        /// Declared.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// Bytes whose size is not the declared one.
    #[error("{entry}: {actual} bytes, but {expected} were declared")]
    SizeMismatch {
        /// The path.
        entry: String,
        /// Declared.
        expected: u64,
        /// Found.
        actual: u64,
    },
    /// A config whose diff ID count differs from the image's layer count.
    #[error("{entry}: the config lists {diff_ids} diff IDs but the image has {layers} layers")]
    LayerCount {
        /// The config's path.
        entry: String,
        /// Layers listed.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// No image matches the reference asked for.
    #[error("no image {wanted} in the archive (it holds: {available})")]
    NoSuchImage {
        /// What was asked for.
        wanted: String,
        /// What there is.
        available: String,
    },
    /// Several images and no reference to choose one.
    #[error("the archive holds {count} images; choose one with :REF or :@N")]
    Ambiguous {
        /// How many.
        count: usize,
    },
    /// An archive with no image.
    #[error("the archive holds no image")]
    Empty,
    /// Neither format's marker files are present.
    #[error(
        "neither a docker-archive (no manifest.json) nor an oci-archive (no index.json and oci-layout)"
    )]
    Unrecognised,
    /// A link (symbolic or hard) that cannot be followed.
    #[error("{entry}: link to {target:?} {reason}")]
    Link {
        /// The member asked for.
        entry: String,
        /// The target of the link that failed.
        target: String,
        /// Why.
        reason: &'static str,
    },
    /// The whole archive is compressed, and could not be decompressed.
    #[error("decompressing the archive")]
    Decompress {
        /// What went wrong (an unsupported compression, damage, the size limit).
        source: UnpackError,
    },
    /// More distinct blobs than one load handles.
    #[error("more than {limit} distinct layers in one archive")]
    TooManyLayers {
        /// The limit.
        limit: usize,
    },
}

impl ArchiveProblem {
    /// The digest or size mismatch this problem is, if it is one (an entry that is not
    /// what the archive's documents declare).
    pub fn mismatch(&self) -> Option<Mismatch> {
        match self {
            ArchiveProblem::DigestMismatch {
                expected, actual, ..
            } => Some(Mismatch::Digest {
                expected: expected.clone(),
                actual: actual.clone(),
            }),
            ArchiveProblem::SizeMismatch {
                expected, actual, ..
            } => Some(Mismatch::Size {
                expected: *expected,
                actual: *actual,
            }),
            ArchiveProblem::Tar(e)
            | ArchiveProblem::Layer { source: e, .. }
            | ArchiveProblem::Decompress { source: e } => e.mismatch(),
            ArchiveProblem::Document { source, .. } => source.mismatch(),
            _ => None,
        }
    }
}
