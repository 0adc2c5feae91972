//! containers-policy.json: parsing, validation and scope resolution.
//!
//! The format is containers-policy.json(5):
//!
//! ```json
//! {
//!   "default": [{"type": "reject"}],
//!   "transports": {
//!     "docker": {
//!       "registry.example.com/ns/repo:tag": [{"type": "insecureAcceptAnything"}],
//!       "registry.example.com/ns": [{"type": "signedBy", "keyType": "GPGKeys",
//!                                    "keyPath": "/etc/pki/example.gpg"}],
//!       "*.example.com": [{"type": "sigstoreSigned", "keyPath": "/etc/pki/cosign.pub"}]
//!     },
//!     "oci": { "/srv/layouts": [{"type": "reject"}] }
//!   }
//! }
//! ```
//!
//! Parsing is strict, like containers/image: an unknown key, a missing key, a requirement
//! with two key sources or none, a scope that is not in canonical form, or an empty
//! requirement list is an error naming the JSON path. A `sigstoreSigned` requirement that
//! names Fulcio or Rekor is refused: hoist does not check certificates or transparency-log
//! entries, and accepting such a policy would silently trust less than it says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::TrustError;
use crate::identity::SignedIdentity;
use crate::named::Named;

/// Largest policy file read (containers' policies are a few KiB).
pub const MAX_POLICY_SIZE: u64 = 4 << 20;

/// A parsed containers-policy.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The requirements when no transport scope matches.
    pub default: Vec<Requirement>,
    /// Per transport name (`docker`, `oci`, `dir`, …): scope → requirements.
    pub transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// Where a requirement's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `keyPath`: one file.
    Path(PathBuf),
    /// `keyPaths`: several files; any of their keys will do.
    Paths(Vec<PathBuf>),
    /// `keyData` (base64 in the file, decoded here).
    Data(Vec<u8>),
}

impl KeySource {
    /// A short description for messages (`keyPath /etc/pki/a.gpg`).
    pub fn describe(&self) -> String {
        match self {
            KeySource::Path(p) => format!("keyPath {}", p.display()),
            KeySource::Paths(ps) => format!(
                "keyPaths [{}]",
                ps.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            KeySource::Data(d) => format!("keyData ({} bytes)", d.len()),
        }
    }
}

/// One policy requirement. Every requirement of the list a scope selects must hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    /// `insecureAcceptAnything`.
    InsecureAcceptAnything,
    /// `reject`.
    Reject,
    /// `signedBy` with `keyType: GPGKeys`: a simple-signing signature by one of the keys.
    SignedBy {
        /// The OpenPGP keys.
        keys: KeySource,
        /// How the signed identity must relate to the image's.
        identity: SignedIdentity,
    },
    /// `sigstoreSigned` with public keys: a cosign-style signature by one of the keys.
    SigstoreSigned {
        /// The ECDSA P-256 public keys (PEM, PKIX).
        keys: KeySource,
        /// How the signed identity must relate to the image's.
        identity: SignedIdentity,
    },
}

impl Requirement {
    /// The requirement's `type` as written in the policy.
    pub fn type_name(&self) -> &'static str {
        match self {
            Requirement::InsecureAcceptAnything => "insecureAcceptAnything",
            Requirement::Reject => "reject",
            Requirement::SignedBy { .. } => "signedBy",
            Requirement::SigstoreSigned { .. } => "sigstoreSigned",
        }
    }

    /// A one-line description for messages and `hoist verify`.
    pub fn describe(&self) -> String {
        match self {
            Requirement::InsecureAcceptAnything | Requirement::Reject => self.type_name().into(),
            Requirement::SignedBy { keys, identity }
            | Requirement::SigstoreSigned { keys, identity } => format!(
                "{} ({}, signedIdentity {})",
                self.type_name(),
                keys.describe(),
                identity.describe()
            ),
        }
    }
}

/// The transports whose scopes are paths (absolute, canonical directories or files).
const PATH_TRANSPORTS: &[&str] = &["oci", "dir", "oci-archive", "docker-archive"];
/// The transports whose scopes are Docker references (`hoist` is the local store).
const DOCKER_TRANSPORTS: &[&str] = &["docker", "hoist", "atomic", "docker-daemon"];

