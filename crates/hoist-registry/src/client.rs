//! The request engine: scheme resolution, authentication (challenges, tokens, retries),
//! hand-followed redirects, bounded body reads and status mapping.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::auth::{
    self, AuthScheme, basic_header, may_send_credentials, redirect_step, same_origin,
};
use crate::headers::{parse_retry_after, parse_www_authenticate};
use crate::retry::Backoff;
use crate::tls::{self, TlsFailure};
use crate::{ClientOptions, Credentials, Endpoint, MAX_REDIRECTS, RegistryError, auth_config};

/// Token responses and error bodies are read up to this size.
const MAX_SMALL_BODY: u64 = hoist_types::MAX_SMALL_BODY;
/// Requests per call, counting the ones that learn or renew authentication.
const MAX_AUTH_ATTEMPTS: usize = 4;

/// A client for one registry host. Cheap to clone; clones share connections, the
/// authentication state and the token cache.
#[derive(Clone)]
pub struct RegistryClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The registry as named (`docker.io`, `host:port`).
    pub(crate) registry: String,
    /// `host[:port]` the requests go to.
    host: String,
    /// The API root's path below the host: empty, or `a/b/` (always ending in `/`).
    path: String,
    pub(crate) docker_hub: bool,
    loopback: bool,
    pub(crate) opts: ClientOptions,
    pub(crate) http: reqwest::Client,
    base: tokio::sync::OnceCell<Url>,
    scheme: Mutex<Option<AuthScheme>>,
    pub(crate) tokens: Mutex<HashMap<String, CachedToken>>,
    pub(crate) token_fetch: tokio::sync::Mutex<()>,
    creds: tokio::sync::OnceCell<Option<Credentials>>,
}

pub(crate) struct CachedToken {
    pub(crate) header: String,
    pub(crate) valid_until: Instant,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registry", &self.inner.registry)
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

/// One request to send through [`RegistryClient::execute`].
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    /// Token scope (`repository:NAME:pull`), `None` for `/v2/`.
    pub scope: Option<String>,
    pub headers: HeaderMap,
}

pub(crate) fn method_str(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "request",
    }
}

/// Map a transport error: TLS problems become [`RegistryError::Tls`].
pub(crate) fn transport_error(e: reqwest::Error, method: &Method, url: &Url) -> RegistryError {
    match tls::classify(&e) {
        TlsFailure::Tls(reason) => RegistryError::Tls {
            url: url.to_string(),
            reason,
        },
        TlsFailure::NotTls => RegistryError::Tls {
            url: url.to_string(),
            reason: "the server does not speak TLS (it answered something else; use plain HTTP only if you trust the network)".into(),
        },
        _ => RegistryError::Connect {
            method: method_str(method),
            url: url.to_string(),
            source: e,
        },
    }
}

/// Validate `host[:port]` and return (host for URLs, is Docker Hub).
fn parse_registry(registry: &str) -> Result<(String, bool), RegistryError> {
    let bad = |reason| RegistryError::InvalidRegistry {
        registry: registry.chars().take(200).collect(),
        reason,
    };
    if registry.is_empty() {
        return Err(bad("empty"));
    }
    if registry.contains("://") {
        return Err(bad("give host[:port] without a scheme"));
    }
    if registry
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"/?#@\\".contains(&b))
    {
        return Err(bad("must be host[:port]"));
    }
    let name = auth_config::normalize_registry(registry);
    if name == "docker.io" {
        return Ok(("registry-1.docker.io".to_owned(), true));
    }
    let u =
        Url::parse(&format!("https://{registry}/")).map_err(|_| bad("not a valid host[:port]"))?;
    if u.host().is_none() || u.path() != "/" {
        return Err(bad("not a valid host[:port]"));
    }
    let host = match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
        None if registry.ends_with(":443") => format!("{}:443", u.host_str().unwrap_or_default()),
        None => u.host_str().unwrap_or_default().to_owned(),
    };
    Ok((host, false))
}

