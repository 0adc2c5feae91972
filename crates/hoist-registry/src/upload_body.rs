//! Where the bytes of a blob to push come from ([`BlobBody`]), and the cursor the upload
//! engine reads them through (`Feed`): positioned (re)opening, replay of the current
//! chunk for one-shot sources, size checks, hashing every byte once, and progress.
//!
//! Exactly the descriptor's size is read from a body: a source that ends earlier fails
//! the upload, and bytes beyond that size are never read.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt as _, Stream, StreamExt as _};
use hoist_types::{Descriptor, Digest, Hasher, ProgressEvent};

use crate::{RegistryClient, RegistryError, SharedProgress};

/// Size of the pieces read from blocking sources.
const PIECE: usize = 1 << 20;
/// Pieces a blocking reader may read ahead of the upload.
const READ_AHEAD: usize = 2;

/// A stream of byte pieces, as [`BlobBody::from_stream`] takes it.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;
type OpenRead = Arc<dyn Fn(u64) -> io::Result<Box<dyn Read + Send>> + Send + Sync>;
type OpenStream = Arc<dyn Fn(u64) -> BoxFuture<'static, io::Result<ByteStream>> + Send + Sync>;

/// The bytes of a blob to push, from a file, a blocking reader or an async stream.
///
/// Nothing is read before the upload needs it, and never more than a few MiB ahead:
/// whole layers are never held in memory. A *replayable* body can be read again from any
/// offset, so failed requests are retried and a registry that refuses chunked uploads
/// gets the blob again in one request. A *one-shot* body (a plain reader or stream) is
/// read once; the upload keeps the bytes of the current chunk (at most
/// [`UploadOptions::chunk_size`](crate::UploadOptions::chunk_size), or the whole blob
/// when it is below the monolithic threshold) so that a failed chunk can still be sent
/// again, but a failure it cannot recover from that way is reported as
/// [`RegistryError::NotReplayable`].
pub struct BlobBody {
    source: Source,
}

enum Source {
    Bytes(Bytes),
    File(Arc<File>),
    OpenRead(OpenRead),
    OpenStream(OpenStream),
    Reader(Option<Box<dyn Read + Send>>),
    Stream(Option<ByteStream>),
}

impl fmt::Debug for BlobBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.source {
            Source::Bytes(b) => format!("bytes ({} bytes)", b.len()),
            Source::File(_) => "file".into(),
            Source::OpenRead(_) => "reopenable reader".into(),
            Source::OpenStream(_) => "reopenable stream".into(),
            Source::Reader(r) => format!("reader (used: {})", r.is_none()),
            Source::Stream(s) => format!("stream (used: {})", s.is_none()),
        };
        f.debug_struct("BlobBody").field("source", &kind).finish()
    }
}

/// A `Read` over a file from an offset, with positioned reads (no shared cursor).
struct FileAt {
    file: Arc<File>,
    pos: u64,
}

