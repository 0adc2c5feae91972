//! Archives and the store: `hoist load` (either format, detected by content, everything
//! verified before anything is published) and `hoist save`, plus the worker pools they
//! share (layers checked or decompressed on a few threads). The formats themselves are
//! hoist-archive's.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use hoist_archive::docker::{ArchiveLayer, DockerArchive};
use hoist_archive::oci::{ANNOTATION_IMAGE_NAME, OciArchive};
use hoist_archive::{ArchiveError, ArchiveFormat, ArchiveIndex, ArchiveProblem, MAX_LOAD_LAYERS};
use hoist_store::{BlobWriter, ImageCommit, ImageRecord, Store};
use hoist_types::{Descriptor, Digest, MediaType, Platform, Progress, Reference};
use hoist_unpack::Codec;

use super::any::{AnyDestination, AnySource};
use super::docker_archive::{ArchiveTarget, DockerArchiveWriter};
use super::hoist::HoistSource;
use super::oci_archive::OciArchiveWriter;
use crate::TransportError;
use crate::copy::{CopyOptions, copy};

pub(crate) fn check_layer_limit(index: &ArchiveIndex, n: usize) -> Result<(), TransportError> {
    if n > MAX_LOAD_LAYERS {
        return Err(index
            .bad(ArchiveProblem::TooManyLayers {
                limit: MAX_LOAD_LAYERS,
            })
            .into());
    }
    Ok(())
}

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
            ArchiveError::Io { what, source } => TransportError::Io { what, source },
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
pub fn load_archive(
    store: &Store,
    file: File,
    name: &Path,
    progress: &dyn Progress,
) -> Result<(ArchiveFormat, Vec<LoadedImage>), TransportError> {
    load_archive_trusted(store, file, name, None, progress)
}

/// [`load_archive`] under a trust policy, decided for the archive (its transport and
/// path scopes) before anything is written: a refused archive leaves the store unchanged.
pub fn load_archive_trusted(
    store: &Store,
    file: File,
    name: &Path,
    trust: Option<&hoist_trust::Policy>,
    progress: &dyn Progress,
) -> Result<(ArchiveFormat, Vec<LoadedImage>), TransportError> {
    let index = ArchiveIndex::from_file(file, name)?;
    let format = ArchiveFormat::detect(&index)?;
    if let Some(policy) = trust {
        crate::trust::check_archive_load(policy, format.as_str(), name)?;
    }
    // A leased handle: the blobs staged and committed before the images are recorded
    // are kept by a concurrent `hoist gc` (hoist-store's `lease` module).
    let leased = store.leased()?;
    let store = &leased;
    let source = format!("{}:{}", format.as_str(), name.display());
    let loaded = match format {
        ArchiveFormat::DockerArchive => DockerArchive::from_index(index)
            .map_err(TransportError::from)
            .and_then(|a| load_docker(store, &a, &source, progress)),
        ArchiveFormat::OciArchive => OciArchive::from_index(index)
            .map_err(TransportError::from)
            .and_then(|a| load_oci(store, &a, &source, progress)),
    };
    if loaded.is_err() {
        // A layer refused at its commit (its one hash is the writer's) comes after others
        // were published: what this load published and nothing reaches goes again, so
        // a failed load leaves the store as it was. The load's own error is what the
        // caller needs; a failed withdrawal leaves orphans that gc collects.
        let _ = store.withdraw_unreached();
    }
    Ok((format, loaded?))
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
        return Err(TransportError::Unsupported {
            what: "saving an archive of no image".into(),
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
                let dst = AnyDestination::OciArchive(archive.image(
                    names,
                    Some(img.record.platform.clone()),
                    annotations,
                ));
                copy(&src, dst, &opts, progress).await?;
            }
            archive.finish().await
        }
    }
}

/// Workers for parallel layer work: the cores, at most 4.
fn workers(jobs: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4)
        .min(jobs.max(1))
}

