//! `hoist inspect`.

use std::io::Write;

use anyhow::Context as _;
use hoist_types::{Platform, Reference};

use crate::cmd::print_json;
use crate::opts::{GlobalArgs, RegistryArgs};

/// Arguments of `hoist inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An image in the store (name, ID or ID prefix), or `docker://REF` for a registry.
    pub image: String,
    /// Print the raw manifest bytes, exactly as stored or served.
    #[arg(long, conflicts_with = "config")]
    pub raw: bool,
    /// Print the raw config bytes.
    #[arg(long)]
    pub config: bool,
    /// Don't list the repository's tags (registry only).
    #[arg(long)]
    pub no_tags: bool,
    /// The platform to describe from a multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
    /// Output format (inspect always prints JSON; accepted for uniformity).
    #[arg(long, value_enum, default_value_t = crate::opts::Format::Json)]
    pub format: crate::opts::Format,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Run it.
pub async fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let inspected = if let Some(r) = a.image.strip_prefix("docker://") {
        let reference = Reference::parse(r)?;
        let opts = a.registry.client_options()?;
        if a.raw {
            // The bytes served for REF, whatever they are; nothing else is fetched.
            let bytes = hoist_transport::inspect_remote_raw(&reference, &opts)
                .await
                .with_context(|| format!("inspecting {reference}"))?;
            std::io::stdout().lock().write_all(&bytes)?;
            return Ok(());
        }
        let platform = match &a.platform {
            Some(p) => p.parse::<Platform>()?,
            None => Platform::host(),
        };
        hoist_transport::inspect_remote(&reference, &platform, &opts, !a.no_tags && !a.config)
            .await
            .with_context(|| format!("inspecting {reference}"))?
    } else {
        let store = g.open_store()?;
        let image = store.resolve(&a.image)?;
        hoist_transport::inspect_local(&store, &image)?
    };
    if a.raw {
        std::io::stdout()
            .lock()
            .write_all(&inspected.raw_manifest)?;
        return Ok(());
    }
    if a.config {
        let Some(config) = &inspected.raw_config else {
            anyhow::bail!(
                "{}: a Docker schema 1 image has no config (`hoist pull` synthesises one)",
                a.image
            );
        };
        std::io::stdout().lock().write_all(config)?;
        return Ok(());
    }
    print_json(&inspected.info)
}
