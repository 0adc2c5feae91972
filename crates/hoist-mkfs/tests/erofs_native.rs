//! hoist's own erofs writer (`hoist_mkfs::erofs`), checked by erofs-utils and the kernel:
//!
//! - every image (flattened, and each layer in overlay form) passes `fsck.erofs`, and
//!   `fsck.erofs --extract` of it gives the tree `hoist unpack` writes (as root: with
//!   owners and modes);
//! - the same build twice gives the same bytes, and so does a build by an unprivileged
//!   user (uid 65534, through a child process; root only);
//! - mounted read-only, an image holds what `hoist unpack` writes (path, type, mode, owner,
//!   size, content, link target, devices, xattrs, hardlinks; mtimes of non-directories),
//!   for the testkit's images and the evil layers that unpack accepts; the per-layer images
//!   stacked as overlayfs lowers give the flattened tree (root only);
//! - a 20k-entry directory is listed and looked up by dump.erofs and the kernel;
//! - what erofs cannot hold (an xattr outside its name prefixes) is a clear error and
//!   leaves no image behind in the cache.

#[path = "../../hoist-unpack/tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_mkfs::MkfsError;
use hoist_mkfs::erofs::{ErofsSource, build_erofs};
use hoist_store::{ImageRecord, Store};
use hoist_testkit::images::{self, Entry, ImageSpec, LayerSpec};
use hoist_testkit::tree::{Compare, Kind, Tree, merge_overlay};
use hoist_testkit::{Need, require, this_test};
use hoist_types::NoProgress;
use hoist_unpack::{Limits, UnpackOptions};
use support::{
    assert_owned_by_nobody, assert_same_tree, evil_record, in_mount_ns, linked_image, long_name,
    nobody_dir, ok, per_layer_dirs, run_child_as_nobody, stored, unpacked, wide_image, xattr_image,
};

fn fsck(img: &Path) {
    ok(Command::new("fsck.erofs").arg(img));
}

/// Images with many inline tails, a file of exactly one block, one of a block plus one
/// byte, large owners (extended inodes) and varied mtimes.
fn tails_image() -> ImageSpec {
    let mut entries = vec![Entry::dir("t")];
    for (i, len) in [
        0usize, 1, 31, 32, 33, 2000, 4000, 4095, 4096, 4097, 8191, 12_288, 100_001,
    ]
    .iter()
    .enumerate()
    {
        let body: Vec<u8> = (0..*len).map(|k| (k * 7 + i) as u8).collect();
        entries.push(Entry::file(&format!("t/f{len}"), body).mtime(1_600_000_000 + i as u64));
    }
    entries.push(Entry::file("t/owner", "big ids").owner(70_000, 80_000));
    entries.push(Entry::symlink("t/long-link", &"x".repeat(3000)));
    ImageSpec::oci().layer(LayerSpec::gzip(entries))
}

fn images_under_test() -> Vec<(&'static str, ImageSpec)> {
    vec![
        ("multi", images::sample_multi_layer()),
        ("special", common::special_image()),
        ("zstd", images::sample_zstd()),
        ("docker", images::sample_docker()),
        ("xattrs", xattr_image()),
        ("tails", tails_image()),
    ]
}

fn build(store: &Store, rec: &ImageRecord, source: ErofsSource, out: &Path) -> u64 {
    try_build(store, rec, source, out).unwrap()
}

fn try_build(
    store: &Store,
    rec: &ImageRecord,
    source: ErofsSource,
    out: &Path,
) -> Result<u64, MkfsError> {
    build_erofs(store, rec, source, out, &Limits::default(), &NoProgress)
}

