//! The store over a long life: `hoist gc` (and its dry run), `hoist fsck` (finding and
//! repairing a flipped byte, a missing layer, an orphan and a temp file), 8 processes at
//! once, GC racing pulls, and a full disk. Pulls come from the real Distribution registry.

mod support;

use support::Env;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_testkit::images::{BuiltImage, Entry, ImageSpec, LayerSpec};
use hoist_testkit::registry::Registry;
use hoist_testkit::skopeo;
use hoist_testkit::{require_peers, skip_test};
use serde_json::Value;

impl Env {
    fn blob(&self, d: &str) -> PathBuf {
        self.store()
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    }

    /// Every file under the store (path → size), for "nothing changed" checks.
    fn files(&self) -> BTreeMap<PathBuf, u64> {
        fn walk(p: &Path, out: &mut BTreeMap<PathBuf, u64>) {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.insert(e.path(), m.len());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.store(), &mut out);
        // Lock files come and go with commands; they are not content.
        out.retain(|p, _| !p.starts_with(self.store().join("hoist/locks")));
        out
    }

    fn fsck(&self, args: &[&str]) -> (i32, Value) {
        let mut a = vec!["fsck", "--format", "json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("fsck output: {e}\n{}", String::from_utf8_lossy(&out.stderr))
        });
        (out.status.code().unwrap_or(-1), v)
    }
}

fn kinds(v: &Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Deterministic incompressible bytes.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn base_layer() -> LayerSpec {
    LayerSpec::gzip([
        Entry::dir("etc"),
        Entry::file("etc/os-release", "ID=hoist-test\n"),
        Entry::file("base.bin", noise(1, 64 * 1024)),
    ])
    .created_by("ADD base.tar /")
}

/// An image of the base layer plus one of its own.
fn app(name: &str, seed: u64, size: usize) -> ImageSpec {
    ImageSpec::oci()
        .layer(base_layer())
        .layer(
            LayerSpec::gzip([Entry::file(&format!("{name}.bin"), noise(seed, size))])
                .created_by(&format!("COPY {name} /")),
        )
        .empty_history("CMD [\"/bin/sh\"]")
}

fn push(reg: &Registry, spec: &ImageSpec, repo_tag: &str) -> BuiltImage {
    skopeo::push_spec(spec, reg, repo_tag).unwrap()
}

fn all_blobs(b: &BuiltImage) -> Vec<String> {
    let mut v = b.layer_digests();
    v.push(b.config.digest.clone());
    v.push(b.manifest.digest.clone());
    v
}

#[test]
fn gc_after_rmi_frees_exactly_the_unique_blobs_and_rootfs_entries() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let a = push(&reg, &app("a", 10, 100_000), "ns/a:v1");
    let b = push(&reg, &app("b", 11, 100_000), "ns/b:v1");
    let env = Env::new();
    let (ra, rb) = (reg.image_ref("ns/a:v1"), reg.image_ref("ns/b:v1"));
    env.ok(&["-q", "pull", &ra]);
    env.ok(&["-q", "pull", &rb]);
    for r in [&ra, &rb] {
        env.ok(&["rootfs", r, "--format", "dir"]);
        env.ok(&["rootfs", r, "--format", "dir", "--per-layer"]);
    }
    // Nothing is garbage yet.
    let v = env.json(&["gc", "--dry-run", "--format", "json"]);
    assert_eq!(v["blobs"]["count"], 0, "{v:#}");

    env.ok(&["rmi", &ra]);
    let before = env.files();
    let dry = env.json(&["gc", "--dry-run", "--format", "json"]);
    assert_eq!(env.files(), before, "a dry run changes nothing");
    let unique_a: Vec<String> = vec![
        a.config.digest.clone(),
        a.manifest.digest.clone(),
        a.layer_digests()[1].clone(),
    ];
    let unique_bytes: u64 = unique_a
        .iter()
        .map(|d| std::fs::metadata(env.blob(d)).unwrap().len())
        .sum();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["blobs"]["count"], 3, "{dry:#}");
    assert_eq!(dry["blobs"]["bytes"], unique_bytes);
    assert_eq!(dry["rootfs_flat"]["count"], 1, "a's flattened rootfs");
    assert_eq!(
        dry["rootfs_layer"]["count"], 1,
        "a's own layer; the base is b's too"
    );

    let done = env.json(&["gc", "--format", "json"]);
    for k in ["blobs", "rootfs_flat", "rootfs_layer"] {
        assert_eq!(done[k], dry[k], "{k}: the dry run said what gc did");
    }
    for d in &unique_a {
        assert!(!env.blob(d).exists(), "{d} removed");
    }
    for d in all_blobs(&b) {
        assert!(env.blob(&d).exists(), "{d} of b kept");
    }
    let v = env.json(&["rootfs", &rb, "--format", "dir"]);
    assert_eq!(v["cached"], true, "b's rootfs survives");
    let v = env.json(&["rootfs", &rb, "--format", "dir", "--per-layer"]);
    assert_eq!(
        v["cached"], true,
        "b's layers (the shared base too) survive"
    );
    let again = env.json(&["gc", "--format", "json"]);
    assert_eq!(again["blobs"]["count"], 0);
    assert_eq!(env.fsck(&[]).0, 0);

    // history and images --tree see the image.
    let h = env.json(&["history", &rb, "--format", "json"]);
    let rows = h.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{h:#}");
    assert_eq!(rows[0]["empty_layer"], true);
    assert_eq!(rows[1]["layer"], b.layer_digests()[1]);
    assert_eq!(rows[2]["layer"], b.layer_digests()[0]);
    assert!(rows[1]["size"].as_u64().unwrap() > 0);
    let out = env.ok(&["images", "--tree"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&b.config.digest[7..19]));
}

