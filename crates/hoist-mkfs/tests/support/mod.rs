//! Helpers shared by the native writers' tests (ext4 and erofs): test images, the evil
//! cases as store records, commands and private mount namespaces.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_store::{ImageRecord, Store};
use hoist_testkit::images::{self, Entry, ImageSpec, LayerSpec};
use hoist_testkit::tree::{Compare, Kind, Tree};
use hoist_types::NoProgress;
use hoist_unpack::UnpackOptions;

/// A store in `dir/store` holding the image `spec` under `name`, and its record.
pub fn stored(dir: &Path, spec: &ImageSpec, name: &str) -> (Store, ImageRecord) {
    let store = Store::open(dir.join("store")).unwrap();
    let rec = crate::common::load(&store, &spec.build().unwrap(), name);
    (store, rec)
}

/// `hoist unpack` of `rec` into `dir`, scanned: what every image must read back as.
pub fn unpacked(store: &Store, rec: &ImageRecord, dir: &Path) -> Tree {
    hoist_unpack::unpack_image(store, rec, dir, &UnpackOptions::default(), &NoProgress).unwrap();
    Tree::scan(dir).unwrap()
}

/// Compares everything, and the mtimes of everything but directories (an unpack gives
/// implicitly created parents the time of the unpack).
pub fn assert_same_tree(want: &Tree, got: &Tree, cmp: &Compare, what: &str) {
    want.assert_same(got, cmp, what);
    let leaves = |t: &Tree| t.filtered(|_, n| !matches!(n.kind, Kind::Dir));
    let times = Compare {
        mtime: true,
        ..cmp.clone()
    };
    leaves(want).assert_same(&leaves(got), &times, &format!("{what} (mtimes)"));
}