/// Which scope of a policy applied to an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `transports.<transport>.<scope>`; an empty scope is the transport's default.
    Transport {
        /// The transport name.
        transport: String,
        /// The scope key as written in the policy.
        scope: String,
    },
    /// The policy's `default`.
    Default,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Transport { transport, scope } if scope.is_empty() => {
                write!(f, "transports.{transport}.\"\" (the {transport} default)")
            }
            Scope::Transport { transport, scope } => write!(f, "transports.{transport}.{scope:?}"),
            Scope::Default => f.write_str("default"),
        }
    }
}

/// The image a policy decision is about: its transport, and the scopes it falls in, most
/// specific first (containers/image's "policy configuration identity" and "namespaces").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTarget {
    /// The transport name as policy files spell it (`docker`, `oci`, `dir`, …).
    pub transport: String,
    /// Candidate scopes, most specific first; the transport default (`""`) is implied last.
    pub scopes: Vec<String>,
    /// The Docker reference the image claims, matched against signed identities
    /// (`None` for a path transport, where only `exactReference`/`exactRepository` can match).
    pub docker_reference: Option<Named>,
}

impl PolicyTarget {
    /// A Docker reference (`docker://` and the local store, whose images carry their names).
    ///
    /// Scopes: `host/ns/repo:tag` (or `@digest`), `host/ns/repo`, `host/ns`, `host`, then
    /// `*.d.example.com`, `*.example.com`, `*.com` for the host `a.d.example.com`.
    ///
    /// ```
    /// use hoist_trust::{Named, PolicyTarget};
    ///
    /// let t = PolicyTarget::docker("docker", &Named::parse("a.example.com/ns/app:1")?);
    /// assert_eq!(
    ///     t.scopes,
    ///     [
    ///         "a.example.com/ns/app:1",
    ///         "a.example.com/ns/app",
    ///         "a.example.com/ns",
    ///         "a.example.com",
    ///         "*.example.com",
    ///         "*.com",
    ///     ]
    /// );
    /// # Ok::<(), hoist_trust::TrustError>(())
    /// ```
    pub fn docker(transport: &str, reference: &Named) -> PolicyTarget {
        let mut scopes = Vec::new();
        if !reference.is_name_only() {
            scopes.push(reference.to_string());
        }
        let mut name = reference.name().to_owned();
        loop {
            scopes.push(name.clone());
            match name.rfind('/') {
                Some(i) => name.truncate(i),
                None => break,
            }
        }
        // Wildcard scopes on the host without port; `*.a.b` matches `x.a.b`, not `a.b`.
        let host = reference.host();
        let host = host.split(':').next().unwrap_or(host);
        let mut rest = host;
        while let Some((_, tail)) = rest.split_once('.') {
            scopes.push(format!("*.{tail}"));
            rest = tail;
        }
        PolicyTarget {
            transport: transport.to_owned(),
            scopes,
            docker_reference: Some(reference.clone()),
        }
    }

    /// A path transport: `oci:/a/b/c:ref` has scopes `/a/b/c:ref`, `/a/b/c`, `/a/b`, `/a`;
    /// `dir:/a/b` has `/a/b`, `/a`. `path` should be absolute and canonical (the caller
    /// resolves it); a relative path gets no scope and falls to the transport default.
    pub fn path(transport: &str, path: &Path, reference: Option<&str>) -> PolicyTarget {
        let mut scopes = Vec::new();
        if path.is_absolute() {
            let p = path.to_string_lossy().into_owned();
            if let Some(r) = reference.filter(|r| !r.is_empty()) {
                scopes.push(format!("{p}:{r}"));
            }
            let mut cur = Some(path);
            while let Some(c) = cur {
                if c.as_os_str() == "/" {
                    break;
                }
                scopes.push(c.to_string_lossy().into_owned());
                cur = c.parent();
            }
        }
        PolicyTarget {
            transport: transport.to_owned(),
            scopes,
            docker_reference: None,
        }
    }
}

impl Policy {
    /// A policy that accepts everything (what hoist does when no policy file exists, and
    /// under `--insecure-policy`).
    pub fn accept_anything() -> Policy {
        Policy {
            default: vec![Requirement::InsecureAcceptAnything],
            transports: BTreeMap::new(),
        }
    }

