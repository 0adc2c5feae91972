//! The one resumable blob reader: every registry GET of a blob (a pull, a copy from a
//! `docker://` source into any destination, a push whose source is a registry) goes
//! through a [`BlobFetcher`].
//!
//! - **Sinks** (`sink`): the bytes go to a resumable partial file ([`PartialBlob`]: the
//!   store's ingest area, or beside an `oci:`/`dir:` layout's blobs), kept when the fetch
//!   stops so the next run goes on from it, and written in place by Range slices; or to a
//!   stream handed to a consumer that verifies as it writes (any other destination, a push
//!   body), which resumes within the run and never repeats a byte.
//! - **Resume within a run** (`sequential`): a body that breaks off (reset, idle
//!   timeout, short body) is continued with `Range: bytes=N-` from the byte reached: at
//!   once after an attempt that moved the blob forward by at least [`MIN_PROGRESS`]
//!   (which also resets the retry count, so a slow but advancing transfer is never given
//!   up on), else after a backoff. A 200 answer to a Range request restarts the blob from
//!   0 (nothing is spliced); a mismatching `Content-Range` makes the blob start again
//!   without Range.
//! - **Sources**: the mirrors in order, then the registry; a source that fails (after its
//!   retries) hands over to the next, which continues from the same offset (content is
//!   addressed by digest). Foreign layers come from their `urls` first, when allowed.
//! - **Verification**: a partial checks size and digest before it is published. A
//!   mismatch after a resumed or spliced download is retried once from 0; otherwise the
//!   source is given up on.
//! - **Large blobs** (`ranged`): blobs of at least `range_threshold` bytes first stream
//!   over one connection for `range_probe`; if that connection moved less than
//!   [`FAST_LINK`] bytes a second, the rest goes over several Range connections, written
//!   in place and hashed in order. A fast connection is bound by the CPU (hashing,
//!   writing), where slices would only add a read-back pass; a slow one is where slices
//!   pay.
//! - **The store** (`BlobFetcher::fetch_to_store`): one download per blob across
//!   processes (the digest's store lock is held while it downloads; a second fetch waits,
//!   then finds the blob present), into the store's partial ingest file.

mod open;
mod ranged;
mod sequential;
mod sink;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hoist_store::{PartialBlob, Store, StoreError};
use hoist_types::{BlobKind, Descriptor, Digest, NoProgress, Progress, ProgressEvent};

pub use open::{FAST_LINK, MIN_PROGRESS};
pub(crate) use sink::Sink;

use crate::options::PullOptions;
use crate::sources::{Source, Sources, is_local};
use crate::transports::stream::BlobStream;
use crate::{TransportError, blocking};
use open::{Opener, Run, Track};
use sequential::{Seq, sequential};
use sink::StreamSink;

/// A registry's (and its mirrors') resumable blob reader: what a `docker://` source
/// offers a destination that can resume ([`crate::transports::ImageSource::blob_fetcher`]).
/// See the module docs for the rules it follows.
#[derive(Debug, Clone)]
pub struct BlobFetcher {
    sources: Arc<Sources>,
    opts: Arc<PullOptions>,
    /// What each blob fetched into a partial file took (wire bytes, resumed bytes, URL),
    /// until the engine takes it for its report ([`BlobFetcher::take_fetched`]).
    log: Arc<std::sync::Mutex<std::collections::HashMap<Digest, Fetched>>>,
}

/// A fetched blob.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Bytes that crossed the wire.
    pub wire: u64,
    /// Bytes kept from an earlier run and reused (not fetched again).
    pub resumed: u64,
    /// Where the bytes came from (the last response's URL).
    pub endpoint: String,
}

impl BlobFetcher {
    /// A reader over `sources` with the settings `opts` (retries, Range slicing, foreign
    /// layers).
    pub(crate) fn new(sources: Arc<Sources>, opts: PullOptions) -> BlobFetcher {
        BlobFetcher {
            sources,
            opts: Arc::new(opts),
            log: Arc::default(),
        }
    }

