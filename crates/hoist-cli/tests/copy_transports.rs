//! `hoist copy` and `hoist push` between `docker://`, `oci:`, `dir:`, `hoist:`,
//! `oci-archive:` and `docker-archive:` against the real Distribution registry, with skopeo
//! as the peer that reads what hoist writes and writes what hoist reads.

mod support;

use support::Env;

use std::path::{Path, PathBuf};

use hoist_testkit::evil_archive;
use hoist_testkit::images::{self, BuiltImage};
use hoist_testkit::registry::Registry;
use hoist_testkit::require_peers;
use hoist_testkit::skopeo::{self, SkopeoOpts};
use serde_json::Value;

impl Env {
    /// `hoist copy` quietly; returns the digest it prints.
    fn copy(&self, extra: &[&str], src: &str, dst: &str) -> String {
        let mut args = vec!["-q", "copy"];
        args.extend_from_slice(extra);
        args.extend([src, dst]);
        String::from_utf8_lossy(&self.ok(&args).stdout)
            .trim()
            .to_owned()
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The manifest digest an OCI layout names `tag`.
fn layout_digest(dir: &Path, tag: &str) -> String {
    let idx = read_json(&dir.join("index.json"));
    idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {idx}"))["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn oci_blob(dir: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap()
}

/// Every blob of `built` is in the OCI layout at `dir`, byte for byte.
fn assert_layout_has(dir: &Path, built: &BuiltImage) {
    for (d, bytes) in built.blobs() {
        assert_eq!(oci_blob(dir, d), bytes, "{d} in {}", dir.display());
    }
}

fn oci(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

fn dir_ref(dir: &Path) -> String {
    format!("dir:{}", dir.display())
}

#[test]
fn round_trip_docker_oci_dir_store_docker_keeps_every_digest() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/multi:v1").unwrap();
    let env = Env::new();
    let src = format!("docker://{}", reg.image_ref("ns/multi:v1"));

    // docker:// → oci:
    let a = env.path("a");
    let d = env.copy(&[], &src, &oci(&a, "v1"));
    assert_eq!(d, built.manifest.digest);
    assert_eq!(layout_digest(&a, "v1"), built.manifest.digest);
    assert_layout_has(&a, &built);

    // oci: → dir: (skopeo's layout: blobs by hex, manifest.json, version)
    let dd = env.path("d");
    env.copy(&[], &oci(&a, "v1"), &dir_ref(&dd));
    assert_eq!(
        std::fs::read(dd.join("manifest.json")).unwrap(),
        built.manifest_bytes
    );
    assert_eq!(
        std::fs::read_to_string(dd.join("version")).unwrap(),
        "Directory Transport Version: 1.1\n"
    );
    for (digest, bytes) in built.blobs() {
        if digest != built.manifest.digest {
            assert_eq!(std::fs::read(dd.join(&digest[7..])).unwrap(), bytes);
        }
    }

    // dir: → hoist: (the store), named; then hoist: → docker:// under another name.
    let name = format!("{}/ns/copied:v2", reg.host_port());
    env.copy(&[], &dir_ref(&dd), &format!("hoist:{name}"));
    let images = env.ok(&["images", "--format", "json"]);
    let rows: Value = serde_json::from_slice(&images.stdout).unwrap();
    assert_eq!(rows[0]["Id"], built.config.digest, "{rows}");
    let back = format!("docker://{}", reg.image_ref("ns/back:v3"));
    let pushed = env.copy(&[], &format!("hoist:{name}"), &back);
    assert_eq!(pushed, built.manifest.digest);

    // skopeo reads it back from the registry: same manifest bytes.
    let raw = skopeo::skopeo_inspect_raw(
        &reg.image_ref("ns/back:v3"),
        &SkopeoOpts::for_registry(&reg),
    )
    .unwrap();
    assert_eq!(raw, built.manifest_bytes);

    // Copying again sends nothing: every blob is there.
    let out = env.ok(&["copy", &src, &oci(&a, "v1")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(" 0 blobs sent"), "{err}");
}

#[test]
fn skopeo_and_hoist_read_each_others_layouts() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_docker(), &reg, "ns/dock:v1").unwrap();
    let env = Env::new();
    let r = reg.image_ref("ns/dock:v1");
    let opts = SkopeoOpts::for_registry(&reg);

    // The same copy by both tools: identical index.json, manifests and blobs (the Docker
    // manifest kept: skopeo's --preserve-digests, hoist's --format v2s2; by default both
    // convert it to OCI for an oci: destination).
    let (h, s) = (env.path("h"), env.path("s"));
    env.copy(
        &["--format", "v2s2"],
        &format!("docker://{r}"),
        &oci(&h, "t"),
    );
    skopeo::skopeo_copy(&r, &oci(&s, "t"), Some(&opts), None, false).unwrap();
    let (hd, sd) = (layout_digest(&h, "t"), layout_digest(&s, "t"));
    assert_eq!(hd, sd, "both keep the registry's manifest");
    assert_eq!(hd, built.manifest.digest);
    for f in ["index.json", "oci-layout"] {
        assert_eq!(
            std::fs::read(h.join(f)).unwrap(),
            std::fs::read(s.join(f)).unwrap(),
            "{f} byte-identical"
        );
    }
    assert_layout_has(&h, &built);

    // skopeo reads hoist's oci: (with an OCI image: skopeo 1.9 skips Docker manifests in
    // an OCI layout, even those it wrote itself) and dir: layouts.
    let oci_img = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/ocimg:v1").unwrap();
    let ho = env.path("ho");
    env.copy(
        &[],
        &format!("docker://{}", reg.image_ref("ns/ocimg:v1")),
        &oci(&ho, "t"),
    );
    let s2 = env.path("s2");
    skopeo::skopeo_copy(&oci(&ho, "t"), &oci(&s2, "t"), None, None, false).unwrap();
    assert_eq!(layout_digest(&s2, "t"), oci_img.manifest.digest);
    assert_eq!(
        std::fs::read(s2.join("index.json")).unwrap(),
        std::fs::read(ho.join("index.json")).unwrap()
    );
    let hdir = env.path("hdir");
    env.copy(&[], &oci(&h, "t"), &dir_ref(&hdir));
    let sdir = env.path("sdir");
    skopeo::skopeo_copy(&dir_ref(&hdir), &dir_ref(&sdir), None, None, false).unwrap();
    assert_eq!(
        std::fs::read(sdir.join("manifest.json")).unwrap(),
        built.manifest_bytes
    );
    let inspected: Value =
        serde_json::from_slice(&skopeo::run_skopeo(&["inspect".into(), dir_ref(&hdir)]).unwrap())
            .unwrap();
    assert_eq!(inspected["Digest"], built.manifest.digest);

    // hoist reads skopeo's dir: layout (and writes the same files).
    let sk_dir = env.path("skdir");
    skopeo::skopeo_copy(&r, &dir_ref(&sk_dir), Some(&opts), None, false).unwrap();
    let hd2 = env.path("hd2");
    env.copy(&[], &dir_ref(&sk_dir), &dir_ref(&hd2));
    let names = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&sk_dir), names(&hd2));
    for n in names(&sk_dir) {
        assert_eq!(
            std::fs::read(sk_dir.join(&n)).unwrap(),
            std::fs::read(hd2.join(&n)).unwrap(),
            "{n}"
        );
    }
}

