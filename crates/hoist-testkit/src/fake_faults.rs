//! Per-request faults of the [`FakeRegistry`](super::FakeRegistry), its Range support, its
//! token auth and its object-storage listener; `plan` is where each request's answer is
//! decided (called by `Inner::respond`).
//!
//! A fault is injected with a rule: which requests it hits ([`Target`]), how many matching
//! requests pass first ([`FaultRule::skip`]) and how many get it ([`FaultRule::times`], or
//! [`FaultRule::forever`]). Rules are tried in the order they were injected; a request gets
//! at most one fault.
//!
//! ```no_run
//! use hoist_testkit::fake::{Fault, FakeRegistry, RetryAfter};
//! let fake = FakeRegistry::start();
//! let digest = "sha256:…";
//! // The first GET of the blob breaks off after 1 MiB; the resume works.
//! fake.inject(Fault::ResetAfter(1 << 20).on_blob(digest));
//! // Two 503s with Retry-After: 1 on any request, then normal service.
//! fake.inject(Fault::RetryAfter { status: 503, after: RetryAfter::Seconds(1) }.anywhere().times(2));
//! // Every blob is redirected to the fake's storage listener (another port).
//! fake.inject(Fault::Redirect.on_any_blob().forever());
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};

use super::{FakeResponse, FakeState, Plan, serve, uploads};

/// The answer to one request, faults included.
pub(super) fn plan(
    st: &mut FakeState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    (range, authorization): (Option<&str>, Option<&str>),
    (headers, body): (&HeaderMap, &Bytes),
    storage: bool,
) -> Plan {
    let info = ReqInfo {
        method: method.as_str(),
        path,
        range,
        blob: blob_of(path),
        storage,
    };
    if storage {
        let sig = query
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sig=")))
            .and_then(|n| n.parse::<u64>().ok());
        let valid = match sig {
            Some(n) if info.blob.is_some() => {
                let uses = st.sig_uses.entry(n).or_default();
                *uses += 1;
                st.presigned_uses.is_none_or(|max| *uses <= max)
            }
            _ => false,
        };
        if !valid {
            return Plan::plain(
                FakeResponse::status(403)
                    .header("Content-Type", "application/xml")
                    .body("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"),
            );
        }
    } else if let Some(auth) = st.auth {
        if path == "/token" {
            st.tokens_issued += 1;
            let token = format!("fake-token-{}", st.tokens_issued);
            st.tokens.insert(token.clone(), 0);
            let body = serde_json::json!({"token": token, "expires_in": 300});
            return Plan::plain(
                FakeResponse::ok(body.to_string()).header("Content-Type", "application/json"),
            );
        }
        let ok = !auth.reject_all
            && authorization
                .and_then(|a| a.strip_prefix("Bearer "))
                .and_then(|t| st.tokens.get_mut(t))
                .is_some_and(|uses| {
                    *uses += 1;
                    auth.uses_per_token.is_none_or(|max| *uses <= max)
                });
        if !ok {
            let realm = format!(
                "http://{}/token",
                st.registry_addr.map(|a| a.to_string()).unwrap_or_default()
            );
            let repo = path
                .strip_prefix("/v2/")
                .and_then(|r| {
                    r.rsplit_once("/blobs/")
                        .or_else(|| r.rsplit_once("/manifests/"))
                })
                .map(|(repo, _)| repo);
            let mut challenge = format!("Bearer realm=\"{realm}\",service=\"fake-registry\"");
            if let Some(repo) = repo {
                let actions = if matches!(*method, Method::GET | Method::HEAD) {
                    "pull"
                } else {
                    "pull,push"
                };
                challenge.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
            }
            return Plan::plain(
                FakeResponse::error(401, "UNAUTHORIZED", "authentication required")
                    .header("WWW-Authenticate", &challenge),
            );
        }
    }
    let fault = st
        .faults
        .iter_mut()
        .filter(|r| r.matches(&info))
        .find_map(|r| r.take().then(|| r.fault.clone()));
    match &fault {
        Some(Fault::Status(code)) => {
            return Plan::plain(FakeResponse::error(*code, "FAULT", "injected fault"));
        }
        Some(Fault::RetryAfter { status, after }) => {
            return Plan::plain(
                FakeResponse::error(*status, "TOOMANYREQUESTS", "injected fault: slow down")
                    .header("Retry-After", &after.header_value()),
            );
        }
        Some(Fault::Redirect) => {
            if let (Some((repo, digest)), Some(addr)) = (info.blob, st.storage_addr) {
                st.next_sig += 1;
                let loc = format!(
                    "http://{addr}/storage/{repo}/blobs/{digest}?sig={}",
                    st.next_sig
                );
                return Plan::plain(FakeResponse::status(307).header("Location", &loc));
            }
        }
        _ => {}
    }
    let routed = !storage && st.routes.contains_key(path);
    let mut resp = if storage {
        let (repo, digest) = info.blob.expect("checked above");
        serve(st, method, &format!("/v2/{repo}/blobs/{digest}"))
    } else {
        match st.routes.get(path).cloned() {
            Some(r) => r,
            None if st.uploads.enabled && uploads::is_push(method, path) => {
                uploads::answer(st, method, path, query, headers, body)
            }
            None => serve(st, method, path),
        }
    };
    let mut shared = None;
    if let Some((repo, digest)) = info.blob.filter(|_| !routed && resp.status == 200) {
        let stored = st
            .blobs
            .get(&(repo.to_string(), digest.to_string()))
            .cloned()
            .unwrap_or_default();
        let ranged = if method == Method::GET { range } else { None };
        let (r, b) = apply_range(resp, stored, ranged, fault.as_ref());
        resp = r;
        shared = Some(b);
    }
    if fault == Some(Fault::WrongBytes) {
        match &mut shared {
            Some(b) if !b.is_empty() => {
                let mut v = b.to_vec();
                let mid = v.len() / 2;
                v[mid] ^= 0x55;
                *b = Bytes::from(v);
            }
            _ if !resp.body.is_empty() => {
                let mid = resp.body.len() / 2;
                resp.body[mid] ^= 0x55;
            }
            _ => {}
        }
    }
    let count = info
        .blob
        .filter(|_| matches!(resp.status, 200 | 206))
        .map(|(_, d)| d.to_string());
    let (body, delay) = match fault {
        Some(Fault::ResetAfter(n)) => (BodyFault::ResetAfter(n), None),
        Some(Fault::ContentLength(n)) => (BodyFault::ContentLength(n), None),
        Some(Fault::Truncate(n)) => (BodyFault::Truncate(n), None),
        Some(Fault::Drip(d)) => (BodyFault::Drip(d), None),
        Some(Fault::StallAfter(n)) => (BodyFault::StallAfter(n), None),
        Some(Fault::Throttle(rate)) => (BodyFault::Throttle(rate.max(1)), None),
        Some(Fault::Delay(d)) => (BodyFault::None, Some(d)),
        _ => (BodyFault::None, None),
    };
    Plan {
        resp,
        shared,
        body,
        count,
        delay,
    }
}

