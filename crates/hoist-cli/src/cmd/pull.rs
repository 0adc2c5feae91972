//! `hoist pull`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytesize::ByteSize;
use clap::ValueEnum;
use hoist_registry::{MirrorSources, SharedProgress};
use hoist_store::{ImageRecord, Store};
use hoist_transport::{
    DEFAULT_JOBS, DEFAULT_RANGE_CONNECTIONS, DEFAULT_RANGE_THRESHOLD, PullBuildError, PullOptions,
    PullReport, PullTarget, TargetError, pull_and_build,
};
use hoist_types::{Platform, Progress, ProgressEvent, Reference};

use crate::opts::{GlobalArgs, RegistryArgs, parse_duration};
use crate::progress::reporter;

/// Arguments of `hoist pull`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image, e.g. `alpine`, `127.0.0.1:5000/ns/repo:tag`, `repo@sha256:…`.
    pub reference: String,
    #[command(flatten)]
    pub pull: PullArgs,
}

/// How an image is pulled: the options of `hoist pull`, shared by every command that pulls
/// (`hoist rootfs REF`, `hoist unpack REF DIR`).
#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// The platform to pull from a multi-platform image, `os/arch[/variant]`.
    #[arg(long)]
    pub platform: Option<String>,
    /// How many layers are fetched at once.
    #[arg(short = 'j', long, default_value_t = DEFAULT_JOBS)]
    pub jobs: usize,
    /// Connections used for one large blob (Range slices fetched in parallel); 1 never
    /// splits a blob.
    #[arg(long, default_value_t = DEFAULT_RANGE_CONNECTIONS, value_name = "N")]
    pub range_connections: usize,
    /// Blobs at least this large are split over --range-connections (`64MiB`, `1GB`).
    #[arg(long, default_value_t = ByteSize(DEFAULT_RANGE_THRESHOLD), value_name = "SIZE")]
    pub range_threshold: ByteSize,
    /// How long a large blob streams over one connection first: a connection slower than
    /// 128 MiB/s then has the rest split over --range-connections, a faster one keeps it
    /// (`1s`, `500ms`; `0s` splits at once).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    pub range_probe: Duration,
    /// Fetch foreign (non-distributable) layers from the URLs in their descriptors,
    /// without credentials. Off by default: such layers are an error.
    #[arg(long)]
    pub foreign_layers: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub trust: crate::cmd::verify::TrustArgs,
}

impl PullArgs {
    /// The pull options these arguments describe (mirrors from the environment, the trust
    /// policy loaded), with `progress` as the registry client's reporter.
    pub fn options(&self, progress: &Arc<dyn Progress>) -> anyhow::Result<PullOptions> {
        let platform = match &self.platform {
            Some(p) => p.parse::<Platform>()?,
            None => Platform::host(),
        };
        anyhow::ensure!(self.jobs >= 1, "-j must be at least 1");
        anyhow::ensure!(
            self.range_connections >= 1,
            "--range-connections must be at least 1"
        );
        let mirrors = MirrorSources::from_env()
            .load()
            .context("reading the mirror configuration")?;
        let mut registry = self.registry.client_options()?;
        registry.progress = Some(SharedProgress(progress.clone()));
        let (trust, registries_d) = self.trust.for_pull()?;
        let mut o = PullOptions::default();
        o.platform = platform;
        o.jobs = self.jobs;
        o.registry = registry;
        o.mirrors = mirrors;
        o.range_threshold = self.range_threshold.as_u64();
        o.range_connections = self.range_connections;
        o.range_probe = self.range_probe;
        o.foreign_layers = self.foreign_layers;
        o.trust = trust;
        o.registries_d = registries_d;
        Ok(o)
    }
}

/// When `hoist rootfs` and `hoist unpack` ask the registry (`--pull`, as `podman run
/// --pull`; [`hoist_transport::PullPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PullPolicy {
    /// Use the image of the store the argument names (a name, normalized as `hoist pull`
    /// does, an ID or an ID prefix); pull it when there is none.
    #[default]
    Missing,
    /// Always ask the registry: a moved tag is followed; blobs in the store are not
    /// fetched again. The argument must be a reference.
    Always,
    /// Never ask the registry: the image must be in the store.
    Never,
}

impl From<PullPolicy> for hoist_transport::PullPolicy {
    fn from(p: PullPolicy) -> Self {
        match p {
            PullPolicy::Missing => hoist_transport::PullPolicy::Missing,
            PullPolicy::Always => hoist_transport::PullPolicy::Always,
            PullPolicy::Never => hoist_transport::PullPolicy::Never,
        }
    }
}

