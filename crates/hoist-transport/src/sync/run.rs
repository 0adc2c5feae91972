//! Running a [`Plan`]: each image checked against its destination, then copied by the
//! one copy engine ([`crate::copy::copy`]), `image_jobs` images at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hoist_registry::{ClientOptions, RegistryClient};
use hoist_store::Store;
use hoist_types::{Digest, Manifest, Progress, ProgressEvent, Reference};
use serde::Serialize;
use tokio::sync::Mutex as AsyncMutex;

use super::SyncError;
use super::plan::{Plan, PlannedImage};
use crate::copy::{CopyOptions, CopyReport};
use crate::options::PullOptions;
use crate::transports::any::{AnyDestination, AnySource, OpenOptions};
use crate::transports::dir::DirSource;
use crate::transports::oci::OciSource;
use crate::transports::{ImageRef, ImageSource as _, ManifestRef, RawManifest};
use crate::{TransportError, blocking};

/// How to run a sync.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncOptions {
    /// Per-copy options (platform, `all`, layer `jobs`, format, trust, …).
    pub copy: CopyOptions,
    /// Images copied at once (at least 1).
    pub image_jobs: usize,
    /// Decide what would be copied; write nothing.
    pub dry_run: bool,
    /// Settings for the source registries' blob reader (range slicing, foreign layers);
    /// its `registry` is replaced per image by the plan's settings.
    pub pull: PullOptions,
    /// Settings for the destination registry.
    pub dest_registry: ClientOptions,
    /// The store, for a `hoist:` destination.
    pub store: Option<Store>,
    /// The trust policy checked on each source image before it is copied (and the
    /// registries.d configuration for lookaside signatures); `None`: accept anything.
    pub trust: Option<(
        Arc<hoist_trust::Policy>,
        Option<Arc<hoist_trust::registries_d::RegistriesD>>,
    )>,
}

impl Default for SyncOptions {
    /// Copy options, pull options and destination registry settings at their defaults,
    /// 4 images at once (as `hoist sync`), no store, no trust policy.
    fn default() -> Self {
        SyncOptions {
            copy: CopyOptions::default(),
            image_jobs: 4,
            dry_run: false,
            pull: PullOptions::default(),
            dest_registry: ClientOptions::default(),
            store: None,
            trust: None,
        }
    }
}

/// What happened to one image.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Copied (the destination lacked it or held another digest).
    Copied {
        /// The digest written.
        digest: Option<Digest>,
        /// Blobs sent.
        blobs_copied: usize,
        /// Blobs the destination had.
        blobs_skipped: usize,
        /// Bytes sent.
        bytes: u64,
    },
    /// The destination already holds this image.
    Unchanged {
        /// The source's digest.
        digest: Digest,
    },
    /// `dry_run`: would be copied.
    WouldCopy {
        /// The source's digest.
        digest: Digest,
    },
    /// Failed; the others went on.
    Failed {
        /// The error, with its causes.
        error: String,
    },
}

/// One image's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    /// The source, `docker://…`.
    pub source: String,
    /// The destination, `transport:reference`.
    pub destination: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Seconds spent on it.
    pub seconds: f64,
}

/// The summary of a sync.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// Every image, in plan order; repositories whose tags could not be listed come first,
    /// as failures.
    pub images: Vec<ImageResult>,
    /// Images copied.
    pub copied: usize,
    /// Images the destination already held.
    pub unchanged: usize,
    /// Images that would be copied (`dry_run`).
    pub would_copy: usize,
    /// Images (or repositories) that failed.
    pub failed: usize,
    /// Bytes sent.
    pub bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl SyncReport {
    /// Whether anything failed.
    pub fn has_failures(&self) -> bool {
        self.failed > 0
    }
}