    /// Reads and parses a policy file (at most [`MAX_POLICY_SIZE`]).
    pub fn from_file(path: &Path) -> Result<Policy, TrustError> {
        let bytes = crate::read_limited(path, MAX_POLICY_SIZE)?;
        Policy::parse(&bytes).map_err(|e| match e {
            TrustError::PolicyInvalid { path: _, reason } => TrustError::PolicyInvalid {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Parses policy JSON. Errors carry an empty path; [`Policy::from_file`] fills it in.
    ///
    /// Parsing is strict, like containers/image's: an unknown key or requirement type, a
    /// scope that is not valid for its transport, or an empty requirement list is
    /// [`TrustError::PolicyInvalid`] naming the JSON path.
    ///
    /// ```
    /// use hoist_trust::{Named, Policy, PolicyTarget, Requirement};
    ///
    /// let policy = Policy::parse(br#"{
    ///     "default": [{"type": "insecureAcceptAnything"}],
    ///     "transports": {"docker": {"example.com": [{"type": "reject"}]}}
    /// }"#)?;
    /// let target = PolicyTarget::docker("docker", &Named::parse("example.com/ns/app:1")?);
    /// let (scope, reqs) = policy.requirements_for(&target);
    /// assert_eq!(scope.to_string(), "transports.docker.\"example.com\"");
    /// assert!(matches!(reqs, [Requirement::Reject]));
    ///
    /// assert!(Policy::parse(br#"{"default": [{"type": "acceptEverything"}]}"#).is_err());
    /// assert!(Policy::parse(br#"{"default": []}"#).is_err());
    /// # Ok::<(), hoist_trust::TrustError>(())
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Policy, TrustError> {
        let fail = |reason: String| TrustError::PolicyInvalid {
            path: PathBuf::new(),
            reason,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| fail(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| fail("the top level is not an object".into()))?;
        only_keys(obj, &["default", "transports"], "the top level").map_err(fail)?;
        let default = match obj.get("default") {
            Some(d) => requirements(d, "default").map_err(fail)?,
            None => return Err(fail("\"default\" is missing".into())),
        };
        let mut transports = BTreeMap::new();
        match obj.get("transports") {
            None | Some(Value::Null) => {}
            Some(Value::Object(ts)) => {
                for (t, scopes) in ts {
                    let at = format!("transports.{t}");
                    let scopes = scopes
                        .as_object()
                        .ok_or_else(|| fail(format!("{at} is not an object")))?;
                    let mut parsed = BTreeMap::new();
                    for (scope, reqs) in scopes {
                        let at = format!("{at}.{scope:?}");
                        validate_scope(t, scope).map_err(|r| fail(format!("{at}: {r}")))?;
                        parsed.insert(scope.clone(), requirements(reqs, &at).map_err(fail)?);
                    }
                    transports.insert(t.clone(), parsed);
                }
            }
            Some(_) => return Err(fail("\"transports\" is not an object".into())),
        }
        Ok(Policy {
            default,
            transports,
        })
    }

    /// The requirements for `target`, and which scope supplied them: the most specific
    /// matching scope of the target's transport, else that transport's `""`, else `default`.
    pub fn requirements_for(&self, target: &PolicyTarget) -> (Scope, &[Requirement]) {
        if let Some(scopes) = self.transports.get(&target.transport) {
            for s in target.scopes.iter().map(String::as_str).chain([""]) {
                if let Some(reqs) = scopes.get(s) {
                    return (
                        Scope::Transport {
                            transport: target.transport.clone(),
                            scope: s.to_owned(),
                        },
                        reqs,
                    );
                }
            }
        }
        (Scope::Default, &self.default)
    }
}

/// Where hoist looks for a policy when none is named: `$XDG_CONFIG_HOME/containers/policy.json`
/// (else `$HOME/.config/containers/policy.json`), then `/etc/containers/policy.json`.
/// `config_home` is the caller's resolved user configuration directory.
pub fn default_policy_paths(config_home: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(h) = config_home {
        v.push(h.join("containers/policy.json"));
    }
    v.push(PathBuf::from("/etc/containers/policy.json"));
    v
}

fn only_keys(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), String> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("unknown key {k:?} in {at}"));
        }
    }
    Ok(())
}

fn requirements(v: &Value, at: &str) -> Result<Vec<Requirement>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("{at} is not a list of requirements"))?;
    if list.is_empty() {
        // containers/image refuses an empty list: it would mean "no requirement", which is
        // too easy to write by accident.
        return Err(format!(
            "{at} is an empty list (write [{{\"type\": \"insecureAcceptAnything\"}}] to accept anything)"
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, r)| requirement(r, &format!("{at}[{i}]")))
        .collect()
}

