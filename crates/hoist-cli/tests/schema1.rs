//! Docker schema 1 manifests, signed and unsigned: read, verified, converted to schema 2
//! with a synthesised config, and stored. Served by the testkit's fake registry, since
//! Distribution 2.8 no longer accepts schema 1 pushes.

mod support;

use assert_cmd::Command;
use base64::Engine as _;
use hoist_testkit::FakeRegistry;
use hoist_testkit::images::{self, Entry, ImageSpec, LayerSpec};
use serde_json::{Value, json};

const EMPTY_GZIP_LAYER: &str =
    "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";

/// `hoist` in the sandbox of `tests/support` whose `HOME` is `home` (`DIR/home`).
fn hoist(store: &std::path::Path, home: &std::path::Path) -> Command {
    let dir = home.parent().unwrap();
    assert_eq!(support::home(dir), home, "home must be DIR/home");
    let mut c = support::hoist(dir);
    c.env("HOIST_STORE", store)
        .timeout(std::time::Duration::from_secs(60));
    c
}

/// An unsigned schema 1 manifest for two content layers plus an empty (throwaway)
/// top layer, in schema 1's top-first order.
fn schema1_doc(l1: &str, l2: &str) -> String {
    let v1 = |id: &str, parent: Option<&str>, extra: Value| {
        // v1 image IDs are 64 hex digits (skopeo refuses anything else).
        let mut o = json!({"id": id.repeat(64), "created": "2020-01-01T00:00:00Z"});
        if let Some(p) = parent {
            o["parent"] = json!(p.repeat(64));
        }
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        json!({ "v1Compatibility": o.to_string() })
    };
    let doc = json!({
        "schemaVersion": 1,
        "name": "old/app",
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [
            {"blobSum": EMPTY_GZIP_LAYER},
            {"blobSum": l2},
            {"blobSum": l1},
        ],
        "history": [
            v1("c", Some("b"), json!({
                "throwaway": true,
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["PATH=/usr/bin", "OLD=1"], "Cmd": ["/bin/app"]},
                "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"/bin/app\"]"]}
            })),
            v1("b", Some("a"), json!({"container_config": {"Cmd": ["/bin/sh", "-c", "echo app > /app"]}})),
            v1("a", None, json!({})),
        ]
    });
    serde_json::to_string_pretty(&doc).unwrap()
}

/// Sign the way libtrust lays it out: the `signatures` block spliced in before the final
/// closing brace, with `formatLength`/`formatTail` in the protected header.
fn sign(doc: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let cut = doc.rfind('\n').unwrap();
    let tail = &doc[cut..];
    let prot = json!({"formatLength": cut, "formatTail": b64.encode(tail), "time": "2020-01-01T00:00:00Z"});
    format!(
        "{},\n   \"signatures\": [{{\"header\": {{\"alg\": \"ES256\"}}, \"signature\": \"c2ln\", \"protected\": \"{}\"}}]{}",
        &doc[..cut],
        b64.encode(prot.to_string()),
        tail
    )
}

