//! The real Distribution registry (`/usr/bin/docker-registry serve CONFIG`, Debian's 2.8), one
//! process per test.
//!
//! Each [`Registry`] gets its own temporary directory holding its config file (never the system
//! one), its storage, its TLS material and htpasswd file, and its log. It listens on a free port of
//! `127.0.0.1`: the kit binds port 0 to pick one, frees it and starts the registry there; if another
//! process took the port in between, the registry fails to bind and the kit retries with a new port.
//! Readiness is the registry's own `listening on 127.0.0.1:PORT` log line (so a foreign server that
//! grabbed the port is never mistaken for ours) plus a successful TCP connect, polled every 10 ms for
//! at most 5 s; a timeout or an early exit panics with the registry's log.
//!
//! The process is killed when the handle drops. It is also started through
//! `setpriv --pdeathsig KILL` from a long-lived kit thread, so the kernel kills it if the test
//! process dies (a panic that aborts, `kill -9`). Because the parent-death signal fires when the
//! *spawning thread* exits, the kit spawns from its own thread that lives as long as the process:
//! a registry kept in a `static` shared by several tests is therefore not killed when the first
//! test's thread ends.
//!
//! `REGISTRY_*` environment variables are removed from the child's environment: Distribution reads
//! them as config overrides (`REGISTRY_AUTH_FILE`, set for containers tools, would otherwise become
//! `auth.file`).

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::Peer;
use crate::certs::{TlsMaterial, htpasswd_line};
use crate::token::{TokenServer, TokenServerConfig};

/// Default user of [`Registry::tls_basic`].
pub const BASIC_USER: &str = "hoist";
/// Default password of [`Registry::tls_basic`].
pub const BASIC_PASSWORD: &str = "hoist-secret";

const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(5);
const READY_POLL: Duration = Duration::from_millis(10);

/// How clients authenticate to a registry.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// No authentication.
    None,
    /// htpasswd (bcrypt) basic auth with one user.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// Bearer tokens from a [`TokenServer`] started with this configuration.
    Token(TokenServerConfig),
}

/// Builder for a [`Registry`] with any combination of TLS and auth.
#[derive(Debug, Clone)]
pub struct RegistryBuilder {
    tls: bool,
    tls_material: Option<TlsMaterial>,
    auth: AuthMode,
    delete: bool,
    schema1: bool,
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        RegistryBuilder {
            tls: false,
            tls_material: None,
            auth: AuthMode::None,
            delete: true,
            schema1: false,
        }
    }
}