#[test]
fn push_then_skopeo_back_and_mount_into_second_repo() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/src:v1").unwrap();
    let env = Env::new();
    let r = reg.image_ref("ns/src:v1");
    env.ok(&["-q", "pull", &r]);

    // Push under another repository: every blob mounted from ns/src (the store knows it
    // came from there), none uploaded.
    let other = reg.image_ref("ns/other:v1");
    let out = env.ok(&["push", &r, &other]);
    let err = String::from_utf8_lossy(&out.stderr);
    let layers = built.layers.len() + 1;
    assert!(
        err.contains(&format!(" 0 blobs sent (0 B), {layers} already there")),
        "all mounted:\n{err}"
    );
    let back = env.path("back");
    skopeo::skopeo_copy(
        &other,
        &oci(&back, "b"),
        Some(&SkopeoOpts::for_registry(&reg)),
        None,
        false,
    )
    .unwrap();
    assert_eq!(layout_digest(&back, "b"), built.manifest.digest);
    assert_layout_has(&back, &built);

    // `hoist push NAME` to its own name; a fresh repository with no hint uploads.
    env.ok(&["push", &r]);
    let local = env.path("local");
    env.copy(&[], &format!("docker://{r}"), &oci(&local, "l"));
    let fresh = reg.image_ref("fresh/repo:v9");
    let out = env.ok(&["copy", &oci(&local, "l"), &format!("docker://{fresh}")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(" {layers} blobs sent")),
        "uploaded:\n{err}"
    );
    let raw = skopeo::skopeo_inspect_raw(&fresh, &SkopeoOpts::for_registry(&reg)).unwrap();
    assert_eq!(raw, built.manifest_bytes);
}

