//! The fixed metadata: geometry, superblock, group descriptors, bitmaps and the journal
//! superblock.
//!
//! Layout (4 KiB blocks, `flex_bg`, `sparse_super2` with no backup superblocks, so file data
//! runs contiguously):
//!
//! ```text
//! block 0                      boot sector + superblock (at byte 1024)
//! 1 .. 1+gdt                   group descriptors (32 bytes each, no 64bit)
//! then                         every group's block bitmap, then every inode bitmap
//! then                         every group's inode table (256-byte inodes)
//! then                         the journal (inode 8), when there is one
//! then                         lost+found, directories, long symlinks, xattr and
//!                              extent blocks, then file data in stream order
//! then                         free space
//! ```
//!
//! Every used block lies before `used_end`, so the block bitmaps are a prefix of ones; bits
//! past the end of the filesystem in the last group, and past `inodes_per_group` in the
//! inode bitmaps, are set (e2fsck checks this padding).

use super::BLOCK;
use super::inode::INODE_SIZE;

pub(crate) const BLOCKS_PER_GROUP: u64 = 32768;
const DESC_SIZE: u64 = 32;
pub(crate) const FIRST_INO: u32 = 11;
pub(crate) const JOURNAL_INO: u32 = 8;

/// Where everything fixed goes, for a filesystem of `blocks` blocks and `inodes` inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub blocks: u64,
    pub groups: u64,
    pub inodes_per_group: u64,
    pub gdt_blocks: u64,
    pub itable_blocks: u64,
    pub block_bitmaps: u64,
    pub inode_bitmaps: u64,
    pub inode_tables: u64,
    /// The first block after the inode tables.
    pub meta_end: u64,
}

impl Geometry {
    /// `None` when `inodes` do not fit in the groups `blocks` gives.
    pub(crate) fn new(blocks: u64, inodes: u64) -> Option<Geometry> {
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP).max(1);
        let per_block = (BLOCK / INODE_SIZE) as u64;
        let ipg = inodes
            .div_ceil(groups)
            .div_ceil(per_block)
            .max(1)
            .checked_mul(per_block)?;
        if ipg > BLOCK as u64 * 8 || ipg * groups > u64::from(u32::MAX) {
            return None;
        }
        let gdt_blocks = (groups * DESC_SIZE).div_ceil(BLOCK as u64);
        let itable_blocks = ipg / per_block;
        let block_bitmaps = 1 + gdt_blocks;
        let inode_bitmaps = block_bitmaps + groups;
        let inode_tables = inode_bitmaps + groups;
        let meta_end = inode_tables + groups * itable_blocks;
        // The last group must hold more than the metadata placed in it.
        (meta_end < blocks).then_some(Geometry {
            blocks,
            groups,
            inodes_per_group: ipg,
            gdt_blocks,
            itable_blocks,
            block_bitmaps,
            inode_bitmaps,
            inode_tables,
            meta_end,
        })
    }

    pub(crate) fn inodes(&self) -> u64 {
        self.groups * self.inodes_per_group
    }

    /// Byte offset of inode `ino` (1-based): the tables are contiguous, group after group.
    pub(crate) fn inode_offset(&self, ino: u32) -> u64 {
        self.inode_tables * BLOCK as u64 + u64::from(ino - 1) * INODE_SIZE as u64
    }
}

/// What the superblock says beyond the geometry.
#[derive(Debug, Clone)]
pub(crate) struct SuperInfo {
    pub used_blocks: u64,
    pub used_inodes: u64,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    /// The journal inode's `i_block` and size, when there is a journal.
    pub journal: Option<([u8; 60], u64)>,
}

