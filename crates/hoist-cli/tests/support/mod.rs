//! The one way CLI tests run `hoist`: in a sandbox where no variable of the host's
//! environment that hoist (or a library it links) reads can change a result.
//!
//! Use it from a test file with `mod support;`, then
//!
//! ```ignore
//! let dir = tempfile::tempdir().unwrap();
//! let out = support::hoist(dir.path())           // assert_cmd::Command, 120 s timeout
//!     .env("HOIST_STORE", dir.path().join("store"))
//!     .args(["images", "--format", "json"])
//!     .output()
//!     .unwrap();
//! ```
//!
//! [`hoist_std`] gives a `std::process::Command` (to spawn and kill), and [`isolate`] applies
//! the same rules to any other command (a wrapper such as `setpriv`, or `env` in the tests of
//! this module). Set test-specific variables *after* the call: the last setting wins.
//!
//! What the sandbox `DIR` (the test's own temp dir) holds and what the child sees:
//!
//! | variable | value |
//! |---|---|
//! | `HOIST_STORE` | `DIR/store`: as root hoist's default store is `/var/lib/hoist`, which a test must never touch (`--store` or a later `.env("HOIST_STORE", …)` overrides it) |
//! | `HOME` | `DIR/home` (created) |
//! | `DOCKER_CONFIG` | `DIR/home/.docker` (`config.json` written by `hoist login` lands here) |
//! | `XDG_CONFIG_HOME` | `DIR/home/.config` |
//! | `XDG_DATA_HOME` | `DIR/home/.local/share` (the default store of a non-root user, for a test that removes `HOIST_STORE`) |
//! | `XDG_RUNTIME_DIR` | `DIR/home/run` (containers' `auth.json`) |
//! | `HOIST_CONFIG` | `DIR/home/.config/hoist/config.toml`, so `/etc/hoist/config.toml` is never read |
//! | `CONTAINERS_REGISTRIES_CONF` | `DIR/home/.config/containers/registries.conf`, so `/etc/containers/registries.conf{,.d}` are never read |
//! | `HOIST_CONTAINERD_CERTS_D` | `DIR/home/.config/containerd/certs.d`, so `/etc/containerd/certs.d` is never read |
//! | `TMPDIR` | `DIR/tmp` (created): hoist's scratch files stay in the sandbox |
//! | `HOIST_POLICY` | `DIR/home/.config/containers/policy.json`, created (if missing) as a policy that accepts anything, so `/etc/containers/policy.json` is never read; a test writes its own policy there, or passes `--policy` |
//! | `HOIST_REGISTRIES_D` | `DIR/home/.config/containers/registries.d` (not created: no lookaside), so `/etc/containers/registries.d` is never read |
//! | every other `HOIST_*` and `XDG_*` | removed (`HOIST_CREDS`, `HOIST_LOG`, `HOIST_RETRY_*`, …) |
//! | `REGISTRY_AUTH_FILE` | removed |
//! | `http_proxy`, `HTTPS_PROXY`, `all_proxy`, `NO_PROXY`, … (any case), `REQUEST_METHOD` | removed (reqwest reads them) |
//! | `SSL_CERT_FILE`, `SSL_CERT_DIR` | removed (rustls-native-certs reads them) |
//! | `NO_COLOR`, `CLICOLOR`, `CLICOLOR_FORCE`, `COLORTERM`, `TERM`, `COLUMNS`, `LINES`, `CI` | removed (clap, tracing-subscriber, console/indicatif read them) |
//! | `PATH` | inherited on purpose: hoist finds `mke2fs`, `mkfs.erofs` and `docker-credential-*` helpers on it, and the peers are where the system put them |
//!
//! Not covered by any variable: `/etc/docker/certs.d` and `/etc/containers/certs.d` (TLS
//! roots per `HOST:PORT`; tests use fresh loopback ports, which no host directory names).
//!
//! `tests/env_isolation.rs` keeps this table honest: it scans the sources of every crate
//! linked into hoist for environment reads and fails on a variable this module does not
//! handle, and it runs hoist and `env` under a hostile environment.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::Duration;

