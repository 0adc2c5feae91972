//! Image records: the JSON files in `hoist/images/`, one per image (config digest).

use std::fs;
use std::io;
use std::path::PathBuf;

use hoist_types::{Descriptor, Digest, MediaType, Platform, Reference};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::{Store, StoreError};

/// Largest image record read, in bytes.
const MAX_RECORD_SIZE: u64 = 16 * 1024 * 1024;

/// What the pull engine (or a loader) hands to [`Store::commit_image`].
#[derive(Debug, Clone)]
pub struct ImageCommit {
    /// The tag to point at this image; `None` for a pull by digest without tag.
    pub name: Option<Reference>,
    /// The image manifest actually stored (after platform choice); its bytes must already
    /// be a blob.
    pub manifest: Descriptor,
    /// The index it was chosen from, if any; its bytes must already be a blob too.
    pub index: Option<Descriptor>,
    /// Where it came from, e.g. the reference pulled.
    pub source: Option<String>,
}

/// One image in the store, as kept in `hoist/images/<alg>-<hex>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest: Docker's image ID.
    pub id: Digest,
    /// Tags pointing here (full normalised references with a tag and no digest).
    #[serde(with = "refs")]
    pub names: Vec<Reference>,
    /// `registry/repo@sha256:…` of the manifest (or the index it was chosen from) as
    /// pulled, like Docker's `RepoDigests`.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// The image manifest.
    pub manifest: Descriptor,
    /// The index the manifest was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Descriptor>,
    /// Media type of the config blob.
    pub config_media_type: MediaType,
    /// Size of the config blob.
    pub config_size: u64,
    /// Layer descriptors, base first.
    pub layers: Vec<Descriptor>,
    /// Diff IDs from the config, base first.
    pub diff_ids: Vec<Digest>,
    /// Chain IDs computed from the diff IDs.
    pub chain_ids: Vec<Digest>,
    /// Platform, from the config.
    pub platform: Platform,
    /// Creation time from the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Config plus layers, compressed, in bytes.
    pub size: u64,
    /// When the image first entered this store, RFC 3339 UTC.
    pub added: String,
    /// Where it was last committed from (e.g. the reference pulled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The config's `parent` field (Docker's local builds), when it is a valid digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_parent: Option<Digest>,
    /// Every manifest committed for this image, oldest first (`manifest`, `index` and
    /// `layers` above are the last one). Two manifests share a config when, say, the OCI
    /// and the Docker variant of one image are both pulled, or one manifest is reached
    /// through two indexes. Empty in records written before per-name manifests existed:
    /// read as the one manifest above (see [`ImageRecord::variants`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ImageManifest>,
    /// What each name points at: one of [`manifests`](Self::manifests). A name without
    /// an entry (older records) points at the last manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<NameTarget>,
    /// Digest references: the top digest (the index's, else the manifest's) of every
    /// manifest committed without a name (a pull by digest). Like a name, each keeps its
    /// manifest in the record; it goes with `hoist rmi REPO@DIGEST` or the image. A
    /// manifest that no name and no digest reference reaches is dropped from the record
    /// (see [`ImageRecord::prune`]), so GC frees its layers. Records written before this
    /// field existed are read with every manifest no name points at as referenced.
    #[serde(default)]
    pub digest_refs: Vec<Digest>,
    /// The OCI views of the Docker schema 2 manifests among the image's manifests: an OCI
    /// image manifest over the same config and layer blobs, stored as a blob, which
    /// `index.json` lists for the names that point at the Docker manifest (skopeo and
    /// umoci read only OCI manifests from a layout). The original manifest stays the
    /// image's: `hoist:` sources and pushes use it, byte for byte.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oci_views: Vec<OciView>,
}

/// The OCI view of one Docker schema 2 manifest (see [`ImageRecord::oci_views`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciView {
    /// The Docker schema 2 manifest's digest.
    pub manifest: Digest,
    /// The OCI image manifest made from it ([`hoist_types::ImageManifest::to_oci_bytes`]).
    pub view: Descriptor,
}

/// One manifest of an image, with the index it was chosen from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// The image manifest.
    pub manifest: Descriptor,
    /// The index it was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Descriptor>,
    /// Its layer descriptors, base first (two manifests of one config may compress their
    /// layers differently).
    pub layers: Vec<Descriptor>,
}

