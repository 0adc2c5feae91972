//! Trust for hoist: which images may enter the store or a destination.
//!
//! - [`policy`]: containers-policy.json, parsed strictly, and the scope that applies to an
//!   image ([`Policy::requirements_for`]).
//! - [`identity`]: the `signedIdentity` rules.
//! - [`payload`]: the simple-signing and cosign payloads (what a signature claims).
//! - [`gpg`]: OpenPGP keyrings and simple-signing verification (rpgp).
//! - [`registries_d`]: registries.d lookaside stores and sigstore attachments.
//! - [`sigstore`]: cosign-style ECDSA P-256 keys, signatures and encrypted private keys.
//! - [`mod@evaluate`]: the decision for one image and its signatures ([`fn@evaluate`]).
//!
//! Everything here is pure logic over bytes the caller supplies, apart from reading the
//! policy and key files the policy names.
//!
//! ```
//! use hoist_trust::payload::{self, PayloadKind};
//! use hoist_trust::sigstore::PrivateKey;
//! use hoist_trust::{ImageSignature, Named, Policy, PolicyTarget, evaluate};
//! use hoist_types::Digest;
//!
//! // A cosign-style key pair; the policy trusts the public half for one repository.
//! let key = PrivateKey::generate();
//! let dir = tempfile::tempdir()?;
//! let key_path = dir.path().join("cosign.pub");
//! std::fs::write(&key_path, key.public_pem())?;
//! let policy = Policy::parse(
//!     serde_json::json!({
//!         "default": [{"type": "reject"}],
//!         "transports": {"docker": {
//!             "example.com/app": [{"type": "sigstoreSigned", "keyPath": key_path}]
//!         }}
//!     })
//!     .to_string()
//!     .as_bytes(),
//! )?;
//!
//! // The image: its exact manifest bytes, and a signature claiming their digest.
//! let image = Named::parse("example.com/app:1")?;
//! let manifest = br#"{"schemaVersion":2,"layers":[]}"#;
//! let claims = payload::build(PayloadKind::Cosign, &Digest::sha256_of(manifest), &image, None);
//! let signature = ImageSignature::Cosign { signature: key.sign(&claims), payload: claims };
//!
//! let target = PolicyTarget::docker("docker", &image);
//! let signed = evaluate(&policy, &target, manifest, std::slice::from_ref(&signature));
//! assert!(signed.allowed(), "{signed:?}");
//! assert_eq!(signed.scope, "transports.docker.\"example.com/app\"");
//!
//! // Without the signature, or for another manifest, the requirement fails.
//! assert!(!evaluate(&policy, &target, manifest, &[]).allowed());
//! let other = evaluate(&policy, &target, b"{}", &[signature]);
//! assert!(other.check("example.com/app:1").is_err());
//!
//! // Other repositories fall to the default scope, which rejects.
//! let elsewhere = PolicyTarget::docker("docker", &Named::parse("example.com/other")?);
//! assert_eq!(evaluate(&policy, &elsewhere, manifest, &[]).scope, "default");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod evaluate;
pub mod gpg;
pub mod identity;
pub mod named;
pub mod payload;
pub mod policy;
pub mod registries_d;
pub mod sigstore;

use std::io::Read as _;
use std::path::{Path, PathBuf};

pub use evaluate::{Evaluation, ImageSignature, evaluate};
pub use identity::SignedIdentity;
pub use named::Named;
pub use policy::{KeySource, Policy, PolicyTarget, Requirement, Scope};

/// Errors of hoist-trust. Each names the file, reference or requirement involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A file could not be read.
    #[error("cannot {op}{}", hoist_types::io_path(.path))]
    Io {
        /// What was being done (`"read"`).
        op: &'static str,
        /// The file.
        path: Option<PathBuf>,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is larger than hoist accepts for its kind.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The policy file is malformed or asks for something hoist does not do.
    #[error("invalid policy {}: {reason}", if path.as_os_str().is_empty() { "(inline)".into() } else { path.display().to_string() })]
    PolicyInvalid {
        /// The policy file (empty when parsed from bytes).
        path: PathBuf,
        /// What is wrong, with the JSON path.
        reason: String,
    },
    /// The policy refused an image.
    #[error("{image} is refused by the policy: scope {scope} requires {requirement}: {reason}")]
    Refused {
        /// The image (transport and reference).
        image: String,
        /// The scope whose requirements applied.
        scope: String,
        /// The first requirement that does not hold.
        requirement: String,
        /// What was missing or wrong.
        reason: String,
    },
    /// A Docker reference that does not parse.
    #[error("invalid Docker reference {input:?}: {reason}")]
    BadReference {
        /// The input (truncated).
        input: String,
        /// Why.
        reason: String,
    },
}

/// Reads at most `limit` bytes of `path`; a larger file is an error, never truncated.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, TrustError> {
    let io = |source| TrustError::Io {
        op: "read",
        path: Some(path.to_path_buf()),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(TrustError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(buf)
}