/// Whether `arg` under `policy` is an image of the store or a reference to pull
/// ([`hoist_transport::pull_target`]), its refusals in the words of `--pull`; nothing is
/// pulled.
pub fn target(store: &Store, arg: &str, policy: PullPolicy) -> anyhow::Result<PullTarget> {
    hoist_transport::pull_target(store, arg, policy.into()).map_err(|e| match e {
        TargetError::RegistryOnly { .. } => anyhow::anyhow!(
            "{e}, which --pull never forbids (name the image of the store without docker://)"
        ),
        TargetError::NotInStore { arg, source } => anyhow::Error::new(*source).context(format!(
            "{arg} is not in the store and --pull never forbids pulling it (run `hoist pull \
             {arg}` first, or use --pull missing)"
        )),
        e => e.into(),
    })
}

/// Pulls `reference` into `store` and builds from it with `build`
/// ([`hoist_transport::pull_and_build`]): while the layers download with `stream`, else
/// after the pull. The pull's status line (time, blobs fetched and present) goes to
/// `progress`. Called from a command's synchronous body inside the runtime: the pull runs
/// on the runtime while this thread builds (`block_in_place`).
pub fn pull_then<R>(
    store: &Store,
    reference: &Reference,
    pull: &PullArgs,
    progress: &Arc<dyn Progress>,
    stream: bool,
    build: &dyn Fn(&Store, &ImageRecord) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let opts = pull.options(progress)?;
    let pulled: Arc<dyn Fn(&PullReport) + Send + Sync> = {
        let (progress, reference, start) = (progress.clone(), reference.clone(), Instant::now());
        Arc::new(move |report| pulled_status(progress.as_ref(), &reference, start, report))
    };
    tokio::task::block_in_place(|| {
        pull_and_build(store, reference, &opts, progress, stream, &pulled, build)
    })
    .map_err(|e| match e {
        PullBuildError::Pull(e) => anyhow::Error::new(e).context(format!("pulling {reference}")),
        PullBuildError::Build(e) => e,
    })
}

/// The status line of a pull that started at `start` (a line above the bars on a
/// terminal; a JSON status event with --progress json; nothing with -q).
pub fn pulled_status(
    progress: &dyn Progress,
    reference: &Reference,
    start: Instant,
    report: &PullReport,
) {
    progress.event(&ProgressEvent::Status {
        message: &format!(
            "pulled {reference} in {:.2}s: {} blobs fetched ({}), {} already present",
            start.elapsed().as_secs_f64(),
            report.blobs_fetched,
            ByteSize(report.bytes_fetched),
            report.blobs_skipped
        ),
    });
}

/// Cap glibc's malloc arenas at one, for the commands that move blobs (`pull`, `copy`,
/// `push`; called by `main` before the runtime starts).
///
/// glibc gives each thread that allocates its own arena (up to 8 per core) and keeps what
/// is freed there; a transfer touches many threads (the runtime's workers receive network
/// chunks, a blocking thread per blob hashes and writes them), so every arena ends up
/// holding its own high-water mark of freed buffers. One arena shares them: the peak RSS
/// of the bench's 6-layer pull goes from 32–35 to 28–32 MiB, with no measurable change in
/// time (the allocations are few and large: one per network read).
// The one unsafe call of the binary: an FFI declaration and call of glibc's mallopt.
#[allow(unsafe_code)]
pub(crate) fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        /// glibc's `M_ARENA_MAX` (malloc.h).
        const M_ARENA_MAX: std::ffi::c_int = -8;
        // SAFETY: the declaration is glibc's prototype (`int mallopt(int param, int
        // value)`, malloc.h), and this target links glibc. mallopt only sets a tunable of
        // the allocator (under its own lock, so other threads may allocate meanwhile) and
        // reads no memory of ours; a refused value returns 0, which leaves the default.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
}

/// Run it.
pub async fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(
        a.reference
            .strip_prefix("docker://")
            .unwrap_or(&a.reference),
    )?;
    let progress: Arc<dyn Progress> = Arc::from(reporter(g.progress_mode()));
    let opts = a.pull.options(&progress)?;
    let store = g.open_store()?;
    let start = Instant::now();
    let report = hoist_transport::pull(&store, &reference, &opts, progress.as_ref())
        .await
        .with_context(|| format!("pulling {reference}"));
    drop(opts);
    drop(progress);
    let report = report?;
    if !g.quiet {
        let resumed = if report.blobs_resumed > 0 {
            format!(
                ", {} resumed ({} kept from an earlier run)",
                report.blobs_resumed,
                ByteSize(report.bytes_resumed)
            )
        } else {
            String::new()
        };
        eprintln!(
            "pulled {reference} in {:.2}s: {} blobs fetched ({}){resumed}, {} already present",
            start.elapsed().as_secs_f64(),
            report.blobs_fetched,
            ByteSize(report.bytes_fetched),
            report.blobs_skipped
        );
    }
    println!("{}", report.image.id);
    Ok(())
}
