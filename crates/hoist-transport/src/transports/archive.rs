//! Archives and the store: `hoist load` (either format, detected by content, everything
//! verified before anything is published) and `hoist save`, plus the worker pools they
//! share (layers checked or decompressed on a few threads).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use hoist_store::{ImageRecord, Store};
use hoist_types::{Descriptor, Digest, Progress, Reference};
use hoist_unpack::{LayerStream, Limits, UnpackError};

use super::archive_tar::{ArchiveIndex, ArchiveProblem, Output, write_output};
use crate::TransportError;

/// Most distinct layers one load stages at once (each holds an open temp file until the
/// whole archive has been checked).
pub const MAX_LOAD_LAYERS: usize = 512;

pub(crate) fn check_layer_limit(index: &ArchiveIndex, n: usize) -> Result<(), TransportError> {
    if n > MAX_LOAD_LAYERS {
        return Err(index.bad(ArchiveProblem::TooManyLayers {
            limit: MAX_LOAD_LAYERS,
        }));
    }
    Ok(())
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

/// The two archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s format.
    DockerArchive,
    /// A tar of an OCI image layout.
    OciArchive,
}

impl ArchiveFormat {
    /// What an indexed archive is: `manifest.json` makes it a docker-archive (docker 25
    /// and later write both; `manifest.json` carries the tags), else `index.json` and
    /// `oci-layout` an oci-archive.
    pub fn detect(index: &ArchiveIndex) -> Result<ArchiveFormat, TransportError> {
        if index.contains(super::docker_archive::MANIFEST_JSON) {
            Ok(ArchiveFormat::DockerArchive)
        } else if index.contains("index.json") && index.contains("oci-layout") {
            Ok(ArchiveFormat::OciArchive)
        } else {
            Err(index.bad(ArchiveProblem::Unrecognised))
        }
    }

    /// The transport name.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveFormat::DockerArchive => "docker-archive",
            ArchiveFormat::OciArchive => "oci-archive",
        }
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
    let index = ArchiveIndex::from_file(file, name)?;
    let format = ArchiveFormat::detect(&index)?;
    // A leased handle: the blobs staged and committed before the images are recorded
    // are kept by a concurrent `hoist gc` (hoist-store's `lease` module).
    let leased = store.leased()?;
    let store = &leased;
    let source = format!("{}:{}", format.as_str(), name.display());
    let loaded = match format {
        ArchiveFormat::DockerArchive => {
            let a = super::docker_archive::DockerArchive::from_index(index)?;
            super::docker_archive::load(store, &a, &source, progress)?
        }
        ArchiveFormat::OciArchive => {
            let a = super::oci_archive::OciArchive::from_index(index)?;
            super::oci_archive::load(store, &a, &source, progress)?
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
        ArchiveFormat::DockerArchive => {
            super::docker_archive::save(store, images, w, spool, progress)
        }
        ArchiveFormat::OciArchive => super::oci_archive::save(store, images, w, progress),
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
