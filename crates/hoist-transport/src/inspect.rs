//! `skopeo inspect`-shaped descriptions of images, from a registry or from the store.
//!
//! - [`inspect_remote_raw`]: the bytes the registry serves for a reference, whatever they
//!   are (index, any manifest schema, unknown media types); nothing else is fetched.
//! - [`inspect_remote`]: the reference resolved to the platform's image, its config
//!   fetched; a Docker schema 1 image is described from its manifest alone, as
//!   containers/image does (its v1 JSON holds what a config would; every `fsLayers` entry
//!   is listed, empty ones included; no `LayersData`, since schema 1 records no media
//!   types or sizes; `Tag` from the manifest).

use std::collections::BTreeMap;

use hoist_registry::{ClientOptions, RegistryClient};
use hoist_store::{ImageRecord, Store};
use hoist_types::schema1::Schema1Manifest;
use hoist_types::{
    Digest, ImageConfig, ImageManifest, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, Manifest, Platform,
    Reference,
};
use serde::Serialize;

use crate::TransportError;
use crate::pull::resolve;

/// What `hoist inspect` prints; the field names follow `skopeo inspect`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectInfo {
    /// Repository name, `registry/repository`.
    pub name: String,
    /// The tag a Docker schema 1 manifest names itself with (skopeo prints it for schema
    /// 1 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Digest of the manifest the reference points at (the index for multi-platform images).
    pub digest: Digest,
    /// Tags of the repository (registry), or names of the image (store).
    pub repo_tags: Vec<String>,
    /// Creation time from the config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Docker version from the config.
    pub docker_version: String,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Architecture.
    pub architecture: String,
    /// OS.
    pub os: String,
    /// Variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Layer digests, base first.
    pub layers: Vec<Digest>,
    /// Layers with media type and size (omitted for schema 1, which records neither, as
    /// skopeo does).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers_data: Vec<LayerData>,
    /// Environment.
    pub env: Vec<String>,
    /// Store-only details.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalDetails>,
}

/// One layer in [`InspectInfo`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LayerData {
    /// Media type.
    #[serde(rename = "MIMEType")]
    pub mime_type: String,
    /// Digest.
    pub digest: Digest,
    /// Compressed size.
    pub size: u64,
    /// Annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Extra fields for images in the local store, as `docker inspect` shows them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LocalDetails {
    /// Image ID (config digest).
    pub id: Digest,
    /// `registry/repo@digest` names.
    pub repo_digests: Vec<String>,
    /// Diff IDs.
    #[serde(rename = "DiffIDs")]
    pub diff_ids: Vec<Digest>,
    /// Chain IDs.
    #[serde(rename = "ChainIDs")]
    pub chain_ids: Vec<Digest>,
    /// Parent image (whose layers are a prefix of this one's), if in the store.
    pub parent: Option<Digest>,
    /// Images built on this one.
    pub children: Vec<Digest>,
    /// Total compressed size.
    pub size: u64,
}

/// Raw documents and their description.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// The description.
    pub info: InspectInfo,
    /// The raw bytes of the manifest the reference points at (index or image).
    pub raw_manifest: Vec<u8>,
    /// The raw bytes of the config of the chosen image; `None` for schema 1, which has
    /// none.
    pub raw_config: Option<Vec<u8>>,
}

fn describe(
    name: String,
    digest: Digest,
    repo_tags: Vec<String>,
    manifest: &ImageManifest,
    config: &ImageConfig,
) -> InspectInfo {
    let run = config.run_config();
    InspectInfo {
        name,
        tag: None,
        digest,
        repo_tags,
        created: config.created.clone(),
        docker_version: config.docker_version.clone().unwrap_or_default(),
        labels: run.labels.clone(),
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        variant: config.variant.clone(),
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        layers_data: manifest
            .layers
            .iter()
            .map(|l| LayerData {
                mime_type: l.media_type.to_string(),
                digest: l.digest.clone(),
                size: l.size,
                annotations: l.annotations.clone(),
            })
            .collect(),
        env: run.env.unwrap_or_default(),
        local: None,
    }
}