    /// What fetching `digest` into a partial file took (wire and resumed bytes, the URL
    /// that served it), once: the copy engine's report reads it after the destination's
    /// [`put_blob_from`](crate::transports::ImageDestination::put_blob_from).
    pub fn take_fetched(&self, digest: &Digest) -> Option<Fetched> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest)
    }

    /// The blob from `offset` on as a stream, read by a task with the reader's rules
    /// (resumed within the run, handed over between sources at the same offset). The
    /// first source that connects names the stream's origin; when none does, its error
    /// is returned now. Unverified: the consumer checks size and digest.
    pub async fn stream(
        &self,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<BlobStream, TransportError> {
        let mut origin = None;
        let mut first_err = None;
        for s in self.sources.usable() {
            match self.sources.client(s).await {
                Ok(c) => {
                    origin = Some(format!(
                        "{}/v2/{}/blobs/{}",
                        c.base_url(),
                        s.repo,
                        desc.digest
                    ));
                    break;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let Some(origin) = origin else {
            return Err(first_err.unwrap_or_else(|| TransportError::NoSource {
                what: format!("blob {}", desc.digest),
            }));
        };
        let (tx, stream) = BlobStream::channel(desc.size - offset.min(desc.size), origin);
        let (me, desc) = (self.clone(), desc.clone());
        tokio::spawn(async move {
            let data = tx.clone();
            let send = move |b: Bytes| data.blocking_send(Ok(b));
            if let Err(e) = me.read_into(&desc, offset, &NoProgress, send).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(stream)
    }

    /// A small blob (a config) read whole, with what reading it took (the URL that served
    /// it: a source that failed was handed over from). Unverified: the caller checks size
    /// and digest. `progress` gets the reader's events (a `BlobStart` announced as a
    /// layer's: pass [`NoProgress`] when the caller announces the blob itself).
    pub(crate) async fn read_small(
        &self,
        desc: &Descriptor,
        progress: &dyn Progress,
    ) -> Result<(Vec<u8>, Fetched), TransportError> {
        let buf = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
            desc.size as usize,
        )));
        let (b, limit) = (buf.clone(), desc.size);
        let fetched = self
            .read_into(desc, 0, progress, move |chunk: Bytes| {
                let mut b = b.lock().unwrap_or_else(|p| p.into_inner());
                // Never more than declared (the caller's check then fails on the size).
                let room = (limit + 1).saturating_sub(b.len() as u64) as usize;
                b.extend_from_slice(&chunk[..chunk.len().min(room)]);
                true
            })
            .await?;
        let bytes = std::mem::take(&mut *buf.lock().unwrap_or_else(|p| p.into_inner()));
        Ok((bytes, fetched))
    }

    /// The sources read from.
    pub(crate) fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Fetch one blob into `store` unless present, under its store lock (unless `held`
    /// says the caller holds it), resuming from and keeping a partial download in the
    /// ingest area. `None` when the store had it; the blob is published when `Some`.
    pub(crate) async fn fetch_to_store(
        &self,
        store: &Store,
        held: &HashSet<Digest>,
        desc: &Descriptor,
        kind: BlobKind,
        progress: &dyn Progress,
    ) -> Result<Option<Fetched>, TransportError> {
        let present = |s: &Store| {
            let (s, d) = (s.clone(), desc.digest.clone());
            async move { Ok::<_, TransportError>(blocking(move || s.has_blob(&d)).await??.is_some()) }
        };
        if present(store).await? {
            return Ok(None);
        }
        // One download per blob across processes: hold the digest's lock, then look again.
        let _lock = if held.contains(&desc.digest) {
            None
        } else {
            let (s, d) = (store.clone(), desc.digest.clone());
            Some(blocking(move || s.lock_blob(&d)).await??)
        };
        if present(store).await? {
            return Ok(None);
        }
        let (s, d, size) = (store.clone(), desc.digest.clone(), desc.size);
        let open = move || Ok(s.open_partial(&d, size)?);
        let partial = {
            let open = open.clone();
            blocking(open).await??
        };
        let ((), fetched) = self
            .fetch_verified(desc, kind, progress, partial, open)
            .await?;
        Ok(Some(fetched))
    }

    /// Fetch the rest of one blob into a partial file and publish it (size and digest
    /// checked by [`PartialBlob::commit`]); `reopen` gives a fresh partial after a
    /// mismatch removed the bad bytes.
    pub(crate) async fn fetch_verified(
        &self,
        desc: &Descriptor,
        kind: BlobKind,
        progress: &dyn Progress,
        partial: PartialBlob,
        reopen: impl Fn() -> Result<PartialBlob, TransportError> + Clone + Send + 'static,
    ) -> Result<((), Fetched), TransportError> {
        let run = Run {
            opts: &self.opts,
            progress,
        };
        let mut partial = partial;
        let resumed = partial.offset();
        let mut track = Track::starting_at(resumed);
        let mut fresh_retry = false;
        let mut from = 0;
        loop {
            let (p, outcome) = self
                .try_sources(&run, desc, kind, partial, &mut track, from)
                .await?;
            let (i, last, err) = match outcome {
                Ok(i) => match blocking(move || p.commit()).await? {
                    Ok(()) => {
                        let fetched = Fetched {
                            wire: track.wire,
                            resumed,
                            endpoint: track.last_url,
                        };
                        self.log
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(desc.digest.clone(), fetched.clone());
                        return Ok(((), fetched));
                    }
                    Err(
                        source @ (StoreError::DigestMismatch { .. }
                        | StoreError::SizeMismatch { .. }),
                    ) => {
                        let err = TransportError::BadBlob {
                            url: track.last_url.clone(),
                            source: Box::new(source),
                        };
                        // The commit removed the bad bytes: start clean.
                        partial = blocking(reopen.clone()).await??;
                        if track.spliced && !fresh_retry {
                            // Kept or spliced bytes may be what is wrong: once more from 0.
                            fresh_retry = true;
                            track.spliced = false;
                            run.retry_note(&track.last_url, 1, &err, Duration::ZERO);
                            from = i;
                            continue;
                        }
                        (i, i + 1 >= self.candidates(desc), err)
                    }
                    Err(e) => return Err(e.into()),
                },
                Err((i, e)) => {
                    partial = p;
                    (i, true, e)
                }
            };
            if last || is_local(&err) {
                return Err(err);
            }
            progress.event(&ProgressEvent::Status {
                message: &format!(
                    "blob {}: {}; trying the next source",
                    desc.digest,
                    hoist_types::error_chain(&err)
                ),
            });
            from = i + 1;
        }
    }

    /// Read one blob from `offset` on, handing its bytes in order to `send` (which
    /// answers `false` once its consumer is gone), resuming within the run and from the
    /// next source at the same offset. Not verified here: the consumer checks the bytes.
    pub(crate) async fn read_into(
        &self,
        desc: &Descriptor,
        offset: u64,
        progress: &dyn Progress,
        send: impl FnMut(Bytes) -> bool + Send + 'static,
    ) -> Result<Fetched, TransportError> {
        let run = Run {
            opts: &self.opts,
            progress,
        };
        let mut track = Track::default();
        let sink = StreamSink::new(offset, send);
        match self
            .try_sources(&run, desc, BlobKind::Layer, sink, &mut track, 0)
            .await?
        {
            (_, Ok(_)) => Ok(Fetched {
                wire: track.wire,
                resumed: offset,
                endpoint: track.last_url,
            }),
            (_, Err((_, e))) => Err(e),
        }
    }

    /// How many places a blob may come from: its foreign `urls` (when allowed), then the
    /// usable sources.
    fn candidates(&self, desc: &Descriptor) -> usize {
        self.foreign(desc).len() + self.sources.usable().count()
    }

    fn foreign<'d>(&self, desc: &'d Descriptor) -> Vec<&'d str> {
        match (&desc.urls, self.opts.foreign_layers) {
            (Some(urls), true) if desc.media_type.is_foreign_layer() => {
                urls.iter().map(String::as_str).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Try the candidates from the `from`-th on until one delivers the whole blob into
    /// `sink`: `Ok(i)` names the one that did; `Err` gives the index and error of the last
    /// one tried (a local failure stops at once). The outer `Err` is
    /// fatal (the sink's writer or a task failed).
    #[allow(clippy::type_complexity)]
    async fn try_sources<S: Sink>(
        &self,
        run: &Run<'_>,
        desc: &Descriptor,
        kind: BlobKind,
        sink: S,
        track: &mut Track,
        from: usize,
    ) -> Result<(S, Result<usize, (usize, TransportError)>), TransportError> {
        let foreign = self.foreign(desc);
        let sources: Vec<&Source> = self.sources.usable().collect();
        let candidates = foreign.len() + sources.len();
        let mut sink = sink;
        let mut last = None;
        for i in from..candidates {
            let result = if i < foreign.len() {
                match self.sources.plain_client() {
                    Ok(client) => {
                        let opener = Opener::Foreign {
                            client,
                            url: foreign[i],
                        };
                        download(run, &opener, desc, kind, sink, track, false).await?
                    }
                    Err(e) => (sink, Err(e)),
                }
            } else {
                let src = sources[i - foreign.len()];
                match self.sources.client(src).await {
                    Ok(client) => {
                        let opener = Opener::Source {
                            client,
                            repo: &src.repo,
                        };
                        download(run, &opener, desc, kind, sink, track, true).await?
                    }
                    Err(e) => (sink, Err(e)),
                }
            };
            let (s, outcome) = result;
            sink = s;
            match outcome {
                Ok(()) => return Ok((sink, Ok(i))),
                Err(e) => {
                    if i >= foreign.len() {
                        self.sources.note_failure(sources[i - foreign.len()], &e);
                    }
                    if i + 1 >= candidates || is_local(&e) {
                        return Ok((sink, Err((i, e))));
                    }
                    run.progress.event(&ProgressEvent::Status {
                        message: &format!(
                            "blob {}: {}; trying the next source",
                            desc.digest,
                            hoist_types::error_chain(&e)
                        ),
                    });
                    last = Some(e);
                }
            }
        }
        let e = last.unwrap_or_else(|| TransportError::NoSource {
            what: format!("blob {}", desc.digest),
        });
        Ok((sink, Err((candidates, e))))
    }
}

/// One candidate's attempts at the rest of the blob. The outer `Err` is fatal (the sink's
/// writer or a task failed; the sink was dropped, and a partial so kept); the inner one is
/// this candidate's failure, with the sink handed back for the next.
#[allow(clippy::type_complexity)]
async fn download<S: Sink>(
    run: &Run<'_>,
    opener: &Opener<'_>,
    desc: &Descriptor,
    kind: BlobKind,
    sink: S,
    track: &mut Track,
    rangeable: bool,
) -> Result<(S, Result<(), TransportError>), TransportError> {
    let sliceable = |p: &S| {
        rangeable
            && S::SLICES
            && run.opts.range_connections > 1
            && desc.size >= run.opts.range_threshold
            && desc.size - p.offset() >= ranged::MIN_SLICE * 2
    };
    let mut sink = sink;
    if sliceable(&sink) {
        if !run.opts.range_probe.is_zero() {
            let probe = Some(run.opts.range_probe);
            match sequential(run, opener, desc, kind, sink, track, probe).await? {
                (p, Seq::Done(r)) => return Ok((p, r)),
                (p, Seq::Slow) => sink = p,
            }
        }
        if sliceable(&sink) {
            match ranged::download(run, opener, desc, kind, sink, track).await? {
                (p, ranged::Ranged::Done) => return Ok((p, Ok(()))),
                (p, ranged::Ranged::Failed(e)) => return Ok((p, Err(e))),
                (p, ranged::Ranged::Unsupported) => sink = p,
            }
        }
    }
    match sequential(run, opener, desc, kind, sink, track, None).await? {
        (p, Seq::Done(r)) => Ok((p, r)),
        (p, Seq::Slow) => Ok((p, Ok(()))),
    }
}
