//! Bearer tokens: the cache, and the token-server flows (anonymous GET, GET with Basic
//! credentials, OAuth2 POST with a refresh token or, when GET is not supported, a
//! password grant).

use std::time::{Instant, SystemTime};

use reqwest::header::{self, HeaderMap};
use reqwest::{Method, Response};
use url::Url;

use crate::auth::{self, TokenRequest, basic_header, may_send_credentials, token_request_kind};
use crate::client::{CachedToken, read_error_message, read_limited, transport_error};
use crate::{Credentials, RegistryClient, RegistryError};

/// Token responses are read up to this size.
const MAX_SMALL_BODY: u64 = hoist_types::MAX_SMALL_BODY;
/// OAuth2 `client_id` sent to token servers.
const CLIENT_ID: &str = "hoist";

impl RegistryClient {
    /// A bearer token for `scope`, from the cache or the token server.
    pub(crate) async fn token(
        &self,
        base: &Url,
        realm: &Url,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String, RegistryError> {
        let key = format!("{realm} {} {}", service.unwrap_or(""), scope.unwrap_or(""));
        let cached = || {
            let t = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
            t.get(&key)
                .filter(|c| c.valid_until > Instant::now())
                .map(|c| c.header.clone())
        };
        if let Some(h) = cached() {
            return Ok(h);
        }
        // One fetch at a time, so parallel requests share one token.
        let _guard = self.inner.token_fetch.lock().await;
        if let Some(h) = cached() {
            return Ok(h);
        }
        let creds = self.credentials().await?;
        let creds = match creds {
            Some(c) if may_send_credentials(base, realm, self.inner.docker_hub) => Some(c),
            Some(_) => {
                tracing::debug!(
                    realm = %realm,
                    registry = self.inner.registry,
                    "token realm is not on the registry's host over https; asking anonymously"
                );
                None
            }
            None => None,
        };
        let tr = self
            .fetch_token(realm, service, scope, creds.as_ref())
            .await?;
        let life = auth::usable_lifetime(&tr, SystemTime::now());
        let header = format!("Bearer {}", tr.token);
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key,
                CachedToken {
                    header: header.clone(),
                    valid_until: Instant::now() + life,
                },
            );
        Ok(header)
    }

    async fn fetch_token(
        &self,
        realm: &Url,
        service: Option<&str>,
        scope: Option<&str>,
        creds: Option<&Credentials>,
    ) -> Result<auth::TokenResponse, RegistryError> {
        match (token_request_kind(creds), creds) {
            (TokenRequest::Refresh, Some(c)) => {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", c.password.as_str()),
                ];
                self.post_token(realm, service, scope, &form, None).await
            }
            (TokenRequest::Basic, Some(c)) => {
                let mut url = realm.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    // Several scopes (a push with a cross-repository mount) go as
                    // several `scope` parameters, as Docker's token servers expect.
                    for s in scope.iter().flat_map(|s| s.split_whitespace()) {
                        q.append_pair("scope", s);
                    }
                    q.append_pair("account", &c.username);
                }
                let resp = self
                    .send_following_redirects(
                        &Method::GET,
                        &url,
                        &HeaderMap::new(),
                        Some(&basic_header(c)),
                    )
                    .await?;
                if matches!(resp.status().as_u16(), 404 | 405) {
                    tracing::debug!(realm = %realm, "token GET not supported; trying OAuth2 password grant");
                    let form = [
                        ("grant_type", "password"),
                        ("username", c.username.as_str()),
                        ("password", c.password.as_str()),
                    ];
                    return self
                        .post_token(realm, service, scope, &form, Some(&c.username))
                        .await;
                }
                self.finish_token(resp, realm, Some(&c.username)).await
            }
            _ => {
                let mut url = realm.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    // Several scopes (a push with a cross-repository mount) go as
                    // several `scope` parameters, as Docker's token servers expect.
                    for s in scope.iter().flat_map(|s| s.split_whitespace()) {
                        q.append_pair("scope", s);
                    }
                }
                let resp = self
                    .send_following_redirects(&Method::GET, &url, &HeaderMap::new(), None)
                    .await?;
                self.finish_token(resp, realm, None).await
            }
        }
    }

    async fn post_token(
        &self,
        realm: &Url,
        service: Option<&str>,
        scope: Option<&str>,
        grant: &[(&str, &str)],
        user: Option<&str>,
    ) -> Result<auth::TokenResponse, RegistryError> {
        // Built in a block: the serializer is not `Sync`, and must not live across an
        // await (the futures of this crate are `Send`).
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in grant {
                form.append_pair(k, v);
            }
            form.append_pair("client_id", CLIENT_ID);
            if let Some(s) = service {
                form.append_pair("service", s);
            }
            if let Some(s) = scope {
                form.append_pair("scope", s);
            }
            form.finish()
        };
        let rb = self
            .inner
            .http
            .post(realm.clone())
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body);
        let resp = match self.send_raw(rb).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(transport_error(e, &Method::POST, realm)),
            Err(()) => {
                return Err(RegistryError::Timeout {
                    url: realm.to_string(),
                    what: "waiting for the token server",
                    after: self.header_timeout(),
                });
            }
        };
        self.finish_token(resp, realm, user).await
    }

    async fn finish_token(
        &self,
        resp: Response,
        realm: &Url,
        user: Option<&str>,
    ) -> Result<auth::TokenResponse, RegistryError> {
        let status = resp.status();
        let url = realm.to_string();
        if status.is_success() {
            let body = read_limited(
                resp,
                MAX_SMALL_BODY,
                "token response",
                self.inner.opts.read_timeout,
            )
            .await?;
            return auth::parse_token_response(&body)
                .map_err(|reason| RegistryError::InvalidResponse { url, reason });
        }
        let msg = read_error_message(resp, self.inner.opts.read_timeout).await;
        match status.as_u16() {
            401 | 403 => Err(RegistryError::Unauthorized {
                url,
                message: match user {
                    Some(u) => {
                        format!("token server rejected the credentials for user {u:?} ({msg})")
                    }
                    None => format!("token server refused an anonymous token ({msg})"),
                },
            }),
            s => Err(RegistryError::Http {
                method: "GET",
                url,
                status: s,
                message: format!("token server: {msg}"),
                retry_after: None,
            }),
        }
    }
}