fn requirement(v: &Value, at: &str) -> Result<Requirement, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{at} is not an object"))?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at} has no string \"type\""))?;
    match ty {
        "insecureAcceptAnything" => {
            only_keys(obj, &["type"], at)?;
            Ok(Requirement::InsecureAcceptAnything)
        }
        "reject" => {
            only_keys(obj, &["type"], at)?;
            Ok(Requirement::Reject)
        }
        "signedBy" => {
            only_keys(
                obj,
                &[
                    "type",
                    "keyType",
                    "keyPath",
                    "keyPaths",
                    "keyData",
                    "signedIdentity",
                ],
                at,
            )?;
            match obj.get("keyType").and_then(Value::as_str) {
                Some("GPGKeys") => {}
                Some(other) => {
                    return Err(format!(
                        "{at}: keyType {other:?} is not supported (only \"GPGKeys\")"
                    ));
                }
                None => return Err(format!("{at}: signedBy needs \"keyType\": \"GPGKeys\"")),
            }
            Ok(Requirement::SignedBy {
                keys: key_source(obj, at)?,
                identity: signed_identity(obj, at)?,
            })
        }
        "sigstoreSigned" => {
            for k in [
                "fulcio",
                "pki",
                "rekorPublicKeyPath",
                "rekorPublicKeyPaths",
                "rekorPublicKeyData",
                "rekorPublicKeyDatas",
            ] {
                if obj.contains_key(k) {
                    return Err(format!(
                        "{at}: {k:?} is not supported: hoist verifies sigstore signatures against \
                         public keys only (keyPath, keyPaths, keyData) and checks neither Fulcio \
                         certificates nor Rekor entries; refusing the policy rather than trusting \
                         less than it says"
                    ));
                }
            }
            if obj.contains_key("keyDatas") {
                return Err(format!(
                    "{at}: \"keyDatas\" is not supported (use keyData, keyPath or keyPaths)"
                ));
            }
            only_keys(
                obj,
                &["type", "keyPath", "keyPaths", "keyData", "signedIdentity"],
                at,
            )?;
            Ok(Requirement::SigstoreSigned {
                keys: key_source(obj, at)?,
                identity: signed_identity(obj, at)?,
            })
        }
        other => Err(format!("{at}: unknown requirement type {other:?}")),
    }
}

fn key_source(obj: &Map<String, Value>, at: &str) -> Result<KeySource, String> {
    let given: Vec<&str> = ["keyPath", "keyPaths", "keyData"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
    match given.as_slice() {
        [] => Err(format!(
            "{at}: one of keyPath, keyPaths or keyData is required"
        )),
        [_, _, ..] => Err(format!(
            "{at}: only one of keyPath, keyPaths and keyData may be given (found {})",
            given.join(", ")
        )),
        ["keyPath"] => {
            let p = obj["keyPath"]
                .as_str()
                .ok_or_else(|| format!("{at}.keyPath is not a string"))?;
            Ok(KeySource::Path(abs_path(p, &format!("{at}.keyPath"))?))
        }
        ["keyPaths"] => {
            let list = obj["keyPaths"]
                .as_array()
                .ok_or_else(|| format!("{at}.keyPaths is not a list"))?;
            if list.is_empty() {
                return Err(format!("{at}.keyPaths is empty"));
            }
            let mut v = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let p = p
                    .as_str()
                    .ok_or_else(|| format!("{at}.keyPaths[{i}] is not a string"))?;
                v.push(abs_path(p, &format!("{at}.keyPaths[{i}]"))?);
            }
            Ok(KeySource::Paths(v))
        }
        _ => {
            let d = obj["keyData"]
                .as_str()
                .ok_or_else(|| format!("{at}.keyData is not a string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(d)
                .map_err(|e| format!("{at}.keyData is not base64: {e}"))?;
            if bytes.is_empty() {
                return Err(format!("{at}.keyData is empty"));
            }
            Ok(KeySource::Data(bytes))
        }
    }
}

fn abs_path(p: &str, at: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(format!("{at}: {p:?} is not an absolute path"));
    }
    Ok(path)
}

fn signed_identity(obj: &Map<String, Value>, at: &str) -> Result<SignedIdentity, String> {
    let Some(v) = obj.get("signedIdentity") else {
        return Ok(SignedIdentity::MatchRepoDigestOrExact);
    };
    let at = format!("{at}.signedIdentity");
    let o = v
        .as_object()
        .ok_or_else(|| format!("{at} is not an object"))?;
    let ty = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at} has no string \"type\""))?;
    let string = |k: &str| -> Result<&str, String> {
        o.get(k)
            .ok_or_else(|| format!("{at}: {ty} needs {k:?}"))?
            .as_str()
            .ok_or_else(|| format!("{at}.{k} is not a string"))
    };
    match ty {
        "matchExact" | "matchRepoDigestOrExact" | "matchRepository" => {
            only_keys(o, &["type"], &at)?;
            Ok(match ty {
                "matchExact" => SignedIdentity::MatchExact,
                "matchRepoDigestOrExact" => SignedIdentity::MatchRepoDigestOrExact,
                _ => SignedIdentity::MatchRepository,
            })
        }
        "exactReference" => {
            only_keys(o, &["type", "dockerReference"], &at)?;
            let s = string("dockerReference")?;
            let r = Named::parse(s).map_err(|e| format!("{at}.dockerReference: {e}"))?;
            if r.is_name_only() {
                return Err(format!(
                    "{at}.dockerReference {s:?} names neither a tag nor a digest"
                ));
            }
            Ok(SignedIdentity::ExactReference(r))
        }
        "exactRepository" => {
            only_keys(o, &["type", "dockerRepository"], &at)?;
            let s = string("dockerRepository")?;
            let r = Named::parse(s).map_err(|e| format!("{at}.dockerRepository: {e}"))?;
            if !r.is_name_only() {
                return Err(format!(
                    "{at}.dockerRepository {s:?} names a tag or digest; give the repository only"
                ));
            }
            Ok(SignedIdentity::ExactRepository(r))
        }
        "remapIdentity" => {
            only_keys(o, &["type", "prefix", "signedPrefix"], &at)?;
            let prefix = string("prefix")?;
            let signed = string("signedPrefix")?;
            for (k, p) in [("prefix", prefix), ("signedPrefix", signed)] {
                validate_prefix(p).map_err(|r| format!("{at}.{k} {p:?}: {r}"))?;
            }
            Ok(SignedIdentity::RemapIdentity {
                prefix: prefix.to_owned(),
                signed_prefix: signed.to_owned(),
            })
        }
        other => Err(format!("{at}: unknown signedIdentity type {other:?}")),
    }
}

