//! `hoist unpack`: an image (pulled first when missing, `--pull`) into a root filesystem
//! directory or an OCI runtime bundle.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use bytesize::ByteSize;
use hoist_store::{ImageRecord, Store};
use hoist_transport::PullTarget;
use hoist_unpack::{IdMap, UnpackOptions};

use crate::cmd::pull::{PullArgs, PullPolicy, pull_then, target};
use crate::opts::GlobalArgs;
use crate::progress::reporter;

/// Arguments of `hoist unpack`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: a reference (`alpine`, `127.0.0.1:5000/ns/app:1`, `docker://…`) pulled
    /// when missing, or an image of the store (a name, an ID or an ID prefix).
    pub image: String,
    /// The target directory: created; it must be absent or empty.
    pub dir: PathBuf,
    /// When to pull: `missing` uses the image of the store the argument names (a name
    /// normalized as `hoist pull` does, an ID or an ID prefix) and pulls it only when there
    /// is none; `always` asks the registry (a moved tag is followed; blobs already in the
    /// store are not fetched again); `never` uses the store only. `docker://REF` always
    /// asks the registry. A pull enforces the trust policy as `hoist pull` does, before
    /// DIR is touched.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing, value_name = "POLICY")]
    pub pull: PullPolicy,
    #[command(flatten)]
    pub pull_args: PullArgs,
    /// Write an OCI runtime bundle: DIR/rootfs and DIR/config.json.
    #[arg(long)]
    pub bundle: bool,
    #[command(flatten)]
    pub owners: OwnerArgs,
}

/// How ownership is applied (shared by `unpack` and `rootfs`).
#[derive(Debug, Clone, clap::Args)]
pub struct OwnerArgs {
    /// Rootless mode: owners recorded in the user.rootlesscontainers xattr, devices skipped
    /// [default when not root].
    #[arg(long)]
    pub rootless: bool,
    /// Map layer uids to host uids, CONTAINER:HOST:SIZE (repeatable; root mode).
    #[arg(long = "uid-map", value_name = "C:H:N")]
    pub uid_map: Vec<IdMap>,
    /// Map layer gids to host gids, CONTAINER:HOST:SIZE (repeatable; root mode).
    #[arg(long = "gid-map", value_name = "C:H:N")]
    pub gid_map: Vec<IdMap>,
}

impl OwnerArgs {
    /// The unpack options these arguments describe.
    pub fn options(&self) -> anyhow::Result<UnpackOptions> {
        let rootless = self.rootless || !hoist_unpack::is_root();
        anyhow::ensure!(
            !rootless || (self.uid_map.is_empty() && self.gid_map.is_empty()),
            "--uid-map and --gid-map apply in root mode only (rootless mode records owners instead)"
        );
        Ok(UnpackOptions {
            rootless,
            uid_map: self.uid_map.clone(),
            gid_map: self.gid_map.clone(),
            ..UnpackOptions::default()
        })
    }
}

/// Run it.
pub fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    // Leased: a concurrent `hoist gc` keeps what the unpack reads, pulled or not. A store
    // this process may only read (another user's, a read-only mount) is unpacked from as
    // it is: no lease can be written there (and no pull either).
    let store = g.open_store()?;
    let store = if store.is_read_only() {
        store
    } else {
        store.leased()?
    };
    let opts = a.owners.options()?;
    let progress: Arc<dyn hoist_types::Progress> = Arc::from(reporter(g.progress_mode()));
    let unpack = |store: &Store, image: &ImageRecord| {
        if a.bundle {
            hoist_unpack::unpack_bundle(store, image, &a.dir, &opts, progress.as_ref())
        } else {
            hoist_unpack::unpack_image(store, image, &a.dir, &opts, progress.as_ref())
        }
        .map(|report| (report, image.id.clone()))
        .with_context(|| format!("unpacking {} into {}", a.image, a.dir.display()))
    };
    let start = Instant::now();
    let (report, id) = match target(&store, &a.image, a.pull)? {
        PullTarget::Stored(image) => unpack(&store, &image)?,
        // The layers are unpacked as they download (a bundle, whose config.json comes
        // from the image config, after the pull).
        PullTarget::Pull(reference) => pull_then(
            &store,
            &reference,
            &a.pull_args,
            &progress,
            !a.bundle,
            &unpack,
        )?,
    };
    drop(progress);
    if !g.quiet {
        eprintln!(
            "unpacked {} ({}) into {}{} in {:.2}s: {} layers, {}{}",
            a.image,
            id.short(),
            a.dir.display(),
            if a.bundle { " (bundle)" } else { "" },
            start.elapsed().as_secs_f64(),
            report.layers.len(),
            ByteSize(report.tar_bytes()),
            if opts.rootless { ", rootless" } else { "" },
        );
    }
    Ok(())
}
