//! The tree's pass 2 gives the same bytes whether pass 1 spooled the file data or not,
//! and whether it runs on one thread or several.

mod common;

use std::collections::BTreeMap;

use hoist_store::Store;
use hoist_testkit::images;
use hoist_types::NoProgress;
use hoist_unpack::Limits;
use hoist_unpack::tree::FsTree;

type Files = BTreeMap<u32, Vec<u8>>;

/// Every file's bytes, each file's pieces checked to come at adjacent offsets.
fn collect(tree: &FsTree, store: &Store, rec: &hoist_store::ImageRecord, threads: usize) -> Files {
    let files = std::sync::Mutex::new(Files::new());
    tree.stream_data_parallel(store, rec, &Limits::default(), &NoProgress, threads, || {
        |id: u32, off: u64, b: &[u8]| {
            let mut files = files.lock().unwrap();
            let f = files.entry(id).or_default();
            assert_eq!(f.len() as u64, off, "inode {id}: out of order");
            f.extend_from_slice(b);
            Ok(())
        }
    })
    .unwrap();
    files.into_inner().unwrap()
}

#[test]
fn spooled_and_reread_data_are_the_same() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let rec = common::load(
        &store,
        &images::sample_multi_layer().build().unwrap(),
        "test/multi:latest",
    );
    let limits = Limits::default();
    let spool = t.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let plain = FsTree::flattened(&store, &rec, &limits, &NoProgress).unwrap();
    let spooled = FsTree::flattened_spooled(&store, &rec, &spool, &limits, &NoProgress).unwrap();
    assert_eq!(plain.inodes, spooled.inodes);
    assert!(
        std::fs::read_dir(&spool).unwrap().next().is_none(),
        "the spool files have no names"
    );
    let want = collect(&plain, &store, &rec, 1);
    assert!(!want.is_empty());
    let mut ids: Vec<u32> = plain.data_order().collect();
    ids.sort_unstable();
    assert_eq!(want.keys().copied().collect::<Vec<_>>(), ids);
    for threads in [1, 3] {
        assert_eq!(collect(&plain, &store, &rec, threads), want, "{threads}");
        assert_eq!(
            collect(&spooled, &store, &rec, threads),
            want,
            "spooled, {threads}"
        );
    }
    for i in 0..rec.layers.len() {
        let a = FsTree::layer(&store, &rec, i, &limits, &NoProgress).unwrap();
        let b = FsTree::layer_spooled(&store, &rec, i, &spool, &limits, &NoProgress).unwrap();
        assert_eq!(a.inodes, b.inodes);
        assert_eq!(
            collect(&a, &store, &rec, 2),
            collect(&b, &store, &rec, 2),
            "layer {i}"
        );
    }
}
