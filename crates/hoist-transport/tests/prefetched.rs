//! A pull from a [`Prefetched`] source takes the top manifest and config read ahead
//! instead of fetching them again, and checks them as if it had just read them: a config
//! handed over that does not hash to its digest fails the pull, the store as it was.

use std::sync::Arc;

use hoist_store::{FsckOptions, Store};
use hoist_testkit::FakeRegistry;
use hoist_testkit::images::{BuiltImage, Entry, ImageSpec, LayerSpec};
use hoist_transport::transports::any::AnySource;
use hoist_transport::transports::docker::DockerSource;
use hoist_transport::transports::prefetched::Prefetched;
use hoist_transport::transports::{ImageSource, ManifestRef};
use hoist_transport::{PullOptions, TransportError, pull_from};
use hoist_types::{NoProgress, Reference};

/// A two-layer image served as `ns/app:v1`, a source for it, and its top manifest as
/// read ahead (one GET, then forgotten by the fake's counters).
async fn served() -> (FakeRegistry, BuiltImage, Reference, Prefetched) {
    let fake = FakeRegistry::start();
    let img = ImageSpec::oci()
        .layer(LayerSpec::gzip([Entry::file("a", "one\n")]))
        .layer(LayerSpec::gzip([Entry::random_file("b", 300 * 1024, 3)]))
        .build()
        .unwrap();
    fake.push_image("ns/app", "v1", &img);
    let r: Reference = fake.image_ref("ns/app:v1").parse().unwrap();
    let upstream = Arc::new(AnySource::Docker(DockerSource::new(
        r.clone(),
        &PullOptions::default(),
    )));
    let top = upstream.get_manifest(&ManifestRef::Top).await.unwrap();
    assert_eq!(top.digest.to_string(), img.manifest.digest);
    fake.reset_hits();
    (fake, img, r, Prefetched::new(upstream, top))
}

/// Pulls `r` into a new store at `dir` from `src`.
async fn pull(
    dir: &std::path::Path,
    r: &Reference,
    src: Prefetched,
) -> (Store, Result<hoist_transport::PullReport, TransportError>) {
    let store = Store::open(dir).unwrap();
    let pulled = pull_from(
        &store,
        r,
        &AnySource::custom(src),
        &PullOptions::default(),
        &NoProgress,
    )
    .await;
    (store, pulled)
}

fn gets(fake: &FakeRegistry, path: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|q| q.method == "GET" && q.path == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_read_ahead_is_not_fetched_again() {
    let (fake, img, r, src) = served().await;
    let config = img.config.digest.parse().unwrap();
    let src = src.with_blob(config, img.config_bytes.clone(), "ahead".into());
    let t = tempfile::tempdir().unwrap();
    let (store, report) = pull(t.path(), &r, src).await;
    let report = report.unwrap();
    assert_eq!(report.image.id.to_string(), img.config.digest);
    assert_eq!(gets(&fake, "/v2/ns/app/manifests/v1"), 0);
    let blob = |d: &str| format!("/v2/ns/app/blobs/{d}");
    assert_eq!(gets(&fake, &blob(&img.config.digest)), 0);
    for l in &img.layers {
        assert_eq!(gets(&fake, &blob(&l.blob.digest)), 1);
    }
    // The config handed over is the one stored, under its digest.
    let stored = store
        .read_blob(&img.config.digest.parse().unwrap(), 1 << 20)
        .unwrap();
    assert_eq!(stored, img.config_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_handed_over_is_checked_against_its_digest() {
    let (fake, img, r, src) = served().await;
    let mut wrong = img.config_bytes.clone();
    let last = wrong.len() - 2;
    wrong[last] ^= 1;
    let src = src.with_blob(img.config.digest.parse().unwrap(), wrong, "ahead".into());
    let t = tempfile::tempdir().unwrap();
    let (store, pulled) = pull(t.path(), &r, src).await;
    let err = pulled.unwrap_err();
    assert!(
        matches!(err, TransportError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("ahead"), "{err}");
    // Refused before any layer moved; nothing stored, nothing left over.
    for l in &img.layers {
        assert_eq!(
            gets(&fake, &format!("/v2/ns/app/blobs/{}", l.blob.digest)),
            0
        );
    }
    assert!(store.images().unwrap().is_empty());
    let fsck = store.fsck(&FsckOptions::default()).unwrap();
    assert!(fsck.problems.is_empty(), "{:?}", fsck.problems);
}
