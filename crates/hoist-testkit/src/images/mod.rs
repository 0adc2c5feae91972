//! A deterministic image generator: OCI and Docker v2s2 images, written into OCI layouts.
//!
//! Same spec, same bytes: nothing depends on the clock, the host, or randomness (pseudo-random
//! file content comes from a seed, [`Entry::random_file`]). JSON documents are serialized from
//! structs (fixed field order, whatever serde_json features the workspace enables) and maps are
//! `BTreeMap`s, so their keys come out sorted.
//!
//! ```no_run
//! use hoist_testkit::images::{Compression, Entry, ImageSpec, LayerSpec};
//! let dir = tempfile::tempdir().unwrap();
//! let built = ImageSpec::oci()
//!     .layer(LayerSpec::gzip([Entry::dir("etc"), Entry::file("etc/motd", "hi\n")]))
//!     .layer(LayerSpec::new(Compression::Zstd).entry(Entry::whiteout("etc/motd")))
//!     .cmd(["/bin/sh"])
//!     .write_layout(dir.path(), "v1")
//!     .unwrap();
//! println!("{} {}", built.manifest.digest, built.config.digest);
//! ```
//!
//! Media types: OCI images use `application/vnd.oci.image.*` (layers `tar`, `tar+gzip`,
//! `tar+zstd`); Docker v2s2 images use `application/vnd.docker.distribution.manifest.v2+json`,
//! `application/vnd.docker.container.image.v1+json` and `application/vnd.docker.image.rootfs.diff.tar.gzip`
//! (or `.tar` uncompressed; Docker has no zstd layer type, so a zstd layer in a Docker image is an
//! error).

mod layer;
mod layout;
mod samples;

pub use layer::{DEFAULT_MTIME, Entry, EntryKind, compress, seeded_bytes, tar_bytes};
pub use layout::{OciLayout, REF_NAME_ANNOTATION};
pub use samples::{
    sample_docker, sample_index, sample_index_docker, sample_multi_layer, sample_zstd,
};

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Default `created` of configs and history: 2024-01-01T00:00:00Z.
pub const DEFAULT_CREATED: &str = "2024-01-01T00:00:00Z";

/// `sha256:` + lowercase hex of the SHA-256 of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (fixed header: mtime 0, OS 255, level 6).
    Gzip,
    /// zstd level 3.
    Zstd,
}

/// Manifest format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// OCI image manifest / index.
    Oci,
    /// Docker image manifest schema 2 / manifest list.
    DockerV2S2,
}

impl ImageFormat {
    /// Manifest media type.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => OCI_MANIFEST,
            ImageFormat::DockerV2S2 => DOCKER_MANIFEST,
        }
    }
    /// Index (manifest list) media type.
    pub fn index_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => OCI_INDEX,
            ImageFormat::DockerV2S2 => DOCKER_MANIFEST_LIST,
        }
    }
    /// Config media type.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => OCI_CONFIG,
            ImageFormat::DockerV2S2 => DOCKER_CONFIG,
        }
    }
    /// Layer media type; `None` for a zstd layer in a Docker image.
    pub fn layer_media_type(self, c: Compression) -> Option<&'static str> {
        match (self, c) {
            (ImageFormat::Oci, Compression::None) => Some(OCI_LAYER_TAR),
            (ImageFormat::Oci, Compression::Gzip) => Some(OCI_LAYER_GZIP),
            (ImageFormat::Oci, Compression::Zstd) => Some(OCI_LAYER_ZSTD),
            (ImageFormat::DockerV2S2, Compression::None) => Some(DOCKER_LAYER_TAR),
            (ImageFormat::DockerV2S2, Compression::Gzip) => Some(DOCKER_LAYER_GZIP),
            (ImageFormat::DockerV2S2, Compression::Zstd) => None,
        }
    }
}

