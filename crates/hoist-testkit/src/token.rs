//! A Docker registry token server, as Distribution 2.8 verifies its tokens.
//!
//! The server runs axum on its own thread with its own tokio runtime, so it serves whether the
//! calling test is synchronous or async (and even while that test blocks on a child process).
//! It listens on `127.0.0.1` on a random port, plain HTTP.
//!
//! # Tokens
//! JWTs signed ES256 (P-256, `r || s`) whose header carries `x5c` = `[base64(DER of the signing
//! certificate)]`. The certificate is self-signed and is also the registry's `rootcertbundle`:
//! Distribution verifies the `x5c` leaf against that bundle, and Go's `x509.Verify` accepts a leaf
//! that is itself one of the roots. Claims: `iss`, `sub`, `aud` (= the service), `exp`, `nbf`, `iat`,
//! `jti`, `access: [{type, name, actions}]`.
//!
//! # Endpoints
//! - `GET /token?service=S&scope=repository:NAME:pull,push[&scope=...]&offline_token=true&client_id=C`,
//!   anonymous or with HTTP Basic credentials. Answers
//!   `{"token","access_token","expires_in","issued_at"}`, plus `refresh_token` when
//!   `offline_token=true` and the request was authenticated.
//! - `POST /token` with a form body, the OAuth2 flow of Docker: `grant_type=password` (`username`,
//!   `password`) or `grant_type=refresh_token` (`refresh_token`), with `client_id` (required),
//!   `service`, `scope` (space separated) and `access_type=offline` (asks for a refresh token on a
//!   password grant; a refresh grant always answers with its refresh token). Answers
//!   `{"access_token","token","expires_in","issued_at","scope","refresh_token"?}`.
//!
//! # Policy
//! Anonymous requests get `pull` on repositories not under `private/` and nothing else.
//! Authenticated users (default: `alice` / `wonderland`) get every action they ask for, on
//! everything (`registry:catalog:*` included). Bad credentials or an unknown refresh token: 401.
//! A `service` other than the configured one: 400.
//!
//! Every request is counted ([`TokenServer::stats`]) and recorded ([`TokenServer::requests`]), so
//! tests can assert that a client caches and reuses its tokens.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;

use crate::certs::TokenSigner;

/// Default user name of a token server.
pub const DEFAULT_USER: &str = "alice";
/// Default password of [`DEFAULT_USER`].
pub const DEFAULT_PASSWORD: &str = "wonderland";
/// Default `service` (the token audience), also put in the registry's config.
pub const DEFAULT_SERVICE: &str = "hoist-testkit-registry";
/// Default token issuer, also put in the registry's config.
pub const DEFAULT_ISSUER: &str = "hoist-testkit-token-issuer";

/// Configuration of a [`TokenServer`].
#[derive(Debug, Clone)]
pub struct TokenServerConfig {
    /// Accepted users and their passwords.
    pub users: BTreeMap<String, String>,
    /// Lifetime of the access tokens (`exp - iat` and `expires_in`). Note that Distribution
    /// allows 60 s of clock skew, so it still accepts a token up to a minute after `exp`.
    pub lifetime: Duration,
    /// The `service`, which becomes the token's `aud`.
    pub service: String,
    /// The token's `iss`.
    pub issuer: String,
}

impl Default for TokenServerConfig {
    fn default() -> Self {
        TokenServerConfig {
            users: BTreeMap::from([(DEFAULT_USER.to_string(), DEFAULT_PASSWORD.to_string())]),
            lifetime: Duration::from_secs(300),
            service: DEFAULT_SERVICE.to_string(),
            issuer: DEFAULT_ISSUER.to_string(),
        }
    }
}

