//! A small, scriptable Distribution registry + token server on 127.0.0.1:0, for tests.
//! Everything it serves and every request it sees is inspectable through [`St`].

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use sha2::Digest as _;

pub fn sha256(b: &[u8]) -> String {
    let h = sha2::Sha256::digest(b);
    let mut s = String::from("sha256:");
    for x in h.iter() {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    #[default]
    None,
    Basic,
    Bearer,
}

/// What the server does; change it at any time through `St::cfg`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub auth: AuthMode,
    /// Required credentials (Basic: on every request; Bearer: at the token endpoint).
    pub user: Option<(String, String)>,
    /// Accepted refresh token for `POST grant_type=refresh_token`.
    pub refresh_token: Option<String>,
    /// `GET /token` answers 405 (so clients must POST).
    pub token_get_disabled: bool,
    /// Realm advertised in challenges; default `http://127.0.0.1:PORT/token`.
    pub realm: Option<String>,
    /// Tags per page (0 = all at once).
    pub page_size: usize,
    /// Next links point to this origin instead of a relative path.
    pub next_link_origin: Option<String>,
    /// Blob GETs answer 307 to `{this}/blob/{digest}`.
    pub redirect_blobs_to: Option<String>,
    /// Blob bodies send one chunk then stall forever.
    pub stall_blobs: bool,
    /// Blob responses ignore Range.
    pub ignore_range: bool,
}

#[derive(Debug, Clone)]
pub struct Served {
    pub content_type: String,
    pub body: Bytes,
    /// `Docker-Content-Digest` to send; `None` = the true digest.
    pub dcd: Option<String>,
    /// Send without Content-Length (chunked).
    pub chunked: bool,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Default)]
pub struct St {
    pub cfg: Mutex<Config>,
    pub manifests: Mutex<HashMap<String, Served>>,
    pub blobs: Mutex<HashMap<String, Bytes>>,
    pub tags: Mutex<HashMap<String, Vec<String>>>,
    pub repos: Mutex<Vec<String>>,
    pub token_requests: AtomicUsize,
    pub tokens_log: Mutex<Vec<Seen>>,
    pub log: Mutex<Vec<Seen>>,
    pub issued: Mutex<HashSet<String>>,
    pub addr: Mutex<Option<SocketAddr>>,
}

