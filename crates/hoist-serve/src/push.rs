//! The write side (`--allow-push`): blob uploads (monolithic, chunked, cross-repository
//! mount) and manifest puts, each verified before the store shows anything.
//!
//! An upload session's bytes go to a file in the server's own temporary directory (never
//! in the store). The final `PUT ?digest=` streams that file through the store's
//! [`BlobWriter`](hoist_store::BlobWriter), which checks digest and size before it
//! publishes the blob atomically; a mismatch leaves nothing behind. A manifest put
//! checks the digest named in the path, stores the exact bytes, then records the image
//! with [`Store::commit_image`], which checks the config and every layer blob (present,
//! right size, as many layers as diff IDs): a manifest naming a missing blob is refused
//! with `MANIFEST_BLOB_UNKNOWN` and the store gains no name. An index (what
//! `skopeo copy --all` pushes after its children, by digest) records each of its image
//! manifests as an image of the index, the tag on the host's platform (or the first),
//! committed last; attestations and artifacts stay in the index's bytes only. Docker
//! schema 1 is refused.
//!
//! Bounds: at most [`MAX_SESSIONS`] open uploads (one idle for [`SESSION_IDLE`] is
//! dropped, with its file, when the next upload starts), a blob at most [`PushOptions::max_blob_size`], a manifest at most
//! 4 MiB.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt as _;
use hoist_store::{ImageCommit, Store, StoreError};
use hoist_types::{
    ANNOTATION_REFERENCE_TYPE, Descriptor, Digest, MAX_MANIFEST_SIZE, Manifest, MediaType,
    Platform, Reference,
};

use crate::api::ManifestRef;
use crate::blocking::blocking;
use crate::error::ApiError;
use crate::view::ViewCache;

/// Open upload sessions at most.
pub const MAX_SESSIONS: usize = 1024;
/// A session untouched this long may be dropped to make room.
pub const SESSION_IDLE: Duration = Duration::from_secs(15 * 60);
/// Blobs remembered as pushed to a repository before a manifest references them (so
/// `HEAD` and mounts see them, as Distribution's links); past this many the set starts
/// over (a client that then finds a blob missing uploads it again, a no-op in the store).
pub const MAX_LINKS: usize = 65_536;
/// Default largest blob accepted.
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 64 << 30;
/// Bytes gathered before one write on the blocking pool.
const WRITE_BATCH: usize = 1 << 20;

/// Push settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PushOptions {
    /// Largest blob accepted, in bytes.
    pub max_blob_size: u64,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
        }
    }
}

struct Session {
    registry: String,
    name: String,
    path: PathBuf,
    size: u64,
    last: Instant,
}

/// Open upload sessions and their directory.
pub(crate) struct Uploads {
    dir: tempfile::TempDir,
    sessions: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>,
    links: std::sync::Mutex<HashSet<(String, String, Digest)>>,
    opts: PushOptions,
}

impl Uploads {
    pub(crate) fn new(opts: PushOptions) -> std::io::Result<Uploads> {
        Ok(Uploads {
            dir: tempfile::Builder::new()
                .prefix("hoist-serve-uploads-")
                .tempdir()?,
            sessions: std::sync::Mutex::new(HashMap::new()),
            links: std::sync::Mutex::new(HashSet::new()),
            opts,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Session>>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, registry: &str, name: &str) -> Result<String, ApiError> {
        let id = format!("{:032x}", rand::random::<u128>());
        let path = self.dir.path().join(&id);
        File::create(&path)
            .map_err(|e| ApiError::Internal(format!("creating {}: {e}", path.display())))?;
        let mut map = self.lock();
        // Abandoned sessions (and their files) go whenever a new one starts.
        let stale: Vec<String> = map
            .iter()
            .filter(|(_, s)| s.try_lock().is_ok_and(|s| s.last.elapsed() > SESSION_IDLE))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            map.remove(&k);
            let _ = std::fs::remove_file(self.dir.path().join(&k));
        }
        if map.len() >= MAX_SESSIONS {
            let _ = std::fs::remove_file(&path);
            return Err(ApiError::TooManyRequests {
                what: format!("{MAX_SESSIONS} uploads are open"),
            });
        }
        map.insert(
            id.clone(),
            Arc::new(tokio::sync::Mutex::new(Session {
                registry: registry.to_owned(),
                name: name.to_owned(),
                path,
                size: 0,
                last: Instant::now(),
            })),
        );
        Ok(id)
    }

    fn get(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<Session>>, ApiError> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::BlobUploadUnknown { id: id.to_owned() })
    }

