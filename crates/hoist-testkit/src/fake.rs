//! A tiny programmable registry: it serves whatever the test put in it, right or wrong.
//!
//! The real Distribution registry ([`crate::registry`]) refuses bad content at push time, so
//! tests of a client's defences (wrong digests, truncated bodies, oversized manifests, documents
//! that are both an index and a manifest) need a server that stores bytes without looking at
//! them. [`FakeRegistry`] is that server: plain HTTP on `127.0.0.1`, a random port, axum on its own
//! thread with its own tokio runtime (like [`crate::token`]), so it serves whether the test is
//! synchronous or async, and while the test blocks on a child process.
//!
//! # What it serves
//! - `GET /v2/`: 200 `{}` with `Docker-Distribution-API-Version: registry/2.0`.
//! - `GET`/`HEAD /v2/REPO/manifests/REFERENCE`: what [`FakeRegistry::put_manifest`] stored, with
//!   its `Content-Type` and (unless [`FakeRegistry::send_content_digest`] turned it off) a
//!   `Docker-Content-Digest` computed over the stored bytes. A manifest put under a tag is also
//!   served by its digest.
//! - `GET`/`HEAD /v2/REPO/blobs/DIGEST`: what [`FakeRegistry::put_blob`] stored under that digest
//!   string, as `application/octet-stream`, never checked against the digest.
//! - Anything else: 404 with a Distribution-style JSON error (`MANIFEST_UNKNOWN`,
//!   `BLOB_UNKNOWN`, `NAME_UNKNOWN`), or 405 for methods other than GET and HEAD.
//! - [`FakeRegistry::set_route`] overrides the answer for one path (every method): status,
//!   headers, body and its framing ([`Framing`]: exact `Content-Length`, chunked, or a
//!   `Content-Length` that promises more than is sent).
//!
//! - Blob GETs honour a single `Range: bytes=A-B` / `bytes=A-` with 206 and `Content-Range`
//!   (416 when unsatisfiable).
//!
//! Every request is recorded ([`FakeRegistry::requests`], with its `Range` and
//! `Authorization` headers and the listener it reached) and counted per path
//! ([`FakeRegistry::hits`]). Paths are compared as sent (the request target without its query).
//! Blob bodies are counted too: [`FakeRegistry::blob_bytes_sent`] (bytes handed to the
//! connection) and [`FakeRegistry::blob_gets`] (GETs answered with content).
//!
//! # Pushes
//! Off by default (writes get 405). [`FakeRegistry::accept_pushes`] turns on blob uploads
//! (monolithic, chunked), cross-repository mounts and manifest puts, as Distribution
//! answers them; [`FakeRegistry::reject_chunked_uploads`] and
//! [`FakeRegistry::deny_mounts_from`] make it refuse chunks or mounts, and the faults
//! reach push requests too ([`Target::Upload`]). Every push request is recorded
//! ([`FakeRegistry::upload_requests`]). See `fake_uploads.rs` for the rules.
//!
//! # Faults
//! [`FakeRegistry::inject`] adds per-request faults ([`Fault`]): statuses, 429/503 with
//! `Retry-After` (seconds or HTTP date), resets after N bytes, wrong `Content-Length`,
//! truncated bodies, drips, stalls, wrong bytes, 307 redirects to a second listener of the
//! fake (another port: another origin, with presigned-style `?sig=N` URLs that can expire,
//! [`FakeRegistry::presigned_uses`]), Range answered with 200 or with a wrong
//! `Content-Range`, delays. [`FakeRegistry::require_token`] turns on bearer-token auth with
//! tokens from the fake's own `/token`, each good for N requests. See [`Fault`] for the rules.
//!
//! # How it is built
//! Each request goes through one decision point, `Inner::respond`, which turns
//! (method, path, headers, state) into a plan: a [`FakeResponse`] and what to do to its body;
//! and one renderer that turns the plan into bytes on the wire.
//!
//! ```no_run
//! use hoist_testkit::fake::{FakeRegistry, FakeResponse};
//! use hoist_testkit::images;
//!
//! let fake = FakeRegistry::start();
//! let img = images::sample_docker().build().unwrap();
//! fake.push_image("ns/app", "v1", &img);
//! // Serve the first layer with the wrong bytes.
//! fake.put_blob("ns/app", &img.layers[0].blob.digest, b"not the layer".to_vec());
//! // Make the config answer 500.
//! fake.set_route(
//!     &format!("/v2/ns/app/blobs/{}", img.config.digest),
//!     FakeResponse::status(500).body("boom"),
//! );
//! println!("pull {}", fake.image_ref("ns/app:v1"));
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt as _;

