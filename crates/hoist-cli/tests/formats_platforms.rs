//! What other tools write and read: `oci:` and `oci-archive:` destinations hold OCI
//! manifests by default (skopeo 1.9 and umoci 0.4.7 read nothing else from a layout), index
//! entries without a platform are chosen by pull, copy and load alike, a failed platform
//! choice names every entry and why it was passed over, and non-distributable layer media
//! types pull, unpack and build like the others. Real Distribution registry, skopeo and
//! umoci on loopback.

mod support;

use support::Env;

use std::path::{Path, PathBuf};

use hoist_testkit::images::{self, Entry, ImageSpec, IndexSpec, LayerSpec};
use hoist_testkit::registry::Registry;
use hoist_testkit::require_peers;
use hoist_testkit::skopeo::{self, SkopeoOpts};
use serde_json::Value;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn oci(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The descriptor an OCI layout names `tag`.
fn layout_entry(dir: &Path, tag: &str) -> Value {
    let idx = read_json(&dir.join("index.json"));
    idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {idx}"))
        .clone()
}

fn blob(dir: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap()
}

fn layout_manifest(dir: &Path, tag: &str) -> Value {
    let d = layout_entry(dir, tag)["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    serde_json::from_slice(&blob(dir, &d)).unwrap()
}

fn run_ok(program: &str, args: &[&str]) -> Vec<u8> {
    support::run_ok(std::process::Command::new(program).args(args))
}

fn skopeo_json(args: &[&str]) -> Value {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    serde_json::from_slice(&skopeo::run_skopeo(&args).unwrap()).unwrap()
}

/// skopeo and umoci both read the image the layout `dir` names `tag`, and umoci's rootfs
/// has `file`.
fn peers_read_layout(env: &Env, dir: &Path, tag: &str, file: &str) {
    let entry = layout_entry(dir, tag);
    let inspected = skopeo_json(&["inspect", &oci(dir, tag)]);
    assert_eq!(inspected["Digest"], entry["digest"], "{}", dir.display());
    let other = env.path(&format!(
        "{}-skopeo",
        dir.file_name().unwrap().to_str().unwrap()
    ));
    skopeo::run_skopeo(&[
        "copy".into(),
        "--quiet".into(),
        "--preserve-digests".into(),
        oci(dir, tag),
        oci(&other, "x"),
    ])
    .unwrap();
    assert_eq!(layout_entry(&other, "x")["digest"], entry["digest"]);
    let ls = run_ok("umoci", &["ls", "--layout", s(dir)]);
    assert!(
        String::from_utf8_lossy(&ls)
            .lines()
            .any(|l| l.trim() == tag),
        "umoci ls: {}",
        String::from_utf8_lossy(&ls)
    );
    let bundle = env.path(&format!(
        "{}-bundle",
        dir.file_name().unwrap().to_str().unwrap()
    ));
    run_ok(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{tag}", dir.display()),
            s(&bundle),
        ],
    );
    assert!(bundle.join("rootfs").join(file).is_file(), "{file}");
}

/// Every layer and the config of the OCI manifest `m` carry OCI media types, over the
/// config blob `config`.
fn assert_oci_manifest(m: &Value, config: &str) {
    assert_eq!(m["mediaType"], OCI_MANIFEST, "{m}");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(m["config"]["digest"], config, "the config blob is kept");
    for l in m["layers"].as_array().unwrap() {
        let mt = l["mediaType"].as_str().unwrap();
        assert!(
            mt.starts_with("application/vnd.oci.image.layer.v1.tar"),
            "{mt}"
        );
    }
}

#[test]
fn docker_images_copied_to_oci_are_read_by_skopeo_and_umoci() {
    require_peers!(Peer::Registry, Peer::Skopeo, Peer::Umoci);
    let reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_docker(), &reg, "ns/dock:v1").unwrap();
    let env = Env::new();
    let r = reg.image_ref("ns/dock:v1");
    let opts = SkopeoOpts::for_registry(&reg);
    // The same Docker schema 2 image from a registry, a docker-archive and a dir: layout,
    // each written by skopeo.
    let da = env.path("d.tar");
    skopeo::skopeo_copy(
        &r,
        &format!("docker-archive:{}:example.com/ns/d:v1", da.display()),
        Some(&opts),
        None,
        false,
    )
    .unwrap();
    let dd = env.path("dirsrc");
    skopeo::skopeo_copy(
        &r,
        &format!("dir:{}", dd.display()),
        Some(&opts),
        None,
        false,
    )
    .unwrap();
    assert_eq!(
        read_json(&dd.join("manifest.json"))["mediaType"],
        DOCKER_MANIFEST
    );
    for (name, src) in [
        ("from-registry", format!("docker://{r}")),
        ("from-archive", format!("docker-archive:{}", da.display())),
        ("from-dir", format!("dir:{}", dd.display())),
    ] {
        let out = env.path(name);
        let d = env.copy(&[], &src, &oci(&out, "t"));
        let entry = layout_entry(&out, "t");
        assert_eq!(entry["digest"], d.as_str(), "{name}");
        assert_eq!(entry["mediaType"], OCI_MANIFEST, "{name}");
        assert_oci_manifest(&layout_manifest(&out, "t"), &built.config.digest);
        assert_eq!(blob(&out, &built.config.digest), built.config_bytes);
        peers_read_layout(&env, &out, "t", "usr/bin/app");
        // hoist reads back what it wrote, and the image ID (config digest) is kept.
        env.copy(&[], &oci(&out, "t"), &format!("hoist:{name}:v1"));
        assert_eq!(
            env.json(&["inspect", &format!("{name}:v1")])["Id"],
            built.config.digest
        );
    }
    // The registry's and the dir:'s compressed layers are kept byte for byte: the same
    // manifest, whichever the source.
    assert_eq!(
        layout_entry(&env.path("from-registry"), "t")["digest"],
        layout_entry(&env.path("from-dir"), "t")["digest"]
    );

    // oci-archive: destinations convert alike, and skopeo reads the archive.
    let oa = env.path("o.tar");
    let d = env.copy(
        &[],
        &format!("docker://{r}"),
        &format!("oci-archive:{}:t", oa.display()),
    );
    let inspected = skopeo_json(&["inspect", &format!("oci-archive:{}:t", oa.display())]);
    assert_eq!(inspected["Digest"], d.as_str());
    assert_eq!(
        layout_entry(&env.path("from-registry"), "t")["digest"],
        d.as_str()
    );

    // --format v2s2 keeps the Docker manifest, byte for byte.
    let keep = env.path("keep");
    let d = env.copy(
        &["--format", "v2s2"],
        &format!("docker://{r}"),
        &oci(&keep, "t"),
    );
    assert_eq!(d, built.manifest.digest);
    assert_eq!(layout_entry(&keep, "t")["mediaType"], DOCKER_MANIFEST);
    assert_eq!(blob(&keep, &d), built.manifest_bytes);

    // An OCI image is written as it came (digest kept) by default.
    let oci_img = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/ocim:v1").unwrap();
    let o = env.path("ocim");
    let d = env.copy(
        &[],
        &format!("docker://{}", reg.image_ref("ns/ocim:v1")),
        &oci(&o, "t"),
    );
    assert_eq!(d, oci_img.manifest.digest);
}

