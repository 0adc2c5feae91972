//! `hoist unpack`, `unpack --bundle`, `export` and `rootfs` end to end: an image pushed with
//! skopeo to the real Distribution registry, pulled with `hoist pull`, then turned into root
//! filesystems. Needs root (owners, devices) and the peers.

mod support;

use support::Env;

use std::path::Path;
use std::time::{Duration, Instant};

use hoist_testkit::images::{self, BuiltImage, Entry, LayerSpec};
use hoist_testkit::registry::Registry;
use hoist_testkit::skopeo;
use hoist_testkit::tree::{Compare, Tree};
use hoist_testkit::{Need, require, require_peers};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Pushes the sample image (plus a device layer) and pulls it into the env's store.
fn pulled(env: &Env, reg: &Registry) -> (String, BuiltImage) {
    let spec = images::sample_multi_layer().layer(LayerSpec::gzip([
        Entry::dir("dev"),
        Entry::char_device("dev/null", 1, 3),
    ]));
    let built = skopeo::push_spec(&spec, reg, "ns/app:v1").unwrap();
    let r = reg.image_ref("ns/app:v1");
    env.ok(&["-q", "pull", &r]);
    (r, built)
}

#[test]
fn unpack_bundle_export_and_rootfs() {
    require_peers!(Peer::Registry, Peer::Skopeo, Peer::Mke2fs, Peer::MkfsErofs);
    require!(Need::Root);
    let reg = Registry::plain();
    let env = Env::new();
    let (r, built) = pulled(&env, &reg);

    // unpack
    let dir = env.path("rootfs");
    let out = env.ok(&["--progress", "plain", "unpack", &r, s(&dir)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unpacked") && stderr.contains("4 layers"),
        "{stderr}"
    );
    let tree = Tree::scan(&dir).unwrap();
    assert!(tree.get("etc/hostname").is_none(), "whited out");
    assert!(tree.get("opt/old.txt").is_none(), "opaque dir");
    assert!(tree.get("opt/readme.txt").is_some());
    assert_eq!(tree.get("usr/bin/suid").unwrap().mode, 0o4755);
    assert_eq!(tree.get("srv/owned").unwrap().uid, 1000);
    // A non-empty target is refused and left alone.
    let err = env.fails(&["unpack", &r, s(&dir)]);
    assert!(err.contains("not an empty directory"), "{err}");
    assert_eq!(Tree::scan(&dir).unwrap(), tree);

    // unpack --bundle
    let bundle = env.path("bundle");
    env.ok(&[
        "unpack",
        "--bundle",
        &built.config.digest[7..19],
        s(&bundle),
    ]);
    let spec: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        spec["process"]["args"],
        serde_json::json!(["/usr/bin/hello", "--greet", "world"])
    );
    assert_eq!(spec["process"]["cwd"], "/srv");
    assert_eq!(
        spec["process"]["user"],
        serde_json::json!({"uid": 1000, "gid": 1000})
    );
    assert!(
        spec["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&Value::from("APP_MODE=test"))
    );
    assert_eq!(
        spec["annotations"]["org.opencontainers.image.exposedPorts"],
        "8080/tcp"
    );
    assert_eq!(spec["root"]["path"], "rootfs");
    tree.assert_same(
        &Tree::scan(&bundle.join("rootfs")).unwrap(),
        &Compare::default(),
        "bundle rootfs",
    );

    // export, extracted by GNU tar, is the unpacked tree.
    let tar = env.path("flat.tar");
    env.ok(&["export", &r, "-o", s(&tar)]);
    let x = env.path("x");
    std::fs::create_dir(&x).unwrap();
    let st = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    let cmp = Compare {
        root_meta: false,
        ..Compare::default()
    };
    tree.assert_same(&Tree::scan(&x).unwrap(), &cmp, "export");
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listing.stdout).contains(".wh."));
    // export to stdout gives the same bytes.
    let stdout = env.ok(&["-q", "export", &r, "-o", "-"]).stdout;
    assert_eq!(stdout, std::fs::read(&tar).unwrap());

    // rootfs --format ext4: cold, warm (cached, at once), forced.
    let cold = env.json(&["rootfs", &r, "--format", "ext4"]);
    assert_eq!(cold["cached"], false);
    assert_eq!(cold["format"], "ext4");
    assert_eq!(cold["image"], built.config.digest);
    assert_eq!(cold["lower_fs_types"], serde_json::json!(["ext4"]));
    let path = cold["rootfs_path"].as_str().unwrap().to_string();
    assert!(path.starts_with(s(&env.path("store"))), "{path}");
    assert_eq!(cold["lower_paths"], serde_json::json!([path]));
    assert_eq!(cold["layers"].as_array().unwrap().len(), 4);
    assert_eq!(cold["layers"][0]["diff_id"], built.layers[0].diff_id);
    assert_eq!(cold["chain_id"], cold["layers"][3]["chain_id"]);
    assert_eq!(cold["run_config"]["user"], "1000:1000");
    assert_eq!(cold["run_config"]["workdir"], "/srv");
    assert_eq!(
        cold["run_config"]["entrypoint"],
        serde_json::json!(["/usr/bin/hello"])
    );
    assert_eq!(
        cold["run_config"]["cmd"],
        serde_json::json!(["--greet", "world"])
    );
    assert!(cold["size"].as_u64().unwrap() > 0);
    let ok = std::process::Command::new("e2fsck")
        .arg("-fn")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let start = Instant::now();
    let warm = env.json(&["rootfs", &r, "--format", "ext4"]);
    let warm_time = start.elapsed();
    assert_eq!(warm["cached"], true);
    assert_eq!(warm["rootfs_path"], cold["rootfs_path"]);
    assert!(warm_time < Duration::from_secs(5), "{warm_time:?}");
    let forced = env.json(&["rootfs", &r, "--format", "ext4", "--force"]);
    assert_eq!(forced["cached"], false);

    // Per layer, and -o.
    let per = env.json(&["rootfs", &r, "--format", "erofs", "--per-layer"]);
    assert_eq!(per["per_layer"], true);
    assert_eq!(per["lower_paths"].as_array().unwrap().len(), 4);
    assert_eq!(
        per["lower_fs_types"],
        serde_json::json!(["erofs", "erofs", "erofs", "erofs"])
    );
    assert_eq!(per["rootfs_path"], per["lower_paths"][0]);
    assert_eq!(per["layers"][2]["path"], per["lower_paths"][2]);
    let copy = env.path("out.erofs");
    let o = env.json(&["rootfs", &r, "--format", "erofs", "-o", s(&copy)]);
    assert_eq!(o["rootfs_path"], s(&copy));
    let ok = std::process::Command::new("fsck.erofs")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let d = env.json(&["rootfs", &r, "--format", "dir"]);
    tree.assert_same(
        &Tree::scan(Path::new(d["rootfs_path"].as_str().unwrap())).unwrap(),
        &Compare::default(),
        "rootfs dir",
    );
}

