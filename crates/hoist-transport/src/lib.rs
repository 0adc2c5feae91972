//! Moving images between places. For now: the pull engine, registry → local store, with
//! retries, resume within and across runs, parallel Range downloads of large blobs, one
//! download per blob across processes, and mirrors. The transports of containers/image
//! (`oci:`, archives, `dir:`) and the copy engine come next and will live here, one module
//! per transport.

mod blob;
pub mod inspect;
pub mod pull;
mod ranged;
mod schema1;
mod sources;

pub use blob::{FAST_LINK, MIN_PROGRESS};
pub use inspect::{InspectInfo, Inspected, inspect_local, inspect_remote};
pub use pull::{
    DEFAULT_JOBS, DEFAULT_RANGE_CONNECTIONS, DEFAULT_RANGE_PROBE, DEFAULT_RANGE_THRESHOLD,
    PullOptions, PullReport, Resolved, pull, resolve,
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
    /// No entry of an index fits the wanted platform.
    #[error("{reference}: no image for platform {wanted} (available: {available})")]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// What the index offers.
        available: String,
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
    #[error("config {digest}: {source}")]
    InvalidConfig {
        /// The config's digest.
        digest: Digest,
        /// What is wrong.
        source: hoist_types::TypeError,
    },
    /// A registry served a blob whose bytes are not the descriptor's (digest or size).
    #[error("{url}: {source}")]
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
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Something hoist does not do (yet), named.
    #[error("not supported: {what}")]
    Unsupported {
        /// What.
        what: String,
    },
    /// A worker task panicked or was cancelled.
    #[error("internal task failed: {what}")]
    Task {
        /// The join error.
        what: String,
    },
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
