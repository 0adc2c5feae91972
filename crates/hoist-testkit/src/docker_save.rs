//! Archives shaped like `docker save`'s output, generated in code, for loaders to read.
//!
//! Two shapes ([`SaveShape`]):
//! - **Legacy** (Docker before 25): a directory per layer, `<id>/VERSION` (`1.0`),
//!   `<id>/json` (the layer's v1 JSON) and `<id>/layer.tar`; `<config-hex>.json`;
//!   `manifest.json` whose `Layers` name `<id>/layer.tar`; `repositories`. Entries are in
//!   lexical order (Docker tars a directory it filled). A layer's v1 ID depends on the
//!   image, so a layer two images share has two directories; Docker writes its bytes once
//!   and makes the second `layer.tar` a symlink `../<first-id>/layer.tar`. A tool that
//!   re-tars an extracted save (GNU tar) writes a hard link instead, to whichever copy
//!   comes first in the archive.
//! - **OCI layout** (Docker 25 and later): `blobs/sha256/<hex>` for layers (uncompressed,
//!   digest = diff ID), configs and OCI manifests, `index.json` (with the
//!   `io.containerd.image.name` and `org.opencontainers.image.ref.name` annotations),
//!   `oci-layout`, and `manifest.json` and `repositories` as before, `Layers` naming
//!   `blobs/sha256/<hex>`. A shared layer is one blob, named twice. With [`Share::Symlink`]
//!   or [`Share::Hardlink`] the second image's `Layers` entry names a legacy
//!   `<id>/layer.tar` linked to the blob instead, as a writer that keeps the legacy paths
//!   beside the blobs would.
//!
//! Layers can be stored compressed ([`LayerCodec`]); `docker load` and skopeo read gzip,
//! zstd, bzip2 and xz layers. [`compress`] also compresses whole archives.

use std::io::Write as _;

use crate::evil::RawTar;
use crate::images::{DEFAULT_CREATED, Entry, sha256_digest, tar_bytes};

/// How a layer (or a whole archive) is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCodec {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
    /// The lz4 frame magic followed by bytes no decoder is asked to read: a compression
    /// a loader must name as unsupported (detection is by magic number alone).
    Lz4Magic,
}

impl LayerCodec {
    /// The four compressions `docker load` reads.
    pub const READABLE: [LayerCodec; 4] = [
        LayerCodec::Gzip,
        LayerCodec::Zstd,
        LayerCodec::Bzip2,
        LayerCodec::Xz,
    ];
}

/// `data` compressed with `codec`.
pub fn compress(data: &[u8], codec: LayerCodec) -> Vec<u8> {
    match codec {
        LayerCodec::None => data.to_vec(),
        LayerCodec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        LayerCodec::Zstd => zstd::stream::encode_all(data, 3).expect("zstd"),
        LayerCodec::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).expect("bzip2");
            e.finish().expect("bzip2")
        }
        LayerCodec::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).expect("xz");
            e.finish().expect("xz")
        }
        LayerCodec::Lz4Magic => {
            let mut v = vec![0x04, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7];
            v.extend_from_slice(data);
            v
        }
    }
}

/// Where the layer bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveShape {
    /// `<id>/layer.tar` per layer (Docker before 25).
    Legacy,
    /// `blobs/sha256/<hex>` in an OCI layout (Docker 25 and later).
    OciLayout,
}

/// How the second mention of a shared layer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// The same member named twice (only for [`SaveShape::OciLayout`], where a blob's
    /// name is its digest).
    Once,
    /// A symbolic link to the first copy, relative to the link's directory.
    Symlink,
    /// A hard link to the first copy (relative to the archive's root).
    Hardlink,
}

/// One image to save.
#[derive(Debug, Clone)]
pub struct SavedImage {
    /// Its tag (`repo:tag`).
    pub tag: String,
    /// Uncompressed layer tars, base first.
    pub layers: Vec<Vec<u8>>,
    /// The config's bytes.
    pub config: Vec<u8>,
}

