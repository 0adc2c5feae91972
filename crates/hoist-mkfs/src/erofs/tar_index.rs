//! The erofs tar index: a metadata-only erofs image whose regular files are chunk
//! references into the layers' uncompressed tars, which the store keeps, mounted with the
//! tars as extra devices (the layout of erofs-utils' `mkfs.erofs --tar=i` and of
//! containerd's EROFS snapshotter in tar-index mode).
//!
//! The tars are store content: blob `<diff ID>` (`blobs/sha256/<hex of the diff ID>`), the
//! bytes whose digest the config names as the layer's diff ID. A layer stored uncompressed
//! is its own tar (its digest is its diff ID); any other is decompressed into the store
//! once ([`ensure_tars`]), in the same pass that reads it into the tree: the decompressed
//! bytes go to a [`hoist_store::BlobWriter`] (published only when they hash to the diff
//! ID) as the tree's reader takes them. A second index of any image with that layer reads
//! the stored tar and decompresses nothing. GC keeps a tar while an image with that diff
//! ID (or a lease naming it) exists; fsck re-hashes it like any blob.
//!
//! The image ([`build_tar_index`]): 512-byte blocks (tar data is 512-aligned, so every
//! file's data is addressable by block), the device table listing the tars in layer order
//! (device 1 is the first layer in the image; each slot's tag is the diff ID's hex, the
//! path the kernel would try when a mount names no device), and every regular file with
//! data as chunk-based inode: one chunk as large as the file (a power of two, at most
//! 1 TiB) pointing at its data in the tar of the layer its last version comes from.
//! Directories, symlinks, devices, owners, modes, times and xattrs are in the image, as
//! in hoist's full erofs images. The same image and options give the same bytes.
//!
//! Mounting: `mount(2)` (or the new mount API) of the image with one `device=PATH` per
//! tar, in order; Linux 6.12 and later take files as `device=` (and as the image), older
//! kernels (5.16 to 6.11) block devices only (attach the image and each tar to a loop
//! device first). Files or block devices, not a mix: an image on a loop device takes
//! only block devices as `device=`. The image file must be on a filesystem the kernel
//! reads folios from (6.18 here refuses an image on tmpfs with ENOTBLK; tars on tmpfs are
//! fine), which [`kernel_support`] finds out as root. util-linux 2.38's `mount -t erofs -o device=…` loop-attaches the image
//! and fails; [`mount_detached`] and [`mount_at`] call the kernel directly.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use hoist_store::{BlobWriter, ImageRecord, Store};
use hoist_types::{Descriptor, MediaType, Progress, ProgressEvent};
use hoist_unpack::tree::{FsTree, InodeId, InodeKind};
use hoist_unpack::{LayerStream, Limits, TarReader, UnpackError};

use super::{Chunks, ErofsSource, write_image};
use crate::MkfsError;

/// A tar index built: its size and the devices to mount it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarIndex {
    /// Bytes of the index image.
    pub size: u64,
    /// The layer tars in the store, in device order (device 1 first): one `device=` each.
    pub devices: Vec<PathBuf>,
}

/// The store paths of the tars of layers `range` of `image`, in device order.
pub fn tar_paths(store: &Store, image: &ImageRecord, source: ErofsSource) -> Vec<PathBuf> {
    layer_range(image, source)
        .map(|i| store.blob_path(&image.diff_ids[i]))
        .collect()
}

fn layer_range(image: &ImageRecord, source: ErofsSource) -> std::ops::Range<usize> {
    match source {
        ErofsSource::Flattened => 0..image.layers.len(),
        ErofsSource::Layer(i) => i..i + 1,
    }
}

