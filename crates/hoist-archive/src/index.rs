//! The index of an archive: its entries found in one pass with the project's one tar
//! parser ([`hoist_unpack::TarReader`]), and readers over single entries by offset.
//!
//! An archive is untrusted input. The index refuses (naming the entry):
//! - anything the parser refuses (paths escaping the archive with `..`, bad headers,
//!   PAX/ustar contradictions, ...), and more than [`MAX_ENTRIES`] headers;
//! - two entries with the same cleaned path (a parser differential: which one would a
//!   peer read?), except repeated directories;
//! - non-zero bytes after the end-of-archive marker.
//!
//! Lookups follow links to other members, as `docker save` writes them for a layer two
//! images share (the second `<id>/layer.tar` a symlink `../<other-id>/layer.tar`, or a hard
//! link): a symlink's target is relative to the link's directory, a hard link's to the
//! archive's root. The member reached is read (and, like any member, verified against the
//! digest the documents declare). A symlink that is absolute or leaves the archive, a link
//! to a missing member, and a chain of more than [`MAX_LINK_DEPTH`] links (a cycle) are
//! refused, naming the member. Lookups refuse directories and devices where a blob is
//! expected, and documents (manifests, configs, `index.json`, `manifest.json`) over 4 MiB.
//!
//! A compressed archive (gzip, zstd, bzip2 or xz, detected by its magic bytes, as
//! `docker load` reads them) is first decompressed into an anonymous temp file
//! ([`spool_archive`], at most [`MAX_SPOOLED`] bytes), which is then indexed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hoist_unpack::{EntryKind, Limits, TarReader, UnpackError};

use crate::{ArchiveError, ArchiveProblem, bad};

/// Most tar headers an archive may hold.
pub const MAX_ENTRIES: u64 = 200_000;
/// Most links followed from one name before it is called a cycle.
pub const MAX_LINK_DEPTH: usize = 16;
/// Most bytes a compressed archive may decompress to.
pub const MAX_SPOOLED: u64 = 256 << 30;

/// Largest JSON document (manifest, config, `index.json`, `manifest.json`, `repositories`)
/// read from an archive (the guide's manifest/config limit).
pub const MAX_DOCUMENT: u64 = hoist_types::MAX_MANIFEST_SIZE;

/// What an indexed entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Indexed {
    /// A regular file: where its data starts in the archive and how long it is.
    File {
        /// Offset of the first data byte.
        offset: u64,
        /// Data bytes.
        size: u64,
    },
    /// A symbolic link, with its target as written (relative to the link's directory).
    Symlink(String),
    /// A hard link, with its target (cleaned, relative to the archive's root).
    Hardlink(String),
    /// Anything else, by name.
    Other(&'static str),
}

/// The entries of an archive file, indexed in one pass; reads entries by offset.
#[derive(Debug, Clone)]
pub struct ArchiveIndex {
    file: Arc<File>,
    path: PathBuf,
    entries: BTreeMap<String, Indexed>,
}

fn kind_name(k: &EntryKind) -> &'static str {
    match k {
        EntryKind::File => "regular file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink(_) => "symbolic link",
        EntryKind::Hardlink(_) => "hard link",
        EntryKind::Char { .. } => "character device",
        EntryKind::Block { .. } => "block device",
        EntryKind::Fifo => "fifo",
    }
}

impl ArchiveIndex {
    /// Open and index the archive at `path`.
    pub fn open(path: &Path) -> Result<ArchiveIndex, ArchiveError> {
        let file = File::open(path).map_err(|source| ArchiveError::Io {
            op: "open archive",
            path: Some(path.to_owned()),
            source,
        })?;
        ArchiveIndex::from_file(file, path)
    }

