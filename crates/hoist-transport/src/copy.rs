//! The copy engine: any source → any destination ([`copy`]). `hoist pull` is this engine
//! from `docker://REF` into the store ([`mod@crate::pull`]); `hoist load`/`save` copy between
//! archives and the store. It is the one place that resolves, verifies and commits.
//!
//! 1. The source's top manifest is read (and the trust policy, if any, decides on it
//!    before anything moves). An index is copied whole with `all` (every instance first,
//!    the index last) when the destination holds indexes; otherwise the platform's image
//!    is chosen by the one resolution walk ([`crate::resolve`]: [`ImageIndex::choose`],
//!    nested indexes followed to a bounded depth, each digest once), copied alone as the
//!    destination's top manifest, and the destination is told which indexes it was chosen
//!    from ([`ImageDestination::chosen_from`]: the store records the outermost with it).
//!    Manifests by digest and configs the destination already holds are reused
//!    ([`ImageDestination::reuse`]: the store's, under locks held until its commit, so
//!    the lock order is manifests → config → layers).
//! 2. For each image: the config is read (≤ 4 MiB, verified), its diff IDs counted
//!    against the layers before any layer moves; then the config and the layers go
//!    across, `jobs` at a time, each digest once. A blob the destination has (or can
//!    mount, given the source's [`BlobLocation`]s) is never sent. Each blob is streamed
//!    from the source and verified by the destination before it becomes visible. A source
//!    with a resumable reader (a registry: [`ImageSource::blob_fetcher`]) hands it to the
//!    destination ([`ImageDestination::put_blob_from`]): one that keeps partial writes
//!    (the store, `oci:`, `dir:`) resumes within and across runs and slices large blobs;
//!    any other gets the reader's stream, resumed within the run. A Docker schema 1 image
//!    from a registry is converted: its layers move, their diff IDs are computed (read
//!    back from the destination where it can), and a schema 2 config and manifest are
//!    synthesised.
//! 3. With nothing to change, manifests are written byte for byte (digests preserved).
//!    `format` rewrites manifest, config and layer media types (the config's bytes stay);
//!    `compression` recompresses layers whose compression differs (decompress, check the
//!    diff ID, compress on all cores, new digest and size); the rewritten manifest (and
//!    index) are serialised as containers/image writes them.
//! 4. With `preserve_signatures`: the source's simple-signing signatures, its cosign
//!    `sha256-HEX.sig` tag, and its referrers are carried along; a copy that changes the
//!    signed manifest refuses to (the signatures would not verify).
//! 5. The destination commits last. A copy into the store that fails, or whose future is
//!    dropped (cancelled), leaves it as it was (its lease, and
//!    [`hoist_store::Store::withdraw_unreached`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;

use hoist_store::Store;
use hoist_types::schema1::Schema1Manifest;
use hoist_types::{
    BlobKind, Compression, Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest,
    MAX_CONFIG_SIZE, Manifest, Platform, Progress, ProgressEvent,
};
use tokio::sync::Semaphore;

use crate::fetch::Fetched;
use crate::transports::any::{AnyDestination, AnySource};
use crate::transports::{
    BlobLocation, BlobStream, DestinationCaps, ImageDestination, ImageSource, ManifestFormat,
    ManifestRef, ManifestTarget, RawManifest, raw_manifest,
};
use crate::verifying::VerifyingRead;
use crate::{TransportError, blocking};
use crate::{convert, resolve, schema1};

/// Most entries of an index copied with `all`.
const MAX_INSTANCES: usize = 1024;

/// What to copy and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Copy every instance of an index (else the platform's image only).
    pub all: bool,
    /// The platform chosen from an index without `all`.
    pub platform: Platform,
    /// Convert manifests to this format.
    pub format: Option<ManifestFormat>,
    /// Recompress layers to this compression.
    pub compression: Option<Compression>,
    /// Carry signatures, cosign signature tags and referrers along.
    pub preserve_signatures: bool,
    /// Blobs moved at once (at least 1).
    pub jobs: usize,
    /// Where recompressed layers are staged (default: the system temp directory).
    pub temp_dir: Option<std::path::PathBuf>,
    /// The trust policy to enforce on the source's top manifest before anything is copied
    /// (`None`: accept anything).
    pub trust: Option<crate::trust::TrustCheck>,
    /// Sign the top manifest written (`--sign-by`, `--sign-by-sigstore-private-key`).
    pub sign: Option<crate::trust::SignOptions>,
    /// Copies running at once into one registry put each shared blob once: each blob is
    /// claimed while it moves, and a blob another copy has put is mounted from its
    /// repository ([`crate::sync::BlobClaims`]; `hoist sync` sets it).
    pub blob_claims: Option<crate::sync::DestinationClaims>,
    /// Write every manifest with the bytes (so the digest) it has in the source, as
    /// skopeo's `--preserve-digests`: a copy that would convert a manifest (a format the
    /// destination requires or was asked for, schema 1) or recompress a layer is refused
    /// before any blob moves, and a destination's default format (an `oci:` layout's OCI)
    /// is not applied. One platform chosen from an index keeps its own digest.
    pub preserve_digests: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            all: false,
            platform: Platform::host(),
            format: None,
            compression: None,
            preserve_signatures: false,
            jobs: crate::DEFAULT_JOBS,
            temp_dir: None,
            trust: None,
            sign: None,
            blob_claims: None,
            preserve_digests: false,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// The digest of the source's top manifest.
    pub source_digest: Option<Digest>,
    /// The digest of the top manifest written (equal to the source's when nothing changed
    /// and no image was chosen from an index).
    pub digest: Option<Digest>,
    /// Where it went.
    pub location: String,
    /// Image manifests copied.
    pub images: usize,
    /// Blobs sent.
    pub blobs_copied: usize,
    /// Blobs the destination had (or mounted).
    pub blobs_skipped: usize,
    /// Bytes sent.
    pub bytes_copied: u64,
    /// Layers recompressed.
    pub recompressed: usize,
    /// Signatures, signature tags and referrers carried along.
    pub signatures: usize,
    /// Bytes read from the source for the blobs sent: less than `bytes_copied` when
    /// downloads went on from partials kept by an earlier run.
    pub bytes_read: u64,
    /// Blobs whose download went on from a partial kept by an earlier run.
    pub blobs_resumed: usize,
    /// Bytes reused from such partials (not read again).
    pub bytes_resumed: u64,
    /// Where each blob sent came from: the URL that served its last bytes (or the
    /// source's `transport:reference`).
    pub endpoints: BTreeMap<Digest, String>,
}

