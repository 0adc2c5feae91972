//! Image sizes: `--size auto|SIZE`, and what a tree needs.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::str::FromStr;

use crate::MkfsError;

/// The size of an ext4 image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Size {
    /// What the tree needs plus headroom for metadata (see [`Usage::ext4_bytes`]).
    #[default]
    Auto,
    /// Exactly this many bytes (rounded up to 4 KiB).
    Bytes(u64),
}

impl FromStr for Size {
    type Err = MkfsError;
    /// `auto`, `1073741824`, `512M`, `2G`, `1.5G`, `64MiB` (binary units).
    fn from_str(s: &str) -> Result<Size, MkfsError> {
        let bad = || MkfsError::InvalidSize {
            input: s.chars().take(100).collect(),
        };
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(Size::Auto);
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let v: f64 = num.parse().map_err(|_| bad())?;
        if !v.is_finite() || v <= 0.0 {
            return Err(bad());
        }
        let bytes = v * mult as f64;
        if bytes > (1u64 << 50) as f64 {
            return Err(bad());
        }
        Ok(Size::Bytes((bytes as u64).div_ceil(4096) * 4096))
    }
}

/// What a directory tree holds, for sizing an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Inodes (hardlinks counted once).
    pub inodes: u64,
    /// 4 KiB blocks of file data, directories, long symlinks and xattr blocks.
    pub blocks: u64,
    /// Apparent bytes of regular files (hardlinks counted once).
    pub file_bytes: u64,
}

const BLOCK: u64 = 4096;

impl Usage {
    /// Walks `root` (never following symlinks).
    pub fn of(root: &Path) -> Result<Usage, MkfsError> {
        let mut u = Usage::default();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut dir_bytes = 24u64; // "." and ".."
            let list = fs::read_dir(&dir).map_err(|e| MkfsError::io("read", &dir, e))?;
            for item in list {
                let item = item.map_err(|e| MkfsError::io("read", &dir, e))?;
                let name_len = item.file_name().len() as u64;
                dir_bytes += 8 + name_len.div_ceil(4) * 4;
                let p = item.path();
                let m = fs::symlink_metadata(&p).map_err(|e| MkfsError::io("stat", &p, e))?;
                if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                    continue;
                }
                u.inodes += 1;
                let xattr_bytes = xattr_size(&p);
                if xattr_bytes > 96 {
                    u.blocks += 1;
                }
                if m.is_dir() {
                    stack.push(p);
                } else if m.is_file() {
                    u.file_bytes += m.len();
                    let b = m.len().div_ceil(BLOCK);
                    // Extent tree blocks for large files.
                    u.blocks += b + b / 32768;
                } else if m.file_type().is_symlink() && m.len() > 59 {
                    u.blocks += 1;
                }
            }
            u.blocks += dir_bytes.div_ceil(BLOCK).max(1);
        }
        u.inodes += 1; // the root
        Ok(u)
    }

    /// Inodes to ask mke2fs for: the tree's, with headroom for a writable root.
    pub fn ext4_inodes(&self) -> u64 {
        (self.inodes + self.inodes / 4 + 1024).max(2048)
    }

    /// Bytes of an ext4 image for this tree: data blocks and inode tables, plus 15% for
    /// bitmaps, group descriptors and block fragmentation, the journal mke2fs will create,
    /// and 16 MiB of free space; rounded up to 4 MiB.
    pub fn ext4_bytes(&self) -> u64 {
        let data = self.blocks * BLOCK;
        let inode_table = self.ext4_inodes() * 256;
        let base = data + inode_table;
        let journal = journal_bytes((base + base / 4) / BLOCK);
        let total = base + base * 15 / 100 + journal + (16 << 20);
        total.div_ceil(4 << 20) * (4 << 20)
    }
}

/// The journal mke2fs picks for a filesystem of `blocks` 4 KiB blocks
/// (`ext2fs_default_journal_size`, e2fsprogs 1.47).
fn journal_bytes(blocks: u64) -> u64 {
    let jblocks: u64 = match blocks {
        b if b < 2048 => 0,
        b if b < 32_768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16_384,
        b if b < 8192 * 1024 => 32_768,
        b if b < 16_384 * 1024 => 65_536,
        b if b < 32_768 * 1024 => 131_072,
        _ => 262_144,
    };
    jblocks * BLOCK
}

fn xattr_size(p: &Path) -> u64 {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names[..]) else {
        return 0;
    };
    let mut total = 0u64;
    for name in names[..n].split(|b| *b == 0).filter(|x| !x.is_empty()) {
        let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name);
        let mut v = [0u8; 0];
        let len = rustix::fs::lgetxattr(p, name, &mut v[..]).unwrap_or(0);
        total += 16 + name.len() as u64 + len as u64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sizes() {
        let ok: &[(&str, Size)] = &[
            ("auto", Size::Auto),
            ("AUTO", Size::Auto),
            ("4096", Size::Bytes(4096)),
            ("1", Size::Bytes(4096)),
            ("512M", Size::Bytes(512 << 20)),
            ("2G", Size::Bytes(2 << 30)),
            ("1.5G", Size::Bytes(3 << 29)),
            ("64MiB", Size::Bytes(64 << 20)),
            ("10k", Size::Bytes(12288)),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<Size>().unwrap(), *want, "{s}");
        }
        for bad in ["", "0", "-1G", "1X", "G", "1.2.3M", "99999999T"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_counts_hardlinks_once() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d/f"), vec![1u8; 10_000]).unwrap();
        fs::hard_link(t.path().join("d/f"), t.path().join("h")).unwrap();
        std::os::unix::fs::symlink("x".repeat(100), t.path().join("s")).unwrap();
        let u = Usage::of(t.path()).unwrap();
        assert_eq!(u.inodes, 4); // root, d, f, s
        assert_eq!(u.file_bytes, 10_000);
        assert_eq!(u.blocks, 3 + 1 + 2); // file, symlink, two directories
        assert!(u.ext4_bytes() >= 16 << 20);
        assert_eq!(u.ext4_bytes() % (4 << 20), 0);
    }
}
