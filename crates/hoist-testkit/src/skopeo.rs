//! Helpers around `skopeo` 1.9 (Debian), the reference client.
//!
//! Every call passes its own permissive signature policy (`--policy`, so the host's
//! `/etc/containers/policy.json` does not matter) and a command timeout. References without a
//! transport get `docker://`.
//!
//! Flags used, all present in skopeo 1.9.3: `copy --all --preserve-digests --format
//! --dest-tls-verify --dest-cert-dir --dest-creds --dest-no-creds` (and the `--src-*` twins),
//! `inspect --raw --config --tls-verify --cert-dir --creds --no-creds`, `list-tags`, `delete`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::Peer;
use crate::images::{
    BuiltImage, BuiltIndex, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, ImageSpec, IndexSpec, OCI_INDEX,
    OciLayout,
};
use crate::registry::Registry;

/// How skopeo talks to one registry.
#[derive(Debug, Clone)]
pub struct SkopeoOpts {
    /// Require HTTPS and verify the certificate (`--tls-verify`). `false` allows plain HTTP.
    pub tls_verify: bool,
    /// Directory with `ca.crt` (`--cert-dir`).
    pub cert_dir: Option<PathBuf>,
    /// `USER:PASSWORD` (`--creds`).
    pub creds: Option<(String, String)>,
    /// Access anonymously even if an auth file has credentials (`--no-creds`).
    pub no_creds: bool,
    /// For copies: `--preserve-digests` (default `true`): fail rather than change a manifest.
    pub preserve_digests: bool,
    /// For copies: `--format` (`oci`, `v2s2`, `v2s1`).
    pub format: Option<String>,
    /// Extra arguments for `copy`, placed before the references.
    pub extra_args: Vec<String>,
}

impl Default for SkopeoOpts {
    fn default() -> Self {
        SkopeoOpts {
            tls_verify: true,
            cert_dir: None,
            creds: None,
            no_creds: false,
            preserve_digests: true,
            format: None,
            extra_args: Vec::new(),
        }
    }
}

impl SkopeoOpts {
    /// Options that work with `reg`: its TLS mode and CA directory, and its credentials if any.
    pub fn for_registry(reg: &Registry) -> SkopeoOpts {
        SkopeoOpts {
            tls_verify: reg.is_tls(),
            cert_dir: reg.cert_dir().map(Path::to_path_buf),
            creds: reg
                .credentials()
                .map(|(u, p)| (u.to_string(), p.to_string())),
            ..SkopeoOpts::default()
        }
    }
    /// Like [`SkopeoOpts::for_registry`], but anonymous (`--no-creds`).
    pub fn anonymous(reg: &Registry) -> SkopeoOpts {
        SkopeoOpts::for_registry(reg).no_creds()
    }
    /// Sets the credentials.
    pub fn creds(mut self, user: &str, password: &str) -> SkopeoOpts {
        self.creds = Some((user.to_string(), password.to_string()));
        self.no_creds = false;
        self
    }
    /// Drops the credentials and passes `--no-creds`.
    pub fn no_creds(mut self) -> SkopeoOpts {
        self.creds = None;
        self.no_creds = true;
        self
    }
    /// Sets `--tls-verify`.
    pub fn tls_verify(mut self, on: bool) -> SkopeoOpts {
        self.tls_verify = on;
        self
    }
    /// Sets `--format` for copies.
    pub fn format(mut self, f: &str) -> SkopeoOpts {
        self.format = Some(f.to_string());
        self
    }
    /// Sets `--preserve-digests` for copies.
    pub fn preserve_digests(mut self, on: bool) -> SkopeoOpts {
        self.preserve_digests = on;
        self
    }

    /// Registry options with `prefix` (`""`, `"src-"` or `"dest-"`).
    fn registry_args(&self, prefix: &str) -> Vec<String> {
        let mut a = vec![format!("--{prefix}tls-verify={}", self.tls_verify)];
        if let Some(d) = &self.cert_dir {
            a.push(format!("--{prefix}cert-dir={}", d.display()));
        }
        if let Some((u, p)) = &self.creds {
            a.push(format!("--{prefix}creds={u}:{p}"));
        } else if self.no_creds {
            a.push(format!("--{prefix}no-creds"));
        }
        a
    }
}

/// A failed skopeo run.
#[derive(Debug)]
pub struct SkopeoError {
    /// The arguments (credentials masked).
    pub args: Vec<String>,
    /// Exit status, `None` if skopeo could not be started.
    pub status: Option<ExitStatus>,
    /// skopeo's stderr, or the spawn error.
    pub stderr: String,
}

impl std::fmt::Display for SkopeoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(
                f,
                "skopeo {} failed ({s}): {}",
                self.args.join(" "),
                self.stderr
            ),
            None => write!(
                f,
                "cannot run skopeo {}: {}",
                self.args.join(" "),
                self.stderr
            ),
        }
    }
}

impl std::error::Error for SkopeoError {}

