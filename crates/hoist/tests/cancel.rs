//! Cancelling a pull mid-way, by dropping its future (`tokio::time::timeout`) and through
//! [`hoist::Client::pull_until`]: the store is left as a failed pull leaves it (fsck
//! clean, no image, no visible blob once the pull's lease has ended), and a later pull
//! completes. The registry is the testkit's fake on 127.0.0.1, throttled so that the
//! pull of a 6 MiB layer takes seconds.

use std::path::Path;
use std::time::Duration;

use hoist::store::FsckOptions;
use hoist_testkit::FakeRegistry;
use hoist_testkit::fake::Fault;
use hoist_testkit::images::{BuiltImage, Entry, ImageSpec, LayerSpec};

const MIB: usize = 1024 * 1024;

/// A registry serving an image with a 6 MiB (incompressible) layer at 512 KiB/s per
/// connection.
fn slow_registry() -> (FakeRegistry, BuiltImage, String) {
    let fake = FakeRegistry::start();
    let built = ImageSpec::oci()
        .layer(LayerSpec::gzip(vec![Entry::file("etc/app", "cancel me\n")]))
        .layer(LayerSpec::gzip(vec![Entry::random_file(
            "big.bin",
            6 * MIB,
            13,
        )]))
        .build()
        .unwrap();
    fake.push_image("slow/app", "v1", &built);
    fake.inject(Fault::Throttle(512 * 1024).on_any_blob().forever());
    let reference = fake.image_ref("slow/app:v1");
    (fake, built, reference)
}

fn client(dir: &Path) -> hoist::Client {
    hoist::Client::builder()
        .store(dir.join("store"))
        .build()
        .unwrap()
}

/// Waits (at most 20 s) until no lease is live in the store: the cancelled pull's ended
/// once its withdrawal ran.
async fn leases_gone(store: &Path) {
    let dir = store.join("hoist/leases");
    for _ in 0..200 {
        let live = std::fs::read_dir(&dir)
            .map(|it| {
                it.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".lease"))
                    .count()
            })
            .unwrap_or(0);
        if live == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a lease is still live 20 s after the pull was cancelled");
}

/// The store as a failed pull leaves it: fsck clean, no image, none of the image's blobs
/// visible.
async fn as_after_a_failure(client: &hoist::Client, built: &BuiltImage) {
    leases_gone(client.store().root()).await;
    let report = client.store().fsck(&FsckOptions::default()).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert!(client.images().unwrap().is_empty(), "an image was recorded");
    for (digest, _) in built.blobs() {
        let d: hoist::Digest = digest.parse().unwrap();
        assert_eq!(
            client.store().has_blob(&d).unwrap(),
            None,
            "blob {digest} is visible after the cancelled pull"
        );
    }
}

/// The pull had started moving the big layer, and not finished it.
fn mid_way(fake: &FakeRegistry, built: &BuiltImage) {
    let big = &built.layers[1].blob;
    let sent = fake.blob_bytes_sent(&big.digest);
    assert!(
        sent > 0 && sent < big.size,
        "{sent} of {} bytes of the big layer sent: not cancelled mid-way",
        big.size
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pull_leaves_the_store_as_a_failure_would() {
    let (fake, built, reference) = slow_registry();
    let dir = tempfile::tempdir().unwrap();
    let client = client(dir.path());

    let timed_out =
        tokio::time::timeout(Duration::from_millis(1500), client.pull(&reference)).await;
    assert!(timed_out.is_err(), "the throttled pull ended within 1.5 s");
    mid_way(&fake, &built);
    as_after_a_failure(&client, &built).await;

    // A later pull completes (unthrottled), and the store is whole.
    fake.clear_faults();
    let pulled = client.pull(&reference).await.unwrap();
    assert_eq!(pulled.image.id.to_string(), built.config.digest);
    assert_eq!(client.images().unwrap().len(), 1);
    let report = client.store().fsck(&FsckOptions::default()).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_until_cancels_and_says_so() {
    let (fake, built, reference) = slow_registry();
    let dir = tempfile::tempdir().unwrap();
    let client = client(dir.path());

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = stop.send(());
    });
    let err = client
        .pull_until(&reference, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap_err();
    canceller.await.unwrap();
    assert_eq!(err.kind(), hoist::ErrorKind::Other, "{err}");
    assert!(err.to_string().contains("cancelled"), "{err}");
    mid_way(&fake, &built);
    as_after_a_failure(&client, &built).await;

    // A cancellation that never comes leaves the pull alone.
    fake.clear_faults();
    let pulled = client
        .pull_until(&reference, std::future::pending())
        .await
        .unwrap();
    assert_eq!(pulled.image.id.to_string(), built.config.digest);
}
