//! Pulling for a consumer, as `hoist rootfs REF`, `hoist unpack REF` and the library's
//! `Client::rootfs` do: which image an argument names under a [`PullPolicy`]
//! ([`pull_target`]), and a pull whose layers a builder reads while they download
//! ([`pull_and_build`]).
//!
//! While building, the manifest and config are read first, through the source the pull
//! then reads from (mirrors first); the pull is pinned to that manifest and takes what was
//! read from that source instead of fetching it again ([`Prefetched`]). The pull runs on
//! the runtime, and the builder reads each layer from its partial download as it grows
//! ([`Store::following`]: fetch → hash → decompress → apply in one pass). A layer ends for
//! the builder only once the pull has verified and published its blob, and the builder
//! checks each diff ID: a failed or corrupt download leaves no result, and the pull leaves
//! the store as it was.

use std::collections::HashMap;
use std::sync::Arc;

use hoist_store::{Downloads, ImageRecord, Store, StoreError};
use hoist_types::{
    Descriptor, Digest, Hasher, ImageConfig, MAX_CONFIG_SIZE, Manifest, NoProgress, Progress,
    ProgressEvent, Reference, TypeError,
};

use crate::transports::any::AnySource;
use crate::transports::docker::DockerSource;
use crate::transports::prefetched::Prefetched;
use crate::transports::{ImageSource as _, ManifestRef, RawManifest};
use crate::{PullOptions, PullReport, TransportError};

/// When a command that needs an image asks the registry for it, as `podman run --pull`
/// (the `--pull` option of `hoist rootfs` and `hoist unpack`, the library's
/// `RootfsOptions::pull`).
///
/// A `docker://REF` argument always asks the registry, whatever the policy but
/// [`PullPolicy::Never`], which refuses it. Every pull enforces the trust policy before any
/// blob is fetched: a refused image leaves the store as it was.
///
/// ```
/// assert_eq!(hoist_transport::PullPolicy::default(), hoist_transport::PullPolicy::Missing);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum PullPolicy {
    /// Use the image of the store the argument names (a name, normalized as a pull does,
    /// an ID or an ID prefix); pull it when there is none.
    #[default]
    Missing,
    /// Always ask the registry: a moved tag is followed; blobs in the store are not
    /// fetched again. The argument must be a reference.
    Always,
    /// Never ask the registry: the image must be in the store ([`TargetError::NotInStore`]
    /// otherwise).
    Never,
}

/// What an argument names under a [`PullPolicy`] (see [`pull_target`]).
#[derive(Debug)]
pub enum PullTarget {
    /// An image of the store.
    Stored(Box<ImageRecord>),
    /// A reference to pull.
    Pull(Reference),
}

/// Why an argument names neither an image of the store nor a reference the policy lets
/// be pulled. The messages leave out how the policy was given (a flag, an option): the
/// front ends add that.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// `docker://REF` always asks the registry, which [`PullPolicy::Never`] forbids.
    #[error("{arg}: a docker:// reference always asks the registry")]
    RegistryOnly {
        /// The argument.
        arg: String,
    },
    /// Not in the store, and [`PullPolicy::Never`] forbids pulling it.
    #[error("{arg} is not in the store")]
    NotInStore {
        /// The argument.
        arg: String,
        /// The store's answer.
        source: Box<StoreError>,
    },
    /// An image ID (`sha256:…`, or a prefix) that is not in the store: IDs cannot be
    /// pulled.
    #[error(
        "{arg} is not in the store, and an image ID cannot be pulled (pull a reference: \
         REGISTRY/REPO[:TAG][@DIGEST])"
    )]
    IdNotPullable {
        /// The argument.
        arg: String,
    },
    /// Not in the store, and not a reference either.
    #[error("{arg} is not in the store, and not an image reference to pull")]
    NotAReference {
        /// The argument.
        arg: String,
        /// Why it does not parse.
        source: TypeError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(Box<StoreError>),
}