/// A platform, as in an index entry and the config's `architecture`/`os`/`variant`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    /// `amd64`, `arm64`...
    pub architecture: String,
    /// `linux`...
    pub os: String,
    /// `v8`, `v7`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: architecture.to_string(),
            os: os.to_string(),
            variant: variant.map(str::to_string),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor: what a manifest, config or layer blob is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobInfo {
    /// Media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:HEX`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

impl BlobInfo {
    fn of(media_type: &str, bytes: &[u8]) -> BlobInfo {
        BlobInfo {
            media_type: media_type.to_string(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
        }
    }
}

/// One layer of a [`BuiltImage`].
#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// The (compressed) layer blob.
    pub blob: BlobInfo,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// Compression used.
    pub compression: Compression,
    /// The uncompressed tar bytes.
    pub tar: Vec<u8>,
}

/// A layer to generate.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// Entries, written in this order.
    pub entries: Vec<Entry>,
    /// Compression of the blob.
    pub compression: Compression,
    /// History `created_by` (default `hoist-testkit layer N`).
    pub created_by: Option<String>,
    /// Media type of the blob instead of the format's for `compression` (e.g. a
    /// non-distributable layer type).
    pub media_type: Option<String>,
    /// The layer's tar as another tool wrote it, instead of one generated from `entries`.
    pub tar: Option<Vec<u8>>,
}

impl LayerSpec {
    /// An empty layer spec with `compression`.
    pub fn new(compression: Compression) -> LayerSpec {
        LayerSpec {
            entries: Vec::new(),
            compression,
            created_by: None,
            media_type: None,
            tar: None,
        }
    }
    /// A layer of these tar bytes (written by another tool), compressed with
    /// `compression`.
    pub fn from_tar(compression: Compression, tar: Vec<u8>) -> LayerSpec {
        LayerSpec {
            tar: Some(tar),
            ..LayerSpec::new(compression)
        }
    }
    /// A gzip layer with `entries`.
    pub fn gzip(entries: impl IntoIterator<Item = Entry>) -> LayerSpec {
        LayerSpec::new(Compression::Gzip).entries(entries)
    }
    /// A zstd layer with `entries`.
    pub fn zstd(entries: impl IntoIterator<Item = Entry>) -> LayerSpec {
        LayerSpec::new(Compression::Zstd).entries(entries)
    }
    /// An uncompressed layer with `entries`.
    pub fn uncompressed(entries: impl IntoIterator<Item = Entry>) -> LayerSpec {
        LayerSpec::new(Compression::None).entries(entries)
    }
    /// Appends one entry.
    pub fn entry(mut self, e: Entry) -> LayerSpec {
        self.entries.push(e);
        self
    }
    /// Appends entries.
    pub fn entries(mut self, es: impl IntoIterator<Item = Entry>) -> LayerSpec {
        self.entries.extend(es);
        self
    }
    /// Sets the history `created_by`.
    pub fn created_by(mut self, s: &str) -> LayerSpec {
        self.created_by = Some(s.to_string());
        self
    }
    /// Gives the blob media type `mt` instead of the format's for its compression.
    pub fn media_type(mut self, mt: &str) -> LayerSpec {
        self.media_type = Some(mt.to_string());
        self
    }
}

#[derive(Debug, Clone)]
enum HistoryItem {
    Layer(usize),
    Empty(String),
}

/// The description of an image to generate. Build with [`ImageSpec::oci`] or
/// [`ImageSpec::docker`] and the chained setters.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    format: ImageFormat,
    layers: Vec<LayerSpec>,
    history: Vec<HistoryItem>,
    platform: Platform,
    os_version: Option<String>,
    created: String,
    author: Option<String>,
    labels: BTreeMap<String, String>,
    env: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    user: Option<String>,
    workdir: Option<String>,
    exposed_ports: Vec<String>,
    stop_signal: Option<String>,
    annotations: BTreeMap<String, String>,
}

