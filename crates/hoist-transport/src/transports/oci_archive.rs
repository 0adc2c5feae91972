//! `oci-archive:FILE[:REF]` as a `hoist copy` source and destination, on top of
//! hoist-archive's reader and writers ([`hoist_archive::oci`]).
//!
//! **Source**: the archive is indexed in one pass and checked as `hoist load` checks it
//! (a compressed archive decompressed first; paths escaping with `..`, duplicates, links
//! that leave the archive or go round, directories where a file is expected, document
//! sizes); `REF` is an `org.opencontainers.image.ref.name` (or `@N`), else the layout must
//! hold one image. Manifests are read by offset, at most 4 MiB, and verified against
//! their digests (and sizes, where a descriptor gives one); blobs stream by offset with
//! their size checked, and the destination verifies every digest. The copy engine checks
//! the config's diff ID count.
//!
//! **Destination**: the layout is written into a temp file beside `FILE` as the blobs
//! arrive: `oci-layout` first, then each blob once, hashed and counted on the way,
//! straight into its own slot of the tar (`blobs/<alg>/<hex>`, a [`SlotWriter`] slot
//! reserved at its declared size, so several blobs are written at once), manifests as
//! they come (digests kept; `--format oci`, the default, converts as for `oci:`).
//! `commit` writes `index.json` (the entry `oci:` would write, `REF` as its
//! `org.opencontainers.image.ref.name`) and renames the temp file over `FILE`, as skopeo
//! replaces an oci-archive. A copy that fails leaves `FILE` as it was and removes the
//! temp file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hoist_archive::oci::{OciArchive, blob_entry};
use hoist_archive::{ArchiveProblem, SlotWriter, TempOutput};
use hoist_types::{ANNOTATION_REF_NAME, Algorithm, Descriptor, Digest, Progress};

use super::docker_archive::{open_slots, publish_slots, put_slot};
use super::oci::{OCI_LAYOUT, updated_index};
use super::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ImageSource,
    ManifestFormat, ManifestRef, ManifestTarget, RawManifest, raw_manifest,
};
use crate::{TransportError, blocking};

fn describe(file: &Path, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("oci-archive:{}:{n}", file.display()),
        None => format!("oci-archive:{}", file.display()),
    }
}

/// Reading an image of an oci-archive.
#[derive(Debug)]
pub struct OciArchiveSource {
    archive: Arc<OciArchive>,
    name: String,
    top: RawManifest,
}

/// A manifest of the archive, verified against `desc`'s digest (and size, when the
/// descriptor comes from a document that states it).
fn read_manifest(
    archive: &OciArchive,
    desc: &Descriptor,
    sized: bool,
) -> Result<RawManifest, TransportError> {
    let entry = blob_entry(&desc.digest);
    let bytes = if sized {
        archive.read_document(desc, "a manifest")?
    } else {
        archive.index().read_document(&entry, "a manifest")?
    };
    let declared = desc.media_type.is_manifest().then_some(&desc.media_type);
    raw_manifest(bytes, declared, Some(&desc.digest)).map_err(|source| {
        archive
            .index()
            .bad(ArchiveProblem::Document { entry, source })
            .into()
    })
}

impl OciArchiveSource {
    /// Index the archive at `file` and read the top manifest of the image `name` (a
    /// `ref.name` or `@N`; `None`: the only image).
    pub async fn open(
        file: PathBuf,
        name: Option<String>,
    ) -> Result<OciArchiveSource, TransportError> {
        blocking(move || {
            let archive = OciArchive::open(&file)?;
            let entry = archive.select(name.as_deref())?.clone();
            let top = read_manifest(&archive, &entry, true)?;
            Ok(OciArchiveSource {
                archive: Arc::new(archive),
                name: describe(&file, name.as_deref()),
                top,
            })
        })
        .await?
    }
}

impl ImageSource for OciArchiveSource {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn get_manifest(&self, which: &ManifestRef) -> Result<RawManifest, TransportError> {
        let (desc, sized) = match which {
            ManifestRef::Top => return Ok(self.top.clone()),
            ManifestRef::Digest(d) if d == &self.top.digest => return Ok(self.top.clone()),
            ManifestRef::Digest(d) => {
                match self.archive.entries().iter().find(|e| &e.digest == d) {
                    Some(e) => (e.clone(), true),
                    // An instance of an index: the engine checks its size against the entry.
                    None => (
                        Descriptor::new(hoist_types::MediaType::Other(String::new()), d.clone(), 0),
                        false,
                    ),
                }
            }
            ManifestRef::Tag(t) => (self.archive.select(Some(t))?.clone(), true),
        };
        let archive = self.archive.clone();
        blocking(move || read_manifest(&archive, &desc, sized)).await?
    }