/// Variables set to a path inside the sandbox: (name, path relative to the sandbox).
pub const SANDBOXED: &[(&str, &str)] = &[
    ("HOIST_STORE", "store"),
    ("HOME", "home"),
    ("DOCKER_CONFIG", "home/.docker"),
    ("XDG_CONFIG_HOME", "home/.config"),
    ("XDG_DATA_HOME", "home/.local/share"),
    ("XDG_RUNTIME_DIR", "home/run"),
    ("HOIST_CONFIG", "home/.config/hoist/config.toml"),
    (
        "CONTAINERS_REGISTRIES_CONF",
        "home/.config/containers/registries.conf",
    ),
    (
        "HOIST_CONTAINERD_CERTS_D",
        "home/.config/containerd/certs.d",
    ),
    ("TMPDIR", "tmp"),
    ("HOIST_POLICY", "home/.config/containers/policy.json"),
    ("HOIST_REGISTRIES_D", "home/.config/containers/registries.d"),
];

/// What the sandbox's `HOIST_POLICY` file holds unless a test wrote its own.
pub const ACCEPT_ANYTHING_POLICY: &str = r#"{"default": [{"type": "insecureAcceptAnything"}]}"#;

/// Variables removed by name (besides every `HOIST_*`, `XDG_*` and `*_proxy` one present).
pub const REMOVED: &[&str] = &[
    // hoist's own (clap `env =`, the log filter); also removed by the prefix rule.
    "HOIST_CREDS",
    "HOIST_LOG",
    "HOIST_RETRY_TIMES",
    "HOIST_RETRY_DELAY",
    // containers' auth file.
    "REGISTRY_AUTH_FILE",
    // reqwest's proxies (it reads both cases) and its CGI guard.
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUEST_METHOD",
    // rustls-native-certs' system roots.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    // colours and terminal size (clap, tracing-subscriber, console/indicatif).
    "NO_COLOR",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "COLORTERM",
    "TERM",
    "COLUMNS",
    "LINES",
    "CI",
];

/// Prefixes (matched ignoring case) of variables removed whatever their full name.
pub const REMOVED_PREFIXES: &[&str] = &["HOIST_", "XDG_"];

/// Suffixes (matched ignoring case) of variables removed whatever their full name.
pub const REMOVED_SUFFIXES: &[&str] = &["_PROXY"];

/// Variables hoist reads that the child inherits on purpose, with the reason.
pub const INHERITED: &[(&str, &str)] = &[(
    "PATH",
    "hoist runs mke2fs, mkfs.erofs and docker-credential-* helpers found on it",
)];

/// The directories the sandbox creates before the child starts.
const CREATED: &[&str] = &["home", "tmp"];

/// Where `var` points inside the sandbox `dir`, for the variables of [`SANDBOXED`].
///
/// Panics on any other name, so a test cannot ask for a path the child does not use.
pub fn sandbox_path(dir: &Path, var: &str) -> PathBuf {
    let rel = SANDBOXED
        .iter()
        .find(|(k, _)| *k == var)
        .unwrap_or_else(|| panic!("{var} is not a sandboxed variable"))
        .1;
    dir.join(rel)
}

/// The store the child uses unless told otherwise (`DIR/store`).
pub fn store(dir: &Path) -> PathBuf {
    sandbox_path(dir, "HOIST_STORE")
}

/// `HOME` of the sandbox `dir` (`DIR/home`).
pub fn home(dir: &Path) -> PathBuf {
    sandbox_path(dir, "HOME")
}

/// Applies the sandbox rules to `cmd`, given the environment the child would inherit.
///
/// [`isolate`] passes the test process's own environment; tests of this module pass a
/// hostile one (after `env_clear`) to prove that none of it gets through.
pub fn isolate_from<K, V>(
    cmd: &mut StdCommand,
    dir: &Path,
    inherited: impl IntoIterator<Item = (K, V)>,
) where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    for (k, _) in inherited {
        let Some(name) = k.as_ref().to_str() else {
            continue;
        };
        let upper = name.to_ascii_uppercase();
        if REMOVED_PREFIXES.iter().any(|p| upper.starts_with(p))
            || REMOVED_SUFFIXES.iter().any(|s| upper.ends_with(s))
        {
            cmd.env_remove(name);
        }
    }
    for k in REMOVED {
        cmd.env_remove(k);
    }
    for d in CREATED {
        std::fs::create_dir_all(dir.join(d))
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.join(d).display()));
    }
    let policy = dir.join("home/.config/containers/policy.json");
    if !policy.exists() {
        std::fs::create_dir_all(policy.parent().unwrap()).unwrap();
        std::fs::write(&policy, ACCEPT_ANYTHING_POLICY)
            .unwrap_or_else(|e| panic!("writing {}: {e}", policy.display()));
    }
    for (k, rel) in SANDBOXED {
        cmd.env(k, dir.join(rel));
    }
}

