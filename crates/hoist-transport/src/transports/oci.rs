//! `oci:DIR[:REF]`: an [OCI image layout] directory, as skopeo, umoci and buildah write it.
//!
//! ```text
//! DIR/
//!   oci-layout        {"imageLayoutVersion":"1.0.0"}
//!   index.json        an OCI index; each entry a manifest descriptor, named by the
//!                     annotation org.opencontainers.image.ref.name
//!   blobs/<alg>/<hex> content-addressed blobs: manifests, configs, layers
//! ```
//!
//! **Source**: `REF` selects the `index.json` entry with that name; without `REF` the
//! layout must hold exactly one entry. Every file is untrusted: read without following a
//! final symlink, documents bounded to 4 MiB, manifests verified against their digests
//! (blobs are verified by the destination).
//!
//! **Destination**: blobs are written into `blobs/<alg>/<hex>` verified (temp, fsync,
//! rename, fsync dir); manifests likewise. `commit` rewrites `index.json` atomically: the
//! entry named `REF` is replaced (or, without `REF`, an entry is added unless the same
//! unnamed digest is already listed), other entries and fields are kept, and `oci-layout`
//! is written if absent. A copy that fails leaves `index.json` as it was. Docker schema 2
//! manifests and manifest lists are converted to OCI by default (as skopeo does for an
//! `oci:` destination: skopeo and umoci read only OCI manifests from a layout; the config
//! and layer blobs stay byte for byte, only their media types change); `--format v2s2`
//! keeps them Docker. OCI images are written as they come, digests unchanged.
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md

use std::path::{Path, PathBuf};

use hoist_types::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageIndex, MAX_MANIFEST_SIZE, MediaType, Progress,
};
use serde_json::Value;

use super::local::{self, invalid, invalid_from};
use super::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ImageSource,
    ManifestFormat, ManifestRef, ManifestTarget, RawManifest, Staged, raw_manifest,
};
use crate::{TransportError, blocking};

/// What skopeo writes, byte for byte.
pub(crate) const OCI_LAYOUT: &str = r#"{"imageLayoutVersion": "1.0.0"}"#;

/// Where blob `d` lives in the layout at `dir`.
pub fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm().as_str()).join(d.hex())
}

/// Read and parse `DIR/index.json` (`Ok(None)` when absent).
fn read_index(dir: &Path) -> Result<Option<(ImageIndex, Value)>, TransportError> {
    let path = dir.join("index.json");
    let Some(bytes) = local::read_bounded(&path, MAX_MANIFEST_SIZE)? else {
        return Ok(None);
    };
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid_from(&path, "not JSON", e))?;
    let index: ImageIndex = serde_json::from_value(value.clone())
        .map_err(|e| invalid_from(&path, "not an OCI index", e))?;
    Ok(Some((index, value)))
}

fn check_layout_file(dir: &Path) -> Result<(), TransportError> {
    let path = dir.join("oci-layout");
    let bytes = local::read_bounded(&path, 4096)?
        .ok_or_else(|| invalid(&path, "missing: not an OCI image layout"))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid_from(&path, "not JSON", e))?;
    match v.get("imageLayoutVersion").and_then(Value::as_str) {
        Some(s) if s.starts_with("1.") => Ok(()),
        other => Err(invalid(
            &path,
            format!("unsupported imageLayoutVersion {other:?}"),
        )),
    }
}

/// Read a manifest blob of the layout, verified against `desc`.
fn read_manifest(dir: &Path, desc: &Descriptor) -> Result<RawManifest, TransportError> {
    let path = blob_path(dir, &desc.digest);
    let bytes = local::read_bounded(&path, MAX_MANIFEST_SIZE)?.ok_or_else(|| {
        TransportError::BlobNotFound {
            digest: desc.digest.clone(),
            location: dir.display().to_string(),
        }
    })?;
    let declared = desc.media_type.is_manifest().then_some(&desc.media_type);
    raw_manifest(bytes, declared, Some(&desc.digest))
        .map_err(|e| invalid_from(&path, format!("manifest {}", desc.digest), e))
}

/// The index entry named `name`, or the only entry.
fn select_entry(
    dir: &Path,
    index: &ImageIndex,
    name: Option<&str>,
) -> Result<Descriptor, TransportError> {
    let path = dir.join("index.json");
    match name {
        Some(n) => index
            .manifests
            .iter()
            .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(n))
            .cloned()
            .ok_or_else(|| invalid(&path, format!("no image named {n:?}"))),
        None => match index.manifests.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(invalid(&path, "the layout holds no image")),
            many => Err(invalid(
                &path,
                format!(
                    "the layout holds {} images: name one (oci:DIR:NAME)",
                    many.len()
                ),
            )),
        },
    }
}

/// Reading an OCI image layout.
#[derive(Debug)]
pub struct OciSource {
    dir: PathBuf,
    name: Option<String>,
    index: ImageIndex,
    top: Descriptor,
}

