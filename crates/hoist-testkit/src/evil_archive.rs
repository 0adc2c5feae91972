//! Evil image archives: `docker-archive` and `oci-archive` tars that a loader must refuse,
//! generated in code from one valid sample, each with the text its error should contain.
//!
//! The sample ([`DockerParts::sample`], [`OciParts::sample`]) is valid: a loader must accept
//! it. Each case in [`docker_cases`] and [`oci_cases`] breaks one rule: a missing or `null`
//! `manifest.json`, a missing layer, layer bytes that are not their diff ID, links that
//! leave the archive, are absolute, go round in a cycle or point at nothing, names
//! escaping the archive, duplicate entries, oversized documents, wrong layer counts,
//! trailing garbage, compressions a loader does not read. (Links to another member are
//! valid: `docker save` writes them for shared layers; see [`crate::docker_save`].)

use crate::evil::{RawTar, flag};
use crate::images::{DEFAULT_CREATED, Entry, sha256_digest, tar_bytes};

/// One bad archive and a fragment of the error it must cause.
#[derive(Debug, Clone)]
pub struct ArchiveCase {
    /// Short name.
    pub name: &'static str,
    /// The archive.
    pub bytes: Vec<u8>,
    /// Text the loader's error must contain (it names the entry at fault).
    pub expect: String,
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": DEFAULT_CREATED,
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().map(|_| serde_json::json!({"created_by": "evil"})).collect::<Vec<_>>(),
    }))
    .expect("json")
}

/// The parts of a one-image docker-archive.
#[derive(Debug, Clone)]
pub struct DockerParts {
    /// Uncompressed layer tars, base first.
    pub layers: Vec<Vec<u8>>,
    /// The config's bytes.
    pub config: Vec<u8>,
    /// `RepoTags`.
    pub repo_tags: Vec<String>,
}

impl DockerParts {
    /// Two small layers, tagged `tag` (e.g. `evil/sample:v1`).
    pub fn sample(tag: &str) -> DockerParts {
        let l1 = tar_bytes(&[Entry::dir("etc"), Entry::file("etc/hello", "hello\n")]).expect("tar");
        let l2 = tar_bytes(&[Entry::file("etc/world", "world\n")]).expect("tar");
        let diff_ids = vec![sha256_digest(&l1), sha256_digest(&l2)];
        DockerParts {
            config: config_json(&diff_ids),
            layers: vec![l1, l2],
            repo_tags: vec![tag.to_owned()],
        }
    }

    /// The config's entry name, `<hex>.json`.
    pub fn config_name(&self) -> String {
        format!("{}.json", hex(&sha256_digest(&self.config)))
    }

    /// Layer entry names, `<diff-id-hex>.tar`.
    pub fn layer_names(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|l| format!("{}.tar", hex(&sha256_digest(l))))
            .collect()
    }

    /// `manifest.json` for these parts.
    pub fn manifest_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!([{
            "Config": self.config_name(),
            "RepoTags": self.repo_tags,
            "Layers": self.layer_names(),
        }]))
        .expect("json")
    }

    /// The valid archive: layers, config, `manifest.json`.
    pub fn build(&self) -> Vec<u8> {
        let mut t = RawTar::new();
        self.write_layers(&mut t);
        t.file(self.config_name().as_bytes(), &self.config);
        t.file(b"manifest.json", &self.manifest_json());
        t.finish()
    }

    fn write_layers(&self, t: &mut RawTar) {
        for (name, l) in self.layer_names().iter().zip(&self.layers) {
            t.file(name.as_bytes(), l);
        }
    }
}

