//! From a sync source to the list of images to copy: tags listed (`tags/list`, paged) where
//! the file asks for all tags, a regex or a semver constraint; destinations named as skopeo
//! sync names them ([`destination_suffix`], [`destination_for`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use hoist_registry::{ClientOptions, Credentials, RegistryClient};
use hoist_types::Reference;

use super::SyncError;
use super::config::{ConfigFormat, RegistryConfig, Selection, SyncConfig};
use crate::TransportError;
use crate::transports::ImageRef;

/// Where images come from.
#[derive(Debug, Clone)]
pub enum SyncSource {
    /// `--src docker`: a repository (`host/repo`: every tag) or one image
    /// (`host/repo:tag`, `host/repo@digest`).
    Docker(String),
    /// `--src yaml`/`--src toml`: a sync file (`None`: YAML unless the name ends `.toml`).
    File(PathBuf, Option<ConfigFormat>),
}

/// The kinds of destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestKind {
    /// A registry (and optional namespace): `DEST/NAME:TAG`.
    Docker,
    /// A directory holding one `dir:` layout per image: `DEST/NAME:TAG/`.
    Dir,
    /// One OCI layout holding every image, each under the ref name `NAME:TAG`.
    Oci,
    /// The store: `DEST/NAME:TAG`, or `NAME:TAG` when `DEST` is empty.
    Hoist,
}

/// Where images go.
#[derive(Debug, Clone)]
pub struct SyncTarget {
    /// The kind.
    pub kind: DestKind,
    /// The destination argument (`host[/ns]`, a directory, a name prefix).
    pub dest: String,
    /// Keep the source's whole name (registry included) below `dest`, not its last
    /// path component.
    pub scoped: bool,
}

/// One image to sync.
#[derive(Debug, Clone)]
pub struct PlannedImage {
    /// The source, with its tag or digest.
    pub source: Reference,
    /// Registry settings for the source (the file's per-registry settings applied).
    pub source_opts: ClientOptions,
    /// Where it goes.
    pub dest: ImageRef,
    /// The OCI ref name (or dir path suffix) the destination uses, for messages.
    pub dest_label: String,
}

/// What listing found: the images, and the repositories whose tags could not be listed.
#[derive(Debug, Default)]
pub struct Plan {
    /// Images, in source order.
    pub images: Vec<PlannedImage>,
    /// Repositories that failed (`registry/repo`, error).
    pub failures: Vec<(String, SyncError)>,
}

/// skopeo sync's name for an image below the destination: the whole reference
/// (`host/repo:tag`, `host/repo@digest`) with `scoped`, else its last path component
/// (`repo:tag`).
pub fn destination_suffix(source: &Reference, scoped: bool) -> String {
    let full = match (source.digest(), source.tag()) {
        (Some(d), _) => format!("{}@{d}", source.name()),
        (None, Some(t)) => format!("{}:{t}", source.name()),
        (None, None) => source.name(),
    };
    if scoped {
        full
    } else {
        full.rsplit('/').next().unwrap_or(&full).to_owned()
    }
}

/// `a/b` joined like Go's `path.Join`: empty parts dropped, duplicate slashes collapsed.
fn join(dest: &str, suffix: &str) -> String {
    let lead = if dest.starts_with('/') { "/" } else { "" };
    let parts: Vec<&str> = dest
        .split('/')
        .chain(suffix.split('/'))
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("{lead}{}", parts.join("/"))
}

/// The destination of `source` under `target`.
pub fn destination_for(
    source: &Reference,
    target: &SyncTarget,
) -> Result<(ImageRef, String), SyncError> {
    let suffix = destination_suffix(source, target.scoped);
    let bad = |reason: String| SyncError::BadDestination {
        input: target.dest.clone(),
        reason,
    };
    let r = match target.kind {
        DestKind::Docker => {
            let s = join(
                target
                    .dest
                    .strip_prefix("docker://")
                    .unwrap_or(&target.dest),
                &suffix,
            );
            ImageRef::Docker(Reference::parse(&s).map_err(|e| bad(format!("{s}: {e}")))?)
        }
        DestKind::Dir => {
            if suffix.split('/').any(|c| c == "..") {
                return Err(bad(format!("{suffix:?} would leave the destination")));
            }
            ImageRef::Dir {
                dir: Path::new(&target.dest).join(&suffix),
            }
        }
        DestKind::Oci => {
            crate::transports::check_ref_name(&suffix)
                .map_err(|e| bad(format!("{suffix}: {e}")))?;
            ImageRef::Oci {
                dir: PathBuf::from(&target.dest),
                name: Some(suffix.clone()),
            }
        }
        DestKind::Hoist => {
            let d = target.dest.strip_prefix("hoist:").unwrap_or(&target.dest);
            let name = if d.is_empty() {
                suffix.clone()
            } else {
                join(d, &suffix)
            };
            Reference::parse(&name).map_err(|e| bad(format!("{name}: {e}")))?;
            ImageRef::Hoist { name }
        }
    };
    Ok((r, suffix))
}

