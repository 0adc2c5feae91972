//! `--verity` (`BuildOptions::verity`): a dm-verity hash tree appended to ext4 and erofs
//! images, flattened and per layer, checked by `veritysetup verify` with the root hash and
//! hash offset of the result; a changed data block fails it; the filesystem inside still
//! passes its fsck; the same build gives the same tree; a cached image without a tree is
//! rebuilt when one is asked for, and the other way round.

#[path = "../../hoist-unpack/tests/common/mod.rs"]
mod common;
mod support;

use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::Command;

use hoist_mkfs::verity::{VerityInfo, fs_size, read_verity};
use hoist_mkfs::{BuildOptions, BuildResult, Ext4Writer, Format, MkfsError};
use hoist_store::{ImageRecord, Store};
use hoist_testkit::images;
use hoist_testkit::{Need, require};
use hoist_types::NoProgress;
use support::{ok, stored, xattr_image};

fn build(
    store: &Store,
    rec: &ImageRecord,
    format: Format,
    per_layer: bool,
    verity: bool,
) -> Result<BuildResult, MkfsError> {
    let opts = BuildOptions {
        format: Some(format),
        per_layer,
        verity,
        ext4_writer: Ext4Writer::Native {
            journal: false,
            free: 0,
        },
        ..BuildOptions::default()
    };
    hoist_mkfs::build_rootfs(store, rec, &opts, &NoProgress)
}

fn veritysetup_verify(image: &Path, v: &VerityInfo) -> std::process::Output {
    Command::new("veritysetup")
        .arg("verify")
        .arg(image)
        .arg(image)
        .arg(&v.root_hash)
        .arg(format!("--hash-offset={}", v.hash_offset))
        .output()
        .unwrap()
}

fn check(image: &Path, v: &VerityInfo, format: Format, t: &Path) {
    let out = veritysetup_verify(image, v);
    assert!(
        out.status.success(),
        "veritysetup verify {} failed: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v.hash_offset, fs_size(image).unwrap());
    assert_eq!(v.data_blocks * 4096, v.hash_offset);
    assert_eq!(read_verity(image).as_ref(), Some(v));
    // The superblock's parameters are the ones reported.
    let dump = ok(Command::new("veritysetup")
        .arg("dump")
        .arg(image)
        .arg(format!("--hash-offset={}", v.hash_offset)));
    assert!(dump.contains(&v.salt), "{dump}");
    assert!(dump.contains("sha256"), "{dump}");
    match format {
        Format::Ext4 => ok(Command::new("e2fsck").arg("-fn").arg(image)),
        _ => ok(Command::new("fsck.erofs").arg(image)),
    };
    // One changed byte in the data: the tree no longer verifies.
    let bad = t.join("corrupt.img");
    std::fs::copy(image, &bad).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
    let mut byte = [0u8; 1];
    std::fs::File::open(image)
        .unwrap()
        .read_exact_at(&mut byte, 4096 + 100)
        .unwrap();
    f.write_all_at(&[byte[0] ^ 0xFF], 4096 + 100).unwrap();
    assert!(!veritysetup_verify(&bad, v).status.success());
}

#[test]
fn veritysetup_verifies_ext4_and_erofs_images() {
    require!(
        Need::Tool("veritysetup"),
        Need::Tool("e2fsck"),
        Need::Tool("fsck.erofs")
    );
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    for (tag, spec) in [
        ("multi", images::sample_multi_layer()),
        ("xattrs", xattr_image()),
    ] {
        let rec = common::load(
            &store,
            &spec.build().unwrap(),
            &format!("test/{tag}:latest"),
        );
        for format in [Format::Ext4, Format::Erofs] {
            let flat = build(&store, &rec, format, false, true).unwrap();
            let v = flat.verity.clone().expect("a verity tree");
            assert_eq!(v.salt.len(), 64);
            assert_eq!(
                std::fs::metadata(&flat.rootfs_path).unwrap().len(),
                flat.size
            );
            check(&flat.rootfs_path, &v, format, t.path());
            // Cached: the same tree is reported.
            let again = build(&store, &rec, format, false, true).unwrap();
            assert!(again.cached);
            assert_eq!(again.verity.as_ref(), Some(&v));
            let per = build(&store, &rec, format, true, true).unwrap();
            assert!(per.verity.is_none());
            for l in &per.layers {
                let lv = l.verity.as_ref().expect("each layer has a tree");
                check(l.path.as_ref().unwrap(), lv, format, t.path());
                assert_ne!(lv.salt, v.salt, "the salt follows the key");
            }
            // Without --verity the image is rebuilt without a tree, and with it again the
            // tree is the same as before (deterministic).
            let plain = build(&store, &rec, format, false, false).unwrap();
            assert!(!plain.cached);
            assert!(plain.verity.is_none());
            assert!(read_verity(&plain.rootfs_path).is_none());
            let back = build(&store, &rec, format, false, true).unwrap();
            assert!(!back.cached);
            assert_eq!(back.verity.as_ref(), Some(&v));
        }
    }
}

#[test]
fn verity_needs_an_image_format() {
    let t = tempfile::tempdir().unwrap();
    let (store, rec) = stored(t.path(), &images::sample_multi_layer(), "test/multi:latest");
    let e = build(&store, &rec, Format::Dir, false, true).unwrap_err();
    assert!(matches!(e, MkfsError::VerityNeedsImage), "{e}");
}
