//! Every evil layer of `hoist_testkit::evil`, applied as root and rootless: each gives a clear
//! error or an in-root result, and the sentinel directory beside the root is untouched (not
//! created, changed, removed or chmod-ed: times included).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use hoist_testkit::evil::{self, Check, EvilCase, Expect};
use hoist_testkit::tree::{Compare, Tree};
use hoist_testkit::{Need, require};
use hoist_types::{Digest, MediaType, NoProgress};
use hoist_unpack::{LayerInput, Limits, Rootfs, UnpackError, UnpackOptions};

fn apply(case: &EvilCase, root: &Path, rootless: bool) -> Result<(), UnpackError> {
    let opts = UnpackOptions {
        rootless,
        limits: Limits {
            max_layer_size: case
                .max_layer_size
                .unwrap_or(Limits::default().max_layer_size),
            ..Limits::default()
        },
        ..UnpackOptions::default()
    };
    let mut rootfs = Rootfs::open(root, &opts)?;
    for layer in &case.layers {
        let digest = Digest::sha256_of(&layer.blob);
        let diff_id = Digest::parse(&layer.diff_id).unwrap();
        let mt = MediaType::parse(layer.media_type);
        rootfs.apply_layer(
            layer.blob.as_slice(),
            LayerInput {
                digest: &digest,
                media_type: &mt,
                diff_id: &diff_id,
                size: layer.blob.len() as u64,
            },
            &NoProgress,
        )?;
    }
    rootfs.finish()
}

fn check(root: &Path, c: &Check, rootless: bool) -> Result<(), String> {
    let p = |rel: &[u8]| root.join(std::ffi::OsStr::from_bytes(rel));
    match c {
        Check::Absent(rel) => match fs::symlink_metadata(p(rel)) {
            Err(_) => Ok(()),
            Ok(_) => Err(format!("{:?} exists", String::from_utf8_lossy(rel))),
        },
        Check::File(rel, content) => {
            let m = fs::symlink_metadata(p(rel)).map_err(|e| format!("{rel:?}: {e}"))?;
            if !m.is_file() {
                return Err(format!("{rel:?} is not a regular file"));
            }
            let got = fs::read(p(rel)).unwrap();
            if &got != content {
                return Err(format!("{rel:?} holds {:?}", String::from_utf8_lossy(&got)));
            }
            Ok(())
        }
        Check::Dir(rel) => match fs::symlink_metadata(p(rel)) {
            Ok(m) if m.is_dir() => Ok(()),
            other => Err(format!("{rel:?} is not a directory: {other:?}")),
        },
        Check::Symlink(rel, target) => match fs::read_link(p(rel)) {
            Ok(t) if t.as_os_str().as_bytes() == target.as_slice() => Ok(()),
            other => Err(format!("{rel:?} is not a symlink to {target:?}: {other:?}")),
        },
        Check::Mode(rel, root_mode, rootless_mode) => {
            let want = if rootless { *rootless_mode } else { *root_mode };
            let got = fs::symlink_metadata(p(rel))
                .map_err(|e| e.to_string())?
                .mode()
                & 0o7777;
            if got == want {
                Ok(())
            } else {
                Err(format!("{rel:?} has mode {got:o}, want {want:o}"))
            }
        }
        Check::NoXattr(rel, name) => {
            let mut buf = [0u8; 64];
            match rustix::fs::lgetxattr(p(rel), name.as_str(), &mut buf[..]) {
                Err(_) => Ok(()),
                Ok(_) => Err(format!("{rel:?} has xattr {name}")),
            }
        }
        Check::CharIfRoot(rel, major, minor) => {
            let m = fs::symlink_metadata(p(rel));
            if rootless {
                return match m {
                    Err(_) => Ok(()),
                    Ok(_) => Err(format!("{rel:?}: a device in rootless mode")),
                };
            }
            let m = m.map_err(|e| e.to_string())?;
            let rdev = m.rdev();
            let (ma, mi) = (
                ((rdev >> 8) & 0xfff) as u32,
                ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) as u32,
            );
            if m.file_type().is_char_device() && (ma, mi) == (*major, *minor) {
                Ok(())
            } else {
                Err(format!("{rel:?} is not char device {major}:{minor}"))
            }
        }
        Check::HostAbsent(path) => {
            if fs::symlink_metadata(path).is_ok() {
                Err(format!("host path {} exists", path.display()))
            } else {
                Ok(())
            }
        }
    }
}

fn names(dir: &Path) -> BTreeSet<Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect()
}

fn run_all(rootless: bool) {
    let mode = if rootless { "rootless" } else { "root" };
    let mut failures = Vec::new();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let sentinel = t.path().join("sentinel");
    let cases = evil::cases(&sentinel);
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    for case in &cases {
        for p in [&root, &sentinel] {
            if p.exists() {
                fs::remove_dir_all(p).unwrap();
            }
        }
        fs::create_dir(&root).unwrap();
        evil::make_sentinel(&sentinel).unwrap();
        let before = Tree::scan(&sentinel).unwrap();
        let beside = names(t.path());
        let result = apply(case, &root, rootless);
        let after = Tree::scan(&sentinel).unwrap();
        let diff = before.diff(&after, &Compare::exact());
        if !diff.is_empty() {
            failures.push(format!(
                "{} ({mode}): SENTINEL CHANGED: {diff:?}",
                case.name
            ));
        }
        if names(t.path()) != beside {
            failures.push(format!(
                "{} ({mode}): something appeared beside the root",
                case.name
            ));
        }
        if fs::symlink_metadata("/etc/hoist-evil-x").is_ok() {
            failures.push(format!(
                "{} ({mode}): /etc/hoist-evil-x was created",
                case.name
            ));
        }
        match (&result, case.expect) {
            (Err(e), Expect::Error | Expect::Either) => {
                let msg = e.to_string();
                assert!(!msg.is_empty());
                eprintln!("{:<45} {mode:<8} error: {msg}", case.name);
            }
            (Ok(()), Expect::Ok | Expect::Either) => {
                eprintln!("{:<45} {mode:<8} ok", case.name);
                for c in &case.checks {
                    if let Err(why) = check(&root, c, rootless) {
                        failures.push(format!("{} ({mode}): check {c:?} failed: {why}", case.name));
                    }
                }
            }
            (Ok(()), Expect::Error) => failures.push(format!(
                "{} ({mode}): succeeded, an error was expected",
                case.name
            )),
            (Err(e), Expect::Ok) => failures.push(format!("{} ({mode}): failed: {e}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn evil_layers_as_root() {
    require!(Need::Root);
    run_all(false);
}

#[test]
fn evil_layers_rootless() {
    run_all(true);
}
