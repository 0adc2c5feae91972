//! dm-verity hash trees appended to an image, in the layout `veritysetup` reads.
//!
//! After the filesystem's last block (the hash offset) comes a 512-byte verity superblock
//! (padded to a 4 KiB hash block) and then the hash tree: format version 1, SHA-256, 4 KiB
//! data and hash blocks, each hash `sha256(salt || block)`, 128 hashes to a hash block
//! (zero-padded), the top level first and the level over the data blocks last. The salt
//! and the superblock's UUID are derived from a key (the chain ID or diff ID), so the same
//! image gives the same tree and root hash.
//!
//! `veritysetup verify IMAGE IMAGE ROOT_HASH --hash-offset=HASH_OFFSET` checks it, and
//! `veritysetup open` with the same arguments maps it; the filesystem inside is unchanged
//! and mounts as before (both ext4 and erofs ignore what follows their last block).

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use hoist_types::{Algorithm, Digest, Hasher};
use hoist_unpack::UnpackError;
use serde::Serialize;

use crate::MkfsError;

const BLOCK: u64 = 4096;
const HASH: usize = 32;
const PER_BLOCK: u64 = BLOCK / HASH as u64;

/// What a runtime needs to open an image with dm-verity (`veritysetup open IMAGE NAME
/// IMAGE ROOT_HASH --hash-offset=HASH_OFFSET`, or the same in a dm table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerityInfo {
    /// The hash algorithm: `sha256`.
    pub algorithm: &'static str,
    /// The root hash, hex.
    pub root_hash: String,
    /// The salt, hex.
    pub salt: String,
    /// Where the verity superblock starts (the filesystem's size), in bytes.
    pub hash_offset: u64,
    /// Blocks of data the tree covers.
    pub data_blocks: u64,
    /// Data block size in bytes.
    pub data_block_size: u64,
    /// Hash block size in bytes.
    pub hash_block_size: u64,
    /// The dm-verity hash format version (1: the salt comes first).
    pub hash_type: u32,
}

/// 32 bytes derived from `key` for `what`.
pub(crate) fn derive(what: &[u8], key: &[u8]) -> [u8; 32] {
    let mut input = b"hoist ".to_vec();
    input.extend_from_slice(what);
    input.push(0);
    input.extend_from_slice(key);
    hex32(&Digest::sha256_of(&input))
}

