//! `hoist:REF` (and a bare `REF`): the local store.
//!
//! **Source**: `REF` is what [`Store::resolve`] takes (a name, an image ID or unique
//! prefix, a manifest digest); the top manifest is the image manifest the name was
//! committed with (never the index it was chosen from, whose other platforms the store
//! may not hold). Blobs are read from `blobs/<alg>/<hex>`; the destination verifies them.
//! The registry repositories the image was pulled from are offered as mount hints.
//!
//! **Destination**: `REF` must be a name (`host/repo:tag`, normalised like `docker://`).
//! Each blob is written under its store lock (so a concurrent pull of the same blob
//! writes it once) into a [`Store::blob_writer`] that stays **staged**: verified (size and
//! digest) into its temp file in `hoist/ingest/`, not published. Manifests are kept in
//! memory. `commit` first checks everything it is about to record (each manifest is an
//! image manifest, its config an image config the store can read whose diff IDs match
//! the layers; no manifest would be left unrecorded, such as a referrer), then publishes
//! the staged blobs, stores the manifests, records the images with
//! [`Store::commit_image`] and moves the name, last. With an index (`--all`), every image
//! manifest of it is recorded and the name goes to the host platform's (or the first).
//! A copy that fails, or a destination dropped without commit, leaves the store as it
//! was: the staged writers remove their temp files, so `hoist fsck` finds no orphan.
//! A source with a resumable reader (a registry) is fetched through it instead
//! ([`ImageDestination::put_blob_from`]): into the store's partial ingest file, resumed
//! across runs, each verified blob published as it completes, like `hoist pull`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use hoist_store::{BlobLock, BlobWriter, ImageCommit, Store};
use hoist_types::{
    Descriptor, Digest, ImageConfig, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, Manifest, Platform,
    Progress, Reference,
};

use super::local;
use super::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ImageSource,
    ManifestRef, ManifestTarget, RawManifest, raw_manifest,
};
use crate::fetch::BlobFetcher;
use crate::{TransportError, blocking};

/// Reading an image from the store.
#[derive(Debug)]
pub struct HoistSource {
    store: Store,
    name: String,
    top: RawManifest,
    locations: Vec<BlobLocation>,
    repo: Option<Reference>,
}

/// The registry repository a reference string names, if it parses.
fn location_of(s: &str) -> Option<BlobLocation> {
    let s = s.strip_prefix("docker://").unwrap_or(s);
    let r = Reference::parse(s).ok()?;
    Some(BlobLocation {
        registry: r.registry().to_owned(),
        repository: r.repository().to_owned(),
    })
}

fn read_manifest(store: &Store, desc: &Descriptor) -> Result<RawManifest, TransportError> {
    let bytes = store.read_blob(&desc.digest, MAX_MANIFEST_SIZE)?;
    let declared = desc.media_type.is_manifest().then_some(&desc.media_type);
    Ok(raw_manifest(bytes, declared, Some(&desc.digest))?)
}

impl HoistSource {
    /// Resolve `name` in `store`.
    pub async fn open(store: Store, name: String) -> Result<HoistSource, TransportError> {
        blocking(move || {
            let rec = store.resolve(&name)?;
            let top = read_manifest(&store, &rec.manifest)?;
            let mut locations: Vec<BlobLocation> = rec
                .source
                .iter()
                .chain(&rec.repo_digests)
                .filter_map(|s| location_of(s))
                .collect();
            for n in &rec.names {
                if let Some(l) = location_of(&n.to_string()) {
                    locations.push(l);
                }
            }
            locations.dedup();
            let repo = Reference::parse(&name).ok();
            Ok(HoistSource {
                store,
                name,
                top,
                locations,
                repo,
            })
        })
        .await?
    }
}

impl ImageSource for HoistSource {
    fn describe(&self) -> String {
        format!("hoist:{}", self.name)
    }

