//! `docker://HOST/REPO[:TAG|@DIGEST]`: a registry, through [`hoist_registry`].
//!
//! **Source**: the pull engine's sources (`sources.rs`): the mirrors configured for
//! the reference in order, then the registry, each client created and pinged on first
//! use, tags resolved only by sources allowed to. Manifests are read whole (≤ 4 MiB) and
//! verified against `Docker-Content-Digest` and any digest asked for. Blobs come through
//! the one resumable reader, [`BlobFetcher`] ([`crate::fetch`]): offered to destinations
//! that keep partial writes ([`ImageSource::blob_fetcher`]: resume within and across
//! runs, Range slices), and behind [`get_blob`](ImageSource::get_blob)'s stream (retries,
//! resuming with `Range: bytes=N-` from the byte reached, a 200 answer skipped up to that
//! byte and never spliced unchecked, the next source at the same offset; the destination
//! hashes the whole stream).
//!
//! **Destination** (push, through [`hoist_registry`]'s push API): for each blob a `HEAD`;
//! when absent, a cross-repository mount from each repository of the same registry the
//! source names as holding it ([`BlobLocation`]: a `docker://` source's own repository,
//! the repositories a store image was pulled from), then an upload (monolithic below the
//! threshold, chunked above, with the registry client's fallback and retries; the bytes
//! are counted and hashed as they go, so a source that lies fails before the registry
//! completes the upload). Instances of an index and referrers are put by digest as they
//! come; the top manifest is put under the reference's tag (or digest) at `commit`, last.
//! Simple-signing signatures need a lookaside server, which hoist does not write: carrying
//! them to a registry is refused (cosign signatures travel as their `.sig` tag).

use std::sync::Arc;

use hoist_registry::{BlobBody, ClientOptions, MountOutcome, RegistryClient, RegistryError};
use hoist_types::{Descriptor, Digest, NoProgress, Progress, Reference};

use super::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ImageSource,
    ManifestRef, ManifestTarget, RawManifest, Staged, refuse_signatures,
};
use crate::TransportError;
use crate::fetch::BlobFetcher;
use crate::options::PullOptions;
use crate::sources::Sources;

/// Reading from a registry (and its mirrors).
#[derive(Debug)]
pub struct DockerSource {
    reference: Reference,
    sources: Arc<Sources>,
    fetcher: BlobFetcher,
}

impl DockerSource {
    /// A source for `reference`; `opts` gives the registry settings and mirrors (its
    /// platform and job count are not used here).
    pub fn new(reference: Reference, opts: &PullOptions) -> DockerSource {
        let sources = Arc::new(Sources::new(&reference, opts));
        DockerSource {
            fetcher: BlobFetcher::new(sources.clone(), opts.clone()),
            sources,
            reference,
        }
    }

    /// The reference.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The registry's client (created and pinged on first use).
    pub async fn registry_client(&self) -> Result<RegistryClient, TransportError> {
        let src = self
            .sources
            .usable()
            .find(|s| !s.is_mirror())
            .expect("the registry is always a source");
        Ok(self.sources.client(src).await?.clone())
    }
}

impl ImageSource for DockerSource {
    fn describe(&self) -> String {
        format!("docker://{}", self.reference)
    }

    async fn get_manifest(&self, which: &ManifestRef) -> Result<RawManifest, TransportError> {
        let (r, by_tag) = match which {
            ManifestRef::Top => (
                self.reference.manifest_reference(),
                self.reference.digest().is_none(),
            ),
            ManifestRef::Digest(d) => (d.to_string(), false),
            ManifestRef::Tag(t) => (t.clone(), true),
        };
        let what = format!("manifest {}@{r}", self.reference.repository());
        let (m, _) = self
            .sources
            .first_ok(by_tag, &NoProgress, &what, |c, repo| {
                let r = r.clone();
                async move { Ok(c.get_manifest(&repo, &r).await?) }
            })
            .await?;
        if let ManifestRef::Digest(d) = which
            && &m.digest != d
        {
            return Err(TransportError::DigestMismatch {
                what: format!("manifest {what}"),
                expected: d.clone(),
                actual: m.digest,
            });
        }
        Ok(m)
    }

    async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, TransportError> {
        self.fetcher.stream(desc, 0).await
    }

    async fn tags(&self) -> Result<Vec<String>, TransportError> {
        let c = self.registry_client().await?;
        Ok(c.list_tags(self.reference.repository()).await?)
    }

