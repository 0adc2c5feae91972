//! Leases: what work in flight (a pull, a copy, a load, a rootfs build) holds so that a
//! concurrent garbage collection keeps what it wrote or relies on.
//!
//! ```text
//! hoist/leases/
//!   <pid>-<n>-<nanos>.lease      one live lease: a digest per line, appended as the work
//!                                comes to rely on it; the file is flock()ed exclusively by
//!                                its owner for its whole life (created as a temp file,
//!                                locked, then renamed, so a .lease file is locked from
//!                                the moment it exists)
//! ```
//!
//! The protocol, which makes GC safe against every interleaving:
//!
//! 1. A process takes a leased store handle ([`Store::leased`]). Every blob that handle
//!    looks at, reads or writes (`has_blob`, `open_blob`, `read_blob`, `put_blob`,
//!    `blob_writer`, `open_partial`) and every image it resolves (config, manifests,
//!    layers, diff IDs, chain IDs) is added to its lease *before* the store is consulted.
//! 2. Adding to a lease appends under the store lock held shared; a GC holds the store
//!    lock exclusively from reading the leases to the end of its sweep. So an addition
//!    happens either wholly before a GC's mark (which then sees it) or wholly after its
//!    sweep (and the check that follows the addition sees the sweep's result: a blob
//!    found present stays present while the lease lives).
//! 3. A leased digest is a GC root for blobs and for rootfs cache entries keyed by it
//!    (chain IDs, diff IDs).
//! 4. The lease ends when the last clone of the handle is dropped (the file is removed),
//!    or when the process dies (the kernel drops the flock; the next GC, or
//!    [`Store::open`], removes the file). By then a committed image's record protects it.
//!
//! Committing an image checks, under the exclusive store lock, that every blob it names
//! is present, so even a writer that holds no lease can never produce a record that
//! points at a collected blob: it fails with a clear error instead.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use hoist_types::Digest;

use crate::fsutil::{self, LockMode};
use crate::{Store, StoreError};

/// Largest lease file read.
const MAX_LEASE_FILE: u64 = 64 * 1024 * 1024;

/// A live lease, owned by one leased [`Store`] handle and its clones.
#[derive(Debug)]
pub(crate) struct Lease {
    path: PathBuf,
    state: Mutex<LeaseState>,
}

#[derive(Debug)]
struct LeaseState {
    /// Holds the flock; appended to.
    file: File,
    /// What is already written.
    digests: HashSet<Digest>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Unlink first, then the flock goes with the file.
        let _ = fs::remove_file(&self.path);
    }
}

/// The leases found in a store, read by GC, fsck and df.
#[derive(Debug, Default, Clone)]
pub(crate) struct LeaseScan {
    /// Digests held by live leases.
    pub digests: BTreeSet<Digest>,
    /// Live lease files.
    pub live: usize,
    /// Files of dead leases (owner gone), and stale temp files, with their sizes.
    pub dead: Vec<(PathBuf, u64)>,
}

impl Store {
    pub(crate) fn leases_dir(&self) -> PathBuf {
        self.hoist_dir().join("leases")
    }

