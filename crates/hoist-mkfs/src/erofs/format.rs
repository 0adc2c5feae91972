//! The erofs on-disk structures hoist writes, encoded little-endian. Facts from the
//! kernel's `Documentation/filesystems/erofs.rst` and erofs-utils' `include/erofs_fs.h`:
//!
//! - the superblock (128 bytes written; the rest of its block zero) at byte 1024;
//! - inodes at `meta_blkaddr * 4096 + nid * 32`: compact (32 bytes: 16-bit owners and
//!   link count, 32-bit size, the superblock's time) or extended (64 bytes);
//! - `i_format` = version bit (0 compact, 1 extended) | data layout << 1, the layouts hoist
//!   uses being flat plain (0: whole blocks from `i_u`) and flat inline (2: whole blocks
//!   from `i_u`, the tail right after the inode and its xattrs, in the same block);
//! - after the inode, when it has xattrs, a 12-byte header (its shared count, then that
//!   many 4-byte ids of entries in the shared area) and the inline entries; an entry is
//!   `name_len: u8, name_index: u8, value_size: u16`, the name without its prefix, the
//!   value, padded to 4 bytes;
//! - directory data: blocks of 12-byte dirents (`nid: u64, nameoff: u16, file_type: u8`)
//!   then the names, unterminated; every name in the directory sorted by bytes (`.` and
//!   `..` included), as lookups binary-search the blocks and then each block.
//!
//! The tar index (erofs-utils' `mkfs.erofs --tar=i` layout) adds, from the same sources:
//!
//! - 512-byte blocks (`blkszbits` 9), so that a file's data in a tar (512-aligned) can be
//!   addressed by block;
//! - a device table (`feature_incompat` DEVICE_TABLE): `extra_devices` slots of 128 bytes
//!   at byte `devt_slotoff * 128`, each a 64-byte tag, the device's size in blocks
//!   (`blocks_lo`) and its place in a unified address space (`uniaddr_lo`, 0: none, the
//!   device is addressed by its id);
//! - chunk-based regular files (`feature_incompat` CHUNKED_FILE, layout 4): `i_u` holds
//!   the chunk format (chunk size = block size << low 5 bits; bit 0x20: 8-byte indexes
//!   with a device id), and after the inode and its xattrs, aligned to 8 bytes, one index
//!   per chunk (`startblk_hi: u16, device_id: u16, startblk_lo: u32`); device id 0 is the
//!   image itself, 1.. the extra devices in table order.

use hoist_unpack::Timestamp;

pub(crate) const BLOCK: usize = 4096;
pub(crate) const B: u64 = BLOCK as u64;
const MAGIC: u32 = 0xE0F5_E1E2;
pub(crate) const SUPER_OFFSET: usize = 1024;
pub(crate) const COMPACT_SIZE: usize = 32;
pub(crate) const EXTENDED_SIZE: usize = 64;
pub(crate) const LAYOUT_FLAT_PLAIN: u16 = 0;
pub(crate) const LAYOUT_FLAT_INLINE: u16 = 2;
pub(crate) const LAYOUT_CHUNK_BASED: u16 = 4;
/// `feature_incompat` bits of the tar index.
pub(crate) const INCOMPAT_CHUNKED_FILE: u32 = 0x4;
pub(crate) const INCOMPAT_DEVICE_TABLE: u32 = 0x8;
/// Chunk format flag: 8-byte chunk indexes (with a device id).
const CHUNK_FORMAT_INDEXES: u16 = 0x20;
/// Largest chunk-size shift over the block size the chunk format holds.
const CHUNK_BLKBITS_MAX: u32 = 0x1F;
/// Bytes of one chunk index.
pub(crate) const CHUNK_INDEX: u64 = 8;
/// Bytes of one device slot.
pub(crate) const DEVICE_SLOT: usize = 128;
pub(crate) const XATTR_HEADER: usize = 12;
const DIRENT: usize = 12;
/// The longest name a dirent holds.
pub(crate) const NAME_MAX: usize = 255;

/// Dirent file types.
pub(crate) mod ft {
    pub(crate) const REG: u8 = 1;
    pub(crate) const DIR: u8 = 2;
    pub(crate) const CHR: u8 = 3;
    pub(crate) const BLK: u8 = 4;
    pub(crate) const FIFO: u8 = 5;
    pub(crate) const SYMLINK: u8 = 7;
}

