//! Archives and the store: `hoist load` (either format, detected by content, everything
//! verified before anything is published) and `hoist save`, plus the worker pools they
//! share (layers checked or decompressed on a few threads). The formats themselves are
//! hoist-archive's.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use hoist_archive::docker::{DockerArchive, IndexedImage, finish, layer_entry};
use hoist_archive::oci::{
    ANNOTATION_IMAGE_NAME, LAYOUT_FILE, OciArchive, blob_entry, docker_to_oci,
};
use hoist_archive::{
    ArchiveError, ArchiveFormat, ArchiveIndex, ArchiveProblem, MAX_LOAD_LAYERS, Output, TarWriter,
    write_output,
};
use hoist_store::{BlobWriter, ImageCommit, ImageRecord, Store};
use hoist_types::{
    ANNOTATION_REF_NAME, Compression, Descriptor, Digest, ImageIndex, MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE, MediaType, Platform, Progress, Reference,
};
use hoist_unpack::{LayerStream, Limits, UnpackError};

use crate::TransportError;

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
        Ok(SaveImage { record, tags })
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
        ArchiveFormat::DockerArchive => {
            let a = DockerArchive::from_index(index)?;
            load_docker(store, &a, &source, progress)?
        }
        ArchiveFormat::OciArchive => {
            let a = OciArchive::from_index(index)?;
            load_oci(store, &a, &source, progress)?
        }
    };
    Ok((format, loaded))
}

/// Write `images` from `store` as an archive of `format` onto `out`.
pub fn save_archive(
    store: &Store,
    images: &[SaveImage],
    format: ArchiveFormat,
    out: Output<'_>,
    progress: &dyn Progress,
) -> Result<(), TransportError> {
    if images.is_empty() {
        return Err(TransportError::Unsupported {
            what: "saving an archive of no image".into(),
        });
    }
    write_output(out, |w, spool| match format {
        ArchiveFormat::DockerArchive => save_docker(store, images, w, spool, progress),
        ArchiveFormat::OciArchive => save_oci(store, images, w, progress),
    })
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

/// A spooled layer: the anonymous temp file and its size.
type Spooled = Result<(File, u64), TransportError>;

/// Decompressed layers being spooled to anonymous temp files by worker threads, handed
/// out in any order by position.
pub(crate) struct Pending {
    slots: BTreeMap<usize, Receiver<Spooled>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Pending {
    /// The spooled layer at `position` (waits for it): the temp file and its size.
    pub(crate) fn take(&mut self, position: usize) -> Result<(File, u64), TransportError> {
        let rx = self
            .slots
            .remove(&position)
            .ok_or_else(|| TransportError::Task {
                what: format!("no spooled layer at position {position}"),
            })?;
        rx.recv().map_err(|_| TransportError::Task {
            what: "a layer worker stopped".into(),
        })?
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Start decompressing `jobs` (position, compressed layer descriptor, diff ID) from the
/// store into anonymous temp files in `dir`, each checked against its diff ID, on a few
/// threads of scope `s`, in job order.
pub(crate) fn spool_layers<'scope, 'env>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    store: &'env Store,
    jobs: Vec<(usize, Descriptor, Digest)>,
    dir: &'env Path,
    progress: &'env dyn Progress,
) -> Pending {
    let stop = Arc::new(AtomicBool::new(false));
    let mut slots = BTreeMap::new();
    let mut queue = Vec::with_capacity(jobs.len());
    for (pos, desc, diff) in jobs {
        let (tx, rx) = sync_channel(1);
        slots.insert(pos, rx);
        queue.push((desc, diff, tx));
    }
    let n = workers(queue.len());
    let queue = Arc::new(Mutex::new(queue.into_iter()));
    for _ in 0..n {
        let queue = queue.clone();
        let stop = stop.clone();
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some((desc, diff, tx)) = lock(&queue).next() else {
                    break;
                };
                let r = spool_one(store, &desc, &diff, dir, progress);
                let _ = tx.send(r);
            }
        });
    }
    Pending { slots, stop }
}

