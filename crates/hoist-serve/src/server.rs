//! The HTTP side: one fallback handler that routes by [`crate::api::parse_route`], the
//! concurrency bound, the request log, and blob bodies read with `pread` on the blocking
//! pool.

use std::fs::File;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use hoist_store::Store;
use hoist_types::{Descriptor, Digest, MAX_MANIFEST_SIZE, MediaType};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::{self, ManifestRef, Page, RangeAnswer, Route};
use crate::blocking::{CachedReads, blocking, fill_at};
use crate::error::ApiError;
use crate::pull_state::{PullState, wait_pull};
use crate::pull_through::{BlobAnswer, Cached, ManifestAnswer, PULL_WAIT, PullThrough};
use crate::view::{Repo, View, ViewCache, manifest_content_type};
use crate::{LogFn, RequestLog, ServeOptions};

/// Bytes read per `pread` of a blob body.
const CHUNK: usize = 256 * 1024;
/// Reads of a blob body under way at once, ahead of the socket.
const READ_AHEAD: usize = 4;
/// How long a leased store handle is used before a fresh one replaces it (so what the
/// server stopped serving is released to GC within about this time).
const LEASE_ROTATION: Duration = Duration::from_secs(60);

/// State shared by every request.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) opts: ServeOptions,
    pub(crate) views: ViewCache,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) leases: Leases,
    pub(crate) log: Option<LogFn>,
    pub(crate) pull_through: Option<PullThrough>,
    pub(crate) uploads: Option<crate::push::Uploads>,
    /// The port listened on (a push names this server by it).
    pub(crate) port: u16,
}

/// A leased store handle, replaced every [`LEASE_ROTATION`]: each request keeps the
/// handle it started with (and so its lease) until its body is sent, so a `hoist gc`
/// beside the server never removes a blob being served, and blobs served long ago are
/// released once their lease's last request ends.
pub(crate) struct Leases {
    base: Store,
    current: std::sync::Mutex<Option<(Store, Instant)>>,
}

impl Leases {
    pub(crate) fn new(base: Store) -> Leases {
        Leases {
            base,
            current: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn get(&self) -> Store {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, t)) = &*cur
            && t.elapsed() < LEASE_ROTATION
        {
            return s.clone();
        }
        // A read-only store cannot hold a lease file; nothing can collect its blobs then.
        match self.base.leased() {
            Ok(s) => {
                *cur = Some((s.clone(), Instant::now()));
                s
            }
            Err(e) => {
                tracing::warn!("no lease on the store, serving without one: {e}");
                self.base.clone()
            }
        }
    }
}

/// The one handler: every request goes through it.
pub(crate) async fn handle(State(st): State<Arc<Shared>>, req: Request) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    // Bounded concurrency: a request waits for a permit, and a blob body keeps its
    // permit until it is sent or the client goes away.
    let permit = st.permits.clone().acquire_owned().await.ok();
    // The body is read only by the writes of --allow-push.
    let (head, body) = req.into_parts();
    let answer = match authorize(&st, &head).await {
        Ok(()) => dispatch(&st, &head, body).await,
        Err(e) => Err(e),
    };
    let mut resp = match answer {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, ApiError::Internal(_)) {
                tracing::error!("{method} {path}: {e}");
            }
            e.into_response()
        }
    };
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let logged = Logged {
        inner: body.into_data_stream(),
        guard: LogGuard {
            log: st.log.clone(),
            method,
            path,
            status,
            bytes: 0,
            start,
            _permit: permit,
        },
    };
    Response::from_parts(parts, Body::from_stream(logged))
}

/// Emits the request's log line when its body is done (sent, or dropped because the
/// client went away) and releases the request's permit.
struct LogGuard {
    log: Option<LogFn>,
    method: Method,
    path: String,
    status: StatusCode,
    bytes: u64,
    start: Instant,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log(&RequestLog {
                method: self.method.as_str(),
                path: &self.path,
                status: self.status.as_u16(),
                bytes: self.bytes,
                elapsed: self.start.elapsed(),
            });
        }
    }
}

