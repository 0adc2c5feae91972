//! Writes the seed corpora under `fuzz/corpus/<target>/` from real inputs: documents and
//! layers of the test kit's generated images, its evil tars and archives, hand-written
//! schema 1 manifests and references. Deterministic; run it again after changing a
//! generator:
//!
//! ```text
//! cargo run -p hoist-fuzz --example seeds
//! ```
//!
//! Files are named by their content's SHA-256 (as libFuzzer names corpus files), so
//! re-running adds nothing twice.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hoist_testkit::evil::{self, RawTar};
use hoist_testkit::images::{
    self, Compression, Entry, ImageSpec, LayerSpec, compress, sample_docker, sample_index,
    sample_index_docker, sample_multi_layer, sample_zstd, tar_bytes,
};

/// Inputs larger than this are not worth a seed.
const MAX_SEED: usize = 16 << 10;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn put(target: &str, data: &[u8]) {
    if data.len() > MAX_SEED {
        return;
    }
    let dir = corpus(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    let name = images::sha256_digest(data);
    let name = name.trim_start_matches("sha256:");
    fs::write(dir.join(&name[..40]), data).expect("write a seed");
}

fn main() {
    references();
    documents();
    schema1();
    layers();
    archives();
    println!("seeds written under {}", corpus("").display());
}

fn references() {
    let d = images::sha256_digest(b"hoist");
    for s in [
        "alpine",
        "alpine:3.20",
        "library/alpine",
        "docker.io/library/alpine:latest",
        "index.docker.io/library/alpine",
        "user/app:v1.2.3",
        "ghcr.io/org/team/app:main",
        "127.0.0.1:5000/ns/repo:tag",
        "localhost/foo",
        "localhost:5000/foo_bar__baz-qux.x:1",
        "[::1]:5000/repo@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "docker://quay.io/prometheus/node-exporter:v1",
        "docker.io/library/foo/bar:1",
        "docker.io/foo.bar/baz:1",
        "docker.io/localhost/x",
        "Registry.Example.COM:443/a/b",
        "host:5000",
        &format!("busybox:1.36@{d}"),
        &format!("busybox@sha512:{}", "ab".repeat(64)),
        &d,
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "linux/amd64",
        "linux/arm64/v8",
        "linux/arm/7",
        "windows/amd64",
        "armel",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8",
        "Application/Vnd.Oci.Image.Index.V1+Json",
        "application/vnd.example.artifact",
    ] {
        put("reference", s.as_bytes());
    }
}

fn documents() {
    for spec in [
        sample_multi_layer(),
        sample_docker(),
        sample_zstd(),
        small_image(),
    ] {
        let built = spec.build().expect("build an image");
        put("manifest", &built.manifest_bytes);
        put("config", &built.config_bytes);
    }
    for spec in [sample_index(), sample_index_docker()] {
        let built = spec.build().expect("build an index");
        put("manifest", &built.index_bytes);
    }
    let d = images::sha256_digest(b"x");
    // An artifact with a subject, and a nested index.
    put(
        "manifest",
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{d}","size":2,"data":"e30="}},"layers":[{{"mediaType":"application/vnd.example.sig","digest":"{d}","size":1,"urls":["https://example.invalid/x"],"annotations":{{"a":"b"}}}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":1}}}}"#
        )
        .as_bytes(),
    );
    put(
        "manifest",
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{d}","size":9}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":9,"platform":{{"architecture":"arm","os":"linux","variant":"v6","os.features":["x"]}}}}],"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}"#
        )
        .as_bytes(),
    );
}

/// A small image with every entry kind, also used for layer seeds.
fn small_image() -> ImageSpec {
    ImageSpec::docker()
        .layer(LayerSpec::uncompressed(small_entries()))
        .layer(LayerSpec::gzip([
            Entry::whiteout("etc/motd"),
            Entry::opaque("srv"),
            Entry::file("srv/new", "new\n"),
        ]))
        .empty_history("CMD [\"sh\"]")
        .env("A=1")
        .cmd(["sh"])
        .user("1000:1000")
        .workdir("/srv")
        .label("k", "v")
        .expose("80/tcp")
}

