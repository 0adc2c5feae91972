//! An async client for the OCI Distribution API: `/v2/` ping, bearer and basic auth,
//! manifests, streamed blobs, tags and the catalog, credential files; and the push side
//! (blob existence, cross-repository mounts, monolithic and chunked uploads from files or
//! streams, manifest and index puts, referrers; see `upload.rs` and `push.rs`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), hoist_registry::RegistryError> {
//! use hoist_registry::{ClientOptions, RegistryClient};
//! let client = RegistryClient::new("docker.io", ClientOptions::default())?;
//! let m = client.get_manifest("library/alpine", "latest").await?;
//! println!("{} {}", m.media_type, m.digest);
//! # Ok(()) }
//! ```
//!
//! Building a client does no network traffic, so its configuration can be checked
//! without a registry:
//!
//! ```
//! use std::time::Duration;
//! use hoist_registry::{ClientOptions, Credentials, RegistryClient, RetryPolicy};
//!
//! // The option structs are `#[non_exhaustive]`: start from `default()`, set fields.
//! let mut opts = ClientOptions::default();
//! opts.credentials = Credentials::from_user_pass("ci:s3cret");
//! opts.read_timeout = Duration::from_secs(120);
//! opts.retry.max_retries = 5;
//! let hub = RegistryClient::new("docker.io", opts.clone())?;
//! assert_eq!(hub.registry(), "docker.io");
//! assert_ne!(opts.retry, RetryPolicy::default());
//!
//! // A loopback registry is tried over https first, then plain http if it has no TLS;
//! // `plain_http = Some(true)` goes straight to http.
//! opts.plain_http = Some(true);
//! let local = RegistryClient::new("127.0.0.1:5000", opts)?;
//! assert!(local.base_url().starts_with("http://127.0.0.1:5000"));
//!
//! assert!(RegistryClient::new("bad host", ClientOptions::default()).is_err());
//! # Ok::<(), hoist_registry::RegistryError>(())
//! ```
//!
//! Security (guide §4): credentials go only to the registry's origin and to a token realm on
//! the same host (or `auth.docker.io` for Docker Hub), over https or to loopback; redirects
//! are followed by hand and lose `Authorization` when scheme, host or port change; https is
//! never downgraded to http; a TLS error is never retried over plain HTTP. Bodies read into
//! memory are bounded (manifests 4 MiB, token and error bodies 1 MiB).

#![warn(missing_docs)]

mod api;
mod auth;
pub mod auth_config;
mod client;
mod error;
mod headers;
pub mod mirrors;
mod push;
pub mod retry;
mod tls;
mod token;
pub mod upload;
mod upload_body;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use api::{BlobResponse, FetchedManifest, ServedManifest};
pub use client::RegistryClient;
pub use error::RegistryError;
pub use mirrors::{Endpoint, Mirror, MirrorConfig, MirrorSources};
pub use push::Referrers;
pub use retry::{Backoff, RetryPolicy, SharedProgress};
pub use upload::{MountOutcome, PushedBlob, UploadMethod, UploadOptions};
pub use upload_body::{BlobBody, ByteStream};

/// How many redirects one request may follow.
pub const MAX_REDIRECTS: usize = 10;
/// How many pages `list_tags` and `catalog` may follow.
pub const MAX_PAGES: usize = 10_000;

/// Options for a [`RegistryClient`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Verify the server's certificate (default). `false` accepts any certificate, as
    /// `--tls-verify=false` asks.
    pub tls_verify: bool,
    /// `None`: https, except for loopback registries (127.0.0.0/8, `::1`, `localhost`),
    /// where plain http is used when the server does not speak TLS at all. `Some(true)`:
    /// http only. `Some(false)`: https only.
    pub plain_http: Option<bool>,
    /// Like skopeo's `--cert-dir`: `*.crt` CA files and a `client.cert`/`client.key`
    /// pair. When set, the certs.d roots are not consulted.
    pub cert_dir: Option<PathBuf>,
    /// Roots holding `<host[:port]>/` directories of `*.crt` CAs and client pairs.
    pub certs_d_roots: Vec<PathBuf>,
    /// Explicit credentials (`--creds user:pass`); override credential files.
    pub credentials: Option<Credentials>,
    /// Explicit credential file (`--authfile`); else the lookup order of [`auth_config`].
    pub auth_file: Option<PathBuf>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Idle timeout: the longest wait for response headers or for the next body chunk.
    /// There is no total timeout: big blobs are slow but healthy.
    pub read_timeout: Duration,
    /// `User-Agent`.
    pub user_agent: String,
    /// How failed requests are retried (`--retry-times`, `--retry-delay`).
    pub retry: RetryPolicy,
    /// Where the client reports the retries it makes ([`hoist_types::ProgressEvent::Retry`]);
    /// `None` reports them only to `tracing`. Uploads also report the bytes they send
    /// ([`hoist_types::ProgressEvent::BlobProgress`]) here.
    pub progress: Option<SharedProgress>,
    /// How blobs are pushed: monolithic threshold and chunk size.
    pub upload: UploadOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: true,
            plain_http: None,
            cert_dir: None,
            certs_d_roots: vec![
                PathBuf::from("/etc/docker/certs.d"),
                PathBuf::from("/etc/containers/certs.d"),
            ],
            credentials: None,
            auth_file: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            user_agent: concat!("hoist/", env!("CARGO_PKG_VERSION")).to_owned(),
            retry: RetryPolicy::default(),
            progress: None,
            upload: UploadOptions::default(),
        }
    }
}

/// A username and password. When `username` is `<token>`, `password` is an identity
/// (OAuth2 refresh) token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name, or `<token>`.
    pub username: String,
    /// Password or identity token.
    pub password: String,
}

impl Credentials {
    /// Parse `user:password` as `--creds` takes it (split at the first `:`, so the
    /// password may contain colons); `None` without a colon or with an empty user.
    ///
    /// ```
    /// use hoist_registry::Credentials;
    ///
    /// let c = Credentials::from_user_pass("bot:pa:ss").unwrap();
    /// assert_eq!((c.username.as_str(), c.password.as_str()), ("bot", "pa:ss"));
    /// assert!(Credentials::from_user_pass(":nouser").is_none());
    /// assert!(Credentials::from_user_pass("nopassword").is_none());
    /// // The Debug form never shows the password.
    /// assert!(!format!("{c:?}").contains("pa:ss"));
    /// ```
    pub fn from_user_pass(s: &str) -> Option<Credentials> {
        let (u, p) = s.split_once(':')?;
        (!u.is_empty()).then(|| Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        })
    }

    /// Whether the password is an identity token.
    pub fn is_identity_token(&self) -> bool {
        self.username == auth::TOKEN_USERNAME
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_parse_and_redact() {
        let c = Credentials::from_user_pass("u:p:q").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:q"));
        assert!(Credentials::from_user_pass("nocolon").is_none());
        assert!(Credentials::from_user_pass(":p").is_none());
        assert!(!format!("{c:?}").contains("p:q"));
    }
}
