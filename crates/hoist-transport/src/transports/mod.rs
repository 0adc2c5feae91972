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
//! The crate's transport layer is split by concern, with no imports between them in a
//! cycle: [`reference`](mod@reference) (the grammar above, pure parsing), [`stream`] (blob streams) and
//! [`traits`] (the [`ImageSource`] / [`ImageDestination`] contract, capabilities and the
//! destination bookkeeping they share); then one module per transport, [`any`], the
//! dispatch over them, and [`dyn_traits`], the boxed forms a transport written outside
//! hoist is plugged in by (`AnySource::Custom`, `AnyDestination::Custom`). Everything is re-exported here, so
//! `hoist_transport::transports::ImageRef` and friends keep their paths.
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md

pub mod reference;
pub mod stream;
pub mod traits;

pub mod any;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod dir;
pub mod docker;
pub mod dyn_traits;
pub mod hoist;
pub(crate) mod local;
pub mod oci;
pub mod prefetched;

pub mod archive;
pub mod docker_archive;
pub mod oci_archive;
pub(crate) mod slot_archive;

pub use archive::{LoadedImage, SaveImage, load_archive, load_archive_trusted, save_images};
pub use docker_archive::DockerArchiveWriter;
pub use dyn_traits::{DynImageDestination, DynImageSource};
pub use hoist_archive::{ArchiveFormat, ArchiveProblem};
pub use oci_archive::OciArchiveWriter;
pub use reference::{ArchiveSelector, ImageRef, Transport, check_ref_name};
pub use slot_archive::ArchiveTarget;
pub use stream::{AsyncBlobStream, BlobRead, BlobSender, BlobStream, STREAM_CHUNK};
pub(crate) use traits::refuse_signatures;
pub use traits::{
    BlobLocation, Committed, DestinationCaps, ImageDestination, ImageSource, ManifestFormat,
    ManifestRef, ManifestTarget, RawManifest, Staged, StagedState, raw_manifest,
};