    /// Index an open archive file (read from its start); `path` names it in errors. A
    /// compressed archive is decompressed into an anonymous temp file first.
    pub fn from_file(file: File, path: &Path) -> Result<ArchiveIndex, ArchiveError> {
        let mut head = [0u8; 512];
        let mut got = 0;
        while got < head.len() {
            let n = file
                .read_at(&mut head[got..], got as u64)
                .map_err(|source| ArchiveError::Io {
                    op: "read archive",
                    path: Some(path.to_owned()),
                    source,
                })?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if hoist_unpack::detect(&head[..got]) != Ok(hoist_unpack::Codec::None) {
            let len = file
                .metadata()
                .map_err(|source| ArchiveError::Io {
                    op: "read archive",
                    path: Some(path.to_owned()),
                    source,
                })?
                .len();
            let whole = EntryReader {
                file: Arc::new(file),
                pos: 0,
                end: len,
            };
            let plain = spool_archive(whole, path)?;
            return ArchiveIndex::index_plain(plain, path);
        }
        ArchiveIndex::index_plain(file, path)
    }

    fn index_plain(file: File, path: &Path) -> Result<ArchiveIndex, ArchiveError> {
        let len = file
            .metadata()
            .map_err(|source| ArchiveError::Io {
                op: "read archive",
                path: Some(path.to_owned()),
                source,
            })?
            .len();
        let file = Arc::new(file);
        let reader = BufReader::with_capacity(
            1 << 20,
            EntryReader {
                file: file.clone(),
                pos: 0,
                end: len,
            },
        );
        let limits = Limits {
            max_entries: MAX_ENTRIES,
            ..Limits::default()
        };
        let mut tar = TarReader::new(reader, &limits);
        let mut entries = BTreeMap::new();
        let problem = |p| bad(path, p);
        while let Some(e) = tar.next_entry().map_err(|e| problem(too_many(e)))? {
            let name = String::from_utf8_lossy(&e.path).into_owned();
            if name.is_empty() {
                continue; // "./": the archive's root
            }
            let what = match e.kind {
                EntryKind::File => Indexed::File {
                    offset: tar.offset(),
                    size: e.size,
                },
                EntryKind::Symlink(ref t) => Indexed::Symlink(String::from_utf8_lossy(t).into()),
                EntryKind::Hardlink(ref t) => Indexed::Hardlink(String::from_utf8_lossy(t).into()),
                ref k => Indexed::Other(kind_name(k)),
            };
            match entries.get(&name) {
                Some(Indexed::Other("directory")) if what == Indexed::Other("directory") => {}
                Some(_) => return Err(problem(ArchiveProblem::Duplicate { entry: name })),
                None => {
                    entries.insert(name, what);
                }
            }
        }
        // Only zeros may follow the end marker (tar writers pad to a record size).
        let mut rest = tar.into_inner();
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0u64;
        loop {
            let n = rest.read(&mut buf).map_err(|source| ArchiveError::Io {
                op: "read archive",
                path: Some(path.to_owned()),
                source,
            })?;
            if n == 0 {
                break;
            }
            if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
                return Err(problem(ArchiveProblem::TrailingData {
                    offset: offset + i as u64,
                }));
            }
            offset += n as u64;
        }
        Ok(ArchiveIndex {
            file,
            path: path.to_owned(),
            entries,
        })
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error about this archive.
    pub fn bad(&self, p: ArchiveProblem) -> ArchiveError {
        bad(&self.path, p)
    }

    /// Whether an entry of this (cleaned) name exists, of any kind.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Offset and size of the regular file `name`, described as `what` in errors, following
    /// links to other members (see the module docs). A missing entry, a link that cannot be
    /// followed, or anything non-regular is an error.
    pub fn file(&self, name: &str, what: &'static str) -> Result<(u64, u64), ArchiveError> {
        let asked = clean_member(name).ok_or_else(|| {
            self.bad(ArchiveProblem::Invalid {
                entry: name.to_owned(),
                reason: "path escapes the archive or is empty",
            })
        })?;
        let link = |target: &str, reason| {
            self.bad(ArchiveProblem::Link {
                entry: asked.clone(),
                target: target.to_owned(),
                reason,
            })
        };
        let mut key = asked.clone();
        for _ in 0..=MAX_LINK_DEPTH {
            key = match self.entries.get(&key) {
                Some(Indexed::File { offset, size }) => return Ok((*offset, *size)),
                Some(Indexed::Other(found)) => {
                    return Err(self.bad(ArchiveProblem::NotRegular {
                        entry: key,
                        found,
                        what,
                    }));
                }
                None if key == asked => {
                    return Err(self.bad(ArchiveProblem::Missing { entry: key, what }));
                }
                None => return Err(link(&key, "points to a member that is not in the archive")),
                Some(Indexed::Hardlink(target)) => target.clone(),
                Some(Indexed::Symlink(target)) => {
                    if target.starts_with('/') {
                        return Err(link(target, "is absolute (it would leave the archive)"));
                    }
                    let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
                    clean_member(&format!("{dir}/{target}"))
                        .ok_or_else(|| link(target, "leaves the archive"))?
                }
            };
        }
        Err(link(
            &key,
            "is one of more than 16 links in a row (a cycle?)",
        ))
    }

    /// A reader over the regular file `name`.
    pub fn open_entry(&self, name: &str, what: &'static str) -> Result<EntryReader, ArchiveError> {
        let (offset, size) = self.file(name, what)?;
        Ok(EntryReader {
            file: self.file.clone(),
            pos: offset,
            end: offset + size,
        })
    }

    /// The whole regular file `name`, at most [`MAX_DOCUMENT`] bytes.
    pub fn read_document(&self, name: &str, what: &'static str) -> Result<Vec<u8>, ArchiveError> {
        let (offset, size) = self.file(name, what)?;
        if size > MAX_DOCUMENT {
            return Err(self.bad(ArchiveProblem::TooLarge {
                entry: name.to_owned(),
                size,
                limit: MAX_DOCUMENT,
            }));
        }
        let mut buf = vec![0u8; size as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| ArchiveError::Stream {
                what: format!("reading {name} in archive {}", self.path.display()),
                source,
            })?;
        Ok(buf)
    }

    /// Parse the JSON document `name`; returns it with its bytes.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        what: &'static str,
    ) -> Result<(T, Vec<u8>), ArchiveError> {
        let bytes = self.read_document(name, what)?;
        let v = serde_json::from_slice(&bytes).map_err(|source| {
            self.bad(ArchiveProblem::Json {
                entry: name.to_owned(),
                source,
            })
        })?;
        Ok((v, bytes))
    }

