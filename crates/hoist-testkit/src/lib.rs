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
//! The peers are Debian packages; `scripts/install-deps.sh` installs them. A test that needs them
//! starts with [`require_peers!`], which skips (with a printed reason) when a peer is missing, unless
//! the `CI` environment variable is set, in which case it panics.
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

/// Checks that every peer in `peers` is installed.
///
/// Returns `true` when all are present. When some are missing, it panics if the environment
/// variable `CI` is set (to anything but empty, `0` or `false`): CI must never silently skip.
/// Otherwise it prints a `SKIP` line naming the test, the missing programs and the install
/// command to stderr and returns `false`.
///
/// Prefer the [`require_peers!`] macro, which returns from the test for you.
pub fn peers_available(test_name: &str, peers: &[Peer]) -> bool {
    let missing: Vec<Peer> = peers
        .iter()
        .copied()
        .filter(|p| !p.is_available())
        .collect();
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
    skip_or_panic(test_name, &missing, ci)
}

fn skip_or_panic(test_name: &str, missing: &[Peer], ci: bool) -> bool {
    if missing.is_empty() {
        return true;
    }
    let list: Vec<String> = missing
        .iter()
        .map(|p| format!("{} (package {})", p.path(), p.package()))
        .collect();
    let msg = format!(
        "{test_name}: missing peer program(s): {}; run scripts/install-deps.sh",
        list.join(", ")
    );
    if ci {
        panic!("{msg} (CI is set, so this is a failure, not a skip)");
    }
    eprintln!("SKIP {msg}");
    false
}

/// The path of the function that calls it (used by [`require_peers!`] to name the test).
#[doc(hidden)]
pub fn __fn_name<T>(_: T) -> &'static str {
    let n = std::any::type_name::<T>();
    n.strip_suffix("::__here").unwrap_or(n)
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
        fn __here() {}
        if !$crate::peers_available($crate::__fn_name(__here), $crate::REGISTRY_PEERS) {
            return;
        }
    }};
    ($(Peer::$p:ident),+ $(,)?) => {{
        fn __here() {}
        if !$crate::peers_available($crate::__fn_name(__here), &[$($crate::Peer::$p),+]) {
            return;
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_missing_runs() {
        assert!(skip_or_panic("t", &[], true));
        assert!(skip_or_panic("t", &[], false));
    }

    #[test]
    fn missing_outside_ci_skips() {
        assert!(!skip_or_panic("t", &[Peer::Skopeo], false));
    }

    #[test]
    #[should_panic(expected = "missing peer program(s): /usr/bin/skopeo (package skopeo)")]
    fn missing_in_ci_fails() {
        skip_or_panic("t", &[Peer::Skopeo], true);
    }

    #[test]
    fn macro_names_the_test() {
        fn __here() {}
        assert!(
            __fn_name(__here).ends_with("tests::macro_names_the_test"),
            "{}",
            __fn_name(__here)
        );
    }
}
