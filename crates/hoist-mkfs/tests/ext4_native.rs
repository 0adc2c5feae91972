//! hoist's own ext4 writer (`hoist_mkfs::ext4`), checked by e2fsprogs and by the kernel:
//!
//! - every image (flattened, and each layer in overlay form; with and without a journal)
//!   passes `e2fsck -fn`;
//! - the same build twice gives the same bytes, and so does a build by an unprivileged
//!   user (uid 65534, through a child process; root only);
//! - mounted read-only, an image holds what `hoist unpack` writes (path, type, mode, owner,
//!   size, content, link target, devices, xattrs, hardlinks; mtimes of non-directories),
//!   for the testkit's images and the evil layers that unpack accepts; the per-layer images
//!   stacked as overlayfs lowers give the flattened tree (root only);
//! - mounted read-write, an image takes writes and passes e2fsck after (root only);
//! - a 20k-entry directory becomes an htree that debugfs and the kernel look names up in;
//! - an exact `--size` is honoured, and a too-small one is a clear error.

#[path = "../../hoist-unpack/tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_mkfs::ext4::{Ext4Options, Ext4Source, build_ext4};
use hoist_mkfs::{MkfsError, Size};
use hoist_store::{ImageRecord, Store};
use hoist_testkit::images::{self, ImageSpec};
use hoist_testkit::tree::{Compare, Tree, merge_overlay};
use hoist_testkit::{Need, require, this_test};
use hoist_types::NoProgress;
use hoist_unpack::{Limits, UnpackOptions};
use support::{
    assert_owned_by_nobody, assert_same_tree, evil_record, in_mount_ns, linked_image, long_name,
    nobody_dir, ok, per_layer_dirs, run_child_as_nobody, stored, unpacked, wide_image, xattr_image,
};

fn e2fsck(img: &Path) {
    ok(Command::new("e2fsck").arg("-fn").arg(img));
}

fn images_under_test() -> Vec<(&'static str, ImageSpec)> {
    vec![
        ("multi", images::sample_multi_layer()),
        ("special", common::special_image()),
        ("zstd", images::sample_zstd()),
        ("docker", images::sample_docker()),
        ("xattrs", xattr_image()),
    ]
}

fn build(
    store: &Store,
    rec: &ImageRecord,
    source: Ext4Source,
    out: &Path,
    opts: &Ext4Options,
) -> Result<u64, MkfsError> {
    build_ext4(
        store,
        rec,
        source,
        out,
        opts,
        &Limits::default(),
        &NoProgress,
    )
}

/// [`build`] of the flattened image with the default options.
fn build_flat(store: &Store, rec: &ImageRecord, out: &Path) -> Result<u64, MkfsError> {
    build(
        store,
        rec,
        Ext4Source::Flattened,
        out,
        &Ext4Options::default(),
    )
}

fn no_journal() -> Ext4Options {
    Ext4Options {
        journal: false,
        ..Ext4Options::default()
    }
}

#[test]
fn native_images_pass_e2fsck() {
    require!(Need::Tool("e2fsck"));
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    for (tag, spec) in images_under_test() {
        let rec = common::load(
            &store,
            &spec.build().unwrap(),
            &format!("test/{tag}:latest"),
        );
        for (j, opts) in [Ext4Options::default(), no_journal()].iter().enumerate() {
            let img = t.path().join(format!("{tag}-{j}.ext4"));
            let size = build(&store, &rec, Ext4Source::Flattened, &img, opts).unwrap();
            assert_eq!(std::fs::metadata(&img).unwrap().len(), size);
            e2fsck(&img);
            for i in 0..rec.layers.len() {
                let img = t.path().join(format!("{tag}-{j}-l{i}.ext4"));
                build(&store, &rec, Ext4Source::Layer(i), &img, opts).unwrap();
                e2fsck(&img);
            }
        }
    }
}

/// Mounts the ext4 images read-only (stacked with overlayfs when several, base first) and
/// copies the tree out with `cp -a`.
fn mounted_tree(images: &[PathBuf], out: &Path) -> Tree {
    let work = out.with_extension("mnt");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir(out).unwrap();
    let mut script = String::new();
    let mut lowers = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let m = work.join(format!("l{i}"));
        std::fs::create_dir(&m).unwrap();
        script += &format!(
            "mount -t ext4 -o loop,ro '{}' '{}'\n",
            img.display(),
            m.display()
        );
        lowers.push(m.display().to_string());
    }
    let top = if lowers.len() == 1 {
        lowers[0].clone()
    } else {
        let merged = work.join("merged");
        std::fs::create_dir(&merged).unwrap();
        lowers.reverse();
        script += &format!(
            "mount -t overlay overlay -o 'lowerdir={}' '{}'\n",
            lowers.join(":"),
            merged.display()
        );
        merged.display().to_string()
    };
    script += &format!("cp -a '{top}/.' '{}/'\n", out.display());
    in_mount_ns(&script).unwrap_or_else(|e| panic!("mounting {images:?}: {e}"));
    Tree::scan(out).unwrap()
}