/// A `Retry-After` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: N` (seconds).
    Seconds(u64),
    /// `Retry-After: <HTTP date>` (IMF-fixdate, whole seconds).
    Date(SystemTime),
}

impl RetryAfter {
    /// The header value.
    pub fn header_value(&self) -> String {
        match self {
            RetryAfter::Seconds(n) => n.to_string(),
            RetryAfter::Date(t) => http_date(*t),
        }
    }
}

/// One misbehaviour of the fake registry for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (with a Distribution-style JSON error body).
    Status(u16),
    /// Answer `status` (429 or 503, usually) with `Retry-After`.
    RetryAfter {
        /// The status.
        status: u16,
        /// The header's value.
        after: RetryAfter,
    },
    /// Declare the full `Content-Length`, send this many body bytes, then break the
    /// connection (as a reset does: the client sees an incomplete body).
    ResetAfter(u64),
    /// Declare `Content-Length: N`: smaller than the body, the first N bytes are sent as a
    /// complete response; larger, the body is sent and the connection broken.
    ContentLength(u64),
    /// Send only this many bytes, chunked and ended cleanly: a truncated body with no
    /// transport error (only a size check notices).
    Truncate(u64),
    /// Send the body one byte per interval (`Fault::Drip(Duration::from_secs(1))`: one
    /// byte a second).
    Drip(Duration),
    /// Send this many bytes, then nothing more (the connection stays open until the client
    /// goes away).
    StallAfter(u64),
    /// Send the body at most this many bytes per second (a per-connection bandwidth cap,
    /// like a throttled CDN or a long-distance link).
    Throttle(u64),
    /// Send the right length with one byte changed: content that is not the digest's.
    WrongBytes,
    /// Answer 307 to the fake's storage listener (another port on 127.0.0.1, so another
    /// origin), with a fresh `?sig=N`, as registries do to presigned object-storage URLs.
    Redirect,
    /// Answer a Range request with 200 and the whole body.
    IgnoreRange,
    /// Answer a Range request with 206 and a `Content-Range` (and body) one byte further
    /// than asked.
    WrongContentRange,
    /// Wait this long before answering (the answer itself is normal).
    Delay(Duration),
}

