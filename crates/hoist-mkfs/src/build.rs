//! The rootfs builder: an image in the store in, a root filesystem out (a directory, an ext4
//! or an erofs image; flattened or one per layer), cached in the store: flattened results by
//! the top chain ID, per-layer ones by diff ID. This is matchlock's `Builder`.

use std::fs;
use std::path::{Path, PathBuf};

use hoist_store::{ImageRecord, Store};
use hoist_types::{Digest, Progress, ProgressEvent};
use hoist_unpack::cache::{
    ArtifactFormat, Cache, CacheEntry, EntryKey, EntryKind, EntryRecord, now_secs,
};
use hoist_unpack::{Rootfs, UnpackOptions, WhiteoutMode};
use serde::Serialize;

use crate::MkfsError;
use crate::erofs::ErofsSource;
use crate::ext4::{Ext4Options, Ext4Source};
use crate::mkfs::{FsType, make_erofs, make_ext4};
use crate::mounted::Outcome;
use crate::size::{Size, Usage};
use crate::verity::{VerityInfo, append_verity, fs_size, read_verity};

/// What to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A directory tree.
    Dir,
    /// An ext4 image.
    Ext4,
    /// An erofs image.
    Erofs,
}

impl Format {
    /// `dir`, `ext4` or `erofs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Dir => "dir",
            Format::Ext4 => "ext4",
            Format::Erofs => "erofs",
        }
    }

    fn fs_type(self) -> Option<FsType> {
        match self {
            Format::Dir => None,
            Format::Ext4 => Some(FsType::Ext4),
            Format::Erofs => Some(FsType::Erofs),
        }
    }
}

/// How to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The artifact format.
    pub format: Option<Format>,
    /// One artifact per layer (whiteouts in overlayfs form), stacked base → top.
    pub per_layer: bool,
    /// The size of ext4 images.
    pub size: Size,
    /// Rebuild even when cached.
    pub force: bool,
    /// Also write the result here (a file for a flattened image, a directory otherwise).
    pub output: Option<PathBuf>,
    /// Unpack options (rootless mode and limits). Images (ext4, erofs) always carry the
    /// layers' real owners and devices: the native writers take them from the tar headers
    /// (no root needed); the reference writers (kernel, mke2fs, mkfs.erofs) need root.
    pub unpack: UnpackOptions,
    /// How ext4 images are written.
    pub ext4_writer: Ext4Writer,
    /// How erofs images are written.
    pub erofs_writer: ErofsWriter,
    /// Append a dm-verity hash tree to each image (ext4 or erofs) and report its root
    /// hash, salt and offsets ([`VerityInfo`]).
    pub verity: bool,
    /// With [`Format::Erofs`]: an erofs tar index ([`crate::erofs::tar_index`]), whose
    /// files reference the layers' uncompressed tars (written into the store once per
    /// layer), mounted with them as extra devices ([`BuildResult::tar_index`]).
    pub tar_index: bool,
}

/// How erofs images are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErofsWriter {
    /// By hoist itself ([`crate::erofs`]), straight from the layer blobs: no root, no
    /// mkfs.erofs; deterministic bytes. The default.
    #[default]
    Native,
    /// By `mkfs.erofs` from a directory unpacked as root. Needs root; kept as the peer
    /// writer (benchmarks and tests compare against it).
    MkfsDir,
}

/// How ext4 images are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext4Writer {
    /// By hoist itself ([`crate::ext4`]), straight from the layer blobs: no root, no loop
    /// device, no mke2fs; deterministic bytes. The default.
    Native {
        /// Give the image a journal (for read-write mounts); off for read-only use.
        journal: bool,
        /// Extra free bytes beyond the automatic headroom (`--size auto` only).
        free: u64,
    },
    /// By the kernel, through a loop mount in a private mount namespace (falls back to
    /// [`Ext4Writer::MkfsDir`] where loop mounts are refused). Needs root; kept as a
    /// reference writer for tests and comparisons.
    Kernel,
    /// By `mke2fs -d` from an unpacked directory. Needs root; kept as the peer writer
    /// (benchmarks and tests compare against it).
    MkfsDir,
}

impl Default for Ext4Writer {
    fn default() -> Self {
        Ext4Writer::Native {
            journal: true,
            free: 0,
        }
    }
}

