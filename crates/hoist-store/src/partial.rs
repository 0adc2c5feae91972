//! Resumable downloads: a blob's partial content kept in `hoist/ingest/` across runs.
//!
//! ```text
//! hoist/ingest/
//!   partial-<alg>-<hex>         the bytes received so far; the first `offset` are valid
//!                               (anything after them is discarded on reopen)
//!   partial-<alg>-<hex>.meta    a fixed 512-byte record, JSON padded with spaces:
//!                               {"v":1,"digest":"<alg>:<hex>","size":N,"offset":M}
//!                               rewritten in place by one pwrite after the data it
//!                               counts was written, so a kill never tears it
//! ```
//!
//! The holder of [`Store::lock_blob`] for the digest is the only writer; the data file is
//! also `flock`ed while open, so cleaning never removes a partial in use. Reopening
//! re-hashes the valid prefix once and continues: bytes are hashed once per run.
//! Nothing here is visible as a blob until [`PartialBlob::commit`] has checked size and
//! digest, fsynced, renamed into `blobs/`, and fsynced the directory.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hoist_types::{Digest, Hasher};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::{Store, StoreError};

/// Partial downloads untouched for this long, and held by no process, are removed by
/// [`Store::clean_partials`] (which `hoist gc` and [`Store::open`] call).
pub const PARTIAL_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Size of the `.meta` record.
const META_LEN: usize = 512;
/// Appended bytes are written (and the record updated) in pieces of this size.
const FLUSH_EVERY: usize = 1024 * 1024;
/// An appended piece at least this large, with nothing pending before it, is written
/// as it is instead of being gathered first (a network read on a fast link is ~400 KiB:
/// gathering it would copy every byte once more).
const DIRECT_WRITE: usize = 64 * 1024;
/// Read size when re-hashing.
const READ_BLOCK: usize = 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    v: u32,
    digest: Digest,
    size: u64,
    offset: u64,
}

/// A partial download found in the ingest area ([`Store::partial_blobs`]).
#[derive(Debug, Clone)]
pub struct PartialInfo {
    /// The blob it is for.
    pub digest: Digest,
    /// The blob's size, as recorded (`None` when the record is missing or unreadable).
    pub size: Option<u64>,
    /// Valid bytes kept.
    pub offset: u64,
    /// The data file.
    pub path: PathBuf,
    /// Bytes the data file occupies.
    pub file_len: u64,
    /// Last modification.
    pub modified: Option<SystemTime>,
}

/// A blob being downloaded into a kept, resumable file (see the module docs). Bytes are
/// either appended in order ([`append`](Self::append): written and hashed in one pass) or
/// written at any position by [`SliceWriter`]s and then hashed in order
/// ([`hash_through`](Self::hash_through)). Dropped without commit, it keeps what it has
/// (and removes its files when that is nothing).
#[derive(Debug)]
pub struct PartialBlob {
    data: File,
    meta: File,
    data_path: PathBuf,
    meta_path: PathBuf,
    dest: PathBuf,
    digest: Digest,
    size: u64,
    hasher: Hasher,
    /// Valid, hashed bytes (including `pending`).
    offset: u64,
    /// Appended bytes not yet written to the file; they end at `offset`.
    pending: Vec<u8>,
    /// The offset the record on disk says.
    recorded: u64,
    /// Valid bytes found when opened.
    resumed: u64,
    done: bool,
}

/// Writes pieces of a [`PartialBlob`] at their positions, from any thread.
#[derive(Debug)]
pub struct SliceWriter {
    file: File,
    path: PathBuf,
}

impl SliceWriter {
    /// Write `buf` at `pos` of the blob.
    pub fn write_at(&self, pos: u64, buf: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all_at(buf, pos)
            .map_err(|e| StoreError::io("write", &self.path, e))
    }
}

impl Store {
    fn partial_paths(&self, d: &Digest) -> (PathBuf, PathBuf) {
        let data = self
            .ingest_dir()
            .join(format!("partial-{}-{}", d.algorithm(), d.hex()));
        let meta = meta_path(&data);
        (data, meta)
    }

