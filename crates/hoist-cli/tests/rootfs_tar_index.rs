//! `hoist rootfs REF --format erofs --tar-index`: the index image, its tars as store
//! content (written once per layer, shared, shown by `hoist df`, freed by `hoist gc` with
//! the last image that has the layer, re-hashed by `hoist fsck` and written again after a
//! repair removed one), the JSON result naming the devices in order, the mounted index
//! (root) equal to `hoist unpack`, and refusals that leave the store clean. Images come
//! from the real Distribution registry.

mod support;

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use hoist_testkit::images::{Entry, ImageSpec, LayerSpec};
use hoist_testkit::registry::Registry;
use hoist_testkit::tree::{Compare, Tree};
use hoist_testkit::{require_peers, skopeo};
use serde_json::Value;
use support::Env;

/// The tar of `diff_id` in `env`'s store.
fn tar(env: &Env, diff_id: &str) -> PathBuf {
    env.store()
        .join("blobs/sha256")
        .join(diff_id.strip_prefix("sha256:").unwrap())
}

fn fsck_clean(env: &Env) {
    support::assert_fsck_clean(env.dir.path(), &env.store());
}

fn base_layer() -> LayerSpec {
    LayerSpec::gzip([
        Entry::dir("etc"),
        Entry::file("etc/os-release", "ID=hoist-test\n"),
        Entry::random_file("base.bin", 200_000, 1),
        Entry::dir("opt"),
        Entry::file("opt/gone", "whited out above"),
        Entry::file("opt/replaced", "old"),
    ])
}

fn app(name: &str, seed: u64) -> ImageSpec {
    ImageSpec::oci().layer(base_layer()).layer(LayerSpec::gzip([
        Entry::random_file(&format!("{name}.bin"), 100_000, seed),
        Entry::dir("opt"),
        Entry::whiteout("opt/gone"),
        Entry::file("opt/replaced", format!("new, from {name}")),
        Entry::hardlink("opt/replaced-too", "opt/replaced"),
        Entry::symlink("opt/link", "replaced"),
    ]))
}

fn devices(v: &Value) -> Vec<PathBuf> {
    v["tar_index"]["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no tar_index.devices in {v:#}"))
        .iter()
        .map(|d| PathBuf::from(d.as_str().unwrap()))
        .collect()
}

