//! Fetching one blob into the store, surviving real networks.
//!
//! - **One download per blob**: the digest's store lock is held while it downloads; a
//!   second pull (task or process) waits, then finds the blob present.
//! - **Resume across runs**: bytes go to the store's partial ingest file
//!   ([`hoist_store::PartialBlob`]); an interrupted pull leaves it, the next one re-hashes it
//!   and asks for the rest with `Range`.
//! - **Resume within a run**: a body that breaks off (reset, idle timeout, short body) is
//!   continued with `Range: bytes=N-` from the byte reached: at once after an attempt that
//!   moved the blob forward by at least [`MIN_PROGRESS`] (which also resets the retry count,
//!   so a slow but advancing transfer is never given up on), else after a backoff. A 200 answer to a Range request restarts
//!   the blob from 0 (nothing is spliced); a mismatching `Content-Range` makes the blob
//!   start again without Range. Bytes are hashed once, as they are written.
//! - **Sources**: the mirrors in order, then the registry; a source that fails (after its
//!   retries) hands over to the next, which continues from the same offset (content is
//!   addressed by digest).
//! - **Verification**: size and digest are checked before the blob is published. A
//!   mismatch after a resumed or spliced download is retried once from 0; otherwise the
//!   source is given up on.
//! - Blobs of at least `range_threshold` bytes first stream over one connection for
//!   `range_probe`; if that connection moved less than [`FAST_LINK`] bytes a second, the
//!   rest goes over several Range connections ([`crate::ranged`]). A fast connection is
//!   bound by the CPU (hashing, writing), where slices would only add a read-back pass and
//!   more work for the registry; a slow one (a per-connection limit, a long path) is where
//!   slices pay.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hoist_registry::{Backoff, BlobResponse, RegistryClient, RegistryError};
use hoist_store::{PartialBlob, Store, StoreError};
use hoist_types::{BlobKind, Descriptor, Digest, Progress, ProgressEvent};
use tokio::sync::mpsc;

use crate::sources::{Source, Sources, is_local};
use crate::{PullOptions, TransportError, blocking};

/// An attempt that moved a blob forward by this much counts as progress: the download
/// goes on at once, and the retry count starts again.
pub const MIN_PROGRESS: u64 = 64 * 1024;

/// A connection at least this fast (bytes a second) during the probe of a large blob keeps
/// the blob to itself: 128 MiB/s, about a saturated 1 Gbit/s link.
pub const FAST_LINK: u64 = 128 * 1024 * 1024;

/// How [`sequential`] ended.
enum Seq {
    /// The blob is in (`Ok`), or this source failed.
    Done(Result<(), TransportError>),
    /// The probe found the connection slow: slice the rest.
    Slow,
}

/// What a pull shares with each blob fetch.
pub(crate) struct Ctx<'a> {
    pub store: &'a Store,
    pub sources: &'a Sources,
    pub opts: &'a PullOptions,
    pub progress: &'a dyn Progress,
    /// Digests whose store lock this pull already holds (manifests, config).
    pub held: &'a HashSet<Digest>,
}

/// A fetched blob.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    /// Bytes that crossed the wire.
    pub wire: u64,
    /// Bytes kept from an earlier run and reused.
    pub resumed: u64,
    /// Where the bytes came from (the last response's URL).
    pub endpoint: String,
}

/// Where one attempt opens a response.
pub(crate) enum Opener<'a> {
    /// A registry or mirror.
    Source {
        client: &'a RegistryClient,
        repo: &'a str,
    },
    /// A foreign layer URL (no credentials).
    Foreign {
        client: RegistryClient,
        url: &'a str,
    },
}

impl Opener<'_> {
    async fn open(&self, desc: &Descriptor, offset: u64) -> Result<BlobResponse, RegistryError> {
        match self {
            Opener::Source { client, repo } if offset > 0 => {
                client.get_blob_from(repo, desc, offset).await
            }
            Opener::Source { client, repo } => client.get_blob(repo, desc).await,
            Opener::Foreign { client, url } => client.get_foreign_blob(url, desc, offset).await,
        }
    }

    pub(crate) async fn open_range(
        &self,
        desc: &Descriptor,
        start: u64,
        end: u64,
    ) -> Result<BlobResponse, RegistryError> {
        match self {
            Opener::Source { client, repo } => client.get_blob_range(repo, desc, start, end).await,
            Opener::Foreign { client, url } => client.get_foreign_blob(url, desc, start).await,
        }
    }
}

