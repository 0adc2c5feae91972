//! Credential files: containers' `auth.json` and Docker's `config.json`, with
//! `docker-credential-*` helpers.
//!
//! Lookup order (as containers/image, then Docker):
//! 1. the explicit file (`--authfile`), which must exist;
//! 2. `$REGISTRY_AUTH_FILE`;
//! 3. `$XDG_RUNTIME_DIR/containers/auth.json`;
//! 4. `$XDG_CONFIG_HOME/containers/auth.json` (default `$HOME/.config/containers/auth.json`);
//! 5. `$DOCKER_CONFIG/config.json`, or `$HOME/.docker/config.json`.
//!
//! In each file: `credHelpers[host]`, then `credsStore`, then the `auths` entry whose key
//! names the host (`host`, `https://host`, `http://host/v1/`, …; Docker Hub also as
//! `https://index.docker.io/v1/`). The first file with credentials for the host wins.
//! Explicit credentials (`--creds`) are handled by the client before any of this.
//!
//! Internally every function takes the environment as a value, so tests never mutate the
//! process environment.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};

pub use crate::Credentials;
use crate::RegistryError;
use crate::auth::TOKEN_USERNAME;

/// Largest credential file read.
const MAX_AUTH_FILE: u64 = 16 * 1024 * 1024;
/// Largest helper output read.
const MAX_HELPER_OUTPUT: u64 = 1024 * 1024;
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
/// The key and helper server URL Docker uses for Docker Hub.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Find credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub).
///
/// Returns `Ok(None)` when no file has any. Fails on a missing explicit file, an
/// unreadable or malformed file, or a configured helper that is missing or fails.
pub fn lookup(
    registry: &str,
    explicit_file: Option<&Path>,
) -> Result<Option<Credentials>, RegistryError> {
    lookup_in(registry, explicit_file, &Env::from_process())
}

/// Store credentials for `registry` and return the file written: the explicit file, else
/// `$REGISTRY_AUTH_FILE`, else Docker's `config.json`. Unknown fields are preserved; the
/// file is written atomically with mode 0600. When that file configures a credential
/// helper for the host (`credHelpers` or `credsStore`), the helper stores them instead.
pub fn login(
    registry: &str,
    creds: &Credentials,
    file: Option<&Path>,
) -> Result<PathBuf, RegistryError> {
    login_in(registry, creds, file, &Env::from_process())
}

/// Remove credentials for `registry` from the file `login` would write (and from its
/// helper, if one is configured). Returns whether something was removed.
pub fn logout(registry: &str, file: Option<&Path>) -> Result<bool, RegistryError> {
    logout_in(registry, file, &Env::from_process())
}

/// The environment variables the lookup depends on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    pub registry_auth_file: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    /// `PATH`, searched for `docker-credential-*`.
    pub path: Option<OsString>,
}

impl Env {
    pub(crate) fn from_process() -> Env {
        let p = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Env {
            registry_auth_file: p("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: p("XDG_RUNTIME_DIR"),
            xdg_config_home: p("XDG_CONFIG_HOME"),
            home: p("HOME"),
            docker_config: p("DOCKER_CONFIG"),
            path: std::env::var_os("PATH"),
        }
    }

    fn docker_config_file(&self) -> Option<PathBuf> {
        match (&self.docker_config, &self.home) {
            (Some(d), _) => Some(d.join("config.json")),
            (None, Some(h)) => Some(h.join(".docker").join("config.json")),
            (None, None) => None,
        }
    }

    /// The files to search, in order, without duplicates.
    fn search_path(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        let mut push = |p: Option<PathBuf>| {
            if let Some(p) = p
                && !v.contains(&p)
            {
                v.push(p);
            }
        };
        push(self.registry_auth_file.clone());
        push(
            self.xdg_runtime_dir
                .as_ref()
                .map(|d| d.join("containers").join("auth.json")),
        );
        let config_home = self
            .xdg_config_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".config")));
        push(config_home.map(|d| d.join("containers").join("auth.json")));
        push(self.docker_config_file());
        v
    }
}

/// The canonical registry name for matching: lower case, Docker Hub aliases → `docker.io`.
pub(crate) fn normalize_registry(registry: &str) -> String {
    let r = registry.trim().trim_end_matches('/').to_ascii_lowercase();
    match r.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => r,
    }
}

