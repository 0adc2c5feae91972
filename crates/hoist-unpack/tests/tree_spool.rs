//! The tree's pass 2 hands over every file's bytes from the spool of pass 1, the same
//! whether it runs on one thread or several, equal to what the layers hold.

mod common;

use std::collections::BTreeMap;

use hoist_store::Store;
use hoist_testkit::images;
use hoist_types::NoProgress;
use hoist_unpack::Limits;
use hoist_unpack::tree::{FsTree, InodeKind};

type Files = BTreeMap<u32, Vec<u8>>;

/// Every file's bytes, each file's pieces checked to come at adjacent offsets.
fn collect(tree: &FsTree, rec: &hoist_store::ImageRecord, threads: usize) -> Files {
    let files = std::sync::Mutex::new(Files::new());
    tree.stream_data(rec, &NoProgress, threads, || {
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

/// Every regular file of the tree by inode, with its content as `hoist unpack` leaves it
/// in `root`.
fn unpacked(tree: &FsTree, root: &std::path::Path) -> Files {
    let mut out = Files::new();
    let mut stack = vec![(FsTree::ROOT, root.to_path_buf())];
    while let Some((id, path)) = stack.pop() {
        match &tree.inodes[id as usize].kind {
            InodeKind::Dir { entries } => {
                for (name, c) in entries {
                    let name = std::str::from_utf8(name).unwrap();
                    stack.push((*c, path.join(name)));
                }
            }
            InodeKind::File { size } if *size > 0 => {
                out.insert(id, std::fs::read(&path).unwrap());
            }
            _ => {}
        }
    }
    out
}

#[test]
fn spooled_data_is_what_the_layers_hold() {
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
    let tree = FsTree::flattened_spooled(&store, &rec, &spool, &limits, &NoProgress).unwrap();
    assert!(
        std::fs::read_dir(&spool).unwrap().next().is_none(),
        "the spool files have no names"
    );
    let want = collect(&tree, &rec, 1);
    assert!(!want.is_empty());
    let mut ids: Vec<u32> = tree.data_order().collect();
    ids.sort_unstable();
    assert_eq!(want.keys().copied().collect::<Vec<_>>(), ids);
    // The bytes are the files' contents as the unpack writes them.
    let dir = t.path().join("unpacked");
    let opts = hoist_unpack::UnpackOptions {
        rootless: true,
        ..Default::default()
    };
    hoist_unpack::unpack_image(&store, &rec, &dir, &opts, &NoProgress).unwrap();
    assert_eq!(unpacked(&tree, &dir), want);
    for threads in [2, 3, 8] {
        assert_eq!(collect(&tree, &rec, threads), want, "{threads} threads");
    }
    let mut with_data = 0;
    for i in 0..rec.layers.len() {
        let a = FsTree::layer_spooled(&store, &rec, i, &spool, &limits, &NoProgress).unwrap();
        let one = collect(&a, &rec, 1);
        with_data += usize::from(!one.is_empty());
        assert_eq!(collect(&a, &rec, 3), one, "layer {i}");
    }
    assert!(with_data >= 2, "the image must spread data over layers");
}
