//! `hoist pull` against bad input, end to end: every case fails with a clear message
//! (non-zero exit, stderr naming the digest, URL or limit) and leaves the store as it was.
//!
//! Each test first pulls a good image from a [`FakeRegistry`] into a fresh store, so that
//! "unchanged" means something, then runs the bad pull and compares:
//! - every file of the store (path, size and SHA-256), except `hoist/locks/` (lock files are
//!   created on demand and are not content);
//! - `hoist images --format json`;
//! - `hoist fsck`, which must exit 0 (no orphan blob: `support::assert_fsck_clean`);
//! - `hoist/ingest/`, which must hold nothing but resumable partial downloads
//!   (`partial-<alg>-<hex>` and its `.meta`, kept on purpose so that the next pull resumes;
//!   they are not blobs and no image refers to them).
//!
//! The bad images share every blob with the good one except the one that is wrong (and their
//! config), so a pull that stored anything before failing would show up. The child runs with
//! `HOME`, `DOCKER_CONFIG`, `XDG_RUNTIME_DIR`, `XDG_CONFIG_HOME` and `REGISTRY_AUTH_FILE` in a
//! temporary directory, so the host's credentials are never read.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use hoist_testkit::fake::{FakeRegistry, FakeResponse, Framing};
use hoist_testkit::images::{
    self, BuiltImage, Entry, ImageSpec, LayerSpec, OCI_INDEX, OCI_MANIFEST, sha256_digest,
};
use hoist_testkit::registry::{self, BASIC_USER, Registry};
use hoist_testkit::require_peers;
use hoist_testkit::skopeo::{self, SkopeoOpts};

/// The repository of the good image on the fake registry.
const GOOD_REPO: &str = "good/app";

fn layer_base() -> LayerSpec {
    LayerSpec::gzip([
        Entry::dir("etc"),
        Entry::file("etc/os-release", "ID=bad-input\n"),
        Entry::file("etc/hostname", "good\n"),
    ])
}

fn layer_good() -> LayerSpec {
    LayerSpec::gzip([
        Entry::dir("srv"),
        Entry::random_file("srv/good.bin", 128 * 1024, 11),
    ])
}

/// The layer only the bad images have: the one that arrives broken.
fn layer_new() -> LayerSpec {
    LayerSpec::gzip([
        Entry::dir("srv"),
        Entry::random_file("srv/new.bin", 256 * 1024, 12),
    ])
}

fn good_image() -> BuiltImage {
    ImageSpec::oci()
        .layer(layer_base())
        .layer(layer_good())
        .cmd(["/bin/true"])
        .build()
        .unwrap()
}

/// Shares the base layer (already in the store after the good pull); its second layer is new.
fn bad_image() -> BuiltImage {
    ImageSpec::oci()
        .layer(layer_base())
        .layer(layer_new())
        .cmd(["/bin/false"])
        .build()
        .unwrap()
}