struct Logged<S> {
    inner: S,
    guard: LogGuard,
}

impl<S: Stream<Item = Result<Bytes, axum::Error>> + Unpin> Stream for Logged<S> {
    type Item = Result<Bytes, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let r = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(b))) = &r {
            self.guard.bytes += b.len() as u64;
        }
        r
    }
}

/// With `--htpasswd`, every route (`/v2/` included, as Distribution does) needs a
/// known user and password; bcrypt runs on the blocking pool.
async fn authorize(st: &Arc<Shared>, req: &Parts) -> Result<(), ApiError> {
    let Some(users) = st.opts.htpasswd.clone() else {
        return Ok(());
    };
    let value = req
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let ok = blocking(move || Ok(users.check(value.as_deref()))).await?;
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

async fn dispatch(st: &Arc<Shared>, req: &Parts, body: Body) -> Result<Response, ApiError> {
    let route = api::parse_route(req.uri.path())?;
    let q = Query::parse(req.uri.query());
    let method = &req.method;
    let read = method == Method::GET || method == Method::HEAD;
    if let Some(uploads) = &st.uploads {
        let write = match &route {
            Route::Upload { name } if method != Method::HEAD => {
                match crate::push::upload_id(req.uri.path()) {
                    None => Some((name, crate::push::WriteOp::Start)),
                    Some(id) => Some((name, crate::push::WriteOp::Session(id?))),
                }
            }
            Route::Manifest { name, reference } if method == Method::PUT => {
                Some((name, crate::push::WriteOp::Manifest(reference.clone())))
            }
            _ => None,
        };
        if let Some((name, w)) = write {
            let view = current_view(st).await?;
            let registry = crate::push::push_registry(
                st.opts.registry.as_deref(),
                st.port,
                &req.headers,
                name,
            )?;
            let reg2 = registry.clone();
            let visible = move |from: &str, d: &Digest| {
                view.repo(&reg2, from).is_some_and(|r| r.blobs.contains(d))
            };
            let writer = crate::push::Writer {
                uploads,
                store: st.leases.get(),
                views: &st.views,
            };
            return crate::push::handle(writer, registry, name, w, req, body, visible).await;
        }
    }
    if !read {
        let what = match route {
            Route::Upload { .. } | Route::Manifest { .. } | Route::Blob { .. } => {
                "this server is read-only (start it with --allow-push to accept pushes)"
            }
            _ => "method not allowed on this route",
        };
        return Err(ApiError::Unsupported {
            what: format!("{method}: {what}"),
        });
    }
    let head = method == Method::HEAD;
    match route {
        Route::Base => Ok(json_response(b"{}".to_vec(), "application/json", head)),
        Route::Catalog => catalog(st, &q, head).await,
        Route::Tags { name } => tags(st, &q, &name, head).await,
        Route::Manifest { name, reference } => {
            manifest(st, &q, &name, &reference, &req.headers, head).await
        }
        Route::Blob { name, digest } => blob(st, &q, &name, &digest, &req.headers, head).await,
        Route::Referrers { name, digest } => referrers(st, &q, &name, &digest, head).await,
        Route::Upload { .. } => Err(ApiError::Unsupported {
            what: format!("{method}: uploads take POST, PATCH and PUT"),
        }),
    }
}

/// The query parameters this API reads (percent-decoded).
#[derive(Debug, Default)]
struct Query {
    n: Option<String>,
    last: Option<String>,
    ns: Option<String>,
}

impl Query {
    fn parse(q: Option<&str>) -> Query {
        let mut out = Query::default();
        for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            let slot = match &*k {
                "n" => &mut out.n,
                "last" => &mut out.last,
                "ns" => &mut out.ns,
                _ => continue,
            };
            slot.get_or_insert_with(|| v.into_owned());
        }
        out
    }
}

