//! Mirrors: other places a registry's content can be pulled from, tried in order before
//! the registry itself.
//!
//! # Where the lists come from
//!
//! For a reference `REGISTRY/REPOSITORY`, the first source that has an entry wins:
//!
//! 1. **hoist's config file**: `$HOIST_CONFIG` when set (that file only), else
//!    `/etc/hoist/config.toml` and then `$XDG_CONFIG_HOME/hoist/config.toml`
//!    (`~/.config/hoist/config.toml`); an entry of the user file replaces the system file's
//!    entry for the same prefix.
//! 2. **containerd**: `/etc/containerd/certs.d/HOST/hosts.toml` (`HOST` as in the
//!    reference: `docker.io`, `127.0.0.1:5000`), or `_default/hosts.toml`. The root is
//!    `$HOIST_CONTAINERD_CERTS_D` when set.
//! 3. **containers** (`registries.conf`, v2 format): `$CONTAINERS_REGISTRIES_CONF` when
//!    set (that file only), else `/etc/containers/registries.conf`, the drop-ins in
//!    `/etc/containers/registries.conf.d/*.conf` (in name order) and
//!    `$XDG_CONFIG_HOME/containers/registries.conf`; a later `[[registry]]` with the same
//!    prefix replaces an earlier one.
//!
//! A file that exists but cannot be parsed is an error naming it; a missing file is no
//! entry. Prefixes match whole path components, the longest match wins.
//!
//! # hoist's format
//!
//! ```toml
//! # Keys are a registry (host[:port]) or a registry with a repository namespace.
//! [registry."docker.io"]
//! mirrors = [
//!   "mirror.gcr.io",                         # https (loopback hosts: auto)
//!   "http://10.0.0.5:5000/dockerhub",        # plain HTTP; a path is a repository
//!                                            # namespace: library/alpine is pulled
//!                                            # as dockerhub/library/alpine
//!   { url = "https://mirror.internal", tls_verify = false, tags = false },
//! ]
//!
//! [registry."quay.io/prometheus"]
//! mirrors = ["quay-cache.internal/prom"]    # quay.io/prometheus/node → prom/node
//! ```
//!
//! `tags = false` uses the mirror only for content named by digest (manifests reached
//! by digest, configs, layers), never to resolve a tag.
//!
//! # Mapping of the other formats
//!
//! - containerd `hosts.toml`: each `[host."URL"]` in file order whose `capabilities`
//!   (default `["pull", "resolve", "push"]`) include `pull`; `resolve` allows tags;
//!   `skip_verify = true` turns certificate checks off; the URL's path is the API root
//!   (`/v2` is appended unless `override_path = true`, and must then end the path).
//!   `server` (the upstream's address) is not used: the upstream stays the registry the
//!   reference names.
//! - `registries.conf`: `[[registry]]` with `prefix` (default: `location`) and its
//!   `[[registry.mirror]]` entries in order; a mirror `location` may carry a namespace
//!   that replaces the prefix; `insecure = true` turns certificate checks off;
//!   `mirror-by-digest-only = true` or `pull-from-mirror = "digest-only"` means
//!   `tags = false`. A `[[registry]]` whose `location` differs from its prefix (an
//!   upstream rewrite) and `blocked` are not applied.
//!
//! Credentials given on the command line are never sent to a mirror; a mirror's own
//! credentials are read from the credential files under its host name.

use std::fmt;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::RegistryError;
use crate::auth_config::normalize_registry;

/// Configuration files are read up to this size.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// One place a client can talk to: a registry or a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    /// The path of the API root below the host, without slashes at either end (`""`:
    /// `/v2/` is at the root; `"cache"`: `/cache/v2/`).
    pub api_root: String,
    /// `Some(true)`: plain HTTP; `Some(false)`: https; `None`: the client's default.
    pub plain_http: Option<bool>,
    /// `Some(false)` turns certificate verification off for this endpoint.
    pub tls_verify: Option<bool>,
}

impl Endpoint {
    /// An endpoint for `host[:port]` with defaults.
    pub fn new(host: &str) -> Endpoint {
        Endpoint {
            host: host.to_owned(),
            api_root: String::new(),
            plain_http: None,
            tls_verify: None,
        }
    }

