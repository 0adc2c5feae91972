//! A minimal OCI image layout writer: `oci-layout`, `index.json`, `blobs/sha256/HEX`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{BlobInfo, OCI_INDEX, sha256_digest};

/// The annotation that names a tag in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    /// Opens the layout at `dir`, creating the directory, `oci-layout` and an empty `index.json`
    /// where missing.
    pub fn create(dir: &Path) -> io::Result<OciLayout> {
        fs::create_dir_all(dir.join("blobs").join("sha256"))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = dir.join("index.json");
        if !index.exists() {
            let doc = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [],
            });
            write_atomic(&index, doc.to_string().as_bytes())?;
        }
        Ok(OciLayout {
            root: dir.to_path_buf(),
        })
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the blob with `digest` (`sha256:HEX`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        self.root.join("blobs").join(alg).join(hex)
    }

    /// Stores `bytes` as a blob (no-op if present) and returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> io::Result<String> {
        let digest = sha256_digest(bytes);
        let path = self.blob_path(&digest);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Reads a blob.
    pub fn read_blob(&self, digest: &str) -> io::Result<Vec<u8>> {
        fs::read(self.blob_path(digest))
    }

    /// The parsed `index.json`.
    pub fn index(&self) -> io::Result<serde_json::Value> {
        let bytes = fs::read(self.root.join("index.json"))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::other(format!("{}: {e}", self.root.join("index.json").display()))
        })
    }

    /// The descriptor tagged `tag` in `index.json`, if any.
    pub fn find_tag(&self, tag: &str) -> io::Result<Option<serde_json::Value>> {
        let index = self.index()?;
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["annotations"][REF_NAME_ANNOTATION] == tag)
            .cloned())
    }

    /// Points `tag` at `desc` in `index.json`, replacing an earlier entry with the same tag.
    pub fn tag(&self, desc: &BlobInfo, tag: &str) -> io::Result<()> {
        let mut index = self.index()?;
        let manifests = index
            .get_mut("manifests")
            .and_then(|m| m.as_array_mut())
            .ok_or_else(|| io::Error::other("index.json has no manifests array"))?;
        manifests.retain(|d| d["annotations"][REF_NAME_ANNOTATION] != tag);
        manifests.push(serde_json::json!({
            "mediaType": desc.media_type,
            "digest": desc.digest,
            "size": desc.size,
            "annotations": { REF_NAME_ANNOTATION: tag },
        }));
        write_atomic(&self.root.join("index.json"), index.to_string().as_bytes())
    }

    /// Copies the image or index tagged `tag` into `dest` in the layout of containers/image's
    /// `dir:` transport (version 1.1): `version`, `manifest.json`, each blob as `HEX`, and for an
    /// index each member manifest as `HEX.manifest.json`. Returns the top manifest's descriptor
    /// (as found in `index.json`).
    ///
    /// skopeo 1.9's `oci:` transport ignores `index.json` entries whose media type is not an OCI
    /// manifest or index ("no descriptor found for reference"), so Docker v2s2 images are pushed
    /// through this transport instead.
    pub fn export_dir_transport(&self, tag: &str, dest: &Path) -> io::Result<serde_json::Value> {
        let desc = self.find_tag(tag)?.ok_or_else(|| {
            io::Error::other(format!(
                "tag {tag:?} not in {}/index.json",
                self.root.display()
            ))
        })?;
        let digest = desc["digest"]
            .as_str()
            .ok_or_else(|| io::Error::other(format!("tag {tag:?}: descriptor without digest")))?;
        fs::create_dir_all(dest)?;
        fs::write(dest.join("version"), "Directory Transport Version: 1.1\n")?;
        let top = self.read_blob(digest)?;
        fs::write(dest.join("manifest.json"), &top)?;
        let doc: serde_json::Value = serde_json::from_slice(&top).map_err(io::Error::other)?;
        let hex = |d: &str| d.split_once(':').map_or(d, |(_, h)| h).to_string();
        let mut images = Vec::new();
        if let Some(members) = doc["manifests"].as_array() {
            for m in members {
                let d = m["digest"].as_str().unwrap_or_default();
                let bytes = self.read_blob(d)?;
                fs::write(dest.join(format!("{}.manifest.json", hex(d))), &bytes)?;
                images.push(
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .map_err(io::Error::other)?,
                );
            }
        } else {
            images.push(doc);
        }
        for img in &images {
            let blobs = std::iter::once(&img["config"])
                .chain(img["layers"].as_array().into_iter().flatten());
            for b in blobs {
                if let Some(d) = b["digest"].as_str() {
                    fs::copy(self.blob_path(d), dest.join(hex(d)))?;
                }
            }
        }
        Ok(desc)
    }
}

/// Writes `bytes` to a temporary file next to `path`, then renames it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent", path.display())))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    io::Write::write_all(&mut tmp, bytes)?;
    // NamedTempFile is 0600; a layout is read by other tools, maybe as other users.
    use std::os::unix::fs::PermissionsExt as _;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