fn no_lost_found(t: &Tree) -> Tree {
    t.filtered(|p, _| p != b"lost+found")
}

#[test]
fn mounted_images_hold_the_unpacked_tree() {
    require!(Need::Root, Need::Tool("unshare"), Need::Tool("e2fsck"));
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    for (tag, spec) in images_under_test() {
        let rec = common::load(
            &store,
            &spec.build().unwrap(),
            &format!("test/{tag}:latest"),
        );
        let want = unpacked(&store, &rec, &t.path().join(format!("{tag}-unpacked")));
        let img = t.path().join(format!("{tag}.ext4"));
        build_flat(&store, &rec, &img).unwrap();
        let got = no_lost_found(&mounted_tree(
            std::slice::from_ref(&img),
            &t.path().join(format!("{tag}-mnt")),
        ));
        assert_same_tree(
            &want,
            &got,
            &Compare::default(),
            &format!("{tag}: unpack vs ext4"),
        );

        // Per layer: each image holds the per-layer directory hoist builds, and the stack
        // of them as overlayfs lowers gives the flattened tree.
        let dirs = per_layer_dirs(&store, &rec);
        let mut lowers = Vec::new();
        let mut layer_trees = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let img = t.path().join(format!("{tag}-l{i}.ext4"));
            build(&store, &rec, Ext4Source::Layer(i), &img, &no_journal()).unwrap();
            let got = no_lost_found(&mounted_tree(
                std::slice::from_ref(&img),
                &t.path().join(format!("{tag}-l{i}-mnt")),
            ));
            let want = Tree::scan(dir).unwrap();
            // The unpack's whiteout devices get the time of the unpack; the writer's, the
            // whiteout entry's.
            let cmp = Compare::default();
            want.assert_same(&got, &cmp, &format!("{tag}: layer {i} dir vs ext4"));
            layer_trees.push(got);
            lowers.push(img);
        }
        let stacked = mounted_tree(&lowers, &t.path().join(format!("{tag}-overlay")));
        let cmp = Compare {
            root_meta: false,
            ..Compare::default()
        };
        want.assert_same(
            &no_lost_found(&stacked),
            &cmp,
            &format!("{tag}: flattened vs overlayfs of the ext4 lowers"),
        );
        let merged = merge_overlay(&layer_trees);
        want.assert_same(
            &merged,
            &Compare {
                hardlinks: false,
                ..cmp
            },
            &format!("{tag}: merged"),
        );
    }
}

#[test]
fn evil_layers_give_the_unpacked_tree_or_the_same_refusal() {
    require!(Need::Root, Need::Tool("unshare"), Need::Tool("e2fsck"));
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let sentinel = t.path().join("sentinel");
    hoist_testkit::evil::make_sentinel(&sentinel).unwrap();
    let mut built = 0;
    for (n, case) in hoist_testkit::evil::cases(&sentinel).iter().enumerate() {
        if case.max_layer_size.is_some() {
            continue; // the bomb: a limit case, not a tree
        }
        let Ok(rec) = std::panic::catch_unwind(|| evil_record(&store, case, n)) else {
            continue; // the store refuses the blobs themselves
        };
        let dir = t.path().join(format!("case{n}"));
        let unpack =
            hoist_unpack::unpack_image(&store, &rec, &dir, &UnpackOptions::default(), &NoProgress);
        let img = t.path().join(format!("case{n}.ext4"));
        let native = build_flat(&store, &rec, &img);
        match (unpack, native) {
            (Ok(_), Ok(_)) => {
                e2fsck(&img);
                let want = Tree::scan(&dir).unwrap();
                let got = no_lost_found(&mounted_tree(
                    std::slice::from_ref(&img),
                    &t.path().join(format!("case{n}-mnt")),
                ));
                assert_same_tree(&want, &got, &Compare::default(), case.name);
                built += 1;
            }
            (Err(_), Err(_)) => {}
            (u, e) => panic!(
                "{}: unpack {:?} but the ext4 writer {:?}",
                case.name,
                u.map(|_| ()),
                e.map(|_| ())
            ),
        }
    }
    assert!(built >= 10, "only {built} evil cases built");
}

