//! hoist's safe layer application.
//!
//! Layer tars are the most dangerous input of the container world: most unpack CVEs of
//! docker, containerd, umoci and the Rust `tar` crate are escapes from the target directory.
//! This crate applies them with these rules:
//!
//! - **One parser** ([`TarReader`]) for every consumer: unpack, flatten ([`export`]), the
//!   rootfs builds of `hoist-mkfs` and the diff ID all see the same entries. It reads
//!   headers itself (with the `tar` crate's header types, never its `unpack`), under
//!   [`Limits`] (decompressed size, entry count, path length and depth, PAX and xattr size,
//!   zstd window), and refuses parser differentials (a PAX size that contradicts the header,
//!   data after the end-of-archive marker, uid 4294967295, ...).
//! - **One streaming pass** per layer ([`LayerStream`]): the blob is decompressed (gzip with
//!   zlib-rs, zstd, or none, by media type; content whose magic contradicts the media type
//!   is refused), hashed into the diff ID, which is checked against the config at the end,
//!   and applied. There is no uncompressed temp copy.
//! - **Never outside the root**: every parent directory is resolved with `openat2(
//!   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so symlinks resolve inside the root; the last
//!   component is created with `*at` calls that never follow it; metadata goes through the
//!   fd or with `AT_SYMLINK_NOFOLLOW`; an existing entry is replaced by unlinking it; a
//!   hardlink target must resolve inside the root. Paths are never joined onto host paths.
//! - **Whiteouts** ([`whiteout`]): `.wh.NAME` (NAME non-empty, not `.` or `..`) and opaque
//!   `.wh..wh..opq`, which hides lower layers only. Applied for a flattened tree, or kept in
//!   overlayfs form ([`WhiteoutMode::Overlay`]) for per-layer images.
//! - **Published atomically**: [`unpack_image`] and [`unpack_bundle`] build in a temp
//!   directory beside the target and rename it into place only when every layer's diff ID
//!   checked out.
//! - **Root and rootless** ([`UnpackOptions`]): rootless mode records ownership in the
//!   `user.rootlesscontainers` xattr (umoci's convention) and skips device nodes; uid/gid
//!   maps shift owners in root mode.
//!
//! The rootfs cache in the store ([`cache`]) and OCI runtime bundles ([`bundle`]) live here
//! too. Libraries never print: progress and warnings go through [`hoist_types::Progress`].
//!
//! # Example
//!
//! A gzip layer read as every consumer reads it: decompressed and hashed into its diff ID
//! in one pass, its entries parsed by the one [`TarReader`] under [`Limits`]:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::Write;
//!
//! use hoist_types::{Algorithm, Digest, MediaType, NoProgress};
//! use hoist_unpack::{EntryKind, LayerStream, Limits, TarReader};
//!
//! // A layer: a directory and a file, as a tar, gzip-compressed.
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut dir = tar::Header::new_ustar();
//! dir.set_entry_type(tar::EntryType::Directory);
//! dir.set_mode(0o755);
//! dir.set_size(0);
//! tar.append_data(&mut dir, "etc/", std::io::empty())?;
//! let mut file = tar::Header::new_ustar();
//! file.set_mode(0o644);
//! file.set_size(6);
//! tar.append_data(&mut file, "etc/hostname", &b"hoist\n"[..])?;
//! let plain = tar.into_inner()?;
//! let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//! gz.write_all(&plain)?;
//! let blob = gz.finish()?;
//!
//! let limits = Limits::default();
//! let mut layer = LayerStream::open(
//!     &blob[..],
//!     &MediaType::OciLayerGzip,
//!     Algorithm::Sha256,
//!     &limits,
//!     None,
//!     &NoProgress,
//! )?;
//! let mut names = Vec::new();
//! {
//!     let mut entries = TarReader::new(&mut layer, &limits);
//!     while let Some(entry) = entries.next_entry()? {
//!         let kind = if entry.kind == EntryKind::Dir { "dir" } else { "file" };
//!         names.push(format!("{kind} {}", String::from_utf8_lossy(&entry.path)));
//!     }
//! }
//! assert_eq!(names, ["dir etc", "file etc/hostname"]);
//! // The diff ID is the digest of the uncompressed tar.
//! let (diff_id, size) = layer.finish(true)?;
//! assert_eq!(diff_id, Digest::sha256_of(&plain));
//! assert_eq!(size, plain.len() as u64);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod apply;
pub mod bundle;
pub mod cache;
mod error;
mod flatten;
mod fsops;
mod image;
mod limits;
mod options;
pub mod path;
mod stream;
mod tar;
pub mod tree;
pub mod whiteout;
mod writer;

pub use apply::{LayerInput, LayerStats, OVERLAY_OPAQUE, Rootfs};
pub use bundle::{BundleOptions, runtime_config, unpack_bundle};
pub use error::{UnpackError, stream_error};
pub use flatten::{ExportReport, export, export_layers};
pub use fsops::{ROOTLESS_XATTR, rootless_payload};
pub use image::{UnpackReport, apply_layers, image_config, unpack_image, unpack_into};
pub use limits::Limits;
pub use options::{IdMap, UnpackOptions, WhiteoutMode, is_root, map_id};
pub use stream::{Codec, LayerStream, XZ_MEMLIMIT, detect, sniff};
pub use tar::{Entry, EntryKind, TarReader, Timestamp};