fn small_entries() -> Vec<Entry> {
    vec![
        Entry::dir("etc"),
        Entry::file("etc/motd", "hi\n")
            .mode(0o600)
            .mtime(1_700_000_000),
        Entry::dir("srv").owner(1000, 1000),
        Entry::file("srv/old", "old\n").xattr("user.k", "v"),
        Entry::executable("bin-sh", "#!/bin/sh\n"),
        Entry::hardlink("bin-sh-again", "bin-sh"),
        Entry::symlink("abs", "/etc/motd"),
        Entry::symlink("up", "../../etc"),
        Entry::fifo("pipe"),
        Entry::char_device("null", 1, 3),
        Entry::file(
            "usr/share/a-path-that-is-long-enough-to-need-a-long-name-record-in-the-tar-format/file",
            "long\n",
        ),
    ]
}

fn schema1() {
    let empty = hoist_types::schema1::EMPTY_GZIP_LAYER;
    let l1 = images::sha256_digest(b"layer one");
    let unsigned = format!(
        r##"{{
   "schemaVersion": 1,
   "name": "library/x",
   "tag": "latest",
   "architecture": "amd64",
   "fsLayers": [
      {{"blobSum": "{empty}"}},
      {{"blobSum": "{l1}"}}
   ],
   "history": [
      {{"v1Compatibility": "{{\"id\":\"b\",\"parent\":\"a\",\"os\":\"linux\",\"config\":{{\"Cmd\":[\"sh\"]}},\"container_config\":{{\"Cmd\":[\"/bin/sh\",\"-c\",\"#(nop) CMD [\\\"sh\\\"]\"]}},\"created\":\"2020-01-02T00:00:00Z\",\"throwaway\":true}}"}},
      {{"v1Compatibility": "{{\"id\":\"a\",\"created\":\"2020-01-01T00:00:00Z\",\"container_config\":{{\"Cmd\":[\"/bin/sh\",\"-c\",\"#(nop) ADD file:x in /\"]}}}}"}}
   ]
}}"##
    );
    put("manifest", unsigned.as_bytes());
    // Signed: the payload is the document up to its closing "\n}", plus that tail.
    let cut = unsigned.len() - 2;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let protected = b64.encode(format!(
        r#"{{"formatLength":{cut},"formatTail":"{}","time":"2020-01-01T00:00:00Z"}}"#,
        b64.encode("\n}")
    ));
    let signed = format!(
        "{},\n   \"signatures\": [{{\"header\": {{\"alg\": \"ES256\"}}, \"signature\": \"c2ln\", \"protected\": \"{protected}\"}}]\n}}",
        &unsigned[..cut]
    );
    put("manifest", signed.as_bytes());
    let m = hoist_types::schema1::Schema1Manifest::parse(unsigned.as_bytes()).expect("schema 1");
    let config = m
        .to_config(&[hoist_types::Digest::sha256_of(b"diff")])
        .expect("convert schema 1");
    put("config", &config);
}

fn layer_input(flags: u8, split: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, split];
    v.extend_from_slice(body);
    v
}

/// The tar inside a layer blob, when its media type tells the truth about it.
fn decompress(blob: &[u8], media_type: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if media_type.ends_with("gzip") {
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .ok()?;
    } else if media_type.ends_with("zstd") {
        out = zstd::decode_all(blob).ok()?;
    } else {
        out = blob.to_vec();
    }
    Some(out)
}

