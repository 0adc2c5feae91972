//! The crash loop: `hoist pull`, `copy`, `load`, `rootfs` and `gc`, each SIGKILLed at a
//! random moment, again and again. After every kill `hoist fsck` must find the store
//! clean but for what a killed command leaves by design for the next run to reuse
//! (resumable partial downloads; whole blobs and rootfs entries no image references,
//! which gc collects), the killed command must succeed when run again, and every image committed
//! before must still be there, whole. The final gc leaves a store fsck finds clean.
//!
//! Pulls come from the fault-injecting registry throttled to 12 MiB/s per blob request, so
//! that a kill lands mid-transfer often. The seed is printed; `HOIST_CRASH_SEED=N`
//! replays a run, `HOIST_CRASH_ITERATIONS=N` changes its length (default 60).

mod transfer_support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use hoist_testkit::fake::{FakeRegistry, Fault};
use hoist_testkit::images::{BuiltImage, Entry, ImageSpec, LayerSpec};
use serde_json::Value;
use transfer_support::{Env, MIB};

/// A tiny xorshift generator: the test needs no more, and its seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Images with a shared base layer and a unique layer each.
fn images(n: usize) -> Vec<BuiltImage> {
    (0..n)
        .map(|i| {
            ImageSpec::oci()
                .label("crash", &i.to_string())
                .layer(LayerSpec::uncompressed([
                    Entry::dir("base"),
                    Entry::random_file("base/shared.bin", 2 * MIB, 7),
                ]))
                .layer(LayerSpec::gzip([
                    Entry::dir("app"),
                    Entry::random_file(&format!("app/{i}.bin"), 3 * MIB, 100 + i as u64),
                    Entry::file("app/hello.txt", format!("image {i}\n")),
                ]))
                .build()
                .unwrap()
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Pull,
    Copy,
    Load,
    Rootfs,
    Gc,
}

#[derive(Default)]
struct Tally {
    killed: BTreeMap<Op, u32>,
    exited_first: BTreeMap<Op, u32>,
    reruns_ok: u32,
    fsck_clean: u32,
    fsck_resumable: u32,
    fsck_orphans: u32,
}

struct Loop {
    env: Env,
    _fake: FakeRegistry,
    refs: Vec<String>,
    /// Name → manifest digest of every image committed and not removed since.
    committed: BTreeMap<String, String>,
    archive: std::path::PathBuf,
    archived: String,
}

impl Loop {
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.env.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "hoist {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn digest_of(&self, name: &str) -> String {
        let v: Value = serde_json::from_slice(&self.ok(&["inspect", name])).unwrap();
        v["Digest"].as_str().unwrap().to_string()
    }

    fn present(&self, name: &str) -> bool {
        self.env
            .cmd()
            .args(["inspect", name])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// Make `name` absent (and its unique blobs collected), so that the next command
    /// bringing it in has real work to do.
    fn remove(&mut self, name: &str) {
        if self.present(name) {
            self.ok(&["rmi", name]);
            self.committed.remove(name);
        }
        self.ok(&["gc"]);
    }

    /// The arguments of one command of kind `op`, after preparing the store for it.
    fn prepare(&mut self, op: Op, rng: &mut Rng) -> Vec<String> {
        let any_committed = |l: &Loop, rng: &mut Rng| -> String {
            let names: Vec<&String> = l.committed.keys().collect();
            names[rng.below(names.len() as u64) as usize].clone()
        };
        match op {
            Op::Pull => {
                let r = self.refs[rng.below(self.refs.len() as u64) as usize].clone();
                self.remove(&r);
                vec!["pull".into(), r]
            }
            Op::Copy => {
                let name = any_committed(self, rng);
                let dir = self.env.path("copy-out");
                let _ = std::fs::remove_dir_all(&dir);
                vec![
                    "copy".into(),
                    format!("hoist:{name}"),
                    format!("oci:{}:out", dir.display()),
                ]
            }
            Op::Load => {
                let name = self.archived.clone();
                self.remove(&name);
                vec![
                    "load".into(),
                    "-i".into(),
                    self.archive.display().to_string(),
                ]
            }
            Op::Rootfs => {
                let name = any_committed(self, rng);
                vec![
                    "rootfs".into(),
                    name,
                    "--format".into(),
                    "dir".into(),
                    "--force".into(),
                ]
            }
            Op::Gc => {
                // Garbage to collect: an image removed, its unique layer left behind.
                let name = any_committed(self, rng);
                if self.committed.len() > 1 {
                    self.ok(&["rmi", &name]);
                    self.committed.remove(&name);
                }
                vec!["gc".into()]
            }
        }
    }

    /// After a command succeeded: what it committed.
    fn record(&mut self, op: Op, args: &[String]) {
        let name = match op {
            Op::Pull => args[1].clone(),
            Op::Load => self.archived.clone(),
            _ => return,
        };
        let d = self.digest_of(&name);
        self.committed.insert(name, d);
    }

    /// fsck must be clean, but for what a killed command may leave by design and the
    /// next one reuses or gc collects: resumable partial downloads, and verified blobs or
    /// whole rootfs entries that no image references (a pull killed between a layer's
    /// commit and the image's; a gc killed after the `rmi` that made them garbage, before
    /// its sweep). They are counted; any other finding fails the test.
    fn fsck(&self, t: &mut Tally, after: &str) {
        let out = self
            .env
            .cmd()
            .args(["fsck", "--format", "json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let problems = v["problems"].as_array().cloned().unwrap_or_default();
        let only_orphans = problems
            .iter()
            .all(|p| p["kind"] == "orphan-blob" || p["kind"] == "unused-rootfs");
        assert!(
            !v.is_null() && (out.status.success() || only_orphans),
            "fsck after {after} is not clean:\n{}\n{}",
            serde_json::to_string_pretty(&v).unwrap(),
            String::from_utf8_lossy(&out.stderr)
        );
        let resumable = v["resumable"].as_array().is_some_and(|r| !r.is_empty());
        match (problems.is_empty(), resumable) {
            (true, false) => t.fsck_clean += 1,
            (true, true) => t.fsck_resumable += 1,
            (false, _) => t.fsck_orphans += 1,
        }
    }

    /// Every committed image is still there, under its name, with its manifest.
    fn check_committed(&self, after: &str) {
        for (name, digest) in &self.committed {
            assert_eq!(
                &self.digest_of(name),
                digest,
                "{name} changed after {after}"
            );
        }
    }
}

#[test]
fn killed_commands_never_damage_the_store() {
    let seed = std::env::var("HOIST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let iterations: u32 = std::env::var("HOIST_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    eprintln!("crash loop: seed {seed}, {iterations} iterations");
    let mut rng = Rng(seed);

    let fake = FakeRegistry::start();
    let imgs = images(5);
    let mut refs = Vec::new();
    for (i, img) in imgs.iter().enumerate() {
        let tag = format!("v{i}");
        fake.push_image("crash/app", &tag, img);
        refs.push(fake.image_ref(&format!("crash/app:{tag}")));
    }
    fake.inject(Fault::Throttle(12 * MIB as u64).on_any_blob().forever());

    let env = Env::new();
    let archive = env.path("saved.tar");
    let mut lp = Loop {
        env,
        _fake: fake,
        archived: refs[0].clone(),
        refs,
        committed: BTreeMap::new(),
        archive,
    };
    // Untimed setup: two images in, one of them saved to an archive for `load`.
    for r in lp.refs.clone().into_iter().take(2) {
        lp.ok(&["pull", &r]);
        lp.record(Op::Pull, &["pull".into(), r]);
    }
    let (a, n) = (lp.archive.display().to_string(), lp.archived.clone());
    lp.ok(&["save", "-o", &a, &n]);

    let ops = [Op::Pull, Op::Copy, Op::Load, Op::Rootfs, Op::Gc];
    let mut t = Tally::default();
    let mut durations: BTreeMap<Op, Duration> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..iterations {
        let op = ops[rng.below(ops.len() as u64) as usize];
        if lp.committed.is_empty() && op != Op::Pull && op != Op::Load {
            lp.ok(&["pull", &lp.refs[0].clone()]);
            lp.record(Op::Pull, &["pull".into(), lp.refs[0].clone()]);
        }
        let args = lp.prepare(op, &mut rng);
        let what = format!("iteration {i} (seed {seed}): hoist {}", args.join(" "));
        // A moment inside the command: up to 90% of how long it took when last run whole.
        let whole = durations
            .get(&op)
            .copied()
            .unwrap_or(Duration::from_millis(150));
        let delay = Duration::from_millis(rng.below((whole.as_millis() as u64 * 9 / 10).max(1)));
        let mut child = lp
            .env
            .std_cmd()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            *t.killed.entry(op).or_default() += 1;
        } else {
            *t.exited_first.entry(op).or_default() += 1;
        }
        child.wait().unwrap();

        lp.fsck(&mut t, &what);
        lp.check_committed(&what);
        // The same command again, to the end.
        let t0 = Instant::now();
        let out = lp.env.cmd().args(&args).output().unwrap();
        durations.insert(op, t0.elapsed());
        assert!(
            out.status.success(),
            "re-running {what} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.reruns_ok += 1;
        lp.record(op, &args);
        lp.check_committed(&what);
    }
    // Nothing left behind: a final gc leaves a store fsck finds clean, partials included.
    lp.ok(&["gc"]);
    let v: Value = serde_json::from_slice(&lp.ok(&["fsck", "--format", "json"])).unwrap();
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");

    let sum = |m: &BTreeMap<Op, u32>| m.values().sum::<u32>();
    eprintln!(
        "crash loop: {iterations} iterations in {:.1} s; killed mid-command {} ({:?}), \
         finished before the kill {} ({:?}); fsck after each kill: {} clean, {} clean but for \
         resumable partials, {} with unreferenced whole blobs or rootfs entries only (gc's to collect), \
         nothing else; re-runs succeeded {}/{iterations}; {} images \
         committed at the end, all intact",
        started.elapsed().as_secs_f64(),
        sum(&t.killed),
        t.killed,
        sum(&t.exited_first),
        t.exited_first,
        t.fsck_clean,
        t.fsck_resumable,
        t.fsck_orphans,
        t.reruns_ok,
        lp.committed.len()
    );
    assert!(
        sum(&t.killed) >= iterations / 2,
        "too few kills landed mid-command to prove anything: {:?}",
        t.killed
    );
    drop(lp._fake);
}
