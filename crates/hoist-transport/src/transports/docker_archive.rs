//! `docker-archive:FILE[:REF|:@N]` as a `hoist copy` source and destination, on top of
//! hoist-archive's reader and writers ([`hoist_archive::docker`]).
//!
//! **Source**: the archive is indexed in one pass and checked as `hoist load` checks it
//! (a compressed archive decompressed first; paths escaping with `..`, duplicates, links
//! that leave the archive or go round, directories where a file is expected, document
//! sizes, the config's diff ID count); the chosen image (`REF` from `RepoTags`, `@N`, or
//! the only one) appears as a Docker schema 2 manifest synthesised from its config and layers,
//! which are uncompressed (`...rootfs.diff.tar`, digest = diff ID). A compressed layer
//! file (gzip, zstd, bzip2 or xz, by content) is decompressed as it streams; the
//! destination checks every digest.
//!
//! **Destination**: it takes only Docker schema 2 with uncompressed layers
//! ([`DestinationCaps`]: the copy engine converts the manifest and decompresses each
//! layer first, checking its diff ID, as skopeo does). The archive is written into a temp
//! file beside `FILE` as the blobs arrive: each layer goes once, hashed and counted on
//! the way, straight into its own slot of the tar (`<diff-id-hex>.tar`, a
//! [`SlotWriter`] slot reserved at its declared size, so several layers are written at
//! once); configs (≤ 4 MiB) are kept in memory. `commit` checks that the layers are the
//! config's diff IDs, writes `<config-hex>.json`, `manifest.json` (with `REF` as the tag)
//! and `repositories`, and renames the temp file over `FILE`. A blob refused (short, long
//! or of the wrong digest) leaves a hole the next try of it fills; a copy that fails
//! leaves `FILE` as it was and removes the temp file.
//!
//! **Several images** ([`DockerArchiveWriter`], `hoist save`): one temp tar shared by one
//! destination per image; each image's commit adds it (with its tags) to the archive,
//! a layer already in the tar is not written again, and [`DockerArchiveWriter::finish`]
//! writes every config once, `manifest.json` and `repositories`, then renames (or, for a
//! stream, copies the complete tar to it).

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hoist_archive::SlotWriter;
use hoist_archive::docker::{
    ArchiveImage, Choice, DockerArchive, IndexedImage, finish, layer_entry,
};
use hoist_types::{
    Compression, Descriptor, Digest, ImageConfig, MAX_CONFIG_SIZE, Manifest, MediaType, Progress,
    Reference,
};

use super::local;
use super::slot_archive::{ArchiveTarget, Entries, SlotArchive, put_slot};
use super::{
    ArchiveSelector, BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination,
    ImageSource, ManifestFormat, ManifestRef, ManifestTarget, RawManifest, STREAM_CHUNK, Staged,
    raw_manifest,
};
use crate::{TransportError, blocking};

fn describe(file: &Path, selector: Option<&ArchiveSelector>) -> String {
    match selector {
        Some(ArchiveSelector::Named(r)) => format!("docker-archive:{}:{r}", file.display()),
        Some(ArchiveSelector::Index(i)) => format!("docker-archive:{}:@{i}", file.display()),
        None => format!("docker-archive:{}", file.display()),
    }
}

/// Reading one image of a docker-archive.
#[derive(Debug)]
pub struct DockerArchiveSource {
    archive: Arc<DockerArchive>,
    // Boxed: the parsed config is large, and `AnySource` holds one source of any kind.
    image: Box<ArchiveImage>,
    top: RawManifest,
    name: String,
}

impl DockerArchiveSource {
    /// Index the archive at `file`, choose the image `selector` names (or the only one)
    /// and synthesise its manifest. Compressed layer files are decompressed once here to
    /// learn their size (which also checks their diff IDs).
    pub async fn open(
        file: PathBuf,
        selector: Option<ArchiveSelector>,
    ) -> Result<DockerArchiveSource, TransportError> {
        blocking(move || {
            let archive = DockerArchive::open(&file)?;
            let choice = selector.as_ref().map(|s| match s {
                ArchiveSelector::Named(r) => Choice::Tag(r),
                ArchiveSelector::Index(i) => Choice::Position(*i),
            });
            let position = archive.select(choice)?;
            Self::at(
                Arc::new(archive),
                position,
                describe(&file, selector.as_ref()),
            )
        })
        .await?
    }

