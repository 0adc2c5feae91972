//! registries.d: where simple-signing signatures of a registry's images are kept
//! ("lookaside" stores) and whether cosign `.sig` attachments are used.
//!
//! Every `*.yaml` file of the directory is read (in name order) and merged; a namespace
//! configured twice is an error. The shape (containers-registries.d(5)):
//!
//! ```yaml
//! default-docker:
//!   lookaside: file:///var/lib/containers/sigstore
//! docker:
//!   registry.example.com/ns:
//!     lookaside: https://sigs.example.com/ns
//!     lookaside-staging: file:///srv/sigstore-staging
//!     use-sigstore-attachments: true
//! ```
//!
//! (`sigstore` and `sigstore-staging` are the older names of `lookaside` and
//! `lookaside-staging`.) For an image, each field comes from the most specific namespace
//! that sets it (reference, repository, parent namespaces, host, `*.domain`), else from
//! `default-docker`.
//!
//! The files are read with a small YAML reader for exactly this shape: block mappings of
//! plain or quoted scalars, comments. Anything else (lists, flow style, anchors, multi-line
//! scalars, tabs) is refused with the file and line, never guessed at.
//!
//! Signature `N` (from 1) of manifest `sha256:HEX` of `host/path/repo` is at
//! `LOOKASIDE/path/repo@sha256=HEX/signature-N`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hoist_types::Digest;

use crate::named::Named;
use crate::policy::PolicyTarget;

/// Largest registries.d file read.
const MAX_FILE: u64 = 1 << 20;
/// Most files read from one directory.
const MAX_FILES: usize = 256;

/// One namespace's settings (unset fields fall back to less specific namespaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Where signatures are read from (`file://`, `http://`, `https://`).
    pub lookaside: Option<String>,
    /// Where new signatures are written (defaults to `lookaside`).
    pub lookaside_staging: Option<String>,
    /// Whether cosign `.sig` attachments are used.
    pub use_sigstore_attachments: Option<bool>,
}

/// A merged registries.d configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesD {
    /// `default-docker`.
    pub default_docker: Option<Entry>,
    /// `docker`: namespace → settings.
    pub docker: BTreeMap<String, Entry>,
}

impl RegistriesD {
    /// Reads every `*.yaml` file of `dir`; a missing directory is an empty configuration.
    pub fn load_dir(dir: &Path) -> Result<RegistriesD, String> {
        let mut out = RegistriesD::default();
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(format!("reading {}: {e}", dir.display())),
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        if files.len() > MAX_FILES {
            return Err(format!(
                "{} holds more than {MAX_FILES} files",
                dir.display()
            ));
        }
        for f in files {
            let bytes =
                crate::read_limited(&f, MAX_FILE).map_err(|e| hoist_types::error_chain(&e))?;
            let text =
                String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", f.display()))?;
            let one = RegistriesD::parse(&text).map_err(|e| format!("{}: {e}", f.display()))?;
            out.merge(one)
                .map_err(|e| format!("{}: {e}", f.display()))?;
        }
        Ok(out)
    }

    fn merge(&mut self, other: RegistriesD) -> Result<(), String> {
        if let Some(d) = other.default_docker {
            if self.default_docker.is_some() {
                return Err("default-docker is configured in more than one file".into());
            }
            self.default_docker = Some(d);
        }
        for (ns, e) in other.docker {
            if self.docker.contains_key(&ns) {
                return Err(format!(
                    "docker namespace {ns:?} is configured in more than one file"
                ));
            }
            self.docker.insert(ns, e);
        }
        Ok(())
    }

    /// Parses one file's text.
    pub fn parse(text: &str) -> Result<RegistriesD, String> {
        let tree = parse_yaml(text)?;
        let mut out = RegistriesD::default();
        for (key, (line, node)) in tree {
            match key.as_str() {
                "default-docker" => {
                    out.default_docker = Some(entry(&node, line, "default-docker")?)
                }
                "docker" => {
                    let Node::Map(m) = node else {
                        return Err(format!("line {line}: docker is not a mapping"));
                    };
                    for (ns, (l, n)) in m {
                        out.docker.insert(ns.clone(), entry(&n, l, &ns)?);
                    }
                }
                other => return Err(format!("line {line}: unknown key {other:?}")),
            }
        }
        Ok(out)
    }

