//! The read side of the Distribution API: manifests, blobs, tags, catalog.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use hoist_types::{Descriptor, Digest, MAX_MANIFEST_SIZE, Manifest, MediaType, TypeError};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::auth::same_origin;
use crate::client::{Req, declared_length, read_limited};
use crate::headers::{parse_content_range, parse_link_next};
use crate::{MAX_PAGES, RegistryClient, RegistryError};

/// Largest page of a tag list or catalog.
const MAX_LIST_PAGE: u64 = 8 * 1024 * 1024;
/// Largest total of all pages of one listing.
const MAX_LIST_TOTAL: u64 = 256 * 1024 * 1024;

/// A manifest as served: the exact bytes, the effective media type, the digest of the
/// bytes (sha256; for schema 1, of the payload without signatures) and the parsed view.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The exact bytes served.
    pub bytes: Vec<u8>,
    /// The effective media type (see [`Manifest::parse`]).
    pub media_type: MediaType,
    /// [`Manifest::digest_of`] the bytes.
    pub digest: Digest,
    /// The parsed view.
    pub manifest: Manifest,
}

impl FetchedManifest {
    /// A descriptor for this manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.digest.clone(),
            self.bytes.len() as u64,
        )
    }
}

/// A manifest exactly as served and not interpreted (any media type, any schema): what
/// `inspect --raw` prints. Only a digest the request or the registry states is checked.
#[derive(Debug, Clone)]
pub struct ServedManifest {
    /// The exact bytes served.
    pub bytes: Vec<u8>,
    /// The `Content-Type` served, if any.
    pub content_type: Option<MediaType>,
    /// The URL that served them.
    pub url: String,
}

/// A blob response whose body is read chunk by chunk. The caller hashes the bytes and
/// checks the size; this type only refuses to deliver more bytes than expected.
pub struct BlobResponse {
    /// `Content-Length`, when the server sent one.
    pub size: Option<u64>,
    /// The final URL (after redirects), for messages.
    pub url: String,
    /// Offset in the blob of the first byte of this body: the requested start for a
    /// `206 Partial Content`, 0 when the server ignored a Range and sent the whole blob.
    pub start: u64,
    digest: Digest,
    /// Bytes this body may carry at most.
    expected: u64,
    received: u64,
    idle: Duration,
    resp: Response,
}

impl fmt::Debug for BlobResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobResponse")
            .field("size", &self.size)
            .field("url", &self.url)
            .field("start", &self.start)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl BlobResponse {
    /// The next chunk of the body, `None` at the end. Each wait is bounded by the idle
    /// timeout. More bytes than the descriptor (or range) allows is an error.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, RegistryError> {
        let c = match tokio::time::timeout(self.idle, self.resp.chunk()).await {
            Err(_) => {
                return Err(RegistryError::Timeout {
                    url: self.url.clone(),
                    what: "reading the body",
                    after: self.idle,
                });
            }
            Ok(Err(source)) => {
                return Err(RegistryError::Body {
                    url: self.url.clone(),
                    source,
                });
            }
            Ok(Ok(c)) => c,
        };
        match &c {
            Some(c) => {
                self.received += c.len() as u64;
                if self.received > self.expected {
                    return Err(RegistryError::SizeMismatch {
                        url: self.url.clone(),
                        digest: self.digest.clone(),
                        expected: self.start + self.expected,
                        actual: self.start + self.received,
                    });
                }
            }
            None if self.received < self.expected => {
                return Err(RegistryError::ShortBody {
                    url: self.url.clone(),
                    digest: self.digest.clone(),
                    received: self.start + self.received,
                    expected: self.start + self.expected,
                });
            }
            None => {}
        }
        Ok(c)
    }

    /// The offset in the blob just past the last byte delivered.
    pub fn position(&self) -> u64 {
        self.start + self.received
    }

    /// Bytes delivered so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes this body carries when complete.
    pub fn expected_len(&self) -> u64 {
        self.expected
    }
}