    /// Every image of an indexed archive (`hoist load`), in `manifest.json` order, each
    /// with its tags; `file` names the archive in errors. Blocking: compressed layer
    /// files are decompressed to learn their size.
    pub fn every(
        archive: DockerArchive,
        file: &Path,
    ) -> Result<Vec<(DockerArchiveSource, Vec<Reference>)>, TransportError> {
        let archive = Arc::new(archive);
        (0..archive.items().len())
            .map(|i| {
                let name = describe(file, Some(&ArchiveSelector::Index(i)));
                let src = Self::at(archive.clone(), i, name)?;
                let tags = src.image.tags.clone();
                Ok((src, tags))
            })
            .collect()
    }

    /// The image at `position`, with its manifest synthesised.
    fn at(
        archive: Arc<DockerArchive>,
        position: usize,
        name: String,
    ) -> Result<DockerArchiveSource, TransportError> {
        let image = archive.image(position)?;
        let sizes = image
            .layers
            .iter()
            .map(|l| archive.layer_size(l))
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = image.manifest(&sizes);
        let top = raw_manifest(bytes, Some(&MediaType::DockerManifest), None)?;
        Ok(DockerArchiveSource {
            archive,
            image: Box::new(image),
            top,
            name,
        })
    }
}

impl ImageSource for DockerArchiveSource {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn get_manifest(&self, which: &ManifestRef) -> Result<RawManifest, TransportError> {
        match which {
            ManifestRef::Top => Ok(self.top.clone()),
            ManifestRef::Digest(d) if d == &self.top.digest => Ok(self.top.clone()),
            ManifestRef::Digest(d) => Err(TransportError::BlobNotFound {
                digest: d.clone(),
                location: self.describe(),
            }),
            ManifestRef::Tag(t) => Err(TransportError::NotSupportedBy {
                location: self.describe(),
                reason: format!("a docker-archive has no manifests by tag (asked for {t:?})"),
            }),
        }
    }

    async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, TransportError> {
        if desc.digest == self.image.config_digest {
            return Ok(BlobStream::from_reader(
                Box::new(Cursor::new(self.image.config_bytes.clone())),
                desc.size,
                format!("{}: {}", self.describe(), self.image.config_entry),
            ));
        }
        let layer = self
            .image
            .layers
            .iter()
            .find(|l| l.diff_id == desc.digest)
            .cloned()
            .ok_or_else(|| TransportError::BlobNotFound {
                digest: desc.digest.clone(),
                location: self.describe(),
            })?;
        let origin = format!("{}: {}", self.describe(), layer.entry);
        if layer.codec == hoist_unpack::Codec::None {
            let reader = self.archive.index().open_entry(&layer.entry, "a layer")?;
            return Ok(BlobStream::from_reader(Box::new(reader), desc.size, origin));
        }
        // A compressed layer file: decompressed on a blocking thread as it is consumed.
        let (tx, stream) = BlobStream::channel(desc.size, origin.clone());
        let archive = self.archive.clone();
        tokio::task::spawn_blocking(move || {
            let mut plain = match archive.layer_stream(&layer, &hoist_types::NoProgress) {
                Ok(s) => s,
                Err(e) => {
                    tx.blocking_send(Err(e.into()));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; STREAM_CHUNK];
                match plain.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if !tx.blocking_send(Ok(buf.into())) {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        tx.blocking_send(Err(TransportError::Stream {
                            what: format!("decompressing {origin}"),
                            source,
                        }));
                        break;
                    }
                }
            }
        });
        Ok(stream)
    }

    async fn tags(&self) -> Result<Vec<String>, TransportError> {
        Ok(self
            .archive
            .items()
            .iter()
            .flat_map(|it| it.repo_tags.iter().flatten().cloned())
            .collect())
    }
}

