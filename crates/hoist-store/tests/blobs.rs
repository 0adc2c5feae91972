//! Blob writes: verification, atomic publication, cleanup, locks, ingest hygiene.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::time::{Duration, SystemTime};

use common::{ls, store};
use hoist_store::{Store, StoreError};
use hoist_types::{Algorithm, Digest};

fn sha512_of(data: &[u8]) -> Digest {
    let mut h = Algorithm::Sha512.hasher();
    h.update(data);
    h.finish()
}

#[test]
fn write_commit_and_read_back() {
    let (_t, s) = store();
    let data = b"hello, blob".repeat(100_000);
    for d in [Digest::sha256_of(&data), sha512_of(&data)] {
        assert_eq!(s.has_blob(&d).unwrap(), None);
        let mut w = s.blob_writer(&d, Some(data.len() as u64)).unwrap();
        for chunk in data.chunks(7777) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.written(), data.len() as u64);
        w.commit().unwrap();
        assert_eq!(s.has_blob(&d).unwrap(), Some(data.len() as u64));
        assert_eq!(
            s.blob_path(&d),
            s.root()
                .join("blobs")
                .join(d.algorithm().as_str())
                .join(d.hex())
        );
        assert_eq!(s.read_blob(&d, data.len() as u64).unwrap(), data);
        assert!(matches!(
            s.read_blob(&d, data.len() as u64 - 1),
            Err(StoreError::TooLarge { .. })
        ));
        let mut f = s.open_blob(&d).unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut back).unwrap();
        assert_eq!(back, data);
    }
    assert!(ls(&s.root().join("hoist/ingest")).is_empty());
}

/// Each case writes `written` while expecting (`digest of expected`, `size`), and must fail
/// with the named error, leaving nothing in blobs/ nor in ingest/.
#[test]
fn mismatches_leave_nothing() {
    let good = b"the real content".to_vec();
    let d = Digest::sha256_of(&good);
    let cases: Vec<(&str, Vec<u8>, Option<u64>, &str)> = vec![
        (
            "wrong content",
            b"other content!!!".to_vec(),
            None,
            "digest",
        ),
        (
            "wrong content, right size",
            b"THE REAL CONTENT".to_vec(),
            Some(16),
            "digest",
        ),
        ("truncated", good[..5].to_vec(), Some(16), "size"),
        ("truncated, no size", good[..5].to_vec(), None, "digest"),
        ("declared size too small", good.clone(), Some(10), "write"),
        ("empty", Vec::new(), Some(16), "size"),
    ];
    for (what, written, size, want) in cases {
        let (_t, s) = store();
        let mut w = s.blob_writer(&d, size).unwrap();
        let write_result = w.write_all(&written);
        let got = match write_result {
            Err(_) => {
                drop(w);
                "write".to_owned()
            }
            Ok(()) => match w.commit() {
                Err(StoreError::DigestMismatch { expected, actual }) => {
                    assert_eq!(expected, d, "{what}");
                    assert_eq!(actual, Digest::sha256_of(&written), "{what}");
                    "digest".to_owned()
                }
                Err(StoreError::SizeMismatch {
                    expected, actual, ..
                }) => {
                    assert_eq!((Some(expected), actual), (size, written.len() as u64));
                    "size".to_owned()
                }
                other => format!("{other:?}"),
            },
        };
        assert_eq!(got, want, "{what}");
        assert_eq!(s.has_blob(&d).unwrap(), None, "{what}");
        assert!(ls(&s.root().join("blobs/sha256")).is_empty(), "{what}");
        assert!(ls(&s.root().join("hoist/ingest")).is_empty(), "{what}");
    }
}

#[test]
fn error_messages_name_the_digests() {
    let (_t, s) = store();
    let d = Digest::sha256_of(b"x");
    let e = s.put_blob(&d, b"y").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&d.to_string()), "{msg}");
    assert!(msg.contains(&Digest::sha256_of(b"y").to_string()), "{msg}");
    let e = s.open_blob(&d).unwrap_err();
    assert!(matches!(e, StoreError::BlobNotFound { .. }));
    assert!(e.to_string().contains(&d.to_string()));
}