    /// The API root as a URL path fragment: empty, or `a/b/`. Refuses anything but
    /// `/`-separated components of `[A-Za-z0-9._~-]` (no `.` or `..`).
    pub fn api_root_path(&self) -> Result<String, &'static str> {
        let p = self.api_root.trim_matches('/');
        if p.is_empty() {
            return Ok(String::new());
        }
        valid_path(p)?;
        Ok(format!("{p}/"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.plain_http {
            Some(true) => "http://",
            Some(false) => "https://",
            None => "",
        };
        write!(f, "{scheme}{}", self.host)?;
        if !self.api_root.is_empty() {
            write!(f, "/{}", self.api_root.trim_matches('/'))?;
        }
        Ok(())
    }
}

fn valid_path(p: &str) -> Result<(), &'static str> {
    for c in p.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err("path components must be non-empty and not . or ..");
        }
        if !c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
        {
            return Err("path components may hold only [A-Za-z0-9._~-]");
        }
    }
    Ok(())
}

/// A mirror chosen for one reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Where it is.
    pub endpoint: Endpoint,
    /// The repository's name on the mirror.
    pub repository: String,
    /// Whether the mirror may resolve tags (else: content by digest only).
    pub resolve_tags: bool,
    /// The file the entry came from.
    pub source: PathBuf,
}

/// A mirror as configured: endpoint, namespace replacing the matched prefix, tags.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MirrorSpec {
    endpoint: Endpoint,
    /// Replaces the matched prefix's namespace (`None`: containerd, which never renames).
    namespace: Option<String>,
    resolve_tags: bool,
}

/// `prefix` (normalised `host[/namespace]`) → its mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    prefix: String,
    mirrors: Vec<MirrorSpec>,
    source: PathBuf,
}

/// Mirror lists for every registry, from all sources ([`MirrorSources::load`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorConfig {
    /// hoist's own rules, in priority order.
    hoist: Vec<Rule>,
    /// containerd hosts: the prefix is the host (or `_default`).
    containerd: Vec<Rule>,
    /// registries.conf rules.
    containers: Vec<Rule>,
}

/// The files [`MirrorConfig`] is read from. [`MirrorSources::from_env`] gives the
/// documented defaults; [`MirrorSources::none`] none, to fill in field by field.
///
/// ```
/// use hoist_registry::MirrorSources;
///
/// let dir = tempfile::tempdir()?;
/// let file = dir.path().join("config.toml");
/// std::fs::write(&file, r#"
///     [registry."docker.io"]
///     mirrors = ["http://127.0.0.1:5001/hub", { url = "https://cache.internal", tags = false }]
/// "#)?;
/// let mut sources = MirrorSources::none();
/// sources.hoist_files.push(file);
/// let config = sources.load()?;
///
/// let mirrors = config.mirrors_for("docker.io", "library/alpine");
/// assert_eq!(mirrors[0].endpoint.host, "127.0.0.1:5001");
/// assert_eq!(mirrors[0].endpoint.plain_http, Some(true));
/// assert_eq!(mirrors[0].repository, "hub/library/alpine");
/// assert!(!mirrors[1].resolve_tags);
/// assert!(config.mirrors_for("ghcr.io", "o/r").is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MirrorSources {
    /// hoist config files, later ones overriding earlier ones.
    pub hoist_files: Vec<PathBuf>,
    /// Roots holding containerd's `HOST/hosts.toml`, first match wins.
    pub containerd_dirs: Vec<PathBuf>,
    /// `registries.conf` files, later ones overriding earlier ones (a directory stands
    /// for its `*.conf` files in name order).
    pub registries_conf: Vec<PathBuf>,
}

impl MirrorSources {
    /// No sources: no mirrors.
    pub fn none() -> MirrorSources {
        MirrorSources::default()
    }

