//! hoist's local content-addressable image store.
//!
//! The store is an [OCI image layout] with hoist's own metadata beside it, so `skopeo`
//! (`oci:ROOT:NAME`) and `umoci` (`--layout ROOT`) read it directly. The code is
//! synchronous `std`; the async pull engine calls it from blocking threads.
//!
//! ```
//! use hoist_store::{GcOptions, ImageCommit, Store};
//! use hoist_types::{Descriptor, Digest, MediaType, Reference};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("store"))?;
//!
//! // Blobs are verified against their digest before they become visible.
//! let layer = b"not really a tar: the store never looks inside layers".to_vec();
//! let layer_digest = Digest::sha256_of(&layer);
//! store.put_blob(&layer_digest, &layer)?;
//! assert_eq!(store.read_blob(&layer_digest, 1 << 20)?, layer);
//! assert!(store.put_blob(&Digest::sha256_of(b"other"), &layer).is_err());
//!
//! // An image is a manifest and a config whose blobs are present; committing it
//! // records it under a name, which `index.json` lists for skopeo and umoci.
//! let diff_id = Digest::sha256_of(b"the uncompressed layer");
//! let config = format!(
//!     r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
//! );
//! let config_digest = Digest::sha256_of(config.as_bytes());
//! store.put_blob(&config_digest, config.as_bytes())?;
//! let manifest = format!(
//!     r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
//!        "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},
//!        "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
//!     config.len(),
//!     layer.len(),
//! );
//! let manifest_digest = Digest::sha256_of(manifest.as_bytes());
//! store.put_blob(&manifest_digest, manifest.as_bytes())?;
//!
//! let record = store.commit_image(ImageCommit {
//!     name: Some(Reference::parse("example.com/demo:1")?),
//!     manifest: Descriptor::new(MediaType::OciManifest, manifest_digest, manifest.len() as u64),
//!     index: None,
//!     source: None,
//! })?;
//! assert_eq!(record.id, config_digest);
//! assert_eq!(store.resolve("example.com/demo:1")?.diff_ids, [diff_id]);
//!
//! // Blobs no image reaches are garbage; the image's are kept.
//! store.put_blob(&Digest::sha256_of(b"stray"), b"stray")?;
//! let report = store.gc(&GcOptions::default())?;
//! assert_eq!(report.blobs.count, 1);
//! assert!(store.has_blob(&layer_digest)?.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Two promises: readable by peers, and byte for byte by digest
//!
//! Every named image is readable by skopeo and umoci through `oci:ROOT:NAME`, and an image
//! pulled by digest can be pushed or served again under that digest, byte for byte. The
//! record keeps the original manifest (a Docker schema 2 one too), and everything hoist
//! reads (`hoist:` sources, push, inspect, unpack) uses it. For a Docker schema 2
//! manifest the store also writes an *OCI view*: an OCI image manifest over the same
//! config and layer blobs, media types mapped (config → OCI config, tar+gzip and tar →
//! the OCI layer types, foreign → non-distributable), made by
//! [`hoist_types::ImageManifest::to_oci_bytes`] (compact JSON in Go's field order: the
//! same bytes every time). `index.json` lists the view for the names that point at the
//! Docker manifest, because skopeo 1.9 finds no descriptor for a Docker entry in a
//! layout and umoci 0.4.7 refuses Docker media types. The view belongs to its record
//! (`oci_views`): written with the record under the store lock, marked by GC, checked
//! (and written again by `--repair`) by fsck, counted by df, and a query by its digest
//! finds the image. Records written before views existed get theirs the next time a
//! change rewrites `index.json`.
//!
//! `NAME` is the full normalised reference, as `index.json` writes it:
//! `skopeo inspect oci:ROOT:127.0.0.1:5000/ns/repo:tag` and
//! `umoci unpack --image ROOT:127.0.0.1:5000/ns/repo:tag` work (both split at the first
//! colon after the path, so slashes and colons in the name are fine); familiar forms such
//! as `alpine:3` do not match (`docker.io/library/alpine:3` does).
//!
//! # On-disk layout, version 1
//!
//! ```text
//! ROOT/
//!   oci-layout                      {"imageLayoutVersion":"1.0.0"}
//!   index.json                      OCI index: one entry per tag, the descriptor of the
//!                                   image manifest the name points at (its OCI view
//!                                   for a Docker schema 2 manifest) + platform,
//!                                   annotated with org.opencontainers.image.ref.name =
//!                                   the full
//!                                   normalised reference ("127.0.0.1:5000/ns/repo:tag")
//!                                   and io.hoist.image.id = the image ID; written last
//!   blobs/
//!     sha256/<hex>                  content-addressed blobs (manifests, configs, layers,
//!                                   and the OCI views hoist made)
//!     sha512/<hex>
//!   hoist/
//!     version                       "1": this layout's version; others are refused
//!     images/<alg>-<hex>.json       image records (ImageRecord), keyed by config digest;
//!                                   each lists every manifest committed for the image
//!                                   ("manifests": manifest + index + layers; absent when
//!                                   there is one) and what each name points at
//!                                   ("targets": name → manifest and index digests). A
//!                                   name keeps the manifest it was committed or tagged
//!                                   with, so the OCI and Docker variants of one image (one
//!                                   config) can both be named. Records written before
//!                                   these fields existed are read as one manifest with
//!                                   every name on it (the format is otherwise unchanged,
//!                                   so the layout version stays 1). "digest_refs": the
//!                                   top digests committed without a name (pulls by
//!                                   digest); a manifest no name and no digest reference
//!                                   reaches leaves the record when its last name goes
//!                                   (rmi, untag, a tag moved), so GC frees its blobs;
//!                                   records without the field read every unnamed
//!                                   manifest as referenced. "oci_views": Docker schema 2
//!                                   manifest → its OCI view (see above)
//!     txn-pending                   present while a change writes records, then
//!                                   index.json; one a killed change left makes the next
//!                                   Store::open rewrite index.json from the records
//!     leases/<pid>-<n>-<nanos>.lease  leases of work in flight (module `lease`): a digest
//!                                   per line, flock()ed by the owner; GC roots
//!     ingest/                       temp files of blob writes in progress, each locked
//!                                   by its writer; stale unlocked ones (older than 1 h)
//!                                   are removed when a store is opened
//!       partial-<alg>-<hex>         a resumable download (module `partial`): the bytes
//!                                   received so far, locked by its writer (who also
//!                                   holds the blob's lock); kept when a pull fails or is
//!                                   killed, resumed by the next pull of that blob
//!       partial-<alg>-<hex>.meta    its record, a 512-byte JSON object padded with
//!                                   spaces, rewritten in place after the data it counts:
//!                                   {"v":1,"digest":"<alg>:<hex>","size":N,"offset":M},
//!                                   M = valid bytes; partials untouched for 7 days and
//!                                   unlocked are removed by Store::clean_partials (gc,
//!                                   and Store::open)
//!     locks/
//!       store.lock                  exclusive for every change of records/index.json,
//!                                   shared for consistent reads
//!       blob-<alg>-<hex>.lock       per-digest ingest locks (Store::lock_blob)
//!       rootfs-<entry>.lock         one per rootfs cache entry (Store::lock_named), held
//!                                   while that entry is built, so it is built once
//!     rootfs/                       root filesystems built from images (hoist-unpack,
//!                                   hoist-mkfs), a cache: every entry can be rebuilt
//!       <kind>-<format>-<alg>-<hex>/  one entry; kind "flat" is keyed by the top chain
//!                                   ID, kind "layer" by a layer's diff ID; format is
//!                                   dir, dir-rootless, ext4 or erofs
//!         entry.json                what the entry is: kind, format, key, diff IDs and
//!                                   chain IDs it covers, artifact name, size, creation
//!                                   time; the roots a GC marks from are the image
//!                                   records whose chain IDs (flat) or diff IDs (layer)
//!                                   contain the key
//!         rootfs/ | rootfs.ext4 | rootfs.erofs | layer/ | layer.ext4 | layer.erofs
//!                                   the artifact
//!       .tmp-<entry>.<pid>.<n>/     an entry being built; renamed into place complete
//!                                   (artifact and entry.json), so an entry directory
//!                                   that exists is whole; one left by a killed build is
//!                                   removed by the next build of that entry (under its
//!                                   lock); a GC may remove any whose lock is free
//! ```
//!
//! # Rules that keep it consistent
//!
//! - Every write goes to a temp file in the target's directory, is fsynced, renamed into
//!   place, and the directory fsynced. A blob becomes visible only after its size and
//!   digest have been checked.
//! - Image records are the truth about names. `index.json` is a projection of them
//!   (plus entries written by other tools, which are kept), rewritten last, under the
//!   store lock, after every change. A crash between the two leaves a stale
//!   `index.json` that the next change rewrites; a name caught on two records by a crash
//!   in the middle of a tag move is given to the record `index.json` names, and repaired
//!   by the next change.
//! - Cross-process locks are `flock`-style locks from [`std::fs::File::lock`]; each lock
//!   opens its own file description, so threads of one process exclude each other too.
//! - Committing an image re-checks, under the exclusive store lock, that every blob it
//!   names is present; a GC holds that lock for its whole mark and sweep. So a record
//!   never names a collected blob.
//!
//! # Garbage collection, leases, fsck
//!
//! [`Store::gc`] marks from the roots: every image record (all its manifests, their OCI
//! views and indexes, config and layers; its top chain ID and diff IDs for the rootfs cache), the
//! `index.json` entries other tools wrote, and every digest held by a live lease. It
//! sweeps, under the exclusive store lock, blobs nothing marks, rootfs entries no image
//! needs (renamed out of sight under the entry's lock, and skipped while a build holds
//! it; the trees are deleted after the lock is released), partial downloads unused for a
//! grace period (24 h by default) or whose blob is stored, temp files of dead writers,
//! and files of dead leases. Marking is pure (module `mark`, table-tested).
//!
//! Work in flight runs on a leased handle ([`Store::leased`]): every blob it looks at or
//! writes, and every image it resolves, is added to its lease *before* the store is
//! consulted, under the shared store lock. A GC holds the lock exclusively from reading
//! the leases to the end of its sweep, so an addition is either seen by the GC or made
//! after the sweep, when the check that follows it sees the sweep's result. The pull
//! engine and `hoist rootfs` run leased; a lease dies with its process (the flock goes;
//! the next GC or open removes the file).
//!
//! [`Store::fsck`] re-hashes every blob (on two threads, without the lock), then under
//! the lock checks every manifest, index, config and layer a record reaches (present,
//! size, and the manifest's own config and layers), finds orphans, temp files, broken
//! records, stale or dangling `index.json` entries, broken or unused rootfs entries and
//! dead leases; resumable partial downloads are listed, not counted as problems. With
//! `repair` it removes what is corrupt or orphaned (an image that needs a missing or
//! corrupt blob goes too, to be pulled again) and rewrites `index.json` last.
//! [`Store::disk_usage`] reports bytes by kind, shared and unique per image, and what a
//! GC would reclaim.
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md

