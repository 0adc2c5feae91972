//! `hoist save`: images from the store into a docker-archive or an oci-archive.

use std::path::{Path, PathBuf};

use std::time::Instant;

use anyhow::Context as _;
use hoist_transport::copy::CopyOptions;
use hoist_transport::transports::{ArchiveFormat, ArchiveTarget, SaveImage, save_images};

use crate::opts::GlobalArgs;
use crate::progress::reporter;

/// The archive formats `--format` takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveFormat {
    /// What `docker save` writes (`manifest.json`, configs, uncompressed layers).
    #[default]
    DockerArchive,
    /// A tar of an OCI image layout (blobs as stored, compressed layers unchanged).
    OciArchive,
}

/// Arguments of `hoist save`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images in the store: names (saved with that tag), IDs or ID prefixes (untagged).
    #[arg(required = true)]
    pub images: Vec<String>,
    /// The archive to write (`-` for stdout). A file appears only when complete.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// The archive format.
    #[arg(long, value_enum, default_value_t)]
    pub format: SaveFormat,
    /// Every platform of a multi-platform image: the index it came in with and every
    /// manifest it lists (copied into the store with `copy --all`), as `docker save`
    /// writes them; oci-archive only (a docker-archive holds images, not indexes). `hoist
    /// copy --all oci-archive:FILE hoist:NAME` takes them all back (`load` takes the
    /// platform's image).
    #[arg(short, long)]
    pub all: bool,
}

/// Run it: each image is copied by the copy engine from the store into one archive.
pub fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = g.open_store()?;
    let images = a
        .images
        .iter()
        .map(|q| SaveImage::resolve(&store, q).with_context(|| format!("finding {q}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let format = match a.format {
        SaveFormat::DockerArchive => ArchiveFormat::DockerArchive,
        SaveFormat::OciArchive => ArchiveFormat::OciArchive,
    };
    let target = if a.output == Path::new("-") {
        ArchiveTarget::Stream(Box::new(std::io::stdout()))
    } else {
        ArchiveTarget::Path(a.output.clone())
    };
    let progress = reporter(g.progress_mode());
    let start = Instant::now();
    let what = || format!("saving {} as {}", a.images.join(" "), format.as_str());
    anyhow::ensure!(
        !a.all || format == ArchiveFormat::OciArchive,
        "--all needs --format oci-archive: a docker-archive holds images, not the index \
         that lists every platform"
    );
    let mut opts = CopyOptions::default();
    opts.all = a.all;
    // The command runs inside the CLI's multi-threaded runtime.
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(save_images(
            &store,
            &images,
            format,
            target,
            &opts,
            progress.as_ref(),
        ))
    })
    .with_context(what)?;
    drop(progress);
    if !g.quiet {
        eprintln!(
            "saved {} image(s) to {} ({}) in {:.2}s",
            images.len(),
            a.output.display(),
            format.as_str(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
