//! The copy engine: any source → any destination ([`copy`]).
//!
//! 1. The source's top manifest is read. An index is copied whole with `all` (every
//!    instance first, the index last) when the destination holds indexes; otherwise the
//!    platform's image is chosen ([`ImageIndex::choose`], the rule pull and archive load
//!    follow too; nested indexes are followed) and copied alone, as the destination's top
//!    manifest.
//! 2. For each image: the config is read (≤ 4 MiB, verified), its diff IDs counted
//!    against the layers; then the config and the layers go across, `jobs` at a time,
//!    each digest once. A blob the destination has (or can mount, given the source's
//!    [`BlobLocation`]s) is never sent. Each blob is streamed from the source and verified
//!    by the destination before it becomes visible. A source with a resumable reader (a
//!    registry: [`ImageSource::blob_fetcher`]) hands it to the destination
//!    ([`ImageDestination::put_blob_from`]): one that keeps partial writes (the store,
//!    `oci:`, `dir:`) resumes within and across runs and slices large blobs; any other
//!    gets the reader's stream, resumed within the run.
//! 3. With nothing to change, manifests are written byte for byte (digests preserved).
//!    `format` rewrites manifest, config and layer media types (the config's bytes stay);
//!    `compression` recompresses layers whose compression differs (decompress, check the
//!    diff ID, compress on all cores, new digest and size); the rewritten manifest (and
//!    index) are serialised as containers/image writes them.
//! 4. With `preserve_signatures`: the source's simple-signing signatures, its cosign
//!    `sha256-HEX.sig` tag, and its referrers are carried along; a copy that changes the
//!    signed manifest refuses to (the signatures would not verify).
//! 5. The destination commits last.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;

use hoist_types::{
    BlobKind, Compression, Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest,
    MAX_CONFIG_SIZE, MAX_INDEX_DEPTH, Manifest, Platform, Progress, ProgressEvent,
};
use tokio::sync::Semaphore;

use crate::convert;
use crate::transports::any::{AnyDestination, AnySource};
use crate::transports::{
    BlobLocation, BlobStream, DestinationCaps, ImageDestination, ImageSource, ManifestFormat,
    ManifestRef, ManifestTarget, RawManifest, raw_manifest,
};
use crate::{TransportError, blocking};

/// Most entries of an index copied with `all`.
const MAX_INSTANCES: usize = 1024;

/// What to copy and how.
#[derive(Debug, Clone)]
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
}

struct Engine<'a> {
    src: &'a AnySource,
    dst: &'a AnyDestination,
    opts: &'a CopyOptions,
    progress: &'a dyn Progress,
    caps: DestinationCaps,
    format: Option<ManifestFormat>,
    compression: Option<Compression>,
    hints: Vec<BlobLocation>,
    report: Mutex<CopyReport>,
    /// Blobs already handled in this copy (shared layers of several images).
    done: Mutex<HashSet<Digest>>,
}