/// Makes sure the store holds the uncompressed tar of every layer of `image` (all of
/// them, or layer `i` for [`ErofsSource::Layer`]), decompressing the missing ones (diff
/// IDs checked; nothing is published for a layer whose bytes do not hash to it). Returns
/// their paths in layer order. [`build_tar_index`] does this in its own pass; this is for
/// a caller that wants the tars alone.
pub fn ensure_tars(
    store: &Store,
    image: &ImageRecord,
    source: ErofsSource,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>, MkfsError> {
    check_counts(image)?;
    for i in layer_range(image, source) {
        if store.has_blob(&image.diff_ids[i])?.is_some() {
            continue;
        }
        let mut r = TeeToStore::open(store, image, i, limits, progress)?;
        std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| {
            in_layer(
                UnpackError::Stream { source: e },
                i + 1,
                &image.layers[i].digest,
            )
        })?;
    }
    Ok(tar_paths(store, image, source))
}

fn check_counts(image: &ImageRecord) -> Result<(), MkfsError> {
    if image.layers.len() != image.diff_ids.len() {
        return Err(UnpackError::LayerCount {
            image: image.id.clone(),
            layers: image.layers.len(),
            diff_ids: image.diff_ids.len(),
        }
        .into());
    }
    Ok(())
}

/// Writes the tar index of `image` at `out` (a temp file beside it, renamed over it
/// last; nothing is left on an error): the tree of
/// `source` (flattened, or one layer in overlay form) whose files reference the layer
/// tars, written into the store first where missing (see the module docs). `key` of the
/// UUID: the top chain ID (flattened) or the diff ID (one layer), as for full images.
pub fn build_tar_index(
    store: &Store,
    image: &ImageRecord,
    source: ErofsSource,
    out: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<TarIndex, MkfsError> {
    check_counts(image)?;
    let range = layer_range(image, source);
    if range.end > image.layers.len() {
        return Err(UnpackError::LayerCount {
            image: image.id.clone(),
            layers: image.layers.len(),
            diff_ids: image.diff_ids.len(),
        }
        .into());
    }
    // The image as its tars: each layer an uncompressed tar whose digest is its diff ID.
    let mut tars = image.clone();
    for (l, d) in tars.layers.iter_mut().zip(&image.diff_ids) {
        *l = Descriptor::new(MediaType::OciLayer, d.clone(), 0);
    }
    // The tars the store has, opened once: the tree reads them (checking their digest)
    // and the offsets are read from the same files.
    let mut present: HashMap<usize, File> = HashMap::new();
    for i in range.clone() {
        if let Some(size) = store.has_blob(&image.diff_ids[i])? {
            present.insert(i, store.open_blob(&image.diff_ids[i])?);
            tars.layers[i].size = size;
        }
    }
    let open = |i: usize| -> Result<Box<dyn Read + Send + '_>, UnpackError> {
        match present.get(&i) {
            Some(f) => Ok(Box::new(ReadAt { file: f, pos: 0 })),
            None => {
                let r = TeeToStore::open(store, image, i, limits, progress)
                    .map_err(|e| in_layer(e, i + 1, &image.layers[i].digest))?;
                Ok(Box::new(r))
            }
        }
    };
    let overlay = matches!(source, ErofsSource::Layer(_));
    let (tree, data) =
        FsTree::without_data(&tars, range.clone(), overlay, &open, limits, progress)?;

    // Where each file's data starts in its tar.
    let mut wanted: Vec<Vec<(u64, InodeId)>> = vec![Vec::new(); range.len()];
    for (layer, entry, id) in data {
        wanted[layer - range.start].push((entry, id));
    }
    let mut files = Vec::with_capacity(range.len());
    for i in range.clone() {
        files.push(match present.remove(&i) {
            Some(f) => f,
            None => store.open_blob(&image.diff_ids[i])?,
        });
    }
    let mut sizes = Vec::with_capacity(files.len());
    for (k, f) in files.iter().enumerate() {
        let m = f.metadata().map_err(|e| {
            MkfsError::io("stat", store.blob_path(&image.diff_ids[range.start + k]), e)
        })?;
        sizes.push(m.len());
    }
    progress.event(&ProgressEvent::Status {
        message: "indexing the layer tars",
    });
    let offsets = find_offsets(&tree, &files, &wanted, limits, image, range.start)?;
    let mut at: Vec<Option<(u16, u64)>> = vec![None; tree.inodes.len()];
    for (k, list) in offsets.into_iter().enumerate() {
        for (id, off) in list {
            at[id as usize] = Some((k as u16 + 1, off));
        }
    }
    let devices: Vec<(Vec<u8>, u64)> = range
        .clone()
        .zip(&sizes)
        .map(|(i, size)| (image.diff_ids[i].hex().as_bytes().to_vec(), *size))
        .collect();
    let key = match source {
        ErofsSource::Flattened => format!(
            "flat:{}",
            image
                .chain_ids
                .last()
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
        ErofsSource::Layer(i) => format!("layer:{}", image.diff_ids[i]),
    };
    progress.event(&ProgressEvent::Status {
        message: "writing the erofs tar index",
    });
    let chunks = Chunks {
        at: &at,
        devices: &devices,
    };
    // Written beside `out` and renamed over it last: `out` is never half-written.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = out
        .file_name()
        .map_or_else(|| "tar-index".into(), |n| n.to_string_lossy().into_owned());
    let tmp = out.with_file_name(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let size = write_image(&tree, &tmp, key.as_bytes(), Some(&chunks), |_| Ok(()))
        .and_then(|size| {
            std::fs::rename(&tmp, out).map_err(|e| MkfsError::io("rename into", out, e))?;
            Ok(size)
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    Ok(TarIndex {
        size,
        devices: tar_paths(store, image, source),
    })
}

/// Each file with data of one layer and where its data starts in the layer's tar.
type Offsets = Vec<(InodeId, u64)>;

/// For each layer (`files[k]`), the data offsets of the entries `wanted[k]` (entry index,
/// inode), read with the one tar parser; each entry must be a file of the size the tree
/// has for it, its data 512-aligned. The layers are read on up to 4 threads.
fn find_offsets(
    tree: &FsTree,
    files: &[File],
    wanted: &[Vec<(u64, InodeId)>],
    limits: &Limits,
    image: &ImageRecord,
    first: usize,
) -> Result<Vec<Vec<(InodeId, u64)>>, MkfsError> {
    let scan = |k: usize| -> Result<Vec<(InodeId, u64)>, UnpackError> {
        let list = &wanted[k];
        let mut out = Vec::with_capacity(list.len());
        if list.is_empty() {
            return Ok(out);
        }
        let reader = BufReader::with_capacity(
            1 << 20,
            ReadAt {
                file: &files[k],
                pos: 0,
            },
        );
        let mut tar = TarReader::new(reader, limits);
        let mut idx = 0u64;
        let mut next = 0usize;
        while let Some(e) = tar.next_entry()? {
            let (want, id) = list[next];
            if idx == want {
                let fits = matches!(tree.inodes[id as usize].kind, InodeKind::File { size } if size == e.size);
                if !fits {
                    return Err(bad(
                        &e.path,
                        "the layer tar changed while it was indexed (file size differs)",
                    ));
                }
                if tar.is_sparse() {
                    return Err(bad(
                        &e.path,
                        "a sparse file: its tar holds its segments, not its bytes in order, \
                         so a tar index cannot point at them (a full erofs build can)",
                    ));
                }
                let off = tar.offset();
                if !off.is_multiple_of(512) {
                    return Err(bad(&e.path, "file data not 512-aligned in its tar"));
                }
                out.push((id, off));
                next += 1;
                if next == list.len() {
                    return Ok(out);
                }
            }
            idx += 1;
        }
        Err(bad(
            b"",
            "the layer tar changed while it was indexed (file data not found again)",
        ))
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get().min(4))
        .clamp(1, files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Vec<(usize, Result<Offsets, UnpackError>)>> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if k >= files.len() {
                            return mine;
                        }
                        mine.push((k, scan(k)));
                    }
                })
            })
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("the tar scan does not panic"))
            .collect()
    });
    let mut out: Vec<Option<Vec<(InodeId, u64)>>> = vec![None; files.len()];
    let mut errors = Vec::new();
    for (k, r) in results.into_iter().flatten() {
        match r {
            Ok(v) => out[k] = Some(v),
            Err(e) => errors.push((k, e)),
        }
    }
    if let Some((k, e)) = errors.into_iter().min_by_key(|(k, _)| *k) {
        let i = first + k;
        return Err(in_layer(e, i + 1, &image.layers[i].digest).into());
    }
    Ok(out.into_iter().map(Option::unwrap_or_default).collect())
}

