//! Pull-through, streaming: what the store lacks is answered from upstream at once while
//! hoist's pull engine ([`hoist_transport::pull::pull`]: mirrors, credentials, retries,
//! resume, one download per blob, verified and committed like `hoist pull`) writes it
//! into the store in the background; once committed it is served from the store.
//!
//! - **One upstream source per repository**: the engine's registry source
//!   ([`DockerSource`]: mirrors, credentials, retries, its client pinged once), kept for
//!   [`SOURCE_TTL`] and shared by the manifest fetches, the config reads and the
//!   background pulls of that repository, so a pull-through costs no extra pings, token
//!   requests or connections beside the engine's.
//! - **Manifests**: a manifest the store lacks (a tag whose TTL ran out, or a digest) is
//!   fetched with that source (a by-digest answer is checked against the digest) and
//!   answered with those exact bytes, its media type and `Docker-Content-Digest`. The
//!   bytes are kept in a small bounded cache (digest → bytes, [`CACHE_TTL`]) so the
//!   by-digest request that follows (a platform manifest of an index) is answered the
//!   same way, and a pull of the image pinned to that digest (`repo:tag@digest`, so the
//!   tag is recorded for what was served) starts in the background, one per reference.
//!   The pull reads through the same source and takes its manifests from the cache
//!   ([`Prefetched`]): the engine does not fetch again what was just served.
//!   A tag is re-validated upstream at most once per TTL; when the upstream cannot be
//!   reached the stored tag is served.
//! - **Blobs** of a manifest answered so: the config (small, kept in memory by the engine
//!   until its commit) is read by the same source, verified, and answered whole; a layer
//!   is streamed from the pull's partial download in the store's ingest area
//!   ([`Store::open_partial_reader`]: the data file and its record kept open; the
//!   background pull uses one connection per blob, so the file grows in order), which
//!   becomes the published blob in place. Each download is read and hashed **once**
//!   whatever the number of clients ([`Download`]): the client at the front reads the
//!   next chunk and extends the hash chain; the others take the same bytes, with the
//!   hash state after them, from a short ring of recent chunks; a client that fell
//!   behind the ring (or joined late) reads and hashes for itself and rejoins the chain
//!   where its hash state equals the chain's. Every byte a client is sent was therefore
//!   hashed into the state it holds, and the last chunk is sent only when that state is
//!   the blob's digest (and after waiting, bounded, for the pull to commit, so a client
//!   that received a whole blob finds the image in the store): a pull that fails or an
//!   upstream that lies ends the body short of its `Content-Length`, which every client
//!   sees as a broken transfer. A `Range` request for a blob still being pulled waits
//!   (bounded) for the pull and is then served from the store.
//! - A blob of no manifest seen by this server, absent from the store, is
//!   `BLOB_UNKNOWN` (as Distribution: clients reach blobs through a manifest).
//! - **The trust policy** (containers-policy.json), when there is one, is enforced on
//!   every manifest fetched upstream before it is served (the engine's own check,
//!   [`TrustCheck`]; a refusal is `403 DENIED` naming the requirement). The background
//!   pull of a manifest so judged reads exactly those bytes (pinned to their digest) and
//!   is not judged again, as `hoist sync` judges once per image; the whole-pull fallbacks
//!   below are judged by the pull itself.
//! - **Fallbacks to the whole pull first** (as before streaming): a schema 1 manifest
//!   (stored converted), and a tag that is an index asked by a client that does not
//!   accept indexes (it gets the stored platform manifest).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::Stream;
use hoist_store::Store;
use hoist_transport::transports::any::AnySource;
use hoist_transport::transports::docker::DockerSource;
use hoist_transport::transports::prefetched::Prefetched;
use hoist_transport::transports::{ImageRef, ImageSource, ManifestRef as SourceRef, RawManifest};
use hoist_transport::trust::TrustCheck;
use hoist_transport::{PullOptions, pull, pull_from};
use hoist_types::{
    Descriptor, Digest, Hasher, MAX_CONFIG_SIZE, Manifest, MediaType, NoProgress, Reference,
    error_chain,
};
use tokio::sync::watch;