    /// The first bytes of an entry (up to `n`), for sniffing its compression.
    pub(crate) fn head(
        &self,
        name: &str,
        what: &'static str,
        n: usize,
    ) -> Result<Vec<u8>, ArchiveError> {
        let (offset, size) = self.file(name, what)?;
        let mut buf = vec![0u8; n.min(size as usize)];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| ArchiveError::Stream {
                what: format!("reading {name} in archive {}", self.path.display()),
                source,
            })?;
        Ok(buf)
    }
}

/// The parser's entry-count error, reworded as the archive's.
fn too_many(e: UnpackError) -> ArchiveProblem {
    match e {
        UnpackError::Limit {
            what: "number of tar entries",
            ..
        } => ArchiveProblem::TooManyEntries { limit: MAX_ENTRIES },
        e => ArchiveProblem::Tar(e),
    }
}

/// Copies an archive, decompressing it when its first bytes say it is compressed (gzip,
/// zstd, bzip2 or xz), into an anonymous temp file (in the system's temp directory) and
/// returns it, rewound: what [`ArchiveIndex::from_file`] indexes, and how stdin is read.
/// At most [`MAX_SPOOLED`] bytes; a compression hoist does not read is refused by name.
pub fn spool_archive(input: impl Read, path: &Path) -> Result<File, ArchiveError> {
    let limits = Limits {
        max_layer_size: MAX_SPOOLED,
        ..Limits::default()
    };
    let problem = |source| bad(path, ArchiveProblem::Decompress { source });
    let mut plain = hoist_unpack::LayerStream::detect(
        input,
        hoist_types::Algorithm::Sha256,
        &limits,
        None,
        &hoist_types::NoProgress,
    )
    .map_err(problem)?
    .without_hashing();
    let mut out = tempfile::tempfile().map_err(|source| ArchiveError::Io {
        op: "create a temp file in",
        path: Some(std::env::temp_dir()),
        source,
    })?;
    {
        let write_err = |source| ArchiveError::Io {
            op: "spool archive",
            path: Some(path.to_owned()),
            source,
        };
        let mut w = io::BufWriter::with_capacity(1 << 20, &mut out);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            // A read error is the archive's (damage, the size cap); a write error the disk's.
            let n = plain
                .read(&mut buf)
                .map_err(|e| problem(hoist_unpack::stream_error(e)))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).map_err(write_err)?;
        }
        w.flush().map_err(write_err)?;
    }
    plain.finish(false).map_err(problem)?;
    io::Seek::seek(&mut out, io::SeekFrom::Start(0)).map_err(|source| ArchiveError::Io {
        op: "spool archive",
        path: Some(path.to_owned()),
        source,
    })?;
    Ok(out)
}