#![warn(missing_docs)]

mod blob;
mod error;
mod follow;
mod fsck;
mod fsutil;
mod gc;
mod image;
mod index;
mod lease;
mod mark;
mod partial;
mod query;
mod record;
mod rootfs;
mod usage;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hoist_types::{Digest, Reference};

pub use blob::{BlobLock, BlobWriter, INGEST_GRACE, NamedLock};
pub use error::StoreError;
pub use follow::Downloads;
pub use fsck::{FsckOptions, FsckReport, Problem, ProblemKind, Resumable};
pub use gc::{Amount, DEFAULT_INGEST_GRACE, GcItem, GcOptions, GcReport, KEEP_AS_PARTIAL};
pub use index::ANNOTATION_IMAGE_ID;
pub use partial::{PARTIAL_GRACE, PartialBlob, PartialInfo, PartialReader, SliceWriter};
pub use query::MIN_PREFIX;
pub use record::{
    ImageCommit, ImageManifest, ImageRecord, NameTarget, OciView, RemoveReport, ResolvedImage,
};
pub use rootfs::RootfsKind;
pub use usage::{DiskUsage, ImageUsage};

use fsutil::LockMode;

/// The layout version this code reads and writes (`hoist/version`).
pub const LAYOUT_VERSION: &str = "1";
/// The OCI image layout version written to `oci-layout`.
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";

