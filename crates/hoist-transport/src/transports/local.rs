//! File mechanics shared by the directory transports (`oci:`, `dir:`) and the store
//! destination: opening untrusted files without following links, bounded reads, verified
//! streaming writes published atomically, and progress from blocking threads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hoist_types::{Descriptor, Digest, Hasher, Progress, ProgressEvent};

use super::BlobStream;
use crate::TransportError;

/// How often a blob's progress is reported while a blocking thread writes it.
const TICK: Duration = Duration::from_millis(100);

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TransportError {
    let path = Some(path.to_path_buf());
    move |source| TransportError::Io { op, path, source }
}

pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> TransportError {
    TransportError::InvalidLayout {
        path: path.to_owned(),
        reason: reason.into(),
        source: None,
    }
}

/// [`invalid`] with the error behind it as the source (its text is not repeated).
pub(crate) fn invalid_from(
    path: &Path,
    reason: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> TransportError {
    TransportError::InvalidLayout {
        path: path.to_owned(),
        reason: reason.into(),
        source: Some(Box::new(source)),
    }
}

/// Open an untrusted file for reading: the last component must not be a symlink
/// (`O_NOFOLLOW`) and the file must be a regular file. `Ok(None)` when it does not exist.
pub(crate) fn open_regular(path: &Path) -> Result<Option<File>, TransportError> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(invalid(path, "is a symbolic link, not a file"));
        }
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let meta = f.metadata().map_err(io_err("stat", path))?;
    if !meta.is_file() {
        return Err(invalid(path, "is not a regular file"));
    }
    Ok(Some(f))
}

/// Read a whole untrusted file of at most `limit` bytes. `Ok(None)` when absent.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, TransportError> {
    let Some(f) = open_regular(path)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_err("read", path))?;
    if buf.len() as u64 > limit {
        return Err(invalid(path, format!("larger than the {limit}-byte limit")));
    }
    Ok(Some(buf))
}

/// A blob file as a stream; its size must be the descriptor's.
pub(crate) fn blob_stream(
    path: &Path,
    desc: &Descriptor,
    location: &str,
) -> Result<BlobStream, TransportError> {
    let f = open_regular(path)?.ok_or_else(|| TransportError::BlobNotFound {
        digest: desc.digest.clone(),
        location: location.to_owned(),
    })?;
    let len = f.metadata().map_err(io_err("stat", path))?.len();
    if len != desc.size {
        return Err(TransportError::SizeMismatch {
            what: format!("blob {} at {}", desc.digest, path.display()),
            expected: desc.size,
            actual: len,
        });
    }
    Ok(BlobStream::from_file(
        f,
        desc.size,
        path.display().to_string(),
    ))
}

/// A temp name in the target's directory, unique across threads and processes.
pub(crate) fn temp_path(dir: &Path, stem: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(
        ".{stem}.{}.{n}.{nanos}.hoist-tmp",
        std::process::id()
    ))
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), TransportError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

pub(crate) fn create_dir_all(dir: &Path) -> Result<(), TransportError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))
}