impl ImageManifest {
    /// The manifest a name or pull points at: the index when there is one.
    pub fn top(&self) -> &Descriptor {
        self.index.as_ref().unwrap_or(&self.manifest)
    }

    /// Whether this is the variant with this manifest and index digest.
    fn is(&self, manifest: &Digest, index: Option<&Digest>) -> bool {
        &self.manifest.digest == manifest && self.index.as_ref().map(|i| &i.digest) == index
    }
}

/// A name of an image and the manifest (and index) it was committed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameTarget {
    /// The name (a tag).
    #[serde(with = "one_ref")]
    pub name: Reference,
    /// The image manifest's digest.
    pub manifest: Digest,
    /// The index's digest, if it was reached through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
}

/// What [`Store::resolve_image`] found: the image, and the exact manifest (and index) the
/// query reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The image record, as seen through the query: its `manifest`, `index`, `layers`
    /// and `size` are those of the manifest below.
    pub record: ImageRecord,
    /// The image manifest the query reaches.
    pub manifest: Descriptor,
    /// The index it was chosen from, if any.
    pub index: Option<Descriptor>,
}

impl ImageRecord {
    /// Whether `d` names this image: its ID, one of its manifests, indexes or OCI views,
    /// or a repo digest.
    pub fn matches_digest(&self, d: &Digest) -> bool {
        &self.id == d
            || self.variant_with_digest(d).is_some()
            || self
                .repo_digests
                .iter()
                .any(|r| r.rsplit_once('@').is_some_and(|(_, x)| x == d.to_string()))
    }

    /// Every manifest of this image, oldest first; the last is `manifest`/`index`/`layers`.
    pub fn variants(&self) -> Vec<ImageManifest> {
        let latest = self.latest();
        let mut out: Vec<ImageManifest> = self
            .manifests
            .iter()
            .filter(|v| {
                !v.is(
                    &latest.manifest.digest,
                    latest.index.as_ref().map(|i| &i.digest),
                )
            })
            .cloned()
            .collect();
        out.push(latest);
        out
    }

    /// The last manifest committed (`manifest`, `index`, `layers`).
    pub fn latest(&self) -> ImageManifest {
        ImageManifest {
            manifest: self.manifest.clone(),
            index: self.index.clone(),
            layers: self.layers.clone(),
        }
    }

    /// The manifest `name` points at; the last one for a name without a target (older
    /// records) or not on this image.
    pub fn target_of(&self, name: &Reference) -> ImageManifest {
        self.targets
            .iter()
            .find(|t| &t.name == name)
            .and_then(|t| {
                self.variants()
                    .into_iter()
                    .find(|v| v.is(&t.manifest, t.index.as_ref()))
            })
            .unwrap_or_else(|| self.latest())
    }

    /// The last variant whose manifest, index or OCI view has digest `d`.
    pub fn variant_with_digest(&self, d: &Digest) -> Option<ImageManifest> {
        self.variants().into_iter().rev().find(|v| {
            &v.manifest.digest == d
                || v.index.as_ref().is_some_and(|i| &i.digest == d)
                || self
                    .oci_view(&v.manifest.digest)
                    .is_some_and(|x| &x.digest == d)
        })
    }

    /// The OCI view of the Docker schema 2 manifest `manifest`, if it has one.
    pub fn oci_view(&self, manifest: &Digest) -> Option<&Descriptor> {
        self.oci_views
            .iter()
            .find(|v| &v.manifest == manifest)
            .map(|v| &v.view)
    }

    /// The variants something still reaches: the one each name points at, and each one
    /// whose top digest (index, else manifest) is a digest reference.
    fn reached(&self) -> Vec<ImageManifest> {
        let named: Vec<ImageManifest> = self.names.iter().map(|n| self.target_of(n)).collect();
        self.variants()
            .into_iter()
            .filter(|v| named.contains(v) || self.digest_refs.contains(&v.top().digest))
            .collect()
    }