/// An archive being written, shared by the destinations of its images
/// ([`DockerArchiveWriter::image`]).
type Writer = SlotArchive<Written>;

/// What a docker-archive being written holds: the layers in the tar or being written,
/// the configs (written at the end, each once) and the images committed.
#[derive(Debug, Default)]
struct Written {
    layers: Entries,
    configs: HashMap<Digest, Vec<u8>>,
    /// Committed images: config digest, diff IDs, tags.
    images: Vec<(Digest, Vec<Digest>, Vec<Reference>)>,
}

/// Writing one image as a docker-archive (or one image of a multi-image archive), each
/// blob once, straight into the tar.
#[derive(Debug)]
pub struct DockerArchiveDestination {
    writer: Arc<Writer>,
    tags: Vec<Reference>,
    /// `commit` finishes the archive (a `docker-archive:` destination); else it adds the
    /// image to the archive its [`DockerArchiveWriter`] finishes.
    whole: bool,
    staged: Staged,
}

/// A docker-archive of several images and tags, as `docker save` writes: the copy engine
/// copies each image into a destination from [`DockerArchiveWriter::image`] (a blob the
/// archive has already is not sent again), whose commit adds the image to the archive;
/// [`DockerArchiveWriter::finish`] writes the configs, `manifest.json` and `repositories`
/// and publishes the archive. Dropped unfinished, it leaves nothing behind.
#[derive(Debug)]
pub struct DockerArchiveWriter {
    writer: Arc<Writer>,
}

impl DockerArchiveWriter {
    /// Start writing an archive to `target`.
    pub async fn create(target: ArchiveTarget) -> Result<DockerArchiveWriter, TransportError> {
        Ok(DockerArchiveWriter {
            writer: Arc::new(Writer::create(target, |_| Ok(())).await?),
        })
    }

    /// A destination for one image of the archive, recorded with `tags` (none: the
    /// image is listed untagged, as `docker save IMAGE-ID` writes it).
    pub fn image(&self, tags: Vec<Reference>) -> DockerArchiveDestination {
        DockerArchiveDestination {
            writer: self.writer.clone(),
            tags,
            whole: false,
            staged: Staged::new(),
        }
    }

    /// Write the configs, `manifest.json` and `repositories` of the images committed, in
    /// commit order, and publish the archive. Refused when no image was committed or a
    /// destination of it is still alive.
    pub async fn finish(self) -> Result<(), TransportError> {
        Writer::finish(self.writer, still_writing, write_closing).await
    }
}

fn still_writing(file: &Path) -> String {
    format!(
        "finishing archive {} while an image is still being written into it",
        file.display()
    )
}

/// The closing entries of a docker-archive: every committed image's config (once),
/// `manifest.json` and `repositories`, in commit order.
fn write_closing(slots: &mut SlotWriter, st: Written, file: &Path) -> Result<(), TransportError> {
    let Written {
        configs, images, ..
    } = st;

    if images.is_empty() {
        return Err(TransportError::NoImage {
            location: describe(file, None),
        });
    }
    let indexed: Vec<IndexedImage<'_>> = images
        .iter()
        .map(|(id, diff_ids, tags)| IndexedImage { id, diff_ids, tags })
        .collect();
    finish::<TransportError>(slots, &indexed, |id| {
        configs
            .get(id)
            .cloned()
            .ok_or_else(|| TransportError::BlobNotFound {
                digest: id.clone(),
                location: describe(file, None),
            })
    })?;
    Ok(())
}

impl DockerArchiveDestination {
    /// Prepare writing `file`; `selector` is the tag to record (`@N` is refused: it only
    /// chooses an image to read).
    pub async fn open(
        file: PathBuf,
        selector: Option<ArchiveSelector>,
    ) -> Result<DockerArchiveDestination, TransportError> {
        let tag = match selector {
            None => None,
            Some(ArchiveSelector::Named(r)) => Some(r),
            Some(ArchiveSelector::Index(i)) => {
                return Err(TransportError::InvalidImageRef {
                    input: format!("docker-archive:{}:@{i}", file.display()),
                    reason: "`@N` chooses an image to read; a destination takes NAME:TAG".into(),
                });
            }
        };
        Ok(DockerArchiveDestination {
            writer: Arc::new(Writer::create(ArchiveTarget::Path(file), |_| Ok(())).await?),
            tags: tag.into_iter().collect(),
            whole: true,
            staged: Staged::new(),
        })
    }
}

