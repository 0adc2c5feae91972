//! hoist's own ext4 writer: an image written straight from the layer blobs, with no
//! extracted directory, no root, no loop device and no mke2fs.
//!
//! Pass 1 ([`FsTree`]) gives the final tree; from it the whole layout is computed (inode
//! numbers, every directory's blocks, xattr and extent blocks, each file's data run), so
//! pass 2 streams each file's bytes from its layer into its final blocks; the metadata is
//! written last. Owners, modes, devices and xattrs come from the tar headers, so an
//! unprivileged user builds the same bytes as root.
//!
//! What the images have: 4 KiB blocks; 256-byte inodes with nanosecond times; extents
//! (depth 0 or 1); `filetype`, `dir_index` (half-MD4 htrees, one or two levels, for every
//! directory over one block), `ext_attr` (in-inode, else one shared block), `flex_bg`,
//! `sparse_super2` with no backup superblocks, `large_file`, `huge_file`, `dir_nlink`,
//! `extra_isize`; lost+found (inode 11 onwards, 16 KiB); a journal (inode 8, mke2fs's size
//! for the image, at least 4 MiB) unless asked not to. No `metadata_csum` and no group
//! descriptor checksums (the kernel and e2fsck accept this; checksums are a possible
//! addition). No resize inode, so the image cannot be grown online. Files are not made
//! sparse: zero blocks are written as data.
//!
//! Determinism: the UUID and the directory hash seed are derived from a key (the chain ID
//! or diff ID); superblock times are zero; an inode's atime, ctime and crtime are its
//! mtime; the allocation order is the tree's. The same tree and options give the same
//! bytes.

mod dir;
mod inode;
mod layout;
mod xattr;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use hoist_store::{ImageRecord, Store};
use hoist_types::{Digest, Progress};
use hoist_unpack::tree::{FsTree, InodeId, InodeKind};
use hoist_unpack::{Limits, Timestamp, UnpackError};

use crate::MkfsError;
use crate::data::{SeqWriter, SinkFactory, data_pass, path_of};
use crate::size::Size;
use dir::{DirEntry, ft};
use inode::{FL_EXTENTS, FL_INDEX, InodeFields};
use layout::{FIRST_INO, Geometry, JOURNAL_INO, SuperInfo};
use xattr::Placement;

pub(crate) const BLOCK: usize = 4096;
const B: u64 = BLOCK as u64;
/// Blocks of the lost+found directory hoist creates (as mke2fs: 16 KiB).
const LPF_BLOCKS: u64 = 4;
const MAX_LINKS: u32 = 65000;

/// How a native ext4 image is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Options {
    /// The image size: automatic (what the tree needs, plus 10% and 16 MiB, plus
    /// [`Ext4Options::free`]) or exact (an error if the tree does not fit).
    pub size: Size,
    /// A journal, so a guest can mount the image read-write safely. Off for read-only use.
    pub journal: bool,
    /// Extra free bytes on top of the automatic headroom (ignored with an exact size).
    pub free: u64,
}

impl Default for Ext4Options {
    fn default() -> Self {
        Ext4Options {
            size: Size::Auto,
            journal: true,
            free: 0,
        }
    }
}

/// Which tree of an image to write.
pub use crate::source::TreeSource as Ext4Source;

/// Writes an ext4 image of `image` at `out` (created or truncated) from the layer blobs in
/// `store`; returns its size in bytes.
pub fn build_ext4(
    store: &Store,
    image: &ImageRecord,
    source: Ext4Source,
    out: &Path,
    opts: &Ext4Options,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<u64, MkfsError> {
    let (tree, key) = source.tree(store, image, out, limits, progress)?;
    // Pass 2 on every core (up to 4): each layer's data goes to its own blocks.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    write_ext4(&tree, out, opts, key.as_bytes(), |make_sink| {
        tree.stream_data(image, progress, threads, make_sink)
    })
}

/// Whether the ext4 image at `path` has a journal (`None`: unreadable, or not ext4).
pub fn has_journal(path: &Path) -> Option<bool> {
    let f = File::open(path).ok()?;
    let mut sb = [0u8; 1024];
    f.read_exact_at(&mut sb, 1024).ok()?;
    (sb[0x38..0x3A] == 0xEF53u16.to_le_bytes()).then_some(sb[0x5C] & 0x4 != 0)
}