    /// Drop the manifests no name and no digest reference reaches any more, with their
    /// OCI views and repo digests, so that GC frees what only they needed. An image that
    /// nothing reaches at all (a dangling image, after `untag`) keeps its latest
    /// manifest. Returns whether anything was dropped.
    pub fn prune(&mut self) -> bool {
        let all = self.variants();
        let mut keep = self.reached();
        if keep.is_empty() {
            keep.push(self.latest());
        }
        if keep.len() == all.len() {
            return false;
        }
        let kept_digest = |d: &Digest| {
            keep.iter().any(|v| {
                &v.manifest.digest == d || v.index.as_ref().is_some_and(|i| &i.digest == d)
            })
        };
        let gone: Vec<Digest> = all
            .iter()
            .filter(|v| !keep.contains(v))
            .flat_map(|v| {
                std::iter::once(v.manifest.digest.clone())
                    .chain(v.index.as_ref().map(|i| i.digest.clone()))
            })
            .filter(|d| !kept_digest(d))
            .collect();
        self.repo_digests.retain(|r| {
            !r.rsplit_once('@')
                .and_then(|(_, x)| Digest::parse(x).ok())
                .is_some_and(|d| gone.contains(&d))
        });
        self.digest_refs.retain(|d| !gone.contains(d));
        self.oci_views.retain(|v| kept_digest(&v.manifest));
        let last = keep.last().cloned().expect("at least one variant");
        let pinned = self.pinned(&last);
        self.manifest = pinned.manifest;
        self.index = pinned.index;
        self.layers = pinned.layers;
        self.size = pinned.size;
        self.manifests = if keep.len() > 1 { keep } else { Vec::new() };
        true
    }

    /// Records written before digest references were recorded: every manifest no name
    /// points at was (for all we know) pulled by digest, so it is referenced.
    pub(crate) fn adopt_unnamed_variants(&mut self) {
        let named: Vec<ImageManifest> = self.names.iter().map(|n| self.target_of(n)).collect();
        for v in self.variants() {
            let top = v.top().digest.clone();
            if !named.contains(&v) && !self.digest_refs.contains(&top) {
                self.digest_refs.push(top);
            }
        }
    }

    /// This record as seen through one of its manifests: `manifest`, `index`, `layers` and
    /// `size` are that manifest's.
    pub fn pinned(&self, v: &ImageManifest) -> ImageRecord {
        let mut r = self.clone();
        r.size = self.config_size + v.layers.iter().map(|l| l.size).sum::<u64>();
        r.manifest = v.manifest.clone();
        r.index = v.index.clone();
        r.layers = v.layers.clone();
        r
    }

    /// Every blob this image needs: config, manifests (and their OCI views), indexes and
    /// layers of all its variants (each once, in a stable order).
    pub fn blobs(&self) -> Vec<Digest> {
        let mut out = vec![self.id.clone()];
        for v in self.variants() {
            out.push(v.manifest.digest.clone());
            out.extend(self.oci_view(&v.manifest.digest).map(|x| x.digest.clone()));
            out.extend(v.index.iter().map(|i| i.digest.clone()));
            out.extend(v.layers.iter().map(|l| l.digest.clone()));
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|d| seen.insert(d.clone()));
        out
    }

    /// Make `name` point at `v` (added to the variants when new), and carry the name.
    pub(crate) fn set_target(&mut self, name: &Reference, v: &ImageManifest) {
        self.add_variant(v, false);
        self.targets.retain(|t| &t.name != name);
        self.targets.push(NameTarget {
            name: name.clone(),
            manifest: v.manifest.digest.clone(),
            index: v.index.as_ref().map(|i| i.digest.clone()),
        });
        self.targets.sort_by(|a, b| a.name.cmp(&b.name));
        if !self.names.contains(name) {
            self.names.push(name.clone());
            self.names.sort();
        }
    }

    /// Drop `name` and its target.
    pub(crate) fn drop_name(&mut self, name: &Reference) {
        self.names.retain(|n| n != name);
        self.targets.retain(|t| &t.name != name);
    }