#[test]
fn a_docker_manifest_list_copied_whole_to_oci_becomes_an_oci_index() {
    require_peers!(Peer::Registry, Peer::Skopeo, Peer::Umoci);
    let reg = Registry::plain();
    let built =
        skopeo::push_index_spec(&images::sample_index_docker(), &reg, "ns/list:v1").unwrap();
    let env = Env::new();
    let out = env.path("all");
    env.copy(
        &["--all"],
        &format!("docker://{}", reg.image_ref("ns/list:v1")),
        &oci(&out, "t"),
    );
    let entry = layout_entry(&out, "t");
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let idx: Value =
        serde_json::from_slice(&blob(&out, entry["digest"].as_str().unwrap())).unwrap();
    let members = idx["manifests"].as_array().unwrap();
    assert_eq!(members.len(), built.images.len());
    for (m, img) in members.iter().zip(&built.images) {
        assert_eq!(m["mediaType"], OCI_MANIFEST);
        let doc: Value =
            serde_json::from_slice(&blob(&out, m["digest"].as_str().unwrap())).unwrap();
        assert_oci_manifest(&doc, &img.config.digest);
    }
    // skopeo copies every instance out of it.
    skopeo::run_skopeo(&[
        "copy".into(),
        "--quiet".into(),
        "--all".into(),
        "--preserve-digests".into(),
        oci(&out, "t"),
        oci(&env.path("sk"), "x"),
    ])
    .unwrap();
    assert_eq!(
        layout_entry(&env.path("sk"), "x")["digest"],
        entry["digest"]
    );
}

