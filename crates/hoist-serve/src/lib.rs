//! `hoist serve`: the local store as the read side of the Distribution (OCI) API, and a
//! containerd mirror.
//!
//! # What is served
//!
//! | route | answer |
//! |---|---|
//! | `GET/HEAD /v2/` | `200 {}` |
//! | `GET/HEAD /v2/<name>/manifests/<tag>` | the manifest the tag was pulled as (the index, when there was one), exact bytes, `Content-Type` as stored, `Docker-Content-Digest`, `ETag`; a client whose `Accept` does not take the index gets the image manifest stored for the tag |
//! | `GET/HEAD /v2/<name>/manifests/<digest>` | any manifest, index or OCI view of the repository's images, by digest |
//! | `GET/HEAD /v2/<name>/blobs/<digest>` | a blob of the repository's images; one `Range` → 206, malformed or outside → 416 with `Content-Range: bytes */SIZE`, `Accept-Ranges: bytes` |
//! | `GET /v2/<name>/tags/list` | sorted tags, `n`/`last` paging with a `Link` header |
//! | `GET /v2/_catalog` | sorted repositories, same paging |
//! | `GET /v2/<name>/referrers/<digest>` | an empty OCI index (the store keeps no referrers) |
//!
//! Errors are the spec's JSON (`{"errors":[{"code":…}]}`): `NAME_INVALID`,
//! `TAG_INVALID`, `DIGEST_INVALID` (other algorithms than sha256/sha512 too) and
//! `PAGINATION_NUMBER_INVALID` are 400, `NAME_UNKNOWN`, `MANIFEST_UNKNOWN` and
//! `BLOB_UNKNOWN` 404, writes `UNSUPPORTED` 405. Names and digests are checked against
//! their grammars on the raw path before anything touches the store.
//!
//! # Writes, TLS, authentication
//!
//! With [`ServeOptions::push`] (`--allow-push`) the write side is served too: blob
//! uploads (`POST` → `202` + `Location`; chunked `PATCH` with `Content-Range`; final
//! `PUT ?digest=`; monolithic `POST ?digest=`), cross-repository mounts
//! (`?mount=&from=`) and manifest puts (image manifests and indexes), each verified
//! before the store shows it (see the `push` module). Pushes are stored under
//! `--registry`, else the `host:port` the client addressed, which must carry the
//! server's own port (a client never writes under `docker.io` or another registry whose
//! images the server mirrors). [`ServeOptions::tls`] serves HTTPS only (rustls; no plain
//! fallback) and [`ServeOptions::htpasswd`] requires Basic authentication by bcrypt
//! users (`401 UNAUTHORIZED` with `WWW-Authenticate: Basic realm=…` otherwise).
//!
//! # Names
//!
//! The store names images with their registry (`127.0.0.1:5000/ns/app:1.0`); the API
//! names a repository without it (`ns/app`). The registry of a request is containerd's
//! `?ns=` parameter (a mirror request), else [`ServeOptions::registry`], else the only
//! registry whose images include that repository (two registries with the same
//! repository path: `NAME_UNKNOWN` naming both).
//!
//! A repository holds the images with a name in it, or pulled from it. A manifest or
//! blob is served under a repository only when one of its images references it, as
//! Distribution links blobs to repositories. A Docker schema 2 image is served as
//! pulled: the original manifest under its own digest (the OCI view that `index.json`
//! lists for skopeo and umoci is served too, by its digest).
//!
//! # Serving safely beside other store users
//!
//! Requests read the store through a leased handle ([`Store::leased`]), replaced every
//! minute; a request keeps its handle until its body is sent, so a `hoist gc` running
//! beside the server never collects a blob between its lookup and its read, and what
//! was served is released once the last request of an old lease ends. The server writes
//! the store only through pull-through (the pull engine, with its own lease) and pushes.
//!
//! # Pull-through, streamed
//!
//! With [`ServeOptions::pull_through`] a manifest the store lacks (or a tag whose TTL ran
//! out) is fetched from upstream with the pull engine's own source (mirrors, credentials,
//! retries; the trust policy enforced on it), one per upstream repository, and answered
//! at once, exact bytes and `Docker-Content-Digest`, while the engine pulls the image in
//! the background through that same source, pinned to the digest served and given the
//! manifests already fetched. Its layers are streamed to clients from the engine's
//! partial download in the store's ingest area as it grows (the file and its record kept
//! open), which becomes the published blob; each download is read and hashed once for
//! all its clients, and a body's last chunk is sent only once the bytes that client got
//! hash to the digest, so a pull that fails or an upstream that lies leaves the client
//! with a body short of its `Content-Length`, never a complete wrong one; the store only
//! ever gets what the engine verified. Once committed, the image is served from the
//! store. Details and fallbacks: the `pull_through` module.
//!
//! At most [`ServeOptions::max_requests`] requests run at once (a blob body keeps its
//! permit until sent or abandoned); more wait. Blob bodies are read with `pread` in
//! 256 KiB chunks, four reads ahead of the socket: on the request's own thread what the
//! page cache holds (`preadv2` with `RWF_NOWAIT`, which never waits for a disk; on tmpfs a
//! plain read), the rest on tokio's bounded blocking pool; no thread per request. Handing
//! every chunk to the pool cost more CPU than the copies: 16 curl clients fetching the
//! multi image's three large layers took 1.9–2.2 CPU-s of the server that way, 0.8–1.1
//! now (the Distribution registry 1.4), and 1.0–1.1 s instead of 1.5–1.8 (Distribution
//! 1.3–1.4).
//!
//! **No `sendfile`**, measured. hyper 1.x (under axum) writes a body only from buffers it
//! is handed (`Body` is a stream of `Bytes`); it has no file or `sendfile` body, so
//! zero-copy would mean taking blob `GET`s on plain HTTP off hyper: a custom accept loop
//! (or hyper's upgrade path) that parses the request, writes the headers and calls
//! `sendfile(2)` on the raw socket, with its own keep-alive, HEAD, `Range`, error and
//! graceful-shutdown handling beside hyper's, and only for plain HTTP (TLS needs kTLS).
//! What it would buy, on this machine kind (2 cores, loopback, 2026-12-04):
//! - one client: one 78 MB layer of the bench's multi image fetched with curl, median of
//!   15 alternating runs: `hoist serve` 1.45 GB/s (1.07 before the read-ahead), the
//!   Distribution registry 1.09, a minimal Python server calling `sendfile(2)` 1.02. A
//!   single stream is bound by the receiver's copy, not the server's;
//! - 16 clients at once (16 `skopeo copy` of the multi image, 3.1 GB served): the server's
//!   own CPU, which `sendfile` would cut, was 2.4–2.5 CPU-s for `hoist serve` and 2.2–2.4
//!   for Distribution, out of about 18 CPU-s the run takes (the clients hash and write):
//!   at most some 13% of the run, for a second HTTP implementation. Not done; revisit if
//!   a mirror's profile shows the server's copies dominating. Avoiding the zeroing of the
//!   read buffers (reading into spare capacity) changed nothing measurable either.
//!
//! `bench/run --only 's14-|s15-'` compares `skopeo copy` from `hoist serve`, and through
//! it as a cold pull-through cache, with the same from Distribution (and its proxy mode).
//!
//! Each request is reported once, when its body is done, through
//! [`Server::on_request`].
//!
//! # Example
//!
//! Serve a store on a free loopback port, ask it `GET /v2/`, stop it:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::{Read, Write};
//!
//! let dir = tempfile::tempdir()?;
//! let store = hoist_store::Store::open(dir.path())?;
//! let runtime = tokio::runtime::Runtime::new()?;
//! let mut opts = hoist_serve::ServeOptions::default();
//! opts.listen = "127.0.0.1:0".parse()?;
//! let server = runtime.block_on(hoist_serve::Server::bind(store, opts))?;
//! let addr = server.local_addr();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = runtime.spawn(server.run(async {
//!     let _ = stopped.await;
//! }));
//!
//! let mut conn = std::net::TcpStream::connect(addr)?;
//! write!(conn, "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer)?;
//! assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
//!
//! let _ = stop.send(());
//! runtime.block_on(running)??;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod api;
mod auth;
mod blocking;
mod containerd;
mod download;
mod error;
mod pull_state;
mod pull_through;
mod push;
mod server;
mod tls;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hoist_store::Store;
use hoist_transport::PullOptions;
use tokio::sync::Semaphore;