    async fn get_manifest(&self, which: &ManifestRef) -> Result<RawManifest, TransportError> {
        match which {
            ManifestRef::Top => Ok(self.top.clone()),
            ManifestRef::Digest(d) if d == &self.top.digest => Ok(self.top.clone()),
            ManifestRef::Digest(d) => {
                let (s, desc) = (
                    self.store.clone(),
                    Descriptor::new(hoist_types::MediaType::Other(String::new()), d.clone(), 0),
                );
                blocking(move || read_manifest(&s, &desc)).await?
            }
            ManifestRef::Tag(t) => {
                let repo = self
                    .repo
                    .as_ref()
                    .ok_or_else(|| TransportError::Unsupported {
                        what: format!("{}: no repository to find tag {t:?} in", self.describe()),
                    })?;
                let name = repo.with_tag(t)?.to_string();
                let s = self.store.clone();
                blocking(move || {
                    let rec = s.resolve(&name)?;
                    read_manifest(&s, &rec.manifest)
                })
                .await?
            }
        }
    }

    async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, TransportError> {
        let (s, d, loc) = (self.store.clone(), desc.clone(), self.describe());
        blocking(move || {
            let path = s.blob_path(&d.digest);
            local::blob_stream(&path, &d, &loc)
        })
        .await?
    }

    async fn tags(&self) -> Result<Vec<String>, TransportError> {
        let Some(repo) = self.repo.clone() else {
            return Ok(Vec::new());
        };
        let s = self.store.clone();
        blocking(move || {
            let mut tags: Vec<String> = s
                .images()?
                .iter()
                .flat_map(|r| r.names.iter())
                .filter(|n| n.registry() == repo.registry() && n.repository() == repo.repository())
                .filter_map(|n| n.tag().map(str::to_owned))
                .collect();
            tags.sort();
            tags.dedup();
            Ok(tags)
        })
        .await?
    }

    fn blob_locations(&self) -> Vec<BlobLocation> {
        self.locations.clone()
    }
}

#[derive(Default)]
struct DestState {
    top: Option<RawManifest>,
    instances: Vec<RawManifest>,
    tags: Vec<(Reference, RawManifest)>,
    locks: Vec<BlobLock>,
    /// Verified blobs not yet published; dropped uncommitted, they remove their temp files.
    staged: Vec<BlobWriter>,
    /// The bytes of staged image configs, checked before anything is published.
    configs: HashMap<Digest, Vec<u8>>,
}

/// Writing an image into the store.
pub struct HoistDestination {
    store: Store,
    name: Reference,
    source: Option<String>,
    state: Mutex<DestState>,
}

impl std::fmt::Debug for HoistDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoistDestination")
            .field("store", &self.store.root())
            .field("name", &self.name.to_string())
            .finish_non_exhaustive()
    }
}