#[test]
fn format_conversion_matches_skopeo_and_zstd_round_trip_keeps_diff_ids() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/conv:v1").unwrap();
    let env = Env::new();
    let r = reg.image_ref("ns/conv:v1");
    let opts = SkopeoOpts::for_registry(&reg);

    // --format v2s2: byte for byte what skopeo writes.
    let (h, s) = (env.path("h"), env.path("s"));
    env.copy(
        &["--format", "v2s2"],
        &format!("docker://{r}"),
        &oci(&h, "t"),
    );
    skopeo::skopeo_copy(
        &r,
        &oci(&s, "t"),
        Some(&opts.clone().format("v2s2").preserve_digests(false)),
        None,
        false,
    )
    .unwrap();
    let hd = layout_digest(&h, "t");
    let sd = layout_digest(&s, "t");
    assert_eq!(
        hd,
        sd,
        "hoist:\n{}\nskopeo:\n{}",
        String::from_utf8_lossy(&oci_blob(&h, &hd)),
        String::from_utf8_lossy(&oci_blob(&s, &sd))
    );
    assert_ne!(hd, built.manifest.digest);
    let m: Value = serde_json::from_slice(&oci_blob(&h, &hd)).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["config"]["digest"], built.config.digest,
        "config bytes unchanged"
    );
    for (l, b) in m["layers"].as_array().unwrap().iter().zip(&built.layers) {
        assert_eq!(l["digest"], b.blob.digest);
    }
    // And back to OCI (through dir:, which skopeo 1.9 reads Docker manifests from).
    let hv = env.path("hv");
    env.copy(&[], &oci(&h, "t"), &dir_ref(&hv));
    let o = env.path("o");
    env.copy(&["--format", "oci"], &dir_ref(&hv), &oci(&o, "t"));
    let so = env.path("so");
    skopeo::skopeo_copy(
        &dir_ref(&hv),
        &oci(&so, "t"),
        None,
        Some(&SkopeoOpts::default().format("oci").preserve_digests(false)),
        false,
    )
    .unwrap();
    assert_eq!(layout_digest(&o, "t"), layout_digest(&so, "t"));

    // zstd and back: new layer digests, the same config (diff IDs), and hoist unpack,
    // which checks every diff ID, accepts both.
    let z = env.path("z");
    env.copy(
        &["--dest-compress-format", "zstd"],
        &format!("docker://{r}"),
        &oci(&z, "t"),
    );
    let zm: Value = serde_json::from_slice(&oci_blob(&z, &layout_digest(&z, "t"))).unwrap();
    assert_eq!(zm["config"]["digest"], built.config.digest);
    for (l, b) in zm["layers"].as_array().unwrap().iter().zip(&built.layers) {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert_ne!(l["digest"], b.blob.digest);
    }
    let g = env.path("g");
    env.copy(
        &["--dest-compress-format", "gzip"],
        &oci(&z, "t"),
        &oci(&g, "t"),
    );
    let gm: Value = serde_json::from_slice(&oci_blob(&g, &layout_digest(&g, "t"))).unwrap();
    assert_eq!(gm["config"]["digest"], built.config.digest);
    for (i, name) in [(&z, "local/zstd:1"), (&g, "local/gzip:1")] {
        env.copy(&[], &oci(i, "t"), &format!("hoist:{name}"));
        env.ok(&[
            "unpack",
            name,
            env.path(&name.replace(['/', ':'], "-")).to_str().unwrap(),
        ]);
    }
    // v2s2 cannot carry zstd.
    let e = env.fails(&[
        "copy",
        "--format",
        "v2s2",
        &oci(&z, "t"),
        &oci(&env.path("x"), "t"),
    ]);
    assert!(e.contains("zstd"), "{e}");
}

