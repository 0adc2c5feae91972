//! Every transport through the one source/destination contract
//! ([`conformance_suite::check`]); a new transport joins with one line here.

mod conformance_suite;

use conformance_suite::{Leftovers, RefPlace, check};
use hoist_store::Store;
use hoist_testkit::{FakeRegistry, Registry, require_peers};
use hoist_transport::transports::any::OpenOptions;

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
        opts: OpenOptions {
            store: Some(store.clone()),
            ..OpenOptions::default()
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
