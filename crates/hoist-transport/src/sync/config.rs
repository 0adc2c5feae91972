//! The sync file: skopeo sync's YAML model (and the same model in TOML), parsed strictly
//! into [`SyncConfig`].
//!
//! ```yaml
//! registry.example.com:          # a registry host[:port] (or host/namespace)
//!   images:                      # repository → tags or digests; empty (or null) = all tags
//!     busybox: []
//!     redis: ["1.0", "2.0", "sha256:…"]
//!   images-by-tag-regex:         # repository → regex, matched anywhere in the tag
//!     nginx: ^1\.13\.[12]-alpine-perl$
//!   images-by-semver:            # repository → constraint (`>=1.2, <2`, `||` between alternatives)
//!     alpine: ">= 3.12"
//!   credentials: {username: john, password: secret}
//!   tls-verify: false            # absent: the command line's setting
//!   cert-dir: /home/john/certs
//! ```
//!
//! Unlike skopeo (which ignores keys it does not know), an unknown key is an error naming
//! the file and the key: a misspelt `images-by-tag-regexp` would otherwise sync nothing
//! and say nothing. The file is read up to [`MAX_CONFIG_BYTES`]; regexes are compiled with
//! a size limit ([`MAX_REGEX_SIZE`]); YAML parsing runs under serde-saphyr's budget
//! (aliases, depth, events), so a hostile file fails instead of exhausting memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SyncError;

/// Largest sync file read.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// Largest compiled tag regex (bytes of automaton).
pub const MAX_REGEX_SIZE: usize = 1024 * 1024;
/// Most tags or digests listed for one repository, and most repositories per registry.
const MAX_ENTRIES: usize = 100_000;

/// The format of a sync file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// skopeo's YAML.
    Yaml,
    /// The same model in TOML.
    Toml,
}

impl ConfigFormat {
    /// The format a file name implies: `.toml` is TOML, anything else YAML.
    pub fn of_path(p: &Path) -> ConfigFormat {
        match p.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("toml") => ConfigFormat::Toml,
            _ => ConfigFormat::Yaml,
        }
    }
}

/// `credentials:` of a registry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// User name.
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
}

/// What the file says about one registry (raw, as written).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    #[serde(default)]
    images: BTreeMap<String, Option<Vec<String>>>,
    #[serde(default, rename = "images-by-tag-regex")]
    images_by_tag_regex: BTreeMap<String, String>,
    #[serde(default, rename = "images-by-semver")]
    images_by_semver: BTreeMap<String, String>,
    #[serde(default)]
    credentials: Option<CredentialsConfig>,
    #[serde(default, rename = "tls-verify")]
    tls_verify: Option<bool>,
    #[serde(default, rename = "cert-dir")]
    cert_dir: Option<PathBuf>,
}

/// Which tags of a repository to sync.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every tag the registry lists.
    AllTags,
    /// These tags and digests, as written (not listed first).
    Refs(Vec<String>),
    /// Listed tags the regex matches (anywhere in the tag, as skopeo's `MatchString`).
    Regex(regex::Regex),
    /// Listed tags that are versions the constraint accepts; other tags are skipped.
    Semver(SemverConstraint),
}

/// One repository of a registry and what to take from it.
#[derive(Debug, Clone)]
pub struct RepoConfig {
    /// The repository path below the registry (`library/busybox`).
    pub repository: String,
    /// Which tags.
    pub selection: Selection,
}

/// One registry of the file, checked.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The key as written: `host[:port]`, optionally followed by a namespace path.
    pub registry: String,
    /// Repositories in file order per section: `images`, then regexes, then semver.
    pub repos: Vec<RepoConfig>,
    /// Credentials for this registry.
    pub credentials: Option<CredentialsConfig>,
    /// TLS verification for this registry; `None`: the command line's.
    pub tls_verify: Option<bool>,
    /// A certificate directory for this registry.
    pub cert_dir: Option<PathBuf>,
}

/// A whole sync file, checked: registries in key order.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The registries.
    pub registries: Vec<RegistryConfig>,
}

/// A semver constraint in the syntax skopeo's `images-by-semver` takes (Masterminds
/// semver): comma- or space-separated comparisons that must all hold, `||` between
/// alternatives. A bare version means exactly that version (not Cargo's caret).
#[derive(Debug, Clone)]
pub struct SemverConstraint {
    alternatives: Vec<semver::VersionReq>,
}

