//! `fsck`: re-hash every blob, check everything a name or image reaches, find orphans,
//! temp files, broken records and rootfs entries; optionally repair.
//!
//! Blobs are hashed first without the store lock (on `jobs` threads); everything else is
//! checked, and repaired, under the exclusive store lock. Classification is pure
//! ([`classify_blobs`], [`classify_images`]) and table-tested.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hoist_types::{Digest, Hasher, MAX_MANIFEST_SIZE, Manifest};
use serde::Serialize;

use crate::fsutil::{self, LockMode};
use crate::gc::BlobFile;
use crate::mark::{self, Marks};
use crate::record::ImageRecord;
use crate::rootfs;
use crate::{LAYOUT_VERSION, Store, StoreError};

/// How [`Store::fsck`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FsckOptions {
    /// Remove what is corrupt or orphaned, and rewrite `index.json`.
    pub repair: bool,
    /// Threads hashing blobs.
    pub jobs: usize,
}

impl Default for FsckOptions {
    fn default() -> Self {
        FsckOptions {
            repair: false,
            jobs: 2,
        }
    }
}

/// What kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// `hoist/version` is missing or wrong.
    Version,
    /// A blob does not hash to its name.
    CorruptBlob,
    /// A blob an image needs is absent.
    MissingBlob,
    /// A blob an image needs has another size than its descriptor says.
    WrongSize,
    /// An image that needs a corrupt blob, or whose manifest contradicts its record.
    BrokenImage,
    /// An image record that cannot be read.
    BrokenRecord,
    /// A blob no root reaches.
    OrphanBlob,
    /// A temp file or directory left by a killed writer.
    TempFile,
    /// A file that does not belong in the layout.
    StrayFile,
    /// `index.json` does not match the records (a crash between the two writes).
    StaleIndex,
    /// An `index.json` entry whose manifest is absent, or that is not a descriptor.
    DanglingIndexEntry,
    /// A rootfs cache entry that is not whole.
    BrokenRootfs,
    /// A rootfs cache entry no image needs.
    UnusedRootfs,
    /// The file of a lease whose owner died.
    DeadLease,
    /// A Docker schema 2 manifest whose OCI view (what `index.json` lists for its names,
    /// so that skopeo and umoci can read it) is not recorded, or is missing, corrupt or
    /// not the one its manifest makes.
    OciView,
}

/// An OCI view to (re)write: for manifest `manifest` of image `id`.
struct ViewFix {
    id: Digest,
    manifest: Digest,
    bytes: Vec<u8>,
    problem: Problem,
}

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// The blob concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// The file concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// What is wrong, in words.
    pub detail: String,
    /// What `--repair` did about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
}

impl Problem {
    fn new(kind: ProblemKind, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            digest: None,
            path: None,
            detail: detail.into(),
            repaired: None,
        }
    }

    fn digest(mut self, d: &Digest) -> Problem {
        self.digest = Some(d.clone());
        self
    }

    fn path(mut self, p: impl Into<PathBuf>) -> Problem {
        self.path = Some(p.into());
        self
    }
}

/// A partial download kept to resume from: not a problem.
#[derive(Debug, Clone, Serialize)]
pub struct Resumable {
    /// The blob it is for.
    pub digest: Digest,
    /// Valid bytes kept.
    pub offset: u64,
    /// The blob's size, when recorded.
    pub size: Option<u64>,
    /// The data file.
    pub path: PathBuf,
    /// A process is writing it now.
    pub in_use: bool,
}

/// What [`Store::fsck`] found (and did).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    /// The layout version.
    pub layout_version: String,
    /// Blobs re-hashed.
    pub blobs_checked: usize,
    /// Bytes re-hashed.
    pub bytes_hashed: u64,
    /// Image records checked.
    pub images_checked: usize,
    /// Names checked.
    pub names_checked: usize,
    /// Rootfs cache entries checked.
    pub rootfs_checked: usize,
    /// Whether `--repair` ran.
    pub repair: bool,
    /// Problems, by kind.
    pub problems: Vec<Problem>,
    /// Partial downloads kept to resume from (not problems).
    pub resumable: Vec<Resumable>,
    /// Wall time, in milliseconds.
    pub elapsed_ms: u64,
}

