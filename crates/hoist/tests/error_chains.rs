//! Every error of the libraries prints each cause once: a message never holds the text of
//! its source (the chain carries it), so `{:#}`, `anyhow` and `eyre` show each cause once.
//!
//! The bad inputs are those the CLI's bad-input tests use, driven through the library: evil
//! layer tars and evil archives from the testkit, broken `oci:` and `dir:` layouts (missing
//! and corrupt blobs, a manifest lying about a size, a broken second image of an index, an
//! unreadable config, an artifact), a registry that is down, an unknown tag, invalid
//! references and bad trust-policy files. For each error the chain is walked with
//! [`std::error::Error::source`].

use std::error::Error as StdError;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hoist::types::{Digest, MediaType, Mismatch, NoProgress};
use hoist::unpack::{LayerInput, Limits, Rootfs, UnpackOptions};
use hoist_testkit::evil::{self, Expect};
use hoist_testkit::evil_archive;
use hoist_testkit::images::{
    BlobInfo, BuiltImage, Entry, ImageFormat, ImageSpec, IndexSpec, LayerSpec, OCI_MANIFEST,
    OciLayout, seeded_bytes,
};
use hoist_testkit::registry::{Registry, free_port};
use hoist_testkit::require_peers;

/// The messages of `e` and of each of its causes, in chain order.
fn chain(e: &(dyn StdError + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    // Bounded: a chain longer than this is a cycle.
    while let Some(c) = cur
        && out.len() < 64
    {
        out.push(c.to_string());
        cur = c.source();
    }
    out
}

/// Fails when a message of `e`'s chain holds the whole text of a later cause, or when the
/// top message is empty. Returns the chain joined as `{:#}` would, for the caller's checks.
fn assert_no_repeated_cause(e: &(dyn StdError + 'static)) -> String {
    let msgs = chain(e);
    assert!(msgs.len() < 64, "the chain does not end: {msgs:#?}");
    assert!(!msgs[0].trim().is_empty(), "empty message: {e:?}");
    for (i, m) in msgs.iter().enumerate() {
        for later in msgs[i + 1..].iter().filter(|l| !l.trim().is_empty()) {
            assert!(
                !m.contains(later.as_str()),
                "the message {m:?} repeats its cause {later:?}; chain: {msgs:#?}"
            );
        }
    }
    msgs.join(": ")
}

/// The façade's error, checked; returns the joined chain.
fn check(e: &hoist::Error) -> String {
    let joined = assert_no_repeated_cause(e);
    eprintln!("{:?}: {joined}", e.kind());
    joined
}

#[test]
fn the_helper_finds_a_repeated_cause() {
    #[derive(Debug)]
    struct Repeats(std::io::Error);
    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "reading /x: {}", self.0)
        }
    }
    impl StdError for Repeats {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }
    let bad = Repeats(std::io::Error::other("disk on fire"));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_no_repeated_cause(&bad)
    }));
    assert!(caught.is_err(), "a repeated cause went unnoticed");
    let good = hoist::store::StoreError::Io {
        op: "read",
        path: Some("/x".into()),
        source: std::io::Error::other("disk on fire"),
    };
    assert_eq!(
        assert_no_repeated_cause(&good),
        "cannot read /x: disk on fire"
    );
}

fn client(dir: &Path) -> hoist::Client {
    hoist::Client::builder()
        .store(dir.join("store"))
        .build()
        .unwrap()
}

