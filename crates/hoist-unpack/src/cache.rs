//! The rootfs cache in the store: `ROOT/hoist/rootfs/<kind>-<format>-<alg>-<hex>/`.
//!
//! An entry is a directory holding the artifact (a directory tree or an image file) and
//! `entry.json` ([`EntryRecord`]), which says what the entry is, so a GC can find its roots
//! (the images whose chain IDs or diff IDs contain the key). Entries are built in a temp
//! directory `.tmp-<entry>.<pid>.<n>` under the per-entry lock (`Store::lock_named`) and
//! renamed into place complete, so an entry directory that exists is whole, and two builds
//! of one entry (in one process or several) run once. `--force` swaps a new build in with
//! `renameat2(RENAME_EXCHANGE)`.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use hoist_store::Store;
use hoist_types::Digest;
use serde::{Deserialize, Serialize};

use crate::UnpackError;
use crate::fsops::remove_host_tree;

/// The record file of an entry.
pub const RECORD_FILE: &str = "entry.json";
/// Largest record read.
const MAX_RECORD: u64 = 16 << 20;

/// Flattened (keyed by the top chain ID) or one layer (keyed by its diff ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// All layers merged; key: the top layer's chain ID.
    Flat,
    /// One layer, whiteouts in overlayfs form; key: its diff ID.
    Layer,
}

impl EntryKind {
    /// `flat` or `layer`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Flat => "flat",
            EntryKind::Layer => "layer",
        }
    }
}

/// What an entry's artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactFormat {
    /// A directory unpacked as root.
    Dir,
    /// A directory unpacked in rootless mode (owners in `user.rootlesscontainers`).
    DirRootless,
    /// An ext4 image.
    Ext4,
    /// An erofs image.
    Erofs,
    /// An erofs tar index: metadata only, the file data in the layers' tars in the store.
    ErofsTarIndex,
}

impl ArtifactFormat {
    /// `dir`, `dir-rootless`, `ext4`, `erofs` or `erofs-tar-index`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactFormat::Dir => "dir",
            ArtifactFormat::DirRootless => "dir-rootless",
            ArtifactFormat::Ext4 => "ext4",
            ArtifactFormat::Erofs => "erofs",
            ArtifactFormat::ErofsTarIndex => "erofs-tar-index",
        }
    }

    /// The artifact's file name inside an entry of `kind`.
    pub fn artifact_name(self, kind: EntryKind) -> &'static str {
        match (kind, self) {
            (EntryKind::Flat, ArtifactFormat::Dir | ArtifactFormat::DirRootless) => "rootfs",
            (EntryKind::Flat, ArtifactFormat::Ext4) => "rootfs.ext4",
            (EntryKind::Flat, ArtifactFormat::Erofs | ArtifactFormat::ErofsTarIndex) => {
                "rootfs.erofs"
            }
            (EntryKind::Layer, ArtifactFormat::Dir | ArtifactFormat::DirRootless) => "layer",
            (EntryKind::Layer, ArtifactFormat::Ext4) => "layer.ext4",
            (EntryKind::Layer, ArtifactFormat::Erofs | ArtifactFormat::ErofsTarIndex) => {
                "layer.erofs"
            }
        }
    }
}

/// Names one cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    /// Flat or per layer.
    pub kind: EntryKind,
    /// Artifact format.
    pub format: ArtifactFormat,
    /// Chain ID (flat) or diff ID (layer).
    pub key: Digest,
}

impl EntryKey {
    /// The entry's directory name: `<kind>-<format>-<alg>-<hex>`.
    pub fn name(&self) -> String {
        format!(
            "{}-{}-{}-{}",
            self.kind.as_str(),
            self.format.as_str(),
            self.key.algorithm(),
            self.key.hex()
        )
    }
}

/// `entry.json`: what a cache entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// Record version, 1.
    pub version: u32,
    /// Flat or per layer.
    pub kind: EntryKind,
    /// Artifact format.
    pub format: ArtifactFormat,
    /// The key: the top chain ID (flat) or the diff ID (layer).
    pub key: Digest,
    /// Diff IDs of the layers it covers, base first.
    pub diff_ids: Vec<Digest>,
    /// Chain IDs of the layers it covers, base first.
    pub chain_ids: Vec<Digest>,
    /// The artifact's file name in the entry directory.
    pub artifact: String,
    /// Bytes of the artifact (apparent size of an image file; sum of file sizes of a tree).
    pub size: u64,
    /// When it was built, seconds since the epoch.
    pub created: u64,
}

/// One entry on disk.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    /// The entry directory.
    pub dir: PathBuf,
    /// Its record.
    pub record: EntryRecord,
}

impl CacheEntry {
    /// The artifact's path.
    pub fn artifact(&self) -> PathBuf {
        self.dir.join(&self.record.artifact)
    }
}