impl ImageSpec {
    /// An empty image (no layers) in `format`, linux/amd64.
    pub fn new(format: ImageFormat) -> ImageSpec {
        ImageSpec {
            format,
            layers: Vec::new(),
            history: Vec::new(),
            platform: Platform::new("linux", "amd64", None),
            os_version: None,
            created: DEFAULT_CREATED.to_string(),
            author: None,
            labels: BTreeMap::new(),
            env: Vec::new(),
            entrypoint: None,
            cmd: None,
            user: None,
            workdir: None,
            exposed_ports: Vec::new(),
            stop_signal: None,
            annotations: BTreeMap::new(),
        }
    }
    /// An empty OCI image.
    pub fn oci() -> ImageSpec {
        ImageSpec::new(ImageFormat::Oci)
    }
    /// An empty Docker v2s2 image.
    pub fn docker() -> ImageSpec {
        ImageSpec::new(ImageFormat::DockerV2S2)
    }
    /// Changes the format (media types of manifest, config and layers).
    pub fn format(mut self, f: ImageFormat) -> ImageSpec {
        self.format = f;
        self
    }
    /// The format.
    pub fn image_format(&self) -> ImageFormat {
        self.format
    }
    /// The platform.
    pub fn image_platform(&self) -> &Platform {
        &self.platform
    }
    /// Appends a layer (and its history entry).
    pub fn layer(mut self, l: LayerSpec) -> ImageSpec {
        self.history.push(HistoryItem::Layer(self.layers.len()));
        self.layers.push(l);
        self
    }
    /// Appends a history entry with `empty_layer: true` (like `ENV` in a Dockerfile).
    pub fn empty_history(mut self, created_by: &str) -> ImageSpec {
        self.history
            .push(HistoryItem::Empty(created_by.to_string()));
        self
    }
    /// Sets os, architecture and variant.
    pub fn platform(mut self, os: &str, architecture: &str, variant: Option<&str>) -> ImageSpec {
        self.platform = Platform::new(os, architecture, variant);
        self
    }
    /// Sets the config's `os.version`.
    pub fn os_version(mut self, v: &str) -> ImageSpec {
        self.os_version = Some(v.to_string());
        self
    }
    /// Sets `created` (RFC 3339) of the config and its history.
    pub fn created(mut self, ts: &str) -> ImageSpec {
        self.created = ts.to_string();
        self
    }
    /// Sets `author`.
    pub fn author(mut self, a: &str) -> ImageSpec {
        self.author = Some(a.to_string());
        self
    }
    /// Adds a label (`config.Labels`).
    pub fn label(mut self, k: &str, v: &str) -> ImageSpec {
        self.labels.insert(k.to_string(), v.to_string());
        self
    }
    /// Appends an environment entry `K=V` (`config.Env`).
    pub fn env(mut self, kv: &str) -> ImageSpec {
        self.env.push(kv.to_string());
        self
    }
    /// Sets `config.Entrypoint`.
    pub fn entrypoint<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> ImageSpec {
        self.entrypoint = Some(args.into_iter().map(|s| s.as_ref().to_string()).collect());
        self
    }
    /// Sets `config.Cmd`.
    pub fn cmd<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> ImageSpec {
        self.cmd = Some(args.into_iter().map(|s| s.as_ref().to_string()).collect());
        self
    }
    /// Sets `config.User`.
    pub fn user(mut self, u: &str) -> ImageSpec {
        self.user = Some(u.to_string());
        self
    }
    /// Sets `config.WorkingDir`.
    pub fn workdir(mut self, w: &str) -> ImageSpec {
        self.workdir = Some(w.to_string());
        self
    }
    /// Adds `config.ExposedPorts` (`"8080/tcp"`).
    pub fn expose(mut self, port: &str) -> ImageSpec {
        self.exposed_ports.push(port.to_string());
        self
    }
    /// Sets `config.StopSignal`.
    pub fn stop_signal(mut self, s: &str) -> ImageSpec {
        self.stop_signal = Some(s.to_string());
        self
    }
    /// Adds a manifest annotation (OCI only; ignored for Docker v2s2, which has none).
    pub fn annotation(mut self, k: &str, v: &str) -> ImageSpec {
        self.annotations.insert(k.to_string(), v.to_string());
        self
    }