/// Validate a repository path: `/`-separated components of `[a-z0-9._-]`, each starting
/// and ending with `[a-z0-9]`. Nothing here can change the URL's meaning.
pub(crate) fn validate_repo(repo: &str) -> Result<(), RegistryError> {
    let bad = |reason| RegistryError::InvalidArgument {
        what: "repository",
        value: repo.chars().take(300).collect(),
        reason,
    };
    if repo.is_empty() || repo.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    for c in repo.split('/') {
        let b = c.as_bytes();
        let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
            return Err(bad("each path component must start and end with [a-z0-9]"));
        }
        if !b.iter().all(|x| alnum(x) || b"._-".contains(x)) {
            return Err(bad("only [a-z0-9._-] and '/' are allowed"));
        }
    }
    Ok(())
}

/// Validate a tag or digest; returns the digest when it is one.
pub(crate) fn validate_reference(reference: &str) -> Result<Option<Digest>, RegistryError> {
    if reference.contains(':') {
        return Digest::parse(reference)
            .map(Some)
            .map_err(|_| RegistryError::InvalidArgument {
                what: "digest",
                value: reference.chars().take(300).collect(),
                reason: "not algorithm:hex (sha256 or sha512, lower-case)",
            });
    }
    let b = reference.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if ok {
        Ok(None)
    } else {
        Err(RegistryError::InvalidArgument {
            what: "tag",
            value: reference.chars().take(300).collect(),
            reason: "must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
        })
    }
}

pub(crate) fn pull_scope(repo: &str) -> Option<String> {
    Some(format!("repository:{repo}:pull"))
}

pub(crate) fn header_digest(resp: &Response) -> Result<Option<Digest>, RegistryError> {
    match resp.headers().get("docker-content-digest") {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().unwrap_or("").trim();
            Digest::parse(s)
                .map(Some)
                .map_err(|_| RegistryError::InvalidResponse {
                    url: resp.url().to_string(),
                    reason: format!(
                        "invalid Docker-Content-Digest {:?}",
                        s.chars().take(200).collect::<String>()
                    ),
                })
        }
    }
}

pub(crate) fn content_type(resp: &Response) -> Option<MediaType> {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(MediaType::parse)
}

/// Verify manifest bytes against an expected digest, mapping the errors.
pub(crate) fn verify(
    url: &str,
    bytes: &[u8],
    mt: &MediaType,
    expected: &Digest,
) -> Result<(), RegistryError> {
    Manifest::verify_digest(bytes, mt, expected).map_err(|e| match e {
        TypeError::DigestMismatch { expected, actual } => RegistryError::DigestMismatch {
            url: url.to_owned(),
            expected,
            actual,
        },
        source => RegistryError::Manifest {
            url: url.to_owned(),
            source,
        },
    })
}

impl RegistryClient {
    pub(crate) async fn url(&self, path: &str) -> Result<Url, RegistryError> {
        let base = self.base().await?;
        base.join(path).map_err(|_| RegistryError::InvalidArgument {
            what: "path",
            value: path.chars().take(300).collect(),
            reason: "does not form a valid URL",
        })
    }

    fn manifest_what(repo: &str, reference: &str) -> String {
        let sep = if reference.contains(':') { '@' } else { ':' };
        format!("manifest {repo}{sep}{reference}")
    }

