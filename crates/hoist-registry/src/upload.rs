//! The push side of the Distribution API for blobs: existence checks, cross-repository
//! mounts and uploads.
//!
//! # The protocol as implemented
//!
//! **Scopes.** Every push request asks for `repository:REPO:pull,push`; a mount asks for
//! that plus `repository:FROM:pull` (sent as two `scope` parameters to the token server).
//! Tokens are cached per exact scope string, so a push token and a pull token for the
//! same repository are two cache entries and never stand in for each other. Basic auth
//! and anonymous access work as for pulls.
//!
//! **Exists.** `HEAD /v2/REPO/blobs/DIGEST`: 200 means present (a `Content-Length` that
//! differs from the descriptor's size is an error), 404 absent.
//!
//! **Mount.** `POST /v2/REPO/blobs/uploads/?mount=DIGEST&from=FROM`. 201: mounted, no
//! byte moves (a `Docker-Content-Digest` must name the digest). 202: the registry did not
//! mount and opened an upload session instead. [`RegistryClient::mount_blob`] deletes that
//! session (`DELETE`); [`RegistryClient::push_blob_or_mount`] uploads into it. A mount the
//! registry refuses (401/403: the user cannot read FROM; 404; another 4xx) is not an
//! error for `push_blob_or_mount`: it starts a plain upload.
//!
//! **Upload.** `POST /v2/REPO/blobs/uploads/` answers 202 with a `Location`, relative or
//! absolute, that every later request of the session goes to (each answer may move it;
//! the latest one is used). Credentials go with it only while it stays on the
//! registry's origin (scheme, host and port), as for redirects; https never becomes
//! http.
//! - Blobs below [`UploadOptions::monolithic_threshold`] go in one request:
//!   `PUT LOCATION?digest=DIGEST` with the whole body (`Content-Length`,
//!   `Content-Type: application/octet-stream`).
//! - Larger blobs go in chunks of [`UploadOptions::chunk_size`]: `PATCH LOCATION` with
//!   `Content-Range: START-END` (inclusive, Distribution's form), answered 202 with the
//!   next `Location` and `Range: 0-END`, which must equal the bytes sent; then
//!   `PUT LOCATION?digest=DIGEST` with no body.
//! - A chunked upload the registry refuses (a PATCH answered 400, 405, 416 or 501, or a
//!   `Range` that does not match) is cancelled with `DELETE` and started again as one
//!   monolithic PUT, from byte 0.
//! - The final answer must be 201; its `Docker-Content-Digest`, when sent, must equal the
//!   digest.
//!
//! **Verification.** The bytes are counted and hashed as they are sent, each byte once
//! whatever the retries; a source that is longer or shorter than the descriptor, or whose
//! bytes do not hash to the digest, fails the request that carries its last byte, so the
//! registry never completes the upload ([`RegistryError::SourceSize`],
//! [`RegistryError::SourceDigest`]).
//!
//! **Retries** follow the client's [`RetryPolicy`](crate::RetryPolicy) (connection
//! errors, timeouts, 408, 429, 5xx; `Retry-After`), one budget per blob, renewed by each
//! chunk the registry accepts. A failed PATCH asks the session where it stands
//! (`GET LOCATION`: 204 with `Range`) and goes on from there; when it cannot tell, the
//! upload starts over in a new session (the old one is deleted). Bytes are sent again
//! only when the [`BlobBody`] can give them again: replayable bodies (bytes, files,
//! reopenable readers and streams) from any offset; one-shot readers and streams from
//! the bytes kept of the current chunk. Otherwise the upload stops with
//! [`RegistryError::NotReplayable`] and the caller decides. A 401 on a request with a
//! body renews the token and tries again (twice at most).
//!
//! **Timeouts.** No total timeout: a request fails when no byte has been taken from its
//! body, and no answer has come, for the client's connect + read timeout.
//!
//! **Progress.** [`ProgressEvent::BlobProgress`](hoist_types::ProgressEvent) with the bytes
//! sent so far (each byte counted once), to the client's progress reporter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_types::{Descriptor, Digest};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::api::{header_digest, validate_repo};
use crate::auth::same_origin;
use crate::client::{Req, method_str, read_limited, transport_error};
use crate::retry::Backoff;
use crate::upload_body::{ChunkStream, Feed, SharedFeed, lock, seek};
use crate::{BlobBody, RegistryClient, RegistryError};

