//! Directories: linear blocks for small ones, a hashed b-tree (htree, `dir_index`) for
//! those that need more than one block, so lookups in a 20k-entry directory stay
//! logarithmic and building one is a sort, not quadratic inserts.
//!
//! The hash is the kernel's half-MD4 over unsigned chars (the superblock says
//! `EXT2_FLAGS_UNSIGNED_HASH`), seeded with `s_hash_seed`.

use super::BLOCK;

/// `EXT2_FT_*` directory entry file types.
pub(crate) mod ft {
    pub const REG: u8 = 1;
    pub const DIR: u8 = 2;
    pub const CHR: u8 = 3;
    pub const BLK: u8 = 4;
    pub const FIFO: u8 = 5;
    pub const SYMLINK: u8 = 7;
}

/// `DX_HASH_HALF_MD4` as stored in a dx_root (the unsigned variant comes from the
/// superblock flag).
pub(crate) const HASH_HALF_MD4: u8 = 1;

/// Entries of one index block: the root's (after `.`, `..` and the root info) and an
/// interior node's.
const ROOT_LIMIT: usize = (BLOCK - 32) / 8;
const NODE_LIMIT: usize = (BLOCK - 8) / 8;

/// One name in a directory.
#[derive(Debug, Clone)]
pub(crate) struct DirEntry<'a> {
    pub name: &'a [u8],
    pub ino: u32,
    pub ftype: u8,
}

fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

fn put_entry(block: &mut [u8], off: usize, ino: u32, rec: usize, name: &[u8], ftype: u8) {
    block[off..off + 4].copy_from_slice(&ino.to_le_bytes());
    block[off + 4..off + 6].copy_from_slice(&(rec as u16).to_le_bytes());
    block[off + 6] = name.len() as u8;
    block[off + 7] = ftype;
    block[off + 8..off + 8 + name.len()].copy_from_slice(name);
}

/// Packs entries into leaf blocks in order; returns the blocks and, per block, the index
/// of its first entry.
fn pack<'a>(
    head: &[DirEntry<'a>],
    entries: impl Iterator<Item = DirEntry<'a>>,
) -> (Vec<u8>, Vec<usize>) {
    let mut out = vec![0u8; BLOCK];
    let mut firsts = vec![0usize];
    let mut off = 0usize;
    let mut last = None::<usize>;
    let all = head.iter().cloned().chain(entries);
    for (i, e) in all.enumerate() {
        let r = rec_len(e.name.len());
        let base = out.len() - BLOCK;
        if off + r > BLOCK {
            let l = last.expect("a name fits in an empty block");
            let lr = BLOCK - l;
            out[base + l + 4..base + l + 6].copy_from_slice(&(lr as u16).to_le_bytes());
            out.resize(out.len() + BLOCK, 0);
            firsts.push(i);
            off = 0;
        }
        let base = out.len() - BLOCK;
        put_entry(&mut out[base..], off, e.ino, r, e.name, e.ftype);
        last = Some(off);
        off += r;
    }
    let base = out.len() - BLOCK;
    match last {
        Some(l) => {
            let lr = BLOCK - l;
            out[base + l + 4..base + l + 6].copy_from_slice(&(lr as u16).to_le_bytes());
        }
        // An empty leaf: one unused entry covering the block.
        None => put_entry(&mut out[base..], 0, 0, BLOCK, b"", 0),
    }
    (out, firsts)
}

