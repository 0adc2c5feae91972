//! Garbage collection: mark from the roots, sweep blobs, rootfs cache entries, stale
//! ingests, temp files and dead leases.
//!
//! The whole mark and sweep runs under the exclusive store lock, so no commit, tag,
//! removal or lease addition interleaves with it (see the `lease` module for why that
//! makes it safe against pulls, copies, loads and rootfs builds in other processes).
//! Rootfs entries are renamed out of sight under the lock and their trees deleted after
//! it is released. A rootfs entry (or a build's temp directory) whose lock a build
//! holds is left alone.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use hoist_types::{Digest, MAX_MANIFEST_SIZE};
use serde::Serialize;

use crate::fsutil::{self, LockMode};
use crate::mark::{self, Marks, PartialFacts};
use crate::rootfs::{self, RootfsKind};
use crate::{Store, StoreError};

/// How [`Store::gc`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GcOptions {
    /// Report what would go, remove nothing.
    pub dry_run: bool,
    /// Unreferenced blobs younger than this are kept (for writers that hold no lease).
    pub blob_grace: Duration,
    /// Resumable partial downloads unused for this long are removed (held ones never).
    pub ingest_grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            blob_grace: Duration::ZERO,
            ingest_grace: DEFAULT_INGEST_GRACE,
        }
    }
}

/// Blobs a failed operation withdraws ([`Store::withdraw_unreached`]) are kept as
/// complete partial downloads from this size on; smaller ones are removed.
pub const KEEP_AS_PARTIAL: u64 = 1024 * 1024;

/// Partial downloads younger than this survive a GC (a failed pull retried the same day
/// resumes).
pub const DEFAULT_INGEST_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A count and the bytes they occupy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Amount {
    /// How many.
    pub count: usize,
    /// Bytes on disk.
    pub bytes: u64,
}

impl Amount {
    pub(crate) fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }

    fn plus(self, o: Amount) -> Amount {
        Amount {
            count: self.count + o.count,
            bytes: self.bytes + o.bytes,
        }
    }
}

/// What a GC removed (or, dry, would remove), by kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Nothing was removed.
    pub dry_run: bool,
    /// Blobs no root reaches.
    pub blobs: Amount,
    /// Flattened rootfs entries no image needs.
    pub rootfs_flat: Amount,
    /// Per-layer rootfs entries no image needs.
    pub rootfs_layer: Amount,
    /// Stale partial downloads (and orphan records of them).
    pub ingests: Amount,
    /// Temp files and directories left by killed writers and builds.
    pub temp_files: Amount,
    /// Files of leases whose owner died.
    pub dead_leases: Amount,
    /// What stays: blobs.
    pub kept_blobs: Amount,
    /// What stays: rootfs entries.
    pub kept_rootfs: Amount,
    /// Live leases seen, and the digests they hold.
    pub live_leases: usize,
    /// Digests held by live leases.
    pub leased_digests: usize,
    /// Rootfs entries or temp dirs skipped because a build holds them.
    pub busy: usize,
    /// Each removed item.
    pub removed: Vec<GcItem>,
    /// Wall time, in milliseconds.
    pub elapsed_ms: u64,
}

impl GcReport {
    /// Everything removed.
    pub fn total(&self) -> Amount {
        self.blobs
            .plus(self.rootfs_flat)
            .plus(self.rootfs_layer)
            .plus(self.ingests)
            .plus(self.temp_files)
            .plus(self.dead_leases)
    }
}

/// One thing a GC removed.
#[derive(Debug, Clone, Serialize)]
pub struct GcItem {
    /// `blob`, `rootfs-flat`, `rootfs-layer`, `ingest`, `temp` or `lease`.
    pub kind: &'static str,
    /// Where it was.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: u64,
}

/// A blob file found in `blobs/`.
#[derive(Debug, Clone)]
pub(crate) struct BlobFile {
    pub digest: Digest,
    pub path: PathBuf,
    pub size: u64,
    pub age: Duration,
}

/// What `blobs/` holds.
#[derive(Debug, Default)]
pub(crate) struct BlobScan {
    pub blobs: Vec<BlobFile>,
    /// Temp files of ours (`.*.tmp`), with their age.
    pub temps: Vec<(PathBuf, u64, Duration)>,
    /// Anything else.
    pub strays: Vec<PathBuf>,
}

pub(crate) fn age_of(meta: &std::fs::Metadata, now: SystemTime) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or(Duration::ZERO)
}