fn hex32(d: &Digest) -> [u8; 32] {
    let hex = d.hex().as_bytes();
    let h = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    std::array::from_fn(|i| (h(hex[2 * i]) << 4) | h(hex[2 * i + 1]))
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hash_block(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Hasher::new(Algorithm::Sha256);
    h.update(salt);
    h.update(block);
    hex32(&h.finish())
}

/// Blocks of each level of the tree over `data_blocks`, the level over the data first.
fn levels(data_blocks: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut n = data_blocks;
    loop {
        n = n.div_ceil(PER_BLOCK);
        out.push(n);
        if n <= 1 {
            return out;
        }
    }
}

/// Bytes [`append_verity`] adds after `data_blocks` blocks: the superblock's block and
/// every level of the tree.
pub fn tree_bytes(data_blocks: u64) -> u64 {
    (1 + levels(data_blocks).iter().sum::<u64>()) * BLOCK
}

/// The filesystem size the image at `path` declares (ext4 or erofs), in bytes.
pub fn fs_size(path: &Path) -> Option<u64> {
    let f = File::open(path).ok()?;
    let mut sb = [0u8; 1024];
    f.read_exact_at(&mut sb, 1024).ok()?;
    let le32 = |o: usize| u64::from(u32::from_le_bytes(sb[o..o + 4].try_into().unwrap()));
    if le32(0) == 0xE0F5_E1E2 {
        return Some(le32(36) << sb[12]);
    }
    if sb[0x38..0x3A] == 0xEF53u16.to_le_bytes() {
        let hi = if le32(0x60) & 0x80 != 0 {
            le32(0x150)
        } else {
            0
        };
        return Some(((hi << 32) | le32(0x04)) << (10 + le32(0x18)));
    }
    None
}

/// Appends a dm-verity hash tree over the whole of the image at `path` (a multiple of
/// 4 KiB), its salt derived from `key`; returns what `veritysetup` needs.
pub fn append_verity(path: &Path, key: &[u8]) -> Result<VerityInfo, MkfsError> {
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| MkfsError::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| MkfsError::io("stat", path, e))?
        .len();
    if !len.is_multiple_of(BLOCK) || len < 2 * BLOCK {
        return Err(MkfsError::io(
            "add a verity tree to",
            path,
            std::io::Error::other("the image is not a whole number (2 or more) of 4 KiB blocks"),
        ));
    }
    let data_blocks = len / BLOCK;
    let salt = derive(b"verity salt", key);
    let mut uuid: [u8; 16] = derive(b"verity uuid", key)[..16].try_into().unwrap();
    uuid[6] = (uuid[6] & 0x0F) | 0x40;
    uuid[8] = (uuid[8] & 0x3F) | 0x80;

    // The level over the data: its hashes, computed on every core in slices.
    let sizes = levels(data_blocks);
    let mut level = vec![0u8; (sizes[0] * BLOCK) as usize];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u64;
    let per = data_blocks.div_ceil(threads);
    std::thread::scope(|s| -> Result<(), MkfsError> {
        let mut rest = &mut level[..data_blocks as usize * HASH];
        let mut jobs = Vec::new();
        for t in 0..threads {
            let first = t * per;
            let count = per.min(data_blocks.saturating_sub(first));
            let (mine, tail) = rest.split_at_mut(count as usize * HASH);
            rest = tail;
            let (file, salt) = (&file, &salt);
            jobs.push(s.spawn(move || -> std::io::Result<()> {
                let mut buf = vec![0u8; 1 << 20];
                let mut done = 0u64;
                while done < count {
                    let take = (count - done).min(buf.len() as u64 / BLOCK);
                    let bytes = &mut buf[..(take * BLOCK) as usize];
                    file.read_exact_at(bytes, (first + done) * BLOCK)?;
                    for (k, block) in bytes.chunks(BLOCK as usize).enumerate() {
                        let at = (done as usize + k) * HASH;
                        mine[at..at + HASH].copy_from_slice(&hash_block(salt, block));
                    }
                    done += take;
                }
                Ok(())
            }));
        }
        for j in jobs {
            j.join()
                .map_err(|_| UnpackError::WorkerPanicked { what: "hashing" })?
                .map_err(|e| MkfsError::io("read", path, e))?;
        }
        Ok(())
    })?;
    // The levels above, each hashing the blocks of the one below.
    let mut tree = vec![level];
    for &n in &sizes[1..] {
        let below = tree.last().expect("one level at least");
        let mut up = vec![0u8; (n * BLOCK) as usize];
        for (k, block) in below.chunks(BLOCK as usize).enumerate() {
            up[k * HASH..(k + 1) * HASH].copy_from_slice(&hash_block(&salt, block));
        }
        tree.push(up);
    }
    let root = hash_block(&salt, tree.last().expect("one level at least"));

    let mut sb = [0u8; BLOCK as usize];
    sb[0..8].copy_from_slice(b"verity\0\0");
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // superblock version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type
    sb[16..32].copy_from_slice(&uuid);
    sb[32..38].copy_from_slice(b"sha256");
    sb[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    sb[88..88 + salt.len()].copy_from_slice(&salt);
    let put = |at: u64, bytes: &[u8]| {
        file.write_all_at(bytes, at)
            .map_err(|e| MkfsError::io("write", path, e))
    };
    put(len, &sb)?;
    let mut at = len + BLOCK;
    for level in tree.iter().rev() {
        put(at, level)?;
        at += level.len() as u64;
    }
    file.sync_all()
        .map_err(|e| MkfsError::io("sync", path, e))?;
    Ok(VerityInfo {
        algorithm: "sha256",
        root_hash: to_hex(&root),
        salt: to_hex(&salt),
        hash_offset: len,
        data_blocks,
        data_block_size: BLOCK,
        hash_block_size: BLOCK,
        hash_type: 1,
    })
}

/// The verity tree hoist appended to the image at `path`, if it has one: read from its
/// superblock after the filesystem, the root hash recomputed from the top hash block.
pub fn read_verity(path: &Path) -> Option<VerityInfo> {
    let hash_offset = fs_size(path)?;
    let f = File::open(path).ok()?;
    let mut sb = [0u8; 512];
    f.read_exact_at(&mut sb, hash_offset).ok()?;
    let le32 = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap());
    if &sb[0..8] != b"verity\0\0"
        || le32(8) != 1
        || le32(12) != 1
        || &sb[32..39] != b"sha256\0"
        || u64::from(le32(64)) != BLOCK
        || u64::from(le32(68)) != BLOCK
    {
        return None;
    }
    let data_blocks = u64::from_le_bytes(sb[72..80].try_into().unwrap());
    let salt_len = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
    if data_blocks * BLOCK != hash_offset || salt_len > 256 {
        return None;
    }
    let salt = &sb[88..88 + salt_len];
    let mut top = vec![0u8; BLOCK as usize];
    f.read_exact_at(&mut top, hash_offset + BLOCK).ok()?;
    Some(VerityInfo {
        algorithm: "sha256",
        root_hash: to_hex(&hash_block(salt, &top)),
        salt: to_hex(salt),
        hash_offset,
        data_blocks,
        data_block_size: BLOCK,
        hash_block_size: BLOCK,
        hash_type: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_veritysetup() {
        assert_eq!(levels(2), vec![1]);
        assert_eq!(levels(128), vec![1]);
        assert_eq!(levels(129), vec![2, 1]);
        assert_eq!(levels(128 * 128), vec![128, 1]);
        assert_eq!(levels(128 * 128 + 1), vec![129, 2, 1]);
    }
}
