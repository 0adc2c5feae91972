//! Shared by the transfer tests: a private environment for `hoist`, small test images,
//! and checks that a pull ended with exactly the image a clean pull gives.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

#[path = "../support/mod.rs"]
pub mod support;

use assert_cmd::Command;
use hoist_testkit::images::{BuiltImage, Entry, ImageSpec, LayerSpec, sha256_digest};
use serde_json::Value;

pub const MIB: usize = 1024 * 1024;

/// A store, a private home and empty mirror sources for the child.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    /// Extra environment for every `hoist` run.
    pub vars: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = support::store(dir.path());
        Env {
            dir,
            store,
            vars: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write `text` to `rel` (parents created); returns the path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    pub fn var(&mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) {
        self.vars
            .push((k.to_string(), v.as_ref().to_string_lossy().into_owned()));
    }

    /// The command, with `--store`, JSON progress, short retry delays, in the sandbox of
    /// `tests/support` (nothing of the host's environment: credentials, mirrors, proxies).
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::from_std(self.std_cmd());
        cmd.timeout(Duration::from_secs(120));
        cmd
    }

    /// [`Env::cmd`] as a plain `std::process::Command` (to spawn and kill).
    pub fn std_cmd(&self) -> std::process::Command {
        let mut cmd = support::hoist_std(self.dir.path());
        cmd.arg("--store")
            .arg(&self.store)
            .args(["--progress", "json"])
            .env("HOIST_RETRY_DELAY", "20ms");
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn hoist(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        eprintln!(
            "$ hoist {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `hoist pull ARGS`, which must succeed; returns the JSON progress events.
    pub fn pull_ok(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["pull"];
        a.extend_from_slice(args);
        let out = self.hoist(&a);
        assert!(
            out.status.success(),
            "hoist {a:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        events(&out)
    }

    /// `hoist pull ARGS`, which must fail with one error line; returns stderr.
    pub fn pull_fails(&self, args: &[&str]) -> String {
        let mut a = vec!["pull"];
        a.extend_from_slice(args);
        let out = self.hoist(&a);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("hoist: error: "), "{stderr}");
        assert!(out.stdout.is_empty());
        stderr
    }

    /// Blobs in the store: digest → size.
    pub fn blobs(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let dir = self.store.join("blobs/sha256");
        for e in fs::read_dir(&dir).into_iter().flatten() {
            let e = e.unwrap();
            out.insert(
                format!("sha256:{}", e.file_name().to_string_lossy()),
                e.metadata().unwrap().len(),
            );
        }
        out
    }

    /// The names of files left in the ingest area.
    pub fn ingest(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.store.join("hoist/ingest"))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// `hoist images --format json`.
    pub fn images(&self) -> Value {
        let out = self.hoist(&["images", "--format", "json"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The image is in the store, complete: every blob present and hashing to its name
    /// (the same digests as a clean pull), listed by `hoist images`, no partial left.
    pub fn assert_pulled(&self, img: &BuiltImage) {
        for (digest, bytes) in img.blobs() {
            let path = self
                .store
                .join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap());
            let got = fs::read(&path)
                .unwrap_or_else(|e| panic!("blob {digest} missing ({}): {e}", path.display()));
            assert_eq!(got.len(), bytes.len(), "{digest}");
            assert_eq!(sha256_digest(&got), digest, "blob {digest} is corrupt");
        }
        let images = self.images();
        assert!(
            images
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i.to_string().contains(&img.config.digest)),
            "{images}"
        );
        assert!(
            self.ingest().iter().all(|n| !n.starts_with("partial-")),
            "partials left: {:?}",
            self.ingest()
        );
    }
}

/// The JSON progress events of a run.
pub fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

/// The endpoints of `blob_start` events, per digest (in order).
pub fn blob_endpoints(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "blob_start") {
        out.entry(e["digest"].as_str().unwrap().to_string())
            .or_default()
            .push(e["endpoint"].as_str().unwrap().to_string());
    }
    out
}

/// An image of uncompressed layers holding random files of the given sizes (each seed
/// gives other bytes, so images built with the same (size, seed) share that layer).
pub fn image(layers: &[(usize, u64)], tag: &str) -> BuiltImage {
    let mut spec = ImageSpec::oci().label("test", tag);
    for (i, (size, seed)) in layers.iter().enumerate() {
        spec = spec.layer(LayerSpec::uncompressed([
            Entry::dir("data"),
            Entry::random_file(&format!("data/{i}-{seed}.bin"), *size, *seed),
        ]));
    }
    spec.build().unwrap()
}

/// `/v2/REPO/blobs/DIGEST`.
pub fn blob_path(repo: &str, digest: &str) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

/// A loopback port nothing listens on.
pub fn dead_port() -> u16 {
    hoist_testkit::registry::free_port().unwrap()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