    /// Fetch a manifest by tag or digest. Reads at most 4 MiB (+1 byte), parses it with
    /// the served `Content-Type`, computes its digest over the exact bytes, and checks
    /// that digest against a digest `reference` and against `Docker-Content-Digest`.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        validate_repo(repo)?;
        validate_reference(reference)?;
        let what = format!("{}/v2/{repo}/manifests/{reference}", self.base_url());
        self.retrying(&what, || self.get_manifest_once(repo, reference))
            .await
    }

    /// Fetch a manifest's bytes by tag or digest without interpreting them (at most 4 MiB).
    /// A digest `reference` and a `Docker-Content-Digest` must match the bytes, or for a
    /// signed schema 1 manifest its payload.
    pub async fn get_manifest_bytes(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<ServedManifest, RegistryError> {
        validate_repo(repo)?;
        let by_digest = validate_reference(reference)?;
        let what = format!("{}/v2/{repo}/manifests/{reference}", self.base_url());
        let (url, content_type, served_digest, bytes) = self
            .retrying(&what, || self.fetch_manifest_once(repo, reference))
            .await?;
        for d in by_digest.iter().chain(&served_digest) {
            let payload_matches =
                || hoist_types::schema1::payload(&bytes).is_ok_and(|p| &d.compute_like(&p) == d);
            if &d.compute_like(&bytes) != d && !payload_matches() {
                return Err(RegistryError::DigestMismatch {
                    url,
                    expected: d.clone(),
                    actual: d.compute_like(&bytes),
                });
            }
        }
        Ok(ServedManifest {
            bytes,
            content_type,
            url,
        })
    }

    /// One GET of a manifest: the URL, the served `Content-Type` and
    /// `Docker-Content-Digest`, and the bytes (at most 4 MiB).
    async fn fetch_manifest_once(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(String, Option<MediaType>, Option<Digest>, Vec<u8>), RegistryError> {
        let url = self
            .url(&format!("v2/{repo}/manifests/{reference}"))
            .await?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(&MediaType::manifest_accept().join(", "))
                .expect("static media types"),
        );
        let resp = self
            .execute(Req {
                method: Method::GET,
                url,
                scope: pull_scope(repo),
                headers,
            })
            .await?;
        let resp = self
            .check_status(resp, &Method::GET, || Self::manifest_what(repo, reference))
            .await?;
        let url = resp.url().to_string();
        let declared = content_type(&resp);
        let served_digest = header_digest(&resp)?;
        let bytes = read_limited(
            resp,
            MAX_MANIFEST_SIZE,
            "manifest",
            self.inner.opts.read_timeout,
        )
        .await?;
        Ok((url, declared, served_digest, bytes))
    }

    async fn get_manifest_once(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let by_digest = validate_reference(reference)?;
        let (url, declared, served_digest, bytes) =
            self.fetch_manifest_once(repo, reference).await?;
        let (manifest, media_type) =
            Manifest::parse(&bytes, declared.as_ref()).map_err(|source| {
                RegistryError::Manifest {
                    url: url.clone(),
                    source,
                }
            })?;
        let digest =
            Manifest::digest_of(&bytes, &media_type).map_err(|source| RegistryError::Manifest {
                url: url.clone(),
                source,
            })?;
        if let Some(d) = &by_digest {
            verify(&url, &bytes, &media_type, d)?;
        }
        if let Some(d) = &served_digest {
            verify(&url, &bytes, &media_type, d)?;
        }
        tracing::debug!(url, %digest, %media_type, size = bytes.len(), "manifest fetched");
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
            manifest,
        })
    }

    /// `HEAD` a manifest: its descriptor, or `None` when the registry answers 404. When
    /// the registry omits `Docker-Content-Digest`, `Content-Length` or a manifest
    /// `Content-Type`, the manifest is fetched instead.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Descriptor>, RegistryError> {
        validate_repo(repo)?;
        validate_reference(reference)?;
        let what = format!("{}/v2/{repo}/manifests/{reference}", self.base_url());
        self.retrying(&what, || self.head_manifest_once(repo, reference))
            .await
    }

    async fn head_manifest_once(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Descriptor>, RegistryError> {
        let by_digest = validate_reference(reference)?;
        let url = self
            .url(&format!("v2/{repo}/manifests/{reference}"))
            .await?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(&MediaType::manifest_accept().join(", "))
                .expect("static media types"),
        );
        let resp = self
            .execute(Req {
                method: Method::HEAD,
                url,
                scope: pull_scope(repo),
                headers,
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self
            .check_status(resp, &Method::HEAD, || Self::manifest_what(repo, reference))
            .await?;
        let url = resp.url().to_string();
        let served = header_digest(&resp)?;
        if let (Some(want), Some(got)) = (&by_digest, &served)
            && want.algorithm() == got.algorithm()
            && want != got
        {
            return Err(RegistryError::DigestMismatch {
                url,
                expected: want.clone(),
                actual: got.clone(),
            });
        }
        let size = declared_length(resp.headers());
        if size.is_some_and(|s| s > MAX_MANIFEST_SIZE) {
            return Err(RegistryError::TooLarge {
                url,
                what: "manifest".into(),
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let mt = content_type(&resp).filter(MediaType::is_manifest);
        // Schema 1 digests cover the payload only, so the HEAD length is not its size
        // in a descriptor sense; fetch to be exact.
        match (by_digest.or(served), size, mt) {
            (Some(digest), Some(size), Some(mt)) if !mt.is_schema1() && size > 0 => {
                Ok(Some(Descriptor::new(mt, digest, size)))
            }
            _ => Ok(Some(
                self.get_manifest_once(repo, reference).await?.descriptor(),
            )),
        }
    }

    /// `HEAD` a blob: its size when the registry has it, `None` on 404. Used where a
    /// descriptor carries no size (schema 1) and, later, before pushing.
    pub async fn head_blob(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        validate_repo(repo)?;
        let what = format!("{}/v2/{repo}/blobs/{digest}", self.base_url());
        self.retrying(&what, || self.head_blob_once(repo, digest))
            .await
    }

    async fn head_blob_once(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}")).await?;
        let resp = self
            .execute(Req {
                method: Method::HEAD,
                url,
                scope: pull_scope(repo),
                headers: HeaderMap::new(),
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self
            .check_status(resp, &Method::HEAD, || format!("blob {repo}@{digest}"))
            .await?;
        let url = resp.url().to_string();
        match declared_length(resp.headers()) {
            Some(n) => Ok(Some(n)),
            None => Err(RegistryError::InvalidResponse {
                url,
                reason: "HEAD of a blob without Content-Length".into(),
            }),
        }
    }

    /// Stream a blob. `Content-Length` larger than `desc.size` is refused before any
    /// byte is read.
    pub async fn get_blob(
        &self,
        repo: &str,
        desc: &Descriptor,
    ) -> Result<BlobResponse, RegistryError> {
        self.fetch_blob(repo, desc, 0, None).await
    }

    /// Stream a blob from byte `offset` on (`Range: bytes=offset-`), to resume a partial
    /// download. Check [`BlobResponse::start`]: 0 means the server sent the whole blob.
    pub async fn get_blob_from(
        &self,
        repo: &str,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<BlobResponse, RegistryError> {
        self.fetch_blob(repo, desc, offset, None).await
    }

    /// Stream bytes `start..end` of a blob (one slice of a parallel download). Check
    /// [`BlobResponse::start`]: when the server ignores the Range it sends the whole blob
    /// from 0.
    pub async fn get_blob_range(
        &self,
        repo: &str,
        desc: &Descriptor,
        start: u64,
        end: u64,
    ) -> Result<BlobResponse, RegistryError> {
        self.fetch_blob(repo, desc, start, Some(end)).await
    }

    async fn fetch_blob(
        &self,
        repo: &str,
        desc: &Descriptor,
        start: u64,
        end: Option<u64>,
    ) -> Result<BlobResponse, RegistryError> {
        validate_repo(repo)?;
        let end_excl = end.unwrap_or(desc.size);
        let partial = start > 0 || end.is_some_and(|e| e < desc.size);
        if end_excl > desc.size || (partial && start >= end_excl) {
            return Err(RegistryError::InvalidArgument {
                what: "byte range",
                value: format!("{start}..{end_excl} of {} ({})", desc.size, desc.digest),
                reason: "outside the blob or empty",
            });
        }
        let what = format!("{}/v2/{repo}/blobs/{}", self.base_url(), desc.digest);
        self.retrying(&what, || {
            self.fetch_blob_once(repo, desc, start, end_excl, partial)
        })
        .await
    }

    /// One attempt of [`fetch_blob`](Self::fetch_blob), up to the response headers.
    /// Checks strictly: a 206 must carry `Content-Range: bytes START-END/SIZE` for exactly
    /// the range asked, and `Content-Length` (when sent) must be exactly the bytes to come.
    async fn fetch_blob_once(
        &self,
        repo: &str,
        desc: &Descriptor,
        start: u64,
        end_excl: u64,
        partial: bool,
    ) -> Result<BlobResponse, RegistryError> {
        let base = self.base().await?.clone();
        let url = self
            .url(&format!("v2/{repo}/blobs/{}", desc.digest))
            .await?;
        let mut headers = HeaderMap::new();
        if partial {
            let r = format!("bytes={start}-{}", end_excl - 1);
            headers.insert(header::RANGE, HeaderValue::from_str(&r).expect("ascii"));
        }
        let resp = self
            .execute(Req {
                method: Method::GET,
                url,
                scope: pull_scope(repo),
                headers,
            })
            .await?;
        let what = || format!("blob {} in {repo}", desc.digest);
        self.blob_response(resp, Some(&base), &what, desc, start, end_excl, partial)
            .await
    }

    /// GET a small document from a lookaside signature store (containers' registries.d):
    /// `url` must be http or https without user info. No credentials are ever sent, to the
    /// URL or to anything it redirects to. `Ok(None)` on 404 (no such signature); at most
    /// `limit` bytes, else an error.
    pub async fn get_lookaside(
        &self,
        url: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let u = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .filter(|u| u.username().is_empty() && u.password().is_none())
            .ok_or_else(|| RegistryError::InvalidArgument {
                what: "lookaside URL",
                value: url.chars().take(300).collect(),
                reason: "must be an http or https URL without user info",
            })?;
        let resp = self
            .send_following_redirects(&Method::GET, &u, &HeaderMap::new(), None)
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => read_limited(
                resp,
                limit,
                "lookaside signature",
                self.inner.opts.read_timeout,
            )
            .await
            .map(Some),
            status => Err(RegistryError::Http {
                method: "GET",
                url: url.to_owned(),
                status: status.as_u16(),
                message: status
                    .canonical_reason()
                    .unwrap_or("unexpected status")
                    .to_owned(),
                retry_after: None,
            }),
        }
    }

    /// Stream a foreign layer from one of its descriptor's `urls`, from byte `offset`.
    /// No credentials are ever sent, to the URL or to anything it redirects to; only
    /// http and https URLs are followed. Checked like [`get_blob_from`](Self::get_blob_from).
    pub async fn get_foreign_blob(
        &self,
        url: &str,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<BlobResponse, RegistryError> {
        let u = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .filter(|u| u.username().is_empty() && u.password().is_none())
            .ok_or_else(|| RegistryError::InvalidArgument {
                what: "foreign layer URL",
                value: url.chars().take(300).collect(),
                reason: "must be an http or https URL without user info",
            })?;
        if offset >= desc.size && desc.size > 0 {
            return Err(RegistryError::InvalidArgument {
                what: "byte range",
                value: format!("{offset}.. of {} ({})", desc.size, desc.digest),
                reason: "outside the blob or empty",
            });
        }
        let partial = offset > 0;
        self.retrying(url, || async {
            let mut headers = HeaderMap::new();
            if partial {
                let r = format!("bytes={offset}-{}", desc.size - 1);
                headers.insert(header::RANGE, HeaderValue::from_str(&r).expect("ascii"));
            }
            let resp = self
                .send_following_redirects(&Method::GET, &u, &headers, None)
                .await?;
            let what = || format!("foreign layer {} at {url}", desc.digest);
            self.blob_response(resp, None, &what, desc, offset, desc.size, partial)
                .await
        })
        .await
    }

    /// Check a blob response strictly and wrap it: see
    /// [`fetch_blob_once`](Self::fetch_blob_once). `base`: the registry's origin, so that
    /// a refusal from another origin (a presigned URL) is told apart.
    #[allow(clippy::too_many_arguments)]
    async fn blob_response(
        &self,
        resp: Response,
        base: Option<&Url>,
        what: &(dyn Fn() -> String + Sync),
        desc: &Descriptor,
        start: u64,
        end_excl: u64,
        partial: bool,
    ) -> Result<BlobResponse, RegistryError> {
        let status = resp.status();
        let requested = format!("{start}-{}", end_excl.saturating_sub(1));
        if matches!(status.as_u16(), 401 | 403) && base.is_some_and(|b| !same_origin(resp.url(), b))
        {
            // Object storage refusing a presigned URL (expired, or signed for another
            // request): going back to the registry's URL gets a fresh one.
            let url = resp.url().to_string();
            let message =
                crate::client::read_error_message(resp, self.inner.opts.read_timeout).await;
            return Err(RegistryError::RedirectTargetRefused {
                url,
                status: status.as_u16(),
                message,
            });
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE && partial {
            return Err(RegistryError::RangeMismatch {
                url: resp.url().to_string(),
                requested,
                answered: "416 Range Not Satisfiable".into(),
            });
        }
        let resp = self.check_status(resp, &Method::GET, what).await?;
        let url = resp.url().to_string();
        let size = declared_length(resp.headers());
        let actual_start = if resp.status() == StatusCode::PARTIAL_CONTENT {
            let raw = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            match parse_content_range(&raw) {
                Some((a, b, total))
                    if a == start && b + 1 == end_excl && total.is_none_or(|t| t == desc.size) =>
                {
                    a
                }
                _ => {
                    return Err(RegistryError::RangeMismatch {
                        url,
                        requested,
                        answered: if raw.is_empty() {
                            "206 without Content-Range".into()
                        } else {
                            format!(
                                "Content-Range: {}",
                                raw.chars().take(100).collect::<String>()
                            )
                        },
                    });
                }
            }
        } else {
            0
        };
        let expected = if resp.status() != StatusCode::PARTIAL_CONTENT {
            desc.size
        } else {
            end_excl - actual_start
        };
        if let Some(n) = size
            && n != expected
        {
            return Err(RegistryError::SizeMismatch {
                url,
                digest: desc.digest.clone(),
                expected: actual_start + expected,
                actual: actual_start + n,
            });
        }
        Ok(BlobResponse {
            size,
            url,
            start: actual_start,
            digest: desc.digest.clone(),
            expected,
            received: 0,
            idle: self.inner.opts.read_timeout,
            resp,
        })
    }

    /// Fetch a small blob (a config) into memory: refuses `desc.size > limit`, reads at
    /// most `desc.size` + 1 bytes, and verifies size and digest.
    pub async fn get_blob_bytes(
        &self,
        repo: &str,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        if desc.size > limit {
            return Err(RegistryError::TooLarge {
                url: format!("{}/v2/{repo}/blobs/{}", self.base_url(), desc.digest),
                what: format!("blob {} ({} bytes)", desc.digest, desc.size),
                limit,
            });
        }
        validate_repo(repo)?;
        let what = format!("{}/v2/{repo}/blobs/{}", self.base_url(), desc.digest);
        self.retrying(&what, || self.get_blob_bytes_once(repo, desc, limit))
            .await
    }

    async fn get_blob_bytes_once(
        &self,
        repo: &str,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut b = self
            .fetch_blob_once(repo, desc, 0, desc.size, false)
            .await?;
        let mut buf = Vec::with_capacity(desc.size.min(limit) as usize);
        while let Some(c) = b.chunk().await? {
            buf.extend_from_slice(&c);
        }
        if buf.len() as u64 != desc.size {
            return Err(RegistryError::SizeMismatch {
                url: b.url,
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: buf.len() as u64,
            });
        }
        let actual = desc.digest.compute_like(&buf);
        if actual != desc.digest {
            return Err(RegistryError::DigestMismatch {
                url: b.url,
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    /// All tags of `repo`, following `Link: <…>; rel="next"` pages (same origin only, at
    /// most [`MAX_PAGES`]).
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        validate_repo(repo)?;
        let url = self.url(&format!("v2/{repo}/tags/list")).await?;
        self.paginate(url, pull_scope(repo), "tags", &format!("repository {repo}"))
            .await
    }

    /// All repositories of the registry (`/v2/_catalog`), paginated like `list_tags`.
    pub async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        let url = self.url("v2/_catalog").await?;
        self.paginate(
            url,
            Some("registry:catalog:*".into()),
            "repositories",
            "the catalog",
        )
        .await
    }

    async fn paginate(
        &self,
        first: Url,
        scope: Option<String>,
        field: &str,
        what: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let base = self.base().await?.clone();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut total = 0u64;
        let mut url = first;
        for _ in 0..MAX_PAGES {
            let (page_url, next, body) = self
                .retrying(url.as_str(), || self.page_once(&url, &scope, what))
                .await?;
            total += body.len() as u64;
            if total > MAX_LIST_TOTAL {
                return Err(RegistryError::TooLarge {
                    url: page_url.to_string(),
                    what: format!("listing of {what}"),
                    limit: MAX_LIST_TOTAL,
                });
            }
            out.extend(parse_list_page(&body, field).map_err(|reason| {
                RegistryError::InvalidResponse {
                    url: page_url.to_string(),
                    reason,
                }
            })?);
            let Some(next) = next else {
                return Ok(out);
            };
            let next_url = page_url
                .join(&next)
                .map_err(|_| RegistryError::Pagination {
                    url: page_url.to_string(),
                    reason: format!(
                        "invalid next link {:?}",
                        next.chars().take(300).collect::<String>()
                    ),
                })?;
            if !same_origin(&next_url, &base) {
                return Err(RegistryError::Pagination {
                    url: page_url.to_string(),
                    reason: format!("next link {next_url} leaves the registry's origin {base}"),
                });
            }
            if !seen.insert(next_url.to_string()) {
                return Err(RegistryError::Pagination {
                    url: page_url.to_string(),
                    reason: format!("next link {next_url} repeats an earlier page"),
                });
            }
            url = next_url;
        }
        Err(RegistryError::Pagination {
            url: url.to_string(),
            reason: format!("more than {MAX_PAGES} pages"),
        })
    }
}

impl RegistryClient {
    /// One page of a listing: its final URL, the next link, the body.
    async fn page_once(
        &self,
        url: &Url,
        scope: &Option<String>,
        what: &str,
    ) -> Result<(Url, Option<String>, Vec<u8>), RegistryError> {
        let resp = self
            .execute(Req {
                method: Method::GET,
                url: url.clone(),
                scope: scope.clone(),
                headers: HeaderMap::new(),
            })
            .await?;
        let resp = self
            .check_status(resp, &Method::GET, || what.to_owned())
            .await?;
        let page_url = resp.url().clone();
        let next = resp
            .headers()
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_link_next);
        let body = read_limited(
            resp,
            MAX_LIST_PAGE,
            "listing page",
            self.inner.opts.read_timeout,
        )
        .await?;
        Ok((page_url, next, body))
    }
}

/// The string array `field` of a listing page; `null` or absent means empty.
pub(crate) fn parse_list_page(body: &[u8], field: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("listing is not JSON: {e}"))?;
    match v.get(field) {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`{field}` holds a non-string"))
            })
            .collect(),
        Some(_) => Err(format!("`{field}` is not an array")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_and_reference_validation() {
        for ok in [
            "library/alpine",
            "a",
            "a/b/c",
            "my-org/my_repo.x",
            "a__b/c--d",
        ] {
            validate_repo(ok).unwrap();
        }
        for bad in [
            "", "/a", "a/", "a//b", "../x", "a/../b", "A/b", "a?b", "a#b", "a%2fb", "-a", "a.",
            "a b", "a/./b",
        ] {
            assert!(validate_repo(bad).is_err(), "{bad}");
        }
        assert_eq!(validate_reference("latest").unwrap(), None);
        assert_eq!(validate_reference("_v1.2-rc").unwrap(), None);
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(validate_reference(d).unwrap().unwrap().to_string(), d);
        let long = "a".repeat(129);
        for bad in ["", ".x", "-x", "a/b", "a?b", "sha256:xyz", &long, "../x"] {
            assert!(validate_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_pages() {
        assert_eq!(
            parse_list_page(br#"{"name":"x","tags":["a","b"]}"#, "tags").unwrap(),
            vec!["a", "b"]
        );
        assert!(
            parse_list_page(br#"{"name":"x","tags":null}"#, "tags")
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_list_page(br#"{"repositories":[]}"#, "repositories")
                .unwrap()
                .is_empty()
        );
        assert!(parse_list_page(br#"{"tags":[1]}"#, "tags").is_err());
        assert!(parse_list_page(br#"{"tags":"a"}"#, "tags").is_err());
        assert!(parse_list_page(b"nope", "tags").is_err());
    }
}