fn layers() {
    let small = tar_bytes(&small_entries()).expect("tar");
    let upper = tar_bytes(&[
        Entry::whiteout("etc/motd"),
        Entry::opaque("srv"),
        Entry::file("srv/new", "new\n"),
        Entry::file("bin-sh", "replaced\n"),
        Entry::dir("abs"),
        Entry::symlink("etc", "srv"),
    ])
    .expect("tar");
    // One layer in each encoding and mode; then two layers.
    for flags in [0u8, 1, 3, 4, 5, 8] {
        put("layer", &layer_input(flags, 0, &small));
    }
    put(
        "layer",
        &layer_input(2, 0, &compress(&small, Compression::Gzip).expect("gzip")),
    );
    put(
        "layer",
        &layer_input(2, 0, &compress(&small, Compression::Zstd).expect("zstd")),
    );
    let split = u8::try_from(small.len() / 512).expect("a small tar");
    let mut both = small.clone();
    both.extend_from_slice(&upper);
    for flags in [16u8, 16 | 4, 16 | 8] {
        put("layer", &layer_input(flags, split, &both));
    }
    // The evil cases, aimed at the sentinel beside the root.
    let sentinel = hoist_fuzz::scratch::fixed_base().join("sentinel");
    for (i, case) in evil::cases(&sentinel).into_iter().enumerate() {
        let flags = if i % 3 == 2 { 4 } else { 0 } | u8::from(i % 2 == 1);
        let tars: Option<Vec<Vec<u8>>> = case
            .layers
            .iter()
            .map(|l| decompress(&l.blob, l.media_type))
            .collect();
        match (tars.as_deref(), case.layers.as_slice()) {
            (Some([one]), _) => put("layer", &layer_input(flags, 0, one)),
            (Some([a, b, ..]), _) if a.len() % 512 == 0 && a.len() / 512 < 256 => {
                let mut body = a.clone();
                body.extend_from_slice(b);
                put(
                    "layer",
                    &layer_input(flags | 16, (a.len() / 512) as u8, &body),
                );
            }
            // Broken compression: the blob as is.
            (None, [l, ..]) => put("layer", &layer_input(2 | (flags & 4), 0, &l.blob)),
            _ => {}
        }
    }
    // A few raw parser tricks of our own.
    let mut t = RawTar::new();
    t.pax(&[
        ("path", &b"pax/name"[..]),
        ("mtime", &b"1.5"[..]),
        ("SCHILY.xattr.user.x", &b"1"[..]),
    ])
    .file(b"ustar/name", b"data");
    put("layer", &layer_input(0, 0, &t.finish()));
    let mut t = RawTar::new();
    t.dir(b"d", 0o755)
        .symlink(b"d/l", b"../../sentinel")
        .file(b"d/l/x", b"escape?");
    put("layer", &layer_input(0, 0, &t.finish()));
    let mut t = RawTar::new();
    t.hardlink(b"h", b"../sentinel/keep", 0o644);
    put("layer", &layer_input(0, 0, &t.finish()));
}

fn archives() {
    use hoist_testkit::evil_archive::{DockerParts, docker_cases};
    let sample = DockerParts::sample("evil/sample:v1");
    put("docker_archive", &sample.build());
    for case in docker_cases() {
        put("docker_archive", &case.bytes);
    }
    // Two images sharing their layers, one of them gzip-compressed, with several tags.
    let names = sample.layer_names();
    let gz_name = format!("{}.gz", names[1]);
    let config_b = String::from_utf8(sample.config.clone())
        .expect("a JSON config")
        .replacen('{', r#"{"author":"b","#, 1);
    let config_b_name = format!("{}.json", &images::sha256_digest(config_b.as_bytes())[7..]);
    let manifest = serde_json::json!([
        {"Config": sample.config_name(), "RepoTags": ["a/b:1", "localhost:5000/a/b:2"], "Layers": names},
        {"Config": config_b_name, "RepoTags": null, "Layers": [names[0].clone(), gz_name.clone()]},
    ]);
    let mut t = RawTar::new();
    t.dir(b"blobs", 0o755);
    t.file(names[0].as_bytes(), &sample.layers[0]);
    t.file(names[1].as_bytes(), &sample.layers[1]);
    t.file(
        gz_name.as_bytes(),
        &compress(&sample.layers[1], Compression::Gzip).expect("gzip"),
    );
    t.file(sample.config_name().as_bytes(), &sample.config);
    t.file(config_b_name.as_bytes(), config_b.as_bytes());
    t.file(b"repositories", br#"{"a/b":{"1":"x"}}"#);
    t.file(b"manifest.json", manifest.to_string().as_bytes());
    put("docker_archive", &t.finish());
}
