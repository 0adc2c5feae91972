//! The one tar parser every consumer uses: unpack, flatten, rootfs builds and the diff ID
//! all see the same entries.
//!
//! Headers are read block by block with the `tar` crate's header types; extension records
//! (PAX `x`, GNU long names `L`/`K`) are read here, under [`Limits`], and applied to the next
//! entry. Rules that remove parser differentials:
//!
//! - A PAX `size` must equal the header's size unless the header says 0 (Go's writer puts 0
//!   there for files over 8 GiB); anything else is refused.
//! - Header-only types (links, directories, devices, fifos) must have size 0.
//! - Two extension headers of one kind for one entry, or extension headers with no entry
//!   after them, are refused; so are unknown entry types.
//! - GNU sparse files are read in the four forms GNU tar writes (the old GNU `S` type and
//!   PAX formats 0.0, 0.1 and 1.0), as Go's reader (so containerd, Docker and umoci) does:
//!   the entry is a regular file of its real size, whose data reads as its stored segments
//!   with zeros in the holes. The map must be ascending, non-overlapping, within the real
//!   size, and its segments must add up to the bytes stored; the holes count against
//!   [`Limits::max_layer_size`] with the stream, so a small layer cannot expand without
//!   bound.
//! - After the end-of-archive block only zero bytes may follow (checked by the caller
//!   through [`crate::LayerStream::finish`]).
//! - uid and gid must fit in 32 bits and not be 4294967295 (which `chown` reads as "leave
//!   unchanged").
//! - `trusted.overlay.*` xattrs are dropped: layers must not forge overlayfs metadata.
//!
//! Paths are cleaned with [`crate::path::clean`] as they are read.

use std::io::{self, Read};

use crate::error::show;
use crate::path::{PathProblem, clean};
use crate::{Limits, UnpackError};

const BLOCK: usize = 512;
const XATTR_VALUE_LIMIT: &str = "xattr value over the limit";
const XATTRS_TOTAL_LIMIT: &str = "xattrs of one entry over the limit";

/// A timestamp: seconds since the epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    /// Seconds (may be negative).
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file; its bytes follow ([`TarReader::read_data`]).
    File,
    /// A directory.
    Dir,
    /// A symbolic link to these (raw, unresolved) target bytes.
    Symlink(Vec<u8>),
    /// A hard link to this cleaned path, written earlier.
    Hardlink(Vec<u8>),
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

/// One tar entry, extension records applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The cleaned path (`""` is the root).
    pub path: Vec<u8>,
    /// Type and payload.
    pub kind: EntryKind,
    /// Data bytes (regular files only; 0 otherwise).
    pub size: u64,
    /// Permission bits, setuid/setgid/sticky included (`& 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Extended attributes, in the order given, `trusted.overlay.*` removed.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Timestamp>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: PaxSparse,
}

/// The `GNU.sparse.*` records of a PAX header.
#[derive(Default)]
struct PaxSparse {
    /// Whether any was given.
    any: bool,
    /// `major`, `minor` (format 1.0: the map is at the start of the data).
    version: (Option<u64>, Option<u64>),
    /// `name`: the file's real name (the header's is made up).
    name: Option<Vec<u8>>,
    /// `realsize` (1.0) or `size` (0.x): the file's real size.
    size: Option<u64>,
    /// `map` (0.1) or the `offset`/`numbytes` pairs (0.0), in order.
    map: Vec<(u64, Option<u64>)>,
    /// Whether `map` (0.1) was given.
    map_record: bool,
    /// `numblocks` (0.x): the map's length.
    count: Option<u64>,
}

/// How the data of a sparse entry is laid out: its segments (offset in the file, length),
/// stored one after the other in the tar; zeros between them.
#[derive(Debug)]
struct Sparse {
    map: Vec<(u64, u64)>,
    /// The segment at or after `pos`.
    next: usize,
    /// Position in the file.
    pos: u64,
    /// The file's real size.
    size: u64,
}

/// Most segments one sparse file may have.
const MAX_SPARSE_SEGMENTS: usize = 1 << 20;

impl Sparse {
    /// The zeros from `pos` to the next segment (or the end of the file), past the
    /// segments that end at or before `pos`.
    fn hole_left(&mut self) -> u64 {
        while let Some(&(at, len)) = self.map.get(self.next)
            && at + len <= self.pos
        {
            self.next += 1;
        }
        match self.map.get(self.next) {
            Some(&(at, _)) => at.saturating_sub(self.pos),
            None => self.size - self.pos,
        }
    }
}

/// Checks a sparse map against the file's real size and the bytes stored: ascending,
/// non-overlapping, within the file, adding up to what is stored.
fn check_sparse_map(map: &[(u64, u64)], size: u64, stored: u64) -> Result<(), &'static str> {
    let (mut end, mut total) = (0u64, 0u64);
    for &(at, len) in map {
        if at < end {
            return Err("GNU sparse map out of order or overlapping");
        }
        end = at
            .checked_add(len)
            .filter(|e| *e <= size)
            .ok_or("GNU sparse map reaches past the file's size")?;
        total += len;
    }
    if total != stored {
        return Err("GNU sparse map does not add up to the data stored");
    }
    Ok(())
}

