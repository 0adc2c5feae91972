//! The two roles a place can play in a copy, and what each must do.
//!
//! # What a source must do ([`ImageSource`])
//!
//! - [`get_manifest`](ImageSource::get_manifest) returns the **exact bytes** of a
//!   manifest with its media type and its digest ([`RawManifest`]): the top one
//!   ([`ManifestRef::Top`], what the reference names: an image manifest or an index), an
//!   instance of an index ([`ManifestRef::Digest`]), or another tag of the same repository
//!   ([`ManifestRef::Tag`], e.g. a cosign `sha256-HEX.sig` tag). Bytes are never
//!   re-serialised; a manifest asked for by digest is verified against it; at most
//!   [`hoist_types::MAX_MANIFEST_SIZE`] bytes are read.
//! - [`get_blob`](ImageSource::get_blob) returns a [`BlobStream`] of a blob's bytes,
//!   **streamed** (never a whole layer in memory). The source may check what it can
//!   cheaply, but it need not verify: the destination always does.
//! - [`get_signatures`](ImageSource::get_signatures) returns containers' simple-signing
//!   signatures of a manifest (`dir:` keeps them as `signature-N` files); empty where the
//!   transport has none.
//! - [`tags`](ImageSource::tags) lists the tags of the source's repository (or the names
//!   a layout holds).
//! - [`referrers`](ImageSource::referrers) lists the manifests whose `subject` is a given
//!   manifest, where the transport knows them (the registry's referrers API).
//! - [`blob_locations`](ImageSource::blob_locations) says which registry repositories are
//!   known to hold the source's blobs, so a registry destination can mount instead of
//!   upload.
//!
//! # What a destination must do ([`ImageDestination`])
//!
//! - [`capabilities`](ImageDestination::capabilities) says what it can hold (indexes,
//!   signatures, manifest formats, layer compression); the copy engine converts before
//!   it writes (e.g. `docker-archive:` takes only Docker schema 2 with plain tar layers).
//! - [`has_blob`](ImageDestination::has_blob) answers whether it already has a blob,
//!   given [`BlobLocation`] hints: a registry may make the blob present without moving its
//!   bytes (a cross-repository mount) and then answers `true`. The engine never sends a
//!   blob the destination has.
//! - [`put_blob`](ImageDestination::put_blob) takes a blob stream and **verifies size and
//!   digest before the blob becomes visible** (temp file + fsync + rename + fsync dir, or
//!   the registry's digest check). A failed or short stream leaves nothing visible. Calls
//!   may run concurrently for different blobs.
//! - [`put_manifest`](ImageDestination::put_manifest) takes manifest bytes exactly as
//!   given, for a [`ManifestTarget`]: the top manifest (named by the destination's own
//!   reference when committed), an instance of an index (by digest only), or an extra tag.
//!   Children are put before the index that lists them, and every blob a manifest names
//!   before the manifest.
//! - [`put_signatures`](ImageDestination::put_signatures) stores simple-signing
//!   signatures of a manifest, where the transport keeps them; the default refuses a
//!   non-empty list (only destinations with [`DestinationCaps::signatures`] override it).
//! - [`commit`](ImageDestination::commit) comes **last**: it makes the image visible
//!   under its name (the tag in a registry, the `index.json` entry of a layout, the
//!   store's name). A destination dropped without commit leaves its name as it was: at
//!   most verified blobs that nothing references.
//!
//! # Destination bookkeeping ([`Staged`])
//!
//! What a destination keeps between its `put_*` calls and [`commit`](ImageDestination::commit)
//! is the same everywhere, so it is one type: [`Staged`] holds a [`StagedState`] (the top
//! manifest, instances, extra tags, signatures, and `X`, what one destination needs
//! besides) behind a mutex, because puts take `&self` and run concurrently. A destination
//! [`record`](Staged::record)s what it does not write at once, and at commit
//! [`take`](Staged::take)s the state and [`take_top`](StagedState::take_top)s the top
//! manifest, which fails the same way everywhere when none was put.
//!

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use hoist_types::{BlobKind, Compression, Descriptor, Digest, Manifest, MediaType, Progress};

