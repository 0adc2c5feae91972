//! The transport model: where images live, and the two roles a place can play in a copy.
//!
//! An image is named by an [`ImageRef`], parsed from `transport:reference`:
//!
//! | form | place |
//! |---|---|
//! | `docker://HOST/REPO[:TAG\|@DIGEST]` | a registry (Docker Hub names are normalised: `docker://alpine`) |
//! | `oci:DIR[:REF]` | an [OCI image layout] directory; `REF` is an `org.opencontainers.image.ref.name` in its `index.json` |
//! | `oci-archive:FILE[:REF]` | an OCI image layout in a tar file |
//! | `docker-archive:FILE[:REF\|:@N]` | what `docker save` writes: `manifest.json`, `repositories`, configs, uncompressed layers |
//! | `dir:DIR` | skopeo's directory layout: `manifest.json`, blobs named by hex, `version`, `signature-N` |
//! | `hoist:REF` | hoist's own store (a name, an image ID or prefix, or a digest) |
//! | `REF` | no transport: the same as `hoist:REF` |
//!
//! The split is at the first `:` (as skopeo does), so `oci:` and archive paths cannot
//! contain a colon; `dir:` takes the whole rest as its path.
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
//!   signatures of a manifest, where the transport keeps them.
//! - [`commit`](ImageDestination::commit) comes **last**: it makes the image visible
//!   under its name (the tag in a registry, the `index.json` entry of a layout, the
//!   store's name). A destination dropped without commit leaves its name as it was: at
//!   most verified blobs that nothing references.
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;

use bytes::Bytes;
use hoist_types::{Compression, Descriptor, Digest, Manifest, MediaType, Progress, Reference};
use tokio::sync::mpsc;

use crate::TransportError;

pub mod any;
pub mod dir;
pub mod docker;
pub mod hoist;
pub(crate) mod local;
pub mod oci;

pub mod archive;
pub mod archive_tar;
pub mod docker_archive;
pub mod docker_archive_copy;
pub mod oci_archive;
pub mod oci_archive_copy;

pub use archive::{ArchiveFormat, LoadedImage, SaveImage, load_archive, save_archive};
pub use archive_tar::{ArchiveProblem, Output};

/// A manifest as a transport hands it over: the exact bytes, the effective media type,
/// the digest of the bytes and the parsed view (the same type the registry client uses).
pub use hoist_registry::FetchedManifest as RawManifest;

/// Chunk size used by file-backed blob streams.
pub const STREAM_CHUNK: usize = 1024 * 1024;

/// The transports, by their prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `docker://`: a registry.
    Docker,
    /// `oci:`: an OCI image layout directory.
    Oci,
    /// `oci-archive:`: an OCI image layout in a tar file.
    OciArchive,
    /// `docker-archive:`: what `docker save` writes.
    DockerArchive,
    /// `dir:`: skopeo's directory layout.
    Dir,
    /// `hoist:`: the local store.
    Hoist,
}

impl Transport {
    /// Every transport, in the order of the table above.
    pub const ALL: [Transport; 6] = [
        Transport::Docker,
        Transport::Oci,
        Transport::OciArchive,
        Transport::DockerArchive,
        Transport::Dir,
        Transport::Hoist,
    ];