    async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, TransportError> {
        let c = self.registry_client().await?;
        match c
            .referrers(self.reference.repository(), subject, None)
            .await
        {
            Ok(r) => Ok(r.descriptors),
            Err(RegistryError::Unsupported { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    fn blob_locations(&self) -> Vec<BlobLocation> {
        vec![BlobLocation {
            registry: self.reference.registry().to_owned(),
            repository: self.reference.repository().to_owned(),
        }]
    }

    fn blob_fetcher(&self) -> Option<&BlobFetcher> {
        Some(&self.fetcher)
    }
}

/// Whether a blob stream's channel has nothing more than empty chunks (an error counts as
/// more: the push fails either way).
async fn at_end(
    rx: &mut tokio::sync::mpsc::Receiver<Result<bytes::Bytes, TransportError>>,
) -> bool {
    loop {
        match rx.recv().await {
            None => return true,
            Some(Ok(b)) if b.is_empty() => continue,
            Some(_) => return false,
        }
    }
}

/// Pushing to a registry.
#[derive(Debug)]
pub struct DockerDestination {
    reference: Reference,
    opts: ClientOptions,
    client: tokio::sync::OnceCell<RegistryClient>,
    staged: Staged,
}

impl DockerDestination {
    /// A destination for `reference` with the registry settings `opts`.
    pub fn new(reference: Reference, opts: ClientOptions) -> DockerDestination {
        DockerDestination {
            reference,
            opts,
            client: tokio::sync::OnceCell::new(),
            staged: Staged::new(),
        }
    }

    async fn client(&self) -> Result<&RegistryClient, TransportError> {
        Ok(self
            .client
            .get_or_try_init(|| async {
                let c = RegistryClient::new(self.reference.registry(), self.opts.clone())?;
                c.ping().await?;
                Ok::<_, RegistryError>(c)
            })
            .await?)
    }

    fn repo(&self) -> &str {
        self.reference.repository()
    }
}

impl ImageDestination for DockerDestination {
    fn describe(&self) -> String {
        format!("docker://{}", self.reference)
    }

    fn capabilities(&self) -> DestinationCaps {
        DestinationCaps::default()
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        let c = self.client().await?;
        if c.blob_exists(self.repo(), desc).await? {
            return Ok(true);
        }
        for h in hints {
            if !h.registry.eq_ignore_ascii_case(self.reference.registry())
                || h.repository == self.repo()
            {
                continue;
            }
            match c.mount_blob(self.repo(), &h.repository, desc).await {
                Ok(MountOutcome::Mounted) => return Ok(true),
                Ok(MountOutcome::NotMounted { reason }) => {
                    tracing::debug!(digest = %desc.digest, from = %h.repository, %reason, "not mounted");
                }
                Err(e) => {
                    tracing::debug!(digest = %desc.digest, from = %h.repository, %e, "mount failed");
                }
            }
        }
        Ok(false)
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        _progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        // Progress comes from the client's reporter (bytes sent, each counted once).
        let c = self.client().await?;
        if let Some(reopen) = stream.reopen() {
            // A file: replayable from any offset, so a failed chunk is read again from the
            // file rather than kept in memory (the upload hashes what it sends).
            c.push_blob(
                self.repo(),
                desc,
                BlobBody::reopenable(move |at| reopen(at)),
            )
            .await?;
            return Ok(());
        }
        let stream_origin = stream.origin().to_owned();
        let (rx, size, origin) = (
            stream.into_async().into_receiver(),
            desc.size,
            stream_origin,
        );
        let body = futures_util::stream::unfold((rx, 0u64), move |(mut rx, seen)| {
            let origin = origin.clone();
            async move {
                let chunk = match rx.recv().await? {
                    Ok(b) => b,
                    Err(e) => return Some((Err(std::io::Error::other(e)), (rx, seen))),
                };
                let seen = seen + chunk.len() as u64;
                // The client sends `size` bytes and stops: look past them, so that a
                // stream longer than its descriptor fails here as it does everywhere.
                let over = seen > size || (seen == size && !at_end(&mut rx).await);
                let item = match over {
                    false => Ok(chunk),
                    true => Err(std::io::Error::other(format!(
                        "{origin}: more than the declared {size} bytes"
                    ))),
                };
                Some((item, (rx, seen)))
            }
        });
        c.push_blob(self.repo(), desc, BlobBody::from_stream(body))
            .await?;
        Ok(())
    }

    /// A push whose source is a registry: the upload body is the source's resumable
    /// reader, replayable from any offset, so an upload that breaks (a chunk refused, a
    /// registry that wants the blob again in one request) is replayed from the reader
    /// (`Range` from the offset needed) instead of failing as a one-shot stream would.
    async fn put_blob_from(
        &self,
        desc: &Descriptor,
        _kind: hoist_types::BlobKind,
        fetcher: &BlobFetcher,
        _progress: &dyn Progress,
    ) -> Result<bool, TransportError> {
        // Progress comes from the client's reporter (bytes sent, each counted once).
        let c = self.client().await?;
        let (f, d) = (fetcher.clone(), desc.clone());
        let body = BlobBody::reopenable_stream(move |offset| {
            let (f, d) = (f.clone(), d.clone());
            async move {
                let s = f.stream(&d, offset).await.map_err(std::io::Error::other)?;
                let rx = s.into_async().into_receiver();
                Ok(futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|chunk| (chunk.map_err(std::io::Error::other), rx))
                }))
            }
        });
        c.push_blob(self.repo(), desc, body).await?;
        Ok(true)
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        let reference = match target {
            ManifestTarget::Top => {
                // Put under the reference's tag by `commit`, last.
                self.staged.record(manifest, target);
                return Ok(());
            }
            ManifestTarget::Instance => manifest.digest.to_string(),
            ManifestTarget::Tag(t) => t.clone(),
        };
        let c = self.client().await?;
        c.put_manifest(
            self.repo(),
            &reference,
            &manifest.bytes,
            &manifest.media_type,
        )
        .await?;
        Ok(())
    }

    async fn put_signatures(
        &self,
        instance: &Digest,
        signatures: &[Vec<u8>],
    ) -> Result<(), TransportError> {
        refuse_signatures(
            self.describe(),
            instance,
            signatures,
            "simple-signing signatures need a lookaside server, which hoist does not write",
        )
    }

    async fn commit(self) -> Result<Committed, TransportError> {
        let location = self.describe();
        let top = self.staged.take().take_top(&location)?;
        if let Some(d) = self.reference.digest()
            && d != &top.digest
        {
            return Err(TransportError::DigestMismatch {
                what: format!("{location}: the manifest to push"),
                expected: d.clone(),
                actual: top.digest.clone(),
            });
        }
        let reference = self.reference.manifest_reference();
        let c = self.client().await?;
        let digest = c
            .put_manifest(self.repo(), &reference, &top.bytes, &top.media_type)
            .await?;
        Ok(Committed { digest, location })
    }
}