    /// Generates every blob in memory.
    pub fn build(&self) -> io::Result<BuiltImage> {
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut blobs = BTreeMap::new();
        for (i, l) in self.layers.iter().enumerate() {
            let mt = match &l.media_type {
                Some(mt) => mt.as_str(),
                None => self.format.layer_media_type(l.compression).ok_or_else(|| {
                    io::Error::other(format!(
                        "layer {i}: {:?} compression has no media type in {:?}",
                        l.compression, self.format
                    ))
                })?,
            };
            let tar = match &l.tar {
                Some(t) => t.clone(),
                None => tar_bytes(&l.entries)?,
            };
            let blob = compress(&tar, l.compression)?;
            let info = BlobInfo::of(mt, &blob);
            blobs.insert(info.digest.clone(), blob);
            layers.push(LayerInfo {
                blob: info,
                diff_id: sha256_digest(&tar),
                compression: l.compression,
                tar,
            });
        }
        let config_bytes = self.config_json(&layers)?;
        let config = BlobInfo::of(self.format.config_media_type(), &config_bytes);
        blobs.insert(config.digest.clone(), config_bytes.clone());
        let manifest_doc = ManifestJson {
            schema_version: 2,
            media_type: self.format.manifest_media_type(),
            config: &config,
            layers: layers.iter().map(|l| &l.blob).collect(),
            annotations: (self.format == ImageFormat::Oci && !self.annotations.is_empty())
                .then_some(&self.annotations),
        };
        let manifest_bytes = serde_json::to_vec(&manifest_doc).map_err(io::Error::other)?;
        let manifest = BlobInfo::of(self.format.manifest_media_type(), &manifest_bytes);
        blobs.insert(manifest.digest.clone(), manifest_bytes.clone());
        Ok(BuiltImage {
            format: self.format,
            platform: self.platform.clone(),
            manifest,
            manifest_bytes,
            config,
            config_bytes,
            layers,
            blobs,
        })
    }

    /// Generates the image into the OCI layout at `dir` (created if needed) and tags it `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> io::Result<BuiltImage> {
        let built = self.build()?;
        let layout = OciLayout::create(dir)?;
        built.write_blobs(&layout)?;
        layout.tag(&built.manifest, tag)?;
        Ok(built)
    }

    fn config_json(&self, layers: &[LayerInfo]) -> io::Result<Vec<u8>> {
        let mut history = Vec::with_capacity(self.history.len());
        for h in &self.history {
            history.push(match h {
                HistoryItem::Layer(i) => HistoryJson {
                    created: &self.created,
                    created_by: self.layers[*i]
                        .created_by
                        .clone()
                        .unwrap_or_else(|| format!("hoist-testkit layer {}", i + 1)),
                    empty_layer: None,
                },
                HistoryItem::Empty(s) => HistoryJson {
                    created: &self.created,
                    created_by: s.clone(),
                    empty_layer: Some(true),
                },
            });
        }
        let doc = ConfigJson {
            created: &self.created,
            author: self.author.as_deref(),
            architecture: &self.platform.architecture,
            os: &self.platform.os,
            os_version: self.os_version.as_deref(),
            variant: self.platform.variant.as_deref(),
            config: RunConfigJson {
                user: self.user.as_deref(),
                exposed_ports: (!self.exposed_ports.is_empty()).then(|| {
                    self.exposed_ports
                        .iter()
                        .map(|p| (p.clone(), Empty {}))
                        .collect()
                }),
                env: (!self.env.is_empty()).then_some(&self.env),
                entrypoint: self.entrypoint.as_ref(),
                cmd: self.cmd.as_ref(),
                working_dir: self.workdir.as_deref(),
                labels: (!self.labels.is_empty()).then_some(&self.labels),
                stop_signal: self.stop_signal.as_deref(),
            },
            rootfs: RootFsJson {
                kind: "layers",
                diff_ids: layers.iter().map(|l| l.diff_id.as_str()).collect(),
            },
            history,
        };
        serde_json::to_vec(&doc).map_err(io::Error::other)
    }
}

