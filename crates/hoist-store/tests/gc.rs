//! GC, leases and read-only opening at the library level.

mod common;

use std::fs;

use common::{Spec, build, commit, r, store};
use hoist_store::{FsckOptions, GcOptions, ImageCommit, Store, StoreError};
use hoist_testkit::skip_test;
use hoist_types::Digest;

fn gc(s: &Store) -> hoist_store::GcReport {
    s.gc(&GcOptions::default()).unwrap()
}

#[test]
fn leased_work_survives_gc_and_garbage_goes_after() {
    let (_t, s) = store();
    let kept = build(&s, &Spec::new("kept", &[b"shared", b"kept-own"]));
    commit(&s, &kept, Some("kept:1"));
    // A "pull" in flight: its blobs are written through a leased handle, not committed.
    let leased = s.leased().unwrap();
    let flight = build(&leased, &Spec::new("flight", &[b"shared", b"flight-own"]));
    assert!(leased.lease_path().unwrap().exists());
    let report = gc(&s);
    assert_eq!(report.blobs.count, 0, "{report:?}");
    assert_eq!(report.live_leases, 1);
    // It commits after the GC: everything is there.
    leased
        .commit_image(ImageCommit {
            name: Some(r("flight:1")),
            manifest: flight.manifest.clone(),
            index: None,
            source: None,
        })
        .unwrap();
    drop(leased);
    assert_eq!(gc(&s).blobs.count, 0, "both images are named");

    // Unleased, uncommitted blobs are garbage.
    let loose = build(&s, &Spec::new("loose", &[b"loose-own"]));
    let mut dry_run = GcOptions::default();
    dry_run.dry_run = true;
    let dry = s.gc(&dry_run).unwrap();
    assert_eq!(dry.blobs.count, 3, "config, manifest, layer");
    assert!(s.blob_path(&loose.config.digest).exists(), "dry run");
    // A grace period keeps fresh blobs.
    let mut grace = GcOptions::default();
    grace.blob_grace = std::time::Duration::from_secs(3600);
    let graced = s.gc(&grace).unwrap();
    assert_eq!(graced.blobs.count, 0);
    let done = gc(&s);
    assert_eq!(done.blobs, dry.blobs);
    assert!(!s.blob_path(&loose.config.digest).exists());
    // A commit whose blob was collected fails clearly and leaves nothing.
    let e = s
        .commit_image(ImageCommit {
            name: Some(r("loose:1")),
            manifest: loose.manifest.clone(),
            index: None,
            source: None,
        })
        .unwrap_err();
    assert!(matches!(e, StoreError::BlobNotFound { .. }), "{e}");
    assert!(s.resolve("loose:1").is_err());

    // rmi + gc frees the unique blobs and keeps the shared one.
    s.remove_image("flight:1", false).unwrap();
    let report = gc(&s);
    assert_eq!(report.blobs.count, 3);
    assert!(s.blob_path(&Digest::sha256_of(b"shared")).exists());
    assert!(!s.blob_path(&Digest::sha256_of(b"flight-own")).exists());
    assert!(s.fsck(&FsckOptions::default()).unwrap().is_clean());
}

#[test]
fn a_failed_operation_withdraws_only_what_nothing_else_reaches() {
    let (_t, s) = store();
    let kept = build(&s, &Spec::new("kept", &[b"shared"]));
    commit(&s, &kept, Some("kept:1"));
    // A failed "pull": it wrote a small layer, a large one, and the shared layer again.
    let failed = s.leased().unwrap();
    let large = vec![7u8; hoist_store::KEEP_AS_PARTIAL as usize];
    let flight = build(&failed, &Spec::new("flight", &[b"shared", b"own", &large]));
    // Another operation in flight has looked at the small layer.
    let other = s.leased().unwrap();
    other.has_blob(&flight.layers[1].digest).unwrap();

    let mut gone = failed.withdraw_unreached().unwrap();
    gone.sort();
    let mut want = vec![
        flight.config.digest.clone(),
        flight.manifest.digest.clone(),
        flight.layers[2].digest.clone(),
    ];
    want.sort();
    assert_eq!(
        gone, want,
        "the shared layer is named, the small one leased by another"
    );
    assert!(s.blob_path(&flight.layers[0].digest).exists());
    assert!(s.blob_path(&flight.layers[1].digest).exists());
    assert!(!s.blob_path(&flight.config.digest).exists());
    // The large layer is a complete, resumable partial download now.
    let partial = s
        .partial_blobs()
        .unwrap()
        .into_iter()
        .find(|p| p.digest == flight.layers[2].digest)
        .expect("kept as a partial");
    assert_eq!(
        (partial.size, partial.offset),
        (Some(large.len() as u64), large.len() as u64)
    );
    let report = s.fsck(&FsckOptions::default()).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");

    // Once the other operation is over, the small layer goes too.
    drop(other);
    assert_eq!(
        failed.withdraw_unreached().unwrap(),
        vec![flight.layers[1].digest.clone()]
    );
    // And a handle without a lease withdraws nothing.
    assert!(s.withdraw_unreached().unwrap().is_empty());
}

#[test]
fn a_dead_lease_protects_nothing_and_is_removed() {
    let (_t, s) = store();
    let dir = s.root().join("hoist/leases");
    fs::create_dir_all(&dir).unwrap();
    let b = build(&s, &Spec::new("x", &[b"x-layer"]));
    // What a killed process leaves: a lease file nobody holds.
    fs::write(dir.join("1-2-3.lease"), format!("{}\n", b.config.digest)).unwrap();
    let report = gc(&s);
    assert_eq!(report.dead_leases.count, 1);
    assert_eq!(report.blobs.count, 3);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn foreign_index_entries_are_roots() {
    let (_t, s) = store();
    let b = build(&s, &Spec::new("foreign", &[b"f-layer"]));
    // As `skopeo copy … oci:STORE:foreign` writes it: no hoist annotation.
    let idx_path = s.root().join("index.json");
    let mut idx: serde_json::Value = serde_json::from_slice(&fs::read(&idx_path).unwrap()).unwrap();
    idx["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": b.manifest.digest.to_string(),
            "size": b.manifest.size,
            "annotations": {"org.opencontainers.image.ref.name": "foreign"}
        }));
    fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    assert_eq!(gc(&s).blobs.count, 0);
    assert!(s.fsck(&FsckOptions::default()).unwrap().is_clean());
}

#[test]
fn a_read_only_store_opens_for_reading() {
    let (t, s) = store();
    let b = build(&s, &Spec::new("ro", &[b"ro-layer"]));
    commit(&s, &b, Some("ro:1"));
    let ro = t.path().join("ro");
    fs::create_dir(&ro).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(s.root())
        .arg(&ro)
        .status()
        .is_ok_and(|st| st.success());
    if !ok {
        skip_test!("a read-only bind mount is refused here");
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(ro.clone());
    let rs = Store::open(&ro).unwrap();
    assert!(rs.is_read_only());
    assert_eq!(rs.resolve("ro:1").unwrap().id, b.config.digest);
    let e = rs.tag("ro:1", &r("ro:2")).unwrap_err();
    assert!(matches!(e, StoreError::ReadOnly { .. }), "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");
    let e = rs.gc(&GcOptions::default()).unwrap_err();
    assert!(matches!(e, StoreError::ReadOnly { .. }), "{e}");
}