/// The rootfs cache of a store.
#[derive(Debug, Clone)]
pub struct Cache {
    store: Store,
    dir: PathBuf,
}

/// Removes a directory tree we built (or a file), never following symlinks inside it; a
/// missing path is fine.
pub fn remove_tree(path: &Path) -> Result<(), UnpackError> {
    remove_host_tree(path)
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cache {
    /// The cache of `store` (its directory is created if needed).
    pub fn new(store: &Store) -> Result<Cache, UnpackError> {
        let dir = store.rootfs_dir();
        fs::create_dir_all(&dir).map_err(|e| UnpackError::io("create directory", &dir, e))?;
        Ok(Cache {
            store: store.clone(),
            dir,
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory an entry has (or would have).
    pub fn entry_dir(&self, key: &EntryKey) -> PathBuf {
        self.dir.join(key.name())
    }

    /// The entry, if it is present and whole.
    pub fn lookup(&self, key: &EntryKey) -> Result<Option<CacheEntry>, UnpackError> {
        let dir = self.entry_dir(key);
        let path = dir.join(RECORD_FILE);
        let bytes = match fs::File::open(&path) {
            Ok(f) => {
                let mut v = Vec::new();
                io::Read::read_to_end(&mut io::Read::take(f, MAX_RECORD), &mut v)
                    .map_err(|e| UnpackError::io("read", &path, e))?;
                v
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(UnpackError::io("read", &path, e)),
        };
        let Ok(record) = serde_json::from_slice::<EntryRecord>(&bytes) else {
            return Ok(None); // unreadable: treated as absent and rebuilt
        };
        if record.key != key.key || record.kind != key.kind || record.format != key.format {
            return Ok(None);
        }
        if fs::symlink_metadata(dir.join(&record.artifact)).is_err() {
            return Ok(None);
        }
        Ok(Some(CacheEntry { dir, record }))
    }

    /// Every whole entry (for listings and GC).
    pub fn entries(&self) -> Result<Vec<CacheEntry>, UnpackError> {
        let mut out = Vec::new();
        let list = fs::read_dir(&self.dir).map_err(|e| UnpackError::io("read", &self.dir, e))?;
        for item in list {
            let item = item.map_err(|e| UnpackError::io("read", &self.dir, e))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let path = item.path().join(RECORD_FILE);
            let Ok(bytes) = fs::read(&path) else { continue };
            let Ok(record) = serde_json::from_slice::<EntryRecord>(&bytes) else {
                continue;
            };
            out.push(CacheEntry {
                dir: item.path(),
                record,
            });
        }
        out.sort_by(|a, b| a.dir.cmp(&b.dir));
        Ok(out)
    }

    /// The entries no image of `images` needs: a flattened entry is needed by an image whose
    /// chain IDs hold its key, a per-layer entry by one whose diff IDs do. What a GC sweeps.
    pub fn unused(
        &self,
        images: &[hoist_store::ImageRecord],
    ) -> Result<Vec<CacheEntry>, UnpackError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| {
                !images.iter().any(|img| match e.record.kind {
                    EntryKind::Flat => {
                        img.chain_ids.last() == Some(&e.record.key)
                            || (img.chain_ids.is_empty() && e.record.key == Digest::sha256_of(b""))
                    }
                    EntryKind::Layer => img.diff_ids.contains(&e.record.key),
                })
            })
            .collect())
    }

    /// Removes an entry (rename out of the way first, so it never looks whole while going).
    pub fn remove(&self, entry: &CacheEntry) -> Result<(), UnpackError> {
        let name = entry
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _lock = self.store.lock_named(&format!("rootfs-{name}"))?;
        let doomed = self.temp_dir::<UnpackError>(&format!("{name}.gone"))?;
        fs::remove_dir(&doomed).map_err(|e| UnpackError::io("remove", &doomed, e))?;
        match fs::rename(&entry.dir, &doomed) {
            Ok(()) => remove_host_tree(&doomed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(UnpackError::io("rename", &entry.dir, e)),
        }
    }

    /// The entry `key`: from the cache (`cached = true`) unless `force`, else built by
    /// `build` in a fresh temp directory (which it fills with the artifact, returning the
    /// record to write) and published atomically. Concurrent calls for one key build once.
    pub fn get_or_build<E: From<UnpackError>>(
        &self,
        key: &EntryKey,
        force: bool,
        build: impl FnOnce(&Path) -> Result<EntryRecord, E>,
    ) -> Result<(CacheEntry, bool), E> {
        // On a leased store handle, a concurrent GC keeps this entry from now on.
        self.store.protect([&key.key]).map_err(UnpackError::from)?;
        if !force && let Some(e) = self.lookup(key)? {
            return Ok((e, true));
        }
        let name = key.name();
        let _lock = self
            .store
            .lock_named(&format!("rootfs-{name}"))
            .map_err(UnpackError::from)?;
        if !force && let Some(e) = self.lookup(key)? {
            return Ok((e, true));
        }
        self.remove_stale(&name);
        let tmp = self.temp_dir(&name)?;
        let result = build(&tmp).and_then(|record| {
            let path = tmp.join(RECORD_FILE);
            let bytes = serde_json::to_vec_pretty(&record).expect("a record serializes");
            let write = || -> Result<(), UnpackError> {
                let mut f =
                    fs::File::create(&path).map_err(|e| UnpackError::io("create", &path, e))?;
                f.write_all(&bytes)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| UnpackError::io("write", &path, e))?;
                self.publish(&tmp, &self.entry_dir(key))
            };
            write()?;
            Ok(CacheEntry {
                dir: self.entry_dir(key),
                record,
            })
        });
        let _ = remove_host_tree(&tmp);
        result.map(|e| (e, false))
    }

    fn temp_dir<E: From<UnpackError>>(&self, name: &str) -> Result<PathBuf, E> {
        static N: AtomicU64 = AtomicU64::new(0);
        loop {
            let tmp = self.dir.join(format!(
                ".tmp-{name}.{}.{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            match fs::create_dir(&tmp) {
                Ok(()) => return Ok(tmp),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(UnpackError::io("create directory", tmp, e).into()),
            }
        }
    }

    /// Temp directories of this entry left by a killed build (we hold its lock, so no live
    /// build owns them).
    fn remove_stale(&self, name: &str) {
        let prefix = format!(".tmp-{name}.");
        if let Ok(list) = fs::read_dir(&self.dir) {
            for item in list.flatten() {
                if item
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix))
                {
                    let _ = remove_host_tree(&item.path());
                }
            }
        }
    }

    /// Renames `tmp` onto `dest`; an existing `dest` is swapped out atomically and removed.
    fn publish(&self, tmp: &Path, dest: &Path) -> Result<(), UnpackError> {
        match fs::rename(tmp, dest) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
                ) =>
            {
                // ENOTEMPTY / EEXIST: an old entry is there (--force). Exchange, then the
                // old one sits at `tmp` and is removed by the caller.
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    tmp,
                    rustix::fs::CWD,
                    dest,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .map_err(|e| UnpackError::io("swap into", dest, e.into()))?;
            }
            Err(e) => return Err(UnpackError::io("rename into", dest, e)),
        }
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| UnpackError::io("fsync", &self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &Digest, artifact: &str) -> EntryRecord {
        EntryRecord {
            version: 1,
            kind: EntryKind::Flat,
            format: ArtifactFormat::Ext4,
            key: key.clone(),
            diff_ids: vec![key.clone()],
            chain_ids: vec![key.clone()],
            artifact: artifact.into(),
            size: 3,
            created: now_secs(),
        }
    }

    #[test]
    fn build_once_then_cached_then_forced() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("store")).unwrap();
        let cache = Cache::new(&store).unwrap();
        let d = Digest::sha256_of(b"x");
        let key = EntryKey {
            kind: EntryKind::Flat,
            format: ArtifactFormat::Ext4,
            key: d.clone(),
        };
        assert!(key.name().starts_with("flat-ext4-sha256-"));
        let (e, cached) = cache
            .get_or_build(&key, false, |tmp| {
                fs::write(tmp.join("rootfs.ext4"), "one").unwrap();
                Ok::<_, UnpackError>(record(&d, "rootfs.ext4"))
            })
            .unwrap();
        assert!(!cached);
        assert_eq!(fs::read(e.artifact()).unwrap(), b"one");
        let (_, cached) = cache
            .get_or_build(&key, false, |_| -> Result<EntryRecord, UnpackError> {
                panic!("must not build")
            })
            .unwrap();
        assert!(cached);
        let (e, cached) = cache
            .get_or_build(&key, true, |tmp| {
                fs::write(tmp.join("rootfs.ext4"), "two").unwrap();
                Ok::<_, UnpackError>(record(&d, "rootfs.ext4"))
            })
            .unwrap();
        assert!(!cached);
        assert_eq!(fs::read(e.artifact()).unwrap(), b"two");
        // A failed build leaves nothing.
        let key2 = EntryKey {
            key: Digest::sha256_of(b"y"),
            ..key.clone()
        };
        assert!(
            cache
                .get_or_build(&key2, false, |_| {
                    Err::<EntryRecord, _>(UnpackError::Unsupported { what: "test" })
                })
                .is_err()
        );
        assert!(cache.lookup(&key2).unwrap().is_none());
        let names: Vec<_> = fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(cache.entries().unwrap().len(), 1);
        // No image needs it: it is unused, and goes.
        let unused = cache.unused(&[]).unwrap();
        assert_eq!(unused.len(), 1);
        cache.remove(&unused[0]).unwrap();
        assert!(cache.lookup(&key).unwrap().is_none());
        assert!(cache.entries().unwrap().is_empty());
    }
}