#[test]
fn native_images_pass_fsck_and_extract_to_the_unpacked_tree() {
    require!(Need::Tool("fsck.erofs"));
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let root = hoist_unpack::is_root();
    for (tag, spec) in images_under_test() {
        let rec = common::load(
            &store,
            &spec.build().unwrap(),
            &format!("test/{tag}:latest"),
        );
        let img = t.path().join(format!("{tag}.erofs"));
        let size = build(&store, &rec, ErofsSource::Flattened, &img);
        assert_eq!(std::fs::metadata(&img).unwrap().len(), size);
        assert_eq!(size % 4096, 0);
        fsck(&img);
        // fsck.erofs reads every file back out: the tree unpack writes (fsck.erofs 1.5
        // extracts no xattrs and no devices unless root; hardlinks become copies).
        let want = unpacked(&store, &rec, &t.path().join(format!("{tag}-unpacked")));
        let x = t.path().join(format!("{tag}-extracted"));
        ok(Command::new("fsck.erofs")
            .arg(format!("--extract={}", x.display()))
            .arg(if root { "--preserve" } else { "--no-preserve" })
            .arg(&img));
        let got = Tree::scan(&x).unwrap();
        let cmp = Compare {
            xattrs: false,
            hardlinks: false,
            mode: root,
            // fsck.erofs 1.5 chowns after its chmod, which drops setuid and setgid (the
            // mounted images keep them: `mounted_images_hold_the_unpacked_tree`).
            special_bits: false,
            owner: root,
            root_meta: false,
            specials: root,
            devices: root,
            ..Compare::default()
        };
        let keep = |_: &[u8], n: &hoist_testkit::tree::Node| {
            root || matches!(n.kind, Kind::File { .. } | Kind::Dir | Kind::Symlink(_))
        };
        want.filtered(keep).assert_same(
            &got.filtered(keep),
            &cmp,
            &format!("{tag}: unpack vs fsck.erofs --extract"),
        );
        for i in 0..rec.layers.len() {
            let img = t.path().join(format!("{tag}-l{i}.erofs"));
            build(&store, &rec, ErofsSource::Layer(i), &img);
            fsck(&img);
        }
    }
}

/// Mounts the erofs images read-only (stacked with overlayfs when several, base first)
/// and copies the tree out with `cp -a`.
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
            "mount -t erofs -o loop,ro '{}' '{}'\n",
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

