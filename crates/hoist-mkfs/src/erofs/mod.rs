//! hoist's own erofs writer: an image written straight from the layer blobs, with no
//! extracted directory, no root and no mkfs.erofs.
//!
//! Pass 1 ([`FsTree`]) gives the final tree; from it the whole layout is computed (every
//! inode's place, hence its nid; the shared xattrs; each directory's blocks; each file's
//! data run and inline tail), so pass 2 streams each file's bytes from its layer into its
//! final blocks (the tail into its inode's block); the metadata is written last. Owners,
//! modes, devices and xattrs come from the tar headers, so an unprivileged user builds the
//! same bytes as root.
//!
//! The image: 4 KiB blocks; the superblock in block 0; the shared xattr area (every
//! `name=value` pair that two or more inodes carry, up to 255 per inode) from block 1; the
//! inodes (tree order, parents first, the root at nid 0), each with its inline xattrs and
//! inline tail (files, directories and symlinks whose tail fits in the inode's block:
//! layout "flat inline"; otherwise "flat plain"); then directory blocks and block-sized
//! symlinks; then file data in the order pass 2 delivers it. Compact 32-byte inodes where
//! owners, links and size fit and the mtime is the superblock's (the most common mtime of
//! the tree); extended 64-byte inodes otherwise. Hard links share one nid. No compression
//! and no feature bits, so every erofs reader takes it.
//!
//! Determinism: the UUID comes from a key (the chain ID or diff ID); every choice follows
//! from the tree. The same tree gives the same bytes.

mod format;
pub mod tar_index;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use hoist_store::{ImageRecord, Store};
use hoist_types::Progress;
use hoist_unpack::tree::{FsTree, InodeId, InodeKind};
use hoist_unpack::{Limits, UnpackError};

use crate::MkfsError;
use crate::data::{SeqWriter, SinkFactory, data_pass, path_of};
use crate::verity::derive;
use format::{B, BLOCK, InodeFields, SuperBlock, ft};

/// Which tree of an image to write.
pub use crate::source::TreeSource as ErofsSource;

/// Writes an erofs image of `image` at `out` (created or truncated) from the layer blobs
/// in `store`; returns its size in bytes.
pub fn build_erofs(
    store: &Store,
    image: &ImageRecord,
    source: ErofsSource,
    out: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<u64, MkfsError> {
    let (tree, key) = source.tree(store, image, out, limits, progress)?;
    // Pass 2 on every core (up to 4): each layer's data goes to its own blocks.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    write_erofs(&tree, out, key.as_bytes(), |make_sink| {
        tree.stream_data(image, progress, threads, make_sink)
    })
}

/// Where one inode goes.
#[derive(Debug, Clone, Default)]
struct Rec {
    /// Byte offset of the inode in the metadata area (nid = off / 32).
    off: u64,
    extended: bool,
    inline: bool,
    /// Bytes of its xattr body.
    xattr_bytes: u32,
    /// `i_size`.
    size: u64,
    /// Bytes in whole blocks in the data area (the rest, if inline, follows the inode).
    data_len: u64,
    /// First block of its data in the data area (0 if none).
    blkaddr: u64,
    /// A tar index's regular file: its chunk format (`i_u`), chunk size and count.
    chunks: Option<(u32, u64, u64)>,
}

impl Rec {
    fn base(&self) -> u64 {
        let inode = if self.extended {
            format::EXTENDED_SIZE
        } else {
            format::COMPACT_SIZE
        };
        inode as u64 + u64::from(self.xattr_bytes)
    }

    fn nid(&self) -> u64 {
        self.off / 32
    }
}

/// Writes `tree` as an erofs image at `out`. `stream` must deliver every regular file's
/// bytes through sinks it makes with the factory it is given, one sink per thread, as
/// [`FsTree::stream_data`] does: each
/// file's bytes in order through one sink; files in any order. `key` seeds the UUID.
/// Returns the image size in bytes.
pub fn write_erofs(
    tree: &FsTree,
    out: &Path,
    key: &[u8],
    stream: impl for<'s> FnOnce(&'s SinkFactory<'s>) -> Result<(), UnpackError>,
) -> Result<u64, MkfsError> {
    write_image(tree, out, key, None, stream)
}

