//! The layer stream: one pass that decompresses a blob, caps the decompressed size, and
//! hashes the decompressed bytes into the diff ID. Every consumer (unpack, flatten, rootfs
//! builds, archive loads) reads layers through it.
//!
//! The compression is known two ways:
//! - from the media type ([`LayerStream::open`]: registry and store blobs), checked against
//!   the magic bytes; OCI and Docker media types name only gzip, zstd or none;
//! - from the content alone ([`LayerStream::detect`]: docker-archive layers and whole
//!   archives, where `docker load` and skopeo also read bzip2 and xz). A compression hoist
//!   does not read (lz4, lzip, compress) is refused by name
//!   ([`UnpackError::UnsupportedCompression`]), before any byte is hashed.
//!
//! Decoder limits: the decompressed size ([`Limits::max_layer_size`]), the zstd window
//! ([`Limits::zstd_window_log_max`]) and the xz decoder's memory ([`XZ_MEMLIMIT`]); bzip2's
//! memory is bounded by its format (900 kB blocks).

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use hoist_types::{Algorithm, Compression, Digest, Hasher, MediaType, Progress, ProgressEvent};

use crate::error::{LimitExceeded, stream_error};
use crate::tar::TarReader;
use crate::{Limits, UnpackError};

/// Buffer size of the compressed side.
const READ_BUFFER: usize = 1 << 20;
/// Progress is reported at most once per this many compressed bytes.
const PROGRESS_STEP: u64 = 4 << 20;
/// Most memory the xz decoder may use: enough for `xz -9e` (64 MiB dictionary) with a wide
/// margin; a stream that needs more is refused, not decoded.
pub const XZ_MEMLIMIT: u64 = 256 << 20;

/// A compression the layer stream decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Not compressed (a plain tar).
    None,
    /// gzip (RFC 1952), one or several members.
    Gzip,
    /// zstd, one or several frames.
    Zstd,
    /// bzip2, one or several streams.
    Bzip2,
    /// xz, one or several streams.
    Xz,
}

impl Codec {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "uncompressed",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::Bzip2 => "bzip2",
            Codec::Xz => "xz",
        }
    }

    /// The compression a media type can declare, if this is one.
    pub fn compression(self) -> Option<Compression> {
        match self {
            Codec::None => Some(Compression::None),
            Codec::Gzip => Some(Compression::Gzip),
            Codec::Zstd => Some(Compression::Zstd),
            Codec::Bzip2 | Codec::Xz => None,
        }
    }
}

impl From<Compression> for Codec {
    fn from(c: Compression) -> Codec {
        match c {
            Compression::None => Codec::None,
            Compression::Gzip => Codec::Gzip,
            Compression::Zstd => Codec::Zstd,
        }
    }
}

/// Magic bytes of compressions hoist does not decode, with their names.
const UNSUPPORTED: &[(&[u8], &str)] = &[
    (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
    (&[0x02, 0x21, 0x4c, 0x18], "lz4 (legacy frame)"),
    (b"LZIP", "lzip"),
    (&[0x1f, 0x9d], "compress (.Z)"),
    (&[0x1f, 0xa0], "compress (LZH)"),
    (&[0x89, b'L', b'Z', b'O', 0x00, 0x0d, 0x0a, 0x1a], "lzop"),
];

/// Whether `head` starts with a tar header whose checksum is right: such content is a tar,
/// whatever its first bytes (a file name) look like.
fn is_tar_header(head: &[u8]) -> bool {
    let Some(h) = head.get(..512) else {
        return false;
    };
    let field = &h[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if digits.is_empty() {
        return false;
    }
    let Ok(want) = u64::from_str_radix(std::str::from_utf8(&digits).unwrap_or("x"), 8) else {
        return false;
    };
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    sum == want
}

/// What the first bytes of a stream are: a compression hoist decodes (uncompressed when no
/// magic matches), or the name of one it does not. Content that starts with a valid tar
/// header is a tar, whatever its first file is called. Pass at least 512 bytes where there
/// are that many.
pub fn detect(head: &[u8]) -> Result<Codec, &'static str> {
    if is_tar_header(head) {
        return Ok(Codec::None);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Codec::Gzip);
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18])
    {
        return Ok(Codec::Zstd);
    }
    // "BZh" and a block size digit, then a block or end-of-stream magic.
    if head.len() >= 10
        && head.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&head[3])
        && (head[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
            || head[4..10] == [0x17, 0x72, 0x45, 0x38, 0x50, 0x90])
    {
        return Ok(Codec::Bzip2);
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Ok(Codec::Xz);
    }
    match UNSUPPORTED.iter().find(|(m, _)| head.starts_with(m)) {
        Some((_, name)) => Err(name),
        None => Ok(Codec::None),
    }
}

