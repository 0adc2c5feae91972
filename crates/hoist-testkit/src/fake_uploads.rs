//! The push side of the [`FakeRegistry`](super::FakeRegistry), off until
//! [`FakeRegistry::accept_pushes`](super::FakeRegistry::accept_pushes) turns it on: blob
//! uploads (monolithic, chunked, streamed), cross-repository mounts and manifest puts, as
//! Distribution answers them, with knobs to misbehave.
//!
//! - `POST /v2/REPO/blobs/uploads/`: 202, a relative `Location`
//!   (`/v2/REPO/blobs/uploads/ID?_state=N`, the state changing with every answer),
//!   `Range: 0-0`, `Docker-Upload-UUID`. With `?mount=DIGEST&from=FROM`: 201 when FROM
//!   has the blob (copied, no bytes move), 401 (with token auth on: a Bearer challenge
//!   naming both scopes, as Distribution does) or 403 when FROM is denied
//!   ([`FakeRegistry::deny_mounts_from`](super::FakeRegistry::deny_mounts_from)), else a
//!   normal 202 upload.
//! - `PATCH` a session: appends the body. With `Content-Range: A-B` the range must start at
//!   the bytes held and match the body's length (else 416); with
//!   [`FakeRegistry::reject_chunked_uploads`](super::FakeRegistry::reject_chunked_uploads)
//!   any PATCH carrying `Content-Range` gets 416. 202 with `Range: 0-END` and the next
//!   `Location`.
//! - `PUT` a session `?digest=D`: appends the body, checks the sha256 (400 `DIGEST_INVALID`
//!   otherwise), stores the blob: 201 with `Docker-Content-Digest`.
//! - `GET` a session: 204 with `Range`; `DELETE`: 204. An unknown session: 404
//!   `BLOB_UPLOAD_UNKNOWN`.
//! - `PUT /v2/REPO/manifests/REFERENCE`: stores the bytes with their `Content-Type` (under
//!   the reference and the digest; a digest reference must match): 201.
//!
//! Every push request is recorded ([`UploadRecord`]), with its `Content-Range` and the
//! length of its body.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, header};

use super::{FakeResponse, FakeState, StoredManifest};
use crate::images::sha256_digest;

/// One push request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// `POST`, `PATCH`, `PUT`, `GET`, `DELETE`.
    pub method: String,
    /// The path as sent.
    pub path: String,
    /// The query, if any.
    pub query: Option<String>,
    /// The `Content-Range` header, if any.
    pub content_range: Option<String>,
    /// Bytes in the request body.
    pub body_len: u64,
    /// The status answered.
    pub status: u16,
}

/// The push state of the fake.
#[derive(Debug, Default)]
pub(super) struct Uploads {
    pub enabled: bool,
    pub reject_chunked: bool,
    pub deny_mount_from: HashSet<String>,
    sessions: HashMap<String, Vec<u8>>,
    seq: u64,
    state: u64,
    pub log: Vec<UploadRecord>,
}

/// Whether `method path` is a push request the fake handles when pushes are on.
pub(super) fn is_push(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return false;
    };
    if rest.contains("/blobs/uploads/") || rest.ends_with("/blobs/uploads") {
        return true;
    }
    method == Method::PUT && rest.contains("/manifests/")
}

/// Answer a push request (see the module docs).
pub(super) fn answer(
    st: &mut FakeState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> FakeResponse {
    let content_range = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok());
    respond(st, method, path, query, content_range, headers, body)
}

/// Record a push request (whatever answered it: the push side, a fault, a route).
pub(super) fn record(
    st: &mut FakeState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
    status: u16,
) {
    if !st.uploads.enabled || !is_push(method, path) {
        return;
    }
    st.uploads.log.push(UploadRecord {
        method: method.as_str().to_string(),
        path: path.to_string(),
        query: query.map(str::to_string),
        content_range: headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body_len: body.len() as u64,
        status,
    });
}

fn param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// `%3A` → `:` (the only escape a digest or repository needs here).
fn unescape(s: &str) -> String {
    s.replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%2F", "/")
        .replace("%2f", "/")
}

