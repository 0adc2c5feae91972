//! The pull engine: registry → local store.
//!
//! 1. Resolve the reference: fetch the manifest; an index selects the platform's
//!    manifest (nested indexes are followed to a bounded depth, each digest once).
//! 2. Fetch the config (at most 4 MiB, verified) and check that the layer count equals
//!    the diff ID count before any layer is fetched.
//! 3. Fetch missing layers with bounded concurrency. Each layer is streamed through
//!    one pass that hashes and writes a temp file in the store's ingest area; size and
//!    digest are checked before the blob becomes visible. Blobs the store already has
//!    are skipped. A per-digest lock makes concurrent pulls of the same blob, in this
//!    process or in others, download it once.
//! 4. Store the config (only now: a pull that fails on a layer leaves no config behind),
//!    then the manifest (and index), then commit the image record and its tag, last.
//!
//! Docker schema 1 manifests are converted: their layers are fetched, their diff IDs
//! computed by decompressing, and a schema 2 manifest and config are synthesised.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::Arc;

use hoist_registry::{FetchedManifest, RegistryClient};
use hoist_store::{ImageCommit, ImageRecord, Store, StoreError};
use hoist_types::schema1::Schema1Manifest;
use hoist_types::{
    BlobKind, Descriptor, Digest, ImageConfig, MAX_CONFIG_SIZE, MAX_INDEX_DEPTH, Manifest,
    MediaType, Platform, Progress, ProgressEvent, Reference,
};
use tokio::sync::{Semaphore, mpsc};

use crate::TransportError;

/// Default number of layers fetched at once.
pub const DEFAULT_JOBS: usize = 6;

/// What to pull and how.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to select from an index.
    pub platform: Platform,
    /// How many blobs are fetched at once (at least 1).
    pub jobs: usize,
    /// Registry client settings (TLS, credentials, timeouts).
    pub registry: hoist_registry::ClientOptions,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            jobs: DEFAULT_JOBS,
            registry: hoist_registry::ClientOptions::default(),
        }
    }
}

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
    /// Bytes downloaded for blobs.
    pub bytes_fetched: u64,
}