impl RegistryClient {
    /// A client for `registry` (`host[:port]` as [`hoist_types::Reference::registry`]
    /// gives it; `docker.io` goes to `registry-1.docker.io`). No network traffic yet.
    pub fn new(registry: &str, opts: ClientOptions) -> Result<Self, RegistryError> {
        let (host, docker_hub) = parse_registry(registry)?;
        Self::build(registry, host, docker_hub, String::new(), opts)
    }

    /// A client for a mirror (or any [`Endpoint`]): its host, API root path, scheme and
    /// TLS choice. Explicit `opts.credentials` are dropped, since they belong to the
    /// registry the user named; credentials for the mirror's own host are looked up in
    /// the credential files as usual.
    pub fn for_endpoint(
        endpoint: &Endpoint,
        mut opts: ClientOptions,
    ) -> Result<Self, RegistryError> {
        let (host, docker_hub) = parse_registry(&endpoint.host)?;
        let path = endpoint
            .api_root_path()
            .map_err(|reason| RegistryError::InvalidRegistry {
                registry: endpoint.to_string(),
                reason,
            })?;
        if let Some(p) = endpoint.plain_http {
            opts.plain_http = Some(p);
        }
        opts.tls_verify = opts.tls_verify && endpoint.tls_verify.unwrap_or(true);
        opts.credentials = None;
        Self::build(&endpoint.host, host, docker_hub, path, opts)
    }

