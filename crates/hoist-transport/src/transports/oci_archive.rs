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
//!
//! **Several images** ([`OciArchiveWriter`], `hoist save --format oci-archive`): one
//! destination per image into one temp tar; each commit adds the image's `index.json`
//! entries (one per name, with its platform), blobs already in the tar are not written
//! again, and [`OciArchiveWriter::finish`] writes `index.json` and renames.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hoist_archive::oci::{OciArchive, blob_entry};
use hoist_archive::{ArchiveProblem, SlotWriter};
use hoist_types::{
    ANNOTATION_REF_NAME, Algorithm, Descriptor, Digest, ImageIndex, MediaType, Progress, Reference,
};

use super::oci::{OCI_LAYOUT, updated_index};
use super::slot_archive::{ArchiveTarget, Entries, SlotArchive, put_slot};
use super::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ImageSource,
    ManifestFormat, ManifestRef, ManifestTarget, RawManifest, Staged, raw_manifest,
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

    /// Every image `index.json` lists (`hoist load`), in its order, each with the name its
    /// entry gives ([`OciImage::name`](hoist_archive::oci::OciImage::name)); `file` names
    /// the archive in errors. Blocking: reads each entry's manifest.
    pub fn every(
        archive: OciArchive,
        file: &Path,
    ) -> Result<Vec<(OciArchiveSource, Option<Reference>)>, TransportError> {
        let archive = Arc::new(archive);
        archive
            .entries()
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let top = read_manifest(&archive, entry, true)?;
                let src = OciArchiveSource {
                    archive: archive.clone(),
                    name: describe(file, Some(&format!("@{i}"))),
                    top,
                };
                Ok((src, hoist_archive::oci::entry_name(entry)))
            })
            .collect()
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

/// An archive being written, shared by the destinations of its images
/// ([`OciArchiveWriter::image`]).
type Writer = SlotArchive<Written>;

/// What an oci-archive being written holds.
#[derive(Debug, Default)]
struct Written {
    /// Blobs and manifests in the tar, and those being written.
    blobs: Entries,
    /// The `blobs/<alg>` directories written.
    dirs: HashSet<Algorithm>,
    /// `index.json` as the committed images made it.
    index: Option<ImageIndex>,
}

/// Writing an oci-archive (or one image of a multi-image one), each blob once, straight
/// into the tar.
#[derive(Debug)]
pub struct OciArchiveDestination {
    writer: Arc<Writer>,
    /// The names the image gets in `index.json` (none: an entry without a name).
    names: Vec<String>,
    /// Extra annotations and the platform of its `index.json` entries.
    entry: Descriptor,
    /// `commit` finishes the archive (an `oci-archive:` destination); else it adds the
    /// image to the archive its [`OciArchiveWriter`] finishes.
    whole: bool,
    staged: Staged,
}

/// An oci-archive of several images and names (`hoist save --format oci-archive`): the
/// copy engine copies each image into a destination from [`OciArchiveWriter::image`]
/// (blobs the archive has are not sent again), whose commit adds its `index.json`
/// entries; [`OciArchiveWriter::finish`] writes `index.json` and publishes the archive.
#[derive(Debug)]
pub struct OciArchiveWriter {
    writer: Arc<Writer>,
}

impl OciArchiveWriter {
    /// Start writing an archive to `target`.
    pub async fn create(target: ArchiveTarget) -> Result<OciArchiveWriter, TransportError> {
        Ok(OciArchiveWriter {
            writer: Arc::new(Writer::create(target, preamble).await?),
        })
    }

    /// A destination for one image, listed in `index.json` under each of `names` (none:
    /// one entry without a name), each entry carrying `platform` and `annotations`
    /// besides its `org.opencontainers.image.ref.name`.
    pub fn image(
        &self,
        names: Vec<String>,
        platform: Option<hoist_types::Platform>,
        annotations: BTreeMap<String, String>,
    ) -> OciArchiveDestination {
        let mut entry = Descriptor::new(MediaType::OciManifest, Digest::sha256_of(b""), 0);
        entry.platform = platform;
        entry.annotations = (!annotations.is_empty()).then_some(annotations);
        OciArchiveDestination {
            writer: self.writer.clone(),
            names,
            entry,
            whole: false,
            staged: Staged::new(),
        }
    }

    /// Write `index.json` and publish the archive. Refused when no image was committed
    /// or a destination of it is still alive.
    pub async fn finish(self) -> Result<(), TransportError> {
        Writer::finish(self.writer, still_writing, write_index).await
    }
}