impl FsckReport {
    /// No problem found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Problems left as they were (all of them without `--repair`).
    pub fn unrepaired(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.repaired.is_none())
            .count()
    }
}

/// A blob as found and hashed.
#[derive(Debug, Clone)]
pub(crate) struct BlobFacts {
    pub digest: Digest,
    pub size: u64,
    /// What its content hashes to; `None` when it was not hashed (it appeared later).
    pub actual: Option<Digest>,
}

/// Corrupt and orphan blobs. `busy` blobs (a writer holds their lock) are never orphans.
pub(crate) fn classify_blobs(
    blobs: &[BlobFacts],
    marks: &Marks,
    busy: &BTreeSet<Digest>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for b in blobs {
        if let Some(actual) = &b.actual
            && actual != &b.digest
        {
            out.push(
                Problem::new(
                    ProblemKind::CorruptBlob,
                    format!("blob {} hashes to {actual}", b.digest),
                )
                .digest(&b.digest),
            );
            continue;
        }
        if !marks.blobs.contains(&b.digest) && !busy.contains(&b.digest) {
            out.push(
                Problem::new(
                    ProblemKind::OrphanBlob,
                    format!(
                        "blob {} ({} bytes) is reached by no image, name or lease",
                        b.digest, b.size
                    ),
                )
                .digest(&b.digest),
            );
        }
    }
    out
}

