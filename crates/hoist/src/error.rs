//! The façade's one error type: every crate's error, wrapped, with a coarse [`ErrorKind`]
//! for callers that branch on the cause and an [`Error::is_retryable`] for those that retry.

use hoist_mkfs::MkfsError;
use hoist_registry::RegistryError;
use hoist_store::StoreError;
use hoist_transport::TransportError;
use hoist_trust::TrustError;
use hoist_types::TypeError;
use hoist_unpack::UnpackError;

/// What went wrong, from any of the crates below the façade.
///
/// Each crate's error is boxed, so a `Result<T, Error>` stays small. The message of each
/// variant is the wrapped crate's message, which names the URL, path,
/// digest or reference concerned. Match on [`Error::kind`] rather than on the variants:
/// the same failure (a missing image, say) can come through several crates.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let client = hoist::Client::builder().store(dir.path()).build()?;
/// let err = client.image("example.com/absent:1").unwrap_err();
/// assert_eq!(err.kind(), hoist::ErrorKind::NotFound);
/// assert!(!err.is_retryable());
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Moving an image failed (pull, copy, push, load, save, inspect).
    #[error(transparent)]
    Transport(Box<TransportError>),
    /// The local store failed or refused.
    #[error(transparent)]
    Store(Box<StoreError>),
    /// The registry failed or refused (tags, and errors outside a copy).
    #[error(transparent)]
    Registry(Box<RegistryError>),
    /// Unpacking layers failed.
    #[error(transparent)]
    Unpack(Box<UnpackError>),
    /// Building a root filesystem failed.
    #[error(transparent)]
    Mkfs(Box<MkfsError>),
    /// A reference, platform or document did not parse.
    #[error(transparent)]
    Types(Box<TypeError>),
    /// The trust policy could not be read or refused the image.
    #[error(transparent)]
    Trust(Box<TrustError>),
    /// An argument given to the façade is invalid.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file the façade opens itself (an archive to load) could not be opened.
    #[error("cannot {op}{}", hoist_types::io_path(.path))]
    Io {
        /// What was being done (`"open"`).
        op: &'static str,
        /// The path.
        path: Option<std::path::PathBuf>,
        /// The OS error.
        source: std::io::Error,
    },
    /// The blocking client could not start its runtime.
    #[error("cannot start the runtime of the blocking client")]
    Runtime(#[source] std::io::Error),
    /// A worker thread panicked or was cancelled.
    #[error("internal task failed: {what}")]
    Task {
        /// The join error.
        what: String,
    },
}

macro_rules! from_boxed {
    ($($variant:ident($ty:ty)),* $(,)?) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Error {
                Error::$variant(Box::new(e))
            }
        }
    )*};
}

from_boxed! {
    Transport(TransportError),
    Store(StoreError),
    Registry(RegistryError),
    Unpack(UnpackError),
    Mkfs(MkfsError),
    Types(TypeError),
    Trust(TrustError),
}

/// The façade's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The broad class of an [`Error`], for callers that branch on the cause.
///
/// ```
/// let kind = hoist::ErrorKind::NotFound;
/// assert_ne!(kind, hoist::ErrorKind::Network);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An image, name, blob, repository or file that is not there.
    NotFound,
    /// An argument, reference, platform or option that is invalid.
    InvalidInput,
    /// The registry refused the credentials (401, 403).
    Unauthorized,
    /// Reaching the registry failed: connection, TLS, timeout, HTTP status.
    Network,
    /// Content that is not what it claims: digest or size mismatches, corrupt blobs,
    /// invalid documents, unsafe or malformed archives and layers.
    Integrity,
    /// The trust policy refused the image, or could not be applied.
    Policy,
    /// Something hoist does not do (yet), or needs (root, a tool) that is absent.
    Unsupported,
    /// Local I/O or resources: disk full, permissions, a read-only store.
    Io,
    /// Anything else (internal failures).
    Other,
}

