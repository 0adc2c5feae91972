//! Unpacking a whole image from the store, published atomically.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hoist_store::{ImageRecord, Store};
use hoist_types::{ImageConfig, MAX_CONFIG_SIZE, Progress};

use crate::apply::{LayerInput, LayerStats, Rootfs};
use crate::fsops::remove_host_tree;
use crate::{UnpackError, UnpackOptions};

/// What unpacking an image did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Per layer, base first.
    pub layers: Vec<LayerStats>,
}

impl UnpackReport {
    /// Decompressed bytes of all layers.
    pub fn tar_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.tar_bytes).sum()
    }
}

/// Checks that the record's layers and diff IDs line up.
pub(crate) fn check_layers(image: &ImageRecord) -> Result<(), UnpackError> {
    if image.layers.len() != image.diff_ids.len() {
        return Err(UnpackError::LayerCount {
            image: image.id.clone(),
            layers: image.layers.len(),
            diff_ids: image.diff_ids.len(),
        });
    }
    Ok(())
}

/// Reads and parses the image's config.
pub fn image_config(store: &Store, image: &ImageRecord) -> Result<ImageConfig, UnpackError> {
    let raw = store.read_blob(&image.id, MAX_CONFIG_SIZE)?;
    ImageConfig::parse(&raw).map_err(|source| UnpackError::Config {
        digest: image.id.clone(),
        source,
    })
}

/// Applies layers `range` of `image` (indices into its layers, base first) to the existing
/// directory `dir`, in order, each checked against its diff ID. Does not finish the
/// [`Rootfs`]; the caller does.
pub fn apply_layers(
    store: &Store,
    image: &ImageRecord,
    range: std::ops::Range<usize>,
    rootfs: &mut Rootfs,
    progress: &dyn Progress,
) -> Result<Vec<LayerStats>, UnpackError> {
    check_layers(image)?;
    let mut out = Vec::with_capacity(range.len());
    for i in range {
        let desc = &image.layers[i];
        let input = LayerInput {
            digest: &desc.digest,
            media_type: &desc.media_type,
            diff_id: &image.diff_ids[i],
            size: desc.size,
        };
        // A store handle that follows a pull ([`Store::following`]) reads a layer still
        // downloading as it arrives; any other reads the stored blob.
        let blob = store
            .blob_reader(&desc.digest, desc.size)
            .map_err(|e| UnpackError::from(e).in_layer(i + 1, &desc.digest))?;
        let stats = rootfs
            .apply_layer(blob, input, progress)
            .map_err(|e| e.in_layer(i + 1, &desc.digest))?;
        out.push(stats);
    }
    Ok(out)
}

/// Unpacks every layer of `image` into the existing directory `dir` (no temp directory, no
/// rename: for callers that manage their own).
pub fn unpack_into(
    store: &Store,
    image: &ImageRecord,
    dir: &Path,
    opts: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<UnpackReport, UnpackError> {
    let mut rootfs = Rootfs::open(dir, opts)?;
    let layers = apply_layers(store, image, 0..image.layers.len(), &mut rootfs, progress)?;
    rootfs.finish()?;
    Ok(UnpackReport { layers })
}

/// A new, empty, uniquely named temp directory beside `target` (same filesystem, so it can
/// be renamed onto it), mode 0755 (a root filesystem's usual mode; a layer's own `./` entry
/// changes it).
pub(crate) fn temp_beside(target: &Path) -> Result<PathBuf, UnpackError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "target".into());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".{name}.hoist-{}-{n}.tmp", std::process::id()));
        match fs::create_dir(&tmp) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                    .map_err(|e| UnpackError::io("chmod", &tmp, e))?;
                return Ok(tmp);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(UnpackError::io("create directory", tmp, e)),
        }
    }
}

/// Refuses a target that exists and is not an empty directory.
pub(crate) fn check_target(target: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(UnpackError::io("stat", target, e)),
        Ok(m) if m.is_dir() => {
            let mut it = fs::read_dir(target).map_err(|e| UnpackError::io("read", target, e))?;
            if it.next().is_none() {
                Ok(())
            } else {
                Err(UnpackError::TargetNotEmpty {
                    path: target.to_path_buf(),
                })
            }
        }
        Ok(_) => Err(UnpackError::TargetNotEmpty {
            path: target.to_path_buf(),
        }),
    }
}

/// Builds into a temp directory beside `target` with `build`, then renames it onto `target`
/// (absent or an empty directory). On failure the temp directory is removed and nothing
/// appears at `target`.
pub(crate) fn publish_dir<T>(
    target: &Path,
    build: impl FnOnce(&Path) -> Result<T, UnpackError>,
) -> Result<T, UnpackError> {
    check_target(target)?;
    let tmp = temp_beside(target)?;
    let result = build(&tmp).and_then(|v| {
        fs::rename(&tmp, target)
            .map_err(|e| UnpackError::io("rename into", target, e))
            .map(|()| v)
    });
    if result.is_err() {
        let _ = remove_host_tree(&tmp);
    }
    result
}

/// Unpacks `image` into `target` (created; it must be absent or an empty directory): every
/// layer is applied in order into a temp directory beside it, each checked against its diff
/// ID, and the result is renamed into place only when all of them passed. On a store handle
/// that follows a pull ([`Store::following`]), the layers are read as they download and the
/// result is renamed into place only once that pull has committed (every blob verified by
/// its digest); a failed pull leaves no `target`.
pub fn unpack_image(
    store: &Store,
    image: &ImageRecord,
    target: &Path,
    opts: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<UnpackReport, UnpackError> {
    check_layers(image)?;
    publish_dir(target, |tmp| {
        let report = unpack_into(store, image, tmp, opts, progress)?;
        if let Some(pull) = store.downloads() {
            pull.wait()?;
        }
        Ok(report)
    })
}
