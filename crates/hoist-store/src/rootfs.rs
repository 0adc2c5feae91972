//! The store's view of the rootfs cache (`hoist/rootfs/`, written by hoist-unpack): what
//! GC, fsck and df need to know about its entries, their sizes and how to remove them.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hoist_types::Digest;
use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

/// The record file of a rootfs cache entry.
pub(crate) const ENTRY_RECORD: &str = "entry.json";

/// Flattened (keyed by a top chain ID) or one layer (keyed by its diff ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootfsKind {
    /// All layers merged.
    Flat,
    /// One layer.
    Layer,
}

/// An entry directory's name: `<kind>-<format>-<alg>-<hex>` → (kind, format, key).
pub(crate) fn parse_entry_name(name: &str) -> Option<(RootfsKind, String, Digest)> {
    let (kind, rest) = name.split_once('-')?;
    let kind = match kind {
        "flat" => RootfsKind::Flat,
        "layer" => RootfsKind::Layer,
        _ => return None,
    };
    let mut parts = rest.rsplitn(3, '-');
    let hex = parts.next()?;
    let alg = parts.next()?;
    let format = parts.next()?;
    if format.is_empty() {
        return None;
    }
    let key = Digest::parse(&format!("{alg}:{hex}")).ok()?;
    Some((kind, format.to_owned(), key))
}

/// The entry a temp directory `.tmp-<entry>.<…>` belongs to.
pub(crate) fn temp_entry_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(".tmp-")?;
    let entry = rest.split('.').next()?;
    parse_entry_name(entry).map(|_| entry)
}

/// The fields of `entry.json` the store relies on.
#[derive(Debug, Deserialize)]
struct EntryFile {
    kind: RootfsKind,
    key: Digest,
    artifact: String,
}

/// What is in `hoist/rootfs/`.
#[derive(Debug, Default)]
pub(crate) struct RootfsScan {
    /// Entry directories with a valid name.
    pub entries: Vec<RootfsDir>,
    /// Temp directories of builds (or removals) and the lock name of their entry.
    pub temps: Vec<(PathBuf, String)>,
    /// Anything else.
    pub strays: Vec<PathBuf>,
}

/// One entry directory.
#[derive(Debug, Clone)]
pub(crate) struct RootfsDir {
    pub dir: PathBuf,
    pub name: String,
    pub kind: RootfsKind,
    pub key: Digest,
    /// Why the entry is not whole (bad or missing `entry.json`, missing artifact).
    pub broken: Option<String>,
}

impl RootfsDir {
    /// Its lock in `hoist/locks/` (the one hoist-unpack builds it under).
    pub fn lock_name(&self) -> String {
        format!("rootfs-{}", self.name)
    }
}

impl Store {
    /// List the rootfs cache.
    pub(crate) fn scan_rootfs(&self) -> Result<RootfsScan, StoreError> {
        let dir = self.rootfs_dir();
        let mut scan = RootfsScan::default();
        let list = match fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(scan),
            Err(e) => return Err(StoreError::read(dir, e)),
        };
        for item in list {
            let item = item.map_err(|e| StoreError::read(&dir, e))?;
            let path = item.path();
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                scan.strays.push(path);
                continue;
            };
            if let Some(entry) = temp_entry_name(&name) {
                scan.temps.push((path, format!("rootfs-{entry}")));
                continue;
            }
            let Some((kind, _, key)) = parse_entry_name(&name) else {
                scan.strays.push(path);
                continue;
            };
            let broken = check_entry(&path, kind, &key);
            scan.entries.push(RootfsDir {
                dir: path,
                name,
                kind,
                key,
                broken,
            });
        }
        scan.entries.sort_by(|a, b| a.dir.cmp(&b.dir));
        scan.temps.sort();
        scan.strays.sort();
        Ok(scan)
    }

    /// Move a rootfs entry (or temp directory) out of sight, under its lock, unless a
    /// build holds it: `Ok(None)` then. The returned path is to be removed with
    /// [`remove_tree`] (possibly after the store lock is released).
    pub(crate) fn retire_rootfs(
        &self,
        path: &Path,
        lock_name: &str,
    ) -> Result<Option<PathBuf>, StoreError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let Some(_lock) = self.try_lock_named(lock_name)? else {
            return Ok(None);
        };
        let entry = lock_name.strip_prefix("rootfs-").unwrap_or(lock_name);
        let doomed = self.rootfs_dir().join(format!(
            ".tmp-{entry}.gc.{}.{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(path, &doomed) {
            Ok(()) => Ok(Some(doomed)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("rename", path, e)),
        }
    }
}

