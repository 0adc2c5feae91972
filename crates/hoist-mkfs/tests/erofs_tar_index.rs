//! The erofs tar index (`hoist_mkfs::erofs::tar_index`), checked by the kernel:
//!
//! - mounted (root: the new mount API, the layer tars in the store as devices), the index
//!   holds what `hoist unpack` writes (path, type, mode, owner, size, content, link
//!   target, devices, xattrs, hardlinks; mtimes of non-directories) for the testkit's
//!   images, a multi-layer image with whiteouts and an opaque directory among them; each
//!   per-layer index holds the per-layer directory;
//! - the tars are written into the store once, as blobs named by the diff ID; a second
//!   index (of the same image, or of another sharing a layer) decompresses nothing and
//!   gives the same bytes;
//! - a layer that is not its diff ID is refused and leaves no tar and a clean store; the
//!   evil layers give the unpacked tree or the same refusal as `hoist unpack`;
//! - an unprivileged user (uid 65534) writes the same tars and the same index bytes.

#[path = "../../hoist-unpack/tests/common/mod.rs"]
mod common;
mod support;

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_mkfs::erofs::ErofsSource;
use hoist_mkfs::erofs::tar_index::{self, TarIndex};
use hoist_store::{FsckOptions, ImageRecord, Store};
use hoist_testkit::images::{self, Entry, ImageSpec, LayerSpec};
use hoist_testkit::tree::{Compare, Tree};
use hoist_testkit::{Need, require, this_test};
use hoist_types::NoProgress;
use hoist_unpack::{Limits, UnpackOptions};
use support::{
    assert_owned_by_nobody, assert_same_tree, per_layer_dirs, run_child_as_nobody, stored,
    unpacked, xattr_image,
};

fn index(store: &Store, rec: &ImageRecord, source: ErofsSource, out: &Path) -> TarIndex {
    tar_index::build_tar_index(store, rec, source, out, &Limits::default(), &NoProgress).unwrap()
}

/// Files of exact block sizes, around 512 and 4096, larger ones, big owners.
fn sizes_image() -> ImageSpec {
    let mut entries = vec![Entry::dir("s")];
    for len in [
        0usize,
        1,
        511,
        512,
        513,
        1024,
        4095,
        4096,
        4097,
        100_001,
        1 << 20,
    ] {
        entries.push(Entry::random_file(&format!("s/f{len}"), len, len as u64));
    }
    entries.push(Entry::file("s/owner", "big ids").owner(70_000, 80_000));
    entries.push(Entry::symlink("s/long-link", &"x".repeat(3000)));
    entries.push(Entry::symlink("s/mid-link", &"y".repeat(700)));
    ImageSpec::oci().layer(LayerSpec::gzip(entries))
}

/// A later layer replacing and hiding files of earlier ones, uncompressed and zstd among
/// gzip (an uncompressed layer is its own tar).
fn layered_image() -> ImageSpec {
    ImageSpec::oci()
        .layer(LayerSpec::gzip([
            Entry::dir("a"),
            Entry::file("a/keep", "kept from layer 1"),
            Entry::file("a/replaced", "old"),
            Entry::file("a/gone", "whited out"),
            Entry::dir("d"),
            Entry::file("d/hidden", "under an opaque dir"),
            Entry::random_file("big", 300_000, 7),
        ]))
        .layer(LayerSpec::uncompressed([
            Entry::file("a/replaced", "new, from layer 2"),
            Entry::whiteout("a/gone"),
            Entry::file("a/two", "two names"),
            Entry::hardlink("a/two-link", "a/two"),
        ]))
        .layer(LayerSpec::zstd([
            Entry::dir("d"),
            Entry::opaque("d"),
            Entry::file("d/new", "after the opaque marker"),
            Entry::random_file("big", 200_000, 8),
        ]))
}

fn images_under_test() -> Vec<(&'static str, ImageSpec)> {
    vec![
        ("multi", images::sample_multi_layer()),
        ("special", common::special_image()),
        ("zstd", images::sample_zstd()),
        ("docker", images::sample_docker()),
        ("xattrs", xattr_image()),
        ("sizes", sizes_image()),
        ("layered", layered_image()),
    ]
}

/// The tree of the index mounted with its devices (detached: nothing is attached to the
/// host's tree; the scan goes through the mount's descriptor).
fn mounted(img: &Path, devices: &[PathBuf]) -> Tree {
    let fd = tar_index::mount_detached(img, devices).unwrap_or_else(|e| {
        panic!(
            "mounting {}: {}",
            img.display(),
            hoist_types::error_chain(&e)
        )
    });
    Tree::scan(Path::new(&format!("/proc/self/fd/{}/.", fd.as_raw_fd()))).unwrap()
}