    /// Add a variant; with `latest`, it becomes `manifest`/`index`/`layers`.
    pub(crate) fn add_variant(&mut self, v: &ImageManifest, latest: bool) {
        if latest {
            // Names of older records carry no target: pin them to the manifest they
            // point at now, before the latest changes.
            let current = self.latest();
            for n in self.names.clone() {
                if !self.targets.iter().any(|t| t.name == n) {
                    self.targets.push(NameTarget {
                        name: n,
                        manifest: current.manifest.digest.clone(),
                        index: current.index.as_ref().map(|i| i.digest.clone()),
                    });
                }
            }
            self.targets.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut all = self.variants();
        let idx = v.index.as_ref().map(|i| &i.digest);
        let known = all.iter().any(|x| x.is(&v.manifest.digest, idx));
        if latest || !known {
            all.retain(|x| !x.is(&v.manifest.digest, idx));
            if latest {
                all.push(v.clone());
            } else {
                // Keep the current latest last.
                let pos = all.len().saturating_sub(1);
                all.insert(pos, v.clone());
            }
        }
        let last = all.last().cloned().expect("at least one variant");
        let pinned = self.pinned(&last);
        self.manifest = pinned.manifest;
        self.index = pinned.index;
        self.layers = pinned.layers;
        self.size = pinned.size;
        self.manifests = if all.len() > 1 { all } else { Vec::new() };
    }
}

/// A minimal record for the crate's table tests: one OCI manifest, gzip layers of size 1,
/// chain IDs from `diff_ids`, everything else empty.
#[cfg(test)]
pub(crate) fn test_record(
    id: Digest,
    manifest: Digest,
    names: &[&str],
    layers: &[Digest],
    diff_ids: Vec<Digest>,
) -> ImageRecord {
    ImageRecord {
        id,
        names: names.iter().map(|n| Reference::parse(n).unwrap()).collect(),
        repo_digests: vec![],
        manifest: Descriptor::new(MediaType::OciManifest, manifest, 1),
        index: None,
        config_media_type: MediaType::OciConfig,
        config_size: 1,
        layers: layers
            .iter()
            .map(|l| Descriptor::new(MediaType::OciLayerGzip, l.clone(), 1))
            .collect(),
        chain_ids: hoist_types::chain_ids(&diff_ids),
        diff_ids,
        platform: Platform::new("linux", "amd64", None),
        created: None,
        size: 1,
        added: String::new(),
        source: None,
        config_parent: None,
        manifests: vec![],
        targets: vec![],
        digest_refs: vec![],
        oci_views: vec![],
    }
}

/// What [`Store::remove_image`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoveReport {
    /// Names removed.
    pub untagged: Vec<Reference>,
    /// Image records deleted (their blobs are left for GC).
    pub deleted: Vec<Digest>,
}

/// Serialise references as their full strings.
mod refs {
    use hoist_types::Reference;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(v: &[Reference], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Reference>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| Reference::parse(s).map_err(D::Error::custom))
            .collect()
    }
}

/// A file that cannot be read as what it should be, and why.
pub(crate) type BrokenFile = (PathBuf, String);

