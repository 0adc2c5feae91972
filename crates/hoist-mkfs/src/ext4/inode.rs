//! Inodes (256 bytes, 32 extra bytes for nanosecond times) and extent trees.

use hoist_unpack::Timestamp;

use super::BLOCK;

pub(crate) const INODE_SIZE: usize = 256;
pub(crate) const EXTRA_ISIZE: u16 = 32;

pub(crate) const FL_INDEX: u32 = 0x1000;
pub(crate) const FL_EXTENTS: u32 = 0x8_0000;

const EXTENT_MAGIC: u16 = 0xF30A;
/// Blocks one initialized extent covers at most.
pub(crate) const MAX_EXTENT: u64 = 32768;
/// Extents in a leaf block.
const LEAF_EXTENTS: u64 = ((BLOCK - 12) / 12) as u64;

/// A run of blocks: `(logical, physical, len)`.
pub(crate) type Run = (u64, u64, u64);

/// Extent leaf blocks a file of `blocks` contiguous blocks needs; `None` when a depth-1
/// tree cannot map it.
pub(crate) fn leaf_blocks(blocks: u64) -> Option<u64> {
    let extents = blocks.div_ceil(MAX_EXTENT);
    if extents <= 4 {
        return Some(0);
    }
    let leaves = extents.div_ceil(LEAF_EXTENTS);
    (leaves <= 4).then_some(leaves)
}

