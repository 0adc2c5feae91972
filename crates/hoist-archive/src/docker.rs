//! `docker save`'s format, as `docker load` reads it.
//!
//! ```text
//! manifest.json        [{"Config": "<hex>.json", "RepoTags": ["repo:tag", ...],
//!                        "Layers": ["<hex>.tar", ...]}, ...]   one item per image
//! repositories         {"repo": {"tag": "<top layer id>"}}     (legacy; written, not read)
//! <hex>.json           an image config
//! <hex>.tar            an uncompressed layer (older docker: <id>/layer.tar, with <id>/json
//!                      and <id>/VERSION beside it; docker 25 and later: blobs/sha256/<hex>
//!                      in an OCI layout); gzip, zstd, bzip2 and xz layers are read too
//! ```
//!
//! A layer two images share is written once by `docker save`; the other image's
//! `<id>/layer.tar` is a symlink (`../<other-id>/layer.tar`) or a hard link to it. Links
//! between members are followed ([`ArchiveIndex::file`]); what they reach is checked
//! against the diff ID like any layer.
//!
//! Reading: the archive is indexed in one pass ([`ArchiveIndex`]); entries are then read
//! by offset, in parallel. An image is chosen ([`Choice`]) by a tag from `RepoTags`, by
//! position in `manifest.json`, or as the only image. It appears as a Docker schema 2
//! manifest synthesised from the config and the layers, which are uncompressed
//! (`application/vnd.docker.image.rootfs.diff.tar`, digest = diff ID): compressed layer
//! files are decompressed and checked against the diff ID.
//!
//! Writing: layers `<diff-id-hex>.tar` (each once), configs `<config-hex>.json`, then
//! [`finish`] writes `manifest.json` (one item per image, all its tags) and `repositories`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::Path;

use hoist_types::{Descriptor, Digest, ImageConfig, ImageManifest, MediaType, Progress, Reference};
use hoist_unpack::{Codec, LayerStream, Limits};
use serde::{Deserialize, Serialize};

use crate::{ArchiveError, ArchiveIndex, ArchiveProblem, EntryReader, EntrySink, clean_member};

/// Which image of a docker-archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice<'a> {
    /// The image with this tag in `RepoTags`.
    Tag(&'a Reference),
    /// The N-th item of `manifest.json`, from 0.
    Position(usize),
}

/// `manifest.json`'s name.
pub const MANIFEST_JSON: &str = "manifest.json";

/// One item of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestItem {
    /// The config's entry name.
    #[serde(rename = "Config")]
    pub config: String,
    /// Tags, in Docker's familiar form (`alpine:latest`).
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// Layer entry names, base first.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// One layer of an image in a docker-archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLayer {
    /// Its entry (cleaned).
    pub entry: String,
    /// The diff ID the config gives it.
    pub diff_id: Digest,
    /// How the entry is compressed (detected from its content).
    pub codec: Codec,
    /// The entry's size (compressed size for compressed entries).
    pub entry_size: u64,
}

/// One image of a docker-archive, with its config read and checked.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    /// Its position in `manifest.json`.
    pub position: usize,
    /// The config's entry.
    pub config_entry: String,
    /// The config's exact bytes.
    pub config_bytes: Vec<u8>,
    /// Their digest: the image ID.
    pub config_digest: Digest,
    /// The parsed config.
    pub config: ImageConfig,
    /// Tags (normalised).
    pub tags: Vec<Reference>,
    /// Layers, base first.
    pub layers: Vec<ArchiveLayer>,
}

impl ArchiveImage {
    /// The Docker schema 2 manifest of this image, given each layer's uncompressed size.
    pub fn manifest(&self, sizes: &[u64]) -> Vec<u8> {
        let layers = self
            .layers
            .iter()
            .zip(sizes)
            .map(|(l, s)| Descriptor::new(MediaType::DockerLayer, l.diff_id.clone(), *s))
            .collect();
        let m = ImageManifest {
            schema_version: 2,
            media_type: Some(MediaType::DockerManifest),
            artifact_type: None,
            config: Descriptor::new(
                MediaType::DockerConfig,
                self.config_digest.clone(),
                self.config_bytes.len() as u64,
            ),
            layers,
            subject: None,
            annotations: None,
        };
        serde_json::to_vec(&m).expect("a manifest serialises")
    }
}

/// An open docker-archive.
#[derive(Debug, Clone)]
pub struct DockerArchive {
    index: ArchiveIndex,
    items: Vec<ManifestItem>,
}

impl DockerArchive {
    /// Index the archive at `path` and read its `manifest.json`.
    pub fn open(path: &Path) -> Result<DockerArchive, ArchiveError> {
        DockerArchive::from_index(ArchiveIndex::open(path)?)
    }

    /// Read `manifest.json` of an indexed archive.
    pub fn from_index(index: ArchiveIndex) -> Result<DockerArchive, ArchiveError> {
        let (items, _): (Vec<ManifestItem>, _) =
            index.json(MANIFEST_JSON, "the docker-archive manifest")?;
        if items.is_empty() {
            return Err(index.bad(ArchiveProblem::Empty));
        }
        Ok(DockerArchive { index, items })
    }