/// Cleans a member name given by a document inside the archive (`manifest.json`'s
/// `Layers`, ...) the way the tar parser cleans entry names; `None` if it escapes the
/// archive or is empty.
///
/// ```
/// use hoist_archive::clean_member;
///
/// assert_eq!(clean_member("./layers//abc/layer.tar").as_deref(), Some("layers/abc/layer.tar"));
/// assert_eq!(clean_member("../etc/passwd"), None);
/// assert_eq!(clean_member("."), None);
/// ```
pub fn clean_member(name: &str) -> Option<String> {
    let cleaned = hoist_unpack::path::clean(name.as_bytes(), &Limits::default()).ok()?;
    if cleaned.is_empty() {
        return None;
    }
    String::from_utf8(cleaned).ok()
}

/// Reads one entry's bytes by offset (`pread`), so several readers share one file.
#[derive(Debug)]
pub struct EntryReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl EntryReader {
    /// Bytes left.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }
}

impl Read for EntryReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = (buf.len() as u64).min(self.end - self.pos) as usize;
        if k == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..k], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive shorter than its index (changed while being read?)",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TarWriter;

    /// The error and its causes, joined as `{:#}` would: the message of an `ArchiveError`
    /// names the archive, its source the problem.
    fn full(e: &(dyn std::error::Error + 'static)) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cur = c.source();
        }
        out
    }

    fn index_of(bytes: &[u8]) -> Result<ArchiveIndex, ArchiveError> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        ArchiveIndex::from_file(f, Path::new("t.tar"))
    }

    fn written(f: impl FnOnce(&mut TarWriter<Vec<u8>>)) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        f(&mut w);
        w.finish().unwrap()
    }

    #[test]
    fn writes_and_indexes() {
        let long = format!("blobs/sha512/{}", "a".repeat(128));
        let t = written(|w| {
            w.dir("blobs").unwrap();
            w.bytes("manifest.json", b"[]").unwrap();
            w.copy("x.tar", 3, &b"abc"[..]).unwrap();
            w.bytes(&long, b"long").unwrap();
        });
        let idx = index_of(&t).unwrap();
        assert_eq!(idx.read_document("manifest.json", "m").unwrap(), b"[]");
        let mut s = String::new();
        idx.open_entry("./x.tar", "l")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "abc");
        assert_eq!(idx.read_document(&long, "l").unwrap(), b"long");
        let err = full(&idx.file("blobs", "a blob").unwrap_err());
        assert!(err.contains("blobs: is a directory"), "{err}");
        let err = full(&idx.file("nope", "a layer").unwrap_err());
        assert!(err.contains("nope: missing (a layer)"), "{err}");
        let err = full(&idx.file("../x.tar", "a layer").unwrap_err());
        assert!(err.contains("escapes"), "{err}");
    }

    #[test]
    fn refuses_duplicates_and_trailing_data() {
        let t = written(|w| {
            w.bytes("a", b"1").unwrap();
            w.bytes("./a", b"2").unwrap();
        });
        let err = full(&index_of(&t).unwrap_err());
        assert!(err.contains("a: duplicate entry"), "{err}");
        let t = written(|w| {
            w.dir("d").unwrap();
            w.dir("d").unwrap();
        });
        assert!(index_of(&t).is_ok());
        let mut t = written(|w| w.bytes("a", b"1").unwrap());
        t.extend_from_slice(b"junk");
        let err = full(&index_of(&t).unwrap_err());
        assert!(err.contains("after the end-of-archive"), "{err}");
    }

    #[test]
    fn member_names() {
        let cases = [
            ("a.tar", Some("a.tar")),
            ("./blobs//sha256/x", Some("blobs/sha256/x")),
            ("/abs", Some("abs")),
            ("../x", None),
            ("a/../../x", None),
            ("", None),
            (".", None),
        ];
        for (input, want) in cases {
            assert_eq!(clean_member(input).as_deref(), want, "{input}");
        }
    }

    /// A tar of regular files (directories when the name ends in `/`) and links:
    /// (name, Ok(data) | Err((typeflag, target))).
    /// A member for [`linked`]: its name, and its data or (typeflag, link target).
    type Member<'a> = (&'a str, Result<&'a [u8], (u8, &'a str)>);

    fn linked(entries: &[Member<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, what) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match what {
                Ok(_) if name.ends_with('/') => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, name, &b""[..]).unwrap();
                }
                Ok(data) => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, name, *data).unwrap();
                }
                Err((flag, target)) => {
                    h.set_entry_type(tar::EntryType::new(*flag));
                    h.set_size(0);
                    b.append_link(&mut h, name, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn read(idx: &ArchiveIndex, name: &str) -> Result<Vec<u8>, String> {
        let mut v = Vec::new();
        idx.open_entry(name, "a layer")
            .map_err(|e| full(&e))?
            .read_to_end(&mut v)
            .unwrap();
        Ok(v)
    }

    #[test]
    fn follows_links_between_members() {
        let t = linked(&[
            ("a/layer.tar", Ok(b"shared")),
            ("b/layer.tar", Err((b'2', "../a/layer.tar"))),
            ("c/layer.tar", Err((b'1', "a/layer.tar"))),
            ("d/layer.tar", Err((b'2', "../b/layer.tar"))),
            ("e/layer.tar", Err((b'2', "./../c/./layer.tar"))),
        ]);
        let idx = index_of(&t).unwrap();
        for name in [
            "a/layer.tar",
            "b/layer.tar",
            "c/layer.tar",
            "d/layer.tar",
            "e/layer.tar",
        ] {
            assert_eq!(read(&idx, name).unwrap(), b"shared", "{name}");
        }
    }

    #[test]
    fn refuses_links_that_cannot_be_followed() {
        let cases: &[(&[Member<'_>], &str)] = &[
            (
                &[("x/layer.tar", Err((b'2', "../../etc/passwd")))],
                "x/layer.tar: link to \"../../etc/passwd\" leaves the archive",
            ),
            (
                &[("x/layer.tar", Err((b'2', "/etc/passwd")))],
                "x/layer.tar: link to \"/etc/passwd\" is absolute",
            ),
            (
                &[("x/layer.tar", Err((b'2', "../y/layer.tar")))],
                "x/layer.tar: link to \"y/layer.tar\" points to a member that is not in the archive",
            ),
            (
                &[
                    ("x/layer.tar", Err((b'2', "../y/layer.tar"))),
                    ("y/layer.tar", Err((b'2', "../x/layer.tar"))),
                ],
                "more than 16 links in a row",
            ),
            (
                &[("x/layer.tar", Err((b'2', "layer.tar")))],
                "more than 16 links in a row",
            ),
            (
                &[("d/", Ok(b"")), ("x/layer.tar", Err((b'2', "../d")))],
                "d: is a directory",
            ),
        ];
        for (entries, want) in cases {
            let t = linked(entries);
            let idx = index_of(&t).unwrap();
            let err = read(&idx, "x/layer.tar").unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
        // An escaping hard link is refused by the parser while indexing.
        let t = linked(&[("x", Err((b'1', "../../etc/passwd")))]);
        let err = full(&index_of(&t).unwrap_err());
        assert!(err.contains("hardlink target escapes"), "{err}");
    }

    #[test]
    fn indexes_compressed_archives() {
        let t = written(|w| w.bytes("manifest.json", b"[1]").unwrap());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&t).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(t.as_slice(), 3).unwrap();
        for bytes in [gz.clone(), zst] {
            let idx = index_of(&bytes).unwrap();
            assert_eq!(idx.read_document("manifest.json", "m").unwrap(), b"[1]");
        }
        // From a stream too (stdin).
        let f = spool_archive(gz.as_slice(), Path::new("<stdin>")).unwrap();
        let idx = ArchiveIndex::from_file(f, Path::new("<stdin>")).unwrap();
        assert_eq!(idx.read_document("manifest.json", "m").unwrap(), b"[1]");
        // Damaged and unsupported compressions say so.
        let err = full(&index_of(&gz[..gz.len() - 10]).unwrap_err());
        assert!(err.contains("decompressing the archive"), "{err}");
        let mut lz4 = vec![0x04, 0x22, 0x4d, 0x18];
        lz4.extend_from_slice(&[0; 100]);
        let err = full(&index_of(&lz4).unwrap_err());
        assert!(err.contains("lz4 compression is not supported"), "{err}");
    }
}