impl Writer {
    /// Claim the entry of `d` (false: in the tar or being written) and write its
    /// `blobs/<alg>` directory entry the first time.
    fn claim(&self, d: &Digest) -> Result<bool, TransportError> {
        let mut st = self.state();
        if !st.blobs.claim(d) {
            return Ok(false);
        }
        if st.dirs.insert(d.algorithm()) {
            self.slots
                .dir(&format!("blobs/{}", d.algorithm()))
                .map_err(|source| TransportError::Io {
                    op: "write archive",
                    path: Some(self.file.to_path_buf()),
                    source,
                })?;
        }
        Ok(true)
    }

    /// The write of a claimed entry ended: visible only when it succeeded.
    fn settle(&self, d: &Digest, ok: bool) {
        self.state().blobs.settle(d, ok);
    }
}

/// The first entries of an oci-archive: `oci-layout` and the `blobs` directory.
fn preamble(slots: &SlotWriter) -> std::io::Result<()> {
    slots.bytes("oci-layout", OCI_LAYOUT.as_bytes())?;
    slots.dir("blobs")
}

fn still_writing(file: &Path) -> String {
    format!(
        "finishing archive {} while an image is still being written into it",
        file.display()
    )
}

/// The closing entry of an oci-archive: `index.json` as the committed images made it.
fn write_index(slots: &mut SlotWriter, st: Written, file: &Path) -> Result<(), TransportError> {
    let doc = st.index.ok_or_else(|| TransportError::NoImage {
        location: describe(file, None),
    })?;
    let bytes = serde_json::to_vec(&doc).expect("JSON values serialise");
    slots
        .bytes("index.json", &bytes)
        .map_err(|source| TransportError::Io {
            op: "write the index.json of",
            path: Some(file.to_path_buf()),
            source,
        })
}

impl OciArchiveDestination {
    /// Prepare writing `file`, the image named `name` in its `index.json`.
    pub async fn open(
        file: PathBuf,
        name: Option<String>,
    ) -> Result<OciArchiveDestination, TransportError> {
        Ok(OciArchiveDestination {
            writer: Arc::new(Writer::create(ArchiveTarget::Path(file), preamble).await?),
            names: name.into_iter().collect(),
            entry: Descriptor::new(MediaType::OciManifest, Digest::sha256_of(b""), 0),
            whole: true,
            staged: Staged::new(),
        })
    }

    /// The `index.json` entry for manifest `m`: its descriptor with this image's
    /// platform and annotations.
    fn entry_for(&self, m: &RawManifest) -> Descriptor {
        let d = m.descriptor();
        Descriptor {
            platform: self.entry.platform.clone(),
            annotations: self.entry.annotations.clone(),
            ..d
        }
    }
}

impl ImageDestination for OciArchiveDestination {
    fn describe(&self) -> String {
        describe(&self.writer.file, self.names.first().map(String::as_str))
    }

    fn capabilities(&self) -> DestinationCaps {
        DestinationCaps {
            default_format: Some(ManifestFormat::Oci),
            ordered: true,
            ..DestinationCaps::default()
        }
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        _hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        Ok(self.writer.state().blobs.contains(&desc.digest))
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        if !self.writer.claim(&desc.digest)? {
            return Ok(());
        }
        let r = put_slot(
            &self.writer.slots,
            blob_entry(&desc.digest),
            desc,
            stream,
            progress,
        )
        .await;
        self.writer.settle(&desc.digest, r.is_ok());
        r
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        if self.writer.claim(&manifest.digest)? {
            let (slots, name, bytes) = (
                self.writer.slots.clone(),
                blob_entry(&manifest.digest),
                manifest.bytes.clone(),
            );
            let r = blocking(move || {
                slots
                    .bytes(&name, &bytes)
                    .map_err(|source| TransportError::Stream {
                        what: format!("writing {name} of the archive"),
                        source,
                    })
            })
            .await
            .and_then(|r| r);
            self.writer.settle(&manifest.digest, r.is_ok());
            r?;
        }
        self.staged.record(manifest, target);
        Ok(())
    }

    /// Add the image's entries to `index.json` (a name given again moves to this
    /// image); a whole-archive destination then writes `index.json` and publishes.
    async fn commit(self) -> Result<Committed, TransportError> {
        let location = self.describe();
        let mut st = self.staged.take();
        let top = st.take_top(&location)?;
        let digest = top.digest.clone();
        {
            let mut w = self.writer.state();
            let mut doc = w.index.take();
            for (t, m) in &st.tags {
                doc = Some(updated_index(doc, &self.entry_for(m), Some(t)));
            }
            let entry = self.entry_for(&top);
            if self.names.is_empty() {
                doc = Some(updated_index(doc, &entry, None));
            }
            for n in &self.names {
                doc = Some(updated_index(doc, &entry, Some(n)));
            }
            w.index = doc;
        }
        if self.whole {
            let busy = location.clone();
            Writer::finish(
                self.writer,
                move |_| format!("{busy}: the archive is still being written"),
                write_index,
            )
            .await?;
        }
        Ok(Committed { digest, location })
    }
}