/// Bad docker-archives, each from [`DockerParts::sample`] with one rule broken.
pub fn docker_cases() -> Vec<ArchiveCase> {
    let p = DockerParts::sample("evil/sample:v1");
    let names = p.layer_names();
    let mut cases = Vec::new();
    let mut case = |name, expect: &str, bytes| {
        cases.push(ArchiveCase {
            name,
            bytes,
            expect: expect.to_owned(),
        })
    };

    let mut t = RawTar::new();
    p.write_layers(&mut t);
    t.file(p.config_name().as_bytes(), &p.config);
    case("manifest missing", "manifest.json", t.finish());

    let mut t = RawTar::new();
    p.write_layers(&mut t);
    t.file(p.config_name().as_bytes(), &p.config);
    t.file(b"manifest.json", b"null");
    case("manifest null", "manifest.json: invalid JSON", t.finish());

    let mut t = RawTar::new();
    p.write_layers(&mut t);
    t.file(p.config_name().as_bytes(), &p.config);
    t.file(b"manifest.json", b"[]");
    case("manifest empty", "no image", t.finish());

    let mut t = RawTar::new();
    t.file(names[0].as_bytes(), &p.layers[0]);
    t.file(p.config_name().as_bytes(), &p.config);
    t.file(b"manifest.json", &p.manifest_json());
    case(
        "layer missing",
        &format!("{}: missing", names[1]),
        t.finish(),
    );

    let other = tar_bytes(&[Entry::file("etc/world", "not the world\n")]).expect("tar");
    let mut t = RawTar::new();
    t.file(names[0].as_bytes(), &p.layers[0]);
    t.file(names[1].as_bytes(), &other);
    t.file(p.config_name().as_bytes(), &p.config);
    t.file(b"manifest.json", &p.manifest_json());
    case("wrong digest", &format!("{}: digest", names[1]), t.finish());

    // The second layer as a link that cannot be followed; `real.tar` holds its exact
    // bytes, so only the link rule can refuse it.
    let layer_link = |typeflag: u8, target: &[u8]| {
        let mut t = RawTar::new();
        t.file(names[0].as_bytes(), &p.layers[0]);
        t.file(b"real.tar", &p.layers[1]);
        t.raw(names[1].as_bytes(), typeflag, 0o644, 0, 0, 0, target, b"");
        t.file(p.config_name().as_bytes(), &p.config);
        t.file(b"manifest.json", &p.manifest_json());
        t.finish()
    };
    case(
        "layer symlink escaping",
        &format!(
            "{}: link to \"../../etc/passwd\" leaves the archive",
            names[1]
        ),
        layer_link(flag::SYMLINK, b"../../etc/passwd"),
    );
    case(
        "layer symlink absolute",
        &format!("{}: link to \"/real.tar\" is absolute", names[1]),
        layer_link(flag::SYMLINK, b"/real.tar"),
    );
    case(
        "layer symlink to a missing member",
        "link to \"gone.tar\" points to a member that is not in the archive",
        layer_link(flag::SYMLINK, b"gone.tar"),
    );
    case(
        "layer hard link to a missing member",
        "link to \"gone.tar\" points to a member that is not in the archive",
        layer_link(flag::LINK, b"gone.tar"),
    );
    case(
        "layer hard link escaping",
        "hardlink target escapes the root",
        layer_link(flag::LINK, b"../real.tar"),
    );
    // A cycle: the layer links to `loop.tar`, which links back.
    let mut t = RawTar::new();
    t.file(names[0].as_bytes(), &p.layers[0]);
    t.symlink(names[1].as_bytes(), b"loop.tar");
    t.symlink(b"loop.tar", names[1].as_bytes());
    t.file(p.config_name().as_bytes(), &p.config);
    t.file(b"manifest.json", &p.manifest_json());
    case(
        "layer symlink cycle",
        "links in a row (a cycle?)",
        t.finish(),
    );

    let mut t = RawTar::new();
    p.write_layers(&mut t);
    t.symlink(p.config_name().as_bytes(), b"../etc/config.json");
    t.file(b"manifest.json", &p.manifest_json());
    case("config symlink escaping", "leaves the archive", t.finish());

    // A layer compressed with lz4, which docker-archive readers do not decode: the error
    // names the compression, never a digest mismatch.
    let mut t = RawTar::new();
    t.file(names[0].as_bytes(), &p.layers[0]);
    t.file(
        names[1].as_bytes(),
        &crate::docker_save::compress(&p.layers[1], crate::docker_save::LayerCodec::Lz4Magic),
    );
    t.file(p.config_name().as_bytes(), &p.config);
    t.file(b"manifest.json", &p.manifest_json());
    case(
        "layer compressed with lz4",
        &format!("{}: lz4 compression is not supported", names[1]),
        t.finish(),
    );

    // The whole archive compressed with lz4; damaged gzip.
    case(
        "archive compressed with lz4",
        "decompressing the archive: lz4 compression is not supported",
        crate::docker_save::compress(&p.build(), crate::docker_save::LayerCodec::Lz4Magic),
    );
    let gz = crate::docker_save::compress(&p.build(), crate::docker_save::LayerCodec::Gzip);
    case(
        "archive gzip truncated",
        "decompressing the archive",
        gz[..gz.len() - 12].to_vec(),
    );

    let mut t = RawTar::new();
    t.dir(names[0].as_bytes(), 0o755);
    t.file(names[1].as_bytes(), &p.layers[1]);
    t.file(p.config_name().as_bytes(), &p.config);
    t.file(b"manifest.json", &p.manifest_json());
    case("layer is a directory", "is a directory", t.finish());

    let mut t = RawTar::new();
    t.file(b"../evil", b"x");
    t.write_valid(&p);
    case("entry escaping with ..", "escapes", t.finish());

    let mut t = RawTar::new();
    t.file(b"a/../../evil", b"x");
    t.write_valid(&p);
    case("entry escaping through a dir", "escapes", t.finish());

    let mut t = RawTar::new();
    p.write_layers(&mut t);
    t.file(p.config_name().as_bytes(), &p.config);
    let escaping = serde_json::to_vec(&serde_json::json!([{
        "Config": p.config_name(),
        "RepoTags": p.repo_tags,
        "Layers": [names[0], "../../etc/passwd"],
    }]))
    .expect("json");
    t.file(b"manifest.json", &escaping);
    case(
        "manifest layer path escaping",
        "escapes the archive",
        t.finish(),
    );

    let mut t = RawTar::new();
    p.write_layers(&mut t);
    t.file(p.config_name().as_bytes(), &p.config);
    let mut big = p.manifest_json();
    big.resize(5 << 20, b' ');
    t.file(b"manifest.json", &big);
    case(
        "oversized manifest.json",
        "over the 4194304-byte limit",
        t.finish(),
    );

    let mut t = RawTar::new();
    t.write_valid(&p);
    t.file(b"manifest.json", b"[]");
    case(
        "duplicate manifest.json",
        "manifest.json: duplicate entry",
        t.finish(),
    );

    let mut t = RawTar::new();
    p.write_layers(&mut t);
    t.file(p.config_name().as_bytes(), &p.config);
    let short = serde_json::to_vec(&serde_json::json!([{
        "Config": p.config_name(), "RepoTags": p.repo_tags, "Layers": [names[0]],
    }]))
    .expect("json");
    t.file(b"manifest.json", &short);
    case(
        "layer count",
        "2 diff IDs but the image has 1 layers",
        t.finish(),
    );

    let mut bytes = p.build();
    bytes.extend_from_slice(b"garbage after the end");
    case("trailing data", "after the end-of-archive marker", bytes);

    let mut bad_cfg = p.clone();
    bad_cfg.config = b"{\"rootfs\": 1}".to_vec();
    case(
        "invalid config",
        &format!("{}:", bad_cfg.config_name()),
        bad_cfg.build(),
    );

    cases
}

