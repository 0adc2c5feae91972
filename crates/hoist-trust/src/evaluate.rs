//! The decision: does an image, with the signatures found for it, satisfy the requirements
//! the policy's scope gives it?
//!
//! For a signature requirement, one signature must pass every check: made by one of the
//! requirement's keys, its payload well formed, the manifest digest it claims equal to the
//! digest of the manifest being trusted (computed here from the exact bytes, with the
//! signature's algorithm), and its Docker reference accepted by the `signedIdentity` rule.

use std::path::Path;

use hoist_types::Digest;
use serde::Serialize;

use crate::gpg::Keyring;
use crate::payload::{self, PayloadKind};
use crate::policy::{KeySource, Policy, PolicyTarget, Requirement, Scope};
use crate::sigstore::{MAX_KEY_SIZE, PublicKeys};
use crate::{TrustError, gpg, read_limited};

/// A signature found for an image, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSignature {
    /// A simple-signing signature: an OpenPGP signed message (`dir:` `signature-N`, lookaside).
    SimpleSigning(Vec<u8>),
    /// A cosign signature: the `.sig` layer's payload and its signature annotation.
    Cosign {
        /// The payload bytes (the layer blob).
        payload: Vec<u8>,
        /// Base64 of the DER signature (`dev.cosignproject.cosign/signature`).
        signature: String,
    },
}

impl ImageSignature {
    /// `simple-signing` or `cosign`.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageSignature::SimpleSigning(_) => "simple-signing",
            ImageSignature::Cosign { .. } => "cosign",
        }
    }
}

/// A signature that satisfied a requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureMatch {
    /// Index into the signatures given to [`evaluate`].
    pub index: usize,
    /// The signer: an OpenPGP fingerprint, or `public key N of <source>`.
    pub signer: String,
    /// The Docker reference the signature names.
    pub docker_reference: String,
}

/// The outcome of one requirement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequirementOutcome {
    /// The requirement, described as in the policy.
    pub requirement: String,
    /// Whether it holds.
    pub satisfied: bool,
    /// The signatures that satisfy it (signature requirements only).
    pub satisfied_by: Vec<SignatureMatch>,
    /// Why each other signature did not, or why nothing could (no signature, unreadable key).
    pub problems: Vec<String>,
}

/// The decision for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// The policy scope that applied.
    pub scope: String,
    /// One outcome per requirement of that scope, in policy order.
    pub requirements: Vec<RequirementOutcome>,
}

impl Evaluation {
    /// Whether every requirement holds.
    pub fn allowed(&self) -> bool {
        self.requirements.iter().all(|r| r.satisfied)
    }

    /// `Ok` when allowed, else [`TrustError::Refused`] naming `image`, the scope, the first
    /// failing requirement and what was missing or wrong.
    pub fn check(&self, image: &str) -> Result<(), TrustError> {
        match self.requirements.iter().find(|r| !r.satisfied) {
            None => Ok(()),
            Some(r) => Err(TrustError::Refused {
                image: image.to_owned(),
                scope: self.scope.clone(),
                requirement: r.requirement.clone(),
                reason: r.problems.join("; "),
            }),
        }
    }
}

/// Evaluates `policy` for the image `target`, whose manifest is exactly `manifest`, with the
/// signatures found for it. Key files are read here.
pub fn evaluate(
    policy: &Policy,
    target: &PolicyTarget,
    manifest: &[u8],
    signatures: &[ImageSignature],
) -> Evaluation {
    let (scope, reqs) = policy.requirements_for(target);
    let requirements = reqs
        .iter()
        .map(|r| evaluate_one(r, target, manifest, signatures))
        .collect();
    Evaluation {
        scope: scope_string(&scope),
        requirements,
    }
}

fn scope_string(s: &Scope) -> String {
    s.to_string()
}

