//! `hoist copy SRC DST`: any transport to any other (skopeo copy's job).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use bytesize::ByteSize;
use hoist_registry::{MirrorSources, SharedProgress};
use hoist_transport::DEFAULT_JOBS;
use hoist_transport::copy::{CopyOptions, CopyReport};
use hoist_transport::transports::any::{AnyDestination, AnySource, OpenOptions};
use hoist_transport::transports::{
    ImageRef, ImageSource as _, ManifestFormat, ManifestRef, Transport,
};
use hoist_types::{Compression, Platform, Progress};

use crate::opts::{GlobalArgs, RegistryArgs, SideArgs};
use crate::progress::reporter;

/// Layer compressions `--dest-compress-format` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressArg {
    /// gzip, compressed on every core.
    Gzip,
    /// zstd, multithreaded.
    Zstd,
}

/// Options of `hoist copy` that `hoist push` shares.
#[derive(Debug, clap::Args)]
pub struct CopyFlags {
    /// Copy every platform of a multi-platform image (default: the host's, or --platform).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// The platform to copy from a multi-platform image, `os/arch[/variant]`.
    #[arg(long)]
    pub platform: Option<String>,
    /// Convert manifests (and config and layer media types) to `oci` or `v2s2`.
    #[arg(short = 'f', long, value_name = "oci|v2s2")]
    pub format: Option<ManifestFormat>,
    /// Recompress layers (all cores); new digests are recorded, diff IDs stay.
    #[arg(long, value_enum, value_name = "gzip|zstd")]
    pub dest_compress_format: Option<CompressArg>,
    /// Carry simple-signing signatures (`dir:`), cosign `.sig` tags and referrers along.
    #[arg(long)]
    pub preserve_signatures: bool,
    /// Write every manifest as the source has it, so its digest stays: refuse, before any
    /// blob moves, a copy that would convert a manifest or recompress a layer (`oci:`
    /// layouts then keep Docker media types instead of being converted to OCI).
    #[arg(long)]
    pub preserve_digests: bool,
    /// How many blobs move at once.
    #[arg(short = 'j', long, default_value_t = DEFAULT_JOBS)]
    pub jobs: usize,
    /// Write the digest of the manifest written to FILE (as skopeo's `--digestfile`: the
    /// digest alone, no newline), once the copy has committed.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub trust: crate::cmd::verify::TrustArgs,
    #[command(flatten)]
    pub sign: crate::cmd::verify::SignArgs,
}

/// Arguments of `hoist copy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the image is: `docker://HOST/REPO:TAG`, `oci:DIR[:REF]`, `dir:DIR`,
    /// `hoist:REF` (or a bare store reference), `oci-archive:FILE[:REF]`,
    /// `docker-archive:FILE[:REF]`.
    pub source: String,
    /// Where it goes (same forms).
    pub destination: String,
    #[command(flatten)]
    pub flags: CopyFlags,
    #[command(flatten)]
    pub sides: SideArgs,
}

/// Run it.
pub async fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let src = ImageRef::parse(&a.source)?;
    let dst = ImageRef::parse(&a.destination)?;
    copy_refs(&src, &dst, &a.flags, &a.sides, g).await
}

/// Copy `src` to `dst` with `flags` (and `sides`: the registry settings of each side),
/// printing the summary (shared with `hoist push`).
pub async fn copy_refs(
    src: &ImageRef,
    dst: &ImageRef,
    flags: &CopyFlags,
    sides: &SideArgs,
    g: &GlobalArgs,
) -> anyhow::Result<()> {
    anyhow::ensure!(flags.jobs >= 1, "-j must be at least 1");
    let platform = match &flags.platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    let uses = |t: Transport| src.transport() == t || dst.transport() == t;
    let store = if uses(Transport::Hoist) {
        Some(g.open_store()?)
    } else {
        None
    };
    let mirrors = if src.transport() == Transport::Docker {
        MirrorSources::from_env()
            .load()
            .context("reading the mirror configuration")?
    } else {
        hoist_registry::MirrorConfig::empty()
    };
    let progress: Arc<dyn Progress> = Arc::from(reporter(g.progress_mode()));
    let mut registry = flags.registry.client_options()?;
    registry.progress = Some(SharedProgress(progress.clone()));
    let (src_registry, dst_registry) = sides.split(&registry)?;
    let mut open = OpenOptions::default();
    open.store = store;
    open.pull.platform = platform.clone();
    open.pull.jobs = flags.jobs;
    open.pull.registry = src_registry;
    open.pull.mirrors = mirrors;
    open.source_label = Some(src.to_string());
    // The destination's: its own registry settings, no mirrors (they are for reading).
    let mut open_dst = open.clone();
    open_dst.pull.registry = dst_registry;
    open_dst.pull.mirrors = hoist_registry::MirrorConfig::empty();
    let mut opts = CopyOptions::default();
    opts.all = flags.all;
    opts.platform = platform;
    opts.format = flags.format;
    opts.compression = flags.dest_compress_format.map(|c| match c {
        CompressArg::Gzip => Compression::Gzip,
        CompressArg::Zstd => Compression::Zstd,
    });
    opts.preserve_signatures = flags.preserve_signatures;
    opts.preserve_digests = flags.preserve_digests;
    opts.jobs = flags.jobs;
    opts.temp_dir = None;
    opts.trust = flags.trust.check_for(src)?;
    opts.sign = flags.sign.options(dst, || flags.trust.registries_d())?;
    let start = Instant::now();
    let result: anyhow::Result<CopyReport> = async {
        let source = AnySource::open(src, &open)
            .await
            .with_context(|| format!("opening {src}"))?;
        // Trust before the destination is opened (opening may create it): a refused image
        // leaves it as it was. The engine checks again and skips the digest accepted here.
        if let Some(trust) = &opts.trust {
            let top = source.get_manifest(&ManifestRef::Top).await?;
            trust.enforce(&source, &top).await?;
        }
        let dest = AnyDestination::open(dst, &open_dst)
            .await
            .with_context(|| format!("opening {dst}"))?;
        Ok(hoist_transport::copy::copy(&source, dest, &opts, progress.as_ref()).await?)
    }
    .await;
    drop((open, open_dst));
    drop(progress);
    let report = result.with_context(|| format!("copying {src} to {dst}"))?;
    if let (Some(file), Some(d)) = (&flags.digestfile, &report.digest) {
        std::fs::write(file, d.to_string())
            .with_context(|| format!("writing the digest to {}", file.display()))?;
    }
    if !g.quiet {
        let recompressed = if report.recompressed > 0 {
            format!(", {} layers recompressed", report.recompressed)
        } else {
            String::new()
        };
        eprintln!(
            "copied {src} to {} in {:.2}s: {} image(s), {} blobs sent ({}), {} already there{recompressed}",
            report.location,
            start.elapsed().as_secs_f64(),
            report.images,
            report.blobs_copied,
            ByteSize(report.bytes_copied),
            report.blobs_skipped,
        );
    }
    if let Some(d) = &report.digest {
        println!("{d}");
    }
    Ok(())
}