#[test]
fn all_copies_every_platform_and_default_picks_one() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_index_spec(&images::sample_index(), &reg, "ns/idx:v1").unwrap();
    let env = Env::new();
    let src = format!("docker://{}", reg.image_ref("ns/idx:v1"));

    let all = env.path("all");
    let d = env.copy(&["--all"], &src, &oci(&all, "i"));
    assert_eq!(d, built.index.digest);
    assert_eq!(oci_blob(&all, &built.index.digest), built.index_bytes);
    for img in &built.images {
        assert_layout_has(&all, img);
    }
    // skopeo reads the whole index back.
    let s = env.path("s");
    skopeo::skopeo_copy(&oci(&all, "i"), &oci(&s, "i"), None, None, true).unwrap();
    assert_eq!(layout_digest(&s, "i"), built.index.digest);

    // Without --all: the requested platform's image alone.
    let one = env.path("one");
    let d = env.copy(&["--platform", "linux/arm64/v8"], &src, &oci(&one, "i"));
    let arm = &built.images[1];
    assert_eq!(d, arm.manifest.digest);
    assert_layout_has(&one, arm);
    assert!(
        !one.join("blobs/sha256")
            .join(&built.images[0].layers[0].blob.digest[7..])
            .exists()
    );

    // --all into the store: every image recorded, the name on one of them.
    env.copy(&["--all"], &src, "hoist:local/idx:1");
    let ids: Vec<String> = built
        .images
        .iter()
        .map(|i| i.config.digest.clone())
        .collect();
    for id in &ids {
        env.ok(&["inspect", id]);
    }
    // `hoist images` lists the name; the other platforms are part of it, listed with -a.
    let listed = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["images", "--format", "json"];
        args.extend_from_slice(extra);
        let v: Value = serde_json::from_slice(&env.ok(&args).stdout).unwrap();
        v.as_array().unwrap().clone()
    };
    let rows = listed(&[]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["Digest"], built.index.digest);
    let rows = listed(&["-a"]);
    assert_eq!(rows.len(), built.images.len(), "{rows:?}");
    assert!(rows.iter().all(|r| r["Digest"] == built.index.digest));
    // And out again with --all: the index as it was, every platform with it (before, the
    // named image alone went out).
    let back = env.path("back");
    let d = env.copy(&["--all"], "hoist:local/idx:1", &oci(&back, "i"));
    assert_eq!(d, built.index.digest);
    assert_eq!(oci_blob(&back, &built.index.digest), built.index_bytes);
    for img in &built.images {
        assert_layout_has(&back, img);
    }
    env.ok(&[
        "-q",
        "push",
        "--all",
        "local/idx:1",
        &reg.image_ref("ns/pushed:v1"),
    ]);
    let raw = skopeo::run_skopeo(&[
        "inspect".into(),
        "--raw".into(),
        "--tls-verify=false".into(),
        format!("docker://{}", reg.image_ref("ns/pushed:v1")),
    ])
    .unwrap();
    assert_eq!(raw, built.index_bytes, "pushed: the index byte for byte");

    // hoist save --all: the index in an oci-archive, every platform with it, which a copy
    // --all takes back into another store whole.
    let saved = env.path("all.tar");
    env.ok(&[
        "-q",
        "save",
        "--all",
        "--format",
        "oci-archive",
        "-o",
        saved.to_str().unwrap(),
        "local/idx:1",
    ]);
    let other = Env::new();
    let d = other.copy(
        &["--all"],
        &format!("oci-archive:{}", saved.display()),
        "hoist:again/idx:1",
    );
    assert_eq!(d, built.index.digest);
    let d = other.copy(&["--all"], "hoist:again/idx:1", &oci(&other.path("o"), "i"));
    assert_eq!(d, built.index.digest);
    let docker_tar = env.path("x.tar");
    let out = env.run(&[
        "save",
        "--all",
        "-o",
        docker_tar.to_str().unwrap(),
        "local/idx:1",
    ]);
    assert!(!docker_tar.exists(), "an archive was written");
    assert!(!out.status.success(), "--all into a docker-archive");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--all needs --format oci-archive"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A store holding one platform of the index refuses --all before anything moves.
    let partial = Env::new();
    partial.ok(&["-q", "pull", &reg.image_ref("ns/idx:v1")]);
    let refused = partial.path("refused");
    let out = partial.run(&[
        "copy",
        "--all",
        &reg.image_ref("ns/idx:v1"),
        &oci(&refused, "i"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("manifests index {} lists", built.index.digest)),
        "{err}"
    );
    assert!(!refused.exists(), "the refused layout was left behind");
    support::assert_fsck_clean(partial.dir.path(), &partial.store());
    // Without --all it is the image it was.
    let d = partial.copy(&[], &reg.image_ref("ns/idx:v1"), &oci(&refused, "i"));
    assert!(built.images.iter().any(|i| i.manifest.digest == d), "{d}");
}

#[test]
fn signatures_are_carried_by_dir_and_refused_where_they_would_break() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    skopeo::push_spec(&images::sample_docker(), &reg, "ns/sig:v1").unwrap();
    let env = Env::new();
    let d = env.path("d");
    env.copy(
        &[],
        &format!("docker://{}", reg.image_ref("ns/sig:v1")),
        &dir_ref(&d),
    );
    std::fs::write(d.join("signature-1"), b"not really a signature").unwrap();
    std::fs::write(d.join("signature-2"), b"another").unwrap();

    let e = env.path("e");
    env.copy(&["--preserve-signatures"], &dir_ref(&d), &dir_ref(&e));
    assert_eq!(
        std::fs::read(e.join("signature-1")).unwrap(),
        b"not really a signature"
    );
    assert_eq!(std::fs::read(e.join("signature-2")).unwrap(), b"another");
    // Without the flag they stay behind.
    let f = env.path("f");
    env.copy(&[], &dir_ref(&d), &dir_ref(&f));
    assert!(!f.join("signature-1").exists());
    // A conversion would invalidate them; an OCI layout cannot hold them.
    let err = env.fails(&[
        "copy",
        "--preserve-signatures",
        "--format",
        "oci",
        &dir_ref(&d),
        &dir_ref(&env.path("g")),
    ]);
    assert!(err.contains("cannot preserve the signatures"), "{err}");
    assert!(!env.path("g").exists(), "nothing left behind");
    let err = env.fails(&[
        "copy",
        "--preserve-signatures",
        &dir_ref(&d),
        &oci(&env.path("o"), "x"),
    ]);
    assert!(err.contains("signature"), "{err}");
}