/// Whether a `--src docker` argument names one image (a tag or digest) rather than a
/// repository.
fn names_image(s: &str) -> bool {
    let last = s.rsplit('/').next().unwrap_or(s);
    s.contains('@') || last.contains(':')
}

/// One repository to list, with its filter.
struct Listing {
    repo: Reference,
    selection: Selection,
    opts: ClientOptions,
}

/// The client options for a registry of the file: `base` with the file's settings.
fn registry_options(base: &ClientOptions, r: &RegistryConfig) -> ClientOptions {
    let mut o = base.clone();
    if let Some(v) = r.tls_verify {
        o.tls_verify = v;
    }
    if let Some(d) = &r.cert_dir {
        o.cert_dir = Some(d.clone());
    }
    if let Some(c) = &r.credentials {
        o.credentials = Some(Credentials {
            username: c.username.clone(),
            password: c.password.clone(),
        });
    }
    o
}

/// Resolve `source` into the images to copy: list tags where needed (`jobs` listings at
/// once, one client per registry and settings), filter them, name their destinations.
pub async fn plan(
    source: &SyncSource,
    target: &SyncTarget,
    base: &ClientOptions,
    jobs: usize,
) -> Result<Plan, SyncError> {
    let mut fixed: Vec<(Reference, ClientOptions)> = Vec::new();
    let mut listings: Vec<Listing> = Vec::new();
    match source {
        SyncSource::Docker(s) => {
            let s = s.strip_prefix("docker://").unwrap_or(s);
            let bad = |e: hoist_types::TypeError| SyncError::BadSource {
                input: s.to_owned(),
                reason: e.to_string(),
            };
            if names_image(s) {
                fixed.push((Reference::parse(s).map_err(bad)?, base.clone()));
            } else {
                listings.push(Listing {
                    repo: Reference::parse_repository(s).map_err(bad)?,
                    selection: Selection::AllTags,
                    opts: base.clone(),
                });
            }
        }
        SyncSource::File(path, format) => {
            let cfg = SyncConfig::load(path, *format)?;
            for r in &cfg.registries {
                let opts = registry_options(base, r);
                for repo in &r.repos {
                    let name = format!("{}/{}", r.registry, repo.repository);
                    let bad = |e: hoist_types::TypeError| SyncError::Config {
                        file: path.clone(),
                        reason: format!("{name}: {e}"),
                    };
                    let repo_ref = Reference::parse_repository(&name).map_err(bad)?;
                    match &repo.selection {
                        Selection::Refs(refs) => {
                            for t in refs {
                                let r = if t.contains(':') {
                                    Reference::parse(&format!("{name}@{t}"))
                                } else {
                                    Reference::parse(&format!("{name}:{t}"))
                                };
                                fixed.push((r.map_err(bad)?, opts.clone()));
                            }
                        }
                        sel => listings.push(Listing {
                            repo: repo_ref,
                            selection: sel.clone(),
                            opts: opts.clone(),
                        }),
                    }
                }
            }
        }
    }
    let mut plan = Plan::default();
    let push = |plan: &mut Plan, r: Reference, opts: ClientOptions| -> Result<(), SyncError> {
        let (dest, dest_label) = destination_for(&r, target)?;
        plan.images.push(PlannedImage {
            source: r,
            source_opts: opts,
            dest,
            dest_label,
        });
        Ok(())
    };
    for (r, o) in fixed {
        push(&mut plan, r, o)?;
    }
    // One client per (registry, settings): its connections and tokens serve every listing.
    let mut clients: HashMap<(String, usize), RegistryClient> = HashMap::new();
    let mut settings: Vec<ClientOptions> = Vec::new();
    let mut work = Vec::new();
    for l in listings {
        let idx = match settings.iter().position(|o| same_settings(o, &l.opts)) {
            Some(i) => i,
            None => {
                settings.push(l.opts.clone());
                settings.len() - 1
            }
        };
        let key = (l.repo.registry().to_owned(), idx);
        let client = match clients.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c = RegistryClient::new(l.repo.registry(), l.opts.clone())
                    .map_err(TransportError::from)?;
                clients.insert(key, c.clone());
                c
            }
        };
        work.push((l, client));
    }
    let listed: Vec<(Listing, Result<Vec<String>, SyncError>)> =
        futures_util::stream::iter(work.into_iter().map(|(l, c)| async move {
            let tags = c
                .list_tags(l.repo.repository())
                .await
                .map_err(|e| SyncError::from(TransportError::from(e)));
            (l, tags)
        }))
        .buffered(jobs.max(1))
        .collect()
        .await;
    for (l, tags) in listed {
        let tags = match tags {
            Ok(t) => t,
            Err(e) => {
                plan.failures.push((l.repo.name(), e));
                continue;
            }
        };
        for t in tags {
            let keep = match &l.selection {
                Selection::AllTags | Selection::Refs(_) => true,
                Selection::Regex(re) => re.is_match(&t),
                Selection::Semver(c) => c.matches(&t),
            };
            if !keep {
                continue;
            }
            // A tag the registry lists that is no valid tag is skipped, as skopeo does.
            if let Ok(r) = l.repo.with_tag(&t) {
                push(&mut plan, r, l.opts.clone())?;
            }
        }
    }
    Ok(plan)
}