    /// The settings for `image`: each field from the most specific namespace that sets it,
    /// else `default-docker`.
    pub fn entry_for(&self, image: &Named) -> Entry {
        let target = PolicyTarget::docker("docker", image);
        let mut chain: Vec<&Entry> = target
            .scopes
            .iter()
            .filter_map(|s| self.docker.get(s))
            .collect();
        chain.extend(self.default_docker.iter());
        let pick = |f: &dyn Fn(&Entry) -> Option<String>| chain.iter().find_map(|e| f(e));
        Entry {
            lookaside: pick(&|e| e.lookaside.clone()),
            lookaside_staging: pick(&|e| e.lookaside_staging.clone()),
            use_sigstore_attachments: chain.iter().find_map(|e| e.use_sigstore_attachments),
        }
    }
}

/// The URL of signature `index` (from 1) of `digest` for `image` under the lookaside `base`.
pub fn signature_url(base: &str, image: &Named, digest: &Digest, index: usize) -> String {
    let path = image
        .name()
        .split_once('/')
        .map(|(_, p)| p)
        .unwrap_or(image.name());
    format!(
        "{}/{path}@{}={}/signature-{index}",
        base.trim_end_matches('/'),
        digest.algorithm(),
        digest.hex()
    )
}

fn entry(node: &Node, line: usize, at: &str) -> Result<Entry, String> {
    let Node::Map(m) = node else {
        return Err(format!("line {line}: {at} is not a mapping"));
    };
    let mut e = Entry::default();
    for (k, (l, v)) in m {
        let Node::Scalar(s) = v else {
            return Err(format!("line {l}: {at}.{k} is not a scalar"));
        };
        let url = || -> Result<Option<String>, String> {
            if !(s.starts_with("file:///") || s.starts_with("http://") || s.starts_with("https://"))
            {
                return Err(format!(
                    "line {l}: {at}.{k} {s:?} is not a file:///, http:// or https:// URL"
                ));
            }
            Ok(Some(s.clone()))
        };
        match k.as_str() {
            "lookaside" | "sigstore" => e.lookaside = url()?,
            "lookaside-staging" | "sigstore-staging" => e.lookaside_staging = url()?,
            "use-sigstore-attachments" => {
                e.use_sigstore_attachments = Some(match s.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("line {l}: {at}.{k} is not true or false")),
                })
            }
            other => return Err(format!("line {l}: unknown key {other:?} in {at}")),
        }
    }
    Ok(e)
}

#[derive(Debug)]
enum Node {
    Scalar(String),
    Map(Mapping),
}

/// A block mapping: key → (line, value), in file order.
type Mapping = Vec<(String, (usize, Node))>;

/// A block mapping of block mappings and scalars, keyed in file order.
fn parse_yaml(text: &str) -> Result<Mapping, String> {
    // (indent, line number, key, value if inline)
    let mut items: Vec<(usize, usize, String, Option<String>)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = strip_comment(raw);
        if line.trim().is_empty() || line.trim() == "---" && items.is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start_matches(' ').len();
        if line[indent..].starts_with('\t') {
            return Err(format!("line {n}: tabs are not allowed for indentation"));
        }
        let body = line.trim();
        if body.starts_with(['-', '[', '{', '&', '*', '!', '|', '>']) {
            return Err(format!(
                "line {n}: only block mappings of scalars are supported"
            ));
        }
        let (k, v) = split_key(body).ok_or_else(|| format!("line {n}: expected `key: value`"))?;
        let k = unquote(k, n)?;
        let v = v.trim();
        let v = if v.is_empty() {
            None
        } else {
            if v.starts_with(['[', '{', '&', '*', '!', '|', '>']) {
                return Err(format!(
                    "line {n}: only plain or quoted scalar values are supported"
                ));
            }
            Some(unquote(v, n)?)
        };
        items.push((indent, n, k, v));
    }
    let mut pos = 0;
    let out = build(&items, &mut pos, 0)?;
    if pos != items.len() {
        return Err(format!("line {}: bad indentation", items[pos].1));
    }
    Ok(out)
}

type Item = (usize, usize, String, Option<String>);

fn build(items: &[Item], pos: &mut usize, indent: usize) -> Result<Mapping, String> {
    let mut out: Mapping = Vec::new();
    while *pos < items.len() {
        let (ind, n, k, v) = &items[*pos];
        if *ind < indent {
            break;
        }
        if *ind > indent {
            return Err(format!("line {n}: bad indentation"));
        }
        if out.iter().any(|(x, _)| x == k) {
            return Err(format!("line {n}: duplicate key {k:?}"));
        }
        *pos += 1;
        let node = match v {
            Some(s) => Node::Scalar(s.clone()),
            None => {
                let child = items.get(*pos).map(|c| c.0).unwrap_or(0);
                if child <= indent {
                    Node::Map(Vec::new())
                } else {
                    Node::Map(build(items, pos, child)?)
                }
            }
        };
        out.push((k.clone(), (*n, node)));
    }
    Ok(out)
}

fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return &line[..i],
            None => {}
        }
        prev_space = c == ' ';
    }
    line
}

/// Splits `key: value` at the first `: ` (or a trailing `:`) outside quotes.
fn split_key(body: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    let b = body.as_bytes();
    for (i, c) in body.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == ':' && (i + 1 == b.len() || b[i + 1] == b' ') => {
                return Some((&body[..i], &body[i + 1..]));
            }
            None => {}
        }
    }
    None
}

fn unquote(s: &str, n: usize) -> Result<String, String> {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q) {
            let inner = inner
                .strip_suffix(q)
                .ok_or_else(|| format!("line {n}: unterminated quote"))?;
            if inner.contains(q) || (q == '"' && inner.contains('\\')) {
                return Err(format!(
                    "line {n}: escapes in quoted scalars are not supported"
                ));
            }
            return Ok(inner.to_owned());
        }
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_picks_the_most_specific_namespace() {
        let r = RegistriesD::parse(
            "# comment\n\
             default-docker:\n  lookaside: file:///default   # trailing\n\
             docker:\n\
             \x20 example.com:\n    lookaside: https://sigs.example.com\n    use-sigstore-attachments: true\n\
             \x20 'example.com/ns/app':\n    sigstore: \"file:///app sigs\"\n    lookaside-staging: file:///staging\n\
             \x20 \"*.example.org\":\n    lookaside: file:///wild\n",
        )
        .unwrap();
        let n = |s: &str| Named::parse(s).unwrap();
        let e = r.entry_for(&n("example.com/ns/app:1"));
        assert_eq!(e.lookaside.as_deref(), Some("file:///app sigs"));
        assert_eq!(e.lookaside_staging.as_deref(), Some("file:///staging"));
        assert_eq!(e.use_sigstore_attachments, Some(true));
        let e = r.entry_for(&n("example.com/other:1"));
        assert_eq!(e.lookaside.as_deref(), Some("https://sigs.example.com"));
        assert_eq!(e.lookaside_staging, None);
        assert_eq!(
            r.entry_for(&n("a.example.org/x:1")).lookaside.as_deref(),
            Some("file:///wild")
        );
        assert_eq!(
            r.entry_for(&n("quay.io/x:1")).lookaside.as_deref(),
            Some("file:///default")
        );
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(
            signature_url("file:///s/", &n("example.com/ns/app:1"), &d, 2),
            format!("file:///s/ns/app@sha256={}/signature-2", "a".repeat(64))
        );
    }

    #[test]
    fn refusals_name_the_line() {
        for (text, want) in [
            ("docker:\n  - a\n", "line 2: only block mappings"),
            ("docker: {a: b}\n", "line 1: only plain or quoted"),
            ("other:\n  x: y\n", "line 1: unknown key \"other\""),
            (
                "docker:\n  h:\n    lookaside: ftp://x\n",
                "line 3: h.lookaside \"ftp://x\" is not a file:///",
            ),
            (
                "docker:\n  h:\n    lookasid: file:///x\n",
                "line 3: unknown key \"lookasid\"",
            ),
            (
                "docker:\n  h:\n    use-sigstore-attachments: yes\n",
                "not true or false",
            ),
            ("docker:\n  h:\n\tlookaside: file:///x\n", "line 3: tabs"),
            (
                "docker:\n  h:\n    lookaside: file:///x\n  h:\n    lookaside: file:///y\n",
                "line 4: duplicate key",
            ),
            (
                "default-docker:\n    lookaside: file:///x\n  sigstore: file:///y\n",
                "bad indentation",
            ),
            ("docker:\n  h: 'x\n", "unterminated quote"),
            ("docker:\n  h:\n    lookaside: \"a\\\"b\"\n", "escapes"),
        ] {
            let e = RegistriesD::parse(text).expect_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let mut a = RegistriesD::parse("docker:\n  h:\n    lookaside: file:///x\n").unwrap();
        let b = RegistriesD::parse("docker:\n  h:\n    lookaside: file:///y\n").unwrap();
        assert!(a.merge(b).unwrap_err().contains("more than one file"));
    }
}
