//! Every transport through the one source/destination contract
//! ([`hoist_transport::transports::conformance::check`], the `conformance` feature); a new
//! transport joins with one line here. A transport written outside hoist (an in-memory
//! one, below) goes through the same contract boxed, as the copy engine takes it
//! (`AnySource::Custom` / `AnyDestination::Custom`), and through the copy engine itself.

#[path = "conformance_suite/memory.rs"]
mod memory;

use hoist_store::Store;
use hoist_testkit::{FakeRegistry, Registry, require_peers};
use hoist_transport::transports::any::OpenOptions;
use hoist_transport::transports::conformance::{Leftovers, RefPlace, check};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp dir")
}

fn at(t: &tempfile::TempDir, tail: &str) -> String {
    format!("{}/{tail}", t.path().display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout() {
    let t = tmp();
    check(&RefPlace::files(
        format!("oci:{}:{{}}", at(&t, "layout")),
        t.path(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_layout() {
    let t = tmp();
    check(&RefPlace::files(format!("dir:{}", at(&t, "{}")), t.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_archive() {
    let t = tmp();
    check(&RefPlace::files(
        format!("oci-archive:{}:{{}}", at(&t, "{}.tar")),
        t.path(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_archive() {
    let t = tmp();
    let template = format!("docker-archive:{}:conformance/{{}}:v1", at(&t, "{}.tar"));
    check(&RefPlace {
        keeps_manifest_bytes: false, // the source synthesises its schema 2 manifest
        ..RefPlace::files(template, t.path())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hoist_store() {
    let t = tmp();
    let store = Store::open(t.path().join("store")).expect("open a store");
    check(&RefPlace {
        template: "hoist:conformance/{}:v1".to_owned(),
        opts: {
            let mut o = OpenOptions::default();
            o.store = Some(store.clone());
            o
        },
        leftovers: Leftovers::Fsck(store),
        keeps_manifest_bytes: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_fake() {
    let fake = FakeRegistry::start();
    fake.accept_pushes(true);
    check(&RefPlace {
        template: format!("docker://{}/conformance/{{}}:v1", fake.host_port()),
        opts: OpenOptions::default(),
        leftovers: Leftovers::Unchecked,
        keeps_manifest_bytes: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_distribution() {
    require_peers!(Peer::Registry);
    let reg = Registry::plain();
    check(&RefPlace {
        template: format!("docker://{}/conformance/{{}}:v1", reg.host_port()),
        opts: OpenOptions::default(),
        leftovers: Leftovers::Unchecked,
        keeps_manifest_bytes: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_in_memory_boxed() {
    check(&memory::MemoryPlace::default()).await;
}

/// The boxed destination through the copy engine: an OCI layout copied into it, byte for
/// byte (the built-in source on static dispatch, the custom destination boxed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_destination_through_copy() {
    use hoist_testkit::images::{Entry, ImageSpec, LayerSpec};
    use hoist_transport::copy::{CopyOptions, copy};
    use hoist_transport::transports::ImageRef;
    use hoist_transport::transports::any::{AnyDestination, AnySource};

    let t = tmp();
    let built = ImageSpec::oci()
        .layer(LayerSpec::gzip(vec![Entry::file("hello", "hi\n")]))
        .layer(LayerSpec::gzip(vec![Entry::random_file(
            "big",
            200 * 1024,
            7,
        )]))
        .write_layout(&t.path().join("layout"), "v1")
        .expect("an OCI layout");
    let src = AnySource::open(
        &ImageRef::parse(&format!("oci:{}:v1", at(&t, "layout"))).expect("a reference"),
        &OpenOptions::default(),
    )
    .await
    .expect("open the layout");
    let place = memory::MemoryPlace::default();
    let dst = AnyDestination::custom(place.destination_for("copied"));
    let report = copy(&src, dst, &CopyOptions::default(), &hoist_types::NoProgress)
        .await
        .expect("copy into the custom destination");
    assert_eq!(
        report.digest.as_ref().map(ToString::to_string).as_deref(),
        Some(built.manifest.digest.as_str()),
        "the digest committed"
    );
    assert_eq!(report.location, "memory:copied");
    assert_eq!(report.blobs_copied, 3, "config and two layers sent");
    let held = place.held("copied").expect("the name is committed");
    assert!(held.bytes == built.manifest_bytes, "manifest bytes kept");
    for (digest, bytes) in built.blobs() {
        if digest != built.manifest.digest {
            assert!(
                place.blob(digest).as_deref() == Some(bytes),
                "blob {digest} kept byte for byte"
            );
        }
    }
}