use crate::images::{BuiltImage, BuiltIndex, sha256_digest};

#[path = "fake_faults.rs"]
mod faults;
#[path = "fake_uploads.rs"]
mod uploads;

use faults::{BodyFault, plan};
pub use faults::{Fault, FaultRule, RetryAfter, Target, TokenAuth, http_date};
pub use uploads::UploadRecord;

/// How long a reset waits after its last byte before breaking the connection: time for
/// the server to flush what it sent.
const RESET_DELAY: Duration = Duration::from_millis(10);

/// Size of the pieces a [`Framing::Chunked`] or [`Framing::DeclaredLength`] body is sent in.
const STREAM_PIECE: usize = 64 * 1024;
/// How long a [`Framing::DeclaredLength`] body that promised more waits, after its last byte,
/// before the connection is closed: time for the server to flush what was sent.
const CUT_DELAY: Duration = Duration::from_millis(100);

/// How a [`FakeResponse`] body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// `Content-Length` equal to the body's length (set by the server; don't add your own).
    #[default]
    ContentLength,
    /// No `Content-Length`: `Transfer-Encoding: chunked`, the body sent in 64 KiB pieces.
    Chunked,
    /// `Content-Length: N` whatever the body's length. With `N` larger than the body, the server
    /// sends the body, waits 100 ms (so the bytes reach the client) and closes the connection, as
    /// a server that died mid-transfer does. `N` smaller than the body is not supported.
    DeclaredLength(u64),
}

/// One answer of the fake registry.
#[derive(Debug, Clone)]
pub struct FakeResponse {
    /// HTTP status code (an invalid one is answered as 500).
    pub status: u16,
    /// Extra headers, in order (names are case-insensitive; invalid ones are answered as 500).
    pub headers: Vec<(String, String)>,
    /// The body (not sent for HEAD).
    pub body: Vec<u8>,
    /// How the body is framed.
    pub framing: Framing,
}

impl Default for FakeResponse {
    fn default() -> Self {
        FakeResponse {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            framing: Framing::ContentLength,
        }
    }
}

impl FakeResponse {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> FakeResponse {
        FakeResponse {
            status,
            ..FakeResponse::default()
        }
    }
    /// A 200 answer with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> FakeResponse {
        FakeResponse::default().body(body)
    }
    /// A Distribution-style error: `{"errors":[{"code","message","detail":null}]}`.
    pub fn error(status: u16, code: &str, message: &str) -> FakeResponse {
        let body = serde_json::json!({
            "errors": [{"code": code, "message": message, "detail": null}]
        });
        FakeResponse::status(status)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body.to_string())
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> FakeResponse {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> FakeResponse {
        self.body = body.into();
        self
    }
    /// Sets the framing.
    pub fn framing(mut self, framing: Framing) -> FakeResponse {
        self.framing = framing;
        self
    }
    /// Sends the body chunked, without `Content-Length`.
    pub fn chunked(self) -> FakeResponse {
        self.framing(Framing::Chunked)
    }
    /// Declares `Content-Length: n` whatever the body's length.
    pub fn declared_length(self, n: u64) -> FakeResponse {
        self.framing(Framing::DeclaredLength(n))
    }
}

/// One request the fake registry answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRequest {
    /// `GET`, `HEAD`...
    pub method: String,
    /// The request target's path, as sent (no query).
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Whether it reached the storage listener (the target of [`Fault::Redirect`]).
    pub storage: bool,
}

#[derive(Debug, Clone)]
struct StoredManifest {
    media_type: String,
    bytes: Bytes,
    digest: String,
}

#[derive(Debug, Default)]
struct FakeState {
    /// (repo, tag or digest) → manifest.
    manifests: HashMap<(String, String), StoredManifest>,
    /// (repo, digest string) → bytes.
    blobs: HashMap<(String, String), Bytes>,
    /// path → the answer that replaces whatever the path would serve.
    routes: HashMap<String, FakeResponse>,
    log: Vec<FakeRequest>,
    no_content_digest: bool,
    faults: Vec<FaultRule>,
    auth: Option<TokenAuth>,
    /// token → requests made with it.
    tokens: HashMap<String, u64>,
    tokens_issued: u64,
    /// Presigned signature → uses.
    sig_uses: HashMap<u64, u64>,
    next_sig: u64,
    presigned_uses: Option<u64>,
    /// digest → GETs answered with content.
    blob_gets: HashMap<String, usize>,
    registry_addr: Option<SocketAddr>,
    storage_addr: Option<SocketAddr>,
    /// The push side.
    uploads: uploads::Uploads,
}

