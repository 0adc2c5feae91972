//! `index.json`: the OCI index that makes the store readable by skopeo and umoci.
//!
//! The image records are the truth about hoist's names; `index.json` is rewritten from
//! them after every change, as the last write. Entries hoist writes carry the annotation
//! [`ANNOTATION_IMAGE_ID`]; entries written by other tools (say `skopeo copy … oci:ROOT:x`)
//! are kept as they are, unless they carry a name hoist manages, in which case hoist's
//! entry wins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use hoist_types::{
    ANNOTATION_REF_NAME, Descriptor, Digest, MAX_MANIFEST_SIZE, Manifest, MediaType, Reference,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::record::{ImageRecord, OciView};
use crate::{Store, StoreError, fsutil};

/// Annotation on hoist's `index.json` entries: the image ID (config digest).
pub const ANNOTATION_IMAGE_ID: &str = "io.hoist.image.id";

const MAX_INDEX_FILE: u64 = 64 * 1024 * 1024;

/// The file as read; unknown top-level fields are kept.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IndexFile {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Value>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl IndexFile {
    pub(crate) fn empty() -> IndexFile {
        IndexFile {
            schema_version: 2,
            media_type: Some(MediaType::OciIndex.as_str().to_owned()),
            manifests: Vec::new(),
            rest: Map::new(),
        }
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("index serialises");
        v.push(b'\n');
        v
    }

    /// Name → image ID for hoist's entries.
    pub(crate) fn owners(&self) -> BTreeMap<String, Digest> {
        self.manifests
            .iter()
            .filter_map(|e| {
                let id = e.get("annotations")?.get(ANNOTATION_IMAGE_ID)?.as_str()?;
                Some((ref_name(e)?.to_owned(), Digest::parse(id).ok()?))
            })
            .collect()
    }

    /// Every entry that parses as a descriptor, with whether hoist manages it.
    pub(crate) fn descriptors(&self) -> Vec<(Descriptor, bool)> {
        self.manifests
            .iter()
            .filter_map(|e| {
                let d = serde_json::from_value::<Descriptor>(e.clone()).ok()?;
                Some((d, is_hoist_entry(e)))
            })
            .collect()
    }

    /// Entries that do not parse as descriptors (for fsck).
    pub(crate) fn invalid_entries(&self) -> usize {
        self.manifests
            .iter()
            .filter(|e| serde_json::from_value::<Descriptor>((*e).clone()).is_err())
            .count()
    }

    /// Keep the entries `keep` accepts (given the entry as a descriptor, if it is one).
    pub(crate) fn retain_entries(&mut self, keep: impl Fn(Option<&Descriptor>) -> bool) {
        self.manifests.retain(|e| {
            keep(
                serde_json::from_value::<Descriptor>(e.clone())
                    .ok()
                    .as_ref(),
            )
        });
    }

    /// The ref names of all entries, in order (for tests and diagnostics).
    pub(crate) fn ref_names(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|e| ref_name(e).map(str::to_owned))
            .collect()
    }
}

fn ref_name(entry: &Value) -> Option<&str> {
    entry.get("annotations")?.get(ANNOTATION_REF_NAME)?.as_str()
}

fn is_hoist_entry(entry: &Value) -> bool {
    entry
        .get("annotations")
        .and_then(|a| a.get(ANNOTATION_IMAGE_ID))
        .is_some()
}

/// The OCI view of a Docker schema 2 manifest (its exact `bytes`, of media type `mt`):
/// `None` for any other manifest. Pure.
pub(crate) fn oci_view_bytes(bytes: &[u8], mt: &MediaType) -> Option<Vec<u8>> {
    if mt != &MediaType::DockerManifest {
        return None;
    }
    match Manifest::parse(bytes, Some(mt)) {
        Ok((Manifest::Image(m), MediaType::DockerManifest)) => Some(m.to_oci_bytes()),
        _ => None,
    }
}