impl OciSource {
    /// Open the layout at `dir` and find the image `name` (or the only one).
    pub async fn open(dir: PathBuf, name: Option<String>) -> Result<OciSource, TransportError> {
        blocking(move || {
            check_layout_file(&dir)?;
            let (index, _) =
                read_index(&dir)?.ok_or_else(|| invalid(&dir.join("index.json"), "missing"))?;
            let top = select_entry(&dir, &index, name.as_deref())?;
            Ok(OciSource {
                dir,
                name,
                index,
                top,
            })
        })
        .await?
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}

impl ImageSource for OciSource {
    fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("oci:{}:{n}", self.dir.display()),
            None => format!("oci:{}", self.dir.display()),
        }
    }

    async fn get_manifest(&self, which: &ManifestRef) -> Result<RawManifest, TransportError> {
        let desc = match which {
            ManifestRef::Top => self.top.clone(),
            ManifestRef::Digest(d) => self
                .index
                .manifests
                .iter()
                .find(|e| &e.digest == d)
                .cloned()
                .unwrap_or_else(|| {
                    // An instance of an index: its media type comes from the document.
                    Descriptor::new(MediaType::Other(String::new()), d.clone(), 0)
                }),
            ManifestRef::Tag(t) => select_entry(&self.dir, &self.index, Some(t))?,
        };
        let dir = self.dir.clone();
        blocking(move || read_manifest(&dir, &desc)).await?
    }

    async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, TransportError> {
        let (path, desc2, loc) = (
            blob_path(&self.dir, &desc.digest),
            desc.clone(),
            self.location(),
        );
        blocking(move || local::blob_stream(&path, &desc2, &loc)).await?
    }

    async fn tags(&self) -> Result<Vec<String>, TransportError> {
        Ok(self
            .index
            .manifests
            .iter()
            .filter_map(|d| d.annotation(ANNOTATION_REF_NAME).map(str::to_owned))
            .collect())
    }
}

/// Writing into an OCI image layout.
#[derive(Debug)]
pub struct OciDestination {
    dir: PathBuf,
    name: Option<String>,
    staged: Staged,
    /// What `open` created: the `oci-layout` file (and the directory, when `true`), taken
    /// away again if the copy ends having written nothing else ([`Drop`]).
    created: Option<bool>,
}

impl Drop for OciDestination {
    /// A copy refused or failed before it wrote anything leaves the place as it found it:
    /// the `oci-layout` file `open` wrote (and the directory it made) is removed when it
    /// is all there is. Anything else (blobs a later copy resumes from, a committed name)
    /// stays.
    fn drop(&mut self) {
        let Some(made_dir) = self.created else {
            return;
        };
        let only_layout = std::fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
                .is_ok_and(|names| names.len() == 1 && names[0] == "oci-layout")
        });
        if only_layout && std::fs::remove_file(self.dir.join("oci-layout")).is_ok() && made_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

impl OciDestination {
    /// Prepare writing into `dir` (created if absent; an existing directory must be
    /// empty or an OCI layout). A new layout gets its `oci-layout` file at once, so a
    /// copy that is killed leaves a layout (blobs, no new name) the next copy can resume
    /// into, not a directory it must refuse.
    pub async fn open(
        dir: PathBuf,
        name: Option<String>,
    ) -> Result<OciDestination, TransportError> {
        let d = dir.clone();
        let created = blocking(move || {
            // Empty, or holding only temp files of a copy killed before its `oci-layout`
            // was in place.
            // Some(true): the directory made here; Some(false): an empty one found.
            let fresh = match std::fs::read_dir(&d) {
                Ok(mut it) => it
                    .all(|e| {
                        e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".hoist-tmp"))
                    })
                    .then_some(false),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    local::create_dir_all(&d)?;
                    Some(true)
                }
                Err(e) => return Err(local::io_err("read directory", &d)(e)),
            };
            if fresh.is_some() {
                local::write_atomic(&d.join("oci-layout"), OCI_LAYOUT.as_bytes())?;
            } else {
                check_layout_file(&d)?;
                read_index(&d)?;
            }
            Ok(fresh)
        })
        .await??;
        Ok(OciDestination {
            dir,
            name,
            staged: Staged::new(),
            created,
        })
    }
}