/// A fresh store, a private home for the child, and a fake registry holding the good image,
/// pulled once into the store.
struct Env {
    dir: tempfile::TempDir,
    store: PathBuf,
    fake: FakeRegistry,
    good: BuiltImage,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let fake = FakeRegistry::start();
        let good = good_image();
        fake.push_image(GOOD_REPO, "v1", &good);
        let env = Env {
            dir,
            store,
            fake,
            good,
        };
        let out = env.hoist(&["pull", &env.fake.image_ref("good/app:v1")]);
        assert!(
            out.status.success(),
            "the good pull failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            env.good.config.digest,
            "the good pull prints the image ID"
        );
        env
    }

    /// `hoist --store STORE --progress plain ARGS...`, in the sandbox of `tests/support`.
    fn hoist(&self, args: &[&str]) -> Output {
        support::hoist(self.dir.path())
            .arg("--store")
            .arg(&self.store)
            .args(["--progress", "plain"])
            .args(args)
            .output()
            .unwrap()
    }

    fn snapshot(&self) -> Snapshot {
        let out = self.hoist(&["images", "--format", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let images: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Snapshot {
            files: store_files(&self.store),
            images,
        }
    }

    /// Runs a `hoist` command that must fail, and checks the store did not change.
    /// Returns stderr.
    fn fails_cleanly(&self, args: &[&str]) -> String {
        let before = self.snapshot();
        let out = self.hoist(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // Shown with --nocapture, and for a failing test.
        eprintln!("$ hoist {}\n{stderr}", args.join(" "));
        assert!(
            !out.status.success(),
            "hoist {args:?} succeeded; stderr:\n{stderr}"
        );
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("hoist: error: "),
            "no error line in:\n{stderr}"
        );
        assert_no_repeated_cause(&stderr);
        assert!(
            out.stdout.is_empty(),
            "a failed pull printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        let after = self.snapshot();
        assert_unchanged(&before, &after, &stderr);
        // fsck exits 0, and `hoist/ingest/` holds nothing but resumable partials.
        support::assert_fsck_clean(self.dir.path(), &self.store);
        stderr
    }

    /// `fails_cleanly` for `hoist pull REF` on the fake registry.
    fn pull_fails(&self, repo_and_ref: &str) -> String {
        self.fails_cleanly(&["pull", &self.fake.image_ref(repo_and_ref)])
    }

    fn blob_path(&self, repo: &str, digest: &str) -> String {
        format!("/v2/{repo}/blobs/{digest}")
    }
}

#[derive(Debug)]
struct Snapshot {
    /// Relative path → (size, sha256 of the content).
    files: BTreeMap<String, (u64, String)>,
    images: serde_json::Value,
}

fn store_files(root: &Path) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == "hoist/locks" || rel.starts_with("hoist/locks/") {
                continue;
            }
            // Resumable partial downloads are kept on purpose (see the module docs).
            if rel.starts_with("hoist/ingest/partial-") {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(format!("{rel}/"), (0, String::new()));
                stack.push(path);
            } else {
                let bytes = fs::read(&path).unwrap();
                out.insert(rel, (bytes.len() as u64, sha256_digest(&bytes)));
            }
        }
    }
    out
}

fn assert_unchanged(before: &Snapshot, after: &Snapshot, stderr: &str) {
    let added: Vec<_> = after
        .files
        .keys()
        .filter(|k| !before.files.contains_key(*k))
        .collect();
    let removed: Vec<_> = before
        .files
        .keys()
        .filter(|k| !after.files.contains_key(*k))
        .collect();
    let changed: Vec<_> = before
        .files
        .iter()
        .filter(|(k, v)| after.files.get(*k).is_some_and(|a| a != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        added.is_empty() && removed.is_empty() && changed.is_empty(),
        "the store changed: added {added:?}, removed {removed:?}, changed {changed:?}; hoist said:\n{stderr}"
    );
    assert_eq!(before.images, after.images, "`hoist images` changed");
    assert!(
        before.files.keys().any(|k| k.starts_with("blobs/sha256/")),
        "the baseline store holds blobs"
    );
}

/// The error line prints each cause once: split at `: `, no run of segments is followed
/// by the same run again (a message that repeats its source would print
/// `context: cause: cause`).
fn assert_no_repeated_cause(stderr: &str) {
    for line in stderr.lines().filter(|l| l.starts_with("hoist: error: ")) {
        let parts: Vec<&str> = line.split(": ").collect();
        for k in 1..=parts.len() / 2 {
            for i in 0..=parts.len() - 2 * k {
                assert!(
                    parts[i..i + k] != parts[i + k..i + 2 * k],
                    "a cause is printed twice in:\n{line}"
                );
            }
        }
    }
}

#[test]
fn the_repeated_cause_check_can_fail() {
    assert_no_repeated_cause("hoist: error: pulling a: reading /x: disk on fire: read /y");
    for twice in [
        "hoist: error: reading /x: disk on fire: disk on fire",
        "hoist: error: layer 1: entry \"a\": bad: entry \"a\": bad",
    ] {
        let caught = std::panic::catch_unwind(|| assert_no_repeated_cause(twice));
        assert!(caught.is_err(), "not caught: {twice}");
    }
}

fn assert_mentions(stderr: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            stderr.contains(n),
            "stderr does not mention {n:?}:\n{stderr}"
        );
    }
}