/// Per-blob bookkeeping across attempts and sources.
#[derive(Default)]
pub(crate) struct Track {
    pub wire: u64,
    /// The URL of the last response that delivered bytes.
    pub last_url: String,
    /// The endpoint announced in the last `BlobStart`.
    announced: Option<String>,
    /// More than one response (or kept bytes) went into the current content.
    pub spliced: bool,
}

impl Track {
    /// Announce the response's endpoint when it changes (progress shows where each blob
    /// comes from).
    pub fn announce(&mut self, desc: &Descriptor, kind: BlobKind, url: &str, p: &dyn Progress) {
        let origin = origin_of(url);
        if self.announced.as_deref() != Some(origin.as_str()) {
            p.event(&ProgressEvent::BlobStart {
                digest: &desc.digest,
                size: desc.size,
                kind,
                endpoint: url,
            });
            self.announced = Some(origin);
        }
        self.last_url = url.to_owned();
    }
}

fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| url.to_owned())
}

/// Fetch one blob into the store unless present. `None` when it was already there.
pub(crate) async fn fetch_blob(
    ctx: &Ctx<'_>,
    desc: &Descriptor,
    kind: BlobKind,
) -> Result<Option<Fetched>, TransportError> {
    let skipped = || {
        ctx.progress.event(&ProgressEvent::BlobDone {
            digest: &desc.digest,
            size: desc.size,
            kind,
            skipped: true,
        })
    };
    let (s, d) = (ctx.store.clone(), desc.digest.clone());
    if blocking(move || s.has_blob(&d)).await??.is_some() {
        skipped();
        return Ok(None);
    }
    // One download per blob across processes: hold the digest's lock, then look again.
    let _lock = if ctx.held.contains(&desc.digest) {
        None
    } else {
        let (s, d) = (ctx.store.clone(), desc.digest.clone());
        Some(blocking(move || s.lock_blob(&d)).await??)
    };
    let (s, d) = (ctx.store.clone(), desc.digest.clone());
    if blocking(move || s.has_blob(&d)).await??.is_some() {
        skipped();
        return Ok(None);
    }
    let mut partial = open_partial(ctx.store, desc).await?;
    let resumed = partial.offset();
    let mut track = Track {
        spliced: resumed > 0,
        ..Track::default()
    };

    let foreign: Vec<&str> = match (&desc.urls, ctx.opts.foreign_layers) {
        (Some(urls), true) if desc.media_type.is_foreign_layer() => {
            urls.iter().map(String::as_str).collect()
        }
        _ => Vec::new(),
    };
    let sources: Vec<&Source> = ctx.sources.usable().collect();
    let candidates = foreign.len() + sources.len();
    let mut fresh_retry = false;
    let mut last_err: Option<TransportError> = None;
    let mut i = 0;
    while i < candidates {
        let result = if i < foreign.len() {
            match ctx.sources.plain_client() {
                Ok(client) => {
                    let opener = Opener::Foreign {
                        client,
                        url: foreign[i],
                    };
                    download(ctx, &opener, desc, kind, partial, &mut track, false).await
                }
                Err(e) => Ok((partial, Err(e))),
            }
        } else {
            let src = sources[i - foreign.len()];
            match ctx.sources.client(src).await {
                Ok(client) => {
                    let opener = Opener::Source {
                        client,
                        repo: &src.repo,
                    };
                    download(ctx, &opener, desc, kind, partial, &mut track, true).await
                }
                Err(e) => Ok((partial, Err(e))),
            }
        };
        let (p, outcome) = result?;
        partial = p;
        let next = |e: &TransportError| -> bool { i + 1 < candidates && !is_local(e) };
        match outcome {
            Ok(()) => {
                let verified = blocking(move || partial.commit()).await?;
                match verified {
                    Ok(()) => {
                        ctx.progress.event(&ProgressEvent::BlobDone {
                            digest: &desc.digest,
                            size: desc.size,
                            kind,
                            skipped: false,
                        });
                        return Ok(Some(Fetched {
                            wire: track.wire,
                            resumed,
                            endpoint: track.last_url,
                        }));
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
                        partial = open_partial(ctx.store, desc).await?;
                        if track.spliced && !fresh_retry {
                            // Kept or spliced bytes may be what is wrong: once more from 0.
                            fresh_retry = true;
                            track.spliced = false;
                            retry_note(ctx, &track.last_url, 1, &err, Duration::ZERO);
                            continue;
                        }
                        if !next(&err) {
                            return Err(err);
                        }
                        last_err = Some(err);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => {
                if !next(&e) {
                    return Err(e);
                }
                if i >= foreign.len() {
                    ctx.sources.note_failure(sources[i - foreign.len()], &e);
                }
                ctx.progress.event(&ProgressEvent::Status {
                    message: &format!("blob {}: {e}; trying the next source", desc.digest),
                });
                last_err = Some(e);
            }
        }
        i += 1;
    }
    Err(last_err.unwrap_or_else(|| TransportError::Unsupported {
        what: format!("blob {}: no source to fetch it from", desc.digest),
    }))
}

async fn open_partial(store: &Store, desc: &Descriptor) -> Result<PartialBlob, TransportError> {
    let (s, d, size) = (store.clone(), desc.digest.clone(), desc.size);
    Ok(blocking(move || s.open_partial(&d, size)).await??)
}

/// One source's attempts at the rest of the blob. The outer `Err` is fatal (the store or
/// a task failed; the partial was dropped and so kept); the inner one is this source's
/// failure, with the partial handed back for the next source.
#[allow(clippy::type_complexity)]
async fn download(
    ctx: &Ctx<'_>,
    opener: &Opener<'_>,
    desc: &Descriptor,
    kind: BlobKind,
    partial: PartialBlob,
    track: &mut Track,
    rangeable: bool,
) -> Result<(PartialBlob, Result<(), TransportError>), TransportError> {
    let sliceable = |p: &PartialBlob| {
        rangeable
            && ctx.opts.range_connections > 1
            && desc.size >= ctx.opts.range_threshold
            && desc.size - p.offset() >= crate::ranged::MIN_SLICE * 2
    };
    let mut partial = partial;
    if sliceable(&partial) {
        if !ctx.opts.range_probe.is_zero() {
            let probe = Some(ctx.opts.range_probe);
            match sequential(ctx, opener, desc, kind, partial, track, probe).await? {
                (p, Seq::Done(r)) => return Ok((p, r)),
                (p, Seq::Slow) => partial = p,
            }
        }
        if sliceable(&partial) {
            match crate::ranged::download(ctx, opener, desc, kind, partial, track).await? {
                (p, crate::ranged::Ranged::Done) => return Ok((p, Ok(()))),
                (p, crate::ranged::Ranged::Failed(e)) => return Ok((p, Err(e))),
                (p, crate::ranged::Ranged::Unsupported) => partial = p,
            }
        }
    }
    match sequential(ctx, opener, desc, kind, partial, track, None).await? {
        (p, Seq::Done(r)) => Ok((p, r)),
        (p, Seq::Slow) => Ok((p, Ok(()))),
    }
}

/// Stream the rest of the blob over one connection at a time, resuming after failures.
/// With `probe`, the first response streams for that long and then, if it was slower
/// than [`FAST_LINK`], the blob is handed back as [`Seq::Slow`] (else it goes on).
async fn sequential(
    ctx: &Ctx<'_>,
    opener: &Opener<'_>,
    desc: &Descriptor,
    kind: BlobKind,
    mut partial: PartialBlob,
    track: &mut Track,
    mut probe: Option<Duration>,
) -> Result<(PartialBlob, Seq), TransportError> {
    let mut backoff = Backoff::new(&ctx.opts.registry.retry);
    let mut use_range = true;
    let mut high = partial.offset();
    let mut attempts = 1;
    loop {
        let offset = partial.offset();
        if offset == desc.size {
            return Ok((partial, Seq::Done(Ok(()))));
        }
        let ask = if use_range { offset } else { 0 };
        let mut resp = match opener.open(desc, ask).await {
            Ok(r) => r,
            Err(e) if matches!(e.root(), RegistryError::RangeMismatch { .. }) && use_range => {
                // The server's Range answers cannot be trusted: whole blob from now on.
                use_range = false;
                partial = restart(partial).await?;
                retry_note(ctx, &blob_url(opener, desc), 1, &e, Duration::ZERO);
                continue;
            }
            Err(e) => return Ok((partial, Seq::Done(Err(e.into())))),
        };
        if resp.start != partial.offset() {
            // A 200 to a Range request: the whole blob again. Never splice.
            partial = restart(partial).await?;
            use_range = false;
        }
        if partial.offset() > 0 {
            track.spliced = true;
        }
        track.announce(desc, kind, &resp.url, ctx.progress);
        let mut deadline = probe.take().map(|w| (Instant::now(), w));
        let net = loop {
            let until = deadline.map(|(t0, w)| t0 + w);
            let before = partial.offset();
            let (p, wire, net, paused) =
                stream_into(&mut resp, partial, &desc.digest, ctx.progress, until).await?;
            partial = p;
            track.wire += wire;
            match deadline.take() {
                Some((t0, _)) if paused => {
                    let rate = (partial.offset() - before) as f64 / t0.elapsed().as_secs_f64();
                    if rate < FAST_LINK as f64 {
                        return Ok((partial, Seq::Slow));
                    }
                    // Fast enough alone: go on with this response.
                }
                _ => break net,
            }
        };
        let e = match net {
            Ok(()) => return Ok((partial, Seq::Done(Ok(())))),
            Err(e) => e,
        };
        let now = partial.offset();
        let productive = now >= high + MIN_PROGRESS;
        high = high.max(now);
        attempts += 1;
        if productive && e.is_retryable() {
            // The connection was healthy until it broke: go on at once, with a fresh
            // retry budget.
            backoff.reset();
            retry_note(ctx, &resp.url, attempts, &e, Duration::ZERO);
            continue;
        }
        match backoff.next(&e) {
            Some(delay) => {
                retry_note(ctx, &resp.url, attempts, &e, delay);
                tokio::time::sleep(delay).await;
            }
            None => {
                let err = if e.is_retryable() && backoff.retries() > 0 {
                    RegistryError::GaveUp {
                        attempts: backoff.retries() + 1,
                        elapsed: backoff.elapsed(),
                        source: Box::new(e),
                    }
                } else {
                    e
                };
                return Ok((partial, Seq::Done(Err(err.into()))));
            }
        }
    }
}

fn blob_url(opener: &Opener<'_>, desc: &Descriptor) -> String {
    match opener {
        Opener::Source { client, repo } => {
            format!("{}/v2/{repo}/blobs/{}", client.base_url(), desc.digest)
        }
        Opener::Foreign { url, .. } => (*url).to_owned(),
    }
}

/// Report a retry to the progress reporter and `tracing`.
pub(crate) fn retry_note(
    ctx: &Ctx<'_>,
    what: &str,
    attempt: u32,
    err: &dyn std::fmt::Display,
    delay: Duration,
) {
    tracing::info!(what, attempt, %err, ?delay, "retrying blob");
    ctx.progress.event(&ProgressEvent::Retry {
        what,
        attempt,
        reason: &format!(
            "{err}; retrying in {}",
            hoist_registry::retry::fmt_delay(delay)
        ),
    });
}

pub(crate) async fn restart(partial: PartialBlob) -> Result<PartialBlob, TransportError> {
    blocking(move || {
        let mut p = partial;
        p.restart().map(|()| p)
    })
    .await?
    .map_err(Into::into)
}

/// Stream one response into the partial: network chunks go through a channel to a blocking
/// thread that hashes and writes them. Returns the partial, the bytes received, and the
/// network's verdict; the outer `Err` is the writer's failure (fatal).
async fn stream_into(
    resp: &mut BlobResponse,
    partial: PartialBlob,
    digest: &Digest,
    progress: &dyn Progress,
    until: Option<Instant>,
) -> Result<(PartialBlob, u64, Result<(), RegistryError>, bool), TransportError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(32);
    let writer = tokio::task::spawn_blocking(move || {
        let mut partial = partial;
        let mut result = Ok(());
        while let Some(chunk) = rx.blocking_recv() {
            if let Err(e) = partial.append(&chunk) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            result = partial.checkpoint();
        }
        (partial, result)
    });
    let mut wire = 0u64;
    let mut paused = false;
    let net = loop {
        if until.is_some_and(|t| Instant::now() >= t) {
            paused = true;
            break Ok(());
        }
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                wire += chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    // The writer stopped; its error is reported below.
                    break Ok(());
                }
                progress.event(&ProgressEvent::BlobProgress {
                    digest,
                    done: resp.position(),
                });
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    drop(tx);
    let (partial, written) = writer.await.map_err(|e| TransportError::Task {
        what: e.to_string(),
    })?;
    if let Err(e) = written {
        drop(partial);
        return Err(e.into());
    }
    Ok((partial, wire, net, paused))
}
