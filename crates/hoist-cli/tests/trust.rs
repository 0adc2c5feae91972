//! Trust enforced by the CLI (issue 16): `hoist copy` and `hoist verify` under
//! containers-policy.json, with signatures made by the real peers: `skopeo copy --sign-by`
//! (GPG, a throwaway home) into a `dir:` layout, and cosign-shaped `.sig` tags in the real
//! registry signed by openssl (Debian's skopeo 1.9 has sigstore signing disabled). Every
//! refusal names scope, requirement and fault, and leaves the destination and the store as
//! they were (fsck clean).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_testkit::images::{BlobInfo, OciLayout, sample_docker};
use hoist_testkit::skopeo::push_spec;
use hoist_testkit::{Need, Peer, Registry, require};

const IDENTITY: &str = "127.0.0.1:5000/ns/app:1";

struct GpgHome {
    dir: tempfile::TempDir,
}

impl GpgHome {
    fn new() -> GpgHome {
        let dir = tempfile::Builder::new()
            .prefix("hg")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        GpgHome { dir }
    }

    fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.dir.path()).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        c
    }

    fn key(&self, email: &str, export_to: &Path) -> String {
        let mut c = self.gpg();
        c.args([
            "--quick-gen-key",
            &format!("hoist test <{email}>"),
            "default",
            "default",
            "never",
        ]);
        run(c);
        let mut c = self.gpg();
        c.args(["--with-colons", "--list-keys", email]);
        let out = String::from_utf8(run(c)).unwrap();
        let fpr = out
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_owned())
            .unwrap();
        let mut c = self.gpg();
        c.args(["--export", &fpr]);
        std::fs::write(export_to, run(c)).unwrap();
        fpr
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.dir.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