impl SemverConstraint {
    /// Parse a constraint.
    pub fn parse(s: &str) -> Result<SemverConstraint, String> {
        let mut alternatives = Vec::new();
        for alt in s.split("||") {
            let parts: Vec<String> = split_comparisons(alt)
                .into_iter()
                .map(|p| {
                    if p.starts_with(|c: char| c.is_ascii_digit() || c == 'v') {
                        format!("={}", p.trim_start_matches('v'))
                    } else {
                        p
                    }
                })
                .collect();
            if parts.is_empty() {
                return Err(format!("empty alternative in {s:?}"));
            }
            let req =
                semver::VersionReq::parse(&parts.join(", ")).map_err(|e| format!("{s:?}: {e}"))?;
            alternatives.push(req);
        }
        Ok(SemverConstraint { alternatives })
    }

    /// Whether `tag` is a version the constraint accepts. A leading `v` and missing minor
    /// or patch numbers are accepted (`v3.12` is 3.12.0); a tag that is no version is not.
    pub fn matches(&self, tag: &str) -> bool {
        let Some(v) = lenient_version(tag) else {
            return false;
        };
        self.alternatives.iter().any(|r| r.matches(&v))
    }
}

/// `>= 1.2, < 2` or `>=1.2 <2` → [">=1.2", "<2"] (an operator may stand apart from its
/// version: `>= 1.2`).
fn split_comparisons(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut pending_op = String::new();
    for tok in s.split([',', ' ', '\t']).filter(|t| !t.is_empty()) {
        if tok.chars().all(|c| "<>=~^!".contains(c)) {
            pending_op.push_str(tok);
            continue;
        }
        out.push(format!("{}{tok}", std::mem::take(&mut pending_op)));
    }
    if !pending_op.is_empty() {
        out.push(pending_op);
    }
    out
}

/// A tag as a version: `v` prefix allowed, `1` and `1.2` padded with zeros.
fn lenient_version(tag: &str) -> Option<semver::Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    let (core, rest) = match t.find(['-', '+']) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let nums: Vec<&str> = core.split('.').collect();
    if nums.is_empty()
        || nums.len() > 3
        || nums
            .iter()
            .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut padded = nums.join(".");
    for _ in nums.len()..3 {
        padded.push_str(".0");
    }
    semver::Version::parse(&format!("{padded}{rest}")).ok()
}

impl SyncConfig {
    /// Read and check `path` (YAML, or TOML by its `.toml` extension when `format` is
    /// `None`).
    pub fn load(path: &Path, format: Option<ConfigFormat>) -> Result<SyncConfig, SyncError> {
        let format = format.unwrap_or_else(|| ConfigFormat::of_path(path));
        let bytes = read_capped(path)?;
        let text = String::from_utf8(bytes).map_err(|_| SyncError::Config {
            file: path.to_owned(),
            reason: "not UTF-8 text".into(),
        })?;
        SyncConfig::parse(&text, format, path)
    }

    /// Parse and check a sync file's text; `path` names it in errors.
    pub fn parse(text: &str, format: ConfigFormat, path: &Path) -> Result<SyncConfig, SyncError> {
        let bad = |reason: String| SyncError::Config {
            file: path.to_owned(),
            reason,
        };
        let raw: BTreeMap<String, RawRegistry> = match format {
            ConfigFormat::Yaml => {
                if text.trim().is_empty() {
                    BTreeMap::new()
                } else {
                    serde_saphyr::from_str(text).map_err(|e| bad(e.to_string()))?
                }
            }
            ConfigFormat::Toml => toml::from_str(text).map_err(|e| bad(e.to_string()))?,
        };
        let mut registries = Vec::new();
        for (registry, r) in raw {
            let at = |key: &str| format!("{registry}: {key}");
            check_registry_key(&registry)
                .map_err(|e| bad(format!("registry key {registry:?}: {e}")))?;
            let count = r.images.len() + r.images_by_tag_regex.len() + r.images_by_semver.len();
            if count > MAX_ENTRIES {
                return Err(bad(format!(
                    "{registry}: more than {MAX_ENTRIES} repositories"
                )));
            }
            let mut repos = Vec::new();
            for (repo, refs) in r.images {
                check_repo(&repo)
                    .map_err(|e| bad(format!("{}: {e}", at(&format!("images: {repo}")))))?;
                let refs = refs.unwrap_or_default();
                if refs.len() > MAX_ENTRIES {
                    return Err(bad(format!(
                        "{}: more than {MAX_ENTRIES} entries",
                        at(&repo)
                    )));
                }
                for t in &refs {
                    check_tag_or_digest(t)
                        .map_err(|e| bad(format!("{}: {e}", at(&format!("images: {repo}")))))?;
                }
                let selection = if refs.is_empty() {
                    Selection::AllTags
                } else {
                    Selection::Refs(refs)
                };
                repos.push(RepoConfig {
                    repository: repo,
                    selection,
                });
            }
            for (repo, pattern) in r.images_by_tag_regex {
                let key = at(&format!("images-by-tag-regex: {repo}"));
                check_repo(&repo).map_err(|e| bad(format!("{key}: {e}")))?;
                let re = regex::RegexBuilder::new(&pattern)
                    .size_limit(MAX_REGEX_SIZE)
                    .build()
                    .map_err(|e| bad(format!("{key}: invalid regex {pattern:?}: {e}")))?;
                repos.push(RepoConfig {
                    repository: repo,
                    selection: Selection::Regex(re),
                });
            }
            for (repo, constraint) in r.images_by_semver {
                let key = at(&format!("images-by-semver: {repo}"));
                check_repo(&repo).map_err(|e| bad(format!("{key}: {e}")))?;
                let c = SemverConstraint::parse(&constraint)
                    .map_err(|e| bad(format!("{key}: invalid semver constraint: {e}")))?;
                repos.push(RepoConfig {
                    repository: repo,
                    selection: Selection::Semver(c),
                });
            }
            registries.push(RegistryConfig {
                registry,
                repos,
                credentials: r.credentials,
                tls_verify: r.tls_verify,
                cert_dir: r.cert_dir,
            });
        }
        Ok(SyncConfig { registries })
    }
}