/// Applies the sandbox rules of this module to `cmd` (see the module docs).
pub fn isolate(cmd: &mut StdCommand, dir: &Path) {
    isolate_from(cmd, dir, std::env::vars_os());
}

/// The `hoist` binary under test, isolated in the sandbox `dir`, as a `std` command.
pub fn hoist_std(dir: &Path) -> StdCommand {
    let mut cmd = StdCommand::new(env!("CARGO_BIN_EXE_hoist"));
    isolate(&mut cmd, dir);
    cmd
}

/// The `hoist` binary under test, isolated in the sandbox `dir`, with a 120 s timeout.
pub fn hoist(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::from_std(hoist_std(dir));
    cmd.timeout(Duration::from_secs(120));
    cmd
}

/// Runs `cmd` (a peer or a tool), which must succeed (else the test fails with its
/// stderr); returns its stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Asserts that `hoist fsck` of `store` exits 0 (no orphan or corrupt blob, no stray temp
/// file, nothing broken) and that `hoist/ingest/` holds nothing but resumable partial
/// downloads (`partial-*`, kept on purpose). Call it after every refused input: a failed
/// command must leave the store as clean as it found it. Panics with fsck's report.
pub fn assert_fsck_clean(dir: &Path, store: &Path) {
    let out = hoist(dir)
        .arg("--store")
        .arg(store)
        .arg("fsck")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "hoist fsck of {} is not clean:\n{}{}",
        store.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ingest = store.join("hoist/ingest");
    let left: Vec<_> = std::fs::read_dir(&ingest)
        .map(|r| r.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|n| n.to_string_lossy().starts_with("partial-")),
        "left in {}: {left:?}",
        ingest.display()
    );
}

/// A sandbox of its own (a temp dir, see the module docs) whose store is `DIR/store`
/// unless made with [`Env::at`]: the helpers every CLI test file wants. A test file adds
/// its own methods in an `impl Env` block of its own.
pub struct Env {
    /// The sandbox directory (`HOME`, `TMPDIR` and the default store live in it).
    pub dir: tempfile::TempDir,
    store: PathBuf,
}

impl Env {
    /// A fresh sandbox with its store at `DIR/store`.
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        Env { dir, store }
    }

    /// A fresh sandbox whose commands use the store at `store` (shared with another
    /// sandbox, or on another file system).
    pub fn at(store: PathBuf) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            store,
        }
    }

    /// `DIR/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The store its commands use.
    pub fn store(&self) -> PathBuf {
        self.store.clone()
    }

    /// `hoist` in the sandbox, on its store.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = hoist(self.dir.path());
        c.env("HOIST_STORE", &self.store);
        c
    }

    /// Runs `hoist ARGS`, whatever the outcome.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs `hoist ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hoist {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `hoist ARGS`, which must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "hoist {args:?} printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs `hoist ARGS`, which must fail and leave the store as it was: the same images
    /// (`hoist images`), the same `hoist fsck` findings (none, unless the test broke the
    /// store itself: orphans after an `rmi`, a blob it corrupted), and nothing new in
    /// `hoist/ingest/` but resumable partial downloads. Returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let before = self.state();
        let err = self.fails_only(args);
        assert_eq!(
            self.state(),
            before,
            "hoist {args:?} failed but changed the store (images, fsck findings, leftovers)"
        );
        err
    }

    /// What a refused command must not change: `hoist images`, the problems `hoist fsck`
    /// finds, and what `hoist/ingest/` holds besides resumable partial downloads.
    fn state(
        &self,
    ) -> (
        serde_json::Value,
        serde_json::Value,
        Vec<std::ffi::OsString>,
    ) {
        let images = self.json(&["images", "--format", "json"]);
        let out = self.run(&["fsck", "--format", "json"]);
        let fsck: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "hoist fsck printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mut left: Vec<_> = std::fs::read_dir(self.store.join("hoist/ingest"))
            .map(|r| r.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        left.retain(|n| !n.to_string_lossy().starts_with("partial-"));
        left.sort();
        (images, fsck["problems"].clone(), left)
    }

    /// Runs `hoist ARGS`, which must fail; nothing is checked of the store (a test that
    /// broke the store on purpose). Returns stderr.
    pub fn fails_only(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "hoist {args:?} succeeded but should fail:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}