/// What the superblock says.
pub(crate) struct SuperBlock {
    pub root_nid: u16,
    pub inos: u64,
    /// The time of compact inodes (seconds, nanoseconds).
    pub epoch: u64,
    pub fixed_nsec: u32,
    pub blocks: u32,
    pub meta_blkaddr: u32,
    pub xattr_blkaddr: u32,
    pub uuid: [u8; 16],
    /// Block size shift: 12 (4 KiB), or 9 for a tar index.
    pub blkszbits: u8,
    /// 0, or the tar index's CHUNKED_FILE | DEVICE_TABLE.
    pub feature_incompat: u32,
    /// Devices besides the image.
    pub extra_devices: u16,
    /// Where the device table starts, in 128-byte slots from the image's start.
    pub devt_slotoff: u16,
}

impl SuperBlock {
    /// The 128 bytes at [`SUPER_OFFSET`]. No feature bits for a full image: it is
    /// readable by every erofs implementation (Linux 5.4 onwards, erofs-utils 1.x); a tar
    /// index needs chunk-based files and the device table (Linux 5.16 onwards; 512-byte
    /// blocks need 6.4, device paths that are files 6.12).
    pub(crate) fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        // 4: checksum (no SB_CHKSUM feature), 8: feature_compat
        b[12] = self.blkszbits;
        // 13: sb_extslots
        b[14..16].copy_from_slice(&self.root_nid.to_le_bytes());
        b[16..24].copy_from_slice(&self.inos.to_le_bytes());
        b[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        b[32..36].copy_from_slice(&self.fixed_nsec.to_le_bytes());
        b[36..40].copy_from_slice(&self.blocks.to_le_bytes());
        b[40..44].copy_from_slice(&self.meta_blkaddr.to_le_bytes());
        b[44..48].copy_from_slice(&self.xattr_blkaddr.to_le_bytes());
        b[48..64].copy_from_slice(&self.uuid);
        // 64..80: volume name
        b[80..84].copy_from_slice(&self.feature_incompat.to_le_bytes());
        // 84: compression algorithms (none)
        b[86..88].copy_from_slice(&self.extra_devices.to_le_bytes());
        b[88..90].copy_from_slice(&self.devt_slotoff.to_le_bytes());
        // 90: dirblkbits (0: the block size)
        b
    }
}

/// One device slot: `tag` (the first 64 bytes; the kernel opens it as a path when the
/// mount names no device) and the device's size in blocks.
pub(crate) fn device_slot(tag: &[u8], blocks: u32) -> [u8; DEVICE_SLOT] {
    let mut b = [0u8; DEVICE_SLOT];
    let n = tag.len().min(64);
    b[..n].copy_from_slice(&tag[..n]);
    b[64..68].copy_from_slice(&blocks.to_le_bytes());
    // 68: uniaddr_lo 0 (not in a unified address space), 72: the high halves (48-bit off)
    b
}

/// The chunk layout of a file of `size` bytes (> 0) with blocks of `1 << blkszbits`, as
/// erofs-utils chooses it for a tar index: one chunk as large as the file (rounded up to a
/// power of two), at most `block << 31`. Returns `(i_u chunk format, chunk size, chunk
/// count)`.
pub(crate) fn chunk_layout(size: u64, blkszbits: u32) -> (u32, u64, u64) {
    let bits = (64 - (size.max(2) - 1).leading_zeros())
        .max(blkszbits)
        .min(blkszbits + CHUNK_BLKBITS_MAX);
    let chunk = 1u64 << bits;
    let format = (bits - blkszbits) as u16 | CHUNK_FORMAT_INDEXES;
    (u32::from(format), chunk, size.div_ceil(chunk))
}

/// Appends one chunk index: the chunk's first block on device `device` (32-bit block
/// numbers: the 48-bit feature is off).
pub(crate) fn put_chunk_index(device: u16, blkaddr: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&device.to_le_bytes());
    out.extend_from_slice(&blkaddr.to_le_bytes());
}

/// One inode's fields.
pub(crate) struct InodeFields {
    pub extended: bool,
    pub layout: u16,
    /// Bytes of the xattr body (0, or at least [`XATTR_HEADER`]).
    pub xattr_bytes: usize,
    /// Type bits and permissions.
    pub mode: u16,
    pub nlink: u32,
    pub size: u64,
    /// The first data block (flat layouts) or the device number.
    pub u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    /// Written in extended inodes only (compact ones have the superblock's).
    pub mtime: Timestamp,
}