#[test]
fn schema1_signed_and_unsigned_are_converted_and_stored() {
    let built = ImageSpec::docker()
        .layer(LayerSpec::gzip([Entry::file("etc/os", b"old\n".to_vec())]))
        .layer(LayerSpec::gzip([Entry::file("app", b"app\n".to_vec())]))
        .build()
        .unwrap();
    let (l1, l2) = (&built.layers[0], &built.layers[1]);
    let fake = FakeRegistry::start();
    for l in &built.layers {
        fake.put_blob(
            "old/app",
            &l.blob.digest,
            built.blob(&l.blob.digest).unwrap().to_vec(),
        );
    }
    let unsigned = schema1_doc(&l1.blob.digest, &l2.blob.digest);
    let signed = sign(&unsigned);
    let payload_digest = images::sha256_digest(unsigned.as_bytes());
    fake.put_manifest(
        "old/app",
        "unsigned",
        "application/vnd.docker.distribution.manifest.v1+json",
        unsigned.as_bytes().to_vec(),
    );
    // A real registry sends the payload digest for signed schema 1; the fake would send
    // the digest of the whole document, so it stays silent here.
    fake.send_content_digest(false);
    fake.put_manifest(
        "old/app",
        "signed",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        signed.as_bytes().to_vec(),
    );

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut ids = Vec::new();
    for tag in ["unsigned", "signed"] {
        let out = hoist(&store, &home)
            .args(["-q", "pull", &fake.image_ref(&format!("old/app:{tag}"))])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    // Both convert to the same config: the signature is not part of the image.
    assert_eq!(ids[0], ids[1]);
    // Pulling the signed one by its payload digest verifies.
    let by_digest = fake.image_ref(&format!("old/app@{payload_digest}"));
    fake.put_manifest(
        "old/app",
        &payload_digest,
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        signed.as_bytes().to_vec(),
    );
    let out = hoist(&store, &home)
        .args(["-q", "pull", &by_digest])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A tampered signed manifest fails the by-digest check.
    let tampered = signed.replace("echo app", "echo bad");
    fake.put_manifest(
        "old/app",
        &payload_digest,
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        tampered.into_bytes(),
    );
    let fresh = dir.path().join("store2");
    let out = hoist(&fresh, &home)
        .args(["-q", "pull", &by_digest])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("digest mismatch"));

    // The stored image: schema 2 manifest, layers bottom first, diff IDs computed,
    // history with the empty layer marked, run config from the top v1 entry.
    let out = hoist(&store, &home)
        .args(["inspect", &ids[0]])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Layers"], json!([l1.blob.digest, l2.blob.digest]));
    assert_eq!(info["DiffIDs"], json!([l1.diff_id, l2.diff_id]));
    assert_eq!(info["Env"], json!(["PATH=/usr/bin", "OLD=1"]));
    assert_eq!(info["Architecture"], "amd64");
    let cfg = hoist(&store, &home)
        .args(["inspect", "--config", &ids[0]])
        .output()
        .unwrap();
    let cfg: Value = serde_json::from_slice(&cfg.stdout).unwrap();
    let history = cfg["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2]["empty_layer"], true);
    assert_eq!(history[1]["created_by"], "/bin/sh -c echo app > /app");
    // The empty layer was never fetched.
    assert_eq!(
        fake.hits(&format!("/v2/old/app/blobs/{EMPTY_GZIP_LAYER}")),
        0
    );
    let raw = hoist(&store, &home)
        .args(["inspect", "--raw", &ids[0]])
        .output()
        .unwrap();
    let raw: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    // Conversion is the copy engine's (pull is that engine into the store): a copy from
    // the registry into an OCI layout converts too, to the same config (the image ID),
    // written as OCI (the layout's default format), the same diff IDs.
    let layout = dir.path().join("layout");
    let out = hoist(&store, &home)
        .args([
            "-q",
            "copy",
            &format!("docker://{}", fake.image_ref("old/app:signed")),
            &format!("oci:{}:app", layout.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read_json = |p: std::path::PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    };
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    };
    let index = read_json(layout.join("index.json"));
    let m = read_json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    assert_eq!(m["config"]["digest"], json!(ids[0]));
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let cfg = read_json(blob(&ids[0]));
    assert_eq!(cfg["rootfs"]["diff_ids"], json!([l1.diff_id, l2.diff_id]));
}

/// Sets up a fake registry serving `old/app:unsigned` and `old/app:signed` (schema 1, two
/// content layers), and the layer blobs.
fn schema1_registry() -> (FakeRegistry, String, String) {
    let built = ImageSpec::docker()
        .layer(LayerSpec::gzip([Entry::file("etc/os", b"old\n".to_vec())]))
        .layer(LayerSpec::gzip([Entry::file("app", b"app\n".to_vec())]))
        .build()
        .unwrap();
    let fake = FakeRegistry::start();
    for l in &built.layers {
        fake.put_blob(
            "old/app",
            &l.blob.digest,
            built.blob(&l.blob.digest).unwrap().to_vec(),
        );
    }
    let unsigned = schema1_doc(&built.layers[0].blob.digest, &built.layers[1].blob.digest);
    let signed = sign(&unsigned);
    // A real registry sends the payload digest for signed schema 1; the fake would send
    // the digest of the whole document, so it stays silent.
    fake.send_content_digest(false);
    fake.put_manifest(
        "old/app",
        "unsigned",
        "application/vnd.docker.distribution.manifest.v1+json",
        unsigned.as_bytes().to_vec(),
    );
    fake.put_manifest(
        "old/app",
        "signed",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        signed.as_bytes().to_vec(),
    );
    (fake, unsigned, signed)
}

/// `hoist inspect --raw docker://REF` prints exactly the bytes served, whatever they are
/// (an index, a manifest whose blobs are absent, schema 1 signed and unsigned, an unknown
/// media type), and asks for nothing but the manifest (after the `/v2/` ping).
#[test]
fn inspect_raw_prints_the_bytes_served_and_fetches_nothing_else() {
    let (fake, unsigned, signed) = schema1_registry();
    let absent = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
    // Indented and with a trailing newline: any re-serialisation would show.
    let index = serde_json::to_string_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": images::OCI_INDEX,
        "manifests": [
            {"mediaType": images::OCI_MANIFEST, "digest": absent(1), "size": 100,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": images::OCI_MANIFEST, "digest": absent(2), "size": 100,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }))
    .unwrap()
        + "\n";
    let manifest = serde_json::to_string_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": images::OCI_MANIFEST,
        "config": {"mediaType": images::OCI_CONFIG, "digest": absent(3), "size": 10},
        "layers": [{"mediaType": images::OCI_LAYER_GZIP, "digest": absent(4), "size": 20}],
    }))
    .unwrap();
    let unknown = "{\"kind\": \"not a manifest\", \"n\": [1, 2, 3]}".to_string();
    let index_digest = fake.put_manifest("raw/app", "index", images::OCI_INDEX, index.clone());
    fake.put_manifest("raw/app", "image", images::OCI_MANIFEST, manifest.clone());
    fake.put_manifest(
        "raw/app",
        "unknown",
        "application/vnd.example.thing+json",
        unknown.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let home = support::home(dir.path());
    let cases: Vec<(String, &String)> = vec![
        ("raw/app:index".into(), &index),
        (format!("raw/app@{index_digest}"), &index),
        ("raw/app:image".into(), &manifest),
        ("raw/app:unknown".into(), &unknown),
        ("old/app:unsigned".into(), &unsigned),
        ("old/app:signed".into(), &signed),
    ];
    for (r, want) in cases {
        let before = fake.requests().len();
        let out = hoist(&store, &home)
            .args([
                "inspect",
                "--raw",
                &format!("docker://{}", fake.image_ref(&r)),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{r}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want.as_str(),
            "{r}: not the bytes served"
        );
        let (repo, reference) = r.split_once([':', '@']).unwrap();
        let manifest_path = format!("/v2/{repo}/manifests/{reference}");
        let asked: Vec<String> = fake.requests()[before..]
            .iter()
            .map(|q| format!("{} {}", q.method, q.path))
            .collect();
        assert!(
            asked
                .iter()
                .all(|a| a == "GET /v2/" || *a == format!("GET {manifest_path}")),
            "{r}: asked for more than the manifest: {asked:?}"
        );
        assert_eq!(
            asked
                .iter()
                .filter(|a| **a == format!("GET {manifest_path}"))
                .count(),
            1,
            "{r}: {asked:?}"
        );
    }
}

/// Plain `hoist inspect` of a schema 1 image gives what `skopeo inspect` gives.
#[test]
fn inspect_of_schema1_matches_skopeo() {
    hoist_testkit::require_peers!(Peer::Skopeo);
    let (fake, _, _) = schema1_registry();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let home = support::home(dir.path());
    for tag in ["unsigned", "signed"] {
        let r = format!("docker://{}", fake.image_ref(&format!("old/app:{tag}")));
        let out = hoist(&store, &home)
            .args(["inspect", "--no-tags", &r])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
        let theirs: Value = serde_json::from_slice(
            &hoist_testkit::skopeo::run_skopeo(&[
                "inspect".into(),
                "--no-tags".into(),
                "--tls-verify=false".into(),
                r.clone(),
            ])
            .unwrap(),
        )
        .unwrap();
        for k in [
            "Name",
            "Tag",
            "Digest",
            "Created",
            "DockerVersion",
            "Labels",
            "Architecture",
            "Os",
            "Layers",
            "LayersData",
            "Env",
        ] {
            assert_eq!(
                ours[k], theirs[k],
                "{tag}: {k}\nhoist: {ours}\nskopeo: {theirs}"
            );
        }
        assert_eq!(ours["Layers"].as_array().unwrap().len(), 3, "{ours}");
        assert_eq!(ours["Tag"], "v1", "{ours}");
    }
}

/// A schema 1 manifest whose signature block is malformed: `hoist inspect` and `hoist
/// pull` say what is wrong with it.
#[test]
fn malformed_schema1_signature_block_is_named() {
    let (fake, _, signed) = schema1_registry();
    let start = signed.find("\"protected\": \"").unwrap() + 14;
    let end = start + signed[start..].find('"').unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let cases = [
        (
            "past-the-end",
            format!(
                "{}{}{}",
                &signed[..start],
                b64.encode(r#"{"formatLength":999999,"formatTail":"Cn0"}"#),
                &signed[end..]
            ),
            "formatLength",
        ),
        (
            "not-base64",
            format!("{}!!{}", &signed[..start], &signed[start..]),
            "protected header is not base64url",
        ),
        (
            "no-protected",
            signed.replace("\"protected\"", "\"unprotected\""),
            "signature without `protected` header",
        ),
        (
            "empty",
            {
                let at = signed.find(",\n   \"signatures\"").unwrap();
                format!("{},\n   \"signatures\": []\n}}", &signed[..at])
            },
            "`signatures`",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let home = support::home(dir.path());
    for (tag, doc, needle) in &cases {
        fake.put_manifest(
            "old/app",
            tag,
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            doc.clone(),
        );
        let r = fake.image_ref(&format!("old/app:{tag}"));
        for args in [
            vec!["inspect".to_string(), format!("docker://{r}")],
            vec!["pull".to_string(), r.clone()],
        ] {
            let out = hoist(&store, &home).args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{tag} {args:?} succeeded");
            assert!(
                stderr.contains("schema 1") && stderr.contains(needle) && stderr.contains(&r),
                "{tag} {args:?}: the error should name the signature block ({needle:?}):\n{stderr}"
            );
            assert!(!stderr.contains("--raw"), "{stderr}");
        }
        // --raw still prints what is served.
        let out = hoist(&store, &home)
            .args(["inspect", "--raw", &format!("docker://{r}")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), doc.as_str(), "{tag}");
    }
}
