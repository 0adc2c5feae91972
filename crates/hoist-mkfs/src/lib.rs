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

mod build;
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
pub use error::MkfsError;
pub use mkfs::{FsType, make_erofs, make_ext4};
pub use size::{Size, Usage};