impl TokenServerConfig {
    /// Adds (or replaces) a user.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.insert(name.to_string(), password.to_string());
        self
    }
    /// Removes every user, the default one included.
    pub fn no_users(mut self) -> Self {
        self.users.clear();
        self
    }
    /// Sets the access-token lifetime.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }
    /// Sets the service (audience).
    pub fn service(mut self, service: &str) -> Self {
        self.service = service.to_string();
        self
    }
    /// Sets the issuer.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.to_string();
        self
    }
}

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    /// Resource type: `repository`, `registry`...
    #[serde(rename = "type")]
    pub kind: String,
    /// Resource name: a repository path, or `catalog`.
    pub name: String,
    /// Granted actions: `pull`, `push`, `delete`, `*`.
    pub actions: Vec<String>,
}

/// How a token request authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// GET without credentials.
    Anonymous,
    /// GET with HTTP Basic credentials of this user.
    Basic(String),
    /// POST `grant_type=password` for this user.
    Password(String),
    /// POST `grant_type=refresh_token`, the refresh token belonging to this user.
    Refresh(String),
    /// Refused: bad credentials, unknown refresh token, or a malformed request.
    Rejected,
}

/// One request the token server answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// How it authenticated.
    pub grant: Grant,
    /// The `scope` values asked for, split into single scopes.
    pub scopes: Vec<String>,
    /// What the issued token grants (empty when rejected).
    pub granted: Vec<Access>,
    /// The `service` parameter, if any.
    pub service: Option<String>,
    /// The `client_id` parameter, if any.
    pub client_id: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
}

/// Request counters of a [`TokenServer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenStats {
    /// Every request to `/token`, whatever the outcome.
    pub total: u64,
    /// Tokens issued (2xx answers).
    pub issued: u64,
    /// Anonymous GETs answered with a token.
    pub anonymous: u64,
    /// GETs with valid Basic credentials.
    pub basic: u64,
    /// POSTs with `grant_type=password` and valid credentials.
    pub password: u64,
    /// POSTs with `grant_type=refresh_token` and a valid refresh token.
    pub refresh: u64,
    /// Requests refused (4xx).
    pub rejected: u64,
}

struct Inner {
    config: TokenServerConfig,
    signer: TokenSigner,
    log: Mutex<Vec<TokenRequest>>,
    refresh_tokens: Mutex<HashMap<String, String>>,
}

/// A running token server; stopped on drop.
pub struct TokenServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.addr)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl TokenServer {
    /// Starts a server with the default configuration. Panics with the reason when it cannot.
    pub fn start() -> TokenServer {
        TokenServer::start_with(TokenServerConfig::default())
    }

    /// Starts a server with `config`. Panics with the reason when it cannot.
    pub fn start_with(config: TokenServerConfig) -> TokenServer {
        TokenServer::try_start_with(config).unwrap_or_else(|e| panic!("token server: {e}"))
    }