    fn link(&self, registry: &str, name: &str, d: &Digest) {
        let mut l = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() >= MAX_LINKS {
            l.clear();
        }
        l.insert((registry.to_owned(), name.to_owned(), d.clone()));
    }

    /// Whether `d` was pushed or mounted to `registry/name` by this server.
    pub(crate) fn is_linked(&self, registry: &str, name: &str, d: &Digest) -> bool {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(registry.to_owned(), name.to_owned(), d.clone()))
    }

    fn close(&self, id: &str) {
        if self.lock().remove(id).is_some() {
            let _ = std::fs::remove_file(self.dir.path().join(id));
        }
    }
}

/// What a write request asks for.
pub(crate) enum WriteOp {
    /// `POST /v2/<name>/blobs/uploads/`.
    Start,
    /// `GET/PATCH/PUT/DELETE /v2/<name>/blobs/uploads/<id>`.
    Session(String),
    /// `PUT /v2/<name>/manifests/<reference>`.
    Manifest(ManifestRef),
}

/// The upload id from the part of the path after `/blobs/uploads`.
pub(crate) fn upload_id(path: &str) -> Option<Result<String, ApiError>> {
    let i = path.rfind("/blobs/uploads")?;
    let rest = path[i + "/blobs/uploads".len()..].trim_start_matches('/');
    if rest.is_empty() {
        return None;
    }
    if rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(Ok(rest.to_owned()))
    } else {
        Some(Err(ApiError::BlobUploadUnknown {
            id: rest.to_owned(),
        }))
    }
}

fn q(parts: &Parts, key: &str) -> Option<String> {
    url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn digest_param(parts: &Parts, key: &str) -> Result<Option<Digest>, ApiError> {
    match q(parts, key) {
        None => Ok(None),
        Some(s) => Digest::parse(&s)
            .map(Some)
            .map_err(|_| ApiError::DigestInvalid { digest: s }),
    }
}

fn location(r: &mut Response, loc: &str) {
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(loc).expect("a checked name and id form a valid header"),
    );
}

fn answer(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn session_answer(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let mut r = answer(status);
    location(&mut r, &format!("/v2/{name}/blobs/uploads/{id}"));
    let h = r.headers_mut();
    h.insert(
        header::RANGE,
        HeaderValue::from_str(&format!("0-{}", size.saturating_sub(1)))
            .expect("numbers are a valid header value"),
    );
    h.insert(
        "docker-upload-uuid",
        HeaderValue::from_str(id).expect("hex is a valid header value"),
    );
    r
}

fn blob_created(name: &str, d: &Digest) -> Response {
    let mut r = answer(StatusCode::CREATED);
    location(&mut r, &format!("/v2/{name}/blobs/{d}"));
    r.headers_mut().insert(
        "docker-content-digest",
        HeaderValue::from_str(&d.to_string()).expect("a digest is a valid header value"),
    );
    r
}

/// Append the request body to `w` (which holds `start` bytes), refusing past `limit`.
async fn append<W: Write + Send + 'static>(
    body: Body,
    mut w: W,
    start: u64,
    limit: u64,
    what: &str,
) -> Result<(W, u64), ApiError> {
    let mut stream = body.into_data_stream();
    let mut size = start;
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    loop {
        let chunk = stream.next().await;
        let done = chunk.is_none();
        if let Some(c) = chunk {
            let c = c.map_err(|e| ApiError::BlobUploadInvalid {
                what: format!("{what}: reading the request body: {e}"),
            })?;
            size += c.len() as u64;
            if size > limit {
                return Err(ApiError::SizeInvalid {
                    what: format!("{what}: more than {limit} bytes"),
                });
            }
            buf.extend_from_slice(&c);
        }
        if buf.len() >= WRITE_BATCH || (done && !buf.is_empty()) {
            let data = std::mem::replace(&mut buf, Vec::with_capacity(WRITE_BATCH));
            let what2 = what.to_owned();
            w = blocking(move || {
                w.write_all(&data)
                    .map_err(|e| ApiError::Internal(format!("{what2}: writing: {e}")))?;
                Ok(w)
            })
            .await?;
        }
        if done {
            return Ok((w, size));
        }
    }
}