/// The registry an `auths` / `credHelpers` key names, or `None` when the key names a
/// repository namespace (`host/ns`) rather than a whole registry.
pub(crate) fn key_registry(key: &str) -> Option<String> {
    let k = key.trim();
    let (had_scheme, rest) = match k.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("http") => {
            (true, rest)
        }
        Some(_) => return None,
        None => (false, k),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return None;
    }
    // Docker's keys carry an API path (`/v1/`, `/v2/`); a scheme-less `host/ns` key is a
    // containers/image namespace entry and does not apply to the whole registry.
    let path = path.trim_end_matches('/');
    if !had_scheme && !matches!(path, "" | "v1" | "v2") {
        return None;
    }
    Some(normalize_registry(host))
}

/// The server URL handed to credential helpers, and the `auths` key `login` writes.
pub(crate) fn server_url(registry: &str) -> String {
    let r = normalize_registry(registry);
    if r == "docker.io" {
        DOCKER_HUB_KEY.to_owned()
    } else {
        r
    }
}

pub(crate) fn lookup_in(
    registry: &str,
    explicit_file: Option<&Path>,
    env: &Env,
) -> Result<Option<Credentials>, RegistryError> {
    let reg = normalize_registry(registry);
    if let Some(f) = explicit_file {
        match read_json(f)? {
            Some(doc) => {
                if let Some(c) = creds_from_doc(&doc, f, &reg, env)? {
                    return Ok(Some(c));
                }
            }
            None => {
                return Err(RegistryError::AuthFile {
                    path: f.to_owned(),
                    reason: "file does not exist".into(),
                });
            }
        }
    }
    for path in env.search_path() {
        if explicit_file == Some(path.as_path()) {
            continue;
        }
        if let Some(doc) = read_json(&path)?
            && let Some(c) = creds_from_doc(&doc, &path, &reg, env)?
        {
            tracing::debug!(registry = reg, file = %path.display(), "credentials found");
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Read a JSON object; `Ok(None)` when the file does not exist.
fn read_json(path: &Path) -> Result<Option<Map<String, Value>>, RegistryError> {
    let io = |source| RegistryError::Io {
        op: "read credentials file",
        path: Some(path.to_owned()),
        source,
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut buf = Vec::new();
    f.take(MAX_AUTH_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_AUTH_FILE {
        return Err(RegistryError::AuthFile {
            path: path.to_owned(),
            reason: format!("larger than {MAX_AUTH_FILE} bytes"),
        });
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice::<Value>(&buf) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(RegistryError::AuthFile {
            path: path.to_owned(),
            reason: "not a JSON object".into(),
        }),
        Err(e) => Err(RegistryError::AuthFile {
            path: path.to_owned(),
            reason: format!("invalid JSON: {e}"),
        }),
    }
}

/// The helper configured for `reg` in this document, if any.
fn helper_for(doc: &Map<String, Value>, reg: &str) -> Option<String> {
    if let Some(Value::Object(helpers)) = doc.get("credHelpers") {
        let found = helpers.iter().find_map(|(k, v)| {
            (key_registry(k).as_deref() == Some(reg))
                .then(|| v.as_str())
                .flatten()
        });
        if let Some(h) = found.filter(|h| !h.is_empty()) {
            return Some(h.to_owned());
        }
    }
    doc.get("credsStore")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

fn creds_from_doc(
    doc: &Map<String, Value>,
    path: &Path,
    reg: &str,
    env: &Env,
) -> Result<Option<Credentials>, RegistryError> {
    if let Some(helper) = helper_for(doc, reg)
        && let Some(c) = helper_get(&helper, &server_url(reg), env)?
    {
        return Ok(Some(c));
    }
    let Some(Value::Object(auths)) = doc.get("auths") else {
        return Ok(None);
    };
    // An exact key first, then any key that names the same registry.
    let exact = [reg.to_owned(), server_url(reg)];
    let entry = auths.iter().find(|(k, _)| exact.contains(k)).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| key_registry(k).as_deref() == Some(reg))
    });
    match entry {
        Some((key, v)) => decode_entry(v).map_err(|reason| RegistryError::AuthFile {
            path: path.to_owned(),
            reason: format!("entry {key:?}: {reason}"),
        }),
        None => Ok(None),
    }
}

/// Decode one `auths` entry. `Ok(None)` for an empty entry.
pub(crate) fn decode_entry(v: &Value) -> Result<Option<Credentials>, String> {
    let Value::Object(m) = v else {
        return Err("not a JSON object".into());
    };
    let s = |k: &str| m.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    if let Some(tok) = s("identitytoken") {
        return Ok(Some(Credentials {
            username: TOKEN_USERNAME.to_owned(),
            password: tok.to_owned(),
        }));
    }
    if let Some(auth) = s("auth") {
        let auth = auth.trim();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth))
            .map_err(|_| "`auth` is not base64")?;
        let raw = String::from_utf8(raw).map_err(|_| "`auth` is not UTF-8")?;
        let (user, pass) = raw
            .split_once(':')
            .ok_or("`auth` does not decode to user:password")?;
        return Ok(Some(Credentials {
            username: user.to_owned(),
            password: pass.trim_end_matches('\n').to_owned(),
        }));
    }
    match (s("username"), s("password")) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        })),
        _ => Ok(None),
    }
}