/// Rewrites an image: `edit` changes the manifest and config JSON; the config is re-serialised
/// and its descriptor in the manifest updated. Returns (manifest bytes, config digest, config
/// bytes).
fn doctored(
    img: &BuiltImage,
    edit: impl FnOnce(&mut serde_json::Value, &mut serde_json::Value),
) -> (Vec<u8>, String, Vec<u8>) {
    let mut manifest: serde_json::Value = serde_json::from_slice(&img.manifest_bytes).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&img.config_bytes).unwrap();
    edit(&mut manifest, &mut config);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = sha256_digest(&config_bytes);
    manifest["config"]["digest"] = config_digest.clone().into();
    manifest["config"]["size"] = config_bytes.len().into();
    (
        serde_json::to_vec(&manifest).unwrap(),
        config_digest,
        config_bytes,
    )
}

/// Loads `img` under `repo:tag`; returns the digest of its new layer (the one to break).
fn push_with_bad_layer(fake: &FakeRegistry, repo: &str, tag: &str, img: &BuiltImage) -> String {
    fake.push_image(repo, tag, img);
    img.layers[1].blob.digest.clone()
}

#[test]
fn wrong_blob_digest() {
    let env = Env::new();
    let img = bad_image();
    let layer = push_with_bad_layer(&env.fake, "bad/digest", "v1", &img);
    // Same length, other bytes: only the digest check can catch it.
    let size = img.layers[1].blob.size as usize;
    env.fake
        .put_blob("bad/digest", &layer, images::seeded_bytes(size, 99));
    let stderr = env.pull_fails("bad/digest:v1");
    assert_mentions(
        &stderr,
        &[
            "digest mismatch",
            &layer,
            &format!("{}{}", env.fake.url(), env.blob_path("bad/digest", &layer)),
        ],
    );
    assert_eq!(env.fake.hits(&env.blob_path("bad/digest", &layer)), 1);
}

#[test]
fn truncated_blob_with_a_short_content_length() {
    let env = Env::new();
    let img = bad_image();
    let layer = push_with_bad_layer(&env.fake, "bad/short", "v1", &img);
    let full = img.blob(&layer).unwrap();
    let half = full[..full.len() / 2].to_vec();
    env.fake.put_blob("bad/short", &layer, half.clone());
    let stderr = env.pull_fails("bad/short:v1");
    assert_mentions(
        &stderr,
        &[
            &layer,
            &env.fake.url(),
            &format!("expected {} bytes", full.len()),
            &half.len().to_string(),
        ],
    );
}

#[test]
fn truncated_blob_with_a_content_length_that_promises_more() {
    let env = Env::new();
    let img = bad_image();
    let layer = push_with_bad_layer(&env.fake, "bad/cut", "v1", &img);
    let full = img.blob(&layer).unwrap();
    let path = env.blob_path("bad/cut", &layer);
    env.fake.set_route(
        &path,
        FakeResponse::ok(full[..full.len() / 2].to_vec())
            .header("Content-Type", "application/octet-stream")
            .framing(Framing::DeclaredLength(full.len() as u64)),
    );
    let stderr = env.pull_fails("bad/cut:v1");
    // The URL names the blob; the message says the body broke off.
    assert_mentions(&stderr, &[&format!("{}{path}", env.fake.url()), "body"]);
}

#[test]
fn truncated_blob_chunked_without_content_length() {
    let env = Env::new();
    let img = bad_image();
    let layer = push_with_bad_layer(&env.fake, "bad/chunked", "v1", &img);
    let full = img.blob(&layer).unwrap();
    let path = env.blob_path("bad/chunked", &layer);
    // A well-formed chunked body that simply ends early: only the size check can catch it.
    env.fake.set_route(
        &path,
        FakeResponse::ok(full[..full.len() - 1000].to_vec()).chunked(),
    );
    let stderr = env.pull_fails("bad/chunked:v1");
    assert_mentions(
        &stderr,
        &[
            &format!("{}{path}", env.fake.url()),
            "size mismatch",
            &format!("expected {} bytes", full.len()),
        ],
    );
}

fn huge_manifest() -> Vec<u8> {
    let img = bad_image();
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest_bytes).unwrap();
    m["annotations"] = serde_json::json!({ "padding": "x".repeat(4 * 1024 * 1024) });
    let bytes = serde_json::to_vec(&m).unwrap();
    assert!(bytes.len() > 4 * 1024 * 1024);
    bytes
}