impl Read for FileAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl BlobBody {
    /// Bytes in memory (a config, a small blob). Replayable.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> BlobBody {
        BlobBody {
            source: Source::Bytes(bytes.into()),
        }
    }

    /// An open file holding exactly the blob (a store blob). Replayable: read with
    /// positioned reads on a blocking thread.
    pub fn from_file(file: File) -> BlobBody {
        BlobBody {
            source: Source::File(Arc::new(file)),
        }
    }

    /// The file at `path`, opened now. Replayable.
    pub fn from_path(path: &Path) -> io::Result<BlobBody> {
        File::open(path).map(BlobBody::from_file)
    }

    /// A blocking reader that `open(offset)` gives positioned at `offset` (an archive
    /// entry reopened and skipped to the offset). Replayable. Called on a blocking thread.
    pub fn reopenable<F, R>(open: F) -> BlobBody
    where
        F: Fn(u64) -> io::Result<R> + Send + Sync + 'static,
        R: Read + Send + 'static,
    {
        BlobBody {
            source: Source::OpenRead(Arc::new(move |off| {
                open(off).map(|r| Box::new(r) as Box<dyn Read + Send>)
            })),
        }
    }

    /// An async stream that `open(offset)` gives from `offset` on (a registry blob fetched
    /// again with `Range`). Replayable.
    pub fn reopenable_stream<F, Fut, S>(open: F) -> BlobBody
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        BlobBody {
            source: Source::OpenStream(Arc::new(move |off| {
                open(off).map(|r| r.map(|s| s.boxed())).boxed()
            })),
        }
    }

    /// A blocking reader, read once on a blocking thread. One-shot.
    pub fn from_reader(reader: impl Read + Send + 'static) -> BlobBody {
        BlobBody {
            source: Source::Reader(Some(Box::new(reader))),
        }
    }

    /// An async stream of pieces, read once. One-shot.
    pub fn from_stream(stream: impl Stream<Item = io::Result<Bytes>> + Send + 'static) -> BlobBody {
        BlobBody {
            source: Source::Stream(Some(stream.boxed())),
        }
    }

    /// Blob `desc` of `repo` on another (or the same) registry, streamed as it is
    /// fetched: a registry → registry copy. Replayable: a retry fetches it again from the
    /// offset needed (`Range`; a registry that ignores Range is read from 0 and skipped).
    /// The bytes are hashed by the upload, so a wrong source is caught before the
    /// upload completes.
    pub fn from_registry(source: RegistryClient, repo: &str, desc: &Descriptor) -> BlobBody {
        let repo = repo.to_owned();
        let desc = desc.clone();
        BlobBody::reopenable_stream(move |offset| {
            let (client, repo, desc) = (source.clone(), repo.clone(), desc.clone());
            async move {
                let resp = if offset == 0 {
                    client.get_blob(&repo, &desc).await
                } else {
                    client.get_blob_from(&repo, &desc, offset).await
                }
                .map_err(io::Error::other)?;
                let skip = offset.saturating_sub(resp.start);
                Ok(futures_util::stream::unfold(
                    Some((resp, skip)),
                    |state| async move {
                        let (mut resp, mut skip) = state?;
                        loop {
                            match resp.chunk().await {
                                Ok(Some(mut c)) => {
                                    if skip > 0 {
                                        let k = skip.min(c.len() as u64) as usize;
                                        c = c.slice(k..);
                                        skip -= k as u64;
                                        if c.is_empty() {
                                            continue;
                                        }
                                    }
                                    return Some((Ok(c), Some((resp, skip))));
                                }
                                Ok(None) => return None,
                                Err(e) => return Some((Err(io::Error::other(e)), None)),
                            }
                        }
                    },
                ))
            }
        })
    }

    /// Whether the body can be read again from any offset.
    pub fn is_replayable(&self) -> bool {
        matches!(
            self.source,
            Source::Bytes(_) | Source::File(_) | Source::OpenRead(_) | Source::OpenStream(_)
        )
    }

    /// A future opening the body at `offset`, or `None` when a one-shot body cannot be
    /// (it is past its start already). Synchronous, so no lock is held while it runs.
    fn opener(&mut self, offset: u64) -> Option<BoxFuture<'static, io::Result<ByteStream>>> {
        match &mut self.source {
            Source::Bytes(b) => {
                let b = b.slice((offset.min(b.len() as u64) as usize)..);
                let len = b.len();
                let s = futures_util::stream::iter(
                    (0..len)
                        .step_by(PIECE)
                        .map(move |i| Ok(b.slice(i..(i + PIECE).min(len)))),
                );
                Some(futures_util::future::ready(Ok(s.boxed())).boxed())
            }
            Source::File(f) => {
                let file = f.clone();
                Some(ready_blocking(move || {
                    Ok(Box::new(FileAt { file, pos: offset }) as Box<dyn Read + Send>)
                }))
            }
            Source::OpenRead(open) => {
                let open = open.clone();
                Some(ready_blocking(move || open(offset)))
            }
            Source::OpenStream(open) => Some(open(offset)),
            Source::Reader(r) if offset == 0 => {
                let r = r.take()?;
                Some(ready_blocking(move || Ok(r)))
            }
            Source::Stream(s) if offset == 0 => {
                let s = s.take()?;
                Some(futures_util::future::ready(Ok(s)).boxed())
            }
            Source::Reader(_) | Source::Stream(_) => None,
        }
    }
}