impl Ext4Writer {
    fn native(self) -> Option<(bool, u64)> {
        match self {
            Ext4Writer::Native { journal, free } => Some((journal, free)),
            _ => None,
        }
    }
}

/// One layer of the image, and its artifact when built per layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerResult {
    /// The layer blob digest.
    pub digest: Digest,
    /// Its diff ID.
    pub diff_id: Digest,
    /// Its chain ID.
    pub chain_id: Digest,
    /// Its media type.
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    /// The per-layer artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The per-layer artifact's type (`dir`, `ext4`, `erofs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<&'static str>,
    /// Whether the per-layer artifact came from the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
    /// The per-layer image's dm-verity tree (`--verity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verity: Option<VerityInfo>,
    /// How to mount the per-layer tar index (`tar_index`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tar_index: Option<crate::erofs::tar_index::MountInfo>,
}

/// The run config a runtime needs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunInfo {
    /// `User` (`name` or `uid[:gid]`).
    pub user: Option<String>,
    /// `WorkingDir`.
    pub workdir: Option<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`.
    pub env: Vec<String>,
}

/// What [`build_rootfs`] produced (printed as JSON by `hoist rootfs`).
#[derive(Debug, Clone, Serialize)]
pub struct BuildResult {
    /// The image ID.
    pub image: Digest,
    /// `dir`, `ext4` or `erofs`.
    pub format: &'static str,
    /// One artifact per layer?
    pub per_layer: bool,
    /// The root filesystem: the flattened artifact, or (per layer) the base layer's.
    pub rootfs_path: PathBuf,
    /// Artifacts to stack, base → top (one for a flattened build).
    pub lower_paths: Vec<PathBuf>,
    /// Their types.
    pub lower_fs_types: Vec<&'static str>,
    /// The image's layers, base first.
    pub layers: Vec<LayerResult>,
    /// The top chain ID (the flattened cache key).
    pub chain_id: Digest,
    /// Bytes of the artifacts (image files' sizes; files in directories).
    pub size: u64,
    /// True when everything came from the cache.
    pub cached: bool,
    /// The flattened image's dm-verity tree (`--verity`; per layer, see each layer's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verity: Option<VerityInfo>,
    /// A flattened tar index: its devices and how to mount it (per layer, see each
    /// layer's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tar_index: Option<crate::erofs::tar_index::MountInfo>,
    /// The run config.
    pub run_config: RunInfo,
}

fn status(progress: &dyn Progress, message: &str) {
    progress.event(&ProgressEvent::Status { message });
}

/// The chain ID of an image with no layers.
fn empty_chain() -> Digest {
    Digest::sha256_of(b"")
}

/// Builds (or finds in the cache) the root filesystem of `image`.
pub fn build_rootfs(
    store: &Store,
    image: &ImageRecord,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildResult, MkfsError> {
    let format = opts.format.unwrap_or(Format::Dir);
    if image.layers.len() != image.diff_ids.len() {
        return Err(hoist_unpack::UnpackError::LayerCount {
            image: image.id.clone(),
            layers: image.layers.len(),
            diff_ids: image.diff_ids.len(),
        }
        .into());
    }
    let root = hoist_unpack::is_root();
    let native = match format {
        Format::Ext4 => opts.ext4_writer.native().is_some(),
        Format::Erofs => opts.erofs_writer == ErofsWriter::Native,
        Format::Dir => false,
    };
    if opts.verity && format == Format::Dir {
        return Err(MkfsError::VerityNeedsImage);
    }
    if opts.tar_index {
        if format != Format::Erofs || opts.erofs_writer != ErofsWriter::Native {
            return Err(MkfsError::TarIndex {
                reason: "is an erofs image written by hoist: use it with the erofs format",
            });
        }
        if opts.verity {
            return Err(MkfsError::TarIndex {
                reason: "takes no dm-verity tree: it would cover the index, not the tars its files are in",
            });
        }
    }
    if format != Format::Dir && !native && !root {
        return Err(MkfsError::NeedsRoot {
            what: "building images with the kernel, mke2fs or mkfs.erofs",
            why: "the image must carry the layers' owners and device nodes, which only root can create",
        });
    }
    if opts.per_layer && !native && !root {
        return Err(MkfsError::NeedsRoot {
            what: "per-layer images built with the kernel and the mkfs tools",
            why: "overlayfs whiteouts are 0/0 device nodes and trusted.overlay.* xattrs",
        });
    }
    let chain_id = image.chain_ids.last().cloned().unwrap_or_else(empty_chain);
    let mut layers: Vec<LayerResult> = image
        .layers
        .iter()
        .zip(&image.diff_ids)
        .zip(&image.chain_ids)
        .map(|((d, diff), chain)| LayerResult {
            digest: d.digest.clone(),
            diff_id: diff.clone(),
            chain_id: chain.clone(),
            media_type: d.media_type.to_string(),
            size: d.size,
            path: None,
            fs_type: None,
            cached: None,
            verity: None,
            tar_index: None,
        })
        .collect();
    let cache = Cache::new(store)?;
    let ctx = Ctx {
        store,
        image,
        opts,
        format,
        progress,
        cache: &cache,
    };
    let (lower_paths, size, cached) = if opts.per_layer {
        ctx.per_layer(&mut layers)?
    } else {
        ctx.flat(&chain_id)?
    };
    // Built from a pull still running (`Store::following`): its end (every blob verified,
    // the image committed) comes before anything is reported, the config included.
    if let Some(d) = store.downloads() {
        d.wait()?;
    }
    let config = hoist_unpack::image_config(store, image)?;
    let rc = config.run_config();
    let run_config = RunInfo {
        user: rc.user.clone(),
        workdir: rc.working_dir.clone(),
        entrypoint: rc.entrypoint.clone().unwrap_or_default(),
        cmd: rc.cmd.clone().unwrap_or_default(),
        env: rc.env.clone().unwrap_or_default(),
    };
    let verity = match (opts.verity, opts.per_layer) {
        (true, false) => Some(verity_of(&lower_paths[0])?),
        _ => None,
    };
    // A tar index needs its tars: a cached index whose tar was removed since (say, by
    // `fsck --repair`) gets it again, byte for byte (named by its diff ID).
    let tar_index = if opts.tar_index {
        use crate::erofs::tar_index::{MountInfo, ensure_tars};
        let limits = &opts.unpack.limits;
        if opts.per_layer {
            for (i, (layer, path)) in layers.iter_mut().zip(&lower_paths).enumerate() {
                let devices = ensure_tars(store, image, ErofsSource::Layer(i), limits, progress)?;
                layer.tar_index = Some(MountInfo::of(path, devices));
            }
            None
        } else {
            let devices = ensure_tars(store, image, ErofsSource::Flattened, limits, progress)?;
            Some(MountInfo::of(&lower_paths[0], devices))
        }
    } else {
        None
    };
    let fs_type = format.as_str();
    Ok(BuildResult {
        image: image.id.clone(),
        format: fs_type,
        per_layer: opts.per_layer,
        rootfs_path: lower_paths.first().cloned().unwrap_or_default(),
        lower_fs_types: vec![fs_type; lower_paths.len()],
        lower_paths,
        layers,
        chain_id,
        size,
        cached,
        verity,
        tar_index,
        run_config,
    })
}

/// The verity tree of an image built with `--verity`.
fn verity_of(image: &Path) -> Result<VerityInfo, MkfsError> {
    read_verity(image).ok_or_else(|| {
        MkfsError::io(
            "read the verity tree of",
            image,
            std::io::Error::other("no verity superblock after the filesystem"),
        )
    })
}

/// The verity salt's key: the cache key of the image.
fn verity_key(kind: EntryKind, key: &Digest) -> String {
    match kind {
        EntryKind::Flat => format!("flat:{key}"),
        EntryKind::Layer => format!("layer:{key}"),
    }
}

struct Ctx<'a> {
    store: &'a Store,
    image: &'a ImageRecord,
    opts: &'a BuildOptions,
    format: Format,
    progress: &'a dyn Progress,
    cache: &'a Cache,
}

/// Root mode options for trees that feed mkfs (the images carry real owners).
fn root_mode(opts: &UnpackOptions) -> UnpackOptions {
    UnpackOptions {
        rootless: false,
        ..opts.clone()
    }
}

fn tree_bytes(dir: &Path) -> Result<u64, MkfsError> {
    Ok(Usage::of(dir)?.file_bytes)
}

fn copy_file_atomic(src: &Path, dest: &Path) -> Result<(), MkfsError> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.hoist-{}.tmp",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    fs::copy(src, &tmp).map_err(|e| MkfsError::io("copy to", &tmp, e))?;
    fs::rename(&tmp, dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        MkfsError::io("rename into", dest, e)
    })
}

impl Ctx<'_> {
    fn artifact_format(&self) -> ArtifactFormat {
        match self.format {
            Format::Dir if self.opts.unpack.rootless && !self.opts.per_layer => {
                ArtifactFormat::DirRootless
            }
            Format::Dir => ArtifactFormat::Dir,
            Format::Ext4 => ArtifactFormat::Ext4,
            Format::Erofs if self.opts.tar_index => ArtifactFormat::ErofsTarIndex,
            Format::Erofs => ArtifactFormat::Erofs,
        }
    }

    /// Runs mkfs on `tree` into `image`; returns the image size. `--size` applies to
    /// flattened ext4 images; per-layer ones are sized automatically.
    fn mkfs(&self, tree: &Path, image: &Path) -> Result<u64, MkfsError> {
        let size = if self.opts.per_layer {
            Size::Auto
        } else {
            self.opts.size
        };
        match self.format.fs_type() {
            Some(FsType::Ext4) => make_ext4(tree, image, size),
            Some(FsType::Erofs) => make_erofs(tree, image),
            None => unreachable!("directories need no mkfs"),
        }
    }

    /// A flattened build: `(lower_paths, size, cached)`.
    fn flat(&self, chain: &Digest) -> Result<(Vec<PathBuf>, u64, bool), MkfsError> {
        let n = self.image.layers.len();
        if self.format == Format::Dir
            && let Some(out) = &self.opts.output
        {
            status(
                self.progress,
                &format!("unpacking {} layers into {}", n, out.display()),
            );
            hoist_unpack::unpack_image(
                self.store,
                self.image,
                out,
                &self.opts.unpack,
                self.progress,
            )?;
            return Ok((vec![out.clone()], tree_bytes(out)?, false));
        }
        let key = EntryKey {
            kind: EntryKind::Flat,
            format: self.artifact_format(),
            key: chain.clone(),
        };
        let artifact = key.format.artifact_name(EntryKind::Flat);
        // An explicit ext4 size that differs from the cached image's is a rebuild.
        let resize = match (self.format, self.opts.size) {
            (Format::Ext4, Size::Bytes(b)) => self
                .cache
                .lookup(&key)?
                .is_some_and(|e| fs_size(&e.artifact()).unwrap_or(e.record.size) != b),
            _ => false,
        };
        // So is asking for (or against) a journal the cached image does not (or does) have.
        let rejournal = match (self.format, self.opts.ext4_writer.native()) {
            (Format::Ext4, Some((journal, _))) => self
                .cache
                .lookup(&key)?
                .is_some_and(|e| crate::ext4::has_journal(&e.artifact()) != Some(journal)),
            _ => false,
        };
        let resize = resize || rejournal || self.reverity(&key)?;
        let (entry, cached) = self
            .cache
            .get_or_build(&key, self.opts.force || resize, |tmp| {
                self.build_flat(tmp, artifact, chain)
            })?;
        self.publish_output(&entry, cached)
    }

    fn build_flat(
        &self,
        tmp: &Path,
        artifact: &str,
        chain: &Digest,
    ) -> Result<EntryRecord, MkfsError> {
        let n = self.image.layers.len();
        let size = if let Some(size) = self.native_image(tmp, artifact, None)? {
            size
        } else if self.format == Format::Dir {
            let dir = tmp.join(artifact);
            make_dir(&dir)?;
            status(self.progress, &format!("unpacking {n} layers"));
            hoist_unpack::unpack_into(
                self.store,
                self.image,
                &dir,
                &self.opts.unpack,
                self.progress,
            )?;
            tree_bytes(&dir)?
        } else if let Some(size) = self.try_mounted(tmp, artifact, &|mnt: &Path| {
            status(
                self.progress,
                &format!("writing {n} layers into the mounted ext4 image"),
            );
            hoist_unpack::unpack_into(
                self.store,
                self.image,
                mnt,
                &root_mode(&self.opts.unpack),
                self.progress,
            )?;
            Ok(())
        })? {
            size
        } else {
            // A cached root-mode directory of the same chain is a ready source.
            let dir_key = EntryKey {
                kind: EntryKind::Flat,
                format: ArtifactFormat::Dir,
                key: chain.clone(),
            };
            let cached_dir = self.cache.lookup(&dir_key)?;
            let tree = match &cached_dir {
                Some(e) => e.artifact(),
                None => {
                    let t = tmp.join("tree");
                    make_dir(&t)?;
                    status(self.progress, &format!("unpacking {n} layers"));
                    hoist_unpack::unpack_into(
                        self.store,
                        self.image,
                        &t,
                        &root_mode(&self.opts.unpack),
                        self.progress,
                    )?;
                    t
                }
            };
            status(
                self.progress,
                &format!("building the {} image", self.format.as_str()),
            );
            let size = self.mkfs(&tree, &tmp.join(artifact))?;
            if cached_dir.is_none() {
                hoist_unpack::cache::remove_tree(&tree)?;
            }
            size
        };
        let size = self.seal(
            &tmp.join(artifact),
            &verity_key(EntryKind::Flat, chain),
            size,
        )?;
        self.pull_settled()?;
        Ok(EntryRecord {
            version: 1,
            kind: EntryKind::Flat,
            format: self.artifact_format(),
            key: chain.clone(),
            diff_ids: self.image.diff_ids.clone(),
            chain_ids: self.image.chain_ids.clone(),
            artifact: artifact.to_string(),
            size,
            created: now_secs(),
        })
    }

    /// An entry built while a pull was still downloading the layers
    /// ([`Store::following`]) is published (renamed into the cache) only once that pull
    /// has committed: every blob verified by its digest, as each layer by its diff ID.
    fn pull_settled(&self) -> Result<(), MkfsError> {
        match self.store.downloads() {
            Some(d) => Ok(d.wait()?),
            None => Ok(()),
        }
    }

    /// With `--verity`, appends the hash tree to an image (cut first to its filesystem's
    /// size); returns the artifact's size.
    fn seal(&self, image: &Path, key: &str, size: u64) -> Result<u64, MkfsError> {
        if !self.opts.verity || self.format == Format::Dir {
            return Ok(size);
        }
        let fs = fs_size(image).ok_or_else(|| {
            MkfsError::io(
                "add a verity tree to",
                image,
                std::io::Error::other("neither ext4 nor erofs"),
            )
        })?;
        if fs != size {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(image)
                .map_err(|e| MkfsError::io("open", image, e))?;
            f.set_len(fs)
                .map_err(|e| MkfsError::io("truncate", image, e))?;
        }
        status(self.progress, "appending the dm-verity hash tree");
        let v = append_verity(image, key.as_bytes())?;
        Ok(v.hash_offset + crate::verity::tree_bytes(v.data_blocks))
    }

    /// Whether the cached entry under `key` has a verity tree where none is asked for, or
    /// the other way round (then it is rebuilt).
    fn reverity(&self, key: &EntryKey) -> Result<bool, MkfsError> {
        if self.format == Format::Dir {
            return Ok(false);
        }
        Ok(self
            .cache
            .lookup(key)?
            .is_some_and(|e| read_verity(&e.artifact()).is_some() != self.opts.verity))
    }

    /// Writes an image with hoist's own writers (the flattened tree, or layer `layer`);
    /// `None` when the format is a directory or a reference writer was asked for.
    /// Per-layer ext4 images are sized automatically.
    fn native_image(
        &self,
        tmp: &Path,
        artifact: &str,
        layer: Option<usize>,
    ) -> Result<Option<u64>, MkfsError> {
        let what = match layer {
            None => format!("{} layers", self.image.layers.len()),
            Some(i) => format!("layer {}/{}", i + 1, self.image.layers.len()),
        };
        if self.format == Format::Erofs && self.opts.tar_index {
            status(
                self.progress,
                &format!("indexing {what} in an erofs tar index (hoist's writer)"),
            );
            let source = layer.map_or(ErofsSource::Flattened, ErofsSource::Layer);
            let ix = crate::erofs::tar_index::build_tar_index(
                self.store,
                self.image,
                source,
                &tmp.join(artifact),
                &self.opts.unpack.limits,
                self.progress,
            )?;
            return Ok(Some(ix.size));
        }
        if self.format == Format::Erofs && self.opts.erofs_writer == ErofsWriter::Native {
            status(
                self.progress,
                &format!("writing {what} into an erofs image (hoist's writer)"),
            );
            let source = layer.map_or(ErofsSource::Flattened, ErofsSource::Layer);
            let size = crate::erofs::build_erofs(
                self.store,
                self.image,
                source,
                &tmp.join(artifact),
                &self.opts.unpack.limits,
                self.progress,
            )?;
            return Ok(Some(size));
        }
        let Some((journal, free)) = self.opts.ext4_writer.native() else {
            return Ok(None);
        };
        if self.format != Format::Ext4 {
            return Ok(None);
        }
        let source = layer.map_or(Ext4Source::Flattened, Ext4Source::Layer);
        let opts = Ext4Options {
            size: if self.opts.per_layer {
                Size::Auto
            } else {
                self.opts.size
            },
            journal,
            free,
        };
        status(
            self.progress,
            &format!("writing {what} into an ext4 image (hoist's writer)"),
        );
        let size = crate::ext4::build_ext4(
            self.store,
            self.image,
            source,
            &tmp.join(artifact),
            &opts,
            &self.opts.unpack.limits,
            self.progress,
        )?;
        Ok(Some(size))
    }

    /// Writes an ext4 image through a loop mount ([`crate::mounted`]); `None` when the
    /// format is not ext4, the kernel writer is off, or this host refuses loop mounts (then
    /// mke2fs -d is used).
    fn try_mounted(
        &self,
        tmp: &Path,
        artifact: &str,
        apply: &(dyn Fn(&Path) -> Result<(), MkfsError> + Sync),
    ) -> Result<Option<u64>, MkfsError> {
        if self.format != Format::Ext4 || self.opts.ext4_writer != Ext4Writer::Kernel {
            return Ok(None);
        }
        let work = tmp.join("work");
        make_dir(&work)?;
        let size = if self.opts.per_layer {
            Size::Auto
        } else {
            self.opts.size
        };
        let hint: u64 = self.image.layers.iter().map(|l| l.size).sum();
        let out = crate::mounted::build(&tmp.join(artifact), &work, size, hint, apply)?;
        hoist_unpack::cache::remove_tree(&work)?;
        match out {
            Outcome::Built(bytes) => Ok(Some(bytes)),
            Outcome::Unavailable(reason) => {
                status(
                    self.progress,
                    &format!("loop mounts unavailable ({reason}); using mke2fs -d"),
                );
                let _ = std::fs::remove_file(tmp.join(artifact));
                Ok(None)
            }
        }
    }

    /// Copies a cached flattened image to `--output` if asked; `(lower_paths, size, cached)`.
    fn publish_output(
        &self,
        entry: &CacheEntry,
        cached: bool,
    ) -> Result<(Vec<PathBuf>, u64, bool), MkfsError> {
        let path = match &self.opts.output {
            Some(out) => {
                copy_file_atomic(&entry.artifact(), out)?;
                out.clone()
            }
            None => entry.artifact(),
        };
        Ok((vec![path], entry.record.size, cached))
    }

    /// A per-layer build: `(lower_paths, size, cached)`.
    fn per_layer(
        &self,
        layers: &mut [LayerResult],
    ) -> Result<(Vec<PathBuf>, u64, bool), MkfsError> {
        let format = self.artifact_format();
        let artifact = format.artifact_name(EntryKind::Layer);
        let mut paths = Vec::new();
        let mut total = 0;
        let mut all_cached = true;
        let out_dir = match &self.opts.output {
            Some(o) => {
                fs::create_dir_all(o).map_err(|e| MkfsError::io("create directory", o, e))?;
                Some(o.clone())
            }
            None => None,
        };
        for (i, layer) in layers.iter_mut().enumerate() {
            let key = EntryKey {
                kind: EntryKind::Layer,
                format,
                key: layer.diff_id.clone(),
            };
            let rebuild = self.opts.force || self.reverity(&key)?;
            let (entry, cached) = self.cache.get_or_build(&key, rebuild, |tmp| {
                self.build_layer(i, tmp, artifact, &layer.diff_id)
            })?;
            if self.opts.verity {
                layer.verity = Some(verity_of(&entry.artifact())?);
            }
            all_cached &= cached;
            let path = match (&out_dir, self.format) {
                (Some(dir), Format::Dir) => {
                    // Directories are applied afresh (copying a tree safely is no cheaper).
                    let dest = dir.join(format!("{:02}-{}", i + 1, layer.diff_id.short()));
                    let dest_str = dest.clone();
                    hoist_unpack::cache::remove_tree(&dest)?;
                    make_dir(&dest)?;
                    self.apply_overlay(i, &dest)?;
                    dest_str
                }
                (Some(dir), _) => {
                    let dest = dir.join(format!(
                        "{:02}-{}.{}",
                        i + 1,
                        layer.diff_id.short(),
                        self.format.as_str()
                    ));
                    copy_file_atomic(&entry.artifact(), &dest)?;
                    dest
                }
                (None, _) => entry.artifact(),
            };
            total += entry.record.size;
            layer.path = Some(path.clone());
            layer.fs_type = Some(self.format.as_str());
            layer.cached = Some(cached);
            paths.push(path);
        }
        Ok((paths, total, all_cached))
    }

    /// Applies layer `i` alone onto the directory `dir`, in overlayfs form (root mode).
    fn apply_overlay(&self, i: usize, dir: &Path) -> Result<(), MkfsError> {
        let opts = UnpackOptions {
            whiteouts: WhiteoutMode::Overlay,
            ..root_mode(&self.opts.unpack)
        };
        let mut rootfs = Rootfs::open(dir, &opts)?;
        hoist_unpack::apply_layers(self.store, self.image, i..i + 1, &mut rootfs, self.progress)?;
        rootfs.finish()?;
        Ok(())
    }

    fn build_layer(
        &self,
        i: usize,
        tmp: &Path,
        artifact: &str,
        diff_id: &Digest,
    ) -> Result<EntryRecord, MkfsError> {
        let n = self.image.layers.len();
        let direct = match self.native_image(tmp, artifact, Some(i))? {
            Some(size) => Some(size),
            None => self.try_mounted(tmp, artifact, &|mnt: &Path| {
                status(
                    self.progress,
                    &format!("writing layer {}/{n} into the mounted ext4 image", i + 1),
                );
                self.apply_overlay(i, mnt)
            })?,
        };
        let vkey = verity_key(EntryKind::Layer, diff_id);
        if let Some(size) = direct {
            let size = self.seal(&tmp.join(artifact), &vkey, size)?;
            self.pull_settled()?;
            return Ok(self.layer_record(diff_id, artifact, size));
        }
        let tree = if self.format == Format::Dir {
            tmp.join(artifact)
        } else {
            tmp.join("tree")
        };
        make_dir(&tree)?;
        status(
            self.progress,
            &format!(
                "unpacking layer {}/{n} {} (overlayfs form)",
                i + 1,
                self.image.layers[i].digest.short()
            ),
        );
        self.apply_overlay(i, &tree)?;
        let size = if self.format == Format::Dir {
            tree_bytes(&tree)?
        } else {
            status(
                self.progress,
                &format!(
                    "building the {} image of layer {}/{n}",
                    self.format.as_str(),
                    i + 1
                ),
            );
            let size = self.mkfs(&tree, &tmp.join(artifact))?;
            hoist_unpack::cache::remove_tree(&tree)?;
            self.seal(&tmp.join(artifact), &vkey, size)?
        };
        Ok(self.layer_record(diff_id, artifact, size))
    }

    /// The cache record of a per-layer artifact.
    fn layer_record(&self, diff_id: &Digest, artifact: &str, size: u64) -> EntryRecord {
        EntryRecord {
            version: 1,
            kind: EntryKind::Layer,
            format: self.artifact_format(),
            key: diff_id.clone(),
            diff_ids: vec![diff_id.clone()],
            chain_ids: Vec::new(),
            artifact: artifact.to_string(),
            size,
            created: now_secs(),
        }
    }
}

fn make_dir(p: &Path) -> Result<(), MkfsError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::create_dir(p).map_err(|e| MkfsError::io("create directory", p, e))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
        .map_err(|e| MkfsError::io("chmod", p, e))
}
