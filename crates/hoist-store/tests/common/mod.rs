//! Hand-built images for the store's tests: layers are arbitrary bytes (the store never
//! looks inside them), configs and manifests are small JSON documents.

#![allow(dead_code)]

use std::path::Path;

use hoist_store::{ImageCommit, ImageRecord, Store};
use hoist_types::{Descriptor, Digest, MediaType, Platform, Reference};

/// An image whose blobs are in the store, ready to commit.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// Layer contents, base first. Their "diff IDs" are the sha256 of `diff:` + content.
    pub layers: Vec<&'a [u8]>,
    /// Makes the config unique.
    pub label: &'a str,
    /// Diff IDs to claim instead of one per layer (for mismatch tests).
    pub diff_ids_override: Option<Vec<Digest>>,
    pub arch: &'a str,
    pub parent: Option<Digest>,
}

impl<'a> Spec<'a> {
    pub fn new(label: &'a str, layers: &[&'a [u8]]) -> Spec<'a> {
        Spec {
            layers: layers.to_vec(),
            label,
            diff_ids_override: None,
            arch: "amd64",
            parent: None,
        }
    }
}

pub fn diff_id(layer: &[u8]) -> Digest {
    let mut v = b"diff:".to_vec();
    v.extend_from_slice(layer);
    Digest::sha256_of(&v)
}

/// Put the layers, config and manifest of `spec` into the store.
pub fn build(store: &Store, spec: &Spec) -> Built {
    let mut layers = Vec::new();
    for l in &spec.layers {
        let d = Digest::sha256_of(l);
        store.put_blob(&d, l).unwrap();
        layers.push(Descriptor::new(MediaType::OciLayerGzip, d, l.len() as u64));
    }
    let diff_ids: Vec<Digest> = spec
        .diff_ids_override
        .clone()
        .unwrap_or_else(|| spec.layers.iter().map(|l| diff_id(l)).collect());
    let parent = spec
        .parent
        .as_ref()
        .map(|p| format!(",\"parent\":\"{p}\""))
        .unwrap_or_default();
    let config_json = serde_json::json!({
        "architecture": spec.arch,
        "os": "linux",
        "created": "2024-05-01T12:00:00Z",
        "config": {"Labels": {"label": spec.label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let mut config_bytes = serde_json::to_vec(&config_json).unwrap();
    if !parent.is_empty() {
        config_bytes.pop();
        config_bytes.extend_from_slice(parent.as_bytes());
        config_bytes.push(b'}');
    }
    let config_digest = Digest::sha256_of(&config_bytes);
    store.put_blob(&config_digest, &config_bytes).unwrap();
    let config = Descriptor::new(
        MediaType::OciConfig,
        config_digest,
        config_bytes.len() as u64,
    );
    let manifest_json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layers,
    });
    let manifest_bytes = serde_json::to_vec(&manifest_json).unwrap();
    let md = Digest::sha256_of(&manifest_bytes);
    store.put_blob(&md, &manifest_bytes).unwrap();
    Built {
        manifest: Descriptor::new(MediaType::OciManifest, md, manifest_bytes.len() as u64),
        manifest_bytes,
        config,
        layers,
        diff_ids,
    }
}

/// Build an OCI index over `manifests` (with platforms) and store it.
pub fn build_index(store: &Store, manifests: &[(&Built, &str)]) -> Descriptor {
    let entries: Vec<Descriptor> = manifests
        .iter()
        .map(|(b, arch)| {
            let mut d = b.manifest.clone();
            d.platform = Some(Platform::new("linux", arch, None));
            d
        })
        .collect();
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let d = Digest::sha256_of(&bytes);
    store.put_blob(&d, &bytes).unwrap();
    Descriptor::new(MediaType::OciIndex, d, bytes.len() as u64)
}

pub fn commit(store: &Store, b: &Built, name: Option<&str>) -> ImageRecord {
    store
        .commit_image(ImageCommit {
            name: name.map(|n| Reference::parse(n).unwrap()),
            manifest: b.manifest.clone(),
            index: None,
            source: name.map(str::to_owned),
        })
        .unwrap()
}

pub fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// The ref names in `ROOT/index.json`, read as raw JSON.
pub fn index_names(root: &Path) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    let mut names: Vec<String> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Names of the files in a directory, sorted.
pub fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A fresh store in a temp dir.
pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}