/// The parts of a one-image oci-archive (uncompressed OCI layers).
#[derive(Debug, Clone)]
pub struct OciParts {
    /// Layer tars.
    pub layers: Vec<Vec<u8>>,
    /// Config bytes.
    pub config: Vec<u8>,
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// `index.json` bytes.
    pub index: Vec<u8>,
}

impl OciParts {
    /// Two small layers; `index.json` names the image `ref_name`.
    pub fn sample(ref_name: &str) -> OciParts {
        let d = DockerParts::sample("x/y:z");
        let layers = d.layers;
        let config = d.config;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(&config), "size": config.len()},
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": sha256_digest(l), "size": l.len()})).collect::<Vec<_>>(),
        }))
        .expect("json");
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": sha256_digest(&manifest), "size": manifest.len(),
                           "annotations": {"org.opencontainers.image.ref.name": ref_name}}],
        }))
        .expect("json");
        OciParts {
            layers,
            config,
            manifest,
            index,
        }
    }

    fn blobs(&self) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = self.layers.iter().map(Vec::as_slice).collect();
        v.push(&self.config);
        v.push(&self.manifest);
        v
    }

    /// The valid archive.
    pub fn build(&self) -> Vec<u8> {
        self.build_with(&self.blobs(), &self.index)
    }

    fn build_with(&self, blobs: &[&[u8]], index: &[u8]) -> Vec<u8> {
        let mut t = RawTar::new();
        t.file(b"oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        t.dir(b"blobs/", 0o755);
        t.dir(b"blobs/sha256/", 0o755);
        for b in blobs {
            t.file(
                format!("blobs/sha256/{}", hex(&sha256_digest(b))).as_bytes(),
                b,
            );
        }
        t.file(b"index.json", index);
        t.finish()
    }
}