    fn build(
        registry: &str,
        host: String,
        docker_hub: bool,
        path: String,
        opts: ClientOptions,
    ) -> Result<Self, RegistryError> {
        let loopback = Url::parse(&format!("http://{host}/"))
            .ok()
            .and_then(|u| u.host().map(|h| auth::is_loopback(&h)))
            .unwrap_or(false);
        let name = auth_config::normalize_registry(registry);
        let tls = tls::client_config(&opts, &[registry, &host])?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .user_agent(opts.user_agent.clone())
            .build()
            .map_err(|source| RegistryError::ClientBuild {
                registry: name.clone(),
                source,
            })?;
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                registry: name,
                host,
                path,
                docker_hub,
                loopback,
                opts,
                http,
                base: tokio::sync::OnceCell::new(),
                scheme: Mutex::new(None),
                tokens: Mutex::new(HashMap::new()),
                token_fetch: tokio::sync::Mutex::new(()),
                creds: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The registry name as used for credentials (`docker.io`, `host:port`).
    pub fn registry(&self) -> &str {
        &self.inner.registry
    }

    /// `scheme://host[:port]`: the resolved one after the first request or [`ping`],
    /// before that the one that will be tried first.
    ///
    /// [`ping`]: RegistryClient::ping
    pub fn base_url(&self) -> String {
        let u = match self.inner.base.get() {
            Some(u) => u.as_str().to_owned(),
            None if self.inner.opts.plain_http == Some(true) => {
                format!("http://{}/{}", self.inner.host, self.inner.path)
            }
            None => format!("https://{}/{}", self.inner.host, self.inner.path),
        };
        u.trim_end_matches('/').to_owned()
    }

    /// The base URL (`scheme://host[:port]/`), resolving the scheme on first use.
    pub(crate) async fn base(&self) -> Result<&Url, RegistryError> {
        self.inner
            .base
            .get_or_try_init(|| self.resolve_base())
            .await
    }

    async fn resolve_base(&self) -> Result<Url, RegistryError> {
        let mk = |scheme: &str| {
            Url::parse(&format!(
                "{scheme}://{}/{}",
                self.inner.host, self.inner.path
            ))
            .map_err(|_| RegistryError::InvalidRegistry {
                registry: self.inner.registry.clone(),
                reason: "not a valid host[:port]",
            })
        };
        let (https, http) = (mk("https")?, mk("http")?);
        match self.inner.opts.plain_http {
            Some(true) => return Ok(http),
            Some(false) => return Ok(https),
            None if !self.inner.loopback => return Ok(https),
            None => {}
        }
        // Loopback, auto: try TLS; use plain HTTP only if the peer does not speak TLS:
        // it answered garbage, closed during the handshake, or never answered the
        // ClientHello (a plain HTTP server waiting for a request line). A certificate
        // or other TLS error is reported, never downgraded.
        let ping = https.join("v2/").expect("static path");
        let probe_timeout = self.header_timeout().min(Duration::from_secs(10));
        let first =
            tokio::time::timeout(probe_timeout, self.inner.http.get(ping.clone()).send()).await;
        let https_err = match first {
            Ok(Ok(resp)) => {
                self.learn(&resp);
                return Ok(https);
            }
            Ok(Err(e)) => match tls::classify(&e) {
                TlsFailure::NotTls | TlsFailure::ClosedDuringHandshake => Some(e),
                TlsFailure::None if e.is_timeout() => Some(e),
                _ => return Err(transport_error(e, &Method::GET, &ping)),
            },
            Err(_) => None,
        };
        let ping_http = http.join("v2/").expect("static path");
        match self.send_raw(self.inner.http.get(ping_http)).await {
            Ok(Ok(resp)) => {
                tracing::debug!(
                    registry = self.inner.registry,
                    "loopback registry does not speak TLS; using plain HTTP"
                );
                self.learn(&resp);
                Ok(http)
            }
            _ => Err(match https_err {
                Some(e) => transport_error(e, &Method::GET, &ping),
                None => RegistryError::Timeout {
                    url: ping.to_string(),
                    what: "waiting for the TLS handshake",
                    after: probe_timeout,
                },
            }),
        }
    }

    pub(crate) fn header_timeout(&self) -> Duration {
        self.inner.opts.connect_timeout + self.inner.opts.read_timeout
    }

    /// Send with the header timeout; `Err(())` on timeout.
    pub(crate) async fn send_raw(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<Result<Response, reqwest::Error>, ()> {
        tokio::time::timeout(self.header_timeout(), rb.send())
            .await
            .map_err(|_| ())
    }

    /// Record the challenge of a 401 response.
    fn learn(&self, resp: &Response) -> bool {
        if resp.status() != StatusCode::UNAUTHORIZED {
            return false;
        }
        let challenges: Vec<_> = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_www_authenticate)
            .collect();
        match AuthScheme::from_challenges(&challenges) {
            Some(s) => self.set_scheme(s),
            None => false,
        }
    }

    /// Store the scheme; true if it changed.
    fn set_scheme(&self, s: AuthScheme) -> bool {
        let mut cur = self.inner.scheme.lock().unwrap_or_else(|p| p.into_inner());
        // The `scope` of a challenge is per request: compare without it.
        let strip = |s: &AuthScheme| match s {
            AuthScheme::Bearer { realm, service, .. } => AuthScheme::Bearer {
                realm: realm.clone(),
                service: service.clone(),
                scope: None,
            },
            AuthScheme::Basic => AuthScheme::Basic,
        };
        let new = strip(&s);
        let changed = cur.as_ref() != Some(&new);
        *cur = Some(new);
        changed
    }

    fn current_scheme(&self) -> Option<AuthScheme> {
        self.inner
            .scheme
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `GET /v2/`: checks the registry answers and records its authentication challenge.
    /// Transient failures are retried under the client's [`RetryPolicy`].
    ///
    /// [`RetryPolicy`]: crate::RetryPolicy
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let what = format!("{}/v2/", self.base_url());
        self.retrying(&what, || self.ping_once()).await
    }

    async fn ping_once(&self) -> Result<(), RegistryError> {
        let base = self.base().await?.clone();
        let url = base.join("v2/").expect("static path");
        let resp = self
            .send_following_redirects(&Method::GET, &url, &HeaderMap::new(), None)
            .await?;
        if self.learn(&resp) || resp.status() == StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        self.check_status(resp, &Method::GET, || {
            "the /v2/ endpoint (is this a registry?)".into()
        })
        .await
        .map(drop)
    }

    /// Authenticate against `/v2/` with the configured credentials, as `login` does:
    /// succeeds when the registry needs no authentication or accepts them.
    pub async fn check_credentials(&self) -> Result<(), RegistryError> {
        self.ping().await?;
        let base = self.base().await?.clone();
        let scheme = self.current_scheme();
        if scheme.is_some() && self.credentials().await?.is_none() {
            return Err(RegistryError::Unauthorized {
                url: self.base_url(),
                message: format!("no credentials for {}", self.inner.registry),
            });
        }
        if let Some(AuthScheme::Bearer { realm, .. }) = &scheme
            && !may_send_credentials(&base, realm, self.inner.docker_hub)
        {
            return Err(RegistryError::Unauthorized {
                url: realm.to_string(),
                message: "the token realm is not on the registry's host over https, so credentials are not sent to it".into(),
            });
        }
        let resp = self
            .execute(Req {
                method: Method::GET,
                url: base.join("v2/").expect("static path"),
                scope: None,
                headers: HeaderMap::new(),
            })
            .await?;
        self.check_status(resp, &Method::GET, || "the /v2/ endpoint".into())
            .await
            .map(drop)
    }

    /// The credentials: explicit ones, else from the credential files (looked up once).
    pub(crate) async fn credentials(&self) -> Result<Option<Credentials>, RegistryError> {
        self.inner
            .creds
            .get_or_try_init(|| async {
                if let Some(c) = &self.inner.opts.credentials {
                    return Ok(Some(c.clone()));
                }
                let reg = self.inner.registry.clone();
                let file = self.inner.opts.auth_file.clone();
                let found =
                    tokio::task::spawn_blocking(move || auth_config::lookup(&reg, file.as_deref()))
                        .await
                        .map_err(|e| RegistryError::AuthFile {
                            path: self.inner.opts.auth_file.clone().unwrap_or_default(),
                            reason: format!("credential lookup task failed: {e}"),
                        })??;
                Ok(found)
            })
            .await
            .cloned()
    }

    /// Send a request with authentication, renewing it once on 401. Redirects are
    /// followed. Returns the final response, whatever its status (except a 401 from the
    /// registry, which becomes [`RegistryError::Unauthorized`]).
    pub(crate) async fn execute(&self, req: Req) -> Result<Response, RegistryError> {
        self.execute_body(req, None).await
    }

    /// [`execute`](Self::execute) with a body held in memory (a manifest), sent again as
    /// needed when authentication is renewed or a redirect is followed.
    pub(crate) async fn execute_body(
        &self,
        req: Req,
        body: Option<Bytes>,
    ) -> Result<Response, RegistryError> {
        let base = self.base().await?.clone();
        let mut scope_override: Option<String> = None;
        let mut renewed = false;
        let mut last_url = req.url.to_string();
        for _ in 0..MAX_AUTH_ATTEMPTS {
            let scope = scope_override.clone().or_else(|| req.scope.clone());
            let auth = self.authorization(&base, scope.as_deref()).await?;
            let resp = self
                .send_following_redirects_body(
                    &req.method,
                    &req.url,
                    &req.headers,
                    auth.as_deref(),
                    body.as_ref(),
                )
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED || !same_origin(resp.url(), &base) {
                return Ok(resp);
            }
            last_url = resp.url().to_string();
            let challenges: Vec<_> = resp
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_www_authenticate)
                .collect();
            let scheme = AuthScheme::from_challenges(&challenges);
            let msg = read_error_message(resp, self.inner.opts.read_timeout).await;
            let Some(scheme) = scheme else {
                return Err(RegistryError::Unauthorized {
                    url: last_url,
                    message: format!("no usable WWW-Authenticate challenge ({msg})"),
                });
            };
            if let AuthScheme::Bearer { scope: Some(s), .. } = &scheme
                && scope.as_deref() != Some(s.as_str())
            {
                scope_override = Some(s.clone());
            }
            let basic = scheme == AuthScheme::Basic;
            let changed = self.set_scheme(scheme);
            if basic && auth.is_none() && self.credentials().await?.is_none() {
                return Err(self.rejected(&last_url, &msg).await);
            }
            if let Some(used) = &auth {
                if renewed {
                    return Err(self.rejected(&last_url, &msg).await);
                }
                renewed = true;
                self.forget_token(scope.as_deref().unwrap_or(""), used);
            } else if !changed && scope_override.is_none() {
                return Err(self.rejected(&last_url, &msg).await);
            }
        }
        Err(RegistryError::Unauthorized {
            url: last_url,
            message: format!("still unauthorized after {MAX_AUTH_ATTEMPTS} attempts"),
        })
    }

