//! `hoist pull`.

use std::time::Instant;

use anyhow::Context as _;
use bytesize::ByteSize;
use hoist_transport::{DEFAULT_JOBS, PullOptions};
use hoist_types::{Platform, Reference};

use crate::opts::{GlobalArgs, RegistryArgs};
use crate::progress::reporter;

/// Arguments of `hoist pull`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image, e.g. `alpine`, `127.0.0.1:5000/ns/repo:tag`, `repo@sha256:…`.
    pub reference: String,
    /// The platform to pull from a multi-platform image, `os/arch[/variant]`.
    #[arg(long)]
    pub platform: Option<String>,
    /// How many layers are fetched at once.
    #[arg(short = 'j', long, default_value_t = DEFAULT_JOBS)]
    pub jobs: usize,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Run it.
pub async fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(
        a.reference
            .strip_prefix("docker://")
            .unwrap_or(&a.reference),
    )?;
    let platform = match &a.platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    anyhow::ensure!(a.jobs >= 1, "-j must be at least 1");
    let store = g.open_store()?;
    let opts = PullOptions {
        platform,
        jobs: a.jobs,
        registry: a.registry.client_options()?,
    };
    let progress = reporter(g.progress_mode());
    let start = Instant::now();
    let report = hoist_transport::pull(&store, &reference, &opts, progress.as_ref())
        .await
        .with_context(|| format!("pulling {reference}"))?;
    drop(progress);
    if !g.quiet {
        eprintln!(
            "pulled {reference} in {:.2}s: {} blobs fetched ({}), {} already present",
            start.elapsed().as_secs_f64(),
            report.blobs_fetched,
            ByteSize(report.bytes_fetched),
            report.blobs_skipped
        );
    }
    println!("{}", report.image.id);
    Ok(())
}
