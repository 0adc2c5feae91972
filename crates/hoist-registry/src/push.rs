//! The push side for manifests, blob existence checks, and the referrers API.
//!
//! - `HEAD /v2/REPO/blobs/DIGEST` under the push scope (one token serves the whole push):
//!   200 present, 404 absent; a `Content-Length` other than the descriptor's size is an
//!   error.
//! - `PUT /v2/REPO/manifests/REFERENCE` with the exact bytes and their media type as
//!   `Content-Type`, under the push scope. A digest reference must be the digest of the
//!   bytes (checked before sending); the registry's `Docker-Content-Digest` must be too.
//!   Manifests and indexes alike; at most 4 MiB, the limit registries apply.
//! - `DELETE /v2/REPO/manifests/DIGEST` under a delete scope (`repository:REPO:delete`):
//!   202 (or 200/204) deleted. By digest only, as the Distribution API defines it; a
//!   registry that does not allow deletes answers 405 `UNSUPPORTED`.
//! - `GET /v2/REPO/referrers/DIGEST[?artifactType=T]` (OCI Distribution 1.1): the index of
//!   the manifests whose `subject` is DIGEST. A registry without the API answers 404 (or
//!   400/405/501): [`RegistryError::Unsupported`]. When the registry does not say it
//!   applied the artifact-type filter (`OCI-Filters-Applied`), it is applied here.

use bytes::Bytes;
use hoist_types::{Descriptor, Digest, MAX_MANIFEST_SIZE, Manifest, MediaType};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::api::{
    content_type, header_digest, pull_scope, validate_reference, validate_repo, verify,
};
use crate::client::{Req, declared_length, read_limited};
use crate::upload::push_scope;
use crate::{FetchedManifest, RegistryClient, RegistryError};

/// The answer of the referrers API.
#[derive(Debug, Clone)]
pub struct Referrers {
    /// The index as served: exact bytes, digest, parsed view.
    pub index: FetchedManifest,
    /// Its entries, restricted to the artifact type asked for (by the registry, or here).
    pub descriptors: Vec<Descriptor>,
}