/// How the engine runs for a caller: what it calls the source in events and errors,
/// whether foreign layers that name `urls` are refused (a pull without
/// `--foreign-layers`), and whether a blob the destination holds is still read from the
/// source and verified (a load refuses a bad archive whatever the store holds).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub label: String,
    pub refuse_foreign_urls: bool,
    pub verify_present: bool,
}

impl Settings {
    fn of(src: &AnySource) -> Settings {
        Settings {
            label: src.describe(),
            refuse_foreign_urls: false,
            verify_present: false,
        }
    }
}

struct Engine<'a> {
    src: &'a AnySource,
    how: &'a Settings,
    dst: &'a AnyDestination,
    opts: &'a CopyOptions,
    progress: &'a dyn Progress,
    caps: DestinationCaps,
    format: Option<ManifestFormat>,
    compression: Option<Compression>,
    hints: Vec<BlobLocation>,
    report: Mutex<CopyReport>,
    /// Blobs already handled in this copy (shared layers of several images, and of the
    /// images of one [`copy_images`]).
    done: &'a Mutex<HashSet<Digest>>,
}

/// Copy the image `src` names to `dst`, then commit `dst`.
pub async fn copy(
    src: &AnySource,
    dst: AnyDestination,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport, TransportError> {
    copy_with(src, dst, opts, progress, &Settings::of(src)).await
}

/// [`copy`] with the caller's [`Settings`] (`hoist pull` is a copy into the store).
pub(crate) async fn copy_with(
    src: &AnySource,
    dst: AnyDestination,
    opts: &CopyOptions,
    progress: &dyn Progress,
    how: &Settings,
) -> Result<CopyReport, TransportError> {
    // A copy into the store that fails leaves it as it was: staged blobs go with the
    // destination, and the blobs the registry fetcher published straight into the store
    // (resumable downloads) are withdrawn when nothing else reaches them (large ones kept
    // as complete partial downloads). The copy has ended by then: every transfer it
    // started, and every lock it took is released.
    let store: Option<Store> = match &dst {
        AnyDestination::Hoist(d) => Some(d.store().clone()),
        _ => None,
    };
    let guard = WithdrawOnDrop(store.clone());
    let result = copy_to(src, dst, opts, progress, how).await;
    guard.disarm();
    withdraw_on_failure(&result, store).await;
    result
}

/// After a copy into the store failed: what it published that nothing reaches goes again
/// (see [`copy_with`]).
async fn withdraw_on_failure<T>(result: &Result<T, TransportError>, store: Option<Store>) {
    if let (Err(_), Some(s)) = (result, store) {
        // The copy's own error is what the caller needs; a failed withdrawal only
        // leaves orphans that gc collects.
        let _ = crate::blocking(move || s.withdraw_unreached()).await;
    }
}

/// A copy into the store whose future is dropped before it ends (cancelled: a timeout, a
/// `select!`) leaves the store as a failure does: the withdrawal runs on a blocking
/// thread (inline without a runtime), holding the copy's leased handle, so the lease ends
/// only once what the copy published and nothing else reaches is withdrawn.
struct WithdrawOnDrop(Option<Store>);

impl WithdrawOnDrop {
    /// The copy ended (well or not): nothing to do on drop.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        let Some(s) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || {
                    let _ = s.withdraw_unreached();
                });
            }
            Err(_) => {
                let _ = s.withdraw_unreached();
            }
        }
    }
}

/// One image of [`copy_images`]: where it is read from, the name it gets in the store (a
/// tag, or `None`: recorded by digest only) and the source recorded with it.
#[derive(Debug)]
pub struct StoreImage {
    /// The image's source.
    pub source: AnySource,
    /// Its names in the store, each a tag or `None` (recorded by digest only); the image
    /// is recorded once per name.
    pub names: Vec<Option<String>>,
    /// Where it came from, as recorded (`docker-archive:PATH`).
    pub recorded: Option<String>,
}

