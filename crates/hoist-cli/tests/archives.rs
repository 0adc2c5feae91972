//! `hoist save` / `hoist load` against the real peers: skopeo reads what hoist writes
//! (`docker-archive:`, `oci-archive:`), hoist reads what skopeo writes (a multi-tag
//! docker-archive included), round trips keep digests, and the evil archives of
//! `hoist_testkit::evil_archive` fail with a clear error and leave the store as it was.

mod support;

use support::Env;

use std::collections::BTreeMap;
use std::path::Path;

use hoist_testkit::docker_save;
use hoist_testkit::evil_archive::{self, DockerParts, OciParts};
use hoist_testkit::images::{self, BuiltImage, Entry, ImageSpec, LayerSpec};
use hoist_testkit::registry::Registry;
use hoist_testkit::require_peers;
use hoist_testkit::skopeo::{self, SkopeoOpts};
use serde_json::Value;

impl Env {
    /// `hoist images --format json` as (repository:tag → image ID).
    fn names(&self) -> BTreeMap<String, String> {
        let v = self.json(&["images", "--format", "json"]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    format!(
                        "{}:{}",
                        r["Repository"].as_str().unwrap(),
                        r["Tag"].as_str().unwrap()
                    ),
                    r["Id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn sk(args: &[&str]) -> Vec<u8> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    skopeo::run_skopeo(&args).unwrap_or_else(|e| panic!("{e}"))
}

/// Every file under `dir` with its size (lock files excluded: opening a store makes them;
/// so is the `hoist/leases` directory a load's lease is made in, but not what is in it: a
/// finished load leaves no lease behind).
fn snapshot(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    let mut budget = 100_000;
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            budget -= 1;
            assert!(budget > 0, "store tree too large");
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            if rel.starts_with("hoist/locks") {
                continue;
            }
            if rel == "hoist/leases" {
                todo.push(e.path());
                continue;
            }
            if m.is_dir() {
                todo.push(e.path());
            }
            out.insert(rel, if m.is_dir() { 0 } else { m.len() });
        }
    }
    out
}

/// A small Docker-format image, different from the sample.
fn small_spec() -> ImageSpec {
    ImageSpec::docker()
        .layer(LayerSpec::gzip([
            Entry::dir("opt"),
            Entry::file("opt/small", "small image\n"),
        ]))
        .env("SMALL=1")
}

fn diff_ids_of(config: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(config).unwrap();
    v["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

/// The manifest and config digests of the one image of an `oci:` layout directory.
fn layout_image(dir: &Path) -> (String, Vec<u8>, Value) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let blob = |d: &str| std::fs::read(dir.join("blobs/sha256").join(&d[7..])).unwrap();
    let manifest: Value = serde_json::from_slice(&blob(&mdigest)).unwrap();
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    (mdigest, config, manifest)
}

#[test]
fn skopeo_reads_hoist_archives_and_hoist_reads_them_back() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let multi = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/multi:v1").unwrap();
    let small = skopeo::push_spec(&small_spec(), &reg, "ns/small:v1").unwrap();
    let env = Env::new();
    let (rm, rs) = (reg.image_ref("ns/multi:v1"), reg.image_ref("ns/small:v1"));
    let extra = reg.image_ref("ns/multi:extra");
    env.ok(&["pull", &rm]);
    env.ok(&["pull", &rs]);
    env.ok(&["tag", &rm, &extra]);

    // docker-archive: three tags, two images, one archive.
    let da = env.path("all-docker.tar");
    env.ok(&["save", "-o", p(&da), &rm, &extra, &rs]);
    let check_docker = |sel: &str, built: &BuiltImage| {
        let r = format!("docker-archive:{}:{sel}", p(&da));
        let cfg = sk(&["inspect", "--config", "--raw", &r]);
        assert_eq!(cfg, built.config_bytes, "{sel}: config bytes");
        let inspected: Value = serde_json::from_slice(&sk(&["inspect", &r])).unwrap();
        // Layers are uncompressed in a docker-archive: their digests are the diff IDs.
        assert_eq!(
            inspected["Layers"],
            serde_json::json!(built.diff_ids()),
            "{sel}"
        );
        let out = env.path(&format!("sk-{}", sel.replace(['/', ':', '@'], "_")));
        sk(&["copy", "--quiet", &r, &format!("oci:{}:x", p(&out))]);
        let (_, config, manifest) = layout_image(&out);
        assert_eq!(config, built.config_bytes);
        assert_eq!(
            manifest["layers"].as_array().unwrap().len(),
            built.diff_ids().len()
        );
    };
    check_docker(&rm, &multi);
    check_docker(&extra, &multi);
    check_docker(&rs, &small);
    check_docker("@0", &multi);
    check_docker("@1", &small);
    let listing = String::from_utf8(
        std::process::Command::new("tar")
            .arg("tf")
            .arg(&da)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for l in multi.diff_ids().iter().chain(small.diff_ids().iter()) {
        assert_eq!(
            listing.matches(&format!("{}.tar", &l[7..])).count(),
            1,
            "{listing}"
        );
    }

    // oci-archive: blobs as stored, so skopeo copies it with every digest kept.
    let oa = env.path("all-oci.tar");
    env.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        p(&oa),
        &rm,
        &extra,
        &rs,
    ]);
    for (r, built) in [(&rm, &multi), (&extra, &multi), (&rs, &small)] {
        let out = env.path("sk-oci");
        let _ = std::fs::remove_dir_all(&out);
        sk(&[
            "copy",
            "--quiet",
            "--preserve-digests",
            &format!("oci-archive:{}:{r}", p(&oa)),
            &format!("oci:{}:x", p(&out)),
        ]);
        let (mdigest, config, manifest) = layout_image(&out);
        if built.manifest.media_type == images::OCI_MANIFEST {
            assert_eq!(mdigest, built.manifest.digest, "{r}");
        } else {
            // A Docker schema 2 image is converted to OCI in a layout (as skopeo does):
            // same config and layer blobs, OCI media types.
            assert_eq!(manifest["mediaType"], images::OCI_MANIFEST, "{r}");
        }
        assert_eq!(config, built.config_bytes);
        let layers: Vec<&str> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(layers, built.layer_digests(), "{r}");
    }
    // A save that fails leaves no file (nor temp file) behind.
    let none = env.path("none.tar");
    let err = env.fails(&["save", "-o", p(&none), &rm, "nope/missing:v9"]);
    assert!(err.contains("nope/missing:v9"), "{err}");
    assert!(!none.exists());
    let left: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".hoist-archive-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // To stdout: the same bytes as to a file.
    let piped = env
        .ok(&[
            "save",
            "--format",
            "oci-archive",
            "-o",
            "-",
            &rm,
            &extra,
            &rs,
        ])
        .stdout;
    assert_eq!(piped, std::fs::read(&oa).unwrap());

