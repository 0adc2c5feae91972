//! `dir:DIR`: skopeo's directory layout (containers/image "Directory Transport Version
//! 1.1").
//!
//! ```text
//! DIR/
//!   version                 "Directory Transport Version: 1.1\n"
//!   manifest.json           the top manifest (an image manifest or an index), exact bytes
//!   <hex>                   each blob (config, layers), named by its digest's hex
//!   <hex>.manifest.json     each instance of an index, by its digest
//!   signature-<N>           simple-signing signatures of the top manifest, N from 1
//!   <hex>.signature-<N>     signatures of an instance
//! ```
//!
//! **Source**: every file is untrusted: opened without following a final symlink, a
//! regular file, documents bounded to 4 MiB; instance manifests are verified against
//! their digests (blobs by the destination).
//!
//! **Destination**: everything is written into a staging directory beside `DIR`
//! (verified blobs, manifests, signatures, `version`); `commit` puts it in place of `DIR`
//! (which must be absent, empty, or an earlier `dir:` layout: skopeo's rule). A copy that
//! fails removes the staging directory and leaves `DIR` as it was.

use std::fs;
use std::path::{Path, PathBuf};

use hoist_types::{Descriptor, Digest, MAX_MANIFEST_SIZE, Progress};

use super::local::{self, invalid, invalid_from};
use super::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ImageSource,
    ManifestRef, ManifestTarget, RawManifest, Staged, raw_manifest,
};
use crate::{TransportError, blocking};

/// The `version` file's content.
pub const VERSION: &str = "Directory Transport Version: 1.1\n";
/// Most signatures read per manifest.
const MAX_SIGNATURES: usize = 256;

fn manifest_file(dir: &Path, instance: Option<&Digest>) -> PathBuf {
    match instance {
        None => dir.join("manifest.json"),
        Some(d) => dir.join(format!("{}.manifest.json", d.hex())),
    }
}

fn signature_file(dir: &Path, instance: Option<&Digest>, n: usize) -> PathBuf {
    match instance {
        None => dir.join(format!("signature-{n}")),
        Some(d) => dir.join(format!("{}.signature-{n}", d.hex())),
    }
}

/// Reading a `dir:` layout.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    top: RawManifest,
}

impl DirSource {
    /// Open the layout at `dir` and read its top manifest.
    pub async fn open(dir: PathBuf) -> Result<DirSource, TransportError> {
        blocking(move || {
            let path = manifest_file(&dir, None);
            let bytes = local::read_bounded(&path, MAX_MANIFEST_SIZE)?
                .ok_or_else(|| invalid(&path, "missing: not a dir: layout"))?;
            let top = raw_manifest(bytes, None, None)
                .map_err(|e| invalid_from(&path, "not a usable manifest", e))?;
            Ok(DirSource { dir, top })
        })
        .await?
    }
}

impl ImageSource for DirSource {
    fn describe(&self) -> String {
        format!("dir:{}", self.dir.display())
    }

    async fn get_manifest(&self, which: &ManifestRef) -> Result<RawManifest, TransportError> {
        match which {
            ManifestRef::Top => Ok(self.top.clone()),
            ManifestRef::Digest(d) if d == &self.top.digest => Ok(self.top.clone()),
            ManifestRef::Digest(d) => {
                let (path, d) = (manifest_file(&self.dir, Some(d)), d.clone());
                let location = self.describe();
                blocking(move || {
                    let bytes = local::read_bounded(&path, MAX_MANIFEST_SIZE)?.ok_or(
                        TransportError::BlobNotFound {
                            digest: d.clone(),
                            location,
                        },
                    )?;
                    raw_manifest(bytes, None, Some(&d))
                        .map_err(|e| invalid_from(&path, "not a usable manifest", e))
                })
                .await?
            }
            ManifestRef::Tag(t) => Err(TransportError::NotSupportedBy {
                location: self.describe(),
                reason: format!("a dir: layout has no tags (asked for {t:?})"),
            }),
        }
    }

    async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, TransportError> {
        let (path, d, loc) = (
            self.dir.join(desc.digest.hex()),
            desc.clone(),
            self.describe(),
        );
        blocking(move || local::blob_stream(&path, &d, &loc)).await?
    }

    async fn get_signatures(
        &self,
        instance: Option<&Digest>,
    ) -> Result<Vec<Vec<u8>>, TransportError> {
        let instance = instance.filter(|d| *d != &self.top.digest).cloned();
        let dir = self.dir.clone();
        blocking(move || {
            let mut out = Vec::new();
            for n in 1..=MAX_SIGNATURES {
                match local::read_bounded(
                    &signature_file(&dir, instance.as_ref(), n),
                    MAX_MANIFEST_SIZE,
                )? {
                    Some(b) => out.push(b),
                    None => break,
                }
            }
            Ok(out)
        })
        .await?
    }

    async fn tags(&self) -> Result<Vec<String>, TransportError> {
        Ok(Vec::new())
    }
}

/// Writing a `dir:` layout (through a staging directory).
#[derive(Debug)]
pub struct DirDestination {
    dir: PathBuf,
    staging: PathBuf,
    staged: Staged,
    committed: bool,
}