/// Bad oci-archives, each from [`OciParts::sample`] with one rule broken.
pub fn oci_cases() -> Vec<ArchiveCase> {
    let p = OciParts::sample("evil/oci:v1");
    let mut cases = Vec::new();
    cases.push(ArchiveCase {
        name: "index.json null",
        bytes: p.build_with(&p.blobs(), b"null"),
        expect: "index.json".into(),
    });
    let blobs = p.blobs();
    cases.push(ArchiveCase {
        name: "oci layer missing",
        bytes: p.build_with(&blobs[1..], &p.index),
        expect: "missing (a layer)".into(),
    });
    // A layer whose bytes are not its digest, stored under the digest's name.
    let mut t = RawTar::new();
    t.file(b"oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let l0 = hex(&sha256_digest(&p.layers[0])).to_owned();
    let mut wrong = p.layers[0].clone();
    let at = wrong.len() / 3;
    wrong[at] ^= 1;
    t.file(format!("blobs/sha256/{l0}").as_bytes(), &wrong);
    for b in &blobs[1..] {
        t.file(
            format!("blobs/sha256/{}", hex(&sha256_digest(b))).as_bytes(),
            b,
        );
    }
    t.file(b"index.json", &p.index);
    cases.push(ArchiveCase {
        name: "oci wrong digest",
        bytes: t.finish(),
        expect: "digest".into(),
    });
    // The manifest as a symlink out of the archive (`m.json` holds its bytes, so only
    // the link rule can refuse it).
    let mut t = RawTar::new();
    t.file(b"oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for b in &blobs[..blobs.len() - 1] {
        t.file(
            format!("blobs/sha256/{}", hex(&sha256_digest(b))).as_bytes(),
            b,
        );
    }
    t.file(b"m.json", &p.manifest);
    t.symlink(
        format!("blobs/sha256/{}", hex(&sha256_digest(&p.manifest))).as_bytes(),
        b"../../../m.json",
    );
    t.file(b"index.json", &p.index);
    cases.push(ArchiveCase {
        name: "oci manifest symlink escaping",
        bytes: t.finish(),
        expect: "leaves the archive".into(),
    });
    cases
}

trait WriteValid {
    fn write_valid(&mut self, p: &DockerParts);
}

impl WriteValid for RawTar {
    fn write_valid(&mut self, p: &DockerParts) {
        p.write_layers(self);
        self.file(p.config_name().as_bytes(), &p.config);
        self.file(b"manifest.json", &p.manifest_json());
    }
}
