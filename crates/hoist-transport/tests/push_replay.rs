//! A push from a local source replays a broken upload from the file, not from memory:
//! `oci:`, `dir:` and store blobs reach a registry destination as replayable bodies
//! ([`BlobStream::reopen`](hoist_transport::transports::BlobStream::reopen)), so a chunk the
//! registry refuses after others were accepted (falling back to one PUT from byte 0) is
//! read again from the file. A one-shot body would fail there (`NotReplayable`).

use std::time::Duration;

use hoist_testkit::FakeRegistry;
use hoist_testkit::fake::Fault;
use hoist_testkit::images::{Entry, ImageSpec, LayerSpec};
use hoist_transport::copy::{CopyOptions, copy};
use hoist_transport::transports::ImageRef;
use hoist_transport::transports::any::{AnyDestination, AnySource, OpenOptions};
use hoist_types::NoProgress;

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_chunk_is_replayed_from_the_layout_file() {
    let t = tempfile::tempdir().unwrap();
    // One incompressible 3 MiB layer: three 1 MiB chunks.
    let spec = ImageSpec::oci().layer(LayerSpec::gzip([
        Entry::dir("data"),
        Entry::random_file("data/blob.bin", 3 * MIB as usize, 11),
    ]));
    let built = spec.write_layout(&t.path().join("layout"), "v1").unwrap();
    let layer = built.layers[0].blob.clone();
    assert!(layer.size > 2 * MIB, "the layer must span several chunks");

    let fake = FakeRegistry::start();
    fake.accept_pushes(true);
    // The second PATCH of the upload is refused: the fallback needs byte 0 again.
    fake.inject(Fault::Status(416).on_upload("PATCH").skip(1));

    let mut opts = OpenOptions::default();
    opts.pull.registry.connect_timeout = Duration::from_secs(5);
    opts.pull.registry.read_timeout = Duration::from_secs(20);
    opts.pull.registry.upload.monolithic_threshold = MIB;
    opts.pull.registry.upload.chunk_size = MIB;
    let src_ref: ImageRef = format!("oci:{}:v1", t.path().join("layout").display())
        .parse()
        .unwrap();
    let dst_ref: ImageRef = format!("docker://{}/replay/app:v1", fake.host_port())
        .parse()
        .unwrap();
    let src = AnySource::open(&src_ref, &opts).await.unwrap();
    let dst = AnyDestination::open(&dst_ref, &opts).await.unwrap();
    let report = copy(&src, dst, &CopyOptions::default(), &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("the push should replay from the file: {e}"));
    assert_eq!(
        report.digest.as_ref(),
        Some(&built.manifest.digest.parse().unwrap())
    );

    // The registry got the layer whole, through the fallback PUT after the refused PATCH.
    assert_eq!(
        fake.blob("replay/app", &layer.digest)
            .as_deref()
            .map(<[u8]>::len),
        Some(layer.size as usize)
    );
    let methods: Vec<(String, u16)> = fake
        .upload_requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert!(
        methods.contains(&("PATCH".to_owned(), 416)),
        "the fault never hit: {methods:?}"
    );
}