#[test]
fn mounted_indexes_hold_the_unpacked_tree() {
    require!(Need::Root);
    if let Err(why) = tar_index::kernel_support(None) {
        hoist_testkit::skip_or_fail(this_test!(), &why);
        return;
    }
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
        let ix = index(&store, &rec, ErofsSource::Flattened, &img);
        assert_eq!(std::fs::metadata(&img).unwrap().len(), ix.size);
        assert_eq!(ix.size % 512, 0);
        assert_eq!(ix.devices.len(), rec.layers.len());
        for (d, diff) in ix.devices.iter().zip(&rec.diff_ids) {
            assert_eq!(
                d,
                &store.blob_path(diff),
                "{tag}: devices are the tars by diff ID"
            );
            assert_eq!(
                hoist_types::Digest::sha256_of(&std::fs::read(d).unwrap()),
                *diff,
                "{tag}: the tar is the layer's diff ID"
            );
        }
        // The index holds metadata only: much smaller than the data it names.
        let data: u64 = ix
            .devices
            .iter()
            .map(|d| std::fs::metadata(d).unwrap().len())
            .sum();
        if data > 1 << 20 {
            assert!(
                ix.size * 4 < data,
                "{tag}: index {} for {data} bytes of tars",
                ix.size
            );
        }
        let got = mounted(&img, &ix.devices);
        assert_same_tree(
            &want,
            &got,
            &Compare::default(),
            &format!("{tag}: unpack vs tar index"),
        );
        assert!(
            tar_index::kernel_support(Some((&img, &ix.devices))).is_ok(),
            "{tag}: the probe with the real index"
        );

        // Per layer: each index holds the per-layer directory hoist builds.
        let dirs = per_layer_dirs(&store, &rec);
        for (i, dir) in dirs.iter().enumerate() {
            let img = t.path().join(format!("{tag}-l{i}.erofs"));
            let ix = index(&store, &rec, ErofsSource::Layer(i), &img);
            assert_eq!(ix.devices, vec![store.blob_path(&rec.diff_ids[i])]);
            let got = mounted(&img, &ix.devices);
            Tree::scan(dir).unwrap().assert_same(
                &got,
                &Compare::default(),
                &format!("{tag}: layer {i} dir vs tar index"),
            );
        }
    }
    // An index on tmpfs: where the kernel will not back the mount with that file, the
    // refusal says what to do.
    if Path::new("/dev/shm").is_dir() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let img = shm.path().join("multi.erofs");
        let rec = store.resolve("test/multi:latest").unwrap();
        let ix = index(&store, &rec, ErofsSource::Flattened, &img);
        match tar_index::mount_detached(&img, &ix.devices) {
            Ok(_) => {}
            Err(e) => {
                let text = hoist_types::error_chain(&e);
                assert!(text.contains("loop device"), "{text}");
                let why = tar_index::kernel_support(Some((&img, &ix.devices))).unwrap_err();
                assert!(why.contains("disk filesystem"), "{why}");
            }
        }
    }
    // The kernel refuses an index given the wrong number of devices, clearly.
    let rec = store.resolve("test/layered:latest").unwrap();
    let img = t.path().join("layered.erofs");
    let devices = tar_index::tar_paths(&store, &rec, ErofsSource::Flattened);
    let err = tar_index::mount_detached(&img, &devices[..1]).unwrap_err();
    assert!(
        err.to_string().contains("cannot mount the erofs tar index"),
        "{err}"
    );
}

