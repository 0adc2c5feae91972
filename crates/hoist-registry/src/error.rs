//! The one error type of this crate. Every message names the URL, digest or path involved.

use std::path::PathBuf;
use std::time::Duration;

use hoist_types::{Digest, Mismatch, TypeError};

/// Errors from talking to a registry or reading credential files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry name is not `host[:port]`.
    #[error("invalid registry name {registry:?}: {reason}")]
    InvalidRegistry {
        /// The name as given.
        registry: String,
        /// Why.
        reason: &'static str,
    },
    /// A repository name, tag or other argument that cannot go into a URL.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        /// What it is ("repository", "tag or digest").
        what: &'static str,
        /// The value (truncated).
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// The TCP connection or the request failed before a response arrived.
    #[error("{method} {url}: connection failed")]
    Connect {
        /// Method.
        method: &'static str,
        /// URL.
        url: String,
        /// The transport's error.
        source: reqwest::Error,
    },
    /// A TLS failure, such as an untrusted or invalid certificate. Never downgraded to HTTP.
    #[error("{url}: TLS error: {reason} (the registry's certificate is not trusted or invalid)")]
    Tls {
        /// URL.
        url: String,
        /// rustls' description.
        reason: String,
    },
    /// The TLS or client-certificate configuration could not be loaded.
    #[error("TLS configuration {path}: {reason}")]
    TlsConfig {
        /// The certificate or key file (or directory).
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No response headers or body data arrived within the idle timeout.
    #[error("{url}: no data for {after:?} while {what}")]
    Timeout {
        /// URL.
        url: String,
        /// What was awaited ("waiting for the response", "reading the body").
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// Reading the body failed mid-way.
    #[error("{url}: reading the body failed")]
    Body {
        /// URL.
        url: String,
        /// The transport's error.
        source: reqwest::Error,
    },
    /// Authentication failed or is required but no usable credentials exist.
    #[error("{url}: unauthorized: {message}")]
    Unauthorized {
        /// The registry or token-server URL that refused.
        url: String,
        /// The reason, with the registry's error code and message when it gave one.
        message: String,
    },
    /// The registry understood who we are and refused (HTTP 403).
    #[error("{url}: access denied: {message}")]
    Denied {
        /// URL.
        url: String,
        /// The registry's error code and message.
        message: String,
    },
    /// The manifest, tag, blob or repository does not exist (HTTP 404).
    #[error("{url}: not found: {what}")]
    NotFound {
        /// URL.
        url: String,
        /// What was missing, with the registry's error code and message when it gave one.
        what: String,
    },
    /// Any other unexpected HTTP status.
    #[error("{method} {url}: HTTP {status}: {message}")]
    Http {
        /// Method.
        method: &'static str,
        /// URL.
        url: String,
        /// The status code.
        status: u16,
        /// The registry's error code and message, or the status' reason phrase.
        message: String,
        /// `Retry-After`, when the server sent one (429, 503).
        retry_after: Option<Duration>,
    },
    /// A body or declared length over its limit.
    #[error("{url}: {what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// URL.
        url: String,
        /// What ("manifest", "token response", "blob sha256:…").
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A blob whose size differs from its descriptor.
    #[error("{url}: blob {digest} is {actual} bytes, expected {expected} bytes")]
    SizeMismatch {
        /// URL.
        url: String,
        /// The blob's digest.
        digest: Digest,
        /// From the descriptor.
        expected: u64,
        /// Received or declared by the server.
        actual: u64,
    },
    /// Content that does not hash to the expected digest.
    #[error("{url}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// URL.
        url: String,
        /// Expected (reference, descriptor or `Docker-Content-Digest`).
        expected: Digest,
        /// Computed over the exact bytes.
        actual: Digest,
    },
    /// A manifest that cannot be parsed.
    #[error("{url}")]
    Manifest {
        /// URL.
        url: String,
        /// The parser's error.
        source: TypeError,
    },
    /// A response that breaks the protocol (bad JSON, bad header, bad Content-Range).
    #[error("{url}: invalid response: {reason}")]
    InvalidResponse {
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A redirect that is refused (https→http, bad scheme, bad Location).
    #[error("redirect from {from} to {to:?} refused: {reason}")]
    RedirectRefused {
        /// URL that redirected.
        from: String,
        /// The Location (raw).
        to: String,
        /// Why.
        reason: &'static str,
    },
    /// More redirects than allowed.
    #[error("{url}: more than {limit} redirects")]
    TooManyRedirects {
        /// The first URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// A pagination link that is refused or a listing that does not end.
    #[error("{url}: pagination: {reason}")]
    Pagination {
        /// The page URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A credential file that cannot be read, parsed or written.
    #[error("credentials file {path}: {reason}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Local I/O failed (a credential file).
    #[error("cannot {op}{}", hoist_types::io_path(.path))]
    Io {
        /// What was being done (`"read credentials file"`).
        op: &'static str,
        /// The file.
        path: Option<PathBuf>,
        /// The OS error.
        source: std::io::Error,
    },
    /// A `docker-credential-*` helper that is missing or failed.
    #[error("credential helper docker-credential-{helper} ({action} for {server}): {reason}")]
    CredentialHelper {
        /// Helper name (the part after `docker-credential-`).
        helper: String,
        /// `get`, `store` or `erase`.
        action: &'static str,
        /// The server URL asked about.
        server: String,
        /// Why.
        reason: String,
    },
    /// A blob body that ended cleanly before all its bytes arrived (a truncated body
    /// without a transport error). Retryable: the download resumes from `received`.
    #[error(
        "{url}: size mismatch: the body of blob {digest} ended after {received} bytes, expected {expected} bytes"
    )]
    ShortBody {
        /// URL.
        url: String,
        /// The blob.
        digest: Digest,
        /// Bytes of the blob received (an offset in the blob: a resumed body counts from
        /// its start).
        received: u64,
        /// The blob's size (or the end of the requested range).
        expected: u64,
    },
    /// A `Range` request answered with a `Content-Range` (or a 416) that does not match:
    /// the server's range support cannot be trusted, so the caller restarts the blob
    /// without `Range`.
    #[error("{url}: asked for bytes {requested}, the server answered {answered}")]
    RangeMismatch {
        /// URL.
        url: String,
        /// The range asked for (`START-END`).
        requested: String,
        /// What came back: the `Content-Range`, or the status.
        answered: String,
    },
    /// A redirect target on another origin (object storage, a CDN) refused a blob request
    /// with 401 or 403: typically a presigned URL that expired. Retryable: the next
    /// attempt starts again from the registry's URL and gets a fresh one.
    #[error("{url}: the redirect target refused the request with HTTP {status}: {message}")]
    RedirectTargetRefused {
        /// The redirect target.
        url: String,
        /// 401 or 403.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// A transient failure that persisted through every retry the policy allows.
    #[error("gave up after {attempts} attempts in {elapsed:.1?}")]
    GaveUp {
        /// Attempts made, the first included.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last failure.
        #[source]
        source: Box<RegistryError>,
    },
    /// A mirror or registry configuration file that cannot be read or parsed.
    #[error("registry configuration {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The registry refused a push request (an upload, a mount or a manifest) with a 4xx
    /// other than 401, 403 and 404: the error names its code, e.g. `DIGEST_INVALID`,
    /// `SIZE_INVALID`, `BLOB_UPLOAD_INVALID`, `MANIFEST_INVALID`, `MANIFEST_BLOB_UNKNOWN`,
    /// `TAG_INVALID`.
    #[error("{method} {url}: the registry refused {what}: HTTP {status}: {message}")]
    PushRejected {
        /// Method.
        method: &'static str,
        /// URL.
        url: String,
        /// What was pushed ("blob sha256:… to REPO", "manifest REPO:TAG").
        what: String,
        /// The status code.
        status: u16,
        /// The Distribution error code (`errors[0].code`), when the body had one.
        code: Option<String>,
        /// The registry's error code and message, or the status' reason phrase.
        message: String,
    },
    /// Reading the bytes of a blob to push from the caller's source (file, reader,
    /// stream, source registry) failed.
    #[error("reading blob {digest} to push failed at byte {offset}: {reason}")]
    UploadSource {
        /// The blob.
        digest: Digest,
        /// Bytes read before the failure.
        offset: u64,
        /// The source's error.
        reason: String,
    },
    /// The source of a blob to push gave more or fewer bytes than its descriptor says.
    #[error(
        "the source of blob {digest} is not {expected} bytes as its descriptor says (it gave {actual})"
    )]
    SourceSize {
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        expected: u64,
        /// Bytes the source gave (for a longer source: as far as it was read).
        actual: u64,
    },
    /// The bytes of a blob to push do not hash to its digest. The upload is abandoned
    /// before the registry can complete it.
    #[error("the source of blob {expected} does not match its digest: its bytes hash to {actual}")]
    SourceDigest {
        /// The descriptor's digest.
        expected: Digest,
        /// The digest of the bytes the source gave.
        actual: Digest,
    },
    /// An upload failed in a way that needs the blob's bytes again, and its body is a
    /// one-shot reader or stream already read past the bytes kept for replay. Push from a
    /// file or a reopenable source to let hoist retry.
    #[error(
        "{url}: pushing blob {digest} failed and cannot be retried: its source is a one-shot stream already read to byte {offset}"
    )]
    NotReplayable {
        /// The upload URL.
        url: String,
        /// The blob.
        digest: Digest,
        /// How far the source had been read.
        offset: u64,
        /// The failure that needed a replay.
        #[source]
        cause: Box<RegistryError>,
    },
    /// The registry does not implement an optional API (the referrers API of OCI
    /// Distribution 1.1, for example).
    #[error("{url}: {what} is not supported by this registry (HTTP {status}: {message})")]
    Unsupported {
        /// URL.
        url: String,
        /// The API.
        what: &'static str,
        /// The status code that says so.
        status: u16,
        /// The registry's message.
        message: String,
    },
    /// The client could not be built.
    #[error("building the HTTP client for {registry}")]
    ClientBuild {
        /// Registry.
        registry: String,
        /// The builder's error.
        source: reqwest::Error,
    },
}