/// Reads tar entries from a (decompressed) stream.
pub struct TarReader<R> {
    inner: R,
    limits: Limits,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    /// Headers read.
    headers: u64,
    /// Offset of the next byte of `inner`.
    offset: u64,
    /// Offset of the current header.
    header_offset: u64,
    ended: bool,
    block: [u8; BLOCK],
    /// The current entry's layout, when it is a sparse file.
    sparse: Option<Sparse>,
    /// Hole bytes of the sparse files read so far (they count as layer size).
    holes: u64,
}

impl<R> std::fmt::Debug for TarReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarReader")
            .field("offset", &self.offset)
            .field("headers", &self.headers)
            .finish()
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Parses a numeric header field: octal text (spaces and NULs around it; empty is 0) or
/// base-256 (high bit set; negative values only where `signed`).
fn numeric(field: &[u8], signed: bool) -> Result<i64, &'static str> {
    if field[0] & 0x80 != 0 {
        let negative = field[0] == 0xff;
        if negative && !signed {
            return Err("negative number in a header field");
        }
        let mut v: i128 = if negative { -1 } else { 0 };
        for (i, b) in field.iter().enumerate() {
            let b = if i == 0 {
                b & 0x7f | if negative { 0x80 } else { 0 }
            } else {
                *b
            };
            v = (v << 8) | i128::from(b);
            if v > i128::from(i64::MAX) || v < i128::from(i64::MIN) {
                return Err("number too large in a header field");
            }
        }
        return Ok(v as i64);
    }
    let s = field
        .iter()
        .position(|b| *b != b' ' && *b != 0)
        .map_or(&field[..0], |start| &field[start..]);
    let end = s
        .iter()
        .position(|b| *b == b' ' || *b == 0)
        .unwrap_or(s.len());
    let (digits, rest) = s.split_at(end);
    if rest.iter().any(|b| *b != b' ' && *b != 0) {
        return Err("garbage in a numeric header field");
    }
    let mut v: i64 = 0;
    for d in digits {
        if !(b'0'..=b'7').contains(d) {
            return Err("non-octal digit in a header field");
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or("number too large in a header field")?;
    }
    Ok(v)
}

/// Parses a PAX time, `[-]SECS[.FRACTION]`.
fn pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    if neg {
        // -1.5 is 1.5 s before the epoch: secs -2, nanos 0.5e9.
        if nanos > 0 {
            Some(Timestamp {
                secs: -secs - 1,
                nanos: 1_000_000_000 - nanos,
            })
        } else {
            Some(Timestamp {
                secs: -secs,
                nanos: 0,
            })
        }
    } else {
        Some(Timestamp { secs, nanos })
    }
}

fn pax_u64(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses PAX records (`"LEN KEY=VALUE\n"`, LEN counting the whole record). Values may hold
/// any byte, newlines included.
fn parse_pax(mut data: &[u8], limits: &Limits) -> Result<Pax, &'static str> {
    let mut pax = Pax::default();
    let mut xattr_total = 0usize;
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break; // NUL padding some writers leave
        }
        let sp = data
            .iter()
            .take(20)
            .position(|b| *b == b' ')
            .ok_or("malformed PAX record length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("malformed PAX record length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("malformed PAX record");
        }
        let record = &data[sp + 1..len - 1];
        data = &data[len..];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or("PAX record without '='")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.linkpath = Some(value.to_vec()),
            b"size" => pax.size = Some(pax_u64(value).ok_or("invalid PAX size")?),
            b"uid" => pax.uid = Some(pax_u64(value).ok_or("invalid PAX uid")?),
            b"gid" => pax.gid = Some(pax_u64(value).ok_or("invalid PAX gid")?),
            b"mtime" => pax.mtime = Some(pax_time(value).ok_or("invalid PAX mtime")?),
            k if k.starts_with(b"GNU.sparse.") => {
                let sp = &mut pax.sparse;
                sp.any = true;
                let num = || pax_u64(value).ok_or("invalid GNU sparse number");
                match &k[b"GNU.sparse.".len()..] {
                    b"major" => sp.version.0 = Some(num()?),
                    b"minor" => sp.version.1 = Some(num()?),
                    b"name" => sp.name = Some(value.to_vec()),
                    b"realsize" | b"size" => sp.size = Some(num()?),
                    b"numblocks" => sp.count = Some(num()?),
                    b"map" => {
                        if sp.map_record || !sp.map.is_empty() {
                            return Err("two GNU sparse maps for one entry");
                        }
                        sp.map_record = true;
                        let nums: Vec<u64> = if value.is_empty() {
                            Vec::new()
                        } else {
                            value
                                .split(|b| *b == b',')
                                .map(pax_u64)
                                .collect::<Option<_>>()
                                .ok_or("invalid GNU sparse map")?
                        };
                        if !nums.len().is_multiple_of(2) || nums.len() / 2 > MAX_SPARSE_SEGMENTS {
                            return Err("invalid GNU sparse map");
                        }
                        sp.map = nums.chunks(2).map(|c| (c[0], Some(c[1]))).collect();
                    }
                    b"offset" => {
                        if sp.map_record || sp.map.last().is_some_and(|(_, n)| n.is_none()) {
                            return Err("invalid GNU sparse map");
                        }
                        if sp.map.len() >= MAX_SPARSE_SEGMENTS {
                            return Err("invalid GNU sparse map");
                        }
                        sp.map.push((num()?, None));
                    }
                    b"numbytes" => match sp.map.last_mut() {
                        Some((_, n @ None)) => *n = Some(num()?),
                        _ => return Err("invalid GNU sparse map"),
                    },
                    _ => return Err("unknown GNU sparse record"),
                }
            }
            k if k.starts_with(b"SCHILY.xattr.") => {
                let name = &k[b"SCHILY.xattr.".len()..];
                if name.is_empty() || name.contains(&0) {
                    return Err("invalid xattr name");
                }
                if value.len() > limits.max_xattr_value {
                    return Err(XATTR_VALUE_LIMIT);
                }
                xattr_total += name.len() + value.len();
                if xattr_total > limits.max_xattrs_total {
                    return Err(XATTRS_TOTAL_LIMIT);
                }
                if !name.starts_with(b"trusted.overlay.") {
                    pax.xattrs.retain(|(n, _)| n != name);
                    pax.xattrs.push((name.to_vec(), value.to_vec()));
                }
            }
            // atime, ctime, uname, gname, comment, charset, hdrcharset, LIBARCHIVE.*: ignored.
            _ => {}
        }
    }
    Ok(pax)
}