use super::stream::BlobStream;
use crate::TransportError;
use crate::fetch::BlobFetcher;

/// A manifest as a transport hands it over: the exact bytes, the effective media type,
/// the digest of the bytes and the parsed view (the same type the registry client uses).
pub use hoist_registry::FetchedManifest as RawManifest;

/// [`ImageDestination::put_signatures`] of a destination that keeps no simple-signing
/// signatures: nothing to do without any, else a clear refusal naming `location`, the
/// signed `instance` and `why` (e.g. "an OCI layout keeps no simple-signing signatures").
pub(crate) fn refuse_signatures(
    location: String,
    instance: &Digest,
    signatures: &[Vec<u8>],
    why: &str,
) -> Result<(), TransportError> {
    if signatures.is_empty() {
        return Ok(());
    }
    Err(TransportError::NotSupportedBy {
        location,
        reason: format!("{why} (of {instance})"),
    })
}

/// What a destination keeps between its `put_*` calls and `commit` (see [`Staged`]).
///
/// `X` is what one destination needs besides (the store keeps its staged blob writers and
/// blob locks there); `()` for most.
#[derive(Debug, Default)]
pub struct StagedState<X = ()> {
    /// The manifest put as [`ManifestTarget::Top`] (the last one put wins).
    pub top: Option<RawManifest>,
    /// Manifests put as [`ManifestTarget::Instance`], in order.
    pub instances: Vec<RawManifest>,
    /// Manifests put as [`ManifestTarget::Tag`], with their tag, in order.
    pub tags: Vec<(String, RawManifest)>,
    /// Simple-signing signatures taken, by the manifest they sign, in order.
    pub signatures: Vec<(Digest, Vec<Vec<u8>>)>,
    /// The destination's own extras.
    pub extra: X,
}

impl<X> StagedState<X> {
    /// Take the top manifest; committing without one is an error naming `location` (the
    /// destination's `describe()`), the same for every destination.
    pub fn take_top(&mut self, location: &str) -> Result<RawManifest, TransportError> {
        self.top.take().ok_or_else(|| TransportError::OutOfOrder {
            location: location.to_owned(),
            what: "commit without a manifest",
        })
    }
}

/// The bookkeeping every destination shares: a [`StagedState`] behind a mutex, so the
/// `&self` puts (which may run concurrently) can record into it and `commit` can take it.
///
/// A destination keeps one, [`record`](Staged::record)s the manifests (and
/// [`record_signatures`](Staged::record_signatures) the signatures) it does not write at
/// once, and at commit calls [`take`](Staged::take). A poisoned lock is recovered: the
/// state is plain data, and a panicking put leaves it as consistent as an error would.
#[derive(Debug, Default)]
pub struct Staged<X = ()> {
    state: Mutex<StagedState<X>>,
}

impl<X: Default> Staged<X> {
    /// Nothing staged yet.
    pub fn new() -> Staged<X> {
        Staged {
            state: Mutex::new(StagedState::default()),
        }
    }

    /// The state, locked (do not hold it across an `await`).
    pub fn lock(&self) -> MutexGuard<'_, StagedState<X>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record `manifest` for `target`: as the top (replacing one put before), an
    /// instance, or under an extra tag.
    pub fn record(&self, manifest: &RawManifest, target: &ManifestTarget) {
        let mut st = self.lock();
        match target {
            ManifestTarget::Top => st.top = Some(manifest.clone()),
            ManifestTarget::Instance => st.instances.push(manifest.clone()),
            ManifestTarget::Tag(t) => st.tags.push((t.clone(), manifest.clone())),
        }
    }