/// A handle on a store directory. Cheap to clone; `Send + Sync`. It holds no open files:
/// every operation takes the locks it needs, so handles in different threads and
/// processes may work on one store at once.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// The pull whose downloads [`Store::blob_reader`] follows ([`Store::following`]).
    downloads: Option<follow::Downloads>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// Opened without write access ([`Store::open`] on a store it may only read).
    read_only: bool,
    /// The lease of a leased handle ([`Store::leased`]).
    lease: Option<lease::Lease>,
}

/// Temp files whose writer is gone are removed only once they are this old: a writer
/// locks its temp file just after creating it.
pub(crate) const TEMP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

impl Store {
    /// The default store directory: `/var/lib/hoist` for root, else
    /// `$XDG_DATA_HOME/hoist`, else `$HOME/.local/share/hoist` (and, with no home at all,
    /// `hoist-<uid>` in the temp directory). `$HOIST_STORE` is the CLI's business.
    pub fn default_root() -> PathBuf {
        let euid = fsutil::effective_uid();
        if euid == Some(0) {
            return PathBuf::from("/var/lib/hoist");
        }
        let abs = |v: Option<std::ffi::OsString>| {
            v.map(PathBuf::from)
                .filter(|p| p.is_absolute() && !p.as_os_str().is_empty())
        };
        if let Some(x) = abs(std::env::var_os("XDG_DATA_HOME")) {
            return x.join("hoist");
        }
        if let Some(h) = abs(std::env::var_os("HOME")) {
            return h.join(".local/share/hoist");
        }
        std::env::temp_dir().join(format!("hoist-{}", euid.unwrap_or(u32::MAX)))
    }

