//! A blob streamed to clients while pull-through downloads it: read from the pull's
//! partial download as it grows (its data file and record kept open,
//! [`PartialReader`]), which becomes the published blob in place; hashed **once** for all
//! clients (see [`crate::pull_through`]'s module docs).
//!
//! The hash chain: the client at the front of a [`Download`] reads the next chunk, hashes
//! it onto the chain's state and pushes `(offset, bytes, state before, state after)` into
//! a ring of the last [`RING_CHUNKS`] chunks. A client whose own hash state is the
//! chain's at its offset (it is *on the chain*) takes the chunk at its offset from the
//! ring, with the state after it, and hashes nothing. A client that is not on the chain
//! (it joined late, or fell behind the ring) reads from the file and hashes what it
//! reads itself; when it reaches a chunk still in the ring, it is back on the chain if
//! its state finishes to the same digest as the chunk's state before (then the bytes it
//! sent and the chain's are the same, by the hash's collision resistance). So every
//! client's state is the hash of exactly the bytes it was sent, whoever computed it, and
//! the last chunk goes out only when that state is the blob's digest.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use futures_util::Stream;
use hoist_store::{PartialReader, Store};
use hoist_types::{Descriptor, Digest, Hasher};
use tokio::sync::watch;

use crate::pull_state::{COMMIT_WAIT, PullState, STREAM_IDLE, wait_pull};

/// Bytes read per `pread` while streaming.
const CHUNK: u64 = 256 * 1024;
/// Recent chunks of a download kept for the clients behind the front one (at most
/// `RING_CHUNKS * CHUNK` bytes per blob being streamed).
pub(crate) const RING_CHUNKS: usize = 32;
/// How often a download with nothing new is looked at again.
const POLL: std::time::Duration = std::time::Duration::from_millis(25);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One blob being pulled, streamed to any number of clients.
pub(crate) struct Download {
    store: Store,
    pub(crate) desc: Descriptor,
    /// The chain hashed to something other than the digest (the upstream sent wrong
    /// bytes, then others): clients that come later start a new download.
    pub(crate) broken: AtomicBool,
    /// Bytes hashed for this download's clients, all together (what sharing saves).
    hashed: AtomicU64,
    /// The files read, kept open: the partial download, or the published blob.
    files: Mutex<Files>,
    /// The hash chain's recent chunks.
    ring: Mutex<Ring>,
    /// Held by the client reading the next chunk at the front.
    front: tokio::sync::Mutex<()>,
}

#[derive(Default, Clone)]
struct Files {
    partial: Option<Arc<PartialReader>>,
    published: Option<Arc<File>>,
}

struct Ring {
    chunks: VecDeque<Chunk>,
    /// The offset the chain has hashed to, and its state there.
    end: u64,
    state: Hasher,
}

#[derive(Clone)]
struct Chunk {
    start: u64,
    bytes: Bytes,
    before: Hasher,
    after: Hasher,
}

/// A client's next chunk: its bytes, the hash state after them, and whether they were
/// taken from the chain.
type Got = (Bytes, Hasher, bool);

impl Download {
    pub(crate) fn new(store: Store, desc: Descriptor) -> Download {
        let state = Hasher::new(desc.digest.algorithm());
        Download {
            store,
            desc,
            broken: AtomicBool::new(false),
            hashed: AtomicU64::new(0),
            files: Mutex::new(Files::default()),
            ring: Mutex::new(Ring {
                chunks: VecDeque::new(),
                end: 0,
                state,
            }),
            front: tokio::sync::Mutex::new(()),
        }
    }

    /// The chunk at `pos` from the ring, if the client (hash state `state`, `on_chain`)
    /// may take it: on the chain, or with a state equal to the chain's there.
    fn ring_chunk(&self, pos: u64, state: &Hasher, on_chain: bool) -> Option<Chunk> {
        let c = {
            let ring = lock(&self.ring);
            ring.chunks.iter().find(|c| c.start == pos).cloned()?
        };
        (on_chain || same_state(state, &c.before)).then_some(c)
    }