/// A generated image: its documents, digests and blobs.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Format.
    pub format: ImageFormat,
    /// Platform (from the config).
    pub platform: Platform,
    /// The manifest descriptor; `manifest.digest` is what a registry reports after a push that
    /// preserves digests.
    pub manifest: BlobInfo,
    /// The manifest's exact bytes.
    pub manifest_bytes: Vec<u8>,
    /// The config descriptor (`config.digest` is the image ID).
    pub config: BlobInfo,
    /// The config's exact bytes.
    pub config_bytes: Vec<u8>,
    /// Layers, bottom first.
    pub layers: Vec<LayerInfo>,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl BuiltImage {
    /// Layer blob digests, bottom first.
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.blob.digest.clone()).collect()
    }
    /// Diff IDs, bottom first.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
    /// The bytes of a blob of this image (manifest, config or layer) by digest.
    pub fn blob(&self, digest: &str) -> Option<&[u8]> {
        self.blobs.get(digest).map(Vec::as_slice)
    }
    /// Every blob (manifest, config, layers) as `(digest, bytes)`, sorted by digest.
    pub fn blobs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.blobs.iter().map(|(d, b)| (d.as_str(), b.as_slice()))
    }
    /// Writes every blob into `layout` (without tagging).
    pub fn write_blobs(&self, layout: &OciLayout) -> io::Result<()> {
        for (_, b) in self.blobs() {
            layout.put_blob(b)?;
        }
        Ok(())
    }
}

/// The description of an image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone)]
pub struct IndexSpec {
    format: ImageFormat,
    images: Vec<ImageSpec>,
    annotations: BTreeMap<String, String>,
    /// Members whose entry carries no `platform`.
    platformless: BTreeSet<usize>,
    /// Annotations of members' entries.
    entry_annotations: BTreeMap<usize, BTreeMap<String, String>>,
}

impl IndexSpec {
    /// An empty index in `format`; the member images keep their own formats.
    pub fn new(format: ImageFormat) -> IndexSpec {
        IndexSpec {
            format,
            images: Vec::new(),
            annotations: BTreeMap::new(),
            platformless: BTreeSet::new(),
            entry_annotations: BTreeMap::new(),
        }
    }
    /// Adds a member image; its platform becomes the entry's platform.
    pub fn image(mut self, spec: ImageSpec) -> IndexSpec {
        self.images.push(spec);
        self
    }
    /// Adds a member image whose entry has no `platform` field (as some tools write
    /// single-image indexes).
    pub fn image_without_platform(mut self, spec: ImageSpec) -> IndexSpec {
        self.platformless.insert(self.images.len());
        self.images.push(spec);
        self
    }
    /// Adds an annotation to the entry of the member added last (e.g. buildkit's
    /// `vnd.docker.reference.type: attestation-manifest`).
    pub fn entry_annotation(mut self, k: &str, v: &str) -> IndexSpec {
        let last = self
            .images
            .len()
            .checked_sub(1)
            .expect("an entry to annotate");
        self.entry_annotations
            .entry(last)
            .or_default()
            .insert(k.to_string(), v.to_string());
        self
    }
    /// Adds an index annotation (OCI only).
    pub fn annotation(mut self, k: &str, v: &str) -> IndexSpec {
        self.annotations.insert(k.to_string(), v.to_string());
        self
    }
    /// Generates the index and its images in memory.
    pub fn build(&self) -> io::Result<BuiltIndex> {
        let images = self
            .images
            .iter()
            .map(ImageSpec::build)
            .collect::<io::Result<Vec<_>>>()?;
        let doc = IndexJson {
            schema_version: 2,
            media_type: self.format.index_media_type(),
            manifests: images
                .iter()
                .enumerate()
                .map(|(n, i)| IndexEntryJson {
                    desc: &i.manifest,
                    platform: (!self.platformless.contains(&n)).then_some(&i.platform),
                    annotations: self.entry_annotations.get(&n),
                })
                .collect(),
            annotations: (self.format == ImageFormat::Oci && !self.annotations.is_empty())
                .then_some(&self.annotations),
        };
        let index_bytes = serde_json::to_vec(&doc).map_err(io::Error::other)?;
        Ok(BuiltIndex {
            format: self.format,
            index: BlobInfo::of(self.format.index_media_type(), &index_bytes),
            index_bytes,
            images,
        })
    }
    /// Generates the index and its images into the OCI layout at `dir`, tagging the index `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> io::Result<BuiltIndex> {
        let built = self.build()?;
        let layout = OciLayout::create(dir)?;
        for i in &built.images {
            i.write_blobs(&layout)?;
        }
        layout.put_blob(&built.index_bytes)?;
        layout.tag(&built.index, tag)?;
        Ok(built)
    }
}