    /// The documented locations, honouring `$HOIST_CONFIG`, `$HOIST_CONTAINERD_CERTS_D`,
    /// `$CONTAINERS_REGISTRIES_CONF`, `$XDG_CONFIG_HOME` and `$HOME`.
    pub fn from_env() -> MirrorSources {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let config_home = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")));
        let hoist_files = match var("HOIST_CONFIG") {
            Some(f) => vec![f],
            None => {
                let mut v = vec![PathBuf::from("/etc/hoist/config.toml")];
                v.extend(config_home.iter().map(|h| h.join("hoist/config.toml")));
                v
            }
        };
        let containerd_dirs = vec![
            var("HOIST_CONTAINERD_CERTS_D")
                .unwrap_or_else(|| PathBuf::from("/etc/containerd/certs.d")),
        ];
        let registries_conf = match var("CONTAINERS_REGISTRIES_CONF") {
            Some(f) => vec![f],
            None => {
                let mut v = vec![
                    PathBuf::from("/etc/containers/registries.conf"),
                    PathBuf::from("/etc/containers/registries.conf.d"),
                ];
                v.extend(
                    config_home
                        .iter()
                        .map(|h| h.join("containers/registries.conf")),
                );
                v
            }
        };
        MirrorSources {
            hoist_files,
            containerd_dirs,
            registries_conf,
        }
    }

    /// Read every source. Missing files are skipped; unreadable or invalid ones are
    /// errors naming the file.
    pub fn load(&self) -> Result<MirrorConfig, RegistryError> {
        let mut cfg = MirrorConfig::default();
        for f in &self.hoist_files {
            if let Some(text) = read_optional(f)? {
                merge(&mut cfg.hoist, parse_hoist(&text, f)?);
            }
        }
        for root in &self.containerd_dirs {
            let entries = match fs::read_dir(root) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(config_error(root, e.to_string())),
            };
            let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            dirs.sort();
            for dir in dirs {
                let file = dir.join("hosts.toml");
                let Some(host) = dir.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if cfg.containerd.iter().any(|r| r.prefix == host) {
                    continue;
                }
                if let Some(text) = read_optional(&file)? {
                    cfg.containerd.push(Rule {
                        prefix: if host == "_default" {
                            host.to_owned()
                        } else {
                            normalize_registry(host)
                        },
                        mirrors: parse_containerd(&text, &file)?,
                        source: file,
                    });
                }
            }
        }
        for f in &self.registries_conf {
            let files = if f.is_dir() {
                let mut v: Vec<PathBuf> = fs::read_dir(f)
                    .map_err(|e| config_error(f, e.to_string()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                    .collect();
                v.sort();
                v
            } else {
                vec![f.clone()]
            };
            for file in files {
                if let Some(text) = read_optional(&file)? {
                    merge(&mut cfg.containers, parse_registries_conf(&text, &file)?);
                }
            }
        }
        Ok(cfg)
    }
}

impl MirrorConfig {
    /// No mirrors.
    pub fn empty() -> MirrorConfig {
        MirrorConfig::default()
    }

    /// A configuration from the text of a hoist config file (`path` names it in errors).
    pub fn from_hoist_toml(text: &str, path: &Path) -> Result<MirrorConfig, RegistryError> {
        Ok(MirrorConfig {
            hoist: parse_hoist(text, path)?,
            ..MirrorConfig::default()
        })
    }

    /// Whether no source configured any mirror.
    pub fn is_empty(&self) -> bool {
        self.hoist.is_empty() && self.containerd.is_empty() && self.containers.is_empty()
    }