/// Which requests a rule hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every request except `/token`.
    Any,
    /// Requests whose path is exactly this (registry listener).
    Path(String),
    /// GETs and HEADs of this blob digest, on the registry and (except [`Fault::Redirect`])
    /// on the storage listener.
    Blob(String),
    /// Every blob request.
    AnyBlob,
    /// Every manifest request.
    Manifests,
    /// Push requests with this method (`POST`, `PATCH`, `PUT`, `GET`, `DELETE`) to
    /// `/v2/REPO/blobs/uploads/…` (registry listener).
    Upload(String),
}

/// A fault, its target and its count (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub(super) fault: Fault,
    pub(super) target: Target,
    pub(super) skip: u64,
    pub(super) times: Option<u64>,
    pub(super) ranged_only: bool,
    pub(super) seen: u64,
}

impl Fault {
    /// [`Target::Upload`]: push requests with `method`.
    pub fn on_upload(self, method: &str) -> FaultRule {
        self.on(Target::Upload(method.to_string()))
    }
    /// A rule hitting the first request to `target` (change with [`FaultRule::times`]).
    pub fn on(self, target: Target) -> FaultRule {
        FaultRule {
            fault: self,
            target,
            skip: 0,
            times: Some(1),
            ranged_only: false,
            seen: 0,
        }
    }
    /// [`Target::Blob`].
    pub fn on_blob(self, digest: &str) -> FaultRule {
        self.on(Target::Blob(digest.to_string()))
    }
    /// [`Target::Path`].
    pub fn on_path(self, path: &str) -> FaultRule {
        self.on(Target::Path(path.to_string()))
    }
    /// [`Target::AnyBlob`].
    pub fn on_any_blob(self) -> FaultRule {
        self.on(Target::AnyBlob)
    }
    /// [`Target::Manifests`].
    pub fn on_manifests(self) -> FaultRule {
        self.on(Target::Manifests)
    }
    /// [`Target::Any`].
    pub fn anywhere(self) -> FaultRule {
        self.on(Target::Any)
    }
}

impl FaultRule {
    /// Hit `n` matching requests (after the skipped ones), then stop.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.times = Some(n);
        self
    }
    /// Hit every matching request (after the skipped ones).
    pub fn forever(mut self) -> FaultRule {
        self.times = None;
        self
    }
    /// Let the first `n` matching requests pass.
    pub fn skip(mut self, n: u64) -> FaultRule {
        self.skip = n;
        self
    }
    /// Match only requests that carry a `Range` header.
    pub fn ranged_only(mut self) -> FaultRule {
        self.ranged_only = true;
        self
    }

    /// Whether the rule matches `req` (counting nothing).
    pub(super) fn matches(&self, req: &ReqInfo<'_>) -> bool {
        if self.ranged_only && req.range.is_none() {
            return false;
        }
        if req.storage && self.fault == Fault::Redirect {
            return false;
        }
        match &self.target {
            Target::Any => true,
            Target::Path(p) => !req.storage && req.path == p,
            Target::Blob(d) => req.blob.is_some_and(|(_, b)| b == d),
            Target::AnyBlob => req.blob.is_some(),
            Target::Manifests => !req.storage && req.path.contains("/manifests/"),
            Target::Upload(m) => {
                !req.storage && req.path.contains("/blobs/uploads") && req.method == m
            }
        }
    }

    /// Count a matching request; true when it gets the fault.
    pub(super) fn take(&mut self) -> bool {
        self.seen += 1;
        if self.seen <= self.skip {
            return false;
        }
        self.times.is_none_or(|t| self.seen - self.skip <= t)
    }
}

/// What the fake knows about a request when choosing faults.
#[derive(Debug)]
pub(super) struct ReqInfo<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub range: Option<&'a str>,
    /// (repository, digest) for blob requests.
    pub blob: Option<(&'a str, &'a str)>,
    /// On the storage listener.
    pub storage: bool,
}