/// What the first bytes of a blob say it is, by name.
pub fn sniff(head: &[u8]) -> &'static str {
    match detect(head) {
        Ok(c) => c.name(),
        Err(name) => name,
    }
}

/// Counts compressed bytes and reports progress.
struct Counting<'p, R> {
    inner: R,
    /// The first bytes, read ahead to detect the compression; served before `inner`.
    head: Vec<u8>,
    head_pos: usize,
    done: u64,
    reported: u64,
    digest: Option<Digest>,
    progress: &'p dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head_pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.head_pos);
            buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= PROGRESS_STEP
            && let Some(d) = &self.digest
        {
            self.reported = self.done;
            self.progress.event(&ProgressEvent::BlobProgress {
                digest: d,
                done: self.done,
            });
        }
        Ok(n)
    }
}

enum Decoder<'p, R: Read> {
    Plain(BufReader<Counting<'p, R>>),
    Gzip(Box<GzipMembers<BufReader<Counting<'p, R>>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Counting<'p, R>>>>),
    Bzip2(Box<bzip2::bufread::MultiBzDecoder<BufReader<Counting<'p, R>>>>),
    Xz(Box<liblzma::bufread::XzDecoder<BufReader<Counting<'p, R>>>>),
}

/// A decompressed, size-capped, hashing view of a layer blob.
pub struct LayerStream<'p, R: Read> {
    decoder: Decoder<'p, R>,
    codec: Codec,
    hasher: Hasher,
    /// Off when the consumer of a [`piped`] stream hashes instead.
    hashing: bool,
    total: u64,
    limit: u64,
}

impl<R: Read> std::fmt::Debug for LayerStream<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStream")
            .field("total", &self.total)
            .field("limit", &self.limit)
            .finish()
    }
}