#[test]
fn builds_are_deterministic_and_rootless_builds_are_identical() {
    require!(Need::Tool("e2fsck"));
    let t = tempfile::tempdir().unwrap();
    let store_dir = t.path().join("store");
    let store = Store::open(&store_dir).unwrap();
    let rec = common::load(
        &store,
        &common::special_image().build().unwrap(),
        "test/special:latest",
    );
    let a = t.path().join("a.ext4");
    let b = t.path().join("b.ext4");
    build_flat(&store, &rec, &a).unwrap();
    build_flat(&store, &rec, &b).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two builds differ"
    );
    // A different key gives a different UUID.
    let l0 = t.path().join("l0.ext4");
    build(
        &store,
        &rec,
        Ext4Source::Layer(0),
        &l0,
        &Ext4Options::default(),
    )
    .unwrap();
    let uuid = |p: &Path| std::fs::read(p).unwrap()[1024 + 0x68..1024 + 0x78].to_vec();
    assert_ne!(uuid(&a), uuid(&l0));

    // The child reads the store and writes its image as nobody.
    require!(Need::Root, Need::Tool("setpriv"));
    let out = nobody_dir(t.path());
    let c = out.join("c.ext4");
    run_child_as_nobody(
        "child_build_as_asked",
        "HOIST_EXT4_CHILD",
        &format!("{}\n{}", store_dir.display(), c.display()),
    );
    assert_owned_by_nobody(&c);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&c).unwrap(),
        "the unprivileged build differs"
    );
    e2fsck(&c);
}

/// Not a test: the child of the one above (builds as the user it runs as).
#[test]
#[ignore = "run by builds_are_deterministic_and_rootless_builds_are_identical"]
fn child_build_as_asked() {
    let spec = std::env::var("HOIST_EXT4_CHILD").expect("HOIST_EXT4_CHILD");
    let (store_dir, out) = spec.split_once('\n').unwrap();
    let store = Store::open(store_dir).unwrap();
    let rec = store.resolve("test/special:latest").unwrap();
    build(
        &store,
        &rec,
        Ext4Source::Flattened,
        Path::new(out),
        &Ext4Options::default(),
    )
    .unwrap();
}

#[test]
fn read_write_mounts_take_writes_and_stay_clean() {
    require!(Need::Root, Need::Tool("unshare"), Need::Tool("e2fsck"));
    let t = tempfile::tempdir().unwrap();
    let (store, rec) = stored(t.path(), &xattr_image(), "test/xattrs:latest");
    let img = t.path().join("rw.ext4");
    build(
        &store,
        &rec,
        Ext4Source::Flattened,
        &img,
        &Ext4Options {
            free: 64 << 20,
            ..Ext4Options::default()
        },
    )
    .unwrap();
    let m = t.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let m = m.display();
    let script = format!(
        "mount -t ext4 -o loop '{img}' '{m}'\n\
         dd if=/dev/urandom of='{m}/new.bin' bs=1M count=32 status=none\n\
         mkdir -p '{m}/a/b/c' && for i in $(seq 1 3000); do : > \"{m}/a/b/c/f$i\"; done\n\
         rm '{m}/x/zeros' && mv '{m}/x/acl' '{m}/a/acl-moved'\n\
         setfattr -n user.new -v 1 '{m}/x/big-xattrs' 2>/dev/null || true\n\
         ln '{m}/x/shared1' '{m}/x/shared1-link'\n\
         for i in $(seq 1 500); do : > \"{m}/x/more-$i\"; done\n\
         sync\n\
         sha256sum '{m}/new.bin' > '{m}/new.sum'\n\
         umount '{m}'\n",
        img = img.display()
    );
    in_mount_ns(&script).unwrap();
    e2fsck(&img);
    // And it mounts again with the writes in it.
    let check = format!(
        "mount -t ext4 -o loop,ro '{img}' '{m}'\ncd '{m}' && sha256sum -c new.sum >/dev/null && ls a/b/c | wc -l\n",
        img = img.display()
    );
    assert_eq!(in_mount_ns(&check).unwrap().trim(), "3000");
}