fn read_capped(path: &Path) -> Result<Vec<u8>, SyncError> {
    use std::io::Read as _;
    let io = |e: std::io::Error| SyncError::Config {
        file: path.to_owned(),
        reason: e.to_string(),
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_CONFIG_BYTES {
        return Err(SyncError::Config {
            file: path.to_owned(),
            reason: format!("larger than {MAX_CONFIG_BYTES} bytes"),
        });
    }
    Ok(buf)
}

/// A registry key: `host[:port][/namespace…]`, checked by parsing a reference under it.
fn check_registry_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.contains("://") {
        return Err("expected host[:port] (no scheme)".into());
    }
    hoist_types::Reference::parse_repository(&format!("{k}/x"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_repo(repo: &str) -> Result<(), String> {
    if repo.is_empty() || repo.contains([':', '@']) {
        return Err(format!(
            "{repo:?} is not a repository name (no tag or digest here)"
        ));
    }
    hoist_types::Reference::parse_repository(&format!("example.invalid/{repo}"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_tag_or_digest(t: &str) -> Result<(), String> {
    if t.contains(':') {
        return hoist_types::Digest::parse(t)
            .map(|_| ())
            .map_err(|e| format!("{t:?} is neither a tag nor a digest: {e}"));
    }
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{t:?} is not a valid tag"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Result<SyncConfig, SyncError> {
        SyncConfig::parse(s, ConfigFormat::Yaml, Path::new("sync.yml"))
    }

    fn err(s: &str) -> String {
        yaml(s).unwrap_err().to_string()
    }

    #[test]
    fn skopeo_example_parses() {
        let c = yaml(
            r#"
registry.example.com:
    images:
        busybox: []
        redis:
            - "1.0"
            - "2.0"
            - "sha256:0000000000000000000000000000000011111111111111111111111111111111"
    images-by-tag-regex:
        nginx: ^1\.13\.[12]-alpine-perl$
    images-by-semver:
        alpine: ">= 3.12.0"
    credentials:
        username: john
        password: this is a secret
    tls-verify: true
    cert-dir: /home/john/certs
quay.io:
    tls-verify: false
    images:
        coreos/etcd:
            - latest
        bare:
"#,
        )
        .unwrap();
        assert_eq!(c.registries.len(), 2);
        let q = &c.registries[0];
        assert_eq!(q.registry, "quay.io");
        assert_eq!(q.tls_verify, Some(false));
        assert!(
            matches!(q.repos[0].selection, Selection::AllTags),
            "null = all tags"
        );
        assert!(matches!(&q.repos[1].selection, Selection::Refs(r) if r == &["latest"]));
        let r = &c.registries[1];
        assert_eq!(r.credentials.as_ref().unwrap().username, "john");
        assert_eq!(r.cert_dir.as_deref(), Some(Path::new("/home/john/certs")));
        let kinds: Vec<_> = r
            .repos
            .iter()
            .map(|x| match &x.selection {
                Selection::AllTags => format!("{}:all", x.repository),
                Selection::Refs(v) => format!("{}:{}", x.repository, v.len()),
                Selection::Regex(re) => {
                    assert!(re.is_match("1.13.2-alpine-perl"));
                    assert!(!re.is_match("1.13.3-alpine-perl"));
                    format!("{}:re", x.repository)
                }
                Selection::Semver(s) => {
                    assert!(s.matches("3.12") && s.matches("v3.19.1") && !s.matches("3.11.9"));
                    assert!(!s.matches("latest"));
                    format!("{}:semver", x.repository)
                }
            })
            .collect();
        assert_eq!(
            kinds,
            ["busybox:all", "redis:3", "nginx:re", "alpine:semver"]
        );
    }

    #[test]
    fn toml_same_model() {
        let c = SyncConfig::parse(
            r#"
["127.0.0.1:5000"]
tls-verify = false
images = { "ns/a" = [], "ns/b" = ["v1", "v2"] }
images-by-tag-regex = { "ns/c" = "^v[0-9]$" }
"#,
            ConfigFormat::Toml,
            Path::new("sync.toml"),
        )
        .unwrap();
        let r = &c.registries[0];
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repos.len(), 3);
        let e = SyncConfig::parse(
            "[\"h:1\"]\nimagez = {}\n",
            ConfigFormat::Toml,
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("s.toml") && e.contains("imagez"), "{e}");
        assert_eq!(
            ConfigFormat::of_path(Path::new("a/b.TOML")),
            ConfigFormat::Toml
        );
        assert_eq!(
            ConfigFormat::of_path(Path::new("a/b.yml")),
            ConfigFormat::Yaml
        );
    }

    #[test]
    fn errors_name_file_and_key() {
        let table: &[(&str, &[&str])] = &[
            ("h:\n  imagez:\n    a: []\n", &["sync.yml", "imagez"]),
            (
                "h:\n  images-by-tag-regex:\n    a: \"(\"\n",
                &["sync.yml", "images-by-tag-regex: a", "invalid regex"],
            ),
            (
                "h:\n  images-by-semver:\n    a: \">>x\"\n",
                &["images-by-semver: a", "semver"],
            ),
            (
                "h:\n  images:\n    \"a:b\": []\n",
                &["images: a:b", "not a repository"],
            ),
            (
                "h:\n  images:\n    a: [\"bad tag\"]\n",
                &["images: a", "not a valid tag"],
            ),
            (
                "h:\n  images:\n    a: [\"sha256:xyz\"]\n",
                &["neither a tag nor a digest"],
            ),
            ("h:\n  credentials: {username: u, token: t}\n", &["token"]),
            ("h:\n  tls-verify: maybe\n", &["sync.yml"]),
            ("- a\n- b\n", &["sync.yml"]),
            ("\"https://h\":\n  images: {a: []}\n", &["no scheme"]),
            (
                "h: {images: {a: []}}\nh: {images: {b: []}}\n",
                &["sync.yml"],
            ),
        ];
        for (text, wants) in table {
            let e = err(text);
            for w in *wants {
                assert!(e.contains(w), "{text:?}: {e:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn regex_size_is_limited() {
        let e = err("h:\n  images-by-tag-regex:\n    a: \"(a{1000}){1000}\"\n");
        assert!(e.contains("invalid regex"), "{e}");
    }

    #[test]
    fn alias_bombs_fail() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(yaml(&s).is_err());
    }

    #[test]
    fn empty_file_is_empty_plan() {
        assert!(yaml("").unwrap().registries.is_empty());
        assert!(yaml("# nothing\n").unwrap().registries.is_empty());
    }

    #[test]
    fn semver_syntax() {
        let c = SemverConstraint::parse(">=1.2, <2 || 3.0.0").unwrap();
        for (t, want) in [
            ("1.2.0", true),
            ("1.9", true),
            ("v1.10.3", true),
            ("2.0.0", false),
            ("3.0.0", true),
            ("3.0.1", false),
            ("1.2.0-rc1", false),
            ("latest", false),
            ("1.2.3.4", false),
            ("", false),
        ] {
            assert_eq!(c.matches(t), want, "{t}");
        }
        assert!(SemverConstraint::parse("").is_err());
        assert!(SemverConstraint::parse(">= 1.2").unwrap().matches("1.3"));
    }

    #[test]
    fn file_limits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.yml");
        std::fs::write(&p, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let e = SyncConfig::load(&p, None).unwrap_err().to_string();
        assert!(e.contains("big.yml") && e.contains("larger"), "{e}");
        let e = SyncConfig::load(&dir.path().join("missing.yml"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.yml"), "{e}");
    }
}
