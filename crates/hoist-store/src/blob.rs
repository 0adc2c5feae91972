//! Blobs: verified streaming writes, atomic publication, reads and per-digest locks.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hoist_types::{Digest, Hasher};

use crate::fsutil::{self, LockMode};
use crate::{Store, StoreError};

/// Temp files in `hoist/ingest` older than this, and locked by no live process, are
/// removed when a store is opened.
pub const INGEST_GRACE: Duration = Duration::from_secs(3600);

const WRITE_BUFFER: usize = 256 * 1024;

impl Store {
    /// Where the blob `d` lives (or would live): `ROOT/blobs/<alg>/<hex>`.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root()
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// `Some(size)` if the blob is present. On a leased handle ([`Store::leased`]) the
    /// digest is added to the lease first, so a blob found present stays present.
    pub fn has_blob(&self, d: &Digest) -> Result<Option<u64>, StoreError> {
        self.protect([d])?;
        self.stat_blob(d)
    }

    /// `Some(size)` if the blob is present, without touching a lease.
    pub(crate) fn stat_blob(&self, d: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(d);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::read(path, e)),
        }
    }

    /// Open a blob for reading (on a leased handle, leased first). Its content is not
    /// verified here.
    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        self.protect([d])?;
        let path = self.blob_path(d);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound {
                    digest: d.clone(),
                    path: path.clone(),
                }
            } else {
                StoreError::read(&path, e)
            }
        })
    }

    /// Read a whole blob of at most `limit` bytes and verify its digest. Reads at most
    /// `limit + 1` bytes whatever the file's size.
    pub fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let f = self.open_blob(d)?;
        let mut buf = Vec::new();
        f.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| StoreError::read(self.blob_path(d), e))?;
        if buf.len() as u64 > limit {
            return Err(StoreError::TooLarge {
                digest: d.clone(),
                limit,
            });
        }
        let actual = d.compute_like(&buf);
        if &actual != d {
            return Err(StoreError::CorruptBlob {
                path: self.blob_path(d),
                expected: d.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    /// Start writing the blob `expected`. Bytes go to a temp file in `hoist/ingest` and are
    /// hashed as written; [`BlobWriter::commit`] verifies and publishes them.
    /// `expected_size`, when given, is checked too (in bytes). On a leased handle the
    /// digest is leased first.
    ///
    /// Several writers of one digest may run at once (the first commit wins, the others
    /// find the blob present); callers that want one download per blob take
    /// [`Store::lock_blob`] first.
    ///
    /// ```
    /// use std::io::Write as _;
    /// use hoist_store::{Store, StoreError};
    /// use hoist_types::Digest;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let digest = Digest::sha256_of(b"hello world");
    ///
    /// let mut w = store.blob_writer(&digest, Some(11))?;
    /// w.write_all(b"hello ")?;
    /// w.write_all(b"world")?;
    /// assert_eq!(w.written(), 11);
    /// w.commit()?;
    /// assert_eq!(store.has_blob(&digest)?, Some(11));
    ///
    /// // Bytes that do not hash to the digest never become visible.
    /// let other = Digest::sha256_of(b"something else");
    /// let mut w = store.blob_writer(&other, None)?;
    /// w.write_all(b"hello world")?;
    /// assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
    /// assert_eq!(store.has_blob(&other)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn blob_writer(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
    ) -> Result<BlobWriter, StoreError> {
        self.protect([expected])?;
        let dir = self.ingest_dir();
        let stem = format!("{}-{}", expected.algorithm(), expected.hex());
        let (file, temp) = fsutil::create_temp(&dir, &stem)?;
        // Held until the writer is gone, so `Store::open` elsewhere never removes a live
        // ingest file, however old.
        file.try_lock()
            .map_err(|e| StoreError::io("lock", &temp, io::Error::from(e)))?;
        Ok(BlobWriter {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            temp,
            dest: self.blob_path(expected),
            hasher: Some(Hasher::new(expected.algorithm())),
            expected: expected.clone(),
            expected_size,
            written: 0,
            actual: None,
        })
    }

    /// Store `bytes` as blob `expected`: verify, then publish atomically. A no-op when the
    /// blob is already present.
    pub fn put_blob(&self, expected: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if self.has_blob(expected)?.is_some() {
            return Ok(());
        }
        let actual = expected.compute_like(bytes);
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let mut w = self.blob_writer(expected, Some(bytes.len() as u64))?;
        w.write_all(bytes)
            .map_err(|e| StoreError::io("write", &w.temp, e))?;
        w.commit()
    }

    /// Take the exclusive ingest lock of blob `d` (`hoist/locks/blob-<alg>-<hex>.lock`),
    /// blocking until it is free. Used so that one process or task downloads a blob while
    /// the others wait and then find it present.
    pub fn lock_blob(&self, d: &Digest) -> Result<BlobLock, StoreError> {
        let path = self.blob_lock_path(d);
        let file = fsutil::lock_file(&path, LockMode::Exclusive)?;
        Ok(BlobLock { _file: file, path })
    }

    /// Like [`Store::lock_blob`] but without waiting: `None` when someone else holds it.
    pub fn try_lock_blob(&self, d: &Digest) -> Result<Option<BlobLock>, StoreError> {
        let path = self.blob_lock_path(d);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io("open lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(BlobLock { _file: file, path })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(StoreError::io("lock", &path, e)),
        }
    }

    /// Take the exclusive lock `hoist/locks/<name>.lock`, blocking until it is free.
    /// `name` is 1 to 200 characters of `[a-z0-9._-]`, not starting with `.` (so it
    /// cannot name another directory); anything else is refused.
    pub fn lock_named(&self, name: &str) -> Result<NamedLock, StoreError> {
        let path = self.named_lock_path(name)?;
        let file = fsutil::lock_file(&path, LockMode::Exclusive)?;
        Ok(NamedLock { _file: file, path })
    }

    /// Like [`Store::lock_named`] but without waiting: `None` when someone else holds it.
    pub fn try_lock_named(&self, name: &str) -> Result<Option<NamedLock>, StoreError> {
        let path = self.named_lock_path(name)?;
        let file = match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => return Err(StoreError::io("open lock file", &path, e)),
        };
        match file.try_lock() {
            Ok(()) => Ok(Some(NamedLock { _file: file, path })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(StoreError::io("lock", &path, e)),
        }
    }

    fn named_lock_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        let valid = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        let path = self.locks_dir().join(format!("{name}.lock"));
        if !valid {
            return Err(StoreError::io(
                "lock",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "invalid lock name"),
            ));
        }
        Ok(path)
    }

    fn blob_lock_path(&self, d: &Digest) -> PathBuf {
        self.locks_dir()
            .join(format!("blob-{}-{}.lock", d.algorithm(), d.hex()))
    }

    /// Remove temp files in `hoist/ingest` older than `grace` that no live process holds
    /// (a writer killed with `kill -9` leaves its temp file behind, unlocked). Returns how
    /// many were removed. [`Store::open`] does this with [`INGEST_GRACE`].
    pub fn clean_ingest(&self, grace: Duration) -> Result<usize, StoreError> {
        clean_temp_dir(&self.ingest_dir(), grace, true)
    }
}