#[test]
fn mounted_images_hold_the_unpacked_tree() {
    require!(Need::Root, Need::Tool("unshare"), Need::Tool("fsck.erofs"));
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    for (tag, spec) in images_under_test() {
        let rec = common::load(
            &store,
            &spec.build().unwrap(),
            &format!("test/{tag}:latest"),
        );
        let want = unpacked(&store, &rec, &t.path().join(format!("{tag}-unpacked")));
        let img = t.path().join(format!("{tag}.erofs"));
        build(&store, &rec, ErofsSource::Flattened, &img);
        let got = mounted_tree(
            std::slice::from_ref(&img),
            &t.path().join(format!("{tag}-mnt")),
        );
        assert_same_tree(
            &want,
            &got,
            &Compare::default(),
            &format!("{tag}: unpack vs erofs"),
        );

        // Per layer: each image holds the per-layer directory hoist builds, and the stack
        // of them as overlayfs lowers gives the flattened tree.
        let dirs = per_layer_dirs(&store, &rec);
        let mut lowers = Vec::new();
        let mut layer_trees = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let img = t.path().join(format!("{tag}-l{i}.erofs"));
            build(&store, &rec, ErofsSource::Layer(i), &img);
            let got = mounted_tree(
                std::slice::from_ref(&img),
                &t.path().join(format!("{tag}-l{i}-mnt")),
            );
            let want = Tree::scan(dir).unwrap();
            want.assert_same(
                &got,
                &Compare::default(),
                &format!("{tag}: layer {i} dir vs erofs"),
            );
            layer_trees.push(got);
            lowers.push(img);
        }
        let stacked = mounted_tree(&lowers, &t.path().join(format!("{tag}-overlay")));
        let cmp = Compare {
            root_meta: false,
            ..Compare::default()
        };
        want.assert_same(
            &stacked,
            &cmp,
            &format!("{tag}: flattened vs overlayfs of the erofs lowers"),
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
    require!(Need::Root, Need::Tool("unshare"), Need::Tool("fsck.erofs"));
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
        let img = t.path().join(format!("case{n}.erofs"));
        let native = try_build(&store, &rec, ErofsSource::Flattened, &img);
        match (unpack, native) {
            (Ok(_), Ok(_)) => {
                fsck(&img);
                let want = Tree::scan(&dir).unwrap();
                let got = mounted_tree(
                    std::slice::from_ref(&img),
                    &t.path().join(format!("case{n}-mnt")),
                );
                assert_same_tree(&want, &got, &Compare::default(), case.name);
                built += 1;
            }
            (Err(_), Err(_)) => {}
            (u, e) => panic!(
                "{}: unpack {:?} but the erofs writer {:?}",
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
    require!(Need::Tool("fsck.erofs"));
    let t = tempfile::tempdir().unwrap();
    let store_dir = t.path().join("store");
    let store = Store::open(&store_dir).unwrap();
    let rec = common::load(
        &store,
        &common::special_image().build().unwrap(),
        "test/special:latest",
    );
    let a = t.path().join("a.erofs");
    let b = t.path().join("b.erofs");
    build(&store, &rec, ErofsSource::Flattened, &a);
    build(&store, &rec, ErofsSource::Flattened, &b);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two builds differ"
    );
    // Several layers with data: pass 2 runs them on several threads, same bytes.
    let multi = common::load(
        &store,
        &images::sample_multi_layer().build().unwrap(),
        "test/multi:latest",
    );
    let m1 = t.path().join("m1.erofs");
    let m2 = t.path().join("m2.erofs");
    build(&store, &multi, ErofsSource::Flattened, &m1);
    build(&store, &multi, ErofsSource::Flattened, &m2);
    assert!(
        std::fs::read(&m1).unwrap() == std::fs::read(&m2).unwrap(),
        "two builds of a multi-layer image differ"
    );
    // A different key gives a different UUID.
    let l0 = t.path().join("l0.erofs");
    build(&store, &rec, ErofsSource::Layer(0), &l0);
    let uuid = |p: &Path| std::fs::read(p).unwrap()[1024 + 48..1024 + 64].to_vec();
    assert_ne!(uuid(&a), uuid(&l0));

    // The child reads the store and writes its image as nobody.
    require!(Need::Root, Need::Tool("setpriv"));
    let out = nobody_dir(t.path());
    let c = out.join("c.erofs");
    run_child_as_nobody(
        "child_build_as_asked",
        "HOIST_EROFS_CHILD",
        &format!("{}\n{}", store_dir.display(), c.display()),
    );
    assert_owned_by_nobody(&c);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&c).unwrap(),
        "the unprivileged build differs"
    );
    fsck(&c);
}

/// Not a test: the child of the one above (builds as the user it runs as).
#[test]
#[ignore = "run by builds_are_deterministic_and_rootless_builds_are_identical"]
fn child_build_as_asked() {
    let spec = std::env::var("HOIST_EROFS_CHILD").expect("HOIST_EROFS_CHILD");
    let (store_dir, out) = spec.split_once('\n').unwrap();
    let store = Store::open(store_dir).unwrap();
    let rec = store.resolve("test/special:latest").unwrap();
    build(&store, &rec, ErofsSource::Flattened, Path::new(out));
}