    /// Open the store at `root`, creating the layout if absent (directories 0755).
    ///
    /// Checks the layout version (a newer or unknown one is refused), refuses a non-empty
    /// directory that is neither an OCI layout nor a store, adopts an existing OCI layout
    /// (its `index.json` entries are kept), and removes what crashed processes left:
    /// metadata temp files, ingest temp files older than [`INGEST_GRACE`] that no process
    /// holds locked (live ingests are never touched), partial downloads untouched for
    /// [`PARTIAL_GRACE`], and files of dead leases. A whole store this process cannot
    /// write (a read-only mount, permission denied) is opened read-only
    /// ([`Store::is_read_only`]): reads work, changes fail with [`StoreError::ReadOnly`].
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        match fs::metadata(&root) {
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::Io {
                    op: "use as a store directory",
                    path: Some(root),
                    source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                });
            }
            Ok(_) => check_is_store_or_empty(&root)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::read(root, e)),
        }
        let store = Store {
            inner: Arc::new(Inner {
                root: root.clone(),
                read_only: false,
                lease: None,
            }),
            downloads: None,
        };
        match store.open_writable() {
            Ok(()) => Ok(store),
            Err(e @ StoreError::NotWritable { .. }) => {
                // A whole store this process may only read (a read-only mount, another
                // user's store): open it for reading; changes fail with a clear error.
                let complete =
                    store.hoist_dir().join("version").is_file() && store.index_path().is_file();
                if !complete {
                    return Err(e);
                }
                let ro = Store {
                    inner: Arc::new(Inner {
                        root,
                        read_only: true,
                        lease: None,
                    }),
                    downloads: None,
                };
                ro.check_version()?;
                Ok(ro)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether this handle was opened read-only (the store is not writable by this
    /// process); every change then fails with [`StoreError::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    fn open_writable(&self) -> Result<(), StoreError> {
        // hoist/ first: a half-initialised store is then still recognised as one.
        fsutil::create_dir(&self.locks_dir())?;
        let mut doomed = Vec::new();
        {
            let _lock = self.lock_store(LockMode::Exclusive)?;
            self.check_version()?;
            self.init_layout()?;
            self.heal_index()?;
            let _ = self.clean_ingest(INGEST_GRACE)?;
            let _ = self.clean_partials(PARTIAL_GRACE)?;
            // Files of leases whose owner died.
            for (path, _) in self.scan_leases()?.dead {
                fsutil::remove_if_exists(&path)?;
            }
            // Directories of rootfs builds that were killed (their build lock is free);
            // moved out of sight here, removed below without the store lock.
            for (path, lock_name) in self.scan_rootfs()?.temps {
                if let Some(p) = self.retire_rootfs(&path, &lock_name)? {
                    doomed.push(p);
                }
            }
        }
        for p in doomed {
            rootfs::remove_tree(&p)?;
        }
        Ok(())
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// `ROOT/hoist/rootfs`: where root filesystems built from this store's images are
    /// cached (see the layout above). Not created by [`Store::open`]; its users create it.
    pub fn rootfs_dir(&self) -> PathBuf {
        self.hoist_dir().join("rootfs")
    }

    /// All images, sorted by ID. Names are as the store currently resolves them.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let _lock = self.lock_store(LockMode::Shared)?;
        self.snapshot()
    }

    /// The image with this ID (config digest), if present.
    pub fn image(&self, id: &Digest) -> Result<Option<ImageRecord>, StoreError> {
        let _lock = self.lock_store(LockMode::Shared)?;
        Ok(self.snapshot()?.into_iter().find(|r| &r.id == id))
    }

    /// Find an image the way `docker inspect` does: a name (parsed with
    /// [`Reference::parse`], so `alpine` is `docker.io/library/alpine:latest`; a
    /// `name@digest` matches a repo digest), a full `sha256:…` image ID or manifest/index
    /// digest, or a unique image-ID hex prefix of at least [`MIN_PREFIX`] characters
    /// (optionally `sha256:`-prefixed). An ambiguous prefix is an error listing the
    /// candidates.
    ///
    /// The record is returned as seen through the query (see [`Store::resolve_image`]):
    /// its `manifest`, `index`, `layers` and `size` are those of the manifest the query
    /// reaches.
    pub fn resolve(&self, s: &str) -> Result<ImageRecord, StoreError> {
        Ok(self.resolve_image(s)?.record)
    }

    /// Like [`Store::resolve`], and say which manifest (and index) the query reaches: a
    /// name → the manifest it was committed (or tagged) with; a manifest or index digest
    /// (alone or as `name@digest`) → that manifest; an image ID or ID prefix → the image's
    /// latest manifest.
    pub fn resolve_image(&self, s: &str) -> Result<ResolvedImage, StoreError> {
        let q = query::parse_query(s)?;
        let _lock = self.lock_store(LockMode::Shared)?;
        let records = self.snapshot()?;
        let owners = query::name_owners(&records, &Default::default());
        let (rec, v) = query::find_variant(&records, &owners, s, &q)?;
        // A leased handle keeps what it resolved: blobs and rootfs cache keys.
        self.protect_locked(
            rec.blobs()
                .iter()
                .chain(&rec.diff_ids)
                .chain(&rec.chain_ids),
        )?;
        Ok(ResolvedImage {
            record: rec.pinned(&v),
            manifest: v.manifest,
            index: v.index,
        })
    }

    /// The parent of image `id`: the config's `parent` when that image is present,
    /// else the image whose chain IDs are the longest strict prefix of this one's.
    pub fn parent(&self, id: &Digest) -> Result<Option<Digest>, StoreError> {
        let _lock = self.lock_store(LockMode::Shared)?;
        let records = self.snapshot()?;
        let rec =
            records
                .iter()
                .find(|r| &r.id == id)
                .ok_or_else(|| StoreError::ImageNotFound {
                    query: id.to_string(),
                })?;
        Ok(query::parent_of(&records, rec))
    }

    /// Every image's parent (as [`Store::parent`] defines it), from one consistent
    /// snapshot, by image ID.
    pub fn parents(
        &self,
    ) -> Result<std::collections::BTreeMap<Digest, Option<Digest>>, StoreError> {
        let _lock = self.lock_store(LockMode::Shared)?;
        let records = self.snapshot()?;
        Ok(records
            .iter()
            .map(|r| (r.id.clone(), query::parent_of(&records, r)))
            .collect())
    }

    /// The images whose parent (as [`Store::parent`] defines it) is `id`, sorted by ID.
    pub fn children(&self, id: &Digest) -> Result<Vec<Digest>, StoreError> {
        let _lock = self.lock_store(LockMode::Shared)?;
        let records = self.snapshot()?;
        if !records.iter().any(|r| &r.id == id) {
            return Err(StoreError::ImageNotFound {
                query: id.to_string(),
            });
        }
        Ok(query::children_of(&records, id))
    }

    /// Records with each name given to exactly one owner (see the module docs).
    fn snapshot(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut records = self.load_records()?;
        self.dedupe_names(&mut records)?;
        Ok(records)
    }

    /// Give each name claimed by several records to one owner; returns the IDs of the
    /// records that lost a name.
    fn dedupe_names(&self, records: &mut [ImageRecord]) -> Result<Vec<Digest>, StoreError> {
        let mut seen = std::collections::BTreeSet::<&Reference>::new();
        let dup = records
            .iter()
            .flat_map(|r| r.names.iter())
            .any(|n| !seen.insert(n));
        if !dup {
            return Ok(Vec::new());
        }
        let index_owners = self.read_index()?.owners();
        let owners = query::name_owners(records, &index_owners);
        let mut changed = Vec::new();
        for rec in records.iter_mut() {
            let before = rec.names.len();
            rec.names.retain(|n| owners.get(n) == Some(&rec.id));
            let names = rec.names.clone();
            rec.targets.retain(|t| names.contains(&t.name));
            if rec.names.len() != before {
                changed.push(rec.id.clone());
            }
        }
        Ok(changed)
    }

    fn hoist_dir(&self) -> PathBuf {
        self.root().join("hoist")
    }

    fn images_dir(&self) -> PathBuf {
        self.hoist_dir().join("images")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.hoist_dir().join("ingest")
    }

    fn locks_dir(&self) -> PathBuf {
        self.hoist_dir().join("locks")
    }

    fn lock_store(&self, mode: LockMode) -> Result<fs::File, StoreError> {
        let path = self.locks_dir().join("store.lock");
        if self.inner.read_only {
            if mode == LockMode::Exclusive {
                return Err(StoreError::ReadOnly {
                    path: self.root().to_owned(),
                });
            }
            // Readers of a read-only store still respect a writer elsewhere (a
            // read-only bind mount of a live store).
            let target = if path.exists() {
                path
            } else {
                self.hoist_dir()
            };
            let f = fs::File::open(&target).map_err(|e| StoreError::read(&target, e))?;
            f.lock_shared().map_err(|e| StoreError::read(&target, e))?;
            return Ok(f);
        }
        fsutil::lock_file(&path, mode)
    }

    /// Refuse a layout version other than ours. Called with the store lock held.
    fn check_version(&self) -> Result<(), StoreError> {
        let path = self.hoist_dir().join("version");
        if let Some(bytes) = fsutil::read_optional(&path, 4096)? {
            let found = String::from_utf8_lossy(&bytes).trim().to_owned();
            if found != LAYOUT_VERSION {
                return Err(StoreError::UnsupportedVersion {
                    path,
                    found,
                    supported: LAYOUT_VERSION,
                });
            }
        }
        let path = self.root().join("oci-layout");
        if let Some(bytes) = fsutil::read_optional(&path, 4096)? {
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    what: "oci-layout file",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            let found = v
                .get("imageLayoutVersion")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            if found != OCI_LAYOUT_VERSION {
                return Err(StoreError::UnsupportedVersion {
                    path,
                    found: found.to_owned(),
                    supported: OCI_LAYOUT_VERSION,
                });
            }
        }
        Ok(())
    }

    /// Create whatever is missing and remove stale temp files. Called with the store
    /// lock held, so no metadata write is in flight and every metadata temp file is junk.
    fn init_layout(&self) -> Result<(), StoreError> {
        let root = self.root();
        for dir in [
            root.join("blobs/sha256"),
            root.join("blobs/sha512"),
            self.images_dir(),
            self.ingest_dir(),
        ] {
            fsutil::create_dir(&dir)?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            let body = format!("{{\"imageLayoutVersion\":\"{OCI_LAYOUT_VERSION}\"}}");
            fsutil::write_atomic(&layout, body.as_bytes())?;
        }
        let index = self.index_path();
        if index.exists() {
            self.read_index()?;
        } else {
            fsutil::write_atomic(&index, &index::IndexFile::empty().to_bytes())?;
        }
        let version = self.hoist_dir().join("version");
        if !version.exists() {
            fsutil::write_atomic(&version, format!("{LAYOUT_VERSION}\n").as_bytes())?;
        }
        for dir in [root.to_owned(), self.hoist_dir(), self.images_dir()] {
            blob::clean_temp_dir(&dir, std::time::Duration::ZERO, false)?;
        }
        Ok(())
    }
}

/// An existing directory must be empty, an OCI layout, or (part of) a store.
fn check_is_store_or_empty(root: &Path) -> Result<(), StoreError> {
    let mut entries = fs::read_dir(root).map_err(|e| StoreError::read(root, e))?;
    let empty = entries.next().is_none();
    if empty || root.join("oci-layout").exists() || root.join("hoist").is_dir() {
        Ok(())
    } else {
        Err(StoreError::NotAStore {
            path: root.to_owned(),
        })
    }
}
