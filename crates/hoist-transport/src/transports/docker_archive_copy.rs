//! `docker-archive:FILE[:REF|:@N]` as a `hoist copy` source and destination, on top of the
//! reader and writer that `hoist load` and `hoist save` use ([`super::docker_archive`]).
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
//! layer first, checking its diff ID, as skopeo does). Blobs are verified into a staging
//! directory beside `FILE`; `commit` checks that the layers are the config's diff IDs and
//! writes the archive (layers `<diff-id-hex>.tar`, `<config-hex>.json`, `manifest.json`
//! with `REF` as the tag, `repositories`) to a temp file renamed over `FILE`. A copy that
//! fails leaves `FILE` as it was and removes the staging directory.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use hoist_types::{
    Compression, Descriptor, Digest, ImageConfig, MAX_CONFIG_SIZE, Manifest, MediaType, Progress,
    Reference,
};

use super::archive_tar::{Output, TarWriter, write_output};
use super::docker_archive::{ArchiveImage, DockerArchive, IndexedImage, finish, layer_entry};
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
            let image = archive.image(archive.select(selector.as_ref())?)?;
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
                    tx.blocking_send(Err(e));
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

/// Writing one image as a docker-archive (through a staging directory).
#[derive(Debug)]
pub struct DockerArchiveDestination {
    file: PathBuf,
    tag: Option<Reference>,
    staging: tempfile::TempDir,
    top: Mutex<Option<RawManifest>>,
}

/// A temp directory beside `file` (same file system, so nothing crosses devices).
pub(crate) fn staging_beside(file: &Path) -> Result<tempfile::TempDir, TransportError> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".hoist-archive-")
        .tempdir_in(&dir)
        .map_err(local::io_err("create a staging directory in", &dir))
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
        let staging = blocking(move || staging_beside(&f)).await??;
        Ok(DockerArchiveDestination {
            file,
            tag,
            staging,
            top: Mutex::new(None),
        })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.staging
            .path()
            .join(format!("{}-{}", d.algorithm(), d.hex()))
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
        let (path, size) = (self.blob_path(&desc.digest), desc.size);
        blocking(move || local::has_file(&path, size)).await?
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        mut stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        let path = self.blob_path(&desc.digest);
        let done = Arc::new(AtomicU64::new(0));
        let (d, counter) = (desc.clone(), done.clone());
        local::with_progress(&desc.digest, progress, done, move || {
            local::write_blob_file(&path, &d, &mut stream, &counter)
        })
        .await
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
        *self.top.lock().unwrap_or_else(|p| p.into_inner()) = Some(manifest.clone());
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
        let top = self
            .top
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| TransportError::Unsupported {
                what: format!("{location}: commit without a manifest"),
            })?;
        let digest = top.digest.clone();
        let loc = location.clone();
        blocking(move || {
            let (config_desc, layers) = plan(&top, &loc)?;
            let config_path = self.blob_path(&config_desc.digest);
            let config_bytes =
                local::read_bounded(&config_path, MAX_CONFIG_SIZE)?.ok_or_else(|| {
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
            let tags: Vec<Reference> = self.tag.iter().cloned().collect();
            write_output(Output::Path(&self.file), |w, _| {
                let mut tar = TarWriter::new(w);
                let mut written = std::collections::BTreeSet::new();
                for l in &layers {
                    if !written.insert(l.digest.clone()) {
                        continue;
                    }
                    let name = layer_entry(&l.digest);
                    let path = self.blob_path(&l.digest);
                    let f = File::open(&path).map_err(local::io_err("open", &path))?;
                    tar.copy(&name, l.size, f)
                        .map_err(local::io_err(format!("writing {name} from"), &path))?;
                }
                let image = IndexedImage {
                    id: &config_desc.digest,
                    diff_ids: &diff_ids,
                    tags: &tags,
                };
                finish(tar, &[image], |_| Ok(config_bytes.clone()))
            })
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
