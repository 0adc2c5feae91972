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
//! writes it once) through [`Store::blob_writer`], which verifies size and digest before
//! publishing; manifests are stored as blobs; `commit` records the image with
//! [`Store::commit_image`] and moves the name, last. With an index (`--all`), every image
//! manifest of it is recorded and the name goes to the host platform's (or the first).
//! A copy that fails leaves the name where it was, and at most verified blobs nothing
//! references (which `hoist gc` removes).

use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use hoist_store::{BlobLock, ImageCommit, Store};
use hoist_types::{Descriptor, Digest, MAX_MANIFEST_SIZE, Manifest, Platform, Progress, Reference};

use super::local;
use super::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ImageSource,
    ManifestRef, ManifestTarget, RawManifest, raw_manifest,
};
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
        let lock = local::with_progress(&desc.digest, progress, done, move || {
            // One writer per blob across processes; a concurrent pull may have put it.
            let lock = s.lock_blob(&d.digest)?;
            if s.has_blob(&d.digest)?.is_some() {
                return Ok(lock);
            }
            let mut w = s.blob_writer(&d.digest, Some(d.size))?;
            local::copy_verified(&mut stream, &d, &mut w as &mut dyn Write, &counter)?;
            w.commit()?;
            Ok(lock)
        })
        .await?;
        self.state().locks.push(lock);
        Ok(())
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        let (s, m) = (self.store.clone(), manifest.clone());
        blocking(move || s.put_blob(&m.digest, &m.bytes)).await??;
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
        let top = st.top.ok_or_else(|| TransportError::Unsupported {
            what: format!("{location}: commit without a manifest"),
        })?;
        let (store, name, source) = (self.store, self.name, self.source);
        let digest = top.digest.clone();
        let locks = st.locks;
        let loc = location.clone();
        blocking(move || {
            let location = loc;
            let commit = |name: Option<Reference>, m: &RawManifest, index: Option<Descriptor>| {
                store.commit_image(ImageCommit {
                    name,
                    manifest: m.descriptor(),
                    index,
                    source: source.clone(),
                })
            };
            for (tag, m) in &st.tags {
                if matches!(m.manifest, Manifest::Image(_)) {
                    commit(Some(tag.clone()), m, None)?;
                }
            }
            match &top.manifest {
                Manifest::Index(idx) => {
                    let host = Platform::host();
                    let images: Vec<&RawManifest> = st
                        .instances
                        .iter()
                        .filter(|m| matches!(m.manifest, Manifest::Image(_)))
                        .collect();
                    let chosen = idx
                        .manifests
                        .iter()
                        .find(|d| {
                            d.platform.as_ref().is_some_and(|p| host.matches(p))
                                && images.iter().any(|m| m.digest == d.digest)
                        })
                        .map(|d| d.digest.clone())
                        .or_else(|| images.first().map(|m| m.digest.clone()))
                        .ok_or_else(|| TransportError::Unsupported {
                            what: format!("{location}: the index {} holds no image", top.digest),
                        })?;
                    for m in &images {
                        if m.digest != chosen {
                            commit(None, m, Some(top.descriptor()))?;
                        }
                    }
                    let m = images
                        .iter()
                        .find(|m| m.digest == chosen)
                        .expect("chosen among them");
                    commit(Some(name), m, Some(top.descriptor()))?;
                }
                Manifest::Image(_) => {
                    commit(Some(name), &top, None)?;
                }
                Manifest::Schema1(_) => {
                    return Err(TransportError::Unsupported {
                        what: format!(
                            "{location}: schema 1 manifests are converted by `hoist pull`, not stored as they are"
                        ),
                    });
                }
            }
            drop(locks);
            Ok(())
        })
        .await??;
        Ok(Committed { digest, location })
    }
}
