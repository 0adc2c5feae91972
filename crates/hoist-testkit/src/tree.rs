//! Directory-tree snapshots and comparison: the oracle for "same tree".
//!
//! [`Tree::scan`] records, for every path under a root (never following symlinks): the type,
//! permission bits (setuid/setgid/sticky included), owner, size, the SHA-256 of a regular file's
//! content, a symlink's target, a device's numbers, the extended attributes, the hardlink group and
//! the times. [`Tree::diff`] lists every difference under a [`Compare`] policy, so an assertion
//! failure says exactly what differs. [`merge_overlay`] stacks per-layer trees by the overlayfs
//! rules (whiteout devices, opaque directories), to check a per-layer build against a flattened
//! one.
//!
//! Paths are raw bytes (`Vec<u8>`), so non-UTF-8 names compare exactly.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// The xattr overlayfs uses to mark an opaque directory.
pub const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: its size and the lower-case hex SHA-256 of its content.
    File {
        /// Size in bytes.
        size: u64,
        /// SHA-256 of the content, hex.
        sha256: String,
    },
    /// A directory.
    Dir,
    /// A symbolic link and its target bytes.
    Symlink(Vec<u8>),
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
}

impl Kind {
    /// A whiteout in overlayfs form: a 0/0 character device.
    pub fn is_overlay_whiteout(&self) -> bool {
        matches!(self, Kind::Char(0, 0))
    }
}

/// One path of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Type and payload.
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes, name → value.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For a non-directory with several links in the tree: the smallest path of its group.
    pub link_group: Option<Vec<u8>>,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Change time, seconds and nanoseconds (changes on chmod, chown, xattr and content writes).
    pub ctime: (i64, i64),
}

/// What [`Tree::diff`] compares. Type, path and (for symlinks and devices) payload are always
/// compared.
#[derive(Debug, Clone)]
pub struct Compare {
    /// Permission bits.
    pub mode: bool,
    /// The setuid, setgid and sticky bits, when `mode` is compared (`debugfs rdump` and
    /// `fsck.erofs --extract` lose some of them).
    pub special_bits: bool,
    /// Owner and group.
    pub owner: bool,
    /// File content (size and hash).
    pub content: bool,
    /// Extended attributes.
    pub xattrs: bool,
    /// Extended attributes whose name starts with one of these are ignored.
    pub ignore_xattr_prefixes: Vec<String>,
    /// Hardlink groups.
    pub hardlinks: bool,
    /// Modification times.
    pub mtime: bool,
    /// Change times (for sentinels: any chmod/chown/write shows).
    pub ctime: bool,
    /// Metadata of the root directory itself (path `""`).
    pub root_meta: bool,
    /// Fifos and sockets (some readers, e.g. `debugfs rdump`, skip them).
    pub specials: bool,
    /// Device nodes (`debugfs rdump` skips them).
    pub devices: bool,
}

impl Default for Compare {
    /// Everything the "same tree" of the issue covers: path, type, mode, owner, size, content
    /// hash, link target, xattrs and hardlinks; not times.
    fn default() -> Self {
        Compare {
            mode: true,
            special_bits: true,
            owner: true,
            content: true,
            xattrs: true,
            ignore_xattr_prefixes: Vec::new(),
            hardlinks: true,
            mtime: false,
            ctime: false,
            root_meta: true,
            specials: true,
            devices: true,
        }
    }
}

impl Compare {
    /// Everything, times included: for sentinels that must be left untouched.
    pub fn exact() -> Compare {
        Compare {
            mtime: true,
            ctime: true,
            ..Compare::default()
        }
    }

    /// Ignores xattrs whose name starts with `prefix`.
    pub fn ignore_xattrs(mut self, prefix: &str) -> Compare {
        self.ignore_xattr_prefixes.push(prefix.to_string());
        self
    }
}

/// A snapshot of a directory tree: relative path (no leading `/`; the root is `""`) → node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// The nodes, ordered by path bytes (a directory precedes its content).
    pub nodes: BTreeMap<Vec<u8>, Node>,
}