/// Find `docker-credential-NAME` on `env.path`.
fn find_helper(name: &str, env: &Env) -> Result<PathBuf, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err("invalid helper name".into());
    }
    let exe = format!("docker-credential-{name}");
    let path = env.path.clone().unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(&exe);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!("{exe} not found in PATH"))
}

/// Run a helper with `input` on stdin; returns (success, stdout). Output is bounded and
/// the helper is killed after [`HELPER_TIMEOUT`].
fn run_helper(
    name: &str,
    action: &'static str,
    server: &str,
    input: &[u8],
    env: &Env,
) -> Result<(bool, String), RegistryError> {
    let err = |reason: String| RegistryError::CredentialHelper {
        helper: name.to_owned(),
        action,
        server: server.to_owned(),
        reason,
    };
    let exe = find_helper(name, env).map_err(err)?;
    let mut child = Command::new(&exe)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(format!("cannot run {}: {e}", exe.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its exit status.
        let _ = stdin.write_all(input);
    }
    let stdout = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let r = match stdout {
            Some(s) => s
                .take(MAX_HELPER_OUTPUT + 1)
                .read_to_end(&mut buf)
                .map(|_| buf),
            None => Ok(buf),
        };
        let _ = tx.send(r);
    });
    let out = match rx.recv_timeout(HELPER_TIMEOUT) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err(format!("reading its output: {e}")));
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err(format!("no answer within {HELPER_TIMEOUT:?}")));
        }
    };
    if out.len() as u64 > MAX_HELPER_OUTPUT {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err(format!("output over {MAX_HELPER_OUTPUT} bytes")));
    }
    let status = child
        .wait()
        .map_err(|e| err(format!("waiting for it: {e}")))?;
    Ok((status.success(), String::from_utf8_lossy(&out).into_owned()))
}

fn is_not_found_message(out: &str) -> bool {
    let o = out.to_ascii_lowercase();
    o.contains("credentials not found") || o.contains("not found in native keychain")
}

fn helper_get(name: &str, server: &str, env: &Env) -> Result<Option<Credentials>, RegistryError> {
    let (ok, out) = run_helper(name, "get", server, server.as_bytes(), env)?;
    if !ok {
        if is_not_found_message(&out) {
            return Ok(None);
        }
        return Err(RegistryError::CredentialHelper {
            helper: name.to_owned(),
            action: "get",
            server: server.to_owned(),
            reason: format!(
                "failed: {}",
                out.trim().chars().take(300).collect::<String>()
            ),
        });
    }
    #[derive(serde::Deserialize)]
    struct HelperCreds {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let c: HelperCreds =
        serde_json::from_str(&out).map_err(|e| RegistryError::CredentialHelper {
            helper: name.to_owned(),
            action: "get",
            server: server.to_owned(),
            reason: format!("output is not the expected JSON: {e}"),
        })?;
    if c.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: c.username,
        password: c.secret,
    }))
}