#[test]
fn concurrent_rootfs_builds_build_once() {
    require_peers!(Peer::Registry, Peer::Skopeo, Peer::MkfsErofs);
    require!(Need::Root);
    let reg = Registry::plain();
    let env = Env::new();
    let (r, _) = pulled(&env, &reg);
    let children: Vec<_> = (0..3)
        .map(|_| {
            let mut c = support::hoist_std(env.dir.path());
            c.env("HOIST_STORE", env.path("store"))
                .args(["-q", "rootfs", &r, "--format", "erofs"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let results: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    assert_eq!(results.iter().filter(|v| v["cached"] == false).count(), 1);
    assert!(
        results
            .iter()
            .all(|v| v["rootfs_path"] == results[0]["rootfs_path"])
    );
}

#[test]
fn a_corrupt_layer_names_its_digest_and_publishes_nothing() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let env = Env::new();
    let (r, built) = pulled(&env, &reg);
    // Damage the second layer's blob in the store (same size, different bytes).
    let digest = &built.layers[1].blob.digest;
    let blob = env.path("store").join("blobs/sha256").join(&digest[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let target = env.path("out");
    let err = env.fails(&["unpack", &r, s(&target)]);
    assert!(err.contains(digest.as_str()), "{err}");
    assert!(!target.exists());
    let err = env.fails(&["export", &r, "-o", s(&env.path("x.tar"))]);
    assert!(err.contains(digest.as_str()), "{err}");
    assert!(!env.path("x.tar").exists());
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