    // hoist loads both back into fresh stores, every tag included.
    let want: BTreeMap<String, String> = [
        (rm.clone(), multi.config.digest.clone()),
        (extra.clone(), multi.config.digest.clone()),
        (rs.clone(), small.config.digest.clone()),
    ]
    .into_iter()
    .collect();
    let from_docker = Env::new();
    let loaded = from_docker.json(&["load", "-i", p(&da), "--format", "json"]);
    assert_eq!(loaded["format"], "docker-archive");
    assert_eq!(from_docker.names(), want);
    let cfg = from_docker.ok(&["inspect", "--config", &rm]).stdout;
    assert_eq!(cfg, multi.config_bytes);
    let from_oci = Env::new();
    from_oci.ok(&["load", "-i", p(&oa)]);
    assert_eq!(from_oci.names(), want);
    // The oci-archive kept the registry's manifests, byte for byte.
    assert_eq!(
        from_oci.ok(&["inspect", "--raw", &rm]).stdout,
        multi.manifest_bytes
    );
    let raw: Value =
        serde_json::from_slice(&from_oci.ok(&["inspect", "--raw", &rs]).stdout).unwrap();
    assert_eq!(raw["config"]["digest"], small.config.digest.as_str());
    assert_eq!(
        raw["layers"][0]["digest"],
        small.layer_digests()[0].as_str()
    );

    // Round trip registry → store → docker-archive → store → oci-archive → registry:
    // config digest and diff IDs survive (the docker-archive stores layers uncompressed,
    // so the compressed layer digests cannot); the docker-archive written again from the
    // loaded store is byte-identical.
    let again = env.path("again.tar");
    from_docker.ok(&["save", "-o", p(&again), &rm, &extra, &rs]);
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&da).unwrap());
    let oa2 = env.path("rt-oci.tar");
    from_docker.ok(&["save", "--format", "oci-archive", "-o", p(&oa2), &rm]);
    let back = reg.image_ref("rt/multi:v1");
    skopeo::skopeo_copy(
        &format!("oci-archive:{}:{rm}", p(&oa2)),
        &back,
        None,
        Some(&SkopeoOpts::for_registry(&reg)),
        false,
    )
    .unwrap();
    let cfg = skopeo::skopeo_inspect_config_raw(&back, &SkopeoOpts::for_registry(&reg)).unwrap();
    assert_eq!(cfg, multi.config_bytes);
    assert_eq!(diff_ids_of(&cfg), multi.diff_ids());
    let roundtrip = Env::new();
    roundtrip.ok(&["pull", &back]);
    assert_eq!(
        roundtrip.names().get(&back),
        Some(&multi.config.digest),
        "image ID kept"
    );
}

