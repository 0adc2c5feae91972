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
}

impl ImageRecord {
    /// Whether `d` names this image: its ID, its manifest, its index, or a repo digest.
    pub fn matches_digest(&self, d: &Digest) -> bool {
        &self.id == d
            || &self.manifest.digest == d
            || self.index.as_ref().is_some_and(|i| &i.digest == d)
            || self
                .repo_digests
                .iter()
                .any(|r| r.rsplit_once('@').is_some_and(|(_, x)| x == d.to_string()))
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
        let rec: ImageRecord = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: "image record",
            path: path.clone(),
            reason: e.to_string(),
        })?;
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