/// Shows a path for messages.
pub fn show(p: &[u8]) -> String {
    if p.is_empty() {
        "/".to_string()
    } else {
        format!("/{}", String::from_utf8_lossy(p))
    }
}

fn read_xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(out),
            Err(e) => return Err(e.into()),
        }
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name_os, &mut value[..]) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(e) => return Err(e.into()),
            }
        };
        value.truncate(len);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    Ok(out)
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn dev_numbers(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff);
    (major as u32, minor as u32)
}

impl Tree {
    /// Snapshots the tree under `root` (which is included as path `""`). Symlinks are recorded,
    /// never followed.
    pub fn scan(root: &Path) -> io::Result<Tree> {
        let mut nodes = BTreeMap::new();
        let mut inodes: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
        let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(rel) = stack.pop() {
            let full = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(OsStr::from_bytes(&rel))
            };
            let md = fs::symlink_metadata(&full)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", full.display())))?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                for entry in fs::read_dir(&full)? {
                    let name = entry?.file_name();
                    let mut child = rel.clone();
                    if !child.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(name.as_bytes());
                    stack.push(child);
                }
                Kind::Dir
            } else if ft.is_file() {
                Kind::File {
                    size: md.len(),
                    sha256: sha256_file(&full)?,
                }
            } else if ft.is_symlink() {
                Kind::Symlink(fs::read_link(&full)?.as_os_str().as_bytes().to_vec())
            } else if ft.is_char_device() {
                let (a, b) = dev_numbers(md.rdev());
                Kind::Char(a, b)
            } else if ft.is_block_device() {
                let (a, b) = dev_numbers(md.rdev());
                Kind::Block(a, b)
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            };
            if !ft.is_dir() && md.nlink() > 1 {
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            nodes.insert(
                rel,
                Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    xattrs: read_xattrs(&full)?,
                    link_group: None,
                    mtime: md.mtime(),
                    ctime: (md.ctime(), md.ctime_nsec()),
                },
            );
        }
        for (_, mut paths) in inodes {
            if paths.len() < 2 {
                continue;
            }
            paths.sort();
            let leader = paths[0].clone();
            for p in paths {
                if let Some(n) = nodes.get_mut(&p) {
                    n.link_group = Some(leader.clone());
                }
            }
        }
        Ok(Tree { nodes })
    }

    /// The node at `path` (relative, no leading `/`).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path.as_bytes())
    }

    /// Every difference between `self` (expected) and `other` (actual) under `cmp`, one line
    /// each; empty when the trees are the same.
    pub fn diff(&self, other: &Tree, cmp: &Compare) -> Vec<String> {
        let mut out = Vec::new();
        let special = |n: &Node| {
            (!cmp.specials && matches!(n.kind, Kind::Fifo | Kind::Socket))
                || (!cmp.devices && matches!(n.kind, Kind::Char(..) | Kind::Block(..)))
        };
        for (p, a) in &self.nodes {
            if special(a) {
                continue;
            }
            let Some(b) = other.nodes.get(p) else {
                out.push(format!("{}: only in expected ({:?})", show(p), a.kind));
                continue;
            };
            diff_node(p, a, b, cmp, &mut out);
        }
        for (p, b) in &other.nodes {
            if special(b) {
                continue;
            }
            if !self.nodes.contains_key(p) {
                out.push(format!("{}: only in actual ({:?})", show(p), b.kind));
            }
        }
        out
    }

    /// Panics with every difference (at most 50 shown) when the trees differ.
    pub fn assert_same(&self, other: &Tree, cmp: &Compare, what: &str) {
        let d = self.diff(other, cmp);
        if !d.is_empty() {
            let shown: Vec<&str> = d.iter().take(50).map(String::as_str).collect();
            panic!(
                "{what}: {} differences (expected vs actual):\n{}",
                d.len(),
                shown.join("\n")
            );
        }
    }

    /// A copy without the paths `keep` rejects (and without their descendants when a
    /// directory is rejected).
    pub fn filtered(&self, keep: impl Fn(&[u8], &Node) -> bool) -> Tree {
        let mut nodes = BTreeMap::new();
        let mut dropped: Vec<Vec<u8>> = Vec::new();
        for (p, n) in &self.nodes {
            if dropped.iter().any(|d| is_under(p, d)) {
                continue;
            }
            if keep(p, n) {
                nodes.insert(p.clone(), n.clone());
            } else {
                dropped.push(p.clone());
            }
        }
        Tree { nodes }
    }
}