    /// The mirrors for `registry/repository`, in the order to try them (the registry
    /// itself comes after them and is not listed).
    pub fn mirrors_for(&self, registry: &str, repository: &str) -> Vec<Mirror> {
        let registry = normalize_registry(registry);
        let name = format!("{registry}/{repository}");
        let pick = |rules: &[Rule]| -> Option<Vec<Mirror>> {
            let rule = rules
                .iter()
                .filter(|r| name == r.prefix || name.starts_with(&format!("{}/", r.prefix)))
                .max_by_key(|r| r.prefix.len())?;
            let rest = name
                .get(rule.prefix.len()..)
                .unwrap_or("")
                .trim_start_matches('/');
            Some(
                rule.mirrors
                    .iter()
                    .filter_map(|m| {
                        let repository = match &m.namespace {
                            None => repository.to_owned(),
                            Some(ns) => join_repo(ns, rest),
                        };
                        (!repository.is_empty()).then(|| Mirror {
                            endpoint: m.endpoint.clone(),
                            repository,
                            resolve_tags: m.resolve_tags,
                            source: rule.source.clone(),
                        })
                    })
                    .collect(),
            )
        };
        if let Some(m) = pick(&self.hoist) {
            return m;
        }
        let host_rule = self
            .containerd
            .iter()
            .find(|r| r.prefix == registry)
            .or_else(|| self.containerd.iter().find(|r| r.prefix == "_default"));
        if let Some(r) = host_rule {
            return r
                .mirrors
                .iter()
                .map(|m| Mirror {
                    endpoint: m.endpoint.clone(),
                    repository: repository.to_owned(),
                    resolve_tags: m.resolve_tags,
                    source: r.source.clone(),
                })
                .collect();
        }
        pick(&self.containers).unwrap_or_default()
    }
}

fn join_repo(ns: &str, rest: &str) -> String {
    match (ns.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (false, true) => ns.to_owned(),
        (false, false) => format!("{ns}/{rest}"),
    }
}

/// Add `new` rules, replacing earlier ones with the same prefix.
fn merge(into: &mut Vec<Rule>, new: Vec<Rule>) {
    for r in new {
        into.retain(|x| x.prefix != r.prefix);
        into.push(r);
    }
}

fn config_error(path: &Path, reason: String) -> RegistryError {
    RegistryError::Config {
        path: path.to_owned(),
        reason,
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, RegistryError> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(config_error(path, e.to_string())),
    };
    let mut buf = String::new();
    f.take(MAX_CONFIG_FILE + 1)
        .read_to_string(&mut buf)
        .map_err(|e| config_error(path, e.to_string()))?;
    if buf.len() as u64 > MAX_CONFIG_FILE {
        return Err(config_error(
            path,
            format!("larger than {MAX_CONFIG_FILE} bytes"),
        ));
    }
    Ok(Some(buf))
}

/// A prefix: `host[:port][/namespace]`, the host normalised (`index.docker.io` →
/// `docker.io`), the namespace a valid repository path.
fn normalize_prefix(p: &str) -> Result<String, String> {
    let p = p.trim().trim_end_matches('/');
    let (host, ns) = match p.split_once('/') {
        Some((h, n)) => (h, Some(n)),
        None => (p, None),
    };
    if host.is_empty() || host.contains("://") || host.contains('*') {
        return Err(format!(
            "prefix {p:?} must be host[:port][/namespace] (no scheme, no wildcard)"
        ));
    }
    let host = normalize_registry(host);
    match ns {
        None => Ok(host),
        Some(ns) => {
            crate::api::validate_repo(ns).map_err(|e| e.to_string())?;
            Ok(format!("{host}/{ns}"))
        }
    }
}

/// `[scheme://]host[:port][/path]` → (host, scheme choice, path).
fn split_location(loc: &str) -> Result<(String, Option<bool>, String), String> {
    let loc = loc.trim();
    let (plain, rest) = if let Some(r) = loc.strip_prefix("http://") {
        (Some(true), r)
    } else if let Some(r) = loc.strip_prefix("https://") {
        (Some(false), r)
    } else if loc.contains("://") {
        return Err(format!("{loc:?}: only http:// and https:// are supported"));
    } else {
        (None, loc)
    };
    let rest = rest.trim_end_matches('/');
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p),
        None => (rest, ""),
    };
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b"@?#\\".contains(&b))
    {
        return Err(format!("{loc:?}: not [scheme://]host[:port][/path]"));
    }
    if !path.is_empty() {
        valid_path(path).map_err(|r| format!("{loc:?}: {r}"))?;
    }
    Ok((host.to_owned(), plain, path.to_owned()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoistFile {
    #[serde(default)]
    registry: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoistRegistry {
    #[serde(default)]
    mirrors: Vec<HoistMirror>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HoistMirror {
    Url(String),
    Full {
        url: String,
        #[serde(default)]
        tls_verify: Option<bool>,
        #[serde(default)]
        tags: Option<bool>,
    },
}

fn parse_hoist(text: &str, path: &Path) -> Result<Vec<Rule>, RegistryError> {
    let file: HoistFile = toml::from_str(text).map_err(|e| config_error(path, e.to_string()))?;
    let mut rules = Vec::new();
    for (prefix, v) in file.registry {
        let err = |r: String| config_error(path, format!("[registry.{prefix:?}]: {r}"));
        let reg: HoistRegistry = v
            .try_into()
            .map_err(|e: toml::de::Error| err(e.to_string()))?;
        let prefix_n = normalize_prefix(&prefix).map_err(err)?;
        let mut mirrors = Vec::new();
        for m in reg.mirrors {
            let (url, tls_verify, tags) = match m {
                HoistMirror::Url(u) => (u, None, None),
                HoistMirror::Full {
                    url,
                    tls_verify,
                    tags,
                } => (url, tls_verify, tags),
            };
            let (host, plain_http, ns) = split_location(&url).map_err(err)?;
            mirrors.push(MirrorSpec {
                endpoint: Endpoint {
                    host,
                    api_root: String::new(),
                    plain_http,
                    tls_verify,
                },
                namespace: Some(ns),
                resolve_tags: tags.unwrap_or(true),
            });
        }
        merge(
            &mut rules,
            vec![Rule {
                prefix: prefix_n,
                mirrors,
                source: path.to_owned(),
            }],
        );
    }
    Ok(rules)
}

#[derive(Deserialize)]
struct ContainerdHost {
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    skip_verify: Option<bool>,
    #[serde(default)]
    override_path: Option<bool>,
}

fn parse_containerd(text: &str, path: &Path) -> Result<Vec<MirrorSpec>, RegistryError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| config_error(path, e.to_string()))?;
    let Some(hosts) = table.get("host") else {
        return Ok(Vec::new());
    };
    let hosts = hosts
        .as_table()
        .ok_or_else(|| config_error(path, "`host` is not a table".into()))?;
    let mut out = Vec::new();
    for (url, v) in hosts {
        let err = |r: String| config_error(path, format!("[host.{url:?}]: {r}"));
        let h: ContainerdHost = v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| err(e.to_string()))?;
        let caps = h
            .capabilities
            .unwrap_or_else(|| vec!["pull".into(), "resolve".into(), "push".into()]);
        if !caps.iter().any(|c| c == "pull") {
            continue;
        }
        let (host, plain_http, p) = split_location(url).map_err(err)?;
        let api_root = match (p.strip_suffix("v2"), h.override_path.unwrap_or(false)) {
            (Some(r), _) => r.trim_end_matches('/').to_owned(),
            (None, false) => p,
            (None, true) => {
                return Err(err(
                    "override_path with an API root that does not end in /v2 is not supported"
                        .into(),
                ));
            }
        };
        out.push(MirrorSpec {
            endpoint: Endpoint {
                host,
                api_root,
                plain_http,
                tls_verify: h.skip_verify.map(|s| !s),
            },
            namespace: None,
            resolve_tags: caps.iter().any(|c| c == "resolve"),
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct RegistriesConf {
    #[serde(default)]
    registry: Vec<ContainersRegistry>,
}

#[derive(Deserialize)]
struct ContainersRegistry {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default, rename = "mirror-by-digest-only")]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<ContainersMirror>,
}

#[derive(Deserialize)]
struct ContainersMirror {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default, rename = "pull-from-mirror")]
    pull_from_mirror: Option<String>,
}

fn parse_registries_conf(text: &str, path: &Path) -> Result<Vec<Rule>, RegistryError> {
    let conf: RegistriesConf =
        toml::from_str(text).map_err(|e| config_error(path, e.to_string()))?;
    let mut rules = Vec::new();
    for r in conf.registry {
        let Some(prefix) = r.prefix.as_deref().or(r.location.as_deref()) else {
            continue;
        };
        let err = |m: String| config_error(path, format!("[[registry]] {prefix:?}: {m}"));
        let prefix_n = normalize_prefix(prefix).map_err(err)?;
        if let Some(loc) = &r.location
            && normalize_prefix(loc).ok().as_deref() != Some(prefix_n.as_str())
        {
            tracing::warn!(
                file = %path.display(),
                prefix,
                location = loc.as_str(),
                "registries.conf location rewrites are not applied; only mirrors are"
            );
        }
        let mut mirrors = Vec::new();
        for m in &r.mirror {
            let (host, plain_http, ns) = split_location(&m.location).map_err(err)?;
            let digest_only =
                r.mirror_by_digest_only || m.pull_from_mirror.as_deref() == Some("digest-only");
            mirrors.push(MirrorSpec {
                endpoint: Endpoint {
                    host,
                    api_root: String::new(),
                    plain_http,
                    tls_verify: m.insecure.then_some(false),
                },
                namespace: Some(ns),
                resolve_tags: !digest_only,
            });
        }
        rules.push(Rule {
            prefix: prefix_n,
            mirrors,
            source: path.to_owned(),
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ms: &[Mirror]) -> Vec<(String, String, bool)> {
        ms.iter()
            .map(|m| (m.endpoint.to_string(), m.repository.clone(), m.resolve_tags))
            .collect()
    }

    fn t(a: &str, b: &str, c: bool) -> (String, String, bool) {
        (a.into(), b.into(), c)
    }

    #[test]
    fn hoist_format() {
        let text = r#"
            [registry."docker.io"]
            mirrors = [
              "mirror.gcr.io",
              "http://10.0.0.5:5000/dockerhub",
              { url = "https://m.internal", tls_verify = false, tags = false },
            ]
            [registry."index.docker.io/library"]
            mirrors = ["lib.internal/hub-lib"]
            [registry."127.0.0.1:5000"]
            mirrors = []
        "#;
        let cfg = MirrorConfig::from_hoist_toml(text, Path::new("/x.toml")).unwrap();
        assert_eq!(
            names(&cfg.mirrors_for("docker.io", "ns/app")),
            vec![
                t("mirror.gcr.io", "ns/app", true),
                t("http://10.0.0.5:5000", "dockerhub/ns/app", true),
                t("https://m.internal", "ns/app", false),
            ]
        );
        // The longest prefix wins, and its namespace replaces the matched one.
        assert_eq!(
            names(&cfg.mirrors_for("index.docker.io", "library/alpine")),
            vec![t("lib.internal", "hub-lib/alpine", true)]
        );
        let m = &cfg.mirrors_for("docker.io", "x")[2];
        assert_eq!(m.endpoint.tls_verify, Some(false));
        assert!(cfg.mirrors_for("127.0.0.1:5000", "a").is_empty());
        assert!(cfg.mirrors_for("quay.io", "a").is_empty());
        // "docker.io/lib" does not match "docker.io/library".
        let cfg = MirrorConfig::from_hoist_toml(
            "[registry.\"docker.io/lib\"]\nmirrors=[\"m\"]",
            Path::new("/x"),
        )
        .unwrap();
        assert!(cfg.mirrors_for("docker.io", "library/a").is_empty());
        assert_eq!(cfg.mirrors_for("docker.io", "lib/a")[0].repository, "a");
    }

    #[test]
    fn hoist_format_errors_name_the_file() {
        for bad in [
            "registry = 3",
            "[registry.\"docker.io\"]\nmirrors = [\"ftp://x\"]",
            "[registry.\"docker.io\"]\nmirrors = [\"h/../x\"]",
            "[registry.\"docker.io\"]\nmirrorz = []",
            "[registry.\"https://docker.io\"]\nmirrors = []",
            "[registry.\"docker.io\"]\nmirrors = [\"a b\"]",
            "not toml",
        ] {
            let e = MirrorConfig::from_hoist_toml(bad, Path::new("/etc/hoist/config.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("/etc/hoist/config.toml"), "{bad}: {e}");
        }
    }

    #[test]
    fn containerd_hosts() {
        let text = r#"
            server = "https://registry-1.docker.io"
            [host."http://127.0.0.1:5001"]
              capabilities = ["pull", "resolve"]
            [host."https://cache.internal/proxy/v2"]
              capabilities = ["pull"]
              skip_verify = true
              override_path = true
            [host."https://b.internal/base"]
            [host."https://push-only.internal"]
              capabilities = ["push"]
        "#;
        let specs = parse_containerd(text, Path::new("/h")).unwrap();
        let got: Vec<_> = specs
            .iter()
            .map(|s| {
                (
                    s.endpoint.to_string(),
                    s.endpoint.api_root.clone(),
                    s.resolve_tags,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("http://127.0.0.1:5001".to_string(), String::new(), true),
                (
                    "https://cache.internal/proxy".to_string(),
                    "proxy".to_string(),
                    false
                ),
                (
                    "https://b.internal/base".to_string(),
                    "base".to_string(),
                    true
                ),
            ]
        );
        assert_eq!(specs[1].endpoint.tls_verify, Some(false));
        assert_eq!(specs[1].endpoint.api_root_path().unwrap(), "proxy/");
        assert!(
            parse_containerd(
                "[host.\"https://x/y\"]\noverride_path = true",
                Path::new("/h")
            )
            .is_err()
        );
    }

    #[test]
    fn registries_conf() {
        let text = r#"
            unqualified-search-registries = ["docker.io"]
            [[registry]]
            prefix = "docker.io"
            location = "docker.io"
            [[registry.mirror]]
            location = "127.0.0.1:5001/hub"
            insecure = true
            [[registry.mirror]]
            location = "mirror.internal"
            pull-from-mirror = "digest-only"
            [[registry]]
            location = "quay.io"
            mirror-by-digest-only = true
            [[registry.mirror]]
            location = "q.internal"
        "#;
        let rules = parse_registries_conf(text, Path::new("/r")).unwrap();
        let cfg = MirrorConfig {
            containers: rules,
            ..MirrorConfig::default()
        };
        assert_eq!(
            names(&cfg.mirrors_for("docker.io", "library/alpine")),
            vec![
                t("127.0.0.1:5001", "hub/library/alpine", true),
                t("mirror.internal", "library/alpine", false),
            ]
        );
        assert_eq!(
            cfg.mirrors_for("docker.io", "x")[0].endpoint.tls_verify,
            Some(false)
        );
        assert_eq!(
            names(&cfg.mirrors_for("quay.io", "a/b")),
            vec![t("q.internal", "a/b", false)]
        );
    }

    #[test]
    fn sources_precedence_and_overrides() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let w = |rel: &str, text: &str| {
            let f = p.join(rel);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(&f, text).unwrap();
            f
        };
        let sys = w(
            "etc/hoist.toml",
            "[registry.\"a.io\"]\nmirrors=[\"sys\"]\n[registry.\"b.io\"]\nmirrors=[\"sysb\"]",
        );
        let user = w("home/hoist.toml", "[registry.\"a.io\"]\nmirrors=[\"user\"]");
        w("certs.d/b.io/hosts.toml", "[host.\"https://ctrd-b\"]");
        w("certs.d/c.io/hosts.toml", "[host.\"https://ctrd-c\"]");
        w(
            "certs.d/_default/hosts.toml",
            "[host.\"https://ctrd-default\"]",
        );
        let rc = w(
            "containers/registries.conf",
            "[[registry]]\nlocation=\"d.io\"\n[[registry.mirror]]\nlocation=\"rc-d\"",
        );
        let src = MirrorSources {
            hoist_files: vec![sys, user, p.join("missing.toml")],
            containerd_dirs: vec![p.join("certs.d"), p.join("nope")],
            registries_conf: vec![rc, p.join("containers/none.conf")],
        };
        let cfg = src.load().unwrap();
        let first = |r: &str| {
            cfg.mirrors_for(r, "x/y")
                .first()
                .map(|m| m.endpoint.to_string())
        };
        assert_eq!(
            first("a.io").as_deref(),
            Some("user"),
            "user overrides system"
        );
        assert_eq!(
            first("b.io").as_deref(),
            Some("sysb"),
            "hoist before containerd"
        );
        assert_eq!(first("c.io").as_deref(), Some("https://ctrd-c"));
        assert_eq!(
            first("d.io").as_deref(),
            Some("https://ctrd-default"),
            "containerd's _default before registries.conf"
        );
        assert!(MirrorSources::none().load().unwrap().is_empty());
        let bad = w("bad.toml", "[registry");
        let e = MirrorSources {
            hoist_files: vec![bad.clone()],
            ..MirrorSources::none()
        }
        .load()
        .unwrap_err();
        assert!(e.to_string().contains(bad.to_str().unwrap()), "{e}");
    }
}
