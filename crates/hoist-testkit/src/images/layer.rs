//! Layer entries and deterministic tar + compression.
//!
//! Every header field that could vary is fixed: mtime (default [`DEFAULT_MTIME`]), uid/gid 0, no
//! user/group names, GNU headers (GNU long-name records for paths over 100 bytes), and xattrs as
//! PAX `SCHILY.xattr.*` records. Entries are written in the order given, so a layer's bytes depend
//! only on its spec. gzip uses a fixed header (mtime 0, no file name, OS 255) and level 6; zstd
//! uses level 3 on one thread.

use std::io::{self, Write as _};

use super::Compression;

/// Default mtime of generated entries: 2024-01-01T00:00:00Z.
pub const DEFAULT_MTIME: u64 = 1_704_067_200;

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with this content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to this target (not resolved).
    Symlink(String),
    /// A hard link to this earlier path of the same layer.
    Hardlink(String),
    /// A named pipe.
    Fifo,
    /// A character device (major, minor).
    CharDevice(u32, u32),
    /// A block device (major, minor).
    BlockDevice(u32, u32),
}

/// One entry of a layer tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path inside the layer (no leading `/`).
    pub path: String,
    /// Type and payload.
    pub kind: EntryKind,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Extended attributes, written as PAX `SCHILY.xattr.NAME` records, in this order.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

fn rel(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

impl Entry {
    fn new(path: &str, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: rel(path),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
        }
    }
    /// A regular file, mode 0644.
    pub fn file(path: &str, content: impl Into<Vec<u8>>) -> Entry {
        Entry::new(path, EntryKind::File(content.into()), 0o644)
    }
    /// An executable regular file, mode 0755.
    pub fn executable(path: &str, content: impl Into<Vec<u8>>) -> Entry {
        Entry::new(path, EntryKind::File(content.into()), 0o755)
    }
    /// A file of `size` pseudo-random (incompressible) bytes from `seed`: same seed, same bytes.
    pub fn random_file(path: &str, size: usize, seed: u64) -> Entry {
        Entry::file(path, seeded_bytes(size, seed))
    }
    /// A directory, mode 0755.
    pub fn dir(path: &str) -> Entry {
        Entry::new(path, EntryKind::Dir, 0o755)
    }
    /// A symlink, mode 0777.
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::new(path, EntryKind::Symlink(target.to_string()), 0o777)
    }
    /// A hard link to `target`, a path written earlier in the same layer.
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::new(path, EntryKind::Hardlink(rel(target)), 0o644)
    }
    /// A named pipe, mode 0644.
    pub fn fifo(path: &str) -> Entry {
        Entry::new(path, EntryKind::Fifo, 0o644)
    }
    /// A character device, mode 0666.
    pub fn char_device(path: &str, major: u32, minor: u32) -> Entry {
        Entry::new(path, EntryKind::CharDevice(major, minor), 0o666)
    }
    /// A whiteout hiding `path` of lower layers: an empty file `DIR/.wh.NAME`.
    pub fn whiteout(path: &str) -> Entry {
        let p = rel(path);
        let p = p.trim_end_matches('/');
        let wh = match p.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{p}"),
        };
        Entry::file(&wh, Vec::new())
    }
    /// An opaque-directory marker for `dir`: an empty file `DIR/.wh..wh..opq`.
    pub fn opaque(dir: &str) -> Entry {
        let d = rel(dir);
        let d = d.trim_end_matches('/');
        Entry::file(&format!("{d}/.wh..wh..opq"), Vec::new())
    }
    /// Sets the permission bits.
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }
    /// Sets the owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    /// Sets the modification time (seconds since the epoch).
    pub fn mtime(mut self, mtime: u64) -> Entry {
        self.mtime = mtime;
        self
    }
    /// Adds an extended attribute.
    pub fn xattr(mut self, name: &str, value: impl Into<Vec<u8>>) -> Entry {
        self.xattrs.push((name.to_string(), value.into()));
        self
    }
}