    /// Open the partial download of blob `d` of `size` bytes, creating it when there is
    /// none. The caller must hold [`Store::lock_blob`] for `d`. A kept partial whose
    /// record is missing, invalid or for another size is started afresh; a valid one is
    /// re-hashed up to its offset (its bytes are checked again by the digest at commit).
    pub fn open_partial(&self, d: &Digest, size: u64) -> Result<PartialBlob, StoreError> {
        self.protect([d])?;
        let (data_path, _) = self.partial_paths(d);
        PartialBlob::open_at(data_path, self.blob_path(d), d, size)
    }

    /// The partial download of `d` in the ingest area, if there is one: its record's size
    /// and valid offset, and its data file. The first `offset` bytes of the data file
    /// were written before the record counted them, so a reader (`hoist serve
    /// --pull-through` streaming a download in progress) may read them; they are
    /// unverified until the blob is published.
    pub fn partial_of(&self, d: &Digest) -> Result<Option<PartialInfo>, StoreError> {
        let (path, meta) = self.partial_paths(d);
        let m = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::read(path, e)),
        };
        let valid = File::open(&meta)
            .ok()
            .and_then(|f| read_meta(&f))
            .filter(|m| &m.digest == d);
        Ok(Some(PartialInfo {
            size: valid.as_ref().map(|m| m.size),
            offset: valid.map(|m| m.offset.min(m.size)).unwrap_or(0),
            digest: d.clone(),
            path,
            file_len: m.len(),
            modified: m.modified().ok(),
        }))
    }

    /// The partial download of `d` opened for reading while it grows ([`PartialReader`]:
    /// its data file and record kept open), if there is one.
    pub fn open_partial_reader(&self, d: &Digest) -> Result<Option<PartialReader>, StoreError> {
        let (path, meta) = self.partial_paths(d);
        let open = |p: &Path| match File::open(p) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::read(p.to_path_buf(), e)),
        };
        let (Some(data), Some(meta)) = (open(&path)?, open(&meta)?) else {
            return Ok(None);
        };
        Ok(Some(PartialReader {
            data,
            meta,
            digest: d.clone(),
        }))
    }

    /// The partial downloads in the ingest area, for fsck, df and gc.
    pub fn partial_blobs(&self) -> Result<Vec<PartialInfo>, StoreError> {
        let dir = self.ingest_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::read(dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::read(&dir, e))?;
            let name = entry.file_name();
            let Some(digest) = name.to_str().and_then(partial_digest) else {
                continue;
            };
            let path = entry.path();
            let Ok(m) = entry.metadata() else { continue };
            let meta = File::open(meta_path(&path))
                .ok()
                .and_then(|f| read_meta(&f));
            let valid = meta.filter(|m| m.digest == digest);
            out.push(PartialInfo {
                size: valid.as_ref().map(|m| m.size),
                offset: valid.map(|m| m.offset.min(m.size)).unwrap_or(0),
                digest,
                path,
                file_len: m.len(),
                modified: m.modified().ok(),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Remove partial downloads not modified for `older_than` and held by no process,
    /// and records whose data file is gone. Returns how many were removed and the bytes
    /// freed.
    pub fn clean_partials(&self, older_than: Duration) -> Result<(usize, u64), StoreError> {
        let now = SystemTime::now();
        let (mut count, mut bytes) = (0, 0);
        for p in self.partial_blobs()? {
            let age = p
                .modified
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or(Duration::ZERO);
            if age < older_than {
                continue;
            }
            let Ok(f) = File::open(&p.path) else { continue };
            if f.try_lock().is_err() {
                continue;
            }
            fsutil::remove_if_exists(&meta_path(&p.path))?;
            fsutil::remove_if_exists(&p.path)?;
            count += 1;
            bytes += p.file_len;
        }
        for path in self.orphan_partial_records()? {
            fsutil::remove_if_exists(&path)?;
        }
        Ok((count, bytes))
    }

    /// Turn the stored blob `d` (at `blob`, `size` bytes) back into a complete partial
    /// download: its file is renamed into the ingest area with a record that counts every
    /// byte, so the next download of `d` re-hashes it and commits it without the network,
    /// and GC collects it after its grace like any kept partial. When a partial of `d`
    /// already exists the blob is removed instead. The caller holds the blob's lock and
    /// the exclusive store lock, and has checked that nothing reaches `d`.
    pub(crate) fn demote_to_partial(
        &self,
        d: &Digest,
        blob: &Path,
        size: u64,
    ) -> Result<(), StoreError> {
        let (data_path, meta_path) = self.partial_paths(d);
        if data_path.exists() || meta_path.exists() {
            return fsutil::remove_if_exists(blob);
        }
        fsutil::create_dir(&self.ingest_dir())?;
        let m = Meta {
            v: 1,
            digest: d.clone(),
            size,
            offset: size,
        };
        let mut rec = serde_json::to_vec(&m).expect("plain struct serializes");
        rec.resize(META_LEN, b' ');
        fsutil::write_atomic(&meta_path, &rec)?;
        fs::rename(blob, &data_path).map_err(|e| StoreError::io("rename into", &data_path, e))?;
        fsutil::fsync_dir(&self.ingest_dir())
    }

    /// Records (`.meta`) of partial downloads whose data file is gone.
    pub(crate) fn orphan_partial_records(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut out = Vec::new();
        if let Ok(entries) = fs::read_dir(self.ingest_dir()) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".meta")) else {
                    continue;
                };
                if partial_digest(stem).is_some() && !e.path().with_file_name(stem).exists() {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

pub(crate) fn meta_path(data: &Path) -> PathBuf {
    let mut s = data.as_os_str().to_owned();
    s.push(".meta");
    PathBuf::from(s)
}

/// `partial-<alg>-<hex>` → the digest.
fn partial_digest(name: &str) -> Option<Digest> {
    let rest = name.strip_prefix("partial-")?;
    let (alg, hex) = rest.split_once('-')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

fn read_meta(f: &File) -> Option<Meta> {
    let mut buf = [0u8; META_LEN];
    let n = f.read_at(&mut buf, 0).ok()?;
    let m: Meta = serde_json::from_slice(buf[..n].trim_ascii()).ok()?;
    (m.v == 1).then_some(m)
}

/// A partial download read while it is written (`hoist serve --pull-through` streams a
/// blob from it): the data file and its record stay open, so following the download
/// costs a positioned read of each, not an open per look. The data file keeps being the
/// same file when the blob is published (renamed into `blobs/`), and the record's last
/// state stays readable after it is removed. The bytes are unverified until the blob is
/// published: a reader hashes what it reads.
#[derive(Debug)]
pub struct PartialReader {
    data: File,
    meta: File,
    digest: Digest,
}

impl PartialReader {
    /// The record's blob size and valid offset, read now (`None` when the record is
    /// unreadable, or for another blob).
    pub fn valid(&self) -> Option<(u64, u64)> {
        read_meta(&self.meta)
            .filter(|m| m.digest == self.digest)
            .map(|m| (m.size, m.offset.min(m.size)))
    }

    /// The data file, for positioned reads below the valid offset.
    pub fn data(&self) -> &File {
        &self.data
    }

    /// Whether the data file was removed (a failed download discarded): its bytes will
    /// not grow any more; a new download writes a new file.
    pub fn removed(&self) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        self.data.metadata().is_ok_and(|m| m.nlink() == 0)
    }
}

impl PartialBlob {
    /// Open (or create) a partial download kept at `data_path` (its record beside it,
    /// `data_path` + `.meta`) for blob `d` of `size` bytes, published at `dest` by
    /// [`commit`](Self::commit). What [`Store::open_partial`] does in the store's ingest
    /// area, for another place (an OCI layout's or a `dir:` layout's resumable copies);
    /// `data_path`'s directory must exist and be on `dest`'s filesystem. The data file is
    /// `flock`ed while open: a second opener gets an error instead of sharing it.
    pub fn open_at(
        data_path: PathBuf,
        dest: PathBuf,
        d: &Digest,
        size: u64,
    ) -> Result<PartialBlob, StoreError> {
        let meta_path = meta_path(&data_path);
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
                .map_err(|e| StoreError::io("open", p, e))
        };
        let data = open(&data_path)?;
        data.try_lock().map_err(|e| {
            StoreError::io(
                "lock (another process is writing this partial download)",
                &data_path,
                io::Error::from(e),
            )
        })?;
        let meta = open(&meta_path)?;
        let len = data
            .metadata()
            .map_err(|e| StoreError::read(&data_path, e))?
            .len();
        let offset = match read_meta(&meta) {
            Some(m) if &m.digest == d && m.size == size && m.offset <= len && m.offset <= size => {
                m.offset
            }
            _ => 0,
        };
        data.set_len(offset)
            .map_err(|e| StoreError::io("truncate", &data_path, e))?;
        let mut hasher = Hasher::new(d.algorithm());
        let mut buf = vec![0u8; READ_BLOCK];
        let mut pos = 0;
        while pos < offset {
            let n = ((offset - pos) as usize).min(READ_BLOCK);
            data.read_exact_at(&mut buf[..n], pos)
                .map_err(|e| StoreError::read(&data_path, e))?;
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        let mut p = PartialBlob {
            data,
            meta,
            data_path,
            meta_path,
            dest,
            digest: d.clone(),
            size,
            hasher,
            offset,
            pending: Vec::new(),
            recorded: offset,
            resumed: offset,
            done: false,
        };
        p.write_meta()?;
        Ok(p)
    }
}

impl PartialBlob {
    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Valid, hashed bytes so far: where the download goes on.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Valid bytes found on disk when opened (kept by an earlier, interrupted run).
    pub fn resumed_from(&self) -> u64 {
        self.resumed
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.data_path
    }

    /// Append `buf` at [`offset`](Self::offset): hashed now, written in pieces of at
    /// least 64 KiB (smaller ones gathered up to 1 MiB), the record updated after each
    /// MiB. More bytes than the blob's size is an error.
    pub fn append(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        if self.offset + buf.len() as u64 > self.size {
            return Err(StoreError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: self.offset + buf.len() as u64,
            });
        }
        self.hasher.update(buf);
        if self.pending.is_empty() && buf.len() >= DIRECT_WRITE {
            self.data
                .write_all_at(buf, self.offset)
                .map_err(|e| StoreError::io("write", &self.data_path, e))?;
            self.offset += buf.len() as u64;
            if self.offset - self.recorded >= FLUSH_EVERY as u64 {
                self.write_meta()?;
            }
        } else {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(FLUSH_EVERY);
            }
            self.offset += buf.len() as u64;
            self.pending.extend_from_slice(buf);
            if self.pending.len() >= FLUSH_EVERY {
                self.checkpoint()?;
            }
        }
        Ok(())
    }

    /// Write what is pending and record the offset.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            let at = self.offset - self.pending.len() as u64;
            self.data
                .write_all_at(&self.pending, at)
                .map_err(|e| StoreError::io("write", &self.data_path, e))?;
            self.pending.clear();
        }
        self.write_meta()
    }

    fn write_meta(&mut self) -> Result<(), StoreError> {
        let m = Meta {
            v: 1,
            digest: self.digest.clone(),
            size: self.size,
            offset: self.offset,
        };
        let mut rec = serde_json::to_vec(&m).expect("plain struct serializes");
        rec.resize(META_LEN, b' ');
        self.meta
            .write_all_at(&rec, 0)
            .map_err(|e| StoreError::io("write", &self.meta_path, e))?;
        self.recorded = self.offset;
        Ok(())
    }

    /// Forget every byte and start the blob from 0 (a server answered a resume with the
    /// whole blob, or the kept bytes failed the digest).
    pub fn restart(&mut self) -> Result<(), StoreError> {
        self.pending.clear();
        self.hasher = Hasher::new(self.digest.algorithm());
        self.offset = 0;
        self.data
            .set_len(0)
            .map_err(|e| StoreError::io("truncate", &self.data_path, e))?;
        self.write_meta()
    }

    /// A writer for pieces at arbitrary positions (parallel ranges). Bytes it writes
    /// count only once [`hash_through`](Self::hash_through) has hashed them.
    pub fn slice_writer(&mut self) -> Result<SliceWriter, StoreError> {
        self.checkpoint()?;
        Ok(SliceWriter {
            file: self
                .data
                .try_clone()
                .map_err(|e| StoreError::io("open", &self.data_path, e))?,
            path: self.data_path.clone(),
        })
    }

    /// Hash the bytes written by [`SliceWriter`]s from [`offset`](Self::offset) up to
    /// `end`, in order, reading them back; they become valid and the record is updated.
    pub fn hash_through(&mut self, end: u64) -> Result<(), StoreError> {
        self.checkpoint()?;
        let end = end.min(self.size);
        let mut buf = vec![0u8; READ_BLOCK.min((end.saturating_sub(self.offset)) as usize)];
        while self.offset < end {
            let n = ((end - self.offset) as usize).min(buf.len());
            self.data
                .read_exact_at(&mut buf[..n], self.offset)
                .map_err(|e| StoreError::read(&self.data_path, e))?;
            self.hasher.update(&buf[..n]);
            self.offset += n as u64;
        }
        self.write_meta()
    }

    /// Check size and digest; fsync; rename into `blobs/<alg>/<hex>`; fsync that
    /// directory; remove the record. On a mismatch the partial is removed (its bytes are
    /// wrong) and nothing becomes visible. If the blob appeared meanwhile, the partial is
    /// just removed.
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.done = true;
        let result = self.finish();
        if result.is_err() {
            let _ = fsutil::remove_if_exists(&self.data_path);
        }
        let _ = fsutil::remove_if_exists(&self.meta_path);
        result
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        self.checkpoint()?;
        if self.offset != self.size {
            return Err(StoreError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: self.offset,
            });
        }
        let hasher = std::mem::replace(&mut self.hasher, Hasher::new(self.digest.algorithm()));
        let actual = hasher.finish();
        if actual != self.digest {
            return Err(StoreError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        self.data
            .sync_all()
            .map_err(|e| StoreError::io("fsync", &self.data_path, e))?;
        if fs::symlink_metadata(&self.dest).is_ok_and(|m| m.is_file()) {
            return fsutil::remove_if_exists(&self.data_path);
        }
        fs::rename(&self.data_path, &self.dest)
            .map_err(|e| StoreError::io("rename into", &self.dest, e))?;
        fsutil::fsync_dir(self.dest.parent().unwrap_or(Path::new(".")))
    }

    /// Remove the partial: its bytes are of no use.
    pub fn discard(mut self) {
        self.done = true;
        self.pending.clear();
        let _ = fsutil::remove_if_exists(&self.data_path);
        let _ = fsutil::remove_if_exists(&self.meta_path);
    }
}