/// A future resolving at once to a stream fed by a blocking thread that runs `open`
/// and reads [`PIECE`]-sized pieces, at most [`READ_AHEAD`] ahead of the consumer.
fn ready_blocking<F>(open: F) -> BoxFuture<'static, io::Result<ByteStream>>
where
    F: FnOnce() -> io::Result<Box<dyn Read + Send>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut r = match open() {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; PIECE];
            let mut n = 0;
            while n < PIECE {
                match r.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if n == 0 {
                return;
            }
            buf.truncate(n);
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() || n < PIECE {
                return;
            }
        }
    });
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    futures_util::future::ready(Ok(s.boxed())).boxed()
}

/// The bytes delivered since the start of the current chunk, kept for one-shot bodies.
struct Tee {
    start: u64,
    pieces: Vec<Bytes>,
    len: u64,
}

/// What [`Feed::plan_seek`] leaves to do.
pub(crate) enum Seek {
    /// Positioned already.
    Done,
    /// Open the body at this offset (the future comes from [`Feed::opener`]).
    Reopen(BoxFuture<'static, io::Result<ByteStream>>),
    /// Read and drop this many bytes (they are hashed and counted).
    Skip(u64),
    /// A one-shot body that cannot go back there.
    Impossible,
}

/// The upload's cursor over a [`BlobBody`]: the next byte it delivers is at `pos`.
pub(crate) struct Feed {
    body: BlobBody,
    digest: Digest,
    size: u64,
    queue: VecDeque<Bytes>,
    stream: Option<ByteStream>,
    pos: u64,
    tee: Option<Tee>,
    tee_limit: u64,
    hasher: Hasher,
    hashed: u64,
    /// Bumped whenever a request ends: a body stream of an older request gets nothing.
    pub(crate) generation: u64,
    /// When a piece was last handed to a request (the idle timeout of uploads).
    pub(crate) last_activity: Instant,
    progress: Option<SharedProgress>,
    /// The typed failure behind a body stream's I/O error.
    pub(crate) error: Option<RegistryError>,
}

pub(crate) type SharedFeed = Arc<Mutex<Feed>>;

pub(crate) fn lock(feed: &SharedFeed) -> MutexGuard<'_, Feed> {
    feed.lock().unwrap_or_else(|p| p.into_inner())
}

impl Feed {
    pub(crate) fn new(
        body: BlobBody,
        desc: &Descriptor,
        tee_limit: u64,
        progress: Option<SharedProgress>,
    ) -> Feed {
        Feed {
            body,
            digest: desc.digest.clone(),
            size: desc.size,
            queue: VecDeque::new(),
            stream: None,
            pos: 0,
            tee: None,
            tee_limit,
            hasher: desc.digest.algorithm().hasher(),
            hashed: 0,
            generation: 0,
            last_activity: Instant::now(),
            progress,
            error: None,
        }
    }

    /// The offset of the next byte delivered.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Start keeping the delivered bytes (one-shot bodies only), from here on.
    pub(crate) fn mark(&mut self) {
        self.tee = (!self.body.is_replayable()).then(|| Tee {
            start: self.pos,
            pieces: Vec::new(),
            len: 0,
        });
    }

