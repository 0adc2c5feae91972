//! Blob streams: the bytes of one blob as a source hands them to a destination
//! ([`BlobStream`]), fed through a bounded channel by a task or read from a file on the
//! consumer's blocking thread, and its async ([`AsyncBlobStream`]) and [`Read`]
//! ([`BlobRead`]) views. Unverified by design: the destination verifies.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::TransportError;

/// Chunk size used by file-backed blob streams.
pub const STREAM_CHUNK: usize = 1024 * 1024;

type Chunk = Result<Bytes, TransportError>;

/// A `Read` over a shared file from an offset, with positioned reads.
struct FileAt {
    file: Arc<std::fs::File>,
    pos: u64,
}

impl Read for FileAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

enum Inner {
    Channel(mpsc::Receiver<Chunk>),
    Reader(Box<dyn Read + Send>),
}

/// Opens a blob again as a blocking reader positioned at an offset.
pub type Reopen = Arc<dyn Fn(u64) -> std::io::Result<Box<dyn Read + Send>> + Send + Sync>;

/// The bytes of one blob, streamed: from a channel fed by a task (network sources) or
/// from a reader (files, archive members) read on the consumer's thread. Unverified: the
/// destination hashes and checks size and digest before publishing.
///
/// A stream over a file can also say how to read the blob again from any offset
/// ([`BlobStream::reopen`]): a destination that may need to send bytes twice (a registry
/// upload whose chunk failed) replays from the file instead of keeping them in memory.
pub struct BlobStream {
    inner: Inner,
    origin: String,
    size: u64,
    seen: u64,
    reopen: Option<Reopen>,
    /// The digest this process computed over exactly these bytes as it wrote them (a
    /// layer the copy engine recompressed into its temp file): a destination need not
    /// hash them again. Only the engine sets it.
    verified: Option<hoist_types::Digest>,
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("origin", &self.origin)
            .field("size", &self.size)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

/// The sending half of a channel-backed [`BlobStream`].
#[derive(Debug, Clone)]
pub struct BlobSender(mpsc::Sender<Chunk>);

impl BlobSender {
    /// Send a chunk (from an async task). `false` when the consumer is gone.
    pub async fn send(&self, c: Chunk) -> bool {
        self.0.send(c).await.is_ok()
    }

    /// Send a chunk from a blocking thread. `false` when the consumer is gone.
    pub fn blocking_send(&self, c: Chunk) -> bool {
        self.0.blocking_send(c).is_ok()
    }
}

impl BlobStream {
    /// A stream fed through a bounded channel, for `size` bytes from `origin` (a URL or
    /// path, for messages).
    pub fn channel(size: u64, origin: impl Into<String>) -> (BlobSender, BlobStream) {
        let (tx, rx) = mpsc::channel(16);
        (
            BlobSender(tx),
            BlobStream {
                inner: Inner::Channel(rx),
                origin: origin.into(),
                size,
                seen: 0,
                reopen: None,
                verified: None,
            },
        )
    }

    /// A stream read from `reader` on the consumer's thread (it must be a blocking
    /// thread: see [`BlobStream::blocking_next`]).
    pub fn from_reader(
        reader: Box<dyn Read + Send>,
        size: u64,
        origin: impl Into<String>,
    ) -> BlobStream {
        BlobStream {
            inner: Inner::Reader(reader),
            origin: origin.into(),
            size,
            seen: 0,
            reopen: None,
            verified: None,
        }
    }

    /// A stream over `file`, which holds exactly the blob: read with positioned reads, and
    /// replayable from any offset ([`BlobStream::reopen`]).
    pub fn from_file(file: std::fs::File, size: u64, origin: impl Into<String>) -> BlobStream {
        let file = Arc::new(file);
        let again = file.clone();
        let reopen: Reopen = Arc::new(move |pos| {
            Ok(Box::new(FileAt {
                file: again.clone(),
                pos,
            }) as Box<dyn Read + Send>)
        });
        BlobStream {
            reopen: Some(reopen),
            ..BlobStream::from_reader(Box::new(FileAt { file, pos: 0 }), size, origin)
        }
    }

