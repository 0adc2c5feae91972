//! Work the async handlers hand to the blocking pool, and positioned reads of blob files:
//! from the page cache on the caller's thread when the bytes are there, else on the pool.

use std::os::unix::fs::FileExt;

use crate::error::ApiError;

/// Runs `f` on tokio's blocking pool (store reads and writes, bcrypt) and returns its result.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}

/// Up to `want` bytes of `f` from `pos` (fewer at its end), with positioned reads.
pub(crate) fn read_at(f: &std::fs::File, pos: u64, want: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; want];
    let got = fill_at(f, pos, &mut buf)?;
    buf.truncate(got);
    Ok(buf)
}

/// Fills `buf` from `pos` of `f` with positioned reads: the bytes read (fewer at its end).
pub(crate) fn fill_at(f: &std::fs::File, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match FileExt::read_at(f, &mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// How a blob file's reads can skip the blocking pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CachedReads {
    /// `preadv2` with `RWF_NOWAIT`: only what the page cache holds, never waiting for the
    /// disk (ext4, xfs, btrfs…).
    NoWait,
    /// A tmpfs file: its pages are memory, a plain read does not wait for a disk.
    Memory,
    /// Neither: every read goes to the blocking pool.
    Never,
}

impl CachedReads {
    /// What `f`'s filesystem allows: tmpfs is memory; elsewhere a one-byte read with
    /// `RWF_NOWAIT` tells whether the kernel and filesystem take the flag.
    pub(crate) fn of(f: &std::fs::File) -> CachedReads {
        const TMPFS_MAGIC: u64 = 0x0102_1994;
        if rustix::fs::fstatfs(f).is_ok_and(|s| s.f_type as u64 == TMPFS_MAGIC) {
            return CachedReads::Memory;
        }
        let mut probe = [0u8; 1];
        match nowait(f, 0, &mut probe) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => CachedReads::NoWait,
            Err(_) => CachedReads::Never,
        }
    }

    /// Reads into `buf` from `pos` of `f` what can be read without waiting for a disk,
    /// looping over short reads: the bytes read (0 when none are cached; an error is left
    /// for the blocking read to report). An async handler can call it on its own thread.
    pub(crate) fn read(self, f: &std::fs::File, pos: u64, buf: &mut [u8]) -> usize {
        match self {
            CachedReads::Never => 0,
            CachedReads::Memory => fill_at(f, pos, buf).unwrap_or(0),
            CachedReads::NoWait => {
                let mut got = 0;
                while got < buf.len() {
                    match nowait(f, pos + got as u64, &mut buf[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(rustix::io::Errno::INTR) => {}
                        Err(_) => break,
                    }
                }
                got
            }
        }
    }
}

/// `preadv2(f, buf, pos, RWF_NOWAIT)`: only what the page cache holds.
fn nowait(f: &std::fs::File, pos: u64, buf: &mut [u8]) -> rustix::io::Result<usize> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    rustix::io::preadv2(f, &mut iov, pos, rustix::io::ReadWriteFlags::NOWAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Whatever the filesystem allows, what a cached read returns is the file's bytes at
    /// that offset, and a blocking read completes it.
    fn check_reads(dir: &std::path::Path) -> CachedReads {
        let bytes = data(3 << 20);
        let p = dir.join("blob");
        std::fs::write(&p, &bytes).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let mode = CachedReads::of(&f);
        for (pos, len) in [(0usize, 256 << 10), (12_345, 100_000), ((3 << 20) - 10, 10)] {
            let mut buf = vec![0u8; len];
            let got = mode.read(&f, pos as u64, &mut buf);
            assert!(got <= len);
            assert_eq!(buf[..got], bytes[pos..pos + got], "{mode:?} at {pos}");
            let rest = fill_at(&f, (pos + got) as u64, &mut buf[got..]).unwrap();
            assert_eq!(got + rest, len);
            assert_eq!(buf, bytes[pos..pos + len]);
        }
        // Past the end: nothing, not an error.
        let mut buf = vec![0u8; 10];
        assert_eq!(mode.read(&f, 3 << 20, &mut buf), 0);
        assert_eq!(CachedReads::Never.read(&f, 0, &mut buf), 0);
        mode
    }

    #[test]
    fn cached_reads_give_the_file_bytes_on_disk_and_on_tmpfs() {
        let t = tempfile::tempdir().unwrap();
        check_reads(t.path());
        if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
            // tmpfs pages are memory: read at once, in full.
            assert_eq!(check_reads(shm.path()), CachedReads::Memory);
            let p = shm.path().join("blob");
            let f = std::fs::File::open(&p).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            assert_eq!(CachedReads::Memory.read(&f, 0, &mut buf), 1 << 20);
        }
    }
}
