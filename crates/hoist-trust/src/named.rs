//! Docker references as signatures and policies name them: normalised like Docker does, but
//! without the implicit `latest` tag, so a name-only reference stays name-only (the policy's
//! identity rules treat `repo`, `repo:tag` and `repo@digest` differently).

use std::fmt;

use hoist_types::{Digest, Reference};

use crate::TrustError;

/// A normalised Docker reference that may name neither tag nor digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// `registry/repository`, normalised (`docker.io/library/busybox`).
    name: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Named {
    /// Parses `s` with Docker's normalisation (`busybox` → `docker.io/library/busybox`),
    /// keeping a missing tag missing.
    pub fn parse(s: &str) -> Result<Named, TrustError> {
        let bad = |e: hoist_types::TypeError| TrustError::BadReference {
            input: s.chars().take(300).collect(),
            reason: e.to_string(),
        };
        if s.starts_with("docker://") {
            return Err(TrustError::BadReference {
                input: s.chars().take(300).collect(),
                reason: "a transport prefix is not part of a Docker reference".into(),
            });
        }
        let before_digest = s.split_once('@').map(|(a, _)| a).unwrap_or(s);
        let last = before_digest.rsplit('/').next().unwrap_or(before_digest);
        let has_tag = last.contains(':');
        let has_digest = s.contains('@');
        let r = if has_tag || has_digest {
            Reference::parse(s).map_err(bad)?
        } else {
            Reference::parse_repository(s).map_err(bad)?
        };
        Ok(Named::from_reference(&r))
    }

    /// The same reference, as hoist's [`Reference`] names it (which always has a tag or digest
    /// when it was parsed from user input).
    pub fn from_reference(r: &Reference) -> Named {
        Named {
            name: r.name(),
            tag: r.tag().map(str::to_owned),
            digest: r.digest().cloned(),
        }
    }

    /// `registry/repository`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registry host (with port).
    pub fn host(&self) -> &str {
        self.name.split('/').next().unwrap_or(&self.name)
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Neither tag nor digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_without_adding_a_tag() {
        let cases = [
            ("busybox", "docker.io/library/busybox", true),
            ("busybox:1", "docker.io/library/busybox:1", false),
            ("127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b", true),
            ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t", false),
            (
                "quay.io/x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "quay.io/x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                false,
            ),
        ];
        for (input, want, name_only) in cases {
            let n = Named::parse(input).unwrap();
            assert_eq!(n.to_string(), want, "{input}");
            assert_eq!(n.is_name_only(), name_only, "{input}");
        }
        assert!(Named::parse("docker://busybox").is_err());
        assert!(Named::parse("example.com/UPPER").is_err());
        assert!(Named::parse("").is_err());
    }
}
