//! One large blob over several connections: the rest of the blob is cut into slices
//! (4 to 64 MiB, about four per connection), fetched with `Range` by `range_connections`
//! workers in order, written in place into the partial file, and hashed in order by one
//! blocking thread as the contiguous prefix grows. Each slice resumes by itself after a
//! failure. The first slice's answer is the probe: a registry that ignores `Range` (200)
//! or answers with a wrong `Content-Range` makes the caller fall back to one connection.
//! If the fetch stops, the hashed contiguous prefix is what the partial keeps. Only a
//! sink that writes in place ([`Sink::slice_writer`]) is sliced.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoist_registry::{Backoff, BlobResponse, RegistryError};
use hoist_store::SliceWriter;
use hoist_types::{BlobKind, Descriptor, ProgressEvent};

use super::open::{MIN_PROGRESS, Opener, Run, Track};
use super::sink::Sink;
use crate::{TransportError, blocking};

/// The smallest slice.
pub const MIN_SLICE: u64 = 4 * 1024 * 1024;
/// The largest slice.
const MAX_SLICE: u64 = 64 * 1024 * 1024;
/// Bytes buffered per worker before a positioned write.
const WRITE_PIECE: usize = 1024 * 1024;

/// How a parallel download ended (the fatal failures are the outer `Err`).
pub(crate) enum Ranged {
    /// Every byte is in and hashed.
    Done,
    /// The source does not honour Range: go on with one connection.
    Unsupported,
    /// The source failed (after its retries).
    Failed(TransportError),
}

enum SliceErr {
    Unsupported,
    Aborted,
    Net(RegistryError),
    Fatal(TransportError),
}

/// The slices `[a, b)` covering `start..size`.
pub(crate) fn slices(start: u64, size: u64, connections: usize) -> Vec<(u64, u64)> {
    let per = ((size - start) / (connections.max(1) as u64 * 4)).clamp(MIN_SLICE, MAX_SLICE);
    let mut out = Vec::new();
    let mut a = start;
    while a < size {
        let b = (a + per).min(size);
        out.push((a, b));
        a = b;
    }
    out
}