fn le16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn le32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// The 1024-byte superblock. All times are zero (deterministic bytes).
pub(crate) fn superblock(g: &Geometry, s: &SuperInfo) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    let free_blocks = g.blocks - s.used_blocks;
    let free_inodes = g.inodes() - s.used_inodes;
    le32(&mut b, 0x00, g.inodes() as u32);
    le32(&mut b, 0x04, g.blocks as u32);
    le32(&mut b, 0x0C, free_blocks as u32);
    le32(&mut b, 0x10, free_inodes as u32);
    le32(&mut b, 0x14, 0); // first data block
    le32(&mut b, 0x18, 2); // 4 KiB blocks
    le32(&mut b, 0x1C, 2);
    le32(&mut b, 0x20, BLOCKS_PER_GROUP as u32);
    le32(&mut b, 0x24, BLOCKS_PER_GROUP as u32);
    le32(&mut b, 0x28, g.inodes_per_group as u32);
    le16(&mut b, 0x36, 0xFFFF); // max mount count: -1, no forced checks
    le16(&mut b, 0x38, 0xEF53);
    le16(&mut b, 0x3A, 1); // clean
    le16(&mut b, 0x3C, 1); // errors: continue
    le32(&mut b, 0x4C, 1); // dynamic revision
    le32(&mut b, 0x54, FIRST_INO);
    le16(&mut b, 0x58, INODE_SIZE as u16);
    let mut compat = 0x8 | 0x20 | 0x200; // ext_attr, dir_index, sparse_super2
    if s.journal.is_some() {
        compat |= 0x4;
    }
    le32(&mut b, 0x5C, compat);
    le32(&mut b, 0x60, 0x2 | 0x40 | 0x200); // filetype, extents, flex_bg
    // sparse_super, large_file, huge_file, dir_nlink, extra_isize
    le32(&mut b, 0x64, 0x1 | 0x2 | 0x8 | 0x20 | 0x40);
    b[0x68..0x78].copy_from_slice(&s.uuid);
    if let Some((iblock, size)) = &s.journal {
        le32(&mut b, 0xE0, JOURNAL_INO);
        b[0xFD] = 1; // s_jnl_backup_type: the journal inode's blocks
        b[0x10C..0x10C + 60].copy_from_slice(iblock);
        le32(&mut b, 0x10C + 60, (size >> 32) as u32);
        le32(&mut b, 0x10C + 64, *size as u32);
    }
    b[0xEC..0xFC].copy_from_slice(&s.hash_seed);
    b[0xFC] = super::dir::HASH_HALF_MD4;
    le32(&mut b, 0x100, 0x4 | 0x8); // default mount options: user_xattr, acl
    le32(&mut b, 0x150, (g.blocks >> 32) as u32);
    le32(&mut b, 0x158, (free_blocks >> 32) as u32);
    le16(&mut b, 0x15C, super::inode::EXTRA_ISIZE);
    le16(&mut b, 0x15E, super::inode::EXTRA_ISIZE);
    le32(&mut b, 0x160, 0x2); // unsigned directory hash
    b[0x174] = 4; // 16 groups per flex group (an allocator hint)
    // s_backup_bgs (0x24C) stay 0: no backup superblocks.
    b
}

/// The group descriptor table: `used_dirs[g]` directories per group.
pub(crate) fn group_descriptors(g: &Geometry, s: &SuperInfo, used_dirs: &[u32]) -> Vec<u8> {
    let mut b = vec![0u8; (g.gdt_blocks * BLOCK as u64) as usize];
    for grp in 0..g.groups {
        let o = (grp * DESC_SIZE) as usize;
        let first = grp * BLOCKS_PER_GROUP;
        let last = ((grp + 1) * BLOCKS_PER_GROUP).min(g.blocks);
        let used = s.used_blocks.clamp(first, last) - first;
        let free_blocks = last - first - used;
        let first_ino = grp * g.inodes_per_group;
        let used_ino = s
            .used_inodes
            .clamp(first_ino, first_ino + g.inodes_per_group)
            - first_ino;
        let free_inodes = g.inodes_per_group - used_ino;
        le32(&mut b, o, (g.block_bitmaps + grp) as u32);
        le32(&mut b, o + 4, (g.inode_bitmaps + grp) as u32);
        le32(
            &mut b,
            o + 8,
            (g.inode_tables + grp * g.itable_blocks) as u32,
        );
        le16(&mut b, o + 12, free_blocks as u16);
        le16(&mut b, o + 14, free_inodes as u16);
        le16(
            &mut b,
            o + 16,
            used_dirs.get(grp as usize).copied().unwrap_or(0) as u16,
        );
    }
    b
}