impl Store {
    /// A handle on the same store without a lease (GC, fsck and df must not add to one
    /// while they hold the store lock).
    pub(crate) fn unleased(&self) -> Store {
        if self.inner.lease.is_none() {
            return self.clone();
        }
        Store {
            inner: std::sync::Arc::new(crate::Inner {
                root: self.root().to_owned(),
                read_only: self.inner.read_only,
                lease: None,
            }),
            downloads: None,
        }
    }

    /// List `blobs/`.
    pub(crate) fn scan_blobs(&self) -> Result<BlobScan, StoreError> {
        let mut scan = BlobScan::default();
        let now = SystemTime::now();
        let top = self.root().join("blobs");
        let algs = std::fs::read_dir(&top).map_err(|e| StoreError::read(&top, e))?;
        for alg in algs {
            let alg = alg.map_err(|e| StoreError::read(&top, e))?;
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            let dir = alg.path();
            if !alg.file_type().is_ok_and(|t| t.is_dir())
                || !["sha256", "sha512"].contains(&alg_name.as_str())
            {
                scan.strays.push(dir);
                continue;
            }
            let list = std::fs::read_dir(&dir).map_err(|e| StoreError::read(&dir, e))?;
            for item in list {
                let item = item.map_err(|e| StoreError::read(&dir, e))?;
                let path = item.path();
                let name = item.file_name().to_string_lossy().into_owned();
                let Ok(meta) = item.metadata() else { continue };
                let age = age_of(&meta, now);
                if name.starts_with('.') && name.ends_with(fsutil::TEMP_SUFFIX) && meta.is_file() {
                    scan.temps.push((path, meta.len(), age));
                    continue;
                }
                match Digest::parse(&format!("{alg_name}:{name}")) {
                    Ok(digest) if meta.is_file() => scan.blobs.push(BlobFile {
                        digest,
                        path,
                        size: meta.len(),
                        age,
                    }),
                    _ => scan.strays.push(path),
                }
            }
        }
        scan.blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(scan)
    }

    /// Whether a writer holds the blob's lock (without creating a lock file).
    pub(crate) fn blob_busy(&self, d: &Digest) -> bool {
        let path = self
            .locks_dir()
            .join(format!("blob-{}-{}.lock", d.algorithm(), d.hex()));
        match std::fs::File::open(&path) {
            Ok(f) => f.try_lock_shared().is_err(),
            Err(_) => false,
        }
    }

    /// Mark from every root. Call with the store lock held exclusively.
    pub(crate) fn mark_locked(
        &self,
        records: &[crate::ImageRecord],
    ) -> Result<(Marks, crate::lease::LeaseScan), StoreError> {
        self.mark_locked_except(records, None)
    }

    /// [`Store::mark_locked`] without the lease file `except` among the roots.
    fn mark_locked_except(
        &self,
        records: &[crate::ImageRecord],
        except: Option<&std::path::Path>,
    ) -> Result<(Marks, crate::lease::LeaseScan), StoreError> {
        let idx = self.read_index()?;
        // hoist's own entries are a projection of the records; only the others (written
        // by skopeo, umoci, …) are roots of their own.
        let roots: Vec<_> = idx
            .descriptors()
            .into_iter()
            .filter(|(_, ours)| !ours)
            .map(|(d, _)| d)
            .collect();
        let foreign = mark::reach(&roots, |d| {
            self.read_blob(&d.digest, MAX_MANIFEST_SIZE).ok()
        });
        let leases = self.scan_leases_except(except)?;
        Ok((mark::mark(records, &foreign, &leases.digests), leases))
    }

