//! Per-call options of the façade: what differs from one call to the next. What stays the
//! same for every call (store, registry settings, platform, jobs, progress) is given once
//! to [`crate::ClientBuilder`].

use std::path::PathBuf;

use hoist_mkfs::{BuildOptions, Ext4Writer, Format, Size};
use hoist_transport::transports::ManifestFormat;
use hoist_types::Compression;
use hoist_unpack::UnpackOptions;

pub use hoist_transport::PullPolicy;

/// How [`crate::Client::rootfs`] builds a root filesystem.
///
/// The default is a flattened directory tree, cached in the store by chain ID; rootless
/// (owners recorded in an xattr) unless the process is root.
///
/// ```
/// use hoist::{Format, RootfsOptions};
/// let opts = RootfsOptions::new(Format::Erofs).verity(true);
/// assert_eq!(opts.format(), Format::Erofs);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RootfsOptions {
    format: Format,
    per_layer: bool,
    size: Size,
    journal: bool,
    verity: bool,
    tar_index: bool,
    force: bool,
    output: Option<PathBuf>,
    rootless: Option<bool>,
    pull: PullPolicy,
}

impl Default for RootfsOptions {
    fn default() -> Self {
        RootfsOptions::new(Format::Dir)
    }
}

impl RootfsOptions {
    /// A flattened artifact of `format`, with every other option at its default.
    ///
    /// ```
    /// let opts = hoist::RootfsOptions::new(hoist::Format::Ext4);
    /// assert_eq!(opts.format(), hoist::Format::Ext4);
    /// ```
    pub fn new(format: Format) -> RootfsOptions {
        RootfsOptions {
            format,
            per_layer: false,
            size: Size::default(),
            journal: true,
            verity: false,
            tar_index: false,
            force: false,
            output: None,
            rootless: None,
            pull: PullPolicy::Missing,
        }
    }

    /// The artifact format.
    ///
    /// ```
    /// assert_eq!(hoist::RootfsOptions::default().format(), hoist::Format::Dir);
    /// ```
    pub fn format(&self) -> Format {
        self.format
    }

    /// One artifact per layer (overlayfs whiteouts), to stack base → top as overlay lowers
    /// (the result's `lower_paths`), instead of one flattened artifact.
    ///
    /// ```
    /// let opts = hoist::RootfsOptions::new(hoist::Format::Erofs).per_layer(true);
    /// # let _ = opts;
    /// ```
    pub fn per_layer(mut self, on: bool) -> RootfsOptions {
        self.per_layer = on;
        self
    }

    /// The size of ext4 images (default: automatic, the tree plus headroom).
    ///
    /// ```
    /// let opts = hoist::RootfsOptions::new(hoist::Format::Ext4).size(hoist::Size::Bytes(1 << 30));
    /// # let _ = opts;
    /// ```
    pub fn size(mut self, size: Size) -> RootfsOptions {
        self.size = size;
        self
    }

    /// Give ext4 images a journal (default: on; off suits read-only use).
    ///
    /// ```
    /// let opts = hoist::RootfsOptions::new(hoist::Format::Ext4).journal(false);
    /// # let _ = opts;
    /// ```
    pub fn journal(mut self, on: bool) -> RootfsOptions {
        self.journal = on;
        self
    }

    /// Append a dm-verity hash tree to each ext4 or erofs image; the result carries its
    /// root hash, salt and offset.
    ///
    /// ```
    /// let opts = hoist::RootfsOptions::new(hoist::Format::Erofs).verity(true);
    /// # let _ = opts;
    /// ```
    pub fn verity(mut self, on: bool) -> RootfsOptions {
        self.verity = on;
        self
    }

    /// With [`Format::Erofs`]: an erofs tar index, a metadata-only image whose files are
    /// chunk references into the layers' uncompressed tars, which the store keeps (written
    /// once per layer; `gc` frees them with the last image that has the layer). The
    /// result's `tar_index` (per layer: each layer's) lists the tars to mount it with, in
    /// order, the `mount(2)` data, and whether the running kernel can mount it.
    ///
    /// ```
    /// let opts = hoist::RootfsOptions::new(hoist::Format::Erofs).tar_index(true);
    /// # let _ = opts;
    /// ```
    pub fn tar_index(mut self, on: bool) -> RootfsOptions {
        self.tar_index = on;
        self
    }