fn respond(
    st: &mut FakeState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    content_range: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> FakeResponse {
    let rest = &path["/v2/".len()..];
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return put_manifest(st, repo, reference, headers, body);
    }
    let (repo, id) = match rest.split_once("/blobs/uploads") {
        Some((repo, tail)) => (repo, tail.trim_start_matches('/')),
        None => return FakeResponse::error(404, "NAME_UNKNOWN", "unknown path"),
    };
    if id.is_empty() {
        if method != Method::POST {
            return FakeResponse::error(405, "UNSUPPORTED", "POST to start an upload");
        }
        return start(st, repo, query);
    }
    let Some(data) = st.uploads.sessions.get_mut(id) else {
        return FakeResponse::error(
            404,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry",
        );
    };
    match *method {
        Method::PATCH => {
            if let Some(cr) = content_range {
                if st.uploads.reject_chunked {
                    return FakeResponse::error(
                        416,
                        "RANGE_INVALID",
                        "chunked uploads are not supported here",
                    );
                }
                let ok = cr.split_once('-').is_some_and(|(a, b)| {
                    match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                        (Ok(a), Ok(b)) => {
                            a == data.len() as u64 && b >= a && b - a + 1 == body.len() as u64
                        }
                        _ => false,
                    }
                });
                if !ok {
                    return FakeResponse::error(416, "RANGE_INVALID", "invalid content range");
                }
            }
            data.extend_from_slice(body);
            let len = data.len();
            session_answer(st, 202, repo, id, len)
        }
        Method::GET => {
            let len = data.len();
            session_answer(st, 204, repo, id, len)
        }
        Method::DELETE => {
            st.uploads.sessions.remove(id);
            FakeResponse::status(204)
        }
        Method::PUT => {
            data.extend_from_slice(body);
            let Some(digest) = param(query, "digest").map(unescape) else {
                return FakeResponse::error(400, "DIGEST_INVALID", "digest missing");
            };
            let actual = sha256_digest(data);
            if actual != digest {
                return FakeResponse::error(
                    400,
                    "DIGEST_INVALID",
                    "provided digest did not match uploaded content",
                );
            }
            let data = st.uploads.sessions.remove(id).unwrap_or_default();
            st.blobs
                .insert((repo.to_string(), digest.clone()), Bytes::from(data));
            FakeResponse::status(201)
                .header("Location", &format!("/v2/{repo}/blobs/{digest}"))
                .header("Docker-Content-Digest", &digest)
        }
        _ => FakeResponse::error(405, "UNSUPPORTED", "method not allowed on an upload"),
    }
}

fn start(st: &mut FakeState, repo: &str, query: Option<&str>) -> FakeResponse {
    if let (Some(digest), Some(from)) = (param(query, "mount"), param(query, "from")) {
        let (digest, from) = (unescape(digest), unescape(from));
        if st.uploads.deny_mount_from.contains(&from) {
            if st.auth.is_some() {
                let realm = format!(
                    "http://{}/token",
                    st.registry_addr.map(|a| a.to_string()).unwrap_or_default()
                );
                let challenge = format!(
                    "Bearer realm=\"{realm}\",service=\"fake-registry\",scope=\"repository:{repo}:pull,push repository:{from}:pull\",error=\"insufficient_scope\""
                );
                return FakeResponse::error(401, "UNAUTHORIZED", "authentication required")
                    .header("WWW-Authenticate", &challenge);
            }
            return FakeResponse::error(
                403,
                "DENIED",
                "requested access to the resource is denied",
            );
        }
        if let Some(b) = st.blobs.get(&(from, digest.clone())).cloned() {
            st.blobs.insert((repo.to_string(), digest.clone()), b);
            return FakeResponse::status(201)
                .header("Location", &format!("/v2/{repo}/blobs/{digest}"))
                .header("Docker-Content-Digest", &digest);
        }
    }
    st.uploads.seq += 1;
    let id = format!("u{}", st.uploads.seq);
    st.uploads.sessions.insert(id.clone(), Vec::new());
    session_answer(st, 202, repo, &id, 0)
}

fn session_answer(
    st: &mut FakeState,
    status: u16,
    repo: &str,
    id: &str,
    len: usize,
) -> FakeResponse {
    st.uploads.state += 1;
    FakeResponse::status(status)
        .header(
            "Location",
            &format!("/v2/{repo}/blobs/uploads/{id}?_state=s{}", st.uploads.state),
        )
        .header("Range", &format!("0-{}", len.saturating_sub(1)))
        .header("Docker-Upload-UUID", id)
}

fn put_manifest(
    st: &mut FakeState,
    repo: &str,
    reference: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> FakeResponse {
    let digest = sha256_digest(body);
    if reference.contains(':') && reference != digest {
        return FakeResponse::error(400, "DIGEST_INVALID", "manifest digest did not match");
    }
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let m = StoredManifest {
        media_type,
        bytes: body.clone(),
        digest: digest.clone(),
    };
    st.manifests
        .insert((repo.to_string(), digest.clone()), m.clone());
    st.manifests
        .insert((repo.to_string(), reference.to_string()), m);
    FakeResponse::status(201)
        .header("Location", &format!("/v2/{repo}/manifests/{digest}"))
        .header("Docker-Content-Digest", &digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_paths_and_params() {
        assert!(is_push(&Method::POST, "/v2/a/b/blobs/uploads/"));
        assert!(is_push(&Method::PATCH, "/v2/a/blobs/uploads/u1"));
        assert!(is_push(&Method::PUT, "/v2/a/manifests/v1"));
        assert!(!is_push(&Method::GET, "/v2/a/manifests/v1"));
        assert!(!is_push(&Method::GET, "/v2/a/blobs/sha256:x"));
        assert_eq!(
            param(Some("mount=sha256%3Aab&from=x%2Fy"), "from"),
            Some("x%2Fy")
        );
        assert_eq!(unescape("sha256%3Aab"), "sha256:ab");
        assert_eq!(param(Some("_state=1"), "digest"), None);
    }
}
