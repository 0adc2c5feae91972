//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use hoist_store::StoreError;
use hoist_unpack::UnpackError;

/// Everything that can go wrong building root filesystem images. Messages name the tool,
/// the image file or the path concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MkfsError {
    /// A program hoist runs is not installed.
    #[error(
        "{tool} not found in $PATH, /usr/sbin or /sbin: install the Debian package {package} (apt-get install {package})"
    )]
    ToolMissing {
        /// The program.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A program failed.
    #[error("{tool} failed building {image} ({status}): {stderr}")]
    ToolFailed {
        /// The program.
        tool: &'static str,
        /// The image being built.
        image: PathBuf,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A program could not be started.
    #[error("cannot run {tool}")]
    Spawn {
        /// The program.
        tool: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A filesystem operation failed.
    #[error("cannot {op}{}", hoist_types::io_path(.path))]
    Io {
        /// What was being done (`"read"`, `"create directory"`, `"rename into"`, …).
        op: &'static str,
        /// The path concerned, when there is one.
        path: Option<PathBuf>,
        /// The OS error.
        source: io::Error,
    },
    /// A `--size` that does not parse.
    #[error("invalid size {input:?}: want auto, a number of bytes, or a number with K, M, G or T")]
    InvalidSize {
        /// The input.
        input: String,
    },
    /// The requested size cannot hold the tree.
    #[error(
        "{size} bytes cannot hold the root filesystem of {image}: it needs about {needed} bytes"
    )]
    TooSmall {
        /// The requested size.
        size: u64,
        /// The estimate.
        needed: u64,
        /// The image file.
        image: PathBuf,
    },
    /// The tree holds something hoist's ext4 writer cannot store.
    #[error("cannot write {path} into the ext4 image {image}: {reason}")]
    Ext4Unsupported {
        /// The image file.
        image: PathBuf,
        /// The path in the tree.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The tree holds something hoist's erofs writer cannot store.
    #[error("cannot write {path} into the erofs image {image}: {reason}")]
    ErofsUnsupported {
        /// The image file.
        image: PathBuf,
        /// The path in the tree.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The kernel refused a step of mounting an erofs tar index.
    #[error("cannot mount the erofs tar index {image}: the kernel refused to {step}")]
    TarIndexMount {
        /// The index image.
        image: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// `--tar-index` asked with something it does not go with.
    #[error("a tar index {reason}")]
    TarIndex {
        /// Why not.
        reason: &'static str,
    },
    /// `--verity` was asked for a directory.
    #[error("dm-verity needs an image format (ext4 or erofs), not a directory")]
    VerityNeedsImage,
    /// Something needs root.
    #[error("{what} needs root: {why}")]
    NeedsRoot {
        /// What was asked.
        what: &'static str,
        /// Why root is needed.
        why: &'static str,
    },
    /// Unpacking failed.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MkfsError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        MkfsError::Io {
            op: action,
            path: Some(path.into()),
            source,
        }
    }
}