fn store_error(e: StoreError, d: &Digest) -> ApiError {
    match e {
        StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => {
            ApiError::DigestInvalid {
                digest: format!("{d} (the bytes uploaded do not match it: {e})"),
            }
        }
        e => e.into(),
    }
}

/// The registry a push is stored under: `--registry` when the operator set one, else
/// the host the client addressed (what `docker push 127.0.0.1:5050/ns/app` names), which
/// must carry this server's own port. Neither containerd's `?ns=` nor the registry of
/// images already in the store is taken: a client could otherwise overwrite what was
/// pulled from `docker.io` (and so what a containerd mirror serves for it) by sending
/// `Host: docker.io`.
pub(crate) fn push_registry(
    configured: Option<&str>,
    own_port: u16,
    headers: &HeaderMap,
    name: &str,
) -> Result<String, ApiError> {
    if let Some(r) = configured {
        return Ok(r.to_owned());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let port_ok = host
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        == Some(own_port);
    match Reference::parse(&format!("{host}/{name}:x")) {
        Ok(r) if port_ok && r.registry() == host => Ok(host),
        _ => Err(ApiError::NameInvalid {
            name: format!(
                "{host}/{name} (a push is stored under the host:port the client addressed, \
                 which must be this server's port {own_port}; behind a proxy start the server \
                 with --registry)"
            ),
        }),
    }
}

/// What a write request works with: the upload sessions, a leased store handle, and the
/// views to refresh once a manifest is in.
pub(crate) struct Writer<'a> {
    pub(crate) uploads: &'a Uploads,
    pub(crate) store: Store,
    pub(crate) views: &'a ViewCache,
}