#[test]
fn a_20k_entry_directory_is_an_htree() {
    require!(Need::Tool("e2fsck"), Need::Tool("debugfs"));
    let t = tempfile::tempdir().unwrap();
    let (store, rec) = stored(t.path(), &wide_image(20_000, 12_000), "test/wide:latest");
    let img = t.path().join("wide.ext4");
    let started = std::time::Instant::now();
    build_flat(&store, &rec, &img).unwrap();
    let took = started.elapsed();
    e2fsck(&img);
    let debugfs = |req: &str| ok(Command::new("debugfs").arg("-R").arg(req).arg(&img));
    assert!(debugfs("htree /wide").contains("Indirect levels: 0"));
    assert!(debugfs("htree /deep").contains("Indirect levels: 1"));
    for i in [0, 1, 9_999, 12_345, 19_999] {
        let s = debugfs(&format!("stat /wide/file-{i:06}"));
        assert!(s.contains("Type: regular"), "file-{i:06}: {s}");
    }
    for i in [0, 6_000, 11_999] {
        let s = debugfs(&format!("stat /deep/{}", long_name(i)));
        assert!(s.contains("Type: regular"), "deep {i}: {s}");
    }
    assert_eq!(debugfs("cat /wide/last"), "the last one");
    // 32k entries in debug mode on a shared 2-core machine: quadratic inserts would take
    // minutes (mke2fs -d takes ~30 s for 18k).
    assert!(took.as_secs() < 60, "took {took:?}");
    if !hoist_unpack::is_root() {
        hoist_testkit::skip_or_fail(this_test!(), "mounting needs root");
        return;
    }
    let m = t.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let out = in_mount_ns(&format!(
        "mount -t ext4 -o loop,ro '{}' '{m}'\nls '{m}/wide' | wc -l\nls '{m}/deep' | wc -l\nstat -c %s '{m}/wide/file-017777' '{m}/deep/{}'\n",
        img.display(),
        long_name(11_111),
        m = m.display()
    ))
    .unwrap();
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["20001", "12000", "0", "0"]
    );
}

/// ext4 counts at most 65000 links to a file: a group of 65000 names builds (e2fsck
/// clean, every name the same inode), one of 70001 is refused before anything is written,
/// naming the file.
#[test]
fn link_groups_up_to_ext4s_limit_build_and_larger_ones_are_refused() {
    require!(Need::Tool("e2fsck"), Need::Tool("debugfs"));
    let t = tempfile::tempdir().unwrap();
    let (store, rec) = stored(t.path(), &linked_image(70_000), "test/links:70k");
    let img = t.path().join("links.ext4");
    let err = build_flat(&store, &rec, &img).unwrap_err();
    let msg = hoist_types::error_chain(&err);
    assert!(msg.contains("65000") && msg.contains("/links/"), "{msg}");
    assert!(!img.exists(), "an image was left behind");
    let report = store.fsck(&hoist_store::FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");

    let rec = common::load(
        &store,
        &linked_image(64_999).build().unwrap(),
        "test/links:65k",
    );
    build_flat(&store, &rec, &img).unwrap();
    e2fsck(&img);
    let debugfs = |req: &str| ok(Command::new("debugfs").arg("-R").arg(req).arg(&img));
    let target = debugfs("stat /links/target");
    assert!(target.contains("Links: 65000"), "{target}");
    let inode = |s: &str| s.split_whitespace().nth(1).map(str::to_owned);
    let last = debugfs("stat /links/l-064998");
    assert_eq!(inode(&last), inode(&target), "{last}");
}

#[test]
fn exact_sizes_are_honoured_or_refused() {
    require!(Need::Tool("e2fsck"));
    let t = tempfile::tempdir().unwrap();
    let (store, rec) = stored(t.path(), &xattr_image(), "test/xattrs:latest");
    let img = t.path().join("sized.ext4");
    let opts = Ext4Options {
        size: "300M".parse().unwrap(),
        ..Ext4Options::default()
    };
    assert_eq!(
        build(&store, &rec, Ext4Source::Flattened, &img, &opts).unwrap(),
        300 << 20
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 300 << 20);
    e2fsck(&img);
    let small = Ext4Options {
        size: Size::Bytes(2 << 20),
        ..Ext4Options::default()
    };
    let e = build(&store, &rec, Ext4Source::Flattened, &img, &small).unwrap_err();
    assert!(matches!(e, MkfsError::TooSmall { .. }), "{e}");
    assert!(e.to_string().contains("cannot hold"), "{e}");
    // Asking for more free space gives a bigger image.
    let auto = build_flat(&store, &rec, &img).unwrap();
    let more = Ext4Options {
        free: 100 << 20,
        ..Ext4Options::default()
    };
    let bigger = build(&store, &rec, Ext4Source::Flattened, &img, &more).unwrap();
    assert!(bigger >= auto + (100 << 20), "{auto} then {bigger}");
    e2fsck(&img);
}
