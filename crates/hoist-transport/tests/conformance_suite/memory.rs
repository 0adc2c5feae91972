//! A transport written outside hoist, as an embedder would: an in-memory image store with
//! a source and a destination implementing the ordinary traits, handed to hoist boxed
//! (`AnySource::custom`, `AnyDestination::custom`). The conformance check runs it through
//! the same contract as the built-in transports.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::{Arc, Mutex};

use hoist_transport::TransportError;
use hoist_transport::transports::any::{AnyDestination, AnySource};
use hoist_transport::transports::conformance::Place;
use hoist_transport::transports::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ImageSource,
    ManifestRef, ManifestTarget, RawManifest, Staged,
};
use hoist_types::{Descriptor, Digest, Manifest, Progress};

/// What the memory holds: blobs by digest, manifests by digest, names.
#[derive(Debug, Default)]
struct Memory {
    blobs: HashMap<Digest, Vec<u8>>,
    manifests: HashMap<Digest, RawManifest>,
    names: HashMap<String, Digest>,
}

/// The place: one shared memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryPlace {
    mem: Arc<Mutex<Memory>>,
}

impl MemoryPlace {
    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A destination writing the image called `name`.
    pub fn destination_for(&self, name: &str) -> MemoryDestination {
        MemoryDestination {
            name: name.to_owned(),
            place: self.clone(),
            staged: Staged::new(),
        }
    }

    /// The top manifest committed under `name`.
    pub fn held(&self, name: &str) -> Option<RawManifest> {
        let m = self.lock();
        m.names.get(name).and_then(|d| m.manifests.get(d)).cloned()
    }

    /// A committed blob's bytes.
    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        let d: Digest = digest.parse().ok()?;
        self.lock().blobs.get(&d).cloned()
    }
}

/// Reads the memory's image called `name`.
pub struct MemorySource {
    name: String,
    place: MemoryPlace,
}

fn absent(location: String, what: impl std::fmt::Display) -> TransportError {
    TransportError::NotSupportedBy {
        location,
        reason: format!("no {what} here"),
    }
}

impl ImageSource for MemorySource {
    fn describe(&self) -> String {
        format!("memory:{}", self.name)
    }

    async fn get_manifest(&self, which: &ManifestRef) -> Result<RawManifest, TransportError> {
        let m = self.place.lock();
        let digest = match which {
            ManifestRef::Top => m.names.get(&self.name).cloned(),
            ManifestRef::Digest(d) => Some(d.clone()),
            ManifestRef::Tag(t) => m.names.get(t).cloned(),
        };
        digest
            .and_then(|d| m.manifests.get(&d).cloned())
            .ok_or_else(|| absent(self.describe(), format!("manifest {which:?}")))
    }

    async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, TransportError> {
        let bytes = self
            .place
            .lock()
            .blobs
            .get(&desc.digest)
            .cloned()
            .ok_or_else(|| absent(self.describe(), format!("blob {}", desc.digest)))?;
        let size = bytes.len() as u64;
        Ok(BlobStream::from_reader(
            Box::new(std::io::Cursor::new(bytes)),
            size,
            self.describe(),
        ))
    }

    async fn tags(&self) -> Result<Vec<String>, TransportError> {
        Ok(self.place.lock().names.keys().cloned().collect())
    }
}

/// Writes the image called `name`: blobs and manifests staged, all published at commit.
pub struct MemoryDestination {
    name: String,
    place: MemoryPlace,
    staged: Staged<HashMap<Digest, Vec<u8>>>,
}

impl ImageDestination for MemoryDestination {
    fn describe(&self) -> String {
        format!("memory:{}", self.name)
    }

    fn capabilities(&self) -> DestinationCaps {
        DestinationCaps::default()
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        _hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        Ok(self.place.lock().blobs.contains_key(&desc.digest)
            || self.staged.lock().extra.contains_key(&desc.digest))
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        _progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        // Read at most one byte more than declared, off the runtime's workers.
        let limit = desc.size + 1;
        let bytes = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            stream
                .into_read()
                .take(limit)
                .read_to_end(&mut out)
                .map(|_| out)
        })
        .await
        .map_err(|e| TransportError::Task {
            what: e.to_string(),
        })?
        .map_err(|e| TransportError::Stream {
            what: format!("{}: reading blob {}", self.describe(), desc.digest),
            source: e,
        })?;
        if bytes.len() as u64 != desc.size {
            return Err(TransportError::SizeMismatch {
                what: format!("{}: blob {}", self.describe(), desc.digest),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        if Digest::sha256_of(&bytes) != desc.digest {
            return Err(TransportError::Stream {
                what: format!("{}: blob {}", self.describe(), desc.digest),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "digest mismatch"),
            });
        }
        self.staged.lock().extra.insert(desc.digest.clone(), bytes);
        Ok(())
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        self.staged.record(manifest, target);
        Ok(())
    }

    async fn commit(self) -> Result<Committed, TransportError> {
        let location = self.describe();
        let mut st = self.staged.take();
        let top = st.take_top(&location)?;
        let mut m = self.place.lock();
        // Every blob the top manifest names must be here (staged or there before).
        if let Manifest::Image(img) = &top.manifest {
            for d in std::iter::once(&img.config).chain(&img.layers) {
                if !st.extra.contains_key(&d.digest) && !m.blobs.contains_key(&d.digest) {
                    return Err(absent(
                        location,
                        format!("blob {} for the manifest", d.digest),
                    ));
                }
            }
        }
        m.blobs.extend(st.extra);
        for i in st
            .instances
            .into_iter()
            .chain(st.tags.into_iter().map(|(_, t)| t))
        {
            m.manifests.insert(i.digest.clone(), i);
        }
        let digest = top.digest.clone();
        m.manifests.insert(digest.clone(), top);
        m.names.insert(self.name.clone(), digest.clone());
        Ok(Committed { digest, location })
    }
}

impl Place for MemoryPlace {
    type Src = AnySource;
    type Dst = AnyDestination;

    fn label(&self) -> String {
        "memory: (boxed)".to_owned()
    }

    async fn destination(&self, name: &str) -> Result<AnyDestination, TransportError> {
        Ok(AnyDestination::custom(self.destination_for(name)))
    }

    async fn source(&self, name: &str) -> Result<AnySource, TransportError> {
        Ok(AnySource::custom(MemorySource {
            name: name.to_owned(),
            place: self.clone(),
        }))
    }

    /// Blobs no name reaches.
    fn leftovers(&self) -> Vec<String> {
        let m = self.lock();
        let mut reached = std::collections::HashSet::new();
        for d in m.names.values() {
            if let Some(Manifest::Image(img)) = m.manifests.get(d).map(|r| &r.manifest) {
                reached.extend(
                    std::iter::once(&img.config.digest).chain(img.layers.iter().map(|l| &l.digest)),
                );
            }
        }
        m.blobs
            .keys()
            .filter(|d| !reached.contains(d))
            .map(|d| format!("blob {d}"))
            .collect()
    }
}