/// How blobs are uploaded (part of [`ClientOptions`](crate::ClientOptions)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadOptions {
    /// Blobs smaller than this go in one `PUT`; larger ones in chunks. Default 16 MiB.
    pub monolithic_threshold: u64,
    /// Bytes per `PATCH` of a chunked upload (at least 64 KiB). Default 32 MiB. A
    /// one-shot body keeps up to this much in memory, to send a failed chunk again.
    pub chunk_size: u64,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            monolithic_threshold: 16 << 20,
            chunk_size: 32 << 20,
        }
    }
}

/// The smallest chunk honoured.
const MIN_CHUNK: u64 = 64 << 10;
/// Renewals of authentication for requests with a body, per blob.
const MAX_AUTH_RENEWALS: u32 = 2;

/// How a blob got to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMethod {
    /// Mounted from another repository: no byte sent.
    Mounted,
    /// One `PUT` with the whole blob.
    Monolithic,
    /// `PATCH` chunks, then `PUT`.
    Chunked,
    /// Chunks were refused; sent again as one `PUT`.
    ChunkedFellBack,
}

/// What [`RegistryClient::push_blob`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedBlob {
    /// How the bytes went.
    pub method: UploadMethod,
    /// Requests that carried blob bytes (`PATCH`es and `PUT`s with a body).
    pub data_requests: u32,
    /// Times a request was retried, the upload resumed or restarted.
    pub retries: u32,
}

/// What [`RegistryClient::mount_blob`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOutcome {
    /// The blob is now in the repository; no byte moved.
    Mounted,
    /// The registry did not mount it (the session it opened instead was deleted): upload it.
    NotMounted {
        /// Why, as the registry put it.
        reason: String,
    },
}

/// An upload session: where its next request goes, and whether credentials go there.
#[derive(Debug, Clone)]
struct Session {
    url: Url,
    auth: bool,
}

enum Started {
    Mounted,
    Session(Session),
}

/// Why a round of uploading stopped.
enum Failure {
    /// Chunks refused: send the blob as one PUT.
    Rejected(String),
    /// Start over in a new session, after the retry policy's wait.
    Transient(RegistryError),
    /// Start over in a new session now (the wait was made already).
    Restart(RegistryError),
    /// Give up.
    Fatal(RegistryError),
}

/// Per-blob bookkeeping.
struct Run {
    backoff: Backoff,
    data_requests: u32,
    retries: u32,
    auth_renewals: u32,
    replayable: bool,
}

pub(crate) fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// `Range` of an upload answer: `0-END` or `bytes=0-END`, as (start, end).
fn parse_upload_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (a, b) = v.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (a, b) = (num(a.trim())?, num(b.trim())?);
    (a <= b).then_some((a, b))
}

/// The Distribution error code (`errors[0].code`) of an error body.
fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let c = v.get("errors")?.get(0)?.get("code")?.as_str()?;
    (!c.is_empty()).then(|| c.chars().take(100).collect())
}

/// A session's `Location`, resolved against the answer's URL: http(s) only, no user
/// info, no https → http; credentials only on the registry's own origin.
fn session_from(resp: &Response, base: &Url) -> Result<Session, RegistryError> {
    let url = resp.url();
    let bad = |reason: String| RegistryError::InvalidResponse {
        url: url.to_string(),
        reason,
    };
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad(format!("{} without a usable Location", resp.status())))?;
    let clip = || loc.chars().take(300).collect::<String>();
    let next = url
        .join(loc.trim())
        .map_err(|_| bad(format!("invalid upload Location {:?}", clip())))?;
    if !matches!(next.scheme(), "http" | "https")
        || next.host().is_none()
        || !next.username().is_empty()
        || next.password().is_some()
        || (base.scheme() == "https" && next.scheme() == "http")
    {
        return Err(bad(format!("upload Location {:?} refused", clip())));
    }
    Ok(Session {
        auth: same_origin(&next, base),
        url: next,
    })
}

