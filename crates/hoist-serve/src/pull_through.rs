//! Pull-through: a manifest the store lacks is pulled from the upstream registry with
//! hoist's pull engine ([`hoist_transport::pull::pull`]: mirrors, credentials, retries,
//! resume, one download per blob, verified and committed like `hoist pull`), then served
//! from the store. A tag is re-validated upstream at most once per TTL; when the upstream
//! cannot be reached the stored tag is served.
//!
//! The whole image (the platform of [`PullOptions::platform`]) is pulled before the
//! manifest is answered, so the blob requests that follow are served from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_store::Store;
use hoist_transport::{PullOptions, pull};
use hoist_types::{NoProgress, Reference};

use crate::api::ManifestRef;
use crate::error::ApiError;

type Key = (String, String, String);

/// Pull-through settings and the tags' last validation times.
pub(crate) struct PullThrough {
    opts: PullOptions,
    ttl: Duration,
    /// Registries never pulled from: the server's own addresses (a loop).
    own: Vec<String>,
    /// One lock per (registry, repository, tag): concurrent requests for one tag wait
    /// for one validation. The value is when it was last validated.
    tags: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
}

impl PullThrough {
    pub(crate) fn new(opts: PullOptions, ttl: Duration, own: Vec<String>) -> PullThrough {
        PullThrough {
            opts,
            ttl,
            own,
            tags: Mutex::new(HashMap::new()),
        }
    }

    /// Make sure the store holds `reference` of `registry/name` if the upstream has it.
    /// `have`: the store holds it now. Returns whether a pull changed the store.
    pub(crate) async fn refresh(
        &self,
        store: &Store,
        registry: &str,
        name: &str,
        reference: &ManifestRef,
        have: bool,
    ) -> Result<bool, ApiError> {
        if self.own.iter().any(|o| o == registry) {
            return Ok(false);
        }
        let invalid = || ApiError::NameInvalid {
            name: format!("{registry}/{name}"),
        };
        match reference {
            ManifestRef::Digest(_) if have => Ok(false),
            ManifestRef::Digest(d) => {
                let r = Reference::from_parts(registry, name, None, Some(d.clone()))
                    .map_err(|_| invalid())?;
                self.pull(store, &r).await.map(|()| true)
            }
            ManifestRef::Tag(t) => {
                let r =
                    Reference::from_parts(registry, name, Some(t), None).map_err(|_| invalid())?;
                let slot = {
                    let mut m = self.tags.lock().unwrap_or_else(|p| p.into_inner());
                    m.entry((registry.to_owned(), name.to_owned(), t.clone()))
                        .or_default()
                        .clone()
                };
                let mut last = slot.lock().await;
                if have && last.is_some_and(|l| l.elapsed() < self.ttl) {
                    return Ok(false);
                }
                let res = self.pull(store, &r).await;
                // Validated or not, the upstream is asked again only after the TTL.
                *last = Some(Instant::now());
                match res {
                    Ok(()) => Ok(true),
                    Err(e) if have => {
                        tracing::warn!("pull-through of {r}: {e}; serving the stored tag");
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn pull(&self, store: &Store, r: &Reference) -> Result<(), ApiError> {
        match pull(store, r, &self.opts, &NoProgress).await {
            Ok(_) => Ok(()),
            Err(e) => Err(ApiError::Upstream(format!("pulling {r}: {e}"))),
        }
    }
}