    /// Record simple-signing signatures of `instance` (none: nothing recorded).
    pub fn record_signatures(&self, instance: &Digest, signatures: &[Vec<u8>]) {
        if !signatures.is_empty() {
            self.lock()
                .signatures
                .push((instance.clone(), signatures.to_vec()));
        }
    }

    /// Everything staged, leaving nothing behind (for `commit`).
    pub fn take(&self) -> StagedState<X> {
        std::mem::take(&mut *self.lock())
    }
}

/// The manifest formats `--format` converts between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestFormat {
    /// OCI image manifest and index, OCI config and layer media types.
    Oci,
    /// Docker schema 2 manifest and manifest list, Docker config and layer media types.
    V2s2,
}

impl ManifestFormat {
    /// The `--format` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestFormat::Oci => "oci",
            ManifestFormat::V2s2 => "v2s2",
        }
    }

    /// The format a manifest media type belongs to (`None` for schema 1 and unknown types).
    pub fn of(media_type: &MediaType) -> Option<ManifestFormat> {
        match media_type {
            MediaType::OciManifest | MediaType::OciIndex => Some(ManifestFormat::Oci),
            MediaType::DockerManifest | MediaType::DockerManifestList => Some(ManifestFormat::V2s2),
            _ => None,
        }
    }
}

impl FromStr for ManifestFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "oci" => Ok(ManifestFormat::Oci),
            "v2s2" | "docker" => Ok(ManifestFormat::V2s2),
            _ => Err(format!("unknown manifest format {s:?} (want oci or v2s2)")),
        }
    }
}

impl fmt::Display for ManifestFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which manifest a source is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    /// The one the source's reference names (an image manifest or an index).
    Top,
    /// One named by digest (an index's instance, a referrer); verified against it.
    Digest(Digest),
    /// Another tag of the same repository (e.g. a cosign `sha256-HEX.sig` tag).
    Tag(String),
}

/// Where a destination files a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestTarget {
    /// The top manifest: named by the destination's reference at commit.
    Top,
    /// An instance of an index, or a referrer: stored by digest only.
    Instance,
    /// Stored by digest and under this extra tag of the destination's repository.
    Tag(String),
}

/// A registry repository known to hold a blob: the hint for a cross-repository mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobLocation {
    /// The registry as in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository (`library/alpine`).
    pub repository: String,
}

/// What a destination can hold; the copy engine converts to fit before writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationCaps {
    /// It can hold an index with its instances (else one image is chosen).
    pub index: bool,
    /// It keeps simple-signing signatures (`put_signatures` does something).
    pub signatures: bool,
    /// It takes only this manifest format (`None`: any).
    pub format: Option<ManifestFormat>,
    /// The manifest format written when the copy asks for none (`None`: as it comes).
    /// An OCI layout converts Docker schema 2 to OCI by default, as skopeo does: skopeo
    /// and umoci read only OCI manifests from a layout. An explicit `--format` wins.
    pub default_format: Option<ManifestFormat>,
    /// It stores layers only with this compression (`None`: as they come).
    pub layer_compression: Option<Compression>,
    /// It lays blobs out in the order they arrive (an archive's tar entries), so the
    /// engine sends them one at a time, in manifest order: the same image gives the same
    /// bytes on every run.
    pub ordered: bool,
}

impl Default for DestinationCaps {
    fn default() -> Self {
        DestinationCaps {
            index: true,
            signatures: false,
            format: None,
            default_format: None,
            layer_compression: None,
            ordered: false,
        }
    }
}

/// What a committed destination reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The digest of the top manifest written.
    pub digest: Digest,
    /// Where it went, as `transport:reference`.
    pub location: String,
}