/// Where the regular files' data of a tar index lie: each is one run of bytes in one of
/// the extra devices (a layer's uncompressed tar).
pub(crate) struct Chunks<'a> {
    /// By inode id: `(device, byte offset)` of each regular file with data; devices count
    /// from 1 (`devices[0]` is device 1), offsets are multiples of 512.
    pub at: &'a [Option<(u16, u64)>],
    /// Each extra device: its tag and its size in bytes.
    pub devices: &'a [(Vec<u8>, u64)],
}

/// Blocks of a tar index: 512 bytes, as tar data is 512-aligned.
pub(crate) const INDEX_BLKSZBITS: u32 = 9;

/// [`write_erofs`], or with `chunks` a tar index: 512-byte blocks, regular files as chunk
/// references into the devices (their data is not written; `stream` is not called).
pub(crate) fn write_image(
    tree: &FsTree,
    out: &Path,
    key: &[u8],
    chunks: Option<&Chunks<'_>>,
    stream: impl for<'s> FnOnce(&'s SinkFactory<'s>) -> Result<(), UnpackError>,
) -> Result<u64, MkfsError> {
    let blkszbits: u32 = if chunks.is_some() {
        INDEX_BLKSZBITS
    } else {
        12
    };
    let bs: u64 = 1 << blkszbits;
    let block = bs as usize;
    let unsupported = |id: InodeId, reason: &'static str| MkfsError::ErofsUnsupported {
        image: out.to_path_buf(),
        path: path_of(tree, id),
        reason,
    };
    let n = tree.inodes.len();
    if n as u64 > u64::from(u32::MAX) {
        return Err(unsupported(FsTree::ROOT, "more inodes than erofs holds"));
    }

    // The superblock's time: the most common mtime (ties: the earliest), for compact inodes.
    let epoch = {
        let mut counts: HashMap<(i64, u32), u64> = HashMap::new();
        for ino in &tree.inodes {
            if ino.mtime.secs >= 0 {
                *counts.entry((ino.mtime.secs, ino.mtime.nanos)).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map_or((0, 0), |((s, ns), _)| (s as u64, ns))
    };

    // Every inode's xattrs as written (an access ACL follows the mode, as after the
    // unpack's chmod), each name checked against the prefixes erofs has indices for.
    let mut acls: HashMap<usize, Vec<u8>> = HashMap::new();
    for (i, ino) in tree.inodes.iter().enumerate() {
        for (k, v) in &ino.xattrs {
            let (_, suffix) = format::split_xattr_name(k).ok_or_else(|| {
                unsupported(
                    i as InodeId,
                    "an xattr outside user., trusted., security. and the POSIX ACLs",
                )
            })?;
            if suffix.len() > 255 || v.len() > usize::from(u16::MAX) {
                return Err(unsupported(i as InodeId, "an xattr name or value too long"));
            }
            if k == b"system.posix_acl_access" {
                let fixed =
                    format::acl_chmod(v, ino.mode).map_err(|r| unsupported(i as InodeId, r))?;
                acls.insert(i, fixed);
            }
        }
    }
    let acls = &acls;
    let xattrs_of = |i: usize| {
        tree.inodes[i].xattrs.iter().map(move |(k, v)| {
            let v = match acls.get(&i) {
                Some(a) if k == b"system.posix_acl_access" => &a[..],
                _ => &v[..],
            };
            (&k[..], v)
        })
    };

    // Shared xattrs: every pair two inodes or more carry, in order of first use.
    let mut pair_uses: HashMap<(&[u8], &[u8]), u32> = HashMap::new();
    for i in 0..n {
        for pair in xattrs_of(i) {
            *pair_uses.entry(pair).or_default() += 1;
        }
    }
    let mut shared: HashMap<(&[u8], &[u8]), u32> = HashMap::new();
    let mut shared_area: Vec<u8> = Vec::new();
    for i in 0..n {
        for (k, v) in xattrs_of(i) {
            if pair_uses[&(k, v)] < 2 || shared.contains_key(&(k, v)) {
                continue;
            }
            let (index, suffix) = format::split_xattr_name(k).expect("checked above");
            let len = format::xattr_entry_len(suffix.len(), v.len());
            let room = block - shared_area.len() % block;
            if len > room && len <= block {
                // An entry never crosses a block boundary.
                shared_area.resize(shared_area.len() + room, 0);
            }
            shared.insert((k, v), (shared_area.len() / 4) as u32);
            format::put_xattr_entry(index, suffix, v, &mut shared_area);
        }
    }
    let xattr_body = |i: usize, out: &mut Vec<u8>| {
        if tree.inodes[i].xattrs.is_empty() {
            return;
        }
        let ids: Vec<u32> = xattrs_of(i)
            .filter_map(|pair| shared.get(&pair).copied())
            .take(255)
            .collect();
        let at = out.len();
        out.resize(at + format::XATTR_HEADER, 0);
        out[at + 4] = ids.len() as u8;
        for id in &ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for (k, v) in xattrs_of(i) {
            if let Some(id) = shared.get(&(k, v))
                && ids.contains(id)
            {
                continue;
            }
            let (index, suffix) = format::split_xattr_name(k).expect("checked above");
            format::put_xattr_entry(index, suffix, v, out);
        }
    };

    // Directory listings (names sorted, `.` and `..` included) and every inode's place.
    let dir_names = |id: usize| -> Vec<&[u8]> {
        let InodeKind::Dir { entries } = &tree.inodes[id].kind else {
            return Vec::new();
        };
        let mut names: Vec<&[u8]> = Vec::with_capacity(entries.len() + 2);
        names.extend(entries.iter().map(|(n, _)| &n[..]));
        for dot in [&b".."[..], b"."] {
            let at = names.partition_point(|n| *n < dot);
            names.insert(at, dot);
        }
        names
    };
    let mut recs = vec![Rec::default(); n];
    let mut parents = vec![FsTree::ROOT; n];
    let mut pos = 0u64;
    let mut scratch = Vec::new();
    for (i, ino) in tree.inodes.iter().enumerate() {
        let id = i as InodeId;
        scratch.clear();
        xattr_body(i, &mut scratch);
        if scratch.len() > format::XATTR_HEADER + 4 * (usize::from(u16::MAX) - 1) {
            return Err(unsupported(id, "xattrs too large for one erofs inode"));
        }
        let (size, tail) = match &ino.kind {
            InodeKind::File { size } if chunks.is_some() => (*size, 0),
            InodeKind::File { size } => (*size, size % bs),
            InodeKind::Dir { entries } => {
                for (name, child) in entries {
                    if name.len() > format::NAME_MAX {
                        return Err(unsupported(*child, "name longer than 255 bytes"));
                    }
                    parents[*child as usize] = id;
                }
                let (blocks, last) = format::dir_size(dir_names(i).into_iter(), block);
                ((blocks - 1) * bs + last as u64, last as u64 % bs)
            }
            InodeKind::Symlink(t) => {
                if t.len() >= BLOCK {
                    return Err(unsupported(id, "symlink target of 4096 bytes or more"));
                }
                (t.len() as u64, t.len() as u64 % bs)
            }
            InodeKind::Char { major, minor } | InodeKind::Block { major, minor } => {
                if format::rdev(*major, *minor).is_none() {
                    return Err(unsupported(
                        id,
                        "device number beyond 12-bit major, 20-bit minor",
                    ));
                }
                (0, 0)
            }
            InodeKind::Fifo => (0, 0),
        };
        let r = &mut recs[i];
        r.extended = !format::compact_fits(ino.uid, ino.gid, ino.nlink, size, ino.mtime, epoch);
        r.xattr_bytes = scratch.len() as u32;
        r.size = size;
        let base = r.base();
        let room = bs - pos % bs;
        r.inline = false;
        if tail > 0 && base + tail <= bs {
            if base + tail <= room {
                r.inline = true;
            } else if room <= bs - tail {
                // Padding to the next block wastes less than a block for the tail would.
                pos += room;
                r.inline = true;
            }
        }
        r.data_len = if r.inline { size - tail } else { size };
        let mut rec_len = base + if r.inline { tail } else { 0 };
        if let (Some(c), InodeKind::File { .. }) = (chunks, &ino.kind) {
            // No data blocks: one chunk index per chunk after the inode and its xattrs,
            // aligned to 8 bytes (the inode's offset is).
            r.data_len = 0;
            if size > 0 {
                if c.at.get(i).copied().flatten().is_none() {
                    return Err(unsupported(id, "file data not found in the layer tars"));
                }
                let layout = format::chunk_layout(size, blkszbits);
                rec_len = base.next_multiple_of(8) + layout.2 * format::CHUNK_INDEX;
                r.chunks = Some(layout);
            } else {
                r.chunks = Some((0, 0, 0));
            }
        }
        if rec_len > room && !pos.is_multiple_of(bs) {
            // A record never crosses a block boundary unless it is larger than a block.
            pos += room;
        }
        r.off = pos;
        pos = (pos + rec_len).next_multiple_of(32);
    }
    // The device table (a tar index) right after the superblock, then the shared xattrs
    // and the inodes from the next block.
    let devices = chunks.map_or(&[][..], |c| c.devices);
    if devices.len() > usize::from(u16::MAX >> 1) {
        return Err(unsupported(FsTree::ROOT, "more layers than erofs devices"));
    }
    let devt_at = format::SUPER_OFFSET + 128;
    let first = ((devt_at + devices.len() * format::DEVICE_SLOT) as u64).div_ceil(bs);
    let shared_blocks = (shared_area.len() as u64).div_ceil(bs);
    let xattr_blkaddr = if shared_blocks > 0 { first } else { 0 };
    let meta_blkaddr = first + shared_blocks;
    let meta_start = meta_blkaddr * bs;
    let mut cursor = meta_blkaddr + pos.div_ceil(bs);
    // Directory blocks and block-sized symlinks, then file data in streaming order.
    for (i, ino) in tree.inodes.iter().enumerate() {
        let r = &mut recs[i];
        if matches!(ino.kind, InodeKind::Dir { .. } | InodeKind::Symlink(_)) && r.data_len > 0 {
            r.blkaddr = cursor;
            cursor += r.data_len.div_ceil(bs);
        }
    }
    for id in tree.data_order() {
        let r = &mut recs[id as usize];
        if r.data_len > 0 {
            r.blkaddr = cursor;
            cursor += r.data_len.div_ceil(bs);
        }
    }
    // A tar index is padded to 4 KiB too: readers (erofs-utils 1.5) read the superblock's
    // whole page.
    let blocks = cursor.max(2).next_multiple_of(4096 / bs);
    if blocks > u64::from(u32::MAX) {
        return Err(unsupported(FsTree::ROOT, "too large for an erofs image"));
    }

    // The file, sparse, then the data of pass 2 straight into its blocks (tails into
    // their inodes' blocks).
    let file = File::create(out).map_err(|e| MkfsError::io("create", out, e))?;
    file.set_len(blocks * bs)
        .map_err(|e| MkfsError::io("size", out, e))?;
    if chunks.is_none() {
        data_pass(
            &file,
            out,
            |w, id, off, bytes| sink_write(&recs, &file, w, meta_start, id, off, bytes),
            stream,
        )?;
    }
    let put = |at: u64, bytes: &[u8]| {
        file.write_all_at(bytes, at)
            .map_err(|e| MkfsError::io("write", out, e))
    };
    // The metadata: inodes with their xattrs and inline tails, in runs that stop where a
    // file's tail (already written) sits; directory and symlink blocks.
    put(xattr_blkaddr * bs, &shared_area)?;
    let mut run: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut run_at = meta_start;
    let mut dir = Vec::new();
    for (i, ino) in tree.inodes.iter().enumerate() {
        let r = &recs[i];
        let at = meta_start + r.off;
        let run_end = run_at + run.len() as u64;
        if at - run_end > bs || run.len() > 4 << 20 {
            put(run_at, &run)?;
            run.clear();
            run_at = at;
        }
        run.resize((at - run_at) as usize, 0);
        let (mode, u) = match &ino.kind {
            InodeKind::File { .. } if r.chunks.is_some() => {
                (0o100000, u64::from(r.chunks.map_or(0, |c| c.0)))
            }
            InodeKind::File { .. } => (0o100000, r.blkaddr),
            InodeKind::Dir { .. } => (0o040000, r.blkaddr),
            InodeKind::Symlink(_) => (0o120000, r.blkaddr),
            InodeKind::Char { major, minor } => (
                0o020000,
                u64::from(format::rdev(*major, *minor).unwrap_or(0)),
            ),
            InodeKind::Block { major, minor } => (
                0o060000,
                u64::from(format::rdev(*major, *minor).unwrap_or(0)),
            ),
            InodeKind::Fifo => (0o010000, 0),
        };
        format::put_inode(
            &InodeFields {
                extended: r.extended,
                layout: if r.chunks.is_some() {
                    format::LAYOUT_CHUNK_BASED
                } else if r.inline {
                    format::LAYOUT_FLAT_INLINE
                } else {
                    format::LAYOUT_FLAT_PLAIN
                },
                xattr_bytes: r.xattr_bytes as usize,
                mode: (mode | (ino.mode & 0o7777)) as u16,
                nlink: ino.nlink,
                size: r.size,
                u: u as u32,
                ino: i as u32 + 1,
                uid: ino.uid,
                gid: ino.gid,
                mtime: ino.mtime,
            },
            &mut run,
        );
        xattr_body(i, &mut run);
        let inline_tail = |bytes: &[u8], run: &mut Vec<u8>| {
            if r.inline {
                run.extend_from_slice(&bytes[r.data_len as usize..]);
            }
        };
        match &ino.kind {
            InodeKind::Dir { entries } => {
                let nid_of = |c: InodeId| recs[c as usize].nid();
                let mut list: Vec<(&[u8], u64, u8)> = Vec::with_capacity(entries.len() + 2);
                list.extend(entries.iter().map(|(name, c)| {
                    (
                        &name[..],
                        nid_of(*c),
                        file_type(&tree.inodes[*c as usize].kind),
                    )
                }));
                for (dot, target) in [(&b".."[..], parents[i]), (b".", i as InodeId)] {
                    let at = list.partition_point(|e| e.0 < dot);
                    list.insert(at, (dot, nid_of(target), ft::DIR));
                }
                dir.clear();
                format::put_dir(&list, block, &mut dir);
                debug_assert_eq!(dir.len() as u64, r.size);
                if r.data_len > 0 {
                    put(r.blkaddr * bs, &dir[..r.data_len as usize])?;
                }
                inline_tail(&dir, &mut run);
            }
            InodeKind::Symlink(t) => {
                if r.data_len > 0 {
                    put(r.blkaddr * bs, &t[..r.data_len as usize])?;
                }
                inline_tail(t, &mut run);
            }
            InodeKind::File { .. } if r.chunks.is_some_and(|c| c.2 > 0) => {
                let (_, chunk, count) = r.chunks.expect("checked");
                let (device, offset) = chunks
                    .and_then(|c| c.at.get(i).copied().flatten())
                    .expect("checked in the layout");
                let idx_at = (at + r.base()).next_multiple_of(8);
                run.resize((idx_at - run_at) as usize, 0);
                for k in 0..count {
                    let blk = (offset + k * chunk) >> blkszbits;
                    let blk = u32::try_from(blk)
                        .map_err(|_| unsupported(i as InodeId, "a layer tar of 2 TiB or more"))?;
                    format::put_chunk_index(device, blk, &mut run);
                }
            }
            InodeKind::File { .. } if r.inline => {
                // Its tail is in the file already: the run stops here.
                put(run_at, &run)?;
                run.clear();
                run_at = at + r.size - r.data_len + r.base();
            }
            _ => {}
        }
    }
    put(run_at, &run)?;
    drop(run);
    let sb = SuperBlock {
        root_nid: recs[0].nid() as u16,
        inos: n as u64,
        epoch: epoch.0,
        fixed_nsec: epoch.1,
        blocks: blocks as u32,
        meta_blkaddr: meta_blkaddr as u32,
        xattr_blkaddr: xattr_blkaddr as u32,
        uuid: uuid_from(key),
        blkszbits: blkszbits as u8,
        feature_incompat: if chunks.is_some() {
            format::INCOMPAT_CHUNKED_FILE | format::INCOMPAT_DEVICE_TABLE
        } else {
            0
        },
        extra_devices: devices.len() as u16,
        devt_slotoff: if devices.is_empty() {
            0
        } else {
            (devt_at / format::DEVICE_SLOT) as u16
        },
    };
    let mut table = Vec::with_capacity(devices.len() * format::DEVICE_SLOT);
    for (tag, bytes) in devices {
        let blocks = u32::try_from(bytes.div_ceil(bs))
            .map_err(|_| unsupported(FsTree::ROOT, "a layer tar of 2 TiB or more"))?;
        table.extend_from_slice(&format::device_slot(tag, blocks));
    }
    put(devt_at as u64, &table)?;
    put(format::SUPER_OFFSET as u64, &sb.encode())?;
    file.sync_all().map_err(|e| MkfsError::io("sync", out, e))?;
    Ok(blocks * bs)
}

/// A version 4 UUID derived from `key`.
fn uuid_from(key: &[u8]) -> [u8; 16] {
    let d = derive(b"erofs uuid", key);
    let mut u: [u8; 16] = d[..16].try_into().expect("16 of 32 bytes");
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    u
}

/// Writes `bytes` at `off` of file `id`: the whole blocks to its data run (through `w`),
/// the tail beside its inode.
fn sink_write(
    recs: &[Rec],
    file: &File,
    w: &mut SeqWriter<'_>,
    meta_start: u64,
    id: InodeId,
    off: u64,
    bytes: &[u8],
) -> Result<(), UnpackError> {
    let r = &recs[id as usize];
    let end = off + bytes.len() as u64;
    if end > r.size {
        return Err(UnpackError::Output {
            source: std::io::Error::other("file data past its planned size"),
        });
    }
    let split = (r.data_len.saturating_sub(off) as usize).min(bytes.len());
    let (data, tail) = bytes.split_at(split);
    if !data.is_empty() {
        w.write_at(r.blkaddr * B + off, data)
            .map_err(|source| UnpackError::Output { source })?;
    }
    if !tail.is_empty() {
        let at = meta_start + r.off + r.base() + (off + split as u64 - r.data_len);
        file.write_all_at(tail, at)
            .map_err(|source| UnpackError::Output { source })?;
    }
    Ok(())
}

fn file_type(k: &InodeKind) -> u8 {
    match k {
        InodeKind::File { .. } => ft::REG,
        InodeKind::Dir { .. } => ft::DIR,
        InodeKind::Symlink(_) => ft::SYMLINK,
        InodeKind::Char { .. } => ft::CHR,
        InodeKind::Block { .. } => ft::BLK,
        InodeKind::Fifo => ft::FIFO,
    }
}