impl ImageDestination for DockerArchiveDestination {
    fn describe(&self) -> String {
        match self.tags.first() {
            Some(t) => describe(&self.writer.file, Some(&ArchiveSelector::Named(t.clone()))),
            None => describe(&self.writer.file, None),
        }
    }

    fn capabilities(&self) -> DestinationCaps {
        DestinationCaps {
            index: false,
            signatures: false,
            format: Some(ManifestFormat::V2s2),
            default_format: None,
            layer_compression: Some(Compression::None),
            ordered: true,
        }
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        _hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        let st = self.writer.state();
        Ok(st.layers.contains(&desc.digest) || st.configs.contains_key(&desc.digest))
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        mut stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        if desc.media_type.is_config() {
            if desc.size > MAX_CONFIG_SIZE {
                return Err(TransportError::SizeMismatch {
                    what: format!("config {} for {}", desc.digest, self.describe()),
                    expected: MAX_CONFIG_SIZE,
                    actual: desc.size,
                });
            }
            let done = Arc::new(AtomicU64::new(0));
            let (d, counter) = (desc.clone(), done.clone());
            let bytes = local::with_progress(&desc.digest, progress, done, move || {
                let mut buf = Vec::with_capacity(d.size as usize);
                local::copy_verified(&mut stream, &d, &mut buf, &counter)?;
                Ok(buf)
            })
            .await?;
            self.writer
                .state()
                .configs
                .insert(desc.digest.clone(), bytes);
            return Ok(());
        }
        {
            // One entry per layer: a layer in the tar, or being written, is not again.
            let mut st = self.writer.state();
            if !st.layers.claim(&desc.digest) {
                return Ok(());
            }
        }
        let r = put_slot(
            &self.writer.slots,
            layer_entry(&desc.digest),
            desc,
            stream,
            progress,
        )
        .await;
        self.writer.state().layers.settle(&desc.digest, r.is_ok());
        r
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        if *target != ManifestTarget::Top {
            return Err(TransportError::NotSupportedBy {
                location: self.describe(),
                reason: "a docker-archive holds one image per copy, no other manifests".to_owned(),
            });
        }
        plan(manifest, &self.describe())?;
        self.staged.record(manifest, target);
        Ok(())
    }

    /// Check the image (its layers are the config's diff IDs, all in the tar) and add it
    /// to the archive; a whole-archive destination then finishes and publishes it.
    async fn commit(self) -> Result<Committed, TransportError> {
        let location = self.describe();
        let top = self.staged.take().take_top(&location)?;
        let digest = top.digest.clone();
        let (config_desc, layers) = plan(&top, &location)?;
        {
            let mut st = self.writer.state();
            let config_bytes = st.configs.get(&config_desc.digest).ok_or_else(|| {
                TransportError::BlobNotFound {
                    digest: config_desc.digest.clone(),
                    location: location.clone(),
                }
            })?;
            let config = ImageConfig::parse(config_bytes).map_err(|source| {
                TransportError::InvalidConfig {
                    digest: config_desc.digest.clone(),
                    source,
                }
            })?;
            let diff_ids = config.rootfs.diff_ids;
            check_diff_ids(&layers, &diff_ids, &config_desc.digest)?;
            if let Some(l) = layers.iter().find(|l| !st.layers.contains(&l.digest)) {
                return Err(TransportError::BlobNotFound {
                    digest: l.digest.clone(),
                    location: location.clone(),
                });
            }
            st.images
                .push((config_desc.digest.clone(), diff_ids, self.tags));
        }
        if self.whole {
            let busy = location.clone();
            Writer::finish(
                self.writer,
                move |_| format!("{busy}: the archive is still being written"),
                write_closing,
            )
            .await?;
        }
        Ok(Committed { digest, location })
    }
}