    /// A handle on the same store that holds a new lease (see the module docs of
    /// `lease`): every blob it looks at or writes, and every image it resolves, is kept
    /// by garbage collection until the last clone of the handle is dropped. Pulls,
    /// copies, loads and rootfs builds run on such a handle.
    ///
    /// ```
    /// use hoist_store::{GcOptions, Store};
    /// use hoist_types::Digest;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let digest = Digest::sha256_of(b"work in flight");
    ///
    /// let work = store.leased()?;
    /// work.put_blob(&digest, b"work in flight")?;
    /// // No image names the blob yet, but the lease keeps it.
    /// assert_eq!(store.gc(&GcOptions::default())?.blobs.count, 0);
    ///
    /// drop(work);
    /// assert_eq!(store.gc(&GcOptions::default())?.blobs.count, 1);
    /// assert_eq!(store.has_blob(&digest)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn leased(&self) -> Result<Store, StoreError> {
        let dir = self.leases_dir();
        fsutil::create_dir(&dir)?;
        let (file, tmp) = fsutil::create_temp(&dir, "lease")?;
        file.try_lock()
            .map_err(|e| StoreError::io("lock", &tmp, io::Error::from(e)))?;
        let name = tmp
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(".lease."))
            .and_then(|n| n.strip_suffix(fsutil::TEMP_SUFFIX))
            .unwrap_or("lease")
            .replace('.', "-");
        let path = dir.join(format!("{name}.lease"));
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io("rename into", path, e));
        }
        let mut file = file;
        // O_APPEND is not needed: one owner, one file description, writes in order.
        file.flush()
            .map_err(|e| StoreError::io("write", &path, e))?;
        Ok(Store {
            inner: std::sync::Arc::new(crate::Inner {
                root: self.root().to_owned(),
                read_only: self.inner.read_only,
                lease: Some(Lease {
                    path,
                    state: Mutex::new(LeaseState {
                        file,
                        digests: HashSet::new(),
                    }),
                }),
            }),
            downloads: self.downloads.clone(),
        })
    }

    /// The digests this handle's lease holds (empty without a lease).
    pub(crate) fn leased_digests(&self) -> Vec<Digest> {
        let Some(lease) = &self.inner.lease else {
            return Vec::new();
        };
        let st = lease.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Digest> = st.digests.iter().cloned().collect();
        v.sort();
        v
    }

    /// Whether this handle holds a lease ([`Store::leased`]).
    pub fn is_leased(&self) -> bool {
        self.inner.lease.is_some()
    }

    /// The lease file of this handle, if it holds one.
    pub fn lease_path(&self) -> Option<&Path> {
        self.inner.lease.as_ref().map(|l| l.path.as_path())
    }

    /// Add digests to this handle's lease (blobs, or rootfs cache keys: chain IDs and diff
    /// IDs), so that GC keeps them while the lease lives. A no-op on a handle without a
    /// lease. Call it *before* checking that what it names is present.
    pub fn protect<'a>(
        &self,
        digests: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<(), StoreError> {
        let Some(lease) = &self.inner.lease else {
            return Ok(());
        };
        let new: Vec<&Digest> = {
            let st = lease.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut seen = HashSet::new();
            digests
                .into_iter()
                .filter(|d| !st.digests.contains(*d) && seen.insert(*d))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let _lock = self.lock_store(LockMode::Shared)?;
        self.protect_locked(new)
    }

    /// [`Store::protect`] with the store lock already held (shared or exclusive).
    pub(crate) fn protect_locked<'a>(
        &self,
        digests: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<(), StoreError> {
        let Some(lease) = &self.inner.lease else {
            return Ok(());
        };
        let mut st = lease.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::new();
        let mut added = Vec::new();
        for d in digests {
            if !st.digests.contains(d) && !added.contains(&d) {
                text.push_str(&d.to_string());
                text.push('\n');
                added.push(d);
            }
        }
        if text.is_empty() {
            return Ok(());
        }
        st.file
            .write_all(text.as_bytes())
            .map_err(|e| StoreError::io("write", &lease.path, e))?;
        for d in added {
            st.digests.insert(d.clone());
        }
        Ok(())
    }

    /// Read every lease: live ones (their digests), dead ones (to remove). Call with the
    /// store lock held exclusively for a consistent answer.
    pub(crate) fn scan_leases(&self) -> Result<LeaseScan, StoreError> {
        self.scan_leases_except(None)
    }

    /// [`Store::scan_leases`], leaving out the lease file `except` (a handle's own).
    pub(crate) fn scan_leases_except(
        &self,
        except: Option<&Path>,
    ) -> Result<LeaseScan, StoreError> {
        let dir = self.leases_dir();
        let mut scan = LeaseScan::default();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(scan),
            Err(e) => return Err(StoreError::read(dir, e)),
        };
        let now = SystemTime::now();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::read(&dir, e))?;
            let path = entry.path();
            if except == Some(path.as_path()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let is_lease = name.ends_with(".lease") && !name.starts_with('.');
            let is_temp = name.starts_with('.') && name.ends_with(fsutil::TEMP_SUFFIX);
            if !is_lease && !is_temp {
                continue;
            }
            // Our own lease is locked by another file description of this process, so
            // try_lock fails for it too: it counts as live.
            let Ok(mut f) = File::open(&path) else {
                continue;
            };
            if f.try_lock_shared().is_err() {
                if is_lease {
                    let mut buf = Vec::new();
                    (&mut f)
                        .take(MAX_LEASE_FILE)
                        .read_to_end(&mut buf)
                        .map_err(|e| StoreError::read(&path, e))?;
                    scan.live += 1;
                    scan.digests.extend(parse_lease(&buf));
                }
                continue;
            }
            // Unlocked: its owner is gone. A temp file is given a minute, since its
            // creator locks it just after creating it.
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or(Duration::ZERO);
            if is_lease || age >= crate::TEMP_MIN_AGE {
                scan.dead.push((path, meta.len()));
            }
        }
        Ok(scan)
    }
}

/// The digests of a lease file: one per line; a torn last line is ignored.
pub(crate) fn parse_lease(bytes: &[u8]) -> Vec<Digest> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| Digest::parse(l.trim()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_files_parse_leniently() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let text = format!("{a}\n\n{b}\nsha256:12");
        assert_eq!(parse_lease(text.as_bytes()), vec![a, b]);
        assert!(parse_lease(b"").is_empty());
    }

    #[test]
    fn a_lease_is_live_while_held_and_gone_after() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("s")).unwrap();
        assert!(!s.is_leased());
        s.protect([&Digest::sha256_of(b"x")]).unwrap(); // no-op
        let l = s.leased().unwrap();
        let path = l.lease_path().unwrap().to_owned();
        let d = Digest::sha256_of(b"kept");
        let clone = l.clone();
        l.protect([&d, &d]).unwrap();
        clone.protect([&d]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{d}\n"));
        let scan = s.scan_leases().unwrap();
        assert_eq!(scan.live, 1);
        assert!(scan.digests.contains(&d));
        assert!(scan.dead.is_empty());
        drop(l);
        assert!(path.exists(), "a clone still holds it");
        drop(clone);
        assert!(!path.exists());
        assert_eq!(s.scan_leases().unwrap().live, 0);
    }
}