/// The extents of `runs` (each split at [`MAX_EXTENT`]).
fn extents(runs: &[Run]) -> Vec<Run> {
    let mut out = Vec::new();
    for &(l, p, n) in runs {
        let mut done = 0;
        while done < n {
            let len = (n - done).min(MAX_EXTENT);
            out.push((l + done, p + done, len));
            done += len;
        }
    }
    out
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    buf[0..2].copy_from_slice(&EXTENT_MAGIC.to_le_bytes());
    buf[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    buf[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&depth.to_le_bytes());
}

fn put_extent(buf: &mut [u8], (l, p, n): Run) {
    buf[0..4].copy_from_slice(&(l as u32).to_le_bytes());
    buf[4..6].copy_from_slice(&(n as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&((p >> 32) as u16).to_le_bytes());
    buf[8..12].copy_from_slice(&(p as u32).to_le_bytes());
}

/// Builds the extent tree of `runs`: the 60 bytes of `i_block`, and the leaf blocks to
/// write at `leaves` (as many as [`leaf_blocks`] said).
pub(crate) fn extent_tree(runs: &[Run], leaves: &[u64]) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    let ext = extents(runs);
    let mut iblock = [0u8; 60];
    if ext.len() <= 4 {
        header(&mut iblock, ext.len(), 4, 0);
        for (i, e) in ext.iter().enumerate() {
            put_extent(&mut iblock[12 + 12 * i..], *e);
        }
        return (iblock, Vec::new());
    }
    let chunks: Vec<&[Run]> = ext.chunks(LEAF_EXTENTS as usize).collect();
    assert_eq!(
        chunks.len(),
        leaves.len(),
        "leaf blocks planned for this file"
    );
    header(&mut iblock, chunks.len(), 4, 1);
    let mut blocks = Vec::with_capacity(chunks.len());
    for (i, (chunk, &at)) in chunks.iter().zip(leaves).enumerate() {
        let o = 12 + 12 * i;
        iblock[o..o + 4].copy_from_slice(&(chunk[0].0 as u32).to_le_bytes());
        iblock[o + 4..o + 8].copy_from_slice(&(at as u32).to_le_bytes());
        iblock[o + 8..o + 10].copy_from_slice(&((at >> 32) as u16).to_le_bytes());
        let mut b = vec![0u8; BLOCK];
        header(&mut b, chunk.len(), LEAF_EXTENTS as usize, 0);
        for (j, e) in chunk.iter().enumerate() {
            put_extent(&mut b[12 + 12 * j..], *e);
        }
        blocks.push((at, b));
    }
    (iblock, blocks)
}

/// `i_block` of a device node (old encoding when both numbers fit a byte).
pub(crate) fn device_block(major: u32, minor: u32) -> [u8; 60] {
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        b[0..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
    } else {
        let v = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        b[4..8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// Everything an inode says.
#[derive(Debug, Clone)]
pub(crate) struct InodeFields {
    /// File type and permission bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub links: u16,
    /// 512-byte sectors.
    pub sectors: u64,
    pub flags: u32,
    pub block: [u8; 60],
    pub xattr_block: u64,
    /// The in-inode xattr area, if any.
    pub xattrs: Option<Vec<u8>>,
}

/// `(seconds as stored, extra)`: the low 32 bits of the seconds, and the epoch bits and
/// nanoseconds of `i_*_extra`.
fn encode_time(t: Timestamp) -> (u32, u32) {
    // Representable: -2^31 ..= 2^34 - 2^31 - 1 (epoch bits 0..=3).
    let secs = t.secs.clamp(-(1 << 31), (1i64 << 34) - (1 << 31) - 1);
    let lo = secs as i32;
    let epoch = ((secs - i64::from(lo)) >> 32) as u32 & 3;
    (lo as u32, (t.nanos.min(999_999_999) << 2) | epoch)
}

/// The 256 bytes of an inode; atime, ctime and crtime are the mtime (deterministic).
pub(crate) fn encode(f: &InodeFields) -> [u8; INODE_SIZE] {
    let mut b = [0u8; INODE_SIZE];
    let (t, extra) = encode_time(f.mtime);
    let le16 = |b: &mut [u8], o: usize, v: u16| b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let le32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    le16(&mut b, 0, f.mode);
    le16(&mut b, 2, f.uid as u16);
    le32(&mut b, 4, f.size as u32);
    le32(&mut b, 8, t);
    le32(&mut b, 12, t);
    le32(&mut b, 16, t);
    le16(&mut b, 24, f.gid as u16);
    le16(&mut b, 26, f.links);
    le32(&mut b, 28, f.sectors as u32);
    le32(&mut b, 32, f.flags);
    b[40..100].copy_from_slice(&f.block);
    le32(&mut b, 104, f.xattr_block as u32);
    le32(&mut b, 108, (f.size >> 32) as u32);
    le16(&mut b, 116, (f.sectors >> 32) as u16);
    le16(&mut b, 118, (f.xattr_block >> 32) as u16);
    le16(&mut b, 120, (f.uid >> 16) as u16);
    le16(&mut b, 122, (f.gid >> 16) as u16);
    le16(&mut b, 128, EXTRA_ISIZE);
    le32(&mut b, 132, extra);
    le32(&mut b, 136, extra);
    le32(&mut b, 140, extra);
    le32(&mut b, 144, t);
    le32(&mut b, 148, extra);
    if let Some(x) = &f.xattrs {
        b[128 + EXTRA_ISIZE as usize..].copy_from_slice(x);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_their_epoch() {
        for secs in [0i64, 1, -1, 1 << 31, (1 << 32) + 5, -(1 << 31)] {
            let (lo, extra) = encode_time(Timestamp { secs, nanos: 7 });
            let back = i64::from(lo as i32) + (i64::from(extra & 3) << 32);
            assert_eq!(back, secs);
            assert_eq!(extra >> 2, 7);
        }
    }

    #[test]
    fn large_files_get_a_leaf() {
        assert_eq!(leaf_blocks(4 * MAX_EXTENT), Some(0));
        assert_eq!(leaf_blocks(4 * MAX_EXTENT + 1), Some(1));
        let runs = [(0, 1000, 5 * MAX_EXTENT)];
        let (ib, leaves) = extent_tree(&runs, &[999]);
        assert_eq!(u16::from_le_bytes([ib[6], ib[7]]), 1);
        assert_eq!(leaves.len(), 1);
        assert_eq!(u16::from_le_bytes([leaves[0].1[2], leaves[0].1[3]]), 5);
    }
}
