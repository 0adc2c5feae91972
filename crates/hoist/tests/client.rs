//! The façade's calls end to end against the real Distribution registry (plain HTTP on
//! 127.0.0.1) and the store: push, tags, inspect, save and load, copy between transports,
//! trust refusal, and the error kinds a caller branches on.

use std::sync::Arc;

use hoist::{ArchiveFormat, ErrorKind, Format, RootfsOptions};
use hoist_testkit::images;
use hoist_testkit::registry::{Registry, free_port};
use hoist_testkit::{require_peers, skopeo};

fn client(dir: &std::path::Path) -> hoist::Client {
    hoist::Client::builder()
        .store(dir.join("store"))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_tags_inspect_save_and_load_round_trip() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_docker(), &reg, "src/app:v1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(dir.path());

    let pulled = client.pull(&reg.image_ref("src/app:v1")).await.unwrap();
    assert_eq!(pulled.image.id.to_string(), built.config.digest);

    // Push under another name; the registry then lists the tag and serves the same bytes.
    let pushed = client
        .push(&reg.image_ref("src/app:v1"), &reg.image_ref("dst/app:v2"))
        .await
        .unwrap();
    assert_eq!(
        pushed.digest.map(|d| d.to_string()).as_deref(),
        Some(built.manifest.digest.as_str())
    );
    let tags = client
        .tags(&format!("docker://{}", reg.image_ref("dst/app")))
        .await
        .unwrap();
    assert_eq!(tags, ["v2"]);

    let remote = client
        .inspect(&format!("docker://{}", reg.image_ref("dst/app:v2")))
        .await
        .unwrap();
    assert_eq!(remote.raw_manifest, built.manifest_bytes);
    // Deleted from the registry by tag: the digest it named is gone, the store keeps it.
    let gone = client
        .delete_from_registry(&reg.image_ref("dst/app:v2"))
        .await
        .unwrap();
    assert_eq!(gone.to_string(), built.manifest.digest);
    let err = client
        .inspect(&format!("docker://{}", reg.image_ref("dst/app:v2")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = client
        .delete_from_registry(&reg.image_ref("dst/app:v2"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let local = client.inspect(&reg.image_ref("src/app:v1")).await.unwrap();
    assert_eq!(local.raw_manifest, built.manifest_bytes);
    assert_eq!(local.raw_config.as_deref(), Some(&built.config_bytes[..]));

    // Save, then load into a second store: the same image ID and name.
    let archive = dir.path().join("app.tar");
    client
        .save(
            &[&reg.image_ref("src/app:v1")],
            ArchiveFormat::DockerArchive,
            &archive,
        )
        .await
        .unwrap();
    let other = hoist::Client::builder()
        .store(dir.path().join("other"))
        .build()
        .unwrap();
    let loaded = other.load(&archive).await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id.to_string(), built.config.digest);
    assert_eq!(
        loaded[0]
            .names
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        [reg.image_ref("src/app:v1")]
    );
    assert_eq!(
        other.image(&reg.image_ref("src/app:v1")).unwrap().id,
        pulled.image.id
    );

    // An archive that is not there: NotFound, naming the path.
    let err = other.load(dir.path().join("absent.tar")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("absent.tar"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootfs_pulls_a_missing_image_then_builds_ext4() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_zstd(), &reg, "ns/zstd:v1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(dir.path());
    assert!(client.images().unwrap().is_empty());

    let opts = RootfsOptions::new(Format::Ext4).journal(false);
    let result = client
        .rootfs(&reg.image_ref("ns/zstd:v1"), &opts)
        .await
        .unwrap();
    assert_eq!(result.format, "ext4");
    assert_eq!(result.image.to_string(), built.config.digest);
    // ext4 superblock magic 0xEF53 at byte 1024 + 56.
    let bytes = std::fs::read(&result.rootfs_path).unwrap();
    assert_eq!(u16::from_le_bytes([bytes[1080], bytes[1081]]), 0xEF53);
    // The pull left the image in the store, under its name.
    assert_eq!(client.images().unwrap().len(), 1);
    assert_eq!(
        client.image(&reg.image_ref("ns/zstd:v1")).unwrap().id,
        result.image
    );
    // Built while the layers downloaded (hoist_transport::pull_and_build), the image is
    // byte for byte the one built from the store after a separate pull.
    let other = hoist::Client::builder()
        .store(dir.path().join("other"))
        .build()
        .unwrap();
    other.pull(&reg.image_ref("ns/zstd:v1")).await.unwrap();
    let after = other
        .rootfs(
            &reg.image_ref("ns/zstd:v1"),
            &opts.pull(hoist::PullPolicy::Never),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&after.rootfs_path).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_policy_that_rejects_refuses_the_pull_before_any_blob() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    skopeo::push_spec(&images::sample_docker(), &reg, "ns/app:v1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = hoist::trust::Policy::parse(br#"{"default":[{"type":"reject"}]}"#).unwrap();
    let client = hoist::Client::builder()
        .store(dir.path().join("store"))
        .trust_policy(Arc::new(policy))
        .build()
        .unwrap();

    let err = client.pull(&reg.image_ref("ns/app:v1")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err}");
    let err = client
        .copy(
            &format!("docker://{}", reg.image_ref("ns/app:v1")),
            &format!("oci:{}:app", dir.path().join("layout").display()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err}");
    assert!(
        !dir.path().join("layout").exists(),
        "refused copy created its destination"
    );
    assert!(client.images().unwrap().is_empty());
    let gc = client.gc().await.unwrap();
    assert_eq!(gc.blobs.count, 0, "a refused pull fetched blobs");
}

#[test]
fn an_unreachable_registry_is_a_retryable_network_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = hoist::RegistryOptions::default();
    registry.retry.max_retries = 0;
    registry.connect_timeout = std::time::Duration::from_secs(2);
    let client = hoist::blocking::Client::builder()
        .store(dir.path().join("store"))
        .registry(registry)
        .build()
        .unwrap();
    // A port nothing listens on.
    let port = free_port().unwrap();
    let err = client
        .rootfs(
            &format!("127.0.0.1:{port}/ns/app:v1"),
            &RootfsOptions::default(),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network, "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[test]
fn store_calls_need_no_network_and_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let client = hoist::blocking::Client::builder()
        .store(dir.path())
        .build()
        .unwrap();
    let err = client.image("example.com/absent:1").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("example.com/absent:1"), "{err}");
    let err = client
        .unpack("example.com/absent:1", dir.path().join("rootfs"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = client.pull("Upper/Case:not a tag").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = hoist::Client::builder().jobs(0).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_client_keeps_its_rootfs_and_what_it_resolves_through_gc() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_docker(), &reg, "ns/held:v1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(dir.path());
    let reference = reg.image_ref("ns/held:v1");
    client.pull(&reference).await.unwrap();

    // A sandbox resolves the image and builds its rootfs on a leased client; meanwhile
    // the image is removed and the store collected.
    let held = client.leased().unwrap();
    let image = held.image(&reference).unwrap();
    let rootfs = held
        .rootfs(&image.id.to_string(), &RootfsOptions::new(Format::Erofs))
        .await
        .unwrap();
    client.remove(&image.id.to_string(), true).unwrap();
    let gc = client.gc().await.unwrap();
    assert_eq!(gc.blobs.count, 0, "{gc:?}");
    assert_eq!(gc.rootfs_flat.count, 0, "{gc:?}");
    assert!(rootfs.rootfs_path.exists());
    for layer in &image.layers {
        assert!(client.store().has_blob(&layer.digest).unwrap().is_some());
    }

    // Once the lease is dropped, the next gc frees the blobs and the rootfs entry.
    drop(held);
    let gc = client.gc().await.unwrap();
    let removed: Vec<String> = gc
        .removed
        .iter()
        .filter(|i| i.kind == "blob")
        .filter_map(|i| i.path.file_name()?.to_str().map(|h| format!("sha256:{h}")))
        .collect();
    let image_blobs = [&built.manifest.digest, &built.config.digest]
        .into_iter()
        .chain(built.layers.iter().map(|l| &l.blob.digest));
    for d in image_blobs {
        assert!(removed.contains(d), "{d} not collected: {gc:?}");
    }
    let left = std::fs::read_dir(dir.path().join("store/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "blobs left after the lease ended: {gc:?}");
    assert_eq!(gc.rootfs_flat.count, 1, "{gc:?}");
    assert!(!rootfs.rootfs_path.exists());
}

/// Counts the events of one reporter given once to the builder.
#[derive(Default)]
struct Counter {
    resolved: std::sync::atomic::AtomicUsize,
    blobs_done: std::sync::atomic::AtomicUsize,
    statuses: std::sync::atomic::AtomicUsize,
}

impl hoist::types::Progress for Counter {
    fn event(&self, e: &hoist::types::ProgressEvent<'_>) {
        use hoist::types::ProgressEvent as E;
        use std::sync::atomic::Ordering::Relaxed;
        match e {
            E::Resolved { .. } => self.resolved.fetch_add(1, Relaxed),
            E::BlobDone { .. } => self.blobs_done.fetch_add(1, Relaxed),
            E::Status { .. } => self.statuses.fetch_add(1, Relaxed),
            _ => 0,
        };
    }
}

#[test]
fn the_one_progress_reporter_hears_the_pull_and_the_build() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    use std::sync::atomic::Ordering::Relaxed;
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/progress:v1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let counter = Arc::new(Counter::default());
    let client = hoist::blocking::Client::builder()
        .store(dir.path().join("store"))
        .shared_progress(counter.clone())
        .build()
        .unwrap();
    client
        .rootfs(
            &reg.image_ref("ns/progress:v1"),
            &RootfsOptions::new(Format::Erofs),
        )
        .unwrap();
    assert_eq!(counter.resolved.load(Relaxed), 1);
    // Config and layers.
    assert!(
        counter.blobs_done.load(Relaxed) > built.layers.len(),
        "{} blob_done events",
        counter.blobs_done.load(Relaxed)
    );
    assert!(
        counter.statuses.load(Relaxed) > 0,
        "the build reported nothing"
    );
}

/// Embedders spawn the calls on their runtime: the client is Send + Sync + 'static and
/// its futures are Send.
#[test]
fn the_client_and_its_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<hoist::Client>();
    send_sync_static::<hoist::blocking::Client>();
    send_sync_static::<hoist::Error>();
    let dir = tempfile::tempdir().unwrap();
    let c = client(dir.path());
    let opts = RootfsOptions::default();
    send(&c.pull("a"));
    send(&c.copy("a", "b"));
    send(&c.push("a", "b"));
    send(&c.inspect("a"));
    send(&c.tags("a"));
    send(&c.load("a"));
    send(&c.save(&["a"], ArchiveFormat::OciArchive, "b"));
    send(&c.unpack("a", "b"));
    send(&c.rootfs("a", &opts));
    send(&c.gc());
}
