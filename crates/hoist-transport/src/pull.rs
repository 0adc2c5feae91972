//! The pull engine: registry (or its mirrors) → local store.
//!
//! 1. Resolve the reference: fetch the manifest (a tag is asked of the first source that
//!    may resolve tags: a mirror, else the registry); an index selects the platform's
//!    manifest (nested indexes are followed to a bounded depth, each digest once).
//!    Manifests named by digest are taken from the store when present.
//! 2. Fetch the config (at most 4 MiB, verified) and check that the layer count equals
//!    the diff ID count before any layer is fetched.
//! 3. Fetch missing layers with bounded concurrency ([`crate::fetch`]): resumable, retried,
//!    from the mirrors in order then the registry, large ones over several Range
//!    connections. Blobs the store already has are skipped.
//! 4. Store the config (only now: a pull that fails on a layer leaves no config behind),
//!    then the manifest (and index), then commit the image record and its tag, last.
//!
//! **One download per blob**: every blob is fetched under its digest's store lock, so
//! concurrent pulls, in this process or in others, download it once; the second waits and
//! finds it present. The locks of the manifests reached by digest and of the config are
//! held until the pull is committed (they are stored last), so a second pull of the same
//! image waits for the first and then finds everything in the store. Locks are always
//! taken in the order manifests → config → layers, and a layer lock is never held while
//! waiting for another, so pulls cannot deadlock. A tag is mutable, so it is always asked.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use hoist_registry::{FetchedManifest, RegistryClient};
use hoist_store::{BlobLock, ImageCommit, ImageRecord, Store};
use hoist_types::{
    BlobKind, Descriptor, Digest, ImageConfig, MAX_CONFIG_SIZE, MAX_INDEX_DEPTH, Manifest,
    Platform, Progress, ProgressEvent, Reference,
};
use tokio::sync::Semaphore;

use crate::fetch::BlobFetcher;
pub use crate::options::{
    DEFAULT_JOBS, DEFAULT_RANGE_CONNECTIONS, DEFAULT_RANGE_PROBE, DEFAULT_RANGE_THRESHOLD,
    PullOptions,
};
use crate::sources::Sources;
use crate::{TransportError, blocking};

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

/// Store locks a pull holds until it is committed.
#[derive(Default)]
struct Held {
    locks: Vec<BlobLock>,
    digests: HashSet<Digest>,
}

impl Held {
    async fn lock(&mut self, store: &Store, d: &Digest) -> Result<(), TransportError> {
        if self.digests.contains(d) {
            return Ok(());
        }
        let (s, dd) = (store.clone(), d.clone());
        self.locks.push(blocking(move || s.lock_blob(&dd)).await??);
        self.digests.insert(d.clone());
        Ok(())
    }
}

/// What a pull shares with each blob it fetches.
struct Ctx<'a> {
    store: &'a Store,
    fetcher: &'a BlobFetcher,
    opts: &'a PullOptions,
    progress: &'a dyn Progress,
    /// Digests whose store lock this pull already holds (manifests, config).
    held: &'a HashSet<Digest>,
}

#[derive(Default)]
struct Stats {
    fetched: usize,
    skipped: usize,
    bytes: u64,
    resumed: usize,
    resumed_bytes: u64,
    endpoints: BTreeMap<Digest, String>,
}

/// Pull `reference` into `store`.
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
    // A leased handle: every blob this pull looks at or writes is kept by a concurrent
    // `hoist gc` until the pull is over (hoist-store's `lease` module).
    let leased = store.leased()?;
    match pull_leased(&leased, reference, opts, progress).await {
        Ok(report) => Ok(report),
        Err(e) => {
            // Every lock of the pull is released by now (they live in pull_leased). The
            // pull's own error is what the caller needs; a failed withdrawal only leaves
            // orphans that gc collects.
            let s = leased.clone();
            let _ = blocking(move || s.withdraw_unreached()).await;
            Err(e)
        }
    }
}

