//! Writing archives: a sequential tar writer ([`TarWriter`]) and a file published
//! atomically ([`TempOutput`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::ArchiveError;

/// A minimal tar writer: regular files and directories, owned by 0:0, mtime 0, ustar
/// headers (a PAX `path` record when a name does not fit), two zero blocks at the end.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
}

pub(crate) const ZEROS: [u8; 1024] = [0; 1024];

pub(crate) fn header(name: &str, size: u64, dir: bool) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    let mut h = tar::Header::new_ustar();
    if h.set_path(name).is_err() {
        // Too long for ustar name + prefix: a PAX header carries it.
        let rec = pax_record("path", name.as_bytes());
        let mut x = tar::Header::new_ustar();
        x.set_path("PaxHeader")?;
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(rec.len() as u64);
        x.set_mode(0o644);
        x.set_mtime(0);
        x.set_cksum();
        out.extend_from_slice(x.as_bytes());
        out.extend_from_slice(&rec);
        out.extend_from_slice(&ZEROS[..pad(rec.len() as u64) as usize]);
        let short: String = name
            .chars()
            .rev()
            .take(90)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        h.set_path(short.trim_start_matches('/'))?;
    }
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    Ok(out)
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

pub(crate) fn pad(size: u64) -> u64 {
    (512 - size % 512) % 512
}

impl<W: Write> TarWriter<W> {
    /// A writer onto `out`.
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter { out }
    }

    /// A directory entry (`name` without trailing slash).
    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        let h = header(&format!("{name}/"), 0, true)?;
        self.out.write_all(&h)
    }

    /// A regular file with these bytes.
    pub fn bytes(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.out
            .write_all(&header(name, data.len() as u64, false)?)?;
        self.out.write_all(data)?;
        self.out
            .write_all(&ZEROS[..pad(data.len() as u64) as usize])
    }

    /// A regular file of exactly `size` bytes read from `data`; a reader that ends early
    /// or has more is an error. File-to-file copies go through the kernel
    /// (`copy_file_range`).
    pub fn copy<R: Read>(&mut self, name: &str, size: u64, data: R) -> io::Result<()> {
        self.out.write_all(&header(name, size, false)?)?;
        let mut limited = data.take(size);
        let n = io::copy(&mut limited, &mut self.out)?;
        if n != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: {n} bytes where {size} were expected"),
            ));
        }
        let mut probe = [0u8; 1];
        if limited.into_inner().read(&mut probe)? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name}: longer than the {size} bytes expected"),
            ));
        }
        self.out.write_all(&ZEROS[..pad(size) as usize])
    }

    /// Write the end-of-archive marker and return the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&ZEROS)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Where whole small entries (documents) go: a sequential [`TarWriter`] or a
/// [`crate::SlotWriter`].
pub trait EntrySink {
    /// A regular file with these bytes.
    fn bytes(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
}

impl<W: Write> EntrySink for TarWriter<W> {
    fn bytes(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        TarWriter::bytes(self, name, data)
    }
}

impl EntrySink for crate::SlotWriter {
    fn bytes(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        crate::SlotWriter::bytes(self, name, data)
    }
}

/// An archive file being written: a temp file beside its final path (same file system),
/// removed if dropped; [`TempOutput::publish`] makes it appear whole at the path.
#[derive(Debug)]
pub struct TempOutput {
    temp: tempfile::NamedTempFile,
    path: PathBuf,
    dir: PathBuf,
}

impl TempOutput {
    /// A temp file (`.hoist-archive-*`) in the directory of `path`.
    pub fn beside(path: &Path) -> Result<TempOutput, ArchiveError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".hoist-archive-")
            .tempfile_in(&dir)
            .map_err(|source| ArchiveError::Io {
                op: "create a temp file in",
                path: Some(dir.to_owned()),
                source,
            })?;
        Ok(TempOutput {
            temp,
            path: path.to_owned(),
            dir,
        })
    }

    /// The directory the archive goes in (for other temp files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The temp file.
    pub fn file_mut(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Another handle on the temp file (for a [`crate::SlotWriter`]).
    pub fn try_clone(&self) -> Result<File, ArchiveError> {
        self.temp
            .as_file()
            .try_clone()
            .map_err(|source| ArchiveError::Io {
                op: "open",
                path: Some(self.temp.path().to_owned()),
                source,
            })
    }

    /// Mode 0644, fsync, rename onto the path, fsync the directory.
    pub fn publish(self) -> Result<(), ArchiveError> {
        let io_err = |op: &'static str, path: &Path| {
            let path = Some(path.to_owned());
            move |source| ArchiveError::Io { op, path, source }
        };
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(self.temp.path(), std::fs::Permissions::from_mode(0o644))
                .map_err(io_err("chmod", self.temp.path()))?;
        }
        self.temp
            .as_file()
            .sync_all()
            .map_err(io_err("fsync", self.temp.path()))?;
        let (path, dir) = (self.path, self.dir);
        self.temp
            .persist(&path)
            .map_err(|e| io_err("rename into", &path)(e.error))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_checks_length() {
        let mut w = TarWriter::new(Vec::new());
        assert!(w.copy("a", 4, &b"abc"[..]).is_err());
        let mut w = TarWriter::new(Vec::new());
        assert!(w.copy("a", 2, &b"abc"[..]).is_err());
    }

    #[test]
    fn pax_lengths() {
        for n in [1usize, 80, 95, 96, 97, 990, 995] {
            let r = pax_record("path", &vec![b'x'; n]);
            let (len, _) = std::str::from_utf8(&r).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len());
        }
    }
}
