//! Serve an image from the fault-injecting fake registry, for measurements by hand.
//!
//! ```text
//! fake_registry --port-file FILE (--layout DIR --tag TAG | --generate-blob SIZE)
//!               [--repo REPO] [--reset-every BYTES] [--throttle BYTES_PER_SEC] [--no-range]
//! ```
//!
//! - `--layout DIR --tag TAG`: load the image tagged TAG in the OCI layout DIR (as
//!   `skopeo copy docker://… oci:DIR:TAG` writes it), served as `REPO:TAG`.
//! - `--generate-blob SIZE`: an image of one layer of SIZE pseudo-random bytes (not a tar:
//!   a pull does not look inside), served as `REPO:latest`.
//! - `--reset-every BYTES`: every blob response breaks off after BYTES bytes (a client
//!   must resume with Range to finish).
//! - `--throttle BYTES_PER_SEC`: every blob response is sent at most this fast (a
//!   per-connection cap).
//! - `--no-range`: Range requests are answered with 200 and the whole blob.
//!
//! Writes `127.0.0.1:PORT` to FILE and serves until killed.

use std::path::{Path, PathBuf};

use hoist_testkit::fake::{FakeRegistry, Fault};
use hoist_testkit::images::{OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST, seeded_bytes, sha256_digest};
use serde_json::{Value, json};

fn main() {
    if let Err(e) = run() {
        eprintln!("fake_registry: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut port_file = None;
    let mut layout = None;
    let mut tag = "latest".to_string();
    let mut repo = "bench/image".to_string();
    let mut generate = None;
    let mut reset_every = None;
    let mut no_range = false;
    let mut throttle = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--port-file" => port_file = Some(PathBuf::from(val()?)),
            "--layout" => layout = Some(PathBuf::from(val()?)),
            "--tag" => tag = val()?,
            "--repo" => repo = val()?,
            "--generate-blob" => generate = Some(parse_size(&val()?)?),
            "--reset-every" => reset_every = Some(parse_size(&val()?)?),
            "--throttle" => throttle = Some(parse_size(&val()?)?),
            "--no-range" => no_range = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let port_file = port_file.ok_or("--port-file is required")?;
    let fake = FakeRegistry::start();
    match (layout, generate) {
        (Some(dir), None) => load_layout(&fake, &dir, &tag, &repo)?,
        (None, Some(size)) => generate_image(&fake, size, &repo),
        _ => return Err("give exactly one of --layout and --generate-blob".into()),
    }
    if let Some(n) = reset_every {
        fake.inject(Fault::ResetAfter(n).on_any_blob().forever());
    }
    if let Some(rate) = throttle {
        fake.inject(Fault::Throttle(rate).on_any_blob().forever());
    }
    if no_range {
        fake.inject(Fault::IgnoreRange.on_any_blob().forever());
    }
    std::fs::write(&port_file, fake.host_port()).map_err(|e| e.to_string())?;
    eprintln!("fake_registry: serving {repo} on {}", fake.host_port());
    loop {
        std::thread::park();
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1),
        Some((i, _)) => (
            &s[..i],
            match &s[i..] {
                "K" | "KB" => 1000,
                "KiB" => 1024,
                "M" | "MB" => 1_000_000,
                "MiB" => 1 << 20,
                "G" | "GB" => 1_000_000_000,
                "GiB" => 1 << 30,
                u => return Err(format!("unknown unit {u:?}")),
            },
        ),
    };
    num.parse::<u64>()
        .map(|n| n * mul)
        .map_err(|e| format!("{s:?}: {e}"))
}

fn read_json(p: &Path) -> Result<Value, String> {
    let b = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))
}

fn blob(dir: &Path, digest: &str) -> Result<Vec<u8>, String> {
    let p = dir.join("blobs").join(digest.replacen(':', "/", 1));
    std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
}

fn load_layout(fake: &FakeRegistry, dir: &Path, tag: &str, repo: &str) -> Result<(), String> {
    let index = read_json(&dir.join("index.json"))?;
    let entry = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
        })
        .ok_or(format!("no {tag:?} in {}/index.json", dir.display()))?;
    let digest = entry["digest"].as_str().ok_or("entry without digest")?;
    let bytes = blob(dir, digest)?;
    let m: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let mt = m["mediaType"]
        .as_str()
        .or(entry["mediaType"].as_str())
        .unwrap_or(OCI_MANIFEST)
        .to_string();
    let mut blobs = vec![
        m["config"]["digest"]
            .as_str()
            .ok_or("no config")?
            .to_string(),
    ];
    for l in m["layers"].as_array().ok_or("not an image manifest")? {
        blobs.push(
            l["digest"]
                .as_str()
                .ok_or("layer without digest")?
                .to_string(),
        );
    }
    for d in blobs {
        fake.put_blob(repo, &d, blob(dir, &d)?);
    }
    fake.put_manifest(repo, tag, &mt, bytes);
    Ok(())
}

fn generate_image(fake: &FakeRegistry, size: u64, repo: &str) {
    let layer = seeded_bytes(size as usize, 42);
    let ld = sha256_digest(&layer);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [ld]},
    })
    .to_string();
    let cd = sha256_digest(config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": ld, "size": size}],
    })
    .to_string();
    fake.put_blob(repo, &ld, layer);
    fake.put_blob(repo, &cd, config.into_bytes());
    fake.put_manifest(repo, "latest", OCI_MANIFEST, manifest.into_bytes());
}
