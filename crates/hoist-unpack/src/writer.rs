//! A small tar writer for flattened exports: POSIX ustar headers, with PAX records for what
//! does not fit (long or non-ASCII-safe paths and link targets, large ids and sizes, times
//! with nanoseconds or before 1970, xattrs as `SCHILY.xattr.*`).

use std::io::{self, Write};

use crate::tar::{EntryKind, Timestamp};

const BLOCK: usize = 512;

/// What a header describes (the writer's view of an entry).
#[derive(Debug, Clone)]
pub(crate) struct Header<'a> {
    pub path: &'a [u8],
    pub kind: &'a EntryKind,
    /// For hardlinks: the target path (overrides the kind's own).
    pub link: Option<&'a [u8]>,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Writes tar entries to `out`.
pub(crate) struct TarWriter<W: Write> {
    out: W,
    written: u64,
}

fn octal(field: &mut [u8], v: u64) -> bool {
    let digits = field.len() - 1;
    if digits < 22 && v >= 1u64 << (3 * digits) {
        return false;
    }
    let s = format!("{v:0width$o}", width = digits);
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(out: W) -> TarWriter<W> {
        TarWriter { out, written: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Writes the header (and PAX header if needed) of an entry; a regular file's `size`
    /// data bytes must follow through [`TarWriter::data`] and [`TarWriter::end_data`].
    pub(crate) fn header(&mut self, h: &Header<'_>) -> io::Result<()> {
        let mut block = [0u8; BLOCK];
        let mut pax = Vec::new();
        let is_dir = matches!(h.kind, EntryKind::Dir);
        let mut name = h.path.to_vec();
        if name.is_empty() {
            name.extend_from_slice(b".");
        }
        if is_dir {
            name.push(b'/');
        }
        if name.len() <= 100 {
            block[..name.len()].copy_from_slice(&name);
        } else {
            pax_record(&mut pax, b"path", &name);
            let short = &name[..100];
            block[..100].copy_from_slice(short);
        }
        let (typeflag, link): (u8, &[u8]) = match (h.link, h.kind) {
            (Some(t), _) => (b'1', t),
            (None, EntryKind::File) => (b'0', b""),
            (None, EntryKind::Dir) => (b'5', b""),
            (None, EntryKind::Symlink(t)) => (b'2', t.as_slice()),
            (None, EntryKind::Hardlink(t)) => (b'1', t.as_slice()),
            (None, EntryKind::Char { .. }) => (b'3', b""),
            (None, EntryKind::Block { .. }) => (b'4', b""),
            (None, EntryKind::Fifo) => (b'6', b""),
        };
        if link.len() <= 100 {
            block[157..157 + link.len()].copy_from_slice(link);
        } else {
            pax_record(&mut pax, b"linkpath", link);
            block[157..257].copy_from_slice(&link[..100]);
        }
        octal(&mut block[100..108], u64::from(h.mode & 0o7777));
        if !octal(&mut block[108..116], u64::from(h.uid)) {
            pax_record(&mut pax, b"uid", h.uid.to_string().as_bytes());
            octal(&mut block[108..116], 0);
        }
        if !octal(&mut block[116..124], u64::from(h.gid)) {
            pax_record(&mut pax, b"gid", h.gid.to_string().as_bytes());
            octal(&mut block[116..124], 0);
        }
        if !octal(&mut block[124..136], h.size) {
            pax_record(&mut pax, b"size", h.size.to_string().as_bytes());
            octal(&mut block[124..136], 0);
        }
        let t = h.mtime;
        if t.secs < 0 || t.nanos != 0 || !octal(&mut block[136..148], t.secs as u64) {
            let v = if t.secs < 0 && t.nanos > 0 {
                let total = i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
                let (s, n) = ((-total) / 1_000_000_000, (-total) % 1_000_000_000);
                format!("-{s}.{n:09}")
            } else if t.nanos != 0 {
                format!("{}.{:09}", t.secs, t.nanos)
            } else {
                t.secs.to_string()
            };
            pax_record(&mut pax, b"mtime", v.as_bytes());
            octal(&mut block[136..148], t.secs.max(0) as u64);
        }
        block[156] = typeflag;
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        if let EntryKind::Char { major, minor } | EntryKind::Block { major, minor } = h.kind
            && h.link.is_none()
        {
            if !octal(&mut block[329..337], u64::from(*major))
                || !octal(&mut block[337..345], u64::from(*minor))
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "device number too large for a tar header",
                ));
            }
        } else {
            octal(&mut block[329..337], 0);
            octal(&mut block[337..345], 0);
        }
        for (k, v) in h.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        if !pax.is_empty() {
            let mut ph = [0u8; BLOCK];
            let pname = b"PaxHeader";
            ph[..pname.len()].copy_from_slice(pname);
            octal(&mut ph[100..108], 0o644);
            octal(&mut ph[108..116], 0);
            octal(&mut ph[116..124], 0);
            octal(&mut ph[124..136], pax.len() as u64);
            octal(&mut ph[136..148], t.secs.max(0) as u64);
            ph[156] = b'x';
            ph[257..263].copy_from_slice(b"ustar\0");
            ph[263..265].copy_from_slice(b"00");
            checksum(&mut ph);
            self.put(&ph)?;
            self.put(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        checksum(&mut block);
        self.put(&block)
    }

    /// File data.
    pub(crate) fn data(&mut self, b: &[u8]) -> io::Result<()> {
        self.put(b)
    }

    /// Padding after `size` bytes of data.
    pub(crate) fn pad(&mut self, size: u64) -> io::Result<()> {
        let n = ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize;
        if n > 0 {
            self.put(&[0u8; BLOCK][..n])?;
        }
        Ok(())
    }

    /// The end-of-archive blocks; returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.put(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn checksum(block: &mut [u8; BLOCK]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use crate::tar::TarReader;

    #[test]
    fn roundtrip_through_the_reader() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(100));
        let xattrs = vec![(b"user.k".to_vec(), b"v\n\0".to_vec())];
        let mut w = TarWriter::new(Vec::new());
        let items: Vec<(Vec<u8>, EntryKind, u64, u32, Timestamp)> = vec![
            (
                b"a".to_vec(),
                EntryKind::Dir,
                0,
                0,
                Timestamp { secs: 5, nanos: 0 },
            ),
            (
                long.clone().into_bytes(),
                EntryKind::File,
                3,
                3_000_000,
                Timestamp { secs: 7, nanos: 5 },
            ),
            (
                b"s".to_vec(),
                EntryKind::Symlink("t".repeat(150).into_bytes()),
                0,
                0,
                Timestamp { secs: -3, nanos: 0 },
            ),
            (
                b"c".to_vec(),
                EntryKind::Char { major: 1, minor: 3 },
                0,
                0,
                Timestamp::default(),
            ),
        ];
        for (p, k, size, uid, t) in &items {
            w.header(&Header {
                path: p,
                kind: k,
                link: None,
                size: *size,
                mode: 0o4755,
                uid: *uid,
                gid: 7,
                mtime: *t,
                xattrs: &xattrs,
            })
            .unwrap();
            if *size > 0 {
                w.data(b"abc").unwrap();
                w.pad(3).unwrap();
            }
        }
        w.header(&Header {
            path: b"h",
            kind: &EntryKind::File,
            link: Some(long.as_bytes()),
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Timestamp::default(),
            xattrs: &[],
        })
        .unwrap();
        let bytes = w.finish().unwrap();
        let mut r = TarReader::new(bytes.as_slice(), &Limits::default());
        for (p, k, _, uid, t) in &items {
            let e = r.next_entry().unwrap().unwrap();
            assert_eq!(&e.path, p);
            assert_eq!(&e.kind, k);
            assert_eq!(e.uid, *uid);
            assert_eq!(e.mtime, *t);
            assert_eq!(e.mode, 0o4755);
            assert_eq!(e.xattrs, xattrs);
        }
        let h = r.next_entry().unwrap().unwrap();
        assert_eq!(h.kind, EntryKind::Hardlink(long.into_bytes()));
        assert!(r.next_entry().unwrap().is_none());
    }
}