use crate::api::ManifestRef;
use crate::download::{self, Download};
use crate::error::ApiError;
use crate::pull_state::{PullState, wait_pull};

/// Manifests fetched upstream are kept this long for the requests that follow.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(600);
/// At most this many manifests are cached.
const MAX_CACHED_MANIFESTS: usize = 256;
/// At most this many blobs of cached manifests are remembered.
const MAX_KNOWN_BLOBS: usize = 65_536;
/// A background pull that failed is not started again for this long: requests in
/// between get its error.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// A request that needs a whole pull first waits at most this long for it.
pub(crate) const PULL_WAIT: Duration = Duration::from_secs(3600);
/// An upstream repository's source (and its registry client) is used this long, then
/// replaced on the next request (a mirror found unreachable is tried again then).
const SOURCE_TTL: Duration = Duration::from_secs(60);
/// At most this many upstream repositories' sources are kept.
const MAX_SOURCES: usize = 256;

type TagKey = (String, String, String);
type DigestKey = (String, String, Digest);

/// A manifest fetched upstream, answered before its image is in the store.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) bytes: Bytes,
    pub(crate) media_type: MediaType,
    pub(crate) digest: Digest,
    manifest: Manifest,
    at: Instant,
}

impl Cached {
    fn raw(&self) -> RawManifest {
        RawManifest {
            bytes: self.bytes.to_vec(),
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            manifest: self.manifest.clone(),
        }
    }
}

type Manifests = Arc<Mutex<HashMap<DigestKey, Arc<Cached>>>>;

/// What a manifest request is answered with.
pub(crate) enum ManifestAnswer {
    /// Look in the store (it holds it, or the upstream could not say otherwise); `true`
    /// when a pull just changed it.
    Store(bool),
    /// These bytes, fetched upstream (the pull runs in the background).
    Upstream(Arc<Cached>),
}

/// What a blob request the store cannot answer yet gets.
pub(crate) enum BlobAnswer {
    /// A config: fetched upstream and verified.
    Whole(Bytes),
    /// A layer being pulled: stream it ([`tail`]).
    Pulling {
        desc: Box<Descriptor>,
        pull: watch::Receiver<PullState>,
    },
}

#[derive(Debug, Clone)]
struct KnownBlob {
    desc: Descriptor,
    config: bool,
    /// The pull that brings it.
    pull: Reference,
    at: Instant,
}