/// Inspect an image in a registry. `with_tags` also lists the repository's tags.
pub async fn inspect_remote(
    reference: &Reference,
    platform: &Platform,
    opts: &ClientOptions,
    with_tags: bool,
) -> Result<Inspected, TransportError> {
    let client = RegistryClient::new(reference.registry(), opts.clone())?;
    client.ping().await?;
    let resolved = resolve(&client, reference, platform).await?;
    let tags = if with_tags {
        client.list_tags(reference.repository()).await?
    } else {
        Vec::new()
    };
    let top = resolved.top();
    let (info, raw_config) = match &resolved.image.manifest {
        Manifest::Image(m) => {
            let raw_config = client
                .get_blob_bytes(reference.repository(), &m.config, MAX_CONFIG_SIZE)
                .await?;
            let config = ImageConfig::parse(&raw_config)?;
            let info = describe(reference.name(), top.digest.clone(), tags, m, &config);
            (info, Some(raw_config))
        }
        Manifest::Schema1(m) => {
            let info = describe_schema1(reference.name(), top.digest.clone(), tags, m)?;
            (info, None)
        }
        Manifest::Index(_) => unreachable!("indexes are resolved"),
    };
    Ok(Inspected {
        info,
        raw_manifest: top.bytes.clone(),
        raw_config,
    })
}

/// The exact bytes the registry serves for `reference`, like `skopeo inspect --raw`: an
/// index, a manifest of any schema, any media type. Only the manifest is fetched (after
/// the `/v2/` ping); a digest reference must match the bytes.
pub async fn inspect_remote_raw(
    reference: &Reference,
    opts: &ClientOptions,
) -> Result<Vec<u8>, TransportError> {
    let client = RegistryClient::new(reference.registry(), opts.clone())?;
    client.ping().await?;
    let served = client
        .get_manifest_bytes(reference.repository(), &reference.manifest_reference())
        .await?;
    Ok(served.bytes)
}

/// A schema 1 image described from its manifest, as containers/image does: the top
/// history entry's v1 JSON gives created, Docker version, platform, labels and
/// environment; every `fsLayers` entry is a layer (base first, empty ones included).
fn describe_schema1(
    name: String,
    digest: Digest,
    repo_tags: Vec<String>,
    m: &Schema1Manifest,
) -> Result<InspectInfo, TransportError> {
    let layers = m.layers()?;
    // The config conversion would synthesise (the top layer's v1 JSON); `parse` checked
    // that it reads. Diff IDs are not needed here, so placeholders stand in for them.
    let placeholder = vec![Digest::sha256_of(b""); m.content_layers()?.len()];
    let config = ImageConfig::parse(&m.to_config(&placeholder)?)?;
    let run = config.run_config();
    Ok(InspectInfo {
        name,
        tag: (!m.tag.is_empty()).then(|| m.tag.clone()),
        digest,
        repo_tags,
        created: config.created.clone(),
        docker_version: config.docker_version.clone().unwrap_or_default(),
        labels: run.labels.clone(),
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        variant: config.variant.clone(),
        layers: layers.iter().map(|l| l.blob_sum.clone()).collect(),
        layers_data: Vec::new(),
        env: run.env.unwrap_or_default(),
        local: None,
    })
}

/// Inspect an image in the local store.
pub fn inspect_local(store: &Store, image: &ImageRecord) -> Result<Inspected, TransportError> {
    let raw_manifest = store.read_blob(&image.manifest.digest, MAX_MANIFEST_SIZE)?;
    let Manifest::Image(m) = Manifest::parse(&raw_manifest, Some(&image.manifest.media_type))?.0
    else {
        return Err(TransportError::NotAnImage {
            location: "the store".to_owned(),
            digest: image.manifest.digest.clone(),
            found: format!("media type {}", image.manifest.media_type),
        });
    };
    let raw_config = store.read_blob(&image.id, MAX_CONFIG_SIZE)?;
    let config = ImageConfig::parse(&raw_config)?;
    let name = image.names.first().map(Reference::name).unwrap_or_default();
    let top = image.index.as_ref().unwrap_or(&image.manifest);
    let mut info = describe(
        name,
        top.digest.clone(),
        image.names.iter().map(ToString::to_string).collect(),
        &m,
        &config,
    );
    info.local = Some(LocalDetails {
        id: image.id.clone(),
        repo_digests: image.repo_digests.clone(),
        diff_ids: image.diff_ids.clone(),
        chain_ids: image.chain_ids.clone(),
        parent: store.parent(&image.id)?,
        children: store.children(&image.id)?,
        size: image.size,
    });
    Ok(Inspected {
        info,
        raw_manifest,
        raw_config: Some(raw_config),
    })
}