#[test]
fn evil_layers() {
    let dir = tempfile::tempdir().unwrap();
    let sentinel = dir.path().join("sentinel");
    let mut failed = 0;
    for (n, case) in evil::cases(&sentinel).into_iter().enumerate() {
        if !matches!(case.expect, Expect::Error) {
            continue;
        }
        let root = dir.path().join(format!("root{n}"));
        fs::create_dir(&root).unwrap();
        let opts = UnpackOptions {
            rootless: true,
            limits: Limits {
                max_layer_size: case
                    .max_layer_size
                    .unwrap_or(Limits::default().max_layer_size),
                ..Limits::default()
            },
            ..UnpackOptions::default()
        };
        let result = (|| {
            let mut rootfs = Rootfs::open(&root, &opts)?;
            for layer in &case.layers {
                let digest = Digest::sha256_of(&layer.blob);
                let diff_id = Digest::parse(&layer.diff_id).unwrap();
                let mt = MediaType::parse(layer.media_type);
                rootfs.apply_layer(
                    layer.blob.as_slice(),
                    LayerInput {
                        digest: &digest,
                        media_type: &mt,
                        diff_id: &diff_id,
                        size: layer.blob.len() as u64,
                    },
                    &NoProgress,
                )?;
            }
            rootfs.finish()
        })();
        // Rootless, some "errors" of root mode are skipped entries: only errors count.
        if let Err(e) = result {
            let e = hoist::Error::from(e);
            eprint!("{}: ", case.name);
            check(&e);
            failed += 1;
        }
    }
    assert!(failed >= 10, "only {failed} evil layers failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evil_archives() {
    let dir = tempfile::tempdir().unwrap();
    let client = client(dir.path());
    let cases: Vec<_> = evil_archive::docker_cases()
        .into_iter()
        .chain(evil_archive::oci_cases())
        .collect();
    assert!(cases.len() > 10);
    for (n, case) in cases.iter().enumerate() {
        let path = dir.path().join(format!("evil{n}.tar"));
        fs::write(&path, &case.bytes).unwrap();
        let e = client
            .load(&path)
            .await
            .expect_err(&format!("{} loaded", case.name));
        eprint!("{}: ", case.name);
        let joined = check(&e);
        if case.name.contains("wrong digest") {
            assert!(
                matches!(e.mismatch(), Some(Mismatch::Digest { .. })),
                "{joined}"
            );
        }
        assert!(
            joined.contains(&case.expect),
            "{}: {joined:?} does not mention {:?}",
            case.name,
            case.expect
        );
    }
    // A file that is not there, and one that is not a tar.
    let e = client
        .load(dir.path().join("absent.tar"))
        .await
        .unwrap_err();
    check(&e);
    fs::write(dir.path().join("junk.tar"), seeded_bytes(4096, 3)).unwrap();
    let e = client.load(dir.path().join("junk.tar")).await.unwrap_err();
    check(&e);
    assert_untouched(&client);
}

/// Three layers of their own content.
fn spec(seed: u64) -> ImageSpec {
    let mut s = ImageSpec::oci().cmd(["/bin/true"]);
    for i in 0..3u64 {
        s = s.layer(LayerSpec::gzip([Entry::random_file(
            &format!("layer{i}.bin"),
            4096,
            seed * 10 + i,
        )]));
    }
    s
}

struct Layouts {
    dir: tempfile::TempDir,
    client: hoist::Client,
}

impl Layouts {
    fn new() -> Layouts {
        let dir = tempfile::tempdir().unwrap();
        let client = client(dir.path());
        Layouts { dir, client }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An `oci:` layout (and, with `as_dir`, the same image as `dir:`) of `spec(seed)`.
    fn source(&self, name: &str, seed: u64, as_dir: bool) -> (PathBuf, String, BuiltImage) {
        let layout = self.path(name);
        let built = spec(seed).write_layout(&layout, "v1").unwrap();
        if !as_dir {
            let r = format!("oci:{}:v1", layout.display());
            return (layout, r, built);
        }
        let dir = self.path(&format!("{name}-dir"));
        OciLayout::create(&layout)
            .unwrap()
            .export_dir_transport("v1", &dir)
            .unwrap();
        let r = format!("dir:{}", dir.display());
        (dir, r, built)
    }

    async fn import_fails(&self, source: &str, all: bool) -> String {
        self.import_error(source, all).await.0
    }

    /// The joined chain and the error.
    async fn import_error(&self, source: &str, all: bool) -> (String, hoist::Error) {
        let opts = hoist::CopyOptions::default().all(all);
        let e = self
            .client
            .copy_with(source, "hoist:example.test/imported:v1", &opts)
            .await
            .expect_err(source);
        eprint!("{source}: ");
        assert_untouched(&self.client);
        (check(&e), e)
    }
}

/// A refused input left the store as it was: no image, and fsck finds nothing (no
/// orphan, no stray temp file, no broken record).
fn assert_untouched(client: &hoist::Client) {
    assert!(client.images().unwrap().is_empty(), "an image was recorded");
    let report = client
        .store()
        .fsck(&hoist::store::FsckOptions::default())
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

fn blob_path(src: &Path, digest: &str, as_dir: bool) -> PathBuf {
    let hex = &digest[7..];
    if as_dir {
        src.join(hex)
    } else {
        src.join("blobs/sha256").join(hex)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_layouts() {
    let l = Layouts::new();
    for (n, as_dir) in [false, true].into_iter().enumerate() {
        let seed = n as u64 * 10;
        // A blob missing.
        let (src, r, built) = l.source(&format!("missing{n}"), seed + 1, as_dir);
        let d = &built.layers.last().unwrap().blob.digest;
        fs::remove_file(blob_path(&src, d, as_dir)).unwrap();
        let msg = l.import_fails(&r, false).await;
        assert!(msg.contains(d.as_str()), "{msg}");
        // A blob corrupt: same size, other bytes (a digest mismatch).
        let (src, r, built) = l.source(&format!("corrupt{n}"), seed + 2, as_dir);
        let d = &built.layers.last().unwrap().blob.digest;
        let path = blob_path(&src, d, as_dir);
        let len = fs::metadata(&path).unwrap().len() as usize;
        fs::write(&path, seeded_bytes(len, 77)).unwrap();
        let (msg, e) = l.import_error(&r, false).await;
        assert!(msg.contains("digest mismatch"), "{msg}");
        // The one mismatch type, whichever crate found it.
        assert!(
            matches!(e.mismatch(), Some(Mismatch::Digest { ref expected, .. }) if expected.to_string() == *d),
            "{:?}",
            e.mismatch()
        );
        // The manifest is not JSON, or is a manifest of nothing.
        let (src, r, built) = l.source(&format!("manifest{n}"), seed + 3, as_dir);
        let mpath = if as_dir {
            src.join("manifest.json")
        } else {
            blob_path(&src, &built.manifest.digest, false)
        };
        fs::write(&mpath, b"{\"schemaVersion\": 2, \"layers\": 7").unwrap();
        // The parser's own words survive: the chain carries them, once.
        let msg = l.import_fails(&r, false).await;
        assert!(msg.contains("EOF while parsing"), "{msg}");
        // The config is not JSON.
        let (src, r, built) = l.source(&format!("config{n}"), seed + 4, as_dir);
        fs::write(blob_path(&src, &built.config.digest, as_dir), b"{ not json").unwrap();
        l.import_fails(&r, false).await;
    }

    // A `dir:` manifest that declares the last layer one byte longer than it is.
    let (src, r, built) = l.source("size", 5, true);
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(src.join("manifest.json")).unwrap()).unwrap();
    let last = built.layers.last().unwrap();
    m["layers"][2]["size"] = (last.blob.size + 1).into();
    fs::write(src.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    let (msg, e) = l.import_error(&r, false).await;
    assert!(msg.contains(&last.blob.digest), "{msg}");
    assert_eq!(
        e.mismatch(),
        Some(Mismatch::Size {
            expected: last.blob.size + 1,
            actual: last.blob.size
        }),
        "{msg}"
    );

    // An index whose second manifest is not what the index says.
    let dir = l.path("index");
    let idx = IndexSpec::new(ImageFormat::Oci)
        .image(spec(6).platform("linux", "amd64", None))
        .image(spec(7).platform("linux", "arm64", Some("v8")))
        .write_layout(&dir, "v1")
        .unwrap();
    let second = &idx.images[1].manifest;
    let path = blob_path(&dir, &second.digest, false);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.iter().rposition(|b| *b == b'2').unwrap();
    bytes[at] = b'3';
    fs::write(&path, bytes).unwrap();
    let msg = l
        .import_fails(&format!("oci:{}:v1", dir.display()), true)
        .await;
    assert!(msg.contains(&second.digest), "{msg}");

    // A config whose `rootfs.diff_ids` is not a list.
    let dir = l.path("badconfig");
    let layout = OciLayout::create(&dir).unwrap();
    let img = spec(8).build().unwrap();
    img.write_blobs(&layout).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&img.config_bytes).unwrap();
    cfg["rootfs"]["diff_ids"] = "not a list".into();
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let cfg_digest = layout.put_blob(&cfg_bytes).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest_bytes).unwrap();
    m["config"]["digest"] = cfg_digest.clone().into();
    m["config"]["size"] = cfg_bytes.len().into();
    tag_manifest(&layout, &serde_json::to_vec(&m).unwrap());
    let msg = l
        .import_fails(&format!("oci:{}:v1", dir.display()), false)
        .await;
    assert!(msg.contains(&cfg_digest), "{msg}");

    // An artifact, not an image.
    let dir = l.path("artifact");
    let layout = OciLayout::create(&dir).unwrap();
    let empty_digest = layout.put_blob(b"{}").unwrap();
    let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
    let sbom_digest = layout.put_blob(sbom).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sbom_digest, "size": sbom.len()}],
    });
    tag_manifest(&layout, &serde_json::to_vec(&manifest).unwrap());
    l.import_fails(&format!("oci:{}:v1", dir.display()), false)
        .await;

    // A layout that is not there, a tag that is not in it, and a broken index.json.
    l.import_fails(&format!("oci:{}:v1", l.path("absent").display()), false)
        .await;
    let (src, _, _) = l.source("tags", 9, false);
    l.import_fails(&format!("oci:{}:nope", src.display()), false)
        .await;
    fs::write(src.join("index.json"), b"[").unwrap();
    l.import_fails(&format!("oci:{}:v1", src.display()), false)
        .await;
}