/// Copy several images into the store and commit them together (`hoist load` of an
/// archive of several images): each is copied by the engine as [`copy`] copies one, into
/// one [`HoistDestination`](crate::transports::hoist::HoistDestination) that sets each
/// aside ([`next_image`](crate::transports::hoist::HoistDestination::next_image)); a blob
/// several images share is read and verified once. The one commit checks every image
/// before it publishes a blob or moves a name, so a refusal of any leaves the store as it
/// was; the records written are returned in order.
pub async fn copy_images(
    images: &[StoreImage],
    dst: crate::transports::hoist::HoistDestination,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<Vec<hoist_store::ImageRecord>, TransportError> {
    let store = Some(dst.store().clone());
    let guard = WithdrawOnDrop(store.clone());
    let result = copy_images_to(images, dst, opts, progress).await;
    guard.disarm();
    withdraw_on_failure(&result, store).await;
    result
}

async fn copy_images_to(
    images: &[StoreImage],
    dst: crate::transports::hoist::HoistDestination,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<Vec<hoist_store::ImageRecord>, TransportError> {
    let done = Mutex::new(HashSet::new());
    let dst = AnyDestination::Hoist(dst);
    for img in images {
        let how = Settings {
            verify_present: true,
            ..Settings::of(&img.source)
        };
        // Under a second name the image is copied again, and its blobs (in `done`) are not.
        for name in &img.names {
            if let AnyDestination::Hoist(d) = &dst {
                d.next_image(name.as_deref(), img.recorded.clone())?;
            }
            transfer(&img.source, &dst, opts, progress, &how, &done).await?;
        }
    }
    progress.event(&ProgressEvent::Status {
        message: "committing",
    });
    match dst {
        AnyDestination::Hoist(d) => Ok(d.commit_records().await?.1),
        _ => unreachable!("built as a store destination above"),
    }
}

async fn copy_to(
    src: &AnySource,
    dst: AnyDestination,
    opts: &CopyOptions,
    progress: &dyn Progress,
    how: &Settings,
) -> Result<CopyReport, TransportError> {
    let done = Mutex::new(HashSet::new());
    let report = transfer(src, &dst, opts, progress, how, &done).await?;
    progress.event(&ProgressEvent::Status {
        message: "committing",
    });
    let committed = dst.commit().await?;
    Ok(CopyReport {
        digest: Some(committed.digest),
        location: committed.location,
        ..report
    })
}

/// Everything of a copy but the commit: trust, the top manifest and what it names, the
/// signatures. `done`: the blobs handled already (by earlier images of one commit).
async fn transfer(
    src: &AnySource,
    dst: &AnyDestination,
    opts: &CopyOptions,
    progress: &dyn Progress,
    how: &Settings,
    done: &Mutex<HashSet<Digest>>,
) -> Result<CopyReport, TransportError> {
    let caps = dst.capabilities();
    let (format, compression) = fit_caps(opts, &caps, &dst.describe())?;
    let engine = Engine {
        src,
        how,
        dst,
        opts,
        progress,
        format,
        compression,
        caps,
        hints: src.blob_locations(),
        report: Mutex::new(CopyReport::default()),
        done,
    };
    let mut top = src.get_manifest(&ManifestRef::Top).await?;
    // Every platform: the index the top image was chosen from, where the source keeps it.
    if opts.all
        && matches!(top.manifest, Manifest::Image(_))
        && let Some(index) = src.index_of_top().await?
    {
        top = index;
    }
    // Trust first: a refused image leaves the destination untouched.
    if let Some(trust) = &opts.trust {
        trust.enforce(src, &top).await?;
    }
    let written = engine.copy_top(&top).await?;
    engine.report().source_digest = Some(top.digest.clone());
    if opts.preserve_signatures {
        engine.carry_signatures(&top, &written).await?;
    }
    if let Some(sign) = &opts.sign {
        // Simple signatures carried from the source are kept, the new one after them.
        let carried = if opts.preserve_signatures && written.digest == top.digest {
            src.get_signatures(None).await?
        } else {
            Vec::new()
        };
        engine.report().signatures +=
            crate::trust::sign(sign, dst, &written, carried, progress).await?;
    }
    Ok(std::mem::take(&mut *engine.report()))
}

impl Engine<'_> {
    fn report(&self) -> std::sync::MutexGuard<'_, CopyReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copy the top manifest (and what it names); returns what was written as top.
    async fn copy_top(&self, top: &RawManifest) -> Result<RawManifest, TransportError> {
        let out = match &top.manifest {
            Manifest::Index(idx) if self.opts.all && self.caps.index => {
                self.copy_index(top, idx).await?
            }
            Manifest::Index(_) => {
                // The platform's image, through nested indexes: the one resolution walk.
                let resolved = resolve::walk(
                    top.clone(),
                    &self.how.label,
                    &self.opts.platform,
                    |entry| async move { self.instance(&entry).await },
                )
                .await?;
                self.dst.chosen_from(&resolved.indexes);
                self.copy_one(&resolved.image).await?
            }
            _ => self.copy_one(top).await?,
        };
        self.dst.put_manifest(&out, &ManifestTarget::Top).await?;
        Ok(out)
    }

    /// An image manifest, or a schema 1 one converted.
    async fn copy_one(&self, m: &RawManifest) -> Result<RawManifest, TransportError> {
        match &m.manifest {
            Manifest::Schema1(s1) => self.copy_schema1(m, s1).await,
            _ => self.copy_image(m).await,
        }
    }

    /// A manifest an index names, checked against its entry: the destination's copy
    /// when it holds it ([`ImageDestination::reuse`]: the store, which then keeps it
    /// locked until its commit), else the source's.
    async fn instance(&self, entry: &Descriptor) -> Result<RawManifest, TransportError> {
        let declared = entry.media_type.is_manifest().then_some(&entry.media_type);
        let held = self.dst.reuse(entry).await?;
        let child = match held.map(|b| raw_manifest(b, declared, Some(&entry.digest))) {
            Some(Ok(m)) => m,
            _ => {
                self.src
                    .get_manifest(&ManifestRef::Digest(entry.digest.clone()))
                    .await?
            }
        };
        if child.bytes.len() as u64 != entry.size {
            return Err(TransportError::SizeMismatch {
                what: format!("manifest {} of {}", entry.digest, self.how.label),
                expected: entry.size,
                actual: child.bytes.len() as u64,
            });
        }
        Ok(child)
    }

    async fn copy_index(
        &self,
        top: &RawManifest,
        idx: &ImageIndex,
    ) -> Result<RawManifest, TransportError> {
        if idx.manifests.len() > MAX_INSTANCES {
            return Err(TransportError::IndexTooLarge {
                digest: top.digest.clone(),
                count: idx.manifests.len(),
                limit: MAX_INSTANCES,
            });
        }
        let want = self
            .format
            .filter(|f| ManifestFormat::of(&top.media_type) != Some(*f));
        if let Some(f) = want {
            self.keep_digest(
                &top.digest,
                &format!("it would be written as {}", f.as_str()),
            )?;
        }
        let mut entries = Vec::with_capacity(idx.manifests.len());
        let mut changed = false;
        for entry in &idx.manifests {
            if entry.media_type.is_index() {
                return Err(TransportError::NestedIndex {
                    index: top.digest.clone(),
                    nested: entry.digest.clone(),
                });
            }
            let child = self.instance(entry).await?;
            if matches!(child.manifest, Manifest::Schema1(_)) {
                return Err(schema1_in_index(&child.digest));
            }
            let out = self.copy_image(&child).await?;
            self.dst
                .put_manifest(&out, &ManifestTarget::Instance)
                .await?;
            let mut e = entry.clone();
            if out.digest != child.digest || out.media_type != entry.media_type {
                changed = true;
                e.digest = out.digest.clone();
                e.size = out.bytes.len() as u64;
                e.media_type = out.media_type.clone();
            }
            entries.push(e);
        }
        if !changed && want.is_none() {
            return Ok(top.clone());
        }
        let format = want
            .or_else(|| ManifestFormat::of(&top.media_type))
            .unwrap_or(ManifestFormat::Oci);
        if format == ManifestFormat::V2s2
            && (idx.annotations.as_ref().is_some_and(|a| !a.is_empty()) || idx.subject.is_some())
        {
            return Err(TransportError::ConversionRefused {
                digest: top.digest.clone(),
                reason: "annotations or subject cannot be kept in a Docker manifest list"
                    .to_owned(),
            });
        }
        let bytes = convert::index_bytes(idx, format, &entries);
        Ok(raw_manifest(bytes, None, None)?)
    }

    /// Refuses `why`, a change to the manifest `digest`, when digests are preserved
    /// ([`CopyOptions::preserve_digests`]).
    fn keep_digest(&self, digest: &Digest, why: &str) -> Result<(), TransportError> {
        if !self.opts.preserve_digests {
            return Ok(());
        }
        Err(TransportError::ConversionRefused {
            digest: digest.clone(),
            reason: format!("its digest is to be preserved, but {why}"),
        })
    }

    /// Copy one image's blobs; returns the manifest to write (converted or as it was).
    async fn copy_image(&self, m: &RawManifest) -> Result<RawManifest, TransportError> {
        let Manifest::Image(im) = &m.manifest else {
            return Err(TransportError::NotAnImage {
                location: self.how.label.clone(),
                digest: m.digest.clone(),
                found: format!("media type {}", m.media_type),
            });
        };
        let format = self
            .format
            .filter(|f| ManifestFormat::of(&m.media_type) != Some(*f));
        if format == Some(ManifestFormat::V2s2) {
            convert::check_v2s2(im, &m.digest)?;
        }
        let total = im.config.size + im.layers.iter().map(|l| l.size).sum::<u64>();
        self.progress.event(&ProgressEvent::Resolved {
            reference: &self.how.label,
            digest: &m.digest,
            layers: im.layers.len(),
            total_bytes: total,
        });
        // The config: read, verified, checked against the layer count before any layer
        // moves.
        let (config, origin) = self.read_config(&im.config).await?;
        let diff_ids = if im.config.media_type.is_config() {
            let cfg =
                ImageConfig::parse(&config).map_err(|source| TransportError::InvalidConfig {
                    digest: im.config.digest.clone(),
                    source,
                })?;
            cfg.check_layer_count(im.layers.len()).map_err(|source| {
                TransportError::InvalidConfig {
                    digest: im.config.digest.clone(),
                    source,
                }
            })?;
            Some(cfg.rootfs.diff_ids.clone())
        } else {
            None
        };
        self.check_foreign(&im.layers)?;
        // Plan each layer: as it is, or recompressed.
        let mut plan = Vec::with_capacity(im.layers.len());
        for (i, l) in im.layers.iter().enumerate() {
            let recompress = match (self.compression, l.media_type.layer_compression()) {
                (Some(want), Some(have)) if want != have && !l.media_type.is_foreign_layer() => {
                    Some((have, want))
                }
                _ => None,
            };
            let diff_id = diff_ids.as_ref().and_then(|d| d.get(i)).cloned();
            plan.push((l.clone(), recompress, diff_id));
        }
        if format == Some(ManifestFormat::V2s2)
            && plan.iter().any(|(l, r, _)| {
                r.map_or(l.media_type.layer_compression(), |(_, to)| Some(to))
                    == Some(Compression::Zstd)
            })
        {
            return Err(TransportError::ZstdInDockerSchema2 {
                manifest: Some(m.digest.clone()),
            });
        }
        if let Some(f) = format {
            self.keep_digest(&m.digest, &format!("it would be written as {}", f.as_str()))?;
        }
        if plan.iter().any(|(_, r, _)| r.is_some()) {
            self.keep_digest(&m.digest, "its layers would be recompressed")?;
        }
        // The config first (small; a store keeps it staged until the commit), then the
        // layers in parallel.
        self.transfer_bytes(&im.config, Arc::new(config), origin)
            .await?;
        let new_layers = self.move_layers(&plan).await?;
        self.report().images += 1;
        let changed = new_layers
            .iter()
            .zip(&im.layers)
            .any(|(a, b)| a.digest != b.digest);
        if format.is_none() && !changed {
            return Ok(m.clone());
        }
        let f = format
            .or_else(|| ManifestFormat::of(&m.media_type))
            .unwrap_or(ManifestFormat::Oci);
        let mut cfg_desc = im.config.clone();
        cfg_desc.media_type = convert::config_type(f, &im.config.media_type);
        let mut layers = Vec::with_capacity(new_layers.len());
        for (new, (old, r, _)) in new_layers.into_iter().zip(&plan) {
            let mut d = new;
            let comp = r.map_or(old.media_type.layer_compression(), |(_, to)| Some(to));
            if let Some(c) = comp {
                d.media_type = convert::layer_type(f, &old.media_type, c)?;
            }
            layers.push(d);
        }
        let bytes = convert::image_manifest_bytes(im, f, &cfg_desc, &layers);
        Ok(raw_manifest(bytes, None, None)?)
    }

    /// The config's bytes (at most 4 MiB, verified), and the URL they came from: the
    /// destination's copy when it holds it ([`ImageDestination::reuse`]: the store, which
    /// keeps it locked until its commit), else the source's.
    async fn read_config(
        &self,
        desc: &Descriptor,
    ) -> Result<(Vec<u8>, Option<String>), TransportError> {
        if desc.size > MAX_CONFIG_SIZE {
            return Err(TransportError::SizeMismatch {
                what: format!("config {} exceeds the 4 MiB limit", desc.digest),
                expected: MAX_CONFIG_SIZE,
                actual: desc.size,
            });
        }
        if let Some(bytes) = self.dst.reuse(desc).await? {
            return Ok((bytes, None));
        }
        let read = match (self.src.read_before(desc), self.src.blob_fetcher()) {
            // Read ahead by the source's owner (checked here all the same).
            (Some(read), _) => Some(read),
            // A registry: read through its sources, to learn which one served it (the
            // engine announces the blob when it moves it).
            (None, Some(fetcher)) => {
                let (bytes, fetched) = fetcher.read_small(desc, &hoist_types::NoProgress).await?;
                Some((bytes, fetched.endpoint))
            }
            (None, None) => None,
        };
        if let Some((bytes, endpoint)) = read {
            let mut h = hoist_types::Hasher::new(desc.digest.algorithm());
            h.update(&bytes);
            let actual = h.finish();
            if bytes.len() as u64 != desc.size || actual != desc.digest {
                return Err(TransportError::DigestMismatch {
                    what: format!(
                        "config {} from {} ({} bytes, {} declared)",
                        desc.digest,
                        endpoint,
                        bytes.len(),
                        desc.size
                    ),
                    expected: desc.digest.clone(),
                    actual,
                });
            }
            return Ok((bytes, Some(endpoint)));
        }
        let stream = self.src.get_blob(desc).await?;
        let d = desc.clone();
        blocking(move || {
            let origin = stream.origin().to_owned();
            let mut buf = Vec::with_capacity(d.size as usize);
            let counter = std::sync::atomic::AtomicU64::new(0);
            let mut s = stream;
            crate::transports::local::copy_verified(&mut s, &d, &mut buf, &counter).map_err(
                |e| match e {
                    TransportError::Stream { what, source } => TransportError::Stream {
                        what: format!("{what} (config from {origin})"),
                        source,
                    },
                    e => e,
                },
            )?;
            Ok((buf, Some(origin)))
        })
        .await?
    }

    /// Foreign layers that name `urls` are fetched only when asked (`--foreign-layers`:
    /// from their `urls`, then the registry). A foreign (non-distributable) layer without
    /// `urls` can only come from the registry, like any other layer.
    fn check_foreign(&self, layers: &[Descriptor]) -> Result<(), TransportError> {
        if !self.how.refuse_foreign_urls {
            return Ok(());
        }
        match layers.iter().find(|l| {
            l.media_type.is_foreign_layer() && l.urls.as_ref().is_some_and(|u| !u.is_empty())
        }) {
            Some(l) => Err(TransportError::ForeignLayer {
                digest: l.digest.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Move the layers of one image, `jobs` at a time, each digest once (a layer listed
    /// twice moves once and gets the same result); returns their descriptors as written.
    async fn move_layers(&self, plan: &[Plan]) -> Result<Vec<Descriptor>, TransportError> {
        let mut first: HashMap<&Digest, usize> = HashMap::new();
        let unique: Vec<usize> = (0..plan.len())
            .filter(|&i| *first.entry(&plan[i].0.digest).or_insert(i) == i)
            .collect();
        let (moved, first_err) = if self.caps.ordered {
            self.move_layers_ordered(plan, &unique).await
        } else {
            self.move_layers_parallel(plan, &unique).await
        };
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(plan
            .iter()
            .map(|(l, ..)| moved[&first[&l.digest]].clone())
            .collect())
    }

    /// [`move_layers`](Self::move_layers) into any other destination: `jobs` at a time.
    /// The layers moved by index in `plan`, and the first error.
    async fn move_layers_parallel(
        &self,
        plan: &[Plan],
        unique: &[usize],
    ) -> (HashMap<usize, Descriptor>, Option<TransportError>) {
        // Every transfer started is awaited, also after one failed (later ones then do not
        // start): a transfer dropped mid-way would leave its blocking writer running after
        // the copy returned, into a destination that is being cleaned up.
        let jobs = self.opts.jobs;
        let sem = Semaphore::new(jobs.max(1));
        let failed = std::sync::atomic::AtomicBool::new(false);
        let futures = unique.iter().map(|&i| {
            let (l, r, diff_id) = &plan[i];
            let (sem, failed) = (&sem, &failed);
            async move {
                let _permit = sem.acquire().await.expect("semaphore never closed");
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return None;
                }
                let out = match r {
                    None => self.transfer(l, BlobKind::Layer).await.map(|()| l.clone()),
                    Some((from, to)) => self.recompress(l, *from, *to, diff_id.as_ref()).await,
                };
                if out.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Some(out)
            }
        });
        let mut moved = HashMap::with_capacity(unique.len());
        let mut first_err = None;
        for (i, out) in unique
            .iter()
            .zip(futures_util::future::join_all(futures).await)
        {
            match out {
                Some(Ok(d)) => {
                    moved.insert(*i, d);
                }
                Some(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                None => {}
            }
        }
        (moved, first_err)
    }

    /// [`move_layers`](Self::move_layers) into a destination that lays blobs out as they
    /// arrive (an archive): each blob goes in one at a time, in manifest order, so the
    /// same image gives the same bytes; but the layers to recompress (decompress for a
    /// docker-archive) are read, verified and recompressed `jobs` at a time ahead of
    /// their turn, each into its temp file, so the cores work while one blob is written.
    /// Every preparation started is awaited, also after a failure.
    async fn move_layers_ordered(
        &self,
        plan: &[Plan],
        unique: &[usize],
    ) -> (HashMap<usize, Descriptor>, Option<TransportError>) {
        use futures_util::StreamExt as _;
        let failed = std::sync::atomic::AtomicBool::new(false);
        let prepared = futures_util::stream::iter(unique.to_vec())
            .map(|i| self.prepare_in_turn(i, plan, &failed))
            .buffered(self.opts.jobs.max(1));
        // The preparations are driven on their own while a blob is being written: the
        // prepared layers wait, in order, in a short queue (each a temp file).
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let producer = async move {
            futures_util::pin_mut!(prepared);
            while let Some(item) = prepared.next().await {
                // A consumer gone (it failed) only drops what is left.
                let _ = tx.send(item).await;
            }
        };
        let mut moved = HashMap::with_capacity(unique.len());
        let mut first_err = None;
        let consumer = async {
            while let Some((i, out)) = rx.recv().await {
                if first_err.is_some() {
                    // Drain: the preparations under way end before the copy returns.
                    continue;
                }
                let (l, ..) = &plan[i];
                let result = match out {
                    None => self.transfer(l, BlobKind::Layer).await.map(|()| l.clone()),
                    Some(Ok((new, file))) => self.put_recompressed(new, file).await,
                    Some(Err(e)) => Err(e),
                };
                match result {
                    Ok(d) => {
                        moved.insert(i, d);
                    }
                    Err(e) => {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        first_err = Some(e);
                    }
                }
            }
        };
        futures_util::future::join(producer, consumer).await;
        (moved, first_err)
    }

    /// One preparation of [`move_layers_ordered`](Self::move_layers_ordered): the layer
    /// `plan[i]` recompressed into a temp file when the plan says so and nothing failed.
    async fn prepare_in_turn(
        &self,
        i: usize,
        plan: &[Plan],
        failed: &std::sync::atomic::AtomicBool,
    ) -> (
        usize,
        Option<Result<(Descriptor, std::fs::File), TransportError>>,
    ) {
        let (l, r, diff_id) = &plan[i];
        let out = match r {
            Some((from, to)) if !failed.load(std::sync::atomic::Ordering::Relaxed) => Some(
                self.prepare_recompressed(l, *from, *to, diff_id.as_ref())
                    .await,
            ),
            _ => None,
        };
        if matches!(out, Some(Err(_))) {
            failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        (i, out)
    }

    /// A Docker schema 1 image, converted to schema 2 (the layers' sizes learnt from the
    /// registry, the layers moved, their diff IDs computed, the config and manifest
    /// synthesised; the config moves after the layers). Only a source that can tell the
    /// layers' sizes converts (a registry).
    async fn copy_schema1(
        &self,
        m: &RawManifest,
        s1: &Schema1Manifest,
    ) -> Result<RawManifest, TransportError> {
        self.keep_digest(&m.digest, "a schema 1 manifest is converted to schema 2")?;
        let unsupported = |why: &str| TransportError::ConversionRefused {
            digest: m.digest.clone(),
            reason: format!("schema 1 manifest of {}: {why}", self.how.label),
        };
        let Some(fetcher) = self.src.blob_fetcher() else {
            return Err(unsupported(
                "converting it needs the layers' sizes, which only a registry source tells",
            ));
        };
        if self.compression.is_some() {
            return Err(unsupported("converted layers are not recompressed"));
        }
        let layers = schema1::layers(fetcher.sources(), s1, self.progress).await?;
        self.progress.event(&ProgressEvent::Resolved {
            reference: &self.how.label,
            digest: &m.digest,
            layers: layers.len(),
            total_bytes: layers.iter().map(|l| l.size).sum(),
        });
        let plan: Vec<Plan> = layers.iter().map(|l| (l.clone(), None, None)).collect();
        self.move_layers(&plan).await?;
        let mut diff_ids = Vec::with_capacity(layers.len());
        for l in &layers {
            diff_ids.push(self.diff_id(l).await?);
        }
        let (cdesc, config, bytes) = schema1::convert(s1, &layers, &diff_ids)?;
        self.transfer_bytes(&cdesc, Arc::new(config), None).await?;
        self.report().images += 1;
        let out = raw_manifest(bytes, None, None)?;
        let Manifest::Image(im) = &out.manifest else {
            unreachable!("a schema 2 image manifest was synthesised");
        };
        match self.format {
            Some(f) if f != ManifestFormat::V2s2 => {
                let cfg_desc = Descriptor {
                    media_type: convert::config_type(f, &cdesc.media_type),
                    ..cdesc
                };
                let mut new_layers = Vec::with_capacity(layers.len());
                for l in &layers {
                    let mut d = l.clone();
                    d.media_type = convert::layer_type(f, &l.media_type, Compression::Gzip)?;
                    new_layers.push(d);
                }
                let bytes = convert::image_manifest_bytes(im, f, &cfg_desc, &new_layers);
                Ok(raw_manifest(bytes, None, None)?)
            }
            _ => Ok(out),
        }
    }

    /// The diff ID of a gzip layer this copy moved: read back from the destination where
    /// it can, else from the source again (verified as it is read).
    async fn diff_id(&self, l: &Descriptor) -> Result<Digest, TransportError> {
        let d = l.clone();
        if let Some(stream) = self.dst.read_back(l).await? {
            return blocking(move || schema1::diff_id_of_gzip(stream.into_read(), &d.digest))
                .await?;
        }
        let stream = self.src.get_blob(l).await?;
        blocking(move || {
            let mut verified = VerifyingRead::new(stream, &d);
            let id = schema1::diff_id_of_gzip(&mut verified, &d.digest)?;
            verified.finish().map_err(|source| TransportError::Stream {
                what: format!("reading layer {}", d.digest),
                source,
            })?;
            Ok(id)
        })
        .await?
    }

    /// Claim a digest for this copy; `false` when another image of it already moved it.
    fn claim(&self, d: &Digest) -> bool {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.clone())
    }

    fn skipped(&self, desc: &Descriptor, kind: BlobKind) {
        self.progress.event(&ProgressEvent::BlobDone {
            digest: &desc.digest,
            size: desc.size,
            kind,
            skipped: true,
        });
        self.report().blobs_skipped += 1;
    }

    /// A blob sent; `fetched` tells what reading it took when the source's resumable
    /// reader fetched it (else it was read whole from `endpoint`).
    fn sent(&self, desc: &Descriptor, kind: BlobKind, fetched: Option<Fetched>, endpoint: &str) {
        self.progress.event(&ProgressEvent::BlobDone {
            digest: &desc.digest,
            size: desc.size,
            kind,
            skipped: false,
        });
        let mut r = self.report();
        r.blobs_copied += 1;
        r.bytes_copied += desc.size;
        match fetched {
            Some(f) => {
                r.bytes_read += f.wire;
                if f.resumed > 0 {
                    r.blobs_resumed += 1;
                    r.bytes_resumed += f.resumed;
                }
                r.endpoints.insert(desc.digest.clone(), f.endpoint);
            }
            None => {
                r.bytes_read += desc.size;
                r.endpoints.insert(desc.digest.clone(), endpoint.to_owned());
            }
        }
    }

    /// The claim on a blob shared with copies running at once
    /// ([`CopyOptions::blob_claims`]), and the mount hints: where it already is first.
    async fn shared_claim(
        &self,
        d: &Digest,
    ) -> (Option<crate::sync::claims::Claim>, Vec<BlobLocation>) {
        let Some(c) = &self.opts.blob_claims else {
            return (None, self.hints.clone());
        };
        let claim = c.claim(d).await;
        let hints = claim.hint().into_iter().chain(self.hints.clone()).collect();
        (Some(claim), hints)
    }

    /// Move one blob unless the destination has it.
    async fn transfer(&self, desc: &Descriptor, kind: BlobKind) -> Result<(), TransportError> {
        if !self.claim(&desc.digest) {
            self.skipped(desc, kind);
            return Ok(());
        }
        let (shared, hints) = self.shared_claim(&desc.digest).await;
        self.transfer_claimed(desc, kind, &hints).await?;
        if let Some(c) = shared {
            c.placed();
        }
        Ok(())
    }

    /// [`transfer`](Self::transfer) once the blob is claimed, with these mount hints.
    async fn transfer_claimed(
        &self,
        desc: &Descriptor,
        kind: BlobKind,
        hints: &[BlobLocation],
    ) -> Result<(), TransportError> {
        if self.dst.has_blob(desc, hints).await? {
            if self.how.verify_present {
                self.verify_only(desc).await?;
            }
            self.skipped(desc, kind);
            return Ok(());
        }
        if let Some(fetcher) = self.src.blob_fetcher() {
            // A source with a resumable reader (a registry): the destination fetches
            // through it, resuming and slicing where it keeps partial writes.
            if self
                .dst
                .put_blob_from(desc, kind, fetcher, self.progress)
                .await?
            {
                let fetched = fetcher.take_fetched(&desc.digest);
                self.sent(desc, kind, fetched, &self.src.describe());
            } else {
                self.skipped(desc, kind);
            }
            return Ok(());
        }
        let stream = self.src.get_blob(desc).await?;
        self.send(desc, kind, stream).await
    }

    /// Read a blob the destination has from the source and check it, sending nothing.
    async fn verify_only(&self, desc: &Descriptor) -> Result<(), TransportError> {
        let mut stream = self.src.get_blob(desc).await?;
        let d = desc.clone();
        blocking(move || {
            let done = std::sync::atomic::AtomicU64::new(0);
            crate::transports::local::copy_verified(&mut stream, &d, &mut std::io::sink(), &done)
        })
        .await?
    }

    /// Put one blob's stream into the destination, with its events.
    async fn send(
        &self,
        desc: &Descriptor,
        kind: BlobKind,
        stream: BlobStream,
    ) -> Result<(), TransportError> {
        let origin = stream.origin().to_owned();
        self.progress.event(&ProgressEvent::BlobStart {
            digest: &desc.digest,
            size: desc.size,
            kind,
            endpoint: &origin,
        });
        self.dst.put_blob(desc, stream, self.progress).await?;
        self.sent(desc, kind, None, &origin);
        Ok(())
    }

    /// Move a small blob already read (the config) from `origin` (where it was read; the
    /// source's name when `None`).
    async fn transfer_bytes(
        &self,
        desc: &Descriptor,
        bytes: Arc<Vec<u8>>,
        origin: Option<String>,
    ) -> Result<(), TransportError> {
        let kind = BlobKind::Config;
        if !self.claim(&desc.digest) {
            self.skipped(desc, kind);
            return Ok(());
        }
        let (shared, hints) = self.shared_claim(&desc.digest).await;
        if self.dst.has_blob(desc, &hints).await? {
            self.skipped(desc, kind);
        } else {
            let origin = origin.unwrap_or_else(|| self.src.describe());
            let stream = BlobStream::from_reader(
                Box::new(std::io::Cursor::new(bytes.as_ref().clone())),
                desc.size,
                origin,
            );
            self.send(desc, kind, stream).await?;
        }
        if let Some(c) = shared {
            c.placed();
        }
        Ok(())
    }

    /// Recompress one layer; returns its new descriptor.
    async fn recompress(
        &self,
        desc: &Descriptor,
        from: Compression,
        to: Compression,
        diff_id: Option<&Digest>,
    ) -> Result<Descriptor, TransportError> {
        let (new, file) = self.prepare_recompressed(desc, from, to, diff_id).await?;
        self.put_recompressed(new, file).await
    }

    /// The first half of [`recompress`](Self::recompress): the layer read, verified and
    /// recompressed into a temp file; its new descriptor.
    async fn prepare_recompressed(
        &self,
        desc: &Descriptor,
        from: Compression,
        to: Compression,
        diff_id: Option<&Digest>,
    ) -> Result<(Descriptor, std::fs::File), TransportError> {
        let stream = self.src.get_blob(desc).await?;
        self.progress.event(&ProgressEvent::BlobStart {
            digest: &desc.digest,
            size: desc.size,
            kind: BlobKind::Layer,
            endpoint: stream.origin(),
        });
        let tmp = self
            .opts
            .temp_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let (d, diff) = (desc.clone(), diff_id.cloned());
        let out = blocking(move || {
            // The source bytes are verified as they are read.
            let what = format!("layer {}", d.digest);
            let mut verified = VerifyingRead::new(stream, &d);
            let out = convert::recompress(&mut verified, from, to, diff.as_ref(), &tmp, &what)?;
            verified.finish().map_err(|source| TransportError::Stream {
                what: format!("reading {what}"),
                source,
            })?;
            Ok::<_, TransportError>(out)
        })
        .await??;
        let mut new = desc.clone();
        new.digest = out.digest;
        new.size = out.size;
        self.report().recompressed += 1;
        Ok((new, out.file))
    }

    /// The second half of [`recompress`](Self::recompress): the recompressed layer into
    /// the destination, unless it has it.
    async fn put_recompressed(
        &self,
        new: Descriptor,
        file: std::fs::File,
    ) -> Result<Descriptor, TransportError> {
        if !self.claim(&new.digest) || self.dst.has_blob(&new, &self.hints).await? {
            self.skipped(&new, BlobKind::Layer);
            return Ok(new);
        }
        let stream =
            BlobStream::from_own_file(file, new.size, new.digest.clone(), "recompressed layer");
        self.dst.put_blob(&new, stream, self.progress).await?;
        self.sent(&new, BlobKind::Layer, None, "recompressed layer");
        Ok(new)
    }

    /// Signatures, the cosign signature tag and referrers of the source's top manifest.
    async fn carry_signatures(
        &self,
        top: &RawManifest,
        written: &RawManifest,
    ) -> Result<(), TransportError> {
        let sigs = self.src.get_signatures(None).await?;
        let tag = format!("{}-{}.sig", top.digest.algorithm(), top.digest.hex());
        let has_tag = match self.src.tags().await {
            Ok(t) => t.contains(&tag),
            Err(_) => false,
        };
        let referrers = self.src.referrers(&top.digest).await?;
        if sigs.is_empty() && !has_tag && referrers.is_empty() {
            return Ok(());
        }
        if written.digest != top.digest {
            return Err(TransportError::SignaturesWouldBreak {
                digest: top.digest.clone(),
            });
        }
        if !sigs.is_empty() {
            if !self.caps.signatures {
                return Err(TransportError::SignaturesNotKept {
                    location: self.dst.describe(),
                    kind: "simple-signing",
                    count: sigs.len(),
                });
            }
            self.dst.put_signatures(&written.digest, &sigs).await?;
            self.report().signatures += sigs.len();
        }
        if has_tag {
            let m = self
                .src
                .get_manifest(&ManifestRef::Tag(tag.clone()))
                .await?;
            self.copy_plain(&m).await?;
            self.dst.put_manifest(&m, &ManifestTarget::Tag(tag)).await?;
            self.report().signatures += 1;
        }
        for r in referrers {
            let m = self.instance(&r).await?;
            self.copy_plain(&m).await?;
            self.dst.put_manifest(&m, &ManifestTarget::Instance).await?;
            self.report().signatures += 1;
        }
        Ok(())
    }

    /// Copy an artifact's blobs unchanged (signatures, referrers: no conversion).
    async fn copy_plain(&self, m: &RawManifest) -> Result<(), TransportError> {
        let Manifest::Image(ImageManifest { config, layers, .. }) = &m.manifest else {
            return Err(TransportError::NotAnImage {
                location: format!("signature or referrer of {}", self.how.label),
                digest: m.digest.clone(),
                found: format!("media type {}", m.media_type),
            });
        };
        self.transfer(config, BlobKind::Config).await?;
        for l in layers {
            self.transfer(l, BlobKind::Layer).await?;
        }
        Ok(())
    }
}

/// The manifest format and layer compression to write: what the destination requires
/// (`caps`), else what was asked for, else the destination's default format (an `oci:`
/// layout's is OCI). Asking for something the destination cannot hold is refused before
/// anything moves.
fn fit_caps(
    opts: &CopyOptions,
    caps: &DestinationCaps,
    dest: &str,
) -> Result<(Option<ManifestFormat>, Option<Compression>), TransportError> {
    if let (Some(want), Some(only)) = (opts.format, caps.format)
        && want != only
    {
        return Err(TransportError::FormatNotAccepted {
            location: dest.to_owned(),
            accepts: format!("{} manifests", only.as_str()),
            asked: format!("{} manifests", want.as_str()),
        });
    }
    if let (Some(want), Some(only)) = (opts.compression, caps.layer_compression)
        && want != only
    {
        let name = |c: Compression| match c {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        };
        return Err(TransportError::FormatNotAccepted {
            location: dest.to_owned(),
            accepts: format!("{} layers", name(only)),
            asked: format!("{} layers", name(want)),
        });
    }
    let default_format = caps.default_format.filter(|_| !opts.preserve_digests);
    Ok((
        caps.format.or(opts.format).or(default_format),
        caps.layer_compression.or(opts.compression),
    ))
}

fn schema1_in_index(d: &Digest) -> TransportError {
    TransportError::ConversionRefused {
        digest: d.clone(),
        reason: "Docker schema 1, listed by an index: only an image copied alone is converted"
            .to_owned(),
    }
}

/// One layer's move: as it is, or recompressed `(from, to)`, with its diff ID.
type Plan = (
    Descriptor,
    Option<(Compression, Compression)>,
    Option<Digest>,
);