impl St {
    pub fn cfg(&self, f: impl FnOnce(&mut Config)) {
        f(&mut self.cfg.lock().unwrap());
    }
    pub fn add_manifest(&self, repo: &str, reference: &str, served: Served) {
        self.manifests
            .lock()
            .unwrap()
            .insert(format!("{repo}|{reference}"), served);
    }
    pub fn add_blob(&self, data: &[u8]) -> String {
        let d = sha256(data);
        self.blobs
            .lock()
            .unwrap()
            .insert(d.clone(), Bytes::copy_from_slice(data));
        d
    }
    pub fn token_count(&self) -> usize {
        self.token_requests.load(Ordering::SeqCst)
    }
    pub fn revoke_tokens(&self) {
        self.issued.lock().unwrap().clear();
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub st: Arc<St>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(cfg: Config) -> Server {
        let st = Arc::new(St {
            cfg: Mutex::new(cfg),
            ..St::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *st.addr.lock().unwrap() = Some(addr);
        let app = Router::new().fallback(handle).with_state(st.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { addr, st, task }
    }

    /// `127.0.0.1:PORT`, as a registry name.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn resp(status: StatusCode) -> axum::http::response::Builder {
    Response::builder().status(status)
}

fn error(status: StatusCode, code: &str, msg: &str) -> Response {
    resp(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!(
            r#"{{"errors":[{{"code":"{code}","message":"{msg}","detail":null}}]}}"#
        )))
        .unwrap()
}

fn basic_ok(h: &HeaderMap, user: &Option<(String, String)>) -> bool {
    let Some((u, p)) = user else { return true };
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    );
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(want.as_str())
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

async fn handle(State(st): State<Arc<St>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let seen = Seen {
        method: method.to_string(),
        path: if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        },
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let cfg = st.cfg.lock().unwrap().clone();
    if path == "/token" {
        st.token_requests.fetch_add(1, Ordering::SeqCst);
        st.tokens_log.lock().unwrap().push(seen);
        return token(&st, &cfg, &method, &headers, &query, &body);
    }
    st.log.lock().unwrap().push(seen);
    if let Some(d) = path.strip_prefix("/blob/") {
        // The "object storage" side of a redirect.
        return blob(&st, &cfg, d, &headers);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no route");
    };
    // Authentication.
    let scope = scope_of(rest);
    match cfg.auth {
        AuthMode::None => {}
        AuthMode::Basic => {
            if !basic_ok(&headers, &cfg.user) || headers.get(header::AUTHORIZATION).is_none() {
                return resp(StatusCode::UNAUTHORIZED)
                    .header(header::WWW_AUTHENTICATE, r#"Basic realm="test registry""#)
                    .body(Body::from(
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                    ))
                    .unwrap();
            }
        }
        AuthMode::Bearer => {
            let ok = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| {
                    st.issued
                        .lock()
                        .unwrap()
                        .contains(&format!("{t}|{}", scope.clone().unwrap_or_default()))
                });
            if !ok {
                let addr = st.addr.lock().unwrap().unwrap();
                let realm = cfg
                    .realm
                    .clone()
                    .unwrap_or_else(|| format!("http://{addr}/token"));
                let mut ch = format!(r#"Bearer realm="{realm}",service="test-registry""#);
                if let Some(s) = &scope {
                    ch.push_str(&format!(r#",scope="{s}""#));
                }
                return resp(StatusCode::UNAUTHORIZED)
                    .header(header::WWW_AUTHENTICATE, ch)
                    .body(Body::from(
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                    ))
                    .unwrap();
            }
        }
    }
    if rest.is_empty() {
        return resp(StatusCode::OK).body(Body::from("{}")).unwrap();
    }
    if rest == "_catalog" {
        let repos = st.repos.lock().unwrap().clone();
        return paginate(&cfg, "/v2/_catalog", "repositories", repos, &query);
    }
    if let Some((repo, r)) = rest.rsplit_once("/manifests/") {
        let m = st
            .manifests
            .lock()
            .unwrap()
            .get(&format!("{repo}|{r}"))
            .cloned();
        let Some(m) = m else {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        let dcd = m.dcd.clone().unwrap_or_else(|| sha256(&m.body));
        let b = resp(StatusCode::OK)
            .header(header::CONTENT_TYPE, &m.content_type)
            .header("Docker-Content-Digest", dcd);
        if method == Method::HEAD {
            return b
                .header(header::CONTENT_LENGTH, m.body.len())
                .body(Body::empty())
                .unwrap();
        }
        if m.chunked {
            let chunks: Vec<Result<Bytes, std::io::Error>> = m
                .body
                .chunks(64 * 1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            return b
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .unwrap();
        }
        return b.body(Body::from(m.body)).unwrap();
    }
    if let Some((_repo, d)) = rest.rsplit_once("/blobs/") {
        if let Some(to) = &cfg.redirect_blobs_to {
            return resp(StatusCode::TEMPORARY_REDIRECT)
                .header(header::LOCATION, format!("{to}/blob/{d}"))
                .body(Body::empty())
                .unwrap();
        }
        return blob(&st, &cfg, d, &headers);
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        let Some(tags) = st.tags.lock().unwrap().get(repo).cloned() else {
            return error(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                "repository name not known",
            );
        };
        return paginate(&cfg, &format!("/v2/{repo}/tags/list"), "tags", tags, &query);
    }
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "no route")
}

fn scope_of(rest: &str) -> Option<String> {
    if rest.is_empty() {
        return None;
    }
    if rest == "_catalog" {
        return Some("registry:catalog:*".into());
    }
    for sep in ["/manifests/", "/blobs/", "/tags/list"] {
        if let Some(i) = rest.find(sep) {
            return Some(format!("repository:{}:pull", &rest[..i]));
        }
    }
    None
}

fn blob(st: &St, cfg: &Config, d: &str, headers: &HeaderMap) -> Response {
    let Some(data) = st.blobs.lock().unwrap().get(d).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        );
    };
    if cfg.stall_blobs {
        let first = data.slice(..data.len().min(1024));
        let s = futures_util::StreamExt::chain(
            futures_util::stream::iter([Ok::<_, std::io::Error>(first)]),
            futures_util::stream::pending(),
        );
        return resp(StatusCode::OK)
            .header(header::CONTENT_LENGTH, data.len())
            .body(Body::from_stream(s))
            .unwrap();
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .filter(|_| !cfg.ignore_range);
    if let Some((a, b)) = range {
        let a: usize = a.parse().unwrap();
        let b: usize = if b.is_empty() {
            data.len() - 1
        } else {
            b.parse::<usize>().unwrap().min(data.len() - 1)
        };
        return resp(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {a}-{b}/{}", data.len()),
            )
            .body(Body::from(data.slice(a..=b)))
            .unwrap();
    }
    resp(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(data))
        .unwrap()
}

fn paginate(
    cfg: &Config,
    path: &str,
    field: &str,
    mut items: Vec<String>,
    query: &str,
) -> Response {
    items.sort();
    let q = query_pairs(query);
    let last = q.iter().find(|(k, _)| k == "last").map(|(_, v)| v.clone());
    let n = q
        .iter()
        .find(|(k, _)| k == "n")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(cfg.page_size);
    let start = match &last {
        Some(l) => items.iter().position(|t| t > l).unwrap_or(items.len()),
        None => 0,
    };
    let page: Vec<String> = if n == 0 {
        items[start..].to_vec()
    } else {
        items[start..].iter().take(n).cloned().collect()
    };
    let mut b = resp(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
    if n > 0 && start + page.len() < items.len() {
        let origin = cfg.next_link_origin.clone().unwrap_or_default();
        let last = page.last().unwrap();
        b = b.header(
            header::LINK,
            format!(r#"<{origin}{path}?n={n}&last={last}>; rel="next""#),
        );
    }
    let body = serde_json::json!({ "name": "x", field: page });
    b.body(Body::from(body.to_string())).unwrap()
}

fn token(
    st: &St,
    cfg: &Config,
    method: &Method,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
) -> Response {
    let params = if *method == Method::POST {
        query_pairs(std::str::from_utf8(body).unwrap_or(""))
    } else {
        if cfg.token_get_disabled {
            return resp(StatusCode::METHOD_NOT_ALLOWED)
                .body(Body::empty())
                .unwrap();
        }
        query_pairs(query)
    };
    let get = |k: &str| params.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let authorized = if *method == Method::POST {
        match get("grant_type").as_deref() {
            Some("refresh_token") => {
                cfg.refresh_token.is_some() && get("refresh_token") == cfg.refresh_token
            }
            Some("password") => {
                cfg.user.is_none() || cfg.user.clone() == get("username").zip(get("password"))
            }
            _ => false,
        }
    } else {
        basic_ok(headers, &cfg.user)
            && (cfg.user.is_none() || headers.get(header::AUTHORIZATION).is_some())
    };
    if !authorized {
        return resp(StatusCode::UNAUTHORIZED)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"details":"incorrect username or password"}"#,
            ))
            .unwrap();
    }
    let n = st.token_requests.load(Ordering::SeqCst);
    let tok = format!("tok{n}");
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    {
        let mut issued = st.issued.lock().unwrap();
        issued.insert(format!("{tok}|"));
        for s in scopes {
            issued.insert(format!("{tok}|{s}"));
        }
    }
    let field = if *method == Method::POST {
        "access_token"
    } else {
        "token"
    };
    resp(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({ field: tok, "expires_in": 300, "issued_at": "2024-01-01T00:00:00Z" })
                .to_string(),
        ))
        .unwrap()
}
