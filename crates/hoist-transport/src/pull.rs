//! `hoist pull REF`: the copy engine ([`crate::copy`]) from `docker://REF` into the store
//! ([`HoistDestination::for_pull`]). Everything a pull does is done by the engine, once:
//!
//! 1. Resolve: the top manifest (a tag is asked of the first source that may resolve
//!    tags: a mirror, else the registry); the trust policy, if any, decides on it before
//!    anything moves; an index selects the platform's manifest (nested indexes followed
//!    to a bounded depth, each digest once: [`crate::resolve`]). Manifests named by
//!    digest are taken from the store when present.
//! 2. The config (at most 4 MiB, verified; from the store when present), its diff IDs
//!    counted against the layers before any layer moves; foreign layers naming `urls`
//!    refused unless [`PullOptions::foreign_layers`].
//! 3. Missing layers, `jobs` at a time, through the registry's resumable reader
//!    ([`crate::fetch`]): retried, resumed within and across runs, from the mirrors in
//!    order then the registry, large ones over several Range connections. Blobs the store
//!    has are skipped. A schema 1 manifest is converted (layers moved, diff IDs computed,
//!    a schema 2 manifest and config synthesised).
//! 4. The commit: the config (staged until now, so a failed pull leaves no config), then
//!    the manifest (and the indexes it was chosen from), then the image record and its
//!    tag, last. A pull by digest is recorded without a name.
//!
//! **One download per blob**: every blob is fetched under its digest's store lock, so
//! concurrent pulls, in this process or in others, download it once; the second waits and
//! finds it present. The locks of the manifests reached by digest and of the config are
//! held until the pull is committed (they are stored last), so a second pull of the same
//! image waits for the first and then finds everything in the store. Locks are always
//! taken in the order manifests → config → layers, and a layer lock is never held while
//! waiting for another, so pulls cannot deadlock. A tag is mutable, so it is always asked.
//!
//! A pull that fails leaves the store as it was (the engine's lease and
//! [`Store::withdraw_unreached`]).

use std::collections::BTreeMap;

use hoist_store::{ImageRecord, Store};
use hoist_types::{Digest, Progress, Reference};

use crate::TransportError;
use crate::copy::{CopyOptions, Settings, copy_with};
pub use crate::options::{
    DEFAULT_JOBS, DEFAULT_RANGE_CONNECTIONS, DEFAULT_RANGE_PROBE, DEFAULT_RANGE_THRESHOLD,
    PullOptions,
};
pub use crate::resolve::{Resolved, resolve};
use crate::transports::ImageRef;
use crate::transports::any::{AnyDestination, AnySource};
use crate::transports::docker::DockerSource;
use crate::transports::hoist::HoistDestination;
use crate::trust::TrustCheck;

/// The outcome of a pull.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The image as stored.
    pub image: ImageRecord,
    /// The digest of the manifest the reference resolved to (the index when there was one).
    pub resolved_digest: Digest,
    /// Blobs downloaded.
    pub blobs_fetched: usize,
    /// Blobs skipped because the store had them.
    pub blobs_skipped: usize,
    /// Bytes of blobs that crossed the wire.
    pub bytes_fetched: u64,
    /// Blobs whose download went on from a partial kept by an earlier run.
    pub blobs_resumed: usize,
    /// Bytes reused from such partials (not downloaded again).
    pub bytes_resumed: u64,
    /// Where each downloaded blob (config and layers) came from: the URL that served its
    /// last bytes.
    pub endpoints: BTreeMap<Digest, String>,
}

/// Pull `reference` into `store`: the copy engine from `docker://reference` into the
/// store.
///
/// A pull that fails leaves the store as it was: the blobs it published that nothing
/// else reaches are withdrawn ([`Store::withdraw_unreached`]; large ones are kept as
/// complete partial downloads, so pulling again does not fetch them again).
pub async fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport, TransportError> {
    let src = AnySource::Docker(DockerSource::new(reference.clone(), opts));
    pull_from(store, reference, &src, opts, progress).await
}

/// [`pull`] of `reference` read from `src`, a source for it made by the caller (`hoist
/// serve --pull-through` hands its registry client and the manifests it has fetched
/// already, so the pull does not fetch them again). The trust policy, if any, is checked
/// on what `src` serves.
pub async fn pull_from(
    store: &Store,
    reference: &Reference,
    src: &AnySource,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport, TransportError> {
    let dst = HoistDestination::for_pull(store.clone(), reference)?;
    let records = dst.records();
    let copy_opts = CopyOptions {
        platform: opts.platform.clone(),
        jobs: opts.jobs,
        trust: opts.trust.clone().map(|p| {
            TrustCheck::new(p, &ImageRef::Docker(reference.clone()))
                .with_registries_d(opts.registries_d.clone())
        }),
        ..CopyOptions::default()
    };
    let how = Settings {
        label: reference.to_string(),
        refuse_foreign_urls: !opts.foreign_layers,
        verify_present: false,
    };
    let report = copy_with(src, AnyDestination::Hoist(dst), &copy_opts, progress, &how).await?;
    let image = records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .expect("a committed pull wrote its record");
    Ok(PullReport {
        image,
        resolved_digest: report.source_digest.expect("set by the engine"),
        blobs_fetched: report.blobs_copied,
        blobs_skipped: report.blobs_skipped,
        bytes_fetched: report.bytes_read,
        blobs_resumed: report.blobs_resumed,
        bytes_resumed: report.bytes_resumed,
        endpoints: report.endpoints,
    })
}