#[test]
fn bad_layouts_fail_clearly_and_change_nothing() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/bad:v1").unwrap();
    let env = Env::new();
    let good = env.path("good");
    env.copy(
        &[],
        &format!("docker://{}", reg.image_ref("ns/bad:v1")),
        &oci(&good, "t"),
    );
    let layer = built.layers[1].blob.digest.clone();

    let variant = |name: &str, f: &dyn Fn(&Path)| -> PathBuf {
        let p = env.path(name);
        let status = std::process::Command::new("cp")
            .args(["-a", good.to_str().unwrap(), p.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        f(&p.join("blobs/sha256").join(&layer[7..]));
        p
    };
    let missing = variant("missing", &|b| std::fs::remove_file(b).unwrap());
    let wrong = variant("wrong", &|b| {
        let mut bytes = std::fs::read(b).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(b, bytes).unwrap();
    });
    let outside = env.path("outside-blob");
    std::fs::copy(good.join("blobs/sha256").join(&layer[7..]), &outside).unwrap();
    let link = variant("link", &|b| {
        std::fs::remove_file(b).unwrap();
        std::os::unix::fs::symlink(&outside, b).unwrap();
    });
    // A layout holding another image (the same one recompressed: no layer in common).
    let dest = env.path("dest");
    env.copy(
        &["--dest-compress-format", "zstd"],
        &oci(&good, "t"),
        &oci(&dest, "keep"),
    );
    let index_before = std::fs::read(dest.join("index.json")).unwrap();

    for (layout, want) in [
        (&missing, layer.as_str()),
        (&wrong, "digest mismatch"),
        (&link, "symbolic link"),
    ] {
        // Into the store: no image, no name.
        let e = env.fails(&["copy", &oci(layout, "t"), "hoist:local/bad:1"]);
        assert!(e.contains(want), "{}: {e}", layout.display());
        let rows: Value =
            serde_json::from_slice(&env.ok(&["images", "--format", "json"]).stdout).unwrap();
        assert_eq!(
            rows.as_array().map(Vec::len),
            Some(0),
            "store unchanged: {rows}"
        );
        // Into a layout: index.json as it was.
        let e = env.fails(&["copy", &oci(layout, "t"), &oci(&dest, "new")]);
        assert!(e.contains(want), "{e}");
        assert_eq!(
            std::fs::read(dest.join("index.json")).unwrap(),
            index_before
        );
        // Into dir:: nothing created.
        let e = env.fails(&["copy", &oci(layout, "t"), &dir_ref(&env.path("never"))]);
        assert!(e.contains(want), "{e}");
        assert!(!env.path("never").exists());
    }
    // A dir: without manifest.json, an oci: without the name.
    std::fs::create_dir_all(env.path("empty")).unwrap();
    let e = env.fails(&["copy", &dir_ref(&env.path("empty")), &oci(&dest, "x")]);
    assert!(e.contains("manifest.json"), "{e}");
    let e = env.fails(&["copy", &oci(&good, "nope"), &oci(&dest, "x")]);
    assert!(e.contains("nope"), "{e}");
    // A non-empty directory that is not a dir: layout is never overwritten.
    let e = env.fails(&["copy", &oci(&good, "t"), &dir_ref(&good)]);
    assert!(e.contains("refusing to overwrite"), "{e}");
}

fn sk_json(args: &[&str]) -> Value {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    serde_json::from_slice(&skopeo::run_skopeo(&args).unwrap_or_else(|e| panic!("{e}"))).unwrap()
}

/// The manifest an OCI layout names `tag`, parsed.
fn layout_manifest(dir: &Path, tag: &str) -> Value {
    serde_json::from_slice(&oci_blob(dir, &layout_digest(dir, tag))).unwrap()
}

fn layer_digests(m: &Value) -> Vec<String> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// No staging directory or temp archive is left in `dir`.
fn assert_no_temp(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hoist-archive-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn copy_into_archives_is_read_by_skopeo_and_hoist_load() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    // A Docker schema 2 image with gzip layers, and an OCI one.
    let dock = skopeo::push_spec(&images::sample_docker(), &reg, "ns/dock:v1").unwrap();
    let ocim = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/ocim:v1").unwrap();
    let env = Env::new();
    let src = format!("docker://{}", reg.image_ref("ns/dock:v1"));

    // docker:// → docker-archive:F:NAME: layers decompressed (digest = diff ID), config kept.
    let da = env.path("d.tar");
    let name = "example.com/ns/dock:v1";
    env.copy(
        &[],
        &src,
        &format!("docker-archive:{}:{name}", da.display()),
    );
    let r = format!("docker-archive:{}", da.display());
    let inspected = sk_json(&["inspect", &r]);
    assert_eq!(inspected["Layers"], serde_json::json!(dock.diff_ids()));
    let cfg =
        skopeo::run_skopeo(&["inspect".into(), "--config".into(), "--raw".into(), r]).unwrap();
    assert_eq!(cfg, dock.config_bytes);
    assert_no_temp(env.dir.path());
    // hoist load reads it: the name, the image ID, the diff IDs.
    env.ok(&["load", "-i", da.to_str().unwrap()]);
    let inspected: Value = serde_json::from_slice(&env.ok(&["inspect", name]).stdout).unwrap();
    assert_eq!(inspected["Id"], dock.config.digest, "{inspected}");
    assert_eq!(inspected["DiffIDs"], serde_json::json!(dock.diff_ids()));

    // What a docker-archive cannot hold is refused before anything is written.
    for (flags, want) in [
        (&["--format", "oci"][..], "v2s2"),
        (&["--dest-compress-format", "gzip"][..], "uncompressed"),
    ] {
        let no = env.path("no.tar");
        let mut args = vec!["copy"];
        args.extend_from_slice(flags);
        let dst = format!("docker-archive:{}", no.display());
        args.extend([src.as_str(), dst.as_str()]);
        let e = env.fails(&args);
        assert!(e.contains(want), "{e}");
        assert!(!no.exists());
    }
    assert_no_temp(env.dir.path());

    // docker:// → oci-archive:F:TAG: skopeo copies it out with every digest kept.
    let oa = env.path("o.tar");
    let d = env.copy(
        &[],
        &format!("docker://{}", reg.image_ref("ns/ocim:v1")),
        &format!("oci-archive:{}:v1", oa.display()),
    );
    assert_eq!(d, ocim.manifest.digest);
    let s = env.path("s");
    skopeo::run_skopeo(&[
        "copy".into(),
        "--quiet".into(),
        "--preserve-digests".into(),
        format!("oci-archive:{}:v1", oa.display()),
        oci(&s, "x"),
    ])
    .unwrap();
    assert_eq!(layout_digest(&s, "x"), ocim.manifest.digest);
    assert_layout_has(&s, &ocim);
    // Writing it again replaces the file (same bytes: the layout is deterministic).
    let before = std::fs::read(&oa).unwrap();
    env.copy(
        &[],
        &format!("docker://{}", reg.image_ref("ns/ocim:v1")),
        &format!("oci-archive:{}:v1", oa.display()),
    );
    assert_eq!(std::fs::read(&oa).unwrap(), before);
    assert_no_temp(env.dir.path());
}

#[test]
fn copy_from_skopeo_archives_and_round_trip_through_docker_archive() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_docker(), &reg, "ns/rt:v1").unwrap();
    let env = Env::new();
    let r = reg.image_ref("ns/rt:v1");
    let opts = SkopeoOpts::for_registry(&reg);

    // hoist reads skopeo's docker-archive (by its only image and by its tag).
    let sd = env.path("sk-d.tar");
    skopeo::skopeo_copy(
        &r,
        &format!("docker-archive:{}:example.com/sk/d:v1", sd.display()),
        Some(&opts),
        None,
        false,
    )
    .unwrap();
    let h = env.path("from-sd");
    let d1 = env.copy(
        &[],
        &format!("docker-archive:{}", sd.display()),
        &oci(&h, "t"),
    );
    let d2 = env.copy(
        &[],
        &format!("docker-archive:{}:example.com/sk/d:v1", sd.display()),
        &oci(&h, "u"),
    );
    assert_eq!(d1, d2);
    // Converted to OCI (an oci: destination's default) over the same blobs.
    let m = layout_manifest(&h, "t");
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["config"]["digest"], built.config.digest);
    assert_eq!(oci_blob(&h, &built.config.digest), built.config_bytes);
    assert_eq!(layer_digests(&m), built.diff_ids());

    // hoist reads skopeo's oci-archive: compressed layers and config kept.
    let so = env.path("sk-o.tar");
    skopeo::skopeo_copy(
        &r,
        &format!("oci-archive:{}:v1", so.display()),
        Some(&opts),
        None,
        false,
    )
    .unwrap();
    let h2 = env.path("from-so");
    env.copy(
        &[],
        &format!("oci-archive:{}:v1", so.display()),
        &oci(&h2, "t"),
    );
    let m = layout_manifest(&h2, "t");
    assert_eq!(m["config"]["digest"], built.config.digest);
    assert_eq!(layer_digests(&m), built.layer_digests());

    // registry → oci → docker-archive → oci → registry. What survives: the config (so
    // the image ID) and the diff IDs, all the way; the compressed layer digests and the
    // manifest digest up to the docker-archive, which holds layers uncompressed (its
    // layer digests are the diff IDs, its manifest a new schema 2 one); from there on,
    // every digest is kept (the manifest read from the archive reaches the registry
    // byte for byte).
    let a = env.path("a");
    assert_eq!(
        env.copy(
            &["--format", "v2s2"],
            &format!("docker://{r}"),
            &oci(&a, "t")
        ),
        built.manifest.digest
    );
    assert_layout_has(&a, &built);
    let da = env.path("rt.tar");
    env.copy(
        &[],
        &oci(&a, "t"),
        &format!("docker-archive:{}:example.com/rt/img:v1", da.display()),
    );
    let b = env.path("b");
    let bd = env.copy(
        &[],
        &format!("docker-archive:{}", da.display()),
        &oci(&b, "t"),
    );
    let bm = layout_manifest(&b, "t");
    assert_eq!(bm["config"]["digest"], built.config.digest);
    assert_eq!(layer_digests(&bm), built.diff_ids());
    let back = reg.image_ref("rt/back:v1");
    let pushed = env.copy(&[], &oci(&b, "t"), &format!("docker://{back}"));
    assert_eq!(pushed, bd);
    let raw = skopeo::skopeo_inspect_raw(&back, &opts).unwrap();
    assert_eq!(raw, oci_blob(&b, &bd));
    let cfg = skopeo::skopeo_inspect_config_raw(&back, &opts).unwrap();
    assert_eq!(cfg, built.config_bytes);
    // The same archive read twice gives the same manifest (it is synthesised
    // deterministically).
    let b2 = env.path("b2");
    assert_eq!(
        env.copy(
            &[],
            &format!("docker-archive:{}", da.display()),
            &oci(&b2, "t")
        ),
        bd
    );
}