/// Per tree inode: where its blocks went.
#[derive(Debug, Clone, Default)]
struct Place {
    ino: u32,
    /// First block of its data (directory blocks, long symlink, file data); 0 if none.
    start: u64,
    blocks: u64,
    /// First extent leaf block (large files).
    leaves: u64,
    leaf_count: u64,
    xattr_block: u64,
    htree: bool,
}

/// Writes `tree` as an ext4 image at `out`. `stream` must deliver every regular file's
/// bytes through sinks it makes with the factory it is given, one sink per thread, as
/// [`FsTree::stream_data`] does: each
/// file's bytes in order through one sink; files in any order (each file's blocks are
/// placed before any byte arrives, so the image is the same whatever the order). `key`
/// seeds the UUID and the directory hash. Returns the image size in bytes.
pub fn write_ext4(
    tree: &FsTree,
    out: &Path,
    opts: &Ext4Options,
    key: &[u8],
    stream: impl for<'s> FnOnce(&'s SinkFactory<'s>) -> Result<(), UnpackError>,
) -> Result<u64, MkfsError> {
    let unsupported = |id: InodeId, reason: &'static str| MkfsError::Ext4Unsupported {
        image: out.to_path_buf(),
        path: path_of(tree, id),
        reason,
    };
    let uuid = derive(b"uuid", key);
    let hash_seed = derive(b"hash-seed", key);
    let seed: [u32; 4] = std::array::from_fn(|i| {
        u32::from_le_bytes(hash_seed[4 * i..4 * i + 4].try_into().unwrap())
    });
    let n = tree.inodes.len() as u64;
    if n + 20 > u64::from(u32::MAX) {
        return Err(unsupported(FsTree::ROOT, "more inodes than ext4 holds"));
    }
    let ino_of = |id: InodeId| {
        if id == FsTree::ROOT {
            2
        } else {
            FIRST_INO - 1 + id
        }
    };
    let root_entries = match &tree.inodes[0].kind {
        InodeKind::Dir { entries } => entries,
        _ => unreachable!("the root is a directory"),
    };
    let lpf_ino = (!root_entries.iter().any(|(n, _)| n == b"lost+found")).then(|| ino_of(n as u32));
    let used_inodes = u64::from(ino_of(n as u32 - 1)) + u64::from(lpf_ino.is_some());

    // Directory blocks, xattrs and block needs, in tree order.
    let mut places = vec![Place::default(); n as usize];
    let mut parents = vec![FsTree::ROOT; n as usize];
    let mut dir_blocks: HashMap<InodeId, Vec<u8>> = HashMap::new();
    let mut xattrs: Vec<Placement> = Vec::with_capacity(n as usize);
    let mut fixed_blocks = 0u64;
    let mut xattr_blocks: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut used_dirs: Vec<u32> = Vec::new();
    for (i, node) in tree.inodes.iter().enumerate() {
        let id = i as InodeId;
        places[i].ino = ino_of(id);
        let x = xattr::place(&node.xattrs, node.mode).map_err(|r| unsupported(id, r))?;
        if let Placement::Block(b) = &x
            && !xattr_blocks.contains_key(b)
        {
            xattr_blocks.insert(b.clone(), xattr_blocks.len());
            fixed_blocks += 1;
        }
        xattrs.push(x);
        match &node.kind {
            InodeKind::Dir { entries } => {
                let mut list: Vec<DirEntry<'_>> = Vec::with_capacity(entries.len() + 1);
                for (name, child) in entries {
                    if name.len() > 255 {
                        return Err(unsupported(*child, "name longer than 255 bytes"));
                    }
                    parents[*child as usize] = id;
                    list.push(DirEntry {
                        name,
                        ino: ino_of(*child),
                        ftype: file_type(&tree.inodes[*child as usize].kind),
                    });
                }
                if id == FsTree::ROOT
                    && let Some(l) = lpf_ino
                {
                    let at = list.partition_point(|e| e.name < &b"lost+found"[..]);
                    list.insert(
                        at,
                        DirEntry {
                            name: b"lost+found",
                            ino: l,
                            ftype: ft::DIR,
                        },
                    );
                }
                let parent = ino_of(parents[i]);
                let (blocks, htree) =
                    dir::build(ino_of(id), parent, &list, seed).map_err(|r| unsupported(id, r))?;
                places[i].blocks = (blocks.len() / BLOCK) as u64;
                places[i].htree = htree;
                fixed_blocks += places[i].blocks;
                dir_blocks.insert(id, blocks);
                used_dirs.push(ino_of(id));
            }
            InodeKind::Symlink(t) if t.len() >= 60 => {
                if t.len() >= BLOCK {
                    return Err(unsupported(id, "symlink target of 4096 bytes or more"));
                }
                places[i].blocks = 1;
                fixed_blocks += 1;
            }
            InodeKind::File { size } => {
                let blocks = size.div_ceil(B);
                let leaves = inode::leaf_blocks(blocks)
                    .ok_or_else(|| unsupported(id, "file too large for hoist's extent trees"))?;
                places[i].blocks = blocks;
                places[i].leaf_count = leaves;
                fixed_blocks += leaves;
                if node.nlink > MAX_LINKS {
                    return Err(unsupported(id, "more than 65000 hardlinks"));
                }
            }
            _ => {}
        }
    }
    let data_blocks: u64 = tree.data_order().map(|id| places[id as usize].blocks).sum();
    let lpf_blocks = if lpf_ino.is_some() { LPF_BLOCKS } else { 0 };
    let content = fixed_blocks + lpf_blocks + data_blocks;

    // Geometry: the exact size asked, or what the content needs plus headroom.
    let want_inodes = |blocks: u64| (used_inodes + used_inodes / 4 + 1024).max(blocks / 4);
    let journal_for = |blocks: u64| {
        if opts.journal {
            layout::journal_blocks(blocks)
        } else {
            0
        }
    };
    let geo = match opts.size {
        Size::Bytes(bytes) => {
            let blocks = bytes / B;
            let g = Geometry::new(blocks, want_inodes(blocks))
                .or_else(|| Geometry::new(blocks, used_inodes));
            match g {
                Some(g) if g.meta_end + journal_for(blocks) + content <= blocks => g,
                _ => {
                    let needed =
                        auto_geometry(content, used_inodes, opts, &want_inodes, &journal_for)
                            .map_or(u64::MAX, |g| g.blocks * B);
                    return Err(MkfsError::TooSmall {
                        size: bytes,
                        needed,
                        image: out.to_path_buf(),
                    });
                }
            }
        }
        Size::Auto => auto_geometry(content, used_inodes, opts, &want_inodes, &journal_for)
            .ok_or_else(|| unsupported(FsTree::ROOT, "too large for an ext4 image"))?,
    };
    let journal_blocks = journal_for(geo.blocks);

    // Allocation, in layout order.
    let mut cursor = geo.meta_end;
    let journal_start = cursor;
    cursor += journal_blocks;
    let lpf_start = cursor;
    cursor += lpf_blocks;
    let mut xattr_at: HashMap<usize, u64> = HashMap::new();
    for (i, node) in tree.inodes.iter().enumerate() {
        let p = &mut places[i];
        match &node.kind {
            InodeKind::Dir { .. } | InodeKind::Symlink(_) if p.blocks > 0 => {
                p.start = cursor;
                cursor += p.blocks;
            }
            _ => {}
        }
        if let Placement::Block(b) = &xattrs[i] {
            let k = xattr_blocks[b];
            p.xattr_block = *xattr_at.entry(k).or_insert_with(|| {
                cursor += 1;
                cursor - 1
            });
        }
        if p.leaf_count > 0 {
            p.leaves = cursor;
            cursor += p.leaf_count;
        }
    }
    for id in tree.data_order() {
        let p = &mut places[id as usize];
        p.start = cursor;
        cursor += p.blocks;
    }
    let used_blocks = cursor;
    debug_assert!(used_blocks <= geo.blocks);

    // The file, sparse, then the data of pass 2 straight into its blocks.
    let file = File::create(out).map_err(|e| MkfsError::io("create", out, e))?;
    file.set_len(geo.blocks * B)
        .map_err(|e| MkfsError::io("size", out, e))?;
    let put = |at: u64, bytes: &[u8]| {
        file.write_all_at(bytes, at)
            .map_err(|e| MkfsError::io("write", out, e))
    };

    // The metadata region (lost+found, directories, long symlinks, xattr and extent
    // blocks), written before the data: in tree order, which is block order, through one
    // coalescing writer instead of a copy of the whole region in memory, and each
    // directory's blocks dropped once written.
    let mut region = SeqWriter::new(&file);
    let mut region_put = |block: u64, bytes: &[u8]| {
        region
            .write_at(block * B, bytes)
            .map_err(|e| MkfsError::io("write", out, e))
    };
    let mut itable = vec![0u8; used_inodes as usize * inode::INODE_SIZE];
    let mut set_inode = |ino: u32, bytes: &[u8; inode::INODE_SIZE]| {
        let o = (ino as usize - 1) * inode::INODE_SIZE;
        itable[o..o + inode::INODE_SIZE].copy_from_slice(bytes);
    };
    if let Some(l) = lpf_ino {
        let (b, _) = dir::build(l, 2, &[], seed).expect("an empty directory");
        region_put(lpf_start, &b)?;
        // Empty blocks: one unused entry each.
        let mut empty = vec![0u8; BLOCK];
        empty[4..6].copy_from_slice(&(BLOCK as u16).to_le_bytes());
        for k in 1..LPF_BLOCKS {
            region_put(lpf_start + k, &empty)?;
        }
        let (iblock, _) = inode::extent_tree(&[(0, lpf_start, LPF_BLOCKS)], &[]);
        set_inode(
            l,
            &inode::encode(&InodeFields {
                mode: 0o040700,
                uid: 0,
                gid: 0,
                size: LPF_BLOCKS * B,
                mtime: Timestamp::default(),
                links: 2,
                sectors: LPF_BLOCKS * 8,
                flags: FL_EXTENTS,
                block: iblock,
                xattr_block: 0,
                xattrs: None,
            }),
        );
    }
    let mut refcounts: HashMap<u64, (u32, &Vec<u8>)> = HashMap::new();
    for (i, node) in tree.inodes.iter().enumerate() {
        let p = &places[i];
        let mut sectors = p.blocks * 8 + p.leaf_count * 8;
        let mut flags = 0u32;
        let (type_bits, size, block) = match &node.kind {
            InodeKind::Dir { .. } => {
                let b = dir_blocks
                    .remove(&(i as InodeId))
                    .expect("every directory was laid out");
                region_put(p.start, &b)?;
                flags |= FL_EXTENTS | if p.htree { FL_INDEX } else { 0 };
                let (ib, _) = inode::extent_tree(&[(0, p.start, p.blocks)], &[]);
                (0o040000, p.blocks * B, ib)
            }
            InodeKind::File { size } => {
                flags |= FL_EXTENTS;
                let runs: Vec<inode::Run> = if p.blocks > 0 {
                    vec![(0, p.start, p.blocks)]
                } else {
                    vec![]
                };
                let leaves: Vec<u64> = (0..p.leaf_count).map(|k| p.leaves + k).collect();
                let (ib, leaf_bytes) = inode::extent_tree(&runs, &leaves);
                for (at, b) in leaf_bytes {
                    region_put(at, &b)?;
                }
                (0o100000, *size, ib)
            }
            InodeKind::Symlink(t) if p.blocks > 0 => {
                region_put(p.start, t)?;
                flags |= FL_EXTENTS;
                let (ib, _) = inode::extent_tree(&[(0, p.start, 1)], &[]);
                (0o120000, t.len() as u64, ib)
            }
            InodeKind::Symlink(t) => {
                let mut ib = [0u8; 60];
                ib[..t.len()].copy_from_slice(t);
                (0o120000, t.len() as u64, ib)
            }
            InodeKind::Char { major, minor } => (0o020000, 0, inode::device_block(*major, *minor)),
            InodeKind::Block { major, minor } => (0o060000, 0, inode::device_block(*major, *minor)),
            InodeKind::Fifo => (0o010000, 0, [0u8; 60]),
        };
        let in_inode = match &xattrs[i] {
            Placement::Inode(a) => Some(a.clone()),
            Placement::Block(b) => {
                sectors += 8;
                // Written after the loop, with its reference count.
                refcounts.entry(p.xattr_block).or_insert((0, b)).0 += 1;
                None
            }
            Placement::None => None,
        };
        let links = match node.kind {
            InodeKind::Dir { .. }
                if node.nlink + u32::from(i == 0 && lpf_ino.is_some()) >= MAX_LINKS =>
            {
                1
            }
            InodeKind::Dir { .. } => node.nlink + u32::from(i == 0 && lpf_ino.is_some()),
            _ => node.nlink,
        };
        set_inode(
            p.ino,
            &inode::encode(&InodeFields {
                mode: (type_bits | (node.mode & 0o7777)) as u16,
                uid: node.uid,
                gid: node.gid,
                size,
                mtime: node.mtime,
                links: links as u16,
                sectors,
                flags,
                block,
                xattr_block: p.xattr_block,
                xattrs: in_inode,
            }),
        );
    }
    region.flush().map_err(|e| MkfsError::io("write", out, e))?;
    for (at, (count, b)) in refcounts {
        let mut block = b.clone();
        block[4..8].copy_from_slice(&count.to_le_bytes());
        put(at * B, &block)?;
    }

    // The journal.
    let journal = if journal_blocks > 0 {
        let (iblock, _) = inode::extent_tree(&[(0, journal_start, journal_blocks)], &[]);
        put(
            journal_start * B,
            &layout::journal_superblock(journal_blocks, &uuid),
        )?;
        set_inode(
            JOURNAL_INO,
            &inode::encode(&InodeFields {
                mode: 0o100600,
                uid: 0,
                gid: 0,
                size: journal_blocks * B,
                mtime: Timestamp::default(),
                links: 1,
                sectors: journal_blocks * 8,
                flags: FL_EXTENTS,
                block: iblock,
                xattr_block: 0,
                xattrs: None,
            }),
        );
        Some((iblock, journal_blocks * B))
    } else {
        None
    };
    put(geo.inode_offset(1), &itable)?;
    drop(itable);
    data_pass(
        &file,
        out,
        |w, id, off, bytes| {
            let p = &places[id as usize];
            if off + bytes.len() as u64 > p.blocks * B {
                return Err(UnpackError::Output {
                    source: std::io::Error::other("file data past its planned size"),
                });
            }
            w.write_at(p.start * B + off, bytes)
                .map_err(|source| UnpackError::Output { source })
        },
        stream,
    )?;
    let info = SuperInfo {
        used_blocks,
        used_inodes,
        uuid,
        hash_seed,
        journal,
    };
    let mut dirs_per_group = vec![0u32; geo.groups as usize];
    for ino in &used_dirs {
        dirs_per_group[((u64::from(*ino) - 1) / geo.inodes_per_group) as usize] += 1;
    }
    if let Some(l) = lpf_ino {
        dirs_per_group[((u64::from(l) - 1) / geo.inodes_per_group) as usize] += 1;
    }
    put(geo.block_bitmaps * B, &layout::bitmaps(&geo, &info))?;
    put(B, &layout::group_descriptors(&geo, &info, &dirs_per_group))?;
    put(1024, &layout::superblock(&geo, &info))?;
    file.sync_all().map_err(|e| MkfsError::io("sync", out, e))?;
    Ok(geo.blocks * B)
}