/// An OCI layout at `dir` holding `spec` tagged `t`, and the same as an oci-archive.
fn index_layout(env: &Env, name: &str, spec: &IndexSpec) -> (PathBuf, PathBuf, images::BuiltIndex) {
    let dir = env.path(name);
    let built = spec.write_layout(&dir, "t").unwrap();
    let tar = env.path(&format!("{name}.tar"));
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(st.success());
    (dir, tar, built)
}

fn image(arch: &str, file: &str) -> ImageSpec {
    ImageSpec::oci()
        .platform("linux", arch, None)
        .layer(LayerSpec::gzip([Entry::file(file, format!("{arch}\n"))]))
}

/// The host's platform in Go's names (what `hoist load` chooses).
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn index_entries_without_platform_are_chosen_by_pull_copy_and_load() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let env = Env::new();

    // 1. The only image has no platform: every path picks it, whatever is asked for.
    let only =
        IndexSpec::new(images::ImageFormat::Oci).image_without_platform(image("s390x", "only"));
    let built = skopeo::push_index_spec(&only, &reg, "ns/only:v1").unwrap();
    let want = &built.images[0];
    let r = reg.image_ref("ns/only:v1");
    env.ok(&["-q", "pull", "--platform", "linux/arm64", &r]);
    assert_eq!(env.json(&["inspect", &r])["Id"], want.config.digest);
    let d = env.copy(&[], &format!("docker://{r}"), &oci(&env.path("c1"), "t"));
    assert_eq!(d, want.manifest.digest);
    let (dir, tar, _) = index_layout(&env, "only", &only);
    let d = env.copy(
        &["--platform", "linux/arm64"],
        &oci(&dir, "t"),
        &oci(&env.path("c2"), "t"),
    );
    assert_eq!(d, want.manifest.digest);
    let d = env.copy(
        &[],
        &format!("oci-archive:{}:t", tar.display()),
        &oci(&env.path("c3"), "t"),
    );
    assert_eq!(d, want.manifest.digest);
    let load = Env::new();
    load.ok(&["-q", "load", "-i", s(&tar)]);
    let images = load.json(&["images", "--format", "json"]);
    assert!(
        images.to_string().contains(&want.config.digest),
        "load chose the no-platform image: {images}"
    );

    // 2. An exact match and a no-platform entry (listed first): the exact match wins.
    let host = host_arch();
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    let both = IndexSpec::new(images::ImageFormat::Oci)
        .image_without_platform(image(other, "unknown"))
        .image(image(host, "exact"));
    let built = skopeo::push_index_spec(&both, &reg, "ns/both:v1").unwrap();
    let exact = &built.images[1];
    let r = reg.image_ref("ns/both:v1");
    let platform = format!("linux/{host}");
    env.ok(&["-q", "pull", "--platform", &platform, &r]);
    assert_eq!(env.json(&["inspect", &r])["Id"], exact.config.digest);
    let d = env.copy(
        &["--platform", &platform],
        &format!("docker://{r}"),
        &oci(&env.path("c4"), "t"),
    );
    assert_eq!(d, exact.manifest.digest);
    let (_, tar, _) = index_layout(&env, "both", &both);
    let load = Env::new();
    load.ok(&["-q", "load", "-i", s(&tar)]);
    let images = load.json(&["images", "--format", "json"]).to_string();
    assert!(images.contains(&exact.config.digest), "{images}");
    assert!(!images.contains(&built.images[0].config.digest), "{images}");
    // Asked for another platform, the no-platform entry is the one left.
    let d = env.copy(
        &["--platform", "linux/ppc64le"],
        &format!("docker://{r}"),
        &oci(&env.path("c5"), "t"),
    );
    assert_eq!(d, built.images[0].manifest.digest);
}