/// Remove the store's temp files (`.*.tmp`) in `dir` older than `grace`. With `check_lock`, a file that some
/// open file description holds locked is kept.
pub(crate) fn clean_temp_dir(
    dir: &Path,
    grace: Duration,
    check_lock: bool,
) -> Result<usize, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::read(dir, e)),
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::read(dir, e))?;
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.starts_with('.') && n.ends_with(fsutil::TEMP_SUFFIX))
        {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        if age < grace {
            continue;
        }
        if check_lock {
            // A writer keeps its temp file locked; if we get the lock, nobody uses it.
            let Ok(f) = File::open(&path) else { continue };
            if f.try_lock().is_err() {
                continue;
            }
        }
        fsutil::remove_if_exists(&path)?;
        removed += 1;
    }
    Ok(removed)
}

/// A blob being written. Bytes are hashed as they are written to a temp file in
/// `hoist/ingest`; [`BlobWriter::commit`] checks size and digest and publishes the blob
/// atomically. Dropped without commit, it removes its temp file.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    dest: PathBuf,
    hasher: Option<Hasher>,
    expected: Digest,
    expected_size: Option<u64>,
    written: u64,
    /// The digest of what was written, once [`BlobWriter::verify`] computed it; no byte
    /// may be added since.
    actual: Option<Digest>,
}

impl BlobWriter {
    /// Check size and digest of what was written now, before [`commit`](Self::commit)
    /// (which then publishes without hashing again): a caller that stages verified blobs
    /// learns of a mismatch at once, with the bytes hashed once. Writing after the check
    /// is refused.
    pub fn verify(&mut self) -> Result<(), StoreError> {
        if let Some(expected) = self.expected_size
            && expected != self.written
        {
            return Err(StoreError::SizeMismatch {
                digest: self.expected.clone(),
                expected,
                actual: self.written,
            });
        }
        let actual = match &self.actual {
            Some(a) => a.clone(),
            None => {
                let h = self
                    .hasher
                    .take()
                    .expect("hasher present until the digest is");
                let a = h.finish();
                self.actual = Some(a.clone());
                a
            }
        };
        if actual != self.expected {
            return Err(StoreError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The digest this writer expects.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Verify size and digest, fsync, and rename into `blobs/<alg>/<hex>`, then fsync
    /// that directory. If the blob appeared meanwhile (another writer), the temp file is
    /// just removed. On a mismatch nothing becomes visible and the temp file is removed.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let result = self.finish();
        // Whatever happened, the temp file must go (a successful rename moved it already).
        let _ = fsutil::remove_if_exists(&self.temp);
        result
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        let buffered = self.file.take().expect("BlobWriter used after commit");
        let file = buffered
            .into_inner()
            .map_err(|e| StoreError::io("write", &self.temp, e.into_error()))?;
        self.verify()?;
        file.sync_all()
            .map_err(|e| StoreError::io("fsync", &self.temp, e))?;
        drop(file);
        let dir = self.dest.parent().unwrap_or(Path::new("."));
        if fs::symlink_metadata(&self.dest).is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        fs::rename(&self.temp, &self.dest)
            .map_err(|e| StoreError::io("rename into", &self.dest, e))?;
        fsutil::fsync_dir(dir)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        if self.actual.is_some() {
            return Err(io::Error::other("blob writer already verified"));
        }
        if let Some(limit) = self.expected_size
            && self.written + buf.len() as u64 > limit
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {} is longer than its declared {limit} bytes",
                    self.expected
                ),
            ));
        }
        let n = file.write(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not committed: discard the buffer and the temp file.
            if let Some(f) = self.file.take() {
                let (file, _) = f.into_parts();
                drop(file);
            }
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// An exclusive lock on one blob digest, released on drop.
#[derive(Debug)]
pub struct BlobLock {
    _file: File,
    path: PathBuf,
}

impl BlobLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An exclusive named lock ([`Store::lock_named`]), released on drop.
#[derive(Debug)]
pub struct NamedLock {
    _file: File,
    path: PathBuf,
}

impl NamedLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