/// `None` when the entry is whole: a readable `entry.json` that names this kind and key,
/// and its artifact present.
fn check_entry(dir: &Path, kind: RootfsKind, key: &Digest) -> Option<String> {
    let path = dir.join(ENTRY_RECORD);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) => return Some(format!("cannot read {}: {e}", path.display())),
    };
    let rec: EntryFile = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return Some(format!("invalid {}: {e}", path.display())),
    };
    if rec.kind != kind || &rec.key != key {
        return Some(format!(
            "{} describes another entry ({:?} {})",
            path.display(),
            rec.kind,
            rec.key
        ));
    }
    if rec.artifact.is_empty() || rec.artifact.contains('/') || rec.artifact.starts_with('.') {
        return Some(format!("invalid artifact name {:?}", rec.artifact));
    }
    if fs::symlink_metadata(dir.join(&rec.artifact)).is_err() {
        return Some(format!("artifact {} is missing", rec.artifact));
    }
    None
}

/// The format name of erofs tar index entries (`hoist rootfs --tar-index`), whose files
/// are in the layers' tars: blobs named by their diff IDs.
pub(crate) const TAR_INDEX_FORMAT: &str = "erofs-tar-index";

/// The layer tars (by diff ID) a tar index entry needs: its key (one layer) or the diff
/// IDs its `entry.json` lists (flattened). Empty for every other entry, and for an entry
/// whose record cannot be read (that is reported as broken already).
pub(crate) fn needed_tars(e: &RootfsDir) -> Vec<Digest> {
    #[derive(Deserialize)]
    struct Tars {
        #[serde(default)]
        diff_ids: Vec<Digest>,
    }
    match parse_entry_name(&e.name) {
        Some((RootfsKind::Layer, format, key)) if format == TAR_INDEX_FORMAT => vec![key],
        Some((RootfsKind::Flat, format, _)) if format == TAR_INDEX_FORMAT => {
            fs::read(e.dir.join(ENTRY_RECORD))
                .ok()
                .and_then(|b| serde_json::from_slice::<Tars>(&b).ok())
                .map(|t| t.diff_ids)
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Bytes a file or tree occupies on disk (allocated blocks; symlinks are not followed).
pub(crate) fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir()
        && let Ok(list) = fs::read_dir(path)
    {
        for item in list.flatten() {
            total += tree_bytes(&item.path());
        }
    }
    total
}

/// Remove a file or tree, never following symlinks. Directories a rootless build left
/// without write permission are made writable first.
pub(crate) fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::read(path, e)),
    };
    if !meta.is_dir() {
        return crate::fsutil::remove_if_exists(path);
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            fs::remove_dir_all(path).map_err(|e| StoreError::io("remove", path, e))
        }
        Err(e) => Err(StoreError::io("remove", path, e)),
    }
}

fn make_dirs_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(list) = fs::read_dir(path) {
        for item in list.flatten() {
            make_dirs_writable(&item.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        let cases: Vec<(String, Option<(RootfsKind, &str)>)> = vec![
            (
                format!("flat-ext4-sha256-{hex}"),
                Some((RootfsKind::Flat, "ext4")),
            ),
            (
                format!("layer-dir-rootless-sha256-{hex}"),
                Some((RootfsKind::Layer, "dir-rootless")),
            ),
            (format!("flat--sha256-{hex}"), None),
            (format!("other-ext4-sha256-{hex}"), None),
            (format!("flat-ext4-sha256-{}", "a".repeat(63)), None),
            ("flat".into(), None),
        ];
        for (name, want) in cases {
            let got = parse_entry_name(&name);
            match want {
                Some((k, f)) => {
                    let (gk, gf, gd) = got.unwrap_or_else(|| panic!("{name}"));
                    assert_eq!((gk, gf.as_str(), &gd), (k, f, &d), "{name}");
                }
                None => assert!(got.is_none(), "{name}"),
            }
        }
        let entry = format!("flat-ext4-sha256-{hex}");
        let cases: Vec<(String, Option<&str>)> = vec![
            (format!(".tmp-{entry}.12.3"), Some(&entry)),
            (format!(".tmp-{entry}.gone.12.3"), Some(&entry)),
            (format!(".tmp-{entry}.gc.12.3"), Some(&entry)),
            (".tmp-junk.1.2".into(), None),
            (entry.clone(), None),
        ];
        for (name, want) in cases {
            assert_eq!(temp_entry_name(&name), want, "{name}");
        }
    }

    #[test]
    fn trees_are_measured_and_removed_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"x").unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/f"), vec![1u8; 10_000]).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
        fs::set_permissions(tree.join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        assert!(tree_bytes(&tree) >= 10_000);
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep").exists());
        remove_tree(&tree).unwrap();
    }
}