#[test]
fn bad_archives_are_refused_by_copy_and_change_nothing() {
    let mut cases: Vec<(&str, evil_archive::ArchiveCase)> = evil_archive::docker_cases()
        .into_iter()
        .map(|c| ("docker-archive", c))
        .collect();
    cases.extend(
        evil_archive::oci_cases()
            .into_iter()
            .map(|c| ("oci-archive", c)),
    );
    for (transport, case) in &cases {
        // A fresh store each time: a copy never reads a blob the destination has, so a
        // bad blob that an earlier case's copy stored verified would not be looked at.
        let env = Env::new();
        let file = env.path("evil.tar");
        std::fs::write(&file, &case.bytes).unwrap();
        let src = format!("{transport}:{}", file.display());
        let e = env.fails(&["copy", &src, "hoist:local/evil:1"]);
        assert!(
            e.contains(case.expect.as_str()) && e.contains("evil.tar"),
            "{}: error should contain {:?} and the archive's name:\n{e}",
            case.name,
            case.expect
        );
        let rows: Value =
            serde_json::from_slice(&env.ok(&["images", "--format", "json"]).stdout).unwrap();
        assert_eq!(
            rows.as_array().map(Vec::len),
            Some(0),
            "{}: {rows}",
            case.name
        );
        let out = env.path("never.tar");
        env.fails(&["copy", &src, &format!("docker-archive:{}", out.display())]);
        assert!(!out.exists(), "{}", case.name);
        assert_no_temp(env.dir.path());
    }
}