/// Parse and check manifest bytes read from a local file or archive: classify them
/// (`declared` is the media type the container recorded, if any), and when `expected`
/// is given, verify the digest. The digest of the bytes is computed either way.
pub fn raw_manifest(
    bytes: Vec<u8>,
    declared: Option<&MediaType>,
    expected: Option<&Digest>,
) -> Result<RawManifest, hoist_types::TypeError> {
    let (manifest, media_type) = Manifest::parse(&bytes, declared)?;
    if let Some(d) = expected {
        Manifest::verify_digest(&bytes, &media_type, d)?;
    }
    let digest = match expected {
        Some(d) => d.clone(),
        None => Manifest::digest_of(&bytes, &media_type)?,
    };
    Ok(RawManifest {
        bytes,
        media_type,
        digest,
        manifest,
    })
}

/// A place images are read from. See the module docs for the contract.
pub trait ImageSource: Send + Sync {
    /// `transport:reference`, for messages.
    fn describe(&self) -> String;

    /// A manifest's exact bytes, media type and digest.
    fn get_manifest(
        &self,
        which: &ManifestRef,
    ) -> impl Future<Output = Result<RawManifest, TransportError>> + Send;

    /// A blob's bytes, streamed.
    fn get_blob(
        &self,
        desc: &Descriptor,
    ) -> impl Future<Output = Result<BlobStream, TransportError>> + Send;

    /// Simple-signing signatures of the top manifest (`None`) or of an instance.
    fn get_signatures(
        &self,
        instance: Option<&Digest>,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, TransportError>> + Send {
        let _ = instance;
        async { Ok(Vec::new()) }
    }

    /// The tags of the source's repository (or the names a layout holds).
    fn tags(&self) -> impl Future<Output = Result<Vec<String>, TransportError>> + Send;

    /// Manifests whose `subject` is `subject`, where the transport knows them.
    fn referrers(
        &self,
        subject: &Digest,
    ) -> impl Future<Output = Result<Vec<Descriptor>, TransportError>> + Send {
        let _ = subject;
        async { Ok(Vec::new()) }
    }

    /// Registry repositories known to hold this source's blobs (mount hints).
    fn blob_locations(&self) -> Vec<BlobLocation> {
        Vec::new()
    }

    /// The index the top manifest was chosen from, where the source keeps it (the store,
    /// for an image pulled or copied from an index): a copy of every platform
    /// ([`CopyOptions::all`](crate::copy::CopyOptions::all)) copies this index, and the
    /// instances it lists, instead of the top image alone. `None` (the default): the top
    /// is all there is. An error when the source keeps the index but not every manifest it
    /// lists: such a copy is refused before anything moves.
    fn index_of_top(
        &self,
    ) -> impl Future<Output = Result<Option<RawManifest>, TransportError>> + Send {
        async { Ok(None) }
    }

    /// A small blob (a config) the source read before the copy asked for it, with the
    /// URL it came from: the engine takes these bytes (and verifies them) instead of
    /// reading the blob again ([`Prefetched`](super::prefetched::Prefetched)). `None`
    /// (the default): nothing was read ahead.
    fn read_before(&self, desc: &Descriptor) -> Option<(Vec<u8>, String)> {
        let _ = desc;
        None
    }

    /// The source's resumable blob reader, where it has one: a registry's (reads at an
    /// offset with `Range`, large blobs over several connections, retries, mirrors). The
    /// copy engine hands it to [`ImageDestination::put_blob_from`], so a destination that
    /// keeps partial writes resumes within and across runs. `None` (the default): blobs
    /// are only streamed with [`get_blob`](Self::get_blob).
    fn blob_fetcher(&self) -> Option<&BlobFetcher> {
        None
    }
}

/// A place images are written to. See the module docs for the contract.
pub trait ImageDestination: Send + Sync {
    /// `transport:reference`, for messages.
    fn describe(&self) -> String;

    /// What it can hold.
    fn capabilities(&self) -> DestinationCaps;

    /// Whether the blob is present, or was made present without moving its bytes
    /// (a mount from one of `hints`).
    fn has_blob(
        &self,
        desc: &Descriptor,
        hints: &[BlobLocation],
    ) -> impl Future<Output = Result<bool, TransportError>> + Send;