/// A remapIdentity prefix: a host[:port], or a repository namespace or repository under
/// one, in normal form, without tag, digest or wildcard.
fn validate_prefix(p: &str) -> Result<(), String> {
    if p.contains(['*', '@']) {
        return Err("wildcards and digests are not allowed".into());
    }
    if !p.contains('/') {
        return if valid_host(p) {
            Ok(())
        } else {
            Err("not a host[:port]".into())
        };
    }
    let last = p.rsplit('/').next().unwrap_or(p);
    if last.contains(':') {
        return Err("a tag is not allowed".into());
    }
    let n = Named::parse(p).map_err(|e| e.to_string())?;
    if n.name() != p {
        return Err(format!("not in normal form (that is {:?})", n.name()));
    }
    Ok(())
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (h, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A scope key must be in the form the transport's lookup produces, or it could never match
/// (containers/image refuses such policies too).
fn validate_scope(transport: &str, scope: &str) -> Result<(), String> {
    if scope.is_empty() {
        return Ok(());
    }
    if DOCKER_TRANSPORTS.contains(&transport) {
        if let Some(domain) = scope.strip_prefix("*.") {
            if domain.is_empty() || domain.contains(['/', ':', '*', '@']) || !valid_host(domain) {
                return Err("a wildcard scope is \"*.\" followed by a domain name".into());
            }
            return Ok(());
        }
        if !scope.contains('/') {
            return if valid_host(scope) && !scope.contains('*') {
                Ok(())
            } else {
                Err("not a host[:port], repository or reference".into())
            };
        }
        let n = Named::parse(scope).map_err(|e| e.to_string())?;
        if n.to_string() != scope {
            return Err(format!(
                "not in canonical form (that is {:?}); short names never match",
                n.to_string()
            ));
        }
        Ok(())
    } else if PATH_TRANSPORTS.contains(&transport) {
        if !scope.starts_with('/') {
            return Err("a path scope must be absolute".into());
        }
        let path_part = match transport {
            "oci" | "oci-archive" => scope.split_once(':').map(|(a, _)| a).unwrap_or(scope),
            _ => scope,
        };
        if path_part.len() > 1 && path_part.ends_with('/')
            || path_part.split('/').any(|c| c == "." || c == "..")
            || path_part.contains("//")
        {
            return Err("a path scope must be clean (no trailing '/', '.', '..' or '//')".into());
        }
        Ok(())
    } else {
        // Transports hoist does not know (containers-storage, ostree, …) are kept as written
        // and never match anything hoist evaluates.
        Ok(())
    }
}

#[cfg(test)]
mod tests;