fn bad(path: &[u8], reason: &'static str) -> UnpackError {
    UnpackError::BadEntry {
        path: String::from_utf8_lossy(path).into_owned(),
        reason,
    }
}

fn in_layer(e: UnpackError, index: usize, digest: &hoist_types::Digest) -> UnpackError {
    UnpackError::Layer {
        index,
        digest: digest.clone(),
        source: Box::new(e),
    }
}

/// Positioned reads of a file shared by threads.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Layer `i` decompressed from its blob as it is read, each byte also written to the
/// store as blob `<diff ID>`: at the end of the stream the blob is committed (digest and
/// size checked, fsync, rename) before the end is reported; dropped earlier, nothing is
/// published.
struct TeeToStore<'a> {
    stream: LayerStream<'a, File>,
    writer: Option<BlobWriter>,
}

impl<'a> TeeToStore<'a> {
    fn open(
        store: &Store,
        image: &ImageRecord,
        i: usize,
        limits: &Limits,
        progress: &'a dyn Progress,
    ) -> Result<TeeToStore<'a>, UnpackError> {
        let desc = &image.layers[i];
        let diff_id = &image.diff_ids[i];
        let message = format!(
            "writing the tar of layer {}/{} {} into the store",
            i + 1,
            image.layers.len(),
            desc.digest.short()
        );
        progress.event(&ProgressEvent::Status { message: &message });
        // The stored blob only (not one still downloading): a tar is published only for a
        // layer the store holds, so a failed pull leaves no tar behind.
        let blob = store.open_blob(&desc.digest)?;
        let stream = LayerStream::open(
            blob,
            &desc.media_type,
            diff_id.algorithm(),
            limits,
            Some(&desc.digest),
            progress,
        )?
        .without_hashing();
        let writer = store.blob_writer(diff_id, None)?;
        Ok(TeeToStore {
            stream,
            writer: Some(writer),
        })
    }
}

