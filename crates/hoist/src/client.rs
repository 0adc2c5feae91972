//! [`Client`]: the store, registry settings, mirrors, platform, jobs, trust policy and
//! progress reporter given once, and the everyday calls on top of them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hoist_mkfs::BuildResult;
use hoist_registry::{ClientOptions, MirrorConfig, MirrorSources, RegistryClient, SharedProgress};
use hoist_store::{GcOptions, GcReport, ImageRecord, RemoveReport, Store};
use hoist_transport::copy::CopyReport;
use hoist_transport::transports::any::{AnyDestination, AnySource, OpenOptions};
use hoist_transport::transports::{
    ArchiveFormat, ArchiveTarget, DynImageDestination, ImageDestination, ImageRef,
    ImageSource as _, LoadedImage, ManifestRef, SaveImage, Transport,
};
use hoist_transport::trust::TrustCheck;
use hoist_transport::{
    DEFAULT_JOBS, Inspected, PullBuildError, PullOptions, PullReport, PullTarget, TargetError,
};
use hoist_trust::Policy;
use hoist_types::{NoProgress, Platform, Progress, Reference};
use hoist_unpack::{UnpackOptions, UnpackReport};

use crate::{CopyOptions, Error, PullPolicy, Result, RootfsOptions};

/// A handle on a store and the settings every call shares: the façade's entry point.
///
/// Built once with [`Client::builder`]; cheap to clone (the clones share everything), and
/// `Send + Sync`. The `async` methods need a Tokio runtime (current-thread or
/// multi-thread); blocking work (hashing, unpacking, writing images, garbage collection)
/// runs on the runtime's blocking threads, never on its workers. Without a runtime, use
/// [`crate::blocking::Client`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let client = hoist::Client::builder()
///     .store(dir.path().join("store"))
///     .platform("linux/amd64".parse()?)
///     .jobs(4)
///     .build()?;
/// assert!(client.images()?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    registry: ClientOptions,
    mirrors: MirrorConfig,
    platform: Platform,
    jobs: usize,
    trust: Option<Arc<Policy>>,
    progress: Arc<dyn Progress>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("store", &self.inner.store.root())
            .field("platform", &self.inner.platform)
            .field("jobs", &self.inner.jobs)
            .field("trust", &self.inner.trust.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]; every setting has a default.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let mut registry = hoist::RegistryOptions::default();
/// registry.connect_timeout = std::time::Duration::from_secs(5);
/// let client = hoist::Client::builder()
///     .store(dir.path())
///     .registry(registry)
///     .mirrors(hoist::MirrorConfig::empty())
///     .progress(hoist::types::NoProgress)
///     .build()?;
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Default)]
#[must_use = "a builder does nothing until .build()"]
pub struct ClientBuilder {
    store: Option<StoreChoice>,
    registry: Option<ClientOptions>,
    mirrors: Option<MirrorChoice>,
    platform: Option<Platform>,
    jobs: Option<usize>,
    trust: Option<Arc<Policy>>,
    progress: Option<Arc<dyn Progress>>,
}

enum StoreChoice {
    Path(PathBuf),
    Open(Store),
}

enum MirrorChoice {
    Given(MirrorConfig),
    FromEnv,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("platform", &self.platform)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The store's directory, created when absent (default: [`Store::default_root`],
    /// `$HOIST_STORE` or the user's data directory).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::Client::builder().store(dir.path()).build().unwrap();
    /// assert_eq!(client.store().root(), dir.path());
    /// ```
    pub fn store(mut self, root: impl Into<PathBuf>) -> ClientBuilder {
        self.store = Some(StoreChoice::Path(root.into()));
        self
    }

    /// A store already open (a read-only one, or a leased handle).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = hoist::Store::open(dir.path()).unwrap();
    /// let client = hoist::Client::builder().store_handle(store).build().unwrap();
    /// # let _ = client;
    /// ```
    pub fn store_handle(mut self, store: Store) -> ClientBuilder {
        self.store = Some(StoreChoice::Open(store));
        self
    }

    /// How to reach registries: TLS, CA directories, credentials, auth files, timeouts,
    /// retries (default: [`RegistryOptions::default`](crate::RegistryOptions)). Its
    /// `progress` field is replaced by the client's reporter.
    ///
    /// ```
    /// let mut registry = hoist::RegistryOptions::default();
    /// registry.plain_http = Some(true);
    /// let builder = hoist::Client::builder().registry(registry);
    /// # let _ = builder;
    /// ```
    pub fn registry(mut self, options: ClientOptions) -> ClientBuilder {
        self.registry = Some(options);
        self
    }