/// `(repo, digest)` of a registry blob path `/v2/REPO/blobs/DIGEST` or a storage path
/// `/storage/REPO/blobs/DIGEST`.
pub(super) fn blob_of(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("/v2/")
        .or_else(|| path.strip_prefix("/storage/"))?;
    let (repo, digest) = rest.rsplit_once("/blobs/")?;
    // Upload sessions (`/blobs/uploads/ID`) are not blobs.
    let upload = digest == "uploads" || digest.starts_with("uploads/");
    (!repo.is_empty() && !digest.is_empty() && !upload).then_some((repo, digest))
}

/// What the renderer does to a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum BodyFault {
    #[default]
    None,
    ResetAfter(u64),
    ContentLength(u64),
    Truncate(u64),
    Drip(Duration),
    StallAfter(u64),
    Throttle(u64),
}

/// A single `bytes=A-B` or `bytes=A-` range over a body of `len` bytes: `Some(Ok((a, b)))`
/// (inclusive), `Some(Err(()))` when unsatisfiable, `None` when not a single byte range
/// (then ignored, as HTTP allows).
pub(super) fn parse_range(v: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let a: u64 = a.trim().parse().ok()?;
    let b: Option<u64> = match b.trim() {
        "" => None,
        s => Some(s.parse().ok()?),
    };
    if a >= len || b.is_some_and(|b| b < a) {
        return Some(Err(()));
    }
    Some(Ok((a, b.unwrap_or(len - 1).min(len - 1))))
}

/// Apply Range (and the range faults) to a full blob answer whose bytes are `body`:
/// the answer's status and headers, and the bytes to send.
pub(super) fn apply_range(
    resp: FakeResponse,
    body: Bytes,
    range: Option<&str>,
    fault: Option<&Fault>,
) -> (FakeResponse, Bytes) {
    let len = body.len() as u64;
    let Some(r) = range else { return (resp, body) };
    if fault == Some(&Fault::IgnoreRange) {
        return (resp, body);
    }
    match parse_range(r, len) {
        None => (resp, body),
        Some(Err(())) => {
            let mut out = FakeResponse::error(416, "RANGE_INVALID", "range not satisfiable");
            out.headers
                .push(("Content-Range".into(), format!("bytes */{len}")));
            let b = Bytes::from(out.body.clone());
            (out, b)
        }
        Some(Ok((mut a, b))) => {
            if fault == Some(&Fault::WrongContentRange) && a < b {
                a += 1;
            }
            let mut out = resp;
            out.status = 206;
            out.headers
                .push(("Content-Range".into(), format!("bytes {a}-{b}/{len}")));
            (out, body.slice(a as usize..=b as usize))
        }
    }
}

/// Token auth of the fake: bearer tokens from its own `/token`, each valid for a number of
/// requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenAuth {
    /// Requests a token is good for (`None`: unlimited). After that, 401 with a fresh
    /// challenge, as when a token expires during a long pull.
    pub uses_per_token: Option<u64>,
    /// Refuse every token: an endless series of 401s.
    pub reject_all: bool,
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) of `t`, whole seconds.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WD[(days.rem_euclid(7)) as usize],
        MO[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let t = |s: u64| http_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(t(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(t(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(t(1_709_210_096), "Thu, 29 Feb 2024 12:34:56 GMT");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=90-200", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=5-1", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn rule_counts() {
        let mut r = Fault::Status(500).anywhere().skip(1).times(2);
        let got: Vec<bool> = (0..5).map(|_| r.take()).collect();
        assert_eq!(got, [false, true, true, false, false]);
        let mut r = Fault::Status(500).anywhere().forever();
        assert!((0..10).all(|_| r.take()));
    }

    #[test]
    fn blob_paths() {
        assert_eq!(blob_of("/v2/a/b/blobs/sha256:x"), Some(("a/b", "sha256:x")));
        assert_eq!(
            blob_of("/storage/a/blobs/sha256:x"),
            Some(("a", "sha256:x"))
        );
        assert_eq!(blob_of("/v2/a/manifests/x"), None);
        assert_eq!(blob_of("/v2/blobs/x"), None);
        assert_eq!(blob_of("/v2/a/blobs/uploads/u1"), None);
        assert_eq!(blob_of("/v2/a/blobs/uploads/"), None);
    }
}