fn spool_one(
    store: &Store,
    desc: &Descriptor,
    diff_id: &Digest,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(File, u64), TransportError> {
    let blob = store.open_blob(&desc.digest)?;
    let io_err = |what: String| move |source| TransportError::Io { what, source };
    let bad_layer = |source| TransportError::Io {
        what: format!("reading layer {}", desc.digest),
        source: io::Error::new(io::ErrorKind::InvalidData, source),
    };
    let mut stream = LayerStream::open(
        blob,
        &desc.media_type,
        diff_id.algorithm(),
        &Limits::default(),
        Some(&desc.digest),
        progress,
    )
    .map_err(|e: UnpackError| bad_layer(e))?;
    let mut file = tempfile::tempfile_in(dir)
        .map_err(io_err(format!("creating a temp file in {}", dir.display())))?;
    {
        let mut w = io::BufWriter::with_capacity(1 << 20, &mut file);
        io::copy(&mut stream, &mut w)
            .map_err(io_err(format!("decompressing layer {}", desc.digest)))?;
        w.flush()
            .map_err(io_err(format!("writing a temp file in {}", dir.display())))?;
    }
    let (actual, size) = stream.finish(false).map_err(bad_layer)?;
    if &actual != diff_id {
        return Err(TransportError::Store(
            hoist_store::StoreError::DigestMismatch {
                expected: diff_id.clone(),
                actual,
            },
        ));
    }
    Ok((file, size))
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
    let staged: Vec<(Digest, u64, Option<BlobWriter>)> = parallel(jobs, |l| {
        if store.has_blob(&l.diff_id)?.is_some() {
            let size = archive.copy_layer(&l, &mut io::sink(), progress)?;
            return Ok((l.diff_id.clone(), size, None));
        }
        let mut w = store.blob_writer(&l.diff_id, None)?;
        let size = archive.copy_layer(&l, &mut w, progress)?;
        Ok((l.diff_id.clone(), size, Some(w)))
    })?;
    let mut sizes: BTreeMap<Digest, u64> = BTreeMap::new();
    for (d, size, w) in staged {
        if let Some(w) = w {
            w.commit()?;
        }
        sizes.insert(d, size);
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

/// Write `images` from `store` as a docker-archive onto `out`. Temp files for
/// decompressed layers go in `spool_dir` (anonymous: nothing is left behind).
fn save_docker(
    store: &Store,
    images: &[SaveImage],
    out: &mut dyn Write,
    spool_dir: &Path,
    progress: &dyn Progress,
) -> Result<(), TransportError> {
    let wio = |what: String| move |source| TransportError::Io { what, source };
    // Distinct layers in write order, and which need decompressing.
    let mut order: Vec<(Descriptor, Digest)> = Vec::new();
    let mut seen = BTreeSet::new();
    for img in images {
        let r = &img.record;
        check_record(r)?;
        for (desc, diff_id) in r.layers.iter().zip(&r.diff_ids) {
            if seen.insert(diff_id.clone()) {
                order.push((desc.clone(), diff_id.clone()));
            }
        }
    }
    let compressed: Vec<(usize, Descriptor, Digest)> = order
        .iter()
        .enumerate()
        .filter(|(_, (d, _))| d.media_type.layer_compression() != Some(Compression::None))
        .map(|(i, (d, diff))| (i, d.clone(), diff.clone()))
        .collect();
    let mut tar = TarWriter::new(out);
    let written = std::thread::scope(|s| -> Result<(), TransportError> {
        let mut pending = spool_layers(s, store, compressed, spool_dir, progress);
        for (i, (desc, diff_id)) in order.iter().enumerate() {
            let name = layer_entry(diff_id);
            let what = format!("writing layer {name}");
            if desc.media_type.layer_compression() == Some(Compression::None) {
                let f = store.open_blob(&desc.digest)?;
                tar.copy(&name, desc.size, f).map_err(wio(what))?;
            } else {
                let (mut f, size): (File, u64) = pending.take(i)?;
                f.rewind().map_err(wio(what.clone()))?;
                tar.copy(&name, size, f).map_err(wio(what))?;
            }
        }
        Ok(())
    });
    written?;
    let entries: Vec<IndexedImage<'_>> = images
        .iter()
        .map(|img| IndexedImage {
            id: &img.record.id,
            diff_ids: &img.record.diff_ids,
            tags: &img.tags,
        })
        .collect();
    finish::<TransportError>(&mut tar, &entries, |id| {
        Ok(store.read_blob(id, MAX_CONFIG_SIZE)?)
    })?;
    tar.finish().map_err(|source| TransportError::Io {
        what: "finishing the archive".into(),
        source,
    })?;
    Ok(())
}

/// A record fit for saving: as many layers as diff IDs, layers hoist can decompress.
fn check_record(r: &ImageRecord) -> Result<(), TransportError> {
    if r.layers.len() != r.diff_ids.len() {
        return Err(TransportError::InvalidConfig {
            digest: r.id.clone(),
            source: hoist_types::TypeError::LayerCountMismatch {
                layers: r.layers.len(),
                diff_ids: r.diff_ids.len(),
            },
        });
    }
    for l in &r.layers {
        if l.media_type.layer_compression().is_none() {
            return Err(TransportError::Unsupported {
                what: format!("layer {} of media type {}", l.digest, l.media_type),
            });
        }
    }
    Ok(())
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

/// Write `images` from `store` as an oci-archive onto `out`.
fn save_oci(
    store: &Store,
    images: &[SaveImage],
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<(), TransportError> {
    let _ = progress;
    let wio = |what: String| move |source: io::Error| TransportError::Io { what, source };
    let mut tar = TarWriter::new(out);
    tar.bytes("oci-layout", LAYOUT_FILE)
        .map_err(wio("writing oci-layout".into()))?;
    for d in ["blobs", "blobs/sha256"] {
        tar.dir(d).map_err(wio(format!("writing {d}")))?;
    }
    let mut written = BTreeSet::new();
    let mut dirs = BTreeSet::from([hoist_types::Algorithm::Sha256]);
    let mut entries = Vec::new();
    for img in images {
        let r = &img.record;
        check_record(r)?;
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