fn run(mut c: Command) -> Vec<u8> {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn hoist_ok(dir: &Path, args: &[&str]) -> String {
    let out = support::hoist(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "hoist {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn hoist_refused(dir: &Path, args: &[&str]) -> String {
    let out = support::hoist(dir).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "hoist {args:?} succeeded");
    assert!(
        err.contains("refused by the policy"),
        "hoist {args:?}: {err}"
    );
    err
}

fn write_policy(path: &Path, transport: &str, scope: &str, req: &str) -> String {
    std::fs::write(
        path,
        format!(
            r#"{{"default": [{{"type": "reject"}}], "transports": {{"{transport}": {{"{scope}": [{req}]}}}}}}"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn images_in(dir: &Path, store: &Path) -> usize {
    let out = hoist_ok(
        dir,
        &[
            "--store",
            store.to_str().unwrap(),
            "images",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array().map(Vec::len).unwrap_or(0)
}

#[test]
fn gpg_signed_dir_from_skopeo_is_enforced_on_copy_and_shown_by_verify() {
    require!(Need::Tool("gpg"), Need::Peer(Peer::Skopeo));
    let t = tempfile::tempdir().unwrap();
    let w = |n: &str| -> PathBuf { t.path().join(n) };
    let s = |n: &str| -> String { w(n).display().to_string() };
    let home = GpgHome::new();
    let a = home.key("a@example.com", &w("a.gpg"));
    let _b = home.key("b@example.com", &w("b.gpg"));
    sample_docker().write_layout(&w("layout"), "t").unwrap();
    OciLayout::create(&w("layout"))
        .unwrap()
        .export_dir_transport("t", &w("plain"))
        .unwrap();
    let out = Command::new("skopeo")
        .env("GNUPGHOME", home.dir.path())
        .args(["copy", "--sign-by", &a, "--sign-identity", IDENTITY])
        .arg(format!("dir:{}", s("plain")))
        .arg(format!("dir:{}", s("signed")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w("signed/signature-1").is_file());
    let signed = std::fs::canonicalize(w("signed")).unwrap();
    let signed = signed.to_str().unwrap();
    let src = format!("dir:{signed}");
    let signed_by = |key: &str, identity: &str| {
        format!(
            r#"{{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "{}", "signedIdentity": {{"type": "exactReference", "dockerReference": "{identity}"}}}}"#,
            s(key)
        )
    };
    let good = write_policy(
        &w("good.json"),
        "dir",
        signed,
        &signed_by("a.gpg", IDENTITY),
    );
    let other_key = write_policy(
        &w("other.json"),
        "dir",
        signed,
        &signed_by("b.gpg", IDENTITY),
    );
    let other_id = write_policy(
        &w("id.json"),
        "dir",
        signed,
        &signed_by("a.gpg", "127.0.0.1:5000/ns/app:2"),
    );
    let reject = write_policy(&w("reject.json"), "dir", signed, r#"{"type": "reject"}"#);
    let store = w("store");
    let store_s = store.to_str().unwrap();

    // Accepted: to an OCI layout and into the store.
    hoist_ok(
        t.path(),
        &[
            "copy",
            "--policy",
            &good,
            &src,
            &format!("oci:{}:x", s("out")),
        ],
    );
    assert!(w("out/index.json").is_file());
    hoist_ok(
        t.path(),
        &[
            "--store",
            store_s,
            "copy",
            "--policy",
            &good,
            &src,
            &format!("hoist:{IDENTITY}"),
        ],
    );
    assert_eq!(images_in(t.path(), &store), 1);

    // verify: the signature, and the requirement it satisfies.
    let out = hoist_ok(
        t.path(),
        &["verify", "--policy", &good, "--format", "json", &src],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allowed"], true, "{v}");
    assert_eq!(v["signatures"][0]["kind"], "simple-signing", "{v}");
    assert_eq!(v["requirements"][0]["satisfied"], true, "{v}");
    assert_eq!(
        v["requirements"][0]["satisfied_by"][0]["docker_reference"], IDENTITY,
        "{v}"
    );
    assert!(
        v["requirements"][0]["satisfied_by"][0]["signer"]
            .as_str()
            .unwrap()
            .contains(&a),
        "{v}"
    );
    let out = hoist_ok(t.path(), &["verify", "--policy", &good, &src]);
    assert!(out.contains("verdict:    accepted"), "{out}");

    // Refused: another key, another identity, reject; each leaves nothing behind.
    let fresh = w("store2");
    let fresh_s = fresh.to_str().unwrap();
    for (policy, why) in [
        (&other_key, "not signed by any trusted key"),
        (&other_id, "is not accepted for"),
        (&reject, "rejects every image"),
    ] {
        let err = hoist_refused(
            t.path(),
            &[
                "copy",
                "--policy",
                policy,
                &src,
                &format!("oci:{}:x", s("refused")),
            ],
        );
        assert!(err.contains(why), "{err}");
        assert!(
            err.contains(&format!("transports.dir.\"{signed}\"")),
            "{err}"
        );
        assert!(
            !w("refused").exists(),
            "a refused copy created its destination"
        );
        let err = hoist_refused(
            t.path(),
            &[
                "--store",
                fresh_s,
                "copy",
                "--policy",
                policy,
                &src,
                &format!("hoist:{IDENTITY}"),
            ],
        );
        assert!(err.contains(why), "{err}");
        assert_eq!(images_in(t.path(), &fresh), 0);
        support::assert_fsck_clean(t.path(), &fresh);
        // verify says why too, and fails.
        let out = support::hoist(t.path())
            .args(["verify", "--policy", policy, &src])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("verdict:    REFUSED"));
    }

    // A signature for another manifest, put where the real one was.
    std::fs::create_dir(w("tampered")).unwrap();
    for e in std::fs::read_dir(signed).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), w("tampered").join(e.file_name())).unwrap();
    }
    std::fs::write(w("other-manifest.json"), br#"{"schemaVersion": 2}"#).unwrap();
    let out = Command::new("skopeo")
        .env("GNUPGHOME", home.dir.path())
        .arg("standalone-sign")
        .arg(w("other-manifest.json"))
        .args([IDENTITY, &a, "-o"])
        .arg(w("tampered/signature-1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tampered = std::fs::canonicalize(w("tampered")).unwrap();
    let tampered = tampered.to_str().unwrap();
    let pol = write_policy(&w("t.json"), "dir", tampered, &signed_by("a.gpg", IDENTITY));
    let err = hoist_refused(
        t.path(),
        &[
            "--store",
            fresh_s,
            "copy",
            "--policy",
            &pol,
            &format!("dir:{tampered}"),
            &format!("hoist:{IDENTITY}"),
        ],
    );
    assert!(err.contains("signs manifest sha256:"), "{err}");
    // Truncated signature.
    let sig = std::fs::read(signed.to_owned() + "/signature-1").unwrap();
    std::fs::write(w("tampered/signature-1"), &sig[..sig.len() / 2]).unwrap();
    hoist_refused(
        t.path(),
        &[
            "--store",
            fresh_s,
            "copy",
            "--policy",
            &pol,
            &format!("dir:{tampered}"),
            &format!("hoist:{IDENTITY}"),
        ],
    );
    assert_eq!(images_in(t.path(), &fresh), 0);
    support::assert_fsck_clean(t.path(), &fresh);

    // The sandbox's default policy accepts anything; so does --insecure-policy over a
    // rejecting $HOIST_POLICY.
    hoist_ok(
        t.path(),
        &["copy", &src, &format!("oci:{}:x", s("default"))],
    );
    let out = support::hoist(t.path())
        .env("HOIST_POLICY", &reject)
        .args([
            "copy",
            "--insecure-policy",
            &src,
            &format!("oci:{}:x", s("insecure")),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = support::hoist(t.path())
        .env("HOIST_POLICY", &reject)
        .args(["copy", &src, &format!("oci:{}:x", s("env"))])
        .output()
        .unwrap();
    assert!(!out.status.success(), "$HOIST_POLICY was not applied");
    // hoist load: the archive's transport and path scopes decide; an archive carries no
    // signature, so a signature requirement refuses it and the store stays unchanged.
    hoist_ok(
        t.path(),
        &[
            "copy",
            &src,
            &format!("docker-archive:{}:{IDENTITY}", s("img.tar")),
        ],
    );
    let tar = std::fs::canonicalize(w("img.tar")).unwrap();
    let tar = tar.to_str().unwrap();
    let load_reject = write_policy(
        &w("lr.json"),
        "docker-archive",
        tar,
        r#"{"type": "reject"}"#,
    );
    let load_signed = write_policy(
        &w("ls.json"),
        "docker-archive",
        tar,
        &signed_by("a.gpg", IDENTITY),
    );
    let load_ok = write_policy(
        &w("lo.json"),
        "docker-archive",
        tar,
        r#"{"type": "insecureAcceptAnything"}"#,
    );
    for (policy, why) in [
        (&load_reject, "rejects every image"),
        (&load_signed, "no simple-signing (GPG) signature was found"),
    ] {
        let err = hoist_refused(
            t.path(),
            &["--store", fresh_s, "load", "--policy", policy, "-i", tar],
        );
        assert!(err.contains(why), "{err}");
        assert!(
            err.contains(&format!("transports.docker-archive.\"{tar}\"")),
            "{err}"
        );
        assert_eq!(images_in(t.path(), &fresh), 0);
        support::assert_fsck_clean(t.path(), &fresh);
    }
    hoist_ok(
        t.path(),
        &["--store", fresh_s, "load", "--policy", &load_ok, "-i", tar],
    );
    assert_eq!(images_in(t.path(), &fresh), 1);

    // A policy naming Rekor is refused as a whole, with the reason.
    let rekor = write_policy(
        &w("rekor.json"),
        "dir",
        signed,
        r#"{"type": "sigstoreSigned", "keyPath": "/k.pub", "rekorPublicKeyPath": "/r.pub"}"#,
    );
    let out = support::hoist(t.path())
        .args([
            "copy",
            "--policy",
            &rekor,
            &src,
            &format!("oci:{}:x", s("rekor")),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"rekorPublicKeyPath\" is not supported"),
        "{err}"
    );
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let mut c = Command::new("openssl");
    c.args(args);
    run(c)
}

/// Pushes a cosign-shaped `.sig` image for `digest` to `reg` under `repo`: one
/// simple-signing layer `payload` with the signature annotation `signature`.
fn push_sig(
    reg: &Registry,
    work: &Path,
    repo: &str,
    digest: &str,
    payload: &[u8],
    signature: &str,
) {
    let dir = work.join(format!("sig-{}", &digest[7..19]));
    let _ = std::fs::remove_dir_all(&dir);
    let layout = OciLayout::create(&dir).unwrap();
    let payload_digest = layout.put_blob(payload).unwrap();
    let config = format!(
        r#"{{"architecture":"","os":"","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{payload_digest}"]}}}}"#
    );
    let config_digest = layout.put_blob(config.as_bytes()).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": signature},
        }],
    })
    .to_string();
    let md = layout.put_blob(manifest.as_bytes()).unwrap();
    let info = BlobInfo {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: md,
        size: manifest.len() as u64,
    };
    layout.tag(&info, "sig").unwrap();
    let tag = digest.replace(':', "-") + ".sig";
    let mut c = Command::new("skopeo");
    c.args(["copy", "--dest-tls-verify=false", "--preserve-digests"])
        .arg(format!("oci:{}:sig", dir.display()))
        .arg(format!(
            "docker://{}:{tag}",
            reg.image_ref(repo).trim_end_matches(":latest")
        ));
    run(c);
}

#[test]
fn cosign_sig_tags_in_the_registry_are_enforced() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Peer(Peer::Openssl)
    );
    use base64::Engine as _;
    let t = tempfile::tempdir().unwrap();
    let w = |n: &str| -> PathBuf { t.path().join(n) };
    let s = |n: &str| -> String { w(n).display().to_string() };
    let reg = Registry::plain();
    let built = push_spec(&sample_docker(), &reg, "t/img:1").unwrap();
    push_spec(&sample_docker(), &reg, "t/bad:1").unwrap();
    let digest = built.manifest.digest.clone();
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &s("k.pem"),
    ]);
    openssl(&["pkey", "-in", &s("k.pem"), "-pubout", "-out", &s("k.pub")]);
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &s("o.pem"),
    ]);
    openssl(&["pkey", "-in", &s("o.pem"), "-pubout", "-out", &s("o.pub")]);
    let repo = reg
        .image_ref("t/img")
        .trim_end_matches(":latest")
        .to_owned();
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{repo}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    std::fs::write(w("payload.json"), &payload).unwrap();
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        &s("k.pem"),
        "-out",
        &s("sig.der"),
        &s("payload.json"),
    ]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let signature = b64.encode(std::fs::read(w("sig.der")).unwrap());
    push_sig(
        &reg,
        t.path(),
        "t/img",
        &digest,
        payload.as_bytes(),
        &signature,
    );
    // t/bad: the same manifest digest, but its `.sig` layer is garbage.
    push_sig(&reg, t.path(), "t/bad", &digest, b"garbage", &signature);

    let host = reg.host_port();
    let sigstore = |key: &str| {
        format!(
            r#"{{"type": "sigstoreSigned", "keyPath": "{}", "signedIdentity": {{"type": "matchRepository"}}}}"#,
            s(key)
        )
    };
    let good = write_policy(&w("good.json"), "docker", &host, &sigstore("k.pub"));
    let other = write_policy(&w("other.json"), "docker", &host, &sigstore("o.pub"));
    let src = format!("docker://{}", reg.image_ref("t/img:1"));
    let store = w("store");
    let store_s = store.to_str().unwrap();
    let tls = "--tls-verify=false";

    hoist_ok(
        t.path(),
        &[
            "--store",
            store_s,
            "copy",
            tls,
            "--policy",
            &good,
            &src,
            &format!("hoist:{}", reg.image_ref("t/img:1")),
        ],
    );
    assert_eq!(images_in(t.path(), &store), 1);
    let out = hoist_ok(
        t.path(),
        &["verify", tls, "--policy", &good, "--format", "json", &src],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allowed"], true, "{v}");
    assert_eq!(v["signatures"][0]["kind"], "cosign", "{v}");
    assert_eq!(
        v["requirements"][0]["satisfied_by"][0]["docker_reference"], repo,
        "{v}"
    );

    let fresh = w("store2");
    let fresh_s = fresh.to_str().unwrap();
    let err = hoist_refused(
        t.path(),
        &[
            "--store",
            fresh_s,
            "copy",
            tls,
            "--policy",
            &other,
            &src,
            &format!("hoist:{}", reg.image_ref("t/img:1")),
        ],
    );
    assert!(
        err.contains("not signed by any of the 1 trusted public key"),
        "{err}"
    );
    assert!(
        err.contains(&format!("transports.docker.\"{host}\"")),
        "{err}"
    );
    let bad = format!("docker://{}", reg.image_ref("t/bad:1"));
    let err = hoist_refused(
        t.path(),
        &[
            "--store",
            fresh_s,
            "copy",
            tls,
            "--policy",
            &good,
            &bad,
            &format!("oci:{}:x", s("bad-out")),
        ],
    );
    assert!(err.contains("signature 1"), "{err}");
    assert!(!w("bad-out").exists());
    // An image with no `.sig` tag at all.
    push_spec(&sample_docker(), &reg, "t/unsigned:1").unwrap();
    let err = hoist_refused(
        t.path(),
        &[
            "--store",
            fresh_s,
            "copy",
            tls,
            "--policy",
            &good,
            &format!("docker://{}", reg.image_ref("t/unsigned:1")),
            &format!("hoist:{}", reg.image_ref("t/unsigned:1")),
        ],
    );
    assert!(
        err.contains("no sigstore (cosign) signature was found"),
        "{err}"
    );
    assert_eq!(images_in(t.path(), &fresh), 0);
    support::assert_fsck_clean(t.path(), &fresh);

    // hoist pull: the same decisions, before any blob is fetched.
    let pulled = w("store3");
    let pulled_s = pulled.to_str().unwrap();
    let img = reg.image_ref("t/img:1");
    for (policy, refused) in [(&other, true), (&good, false)] {
        let out = support::hoist(t.path())
            .args(["--store", pulled_s, "pull", tls, "--policy", policy, &img])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(!out.status.success(), refused, "{err}");
        if refused {
            assert!(
                err.contains("not signed by any of the 1 trusted public key"),
                "{err}"
            );
            assert_eq!(images_in(t.path(), &pulled), 0);
            support::assert_fsck_clean(t.path(), &pulled);
        }
    }
    assert_eq!(images_in(t.path(), &pulled), 1);
    let err = hoist_refused(
        t.path(),
        &[
            "--store",
            fresh_s,
            "pull",
            tls,
            "--policy",
            &good,
            &reg.image_ref("t/bad:1"),
        ],
    );
    assert!(err.contains("signature 1"), "{err}");
    assert_eq!(images_in(t.path(), &fresh), 0);
    support::assert_fsck_clean(t.path(), &fresh);
}