    /// Collect garbage (see the module docs of `gc`): blobs no image, name, `index.json`
    /// entry or lease reaches; rootfs cache entries no image needs; partial downloads
    /// unused for [`GcOptions::ingest_grace`] or whose blob is stored; temp files of
    /// killed writers; files of dead leases. Returns what went, by kind, in bytes.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport, StoreError> {
        let start = Instant::now();
        let s = self.unleased();
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        let mut doomed_trees: Vec<(PathBuf, &'static str)> = Vec::new();
        {
            let _lock = s.lock_store(LockMode::Exclusive)?;
            let records = s.snapshot()?;
            if !opts.dry_run {
                // Bring index.json in line with the records first (after a crash); only
                // when it differs, so a GC on a full disk needs no space.
                let current = s.read_index()?;
                let projected = crate::index::project(s.read_index()?, &records);
                if projected.to_bytes() != current.to_bytes() {
                    s.write_index_file(&projected)?;
                }
            }
            let (marks, leases) = s.mark_locked(&records)?;
            report.live_leases = leases.live;
            report.leased_digests = leases.digests.len();
            s.sweep_blobs(&marks, opts, &mut report)?;
            s.sweep_rootfs(&marks, opts, &mut report, &mut doomed_trees)?;
            s.sweep_ingest(opts, &mut report, &leases)?;
            s.sweep_temps(opts, &mut report, &leases)?;
        }
        for (path, _) in &doomed_trees {
            rootfs::remove_tree(path)?;
        }
        report.elapsed_ms = start.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Undo what a failed operation on this leased handle made visible: every blob its
    /// lease names that no image record, foreign `index.json` entry or *other* live lease
    /// reaches, and that no writer holds, leaves `blobs/`. Blobs of at least
    /// [`KEEP_AS_PARTIAL`] bytes go back to the ingest area as complete partial downloads
    /// (the next pull of them re-hashes and commits them without the network; GC collects
    /// them after the ingest grace), smaller ones are removed. So a failed pull leaves the
    /// store as it was, with its work kept where resumable downloads are kept. Returns the
    /// digests withdrawn. A no-op on a handle without a lease.
    pub fn withdraw_unreached(&self) -> Result<Vec<Digest>, StoreError> {
        let Some(own) = self.lease_path().map(std::path::Path::to_owned) else {
            return Ok(Vec::new());
        };
        let candidates = self.leased_digests();
        let s = self.unleased();
        let _lock = s.lock_store(LockMode::Exclusive)?;
        let records = s.snapshot()?;
        let (marks, _) = s.mark_locked_except(&records, Some(&own))?;
        let mut out = Vec::new();
        for d in candidates {
            if marks.blobs.contains(&d) {
                continue;
            }
            let Some(size) = s.stat_blob(&d)? else {
                continue;
            };
            let Some(_blob_lock) = s.try_lock_blob(&d)? else {
                continue; // someone is writing or checking it: theirs now
            };
            let path = s.blob_path(&d);
            if size >= KEEP_AS_PARTIAL {
                s.demote_to_partial(&d, &path, size)?;
            } else {
                fsutil::remove_if_exists(&path)?;
            }
            if let Some(dir) = path.parent() {
                fsutil::fsync_dir(dir)?;
            }
            out.push(d);
        }
        Ok(out)
    }

    fn remove_item(
        &self,
        opts: &GcOptions,
        report: &mut GcReport,
        kind: &'static str,
        path: PathBuf,
        bytes: u64,
    ) -> Result<(), StoreError> {
        if !opts.dry_run {
            fsutil::remove_if_exists(&path)?;
        }
        report.removed.push(GcItem { kind, path, bytes });
        Ok(())
    }

    fn sweep_blobs(
        &self,
        marks: &Marks,
        opts: &GcOptions,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let scan = self.scan_blobs()?;
        let mut dirs = std::collections::BTreeSet::new();
        for b in scan.blobs {
            let busy = !marks.blobs.contains(&b.digest) && self.blob_busy(&b.digest);
            if mark::keep_blob(marks, &b.digest, b.age, opts.blob_grace, busy) {
                report.kept_blobs.add(b.size);
                continue;
            }
            report.blobs.add(b.size);
            if let Some(p) = b.path.parent() {
                dirs.insert(p.to_owned());
            }
            self.remove_item(opts, report, "blob", b.path, b.size)?;
        }
        for (path, bytes, age) in scan.temps {
            if age >= crate::TEMP_MIN_AGE {
                report.temp_files.add(bytes);
                self.remove_item(opts, report, "temp", path, bytes)?;
            }
        }
        if !opts.dry_run {
            for d in dirs {
                fsutil::fsync_dir(&d)?;
            }
        }
        Ok(())
    }

    fn sweep_rootfs(
        &self,
        marks: &Marks,
        opts: &GcOptions,
        report: &mut GcReport,
        doomed: &mut Vec<(PathBuf, &'static str)>,
    ) -> Result<(), StoreError> {
        let scan = self.scan_rootfs()?;
        for e in scan.entries {
            let bytes = rootfs::tree_bytes(&e.dir);
            if e.broken.is_none() && mark::keep_rootfs(marks, e.kind, &e.key) {
                report.kept_rootfs.add(bytes);
                continue;
            }
            let kind = match e.kind {
                RootfsKind::Flat => "rootfs-flat",
                RootfsKind::Layer => "rootfs-layer",
            };
            if !opts.dry_run {
                match self.retire_rootfs(&e.dir, &e.lock_name())? {
                    Some(p) => doomed.push((p, kind)),
                    None => {
                        report.busy += 1;
                        continue;
                    }
                }
            }
            match e.kind {
                RootfsKind::Flat => report.rootfs_flat.add(bytes),
                RootfsKind::Layer => report.rootfs_layer.add(bytes),
            }
            report.removed.push(GcItem {
                kind,
                path: e.dir,
                bytes,
            });
        }
        for (path, lock) in scan.temps {
            let bytes = rootfs::tree_bytes(&path);
            if opts.dry_run {
                if self.try_lock_named(&lock)?.is_none() {
                    report.busy += 1;
                    continue;
                }
            } else {
                match self.retire_rootfs(&path, &lock)? {
                    Some(p) => doomed.push((p, "temp")),
                    None => {
                        report.busy += 1;
                        continue;
                    }
                }
            }
            report.temp_files.add(bytes);
            report.removed.push(GcItem {
                kind: "temp",
                path,
                bytes,
            });
        }
        if !opts.dry_run && !doomed.is_empty() {
            fsutil::fsync_dir(&self.rootfs_dir())?;
        }
        Ok(())
    }

    fn sweep_ingest(
        &self,
        opts: &GcOptions,
        report: &mut GcReport,
        leases: &crate::lease::LeaseScan,
    ) -> Result<(), StoreError> {
        let now = SystemTime::now();
        for p in self.partial_blobs()? {
            // A leased digest is a download in flight, or about to start: its process
            // leased it (under the shared store lock) before creating the partial, and
            // locks the file only after creating it. Neither probed nor removed, so this
            // GC can neither delete a file just created nor hold the lock the download is
            // about to take.
            if leases.digests.contains(&p.digest) {
                continue;
            }
            let locked = match std::fs::File::open(&p.path) {
                Ok(f) => f.try_lock().is_err(),
                Err(_) => continue,
            };
            let facts = PartialFacts {
                locked,
                blob_present: self.stat_blob(&p.digest)?.is_some(),
                has_meta: p.size.is_some(),
                age: p
                    .modified
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or(Duration::ZERO),
            };
            if mark::partial_verdict(facts, opts.ingest_grace).is_none() {
                continue;
            }
            report.ingests.add(p.file_len);
            let meta = crate::partial::meta_path(&p.path);
            if !opts.dry_run {
                fsutil::remove_if_exists(&meta)?;
            }
            self.remove_item(opts, report, "ingest", p.path, p.file_len)?;
        }
        for path in self.orphan_partial_records()? {
            report.ingests.add(0);
            self.remove_item(opts, report, "ingest", path, 0)?;
        }
        Ok(())
    }

    /// Temp files of killed writers: in `hoist/ingest` (unlocked), and the metadata temp
    /// files the store lock protects; and files of dead leases.
    fn sweep_temps(
        &self,
        opts: &GcOptions,
        report: &mut GcReport,
        leases: &crate::lease::LeaseScan,
    ) -> Result<(), StoreError> {
        for (path, bytes) in self.dead_temp_files()? {
            report.temp_files.add(bytes);
            self.remove_item(opts, report, "temp", path, bytes)?;
        }
        for (path, bytes) in &leases.dead {
            report.dead_leases.add(*bytes);
            self.remove_item(opts, report, "lease", path.clone(), *bytes)?;
        }
        Ok(())
    }

    /// Temp files whose writer is gone. Call with the store lock held exclusively: the
    /// metadata temp files (root, `hoist/`, `hoist/images/`) are then all dead; those in
    /// `hoist/ingest/` are dead when unlocked and at least a minute old.
    pub(crate) fn dead_temp_files(&self) -> Result<Vec<(PathBuf, u64)>, StoreError> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        let is_temp = |n: &str| n.starts_with('.') && n.ends_with(fsutil::TEMP_SUFFIX);
        for (dir, check_lock) in [
            (self.root().to_owned(), false),
            (self.hoist_dir(), false),
            (self.images_dir(), false),
            (self.ingest_dir(), true),
        ] {
            let Ok(list) = std::fs::read_dir(&dir) else {
                continue;
            };
            for item in list.flatten() {
                let name = item.file_name();
                if !name.to_str().is_some_and(is_temp) {
                    continue;
                }
                let Ok(meta) = item.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                if check_lock {
                    if age_of(&meta, now) < crate::TEMP_MIN_AGE {
                        continue;
                    }
                    let Ok(f) = std::fs::File::open(item.path()) else {
                        continue;
                    };
                    if f.try_lock().is_err() {
                        continue;
                    }
                }
                out.push((item.path(), meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }
}