/// Problems of images: blobs missing, of the wrong size, or corrupt. Returns each
/// problem with the ID of the image it breaks.
pub(crate) fn classify_images(
    records: &[ImageRecord],
    blobs: &HashMap<Digest, (u64, bool)>,
) -> Vec<(Digest, Problem)> {
    let mut out = Vec::new();
    for rec in records {
        let who = match rec.names.first() {
            Some(n) => format!("image {} ({n})", rec.id),
            None => format!("image {}", rec.id),
        };
        let mut needed: Vec<(&'static str, Digest, u64)> =
            vec![("config", rec.id.clone(), rec.config_size)];
        for v in rec.variants() {
            needed.push(("manifest", v.manifest.digest.clone(), v.manifest.size));
            if let Some(i) = &v.index {
                needed.push(("index", i.digest.clone(), i.size));
            }
            needed.extend(v.layers.iter().map(|l| ("layer", l.digest.clone(), l.size)));
        }
        let mut seen = BTreeSet::new();
        for (what, d, size) in needed {
            if !seen.insert(d.clone()) {
                continue;
            }
            let p = match blobs.get(&d) {
                None => Problem::new(
                    ProblemKind::MissingBlob,
                    format!("{what} {d} of {who} is missing"),
                ),
                Some((actual, _)) if *actual != size => Problem::new(
                    ProblemKind::WrongSize,
                    format!("{what} {d} of {who} has {actual} bytes, not {size}"),
                ),
                Some((_, true)) => Problem::new(
                    ProblemKind::BrokenImage,
                    format!("{who} needs the corrupt {what} {d}"),
                ),
                Some(_) => continue,
            };
            out.push((rec.id.clone(), p.digest(&d)));
        }
    }
    out
}

/// Hash every blob on `jobs` threads.
fn hash_all(blobs: &[BlobFile], jobs: usize) -> Vec<Option<Digest>> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(vec![None; blobs.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = blobs.get(i) else { break };
                    let digest = hash_file(&b.path, &b.digest, &mut buf);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = digest;
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner())
}

fn hash_file(path: &std::path::Path, like: &Digest, buf: &mut [u8]) -> Option<Digest> {
    let mut f = File::open(path).ok()?;
    let mut h = Hasher::new(like.algorithm());
    loop {
        match f.read(buf) {
            Ok(0) => return Some(h.finish()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

impl Store {
    /// Check the store (see the module docs of `fsck`). With `repair`, remove what is
    /// corrupt or orphaned (an image that needs a missing or corrupt blob goes too: pull
    /// it again), and rewrite `index.json`; each problem then says what was done.
    ///
    /// Blobs are hashed on [`FsckOptions::jobs`] threads without the store lock; the rest
    /// runs under the shared lock (the exclusive one with `repair`).
    ///
    /// ```
    /// use hoist_store::{FsckOptions, ProblemKind, Store};
    /// use hoist_types::Digest;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// assert!(store.fsck(&FsckOptions::default())?.is_clean());
    ///
    /// // A blob no image reaches is an orphan; `repair` removes it.
    /// store.put_blob(&Digest::sha256_of(b"orphan"), b"orphan")?;
    /// let report = store.fsck(&FsckOptions::default())?;
    /// assert_eq!(report.problems[0].kind, ProblemKind::OrphanBlob);
    /// let mut repair = FsckOptions::default();
    /// repair.repair = true;
    /// assert_eq!(store.fsck(&repair)?.unrepaired(), 0);
    /// assert!(store.fsck(&FsckOptions::default())?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fsck(&self, opts: &FsckOptions) -> Result<FsckReport, StoreError> {
        let start = Instant::now();
        let s = self.unleased();
        let mut report = FsckReport {
            layout_version: LAYOUT_VERSION.to_owned(),
            repair: opts.repair,
            ..FsckReport::default()
        };
        // 1. Hash, without the lock.
        let first = s.scan_blobs()?;
        let hashes = hash_all(&first.blobs, opts.jobs);
        let hashed: HashMap<Digest, Digest> = first
            .blobs
            .iter()
            .zip(hashes)
            .filter_map(|(b, h)| h.map(|h| (b.digest.clone(), h)))
            .collect();
        report.blobs_checked = hashed.len();
        report.bytes_hashed = first
            .blobs
            .iter()
            .filter(|b| hashed.contains_key(&b.digest))
            .map(|b| b.size)
            .sum();

        // 2. Everything else under the lock.
        let lock = if opts.repair {
            s.lock_store(LockMode::Exclusive)?
        } else {
            s.lock_store(LockMode::Shared)?
        };
        let mut problems = Vec::new();
        let version_path = s.hoist_dir().join("version");
        match fsutil::read_optional(&version_path, 4096)? {
            Some(v) if String::from_utf8_lossy(&v).trim() == LAYOUT_VERSION => {}
            found => problems.push(
                Problem::new(
                    ProblemKind::Version,
                    format!(
                        "layout version is {:?}, not {LAYOUT_VERSION:?}",
                        found.map(|v| String::from_utf8_lossy(&v).trim().to_owned())
                    ),
                )
                .path(&version_path),
            ),
        }
        // Records, each on its own.
        let (mut records, broken_records) = s.load_records_tolerant()?;
        for (path, reason) in &broken_records {
            problems.push(Problem::new(ProblemKind::BrokenRecord, reason.clone()).path(path));
        }
        let _ = s.dedupe_names(&mut records);
        report.images_checked = records.len();
        report.names_checked = records.iter().map(|r| r.names.len()).sum();

        let scan = s.scan_blobs()?;
        let sizes: HashMap<Digest, (u64, bool)> = scan
            .blobs
            .iter()
            .map(|b| {
                let corrupt = hashed.get(&b.digest).is_some_and(|h| h != &b.digest);
                (b.digest.clone(), (b.size, corrupt))
            })
            .collect();
        let mut image_problems = classify_images(&records, &sizes);
        let (manifest_problems, mut view_fixes) = s.check_manifests(&records, &sizes);
        image_problems.extend(manifest_problems);
        let broken_ids: BTreeSet<Digest> =
            image_problems.iter().map(|(id, _)| id.clone()).collect();
        let mut good: Vec<ImageRecord> = if opts.repair {
            records
                .iter()
                .filter(|r| !broken_ids.contains(&r.id))
                .cloned()
                .collect()
        } else {
            records.clone()
        };
        let (marks, leases) = s.mark_locked(&good)?;
        let facts: Vec<BlobFacts> = scan
            .blobs
            .iter()
            .map(|b| BlobFacts {
                digest: b.digest.clone(),
                size: b.size,
                actual: hashed.get(&b.digest).cloned(),
            })
            .collect();
        let busy: BTreeSet<Digest> = scan
            .blobs
            .iter()
            .filter(|b| !marks.blobs.contains(&b.digest) && s.blob_busy(&b.digest))
            .map(|b| b.digest.clone())
            .collect();
        let mut blob_problems = classify_blobs(&facts, &marks, &busy);
        for p in &mut blob_problems {
            p.path = p.digest.as_ref().map(|d| s.blob_path(d));
        }

        // index.json: dangling entries, and whether it matches the records.
        let idx = s.read_index()?;
        let mut dangling = BTreeSet::new();
        for (d, ours) in idx.descriptors() {
            if !ours && !sizes.contains_key(&d.digest) {
                dangling.insert(d.digest.clone());
                problems.push(
                    Problem::new(
                        ProblemKind::DanglingIndexEntry,
                        format!("index.json lists manifest {}, which is absent", d.digest),
                    )
                    .digest(&d.digest),
                );
            }
        }
        let invalid_entries = idx.invalid_entries();
        if invalid_entries > 0 {
            problems.push(Problem::new(
                ProblemKind::DanglingIndexEntry,
                format!("index.json has {invalid_entries} entries that are not descriptors"),
            ));
        }
        let projected = crate::index::project(s.read_index()?, &records).to_bytes();
        if projected != idx.to_bytes() {
            problems.push(
                Problem::new(
                    ProblemKind::StaleIndex,
                    "index.json does not match the image records",
                )
                .path(s.index_path()),
            );
        }

        // Temp files, strays, dead leases.
        let mut temps: Vec<(PathBuf, u64)> = s.dead_temp_files()?;
        temps.extend(
            scan.temps
                .iter()
                .filter(|(_, _, age)| *age >= crate::TEMP_MIN_AGE)
                .map(|(p, b, _)| (p.clone(), *b)),
        );
        for (path, _) in &temps {
            problems
                .push(Problem::new(ProblemKind::TempFile, "left by a killed writer").path(path));
        }
        for path in scan.strays.iter().chain(&s.orphan_partial_records()?) {
            problems.push(
                Problem::new(ProblemKind::StrayFile, "does not belong in the layout").path(path),
            );
        }
        for (path, _) in &leases.dead {
            problems.push(Problem::new(ProblemKind::DeadLease, "its owner is gone").path(path));
        }

        // Rootfs cache.
        let rscan = s.scan_rootfs()?;
        report.rootfs_checked = rscan.entries.len();
        let mut rootfs_problems: Vec<(Problem, String)> = Vec::new();
        for e in &rscan.entries {
            if let Some(why) = &e.broken {
                rootfs_problems.push((
                    Problem::new(ProblemKind::BrokenRootfs, why.clone()).path(&e.dir),
                    e.lock_name(),
                ));
            } else if !mark::keep_rootfs(&marks, e.kind, &e.key) {
                rootfs_problems.push((
                    Problem::new(
                        ProblemKind::UnusedRootfs,
                        format!("no image needs {}", e.name),
                    )
                    .path(&e.dir),
                    e.lock_name(),
                ));
            } else if let Some(d) = rootfs::needed_tars(e)
                .into_iter()
                .find(|d| sizes.get(d).is_none_or(|(_, corrupt)| *corrupt))
            {
                // An erofs tar index whose layer tar is gone or corrupt cannot be mounted:
                // the repair removes the entry; the next build writes both again.
                rootfs_problems.push((
                    Problem::new(
                        ProblemKind::BrokenRootfs,
                        format!(
                            "{} needs the layer tar {d}, which is missing or corrupt",
                            e.name
                        ),
                    )
                    .digest(&d)
                    .path(&e.dir),
                    e.lock_name(),
                ));
            }
        }
        for (path, lock) in &rscan.temps {
            if s.try_lock_named(lock)?.is_some() {
                rootfs_problems.push((
                    Problem::new(ProblemKind::TempFile, "left by a killed rootfs build").path(path),
                    lock.clone(),
                ));
            }
        }
        for path in &rscan.strays {
            problems.push(
                Problem::new(
                    ProblemKind::StrayFile,
                    "does not belong in the rootfs cache",
                )
                .path(path),
            );
        }

        // Resumable partial downloads: reported, never problems.
        for p in s.partial_blobs()? {
            let in_use = File::open(&p.path)
                .map(|f| f.try_lock().is_err())
                .unwrap_or(false);
            report.resumable.push(Resumable {
                digest: p.digest,
                offset: p.offset,
                size: p.size,
                path: p.path,
                in_use,
            });
        }

        // 3. Repair.
        let mut doomed_trees = Vec::new();
        if opts.repair {
            for (path, reason) in &broken_records {
                fsutil::remove_if_exists(path)?;
                mark_repaired(
                    &mut problems,
                    path,
                    &format!("removed the record ({reason})"),
                );
            }
            let by_id: BTreeMap<&Digest, &ImageRecord> =
                records.iter().map(|r| (&r.id, r)).collect();
            for id in &broken_ids {
                s.delete_record(id)?;
                let names = by_id
                    .get(id)
                    .map(|r| {
                        r.names
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let what = format!("removed image {id} [{names}]: pull it again");
                for (pid, p) in &mut image_problems {
                    if pid == id {
                        p.repaired = Some(what.clone());
                    }
                }
            }
            for p in &mut blob_problems {
                if let Some(path) = &p.path {
                    fsutil::remove_if_exists(path)?;
                    p.repaired = Some("removed the blob".into());
                }
            }
            // OCI views: made again from their manifests (a corrupt one was removed above).
            for fix in &mut view_fixes {
                let Some(rec) = good.iter_mut().find(|r| r.id == fix.id) else {
                    continue;
                };
                let d = s.write_derived_blob(&fix.bytes)?;
                rec.oci_views.retain(|v| v.manifest != fix.manifest);
                rec.oci_views.push(crate::record::OciView {
                    manifest: fix.manifest.clone(),
                    view: hoist_types::Descriptor::new(
                        hoist_types::MediaType::OciManifest,
                        d.clone(),
                        fix.bytes.len() as u64,
                    ),
                });
                s.save_record(rec)?;
                fix.problem.repaired = Some(format!("wrote the OCI view {d}"));
            }
            for p in &mut problems {
                if p.repaired.is_some() {
                    continue;
                }
                match p.kind {
                    ProblemKind::TempFile | ProblemKind::StrayFile | ProblemKind::DeadLease => {
                        if let Some(path) = &p.path {
                            rootfs::remove_tree(path)?;
                            p.repaired = Some("removed".into());
                        }
                    }
                    ProblemKind::Version => {
                        fsutil::write_atomic(
                            &version_path,
                            format!("{LAYOUT_VERSION}\n").as_bytes(),
                        )?;
                        p.repaired = Some(format!("wrote version {LAYOUT_VERSION}"));
                    }
                    _ => {}
                }
            }
            for (p, lock) in &mut rootfs_problems {
                if let Some(path) = &p.path
                    && let Some(doomed) = s.retire_rootfs(path, lock)?
                {
                    doomed_trees.push(doomed);
                    p.repaired = Some("removed".into());
                }
            }
            // index.json last: from the remaining records, without dangling entries.
            let mut idx = crate::index::project(s.read_index()?, &good);
            idx.retain_entries(|d| d.is_some_and(|d| !dangling.contains(&d.digest)));
            s.write_index_file(&idx)?;
            for p in &mut problems {
                if matches!(
                    p.kind,
                    ProblemKind::StaleIndex | ProblemKind::DanglingIndexEntry
                ) {
                    p.repaired = Some("rewrote index.json".into());
                }
            }
            for dir in [
                s.root().join("blobs/sha256"),
                s.root().join("blobs/sha512"),
                s.images_dir(),
            ] {
                if dir.is_dir() {
                    fsutil::fsync_dir(&dir)?;
                }
            }
        }
        drop(lock);
        for t in doomed_trees {
            rootfs::remove_tree(&t)?;
        }
        problems.extend(image_problems.into_iter().map(|(_, p)| p));
        problems.extend(view_fixes.into_iter().map(|f| f.problem));
        problems.extend(blob_problems);
        problems.extend(rootfs_problems.into_iter().map(|(p, _)| p));
        problems.sort_by(|a, b| (a.kind, &a.digest, &a.path).cmp(&(b.kind, &b.digest, &b.path)));
        report.problems = problems;
        report.elapsed_ms = start.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Each image's manifests must parse and name its config and layers (problems that
    /// break the image), and each Docker schema 2 manifest must have its OCI view
    /// (problems repaired by writing the view again).
    fn check_manifests(
        &self,
        records: &[ImageRecord],
        sizes: &HashMap<Digest, (u64, bool)>,
    ) -> (Vec<(Digest, Problem)>, Vec<ViewFix>) {
        let mut out = Vec::new();
        let mut views = Vec::new();
        for rec in records {
            for v in rec.variants() {
                let d = &v.manifest.digest;
                if !sizes
                    .get(d)
                    .is_some_and(|(s, bad)| *s == v.manifest.size && !bad)
                {
                    continue; // reported already
                }
                let bytes = self.read_blob(d, MAX_MANIFEST_SIZE);
                let why = match &bytes {
                    Err(e) => Some(hoist_types::error_chain(e)),
                    Ok(bytes) => match Manifest::parse(bytes, Some(&v.manifest.media_type)) {
                        Ok((Manifest::Image(m), _)) if m.config.digest != rec.id => {
                            Some(format!("it names config {}", m.config.digest))
                        }
                        Ok((Manifest::Image(m), _)) if m.layers != v.layers => {
                            Some("its layers differ from the record's".to_owned())
                        }
                        Ok((Manifest::Image(_), _)) => None,
                        Ok(_) => Some("it is not an image manifest".to_owned()),
                        Err(e) => Some(hoist_types::error_chain(&e)),
                    },
                };
                if why.is_none()
                    && let Ok(bytes) = &bytes
                    && let Some(view) = crate::index::oci_view_bytes(bytes, &v.manifest.media_type)
                {
                    let want = Digest::sha256_of(&view);
                    let wrong = match rec.oci_view(d) {
                        None => Some("has no OCI view".to_owned()),
                        Some(x) if x.digest != want || x.size != view.len() as u64 => Some(
                            format!("has OCI view {} in its record, not {want}", x.digest),
                        ),
                        Some(x) => match sizes.get(&x.digest) {
                            None => Some(format!("has its OCI view {want} missing")),
                            Some((size, _)) if *size != x.size => {
                                Some(format!("has its OCI view {want} of the wrong size"))
                            }
                            Some((_, true)) => Some(format!("has its OCI view {want} corrupt")),
                            Some(_) => None,
                        },
                    };
                    if let Some(wrong) = wrong {
                        let who = match rec.names.first() {
                            Some(n) => format!("image {} ({n})", rec.id),
                            None => format!("image {}", rec.id),
                        };
                        views.push(ViewFix {
                            id: rec.id.clone(),
                            manifest: d.clone(),
                            bytes: view,
                            problem: Problem::new(
                                ProblemKind::OciView,
                                format!(
                                    "Docker manifest {d} of {who} {wrong}: skopeo and umoci cannot read it"
                                ),
                            )
                            .digest(d),
                        });
                    }
                }
                if let Some(why) = why {
                    out.push((
                        rec.id.clone(),
                        Problem::new(
                            ProblemKind::BrokenImage,
                            format!("manifest {d} of image {}: {why}", rec.id),
                        )
                        .digest(d),
                    ));
                }
            }
        }
        (out, views)
    }
}

fn mark_repaired(problems: &mut [Problem], path: &std::path::Path, what: &str) {
    for p in problems {
        if p.path.as_deref() == Some(path) {
            p.repaired = Some(what.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_types::{Descriptor, MediaType, Platform, Reference};

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn rec(config: &str, manifest: &str, layers: &[&str]) -> ImageRecord {
        ImageRecord {
            id: d(config),
            names: vec![Reference::parse("x").unwrap()],
            repo_digests: vec![],
            manifest: Descriptor::new(MediaType::OciManifest, d(manifest), 10),
            index: None,
            config_media_type: MediaType::OciConfig,
            config_size: 5,
            layers: layers
                .iter()
                .map(|l| Descriptor::new(MediaType::OciLayerGzip, d(l), 100))
                .collect(),
            diff_ids: layers.iter().map(|l| d(&format!("diff-{l}"))).collect(),
            chain_ids: vec![],
            platform: Platform::new("linux", "amd64", None),
            created: None,
            size: 0,
            added: String::new(),
            source: None,
            config_parent: None,
            manifests: vec![],
            targets: vec![],
            digest_refs: vec![],
            oci_views: vec![],
        }
    }

    #[test]
    fn blob_classification_table() {
        let r = rec("cfg", "man", &["l1"]);
        let marks = mark::mark(std::slice::from_ref(&r), &[], &[d("leased")].into());
        let fact = |name: &str, actual: Option<&str>| BlobFacts {
            digest: d(name),
            size: 1,
            actual: actual.map(d),
        };
        let cases: Vec<(BlobFacts, Option<ProblemKind>)> = vec![
            (fact("l1", Some("l1")), None),
            (fact("l1", None), None), // not hashed (appeared later): no verdict on content
            (fact("l1", Some("flipped")), Some(ProblemKind::CorruptBlob)),
            (fact("junk", Some("junk")), Some(ProblemKind::OrphanBlob)),
            (
                fact("junk", Some("flipped")),
                Some(ProblemKind::CorruptBlob),
            ),
            (fact("leased", Some("leased")), None),
            (fact("busy", Some("busy")), None),
        ];
        let busy: BTreeSet<Digest> = [d("busy")].into();
        for (f, want) in cases {
            let name = f.digest.clone();
            let got = classify_blobs(&[f], &marks, &busy);
            assert_eq!(got.first().map(|p| p.kind), want, "{name}");
            assert!(got.len() <= 1);
        }
    }

    #[test]
    fn image_classification_table() {
        let r = rec("cfg", "man", &["l1", "l2"]);
        let all_ok: HashMap<Digest, (u64, bool)> = [
            (d("cfg"), (5, false)),
            (d("man"), (10, false)),
            (d("l1"), (100, false)),
            (d("l2"), (100, false)),
        ]
        .into();
        type Change = Box<dyn Fn(&mut HashMap<Digest, (u64, bool)>)>;
        let cases: Vec<(&str, Change, Vec<ProblemKind>)> = vec![
            ("whole", Box::new(|_| {}), vec![]),
            (
                "missing layer",
                Box::new(|m| {
                    m.remove(&d("l2"));
                }),
                vec![ProblemKind::MissingBlob],
            ),
            (
                "missing config and manifest",
                Box::new(|m| {
                    m.remove(&d("cfg"));
                    m.remove(&d("man"));
                }),
                vec![ProblemKind::MissingBlob, ProblemKind::MissingBlob],
            ),
            (
                "short layer",
                Box::new(|m| {
                    m.insert(d("l1"), (99, false));
                }),
                vec![ProblemKind::WrongSize],
            ),
            (
                "corrupt layer",
                Box::new(|m| {
                    m.insert(d("l1"), (100, true));
                }),
                vec![ProblemKind::BrokenImage],
            ),
        ];
        for (name, change, want) in cases {
            let mut m = all_ok.clone();
            change(&mut m);
            let got: Vec<ProblemKind> = classify_images(std::slice::from_ref(&r), &m)
                .into_iter()
                .map(|(id, p)| {
                    assert_eq!(id, r.id);
                    assert!(p.detail.contains("image"), "{}", p.detail);
                    p.kind
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
