//! `oci-archive:FILE[:REF]`: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`) in a tar file, as skopeo and buildah write it.
//!
//! Reading: the archive is indexed in one pass ([`ArchiveIndex`]); blobs are then read by
//! offset. `REF` is an `org.opencontainers.image.ref.name` of `index.json` (or `@N`, the
//! N-th entry); without it the layout must hold one image. An entry that is an index is
//! resolved to the host platform's image. Documents are at most 4 MiB and checked
//! against their descriptors' digests and sizes; layers are checked while they stream.
//!
//! Writing: blobs go in as the store holds them (compressed layers stay byte-identical),
//! each once, then `index.json` with one entry per tag (`org.opencontainers.image.ref.name`
//! and `io.containerd.image.name` = the full name) or per untagged image.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::Path;

use hoist_store::{BlobWriter, ImageCommit, Store};
use hoist_types::{
    ANNOTATION_REF_NAME, Descriptor, Digest, Hasher, ImageConfig, ImageIndex, ImageManifest,
    MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, Manifest, MediaType, Platform, Progress, Reference,
};
use serde::Deserialize;

use super::archive::{LoadedImage, SaveImage, parallel};
use super::archive_tar::{ArchiveIndex, ArchiveProblem, EntryReader, TarWriter};
use crate::TransportError;

/// containerd's annotation with an image's full name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// The entry of blob `d` in a layout.
pub fn blob_entry(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// One image of an oci-archive, its documents read and checked.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// The `index.json` entry it came from.
    pub entry: Descriptor,
    /// The index that entry named, when it named one: descriptor and bytes.
    pub index: Option<(Descriptor, Vec<u8>)>,
    /// The image manifest: descriptor and exact bytes.
    pub manifest: (Descriptor, Vec<u8>),
    /// The parsed manifest.
    pub parsed: ImageManifest,
    /// The config's exact bytes.
    pub config_bytes: Vec<u8>,
    /// The parsed config.
    pub config: ImageConfig,
}

impl OciImage {
    /// The name the `index.json` entry gives: containerd's full-name annotation, else a
    /// `ref.name` that is a full `NAME:TAG` (a bare tag like `v1` names no repository).
    pub fn name(&self) -> Option<Reference> {
        let full = |s: &str| {
            Reference::parse(s)
                .ok()
                .filter(|r| r.tag().is_some() && r.digest().is_none())
        };
        if let Some(r) = self.entry.annotation(ANNOTATION_IMAGE_NAME).and_then(full) {
            return Some(r);
        }
        self.entry
            .annotation(ANNOTATION_REF_NAME)
            .filter(|n| n.contains(':') || n.contains('/'))
            .and_then(full)
    }
}

#[derive(Deserialize)]
struct LayoutFile {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

/// An open oci-archive.
#[derive(Debug, Clone)]
pub struct OciArchive {
    index: ArchiveIndex,
    top: ImageIndex,
}

impl OciArchive {
    /// Index the archive at `path` and read its `oci-layout` and `index.json`.
    pub fn open(path: &Path) -> Result<OciArchive, TransportError> {
        OciArchive::from_index(ArchiveIndex::open(path)?)
    }

    /// Read `oci-layout` and `index.json` of an indexed archive.
    pub fn from_index(index: ArchiveIndex) -> Result<OciArchive, TransportError> {
        let (layout, _): (LayoutFile, _) = index.json("oci-layout", "the layout marker")?;
        if !layout.version.starts_with("1.") {
            return Err(index.bad(ArchiveProblem::Invalid {
                entry: "oci-layout".into(),
                reason: "unsupported imageLayoutVersion (want 1.x)",
            }));
        }
        let bytes = index.read_document("index.json", "the layout's index")?;
        let doc = |source| {
            index.bad(ArchiveProblem::Document {
                entry: "index.json".into(),
                source,
            })
        };
        let (parsed, _) = Manifest::parse(&bytes, Some(&MediaType::OciIndex)).map_err(doc)?;
        let Manifest::Index(top) = parsed else {
            return Err(index.bad(ArchiveProblem::Invalid {
                entry: "index.json".into(),
                reason: "not an image index",
            }));
        };
        if top.manifests.is_empty() {
            return Err(index.bad(ArchiveProblem::Empty));
        }
        Ok(OciArchive { index, top })
    }

    /// The archive's index.
    pub fn index(&self) -> &ArchiveIndex {
        &self.index
    }

    /// The entries of `index.json`.
    pub fn entries(&self) -> &[Descriptor] {
        &self.top.manifests
    }