    /// Starts a server with `config`.
    pub fn try_start_with(config: TokenServerConfig) -> std::io::Result<TokenServer> {
        let dir = tempfile::Builder::new()
            .prefix("hoist-testkit-token-")
            .tempdir()?;
        let signer = TokenSigner::generate(dir.path())?;
        let inner = Arc::new(Inner {
            config,
            signer,
            log: Mutex::new(Vec::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/token", get(get_token).post(post_token))
            .with_state(inner.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name(format!("hoist-testkit-token-{}", addr.port()))
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
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    // Not graceful: dropping the runtime afterwards cancels open connections, so a
                    // client that keeps a connection alive cannot hang the test's drop.
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = rx => {}
                    }
                });
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("token server thread died at start"))??;
        Ok(TokenServer {
            addr,
            inner,
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// The listening address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The realm URL, `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The configured service (token audience).
    pub fn service(&self) -> &str {
        &self.inner.config.service
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.config.issuer
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &TokenServerConfig {
        &self.inner.config
    }

    /// PEM file of the signing certificate: the registry's `rootcertbundle`.
    pub fn cert_bundle_path(&self) -> &Path {
        &self.inner.signer.cert_pem
    }

    /// DER of the signing certificate (what each token's `x5c` carries).
    pub fn signing_cert_der(&self) -> &[u8] {
        &self.inner.signer.cert_der
    }

    /// The signing public key, uncompressed P-256 point (`04 || x || y`), to verify tokens.
    pub fn public_key(&self) -> &[u8] {
        self.inner.signer.public_key()
    }

    /// Counters of the requests served so far.
    pub fn stats(&self) -> TokenStats {
        let log = self.inner.log.lock().expect("token log poisoned");
        let mut s = TokenStats::default();
        for r in log.iter() {
            s.total += 1;
            if (200..300).contains(&r.status) {
                s.issued += 1;
            } else {
                s.rejected += 1;
                continue;
            }
            match r.grant {
                Grant::Anonymous => s.anonymous += 1,
                Grant::Basic(_) => s.basic += 1,
                Grant::Password(_) => s.password += 1,
                Grant::Refresh(_) => s.refresh += 1,
                Grant::Rejected => {}
            }
        }
        s
    }

    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.inner.log.lock().expect("token log poisoned").clone()
    }

    /// Forgets the recorded requests (counters restart at zero). Refresh tokens stay valid.
    pub fn reset_stats(&self) {
        self.inner.log.lock().expect("token log poisoned").clear();
    }

    /// Forgets every refresh token issued so far: later refresh grants get 401.
    pub fn revoke_refresh_tokens(&self) {
        self.inner
            .refresh_tokens
            .lock()
            .expect("refresh map poisoned")
            .clear();
    }

    /// Mints a token for `subject` granting `access`, valid for `lifetime` from now, without
    /// going through HTTP (not counted).
    pub fn mint(&self, subject: &str, access: &[Access], lifetime: Duration) -> String {
        let now = unix_now();
        let claims = Claims {
            iss: &self.inner.config.issuer,
            sub: subject,
            aud: &self.inner.config.service,
            exp: now + lifetime.as_secs(),
            nbf: now,
            iat: now,
            jti: random_hex(16),
            access,
        };
        self.inner
            .sign_jwt(&serde_json::to_vec(&claims).expect("claims serialize"))
    }

    /// Signs arbitrary claims (a JSON object) with the server's key and `x5c` header: for tests of
    /// expired, foreign-audience or otherwise broken tokens.
    pub fn mint_claims(&self, claims: &serde_json::Value) -> String {
        self.inner
            .sign_jwt(&serde_json::to_vec(claims).expect("claims serialize"))
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Serialize)]
struct JwtHeader<'a> {
    typ: &'static str,
    alg: &'static str,
    x5c: [&'a str; 1],
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: &'a [Access],
}

impl Inner {
    fn sign_jwt(&self, claims_json: &[u8]) -> String {
        let x5c = STANDARD.encode(&self.signer.cert_der);
        let header = JwtHeader {
            typ: "JWT",
            alg: "ES256",
            x5c: [&x5c],
        };
        let header = serde_json::to_vec(&header).expect("header serializes");
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims_json)
        );
        let sig = self.signer.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Applies the policy to the requested scopes.
    fn grant(&self, user: Option<&str>, scopes: &[String]) -> Vec<Access> {
        let mut out: Vec<Access> = Vec::new();
        for scope in scopes {
            let Some((kind, name, actions)) = parse_scope(scope) else {
                continue;
            };
            let allowed: Vec<String> = actions
                .into_iter()
                .filter(|a| match user {
                    Some(_) => true,
                    None => kind == "repository" && !name.starts_with("private/") && a == "pull",
                })
                .collect();
            if allowed.is_empty() {
                continue;
            }
            if let Some(prev) = out.iter_mut().find(|a| a.kind == kind && a.name == name) {
                for a in allowed {
                    if !prev.actions.contains(&a) {
                        prev.actions.push(a);
                    }
                }
            } else {
                out.push(Access {
                    kind,
                    name,
                    actions: allowed,
                });
            }
        }
        out
    }

    fn check_user(&self, user: &str, password: &str) -> bool {
        self.config.users.get(user).is_some_and(|p| p == password)
    }

    fn record(&self, req: TokenRequest) {
        self.log.lock().expect("token log poisoned").push(req);
    }

    fn new_refresh_token(&self, user: &str) -> String {
        let t = random_hex(24);
        self.refresh_tokens
            .lock()
            .expect("refresh map poisoned")
            .insert(t.clone(), user.to_string());
        t
    }
}

/// Splits `type:name:actions`. The name may itself contain `:` (not for repositories, but
/// the grammar allows it), so the type ends at the first `:` and the actions start after the last.
fn parse_scope(scope: &str) -> Option<(String, String, Vec<String>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    if kind.is_empty() || name.is_empty() {
        return None;
    }
    let actions = actions
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    Some((kind.to_string(), name.to_string(), actions))
}

/// Parses `application/x-www-form-urlencoded` pairs (query strings and POST bodies).
fn form_pairs(input: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(input)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Every `scope` value, each split on spaces (OAuth2 joins several scopes with spaces).
fn scopes_of(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter(|s| !s.is_empty()).map(str::to_string))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("system random");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Formats seconds since the epoch as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let mut resp = json_response(
        status,
        serde_json::json!({
            "errors": [{"code": code, "message": message}],
            "error": code.to_ascii_lowercase(),
            "error_description": message,
        }),
    );
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hoist-testkit\""),
        );
    }
    resp
}

