//! The final tree of an image as a model, for filesystem writers (ext4, erofs) that build
//! an image straight from the layer blobs, with no extracted directory.
//!
//! [`FsTree::flattened`] applies every layer with the rules of `hoist unpack` (the same
//! model as [`crate::export`]: symlinks in parent paths resolve inside the root, whiteouts
//! and opaque directories hide lower layers, hardlinks share an inode, each layer's diff
//! ID checked). [`FsTree::layer`] takes one layer alone in overlayfs form, as the per-layer
//! unpack does: `.wh.NAME` becomes a 0/0 character device, `.wh..wh..opq` (or a whiteout
//! of something this layer writes below) the xattr `trusted.overlay.opaque=y` on the
//! directory.
//!
//! The model holds metadata only (owners, modes, devices and xattrs come from the tar
//! headers, never from the host, so it is the same for root and for an unprivileged
//! user). File contents are streamed in a second pass, [`FsTree::stream_data`], which
//! reads the layers again (from the blobs pass 1 opened and verified, not hashed again) and
//! hands each regular file's bytes over in [`FsTree::data_order`], so a writer can place
//! every file before a byte arrives.

use hoist_store::{ImageRecord, Store};
use hoist_types::{Progress, ProgressEvent};

use crate::flatten::{LayerBlob, LayerSpool, Model, Node, Pos, build_model, read_layer_data};
use crate::tar::{EntryKind, Timestamp};
use crate::{Limits, OVERLAY_OPAQUE, UnpackError};

/// An inode's index in [`FsTree::inodes`]; the root directory is [`FsTree::ROOT`].
pub type InodeId = u32;

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InodeKind {
    /// A regular file of this many bytes; they come from [`FsTree::stream_data`].
    File {
        /// Its size in bytes.
        size: u64,
    },
    /// A directory: its entries (not `.` and `..`), sorted by name.
    Dir {
        /// `(name, inode)`, sorted by name bytes.
        entries: Vec<(Vec<u8>, InodeId)>,
    },
    /// A symbolic link to these (raw, unresolved) bytes.
    Symlink(Vec<u8>),
    /// A character device.
    Char {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    Block {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One inode of the final tree: what every name linked to it shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Type and payload.
    pub kind: InodeKind,
    /// Permission bits with setuid, setgid and sticky (`& 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (directories created implicitly get the time of the entry that
    /// created them; the root, when no layer lists it, the epoch).
    pub mtime: Timestamp,
    /// Extended attributes as the layer gave them (plus `trusted.overlay.opaque` in the
    /// overlay form), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Links: names of a non-directory; 2 + subdirectories for a directory.
    pub nlink: u32,
}

/// The final tree of an image (or of one layer in overlay form).
pub struct FsTree {
    /// Every inode, parents before children; `inodes[0]` is the root directory.
    pub inodes: Vec<Inode>,
    /// The layers read, base first (indices into the image's layers).
    layers: std::ops::Range<usize>,
    /// Regular files with data, in the order their bytes are streamed: `(pos, inode)`.
    data: Vec<(Pos, InodeId)>,
    /// The blobs of `layers`, kept open from pass 1 for pass 2.
    blobs: Vec<LayerBlob>,
    /// The file data of `layers`, when pass 1 spooled it (then pass 2 reads it from
    /// there, not from the blobs).
    spools: Vec<Option<LayerSpool>>,
}

impl std::fmt::Debug for FsTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsTree")
            .field("inodes", &self.inodes.len())
            .field("layers", &self.layers)
            .field("files_with_data", &self.data.len())
            .finish()
    }
}

impl FsTree {
    /// The root directory's id.
    pub const ROOT: InodeId = 0;

    /// Pass 1 for a flattened root filesystem: every layer of `image` applied (whiteouts
    /// applied), as `hoist unpack` would leave it.
    pub fn flattened(
        store: &Store,
        image: &ImageRecord,
        limits: &Limits,
        progress: &dyn Progress,
    ) -> Result<FsTree, UnpackError> {
        let range = 0..image.layers.len();
        FsTree::build(store, image, range, false, None, limits, progress)
    }