impl HoistDestination {
    /// Prepare writing the image named `name` (a tag) into `store`; `source` is recorded
    /// as where it came from.
    pub fn open(
        store: Store,
        name: &str,
        source: Option<String>,
    ) -> Result<HoistDestination, TransportError> {
        let bad = |reason: &str| TransportError::InvalidImageRef {
            input: format!("hoist:{name}"),
            reason: reason.to_owned(),
        };
        let r = Reference::parse(name).map_err(|e| bad(&e.to_string()))?;
        if r.digest().is_some() || r.tag().is_none() {
            return Err(bad(
                "a store destination is a name with a tag, not a digest",
            ));
        }
        // A leased handle: the blobs this copy writes before its commit records them are
        // kept by a concurrent `hoist gc` (hoist-store's `lease` module).
        let store = store.leased()?;
        Ok(HoistDestination {
            store,
            name: r,
            source,
            state: Mutex::new(DestState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DestState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store written to.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl ImageDestination for HoistDestination {
    fn describe(&self) -> String {
        format!("hoist:{}", self.name)
    }

    fn capabilities(&self) -> DestinationCaps {
        DestinationCaps::default()
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        _hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        let (s, d) = (self.store.clone(), desc.digest.clone());
        Ok(blocking(move || s.has_blob(&d)).await??.is_some())
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        mut stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        let done = Arc::new(AtomicU64::new(0));
        let (s, d, counter) = (self.store.clone(), desc.clone(), done.clone());
        let (lock, staged) = local::with_progress(&desc.digest, progress, done, move || {
            // One writer per blob across processes; a concurrent pull may have put it.
            let lock = s.lock_blob(&d.digest)?;
            if s.has_blob(&d.digest)?.is_some() {
                return Ok((lock, None));
            }
            // Verified now, published by `commit` (a failed copy leaves nothing behind).
            let mut w = s.blob_writer(&d.digest, Some(d.size))?;
            let write_err = |source| TransportError::Io {
                what: format!("writing blob {} into the store", d.digest),
                source,
            };
            let config = if d.media_type.is_config() && d.size <= MAX_CONFIG_SIZE {
                let mut buf = Vec::with_capacity(d.size as usize);
                local::copy_verified(&mut stream, &d, &mut buf, &counter)?;
                w.write_all(&buf).map_err(write_err)?;
                Some(buf)
            } else {
                local::copy_verified(&mut stream, &d, &mut w as &mut dyn Write, &counter)?;
                None
            };
            w.flush().map_err(write_err)?;
            Ok((lock, Some((w, config))))
        })
        .await?;
        let mut st = self.state();
        st.locks.push(lock);
        if let Some((w, config)) = staged {
            if let Some(bytes) = config {
                st.configs.insert(desc.digest.clone(), bytes);
            }
            st.staged.push(w);
        }
        Ok(())
    }

    /// Fetched into the store's partial ingest file under the blob's lock (resumed
    /// across runs, sliced when large) and published once verified, as a pull does: the
    /// blob is kept by this copy's lease until the commit records it, and withdrawn if
    /// the copy fails ([`Store::withdraw_unreached`]).
    async fn put_blob_from(
        &self,
        desc: &Descriptor,
        kind: hoist_types::BlobKind,
        fetcher: &BlobFetcher,
        progress: &dyn Progress,
    ) -> Result<bool, TransportError> {
        let held = std::collections::HashSet::new();
        let fetched = fetcher
            .fetch_to_store(&self.store, &held, desc, kind, progress)
            .await?;
        Ok(fetched.is_some())
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        // Stored by `commit`, with the blobs it names.
        let mut st = self.state();
        match target {
            ManifestTarget::Top => st.top = Some(manifest.clone()),
            ManifestTarget::Instance => st.instances.push(manifest.clone()),
            ManifestTarget::Tag(t) => {
                let r = self.name.with_tag(t)?;
                st.tags.push((r, manifest.clone()));
            }
        }
        Ok(())
    }

    async fn put_signatures(
        &self,
        instance: &Digest,
        signatures: &[Vec<u8>],
    ) -> Result<(), TransportError> {
        super::refuse_signatures(
            self.describe(),
            instance,
            signatures,
            "the store keeps no simple-signing signatures",
        )
    }

    async fn commit(self) -> Result<Committed, TransportError> {
        let location = self.describe();
        let st = std::mem::take(&mut *self.state());
        let (store, name, source) = (self.store, self.name, self.source);
        let loc = location.clone();
        let digest = blocking(move || {
            let plan = plan_commit(&loc, name, &st)?;
            // Everything is checked before anything is published: a refusal leaves the
            // store as it was (the staged writers are dropped with `st`).
            for (_, m, _) in &plan.images {
                check_image(&store, &loc, m, &st.configs)?;
            }
            let DestState {
                staged, locks, top, ..
            } = st;
            for w in staged {
                w.commit()?;
            }
            for (_, m, _) in &plan.images {
                store.put_blob(&m.digest, &m.bytes)?;
            }
            if let Some(index) = &plan.index {
                store.put_blob(&index.digest, &index.bytes)?;
            }
            for (name, m, index) in plan.images {
                store.commit_image(ImageCommit {
                    name,
                    manifest: m.descriptor(),
                    index,
                    source: source.clone(),
                })?;
            }
            drop(locks);
            Ok::<_, TransportError>(top.expect("planned with a top manifest").digest)
        })
        .await??;
        Ok(Committed { digest, location })
    }
}

/// What a commit records: each image manifest with the name it gets and the index it was
/// chosen from, in commit order (the destination's own name last), and the index to
/// store.
struct CommitPlan {
    images: Vec<(Option<Reference>, RawManifest, Option<Descriptor>)>,
    index: Option<RawManifest>,
}

/// Decide what `commit` records; refuse, before anything is published, what the store
/// cannot hold: no manifest, schema 1, an index without images, a manifest that would be
/// left unrecorded (a referrer).
fn plan_commit(
    location: &str,
    name: Reference,
    st: &DestState,
) -> Result<CommitPlan, TransportError> {
    let top = st.top.as_ref().ok_or_else(|| TransportError::Unsupported {
        what: format!("{location}: commit without a manifest"),
    })?;
    let mut images = Vec::new();
    for (tag, m) in &st.tags {
        if matches!(m.manifest, Manifest::Image(_)) {
            images.push((Some(tag.clone()), m.clone(), None));
        }
    }
    let mut index = None;
    let listed: Vec<&Digest> = match &top.manifest {
        Manifest::Index(idx) => {
            let in_index: Vec<&RawManifest> = st
                .instances
                .iter()
                .filter(|m| {
                    matches!(m.manifest, Manifest::Image(_))
                        && idx.manifests.iter().any(|d| d.digest == m.digest)
                })
                .collect();
            let host = Platform::host();
            let chosen = idx
                .manifests
                .iter()
                .find(|d| {
                    d.platform.as_ref().is_some_and(|p| host.matches(p))
                        && in_index.iter().any(|m| m.digest == d.digest)
                })
                .map(|d| d.digest.clone())
                .or_else(|| in_index.first().map(|m| m.digest.clone()))
                .ok_or_else(|| TransportError::Unsupported {
                    what: format!("{location}: the index {} holds no image", top.digest),
                })?;
            for m in &in_index {
                if m.digest != chosen {
                    images.push((None, (*m).clone(), Some(top.descriptor())));
                }
            }
            let m = in_index
                .iter()
                .find(|m| m.digest == chosen)
                .expect("chosen among them");
            images.push((Some(name), (*m).clone(), Some(top.descriptor())));
            index = Some(top.clone());
            in_index.iter().map(|m| &m.digest).collect()
        }
        Manifest::Image(_) => {
            images.push((Some(name), top.clone(), None));
            Vec::new()
        }
        Manifest::Schema1(_) => {
            return Err(TransportError::Unsupported {
                what: format!(
                    "{location}: schema 1 manifests are converted by `hoist pull`, not stored as they are"
                ),
            });
        }
    };
    if let Some(m) = st.instances.iter().find(|m| !listed.contains(&&m.digest)) {
        return Err(TransportError::Unsupported {
            what: format!(
                "{location}: the store keeps images only, not manifest {} ({}), which {} does not list",
                m.digest, m.media_type, top.digest
            ),
        });
    }
    Ok(CommitPlan { images, index })
}

/// Check that `m` is an image the store can record: an image manifest whose config is an
/// image config (staged by this copy, or already in the store) that parses and has one
/// diff ID per layer. The store checks the same when it records the image; checking it
/// first means nothing is published for an image that would then be refused.
fn check_image(
    store: &Store,
    location: &str,
    m: &RawManifest,
    staged: &HashMap<Digest, Vec<u8>>,
) -> Result<(), TransportError> {
    let Manifest::Image(im) = &m.manifest else {
        return Err(TransportError::Unsupported {
            what: format!("{location}: manifest {} is not an image manifest", m.digest),
        });
    };
    if !im.config.media_type.is_config() {
        let artifact = im
            .artifact_type
            .as_deref()
            .map(|t| format!(", artifact type {t}"))
            .unwrap_or_default();
        return Err(TransportError::Unsupported {
            what: format!(
                "{location}: manifest {} is an artifact, not an image (config media type {}{artifact}); the store holds images only",
                m.digest, im.config.media_type
            ),
        });
    }
    let invalid = |source| TransportError::InvalidConfig {
        digest: im.config.digest.clone(),
        source,
    };
    let stored;
    let bytes = match staged.get(&im.config.digest) {
        Some(b) => b,
        None => {
            stored = store.read_blob(&im.config.digest, MAX_CONFIG_SIZE)?;
            &stored
        }
    };
    let cfg = ImageConfig::parse(bytes).map_err(invalid)?;
    cfg.check_layer_count(im.layers.len()).map_err(invalid)?;
    Ok(())
}
