//! The on-disk layout: creation, versions, refusals, and OCI peers (umoci, skopeo)
//! reading the store directly.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{Spec, build, commit, ls, store};
use hoist_store::{Store, StoreError};
use hoist_testkit::{require_peers, skip_test};

#[test]
fn open_creates_the_layout() {
    let (_t, s) = store();
    let root = s.root();
    assert_eq!(ls(root), ["blobs", "hoist", "index.json", "oci-layout"]);
    assert_eq!(ls(&root.join("blobs")), ["sha256", "sha512"]);
    assert_eq!(
        ls(&root.join("hoist")),
        ["images", "ingest", "locks", "version"]
    );
    for dir in ["blobs/sha256", "hoist/images", "hoist"] {
        let mode = fs::metadata(root.join(dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o755, mode, "{dir}: {mode:o}");
        assert_eq!(mode & 0o500, 0o500, "{dir}: {mode:o}");
    }
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        idx,
        serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})
    );
    // Reopening is fine and changes nothing.
    let before = fs::read(root.join("index.json")).unwrap();
    Store::open(root).unwrap();
    assert_eq!(fs::read(root.join("index.json")).unwrap(), before);
}

#[test]
fn version_checks() {
    type Setup = fn(&Path);
    let cases: Vec<(&str, Setup, bool)> = vec![
        ("ours", |_| {}, true),
        (
            "newer",
            |r| fs::write(r.join("hoist/version"), "2\n").unwrap(),
            false,
        ),
        (
            "garbage",
            |r| fs::write(r.join("hoist/version"), "x").unwrap(),
            false,
        ),
        (
            "other OCI layout version",
            |r| fs::write(r.join("oci-layout"), r#"{"imageLayoutVersion":"9.9.9"}"#).unwrap(),
            false,
        ),
    ];
    for (what, setup, ok) in cases {
        let (_t, s) = store();
        setup(s.root());
        match Store::open(s.root()) {
            Ok(_) if ok => {}
            Err(e @ StoreError::UnsupportedVersion { .. }) if !ok => {
                let msg = e.to_string();
                assert!(msg.contains(&s.root().display().to_string()), "{msg}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn refuses_strange_directories_and_adopts_oci_layouts() {
    let t = tempfile::tempdir().unwrap();
    // A non-empty directory that is not a layout.
    let home = t.path().join("home");
    fs::create_dir(&home).unwrap();
    fs::write(home.join("notes.txt"), b"x").unwrap();
    match Store::open(&home) {
        Err(e @ StoreError::NotAStore { .. }) => {
            assert!(e.to_string().contains(&home.display().to_string()))
        }
        other => panic!("{other:?}"),
    }
    // A file.
    let file = t.path().join("file");
    fs::write(&file, b"x").unwrap();
    let e = Store::open(&file).unwrap_err();
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    // A path below a file.
    let e = Store::open(file.join("sub")).unwrap_err();
    assert!(e.to_string().contains("file"), "{e}");
    // An existing OCI layout (as skopeo writes it) is adopted; its entries stay.
    let layout = t.path().join("layout");
    fs::create_dir(&layout).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    let d = hoist_types::Digest::sha256_of(b"m");
    fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":1,"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#
        ),
    )
    .unwrap();
    let s = Store::open(&layout).unwrap();
    let b = build(&s, &Spec::new("adopt", &[b"a"]));
    commit(&s, &b, Some("mine"));
    assert_eq!(
        s.index_ref_names().unwrap(),
        ["v1", "docker.io/library/mine:latest"]
    );
    // A corrupt index.json is reported with its path.
    fs::write(layout.join("index.json"), b"{not json").unwrap();
    let e = Store::open(&layout).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("index.json"), "{e}");
}

#[test]
fn unwritable_location_gives_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let ro = t.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let enforced = fs::write(ro.join("probe"), b"x").is_err();
    let target = if enforced {
        ro.join("store")
    } else if Path::new("/sys/kernel").is_dir() && fs::create_dir("/sys/hoist-probe").is_err() {
        // Root ignores modes; sysfs refuses new directories to everyone.
        Path::new("/sys/hoist-store-test").to_owned()
    } else {
        skip_test!("running as root and no unwritable directory (sysfs) available");
    };
    match Store::open(&target) {
        Err(e @ StoreError::NotWritable { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&target.display().to_string()), "{msg}");
        }
        other => panic!("{}: {other:?}", target.display()),
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn default_root_shape() {
    let p = Store::default_root();
    assert!(p.is_absolute(), "{}", p.display());
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if root {
        assert_eq!(p, Path::new("/var/lib/hoist"));
    } else {
        assert!(p.ends_with("hoist") || p.to_string_lossy().contains("hoist-"));
    }
}

const TAGS: [&str; 3] = [
    "127.0.0.1:5000/ns/repo:tag",
    "docker.io/library/alpine:3.20",
    "ghcr.io/o/r/sub:v1.2-rc_3",
];

#[test]
fn umoci_lists_the_tags() {
    require_peers!(Peer::Umoci);
    let (_t, s) = store();
    let b = build(&s, &Spec::new("umoci", &[b"u1", b"u2"]));
    for tag in TAGS {
        commit(&s, &b, Some(tag));
    }
    let out = Command::new("/usr/bin/umoci")
        .args(["ls", "--layout"])
        .arg(s.root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "umoci ls failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut listed: Vec<&str> = stdout.lines().collect();
    listed.sort();
    assert_eq!(listed, TAGS);
}

#[test]
fn skopeo_copies_out_of_the_store() {
    require_peers!(Peer::Skopeo);
    let (t, s) = store();
    let b = build(&s, &Spec::new("skopeo", &[b"s1", b"s2"]));
    commit(&s, &b, Some(TAGS[0]));
    let out_dir = t.path().join("copied");
    let out = Command::new("/usr/bin/skopeo")
        .arg("copy")
        .arg(format!("oci:{}:{}", s.root().display(), TAGS[0]))
        .arg(format!("dir:{}", out_dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // dir: keeps the manifest bytes and names blobs by hex.
    assert_eq!(
        fs::read(out_dir.join("manifest.json")).unwrap(),
        b.manifest_bytes
    );
    for l in &b.layers {
        assert!(out_dir.join(l.digest.hex()).exists());
    }
    assert!(out_dir.join(b.config.digest.hex()).exists());
}
