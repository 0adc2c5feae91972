//! Moving images between places: the transports of containers/image (`docker://`,
//! `oci:`, `oci-archive:`, `docker-archive:`, `dir:`, `hoist:`; one module each under
//! [`transports`]) and the one copy engine between them ([`copy`]), with format conversion
//! and recompression ([`convert`]) and schema 1 conversion. `hoist pull` ([`mod@pull`]: retries,
//! resume within and across runs, parallel Range downloads of large blobs, one download per
//! blob across processes, mirrors) is that engine from a registry into the store;
//! `hoist save`/`hoist load` and inspect sit beside it.
//!
//! A copy between two `oci:` layouts, without a network (the source layout is made with
//! [`hoist_store::Store`], itself an OCI layout):
//!
//! ```
//! use hoist_store::{ImageCommit, Store};
//! use hoist_transport::copy::{CopyOptions, copy};
//! use hoist_transport::transports::ImageRef;
//! use hoist_transport::transports::any::{AnyDestination, AnySource, OpenOptions};
//! use hoist_types::{Descriptor, Digest, MediaType, NoProgress, Reference};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let src_dir = dir.path().join("src");
//!
//! // An image in the source layout: one layer, a config, a manifest, named `demo:1`.
//! let store = Store::open(&src_dir)?;
//! let layer = b"layer bytes".as_slice();
//! let layer_digest = Digest::sha256_of(layer);
//! store.put_blob(&layer_digest, layer)?;
//! let config = format!(
//!     r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
//!     Digest::sha256_of(b"diff"),
//! );
//! let config_digest = Digest::sha256_of(config.as_bytes());
//! store.put_blob(&config_digest, config.as_bytes())?;
//! let manifest = format!(
//!     r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
//!     config.len(),
//!     layer.len(),
//! );
//! let manifest_digest = Digest::sha256_of(manifest.as_bytes());
//! store.put_blob(&manifest_digest, manifest.as_bytes())?;
//! store.commit_image(ImageCommit {
//!     name: Some(Reference::parse("example.com/demo:1")?),
//!     manifest: Descriptor::new(MediaType::OciManifest, manifest_digest.clone(), manifest.len() as u64),
//!     index: None,
//!     source: None,
//! })?;
//!
//! // Copy it to a second layout under another name.
//! let from = ImageRef::Oci { dir: src_dir, name: Some("example.com/demo:1".into()) };
//! let to = ImageRef::parse(&format!("oci:{}:demo", dir.path().join("dst").display()))?;
//! let open = OpenOptions::default();
//! let src = AnySource::open(&from, &open).await?;
//! let dst = AnyDestination::open(&to, &open).await?;
//! let report = copy(&src, dst, &CopyOptions::default(), &NoProgress).await?;
//!
//! // Nothing was changed, so the manifest is byte for byte the same: same digest.
//! assert_eq!(report.digest, Some(manifest_digest));
//! assert_eq!(report.blobs_copied, 2); // the config and the layer
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod convert;
pub mod copy;
pub mod fetch;
pub mod inspect;
mod options;
pub mod pull;
pub mod pull_for;
mod resolve;
mod schema1;
mod sources;
pub mod sync;
pub mod transports;
pub mod trust;
mod verifying;

pub use fetch::{FAST_LINK, MIN_PROGRESS};
pub use inspect::{InspectInfo, Inspected, inspect_local, inspect_remote, inspect_remote_raw};
pub use options::{
    DEFAULT_JOBS, DEFAULT_RANGE_CONNECTIONS, DEFAULT_RANGE_PROBE, DEFAULT_RANGE_THRESHOLD,
    PullOptions,
};
pub use pull::{PullReport, Resolved, pull, pull_from, resolve};
pub use pull_for::{
    PullBuildError, PullPolicy, PullTarget, TargetError, pull_and_build, pull_target,
};

use hoist_types::Digest;

