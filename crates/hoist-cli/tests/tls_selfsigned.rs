//! `hoist pull` from the real Distribution registry serving the one self-signed certificate
//! of Docker's "deploy a registry" guide (`openssl req -x509 -newkey rsa:4096 ...`, so
//! `CA:TRUE`), trusted the way the guide says: `--cert-dir`, or a copy at
//! `/etc/docker/certs.d/HOST:PORT/ca.crt`. skopeo pushes the image with the same
//! certificate, so both tools are held to the same trust.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use hoist_testkit::certs::TlsMaterial;
use hoist_testkit::images::{Entry, ImageSpec, LayerSpec};
use hoist_testkit::{Registry, require_peers, skopeo};

/// The guide's certificate for 127.0.0.1, made once: RSA 4096 takes a while.
fn guide_cert() -> &'static TlsMaterial {
    static CERT: OnceLock<(tempfile::TempDir, TlsMaterial)> = OnceLock::new();
    &CERT
        .get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            let m = TlsMaterial::docker_guide_self_signed(d.path(), "127.0.0.1", "IP:127.0.0.1")
                .unwrap();
            (d, m)
        })
        .1
}

/// The registry serving the guide's certificate, with one image pushed by skopeo (which
/// trusts the certificate through `--dest-cert-dir`); returns the reference and its
/// manifest digest.
fn registry_with_image() -> (Registry, String, String) {
    let r = Registry::builder()
        .tls_material(guide_cert().clone())
        .start();
    let spec = ImageSpec::oci().layer(LayerSpec::gzip([
        Entry::dir("etc"),
        Entry::file("etc/guide", "self-signed\n"),
    ]));
    let built = skopeo::push_spec(&spec, &r, "guide/app:1").unwrap();
    let reference = r.image_ref("guide/app:1");
    (r, reference, built.manifest.digest.to_string())
}

fn pull_args<'a>(dir: &'a Path, reference: &'a str) -> Vec<String> {
    let store = support::store(dir);
    vec![
        "pull".into(),
        "--store".into(),
        store.display().to_string(),
        "--progress".into(),
        "none".into(),
        "--retry-times".into(),
        "0".into(),
        reference.into(),
    ]
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The pulled manifest digest, as `hoist images` reports it.
fn stored_digests(dir: &Path) -> String {
    let out = support::hoist(dir)
        .args(["images", "--format", "json", "--store"])
        .arg(support::store(dir))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pull_trusts_the_guide_certificate_given_with_cert_dir() {
    require_peers!(Peer::Registry, Peer::Skopeo, Peer::Openssl);
    let (r, reference, digest) = registry_with_image();
    let dir = tempfile::tempdir().unwrap();

    // Not trusted: a TLS error naming the URL, and nothing stored.
    let out = support::hoist(dir.path())
        .args(pull_args(dir.path(), &reference))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("https://{}/", r.host_port())) && err.contains("TLS error"),
        "{err}"
    );
    assert!(!stored_digests(dir.path()).contains(&digest));
    support::assert_fsck_clean(dir.path(), &support::store(dir.path()));

    let out = support::hoist(dir.path())
        .args(pull_args(dir.path(), &reference))
        .arg("--cert-dir")
        .arg(&guide_cert().cert_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stored_digests(dir.path()).contains(&digest));
}

/// Runs `hoist ARGS` in a private mount namespace where `/etc/docker` is `etc_docker`;
/// `None` when this machine refuses the namespace or the mount.
fn hoist_with_etc_docker(dir: &Path, etc_docker: &Path, args: &[String]) -> Option<Output> {
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/docker"#)
        .arg(etc_docker)
        .output()
        .ok()?;
    if !probe.status.success() || !Path::new("/etc/docker").is_dir() {
        return None;
    }
    let mut cmd = Command::new("unshare");
    support::isolate(&mut cmd, dir);
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/docker && exec "$@""#)
        .arg(etc_docker)
        .arg(env!("CARGO_BIN_EXE_hoist"))
        .args(args);
    Some(cmd.output().unwrap())
}

#[test]
fn pull_trusts_the_guide_certificate_copied_to_etc_docker_certs_d() {
    require_peers!(Peer::Registry, Peer::Skopeo, Peer::Openssl);
    let (r, reference, digest) = registry_with_image();
    let dir = tempfile::tempdir().unwrap();
    let etc_docker = dir.path().join("etc-docker");
    let host_dir = etc_docker.join("certs.d").join(r.host_port());
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(&guide_cert().server_cert, host_dir.join("ca.crt")).unwrap();
    let Some(out) =
        hoist_with_etc_docker(dir.path(), &etc_docker, &pull_args(dir.path(), &reference))
    else {
        eprintln!(
            "skipping pull_trusts_the_guide_certificate_copied_to_etc_docker_certs_d: \
             `unshare -m` or the bind mount over /etc/docker is refused here"
        );
        return;
    };
    assert!(out.status.success(), "{}", text(&out));
    assert!(stored_digests(dir.path()).contains(&digest));

    // The same certificate under another host:port name is no trust for this one.
    std::fs::rename(&host_dir, etc_docker.join("certs.d").join("127.0.0.1:1")).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let out = hoist_with_etc_docker(
        dir2.path(),
        &etc_docker,
        &pull_args(dir2.path(), &reference),
    )
    .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS error"),
        "{}",
        text(&out)
    );
    assert!(!stored_digests(dir2.path()).contains(&digest));
    support::assert_fsck_clean(dir2.path(), &support::store(dir2.path()));
}