/// Serve one write request of `registry/name`.
pub(crate) async fn handle(
    writer: Writer<'_>,
    registry: String,
    name: &str,
    w: WriteOp,
    parts: &Parts,
    body: Body,
    blob_visible: impl FnOnce(&str, &Digest) -> bool,
) -> Result<Response, ApiError> {
    let Writer {
        uploads,
        store,
        views,
    } = writer;
    let max = uploads.opts.max_blob_size;
    match (w, &parts.method) {
        (WriteOp::Start, &Method::POST) => {
            if let (Some(d), Some(from)) = (digest_param(parts, "mount")?, q(parts, "from")) {
                let (s2, d2) = (store.clone(), d.clone());
                let present = blocking(move || Ok(s2.has_blob(&d2)?.is_some())).await?;
                if present && (blob_visible(&from, &d) || uploads.is_linked(&registry, &from, &d)) {
                    uploads.link(&registry, name, &d);
                    return Ok(blob_created(name, &d));
                }
                // Not mountable: an ordinary upload session, as the spec says.
            }
            if let Some(d) = digest_param(parts, "digest")? {
                let r = monolithic(store, name, &d, body, max).await?;
                uploads.link(&registry, name, &d);
                return Ok(r);
            }
            let id = uploads.open(&registry, name)?;
            Ok(session_answer(StatusCode::ACCEPTED, name, &id, 0))
        }
        (WriteOp::Session(id), m) => {
            let session = uploads.get(&id)?;
            let mut s = session.lock().await;
            // A session is used only under the repository it was opened for.
            if s.registry != registry || s.name != name {
                return Err(ApiError::BlobUploadUnknown { id });
            }
            s.last = Instant::now();
            match *m {
                Method::GET => Ok(session_answer(StatusCode::NO_CONTENT, name, &id, s.size)),
                Method::DELETE => {
                    drop(s);
                    uploads.close(&id);
                    Ok(answer(StatusCode::NO_CONTENT))
                }
                Method::PATCH | Method::PUT => {
                    if let Some(cr) = parts
                        .headers
                        .get(header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                    {
                        let start = cr
                            .trim()
                            .trim_start_matches("bytes ")
                            .split('-')
                            .next()
                            .and_then(|n| n.trim().parse::<u64>().ok());
                        if start != Some(s.size) {
                            let mut r = session_answer(
                                StatusCode::RANGE_NOT_SATISFIABLE,
                                name,
                                &id,
                                s.size,
                            );
                            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                            return Ok(r);
                        }
                    }
                    let file = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&s.path)
                        .map_err(|e| ApiError::Internal(format!("{}: {e}", s.path.display())))?;
                    let appended = append(body, file, s.size, max, &format!("upload {id}")).await;
                    let (_, size) = match appended {
                        Ok(x) => x,
                        Err(e) => {
                            drop(s);
                            uploads.close(&id);
                            return Err(e);
                        }
                    };
                    s.size = size;
                    if *m == Method::PATCH {
                        return Ok(session_answer(StatusCode::ACCEPTED, name, &id, size));
                    }
                    let Some(d) = digest_param(parts, "digest")? else {
                        return Err(ApiError::DigestInvalid {
                            digest: "(none: the final PUT needs ?digest=)".into(),
                        });
                    };
                    let path = s.path.clone();
                    let d2 = d.clone();
                    let res = blocking(move || {
                        let mut f = File::open(&path)
                            .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
                        let mut w = store
                            .blob_writer(&d2, Some(size))
                            .map_err(|e| store_error(e, &d2))?;
                        std::io::copy(&mut f, &mut w)
                            .map_err(|e| ApiError::Internal(format!("copying upload: {e}")))?;
                        w.commit().map_err(|e| store_error(e, &d2))
                    })
                    .await;
                    drop(s);
                    uploads.close(&id);
                    res?;
                    uploads.link(&registry, name, &d);
                    Ok(blob_created(name, &d))
                }
                _ => Err(ApiError::Unsupported {
                    what: format!("{m} on an upload"),
                }),
            }
        }
        (WriteOp::Manifest(reference), &Method::PUT) => {
            put_manifest(views, store, &registry, name, reference, parts, body).await
        }
        (_, m) => Err(ApiError::Unsupported {
            what: format!("{m} on this route"),
        }),
    }
}

async fn monolithic(
    store: Store,
    name: &str,
    d: &Digest,
    body: Body,
    max: u64,
) -> Result<Response, ApiError> {
    let (s2, d2) = (store.clone(), d.clone());
    let w = blocking(move || s2.blob_writer(&d2, None).map_err(|e| store_error(e, &d2))).await?;
    let (w, _) = append(body, w, 0, max, &format!("blob {d}")).await?;
    let d2 = d.clone();
    blocking(move || w.commit().map_err(|e| store_error(e, &d2))).await?;
    Ok(blob_created(name, d))
}

