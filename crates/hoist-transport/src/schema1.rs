//! Docker schema 1 during a pull: the layers are fetched, their diff IDs computed by
//! decompressing, and a Docker schema 2 manifest and config are synthesised and stored.

use std::io::Read;

use hoist_registry::RegistryError;
use hoist_store::Store;
use hoist_types::schema1::Schema1Manifest;
use hoist_types::{Descriptor, Digest, MediaType, ProgressEvent, Reference};

use crate::blob::Ctx;
use crate::pull::{Stats, fetch_layers};
use crate::{TransportError, blocking};

/// Convert a schema 1 image: returns the synthesised manifest's descriptor and bytes
/// (its config is stored).
pub(crate) async fn convert_schema1(
    ctx: &Ctx<'_>,
    (reference, digest): (&Reference, &Digest),
    m: &Schema1Manifest,
    stats: &mut Stats,
) -> Result<(Descriptor, Vec<u8>), TransportError> {
    let content = m.content_layers()?;
    // Schema 1 carries no sizes: learn them with HEAD.
    let mut layers = Vec::with_capacity(content.len());
    for d in &content {
        let what = format!("schema 1 layer {d}");
        let (size, _) = ctx
            .sources
            .first_ok(false, ctx.progress, &what, |c, repo| async move {
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
    ctx.progress.event(&ProgressEvent::Resolved {
        reference: &reference.to_string(),
        digest,
        layers: layers.len(),
        total_bytes: layers.iter().map(|l| l.size).sum(),
    });
    fetch_layers(ctx, &layers, stats).await?;
    let s = ctx.store.clone();
    let digests = content.clone();
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
    let (s, d, c) = (ctx.store.clone(), manifest.config.digest.clone(), config);
    blocking(move || s.put_blob(&d, &c)).await??;
    Ok((
        Descriptor::new(
            MediaType::DockerManifest,
            Digest::sha256_of(&manifest_bytes),
            manifest_bytes.len() as u64,
        ),
        manifest_bytes,
    ))
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
