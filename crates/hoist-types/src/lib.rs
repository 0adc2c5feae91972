//! Core types of hoist: digests, media types, descriptors, platforms, references,
//! manifests and image configs.
//!
//! Everything here is pure logic with no I/O. A [`Digest`] is parsed once, strictly,
//! because it becomes a file name; manifests are parsed from the exact bytes served and
//! never re-serialised for storage.
//!
//! ```
//! use hoist_types::{Digest, Manifest, MediaType, Platform, Reference};
//!
//! // References are normalised the way Docker does it.
//! let r = Reference::parse("alpine")?;
//! assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
//! assert_eq!(r.familiar(), "alpine:latest");
//!
//! // Digests are strict: known algorithm, lower-case hex of the exact length.
//! let d = Digest::sha256_of(b"hello");
//! assert_eq!(Digest::parse(&d.to_string())?, d);
//! assert!(Digest::parse("sha256:ABC").is_err());
//!
//! // A manifest is parsed from the exact bytes served; its kind and media type come back.
//! let config = Digest::sha256_of(b"{}");
//! let bytes = format!(
//!     r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
//!        "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},
//!        "layers":[]}}"#
//! );
//! let (manifest, media_type) = Manifest::parse(bytes.as_bytes(), None)?;
//! assert_eq!(media_type, MediaType::OciManifest);
//! let Manifest::Image(image) = manifest else { unreachable!() };
//! assert_eq!(image.config.digest, config);
//!
//! // Platforms are normalised before they are compared.
//! let want: Platform = "linux/aarch64".parse()?;
//! assert!(want.matches(&Platform::new("linux", "arm64", Some("v8"))));
//! # Ok::<(), hoist_types::TypeError>(())
//! ```

#![warn(missing_docs)]

mod config;
mod descriptor;
mod digest;
mod manifest;
mod media_type;
mod platform;
pub mod progress;
mod reference;
pub mod schema1;

pub use config::{History, ImageConfig, RootFs, RunConfig, chain_ids};
pub use descriptor::{ANNOTATION_REF_NAME, Descriptor};
pub use digest::{Algorithm, Digest, Hasher};
pub use manifest::{
    ImageIndex, ImageManifest, MAX_CONFIG_SIZE, MAX_INDEX_DEPTH, MAX_MANIFEST_SIZE, MAX_SMALL_BODY,
    Manifest,
};
pub use media_type::{Compression, MediaType};
pub use platform::{
    ANNOTATION_REFERENCE_TYPE, EntrySkip, NoPlatformMatch, Platform, SkippedEntry, choose_entry,
};
pub use progress::{BlobKind, NoProgress, Progress, ProgressEvent};
pub use reference::{DEFAULT_REGISTRY, DEFAULT_TAG, Reference};

/// Errors from parsing and validating hoist's types.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypeError {
    /// A digest that is not `sha256:<64 hex>` or `sha512:<128 hex>` in lower case.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// The input (truncated).
        input: String,
        /// Which rule the input broke.
        reason: &'static str,
    },
    /// An image reference that does not follow Docker's grammar.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// The input (truncated).
        input: String,
        /// Which rule the input broke.
        reason: &'static str,
    },
    /// A platform that is not `os/arch[/variant]`.
    #[error("invalid platform {input:?}: {reason}")]
    InvalidPlatform {
        /// The input.
        input: String,
        /// Which rule the input broke.
        reason: &'static str,
    },
    /// A document that is not valid JSON of the expected shape.
    #[error("invalid {what}")]
    Json {
        /// What was parsed.
        what: &'static str,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A document over its size limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was refused (`"manifest"`, `"config"`).
        what: &'static str,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes ([`MAX_MANIFEST_SIZE`], [`MAX_CONFIG_SIZE`]).
        limit: u64,
    },
    /// A manifest whose structure is invalid.
    #[error("invalid manifest: {reason}")]
    InvalidManifest {
        /// What is wrong with its structure.
        reason: String,
    },
    /// The media type in the document contradicts the one declared for it.
    #[error("manifest declares media type {document} but was served as {declared}")]
    MediaTypeMismatch {
        /// Declared by the server or the referring descriptor.
        declared: String,
        /// Declared inside the document.
        document: String,
    },
    /// A schema 1 manifest that cannot be read or converted.
    #[error("invalid schema 1 manifest: {reason}")]
    Schema1 {
        /// What could not be read or converted.
        reason: String,
    },
    /// The number of layers differs from the number of diff IDs in the config.
    #[error("image has {layers} layers but its config lists {diff_ids} diff IDs")]
    LayerCountMismatch {
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// Content does not hash to the expected digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the content was declared or asked for with.
        expected: Digest,
        /// The digest of the bytes, with the expected digest's algorithm.
        actual: Digest,
    },
    /// A JSON document that is not UTF-8. JSON must be; the JSON parser skips the strings
    /// of fields it ignores without checking them, so this is checked first.
    #[error("invalid {what}: not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// What was parsed.
        what: &'static str,
        /// Offset of the first invalid byte.
        offset: usize,
    },
}

/// Content that is not what was declared for it: the one shape of a digest or size
/// mismatch, whichever crate found it (a registry's body, a blob written to the store, a
/// layer's diff ID, an archive's entry). Each crate's error answers `mismatch()` with it;
/// the façade's `hoist::Error::mismatch` finds it through the wrappers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// The bytes hash to another digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Digest {
        /// The digest declared (descriptor, reference, config).
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// There are more or fewer bytes than declared.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size {
        /// The size declared.
        expected: u64,
        /// The bytes seen (as far as they were read).
        actual: u64,
    },
}

impl TypeError {
    /// The digest mismatch this error is, if it is one.
    pub fn mismatch(&self) -> Option<Mismatch> {
        match self {
            TypeError::DigestMismatch { expected, actual } => Some(Mismatch::Digest {
                expected: expected.clone(),
                actual: actual.clone(),
            }),
            _ => None,
        }
    }
}

/// The path of an `Io { op, path, source }` error as its message shows it: `" PATH"`, or
/// nothing. Every library crate's `Io` variant has that one shape and the message
/// `cannot {op} {path}`, without the OS error's text (the error's source carries it).
#[doc(hidden)]
pub fn io_path(path: &Option<std::path::PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

/// An error and its causes on one line, `message: cause: cause` (what `{:#}` prints with
/// anyhow), for the places that keep an error as text only: progress notes, reports,
/// lists of problems. A library error's message leaves its cause to the chain, so its
/// `to_string()` alone would lose it.
///
/// ```
/// let err = hoist_types::ImageConfig::parse(b"{").unwrap_err();
/// let line = hoist_types::error_chain(&err);
/// assert!(line.starts_with("invalid image config: EOF while parsing"), "{line}");
/// ```
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    // Bounded: a chain longer than this is a cycle.
    for _ in 0..64 {
        let Some(c) = cur else { break };
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Refuses a JSON document that is not UTF-8 (found by the `manifest` fuzz target: a
/// manifest with an invalid byte in a field hoist ignores was accepted).
pub(crate) fn check_utf8(bytes: &[u8], what: &'static str) -> Result<(), TypeError> {
    std::str::from_utf8(bytes)
        .map(|_| ())
        .map_err(|e| TypeError::NotUtf8 {
            what,
            offset: e.valid_up_to(),
        })
}