/// Whether `dir` may be replaced by a `dir:` layout: absent, empty, or holding `version`.
fn check_replaceable(dir: &Path) -> Result<bool, TransportError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(local::io_err("stat", dir)(e)),
        Ok(m) if !m.is_dir() => return Err(invalid(dir, "exists and is not a directory")),
        Ok(_) => {}
    }
    let mut it = fs::read_dir(dir).map_err(local::io_err("read directory", dir))?;
    if it.next().is_none() {
        return Ok(true);
    }
    if fs::symlink_metadata(dir.join("version")).is_ok_and(|m| m.is_file()) {
        return Ok(true);
    }
    Err(invalid(
        dir,
        "is a non-empty directory that is not a dir: layout; refusing to overwrite it",
    ))
}

impl DirDestination {
    /// Prepare writing `dir`. It must be absent, empty, or an earlier `dir:` layout.
    pub async fn open(dir: PathBuf) -> Result<DirDestination, TransportError> {
        let d = dir.clone();
        let staging = blocking(move || {
            check_replaceable(&d)?;
            let parent = match d.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            local::create_dir_all(&parent)?;
            let stem = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "dir".to_owned());
            let staging = local::temp_path(&parent, &stem);
            fs::create_dir(&staging).map_err(local::io_err("create directory", &staging))?;
            local::write_atomic(&staging.join("version"), VERSION.as_bytes())?;
            Ok::<_, TransportError>(staging)
        })
        .await??;
        Ok(DirDestination {
            dir,
            staging,
            staged: Staged::new(),
            committed: false,
        })
    }
}

impl Drop for DirDestination {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

impl ImageDestination for DirDestination {
    fn describe(&self) -> String {
        format!("dir:{}", self.dir.display())
    }

    fn capabilities(&self) -> DestinationCaps {
        DestinationCaps {
            signatures: true,
            ..DestinationCaps::default()
        }
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        _hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        local::has_blob_file(self.staging.join(desc.digest.hex()), desc.size).await
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        local::put_blob_file(self.staging.join(desc.digest.hex()), desc, stream, progress).await
    }

    /// Resumable (within and across runs): the blob is fetched into a partial file in
    /// `.NAME.hoist-ingest/` beside the layout directory (the staging directory goes with
    /// a failed copy; the partial stays for the next run), and renamed into the staging
    /// directory once verified; the ingest directory goes when empty.
    async fn put_blob_from(
        &self,
        desc: &Descriptor,
        kind: hoist_types::BlobKind,
        fetcher: &crate::fetch::BlobFetcher,
        progress: &dyn Progress,
    ) -> Result<bool, TransportError> {
        let parent = self.staging.parent().unwrap_or(Path::new("."));
        let stem = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dir".to_owned());
        let ingest = parent.join(format!(".{stem}.hoist-ingest"));
        let dest = self.staging.join(desc.digest.hex());
        local::fetch_resumable(ingest, dest, desc, kind, fetcher, progress).await?;
        Ok(true)
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        let path = match target {
            ManifestTarget::Top => manifest_file(&self.staging, None),
            ManifestTarget::Instance => manifest_file(&self.staging, Some(&manifest.digest)),
            ManifestTarget::Tag(t) => {
                return Err(TransportError::NotSupportedBy {
                    location: self.describe(),
                    reason: format!("a dir: layout has no tags (asked for {t:?})"),
                });
            }
        };
        let bytes = manifest.bytes.clone();
        blocking(move || local::write_atomic(&path, &bytes)).await??;
        if *target == ManifestTarget::Top {
            self.staged.record(manifest, target);
        }
        Ok(())
    }

    async fn put_signatures(
        &self,
        instance: &Digest,
        signatures: &[Vec<u8>],
    ) -> Result<(), TransportError> {
        // Written at commit, when the top manifest is known: its signatures are
        // `signature-N`, an instance's `HEX.signature-N`, whatever order they came in.
        self.staged.record_signatures(instance, signatures);
        Ok(())
    }

    async fn commit(mut self) -> Result<Committed, TransportError> {
        let location = self.describe();
        let mut st = self.staged.take();
        let digest = st.take_top(&location)?.digest;
        let (dir, staging) = (self.dir.clone(), self.staging.clone());
        let top = digest.clone();
        blocking(move || {
            for (instance, sigs) in &st.signatures {
                let inst = (*instance != top).then_some(instance);
                for (i, s) in sigs.iter().enumerate() {
                    local::write_atomic(&signature_file(&staging, inst, i + 1), s)?;
                }
            }
            let parent = staging.parent().unwrap_or(Path::new(".")).to_owned();
            let old = if check_replaceable(&dir)? {
                let old = local::temp_path(&parent, "old");
                fs::rename(&dir, &old).map_err(local::io_err("move aside", &dir))?;
                Some(old)
            } else {
                None
            };
            if let Err(e) = fs::rename(&staging, &dir) {
                if let Some(old) = &old {
                    let _ = fs::rename(old, &dir);
                }
                return Err(local::io_err("rename into", &dir)(e));
            }
            local::fsync_dir(&parent)?;
            if let Some(old) = old {
                let _ = fs::remove_dir_all(old);
            }
            Ok(())
        })
        .await??;
        self.committed = true;
        Ok(Committed { digest, location })
    }
}