impl<'p, R: Read> LayerStream<'p, R> {
    /// Opens `blob`, whose media type is `media_type`, hashing the decompressed bytes with
    /// `algorithm` (the diff ID's). The magic bytes must agree with the media type: gzip
    /// content labelled zstd or uncompressed (and so on) is refused. `digest`, when given,
    /// names the blob in progress events.
    pub fn open(
        blob: R,
        media_type: &MediaType,
        algorithm: Algorithm,
        limits: &Limits,
        digest: Option<&Digest>,
        progress: &'p dyn Progress,
    ) -> Result<LayerStream<'p, R>, UnpackError> {
        let declared =
            media_type
                .layer_compression()
                .ok_or_else(|| UnpackError::UnsupportedMediaType {
                    media_type: media_type.clone(),
                })?;
        let mut buffered = Self::buffered(blob, digest, progress)?;
        let found = detect(
            buffered
                .fill_buf()
                .map_err(|source| UnpackError::Stream { source })?,
        );
        if found != Ok(Codec::from(declared)) {
            return Err(UnpackError::CompressionMismatch {
                media_type: media_type.clone(),
                declared,
                found: found.map_or_else(|name| name, Codec::name),
            });
        }
        Self::with_codec(buffered, Codec::from(declared), algorithm, limits)
    }

    /// Opens `blob` compressed with `compression`, without checking its magic bytes (a
    /// caller that converts a layer it has already verified, such as a recompressing
    /// copy): the same decoders, limits (decompressed size, zstd window) and diff ID
    /// hashing as [`LayerStream::open`].
    pub fn with_compression(
        blob: R,
        compression: Compression,
        algorithm: Algorithm,
        limits: &Limits,
        progress: &'p dyn Progress,
    ) -> Result<LayerStream<'p, R>, UnpackError> {
        let buffered = Self::buffered(blob, None, progress)?;
        Self::with_codec(buffered, Codec::from(compression), algorithm, limits)
    }

    /// Opens `blob` of unknown compression, detected from its first bytes: gzip, zstd,
    /// bzip2, xz or none (docker-archive layers, whole archives). A compression hoist does
    /// not decode is refused with [`UnpackError::UnsupportedCompression`]. Otherwise as
    /// [`LayerStream::open`].
    pub fn detect(
        blob: R,
        algorithm: Algorithm,
        limits: &Limits,
        digest: Option<&Digest>,
        progress: &'p dyn Progress,
    ) -> Result<LayerStream<'p, R>, UnpackError> {
        let mut buffered = Self::buffered(blob, digest, progress)?;
        let codec = detect(
            buffered
                .fill_buf()
                .map_err(|source| UnpackError::Stream { source })?,
        )
        .map_err(|found| UnpackError::UnsupportedCompression { found })?;
        Self::with_codec(buffered, codec, algorithm, limits)
    }

    /// The blob behind a progress counter and a buffer holding at least its first 512
    /// bytes (fewer only when the blob is shorter), for [`detect`].
    fn buffered(
        blob: R,
        digest: Option<&Digest>,
        progress: &'p dyn Progress,
    ) -> Result<BufReader<Counting<'p, R>>, UnpackError> {
        let mut counting = Counting {
            inner: blob,
            head: Vec::with_capacity(512),
            head_pos: 0,
            done: 0,
            reported: 0,
            digest: digest.cloned(),
            progress,
        };
        // A short first read (a pipe, a network chunk) must not hide the magic bytes: the
        // first 512 bytes are read whole, and handed out first.
        let mut head = Vec::with_capacity(512);
        (&mut counting)
            .take(512)
            .read_to_end(&mut head)
            .map_err(|source| UnpackError::Stream { source })?;
        counting.head = head;
        let mut buffered = BufReader::with_capacity(READ_BUFFER, counting);
        buffered
            .fill_buf()
            .map_err(|source| UnpackError::Stream { source })?;
        Ok(buffered)
    }

    fn with_codec(
        buffered: BufReader<Counting<'p, R>>,
        codec: Codec,
        algorithm: Algorithm,
        limits: &Limits,
    ) -> Result<LayerStream<'p, R>, UnpackError> {
        let decoder = match codec {
            Codec::None => Decoder::Plain(buffered),
            Codec::Gzip => Decoder::Gzip(Box::new(GzipMembers::new(buffered))),
            Codec::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(|source| UnpackError::Stream { source })?;
                d.window_log_max(limits.zstd_window_log_max)
                    .map_err(|source| UnpackError::Stream { source })?;
                Decoder::Zstd(Box::new(d))
            }
            Codec::Bzip2 => Decoder::Bzip2(Box::new(bzip2::bufread::MultiBzDecoder::new(buffered))),
            Codec::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMLIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(|e| UnpackError::Stream {
                    source: io::Error::other(e),
                })?;
                Decoder::Xz(Box::new(liblzma::bufread::XzDecoder::new_stream(
                    buffered, stream,
                )))
            }
        };
        Ok(LayerStream {
            decoder,
            codec,
            hasher: Hasher::new(algorithm),
            hashing: true,
            total: 0,
            limit: limits.max_layer_size,
        })
    }

    /// The compression being decoded.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Stop hashing (a consumer that needs only the decompressed bytes: a whole archive
    /// spooled before it is indexed); [`LayerStream::finish`] then returns the digest of
    /// nothing.
    pub fn without_hashing(mut self) -> Self {
        self.hashing = false;
        self
    }

    /// Decompressed bytes so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Compressed bytes read so far.
    pub fn compressed(&self) -> u64 {
        match &self.decoder {
            Decoder::Plain(b) => b.get_ref().done,
            Decoder::Gzip(d) => d.get_ref().get_ref().done,
            Decoder::Zstd(d) => d.get_ref().get_ref().done,
            Decoder::Bzip2(d) => d.get_ref().get_ref().done,
            Decoder::Xz(d) => d.get_ref().get_ref().done,
        }
    }

    /// Reads the rest of the stream (which must be zero bytes when `zeros_only`: what
    /// follows a tar's end-of-archive marker), and returns the diff ID and the decompressed
    /// size. Reading to the end also checks the compressed framing (gzip CRC and length,
    /// trailing garbage, truncation).
    pub fn finish(mut self, zeros_only: bool) -> Result<(Digest, u64), UnpackError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = self.read(&mut buf).map_err(stream_error)?;
            if n == 0 {
                break;
            }
            if zeros_only && buf[..n].iter().any(|b| *b != 0) {
                return Err(UnpackError::InvalidTar {
                    offset: self.total - n as u64,
                    reason: "data after the end-of-archive marker".into(),
                });
            }
        }
        Ok((self.hasher.finish(), self.total))
    }
}

