//! ext4 and erofs images, flattened and per layer, checked by the peers' own tools and read
//! back three ways:
//!
//! - every ext4 image passes `e2fsck -fn`, every erofs image `fsck.erofs`;
//! - the tree read back with `debugfs rdump` / `fsck.erofs --extract` equals the unpacked
//!   tree, in what those readers keep (rdump drops xattrs, device nodes, fifos and
//!   hardlinks; fsck.erofs 1.5 drops xattrs and hardlinks; both lose setuid, setgid or sticky
//!   bits);
//! - where `mount` works, the image loop-mounted (read-only, in a private mount namespace)
//!   equals the unpacked tree in everything: path, type, mode, owner, size, content, link
//!   target, xattrs, hardlinks; and the per-layer erofs images stacked as overlayfs lowers
//!   give the flattened tree;
//! - the per-layer directories merged by the overlay rules (`hoist_testkit::tree::
//!   merge_overlay`) equal the flattened tree.
//!
//! Needs root (device nodes, owners, overlay whiteouts).

#[path = "../../hoist-unpack/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_mkfs::{BuildOptions, BuildResult, ErofsWriter, Ext4Writer, Format, Size};
use hoist_store::{ImageRecord, Store};
use hoist_testkit::images::{self, ImageSpec};
use hoist_testkit::tree::{Compare, Tree, merge_overlay};
use hoist_testkit::{Need, require, require_peers, this_test};
use hoist_types::NoProgress;
use hoist_unpack::UnpackOptions;