/// Pull-through settings, the tags' last validations, the manifests fetched, the
/// background pulls.
pub(crate) struct PullThrough {
    opts: PullOptions,
    ttl: Duration,
    /// Registries never pulled from: the server's own addresses (a loop).
    own: Vec<String>,
    /// One lock per (registry, repository, tag): concurrent requests for one tag wait
    /// for one validation. The value is when it was last validated and what it was.
    #[allow(clippy::type_complexity)]
    tags: Mutex<HashMap<TagKey, Arc<tokio::sync::Mutex<Option<(Instant, Option<Digest>)>>>>>,
    /// Manifests answered from upstream (shared with the background pulls' sources).
    manifests: Manifests,
    blobs: Mutex<HashMap<DigestKey, KnownBlob>>,
    /// Background pulls by reference (`registry/repo[:tag]@digest`).
    pulls: Mutex<HashMap<String, watch::Receiver<PullState>>>,
    /// The upstream source of each (registry, repository), and when it was made.
    #[allow(clippy::type_complexity)]
    sources: Mutex<HashMap<(String, String), (Instant, Arc<AnySource>)>>,
    /// Blobs being streamed, each read and hashed once for all its clients.
    downloads: Mutex<HashMap<Digest, Weak<Download>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PullThrough {
    pub(crate) fn new(mut opts: PullOptions, ttl: Duration, own: Vec<String>) -> PullThrough {
        // A blob is streamed to clients from its partial download as it grows: one
        // connection per blob keeps the file growing in order.
        opts.range_connections = 1;
        PullThrough {
            opts,
            ttl,
            own,
            tags: Mutex::new(HashMap::new()),
            manifests: Arc::new(Mutex::new(HashMap::new())),
            blobs: Mutex::new(HashMap::new()),
            pulls: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
            downloads: Mutex::new(HashMap::new()),
        }
    }

    /// The upstream source of `registry/name`: the one in use, or a new one once it is
    /// [`SOURCE_TTL`] old.
    fn source(&self, registry: &str, name: &str) -> Result<Arc<AnySource>, ApiError> {
        let key = (registry.to_owned(), name.to_owned());
        let mut sources = lock(&self.sources);
        if let Some((at, s)) = sources.get(&key)
            && at.elapsed() < SOURCE_TTL
        {
            return Ok(s.clone());
        }
        if sources.len() >= MAX_SOURCES {
            sources.retain(|_, (at, _)| at.elapsed() < SOURCE_TTL);
            if sources.len() >= MAX_SOURCES {
                sources.clear();
            }
        }
        let r = Reference::from_parts(registry, name, None, None).map_err(|_| {
            ApiError::NameInvalid {
                name: format!("{registry}/{name}"),
            }
        })?;
        let s = Arc::new(AnySource::Docker(DockerSource::new(r, &self.opts)));
        sources.insert(key, (Instant::now(), s.clone()));
        Ok(s)
    }

    fn is_own(&self, registry: &str) -> bool {
        self.own.iter().any(|o| o == registry)
    }

    /// Answer a manifest request: from the store, or with bytes fetched upstream while
    /// the image is pulled in the background. `have`: the digest the store holds for
    /// the reference (the tag's top manifest; the digest itself), if any.
    /// `accepts`: whether the client takes a media type (an index, for a tag).
    pub(crate) async fn manifest(
        &self,
        store: &Store,
        registry: &str,
        name: &str,
        reference: &ManifestRef,
        have: Option<Digest>,
        accepts: &(dyn Fn(&MediaType) -> bool + Sync),
    ) -> Result<ManifestAnswer, ApiError> {
        if self.is_own(registry) {
            return Ok(ManifestAnswer::Store(false));
        }
        let invalid = || ApiError::NameInvalid {
            name: format!("{registry}/{name}"),
        };
        match reference {
            ManifestRef::Digest(_) if have.is_some() => Ok(ManifestAnswer::Store(false)),
            ManifestRef::Digest(d) => {
                let r = Reference::from_parts(registry, name, None, Some(d.clone()))
                    .map_err(|_| invalid())?;
                if let Some(c) = self.cached(registry, name, d) {
                    self.start_known(store, registry, name, d);
                    return Ok(ManifestAnswer::Upstream(c));
                }
                let m = self.fetch_manifest(&r).await?;
                self.answer(store, registry, name, r, m, &|_| true).await
            }
            ManifestRef::Tag(t) => {
                let r =
                    Reference::from_parts(registry, name, Some(t), None).map_err(|_| invalid())?;
                let slot = lock(&self.tags)
                    .entry((registry.to_owned(), name.to_owned(), t.clone()))
                    .or_default()
                    .clone();
                let mut last = slot.lock().await;
                let fresh = last.as_ref().filter(|(at, _)| at.elapsed() < self.ttl);
                if have.is_some() && fresh.is_some() {
                    return Ok(ManifestAnswer::Store(false));
                }
                if let Some((_, Some(d))) = fresh
                    && let Some(c) = self.cached(registry, name, d)
                {
                    self.start_known(store, registry, name, d);
                    return Ok(ManifestAnswer::Upstream(c));
                }
                let fetched = self.fetch_manifest(&r).await;
                // Validated or not, the upstream is asked again only after the TTL.
                *last = Some((
                    Instant::now(),
                    fetched.as_ref().ok().map(|m| m.digest.clone()),
                ));
                match fetched {
                    Ok(m) if have.as_ref() == Some(&m.digest) => Ok(ManifestAnswer::Store(false)),
                    Ok(m) => {
                        let pinned =
                            Reference::from_parts(registry, name, Some(t), Some(m.digest.clone()))
                                .map_err(|_| invalid())?;
                        self.answer(store, registry, name, pinned, m, accepts).await
                    }
                    Err(e) if have.is_some() => {
                        tracing::warn!("pull-through of {r}: {e}; serving the stored tag");
                        Ok(ManifestAnswer::Store(false))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn fetch_manifest(&self, r: &Reference) -> Result<RawManifest, ApiError> {
        let src = self.source(r.registry(), r.repository())?;
        let which = match (r.digest(), r.tag()) {
            (Some(d), _) => SourceRef::Digest(d.clone()),
            (None, t) => SourceRef::Tag(t.unwrap_or("latest").to_owned()),
        };
        let m = src
            .get_manifest(&which)
            .await
            .map_err(|e| ApiError::Upstream(format!("fetching the manifest of {r}: {e}")))?;
        // The trust policy decides on what is served before it is served, as the engine
        // decides before it stores (the same check; the background pull makes it again).
        if let Some(policy) = &self.opts.trust {
            TrustCheck::new(policy.clone(), &ImageRef::Docker(r.clone()))
                .with_registries_d(self.opts.registries_d.clone())
                .enforce_manifest(&src, &m.digest, &m.bytes)
                .await
                .map_err(|e| ApiError::Denied(format!("{r}: {}", error_chain(&e))))?;
        }
        Ok(m)
    }

    /// Serve `m` (fetched for the pull `r`) now and pull its image in the background; or,
    /// where streaming does not apply, pull first and answer from the store.
    async fn answer(
        &self,
        store: &Store,
        registry: &str,
        name: &str,
        r: Reference,
        m: RawManifest,
        accepts: &(dyn Fn(&MediaType) -> bool + Sync),
    ) -> Result<ManifestAnswer, ApiError> {
        match &m.manifest {
            Manifest::Schema1(_) => {
                // Stored converted: what the client gets is the stored schema 2 image.
                let unpinned = if r.tag().is_some() {
                    Reference::from_parts(registry, name, r.tag(), None).unwrap_or(r)
                } else {
                    r
                };
                self.pull_now(store, &unpinned).await?;
                return Ok(ManifestAnswer::Store(true));
            }
            Manifest::Index(_) if !accepts(&m.media_type) => {
                self.pull_now(store, &r).await?;
                return Ok(ManifestAnswer::Store(true));
            }
            _ => {}
        }
        let now = Instant::now();
        if let Manifest::Image(img) = &m.manifest {
            let mut blobs = lock(&self.blobs);
            if blobs.len() + img.layers.len() + 1 > MAX_KNOWN_BLOBS {
                blobs.retain(|_, b| b.at.elapsed() < CACHE_TTL);
                if blobs.len() + img.layers.len() + 1 > MAX_KNOWN_BLOBS {
                    blobs.clear();
                }
            }
            let all =
                std::iter::once((&img.config, true)).chain(img.layers.iter().map(|l| (l, false)));
            for (desc, config) in all {
                blobs.insert(
                    (registry.to_owned(), name.to_owned(), desc.digest.clone()),
                    KnownBlob {
                        desc: desc.clone(),
                        config,
                        pull: r.clone(),
                        at: now,
                    },
                );
            }
        }
        let cached = Arc::new(Cached {
            bytes: Bytes::from(m.bytes),
            media_type: m.media_type,
            digest: m.digest,
            manifest: m.manifest,
            at: now,
        });
        {
            let mut ms = lock(&self.manifests);
            if ms.len() >= MAX_CACHED_MANIFESTS {
                ms.retain(|_, c| c.at.elapsed() < CACHE_TTL);
                if ms.len() >= MAX_CACHED_MANIFESTS
                    && let Some(oldest) =
                        ms.iter().min_by_key(|(_, c)| c.at).map(|(k, _)| k.clone())
                {
                    ms.remove(&oldest);
                }
            }
            ms.insert(
                (registry.to_owned(), name.to_owned(), cached.digest.clone()),
                cached.clone(),
            );
        }
        self.ensure_pull(store, &r);
        Ok(ManifestAnswer::Upstream(cached))
    }

    fn cached(&self, registry: &str, name: &str, d: &Digest) -> Option<Arc<Cached>> {
        cached_in(&self.manifests, registry, name, d)
    }

    /// Make sure the pull of a cached image manifest runs (its config names it).
    fn start_known(&self, store: &Store, registry: &str, name: &str, d: &Digest) {
        let Some(c) = self.cached(registry, name, d) else {
            return;
        };
        let pull = match Manifest::parse(&c.bytes, Some(&c.media_type)) {
            Ok((Manifest::Image(img), _)) => self.known(registry, name, &img.config.digest),
            _ => None,
        }
        .map(|k| k.pull);
        let r = pull.or_else(|| Reference::from_parts(registry, name, None, Some(d.clone())).ok());
        if let Some(r) = r {
            self.ensure_pull(store, &r);
        }
    }

    fn known(&self, registry: &str, name: &str, d: &Digest) -> Option<KnownBlob> {
        lock(&self.blobs)
            .get(&(registry.to_owned(), name.to_owned(), d.clone()))
            .filter(|b| b.at.elapsed() < CACHE_TTL)
            .cloned()
    }

    /// Whether `d` is a blob of a manifest this server answered from upstream.
    pub(crate) fn knows_blob(&self, registry: &str, name: &str, d: &Digest) -> bool {
        !self.is_own(registry) && self.known(registry, name, d).is_some()
    }

    /// The background pull of `r`: the running one, one that failed moments ago, or a new
    /// one.
    fn ensure_pull(&self, store: &Store, r: &Reference) -> watch::Receiver<PullState> {
        let key = r.to_string();
        let mut pulls = lock(&self.pulls);
        pulls.retain(|_, rx| match &*rx.borrow() {
            PullState::Running => true,
            PullState::Done(at) | PullState::Failed(_, at) => at.elapsed() < RETRY_AFTER,
        });
        if let Some(rx) = pulls.get(&key)
            && !matches!(&*rx.borrow(), PullState::Done(_))
        {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(PullState::Running);
        pulls.insert(key, rx.clone());
        let (store, r, opts) = (store.clone(), r.clone(), self.opts.clone());
        // A pull pinned to a manifest this server fetched (and judged) reads through the
        // repository's source with that manifest; any other pulls as `hoist pull` does.
        let pinned = r
            .digest()
            .and_then(|d| self.cached(r.registry(), r.repository(), d))
            .and_then(|top| {
                let upstream = self.source(r.registry(), r.repository()).ok()?;
                let lookup = {
                    let manifests = self.manifests.clone();
                    let (registry, name) = (r.registry().to_owned(), r.repository().to_owned());
                    move |d: &Digest| cached_in(&manifests, &registry, &name, d).map(|c| c.raw())
                };
                Some(AnySource::custom(
                    Prefetched::new(upstream, top.raw()).with_manifests(lookup),
                ))
            });
        tokio::spawn(async move {
            let pulled = match &pinned {
                Some(src) => {
                    let mut opts = opts;
                    opts.trust = None;
                    pull_from(&store, &r, src, &opts, &NoProgress).await
                }
                None => pull(&store, &r, &opts, &NoProgress).await,
            };
            let state = match pulled {
                Ok(_) => PullState::Done(Instant::now()),
                Err(e) => {
                    let msg = format!("pulling {r}: {}", error_chain(&e));
                    tracing::warn!("pull-through: {msg}");
                    let e = match e {
                        hoist_transport::TransportError::Trust(_) => ApiError::Denied(msg),
                        _ => ApiError::Upstream(msg),
                    };
                    PullState::Failed(e, Instant::now())
                }
            };
            tx.send_replace(state);
        });
        rx
    }

    /// Pull `r` and wait for it (bounded).
    async fn pull_now(&self, store: &Store, r: &Reference) -> Result<(), ApiError> {
        let rx = self.ensure_pull(store, r);
        match wait_pull(rx, PULL_WAIT).await {
            PullState::Done(_) => Ok(()),
            PullState::Failed(e, _) => Err(e),
            PullState::Running => Err(ApiError::Upstream(format!(
                "pulling {r}: not done after {PULL_WAIT:?}"
            ))),
        }
    }

    /// A blob of a manifest answered from upstream that the store does not hold yet:
    /// `None` when this server never answered a manifest holding it.
    pub(crate) async fn blob(
        &self,
        store: &Store,
        registry: &str,
        name: &str,
        d: &Digest,
    ) -> Result<Option<BlobAnswer>, ApiError> {
        if self.is_own(registry) {
            return Ok(None);
        }
        let Some(k) = self.known(registry, name, d) else {
            return Ok(None);
        };
        if k.config {
            return self
                .fetch_config(&k)
                .await
                .map(|b| Some(BlobAnswer::Whole(b)));
        }
        Ok(Some(BlobAnswer::Pulling {
            desc: Box::new(k.desc),
            pull: self.ensure_pull(store, &k.pull),
        }))
    }

    /// A config, read by the repository's source (the engine's reader; the engine keeps
    /// its own copy in memory until it commits), checked against size and digest.
    async fn fetch_config(&self, k: &KnownBlob) -> Result<Bytes, ApiError> {
        let what = format!("config {} of {}", k.desc.digest, k.pull);
        if k.desc.size > MAX_CONFIG_SIZE {
            return Err(ApiError::Upstream(format!(
                "{what}: {} bytes, more than {MAX_CONFIG_SIZE}",
                k.desc.size
            )));
        }
        let src = self.source(k.pull.registry(), k.pull.repository())?;
        let mut s = src
            .get_blob(&k.desc)
            .await
            .map_err(|e| ApiError::Upstream(format!("{what}: {e}")))?
            .into_async();
        let mut buf = Vec::with_capacity(k.desc.size as usize);
        while let Some(c) = s.next().await {
            let c = c.map_err(|e| ApiError::Upstream(format!("{what}: {e}")))?;
            if (buf.len() + c.len()) as u64 > k.desc.size {
                return Err(ApiError::Upstream(format!(
                    "{what}: more bytes than its size"
                )));
            }
            buf.extend_from_slice(&c);
        }
        let mut h = Hasher::new(k.desc.digest.algorithm());
        h.update(&buf);
        let actual = h.finish();
        if buf.len() as u64 != k.desc.size || actual != k.desc.digest {
            return Err(ApiError::Upstream(format!(
                "{what}: the upstream sent {} bytes hashing to {actual}",
                buf.len()
            )));
        }
        Ok(Bytes::from(buf))
    }
}

fn cached_in(manifests: &Manifests, registry: &str, name: &str, d: &Digest) -> Option<Arc<Cached>> {
    lock(manifests)
        .get(&(registry.to_owned(), name.to_owned(), d.clone()))
        .filter(|c| c.at.elapsed() < CACHE_TTL)
        .cloned()
}

impl PullThrough {
    /// A blob being pulled, as a body ([`Download::tail`]): one download per digest,
    /// shared by every client streaming it.
    pub(crate) fn tail(
        &self,
        store: Store,
        desc: Descriptor,
        pull: watch::Receiver<PullState>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let download = {
            let mut downloads = lock(&self.downloads);
            match downloads.get(&desc.digest).and_then(Weak::upgrade) {
                Some(d)
                    if d.desc.size == desc.size
                        && !d.broken.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    d
                }
                _ => {
                    downloads.retain(|_, w| w.strong_count() > 0);
                    let d = Arc::new(Download::new(store, desc.clone()));
                    downloads.insert(desc.digest.clone(), Arc::downgrade(&d));
                    d
                }
            }
        };
        download::tail(download, pull)
    }
}
