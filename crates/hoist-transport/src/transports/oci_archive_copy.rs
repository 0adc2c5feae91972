//! `oci-archive:FILE[:REF]` as a `hoist copy` source and destination, on top of the reader
//! `hoist load` uses ([`super::oci_archive`]) and the `oci:` layout destination.
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
//! **Destination**: an `oci:` layout is written into a staging directory beside `FILE`
//! ([`OciDestination`]: verified blobs, manifests as they come, so digests are kept;
//! `--format oci` converts); `commit` writes its `index.json` and then the tar of the
//! layout (`oci-layout`, `blobs/<alg>/<hex>`, `index.json`) to a temp file renamed over
//! `FILE`, as skopeo replaces an oci-archive. A copy that fails leaves `FILE` as it was
//! and removes the staging directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hoist_types::{ANNOTATION_REF_NAME, Descriptor, Digest, Progress};

use super::archive_tar::{ArchiveProblem, MAX_DOCUMENT, Output, TarWriter, write_output};
use super::docker_archive_copy::staging_beside;
use super::local;
use super::oci::OciDestination;
use super::oci_archive::{OciArchive, blob_entry};
use super::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ImageSource,
    ManifestRef, ManifestTarget, RawManifest, raw_manifest,
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

/// Writing an oci-archive: an `oci:` layout staged beside the file, tarred at commit.
#[derive(Debug)]
pub struct OciArchiveDestination {
    file: PathBuf,
    name: Option<String>,
    layout: PathBuf,
    inner: OciDestination,
    // Last: removed after `inner` is dropped.
    _staging: tempfile::TempDir,
}

impl OciArchiveDestination {
    /// Prepare writing `file`, the image named `name` in its `index.json`.
    pub async fn open(
        file: PathBuf,
        name: Option<String>,
    ) -> Result<OciArchiveDestination, TransportError> {
        let f = file.clone();
        let staging = blocking(move || staging_beside(&f)).await??;
        let layout = staging.path().join("layout");
        let inner = OciDestination::open(layout.clone(), name.clone()).await?;
        Ok(OciArchiveDestination {
            file,
            name,
            layout,
            inner,
            _staging: staging,
        })
    }
}

impl ImageDestination for OciArchiveDestination {
    fn describe(&self) -> String {
        describe(&self.file, self.name.as_deref())
    }

    fn capabilities(&self) -> DestinationCaps {
        self.inner.capabilities()
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        self.inner.has_blob(desc, hints).await
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        self.inner.put_blob(desc, stream, progress).await
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        self.inner.put_manifest(manifest, target).await
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
        let OciArchiveDestination {
            file,
            layout,
            inner,
            _staging: staging,
            ..
        } = self;
        let committed = inner.commit().await?;
        blocking(move || {
            let r = write_output(Output::Path(&file), |w, _| tar_layout(&layout, w));
            drop(staging);
            r
        })
        .await??;
        Ok(Committed {
            digest: committed.digest,
            location,
        })
    }
}

/// The tar of the layout at `dir`: `oci-layout`, `blobs/<alg>/` and their files (sorted),
/// `index.json` last.
fn tar_layout(dir: &Path, out: &mut dyn std::io::Write) -> Result<(), TransportError> {
    let mut tar = TarWriter::new(out);
    let wio = |what: String| move |source| TransportError::Io { what, source };
    let read_doc = |name: &str| -> Result<Vec<u8>, TransportError> {
        let path = dir.join(name);
        local::read_bounded(&path, MAX_DOCUMENT)?
            .ok_or_else(|| local::invalid(&path, "missing from the staged layout"))
    };
    tar.bytes("oci-layout", &read_doc("oci-layout")?)
        .map_err(wio("writing oci-layout".into()))?;
    tar.dir("blobs").map_err(wio("writing blobs/".into()))?;
    let blobs = dir.join("blobs");
    for alg in sorted_names(&blobs)? {
        let alg_dir = blobs.join(&alg);
        tar.dir(&format!("blobs/{alg}"))
            .map_err(wio(format!("writing blobs/{alg}/")))?;
        for hex in sorted_names(&alg_dir)? {
            if hex.starts_with('.') {
                continue; // a temp file of a failed write (none after a good copy)
            }
            let path = alg_dir.join(&hex);
            let f = File::open(&path).map_err(local::io_err("open", &path))?;
            let size = f.metadata().map_err(local::io_err("stat", &path))?.len();
            let name = format!("blobs/{alg}/{hex}");
            tar.copy(&name, size, f)
                .map_err(wio(format!("writing {name}")))?;
        }
    }
    tar.bytes("index.json", &read_doc("index.json")?)
        .map_err(wio("writing index.json".into()))?;
    tar.finish().map_err(wio("finishing the archive".into()))?;
    Ok(())
}

fn sorted_names(dir: &Path) -> Result<Vec<String>, TransportError> {
    let mut names = Vec::new();
    let it = match fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(local::io_err("read directory", dir)(e)),
    };
    for e in it {
        let e = e.map_err(local::io_err("read directory", dir))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