    /// Take a blob, verifying size and digest before it becomes visible. Progress gets
    /// `BlobProgress` events as bytes are written.
    fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        progress: &dyn Progress,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Take a blob from a source's resumable reader ([`ImageSource::blob_fetcher`]),
    /// verifying it as [`put_blob`](Self::put_blob) does; `false` when the destination
    /// found it present meanwhile (another process put it). A destination that keeps
    /// resumable partial writes overrides it (the store, `oci:`, `dir:`: a partial file
    /// invisible to readers, kept when the copy stops, resumed by the next run, written
    /// in place by Range slices). The default streams the blob from the reader into
    /// `put_blob` (resumed within the run from the byte reached, never a byte twice).
    fn put_blob_from(
        &self,
        desc: &Descriptor,
        kind: BlobKind,
        fetcher: &BlobFetcher,
        progress: &dyn Progress,
    ) -> impl Future<Output = Result<bool, TransportError>> + Send {
        async move {
            let stream = fetcher.stream(desc, 0).await?;
            progress.event(&hoist_types::ProgressEvent::BlobStart {
                digest: &desc.digest,
                size: desc.size,
                kind,
                endpoint: stream.origin(),
            });
            self.put_blob(desc, stream, progress).await?;
            Ok(true)
        }
    }

    /// A small blob (a manifest or a config, at most 4 MiB) this destination already
    /// holds, read back and verified, so the engine need not fetch it; `None` (the
    /// default) when it does not hold it. A destination shared by concurrent writers (the
    /// store) also reserves the digest for this copy until it commits (its blob lock), so
    /// a concurrent copy of the same image waits, then finds everything there. The
    /// engine asks for manifests by digest first, then the config, then moves layers:
    /// that is the lock order.
    fn reuse(
        &self,
        desc: &Descriptor,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, TransportError>> + Send {
        let _ = desc;
        async { Ok(None) }
    }

    /// A blob this destination holds (put by this copy or there before), read back for
    /// the engine to compute what it needs from it (the diff IDs of a converted schema 1
    /// image); `None` (the default): the engine reads the source again.
    fn read_back(
        &self,
        desc: &Descriptor,
    ) -> impl Future<Output = Result<Option<BlobStream>, TransportError>> + Send {
        let _ = desc;
        async { Ok(None) }
    }

    /// The indexes the image about to be put as top manifest was chosen from, outermost
    /// first (a copy without `all` of a multi-platform image). The default ignores them;
    /// the store records the outermost with the image and keeps them all, as a pull does.
    fn chosen_from(&self, indexes: &[RawManifest]) {
        let _ = indexes;
    }

    /// Take a manifest's exact bytes. Every blob and child it names was put before.
    fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Take simple-signing signatures of the manifest `instance`. The default, for
    /// destinations without [`DestinationCaps::signatures`], accepts an empty list and
    /// refuses any other, naming the destination and `instance`; a destination that keeps
    /// signatures overrides it (e.g. with [`Staged::record_signatures`]).
    fn put_signatures(
        &self,
        instance: &Digest,
        signatures: &[Vec<u8>],
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        let refused = refuse_signatures(
            self.describe(),
            instance,
            signatures,
            "this destination keeps no simple-signing signatures",
        );
        async move { refused }
    }

    /// Make the image visible under the destination's name. Last.
    fn commit(self) -> impl Future<Output = Result<Committed, TransportError>> + Send
    where
        Self: Sized;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            ManifestFormat::of(&MediaType::DockerManifestList),
            Some(ManifestFormat::V2s2)
        );
        assert_eq!(
            ManifestFormat::of(&MediaType::OciIndex),
            Some(ManifestFormat::Oci)
        );
        assert_eq!(ManifestFormat::of(&MediaType::DockerManifestV1), None);
        assert_eq!("v2s2".parse::<ManifestFormat>(), Ok(ManifestFormat::V2s2));
        assert!("x".parse::<ManifestFormat>().is_err());
    }
}
