//! Extended attributes: in the inode's spare 96 bytes when they fit, else in one 4 KiB
//! block (shared, with a reference count, by inodes with the same set). POSIX ACLs are
//! converted from the VFS xattr form (version 2) to ext4's on-disk form (version 1), as
//! the kernel stores them.

use super::BLOCK;

/// The magic of an xattr block header and of the in-inode area.
const MAGIC: u32 = 0xEA02_0000;
/// Bytes of the in-inode area after `i_extra_isize` (256 - 128 - 32), magic included.
pub(crate) const IN_INODE: usize = 96;

/// Where an inode's xattrs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// None.
    None,
    /// The in-inode area (magic included), [`IN_INODE`] bytes.
    Inode(Vec<u8>),
    /// A block: its bytes without the reference count (set when written).
    Block(Vec<u8>),
}

/// `(name index, suffix)` of an xattr name; `None` for names ext4 cannot store (the
/// kernel refuses them too, so unpacking skips them).
fn split_name(name: &[u8]) -> Option<(u8, &[u8])> {
    const PREFIXES: &[(&[u8], u8)] = &[(b"user.", 1), (b"trusted.", 4), (b"security.", 6)];
    match name {
        b"system.posix_acl_access" => return Some((2, b"")),
        b"system.posix_acl_default" => return Some((3, b"")),
        _ => {}
    }
    PREFIXES
        .iter()
        .find_map(|(p, i)| name.strip_prefix(*p).map(|s| (*i, s)))
        .filter(|(_, s)| !s.is_empty() && s.len() <= 255)
}

/// The VFS ACL xattr (version 2, 8-byte entries) in ext4's form (version 1, 4-byte
/// entries for the owner, group, mask and other; 8-byte ones for named users and groups).
/// With `mode`, an access ACL is brought in line with the permission bits as the kernel's
/// chmod does (the unpack sets xattrs, then the mode): owner, mask (or group without a
/// mask) and other take the mode's bits.
fn acl_to_disk(v: &[u8], mode: Option<u32>) -> Result<Vec<u8>, &'static str> {
    const BAD: &str = "malformed POSIX ACL xattr";
    if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) || v[..4] != 2u32.to_le_bytes() {
        return Err(BAD);
    }
    let has_mask = v[4..].chunks(8).any(|e| e[..2] == 0x10u16.to_le_bytes());
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in v[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = match (mode, tag) {
            (Some(m), 0x01) => (m >> 6) & 7,
            (Some(m), 0x10) => (m >> 3) & 7,
            (Some(m), 0x04) if !has_mask => (m >> 3) & 7,
            (Some(m), 0x20) => m & 7,
            _ => u32::from(u16::from_le_bytes([e[2], e[3]])),
        } as u16;
        match tag {
            0x01 | 0x04 | 0x10 | 0x20 => {
                out.extend_from_slice(&e[..2]);
                out.extend_from_slice(&perm.to_le_bytes());
            }
            0x02 | 0x08 => out.extend_from_slice(e),
            _ => return Err(BAD),
        }
    }
    Ok(out)
}

struct Item {
    index: u8,
    name: Vec<u8>,
    value: Vec<u8>,
}

fn entry_len(name_len: usize) -> usize {
    (16 + name_len + 3) & !3
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// The kernel's `ext4_xattr_hash_entry`.
fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut h = 0u32;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ u32::from(c);
    }
    for w in value.chunks(4) {
        let mut b = [0u8; 4];
        b[..w.len()].copy_from_slice(w);
        h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes(b);
    }
    h
}