fn tag_manifest(layout: &OciLayout, bytes: &[u8]) {
    let digest = layout.put_blob(bytes).unwrap();
    layout
        .tag(
            &BlobInfo {
                media_type: OCI_MANIFEST.into(),
                digest,
                size: bytes.len() as u64,
            },
            "v1",
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_and_bad_references() {
    let dir = tempfile::tempdir().unwrap();
    let client = client(dir.path());
    let port = free_port().unwrap();
    let e = client
        .pull(&format!("127.0.0.1:{port}/ns/app:v1"))
        .await
        .unwrap_err();
    let msg = check(&e);
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("Connection refused"), "{msg}");
    assert!(e.is_retryable(), "{msg}");

    for bad in [
        "UPPER/case:v1",
        "a:b:c:d",
        "ns/app@sha256:abc",
        "oci:",
        "nosuch:transport",
        "docker-archive:",
    ] {
        let e = client
            .copy(bad, "hoist:example.test/x:v1")
            .await
            .unwrap_err();
        check(&e);
    }
    check(&client.image("example.test/absent:v1").unwrap_err());
    check(&client.image("abc").unwrap_err());
    assert_untouched(&client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tag_on_a_real_registry() {
    require_peers!(Peer::Registry);
    let reg = Registry::plain();
    let dir = tempfile::tempdir().unwrap();
    let client = client(dir.path());
    let e = client
        .pull(&reg.image_ref("ns/app:nope"))
        .await
        .unwrap_err();
    let msg = check(&e);
    assert_eq!(e.kind(), hoist::ErrorKind::NotFound, "{msg}");
    let e = client
        .tags(&format!("docker://{}", reg.image_ref("ns/none")))
        .await
        .unwrap_err();
    check(&e);
    assert_untouched(&client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    let e = hoist::trust::Policy::from_file(&policy).unwrap_err();
    assert_no_repeated_cause(&e);
    for bad in [
        &b"{"[..],
        b"[]",
        br#"{"default": [{"type": "nosuch"}]}"#,
        br#"{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/absent.gpg"}]}"#,
        br#"{"default": [{"type": "reject"}], "transports": {"docker": {"a:b:c": []}}}"#,
    ] {
        fs::write(&policy, bad).unwrap();
        match hoist::trust::Policy::from_file(&policy) {
            Err(e) => {
                eprint!("policy {:?}: ", String::from_utf8_lossy(bad));
                eprintln!("{}", assert_no_repeated_cause(&e));
            }
            Ok(_) => eprintln!("policy {:?} parsed", String::from_utf8_lossy(bad)),
        }
    }
    // A policy that rejects: the copy is refused.
    let reject = hoist::trust::Policy::parse(br#"{"default": [{"type": "reject"}]}"#).unwrap();
    let client = hoist::Client::builder()
        .store(dir.path().join("store"))
        .trust_policy(Arc::new(reject))
        .build()
        .unwrap();
    let layout = dir.path().join("src");
    spec(1).write_layout(&layout, "v1").unwrap();
    let e = client
        .copy(
            &format!("oci:{}:v1", layout.display()),
            "hoist:example.test/x:v1",
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hoist::ErrorKind::Policy);
    check(&e);
    assert_untouched(&client);
}