impl Read for TeeToStore<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Write as _;
        let n = self.stream.read(buf)?;
        if n == 0 {
            if let Some(w) = self.writer.take() {
                w.commit().map_err(std::io::Error::other)?;
            }
            return Ok(0);
        }
        match self.writer.as_mut() {
            Some(w) => w.write_all(&buf[..n])?,
            None => return Err(std::io::Error::other("read after the end of the layer")),
        }
        Ok(n)
    }
}

/// Whether the running kernel can mount a tar index with files as devices: `Ok` with
/// what was checked, or the reason it cannot. `/proc/filesystems` and the kernel release
/// (6.12 or later) are checked; as root, with `index` (an image and its devices), the
/// kernel is asked too: the image is configured through the new mount API (superblock
/// read, every device opened), not attached anywhere.
pub fn kernel_support(index: Option<(&Path, &[PathBuf])>) -> Result<&'static str, String> {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("erofs"))
    {
        return Err("the running kernel has no erofs (it is not in /proc/filesystems)".into());
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    if version < (6, 12) {
        return Err(format!(
            "the running kernel ({release}) is older than 6.12, the first to take files as erofs devices: attach the index and each tar to a loop device and mount with device=/dev/loopN"
        ));
    }
    match index {
        Some((image, devices)) if hoist_unpack::is_root() => configure(image, devices)
            .map(|_| "the kernel read the index and opened its devices")
            .map_err(|e| hoist_types::error_chain(&e)),
        _ => Ok("erofs is in /proc/filesystems and the kernel is 6.12 or later"),
    }
}