impl SavedImage {
    /// An image of these layers with a config naming their diff IDs; `created_by` makes
    /// two images over the same layers differ.
    pub fn new(tag: &str, layers: Vec<Vec<u8>>, created_by: &str) -> SavedImage {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": DEFAULT_CREATED,
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": diff_ids.iter().map(|_| serde_json::json!({"created_by": created_by}))
                .collect::<Vec<_>>(),
        }))
        .expect("json");
        SavedImage {
            tag: tag.to_owned(),
            layers,
            config,
        }
    }

    /// The image ID: the config's digest.
    pub fn id(&self) -> String {
        sha256_digest(&self.config)
    }

    /// The diff IDs, base first.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha256_digest(l)).collect()
    }

    /// The v1 ID Docker gives layer `i` of this image (it depends on the image).
    fn v1_id(&self, i: usize) -> String {
        hex(&sha256_digest(format!("{}:{i}", self.id()).as_bytes())).to_owned()
    }
}

/// Two images over a shared base layer, `shared/a:1` (base + `etc/a`) and `shared/b:1`
/// (base + `etc/b`).
pub fn two_images_sharing_a_layer() -> Vec<SavedImage> {
    let base = tar_bytes(&[
        Entry::dir("etc"),
        Entry::file("etc/os-release", "ID=shared\n"),
    ])
    .expect("tar");
    let a = tar_bytes(&[Entry::file("etc/a", "image a\n")]).expect("tar");
    let b = tar_bytes(&[Entry::file("etc/b", "image b\n")]).expect("tar");
    vec![
        SavedImage::new("shared/a:1", vec![base.clone(), a], "build a"),
        SavedImage::new("shared/b:1", vec![base, b], "build b"),
    ]
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// One entry of the archive being laid out.
enum Member {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
}

/// The archive `docker save` would write for `images`, layers stored with `codec`, the
/// second mention of a shared layer written as `share`.
pub fn docker_save(
    images: &[SavedImage],
    shape: SaveShape,
    share: Share,
    codec: LayerCodec,
) -> Vec<u8> {
    assert!(
        shape == SaveShape::OciLayout || share != Share::Once,
        "a legacy save names each layer directory once"
    );
    let mut members: Vec<(String, Member)> = Vec::new();
    // diff ID → the member holding its bytes.
    let mut written: Vec<(String, String)> = Vec::new();
    let mut items = Vec::new();
    let mut repositories = serde_json::Map::new();
    let mut oci_manifests = Vec::new();
    for img in images {
        let mut layer_names = Vec::new();
        let mut parent: Option<String> = None;
        for (i, layer) in img.layers.iter().enumerate() {
            let diff_id = sha256_digest(layer);
            let first = written
                .iter()
                .find(|(d, _)| *d == diff_id)
                .map(|(_, m)| m.clone());
            let id = img.v1_id(i);
            let name = match (shape, &first) {
                (SaveShape::OciLayout, Some(blob)) if share == Share::Once => blob.clone(),
                (SaveShape::OciLayout, None) => {
                    let blob = format!("blobs/sha256/{}", hex(&diff_id));
                    members.push((blob.clone(), Member::File(compress(layer, codec))));
                    blob
                }
                _ => {
                    let dir = id.clone();
                    members.push((format!("{dir}/"), Member::Dir));
                    members.push((format!("{dir}/VERSION"), Member::File(b"1.0".to_vec())));
                    let mut v1 = serde_json::json!({
                        "id": id,
                        "created": DEFAULT_CREATED,
                        "container_config": {"Cmd": null},
                        "os": "linux",
                    });
                    if let Some(p) = &parent {
                        v1["parent"] = p.clone().into();
                    }
                    members.push((
                        format!("{dir}/json"),
                        Member::File(serde_json::to_vec(&v1).expect("json")),
                    ));
                    let name = format!("{dir}/layer.tar");
                    let what = match (&first, share) {
                        (None, _) => Member::File(compress(layer, codec)),
                        (Some(t), Share::Symlink) => Member::Symlink(format!("../{t}")),
                        (Some(t), _) => Member::Hardlink(t.clone()),
                    };
                    members.push((name.clone(), what));
                    name
                }
            };
            if first.is_none() {
                written.push((diff_id, name.clone()));
            }
            layer_names.push(name);
            parent = Some(id);
        }
        let config_name = match shape {
            SaveShape::Legacy => format!("{}.json", hex(&img.id())),
            SaveShape::OciLayout => format!("blobs/sha256/{}", hex(&img.id())),
        };
        members.push((config_name.clone(), Member::File(img.config.clone())));
        if shape == SaveShape::OciLayout {
            let m = oci_manifest(img, codec);
            members.push((
                format!("blobs/sha256/{}", hex(&sha256_digest(&m))),
                Member::File(m.clone()),
            ));
            oci_manifests.push((img.tag.clone(), m));
        }
        items.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": [img.tag],
            "Layers": layer_names,
        }));
        let (repo, tag) = img.tag.rsplit_once(':').expect("repo:tag");
        repositories
            .entry(repo.to_owned())
            .or_insert_with(|| serde_json::json!({}))[tag] = parent.expect("a layer").into();
    }
    members.push((
        "manifest.json".into(),
        Member::File(serde_json::to_vec(&items).expect("json")),
    ));
    members.push((
        "repositories".into(),
        Member::File(serde_json::to_vec(&repositories).expect("json")),
    ));
    if shape == SaveShape::OciLayout {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": oci_manifests.iter().map(|(tag, m)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256_digest(m),
                "size": m.len(),
                "annotations": {
                    "io.containerd.image.name": format!("docker.io/{tag}"),
                    "org.opencontainers.image.ref.name": tag.rsplit_once(':').map_or("", |t| t.1),
                },
            })).collect::<Vec<_>>(),
        });
        members.push((
            "index.json".into(),
            Member::File(serde_json::to_vec(&index).expect("json")),
        ));
        members.push((
            "oci-layout".into(),
            Member::File(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ));
        members.push(("blobs/".into(), Member::Dir));
        members.push(("blobs/sha256/".into(), Member::Dir));
    }
    // Lexical order, as Docker tars its directory. A hard link must follow its target
    // (GNU tar links later copies to the first it archived).
    members.sort_by(|a, b| a.0.cmp(&b.0));
    members.dedup_by(|a, b| a.0 == b.0);
    if share == Share::Hardlink {
        for i in 0..members.len() {
            let Member::Hardlink(target) = &members[i].1 else {
                continue;
            };
            let Some(j) = members.iter().position(|(n, _)| n == target) else {
                continue;
            };
            if j > i {
                // The target sorts later: it becomes the link, this one the file.
                let link_name = members[i].0.clone();
                let data = std::mem::replace(&mut members[j].1, Member::Hardlink(link_name));
                members[i].1 = data;
            }
        }
    }
    let mut t = RawTar::new();
    for (name, m) in &members {
        match m {
            Member::Dir => t.dir(name.as_bytes(), 0o755),
            Member::File(data) => t.file(name.as_bytes(), data),
            Member::Symlink(target) => t.symlink(name.as_bytes(), target.as_bytes()),
            Member::Hardlink(target) => t.hardlink(name.as_bytes(), target.as_bytes(), 0o644),
        };
    }
    t.finish()
}

