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
//! across runs, each verified blob published as it completes (kept by the lease, withdrawn
//! by the engine if the copy fails).
//!
//! `hoist pull REF` is the copy engine into [`HoistDestination::for_pull`]: named by the
//! reference's tag, or recorded without a name for a reference by digest. Manifests by
//! digest and the config already in the store are reused ([`ImageDestination::reuse`])
//! under their blob locks, held until the commit (so a concurrent pull of the same image
//! waits and then finds them); an image chosen from an index is recorded with it
//! ([`ImageDestination::chosen_from`]).
//!
//! **Several images at once** ([`HoistDestination::next_image`], for `hoist load` of an
//! archive naming several): each image's manifests are set aside under its name, and the
//! one commit checks every image before it publishes anything or moves any name.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use hoist_store::{BlobLock, BlobWriter, ImageCommit, ImageRecord, Store};
use hoist_types::{
    Descriptor, Digest, ImageConfig, MAX_CONFIG_SIZE, MAX_INDEX_DEPTH, MAX_MANIFEST_SIZE, Manifest,
    Platform, Progress, Reference,
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
    /// The index `top` was chosen from, if any (read, with what it lists, only for a copy
    /// of every platform: [`ImageSource::index_of_top`]).
    index: Option<Box<Descriptor>>,
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

/// The manifests `index` lists, through nested indexes (to [`MAX_INDEX_DEPTH`] levels),
/// that the store lacks.
fn missing_under(store: &Store, index: &RawManifest) -> Result<Vec<Digest>, TransportError> {
    let mut missing = Vec::new();
    let mut level = vec![index.clone()];
    for _ in 0..MAX_INDEX_DEPTH {
        let mut next = Vec::new();
        for m in &level {
            let Manifest::Index(idx) = &m.manifest else {
                continue;
            };
            for e in &idx.manifests {
                if store.has_blob(&e.digest)?.is_none() {
                    missing.push(e.digest.clone());
                } else if e.media_type.is_index() {
                    next.push(read_manifest(store, e)?);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    Ok(missing)
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
            let index = rec.index.clone().map(Box::new);
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
                index,
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
                    .ok_or_else(|| TransportError::NotSupportedBy {
                        location: self.describe(),
                        reason: format!("no repository to find tag {t:?} in"),
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

    async fn index_of_top(&self) -> Result<Option<RawManifest>, TransportError> {
        let Some(d) = self.index.as_deref().cloned() else {
            return Ok(None);
        };
        let (store, location) = (self.store.clone(), self.describe());
        blocking(move || {
            if store.has_blob(&d.digest)?.is_none() {
                return Ok(None);
            }
            let index = read_manifest(&store, &d)?;
            let missing = missing_under(&store, &index)?;
            match missing.first() {
                Some(absent) => Err(TransportError::NotSupportedBy {
                    location,
                    reason: format!(
                        "the store lacks {} of the manifests index {} lists ({absent} among \
                         them): a copy of every platform into the store brings them",
                        missing.len(),
                        index.digest,
                    ),
                }),
                None => Ok(Some(index)),
            }
        })
        .await?
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

/// One image a destination records at its commit.
#[derive(Default)]
struct Pending {
    /// The name it gets (`None`: recorded by digest only, as a pull by digest).
    name: Option<Reference>,
    /// Where it came from (recorded).
    source: Option<String>,
    top: Option<RawManifest>,
    instances: Vec<RawManifest>,
    tags: Vec<(Reference, RawManifest)>,
    /// The indexes `top` was chosen from, outermost first.
    chosen_from: Vec<RawManifest>,
}

#[derive(Default)]
struct DestState {
    /// Images set aside by [`HoistDestination::next_image`], in order.
    done: Vec<Pending>,
    current: Pending,
    locks: Vec<BlobLock>,
    /// The digests whose blob lock `locks` holds.
    held: HashSet<Digest>,
    /// Verified blobs not yet published; dropped uncommitted, they remove their temp files.
    staged: Vec<BlobWriter>,
    /// The bytes of staged image configs, checked before anything is published.
    configs: HashMap<Digest, Vec<u8>>,
}

/// Writing one image, or several committed together, into the store.
pub struct HoistDestination {
    store: Store,
    label: String,
    state: Mutex<DestState>,
    /// The records the commit wrote ([`HoistDestination::records`]).
    recorded: Arc<Mutex<Vec<ImageRecord>>>,
}

impl std::fmt::Debug for HoistDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoistDestination")
            .field("store", &self.store.root())
            .field("label", &self.label)
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
        let r = parse_name(name)?;
        Self::with(store, r.to_string(), Some(r), source)
    }

    /// The destination of `hoist pull REFERENCE`: named by the reference's tag, or, for a
    /// reference by digest, recorded without a name (a digest reference); the reference
    /// is recorded as the image's source.
    pub fn for_pull(
        store: Store,
        reference: &Reference,
    ) -> Result<HoistDestination, TransportError> {
        let name = reference.tag().map(|_| {
            Reference::from_parts(
                reference.registry(),
                reference.repository(),
                reference.tag(),
                None,
            )
            .expect("parts of a valid reference")
        });
        Self::with(
            store,
            reference.to_string(),
            name,
            Some(reference.to_string()),
        )
    }

    /// The destination of several images committed together (`hoist load`): each image,
    /// the first one too, is begun with [`next_image`](Self::next_image), which names it;
    /// `label` names the destination in errors.
    pub fn for_images(store: Store, label: String) -> Result<HoistDestination, TransportError> {
        Self::with(store, label, None, None)
    }

    fn with(
        store: Store,
        label: String,
        name: Option<Reference>,
        source: Option<String>,
    ) -> Result<HoistDestination, TransportError> {
        // A leased handle: the blobs this copy writes before its commit records them are
        // kept by a concurrent `hoist gc` (hoist-store's `lease` module).
        let store = store.leased()?;
        let current = Pending {
            name,
            source,
            ..Pending::default()
        };
        Ok(HoistDestination {
            store,
            label,
            recorded: Arc::default(),
            state: Mutex::new(DestState {
                current,
                ..DestState::default()
            }),
        })
    }

    /// Several images committed at once (`hoist load` of an archive naming several): set
    /// what was put so far aside as one image (it must have its top manifest), and start
    /// the next one, to be named `name` (a tag, or `None`: recorded by digest only) with
    /// `source` recorded. [`commit`](ImageDestination::commit) then checks **every**
    /// image (manifests, configs, diff ID counts) before it publishes a blob or moves a
    /// name, and records them in order; a refusal of any leaves the store as it was. The
    /// blobs of all images share this destination's staging (each blob is written once).
    pub fn next_image(
        &self,
        name: Option<&str>,
        source: Option<String>,
    ) -> Result<(), TransportError> {
        let name = name.map(parse_name).transpose()?;
        let mut st = self.state();
        if st.done.is_empty() && st.current.top.is_none() && st.current.name.is_none() {
            // The first image of a destination opened with no name ([`Self::for_images`]).
            st.current.name = name;
            st.current.source = source;
            return Ok(());
        }
        if st.current.top.is_none() {
            return Err(TransportError::OutOfOrder {
                location: self.describe(),
                what: "next image before this one's manifest",
            });
        }
        let next = Pending {
            name,
            source,
            ..Pending::default()
        };
        let done = std::mem::replace(&mut st.current, next);
        st.done.push(done);
        Ok(())
    }

    /// Where the commit leaves the image records it wrote, in commit order (for one
    /// image, its record last): for a caller that hands the destination to the copy
    /// engine, which commits it (`hoist pull` reports the record).
    pub fn records(&self) -> Arc<Mutex<Vec<ImageRecord>>> {
        self.recorded.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DestState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store written to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Take the blob lock of `d` for this destination (held until the commit) unless it
    /// holds it already.
    async fn hold(&self, d: &Digest) -> Result<(), TransportError> {
        if self.state().held.contains(d) {
            return Ok(());
        }
        let (s, dd) = (self.store.clone(), d.clone());
        let lock = blocking(move || s.lock_blob(&dd)).await??;
        let mut st = self.state();
        if st.held.insert(d.clone()) {
            st.locks.push(lock);
        }
        Ok(())
    }

    /// [`commit`](ImageDestination::commit), also returning the image records written
    /// (in commit order: for one image, its record last).
    pub async fn commit_records(self) -> Result<(Committed, Vec<ImageRecord>), TransportError> {
        let location = self.describe();
        let st = std::mem::take(&mut *self.state());
        let (store, recorded) = (self.store, self.recorded);
        let loc = location.clone();
        let (digest, records) = blocking(move || {
            let DestState {
                done,
                current,
                locks,
                staged,
                configs,
                ..
            } = st;
            let mut plans = Vec::with_capacity(done.len() + 1);
            for p in done.iter().chain(std::iter::once(&current)) {
                plans.push((plan_commit(&loc, p)?, p.source.clone()));
            }
            // Everything is checked before anything is published: a refusal leaves the
            // store as it was (the staged writers are dropped).
            for (plan, _) in &plans {
                for (_, m, _) in &plan.images {
                    check_image(&store, &loc, m, &configs)?;
                }
            }
            for w in staged {
                w.commit()?;
            }
            for (plan, _) in &plans {
                for (_, m, _) in &plan.images {
                    store.put_blob(&m.digest, &m.bytes)?;
                }
                for index in &plan.indexes {
                    store.put_blob(&index.digest, &index.bytes)?;
                }
            }
            let mut records = Vec::new();
            for (plan, source) in plans {
                for (name, m, index) in plan.images {
                    records.push(store.commit_image(ImageCommit {
                        name,
                        manifest: m.descriptor(),
                        index,
                        source: source.clone(),
                    })?);
                }
            }
            drop(locks);
            let top = current.top.expect("planned with a top manifest").digest;
            Ok::<_, TransportError>((top, records))
        })
        .await??;
        recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone_from(&records);
        Ok((Committed { digest, location }, records))
    }
}

fn parse_name(name: &str) -> Result<Reference, TransportError> {
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
    Ok(r)
}

impl ImageDestination for HoistDestination {
    fn describe(&self) -> String {
        format!("hoist:{}", self.label)
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
        let held = self.state().held.contains(&desc.digest);
        let (s, d, counter) = (self.store.clone(), desc.clone(), done.clone());
        let (lock, staged) = local::with_progress(&desc.digest, progress, done, move || {
            // One writer per blob across processes; a concurrent pull may have put it.
            let lock = if held {
                None
            } else {
                Some(s.lock_blob(&d.digest)?)
            };
            if s.has_blob(&d.digest)?.is_some() {
                return Ok((lock, None));
            }
            // Verified now, published by `commit` (a failed copy leaves nothing behind).
            let mut w = s.blob_writer(&d.digest, Some(d.size))?;
            let write_err = |source| TransportError::Stream {
                what: format!("writing blob {} into the store", d.digest),
                source,
            };
            let config = if d.media_type.is_config() && d.size <= MAX_CONFIG_SIZE {
                let mut buf = Vec::with_capacity(d.size as usize);
                local::copy_verified(&mut stream, &d, &mut buf, &counter)?;
                w.write_all(&buf).map_err(write_err)?;
                Some(buf)
            } else {
                local::copy_into_writer(&mut stream, &d, &mut w, &counter)?;
                None
            };
            w.flush().map_err(write_err)?;
            Ok((lock, Some((w, config))))
        })
        .await?;
        let mut st = self.state();
        if let Some(lock) = lock
            && st.held.insert(desc.digest.clone())
        {
            st.locks.push(lock);
        }
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
    /// the copy fails ([`Store::withdraw_unreached`]). A blob whose lock this copy holds
    /// (its config) is fetched under that lock.
    async fn put_blob_from(
        &self,
        desc: &Descriptor,
        kind: hoist_types::BlobKind,
        fetcher: &BlobFetcher,
        progress: &dyn Progress,
    ) -> Result<bool, TransportError> {
        let held: HashSet<Digest> = match self.state().held.contains(&desc.digest) {
            true => HashSet::from([desc.digest.clone()]),
            false => HashSet::new(),
        };
        let fetched = fetcher
            .fetch_to_store(&self.store, &held, desc, kind, progress)
            .await?;
        Ok(fetched.is_some())
    }

    /// Under the blob's lock, held until the commit: a concurrent pull of the same image
    /// waits for this one, then finds the manifests and config stored.
    async fn reuse(&self, desc: &Descriptor) -> Result<Option<Vec<u8>>, TransportError> {
        self.hold(&desc.digest).await?;
        let (s, d) = (self.store.clone(), desc.clone());
        blocking(move || {
            if d.size > MAX_MANIFEST_SIZE.max(MAX_CONFIG_SIZE) || s.has_blob(&d.digest)?.is_none() {
                return Ok(None);
            }
            // A blob that does not read back as itself is not reused (fsck reports it).
            let Ok(bytes) = s.read_blob(&d.digest, MAX_MANIFEST_SIZE.max(MAX_CONFIG_SIZE)) else {
                return Ok(None);
            };
            let mut h = hoist_types::Hasher::new(d.digest.algorithm());
            h.update(&bytes);
            Ok((bytes.len() as u64 == d.size && h.finish() == d.digest).then_some(bytes))
        })
        .await?
    }

    async fn read_back(&self, desc: &Descriptor) -> Result<Option<BlobStream>, TransportError> {
        let (s, d, loc) = (self.store.clone(), desc.clone(), self.describe());
        blocking(move || {
            if s.has_blob(&d.digest)?.is_none() {
                return Ok(None);
            }
            local::blob_stream(&s.blob_path(&d.digest), &d, &loc).map(Some)
        })
        .await?
    }

    fn chosen_from(&self, indexes: &[RawManifest]) {
        self.state().current.chosen_from = indexes.to_vec();
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        // Stored by `commit`, with the blobs it names.
        let mut st = self.state();
        match target {
            ManifestTarget::Top => st.current.top = Some(manifest.clone()),
            ManifestTarget::Instance => st.current.instances.push(manifest.clone()),
            ManifestTarget::Tag(t) => {
                let r = match &st.current.name {
                    Some(n) => n.with_tag(t)?,
                    None => {
                        return Err(TransportError::NotSupportedBy {
                            location: self.describe(),
                            reason: format!("no repository to tag {t:?} in"),
                        });
                    }
                };
                st.current.tags.push((r, manifest.clone()));
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
        Ok(self.commit_records().await?.0)
    }
}

/// What a commit records: each image manifest with the name it gets and the index it was
/// chosen from, in commit order (the destination's own name last), and the indexes to
/// store.
struct CommitPlan {
    images: Vec<(Option<Reference>, RawManifest, Option<Descriptor>)>,
    indexes: Vec<RawManifest>,
}

/// Decide what `commit` records; refuse, before anything is published, what the store
/// cannot hold: no manifest, schema 1, an index without images, a manifest that would be
/// left unrecorded (a referrer).
fn plan_commit(location: &str, st: &Pending) -> Result<CommitPlan, TransportError> {
    let name = st.name.clone();
    let top = st.top.as_ref().ok_or_else(|| TransportError::OutOfOrder {
        location: location.to_owned(),
        what: "commit without a manifest",
    })?;
    let mut images = Vec::new();
    for (tag, m) in &st.tags {
        if matches!(m.manifest, Manifest::Image(_)) {
            images.push((Some(tag.clone()), m.clone(), None));
        }
    }
    let mut indexes = Vec::new();
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
                .ok_or_else(|| TransportError::NoImage {
                    location: format!("{location}: the index {}", top.digest),
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
            images.push((name, (*m).clone(), Some(top.descriptor())));
            indexes.push(top.clone());
            in_index.iter().map(|m| &m.digest).collect()
        }
        Manifest::Image(_) => {
            // Chosen from an index (a copy without `all`): recorded with the outermost.
            let index = st.chosen_from.first().map(RawManifest::descriptor);
            images.push((name, top.clone(), index));
            indexes.extend(st.chosen_from.iter().cloned());
            Vec::new()
        }
        Manifest::Schema1(_) => {
            return Err(TransportError::NotSupportedBy {
                location: location.to_owned(),
                reason: "schema 1 manifests are converted by a pull, not stored as they are"
                    .to_owned(),
            });
        }
    };
    if let Some(m) = st.instances.iter().find(|m| !listed.contains(&&m.digest)) {
        return Err(TransportError::NotSupportedBy {
            location: location.to_owned(),
            reason: format!(
                "the store keeps images only, not manifest {} ({}), which {} does not list",
                m.digest, m.media_type, top.digest
            ),
        });
    }
    Ok(CommitPlan { images, indexes })
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
        return Err(TransportError::NotAnImage {
            location: location.to_owned(),
            digest: m.digest.clone(),
            found: format!("media type {}", m.media_type),
        });
    };
    if !im.config.media_type.is_config() {
        let artifact = im
            .artifact_type
            .as_deref()
            .map(|t| format!(", artifact type {t}"))
            .unwrap_or_default();
        return Err(TransportError::NotAnImage {
            location: location.to_owned(),
            digest: m.digest.clone(),
            found: format!(
                "an artifact: config media type {}{artifact}; the store holds images only",
                im.config.media_type
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

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_types::MediaType;

    /// One image's blobs and manifest: a layer, a config with `diff_ids` diff IDs.
    fn image(
        seed: &str,
        diff_ids: usize,
    ) -> (Descriptor, Vec<u8>, Descriptor, Vec<u8>, RawManifest) {
        let layer = format!("layer {seed}").into_bytes();
        let ldesc = Descriptor::new(
            MediaType::DockerLayerGzip,
            Digest::sha256_of(&layer),
            layer.len() as u64,
        );
        let ids: Vec<String> = (0..diff_ids)
            .map(|_| format!("\"{}\"", Digest::sha256_of(&layer)))
            .collect();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            ids.join(",")
        )
        .into_bytes();
        let cdesc = Descriptor::new(
            MediaType::DockerConfig,
            Digest::sha256_of(&config),
            config.len() as u64,
        );
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":{}}}]}}"#,
            cdesc.digest, cdesc.size, ldesc.digest, ldesc.size
        );
        let m = raw_manifest(manifest.into_bytes(), None, None).unwrap();
        (ldesc, layer, cdesc, config, m)
    }

    async fn put(dst: &HoistDestination, desc: &Descriptor, bytes: &[u8]) {
        let stream = BlobStream::from_reader(
            Box::new(std::io::Cursor::new(bytes.to_vec())),
            desc.size,
            "test",
        );
        dst.put_blob(desc, stream, &hoist_types::NoProgress)
            .await
            .unwrap();
    }

    async fn two_images(
        store: &Store,
        second_diff_ids: usize,
    ) -> Result<Vec<ImageRecord>, TransportError> {
        let dst = HoistDestination::open(store.clone(), "example.com/a:1", None).unwrap();
        let (l, lb, c, cb, m) = image("a", 1);
        put(&dst, &l, &lb).await;
        put(&dst, &c, &cb).await;
        dst.put_manifest(&m, &ManifestTarget::Top).await.unwrap();
        dst.next_image(Some("example.com/b:1"), Some("archive".into()))
            .unwrap();
        let (l, lb, c, cb, m) = image("b", second_diff_ids);
        put(&dst, &l, &lb).await;
        put(&dst, &c, &cb).await;
        dst.put_manifest(&m, &ManifestTarget::Top).await.unwrap();
        Ok(dst.commit_records().await?.1)
    }

    #[tokio::test]
    async fn several_images_commit_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        // The second image is refused (two diff IDs, one layer): neither is named, and
        // nothing of the first is published.
        let err = two_images(&store, 2).await.unwrap_err();
        assert!(matches!(err, TransportError::InvalidConfig { .. }), "{err}");
        assert!(store.resolve("example.com/a:1").is_err());
        assert!(store.resolve("example.com/b:1").is_err());
        let (l, ..) = image("a", 1);
        assert!(store.has_blob(&l.digest).unwrap().is_none());
        assert!(store.images().unwrap().is_empty());
        // Both valid: both named, in order, by one commit.
        let records = two_images(&store, 1).await.unwrap();
        assert_eq!(records.len(), 2);
        let a = store.resolve("example.com/a:1").unwrap();
        let b = store.resolve("example.com/b:1").unwrap();
        assert_eq!(
            (a.id.clone(), b.id.clone()),
            (records[0].id.clone(), records[1].id.clone())
        );
        assert_eq!(b.source.as_deref(), Some("archive"));
        assert_ne!(a.id, b.id);
    }

    /// A manifest missing under a nested index is found before a copy of every platform.
    #[test]
    fn missing_manifests_are_found_through_nested_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let (.., present) = image("a", 1);
        let (.., absent) = image("b", 1);
        store.put_blob(&present.digest, &present.bytes).unwrap();
        let index_of = |ms: &[&RawManifest], mt: &str| {
            let entries: Vec<String> = ms
                .iter()
                .map(|m| {
                    format!(
                        r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
                        m.media_type.as_str(),
                        m.digest,
                        m.bytes.len()
                    )
                })
                .collect();
            let bytes = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}","manifests":[{}]}}"#,
                entries.join(",")
            );
            raw_manifest(bytes.into_bytes(), None, None).unwrap()
        };
        let oci_index = "application/vnd.oci.image.index.v1+json";
        let inner = index_of(&[&present, &absent], oci_index);
        store.put_blob(&inner.digest, &inner.bytes).unwrap();
        let outer = index_of(&[&present, &inner], oci_index);
        assert_eq!(
            missing_under(&store, &outer).unwrap(),
            vec![absent.digest.clone()]
        );
        store.put_blob(&absent.digest, &absent.bytes).unwrap();
        assert!(missing_under(&store, &outer).unwrap().is_empty());
    }

    #[test]
    fn next_image_needs_a_manifest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let dst = HoistDestination::open(store, "example.com/a:1", None).unwrap();
        assert!(dst.next_image(Some("example.com/b:1"), None).is_err());
        assert!(dst.next_image(Some("example.com/b@sha256:0000000000000000000000000000000000000000000000000000000000000000"), None).is_err());
    }
}