/// Serialise one reference as its full string.
mod one_ref {
    use hoist_types::Reference;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(v: &Reference, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Reference, D::Error> {
        Reference::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl Store {
    pub(crate) fn record_path(&self, id: &Digest) -> PathBuf {
        self.images_dir()
            .join(format!("{}-{}.json", id.algorithm(), id.hex()))
    }

    /// Read one record; `None` if absent.
    pub(crate) fn load_record(&self, id: &Digest) -> Result<Option<ImageRecord>, StoreError> {
        let path = self.record_path(id);
        let Some(bytes) = fsutil::read_optional(&path, MAX_RECORD_SIZE)? else {
            return Ok(None);
        };
        let mut rec: ImageRecord =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                what: "image record",
                path: path.clone(),
                reason: e.to_string(),
            })?;
        /// Whether the record says which manifests digest references keep.
        #[derive(Deserialize)]
        struct Probe {
            digest_refs: Option<serde::de::IgnoredAny>,
        }
        if serde_json::from_slice::<Probe>(&bytes).is_ok_and(|p| p.digest_refs.is_none()) {
            rec.adopt_unnamed_variants();
        }
        if &rec.id != id {
            return Err(StoreError::Corrupt {
                what: "image record",
                path,
                reason: format!("its id is {}", rec.id),
            });
        }
        Ok(Some(rec))
    }

    /// Read every record, sorted by ID.
    pub(crate) fn load_records(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.images_dir();
        let entries = fs::read_dir(&dir).map_err(|e| StoreError::read(&dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::read(&dir, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(record_id_from_file_name) else {
                continue; // temp files and strangers
            };
            // A record removed between read_dir and here is simply gone.
            if let Some(rec) = self.load_record(&id)? {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Read every record that can be read, sorted by ID, and the files that cannot (with
    /// why), for fsck.
    pub(crate) fn load_records_tolerant(
        &self,
    ) -> Result<(Vec<ImageRecord>, Vec<BrokenFile>), StoreError> {
        let dir = self.images_dir();
        let entries = fs::read_dir(&dir).map_err(|e| StoreError::read(&dir, e))?;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::read(&dir, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(record_id_from_file_name) else {
                continue;
            };
            match self.load_record(&id) {
                Ok(Some(rec)) => good.push(rec),
                Ok(None) => {}
                Err(e) => bad.push((entry.path(), hoist_types::error_chain(&e))),
            }
        }
        good.sort_by(|a, b| a.id.cmp(&b.id));
        bad.sort();
        Ok((good, bad))
    }

    /// Write a record atomically.
    pub(crate) fn save_record(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        let path = self.record_path(&rec.id);
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Corrupt {
            what: "image record",
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fsutil::write_atomic(&path, &bytes)
    }

    /// Delete a record's file.
    pub(crate) fn delete_record(&self, id: &Digest) -> Result<(), StoreError> {
        let path = self.record_path(id);
        match fs::remove_file(&path) {
            Ok(()) => fsutil::fsync_dir(&self.images_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", path, e)),
        }
    }
}

/// `sha256-<hex>.json` → the digest.
fn record_id_from_file_name(name: &str) -> Option<Digest> {
    let stem = name.strip_suffix(".json")?;
    let (alg, hex) = stem.split_once('-')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_what_names_and_digest_references_reach() {
        let d = |s: &str| Digest::sha256_of(s.as_bytes());
        let variant = |m: &str, mt: MediaType| ImageManifest {
            manifest: Descriptor::new(mt, d(m), 1),
            index: None,
            layers: vec![Descriptor::new(
                MediaType::OciLayerGzip,
                d(&format!("l-{m}")),
                1,
            )],
        };
        let mut rec = test_record(
            d("cfg"),
            d("named"),
            &["r:a"],
            &[d("l-named")],
            vec![d("x")],
        );
        rec.set_target(&Reference::parse("r:a").unwrap(), &rec.latest());
        rec.add_variant(&variant("pinned", MediaType::OciManifest), true);
        rec.add_variant(&variant("orphan", MediaType::DockerManifest), true);
        rec.digest_refs = vec![d("pinned")];
        rec.repo_digests = ["named", "pinned", "orphan"]
            .iter()
            .map(|m| format!("127.0.0.1:5000/r@{}", d(m)))
            .collect();
        rec.oci_views = vec![OciView {
            manifest: d("orphan"),
            view: Descriptor::new(MediaType::OciManifest, d("view"), 1),
        }];
        assert!(rec.blobs().contains(&d("view")));
        assert!(rec.matches_digest(&d("view")));

        assert!(rec.prune());
        let kept: Vec<Digest> = rec
            .variants()
            .iter()
            .map(|v| v.manifest.digest.clone())
            .collect();
        assert_eq!(kept, vec![d("named"), d("pinned")]);
        assert_eq!(rec.manifest.digest, d("pinned"), "the latest of those kept");
        assert_eq!(rec.layers[0].digest, d("l-pinned"));
        assert!(rec.oci_views.is_empty());
        assert_eq!(rec.repo_digests.len(), 2);
        for gone in ["orphan", "l-orphan", "view"] {
            assert!(!rec.blobs().contains(&d(gone)), "{gone}");
        }
        assert!(!rec.prune(), "nothing more to drop");

        // Nothing reaches anything (a dangling image): the latest stays.
        rec.drop_name(&Reference::parse("r:a").unwrap());
        rec.digest_refs.clear();
        assert!(rec.prune());
        assert_eq!(rec.variants().len(), 1);
        assert_eq!(rec.manifest.digest, d("pinned"));
    }

    #[test]
    fn record_file_names() {
        let hex = "a".repeat(64);
        let cases: Vec<(String, bool)> = vec![
            (format!("sha256-{hex}.json"), true),
            (format!("sha512-{}.json", "b".repeat(128)), true),
            (format!(".sha256-{hex}.json.1.2.3.tmp"), false),
            (format!("sha256-{hex}"), false),
            (format!("sha256:{hex}.json"), false),
            (format!("md5-{hex}.json"), false),
            ("sha256-../x.json".into(), false),
        ];
        for (name, ok) in cases {
            assert_eq!(record_id_from_file_name(&name).is_some(), ok, "{name}");
        }
    }
}