#[test]
fn manifest_over_4_mib_with_content_length() {
    let env = Env::new();
    env.fake
        .put_manifest("bad/huge", "v1", OCI_MANIFEST, huge_manifest());
    let stderr = env.pull_fails("bad/huge:v1");
    assert_mentions(
        &stderr,
        &[
            &format!("{}/v2/bad/huge/manifests/v1", env.fake.url()),
            "manifest exceeds the limit of 4194304 bytes",
        ],
    );
}

#[test]
fn manifest_over_4_mib_chunked() {
    let env = Env::new();
    env.fake.set_route(
        "/v2/bad/huge/manifests/v1",
        FakeResponse::ok(huge_manifest())
            .header("Content-Type", OCI_MANIFEST)
            .chunked(),
    );
    let stderr = env.pull_fails("bad/huge:v1");
    assert_mentions(
        &stderr,
        &[
            &format!("{}/v2/bad/huge/manifests/v1", env.fake.url()),
            "manifest exceeds the limit of 4194304 bytes",
        ],
    );
}

#[test]
fn by_digest_manifest_mismatch() {
    let env = Env::new();
    let img = bad_image();
    env.fake.push_image("bad/bydigest", "v1", &img);
    // Asked for the bad image by digest, the server answers with the good image's manifest
    // (valid, and its Docker-Content-Digest is the truth about those bytes).
    let wanted = img.manifest.digest.clone();
    let path = format!("/v2/bad/bydigest/manifests/{wanted}");
    env.fake.set_route(
        &path,
        FakeResponse::ok(env.good.manifest_bytes.clone())
            .header("Content-Type", OCI_MANIFEST)
            .header("Docker-Content-Digest", &env.good.manifest.digest),
    );
    let stderr = env.pull_fails(&format!("bad/bydigest@{wanted}"));
    assert_mentions(
        &stderr,
        &[
            "digest mismatch",
            &format!("expected {wanted}"),
            &env.good.manifest.digest,
            &format!("{}{path}", env.fake.url()),
        ],
    );
    assert_eq!(env.fake.hits(&path), 1);
    // Nothing the lying manifest points at was fetched.
    assert_eq!(
        env.fake
            .hits(&env.blob_path("bad/bydigest", &env.good.config.digest)),
        0
    );
}

#[test]
fn docker_content_digest_mismatch() {
    let env = Env::new();
    let img = bad_image();
    env.fake.push_image("bad/header", "v1", &img);
    let lie = sha256_digest(b"not these bytes");
    env.fake.set_route(
        "/v2/bad/header/manifests/v1",
        FakeResponse::ok(img.manifest_bytes.clone())
            .header("Content-Type", OCI_MANIFEST)
            .header("Docker-Content-Digest", &lie),
    );
    let stderr = env.pull_fails("bad/header:v1");
    assert_mentions(
        &stderr,
        &[
            "digest mismatch",
            &format!("expected {lie}"),
            &img.manifest.digest,
        ],
    );
}

#[test]
fn document_with_both_manifests_and_layers() {
    let env = Env::new();
    let img = bad_image();
    env.fake.push_image("bad/both", "v1", &img);
    let mut doc: serde_json::Value = serde_json::from_slice(&img.manifest_bytes).unwrap();
    doc["manifests"] = serde_json::json!([{
        "mediaType": OCI_MANIFEST,
        "digest": env.good.manifest.digest,
        "size": env.good.manifest.size,
        "platform": {"architecture": "amd64", "os": "linux"},
    }]);
    let bytes = serde_json::to_vec(&doc).unwrap();
    // Served both as an index and as a manifest: refused either way.
    for (tag, mt) in [("as-index", OCI_INDEX), ("as-manifest", OCI_MANIFEST)] {
        env.fake.put_manifest("bad/both", tag, mt, bytes.clone());
        let stderr = env.pull_fails(&format!("bad/both:{tag}"));
        assert_mentions(
            &stderr,
            &[
                "both `manifests` and `layers`",
                &format!("{}/v2/bad/both/manifests/{tag}", env.fake.url()),
            ],
        );
    }
    // Neither the layers nor the listed manifest were fetched.
    let paths: Vec<String> = env.fake.requests().into_iter().map(|r| r.path).collect();
    assert!(
        !paths.iter().any(|p| p.starts_with("/v2/bad/both/blobs/")
            || p.ends_with(&env.good.manifest.digest)),
        "{paths:?}"
    );
}

