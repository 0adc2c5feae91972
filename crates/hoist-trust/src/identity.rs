//! `signedIdentity`: how the Docker reference inside a signature must relate to the image
//! being trusted (containers-policy.json(5)).

use crate::named::Named;

/// A `signedIdentity` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    /// `matchExact`: both name a tag or digest, and they are equal.
    MatchExact,
    /// `matchRepoDigestOrExact` (the default): if the image is named by digest, the
    /// repositories are equal; if by tag, the references are equal.
    MatchRepoDigestOrExact,
    /// `matchRepository`: the repositories are equal, whatever the tags.
    MatchRepository,
    /// `exactReference`: the signature names exactly this reference (tag or digest).
    ExactReference(Named),
    /// `exactRepository`: the signature names this repository.
    ExactRepository(Named),
    /// `remapIdentity`: an image under `prefix` is treated as if it were under
    /// `signed_prefix`, then matched like `matchRepoDigestOrExact`.
    RemapIdentity {
        /// Prefix of the image's reference (host, namespace or repository).
        prefix: String,
        /// What replaces it before matching.
        signed_prefix: String,
    },
}

impl SignedIdentity {
    /// The rule as the policy writes it (`matchExact`, `exactReference docker.io/a:b`, …).
    pub fn describe(&self) -> String {
        match self {
            SignedIdentity::MatchExact => "matchExact".into(),
            SignedIdentity::MatchRepoDigestOrExact => "matchRepoDigestOrExact".into(),
            SignedIdentity::MatchRepository => "matchRepository".into(),
            SignedIdentity::ExactReference(r) => format!("exactReference {r}"),
            SignedIdentity::ExactRepository(r) => format!("exactRepository {}", r.name()),
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            } => format!("remapIdentity {prefix} → {signed_prefix}"),
        }
    }

    /// Whether a signature claiming `signed` is acceptable for the image known as `image`
    /// (`None` when the image's transport gives it no Docker reference: only the `exact*`
    /// rules can match then).
    ///
    /// ```
    /// use hoist_trust::{Named, SignedIdentity};
    ///
    /// let image = Named::parse("example.com/app@sha256:1111111111111111111111111111111111111111111111111111111111111111")?;
    /// let signed = Named::parse("example.com/app:1")?;
    /// // By digest, the default rule only wants the same repository…
    /// assert!(SignedIdentity::MatchRepoDigestOrExact.matches(Some(&image), &signed));
    /// // …and matchExact the same reference.
    /// assert!(!SignedIdentity::MatchExact.matches(Some(&image), &signed));
    /// assert!(!SignedIdentity::MatchRepository.matches(Some(&image), &Named::parse("example.com/other:1")?));
    /// # Ok::<(), hoist_trust::TrustError>(())
    /// ```
    pub fn matches(&self, image: Option<&Named>, signed: &Named) -> bool {
        match self {
            SignedIdentity::MatchExact => image.is_some_and(|i| match_exact(i, signed)),
            SignedIdentity::MatchRepoDigestOrExact => {
                image.is_some_and(|i| match_repo_digest_or_exact(i, signed))
            }
            SignedIdentity::MatchRepository => image.is_some_and(|i| i.name() == signed.name()),
            SignedIdentity::ExactReference(r) => {
                !signed.is_name_only() && signed.to_string() == r.to_string()
            }
            SignedIdentity::ExactRepository(r) => signed.name() == r.name(),
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            } => {
                let Some(image) = image else { return false };
                let remapped = match remap(image, prefix, signed_prefix) {
                    Some(r) => r,
                    None => image.clone(),
                };
                match_repo_digest_or_exact(&remapped, signed)
            }
        }
    }
}

fn match_exact(image: &Named, signed: &Named) -> bool {
    !image.is_name_only() && !signed.is_name_only() && image.to_string() == signed.to_string()
}

fn match_repo_digest_or_exact(image: &Named, signed: &Named) -> bool {
    if image.digest().is_some() {
        image.name() == signed.name()
    } else if image.tag().is_some() {
        match_exact(image, signed)
    } else {
        false
    }
}