impl RegistryBuilder {
    /// Plain HTTP, no auth, deletes enabled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Serve HTTPS with a certificate from a fresh test CA ([`Registry::ca_pem`]).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }
    /// Serve HTTPS with the certificate and key of `material` (for example
    /// [`TlsMaterial::docker_guide_self_signed`]) instead of a fresh test CA's.
    pub fn tls_material(mut self, material: TlsMaterial) -> Self {
        self.tls = true;
        self.tls_material = Some(material);
        self
    }
    /// Require htpasswd basic auth for `user` / `password`.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = AuthMode::Basic {
            user: user.to_string(),
            password: password.to_string(),
        };
        self
    }
    /// Require bearer tokens from a token server started with `config`.
    pub fn token_auth(mut self, config: TokenServerConfig) -> Self {
        self.auth = AuthMode::Token(config);
        self
    }
    /// `storage.delete.enabled` (default `true`).
    pub fn delete_enabled(mut self, on: bool) -> Self {
        self.delete = on;
        self
    }
    /// `compatibility.schema1.enabled`: accept pushes of Docker schema 1 manifests (default off).
    pub fn schema1(mut self, on: bool) -> Self {
        self.schema1 = on;
        self
    }
    /// Starts the registry; panics with the reason and the registry's log when it cannot.
    pub fn start(self) -> Registry {
        self.try_start()
            .unwrap_or_else(|e| panic!("hoist-testkit: cannot start docker-registry: {e}"))
    }

    /// Starts the registry.
    pub fn try_start(self) -> io::Result<Registry> {
        if !Peer::Registry.is_available() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} is missing (Debian package docker-registry; run scripts/install-deps.sh)",
                    Peer::Registry.path()
                ),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("hoist-testkit-registry-")
            .tempdir()?;
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage)?;
        let tls = if !self.tls {
            None
        } else if let Some(m) = &self.tls_material {
            Some(m.clone())
        } else {
            let tls_dir = dir.path().join("tls");
            fs::create_dir_all(&tls_dir)?;
            Some(TlsMaterial::generate(&tls_dir)?)
        };
        let mut credentials = None;
        let mut token = None;
        let mut auth_yaml = String::new();
        match &self.auth {
            AuthMode::None => {}
            AuthMode::Basic { user, password } => {
                let path = dir.path().join("htpasswd");
                fs::write(&path, format!("{}\n", htpasswd_line(user, password)?))?;
                auth_yaml = format!(
                    "auth:\n  htpasswd:\n    realm: hoist-testkit\n    path: {}\n",
                    yaml_str(&path)
                );
                credentials = Some((user.clone(), password.clone()));
            }
            AuthMode::Token(cfg) => {
                let server = TokenServer::try_start_with(cfg.clone())?;
                auth_yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    yaml_str(server.realm()),
                    yaml_str(server.service()),
                    yaml_str(server.issuer()),
                    yaml_str(server.cert_bundle_path()),
                );
                credentials = cfg.users.iter().next().map(|(u, p)| (u.clone(), p.clone()));
                token = Some(server);
            }
        }
        let config_path = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let config = self.config_yaml(port, &storage, tls.as_ref(), &auth_yaml);
            fs::write(&config_path, config)?;
            let mut child = spawn_registry(&config_path, &log_path)?;
            match wait_ready(&mut child, port, &log_path) {
                Ok(()) => {
                    return Ok(Registry {
                        child,
                        port,
                        tls,
                        credentials,
                        token,
                        storage,
                        config_path,
                        log_path,
                        dir,
                    });
                }
                Err(Ready::PortTaken(e)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = Some(e);
                }
                Err(Ready::Failed(e)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free port")))
    }

    fn config_yaml(
        &self,
        port: u16,
        storage: &Path,
        tls: Option<&TlsMaterial>,
        auth_yaml: &str,
    ) -> String {
        let mut y = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: true\n  fields:\n    service: hoist-testkit-registry\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: {}\n  headers:\n    X-Content-Type-Options: [nosniff]\n",
            yaml_str(storage),
            self.delete,
            random_secret(),
        );
        if let Some(t) = tls {
            y.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_str(&t.server_cert),
                yaml_str(&t.server_key)
            ));
        }
        y.push_str(auth_yaml);
        if self.schema1 {
            y.push_str("compatibility:\n  schema1:\n    enabled: true\n");
        }
        y
    }
}

/// A running Distribution registry; killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    tls: Option<TlsMaterial>,
    credentials: Option<(String, String)>,
    token: Option<TokenServer>,
    storage: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    // Last field: removed after the process is dead and the token server stopped.
    dir: tempfile::TempDir,
}

impl Registry {
    /// Plain HTTP, no auth, `storage.delete.enabled: true`.
    pub fn plain() -> Registry {
        RegistryBuilder::new().start()
    }

    /// HTTPS with a fresh self-signed test CA, plus htpasswd basic auth for
    /// [`BASIC_USER`] / [`BASIC_PASSWORD`].
    pub fn tls_basic() -> Registry {
        RegistryBuilder::new()
            .tls(true)
            .basic_auth(BASIC_USER, BASIC_PASSWORD)
            .start()
    }

    /// Plain HTTP with `auth: token` against a fresh [`TokenServer`] in its default configuration
    /// (user `alice` / `wonderland`; anonymous pull except under `private/`).
    pub fn token() -> Registry {
        RegistryBuilder::new()
            .token_auth(TokenServerConfig::default())
            .start()
    }