/// Fetch the rest of the blob over several connections (see the module docs).
pub(crate) async fn download<S: Sink>(
    run: &Run<'_>,
    opener: &Opener<'_>,
    desc: &Descriptor,
    kind: BlobKind,
    partial: S,
    track: &mut Track,
) -> Result<(S, Ranged), TransportError> {
    let start = partial.offset();
    let size = desc.size;
    let parts = slices(start, size, run.opts.range_connections);
    let (a0, b0) = parts[0];
    let first = match opener.open_range(desc, a0, b0).await {
        Ok(r) if r.start == a0 && r.expected_len() == b0 - a0 => r,
        Ok(_) => return Ok((partial, Ranged::Unsupported)),
        Err(e) if matches!(e.root(), RegistryError::RangeMismatch { .. }) => {
            return Ok((partial, Ranged::Unsupported));
        }
        Err(e) => return Ok((partial, Ranged::Failed(e.into()))),
    };
    let (partial, writer) = blocking(move || {
        let mut p = partial;
        p.slice_writer().map(|w| (p, w))
    })
    .await??;
    let Some(writer) = writer else {
        return Ok((partial, Ranged::Unsupported));
    };
    track.announce(desc, kind, &first.url, run.progress);
    track.spliced = true;
    let writer = Arc::new(writer);

    // The hasher: hashes the contiguous prefix as slices complete.
    let n = parts.len();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<usize>();
    let bounds = parts.clone();
    let hasher = tokio::task::spawn_blocking(move || {
        let mut partial = partial;
        let mut done = vec![false; n];
        let mut next = 0;
        for i in done_rx {
            done[i] = true;
            while next < n && done[next] {
                next += 1;
            }
            let end = if next == n { size } else { bounds[next].0 };
            if end > partial.offset()
                && let Err(e) = partial.hash_through(end)
            {
                return (partial, Err(e));
            }
        }
        (partial, Ok(()))
    });

    let queue = Mutex::new((1..n).collect::<VecDeque<usize>>());
    let first = Mutex::new(Some(first));
    let abort = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let wire = AtomicU64::new(0);
    let workers = (0..run.opts.range_connections.min(n)).map(|w| {
        let (queue, first, abort, received, wire) = (&queue, &first, &abort, &received, &wire);
        let parts = &parts;
        let (writer, done_tx) = (writer.clone(), done_tx.clone());
        async move {
            let mut initial = if w == 0 {
                first.lock().unwrap_or_else(|p| p.into_inner()).take()
            } else {
                None
            };
            let mut idx = if initial.is_some() { Some(0) } else { None };
            let sl = Slice {
                run,
                opener,
                desc,
                writer: &writer,
                abort,
                received,
                wire,
                start,
                spare: Mutex::new(None),
            };
            loop {
                let i = match idx.take() {
                    Some(i) => i,
                    None => match queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() {
                        Some(i) => i,
                        None => return Ok(()),
                    },
                };
                match sl.fetch(parts[i], initial.take()).await {
                    Ok(()) => {
                        let _ = done_tx.send(i);
                    }
                    Err(e) => {
                        abort.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        }
    });
    let results = futures_util::future::join_all(workers).await;
    drop(done_tx);
    let (partial, hashed) = hasher.await.map_err(|e| TransportError::Task {
        what: e.to_string(),
    })?;
    track.wire += wire.load(Ordering::Relaxed);
    hashed?;
    let mut outcome = Ranged::Done;
    for r in results {
        match r {
            Ok(()) | Err(SliceErr::Aborted) => {}
            Err(SliceErr::Fatal(e)) => return Err(e),
            Err(SliceErr::Unsupported) => {
                if matches!(outcome, Ranged::Done) {
                    outcome = Ranged::Unsupported;
                }
            }
            Err(SliceErr::Net(e)) => outcome = Ranged::Failed(e.into()),
        }
    }
    if matches!(outcome, Ranged::Done) && partial.offset() != size {
        outcome = Ranged::Unsupported;
    }
    Ok((partial, outcome))
}

/// What a worker needs to fetch one slice.
struct Slice<'a, 'c> {
    run: &'a Run<'c>,
    opener: &'a Opener<'a>,
    desc: &'a Descriptor,
    writer: &'a Arc<SliceWriter>,
    abort: &'a AtomicBool,
    received: &'a AtomicU64,
    wire: &'a AtomicU64,
    start: u64,
    /// This worker's write buffer between slices.
    spare: Mutex<Option<Vec<u8>>>,
}

impl Slice<'_, '_> {
    /// Fetch `[a, b)`, resuming within the slice after failures.
    async fn fetch(
        &self,
        (a, b): (u64, u64),
        initial: Option<BlobResponse>,
    ) -> Result<(), SliceErr> {
        let mut initial = initial;
        let mut pos = a;
        let mut high = a;
        let mut backoff = Backoff::new(&self.run.opts.registry.retry);
        let mut attempts = 1;
        loop {
            if self.abort.load(Ordering::Relaxed) {
                return Err(SliceErr::Aborted);
            }
            let mut resp = match initial.take() {
                Some(r) => r,
                None => match self.opener.open_range(self.desc, pos, b).await {
                    Ok(r) => r,
                    Err(e) if matches!(e.root(), RegistryError::RangeMismatch { .. }) => {
                        return Err(SliceErr::Unsupported);
                    }
                    Err(e) => return Err(SliceErr::Net(e)),
                },
            };
            if resp.start != pos || resp.expected_len() != b - pos {
                return Err(SliceErr::Unsupported);
            }
            let mut buf = self.take_buf();
            let mut at = pos;
            let net = loop {
                if self.abort.load(Ordering::Relaxed) {
                    break Ok(());
                }
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        self.wire.fetch_add(c.len() as u64, Ordering::Relaxed);
                        let total = self.received.fetch_add(c.len() as u64, Ordering::Relaxed);
                        buf.extend_from_slice(&c);
                        if buf.len() >= WRITE_PIECE {
                            (at, buf) = self.write(at, buf).await?;
                        }
                        self.run.progress.event(&ProgressEvent::BlobProgress {
                            digest: &self.desc.digest,
                            done: self.start + total + c.len() as u64,
                        });
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            // What arrived is good, whatever came after it.
            let (end, buf) = self.write(at, buf).await?;
            pos = end;
            *self.spare.lock().unwrap_or_else(|p| p.into_inner()) = Some(buf);
            let e = match net {
                Ok(()) if pos == b => return Ok(()),
                Ok(()) => return Err(SliceErr::Aborted),
                Err(e) => e,
            };
            let productive = pos >= high + MIN_PROGRESS;
            high = high.max(pos);
            attempts += 1;
            if productive && e.is_retryable() {
                backoff.reset();
                self.run.retry_note(&resp.url, attempts, &e, Duration::ZERO);
                continue;
            }
            match backoff.next(&e) {
                Some(delay) => {
                    self.run.retry_note(&resp.url, attempts, &e, delay);
                    tokio::time::sleep(delay).await;
                }
                None if e.is_retryable() && backoff.retries() > 0 => {
                    return Err(SliceErr::Net(RegistryError::GaveUp {
                        attempts: backoff.retries() + 1,
                        elapsed: backoff.elapsed(),
                        source: Box::new(e),
                    }));
                }
                None => return Err(SliceErr::Net(e)),
            }
        }
    }

    /// The worker's buffer (kept between slices: no fresh 1 MiB allocation per piece).
    fn take_buf(&self) -> Vec<u8> {
        self.spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| Vec::with_capacity(WRITE_PIECE))
    }

    /// Write `buf` at `at` on a blocking thread; the position after it, and the buffer,
    /// emptied, for reuse.
    async fn write(&self, at: u64, mut buf: Vec<u8>) -> Result<(u64, Vec<u8>), SliceErr> {
        if buf.is_empty() {
            return Ok((at, buf));
        }
        let w = self.writer.clone();
        let len = buf.len() as u64;
        let r = blocking(move || {
            let r = w.write_at(at, &buf);
            buf.clear();
            (r, buf)
        })
        .await
        .map_err(SliceErr::Fatal)?;
        r.0.map_err(|e| SliceErr::Fatal(e.into()))?;
        Ok((at + len, r.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_rest_exactly() {
        const M: u64 = 1024 * 1024;
        for (start, size, conns) in [
            (0, 1024 * M, 4),
            (0, 64 * M, 4),
            (5 * M + 3, 200 * M + 7, 3),
            (0, 9 * M, 8),
        ] {
            let s = slices(start, size, conns);
            assert_eq!(s[0].0, start);
            assert_eq!(s.last().unwrap().1, size);
            assert!(s.windows(2).all(|w| w[0].1 == w[1].0));
            assert!(
                s.iter()
                    .all(|(a, b)| b - a <= MAX_SLICE && (b - a >= MIN_SLICE || *b == size))
            );
        }
        assert_eq!(slices(0, 1024 * M, 4).len(), 16);
    }
}
