//! Pure pieces of the authentication logic: where credentials may go, token responses,
//! token lifetimes, and the redirect policy. The network side lives in `client.rs`.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use url::{Host, Url};

use crate::Credentials;
use crate::headers::{Challenge, parse_rfc3339};

/// Username that marks the password as an identity (OAuth2 refresh) token.
pub const TOKEN_USERNAME: &str = "<token>";
/// Tokens shorter-lived than this are treated as living this long (Docker's rule).
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// What a registry asks for, from its `WWW-Authenticate` challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthScheme {
    /// Basic auth on every request.
    Basic,
    /// Bearer tokens from a token server.
    Bearer {
        /// The realm URL, validated (http or https).
        realm: Url,
        /// `service`, if given.
        service: Option<String>,
        /// `scope` the registry said it wants, if given.
        scope: Option<String>,
    },
}

impl AuthScheme {
    /// Choose among challenges: Bearer (with a usable realm) first, then Basic.
    pub(crate) fn from_challenges(challenges: &[Challenge]) -> Option<AuthScheme> {
        let bearer = challenges.iter().find_map(|c| {
            if c.scheme != "bearer" {
                return None;
            }
            let realm = Url::parse(c.param("realm")?).ok()?;
            if !matches!(realm.scheme(), "http" | "https") || realm.host().is_none() {
                return None;
            }
            Some(AuthScheme::Bearer {
                realm,
                service: c.param("service").map(str::to_owned),
                scope: c
                    .param("scope")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            })
        });
        bearer.or_else(|| {
            challenges
                .iter()
                .any(|c| c.scheme == "basic")
                .then_some(AuthScheme::Basic)
        })
    }
}

/// Whether `host` is loopback: `localhost`, 127.0.0.0/8 or `::1`.
pub(crate) fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Whether credentials may be sent to a token `realm` for a registry at `registry`:
/// same host (any port) — or `auth.docker.io` for Docker Hub — and https, or http only
/// to a loopback realm.
pub(crate) fn may_send_credentials(registry: &Url, realm: &Url, docker_hub: bool) -> bool {
    let (Some(rh), Some(th)) = (registry.host(), realm.host()) else {
        return false;
    };
    let same_host = host_eq(&rh, &th)
        || (docker_hub
            && matches!(&th, Host::Domain(d) if d.eq_ignore_ascii_case("auth.docker.io")));
    let secure = realm.scheme() == "https" || (realm.scheme() == "http" && is_loopback(&th));
    same_host && secure
}

fn host_eq(a: &Host<&str>, b: &Host<&str>) -> bool {
    match (a, b) {
        (Host::Domain(x), Host::Domain(y)) => x
            .trim_end_matches('.')
            .eq_ignore_ascii_case(y.trim_end_matches('.')),
        _ => a == b,
    }
}

/// Same scheme, host and port (default ports made explicit).
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && match (a.host(), b.host()) {
            (Some(x), Some(y)) => host_eq(&x, &y),
            _ => false,
        }
        && a.port_or_known_default() == b.port_or_known_default()
}

/// What to do with a redirect: the next URL and whether credentials may follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedirectStep {
    /// The resolved target.
    pub url: Url,
    /// Keep `Authorization` (and `Cookie`): only when the origin is unchanged.
    pub keep_credentials: bool,
}

/// Decide a redirect from `from` to `location` (absolute or relative). Refuses non-HTTP
/// schemes and https→http downgrades; strips credentials when scheme, host or port change.
pub(crate) fn redirect_step(from: &Url, location: &str) -> Result<RedirectStep, &'static str> {
    let url = from
        .join(location.trim())
        .map_err(|_| "Location is not a valid URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("Location scheme is not http or https");
    }
    if url.host().is_none() {
        return Err("Location has no host");
    }
    if from.scheme() == "https" && url.scheme() == "http" {
        return Err("https to http downgrade");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("Location carries user info");
    }
    let keep_credentials = same_origin(from, &url);
    Ok(RedirectStep {
        url,
        keep_credentials,
    })
}

/// A token server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenResponse {
    /// `token` or `access_token`.
    pub token: String,
    /// `expires_in`, at least 60 s.
    pub expires_in: Duration,
    /// `issued_at`, when given and valid.
    pub issued_at: Option<SystemTime>,
}

#[derive(serde::Deserialize)]
struct RawToken {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    issued_at: Option<String>,
}

/// Parse a token response body.
pub(crate) fn parse_token_response(body: &[u8]) -> Result<TokenResponse, String> {
    let raw: RawToken =
        serde_json::from_slice(body).map_err(|e| format!("token response is not JSON: {e}"))?;
    let token = raw
        .token
        .filter(|t| !t.is_empty())
        .or(raw.access_token.filter(|t| !t.is_empty()))
        .ok_or("token response has neither `token` nor `access_token`")?;
    if token.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err("token contains characters not allowed in a header".into());
    }
    let secs = match raw.expires_in {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f > 0.0).map(|f| f as u64))
            .unwrap_or(0),
        _ => 0,
    };
    let expires_in = Duration::from_secs(secs.min(365 * 86_400)).max(MIN_TOKEN_LIFETIME);
    let issued_at = raw.issued_at.as_deref().and_then(parse_rfc3339);
    Ok(TokenResponse {
        token,
        expires_in,
        issued_at,
    })
}