/// The per-layer directories hoist builds for `rec` (overlayfs form), base first.
pub fn per_layer_dirs(store: &Store, rec: &ImageRecord) -> Vec<PathBuf> {
    hoist_mkfs::build_rootfs(
        store,
        rec,
        &hoist_mkfs::BuildOptions {
            format: Some(hoist_mkfs::Format::Dir),
            per_layer: true,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap()
    .lower_paths
}

/// Runs `cmd` and returns its stdout; panics with its output when it fails.
pub fn ok(cmd: &mut Command) -> String {
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

/// An image with ACLs, a big xattr set (block), shared xattr blocks, long and short
/// symlinks, a large sparse-looking file, devices with big numbers and odd names.
pub fn xattr_image() -> ImageSpec {
    let acl = |entries: &[(u16, u16, u32)]| {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    };
    let access = acl(&[
        (1, 6, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (8, 5, 50),
        (0x10, 7, u32::MAX),
        (0x20, 0, u32::MAX),
    ]);
    let mut big = Entry::file("x/big-xattrs", "b");
    let mut shared1 = Entry::file("x/shared1", "s1");
    let mut shared2 = Entry::file("x/shared2", "s2");
    for i in 0..6 {
        let v = vec![b'a' + i as u8; 200];
        big = big.xattr(&format!("user.k{i}"), v.clone());
        shared1 = shared1.xattr(&format!("user.k{i}"), v.clone());
        shared2 = shared2.xattr(&format!("user.k{i}"), v);
    }
    let mut blk = Entry::char_device("dev/sda", 8, 0);
    blk.kind = images::EntryKind::BlockDevice(8, 0);
    ImageSpec::oci()
        .layer(LayerSpec::gzip([
            Entry::dir("x"),
            Entry::file("x/acl", "acl").xattr("system.posix_acl_access", access.clone()),
            Entry::dir("x/acl-dir")
                .xattr("system.posix_acl_default", access)
                .xattr("user.empty", ""),
            big,
            shared1,
            shared2,
            Entry::symlink("x/short", "a/b/c"),
            Entry::symlink("x/long", &"long/".repeat(40)),
            Entry::symlink("x/max", &"m".repeat(59)),
            Entry::symlink("x/min-slow", &"m".repeat(60)),
            Entry::file("x/zeros", vec![0u8; 3 << 20]),
            Entry::file("x/odd name é", "utf-8"),
            Entry::dir("dev"),
            blk,
            Entry::char_device("dev/big", 300, 70000),
            Entry::fifo("dev/fifo"),
            Entry::file("x/old", "old").mtime(1),
        ]))
        .layer(LayerSpec::gzip([
            Entry::file("x/later", "second layer").mtime(2_000_000_000),
            Entry::whiteout("x/shared2"),
            Entry::dir("x/acl-dir").mode(0o700),
        ]))
}

/// `wide/` with `n` files, and `deep/` with `long` files of 200-byte names (a two-level
/// htree).
pub fn wide_image(n: usize, long: usize) -> ImageSpec {
    let mut entries = vec![Entry::dir("wide"), Entry::dir("deep")];
    entries.extend((0..n).map(|i| Entry::file(&format!("wide/file-{i:06}"), "")));
    entries.push(Entry::file("wide/last", "the last one"));
    entries.extend((0..long).map(|i| Entry::file(&format!("deep/{i:06}-{}", "n".repeat(193)), "")));
    ImageSpec::oci().layer(LayerSpec::gzip(entries))
}

/// `links/target` and `n` hard links to it (`links/l-000000`…): a link group of `n + 1`.
pub fn linked_image(n: usize) -> ImageSpec {
    let mut entries = vec![
        Entry::dir("links"),
        Entry::file("links/target", "one inode, many names"),
    ];
    entries.extend((0..n).map(|i| Entry::hardlink(&format!("links/l-{i:06}"), "links/target")));
    ImageSpec::oci().layer(LayerSpec::gzip(entries))
}

pub fn long_name(i: usize) -> String {
    format!("{i:06}-{}", "n".repeat(193))
}

/// Runs `script` with `sh -c` in a private mount namespace; `Err` says why it failed.
pub fn in_mount_ns(script: &str) -> Result<String, String> {
    let r = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", script])
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if !r.status.success() {
        return Err(String::from_utf8_lossy(&r.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&r.stdout).into_owned())
}

/// Puts an evil case's layers into `store` under a minimal OCI config and manifest.
pub fn evil_record(store: &Store, case: &hoist_testkit::evil::EvilCase, n: usize) -> ImageRecord {
    use hoist_types::{Descriptor, Digest, MediaType, Reference};
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for l in &case.layers {
        let d = Digest::sha256_of(&l.blob);
        store.put_blob(&d, &l.blob).unwrap();
        layers.push(serde_json::json!({
            "mediaType": l.media_type, "digest": d.to_string(), "size": l.blob.len()
        }));
        diff_ids.push(l.diff_id.clone());
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    let cd = Digest::sha256_of(&config);
    store.put_blob(&cd, &config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cd.to_string(), "size": config.len()},
        "layers": layers
    }))
    .unwrap();
    let md = Digest::sha256_of(&manifest);
    store.put_blob(&md, &manifest).unwrap();
    store
        .commit_image(hoist_store::ImageCommit {
            name: Some(Reference::parse(&format!("evil/case{n}:latest")).unwrap()),
            manifest: Descriptor::new(
                MediaType::parse("application/vnd.oci.image.manifest.v1+json"),
                md,
                manifest.len() as u64,
            ),
            index: None,
            source: None,
        })
        .unwrap()
}

/// Runs the ignored test `child` of this test binary as nobody (uid and gid 65534, no
/// groups) with `var` set to `value`; panics with its output when it fails. Needs root and
/// `setpriv` (`require!(Need::Root, Need::Tool("setpriv"))`).
pub fn run_child_as_nobody(child: &str, var: &str, value: &str) {
    let exe = std::env::current_exe().unwrap();
    ok(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            child,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(var, value));
}

/// A directory under `dir` that nobody owns, for a child's output, with `dir` made
/// readable to it.
pub fn nobody_dir(dir: &Path) -> PathBuf {
    ok(Command::new("chmod").args(["-R", "a+rX"]).arg(dir));
    let out = dir.join("nobody");
    std::fs::create_dir(&out).unwrap();
    ok(Command::new("chown").arg("65534:65534").arg(&out));
    out
}

/// Asserts `p` was written by nobody.
pub fn assert_owned_by_nobody(p: &Path) {
    let m = std::fs::metadata(p).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&m),
        65534,
        "{} built by nobody",
        p.display()
    );
}