fn stamp(p: &Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

#[test]
fn tar_index_tars_are_store_content_and_the_index_mounts() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let a = skopeo::push_spec(&app("a", 10), &reg, "ns/a:v1").unwrap();
    let b = skopeo::push_spec(&app("b", 11), &reg, "ns/b:v1").unwrap();
    let env = Env::new();
    let (ra, rb) = (reg.image_ref("ns/a:v1"), reg.image_ref("ns/b:v1"));
    env.ok(&["pull", &ra]);

    // The index: erofs, the devices the tars of the layers in order, the mount data.
    let v = env.json(&["rootfs", &ra, "--format", "erofs", "--tar-index"]);
    assert_eq!(v["format"], "erofs", "{v:#}");
    assert_eq!(v["cached"], false);
    let want: Vec<PathBuf> = a.diff_ids().iter().map(|d| tar(&env, d)).collect();
    let devs = devices(&v);
    assert_eq!(devs, want, "devices are the layer tars, base first");
    let opts = v["tar_index"]["options"].as_str().unwrap();
    assert_eq!(
        opts,
        format!(
            "ro,device={},device={}",
            want[0].display(),
            want[1].display()
        )
    );
    assert!(v["tar_index"]["mountable"].is_boolean(), "{v:#}");
    for (d, diff) in devs.iter().zip(a.diff_ids()) {
        let bytes = std::fs::read(d).unwrap();
        assert_eq!(hoist_testkit::images::sha256_digest(&bytes), diff);
    }
    let index = PathBuf::from(v["rootfs_path"].as_str().unwrap());
    let index_bytes = std::fs::read(&index).unwrap();
    let tar_bytes: u64 = devs
        .iter()
        .map(|d| std::fs::metadata(d).unwrap().len())
        .sum();
    assert!(
        (index_bytes.len() as u64) * 4 < tar_bytes,
        "the index holds no data"
    );

    // df shows the tars; the second build is cached and writes no tar.
    let df = env.json(&["df", "--format", "json"]);
    assert_eq!(df["layer_tars"]["count"], 2, "{df:#}");
    assert_eq!(df["layer_tars"]["bytes"], tar_bytes);
    let stamps: Vec<_> = devs.iter().map(|d| stamp(d)).collect();
    let again = env.json(&["rootfs", &ra, "--format", "erofs", "--tar-index"]);
    assert_eq!(again["cached"], true);
    assert_eq!(devices(&again), devs);
    assert_eq!(devs.iter().map(|d| stamp(d)).collect::<Vec<_>>(), stamps);
    // A forced rebuild gives the same bytes.
    let forced = env.json(&["rootfs", &ra, "--format", "erofs", "--tar-index", "--force"]);
    assert_eq!(forced["cached"], false);
    assert!(
        std::fs::read(&index).unwrap() == index_bytes,
        "a rebuild differs"
    );

    // Another image sharing the base layer reuses its tar (pulled by the command).
    let vb = env.json(&["rootfs", &rb, "--format", "erofs", "--tar-index"]);
    let devs_b = devices(&vb);
    assert_eq!(devs_b[0], devs[0]);
    assert_eq!(
        stamp(&devs_b[0]),
        stamps[0],
        "the shared tar was written again"
    );
    assert_eq!(devs_b[1], tar(&env, &b.diff_ids()[1]));
    let df = env.json(&["df", "--format", "json"]);
    assert_eq!(df["layer_tars"]["count"], 3, "{df:#}");
    fsck_clean(&env);

    // Mounted (root), the index holds what `hoist unpack` writes.
    let mountable = match (
        hoist_unpack::is_root(),
        hoist_mkfs::erofs::tar_index::kernel_support(None),
    ) {
        (false, _) => Err("mounting needs root".to_string()),
        (true, r) => r.map(drop),
    };
    if let Err(why) = &mountable {
        hoist_testkit::skip_or_fail(hoist_testkit::this_test!(), why);
    } else {
        assert_eq!(v["tar_index"]["mountable"], true, "{v:#}");
        let dir = env.dir.path().join("unpacked");
        env.ok(&["unpack", &ra, dir.to_str().unwrap()]);
        let want = Tree::scan(&dir).unwrap();
        let fd = hoist_mkfs::erofs::tar_index::mount_detached(&index, &devs).unwrap();
        let got = Tree::scan(Path::new(&format!("/proc/self/fd/{}/.", fd.as_raw_fd()))).unwrap();
        want.assert_same(&got, &Compare::default(), "unpack vs mounted tar index");
    }

    // Per layer: one index per layer, each with its own tar as its one device.
    let pl = env.json(&[
        "rootfs",
        &ra,
        "--format",
        "erofs",
        "--tar-index",
        "--per-layer",
    ]);
    let layers = pl["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{pl:#}");
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(devices(l), vec![devs[i].clone()], "{pl:#}");
        let path = PathBuf::from(l["path"].as_str().unwrap());
        assert!(path.exists());
        if mountable.is_ok() {
            assert_eq!(l["tar_index"]["mountable"], true, "{pl:#}");
        }
    }

    // fsck re-hashes the tars: a flipped byte is found, and the indexes that need that
    // tar are broken; the repair removes the tar and those entries and keeps the image;
    // the next build writes both again, byte for byte.
    let mut bytes = std::fs::read(&devs[1]).unwrap();
    let good = bytes.clone();
    bytes[600] ^= 0xff;
    std::fs::write(&devs[1], &bytes).unwrap();
    let out = env.run(&["fsck", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2), "fsck finds the corrupt tar");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"corrupt-blob"), "{report:#}");
    assert!(kinds.contains(&"broken-rootfs"), "{report:#}");
    assert!(
        report.to_string().contains(&a.diff_ids()[1][7..]),
        "{report:#}"
    );
    env.run(&["fsck", "--repair"]);
    assert!(!devs[1].exists(), "the repair removed the corrupt tar");
    assert!(
        !index.exists(),
        "the repair removed the index that needs it"
    );
    fsck_clean(&env);
    let again = env.json(&["rootfs", &ra, "--format", "erofs", "--tar-index"]);
    assert_eq!(again["cached"], false, "{again:#}");
    assert!(
        std::fs::read(&devs[1]).unwrap() == good,
        "the tar written again"
    );
    assert!(
        std::fs::read(&index).unwrap() == index_bytes,
        "the index again"
    );

    // gc frees a tar with the last image that has its layer.
    env.ok(&["rmi", &ra]);
    env.ok(&["gc"]);
    assert!(!devs[1].exists(), "a's own tar is gone");
    assert!(devs[0].exists(), "the shared tar stays for b");
    let df = env.json(&["df", "--format", "json"]);
    assert_eq!(df["layer_tars"]["count"], 2, "{df:#}");
    env.ok(&["rmi", &rb]);
    env.ok(&["gc"]);
    assert!(
        !devs[0].exists() && !devs_b[1].exists(),
        "every tar is gone"
    );
    fsck_clean(&env);
}

#[test]
fn tar_index_refusals_are_clear_and_leave_the_store_clean() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    skopeo::push_spec(&app("a", 10), &reg, "ns/a:v1").unwrap();
    let env = Env::new();
    let ra = reg.image_ref("ns/a:v1");
    env.ok(&["pull", &ra]);
    for (args, want) in [
        (
            vec!["--format", "ext4", "--tar-index"],
            "a tar index is an erofs image",
        ),
        (
            vec!["--format", "erofs", "--tar-index", "--verity"],
            "a tar index takes no dm-verity tree",
        ),
    ] {
        let mut all = vec!["rootfs", ra.as_str()];
        all.extend(args.iter().copied());
        // Refused, with the store as it was.
        let err = env.fails(&all);
        assert!(err.contains(want), "{all:?}: {err}");
        let df = env.json(&["df", "--format", "json"]);
        assert_eq!(df["layer_tars"]["count"], 0, "{df:#}");
        fsck_clean(&env);
    }
}
