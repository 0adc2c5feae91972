//! `hoist`: pull, store, inspect and (later) unpack container images.
//!
//! This binary is a thin layer: argument parsing, output formatting and progress
//! display. Every capability lives in the libraries.

mod cmd;
mod opts;
mod progress;
mod report;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::opts::GlobalArgs;

/// hoist: a fast, safe container-image tool.
#[derive(Debug, Parser)]
#[command(name = "hoist", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pull an image from a registry into the local store.
    Pull(cmd::pull::Args),
    /// Copy an image between any two places: `docker://`, `oci:`, `dir:`, `hoist:`, archives.
    Copy(cmd::copy::Args),
    /// Copy many images: a repository's tags, or a skopeo-sync YAML/TOML file's images.
    Sync(cmd::sync::Args),
    /// Push an image from the store to a registry (`hoist copy hoist:IMAGE docker://DEST`).
    Push(cmd::push::Args),
    /// List images in the local store.
    Images(cmd::images::ImagesArgs),
    /// Add a name to an image in the store.
    Tag(cmd::images::TagArgs),
    /// Remove images (or names) from the store.
    Rmi(cmd::images::RmiArgs),
    /// Describe an image in the store, or in a registry with `docker://`.
    Inspect(cmd::inspect::Args),
    /// List the tags of a repository in a registry.
    Tags(cmd::tags::TagsArgs),
    /// List the repositories of a registry (`/v2/_catalog`).
    Catalog(cmd::tags::CatalogArgs),
    /// Delete an image's manifest from a registry (skopeo delete's job).
    Delete(cmd::tags::DeleteArgs),
    /// Store credentials for a registry.
    Login(cmd::login::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(cmd::login::LogoutArgs),
    /// Unpack an image from the store into a directory (or an OCI runtime bundle).
    Unpack(cmd::unpack::Args),
    /// Write an image's flattened root filesystem as a tar (whiteouts applied).
    Export(cmd::export::Args),
    /// Build a root filesystem (directory, ext4 or erofs; flattened or per layer), cached.
    Rootfs(cmd::rootfs::Args),
    /// Write images from the store to a docker-archive (or `--format oci-archive`).
    Save(cmd::save::Args),
    /// Load every image and tag of a docker-archive or oci-archive into the store.
    Load(cmd::load::Args),
    /// Remove what no image, name or work in flight needs; report what was freed.
    Gc(cmd::gc::Args),
    /// Check the store: re-hash blobs, find missing, corrupt and orphaned content.
    Fsck(cmd::fsck::Args),
    /// Show disk usage by kind, shared and unique per image, and what gc would reclaim.
    Df(cmd::df::Args),
    /// Show the history of an image: the steps that made it and their layers.
    History(cmd::history::Args),
    /// Serve the store as a read-only registry (Distribution API), a containerd mirror.
    Serve(cmd::serve::Args),
    /// Show an image's signatures and which trust-policy requirements they satisfy.
    Verify(cmd::verify::Args),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.global.init_logging();
    let result = match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hoist", &mut std::io::stdout());
            Ok(())
        }
        command => run(command, &cli.global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report::print(&e);
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, g: &GlobalArgs) -> anyhow::Result<()> {
    // Before the runtime's threads exist, so they share the one arena too.
    if matches!(
        command,
        Command::Pull(_) | Command::Copy(_) | Command::Push(_) | Command::Sync(_)
    ) {
        cmd::pull::cap_malloc_arenas();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match command {
            Command::Pull(a) => cmd::pull::run(a, g).await,
            Command::Copy(a) => cmd::copy::run(a, g).await,
            Command::Push(a) => cmd::push::run(a, g).await,
            Command::Sync(a) => cmd::sync::run(a, g).await,
            Command::Images(a) => cmd::images::images(a, g),
            Command::Tag(a) => cmd::images::tag(a, g),
            Command::Rmi(a) => cmd::images::rmi(a, g),
            Command::Inspect(a) => cmd::inspect::run(a, g).await,
            Command::Tags(a) => cmd::tags::tags(a, g).await,
            Command::Catalog(a) => cmd::tags::catalog(a, g).await,
            Command::Delete(a) => cmd::tags::delete(a, g).await,
            Command::Login(a) => cmd::login::login(a, g).await,
            Command::Logout(a) => cmd::login::logout(a),
            Command::Unpack(a) => cmd::unpack::run(a, g),
            Command::Export(a) => cmd::export::run(a, g),
            Command::Rootfs(a) => cmd::rootfs::run(a, g),
            Command::Save(a) => cmd::save::run(a, g),
            Command::Load(a) => cmd::load::run(a, g),
            Command::Gc(a) => cmd::gc::run(a, g),
            Command::Fsck(a) => cmd::fsck::run(a, g),
            Command::Df(a) => cmd::df::run(a, g),
            Command::History(a) => cmd::history::run(a, g),
            Command::Serve(a) => cmd::serve::run(a, g).await,
            Command::Verify(a) => cmd::verify::run(a, g).await,
            Command::Completions { .. } => unreachable!("handled before the runtime starts"),
        }
    })
}