/// How long a token received at `now` stays usable: its lifetime, shortened by the time
/// since `issued_at` when that is plausible (within the lifetime and not in the future,
/// so clock skew cannot make tokens uncacheable), minus a safety margin.
pub(crate) fn usable_lifetime(t: &TokenResponse, now: SystemTime) -> Duration {
    let mut life = t.expires_in;
    if let Some(iat) = t.issued_at
        && let Ok(age) = now.duration_since(iat)
        && age < life
    {
        life -= age;
    }
    let margin = (life / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
    life.saturating_sub(margin)
}

/// `Basic base64(user:pass)`.
pub(crate) fn basic_header(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// How to ask a token server for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenRequest {
    /// GET, no credentials.
    Anonymous,
    /// GET with Basic credentials (then POST grant_type=password on 404/405).
    Basic,
    /// POST grant_type=refresh_token.
    Refresh,
}

/// The request kind for these (already policy-checked) credentials.
pub(crate) fn token_request_kind(creds: Option<&Credentials>) -> TokenRequest {
    match creds {
        None => TokenRequest::Anonymous,
        Some(c) if c.username == TOKEN_USERNAME => TokenRequest::Refresh,
        Some(_) => TokenRequest::Basic,
    }
}

#[cfg(test)]
mod tests {
    // Test tables are tuples of expectations.
    #![allow(clippy::type_complexity)]
    use super::*;
    use crate::headers::parse_www_authenticate;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn scheme_choice() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"Bearer realm="https://a/t",service="s""#, Some("bearer")),
            (r#"Basic realm="x""#, Some("basic")),
            (
                r#"Basic realm="x", Bearer realm="https://a/t""#,
                Some("bearer"),
            ),
            (r#"Bearer realm="ftp://a/t", Basic realm=x"#, Some("basic")),
            (r#"Bearer realm="not a url""#, None),
            (r#"Bearer service="s""#, None),
            ("Negotiate", None),
        ];
        for (h, want) in cases {
            let got = AuthScheme::from_challenges(&parse_www_authenticate(h));
            let got = got.map(|s| match s {
                AuthScheme::Basic => "basic",
                AuthScheme::Bearer { .. } => "bearer",
            });
            assert_eq!(got, *want, "{h}");
        }
    }

    #[test]
    fn credential_policy_table() {
        let cases: &[(&str, &str, bool, bool)] = &[
            (
                "https://reg.example/",
                "https://reg.example/token",
                false,
                true,
            ),
            (
                "https://reg.example:5000/",
                "https://reg.example:8443/t",
                false,
                true,
            ),
            (
                "https://reg.example/",
                "https://REG.example./t",
                false,
                true,
            ),
            (
                "https://reg.example/",
                "http://reg.example/token",
                false,
                false,
            ),
            (
                "https://reg.example/",
                "https://evil.example/token",
                false,
                false,
            ),
            (
                "https://reg.example/",
                "https://auth.docker.io/token",
                false,
                false,
            ),
            (
                "https://registry-1.docker.io/",
                "https://auth.docker.io/token",
                true,
                true,
            ),
            (
                "https://registry-1.docker.io/",
                "http://auth.docker.io/token",
                true,
                false,
            ),
            (
                "http://127.0.0.1:5000/",
                "http://127.0.0.1:5001/token",
                false,
                true,
            ),
            (
                "http://localhost:5000/",
                "http://localhost:9/token",
                false,
                true,
            ),
            (
                "http://127.0.0.1:5000/",
                "http://localhost:5001/token",
                false,
                false,
            ),
            ("http://[::1]:5000/", "http://[::1]:1/t", false, true),
            (
                "http://10.0.0.1:5000/",
                "http://10.0.0.1:5001/t",
                false,
                false,
            ),
        ];
        for (reg, realm, hub, want) in cases {
            assert_eq!(
                may_send_credentials(&u(reg), &u(realm), *hub),
                *want,
                "{reg} -> {realm}"
            );
        }
    }

    #[test]
    fn redirect_table() {
        // (from, location, Ok(keep) | Err)
        let cases: &[(&str, &str, Result<(&str, bool), ()>)] = &[
            (
                "https://r/v2/x/blobs/d",
                "/other",
                Ok(("https://r/other", true)),
            ),
            (
                "https://r/v2/x/blobs/d",
                "https://r:443/p",
                Ok(("https://r/p", true)),
            ),
            (
                "https://r/v2/x/blobs/d",
                "https://r:444/p",
                Ok(("https://r:444/p", false)),
            ),
            (
                "https://r/v2/x/blobs/d",
                "https://s3.example/p?sig=1",
                Ok(("https://s3.example/p?sig=1", false)),
            ),
            (
                "http://127.0.0.1:1/a",
                "http://127.0.0.1:2/b",
                Ok(("http://127.0.0.1:2/b", false)),
            ),
            ("http://r/a", "https://r/b", Ok(("https://r/b", false))),
            ("https://r/a", "http://r/b", Err(())),
            ("https://r/a", "file:///etc/passwd", Err(())),
            ("https://r/a", "https://user:pw@r/b", Err(())),
            ("https://r/a", "http://[::1", Err(())),
            ("https://r/a", "b", Ok(("https://r/b", true))),
        ];
        for (from, loc, want) in cases {
            let got = redirect_step(&u(from), loc);
            match (got, want) {
                (Ok(step), Ok((url, keep))) => {
                    assert_eq!(step.url.as_str(), *url, "{from} -> {loc}");
                    assert_eq!(step.keep_credentials, *keep, "{from} -> {loc}");
                }
                (Err(_), Err(())) => {}
                (g, w) => panic!("{from} -> {loc}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn token_response_table() {
        let secs = Duration::from_secs;
        let cases: &[(&str, Result<(&str, Duration, bool), ()>)] = &[
            (
                r#"{"token":"abc","expires_in":300}"#,
                Ok(("abc", secs(300), false)),
            ),
            (r#"{"access_token":"xyz"}"#, Ok(("xyz", secs(60), false))),
            (
                r#"{"token":"","access_token":"xyz","expires_in":10}"#,
                Ok(("xyz", secs(60), false)),
            ),
            (
                r#"{"token":"t","access_token":"a","expires_in":3600,"issued_at":"2024-01-02T03:04:05.123Z"}"#,
                Ok(("t", secs(3600), true)),
            ),
            (
                r#"{"token":"t","issued_at":"yesterday"}"#,
                Ok(("t", secs(60), false)),
            ),
            (
                r#"{"token":"t","expires_in":"300"}"#,
                Ok(("t", secs(60), false)),
            ),
            (
                r#"{"token":"t","expires_in":-5}"#,
                Ok(("t", secs(60), false)),
            ),
            (
                r#"{"token":"t","expires_in":1e30}"#,
                Ok(("t", secs(365 * 86_400), false)),
            ),
            (r#"{"token":"bad\nvalue"}"#, Err(())),
            (r#"{"expires_in":300}"#, Err(())),
            (r#"{"token":""}"#, Err(())),
            ("<html>", Err(())),
            ("", Err(())),
        ];
        for (body, want) in cases {
            let got = parse_token_response(body.as_bytes());
            match (got, want) {
                (Ok(t), Ok((tok, exp, iat))) => {
                    assert_eq!(t.token, *tok, "{body}");
                    assert_eq!(t.expires_in, *exp, "{body}");
                    assert_eq!(t.issued_at.is_some(), *iat, "{body}");
                }
                (Err(_), Err(())) => {}
                (g, w) => panic!("{body}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn lifetimes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = |exp: u64, iat: Option<i64>| TokenResponse {
            token: "t".into(),
            expires_in: Duration::from_secs(exp),
            issued_at: iat.map(|d| {
                if d >= 0 {
                    now - Duration::from_secs(d as u64)
                } else {
                    now + Duration::from_secs((-d) as u64)
                }
            }),
        };
        let s = Duration::from_secs;
        assert_eq!(usable_lifetime(&t(60, None), now), s(54));
        assert_eq!(usable_lifetime(&t(300, None), now), s(270));
        assert_eq!(usable_lifetime(&t(3600, None), now), s(3570));
        // Issued 100 s ago: 200 s left, minus 20.
        assert_eq!(usable_lifetime(&t(300, Some(100)), now), s(180));
        // Issued in the future (skew) or long ago (skew): full lifetime.
        assert_eq!(usable_lifetime(&t(300, Some(-50)), now), s(270));
        assert_eq!(usable_lifetime(&t(300, Some(10_000)), now), s(270));
    }

    #[test]
    fn basic_and_kind() {
        let c = Credentials {
            username: "user".into(),
            password: "pa:ss".into(),
        };
        assert_eq!(basic_header(&c), "Basic dXNlcjpwYTpzcw==");
        assert_eq!(token_request_kind(Some(&c)), TokenRequest::Basic);
        assert_eq!(token_request_kind(None), TokenRequest::Anonymous);
        let r = Credentials {
            username: TOKEN_USERNAME.into(),
            password: "refresh".into(),
        };
        assert_eq!(token_request_kind(Some(&r)), TokenRequest::Refresh);
        assert!(is_loopback(&Host::Domain("LOCALHOST")));
        assert!(is_loopback(&Host::Ipv4("127.8.9.1".parse().unwrap())));
        assert!(!is_loopback(&Host::Ipv4("10.0.0.1".parse().unwrap())));
        assert!(!is_loopback(&Host::Domain("localhost.evil.example")));
    }
}