fn json_response(body: Vec<u8>, content_type: &'static str, head: bool) -> Response {
    let len = body.len();
    let mut r = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(body))
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// The registry a request is for: `?ns=` (containerd's mirror requests), else the
/// configured one, else the only registry in the store that has this repository.
fn registry_for(
    st: &Shared,
    view: &View,
    ns: Option<&str>,
    name: &str,
) -> Result<String, ApiError> {
    if let Some(ns) = ns {
        return Ok(normalize_registry(ns));
    }
    if let Some(r) = &st.opts.registry {
        return Ok(r.clone());
    }
    match view.registries_with(name).as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(ApiError::NameUnknown {
            name: name.to_owned(),
        }),
        many => Err(ApiError::NameUnknown {
            name: format!(
                "{name} (held for several registries: {}; ask with ?ns=REGISTRY or start the server with --registry)",
                many.join(", ")
            ),
        }),
    }
}

/// Docker Hub's aliases as the store writes it (`docker.io`).
pub(crate) fn normalize_registry(ns: &str) -> String {
    let ns = ns.trim().to_ascii_lowercase();
    match ns.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => ns,
    }
}

async fn current_view(st: &Arc<Shared>) -> Result<Arc<View>, ApiError> {
    let st2 = st.clone();
    blocking(move || Ok(st2.views.get()?)).await
}

fn find_repo<'v>(view: &'v View, registry: &str, name: &str) -> Result<&'v Repo, ApiError> {
    view.repo(registry, name)
        .ok_or_else(|| ApiError::NameUnknown {
            name: format!("{registry}/{name}"),
        })
}

async fn catalog(st: &Arc<Shared>, q: &Query, head: bool) -> Result<Response, ApiError> {
    let page = Page::parse(q.n.as_deref(), q.last.as_deref())?;
    let view = current_view(st).await?;
    let scope =
        q.ns.as_deref()
            .map(normalize_registry)
            .or_else(|| st.opts.registry.clone());
    let mut repos: Vec<String> = view
        .registries
        .iter()
        .filter(|(r, _)| scope.as_deref().is_none_or(|s| s == r.as_str()))
        .flat_map(|(_, repos)| repos.keys().cloned())
        .collect();
    repos.sort();
    repos.dedup();
    let (items, more) = page.apply(&repos);
    let body = serde_json::to_vec(&serde_json::json!({ "repositories": items }))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut r = json_response(body, "application/json", head);
    if more && let Some(last) = items.last() {
        add_link(&mut r, "/v2/_catalog", page.n, last, q.ns.as_deref());
    }
    Ok(r)
}

fn add_link(r: &mut Response, path: &str, n: Option<usize>, last: &str, ns: Option<&str>) {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    if let Some(n) = n {
        ser.append_pair("n", &n.to_string());
    }
    ser.append_pair("last", last);
    if let Some(ns) = ns {
        ser.append_pair("ns", ns);
    }
    let link = format!("<{path}?{}>; rel=\"next\"", ser.finish());
    if let Ok(v) = HeaderValue::from_str(&link) {
        r.headers_mut().insert(header::LINK, v);
    }
}

async fn tags(st: &Arc<Shared>, q: &Query, name: &str, head: bool) -> Result<Response, ApiError> {
    let page = Page::parse(q.n.as_deref(), q.last.as_deref())?;
    let view = current_view(st).await?;
    let registry = registry_for(st, &view, q.ns.as_deref(), name)?;
    let repo = find_repo(&view, &registry, name)?;
    let all: Vec<String> = repo.tags.keys().cloned().collect();
    let (items, more) = page.apply(&all);
    let body = serde_json::to_vec(&serde_json::json!({ "name": name, "tags": items }))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut r = json_response(body, "application/json", head);
    if more && let Some(last) = items.last() {
        add_link(
            &mut r,
            &format!("/v2/{name}/tags/list"),
            page.n,
            last,
            q.ns.as_deref(),
        );
    }
    Ok(r)
}