    /// The entry `name` chooses: a `ref.name`, `@N`, or (`None`) the only entry.
    pub fn select(&self, name: Option<&str>) -> Result<&Descriptor, TransportError> {
        let entries = &self.top.manifests;
        let available = || {
            entries
                .iter()
                .enumerate()
                .map(|(i, d)| match d.annotation(ANNOTATION_REF_NAME) {
                    Some(n) => format!("@{i} ({n})"),
                    None => format!("@{i}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let found = match name {
            None if entries.len() == 1 => return Ok(&entries[0]),
            None => {
                return Err(self.index.bad(ArchiveProblem::Ambiguous {
                    count: entries.len(),
                }));
            }
            Some(n) => match n.strip_prefix('@').and_then(|i| i.parse::<usize>().ok()) {
                Some(i) => entries.get(i),
                None => entries
                    .iter()
                    .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(n)),
            },
        };
        found.ok_or_else(|| {
            self.index.bad(ArchiveProblem::NoSuchImage {
                wanted: name.unwrap_or_default().to_owned(),
                available: available(),
            })
        })
    }

    /// A document blob (≤ 4 MiB) checked against its descriptor's size and digest.
    pub fn read_document(
        &self,
        desc: &Descriptor,
        what: &'static str,
    ) -> Result<Vec<u8>, TransportError> {
        let entry = blob_entry(&desc.digest);
        let bytes = self.index.read_document(&entry, what)?;
        self.check(&entry, desc, &bytes)?;
        Ok(bytes)
    }

    fn check(&self, entry: &str, desc: &Descriptor, bytes: &[u8]) -> Result<(), TransportError> {
        if bytes.len() as u64 != desc.size {
            return Err(self.index.bad(ArchiveProblem::SizeMismatch {
                entry: entry.to_owned(),
                expected: desc.size,
                actual: bytes.len() as u64,
            }));
        }
        let actual = desc.digest.compute_like(bytes);
        if actual != desc.digest {
            return Err(self.index.bad(ArchiveProblem::DigestMismatch {
                entry: entry.to_owned(),
                expected: desc.digest.clone(),
                actual,
            }));
        }
        Ok(())
    }

    /// Read the image an `index.json` entry names (through one index level, choosing
    /// `platform`): manifest and config, verified, layer and diff ID counts equal.
    pub fn image(
        &self,
        entry: &Descriptor,
        platform: &Platform,
    ) -> Result<OciImage, TransportError> {
        let doc = |e: &Digest| {
            let entry = blob_entry(e);
            move |source| self.index.bad(ArchiveProblem::Document { entry, source })
        };
        let mut desc = entry.clone();
        let mut index = None;
        let (manifest_bytes, parsed) = loop {
            let bytes = self.read_document(&desc, "a manifest")?;
            let (m, mt) =
                Manifest::parse(&bytes, Some(&desc.media_type)).map_err(doc(&desc.digest))?;
            match m {
                Manifest::Image(m) => {
                    desc.media_type = mt;
                    break (bytes, m);
                }
                Manifest::Index(idx) if index.is_none() => {
                    let chosen = idx.choose(platform).cloned().map_err(|choice| {
                        TransportError::NoMatchingPlatform {
                            reference: format!(
                                "{}: {}",
                                self.index.path().display(),
                                blob_entry(&desc.digest)
                            ),
                            choice,
                        }
                    })?;
                    index = Some((desc.clone(), bytes));
                    desc = chosen;
                }
                _ => {
                    return Err(self.index.bad(ArchiveProblem::Invalid {
                        entry: blob_entry(&desc.digest),
                        reason: "not an image manifest (nested index or schema 1)",
                    }));
                }
            }
        };
        if parsed.config.size > MAX_CONFIG_SIZE {
            return Err(self.index.bad(ArchiveProblem::TooLarge {
                entry: blob_entry(&parsed.config.digest),
                size: parsed.config.size,
                limit: MAX_CONFIG_SIZE,
            }));
        }
        let config_bytes = self.read_document(&parsed.config, "an image config")?;
        let config = ImageConfig::parse(&config_bytes).map_err(doc(&parsed.config.digest))?;
        if config.rootfs.diff_ids.len() != parsed.layers.len() {
            return Err(self.index.bad(ArchiveProblem::LayerCount {
                entry: blob_entry(&parsed.config.digest),
                layers: parsed.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            }));
        }
        for l in &parsed.layers {
            let (_, size) = self.index.file(&blob_entry(&l.digest), "a layer")?;
            if size != l.size {
                return Err(self.index.bad(ArchiveProblem::SizeMismatch {
                    entry: blob_entry(&l.digest),
                    expected: l.size,
                    actual: size,
                }));
            }
        }
        Ok(OciImage {
            entry: entry.clone(),
            index,
            manifest: (desc, manifest_bytes),
            parsed,
            config_bytes,
            config,
        })
    }

    /// A reader over a blob (its size checked against the descriptor; its digest is the
    /// reader's business).
    pub fn open_blob(&self, desc: &Descriptor) -> Result<EntryReader, TransportError> {
        let entry = blob_entry(&desc.digest);
        let r = self.index.open_entry(&entry, "a blob")?;
        if r.remaining() != desc.size {
            return Err(self.index.bad(ArchiveProblem::SizeMismatch {
                entry,
                expected: desc.size,
                actual: r.remaining(),
            }));
        }
        Ok(r)
    }

    /// Copy a blob to `out`, verifying its digest.
    pub fn copy_blob(&self, desc: &Descriptor, out: &mut dyn Write) -> Result<(), TransportError> {
        let entry = blob_entry(&desc.digest);
        let mut r = self.open_blob(desc)?;
        let mut h = Hasher::new(desc.digest.algorithm());
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf).map_err(|source| TransportError::Io {
                what: format!("reading {entry} in archive {}", self.index.path().display()),
                source,
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|source| TransportError::Io {
                    what: format!("copying {entry}"),
                    source,
                })?;
        }
        let actual = h.finish();
        if actual != desc.digest {
            return Err(self.index.bad(ArchiveProblem::DigestMismatch {
                entry,
                expected: desc.digest.clone(),
                actual,
            }));
        }
        Ok(())
    }
}

/// A Docker schema 2 manifest's bytes converted to an OCI image manifest: the media
/// types change, digests and sizes stay (so the config and layer blobs are unchanged).
pub fn docker_to_oci(raw: &[u8]) -> Result<Vec<u8>, hoist_types::TypeError> {
    let (parsed, _) = Manifest::parse(raw, Some(&MediaType::DockerManifest))?;
    let Manifest::Image(mut m) = parsed else {
        return Err(hoist_types::TypeError::InvalidManifest {
            reason: "not an image manifest".into(),
        });
    };
    m.media_type = Some(MediaType::OciManifest);
    m.config.media_type = MediaType::OciConfig;
    for l in &mut m.layers {
        l.media_type = match &l.media_type {
            MediaType::DockerLayerGzip => MediaType::OciLayerGzip,
            MediaType::DockerLayer => MediaType::OciLayer,
            MediaType::DockerForeignLayerGzip => MediaType::OciLayerNondistributableGzip,
            other if other.layer_compression().is_some() => other.clone(),
            other => {
                return Err(hoist_types::TypeError::InvalidManifest {
                    reason: format!("layer media type {other} has no OCI equivalent"),
                });
            }
        };
    }
    Ok(serde_json::to_vec(&m).expect("a manifest serialises"))
}

/// Load every image of an oci-archive into `store`. Every blob is verified before
/// anything is published.
pub(crate) fn load(
    store: &Store,
    archive: &OciArchive,
    source: &str,
    progress: &dyn Progress,
) -> Result<Vec<LoadedImage>, TransportError> {
    let _ = progress;
    let platform = Platform::host();
    let images = archive
        .entries()
        .iter()
        .map(|e| archive.image(e, &platform))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = BTreeSet::new();
    let mut jobs = Vec::new();
    for l in images.iter().flat_map(|i| &i.parsed.layers) {
        if seen.insert(l.digest.clone()) {
            jobs.push(l.clone());
        }
    }
    super::archive::check_layer_limit(archive.index(), jobs.len())?;
    // Every layer is verified, even one the store has already.
    let staged: Vec<Option<BlobWriter>> = parallel(jobs, |l| {
        if store.has_blob(&l.digest)?.is_some() {
            archive.copy_blob(&l, &mut io::sink())?;
            return Ok(None);
        }
        let mut w = store.blob_writer(&l.digest, Some(l.size))?;
        archive.copy_blob(&l, &mut w)?;
        Ok(Some(w))
    })?;
    for w in staged.into_iter().flatten() {
        w.commit()?;
    }
    let mut out = Vec::new();
    for img in &images {
        store.put_blob(&img.parsed.config.digest, &img.config_bytes)?;
        let (mdesc, mbytes) = &img.manifest;
        store.put_blob(&mdesc.digest, mbytes)?;
        if let Some((idesc, ibytes)) = &img.index {
            store.put_blob(&idesc.digest, ibytes)?;
        }
        let name = img.name();
        store.commit_image(ImageCommit {
            name: name.clone(),
            manifest: Descriptor::new(mdesc.media_type.clone(), mdesc.digest.clone(), mdesc.size),
            index: img
                .index
                .as_ref()
                .map(|(d, _)| Descriptor::new(d.media_type.clone(), d.digest.clone(), d.size)),
            source: Some(source.to_owned()),
        })?;
        match out
            .iter_mut()
            .find(|l: &&mut LoadedImage| l.manifest == mdesc.digest)
        {
            Some(l) => l.names.extend(name),
            None => out.push(LoadedImage {
                id: img.parsed.config.digest.clone(),
                manifest: mdesc.digest.clone(),
                names: name.into_iter().collect(),
            }),
        }
    }
    Ok(out)
}

/// Write `images` from `store` as an oci-archive onto `out`.
pub(crate) fn save(
    store: &Store,
    images: &[SaveImage],
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<(), TransportError> {
    let _ = progress;
    let wio = |what: String| move |source: io::Error| TransportError::Io { what, source };
    let mut tar = TarWriter::new(out);
    tar.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(wio("writing oci-layout".into()))?;
    for d in ["blobs", "blobs/sha256"] {
        tar.dir(d).map_err(wio(format!("writing {d}")))?;
    }
    let mut written = BTreeSet::new();
    let mut dirs = BTreeSet::from([hoist_types::Algorithm::Sha256]);
    let mut entries = Vec::new();
    for img in images {
        let r = &img.record;
        super::docker_archive::check_record(r)?;
        let mut blob = |d: &Digest, size: u64| -> Result<(), TransportError> {
            if !written.insert(d.clone()) {
                return Ok(());
            }
            let name = blob_entry(d);
            if dirs.insert(d.algorithm()) {
                tar.dir(&format!("blobs/{}", d.algorithm()))
                    .map_err(wio(format!("writing blobs/{}", d.algorithm())))?;
            }
            let f = store.open_blob(d)?;
            tar.copy(&name, size, f)
                .map_err(wio(format!("writing {name}")))
        };
        for l in &r.layers {
            blob(&l.digest, l.size)?;
        }
        blob(&r.id, r.config_size)?;
        let mdesc = if r.manifest.media_type == MediaType::DockerManifest {
            // skopeo (and containers/image) see only OCI manifests in a layout: a Docker
            // schema 2 manifest is converted (same config and layer bytes, new digest).
            let raw = store.read_blob(&r.manifest.digest, MAX_MANIFEST_SIZE)?;
            let bytes = docker_to_oci(&raw).map_err(|source| TransportError::InvalidConfig {
                digest: r.manifest.digest.clone(),
                source,
            })?;
            let d = Digest::sha256_of(&bytes);
            if written.insert(d.clone()) {
                let name = blob_entry(&d);
                tar.bytes(&name, &bytes)
                    .map_err(wio(format!("writing {name}")))?;
            }
            Descriptor::new(MediaType::OciManifest, d, bytes.len() as u64)
        } else {
            blob(&r.manifest.digest, r.manifest.size)?;
            r.manifest.clone()
        };
        let base = Descriptor {
            platform: Some(r.platform.clone()),
            ..Descriptor::new(mdesc.media_type, mdesc.digest, mdesc.size)
        };
        if img.tags.is_empty() {
            if !entries
                .iter()
                .any(|e: &Descriptor| e.digest == base.digest && e.annotations.is_none())
            {
                entries.push(base);
            }
            continue;
        }
        for t in &img.tags {
            let name = t.to_string();
            let mut a = BTreeMap::new();
            a.insert(ANNOTATION_REF_NAME.to_owned(), name.clone());
            a.insert(ANNOTATION_IMAGE_NAME.to_owned(), name);
            entries
                .retain(|e: &Descriptor| e.annotation(ANNOTATION_REF_NAME) != Some(&t.to_string()));
            entries.push(Descriptor {
                annotations: Some(a),
                ..base.clone()
            });
        }
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(MediaType::OciIndex),
        artifact_type: None,
        manifests: entries,
        subject: None,
        annotations: None,
    };
    let bytes = serde_json::to_vec(&index).expect("an index serialises");
    debug_assert!(bytes.len() as u64 <= MAX_MANIFEST_SIZE);
    tar.bytes("index.json", &bytes)
        .map_err(wio("writing index.json".into()))?;
    tar.finish().map_err(wio("finishing the archive".into()))?;
    Ok(())
}