/// A generated index and its member images.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    /// Format of the index document.
    pub format: ImageFormat,
    /// The index descriptor.
    pub index: BlobInfo,
    /// The index's exact bytes.
    pub index_bytes: Vec<u8>,
    /// Member images, in index order.
    pub images: Vec<BuiltImage>,
}

impl BuiltIndex {
    /// The member image for `platform`, if any.
    pub fn image_for(&self, platform: &Platform) -> Option<&BuiltImage> {
        self.images.iter().find(|i| &i.platform == platform)
    }
}

#[derive(Serialize)]
struct ManifestJson<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: &'a BlobInfo,
    layers: Vec<&'a BlobInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct IndexEntryJson<'a> {
    #[serde(flatten)]
    desc: &'a BlobInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'a Platform>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct IndexJson<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<IndexEntryJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct RunConfigJson<'a> {
    #[serde(rename = "User", skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(rename = "ExposedPorts", skip_serializing_if = "Option::is_none")]
    exposed_ports: Option<BTreeMap<String, Empty>>,
    #[serde(rename = "Env", skip_serializing_if = "Option::is_none")]
    env: Option<&'a Vec<String>>,
    #[serde(rename = "Entrypoint", skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a Vec<String>>,
    #[serde(rename = "Cmd", skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a Vec<String>>,
    #[serde(rename = "WorkingDir", skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(rename = "Labels", skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
    #[serde(rename = "StopSignal", skip_serializing_if = "Option::is_none")]
    stop_signal: Option<&'a str>,
}

#[derive(Serialize)]
struct RootFsJson<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    created: &'a str,
    created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    empty_layer: Option<bool>,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    created: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<&'a str>,
    architecture: &'a str,
    os: &'a str,
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none")]
    os_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: RunConfigJson<'a>,
    rootfs: RootFsJson<'a>,
    history: Vec<HistoryJson<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn same_spec_same_bytes() {
        let a = sample_multi_layer().build().unwrap();
        let b = sample_multi_layer().build().unwrap();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.manifest_bytes, b.manifest_bytes);
        let i = sample_index().build().unwrap();
        assert_eq!(i.index, sample_index().build().unwrap().index);
    }

    #[test]
    fn config_and_manifest_shape() {
        let img = sample_docker().build().unwrap();
        let m: serde_json::Value = serde_json::from_slice(&img.manifest_bytes).unwrap();
        assert_eq!(m["mediaType"], DOCKER_MANIFEST);
        assert_eq!(m["config"]["mediaType"], DOCKER_CONFIG);
        assert_eq!(m["layers"][0]["mediaType"], DOCKER_LAYER_GZIP);
        let c: serde_json::Value = serde_json::from_slice(&img.config_bytes).unwrap();
        let diff_ids: Vec<String> = c["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(diff_ids, img.diff_ids());
        let non_empty = c["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h.get("empty_layer").is_none())
            .count();
        assert_eq!(non_empty, img.layers.len());
    }

    #[test]
    fn docker_zstd_is_refused() {
        let e = ImageSpec::docker()
            .layer(LayerSpec::zstd([Entry::file("a", "b")]))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("Zstd"), "{e}");
    }

    #[test]
    fn gzip_header_is_fixed() {
        let img = sample_multi_layer().build().unwrap();
        let l = img.blob(&img.layers[0].blob.digest).unwrap();
        // magic, CM=8, FLG=0, MTIME=0, XFL, OS=255
        assert_eq!(&l[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_eq!(l[9], 255);
    }
}
