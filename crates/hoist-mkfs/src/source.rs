//! Which tree of an image a native writer (ext4, erofs) writes, and the key its
//! deterministic UUID, hash seed and salt are derived from.

use hoist_store::{ImageRecord, Store};
use hoist_types::Progress;
use hoist_unpack::Limits;
use hoist_unpack::tree::FsTree;

use crate::MkfsError;

/// Which tree of an image to write (`ext4::Ext4Source` and `erofs::ErofsSource` name it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeSource {
    /// All layers, whiteouts applied (the key is the top chain ID).
    Flattened,
    /// Layer `i` (base 0) alone in overlayfs form (the key is its diff ID).
    Layer(usize),
}

impl TreeSource {
    /// Builds the tree (pass 1) and its key: `flat:<top chain ID>` or `layer:<diff ID>`.
    /// Pass 1 also spools the file data to unnamed files beside `out` (so pass 2 need not
    /// decompress the layers again).
    pub(crate) fn tree(
        self,
        store: &Store,
        image: &ImageRecord,
        out: &std::path::Path,
        limits: &Limits,
        progress: &dyn Progress,
    ) -> Result<(FsTree, String), MkfsError> {
        let spool = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        let key = |kind: &str, d: Option<&hoist_types::Digest>| {
            format!("{kind}:{}", d.map(ToString::to_string).unwrap_or_default())
        };
        Ok(match self {
            TreeSource::Flattened => (
                FsTree::flattened_spooled(store, image, spool, limits, progress)?,
                key("flat", image.chain_ids.last()),
            ),
            TreeSource::Layer(i) => (
                FsTree::layer_spooled(store, image, i, spool, limits, progress)?,
                key("layer", image.diff_ids.get(i)),
            ),
        })
    }
}
