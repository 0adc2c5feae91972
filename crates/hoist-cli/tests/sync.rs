//! `hoist sync` against the real Distribution registry: skopeo-sync YAML (explicit tags, all
//! tags, tag regexes), registry → registry, → `dir:` trees, → one OCI layout, → the store;
//! the second run copies nothing; dry runs and bad files write nothing; one missing tag
//! fails alone; skopeo sync on the same file names and digests the same images; a killed
//! sync finishes when run again.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use hoist_testkit::images::{self, Entry, ImageSpec, LayerSpec};
use hoist_testkit::registry::Registry;
use hoist_testkit::require_peers;
use hoist_testkit::skopeo::{self, SkopeoOpts};
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        support::hoist(self.dir.path()).args(args).output().unwrap()
    }

    /// `hoist sync ARGS --format json`, which must succeed; the report.
    fn sync_ok(&self, args: &[&str]) -> Value {
        let mut a = vec!["-q", "sync", "--format", "json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        assert!(
            out.status.success(),
            "hoist {a:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// A distinct image per `repo:tag` (a label), sharing layers with its siblings.
fn spec(repo: &str, tag: &str) -> ImageSpec {
    let base = if repo.ends_with('b') {
        images::sample_multi_layer()
    } else {
        images::sample_docker()
    };
    base.label("org.example.name", &format!("{repo}:{tag}"))
}

/// Seeds `repos` × `tags` into `reg`; the digests by `repo:tag`.
fn seed(reg: &Registry, repos: &[&str], tags: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in repos {
        for t in tags {
            let name = format!("{r}:{t}");
            let built = skopeo::push_spec(&spec(r, t), reg, &name).unwrap();
            out.insert(name, built.manifest.digest);
        }
    }
    out
}

/// The digest `reg` serves for `repo:tag` (None: absent).
fn served(reg: &Registry, name: &str) -> Option<String> {
    skopeo::skopeo_inspect_raw(
        &format!("docker://{}", reg.image_ref(name)),
        &SkopeoOpts::for_registry(reg),
    )
    .ok()
    .map(|raw| images::sha256_digest(&raw))
}

fn catalog(env: &Env, reg: &Registry) -> Vec<String> {
    let out = env.run(&["catalog", &reg.host_port(), "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.get("Repositories").unwrap_or(&v);
    let mut names: Vec<String> = list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

/// The sync file used by most tests: `ns/a` by explicit tags, `ns/b` all tags, `ns/c` by
/// regex (v1 and v2, not v3).
fn yaml_for(src: &Registry) -> String {
    format!(
        "{host}:\n  tls-verify: false\n  images:\n    ns/a: [v1, \"v3\"]\n    ns/b: []\n  images-by-tag-regex:\n    ns/c: ^v[12]$\n",
        host = src.host_port()
    )
}

/// (destination name, source name) pairs the file above selects, unscoped.
fn expected(digests: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = digests
        .keys()
        .filter(|k| !matches!(k.as_str(), "ns/a:v2" | "ns/c:v3"))
        .map(|k| (k.trim_start_matches("ns/").to_owned(), k.clone()))
        .collect();
    v.sort();
    v
}

const REPOS: [&str; 3] = ["ns/a", "ns/b", "ns/c"];
const TAGS: [&str; 3] = ["v1", "v2", "v3"];

#[test]
fn registry_to_registry_then_second_run_copies_nothing() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let src = Registry::plain();
    let dst = Registry::plain();
    let digests = seed(&src, &REPOS, &TAGS);
    let env = Env::new();
    let file = env.write("sync.yml", &yaml_for(&src));
    let dest = format!("{}/mirror", dst.host_port());

    let first = env.sync_ok(&[
        "--src",
        "yaml",
        "--dest",
        "docker",
        file.to_str().unwrap(),
        &dest,
    ]);
    let want = expected(&digests);
    assert_eq!(count(&first, "copied"), want.len() as u64, "{first}");
    assert_eq!(count(&first, "failed"), 0);
    for (d, s) in &want {
        assert_eq!(
            served(&dst, &format!("mirror/{d}")).as_deref(),
            Some(digests[s].as_str()),
            "{d}"
        );
    }
    // Nothing outside the selection.
    assert_eq!(served(&dst, "mirror/a:v2"), None);
    assert_eq!(served(&dst, "mirror/c:v3"), None);

    let t = Instant::now();
    let second = env.sync_ok(&[
        "--src",
        "yaml",
        "--dest",
        "docker",
        file.to_str().unwrap(),
        &dest,
    ]);
    let took = t.elapsed();
    assert_eq!(count(&second, "copied"), 0, "{second}");
    assert_eq!(count(&second, "unchanged"), want.len() as u64);
    assert_eq!(count(&second, "bytes"), 0);
    for img in second["images"].as_array().unwrap() {
        assert_eq!(img["status"], "unchanged", "{img}");
    }
    assert!(took < Duration::from_secs(20), "{took:?}");

    // The text summary says so too.
    let out = env.run(&["sync", "--src", "yaml", file.to_str().unwrap(), &dest]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0 copied") && err.contains(&format!("{} unchanged", want.len())),
        "{err}"
    );
}

#[test]
fn to_dir_tree_oci_layout_and_store() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let src = Registry::plain();
    let digests = seed(&src, &REPOS, &TAGS);
    let env = Env::new();
    let file = env.write("sync.yml", &yaml_for(&src));
    let f = file.to_str().unwrap();
    let want = expected(&digests);

    // dir: one skopeo `dir:` layout per image, DEST/NAME:TAG.
    let tree = env.path("tree");
    let r = env.sync_ok(&["--dest", "dir", f, tree.to_str().unwrap()]);
    assert_eq!(count(&r, "copied"), want.len() as u64, "{r}");
    for (d, s) in &want {
        let raw = std::fs::read(tree.join(d).join("manifest.json")).unwrap();
        assert_eq!(images::sha256_digest(&raw), digests[s], "{d}");
        // skopeo reads it back.
        let back = skopeo::skopeo_inspect_raw(
            &format!("dir:{}", tree.join(d).display()),
            &SkopeoOpts::default(),
        )
        .unwrap();
        assert_eq!(back, raw);
    }
    let again = env.sync_ok(&["--dest", "dir", f, tree.to_str().unwrap()]);
    assert_eq!(count(&again, "copied"), 0, "{again}");
    assert_eq!(count(&again, "unchanged"), want.len() as u64);

    // oci: one layout, each image under its ref name; Docker manifests become OCI (as
    // skopeo does), and the second run still finds them unchanged (same config, layers).
    let lay = env.path("lay");
    let r = env.sync_ok(&[
        "--dest",
        "oci",
        "--jobs-images",
        "3",
        f,
        lay.to_str().unwrap(),
    ]);
    assert_eq!(count(&r, "copied"), want.len() as u64, "{r}");
    let index: Value =
        serde_json::from_slice(&std::fs::read(lay.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    for (d, _) in &want {
        assert!(names.contains(&d.as_str()), "{d} not in {names:?}");
        skopeo::skopeo_inspect_raw(
            &format!("oci:{}:{d}", lay.display()),
            &SkopeoOpts::default(),
        )
        .unwrap();
    }
    let again = env.sync_ok(&["--dest", "oci", f, lay.to_str().unwrap()]);
    assert_eq!(count(&again, "copied"), 0, "{again}");

    // The store, under the source's whole name (--scoped, empty prefix).
    let r = env.sync_ok(&["--dest", "hoist", "--scoped", f, ""]);
    assert_eq!(count(&r, "copied"), want.len() as u64, "{r}");
    for (_, s) in &want {
        let name = src.image_ref(s);
        let out = env.run(&["inspect", &name, "--format", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&digests[s]), "{name}: {text}");
    }
    let again = env.sync_ok(&["--dest", "hoist", "--scoped", f, ""]);
    assert_eq!(count(&again, "copied"), 0, "{again}");
    assert_eq!(count(&again, "unchanged"), want.len() as u64);
}

#[test]
fn docker_source_toml_dry_run_and_bad_files_write_nothing() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let src = Registry::plain();
    let dst = Registry::plain();
    let digests = seed(&src, &["ns/a"], &TAGS);
    let env = Env::new();

    // Dry run: says what it would copy, writes nothing.
    let repo = format!("{}/ns/a", src.host_port());
    let r = env.sync_ok(&["--src", "docker", "--dry-run", &repo, &dst.host_port()]);
    assert_eq!(count(&r, "would_copy"), 3, "{r}");
    assert_eq!(count(&r, "copied"), 0);
    assert!(catalog(&env, &dst).is_empty());
    let tree = env.path("dry");
    env.sync_ok(&[
        "--src",
        "docker",
        "--dest",
        "dir",
        "--dry-run",
        &repo,
        tree.to_str().unwrap(),
    ]);
    assert!(!tree.exists());

    // Bad files: clear errors naming file and key; nothing written.
    let missing = env.path("missing.yml");
    let bad_key = env.write(
        "badkey.yml",
        &format!("{}:\n  imagez:\n    ns/a: []\n", src.host_port()),
    );
    let bad_re = env.write(
        "badre.yml",
        &format!(
            "{}:\n  images-by-tag-regex:\n    ns/a: \"v(\"\n",
            src.host_port()
        ),
    );
    for (file, wants) in [
        (&missing, &["missing.yml"][..]),
        (&bad_key, &["badkey.yml", "imagez"][..]),
        (
            &bad_re,
            &["badre.yml", "images-by-tag-regex: ns/a", "regex"][..],
        ),
    ] {
        // Into a registry and into the store: refused before either is touched.
        for dest in [
            &["--dest", "docker", &dst.host_port()][..],
            &["--dest", "hoist", "mirror"][..],
        ] {
            let mut args = vec!["sync", "--src", "yaml", file.to_str().unwrap()];
            args.extend_from_slice(dest);
            let out = env.run(&args);
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            for w in wants {
                assert!(err.contains(w), "{err} lacks {w}");
            }
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    assert!(catalog(&env, &dst).is_empty());
    let images = env.run(&["images", "--format", "json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&images.stdout).unwrap(),
        serde_json::json!([])
    );
    support::assert_fsck_clean(env.dir.path(), &support::store(env.dir.path()));

    // A TOML file, and a single image by tag with --src docker.
    let toml = env.write(
        "sync.toml",
        &format!(
            "[\"{}\"]\ntls-verify = false\nimages-by-tag-regex = {{ \"ns/a\" = \"^v[23]$\" }}\n",
            src.host_port()
        ),
    );
    let r = env.sync_ok(&[toml.to_str().unwrap(), &format!("{}/t", dst.host_port())]);
    assert_eq!(count(&r, "copied"), 2, "{r}");
    assert_eq!(
        served(&dst, "t/a:v2").as_deref(),
        Some(digests["ns/a:v2"].as_str())
    );
    assert_eq!(served(&dst, "t/a:v1"), None);
    let one = format!("{}/ns/a:v1", src.host_port());
    let r = env.sync_ok(&["--src", "docker", &one, &format!("{}/u", dst.host_port())]);
    assert_eq!(count(&r, "copied"), 1, "{r}");
    assert_eq!(
        served(&dst, "u/a:v1").as_deref(),
        Some(digests["ns/a:v1"].as_str())
    );
}

#[test]
fn a_missing_tag_fails_alone() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let src = Registry::plain();
    let dst = Registry::plain();
    let digests = seed(&src, &["ns/a"], &["v1", "v2"]);
    let env = Env::new();
    let file = env.write(
        "sync.yml",
        &format!(
            "{}:\n  images:\n    ns/a: [v1, nope, v2]\n",
            src.host_port()
        ),
    );
    let out = env.run(&[
        "-q",
        "sync",
        "--format",
        "json",
        file.to_str().unwrap(),
        &dst.host_port(),
    ]);
    assert!(!out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(count(&r, "copied"), 2, "{r}");
    assert_eq!(count(&r, "failed"), 1, "{r}");
    let failed: Vec<&Value> = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["source"].as_str().unwrap().ends_with("ns/a:nope"),
        "{r}"
    );
    assert!(!failed[0]["error"].as_str().unwrap().is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 of 3"), "{err}");
    for t in ["v1", "v2"] {
        assert_eq!(
            served(&dst, &format!("a:{t}")).as_deref(),
            Some(digests[&format!("ns/a:{t}")].as_str())
        );
    }
    // The text summary lists the failure with its error.
    let out = env.run(&["sync", file.to_str().unwrap(), &dst.host_port()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed: ") && err.contains("ns/a:nope"),
        "{err}"
    );
    assert!(
        err.contains("2 unchanged") && err.contains("1 failed"),
        "{err}"
    );
}

#[test]
fn skopeo_sync_of_the_same_yaml_gives_the_same_names_and_digests() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let src = Registry::plain();
    let by_hoist = Registry::plain();
    let by_skopeo = Registry::plain();
    let digests = seed(&src, &REPOS, &TAGS);
    let env = Env::new();
    let file = env.write("sync.yml", &yaml_for(&src));

    env.sync_ok(&[
        "--src",
        "yaml",
        "--dest",
        "docker",
        file.to_str().unwrap(),
        &format!("{}/m", by_hoist.host_port()),
    ]);
    skopeo::run_skopeo(&[
        "sync".into(),
        "--src".into(),
        "yaml".into(),
        "--dest".into(),
        "docker".into(),
        "--dest-tls-verify=false".into(),
        file.to_str().unwrap().into(),
        format!("{}/m", by_skopeo.host_port()),
    ])
    .unwrap();
    let names = catalog(&env, &by_hoist);
    assert_eq!(names, catalog(&env, &by_skopeo));
    assert_eq!(names, ["m/a", "m/b", "m/c"]);
    for (d, s) in expected(&digests) {
        let name = format!("m/{d}");
        let h = served(&by_hoist, &name);
        assert_eq!(h, served(&by_skopeo, &name), "{name}");
        assert_eq!(h.as_deref(), Some(digests[&s].as_str()), "{name}");
    }
    for repo in ["m/a", "m/b", "m/c"] {
        let mut a = skopeo::skopeo_list_tags(
            &format!("docker://{}/{repo}", by_hoist.host_port()),
            &SkopeoOpts::for_registry(&by_hoist),
        )
        .unwrap();
        let mut b = skopeo::skopeo_list_tags(
            &format!("docker://{}/{repo}", by_skopeo.host_port()),
            &SkopeoOpts::for_registry(&by_skopeo),
        )
        .unwrap();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{repo}");
    }
}

/// Big enough that a kill lands while blobs move.
fn big(repo: &str, seed: u64) -> ImageSpec {
    images::sample_docker()
        .layer(LayerSpec::gzip([Entry::random_file(
            "big.bin",
            24 << 20,
            seed,
        )]))
        .label("org.example.name", repo)
}

#[test]
fn killed_sync_finishes_when_run_again() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let src = Registry::plain();
    let mut digests = BTreeMap::new();
    for (i, r) in ["k/x", "k/y", "k/z"].iter().enumerate() {
        let built = skopeo::push_spec(&big(r, i as u64 + 7), &src, &format!("{r}:v1")).unwrap();
        digests.insert(r.trim_start_matches("k/").to_owned(), built.manifest.digest);
    }
    let env = Env::new();
    let file = env.write(
        "sync.yml",
        &format!(
            "{}:\n  images:\n    k/x: []\n    k/y: []\n    k/z: []\n",
            src.host_port()
        ),
    );
    let tree = env.path("tree");
    let args = [
        "-q",
        "sync",
        "--jobs-images",
        "1",
        file.to_str().unwrap(),
        "--dest",
        "dir",
        tree.to_str().unwrap(),
    ];

    let mut killed = false;
    for delay_ms in [150u64, 400, 900] {
        let mut child = support::hoist_std(env.dir.path())
            .args(args)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            killed = true;
            break;
        }
        child.wait().unwrap();
        std::fs::remove_dir_all(&tree).ok();
    }
    assert!(
        killed,
        "hoist sync finished before every kill: the images are too small"
    );

    let r = env.sync_ok(&[
        "--jobs-images",
        "1",
        file.to_str().unwrap(),
        "--dest",
        "dir",
        tree.to_str().unwrap(),
    ]);
    assert_eq!(count(&r, "failed"), 0, "{r}");
    for (name, d) in &digests {
        let dir = tree.join(format!("{name}:v1"));
        let raw = std::fs::read(dir.join("manifest.json")).unwrap();
        assert_eq!(&images::sha256_digest(&raw), d, "{name}");
        // Every blob the manifest names is there with its digest.
        let m: Value = serde_json::from_slice(&raw).unwrap();
        let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
        for l in m["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_owned());
        }
        for b in blobs {
            let bytes = std::fs::read(dir.join(b.trim_start_matches("sha256:"))).unwrap();
            assert_eq!(images::sha256_digest(&bytes), b, "{name} {b}");
        }
    }
    let again = env.sync_ok(&[
        "--jobs-images",
        "1",
        file.to_str().unwrap(),
        "--dest",
        "dir",
        tree.to_str().unwrap(),
    ]);
    assert_eq!(count(&again, "copied"), 0, "{again}");
    assert!(Path::new(&tree).is_dir());
}

#[test]
fn a_layer_shared_by_images_copied_at_once_is_uploaded_once() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let src = Registry::plain();
    let dst = Registry::plain();
    // Three repositories copied at once (--jobs-images 4), their images sharing a base and
    // an 8 MiB layer, each with its own config.
    let mut distinct: BTreeMap<String, u64> = BTreeMap::new();
    let mut digests = BTreeMap::new();
    for r in ["s/x", "s/y", "s/z"] {
        let spec = images::sample_docker()
            .layer(LayerSpec::gzip([Entry::random_file(
                "shared.bin",
                8 << 20,
                42,
            )]))
            .label("org.example.name", r);
        let built = skopeo::push_spec(&spec, &src, &format!("{r}:v1")).unwrap();
        for b in std::iter::once(&built.config).chain(built.layers.iter().map(|l| &l.blob)) {
            distinct.insert(b.digest.clone(), b.size);
        }
        digests.insert(r.trim_start_matches("s/").to_owned(), built.manifest.digest);
    }
    let env = Env::new();
    let file = env.write(
        "sync.yml",
        &format!(
            "{}:\n  tls-verify: false\n  images:\n    s/x: []\n    s/y: []\n    s/z: []\n",
            src.host_port()
        ),
    );
    let dest = format!("{}/mirror", dst.host_port());
    let r = env.sync_ok(&[
        "--src",
        "yaml",
        "--dest",
        "docker",
        "--jobs-images",
        "4",
        file.to_str().unwrap(),
        &dest,
    ]);
    assert_eq!(count(&r, "copied"), 3, "{r}");
    for (name, d) in &digests {
        assert_eq!(
            served(&dst, &format!("mirror/{name}:v1")).as_deref(),
            Some(d.as_str())
        );
    }
    // Each distinct blob crossed once: the shared layers went into one repository and
    // were mounted into the others, not uploaded three times.
    let want: u64 = distinct.values().sum();
    assert_eq!(
        count(&r, "bytes"),
        want,
        "bytes sent, against {} distinct blobs of {want} bytes: {r}",
        distinct.len()
    );
}
