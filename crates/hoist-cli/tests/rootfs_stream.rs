//! A cold `hoist rootfs REF --format ext4|erofs` builds while the layers download (issue
//! 14): the image is byte for byte the one built after a separate pull, and a corrupt or
//! failed download leaves no image, no cache entry, no output and a clean store. A cold
//! `hoist unpack REF DIR` unpacks the layers as they download, the same way.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use hoist_testkit::fake::{FakeRegistry, Fault};
use hoist_testkit::images::{BuiltImage, sample_multi_layer};
use hoist_testkit::tree::{Compare, Tree};
use serde_json::Value;

fn hoist(dir: &Path, store: &str, args: &[&str]) -> Output {
    support::hoist(dir)
        .arg("--store")
        .arg(dir.join(store))
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, store: &str, args: &[&str]) -> Value {
    let out = hoist(dir, store, args);
    assert!(
        out.status.success(),
        "hoist {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn sha256(p: &Path) -> String {
    hoist_types::Digest::sha256_of(&std::fs::read(p).unwrap()).to_string()
}

/// Entries of the store's rootfs cache (none after a failed build).
fn cache_entries(store: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(store.join("hoist/rootfs")) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The testkit's multi-layer image served as `ns/app:1` by a fake registry, and its
/// reference.
fn served() -> (FakeRegistry, BuiltImage, String) {
    let fake = FakeRegistry::start();
    let img = sample_multi_layer().build().unwrap();
    fake.push_image("ns/app", "1", &img);
    let r = fake.image_ref("ns/app:1");
    (fake, img, r)
}

#[test]
fn building_while_pulling_gives_the_image_of_a_build_after_the_pull() {
    let (fake, img, r) = served();
    // The largest layer arrives slowly, so the build reads it while it downloads.
    let big = img.layers.iter().max_by_key(|l| l.blob.size).unwrap();
    fake.inject(
        Fault::Throttle(64 << 10)
            .on_blob(&big.blob.digest)
            .forever(),
    );
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    for format in ["ext4", "erofs"] {
        let (cold, pulled) = (format!("cold-{format}"), format!("pulled-{format}"));
        let out = dir.join(format!("{cold}.img"));
        let o = hoist(
            dir,
            &cold,
            &[
                "--progress",
                "plain",
                "rootfs",
                &r,
                "--format",
                format,
                "-o",
                out.to_str().unwrap(),
            ],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{format}: {err}");
        // Built from the downloads, not again from the store after the pull.
        assert!(err.contains(&format!("pulled {r}")), "{err}");
        assert!(!err.contains("building from the store"), "{err}");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["image"], img.config.digest);
        assert_eq!(v["cached"], false);
        // The reference: pulled first, then built from the store.
        ok(dir, &pulled, &["pull", &r]);
        let want = dir.join(format!("{pulled}.img"));
        ok(
            dir,
            &pulled,
            &[
                "rootfs",
                &r,
                "--pull",
                "never",
                "--format",
                format,
                "-o",
                want.to_str().unwrap(),
            ],
        );
        assert_eq!(sha256(&out), sha256(&want), "{format}: same bytes");
        // The pull committed the image, tagged, and the store is clean.
        let images = ok(dir, &cold, &["images", "--format", "json"]);
        assert!(images.to_string().contains(&img.config.digest), "{images}");
        support::assert_fsck_clean(dir, &dir.join(&cold));
        // Built once: the second time it is cached, with no pull.
        let again = ok(dir, &cold, &["rootfs", &r, "--format", format]);
        assert_eq!(again["cached"], true);
    }
}

#[test]
fn a_corrupt_download_leaves_no_image_and_a_clean_store() {
    let (fake, img, r) = served();
    // The last layer is served with one byte changed, every time.
    let bad = &img.layers.last().unwrap().blob.digest;
    fake.inject(Fault::WrongBytes.on_blob(bad).forever());
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    for format in ["ext4", "erofs"] {
        let out = dir.join(format!("{format}.img"));
        let o = hoist(
            dir,
            "s",
            &[
                "rootfs",
                "--retry-times",
                "0",
                &r,
                "--format",
                format,
                "-o",
                out.to_str().unwrap(),
            ],
        );
        assert!(
            !o.status.success(),
            "{format}: a corrupt layer was accepted"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(bad), "{format}: {err}");
        assert!(!out.exists(), "{format}: an output was written");
        assert!(cache_entries(&dir.join("s")).is_empty(), "{format}: cached");
        let images = ok(dir, "s", &["images", "--format", "json"]);
        assert_eq!(images, serde_json::json!([]), "{format}");
        support::assert_fsck_clean(dir, &dir.join("s"));
    }
}

#[test]
fn unpacking_while_pulling_gives_the_tree_of_an_unpack_after_the_pull() {
    let (fake, img, r) = served();
    // The base layer arrives slowly: the unpack starts on it while it downloads.
    let base = &img.layers[0].blob.digest;
    fake.inject(Fault::Throttle(64 << 10).on_blob(base).forever());
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let cold = dir.join("cold-rootfs");
    let o = hoist(
        dir,
        "cold",
        &["--progress", "json", "unpack", &r, cold.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // The base layer was being unpacked before the pull ended (events in order, one per
    // line).
    let line = |what: &dyn Fn(&str) -> bool| err.lines().position(what);
    let unpack_started = line(&|l: &str| {
        l.contains(&format!(r#""digest":"{base}""#)) && l.contains(r#""endpoint":"unpack""#)
    })
    .unwrap_or_else(|| panic!("no unpack event:\n{err}"));
    let pulled = line(&|l: &str| l.contains(&format!("pulled {r}")))
        .unwrap_or_else(|| panic!("no pull status:\n{err}"));
    assert!(unpack_started < pulled, "unpacked after the pull:\n{err}");
    // The same tree as an unpack from the store after a separate pull.
    ok(dir, "pulled", &["pull", &r]);
    let want = dir.join("pulled-rootfs");
    ok(
        dir,
        "pulled",
        &["unpack", "--pull", "never", &r, want.to_str().unwrap()],
    );
    let (got, want) = (Tree::scan(&cold).unwrap(), Tree::scan(&want).unwrap());
    want.assert_same(&got, &Compare::default(), "unpack while pulling");
    let images = ok(dir, "cold", &["images", "--format", "json"]);
    assert!(images.to_string().contains(&img.config.digest), "{images}");
    support::assert_fsck_clean(dir, &dir.join("cold"));
}

#[test]
fn a_corrupt_download_leaves_no_unpacked_directory() {
    let (fake, img, r) = served();
    let bad = &img.layers.last().unwrap().blob.digest;
    fake.inject(Fault::WrongBytes.on_blob(bad).forever());
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let target = dir.join("rootfs");
    let o = hoist(
        dir,
        "s",
        &["unpack", "--retry-times", "0", &r, target.to_str().unwrap()],
    );
    assert!(!o.status.success(), "a corrupt layer was accepted");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(bad), "{err}");
    assert!(!target.exists(), "a directory was published");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("rootfs"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let images = ok(dir, "s", &["images", "--format", "json"]);
    assert_eq!(images, serde_json::json!([]));
    support::assert_fsck_clean(dir, &dir.join("s"));
}