    /// As [`FsTree::flattened`], and pass 1 also writes every regular file's bytes to
    /// unnamed files in `spool` (a directory on the filesystem of the output, say: as many
    /// bytes as the layers' files hold, until the tree is dropped), so that pass 2 copies
    /// them from there instead of decompressing the layers a second time.
    pub fn flattened_spooled(
        store: &Store,
        image: &ImageRecord,
        spool: &std::path::Path,
        limits: &Limits,
        progress: &dyn Progress,
    ) -> Result<FsTree, UnpackError> {
        let range = 0..image.layers.len();
        FsTree::build(store, image, range, false, Some(spool), limits, progress)
    }

    /// As [`FsTree::layer`], with the file data spooled as [`FsTree::flattened_spooled`].
    pub fn layer_spooled(
        store: &Store,
        image: &ImageRecord,
        layer: usize,
        spool: &std::path::Path,
        limits: &Limits,
        progress: &dyn Progress,
    ) -> Result<FsTree, UnpackError> {
        let range = layer..layer + 1;
        FsTree::build(store, image, range, true, Some(spool), limits, progress)
    }

    fn build(
        store: &Store,
        image: &ImageRecord,
        range: std::ops::Range<usize>,
        overlay: bool,
        spool: Option<&std::path::Path>,
        limits: &Limits,
        progress: &dyn Progress,
    ) -> Result<FsTree, UnpackError> {
        let (model, blobs, spools) = build_model(
            store,
            image,
            range.clone(),
            overlay,
            spool,
            limits,
            progress,
        )?;
        Ok(FsTree::from_model(model, range, blobs, spools))
    }

    /// Pass 1 for one layer (index `layer`, base 0) alone in overlayfs form, for a lower
    /// of an overlay stack.
    pub fn layer(
        store: &Store,
        image: &ImageRecord,
        layer: usize,
        limits: &Limits,
        progress: &dyn Progress,
    ) -> Result<FsTree, UnpackError> {
        let range = layer..layer + 1;
        FsTree::build(store, image, range, true, None, limits, progress)
    }

    fn from_model(
        model: Model,
        layers: std::ops::Range<usize>,
        blobs: Vec<LayerBlob>,
        spools: Vec<Option<LayerSpool>>,
    ) -> FsTree {
        let default_dir = |mtime: Timestamp| Inode {
            kind: InodeKind::Dir {
                entries: Vec::new(),
            },
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: Vec::new(),
            nlink: 2,
        };
        let mut root = match &model.root_meta {
            Some((e, _)) => Inode {
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime: e.mtime,
                xattrs: e.xattrs.clone(),
                ..default_dir(e.mtime)
            },
            None => default_dir(Timestamp::default()),
        };
        if model.root_opaque {
            set_opaque(&mut root.xattrs);
        }
        let mut inodes = vec![root];
        // Resolved path → inode id, for the directories (parents come first in the map).
        let mut dir_ids: std::collections::HashMap<&[u8], InodeId> =
            std::collections::HashMap::new();
        dir_ids.insert(b"", FsTree::ROOT);
        let mut leaf_ids: std::collections::HashMap<usize, InodeId> =
            std::collections::HashMap::new();
        let mut data = Vec::new();
        for (path, node) in &model.nodes {
            let (parent, name) = crate::path::split(path);
            let Some(&pid) = dir_ids.get(parent) else {
                // Unreachable by construction: every node's parent directory is a node.
                continue;
            };
            let id = match node {
                Node::Dir {
                    meta,
                    mtime,
                    opaque,
                    ..
                } => {
                    let mut ino = match meta {
                        Some(e) => Inode {
                            mode: e.mode,
                            uid: e.uid,
                            gid: e.gid,
                            mtime: e.mtime,
                            xattrs: e.xattrs.clone(),
                            ..default_dir(e.mtime)
                        },
                        None => default_dir(*mtime),
                    };
                    if *opaque {
                        set_opaque(&mut ino.xattrs);
                    }
                    let id = inodes.len() as InodeId;
                    inodes.push(ino);
                    inodes[pid as usize].nlink += 1;
                    dir_ids.insert(path, id);
                    id
                }
                Node::Leaf(i) => {
                    if let Some(&id) = leaf_ids.get(i) {
                        inodes[id as usize].nlink += 1;
                        id
                    } else {
                        let src = &model.inodes[*i];
                        let e = &src.entry;
                        let kind = match &e.kind {
                            EntryKind::File => InodeKind::File { size: e.size },
                            EntryKind::Symlink(t) => InodeKind::Symlink(t.clone()),
                            EntryKind::Char { major, minor } => InodeKind::Char {
                                major: *major,
                                minor: *minor,
                            },
                            EntryKind::Block { major, minor } => InodeKind::Block {
                                major: *major,
                                minor: *minor,
                            },
                            EntryKind::Fifo => InodeKind::Fifo,
                            // The model resolves hardlinks to shared leaves and keeps
                            // directories as `Node::Dir`.
                            EntryKind::Hardlink(_) | EntryKind::Dir => continue,
                        };
                        let id = inodes.len() as InodeId;
                        if matches!(kind, InodeKind::File { size } if size > 0) {
                            data.push((src.born, id));
                        }
                        let mut xattrs = e.xattrs.clone();
                        sort_xattrs(&mut xattrs);
                        inodes.push(Inode {
                            kind,
                            mode: e.mode,
                            uid: e.uid,
                            gid: e.gid,
                            mtime: e.mtime,
                            xattrs,
                            nlink: 1,
                        });
                        leaf_ids.insert(*i, id);
                        id
                    }
                }
            };
            if let InodeKind::Dir { entries } = &mut inodes[pid as usize].kind {
                entries.push((name.to_vec(), id));
            }
        }
        for ino in &mut inodes {
            if matches!(ino.kind, InodeKind::Dir { .. }) {
                sort_xattrs(&mut ino.xattrs);
            }
        }
        data.sort_unstable();
        FsTree {
            inodes,
            layers,
            data,
            blobs,
            spools,
        }
    }