    /// The name before the `:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Docker => "docker",
            Transport::Oci => "oci",
            Transport::OciArchive => "oci-archive",
            Transport::DockerArchive => "docker-archive",
            Transport::Dir => "dir",
            Transport::Hoist => "hoist",
        }
    }

    fn from_name(s: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which image of a `docker-archive:` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveSelector {
    /// The image with this tag (`docker-archive:FILE:NAME:TAG`); as a destination, the
    /// tag written into `manifest.json` and `repositories`.
    Named(Reference),
    /// The N-th image of `manifest.json`, from 0 (`docker-archive:FILE:@N`; source only).
    Index(usize),
}

/// Where an image is: a transport and its reference, parsed from `transport:reference`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `docker://HOST/REPO[:TAG|@DIGEST]`.
    Docker(Reference),
    /// `oci:DIR[:REF]`.
    Oci {
        /// The layout directory.
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` to read or write; `None`: the only
        /// image of the layout (source), no name (destination).
        name: Option<String>,
    },
    /// `oci-archive:FILE[:REF]`.
    OciArchive {
        /// The tar file.
        file: PathBuf,
        /// The `org.opencontainers.image.ref.name`, as for `oci:`.
        name: Option<String>,
    },
    /// `docker-archive:FILE[:REF|:@N]`.
    DockerArchive {
        /// The tar file.
        file: PathBuf,
        /// Which image (source) or the tag to record (destination); `None`: the only
        /// image (source), no tag (destination).
        selector: Option<ArchiveSelector>,
    },
    /// `dir:DIR`.
    Dir {
        /// The directory.
        dir: PathBuf,
    },
    /// `hoist:REF` or a bare `REF`: a name, image ID (or unique prefix) or digest in the
    /// store. As a destination it must be a name (`host/repo:tag`, normalised).
    Hoist {
        /// The reference as given.
        name: String,
    },
}

impl ImageRef {
    /// Parse `transport:reference`; a string whose prefix is no transport name is a
    /// `hoist:` reference.
    pub fn parse(s: &str) -> Result<ImageRef, TransportError> {
        let bad = |reason: &str| TransportError::InvalidImageRef {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let Some((prefix, rest)) = s.split_once(':') else {
            return hoist_ref(s, s);
        };
        let Some(transport) = Transport::from_name(prefix) else {
            return hoist_ref(s, s);
        };
        match transport {
            Transport::Docker => {
                let r = rest
                    .strip_prefix("//")
                    .ok_or_else(|| bad("the docker transport is written docker://HOST/REPO"))?;
                let reference = Reference::parse(r).map_err(|e| bad(&e.to_string()))?;
                Ok(ImageRef::Docker(reference))
            }
            Transport::Oci | Transport::OciArchive => {
                let (path, name) = split_path(rest);
                let path = nonempty_path(path).ok_or_else(|| bad("missing path"))?;
                let name = match name {
                    Some(n) => Some(check_ref_name(n).map_err(|r| bad(&r))?.to_owned()),
                    None => None,
                };
                Ok(match transport {
                    Transport::Oci => ImageRef::Oci { dir: path, name },
                    _ => ImageRef::OciArchive { file: path, name },
                })
            }
            Transport::DockerArchive => {
                let (path, sel) = split_path(rest);
                let file = nonempty_path(path).ok_or_else(|| bad("missing path"))?;
                let selector = match sel {
                    None => None,
                    Some(n) => Some(match n.strip_prefix('@') {
                        Some(i) => ArchiveSelector::Index(
                            i.parse()
                                .map_err(|_| bad("`@N` needs a non-negative number"))?,
                        ),
                        None => {
                            let r = Reference::parse(n).map_err(|e| bad(&e.to_string()))?;
                            if r.digest().is_some() || r.tag().is_none() {
                                return Err(bad("a docker-archive reference is NAME:TAG"));
                            }
                            ArchiveSelector::Named(r)
                        }
                    }),
                };
                Ok(ImageRef::DockerArchive { file, selector })
            }
            Transport::Dir => {
                let dir = nonempty_path(rest).ok_or_else(|| bad("missing path"))?;
                Ok(ImageRef::Dir { dir })
            }
            Transport::Hoist => hoist_ref(s, rest),
        }
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        match self {
            ImageRef::Docker(_) => Transport::Docker,
            ImageRef::Oci { .. } => Transport::Oci,
            ImageRef::OciArchive { .. } => Transport::OciArchive,
            ImageRef::DockerArchive { .. } => Transport::DockerArchive,
            ImageRef::Dir { .. } => Transport::Dir,
            ImageRef::Hoist { .. } => Transport::Hoist,
        }
    }
}

fn hoist_ref(input: &str, name: &str) -> Result<ImageRef, TransportError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TransportError::InvalidImageRef {
            input: input.to_owned(),
            reason: "a store reference is a name, an image ID or a digest".to_owned(),
        });
    }
    Ok(ImageRef::Hoist {
        name: name.to_owned(),
    })
}

/// `PATH[:REF]` split at the first `:`; an empty `REF` is none.
fn split_path(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((p, r)) if !r.is_empty() => (p, Some(r)),
        Some((p, _)) => (p, None),
        None => (s, None),
    }
}

fn nonempty_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

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
    Err(TransportError::Unsupported {
        what: format!("{location}: {why} (of {instance})"),
    })
}

/// Check an `org.opencontainers.image.ref.name`: components of `[A-Za-z0-9]` joined by
/// one of `-._:@+` (or `--`), separated by `/` (the image-layout grammar).
pub fn check_ref_name(s: &str) -> Result<&str, String> {
    let bad = || format!("{s:?} is not a valid image-layout reference name");
    if s.is_empty() {
        return Err(bad());
    }
    for comp in s.split('/') {
        let b = comp.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()
        {
            return Err(bad());
        }
        let mut run = 0usize;
        let mut prev_sep = 0u8;
        for &c in b {
            if c.is_ascii_alphanumeric() {
                run = 0;
            } else if b"-._:@+".contains(&c) {
                run += 1;
                if run > 2 || (run == 2 && !(prev_sep == b'-' && c == b'-')) {
                    return Err(bad());
                }
                prev_sep = c;
            } else {
                return Err(bad());
            }
        }
    }
    Ok(s)
}

impl FromStr for ImageRef {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Docker(r) => write!(f, "docker://{r}"),
            ImageRef::Oci { dir, name } | ImageRef::OciArchive { file: dir, name } => {
                write!(f, "{}:{}", self.transport(), dir.display())?;
                match name {
                    Some(n) => write!(f, ":{n}"),
                    None => Ok(()),
                }
            }
            ImageRef::DockerArchive { file, selector } => {
                write!(f, "docker-archive:{}", file.display())?;
                match selector {
                    Some(ArchiveSelector::Named(r)) => write!(f, ":{r}"),
                    Some(ArchiveSelector::Index(i)) => write!(f, ":@{i}"),
                    None => Ok(()),
                }
            }
            ImageRef::Dir { dir } => write!(f, "dir:{}", dir.display()),
            ImageRef::Hoist { name } => write!(f, "hoist:{name}"),
        }
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
}

impl Default for DestinationCaps {
    fn default() -> Self {
        DestinationCaps {
            index: true,
            signatures: false,
            format: None,
            default_format: None,
            layer_compression: None,
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

type Chunk = Result<Bytes, TransportError>;

enum Inner {
    Channel(mpsc::Receiver<Chunk>),
    Reader(Box<dyn Read + Send>),
}

/// The bytes of one blob, streamed: from a channel fed by a task (network sources) or
/// from a reader (files, archive members) read on the consumer's thread. Unverified: the
/// destination hashes and checks size and digest before publishing.
pub struct BlobStream {
    inner: Inner,
    origin: String,
    size: u64,
    seen: u64,
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("origin", &self.origin)
            .field("size", &self.size)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

/// The sending half of a channel-backed [`BlobStream`].
#[derive(Debug, Clone)]
pub struct BlobSender(mpsc::Sender<Chunk>);

impl BlobSender {
    /// Send a chunk (from an async task). `false` when the consumer is gone.
    pub async fn send(&self, c: Chunk) -> bool {
        self.0.send(c).await.is_ok()
    }

    /// Send a chunk from a blocking thread. `false` when the consumer is gone.
    pub fn blocking_send(&self, c: Chunk) -> bool {
        self.0.blocking_send(c).is_ok()
    }
}

impl BlobStream {
    /// A stream fed through a bounded channel, for `size` bytes from `origin` (a URL or
    /// path, for messages).
    pub fn channel(size: u64, origin: impl Into<String>) -> (BlobSender, BlobStream) {
        let (tx, rx) = mpsc::channel(16);
        (
            BlobSender(tx),
            BlobStream {
                inner: Inner::Channel(rx),
                origin: origin.into(),
                size,
                seen: 0,
            },
        )
    }

    /// A stream read from `reader` on the consumer's thread (it must be a blocking
    /// thread: see [`BlobStream::blocking_next`]).
    pub fn from_reader(
        reader: Box<dyn Read + Send>,
        size: u64,
        origin: impl Into<String>,
    ) -> BlobStream {
        BlobStream {
            inner: Inner::Reader(reader),
            origin: origin.into(),
            size,
            seen: 0,
        }
    }

    /// Where the bytes come from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The size the source declared (the descriptor's).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes delivered so far.
    pub fn position(&self) -> u64 {
        self.seen
    }

    /// The next chunk, `None` at the end. Call only from a blocking thread
    /// (`spawn_blocking`): it blocks on the channel or reads the file.
    pub fn blocking_next(&mut self) -> Option<Chunk> {
        let c = match &mut self.inner {
            Inner::Channel(rx) => rx.blocking_recv(),
            Inner::Reader(r) => {
                let mut buf = vec![0u8; STREAM_CHUNK];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) => break None,
                        Ok(n) => {
                            buf.truncate(n);
                            break Some(Ok(Bytes::from(buf)));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            break Some(Err(TransportError::Io {
                                what: format!("reading {}", self.origin),
                                source: e,
                            }));
                        }
                    }
                }
            }
        };
        if let Some(Ok(b)) = &c {
            self.seen += b.len() as u64;
        }
        c
    }

    /// Turn the stream into one an async consumer can poll: a reader-backed stream gets a
    /// blocking thread that reads it into a channel. A channel-backed one is returned as
    /// is.
    pub fn into_async(self) -> AsyncBlobStream {
        match self.inner {
            Inner::Channel(rx) => AsyncBlobStream {
                rx,
                size: self.size,
                origin: self.origin,
            },
            Inner::Reader(_) => {
                let (tx, rx) = mpsc::channel(16);
                let (size, origin) = (self.size, self.origin.clone());
                let mut me = self;
                tokio::task::spawn_blocking(move || {
                    while let Some(c) = me.blocking_next() {
                        let stop = c.is_err();
                        if tx.blocking_send(c).is_err() || stop {
                            break;
                        }
                    }
                });
                AsyncBlobStream { rx, size, origin }
            }
        }
    }

    /// A blocking [`Read`] over the stream (for decompressors); call only on a blocking
    /// thread. A stream error becomes an I/O error of kind `Other` carrying it.
    pub fn into_read(self) -> BlobRead {
        BlobRead {
            stream: self,
            cur: Bytes::new(),
        }
    }
}

/// A [`BlobStream`] polled from async code (a registry upload body).
#[derive(Debug)]
pub struct AsyncBlobStream {
    rx: mpsc::Receiver<Chunk>,
    size: u64,
    origin: String,
}

impl AsyncBlobStream {
    /// The next chunk, `None` at the end.
    pub async fn next(&mut self) -> Option<Chunk> {
        self.rx.recv().await
    }

    /// The declared size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the bytes come from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The underlying receiver (e.g. for `futures` stream adapters).
    pub fn into_receiver(self) -> mpsc::Receiver<Chunk> {
        self.rx
    }
}

/// [`Read`] over a [`BlobStream`]; see [`BlobStream::into_read`].
#[derive(Debug)]
pub struct BlobRead {
    stream: BlobStream,
    cur: Bytes,
}

impl Read for BlobRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.stream.blocking_next() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
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

    /// Take a manifest's exact bytes. Every blob and child it names was put before.
    fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Take simple-signing signatures of the manifest `instance`. Destinations without
    /// [`DestinationCaps::signatures`] refuse a non-empty list.
    fn put_signatures(
        &self,
        instance: &Digest,
        signatures: &[Vec<u8>],
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Make the image visible under the destination's name. Last.
    fn commit(self) -> impl Future<Output = Result<Committed, TransportError>> + Send
    where
        Self: Sized;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, &str)] = &[
            (
                "docker://alpine",
                "docker://docker.io/library/alpine:latest",
            ),
            (
                "docker://127.0.0.1:5000/ns/r:v1",
                "docker://127.0.0.1:5000/ns/r:v1",
            ),
            ("oci:/tmp/lay", "oci:/tmp/lay"),
            ("oci:/tmp/lay:v1.0", "oci:/tmp/lay:v1.0"),
            ("oci:rel:", "oci:rel"),
            ("oci-archive:/a.tar:x/y", "oci-archive:/a.tar:x/y"),
            ("docker-archive:/a.tar", "docker-archive:/a.tar"),
            ("docker-archive:/a.tar:@2", "docker-archive:/a.tar:@2"),
            (
                "docker-archive:/a.tar:busybox:1",
                "docker-archive:/a.tar:docker.io/library/busybox:1",
            ),
            ("dir:/x:y", "dir:/x:y"),
            ("hoist:alpine", "hoist:alpine"),
            ("alpine", "hoist:alpine"),
            ("localhost:5000/a:b", "hoist:localhost:5000/a:b"),
            ("sha256:abc", "hoist:sha256:abc"),
        ];
        for (input, want) in cases {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&r.to_string(), want, "{input}");
        }
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "docker:alpine",
            "docker://",
            "docker://host.example/UP",
            "oci:",
            "oci::tag",
            "oci:/x:bad tag",
            "oci:/x:-lead",
            "dir:",
            "hoist:",
            "",
            "docker-archive:/a.tar:@x",
            "docker-archive:/a.tar:repo@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "has space",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn ref_names() {
        for ok in ["latest", "v1.0", "a/b", "a--b", "x:y@z", "1"] {
            assert!(check_ref_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a/", "/a", "a b", "a-.b", "ü"] {
            assert!(check_ref_name(bad).is_err(), "{bad}");
        }
    }

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

    #[test]
    fn reader_stream_reads_in_chunks() {
        let data = vec![7u8; STREAM_CHUNK + 10];
        let s = BlobStream::from_reader(Box::new(std::io::Cursor::new(data.clone())), 0, "mem");
        let mut out = Vec::new();
        s.into_read().read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }
}
