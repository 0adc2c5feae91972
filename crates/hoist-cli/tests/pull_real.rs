//! `hoist pull`, `images`, `inspect`, `tags`, `catalog`, `login` end to end against the real
//! Distribution registry (plain HTTP, TLS + basic auth, token auth) started by the test,
//! with skopeo and umoci as peers checking interoperability.

mod support;

use support::Env;

use hoist_testkit::images::{self, Entry, ImageSpec, LayerSpec};
use hoist_testkit::registry::Registry;
use hoist_testkit::require_peers;
use hoist_testkit::skopeo::{self, SkopeoOpts};
use serde_json::Value;

fn tls_args(reg: &Registry) -> Vec<String> {
    vec![
        "--cert-dir".into(),
        reg.cert_dir().unwrap().display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn pull_multi_layer_plain_matches_skopeo_and_store_is_readable_by_peers() {
    require_peers!(Peer::Registry, Peer::Skopeo, Peer::Umoci);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/multi:v1").unwrap();
    let env = Env::new();
    let r = reg.image_ref("ns/multi:v1");

    let out = env.ok(&["--progress", "plain", "pull", &r]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id, built.config.digest, "pull prints the image ID");
    for l in built.layer_digests() {
        assert!(
            stderr.contains(&format!("layer {l}: done")),
            "progress names {l}:\n{stderr}"
        );
    }

    // Every blob is in the store, byte for byte.
    for d in built
        .layer_digests()
        .iter()
        .chain([&built.config.digest, &built.manifest.digest])
    {
        let hex = d.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(env.store().join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(images::sha256_digest(&bytes), *d);
    }

    // `hoist images` lists it.
    let list = env.json(&["images", "--format", "json"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["Repository"],
        format!("{}/ns/multi", reg.host_port())
    );
    assert_eq!(rows[0]["Tag"], "v1");
    assert_eq!(rows[0]["Id"], built.config.digest);
    let table = String::from_utf8_lossy(&env.ok(&["images"]).stdout).into_owned();
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(table.contains(&built.config.digest[7..19]), "{table}");

    // `hoist inspect` (store and registry) agrees with `skopeo inspect`.
    let sk = skopeo::skopeo_inspect(&r, &SkopeoOpts::for_registry(&reg)).unwrap();
    let local = env.json(&["inspect", &r]);
    let remote = env.json(&["inspect", &format!("docker://{r}")]);
    for v in [&local, &remote] {
        for k in [
            "Digest",
            "Layers",
            "Architecture",
            "Os",
            "Env",
            "Labels",
            "Created",
        ] {
            assert_eq!(v[k], sk[k], "field {k}");
        }
        assert_eq!(v["Name"], sk["Name"]);
    }
    assert_eq!(remote["RepoTags"], sk["RepoTags"]);
    assert_eq!(local["Id"], built.config.digest);
    assert_eq!(local["DiffIDs"], serde_json::json!(built.diff_ids()));
    // Raw bytes are exactly what the registry served.
    let raw = env
        .ok(&["inspect", "--raw", &format!("docker://{r}")])
        .stdout;
    assert_eq!(raw, built.manifest_bytes);
    let raw_local = env.ok(&["inspect", "--raw", &r]).stdout;
    assert_eq!(raw_local, built.manifest_bytes);
    let cfg = env.ok(&["inspect", "--config", &id[7..19]]).stdout;
    assert_eq!(cfg, built.config_bytes);

    // skopeo reads the store as an OCI layout.
    let out_dir = env.dir.path().join("skopeo-dir");
    skopeo::run_skopeo(&[
        "copy".into(),
        format!("oci:{}:{r}", env.store().display()),
        format!("dir:{}", out_dir.display()),
    ])
    .unwrap();
    assert_eq!(
        std::fs::read(out_dir.join("manifest.json")).unwrap(),
        built.manifest_bytes
    );
    // umoci lists and unpacks it.
    let umoci_ls = std::process::Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(env.store())
        .output()
        .unwrap();
    assert!(
        umoci_ls.status.success(),
        "{}",
        String::from_utf8_lossy(&umoci_ls.stderr)
    );
    assert!(String::from_utf8_lossy(&umoci_ls.stdout).contains(&r));
    let bundle = env.dir.path().join("bundle");
    let unpack = std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{r}", env.store().display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    assert!(bundle.join("rootfs").is_dir());

    // A second pull fetches nothing.
    let again = env.ok(&["--progress", "json", "pull", &r]);
    let events: Vec<Value> = String::from_utf8_lossy(&again.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.iter().all(|e| e["event"] != "blob_start"),
        "nothing refetched"
    );
    let skipped = events
        .iter()
        .filter(|e| e["event"] == "blob_done" && e["skipped"] == true)
        .count();
    assert_eq!(skipped, built.layers.len() + 1, "layers and config skipped");
}

#[test]
fn pull_docker_v2s2_zstd_and_by_digest() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let docker = skopeo::push_spec(&images::sample_docker(), &reg, "d/img:1").unwrap();
    let zstd = skopeo::push_spec(&images::sample_zstd(), &reg, "z/img:1").unwrap();
    let env = Env::new();
    env.ok(&["-q", "pull", &reg.image_ref("d/img:1")]);
    env.ok(&["-q", "pull", &reg.image_ref("z/img:1")]);
    let by_digest = format!("{}/d/img@{}", reg.host_port(), docker.manifest.digest);
    let out = env.ok(&["-q", "pull", &by_digest]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        docker.config.digest
    );

    let d = env.json(&["inspect", &reg.image_ref("d/img:1")]);
    assert_eq!(d["Digest"], docker.manifest.digest);
    assert!(
        d["RepoDigests"][0]
            .as_str()
            .unwrap()
            .ends_with(&docker.manifest.digest)
    );
    assert_eq!(
        d["LayersData"][0]["MIMEType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let z = env.json(&["inspect", &reg.image_ref("z/img:1")]);
    assert!(
        z["LayersData"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["MIMEType"] == "application/vnd.oci.image.layer.v1.tar+zstd")
    );
    assert_eq!(z["Id"], zstd.config.digest);
    // Two images, the docker one found by ID prefix too.
    assert_eq!(
        env.json(&["images", "--format", "json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let by_prefix = env.json(&["inspect", &docker.config.digest[7..15]]);
    assert_eq!(by_prefix["Id"], docker.config.digest);
}

#[test]
fn pull_index_selects_platform() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    for (repo, spec) in [
        ("oci/idx:1", images::sample_index()),
        ("dk/idx:1", images::sample_index_docker()),
    ] {
        let built = skopeo::push_index_spec(&spec, &reg, repo).unwrap();
        let env = Env::new();
        let r = reg.image_ref(repo);
        for (platform, arch) in [("linux/arm64", "arm64"), ("linux/amd64", "amd64")] {
            let out = env.ok(&["-q", "pull", "--platform", platform, &r]);
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let member = built
                .images
                .iter()
                .find(|i| i.platform.architecture == arch)
                .unwrap();
            assert_eq!(id, member.config.digest, "{repo} {platform}");
            let info = env.json(&["inspect", &id]);
            assert_eq!(info["Architecture"], arch);
            // The stored image remembers the index it came from.
            assert_eq!(info["Digest"], built.index.digest);
        }
        let err = env.fails(&["-q", "pull", "--platform", "linux/s390x", &r]);
        assert!(
            err.contains("linux/s390x") && err.contains("linux/amd64"),
            "{err}"
        );
        // skopeo inspect of the index reports the index digest, as hoist does remotely.
        let sk = skopeo::skopeo_inspect(&r, &SkopeoOpts::for_registry(&reg)).unwrap();
        let remote = env.json(&[
            "inspect",
            "--platform",
            "linux/amd64",
            &format!("docker://{r}"),
        ]);
        assert_eq!(remote["Digest"], sk["Digest"]);
    }
}

#[test]
fn tls_with_basic_auth_creds_authfile_and_login() {
    require_peers!(Peer::Registry, Peer::Skopeo, Peer::Openssl, Peer::Htpasswd);
    let reg = Registry::tls_basic();
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, "sec/app:1").unwrap();
    let (user, pass) = reg.credentials().unwrap();
    let env = Env::new();
    let r = reg.image_ref("sec/app:1");
    let tls = tls_args(&reg);

    // Without a CA: a certificate error, never a silent HTTP fallback.
    let err = env.fails(&["-q", "pull", &r]);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // With the CA but no credentials: unauthorized.
    let mut a = vec!["-q", "pull"];
    a.extend(strs(&tls));
    a.push(&r);
    let err = env.fails(&a);
    assert!(err.contains("nauthorized") || err.contains("401"), "{err}");
    // --tls-verify=false without a CA, and with credentials.
    let creds = format!("{user}:{pass}");
    env.ok(&["-q", "pull", "--tls-verify=false", "--creds", &creds, &r]);

    // login writes the auth file; pull then uses it.
    let env2 = Env::new();
    let mut login = vec!["login", "-u", user, "--password-stdin"];
    login.extend(strs(&tls));
    let host = reg.host_port();
    login.push(&host);
    let out = env2
        .cmd()
        .args(&login)
        .write_stdin(format!("{pass}\n"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = env2.dir.path().join("home/.docker/config.json");
    let cfg_json: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert!(cfg_json["auths"][&host]["auth"].is_string(), "{cfg_json}");
    let mut pull = vec!["-q", "pull"];
    pull.extend(strs(&tls));
    pull.push(&r);
    let out = env2.ok(&pull);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        built.config.digest
    );
    // Login with a wrong password fails and stores nothing new.
    let env3 = Env::new();
    let mut bad = vec!["login", "-u", user, "-p", "wrong"];
    bad.extend(strs(&tls));
    bad.push(&host);
    env3.fails(&bad);
    assert!(!env3.dir.path().join("home/.docker/config.json").exists());
    // logout removes them; the next pull is unauthorized again.
    env2.ok(&["logout", &host]);
    let env2_store_fresh = env2.dir.path().join("store2");
    let mut pull2 = vec!["-q", "--store", env2_store_fresh.to_str().unwrap(), "pull"];
    pull2.extend(strs(&tls));
    pull2.push(&r);
    env2.fails(&pull2);

    // skopeo and hoist agree over TLS too.
    let sk = skopeo::skopeo_inspect(&r, &SkopeoOpts::for_registry(&reg)).unwrap();
    let mut insp = vec!["inspect", "--creds", &creds];
    insp.extend(strs(&tls));
    let remote_ref = format!("docker://{r}");
    insp.push(&remote_ref);
    let remote = env.json(&insp);
    assert_eq!(remote["Digest"], sk["Digest"]);
    assert_eq!(remote["Layers"], sk["Layers"]);
}

#[test]
fn token_auth_anonymous_and_authenticated_scopes() {
    require_peers!(Peer::Registry, Peer::Skopeo, Peer::Openssl);
    let reg = Registry::token();
    let public = skopeo::push_spec(&images::sample_docker(), &reg, "public/app:1").unwrap();
    let private = skopeo::push_spec(&images::sample_multi_layer(), &reg, "private/app:1").unwrap();
    let ts = reg.token_server().unwrap();
    ts.reset_stats();
    let env = Env::new();

    // Anonymous pull of a public repository: tokens only for the needed scope, cached.
    let out = env.ok(&["-q", "pull", &reg.image_ref("public/app:1")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        public.config.digest
    );
    let st = ts.stats();
    assert!(st.anonymous >= 1 && st.basic == 0, "{st:?}");
    assert!(
        st.issued <= 2,
        "token cached across the pull's requests: {st:?}"
    );

    // A private repository needs credentials.
    let err = env.fails(&["-q", "pull", &reg.image_ref("private/app:1")]);
    assert!(
        err.contains("nauthorized") || err.contains("denied") || err.contains("401"),
        "{err}"
    );
    let (user, pass) = reg.credentials().unwrap();
    let creds = format!("{user}:{pass}");
    let out = env.ok(&[
        "-q",
        "pull",
        "--creds",
        &creds,
        &reg.image_ref("private/app:1"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        private.config.digest
    );
    assert!(ts.stats().basic >= 1);
    // Wrong credentials: a clear 401.
    let err = env.fails(&[
        "-q",
        "pull",
        "--creds",
        "alice:nope",
        &reg.image_ref("private/app:1"),
    ]);
    assert!(err.contains("nauthorized") || err.contains("401"), "{err}");

    // Tags and catalog (the catalog needs an authenticated scope).
    let tags = env.json(&[
        "tags",
        "--format",
        "json",
        &format!("{}/public/app", reg.host_port()),
    ]);
    assert_eq!(tags["Tags"], serde_json::json!(["1"]));
    let cat = env.json(&[
        "catalog",
        "--format",
        "json",
        "--creds",
        &creds,
        &reg.host_port(),
    ]);
    let repos = cat["Repositories"].as_array().unwrap();
    assert!(
        repos.contains(&Value::from("public/app")) && repos.contains(&Value::from("private/app"))
    );
}

#[test]
fn tags_many_and_concurrent_pulls_share_the_store() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let layout = tempfile::tempdir().unwrap();
    let spec = ImageSpec::oci()
        .layer(LayerSpec::gzip([Entry::random_file("big.bin", 3 << 20, 7)]))
        .layer(LayerSpec::gzip([Entry::file(
            "etc/hello",
            b"hi\n".to_vec(),
        )]));
    let built = spec.write_layout(layout.path(), "t").unwrap();
    let opts = SkopeoOpts::for_registry(&reg);
    let mut want = Vec::new();
    for i in 0..12 {
        let tag = format!("v{i}");
        skopeo::push_with_skopeo(
            layout.path(),
            "t",
            &reg.image_ref(&format!("many/tags:{tag}")),
            &opts,
        )
        .unwrap();
        want.push(tag);
    }
    let env = Env::new();
    let out = env.ok(&["tags", &format!("{}/many/tags", reg.host_port())]);
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // Four processes pull different tags of the same image into one store at once.
    let children: Vec<_> = (0..4)
        .map(|i| {
            let mut c = support::hoist_std(env.dir.path());
            c.env("HOIST_STORE", env.store())
                .args(["-q", "pull", &reg.image_ref(&format!("many/tags:v{i}"))])
                .stdout(std::process::Stdio::null());
            c.spawn().unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let list = env.json(&["images", "--format", "json"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        4,
        "four names, one image: {list}"
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|r| r["Id"] == built.config.digest)
    );
    // Nothing left over in the ingest area.
    let ingest: Vec<_> = std::fs::read_dir(env.store().join("hoist/ingest"))
        .unwrap()
        .collect();
    assert!(ingest.is_empty(), "{ingest:?}");
}

#[test]
fn tag_rmi_and_reference_normalisation() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_docker(), &reg, "a/b:1").unwrap();
    let env = Env::new();
    env.ok(&["-q", "pull", &reg.image_ref("a/b:1")]);
    env.ok(&["tag", &reg.image_ref("a/b:1"), "myapp"]);
    let info = env.json(&["inspect", "docker.io/library/myapp:latest"]);
    assert_eq!(info["Id"], built.config.digest);
    let out = String::from_utf8_lossy(&env.ok(&["rmi", "myapp"]).stdout).into_owned();
    assert!(
        out.contains("Untagged: docker.io/library/myapp:latest"),
        "{out}"
    );
    env.fails(&["inspect", "myapp"]);
    let out =
        String::from_utf8_lossy(&env.ok(&["rmi", &reg.image_ref("a/b:1")]).stdout).into_owned();
    assert!(
        out.contains(&format!("Deleted: {}", built.config.digest)),
        "{out}"
    );
    assert_eq!(
        env.json(&["images", "--format", "json"]),
        serde_json::json!([])
    );
    let err = env.fails(&["rmi", "nothing-here"]);
    assert!(err.contains("nothing-here"), "{err}");
}

/// `hoist delete docker://REF`, skopeo delete's job, against Distribution: a tag is
/// resolved to its digest and that manifest deleted (every tag naming it goes with it), a
/// digest is deleted as given; a registry without deletes (`storage.delete.enabled:
/// false`) refuses with 405 and keeps the image; a store reference is refused.
#[test]
fn delete_removes_a_manifest_from_the_registry_where_deletes_are_allowed() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let spec = ImageSpec::oci().layer(LayerSpec::gzip([Entry::file("f", b"x\n".to_vec())]));
    let layout = tempfile::tempdir().unwrap();
    let built = spec.write_layout(layout.path(), "t").unwrap();
    let reg = Registry::plain();
    let opts = SkopeoOpts::for_registry(&reg);
    for tag in ["a", "b"] {
        skopeo::push_with_skopeo(
            layout.path(),
            "t",
            &reg.image_ref(&format!("del/app:{tag}")),
            &opts,
        )
        .unwrap();
    }
    let env = Env::new();
    let exists = |tag: &str| {
        skopeo::run_skopeo(&[
            "inspect".into(),
            "--raw".into(),
            "--tls-verify=false".into(),
            format!("docker://{}", reg.image_ref(&format!("del/app:{tag}"))),
        ])
        .is_ok()
    };
    assert!(exists("a") && exists("b"));
    let out = env.ok(&[
        "-q",
        "delete",
        &format!("docker://{}", reg.image_ref("del/app:a")),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        built.manifest.digest
    );
    assert!(!exists("a") && !exists("b"), "both tags named the manifest");
    // Gone: a second delete says so.
    let out = env.run(&[
        "delete",
        &format!(
            "docker://{}",
            reg.image_ref(&format!("del/app@{}", built.manifest.digest))
        ),
    ]);
    assert!(!out.status.success());

    // Deletes off: refused, the image kept.
    let off = Registry::builder().delete_enabled(false).start();
    let opts = SkopeoOpts::for_registry(&off);
    skopeo::push_with_skopeo(layout.path(), "t", &off.image_ref("del/app:a"), &opts).unwrap();
    let out = env.run(&[
        "delete",
        &format!("docker://{}", off.image_ref("del/app:a")),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("405") && err.contains("storage.delete.enabled"),
        "{err}"
    );
    assert!(
        skopeo::run_skopeo(&[
            "inspect".into(),
            "--raw".into(),
            "--tls-verify=false".into(),
            format!("docker://{}", off.image_ref("del/app:a")),
        ])
        .is_ok()
    );
    // Not a registry reference.
    let out = env.run(&["delete", "del/app:a"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hoist rmi"));
}