fn header_values(h: &HeaderMap, name: header::HeaderName) -> Vec<&str> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn etag_of(d: &Digest) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{d}\"")).expect("a digest is a valid header value")
}

fn not_modified(h: &HeaderMap, d: &Digest) -> bool {
    let want = format!("\"{d}\"");
    header_values(h, header::IF_NONE_MATCH)
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == want || t == "*" || t.strip_prefix("W/") == Some(want.as_str())
        })
}

async fn manifest(
    st: &Arc<Shared>,
    q: &Query,
    name: &str,
    reference: &ManifestRef,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let mut view = current_view(st).await?;
    // With `?ns=` or `--registry` the registry is known even for a repository the
    // store has never seen (which pull-through may fetch).
    let registry = registry_for(st, &view, q.ns.as_deref(), name)?;
    if let Some(pt) = &st.pull_through {
        let have = view.repo(&registry, name).and_then(|r| match reference {
            ManifestRef::Tag(t) => r.tags.get(t).map(|t| t.top.digest.clone()),
            ManifestRef::Digest(d) => r.manifests.contains_key(d).then(|| d.clone()),
        });
        let accept = header_values(headers, header::ACCEPT);
        let accepts = |m: &MediaType| api::accepts(&accept, m.as_str());
        match pt
            .manifest(&st.store, &registry, name, reference, have, &accepts)
            .await?
        {
            ManifestAnswer::Upstream(c) => return Ok(upstream_manifest(&c, headers, head)),
            ManifestAnswer::Store(true) => {
                st.views.invalidate();
                view = current_view(st).await?;
            }
            ManifestAnswer::Store(false) => {}
        }
    }
    let unknown = || ApiError::ManifestUnknown {
        name: format!("{registry}/{name}"),
        reference: match reference {
            ManifestRef::Tag(t) => t.clone(),
            ManifestRef::Digest(d) => d.to_string(),
        },
    };
    let repo = find_repo(&view, &registry, name)?;
    let desc: Descriptor = match reference {
        ManifestRef::Tag(t) => {
            let target = repo.tags.get(t).ok_or_else(unknown)?;
            // An index is served to clients that accept its media type; to the others,
            // the image manifest stored for the tag (the platform chosen at pull time).
            let accept = header_values(headers, header::ACCEPT);
            if target.top.media_type.is_index()
                && !api::accepts(&accept, target.top.media_type.as_str())
            {
                target.image.clone()
            } else {
                target.top.clone()
            }
        }
        ManifestRef::Digest(d) => repo.manifests.get(d).cloned().ok_or_else(unknown)?,
    };
    if not_modified(headers, &desc.digest) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut().insert(header::ETAG, etag_of(&desc.digest));
        return Ok(r);
    }
    let store = st.leases.get();
    let d = desc.digest.clone();
    let bytes = blocking(move || match store.read_blob(&d, MAX_MANIFEST_SIZE) {
        Ok(b) => Ok(Some(b)),
        Err(hoist_store::StoreError::BlobNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    })
    .await?
    .ok_or_else(unknown)?;
    let ct = manifest_content_type(&desc, &bytes);
    let len = bytes.len();
    let mut r = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(bytes))
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&ct).unwrap_or(HeaderValue::from_static("application/json")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert("docker-content-digest", digest_header(&desc.digest));
    h.insert(header::ETAG, etag_of(&desc.digest));
    Ok(r)
}

/// A manifest fetched upstream by pull-through, answered before its image is stored:
/// the exact bytes, the upstream's media type, its digest.
fn upstream_manifest(c: &Cached, headers: &HeaderMap, head: bool) -> Response {
    let mut r = Response::new(Body::empty());
    let h = r.headers_mut();
    h.insert(header::ETAG, etag_of(&c.digest));
    if not_modified(headers, &c.digest) {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return r;
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(c.media_type.as_str())
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(c.bytes.len()));
    h.insert("docker-content-digest", digest_header(&c.digest));
    if !head {
        *r.body_mut() = Body::from(c.bytes.clone());
    }
    r
}