impl RegistryError {
    /// The thing asked for does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// Authentication failed or was refused (401/403).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            RegistryError::Unauthorized { .. } | RegistryError::Denied { .. }
        )
    }

    /// A transient failure worth retrying: connection and body errors, timeouts, bodies
    /// that end early or are longer than declared, a refused redirect target (an expired
    /// presigned URL), 408, 429 and 5xx. Other 4xx are not retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Connect { .. }
            | RegistryError::Body { .. }
            | RegistryError::Timeout { .. }
            | RegistryError::ShortBody { .. }
            | RegistryError::SizeMismatch { .. }
            | RegistryError::RedirectTargetRefused { .. } => true,
            RegistryError::Http { status, .. } => {
                matches!(status, 408 | 429) || (500..=599).contains(status)
            }
            _ => false,
        }
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The digest or size mismatch this error is (through [`RegistryError::GaveUp`]), if
    /// it is one: a body of the wrong size or digest, or a push source that is not its
    /// descriptor.
    pub fn mismatch(&self) -> Option<Mismatch> {
        match self.root() {
            RegistryError::SizeMismatch {
                expected, actual, ..
            }
            | RegistryError::SourceSize {
                expected, actual, ..
            } => Some(Mismatch::Size {
                expected: *expected,
                actual: *actual,
            }),
            RegistryError::ShortBody {
                received, expected, ..
            } => Some(Mismatch::Size {
                expected: *expected,
                actual: *received,
            }),
            RegistryError::DigestMismatch {
                expected, actual, ..
            }
            | RegistryError::SourceDigest { expected, actual } => Some(Mismatch::Digest {
                expected: expected.clone(),
                actual: actual.clone(),
            }),
            RegistryError::Manifest { source, .. } => source.mismatch(),
            _ => None,
        }
    }

    /// The failure itself, through a [`RegistryError::GaveUp`] wrapper.
    pub fn root(&self) -> &RegistryError {
        match self {
            RegistryError::GaveUp { source, .. } => source.root(),
            e => e,
        }
    }
}