pub use api::{MAX_NAME_LEN, MAX_PAGE};
pub use auth::Htpasswd;
pub use containerd::{hosts_toml, registries_conf};
pub use error::{ApiError, ServeError};
pub use push::{DEFAULT_MAX_BLOB_SIZE, MAX_SESSIONS, PushOptions, SESSION_IDLE};
pub use tls::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};

/// Default bound on requests served at once.
pub const DEFAULT_MAX_REQUESTS: usize = 128;
/// Default time a tag validated upstream is trusted (pull-through).
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(60);

/// How to serve.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Where to listen (loopback by default).
    pub listen: SocketAddr,
    /// The registry requests without `?ns=` are for.
    pub registry: Option<String>,
    /// At most this many requests at once (at least 1).
    pub max_requests: usize,
    /// Pull what the store lacks from upstream ([`PullThrough`]); `None`: read-only.
    pub pull_through: Option<PullThrough>,
    /// Serve HTTPS with this certificate and key; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Require Basic authentication by these users; `None`: anyone may read.
    pub htpasswd: Option<Htpasswd>,
    /// Accept pushes (blob uploads, manifest puts) into the store; `None`: read-only,
    /// writes answer `405 UNSUPPORTED`.
    pub push: Option<PushOptions>,
}

/// A PEM certificate chain (leaf first) and its PEM private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// Pull-through settings.
#[derive(Debug, Clone)]
pub struct PullThrough {
    /// How the pull engine reaches upstream (platform, credentials, TLS, mirrors, jobs).
    pub pull: PullOptions,
    /// A tag is re-validated upstream at most this often.
    pub tag_ttl: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 5050)),
            registry: None,
            max_requests: DEFAULT_MAX_REQUESTS,
            pull_through: None,
            tls: None,
            htpasswd: None,
            push: None,
        }
    }
}

