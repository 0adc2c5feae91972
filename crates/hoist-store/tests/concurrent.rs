//! Concurrency: threads and real processes committing into one store lose no update;
//! a writer killed with SIGKILL leaves nothing visible and no lock held.
//!
//! The multi-process tests re-run this test binary with `HOIST_STORE_CHILD` set and
//! `--ignored --exact child_*`: the `child_*` functions are subprocess entry points, not
//! tests. They are `#[ignore]`d, so a normal run does not count them as passed, and run
//! by hand without that variable they fail rather than pass having done nothing.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Spec, build, commit, index_names, ls, r};
use hoist_store::Store;
use hoist_types::Digest;

const CHILD_ENV: &str = "HOIST_STORE_CHILD";
const ROOT_ENV: &str = "HOIST_STORE_CHILD_ROOT";

fn spawn_child(test: &str, root: &std::path::Path, id: usize) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, id.to_string())
        .env(ROOT_ENV, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The worker id and store root [`spawn_child`] passed; panics outside such a child.
fn child_id() -> (usize, std::path::PathBuf) {
    let id = std::env::var(CHILD_ENV).ok().and_then(|v| v.parse().ok());
    let root = std::env::var_os(ROOT_ENV);
    match (id, root) {
        (Some(id), Some(root)) => (id, root.into()),
        _ => panic!(
            "a subprocess entry point: the multi-process tests run it with {CHILD_ENV} and {ROOT_ENV} set"
        ),
    }
}

const PER_WORKER: usize = 6;

/// Commit PER_WORKER images tagged `w{id}-{k}`, and move the shared tag each time.
fn worker(root: &std::path::Path, id: usize) {
    let s = Store::open(root).unwrap();
    for k in 0..PER_WORKER {
        let label = format!("w{id}-{k}");
        let layer = format!("layer of {label}");
        let b = build(&s, &Spec::new(&label, &[b"shared base", layer.as_bytes()]));
        commit(&s, &b, Some(&label));
        commit(&s, &b, Some("shared"));
        s.tag(&label, &r(&format!("{label}-alias"))).unwrap();
    }
}

fn check_all_present(root: &std::path::Path, workers: usize) {
    let s = Store::open(root).unwrap();
    let images = s.images().unwrap();
    assert_eq!(images.len(), workers * PER_WORKER);
    let mut want = vec!["docker.io/library/shared:latest".to_owned()];
    for id in 0..workers {
        for k in 0..PER_WORKER {
            want.push(format!("docker.io/library/w{id}-{k}:latest"));
            want.push(format!("docker.io/library/w{id}-{k}-alias:latest"));
            let rec = s.resolve(&format!("w{id}-{k}")).unwrap();
            assert_eq!(s.resolve(&format!("w{id}-{k}-alias")).unwrap().id, rec.id);
        }
    }
    want.sort();
    assert_eq!(index_names(root), want);
    // Every name is on exactly one record.
    let mut names: Vec<String> = images
        .iter()
        .flat_map(|i| i.names.iter().map(ToString::to_string))
        .collect();
    names.sort();
    assert_eq!(names, want);
    assert!(ls(&root.join("hoist/ingest")).is_empty());
}

#[test]
fn threads_with_their_own_handles_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    const WORKERS: usize = 6;
    let threads: Vec<_> = (0..WORKERS)
        .map(|id| {
            let root = root.clone();
            std::thread::spawn(move || worker(&root, id))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    check_all_present(&root, WORKERS);
}

#[test]
fn processes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    const WORKERS: usize = 4;
    let children: Vec<_> = (0..WORKERS)
        .map(|id| spawn_child("child_worker", &root, id))
        .collect();
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
    check_all_present(&root, WORKERS);
}

#[test]
#[ignore = "subprocess entry point of processes_lose_nothing"]
fn child_worker() {
    let (id, root) = child_id();
    worker(&root, id);
}

/// A child that starts a blob write, says so on stdout, and then waits to be killed.
#[test]
#[ignore = "subprocess entry point of kill_9_mid_write_leaves_nothing_visible"]
fn child_hang_mid_write() {
    let (_, root) = child_id();
    let s = Store::open(&root).unwrap();
    let d = Digest::sha256_of(b"never finished");
    let _blob_lock = s.lock_blob(&d).unwrap();
    let mut w = s.blob_writer(&d, None).unwrap();
    w.write_all(b"never").unwrap();
    w.flush().unwrap();
    println!("READY");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn kill_9_mid_write_leaves_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    Store::open(&root).unwrap();
    let mut child = spawn_child("child_hang_mid_write", &root, 0);
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let start = Instant::now();
    while !seen.contains("READY") {
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut out, &mut buf).unwrap();
        assert!(n > 0, "child exited early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        assert!(start.elapsed() < Duration::from_secs(60), "child too slow");
    }
    let s = Store::open(&root).unwrap();
    let d = Digest::sha256_of(b"never finished");
    // While it lives: its temp file is protected, its blob lock held.
    assert_eq!(s.clean_ingest(Duration::ZERO).unwrap(), 0);
    assert!(s.try_lock_blob(&d).unwrap().is_none());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // After: the lock is free, the temp file unlocked and removable, nothing published.
    assert!(s.try_lock_blob(&d).unwrap().is_some());
    assert_eq!(ls(&root.join("hoist/ingest")).len(), 1);
    assert_eq!(s.clean_ingest(Duration::ZERO).unwrap(), 1);
    assert!(ls(&root.join("hoist/ingest")).is_empty());
    assert_eq!(s.has_blob(&d).unwrap(), None);
    // The store works as before.
    let b = build(&s, &Spec::new("after", &[b"x"]));
    commit(&s, &b, Some("after"));
    assert_eq!(index_names(&root), ["docker.io/library/after:latest"]);
}