impl<R: Read> Read for LayerStream<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.decoder {
            Decoder::Plain(r) => r.read(buf)?,
            Decoder::Gzip(r) => r.read(buf)?,
            Decoder::Zstd(r) => r.read(buf)?,
            Decoder::Bzip2(r) => r.read(buf)?,
            Decoder::Xz(r) => r.read(buf)?,
        };
        self.total += n as u64;
        if self.total > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                LimitExceeded(self.limit),
            ));
        }
        if self.hashing {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// gzip (RFC 1952), one member or several in a row, decoded as raw deflate with the member
/// headers and trailers read here: each trailer's length is checked, and its CRC-32 too
/// unless `check_crc` was turned off by a consumer that checks a digest of the output
/// (the diff ID) instead. Anything after a member but another member is an error, as is a
/// stream that ends early.
pub(crate) struct GzipMembers<R: BufRead> {
    inflate: Option<flate2::bufread::DeflateDecoder<R>>,
    crc: flate2::Crc,
    /// Bytes of the current member's output, modulo 2^32 (the trailer's ISIZE).
    len: u32,
    state: GzState,
    pub(crate) check_crc: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GzState {
    /// Before a member's header (`true`: the first, which must be there).
    Header(bool),
    Body,
    Done,
}

fn gz_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt gzip stream: {what}"),
    )
}

impl<R: BufRead> GzipMembers<R> {
    fn new(r: R) -> GzipMembers<R> {
        GzipMembers {
            inflate: Some(flate2::bufread::DeflateDecoder::new(r)),
            crc: flate2::Crc::new(),
            len: 0,
            state: GzState::Header(true),
            check_crc: true,
        }
    }

    fn reader(&mut self) -> &mut R {
        self.inflate.as_mut().expect("always there").get_mut()
    }

    /// The compressed reader.
    fn get_ref(&self) -> &R {
        self.inflate.as_ref().expect("always there").get_ref()
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.reader().read_exact(&mut b)?;
        Ok(b[0])
    }

    /// Skips a zero-terminated field of the header.
    fn skip_cstr(&mut self) -> io::Result<()> {
        while self.byte()? != 0 {}
        Ok(())
    }

