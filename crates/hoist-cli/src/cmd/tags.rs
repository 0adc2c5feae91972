//! `hoist tags`, `hoist catalog` and `hoist delete`: a registry's repositories.

use hoist_registry::RegistryClient;
use hoist_types::Reference;
use serde_json::json;

use crate::cmd::print_json;
use crate::opts::{Format, GlobalArgs, RegistryArgs};

/// Arguments of `hoist tags`.
#[derive(Debug, clap::Args)]
pub struct TagsArgs {
    /// The repository, e.g. `127.0.0.1:5000/ns/repo` or `docker://alpine`.
    pub repository: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Arguments of `hoist catalog`.
#[derive(Debug, clap::Args)]
pub struct CatalogArgs {
    /// The registry, `host[:port]`.
    pub registry_host: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Arguments of `hoist delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The image in a registry, `docker://HOST/REPO:TAG` or `docker://HOST/REPO@DIGEST`.
    /// A tag is resolved to its manifest's digest, which is deleted (as skopeo delete
    /// does): every tag naming that manifest goes with it. (`hoist rmi` removes images
    /// from the store.)
    pub image: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `hoist delete`.
pub async fn delete(a: DeleteArgs, g: &GlobalArgs) -> anyhow::Result<()> {
    let Some(rest) = a.image.strip_prefix("docker://") else {
        anyhow::bail!(
            "{}: hoist delete deletes from a registry and takes docker://REF \
             (hoist rmi removes images from the store)",
            a.image
        );
    };
    let r = Reference::parse(rest)?;
    let client = RegistryClient::new(r.registry(), a.registry.client_options()?)?;
    let digest = client
        .delete(r.repository(), &r.manifest_reference())
        .await?;
    if !g.quiet {
        eprintln!("deleted {}@{digest}", r.name());
    }
    println!("{digest}");
    Ok(())
}

/// `hoist tags`.
pub async fn tags(a: TagsArgs, _g: &GlobalArgs) -> anyhow::Result<()> {
    let r = Reference::parse_repository(
        a.repository
            .strip_prefix("docker://")
            .unwrap_or(&a.repository),
    )?;
    let client = RegistryClient::new(r.registry(), a.registry.client_options()?)?;
    client.ping().await?;
    let tags = client.list_tags(r.repository()).await?;
    match a.format {
        Format::Json => print_json(&json!({"Repository": r.name(), "Tags": tags})),
        Format::Table => {
            for t in tags {
                println!("{t}");
            }
            Ok(())
        }
    }
}

/// `hoist catalog`.
pub async fn catalog(a: CatalogArgs, _g: &GlobalArgs) -> anyhow::Result<()> {
    let host = a
        .registry_host
        .strip_prefix("docker://")
        .unwrap_or(&a.registry_host)
        .trim_end_matches('/');
    // Validate the host the same way references do.
    let r = Reference::parse_repository(&format!("{host}/x"))?;
    anyhow::ensure!(
        r.registry() == host || host == "docker.io",
        "{host:?} is not a registry host"
    );
    let client = RegistryClient::new(r.registry(), a.registry.client_options()?)?;
    client.ping().await?;
    let repos = client.catalog().await?;
    match a.format {
        Format::Json => print_json(&json!({"Registry": r.registry(), "Repositories": repos})),
        Format::Table => {
            for t in repos {
                println!("{t}");
            }
            Ok(())
        }
    }
}
