//! Test-only kit for hoist's integration tests.
//!
//! It is an *independent oracle*: it does not depend on any other hoist crate. Digests are computed
//! with `sha2` and JSON is written with `serde_json` directly, so a bug in hoist's own types cannot
//! hide itself by agreeing with the kit.
//!
//! What it offers:
//! - [`registry`]: the real Distribution registry (`/usr/bin/docker-registry`, Debian's 2.8) started on
//!   a free loopback port, per test, in three flavours: [`Registry::plain`], [`Registry::tls_basic`]
//!   (HTTPS with a test CA plus htpasswd) and [`Registry::token`] (bearer tokens from [`token`]).
//! - [`fake`]: a tiny programmable registry ([`FakeRegistry`]) that serves whatever a test put in
//!   it, wrong digests and broken framing included, and counts the requests. It injects
//!   per-request faults ([`fake::Fault`]: resets, 5xx, 429 with `Retry-After`, wrong lengths,
//!   truncation, drips, throttling, wrong bytes, redirects to a second origin with expiring
//!   presigned URLs, Range answered with 200 or a wrong `Content-Range`, expiring tokens) and
//!   counts the bytes it sends per blob. `examples/fake_registry.rs` serves an OCI layout or a
//!   generated blob from it, for measurements.
//! - [`token`]: a Docker token server (ES256 JWTs with `x5c`, anonymous/basic/OAuth2 flows) that counts
//!   the requests it serves.
//! - [`images`]: a deterministic generator of OCI and Docker v2s2 images written into OCI layouts,
//!   reporting every digest, plus canned samples.
//! - [`skopeo`]: helpers to push layouts with `skopeo copy` and to `skopeo inspect` references.
//! - [`certs`]: the test CA, token-signing certificate and htpasswd lines (via `openssl`/`htpasswd`).
//! - [`http`]: a tiny blocking HTTP/1.1 client for plain-HTTP pokes at a registry or token server.
//! - [`tree`]: directory-tree snapshots and comparison (path, type, mode, owner, size, content
//!   hash, link target, xattrs, hardlinks), and the overlayfs merge of per-layer trees.
//! - [`evil`]: evil layer tars (path escapes, symlink and hardlink tricks, bad whiteouts, parser
//!   differentials, bombs), generated in code, aimed at a sentinel directory.
//!
//! The peers are Debian packages; `scripts/install-deps.sh` installs them. One skip rule,
//! [`skip_or_fail`], serves every test that needs something of the machine: a peer
//! ([`require_peers!`]), root or another program ([`require!`] with a [`Need`]), or a mount the
//! machine may refuse ([`skip_test!`] after the refusal). Outside CI the test is skipped with a
//! printed `SKIP` line and its reason; when the `CI` environment variable is set it fails.
//!
//! ```no_run
//! use hoist_testkit::{images, registry::Registry, require_peers, skopeo};
//!
//! #[test]
//! fn push_and_inspect() {
//!     require_peers!(Peer::Registry, Peer::Skopeo, Peer::Openssl);
//!     let reg = Registry::plain();
//!     let layout = tempfile::tempdir().unwrap();
//!     let built = images::sample_multi_layer().write_layout(layout.path(), "v1").unwrap();
//!     let dest = format!("{}/sample/multi:v1", reg.host_port());
//!     let opts = skopeo::SkopeoOpts::for_registry(&reg);
//!     skopeo::push_with_skopeo(layout.path(), "v1", &dest, &opts).unwrap();
//!     let raw = skopeo::skopeo_inspect_raw(&dest, &opts).unwrap();
//!     assert_eq!(images::sha256_digest(&raw), built.manifest.digest);
//! }
//! ```

pub mod certs;
pub mod docker_save;
pub mod evil;
pub mod evil_archive;
pub mod fake;
pub mod http;
pub mod images;
pub mod registry;
pub mod skopeo;
pub mod token;
pub mod tree;

pub use fake::{FakeRegistry, FakeResponse};
pub use registry::Registry;
pub use token::TokenServer;

use std::path::Path;

/// A program the kit runs as a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Distribution, `/usr/bin/docker-registry` (Debian package `docker-registry`).
    Registry,
    /// `skopeo` (Debian package `skopeo`).
    Skopeo,
    /// `umoci` (Debian package `umoci`).
    Umoci,
    /// `openssl` (Debian package `openssl`): test CAs and token-signing certificates.
    Openssl,
    /// `htpasswd` (Debian package `apache2-utils`): bcrypt password files.
    Htpasswd,
    /// `mke2fs` (Debian package `e2fsprogs`).
    Mke2fs,
    /// `mkfs.erofs` (Debian package `erofs-utils`).
    MkfsErofs,
}

