//! The generator's layouts: deterministic, well-formed, and readable by umoci.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use hoist_testkit::images::{self, OciLayout, REF_NAME_ANNOTATION, sha256_digest};
use hoist_testkit::require_peers;

/// Every file of a directory tree, relative path → bytes.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn write_all_samples(dir: &Path) {
    images::sample_multi_layer()
        .write_layout(dir, "multi")
        .unwrap();
    images::sample_docker().write_layout(dir, "docker").unwrap();
    images::sample_zstd().write_layout(dir, "zstd").unwrap();
    images::sample_index().write_layout(dir, "index").unwrap();
}

#[test]
fn layouts_are_byte_identical_across_runs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_all_samples(a.path());
    write_all_samples(b.path());
    let (sa, sb) = (snapshot(a.path()), snapshot(b.path()));
    assert_eq!(sa, sb);
    // Every blob is named by its digest.
    for (path, bytes) in &sa {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256_digest(bytes), format!("sha256:{hex}"));
        }
    }
    assert_eq!(sa["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
}

#[test]
fn index_json_tags_and_retag() {
    let dir = tempfile::tempdir().unwrap();
    let a = images::sample_docker()
        .write_layout(dir.path(), "t")
        .unwrap();
    let idx = images::sample_index()
        .write_layout(dir.path(), "i")
        .unwrap();
    let layout = OciLayout::create(dir.path()).unwrap();
    let t = layout.find_tag("t").unwrap().unwrap();
    assert_eq!(t["digest"], a.manifest.digest.as_str());
    assert_eq!(t["mediaType"], images::DOCKER_MANIFEST);
    assert_eq!(t["annotations"][REF_NAME_ANNOTATION], "t");
    let i = layout.find_tag("i").unwrap().unwrap();
    assert_eq!(i["digest"], idx.index.digest.as_str());
    assert_eq!(i["mediaType"], images::OCI_INDEX);
    // Re-tagging replaces the entry.
    let z = images::sample_zstd().write_layout(dir.path(), "t").unwrap();
    let index = layout.index().unwrap();
    let tagged: Vec<_> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["annotations"][REF_NAME_ANNOTATION] == "t")
        .collect();
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0]["digest"], z.manifest.digest.as_str());
    // The index lists both platforms with their manifests.
    let doc: serde_json::Value = serde_json::from_slice(&idx.index_bytes).unwrap();
    let plats: Vec<String> = doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            format!("{}/{}/{}", p["os"], p["architecture"], p["variant"])
        })
        .collect();
    assert_eq!(
        plats,
        ["\"linux\"/\"amd64\"/null", "\"linux\"/\"arm64\"/\"v8\""]
    );
    let arm = idx
        .image_for(&images::Platform::new("linux", "arm64", Some("v8")))
        .unwrap();
    assert_eq!(doc["manifests"][1]["digest"], arm.manifest.digest.as_str());
    let zstd_layer = &z.layers[1];
    assert_eq!(zstd_layer.blob.media_type, images::OCI_LAYER_ZSTD);
    let raw = layout.read_blob(&zstd_layer.blob.digest).unwrap();
    assert_eq!(zstd::decode_all(raw.as_slice()).unwrap(), zstd_layer.tar);
    assert_eq!(sha256_digest(&zstd_layer.tar), zstd_layer.diff_id);
}

#[test]
fn umoci_unpacks_the_multi_layer_sample() {
    require_peers!(Peer::Umoci);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    images::sample_multi_layer()
        .write_layout(&layout, "multi")
        .unwrap();
    let bundle = dir.path().join("bundle");
    let mut cmd = std::process::Command::new("umoci");
    cmd.arg("unpack");
    // umoci needs --rootless when not root.
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        cmd.arg("--rootless");
    }
    let out = cmd
        .arg("--image")
        .arg(format!("{}:multi", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rf = bundle.join("rootfs");
    let read = |p: &str| std::fs::read_to_string(rf.join(p)).unwrap();
    assert_eq!(read("usr/bin/hello"), "#!/bin/sh\necho hello \"$@\"\n");
    assert_eq!(read("etc/app/config.toml"), "mode = \"test\"\n");
    assert_eq!(
        std::fs::read_link(rf.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        std::fs::read_link(rf.join("etc/app/current")).unwrap(),
        Path::new("config.toml")
    );
    let (a, b) = (
        std::fs::metadata(rf.join("usr/bin/hello")).unwrap(),
        std::fs::metadata(rf.join("usr/bin/hello-again")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hardlink");
    assert_eq!(a.mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::metadata(rf.join("usr/bin/suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert!(
        std::fs::metadata(rf.join("run/app.fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // Whiteout and opaque directory applied.
    assert!(!rf.join("etc/hostname").exists());
    assert!(!rf.join("opt/data.bin").exists() && !rf.join("opt/old.txt").exists());
    assert_eq!(read("opt/readme.txt"), "opaque replacement\n");
    let long = rf.join("usr/share/doc/hoist-testkit/a-directory-name-that-is-long-enough-to-need-a-gnu-long-name-record/file-with-a-long-name.txt");
    assert_eq!(std::fs::read_to_string(long).unwrap(), "long\n");
    // The runtime config carries the image config.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["cwd"], "/srv");
    assert_eq!(
        cfg["process"]["args"],
        serde_json::json!(["/usr/bin/hello", "--greet", "world"])
    );
}