/// Copy the image `src` names to `dst`, then commit `dst`.
pub async fn copy(
    src: &AnySource,
    dst: AnyDestination,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport, TransportError> {
    // A copy into the store that fails leaves it as it was: staged blobs go with the
    // destination, and the blobs the registry fetcher published straight into the store
    // (resumable downloads) are withdrawn when nothing else reaches them.
    let store = match &dst {
        AnyDestination::Hoist(d) => Some(d.store().clone()),
        _ => None,
    };
    let result = copy_to(src, dst, opts, progress).await;
    if let (Err(_), Some(s)) = (&result, store) {
        // The copy's own error is what the caller needs; a failed withdrawal only
        // leaves orphans that gc collects.
        let _ = crate::blocking(move || s.withdraw_unreached()).await;
    }
    result
}

async fn copy_to(
    src: &AnySource,
    dst: AnyDestination,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport, TransportError> {
    let caps = dst.capabilities();
    let (format, compression) = fit_caps(opts, &caps, &dst.describe())?;
    let engine = Engine {
        src,
        dst: &dst,
        opts,
        progress,
        format,
        compression,
        caps,
        hints: src.blob_locations(),
        report: Mutex::new(CopyReport::default()),
        done: Mutex::new(HashSet::new()),
    };
    let top = src.get_manifest(&ManifestRef::Top).await?;
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
            crate::trust::sign(sign, &dst, &written, carried, progress).await?;
    }
    let mut report = std::mem::take(&mut *engine.report());
    drop(engine);
    progress.event(&ProgressEvent::Status {
        message: "committing",
    });
    let committed = dst.commit().await?;
    report.digest = Some(committed.digest);
    report.location = committed.location;
    Ok(report)
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
            Manifest::Index(idx) => {
                let child = self.platform_image(top, idx).await?;
                self.copy_image(&child).await?
            }
            Manifest::Image(_) => self.copy_image(top).await?,
            Manifest::Schema1(_) => return Err(schema1(&top.digest)),
        };
        self.dst.put_manifest(&out, &ManifestTarget::Top).await?;
        Ok(out)
    }

    /// The platform's image in index `top`, by [`ImageIndex::choose`], following nested
    /// indexes (at most [`MAX_INDEX_DEPTH`] levels, each digest once) as a pull does.
    async fn platform_image(
        &self,
        top: &RawManifest,
        idx: &ImageIndex,
    ) -> Result<RawManifest, TransportError> {
        let mut seen = HashSet::from([top.digest.clone()]);
        let mut idx = idx.clone();
        for _ in 0..MAX_INDEX_DEPTH {
            let entry = idx
                .choose(&self.opts.platform)
                .map_err(|choice| TransportError::NoMatchingPlatform {
                    reference: self.src.describe(),
                    choice,
                })?
                .clone();
            if !seen.insert(entry.digest.clone()) {
                return Err(TransportError::IndexCycle {
                    digest: entry.digest,
                });
            }
            let child = self.instance(&entry).await?;
            match &child.manifest {
                Manifest::Index(next) => idx = next.clone(),
                Manifest::Schema1(_) => return Err(schema1(&child.digest)),
                Manifest::Image(_) => return Ok(child),
            }
        }
        Err(TransportError::IndexTooDeep {
            reference: self.src.describe(),
            depth: MAX_INDEX_DEPTH,
        })
    }

    /// An instance of an index, checked against its entry.
    async fn instance(&self, entry: &Descriptor) -> Result<RawManifest, TransportError> {
        let child = self
            .src
            .get_manifest(&ManifestRef::Digest(entry.digest.clone()))
            .await?;
        if child.bytes.len() as u64 != entry.size {
            return Err(TransportError::SizeMismatch {
                what: format!("manifest {} of {}", entry.digest, self.src.describe()),
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
            return Err(TransportError::Unsupported {
                what: format!(
                    "index {} lists {} manifests (at most {MAX_INSTANCES})",
                    top.digest,
                    idx.manifests.len()
                ),
            });
        }
        let mut entries = Vec::with_capacity(idx.manifests.len());
        let mut changed = false;
        for entry in &idx.manifests {
            if entry.media_type.is_index() {
                return Err(TransportError::Unsupported {
                    what: format!("index {}: nested index {}", top.digest, entry.digest),
                });
            }
            let child = self.instance(entry).await?;
            if matches!(child.manifest, Manifest::Schema1(_)) {
                return Err(schema1(&child.digest));
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
        let want = self
            .format
            .filter(|f| ManifestFormat::of(&top.media_type) != Some(*f));
        if !changed && want.is_none() {
            return Ok(top.clone());
        }
        let format = want
            .or_else(|| ManifestFormat::of(&top.media_type))
            .unwrap_or(ManifestFormat::Oci);
        if format == ManifestFormat::V2s2
            && (idx.annotations.as_ref().is_some_and(|a| !a.is_empty()) || idx.subject.is_some())
        {
            return Err(TransportError::Unsupported {
                what: format!(
                    "index {}: annotations or subject cannot be kept in a Docker manifest list",
                    top.digest
                ),
            });
        }
        let bytes = convert::index_bytes(idx, format, &entries);
        Ok(raw_manifest(bytes, None, None)?)
    }

    /// Copy one image's blobs; returns the manifest to write (converted or as it was).
    async fn copy_image(&self, m: &RawManifest) -> Result<RawManifest, TransportError> {
        let Manifest::Image(im) = &m.manifest else {
            return Err(TransportError::Unsupported {
                what: format!("manifest {} is not an image manifest", m.digest),
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
            reference: &self.src.describe(),
            digest: &m.digest,
            layers: im.layers.len(),
            total_bytes: total,
        });
        // The config: read, verified, checked against the layer count.
        let config = self.read_config(&im.config).await?;
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
            return Err(TransportError::Unsupported {
                what: format!(
                    "manifest {}: Docker schema 2 has no zstd layer type (add --dest-compress-format gzip)",
                    m.digest
                ),
            });
        }
        // Config first (small), then the layers in parallel.
        let config_bytes = Arc::new(config);
        self.transfer_bytes(&im.config, config_bytes.clone())
            .await?;
        // Every transfer started is awaited, also after one failed (later ones then do not
        // start): a transfer dropped mid-way would leave its blocking writer running after
        // the copy returned, into a destination that is being cleaned up.
        let sem = Semaphore::new(self.opts.jobs.max(1));
        let failed = std::sync::atomic::AtomicBool::new(false);
        let futures = plan.iter().map(|(l, r, diff_id)| {
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
        let mut new_layers = Vec::with_capacity(plan.len());
        for out in futures_util::future::join_all(futures)
            .await
            .into_iter()
            .flatten()
        {
            new_layers.push(out?);
        }
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

    async fn read_config(&self, desc: &Descriptor) -> Result<Vec<u8>, TransportError> {
        if desc.size > MAX_CONFIG_SIZE {
            return Err(TransportError::SizeMismatch {
                what: format!("config {} exceeds the 4 MiB limit", desc.digest),
                expected: MAX_CONFIG_SIZE,
                actual: desc.size,
            });
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
                    TransportError::Io { what, source } => TransportError::Io {
                        what: format!("{what} (config from {origin})"),
                        source,
                    },
                    e => e,
                },
            )?;
            Ok(buf)
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

    fn sent(&self, desc: &Descriptor, kind: BlobKind) {
        self.progress.event(&ProgressEvent::BlobDone {
            digest: &desc.digest,
            size: desc.size,
            kind,
            skipped: false,
        });
        let mut r = self.report();
        r.blobs_copied += 1;
        r.bytes_copied += desc.size;
    }

    /// Move one blob unless the destination has it.
    async fn transfer(&self, desc: &Descriptor, kind: BlobKind) -> Result<(), TransportError> {
        if !self.claim(&desc.digest) || self.dst.has_blob(desc, &self.hints).await? {
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
                self.sent(desc, kind);
            } else {
                self.skipped(desc, kind);
            }
            return Ok(());
        }
        let stream = self.src.get_blob(desc).await?;
        self.progress.event(&ProgressEvent::BlobStart {
            digest: &desc.digest,
            size: desc.size,
            kind,
            endpoint: stream.origin(),
        });
        self.dst.put_blob(desc, stream, self.progress).await?;
        self.sent(desc, kind);
        Ok(())
    }

    /// Move a small blob already read (the config).
    async fn transfer_bytes(
        &self,
        desc: &Descriptor,
        bytes: Arc<Vec<u8>>,
    ) -> Result<(), TransportError> {
        let kind = BlobKind::Config;
        if !self.claim(&desc.digest) || self.dst.has_blob(desc, &self.hints).await? {
            self.skipped(desc, kind);
            return Ok(());
        }
        let stream = BlobStream::from_reader(
            Box::new(std::io::Cursor::new(bytes.as_ref().clone())),
            desc.size,
            self.src.describe(),
        );
        self.progress.event(&ProgressEvent::BlobStart {
            digest: &desc.digest,
            size: desc.size,
            kind,
            endpoint: &self.src.describe(),
        });
        self.dst.put_blob(desc, stream, self.progress).await?;
        self.sent(desc, kind);
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
            verified.finish().map_err(|source| TransportError::Io {
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
        if !self.claim(&new.digest) || self.dst.has_blob(&new, &self.hints).await? {
            self.skipped(&new, BlobKind::Layer);
            return Ok(new);
        }
        let stream = BlobStream::from_reader(Box::new(out.file), new.size, "recompressed layer");
        self.dst.put_blob(&new, stream, self.progress).await?;
        self.sent(&new, BlobKind::Layer);
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
                return Err(TransportError::Unsupported {
                    what: format!(
                        "{} keeps no simple-signing signatures ({} to carry)",
                        self.dst.describe(),
                        sigs.len()
                    ),
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
            return Err(TransportError::Unsupported {
                what: format!(
                    "signature or referrer {} is not an image manifest",
                    m.digest
                ),
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
        return Err(TransportError::Unsupported {
            what: format!(
                "{dest} holds only {} manifests (asked for --format {})",
                only.as_str(),
                want.as_str()
            ),
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
        return Err(TransportError::Unsupported {
            what: format!(
                "{dest} stores only {} layers (asked for {})",
                name(only),
                name(want)
            ),
        });
    }
    Ok((
        caps.format.or(opts.format).or(caps.default_format),
        caps.layer_compression.or(opts.compression),
    ))
}

fn schema1(d: &Digest) -> TransportError {
    TransportError::Unsupported {
        what: format!(
            "manifest {d} is Docker schema 1: `hoist pull` converts it into the store, copy from there"
        ),
    }
}

/// A [`Read`](std::io::Read) over a blob stream that checks size and digest as it goes
/// and fails at the end if they do not match (so a recompressed layer is never made from
/// bytes that are not the source's).
struct VerifyingRead {
    inner: crate::transports::BlobRead,
    hasher: hoist_types::Hasher,
    expected: Descriptor,
    n: u64,
    checked: bool,
}

impl VerifyingRead {
    fn new(stream: BlobStream, desc: &Descriptor) -> VerifyingRead {
        VerifyingRead {
            inner: stream.into_read(),
            hasher: hoist_types::Hasher::new(desc.digest.algorithm()),
            expected: desc.clone(),
            n: 0,
            checked: false,
        }
    }
}

impl VerifyingRead {
    /// Read to the end (a decompressor may stop before it) and check.
    fn finish(mut self) -> std::io::Result<()> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        if self.checked {
            Ok(())
        } else {
            Err(std::io::Error::other("blob not read to its end"))
        }
    }
}

impl std::io::Read for VerifyingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        if self.n > self.expected.size {
            return Err(std::io::Error::other(format!(
                "blob {} is longer than its {} bytes",
                self.expected.digest, self.expected.size
            )));
        }
        self.hasher.update(&buf[..n]);
        if n == 0 && !self.checked {
            self.checked = true;
            let h = std::mem::replace(
                &mut self.hasher,
                hoist_types::Hasher::new(self.expected.digest.algorithm()),
            );
            let actual = h.finish();
            if self.n != self.expected.size || actual != self.expected.digest {
                return Err(std::io::Error::other(format!(
                    "blob {}: got {} bytes with digest {actual}",
                    self.expected.digest, self.n
                )));
            }
        }
        Ok(n)
    }
}