    /// Reads a member's header (RFC 1952 2.3.1); `false` at the end of the stream, where
    /// a member may end it.
    fn header(&mut self, first: bool) -> io::Result<bool> {
        if !first && self.reader().fill_buf()?.is_empty() {
            return Ok(false);
        }
        let mut h = [0u8; 10];
        self.reader().read_exact(&mut h)?;
        if h[0..2] != [0x1f, 0x8b] {
            return Err(gz_error("no gzip header where a member starts"));
        }
        if h[2] != 8 {
            return Err(gz_error("compression method is not deflate"));
        }
        let flags = h[3];
        if flags & 0xe0 != 0 {
            return Err(gz_error("reserved header flags set"));
        }
        if flags & 0x04 != 0 {
            let mut x = [0u8; 2];
            self.reader().read_exact(&mut x)?;
            let mut extra = self.reader().take(u64::from(u16::from_le_bytes(x)));
            if io::copy(&mut extra, &mut io::sink())? != u64::from(u16::from_le_bytes(x)) {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        if flags & 0x08 != 0 {
            self.skip_cstr()?;
        }
        if flags & 0x10 != 0 {
            self.skip_cstr()?;
        }
        if flags & 0x02 != 0 {
            let mut crc16 = [0u8; 2];
            self.reader().read_exact(&mut crc16)?;
        }
        Ok(true)
    }

    /// Reads and checks a member's trailer, and makes ready for the next member.
    fn trailer(&mut self) -> io::Result<()> {
        let mut t = [0u8; 8];
        self.reader().read_exact(&mut t)?;
        let crc = u32::from_le_bytes(t[0..4].try_into().expect("4 bytes"));
        let isize = u32::from_le_bytes(t[4..8].try_into().expect("4 bytes"));
        if isize != self.len {
            return Err(gz_error("length in the trailer differs"));
        }
        if self.check_crc && crc != self.crc.sum() {
            return Err(gz_error("CRC-32 in the trailer differs"));
        }
        let r = self.inflate.take().expect("always there").into_inner();
        self.inflate = Some(flate2::bufread::DeflateDecoder::new(r));
        self.crc.reset();
        self.len = 0;
        Ok(())
    }
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                GzState::Done => return Ok(0),
                GzState::Header(first) => {
                    self.state = if self.header(first)? {
                        GzState::Body
                    } else {
                        GzState::Done
                    };
                }
                GzState::Body => {
                    let n = self.inflate.as_mut().expect("always there").read(buf)?;
                    if n > 0 {
                        if self.check_crc {
                            self.crc.update(&buf[..n]);
                        }
                        self.len = self.len.wrapping_add(n as u32);
                        return Ok(n);
                    }
                    self.trailer()?;
                    self.state = GzState::Header(false);
                }
            }
        }
    }
}

/// Chunks the decompression thread hands over.
const CHUNK: usize = 1 << 20;

