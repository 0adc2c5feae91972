//! Resolution: from a top manifest through indexes to the platform's image manifest. The
//! one walk the copy engine (and so `hoist pull`) and `inspect` follow: each index's entry
//! is chosen by [`ImageIndex::choose`](hoist_types::ImageIndex::choose), nested indexes
//! are followed to [`MAX_INDEX_DEPTH`] levels, each digest at most once, and each child's
//! size is checked against its entry.

use std::collections::HashSet;
use std::future::Future;

use hoist_registry::{FetchedManifest, RegistryClient};
use hoist_types::{Descriptor, Digest, MAX_INDEX_DEPTH, Manifest, Platform, Reference};

use crate::TransportError;

/// A reference resolved down to one image manifest.
#[derive(Debug)]
pub struct Resolved {
    /// The indexes walked through, outermost first (empty when the reference named an
    /// image manifest).
    pub indexes: Vec<FetchedManifest>,
    /// The image manifest (or schema 1 manifest) chosen.
    pub image: FetchedManifest,
}

impl Resolved {
    /// The manifest the reference itself points at: the outermost index, or the image.
    pub fn top(&self) -> &FetchedManifest {
        self.indexes.first().unwrap_or(&self.image)
    }
}

/// Resolve `reference` through indexes to the manifest for `platform`, with one client.
/// Nested indexes are followed to [`MAX_INDEX_DEPTH`], each digest at most once.
pub async fn resolve(
    client: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
) -> Result<Resolved, TransportError> {
    let repo = reference.repository();
    let top = client
        .get_manifest(repo, &reference.manifest_reference())
        .await?;
    walk(top, &reference.to_string(), platform, |entry| async move {
        Ok(client.get_manifest(repo, &entry.digest.to_string()).await?)
    })
    .await
}

/// Walk from `top` (named `label` in errors) down to the image for `platform`;
/// `fetch(entry)` gets the manifest an index entry names.
pub(crate) async fn walk<F, Fut>(
    top: FetchedManifest,
    label: &str,
    platform: &Platform,
    mut fetch: F,
) -> Result<Resolved, TransportError>
where
    F: FnMut(Descriptor) -> Fut,
    Fut: Future<Output = Result<FetchedManifest, TransportError>>,
{
    let mut current = top;
    let mut indexes: Vec<FetchedManifest> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    loop {
        if !seen.insert(current.digest.clone()) {
            return Err(TransportError::IndexCycle {
                digest: current.digest.clone(),
            });
        }
        let Manifest::Index(idx) = &current.manifest else {
            break;
        };
        if indexes.len() >= MAX_INDEX_DEPTH {
            return Err(TransportError::IndexTooDeep {
                reference: label.to_owned(),
                depth: MAX_INDEX_DEPTH,
            });
        }
        let entry = idx
            .choose(platform)
            .map_err(|choice| TransportError::NoMatchingPlatform {
                reference: label.to_owned(),
                choice,
            })?
            .clone();
        if seen.contains(&entry.digest) {
            return Err(TransportError::IndexCycle {
                digest: entry.digest.clone(),
            });
        }
        let child = fetch(entry.clone()).await?;
        if child.bytes.len() as u64 != entry.size {
            return Err(TransportError::SizeMismatch {
                what: format!("manifest {} of {label}", entry.digest),
                expected: entry.size,
                actual: child.bytes.len() as u64,
            });
        }
        indexes.push(std::mem::replace(&mut current, child));
    }
    Ok(Resolved {
        indexes,
        image: current,
    })
}
