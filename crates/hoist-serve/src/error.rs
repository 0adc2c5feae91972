//! Errors: [`ServeError`] for the library's callers, [`ApiError`] for HTTP clients (the
//! OCI distribution-spec error codes and their status codes).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hoist_types::Digest;

/// The challenge answered with a 401.
pub(crate) const REALM_CHALLENGE: &str = "Basic realm=\"hoist serve\", charset=\"UTF-8\"";

/// What can stop the server (as opposed to one request).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Accepting or serving connections failed.
    #[error("serving on {addr} failed")]
    Serve {
        /// The listening address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The store could not be used.
    #[error(transparent)]
    Store(#[from] hoist_store::StoreError),
    /// A configuration value is wrong.
    #[error("invalid configuration: {what}")]
    Config {
        /// What is wrong, naming the value.
        what: String,
    },
    /// A file of the configuration could not be read.
    #[error("cannot read {}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// An error answered to a client, with its distribution-spec code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The path is no route of the API.
    #[error("no such route")]
    NotFound,
    /// A repository name outside the grammar.
    #[error("invalid repository name {name:?}")]
    NameInvalid {
        /// The name as sent.
        name: String,
    },
    /// A tag outside the grammar.
    #[error("invalid tag {tag:?}")]
    TagInvalid {
        /// The tag as sent.
        tag: String,
    },
    /// A malformed digest, or one of an algorithm other than sha256 and sha512.
    #[error("invalid digest {digest:?} (sha256 or sha512 expected)")]
    DigestInvalid {
        /// The digest as sent.
        digest: String,
    },
    /// The repository is not in the store.
    #[error("repository {name} is not known")]
    NameUnknown {
        /// The repository, with its registry.
        name: String,
    },
    /// The manifest is not in the store (or not in this repository).
    #[error("manifest {reference} is not known in {name}")]
    ManifestUnknown {
        /// The repository.
        name: String,
        /// The tag or digest.
        reference: String,
    },
    /// The blob is not in the store (or not in this repository).
    #[error("blob {digest} is not known in {name}")]
    BlobUnknown {
        /// The repository.
        name: String,
        /// The blob.
        digest: Digest,
    },
    /// `n` is not a number.
    #[error("invalid page size n={n:?}")]
    PaginationInvalid {
        /// The value sent.
        n: String,
    },
    /// A method this server does not offer on this route (writes without `--allow-push`).
    #[error("{what}")]
    Unsupported {
        /// What was asked.
        what: String,
    },
    /// Too many upload sessions are open.
    #[error("too many requests: {what}")]
    TooManyRequests {
        /// What is full.
        what: String,
    },
    /// No such upload session (or one of another repository).
    #[error("upload {id:?} is not known")]
    BlobUploadUnknown {
        /// The id sent.
        id: String,
    },
    /// An upload that cannot go on.
    #[error("invalid upload: {what}")]
    BlobUploadInvalid {
        /// Why.
        what: String,
    },
    /// A blob larger than allowed.
    #[error("size invalid: {what}")]
    SizeInvalid {
        /// Why.
        what: String,
    },
    /// A manifest put that does not parse or check.
    #[error("invalid manifest: {what}")]
    ManifestInvalid {
        /// Why.
        what: String,
    },
    /// A manifest put naming a blob the store lacks.
    #[error("manifest references blob {digest}, which was not pushed")]
    ManifestBlobUnknown {
        /// The missing blob.
        digest: Digest,
    },
    /// No valid credentials (`--htpasswd`): 401 with `WWW-Authenticate: Basic`.
    #[error("authentication required")]
    Unauthorized,
    /// The store failed (an I/O error, a corrupt blob): logged, answered as 500.
    #[error("internal error: {0}")]
    Internal(String),
    /// The upstream registry could not deliver (pull-through).
    #[error("upstream: {0}")]
    Upstream(String),
    /// The trust policy refuses the image (pull-through): 403 `DENIED`.
    #[error("denied by the trust policy: {0}")]
    Denied(String),
}

impl ApiError {
    /// The distribution-spec error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound => "NOT_FOUND",
            ApiError::NameInvalid { .. } => "NAME_INVALID",
            ApiError::TagInvalid { .. } => "TAG_INVALID",
            ApiError::DigestInvalid { .. } => "DIGEST_INVALID",
            ApiError::NameUnknown { .. } => "NAME_UNKNOWN",
            ApiError::ManifestUnknown { .. } => "MANIFEST_UNKNOWN",
            ApiError::BlobUnknown { .. } => "BLOB_UNKNOWN",
            ApiError::PaginationInvalid { .. } => "PAGINATION_NUMBER_INVALID",
            ApiError::Unsupported { .. } => "UNSUPPORTED",
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::TooManyRequests { .. } => "TOOMANYREQUESTS",
            ApiError::BlobUploadUnknown { .. } => "BLOB_UPLOAD_UNKNOWN",
            ApiError::BlobUploadInvalid { .. } => "BLOB_UPLOAD_INVALID",
            ApiError::SizeInvalid { .. } => "SIZE_INVALID",
            ApiError::ManifestInvalid { .. } => "MANIFEST_INVALID",
            ApiError::ManifestBlobUnknown { .. } => "MANIFEST_BLOB_UNKNOWN",
            ApiError::Internal(_) => "UNKNOWN",
            ApiError::Upstream(_) => "UNKNOWN",
            ApiError::Denied(_) => "DENIED",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound
            | ApiError::NameUnknown { .. }
            | ApiError::ManifestUnknown { .. }
            | ApiError::BlobUnknown { .. } => StatusCode::NOT_FOUND,
            ApiError::NameInvalid { .. }
            | ApiError::TagInvalid { .. }
            | ApiError::DigestInvalid { .. }
            | ApiError::PaginationInvalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unsupported { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BlobUploadUnknown { .. } => StatusCode::NOT_FOUND,
            ApiError::BlobUploadInvalid { .. }
            | ApiError::SizeInvalid { .. }
            | ApiError::ManifestInvalid { .. }
            | ApiError::ManifestBlobUnknown { .. } => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Denied(_) => StatusCode::FORBIDDEN,
        }
    }
}

impl From<hoist_store::StoreError> for ApiError {
    fn from(e: hoist_store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{"code": self.code(), "message": self.to_string(), "detail": null}]
        });
        let mut r = (self.status(), body.to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if matches!(self, ApiError::Unauthorized) {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(REALM_CHALLENGE),
            );
        }
        r
    }
}
