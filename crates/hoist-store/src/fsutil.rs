//! Small filesystem helpers: atomic writes, directory fsync, locks, unique temp names,
//! an RFC 3339 formatter and the effective uid.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::StoreError;

/// The suffix of every temp file the store creates.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// Create a directory and its parents with mode 0755 (before umask).
pub(crate) fn create_dir(path: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| StoreError::io("create directory", path, e))
}

/// fsync a directory, so a rename into it survives a crash.
pub(crate) fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", path, e))
}

/// A file name unique across threads and processes: `.{stem}.{pid}.{n}.{nanos}.tmp`.
pub(crate) fn temp_name(stem: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(".{stem}.{}.{n}.{nanos}{TEMP_SUFFIX}", std::process::id())
}

/// Create a new, uniquely named temp file in `dir`.
pub(crate) fn create_temp(dir: &Path, stem: &str) -> Result<(File, PathBuf), StoreError> {
    loop {
        let path = dir.join(temp_name(stem));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::io("create temp file", path, e)),
        }
    }
}

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename,
/// fsync the directory. Readers see the old content or the new, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file")
        .to_owned();
    let (mut f, tmp) = create_temp(dir, &stem)?;
    let result = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| StoreError::io("write", &tmp, e))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| StoreError::io("rename into", path, e)));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(dir)
}

/// Read a whole small file; `None` if it does not exist.
pub(crate) fn read_optional(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::read(path, e)),
    };
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| StoreError::read(path, e))?;
    if buf.len() as u64 > limit {
        return Err(StoreError::Corrupt {
            what: "metadata file",
            path: path.to_owned(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    Ok(Some(buf))
}

/// Remove a file, ignoring "not found".
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove", path, e)),
    }
}

/// How a lock file is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockMode {
    /// Many holders.
    Shared,
    /// One holder.
    Exclusive,
}

/// Open (creating) a lock file and lock it, blocking. The lock is released when the
/// returned file is closed. Each call opens its own file description, so threads of one
/// process exclude each other as separate processes do.
pub(crate) fn lock_file(path: &Path, mode: LockMode) -> Result<File, StoreError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::io("open lock file", path, e))?;
    match mode {
        LockMode::Shared => f.lock_shared(),
        LockMode::Exclusive => f.lock(),
    }
    .map_err(|e| StoreError::io("lock", path, e))?;
    Ok(f)
}

/// Format a time as RFC 3339 in UTC with second precision: `2024-05-01T12:34:56Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The effective uid of this process, from `/proc/self/status` (no unsafe code needed).
/// `None` when it cannot be read.
pub(crate) fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_euid(&status)
}

fn parse_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved filesystem
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_table() {
        let cases: &[(u64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (1_714_566_896, "2024-05-01T12:34:56Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
        ];
        for (secs, want) in cases {
            let t = UNIX_EPOCH + Duration::from_secs(*secs);
            assert_eq!(rfc3339(t), *want, "{secs}");
        }
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(86_400)),
            "1969-12-31T00:00:00Z"
        );
    }

    #[test]
    fn euid_parsing() {
        let cases: &[(&str, Option<u32>)] = &[
            ("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\n", Some(0)),
            ("Uid:\t0\t1001\t1001\t1001\n", Some(1001)),
            ("Name: x\n", None),
            ("Uid:\t5\n", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_euid(input), *want, "{input:?}");
        }
        assert!(effective_uid().is_some());
    }

    #[test]
    fn atomic_write_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert_eq!(read_optional(&dir.path().join("none"), 10).unwrap(), None);
        assert!(read_optional(&p, 2).is_err());
    }
}