    /// Whether the feed can get back to `offset` (any offset for replayable bodies; for
    /// one-shot ones, inside the kept bytes or forward).
    pub(crate) fn can_seek(&self, offset: u64) -> bool {
        self.body.is_replayable()
            || offset >= self.pos
            || self
                .tee
                .as_ref()
                .is_some_and(|t| t.start <= offset && offset <= self.pos)
    }

    /// Decide how to get to `offset`. Rewinds inside the kept bytes at once.
    pub(crate) fn plan_seek(&mut self, offset: u64) -> Seek {
        let open = self.stream.is_some() || !self.queue.is_empty();
        if open && offset == self.pos {
            return Seek::Done;
        }
        if open && offset > self.pos {
            return Seek::Skip(offset - self.pos);
        }
        if let Some(t) = &mut self.tee
            && t.start <= offset
            && offset <= self.pos
        {
            let mut keep = Vec::new();
            let mut back = Vec::new();
            let mut at = t.start;
            for p in t.pieces.drain(..) {
                let end = at + p.len() as u64;
                if end <= offset {
                    keep.push(p);
                } else if at >= offset {
                    back.push(p);
                } else {
                    let k = (offset - at) as usize;
                    keep.push(p.slice(..k));
                    back.push(p.slice(k..));
                }
                at = end;
            }
            t.pieces = keep;
            t.len = offset - t.start;
            for p in back.into_iter().rev() {
                self.queue.push_front(p);
            }
            self.pos = offset;
            return Seek::Done;
        }
        self.reopen(offset)
    }

    fn reopen(&mut self, offset: u64) -> Seek {
        match self.body.opener(offset) {
            Some(f) => {
                self.queue.clear();
                self.stream = None;
                self.tee = None;
                Seek::Reopen(f)
            }
            None => Seek::Impossible,
        }
    }

    /// Install the stream a [`Seek::Reopen`] opened at `offset`.
    pub(crate) fn install(&mut self, stream: ByteStream, offset: u64) {
        self.queue.clear();
        self.stream = Some(stream);
        self.pos = offset;
    }

    /// The next piece, at most `max` bytes. `None`: the source ended.
    pub(crate) fn poll_piece(
        &mut self,
        cx: &mut Context<'_>,
        max: u64,
    ) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            let piece = match self.queue.pop_front() {
                Some(p) => p,
                None => {
                    let Some(s) = self.stream.as_mut() else {
                        return Poll::Ready(None);
                    };
                    match s.poll_next_unpin(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(None) => {
                            self.stream = None;
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Some(Err(e))) => {
                            self.stream = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                        Poll::Ready(Some(Ok(p))) => p,
                    }
                }
            };
            if piece.is_empty() {
                continue;
            }
            let piece = if piece.len() as u64 > max {
                self.queue.push_front(piece.slice(max as usize..));
                piece.slice(..max as usize)
            } else {
                piece
            };
            let len = piece.len() as u64;
            if self.pos + len > self.size {
                self.error = Some(RegistryError::SourceSize {
                    digest: self.digest.clone(),
                    expected: self.size,
                    actual: self.pos + len,
                });
                return Poll::Ready(Some(Err(io::Error::other("source longer than the blob"))));
            }
            if let Some(t) = &mut self.tee {
                if t.len + len > self.tee_limit {
                    self.tee = None;
                } else {
                    t.pieces.push(piece.clone());
                    t.len += len;
                }
            }
            let end = self.pos + len;
            if end > self.hashed {
                let from = (self.hashed - self.pos) as usize;
                self.hasher.update(&piece[from..]);
                self.hashed = end;
                if end == self.size {
                    let actual = self.hasher.clone().finish();
                    if actual != self.digest {
                        self.error = Some(RegistryError::SourceDigest {
                            expected: self.digest.clone(),
                            actual,
                        });
                        return Poll::Ready(Some(Err(io::Error::other(
                            "source does not match the digest",
                        ))));
                    }
                }
                if let Some(p) = &self.progress {
                    p.0.event(&ProgressEvent::BlobProgress {
                        digest: &self.digest,
                        done: end,
                    });
                }
            }
            self.pos = end;
            self.last_activity = Instant::now();
            return Poll::Ready(Some(Ok(piece)));
        }
    }

    /// Record a source failure (unless a more precise one is recorded already).
    fn source_failed(&mut self, e: &io::Error) {
        if self.error.is_none() {
            self.error = Some(RegistryError::UploadSource {
                digest: self.digest.clone(),
                offset: self.pos,
                reason: e.to_string(),
            });
        }
    }
}