/// The `i_xattr_icount` for an xattr body of `bytes`.
pub(crate) fn xattr_icount(bytes: usize) -> u16 {
    if bytes == 0 {
        0
    } else {
        (1 + (bytes - XATTR_HEADER) / 4) as u16
    }
}

/// Appends the inode (32 or 64 bytes).
pub(crate) fn put_inode(f: &InodeFields, out: &mut Vec<u8>) {
    let format = u16::from(f.extended) | (f.layout << 1);
    let icount = xattr_icount(f.xattr_bytes);
    let at = out.len();
    if f.extended {
        out.resize(at + EXTENDED_SIZE, 0);
        let b = &mut out[at..];
        b[0..2].copy_from_slice(&format.to_le_bytes());
        b[2..4].copy_from_slice(&icount.to_le_bytes());
        b[4..6].copy_from_slice(&f.mode.to_le_bytes());
        // 6: i_nb (unused without the 48-bit feature)
        b[8..16].copy_from_slice(&f.size.to_le_bytes());
        b[16..20].copy_from_slice(&f.u.to_le_bytes());
        b[20..24].copy_from_slice(&f.ino.to_le_bytes());
        b[24..28].copy_from_slice(&f.uid.to_le_bytes());
        b[28..32].copy_from_slice(&f.gid.to_le_bytes());
        b[32..40].copy_from_slice(&(f.mtime.secs as u64).to_le_bytes());
        b[40..44].copy_from_slice(&f.mtime.nanos.to_le_bytes());
        b[44..48].copy_from_slice(&f.nlink.to_le_bytes());
    } else {
        out.resize(at + COMPACT_SIZE, 0);
        let b = &mut out[at..];
        b[0..2].copy_from_slice(&format.to_le_bytes());
        b[2..4].copy_from_slice(&icount.to_le_bytes());
        b[4..6].copy_from_slice(&f.mode.to_le_bytes());
        b[6..8].copy_from_slice(&(f.nlink as u16).to_le_bytes());
        b[8..12].copy_from_slice(&(f.size as u32).to_le_bytes());
        // 12: i_mtime, seconds after the superblock's epoch: 0 (see `compact_fits`)
        b[16..20].copy_from_slice(&f.u.to_le_bytes());
        b[20..24].copy_from_slice(&f.ino.to_le_bytes());
        b[24..26].copy_from_slice(&(f.uid as u16).to_le_bytes());
        b[26..28].copy_from_slice(&(f.gid as u16).to_le_bytes());
    }
}

/// Whether a compact inode holds these fields: 16-bit owners and links, a 32-bit size,
/// and exactly the superblock's time (older readers take a compact inode's time from the
/// superblock; newer ones add `i_mtime`, which hoist leaves 0, so both agree).
pub(crate) fn compact_fits(
    uid: u32,
    gid: u32,
    nlink: u32,
    size: u64,
    mtime: Timestamp,
    epoch: (u64, u32),
) -> bool {
    uid <= 0xFFFF
        && gid <= 0xFFFF
        && nlink <= 0xFFFF
        && size <= u64::from(u32::MAX)
        && mtime.secs >= 0
        && (mtime.secs as u64, mtime.nanos) == epoch
}

/// The kernel's `new_encode_dev`: 12-bit major, 20-bit minor; `None` when they do not fit.
pub(crate) fn rdev(major: u32, minor: u32) -> Option<u32> {
    (major < (1 << 12) && minor < (1 << 20))
        .then_some((minor & 0xFF) | (major << 8) | ((minor & !0xFF) << 12))
}

/// An xattr name's prefix index and the rest of the name; `None` for a name no index
/// covers (erofs without long prefixes stores only these).
pub(crate) fn split_xattr_name(name: &[u8]) -> Option<(u8, &[u8])> {
    match name {
        b"system.posix_acl_access" => return Some((2, b"")),
        b"system.posix_acl_default" => return Some((3, b"")),
        _ => {}
    }
    for (prefix, index) in [
        (&b"user."[..], 1u8),
        (b"trusted.", 4),
        (b"lustre.", 5),
        (b"security.", 6),
    ] {
        if let Some(rest) = name.strip_prefix(prefix)
            && !rest.is_empty()
        {
            return Some((index, rest));
        }
    }
    None
}