impl Peer {
    /// Absolute path of the program.
    pub fn path(self) -> &'static str {
        match self {
            Peer::Registry => "/usr/bin/docker-registry",
            Peer::Skopeo => "/usr/bin/skopeo",
            Peer::Umoci => "/usr/bin/umoci",
            Peer::Openssl => "/usr/bin/openssl",
            Peer::Htpasswd => "/usr/bin/htpasswd",
            Peer::Mke2fs => "/usr/sbin/mke2fs",
            Peer::MkfsErofs => "/usr/bin/mkfs.erofs",
        }
    }

    /// Debian package that provides the program.
    pub fn package(self) -> &'static str {
        match self {
            Peer::Registry => "docker-registry",
            Peer::Skopeo => "skopeo",
            Peer::Umoci => "umoci",
            Peer::Openssl => "openssl",
            Peer::Htpasswd => "apache2-utils",
            Peer::Mke2fs => "e2fsprogs",
            Peer::MkfsErofs => "erofs-utils",
        }
    }

    /// Whether the program is installed.
    pub fn is_available(self) -> bool {
        Path::new(self.path()).is_file()
    }
}

/// The peers a registry of each flavour needs, plus skopeo: the usual set for a registry test.
pub const REGISTRY_PEERS: &[Peer] = &[Peer::Registry, Peer::Skopeo, Peer::Openssl, Peer::Htpasswd];

/// Something a test needs from the machine beyond its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A peer program of `scripts/install-deps.sh`.
    Peer(Peer),
    /// An effective uid of 0: device nodes, file owners, loop mounts, `mount(2)`.
    Root,
    /// Another program: an absolute path, or a name looked up on `PATH` (`tar`, `unshare`).
    Tool(&'static str),
}

impl Need {
    /// Why the need is not met on this machine, or `None` when it is.
    pub fn unmet(self) -> Option<String> {
        match self {
            Need::Peer(p) if !p.is_available() => Some(format!(
                "missing peer program {} (package {}); run scripts/install-deps.sh",
                p.path(),
                p.package()
            )),
            Need::Peer(_) => None,
            Need::Root if !rustix::process::geteuid().is_root() => {
                Some("needs root (effective uid 0)".to_owned())
            }
            Need::Root => None,
            Need::Tool(t) if find_tool(t).is_none() => Some(format!("missing program {t}")),
            Need::Tool(_) => None,
        }
    }
}

/// `name` as an absolute path, or found in a directory of `PATH`.
fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| name.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether the environment variable `CI` is set (to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The one skip rule: a test (or a part of one) that cannot run here says why.
///
/// Outside CI it writes `SKIP <test>: <why>` to stderr (uncaptured, so it shows in a normal
/// `cargo test` run, where `scripts/test.sh` counts it) and returns. When `CI` is set
/// ([`in_ci`]) it panics instead: CI has the peers, root and mounts, so a skip there is a
/// broken machine, and it must not pass as green.
///
/// Tests call it through [`require!`], [`require_peers!`] or [`skip_test!`]; a test that
/// skips only a part (and goes on) calls it with [`this_test!`] as the name.
pub fn skip_or_fail(test_name: &str, why: &str) {
    skip_or_fail_in(test_name, why, in_ci());
}

fn skip_or_fail_in(test_name: &str, why: &str, ci: bool) {
    if ci {
        panic!("{test_name}: {why} (CI is set, so this is a failure, not a skip)");
    }
    // Straight to the stderr file descriptor, not through `eprintln!`, which the test
    // harness captures and hides for a test that passes: a skip must show in the run.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "SKIP {test_name}: {why}");
}

/// Checks every need of a test; `true` when all are met, else applies [`skip_or_fail`]
/// (which panics in CI) and returns `false`. Prefer the [`require!`] macro.
pub fn needs_met(test_name: &str, needs: &[Need]) -> bool {
    needs_met_in(test_name, needs, in_ci())
}

fn needs_met_in(test_name: &str, needs: &[Need], ci: bool) -> bool {
    let unmet: Vec<String> = needs.iter().filter_map(|n| n.unmet()).collect();
    if unmet.is_empty() {
        return true;
    }
    skip_or_fail_in(test_name, &unmet.join("; "), ci);
    false
}

/// Checks that every peer in `peers` is installed: [`needs_met`] with [`Need::Peer`].
///
/// Prefer the [`require_peers!`] macro, which returns from the test for you.
pub fn peers_available(test_name: &str, peers: &[Peer]) -> bool {
    let needs: Vec<Need> = peers.iter().copied().map(Need::Peer).collect();
    needs_met(test_name, &needs)
}

/// The path of the function that calls it (used by the macros to name the test).
#[doc(hidden)]
pub fn __fn_name<T>(_: T) -> &'static str {
    let n = std::any::type_name::<T>();
    n.strip_suffix("::__here").unwrap_or(n)
}