async fn put_manifest(
    views: &ViewCache,
    store: Store,
    registry: &str,
    name: &str,
    reference: ManifestRef,
    parts: &Parts,
    body: Body,
) -> Result<Response, ApiError> {
    let (bytes, _) = append(body, Vec::new(), 0, MAX_MANIFEST_SIZE, "manifest").await?;
    let declared = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| MediaType::parse(v.split(';').next().unwrap_or("").trim()));
    let invalid = |what: String| ApiError::ManifestInvalid { what };
    let (manifest, media_type) =
        Manifest::parse(&bytes, declared.as_ref()).map_err(|e| invalid(e.to_string()))?;
    let digest = match &reference {
        ManifestRef::Digest(d) => {
            Manifest::verify_digest(&bytes, &media_type, d).map_err(|e| {
                ApiError::DigestInvalid {
                    digest: format!("{d}: {e}"),
                }
            })?;
            d.clone()
        }
        ManifestRef::Tag(_) => {
            Manifest::digest_of(&bytes, &media_type).map_err(|e| invalid(e.to_string()))?
        }
    };
    let name_ref = match &reference {
        ManifestRef::Tag(t) => Some(Reference::parse(&format!("{registry}/{name}:{t}")).map_err(
            |e| ApiError::NameInvalid {
                name: format!("{registry}/{name}: {e}"),
            },
        )?),
        ManifestRef::Digest(_) => None,
    };
    let desc = Descriptor::new(media_type.clone(), digest.clone(), bytes.len() as u64);
    let source = format!("{registry}/{name}@{digest}");
    // What to record: the image itself; for an index, each of its image manifests (all
    // must be there: pushed by digest before the index), the tag on the host's platform.
    let commits: Vec<ImageCommit> = match &manifest {
        Manifest::Image(_) => vec![ImageCommit {
            name: name_ref,
            manifest: desc.clone(),
            index: None,
            source: Some(source),
        }],
        Manifest::Index(idx) => {
            let children: Vec<&Descriptor> = idx.manifests.iter().filter(|d| storable(d)).collect();
            let named = idx
                .choose(&Platform::host())
                .ok()
                .filter(|d| storable(d))
                .or(children.first().copied())
                .cloned()
                .ok_or_else(|| ApiError::ManifestInvalid {
                    what: format!("index {digest} lists no image manifest"),
                })?;
            let mut v: Vec<ImageCommit> = children
                .iter()
                .filter(|d| d.digest != named.digest)
                .map(|d| ImageCommit {
                    name: None,
                    manifest: (*d).clone(),
                    index: Some(desc.clone()),
                    source: Some(source.clone()),
                })
                .collect();
            // The named one last: the tag moves only once every variant is recorded.
            v.push(ImageCommit {
                name: name_ref,
                manifest: named,
                index: Some(desc.clone()),
                source: Some(source.clone()),
            });
            v
        }
        Manifest::Schema1(_) => {
            return Err(ApiError::Unsupported {
                what: format!("pushing a {media_type} (Docker schema 1) is not supported"),
            });
        }
    };
    let d2 = digest.clone();
    blocking(move || {
        store
            .put_blob(&d2, &bytes)
            .map_err(|e| store_error(e, &d2))?;
        for c in commits {
            store.commit_image(c).map_err(|e| match e {
                StoreError::BlobNotFound { digest, .. } => ApiError::ManifestBlobUnknown { digest },
                StoreError::SizeMismatch { .. }
                | StoreError::InvalidDocument { .. }
                | StoreError::NotAnImageManifest { .. }
                | StoreError::IndexMissingManifest { .. }
                | StoreError::LayerCountMismatch { .. }
                | StoreError::TooLarge { .. } => ApiError::ManifestInvalid {
                    what: e.to_string(),
                },
                e => e.into(),
            })?;
        }
        Ok(())
    })
    .await?;
    views.invalidate();
    let mut r = answer(StatusCode::CREATED);
    location(&mut r, &format!("/v2/{name}/manifests/{digest}"));
    r.headers_mut().insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest.to_string()).expect("a digest is a valid header value"),
    );
    Ok(r)
}

/// An index entry recorded as an image: an image manifest, not an attestation or an
/// artifact (those are kept in the index's bytes, not as images).
fn storable(d: &Descriptor) -> bool {
    d.media_type.is_image_manifest()
        && d.artifact_type.is_none()
        && d.annotation(ANNOTATION_REFERENCE_TYPE) != Some("attestation-manifest")
}
