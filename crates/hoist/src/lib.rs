//! Container images in, root filesystems out.
//!
//! `hoist` is the one crate an embedder adds: a [`Client`] built once from a store and the
//! settings every call shares (registry options, mirrors, credentials, platform, jobs,
//! trust policy, one progress reporter), with the everyday calls on top:
//!
//! | call | what it does |
//! |---|---|
//! | [`Client::pull`] | a registry image into the store (resumable, parallel, verified, mirrors) |
//! | [`Client::rootfs`] | a directory, ext4 or erofs root filesystem (pulled first when missing; cached) |
//! | [`Client::unpack`], [`Client::unpack_with_pull`] | an image into a directory (`_with_pull`: pulled first when missing) |
//! | [`Client::copy`] | between any two of `docker://`, `oci:`, `oci-archive:`, `docker-archive:`, `dir:`, `hoist:` |
//! | [`Client::copy_to`] | into a destination of the embedder's own (an `ImageDestination`; see below) |
//! | [`Client::push`] | an image of the store to a registry |
//! | [`Client::inspect`], [`Client::tags`] | what `skopeo inspect` and `list-tags` tell |
//! | [`Client::load`], [`Client::save`] | docker-archive and oci-archive files |
//! | [`Client::images`], [`Client::image`], [`Client::remove`] | the store's images |
//! | [`Client::gc`], [`Client::leased`] | garbage collection, and leases that hold what work in flight uses |
//!
//! The calls that do I/O are `async` (Tokio); [`blocking::Client`] wraps them for
//! programs without a runtime. Errors are one type, [`Error`], with a coarse
//! [`Error::kind`] and [`Error::is_retryable`].
//!
//! # Example: pull an image and build its erofs root filesystem
//!
//! ```no_run
//! fn main() -> hoist::Result<()> {
//!     let client = hoist::blocking::Client::builder()
//!         .store("/var/lib/my-sandbox/images")
//!         .build()?;
//!     let opts = hoist::RootfsOptions::new(hoist::Format::Erofs);
//!     let built = client.rootfs("127.0.0.1:5000/library/alpine:3", &opts)?;
//!     println!("{} ({} layers)", built.rootfs_path.display(), built.layers.len());
//!     Ok(())
//! }
//! ```
//!
//! The same, async:
//!
//! ```no_run
//! # async fn f() -> hoist::Result<()> {
//! let client = hoist::Client::builder().store("/var/lib/my-sandbox/images").build()?;
//! let built = client
//!     .rootfs("127.0.0.1:5000/library/alpine:3", &hoist::RootfsOptions::new(hoist::Format::Ext4))
//!     .await?;
//! # let _ = built;
//! # Ok(()) }
//! ```
//!
//! A store needs no network to open, list or collect:
//!
//! ```
//! # fn main() -> hoist::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let client = hoist::blocking::Client::builder().store(dir.path()).build()?;
//! assert!(client.images()?.is_empty());
//! let report = client.gc()?;
//! assert_eq!(report.total().bytes, 0);
//! # Ok(()) }
//! ```
//!
//! # Transports of the embedder's own
//!
//! A destination written outside hoist implements
//! [`transport::transports::ImageDestination`] (a source, `ImageSource`) and is handed to
//! [`Client::copy_to`]; the copy engine takes it boxed
//! ([`transport::transports::DynImageDestination`], `AnyDestination::Custom`), as one of
//! its own. With the `conformance` feature, `hoist::conformance::check` runs the contract
//! every built-in transport keeps against it, from the embedder's tests.
//!
//! # Cancelling
//!
//! Dropping the future of a call cancels it (a `tokio::time::timeout`, a `select!`);
//! [`Client::pull_until`] takes the cancellation as a future (a token's `cancelled()`). A
//! pull or copy into the store cancelled mid-way leaves the store as a failure does.
//!
//! # Not yet
//!
//! Images written into the store by [`Client::copy`] or [`Client::load`] are not held by
//! a [`Client::leased`] client until resolved with [`Client::image`].
//!
//! # The crates below
//!
//! The façade is a thin layer: each crate below it stays usable on its own, and is
//! re-exported here under a short name for what the façade does not wrap ([`types`],
//! [`registry`], [`store`], [`transport`], [`unpack`], [`mkfs`], [`trust`]).

#![warn(missing_docs)]

mod client;
mod error;
mod options;

pub mod blocking;

pub use client::{Client, ClientBuilder};

/// The source/destination contract as a check to run against a transport of the
/// embedder's own (the `conformance` feature): see
/// [`transport::transports::conformance`].
///
/// ```
/// use hoist::conformance::{RefPlace, check};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let dir = tempfile::tempdir().unwrap();
/// check(&RefPlace::files(format!("dir:{}/{{}}", dir.path().display()), dir.path())).await;
/// # }
/// ```
#[cfg(feature = "conformance")]
pub mod conformance {
    pub use hoist_transport::transports::conformance::*;
}
pub use error::{Error, ErrorKind, Result};
pub use options::{CopyOptions, PullPolicy, RootfsOptions};

pub use hoist_mkfs::{BuildResult, Format, LayerResult, RunInfo, Size};
pub use hoist_registry::{ClientOptions as RegistryOptions, MirrorConfig, MirrorSources};
pub use hoist_store::{GcOptions, GcReport, ImageRecord, RemoveReport, Store};
pub use hoist_transport::copy::CopyReport;
pub use hoist_transport::transports::{ArchiveFormat, LoadedImage};
pub use hoist_transport::{InspectInfo, Inspected, PullReport};
pub use hoist_types::{Digest, Platform, Reference};
pub use hoist_unpack::{UnpackOptions, UnpackReport};

/// `hoist-mkfs`: ext4 and erofs writers, per-layer images, dm-verity.
pub use hoist_mkfs as mkfs;
/// `hoist-registry`: the async Distribution client (auth, TLS, mirrors, upload).
pub use hoist_registry as registry;
/// `hoist-store`: the content-addressable store (images, leases, gc, fsck, usage).
pub use hoist_store as store;
/// `hoist-transport`: sources, destinations and the copy engine.
pub use hoist_transport as transport;
/// `hoist-trust`: containers-policy.json and signature verification.
pub use hoist_trust as trust;
/// `hoist-types`: digests, references, platforms, manifests, progress events.
pub use hoist_types as types;
/// `hoist-unpack`: the tar parser, safe layer application, bundles.
pub use hoist_unpack as unpack;