/// An access ACL (the VFS form, version 2) brought in line with the permission bits as
/// the kernel's chmod does (the unpack sets xattrs, then the mode): the owner, the mask
/// (or the group, without a mask) and other take the mode's bits.
pub(crate) fn acl_chmod(v: &[u8], mode: u32) -> Result<Vec<u8>, &'static str> {
    const BAD: &str = "malformed POSIX ACL xattr";
    if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) || v[..4] != 2u32.to_le_bytes() {
        return Err(BAD);
    }
    let has_mask = v[4..].chunks(8).any(|e| e[..2] == 0x10u16.to_le_bytes());
    let mut out = v.to_vec();
    for e in out[4..].chunks_mut(8) {
        let perm = match u16::from_le_bytes([e[0], e[1]]) {
            0x01 => (mode >> 6) & 7,
            0x10 => (mode >> 3) & 7,
            0x04 if !has_mask => (mode >> 3) & 7,
            0x20 => mode & 7,
            0x02 | 0x04 | 0x08 => continue,
            _ => return Err(BAD),
        };
        e[2..4].copy_from_slice(&(perm as u16).to_le_bytes());
    }
    Ok(out)
}

/// Bytes of one xattr entry (padded to 4).
pub(crate) fn xattr_entry_len(suffix_len: usize, value_len: usize) -> usize {
    (4 + suffix_len + value_len).next_multiple_of(4)
}

/// Appends one xattr entry (padded to 4).
pub(crate) fn put_xattr_entry(index: u8, suffix: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let at = out.len();
    out.push(suffix.len() as u8);
    out.push(index);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(suffix);
    out.extend_from_slice(value);
    out.resize(at + xattr_entry_len(suffix.len(), value.len()), 0);
}

/// Splits names (sorted) into directory blocks: the number of entries in each block.
pub(crate) fn dir_blocks<'a>(names: impl Iterator<Item = &'a [u8]>, block: usize) -> Vec<usize> {
    let mut blocks = Vec::new();
    let (mut count, mut used) = (0usize, 0usize);
    for name in names {
        let need = DIRENT + name.len();
        if used + need > block {
            blocks.push(count);
            (count, used) = (0, 0);
        }
        count += 1;
        used += need;
    }
    if count > 0 {
        blocks.push(count);
    }
    blocks
}

/// A directory's size from its names (sorted, `.` and `..` included): `(blocks, bytes
/// used in the last block)`.
pub(crate) fn dir_size<'a>(
    names: impl Iterator<Item = &'a [u8]> + Clone,
    block: usize,
) -> (u64, usize) {
    let split = dir_blocks(names.clone(), block);
    let mut it = names;
    let mut last = 0;
    for (i, &n) in split.iter().enumerate() {
        let used: usize = (0..n)
            .map(|_| DIRENT + it.next().map_or(0, <[u8]>::len))
            .sum();
        if i + 1 == split.len() {
            last = used;
        }
    }
    (split.len() as u64, last)
}