/// Move `feed` to `offset`, opening or skipping as needed.
pub(crate) async fn seek(feed: &SharedFeed, offset: u64) -> Result<bool, RegistryError> {
    let plan = lock(feed).plan_seek(offset);
    match plan {
        Seek::Done => Ok(true),
        Seek::Impossible => Ok(false),
        Seek::Reopen(open) => match open.await {
            Ok(s) => {
                lock(feed).install(s, offset);
                Ok(true)
            }
            Err(e) => {
                let mut f = lock(feed);
                f.source_failed(&e);
                Err(f.error.take().expect("just recorded"))
            }
        },
        Seek::Skip(mut n) => {
            while n > 0 {
                let got = futures_util::future::poll_fn(|cx| lock(feed).poll_piece(cx, n)).await;
                match got {
                    Some(Ok(p)) => n -= p.len() as u64,
                    Some(Err(e)) => {
                        let mut f = lock(feed);
                        f.source_failed(&e);
                        return Err(f.error.take().expect("just recorded"));
                    }
                    None => {
                        let f = lock(feed);
                        return Err(RegistryError::SourceSize {
                            digest: f.digest.clone(),
                            expected: f.size,
                            actual: f.pos,
                        });
                    }
                }
            }
            Ok(true)
        }
    }
}

/// The body of one request: the next `remaining` bytes of the feed.
pub(crate) struct ChunkStream {
    feed: SharedFeed,
    generation: u64,
    remaining: u64,
}

impl ChunkStream {
    /// A body for the next `len` bytes; ends every older request's body.
    pub(crate) fn new(feed: &SharedFeed, len: u64) -> ChunkStream {
        let mut f = lock(feed);
        f.generation += 1;
        f.last_activity = Instant::now();
        ChunkStream {
            feed: feed.clone(),
            generation: f.generation,
            remaining: len,
        }
    }
}