/// An erofs filesystem context with `image` as its source and `devices` as its extra
/// devices, created (the superblock read and every device opened by the kernel).
fn configure(image: &Path, devices: &[PathBuf]) -> Result<OwnedFd, MkfsError> {
    use rustix::mount::{
        FsOpenFlags, fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsopen,
    };
    let step = |what: &'static str| {
        move |e: rustix::io::Errno| MkfsError::TarIndexMount {
            image: image.to_path_buf(),
            step: what,
            source: e.into(),
        }
    };
    let fs = fsopen("erofs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(step("open an erofs context"))?;
    fsconfig_set_string(&fs, "source", image).map_err(step("set the image as source"))?;
    for d in devices {
        fsconfig_set_string(&fs, "device", d).map_err(step("add a device"))?;
    }
    fsconfig_set_flag(&fs, "ro").map_err(step("ask for read-only"))?;
    fsconfig_create(&fs).map_err(|e| {
        // Linux backs an erofs mount with a file only where the file's filesystem reads
        // folios (not tmpfs, here); a block device as the image needs block devices as
        // its devices too.
        let what = if e == rustix::io::Errno::NOTBLK {
            "read the image and open its devices (a file on this filesystem, tmpfs say, cannot back an erofs mount: keep the image on a disk filesystem, or attach the image and every tar to a loop device and name those)"
        } else {
            "read the image and open its devices"
        };
        step(what)(e)
    })?;
    Ok(fs)
}

/// Mounts the tar index `image` with `devices` (in order) read-only without attaching it
/// anywhere: the returned descriptor is the root of the mount, which goes with it
/// (`/proc/self/fd/N` reaches its files). Needs `CAP_SYS_ADMIN`.
pub fn mount_detached(image: &Path, devices: &[PathBuf]) -> Result<OwnedFd, MkfsError> {
    use rustix::mount::{FsMountFlags, MountAttrFlags, fsmount};
    let fs = configure(image, devices)?;
    fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| MkfsError::TarIndexMount {
        image: image.to_path_buf(),
        step: "make the mount",
        source: e.into(),
    })
}

/// Mounts the tar index `image` with `devices` (in order) read-only at `target`. Needs
/// `CAP_SYS_ADMIN`.
pub fn mount_at(image: &Path, devices: &[PathBuf], target: &Path) -> Result<(), MkfsError> {
    use rustix::mount::{MoveMountFlags, move_mount};
    let m = mount_detached(image, devices)?;
    move_mount(
        &m,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| MkfsError::TarIndexMount {
        image: image.to_path_buf(),
        step: "attach the mount",
        source: e.into(),
    })
}

/// How to mount a tar index, as `hoist rootfs --tar-index` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MountInfo {
    /// The extra devices (the layer tars in the store), in order: one `device=` each.
    pub devices: Vec<PathBuf>,
    /// The `mount(2)` data: `ro,device=PATH,…` in device order (util-linux 2.38's `mount`
    /// cannot pass it; call `mount(2)` or the new mount API, or [`mount_at`]).
    pub options: String,
    /// Whether the running kernel can mount it ([`kernel_support`]).
    pub mountable: bool,
    /// What was checked, or why it cannot.
    pub kernel: String,
}

impl MountInfo {
    /// The mount information of the index `image` with `devices`, the kernel asked as
    /// [`kernel_support`] does.
    pub fn of(image: &Path, devices: Vec<PathBuf>) -> MountInfo {
        let mut options = String::from("ro");
        for d in &devices {
            options.push_str(",device=");
            options.push_str(&d.to_string_lossy());
        }
        let (mountable, kernel) = match kernel_support(Some((image, &devices))) {
            Ok(how) => (true, how.to_string()),
            Err(why) => (false, why),
        };
        MountInfo {
            devices,
            options,
            mountable,
            kernel,
        }
    }
}