struct Inner {
    state: Mutex<FakeState>,
    /// digest → body bytes handed to connections (updated by the body streams).
    bytes_sent: Mutex<HashMap<String, u64>>,
}

/// An answer and what to do to its body.
struct Plan {
    resp: FakeResponse,
    /// A stored blob's bytes (or a slice of them), shared rather than copied; replaces
    /// `resp.body` when set.
    shared: Option<Bytes>,
    body: BodyFault,
    /// The blob digest whose bytes this body carries (counted).
    count: Option<String>,
    delay: Option<Duration>,
}

impl Plan {
    fn plain(resp: FakeResponse) -> Plan {
        Plan {
            resp,
            shared: None,
            body: BodyFault::None,
            count: None,
            delay: None,
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The one decision point: what to answer for `method path` on the registry or the
    /// storage listener.
    fn respond(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
        storage: bool,
    ) -> Plan {
        let hv = |h: header::HeaderName| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (range, authorization) = (hv(header::RANGE), hv(header::AUTHORIZATION));
        let mut st = self.lock();
        let plan = plan(
            &mut st,
            method,
            path,
            query,
            (range.as_deref(), authorization.as_deref()),
            (headers, body),
            storage,
        );
        if !storage {
            uploads::record(
                &mut st,
                method,
                path,
                query,
                headers,
                body,
                plan.resp.status,
            );
        }
        st.log.push(FakeRequest {
            method: method.as_str().to_string(),
            path: path.to_string(),
            query: query.map(str::to_string),
            status: plan.resp.status,
            range,
            authorization,
            storage,
        });
        if let Some(d) = &plan.count
            && method == Method::GET
        {
            *st.blob_gets.entry(d.clone()).or_default() += 1;
        }
        plan
    }

    fn add_bytes(&self, digest: &str, n: usize) {
        let mut b = self.bytes_sent.lock().unwrap_or_else(|p| p.into_inner());
        *b.entry(digest.to_string()).or_default() += n as u64;
    }
}

/// What the stored content says for `method path`.
fn serve(st: &FakeState, method: &Method, path: &str) -> FakeResponse {
    if method != Method::GET && method != Method::HEAD {
        return FakeResponse::error(405, "UNSUPPORTED", "the fake registry only reads");
    }
    if path == "/v2/" || path == "/v2" {
        return FakeResponse::ok("{}")
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Docker-Distribution-API-Version", "registry/2.0");
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return FakeResponse::status(404).body("404 page not found\n");
    };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return match st.manifests.get(&(repo.to_string(), reference.to_string())) {
            Some(m) => {
                let mut r = FakeResponse::ok(m.bytes.to_vec())
                    .header("Content-Type", &m.media_type)
                    .header("Docker-Distribution-API-Version", "registry/2.0");
                if !st.no_content_digest {
                    r = r.header("Docker-Content-Digest", &m.digest);
                }
                r
            }
            None => FakeResponse::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
        };
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        // The bytes are attached by `plan` (shared, not copied).
        return match st.blobs.get(&(repo.to_string(), digest.to_string())) {
            Some(_) => FakeResponse::ok(Vec::new())
                .header("Content-Type", "application/octet-stream")
                .header("Docker-Distribution-API-Version", "registry/2.0"),
            None => FakeResponse::error(404, "BLOB_UNKNOWN", "blob unknown to registry"),
        };
    }
    FakeResponse::error(404, "NAME_UNKNOWN", "repository name not known to registry")
}

type PieceStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Turn a plan into an HTTP response.
fn render(plan: Plan, inner: &Arc<Inner>) -> Response {
    let Plan {
        resp: r,
        shared,
        body: fault,
        count,
        ..
    } = plan;
    if fault == BodyFault::None && count.is_none() {
        return render_plain(r);
    }
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    for (k, v) in &r.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                resp.headers_mut().append(k, v);
            }
            _ => return internal_error(&format!("fake registry: invalid header {k:?}: {v:?}")),
        }
    }
    let body = shared.unwrap_or_else(|| Bytes::from(r.body));
    let len = body.len() as u64;
    let head = |n: u64| body.slice(..(n.min(len) as usize));
    let cut = |delay: Duration| -> PieceStream {
        Box::pin(futures_util::stream::once(async move {
            tokio::time::sleep(delay).await;
            Err(std::io::Error::other("fake registry: connection broken"))
        }))
    };
    let (declared, stream): (Option<u64>, PieceStream) = match fault {
        BodyFault::None => match r.framing {
            Framing::ContentLength => (Some(len), Box::pin(pieces(body.clone()))),
            Framing::Chunked => (None, Box::pin(pieces(body.clone()))),
            Framing::DeclaredLength(n) if n > len => (
                Some(n),
                Box::pin(pieces(body.clone()).chain(cut(CUT_DELAY))),
            ),
            Framing::DeclaredLength(n) => (Some(n), Box::pin(pieces(body.clone()))),
        },
        BodyFault::ResetAfter(n) => (Some(len), Box::pin(pieces(head(n)).chain(cut(RESET_DELAY)))),
        BodyFault::ContentLength(n) if n > len => (
            Some(n),
            Box::pin(pieces(body.clone()).chain(cut(CUT_DELAY))),
        ),
        BodyFault::ContentLength(n) => (Some(n), Box::pin(pieces(head(n)))),
        BodyFault::Truncate(n) => (None, Box::pin(pieces(head(n)))),
        BodyFault::StallAfter(n) => (
            Some(len),
            Box::pin(pieces(head(n)).chain(futures_util::stream::pending())),
        ),
        BodyFault::Throttle(rate) => {
            let start = tokio::time::Instant::now();
            let s = futures_util::stream::unfold(0usize, move |i| {
                let body = body.clone();
                async move {
                    if i >= body.len() {
                        return None;
                    }
                    // Each piece leaves when the cap allows the bytes before it.
                    let due = Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(start + due).await;
                    let end = (i + STREAM_PIECE).min(body.len());
                    Some((Ok(body.slice(i..end)), end))
                }
            });
            (Some(len), Box::pin(s))
        }
        BodyFault::Drip(every) => {
            let s = futures_util::stream::unfold(0usize, move |i| {
                let body = body.clone();
                async move {
                    if i >= body.len() {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(every).await;
                    }
                    Some((Ok(body.slice(i..i + 1)), i + 1))
                }
            });
            (Some(len), Box::pin(s))
        }
    };
    if let Some(n) = declared {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let stream: PieceStream = match count {
        Some(d) => {
            let inner = inner.clone();
            Box::pin(stream.inspect(move |r| {
                if let Ok(b) = r {
                    inner.add_bytes(&d, b.len());
                }
            }))
        }
        None => stream,
    };
    *resp.body_mut() = Body::from_stream(stream);
    resp
}