/// Appends the directory blocks of `entries` (`(name, nid, file type)`, sorted by name):
/// every block (of `block` bytes) but the last padded, the last only as long as it is
/// used.
pub(crate) fn put_dir(entries: &[(&[u8], u64, u8)], block: usize, out: &mut Vec<u8>) {
    let split = dir_blocks(entries.iter().map(|e| e.0), block);
    let mut next = 0;
    for (i, &n) in split.iter().enumerate() {
        let start = out.len();
        let run = &entries[next..next + n];
        next += n;
        let mut nameoff = DIRENT * n;
        for (name, nid, ftype) in run {
            out.extend_from_slice(&nid.to_le_bytes());
            out.extend_from_slice(&(nameoff as u16).to_le_bytes());
            out.push(*ftype);
            out.push(0);
            nameoff += name.len();
        }
        for (name, _, _) in run {
            out.extend_from_slice(name);
        }
        if i + 1 < split.len() {
            out.resize(start + block, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_a_file_in_one_index_where_they_can() {
        // Block-sized files and smaller: one block-sized chunk.
        assert_eq!(chunk_layout(1, 9), (0x20, 512, 1));
        assert_eq!(chunk_layout(512, 9), (0x20, 512, 1));
        // One byte more: the next power of two.
        assert_eq!(chunk_layout(513, 9), (0x21, 1024, 1));
        assert_eq!(chunk_layout(100_000, 9), (0x20 | 8, 131_072, 1));
        // The largest chunk is 512 << 31 = 1 TiB: larger files take several.
        assert_eq!(chunk_layout(3 << 40, 9), (0x20 | 31, 1 << 40, 3));
        let mut out = Vec::new();
        put_chunk_index(3, 0x0102_0304, &mut out);
        assert_eq!(out, [0, 0, 3, 0, 4, 3, 2, 1]);
    }

    #[test]
    fn device_numbers_encode_like_the_kernel() {
        assert_eq!(rdev(8, 1), Some(0x801));
        assert_eq!(
            rdev(300, 70000),
            Some((70000 & 0xFF) | (300 << 8) | (0x11100 << 12))
        );
        assert_eq!(rdev(4096, 0), None);
        assert_eq!(rdev(0, 1 << 20), None);
    }

    #[test]
    fn access_acls_follow_the_mode() {
        let entry = |tag: u16, perm: u16, id: u32| {
            let mut e = tag.to_le_bytes().to_vec();
            e.extend_from_slice(&perm.to_le_bytes());
            e.extend_from_slice(&id.to_le_bytes());
            e
        };
        let acl = |parts: &[Vec<u8>]| {
            let mut v = 2u32.to_le_bytes().to_vec();
            parts.iter().for_each(|p| v.extend_from_slice(p));
            v
        };
        let with_mask = acl(&[
            entry(1, 6, u32::MAX),
            entry(2, 4, 1000),
            entry(4, 4, u32::MAX),
            entry(0x10, 7, u32::MAX),
            entry(0x20, 0, u32::MAX),
        ]);
        // chmod 0751: owner 7, mask 5, other 1; the group and named entries keep theirs.
        assert_eq!(
            acl_chmod(&with_mask, 0o751).unwrap(),
            acl(&[
                entry(1, 7, u32::MAX),
                entry(2, 4, 1000),
                entry(4, 4, u32::MAX),
                entry(0x10, 5, u32::MAX),
                entry(0x20, 1, u32::MAX),
            ])
        );
        let no_mask = acl(&[
            entry(1, 6, u32::MAX),
            entry(4, 4, u32::MAX),
            entry(0x20, 0, u32::MAX),
        ]);
        assert_eq!(
            acl_chmod(&no_mask, 0o640).unwrap(),
            acl(&[
                entry(1, 6, u32::MAX),
                entry(4, 4, u32::MAX),
                entry(0x20, 0, u32::MAX)
            ])
        );
        assert!(acl_chmod(&[1, 0, 0, 0], 0o644).is_err());
        assert!(acl_chmod(&acl(&[entry(0x40, 1, 0)]), 0o644).is_err());
    }

    #[test]
    fn xattr_names_take_their_index() {
        assert_eq!(split_xattr_name(b"user.a"), Some((1, &b"a"[..])));
        assert_eq!(
            split_xattr_name(b"system.posix_acl_access"),
            Some((2, &b""[..]))
        );
        assert_eq!(
            split_xattr_name(b"trusted.overlay.opaque"),
            Some((4, &b"overlay.opaque"[..]))
        );
        assert_eq!(
            split_xattr_name(b"security.capability"),
            Some((6, &b"capability"[..]))
        );
        assert_eq!(split_xattr_name(b"system.other"), None);
        assert_eq!(split_xattr_name(b"user."), None);
    }

    #[test]
    fn directory_blocks_split_where_the_next_entry_does_not_fit() {
        let names: Vec<Vec<u8>> = (0..400).map(|i| format!("{i:08}").into_bytes()).collect();
        // 20 bytes per entry: 204 in a block.
        let split = dir_blocks(names.iter().map(|n| &n[..]), BLOCK);
        assert_eq!(split, vec![204, 196]);
        assert_eq!(dir_size(names.iter().map(|n| &n[..]), BLOCK), (2, 196 * 20));
        // 512-byte blocks (a tar index): 25 entries in a block.
        assert_eq!(dir_blocks(names.iter().map(|n| &n[..]), 512), vec![25; 16]);
        let entries: Vec<(&[u8], u64, u8)> =
            names.iter().map(|n| (&n[..], 7u64, ft::REG)).collect();
        let mut out = Vec::new();
        put_dir(&entries, BLOCK, &mut out);
        assert_eq!(out.len(), BLOCK + 196 * 20);
        // The first dirent's nameoff gives the number of entries in the block.
        assert_eq!(u16::from_le_bytes([out[8], out[9]]), 204 * 12);
        assert_eq!(&out[204 * 12..204 * 12 + 8], b"00000000");
        let second = &out[BLOCK..];
        assert_eq!(u16::from_le_bytes([second[8], second[9]]), 196 * 12);
    }
}