/// The consuming end of a [`piped`] layer: the decompressed bytes, in order.
pub(crate) struct ChannelReader {
    /// The diff ID, as the bytes are read.
    hasher: Hasher,
    rx: Receiver<io::Result<Vec<u8>>>,
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.eof {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.hasher.update(&chunk);
                    let old = std::mem::replace(&mut self.cur, chunk);
                    self.pos = 0;
                    let _ = self.back.try_send(old);
                }
                Ok(Err(e)) => {
                    self.eof = true;
                    return Err(e);
                }
                Err(_) => {
                    self.eof = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What the decompression thread computed.
pub(crate) struct Pumped {
    pub digest: Digest,
    pub total: u64,
    pub compressed: u64,
}

/// Decompresses `stream` on a second thread while `consume` hashes and parses the tar on
/// this one: the two halves of a layer pass overlap on two cores (inflate is the heavier
/// half, so the SHA-256 runs here). After `consume`, the rest
/// of the stream is read (zero bytes only, when the tar's end marker was seen) and the diff
/// ID returned with `consume`'s result.
pub(crate) fn piped<R: Read + Send, T>(
    stream: LayerStream<'_, R>,
    limits: &Limits,
    consume: impl FnOnce(&mut TarReader<ChannelReader>) -> Result<T, UnpackError>,
) -> Result<(T, Pumped), UnpackError> {
    let algorithm = stream.hasher.algorithm();
    let mut stream = stream;
    stream.hashing = false;
    // The bytes are hashed here and every caller compares the digest with the diff ID,
    // which says more than gzip's CRC-32: the CRC is not computed (the trailer's length
    // still is checked).
    if let Decoder::Gzip(g) = &mut stream.decoder {
        g.check_crc = false;
    }
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(4);
        let (btx, brx) = sync_channel::<Vec<u8>>(8);
        let worker = s.spawn(move || -> Result<(u64, u64), UnpackError> {
            let mut stream = stream;
            loop {
                let mut chunk = brx.try_recv().unwrap_or_default();
                chunk.resize(CHUNK, 0);
                let mut filled = 0;
                let mut err = None;
                while filled < CHUNK {
                    match stream.read(&mut chunk[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                chunk.truncate(filled);
                if filled > 0 && tx.send(Ok(chunk)).is_err() {
                    return Err(UnpackError::Stream {
                        source: io::Error::other("the consumer stopped"),
                    });
                }
                if let Some(e) = err {
                    let _ = tx.send(Err(e));
                    return Err(UnpackError::Stream {
                        source: io::Error::other("decompression failed"),
                    });
                }
                if filled < CHUNK {
                    break;
                }
            }
            let compressed = stream.compressed();
            let (_, total) = stream.finish(false)?;
            Ok((total, compressed))
        });
        let reader = ChannelReader {
            hasher: Hasher::new(algorithm),
            rx,
            back: btx,
            cur: Vec::new(),
            pos: 0,
            eof: false,
        };
        let mut tar = TarReader::new(reader, limits);
        let out = match consume(&mut tar) {
            Ok(v) => {
                let ended = tar.saw_end();
                let offset = tar.offset();
                let mut rest = tar.into_inner();
                drain(&mut rest, ended, offset).map(|()| (v, rest.hasher.finish()))
            }
            Err(e) => {
                // Hang up, so the decompression thread stops instead of waiting to send.
                drop(tar);
                Err(e)
            }
        };
        // A panic of the decompressor (a bug below us, on hostile input) is an error here,
        // not a panic of the caller.
        let pumped = worker.join().unwrap_or(Err(UnpackError::WorkerPanicked {
            what: "decompression",
        }));
        let (v, digest) = out?;
        let (total, compressed) = pumped?;
        Ok((
            v,
            Pumped {
                digest,
                total,
                compressed,
            },
        ))
    })
}

/// Reads `r` to its end; with `zeros_only`, anything but zero bytes is an error.
fn drain(r: &mut impl Read, zeros_only: bool, mut offset: u64) -> Result<(), UnpackError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).map_err(stream_error)?;
        if n == 0 {
            return Ok(());
        }
        if zeros_only && buf[..n].iter().any(|b| *b != 0) {
            return Err(UnpackError::InvalidTar {
                offset,
                reason: "data after the end-of-archive marker".into(),
            });
        }
        offset += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_types::NoProgress;
    use std::io::Write as _;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn run(blob: &[u8], mt: &str, limits: &Limits) -> Result<(Digest, u64), UnpackError> {
        let s = LayerStream::open(
            blob,
            &MediaType::parse(mt),
            Algorithm::Sha256,
            limits,
            None,
            &NoProgress,
        )?;
        s.finish(false)
    }

    const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

    #[test]
    fn decodes_and_hashes() {
        let data = b"hello world".repeat(1000);
        let want = Digest::sha256_of(&data);
        let l = Limits::default();
        assert_eq!(run(&gz(&data), GZ, &l).unwrap(), (want.clone(), 11000));
        let z = zstd::stream::encode_all(data.as_slice(), 3).unwrap();
        assert_eq!(run(&z, ZST, &l).unwrap().0, want);
        assert_eq!(run(&data, TAR, &l).unwrap().0, want);
        // Two gzip members are one stream.
        let mut two = gz(&data[..5000]);
        two.extend(gz(&data[5000..]));
        assert_eq!(run(&two, GZ, &l).unwrap().0, want);
    }

    #[test]
    fn refuses_lies_and_damage() {
        let data = b"x".repeat(100_000);
        let l = Limits::default();
        let z = zstd::stream::encode_all(data.as_slice(), 3).unwrap();
        let g = gz(&data);
        for (blob, mt) in [(&z, GZ), (&g, ZST), (&g, TAR), (&data, GZ)] {
            assert!(
                matches!(
                    run(blob, mt, &l),
                    Err(UnpackError::CompressionMismatch { .. })
                ),
                "{mt}"
            );
        }
        let truncated = &g[..g.len() - 5];
        assert!(matches!(
            run(truncated, GZ, &l),
            Err(UnpackError::Stream { .. })
        ));
        let mut garbage = g.clone();
        garbage.extend_from_slice(b"garbage!");
        assert!(run(&garbage, GZ, &l).is_err());
        let small = Limits {
            max_layer_size: 1000,
            ..Limits::default()
        };
        let e = run(&g, GZ, &small).unwrap_err();
        assert!(e.to_string().contains("1000"), "{e}");
        assert!(matches!(
            run(&g, "application/vnd.oci.image.config.v1+json", &l),
            Err(UnpackError::UnsupportedMediaType { .. })
        ));
    }

    /// gzip members as hoist decodes them: headers with every optional field, several
    /// members, the trailer's length always checked and its CRC-32 unless turned off.
    #[test]
    fn gzip_members_are_read_and_checked() {
        let data = b"some layer bytes ".repeat(5000);
        let read = |blob: &[u8], check_crc: bool| -> io::Result<Vec<u8>> {
            let mut g = GzipMembers::new(blob);
            g.check_crc = check_crc;
            let mut out = Vec::new();
            g.read_to_end(&mut out)?;
            Ok(out)
        };
        // A name, a comment, an extra field and a header CRC.
        let mut named = flate2::GzBuilder::new()
            .filename("layer.tar")
            .comment("hi")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        named.write_all(&data).unwrap();
        let named = named.finish().unwrap();
        let mut two = gz(&data[..1000]);
        two.extend(named.clone());
        for blob in [gz(&data), named.clone()] {
            assert_eq!(read(&blob, true).unwrap(), data);
        }
        let mut want = data[..1000].to_vec();
        want.extend_from_slice(&data);
        assert_eq!(read(&two, true).unwrap(), want);
        assert_eq!(read(&two, false).unwrap(), want);
        // A wrong CRC: refused when checked (the digest of the output catches it else).
        let mut bad_crc = gz(&data);
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        assert!(read(&bad_crc, true).is_err());
        assert_eq!(read(&bad_crc, false).unwrap(), data);
        // A wrong length, a cut stream, garbage after a member: refused either way.
        let mut bad_len = gz(&data);
        bad_len[n - 4] ^= 1;
        let mut garbage = gz(&data);
        garbage.extend_from_slice(b"garbage!");
        let cut = gz(&data)[..n - 5].to_vec();
        let mid = gz(&data)[..n / 2].to_vec();
        for (what, blob) in [
            ("length", bad_len),
            ("garbage", garbage),
            ("cut", cut),
            ("mid", mid),
        ] {
            for check in [true, false] {
                assert!(read(&blob, check).is_err(), "{what}, crc {check}");
            }
        }
    }

    fn bz(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A reader that hands out one byte per call (a pipe at its worst).
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            if buf.is_empty() {
                return Ok(0);
            }
            buf[0] = *b;
            self.0 = rest;
            Ok(1)
        }
    }

