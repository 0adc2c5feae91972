//! Progress reporting: libraries emit events; front ends decide how to show them.
//!
//! Libraries never print. Long operations take a `&dyn Progress` and call
//! [`Progress::event`]; the default implementation ignores everything, so
//! [`NoProgress`] costs nothing.

use crate::Digest;

/// What kind of content a blob event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// A manifest or index.
    Manifest,
    /// An image config.
    Config,
    /// A layer.
    Layer,
}

impl BlobKind {
    /// A lower-case name for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobKind::Manifest => "manifest",
            BlobKind::Config => "config",
            BlobKind::Layer => "layer",
        }
    }
}

/// One progress event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ProgressEvent<'a> {
    /// A reference was resolved to a manifest; `total_bytes` is what the layers and
    /// config weigh, `layers` their count.
    Resolved {
        /// The reference as given.
        reference: &'a str,
        /// The manifest digest.
        digest: &'a Digest,
        /// Number of layers.
        layers: usize,
        /// Sum of layer and config sizes.
        total_bytes: u64,
    },
    /// A blob transfer starts.
    BlobStart {
        /// Digest.
        digest: &'a Digest,
        /// Expected size.
        size: u64,
        /// Kind.
        kind: BlobKind,
        /// Where it comes from (URL origin or path).
        endpoint: &'a str,
    },
    /// Bytes of a blob were received; `done` is the running total.
    BlobProgress {
        /// Digest.
        digest: &'a Digest,
        /// Bytes so far.
        done: u64,
    },
    /// A blob is complete and verified, or was already present (`skipped`).
    BlobDone {
        /// Digest.
        digest: &'a Digest,
        /// Size.
        size: u64,
        /// Kind.
        kind: BlobKind,
        /// True when nothing was transferred because the destination had it.
        skipped: bool,
    },
    /// A request is retried.
    Retry {
        /// What is retried (a URL).
        what: &'a str,
        /// Attempt number, from 1.
        attempt: u32,
        /// Why.
        reason: &'a str,
    },
    /// A free-form status line (e.g. "writing manifest").
    Status {
        /// The message.
        message: &'a str,
    },
}

/// Receives progress events. Implementations must be cheap: events come per chunk.
pub trait Progress: Send + Sync {
    /// Handle one event. The default ignores it.
    fn event(&self, _event: &ProgressEvent<'_>) {}
}

/// A reporter that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
