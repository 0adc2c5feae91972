//! A source whose top manifest, and perhaps other manifests and small blobs, were read
//! before the copy: the copy takes them from here instead of reading them again, and
//! everything else from the source they were read through (its client, token, mirrors
//! and resumable reader).
//!
//! Two callers read ahead: [`pull_and_build`](crate::pull_for::pull_and_build), which
//! reads the manifest and config to start building while the layers download, and `hoist
//! serve --pull-through`, which answers a client's manifest request and then pulls the
//! same image in the background. Either way the pull is pinned to the manifest read
//! ahead, and its first requests (a tag, the platform's manifest, the config) would only
//! fetch again what was just fetched.
//!
//! What is handed over is checked again by the copy engine as if it had been read now:
//! manifests by digest against the digest asked for, the config against its descriptor.

use std::collections::HashMap;
use std::sync::Arc;

use hoist_types::{Descriptor, Digest};

use super::any::AnySource;
use super::stream::BlobStream;
use super::traits::{BlobLocation, ImageSource, ManifestRef, RawManifest};
use crate::TransportError;
use crate::fetch::BlobFetcher;

/// Where manifests read earlier are looked up by digest.
type Lookup = Box<dyn Fn(&Digest) -> Option<RawManifest> + Send + Sync>;

/// A source with what was read ahead from `upstream`; see the module docs.
pub struct Prefetched {
    upstream: Arc<AnySource>,
    top: RawManifest,
    manifests: Lookup,
    blobs: HashMap<Digest, (Vec<u8>, String)>,
}

impl std::fmt::Debug for Prefetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetched")
            .field("upstream", &self.upstream.describe())
            .field("top", &self.top.digest)
            .field("blobs", &self.blobs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Prefetched {
    /// `upstream` with its top manifest `top` (what a tag resolved to when it was read:
    /// the copy takes this one, not what the tag names by now).
    pub fn new(upstream: Arc<AnySource>, top: RawManifest) -> Prefetched {
        Prefetched {
            upstream,
            top,
            manifests: Box::new(|_| None),
            blobs: HashMap::new(),
        }
    }

    /// Manifests by digest are first looked up with `lookup` (any it does not know are
    /// read from upstream).
    pub fn with_manifests(
        mut self,
        lookup: impl Fn(&Digest) -> Option<RawManifest> + Send + Sync + 'static,
    ) -> Prefetched {
        self.manifests = Box::new(lookup);
        self
    }

    /// A small blob (a config) already read, as `bytes`, from `origin` (the URL that
    /// served it).
    pub fn with_blob(mut self, digest: Digest, bytes: Vec<u8>, origin: String) -> Prefetched {
        self.blobs.insert(digest, (bytes, origin));
        self
    }
}

impl ImageSource for Prefetched {
    fn describe(&self) -> String {
        self.upstream.describe()
    }

    async fn get_manifest(&self, which: &ManifestRef) -> Result<RawManifest, TransportError> {
        match which {
            ManifestRef::Top => Ok(self.top.clone()),
            ManifestRef::Digest(d) if *d == self.top.digest => Ok(self.top.clone()),
            ManifestRef::Digest(d) => match (self.manifests)(d) {
                Some(m) if m.digest == *d => Ok(m),
                _ => self.upstream.get_manifest(which).await,
            },
            ManifestRef::Tag(_) => self.upstream.get_manifest(which).await,
        }
    }

    async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, TransportError> {
        self.upstream.get_blob(desc).await
    }

    fn read_before(&self, desc: &Descriptor) -> Option<(Vec<u8>, String)> {
        self.blobs.get(&desc.digest).cloned()
    }

    async fn get_signatures(
        &self,
        instance: Option<&Digest>,
    ) -> Result<Vec<Vec<u8>>, TransportError> {
        self.upstream.get_signatures(instance).await
    }

    async fn tags(&self) -> Result<Vec<String>, TransportError> {
        self.upstream.tags().await
    }

    async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, TransportError> {
        self.upstream.referrers(subject).await
    }

    fn blob_locations(&self) -> Vec<BlobLocation> {
        self.upstream.blob_locations()
    }

    fn blob_fetcher(&self) -> Option<&BlobFetcher> {
        self.upstream.blob_fetcher()
    }
}