    /// A stream over a temp file this process wrote and hashed itself (the copy engine's
    /// recompressed layer), whose bytes have digest `digest`.
    pub(crate) fn from_own_file(
        file: std::fs::File,
        size: u64,
        digest: hoist_types::Digest,
        origin: impl Into<String>,
    ) -> BlobStream {
        BlobStream {
            verified: Some(digest),
            ..BlobStream::from_file(file, size, origin)
        }
    }

    /// The digest computed over these bytes by this process as it wrote them, when it was
    /// ([`BlobStream::from_own_file`]).
    pub(crate) fn verified(&self) -> Option<&hoist_types::Digest> {
        self.verified.as_ref()
    }

    /// How to read the blob again from an offset, when the source can (a file).
    pub fn reopen(&self) -> Option<Reopen> {
        self.reopen.clone()
    }

    /// Where the bytes come from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The size the source declared (the descriptor's).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes delivered so far.
    pub fn position(&self) -> u64 {
        self.seen
    }

    /// The next chunk, `None` at the end. Call only from a blocking thread
    /// (`spawn_blocking`): it blocks on the channel or reads the file.
    pub fn blocking_next(&mut self) -> Option<Chunk> {
        let c = match &mut self.inner {
            Inner::Channel(rx) => rx.blocking_recv(),
            Inner::Reader(r) => {
                let mut buf = vec![0u8; STREAM_CHUNK];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) => break None,
                        Ok(n) => {
                            buf.truncate(n);
                            break Some(Ok(Bytes::from(buf)));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            break Some(Err(TransportError::Stream {
                                what: format!("reading {}", self.origin),
                                source: e,
                            }));
                        }
                    }
                }
            }
        };
        if let Some(Ok(b)) = &c {
            self.seen += b.len() as u64;
        }
        c
    }

    /// Turn the stream into one an async consumer can poll: a reader-backed stream gets a
    /// blocking thread that reads it into a channel. A channel-backed one is returned as
    /// is.
    pub fn into_async(self) -> AsyncBlobStream {
        match self.inner {
            Inner::Channel(rx) => AsyncBlobStream {
                rx,
                size: self.size,
                origin: self.origin,
            },
            Inner::Reader(_) => {
                let (tx, rx) = mpsc::channel(16);
                let (size, origin) = (self.size, self.origin.clone());
                let mut me = self;
                tokio::task::spawn_blocking(move || {
                    while let Some(c) = me.blocking_next() {
                        let stop = c.is_err();
                        if tx.blocking_send(c).is_err() || stop {
                            break;
                        }
                    }
                });
                AsyncBlobStream { rx, size, origin }
            }
        }
    }

    /// A blocking [`Read`] over the stream (for decompressors); call only on a blocking
    /// thread. A stream error becomes an I/O error of kind `Other` carrying it.
    pub fn into_read(self) -> BlobRead {
        BlobRead {
            stream: self,
            cur: Bytes::new(),
        }
    }
}

/// A [`BlobStream`] polled from async code (a registry upload body).
#[derive(Debug)]
pub struct AsyncBlobStream {
    rx: mpsc::Receiver<Chunk>,
    size: u64,
    origin: String,
}

impl AsyncBlobStream {
    /// The next chunk, `None` at the end.
    pub async fn next(&mut self) -> Option<Chunk> {
        self.rx.recv().await
    }

    /// The declared size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the bytes come from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The underlying receiver (e.g. for `futures` stream adapters).
    pub fn into_receiver(self) -> mpsc::Receiver<Chunk> {
        self.rx
    }
}

/// [`Read`] over a [`BlobStream`]; see [`BlobStream::into_read`].
#[derive(Debug)]
pub struct BlobRead {
    stream: BlobStream,
    cur: Bytes,
}

impl Read for BlobRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.stream.blocking_next() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_stream_reads_in_chunks() {
        let data = vec![7u8; STREAM_CHUNK + 10];
        let s = BlobStream::from_reader(Box::new(std::io::Cursor::new(data.clone())), 0, "mem");
        let mut out = Vec::new();
        s.into_read().read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }
}