fn digest_header(d: &Digest) -> HeaderValue {
    HeaderValue::from_str(&d.to_string()).expect("a digest is a valid header value")
}

async fn blob(
    st: &Arc<Shared>,
    q: &Query,
    name: &str,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let view = current_view(st).await?;
    let known = registry_for(st, &view, q.ns.as_deref(), name);
    // With --allow-push, a blob pushed (or mounted) to the repository is served before
    // a manifest references it, as Distribution's links are.
    let pushed = st.uploads.as_ref().and_then(|u| {
        let reg =
            crate::push::push_registry(st.opts.registry.as_deref(), st.port, headers, name).ok()?;
        u.is_linked(&reg, name, digest).then_some(reg)
    });
    let linked = pushed.is_some();
    let registry = match pushed {
        Some(r) => r,
        None => known?,
    };
    let unknown = || ApiError::BlobUnknown {
        name: format!("{registry}/{name}"),
        digest: digest.clone(),
    };
    let in_view = linked
        || view
            .repo(&registry, name)
            .is_some_and(|r| r.blobs.contains(digest));
    // Pull-through: a blob of a manifest answered from upstream, its image being pulled.
    let through = !in_view
        && st
            .pull_through
            .as_ref()
            .is_some_and(|pt| pt.knows_blob(&registry, name, digest));
    if !in_view && !through {
        find_repo(&view, &registry, name)?;
        return Err(unknown());
    }
    let store = st.leases.get();
    let file = open_blob(&store, digest).await?;
    let file = match (file, &st.pull_through) {
        (Some(f), _) => f,
        (None, Some(pt)) if through => {
            return match pt.blob(&st.store, &registry, name, digest).await? {
                None => Err(unknown()),
                Some(BlobAnswer::Whole(bytes)) => {
                    let size = bytes.len() as u64;
                    Ok(blob_response(digest, headers, head, size, |s, e| {
                        Body::from(bytes.slice(s as usize..e as usize))
                    }))
                }
                Some(BlobAnswer::Pulling { pull, .. }) if headers.contains_key(header::RANGE) => {
                    // A Range of a blob being pulled: served from the store once it is
                    // there (the partial download is only read in order, hashed).
                    if let PullState::Failed(e, _) = wait_pull(pull, PULL_WAIT).await {
                        return Err(e);
                    }
                    let file = open_blob(&store, digest).await?.ok_or_else(unknown)?;
                    file_response(file, digest, headers, head, store)
                }
                Some(BlobAnswer::Pulling { desc, pull }) => {
                    let failed = match &*pull.borrow() {
                        PullState::Failed(e, _) => Some(e.clone()),
                        _ => None,
                    };
                    match failed {
                        // The pull failed moments ago: an error, not a body that breaks off.
                        Some(e) => Err(e),
                        None => Ok(blob_response(digest, headers, head, desc.size, |_, _| {
                            Body::from_stream(pt.tail(store, (*desc).clone(), pull))
                        })),
                    }
                }
            };
        }
        (None, _) => return Err(unknown()),
    };
    file_response(file, digest, headers, head, store)
}