/// NUL-terminated header text.
fn text(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

impl<R: Read> TarReader<R> {
    /// A reader over `inner`, enforcing `limits`.
    pub fn new(inner: R, limits: &Limits) -> TarReader<R> {
        TarReader {
            inner,
            limits: limits.clone(),
            remaining: 0,
            padding: 0,
            headers: 0,
            offset: 0,
            header_offset: 0,
            ended: false,
            block: [0; BLOCK],
            sparse: None,
            holes: 0,
        }
    }

    /// The underlying stream (positioned after what was consumed).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the end-of-archive marker was seen.
    pub fn saw_end(&self) -> bool {
        self.ended
    }

    fn invalid(&self, reason: impl Into<String>) -> UnpackError {
        UnpackError::InvalidTar {
            offset: self.header_offset,
            reason: reason.into(),
        }
    }

    fn read_exact_counted(&mut self, buf: &mut [u8]) -> Result<bool, UnpackError> {
        let n = read_full(&mut self.inner, buf).map_err(crate::error::stream_error)?;
        self.offset += n as u64;
        if n == 0 {
            return Ok(false);
        }
        if n < buf.len() {
            return Err(UnpackError::InvalidTar {
                offset: self.offset,
                reason: "truncated tar stream".into(),
            });
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), UnpackError> {
        let mut scratch = [0u8; 8192];
        while n > 0 {
            let k = n.min(scratch.len() as u64) as usize;
            if !self.read_exact_counted(&mut scratch[..k])? {
                return Err(UnpackError::InvalidTar {
                    offset: self.offset,
                    reason: "truncated tar stream".into(),
                });
            }
            n -= k as u64;
        }
        Ok(())
    }

    /// Skips what is left of the current entry's data and its padding.
    fn skip_rest(&mut self) -> Result<(), UnpackError> {
        let n = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(n)
    }

    /// Reads the data of an extension header (at most the extension limit).
    fn read_extension(&mut self, size: u64) -> Result<Vec<u8>, UnpackError> {
        if size > self.limits.max_extension_size {
            return Err(UnpackError::Limit {
                what: "extension header size",
                limit: self.limits.max_extension_size,
                entry: None,
            });
        }
        let mut data = vec![0u8; size as usize];
        if size > 0 && !self.read_exact_counted(&mut data)? {
            return Err(self.invalid("truncated extension header"));
        }
        self.skip(pad(size))?;
        Ok(data)
    }

    /// Whether the current entry is a sparse file: its data in the stream is its segments,
    /// not its contents byte for byte (what [`read_data`](Self::read_data) returns is).
    pub fn is_sparse(&self) -> bool {
        self.sparse.is_some()
    }

    /// Passes over the hole at the current position of a sparse file (the data read next
    /// is what follows it) and returns its length: 0 when not in a hole, or for any other
    /// entry. A writer that seeks over it instead of writing zeros keeps the file sparse.
    pub fn skip_hole(&mut self) -> u64 {
        match &mut self.sparse {
            Some(sp) => {
                let n = sp.hole_left();
                sp.pos += n;
                n
            }
            None => 0,
        }
    }

    /// Reads data of the current entry (a regular file); `Ok(0)` at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, UnpackError> {
        let mut k = (buf.len() as u64).min(self.remaining) as usize;
        if let Some(sp) = &mut self.sparse {
            let hole = sp.hole_left();
            if hole > 0 {
                let n = (buf.len() as u64).min(hole) as usize;
                buf[..n].fill(0);
                sp.pos += n as u64;
                return Ok(n);
            }
            let Some(&(at, len)) = sp.map.get(sp.next) else {
                return Ok(0); // the end of the file
            };
            k = (k as u64).min(at + len - sp.pos) as usize;
        }
        if k == 0 {
            return Ok(0);
        }
        let n = loop {
            match self.inner.read(&mut buf[..k]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(crate::error::stream_error(e)),
            }
        };
        if n == 0 {
            return Err(UnpackError::InvalidTar {
                offset: self.offset,
                reason: "truncated tar stream inside file data".into(),
            });
        }
        self.offset += n as u64;
        self.remaining -= n as u64;
        if let Some(sp) = &mut self.sparse {
            sp.pos += n as u64;
        }
        Ok(n)
    }

    /// The next entry, or `None` at the end of the archive. Data of the previous entry that
    /// was not read is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, UnpackError> {
        if self.ended {
            return Ok(None);
        }
        self.sparse = None;
        self.skip_rest()?;
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            self.header_offset = self.offset;
            let mut block = [0u8; BLOCK];
            if !self.read_exact_counted(&mut block)? {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(self.invalid("extension header without an entry after it"));
                }
                // No end-of-archive marker: accepted, as Go's reader does (umoci 0.4.7 writes
                // such layers).
                self.ended = true;
                return Ok(None);
            }
            self.block = block;
            if block.iter().all(|b| *b == 0) {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(self.invalid("extension header without an entry after it"));
                }
                self.ended = true;
                return Ok(None);
            }
            self.headers += 1;
            if self.headers > self.limits.max_entries {
                return Err(UnpackError::Limit {
                    what: "number of tar entries",
                    limit: self.limits.max_entries,
                    entry: None,
                });
            }
            self.check_checksum()?;
            let typeflag = block[156];
            let header_size = numeric(&block[124..136], false).map_err(|r| self.invalid(r))? as u64;
            match typeflag {
                b'x' => {
                    if pax.is_some() {
                        return Err(self.invalid("two PAX headers for one entry"));
                    }
                    let data = self.read_extension(header_size)?;
                    pax = Some(parse_pax(&data, &self.limits).map_err(|r| self.bad_pax(r))?);
                }
                b'g' => {
                    // Global PAX headers are ignored, as Docker does; their size is capped.
                    self.read_extension(header_size)?;
                }
                b'L' | b'K' => {
                    let slot = if typeflag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(self.invalid("two GNU long-name headers for one entry"));
                    }
                    let data = self.read_extension(header_size)?;
                    let v = text(&data).to_vec();
                    if typeflag == b'L' {
                        long_name = Some(v);
                    } else {
                        long_link = Some(v);
                    }
                }
                _ => {
                    let pax = pax.take().unwrap_or_default();
                    return self
                        .build(typeflag, header_size, pax, long_name, long_link)
                        .map(Some);
                }
            }
        }
    }

    /// The map and real size of an old-GNU sparse entry (type `S`): four segments in the
    /// header, then 21 per extension block while the "extended" flag is set.
    fn gnu_sparse_map(
        &mut self,
        b: &[u8; BLOCK],
        path: &[u8],
    ) -> Result<(Vec<(u64, u64)>, u64), UnpackError> {
        let bad = |r| UnpackError::bad(path, r);
        let field = |f: &[u8]| numeric(f, false).map(|v| v as u64).map_err(bad);
        let real = field(&b[483..495])?;
        let mut map = Vec::new();
        let read = |entries: &[u8], n: usize, map: &mut Vec<(u64, u64)>| {
            for i in 0..n {
                let e = &entries[i * 24..i * 24 + 24];
                if e[0] == 0 {
                    break;
                }
                map.push((field(&e[..12])?, field(&e[12..])?));
            }
            Ok::<_, UnpackError>(())
        };
        read(&b[386..482], 4, &mut map)?;
        let mut extended = b[482] != 0;
        let mut bytes = 0u64;
        while extended {
            bytes += BLOCK as u64;
            if bytes > self.limits.max_extension_size {
                return Err(self.sparse_map_too_large(path));
            }
            let mut block = [0u8; BLOCK];
            if !self.read_exact_counted(&mut block)? {
                return Err(self.invalid("truncated GNU sparse map"));
            }
            read(&block[..504], 21, &mut map)?;
            extended = block[504] != 0;
        }
        Ok((map, real))
    }

    fn sparse_map_too_large(&self, path: &[u8]) -> UnpackError {
        UnpackError::Limit {
            what: "GNU sparse map size",
            limit: self.limits.max_extension_size,
            entry: Some(show(&path[..path.len().min(200)])),
        }
    }

    /// The map of a PAX 1.0 sparse file, read from the start of its data: decimal numbers,
    /// one per line (the count, then offset and length of each segment), padded to a block.
    fn sparse_map_in_data(&mut self, path: &[u8]) -> Result<Vec<(u64, u64)>, UnpackError> {
        let bad = |r| UnpackError::bad(path, r);
        let mut text: Vec<u8> = Vec::new();
        let mut nums: Vec<u64> = Vec::new();
        let mut at = 0usize;
        let mut want = usize::MAX;
        while nums.len() < want {
            if self.remaining < BLOCK as u64 {
                return Err(bad("truncated GNU sparse map"));
            }
            if (text.len() + BLOCK) as u64 > self.limits.max_extension_size {
                return Err(self.sparse_map_too_large(path));
            }
            let mut block = [0u8; BLOCK];
            if !self.read_exact_counted(&mut block)? {
                return Err(bad("truncated GNU sparse map"));
            }
            self.remaining -= BLOCK as u64;
            text.extend_from_slice(&block);
            while nums.len() < want
                && let Some(nl) = text[at..].iter().position(|c| *c == b'\n')
            {
                let v = pax_u64(&text[at..at + nl]).ok_or_else(|| bad("invalid GNU sparse map"))?;
                at += nl + 1;
                if want == usize::MAX {
                    if v > MAX_SPARSE_SEGMENTS as u64 {
                        return Err(bad("invalid GNU sparse map"));
                    }
                    want = 1 + 2 * v as usize;
                }
                nums.push(v);
            }
        }
        Ok(nums[1..].chunks(2).map(|c| (c[0], c[1])).collect())
    }

    fn bad_pax(&self, reason: &'static str) -> UnpackError {
        match reason {
            XATTR_VALUE_LIMIT => UnpackError::Limit {
                what: "xattr value size",
                limit: self.limits.max_xattr_value as u64,
                entry: None,
            },
            XATTRS_TOTAL_LIMIT => UnpackError::Limit {
                what: "total xattr size of one entry",
                limit: self.limits.max_xattrs_total as u64,
                entry: None,
            },
            _ => self.invalid(reason),
        }
    }

    fn check_checksum(&self) -> Result<(), UnpackError> {
        let b = &self.block;
        let want = numeric(&b[148..156], false).map_err(|r| self.invalid(r))?;
        let mut unsigned: i64 = 0;
        let mut signed: i64 = 0;
        for (i, byte) in b.iter().enumerate() {
            let v = if (148..156).contains(&i) { b' ' } else { *byte };
            unsigned += i64::from(v);
            signed += i64::from(v as i8);
        }
        if want != unsigned && want != signed {
            return Err(self.invalid("header checksum mismatch"));
        }
        Ok(())
    }

    fn build(
        &mut self,
        typeflag: u8,
        header_size: u64,
        pax: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Entry, UnpackError> {
        let b = self.block;
        let header = tar::Header::from_byte_slice(&b);
        let mut pax = pax;
        // A sparse file's real name (GNU tar makes up the header's name for format 1.0).
        let raw_path: Vec<u8> = match (pax.sparse.name.take().or(pax.path), long_name) {
            (Some(p), _) => p,
            (None, Some(p)) => p,
            (None, None) => match header.as_ustar() {
                Some(u) if u.prefix[0] != 0 => {
                    let mut v = text(&u.prefix).to_vec();
                    v.push(b'/');
                    v.extend_from_slice(text(&u.name));
                    v
                }
                _ => text(&b[0..100]).to_vec(),
            },
        };
        let raw_link: Vec<u8> = match (pax.linkpath, long_link) {
            (Some(p), _) => p,
            (None, Some(p)) => p,
            (None, None) => text(&b[157..257]).to_vec(),
        };
        if raw_path.len() > self.limits.max_path_len + 2 {
            return Err(UnpackError::Limit {
                what: "path length",
                limit: self.limits.max_path_len as u64,
                entry: Some(show(&raw_path[..raw_path.len().min(200)])),
            });
        }
        let path_err = |p: PathProblem, raw: &[u8]| -> UnpackError {
            let (what, limit) = match p {
                PathProblem::TooLong => ("path length", self.limits.max_path_len),
                PathProblem::NameTooLong => ("path component length", self.limits.max_name_len),
                PathProblem::TooDeep => ("path depth", self.limits.max_depth),
                _ => return UnpackError::bad(raw, p.as_str()),
            };
            UnpackError::Limit {
                what,
                limit: limit as u64,
                entry: Some(show(&raw[..raw.len().min(200)])),
            }
        };
        let path = clean(&raw_path, &self.limits).map_err(|p| path_err(p, &raw_path))?;
        let size = match pax.size {
            Some(s) if header_size != 0 && s != header_size => {
                return Err(UnpackError::bad(
                    &raw_path,
                    "PAX size contradicts the header size",
                ));
            }
            Some(s) => s,
            None => header_size,
        };
        let field = |r: &[u8], signed: bool| numeric(r, signed);
        let mode = field(&b[100..108], false).map_err(|r| self.invalid(r))? as u32 & 0o7777;
        let id = |pax_v: Option<u64>, r: &[u8], what: &'static str| -> Result<u32, UnpackError> {
            let v = match pax_v {
                Some(v) => v,
                None => numeric(r, false).map_err(|e| self.invalid(e))? as u64,
            };
            if v >= u64::from(u32::MAX) {
                return Err(UnpackError::bad(&raw_path, what));
            }
            Ok(v as u32)
        };
        let uid = id(
            pax.uid,
            &b[108..116],
            "uid out of range (4294967295 and above)",
        )?;
        let gid = id(
            pax.gid,
            &b[116..124],
            "gid out of range (4294967295 and above)",
        )?;
        let mtime = match pax.mtime {
            Some(t) => t,
            None => Timestamp {
                secs: field(&b[136..148], true).map_err(|r| self.invalid(r))?,
                nanos: 0,
            },
        };
        let dev = |r: &[u8]| -> Result<u32, UnpackError> {
            let v = numeric(r, false).map_err(|e| self.invalid(e))?;
            u32::try_from(v).map_err(|_| self.invalid("device number out of range"))
        };
        let header_only = |kind: EntryKind| -> Result<EntryKind, UnpackError> {
            if size != 0 {
                return Err(UnpackError::bad(
                    &raw_path,
                    "non-zero size on an entry type that has no data",
                ));
            }
            Ok(kind)
        };
        let kind = match typeflag {
            b'0' | b'7' => EntryKind::File,
            0 if raw_path.ends_with(b"/") => header_only(EntryKind::Dir)?,
            0 => EntryKind::File,
            b'5' => header_only(EntryKind::Dir)?,
            b'D' => {
                // GNU dumpdir: a directory whose data lists its content; the data is skipped.
                EntryKind::Dir
            }
            b'2' => {
                if raw_link.is_empty() || raw_link.contains(&0) {
                    return Err(UnpackError::bad(&raw_path, "empty symlink target"));
                }
                if raw_link.len() > self.limits.max_path_len {
                    return Err(path_err(PathProblem::TooLong, &raw_path));
                }
                header_only(EntryKind::Symlink(raw_link))?
            }
            b'1' => {
                let target = clean(&raw_link, &self.limits).map_err(|p| match p {
                    PathProblem::EscapesRoot => {
                        UnpackError::bad(&raw_path, "hardlink target escapes the root")
                    }
                    p => path_err(p, &raw_link),
                })?;
                if target.is_empty() {
                    return Err(UnpackError::bad(
                        &raw_path,
                        "hardlink to the root directory",
                    ));
                }
                header_only(EntryKind::Hardlink(target))?
            }
            b'3' => header_only(EntryKind::Char {
                major: dev(&b[329..337])?,
                minor: dev(&b[337..345])?,
            })?,
            b'4' => header_only(EntryKind::Block {
                major: dev(&b[329..337])?,
                minor: dev(&b[337..345])?,
            })?,
            b'6' => header_only(EntryKind::Fifo)?,
            b'S' if !pax.sparse.any => EntryKind::File,
            _ => {
                return Err(UnpackError::bad(&raw_path, "unsupported tar entry type"));
            }
        };
        if pax.sparse.any && kind != EntryKind::File {
            return Err(UnpackError::bad(
                &raw_path,
                "GNU sparse records on an entry that is not a regular file",
            ));
        }
        // The old GNU format's extension blocks come before the data.
        let gnu_map = match typeflag {
            b'S' => Some(self.gnu_sparse_map(&b, &raw_path)?),
            _ => None,
        };
        self.padding = pad(size);
        self.remaining = size;
        let mut file_size = if kind == EntryKind::File { size } else { 0 };
        if gnu_map.is_some() || pax.sparse.any {
            let bad = |r| UnpackError::bad(&raw_path, r);
            let (map, real) = match gnu_map {
                Some(m) => m,
                None => {
                    let sp = &pax.sparse;
                    let real = sp
                        .size
                        .ok_or_else(|| bad("GNU sparse file without its real size"))?;
                    let map = match sp.version {
                        (Some(1), Some(0)) => self.sparse_map_in_data(&raw_path)?,
                        (None | Some(0), None | Some(0 | 1))
                            if !sp.map.is_empty() || sp.map_record =>
                        {
                            sp.map
                                .iter()
                                .map(|&(at, len)| len.map(|l| (at, l)))
                                .collect::<Option<Vec<_>>>()
                                .filter(|m| sp.count.is_none_or(|n| n == m.len() as u64))
                                .ok_or_else(|| bad("invalid GNU sparse map"))?
                        }
                        _ => return Err(bad("unsupported GNU sparse format")),
                    };
                    (map, real)
                }
            };
            check_sparse_map(&map, real, self.remaining).map_err(bad)?;
            self.holes = self.holes.saturating_add(real - self.remaining);
            if self.offset.saturating_add(self.holes) > self.limits.max_layer_size {
                return Err(UnpackError::Limit {
                    what: "layer size, sparse files' holes included",
                    limit: self.limits.max_layer_size,
                    entry: Some(show(&raw_path[..raw_path.len().min(200)])),
                });
            }
            file_size = real;
            self.sparse = Some(Sparse {
                map,
                next: 0,
                pos: 0,
                size: real,
            });
        }
        Ok(Entry {
            path,
            kind,
            size: file_size,
            mode,
            uid,
            gid,
            mtime,
            xattrs: pax.xattrs,
        })
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>, UnpackError> {
        let mut r = TarReader::new(tar, &Limits::default());
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut data = Vec::new();
            let mut buf = [0u8; 7];
            loop {
                let n = r.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            out.push((e, data));
        }
        Ok(out)
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(numeric(b"0000644\0", false), Ok(0o644));
        assert_eq!(numeric(b"  644 \0\0", false), Ok(0o644));
        assert_eq!(numeric(b"\0\0\0\0\0\0\0\0", false), Ok(0));
        assert_eq!(numeric(b"        ", false), Ok(0));
        assert!(numeric(b"0000x44\0", false).is_err());
        assert!(numeric(b"12 34\0\0\0", false).is_err());
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[8..].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        assert_eq!(numeric(&f, false), Ok(0xffff_ffff));
        let neg = [0xffu8; 12];
        assert_eq!(numeric(&neg, true), Ok(-1));
        assert!(numeric(&neg, false).is_err());
    }

    #[test]
    fn pax_records_and_times() {
        let mut data = hoist_testkit::evil::pax_record("path", b"a\nb");
        data.extend(hoist_testkit::evil::pax_record(
            "SCHILY.xattr.user.x",
            b"\n\0v",
        ));
        data.extend(hoist_testkit::evil::pax_record(
            "SCHILY.xattr.trusted.overlay.opaque",
            b"y",
        ));
        data.extend(hoist_testkit::evil::pax_record("mtime", b"1.25"));
        let p = parse_pax(&data, &Limits::default()).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(p.xattrs, vec![(b"user.x".to_vec(), b"\n\0v".to_vec())]);
        assert_eq!(
            p.mtime,
            Some(Timestamp {
                secs: 1,
                nanos: 250_000_000
            })
        );
        assert_eq!(
            pax_time(b"-1.5"),
            Some(Timestamp {
                secs: -2,
                nanos: 500_000_000
            })
        );
        assert!(parse_pax(b"9 path=ab\n", &Limits::default()).is_err());
        assert!(parse_pax(b"22 GNU.sparse.major=x\n", &Limits::default()).is_err());
    }

    #[test]
    fn reads_generated_layers() {
        use hoist_testkit::images::{Entry as E, tar_bytes};
        let long = format!("{}/f", "d".repeat(150));
        let t = tar_bytes(&[
            E::dir("etc"),
            E::file("etc/a", "hello")
                .owner(1000, 1001)
                .xattr("user.k", "v"),
            E::symlink("etc/s", "a"),
            E::hardlink("etc/h", "etc/a"),
            E::file(&long, "long"),
            E::char_device("dev/null", 1, 3),
            E::fifo("p"),
        ])
        .unwrap();
        let es = entries(&t).unwrap();
        assert_eq!(es.len(), 7);
        assert_eq!(es[0].0.kind, EntryKind::Dir);
        assert_eq!(es[1].0.path, b"etc/a");
        assert_eq!(es[1].1, b"hello");
        assert_eq!((es[1].0.uid, es[1].0.gid), (1000, 1001));
        assert_eq!(es[1].0.xattrs, vec![(b"user.k".to_vec(), b"v".to_vec())]);
        assert_eq!(es[2].0.kind, EntryKind::Symlink(b"a".to_vec()));
        assert_eq!(es[3].0.kind, EntryKind::Hardlink(b"etc/a".to_vec()));
        assert_eq!(es[4].0.path, long.as_bytes());
        assert_eq!(es[4].1, b"long");
        assert_eq!(es[5].0.kind, EntryKind::Char { major: 1, minor: 3 });
        assert_eq!(es[6].0.kind, EntryKind::Fifo);
    }

    #[test]
    fn sparse_files_read_as_their_contents() {
        use hoist_testkit::evil::{PaxSparse, RawTar};
        let segs: [(u64, &[u8]); 3] = [(512, b"abc"), (2000, b"z"), (4096, b"")];
        let mut want = vec![0u8; 4096];
        want[512..515].copy_from_slice(b"abc");
        want[2000] = b'z';
        let tars = [
            RawTar::new().gnu_sparse(b"s", &segs, 4096).finish(),
            RawTar::new()
                .pax_sparse(PaxSparse::V0_0, b"s", &segs, 4096)
                .finish(),
            RawTar::new()
                .pax_sparse(PaxSparse::V0_1, b"s", &segs, 4096)
                .finish(),
            RawTar::new()
                .pax_sparse(PaxSparse::V1_0, b"s", &segs, 4096)
                .finish(),
        ];
        for (i, t) in tars.iter().enumerate() {
            let mut with_next = t[..t.len() - 1024].to_vec();
            with_next.extend(RawTar::new().file(b"next", b"after").finish());
            let es = entries(&with_next).unwrap_or_else(|e| panic!("form {i}: {e}"));
            assert_eq!(es.len(), 2, "form {i}");
            assert_eq!(
                (&es[0].0.path[..], es[0].0.size),
                (&b"s"[..], 4096),
                "form {i}"
            );
            assert!(es[0].1 == want, "form {i}: contents");
            assert_eq!(es[1].1, b"after", "form {i}: the next entry");
            // Holes can be passed over instead of read.
            let mut r = TarReader::new(&t[..], &Limits::default());
            r.next_entry().unwrap().unwrap();
            assert!(r.is_sparse());
            assert_eq!(r.skip_hole(), 512);
            let mut buf = [0u8; 64];
            assert_eq!(r.read_data(&mut buf).unwrap(), 3);
            assert_eq!(&buf[..3], b"abc");
            assert_eq!(r.skip_hole(), 2000 - 515);
            assert_eq!(r.read_data(&mut buf).unwrap(), 1);
            assert_eq!(r.skip_hole(), 4096 - 2001);
            assert_eq!(r.read_data(&mut buf).unwrap(), 0);
            assert!(r.next_entry().unwrap().is_none());
            assert!(!r.is_sparse());
        }
        let err = |t: &RawTar| entries(&t.finish()).unwrap_err().to_string();
        let e = err(RawTar::new().gnu_sparse(b"s", &[(0, b"abcd"), (2, b"xy")], 16));
        assert!(e.contains("out of order or overlapping"), "{e}");
        let e = err(RawTar::new().pax_sparse(PaxSparse::V0_1, b"s", &[(10, b"abcdef")], 12));
        assert!(e.contains("past the file's size"), "{e}");
        let e = err(RawTar::new().gnu_sparse(b"s", &[((1 << 40) - 1, b"x")], 1 << 40));
        assert!(e.contains("sparse files' holes included"), "{e}");
        let mut t = RawTar::new();
        t.pax(&[("GNU.sparse.size", b"100"), ("GNU.sparse.map", b"0,10")]);
        t.file(b"s", b"abcd");
        assert!(err(&t).contains("does not add up"), "{}", err(&t));
        let mut t = RawTar::new();
        t.pax(&[("GNU.sparse.major", b"2"), ("GNU.sparse.realsize", b"1")]);
        t.file(b"s", b"");
        assert!(err(&t).contains("unsupported GNU sparse format"));
        let mut t = RawTar::new();
        t.pax(&[("GNU.sparse.size", b"4"), ("GNU.sparse.map", b"0,4")]);
        t.dir(b"d", 0o755);
        assert!(err(&t).contains("not a regular file"));
    }

    #[test]
    fn refuses_tricks() {
        use hoist_testkit::evil::{RawTar, flag};
        // PAX size contradicting the header.
        let mut t = RawTar::new();
        t.pax(&[("size", b"1024")]);
        t.raw(b"p", flag::FILE, 0o644, 0, 0, 10, b"", &[0u8; 1536]);
        assert!(entries(&t.finish()).is_err());
        // PAX size with a zero header size (Go's large files) is honoured.
        let mut t = RawTar::new();
        t.pax(&[("size", b"3")]);
        t.raw(b"p", flag::FILE, 0o644, 0, 0, 0, b"", b"abc");
        assert_eq!(entries(&t.finish()).unwrap()[0].1, b"abc");
        // A symlink with data.
        let mut t = RawTar::new();
        t.raw(b"s", flag::SYMLINK, 0o777, 0, 0, 5, b"x", b"12345");
        assert!(entries(&t.finish()).is_err());
        // uid -1.
        let mut t = RawTar::new();
        t.pax(&[("uid", b"4294967295")]);
        t.file(b"u", b"");
        assert!(entries(&t.finish()).is_err());
        // Extension header at the end.
        let mut t = RawTar::new();
        t.pax(&[("path", b"x")]);
        assert!(entries(&t.finish()).is_err());
        // Corrupt checksum.
        let mut bytes = RawTar::new().file(b"f", b"x").finish();
        bytes[0] = b'g';
        assert!(entries(&bytes).is_err());
        // Truncated data.
        let bytes = RawTar::new().file(b"f", &[1u8; 2000]).finish();
        assert!(entries(&bytes[..1000]).is_err());
        // No end-of-archive blocks is accepted.
        let bytes = RawTar::new().file(b"f", b"x").finish();
        assert_eq!(entries(&bytes[..1024]).unwrap().len(), 1);
        // Escaping hardlink target.
        let bytes = RawTar::new().hardlink(b"h", b"../x", 0o644).finish();
        assert!(entries(&bytes).is_err());
    }
}
