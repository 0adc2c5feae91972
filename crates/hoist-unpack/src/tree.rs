//! The final tree of an image as a model, for filesystem writers (ext4, erofs) that build
//! an image straight from the layer blobs, with no extracted directory.
//!
//! [`FsTree::flattened_spooled`] applies every layer with the rules of `hoist unpack` (the
//! same model as [`crate::export`]: symlinks in parent paths resolve inside the root,
//! whiteouts and opaque directories hide lower layers, hardlinks share an inode, each
//! layer's diff ID checked). [`FsTree::layer_spooled`] takes one layer alone in overlayfs
//! form, as the per-layer unpack does: `.wh.NAME` becomes a 0/0 character device,
//! `.wh..wh..opq` (or a whiteout of something this layer writes below) the xattr
//! `trusted.overlay.opaque=y` on the directory.
//!
//! The model holds metadata only (owners, modes, devices and xattrs come from the tar
//! headers, never from the host, so it is the same for root and for an unprivileged
//! user). Pass 1 also writes every regular file's bytes, as it reads them, to an unnamed
//! spool file per layer (beside the output: the bytes whose diff ID it checked). File
//! contents are handed over in a second pass, [`FsTree::stream_data`], which copies them
//! from the spool (the layers are not decompressed again), so a writer can place every
//! file before a byte arrives.

use hoist_store::{ImageRecord, Store};
use hoist_types::{Progress, ProgressEvent};

use crate::flatten::{LayerSpool, Model, Node, Pos, build_model};
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
    /// The file data of `layers`, spooled by pass 1, for pass 2.
    spools: Vec<LayerSpool>,
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
    /// applied), as `hoist unpack` would leave it. Every regular file's bytes are written
    /// to unnamed files in `spool` (a directory on the filesystem of the output, say: as
    /// many bytes as the layers' files hold, until the tree is dropped), from which pass 2
    /// ([`FsTree::stream_data`]) copies them.
    pub fn flattened_spooled(
        store: &Store,
        image: &ImageRecord,
        spool: &std::path::Path,
        limits: &Limits,
        progress: &dyn Progress,
    ) -> Result<FsTree, UnpackError> {
        FsTree::build(
            store,
            image,
            0..image.layers.len(),
            false,
            spool,
            limits,
            progress,
        )
    }

    /// Pass 1 for one layer (index `layer`, base 0) alone in overlayfs form, for a lower
    /// of an overlay stack; the file data spooled as [`FsTree::flattened_spooled`].
    pub fn layer_spooled(
        store: &Store,
        image: &ImageRecord,
        layer: usize,
        spool: &std::path::Path,
        limits: &Limits,
        progress: &dyn Progress,
    ) -> Result<FsTree, UnpackError> {
        FsTree::build(
            store,
            image,
            layer..layer + 1,
            true,
            spool,
            limits,
            progress,
        )
    }

    fn build(
        store: &Store,
        image: &ImageRecord,
        range: std::ops::Range<usize>,
        overlay: bool,
        spool: &std::path::Path,
        limits: &Limits,
        progress: &dyn Progress,
    ) -> Result<FsTree, UnpackError> {
        // A blob the store does not hold yet is followed as it downloads when `store` is a
        // `Store::following` handle (`hoist rootfs REF` builds while it pulls).
        let open = |i: usize| -> Result<Box<dyn std::io::Read + Send>, UnpackError> {
            let l = &image.layers[i];
            Ok(store.blob_reader(&l.digest, l.size)?)
        };
        let (model, spools) = build_model(
            image,
            range.clone(),
            overlay,
            Some(spool),
            &open,
            limits,
            progress,
        )?;
        let spools = spools.expect("a spool directory was given");
        Ok(FsTree::from_model(model, range, spools))
    }

    fn from_model(model: Model, layers: std::ops::Range<usize>, spools: Vec<LayerSpool>) -> FsTree {
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
            spools,
        }
    }

    /// The regular files with data (size > 0), in the order [`FsTree::stream_data`] hands
    /// their bytes over.
    pub fn data_order(&self) -> impl Iterator<Item = InodeId> + '_ {
        self.data.iter().map(|(_, id)| *id)
    }

    /// Pass 1 only, for writers that reference the file data where it lies instead of
    /// copying it (the erofs tar index): layers `range` of `image` (all of them, or one
    /// in overlay form when `overlay`), each read from `open(i)` (a reader of layer `i`'s
    /// blob as `image.layers[i]` describes it, from its first byte) with the rules and
    /// checks of [`FsTree::flattened_spooled`], diff IDs included. Nothing is spooled:
    /// the tree streams no data ([`FsTree::stream_data`] hands nothing over). Returned
    /// with it: every regular file with data as `(layer, entry, inode)`, where `entry`
    /// counts the layer's entries as [`crate::TarReader::next_entry`] returns them (from
    /// 0): the entry whose data the file holds.
    #[allow(clippy::type_complexity)]
    pub fn without_data<'a>(
        image: &ImageRecord,
        range: std::ops::Range<usize>,
        overlay: bool,
        open: &(
             dyn Fn(usize) -> Result<Box<dyn std::io::Read + Send + 'a>, UnpackError> + Sync + 'a
         ),
        limits: &Limits,
        progress: &dyn Progress,
    ) -> Result<(FsTree, Vec<(usize, u64, InodeId)>), UnpackError> {
        let (model, _) = build_model(image, range.clone(), overlay, None, open, limits, progress)?;
        let mut tree = FsTree::from_model(model, range, Vec::new());
        let data = std::mem::take(&mut tree.data);
        Ok((
            tree,
            data.into_iter().map(|((l, e), id)| (l, e, id)).collect(),
        ))
    }

    /// Pass 2: calls `sink(inode, offset, bytes)` with each regular file's bytes, copied
    /// from the spool of pass 1 (the layers are not read again), on up to `threads`
    /// threads: the files, in [`FsTree::data_order`], are cut in `threads` runs of about
    /// the same number of bytes (whatever the layers they come from), each run through
    /// its own sink from `make_sink`. Each file's bytes come in order through one sink;
    /// runs go concurrently, so a sink must not rely on the order across runs. `image`
    /// must be the one the tree was built from (it names the layers in progress and
    /// errors). On an error, the first failing run's error is returned once every thread
    /// has stopped.
    pub fn stream_data<S>(
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
                            let spool = &self.spools[i - self.layers.start];
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