/// Decodes `Authorization: Basic ...`: `None` when absent, `Some(Err)` when malformed.
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let parsed = (|| {
        let v = value.to_str().map_err(|_| ())?;
        let (scheme, b64) = v.split_once(' ').ok_or(())?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(());
        }
        let raw = STANDARD.decode(b64.trim()).map_err(|_| ())?;
        let s = String::from_utf8(raw).map_err(|_| ())?;
        let (u, p) = s.split_once(':').ok_or(())?;
        Ok((u.to_string(), p.to_string()))
    })();
    Some(parsed)
}

async fn get_token(
    State(st): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = form_pairs(query.unwrap_or_default().as_bytes());
    let scopes = scopes_of(&pairs);
    let service = first(&pairs, "service").map(str::to_string);
    let client_id = first(&pairs, "client_id").map(str::to_string);
    let mut rec = TokenRequest {
        method: "GET",
        grant: Grant::Rejected,
        scopes: scopes.clone(),
        granted: Vec::new(),
        service: service.clone(),
        client_id,
        status: 0,
    };
    if let Some(s) = &service
        && s != &st.config.service
    {
        rec.status = 400;
        st.record(rec);
        return error_response(
            StatusCode::BAD_REQUEST,
            "INVALID_SERVICE",
            &format!("unknown service {s:?}"),
        );
    }
    let user = match basic_credentials(&headers) {
        None => None,
        Some(Ok((u, p))) if st.check_user(&u, &p) => Some(u),
        Some(_) => {
            rec.status = 401;
            st.record(rec);
            return error_response(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "bad credentials");
        }
    };
    let granted = st.grant(user.as_deref(), &scopes);
    let now = unix_now();
    let token = issue(&st, user.as_deref().unwrap_or(""), &granted, now);
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": st.config.lifetime.as_secs(),
        "issued_at": rfc3339(now),
    });
    if let Some(u) = &user
        && first(&pairs, "offline_token") == Some("true")
    {
        body["refresh_token"] = st.new_refresh_token(u).into();
    }
    rec.grant = match user {
        Some(u) => Grant::Basic(u),
        None => Grant::Anonymous,
    };
    rec.granted = granted;
    rec.status = 200;
    st.record(rec);
    json_response(StatusCode::OK, body)
}