fn oci_manifest(img: &SavedImage, codec: LayerCodec) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = img
        .layers
        .iter()
        .map(|l| {
            let stored = compress(l, codec);
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": sha256_digest(&stored),
                "size": stored.len(),
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256_digest(&img.config), "size": img.config.len()},
        "layers": layers,
    }))
    .expect("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(bytes: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn legacy_shares_by_link() {
        let imgs = two_images_sharing_a_layer();
        let sym = listing(&docker_save(
            &imgs,
            SaveShape::Legacy,
            Share::Symlink,
            LayerCodec::None,
        ));
        let links: Vec<_> = sym
            .iter()
            .filter(|e| e.1 == tar::EntryType::Symlink)
            .collect();
        assert_eq!(links.len(), 1, "{sym:?}");
        assert!(links[0].0.ends_with("/layer.tar") && links[0].2.starts_with("../"));
        let hard = listing(&docker_save(
            &imgs,
            SaveShape::Legacy,
            Share::Hardlink,
            LayerCodec::None,
        ));
        let (i, link) = hard
            .iter()
            .enumerate()
            .find(|e| e.1.1 == tar::EntryType::Link)
            .expect("a hard link");
        let target = hard.iter().position(|e| e.0 == link.2).expect("target");
        assert!(target < i, "the target comes first");
        let names: Vec<_> = sym.iter().map(|e| e.0.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "lexical order");
    }

    #[test]
    fn oci_layout_names_a_blob_twice() {
        let imgs = two_images_sharing_a_layer();
        let l = listing(&docker_save(
            &imgs,
            SaveShape::OciLayout,
            Share::Once,
            LayerCodec::None,
        ));
        let base = format!("blobs/sha256/{}", hex(&imgs[0].diff_ids()[0]));
        assert_eq!(l.iter().filter(|e| e.0 == base).count(), 1);
        for f in ["index.json", "oci-layout", "manifest.json", "repositories"] {
            assert!(l.iter().any(|e| e.0 == f), "{f}");
        }
    }
}
