//! `hoist rootfs`: a root filesystem (directory, ext4 or erofs; flattened or per layer) from
//! an image, pulled first when missing (`--pull`), cached; prints the result as JSON.
//!
//! An ext4 or erofs image of an image being pulled is built while the layers download:
//! the manifest and config are read first (the pull is then pinned to that manifest), the
//! pull runs on the runtime, and the builder reads each layer from its partial download
//! as it grows (`Store::following`; fetch → hash → decompress → apply in one pass). Each
//! layer ends only once the pull has verified and published its blob, its diff ID is
//! checked by the builder, and the image is put in the cache only once the pull has
//! committed: a failed or corrupt download leaves no image, and the pull leaves the store
//! as it was.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::ValueEnum;
use hoist_mkfs::{BuildOptions, BuildResult, Ext4Writer, Format, Size};
use hoist_store::{Downloads, ImageRecord, Store};
use hoist_transport::PullOptions;
use hoist_transport::transports::ImageSource as _;
use hoist_transport::transports::docker::DockerSource;
use hoist_types::{
    Descriptor, Hasher, ImageConfig, MAX_CONFIG_SIZE, Manifest, Progress, Reference,
};
use hoist_unpack::UnpackOptions;

use crate::cmd::print_json;
use crate::cmd::pull::{PullArgs, PullPolicy, Target, pull_reported, target};
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
        Target::Stored(image) => build(&store, &image)?,
        Target::Pull(reference) => {
            let pull = a.pull_args.options(&progress)?;
            tokio::task::block_in_place(|| {
                pull_and_build(&store, &reference, &pull, &progress, stream, &build)
            })?
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

/// Pulls `reference` and builds its root filesystem: with `stream`, while the layers
/// download (see the module docs); else, or when the manifest and config cannot be read
/// ahead (a schema 1 manifest, say), after the pull.
fn pull_and_build(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &Arc<dyn Progress>,
    stream: bool,
    build: &dyn Fn(&Store, &ImageRecord) -> anyhow::Result<BuildResult>,
) -> anyhow::Result<BuildResult> {
    let rt = tokio::runtime::Handle::current();
    let pulled = |store: &Store| -> anyhow::Result<ImageRecord> {
        let report = rt.block_on(pull_reported(store, reference, opts, progress.as_ref()))?;
        Ok(store.resolve(&report.image.manifest.digest.to_string())?)
    };
    let ahead = if stream {
        rt.block_on(read_ahead(reference, opts))
    } else {
        None
    };
    let Some((pinned, image)) = ahead else {
        return build(store, &pulled(store)?);
    };
    // The pull, pinned to the manifest read ahead, on the runtime; the build here.
    let downloads = Downloads::new();
    let task = {
        let (store, opts, progress) = (store.clone(), opts.clone(), progress.clone());
        let (downloads, want) = (downloads.clone(), image.manifest.digest.clone());
        rt.spawn(async move {
            // Whatever ends the task (a panic, the runtime shutting down), the builder's
            // readers stop waiting: they fail.
            let _ended = Ended(downloads.clone());
            let r = pull_reported(&store, &pinned, &opts, progress.as_ref()).await;
            let r = r.and_then(|report| {
                anyhow::ensure!(
                    report.image.manifest.digest == want,
                    "the pull chose manifest {}, not {want} read ahead",
                    report.image.manifest.digest
                );
                Ok(report)
            });
            downloads.finish(r.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
            r
        })
    };
    let built = build(&store.following(downloads.clone()), &image);
    // On an early build error the pull goes on to its end (its blobs stay in the store,
    // as after `hoist pull`).
    let report = match rt.block_on(task).context("the pull task ended abnormally") {
        Ok(Ok(report)) => report,
        Ok(Err(e)) | Err(e) => {
            // The builder's reads added the blobs published before the failure to this
            // handle's lease, which the pull's own withdrawal leaves alone: withdraw them
            // now, so the store is as it was.
            drop(built);
            store
                .withdraw_unreached()
                .context("withdrawing the blobs of the failed pull")?;
            return Err(e);
        }
    };
    match built {
        Ok(result) => Ok(result),
        // The pull committed, but the build from its downloads failed (a source that sent
        // wrong bytes before another one sent the right ones, say): once more, from the
        // store.
        Err(e) => {
            progress.event(&hoist_types::ProgressEvent::Status {
                message: &format!("building while pulling failed ({e:#}); building from the store"),
            });
            build(
                store,
                &store.resolve(&report.image.manifest.digest.to_string())?,
            )
        }
    }
}

/// Marks the followed pull failed when dropped before it finished.
struct Ended(Downloads);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0
            .finish(Err("the pull stopped before it finished".to_owned()));
    }
}

/// The manifest and config of `reference` for the pull's platform, read before the pull:
/// the reference pinned to the top manifest's digest (a tag kept, so the pull records it
/// for what was read), and the image as the builder needs it (layers, diff IDs, chain
/// IDs), the config checked against its digest. `None` when they cannot be read ahead
/// (the pull then runs first, and says why if it fails too).
async fn read_ahead(reference: &Reference, opts: &PullOptions) -> Option<(Reference, ImageRecord)> {
    let src = DockerSource::new(reference.clone(), opts);
    let client = src.registry_client().await.ok()?;
    let resolved = hoist_transport::resolve(&client, reference, &opts.platform)
        .await
        .ok()?;
    let Manifest::Image(m) = &resolved.image.manifest else {
        return None;
    };
    if m.config.size > MAX_CONFIG_SIZE
        || m.layers
            .iter()
            .any(|l| l.urls.as_ref().is_some_and(|u| !u.is_empty()))
    {
        return None;
    }
    let mut blob = src.get_blob(&m.config).await.ok()?.into_async();
    let mut bytes = Vec::with_capacity(m.config.size as usize);
    while let Some(chunk) = blob.next().await {
        bytes.extend_from_slice(&chunk.ok()?);
        if bytes.len() as u64 > m.config.size {
            return None;
        }
    }
    let mut h = Hasher::new(m.config.digest.algorithm());
    h.update(&bytes);
    if bytes.len() as u64 != m.config.size || h.finish() != m.config.digest {
        return None;
    }
    let config = ImageConfig::parse(&bytes).ok()?;
    config.check_layer_count(m.layers.len()).ok()?;
    let pinned = reference.with_digest(resolved.top().digest.clone());
    let image = ImageRecord {
        id: m.config.digest.clone(),
        names: Vec::new(),
        repo_digests: Vec::new(),
        manifest: resolved.image.descriptor(),
        index: None,
        config_media_type: m.config.media_type.clone(),
        config_size: m.config.size,
        layers: m.layers.clone(),
        diff_ids: config.rootfs.diff_ids.clone(),
        chain_ids: config.chain_ids(),
        platform: opts.platform.clone(),
        created: None,
        size: m.config.size + m.layers.iter().map(|l: &Descriptor| l.size).sum::<u64>(),
        added: String::new(),
        source: None,
        config_parent: None,
        manifests: Vec::new(),
        targets: Vec::new(),
        digest_refs: Vec::new(),
        oci_views: Default::default(),
    };
    Some((pinned, image))
}