/// Whether `p` is `dir` or lies below it.
pub fn is_under(p: &[u8], dir: &[u8]) -> bool {
    if dir.is_empty() {
        return true;
    }
    p.starts_with(dir) && (p.len() == dir.len() || p[dir.len()] == b'/')
}

fn diff_node(p: &[u8], a: &Node, b: &Node, cmp: &Compare, out: &mut Vec<String>) {
    let path = show(p);
    let kinds_equal = match (&a.kind, &b.kind) {
        (
            Kind::File {
                size: s1,
                sha256: h1,
            },
            Kind::File {
                size: s2,
                sha256: h2,
            },
        ) => !cmp.content || (s1 == s2 && h1 == h2),
        (x, y) => x == y,
    };
    if !kinds_equal {
        out.push(format!("{path}: type/content {:?} != {:?}", a.kind, b.kind));
    }
    if p.is_empty() && !cmp.root_meta {
        return;
    }
    let mask = if cmp.special_bits { 0o7777 } else { 0o0777 };
    if cmp.mode && a.mode & mask != b.mode & mask {
        out.push(format!("{path}: mode {:o} != {:o}", a.mode, b.mode));
    }
    if cmp.owner && (a.uid, a.gid) != (b.uid, b.gid) {
        out.push(format!(
            "{path}: owner {}:{} != {}:{}",
            a.uid, a.gid, b.uid, b.gid
        ));
    }
    if cmp.xattrs {
        let keep = |m: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
            m.iter()
                .filter(|(k, _)| !cmp.ignore_xattr_prefixes.iter().any(|x| k.starts_with(x)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let (xa, xb) = (keep(&a.xattrs), keep(&b.xattrs));
        if xa != xb {
            out.push(format!("{path}: xattrs {} != {}", XShow(&xa), XShow(&xb)));
        }
    }
    if cmp.hardlinks && a.link_group != b.link_group {
        out.push(format!(
            "{path}: hardlink group {:?} != {:?}",
            a.link_group.as_deref().map(show),
            b.link_group.as_deref().map(show)
        ));
    }
    if cmp.mtime && a.mtime != b.mtime {
        out.push(format!("{path}: mtime {} != {}", a.mtime, b.mtime));
    }
    if cmp.ctime && a.ctime != b.ctime {
        out.push(format!("{path}: ctime {:?} != {:?}", a.ctime, b.ctime));
    }
}

struct XShow<'a>(&'a BTreeMap<String, Vec<u8>>);

impl fmt::Display for XShow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={:?}", String::from_utf8_lossy(v))?;
        }
        f.write_str("}")
    }
}

/// Stacks per-layer trees (base first) by the overlayfs rules and returns the merged view: a
/// 0/0 character device hides the path below it; a directory with `trusted.overlay.opaque=y`
/// hides everything below it in lower layers; a non-directory replaces whatever was there, a
/// directory over a directory merges (the upper one's metadata wins). `trusted.overlay.*`
/// xattrs do not show in the merged view. Hardlink groups are cleared (they do not cross
/// layers); the root directory takes the top layer's metadata.
pub fn merge_overlay(layers: &[Tree]) -> Tree {
    let mut merged: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
    for layer in layers {
        for (p, n) in &layer.nodes {
            let clean = |n: &Node| {
                let mut n = n.clone();
                n.xattrs.retain(|k, _| !k.starts_with("trusted.overlay."));
                n.link_group = None;
                n
            };
            if n.kind.is_overlay_whiteout() {
                remove_subtree(&mut merged, p, true);
                continue;
            }
            let opaque =
                n.kind == Kind::Dir && n.xattrs.get(OVERLAY_OPAQUE).is_some_and(|v| v == b"y");
            let lower_is_dir = merged.get(p).is_some_and(|m| m.kind == Kind::Dir);
            if n.kind != Kind::Dir || !lower_is_dir || opaque {
                // Replace: a non-directory, a directory over a non-directory, or an opaque
                // directory: the lower subtree goes.
                remove_subtree(&mut merged, p, true);
            }
            merged.insert(p.clone(), clean(n));
        }
    }
    Tree { nodes: merged }
}