    /// Mirrors tried, in order, before each registry (default: none).
    ///
    /// ```
    /// let builder = hoist::Client::builder().mirrors(hoist::MirrorConfig::empty());
    /// # let _ = builder;
    /// ```
    pub fn mirrors(mut self, mirrors: MirrorConfig) -> ClientBuilder {
        self.mirrors = Some(MirrorChoice::Given(mirrors));
        self
    }

    /// Mirrors read, at [`build`](Self::build), from where the `hoist` command reads them:
    /// hoist's config file, containerd's `hosts.toml`, containers' `registries.conf`
    /// ([`MirrorSources::from_env`]).
    ///
    /// ```
    /// let builder = hoist::Client::builder().mirrors_from_env();
    /// # let _ = builder;
    /// ```
    pub fn mirrors_from_env(mut self) -> ClientBuilder {
        self.mirrors = Some(MirrorChoice::FromEnv);
        self
    }

    /// The platform chosen from multi-platform images (default: the host's).
    ///
    /// ```
    /// let builder = hoist::Client::builder().platform("linux/arm64/v8".parse().unwrap());
    /// # let _ = builder;
    /// ```
    pub fn platform(mut self, platform: Platform) -> ClientBuilder {
        self.platform = Some(platform);
        self
    }

    /// How many blobs move at once (default: [`DEFAULT_JOBS`]); at least 1.
    ///
    /// ```
    /// let err = hoist::Client::builder().jobs(0).build().unwrap_err();
    /// assert_eq!(err.kind(), hoist::ErrorKind::InvalidInput);
    /// ```
    pub fn jobs(mut self, jobs: usize) -> ClientBuilder {
        self.jobs = Some(jobs);
        self
    }

    /// A containers-policy.json policy enforced on every pull, copy, push and load
    /// (default: none, every image accepted).
    ///
    /// ```no_run
    /// let policy = hoist::trust::Policy::from_file("/etc/containers/policy.json".as_ref())?;
    /// let builder = hoist::Client::builder().trust_policy(std::sync::Arc::new(policy));
    /// # let _ = builder;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trust_policy(mut self, policy: Arc<Policy>) -> ClientBuilder {
        self.trust = Some(policy);
        self
    }

    /// The one progress reporter of every call (default: [`NoProgress`]). hoist never
    /// prints; it reports here.
    ///
    /// ```
    /// struct Log;
    /// impl hoist::types::Progress for Log {
    ///     fn event(&self, e: &hoist::types::ProgressEvent<'_>) {
    ///         let _ = e;
    ///     }
    /// }
    /// let builder = hoist::Client::builder().progress(Log);
    /// # let _ = builder;
    /// ```
    pub fn progress(self, progress: impl Progress + 'static) -> ClientBuilder {
        self.shared_progress(Arc::new(progress))
    }

    /// Like [`progress`](Self::progress), for a reporter the caller shares.
    ///
    /// ```
    /// let p: std::sync::Arc<dyn hoist::types::Progress> = std::sync::Arc::new(hoist::types::NoProgress);
    /// let builder = hoist::Client::builder().shared_progress(p);
    /// # let _ = builder;
    /// ```
    pub fn shared_progress(mut self, progress: Arc<dyn Progress>) -> ClientBuilder {
        self.progress = Some(progress);
        self
    }

    /// Opens (or creates) the store and reads the mirror configuration if asked.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::Client::builder().store(dir.path()).build().unwrap();
    /// # let _ = client;
    /// ```
    pub fn build(self) -> Result<Client> {
        let jobs = self.jobs.unwrap_or(DEFAULT_JOBS);
        if jobs == 0 {
            return Err(Error::InvalidArgument {
                what: "jobs",
                reason: "must be at least 1".into(),
            });
        }
        let store = match self.store {
            Some(StoreChoice::Open(s)) => s,
            Some(StoreChoice::Path(p)) => Store::open(p)?,
            None => Store::open(Store::default_root())?,
        };
        let mirrors = match self.mirrors {
            Some(MirrorChoice::Given(m)) => m,
            Some(MirrorChoice::FromEnv) => MirrorSources::from_env().load()?,
            None => MirrorConfig::empty(),
        };
        let progress = self.progress.unwrap_or_else(|| Arc::new(NoProgress));
        let mut registry = self.registry.unwrap_or_default();
        registry.progress = Some(SharedProgress(progress.clone()));
        Ok(Client {
            inner: Arc::new(Inner {
                store,
                registry,
                mirrors,
                platform: self.platform.unwrap_or_else(Platform::host),
                jobs,
                trust: self.trust,
                progress,
            }),
        })
    }
}

