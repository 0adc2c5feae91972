//! An OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) in a tar file, as
//! skopeo and buildah write it.
//!
//! Reading: the archive is indexed in one pass ([`ArchiveIndex`]); blobs are then read by
//! offset. An image is an `index.json` entry chosen by `org.opencontainers.image.ref.name`
//! (or `@N`, the N-th entry), or the only one. An entry that is an index is resolved to
//! the wanted platform's image ([`ImageIndex::choose`]). Documents are at most 4 MiB and
//! checked against their descriptors' digests and sizes; layers are checked while they
//! stream.
//!
//! Writing: `oci-layout`, the blobs as they are (each once, `blobs/<alg>/<hex>`), then
//! `index.json` with one entry per tag (`org.opencontainers.image.ref.name` and
//! `io.containerd.image.name` = the full name) or per untagged image.

use std::io::{Read, Write};
use std::path::Path;

use hoist_types::{
    ANNOTATION_REF_NAME, Descriptor, Digest, Hasher, ImageConfig, ImageIndex, ImageManifest,
    MAX_CONFIG_SIZE, Manifest, MediaType, Platform, Reference,
};
use serde::Deserialize;

use crate::{ArchiveError, ArchiveIndex, ArchiveProblem, EntryReader};

/// The `oci-layout` file hoist writes.
pub const LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// containerd's annotation with an image's full name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// The name an `index.json` entry gives: containerd's full-name annotation, else a
/// `ref.name` that is a full `NAME:TAG` (a bare tag like `v1` names no repository).
pub fn entry_name(entry: &Descriptor) -> Option<Reference> {
    let full = |s: &str| {
        Reference::parse(s)
            .ok()
            .filter(|r| r.tag().is_some() && r.digest().is_none())
    };
    if let Some(r) = entry.annotation(ANNOTATION_IMAGE_NAME).and_then(full) {
        return Some(r);
    }
    entry
        .annotation(ANNOTATION_REF_NAME)
        .filter(|n| n.contains(':') || n.contains('/'))
        .and_then(full)
}

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
    /// The name the `index.json` entry gives ([`entry_name`]).
    pub fn name(&self) -> Option<Reference> {
        entry_name(&self.entry)
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
    pub fn open(path: &Path) -> Result<OciArchive, ArchiveError> {
        OciArchive::from_index(ArchiveIndex::open(path)?)
    }

    /// Read `oci-layout` and `index.json` of an indexed archive.
    pub fn from_index(index: ArchiveIndex) -> Result<OciArchive, ArchiveError> {
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
    pub fn select(&self, name: Option<&str>) -> Result<&Descriptor, ArchiveError> {
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
    ) -> Result<Vec<u8>, ArchiveError> {
        let entry = blob_entry(&desc.digest);
        let bytes = self.index.read_document(&entry, what)?;
        self.check(&entry, desc, &bytes)?;
        Ok(bytes)
    }

    fn check(&self, entry: &str, desc: &Descriptor, bytes: &[u8]) -> Result<(), ArchiveError> {
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
    pub fn image(&self, entry: &Descriptor, platform: &Platform) -> Result<OciImage, ArchiveError> {
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
                        ArchiveError::NoMatchingPlatform {
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
    pub fn open_blob(&self, desc: &Descriptor) -> Result<EntryReader, ArchiveError> {
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
    pub fn copy_blob(&self, desc: &Descriptor, out: &mut dyn Write) -> Result<(), ArchiveError> {
        let entry = blob_entry(&desc.digest);
        let mut r = self.open_blob(desc)?;
        let mut h = Hasher::new(desc.digest.algorithm());
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf).map_err(|source| ArchiveError::Stream {
                what: format!("reading {entry} in archive {}", self.index.path().display()),
                source,
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|source| ArchiveError::Stream {
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