async fn pull_leased(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport, TransportError> {
    let fetcher = BlobFetcher::new(Arc::new(Sources::new(reference, opts)), opts.clone());
    let sources = fetcher.sources();
    let mut held = Held::default();
    let Resolved {
        indexes,
        image: current,
    } = resolve_for_pull(
        sources,
        store,
        reference,
        &opts.platform,
        progress,
        &mut held,
    )
    .await?;
    // Trust before any blob is fetched: a refused image leaves the store as it was.
    if let Some(policy) = &opts.trust {
        crate::trust::enforce_pull(policy, reference, opts, indexes.first().unwrap_or(&current))
            .await?;
    }
    let resolved_digest = indexes.first().unwrap_or(&current).digest.clone();

    let mut stats = Stats::default();
    let (manifest_desc, image_manifest_bytes) = match &current.manifest {
        Manifest::Image(m) => {
            progress.event(&ProgressEvent::Resolved {
                reference: &reference.to_string(),
                digest: &current.digest,
                layers: m.layers.len(),
                total_bytes: m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
            });
            held.lock(store, &m.config.digest).await?;
            let ctx = Ctx {
                store,
                fetcher: &fetcher,
                opts,
                progress,
                held: &held.digests,
            };
            let config = fetch_config(&ctx, &m.config, &mut stats).await?;
            let invalid_config = |source| TransportError::InvalidConfig {
                digest: m.config.digest.clone(),
                source,
            };
            let cfg = ImageConfig::parse(&config).map_err(invalid_config)?;
            cfg.check_layer_count(m.layers.len())
                .map_err(invalid_config)?;
            check_layers(&m.layers, opts.foreign_layers)?;
            fetch_layers(&ctx, &m.layers, &mut stats).await?;
            // The config becomes visible only once every layer is in: a failed pull
            // leaves nothing of this image behind but the layers it verified.
            let (s, d) = (store.clone(), m.config.digest.clone());
            blocking(move || s.put_blob(&d, &config)).await??;
            let desc = Descriptor::new(
                current.media_type.clone(),
                current.digest.clone(),
                current.bytes.len() as u64,
            );
            (desc, current.bytes.clone())
        }
        Manifest::Schema1(m) => {
            let ctx = Ctx {
                store,
                fetcher: &fetcher,
                opts,
                progress,
                held: &held.digests,
            };
            let layers = crate::schema1::layers(sources, m, progress).await?;
            progress.event(&ProgressEvent::Resolved {
                reference: &reference.to_string(),
                digest: &current.digest,
                layers: layers.len(),
                total_bytes: layers.iter().map(|l| l.size).sum(),
            });
            fetch_layers(&ctx, &layers, &mut stats).await?;
            let (config_digest, config, desc, bytes) =
                crate::schema1::convert(store, m, &layers).await?;
            let s = store.clone();
            blocking(move || s.put_blob(&config_digest, &config)).await??;
            (desc, bytes)
        }
        Manifest::Index(_) => unreachable!("indexes are resolved above"),
    };

    progress.event(&ProgressEvent::Status {
        message: "writing manifest",
    });
    let store2 = store.clone();
    let index_desc = indexes
        .first()
        .map(|i| Descriptor::new(i.media_type.clone(), i.digest.clone(), i.bytes.len() as u64));
    let repo = reference.repository();
    let name = reference.tag().map(|_| {
        Reference::from_parts(reference.registry(), repo, reference.tag(), None)
            .expect("parts of a valid reference")
    });
    let source = reference.to_string();
    let index_blobs: Vec<(Digest, Vec<u8>)> =
        indexes.into_iter().map(|i| (i.digest, i.bytes)).collect();
    let manifest_desc2 = manifest_desc.clone();
    let image = blocking(move || {
        store2.put_blob(&manifest_desc2.digest, &image_manifest_bytes)?;
        for (d, b) in &index_blobs {
            store2.put_blob(d, b)?;
        }
        store2.commit_image(ImageCommit {
            name,
            manifest: manifest_desc2,
            index: index_desc,
            source: Some(source),
        })
    })
    .await??;
    drop(held);
    Ok(PullReport {
        image,
        resolved_digest,
        blobs_fetched: stats.fetched,
        blobs_skipped: stats.skipped,
        bytes_fetched: stats.bytes,
        blobs_resumed: stats.resumed,
        bytes_resumed: stats.resumed_bytes,
        endpoints: stats.endpoints,
    })
}

/// A reference resolved down to one image manifest.
#[derive(Debug)]
pub struct Resolved {
    /// The indexes walked through, outermost first (empty when the reference named an
    /// image manifest).
    pub indexes: Vec<FetchedManifest>,
    /// The image manifest (or schema 1 manifest) chosen.
    pub image: FetchedManifest,
}

impl Resolved {
    /// The manifest the reference itself points at: the outermost index, or the image.
    pub fn top(&self) -> &FetchedManifest {
        self.indexes.first().unwrap_or(&self.image)
    }
}

/// Resolve `reference` through indexes to the manifest for `platform`, with one client.
/// Nested indexes are followed to [`MAX_INDEX_DEPTH`], each digest at most once.
pub async fn resolve(
    client: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
) -> Result<Resolved, TransportError> {
    let repo = reference.repository();
    resolve_with(
        reference,
        platform,
        |r: String, _: Option<Descriptor>| async move { Ok(client.get_manifest(repo, &r).await?) },
    )
    .await
}

/// Resolve through the pull's sources, taking manifests named by digest from the store
/// when present (under their lock, which is then held until the pull commits).
async fn resolve_for_pull(
    sources: &Sources,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    progress: &dyn Progress,
    held: &mut Held,
) -> Result<Resolved, TransportError> {
    let held = tokio::sync::Mutex::new(held);
    resolve_with(
        reference,
        platform,
        |r: String, entry: Option<Descriptor>| {
            let held = &held;
            async move {
                if let Some(entry) = &entry {
                    held.lock().await.lock(store, &entry.digest).await?;
                    if let Some(m) = manifest_from_store(store, entry).await? {
                        return Ok(m);
                    }
                }
                let by_tag = entry.is_none() && reference.digest().is_none();
                let what = format!("manifest {}@{r}", reference.repository());
                let (m, _) = sources
                    .first_ok(by_tag, progress, &what, |c, repo| {
                        let r = r.clone();
                        async move { Ok(c.get_manifest(&repo, &r).await?) }
                    })
                    .await?;
                Ok(m)
            }
        },
    )
    .await
}

/// A manifest named by `entry` read from the store, if there and valid.
async fn manifest_from_store(
    store: &Store,
    entry: &Descriptor,
) -> Result<Option<FetchedManifest>, TransportError> {
    let (s, d) = (store.clone(), entry.digest.clone());
    if blocking(move || s.has_blob(&d)).await??.is_none() {
        return Ok(None);
    }
    let (s, d) = (store.clone(), entry.digest.clone());
    let Ok(bytes) = blocking(move || s.read_blob(&d, hoist_types::MAX_MANIFEST_SIZE)).await? else {
        return Ok(None);
    };
    let Ok((manifest, media_type)) = Manifest::parse(&bytes, Some(&entry.media_type)) else {
        return Ok(None);
    };
    match Manifest::digest_of(&bytes, &media_type) {
        Ok(digest) if digest == entry.digest => Ok(Some(FetchedManifest {
            bytes,
            media_type,
            digest,
            manifest,
        })),
        _ => Ok(None),
    }
}

/// The resolution walk, over any way of fetching a manifest: `fetch(reference, entry)`
/// with the index entry when the manifest is reached through an index.
async fn resolve_with<F, Fut>(
    reference: &Reference,
    platform: &Platform,
    mut fetch: F,
) -> Result<Resolved, TransportError>
where
    F: FnMut(String, Option<Descriptor>) -> Fut,
    Fut: Future<Output = Result<FetchedManifest, TransportError>>,
{
    let mut current = fetch(reference.manifest_reference(), None).await?;
    let mut indexes: Vec<FetchedManifest> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    loop {
        if !seen.insert(current.digest.clone()) {
            return Err(TransportError::IndexCycle {
                digest: current.digest.clone(),
            });
        }
        let Manifest::Index(idx) = &current.manifest else {
            break;
        };
        if indexes.len() >= MAX_INDEX_DEPTH {
            return Err(TransportError::IndexTooDeep {
                reference: reference.to_string(),
                depth: MAX_INDEX_DEPTH,
            });
        }
        let entry = idx
            .choose(platform)
            .map_err(|choice| TransportError::NoMatchingPlatform {
                reference: reference.to_string(),
                choice,
            })?
            .clone();
        if seen.contains(&entry.digest) {
            return Err(TransportError::IndexCycle {
                digest: entry.digest.clone(),
            });
        }
        let child = fetch(entry.digest.to_string(), Some(entry.clone())).await?;
        if child.bytes.len() as u64 != entry.size {
            return Err(TransportError::SizeMismatch {
                what: format!("manifest {} of {reference}", entry.digest),
                expected: entry.size,
                actual: child.bytes.len() as u64,
            });
        }
        indexes.push(std::mem::replace(&mut current, child));
    }
    Ok(Resolved {
        indexes,
        image: current,
    })
}

/// Foreign layers that name `urls` are fetched only when asked (from their `urls`, then
/// the registry). A foreign (non-distributable) layer without `urls` can only come from
/// the registry, like any other layer, so it is fetched as one.
fn check_layers(layers: &[Descriptor], foreign_allowed: bool) -> Result<(), TransportError> {
    if foreign_allowed {
        return Ok(());
    }
    if let Some(l) = layers
        .iter()
        .find(|l| l.media_type.is_foreign_layer() && l.urls.as_ref().is_some_and(|u| !u.is_empty()))
    {
        return Err(TransportError::ForeignLayer {
            digest: l.digest.clone(),
        });
    }
    Ok(())
}

/// The config's bytes: from the store, or fetched and verified (the caller stores it
/// once the layers are in; its lock is held meanwhile).
async fn fetch_config(
    ctx: &Ctx<'_>,
    desc: &Descriptor,
    stats: &mut Stats,
) -> Result<Vec<u8>, TransportError> {
    if desc.size > MAX_CONFIG_SIZE {
        return Err(TransportError::SizeMismatch {
            what: format!("config {} exceeds the 4 MiB limit", desc.digest),
            expected: MAX_CONFIG_SIZE,
            actual: desc.size,
        });
    }
    let d = desc.digest.clone();
    let s = ctx.store.clone();
    if blocking(move || s.has_blob(&d)).await??.is_some() {
        let d = desc.digest.clone();
        let s = ctx.store.clone();
        let bytes = blocking(move || s.read_blob(&d, MAX_CONFIG_SIZE)).await??;
        ctx.progress.event(&ProgressEvent::BlobDone {
            digest: &desc.digest,
            size: desc.size,
            kind: BlobKind::Config,
            skipped: true,
        });
        stats.skipped += 1;
        return Ok(bytes);
    }
    let what = format!("config {}", desc.digest);
    let sources = ctx.fetcher.sources();
    let (bytes, src) = sources
        .first_ok(false, ctx.progress, &what, |c, repo| async move {
            Ok(c.get_blob_bytes(&repo, desc, MAX_CONFIG_SIZE).await?)
        })
        .await?;
    let endpoint = match sources.client(src).await {
        Ok(c) => format!("{}/v2/{}/blobs/{}", c.base_url(), src.repo, desc.digest),
        Err(_) => src.label.clone(),
    };
    ctx.progress.event(&ProgressEvent::BlobStart {
        digest: &desc.digest,
        size: desc.size,
        kind: BlobKind::Config,
        endpoint: &endpoint,
    });
    ctx.progress.event(&ProgressEvent::BlobDone {
        digest: &desc.digest,
        size: desc.size,
        kind: BlobKind::Config,
        skipped: false,
    });
    stats.fetched += 1;
    stats.bytes += desc.size;
    stats.endpoints.insert(desc.digest.clone(), endpoint);
    Ok(bytes)
}

/// Fetch the missing layers, `jobs` at a time, each digest once.
async fn fetch_layers(
    ctx: &Ctx<'_>,
    layers: &[Descriptor],
    stats: &mut Stats,
) -> Result<(), TransportError> {
    let sem = Arc::new(Semaphore::new(ctx.opts.jobs.max(1)));
    let mut unique: Vec<&Descriptor> = Vec::new();
    let mut seen = HashSet::new();
    for l in layers {
        if seen.insert(&l.digest) {
            unique.push(l);
        }
    }
    // After the first failure no new transfer starts, but every started one is awaited:
    // a transfer dropped mid-way could still publish its blob from its blocking thread
    // after the pull has withdrawn what it published (`Store::withdraw_unreached`).
    let failed = std::sync::atomic::AtomicBool::new(false);
    let failed = &failed;
    let futures = unique.into_iter().map(|desc| {
        let sem = sem.clone();
        async move {
            let _permit = sem.acquire().await.expect("semaphore never closed");
            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            let r = ctx
                .fetcher
                .fetch_to_store(ctx.store, ctx.held, desc, BlobKind::Layer, ctx.progress)
                .await;
            if let Ok(f) = &r {
                ctx.progress.event(&ProgressEvent::BlobDone {
                    digest: &desc.digest,
                    size: desc.size,
                    kind: BlobKind::Layer,
                    skipped: f.is_none(),
                });
            }
            if r.is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Some(r.map(|r| (desc, r)))
        }
    });
    // Run them together on this task (progress is borrowed); hashing and writing
    // happen on blocking threads, so the runtime's workers never stall.
    let mut results = Vec::new();
    let mut first_err = None;
    for r in futures_util::future::join_all(futures)
        .await
        .into_iter()
        .flatten()
    {
        match r {
            Ok(x) => results.push(x),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    for (desc, r) in results {
        match r {
            Some(f) => {
                stats.fetched += 1;
                stats.bytes += f.wire;
                if f.resumed > 0 {
                    stats.resumed += 1;
                    stats.resumed_bytes += f.resumed;
                }
                stats.endpoints.insert(desc.digest.clone(), f.endpoint);
            }
            None => stats.skipped += 1,
        }
    }
    Ok(())
}