/// The file `login`/`logout` write.
fn target_file(file: Option<&Path>, env: &Env) -> Result<PathBuf, RegistryError> {
    file.map(Path::to_owned)
        .or_else(|| env.registry_auth_file.clone())
        .or_else(|| env.docker_config_file())
        .ok_or_else(|| RegistryError::AuthFile {
            path: PathBuf::from("~/.docker/config.json"),
            reason: "neither HOME nor DOCKER_CONFIG is set".into(),
        })
}

pub(crate) fn login_in(
    registry: &str,
    creds: &Credentials,
    file: Option<&Path>,
    env: &Env,
) -> Result<PathBuf, RegistryError> {
    let reg = normalize_registry(registry);
    let path = target_file(file, env)?;
    let mut doc = read_json(&path)?.unwrap_or_default();
    let server = server_url(&reg);
    if let Some(helper) = helper_for(&doc, &reg) {
        let input = serde_json::json!({
            "ServerURL": server,
            "Username": creds.username,
            "Secret": creds.password,
        });
        let (ok, out) = run_helper(&helper, "store", &server, input.to_string().as_bytes(), env)?;
        if !ok {
            return Err(RegistryError::CredentialHelper {
                helper,
                action: "store",
                server,
                reason: format!(
                    "failed: {}",
                    out.trim().chars().take(300).collect::<String>()
                ),
            });
        }
        return Ok(path);
    }
    let auths = doc
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(RegistryError::AuthFile {
            path,
            reason: "`auths` is not an object".into(),
        });
    };
    auths.retain(|k, _| key_registry(k).as_deref() != Some(reg.as_str()));
    let entry = if creds.username == TOKEN_USERNAME {
        serde_json::json!({ "identitytoken": creds.password })
    } else {
        let raw = format!("{}:{}", creds.username, creds.password);
        serde_json::json!({ "auth": base64::engine::general_purpose::STANDARD.encode(raw) })
    };
    auths.insert(server, entry);
    write_atomic(&path, &doc)?;
    Ok(path)
}

pub(crate) fn logout_in(
    registry: &str,
    file: Option<&Path>,
    env: &Env,
) -> Result<bool, RegistryError> {
    let reg = normalize_registry(registry);
    let path = target_file(file, env)?;
    let Some(mut doc) = read_json(&path)? else {
        return Ok(false);
    };
    let mut removed = false;
    let server = server_url(&reg);
    if let Some(helper) = helper_for(&doc, &reg) {
        let (ok, out) = run_helper(&helper, "erase", &server, server.as_bytes(), env)?;
        if ok {
            removed = true;
        } else if !is_not_found_message(&out) {
            return Err(RegistryError::CredentialHelper {
                helper,
                action: "erase",
                server,
                reason: format!(
                    "failed: {}",
                    out.trim().chars().take(300).collect::<String>()
                ),
            });
        }
    }
    if let Some(Value::Object(auths)) = doc.get_mut("auths") {
        let before = auths.len();
        auths.retain(|k, _| key_registry(k).as_deref() != Some(reg.as_str()));
        if auths.len() != before {
            removed = true;
            write_atomic(&path, &doc)?;
        }
    }
    Ok(removed)
}