/// The path of the test function it is written in, e.g. `peers::unpack_matches_umoci`.
#[macro_export]
macro_rules! this_test {
    () => {{
        fn __here() {}
        $crate::__fn_name(__here)
    }};
}

/// Skips the calling test (returns from it) unless the given peers are installed.
///
/// With no arguments it requires [`REGISTRY_PEERS`]. In CI (env `CI` set) a missing peer is a
/// panic instead. Use it as the first statement of a test function returning `()`.
///
/// ```no_run
/// # use hoist_testkit::require_peers;
/// # fn t() {
/// require_peers!();                                   // registry + skopeo + openssl + htpasswd
/// require_peers!(Peer::Umoci);                         // names resolve inside hoist_testkit::Peer
/// # }
/// ```
#[macro_export]
macro_rules! require_peers {
    () => {{
        if !$crate::peers_available($crate::this_test!(), $crate::REGISTRY_PEERS) {
            return;
        }
    }};
    ($(Peer::$p:ident),+ $(,)?) => {{
        if !$crate::peers_available($crate::this_test!(), &[$($crate::Peer::$p),+]) {
            return;
        }
    }};
}

/// Skips the calling test (returns from it) unless every [`Need`] is met; in CI an unmet
/// need is a panic instead (see [`skip_or_fail`]).
///
/// ```no_run
/// # use hoist_testkit::{require, Need, Peer};
/// # fn t() {
/// require!(Need::Root, Need::Peer(Peer::Umoci), Need::Tool("tar"));
/// # }
/// ```
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {{
        if !$crate::needs_met($crate::this_test!(), &[$($need),+]) {
            return;
        }
    }};
}

/// Skips the calling test (returns from it) with a reason, for what only trying tells
/// (a `mount` the machine refuses); in CI it panics instead (see [`skip_or_fail`]).
///
/// ```no_run
/// # use hoist_testkit::skip_test;
/// # fn t(e: std::io::Error) {
/// skip_test!("mounting a tmpfs is refused here: {e}");
/// # }
/// ```
#[macro_export]
macro_rules! skip_test {
    ($($why:tt)+) => {{
        $crate::skip_or_fail($crate::this_test!(), &format!($($why)+));
        return;
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_missing_runs() {
        assert!(needs_met_in("t", &[], true));
        assert!(needs_met_in("t", &[], false));
        assert!(needs_met_in("t", &[Need::Tool("/bin/sh")], true));
        assert!(needs_met_in("t", &[Need::Tool("sh")], true));
    }

    #[test]
    fn missing_outside_ci_skips() {
        let missing = Need::Tool("/nonexistent/hoist-no-such-tool");
        assert!(!needs_met_in("t", &[missing], false));
        assert!(!needs_met_in(
            "t",
            &[Need::Tool("hoist-no-such-tool")],
            false
        ));
    }

    #[test]
    #[should_panic(expected = "missing program /nonexistent/tool (CI is set")]
    fn missing_in_ci_fails() {
        needs_met_in("t", &[Need::Tool("/nonexistent/tool")], true);
    }

    #[test]
    #[should_panic(expected = "t: mount refused (CI is set, so this is a failure, not a skip)")]
    fn a_skip_in_ci_fails() {
        skip_or_fail_in("t", "mount refused", true);
    }

    #[test]
    fn root_is_what_the_kernel_says() {
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        assert_eq!(Need::Root.unmet().is_none(), root);
    }

    #[test]
    fn peers_name_their_package() {
        let why = Need::Peer(Peer::Skopeo).unmet();
        if !Peer::Skopeo.is_available() {
            assert_eq!(
                why.as_deref(),
                Some(
                    "missing peer program /usr/bin/skopeo (package skopeo); run scripts/install-deps.sh"
                )
            );
        } else {
            assert_eq!(why, None);
        }
    }

    #[test]
    fn macro_names_the_test() {
        let name = this_test!();
        assert!(name.ends_with("tests::macro_names_the_test"), "{name}");
    }
}