#[test]
fn tars_are_written_once_and_indexes_are_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let (store, rec) = stored(t.path(), &layered_image(), "test/layered:latest");
    // The uncompressed layer is its own tar; the others are not in the store yet.
    assert_eq!(rec.layers[1].digest, rec.diff_ids[1]);
    assert!(store.has_blob(&rec.diff_ids[0]).unwrap().is_none());
    assert!(store.has_blob(&rec.diff_ids[2]).unwrap().is_none());
    let a = t.path().join("a.erofs");
    let first = index(&store, &rec, ErofsSource::Flattened, &a);
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let stamps: Vec<_> = first.devices.iter().map(|d| stamp(d)).collect();
    let b = t.path().join("b.erofs");
    let second = index(&store, &rec, ErofsSource::Flattened, &b);
    assert_eq!(first, TarIndex { ..second.clone() });
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two indexes of one image differ"
    );
    assert_eq!(
        second.devices.iter().map(|d| stamp(d)).collect::<Vec<_>>(),
        stamps,
        "the second index rewrote a tar"
    );
    // Another image sharing the base layer reuses its tar.
    let other = ImageSpec::oci()
        .layer(LayerSpec::gzip([
            Entry::dir("a"),
            Entry::file("a/keep", "kept from layer 1"),
            Entry::file("a/replaced", "old"),
            Entry::file("a/gone", "whited out"),
            Entry::dir("d"),
            Entry::file("d/hidden", "under an opaque dir"),
            Entry::random_file("big", 300_000, 7),
        ]))
        .layer(LayerSpec::gzip([Entry::file("extra", "other image")]));
    let other = common::load(&store, &other.build().unwrap(), "test/other:latest");
    assert_eq!(other.diff_ids[0], rec.diff_ids[0]);
    let c = t.path().join("c.erofs");
    let third = index(&store, &other, ErofsSource::Flattened, &c);
    assert_eq!(third.devices[0], first.devices[0]);
    assert_eq!(
        stamp(&third.devices[0]),
        stamps[0],
        "the shared tar was rewritten"
    );
    // Tars are reached through their images: fsck is clean, GC keeps them.
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    store.gc(&Default::default()).unwrap();
    for d in &third.devices {
        assert!(d.exists(), "gc removed {}", d.display());
    }
}