/// Sets bits `from..to` of `bits`.
fn set_bits(bits: &mut [u8], from: u64, to: u64) {
    let mut i = from;
    while i < to {
        if i.is_multiple_of(8) && i + 8 <= to {
            bits[(i / 8) as usize] = 0xFF;
            i += 8;
        } else {
            bits[(i / 8) as usize] |= 1 << (i % 8);
            i += 1;
        }
    }
}

/// Every block bitmap then every inode bitmap, as one run of blocks.
pub(crate) fn bitmaps(g: &Geometry, s: &SuperInfo) -> Vec<u8> {
    let n = g.groups as usize;
    let mut out = vec![0u8; 2 * n * BLOCK];
    let bits = BLOCK as u64 * 8;
    for grp in 0..g.groups {
        let first = grp * BLOCKS_PER_GROUP;
        let len = (g.blocks - first).min(BLOCKS_PER_GROUP);
        let used = s.used_blocks.clamp(first, first + len) - first;
        let bb = &mut out[grp as usize * BLOCK..(grp as usize + 1) * BLOCK];
        set_bits(bb, 0, used);
        set_bits(bb, len, bits); // padding past the end of the filesystem
        let first_ino = grp * g.inodes_per_group;
        let used_ino = s
            .used_inodes
            .clamp(first_ino, first_ino + g.inodes_per_group)
            - first_ino;
        let ib = &mut out[(n + grp as usize) * BLOCK..(n + grp as usize + 1) * BLOCK];
        set_bits(ib, 0, used_ino);
        set_bits(ib, g.inodes_per_group, bits); // padding past the group's inodes
    }
    out
}

/// The jbd2 superblock (v2, big-endian) of an empty, clean internal journal of `blocks`.
pub(crate) fn journal_superblock(blocks: u64, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    let be32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_be_bytes());
    be32(&mut b, 0x0, 0xC03B_3998);
    be32(&mut b, 0x4, 4); // superblock v2
    be32(&mut b, 0xC, BLOCK as u32);
    be32(&mut b, 0x10, blocks as u32);
    be32(&mut b, 0x14, 1); // first log block
    be32(&mut b, 0x18, 1); // first expected sequence
    b[0x30..0x40].copy_from_slice(uuid);
    be32(&mut b, 0x40, 1); // users
    b
}

/// The journal size mke2fs picks for a filesystem of `blocks` 4 KiB blocks
/// (`ext2fs_default_journal_size`), at least 1024 blocks, at most 32768 (128 MiB).
pub(crate) fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 32_768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16_384,
        _ => 32_768,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_fits() {
        let g = Geometry::new(70_000, 5000).unwrap();
        assert_eq!(g.groups, 3);
        assert_eq!(g.inodes_per_group % 16, 0);
        assert!(g.inodes() >= 5000);
        assert_eq!(g.meta_end, 1 + 1 + 3 + 3 + 3 * g.itable_blocks);
        assert!(Geometry::new(100, 1_000_000).is_none());
    }

    #[test]
    fn bitmap_padding_is_set() {
        let g = Geometry::new(40_000, 100).unwrap();
        let s = SuperInfo {
            used_blocks: 100,
            used_inodes: 20,
            uuid: [0; 16],
            hash_seed: [0; 16],
            journal: None,
        };
        let b = bitmaps(&g, &s);
        // Group 1 has 40000 - 32768 = 7232 blocks; the rest of its bitmap is padding.
        let bb1 = &b[BLOCK..2 * BLOCK];
        assert_eq!(bb1[0], 0);
        assert_eq!(bb1[7232 / 8], 0xFF);
        assert_eq!(bb1[7232 / 8 - 1], 0);
        let ib0 = &b[2 * BLOCK..3 * BLOCK];
        assert_eq!(ib0[0], 0xFF);
        assert_eq!(ib0[2], 0b1111);
        assert_eq!(ib0[BLOCK - 1], 0xFF);
    }
}
