//! hoist-trust against the real signers: `gpg --sign` and `skopeo standalone-sign` /
//! `skopeo copy --sign-by` (simple signing with a throwaway GPG home), and `skopeo copy
//! --sign-by-sigstore-private-key` to the real registry (cosign `.sig` tags), read back with
//! skopeo. Each accepted signature is also refused under a policy naming another key, and
//! for another digest or identity.

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_testkit::{Need, Peer, require};
use hoist_trust::named::Named;
use hoist_trust::payload::{self, PayloadKind};
use hoist_trust::sigstore::PrivateKey;
use hoist_trust::{ImageSignature, Policy, PolicyTarget, evaluate};

/// A throwaway GPG home with one key per name; the agent is killed on drop.
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

    fn run(&self, mut c: Command) -> Vec<u8> {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Generates a key for `email` (gpg's default algorithm); returns its fingerprint.
    fn gen_key(&self, email: &str) -> String {
        let mut c = self.gpg();
        c.args([
            "--quick-gen-key",
            &format!("hoist test <{email}>"),
            "default",
            "default",
            "never",
        ]);
        self.run(c);
        let mut c = self.gpg();
        c.args(["--with-colons", "--list-keys", email]);
        let out = String::from_utf8(self.run(c)).unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_owned())
            .unwrap()
    }

    fn export(&self, fpr: &str, armor: bool, to: &Path) {
        let mut c = self.gpg();
        if armor {
            c.arg("--armor");
        }
        c.args(["--export", fpr]);
        std::fs::write(to, self.run(c)).unwrap();
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

fn policy(json: &str) -> Policy {
    Policy::parse(json.as_bytes()).unwrap()
}

fn docker(r: &str) -> PolicyTarget {
    PolicyTarget::docker("docker", &Named::parse(r).unwrap())
}

fn signed_by(key: &Path, scope: &str) -> Policy {
    policy(&format!(
        r#"{{"default": [{{"type": "reject"}}], "transports": {{"docker": {{"{scope}": [{{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "{}"}}]}}}}}}"#,
        key.display()
    ))
}

fn sigstore_signed(key: &Path, scope: &str) -> Policy {
    policy(&format!(
        r#"{{"default": [{{"type": "reject"}}], "transports": {{"docker": {{"{scope}": [{{"type": "sigstoreSigned", "keyPath": "{}"}}]}}}}}}"#,
        key.display()
    ))
}

fn refusal(p: &Policy, t: &PolicyTarget, manifest: &[u8], sigs: &[ImageSignature]) -> String {
    let e = evaluate(p, t, manifest, sigs);
    assert!(!e.allowed(), "{e:?}");
    e.check("the image").unwrap_err().to_string()
}

#[test]
fn simple_signing_from_gpg_and_skopeo() {
    require!(Need::Tool("gpg"), Need::Peer(Peer::Skopeo));
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| -> PathBuf { work.path().join(n) };
    let home = GpgHome::new();
    let a = home.gen_key("a@example.com");
    let b = home.gen_key("b@example.com");
    home.export(&a, false, &w("a.gpg"));
    home.export(&b, true, &w("b.asc"));

    let manifest =
        br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}"#;
    std::fs::write(w("manifest.json"), manifest).unwrap();
    let image = "127.0.0.1:5000/ns/app:1";

    // 1. skopeo standalone-sign.
    let out = Command::new("skopeo")
        .env("GNUPGHOME", home.dir.path())
        .arg("standalone-sign")
        .arg(w("manifest.json"))
        .args([image, &a, "-o"])
        .arg(w("skopeo.sig"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let skopeo_sig = std::fs::read(w("skopeo.sig")).unwrap();

    // 2. gpg --sign of hoist's payload, by b (an armoured key file).
    let digest = hoist_types::Digest::sha256_of(manifest);
    let p = payload::build(
        PayloadKind::SimpleSigning,
        &digest,
        &Named::parse(image).unwrap(),
        Some(1),
    );
    std::fs::write(w("payload.json"), &p).unwrap();
    let mut c = home.gpg();
    c.args(["--sign", "--local-user", &b, "--output"])
        .arg(w("gpg.sig"))
        .arg(w("payload.json"));
    home.run(c);
    let gpg_sig = std::fs::read(w("gpg.sig")).unwrap();

    let t = docker(image);
    for (sig, good, bad) in [
        (&skopeo_sig, w("a.gpg"), w("b.asc")),
        (&gpg_sig, w("b.asc"), w("a.gpg")),
    ] {
        let sigs = [ImageSignature::SimpleSigning(sig.clone())];
        let e = evaluate(&signed_by(&good, "127.0.0.1:5000/ns"), &t, manifest, &sigs);
        assert!(e.allowed(), "{e:?}");
        assert_eq!(e.requirements[0].satisfied_by[0].docker_reference, image);
        // Another key.
        let msg = refusal(&signed_by(&bad, "127.0.0.1:5000/ns"), &t, manifest, &sigs);
        assert!(msg.contains("not signed by any trusted key"), "{msg}");
        assert!(
            msg.contains("transports.docker.\"127.0.0.1:5000/ns\""),
            "{msg}"
        );
        // Another manifest (digest).
        let msg = refusal(&signed_by(&good, "127.0.0.1:5000"), &t, b"{}", &sigs);
        assert!(msg.contains("signs manifest sha256:"), "{msg}");
        // Another identity (tag, then repository).
        for other in ["127.0.0.1:5000/ns/app:2", "127.0.0.1:5000/ns/other:1"] {
            let msg = refusal(
                &signed_by(&good, "127.0.0.1:5000"),
                &docker(other),
                manifest,
                &sigs,
            );
            assert!(msg.contains("is not accepted for"), "{msg}");
        }
        // Truncated, and one byte flipped in the middle.
        let trunc = [ImageSignature::SimpleSigning(sig[..sig.len() / 2].to_vec())];
        refusal(&signed_by(&good, "127.0.0.1:5000"), &t, manifest, &trunc);
        let mut flipped = sig.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        refusal(
            &signed_by(&good, "127.0.0.1:5000"),
            &t,
            manifest,
            &[ImageSignature::SimpleSigning(flipped)],
        );
        // A key of the wrong type: a cosign public key where an OpenPGP key belongs.
        std::fs::write(w("cosign.pub"), PrivateKey::generate().public_pem()).unwrap();
        let msg = refusal(
            &signed_by(&w("cosign.pub"), "127.0.0.1:5000"),
            &t,
            manifest,
            &sigs,
        );
        assert!(msg.contains("not an OpenPGP key"), "{msg}");
        // No signature at all.
        let msg = refusal(&signed_by(&good, "127.0.0.1:5000"), &t, manifest, &[]);
        assert!(
            msg.contains("no simple-signing (GPG) signature was found"),
            "{msg}"
        );
    }
    // keyPaths (any key of the list) and keyData (the key inline, base64).
    {
        use base64::Engine as _;
        let sigs = [ImageSignature::SimpleSigning(skopeo_sig.clone())];
        let paths = policy(&format!(
            r#"{{"default": [{{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["{}", "{}"]}}]}}"#,
            w("b.asc").display(),
            w("a.gpg").display()
        ));
        assert!(evaluate(&paths, &t, manifest, &sigs).allowed());
        let data =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(w("a.gpg")).unwrap());
        let inline = policy(&format!(
            r#"{{"default": [{{"type": "signedBy", "keyType": "GPGKeys", "keyData": "{data}"}}]}}"#
        ));
        assert!(evaluate(&inline, &t, manifest, &sigs).allowed());
        let only_b = policy(&format!(
            r#"{{"default": [{{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["{}"]}}]}}"#,
            w("b.asc").display()
        ));
        assert!(!evaluate(&only_b, &t, manifest, &sigs).allowed());
        // Two requirements: both must hold.
        let both = policy(&format!(
            r#"{{"default": [{{"type": "signedBy", "keyType": "GPGKeys", "keyData": "{data}"}}, {{"type": "reject"}}]}}"#
        ));
        let e = evaluate(&both, &t, manifest, &sigs);
        assert!(!e.allowed() && e.requirements[0].satisfied, "{e:?}");
    }
    // Oversized signature.
    let big = [ImageSignature::SimpleSigning(vec![
        0x90;
        hoist_trust::gpg::MAX_SIGNATURE_SIZE
            + 1
    ])];
    let msg = refusal(
        &signed_by(&w("a.gpg"), "127.0.0.1:5000"),
        &t,
        manifest,
        &big,
    );
    assert!(msg.contains("larger than"), "{msg}");
    // An oversized payload, validly signed, is refused before parsing.
    std::fs::write(w("big.json"), vec![b' '; payload::MAX_PAYLOAD_SIZE + 10]).unwrap();
    let mut c = home.gpg();
    c.args(["--sign", "--local-user", &a, "--output"])
        .arg(w("big.sig"))
        .arg(w("big.json"));
    home.run(c);
    let big = [ImageSignature::SimpleSigning(
        std::fs::read(w("big.sig")).unwrap(),
    )];
    let msg = refusal(
        &signed_by(&w("a.gpg"), "127.0.0.1:5000"),
        &t,
        manifest,
        &big,
    );
    assert!(msg.contains("payload is larger than"), "{msg}");
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Debian's skopeo 1.9 is built without sigstore signing ("Debian-local change: sigstore
/// disabled"), so the independent signer here is openssl: a P-256 key and an ASN.1 DER
/// ECDSA-SHA256 signature over a payload written as cosign writes it, the very format of a
/// `.sig` layer and its `dev.cosignproject.cosign/signature` annotation. Both ways: openssl
/// signs and hoist verifies, hoist signs and openssl verifies.
#[test]
fn sigstore_signatures_made_by_openssl() {
    require!(Need::Peer(Peer::Openssl));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| -> String { work.path().join(n).display().to_string() };
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &w("k.pem"),
    ]);
    openssl(&["pkey", "-in", &w("k.pem"), "-pubout", "-out", &w("k.pub")]);
    openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
        "-out",
        &w("p384.pem"),
    ]);
    openssl(&[
        "pkey",
        "-in",
        &w("p384.pem"),
        "-pubout",
        "-out",
        &w("p384.pub"),
    ]);
    std::fs::write(w("other.pub"), PrivateKey::generate().public_pem()).unwrap();

    let manifest = br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}"#;
    let digest = hoist_types::Digest::sha256_of(manifest);
    let repo = "127.0.0.1:5000/ns/app";
    // cosign's own shape: sorted keys, a repository without tag, "optional": null.
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{repo}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    std::fs::write(w("payload.json"), &payload).unwrap();
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        &w("k.pem"),
        "-out",
        &w("sig.der"),
        &w("payload.json"),
    ]);
    let signature = b64.encode(std::fs::read(w("sig.der")).unwrap());
    let sigs = [ImageSignature::Cosign {
        payload: payload.clone().into_bytes(),
        signature: signature.clone(),
    }];
    let key = PathBuf::from(w("k.pub"));
    let by_repo = |key: &str| {
        policy(&format!(
            r#"{{"default": [{{"type": "reject"}}], "transports": {{"docker": {{"127.0.0.1:5000": [{{"type": "sigstoreSigned", "keyPath": "{key}", "signedIdentity": {{"type": "matchRepository"}}}}]}}}}}}"#
        ))
    };
    let tagged = docker(&format!("{repo}:1"));
    let by_digest = docker(&format!("{repo}@{digest}"));

    let e = evaluate(&by_repo(&w("k.pub")), &tagged, manifest, &sigs);
    assert!(e.allowed(), "{e:?}");
    // The default identity rule accepts a repository-only claim for a digest reference,
    // and (like containers/image) not for a tag.
    let e = evaluate(
        &sigstore_signed(&key, "127.0.0.1:5000"),
        &by_digest,
        manifest,
        &sigs,
    );
    assert!(e.allowed(), "{e:?}");
    let msg = refusal(
        &sigstore_signed(&key, "127.0.0.1:5000"),
        &tagged,
        manifest,
        &sigs,
    );
    assert!(msg.contains("matchRepoDigestOrExact"), "{msg}");
    // Another key; a key of the wrong type (P-384; an OpenPGP-shaped file).
    let msg = refusal(&by_repo(&w("other.pub")), &tagged, manifest, &sigs);
    assert!(
        msg.contains("not signed by any of the 1 trusted public key"),
        "{msg}"
    );
    let msg = refusal(&by_repo(&w("p384.pub")), &tagged, manifest, &sigs);
    assert!(msg.contains("not an ECDSA P-256 public key"), "{msg}");
    // Another digest; another repository.
    let msg = refusal(&by_repo(&w("k.pub")), &tagged, b"{}", &sigs);
    assert!(msg.contains("signs manifest"), "{msg}");
    let msg = refusal(
        &by_repo(&w("k.pub")),
        &docker("127.0.0.1:5000/ns/other:1"),
        manifest,
        &sigs,
    );
    assert!(msg.contains("is not accepted"), "{msg}");
    // Garbage payload, garbage signature, truncated payload, oversized payload: each refused.
    let garbage = [
        ImageSignature::Cosign {
            payload: b"garbage".to_vec(),
            signature: signature.clone(),
        },
        ImageSignature::Cosign {
            payload: payload.clone().into_bytes(),
            signature: "garbage".into(),
        },
        ImageSignature::Cosign {
            payload: payload.as_bytes()[..payload.len() - 1].to_vec(),
            signature: signature.clone(),
        },
    ];
    let msg = refusal(&by_repo(&w("k.pub")), &tagged, manifest, &garbage);
    for i in 1..=3 {
        assert!(msg.contains(&format!("signature {i}:")), "{msg}");
    }
    let big = format!("{}{}", payload, " ".repeat(payload::MAX_PAYLOAD_SIZE));
    std::fs::write(w("big.json"), &big).unwrap();
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        &w("k.pem"),
        "-out",
        &w("big.der"),
        &w("big.json"),
    ]);
    let big_sig = [ImageSignature::Cosign {
        payload: big.into_bytes(),
        signature: b64.encode(std::fs::read(w("big.der")).unwrap()),
    }];
    let msg = refusal(&by_repo(&w("k.pub")), &tagged, manifest, &big_sig);
    assert!(msg.contains("larger than"), "{msg}");

    // hoist signs, openssl verifies; and hoist's encrypted key reads back.
    let mine = PrivateKey::generate();
    let pem = mine.to_encrypted_pem(b"pw");
    let mine = PrivateKey::from_encrypted_pem(&pem, b"pw").unwrap();
    std::fs::write(w("mine.pub"), mine.public_pem()).unwrap();
    std::fs::write(
        w("mine.sig"),
        b64.decode(mine.sign(payload.as_bytes())).unwrap(),
    )
    .unwrap();
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &w("mine.pub"),
        "-signature",
        &w("mine.sig"),
        &w("payload.json"),
    ]);
    assert!(String::from_utf8_lossy(&out).contains("Verified OK"));
}