async fn open_blob(store: &Store, digest: &Digest) -> Result<Option<File>, ApiError> {
    let (s2, d) = (store.clone(), digest.clone());
    blocking(move || match s2.open_blob(&d) {
        Ok(f) => Ok(Some(f)),
        Err(hoist_store::StoreError::BlobNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    })
    .await
}

/// A stored blob's answer (ranges, HEAD, `If-None-Match`), its body read from `file`.
fn file_response(
    file: File,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
    store: Store,
) -> Result<Response, ApiError> {
    let size = file
        .metadata()
        .map_err(|e| ApiError::Internal(format!("stat of blob {digest}: {e}")))?
        .len();
    Ok(blob_response(digest, headers, head, size, |start, end| {
        Body::from_stream(file_stream(file, start, end, store))
    }))
}

/// A blob's answer of `size` bytes: headers, `304` for a matching `If-None-Match`, one
/// `Range` (`206`, or `416` outside), `Content-Length`; the body of `[start, end)` from
/// `body` unless `head`.
fn blob_response(
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
    size: u64,
    body: impl FnOnce(u64, u64) -> Body,
) -> Response {
    let mut r = Response::new(Body::empty());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("docker-content-digest", digest_header(digest));
    h.insert(header::ETAG, etag_of(digest));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    if not_modified(headers, digest) {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return r;
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (start, end) = match api::parse_range(range, size) {
        RangeAnswer::Full => (0, size),
        RangeAnswer::Partial { start, end } => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{size}"))
                    .expect("numbers are a valid header value"),
            );
            (start, end + 1)
        }
        RangeAnswer::Unsatisfiable => {
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}"))
                    .expect("numbers are a valid header value"),
            );
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return r;
        }
    };
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if !head {
        *r.body_mut() = body(start, end);
    }
    r
}

/// `[start, end)` of `file`, `CHUNK` bytes per `pread` on the blocking pool, the next
/// [`READ_AHEAD`] reads running while a chunk is being sent (a read and its send in
/// turn left a single client at half the Distribution registry's speed: 0.5 against 0.9
/// GB/s for one 78 MB blob with curl on a loaded machine). The store handle (and its
/// lease) lives as long as the stream.
fn file_stream(
    file: File,
    start: u64,
    end: u64,
    lease: Store,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    use futures_util::StreamExt as _;
    let cached_reads = CachedReads::of(&file);
    let file = Arc::new(file);
    let reads = futures_util::stream::iter((start..end).step_by(CHUNK)).map(move |pos| {
        let (f, _lease) = (file.clone(), lease.clone());
        async move {
            let want = (end - pos).min(CHUNK as u64) as usize;
            // From the page cache on this thread when it holds the chunk (a blob being
            // served is usually there); what it lacks is read on the blocking pool. The
            // hand-off to the pool for every chunk cost the server more CPU than the
            // copies themselves (16 curl clients at once: 1.9-2.2 CPU-s, Distribution
            // 1.4, now 0.8-0.9).
            let mut b = vec![0u8; want];
            let cached = cached_reads.read(&f, pos, &mut b);
            let b = if cached == want {
                b
            } else {
                tokio::task::spawn_blocking(move || {
                    let n = fill_at(&f, pos + cached as u64, &mut b[cached..])?;
                    b.truncate(cached + n);
                    Ok::<_, std::io::Error>(b)
                })
                .await
                .map_err(std::io::Error::other)??
            };
            if b.len() < want {
                // A blob that shrank under us (it never should): end the body short, so
                // the client sees a truncated transfer, not wrong bytes.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than its size",
                ));
            }
            Ok(Bytes::from(b))
        }
    });
    // Nothing after the first error.
    reads.buffered(READ_AHEAD).scan(false, |failed, r| {
        let out = (!*failed).then(|| {
            *failed = r.is_err();
            r
        });
        std::future::ready(out)
    })
}

async fn referrers(
    st: &Arc<Shared>,
    q: &Query,
    name: &str,
    _digest: &Digest,
    head: bool,
) -> Result<Response, ApiError> {
    let view = current_view(st).await?;
    let registry = registry_for(st, &view, q.ns.as_deref(), name)?;
    find_repo(&view, &registry, name)?;
    // The store keeps no referrers (a copy into it refuses them): the list is empty.
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OciIndex.as_str(),
        "manifests": [],
    }))
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(
        body,
        "application/vnd.oci.image.index.v1+json",
        head,
    ))
}