    /// The next bytes for a client at `pos` with hash state `state`.
    async fn next(
        self: &Arc<Self>,
        pos: u64,
        state: &Hasher,
        on_chain: bool,
    ) -> std::io::Result<Option<Got>> {
        if let Some(c) = self.ring_chunk(pos, state, on_chain) {
            return Ok(Some((c.bytes, c.after, true)));
        }
        let at_front = on_chain && lock(&self.ring).end == pos;
        let front = match at_front {
            true => Some(self.front.lock().await),
            false => None,
        };
        // Another client may have read it meanwhile (then it is in the ring, or the chain
        // went so far that this client is behind it).
        if front.is_some()
            && let Some(c) = self.ring_chunk(pos, state, on_chain)
        {
            return Ok(Some((c.bytes, c.after, true)));
        }
        if front.is_some() && lock(&self.ring).end == pos {
            let me = self.clone();
            let chunk = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Chunk>> {
                let Some(bytes) = me.read(pos)? else {
                    return Ok(None);
                };
                let before = lock(&me.ring).state.clone();
                let mut after = before.clone();
                after.update(&bytes);
                me.hashed.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(Some(Chunk {
                    start: pos,
                    bytes: Bytes::from(bytes),
                    before,
                    after,
                }))
            })
            .await
            .map_err(std::io::Error::other)??;
            let Some(c) = chunk else {
                return Ok(None);
            };
            let mut ring = lock(&self.ring);
            ring.end = c.start + c.bytes.len() as u64;
            ring.state = c.after.clone();
            if ring.chunks.len() >= RING_CHUNKS {
                ring.chunks.pop_front();
            }
            ring.chunks.push_back(c.clone());
            return Ok(Some((c.bytes, c.after, true)));
        }
        drop(front);
        // Off the chain, or behind the ring: read and hash for itself.
        let (me, mut own) = (self.clone(), state.clone());
        tokio::task::spawn_blocking(move || {
            Ok(match me.read(pos)? {
                Some(b) => {
                    own.update(&b);
                    me.hashed.fetch_add(b.len() as u64, Ordering::Relaxed);
                    Some((Bytes::from(b), own, false))
                }
                None => None,
            })
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Up to [`CHUNK`] bytes at `pos` that are there: from the published blob, else from
    /// the valid prefix of the partial download (`None`: nothing new yet). Blocking.
    fn read(&self, pos: u64) -> std::io::Result<Option<Vec<u8>>> {
        let size = self.desc.size;
        let want = (size - pos).min(CHUNK) as usize;
        let files = lock(&self.files).clone();
        if let Some(f) = &files.published {
            return read_some(f, pos, want).map(Some);
        }
        let partial = match files.partial {
            Some(p) => Some(p),
            None => {
                let p = self
                    .store
                    .open_partial_reader(&self.desc.digest)
                    .map_err(std::io::Error::other)?
                    .map(Arc::new);
                lock(&self.files).partial = p.clone();
                p
            }
        };
        if let Some(p) = &partial {
            match p.valid() {
                Some((s, offset)) if s == size && offset > pos => {
                    let got = crate::blocking::read_at(
                        p.data(),
                        pos,
                        (offset - pos).min(want as u64) as usize,
                    )?;
                    if !got.is_empty() {
                        return Ok(Some(got));
                    }
                }
                _ => {}
            }
            if p.removed() {
                // Discarded (a failed download): the next one writes a new file.
                lock(&self.files).partial = None;
            }
        }
        // Nothing new in a partial download (or none): the blob may be published, by this
        // download or by another (a partial left by an earlier, killed pull does not grow).
        match self.store.open_blob(&self.desc.digest) {
            Ok(f) => {
                let f = Arc::new(f);
                let mut files = lock(&self.files);
                files.published = Some(f.clone());
                files.partial = None;
                drop(files);
                read_some(&f, pos, want).map(Some)
            }
            Err(hoist_store::StoreError::BlobNotFound { .. }) => Ok(None),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// `want` bytes of a published blob at `pos`; fewer is an error (it is shorter than its
/// size).
fn read_some(f: &File, pos: u64, want: usize) -> std::io::Result<Vec<u8>> {
    let got = crate::blocking::read_at(f, pos, want)?;
    if got.len() < want {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "blob shorter than its size",
        ));
    }
    Ok(got)
}

/// Two hash states over the same bytes (their digests so far are equal).
fn same_state(a: &Hasher, b: &Hasher) -> bool {
    a.clone().finish() == b.clone().finish()
}

/// A blob being pulled, as a body (see the module docs).
pub(crate) fn tail(
    download: Arc<Download>,
    pull: watch::Receiver<PullState>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let t = Tail {
        state: Hasher::new(download.desc.digest.algorithm()),
        on_chain: true,
        download,
        pull,
        pos: 0,
        done: false,
    };
    futures_util::stream::unfold(t, |mut t| async move {
        if t.done {
            return None;
        }
        match t.next_chunk().await {
            Ok(Some(b)) => Some((Ok(b), t)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("streaming blob {}: {e}", t.download.desc.digest);
                t.done = true;
                Some((Err(e), t))
            }
        }
    })
}

struct Tail {
    download: Arc<Download>,
    pull: watch::Receiver<PullState>,
    pos: u64,
    /// The hash of the bytes sent so far.
    state: Hasher,
    /// Whether `state` is the download's chain's at `pos`.
    on_chain: bool,
    done: bool,
}

impl Tail {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        let size = self.download.desc.size;
        if self.pos >= size {
            return Ok(None);
        }
        let idle = Instant::now();
        let mut last_look = false;
        // Bounded: every turn either returns, or sleeps POLL within STREAM_IDLE.
        loop {
            if let Some((b, after, on_chain)) = self
                .download
                .next(self.pos, &self.state, self.on_chain)
                .await?
            {
                self.pos += b.len() as u64;
                self.state = after;
                self.on_chain = on_chain;
                if self.pos == size {
                    let d: &Digest = &self.download.desc.digest;
                    if self.state.clone().finish() != *d {
                        if self.on_chain {
                            self.download.broken.store(true, Ordering::Relaxed);
                        }
                        return Err(std::io::Error::other(format!(
                            "the bytes pulled do not hash to {d} (the upstream sent wrong bytes); the body ends short"
                        )));
                    }
                    // The whole blob is verified: give the pull a bounded chance to
                    // commit, so a client that got every byte finds the image stored.
                    wait_pull(self.pull.clone(), COMMIT_WAIT).await;
                }
                return Ok(Some(b));
            }
            if last_look {
                let why = match &*self.pull.borrow() {
                    PullState::Failed(e, _) => e.to_string(),
                    _ => "the pull ended without this blob".to_owned(),
                };
                return Err(std::io::Error::other(why));
            }
            let gone = self.pull.has_changed().is_err();
            if gone || !matches!(&*self.pull.borrow(), PullState::Running) {
                // One more look: the pull may have published it just before it ended.
                last_look = true;
                continue;
            }
            if idle.elapsed() > STREAM_IDLE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no progress pulling the blob for {STREAM_IDLE:?}"),
                ));
            }
            let mut rx = self.pull.clone();
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use hoist_types::MediaType;

    /// A blob of `n` bytes that differ from chunk to chunk.
    fn blob(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i / 7 + i / 4099) as u8).collect()
    }

    fn desc_of(bytes: &[u8]) -> Descriptor {
        Descriptor::new(
            MediaType::OciLayerGzip,
            Digest::sha256_of(bytes),
            bytes.len() as u64,
        )
    }

    async fn body(
        d: Arc<Download>,
        pull: watch::Receiver<PullState>,
    ) -> (Vec<u8>, Option<std::io::Error>) {
        let mut s = std::pin::pin!(tail(d, pull));
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            match c {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    /// A store whose ingest area holds `bytes` as a partial download of `desc`, written
    /// `step` bytes at a time by a thread (as a pull would), committed at the end when
    /// `commit`.
    fn pulling(
        store: &Store,
        desc: &Descriptor,
        bytes: Vec<u8>,
        step: usize,
        commit: bool,
    ) -> std::thread::JoinHandle<()> {
        let (store, d) = (store.clone(), desc.clone());
        let lock = store.lock_blob(&d.digest).unwrap();
        let mut p = store.open_partial(&d.digest, d.size).unwrap();
        std::thread::spawn(move || {
            for c in bytes.chunks(step) {
                p.append(c).unwrap();
                p.checkpoint().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            if commit {
                p.commit().unwrap();
            } else {
                p.checkpoint().unwrap();
                std::mem::forget(p); // left as a partial, never published
            }
            drop(lock);
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn clients_streaming_one_download_hash_it_once_and_all_get_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = blob(3 * 1024 * 1024 + 777); // 13 chunks: all stay in the ring
        let desc = desc_of(&bytes);
        let (tx, rx) = watch::channel(PullState::Running);
        let writer = pulling(&store, &desc, bytes.clone(), 100_000, true);
        let d = Arc::new(Download::new(store.clone(), desc.clone()));
        let clients: Vec<_> = (0..6)
            .map(|_| tokio::spawn(body(d.clone(), rx.clone())))
            .collect();
        writer.join().unwrap();
        tx.send_replace(PullState::Done(Instant::now()));
        for c in clients {
            let (got, err) = c.await.unwrap();
            assert!(err.is_none(), "{err:?}");
            assert!(got == bytes, "a client got other bytes");
        }
        // A client that comes after the download ended takes the chain's chunks too.
        let (got, err) = body(d.clone(), rx.clone()).await;
        assert!(err.is_none() && got == bytes);
        assert_eq!(
            d.hashed.load(Ordering::Relaxed),
            desc.size,
            "7 clients, one hash of the blob"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_behind_the_ring_hashes_for_itself_and_gets_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let size = (RING_CHUNKS as u64 + 8) * CHUNK + 5;
        let bytes = blob(size as usize);
        let desc = desc_of(&bytes);
        let (tx, rx) = watch::channel(PullState::Running);
        pulling(&store, &desc, bytes.clone(), 4 << 20, false)
            .join()
            .unwrap();
        tx.send_replace(PullState::Done(Instant::now()));
        let d = Arc::new(Download::new(store.clone(), desc.clone()));
        let (got, err) = body(d.clone(), rx.clone()).await;
        assert!(err.is_none() && got == bytes);
        assert_eq!(d.hashed.load(Ordering::Relaxed), size);
        // The first chunks left the ring: this one reads and hashes them itself, then
        // takes the last ones from the chain once its state is the chain's.
        let (got, err) = body(d.clone(), rx.clone()).await;
        assert!(err.is_none(), "{err:?}");
        assert!(got == bytes);
        let hashed = d.hashed.load(Ordering::Relaxed);
        assert!(
            hashed > size && hashed < 2 * size,
            "the second client hashed what left the ring only: {hashed} of {size}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_partial_does_not_hide_the_published_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = blob(1024 * 1024 + 3);
        let desc = desc_of(&bytes);
        // A partial left at half by a killed pull, then the blob published by another.
        {
            let _lock = store.lock_blob(&desc.digest).unwrap();
            let mut p = store.open_partial(&desc.digest, desc.size).unwrap();
            p.append(&bytes[..bytes.len() / 2]).unwrap();
            p.checkpoint().unwrap();
            std::mem::forget(p);
        }
        store.put_blob(&desc.digest, &bytes).unwrap();
        let (tx, rx) = watch::channel(PullState::Running);
        tx.send_replace(PullState::Done(Instant::now()));
        let d = Arc::new(Download::new(store.clone(), desc.clone()));
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), body(d, rx))
            .await
            .expect("served from the published blob, not stuck on the partial");
        assert!(got.1.is_none(), "{:?}", got.1);
        assert!(got.0 == bytes);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn wrong_bytes_never_complete_a_body_for_any_client() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = blob(2 * 1024 * 1024);
        let mut desc = desc_of(&bytes);
        desc.digest = Digest::sha256_of(b"something else");
        let (tx, rx) = watch::channel(PullState::Running);
        let writer = pulling(&store, &desc, bytes.clone(), 300_000, false);
        let d = Arc::new(Download::new(store.clone(), desc.clone()));
        let clients: Vec<_> = (0..4)
            .map(|_| tokio::spawn(body(d.clone(), rx.clone())))
            .collect();
        writer.join().unwrap();
        tx.send_replace(PullState::Done(Instant::now()));
        for c in clients {
            let (got, err) = c.await.unwrap();
            assert!(err.is_some(), "a body of wrong bytes must not end cleanly");
            assert!(got.len() < bytes.len(), "the last chunk is held back");
        }
        assert!(d.broken.load(Ordering::Relaxed));
    }
}