impl Stream for ChunkStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let mut f = lock(&this.feed);
        if f.generation != this.generation {
            return Poll::Ready(Some(Err(io::Error::other("request superseded"))));
        }
        match f.poll_piece(cx, this.remaining) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(p))) => {
                this.remaining -= p.len() as u64;
                Poll::Ready(Some(Ok(p)))
            }
            Poll::Ready(Some(Err(e))) => {
                f.source_failed(&e);
                this.remaining = 0;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if f.error.is_none() {
                    f.error = Some(RegistryError::SourceSize {
                        digest: f.digest.clone(),
                        expected: f.size,
                        actual: f.pos,
                    });
                }
                this.remaining = 0;
                Poll::Ready(Some(Err(io::Error::other("source ended early"))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(data: &[u8]) -> Descriptor {
        Descriptor::new(
            hoist_types::MediaType::OciLayer,
            Digest::sha256_of(data),
            data.len() as u64,
        )
    }

    async fn read(feed: &SharedFeed, n: u64) -> Result<Vec<u8>, RegistryError> {
        let mut s = ChunkStream::new(feed, n);
        let mut out = Vec::new();
        while let Some(p) = s.next().await {
            match p {
                Ok(p) => out.extend_from_slice(&p),
                Err(_) => return Err(lock(feed).error.take().expect("typed error")),
            }
        }
        Ok(out)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Every kind of body gives the same bytes from any offset it can reach, rewinds
    /// inside the kept chunk, and hashes each byte once.
    #[tokio::test]
    async fn bodies_seek_and_replay() {
        let d = data(3 * PIECE + 123);
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), &d).unwrap();
        let d2 = d.clone();
        let d3 = d.clone();
        let bodies: Vec<(&str, BlobBody, bool)> = vec![
            ("bytes", BlobBody::from_bytes(d.clone()), true),
            ("file", BlobBody::from_path(tmp.path()).unwrap(), true),
            (
                "reopen",
                BlobBody::reopenable(move |off| Ok(io::Cursor::new(d2[off as usize..].to_vec()))),
                true,
            ),
            (
                "reader",
                BlobBody::from_reader(io::Cursor::new(d.clone())),
                false,
            ),
            (
                "stream",
                BlobBody::from_stream(futures_util::stream::iter(
                    d3.chunks(1000)
                        .map(|c| Ok(Bytes::copy_from_slice(c)))
                        .collect::<Vec<_>>(),
                )),
                false,
            ),
        ];
        for (name, body, replayable) in bodies {
            assert_eq!(body.is_replayable(), replayable, "{name}");
            let feed = Arc::new(Mutex::new(Feed::new(body, &desc(&d), 2 << 20, None)));
            assert!(seek(&feed, 0).await.unwrap(), "{name}");
            lock(&feed).mark();
            let a = read(&feed, 1500).await.unwrap();
            assert!(a == d[..1500], "{name}");
            // Back inside the kept bytes (or reopened).
            assert!(seek(&feed, 700).await.unwrap(), "{name}");
            let b = read(&feed, 2000).await.unwrap();
            assert!(b == d[700..2700], "{name}");
            // Forward by skipping.
            assert!(seek(&feed, 5000).await.unwrap(), "{name}");
            lock(&feed).mark();
            let rest = read(&feed, d.len() as u64 - 5000).await.unwrap();
            assert!(rest == d[5000..], "{name}");
            // Back to 0: only replayable bodies.
            assert_eq!(seek(&feed, 0).await.unwrap(), replayable, "{name}");
            if replayable {
                assert!(read(&feed, d.len() as u64).await.unwrap() == d, "{name}");
            }
        }
    }

    #[tokio::test]
    async fn wrong_sources_are_caught() {
        let d = data(5000);
        // Wrong content: the last piece is withheld.
        let mut bad = d.clone();
        bad[10] ^= 1;
        let feed = Arc::new(Mutex::new(Feed::new(
            BlobBody::from_bytes(bad),
            &desc(&d),
            0,
            None,
        )));
        seek(&feed, 0).await.unwrap();
        let e = read(&feed, 5000).await.unwrap_err();
        assert!(matches!(e, RegistryError::SourceDigest { .. }), "{e}");
        // A short source fails; a longer one is read only up to the descriptor's size.
        let short = Arc::new(Mutex::new(Feed::new(
            BlobBody::from_bytes(data(4000)),
            &desc(&d),
            0,
            None,
        )));
        seek(&short, 0).await.unwrap();
        let e = read(&short, 5000).await.unwrap_err();
        assert!(
            matches!(
                e,
                RegistryError::SourceSize {
                    actual: 4000,
                    expected: 5000,
                    ..
                }
            ),
            "{e}"
        );
        let long = Arc::new(Mutex::new(Feed::new(
            BlobBody::from_bytes(data(6000)),
            &desc(&d),
            0,
            None,
        )));
        seek(&long, 0).await.unwrap();
        assert!(read(&long, 5000).await.unwrap() == d);
        // A failing reader.
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let feed = Arc::new(Mutex::new(Feed::new(
            BlobBody::from_reader(Broken),
            &desc(&d),
            0,
            None,
        )));
        seek(&feed, 0).await.unwrap();
        let e = read(&feed, 5000).await.unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
    }
}