/// Whether two option sets reach a registry the same way (credentials, TLS).
fn same_settings(a: &ClientOptions, b: &ClientOptions) -> bool {
    a.tls_verify == b.tls_verify
        && a.cert_dir == b.cert_dir
        && a.credentials.as_ref().map(|c| (&c.username, &c.password))
            == b.credentials.as_ref().map(|c| (&c.username, &c.password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    fn target(kind: DestKind, dest: &str, scoped: bool) -> SyncTarget {
        SyncTarget {
            kind,
            dest: dest.into(),
            scoped,
        }
    }

    #[test]
    fn names_match_skopeo_sync() {
        let src = r("registry.example.com/repo/busybox:1-glibc");
        assert_eq!(destination_suffix(&src, false), "busybox:1-glibc");
        assert_eq!(
            destination_suffix(&src, true),
            "registry.example.com/repo/busybox:1-glibc"
        );
        let d = "sha256:0000000000000000000000000000000011111111111111111111111111111111";
        let by_digest = r(&format!("127.0.0.1:5000/ns/redis@{d}"));
        assert_eq!(destination_suffix(&by_digest, false), format!("redis@{d}"));

        let table = [
            (
                DestKind::Docker,
                "my-registry.local.lan/repo/",
                false,
                "docker://my-registry.local.lan/repo/busybox:1-glibc",
            ),
            (
                DestKind::Docker,
                "127.0.0.1:5001",
                false,
                "docker://127.0.0.1:5001/busybox:1-glibc",
            ),
            (
                DestKind::Dir,
                "/media/usb",
                false,
                "dir:/media/usb/busybox:1-glibc",
            ),
            (
                DestKind::Dir,
                "/media/usb",
                true,
                "dir:/media/usb/registry.example.com/repo/busybox:1-glibc",
            ),
            (
                DestKind::Oci,
                "/tmp/lay",
                false,
                "oci:/tmp/lay:busybox:1-glibc",
            ),
            (
                DestKind::Hoist,
                "",
                true,
                "hoist:registry.example.com/repo/busybox:1-glibc",
            ),
            (
                DestKind::Hoist,
                "mirror.local/x",
                false,
                "hoist:mirror.local/x/busybox:1-glibc",
            ),
        ];
        for (kind, dest, scoped, want) in table {
            let (got, _) = destination_for(&src, &target(kind, dest, scoped)).unwrap();
            assert_eq!(got.to_string(), want, "{kind:?} {dest} {scoped}");
        }
        // A registry with a port in a scoped docker name is no valid repository: skopeo
        // refuses it too.
        let local = r("127.0.0.1:5000/ns/a:v1");
        assert!(
            destination_for(&local, &target(DestKind::Docker, "127.0.0.1:5001", true)).is_err()
        );
    }

    #[test]
    fn image_or_repository() {
        assert!(names_image("127.0.0.1:5000/ns/a:v1"));
        assert!(names_image("h/a@sha256:00"));
        assert!(!names_image("127.0.0.1:5000/ns/a"));
        assert!(!names_image("busybox"));
        assert!(names_image("busybox:1"));
        assert!(names_image("library/busybox:1"));
    }

    #[test]
    fn path_join() {
        assert_eq!(join("a/", "b:c"), "a/b:c");
        assert_eq!(join("/x//y", "b"), "/x/y/b");
        assert_eq!(join("", "b"), "b");
    }
}