    /// The archive's index.
    pub fn index(&self) -> &ArchiveIndex {
        &self.index
    }

    /// The items of `manifest.json`.
    pub fn items(&self) -> &[ManifestItem] {
        &self.items
    }

    /// The position of the image `sel` chooses (`None`: the only image).
    pub fn select(&self, sel: Option<Choice<'_>>) -> Result<usize, ArchiveError> {
        let available = || {
            self.items
                .iter()
                .enumerate()
                .map(|(i, it)| match it.repo_tags.as_deref() {
                    Some(tags) if !tags.is_empty() => format!("@{i} ({})", tags.join(", ")),
                    _ => format!("@{i}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match sel {
            None if self.items.len() == 1 => Ok(0),
            None => Err(self.index.bad(ArchiveProblem::Ambiguous {
                count: self.items.len(),
            })),
            Some(Choice::Position(n)) if n < self.items.len() => Ok(n),
            Some(Choice::Position(n)) => Err(self.index.bad(ArchiveProblem::NoSuchImage {
                wanted: format!("@{n}"),
                available: available(),
            })),
            Some(Choice::Tag(want)) => {
                for (i, it) in self.items.iter().enumerate() {
                    for t in it.repo_tags.iter().flatten() {
                        if Reference::parse(t).is_ok_and(|r| &r == want) {
                            return Ok(i);
                        }
                    }
                }
                Err(self.index.bad(ArchiveProblem::NoSuchImage {
                    wanted: want.familiar(),
                    available: available(),
                }))
            }
        }
    }

    /// Read and check the image at `position`: its config (≤ 4 MiB, valid, as many diff
    /// IDs as layers), its tags, and that every layer is a regular file.
    pub fn image(&self, position: usize) -> Result<ArchiveImage, ArchiveError> {
        let item = &self.items[position];
        let bad = |p| self.index.bad(p);
        let config_entry = clean_member(&item.config).ok_or_else(|| {
            bad(ArchiveProblem::Invalid {
                entry: item.config.clone(),
                reason: "config path escapes the archive",
            })
        })?;
        let config_bytes = self.index.read_document(&config_entry, "an image config")?;
        let config = ImageConfig::parse(&config_bytes).map_err(|source| {
            bad(ArchiveProblem::Document {
                entry: config_entry.clone(),
                source,
            })
        })?;
        if config.rootfs.diff_ids.len() != item.layers.len() {
            return Err(bad(ArchiveProblem::LayerCount {
                entry: config_entry,
                layers: item.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            }));
        }
        let mut tags = Vec::new();
        for t in item.repo_tags.iter().flatten() {
            let r = Reference::parse(t).map_err(|source| {
                bad(ArchiveProblem::Document {
                    entry: MANIFEST_JSON.into(),
                    source,
                })
            })?;
            if r.tag().is_none() || r.digest().is_some() {
                return Err(bad(ArchiveProblem::Invalid {
                    entry: MANIFEST_JSON.into(),
                    reason: "a RepoTags entry is not NAME:TAG",
                }));
            }
            if !tags.contains(&r) {
                tags.push(r);
            }
        }
        let mut layers = Vec::with_capacity(item.layers.len());
        for (name, diff_id) in item.layers.iter().zip(&config.rootfs.diff_ids) {
            let entry = clean_member(name).ok_or_else(|| {
                bad(ArchiveProblem::Invalid {
                    entry: name.clone(),
                    reason: "layer path escapes the archive",
                })
            })?;
            let (_, entry_size) = self.index.file(&entry, "a layer")?;
            let head = self.index.head(&entry, "a layer", 512)?;
            let codec = hoist_unpack::detect(&head).map_err(|found| {
                bad(ArchiveProblem::Layer {
                    entry: entry.clone(),
                    source: hoist_unpack::UnpackError::UnsupportedCompression { found },
                })
            })?;
            layers.push(ArchiveLayer {
                entry,
                diff_id: diff_id.clone(),
                codec,
                entry_size,
            });
        }
        Ok(ArchiveImage {
            position,
            config_digest: Digest::sha256_of(&config_bytes),
            config_entry,
            config_bytes,
            config,
            tags,
            layers,
        })
    }

    /// A stream of a layer's uncompressed bytes, hashing them (the diff ID).
    pub fn layer_stream<'p>(
        &self,
        layer: &ArchiveLayer,
        progress: &'p dyn Progress,
    ) -> Result<LayerStream<'p, EntryReader>, ArchiveError> {
        let reader = self.index.open_entry(&layer.entry, "a layer")?;
        LayerStream::detect(
            reader,
            layer.diff_id.algorithm(),
            &Limits::default(),
            Some(&layer.diff_id),
            progress,
        )
        .map_err(|source| {
            self.index.bad(ArchiveProblem::Layer {
                entry: layer.entry.clone(),
                source,
            })
        })
    }

    /// Copy a layer's uncompressed bytes to `out`, checking them against its diff ID;
    /// returns the size.
    pub fn copy_layer(
        &self,
        layer: &ArchiveLayer,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<u64, ArchiveError> {
        let mut stream = self.layer_stream(layer, progress)?;
        io::copy(&mut stream, out).map_err(|source| ArchiveError::Stream {
            what: format!(
                "copying layer {} of archive {}",
                layer.entry,
                self.index.path().display()
            ),
            source,
        })?;
        let (actual, size) = stream.finish(false).map_err(|source| {
            self.index.bad(ArchiveProblem::Layer {
                entry: layer.entry.clone(),
                source,
            })
        })?;
        if actual != layer.diff_id {
            return Err(self.index.bad(ArchiveProblem::DigestMismatch {
                entry: layer.entry.clone(),
                expected: layer.diff_id.clone(),
                actual,
            }));
        }
        Ok(size)
    }

    /// The uncompressed size of a layer: the entry's size, or (compressed) the size
    /// found by decompressing it once, which also checks its diff ID.
    pub fn layer_size(&self, layer: &ArchiveLayer) -> Result<u64, ArchiveError> {
        match layer.codec {
            Codec::None => Ok(layer.entry_size),
            _ => self.copy_layer(layer, &mut io::sink(), &hoist_types::NoProgress),
        }
    }
}

/// The entry name of a layer with this diff ID in an archive hoist writes.
pub fn layer_entry(diff_id: &Digest) -> String {
    format!("{}.tar", diff_id.hex())
}

/// One image of a docker-archive being written, once its layers are in the tar.
#[derive(Debug)]
pub struct IndexedImage<'a> {
    /// The config digest (the image ID).
    pub id: &'a Digest,
    /// Its diff IDs, base first (each written as [`layer_entry`]).
    pub diff_ids: &'a [Digest],
    /// Tags to record.
    pub tags: &'a [Reference],
}

/// Write each config once (its bytes from `config`), `manifest.json` (one item per image,
/// a second mention adding its tags) and `repositories` into `tar` (the caller ends the
/// archive).
pub fn finish<E: From<ArchiveError>>(
    tar: &mut dyn EntrySink,
    images: &[IndexedImage<'_>],
    config: impl Fn(&Digest) -> Result<Vec<u8>, E>,
) -> Result<(), E> {
    let wio = |what: String| move |source| ArchiveError::Stream { what, source };
    let mut items = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut configs_written = BTreeSet::new();
    for img in images {
        let config_name = format!("{}.json", img.id.hex());
        if configs_written.insert(img.id.clone()) {
            let bytes = config(img.id)?;
            tar.bytes(&config_name, &bytes)
                .map_err(wio(format!("writing {config_name}")))?;
        }
        let top = img
            .diff_ids
            .last()
            .map(|d| d.hex().to_owned())
            .unwrap_or_default();
        for t in img.tags {
            if let Some(tag) = t.tag() {
                repositories
                    .entry(t.familiar_name())
                    .or_default()
                    .insert(tag.to_owned(), top.clone());
            }
        }
        let tags: Vec<String> = img.tags.iter().map(Reference::familiar).collect();
        // One item per image: a second mention of the same image adds its tags.
        match items
            .iter_mut()
            .find(|it: &&mut ManifestItem| it.config == config_name)
        {
            Some(it) => {
                let list = it.repo_tags.get_or_insert_with(Vec::new);
                for t in tags {
                    if !list.contains(&t) {
                        list.push(t);
                    }
                }
            }
            None => items.push(ManifestItem {
                config: config_name,
                repo_tags: Some(tags),
                layers: img.diff_ids.iter().map(layer_entry).collect(),
            }),
        }
    }
    let manifest = serde_json::to_vec(&items).expect("manifest.json serialises");
    tar.bytes(MANIFEST_JSON, &manifest)
        .map_err(wio("writing manifest.json".into()))?;
    let repos = serde_json::to_vec(&repositories).expect("repositories serialises");
    tar.bytes("repositories", &repos)
        .map_err(wio("writing repositories".into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_items_parse_like_docker() {
        let cases: &[(&str, bool)] = &[
            (
                r#"[{"Config":"c.json","RepoTags":["a:b"],"Layers":["l.tar"]}]"#,
                true,
            ),
            (r#"[{"Config":"c.json","RepoTags":null,"Layers":[]}]"#, true),
            (r#"[{"Config":"c.json","Layers":[]}]"#, true),
            (r#"null"#, false),
            (r#"{}"#, false),
            (r#"[{"RepoTags":[],"Layers":[]}]"#, false),
            (r#"[{"Config":"c","Layers":null}]"#, false),
        ];
        for (json, ok) in cases {
            let r: Result<Vec<ManifestItem>, _> = serde_json::from_str(json);
            assert_eq!(r.is_ok(), *ok, "{json}");
        }
    }
}
