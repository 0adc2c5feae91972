//! Archives and the store: `hoist load` (either format, detected by content, everything
//! verified before anything is published) and `hoist save`, plus the worker pools they
//! share (layers checked or decompressed on a few threads). The formats themselves are
//! hoist-archive's.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

use hoist_archive::docker::DockerArchive;
use hoist_archive::oci::{ANNOTATION_IMAGE_NAME, OciArchive};
use hoist_archive::{ArchiveError, ArchiveFormat, ArchiveIndex, ArchiveProblem, MAX_LOAD_LAYERS};
use hoist_store::{ImageRecord, Store};
use hoist_types::{Digest, Manifest, Platform, Progress, Reference};

use super::any::{AnyDestination, AnySource};
use super::docker_archive::{DockerArchiveSource, DockerArchiveWriter};
use super::hoist::{HoistDestination, HoistSource};
use super::oci_archive::{OciArchiveSource, OciArchiveWriter};
use super::slot_archive::ArchiveTarget;
use super::{ImageSource, ManifestRef};
use crate::copy::{CopyOptions, StoreImage, copy, copy_images};
use crate::{TransportError, blocking};

impl From<ArchiveError> for TransportError {
    /// The archive crate's errors as the transport's, variant for variant.
    fn from(e: ArchiveError) -> TransportError {
        match e {
            ArchiveError::Bad { archive, problem } => {
                TransportError::BadArchive { archive, problem }
            }
            ArchiveError::NoMatchingPlatform { reference, choice } => {
                TransportError::NoMatchingPlatform { reference, choice }
            }
            ArchiveError::Io { op, path, source } => TransportError::Io { op, path, source },
            ArchiveError::Stream { what, source } => TransportError::Stream { what, source },
        }
    }
}

/// An image a load put in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// The image ID (config digest).
    pub id: Digest,
    /// The manifest stored for it.
    pub manifest: Digest,
    /// The tags it was given.
    pub names: Vec<Reference>,
}

/// An image to save, with the tags to record for it in the archive.
#[derive(Debug, Clone)]
pub struct SaveImage {
    /// How it was asked for (a name, an ID or prefix, a digest): the `hoist:` source the
    /// copy engine reads it from, so a name gives the manifest it was committed with.
    pub query: String,
    /// The store's record.
    pub record: ImageRecord,
    /// Tags to write (`RepoTags`, `index.json` names); empty for an untagged image.
    pub tags: Vec<Reference>,
}

impl SaveImage {
    /// Find `query` in the store the way `docker save` does: a name gives that image with
    /// that one tag; an ID, ID prefix or digest gives the image with no tag.
    pub fn resolve(store: &Store, query: &str) -> Result<SaveImage, TransportError> {
        let record = store.resolve(query)?;
        let tags = match Reference::parse(query) {
            Ok(r) if record.names.contains(&r) => vec![r],
            _ => Vec::new(),
        };
        Ok(SaveImage {
            query: query.to_owned(),
            record,
            tags,
        })
    }
}

/// Load every image and tag of an archive (either format, detected by content) into
/// `store`. `file` is read from its start; `name` names it in errors. Every blob is
/// verified (digests, sizes, diff IDs, layer counts) before anything is published: a bad
/// archive leaves the store unchanged.
pub async fn load_archive(
    store: &Store,
    file: File,
    name: &Path,
    progress: &dyn Progress,
) -> Result<(ArchiveFormat, Vec<LoadedImage>), TransportError> {
    load_archive_trusted(store, file, name, None, progress).await
}