/// One request, reported when its body is done (sent, or abandoned by the client).
#[derive(Debug, Clone)]
pub struct RequestLog<'a> {
    /// The method.
    pub method: &'a str,
    /// Path and query, as sent.
    pub path: &'a str,
    /// The status answered.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// From the request's arrival to the end of its body.
    pub elapsed: Duration,
}

impl std::fmt::Display for RequestLog<'_> {
    /// `GET /v2/ns/app/blobs/sha256:… 200 1048576 12.3ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} {:.1}ms",
            self.method,
            self.path,
            self.status,
            self.bytes,
            self.elapsed.as_secs_f64() * 1000.0
        )
    }
}

pub(crate) type LogFn = Arc<dyn Fn(&RequestLog) + Send + Sync>;

/// A bound server, not yet running.
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    store: Store,
    opts: ServeOptions,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    log: Option<LogFn>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("store", &self.store.root())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Bind `opts.listen` (port 0 picks a free one: see [`Server::local_addr`]).
    pub async fn bind(store: Store, opts: ServeOptions) -> Result<Server, ServeError> {
        if opts.max_requests == 0 {
            return Err(ServeError::Config {
                what: "max_requests must be at least 1".into(),
            });
        }
        // The certificate is checked before the port is taken: a bad one never leaves a
        // server that answers in plain HTTP.
        let tls = match &opts.tls {
            Some(t) => Some(tls::server_config(&t.cert, &t.key)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
        Ok(Server {
            listener,
            addr,
            store,
            opts,
            tls,
            log: None,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https` when serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Call `f` once per request, when its body is done.
    pub fn on_request(mut self, f: impl Fn(&RequestLog) + Send + Sync + 'static) -> Server {
        self.log = Some(Arc::new(f));
        self
    }

    /// Serve until `shutdown` completes; requests in flight are then finished.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.addr;
        let own = vec![
            addr.to_string(),
            format!("localhost:{}", addr.port()),
            format!("127.0.0.1:{}", addr.port()),
        ];
        let pull_through = self
            .opts
            .pull_through
            .clone()
            .map(|p| pull_through::PullThrough::new(p.pull, p.tag_ttl, own));
        let uploads = match &self.opts.push {
            Some(p) => Some(
                push::Uploads::new(p.clone())
                    .map_err(|source| ServeError::Serve { addr, source })?,
            ),
            None => None,
        };
        let shared = Arc::new(server::Shared {
            uploads,
            port: addr.port(),
            views: view::ViewCache::new(self.store.clone()),
            leases: server::Leases::new(self.store.clone()),
            permits: Arc::new(Semaphore::new(self.opts.max_requests)),
            store: self.store,
            opts: self.opts,
            log: self.log,
            pull_through,
        });
        let app = Router::new().fallback(server::handle).with_state(shared);
        match self.tls {
            Some(config) => axum::serve(tls::TlsListener::new(self.listener, config), app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(|source| ServeError::Serve { addr, source }),
            None => axum::serve(self.listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(|source| ServeError::Serve { addr, source }),
        }
    }
}