#[test]
fn bad_digest_in_a_layer_descriptor() {
    let env = Env::new();
    let img = bad_image();
    env.fake.push_image("bad/desc", "v1", &img);
    let upper = {
        let hex = img.layers[1].blob.digest.trim_start_matches("sha256:");
        format!("sha256:{}", hex.to_ascii_uppercase())
    };
    for (tag, digest) in [
        ("traversal", "sha256:../../../../../etc/passwd".to_string()),
        ("upper", upper),
    ] {
        let mut m: serde_json::Value = serde_json::from_slice(&img.manifest_bytes).unwrap();
        m["layers"][1]["digest"] = digest.clone().into();
        env.fake.put_manifest(
            "bad/desc",
            tag,
            OCI_MANIFEST,
            serde_json::to_vec(&m).unwrap(),
        );
        // The blob is even there under that name: hoist must not ask for it.
        env.fake.put_blob("bad/desc", &digest, b"evil".to_vec());
        let stderr = env.pull_fails(&format!("bad/desc:{tag}"));
        assert_mentions(
            &stderr,
            &[
                &format!("invalid digest {digest:?}"),
                &format!("{}/v2/bad/desc/manifests/{tag}", env.fake.url()),
            ],
        );
        assert_eq!(env.fake.hits(&env.blob_path("bad/desc", &digest)), 0);
    }
}

#[test]
fn bad_digest_as_the_reference() {
    let env = Env::new();
    let good_hex = env.good.manifest.digest.trim_start_matches("sha256:");
    for digest in [
        "sha256:../..".to_string(),
        "sha256:../../../../etc/passwd".to_string(),
        format!("sha256:{}", good_hex.to_ascii_uppercase()),
        format!("sha256:{}", &good_hex[..63]),
    ] {
        let stderr = env.pull_fails(&format!("good/app@{digest}"));
        assert_mentions(&stderr, &["invalid", &digest]);
    }
    // Refused at parse time: the registry never heard of these pulls.
    assert!(
        env.fake
            .requests()
            .iter()
            .all(|r| !r.path.contains("..") && !r.path.contains(&good_hex.to_ascii_uppercase())),
        "{:?}",
        env.fake.requests()
    );
    let before = env.fake.requests().len();
    env.pull_fails("good/app@sha256:../..");
    assert_eq!(env.fake.requests().len(), before, "no request at all");
}

#[test]
fn layer_and_diff_id_counts_differ() {
    let env = Env::new();
    let img = bad_image();
    let (manifest, config_digest, config) = doctored(&img, |_, c| {
        c["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
    });
    env.fake.push_image("bad/count", "v1", &img);
    env.fake.put_blob("bad/count", &config_digest, config);
    env.fake
        .put_manifest("bad/count", "v1", OCI_MANIFEST, manifest);
    let stderr = env.pull_fails("bad/count:v1");
    assert_mentions(&stderr, &["2 layers", "1 diff IDs", &config_digest]);
    // Checked before any layer moved.
    for l in img.layer_digests() {
        assert_eq!(env.fake.hits(&env.blob_path("bad/count", &l)), 0, "{l}");
    }
    assert_eq!(
        env.fake.hits(&env.blob_path("bad/count", &config_digest)),
        1
    );
}

#[test]
fn unauthorized_with_bad_credentials() {
    require_peers!(Peer::Registry, Peer::Openssl, Peer::Htpasswd);
    let env = Env::new();
    let reg = Registry::tls_basic();
    let cert_dir = reg.cert_dir().unwrap().to_str().unwrap().to_owned();
    let stderr = env.fails_cleanly(&[
        "pull",
        "--cert-dir",
        &cert_dir,
        "--creds",
        &format!("{BASIC_USER}:wrong-password"),
        &reg.image_ref("ns/app:v1"),
    ]);
    assert_mentions(
        &stderr,
        &[
            "unauthorized",
            &format!("https://{}/v2/", reg.host_port()),
            &format!("credentials for user \"{BASIC_USER}\" were rejected"),
        ],
    );
    assert!(
        !stderr.contains("wrong-password"),
        "password leaked:\n{stderr}"
    );
}

#[test]
fn tag_not_found() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let env = Env::new();
    let reg = Registry::plain();
    let layout = tempfile::tempdir().unwrap();
    images::sample_docker()
        .write_layout(layout.path(), "v1")
        .unwrap();
    let opts = SkopeoOpts::default().tls_verify(false).no_creds();
    skopeo::push_with_skopeo(layout.path(), "v1", &reg.image_ref("ns/app:v1"), &opts).unwrap();
    let stderr = env.fails_cleanly(&["pull", &reg.image_ref("ns/app:nope")]);
    assert_mentions(
        &stderr,
        &[
            "not found",
            &format!("{}/v2/ns/app/manifests/nope", reg.url()),
            "ns/app:nope",
            "MANIFEST_UNKNOWN",
        ],
    );
}