/// The blocks of a directory and whether they form an htree (`EXT4_INDEX_FL`).
pub(crate) fn build(
    self_ino: u32,
    parent_ino: u32,
    entries: &[DirEntry<'_>],
    seed: [u32; 4],
) -> Result<(Vec<u8>, bool), &'static str> {
    let dots = [
        DirEntry {
            name: b".",
            ino: self_ino,
            ftype: ft::DIR,
        },
        DirEntry {
            name: b"..",
            ino: parent_ino,
            ftype: ft::DIR,
        },
    ];
    let bytes: usize = 24 + entries.iter().map(|e| rec_len(e.name.len())).sum::<usize>();
    if bytes <= BLOCK {
        let (b, _) = pack(&dots, entries.iter().cloned());
        return Ok((b, false));
    }
    let mut hashed: Vec<(u32, &DirEntry<'_>)> = entries
        .iter()
        .map(|e| (half_md4(e.name, seed), e))
        .collect();
    hashed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(b.1.name)));
    let (leaves, firsts) = pack(&[], hashed.iter().map(|(_, e)| (*e).clone()));
    let n_leaves = leaves.len() / BLOCK;
    // The index key of each leaf: its first hash, with bit 0 set when the previous leaf
    // ends with the same hash (a collision run continues).
    let keys: Vec<u32> = firsts
        .iter()
        .map(|&i| {
            let h = hashed[i].0;
            if i > 0 && hashed[i - 1].0 == h {
                h | 1
            } else {
                h
            }
        })
        .collect();
    let mut root = vec![0u8; BLOCK];
    put_entry(&mut root, 0, self_ino, 12, b".", ft::DIR);
    put_entry(&mut root, 12, parent_ino, BLOCK - 12, b"..", ft::DIR);
    // dx_root_info: reserved_zero, hash_version, info_length, indirect_levels, flags.
    root[28] = HASH_HALF_MD4;
    root[29] = 8;
    let mut out;
    if n_leaves <= ROOT_LIMIT {
        root[30] = 0;
        let targets: Vec<(u32, u32)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, 1 + i as u32))
            .collect();
        put_index(&mut root[32..], ROOT_LIMIT, &targets);
        out = root;
        out.extend_from_slice(&leaves);
    } else {
        let n_nodes = n_leaves.div_ceil(NODE_LIMIT);
        if n_nodes > ROOT_LIMIT {
            return Err("directory has too many entries for a two-level htree");
        }
        root[30] = 1;
        let first_leaf = 1 + n_nodes as u32;
        let mut nodes = vec![0u8; n_nodes * BLOCK];
        let mut root_targets = Vec::with_capacity(n_nodes);
        for (n, chunk) in keys.chunks(NODE_LIMIT).enumerate() {
            let base = n * NODE_LIMIT;
            let targets: Vec<(u32, u32)> = chunk
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, first_leaf + (base + i) as u32))
                .collect();
            let node = &mut nodes[n * BLOCK..(n + 1) * BLOCK];
            // A fake empty entry covering the block hides the index from linear readers.
            node[4..6].copy_from_slice(&(BLOCK as u16).to_le_bytes());
            put_index(&mut node[8..], NODE_LIMIT, &targets);
            root_targets.push((chunk[0], 1 + n as u32));
        }
        put_index(&mut root[32..], ROOT_LIMIT, &root_targets);
        out = root;
        out.extend_from_slice(&nodes);
        out.extend_from_slice(&leaves);
    }
    Ok((out, true))
}

/// Writes a dx count/limit header and entries: the first entry's hash slot holds
/// limit and count; its block is the child for hashes below the second key.
fn put_index(buf: &mut [u8], limit: usize, targets: &[(u32, u32)]) {
    buf[0..2].copy_from_slice(&(limit as u16).to_le_bytes());
    buf[2..4].copy_from_slice(&(targets.len() as u16).to_le_bytes());
    for (i, (hash, block)) in targets.iter().enumerate() {
        let o = i * 8;
        if i > 0 {
            buf[o..o + 4].copy_from_slice(&hash.to_le_bytes());
        }
        buf[o + 4..o + 8].copy_from_slice(&block.to_le_bytes());
    }
}

fn str2hashbuf(msg: &[u8], len: usize, num: usize) -> [u32; 8] {
    let l = len as u32;
    let mut pad = l | (l << 8);
    pad |= pad << 16;
    let mut val = pad;
    let take = msg.len().min(len).min(num * 4);
    let mut out = [0u32; 8];
    let mut k = 0;
    let mut left = num as i64;
    for (i, &c) in msg[..take].iter().enumerate() {
        val = u32::from(c).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[k] = val;
            k += 1;
            val = pad;
            left -= 1;
        }
    }
    left -= 1;
    if left >= 0 {
        out[k] = val;
        k += 1;
    }
    loop {
        left -= 1;
        if left < 0 {
            break;
        }
        out[k] = pad;
        k += 1;
    }
    out
}

