//! Copies from a registry resume across runs into layouts too: a `hoist copy docker://…
//! oci:DIR` killed with SIGKILL half-way through a 300 MiB blob keeps what arrived in a
//! partial file beside the layout's blobs (never visible to readers of the layout), and
//! the next run fetches only the rest, so the blob crosses the wire less than 1.5 times
//! in total, as it does for `hoist pull`.

mod transfer_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use hoist_testkit::fake::{FakeRegistry, Fault};
use serde_json::Value;
use transfer_support::{Env, MIB, image};

/// The `offset` recorded in the `.meta` of a layout's partial download, if readable.
fn partial_offset(layout: &std::path::Path, hex: &str) -> Option<u64> {
    let meta = layout.join(format!(".hoist-ingest/partial-sha256-{hex}.meta"));
    let text = std::fs::read(meta).ok()?;
    let v: Value = serde_json::from_slice(text.trim_ascii()).ok()?;
    v["offset"].as_u64()
}

#[test]
fn a_copy_to_an_oci_layout_killed_mid_blob_resumes_across_runs() {
    let fake = FakeRegistry::start();
    let img = image(&[(300 * MIB, 12)], "resume300");
    fake.push_image("ns/big", "v1", &img);
    let (d, size) = (img.layers[0].blob.digest.clone(), img.layers[0].blob.size);
    let hex = d.strip_prefix("sha256:").unwrap().to_owned();
    // Every GET of the big layer is capped at 40 MiB/s, so the kill lands mid-blob (the
    // large blob goes over Range slices, each capped too).
    fake.inject(Fault::Throttle(40 * MIB as u64).on_blob(&d).forever());
    let env = Env::new();
    let layout = env.path("layout");
    let src = format!("docker://{}", fake.image_ref("ns/big:v1"));
    let dst = format!("oci:{}:v1", layout.display());

    let mut child = env
        .std_cmd()
        .args(["copy", &src, &dst])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the partial has recorded half the blob, then SIGKILL.
    let t = Instant::now();
    let kept = loop {
        if let Some(o) = partial_offset(&layout, &hex)
            && o >= size / 2
        {
            break o;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no partial download kept beside the layout's blobs"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "hoist ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let blob = layout.join("blobs/sha256").join(&hex);
    assert!(!blob.exists(), "nothing partial is a blob of the layout");
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap_or_default();
    assert!(
        !index.contains("\"v1\""),
        "no name before the commit: {index}"
    );
    let sent_first = fake.blob_bytes_sent(&d);
    assert!(sent_first >= kept && sent_first < size);

    let out = env.hoist(&["copy", &src, &dst]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The layout holds the verified blob; the partial and its directory are gone.
    let bytes = std::fs::read(&blob).unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(hoist_testkit::images::sha256_digest(&bytes), d);
    assert!(!layout.join(".hoist-ingest").exists());
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    assert!(index.contains("\"v1\""), "{index}");
    let total = fake.blob_bytes_sent(&d);
    eprintln!(
        "blob {size} bytes: kept {kept} at the kill, {sent_first} sent before it, {total} in total ({:.2}x)",
        total as f64 / size as f64
    );
    assert!(
        total < size + size / 2,
        "{total} bytes crossed the wire for a {size}-byte blob"
    );
}

#[test]
fn a_registry_to_registry_copy_replays_a_broken_upload_from_the_source() {
    // Two registries, so the blob cannot be mounted: it must be uploaded.
    let fake = FakeRegistry::start();
    let dest = FakeRegistry::start();
    dest.accept_pushes(true);
    // 40 MiB: a chunked upload of two PATCHes (32 MiB chunks).
    let img = image(&[(40 * MIB, 13)], "replay");
    fake.push_image("ns/src", "v1", &img);
    let d = img.layers[0].blob.digest.clone();
    // The second PATCH is refused: the upload must start again from byte 0, which a
    // one-shot stream cannot give; the source's reader fetches it again.
    dest.inject(Fault::Status(416).on_upload("PATCH").skip(1));
    let env = Env::new();
    let src = format!("docker://{}", fake.image_ref("ns/src:v1"));
    let dst = format!("docker://{}", dest.image_ref("ns/dst:v1"));
    let out = env.hoist(&["copy", &src, &dst]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = dest.blob("ns/dst", &d).expect("the layer was pushed");
    assert_eq!(hoist_testkit::images::sha256_digest(&pushed), d);
    // The source was read more than once: the replay came from the reader.
    assert!(fake.blob_bytes_sent(&d) > img.layers[0].blob.size);
}
