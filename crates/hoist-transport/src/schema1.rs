//! Docker schema 1, converted by the copy engine (so by `hoist pull`): the layers' sizes
//! are learnt from the registry ([`layers`]), the engine moves the layers, then their diff
//! IDs are computed by decompressing ([`diff_id_of_gzip`], reading them back from the
//! destination where it can) and a Docker schema 2 manifest and config are synthesised
//! ([`convert`]).

use std::io::Read;

use hoist_registry::RegistryError;
use hoist_types::schema1::Schema1Manifest;
use hoist_types::{Descriptor, Digest, MediaType, Progress};

use crate::TransportError;
use crate::sources::Sources;

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

/// The schema 2 image of `m` whose content `layers` (from [`layers`]) have `diff_ids`:
/// the config's descriptor and bytes, and the manifest's bytes.
pub(crate) fn convert(
    m: &Schema1Manifest,
    layers: &[Descriptor],
    diff_ids: &[Digest],
) -> Result<(Descriptor, Vec<u8>, Vec<u8>), TransportError> {
    let config = m.to_config(diff_ids)?;
    let sizes: Vec<u64> = layers.iter().map(|l| l.size).collect();
    let manifest = m.to_manifest(&config, &sizes)?;
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| TransportError::Stream {
        what: "encoding the converted schema 1 manifest".into(),
        source: std::io::Error::other(e),
    })?;
    Ok((manifest.config.clone(), config, manifest_bytes))
}

/// The diff ID of a gzip layer `d` read from `r`: the digest of its decompressed bytes.
/// Call on a blocking thread.
pub(crate) fn diff_id_of_gzip(r: impl Read, d: &Digest) -> Result<Digest, TransportError> {
    let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(r));
    let mut h = hoist_types::Algorithm::Sha256.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = dec
            .read(&mut buf)
            .map_err(|source| TransportError::Stream {
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