/// Lays `items` out in `area` (entries from `first`, values from the end, value offsets
/// relative to `base`); returns the entry hashes, or `None` when they do not fit.
fn lay_out(area: &mut [u8], first: usize, base: usize, items: &[Item]) -> Option<Vec<u32>> {
    let entries: usize = items.iter().map(|i| entry_len(i.name.len())).sum();
    let values: usize = items.iter().map(|i| pad4(i.value.len())).sum();
    if first + entries + 4 + values > area.len() {
        return None;
    }
    let mut eo = first;
    let mut vo = area.len();
    let mut hashes = Vec::with_capacity(items.len());
    for it in items {
        let offs = if it.value.is_empty() {
            0
        } else {
            vo -= pad4(it.value.len());
            area[vo..vo + it.value.len()].copy_from_slice(&it.value);
            vo - base
        };
        let h = entry_hash(&it.name, &it.value);
        area[eo] = it.name.len() as u8;
        area[eo + 1] = it.index;
        area[eo + 2..eo + 4].copy_from_slice(&(offs as u16).to_le_bytes());
        area[eo + 8..eo + 12].copy_from_slice(&(it.value.len() as u32).to_le_bytes());
        area[eo + 12..eo + 16].copy_from_slice(&h.to_le_bytes());
        area[eo + 16..eo + 16 + it.name.len()].copy_from_slice(&it.name);
        eo += entry_len(it.name.len());
        hashes.push(h);
    }
    Some(hashes)
}

/// Places `xattrs` (names as in the tar) of an inode with permission bits `mode`; `Err`
/// when they cannot be stored.
pub(crate) fn place(xattrs: &[(Vec<u8>, Vec<u8>)], mode: u32) -> Result<Placement, &'static str> {
    let mut items = Vec::with_capacity(xattrs.len());
    for (name, value) in xattrs {
        let Some((index, suffix)) = split_name(name) else {
            continue;
        };
        let value = if index == 2 || index == 3 {
            acl_to_disk(value, (index == 2).then_some(mode))?
        } else {
            value.clone()
        };
        items.push(Item {
            index,
            name: suffix.to_vec(),
            value,
        });
    }
    if items.is_empty() {
        return Ok(Placement::None);
    }
    // The kernel keeps block entries sorted by (index, name length, name).
    items.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    let mut area = vec![0u8; IN_INODE];
    area[..4].copy_from_slice(&MAGIC.to_le_bytes());
    if lay_out(&mut area, 4, 4, &items).is_some() {
        return Ok(Placement::Inode(area));
    }
    let mut block = vec![0u8; BLOCK];
    let hashes = lay_out(&mut block, 32, 0, &items)
        .ok_or("xattrs take more than one 4 KiB block (ext4 without ea_inode)")?;
    block[..4].copy_from_slice(&MAGIC.to_le_bytes());
    block[8..12].copy_from_slice(&1u32.to_le_bytes());
    let mut h = 0u32;
    for e in hashes {
        h = (h << 16) ^ (h >> 16) ^ e;
    }
    block[12..16].copy_from_slice(&h.to_le_bytes());
    Ok(Placement::Block(block))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sets_stay_in_the_inode_and_big_ones_get_a_block() {
        let cap = (
            b"security.capability".to_vec(),
            vec![
                1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        );
        assert!(matches!(
            place(std::slice::from_ref(&cap), 0o644),
            Ok(Placement::Inode(_))
        ));
        let big = (b"user.big".to_vec(), vec![7u8; 500]);
        let Ok(Placement::Block(b)) = place(&[cap, big], 0o644) else {
            panic!()
        };
        assert_eq!(b[..4], MAGIC.to_le_bytes());
        assert!(place(&[(b"user.huge".to_vec(), vec![0u8; 5000])], 0o644).is_err());
        assert_eq!(
            place(&[(b"weird.x".to_vec(), b"v".to_vec())], 0o644),
            Ok(Placement::None)
        );
    }

    #[test]
    fn acls_are_converted() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let d = acl_to_disk(&v, None).unwrap();
        assert_eq!(d.len(), 4 + 4 + 8 + 4 + 4 + 4);
        assert_eq!(d[..4], 1u32.to_le_bytes());
        assert_eq!(d[6..8], 6u16.to_le_bytes());
        assert!(acl_to_disk(&v[..7], None).is_err());
        // chmod 0751: owner 7, mask 5, other 1; named entries keep theirs.
        let d = acl_to_disk(&v, Some(0o751)).unwrap();
        assert_eq!(d[6..8], 7u16.to_le_bytes());
        assert_eq!(d[10..12], 4u16.to_le_bytes());
        assert_eq!(d[22..24], 5u16.to_le_bytes());
        assert_eq!(d[26..28], 1u16.to_le_bytes());
    }
}