/// `index.json` with `entry` added under `name` (replacing that name's entry), or, without
/// a name, added unless an unnamed entry with the same digest exists. Other entries are
/// kept. Serialised in the field order skopeo writes, so both tools produce the same bytes.
pub(crate) fn updated_index(
    existing: Option<ImageIndex>,
    entry: &Descriptor,
    name: Option<&str>,
) -> ImageIndex {
    let mut doc = existing.unwrap_or(ImageIndex {
        schema_version: 2,
        media_type: None,
        artifact_type: None,
        manifests: Vec::new(),
        subject: None,
        annotations: None,
    });
    let mut entry = entry.clone();
    entry.urls = None;
    let mut ann = entry.annotations.take().unwrap_or_default();
    ann.retain(|k, _| k != ANNOTATION_REF_NAME);
    if let Some(n) = name {
        ann.insert(ANNOTATION_REF_NAME.to_owned(), n.to_owned());
    }
    entry.annotations = (!ann.is_empty()).then_some(ann);
    match name {
        Some(n) => doc
            .manifests
            .retain(|v| v.annotation(ANNOTATION_REF_NAME) != Some(n)),
        None => doc
            .manifests
            .retain(|v| !(v.annotation(ANNOTATION_REF_NAME).is_none() && v.digest == entry.digest)),
    }
    doc.manifests.push(entry);
    doc
}

impl ImageDestination for OciDestination {
    fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("oci:{}:{n}", self.dir.display()),
            None => format!("oci:{}", self.dir.display()),
        }
    }

    fn capabilities(&self) -> DestinationCaps {
        DestinationCaps {
            default_format: Some(ManifestFormat::Oci),
            ..DestinationCaps::default()
        }
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        _hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        local::has_blob_file(blob_path(&self.dir, &desc.digest), desc.size).await
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        local::put_blob_file(blob_path(&self.dir, &desc.digest), desc, stream, progress).await
    }

    /// Resumable (within and across runs): the blob is fetched into
    /// `DIR/.hoist-ingest/partial-<alg>-<hex>`, which skopeo, umoci and `oci:` sources
    /// never read, and renamed into `blobs/` once verified; the directory goes when empty.
    async fn put_blob_from(
        &self,
        desc: &Descriptor,
        kind: hoist_types::BlobKind,
        fetcher: &crate::fetch::BlobFetcher,
        progress: &dyn Progress,
    ) -> Result<bool, TransportError> {
        let (ingest, dest) = (
            self.dir.join(".hoist-ingest"),
            blob_path(&self.dir, &desc.digest),
        );
        local::fetch_resumable(ingest, dest, desc, kind, fetcher, progress).await?;
        Ok(true)
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        let path = blob_path(&self.dir, &manifest.digest);
        let bytes = manifest.bytes.clone();
        let size = bytes.len() as u64;
        blocking(move || {
            if local::has_file(&path, size)? {
                return Ok(());
            }
            if let Some(parent) = path.parent() {
                local::create_dir_all(parent)?;
            }
            local::write_atomic(&path, &bytes)
        })
        .await??;
        // Named in `index.json` at commit (instances only by the index that lists them).
        if *target != ManifestTarget::Instance {
            self.staged.record(manifest, target);
        }
        Ok(())
    }

    async fn commit(self) -> Result<Committed, TransportError> {
        let location = self.describe();
        let mut st = self.staged.take();
        let top = st.take_top(&location)?.descriptor();
        let (dir, name, digest) = (self.dir.clone(), self.name.clone(), top.digest.clone());
        blocking(move || {
            let layout = dir.join("oci-layout");
            if std::fs::symlink_metadata(&layout).is_err() {
                local::write_atomic(&layout, OCI_LAYOUT.as_bytes())?;
            }
            let mut doc = read_index(&dir)?.map(|(i, _)| i);
            for (t, m) in &st.tags {
                doc = Some(updated_index(doc, &m.descriptor(), Some(t)));
            }
            let doc = updated_index(doc, &top, name.as_deref());
            let bytes = serde_json::to_vec(&doc).expect("JSON values serialise");
            local::write_atomic(&dir.join("index.json"), &bytes)
        })
        .await??;
        Ok(Committed { digest, location })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Descriptor {
        Descriptor::new(MediaType::OciManifest, Digest::sha256_of(&[n]), 10)
    }

    fn names(v: &ImageIndex) -> Vec<(Option<String>, Digest)> {
        v.manifests
            .iter()
            .map(|e| {
                (
                    e.annotation(ANNOTATION_REF_NAME).map(str::to_owned),
                    e.digest.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn index_updates() {
        let a = updated_index(None, &d(1), Some("v1"));
        let b = updated_index(Some(a), &d(2), Some("v2"));
        // Same name replaces.
        let c = updated_index(Some(b), &d(3), Some("v1"));
        let n = names(&c);
        assert_eq!(n.len(), 2);
        assert_eq!(n[1], (Some("v1".into()), d(3).digest));
        // Unnamed: added once per digest.
        let e = updated_index(Some(c), &d(4), None);
        let f = updated_index(Some(e), &d(4), None);
        assert_eq!(names(&f).len(), 3);
    }

    #[test]
    fn index_bytes_match_skopeo() {
        let doc = updated_index(None, &d(1), Some("x"));
        let s = String::from_utf8(serde_json::to_vec(&doc).unwrap()).unwrap();
        let want = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":10,"annotations":{{"org.opencontainers.image.ref.name":"x"}}}}]}}"#,
            d(1).digest
        );
        assert_eq!(s, want);
    }
}
