//! What every way of fetching a blob shares: where an attempt opens a response
//! ([`Opener`]), the per-blob bookkeeping across attempts and sources ([`Track`]), the
//! run's settings and reporter ([`Run`]), and how retries are reported.

use std::time::Duration;

use hoist_registry::{BlobResponse, RegistryClient, RegistryError};
use hoist_types::{BlobKind, Descriptor, Progress, ProgressEvent};

use crate::options::PullOptions;

/// An attempt that moved a blob forward by this much counts as progress: the download
/// goes on at once, and the retry count starts again.
pub const MIN_PROGRESS: u64 = 64 * 1024;

/// A connection at least this fast (bytes a second) during the probe of a large blob keeps
/// the blob to itself: 128 MiB/s, about a saturated 1 Gbit/s link.
pub const FAST_LINK: u64 = 128 * 1024 * 1024;

/// The settings and reporter of one blob fetch.
pub(crate) struct Run<'a> {
    pub opts: &'a PullOptions,
    pub progress: &'a dyn Progress,
}

impl Run<'_> {
    /// Report a retry to the progress reporter and `tracing`.
    pub fn retry_note(
        &self,
        what: &str,
        attempt: u32,
        err: &dyn std::fmt::Display,
        delay: Duration,
    ) {
        tracing::info!(what, attempt, %err, ?delay, "retrying blob");
        self.progress.event(&ProgressEvent::Retry {
            what,
            attempt,
            reason: &format!(
                "{err}; retrying in {}",
                hoist_registry::retry::fmt_delay(delay)
            ),
        });
    }
}

/// Where one attempt opens a response.
pub(crate) enum Opener<'a> {
    /// A registry or mirror.
    Source {
        client: &'a RegistryClient,
        repo: &'a str,
    },
    /// A foreign layer URL (no credentials).
    Foreign {
        client: RegistryClient,
        url: &'a str,
    },
}

impl Opener<'_> {
    /// The blob from `offset` to its end (`Range: bytes=N-` when `offset > 0`).
    pub async fn open(
        &self,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<BlobResponse, RegistryError> {
        match self {
            Opener::Source { client, repo } if offset > 0 => {
                client.get_blob_from(repo, desc, offset).await
            }
            Opener::Source { client, repo } => client.get_blob(repo, desc).await,
            Opener::Foreign { client, url } => client.get_foreign_blob(url, desc, offset).await,
        }
    }

    /// The bytes `[start, end)` of the blob.
    pub async fn open_range(
        &self,
        desc: &Descriptor,
        start: u64,
        end: u64,
    ) -> Result<BlobResponse, RegistryError> {
        match self {
            Opener::Source { client, repo } => client.get_blob_range(repo, desc, start, end).await,
            Opener::Foreign { client, url } => client.get_foreign_blob(url, desc, start).await,
        }
    }

    /// The URL an attempt asks, for messages.
    pub fn blob_url(&self, desc: &Descriptor) -> String {
        match self {
            Opener::Source { client, repo } => {
                format!("{}/v2/{repo}/blobs/{}", client.base_url(), desc.digest)
            }
            Opener::Foreign { url, .. } => (*url).to_owned(),
        }
    }
}

/// Per-blob bookkeeping across attempts and sources.
#[derive(Default)]
pub(crate) struct Track {
    /// Bytes that crossed the wire.
    pub wire: u64,
    /// The URL of the last response that delivered bytes.
    pub last_url: String,
    /// The endpoint announced in the last `BlobStart`.
    announced: Option<String>,
    /// More than one response (or kept bytes) went into the current content.
    pub spliced: bool,
}

impl Track {
    /// The bookkeeping of a blob whose first `kept` bytes were already there (kept from
    /// an earlier run, or delivered to the consumer).
    pub fn starting_at(kept: u64) -> Track {
        Track {
            spliced: kept > 0,
            ..Track::default()
        }
    }

    /// Announce the response's endpoint when it changes (progress shows where each blob
    /// comes from).
    pub fn announce(&mut self, desc: &Descriptor, kind: BlobKind, url: &str, p: &dyn Progress) {
        let origin = origin_of(url);
        if self.announced.as_deref() != Some(origin.as_str()) {
            p.event(&ProgressEvent::BlobStart {
                digest: &desc.digest,
                size: desc.size,
                kind,
                endpoint: url,
            });
            self.announced = Some(origin);
        }
        self.last_url = url.to_owned();
    }
}

fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| url.to_owned())
}
