//! The layer stream: one pass that decompresses a blob (detected by media type, checked
//! against the magic bytes), caps the decompressed size, and hashes the decompressed bytes
//! into the diff ID. Every consumer (unpack, flatten, rootfs builds) reads layers through it.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use hoist_types::{Algorithm, Compression, Digest, Hasher, MediaType, Progress, ProgressEvent};

use crate::tar::TarReader;
use crate::{Limits, UnpackError};

/// Buffer size of the compressed side.
const READ_BUFFER: usize = 1 << 20;
/// Progress is reported at most once per this many compressed bytes.
const PROGRESS_STEP: u64 = 4 << 20;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// What the first bytes of a blob say it is.
pub fn sniff(head: &[u8]) -> &'static str {
    if head.starts_with(GZIP_MAGIC) {
        "gzip"
    } else if head.starts_with(ZSTD_MAGIC)
        || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18])
    {
        "zstd"
    } else {
        "uncompressed"
    }
}

/// Counts compressed bytes and reports progress.
struct Counting<'p, R> {
    inner: R,
    done: u64,
    reported: u64,
    digest: Option<Digest>,
    progress: &'p dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<Counting<'p, R>>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Counting<'p, R>>>>),
}

/// A decompressed, size-capped, hashing view of a layer blob.
pub struct LayerStream<'p, R: Read> {
    decoder: Decoder<'p, R>,
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
        let counting = Counting {
            inner: blob,
            done: 0,
            reported: 0,
            digest: digest.cloned(),
            progress,
        };
        let mut buffered = BufReader::with_capacity(READ_BUFFER, counting);
        let head = buffered
            .fill_buf()
            .map_err(|source| UnpackError::Stream { source })?;
        let found = sniff(head);
        let matches = match declared {
            Compression::Gzip => found == "gzip",
            Compression::Zstd => found == "zstd",
            Compression::None => found == "uncompressed",
        };
        if !matches {
            return Err(UnpackError::CompressionMismatch {
                media_type: media_type.clone(),
                declared,
                found,
            });
        }
        let decoder = match declared {
            Compression::None => Decoder::Plain(buffered),
            Compression::Gzip => {
                Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(buffered)))
            }
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(|source| UnpackError::Stream { source })?;
                d.window_log_max(limits.zstd_window_log_max)
                    .map_err(|source| UnpackError::Stream { source })?;
                Decoder::Zstd(Box::new(d))
            }
        };
        Ok(LayerStream {
            decoder,
            hasher: Hasher::new(algorithm),
            hashing: true,
            total: 0,
            limit: limits.max_layer_size,
        })
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

/// The io::Error payload of a stream over its size cap.
#[derive(Debug)]
pub(crate) struct LimitExceeded(pub u64);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decompressed layer exceeds {} bytes", self.0)
    }
}

impl std::error::Error for LimitExceeded {}

/// Maps a stream read error to the crate error, recognising the size cap.
pub(crate) fn stream_error(e: io::Error) -> UnpackError {
    if let Some(LimitExceeded(limit)) = e.get_ref().and_then(|x| x.downcast_ref::<LimitExceeded>())
    {
        return UnpackError::Limit {
            what: "decompressed layer size",
            limit: *limit,
            entry: None,
        };
    }
    UnpackError::Stream { source: e }
}

/// Chunks the decompression thread hands over.
const CHUNK: usize = 1 << 20;

/// The consuming end of a [`piped`] layer: the decompressed bytes, in order.
pub(crate) struct ChannelReader {
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
        let pumped = worker
            .join()
            .expect("the decompression thread does not panic");
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
}