/// Turn a [`FakeResponse`] into an HTTP response, as it says.
fn render_plain(r: FakeResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    for (k, v) in &r.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                resp.headers_mut().append(k, v);
            }
            _ => return internal_error(&format!("fake registry: invalid header {k:?}: {v:?}")),
        }
    }
    match r.framing {
        Framing::ContentLength => *resp.body_mut() = Body::from(r.body),
        Framing::Chunked => *resp.body_mut() = Body::from_stream(pieces(r.body)),
        Framing::DeclaredLength(n) => {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            let short = (r.body.len() as u64) < n;
            let body = pieces(r.body);
            *resp.body_mut() = if short {
                // Let the server flush what it has (it does when the body stream is
                // pending), then fail the stream: the server closes the connection.
                Body::from_stream(body.chain(futures_util::stream::once(async {
                    tokio::time::sleep(CUT_DELAY).await;
                    Err(std::io::Error::other("fake registry: body cut short"))
                })))
            } else {
                Body::from_stream(body)
            };
        }
    }
    resp
}

/// The body in [`STREAM_PIECE`] pieces (slices, not copies), as a stream.
fn pieces(
    body: impl Into<Bytes>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    let body: Bytes = body.into();
    let len = body.len();
    futures_util::stream::iter(
        (0..len)
            .step_by(STREAM_PIECE)
            .map(move |i| Ok(body.slice(i..(i + STREAM_PIECE).min(len)))),
    )
}

fn internal_error(msg: &str) -> Response {
    let mut resp = Response::new(Body::from(msg.to_string()));
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    answer(inner, req, false).await
}

async fn handle_storage(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    answer(inner, req, true).await
}

/// Request bodies of pushes are read up to this size.
const MAX_PUSH_BODY: usize = 1 << 30;