    /// The regular files with data (size > 0), in the order [`FsTree::stream_data`] hands
    /// their bytes over.
    pub fn data_order(&self) -> impl Iterator<Item = InodeId> + '_ {
        self.data.iter().map(|(_, id)| *id)
    }

    /// Pass 2: reads the layers again and calls `sink(inode, offset, bytes)` with each
    /// regular file's bytes, in order, file after file in [`FsTree::data_order`]. `image`
    /// must be the one the tree was built from. The layers are read from the blobs pass 1
    /// opened and verified (not from `_store` again), without hashing them a second time:
    /// the blob must not have been written to since (checked, see `flatten::LayerBlob`),
    /// and only as much of each layer is decompressed as holds data of the tree.
    pub fn stream_data(
        &self,
        _store: &Store,
        image: &ImageRecord,
        limits: &Limits,
        progress: &dyn Progress,
        mut sink: impl FnMut(InodeId, u64, &[u8]) -> Result<(), UnpackError>,
    ) -> Result<(), UnpackError> {
        let mut buf = vec![0u8; 1 << 20];
        for (i, range) in self.layer_data() {
            self.stream_layer(image, limits, progress, i, range, &mut buf, &mut sink)?;
        }
        Ok(())
    }

    /// Pass 2 on up to `threads` threads: as [`FsTree::stream_data`], but the layers with
    /// data are shared out (the largest blobs first, each to the least loaded thread), and
    /// each thread streams its layers, base first, through its own sink from `make_sink`.
    /// Within a layer the files come in [`FsTree::data_order`]; layers run concurrently,
    /// so a sink must not rely on the order across layers. On an error, the first failing
    /// layer's error (base first) is returned once every thread has stopped.
    pub fn stream_data_parallel<S>(
        &self,
        _store: &Store,
        image: &ImageRecord,
        limits: &Limits,
        progress: &dyn Progress,
        threads: usize,
        make_sink: impl Fn() -> S + Sync,
    ) -> Result<(), UnpackError>
    where
        S: FnMut(InodeId, u64, &[u8]) -> Result<(), UnpackError>,
    {
        let layers = self.layer_data();
        if threads > 1 && !layers.is_empty() && layers.iter().all(|(i, _)| self.spool(*i).is_some())
        {
            return self.stream_spooled_parallel(image, progress, threads, make_sink);
        }
        let threads = threads.clamp(1, layers.len().max(1));
        if threads == 1 {
            return self.stream_data(_store, image, limits, progress, make_sink());
        }
        let mut order: Vec<usize> = (0..layers.len()).collect();
        order.sort_by_key(|&k| std::cmp::Reverse(image.layers[layers[k].0].size));
        let mut buckets: Vec<(u64, Vec<usize>)> = vec![(0, Vec::new()); threads];
        for k in order {
            let least = (0..threads)
                .min_by_key(|&b| buckets[b].0)
                .expect("one thread at least");
            buckets[least].0 += image.layers[layers[k].0].size;
            buckets[least].1.push(k);
        }
        let results: Vec<Result<(), (usize, UnpackError)>> = std::thread::scope(|s| {
            let jobs: Vec<_> = buckets
                .into_iter()
                .map(|(_, mut mine)| {
                    mine.sort_unstable();
                    let (layers, make_sink) = (&layers, &make_sink);
                    s.spawn(move || {
                        let mut sink = make_sink();
                        let mut buf = vec![0u8; 1 << 20];
                        for k in mine {
                            let (i, range) = layers[k].clone();
                            self.stream_layer(
                                image, limits, progress, i, range, &mut buf, &mut sink,
                            )
                            .map_err(|e| (i, e))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|j| {
                    // A panic sorts after every layer's own error (which is the one
                    // to report when there is one).
                    j.join().unwrap_or(Err((
                        usize::MAX,
                        UnpackError::WorkerPanicked {
                            what: "layer streaming",
                        },
                    )))
                })
                .collect()
        });
        match results
            .into_iter()
            .filter_map(Result::err)
            .min_by_key(|(i, _)| *i)
        {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// The spooled file data of layer `i`, if pass 1 spooled it.
    fn spool(&self, i: usize) -> Option<&LayerSpool> {
        self.spools
            .get(i.checked_sub(self.layers.start)?)
            .and_then(Option::as_ref)
    }

    /// Pass 2 from the spool on `threads` threads: the files, in [`FsTree::data_order`],
    /// cut in `threads` runs of about the same number of bytes (whatever the layers they
    /// come from), each run through its own sink. On an error, the first failing run's
    /// error is returned once every thread has stopped.
    fn stream_spooled_parallel<S>(
        &self,
        image: &ImageRecord,
        progress: &dyn Progress,
        threads: usize,
        make_sink: impl Fn() -> S + Sync,
    ) -> Result<(), UnpackError>
    where
        S: FnMut(InodeId, u64, &[u8]) -> Result<(), UnpackError>,
    {
        let size = |id: InodeId| match self.inodes[id as usize].kind {
            InodeKind::File { size } => size,
            _ => 0,
        };
        let total: u64 = self.data.iter().map(|(_, id)| size(*id)).sum();
        let threads = threads.clamp(1, self.data.len().max(1));
        let per = total.div_ceil(threads as u64).max(1);
        let mut cuts = vec![0usize];
        let mut acc = 0u64;
        for (k, (_, id)) in self.data.iter().enumerate() {
            acc += size(*id);
            if acc >= per * cuts.len() as u64 && cuts.len() < threads && k + 1 < self.data.len() {
                cuts.push(k + 1);
            }
        }
        cuts.push(self.data.len());
        let count = image.layers.len();
        let results: Vec<Result<(), UnpackError>> = std::thread::scope(|s| {
            let jobs: Vec<_> = cuts
                .windows(2)
                .map(|w| {
                    let (run, make_sink) = (&self.data[w[0]..w[1]], &make_sink);
                    s.spawn(move || {
                        let mut sink = make_sink();
                        let mut buf = vec![0u8; 1 << 20];
                        let mut layer = None;
                        for &((i, idx), id) in run {
                            let digest = &image.layers[i].digest;
                            if layer != Some(i) {
                                layer = Some(i);
                                let message =
                                    format!("writing layer {}/{count} {}", i + 1, digest.short());
                                progress.event(&ProgressEvent::Status { message: &message });
                            }
                            let spool = self.spool(i).expect("every layer with data spooled");
                            copy_spooled(spool, idx, id, size(id), &mut buf, &mut sink)
                                .map_err(|e| e.in_layer(i + 1, digest))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|j| {
                    j.join().unwrap_or(Err(UnpackError::WorkerPanicked {
                        what: "layer streaming",
                    }))
                })
                .collect()
        });
        results.into_iter().collect()
    }

    /// The layers with surviving data, base first, each with its range in `self.data`.
    fn layer_data(&self) -> Vec<(usize, std::ops::Range<usize>)> {
        let mut out: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for (k, ((layer, _), _)) in self.data.iter().enumerate() {
            match out.last_mut() {
                Some((l, r)) if l == layer => r.end = k + 1,
                _ => out.push((*layer, k..k + 1)),
            }
        }
        out
    }

    /// Streams the files `self.data[range]` of layer `i` through `sink`.
    #[allow(clippy::too_many_arguments)]
    fn stream_layer(
        &self,
        image: &ImageRecord,
        limits: &Limits,
        progress: &dyn Progress,
        i: usize,
        range: std::ops::Range<usize>,
        buf: &mut [u8],
        sink: &mut impl FnMut(InodeId, u64, &[u8]) -> Result<(), UnpackError>,
    ) -> Result<(), UnpackError> {
        let count = image.layers.len();
        let digest = &image.layers[i].digest;
        let message = format!("writing layer {}/{count} {}", i + 1, digest.short());
        progress.event(&ProgressEvent::Status { message: &message });
        if let Some(spool) = self.spool(i) {
            for &((_, idx), id) in &self.data[range] {
                let InodeKind::File { size } = self.inodes[id as usize].kind else {
                    continue;
                };
                copy_spooled(spool, idx, id, size, buf, sink)
                    .map_err(|e| e.in_layer(i + 1, digest))?;
            }
            return Ok(());
        }
        let mut next = range.start;
        let blob = &self.blobs[i - self.layers.start];
        read_layer_data(image, i, blob, limits, progress, |tar| {
            let mut idx = 0u64;
            while let Some(e) = tar.next_entry()? {
                let here = (i, idx);
                idx += 1;
                let (pos, id) = self.data[next];
                if pos != here {
                    continue;
                }
                next += 1;
                if !matches!(self.inodes[id as usize].kind, InodeKind::File { size } if size == e.size)
                {
                    return Err(UnpackError::bad(
                        &e.path,
                        "the layer changed between the two passes (file size differs)",
                    ));
                }
                let mut off = 0u64;
                while off < e.size {
                    let n = tar.read_data(buf)?;
                    if n == 0 {
                        return Err(UnpackError::bad(&e.path, "file data ends early"));
                    }
                    sink(id, off, &buf[..n])?;
                    off += n as u64;
                }
                if next == range.end {
                    // The rest of the layer holds no data of the tree: not read.
                    break;
                }
            }
            Ok(())
        })
        .map_err(|e| e.in_layer(i + 1, digest))?;
        if next != range.end {
            return Err(UnpackError::bad(
                b"",
                "a layer changed between the two passes (file data not found again)",
            ));
        }
        Ok(())
    }
}

/// Hands the `size` bytes of file `id` (entry `idx` of its layer) from `spool` to `sink`.
fn copy_spooled(
    spool: &LayerSpool,
    idx: u64,
    id: InodeId,
    size: u64,
    buf: &mut [u8],
    sink: &mut impl FnMut(InodeId, u64, &[u8]) -> Result<(), UnpackError>,
) -> Result<(), UnpackError> {
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        spool.read(idx, off, &mut buf[..n])?;
        sink(id, off, &buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

fn sort_xattrs(x: &mut [(Vec<u8>, Vec<u8>)]) {
    x.sort_by(|a, b| a.0.cmp(&b.0));
}

fn set_opaque(x: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    x.retain(|(k, _)| k != OVERLAY_OPAQUE.as_bytes());
    x.push((OVERLAY_OPAQUE.as_bytes().to_vec(), b"y".to_vec()));
}
