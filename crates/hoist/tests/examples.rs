//! The façade's examples, run against the real Distribution registry started here (plain
//! HTTP on 127.0.0.1; the image is generated and pushed by the testkit with skopeo). Each
//! example's `run` is the code `cargo run --example` runs; the checks look at what it
//! left on disk, not only at its return value.

#[allow(dead_code)]
#[path = "../examples/pull_rootfs.rs"]
mod pull_rootfs;

#[allow(dead_code)]
#[path = "../examples/pull_unpack.rs"]
mod pull_unpack;

#[allow(dead_code)]
#[path = "../examples/copy_to_oci.rs"]
mod copy_to_oci;

#[allow(dead_code)]
#[path = "../examples/gc_lease.rs"]
mod gc_lease;

#[allow(dead_code)]
#[path = "../examples/custom_destination.rs"]
mod custom_destination;

use hoist_testkit::images::{self, BuiltImage};
use hoist_testkit::registry::Registry;
use hoist_testkit::{require_peers, skopeo};

/// The erofs superblock magic, at byte 1024.
const EROFS_MAGIC: u32 = 0xE0F5_E1E2;

fn registry_with_sample(repo_and_tag: &str) -> (Registry, BuiltImage, String) {
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, repo_and_tag).unwrap();
    let reference = reg.image_ref(repo_and_tag);
    (reg, built, reference)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn pull_rootfs_example_builds_an_erofs_image_from_the_registry() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let (_reg, built, reference) = registry_with_sample("ns/app:v1");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");

    let first = pull_rootfs::run(&reference, &store).unwrap();
    assert_eq!(first.format, "erofs");
    assert!(!first.cached, "a cold store has nothing cached");
    assert_eq!(first.image.to_string(), built.config.digest);
    assert_eq!(first.layers.len(), built.layers.len());
    for (got, want) in first.layers.iter().zip(&built.layers) {
        assert_eq!(got.digest.to_string(), want.blob.digest);
        assert_eq!(got.diff_id.to_string(), want.diff_id);
    }
    assert_eq!(first.run_config.entrypoint, ["/usr/bin/hello"]);
    assert_eq!(first.run_config.workdir.as_deref(), Some("/srv"));

    let bytes = std::fs::read(&first.rootfs_path).unwrap();
    assert!(
        bytes.len() > 1028,
        "{} is too short",
        first.rootfs_path.display()
    );
    let magic = u32::from_le_bytes(bytes[1024..1028].try_into().unwrap());
    assert_eq!(magic, EROFS_MAGIC, "not an erofs image");
    // The top layer's files are in the image; the file the second layer whited out is not
    // reachable, but its content may not be found either since no layer left it visible.
    assert!(contains(&bytes, b"opaque replacement\n"));
    assert!(contains(&bytes, b"mode = \"test\"\n"));
    assert!(!contains(&bytes, b"replaced by an opaque dir later\n"));

    // The image is in the store now, and the build is cached: a second run is instant and
    // gives the same artifact.
    let second = pull_rootfs::run(&reference, &store).unwrap();
    assert!(second.cached);
    assert_eq!(second.rootfs_path, first.rootfs_path);
    assert_eq!(second.chain_id, first.chain_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_unpack_example_applies_every_layer() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let (_reg, built, reference) = registry_with_sample("ns/unpack:v1");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");

    let pulled = pull_unpack::run(&reference, &dir.path().join("store"), &root)
        .await
        .unwrap();
    assert_eq!(pulled.image.id.to_string(), built.config.digest);
    assert_eq!(pulled.blobs_fetched, built.layers.len() + 1);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app/config.toml")).unwrap(),
        "mode = \"test\"\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("opt/readme.txt")).unwrap(),
        "opaque replacement\n"
    );
    assert!(!root.join("etc/hostname").exists(), "whiteout not applied");
    assert!(
        !root.join("opt/old.txt").exists(),
        "opaque directory not applied"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/os-release")).unwrap(),
        "ID=hoist-testkit\nVERSION_ID=1\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_oci_example_writes_the_served_manifest_into_a_layout() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let (_reg, built, reference) = registry_with_sample("ns/copy:v1");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let layout = dir.path().join("layout");

    let report = copy_to_oci::run(&reference, &store, &layout, "app")
        .await
        .unwrap();
    assert_eq!(
        report.digest.as_ref().map(ToString::to_string).as_deref(),
        Some(built.manifest.digest.as_str())
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let named: Vec<_> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "app")
        .collect();
    assert_eq!(named.len(), 1, "{index}");
    assert_eq!(
        named[0]["digest"],
        built.manifest.digest.as_str(),
        "{index}"
    );
    let (algo, hex) = built.manifest.digest.split_once(':').unwrap();
    let manifest = std::fs::read(layout.join("blobs").join(algo).join(hex)).unwrap();
    assert_eq!(manifest, built.manifest_bytes, "manifest bytes changed");
    for layer in &built.layers {
        let (algo, hex) = layer.blob.digest.split_once(':').unwrap();
        let len = std::fs::metadata(layout.join("blobs").join(algo).join(hex))
            .unwrap()
            .len();
        assert_eq!(len, layer.blob.size);
    }
    // A copy between two other transports does not touch the store.
    assert!(
        hoist::Client::builder()
            .store(&store)
            .build()
            .unwrap()
            .images()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn gc_lease_example_keeps_leased_blobs_then_frees_them() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let (_reg, built, reference) = registry_with_sample("ns/gc:v1");
    let dir = tempfile::tempdir().unwrap();

    let outcome = gc_lease::run(&reference, &dir.path().join("store")).unwrap();
    assert_eq!(outcome.freed_while_held, 0, "{outcome:?}");
    assert!(outcome.layers_kept, "{outcome:?}");
    // Layers, config and manifest: nothing else names them once the lease is gone.
    assert_eq!(outcome.freed_after, built.layers.len() + 2, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_destination_example_gets_every_blob_and_the_manifest() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let (_reg, built, reference) = registry_with_sample("ns/drop:v1");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = dir.path().join("drop");

    let report = custom_destination::run(&reference, &store, &out)
        .await
        .unwrap();
    assert_eq!(
        report.digest.as_ref().map(ToString::to_string).as_deref(),
        Some(built.manifest.digest.as_str())
    );
    assert_eq!(report.location, format!("file-drop:{}", out.display()));
    assert_eq!(report.blobs_copied, built.layers.len() + 1);
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        built.manifest_bytes,
        "manifest bytes changed"
    );
    let blob = |d: &str| std::fs::read(out.join(d.replace(':', "-"))).unwrap();
    assert_eq!(blob(&built.config.digest), built.config_bytes);
    for layer in &built.layers {
        assert_eq!(
            blob(&layer.blob.digest),
            built.blob(&layer.blob.digest).unwrap(),
            "layer {}",
            layer.blob.digest
        );
    }
    // No temp file left, nothing but the blobs and the manifest.
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        built.layers.len() + 2
    );
    // A second copy finds every blob there and sends none.
    let again = custom_destination::run(&reference, &store, &out)
        .await
        .unwrap();
    assert_eq!(again.blobs_copied, 0);
    assert_eq!(again.blobs_skipped, built.layers.len() + 1);
}