/// `image` with `prefix` replaced by `signed_prefix`, if `image` is under `prefix` (the whole
/// prefix, ending at a path-component boundary).
fn remap(image: &Named, prefix: &str, signed_prefix: &str) -> Option<Named> {
    let full = image.to_string();
    let rest = full.strip_prefix(prefix)?;
    // `prefix` ends where a component ends: a '/' follows, or the prefix is the whole
    // repository name and its tag or digest follows. (After a host, ':' would be a port.)
    let boundary = rest.starts_with('/')
        || (image.name() == prefix && (rest.starts_with(':') || rest.starts_with('@')));
    if !boundary {
        return None;
    }
    Named::parse(&format!("{signed_prefix}{rest}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Named {
        Named::parse(s).unwrap()
    }

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn identity_table() {
        let digested = format!("example.com/ns/repo@{D}");
        let remote_digested = format!("mirror.local/a/b@{D}");
        let other_digest = format!("example.com/ns/repo@sha256:{}", "2".repeat(64));
        // (rule, image, signed, expected)
        let table: Vec<(SignedIdentity, Option<&str>, &str, bool)> = vec![
            (
                SignedIdentity::MatchExact,
                Some("example.com/ns/repo:1"),
                "example.com/ns/repo:1",
                true,
            ),
            (
                SignedIdentity::MatchExact,
                Some("example.com/ns/repo:1"),
                "example.com/ns/repo:2",
                false,
            ),
            (
                SignedIdentity::MatchExact,
                Some("example.com/ns/repo"),
                "example.com/ns/repo",
                false,
            ),
            (SignedIdentity::MatchExact, Some(&digested), &digested, true),
            (
                SignedIdentity::MatchExact,
                Some(&digested),
                "example.com/ns/repo:1",
                false,
            ),
            (
                SignedIdentity::MatchExact,
                None,
                "example.com/ns/repo:1",
                false,
            ),
            (
                SignedIdentity::MatchRepoDigestOrExact,
                Some("example.com/ns/repo:1"),
                "example.com/ns/repo:1",
                true,
            ),
            (
                SignedIdentity::MatchRepoDigestOrExact,
                Some("example.com/ns/repo:1"),
                "example.com/ns/repo:2",
                false,
            ),
            (
                SignedIdentity::MatchRepoDigestOrExact,
                Some(&digested),
                "example.com/ns/repo:anything",
                true,
            ),
            (
                SignedIdentity::MatchRepoDigestOrExact,
                Some(&digested),
                &other_digest,
                true,
            ),
            (
                SignedIdentity::MatchRepoDigestOrExact,
                Some(&digested),
                "example.com/ns/other:1",
                false,
            ),
            (
                SignedIdentity::MatchRepoDigestOrExact,
                Some("example.com/ns/repo"),
                "example.com/ns/repo",
                false,
            ),
            (
                SignedIdentity::MatchRepoDigestOrExact,
                None,
                "example.com/ns/repo:1",
                false,
            ),
            (
                SignedIdentity::MatchRepository,
                Some("example.com/ns/repo:1"),
                "example.com/ns/repo:2",
                true,
            ),
            (
                SignedIdentity::MatchRepository,
                Some("example.com/ns/repo:1"),
                "example.com/ns/repo2:1",
                false,
            ),
            (
                SignedIdentity::MatchRepository,
                Some("busybox:1"),
                "docker.io/library/busybox:2",
                true,
            ),
            (
                SignedIdentity::ExactReference(n("example.com/a:1")),
                None,
                "example.com/a:1",
                true,
            ),
            (
                SignedIdentity::ExactReference(n("example.com/a:1")),
                Some("example.com/b:9"),
                "example.com/a:1",
                true,
            ),
            (
                SignedIdentity::ExactReference(n("example.com/a:1")),
                None,
                "example.com/a:2",
                false,
            ),
            (
                SignedIdentity::ExactReference(n("example.com/a:1")),
                None,
                "example.com/a",
                false,
            ),
            (
                SignedIdentity::ExactRepository(n("example.com/a")),
                None,
                "example.com/a:7",
                true,
            ),
            (
                SignedIdentity::ExactRepository(n("example.com/a")),
                None,
                "example.com/b:7",
                false,
            ),
            (
                SignedIdentity::RemapIdentity {
                    prefix: "mirror.local/ns".into(),
                    signed_prefix: "example.com/ns".into(),
                },
                Some("mirror.local/ns/repo:1"),
                "example.com/ns/repo:1",
                true,
            ),
            (
                SignedIdentity::RemapIdentity {
                    prefix: "mirror.local/ns".into(),
                    signed_prefix: "example.com/ns".into(),
                },
                Some("mirror.local/ns/repo:1"),
                "mirror.local/ns/repo:1",
                false,
            ),
            (
                // Not under the prefix: matched as is (matchRepoDigestOrExact).
                SignedIdentity::RemapIdentity {
                    prefix: "mirror.local/ns".into(),
                    signed_prefix: "example.com/ns".into(),
                },
                Some("mirror.local/nsx/repo:1"),
                "mirror.local/nsx/repo:1",
                true,
            ),
            (
                SignedIdentity::RemapIdentity {
                    prefix: "mirror.local/ns".into(),
                    signed_prefix: "example.com/ns".into(),
                },
                Some("mirror.local/nsx/repo:1"),
                "example.com/nsx/repo:1",
                false,
            ),
            (
                SignedIdentity::RemapIdentity {
                    prefix: "mirror.local".into(),
                    signed_prefix: "example.com".into(),
                },
                Some(&remote_digested),
                "example.com/a/b:x",
                true,
            ),
            (
                // A whole repository as prefix, the tag kept.
                SignedIdentity::RemapIdentity {
                    prefix: "mirror.local/a/b".into(),
                    signed_prefix: "example.com/c".into(),
                },
                Some("mirror.local/a/b:2"),
                "example.com/c:2",
                true,
            ),
            (
                SignedIdentity::RemapIdentity {
                    prefix: "mirror.local".into(),
                    signed_prefix: "example.com".into(),
                },
                None,
                "example.com/a/b:1",
                false,
            ),
        ];
        for (i, (rule, image, signed, want)) in table.into_iter().enumerate() {
            let image = image.map(n);
            assert_eq!(
                rule.matches(image.as_ref(), &n(signed)),
                want,
                "row {i}: {} image {image:?} signed {signed}",
                rule.describe()
            );
        }
    }
}