/// Pull `reference` into `store`.
pub async fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport, TransportError> {
    let client = RegistryClient::new(reference.registry(), opts.registry.clone())?;
    client.ping().await?;
    let repo = reference.repository();
    let Resolved {
        indexes,
        image: current,
    } = resolve(&client, reference, &opts.platform).await?;
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
            let config = fetch_config(&client, store, repo, &m.config, progress).await?;
            let invalid_config = |source| TransportError::InvalidConfig {
                digest: m.config.digest.clone(),
                source,
            };
            let cfg = ImageConfig::parse(&config).map_err(invalid_config)?;
            cfg.check_layer_count(m.layers.len())
                .map_err(invalid_config)?;
            check_layers(&m.layers)?;
            fetch_layers(
                &client, store, repo, &m.layers, opts.jobs, progress, &mut stats,
            )
            .await?;
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
            convert_schema1(
                &client,
                store,
                repo,
                (reference, &current.digest),
                m,
                opts,
                progress,
                &mut stats,
            )
            .await?
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
    Ok(PullReport {
        image,
        resolved_digest,
        blobs_fetched: stats.fetched,
        blobs_skipped: stats.skipped,
        bytes_fetched: stats.bytes,
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

/// Resolve `reference` through indexes to the manifest for `platform`. Nested indexes
/// are followed to [`MAX_INDEX_DEPTH`], each digest at most once.
pub async fn resolve(
    client: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
) -> Result<Resolved, TransportError> {
    let repo = reference.repository();
    let mut current = client
        .get_manifest(repo, &reference.manifest_reference())
        .await?;
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
            .select(platform)
            .or_else(|| {
                // Nested indexes carry no platform; follow the first one.
                idx.manifests.iter().find(|d| d.media_type.is_index())
            })
            .ok_or_else(|| TransportError::NoMatchingPlatform {
                reference: reference.to_string(),
                wanted: platform.to_string(),
                available: idx
                    .platforms()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?
            .clone();
        let child = client.get_manifest(repo, &entry.digest.to_string()).await?;
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

#[derive(Default)]
struct Stats {
    fetched: usize,
    skipped: usize,
    bytes: u64,
}

/// Foreign layers are not fetched (their `urls` point outside the registry).
fn check_layers(layers: &[Descriptor]) -> Result<(), TransportError> {
    if let Some(l) = layers.iter().find(|l| l.media_type.is_foreign_layer()) {
        return Err(TransportError::ForeignLayer {
            digest: l.digest.clone(),
        });
    }
    Ok(())
}

async fn fetch_config(
    client: &RegistryClient,
    store: &Store,
    repo: &str,
    desc: &Descriptor,
    progress: &dyn Progress,
) -> Result<Vec<u8>, TransportError> {
    if desc.size > MAX_CONFIG_SIZE {
        return Err(TransportError::SizeMismatch {
            what: format!("config {} exceeds the 4 MiB limit", desc.digest),
            expected: MAX_CONFIG_SIZE,
            actual: desc.size,
        });
    }
    let d = desc.digest.clone();
    let s = store.clone();
    if blocking(move || s.has_blob(&d)).await??.is_some() {
        let d = desc.digest.clone();
        let s = store.clone();
        let bytes = blocking(move || s.read_blob(&d, MAX_CONFIG_SIZE)).await??;
        progress.event(&ProgressEvent::BlobDone {
            digest: &desc.digest,
            size: desc.size,
            kind: BlobKind::Config,
            skipped: true,
        });
        return Ok(bytes);
    }
    // Verified here, stored by the caller once the layers are in.
    let bytes = client.get_blob_bytes(repo, desc, MAX_CONFIG_SIZE).await?;
    progress.event(&ProgressEvent::BlobDone {
        digest: &desc.digest,
        size: desc.size,
        kind: BlobKind::Config,
        skipped: false,
    });
    Ok(bytes)
}

async fn fetch_layers(
    client: &RegistryClient,
    store: &Store,
    repo: &str,
    layers: &[Descriptor],
    jobs: usize,
    progress: &dyn Progress,
    stats: &mut Stats,
) -> Result<(), TransportError> {
    let sem = Arc::new(Semaphore::new(jobs.max(1)));
    let mut unique: Vec<&Descriptor> = Vec::new();
    let mut seen = HashSet::new();
    for l in layers {
        if seen.insert(&l.digest) {
            unique.push(l);
        }
    }
    let futures = unique.into_iter().map(|desc| {
        let sem = sem.clone();
        async move {
            let _permit = sem.acquire().await.expect("semaphore never closed");
            fetch_blob(client, store, repo, desc, BlobKind::Layer, progress).await
        }
    });
    // Run them together on this task (progress is borrowed); hashing and writing
    // happen on blocking threads, so the runtime's workers never stall.
    let results = futures_util::future::try_join_all(futures).await?;
    for r in results {
        match r {
            Some(n) => {
                stats.fetched += 1;
                stats.bytes += n;
            }
            None => stats.skipped += 1,
        }
    }
    Ok(())
}

/// Fetch one blob into the store unless present. Returns the bytes downloaded, or
/// `None` when the blob was already there.
async fn fetch_blob(
    client: &RegistryClient,
    store: &Store,
    repo: &str,
    desc: &Descriptor,
    kind: BlobKind,
    progress: &dyn Progress,
) -> Result<Option<u64>, TransportError> {
    let skipped = |p: &dyn Progress| {
        p.event(&ProgressEvent::BlobDone {
            digest: &desc.digest,
            size: desc.size,
            kind,
            skipped: true,
        })
    };
    let (s, d) = (store.clone(), desc.digest.clone());
    if blocking(move || s.has_blob(&d)).await??.is_some() {
        skipped(progress);
        return Ok(None);
    }
    // One download per blob across processes: hold the digest's lock, then look again.
    let (s, d) = (store.clone(), desc.digest.clone());
    let _lock = blocking(move || s.lock_blob(&d)).await??;
    let (s, d) = (store.clone(), desc.digest.clone());
    if blocking(move || s.has_blob(&d)).await??.is_some() {
        skipped(progress);
        return Ok(None);
    }

    let mut resp = client.get_blob(repo, desc).await?;
    if let Some(len) = resp.size
        && len != desc.size
    {
        return Err(TransportError::SizeMismatch {
            what: format!("blob {} from {}", desc.digest, resp.url),
            expected: desc.size,
            actual: len,
        });
    }
    progress.event(&ProgressEvent::BlobStart {
        digest: &desc.digest,
        size: desc.size,
        kind,
        endpoint: &resp.url,
    });
    let (s, d, size) = (store.clone(), desc.digest.clone(), desc.size);
    let mut writer = blocking(move || s.blob_writer(&d, Some(size))).await??;
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(32);
    let write_task = tokio::task::spawn_blocking(move || -> Result<(), TransportError> {
        while let Some(chunk) = rx.blocking_recv() {
            writer
                .write_all(&chunk)
                .map_err(|source| TransportError::Io {
                    what: "writing a blob to the store".into(),
                    source,
                })?;
        }
        writer.commit()?;
        Ok(())
    });
    let mut done: u64 = 0;
    let body = async {
        while let Some(chunk) = resp.chunk().await? {
            done += chunk.len() as u64;
            if done > desc.size {
                return Err(TransportError::SizeMismatch {
                    what: format!(
                        "blob {} from {} (body longer than declared)",
                        desc.digest, resp.url
                    ),
                    expected: desc.size,
                    actual: done,
                });
            }
            if tx.send(chunk).await.is_err() {
                // The writer stopped; its error is reported below.
                break;
            }
            progress.event(&ProgressEvent::BlobProgress {
                digest: &desc.digest,
                done,
            });
        }
        Ok(())
    };
    let body_result = body.await;
    drop(tx);
    let write_result = write_task.await.map_err(|e| TransportError::Task {
        what: e.to_string(),
    })?;
    body_result?;
    write_result.map_err(|e| match e {
        // The registry served content that is not this blob: say where it came from.
        TransportError::Store(
            source @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. }),
        ) => TransportError::BadBlob {
            url: resp.url.clone(),
            source: Box::new(source),
        },
        other => other,
    })?;
    progress.event(&ProgressEvent::BlobDone {
        digest: &desc.digest,
        size: desc.size,
        kind,
        skipped: false,
    });
    Ok(Some(done))
}

#[allow(clippy::too_many_arguments)]
async fn convert_schema1(
    client: &RegistryClient,
    store: &Store,
    repo: &str,
    (reference, digest): (&Reference, &Digest),
    m: &Schema1Manifest,
    opts: &PullOptions,
    progress: &dyn Progress,
    stats: &mut Stats,
) -> Result<(Descriptor, Vec<u8>), TransportError> {
    let content = m.content_layers()?;
    // Schema 1 carries no sizes: learn them with HEAD.
    let mut layers = Vec::with_capacity(content.len());
    for d in &content {
        let size = client.head_blob(repo, d).await?.ok_or_else(|| {
            TransportError::Registry(hoist_registry::RegistryError::NotFound {
                url: format!("{}/v2/{repo}/blobs/{d}", client.base_url()),
                what: format!("schema 1 layer {d}"),
            })
        })?;
        layers.push(Descriptor::new(MediaType::DockerLayerGzip, d.clone(), size));
    }
    progress.event(&ProgressEvent::Resolved {
        reference: &reference.to_string(),
        digest,
        layers: layers.len(),
        total_bytes: layers.iter().map(|l| l.size).sum(),
    });
    fetch_layers(client, store, repo, &layers, opts.jobs, progress, stats).await?;
    let s = store.clone();
    let digests = content.clone();
    let diff_ids = blocking(move || {
        digests
            .iter()
            .map(|d| diff_id_of_gzip_blob(&s, d))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    let config = m.to_config(&diff_ids)?;
    let sizes: Vec<u64> = layers.iter().map(|l| l.size).collect();
    let manifest = m.to_manifest(&config, &sizes)?;
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| TransportError::Io {
        what: "encoding the converted schema 1 manifest".into(),
        source: std::io::Error::other(e),
    })?;
    let (s, d, c) = (store.clone(), manifest.config.digest.clone(), config);
    blocking(move || s.put_blob(&d, &c)).await??;
    Ok((
        Descriptor::new(
            MediaType::DockerManifest,
            Digest::sha256_of(&manifest_bytes),
            manifest_bytes.len() as u64,
        ),
        manifest_bytes,
    ))
}

/// The diff ID of a gzip layer blob in the store: the digest of its decompressed bytes.
fn diff_id_of_gzip_blob(store: &Store, d: &Digest) -> Result<Digest, TransportError> {
    let f = store.open_blob(d)?;
    let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
    let mut h = hoist_types::Algorithm::Sha256.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = dec.read(&mut buf).map_err(|source| TransportError::Io {
            what: format!("decompressing layer {d}"),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TransportError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TransportError::Task {
            what: e.to_string(),
        })
}