/// Errors from moving images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The registry failed or refused.
    #[error(transparent)]
    Registry(#[from] hoist_registry::RegistryError),
    /// The local store failed or refused.
    #[error(transparent)]
    Store(#[from] hoist_store::StoreError),
    /// A document was invalid.
    #[error(transparent)]
    Types(#[from] hoist_types::TypeError),
    /// The trust policy refused the image (or could not be applied).
    #[error(transparent)]
    Trust(#[from] hoist_trust::TrustError),
    /// No entry of an index fits the wanted platform; lists every entry and why it was
    /// passed over.
    #[error("{reference}: {choice}")]
    NoMatchingPlatform {
        /// The reference (or archive and entry) of the index.
        reference: String,
        /// The wanted platform and every entry of the index.
        choice: Box<hoist_types::NoPlatformMatch>,
    },
    /// Indexes nest deeper than allowed.
    #[error("{reference}: indexes nest deeper than {depth} levels")]
    IndexTooDeep {
        /// The reference.
        reference: String,
        /// The limit.
        depth: usize,
    },
    /// An index refers to itself.
    #[error("index {digest} refers back to itself")]
    IndexCycle {
        /// The repeated digest.
        digest: Digest,
    },
    /// Content of the wrong size.
    #[error("{what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What.
        what: String,
        /// Declared.
        expected: u64,
        /// Seen.
        actual: u64,
    },
    /// An image config that cannot be parsed or does not fit its manifest.
    #[error("config {digest}")]
    InvalidConfig {
        /// The config's digest.
        digest: Digest,
        /// What is wrong.
        source: hoist_types::TypeError,
    },
    /// A registry served a blob whose bytes are not the descriptor's (digest or size).
    #[error("{url}")]
    BadBlob {
        /// Where the bytes came from.
        url: String,
        /// The verification failure (boxed: it is large and rare).
        source: Box<hoist_store::StoreError>,
    },
    /// A foreign (non-distributable) layer, which hoist does not fetch by default.
    #[error("layer {digest} is a foreign layer; fetching from its external urls is disabled")]
    ForeignLayer {
        /// The layer.
        digest: Digest,
    },
    /// A filesystem operation on a path failed.
    #[error("cannot {op}{}", hoist_types::io_path(.path))]
    Io {
        /// What was being done (`"read"`, `"create a temp file in"`, …).
        op: &'static str,
        /// The path concerned, when there is one.
        path: Option<std::path::PathBuf>,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading, decompressing, recompressing or handing on a blob's bytes failed.
    #[error("{what}")]
    Stream {
        /// What was being done, naming the blob, layer or entry.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A transport or place that cannot do what was asked: a `dir:` layout has no tags, a
    /// docker-archive holds one image per copy, the store keeps images only, a lookaside
    /// store that is not `file://`.
    #[error("{location}: {reason}")]
    NotSupportedBy {
        /// The transport or place (`transport:reference`, a path, the store).
        location: String,
        /// What it cannot do.
        reason: String,
    },
    /// A destination that holds only one manifest format or layer compression was asked
    /// for another.
    #[error("{location} holds only {accepts} (asked for {asked})")]
    FormatNotAccepted {
        /// The destination.
        location: String,
        /// What it holds (`"Docker schema 2 manifests"`, `"gzip layers"`).
        accepts: String,
        /// What was asked for.
        asked: String,
    },
    /// A manifest that is not an image manifest where an image is needed (an artifact, a
    /// signature or referrer of another shape).
    #[error("{location}: manifest {digest} is not an image manifest ({found})")]
    NotAnImage {
        /// Where it was read or is going (`transport:reference`, "the store").
        location: String,
        /// The manifest.
        digest: Digest,
        /// What it is instead (its media type, artifact type).
        found: String,
    },
    /// A place or an index that holds no image at all (an empty archive, an index with no
    /// image manifest), or a save given no image.
    #[error("{location} holds no image")]
    NoImage {
        /// The archive, index or place.
        location: String,
    },
    /// A manifest format or compression conversion hoist refuses, because the target
    /// format cannot express what the manifest declares, or the conversion is not done.
    #[error("manifest {digest}: {reason}")]
    ConversionRefused {
        /// The manifest (or index) to convert.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// Docker schema 2 has no media type for a zstd layer.
    #[error("{}Docker schema 2 has no zstd layer type", .manifest.as_ref().map(|d| format!("manifest {d}: ")).unwrap_or_default())]
    ZstdInDockerSchema2 {
        /// The manifest, when known.
        manifest: Option<Digest>,
    },
    /// An index nests another index, which the copy engine does not follow.
    #[error("index {index}: nested index {nested} is not copied")]
    NestedIndex {
        /// The outer index.
        index: Digest,
        /// The nested one.
        nested: Digest,
    },
    /// An index that lists more manifests than allowed.
    #[error("index {digest} lists {count} manifests (at most {limit})")]
    IndexTooLarge {
        /// The index.
        digest: Digest,
        /// Its manifests.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A destination that keeps no signatures of the kind to carry.
    #[error("{location} keeps no {kind} signatures ({count} to carry)")]
    SignaturesNotKept {
        /// The destination.
        location: String,
        /// `"simple-signing"`.
        kind: &'static str,
        /// How many there were.
        count: usize,
    },
    /// Signing the written image failed (the signer, its key, or the signature's
    /// destination).
    #[error("signing {digest}: {reason}")]
    Signing {
        /// The signed manifest.
        digest: Digest,
        /// What failed.
        reason: String,
    },
    /// No source could serve a blob or manifest (none was configured, or every one was
    /// passed over).
    #[error("{what}: no source to fetch it from")]
    NoSource {
        /// What was wanted (`blob sha256:…`).
        what: String,
    },
    /// A destination's calls came in an order it cannot follow (a commit before any
    /// manifest): a bug of the caller.
    #[error("{location}: {what}")]
    OutOfOrder {
        /// The destination.
        location: String,
        /// What came out of order.
        what: &'static str,
    },
    /// A `transport:reference` string that does not parse.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidImageRef {
        /// The string given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes that are not the digest they were asked for.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was read, and from where.
        what: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// A blob a manifest names is absent from a source.
    #[error("blob {digest} not found in {location}")]
    BlobNotFound {
        /// The blob.
        digest: Digest,
        /// Where it was looked for (a path or `transport:reference`).
        location: String,
    },
    /// A layout directory (`oci:`, `dir:`) whose content is invalid or unsafe.
    #[error("{}: {reason}", path.display())]
    InvalidLayout {
        /// The file or directory at fault.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
        /// The parser's or reader's error, when one is behind the reason.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Signatures were asked to be kept, but the copy changes the manifest they sign.
    #[error(
        "cannot preserve the signatures of {digest}: the copy changes the manifest (format or compression conversion)"
    )]
    SignaturesWouldBreak {
        /// The signed manifest.
        digest: Digest,
    },
    /// An archive (`docker-archive:`, `oci-archive:`) that is malformed, unsafe or over a
    /// limit.
    #[error("{archive}")]
    BadArchive {
        /// The archive's path.
        archive: String,
        /// What is wrong, naming the entry (boxed: it is large and rare).
        #[source]
        problem: Box<transports::ArchiveProblem>,
    },
    /// A worker task panicked or was cancelled.
    #[error("internal task failed: {what}")]
    Task {
        /// The join error.
        what: String,
    },
}

impl TransportError {
    /// The digest or size mismatch this error is, or wraps, if it is one: content from a
    /// registry, a layout, an archive or the store that is not what was declared.
    pub fn mismatch(&self) -> Option<hoist_types::Mismatch> {
        use hoist_types::Mismatch;
        match self {
            TransportError::SizeMismatch {
                expected, actual, ..
            } => Some(Mismatch::Size {
                expected: *expected,
                actual: *actual,
            }),
            TransportError::DigestMismatch {
                expected, actual, ..
            } => Some(Mismatch::Digest {
                expected: expected.clone(),
                actual: actual.clone(),
            }),
            TransportError::Registry(e) => e.mismatch(),
            TransportError::Store(e) => e.mismatch(),
            TransportError::Types(e) | TransportError::InvalidConfig { source: e, .. } => {
                e.mismatch()
            }
            TransportError::BadBlob { source, .. } => source.mismatch(),
            TransportError::BadArchive { problem, .. } => problem.mismatch(),
            _ => None,
        }
    }
}

/// Run blocking work (store I/O, hashing) off the runtime's workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TransportError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TransportError::Task {
            what: e.to_string(),
        })
}
