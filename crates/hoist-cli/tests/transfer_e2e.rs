//! The transfer guarantees end to end, with real `hoist` processes against the fake
//! registry: a pull killed with SIGKILL mid-blob resumes (fewer bytes cross the wire, the
//! result verifies); concurrent pulls of overlapping images download each shared blob
//! once; mirrors (hoist's config, containerd's hosts.toml, containers' registries.conf)
//! are tried in order and fall back to the registry, and a working mirror means the
//! registry is never touched; foreign layers are off by default and never get
//! credentials.

mod transfer_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use hoist_testkit::fake::{FakeRegistry, Fault, TokenAuth};
use hoist_testkit::images::{self, BuiltImage};
use serde_json::Value;
use transfer_support::{Env, MIB, blob_endpoints, blob_path, dead_port, image};

/// The `offset` recorded in a partial's `.meta`, if readable.
fn partial_offset(env: &Env, digest: &str) -> Option<u64> {
    let meta = env.store.join(format!(
        "hoist/ingest/partial-sha256-{}.meta",
        digest.strip_prefix("sha256:").unwrap()
    ));
    let text = std::fs::read(meta).ok()?;
    let v: Value = serde_json::from_slice(text.trim_ascii()).ok()?;
    v["offset"].as_u64()
}

#[test]
fn a_pull_killed_mid_blob_resumes_with_fewer_bytes_on_the_wire() {
    let fake = FakeRegistry::start();
    let img = image(&[(128 * 1024, 1), (4 * MIB, 2)], "kill");
    fake.push_image("ns/app", "v1", &img);
    let (d, size) = (img.layers[1].blob.digest.clone(), img.layers[1].blob.size);
    // The first GET of the big layer sends 3 MiB and then hangs.
    fake.inject(Fault::StallAfter(3 * MIB as u64).on_blob(&d));
    let env = Env::new();
    let mut child = env
        .std_cmd()
        .args(["pull", &fake.image_ref("ns/app:v1")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the small layer is a blob and the big one's partial has recorded at
    // least 2 MiB, then SIGKILL. (Killed before the small layer's commit, its complete
    // partial would be resumed too, a legitimate state that is not this test's case.)
    let small = img.layers[0].blob.digest.clone();
    let t = Instant::now();
    let kept = loop {
        if let Some(o) = partial_offset(&env, &d)
            && o >= 2 * MIB as u64
            && env.blobs().contains_key(&small)
        {
            break o;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no progress recorded"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "hoist ended on its own"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!env.blobs().contains_key(&d), "nothing partial is a blob");
    assert_eq!(env.images().as_array().unwrap().len(), 0);
    let offset = partial_offset(&env, &d).unwrap();
    assert!(offset >= kept && offset < size);

    fake.reset_hits();
    let out = env.hoist(&["pull", &fake.image_ref("ns/app:v1")]);
    assert!(out.status.success());
    env.assert_pulled(&img);
    let sent = fake.blob_bytes_sent(&d);
    assert_eq!(sent, size - offset, "only the rest crossed the wire");
    assert!(sent < size);
    let gets: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == blob_path("ns/app", &d))
        .collect();
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range, Some(format!("bytes={offset}-{}", size - 1)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 resumed"), "{stderr}");
}

#[test]
fn concurrent_pulls_of_overlapping_images_download_each_shared_blob_once() {
    let fake = FakeRegistry::start();
    // Two shared base layers, then one layer each.
    let a = image(&[(MIB, 1), (2 * MIB, 2), (512 * 1024, 3)], "a");
    let b = image(&[(MIB, 1), (2 * MIB, 2), (768 * 1024, 4)], "b");
    assert_eq!(a.layers[0].blob.digest, b.layers[0].blob.digest);
    assert_eq!(a.layers[1].blob.digest, b.layers[1].blob.digest);
    fake.push_image("ns/a", "v1", &a);
    fake.push_image("ns/b", "v1", &b);
    // Widen the windows in which the pulls overlap.
    for l in &a.layers[..2] {
        let d = &l.blob.digest;
        for repo in ["ns/a", "ns/b"] {
            fake.inject(
                Fault::Delay(Duration::from_millis(300))
                    .on_path(&blob_path(repo, d))
                    .forever(),
            );
        }
    }
    let env = Env::new();
    // Three processes: a, b, and a again.
    let refs = [
        fake.image_ref("ns/a:v1"),
        fake.image_ref("ns/b:v1"),
        fake.image_ref("ns/a:v1"),
    ];
    let children: Vec<_> = refs
        .iter()
        .map(|r| {
            env.std_cmd()
                .args(["pull", r])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    env.assert_pulled(&a);
    env.assert_pulled(&b);
    for l in &a.layers[..2] {
        assert_eq!(
            fake.blob_gets(&l.blob.digest),
            1,
            "shared layer {}",
            l.blob.digest
        );
    }
    for img in [&a, &b] {
        assert_eq!(fake.blob_gets(&img.layers[2].blob.digest), 1);
        // The second pull of `a` waited for the first and found its config stored.
        assert_eq!(
            fake.blob_gets(&img.config.digest),
            1,
            "config {}",
            img.config.digest
        );
    }
}

/// A hoist config naming `mirrors` for the fake `upstream`.
fn hoist_config(env: &mut Env, upstream: &FakeRegistry, mirrors: &[String]) {
    let list: Vec<String> = mirrors.iter().map(|m| format!("{m:?}")).collect();
    let f = env.write(
        "hoist.toml",
        &format!(
            "[registry.\"{}\"]\nmirrors = [{}]\n",
            upstream.host_port(),
            list.join(", ")
        ),
    );
    env.var("HOIST_CONFIG", f);
}

fn pulled_endpoints(ev: &[Value], img: &BuiltImage) -> Vec<String> {
    let eps = blob_endpoints(ev);
    img.layers
        .iter()
        .map(|l| eps[&l.blob.digest].last().unwrap().clone())
        .chain(std::iter::once(
            eps[&img.config.digest].last().unwrap().clone(),
        ))
        .collect()
}

#[test]
fn a_working_mirror_means_the_registry_is_never_touched() {
    let upstream = FakeRegistry::start();
    let mirror = FakeRegistry::start();
    let img = image(&[(256 * 1024, 1), (MIB, 2)], "m");
    upstream.push_image("ns/app", "v1", &img);
    mirror.push_image("ns/app", "v1", &img);
    let mut env = Env::new();
    hoist_config(
        &mut env,
        &upstream,
        &[format!("http://127.0.0.1:{}", dead_port()), mirror.url()],
    );
    let ev = env.pull_ok(&[&upstream.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    assert!(upstream.requests().is_empty(), "{:#?}", upstream.requests());
    for ep in pulled_endpoints(&ev, &img) {
        assert!(ep.starts_with(&mirror.url()), "{ep}");
    }
    // --progress json says where each blob came from.
    assert!(ev.iter().any(|e| e["event"] == "blob_start"
        && e["endpoint"].as_str().unwrap().starts_with(&mirror.url())));
}

#[test]
fn a_rootfs_built_while_pulling_reads_from_the_mirror_and_each_manifest_and_config_once() {
    let upstream = FakeRegistry::start();
    let mirror = FakeRegistry::start();
    let img = image(&[(256 * 1024, 1), (MIB, 2)], "r");
    upstream.push_image("ns/app", "v1", &img);
    mirror.push_image("ns/app", "v1", &img);
    let mut env = Env::new();
    hoist_config(&mut env, &upstream, &[mirror.url()]);
    let out = env.path("app.ext4");
    let o = env.hoist(&[
        "rootfs",
        &upstream.image_ref("ns/app:v1"),
        "--format",
        "ext4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    env.assert_pulled(&img);
    // What the build read ahead (the manifest, the config) came from the mirror, as the
    // layers did, and the pull took it from there instead of asking again.
    assert!(upstream.requests().is_empty(), "{:#?}", upstream.requests());
    let gets = |path: &str| {
        mirror
            .requests()
            .iter()
            .filter(|r| r.path == path && r.method == "GET")
            .count()
    };
    assert_eq!(gets("/v2/ns/app/manifests/v1"), 1);
    assert_eq!(
        gets(&format!("/v2/ns/app/manifests/{}", img.manifest.digest)),
        0
    );
    assert_eq!(gets(&blob_path("ns/app", &img.config.digest)), 1);
    for l in &img.layers {
        assert_eq!(gets(&blob_path("ns/app", &l.blob.digest)), 1);
    }
}

#[test]
fn a_mirror_without_the_image_falls_back_to_the_registry() {
    let upstream = FakeRegistry::start();
    let mirror = FakeRegistry::start();
    let img = image(&[(256 * 1024, 1), (MIB, 2)], "f");
    upstream.push_image("ns/app", "v1", &img);
    let mut env = Env::new();
    hoist_config(&mut env, &upstream, &[mirror.url()]);
    let ev = env.pull_ok(&[&upstream.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    assert_eq!(mirror.hits("/v2/ns/app/manifests/v1"), 1);
    for ep in pulled_endpoints(&ev, &img) {
        assert!(ep.starts_with(&upstream.url()), "{ep}");
    }
}

#[test]
fn a_mirror_missing_one_blob_serves_the_rest_and_the_registry_that_one() {
    let upstream = FakeRegistry::start();
    let mirror = FakeRegistry::start();
    let img = image(&[(256 * 1024, 1), (MIB, 2)], "p");
    upstream.push_image("ns/app", "v1", &img);
    // The mirror has everything but layer 1, and breaks layer 0 off after 100 000 bytes
    // (its resumes then fail with 500).
    mirror.push_image("ns/app", "v1", &img);
    let (l0, l1) = (&img.layers[0].blob.digest, &img.layers[1].blob.digest);
    mirror.inject(Fault::Status(404).on_blob(l1).forever());
    mirror.inject(Fault::ResetAfter(100_000).on_blob(l0));
    mirror.inject(Fault::Status(500).on_blob(l0).ranged_only().forever());
    let mut env = Env::new();
    hoist_config(&mut env, &upstream, &[mirror.url()]);
    let ev = env.pull_ok(&[&upstream.image_ref("ns/app:v1"), "--retry-times", "1"]);
    env.assert_pulled(&img);
    let eps = blob_endpoints(&ev);
    assert!(
        eps[l1].last().unwrap().starts_with(&upstream.url()),
        "{eps:?}"
    );
    assert!(eps[&img.config.digest][0].starts_with(&mirror.url()));
    // Layer 0: 100 000 bytes from the mirror, the rest from the registry, continuing
    // from the offset reached.
    assert_eq!(eps[l0].len(), 2, "{eps:?}");
    let up: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.path == blob_path("ns/app", l0))
        .collect();
    assert_eq!(up.len(), 1);
    assert_eq!(
        up[0].range,
        Some(format!("bytes=100000-{}", img.layers[0].blob.size - 1))
    );
}

#[test]
fn mirrors_from_containerd_hosts_toml_and_registries_conf() {
    let upstream = FakeRegistry::start();
    let mirror = FakeRegistry::start();
    let img = image(&[(128 * 1024, 1)], "c");
    upstream.push_image("ns/app", "v1", &img);
    mirror.push_image("mirrored/ns/app", "v1", &img);
    mirror.push_image("ns/app", "v1", &img);

    // containerd: certs.d/HOST/hosts.toml.
    let mut env = Env::new();
    env.write(
        &format!("certs.d/{}/hosts.toml", upstream.host_port()),
        &format!(
            "server = \"{}\"\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.url(),
            mirror.url()
        ),
    );
    let dir = env.path("certs.d");
    env.var("HOIST_CONTAINERD_CERTS_D", dir);
    env.pull_ok(&[&upstream.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    assert!(upstream.requests().is_empty());
    assert!(mirror.hits("/v2/ns/app/manifests/v1") >= 1);

    // registries.conf: a mirror location with a namespace.
    let mut env = Env::new();
    let conf = env.write(
        "registries.conf",
        &format!(
            "[[registry]]\nlocation = \"{up}\"\n[[registry.mirror]]\nlocation = \"{m}/mirrored\"\n",
            up = upstream.host_port(),
            m = mirror.host_port()
        ),
    );
    env.var("CONTAINERS_REGISTRIES_CONF", conf);
    env.pull_ok(&[&upstream.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    assert!(upstream.requests().is_empty());
    assert_eq!(mirror.hits("/v2/mirrored/ns/app/manifests/v1"), 1);

    // A broken config file is a clear error naming it.
    let mut env = Env::new();
    let bad = env.write("bad.toml", "[registry\n");
    env.var("HOIST_CONFIG", &bad);
    let stderr = env.pull_fails(&[&upstream.image_ref("ns/app:v1")]);
    assert!(stderr.contains(bad.to_str().unwrap()), "{stderr}");
}

#[test]
fn a_digest_only_mirror_is_not_asked_for_tags() {
    let upstream = FakeRegistry::start();
    let mirror = FakeRegistry::start();
    let img = image(&[(128 * 1024, 1)], "t");
    upstream.push_image("ns/app", "v1", &img);
    mirror.push_image("ns/app", "v1", &img);
    let mut env = Env::new();
    let f = env.write(
        "hoist.toml",
        &format!(
            "[registry.\"{}\"]\nmirrors = [{{ url = \"{}\", tags = false }}]\n",
            upstream.host_port(),
            mirror.url()
        ),
    );
    env.var("HOIST_CONFIG", f);
    env.pull_ok(&[&upstream.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    assert_eq!(mirror.hits("/v2/ns/app/manifests/v1"), 0);
    assert_eq!(upstream.hits("/v2/ns/app/manifests/v1"), 1);
    assert_eq!(
        upstream.hits(&blob_path("ns/app", &img.layers[0].blob.digest)),
        0
    );
}

#[test]
fn foreign_layers_are_off_by_default_and_never_get_credentials() {
    let registry = FakeRegistry::start();
    let foreign = FakeRegistry::start();
    let img = images::ImageSpec::docker()
        .layer(images::LayerSpec::gzip([images::Entry::file(
            "a",
            "foreign\n",
        )]))
        .layer(images::LayerSpec::gzip([images::Entry::file("b", "own\n")]))
        .build()
        .unwrap();
    let fl = img.layers[0].blob.digest.clone();
    let url = format!("{}{}", foreign.url(), blob_path("win/base", &fl));
    foreign.put_blob("win/base", &fl, img.blob(&fl).unwrap().to_vec());
    // The manifest, with layer 0 made foreign.
    let mut m: Value = serde_json::from_slice(&img.manifest_bytes).unwrap();
    m["layers"][0]["mediaType"] =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into();
    m["layers"][0]["urls"] = serde_json::json!([url]);
    let bytes = serde_json::to_vec(&m).unwrap();
    registry.put_blob(
        "ns/app",
        &img.config.digest,
        img.blob(&img.config.digest).unwrap().to_vec(),
    );
    let own = &img.layers[1].blob.digest;
    registry.put_blob("ns/app", own, img.blob(own).unwrap().to_vec());
    registry.put_manifest("ns/app", "v1", images::DOCKER_MANIFEST, bytes);
    registry.require_token(Some(TokenAuth {
        uses_per_token: None,
        reject_all: false,
    }));
    foreign.require_token(Some(TokenAuth {
        uses_per_token: None,
        reject_all: true,
    }));
    let env = Env::new();
    let stderr = env.pull_fails(&[&registry.image_ref("ns/app:v1")]);
    assert!(
        stderr.contains("foreign layer") && stderr.contains(&fl),
        "{stderr}"
    );
    assert!(foreign.requests().is_empty());
    // Asked for: fetched from its URL, without credentials, although the registry has
    // a token for this pull.
    foreign.require_token(None);
    let ev = env.pull_ok(&[&registry.image_ref("ns/app:v1"), "--foreign-layers"]);
    let eps = blob_endpoints(&ev);
    assert_eq!(eps[&fl], vec![url.clone()]);
    let log = foreign.requests();
    assert_eq!(log.len(), 1);
    assert!(log[0].authorization.is_none());
    assert!(env.blobs().contains_key(&fl));
}

#[test]
fn a_copy_between_registries_gives_each_side_its_own_settings_and_writes_the_digestfile() {
    use base64::Engine as _;
    let src = FakeRegistry::start();
    let dst = FakeRegistry::start();
    dst.accept_pushes(true);
    let img = image(&[(64 * 1024, 1)], "sides");
    src.push_image("ns/app", "v1", &img);
    for r in [&src, &dst] {
        r.require_token(Some(TokenAuth {
            uses_per_token: None,
            reject_all: false,
        }));
    }
    let env = Env::new();
    let digestfile = env.path("digest");
    let out = env.hoist(&[
        "-q",
        "copy",
        "--src-creds",
        "reader:one",
        "--dest-creds",
        "writer:two",
        "--digestfile",
        digestfile.to_str().unwrap(),
        &format!("docker://{}", src.image_ref("ns/app:v1")),
        &format!("docker://{}", dst.image_ref("ns/mirror:v1")),
    ]);
    assert!(out.status.success());
    // Each registry's token was asked for with that side's credentials, and only those.
    let basic = |c: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    };
    for (r, want) in [(&src, basic("reader:one")), (&dst, basic("writer:two"))] {
        let asked: Vec<_> = r
            .requests()
            .into_iter()
            .filter(|q| q.path == "/token")
            .map(|q| q.authorization)
            .collect();
        assert!(!asked.is_empty());
        assert!(
            asked.iter().all(|a| a.as_deref() == Some(&want[..])),
            "{asked:?}"
        );
    }
    // The digest file holds the digest written, as printed, without a newline.
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(std::fs::read_to_string(&digestfile).unwrap(), printed);
    assert_eq!(printed, img.manifest.digest);
    assert!(dst.blob("ns/mirror", &img.layers[0].blob.digest).is_some());
}