/// Run `f` on every job on a few threads; the results in job order, or the first error
/// (the remaining jobs are then skipped, and results already made are dropped).
pub(crate) fn parallel<J: Send, T: Send>(
    jobs: Vec<J>,
    f: impl Fn(J) -> Result<T, TransportError> + Sync,
) -> Result<Vec<T>, TransportError> {
    let n = jobs.len();
    let queue = Mutex::new(jobs.into_iter().enumerate());
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    let failed: Mutex<Option<TransportError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..workers(n) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some((i, job)) = lock(&queue).next() else {
                        break;
                    };
                    match f(job) {
                        Ok(v) => lock(&results)[i] = Some(v),
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            lock(&failed).get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Load every image of a docker-archive into `store`, with every tag. Every layer is
/// checked against its diff ID before anything is published; on any error the store is
/// left as it was.
fn load_docker(
    store: &Store,
    archive: &DockerArchive,
    source: &str,
    progress: &dyn Progress,
) -> Result<Vec<LoadedImage>, TransportError> {
    let images = (0..archive.items().len())
        .map(|i| archive.image(i))
        .collect::<Result<Vec<_>, _>>()?;
    // Distinct layers, in archive order. Every one is checked against its diff ID, even
    // one the store has already: a bad archive is refused whatever the store holds.
    let mut seen = BTreeSet::new();
    let mut jobs = Vec::new();
    for l in images.iter().flat_map(|i| &i.layers) {
        if seen.insert(l.diff_id.clone()) {
            jobs.push(l.clone());
        }
    }
    check_layer_limit(archive.index(), jobs.len())?;
    let staged: Vec<(ArchiveLayer, u64, Option<BlobWriter>)> = parallel(jobs, |l| {
        if store.has_blob(&l.diff_id)?.is_some() {
            let size = archive.copy_layer(&l, &mut io::sink(), progress)?;
            return Ok((l, size, None));
        }
        if l.codec == Codec::None {
            // An uncompressed layer's blob digest is its diff ID: the store's writer hashes
            // it once, and its commit (below, before any image is recorded) checks it.
            let mut w = store.blob_writer(&l.diff_id, Some(l.entry_size))?;
            let mut r = archive.index().open_entry(&l.entry, "a layer")?;
            io::copy(&mut r, &mut w).map_err(|source| TransportError::Io {
                what: format!(
                    "copying layer {} of archive {} into the store",
                    l.entry,
                    archive.index().path().display()
                ),
                source,
            })?;
            return Ok((l.clone(), l.entry_size, Some(w)));
        }
        let mut w = store.blob_writer(&l.diff_id, None)?;
        let size = archive.copy_layer(&l, &mut w, progress)?;
        Ok((l, size, Some(w)))
    })?;
    let mut sizes: BTreeMap<Digest, u64> = BTreeMap::new();
    for (l, size, w) in staged {
        if let Some(w) = w {
            w.commit().map_err(|e| match e {
                hoist_store::StoreError::DigestMismatch { expected, actual } => archive
                    .index()
                    .bad(ArchiveProblem::DigestMismatch {
                        entry: l.entry.clone(),
                        expected,
                        actual,
                    })
                    .into(),
                e => TransportError::from(e),
            })?;
        }
        sizes.insert(l.diff_id, size);
    }
    let mut out = Vec::new();
    for img in &images {
        let layer_sizes: Vec<u64> = img
            .layers
            .iter()
            .map(|l| sizes.get(&l.diff_id).copied().unwrap_or_default())
            .collect();
        store.put_blob(&img.config_digest, &img.config_bytes)?;
        let manifest = img.manifest(&layer_sizes);
        let mdigest = Digest::sha256_of(&manifest);
        store.put_blob(&mdigest, &manifest)?;
        let desc = Descriptor::new(
            MediaType::DockerManifest,
            mdigest.clone(),
            manifest.len() as u64,
        );
        let names: Vec<Option<Reference>> = if img.tags.is_empty() {
            vec![None]
        } else {
            img.tags.iter().cloned().map(Some).collect()
        };
        for name in names {
            store.commit_image(ImageCommit {
                name,
                manifest: desc.clone(),
                index: None,
                source: Some(source.to_owned()),
            })?;
        }
        out.push(LoadedImage {
            id: img.config_digest.clone(),
            manifest: mdigest,
            names: img.tags.clone(),
        });
    }
    Ok(out)
}

/// Load every image of an oci-archive into `store`. Every blob is verified before
/// anything is published.
fn load_oci(
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
    check_layer_limit(archive.index(), jobs.len())?;
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