/// The tags of `repo` on `reg` (none when the registry does not know the repository).
fn registry_tags(reg: &Registry, repo: &str) -> Vec<String> {
    let r = hoist_testkit::http::request(
        reg.addr(),
        "GET",
        &format!("/v2/{repo}/tags/list"),
        &[],
        b"",
    )
    .unwrap();
    if r.status == 404 {
        return Vec::new();
    }
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut tags: Vec<String> = r.json().unwrap()["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    tags.sort();
    tags
}

/// A cosign-style signature of `signed` (`sha256:HEX`) in a new OCI layout at `dir`, tagged
/// `sig`: an OCI image manifest whose one layer is the simple-signing payload, annotated
/// with a (fake) base64 signature. Returns the manifest's digest.
fn write_cosign_signature(dir: &Path, signed: &str, image: &str) -> String {
    let layout = images::OciLayout::create(dir).unwrap();
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": image },
            "image": { "docker-manifest-digest": signed },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap();
    let payload_digest = layout.put_blob(&payload).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [payload_digest] },
    }))
    .unwrap();
    let config_digest = layout.put_blob(&config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": images::OCI_MANIFEST,
        "config": {
            "mediaType": images::OCI_CONFIG,
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": payload.len(),
            "annotations": {
                "dev.cosignproject.cosign/signature":
                    "MEUCIQDhoistTestSignatureNotRealButBase64AiBzaWduYXR1cmUgYnl0ZXM=",
            },
        }],
    }))
    .unwrap();
    let digest = layout.put_blob(&manifest).unwrap();
    let desc = images::BlobInfo {
        media_type: images::OCI_MANIFEST.to_owned(),
        digest: digest.clone(),
        size: manifest.len() as u64,
    };
    layout.tag(&desc, "sig").unwrap();
    digest
}