    async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, TransportError> {
        let entry = blob_entry(&desc.digest);
        // Named as what it is in the error when it is missing or not a regular file.
        let what = match desc.media_type.layer_compression() {
            Some(_) => "a layer",
            None => "a blob",
        };
        self.archive.index().file(&entry, what)?;
        let reader = self.archive.open_blob(desc)?;
        let origin = format!("{}: {entry}", self.describe());
        Ok(BlobStream::from_reader(Box::new(reader), desc.size, origin))
    }

    async fn tags(&self) -> Result<Vec<String>, TransportError> {
        Ok(self
            .archive
            .entries()
            .iter()
            .filter_map(|d| d.annotation(ANNOTATION_REF_NAME).map(str::to_owned))
            .collect())
    }
}

/// Writing an oci-archive, each blob once, straight into the tar.
#[derive(Debug)]
pub struct OciArchiveDestination {
    file: PathBuf,
    name: Option<String>,
    out: TempOutput,
    slots: SlotWriter,
    staged: Mutex<Written>,
}

/// What an oci-archive destination has taken.
#[derive(Debug, Default)]
struct Written {
    /// The top manifest, and manifests put under extra tags.
    top: Option<RawManifest>,
    tags: Vec<(String, RawManifest)>,
    /// Blobs and manifests in the tar.
    blobs: HashSet<Digest>,
    /// The `blobs/<alg>` directories written.
    dirs: HashSet<Algorithm>,
}

impl OciArchiveDestination {
    /// Prepare writing `file`, the image named `name` in its `index.json`.
    pub async fn open(
        file: PathBuf,
        name: Option<String>,
    ) -> Result<OciArchiveDestination, TransportError> {
        let f = file.clone();
        let (out, slots) = blocking(move || {
            let (out, slots) = open_slots(&f)?;
            let io = |source| TransportError::Io {
                what: format!("writing archive {}", f.display()),
                source,
            };
            slots
                .bytes("oci-layout", OCI_LAYOUT.as_bytes())
                .map_err(io)?;
            slots.dir("blobs").map_err(io)?;
            Ok::<_, TransportError>((out, slots))
        })
        .await??;
        Ok(OciArchiveDestination {
            file,
            name,
            out,
            slots,
            staged: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, Written> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim the entry of `d` (false: already there) and write its `blobs/<alg>`
    /// directory entry the first time.
    fn claim(&self, d: &Digest) -> Result<bool, TransportError> {
        let mut st = self.state();
        if !st.blobs.insert(d.clone()) {
            return Ok(false);
        }
        if st.dirs.insert(d.algorithm()) {
            self.slots
                .dir(&format!("blobs/{}", d.algorithm()))
                .map_err(|source| TransportError::Io {
                    what: format!("writing archive {}", self.file.display()),
                    source,
                })?;
        }
        Ok(true)
    }
}

impl ImageDestination for OciArchiveDestination {
    fn describe(&self) -> String {
        describe(&self.file, self.name.as_deref())
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
        Ok(self.state().blobs.contains(&desc.digest))
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        if !self.claim(&desc.digest)? {
            return Ok(());
        }
        put_slot(
            &self.slots,
            blob_entry(&desc.digest),
            desc,
            stream,
            progress,
        )
        .await
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        if self.claim(&manifest.digest)? {
            let (slots, name, bytes) = (
                self.slots.clone(),
                blob_entry(&manifest.digest),
                manifest.bytes.clone(),
            );
            blocking(move || {
                slots
                    .bytes(&name, &bytes)
                    .map_err(|source| TransportError::Io {
                        what: format!("writing {name} of the archive"),
                        source,
                    })
            })
            .await??;
        }
        let mut st = self.state();
        match target {
            ManifestTarget::Top => st.top = Some(manifest.clone()),
            ManifestTarget::Instance => {}
            ManifestTarget::Tag(t) => st.tags.push((t.clone(), manifest.clone())),
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
            "an OCI archive keeps no simple-signing signatures",
        )
    }

    async fn commit(self) -> Result<Committed, TransportError> {
        let location = self.describe();
        let st = std::mem::take(&mut *self.state());
        let top = st
            .top
            .ok_or_else(|| TransportError::Unsupported {
                what: format!("{location}: commit without a manifest"),
            })?
            .descriptor();
        let digest = top.digest.clone();
        let (file, name, out, slots) = (self.file, self.name, self.out, self.slots);
        blocking(move || {
            let mut doc = None;
            for (t, m) in &st.tags {
                doc = Some(updated_index(doc, &m.descriptor(), Some(t)));
            }
            let doc = updated_index(doc, &top, name.as_deref());
            let bytes = serde_json::to_vec(&doc).expect("JSON values serialise");
            slots
                .bytes("index.json", &bytes)
                .map_err(|source| TransportError::Io {
                    what: format!("writing index.json of {}", file.display()),
                    source,
                })?;
            publish_slots(out, slots, &file)
        })
        .await??;
        Ok(Committed { digest, location })
    }
}