    async fn rejected(&self, url: &str, msg: &str) -> RegistryError {
        let who = match self.credentials().await {
            Ok(Some(c)) => format!("credentials for user {:?} were rejected", c.username),
            Ok(None) => format!(
                "authentication required and no credentials found for {}",
                self.inner.registry
            ),
            Err(e) => format!(
                "authentication required; reading credentials failed: {}",
                hoist_types::error_chain(&e)
            ),
        };
        RegistryError::Unauthorized {
            url: url.to_owned(),
            message: format!("{who} ({msg})"),
        }
    }

    /// Drop the cached token for `scope` if it is still the one that was refused
    /// (`used`): a parallel request may have renewed it already.
    pub(crate) fn forget_token(&self, scope: &str, used: &str) {
        let mut t = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|k, v| !(k.ends_with(&format!(" {scope}")) && v.header == used));
    }

    /// Run `op` until it succeeds, fails for good, or the retry policy is spent. Each
    /// retry is reported to `tracing` and to the client's progress reporter. A transient
    /// failure that outlives the policy comes back as [`RegistryError::GaveUp`].
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        mut op: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut backoff = Backoff::new(&self.inner.opts.retry);
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match backoff.next(&err) {
                Some(delay) => {
                    let attempt = backoff.retries() + 1;
                    tracing::info!(what, attempt, %err, ?delay, "retrying");
                    if let Some(p) = &self.inner.opts.progress {
                        p.retry(what, attempt, &err, delay);
                    }
                    tokio::time::sleep(delay).await;
                }
                None if backoff.retries() > 0 && err.is_retryable() => {
                    return Err(RegistryError::GaveUp {
                        attempts: backoff.retries() + 1,
                        elapsed: backoff.elapsed(),
                        source: Box::new(err),
                    });
                }
                None => return Err(err),
            }
        }
    }

    /// The `Authorization` value for a request to the registry, if any.
    pub(crate) async fn authorization(
        &self,
        base: &Url,
        scope: Option<&str>,
    ) -> Result<Option<String>, RegistryError> {
        match self.current_scheme() {
            None => Ok(None),
            Some(AuthScheme::Basic) => Ok(self.credentials().await?.as_ref().map(basic_header)),
            Some(AuthScheme::Bearer { realm, service, .. }) => self
                .token(base, &realm, service.as_deref(), scope)
                .await
                .map(Some),
        }
    }

    /// Send, following up to [`MAX_REDIRECTS`] redirects by hand: `Authorization` only
    /// while the origin stays the same; no https→http. The client keeps no cookie store
    /// and callers pass no `Cookie`, so no cookie can follow a redirect either.
    pub(crate) async fn send_following_redirects(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        auth: Option<&str>,
    ) -> Result<Response, RegistryError> {
        self.send_following_redirects_body(method, url, headers, auth, None)
            .await
    }

    /// [`send_following_redirects`](Self::send_following_redirects) with an in-memory body,
    /// sent again to each redirect target.
    pub(crate) async fn send_following_redirects_body(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        auth: Option<&str>,
        body: Option<&Bytes>,
    ) -> Result<Response, RegistryError> {
        let mut url = url.clone();
        let mut auth = auth.map(str::to_owned);
        for hop in 0..=MAX_REDIRECTS {
            let mut hm = headers.clone();
            if let Some(a) = &auth {
                let mut v =
                    HeaderValue::from_str(a).map_err(|_| RegistryError::InvalidResponse {
                        url: url.to_string(),
                        reason: "credentials contain characters not allowed in a header".into(),
                    })?;
                v.set_sensitive(true);
                hm.insert(header::AUTHORIZATION, v);
            }
            let mut rb = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .headers(hm);
            if let Some(b) = body {
                rb = rb.body(b.clone());
            }
            let resp = match self.send_raw(rb).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(transport_error(e, method, &url)),
                Err(()) => {
                    return Err(RegistryError::Timeout {
                        url: url.to_string(),
                        what: "waiting for the response",
                        after: self.header_timeout(),
                    });
                }
            };
            if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            if hop == MAX_REDIRECTS {
                break;
            }
            let loc = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| RegistryError::InvalidResponse {
                    url: url.to_string(),
                    reason: format!("{} without a usable Location", resp.status()),
                })?
                .to_owned();
            let step =
                redirect_step(&url, &loc).map_err(|reason| RegistryError::RedirectRefused {
                    from: url.to_string(),
                    to: loc.chars().take(500).collect(),
                    reason,
                })?;
            if !step.keep_credentials && auth.is_some() {
                tracing::debug!(from = %url, to = %step.url, "redirect leaves the origin: credentials dropped");
                auth = None;
            }
            url = step.url;
        }
        Err(RegistryError::TooManyRedirects {
            url: url.to_string(),
            limit: MAX_REDIRECTS,
        })
    }

    /// Pass 2xx responses; turn others into errors naming the URL and `what`.
    pub(crate) async fn check_status(
        &self,
        resp: Response,
        method: &Method,
        what: impl FnOnce() -> String,
    ) -> Result<Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let url = resp.url().to_string();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let msg = read_error_message(resp, self.inner.opts.read_timeout).await;
        Err(match status.as_u16() {
            401 => RegistryError::Unauthorized { url, message: msg },
            403 => RegistryError::Denied { url, message: msg },
            404 => RegistryError::NotFound {
                url,
                what: format!("{} ({msg})", what()),
            },
            s => RegistryError::Http {
                method: method_str(method),
                url,
                status: s,
                message: msg,
                retry_after,
            },
        })
    }
}