/// The config and layers of a manifest a docker-archive can hold: a Docker schema 2
/// image manifest with uncompressed layers (what the copy engine converts to, given the
/// destination's capabilities).
fn plan(m: &RawManifest, location: &str) -> Result<(Descriptor, Vec<Descriptor>), TransportError> {
    let refuse = |why: String| TransportError::NotSupportedBy {
        location: location.to_owned(),
        reason: format!("manifest {}: {why}", m.digest),
    };
    let Manifest::Image(im) = &m.manifest else {
        return Err(TransportError::NotAnImage {
            location: location.to_owned(),
            digest: m.digest.clone(),
            found: format!("media type {}", m.media_type),
        });
    };
    if m.media_type != MediaType::DockerManifest {
        return Err(refuse(format!(
            "a docker-archive holds Docker schema 2 images, not {}",
            m.media_type
        )));
    }
    for l in &im.layers {
        if l.media_type.layer_compression() != Some(Compression::None)
            || l.media_type.is_foreign_layer()
        {
            return Err(refuse(format!(
                "layer {} is {}; a docker-archive holds uncompressed layers",
                l.digest, l.media_type
            )));
        }
    }
    Ok((im.config.clone(), im.layers.clone()))
}

/// In a docker-archive a layer is named by its diff ID: the uncompressed layers must be
/// exactly the config's diff IDs.
fn check_diff_ids(
    layers: &[Descriptor],
    diff_ids: &[Digest],
    config: &Digest,
) -> Result<(), TransportError> {
    if layers.len() != diff_ids.len() {
        return Err(TransportError::InvalidConfig {
            digest: config.clone(),
            source: hoist_types::TypeError::LayerCountMismatch {
                layers: layers.len(),
                diff_ids: diff_ids.len(),
            },
        });
    }
    for (l, d) in layers.iter().zip(diff_ids) {
        if &l.digest != d {
            return Err(TransportError::DigestMismatch {
                what: format!("uncompressed layer against the diff ID of config {config}"),
                expected: d.clone(),
                actual: l.digest.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(mt: MediaType, n: u8) -> Descriptor {
        Descriptor::new(mt, Digest::sha256_of(&[n]), 1)
    }

    fn manifest(mt: MediaType, layers: Vec<Descriptor>) -> RawManifest {
        let m = hoist_types::ImageManifest {
            schema_version: 2,
            media_type: Some(mt.clone()),
            artifact_type: None,
            config: Descriptor::new(MediaType::DockerConfig, Digest::sha256_of(b"c"), 1),
            layers,
            subject: None,
            annotations: None,
        };
        raw_manifest(serde_json::to_vec(&m).unwrap(), Some(&mt), None).unwrap()
    }

    #[test]
    fn only_v2s2_with_plain_layers() {
        let cases = [
            (
                "plain",
                manifest(
                    MediaType::DockerManifest,
                    vec![layer(MediaType::DockerLayer, 1)],
                ),
                true,
            ),
            (
                "gzip layer",
                manifest(
                    MediaType::DockerManifest,
                    vec![layer(MediaType::DockerLayerGzip, 1)],
                ),
                false,
            ),
            (
                "oci",
                manifest(MediaType::OciManifest, vec![layer(MediaType::OciLayer, 1)]),
                false,
            ),
            (
                "no layers",
                manifest(MediaType::DockerManifest, vec![]),
                true,
            ),
        ];
        for (name, m, ok) in cases {
            assert_eq!(plan(&m, "t").is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn layers_must_be_the_diff_ids() {
        let l = |n| layer(MediaType::DockerLayer, n);
        let c = Digest::sha256_of(b"c");
        let d = |n: u8| Digest::sha256_of(&[n]);
        assert!(check_diff_ids(&[l(1), l(2)], &[d(1), d(2)], &c).is_ok());
        assert!(check_diff_ids(&[l(1), l(2)], &[d(2), d(1)], &c).is_err());
        assert!(check_diff_ids(&[l(1)], &[d(1), d(2)], &c).is_err());
    }
}