/// Write `bytes` to `path` atomically: temp in the same directory, fsync, rename, fsync
/// the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TransportError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = temp_path(dir, &stem);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into", path))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Hash and write the stream into `out`, checking that it is exactly `desc.size` bytes
/// with `desc.digest`. Runs on a blocking thread; `done` counts bytes for progress.
pub(crate) fn copy_verified(
    stream: &mut BlobStream,
    desc: &Descriptor,
    out: &mut dyn Write,
    done: &AtomicU64,
) -> Result<(), TransportError> {
    if stream.verified() == Some(&desc.digest) {
        // Bytes this process hashed as it wrote them: the size is still checked.
        pump(stream, desc, out, done, None)?;
        return Ok(());
    }
    let mut hasher = Hasher::new(desc.digest.algorithm());
    let origin = pump(stream, desc, out, done, Some(&mut hasher))?;
    let actual = hasher.finish();
    if actual != desc.digest {
        return Err(TransportError::DigestMismatch {
            what: format!("blob from {origin}"),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// [`copy_verified`] into a store writer, which hashes what it writes: the size is
/// checked as the bytes go, the digest by [`BlobWriter::verify`] at the end (each byte
/// hashed once). A mismatch names the stream's origin, as [`copy_verified`]'s does.
pub(crate) fn copy_into_writer(
    stream: &mut BlobStream,
    desc: &Descriptor,
    w: &mut hoist_store::BlobWriter,
    done: &AtomicU64,
) -> Result<(), TransportError> {
    let origin = pump(stream, desc, w, done, None)?;
    match w.verify() {
        Ok(()) => Ok(()),
        Err(hoist_store::StoreError::DigestMismatch { expected, actual }) => {
            Err(TransportError::DigestMismatch {
                what: format!("blob from {origin}"),
                expected,
                actual,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Write the stream into `out` (hashing it into `hasher` when given), checking that it is
/// exactly `desc.size` bytes; returns where it came from.
fn pump(
    stream: &mut BlobStream,
    desc: &Descriptor,
    out: &mut dyn Write,
    done: &AtomicU64,
    mut hasher: Option<&mut Hasher>,
) -> Result<String, TransportError> {
    let mut n = 0u64;
    let origin = stream.origin().to_owned();
    let size_err = |actual| TransportError::SizeMismatch {
        what: format!("blob {} from {origin}", desc.digest),
        expected: desc.size,
        actual,
    };
    while let Some(chunk) = stream.blocking_next() {
        let chunk = chunk?;
        n += chunk.len() as u64;
        if n > desc.size {
            return Err(size_err(n));
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        out.write_all(&chunk)
            .map_err(|source| TransportError::Stream {
                what: format!("writing blob {}", desc.digest),
                source,
            })?;
        done.store(n, Ordering::Relaxed);
    }
    if n != desc.size {
        return Err(size_err(n));
    }
    Ok(origin)
}

/// Write a verified blob to `dest` (temp in its directory, fsync, rename, fsync dir).
/// Nothing is visible at `dest` unless size and digest matched.
pub(crate) fn write_blob_file(
    dest: &Path,
    desc: &Descriptor,
    stream: &mut BlobStream,
    done: &AtomicU64,
) -> Result<(), TransportError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(dir, desc.digest.hex());
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let mut w = io::BufWriter::with_capacity(256 * 1024, f);
        copy_verified(stream, desc, &mut w, done)?;
        let f = w
            .into_inner()
            .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, dest).map_err(io_err("rename into", dest))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A layout destination's `put_blob`: the blob written to `dest` as
/// [`write_blob_file`] does (its directory created first), with progress events.
pub(crate) async fn put_blob_file(
    dest: PathBuf,
    desc: &Descriptor,
    mut stream: BlobStream,
    progress: &dyn Progress,
) -> Result<(), TransportError> {
    let done = Arc::new(AtomicU64::new(0));
    let (d, counter) = (desc.clone(), done.clone());
    with_progress(&desc.digest, progress, done, move || {
        if let Some(parent) = dest.parent() {
            create_dir_all(parent)?;
        }
        write_blob_file(&dest, &d, &mut stream, &counter)
    })
    .await
}

/// A layout destination's `has_blob`: a regular file of the blob's size at `path`.
pub(crate) async fn has_blob_file(path: PathBuf, size: u64) -> Result<bool, TransportError> {
    crate::blocking(move || has_file(&path, size)).await?
}

/// Run `f` on a blocking thread while reporting `BlobProgress` for `digest` from the
/// byte counter it updates.
pub(crate) async fn with_progress<T: Send + 'static>(
    digest: &Digest,
    progress: &dyn Progress,
    done: Arc<AtomicU64>,
    f: impl FnOnce() -> Result<T, TransportError> + Send + 'static,
) -> Result<T, TransportError> {
    let mut task = tokio::task::spawn_blocking(f);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = 0;
    loop {
        tokio::select! {
            r = &mut task => {
                let n = done.load(Ordering::Relaxed);
                if n != last {
                    progress.event(&ProgressEvent::BlobProgress { digest, done: n });
                }
                return r.map_err(|e| TransportError::Task { what: e.to_string() })?;
            }
            _ = tick.tick() => {
                let n = done.load(Ordering::Relaxed);
                if n != last {
                    last = n;
                    progress.event(&ProgressEvent::BlobProgress { digest, done: n });
                }
            }
        }
    }
}

/// The partial download of `d` kept in `ingest` (a directory of the destination's
/// filesystem that readers of the layout never look at).
fn partial_path(ingest: &Path, d: &Digest) -> PathBuf {
    ingest.join(format!("partial-{}-{}", d.algorithm(), d.hex()))
}

/// Fetch `desc` through `fetcher` into the file `dest`, resumably: the bytes go to a
/// partial file in `ingest` (created when needed), kept when the copy stops so the next
/// run goes on from it, written in place by Range slices when the blob is large, and
/// renamed onto `dest` only once size and digest match (then `ingest` is removed when
/// empty). When another process is writing that partial, our own copy is streamed into
/// `dest` instead ([`put_blob_file`]).
pub(crate) async fn fetch_resumable(
    ingest: PathBuf,
    dest: PathBuf,
    desc: &Descriptor,
    kind: hoist_types::BlobKind,
    fetcher: &crate::fetch::BlobFetcher,
    progress: &dyn Progress,
) -> Result<(), TransportError> {
    let (d, size) = (desc.digest.clone(), desc.size);
    let (ing, dest_path) = (ingest.clone(), dest.clone());
    let open = move || -> Result<Option<hoist_store::PartialBlob>, TransportError> {
        create_dir_all(&ing)?;
        if let Some(parent) = dest.parent() {
            create_dir_all(parent)?;
        }
        match hoist_store::PartialBlob::open_at(partial_path(&ing, &d), dest.clone(), &d, size) {
            Ok(p) => Ok(Some(p)),
            Err(hoist_store::StoreError::Io { source, .. })
                if source.kind() == io::ErrorKind::WouldBlock =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    };
    let Some(partial) = crate::blocking(open.clone()).await?? else {
        let stream = fetcher.stream(desc, 0).await?;
        return put_blob_file(dest_path, desc, stream, progress).await;
    };
    let reopen = move || {
        open()?.ok_or_else(|| TransportError::Stream {
            what: "reopening a partial download".to_owned(),
            source: io::Error::new(io::ErrorKind::WouldBlock, "another process holds it"),
        })
    };
    fetcher
        .fetch_verified(desc, kind, progress, partial, reopen)
        .await?;
    // Gone once nothing is in it (another blob's partial keeps it).
    let _ = crate::blocking(move || fs::remove_dir(&ingest)).await;
    Ok(())
}

/// Whether a regular file of `size` bytes is at `path` (a symlink is not).
pub(crate) fn has_file(path: &Path, size: u64) -> Result<bool, TransportError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(m.is_file() && m.len() == size),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_types::MediaType;

    fn desc(data: &[u8]) -> Descriptor {
        Descriptor::new(
            MediaType::OciLayer,
            Digest::sha256_of(data),
            data.len() as u64,
        )
    }

    fn stream(data: &[u8]) -> BlobStream {
        BlobStream::from_reader(Box::new(io::Cursor::new(data.to_vec())), 0, "mem")
    }

    #[test]
    fn verified_write_table() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"hello".as_slice();
        let mut wrong_size = desc(good);
        wrong_size.size = 4;
        let mut wrong_digest = desc(good);
        wrong_digest.digest = Digest::sha256_of(b"other");
        let cases: Vec<(&str, Descriptor, bool)> = vec![
            ("good", desc(good), true),
            ("too long", wrong_size, false),
            ("wrong digest", wrong_digest, false),
            (
                "too short",
                {
                    let mut d = desc(good);
                    d.size = 6;
                    d
                },
                false,
            ),
        ];
        for (name, d, ok) in cases {
            let dest = dir.path().join(name.replace(' ', "-"));
            let r = write_blob_file(&dest, &d, &mut stream(good), &AtomicU64::new(0));
            assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
            assert_eq!(dest.exists(), ok, "{name}");
        }
        // No temp files are left behind.
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".hoist-tmp"))
            .collect();
        assert!(left.is_empty());
    }

    #[test]
    fn own_files_skip_the_hash_only_for_their_own_digest_and_keep_the_size_check() {
        let good = b"hello".as_slice();
        let own = |digest: Digest| {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(good).unwrap();
            BlobStream::from_own_file(f, good.len() as u64, digest, "own")
        };
        let copy = |mut s: BlobStream, d: &Descriptor| {
            let mut out = Vec::new();
            copy_verified(&mut s, d, &mut out, &AtomicU64::new(0)).map(|()| out)
        };
        // Its own digest: accepted as written.
        assert_eq!(
            copy(own(Digest::sha256_of(good)), &desc(good)).unwrap(),
            good
        );
        // Marked with another digest than the descriptor's: hashed, and refused.
        let mut other = desc(good);
        other.digest = Digest::sha256_of(b"other");
        let e = copy(own(Digest::sha256_of(good)), &other).unwrap_err();
        assert!(matches!(e, TransportError::DigestMismatch { .. }), "{e}");
        // Marked with the descriptor's digest, but not that long: the size check stays.
        let mut longer = other.clone();
        longer.size = 6;
        let e = copy(own(other.digest.clone()), &longer).unwrap_err();
        assert!(matches!(e, TransportError::SizeMismatch { .. }), "{e}");
    }

    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("real"), b"x").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        assert!(open_regular(&dir.path().join("real")).unwrap().is_some());
        assert!(open_regular(&dir.path().join("absent")).unwrap().is_none());
        let e = open_regular(&dir.path().join("link")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!has_file(&dir.path().join("link"), 1).unwrap());
        assert!(read_bounded(&dir.path().join("real"), 0).is_err());
    }
}
