//! Image references with Docker's normalisation: `alpine` → `docker.io/library/alpine:latest`.

use std::fmt;
use std::str::FromStr;

use crate::{Digest, TypeError};

/// The registry that short names resolve to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully qualified image reference: registry, repository, and a tag and/or digest.
///
/// When parsed, a reference with neither tag nor digest gets the tag `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parse and normalise a reference, as Docker does: a name without a registry is on
    /// Docker Hub (`docker.io`), a single-component Docker Hub name is under `library/`,
    /// and a reference with neither tag nor digest gets the tag `latest`. A leading
    /// `docker://` is dropped. Both a tag and a digest may be given (`name:tag@digest`).
    ///
    /// # Errors
    ///
    /// [`TypeError::InvalidReference`] naming the input and the rule it broke: empty,
    /// invalid registry host, repository name (lower-case components), tag
    /// (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) or digest, or a name over 255 characters.
    ///
    /// ```
    /// use hoist_types::Reference;
    ///
    /// let r = Reference::parse("127.0.0.1:5000/team/app:v1")?;
    /// assert_eq!(r.registry(), "127.0.0.1:5000");
    /// assert_eq!(r.repository(), "team/app");
    /// assert_eq!(r.tag(), Some("v1"));
    /// assert_eq!(r.manifest_reference(), "v1");
    ///
    /// let hub = Reference::parse("docker://user/tool")?;
    /// assert_eq!(hub.to_string(), "docker.io/user/tool:latest");
    ///
    /// assert!(Reference::parse("Upper/Case").is_err());
    /// # Ok::<(), hoist_types::TypeError>(())
    /// ```
    pub fn parse(s: &str) -> Result<Reference, TypeError> {
        Reference::parse_repository_part(s, true)
    }

    /// Parse a repository name without tag or digest (as `hoist tags` takes).
    pub fn parse_repository(s: &str) -> Result<Reference, TypeError> {
        // `repo:tag` is accepted too; the caller only wants the repository.
        let mut r = Reference::parse_repository_part(s, false)?;
        r.tag = None;
        r.digest = None;
        Ok(r)
    }

    fn parse_repository_part(s: &str, default_tag: bool) -> Result<Reference, TypeError> {
        let bad = |reason: &'static str| TypeError::InvalidReference {
            input: s.chars().take(300).collect(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        let s_trim = s.strip_prefix("docker://").unwrap_or(s);
        let (rest, digest) = match s_trim.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(Digest::parse(d).map_err(|_| bad("invalid digest after '@'"))?),
            ),
            None => (s_trim, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad("invalid tag (want [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"));
        }
        if name.is_empty() {
            return Err(bad("empty repository name"));
        }
        let (registry, repo) = split_domain(name);
        let registry = normalize_registry(registry);
        if !valid_registry(&registry) {
            return Err(bad("invalid registry host"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_owned()
        };
        if !valid_repository(&repository) {
            return Err(bad(
                "invalid repository name (lower-case components [a-z0-9] joined by '.', '_', '__' or '-', separated by '/')",
            ));
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad("repository name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) if default_tag => Some(DEFAULT_TAG.to_owned()),
            (None, _) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Build a reference from parts (already validated elsewhere, e.g. from a store record).
    pub fn from_parts(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<Reference, TypeError> {
        let mut s = format!("{registry}/{repository}");
        if let Some(t) = tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        let r = Reference::parse_repository_part(&s, false)?;
        if r.registry != registry || r.repository != repository {
            return Err(TypeError::InvalidReference {
                input: s,
                reason: "parts are not in normal form",
            });
        }
        Ok(r)
    }

    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path (`library/alpine`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when present, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// A copy with the digest replaced (the tag is kept): `name:tag@digest`, which a
    /// registry resolves by the digest alone.
    ///
    /// ```
    /// use hoist_types::{Digest, Reference};
    ///
    /// let r = Reference::parse("alpine:3")?.with_digest(Digest::sha256_of(b"m"));
    /// assert_eq!(r.tag(), Some("3"));
    /// assert_eq!(r.manifest_reference(), Digest::sha256_of(b"m").to_string());
    /// # Ok::<(), hoist_types::TypeError>(())
    /// ```
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// A copy with the tag replaced and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, TypeError> {
        if !valid_tag(tag) {
            return Err(TypeError::InvalidReference {
                input: tag.to_owned(),
                reason: "invalid tag",
            });
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The short repository name Docker shows: `alpine` for Docker Hub library images,
    /// `user/app` for other Docker Hub images, else `registry/repository`.
    ///
    /// ```
    /// use hoist_types::Reference;
    ///
    /// let name = |s| Reference::parse(s).map(|r| r.familiar_name());
    /// assert_eq!(name("docker.io/library/alpine")?, "alpine");
    /// assert_eq!(name("docker.io/user/app")?, "user/app");
    /// assert_eq!(name("docker.io/library/a/b")?, "library/a/b");
    /// assert_eq!(name("ghcr.io/o/r")?, "ghcr.io/o/r");
    /// # Ok::<(), hoist_types::TypeError>(())
    /// ```
    ///
    /// The short form always parses back to the same repository: `library/` is dropped only
    /// before a single component (`docker.io/library/a/b` stays `library/a/b`), and a Docker
    /// Hub repository whose first component would read as a registry host (`foo.bar/baz`,
    /// `localhost/x`) keeps its `docker.io/` prefix.
    pub fn familiar_name(&self) -> String {
        if self.registry != DEFAULT_REGISTRY {
            return self.name();
        }
        let short = match self.repository.strip_prefix("library/") {
            Some(rest) if !rest.contains('/') => rest,
            _ => self.repository.as_str(),
        };
        match short.split_once('/') {
            Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => self.name(),
            _ => short.to_owned(),
        }
    }

    /// The short form Docker shows: `alpine:latest` for Docker Hub library images.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Split `name` into (domain, remainder) the way Docker does.
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    }
}

fn normalize_registry(r: &str) -> String {
    match r {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_owned(),
        other => other.to_owned(),
    }
}

fn valid_registry(r: &str) -> bool {
    if r.is_empty() || r.len() > 255 {
        return false;
    }
    // IPv6 literal: [::1]:5000
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return false;
        };
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after.strip_prefix(':') {
            Some(p) => ("ok", Some(p)),
            None if after.is_empty() => ("ok", None),
            None => return false,
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    host == "ok"
        || host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_repository(repo: &str) -> bool {
    !repo.is_empty() && repo.split('/').all(valid_component)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let run = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && alnum(b[*i]) {
            *i += 1;
        }
        *i > start
    };
    if !run(&mut i) {
        return false;
    }
    while i < b.len() {
        // separator
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if !run(&mut i) {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, &str)] = &[
            ("alpine", "docker.io/library/alpine:latest"),
            ("alpine:3.20", "docker.io/library/alpine:3.20"),
            ("library/alpine", "docker.io/library/alpine:latest"),
            ("docker.io/alpine", "docker.io/library/alpine:latest"),
            ("index.docker.io/alpine", "docker.io/library/alpine:latest"),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("ghcr.io/o/r/sub:t", "ghcr.io/o/r/sub:t"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("127.0.0.1:5000/ns/repo:tag", "127.0.0.1:5000/ns/repo:tag"),
            ("[::1]:5000/repo", "[::1]:5000/repo:latest"),
            ("docker://alpine", "docker.io/library/alpine:latest"),
            ("a__b/c-d--e.f:T_1.x-y", "docker.io/a__b/c-d--e.f:T_1.x-y"),
        ];
        for (input, want) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), *want, "{input}");
        }
    }

    #[test]
    fn tag_and_digest() {
        let r = Reference::parse(&format!("127.0.0.1:5000/ns/repo:tag@{D}")).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "ns/repo");
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.manifest_reference(), D);
        let r = Reference::parse(&format!("alpine@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.familiar(), format!("alpine@{D}"));
        assert_eq!(
            Reference::parse("alpine").unwrap().familiar(),
            "alpine:latest"
        );
    }

    /// The familiar form parses back to the same reference (found by the `reference` fuzz
    /// target; `docker-archive` `RepoTags` are written in this form).
    #[test]
    fn familiar_round_trips() {
        let cases = [
            ("alpine", "alpine:latest"),
            ("user/app:1", "user/app:1"),
            ("docker.io/library/foo/bar:1", "library/foo/bar:1"),
            ("docker.io/foo.bar/baz:1", "docker.io/foo.bar/baz:1"),
            ("docker.io/localhost/x", "docker.io/localhost/x:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("quay.io/a/b:c", "quay.io/a/b:c"),
        ];
        for (input, familiar) in cases {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.familiar(), familiar, "{input}");
            assert_eq!(Reference::parse(familiar).unwrap(), r, "{input}");
        }
    }

    #[test]
    fn rejects() {
        let bad = [
            "",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "alpine@sha256:abc",
            "alpine@sha256:../../x",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a_-b",
            "-a",
            "host:port/repo",
            "ho st/repo",
            ":tag",
            "a:b:c",
        ];
        for s in bad {
            assert!(Reference::parse(s).is_err(), "accepted {s:?}");
        }
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        let long_name = format!("a/{}", "b".repeat(260));
        assert!(Reference::parse(&long_name).is_err());
    }

    #[test]
    fn repository_only() {
        let r = Reference::parse_repository("127.0.0.1:5000/foo").unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.name(), "127.0.0.1:5000/foo");
    }

    #[test]
    fn from_parts_roundtrip() {
        let r = Reference::from_parts("docker.io", "library/alpine", Some("3"), None).unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:3");
        assert!(Reference::from_parts("docker.io", "alpine", Some("3"), None).is_err());
    }
}