impl RegistryClient {
    /// Whether `repo` has blob `desc` (`HEAD`, with the push scope so that one token
    /// serves the whole push). A `Content-Length` different from `desc.size` is an error.
    pub async fn blob_exists(&self, repo: &str, desc: &Descriptor) -> Result<bool, RegistryError> {
        validate_repo(repo)?;
        let url = self
            .url(&format!("v2/{repo}/blobs/{}", desc.digest))
            .await?;
        self.retrying(url.as_str(), || async {
            let resp = self
                .execute(Req {
                    method: Method::HEAD,
                    url: url.clone(),
                    scope: Some(push_scope(repo)),
                    headers: HeaderMap::new(),
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(false);
            }
            let resp = self
                .check_status(resp, &Method::HEAD, || {
                    format!("blob {repo}@{}", desc.digest)
                })
                .await?;
            match declared_length(resp.headers()) {
                Some(n) if n != desc.size => Err(RegistryError::InvalidResponse {
                    url: resp.url().to_string(),
                    reason: format!(
                        "the registry says blob {} is {n} bytes, its descriptor says {}",
                        desc.digest, desc.size
                    ),
                }),
                _ => Ok(true),
            }
        })
        .await
    }

    /// Put a manifest or an index: the exact `bytes`, sent with `Content-Type:
    /// media_type`, under `reference` (a tag, or the bytes' digest). Returns the digest
    /// of the bytes (the reference's when it is a digest; else sha256, or for schema 1
    /// the payload's), after checking the registry's `Docker-Content-Digest` against the
    /// bytes.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &MediaType,
    ) -> Result<Digest, RegistryError> {
        validate_repo(repo)?;
        let by_digest = validate_reference(reference)?;
        let url = self
            .url(&format!("v2/{repo}/manifests/{reference}"))
            .await?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(RegistryError::TooLarge {
                url: url.to_string(),
                what: format!("manifest ({} bytes)", bytes.len()),
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let digest =
            Manifest::digest_of(bytes, media_type).map_err(|source| RegistryError::Manifest {
                url: url.to_string(),
                source,
            })?;
        if let Some(d) = &by_digest {
            verify(url.as_str(), bytes, media_type, d)?;
        }
        let ct = HeaderValue::from_str(media_type.as_str()).map_err(|_| {
            RegistryError::InvalidArgument {
                what: "media type",
                value: media_type.as_str().chars().take(300).collect(),
                reason: "not a valid header value",
            }
        })?;
        let body = Bytes::copy_from_slice(bytes);
        let sep = if by_digest.is_some() { '@' } else { ':' };
        let what = format!("manifest {repo}{sep}{reference}");
        self.retrying(url.as_str(), || async {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, ct.clone());
            let resp = self
                .execute_body(
                    Req {
                        method: Method::PUT,
                        url: url.clone(),
                        scope: Some(push_scope(repo)),
                        headers,
                    },
                    Some(body.clone()),
                )
                .await?;
            if !resp.status().is_success() {
                return Err(self.push_error(resp, &Method::PUT, what.clone()).await);
            }
            if let Some(served) = header_digest(&resp)? {
                verify(resp.url().as_str(), bytes, media_type, &served)?;
            }
            Ok(())
        })
        .await?;
        Ok(by_digest.unwrap_or(digest))
    }

    /// Delete the manifest `reference` (a tag or a digest) names in `repo`, as skopeo
    /// delete does: a tag is resolved to its manifest's digest first (`HEAD`), and that
    /// manifest is deleted ([`delete_manifest`](Self::delete_manifest)), so every tag
    /// naming it goes with it. Returns the digest deleted; [`RegistryError::NotFound`]
    /// when there is no such manifest.
    pub async fn delete(&self, repo: &str, reference: &str) -> Result<Digest, RegistryError> {
        let digest = match validate_reference(reference)? {
            Some(d) => d,
            None => {
                self.head_manifest(repo, reference)
                    .await?
                    .ok_or_else(|| RegistryError::NotFound {
                        url: format!("{}/v2/{repo}/manifests/{reference}", self.base_url()),
                        what: format!("manifest {repo}:{reference}"),
                    })?
                    .digest
            }
        };
        self.delete_manifest(repo, &digest).await?;
        Ok(digest)
    }

    /// Delete manifest `digest` from `repo` (`DELETE`): every tag that names it goes
    /// with it, and the registry's own garbage collection frees the blobs later. A
    /// registry that does not allow deletes refuses with 405 ([`RegistryError::PushRejected`]);
    /// one that does not have the manifest with 404.
    pub async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<(), RegistryError> {
        validate_repo(repo)?;
        let url = self.url(&format!("v2/{repo}/manifests/{digest}")).await?;
        let what = format!("manifest {repo}@{digest}");
        self.retrying(url.as_str(), || async {
            let resp = self
                .execute(Req {
                    method: Method::DELETE,
                    url: url.clone(),
                    scope: Some(format!("repository:{repo}:delete")),
                    headers: HeaderMap::new(),
                })
                .await?;
            if !resp.status().is_success() {
                return Err(self.push_error(resp, &Method::DELETE, what.clone()).await);
            }
            Ok(())
        })
        .await
    }

    /// The referrers of `digest` in `repo`, optionally only those of `artifact_type`.
    /// [`RegistryError::Unsupported`] when the registry has no referrers API.
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, RegistryError> {
        validate_repo(repo)?;
        let mut url = self.url(&format!("v2/{repo}/referrers/{digest}")).await?;
        if let Some(t) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", t);
        }
        let index = self
            .retrying(url.as_str(), || async {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::ACCEPT,
                    HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
                );
                let resp = self
                    .execute(Req {
                        method: Method::GET,
                        url: url.clone(),
                        scope: pull_scope(repo),
                        headers,
                    })
                    .await?;
                let status = resp.status().as_u16();
                if matches!(status, 400 | 404 | 405 | 501) {
                    let url = resp.url().to_string();
                    let message =
                        crate::client::read_error_message(resp, self.inner.opts.read_timeout).await;
                    return Err(RegistryError::Unsupported {
                        url,
                        what: "the referrers API",
                        status,
                        message,
                    });
                }
                let resp = self
                    .check_status(resp, &Method::GET, || format!("referrers of {digest}"))
                    .await?;
                let url = resp.url().to_string();
                let applied = resp
                    .headers()
                    .get("oci-filters-applied")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
                let declared = content_type(&resp);
                let bytes = read_limited(
                    resp,
                    MAX_MANIFEST_SIZE,
                    "referrers index",
                    self.inner.opts.read_timeout,
                )
                .await?;
                let (manifest, media_type) =
                    Manifest::parse(&bytes, declared.as_ref()).map_err(|source| {
                        RegistryError::Manifest {
                            url: url.clone(),
                            source,
                        }
                    })?;
                let Manifest::Index(ix) = &manifest else {
                    return Err(RegistryError::InvalidResponse {
                        url,
                        reason: format!("the referrers answer is a {media_type}, not an index"),
                    });
                };
                let entries = ix.manifests.clone();
                let digest = Digest::sha256_of(&bytes);
                let index = FetchedManifest {
                    bytes,
                    media_type,
                    digest,
                    manifest,
                };
                Ok((index, applied, entries))
            })
            .await?;
        let (index, applied, entries) = index;
        let descriptors = entries
            .into_iter()
            .filter(|d| {
                applied || artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t))
            })
            .collect();
        Ok(Referrers { index, descriptors })
    }
}
