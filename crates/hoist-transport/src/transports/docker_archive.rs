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
//! and `repositories`, and renames the temp file over `FILE`. A copy that fails (a blob
//! short or of the wrong digest leaves its slot unfinished, and the archive is refused)
//! leaves `FILE` as it was and removes the temp file.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use hoist_archive::docker::{
    ArchiveImage, Choice, DockerArchive, IndexedImage, finish, layer_entry,
};
use hoist_archive::{SlotWriter, TempOutput};
use hoist_types::{
    Compression, Descriptor, Digest, ImageConfig, MAX_CONFIG_SIZE, Manifest, MediaType, Progress,
    Reference,
};

use super::local;
use super::{
    ArchiveSelector, BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination,
    ImageSource, ManifestFormat, ManifestRef, ManifestTarget, RawManifest, STREAM_CHUNK,
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
            let image = archive.image(archive.select(choice)?)?;
            let sizes = image
                .layers
                .iter()
                .map(|l| archive.layer_size(l))
                .collect::<Result<Vec<_>, _>>()?;
            let bytes = image.manifest(&sizes);
            let top = raw_manifest(bytes, Some(&MediaType::DockerManifest), None)?;
            Ok(DockerArchiveSource {
                archive: Arc::new(archive),
                image: Box::new(image),
                top,
                name: describe(&file, selector.as_ref()),
            })
        })
        .await?
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
            ManifestRef::Tag(t) => Err(TransportError::Unsupported {
                what: format!(
                    "{}: a docker-archive has no manifests by tag (asked for {t:?})",
                    self.describe()
                ),
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
                        tx.blocking_send(Err(TransportError::Io {
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

/// Writing one image as a docker-archive, each blob once, straight into the tar.
#[derive(Debug)]
pub struct DockerArchiveDestination {
    file: PathBuf,
    tag: Option<Reference>,
    out: TempOutput,
    slots: SlotWriter,
    staged: Mutex<Written>,
}

/// What a docker-archive destination has taken: the top manifest, the layers in the tar,
/// and the configs (written at commit, each once).
#[derive(Debug, Default)]
struct Written {
    top: Option<RawManifest>,
    layers: HashSet<Digest>,
    configs: HashMap<Digest, Vec<u8>>,
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
        let f = file.clone();
        let (out, slots) = blocking(move || open_slots(&f)).await??;
        Ok(DockerArchiveDestination {
            file,
            tag,
            out,
            slots,
            staged: Mutex::default(),
        })
    }
}

/// A temp file beside `file` and a slot writer over it.
pub(crate) fn open_slots(file: &Path) -> Result<(TempOutput, SlotWriter), TransportError> {
    let out = TempOutput::beside(file)?;
    let slots = SlotWriter::new(out.try_clone()?);
    Ok((out, slots))
}

/// Finish the tar, then publish it over its path.
pub(crate) fn publish_slots(
    out: TempOutput,
    slots: SlotWriter,
    file: &Path,
) -> Result<(), TransportError> {
    slots.finish().map_err(|source| TransportError::Io {
        what: format!("finishing archive {}", file.display()),
        source,
    })?;
    Ok(out.publish()?)
}

/// Stream a blob into a new slot `name` of `slots`, verified (size and digest) on the
/// way; a failure leaves the slot unfinished, so the archive cannot be completed.
pub(crate) async fn put_slot(
    slots: &SlotWriter,
    name: String,
    desc: &Descriptor,
    mut stream: BlobStream,
    progress: &dyn Progress,
) -> Result<(), TransportError> {
    let done = Arc::new(AtomicU64::new(0));
    let (slots, d, counter) = (slots.clone(), desc.clone(), done.clone());
    local::with_progress(&desc.digest, progress, done, move || {
        let io = |source| TransportError::Io {
            what: format!("writing {name} of the archive"),
            source,
        };
        let mut slot = slots.reserve(&name, d.size).map_err(io)?;
        local::copy_verified(&mut stream, &d, &mut slot as &mut dyn Write, &counter)?;
        slot.finish().map_err(io)
    })
    .await
}

impl DockerArchiveDestination {
    fn state(&self) -> MutexGuard<'_, Written> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ImageDestination for DockerArchiveDestination {
    fn describe(&self) -> String {
        let sel = self.tag.clone().map(ArchiveSelector::Named);
        describe(&self.file, sel.as_ref())
    }

    fn capabilities(&self) -> DestinationCaps {
        DestinationCaps {
            index: false,
            signatures: false,
            format: Some(ManifestFormat::V2s2),
            default_format: None,
            layer_compression: Some(Compression::None),
        }
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        _hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        let st = self.state();
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
            self.state().configs.insert(desc.digest.clone(), bytes);
            return Ok(());
        }
        put_slot(
            &self.slots,
            layer_entry(&desc.digest),
            desc,
            stream,
            progress,
        )
        .await?;
        self.state().layers.insert(desc.digest.clone());
        Ok(())
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        if *target != ManifestTarget::Top {
            return Err(TransportError::Unsupported {
                what: format!(
                    "{}: a docker-archive holds one image per copy, no other manifests",
                    self.describe()
                ),
            });
        }
        plan(manifest, &self.describe())?;
        self.state().top = Some(manifest.clone());
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
            "a docker-archive keeps no simple-signing signatures",
        )
    }

    async fn commit(self) -> Result<Committed, TransportError> {
        let location = self.describe();
        let Written {
            top,
            layers: in_tar,
            configs,
        } = std::mem::take(&mut *self.state());
        let top = top.ok_or_else(|| TransportError::Unsupported {
            what: format!("{location}: commit without a manifest"),
        })?;
        let digest = top.digest.clone();
        let loc = location.clone();
        let (file, tag, out, mut slots) = (self.file, self.tag, self.out, self.slots);
        blocking(move || {
            let (config_desc, layers) = plan(&top, &loc)?;
            let config_bytes = configs.get(&config_desc.digest).cloned().ok_or_else(|| {
                TransportError::BlobNotFound {
                    digest: config_desc.digest.clone(),
                    location: loc.clone(),
                }
            })?;
            let config = ImageConfig::parse(&config_bytes).map_err(|source| {
                TransportError::InvalidConfig {
                    digest: config_desc.digest.clone(),
                    source,
                }
            })?;
            let diff_ids = config.rootfs.diff_ids;
            check_diff_ids(&layers, &diff_ids, &config_desc.digest)?;
            if let Some(l) = layers.iter().find(|l| !in_tar.contains(&l.digest)) {
                return Err(TransportError::BlobNotFound {
                    digest: l.digest.clone(),
                    location: loc.clone(),
                });
            }
            let tags: Vec<Reference> = tag.iter().cloned().collect();
            let image = IndexedImage {
                id: &config_desc.digest,
                diff_ids: &diff_ids,
                tags: &tags,
            };
            finish::<TransportError>(&mut slots, &[image], |_| Ok(config_bytes.clone()))?;
            publish_slots(out, slots, &file)
        })
        .await??;
        Ok(Committed { digest, location })
    }
}

/// The config and layers of a manifest a docker-archive can hold: a Docker schema 2
/// image manifest with uncompressed layers (what the copy engine converts to, given the
/// destination's capabilities).
fn plan(m: &RawManifest, location: &str) -> Result<(Descriptor, Vec<Descriptor>), TransportError> {
    let refuse = |why: String| TransportError::Unsupported {
        what: format!("{location}: manifest {}: {why}", m.digest),
    };
    let Manifest::Image(im) = &m.manifest else {
        return Err(refuse("not an image manifest".into()));
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