/// Write JSON to `path` atomically: temp file (mode 0600) in the same directory, fsync,
/// rename, fsync the directory.
fn write_atomic(path: &Path, doc: &Map<String, Value>) -> Result<(), RegistryError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| RegistryError::Io {
        op: "write credentials file",
        path: Some(path.to_owned()),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".hoist-auth")
        .tempfile_in(&dir)
        .map_err(io)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| RegistryError::AuthFile {
        path: path.to_owned(),
        reason: format!("serialising: {e}"),
    })?;
    bytes.push(b'\n');
    tmp.write_all(&bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    // Test tables are tuples of expectations.
    #![allow(clippy::type_complexity)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn key_matching_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("quay.io", Some("quay.io")),
            ("Quay.IO", Some("quay.io")),
            ("https://quay.io", Some("quay.io")),
            ("http://localhost:5000/v1/", Some("localhost:5000")),
            ("https://index.docker.io/v1/", Some("docker.io")),
            ("index.docker.io", Some("docker.io")),
            ("registry-1.docker.io", Some("docker.io")),
            ("docker.io", Some("docker.io")),
            ("127.0.0.1:5000/v2/", Some("127.0.0.1:5000")),
            ("quay.io/namespace", None),
            ("quay.io/ns/repo", None),
            ("ftp://quay.io", None),
            ("", None),
            ("https://", None),
        ];
        for (k, want) in cases {
            assert_eq!(key_registry(k).as_deref(), *want, "{k:?}");
        }
        assert_eq!(server_url("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(server_url("index.docker.io"), DOCKER_HUB_KEY);
        assert_eq!(server_url("localhost:5000"), "localhost:5000");
    }

    #[test]
    fn entry_decoding_table() {
        let cases: Vec<(Value, Result<Option<(&str, &str)>, ()>)> = vec![
            (
                serde_json::json!({"auth": b64("user:pa:ss")}),
                Ok(Some(("user", "pa:ss"))),
            ),
            (
                serde_json::json!({"auth": b64("user:pw").trim_end_matches('=')}),
                Ok(Some(("user", "pw"))),
            ),
            (
                serde_json::json!({"username": "u", "password": "p"}),
                Ok(Some(("u", "p"))),
            ),
            (
                serde_json::json!({"auth": b64("u:p"), "identitytoken": "tok"}),
                Ok(Some((TOKEN_USERNAME, "tok"))),
            ),
            (serde_json::json!({}), Ok(None)),
            (serde_json::json!({"auth": ""}), Ok(None)),
            (serde_json::json!({"auth": "!!notbase64"}), Err(())),
            (serde_json::json!({"auth": b64("nocolon")}), Err(())),
            (serde_json::json!("string"), Err(())),
        ];
        for (v, want) in cases {
            let got = decode_entry(&v);
            match (got, want) {
                (Ok(Some(c)), Ok(Some((u, p)))) => {
                    assert_eq!((c.username.as_str(), c.password.as_str()), (u, p), "{v}")
                }
                (Ok(None), Ok(None)) | (Err(_), Err(())) => {}
                (g, w) => panic!("{v}: got {g:?}, want {w:?}"),
            }
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        env: Env,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let env = Env {
            home: Some(dir.path().join("home")),
            xdg_runtime_dir: Some(dir.path().join("run")),
            path: Some(dir.path().join("bin").into_os_string()),
            ..Env::default()
        };
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        Fixture { dir, env }
    }

    fn write(path: &Path, v: Value) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, v.to_string()).unwrap();
    }

    fn user(c: Option<Credentials>) -> Option<(String, String)> {
        c.map(|c| (c.username, c.password))
    }

    #[test]
    fn lookup_order() {
        let f = fixture();
        let home = f.env.home.clone().unwrap();
        let docker = home.join(".docker/config.json");
        let xdg_cfg = home.join(".config/containers/auth.json");
        let run = f.dir.path().join("run/containers/auth.json");
        let explicit = f.dir.path().join("explicit.json");
        let reg_file = f.dir.path().join("regauth.json");
        let entry = |u: &str| serde_json::json!({"auth": b64(&format!("{u}:pw"))});

        // Nothing anywhere.
        assert_eq!(user(lookup_in("quay.io", None, &f.env).unwrap()), None);
        // Docker Hub in docker's legacy key form.
        write(
            &docker,
            serde_json::json!({"auths": {"https://index.docker.io/v1/": entry("hub"),
                                         "http://quay.io": entry("docker")},
                               "unknown": 1}),
        );
        let got = |reg: &str, explicit: Option<&Path>, env: &Env| {
            user(lookup_in(reg, explicit, env).unwrap()).map(|(u, _)| u)
        };
        assert_eq!(got("docker.io", None, &f.env).as_deref(), Some("hub"));
        assert_eq!(got("index.docker.io", None, &f.env).as_deref(), Some("hub"));
        assert_eq!(got("quay.io", None, &f.env).as_deref(), Some("docker"));
        // DOCKER_CONFIG overrides ~/.docker.
        let mut env2 = f.env.clone();
        env2.docker_config = Some(f.dir.path().join("dc"));
        write(
            &f.dir.path().join("dc/config.json"),
            serde_json::json!({"auths": {"quay.io": entry("dockerconfig")}}),
        );
        assert_eq!(got("quay.io", None, &env2).as_deref(), Some("dockerconfig"));
        // ~/.config/containers beats docker.
        write(
            &xdg_cfg,
            serde_json::json!({"auths": {"quay.io": entry("xdgcfg")}}),
        );
        assert_eq!(got("quay.io", None, &f.env).as_deref(), Some("xdgcfg"));
        // $XDG_RUNTIME_DIR beats that; an empty entry does not stop the search.
        write(
            &run,
            serde_json::json!({"auths": {"quay.io": {}, "other.io": entry("x")}}),
        );
        assert_eq!(got("quay.io", None, &f.env).as_deref(), Some("xdgcfg"));
        write(
            &run,
            serde_json::json!({"auths": {"quay.io": entry("run")}}),
        );
        assert_eq!(got("quay.io", None, &f.env).as_deref(), Some("run"));
        // REGISTRY_AUTH_FILE beats that.
        let mut env3 = f.env.clone();
        env3.registry_auth_file = Some(reg_file.clone());
        write(
            &reg_file,
            serde_json::json!({"auths": {"quay.io": entry("regfile")}}),
        );
        assert_eq!(got("quay.io", None, &env3).as_deref(), Some("regfile"));
        // The explicit file beats everything, and falls through when it has no entry.
        write(
            &explicit,
            serde_json::json!({"auths": {"https://quay.io/v1/": entry("explicit")}}),
        );
        assert_eq!(
            got("quay.io", Some(&explicit), &env3).as_deref(),
            Some("explicit")
        );
        assert_eq!(
            got("docker.io", Some(&explicit), &env3).as_deref(),
            Some("hub")
        );
        // A namespace key does not apply to the whole registry.
        write(
            &explicit,
            serde_json::json!({"auths": {"other.io/ns": entry("ns")}}),
        );
        assert_eq!(got("other.io", Some(&explicit), &f.env), None);
        // A missing explicit file is an error; a malformed one too.
        let missing = f.dir.path().join("missing.json");
        assert!(lookup_in("quay.io", Some(&missing), &f.env).is_err());
        std::fs::write(&explicit, "{not json").unwrap();
        let e = lookup_in("quay.io", Some(&explicit), &f.env).unwrap_err();
        assert!(e.to_string().contains("explicit.json"), "{e}");
    }

    /// Writes the helper from a child process: were it written here, a process another
    /// test thread forks meanwhile could hold the file open for writing while this test
    /// runs the helper, which then fails with ETXTBSY ("Text file busy").
    fn helper_script(f: &Fixture, name: &str, body: &str) {
        use std::io::Write as _;
        let p = f
            .dir
            .path()
            .join("bin")
            .join(format!("docker-credential-{name}"));
        let mut child = std::process::Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(&p)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("#!/bin/sh\n{body}\n").as_bytes())
            .unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn credential_helpers() {
        let f = fixture();
        let cfg = f.env.home.clone().unwrap().join(".docker/config.json");
        // The helper echoes the server URL it was asked about as the username.
        helper_script(
            &f,
            "echo",
            r#"read -r s; [ "$1" = get ] || exit 1; printf '{"ServerURL":"%s","Username":"%s","Secret":"sec"}' "$s" "$s""#,
        );
        helper_script(
            &f,
            "none",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        helper_script(&f, "broken", "echo 'boom'; exit 3");
        write(
            &cfg,
            serde_json::json!({
                "credHelpers": {"quay.io": "echo", "broken.io": "broken", "gone.io": "missing"},
                "credsStore": "none",
                "auths": {"fallback.io": {"auth": b64("fb:pw")}},
            }),
        );
        let get = |reg: &str| lookup_in(reg, None, &f.env);
        assert_eq!(
            user(get("quay.io").unwrap()),
            Some(("quay.io".into(), "sec".into()))
        );
        // credsStore says "not found": the auths entry is used.
        assert_eq!(
            user(get("fallback.io").unwrap()),
            Some(("fb".into(), "pw".into()))
        );
        assert_eq!(user(get("nothing.io").unwrap()), None);
        let e = get("broken.io").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-broken") && e.contains("boom"),
            "{e}"
        );
        let e = get("gone.io").unwrap_err().to_string();
        assert!(e.contains("docker-credential-missing not found"), "{e}");
        // Docker Hub is asked for with Docker's server URL.
        write(&cfg, serde_json::json!({"credsStore": "echo"}));
        assert_eq!(
            user(get("docker.io").unwrap()).map(|(u, _)| u).as_deref(),
            Some(DOCKER_HUB_KEY)
        );
        // A helper name cannot be a path.
        write(&cfg, serde_json::json!({"credsStore": "../../bin/sh"}));
        assert!(get("quay.io").is_err());
    }

    #[test]
    fn login_logout_roundtrip() {
        let f = fixture();
        let cfg = f.env.home.clone().unwrap().join(".docker/config.json");
        write(
            &cfg,
            serde_json::json!({"auths": {"http://quay.io/v1/": {"auth": b64("old:old")}}, "psFormat": "x"}),
        );
        let c = Credentials {
            username: "me".into(),
            password: "secret".into(),
        };
        let written = login_in("quay.io", &c, None, &f.env).unwrap();
        assert_eq!(written, cfg);
        let doc: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
        assert_eq!(doc["psFormat"], "x", "unknown fields preserved");
        assert_eq!(doc["auths"]["quay.io"]["auth"], b64("me:secret"));
        assert!(
            doc["auths"].get("http://quay.io/v1/").is_none(),
            "stale key removed"
        );
        let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            user(lookup_in("quay.io", None, &f.env).unwrap()),
            Some(("me".into(), "secret".into()))
        );
        // Docker Hub with an identity token, into an explicit file that does not exist yet.
        let explicit = f.dir.path().join("new/dir/auth.json");
        let t = Credentials {
            username: TOKEN_USERNAME.into(),
            password: "refresh".into(),
        };
        assert_eq!(
            login_in("docker.io", &t, Some(&explicit), &f.env).unwrap(),
            explicit
        );
        let doc: Value = serde_json::from_slice(&std::fs::read(&explicit).unwrap()).unwrap();
        assert_eq!(doc["auths"][DOCKER_HUB_KEY]["identitytoken"], "refresh");
        assert_eq!(
            user(lookup_in("docker.io", Some(&explicit), &f.env).unwrap()),
            Some((TOKEN_USERNAME.into(), "refresh".into()))
        );
        // Logout.
        assert!(logout_in("quay.io", None, &f.env).unwrap());
        assert!(!logout_in("quay.io", None, &f.env).unwrap());
        assert_eq!(user(lookup_in("quay.io", None, &f.env).unwrap()), None);
        let doc: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
        assert_eq!(doc["psFormat"], "x");
        assert!(!logout_in("x.io", Some(&f.dir.path().join("nope.json")), &f.env).unwrap());
        // REGISTRY_AUTH_FILE is the login target when no file is given.
        let mut env2 = f.env.clone();
        env2.registry_auth_file = Some(f.dir.path().join("reg.json"));
        assert_eq!(
            login_in("a.io", &c, None, &env2).unwrap(),
            f.dir.path().join("reg.json")
        );
    }

    #[test]
    fn login_through_helper() {
        let f = fixture();
        let cfg = f.env.home.clone().unwrap().join(".docker/config.json");
        let store = f.dir.path().join("stored");
        helper_script(&f, "file", &format!(r#"cat > "{}.$1""#, store.display()));
        write(
            &cfg,
            serde_json::json!({"credHelpers": {"quay.io": "file"}}),
        );
        let c = Credentials {
            username: "me".into(),
            password: "secret".into(),
        };
        login_in("quay.io", &c, None, &f.env).unwrap();
        let stored: Value =
            serde_json::from_slice(&std::fs::read(format!("{}.store", store.display())).unwrap())
                .unwrap();
        assert_eq!(stored["ServerURL"], "quay.io");
        assert_eq!(stored["Secret"], "secret");
        let doc: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
        assert!(doc.get("auths").is_none(), "no plain-text copy in the file");
        assert!(logout_in("quay.io", None, &f.env).unwrap());
        assert_eq!(
            std::fs::read_to_string(format!("{}.erase", store.display())).unwrap(),
            "quay.io"
        );
    }
}
