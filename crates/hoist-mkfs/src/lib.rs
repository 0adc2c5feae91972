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
//! ext4 images are written by the kernel: an empty image (`mke2fs`) is loop-mounted in a
//! private mount namespace of a helper thread, the layers are applied straight into it by
//! `hoist-unpack`, and the image is shrunk to its use plus headroom (`resize2fs`); where
//! loop mounts are refused, `mke2fs -t ext4 -d` builds it from an unpacked directory. erofs
//! images are made by `mkfs.erofs` (erofs-utils) from a directory unpacked as root. The
//! programs are looked up in `$PATH`, `/usr/sbin` and `/sbin`, and a missing one is an error
//! naming its package ([`MkfsError::ToolMissing`]).

mod build;
mod error;
mod mkfs;
mod mounted;
mod size;
pub mod tools;

pub use build::{
    BuildOptions, BuildResult, Ext4Writer, Format, LayerResult, RunInfo, build_rootfs,
};
pub use error::MkfsError;
pub use mkfs::{FsType, make_erofs, make_ext4};
pub use size::{Size, Usage};