#[test]
fn drop_without_commit_removes_temp() {
    let (_t, s) = store();
    let d = Digest::sha256_of(b"abc");
    let mut w = s.blob_writer(&d, Some(3)).unwrap();
    w.write_all(b"ab").unwrap();
    w.flush().unwrap();
    assert_eq!(ls(&s.root().join("hoist/ingest")).len(), 1);
    drop(w);
    assert!(ls(&s.root().join("hoist/ingest")).is_empty());
    assert_eq!(s.has_blob(&d).unwrap(), None);
}

#[test]
fn put_blob_is_idempotent_and_concurrent_writers_agree() {
    let (_t, s) = store();
    let data = b"same bytes".to_vec();
    let d = Digest::sha256_of(&data);
    s.put_blob(&d, &data).unwrap();
    s.put_blob(&d, &data).unwrap();
    // Two writers of one blob: both commit, one publishes, the other just drops its temp.
    let mut a = s.blob_writer(&d, None).unwrap();
    let mut b = s.blob_writer(&d, None).unwrap();
    a.write_all(&data).unwrap();
    b.write_all(&data).unwrap();
    a.commit().unwrap();
    b.commit().unwrap();
    assert_eq!(s.read_blob(&d, 100).unwrap(), data);
    assert!(ls(&s.root().join("hoist/ingest")).is_empty());
}

#[test]
fn corrupt_blob_is_detected_on_read() {
    let (_t, s) = store();
    let d = Digest::sha256_of(b"good");
    s.put_blob(&d, b"good").unwrap();
    fs::write(s.blob_path(&d), b"evil").unwrap();
    match s.read_blob(&d, 100) {
        Err(StoreError::CorruptBlob { path, expected, .. }) => {
            assert_eq!(path, s.blob_path(&d));
            assert_eq!(expected, d);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn blob_locks_exclude_across_handles() {
    let (_t, s) = store();
    let other = Store::open(s.root()).unwrap();
    let d = Digest::sha256_of(b"locked");
    let held = s.lock_blob(&d).unwrap();
    assert!(
        held.path()
            .ends_with(format!("blob-sha256-{}.lock", d.hex()))
    );
    assert!(other.try_lock_blob(&d).unwrap().is_none());
    // Another digest is independent.
    assert!(
        other
            .try_lock_blob(&Digest::sha256_of(b"x"))
            .unwrap()
            .is_some()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let _l = other.lock_blob(&d).unwrap();
        tx.send(()).unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(rx.try_recv().is_err(), "second lock_blob did not wait");
    drop(held);
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    t.join().unwrap();
}

#[test]
fn open_cleans_stale_unlocked_ingest_files_only() {
    let (_t, s) = store();
    let ingest = s.root().join("hoist/ingest");
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    // A stale, abandoned temp file (as left by kill -9).
    let stale = ingest.join(".sha256-dead.1.2.3.tmp");
    File::create(&stale).unwrap().set_modified(old).unwrap();
    // A fresh one, maybe in use by a process that has not locked it yet.
    let fresh = ingest.join(".sha256-fresh.1.2.3.tmp");
    File::create(&fresh).unwrap();
    // An old one held by a live writer.
    let d = Digest::sha256_of(b"live");
    let mut live = s.blob_writer(&d, None).unwrap();
    live.write_all(b"li").unwrap();
    let live_name = ls(&ingest)
        .into_iter()
        .find(|n| n.contains(d.hex()))
        .unwrap();
    File::options()
        .write(true)
        .open(ingest.join(&live_name))
        .unwrap()
        .set_modified(old)
        .unwrap();
    // Not ours: not a temp name.
    fs::write(ingest.join("README"), b"x").unwrap();
    File::options()
        .write(true)
        .open(ingest.join("README"))
        .unwrap()
        .set_modified(old)
        .unwrap();

    Store::open(s.root()).unwrap();
    let left = ls(&ingest);
    assert!(
        !left.contains(&".sha256-dead.1.2.3.tmp".to_owned()),
        "{left:?}"
    );
    assert!(
        left.contains(&".sha256-fresh.1.2.3.tmp".to_owned()),
        "{left:?}"
    );
    assert!(left.contains(&live_name), "{left:?}");
    assert!(left.contains(&"README".to_owned()), "{left:?}");
    live.write_all(b"ve").unwrap();
    live.commit().unwrap();
    assert_eq!(s.read_blob(&d, 10).unwrap(), b"live");
}