#[test]
fn unreachable_registry() {
    let env = Env::new();
    let port = registry::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let stderr = env.fails_cleanly(&["pull", &format!("{addr}/ns/app:v1")]);
    let took = start.elapsed();
    assert_mentions(&stderr, &[&addr, "connection"]);
    // `fails_cleanly` runs `hoist images` twice too; the pull itself must not wait for a
    // timeout (the connect timeout is 30 s).
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{stderr}");
}

/// A pull that fails after other new layers were verified and stored: those layers are
/// withdrawn (the store is as it was, fsck clean), the large one kept as a complete
/// partial download, so the next pull, once the registry serves the broken blob right,
/// fetches neither of them again.
#[test]
fn layers_stored_before_a_failure_are_withdrawn_and_reused_by_the_next_pull() {
    let env = Env::new();
    let img = ImageSpec::oci()
        .layer(layer_base())
        // Stored uncompressed, so its blob (2 MiB + tar headers) is above
        // hoist_store::KEEP_AS_PARTIAL and is kept as a partial download.
        .layer(LayerSpec::uncompressed([
            Entry::dir("big"),
            Entry::random_file("big/data.bin", 2 * 1024 * 1024, 21),
        ]))
        // A small one: removed outright.
        .layer(LayerSpec::gzip([
            Entry::dir("small"),
            Entry::file("small/note", "small\n"),
        ]))
        .layer(layer_new())
        .cmd(["/bin/false"])
        .build()
        .unwrap();
    env.fake.push_image("bad/late", "v1", &img);
    let broken = img.layers[3].blob.digest.clone();
    let size = img.layers[3].blob.size as usize;
    // With -j 1 the layers come in order, so the two new ones are stored before the
    // broken one fails the digest check.
    env.fake
        .put_blob("bad/late", &broken, images::seeded_bytes(size, 7));
    let stderr = env.fails_cleanly(&["pull", "-j", "1", &env.fake.image_ref("bad/late:v1")]);
    assert_mentions(&stderr, &["digest mismatch", &broken]);
    // The same through the copy engine (registry → store).
    let stderr = env.fails_cleanly(&[
        "copy",
        &format!("docker://{}", env.fake.image_ref("bad/late:v1")),
        "hoist:example.com/late:v1",
    ]);
    assert_mentions(&stderr, &["digest mismatch", &broken]);
    // The large layer waits in the ingest area as a complete partial.
    let big = &img.layers[1].blob;
    let partial = env.store.join(format!(
        "hoist/ingest/partial-sha256-{}",
        big.digest.trim_start_matches("sha256:")
    ));
    assert_eq!(
        fs::metadata(&partial).map(|m| m.len()).ok(),
        Some(big.size),
        "the verified large layer is kept as a partial download"
    );

    // The registry now serves the right bytes: the big layer is not fetched again.
    env.fake
        .put_blob("bad/late", &broken, img.blob(&broken).unwrap().to_vec());
    let big_path = env.blob_path("bad/late", &big.digest);
    let hits_before = env.fake.hits(&big_path);
    let out = env.hoist(&["pull", &env.fake.image_ref("bad/late:v1")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.fake.hits(&big_path),
        hits_before,
        "the kept layer was fetched again"
    );
    support::assert_fsck_clean(env.dir.path(), &env.store);
}