/// Where [`Client::copy_into`] writes: a reference to open (after trust is enforced), or
/// a destination of the embedder's own.
enum Dest<'a> {
    Ref(&'a ImageRef),
    Custom(Box<dyn DynImageDestination>),
}

/// `docker://REF` or `REF` as a registry reference.
fn registry_reference(s: &str) -> Result<Reference> {
    Ok(Reference::parse(s.strip_prefix("docker://").unwrap_or(s))?)
}

impl Client {
    /// A builder with every setting at its default.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::Client::builder().store(dir.path()).build().unwrap();
    /// # let _ = client;
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The store (for everything the façade does not wrap: tags, fsck, disk usage…).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::Client::builder().store(dir.path()).build().unwrap();
    /// let usage = client.store().disk_usage().unwrap();
    /// # let _ = usage;
    /// ```
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The platform chosen from multi-platform images.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::Client::builder().store(dir.path()).build().unwrap();
    /// assert_eq!(client.platform(), &hoist::Platform::host());
    /// ```
    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    /// The same client on a leased store handle: what it touches is kept by
    /// [`gc`](Self::gc) (in this process or another), even once untagged or removed,
    /// until the last clone of the returned client is dropped. Hold one for the life of a
    /// sandbox whose rootfs comes from the store.
    ///
    /// Held: every image it resolves ([`image`](Self::image), [`unpack`](Self::unpack),
    /// [`rootfs`](Self::rootfs), [`inspect`](Self::inspect) of the store), every image it
    /// [`pull`](Self::pull)s (its blobs, diff IDs and chain IDs, so the rootfs cache
    /// entries built from it too). Not yet: images written by [`copy`](Self::copy) or
    /// [`load`](Self::load) into the store; resolve them with
    /// [`image`](Self::image) afterwards to hold them.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let client = hoist::Client::builder().store(dir.path()).build()?;
    /// let held = client.leased()?;
    /// # let _ = held;
    /// # Ok(()) }
    /// ```
    pub fn leased(&self) -> Result<Client> {
        let store = self.inner.store.leased()?;
        Ok(self.with_store(store))
    }

    fn with_store(&self, store: Store) -> Client {
        let i = &self.inner;
        Client {
            inner: Arc::new(Inner {
                store,
                registry: i.registry.clone(),
                mirrors: i.mirrors.clone(),
                platform: i.platform.clone(),
                jobs: i.jobs,
                trust: i.trust.clone(),
                progress: i.progress.clone(),
            }),
        }
    }

    fn pull_options(&self) -> PullOptions {
        let i = &self.inner;
        let mut o = PullOptions::default();
        o.platform = i.platform.clone();
        o.jobs = i.jobs;
        o.registry = i.registry.clone();
        o.mirrors = i.mirrors.clone();
        o.trust = i.trust.clone();
        o
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store, Arc<dyn Progress>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.inner.store.clone();
        let progress = self.inner.progress.clone();
        tokio::task::spawn_blocking(move || f(store, progress)).await?
    }

