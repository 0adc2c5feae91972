//! `hoist sync SRC DEST`: many images at once (skopeo sync's job), with skopeo's YAML.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytesize::ByteSize;
use hoist_registry::SharedProgress;
use hoist_transport::DEFAULT_JOBS;
use hoist_transport::sync::{
    self, ConfigFormat, DestKind, Outcome, SyncOptions, SyncReport, SyncSource, SyncTarget,
};
use hoist_transport::transports::ManifestFormat;
use hoist_types::{Platform, Progress};

use crate::cmd::print_json;
use crate::opts::{GlobalArgs, RegistryArgs, SideArgs};
use crate::progress::reporter;

/// Source kinds (`--src`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SrcKind {
    /// A repository (every tag) or one image in a registry.
    Docker,
    /// A skopeo-sync YAML file.
    Yaml,
    /// The same model in TOML.
    Toml,
}

/// Destination kinds (`--dest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DestArg {
    /// A registry (`host[:port][/namespace]`): `DEST/NAME:TAG`.
    Docker,
    /// A directory with one `dir:` layout per image: `DEST/NAME:TAG/`.
    Dir,
    /// One OCI layout holding every image under the ref name `NAME:TAG`.
    Oci,
    /// The store: `DEST/NAME:TAG` (DEST may be empty: `NAME:TAG`).
    Hoist,
}

/// How the summary is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A line per failure and a summary line, on stderr.
    Text,
    /// The whole report as JSON on stdout.
    Json,
}

/// Arguments of `hoist sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A repository (`host/repo`: every tag; `host/repo:tag`: one image) with `--src
    /// docker`, or a sync file (skopeo sync's YAML; TOML for `.toml`).
    pub source: String,
    /// A registry (`host[:port][/ns]`), a directory, an OCI layout, or a store name
    /// prefix (may be empty), as `--dest` says.
    pub destination: String,
    /// What SOURCE is [default: yaml, or toml for a `.toml` file, when SOURCE is a file;
    /// else docker].
    #[arg(short = 's', long = "src", value_enum)]
    pub src: Option<SrcKind>,
    /// What DESTINATION is.
    #[arg(short = 'd', long = "dest", value_enum, default_value = "docker")]
    pub dest: DestArg,
    /// Name images at the destination by their whole source name (registry included),
    /// not by the last component of their repository.
    #[arg(long)]
    pub scoped: bool,
    /// Copy every platform of a multi-platform image (default: the host's, or --platform).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// The platform to copy from a multi-platform image, `os/arch[/variant]`.
    #[arg(long)]
    pub platform: Option<String>,
    /// Convert manifests to `oci` or `v2s2` (skopeo sync's `--format`; the unchanged
    /// check is then left to the engine, which skips every blob the destination has).
    #[arg(long, value_name = "oci|v2s2")]
    pub manifest_format: Option<ManifestFormat>,
    /// List and compare, say what would be copied, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write every manifest as the source has it, so its digest stays (a copy that would
    /// convert a manifest or recompress a layer fails, as `hoist copy --preserve-digests`).
    #[arg(long)]
    pub preserve_digests: bool,
    /// The summary: text on stderr, or the JSON report (every image) on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Images copied at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs_images: usize,
    /// Blobs moved at once within each image.
    #[arg(short = 'j', long, default_value_t = DEFAULT_JOBS)]
    pub jobs: usize,
    /// Per-side settings (a sync file's `credentials`, `tls-verify` and `cert-dir` win for
    /// their registry).
    #[command(flatten)]
    pub sides: SideArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub trust: crate::cmd::verify::TrustArgs,
}

/// Run it.
pub async fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.jobs >= 1, "-j must be at least 1");
    anyhow::ensure!(a.jobs_images >= 1, "--jobs-images must be at least 1");
    let source = match a.src {
        Some(SrcKind::Docker) => SyncSource::Docker(a.source.clone()),
        Some(SrcKind::Yaml) => SyncSource::File(PathBuf::from(&a.source), Some(ConfigFormat::Yaml)),
        Some(SrcKind::Toml) => SyncSource::File(PathBuf::from(&a.source), Some(ConfigFormat::Toml)),
        None if std::path::Path::new(&a.source).is_file() => {
            SyncSource::File(PathBuf::from(&a.source), None)
        }
        None => SyncSource::Docker(a.source.clone()),
    };
    let kind = match a.dest {
        DestArg::Docker => DestKind::Docker,
        DestArg::Dir => DestKind::Dir,
        DestArg::Oci => DestKind::Oci,
        DestArg::Hoist => DestKind::Hoist,
    };
    anyhow::ensure!(
        kind == DestKind::Hoist || !a.destination.is_empty(),
        "the destination is empty"
    );
    let target = SyncTarget {
        kind,
        dest: a.destination.clone(),
        scoped: a.scoped,
    };
    let platform = match &a.platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    let progress: Arc<dyn Progress> = Arc::from(reporter(g.progress_mode()));
    let base = a.registry.client_options()?;
    let (mut src_opts, mut dest_opts) = a.sides.split(&base)?;
    src_opts.progress = Some(SharedProgress(progress.clone()));
    dest_opts.progress = Some(SharedProgress(progress.clone()));
    let store = if kind == DestKind::Hoist {
        Some(g.open_store()?)
    } else {
        None
    };
    let trust = match a.trust.load()? {
        Some((p, _)) => Some((p, Some(a.trust.registries_d()?))),
        None => None,
    };
    // Every repository is listed (and the file checked) before anything is written: a bad
    // file or an unreachable registry writes nothing.
    let plan = sync::plan(&source, &target, &src_opts, a.jobs_images)
        .await
        .with_context(|| format!("planning the sync of {}", a.source))?;
    let mut opts = SyncOptions::default();
    opts.copy.all = a.all;
    opts.copy.platform = platform.clone();
    opts.copy.format = a.manifest_format;
    opts.copy.jobs = a.jobs;
    opts.copy.preserve_digests = a.preserve_digests;
    opts.image_jobs = a.jobs_images;
    opts.dry_run = a.dry_run;
    opts.pull.platform = platform;
    opts.pull.jobs = a.jobs;
    opts.pull.registry = src_opts;
    opts.dest_registry = dest_opts;
    opts.store = store;
    opts.trust = trust;
    let report = sync::run(plan, &opts, progress.as_ref()).await;
    drop(opts);
    drop(progress);
    match a.format {
        OutputFormat::Json => print_json(&report)?,
        OutputFormat::Text => print_summary(&report, g.quiet),
    }
    anyhow::ensure!(
        !report.has_failures(),
        "{} of {} image(s) failed to sync",
        report.failed,
        report.images.len()
    );
    Ok(())
}

fn print_summary(r: &SyncReport, quiet: bool) {
    for img in &r.images {
        if let Outcome::Failed { error } = &img.outcome {
            eprintln!("failed: {} -> {}: {error}", img.source, img.destination);
        } else if r.dry_run && !quiet {
            let what = match &img.outcome {
                Outcome::WouldCopy { .. } => "would copy",
                _ => "unchanged",
            };
            eprintln!("{what}: {} -> {}", img.source, img.destination);
        }
    }
    if quiet && !r.has_failures() {
        return;
    }
    let verb = if r.dry_run {
        format!("{} would be copied", r.would_copy)
    } else {
        format!("{} copied", r.copied)
    };
    eprintln!(
        "synced {} image(s) in {:.2}s: {verb}, {} unchanged, {} failed; {} sent",
        r.images.len(),
        r.seconds,
        r.unchanged,
        r.failed,
        ByteSize(r.bytes),
    );
}
