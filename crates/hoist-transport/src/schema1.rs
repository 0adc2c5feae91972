//! Docker schema 1 during a pull: the layers' sizes are learnt ([`layers`]), the layers
//! are fetched by the caller, then their diff IDs are computed by decompressing and a
//! Docker schema 2 manifest and config are synthesised ([`convert`]).

use std::io::Read;

use hoist_registry::RegistryError;
use hoist_store::Store;
use hoist_types::schema1::Schema1Manifest;
use hoist_types::{Descriptor, Digest, MediaType, Progress};

use crate::sources::Sources;
use crate::{TransportError, blocking};

/// The content layers of `m` (empty ones dropped), base first, with their sizes (schema 1
/// carries none: learnt with HEAD from the first source that answers).
pub(crate) async fn layers(
    sources: &Sources,
    m: &Schema1Manifest,
    progress: &dyn Progress,
) -> Result<Vec<Descriptor>, TransportError> {
    let content = m.content_layers()?;
    let mut layers = Vec::with_capacity(content.len());
    for d in &content {
        let what = format!("schema 1 layer {d}");
        let (size, _) = sources
            .first_ok(false, progress, &what, |c, repo| async move {
                c.head_blob(&repo, d).await?.ok_or_else(|| {
                    TransportError::Registry(RegistryError::NotFound {
                        url: format!("{}/v2/{repo}/blobs/{d}", c.base_url()),
                        what: format!("schema 1 layer {d}"),
                    })
                })
            })
            .await?;
        layers.push(Descriptor::new(MediaType::DockerLayerGzip, d.clone(), size));
    }
    Ok(layers)
}

/// The schema 2 image of `m` whose `layers` (from [`layers`]) are in `store`: the config
/// (returned, for the caller to store) and the manifest's descriptor and bytes.
pub(crate) async fn convert(
    store: &Store,
    m: &Schema1Manifest,
    layers: &[Descriptor],
) -> Result<(Digest, Vec<u8>, Descriptor, Vec<u8>), TransportError> {
    let s = store.clone();
    let digests: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
    let diff_ids = blocking(move || {
        digests
            .iter()
            .map(|d| diff_id_of_gzip_blob(&s, d))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    let config = m.to_config(&diff_ids)?;
    let sizes: Vec<u64> = layers.iter().map(|l| l.size).collect();
    let manifest = m.to_manifest(&config, &sizes)?;
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| TransportError::Io {
        what: "encoding the converted schema 1 manifest".into(),
        source: std::io::Error::other(e),
    })?;
    let desc = Descriptor::new(
        MediaType::DockerManifest,
        Digest::sha256_of(&manifest_bytes),
        manifest_bytes.len() as u64,
    );
    Ok((manifest.config.digest.clone(), config, desc, manifest_bytes))
}

/// The diff ID of a gzip layer blob in the store: the digest of its decompressed bytes.
fn diff_id_of_gzip_blob(store: &Store, d: &Digest) -> Result<Digest, TransportError> {
    let f = store.open_blob(d)?;
    let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
    let mut h = hoist_types::Algorithm::Sha256.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = dec.read(&mut buf).map_err(|source| TransportError::Io {
            what: format!("decompressing layer {d}"),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}