/// The index entry for one name of a record: the manifest the name points at, or its
/// OCI view when it is a Docker schema 2 manifest.
fn entry_for(rec: &ImageRecord, name: &Reference) -> Descriptor {
    let target = rec.target_of(name).manifest;
    let target = rec.oci_view(&target.digest).cloned().unwrap_or(target);
    let mut d = Descriptor::new(target.media_type, target.digest, target.size);
    if !rec.platform.os.is_empty() && !rec.platform.architecture.is_empty() {
        d.platform = Some(rec.platform.clone());
    }
    let mut ann = BTreeMap::new();
    ann.insert(ANNOTATION_REF_NAME.to_owned(), name.to_string());
    ann.insert(ANNOTATION_IMAGE_ID.to_owned(), rec.id.to_string());
    d.annotations = Some(ann);
    d
}

/// Build the new index from the old one and the records.
pub(crate) fn project(old: IndexFile, records: &[ImageRecord]) -> IndexFile {
    let mut ours: BTreeMap<String, (&Reference, &ImageRecord)> = BTreeMap::new();
    for rec in records {
        for n in &rec.names {
            // Records are repaired before this is called, so names are unique; if not,
            // the first record (by ID) wins, as in `resolve`.
            ours.entry(n.to_string()).or_insert((n, rec));
        }
    }
    let taken: BTreeSet<&str> = ours.keys().map(String::as_str).collect();
    let mut manifests: Vec<Value> = old
        .manifests
        .into_iter()
        .filter(|e| !is_hoist_entry(e) && !ref_name(e).is_some_and(|n| taken.contains(n)))
        .collect();
    for (reference, rec) in ours.values() {
        let entry = entry_for(rec, reference);
        manifests.push(serde_json::to_value(entry).expect("descriptor serialises"));
    }
    IndexFile {
        schema_version: 2,
        media_type: Some(MediaType::OciIndex.as_str().to_owned()),
        manifests,
        rest: old.rest,
    }
}

impl Store {
    pub(crate) fn index_path(&self) -> PathBuf {
        self.root().join("index.json")
    }

    /// Read `index.json`; an empty index if it is missing.
    pub(crate) fn read_index(&self) -> Result<IndexFile, StoreError> {
        let path = self.index_path();
        let Some(bytes) = fsutil::read_optional(&path, MAX_INDEX_FILE)? else {
            return Ok(IndexFile::empty());
        };
        let idx: IndexFile = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: "OCI index",
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if idx.schema_version != 2 {
            return Err(StoreError::Corrupt {
                what: "OCI index",
                path,
                reason: format!("schemaVersion is {}, not 2", idx.schema_version),
            });
        }
        Ok(idx)
    }

    /// Rewrite `index.json` from the records. Call with the store lock held.
    pub(crate) fn write_index(&self, records: &[ImageRecord]) -> Result<(), StoreError> {
        let old = self.read_index()?;
        let new = project(old, records);
        fsutil::write_atomic(&self.index_path(), &new.to_bytes())
    }

    /// Give every Docker schema 2 manifest of `rec` its OCI view: the view's bytes made
    /// from the manifest's, written as a blob (atomically, without the blob's lock: the
    /// bytes are a function of the digest, and the store lock is held) when the recorded
    /// one is absent, and recorded.
    /// Returns whether the record changed. Call with the exclusive store lock held, and
    /// save the record before `index.json` names the view.
    pub(crate) fn ensure_oci_views(&self, rec: &mut ImageRecord) -> Result<bool, StoreError> {
        let mut changed = false;
        for v in rec.variants() {
            let m = &v.manifest;
            if m.media_type != MediaType::DockerManifest {
                continue;
            }
            // Recorded and present: done (a view an older hoist's GC removed is made again).
            if let Some(x) = rec.oci_view(&m.digest)
                && self.stat_blob(&x.digest)? == Some(x.size)
            {
                continue;
            }
            let bytes = self.read_blob(&m.digest, MAX_MANIFEST_SIZE)?;
            let Some(view) = oci_view_bytes(&bytes, &m.media_type) else {
                continue;
            };
            let d = self.write_derived_blob(&view)?;
            if rec.oci_view(&m.digest).is_some_and(|x| x.digest == d) {
                continue;
            }
            rec.oci_views.retain(|x| x.manifest != m.digest);
            rec.oci_views.push(OciView {
                manifest: m.digest.clone(),
                view: Descriptor::new(MediaType::OciManifest, d, view.len() as u64),
            });
            changed = true;
        }
        Ok(changed)
    }