/// Read a whole body of at most `limit` bytes (never more than `limit` + one chunk in
/// memory), with the idle timeout per chunk.
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: u64,
    what: &str,
    idle: Duration,
) -> Result<Vec<u8>, RegistryError> {
    let url = resp.url().to_string();
    let too_large = |url: String| RegistryError::TooLarge {
        url,
        what: what.to_owned(),
        limit,
    };
    if declared_length(resp.headers()).is_some_and(|n| n > limit) {
        return Err(too_large(url));
    }
    let mut buf = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(idle, resp.chunk()).await {
            Err(_) => {
                return Err(RegistryError::Timeout {
                    url,
                    what: "reading the body",
                    after: idle,
                });
            }
            Ok(Err(source)) => return Err(RegistryError::Body { url, source }),
            Ok(Ok(None)) => return Ok(buf),
            Ok(Ok(Some(c))) => c,
        };
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(url));
        }
        buf.extend_from_slice(&chunk);
    }
}

/// `Content-Length` as sent (also meaningful for HEAD, unlike the body's size hint).
pub(crate) fn declared_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The registry's error in a short form: Distribution's `errors[0].code: message`, an
/// OAuth2 `error: error_description`, Docker Hub's `details`, or short plain text.
pub(crate) async fn read_error_message(resp: Response, idle: Duration) -> String {
    let status = resp.status();
    let fallback = status
        .canonical_reason()
        .unwrap_or("unexpected status")
        .to_owned();
    let Ok(body) = read_limited(resp, MAX_SMALL_BODY, "error body", idle).await else {
        return fallback;
    };
    error_message_from_body(&body).unwrap_or(fallback)
}