/// Whether `arg` under `policy` is an image of `store` or a reference to pull; nothing is
/// pulled. `arg` is `REF`, `docker://REF` (always asks the registry) or an image of the
/// store (a name, an ID or an ID prefix). On a leased handle a stored image is held.
pub fn pull_target(
    store: &Store,
    arg: &str,
    policy: PullPolicy,
) -> Result<PullTarget, TargetError> {
    let registry_only = arg.starts_with("docker://");
    if registry_only && policy == PullPolicy::Never {
        return Err(TargetError::RegistryOnly { arg: arg.into() });
    }
    if !registry_only && policy != PullPolicy::Always {
        match store.resolve(arg) {
            Ok(image) => return Ok(PullTarget::Stored(Box::new(image))),
            Err(StoreError::ImageNotFound { .. }) if policy == PullPolicy::Missing => {}
            Err(source @ StoreError::ImageNotFound { .. }) => {
                return Err(TargetError::NotInStore {
                    arg: arg.into(),
                    source: Box::new(source),
                });
            }
            Err(e) => return Err(TargetError::Store(Box::new(e))),
        }
    }
    // `sha256:…` would parse as the repository docker.io/library/sha256.
    if ["sha256:", "sha512:"].iter().any(|p| arg.starts_with(p)) {
        return Err(TargetError::IdNotPullable { arg: arg.into() });
    }
    Reference::parse(arg.strip_prefix("docker://").unwrap_or(arg))
        .map(PullTarget::Pull)
        .map_err(|source| TargetError::NotAReference {
            arg: arg.into(),
            source,
        })
}

/// How [`pull_and_build`] failed.
#[derive(Debug)]
pub enum PullBuildError<E> {
    /// The pull failed; the store is as it was.
    Pull(TransportError),
    /// The build failed (after the pull committed, from the store as well).
    Build(E),
}