async fn answer(inner: Arc<Inner>, req: Request, storage: bool) -> Response {
    let (parts, body) = req.into_parts();
    let body = if !storage && uploads::is_push(&parts.method, parts.uri.path()) {
        match axum::body::to_bytes(body, MAX_PUSH_BODY).await {
            Ok(b) => b,
            Err(e) => {
                let mut resp = Response::new(Body::from(format!("fake registry: body: {e}")));
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                return resp;
            }
        }
    } else {
        Bytes::new()
    };
    let uri = &parts.uri;
    let plan = inner.respond(
        &parts.method,
        uri.path(),
        uri.query(),
        &parts.headers,
        &body,
        storage,
    );
    if let Some(d) = plan.delay {
        tokio::time::sleep(d).await;
    }
    render(plan, &inner)
}

/// A running fake registry; stopped on drop.
pub struct FakeRegistry {
    addr: SocketAddr,
    storage_addr: SocketAddr,
    inner: Arc<Inner>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRegistry")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeRegistry {
    /// Starts an empty fake registry on `127.0.0.1:0`. Panics with the reason when it cannot.
    pub fn start() -> FakeRegistry {
        FakeRegistry::try_start().unwrap_or_else(|e| panic!("fake registry: {e}"))
    }

    /// Starts an empty fake registry on `127.0.0.1:0`.
    pub fn try_start() -> std::io::Result<FakeRegistry> {
        let inner = Arc::new(Inner {
            state: Mutex::new(FakeState::default()),
            bytes_sent: Mutex::new(HashMap::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let storage_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        storage_listener.set_nonblocking(true)?;
        let storage_addr = storage_listener.local_addr()?;
        {
            let mut st = inner.lock();
            st.registry_addr = Some(addr);
            st.storage_addr = Some(storage_addr);
        }
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let storage_app = Router::new()
            .fallback(handle_storage)
            .with_state(inner.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name(format!("hoist-testkit-fake-{}", addr.port()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listeners = tokio::net::TcpListener::from_std(listener).and_then(|l| {
                        Ok((l, tokio::net::TcpListener::from_std(storage_listener)?))
                    });
                    let (listener, storage_listener) = match listeners {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    // Not graceful: dropping the runtime cancels open connections, so a client
                    // that keeps one alive cannot hang the test's drop.
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = axum::serve(storage_listener, storage_app) => {}
                        _ = rx => {}
                    }
                });
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("fake registry thread died at start"))??;
        Ok(FakeRegistry {
            addr,
            storage_addr,
            inner,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT/` + `repo_and_reference`, e.g. `image_ref("ns/app:v1")`.
    pub fn image_ref(&self, repo_and_reference: &str) -> String {
        format!("{}/{repo_and_reference}", self.host_port())
    }

    /// Serves `bytes` at `/v2/REPO/manifests/REFERENCE` (GET and HEAD) with `Content-Type:
    /// media_type`, and also at `/v2/REPO/manifests/sha256:HEX` of the bytes. Replaces what was
    /// there. Returns the sha256 digest of the bytes (what `Docker-Content-Digest` says).
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: impl Into<Vec<u8>>,
    ) -> String {
        let bytes = Bytes::from(bytes.into());
        let digest = sha256_digest(&bytes);
        let m = StoredManifest {
            media_type: media_type.to_string(),
            bytes,
            digest: digest.clone(),
        };
        let mut st = self.inner.lock();
        st.manifests
            .insert((repo.to_string(), digest.clone()), m.clone());
        st.manifests
            .insert((repo.to_string(), reference.to_string()), m);
        digest
    }

    /// Serves `bytes` at `/v2/REPO/blobs/DIGEST` (GET and HEAD), as they are: `digest` is only a
    /// name, never checked against the bytes. Replaces what was there.
    pub fn put_blob(&self, repo: &str, digest: &str, bytes: impl Into<Vec<u8>>) {
        self.inner.lock().blobs.insert(
            (repo.to_string(), digest.to_string()),
            Bytes::from(bytes.into()),
        );
    }

    /// Loads an image: its config and layer blobs, and its manifest under `tag` (and by digest).
    pub fn push_image(&self, repo: &str, tag: &str, image: &BuiltImage) {
        for (digest, bytes) in image.blobs() {
            if digest != image.manifest.digest {
                self.put_blob(repo, digest, bytes.to_vec());
            }
        }
        self.put_manifest(
            repo,
            tag,
            &image.manifest.media_type,
            image.manifest_bytes.clone(),
        );
    }

    /// Loads an index: every member image (blobs, and manifests by digest) and the index under
    /// `tag` (and by digest).
    pub fn push_index(&self, repo: &str, tag: &str, index: &BuiltIndex) {
        for img in &index.images {
            self.push_image(repo, &img.manifest.digest, img);
        }
        self.put_manifest(
            repo,
            tag,
            &index.index.media_type,
            index.index_bytes.clone(),
        );
    }

    /// Whether manifests are served with `Docker-Content-Digest` (default `true`).
    pub fn send_content_digest(&self, on: bool) {
        self.inner.lock().no_content_digest = !on;
    }

    /// From now on, every request to `path` (any method) gets `response`, whatever is stored.
    /// `path` is compared with the request target's path as sent, without the query:
    /// `/v2/ns/app/blobs/sha256:…`.
    pub fn set_route(&self, path: &str, response: FakeResponse) {
        self.inner.lock().routes.insert(path.to_string(), response);
    }

    /// Removes the override of `path`.
    pub fn clear_route(&self, path: &str) {
        self.inner.lock().routes.remove(path);
    }

    /// How many requests (any method) reached `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.inner
            .lock()
            .log
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.inner.lock().log.clone()
    }

    /// Forgets the recorded requests (hit counts restart at zero, push requests included),
    /// and the blob byte and GET counters.
    pub fn reset_hits(&self) {
        let mut st = self.inner.lock();
        st.log.clear();
        st.uploads.log.clear();
        st.blob_gets.clear();
        drop(st);
        self.inner
            .bytes_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Adds a fault rule (see [`Fault`]). Rules are tried in the order added.
    pub fn inject(&self, rule: FaultRule) {
        self.inner.lock().faults.push(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.inner.lock().faults.clear();
    }

    /// Turns bearer-token auth on (`Some`) or off. Tokens come from `GET /token` on the
    /// registry listener; the challenge names it as the realm.
    pub fn require_token(&self, auth: Option<TokenAuth>) {
        let mut st = self.inner.lock();
        st.auth = auth;
        st.tokens.clear();
    }

    /// Serve the push side (uploads, mounts, manifest puts; default off: 405).
    pub fn accept_pushes(&self, on: bool) {
        self.inner.lock().uploads.enabled = on;
    }

    /// Answer every `PATCH` that carries a `Content-Range` with 416, as registries that
    /// take only monolithic or streamed uploads do.
    pub fn reject_chunked_uploads(&self, on: bool) {
        self.inner.lock().uploads.reject_chunked = on;
    }

    /// Refuse mounts from `repo`: 401 with an `insufficient_scope` challenge when token
    /// auth is on (what Distribution answers to a user who cannot pull `repo`), else 403.
    pub fn deny_mounts_from(&self, repo: &str) {
        self.inner
            .lock()
            .uploads
            .deny_mount_from
            .insert(repo.to_string());
    }

    /// Every push request so far (uploads, mounts, manifest puts), oldest first.
    pub fn upload_requests(&self) -> Vec<UploadRecord> {
        self.inner.lock().uploads.log.clone()
    }

    /// The bytes of blob `digest` in `repo`, pushed or put.
    pub fn blob(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        self.inner
            .lock()
            .blobs
            .get(&(repo.to_string(), digest.to_string()))
            .map(|b| b.to_vec())
    }

    /// Tokens issued by `/token` so far.
    pub fn tokens_issued(&self) -> u64 {
        self.inner.lock().tokens_issued
    }

    /// How many requests each presigned URL of [`Fault::Redirect`] is good for (`None`:
    /// unlimited); after that the storage listener answers 403 "Request has expired".
    pub fn presigned_uses(&self, uses: Option<u64>) {
        self.inner.lock().presigned_uses = uses;
    }

    /// `http://127.0.0.1:PORT` of the storage listener (the redirect target).
    pub fn storage_url(&self) -> String {
        format!("http://{}", self.storage_addr)
    }

    /// Body bytes of blob `digest` handed to connections so far, on both listeners, all
    /// requests together (a reset body counts what was sent before the break).
    pub fn blob_bytes_sent(&self, digest: &str) -> u64 {
        self.inner
            .bytes_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .copied()
            .unwrap_or(0)
    }

    /// GETs of blob `digest` answered with content (200 or 206), on both listeners.
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.inner
            .lock()
            .blob_gets
            .get(digest)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