/// Deterministic pseudo-random bytes (splitmix64), stable across versions of the kit.
pub fn seeded_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// Writes `entries` as an uncompressed tar, terminated by the two zero blocks.
pub fn tar_bytes(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &e.xattrs {
                data.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
            }
            let mut h = tar::Header::new_ustar();
            h.set_path("PaxHeaders/entry")?;
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(e.mtime);
            h.set_cksum();
            b.append(&h, data.as_slice())?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(0);
        match &e.kind {
            EntryKind::File(content) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, &e.path, content.as_slice())?;
            }
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                let p = format!("{}/", e.path.trim_end_matches('/'));
                b.append_data(&mut h, p, io::empty())?;
            }
            EntryKind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, &e.path, target)?;
            }
            EntryKind::Hardlink(target) => {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, &e.path, target)?;
            }
            EntryKind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                b.append_data(&mut h, &e.path, io::empty())?;
            }
            EntryKind::CharDevice(major, minor) | EntryKind::BlockDevice(major, minor) => {
                h.set_entry_type(if matches!(e.kind, EntryKind::CharDevice(..)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                b.append_data(&mut h, &e.path, io::empty())?;
            }
        }
    }
    b.into_inner()
}

/// Compresses a tar with `compression`, deterministically.
pub fn compress(tar: &[u8], compression: Compression) -> io::Result<Vec<u8>> {
    match compression {
        Compression::None => Ok(tar.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(Vec::new(), flate2::Compression::new(6));
            enc.write_all(tar)?;
            enc.finish()
        }
        Compression::Zstd => zstd::stream::encode_all(tar, 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        let r = pax_record("SCHILY.xattr.user.a", b"b");
        let s = String::from_utf8(r.clone()).unwrap();
        let (n, _) = s.split_once(' ').unwrap();
        assert_eq!(n.parse::<usize>().unwrap(), r.len());
        // A length crossing a digit boundary: 9 + 1 rest → 10/11 digits.
        let r = pax_record("k", &[b'x'; 95]);
        let s = String::from_utf8(r.clone()).unwrap();
        assert_eq!(
            s.split_once(' ').unwrap().0.parse::<usize>().unwrap(),
            r.len()
        );
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(Entry::whiteout("/etc/motd").path, "etc/.wh.motd");
        assert_eq!(Entry::whiteout("top").path, ".wh.top");
        assert_eq!(Entry::opaque("usr/share/").path, "usr/share/.wh..wh..opq");
    }

    #[test]
    fn seeded_is_stable() {
        assert_eq!(seeded_bytes(20, 1), seeded_bytes(20, 1));
        assert_ne!(seeded_bytes(20, 1), seeded_bytes(20, 2));
        assert_eq!(seeded_bytes(3, 7).len(), 3);
    }

    #[test]
    fn tar_reads_back() {
        let entries = vec![
            Entry::dir("a"),
            Entry::file("a/f", "hi").xattr("user.k", "v"),
            Entry::symlink("a/s", "f"),
            Entry::hardlink("a/h", "a/f"),
            Entry::file(&format!("a/{}", "n".repeat(150)), "long"),
            Entry::fifo("a/p"),
        ];
        let t = tar_bytes(&entries).unwrap();
        let mut ar = tar::Archive::new(t.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().to_string();
            if p == "a/f" {
                let x: Vec<_> = e
                    .pax_extensions()
                    .unwrap()
                    .unwrap()
                    .map(|x| x.unwrap().key().unwrap().to_string())
                    .collect();
                assert_eq!(x, vec!["SCHILY.xattr.user.k"]);
            }
            assert_eq!(e.header().mtime().unwrap(), DEFAULT_MTIME);
            seen.push(p);
        }
        assert_eq!(seen.len(), 6);
        assert!(seen[4].ends_with(&"n".repeat(150)));
        assert_eq!(compress(&t, Compression::Gzip).unwrap(), {
            compress(&t, Compression::Gzip).unwrap()
        });
    }
}
