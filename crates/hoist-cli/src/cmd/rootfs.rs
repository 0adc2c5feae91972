//! `hoist rootfs`: a root filesystem (directory, ext4 or erofs; flattened or per layer) from
//! an image, pulled first when missing (`--pull`), cached; prints the result as JSON.
//!
//! An ext4 or erofs image of an image being pulled is built while the layers download
//! ([`hoist_transport::pull_and_build`], which the library's `Client::rootfs` calls too):
//! each layer is verified by the pull and its diff ID by the builder, and a failed or
//! corrupt download leaves no image and the store as it was.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::ValueEnum;
use hoist_mkfs::{BuildOptions, Ext4Writer, Format, Size};
use hoist_store::{ImageRecord, Store};
use hoist_transport::PullTarget;
use hoist_unpack::UnpackOptions;

use crate::cmd::print_json;
use crate::cmd::pull::{PullArgs, PullPolicy, pull_then, target};
use crate::opts::GlobalArgs;
use crate::progress::reporter;

/// Formats of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// A directory tree.
    Dir,
    /// An ext4 image (hoist's own writer, straight from the layers; no root needed).
    Ext4,
    /// An erofs image (hoist's own writer, straight from the layers; no root needed).
    Erofs,
}

/// Arguments of `hoist rootfs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: a reference (`alpine`, `127.0.0.1:5000/ns/app:1`, `docker://…`) pulled
    /// when missing, or an image of the store (a name, an ID or an ID prefix).
    pub image: String,
    /// When to pull: `missing` uses the image of the store the argument names (a name
    /// normalized as `hoist pull` does, an ID or an ID prefix) and pulls it only when there
    /// is none; `always` asks the registry (a moved tag is followed; blobs already in the
    /// store are not fetched again); `never` uses the store only. `docker://REF` always
    /// asks the registry. A pull enforces the trust policy as `hoist pull` does.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing, value_name = "POLICY")]
    pub pull: PullPolicy,
    #[command(flatten)]
    pub pull_args: PullArgs,
    /// What to build.
    #[arg(long, value_enum, default_value_t = FormatArg::Dir)]
    pub format: FormatArg,
    /// One artifact per layer (overlayfs whiteouts), to stack base → top as overlay lowers.
    #[arg(long)]
    pub per_layer: bool,
    /// Also write the result here: a file for a flattened image, a directory otherwise.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Size of ext4 images: auto (the tree plus headroom) or e.g. 2G, 512M.
    #[arg(long, default_value = "auto")]
    pub size: Size,
    /// ext4 without a journal (for read-only use).
    #[arg(long)]
    pub no_journal: bool,
    /// Extra free space in an automatically sized ext4 image, e.g. 1G.
    #[arg(long, value_name = "SIZE", conflicts_with = "size")]
    pub free: Option<Size>,
    /// Append a dm-verity hash tree (sha256, 4 KiB blocks, salt derived from the chain or
    /// diff ID) to each ext4 or erofs image; the JSON result gives its root hash, salt and
    /// hash offset (`veritysetup verify IMAGE IMAGE ROOT_HASH --hash-offset=OFFSET`).
    #[arg(long)]
    pub verity: bool,
    /// With `--format erofs`: an erofs tar index, a metadata-only image whose files are
    /// chunk references into the layers' uncompressed tars, which the store keeps (written
    /// once per layer, shared by every image with that layer; `hoist df` shows them, `hoist
    /// gc` frees them with the last image that has the layer). Mount it with the tars as
    /// extra devices, in the order the JSON result's `tar_index.devices` lists them:
    /// `mount(2)` with the data `tar_index.options` (`ro,device=TAR,…`; Linux 6.12 or
    /// later takes files; util-linux 2.38's `mount -o device=` does not work). The result
    /// says whether the running kernel can mount it (`tar_index.mountable`), and a note
    /// on stderr when it cannot.
    #[arg(long)]
    pub tar_index: bool,
    /// Rebuild even when the result is cached.
    #[arg(long)]
    pub force: bool,
    /// Directories in rootless mode (owners in the user.rootlesscontainers xattr) [default
    /// when not root]. Images always carry the real owners.
    #[arg(long)]
    pub rootless: bool,
}

/// Run it.
pub fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    // Leased: a concurrent `hoist gc` keeps the image's blobs and cache entries until the
    // build is over, even if the image is removed meanwhile.
    let store = g.open_store()?.leased()?;
    let progress: Arc<dyn hoist_types::Progress> = Arc::from(reporter(g.progress_mode()));
    let opts = build_options(&a);
    let build = |store: &Store, image: &ImageRecord| {
        hoist_mkfs::build_rootfs(store, image, &opts, progress.as_ref()).with_context(|| {
            format!(
                "building the {} root filesystem of {}",
                a.format
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default(),
                a.image
            )
        })
    };
    // The native ext4 and erofs writers build while the pull downloads; a directory, and
    // a tar index (its tars come from the stored blobs), after the pull.
    let stream = matches!(a.format, FormatArg::Ext4 | FormatArg::Erofs) && !a.tar_index;
    let result = match target(&store, &a.image, a.pull)? {
        PullTarget::Stored(image) => build(&store, &image)?,
        PullTarget::Pull(reference) => {
            pull_then(&store, &reference, &a.pull_args, &progress, stream, &build)?
        }
    };
    drop(progress);
    let indexes = result
        .tar_index
        .iter()
        .chain(result.layers.iter().filter_map(|l| l.tar_index.as_ref()));
    if let Some(m) = indexes.into_iter().find(|m| !m.mountable) {
        eprintln!(
            "hoist: warning: the running kernel cannot mount this erofs tar index: {}",
            m.kernel
        );
    }
    print_json(&result)
}

fn build_options(a: &Args) -> BuildOptions {
    BuildOptions {
        format: Some(match a.format {
            FormatArg::Dir => Format::Dir,
            FormatArg::Ext4 => Format::Ext4,
            FormatArg::Erofs => Format::Erofs,
        }),
        per_layer: a.per_layer,
        size: a.size,
        force: a.force,
        output: a.output.clone(),
        ext4_writer: Ext4Writer::Native {
            journal: !a.no_journal,
            free: match a.free {
                Some(Size::Bytes(b)) => b,
                _ => 0,
            },
        },
        verity: a.verity,
        tar_index: a.tar_index,
        unpack: UnpackOptions {
            rootless: a.rootless || !hoist_unpack::is_root(),
            ..UnpackOptions::default()
        },
        ..BuildOptions::default()
    }
}