    /// Rebuild even when the result is cached.
    ///
    /// ```
    /// let opts = hoist::RootfsOptions::default().force(true);
    /// # let _ = opts;
    /// ```
    pub fn force(mut self, on: bool) -> RootfsOptions {
        self.force = on;
        self
    }

    /// Also write the result here: a file for a flattened image, a directory otherwise.
    ///
    /// ```
    /// let opts = hoist::RootfsOptions::new(hoist::Format::Erofs).output("/tmp/rootfs.erofs");
    /// # let _ = opts;
    /// ```
    pub fn output(mut self, path: impl Into<PathBuf>) -> RootfsOptions {
        self.output = Some(path.into());
        self
    }

    /// Directories in rootless mode (owners in the `user.rootlesscontainers` xattr) or
    /// not; the default is rootless unless the process is root. Images (ext4, erofs)
    /// always carry the layers' real owners.
    ///
    /// ```
    /// let opts = hoist::RootfsOptions::default().rootless(true);
    /// # let _ = opts;
    /// ```
    pub fn rootless(mut self, on: bool) -> RootfsOptions {
        self.rootless = Some(on);
        self
    }

    /// When the image is pulled first (default: [`PullPolicy::Missing`], only when the
    /// store has no image of that name).
    ///
    /// ```
    /// use hoist::{Format, PullPolicy, RootfsOptions};
    /// let opts = RootfsOptions::new(Format::Ext4).pull(PullPolicy::Never);
    /// assert_eq!(opts.pull_policy(), PullPolicy::Never);
    /// ```
    pub fn pull(mut self, policy: PullPolicy) -> RootfsOptions {
        self.pull = policy;
        self
    }

    /// When the image is pulled first.
    ///
    /// ```
    /// assert_eq!(hoist::RootfsOptions::default().pull_policy(), hoist::PullPolicy::Missing);
    /// ```
    pub fn pull_policy(&self) -> PullPolicy {
        self.pull
    }

    pub(crate) fn build_options(&self) -> BuildOptions {
        BuildOptions {
            format: Some(self.format),
            per_layer: self.per_layer,
            size: self.size,
            force: self.force,
            output: self.output.clone(),
            ext4_writer: Ext4Writer::Native {
                journal: self.journal,
                free: 0,
            },
            verity: self.verity,
            tar_index: self.tar_index,
            unpack: UnpackOptions {
                rootless: self.rootless.unwrap_or_else(|| !hoist_unpack::is_root()),
                ..UnpackOptions::default()
            },
            ..BuildOptions::default()
        }
    }
}

/// How [`crate::Client::copy_with`] copies, beyond the client's platform and jobs.
///
/// ```
/// let opts = hoist::CopyOptions::default().all(true);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CopyOptions {
    pub(crate) all: bool,
    pub(crate) format: Option<ManifestFormat>,
    pub(crate) compression: Option<Compression>,
    pub(crate) preserve_signatures: bool,
}

impl CopyOptions {
    /// Copy every platform of a multi-platform image (default: the client's platform).
    ///
    /// ```
    /// let opts = hoist::CopyOptions::default().all(true);
    /// # let _ = opts;
    /// ```
    pub fn all(mut self, on: bool) -> CopyOptions {
        self.all = on;
        self
    }

    /// Convert manifests (and config and layer media types) to this format.
    ///
    /// ```
    /// use hoist::transport::transports::ManifestFormat;
    /// let opts = hoist::CopyOptions::default().format(ManifestFormat::Oci);
    /// # let _ = opts;
    /// ```
    pub fn format(mut self, format: ManifestFormat) -> CopyOptions {
        self.format = Some(format);
        self
    }

    /// Recompress layers (new digests are recorded; diff IDs stay).
    ///
    /// ```
    /// let opts = hoist::CopyOptions::default().compression(hoist::types::Compression::Zstd);
    /// # let _ = opts;
    /// ```
    pub fn compression(mut self, compression: Compression) -> CopyOptions {
        self.compression = Some(compression);
        self
    }

    /// Carry simple-signing signatures, cosign `.sig` tags and referrers along.
    ///
    /// ```
    /// let opts = hoist::CopyOptions::default().preserve_signatures(true);
    /// # let _ = opts;
    /// ```
    pub fn preserve_signatures(mut self, on: bool) -> CopyOptions {
        self.preserve_signatures = on;
        self
    }
}