impl Error {
    /// The broad class of this error (cheap: a match, no allocation).
    ///
    /// ```
    /// let e = hoist::Error::InvalidArgument { what: "jobs", reason: "must be at least 1".into() };
    /// assert_eq!(e.kind(), hoist::ErrorKind::InvalidInput);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Transport(e) => transport_kind(e),
            Error::Store(e) => store_kind(e),
            Error::Registry(e) => registry_kind(e),
            Error::Unpack(e) => unpack_kind(e),
            Error::Mkfs(e) => mkfs_kind(e),
            Error::Types(_) => ErrorKind::InvalidInput,
            Error::Trust(_) => ErrorKind::Policy,
            Error::InvalidArgument { .. } => ErrorKind::InvalidInput,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Io { .. } | Error::Runtime(_) => ErrorKind::Io,
            Error::Task { .. } => ErrorKind::Other,
        }
    }

    /// Whether trying again may succeed: a transient registry failure (connection, body
    /// cut short, timeout, 408, 429, 5xx). hoist already retried these with backoff
    /// ([`crate::RegistryOptions`]'s `retry`), so this is for a caller's own, coarser retry.
    ///
    /// ```
    /// let e = hoist::Error::InvalidArgument { what: "jobs", reason: "must be at least 1".into() };
    /// assert!(!e.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.registry_error()
            .is_some_and(|e| e.root().is_retryable())
    }

    /// The digest or size mismatch behind this error, if it is one, in the one shape every
    /// crate shares ([`hoist_types::Mismatch`]): a registry's body, a blob written to the
    /// store, a layer's diff ID or an archive's entry that is not what was declared.
    ///
    /// ```
    /// let e = hoist::Error::InvalidArgument { what: "jobs", reason: "must be at least 1".into() };
    /// assert!(e.mismatch().is_none());
    /// ```
    pub fn mismatch(&self) -> Option<hoist_types::Mismatch> {
        match self {
            Error::Transport(e) => e.mismatch(),
            Error::Store(e) => e.mismatch(),
            Error::Registry(e) => e.mismatch(),
            Error::Unpack(e) => e.mismatch(),
            Error::Mkfs(e) => match &**e {
                MkfsError::Unpack(e) => e.mismatch(),
                MkfsError::Store(e) => e.mismatch(),
                _ => None,
            },
            Error::Types(e) => e.mismatch(),
            _ => None,
        }
    }

    /// The registry error at the heart of this one, if any (through the copy engine's
    /// wrapper).
    ///
    /// ```
    /// let e = hoist::Error::InvalidArgument { what: "jobs", reason: "must be at least 1".into() };
    /// assert!(e.registry_error().is_none());
    /// ```
    pub fn registry_error(&self) -> Option<&RegistryError> {
        match self {
            Error::Registry(e) => Some(e),
            Error::Transport(e) => match &**e {
                TransportError::Registry(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }
}

fn registry_kind(e: &RegistryError) -> ErrorKind {
    let e = e.root();
    if e.is_unauthorized() {
        return ErrorKind::Unauthorized;
    }
    match e {
        RegistryError::NotFound { .. } => ErrorKind::NotFound,
        RegistryError::InvalidRegistry { .. } | RegistryError::InvalidArgument { .. } => {
            ErrorKind::InvalidInput
        }
        RegistryError::SizeMismatch { .. }
        | RegistryError::DigestMismatch { .. }
        | RegistryError::Manifest { .. }
        | RegistryError::TooLarge { .. } => ErrorKind::Integrity,
        RegistryError::AuthFile { .. }
        | RegistryError::Config { .. }
        | RegistryError::TlsConfig { .. } => ErrorKind::InvalidInput,
        RegistryError::Unsupported { .. } => ErrorKind::Unsupported,
        RegistryError::Io { .. } => ErrorKind::Io,
        _ => ErrorKind::Network,
    }
}

fn store_kind(e: &StoreError) -> ErrorKind {
    match e {
        StoreError::ImageNotFound { .. }
        | StoreError::NameNotFound { .. }
        | StoreError::BlobNotFound { .. } => ErrorKind::NotFound,
        StoreError::AmbiguousPrefix { .. }
        | StoreError::PrefixTooShort { .. }
        | StoreError::InvalidQuery { .. }
        | StoreError::NotATag { .. }
        | StoreError::MultipleNames { .. } => ErrorKind::InvalidInput,
        StoreError::DigestMismatch { .. }
        | StoreError::SizeMismatch { .. }
        | StoreError::CorruptBlob { .. }
        | StoreError::TooLarge { .. }
        | StoreError::InvalidDocument { .. }
        | StoreError::Corrupt { .. }
        | StoreError::NotAnImageManifest { .. }
        | StoreError::NotAnIndex { .. }
        | StoreError::IndexMissingManifest { .. }
        | StoreError::LayerCountMismatch { .. } => ErrorKind::Integrity,
        StoreError::UnsupportedVersion { .. } => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    }
}

fn transport_kind(e: &TransportError) -> ErrorKind {
    match e {
        TransportError::Registry(e) => registry_kind(e),
        TransportError::Store(e) => store_kind(e),
        TransportError::Types(_) | TransportError::InvalidImageRef { .. } => {
            ErrorKind::InvalidInput
        }
        TransportError::Trust(_) | TransportError::Signing { .. } => ErrorKind::Policy,
        TransportError::NoMatchingPlatform { .. }
        | TransportError::BlobNotFound { .. }
        | TransportError::NoImage { .. }
        | TransportError::NoSource { .. } => ErrorKind::NotFound,
        TransportError::NotSupportedBy { .. }
        | TransportError::FormatNotAccepted { .. }
        | TransportError::NotAnImage { .. }
        | TransportError::ConversionRefused { .. }
        | TransportError::ZstdInDockerSchema2 { .. }
        | TransportError::NestedIndex { .. }
        | TransportError::SignaturesNotKept { .. }
        | TransportError::ForeignLayer { .. }
        | TransportError::SignaturesWouldBreak { .. } => ErrorKind::Unsupported,
        TransportError::Io { .. } | TransportError::Stream { .. } => ErrorKind::Io,
        TransportError::Task { .. } | TransportError::OutOfOrder { .. } => ErrorKind::Other,
        _ => ErrorKind::Integrity,
    }
}

fn unpack_kind(e: &UnpackError) -> ErrorKind {
    match e {
        UnpackError::Store(e) => store_kind(e),
        UnpackError::WorkerPanicked { .. } => ErrorKind::Other,
        UnpackError::Io { .. } | UnpackError::EntryIo { .. } | UnpackError::Output { .. } => {
            ErrorKind::Io
        }
        UnpackError::TargetNotEmpty { .. }
        | UnpackError::InvalidIdMap { .. }
        | UnpackError::Unmapped { .. } => ErrorKind::InvalidInput,
        UnpackError::Unsupported { .. }
        | UnpackError::UnsupportedCompression { .. }
        | UnpackError::UnsupportedMediaType { .. } => ErrorKind::Unsupported,
        _ => ErrorKind::Integrity,
    }
}

fn mkfs_kind(e: &MkfsError) -> ErrorKind {
    match e {
        MkfsError::Unpack(e) => unpack_kind(e),
        MkfsError::Store(e) => store_kind(e),
        MkfsError::InvalidSize { .. }
        | MkfsError::TooSmall { .. }
        | MkfsError::VerityNeedsImage => ErrorKind::InvalidInput,
        MkfsError::ToolMissing { .. }
        | MkfsError::NeedsRoot { .. }
        | MkfsError::Ext4Unsupported { .. }
        | MkfsError::ErofsUnsupported { .. } => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Error {
        Error::Task {
            what: e.to_string(),
        }
    }
}