fn evaluate_one(
    req: &Requirement,
    target: &PolicyTarget,
    manifest: &[u8],
    signatures: &[ImageSignature],
) -> RequirementOutcome {
    let mut out = RequirementOutcome {
        requirement: req.describe(),
        satisfied: false,
        satisfied_by: Vec::new(),
        problems: Vec::new(),
    };
    let (keys, identity, kind) = match req {
        Requirement::InsecureAcceptAnything => {
            out.satisfied = true;
            return out;
        }
        Requirement::Reject => {
            out.problems
                .push("the policy rejects every image in this scope".into());
            return out;
        }
        Requirement::SignedBy { keys, identity } => (keys, identity, PayloadKind::SimpleSigning),
        Requirement::SigstoreSigned { keys, identity } => (keys, identity, PayloadKind::Cosign),
    };
    let verifier = match load_keys(keys, kind) {
        Ok(v) => v,
        Err(e) => {
            out.problems.push(e);
            return out;
        }
    };
    let mut seen = 0;
    for (i, sig) in signatures.iter().enumerate() {
        let (payload, signer) = match (sig, &verifier) {
            (ImageSignature::SimpleSigning(bytes), Verifier::Gpg(ring)) => {
                match ring.verify(bytes) {
                    Ok(v) => (v.payload, format!("OpenPGP key {}", v.fingerprint)),
                    Err(e) => {
                        seen += 1;
                        out.problems.push(format!("signature {}: {e}", i + 1));
                        continue;
                    }
                }
            }
            (ImageSignature::Cosign { payload, signature }, Verifier::Sigstore(pk)) => {
                match pk.verify(payload, signature) {
                    Ok(k) => (
                        payload.clone(),
                        format!("public key {} of {}", k + 1, keys.describe()),
                    ),
                    Err(e) => {
                        seen += 1;
                        out.problems.push(format!("signature {}: {e}", i + 1));
                        continue;
                    }
                }
            }
            _ => continue,
        };
        seen += 1;
        let claims = match payload::parse(kind, &payload) {
            Ok(c) => c,
            Err(e) => {
                out.problems
                    .push(format!("signature {}: invalid payload: {e}", i + 1));
                continue;
            }
        };
        if !digest_matches(&claims.manifest_digest, manifest) {
            out.problems.push(format!(
                "signature {}: signs manifest {}, not this image's {}",
                i + 1,
                claims.manifest_digest,
                Digest::sha256_of(manifest)
            ));
            continue;
        }
        if !identity.matches(target.docker_reference.as_ref(), &claims.docker_reference) {
            out.problems.push(format!(
                "signature {}: signed identity {} is not accepted for {} by {}",
                i + 1,
                claims.docker_reference,
                target
                    .docker_reference
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "an image without a Docker reference".into()),
                identity.describe()
            ));
            continue;
        }
        out.satisfied_by.push(SignatureMatch {
            index: i,
            signer,
            docker_reference: claims.docker_reference.to_string(),
        });
    }
    if seen == 0 {
        out.problems.push(format!(
            "no {} signature was found for the image",
            match kind {
                PayloadKind::SimpleSigning => "simple-signing (GPG)",
                PayloadKind::Cosign => "sigstore (cosign)",
            }
        ));
    }
    out.satisfied = !out.satisfied_by.is_empty();
    out
}

/// A manifest digest claim holds when the manifest's bytes hash to it (with its algorithm).
fn digest_matches(claimed: &Digest, manifest: &[u8]) -> bool {
    claimed.verifies(manifest)
}

enum Verifier {
    Gpg(Keyring),
    Sigstore(PublicKeys),
}

fn load_keys(keys: &KeySource, kind: PayloadKind) -> Result<Verifier, String> {
    let mut sources: Vec<(Vec<u8>, String)> = Vec::new();
    let read = |p: &Path| -> Result<(Vec<u8>, String), String> {
        let limit = match kind {
            PayloadKind::SimpleSigning => gpg::MAX_KEYRING_SIZE,
            PayloadKind::Cosign => MAX_KEY_SIZE,
        };
        read_limited(p, limit)
            .map(|b| (b, p.display().to_string()))
            .map_err(|e| format!("cannot read the key file: {e}"))
    };
    match keys {
        KeySource::Path(p) => sources.push(read(p)?),
        KeySource::Paths(ps) => {
            for p in ps {
                sources.push(read(p)?);
            }
        }
        KeySource::Data(d) => sources.push((d.clone(), "keyData".into())),
    }
    match kind {
        PayloadKind::SimpleSigning => {
            let mut ring = Keyring::default();
            for (b, what) in &sources {
                ring.add(b, what)?;
            }
            Ok(Verifier::Gpg(ring))
        }
        PayloadKind::Cosign => {
            let mut pk = PublicKeys::default();
            for (b, what) in &sources {
                pk.add_pem(b, what)?;
            }
            Ok(Verifier::Sigstore(pk))
        }
    }
}