fn images_under_test() -> Vec<(&'static str, ImageSpec)> {
    let mut blk = images::Entry::char_device("dev/loop0", 7, 0);
    blk.kind = images::EntryKind::BlockDevice(7, 0);
    vec![
        ("multi", images::sample_multi_layer()),
        (
            "special",
            common::special_image().layer(images::LayerSpec::gzip([blk])),
        ),
        ("zstd", images::sample_zstd()),
    ]
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build(store: &Store, rec: &ImageRecord, format: Format, per_layer: bool) -> BuildResult {
    build_with(store, rec, format, per_layer, Ext4Writer::Kernel, false)
}

fn build_with(
    store: &Store,
    rec: &ImageRecord,
    format: Format,
    per_layer: bool,
    ext4_writer: Ext4Writer,
    force: bool,
) -> BuildResult {
    let opts = BuildOptions {
        format: Some(format),
        per_layer,
        size: Size::Auto,
        force,
        output: None,
        unpack: UnpackOptions::default(),
        ext4_writer,
        // The reference writers here; hoist's own erofs writer: tests/erofs_native.rs.
        erofs_writer: ErofsWriter::MkfsDir,
        verity: false,
        tar_index: false,
    };
    hoist_mkfs::build_rootfs(store, rec, &opts, &NoProgress).unwrap()
}

/// Without ext4's lost+found, which mke2fs always creates.
fn no_lost_found(t: &Tree) -> Tree {
    t.filtered(|p, _| p != b"lost+found")
}

fn fsck(image: &Path, format: Format) {
    match format {
        Format::Ext4 => {
            ok(Command::new("e2fsck").arg("-fn").arg(image));
        }
        Format::Erofs => {
            ok(Command::new("fsck.erofs").arg(image));
        }
        Format::Dir => unreachable!(),
    }
}

/// The tree as the format's own reader extracts it, and what that reader keeps.
fn read_back(image: &Path, format: Format, out: &Path) -> (Tree, Compare) {
    std::fs::create_dir(out).unwrap();
    match format {
        Format::Ext4 => {
            ok(Command::new("debugfs")
                .arg("-R")
                .arg(format!("rdump / {}", out.display()))
                .arg(image));
            let cmp = Compare {
                xattrs: false,
                special_bits: false,
                hardlinks: false,
                specials: false,
                devices: false,
                root_meta: false,
                ..Compare::default()
            };
            (no_lost_found(&Tree::scan(out).unwrap()), cmp)
        }
        Format::Erofs => {
            ok(Command::new("fsck.erofs")
                .arg(format!("--extract={}", out.display()))
                .arg("--overwrite")
                .arg(image));
            let cmp = Compare {
                xattrs: false,
                special_bits: false,
                hardlinks: false,
                ..Compare::default()
            };
            (Tree::scan(out).unwrap(), cmp)
        }
        Format::Dir => unreachable!(),
    }
}

/// Mounts the images read-only in a private mount namespace (stacked with overlayfs when
/// there are several, base first) and copies the tree out with `cp -a`. `Err` says why
/// mounting was refused.
fn mount_copy(images: &[(PathBuf, Format)], out: &Path) -> Result<Tree, String> {
    let work = out.with_extension("mnt");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir(out).unwrap();
    let mut script = String::from("set -e\n");
    let mut lowers = Vec::new();
    for (i, (img, f)) in images.iter().enumerate() {
        let m = work.join(format!("l{i}"));
        std::fs::create_dir(&m).unwrap();
        let t = if *f == Format::Ext4 { "ext4" } else { "erofs" };
        script += &format!(
            "mount -t {t} -o loop,ro '{}' '{}'\n",
            img.display(),
            m.display()
        );
        lowers.push(m);
    }
    let top = if lowers.len() == 1 {
        lowers[0].clone()
    } else {
        let merged = work.join("merged");
        std::fs::create_dir(&merged).unwrap();
        let spec: Vec<String> = lowers
            .iter()
            .rev()
            .map(|l| l.display().to_string())
            .collect();
        script += &format!(
            "mount -t overlay overlay -o 'lowerdir={}' '{}'\n",
            spec.join(":"),
            merged.display()
        );
        merged
    };
    script += &format!("cp -a '{}/.' '{}/'\n", top.display(), out.display());
    let r = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if !r.status.success() {
        return Err(format!(
            "mount refused: {}",
            String::from_utf8_lossy(&r.stderr).trim()
        ));
    }
    Ok(Tree::scan(out).unwrap())
}

#[test]
fn images_pass_fsck_and_hold_the_unpacked_tree() {
    require_peers!(Peer::Mke2fs, Peer::MkfsErofs);
    require!(Need::Root);
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let mut mount_skipped: Option<String> = None;
    for (tag, spec) in images_under_test() {
        let built = spec.build().unwrap();
        let rec = common::load(&store, &built, &format!("test/{tag}:latest"));
        let reference = t.path().join(format!("{tag}-unpacked"));
        hoist_unpack::unpack_image(
            &store,
            &rec,
            &reference,
            &UnpackOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let want = Tree::scan(&reference).unwrap();

        // Per-layer directories merged by the overlay rules give the flattened tree.
        let dirs = build(&store, &rec, Format::Dir, true);
        assert_eq!(dirs.lower_paths.len(), rec.layers.len());
        let layer_trees: Vec<Tree> = dirs
            .lower_paths
            .iter()
            .map(|p| Tree::scan(p).unwrap())
            .collect();
        let merged = merge_overlay(&layer_trees);
        let cmp = Compare {
            hardlinks: false,
            ..Compare::default()
        };
        want.assert_same(
            &merged,
            &cmp,
            &format!("{tag}: flattened vs per-layer dirs merged"),
        );

        // ext4 both ways: written by the kernel through a loop mount, and by mke2fs -d.
        let writers = [
            (Format::Ext4, Ext4Writer::Kernel),
            (Format::Ext4, Ext4Writer::MkfsDir),
            (Format::Erofs, Ext4Writer::Kernel),
        ];
        for (n, (format, writer)) in writers.into_iter().enumerate() {
            let what = format!("{tag} {} {writer:?}", format.as_str());
            let force = writer == Ext4Writer::MkfsDir;
            let flat = build_with(&store, &rec, format, false, writer, force);
            let img = &flat.rootfs_path;
            fsck(img, format);
            let (tree, cmp) = read_back(img, format, &t.path().join(format!("{tag}-{n}-read")));
            want.assert_same(&tree, &cmp, &format!("{what}: unpacked vs read back"));
            match mount_copy(
                &[(img.clone(), format)],
                &t.path().join(format!("{tag}-{n}-mnt")),
            ) {
                Ok(tree) => {
                    let tree = if format == Format::Ext4 {
                        no_lost_found(&tree)
                    } else {
                        tree
                    };
                    want.assert_same(
                        &tree,
                        &Compare::default(),
                        &format!("{what}: unpacked vs mounted"),
                    );
                }
                Err(why) => mount_skipped = Some(why),
            }

            // Per layer: each image passes fsck and holds its overlay-form layer.
            let per = build_with(&store, &rec, format, true, writer, force);
            assert_eq!(per.lower_paths.len(), rec.layers.len());
            for (i, (img, dir_tree)) in per.lower_paths.iter().zip(&layer_trees).enumerate() {
                fsck(img, format);
                let (tree, mut cmp) =
                    read_back(img, format, &t.path().join(format!("{tag}-{n}-l{i}")));
                // Readers that drop devices also drop the whiteouts.
                cmp.root_meta = false;
                dir_tree.assert_same(&tree, &cmp, &format!("{what}: layer {i} dir vs read back"));
            }
            if format == Format::Erofs {
                let lowers: Vec<(PathBuf, Format)> = per
                    .lower_paths
                    .iter()
                    .map(|p| (p.clone(), format))
                    .collect();
                match mount_copy(&lowers, &t.path().join(format!("{tag}-overlay"))) {
                    Ok(tree) => {
                        let cmp = Compare {
                            root_meta: false,
                            ..Compare::default()
                        };
                        want.assert_same(
                            &tree,
                            &cmp,
                            &format!("{what}: flattened vs overlayfs of the lowers"),
                        );
                    }
                    Err(why) => mount_skipped = Some(why),
                }
            }
        }
    }
    if let Some(why) = mount_skipped {
        hoist_testkit::skip_or_fail(this_test!(), &format!("the mounted comparisons: {why}"));
    }
}

#[test]
fn warm_builds_are_cached_and_force_rebuilds() {
    require_peers!(Peer::MkfsErofs);
    require!(Need::Root);
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let built = images::sample_multi_layer().build().unwrap();
    let rec = common::load(&store, &built, "test/multi:latest");
    let cold = build(&store, &rec, Format::Erofs, false);
    assert!(!cold.cached);
    let warm = build(&store, &rec, Format::Erofs, false);
    assert!(warm.cached);
    assert_eq!(cold.rootfs_path, warm.rootfs_path);
    assert_eq!(cold.chain_id, *rec.chain_ids.last().unwrap());
    assert!(cold.rootfs_path.starts_with(store.rootfs_dir()));

    // A second image sharing the two base layers reuses their per-layer images.
    let per = build(&store, &rec, Format::Erofs, true);
    assert!(!per.cached);
    let spec2 = images::sample_multi_layer()
        .layer(images::LayerSpec::gzip([images::Entry::file("extra", "x")]));
    let rec2 = common::load(&store, &spec2.build().unwrap(), "test/multi2:latest");
    let per2 = build(&store, &rec2, Format::Erofs, true);
    assert!(!per2.cached);
    let cached: Vec<bool> = per2.layers.iter().map(|l| l.cached.unwrap()).collect();
    assert_eq!(cached, [true, true, true, false]);
    assert_eq!(per2.lower_paths[..3], per.lower_paths[..]);

    // --force rebuilds in place.
    let opts = BuildOptions {
        format: Some(Format::Erofs),
        force: true,
        ..BuildOptions::default()
    };
    let forced = hoist_mkfs::build_rootfs(&store, &rec, &opts, &NoProgress).unwrap();
    assert!(!forced.cached);
    assert_eq!(forced.rootfs_path, cold.rootfs_path);
    ok(Command::new("fsck.erofs").arg(&forced.rootfs_path));

    // Concurrent builds of one key build once and agree.
    let rec3 = common::load(
        &store,
        &images::sample_docker().build().unwrap(),
        "test/docker:latest",
    );
    let results: Vec<BuildResult> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| build(&store, &rec3, Format::Erofs, false)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| !r.cached).count(), 1);
    assert!(
        results
            .iter()
            .all(|r| r.rootfs_path == results[0].rootfs_path)
    );
    // Every cache entry says what it is, and the images in the store need them all.
    let cache = hoist_unpack::cache::Cache::new(&store).unwrap();
    assert!(cache.unused(&store.images().unwrap()).unwrap().is_empty());
    let entries = cache.entries().unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.artifact().exists() && e.record.version == 1)
    );
    assert!(!std::fs::read_dir(store.rootfs_dir()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tmp-")
    }));
}