const TRANSPORTS: &[&str] = &[
    "docker://",
    "oci:",
    "oci-archive:",
    "docker-archive:",
    "dir:",
    "docker-daemon:",
    "containers-storage:",
];

/// `docker://` + `r` unless `r` already names a transport.
pub fn transport_ref(r: &str) -> String {
    if TRANSPORTS.iter().any(|t| r.starts_with(t)) {
        r.to_string()
    } else {
        format!("docker://{r}")
    }
}

fn mask(args: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| match a.split_once("creds=") {
            Some((k, v)) if a.starts_with("--") => {
                let user = v.split_once(':').map_or(v, |(u, _)| u);
                format!("{k}creds={user}:***")
            }
            _ => a.clone(),
        })
        .collect()
}

/// Runs `skopeo --policy P --command-timeout 120s ARGS...`, returning stdout.
pub fn run_skopeo(args: &[String]) -> Result<Vec<u8>, SkopeoError> {
    let fail = |status, stderr: String| SkopeoError {
        args: mask(args),
        status,
        stderr,
    };
    let mut policy = tempfile::Builder::new()
        .prefix("hoist-testkit-policy-")
        .suffix(".json")
        .tempfile()
        .map_err(|e| fail(None, format!("policy temp file: {e}")))?;
    policy
        .write_all(br#"{"default":[{"type":"insecureAcceptAnything"}]}"#)
        .map_err(|e| fail(None, format!("policy temp file: {e}")))?;
    let out = Command::new(Peer::Skopeo.path())
        .arg("--policy")
        .arg(policy.path())
        .args(["--command-timeout", "120s"])
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| fail(None, e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            Some(out.status),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(out.stdout)
}

/// `skopeo copy` from `src` to `dest` (transport references; bare ones get `docker://`).
/// `src_opts` / `dest_opts` apply to whichever side is a registry; `all` adds `--all`.
/// `--preserve-digests`, `--format` and the extra arguments come from `dest_opts`, if given,
/// else from `src_opts`.
pub fn skopeo_copy(
    src: &str,
    dest: &str,
    src_opts: Option<&SkopeoOpts>,
    dest_opts: Option<&SkopeoOpts>,
    all: bool,
) -> Result<(), SkopeoError> {
    let mut args: Vec<String> = vec!["copy".into(), "--quiet".into()];
    if all {
        args.push("--all".into());
    }
    if let Some(o) = dest_opts.or(src_opts) {
        if o.preserve_digests {
            args.push("--preserve-digests".into());
        }
        if let Some(f) = &o.format {
            args.push(format!("--format={f}"));
        }
        args.extend(o.extra_args.iter().cloned());
    }
    let src = transport_ref(src);
    let dest = transport_ref(dest);
    if let Some(o) = src_opts.filter(|_| src.starts_with("docker://")) {
        args.extend(o.registry_args("src-"));
    }
    if let Some(o) = dest_opts.filter(|_| dest.starts_with("docker://")) {
        args.extend(o.registry_args("dest-"));
    }
    args.push(src);
    args.push(dest);
    run_skopeo(&args).map(|_| ())
}

/// Pushes the image or index tagged `tag` in the OCI layout `layout_dir` to `dest_ref`
/// (`HOST:PORT/REPO:TAG`, `docker://` optional) with `skopeo copy`. An index is copied with `--all`.
/// With `opts.preserve_digests` (the default) skopeo fails rather than alter a manifest, so the
/// registry then holds exactly the generator's digests.
///
/// OCI manifests and indexes are copied from `oci:LAYOUT:TAG`. Docker v2s2 manifests and manifest
/// lists are first exported to a temporary `dir:` directory
/// ([`OciLayout::export_dir_transport`]) because skopeo 1.9's `oci:` transport does not see
/// non-OCI entries of `index.json`.
pub fn push_with_skopeo(
    layout_dir: &Path,
    tag: &str,
    dest_ref: &str,
    opts: &SkopeoOpts,
) -> Result<(), SkopeoError> {
    let fail = |e: std::io::Error| SkopeoError {
        args: vec!["copy".into(), format!("oci:{}:{tag}", layout_dir.display())],
        status: None,
        stderr: e.to_string(),
    };
    let layout = OciLayout::create(layout_dir).map_err(fail)?;
    let desc = layout.find_tag(tag).map_err(fail)?.unwrap_or_default();
    let media_type = desc["mediaType"].as_str().unwrap_or_default();
    let all = media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST;
    if media_type == DOCKER_MANIFEST || media_type == DOCKER_MANIFEST_LIST {
        let tmp = tempfile::Builder::new()
            .prefix("hoist-testkit-dir-")
            .tempdir()
            .map_err(fail)?;
        layout.export_dir_transport(tag, tmp.path()).map_err(fail)?;
        let src = format!("dir:{}", tmp.path().display());
        return skopeo_copy(&src, dest_ref, None, Some(opts), all);
    }
    let src = format!("oci:{}:{tag}", layout_dir.display());
    skopeo_copy(&src, dest_ref, None, Some(opts), all)
}

/// Generates `spec` into a temporary layout and pushes it to `reg` as `repo_and_tag`
/// (`REPO:TAG`), with [`SkopeoOpts::for_registry`]. Returns what the generator built: the
/// registry now serves exactly these digests.
pub fn push_spec(
    spec: &ImageSpec,
    reg: &Registry,
    repo_and_tag: &str,
) -> Result<BuiltImage, SkopeoError> {
    let dir = tempdir_or(repo_and_tag)?;
    let built = spec
        .write_layout(dir.path(), "push")
        .map_err(|e| io_err(repo_and_tag, e))?;
    let opts = SkopeoOpts::for_registry(reg);
    push_with_skopeo(dir.path(), "push", &reg.image_ref(repo_and_tag), &opts)?;
    Ok(built)
}

/// Like [`push_spec`], for an index (pushed with `--all`).
pub fn push_index_spec(
    spec: &IndexSpec,
    reg: &Registry,
    repo_and_tag: &str,
) -> Result<BuiltIndex, SkopeoError> {
    let dir = tempdir_or(repo_and_tag)?;
    let built = spec
        .write_layout(dir.path(), "push")
        .map_err(|e| io_err(repo_and_tag, e))?;
    let opts = SkopeoOpts::for_registry(reg);
    push_with_skopeo(dir.path(), "push", &reg.image_ref(repo_and_tag), &opts)?;
    Ok(built)
}

fn io_err(what: &str, e: std::io::Error) -> SkopeoError {
    SkopeoError {
        args: vec!["copy".into(), what.into()],
        status: None,
        stderr: e.to_string(),
    }
}

fn tempdir_or(what: &str) -> Result<tempfile::TempDir, SkopeoError> {
    tempfile::Builder::new()
        .prefix("hoist-testkit-layout-")
        .tempdir()
        .map_err(|e| io_err(what, e))
}

/// Copies `src_ref` (a registry reference) into the OCI layout `layout_dir` under `tag`.
/// `all` copies every image of an index (`--all`); otherwise skopeo picks the host's platform.
pub fn pull_with_skopeo(
    src_ref: &str,
    layout_dir: &Path,
    tag: &str,
    opts: &SkopeoOpts,
    all: bool,
) -> Result<(), SkopeoError> {
    let dest = format!("oci:{}:{tag}", layout_dir.display());
    let mut o = opts.clone();
    o.format = None;
    skopeo_copy(src_ref, &dest, Some(&o), None, all)
}

fn inspect_args(reference: &str, opts: &SkopeoOpts, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["inspect".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(opts.registry_args(""));
    args.push(transport_ref(reference));
    args
}

/// `skopeo inspect REF`, parsed (`Digest`, `Layers`, `Labels`, `Architecture`...). For an index,
/// skopeo describes the image for the host's platform.
pub fn skopeo_inspect(
    reference: &str,
    opts: &SkopeoOpts,
) -> Result<serde_json::Value, SkopeoError> {
    let out = run_skopeo(&inspect_args(reference, opts, &[]))?;
    serde_json::from_slice(&out).map_err(|e| SkopeoError {
        args: vec!["inspect".into(), reference.into()],
        status: None,
        stderr: format!("output is not JSON: {e}"),
    })
}

/// `skopeo inspect --raw REF`: the exact manifest (or index) bytes the registry serves; their
/// SHA-256 is the manifest digest.
pub fn skopeo_inspect_raw(reference: &str, opts: &SkopeoOpts) -> Result<Vec<u8>, SkopeoError> {
    run_skopeo(&inspect_args(reference, opts, &["--raw"]))
}

/// `skopeo inspect --config --raw REF`: the exact config bytes.
pub fn skopeo_inspect_config_raw(
    reference: &str,
    opts: &SkopeoOpts,
) -> Result<Vec<u8>, SkopeoError> {
    run_skopeo(&inspect_args(reference, opts, &["--config", "--raw"]))
}

/// `skopeo list-tags REPO`: the repository's tags.
pub fn skopeo_list_tags(repo: &str, opts: &SkopeoOpts) -> Result<Vec<String>, SkopeoError> {
    let mut args: Vec<String> = vec!["list-tags".into()];
    args.extend(opts.registry_args(""));
    args.push(transport_ref(repo));
    let out = run_skopeo(&args)?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| SkopeoError {
        args: mask(&args),
        status: None,
        stderr: format!("output is not JSON: {e}"),
    })?;
    Ok(v["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect())
}

/// `skopeo delete REF` (the registry needs `storage.delete.enabled`, which the kit sets).
pub fn skopeo_delete(reference: &str, opts: &SkopeoOpts) -> Result<(), SkopeoError> {
    let mut args: Vec<String> = vec!["delete".into()];
    args.extend(opts.registry_args(""));
    args.push(transport_ref(reference));
    run_skopeo(&args).map(|_| ())
}