impl RegistryClient {
    /// Mount blob `desc` from `from_repo` into `repo` (same registry). A registry that
    /// opens an upload instead (202) gets it deleted, and [`MountOutcome::NotMounted`]
    /// comes back; so does a refused mount (the user cannot read `from_repo`).
    pub async fn mount_blob(
        &self,
        repo: &str,
        from_repo: &str,
        desc: &Descriptor,
    ) -> Result<MountOutcome, RegistryError> {
        validate_repo(repo)?;
        validate_repo(from_repo)?;
        match self
            .start_upload(repo, Some((from_repo, &desc.digest)))
            .await
        {
            Ok(Started::Mounted) => Ok(MountOutcome::Mounted),
            Ok(Started::Session(s)) => {
                self.cancel(&s, repo).await;
                Ok(MountOutcome::NotMounted {
                    reason: "the registry opened an upload instead".into(),
                })
            }
            Err(e) if mount_refusal(&e) => Ok(MountOutcome::NotMounted {
                reason: e.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Upload blob `desc` to `repo` from `body`: monolithic below the threshold, chunked
    /// above it, with the fallbacks and retries described in the [module docs](crate::upload).
    pub async fn push_blob(
        &self,
        repo: &str,
        desc: &Descriptor,
        body: BlobBody,
    ) -> Result<PushedBlob, RegistryError> {
        self.upload(repo, desc, body, None).await
    }

    /// Like [`push_blob`](Self::push_blob), trying a mount from `from_repo` first: when
    /// the registry opens an upload instead, the blob goes into that session; when it
    /// refuses the mount, a plain upload follows. `body` is opened only if bytes move.
    pub async fn push_blob_or_mount(
        &self,
        repo: &str,
        from_repo: &str,
        desc: &Descriptor,
        body: BlobBody,
    ) -> Result<PushedBlob, RegistryError> {
        validate_repo(from_repo)?;
        self.upload(repo, desc, body, Some(from_repo)).await
    }

    /// Cancel an upload session: `DELETE` its `location` (absolute, or relative to the
    /// registry). Credentials go only to the registry's origin. 404 (already gone) is
    /// success.
    pub async fn delete_upload(&self, repo: &str, location: &str) -> Result<(), RegistryError> {
        validate_repo(repo)?;
        let base = self.base().await?.clone();
        let url = base
            .join(location.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.username().is_empty())
            .ok_or_else(|| RegistryError::InvalidArgument {
                what: "upload location",
                value: location.chars().take(300).collect(),
                reason: "not an http(s) URL or path",
            })?;
        let s = Session {
            auth: same_origin(&url, &base),
            url,
        };
        let resp = self
            .session_request(&s, Method::DELETE, &push_scope(repo))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        self.check_status(resp, &Method::DELETE, || "upload session".into())
            .await
            .map(drop)
    }

    /// `POST /v2/REPO/blobs/uploads/`, with a mount when asked.
    async fn start_upload(
        &self,
        repo: &str,
        mount: Option<(&str, &Digest)>,
    ) -> Result<Started, RegistryError> {
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/")).await?;
        let mut scope = push_scope(repo);
        if let Some((from, digest)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from);
            scope = format!("{scope} repository:{from}:pull");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        self.retrying(url.as_str(), || async {
            let resp = self
                .execute(Req {
                    method: Method::POST,
                    url: url.clone(),
                    scope: Some(scope.clone()),
                    headers: headers.clone(),
                })
                .await?;
            match (resp.status().as_u16(), mount) {
                (201, Some((_, digest))) => {
                    if let Some(got) = header_digest(&resp)?
                        && &got != digest
                    {
                        return Err(RegistryError::DigestMismatch {
                            url: resp.url().to_string(),
                            expected: digest.clone(),
                            actual: got,
                        });
                    }
                    Ok(Started::Mounted)
                }
                (202, _) => {
                    let base = self.base().await?;
                    session_from(&resp, base).map(Started::Session)
                }
                _ => Err(self
                    .push_error(resp, &Method::POST, format!("an upload to {repo}"))
                    .await),
            }
        })
        .await
    }

    /// Turn a failed push answer into an error naming the URL, status and code.
    pub(crate) async fn push_error(
        &self,
        resp: Response,
        method: &Method,
        what: String,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403 | 404 | 408 | 429) || !(400..500).contains(&status) {
            let resp = match self.check_status(resp, method, || what.clone()).await {
                Ok(r) => r,
                Err(e) => return e,
            };
            return RegistryError::InvalidResponse {
                url: resp.url().to_string(),
                reason: format!("unexpected HTTP {} for {what}", resp.status()),
            };
        }
        let url = resp.url().to_string();
        let reason = resp.status().canonical_reason().unwrap_or("refused");
        let body = read_limited(
            resp,
            hoist_types::MAX_SMALL_BODY,
            "error body",
            self.inner.opts.read_timeout,
        )
        .await
        .unwrap_or_default();
        RegistryError::PushRejected {
            method: method_str(method),
            url,
            what,
            status,
            code: error_code(&body),
            message: crate::client::error_message_from_body(&body)
                .unwrap_or_else(|| reason.to_owned()),
        }
    }

    /// A request without a body to a session URL: through the authenticating engine on
    /// the registry's origin, without credentials elsewhere.
    async fn session_request(
        &self,
        s: &Session,
        method: Method,
        scope: &str,
    ) -> Result<Response, RegistryError> {
        let mut headers = HeaderMap::new();
        if method == Method::PUT {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        if s.auth {
            self.execute(Req {
                method,
                url: s.url.clone(),
                scope: Some(scope.to_owned()),
                headers,
            })
            .await
        } else {
            self.send_following_redirects(&method, &s.url, &headers, None)
                .await
        }
    }

    /// Delete a session, quietly (best effort: it expires on the registry anyway).
    async fn cancel(&self, s: &Session, repo: &str) {
        match self
            .session_request(s, Method::DELETE, &push_scope(repo))
            .await
        {
            Ok(r) => tracing::debug!(url = %s.url, status = %r.status(), "upload session deleted"),
            Err(e) => tracing::debug!(url = %s.url, %e, "deleting the upload session failed"),
        }
    }

    /// Send `len` bytes of `feed` to `url` with `method`. No total timeout: the request
    /// fails when nothing moved for the connect + read timeout. A typed failure of the
    /// source wins over the transport error it caused.
    #[allow(clippy::too_many_arguments)]
    async fn send_data(
        &self,
        s: &Session,
        method: Method,
        url: Url,
        scope: &str,
        mut headers: HeaderMap,
        feed: &SharedFeed,
        len: u64,
    ) -> Result<Response, RegistryError> {
        let base = self.base().await?.clone();
        let auth = if s.auth {
            self.authorization(&base, Some(scope)).await?
        } else {
            None
        };
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if let Some(a) = &auth {
            let mut v = HeaderValue::from_str(a).map_err(|_| RegistryError::InvalidResponse {
                url: url.to_string(),
                reason: "credentials contain characters not allowed in a header".into(),
            })?;
            v.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, v);
        }
        let body = reqwest::Body::wrap_stream(ChunkStream::new(feed, len));
        let send = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .headers(headers)
            .body(body)
            .send();
        tokio::pin!(send);
        let idle = self.header_timeout();
        let result = loop {
            let since = lock(feed).last_activity.elapsed();
            let wait = idle.saturating_sub(since).max(Duration::from_millis(50));
            match tokio::time::timeout(wait, &mut send).await {
                Ok(r) => break Some(r),
                Err(_) if lock(feed).last_activity.elapsed() >= idle => break None,
                Err(_) => {}
            }
        };
        let source_error = {
            let mut f = lock(feed);
            f.generation += 1;
            f.error.take()
        };
        if let Some(e) = source_error {
            return Err(e);
        }
        let resp = match result {
            None => {
                return Err(RegistryError::Timeout {
                    url: url.to_string(),
                    what: "sending the blob",
                    after: idle,
                });
            }
            Some(Err(e)) => return Err(transport_error(e, &method, &url)),
            Some(Ok(r)) => r,
        };
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(a) = &auth {
                self.forget_token(scope, a);
            }
            let message =
                crate::client::read_error_message(resp, self.inner.opts.read_timeout).await;
            return Err(RegistryError::Unauthorized {
                url: url.to_string(),
                message,
            });
        }
        Ok(resp)
    }

    /// The engine behind [`push_blob`](Self::push_blob) and
    /// [`push_blob_or_mount`](Self::push_blob_or_mount).
    async fn upload(
        &self,
        repo: &str,
        desc: &Descriptor,
        body: BlobBody,
        mut mount_from: Option<&str>,
    ) -> Result<PushedBlob, RegistryError> {
        validate_repo(repo)?;
        if desc.size == 0 && !desc.digest.verifies(b"") {
            return Err(RegistryError::SourceDigest {
                expected: desc.digest.clone(),
                actual: desc.digest.compute_like(b""),
            });
        }
        let uo = &self.inner.opts.upload;
        let chunk = uo.chunk_size.max(MIN_CHUNK);
        let mut chunked = desc.size >= uo.monolithic_threshold && desc.size > 0;
        let mut method = if chunked {
            UploadMethod::Chunked
        } else {
            UploadMethod::Monolithic
        };
        let mut run = Run {
            backoff: Backoff::new(&self.inner.opts.retry),
            data_requests: 0,
            retries: 0,
            auth_renewals: 0,
            replayable: body.is_replayable(),
        };
        let tee_limit = chunk.max(uo.monolithic_threshold);
        let feed: SharedFeed = Arc::new(Mutex::new(Feed::new(
            body,
            desc,
            tee_limit,
            self.inner.opts.progress.clone(),
        )));
        let scope = push_scope(repo);
        let mut cause: Option<RegistryError> = None;
        loop {
            let mount = mount_from.take().map(|f| (f, &desc.digest));
            let mut s = match self.start_upload(repo, mount).await {
                Ok(Started::Mounted) => {
                    return Ok(PushedBlob {
                        method: UploadMethod::Mounted,
                        data_requests: 0,
                        retries: run.retries,
                    });
                }
                Ok(Started::Session(s)) => s,
                Err(e) if mount.is_some() && mount_refusal(&e) => {
                    tracing::debug!(%e, "mount refused; uploading");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let round = match seek(&feed, 0).await {
                Ok(true) if chunked => {
                    self.send_chunks(&mut s, &scope, &feed, desc, chunk, &mut run)
                        .await
                }
                Ok(true) => self.send_whole(&s, &scope, &feed, desc, &mut run).await,
                Ok(false) => {
                    let cause = cause.take().unwrap_or_else(|| restart_cause(&s));
                    Err(Failure::Fatal(self.not_replayable(&s, &feed, desc, cause)))
                }
                Err(e) => Err(Failure::Fatal(e)),
            };
            let err = match round {
                Ok(()) => {
                    return Ok(PushedBlob {
                        method,
                        data_requests: run.data_requests,
                        retries: run.retries,
                    });
                }
                Err(f) => f,
            };
            self.cancel(&s, repo).await;
            let e = match err {
                Failure::Rejected(reason) => {
                    tracing::info!(url = %s.url, reason, "chunked upload refused; sending the blob in one request");
                    chunked = false;
                    method = UploadMethod::ChunkedFellBack;
                    run.retries += 1;
                    restart_cause(&s)
                }
                Failure::Fatal(e) => return Err(e),
                Failure::Restart(e) => {
                    tracing::debug!(%e, "upload starts over");
                    run.retries += 1;
                    e
                }
                Failure::Transient(e) => {
                    if !lock(&feed).can_seek(0) {
                        return Err(self.not_replayable(&s, &feed, desc, e));
                    }
                    self.wait_retry(&mut run, s.url.as_str(), e).await?;
                    continue;
                }
            };
            if !lock(&feed).can_seek(0) {
                return Err(self.not_replayable(&s, &feed, desc, e));
            }
            cause = Some(e);
        }
    }

    fn not_replayable(
        &self,
        s: &Session,
        feed: &SharedFeed,
        desc: &Descriptor,
        cause: RegistryError,
    ) -> RegistryError {
        RegistryError::NotReplayable {
            url: s.url.to_string(),
            digest: desc.digest.clone(),
            offset: lock(feed).pos(),
            cause: Box::new(cause),
        }
    }

    /// Wait before a retry of a failure judged transient, as the policy says, or give up.
    async fn wait_retry(
        &self,
        run: &mut Run,
        what: &str,
        err: RegistryError,
    ) -> Result<(), RegistryError> {
        let Some(delay) = run.backoff.next_delay(err.retry_after()) else {
            return Err(if run.backoff.retries() > 0 {
                RegistryError::GaveUp {
                    attempts: run.backoff.retries() + 1,
                    elapsed: run.backoff.elapsed(),
                    source: Box::new(err),
                }
            } else {
                err
            });
        };
        run.retries += 1;
        let attempt = run.backoff.retries() + 1;
        tracing::info!(what, attempt, %err, ?delay, "retrying upload");
        if let Some(p) = &self.inner.opts.progress {
            p.retry(what, attempt, &err, delay);
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// How a failed request of a round is handled.
    fn classify(&self, e: RegistryError, run: &mut Run) -> Failure {
        match &e {
            RegistryError::Unauthorized { .. } if run.auth_renewals < MAX_AUTH_RENEWALS => {
                run.auth_renewals += 1;
                Failure::Transient(e)
            }
            // The session is gone (expired, or lost by the registry).
            RegistryError::NotFound { .. } => Failure::Transient(e),
            RegistryError::UploadSource { .. } if run.replayable => Failure::Transient(e),
            _ if e.is_retryable() => Failure::Transient(e),
            _ => Failure::Fatal(e),
        }
    }

    /// One `PUT LOCATION?digest=` with the whole blob.
    async fn send_whole(
        &self,
        s: &Session,
        scope: &str,
        feed: &SharedFeed,
        desc: &Descriptor,
        run: &mut Run,
    ) -> Result<(), Failure> {
        let mut url = s.url.clone();
        url.query_pairs_mut()
            .append_pair("digest", &desc.digest.to_string());
        lock(feed).mark();
        run.data_requests += 1;
        let resp = self
            .send_data(
                s,
                Method::PUT,
                url,
                scope,
                HeaderMap::new(),
                feed,
                desc.size,
            )
            .await
            .map_err(|e| self.classify(e, run))?;
        self.finish(resp, desc)
            .await
            .map_err(|e| self.classify(e, run))
    }

    /// Check the final answer of an upload: 201 and the right `Docker-Content-Digest`.
    async fn finish(&self, resp: Response, desc: &Descriptor) -> Result<(), RegistryError> {
        if !resp.status().is_success() {
            return Err(self
                .push_error(resp, &Method::PUT, format!("blob {}", desc.digest))
                .await);
        }
        if let Some(got) = header_digest(&resp)?
            && got != desc.digest
        {
            return Err(RegistryError::DigestMismatch {
                url: resp.url().to_string(),
                expected: desc.digest.clone(),
                actual: got,
            });
        }
        Ok(())
    }

    /// `PATCH` chunks, then the closing `PUT`.
    async fn send_chunks(
        &self,
        s: &mut Session,
        scope: &str,
        feed: &SharedFeed,
        desc: &Descriptor,
        chunk: u64,
        run: &mut Run,
    ) -> Result<(), Failure> {
        loop {
            let pos = lock(feed).pos();
            if pos >= desc.size {
                break;
            }
            let len = chunk.min(desc.size - pos);
            let end = pos + len - 1;
            lock(feed).mark();
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("{pos}-{end}")).expect("digits"),
            );
            run.data_requests += 1;
            let sent = self
                .send_data(s, Method::PATCH, s.url.clone(), scope, headers, feed, len)
                .await;
            let failed = match sent {
                Ok(resp) if matches!(resp.status().as_u16(), 202 | 204) => {
                    let range = resp
                        .headers()
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if let Some(r) = &range
                        && parse_upload_range(r) != Some((0, end))
                    {
                        return Err(Failure::Rejected(format!(
                            "after bytes {pos}-{end} the registry answered Range: {}",
                            r.chars().take(100).collect::<String>()
                        )));
                    }
                    if resp.headers().contains_key(header::LOCATION) {
                        let base = self.base().await.map_err(Failure::Fatal)?;
                        *s = session_from(&resp, base).map_err(Failure::Fatal)?;
                    }
                    run.backoff.reset();
                    run.auth_renewals = 0;
                    continue;
                }
                Ok(resp) if matches!(resp.status().as_u16(), 400 | 405 | 416 | 501) => {
                    let e = self
                        .push_error(
                            resp,
                            &Method::PATCH,
                            format!("a chunk of blob {}", desc.digest),
                        )
                        .await;
                    return Err(Failure::Rejected(hoist_types::error_chain(&e)));
                }
                Ok(resp) => {
                    self.push_error(
                        resp,
                        &Method::PATCH,
                        format!("a chunk of blob {}", desc.digest),
                    )
                    .await
                }
                Err(e) => e,
            };
            match self.classify(failed, run) {
                Failure::Transient(e) => {
                    self.wait_retry(run, s.url.as_str(), e)
                        .await
                        .map_err(Failure::Fatal)?;
                }
                other => return Err(other),
            }
            // Where does the session stand?
            match self.upload_status(s, scope).await {
                Ok(Some(at)) if at <= desc.size => match seek(feed, at).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let cause = RegistryError::InvalidResponse {
                            url: s.url.to_string(),
                            reason: format!("the registry has {at} bytes of the upload"),
                        };
                        return Err(Failure::Fatal(self.not_replayable(s, feed, desc, cause)));
                    }
                    Err(e) => return Err(self.classify(e, run)),
                },
                Ok(_) => {
                    return Err(Failure::Restart(RegistryError::InvalidResponse {
                        url: s.url.to_string(),
                        reason: "the upload's state is unknown".into(),
                    }));
                }
                Err(e) => return Err(Failure::Restart(e)),
            }
        }
        let mut url = s.url.clone();
        url.query_pairs_mut()
            .append_pair("digest", &desc.digest.to_string());
        let done = Session { url, auth: s.auth };
        let resp = self
            .retrying(done.url.as_str(), || async {
                let resp = self.session_request(&done, Method::PUT, scope).await?;
                if resp.status().is_success() {
                    return Ok(resp);
                }
                Err(self
                    .push_error(resp, &Method::PUT, format!("blob {}", desc.digest))
                    .await)
            })
            .await
            .map_err(|e| self.classify(e, run))?;
        self.finish(resp, desc)
            .await
            .map_err(|e| self.classify(e, run))
    }

    /// `GET LOCATION`: the bytes the session holds (`Range: 0-END` → END + 1), `None`
    /// when it cannot tell (no Range, or Distribution's ambiguous `0-0`). Moves the
    /// session to the answer's `Location`.
    async fn upload_status(
        &self,
        s: &mut Session,
        scope: &str,
    ) -> Result<Option<u64>, RegistryError> {
        let started = Instant::now();
        let resp = self
            .retrying(s.url.as_str(), || async {
                let resp = self.session_request(s, Method::GET, scope).await?;
                if resp.status().is_success() {
                    return Ok(resp);
                }
                Err(self
                    .push_error(resp, &Method::GET, "the upload's status".into())
                    .await)
            })
            .await?;
        if resp.headers().contains_key(header::LOCATION) {
            let base = self.base().await?;
            *s = session_from(&resp, base)?;
        }
        let at = resp
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_upload_range)
            .and_then(|(a, b)| (a == 0 && b > 0).then_some(b + 1));
        tracing::debug!(url = %s.url, ?at, took = ?started.elapsed(), "upload status");
        Ok(at)
    }
}

/// The cause recorded when a round ends without an error of its own.
fn restart_cause(s: &Session) -> RegistryError {
    RegistryError::InvalidResponse {
        url: s.url.to_string(),
        reason: "the registry refused the chunked upload, so it had to start over".into(),
    }
}

/// A mount refusal that a plain upload may get around.
fn mount_refusal(e: &RegistryError) -> bool {
    matches!(
        e.root(),
        RegistryError::Unauthorized { .. }
            | RegistryError::Denied { .. }
            | RegistryError::NotFound { .. }
            | RegistryError::PushRejected { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges() {
        let cases: &[(&str, Option<(u64, u64)>)] = &[
            ("0-0", Some((0, 0))),
            ("0-1023", Some((0, 1023))),
            ("bytes=0-99", Some((0, 99))),
            (" 0-5 ", Some((0, 5))),
            ("5-1", None),
            ("0-", None),
            ("-5", None),
            ("a-b", None),
            ("0-+5", None),
            ("", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_upload_range(v), *want, "{v:?}");
        }
    }

    #[test]
    fn error_codes() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"errors":[{"code":"DIGEST_INVALID","message":"x"}]}"#,
                Some("DIGEST_INVALID"),
            ),
            (r#"{"errors":[{"code":""}]}"#, None),
            (r#"{"errors":[]}"#, None),
            ("not json", None),
        ];
        for (b, want) in cases {
            assert_eq!(error_code(b.as_bytes()).as_deref(), *want, "{b}");
        }
    }

    #[test]
    fn mount_refusals() {
        let u = || "u".to_string();
        assert!(mount_refusal(&RegistryError::Unauthorized {
            url: u(),
            message: u()
        }));
        assert!(mount_refusal(&RegistryError::Denied {
            url: u(),
            message: u()
        }));
        assert!(!mount_refusal(&RegistryError::Http {
            method: "POST",
            url: u(),
            status: 503,
            message: u(),
            retry_after: None
        }));
    }
}