/// The smallest geometry (rounded to 4 MiB) that holds `content` blocks with headroom.
fn auto_geometry(
    content: u64,
    used_inodes: u64,
    opts: &Ext4Options,
    want_inodes: &dyn Fn(u64) -> u64,
    journal_for: &dyn Fn(u64) -> u64,
) -> Option<Geometry> {
    let mut blocks = 1024u64;
    for _ in 0..64 {
        let inodes = want_inodes(blocks);
        let groups_for_inodes = inodes.div_ceil(B * 8);
        blocks =
            blocks.max((groups_for_inodes.saturating_sub(1)) * layout::BLOCKS_PER_GROUP + 1024);
        let Some(g) = Geometry::new(blocks, inodes) else {
            // The inode tables alone do not fit yet.
            blocks = blocks.saturating_mul(2);
            continue;
        };
        let used = g.meta_end + journal_for(blocks) + content;
        let want =
            (used + used / 10 + (16 << 20) / B + opts.free.div_ceil(B)).div_ceil(1024) * 1024;
        if want <= blocks {
            return Some(g);
        }
        blocks = want;
    }
    let _ = used_inodes;
    None
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

/// 16 bytes derived from `key` for `what` (UUIDs get the version 4 / variant bits).
fn derive(what: &[u8], key: &[u8]) -> [u8; 16] {
    let mut input = b"hoist ext4 ".to_vec();
    input.extend_from_slice(what);
    input.push(0);
    input.extend_from_slice(key);
    let d = Digest::sha256_of(&input);
    let hex = d.hex().as_bytes();
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let h = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        *o = (h(hex[2 * i]) << 4) | h(hex[2 * i + 1]);
    }
    if what == b"uuid" {
        out[6] = (out[6] & 0x0F) | 0x40;
        out[8] = (out[8] & 0x3F) | 0x80;
    }
    out
}