    /// A builder for other combinations.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::new()
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Base URL without a trailing slash: `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `HOST:PORT/` + `repo_and_tag`, e.g. `image_ref("a/b:v1")` → `127.0.0.1:PORT/a/b:v1`.
    pub fn image_ref(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host_port())
    }

    /// Whether the registry serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The CA certificate (PEM) that signed the server certificate, when TLS.
    pub fn ca_pem(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_pem.as_path())
    }

    /// A directory holding only `ca.crt`, for `skopeo --cert-dir` or as a `certs.d/HOST:PORT`
    /// directory, when TLS.
    pub fn cert_dir(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.cert_dir.as_path())
    }

    /// The user and password that work: the htpasswd user, or the token server's first user.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The token server, for a token-auth registry.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// The registry's storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The config file the registry runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The registry's temporary directory (config, storage, TLS files, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The registry's combined stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the registry now (it stays dead; later requests fail to connect).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Outcome of a failed readiness wait.
enum Ready {
    /// The port was taken by someone else: try another.
    PortTaken(io::Error),
    /// Anything else: give up.
    Failed(io::Error),
}

fn wait_ready(child: &mut Child, port: u16, log_path: &Path) -> Result<(), Ready> {
    let needle = format!("listening on 127.0.0.1:{port}");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let log = fs::read_to_string(log_path).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            let err = io::Error::other(format!(
                "docker-registry exited with {status} before it was ready on port {port}; log:\n{}",
                tail(&log, 40)
            ));
            return Err(if log.contains("address already in use") {
                Ready::PortTaken(err)
            } else {
                Ready::Failed(err)
            });
        }
        if log.contains(&needle)
            && TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Ready::Failed(io::Error::other(format!(
                "docker-registry not ready on 127.0.0.1:{port} after {:?}; log:\n{}",
                READY_TIMEOUT,
                tail(&log, 40)
            ))));
        }
        std::thread::sleep(READY_POLL);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Picks a port that is free right now by binding port 0 and closing the socket.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Quotes a value for YAML (single-quoted scalar).
fn yaml_str(v: impl AsRef<std::ffi::OsStr>) -> String {
    let s = v.as_ref().to_string_lossy();
    format!("'{}'", s.replace('\'', "''"))
}

fn random_secret() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system random");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn spawn_registry(config: &Path, log_path: &Path) -> io::Result<Child> {
    let log = fs::File::create(log_path)?;
    let log2 = log.try_clone()?;
    let setpriv = Path::new("/usr/bin/setpriv");
    let mut cmd = if setpriv.is_file() {
        let mut c = Command::new(setpriv);
        c.args(["--pdeathsig", "KILL", "--", Peer::Registry.path()]);
        c
    } else {
        Command::new(Peer::Registry.path())
    };
    cmd.arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(k);
        }
    }
    spawn_from_kit_thread(cmd)
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from a kit thread that lives as long as the process, so that a parent-death
/// signal is tied to the process, not to the (short-lived) test thread.
pub(crate) fn spawn_from_kit_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("hoist-testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the hoist-testkit spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .map_err(|_| io::Error::other("spawner lock poisoned"))?
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread is gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_reported_as_such() {
        if !crate::peers_available("a_taken_port_is_reported_as_such", &[Peer::Registry]) {
            return;
        }
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let yaml = RegistryBuilder::new().config_yaml(port, &storage, None, "");
        let config = dir.path().join("config.yml");
        fs::write(&config, yaml).unwrap();
        let log = dir.path().join("log");
        let mut child = spawn_registry(&config, &log).unwrap();
        match wait_ready(&mut child, port, &log) {
            Err(Ready::PortTaken(e)) => assert!(e.to_string().contains("in use"), "{e}"),
            Err(Ready::Failed(e)) => panic!("expected PortTaken, got {e}"),
            Ok(()) => panic!("a registry started on a busy port"),
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn yaml_quoting() {
        assert_eq!(yaml_str("/tmp/a'b"), "'/tmp/a''b'");
    }
}