    fn detected(blob: impl Read, l: &Limits) -> Result<(Codec, Digest, u64), UnpackError> {
        let s = LayerStream::detect(blob, Algorithm::Sha256, l, None, &NoProgress)?;
        let codec = s.codec();
        let (d, n) = s.finish(false)?;
        Ok((codec, d, n))
    }

    #[test]
    fn detects_every_codec_by_content() {
        let data = b"a layer that is not really a tar ".repeat(2000);
        let want = Digest::sha256_of(&data);
        let l = Limits::default();
        let z = zstd::stream::encode_all(data.as_slice(), 3).unwrap();
        let mut two_bz = bz(&data[..1000]);
        two_bz.extend(bz(&data[1000..]));
        let mut two_xz = xz(&data[..1000]);
        two_xz.extend(xz(&data[1000..]));
        let cases = [
            (gz(&data), Codec::Gzip),
            (z, Codec::Zstd),
            (bz(&data), Codec::Bzip2),
            (xz(&data), Codec::Xz),
            (two_bz, Codec::Bzip2),
            (two_xz, Codec::Xz),
            (data.clone(), Codec::None),
        ];
        for (blob, codec) in cases {
            let got = detected(blob.as_slice(), &l).unwrap();
            assert_eq!(got, (codec, want.clone(), data.len() as u64), "{codec:?}");
            // Read a byte at a time, the magic is still seen.
            let got = detected(Trickle(&blob), &l).unwrap();
            assert_eq!(got.0, codec, "{codec:?}, trickled");
        }
        // The size cap holds for the new decoders too.
        let small = Limits {
            max_layer_size: 1000,
            ..Limits::default()
        };
        for blob in [bz(&data), xz(&data)] {
            let e = detected(blob.as_slice(), &small).unwrap_err();
            assert!(e.to_string().contains("1000"), "{e}");
        }
        // Damage is an error, not a short layer.
        for blob in [bz(&data), xz(&data)] {
            let cut = &blob[..blob.len() - 8];
            assert!(detected(cut, &l).is_err());
        }
    }

