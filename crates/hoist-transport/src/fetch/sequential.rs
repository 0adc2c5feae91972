//! One blob over one connection at a time: the rest of the blob is streamed into the
//! sink, resumed with `Range: bytes=N-` from the byte reached after a body breaks off
//! (at once after an attempt that moved it forward by [`MIN_PROGRESS`], which also resets
//! the retry count; else after a backoff). A 200 answer to a Range request restarts the
//! sink from 0 (nothing is spliced); a mismatching `Content-Range` makes the blob start
//! again without Range. Network chunks go through a short channel to a blocking thread
//! that hands them to the sink (hashing and writing, or passing them on).

use std::time::{Duration, Instant};

use bytes::Bytes;
use hoist_registry::{Backoff, BlobResponse, RegistryError};
use hoist_types::{BlobKind, Descriptor, Digest, Progress, ProgressEvent};
use tokio::sync::mpsc;

use super::open::{FAST_LINK, MIN_PROGRESS, Opener, Run, Track};
use super::sink::Sink;
use crate::{TransportError, blocking};

/// Network chunks in flight between a response and its sink's thread. Each chunk is
/// what one read of the connection returned: on a fast link hyper's read buffer grows to
/// ~400 KiB, and a chunk keeps its whole allocation alive until the writer is done with
/// it, so every slot costs up to that much per blob in flight (6 at once by default).
/// Two slots keep the writer thread busy (it hashes and writes faster than loopback HTTP
/// delivers) at a third of the memory eight took (peak RSS of a 6-layer pull 40 → 34 MiB).
const CHANNEL_DEPTH: usize = 2;

/// How [`sequential`] ended.
pub(crate) enum Seq {
    /// The blob is in (`Ok`), or this source failed.
    Done(Result<(), TransportError>),
    /// The probe found the connection slow: slice the rest.
    Slow,
}

/// Stream the rest of the blob over one connection at a time, resuming after failures.
/// With `probe`, the first response streams for that long and then, if it was slower
/// than [`FAST_LINK`], the blob is handed back as [`Seq::Slow`] (else it goes on).
pub(crate) async fn sequential<S: Sink>(
    run: &Run<'_>,
    opener: &Opener<'_>,
    desc: &Descriptor,
    kind: BlobKind,
    mut partial: S,
    track: &mut Track,
    mut probe: Option<Duration>,
) -> Result<(S, Seq), TransportError> {
    let mut backoff = Backoff::new(&run.opts.registry.retry);
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
                run.retry_note(&opener.blob_url(desc), 1, &e, Duration::ZERO);
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
        track.announce(desc, kind, &resp.url, run.progress);
        let mut deadline = probe.take().map(|w| (Instant::now(), w));
        let net = loop {
            let until = deadline.map(|(t0, w)| t0 + w);
            let before = partial.offset();
            let (p, wire, net, paused) =
                stream_into(&mut resp, partial, &desc.digest, run.progress, until).await?;
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
            run.retry_note(&resp.url, attempts, &e, Duration::ZERO);
            continue;
        }
        match backoff.next(&e) {
            Some(delay) => {
                run.retry_note(&resp.url, attempts, &e, delay);
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

pub(crate) async fn restart<S: Sink>(partial: S) -> Result<S, TransportError> {
    blocking(move || {
        let mut p = partial;
        p.restart().map(|()| p)
    })
    .await?
}

/// Stream one response into the partial: network chunks go through a channel to a blocking
/// thread that hashes and writes them. Returns the partial, the bytes received, and the
/// network's verdict; the outer `Err` is the writer's failure (fatal).
async fn stream_into<S: Sink>(
    resp: &mut BlobResponse,
    partial: S,
    digest: &Digest,
    progress: &dyn Progress,
    until: Option<Instant>,
) -> Result<(S, u64, Result<(), RegistryError>, bool), TransportError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let writer = tokio::task::spawn_blocking(move || {
        let mut partial = partial;
        let mut result = Ok(());
        while let Some(chunk) = rx.blocking_recv() {
            if let Err(e) = partial.append(chunk) {
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
        return Err(e);
    }
    Ok((partial, wire, net, paused))
}