/// A signature that verifies is still refused when its key has expired (made with gpg's
/// --faked-system-time in 2020, valid for a day) or has been revoked (gpg's own revocation
/// certificate imported), as gpg judges them.
#[test]
fn expired_and_revoked_keys_are_refused() {
    require!(Need::Tool("gpg"));
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| -> PathBuf { work.path().join(n) };
    let home = GpgHome::new();
    let image = "127.0.0.1:5000/ns/app:1";
    let manifest = br#"{"schemaVersion": 2}"#;
    let digest = hoist_types::Digest::sha256_of(manifest);
    let p = payload::build(
        PayloadKind::SimpleSigning,
        &digest,
        &Named::parse(image).unwrap(),
        Some(1),
    );
    std::fs::write(w("payload.json"), &p).unwrap();
    let t = docker(image);
    let sign = |fpr: &str, out: &str, faked: Option<&str>| {
        let mut c = home.gpg();
        if let Some(f) = faked {
            c.args(["--faked-system-time", f]);
        }
        c.args(["--sign", "--local-user", fpr, "--output"])
            .arg(w(out))
            .arg(w("payload.json"));
        home.run(c);
        [ImageSignature::SimpleSigning(
            std::fs::read(w(out)).unwrap(),
        )]
    };

    // Expired.
    let mut c = home.gpg();
    c.args(["--faked-system-time", "20200101T000000", "--quick-gen-key"])
        .args(["old <old@example.com>", "default", "default", "1d"]);
    home.run(c);
    let old = {
        let mut c = home.gpg();
        c.args(["--with-colons", "--list-keys", "old@example.com"]);
        let out = String::from_utf8(home.run(c)).unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_owned())
            .unwrap()
    };
    home.export(&old, false, &w("old.gpg"));
    let sigs = sign(&old, "old.sig", Some("20200101T010000"));
    let msg = refusal(
        &signed_by(&w("old.gpg"), "127.0.0.1:5000"),
        &t,
        manifest,
        &sigs,
    );
    assert!(msg.contains("expired"), "{msg}");

    // Revoked: a good signature first, then the key's revocation certificate imported.
    let r = home.gen_key("r@example.com");
    home.export(&r, false, &w("r.gpg"));
    let sigs = sign(&r, "r.sig", None);
    let e = evaluate(
        &signed_by(&w("r.gpg"), "127.0.0.1:5000"),
        &t,
        manifest,
        &sigs,
    );
    assert!(e.allowed(), "{e:?}");
    let cert = std::fs::read_to_string(home.dir.path().join(format!("openpgp-revocs.d/{r}.rev")))
        .unwrap()
        .replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
    std::fs::write(w("r.rev"), cert).unwrap();
    let mut c = home.gpg();
    c.arg("--import").arg(w("r.rev"));
    home.run(c);
    home.export(&r, false, &w("r-revoked.gpg"));
    let msg = refusal(
        &signed_by(&w("r-revoked.gpg"), "127.0.0.1:5000"),
        &t,
        manifest,
        &sigs,
    );
    assert!(msg.contains("revoked"), "{msg}");
}