pub(crate) fn error_message_from_body(body: &[u8]) -> Option<String> {
    let clip = |s: &str| s.trim().chars().take(300).collect::<String>();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(e) = v.get("errors").and_then(|e| e.get(0)) {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let message = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            let s = match (code.is_empty(), message.is_empty()) {
                (false, false) => format!("{code}: {message}"),
                (false, true) => code.to_owned(),
                (true, false) => message.to_owned(),
                (true, true) => return None,
            };
            return Some(clip(&s));
        }
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return Some(clip(
                &match v.get("error_description").and_then(|d| d.as_str()) {
                    Some(d) => format!("{e}: {d}"),
                    None => e.to_owned(),
                },
            ));
        }
        if let Some(d) = v.get("details").and_then(|d| d.as_str()) {
            return Some(clip(d));
        }
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let text = clip(text);
    (!text.is_empty()
        && !text.starts_with('<')
        && text.chars().all(|c| !c.is_control() || c == '\n'))
    .then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<RegistryClient>();
    }

    /// Every public future is `Send`, so callers can spawn them.
    #[allow(dead_code)]
    fn futures_are_send(c: RegistryClient, d: hoist_types::Descriptor) {
        fn send<T: Send>(_: T) {}
        send(c.ping());
        send(c.check_credentials());
        send(c.get_manifest("r", "t"));
        send(c.head_manifest("r", "t"));
        send(c.get_blob("r", &d));
        send(c.get_blob_from("r", &d, 1));
        send(c.get_blob_range("r", &d, 1, 2));
        send(c.get_blob_bytes("r", &d, 1));
        send(c.get_foreign_blob("http://x/y", &d, 0));
        send(c.list_tags("r"));
        send(c.catalog());
        send(c.blob_exists("r", &d));
        send(c.mount_blob("r", "f", &d));
        send(c.push_blob("r", &d, crate::BlobBody::from_bytes(Vec::new())));
        send(c.push_blob_or_mount(
            "r",
            "f",
            &d,
            crate::BlobBody::from_registry(c.clone(), "f", &d),
        ));
        send(c.delete_upload("r", "/v2/r/blobs/uploads/x"));
        send(c.put_manifest("r", "t", b"{}", &hoist_types::MediaType::OciManifest));
        send(c.referrers("r", &d.digest, None));
        send(async move {
            let mut b = c.get_blob("r", &d).await.unwrap();
            b.chunk().await
        });
    }

    #[test]
    fn registry_names() {
        let ok: &[(&str, &str, bool)] = &[
            ("docker.io", "registry-1.docker.io", true),
            ("index.docker.io", "registry-1.docker.io", true),
            ("quay.io", "quay.io", false),
            ("127.0.0.1:5000", "127.0.0.1:5000", false),
            ("localhost:5000", "localhost:5000", false),
            ("[::1]:5000", "[::1]:5000", false),
            ("reg.example:443", "reg.example:443", false),
        ];
        for (input, host, hub) in ok {
            assert_eq!(
                parse_registry(input).unwrap(),
                (host.to_string(), *hub),
                "{input}"
            );
        }
        for bad in [
            "",
            "https://quay.io",
            "quay.io/ns",
            "a b",
            "q?x",
            "user@host",
            "h:99999",
            "h:x",
        ] {
            assert!(parse_registry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_bodies() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
                Some("MANIFEST_UNKNOWN: manifest unknown"),
            ),
            (r#"{"errors":[{"code":"DENIED"}]}"#, Some("DENIED")),
            (r#"{"errors":[]}"#, None),
            (
                r#"{"error":"invalid_grant","error_description":"bad password"}"#,
                Some("invalid_grant: bad password"),
            ),
            (
                r#"{"details":"incorrect username or password"}"#,
                Some("incorrect username or password"),
            ),
            ("404 page not found\n", Some("404 page not found")),
            ("<html><body>nope</body></html>", None),
            ("", None),
        ];
        for (body, want) in cases {
            assert_eq!(
                error_message_from_body(body.as_bytes()).as_deref(),
                *want,
                "{body}"
            );
        }
    }
}