#[test]
fn hoist_signatures_are_accepted_by_skopeo_and_openssl() {
    require!(
        Need::Tool("gpg"),
        Need::Peer(Peer::Skopeo),
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Openssl)
    );
    let t = tempfile::tempdir().unwrap();
    let w = |n: &str| -> PathBuf { t.path().join(n) };
    let s = |n: &str| -> String { w(n).display().to_string() };
    let home = GpgHome::new();
    let a = home.key("a@example.com", &w("a.gpg"));
    let _b = home.key("b@example.com", &w("b.gpg"));
    sample_docker().write_layout(&w("layout"), "t").unwrap();
    OciLayout::create(&w("layout"))
        .unwrap()
        .export_dir_transport("t", &w("plain"))
        .unwrap();

    // GPG: hoist signs into dir:, skopeo verifies (standalone-verify, and copy under a
    // policy that requires the signature).
    let out = support::hoist(t.path())
        .env("GNUPGHOME", home.dir.path())
        .args(["copy", "--sign-by", &a, "--sign-identity", IDENTITY])
        .arg(format!("dir:{}", s("plain")))
        .arg(format!("dir:{}", s("hsigned")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = Command::new("skopeo");
    c.env("GNUPGHOME", home.dir.path())
        .arg("standalone-verify")
        .arg(w("hsigned/manifest.json"))
        .args([IDENTITY, &a])
        .arg(w("hsigned/signature-1"));
    let said = String::from_utf8(run(c)).unwrap();
    assert!(said.contains("Signature verified"), "{said}");
    let hsigned = std::fs::canonicalize(w("hsigned")).unwrap();
    let hsigned = hsigned.to_str().unwrap();
    let signed_by = |key: &str| {
        format!(
            r#"{{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "{}", "signedIdentity": {{"type": "exactReference", "dockerReference": "{IDENTITY}"}}}}"#,
            s(key)
        )
    };
    let good = write_policy(&w("good.json"), "dir", hsigned, &signed_by("a.gpg"));
    let other = write_policy(&w("other.json"), "dir", hsigned, &signed_by("b.gpg"));
    let mut c = Command::new("skopeo");
    c.args(["--policy", &good, "copy", "--remove-signatures"])
        .arg(format!("dir:{hsigned}"))
        .arg(format!("oci:{}:x", s("by-skopeo")));
    run(c);
    let out = Command::new("skopeo")
        .args(["--policy", &other, "copy", "--remove-signatures"])
        .arg(format!("dir:{hsigned}"))
        .arg(format!("oci:{}:x", s("by-skopeo-2")))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "skopeo accepted a signature by another key"
    );
    hoist_ok(
        t.path(),
        &["verify", "--policy", &good, &format!("dir:{hsigned}")],
    );
    // Signing a dir: destination without an identity is refused before anything is written.
    let out = support::hoist(t.path())
        .env("GNUPGHOME", home.dir.path())
        .args(["copy", "--sign-by", &a])
        .arg(format!("dir:{}", s("plain")))
        .arg(format!("dir:{}", s("no-identity")))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --sign-identity"));
    assert!(!w("no-identity").exists());

    // cosign: hoist signs into the registry's .sig tag; openssl verifies the signature
    // read back by skopeo, and hoist enforces it.
    let reg = Registry::plain();
    push_spec(&sample_docker(), &reg, "t/img:1").unwrap();
    let key = hoist_trust::sigstore::PrivateKey::generate();
    std::fs::write(w("key.private"), key.to_encrypted_pem(b"pw")).unwrap();
    std::fs::write(w("pw"), "pw\n").unwrap();
    std::fs::write(w("key.pub"), key.public_pem()).unwrap();
    let dest = reg.image_ref("t/hs:1");
    hoist_ok(
        t.path(),
        &[
            "copy",
            "--tls-verify=false",
            "--sign-by-sigstore-private-key",
            &s("key.private"),
            "--sign-passphrase-file",
            &s("pw"),
            &format!("docker://{}", reg.image_ref("t/img:1")),
            &format!("docker://{dest}"),
        ],
    );
    let digest = hoist_ok(
        t.path(),
        &[
            "inspect",
            "--tls-verify=false",
            "--format",
            "json",
            &format!("docker://{dest}"),
        ],
    );
    let digest = serde_json::from_str::<serde_json::Value>(&digest).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let sig_ref = format!(
        "docker://{}:{}.sig",
        reg.image_ref("t/hs").trim_end_matches(":latest"),
        digest.replace(':', "-")
    );
    let mut c = Command::new("skopeo");
    c.args(["copy", "--src-tls-verify=false", &sig_ref])
        .arg(format!("dir:{}", s("sig")));
    run(c);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w("sig/manifest.json")).unwrap()).unwrap();
    let layer = &m["layers"][0];
    let payload_file = w("sig").join(
        layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    std::fs::write(w("sig.der"), der).unwrap();
    let ok = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &s("key.pub"),
        "-signature",
        &s("sig.der"),
        payload_file.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&ok).contains("Verified OK"));
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&payload_file).unwrap()).unwrap();
    assert_eq!(
        payload["critical"]["identity"]["docker-reference"],
        dest.as_str()
    );
    assert_eq!(
        payload["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    let policy = write_policy(
        &w("cosign.json"),
        "docker",
        &reg.host_port(),
        &format!(
            r#"{{"type": "sigstoreSigned", "keyPath": "{}"}}"#,
            s("key.pub")
        ),
    );
    hoist_ok(
        t.path(),
        &["pull", "--tls-verify=false", "--policy", &policy, &dest],
    );
    // skopeo under the same policy, reading the `.sig` tag (use-sigstore-attachments).
    // Debian builds skopeo 1.9 without sigstore ("Debian-local change: sigstore
    // disabled"); that refusal, and only that one, is tolerated.
    std::fs::create_dir(w("registries.d")).unwrap();
    std::fs::write(
        w("registries.d/default.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .unwrap();
    let out = Command::new("skopeo")
        .args([
            "--policy",
            &policy,
            "--registries.d",
            &s("registries.d"),
            "copy",
        ])
        .args(["--src-tls-verify=false", "--remove-signatures"])
        .arg(format!("docker://{dest}"))
        .arg(format!("oci:{}:x", s("skopeo-sigstore")))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("sigstore disabled"),
        "skopeo refused hoist's cosign signature: {err}"
    );
    if !out.status.success() {
        eprintln!(
            "note: this skopeo cannot verify sigstore signatures: {}",
            err.trim()
        );
    }
}

#[test]
fn lookaside_signatures_written_by_skopeo_are_read_by_pull_and_verify() {
    require!(
        Need::Tool("gpg"),
        Need::Peer(Peer::Skopeo),
        Need::Peer(Peer::Registry)
    );
    let t = tempfile::tempdir().unwrap();
    let w = |n: &str| -> PathBuf { t.path().join(n) };
    let s = |n: &str| -> String { w(n).display().to_string() };
    let home = GpgHome::new();
    let a = home.key("a@example.com", &w("a.gpg"));
    let _b = home.key("b@example.com", &w("b.gpg"));
    let reg = Registry::plain();
    push_spec(&sample_docker(), &reg, "t/img:1").unwrap();
    // skopeo signs into the lookaside-staging store; hoist reads the same directory as
    // its lookaside.
    std::fs::create_dir_all(w("sigstore")).unwrap();
    std::fs::create_dir(w("registries.d")).unwrap();
    std::fs::write(
        w("registries.d/hoist-test.yaml"),
        format!(
            "docker:\n  {}:\n    lookaside: file://{}\n    lookaside-staging: file://{}\n",
            reg.host_port(),
            s("sigstore"),
            s("sigstore")
        ),
    )
    .unwrap();
    let signed = reg.image_ref("t/signed:1");
    let out = Command::new("skopeo")
        .env("GNUPGHOME", home.dir.path())
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(["--registries.d", &s("registries.d"), "--sign-by", &a])
        .arg(format!("docker://{}", reg.image_ref("t/img:1")))
        .arg(format!("docker://{signed}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policy = |key: &str, file: &str| {
        write_policy(
            &w(file),
            "docker",
            &reg.host_port(),
            &format!(
                r#"{{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "{}"}}"#,
                s(key)
            ),
        )
    };
    let good = policy("a.gpg", "good.json");
    let other = policy("b.gpg", "other.json");
    let store = w("store");
    let store_s = store.to_str().unwrap();
    let tls = "--tls-verify=false";
    // Without registries.d, no signature is found.
    let err = hoist_refused(
        t.path(),
        &["--store", store_s, "pull", tls, "--policy", &good, &signed],
    );
    assert!(
        err.contains("no simple-signing (GPG) signature was found"),
        "{err}"
    );
    let err = hoist_refused(
        t.path(),
        &[
            "--store",
            store_s,
            "pull",
            tls,
            "--policy",
            &other,
            "--registries.d",
            &s("registries.d"),
            &signed,
        ],
    );
    assert!(err.contains("not signed by any trusted key"), "{err}");
    assert_eq!(images_in(t.path(), &store), 0);
    support::assert_fsck_clean(t.path(), &store);
    // $HOIST_REGISTRIES_D works like --registries.d.
    let out = support::hoist(t.path())
        .env("HOIST_REGISTRIES_D", w("registries.d"))
        .args(["--store", store_s, "pull", tls, "--policy", &good, &signed])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(images_in(t.path(), &store), 1);
    let out = hoist_ok(
        t.path(),
        &[
            "verify",
            tls,
            "--policy",
            &good,
            "--registries.d",
            &s("registries.d"),
            "--format",
            "json",
            &format!("docker://{signed}"),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["signatures"][0]["kind"], "simple-signing", "{v}");
    assert_eq!(
        v["requirements"][0]["satisfied_by"][0]["docker_reference"],
        signed.as_str(),
        "{v}"
    );

    // The same store over http://, served by python's http.server on loopback.
    require!(Need::Tool("python3"));
    let port = hoist_testkit::registry::free_port().unwrap();
    let mut http = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(w("sigstore"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::create_dir(w("registries-http.d")).unwrap();
    std::fs::write(
        w("registries-http.d/http.yaml"),
        format!(
            "docker:\n  {}:\n    lookaside: http://127.0.0.1:{port}\n",
            reg.host_port()
        ),
    )
    .unwrap();
    let over_http = |policy: &str, store: &str| {
        support::hoist(t.path())
            .args(["--store", store, "pull", tls, "--policy", policy])
            .args(["--registries.d", &s("registries-http.d"), &signed])
            .output()
            .unwrap()
    };
    let refused = over_http(&other, &s("store-http"));
    let accepted = over_http(&good, &s("store-http"));
    let _ = http.kill();
    let _ = http.wait();
    assert!(up, "python3 -m http.server did not start");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("not signed by any trusted key"),
        "{err}"
    );
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );

    // hoist signs into the lookaside-staging store; skopeo accepts it under the policy.
    let hsig = reg.image_ref("t/hsig:1");
    let out = support::hoist(t.path())
        .env("GNUPGHOME", home.dir.path())
        .args([
            "copy",
            tls,
            "--sign-by",
            &a,
            "--registries.d",
            &s("registries.d"),
        ])
        .arg(format!("docker://{}", reg.image_ref("t/img:1")))
        .arg(format!("docker://{hsig}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let skopeo_under = |policy: &str, out: &str| {
        Command::new("skopeo")
            .args([
                "--policy",
                policy,
                "--registries.d",
                &s("registries.d"),
                "copy",
            ])
            .args(["--src-tls-verify=false", "--remove-signatures"])
            .arg(format!("docker://{hsig}"))
            .arg(format!("oci:{}:x", s(out)))
            .output()
            .unwrap()
    };
    let ok = skopeo_under(&good, "skopeo-ok");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let no = skopeo_under(&other, "skopeo-no");
    assert!(
        !no.status.success(),
        "skopeo accepted hoist's signature under another key"
    );
    // Without a lookaside store for the destination, signing is refused, naming why.
    let out = support::hoist(t.path())
        .env("GNUPGHOME", home.dir.path())
        .args(["copy", tls, "--sign-by", &a])
        .arg(format!("docker://{}", reg.image_ref("t/img:1")))
        .arg(format!("docker://{}", reg.image_ref("t/nosig:1")))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("lookaside"), "{err}");
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{}", reg.image_ref("t/nosig:1")))
        .output()
        .unwrap();
    assert!(
        !inspect.status.success(),
        "the refused signed copy still pushed t/nosig:1"
    );
}

/// `hoist serve --pull-through` under a policy: a refused image is not fetched, not stored,
/// and not served; an accepted one is.
#[test]
fn serve_pull_through_enforces_the_policy() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Tool("curl")
    );
    use std::io::BufRead as _;
    let t = tempfile::tempdir().unwrap();
    let w = |n: &str| -> PathBuf { t.path().join(n) };
    let reg = Registry::plain();
    push_spec(&sample_docker(), &reg, "ns/app:1").unwrap();
    let host = reg.host_port();
    let reject = write_policy(&w("reject.json"), "docker", &host, r#"{"type": "reject"}"#);
    let accept = write_policy(
        &w("accept.json"),
        "docker",
        &host,
        r#"{"type": "insecureAcceptAnything"}"#,
    );
    let store = w("store");
    let store_s = store.to_str().unwrap();
    for (policy, allowed) in [(&reject, false), (&accept, true)] {
        let mut child = support::hoist_std(t.path())
            .args(["--store", store_s, "serve", "--listen", "127.0.0.1:0"])
            .args(["--pull-through", "--registry", &host, "--policy", policy])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .map(str::to_owned);
        let status = addr.as_ref().map(|addr| {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "60",
                ])
                .args([
                    "-H",
                    "Accept: application/vnd.docker.distribution.manifest.v2+json",
                ])
                .arg(format!("http://{addr}/v2/ns/app/manifests/1"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        });
        if allowed && status.as_deref() == Some("200") {
            // The manifest is answered at once and the image pulled behind it (streaming
            // pull-through): wait, bounded, for the pull to commit before stopping.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while images_in(t.path(), &store) == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let status = status.unwrap_or_else(|| panic!("hoist serve did not start: {line:?}"));
        if allowed {
            assert_eq!(status, "200", "an accepted image was not served");
            assert_eq!(images_in(t.path(), &store), 1);
        } else {
            assert_ne!(status, "200", "a refused image was served");
            assert_eq!(images_in(t.path(), &store), 0);
            support::assert_fsck_clean(t.path(), &store);
        }
    }
}

/// cosign's OCI 1.1 mode: the signature is a referrer of the image (`subject`, cosign's
/// `artifactType`), found through the registry's referrers API (served here by the
/// project's fake registry; Distribution 2.8 has no referrers API).
#[test]
fn cosign_signatures_as_oci_referrers_are_enforced() {
    require!(Need::Peer(Peer::Openssl));
    use base64::Engine as _;
    let t = tempfile::tempdir().unwrap();
    let w = |n: &str| -> PathBuf { t.path().join(n) };
    let s = |n: &str| -> String { w(n).display().to_string() };
    let fake = hoist_testkit::FakeRegistry::start();
    let img = sample_docker().build().unwrap();
    fake.push_image("t/img", "1", &img);
    let digest = img.manifest.digest.clone();
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &s("k.pem"),
    ]);
    openssl(&["pkey", "-in", &s("k.pem"), "-pubout", "-out", &s("k.pub")]);
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &s("o.pem"),
    ]);
    openssl(&["pkey", "-in", &s("o.pem"), "-pubout", "-out", &s("o.pub")]);
    let image = fake.image_ref("t/img:1");
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{image}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    std::fs::write(w("payload.json"), &payload).unwrap();
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        &s("k.pem"),
        "-out",
        &s("sig.der"),
        &s("payload.json"),
    ]);
    let signature =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(w("sig.der")).unwrap());
    let sha = |b: &[u8]| hoist_testkit::images::sha256_digest(b);
    let config = b"{}".to_vec();
    fake.put_blob("t/img", &sha(&config), config.clone());
    fake.put_blob(
        "t/img",
        &sha(payload.as_bytes()),
        payload.clone().into_bytes(),
    );
    let artifact = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": sha(payload.as_bytes()),
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": signature},
        }],
        "subject": {"mediaType": img.manifest.media_type, "digest": digest, "size": img.manifest.size},
    })
    .to_string();
    let md = fake.put_manifest(
        "t/img",
        &sha(manifest.as_bytes()),
        "application/vnd.oci.image.manifest.v1+json",
        manifest.clone(),
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md,
            "size": manifest.len(),
            "artifactType": artifact,
        }],
    })
    .to_string();
    fake.set_route(
        &format!("/v2/t/img/referrers/{digest}"),
        hoist_testkit::FakeResponse::ok(index)
            .header("content-type", "application/vnd.oci.image.index.v1+json"),
    );
    let host = fake.host_port();
    let policy = |key: &str, file: &str| {
        write_policy(
            &w(file),
            "docker",
            &host,
            &format!(r#"{{"type": "sigstoreSigned", "keyPath": "{}"}}"#, s(key)),
        )
    };
    let good = policy("k.pub", "good.json");
    let other = policy("o.pub", "other.json");
    let store = w("store");
    let store_s = store.to_str().unwrap();
    let err = hoist_refused(
        t.path(),
        &["--store", store_s, "pull", "--policy", &other, &image],
    );
    assert!(
        err.contains("not signed by any of the 1 trusted public key"),
        "{err}"
    );
    assert_eq!(images_in(t.path(), &store), 0);
    support::assert_fsck_clean(t.path(), &store);
    hoist_ok(
        t.path(),
        &["--store", store_s, "pull", "--policy", &good, &image],
    );
    assert_eq!(images_in(t.path(), &store), 1);
    assert!(fake.hits(&format!("/v2/t/img/referrers/{digest}")) >= 2);
}