#[test]
fn preserve_signatures_carries_the_cosign_sig_tag_between_registries() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    // An OCI image (so that --format v2s2 really changes its manifest).
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, "src/app:v1").unwrap();
    let opts = SkopeoOpts::for_registry(&reg);
    let digest = &built.manifest.digest;
    let raw = skopeo::skopeo_inspect_raw(&reg.image_ref("src/app:v1"), &opts).unwrap();
    assert_eq!(&images::sha256_digest(&raw), digest);
    let sig_tag = format!("sha256-{}.sig", &digest["sha256:".len()..]);

    // The cosign signature, pushed next to the image under its `.sig` tag.
    let env = Env::new();
    let sig_dir = env.path("sig");
    let sig_digest = write_cosign_signature(&sig_dir, digest, &reg.image_ref("src/app"));
    skopeo::push_with_skopeo(
        &sig_dir,
        "sig",
        &reg.image_ref(&format!("src/app:{sig_tag}")),
        &opts,
    )
    .unwrap();
    let src_sig =
        skopeo::skopeo_inspect_raw(&reg.image_ref(&format!("src/app:{sig_tag}")), &opts).unwrap();
    assert_eq!(images::sha256_digest(&src_sig), sig_digest);
    assert_eq!(
        registry_tags(&reg, "src/app"),
        [sig_tag.clone(), "v1".into()]
    );

    let src = format!("docker://{}", reg.image_ref("src/app:v1"));
    // --preserve-signatures: the image with its digest, and the `.sig` tag byte for byte.
    let out = env.copy(
        &["--preserve-signatures"],
        &src,
        &format!("docker://{}", reg.image_ref("dst/app:v1")),
    );
    assert_eq!(&out, digest);
    assert_eq!(
        registry_tags(&reg, "dst/app"),
        [sig_tag.clone(), "v1".into()]
    );
    let dst_raw = skopeo::skopeo_inspect_raw(&reg.image_ref("dst/app:v1"), &opts).unwrap();
    assert_eq!(dst_raw, raw);
    let dst_sig =
        skopeo::skopeo_inspect_raw(&reg.image_ref(&format!("dst/app:{sig_tag}")), &opts).unwrap();
    assert_eq!(dst_sig, src_sig);
    // The signature's blobs came along: skopeo copies the whole artifact out of dst/app.
    let back = env.path("back");
    skopeo::skopeo_copy(
        &reg.image_ref(&format!("dst/app:{sig_tag}")),
        &oci(&back, "s"),
        Some(&opts),
        None,
        false,
    )
    .unwrap();
    assert_eq!(layout_digest(&back, "s"), sig_digest);
    for entry in std::fs::read_dir(sig_dir.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            std::fs::read(back.join("blobs/sha256").join(entry.file_name())).unwrap(),
            std::fs::read(entry.path()).unwrap(),
            "{:?}",
            entry.file_name()
        );
    }

    // Without the flag the signature stays behind.
    let out = env.copy(
        &[],
        &src,
        &format!("docker://{}", reg.image_ref("plain/app:v1")),
    );
    assert_eq!(&out, digest);
    assert_eq!(registry_tags(&reg, "plain/app"), ["v1".to_owned()]);

    // A conversion would change the signed manifest: refused, nothing tagged.
    let err = env.fails(&[
        "copy",
        "--preserve-signatures",
        "--format",
        "v2s2",
        &src,
        &format!("docker://{}", reg.image_ref("conv/app:v1")),
    ]);
    assert!(
        err.contains("cannot preserve the signatures") && err.contains(digest.as_str()),
        "{err}"
    );
    assert_eq!(registry_tags(&reg, "conv/app"), Vec::<String>::new());
}

/// `--preserve-digests`: a Docker schema 2 image copied to an `oci:` layout keeps its
/// manifest byte for byte (as skopeo 1.9 writes it with the same flag) instead of being
/// converted to OCI; a conversion or recompression asked for with it is refused before
/// any blob moves (skopeo 1.9 silently ignores `--format`/`--dest-compress-format` there).
#[test]
fn preserve_digests_keeps_every_manifest_as_skopeo_does_and_refuses_changes() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let spec = images::sample_multi_layer().format(images::ImageFormat::DockerV2S2);
    let built = skopeo::push_spec(&spec, &reg, "ns/keep:v1").unwrap();
    let env = Env::new();
    let src = format!("docker://{}", reg.image_ref("ns/keep:v1"));

    let (h, s) = (env.path("h"), env.path("s"));
    let printed = env.copy(&["--preserve-digests"], &src, &oci(&h, "t"));
    assert_eq!(printed, built.manifest.digest);
    assert_eq!(layout_digest(&h, "t"), built.manifest.digest);
    assert_eq!(oci_blob(&h, &built.manifest.digest), built.manifest_bytes);
    assert_layout_has(&h, &built);
    skopeo::skopeo_copy(
        &reg.image_ref("ns/keep:v1"),
        &oci(&s, "t"),
        Some(&SkopeoOpts::for_registry(&reg).preserve_digests(true)),
        None,
        false,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(h.join("index.json")).unwrap(),
        std::fs::read(s.join("index.json")).unwrap(),
        "the same index.json as skopeo's"
    );
    // Without it, an oci: layout gets the image converted to OCI.
    let converted = env.copy(&[], &src, &oci(&env.path("c"), "t"));
    assert_ne!(converted, built.manifest.digest);

    for (extra, why) in [
        (&["--format", "oci"][..], "it would be written as oci"),
        (
            &["--dest-compress-format", "zstd"][..],
            "its layers would be recompressed",
        ),
    ] {
        let dir = env.path(&format!("refused-{}", extra[0].trim_start_matches('-')));
        let mut args = vec!["copy", "--preserve-digests"];
        args.extend_from_slice(extra);
        let dst = oci(&dir, "t");
        args.extend([src.as_str(), dst.as_str()]);
        let out = env.run(&args);
        assert!(!out.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("its digest is to be preserved") && err.contains(why),
            "{err}"
        );
        // Nothing moved: the layout it would have made is not there.
        assert!(!dir.exists(), "{extra:?}: {} left behind", dir.display());
    }
}