/// [`load_archive`] under a trust policy, decided for the archive (its transport and
/// path scopes) before anything is written: a refused archive leaves the store unchanged.
///
/// A load is the copy engine in its multi-image form ([`copy_images`]): each image of the
/// archive is a source (`docker-archive:PATH:@N`, `oci-archive:PATH:@N`, sharing one
/// index of the tar), copied into one store destination under each of its names, and
/// committed together: every image is checked before a blob is published or a name
/// moves, and a blob several images share is read and verified once.
pub async fn load_archive_trusted(
    store: &Store,
    file: File,
    name: &Path,
    trust: Option<&hoist_trust::Policy>,
    progress: &dyn Progress,
) -> Result<(ArchiveFormat, Vec<LoadedImage>), TransportError> {
    let path = name.to_owned();
    let (index, format) = blocking(move || {
        let index = ArchiveIndex::from_file(file, &path)?;
        let format = ArchiveFormat::detect(&index)?;
        Ok::<_, TransportError>((index, format))
    })
    .await??;
    if let Some(policy) = trust {
        crate::trust::check_archive_load(policy, format.as_str(), name)?;
    }
    let path = name.to_owned();
    let sources: Vec<(AnySource, Vec<Option<Reference>>)> = blocking(move || {
        Ok::<_, TransportError>(match format {
            ArchiveFormat::DockerArchive => {
                DockerArchiveSource::every(DockerArchive::from_index(index)?, &path)?
                    .into_iter()
                    .map(|(src, tags)| {
                        let names = if tags.is_empty() {
                            vec![None]
                        } else {
                            tags.into_iter().map(Some).collect()
                        };
                        (AnySource::DockerArchive(src), names)
                    })
                    .collect()
            }
            ArchiveFormat::OciArchive => {
                OciArchiveSource::every(OciArchive::from_index(index)?, &path)?
                    .into_iter()
                    .map(|(src, name)| (AnySource::OciArchive(src), vec![name]))
                    .collect()
            }
        })
    })
    .await??;
    // The layers of the whole archive are bounded before any is read.
    let mut layers = BTreeSet::new();
    for (src, _) in &sources {
        if let Manifest::Image(m) = &src.get_manifest(&ManifestRef::Top).await?.manifest {
            layers.extend(m.layers.iter().map(|l| l.digest.clone()));
        }
    }
    if layers.len() > MAX_LOAD_LAYERS {
        return Err(TransportError::BadArchive {
            archive: name.display().to_string(),
            problem: Box::new(ArchiveProblem::TooManyLayers {
                limit: MAX_LOAD_LAYERS,
            }),
        });
    }
    let recorded = format!("{}:{}", format.as_str(), name.display());
    let images: Vec<StoreImage> = sources
        .into_iter()
        .map(|(source, names)| StoreImage {
            source,
            names: names
                .iter()
                .map(|n| n.as_ref().map(ToString::to_string))
                .collect(),
            recorded: Some(recorded.clone()),
        })
        .collect();
    let dst = HoistDestination::for_images(store.clone(), recorded.clone())?;
    // Every layer is verified: the engine reads it from the archive unless the store
    // holds that digest already (then the store's verified copy is the image's).
    let opts = CopyOptions {
        platform: Platform::host(),
        ..CopyOptions::default()
    };
    let records = copy_images(&images, dst, &opts, progress).await?;
    // One record per image and name, in the order they were given.
    let given = images
        .iter()
        .flat_map(|i| i.names.iter().map(|n| n.as_deref().map(Reference::parse)));
    let mut out: Vec<LoadedImage> = Vec::new();
    for (r, name) in records.iter().zip(given) {
        let name = name.transpose()?;
        match out.iter_mut().find(|l| l.manifest == r.manifest.digest) {
            Some(l) => l.names.extend(name),
            None => out.push(LoadedImage {
                id: r.id.clone(),
                manifest: r.manifest.digest.clone(),
                names: name.into_iter().collect(),
            }),
        }
    }
    Ok((format, out))
}

/// Save `images` from `store` as one archive of `format` at `target`: the copy engine
/// copies each image from the store (a `hoist:` source) into one destination of a
/// multi-image archive ([`DockerArchiveWriter`], [`OciArchiveWriter`]), which writes
/// each blob once into its temp tar (a layer shared by several images once); the
/// archive's documents are written and the file renamed when every image is in. A
/// docker-archive takes Docker schema 2 with uncompressed layers, so the engine converts
/// the manifest and decompresses each layer (checking its diff ID); an oci-archive takes
/// blobs as stored and OCI manifests (Docker schema 2 converted, as skopeo reads only
/// OCI from a layout). `opts.temp_dir` unset: temp files go beside the target.
pub async fn save_images(
    store: &Store,
    images: &[SaveImage],
    format: ArchiveFormat,
    target: ArchiveTarget,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<(), TransportError> {
    if images.is_empty() {
        return Err(TransportError::NoImage {
            location: "the list of images to save".to_owned(),
        });
    }
    let mut opts = opts.clone();
    opts.temp_dir.get_or_insert_with(|| target.temp_dir());
    // The archive destinations are `ordered`: the engine sends their blobs one at a time,
    // so entries land in the order the images and their layers are listed and the same
    // images give the same archive bytes on every run (and on a stream as in a file), as
    // `docker save` does.
    let open = |img: &SaveImage| HoistSource::open(store.clone(), img.query.clone());
    match format {
        ArchiveFormat::DockerArchive => {
            let archive = DockerArchiveWriter::create(target).await?;
            for img in images {
                let src = AnySource::Hoist(open(img).await?);
                let dst = AnyDestination::DockerArchive(archive.image(img.tags.clone()));
                copy(&src, dst, &opts, progress).await?;
            }
            archive.finish().await
        }
        ArchiveFormat::OciArchive => {
            let archive = OciArchiveWriter::create(target).await?;
            for img in images {
                let src = AnySource::Hoist(open(img).await?);
                let names: Vec<String> = img.tags.iter().map(ToString::to_string).collect();
                // containerd's name annotation too, as `ctr export` writes it (one name:
                // the annotations are the image's, shared by its entries).
                let mut annotations = BTreeMap::new();
                if let [name] = names.as_slice() {
                    annotations.insert(ANNOTATION_IMAGE_NAME.to_owned(), name.clone());
                }
                // An index saved whole (`all`) has no one platform.
                let platform = (!opts.all).then(|| img.record.platform.clone());
                let dst = AnyDestination::OciArchive(archive.image(names, platform, annotations));
                copy(&src, dst, &opts, progress).await?;
            }
            archive.finish().await
        }
    }
}