#[test]
fn hoist_reads_what_skopeo_writes() {
    require_peers!(Peer::Skopeo);
    let env = Env::new();
    let layout = env.path("layout");
    let built = images::sample_multi_layer()
        .write_layout(&layout, "v1")
        .unwrap();
    let src = format!("oci:{}:v1", p(&layout));

    // A docker-archive with two tags of one image (skopeo 1.9 writes several tags with
    // --additional-tag; one `skopeo copy` writes one image).
    let da = env.path("sk-docker.tar");
    sk(&[
        "copy",
        "--quiet",
        "--additional-tag",
        "example.com/ns/a:extra",
        &src,
        &format!("docker-archive:{}:example.com/ns/a:v1", p(&da)),
    ]);
    let out = env.ok(&["load", "-i", p(&da)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Loaded image: example.com/ns/a:v1"), "{text}");
    assert!(
        text.contains("Loaded image: example.com/ns/a:extra"),
        "{text}"
    );
    let names = env.names();
    assert_eq!(names.get("example.com/ns/a:v1"), Some(&built.config.digest));
    assert_eq!(
        names.get("example.com/ns/a:extra"),
        Some(&built.config.digest)
    );
    let inspected = env.json(&["inspect", "example.com/ns/a:v1"]);
    assert_eq!(inspected["DiffIDs"], serde_json::json!(built.diff_ids()));
    // The loaded image unpacks (layers stored uncompressed, media type says so).
    env.ok(&["unpack", "example.com/ns/a:v1", p(&env.path("rootfs"))]);
    assert!(env.path("rootfs/etc").is_dir());

    // From stdin, an oci-archive: manifests and layers keep their digests.
    let oa = env.path("sk-oci.tar");
    sk(&[
        "copy",
        "--quiet",
        &src,
        &format!("oci-archive:{}:example.com/ns/b:v2", p(&oa)),
    ]);
    let stdin_env = Env::new();
    let out = stdin_env
        .cmd()
        .args(["load"])
        .pipe_stdin(&oa)
        .unwrap()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdin_env
            .ok(&["inspect", "--raw", "example.com/ns/b:v2"])
            .stdout,
        built.manifest_bytes
    );

    // A plain tag as ref.name (skopeo's usual `oci-archive:F:v1`) names no repository:
    // the image is loaded by ID.
    let bare = env.path("bare.tar");
    sk(&[
        "copy",
        "--quiet",
        &src,
        &format!("oci-archive:{}:v1", p(&bare)),
    ]);
    let bare_env = Env::new();
    let out = bare_env.ok(&["load", "-i", p(&bare)]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("Loaded image ID: {}", built.config.digest))
    );
}

#[test]
fn bad_archives_fail_clearly_and_change_nothing() {
    let env = Env::new();
    // The generator's valid samples load: each bad case breaks exactly one rule.
    let good = env.path("good.tar");
    std::fs::write(&good, DockerParts::sample("evil/sample:v1").build()).unwrap();
    env.ok(&["load", "-i", p(&good)]);
    let good_oci = env.path("good-oci.tar");
    std::fs::write(&good_oci, OciParts::sample("evil/oci:v1").build()).unwrap();
    env.ok(&["load", "-i", p(&good_oci)]);
    assert_eq!(env.names().len(), 2, "{:?}", env.names());

    // A store that holds an image already, and an empty one.
    let fresh = Env::new();
    fresh.ok(&["images"]);
    let mut cases = evil_archive::docker_cases();
    cases.extend(evil_archive::oci_cases());
    assert!(cases.len() >= 18);
    for e in [&env, &fresh] {
        let before = snapshot(&e.store());
        let names = e.names();
        for case in &cases {
            let file = e.path("evil.tar");
            std::fs::write(&file, &case.bytes).unwrap();
            let out = e.cmd().args(["load", "-i", p(&file)]).output().unwrap();
            assert!(!out.status.success(), "{}: loaded", case.name);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(case.expect.as_str()) && err.contains("evil.tar"),
                "{}: error should contain {:?} and the archive's name:\n{err}",
                case.name,
                case.expect
            );
            assert_eq!(snapshot(&e.store()), before, "{}: store changed", case.name);
            assert_eq!(e.names(), names, "{}", case.name);
        }
        e.ok(&["fsck"]);
    }
}