#[test]
fn a_layer_that_is_not_its_diff_id_is_refused_and_leaves_no_tar() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let mut rec = common::load(
        &store,
        &layered_image().build().unwrap(),
        "test/layered:latest",
    );
    let wrong = hoist_types::Digest::sha256_of(b"not the layer");
    rec.diff_ids[0] = wrong.clone();
    let out = t.path().join("x.erofs");
    let err = tar_index::build_tar_index(
        &store,
        &rec,
        ErofsSource::Flattened,
        &out,
        &Limits::default(),
        &NoProgress,
    )
    .unwrap_err();
    let text = hoist_types::error_chain(&err);
    assert!(text.contains(&wrong.to_string()), "{text}");
    assert!(
        store.has_blob(&wrong).unwrap().is_none(),
        "a wrong tar was published"
    );
    assert!(!out.exists(), "an index was written");
    let left: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
    let ingest: Vec<_> = std::fs::read_dir(t.path().join("store/hoist/ingest"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(ingest.is_empty(), "temp files left: {ingest:?}");
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

/// fsck.erofs, given the tars with `--device`, checks the index where it knows 512-byte
/// blocks (erofs-utils 1.6 and later). Debian 12's 1.5 knows chunk-based files and
/// device tables but stops at the block size ("blksize 512 isn't supported"): that exact
/// refusal is noted and accepted (the mount test is the oracle there); any other failure,
/// such as an unreadable superblock, fails.
#[test]
fn fsck_erofs_reads_the_index_where_it_knows_512_byte_blocks() {
    require!(Need::Tool("fsck.erofs"));
    let t = tempfile::tempdir().unwrap();
    let (store, rec) = stored(t.path(), &layered_image(), "test/layered:latest");
    let img = t.path().join("i.erofs");
    let ix = index(&store, &rec, ErofsSource::Flattened, &img);
    let mut cmd = Command::new("fsck.erofs");
    for d in &ix.devices {
        cmd.arg(format!("--device={}", d.display()));
    }
    let out = cmd.arg(&img).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && text.contains("blksize 512 isn't supported") {
        eprintln!(
            "NOTE {}: this fsck.erofs does not know 512-byte blocks: {}",
            this_test!(),
            text.trim()
        );
        return;
    }
    assert!(out.status.success(), "fsck.erofs: {text}");
}

/// The evil layers: an index holds exactly what `hoist unpack` writes (mounted), or both
/// refuse; a refusal leaves no tar that no image names and the store fsck-clean.
#[test]
fn evil_layers_give_the_unpacked_tree_or_the_same_refusal() {
    require!(Need::Root);
    if let Err(why) = tar_index::kernel_support(None) {
        hoist_testkit::skip_or_fail(this_test!(), &why);
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let sentinel = t.path().join("sentinel");
    hoist_testkit::evil::make_sentinel(&sentinel).unwrap();
    let (mut built, mut refused) = (0, 0);
    for (n, case) in hoist_testkit::evil::cases(&sentinel).iter().enumerate() {
        if case.max_layer_size.is_some() {
            continue; // the bomb: a limit case, not a tree
        }
        let Ok(rec) = std::panic::catch_unwind(|| support::evil_record(&store, case, n)) else {
            continue; // the store refuses the blobs themselves
        };
        let dir = t.path().join(format!("case{n}"));
        let unpack =
            hoist_unpack::unpack_image(&store, &rec, &dir, &UnpackOptions::default(), &NoProgress);
        let img = t.path().join(format!("case{n}.erofs"));
        let ix = tar_index::build_tar_index(
            &store,
            &rec,
            ErofsSource::Flattened,
            &img,
            &Limits::default(),
            &NoProgress,
        );
        match (unpack, ix) {
            (Ok(_), Ok(ix)) => {
                let want = Tree::scan(&dir).unwrap();
                assert_same_tree(
                    &want,
                    &mounted(&img, &ix.devices),
                    &Compare::default(),
                    case.name,
                );
                built += 1;
            }
            (Err(_), Err(_)) => refused += 1,
            // A sparse file's tar holds its segments, which an index cannot point at.
            (Ok(_), Err(e)) if case.name.starts_with("sparse-") => {
                let e = hoist_types::error_chain(&e);
                assert!(e.contains("a sparse file"), "{}: {e}", case.name);
                assert!(!img.exists(), "{}: an image was left", case.name);
                refused += 1;
            }
            (u, e) => panic!(
                "{}: unpack {:?} but the tar index {:?}",
                case.name,
                u.map(|_| ()),
                e.map(|_| ())
            ),
        }
        let report = store.fsck(&FsckOptions::default()).unwrap();
        assert!(report.is_clean(), "{}: {report:?}", case.name);
    }
    assert!(built >= 10, "only {built} evil cases built");
    assert!(refused >= 1, "no evil case refused");
}

/// An unprivileged user (uid 65534, through a child process) builds the same index, tars
/// included, byte for byte (root only, to drop to that user).
#[test]
fn an_unprivileged_build_gives_the_same_index_and_tars() {
    require!(Need::Root, Need::Tool("setpriv"));
    let t = tempfile::tempdir().unwrap();
    let built = layered_image().build().unwrap();
    let root_store = Store::open(t.path().join("root-store")).unwrap();
    let rec = common::load(&root_store, &built, "test/layered:latest");
    let a = t.path().join("a.erofs");
    let ix = index(&root_store, &rec, ErofsSource::Flattened, &a);
    let theirs = t.path().join("nobody");
    std::fs::create_dir(&theirs).unwrap();
    let their_store = Store::open(theirs.join("store")).unwrap();
    common::load(&their_store, &built, "test/layered:latest");
    drop(their_store);
    // The compressed layers' tars are the child's to write.
    let compressed: Vec<_> = rec
        .layers
        .iter()
        .zip(&rec.diff_ids)
        .filter(|(l, d)| l.digest != **d)
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(compressed.len(), 2);
    let probe = Store::open(theirs.join("store")).unwrap();
    for d in &compressed {
        assert!(probe.has_blob(d).unwrap().is_none());
    }
    drop(probe);
    support::ok(Command::new("chmod").args(["a+rx"]).arg(t.path()));
    support::ok(
        Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&theirs),
    );
    run_child_as_nobody(
        "child_index_as_asked",
        "HOIST_TAR_INDEX_CHILD",
        &theirs.display().to_string(),
    );
    let c = theirs.join("c.erofs");
    assert_owned_by_nobody(&c);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&c).unwrap(),
        "the unprivileged index differs"
    );
    for (d, diff) in ix.devices.iter().zip(&rec.diff_ids) {
        let mine = theirs
            .join("store")
            .join(d.strip_prefix(t.path().join("root-store")).unwrap());
        assert!(
            std::fs::read(d).unwrap() == std::fs::read(&mine).unwrap(),
            "tar {diff}"
        );
    }
}

/// Not a test: the child of the one above (builds as the user it runs as).
#[test]
#[ignore = "run by an_unprivileged_build_gives_the_same_index_and_tars"]
fn child_index_as_asked() {
    let dir = PathBuf::from(std::env::var("HOIST_TAR_INDEX_CHILD").expect("HOIST_TAR_INDEX_CHILD"));
    let store = Store::open(dir.join("store")).unwrap();
    let rec = store.resolve("test/layered:latest").unwrap();
    index(&store, &rec, ErofsSource::Flattened, &dir.join("c.erofs"));
}
