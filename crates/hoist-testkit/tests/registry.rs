//! The kit's registries, driven by skopeo: every canned image pushed with `--preserve-digests`
//! must come back with exactly the digests the generator reported.

use hoist_testkit::images::{self, BuiltImage, BuiltIndex, sha256_digest};
use hoist_testkit::skopeo::{self, SkopeoOpts};
use hoist_testkit::{Registry, http, require_peers};

/// Checks what the registry serves for `reference` against `built`, through skopeo.
fn assert_image(reference: &str, opts: &SkopeoOpts, built: &BuiltImage) {
    let raw = skopeo::skopeo_inspect_raw(reference, opts).unwrap();
    assert_eq!(raw, built.manifest_bytes, "manifest bytes of {reference}");
    assert_eq!(sha256_digest(&raw), built.manifest.digest);
    let info = skopeo::skopeo_inspect(reference, opts).unwrap();
    assert_eq!(info["Digest"], built.manifest.digest.as_str(), "{info:#}");
    let layers: Vec<String> = info["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers, built.layer_digests());
    assert_eq!(info["Architecture"], built.platform.architecture.as_str());
    let config = skopeo::skopeo_inspect_config_raw(reference, opts).unwrap();
    assert_eq!(sha256_digest(&config), built.config.digest);
}

fn assert_index(repo: &str, tag: &str, opts: &SkopeoOpts, built: &BuiltIndex) {
    let raw = skopeo::skopeo_inspect_raw(&format!("{repo}:{tag}"), opts).unwrap();
    assert_eq!(raw, built.index_bytes);
    assert_eq!(sha256_digest(&raw), built.index.digest);
    for img in &built.images {
        assert_image(&format!("{repo}@{}", img.manifest.digest), opts, img);
    }
}

/// Pushes every canned image to `reg` and checks them.
fn push_all_samples(reg: &Registry, opts: &SkopeoOpts, prefix: &str) {
    let dir = tempfile::tempdir().unwrap();
    let multi = images::sample_multi_layer()
        .write_layout(dir.path(), "multi")
        .unwrap();
    let docker = images::sample_docker()
        .write_layout(dir.path(), "docker")
        .unwrap();
    let zstd = images::sample_zstd()
        .write_layout(dir.path(), "zstd")
        .unwrap();
    let index = images::sample_index()
        .write_layout(dir.path(), "index")
        .unwrap();
    let index_docker = images::sample_index_docker()
        .write_layout(dir.path(), "index-docker")
        .unwrap();
    for (tag, repo) in [
        ("multi", "multi:v1"),
        ("docker", "docker:v1"),
        ("zstd", "zstd:v1"),
        ("index", "index:v1"),
        ("index-docker", "index:docker"),
    ] {
        let dest = reg.image_ref(&format!("{prefix}{repo}"));
        skopeo::push_with_skopeo(dir.path(), tag, &dest, opts)
            .unwrap_or_else(|e| panic!("push {tag} to {dest}: {e}"));
    }
    assert_image(&reg.image_ref(&format!("{prefix}multi:v1")), opts, &multi);
    assert_image(&reg.image_ref(&format!("{prefix}docker:v1")), opts, &docker);
    assert_image(&reg.image_ref(&format!("{prefix}zstd:v1")), opts, &zstd);
    let repo = reg.image_ref(&format!("{prefix}index"));
    assert_index(&repo, "v1", opts, &index);
    assert_index(&repo, "docker", opts, &index_docker);
    let mut tags = skopeo::skopeo_list_tags(&repo, opts).unwrap();
    tags.sort();
    assert_eq!(tags, ["docker", "v1"]);
}

#[test]
fn plain_registry_round_trips_every_sample() {
    require_peers!();
    let reg = Registry::plain();
    assert!(reg.url().starts_with("http://127.0.0.1:"));
    assert!(reg.credentials().is_none() && reg.ca_pem().is_none());
    let resp = http::request(reg.addr(), "GET", "/v2/", &[], b"").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    push_all_samples(&reg, &SkopeoOpts::for_registry(&reg), "samples/");
    // Blobs are where Distribution's filesystem driver keeps them.
    let built = images::sample_multi_layer().build().unwrap();
    let hex = &built.layers[0].blob.digest[7..];
    let blob = reg
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    assert!(blob.is_file(), "{} missing", blob.display());
    // skopeo pulls it back into a layout with the same blobs.
    let back = tempfile::tempdir().unwrap();
    let opts = SkopeoOpts::for_registry(&reg);
    skopeo::pull_with_skopeo(
        &reg.image_ref("samples/multi:v1"),
        back.path(),
        "back",
        &opts,
        false,
    )
    .unwrap();
    let layout = images::OciLayout::create(back.path()).unwrap();
    assert_eq!(
        layout.find_tag("back").unwrap().unwrap()["digest"],
        built.manifest.digest.as_str()
    );
    for (digest, bytes) in built.blobs() {
        assert_eq!(layout.read_blob(digest).unwrap(), bytes, "{digest}");
    }
    // push_spec: one call from a spec to a pushed image.
    let pushed = skopeo::push_spec(&images::sample_docker(), &reg, "quick/docker:1").unwrap();
    let raw = skopeo::skopeo_inspect_raw(&reg.image_ref("quick/docker:1"), &opts).unwrap();
    assert_eq!(raw, pushed.manifest_bytes);
    // Deletes are enabled.
    let opts = SkopeoOpts::for_registry(&reg);
    skopeo::skopeo_delete(&reg.image_ref("samples/multi:v1"), &opts).unwrap();
    assert!(skopeo::skopeo_inspect_raw(&reg.image_ref("samples/multi:v1"), &opts).is_err());
}

#[test]
fn tls_basic_registry_round_trips_and_requires_auth_and_ca() {
    require_peers!();
    let reg = Registry::tls_basic();
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    assert_eq!(reg.credentials(), Some(("hoist", "hoist-secret")));
    let ca = reg.ca_pem().unwrap();
    assert!(reg.cert_dir().unwrap().join("ca.crt").is_file());
    let opts = SkopeoOpts::for_registry(&reg);
    push_all_samples(&reg, &opts, "");

    let image = reg.image_ref("multi:v1");
    let anon = SkopeoOpts::anonymous(&reg);
    let err = skopeo::skopeo_inspect_raw(&image, &anon).unwrap_err();
    assert!(err.stderr.contains("unauthorized"), "{err}");
    let wrong = SkopeoOpts::for_registry(&reg).creds("hoist", "nope");
    assert!(skopeo::skopeo_inspect_raw(&image, &wrong).is_err());
    let no_ca = SkopeoOpts {
        cert_dir: None,
        ..SkopeoOpts::for_registry(&reg)
    };
    let err = skopeo::skopeo_inspect_raw(&image, &no_ca).unwrap_err();
    assert!(err.stderr.contains("certificate"), "{err}");

    // curl agrees: the CA verifies the server for both 127.0.0.1 and localhost.
    for host in ["127.0.0.1", "localhost"] {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(ca)
            .args(["-u", "hoist:hoist-secret"])
            .arg(format!("https://{host}:{}/v2/", reg.port()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{host}");
    }
}

#[test]
fn registries_start_in_parallel_on_distinct_ports() {
    require_peers!();
    let regs: Vec<Registry> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6).map(|_| s.spawn(Registry::plain)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = regs.iter().map(Registry::port).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 6);
    for r in &regs {
        assert_eq!(
            http::request(r.addr(), "GET", "/v2/", &[], b"")
                .unwrap()
                .status,
            200
        );
        assert!(r.config_path().starts_with(r.dir()));
    }
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting to be reaped is dead too.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pid: u32) -> bool {
    for _ in 0..200 {
        if process_gone(pid) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

#[test]
fn drop_kills_the_registry_and_removes_its_directory() {
    require_peers!();
    let reg = Registry::plain();
    let (pid, dir) = (reg.pid(), reg.dir().to_path_buf());
    assert!(!process_gone(pid));
    drop(reg);
    assert!(wait_gone(pid), "registry {pid} still running after drop");
    assert!(!dir.exists());
}

#[test]
fn registry_outlives_the_thread_that_started_it() {
    require_peers!();
    // The parent-death signal is tied to the kit's spawner thread, not to the caller's thread,
    // so a registry made in a short-lived thread (or a static) keeps running.
    let reg = std::thread::spawn(Registry::plain).join().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!process_gone(reg.pid()));
    assert_eq!(
        http::request(reg.addr(), "GET", "/v2/", &[], b"")
            .unwrap()
            .status,
        200
    );
}

#[test]
fn registry_dies_with_the_test_process() {
    require_peers!();
    const CHILD: &str = "HOIST_TESTKIT_PDEATHSIG_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let reg = Registry::plain();
        println!("REGISTRY_PID={}", reg.pid());
        println!("REGISTRY_DIR={}", reg.dir().display());
        // Exit without running destructors: only the kernel can kill the registry now.
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "registry_dies_with_the_test_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.split("REGISTRY_PID=").nth(1))
        .unwrap_or_else(|| {
            panic!(
                "child printed no pid: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .trim()
        .parse()
        .unwrap();
    assert!(wait_gone(pid), "registry {pid} survived its test process");
    // The child exited without destructors: clean its directory up here.
    if let Some(dir) = stdout.lines().find_map(|l| l.split("REGISTRY_DIR=").nth(1)) {
        let dir = dir.trim();
        assert!(dir.contains("hoist-testkit-registry-"), "{dir}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn schema1_and_no_delete_options_reach_the_config() {
    require_peers!(Peer::Registry);
    let reg = Registry::builder()
        .schema1(true)
        .delete_enabled(false)
        .start();
    let cfg = std::fs::read_to_string(reg.config_path()).unwrap();
    assert!(cfg.contains("schema1:\n    enabled: true"), "{cfg}");
    assert!(cfg.contains("delete:\n    enabled: false"), "{cfg}");
    assert!(reg.log().contains("listening on"));
}
