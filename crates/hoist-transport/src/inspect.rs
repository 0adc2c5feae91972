//! `skopeo inspect`-shaped descriptions of images, from a registry or from the store.

use std::collections::BTreeMap;

use hoist_registry::{ClientOptions, RegistryClient};
use hoist_store::{ImageRecord, Store};
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
    /// Layers with media type and size.
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
    /// The raw bytes of the config of the chosen image.
    pub raw_config: Vec<u8>,
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
    let Manifest::Image(m) = &resolved.image.manifest else {
        return Err(TransportError::Unsupported {
            what: format!("inspecting the schema 1 manifest of {reference} (use --raw)"),
        });
    };
    let raw_config = client
        .get_blob_bytes(reference.repository(), &m.config, MAX_CONFIG_SIZE)
        .await?;
    let config = ImageConfig::parse(&raw_config)?;
    let tags = if with_tags {
        client.list_tags(reference.repository()).await?
    } else {
        Vec::new()
    };
    let top = resolved.top();
    Ok(Inspected {
        info: describe(reference.name(), top.digest.clone(), tags, m, &config),
        raw_manifest: top.bytes.clone(),
        raw_config,
    })
}

/// Inspect an image in the local store.
pub fn inspect_local(store: &Store, image: &ImageRecord) -> Result<Inspected, TransportError> {
    let raw_manifest = store.read_blob(&image.manifest.digest, MAX_MANIFEST_SIZE)?;
    let Manifest::Image(m) = Manifest::parse(&raw_manifest, Some(&image.manifest.media_type))?.0
    else {
        return Err(TransportError::Unsupported {
            what: format!(
                "stored manifest {} is not an image manifest",
                image.manifest.digest
            ),
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
        raw_config,
    })
}