#[test]
fn explicit_sizes() {
    require_peers!(Peer::Mke2fs);
    require!(Need::Root);
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let spec =
        images::sample_multi_layer().layer(images::LayerSpec::gzip([images::Entry::random_file(
            "big",
            3 << 20,
            9,
        )]));
    let rec = common::load(&store, &spec.build().unwrap(), "test/multi:latest");
    let mut opts = BuildOptions {
        format: Some(Format::Ext4),
        size: "64M".parse().unwrap(),
        output: Some(t.path().join("out.ext4")),
        ..BuildOptions::default()
    };
    let r = hoist_mkfs::build_rootfs(&store, &rec, &opts, &NoProgress).unwrap();
    assert_eq!(r.rootfs_path, t.path().join("out.ext4"));
    assert_eq!(std::fs::metadata(&r.rootfs_path).unwrap().len(), 64 << 20);
    ok(Command::new("e2fsck").arg("-fn").arg(&r.rootfs_path));
    opts.size = "1M".parse().unwrap();
    opts.force = true;
    opts.output = None;
    let e = hoist_mkfs::build_rootfs(&store, &rec, &opts, &NoProgress).unwrap_err();
    assert!(
        e.to_string().contains("mke2fs") || e.to_string().contains("cannot hold"),
        "{e}"
    );
}