fn remove_subtree(m: &mut BTreeMap<Vec<u8>, Node>, p: &[u8], include_self: bool) {
    let doomed: Vec<Vec<u8>> = m
        .range(p.to_vec()..)
        .take_while(|(k, _)| k.starts_with(p))
        .filter(|(k, _)| is_under(k, p) && (include_self || k.as_slice() != p))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        m.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: Kind) -> Node {
        Node {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
            link_group: None,
            mtime: 0,
            ctime: (0, 0),
        }
    }

    fn tree(items: &[(&str, Kind)]) -> Tree {
        Tree {
            nodes: items
                .iter()
                .map(|(p, k)| (p.as_bytes().to_vec(), node(k.clone())))
                .collect(),
        }
    }

    #[test]
    fn overlay_rules() {
        let file = |c: &str| Kind::File {
            size: c.len() as u64,
            sha256: c.to_string(),
        };
        let base = tree(&[
            ("", Kind::Dir),
            ("a", Kind::Dir),
            ("a/x", file("x")),
            ("a/y", file("y")),
            ("b", Kind::Dir),
            ("b/old", file("old")),
            ("c", file("c")),
            ("a.b", file("ab")),
        ]);
        let mut upper = tree(&[
            ("", Kind::Dir),
            ("a", Kind::Dir),
            ("a/x", Kind::Char(0, 0)),
            ("a/z", file("z")),
            ("b", Kind::Dir),
            ("b/new", file("new")),
            ("c", Kind::Dir),
            ("c/in", file("in")),
        ]);
        upper
            .nodes
            .get_mut(b"b".as_slice())
            .unwrap()
            .xattrs
            .insert(OVERLAY_OPAQUE.into(), b"y".to_vec());
        let m = merge_overlay(&[base, upper]);
        let paths: Vec<String> = m.nodes.keys().map(|k| show(k)).collect();
        assert_eq!(
            paths,
            [
                "/", "/a", "/a.b", "/a/y", "/a/z", "/b", "/b/new", "/c", "/c/in"
            ]
        );
        assert!(m.get("b").unwrap().xattrs.is_empty());
    }

    #[test]
    fn under() {
        assert!(is_under(b"a/b", b"a"));
        assert!(is_under(b"a", b"a"));
        assert!(!is_under(b"ab", b"a"));
        assert!(is_under(b"x", b""));
    }

    #[test]
    fn scan_and_diff() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("d")).unwrap();
        fs::write(d.path().join("d/f"), "hi").unwrap();
        fs::hard_link(d.path().join("d/f"), d.path().join("g")).unwrap();
        std::os::unix::fs::symlink("d/f", d.path().join("s")).unwrap();
        let a = Tree::scan(d.path()).unwrap();
        assert_eq!(a.get("g").unwrap().link_group.as_deref(), Some(&b"d/f"[..]));
        assert_eq!(a.get("s").unwrap().kind, Kind::Symlink(b"d/f".to_vec()));
        assert!(a.diff(&a, &Compare::exact()).is_empty());
        fs::write(d.path().join("d/f"), "ho").unwrap();
        let b = Tree::scan(d.path()).unwrap();
        let diff = a.diff(&b, &Compare::default());
        assert_eq!(diff.len(), 2, "{diff:?}"); // d/f and g
    }
}
