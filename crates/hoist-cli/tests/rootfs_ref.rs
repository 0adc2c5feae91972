//! `hoist rootfs REF` and `hoist unpack REF DIR` pull what is missing first (issues 14 and
//! 16): `--pull missing|always|never` against the real Distribution registry (images pushed
//! by skopeo), with the trust policy enforced on that pull. A refusal leaves the store
//! empty and fsck clean, and writes no output.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output};

use hoist_testkit::images::{sample_docker, sample_multi_layer};
use hoist_testkit::registry::Registry;
use hoist_testkit::skopeo::push_spec;
use hoist_testkit::tree::{Compare, Tree};
use hoist_testkit::{Need, Peer, require};
use serde_json::Value;
use tempfile::TempDir;

struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `hoist --store DIR/STORE ARGS…`.
    fn run(&self, store: &str, args: &[&str]) -> Output {
        support::hoist(self.dir.path())
            .arg("--store")
            .arg(self.path(store))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, store: &str, args: &[&str]) -> Output {
        let out = self.run(store, args);
        assert!(
            out.status.success(),
            "hoist {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn fails(&self, store: &str, args: &[&str]) -> String {
        let out = self.run(store, args);
        assert!(
            !out.status.success(),
            "hoist {args:?} succeeded but should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, store: &str, args: &[&str]) -> Value {
        serde_json::from_slice(&self.ok(store, args).stdout).unwrap()
    }

    /// The IDs of the images in the store, sorted, once each.
    fn image_ids(&self, store: &str) -> Vec<String> {
        let v = self.json(store, &["images", "--format", "json"]);
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["Id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn e2fsck_clean(image: &str) {
    let out = StdCommand::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {image}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A policy that rejects everything but what `scope` (of the docker transport) allows with
/// `requirement`.
fn write_policy(path: &Path, scope: &str, requirement: &str) -> String {
    std::fs::write(
        path,
        format!(
            r#"{{"default": [{{"type": "reject"}}], "transports": {{"docker": {{"{scope}": [{requirement}]}}}}}}"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn rootfs_and_unpack_of_a_reference_pull_into_an_empty_store() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Tool("e2fsck")
    );
    let reg = Registry::plain();
    let built = push_spec(&sample_multi_layer(), &reg, "ns/app:1").unwrap();
    let r = reg.image_ref("ns/app:1");
    let env = Env::new();

    // ext4, from an empty store: pulled, then built.
    let out = env.ok(
        "a",
        &["--progress", "plain", "rootfs", &r, "--format", "ext4"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("pulled {r}")), "{stderr}");
    let ext4: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ext4["cached"], false);
    assert_eq!(ext4["format"], "ext4");
    assert_eq!(ext4["image"], built.config.digest);
    assert_eq!(ext4["layers"].as_array().unwrap().len(), 3);
    e2fsck_clean(ext4["rootfs_path"].as_str().unwrap());
    assert_eq!(env.image_ids("a"), vec![built.config.digest.clone()]);
    support::assert_fsck_clean(env.dir.path(), &env.path("a"));
    // Again: the image is in the store now (no pull), the result cached.
    let out = env.ok(
        "a",
        &["--progress", "plain", "rootfs", &r, "--format", "ext4"],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("pulled"));
    let warm: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(warm["cached"], true);
    assert_eq!(warm["rootfs_path"], ext4["rootfs_path"]);

    // dir, from another empty store (and docker://, which always asks the registry).
    let dir = env.json(
        "b",
        &["rootfs", &format!("docker://{r}"), "--format", "dir"],
    );
    assert_eq!(dir["image"], built.config.digest);
    let tree = Tree::scan(Path::new(dir["rootfs_path"].as_str().unwrap())).unwrap();
    assert!(tree.get("opt/readme.txt").is_some());
    assert!(tree.get("etc/hostname").is_none(), "whited out");

    // unpack REF DIR from a third empty store: the same tree.
    let target = env.path("rootfs");
    let out = env.ok("c", &["--progress", "plain", "unpack", &r, s(&target)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("pulled {r}")) && stderr.contains("3 layers"),
        "{stderr}"
    );
    tree.assert_same(
        &Tree::scan(&target).unwrap(),
        &Compare::default(),
        "unpack REF DIR vs rootfs REF --format dir",
    );
    assert_eq!(env.image_ids("c"), vec![built.config.digest.clone()]);
    support::assert_fsck_clean(env.dir.path(), &env.path("c"));
}

#[test]
fn pull_never_on_a_missing_image_fails_and_writes_nothing() {
    require!(Need::Peer(Peer::Registry), Need::Peer(Peer::Skopeo));
    let reg = Registry::plain();
    push_spec(&sample_docker(), &reg, "ns/app:1").unwrap();
    let r = reg.image_ref("ns/app:1");
    let env = Env::new();
    let out = env.path("out.ext4");

    let err = env.fails(
        "st",
        &[
            "rootfs",
            &r,
            "--pull",
            "never",
            "--format",
            "ext4",
            "-o",
            s(&out),
        ],
    );
    assert!(
        err.contains(&r) && err.contains("--pull never") && err.contains("hoist pull"),
        "{err}"
    );
    assert!(!out.exists());
    let target = env.path("rootfs");
    let err = env.fails("st", &["unpack", "--pull", "never", &r, s(&target)]);
    assert!(err.contains(&r) && err.contains("--pull never"), "{err}");
    assert!(!target.exists());
    // docker:// always asks the registry, which --pull never forbids.
    let err = env.fails(
        "st",
        &[
            "unpack",
            "--pull",
            "never",
            &format!("docker://{r}"),
            s(&target),
        ],
    );
    assert!(err.contains("--pull never"), "{err}");
    assert!(!target.exists());
    // An ID absent from the store is not taken for a reference to pull.
    for pull in ["missing", "always"] {
        let err = env.fails(
            "st",
            &["unpack", "--pull", pull, "sha256:0123456789ab", s(&target)],
        );
        assert!(err.contains("an image ID cannot be pulled"), "{err}");
        assert!(!target.exists());
    }
    assert!(env.image_ids("st").is_empty());
    support::assert_fsck_clean(env.dir.path(), &env.path("st"));

    // Once pulled, --pull never finds it, by name or by ID prefix.
    env.ok("st", &["-q", "pull", &r]);
    let id = env.image_ids("st").remove(0);
    env.ok("st", &["unpack", "--pull", "never", &r, s(&target)]);
    assert!(target.join("usr/bin/app").is_file());
    let built = env.json(
        "st",
        &["rootfs", "--pull", "never", &id[7..19], "--format", "dir"],
    );
    assert_eq!(built["image"], id);
}

#[test]
fn pull_missing_uses_the_store_without_asking_the_registry() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Tool("e2fsck")
    );
    let mut reg = Registry::plain();
    let built = push_spec(&sample_docker(), &reg, "ns/app:1").unwrap();
    let r = reg.image_ref("ns/app:1");
    let env = Env::new();
    env.ok("st", &["-q", "pull", &r]);
    // The registry is gone: only the store can answer.
    reg.kill();

    let ext4 = env.json("st", &["rootfs", &r, "--format", "ext4"]);
    assert_eq!(ext4["image"], built.config.digest);
    e2fsck_clean(ext4["rootfs_path"].as_str().unwrap());
    let target = env.path("rootfs");
    env.ok("st", &["unpack", "--pull", "missing", &r, s(&target)]);
    assert!(target.join("usr/bin/app").is_file());
    assert!(target.join("var/lib/state.bin").is_file());

    // --pull always does ask, and fails with the registry gone, writing nothing.
    let t2 = env.path("rootfs2");
    let err = env.fails(
        "st",
        &[
            "unpack",
            "--pull",
            "always",
            "--retry-times",
            "0",
            &r,
            s(&t2),
        ],
    );
    assert!(err.contains(&format!("pulling {r}")), "{err}");
    assert!(!t2.exists());
    let err = env.fails(
        "st",
        &["rootfs", "--pull", "always", "--retry-times", "0", &r],
    );
    assert!(err.contains(&format!("pulling {r}")), "{err}");
    assert_eq!(env.image_ids("st"), vec![built.config.digest.clone()]);
    support::assert_fsck_clean(env.dir.path(), &env.path("st"));
}

#[test]
fn pull_always_follows_a_tag_moved_upstream() {
    require!(Need::Peer(Peer::Registry), Need::Peer(Peer::Skopeo));
    let reg = Registry::plain();
    let old = push_spec(&sample_docker(), &reg, "ns/app:1").unwrap();
    let r = reg.image_ref("ns/app:1");
    let env = Env::new();
    let first = env.json("st", &["rootfs", &r, "--format", "dir"]);
    assert_eq!(first["image"], old.config.digest);

    // The tag moves to another image upstream.
    let new = push_spec(&sample_multi_layer(), &reg, "ns/app:1").unwrap();
    assert_ne!(new.config.digest, old.config.digest);
    // missing: the store has the name, so the old image.
    let again = env.json("st", &["rootfs", &r, "--format", "dir"]);
    assert_eq!(again["image"], old.config.digest);
    let t1 = env.path("old");
    env.ok("st", &["unpack", &r, s(&t1)]);
    assert!(t1.join("usr/bin/app").is_file());
    // always: the registry is asked, the tag followed.
    let moved = env.json("st", &["rootfs", "--pull", "always", &r, "--format", "dir"]);
    assert_eq!(moved["image"], new.config.digest);
    let t2 = env.path("new");
    env.ok("st", &["unpack", "--pull", "always", &r, s(&t2)]);
    assert!(t2.join("opt/readme.txt").is_file());
    assert!(!t2.join("usr/bin/app").exists());
    let ids = env.image_ids("st");
    let mut want = vec![old.config.digest.clone(), new.config.digest.clone()];
    want.sort();
    assert_eq!(ids, want);
    support::assert_fsck_clean(env.dir.path(), &env.path("st"));
}

#[test]
fn a_trust_policy_refusal_leaves_no_image_and_no_output() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Peer(Peer::Openssl)
    );
    let reg = Registry::plain();
    let built = push_spec(&sample_docker(), &reg, "ns/app:1").unwrap();
    let r = reg.image_ref("ns/app:1");
    let host = reg.host_port();
    let env = Env::new();
    let key = env.path("k.pem");
    let public = env.path("k.pub");
    for args in [
        vec![
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            s(&key),
        ],
        vec!["pkey", "-in", s(&key), "-pubout", "-out", s(&public)],
    ] {
        let st = StdCommand::new("openssl").args(&args).status().unwrap();
        assert!(st.success(), "openssl {args:?}");
    }
    let reject = write_policy(&env.path("reject.json"), &host, r#"{"type": "reject"}"#);
    let signed = write_policy(
        &env.path("signed.json"),
        &host,
        &format!(
            r#"{{"type": "sigstoreSigned", "keyPath": "{}", "signedIdentity": {{"type": "matchRepository"}}}}"#,
            s(&public)
        ),
    );
    let accept = write_policy(
        &env.path("accept.json"),
        &host,
        r#"{"type": "insecureAcceptAnything"}"#,
    );
    let out = env.path("out.ext4");
    let target = env.path("rootfs");
    for (policy, why) in [
        (&reject, "rejects every image in this scope"),
        (&signed, "no sigstore (cosign) signature was found"),
    ] {
        for pull in ["missing", "always"] {
            let err = env.fails(
                "st",
                &[
                    "rootfs",
                    "--policy",
                    policy,
                    "--pull",
                    pull,
                    &r,
                    "--format",
                    "ext4",
                    "-o",
                    s(&out),
                ],
            );
            assert!(
                err.contains("refused by the policy") && err.contains(&host) && err.contains(why),
                "{err}"
            );
            assert!(!out.exists());
            let err = env.fails(
                "st",
                &["unpack", "--policy", policy, "--pull", pull, &r, s(&target)],
            );
            assert!(
                err.contains("refused by the policy") && err.contains(&host) && err.contains(why),
                "{err}"
            );
            assert!(!target.exists());
            assert!(env.image_ids("st").is_empty());
            support::assert_fsck_clean(env.dir.path(), &env.path("st"));
        }
    }
    // The same commands under a policy that accepts the scope: pulled and built.
    env.ok("st", &["unpack", "--policy", &accept, &r, s(&target)]);
    assert!(target.join("usr/bin/app").is_file());
    env.ok(
        "st",
        &[
            "rootfs",
            "--policy",
            &accept,
            &r,
            "--format",
            "ext4",
            "-o",
            s(&out),
        ],
    );
    assert!(out.is_file());
    assert_eq!(env.image_ids("st"), vec![built.config.digest.clone()]);
}

/// A store this process may only read (another user's): `hoist unpack` still unpacks from
/// it (it takes no lease there), and a pull into it fails clearly, writing nothing.
#[test]
fn unpack_reads_a_store_it_may_not_write() {
    require!(
        Need::Root,
        Need::Tool("setpriv"),
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo)
    );
    use std::os::unix::fs::PermissionsExt as _;
    let reg = Registry::plain();
    push_spec(&sample_docker(), &reg, "ns/app:1").unwrap();
    push_spec(&sample_multi_layer(), &reg, "ns/other:1").unwrap();
    let r = reg.image_ref("ns/app:1");
    let env = Env::new();
    env.ok("st", &["-q", "pull", &r]);
    // Readable, not writable, by nobody (65534).
    let chmod = StdCommand::new("chmod")
        .args(["-R", "a+rX,go-w"])
        .arg(env.dir.path())
        .status()
        .unwrap();
    assert!(chmod.success());
    let out = env.path("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut c = StdCommand::new("setpriv");
        support::isolate(&mut c, env.dir.path());
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_hoist"))
            .arg("--store")
            .arg(env.path("st"))
            .args(args)
            .output()
            .unwrap()
    };
    let target = out.join("rootfs");
    let o = as_nobody(&["unpack", &r, s(&target)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(target.join("usr/bin/app").is_file());
    // An image it lacks cannot be pulled into a store it may not write.
    let t2 = out.join("other");
    let o = as_nobody(&["unpack", &reg.image_ref("ns/other:1"), s(&t2)]);
    assert!(!o.status.success());
    assert!(!t2.exists());
    assert_eq!(env.image_ids("st").len(), 1);
    support::assert_fsck_clean(env.dir.path(), &env.path("st"));
}