#[test]
fn fsck_finds_and_repairs_damage() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let a = push(&reg, &app("a", 20, 50_000), "ns/a:v1");
    let b = push(&reg, &app("b", 21, 50_000), "ns/b:v1");
    let c = push(&reg, &app("c", 22, 50_000), "ns/c:v1");
    let env = Env::new();
    for r in ["ns/a:v1", "ns/b:v1", "ns/c:v1"] {
        env.ok(&["-q", "pull", &reg.image_ref(r)]);
    }
    let (code, v) = env.fsck(&[]);
    assert_eq!((code, kinds(&v)), (0, vec![]), "{v:#}");

    // A flipped byte in b's own layer, a's own layer gone, an orphan, a temp file, and a
    // resumable partial download (which is not a problem).
    let b_layer = env.blob(&b.layer_digests()[1]);
    let mut bytes = std::fs::read(&b_layer).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&b_layer, &bytes).unwrap();
    std::fs::remove_file(env.blob(&a.layer_digests()[1])).unwrap();
    let orphan = b"nobody needs me".to_vec();
    let orphan_d = hoist_testkit::images::sha256_digest(&orphan);
    std::fs::write(env.blob(&orphan_d), &orphan).unwrap();
    let temp = env.store().join("hoist/ingest/.sha256-x.1.2.3.tmp");
    std::fs::write(&temp, b"junk").unwrap();
    let old = std::fs::FileTimes::new()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(600));
    std::fs::File::options()
        .write(true)
        .open(&temp)
        .unwrap()
        .set_times(old)
        .unwrap();
    let partial_d = hoist_testkit::images::sha256_digest(b"some blob");
    let partial = env
        .store()
        .join(format!("hoist/ingest/partial-sha256-{}", &partial_d[7..]));
    std::fs::write(&partial, b"some").unwrap();
    let meta = format!(r#"{{"v":1,"digest":"{partial_d}","size":9,"offset":4}}"#);
    std::fs::write(
        format!("{}.meta", partial.display()),
        format!("{meta:<512}"),
    )
    .unwrap();

    let (code, v) = env.fsck(&[]);
    let k = kinds(&v);
    assert_eq!(code, 2, "{v:#}");
    for want in [
        "corrupt-blob",
        "missing-blob",
        "orphan-blob",
        "temp-file",
        "broken-image",
    ] {
        assert!(k.contains(&want.to_owned()), "{want} in {k:?}");
    }
    assert!(!k.iter().any(|k| k.contains("partial")));
    assert_eq!(v["resumable"][0]["digest"], partial_d);
    assert_eq!(v["resumable"][0]["offset"], 4);
    let missing = &v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "missing-blob")
        .unwrap()["detail"];
    assert!(
        missing.as_str().unwrap().contains(&a.layer_digests()[1]),
        "{missing}"
    );

    let (code, v) = env.fsck(&["--repair"]);
    assert_eq!(code, 1, "found and repaired: {v:#}");
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["repaired"].is_string()),
        "{v:#}"
    );
    let (code, v) = env.fsck(&[]);
    assert_eq!((code, kinds(&v)), (0, vec![]), "clean after repair: {v:#}");
    assert!(!temp.exists() && !env.blob(&orphan_d).exists() && !b_layer.exists());
    assert!(partial.exists(), "a resumable download is kept");
    // The intact image is untouched and usable; the broken ones are gone by name.
    for d in all_blobs(&c) {
        assert!(env.blob(&d).exists(), "{d} of c");
    }
    env.ok(&["rootfs", &reg.image_ref("ns/c:v1"), "--format", "dir"]);
    let list = env.json(&["images", "--format", "json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    // Pulling them again makes them whole.
    env.ok(&["-q", "pull", &reg.image_ref("ns/a:v1")]);
    env.ok(&["-q", "pull", &reg.image_ref("ns/b:v1")]);
    assert_eq!(env.fsck(&[]).0, 0);
}

/// One worker's view of the commands it ran.
#[derive(Default)]
struct Tally {
    ok: usize,
    clear_failures: usize,
}

#[test]
fn eight_processes_pull_rmi_tag_rootfs_and_gc_at_once() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let (names, built): (Vec<String>, Vec<BuiltImage>) = (0..4)
        .map(|i| {
            let tag = format!("ns/img{i}:v1");
            let b = push(&reg, &app(&format!("img{i}"), 30 + i, 80_000), &tag);
            (reg.image_ref(&tag), b)
        })
        .unzip();
    let env = Arc::new(Env::new());
    env.ok(&["images"]); // create the store once
    const WORKERS: usize = 8;
    const ROUNDS: usize = 10;
    let expected: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let start = Instant::now();
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (env, names) = (env.clone(), names.clone());
            let (expected, tally, failures) = (expected.clone(), tally.clone(), failures.clone());
            std::thread::spawn(move || {
                for r in 0..ROUNDS {
                    let img = &names[(w + r) % names.len()];
                    let mine = format!("local/w{w}:r{r}");
                    let op = (w * 7 + r * 3) % 5;
                    let args: Vec<String> = match op {
                        0 => vec!["-q".into(), "pull".into(), img.clone()],
                        1 => vec!["rmi".into(), img.clone()],
                        2 => vec!["tag".into(), img.clone(), mine.clone()],
                        3 => vec![
                            "rootfs".into(),
                            img.clone(),
                            "--format".into(),
                            "dir".into(),
                        ],
                        _ => vec!["gc".into()],
                    };
                    let a: Vec<&str> = args.iter().map(String::as_str).collect();
                    let out = env.run(&a);
                    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                    let mut t = tally.lock().unwrap();
                    if out.status.success() {
                        t.ok += 1;
                        if op == 2 {
                            expected.lock().unwrap().insert(format!("docker.io/{mine}"));
                        }
                        continue;
                    }
                    // Only a missing image is an acceptable failure, said clearly (on an
                    // error line: a rootfs that pulled first reported its pull above it).
                    let clear = stderr
                        .lines()
                        .any(|l| l.starts_with("hoist: error:") && l.contains("no image"))
                        && !stderr.contains("panicked")
                        && matches!(op, 1..=3);
                    if clear {
                        t.clear_failures += 1;
                    } else {
                        failures.lock().unwrap().push(format!("{args:?}: {stderr}"));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "unclear failures:\n{}",
        failures.join("\n")
    );
    let t = tally.lock().unwrap();
    eprintln!(
        "concurrency: {WORKERS} processes x {ROUNDS} rounds in {elapsed:?}: {} succeeded, {} failed clearly (image absent)",
        t.ok, t.clear_failures
    );
    assert_eq!(t.ok + t.clear_failures, WORKERS * ROUNDS);
    // No index update lost: every tag made is in index.json (nobody removes local/*).
    let idx: Value =
        serde_json::from_slice(&std::fs::read(env.store().join("index.json")).unwrap()).unwrap();
    let listed: BTreeSet<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .filter(|n| n.starts_with("docker.io/local/"))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, *expected.lock().unwrap());
    // Before a gc, the only problems may be the blobs `rmi` leaves for gc: those of an
    // image absent at the end (one that no tag happened to name before its last rmi; the
    // schedule runs in whatever order the processes take). Anything else, a blob of an
    // image still there included, would be a leak or damage.
    let images = env.json(&["images", "--format", "json"]).to_string();
    let left_for_gc: BTreeSet<String> = built
        .iter()
        .filter(|b| !images.contains(&b.config.digest))
        .flat_map(all_blobs)
        .collect();
    let (_, v) = env.fsck(&[]);
    for p in v["problems"].as_array().unwrap() {
        let digest = p["digest"].as_str().unwrap_or_default();
        assert!(
            p["kind"] == "orphan-blob" && left_for_gc.contains(digest),
            "fsck at the end, before gc: {v:#}"
        );
    }
    env.ok(&["gc"]);
    let (code, v) = env.fsck(&[]);
    assert_eq!(code, 0, "fsck clean after a final gc: {v:#}");
    // Every image still named builds.
    for n in listed {
        env.ok(&["rootfs", &n, "--format", "dir"]);
    }
}

#[test]
fn gc_in_a_loop_never_breaks_a_pull_and_cleans_up_after() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let spec = ImageSpec::oci()
        .layer(base_layer())
        .layer(LayerSpec::gzip([Entry::file("big1", noise(40, 3 << 20))]))
        .layer(LayerSpec::gzip([Entry::file("big2", noise(41, 3 << 20))]))
        .layer(LayerSpec::uncompressed([Entry::file(
            "big3",
            noise(42, 2 << 20),
        )]));
    let built = push(&reg, &spec, "ns/big:v1");
    let r = reg.image_ref("ns/big:v1");
    let env = Arc::new(Env::new());
    env.ok(&["images"]);
    let stop = Arc::new(AtomicBool::new(false));
    let gcs = {
        let (env, stop) = (env.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 500 {
                let out = env.run(&["gc", "--ingest-grace", "0s"]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                n += 1;
            }
            n
        })
    };
    for _ in 0..5 {
        env.ok(&["-q", "pull", &r]);
        env.ok(&["rootfs", &r, "--format", "dir"]);
        env.ok(&["rmi", &r]);
    }
    env.ok(&["-q", "pull", &r]);
    stop.store(true, Ordering::Relaxed);
    let n = gcs.join().unwrap();
    eprintln!("gc ran {n} times during 6 pulls");
    assert!(n >= 3, "gc raced the pulls ({n} runs)");
    // The image is whole; one more gc leaves exactly its blobs.
    assert_eq!(env.fsck(&[]).0, 0);
    env.ok(&["gc"]);
    let mut on_disk: Vec<String> = std::fs::read_dir(env.store().join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let mut want = all_blobs(&built);
    want.sort();
    assert_eq!(on_disk, want);
    env.ok(&["rmi", &r]);
    let v = env.json(&["gc", "--format", "json"]);
    assert_eq!(v["blobs"]["count"], want.len(), "{v:#}");
    for sub in [
        "blobs/sha256",
        "hoist/ingest",
        "hoist/leases",
        "hoist/rootfs",
    ] {
        let left: Vec<_> = std::fs::read_dir(env.store().join(sub))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_clearly_keeps_earlier_images_and_recovers() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let mnt = tempfile::tempdir().unwrap();
    let _fs = match Tmpfs::mount(mnt.path(), "8m") {
        Ok(m) => m,
        Err(e) => skip_test!("mounting a tmpfs is refused here: {e}"),
    };
    let reg = Registry::plain();
    let small = push(&reg, &app("small", 50, 3 << 20), "ns/small:v1");
    push(&reg, &app("large", 51, 5 << 20), "ns/large:v1");
    let env = Env::at(mnt.path().join("store"));
    let (rs, rl) = (reg.image_ref("ns/small:v1"), reg.image_ref("ns/large:v1"));
    env.ok(&["-q", "pull", &rs]);

    let out = env.run(&["-q", "pull", &rl]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no space"), "a clear error: {stderr}");
    eprintln!("full disk: {}", stderr.trim());
    // The earlier image is intact; no temp file or lease is left; only a resumable
    // partial may be.
    let (code, v) = env.fsck(&[]);
    assert_eq!(code, 0, "{v:#}");
    for d in all_blobs(&small) {
        assert!(env.blob(&d).exists());
    }
    for (p, _) in env.files() {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp") && !name.ends_with(".lease"),
            "{}",
            p.display()
        );
    }
    // Free space, then the retry works.
    env.ok(&["rmi", &rs]);
    env.ok(&["gc"]);
    env.ok(&["-q", "pull", &rl]);
    assert_eq!(env.fsck(&[]).0, 0);
}

#[test]
fn gc_on_a_store_of_twenty_four_images() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let env = Env::new();
    let mut refs = Vec::new();
    for i in 0..24u64 {
        let tag = format!("ns/many{i}:v1");
        push(&reg, &app(&format!("many{i}"), 100 + i, 200_000), &tag);
        let r = reg.image_ref(&tag);
        env.ok(&["-q", "pull", &r]);
        refs.push(r);
    }
    for r in refs.iter().step_by(2) {
        env.ok(&["rmi", r]);
    }
    let df = env.json(&["df", "--format", "json"]);
    let reclaim = df["reclaimable"]["blobs"]["bytes"].as_u64().unwrap();
    let t = Instant::now();
    let v = env.json(&["gc", "--format", "json"]);
    let wall = t.elapsed();
    eprintln!(
        "gc on 24 images (12 removed): freed {} blobs, {} bytes; gc itself {} ms, `hoist gc` {:?} wall",
        v["blobs"]["count"], v["blobs"]["bytes"], v["elapsed_ms"], wall
    );
    assert_eq!(
        v["blobs"]["count"],
        12 * 3,
        "config, manifest and own layer of each"
    );
    assert_eq!(v["blobs"]["bytes"].as_u64().unwrap(), reclaim, "df said so");
    assert_eq!(env.fsck(&[]).0, 0);
}

/// The same image (one config) with its layers compressed by gzip or by zstd.
fn twins(zstd: bool) -> ImageSpec {
    let layer = |entries: Vec<Entry>| {
        if zstd {
            LayerSpec::zstd(entries)
        } else {
            LayerSpec::gzip(entries)
        }
    };
    ImageSpec::oci()
        .layer(layer(vec![
            Entry::dir("etc"),
            Entry::file("etc/os-release", "ID=twins\n"),
        ]))
        .layer(layer(vec![Entry::file("data.bin", noise(7, 64 * 1024))]))
}

#[test]
fn rmi_or_a_tag_move_off_the_zstd_variant_lets_gc_free_its_layers() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let gz = push(&reg, &twins(false), "ns/twins:gzip");
    let zs = push(&reg, &twins(true), "ns/twins:zstd");
    assert_eq!(gz.config.digest, zs.config.digest, "one config");
    let env = Env::new();
    let (rg, rz) = (
        reg.image_ref("ns/twins:gzip"),
        reg.image_ref("ns/twins:zstd"),
    );
    env.ok(&["-q", "pull", &rg]);
    env.ok(&["-q", "pull", &rz]);
    let rows = env.json(&["images", "--format", "json"]);
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows:#}");
    let zstd_only: Vec<String> = zs
        .layer_digests()
        .into_iter()
        .chain([zs.manifest.digest.clone()])
        .collect();
    let gzip_size = gz.config.size + gz.layers.iter().map(|l| l.blob.size).sum::<u64>();
    let check_freed = |env: &Env| {
        let v = env.json(&["gc", "--format", "json"]);
        assert_eq!(v["blobs"]["count"], zstd_only.len(), "{v:#}");
        for d in &zstd_only {
            assert!(!env.blob(d).exists(), "{d} freed");
        }
        for d in all_blobs(&gz) {
            assert!(env.blob(&d).exists(), "{d} kept");
        }
        assert_eq!(env.fsck(&[]).0, 0, "{:#}", env.fsck(&[]).1);
    };

    // rmi of the zstd name: `images` and `df` count the gzip variant only, gc frees the
    // zstd layers and manifest.
    env.ok(&["rmi", &rz]);
    let rows = env.json(&["images", "--format", "json"]);
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows:#}");
    assert_eq!(rows[0]["Size"], gzip_size);
    let df = env.json(&["df", "--format", "json"]);
    assert_eq!(
        df["images"][0]["size"],
        gzip_size + gz.manifest.size,
        "df and images agree: {df:#}"
    );
    assert_eq!(
        df["reclaimable"]["blobs"]["count"],
        zstd_only.len(),
        "{df:#}"
    );
    check_freed(&env);

    // A tag moved off the zstd variant: the same.
    env.ok(&["-q", "pull", &rz]);
    env.ok(&["tag", &rg, &rz]);
    check_freed(&env);

    // A pull by digest holds its manifest, and the image, after the last name goes.
    env.ok(&["-q", "pull", &rz]);
    let by_digest = format!("{}@{}", reg.image_ref("ns/twins"), zs.manifest.digest);
    env.ok(&["-q", "pull", &by_digest]);
    env.ok(&["rmi", &rz]);
    env.ok(&["rmi", &rg]);
    let v = env.json(&["gc", "--format", "json"]);
    assert_eq!(
        v["blobs"]["count"],
        1 + gz.layers.len(),
        "the gzip variant: {v:#}"
    );
    for d in all_blobs(&zs) {
        assert!(env.blob(&d).exists(), "{d} kept by the digest reference");
    }
    let i = env.json(&["inspect", &by_digest]);
    assert_eq!(i["Digest"], zs.manifest.digest);
    env.ok(&["rmi", &by_digest]);
    let v = env.json(&["gc", "--format", "json"]);
    assert_eq!(v["blobs"]["count"], 2 + zs.layers.len(), "{v:#}");
    assert_eq!(env.fsck(&[]).0, 0);
}

/// `index.json`'s entry for `name`: (digest, media type).
fn index_entry(store: &Path, name: &str) -> (String, String) {
    let v: Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).unwrap();
    let e = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {v:#}"));
    (
        e["digest"].as_str().unwrap().to_owned(),
        e["mediaType"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_docker_v2s2_image_is_read_by_skopeo_and_umoci_and_pushed_byte_for_byte() {
    require_peers!(Peer::Registry, Peer::Skopeo, Peer::Umoci);
    let reg = Registry::plain();
    let spec = ImageSpec::docker()
        .layer(base_layer())
        .layer(LayerSpec::gzip([Entry::file("app.txt", "docker v2s2\n")]));
    let built = push(&reg, &spec, "ns/dock:v1");
    let env = Env::new();
    let r = reg.image_ref("ns/dock:v1");
    env.ok(&["-q", "pull", &r]);
    assert_eq!(env.fsck(&[]).0, 0, "{:#}", env.fsck(&[]).1);

    // index.json lists the OCI view, a blob over the same config and layers.
    let (view, mt) = index_entry(&env.store(), &r);
    assert_eq!(mt, "application/vnd.oci.image.manifest.v1+json");
    assert_ne!(view, built.manifest.digest);
    let vm: Value = serde_json::from_slice(&std::fs::read(env.blob(&view)).unwrap()).unwrap();
    assert_eq!(vm["config"]["digest"], built.config.digest);
    assert_eq!(
        vm["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers: Vec<&str> = vm["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(layers, built.layer_digests());

    // skopeo 1.9 inspects and copies it through `oci:STORE:NAME` (the full reference).
    let oci_ref = format!("oci:{}:{r}", env.store().display());
    let out = skopeo::run_skopeo(&["inspect".into(), oci_ref.clone()]).unwrap();
    let sk: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(sk["Digest"], view);
    assert_eq!(sk["Layers"], serde_json::json!(built.layer_digests()));
    let out_dir = env.dir.path().join("out");
    skopeo::run_skopeo(&[
        "copy".into(),
        oci_ref,
        format!("oci:{}:x", out_dir.display()),
    ])
    .unwrap();
    let copied = out_dir.join("blobs/sha256").join(&built.config.digest[7..]);
    assert_eq!(std::fs::read(copied).unwrap(), built.config_bytes);

    // umoci 0.4.7 unpacks it (`--image STORE:NAME`, split at the first colon).
    let bundle = env.dir.path().join("bundle");
    let unpack = std::process::Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{r}", env.store().display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/app.txt")).unwrap(),
        "docker v2s2\n"
    );

    // The store itself keeps the original: inspect and a push give its digest and bytes.
    assert_eq!(env.json(&["inspect", &r])["Digest"], built.manifest.digest);
    let again = reg.image_ref("ns/again:1");
    let pushed = env.ok(&[
        "-q",
        "copy",
        &format!("hoist:{r}"),
        &format!("docker://{again}"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&pushed.stdout).trim(),
        built.manifest.digest
    );
    let raw = skopeo::skopeo_inspect_raw(&again, &skopeo::SkopeoOpts::for_registry(&reg)).unwrap();
    assert_eq!(raw, built.manifest_bytes);
    assert_eq!(env.fsck(&[]).0, 0);

    // GC keeps the view while the name exists, and frees it with the image.
    let v = env.json(&["gc", "--format", "json"]);
    assert_eq!(v["blobs"]["count"], 0, "{v:#}");
    assert!(env.blob(&view).exists());
    env.ok(&["rmi", &r]);
    let v = env.json(&["gc", "--format", "json"]);
    assert_eq!(v["blobs"]["count"], 3 + built.layers.len(), "{v:#}");
    assert!(!env.blob(&view).exists(), "the view went with the image");
    assert_eq!(env.fsck(&[]).0, 0);
}