/// Loads `archive` (`-i FILE`, or stdin with `stdin`) into `env` and checks that every
/// image of `imgs` is there under its tag with its ID, that each unpacks to its files,
/// and that fsck finds the store clean.
fn loads_all(env: &Env, archive: &[u8], imgs: &[docker_save::SavedImage], stdin: bool, what: &str) {
    let file = env.path("saved.tar");
    std::fs::write(&file, archive).unwrap();
    let out = if stdin {
        env.cmd()
            .arg("load")
            .write_stdin(archive.to_vec())
            .output()
            .unwrap()
    } else {
        env.cmd().args(["load", "-i", p(&file)]).output().unwrap()
    };
    assert!(
        out.status.success(),
        "{what}: load failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = env.names();
    for img in imgs {
        let id = names
            .get(&img.tag)
            .or(names.get(&format!("docker.io/{}", img.tag)));
        assert_eq!(id, Some(&img.id()), "{what}: {} in {names:?}", img.tag);
        // The stored layers are the diff IDs (uncompressed, verified).
        let raw: Value =
            serde_json::from_slice(&env.ok(&["inspect", "--raw", &img.tag]).stdout).unwrap();
        let layers: Vec<&str> = raw["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(layers, img.diff_ids(), "{what}: {}", img.tag);
        let root = env.path(&format!("rootfs-{}", img.tag.replace(['/', ':'], "-")));
        env.ok(&["unpack", &img.tag, p(&root)]);
        assert_eq!(
            std::fs::read_to_string(root.join("etc/os-release")).unwrap(),
            "ID=shared\n",
            "{what}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
    env.ok(&["fsck"]);
}

#[test]
fn docker_save_archives_with_shared_layers_load() {
    use docker_save::{LayerCodec, SaveShape, Share};
    let imgs = docker_save::two_images_sharing_a_layer();
    for (shape, share) in [
        (SaveShape::Legacy, Share::Symlink),
        (SaveShape::Legacy, Share::Hardlink),
        (SaveShape::OciLayout, Share::Once),
        (SaveShape::OciLayout, Share::Symlink),
        (SaveShape::OciLayout, Share::Hardlink),
    ] {
        let what = format!("{shape:?} {share:?}");
        let archive = docker_save::docker_save(&imgs, shape, share, LayerCodec::None);
        loads_all(&Env::new(), &archive, &imgs, false, &what);
        // As a copy source too, each image by its tag.
        let env = Env::new();
        let file = env.path("saved.tar");
        std::fs::write(&file, &archive).unwrap();
        for img in &imgs {
            env.ok(&[
                "copy",
                &format!("docker-archive:{}:{}", p(&file), img.tag),
                &format!("hoist:{}", img.tag),
            ]);
        }
        assert_eq!(env.names().len(), 2, "{what}");
        env.ok(&["fsck"]);
    }
}

#[test]
fn docker_archive_layers_load_in_every_compression() {
    use docker_save::{LayerCodec, SaveShape, Share};
    let imgs = docker_save::two_images_sharing_a_layer();
    for codec in LayerCodec::READABLE {
        let archive = docker_save::docker_save(&imgs, SaveShape::Legacy, Share::Symlink, codec);
        loads_all(
            &Env::new(),
            &archive,
            &imgs,
            false,
            &format!("{codec:?} layers"),
        );
        let env = Env::new();
        let file = env.path("saved.tar");
        std::fs::write(&file, &archive).unwrap();
        env.ok(&[
            "copy",
            &format!("docker-archive:{}:shared/b:1", p(&file)),
            "hoist:shared/b:1",
        ]);
        env.ok(&["fsck"]);
    }
    // A compression hoist does not read is named, not reported as a digest mismatch.
    let env = Env::new();
    let archive = docker_save::docker_save(
        &imgs,
        SaveShape::Legacy,
        Share::Symlink,
        LayerCodec::Lz4Magic,
    );
    let file = env.path("lz4.tar");
    std::fs::write(&file, &archive).unwrap();
    let copy_src = format!("docker-archive:{}:shared/a:1", p(&file));
    for args in [
        vec!["load", "-i", p(&file)],
        vec!["copy", &copy_src, "hoist:x/y:z"],
    ] {
        let err = env.fails(&args);
        assert!(
            err.contains("lz4 compression is not supported") && !err.contains("digest"),
            "{args:?}: {err}"
        );
    }
    assert!(env.names().is_empty());
    env.ok(&["fsck"]);
}

#[test]
fn compressed_archives_load_from_a_file_and_from_stdin() {
    use docker_save::{LayerCodec, SaveShape, Share};
    let imgs = docker_save::two_images_sharing_a_layer();
    let plain =
        docker_save::docker_save(&imgs, SaveShape::Legacy, Share::Symlink, LayerCodec::None);
    let oci = docker_save::docker_save(&imgs, SaveShape::OciLayout, Share::Once, LayerCodec::None);
    for codec in LayerCodec::READABLE {
        for (archive, shape) in [(&plain, "legacy"), (&oci, "oci layout")] {
            let whole = docker_save::compress(archive, codec);
            for stdin in [false, true] {
                let what = format!("{codec:?} {shape} archive, stdin: {stdin}");
                loads_all(&Env::new(), &whole, &imgs, stdin, &what);
            }
        }
    }
}
