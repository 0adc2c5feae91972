//! hoist's unpack against the peer: for each test image (whiteouts, opaque dirs, hardlinks,
//! symlinks, xattrs, setuid, devices, fifos, long names, type changes), `hoist_unpack` and
//! `umoci unpack` give the same tree (path, type, mode, owner, size, content hash, link target,
//! xattrs, hardlinks). The flattened export, extracted with GNU tar, gives it too. Needs root.

mod common;

use std::path::Path;
use std::process::Command;

use hoist_store::Store;
use hoist_testkit::images::{self, EntryKind as K, ImageSpec};
use hoist_testkit::tree::{Compare, Tree};
use hoist_testkit::{Need, require, require_peers};
use hoist_types::NoProgress;
use hoist_unpack::{Limits, UnpackError, UnpackOptions};

fn images_under_test() -> Vec<(&'static str, ImageSpec)> {
    let mut special = common::special_image();
    // A block device too (the generator has no shorthand for it).
    let mut blk = images::Entry::char_device("dev/loop0", 7, 0);
    blk.kind = K::BlockDevice(7, 0);
    special = special.layer(images::LayerSpec::gzip([blk]));
    vec![
        ("multi", images::sample_multi_layer()),
        ("docker", images::sample_docker()),
        ("special", special),
    ]
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn umoci_tree(layout: &Path, tag: &str, work: &Path) -> Tree {
    let bundle = work.join(format!("umoci-{tag}"));
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    Tree::scan(&bundle.join("rootfs")).unwrap()
}

#[test]
fn unpack_matches_umoci_and_export_matches_unpack() {
    require_peers!(Peer::Umoci);
    require!(Need::Root);
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let store = Store::open(t.path().join("store")).unwrap();
    for (tag, spec) in images_under_test() {
        // umoci 0.4.7 reads only OCI manifests: it gets the same layers in an OCI image.
        let built = spec.build().unwrap();
        spec.clone()
            .format(images::ImageFormat::Oci)
            .write_layout(&layout, tag)
            .unwrap();
        let rec = common::load(&store, &built, &format!("test/{tag}:latest"));
        let target = t.path().join(format!("hoist-{tag}"));
        let opts = UnpackOptions::default();
        let report = hoist_unpack::unpack_image(&store, &rec, &target, &opts, &NoProgress).unwrap();
        assert_eq!(report.layers.len(), built.layers.len());
        let ours = Tree::scan(&target).unwrap();
        let theirs = umoci_tree(&layout, tag, t.path());
        theirs.assert_same(
            &ours,
            &Compare::default(),
            &format!("{tag}: umoci vs hoist"),
        );

        // The export, extracted by GNU tar, is the same tree.
        let tar_path = t.path().join(format!("{tag}.tar"));
        let f = std::fs::File::create(&tar_path).unwrap();
        hoist_unpack::export(
            &store,
            &rec,
            std::io::BufWriter::new(f),
            &Limits::default(),
            &NoProgress,
        )
        .unwrap();
        let x = t.path().join(format!("x-{tag}"));
        std::fs::create_dir(&x).unwrap();
        run(Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(&tar_path)
            .arg("-C")
            .arg(&x));
        let exported = Tree::scan(&x).unwrap();
        // GNU tar leaves the extraction directory's own metadata alone.
        let cmp = Compare {
            root_meta: false,
            ..Compare::default()
        };
        ours.assert_same(&exported, &cmp, &format!("{tag}: unpack vs export"));
    }
}

#[test]
fn rootless_unpack_records_owners_and_skips_devices() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let built = common::special_image().build().unwrap();
    let rec = common::load(&store, &built, "test/special:latest");
    let target = t.path().join("rootless");
    let opts = UnpackOptions {
        rootless: true,
        ..UnpackOptions::default()
    };
    hoist_unpack::unpack_image(&store, &rec, &target, &opts, &NoProgress).unwrap();
    let tree = Tree::scan(&target).unwrap();
    assert!(tree.get("dev/null").is_none(), "devices are skipped");
    let private = tree.get("private").unwrap();
    assert_eq!(
        private.xattrs.get(hoist_unpack::ROOTLESS_XATTR),
        Some(&hoist_unpack::rootless_payload(1000, 1000).unwrap())
    );
    assert_eq!(tree.get("bin/sgid").unwrap().mode, 0o755, "setgid dropped");
    assert_eq!(
        tree.get("ro-dir").unwrap().mode,
        0o555,
        "final directory modes"
    );
    assert!(tree.get("ro-dir/g").is_some());
}

#[test]
fn a_bad_diff_id_publishes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let built = images::sample_multi_layer().build().unwrap();
    let mut rec = common::load(&store, &built, "test/multi:latest");
    // The record lies about the last layer's diff ID.
    let last = rec.diff_ids.len() - 1;
    rec.diff_ids[last] = hoist_types::Digest::sha256_of(b"not this layer");
    let target = t.path().join("out");
    let err = hoist_unpack::unpack_image(
        &store,
        &rec,
        &target,
        &UnpackOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(err.root_cause(), UnpackError::DiffIdMismatch { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&rec.layers[last].digest.to_string()),
        "{err}"
    );
    assert!(!target.exists());
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "only the store is left: {leftovers:?}");
    // Export checks too, before writing anything.
    let mut out = Vec::new();
    assert!(hoist_unpack::export(&store, &rec, &mut out, &Limits::default(), &NoProgress).is_err());
    assert!(out.is_empty());
}

#[test]
fn id_maps_shift_owners_in_root_mode() {
    require!(Need::Root);
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let rec = common::load(
        &store,
        &images::sample_multi_layer().build().unwrap(),
        "test/multi:latest",
    );
    let opts = UnpackOptions {
        uid_map: vec!["0:100000:65536".parse().unwrap()],
        gid_map: vec!["0:200000:65536".parse().unwrap()],
        ..UnpackOptions::default()
    };
    let target = t.path().join("shifted");
    hoist_unpack::unpack_image(&store, &rec, &target, &opts, &NoProgress).unwrap();
    let tree = Tree::scan(&target).unwrap();
    let owned = tree.get("srv/owned").unwrap();
    assert_eq!((owned.uid, owned.gid), (101_000, 201_000));
    let hello = tree.get("usr/bin/hello").unwrap();
    assert_eq!((hello.uid, hello.gid), (100_000, 200_000));
    assert_eq!(
        tree.get("usr/bin/suid").unwrap().mode,
        0o4755,
        "setuid survives the chown"
    );
    // An owner outside the map is an error naming it.
    let rec = common::load(
        &store,
        &common::special_image().build().unwrap(),
        "test/special:latest",
    );
    let err = hoist_unpack::unpack_image(&store, &rec, &t.path().join("no"), &opts, &NoProgress)
        .unwrap_err();
    // The failure inside the layer (the error's source) names the owner.
    assert!(err.root_cause().to_string().contains("3000000"), "{err:?}");
    assert!(!t.path().join("no").exists());
}