/// Pulls `reference` into `store` and builds from it with `build`. With `stream`, `build`
/// runs while the layers download, on a handle that follows the pull's partial downloads
/// (see the module docs); without it, or when the manifest and config cannot be read
/// ahead (a schema 1 manifest, foreign layers, a registry that fails the first time), it
/// runs on the image the pull committed. `on_pulled` is called once the pull has
/// committed (while the build goes on, when it streams).
///
/// Blocking: call it inside a tokio runtime from a thread that may block
/// (`spawn_blocking`, `block_in_place`); the pull runs on that runtime.
pub fn pull_and_build<R, E: std::fmt::Display>(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &Arc<dyn Progress>,
    stream: bool,
    on_pulled: &Arc<dyn Fn(&PullReport) + Send + Sync>,
    build: &dyn Fn(&Store, &ImageRecord) -> Result<R, E>,
) -> Result<R, PullBuildError<E>> {
    let rt = tokio::runtime::Handle::current();
    let committed =
        |store: &Store, report: &PullReport| -> Result<ImageRecord, PullBuildError<E>> {
            // By the manifest pulled: resolving holds the image on a leased handle (the
            // pull's own lease ended with it), and fails cleanly if it was removed meanwhile.
            store
                .resolve(&report.image.manifest.digest.to_string())
                .map_err(|e| PullBuildError::Pull(e.into()))
        };
    let ahead = if stream {
        rt.block_on(read_ahead(reference, opts))
    } else {
        None
    };
    let Some((pinned, image, src)) = ahead else {
        let report = rt
            .block_on(crate::pull(store, reference, opts, progress.as_ref()))
            .map_err(PullBuildError::Pull)?;
        on_pulled(&report);
        let image = committed(store, &report)?;
        return build(store, &image).map_err(PullBuildError::Build);
    };
    // The pull, pinned to the manifest read ahead, on the runtime; the build here.
    let downloads = Downloads::new();
    let task = {
        let (store, opts, progress) = (store.clone(), opts.clone(), progress.clone());
        let (downloads, want) = (downloads.clone(), image.manifest.digest.clone());
        let on_pulled = on_pulled.clone();
        rt.spawn(async move {
            // Whatever ends the task (a panic, the runtime shutting down), the builder's
            // readers stop waiting: they fail.
            let _ended = Ended(downloads.clone());
            let src = AnySource::custom(src);
            let r = crate::pull_from(&store, &pinned, &src, &opts, progress.as_ref())
                .await
                .and_then(|report| {
                    let got = &report.image.manifest.digest;
                    if *got == want {
                        Ok(report)
                    } else {
                        Err(TransportError::DigestMismatch {
                            what: format!("the image manifest {pinned} resolved to, against the one read ahead"),
                            expected: want.clone(),
                            actual: got.clone(),
                        })
                    }
                });
            if let Ok(report) = &r {
                on_pulled(report);
            }
            downloads.finish(r.as_ref().map(|_| ()).map_err(|e| hoist_types::error_chain(e)));
            r
        })
    };
    let built = build(&store.following(downloads.clone()), &image);
    let report = rt.block_on(task).unwrap_or_else(|e| {
        Err(TransportError::Task {
            what: format!("the pull task ended abnormally: {e}"),
        })
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            // The builder's reads added the blobs published before the failure to this
            // handle's lease, which the pull's own withdrawal leaves alone: withdraw them
            // now, so the store is as it was. (On an early build error the pull went on to
            // its end: its blobs stay, as after a pull.)
            drop(built);
            store
                .withdraw_unreached()
                .map_err(|e| PullBuildError::Pull(e.into()))?;
            return Err(PullBuildError::Pull(e));
        }
    };
    match built {
        Ok(result) => Ok(result),
        // The pull committed, but the build from its downloads failed (a source that sent
        // wrong bytes before another one sent the right ones, say): once more, from the
        // store.
        Err(e) => {
            progress.event(&ProgressEvent::Status {
                message: &format!("building while pulling failed ({e:#}); building from the store"),
            });
            let image = committed(store, &report)?;
            build(store, &image).map_err(PullBuildError::Build)
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

/// The manifest and config of `reference` for the pull's platform, read before the pull
/// through the source the pull then reads from (mirrors first, as the pull would): the
/// reference pinned to the top manifest's digest (a tag kept, so the pull records it for
/// what was read), the image as the builder needs it (layers, diff IDs, chain IDs), the
/// config checked against its digest, and the source holding what was read, so the pull
/// does not read it again ([`Prefetched`]). `None` when they cannot be read ahead (the
/// pull then runs first, and says why if it fails too).
async fn read_ahead(
    reference: &Reference,
    opts: &PullOptions,
) -> Option<(Reference, ImageRecord, Prefetched)> {
    let upstream = Arc::new(AnySource::Docker(DockerSource::new(
        reference.clone(),
        opts,
    )));
    let top = upstream.get_manifest(&ManifestRef::Top).await.ok()?;
    let resolved = {
        let upstream = &upstream;
        crate::resolve::walk(
            top.clone(),
            &reference.to_string(),
            &opts.platform,
            |entry| async move {
                upstream
                    .get_manifest(&ManifestRef::Digest(entry.digest))
                    .await
            },
        )
        .await
        .ok()?
    };
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
    let (bytes, fetched) = upstream
        .blob_fetcher()?
        .read_small(&m.config, &NoProgress)
        .await
        .ok()?;
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
    let manifests: HashMap<Digest, RawManifest> = resolved
        .indexes
        .iter()
        .chain([&resolved.image])
        .map(|m| (m.digest.clone(), m.clone()))
        .collect();
    let src = Prefetched::new(upstream, top)
        .with_manifests(move |d| manifests.get(d).cloned())
        .with_blob(m.config.digest.clone(), bytes, fetched.endpoint);
    Some((pinned, image, src))
}
