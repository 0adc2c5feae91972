//! One upload per blob and destination registry when several copies run at once
//! ([`BlobClaims`]): `hoist sync` copies images in parallel, and images of different
//! repositories often share layers (a base image). Without a claim each copy would find the
//! shared layer missing and upload it too; with one, the first copy to reach the blob puts
//! it, the others wait for that blob alone (not for the whole image), then find it in
//! their repository or mount it from the repository that now holds it
//! ([`ImageDestination::has_blob`](crate::transports::ImageDestination::has_blob) with that
//! repository as a hint), as skopeo's blob-info cache would.
//!
//! The copy engine takes the claim around each blob it moves
//! ([`CopyOptions::blob_claims`](crate::copy::CopyOptions::blob_claims)): a claim is held only while its blob is being
//! checked and put, and a copy never waits for a claim while holding another, so copies
//! cannot deadlock. A copy that fails releases its claims without recording anything, and
//! the next copy that wants the blob puts it itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hoist_types::Digest;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::transports::BlobLocation;

/// Where a blob is in a destination registry: the repository that holds it, once a copy
/// has put (or found) it there.
type Slot = Arc<AsyncMutex<Option<String>>>;

/// The table shared by the copies of one run: (registry, digest) → the repository that
/// holds the blob. Clones share the table.
#[derive(Debug, Clone, Default)]
pub struct BlobClaims {
    slots: Arc<Mutex<HashMap<(String, Digest), Slot>>>,
}

impl BlobClaims {
    /// An empty table.
    pub fn new() -> BlobClaims {
        BlobClaims::default()
    }

    /// The view of a copy into `repository` of `registry`.
    pub fn for_destination(&self, registry: &str, repository: &str) -> DestinationClaims {
        DestinationClaims {
            table: self.clone(),
            registry: registry.to_owned(),
            repository: repository.to_owned(),
        }
    }

    /// Blobs this run has put (or found) in `registry`, each with its repository.
    pub fn placed(&self, registry: &str) -> Vec<(Digest, String)> {
        let slots: Vec<(Digest, Slot)> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((r, _), _)| r == registry)
            .map(|((_, d), s)| (d.clone(), s.clone()))
            .collect();
        slots
            .into_iter()
            .filter_map(|(d, s)| s.try_lock().ok().and_then(|g| g.clone()).map(|r| (d, r)))
            .collect()
    }
}

/// A copy's claims: the run's table and the copy's destination repository.
#[derive(Debug, Clone)]
pub struct DestinationClaims {
    table: BlobClaims,
    registry: String,
    repository: String,
}

impl DestinationClaims {
    /// Claim blob `d` for this copy: waits while another copy is putting it. The claim
    /// tells where the blob already is ([`Claim::hint`]); [`Claim::placed`] records that
    /// this copy's repository holds it now. Dropping the claim otherwise (the copy failed)
    /// leaves the table as it was.
    pub(crate) async fn claim(&self, d: &Digest) -> Claim {
        let slot = self
            .table
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((self.registry.clone(), d.clone()))
            .or_default()
            .clone();
        Claim {
            guard: slot.lock_owned().await,
            registry: self.registry.clone(),
            repository: self.repository.clone(),
        }
    }
}

/// One blob claimed by one copy (see [`DestinationClaims::claim`]).
#[derive(Debug)]
pub(crate) struct Claim {
    guard: OwnedMutexGuard<Option<String>>,
    registry: String,
    repository: String,
}

impl Claim {
    /// Another repository of the destination registry that holds the blob (put there by
    /// an earlier copy of this run), to mount from.
    pub(crate) fn hint(&self) -> Option<BlobLocation> {
        self.guard
            .as_deref()
            .filter(|r| *r != self.repository)
            .map(|r| BlobLocation {
                registry: self.registry.clone(),
                repository: r.to_owned(),
            })
    }

    /// The blob is in this copy's repository now (put, mounted or found there).
    pub(crate) fn placed(mut self) {
        *self.guard = Some(self.repository.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    #[tokio::test]
    async fn a_second_copy_waits_for_the_first_and_mounts_from_its_repository() {
        let t = BlobClaims::new();
        let a = t.for_destination("r:5000", "mirror/app1");
        let b = t.for_destination("r:5000", "mirror/app2");
        let first = a.claim(&digest('a')).await;
        assert_eq!(first.hint(), None, "nobody holds it yet");
        // b waits while a holds the claim
        let waiting = tokio::spawn(async move { b.claim(&digest('a')).await.hint() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "b must wait for a's upload");
        first.placed();
        let hint = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("b gets the claim once a is done")
            .unwrap();
        assert_eq!(
            hint,
            Some(BlobLocation {
                registry: "r:5000".into(),
                repository: "mirror/app1".into()
            })
        );
        assert_eq!(
            t.placed("r:5000"),
            [(digest('a'), "mirror/app1".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_failed_copy_leaves_nothing_and_other_blobs_and_registries_do_not_wait() {
        let t = BlobClaims::new();
        let a = t.for_destination("r:5000", "x");
        let held = a.claim(&digest('a')).await;
        // another digest, and the same digest in another registry: no wait
        let other = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = t.for_destination("r:5000", "y").claim(&digest('b')).await;
            let _ = t.for_destination("s:5000", "y").claim(&digest('a')).await;
        });
        other.await.expect("independent claims do not wait");
        drop(held); // failed: nothing recorded
        let again = a.claim(&digest('a')).await;
        assert_eq!(again.hint(), None);
        assert!(t.placed("r:5000").is_empty());
        // the same repository: no hint (it is there already, found by HEAD)
        again.placed();
        assert_eq!(a.claim(&digest('a')).await.hint(), None);
    }
}