fn half_md4_transform(buf: &mut [u32; 4], inp: &[u32; 8]) {
    const K1: u32 = 0;
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = *buf;
    macro_rules! round {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a.wrapping_add($f($b, $c, $d)).wrapping_add($x);
            $a = $a.rotate_left($s);
        };
    }
    round!(f, a, b, c, d, inp[0].wrapping_add(K1), 3);
    round!(f, d, a, b, c, inp[1].wrapping_add(K1), 7);
    round!(f, c, d, a, b, inp[2].wrapping_add(K1), 11);
    round!(f, b, c, d, a, inp[3].wrapping_add(K1), 19);
    round!(f, a, b, c, d, inp[4].wrapping_add(K1), 3);
    round!(f, d, a, b, c, inp[5].wrapping_add(K1), 7);
    round!(f, c, d, a, b, inp[6].wrapping_add(K1), 11);
    round!(f, b, c, d, a, inp[7].wrapping_add(K1), 19);
    round!(g, a, b, c, d, inp[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, inp[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, inp[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, inp[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, inp[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, inp[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, inp[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, inp[6].wrapping_add(K2), 13);
    round!(h, a, b, c, d, inp[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, inp[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, inp[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, inp[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, inp[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, inp[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, inp[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, inp[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// The major htree hash of `name` (half-MD4, unsigned chars, `seed` as the superblock's
/// `s_hash_seed` words), bit 0 clear.
pub(crate) fn half_md4(name: &[u8], seed: [u32; 4]) -> u32 {
    let mut buf = if seed == [0; 4] {
        [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476]
    } else {
        seed
    };
    let mut p = name;
    let mut len = name.len() as i64;
    loop {
        let inp = str2hashbuf(p, len as usize, 8);
        half_md4_transform(&mut buf, &inp);
        len -= 32;
        if len <= 0 {
            break;
        }
        p = &p[32..];
    }
    let hash = buf[1] & !1;
    if hash == 0x7fff_ffff << 1 {
        (0x7fff_ffff - 1) << 1
    } else {
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_e2fsprogs() {
        // debugfs -R "dx_hash -h 4 -s 01020304-0506-0708-090a-0b0c0d0e0f10 NAME" (4 is
        // half-MD4 over unsigned chars).
        let seed = [0x04030201, 0x08070605, 0x0c0b0a09, 0x100f0e0d];
        assert_eq!(half_md4(b"hello", seed), 0xe2ddf968);
        assert_eq!(
            half_md4(b"a-much-longer-file-name-than-thirty-two-bytes-xx", seed),
            0xfdba3372
        );
        assert_eq!(half_md4("é-name".as_bytes(), seed), 0x4bd566a4);
    }

    #[test]
    fn linear_and_indexed() {
        let names: Vec<Vec<u8>> = (0..2000).map(|i| format!("f{i:05}").into_bytes()).collect();
        let small: Vec<DirEntry<'_>> = names[..10]
            .iter()
            .map(|n| DirEntry {
                name: n,
                ino: 12,
                ftype: ft::REG,
            })
            .collect();
        let (b, idx) = build(11, 2, &small, [1, 2, 3, 4]).unwrap();
        assert_eq!((b.len(), idx), (BLOCK, false));
        let big: Vec<DirEntry<'_>> = names
            .iter()
            .map(|n| DirEntry {
                name: n,
                ino: 12,
                ftype: ft::REG,
            })
            .collect();
        let (b, idx) = build(11, 2, &big, [1, 2, 3, 4]).unwrap();
        assert!(idx);
        // root: 508 slots; count = leaves.
        let count = u16::from_le_bytes([b[34], b[35]]) as usize;
        assert_eq!(count, b.len() / BLOCK - 1);
        assert_eq!(u16::from_le_bytes([b[32], b[33]]) as usize, ROOT_LIMIT);
    }
}