impl Drop for PartialBlob {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.offset == 0 {
            // Nothing to resume from: leave nothing behind.
            let _ = fsutil::remove_if_exists(&self.data_path);
            let _ = fsutil::remove_if_exists(&self.meta_path);
        } else {
            // Keep what arrived for the next run (best effort: a failed write only
            // means less to resume from).
            let _ = self.checkpoint();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join("s")).unwrap();
        (d, s)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn resume_across_opens_then_commit() {
        let (_d, s) = store();
        let bytes = data(3 * FLUSH_EVERY + 123);
        let dg = Digest::sha256_of(&bytes);
        let size = bytes.len() as u64;
        {
            let mut p = s.open_partial(&dg, size).unwrap();
            assert_eq!(p.offset(), 0);
            p.append(&bytes[..2 * FLUSH_EVERY + 5]).unwrap();
            // Dropped: kept.
        }
        let info = s.partial_blobs().unwrap();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].offset, 2 * FLUSH_EVERY as u64 + 5);
        let mut p = s.open_partial(&dg, size).unwrap();
        assert_eq!(p.resumed_from(), 2 * FLUSH_EVERY as u64 + 5);
        p.append(&bytes[p.offset() as usize..]).unwrap();
        assert!(s.has_blob(&dg).unwrap().is_none(), "nothing visible yet");
        p.commit().unwrap();
        assert_eq!(s.read_blob(&dg, u64::MAX).unwrap(), bytes);
        assert!(s.partial_blobs().unwrap().is_empty());
        assert_eq!(fs::read_dir(s.ingest_dir()).unwrap().count(), 0);
    }

    #[test]
    fn large_and_small_appends_mixed_keep_order_and_resume() {
        let (_d, s) = store();
        let bytes = data(3 * FLUSH_EVERY + 777);
        let dg = Digest::sha256_of(&bytes);
        let size = bytes.len() as u64;
        // Written as they come (>= 64 KiB with nothing pending), gathered (small), a large
        // one after small ones (gathered behind them), then large ones again.
        let cuts = [300_000, 10, 5_000, 400_000, 70_000, 900_000, 1_200_000];
        let mut at = 0;
        {
            let mut p = s.open_partial(&dg, size).unwrap();
            for n in cuts {
                p.append(&bytes[at..at + n]).unwrap();
                at += n;
            }
            assert_eq!(p.offset(), at as u64);
            // Dropped: what was appended is written and recorded.
        }
        let mut p = s.open_partial(&dg, size).unwrap();
        assert_eq!(p.resumed_from(), at as u64);
        p.append(&bytes[at..]).unwrap();
        p.commit().unwrap();
        assert_eq!(s.read_blob(&dg, u64::MAX).unwrap(), bytes);
    }

    #[test]
    fn a_record_for_another_size_or_longer_than_the_data_restarts() {
        let (_d, s) = store();
        let bytes = data(1000);
        let dg = Digest::sha256_of(&bytes);
        let mut p = s.open_partial(&dg, 1000).unwrap();
        p.append(&bytes[..600]).unwrap();
        drop(p);
        assert_eq!(s.open_partial(&dg, 999).unwrap().offset(), 0);
        let mut p = s.open_partial(&dg, 1000).unwrap();
        p.append(&bytes[..600]).unwrap();
        drop(p);
        // Data cut shorter than the record (a crash of the machine): start again.
        let (data_path, _) = s.partial_paths(&dg);
        File::options()
            .write(true)
            .open(&data_path)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert_eq!(s.open_partial(&dg, 1000).unwrap().offset(), 0);
    }

    #[test]
    fn wrong_kept_bytes_fail_the_digest_and_are_removed() {
        let (_d, s) = store();
        let bytes = data(5000);
        let dg = Digest::sha256_of(&bytes);
        let mut p = s.open_partial(&dg, 5000).unwrap();
        p.append(&bytes[..4000]).unwrap();
        drop(p);
        let (data_path, _) = s.partial_paths(&dg);
        File::options()
            .write(true)
            .open(&data_path)
            .unwrap()
            .write_all_at(b"XX", 100)
            .unwrap();
        let mut p = s.open_partial(&dg, 5000).unwrap();
        p.append(&bytes[4000..]).unwrap();
        let e = p.commit().unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
        assert!(s.has_blob(&dg).unwrap().is_none());
        assert!(s.partial_blobs().unwrap().is_empty());
    }

    #[test]
    fn slices_in_any_order_then_hash_in_order() {
        let (_d, s) = store();
        let bytes = data(10_000);
        let dg = Digest::sha256_of(&bytes);
        let mut p = s.open_partial(&dg, 10_000).unwrap();
        p.append(&bytes[..1000]).unwrap();
        let w = p.slice_writer().unwrap();
        w.write_at(6000, &bytes[6000..]).unwrap();
        w.write_at(1000, &bytes[1000..6000]).unwrap();
        p.hash_through(6000).unwrap();
        assert_eq!(p.offset(), 6000);
        p.hash_through(10_000).unwrap();
        p.commit().unwrap();
        assert_eq!(s.read_blob(&dg, u64::MAX).unwrap(), bytes);
    }

    #[test]
    fn an_empty_partial_leaves_nothing_behind() {
        let (_d, s) = store();
        let dg = Digest::sha256_of(b"x");
        drop(s.open_partial(&dg, 1).unwrap());
        assert_eq!(fs::read_dir(s.ingest_dir()).unwrap().count(), 0);
    }

    #[test]
    fn restart_forgets_everything_and_limits_hold() {
        let (_d, s) = store();
        let bytes = data(100);
        let dg = Digest::sha256_of(&bytes);
        let mut p = s.open_partial(&dg, 100).unwrap();
        p.append(b"garbage").unwrap();
        p.restart().unwrap();
        assert_eq!(p.offset(), 0);
        assert!(p.append(&[0u8; 101]).is_err(), "longer than the blob");
        p.append(&bytes).unwrap();
        p.commit().unwrap();
        assert_eq!(s.read_blob(&dg, 100).unwrap(), bytes);
    }

    #[test]
    fn a_partial_in_use_is_neither_opened_twice_nor_cleaned() {
        let (_d, s) = store();
        let dg = Digest::sha256_of(b"xy");
        let mut p = s.open_partial(&dg, 2).unwrap();
        p.append(b"x").unwrap();
        assert!(s.open_partial(&dg, 2).is_err());
        assert_eq!(s.clean_partials(Duration::ZERO).unwrap().0, 0);
        drop(p);
        assert_eq!(s.clean_partials(Duration::from_secs(3600)).unwrap().0, 0);
        assert_eq!(s.clean_partials(Duration::ZERO).unwrap().0, 1);
        assert_eq!(fs::read_dir(s.ingest_dir()).unwrap().count(), 0);
    }
}