#[test]
fn a_20k_entry_directory_is_listed_and_looked_up() {
    require!(Need::Tool("fsck.erofs"), Need::Tool("dump.erofs"));
    let t = tempfile::tempdir().unwrap();
    let (store, rec) = stored(t.path(), &wide_image(20_000, 12_000), "test/wide:latest");
    let img = t.path().join("wide.erofs");
    let started = std::time::Instant::now();
    build(&store, &rec, ErofsSource::Flattened, &img);
    let took = started.elapsed();
    fsck(&img);
    let dump = |args: &[&str]| ok(Command::new("dump.erofs").args(args).arg(&img));
    for i in [0, 1, 9_999, 12_345, 19_999] {
        let s = dump(&[&format!("--path=/wide/file-{i:06}")]);
        assert!(s.contains("File : /wide/file-"), "file-{i:06}: {s}");
    }
    for i in [0, 6_000, 11_999] {
        let s = dump(&[&format!("--path=/deep/{}", long_name(i))]);
        assert!(s.contains(&long_name(i)), "deep {i}: {s}");
    }
    assert!(took.as_secs() < 60, "took {took:?}");
    if !hoist_unpack::is_root() {
        hoist_testkit::skip_or_fail(this_test!(), "mounting needs root");
        return;
    }
    let m = t.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let out = in_mount_ns(&format!(
        "mount -t erofs -o loop,ro '{}' '{m}'\nls '{m}/wide' | wc -l\nls '{m}/deep' | wc -l\nstat -c %s '{m}/wide/file-017777' '{m}/deep/{}' '{m}/wide/last'\ncat '{m}/wide/last'\n",
        img.display(),
        long_name(11_111),
        m = m.display()
    ))
    .unwrap();
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["20001", "12000", "0", "0", "12", "the", "last", "one"]
    );
}

/// erofs keeps a 32-bit link count (extended inodes): a group of 70001 names builds,
/// fsck.erofs clean, and mounted every name is the same inode with that count.
#[test]
fn a_70k_link_group_builds() {
    require!(Need::Tool("fsck.erofs"), Need::Tool("dump.erofs"));
    let t = tempfile::tempdir().unwrap();
    let (store, rec) = stored(t.path(), &linked_image(70_000), "test/links:70k");
    let img = t.path().join("links.erofs");
    build(&store, &rec, ErofsSource::Flattened, &img);
    fsck(&img);
    let dump = ok(Command::new("dump.erofs")
        .arg("--path=/links/l-069999")
        .arg(&img));
    // An extended inode (64 bytes): a compact one holds 16-bit link counts.
    assert!(
        dump.contains("Links: 70001") && dump.contains("Inode size: 64"),
        "{dump}"
    );
    if !hoist_unpack::is_root() {
        hoist_testkit::skip_or_fail(this_test!(), "mounting needs root");
        return;
    }
    let m = t.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let out = in_mount_ns(&format!(
        "mount -t erofs -o loop,ro '{}' '{m}'\nstat -c '%i %h' '{m}/links/target' '{m}/links/l-000000' '{m}/links/l-069999'\nls '{m}/links' | wc -l\n",
        img.display(),
        m = m.display()
    ))
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].ends_with(" 70001"), "{out}");
    assert!(lines[0] == lines[1] && lines[1] == lines[2], "{out}");
    assert_eq!(lines[3], "70001", "{out}");
}

#[test]
fn what_erofs_cannot_hold_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let spec = ImageSpec::oci().layer(LayerSpec::gzip([
        Entry::file("a", "a"),
        Entry::file("b", "b").xattr("system.nfs4_acl", "x"),
    ]));
    let rec = common::load(&store, &spec.build().unwrap(), "test/odd:latest");
    let img = t.path().join("odd.erofs");
    let e = try_build(&store, &rec, ErofsSource::Flattened, &img).unwrap_err();
    assert!(matches!(e, MkfsError::ErofsUnsupported { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("/b") && msg.contains("xattr"), "{msg}");
    // Through the builder, nothing is left in the cache.
    let r = hoist_mkfs::build_rootfs(
        &store,
        &rec,
        &hoist_mkfs::BuildOptions {
            format: Some(hoist_mkfs::Format::Erofs),
            ..Default::default()
        },
        &NoProgress,
    );
    assert!(r.is_err());
    let cache = store.rootfs_dir();
    let leftovers: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "erofs"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}
