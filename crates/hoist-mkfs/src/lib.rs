//! hoist's root filesystem images.
//!
//! [`build_rootfs`] turns an image in the store into a root filesystem (matchlock's
//! `Builder`): a directory, an ext4 image or an erofs image, flattened or one per layer
//! (whiteouts in overlayfs form: 0/0 character devices and `trusted.overlay.opaque=y`), so
//! that the lowers stacked base → top with overlayfs give the flattened tree. Results are
//! cached in the store (`hoist/rootfs/`, see `hoist_unpack::cache`): flattened ones by the
//! top chain ID, per-layer ones by diff ID, so a warm build returns at once and images that
//! share base layers share their per-layer images.
//!
//! ext4 and erofs images are written by hoist's own writers ([`ext4`], [`erofs`]) straight
//! from the layer blobs: the final tree is modelled in memory
//! ([`hoist_unpack::tree::FsTree`], the same rules as `hoist unpack`), the layout computed,
//! and each file's bytes streamed from its layer into its final blocks; no extracted
//! directory, no root, no loop device, no mke2fs or mkfs.erofs, and the same bytes for the
//! same image and options. With [`BuildOptions::verity`] a dm-verity hash tree is appended
//! to each image ([`verity`]). Reference writers stay selectable ([`Ext4Writer`],
//! [`ErofsWriter`]): the kernel through a loop mount, `mke2fs -d` and `mkfs.erofs` from a
//! directory unpacked as root (tests and benchmarks compare against them). Those programs
//! are looked up in `$PATH`, `/usr/sbin` and `/sbin`, and a missing one is an error naming
//! its package ([`MkfsError::ToolMissing`]).
//!
//! # Example
//!
//! An image of one layer committed into a store, then its erofs root filesystem, built
//! without root and answered from the cache the second time:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use hoist_mkfs::{BuildOptions, Format, build_rootfs};
//! use hoist_store::{ImageCommit, Store};
//! use hoist_types::{Descriptor, Digest, MediaType, NoProgress, Reference};
//!
//! // One uncompressed layer holding etc/hostname (its digest is its diff ID).
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut header = tar::Header::new_ustar();
//! header.set_mode(0o644);
//! header.set_size(6);
//! tar.append_data(&mut header, "etc/hostname", &b"hoist\n"[..])?;
//! let layer = tar.into_inner()?;
//! let layer_digest = Digest::sha256_of(&layer);
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("store"))?;
//! store.put_blob(&layer_digest, &layer)?;
//! let config = format!(
//!     r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
//! );
//! let config_digest = Digest::sha256_of(config.as_bytes());
//! store.put_blob(&config_digest, config.as_bytes())?;
//! let manifest = format!(
//!     r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
//!        "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},
//!        "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
//!     config.len(),
//!     layer.len(),
//! );
//! let manifest_digest = Digest::sha256_of(manifest.as_bytes());
//! store.put_blob(&manifest_digest, manifest.as_bytes())?;
//! let record = store.commit_image(ImageCommit {
//!     name: Some(Reference::parse("example.com/demo:1")?),
//!     manifest: Descriptor::new(MediaType::OciManifest, manifest_digest, manifest.len() as u64),
//!     index: None,
//!     source: None,
//! })?;
//!
//! let mut opts = BuildOptions::default();
//! opts.format = Some(Format::Erofs);
//! let built = build_rootfs(&store, &record, &opts, &NoProgress)?;
//! let image = std::fs::read(&built.rootfs_path)?;
//! // The erofs superblock's magic, 1024 bytes in.
//! assert_eq!(image[1024..1028], 0xE0F5_E1E2u32.to_le_bytes());
//! assert!(!built.cached);
//! assert!(build_rootfs(&store, &record, &opts, &NoProgress)?.cached);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod build;
mod data;
pub mod erofs;
mod error;
pub mod ext4;
mod mkfs;
mod mounted;
mod size;
mod source;
pub mod tools;
pub mod verity;

pub use build::{
    BuildOptions, BuildResult, ErofsWriter, Ext4Writer, Format, LayerResult, RunInfo, build_rootfs,
};
pub use data::{DataSink, SinkFactory};
pub use error::MkfsError;
pub use mkfs::{FsType, make_erofs, make_ext4};
pub use size::{Size, Usage};