    /// Store `bytes`, made by the store itself, as a sha256 blob (kept if present with
    /// the right size); returns its digest. Call with the exclusive store lock held.
    pub(crate) fn write_derived_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::sha256_of(bytes);
        if self.stat_blob(&d)? != Some(bytes.len() as u64) {
            fsutil::write_atomic(&self.blob_path(&d), bytes)?;
        }
        Ok(d)
    }

    /// Write `index.json` as given. Call with the store lock held.
    pub(crate) fn write_index_file(&self, idx: &IndexFile) -> Result<(), StoreError> {
        fsutil::write_atomic(&self.index_path(), &idx.to_bytes())
    }

    /// The ref names listed in `index.json`, in file order.
    pub fn index_ref_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.read_index()?.ref_names())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_types::Platform;

    fn rec(id_byte: char, names: &[&str]) -> ImageRecord {
        let id = Digest::parse(&format!("sha256:{}", id_byte.to_string().repeat(64))).unwrap();
        ImageRecord {
            id: id.clone(),
            names: names.iter().map(|n| Reference::parse(n).unwrap()).collect(),
            repo_digests: vec![],
            manifest: Descriptor::new(MediaType::OciManifest, id, 10),
            index: None,
            config_media_type: MediaType::OciConfig,
            config_size: 1,
            layers: vec![],
            diff_ids: vec![],
            chain_ids: vec![],
            platform: Platform::new("linux", "amd64", None),
            created: None,
            size: 1,
            added: "1970-01-01T00:00:00Z".into(),
            source: None,
            config_parent: None,
            manifests: vec![],
            targets: vec![],
            digest_refs: vec![],
            oci_views: vec![],
        }
    }

    #[test]
    fn projection_keeps_foreign_and_replaces_ours() {
        let d = format!("sha256:{}", "f".repeat(64));
        let old: IndexFile = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"annotations":{{"x":"y"}},"manifests":[
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":1,
                "annotations":{{"org.opencontainers.image.ref.name":"foreign"}},"data":"e30="}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":1,
                "annotations":{{"org.opencontainers.image.ref.name":"docker.io/library/a:latest"}}}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":1,
                "annotations":{{"org.opencontainers.image.ref.name":"docker.io/library/gone:1",
                                "io.hoist.image.id":"{d}"}}}}]}}"#
        ))
        .unwrap();
        let records = [
            rec('a', &["a", "b:2"]),
            rec('c', &["127.0.0.1:5000/ns/r:t"]),
        ];
        let new = project(old, &records);
        assert_eq!(
            new.ref_names(),
            [
                "foreign",
                "127.0.0.1:5000/ns/r:t",
                "docker.io/library/a:latest",
                "docker.io/library/b:2"
            ]
        );
        // Unknown fields of foreign entries and of the index survive.
        assert_eq!(new.manifests[0]["data"], "e30=");
        assert_eq!(new.rest["annotations"]["x"], "y");
        let v: Value = serde_json::from_slice(&new.to_bytes()).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
        assert_eq!(v["manifests"][1]["platform"]["architecture"], "amd64");
        assert_eq!(
            v["manifests"][1]["annotations"][ANNOTATION_IMAGE_ID],
            format!("sha256:{}", "c".repeat(64))
        );
    }
}