/// Shared state of a run: destination registry clients, the OCI layout lock.
struct Shared<'a> {
    opts: &'a SyncOptions,
    progress: &'a dyn Progress,
    dest_clients: std::sync::Mutex<std::collections::HashMap<String, RegistryClient>>,
    /// `index.json` of one OCI layout is rewritten by each image's commit: copies into an
    /// OCI layout run one at a time.
    oci: AsyncMutex<()>,
    /// One lock per destination repository of a registry: Distribution writes a blob's
    /// link file in place, and a manifest `PUT` racing another image's upload of the same
    /// blob into the same repository can read it half-written and refuse the manifest
    /// (`DIGEST_INVALID`). Images of one repository are copied one after the other;
    /// repositories go in parallel (the plan is interleaved by repository).
    repos: std::sync::Mutex<std::collections::HashMap<String, Arc<AsyncMutex<()>>>>,
    /// The blobs of this run's images in the destination registries: the copy engine
    /// claims each blob while it moves it, so a blob several images need is put once (the
    /// others wait for that blob, then find it or mount it from the repository that holds
    /// it, as skopeo's blob-info cache mounts), and a base layer shared by several
    /// repositories is sent once.
    blobs: super::BlobClaims,
}

/// Run `plan`: every image, `image_jobs` at a time; a failure of one does not stop the
/// others.
pub async fn run(plan: Plan, opts: &SyncOptions, progress: &dyn Progress) -> SyncReport {
    let start = Instant::now();
    let shared = Shared {
        opts,
        progress,
        dest_clients: Default::default(),
        oci: AsyncMutex::new(()),
        repos: Default::default(),
        blobs: Default::default(),
    };
    let mut report = SyncReport {
        dry_run: opts.dry_run,
        ..SyncReport::default()
    };
    for (repo, e) in plan.failures {
        report.images.push(ImageResult {
            source: format!("docker://{repo}"),
            destination: String::new(),
            outcome: Outcome::Failed {
                error: format!("listing tags: {}", hoist_types::error_chain(&e)),
            },
            seconds: 0.0,
        });
    }
    let shared = &shared;
    let order = interleaved(&plan.images);
    let mut slots: Vec<Option<PlannedImage>> = plan.images.into_iter().map(Some).collect();
    let work: Vec<(usize, PlannedImage)> = order
        .into_iter()
        .filter_map(|i| slots[i].take().map(|img| (i, img)))
        .collect();
    let mut results: Vec<(usize, ImageResult)> = futures_util::stream::iter(
        work.into_iter()
            .map(|(i, img)| async move { (i, sync_one(shared, img).await) }),
    )
    .buffer_unordered(opts.image_jobs.max(1))
    .collect()
    .await;
    results.sort_by_key(|(i, _)| *i);
    report.images.extend(results.into_iter().map(|(_, r)| r));
    for r in &report.images {
        match &r.outcome {
            Outcome::Copied { bytes, .. } => {
                report.copied += 1;
                report.bytes += bytes;
            }
            Outcome::Unchanged { .. } => report.unchanged += 1,
            Outcome::WouldCopy { .. } => report.would_copy += 1,
            Outcome::Failed { .. } => report.failed += 1,
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report
}

/// The key of an image's destination repository (registries only).
fn repo_key(dest: &ImageRef) -> Option<String> {
    match dest {
        ImageRef::Docker(r) => Some(format!("{}/{}", r.registry(), r.repository())),
        _ => None,
    }
}

/// Plan indexes in round-robin order over destination repositories (first image of each
/// repository, then the second of each, …), so that images running at once are of
/// different repositories.
fn interleaved(images: &[PlannedImage]) -> Vec<usize> {
    let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let k = repo_key(&img.dest);
        match groups.iter_mut().find(|(g, _)| k.is_some() && g == &k) {
            Some((_, v)) => v.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    let longest = groups.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(images.len());
    for round in 0..longest {
        for (_, v) in &groups {
            if let Some(i) = v.get(round) {
                out.push(*i);
            }
        }
    }
    out
}

async fn sync_one(sh: &Shared<'_>, img: PlannedImage) -> ImageResult {
    let start = Instant::now();
    let source = format!("docker://{}", img.source);
    let destination = img.dest.to_string();
    let outcome = match try_sync_one(sh, &img).await {
        Ok(o) => o,
        Err(e) => Outcome::Failed {
            error: hoist_types::error_chain(&e),
        },
    };
    let word = match &outcome {
        Outcome::Copied { .. } => "copied",
        Outcome::Unchanged { .. } => "unchanged",
        Outcome::WouldCopy { .. } => "would copy",
        Outcome::Failed { .. } => "FAILED",
    };
    let message = format!("sync {source} -> {destination}: {word}");
    sh.progress
        .event(&ProgressEvent::Status { message: &message });
    ImageResult {
        source,
        destination,
        outcome,
        seconds: round_ms(start.elapsed()),
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

async fn try_sync_one(sh: &Shared<'_>, img: &PlannedImage) -> Result<Outcome, SyncError> {
    let opts = sh.opts;
    let mut registry = img.source_opts.clone();
    registry.progress = opts.pull.registry.progress.clone();
    let open = OpenOptions {
        store: opts.store.clone(),
        pull: PullOptions {
            registry,
            ..opts.pull.clone()
        },
        source_label: Some(format!("docker://{}", img.source)),
    };
    let src_ref = ImageRef::Docker(img.source.clone());
    let src = AnySource::open(&src_ref, &open).await?;
    let top = src.get_manifest(&ManifestRef::Top).await?;
    if let Some((policy, registries_d)) = &opts.trust {
        // Before anything is compared or written: a refused image is a failure, even
        // when the destination already holds it. The copy below reads exactly these
        // bytes (its source is pinned to their digest), so it is judged once.
        crate::trust::TrustCheck::new(policy.clone(), &src_ref)
            .with_registries_d(registries_d.clone())
            .enforce(&src, &top)
            .await?;
    }
    let wanted = wanted_digests(&src, &top, &opts.copy).await?;
    if dest_holds(sh, img, &wanted).await {
        return Ok(Outcome::Unchanged { digest: top.digest });
    }
    if opts.dry_run {
        return Ok(Outcome::WouldCopy { digest: top.digest });
    }
    let _oci = match img.dest {
        ImageRef::Oci { .. } => Some(sh.oci.lock().await),
        _ => None,
    };
    let repo_lock = repo_key(&img.dest).map(|k| {
        sh.repos
            .lock()
            .expect("not poisoned")
            .entry(k)
            .or_default()
            .clone()
    });
    let _repo = match &repo_lock {
        Some(l) => Some(l.lock().await),
        None => None,
    };
    // Each blob is claimed by the engine while it moves it (see `Shared::blobs`).
    let mut copy_opts = opts.copy.clone();
    if let ImageRef::Docker(r) = &img.dest {
        copy_opts.blob_claims = Some(sh.blobs.for_destination(r.registry(), r.repository()));
    }
    let mut dopen = open.clone();
    dopen.pull.registry = opts.dest_registry.clone();
    let dst = AnyDestination::open(&img.dest, &dopen).await?;
    // The source pinned to the digest compared and judged above: a tag that moves
    // meanwhile cannot put other bytes in the destination.
    let pinned = Reference::from_parts(
        img.source.registry(),
        img.source.repository(),
        img.source.tag(),
        Some(top.digest.clone()),
    )
    .map_err(TransportError::from)?;
    let src = AnySource::open(&ImageRef::Docker(pinned), &open).await?;
    let r: CopyReport = crate::copy::copy(&src, dst, &copy_opts, sh.progress).await?;
    Ok(Outcome::Copied {
        digest: r.digest,
        blobs_copied: r.blobs_copied,
        blobs_skipped: r.blobs_skipped,
        bytes: r.bytes_copied,
    })
}

/// What the destination holds when it holds this image: the source's top manifest and,
/// for an index copied without `all`, the platform's image (which a copy writes as the
/// top manifest), with that image's manifest.
struct Wanted {
    digests: Vec<Digest>,
    image: Option<Manifest>,
}

async fn wanted_digests(
    src: &AnySource,
    top: &RawManifest,
    copy: &CopyOptions,
) -> Result<Wanted, SyncError> {
    let mut w = Wanted {
        digests: vec![top.digest.clone()],
        image: None,
    };
    match &top.manifest {
        Manifest::Image(_) => w.image = Some(top.manifest.clone()),
        Manifest::Index(idx) if !copy.all => {
            if let Ok(d) = idx.choose(&copy.platform) {
                let inner = src
                    .get_manifest(&ManifestRef::Digest(d.digest.clone()))
                    .await?;
                w.digests.push(inner.digest.clone());
                if matches!(inner.manifest, Manifest::Image(_)) {
                    w.image = Some(inner.manifest);
                }
            }
        }
        _ => {}
    }
    Ok(w)
}

/// Whether the destination already holds the image: the same top digest, or (in an OCI
/// layout, which converts Docker manifests to OCI) an image manifest over the same config
/// and layers. Anything unreadable counts as absent: the copy then says what is wrong.
async fn dest_holds(sh: &Shared<'_>, img: &PlannedImage, w: &Wanted) -> bool {
    if sh.opts.copy.format.is_some() || sh.opts.copy.compression.is_some() {
        // A conversion changes digests; compare contents the way an OCI layout is compared
        // only where it is safe: leave it to the engine, which skips every blob present.
        return false;
    }
    match &img.dest {
        ImageRef::Docker(r) => {
            let Ok(client) = dest_client(sh, r) else {
                return false;
            };
            matches!(
                client.head_manifest(r.repository(), &r.manifest_reference()).await,
                Ok(Some(d)) if w.digests.contains(&d.digest)
            )
        }
        ImageRef::Dir { dir } => {
            let Ok(s) = DirSource::open(dir.clone()).await else {
                return false;
            };
            matches!(s.get_manifest(&ManifestRef::Top).await, Ok(m) if w.digests.contains(&m.digest))
        }
        ImageRef::Oci { dir, name } => {
            let Ok(s) = OciSource::open(dir.clone(), name.clone()).await else {
                return false;
            };
            let Ok(m) = s.get_manifest(&ManifestRef::Top).await else {
                return false;
            };
            w.digests.contains(&m.digest) || same_image(w.image.as_ref(), &m.manifest)
        }
        ImageRef::Hoist { name } => {
            let Some(store) = sh.opts.store.clone() else {
                return false;
            };
            let name = name.clone();
            let Ok(Ok(found)) = blocking(move || store.resolve_image(&name)).await else {
                return false;
            };
            // The name must be the image's, not a digest or ID query that happened to match.
            w.digests.contains(&found.manifest.digest)
                || found.index.is_some_and(|i| w.digests.contains(&i.digest))
        }
        _ => false,
    }
}

/// Two image manifests over the same config and the same layers, in order.
fn same_image(a: Option<&Manifest>, b: &Manifest) -> bool {
    match (a, b) {
        (Some(Manifest::Image(a)), Manifest::Image(b)) => {
            a.config.digest == b.config.digest
                && a.layers.len() == b.layers.len()
                && a.layers
                    .iter()
                    .zip(&b.layers)
                    .all(|(x, y)| x.digest == y.digest)
        }
        _ => false,
    }
}

fn dest_client(sh: &Shared<'_>, r: &Reference) -> Result<RegistryClient, TransportError> {
    let mut map = sh.dest_clients.lock().expect("not poisoned");
    if let Some(c) = map.get(r.registry()) {
        return Ok(c.clone());
    }
    let c = RegistryClient::new(r.registry(), sh.opts.dest_registry.clone())?;
    map.insert(r.registry().to_owned(), c.clone());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(dest: &str) -> PlannedImage {
        PlannedImage {
            source: Reference::parse("h/s:1").unwrap(),
            source_opts: ClientOptions::default(),
            dest: ImageRef::parse(dest).unwrap(),
            dest_label: String::new(),
        }
    }

    #[test]
    fn images_of_one_repository_are_spread_out() {
        let plan = [
            img("docker://r/a:1"),
            img("docker://r/a:2"),
            img("docker://r/a:3"),
            img("docker://r/b:1"),
            img("dir:/x/1"),
            img("docker://r/b:2"),
            img("dir:/x/2"),
        ];
        assert_eq!(interleaved(&plan), [0, 3, 4, 6, 1, 5, 2]);
    }
}
