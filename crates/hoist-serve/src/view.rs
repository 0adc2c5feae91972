//! The store seen as registries of repositories: which tags, manifests and blobs each
//! `(registry, repository)` holds. Built from one consistent snapshot of the image
//! records ([`Store::images`]) and rebuilt when `index.json` changes (every change of
//! names or records rewrites it, last).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use hoist_store::{ImageRecord, Store, StoreError};
use hoist_types::{Descriptor, Digest, MediaType, Reference};

/// One repository of one registry.
#[derive(Debug, Default, Clone)]
pub struct Repo {
    /// Tag → what it points at.
    pub tags: BTreeMap<String, TagTarget>,
    /// Every manifest (image manifests, indexes, OCI views) reachable in this repository.
    pub manifests: HashMap<Digest, Descriptor>,
    /// Every blob (configs, layers, and the manifests) of its images.
    pub blobs: HashSet<Digest>,
}

/// What a tag resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTarget {
    /// The manifest the tag was pulled as: the index when there was one.
    pub top: Descriptor,
    /// The image manifest stored for it (the platform chosen from the index).
    pub image: Descriptor,
}

/// All repositories, by registry then repository path.
#[derive(Debug, Default)]
pub struct View {
    /// registry → repository path → its content.
    pub registries: BTreeMap<String, BTreeMap<String, Repo>>,
}

fn repo_of(s: &str) -> Option<(String, String)> {
    let s = s.strip_prefix("docker://").unwrap_or(s);
    let r = Reference::parse(s).ok()?;
    Some((r.registry().to_owned(), r.repository().to_owned()))
}

impl View {
    /// Build from image records.
    pub fn build(records: &[ImageRecord]) -> View {
        let mut v = View::default();
        for rec in records {
            let mut repos = BTreeSet::new();
            for n in &rec.names {
                repos.insert((n.registry().to_owned(), n.repository().to_owned()));
            }
            for s in rec.repo_digests.iter().chain(rec.source.iter()) {
                if let Some(r) = repo_of(s) {
                    repos.insert(r);
                }
            }
            let blobs = rec.blobs();
            let mut manifests: Vec<Descriptor> = Vec::new();
            for var in rec.variants() {
                manifests.push(var.manifest.clone());
                manifests.extend(var.index.clone());
                manifests.extend(rec.oci_view(&var.manifest.digest).cloned());
            }
            for (registry, repo) in repos {
                let entry = v
                    .registries
                    .entry(registry.clone())
                    .or_default()
                    .entry(repo.clone())
                    .or_default();
                entry.blobs.extend(blobs.iter().cloned());
                for m in &manifests {
                    entry
                        .manifests
                        .entry(m.digest.clone())
                        .or_insert_with(|| m.clone());
                }
                for n in &rec.names {
                    if n.registry() != registry || n.repository() != repo {
                        continue;
                    }
                    if let Some(t) = n.tag() {
                        let var = rec.target_of(n);
                        entry.tags.insert(
                            t.to_owned(),
                            TagTarget {
                                top: var.top().clone(),
                                image: var.manifest.clone(),
                            },
                        );
                    }
                }
            }
        }
        v
    }

    /// The registries that hold repository `repo`.
    pub fn registries_with(&self, repo: &str) -> Vec<&str> {
        self.registries
            .iter()
            .filter(|(_, repos)| repos.contains_key(repo))
            .map(|(r, _)| r.as_str())
            .collect()
    }

    /// The repository `repo` of `registry`.
    pub fn repo(&self, registry: &str, repo: &str) -> Option<&Repo> {
        self.registries.get(registry)?.get(repo)
    }
}

/// `index.json`'s identity: it is rewritten (a new inode) after every change.
type Stamp = (u64, u64, i64, i64, u64);

/// A cached [`View`], rebuilt when `index.json` changes.
#[derive(Debug)]
pub struct ViewCache {
    store: Store,
    cached: Mutex<Option<(Stamp, Arc<View>)>>,
}

impl ViewCache {
    /// A cache over `store`.
    pub fn new(store: Store) -> ViewCache {
        ViewCache {
            store,
            cached: Mutex::new(None),
        }
    }

    fn stamp(&self) -> Result<Stamp, StoreError> {
        let p = self.store.root().join("index.json");
        let m = std::fs::metadata(&p).map_err(|e| StoreError::Io {
            op: "stat",
            path: Some(p),
            source: e,
        })?;
        Ok((m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.dev()))
    }

    /// The current view (blocking: call from a blocking thread).
    pub fn get(&self) -> Result<Arc<View>, StoreError> {
        let stamp = self.stamp()?;
        if let Some((s, v)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner())
            && *s == stamp
        {
            return Ok(v.clone());
        }
        let records = self.store.images()?;
        let view = Arc::new(View::build(&records));
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((stamp, view.clone()));
        Ok(view)
    }

    /// Forget the cached view (after this process changed the store).
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The `Content-Type` of a stored manifest: the media type its descriptor records, else
/// what its bytes say.
pub fn manifest_content_type(desc: &Descriptor, bytes: &[u8]) -> String {
    if desc.media_type.is_manifest() {
        return desc.media_type.as_str().to_owned();
    }
    match hoist_types::Manifest::parse(bytes, None) {
        Ok((_, mt)) => mt.as_str().to_owned(),
        Err(_) => MediaType::OciManifest.as_str().to_owned(),
    }
}
