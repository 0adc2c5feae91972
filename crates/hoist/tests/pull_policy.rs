//! [`hoist::PullPolicy`] on [`hoist::Client::rootfs`] and
//! [`hoist::Client::unpack_with_pull`], against the real Distribution registry (plain HTTP
//! on 127.0.0.1): `Never` reads the store only, `Missing` pulls what is absent and then
//! needs no registry, `Always` follows a tag moved upstream.

use hoist::{ErrorKind, Format, PullPolicy, RootfsOptions, UnpackOptions};
use hoist_testkit::images;
use hoist_testkit::registry::Registry;
use hoist_testkit::{require_peers, skopeo};

fn client(dir: &std::path::Path) -> hoist::Client {
    let mut registry = hoist::RegistryOptions::default();
    registry.retry.max_retries = 0;
    hoist::Client::builder()
        .store(dir.join("store"))
        .registry(registry)
        .build()
        .unwrap()
}

fn rootless() -> UnpackOptions {
    UnpackOptions {
        rootless: true,
        ..UnpackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reads_the_store_only_and_missing_pulls_once() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let mut reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_docker(), &reg, "ns/app:1").unwrap();
    let r = reg.image_ref("ns/app:1");
    let dir = tempfile::tempdir().unwrap();
    let client = client(dir.path());

    // Never: absent from the store is NotFound, nothing pulled, nothing written.
    let never = RootfsOptions::new(Format::Dir).pull(PullPolicy::Never);
    let err = client.rootfs(&r, &never).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let target = dir.path().join("never");
    let err = client
        .unpack_with_pull(&r, &target, rootless(), PullPolicy::Never)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!target.exists());
    // docker:// always asks the registry, which Never forbids.
    let err = client
        .rootfs(&format!("docker://{r}"), &never)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(client.images().unwrap().is_empty());

    // Missing (the default): pulled, then unpacked.
    let target = dir.path().join("missing");
    let report = client
        .unpack_with_pull(&r, &target, rootless(), PullPolicy::Missing)
        .await
        .unwrap();
    assert_eq!(report.layers.len(), 2);
    assert!(target.join("usr/bin/app").is_file());
    assert_eq!(client.images().unwrap().len(), 1);

    // With the registry gone, Missing and Never use the store; Always must ask, and fails.
    reg.kill();
    let built_dir = client
        .rootfs(&r, &RootfsOptions::new(Format::Dir))
        .await
        .unwrap();
    assert_eq!(built_dir.image.to_string(), built.config.digest);
    let again = client.rootfs(&r, &never).await.unwrap();
    assert_eq!(again.rootfs_path, built_dir.rootfs_path);
    assert!(again.cached);
    client.unpack(&r, dir.path().join("plain")).await.unwrap();
    let err = client
        .rootfs(
            &r,
            &RootfsOptions::new(Format::Dir).pull(PullPolicy::Always),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    // An image ID is never taken for a reference to pull.
    let err = client
        .unpack_with_pull(
            "sha256:0123456789ab",
            dir.path().join("id"),
            rootless(),
            PullPolicy::Missing,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_follows_a_tag_moved_upstream() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let old = skopeo::push_spec(&images::sample_docker(), &reg, "ns/app:1").unwrap();
    let r = reg.image_ref("ns/app:1");
    let dir = tempfile::tempdir().unwrap();
    let client = client(dir.path());
    let opts = RootfsOptions::new(Format::Dir);
    let first = client.rootfs(&r, &opts).await.unwrap();
    assert_eq!(first.image.to_string(), old.config.digest);

    let new = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/app:1").unwrap();
    let missing = client.rootfs(&r, &opts).await.unwrap();
    assert_eq!(missing.image.to_string(), old.config.digest);
    let always = client
        .rootfs(&r, &opts.clone().pull(PullPolicy::Always))
        .await
        .unwrap();
    assert_eq!(always.image.to_string(), new.config.digest);
    let target = dir.path().join("new");
    client
        .unpack_with_pull(&r, &target, rootless(), PullPolicy::Always)
        .await
        .unwrap();
    assert!(target.join("opt/readme.txt").is_file());
}
