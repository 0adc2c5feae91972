//! Caps on untrusted layer input.

/// Limits applied to every layer read. The defaults suit real images with a wide margin; a
/// layer over any of them is refused with [`crate::UnpackError::Limit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes per layer (the tar stream), default 64 GiB.
    pub max_layer_size: u64,
    /// Tar headers per layer (extension headers included), default 4 million.
    pub max_entries: u64,
    /// Bytes of an entry's path or link target, default 4096 (`PATH_MAX`).
    pub max_path_len: usize,
    /// Bytes of one path component, default 255 (`NAME_MAX`).
    pub max_name_len: usize,
    /// Components of a path, default 256.
    pub max_depth: usize,
    /// Bytes of one PAX extended header or GNU long-name record, default 1 MiB.
    pub max_extension_size: u64,
    /// Bytes of one xattr value, default 64 KiB (Linux's `XATTR_SIZE_MAX`).
    pub max_xattr_value: usize,
    /// Bytes of all xattrs (names and values) of one entry, default 256 KiB.
    pub max_xattrs_total: usize,
    /// log2 of the largest zstd window accepted, default 27 (128 MiB).
    pub zstd_window_log_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_size: 64 << 30,
            max_entries: 4_000_000,
            max_path_len: 4096,
            max_name_len: 255,
            max_depth: 256,
            max_extension_size: 1 << 20,
            max_xattr_value: 64 << 10,
            max_xattrs_total: 256 << 10,
            zstd_window_log_max: 27,
        }
    }
}