    #[test]
    fn refuses_unsupported_compressions_by_name() {
        let l = Limits::default();
        for (head, name) in [
            (&[0x04u8, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7][..], "lz4"),
            (b"LZIP\x01\x0c", "lzip"),
            (&[0x1f, 0x9d, 0x90][..], "compress (.Z)"),
        ] {
            let mut blob = head.to_vec();
            blob.extend_from_slice(&[0u8; 600]);
            match detected(blob.as_slice(), &l) {
                Err(e @ UnpackError::UnsupportedCompression { .. }) => {
                    assert!(
                        e.to_string()
                            .contains(&format!("{name} compression is not supported")),
                        "{e}"
                    );
                }
                other => panic!("{name}: {other:?}"),
            }
            // Labelled as a plain tar, it is a mismatch, named.
            let e = run(&blob, TAR, &l).unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn a_tar_is_a_tar_whatever_its_first_name() {
        // A valid tar whose first file is called like a magic number.
        let mut b = tar::Builder::new(Vec::new());
        for name in ["LZIP", "BZh91AY&SY"] {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_size(1);
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
        }
        let t = b.into_inner().unwrap();
        assert_eq!(detect(&t), Ok(Codec::None));
        // The same first bytes without a valid header around them are what they look like.
        assert_eq!(detect(&t[..100]), Err("lzip"));
        let mut bzh = b"BZh91AY&SY".to_vec();
        bzh.resize(600, 0);
        assert_eq!(detect(&bzh), Ok(Codec::Bzip2));
        let l = Limits::default();
        assert_eq!(detected(t.as_slice(), &l).unwrap().0, Codec::None);
        assert_eq!(run(&t, TAR, &l).unwrap().0, Digest::sha256_of(&t));
    }

    /// An xz stream whose LZMA2 dictionary (patched into its block header) needs more
    /// memory than [`XZ_MEMLIMIT`] is refused before it allocates.
    #[test]
    fn xz_memory_is_capped() {
        let data = b"x".repeat(10_000);
        let mut blob = xz(&data);
        // Stream header (12 bytes), then the block header: size byte, flags, optional
        // sizes, the filter flags (ID 0x21, 1 property byte), padding, CRC32.
        let start = 12;
        let hsize = (usize::from(blob[start]) + 1) * 4;
        let flags = blob[start + 1];
        assert_eq!(flags & 0x03, 0, "one filter");
        let mut at = start + 2;
        for present in [flags & 0x40 != 0, flags & 0x80 != 0] {
            if present {
                while blob[at] & 0x80 != 0 {
                    at += 1;
                }
                at += 1;
            }
        }
        assert_eq!(&blob[at..at + 2], &[0x21, 0x01], "LZMA2 filter");
        blob[at + 2] = 40; // a 4 GiB dictionary
        let mut crc = flate2::Crc::new();
        crc.update(&blob[start..start + hsize - 4]);
        blob[start + hsize - 4..start + hsize].copy_from_slice(&crc.sum().to_le_bytes());
        let e = detected(blob.as_slice(), &Limits::default()).unwrap_err();
        // The decoder's own words are the error's source.
        let msg = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        assert!(msg.to_lowercase().contains("memory"), "{msg}");
    }
}