fn issue(st: &Inner, subject: &str, access: &[Access], now: u64) -> String {
    let claims = Claims {
        iss: &st.config.issuer,
        sub: subject,
        aud: &st.config.service,
        exp: now + st.config.lifetime.as_secs(),
        nbf: now,
        iat: now,
        jti: random_hex(16),
        access,
    };
    st.sign_jwt(&serde_json::to_vec(&claims).expect("claims serialize"))
}

async fn post_token(State(st): State<Arc<Inner>>, body: Bytes) -> Response {
    let pairs = form_pairs(&body);
    let scopes = scopes_of(&pairs);
    let service = first(&pairs, "service").map(str::to_string);
    let client_id = first(&pairs, "client_id").map(str::to_string);
    let mut rec = TokenRequest {
        method: "POST",
        grant: Grant::Rejected,
        scopes: scopes.clone(),
        granted: Vec::new(),
        service: service.clone(),
        client_id: client_id.clone(),
        status: 0,
    };
    let bad = |rec: TokenRequest, status: StatusCode, code: &str, msg: &str| {
        let mut rec = rec;
        rec.status = status.as_u16();
        st.record(rec);
        error_response(status, code, msg)
    };
    if client_id.is_none() {
        return bad(
            rec,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "client_id is required",
        );
    }
    if let Some(s) = &service
        && s != &st.config.service
    {
        let msg = format!("unknown service {s:?}");
        return bad(rec, StatusCode::BAD_REQUEST, "INVALID_SERVICE", &msg);
    }
    let (user, grant, refresh) = match first(&pairs, "grant_type") {
        Some("password") => {
            let u = first(&pairs, "username").unwrap_or("");
            let p = first(&pairs, "password").unwrap_or("");
            if !st.check_user(u, p) {
                return bad(
                    rec,
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "bad credentials",
                );
            }
            let refresh =
                (first(&pairs, "access_type") == Some("offline")).then(|| st.new_refresh_token(u));
            (u.to_string(), Grant::Password(u.to_string()), refresh)
        }
        Some("refresh_token") => {
            let t = first(&pairs, "refresh_token").unwrap_or("");
            let owner = st
                .refresh_tokens
                .lock()
                .expect("refresh map poisoned")
                .get(t)
                .cloned();
            match owner {
                Some(u) => (u.clone(), Grant::Refresh(u), Some(t.to_string())),
                None => {
                    return bad(
                        rec,
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "unknown refresh token",
                    );
                }
            }
        }
        other => {
            let msg = format!("unsupported grant_type {other:?}");
            return bad(rec, StatusCode::BAD_REQUEST, "UNSUPPORTED_GRANT_TYPE", &msg);
        }
    };
    let granted = st.grant(Some(&user), &scopes);
    let now = unix_now();
    let token = issue(&st, &user, &granted, now);
    let mut body = serde_json::json!({
        "access_token": token,
        "token": token,
        "expires_in": st.config.lifetime.as_secs(),
        "issued_at": rfc3339(now),
        "scope": scopes.join(" "),
    });
    if let Some(r) = refresh {
        body["refresh_token"] = r.into();
    }
    rec.grant = grant;
    rec.granted = granted;
    rec.status = 200;
    st.record(rec);
    json_response(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse() {
        assert_eq!(
            parse_scope("repository:a/b:pull,push"),
            Some((
                "repository".into(),
                "a/b".into(),
                vec!["pull".into(), "push".into()]
            ))
        );
        assert_eq!(
            parse_scope("registry:catalog:*"),
            Some(("registry".into(), "catalog".into(), vec!["*".into()]))
        );
        assert_eq!(parse_scope("repository::pull"), None);
        assert_eq!(parse_scope("nonsense"), None);
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_704_164_645), "2024-01-02T03:04:05Z");
    }

    #[test]
    fn form_scopes_split_on_spaces() {
        let p = form_pairs(b"scope=repository%3Aa%3Apull+repository%3Ab%3Apush&scope=x:y:z");
        assert_eq!(
            scopes_of(&p),
            vec!["repository:a:pull", "repository:b:push", "x:y:z"]
        );
    }
}
