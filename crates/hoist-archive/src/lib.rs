//! Image archives: `docker-archive` (what `docker save` writes and `docker load` reads)
//! and `oci-archive` (an OCI image layout in a tar), read and written.
//!
//! This crate knows the formats, not the stores or the copy engine: hoist-transport's
//! archive sources and destinations, `hoist load` and `hoist save` are built on it.
//!
//! - [`ArchiveIndex`]: an archive's entries indexed in one pass with the project's one tar
//!   parser ([`hoist_unpack::TarReader`]), entries read by offset ([`EntryReader`], so
//!   several readers share one file), links between members followed, compressed
//!   archives decompressed to a temp file first ([`spool_archive`]).
//! - [`docker`]: `manifest.json` and `repositories` ([`docker::ManifestItem`]), the images
//!   of a docker-archive with their configs checked ([`docker::DockerArchive`]), layer
//!   streams checked against their diff IDs, and the `manifest.json` writer.
//! - [`oci`]: the layout in the tar ([`oci::OciArchive`]): `oci-layout`, `index.json`, the
//!   images it names (an index resolved to a platform with `ImageIndex::choose`),
//!   documents and blobs verified against their descriptors.
//! - [`TarWriter`] (sequential, for streams) and [`SlotWriter`] (each entry written once,
//!   at a slot reserved in the output file, by several writers at once), and
//!   [`TempOutput`]: a file published atomically (temp file beside it, fsync, rename).
//! - [`ArchiveProblem`]: everything an untrusted archive can get wrong, each naming the
//!   member; [`ArchiveError`] adds the archive's path and I/O failures.
//!
//! ```
//! use hoist_archive::{ArchiveFormat, ArchiveIndex, TarWriter};
//! use hoist_archive::docker::DockerArchive;
//! use hoist_types::{Digest, NoProgress};
//!
//! // A one-layer docker-archive, written in the doctest: the layer is itself a tar.
//! let mut layer = TarWriter::new(Vec::new());
//! layer.bytes("hello.txt", b"hello\n")?;
//! let layer = layer.finish()?;
//! let diff_id = Digest::sha256_of(&layer);
//! let config = format!(
//!     r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
//! );
//! let config_name = format!("{}.json", Digest::sha256_of(config.as_bytes()).hex());
//! let manifest = format!(
//!     r#"[{{"Config":"{config_name}","RepoTags":["demo:1"],"Layers":["layer/layer.tar"]}}]"#
//! );
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("demo.tar");
//! let mut tar = TarWriter::new(std::fs::File::create(&path)?);
//! tar.bytes(&config_name, config.as_bytes())?;
//! tar.dir("layer")?;
//! tar.bytes("layer/layer.tar", &layer)?;
//! tar.bytes("manifest.json", manifest.as_bytes())?;
//! tar.finish()?;
//!
//! // Index it once; entries are read by offset from then on.
//! let index = ArchiveIndex::open(&path)?;
//! assert_eq!(ArchiveFormat::detect(&index)?, ArchiveFormat::DockerArchive);
//! assert_eq!(index.read_document("manifest.json", "the manifest")?, manifest.as_bytes());
//!
//! // The docker-archive view: the image, its config checked, its layer against its diff ID.
//! let archive = DockerArchive::from_index(index)?;
//! let image = archive.image(archive.select(None)?)?;
//! assert_eq!(image.tags[0].to_string(), "docker.io/library/demo:1");
//! let mut out = Vec::new();
//! archive.copy_layer(&image.layers[0], &mut out, &NoProgress)?;
//! assert_eq!(out, layer);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod docker;
mod index;
pub mod oci;
mod problem;
mod slots;
mod writer;

pub use index::{
    ArchiveIndex, EntryReader, MAX_DOCUMENT, MAX_ENTRIES, MAX_LINK_DEPTH, MAX_SPOOLED,
    clean_member, spool_archive,
};
pub use problem::ArchiveProblem;
pub use slots::{Slot, SlotWriter};
pub use writer::{EntrySink, TarWriter, TempOutput};

use std::path::Path;

/// Most distinct layers one load stages at once (each holds an open temp file until the
/// whole archive has been checked).
pub const MAX_LOAD_LAYERS: usize = 512;

/// Errors from reading or writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An archive that is malformed, unsafe or over a limit.
    #[error("{archive}")]
    Bad {
        /// The archive's path.
        archive: String,
        /// What is wrong, naming the entry (boxed: it is large and rare).
        #[source]
        problem: Box<ArchiveProblem>,
    },
    /// No entry of an index in the archive fits the wanted platform.
    #[error("{reference}: {choice}")]
    NoMatchingPlatform {
        /// The archive and the index's entry.
        reference: String,
        /// The wanted platform and every entry of the index.
        choice: Box<hoist_types::NoPlatformMatch>,
    },
    /// A filesystem operation on a path failed.
    #[error("cannot {op}{}", hoist_types::io_path(.path))]
    Io {
        /// What was being done (`"read archive"`, `"create a temp file in"`, …).
        op: &'static str,
        /// The path concerned, when there is one.
        path: Option<std::path::PathBuf>,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading, copying or writing the bytes of one entry failed.
    #[error("{what}")]
    Stream {
        /// What was being done, naming the entry and the archive.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Wraps a problem with the archive's name.
pub(crate) fn bad(archive: &Path, problem: ArchiveProblem) -> ArchiveError {
    ArchiveError::Bad {
        archive: archive.display().to_string(),
        problem: Box::new(problem),
    }
}

/// The two archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s format.
    DockerArchive,
    /// A tar of an OCI image layout.
    OciArchive,
}

impl ArchiveFormat {
    /// What an indexed archive is: `manifest.json` makes it a docker-archive (docker 25
    /// and later write both; `manifest.json` carries the tags), else `index.json` and
    /// `oci-layout` an oci-archive.
    pub fn detect(index: &ArchiveIndex) -> Result<ArchiveFormat, ArchiveError> {
        if index.contains(docker::MANIFEST_JSON) {
            Ok(ArchiveFormat::DockerArchive)
        } else if index.contains("index.json") && index.contains("oci-layout") {
            Ok(ArchiveFormat::OciArchive)
        } else {
            Err(index.bad(ArchiveProblem::Unrecognised))
        }
    }

    /// The transport name.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveFormat::DockerArchive => "docker-archive",
            ArchiveFormat::OciArchive => "oci-archive",
        }
    }
}