    /// The images in the store.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::Client::builder().store(dir.path()).build().unwrap();
    /// for image in client.images().unwrap() {
    ///     println!("{} {:?}", image.id, image.names);
    /// }
    /// ```
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.inner.store.images()?)
    }

    /// The image in the store that `query` names: a name, an ID, an ID prefix or a
    /// `name@digest`. An absent image is an error of kind [`crate::ErrorKind::NotFound`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::Client::builder().store(dir.path()).build().unwrap();
    /// assert!(client.image("alpine").is_err());
    /// ```
    pub fn image(&self, query: &str) -> Result<ImageRecord> {
        Ok(self.inner.store.resolve(query)?)
    }

    /// Removes an image's name, or the image (by ID) with all its names when `force`;
    /// blobs stay until [`gc`](Self::gc).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::Client::builder().store(dir.path()).build().unwrap();
    /// assert_eq!(client.remove("example.com/absent:1", false).unwrap_err().kind(),
    ///            hoist::ErrorKind::NotFound);
    /// ```
    pub fn remove(&self, query: &str, force: bool) -> Result<RemoveReport> {
        Ok(self.inner.store.remove_image(query, force)?)
    }

    /// Pulls `reference` (`REGISTRY/REPO[:TAG][@DIGEST]`, `docker://` optional) into the
    /// store: resumable, parallel, verified, through the mirrors, trust policy enforced
    /// before any blob is fetched. Blobs already in the store are not fetched again.
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// let report = client.pull("127.0.0.1:5000/library/alpine:3").await?;
    /// println!("{} ({} blobs fetched)", report.image.id, report.blobs_fetched);
    /// # Ok(()) }
    /// ```
    ///
    /// Cancelling: drop the future (a `tokio::time::timeout`, a `select!`), or use
    /// [`pull_until`](Self::pull_until). A pull cancelled mid-way leaves the store as a
    /// failed one does: no image, and the blobs it published that nothing else reaches
    /// withdrawn (large ones kept as complete partial downloads, so the next pull does not
    /// fetch them again) by the time its lease ends, moments after the drop.
    pub async fn pull(&self, reference: &str) -> Result<PullReport> {
        let reference = registry_reference(reference)?;
        let opts = self.pull_options();
        let mut tries = 0;
        loop {
            let report = hoist_transport::pull(
                &self.inner.store,
                &reference,
                &opts,
                self.inner.progress.as_ref(),
            )
            .await?;
            // The pull's destination holds a lease of its own, which ends with the pull;
            // a leased client's lease must hold the image from here on. Protect first,
            // then check (the lease protocol): a gc that ran in between, after the image
            // was removed, is seen, and the pull runs again.
            tries += 1;
            if self.hold(&report.image).await? || tries == 2 {
                return Ok(report);
            }
        }
    }

    /// [`pull`](Self::pull), cancelled when `cancel` completes first: then an error of
    /// kind [`crate::ErrorKind::Other`] ([`Error::Task`]) saying so, and the store is left
    /// as a failed pull leaves it (see [`pull`](Self::pull)). `cancel` is any future: a
    /// token's `cancelled()` (tokio-util's `CancellationToken`), a channel, a signal, a
    /// deadline.
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// // Elsewhere: `stop.send(())` (or dropping `stop`) cancels the pull.
    /// # drop(stop);
    /// let pulled = client
    ///     .pull_until("127.0.0.1:5000/library/alpine:3", async move {
    ///         let _ = stopped.await;
    ///     })
    ///     .await;
    /// # let _ = pulled;
    /// # Ok(()) }
    /// ```
    pub async fn pull_until(
        &self,
        reference: &str,
        cancel: impl Future<Output = ()>,
    ) -> Result<PullReport> {
        tokio::select! {
            biased;
            () = cancel => Err(Error::Task {
                what: format!("pull of {reference} cancelled"),
            }),
            pulled = self.pull(reference) => pulled,
        }
    }

    /// On a leased client: adds `image`'s blobs and rootfs cache keys to the lease, then
    /// says whether every blob is still there (and so stays there). True without a lease.
    async fn hold(&self, image: &ImageRecord) -> Result<bool> {
        if !self.inner.store.is_leased() {
            return Ok(true);
        }
        let image = image.clone();
        self.blocking(move |store, _| {
            let blobs: Vec<_> = std::iter::once(&image.manifest.digest)
                .chain(image.index.as_ref().map(|i| &i.digest))
                .chain(std::iter::once(&image.id))
                .chain(image.layers.iter().map(|l| &l.digest))
                .collect();
            store.protect(
                blobs
                    .iter()
                    .copied()
                    .chain(&image.diff_ids)
                    .chain(&image.chain_ids),
            )?;
            for d in blobs {
                if store.has_blob(d)?.is_none() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
    }

    /// Copies an image between any two places (`docker://`, `oci:DIR[:REF]`, `dir:DIR`,
    /// `oci-archive:FILE[:REF]`, `docker-archive:FILE[:REF]`, `hoist:REF` for the store);
    /// the client's platform is chosen from a multi-platform source.
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// client.copy("docker://127.0.0.1:5000/app:1", "oci:/tmp/layout:app").await?;
    /// # Ok(()) }
    /// ```
    pub async fn copy(&self, source: &str, destination: &str) -> Result<CopyReport> {
        self.copy_with(source, destination, &CopyOptions::default())
            .await
    }

    /// [`copy`](Self::copy) with options: every platform, format conversion,
    /// recompression, signatures carried along.
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// let opts = hoist::CopyOptions::default().all(true);
    /// client.copy_with("docker://127.0.0.1:5000/app:1", "oci:/tmp/layout:app", &opts).await?;
    /// # Ok(()) }
    /// ```
    pub async fn copy_with(
        &self,
        source: &str,
        destination: &str,
        options: &CopyOptions,
    ) -> Result<CopyReport> {
        let dst = ImageRef::parse(destination)?;
        self.copy_into(source, Dest::Ref(&dst), options).await
    }

    /// Copies an image from any place [`copy`](Self::copy) reads (`docker://`, `oci:`,
    /// `hoist:`…) into a destination of the embedder's own: any
    /// [`ImageDestination`](crate::transport::transports::ImageDestination), or a boxed
    /// [`DynImageDestination`](crate::transport::transports::DynImageDestination). The
    /// copy engine treats it as one of its own: it converts to fit its
    /// [`capabilities`](crate::transport::transports::ImageDestination::capabilities),
    /// sends each blob it does not have (streamed; a registry source's resumable reader is
    /// streamed into [`put_blob`](crate::transport::transports::ImageDestination::put_blob)
    /// unless the destination overrides `put_blob_from`), children before the index that
    /// lists them, and commits it last. Check it with the `conformance` feature's
    /// `hoist::conformance::check`.
    ///
    /// ```no_run
    /// # async fn f(my_destination: Box<dyn hoist::transport::transports::DynImageDestination>)
    /// # -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// let report = client.copy_to("docker://127.0.0.1:5000/app:1", my_destination).await?;
    /// println!("{:?} went to {}", report.digest, report.location);
    /// # Ok(()) }
    /// ```
    pub async fn copy_to(
        &self,
        source: &str,
        destination: impl ImageDestination + 'static,
    ) -> Result<CopyReport> {
        self.copy_to_with(source, destination, &CopyOptions::default())
            .await
    }

    /// [`copy_to`](Self::copy_to) with options (every platform, format conversion,
    /// recompression, signatures carried along, as far as the destination's capabilities
    /// allow).
    ///
    /// ```no_run
    /// # async fn f(my_destination: Box<dyn hoist::transport::transports::DynImageDestination>)
    /// # -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// let opts = hoist::CopyOptions::default().all(true);
    /// client.copy_to_with("docker://127.0.0.1:5000/app:1", my_destination, &opts).await?;
    /// # Ok(()) }
    /// ```
    pub async fn copy_to_with(
        &self,
        source: &str,
        destination: impl ImageDestination + 'static,
        options: &CopyOptions,
    ) -> Result<CopyReport> {
        let dest = Dest::Custom(Box::new(destination));
        self.copy_into(source, dest, options).await
    }

    /// The copy of [`copy_with`](Self::copy_with) and [`copy_to_with`](Self::copy_to_with):
    /// the source opened, trust enforced, then the destination opened.
    async fn copy_into(
        &self,
        source: &str,
        dst: Dest<'_>,
        options: &CopyOptions,
    ) -> Result<CopyReport> {
        let src = ImageRef::parse(source)?;
        let uses = |t: Transport| {
            src.transport() == t || matches!(&dst, Dest::Ref(d) if d.transport() == t)
        };
        let mut open = OpenOptions::default();
        open.store = uses(Transport::Hoist).then(|| self.inner.store.clone());
        open.pull = self.pull_options();
        open.source_label = Some(src.to_string());
        let mut opts = hoist_transport::copy::CopyOptions::default();
        opts.all = options.all;
        opts.platform = self.inner.platform.clone();
        opts.format = options.format;
        opts.compression = options.compression;
        opts.preserve_signatures = options.preserve_signatures;
        opts.jobs = self.inner.jobs;
        opts.trust = self.inner.trust.clone().map(|p| TrustCheck::new(p, &src));
        let source = AnySource::open(&src, &open).await?;
        // Trust before the destination is opened (opening may create it): a refused image
        // leaves the destination as it was. The engine skips the digest accepted here.
        if let Some(trust) = &opts.trust {
            let top = source.get_manifest(&ManifestRef::Top).await?;
            trust.enforce(&source, &top).await?;
        }
        let dest = match dst {
            Dest::Ref(d) => AnyDestination::open(d, &open).await?,
            Dest::Custom(d) => AnyDestination::Custom(d),
        };
        Ok(hoist_transport::copy::copy(&source, dest, &opts, self.inner.progress.as_ref()).await?)
    }

    /// Pushes an image of the store (a name, an ID or a digest) to `destination`
    /// (`REGISTRY/REPO[:TAG]`, `docker://` optional).
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// client.push("127.0.0.1:5000/app:1", "127.0.0.1:5000/app:2").await?;
    /// # Ok(()) }
    /// ```
    pub async fn push(&self, image: &str, destination: &str) -> Result<CopyReport> {
        let dest = registry_reference(destination)?;
        self.copy(&format!("hoist:{image}"), &format!("docker://{dest}"))
            .await
    }

    /// Describes an image like `skopeo inspect`: `docker://REF` asks the registry (with
    /// the repository's tags), anything else is looked up in the store.
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// let inspected = client.inspect("docker://127.0.0.1:5000/app:1").await?;
    /// println!("{:?} {:?}", inspected.info.digest, inspected.info.layers);
    /// # Ok(()) }
    /// ```
    pub async fn inspect(&self, image: &str) -> Result<Inspected> {
        if let Some(r) = image.strip_prefix("docker://") {
            let reference = Reference::parse(r)?;
            return Ok(hoist_transport::inspect_remote(
                &reference,
                &self.inner.platform,
                &self.inner.registry,
                true,
            )
            .await?);
        }
        let query = image.to_owned();
        self.blocking(move |store, _| {
            let record = store.resolve(&query)?;
            Ok(hoist_transport::inspect_local(&store, &record)?)
        })
        .await
    }

    /// The tags of a repository (`REGISTRY/REPO`, `docker://` optional), every page.
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// for tag in client.tags("127.0.0.1:5000/app").await? {
    ///     println!("{tag}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>> {
        let r = Reference::parse_repository(
            repository.strip_prefix("docker://").unwrap_or(repository),
        )?;
        let client = RegistryClient::new(r.registry(), self.inner.registry.clone())?;
        client.ping().await?;
        Ok(client.list_tags(r.repository()).await?)
    }

    /// Deletes the manifest `reference` names from its registry (skopeo delete's job): a
    /// tag is resolved to its manifest's digest, which is deleted, so every tag naming it
    /// goes with it. Returns the digest deleted. The store is not touched (see
    /// [`remove`](Self::remove)).
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// let gone = client.delete_from_registry("127.0.0.1:5000/app:old").await?;
    /// println!("deleted {gone}");
    /// # Ok(()) }
    /// ```
    pub async fn delete_from_registry(&self, reference: &str) -> Result<hoist_types::Digest> {
        let r = Reference::parse(reference.strip_prefix("docker://").unwrap_or(reference))?;
        let client = RegistryClient::new(r.registry(), self.inner.registry.clone())?;
        Ok(client
            .delete(r.repository(), &r.manifest_reference())
            .await?)
    }

    /// Loads every image and tag of a docker-archive or oci-archive (compressed or not,
    /// as `docker load` reads them) into the store.
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// for image in client.load("/tmp/images.tar").await? {
    ///     println!("{} {:?}", image.id, image.names);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn load(&self, archive: impl AsRef<Path>) -> Result<Vec<LoadedImage>> {
        let path = archive.as_ref().to_owned();
        let file = std::fs::File::open(&path).map_err(|source| Error::Io {
            op: "open",
            path: Some(path.clone()),
            source,
        })?;
        let (_, loaded) = hoist_transport::transports::load_archive_trusted(
            &self.inner.store,
            file,
            &path,
            self.inner.trust.as_deref(),
            self.inner.progress.as_ref(),
        )
        .await?;
        Ok(loaded)
    }

    /// Saves images of the store (names keep their tag; IDs are saved untagged) into one
    /// archive, replaced atomically.
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// client.save(&["127.0.0.1:5000/app:1"], hoist::ArchiveFormat::DockerArchive, "/tmp/app.tar").await?;
    /// # Ok(()) }
    /// ```
    pub async fn save(
        &self,
        images: &[&str],
        format: ArchiveFormat,
        archive: impl AsRef<Path>,
    ) -> Result<()> {
        if images.is_empty() {
            return Err(Error::InvalidArgument {
                what: "images",
                reason: "no image to save".into(),
            });
        }
        let store = &self.inner.store;
        let images = images
            .iter()
            .map(|q| SaveImage::resolve(store, q))
            .collect::<Result<Vec<_>, _>>()?;
        let mut opts = hoist_transport::copy::CopyOptions::default();
        opts.jobs = self.inner.jobs;
        hoist_transport::transports::save_images(
            store,
            &images,
            format,
            ArchiveTarget::Path(archive.as_ref().to_owned()),
            &opts,
            self.inner.progress.as_ref(),
        )
        .await?;
        Ok(())
    }

    /// Unpacks an image of the store into `dir` (created; it must be absent or empty),
    /// atomically: rootless unless the process is root. The image must be in the store
    /// ([`PullPolicy::Never`]); [`unpack_with_pull`](Self::unpack_with_pull) pulls it
    /// first when missing, as [`rootfs`](Self::rootfs) does. See
    /// [`unpack_with`](Self::unpack_with) for id maps and limits.
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// client.pull("127.0.0.1:5000/app:1").await?;
    /// client.unpack("127.0.0.1:5000/app:1", "/tmp/rootfs").await?;
    /// # Ok(()) }
    /// ```
    pub async fn unpack(&self, image: &str, dir: impl AsRef<Path>) -> Result<UnpackReport> {
        let opts = UnpackOptions {
            rootless: !hoist_unpack::is_root(),
            ..UnpackOptions::default()
        };
        self.unpack_with(image, dir, opts).await
    }

    /// [`unpack`](Self::unpack) with the unpacker's own options (the store only).
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// let mut opts = hoist::UnpackOptions::default();
    /// opts.rootless = true;
    /// client.unpack_with("127.0.0.1:5000/app:1", "/tmp/rootfs", opts).await?;
    /// # Ok(()) }
    /// ```
    pub async fn unpack_with(
        &self,
        image: &str,
        dir: impl AsRef<Path>,
        options: UnpackOptions,
    ) -> Result<UnpackReport> {
        self.unpack_with_pull(image, dir, options, PullPolicy::Never)
            .await
    }

    /// [`unpack_with`](Self::unpack_with) under a pull policy, in one call from a
    /// reference: [`PullPolicy::Missing`] pulls an image absent from the store first,
    /// [`PullPolicy::Always`] asks the registry (`docker://REF` always does),
    /// [`PullPolicy::Never`] reads the store only. A pull happens (trust policy enforced)
    /// before `dir` is touched, so a refused or failed pull leaves no directory behind.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let client = hoist::Client::builder().store(dir.path().join("store")).build()?;
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// let err = runtime
    ///     .block_on(client.unpack_with_pull(
    ///         "127.0.0.1:5000/app:1",
    ///         dir.path().join("rootfs"),
    ///         hoist::UnpackOptions { rootless: true, ..Default::default() },
    ///         hoist::PullPolicy::Never,
    ///     ))
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), hoist::ErrorKind::NotFound);
    /// assert!(!dir.path().join("rootfs").exists());
    /// # Ok(()) }
    /// ```
    pub async fn unpack_with_pull(
        &self,
        image: &str,
        dir: impl AsRef<Path>,
        options: UnpackOptions,
        pull: PullPolicy,
    ) -> Result<UnpackReport> {
        // A leased client for the pull and the unpack: a gc beside it keeps the layers.
        let held = if self.inner.store.is_leased() {
            self.clone()
        } else {
            self.leased()?
        };
        let dir = dir.as_ref().to_owned();
        let unpack = move |store: &Store, image: &ImageRecord, progress: &dyn Progress| {
            hoist_unpack::unpack_image(store, image, &dir, &options, progress)
        };
        // The layers are unpacked as they download.
        held.pull_and(image, pull, true, unpack).await
    }

    /// `build` on the image `image` names under `policy`: from the store, or while the
    /// pull downloads its layers with `stream` (else after it), on a blocking thread
    /// ([`hoist_transport::pull_and_build`]). Call it on a leased client.
    async fn pull_and<R: Send + 'static, E: Into<Error> + std::fmt::Display + 'static>(
        &self,
        image: &str,
        policy: PullPolicy,
        stream: bool,
        build: impl Fn(&Store, &ImageRecord, &dyn Progress) -> std::result::Result<R, E>
        + Send
        + 'static,
    ) -> Result<R> {
        let reference = match self.pull_target(image, policy)? {
            PullTarget::Stored(record) => {
                return self
                    .blocking(move |store, progress| {
                        build(&store, &record, progress.as_ref()).map_err(Into::into)
                    })
                    .await;
            }
            PullTarget::Pull(reference) => reference,
        };
        let pull = self.pull_options();
        self.blocking(move |store, progress| {
            let pulled: Arc<dyn Fn(&PullReport) + Send + Sync> = Arc::new(|_| {});
            let build = |store: &Store, image: &ImageRecord| build(store, image, progress.as_ref());
            hoist_transport::pull_and_build(
                &store, &reference, &pull, &progress, stream, &pulled, &build,
            )
            .map_err(|e| match e {
                PullBuildError::Pull(e) => e.into(),
                PullBuildError::Build(e) => e.into(),
            })
        })
        .await
    }

    /// What `image` names under `policy` ([`hoist_transport::pull_target`]), its
    /// refusals as this crate's errors.
    fn pull_target(&self, image: &str, policy: PullPolicy) -> Result<PullTarget> {
        hoist_transport::pull_target(&self.inner.store, image, policy).map_err(|e| match e {
            TargetError::RegistryOnly { .. } => Error::InvalidArgument {
                what: "image",
                reason: format!("{e}, which PullPolicy::Never forbids"),
            },
            TargetError::NotInStore { source, .. } | TargetError::Store(source) => (*source).into(),
            TargetError::NotAReference { source, .. } => source.into(),
            e => Error::InvalidArgument {
                what: "image",
                reason: e.to_string(),
            },
        })
    }

    /// A root filesystem of `image` (directory, ext4 or erofs; flattened or per layer),
    /// cached in the store by chain ID so a second call is instant. An image absent from
    /// the store is pulled first (`docker://REF` always asks the registry; see
    /// [`RootfsOptions::pull`] for the other [`PullPolicy`]s), all under a lease, so a
    /// concurrent [`gc`](Self::gc) cannot take what the build needs.
    ///
    /// ```no_run
    /// # async fn f() -> hoist::Result<()> {
    /// let client = hoist::Client::builder().build()?;
    /// let opts = hoist::RootfsOptions::new(hoist::Format::Erofs);
    /// let built = client.rootfs("127.0.0.1:5000/app:1", &opts).await?;
    /// println!("{}", built.rootfs_path.display());
    /// # Ok(()) }
    /// ```
    pub async fn rootfs(&self, image: &str, options: &RootfsOptions) -> Result<BuildResult> {
        let held = self.leased()?;
        let opts = options.build_options();
        // The native ext4 and erofs writers build while the layers download; a directory,
        // and a tar index (its tars come from the stored blobs), after the pull.
        let stream = matches!(
            opts.format,
            Some(hoist_mkfs::Format::Ext4 | hoist_mkfs::Format::Erofs)
        ) && !opts.tar_index;
        let build = move |store: &Store, image: &ImageRecord, progress: &dyn Progress| {
            hoist_mkfs::build_rootfs(store, image, &opts, progress)
        };
        held.pull_and(image, options.pull_policy(), stream, build)
            .await
    }

    /// Collects garbage: blobs no image, name or live lease needs, rootfs cache entries of
    /// images gone, stale partial downloads, temp files and dead leases.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let client = hoist::Client::builder().store(dir.path()).build()?;
    /// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// let report = runtime.block_on(client.gc())?;
    /// assert_eq!(report.total().count, 0);
    /// # Ok(()) }
    /// ```
    pub async fn gc(&self) -> Result<GcReport> {
        self.gc_with(GcOptions::default()).await
    }

    /// [`gc`](Self::gc) with options (a dry run, grace periods).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let client = hoist::Client::builder().store(dir.path()).build()?;
    /// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// let mut opts = hoist::GcOptions::default();
    /// opts.dry_run = true;
    /// let report = runtime.block_on(client.gc_with(opts))?;
    /// assert!(report.dry_run);
    /// # Ok(()) }
    /// ```
    pub async fn gc_with(&self, options: GcOptions) -> Result<GcReport> {
        self.blocking(move |store, _| Ok(store.gc(&options)?)).await
    }
}