#[test]
fn no_matching_platform_lists_every_entry_and_why() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let env = Env::new();
    let spec = IndexSpec::new(images::ImageFormat::Oci)
        .image(image("arm64", "a"))
        .image(ImageSpec::oci().platform("unknown", "unknown", None))
        .entry_annotation("vnd.docker.reference.type", "attestation-manifest");
    let built = skopeo::push_index_spec(&spec, &reg, "ns/nomatch:v1").unwrap();
    let r = reg.image_ref("ns/nomatch:v1");
    let check = |err: &str, extra: Option<&str>| {
        assert!(err.contains("no image for platform linux/s390x"), "{err}");
        assert!(
            err.contains(&format!(
                "{} linux/arm64 (platform does not match)",
                built.images[0].manifest.digest
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "{} unknown/unknown (attestation manifest)",
                built.images[1].manifest.digest
            )),
            "{err}"
        );
        if let Some(e) = extra {
            assert!(err.contains(e), "{err}");
        }
    };
    let err = env.fails(&["-q", "pull", "--platform", "linux/s390x", &r]);
    check(&err, None);
    let err = env.fails(&[
        "copy",
        "--platform",
        "linux/s390x",
        &format!("docker://{r}"),
        &oci(&env.path("x"), "t"),
    ]);
    check(&err, None);
    assert!(!env.path("x").join("index.json").exists());

    // In a layout, an entry with a media type that is no manifest, and no platform, is
    // listed with its reason too.
    let dir = env.path("layout");
    spec.write_layout(&dir, "t").unwrap();
    let idx_digest = layout_entry(&dir, "t")["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut idx: Value = serde_json::from_slice(&blob(&dir, &idx_digest)).unwrap();
    let bogus = built.images[0].config.clone();
    idx["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.example.thing+json",
            "digest": bogus.digest,
            "size": bogus.size,
        }));
    let bytes = serde_json::to_vec(&idx).unwrap();
    let digest = images::sha256_digest(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), &bytes).unwrap();
    let mut top = read_json(&dir.join("index.json"));
    top["manifests"][0]["digest"] = digest.clone().into();
    top["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let err = env.fails(&[
        "copy",
        "--platform",
        "linux/s390x",
        &oci(&dir, "t"),
        &oci(&env.path("y"), "t"),
    ]);
    check(
        &err,
        Some(&format!(
            "{} no platform (media type application/vnd.example.thing+json is not an image manifest)",
            bogus.digest
        )),
    );
    assert!(!env.path("y").join("index.json").exists());
}

#[test]
fn nondistributable_layers_pull_unpack_and_build() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let nd = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    let spec = ImageSpec::oci()
        .layer(
            LayerSpec::uncompressed([Entry::dir("a"), Entry::file("a/plain", "tar\n")])
                .media_type(nd),
        )
        .layer(
            LayerSpec::gzip([Entry::dir("b"), Entry::file("b/gz", "gzip\n")])
                .media_type(&format!("{nd}+gzip")),
        )
        .layer(
            LayerSpec::zstd([
                Entry::dir("c"),
                Entry::file("c/zst", "zstd\n"),
                Entry::whiteout("a/plain"),
            ])
            .media_type(&format!("{nd}+zstd")),
        );
    let built = skopeo::push_spec(&spec, &reg, "ns/nd:v1").unwrap();
    let r = reg.image_ref("ns/nd:v1");
    let env = Env::new();
    env.ok(&["-q", "pull", &r]);
    assert_eq!(env.json(&["inspect", &r])["Id"], built.config.digest);
    let dir = env.path("unpacked");
    env.ok(&["-q", "unpack", &r, s(&dir)]);
    assert_eq!(std::fs::read_to_string(dir.join("b/gz")).unwrap(), "gzip\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("c/zst")).unwrap(),
        "zstd\n"
    );
    assert!(
        !dir.join("a/plain").exists(),
        "whited out by the zstd layer"
    );
    assert!(dir.join("a").is_dir());
    let out = env.json(&["rootfs", &r, "--format", "dir"]);
    let root = PathBuf::from(out["rootfs_path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(root.join("c/zst")).unwrap(),
        "zstd\n"
    );
    assert_eq!(out["layers"].as_array().unwrap().len(), 3);
}
