//! The façade for programs without an async runtime: the same calls as
//! [`crate::Client`], each blocking until done.
//!
//! A [`Client`] owns a multi-threaded Tokio runtime (its worker threads move the blobs;
//! hashing and file work go to its blocking threads). Its methods must not be called from
//! inside another Tokio runtime (Tokio panics on a nested `block_on`): async code uses
//! [`crate::Client`].
//!
//! ```
//! # fn main() -> hoist::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let client = hoist::blocking::Client::builder().store(dir.path()).build()?;
//! assert!(client.images()?.is_empty());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hoist_mkfs::BuildResult;
use hoist_registry::{ClientOptions, MirrorConfig};
use hoist_store::{GcOptions, GcReport, ImageRecord, RemoveReport, Store};
use hoist_transport::copy::CopyReport;
use hoist_transport::transports::{ArchiveFormat, LoadedImage};
use hoist_transport::{Inspected, PullReport};
use hoist_trust::Policy;
use hoist_types::{Platform, Progress};
use hoist_unpack::{UnpackOptions, UnpackReport};

use crate::{CopyOptions, Error, PullPolicy, Result, RootfsOptions};

/// A [`crate::Client`] with its own runtime; every call blocks. Cheap to clone.
///
/// ```
/// # fn main() -> hoist::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let client = hoist::blocking::Client::builder().store(dir.path()).jobs(2).build()?;
/// let report = client.gc()?;
/// assert_eq!(report.total().count, 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

/// Builds a blocking [`Client`]: the settings of [`crate::ClientBuilder`].
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let client = hoist::blocking::Client::builder()
///     .store(dir.path())
///     .platform("linux/amd64".parse().unwrap())
///     .build()
///     .unwrap();
/// # let _ = client;
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until .build()"]
pub struct ClientBuilder {
    inner: crate::ClientBuilder,
}

macro_rules! forward {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        $(#[$doc])*
        pub fn $name(self, $($arg: $ty),*) -> ClientBuilder {
            ClientBuilder { inner: self.inner.$name($($arg),*) }
        }
    )*};
}

impl ClientBuilder {
    forward! {
        /// See [`crate::ClientBuilder::store`].
        ///
        /// ```
        /// # let dir = tempfile::tempdir().unwrap();
        /// let client = hoist::blocking::Client::builder().store(dir.path()).build().unwrap();
        /// # let _ = client;
        /// ```
        fn store(root: impl Into<PathBuf>);
        /// See [`crate::ClientBuilder::store_handle`].
        ///
        /// ```
        /// # let dir = tempfile::tempdir().unwrap();
        /// let store = hoist::Store::open(dir.path()).unwrap();
        /// let client = hoist::blocking::Client::builder().store_handle(store).build().unwrap();
        /// # let _ = client;
        /// ```
        fn store_handle(store: Store);
        /// See [`crate::ClientBuilder::registry`].
        ///
        /// ```
        /// let b = hoist::blocking::Client::builder().registry(hoist::RegistryOptions::default());
        /// # let _ = b;
        /// ```
        fn registry(options: ClientOptions);
        /// See [`crate::ClientBuilder::mirrors`].
        ///
        /// ```
        /// let b = hoist::blocking::Client::builder().mirrors(hoist::MirrorConfig::empty());
        /// # let _ = b;
        /// ```
        fn mirrors(mirrors: MirrorConfig);
        /// See [`crate::ClientBuilder::mirrors_from_env`].
        ///
        /// ```
        /// let b = hoist::blocking::Client::builder().mirrors_from_env();
        /// # let _ = b;
        /// ```
        fn mirrors_from_env();
        /// See [`crate::ClientBuilder::platform`].
        ///
        /// ```
        /// let b = hoist::blocking::Client::builder().platform(hoist::Platform::host());
        /// # let _ = b;
        /// ```
        fn platform(platform: Platform);
        /// See [`crate::ClientBuilder::jobs`].
        ///
        /// ```
        /// let b = hoist::blocking::Client::builder().jobs(8);
        /// # let _ = b;
        /// ```
        fn jobs(jobs: usize);
        /// See [`crate::ClientBuilder::trust_policy`].
        ///
        /// ```
        /// let policy = hoist::trust::Policy::parse(br#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        /// let b = hoist::blocking::Client::builder().trust_policy(std::sync::Arc::new(policy));
        /// # let _ = b;
        /// ```
        fn trust_policy(policy: Arc<Policy>);
        /// See [`crate::ClientBuilder::progress`].
        ///
        /// ```
        /// let b = hoist::blocking::Client::builder().progress(hoist::types::NoProgress);
        /// # let _ = b;
        /// ```
        fn progress(progress: impl Progress + 'static);
        /// See [`crate::ClientBuilder::shared_progress`].
        ///
        /// ```
        /// let p: std::sync::Arc<dyn hoist::types::Progress> = std::sync::Arc::new(hoist::types::NoProgress);
        /// let b = hoist::blocking::Client::builder().shared_progress(p);
        /// # let _ = b;
        /// ```
        fn shared_progress(progress: Arc<dyn Progress>);
    }

    /// Opens the store and starts the client's runtime.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::blocking::Client::builder().store(dir.path()).build().unwrap();
    /// # let _ = client;
    /// ```
    pub fn build(self) -> Result<Client> {
        let inner = self.inner.build()?;
        Client::new(inner)
    }
}

impl Client {
    /// A builder with every setting at its default.
    ///
    /// ```
    /// let b = hoist::blocking::Client::builder();
    /// # let _ = b;
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Wraps an async client, with a new multi-threaded runtime.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::Client::builder().store(dir.path()).build().unwrap();
    /// let blocking = hoist::blocking::Client::new(client).unwrap();
    /// # let _ = blocking;
    /// ```
    pub fn new(client: crate::Client) -> Result<Client> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("hoist")
            .build()
            .map_err(Error::Runtime)?;
        Ok(Client {
            inner: client,
            runtime: Arc::new(runtime),
        })
    }

    /// The async client inside (shares the store and settings).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::blocking::Client::builder().store(dir.path()).build().unwrap();
    /// assert_eq!(client.as_async().store().root(), dir.path());
    /// ```
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// See [`crate::Client::store`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::blocking::Client::builder().store(dir.path()).build().unwrap();
    /// assert_eq!(client.store().root(), dir.path());
    /// ```
    pub fn store(&self) -> &Store {
        self.inner.store()
    }

    /// See [`crate::Client::leased`]: the same client on a leased store handle.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::blocking::Client::builder().store(dir.path()).build().unwrap();
    /// let held = client.leased().unwrap();
    /// # let _ = held;
    /// ```
    pub fn leased(&self) -> Result<Client> {
        Ok(Client {
            inner: self.inner.leased()?,
            runtime: self.runtime.clone(),
        })
    }

    /// See [`crate::Client::images`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::blocking::Client::builder().store(dir.path()).build().unwrap();
    /// assert!(client.images().unwrap().is_empty());
    /// ```
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        self.inner.images()
    }

    /// See [`crate::Client::image`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::blocking::Client::builder().store(dir.path()).build().unwrap();
    /// assert_eq!(client.image("absent:1").unwrap_err().kind(), hoist::ErrorKind::NotFound);
    /// ```
    pub fn image(&self, query: &str) -> Result<ImageRecord> {
        self.inner.image(query)
    }

    /// See [`crate::Client::remove`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::blocking::Client::builder().store(dir.path()).build().unwrap();
    /// assert!(client.remove("absent:1", false).is_err());
    /// ```
    pub fn remove(&self, query: &str, force: bool) -> Result<RemoveReport> {
        self.inner.remove(query, force)
    }

    /// See [`crate::Client::pull`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// let report = client.pull("127.0.0.1:5000/app:1")?;
    /// # let _ = report;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn pull(&self, reference: &str) -> Result<PullReport> {
        self.runtime.block_on(self.inner.pull(reference))
    }

    /// See [`crate::Client::copy`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// client.copy("docker://127.0.0.1:5000/app:1", "oci:/tmp/layout:app")?;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn copy(&self, source: &str, destination: &str) -> Result<CopyReport> {
        self.runtime.block_on(self.inner.copy(source, destination))
    }

    /// See [`crate::Client::copy_with`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// let opts = hoist::CopyOptions::default().all(true);
    /// client.copy_with("docker://127.0.0.1:5000/app:1", "oci:/tmp/layout:app", &opts)?;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn copy_with(
        &self,
        source: &str,
        destination: &str,
        options: &CopyOptions,
    ) -> Result<CopyReport> {
        self.runtime
            .block_on(self.inner.copy_with(source, destination, options))
    }

    /// See [`crate::Client::copy_to`]: into a destination of the embedder's own.
    ///
    /// ```no_run
    /// # fn f(my_destination: Box<dyn hoist::transport::transports::DynImageDestination>)
    /// # -> hoist::Result<()> {
    /// let client = hoist::blocking::Client::builder().build()?;
    /// client.copy_to("docker://127.0.0.1:5000/app:1", my_destination)?;
    /// # Ok(()) }
    /// ```
    pub fn copy_to(
        &self,
        source: &str,
        destination: impl hoist_transport::transports::ImageDestination + 'static,
    ) -> Result<CopyReport> {
        self.runtime
            .block_on(self.inner.copy_to(source, destination))
    }

    /// See [`crate::Client::push`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// client.push("127.0.0.1:5000/app:1", "127.0.0.1:5000/app:2")?;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn push(&self, image: &str, destination: &str) -> Result<CopyReport> {
        self.runtime.block_on(self.inner.push(image, destination))
    }

    /// See [`crate::Client::inspect`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// let inspected = client.inspect("docker://127.0.0.1:5000/app:1")?;
    /// # let _ = inspected;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn inspect(&self, image: &str) -> Result<Inspected> {
        self.runtime.block_on(self.inner.inspect(image))
    }

    /// See [`crate::Client::tags`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// let tags = client.tags("127.0.0.1:5000/app")?;
    /// # let _ = tags;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn tags(&self, repository: &str) -> Result<Vec<String>> {
        self.runtime.block_on(self.inner.tags(repository))
    }

    /// See [`crate::Client::load`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// let loaded = client.load("/tmp/images.tar")?;
    /// # let _ = loaded;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn load(&self, archive: impl AsRef<Path>) -> Result<Vec<LoadedImage>> {
        self.runtime.block_on(self.inner.load(archive))
    }

    /// See [`crate::Client::save`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// client.save(&["127.0.0.1:5000/app:1"], hoist::ArchiveFormat::OciArchive, "/tmp/app.tar")?;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn save(
        &self,
        images: &[&str],
        format: ArchiveFormat,
        archive: impl AsRef<Path>,
    ) -> Result<()> {
        self.runtime
            .block_on(self.inner.save(images, format, archive))
    }

    /// See [`crate::Client::unpack`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// client.unpack("127.0.0.1:5000/app:1", "/tmp/rootfs")?;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn unpack(&self, image: &str, dir: impl AsRef<Path>) -> Result<UnpackReport> {
        self.runtime.block_on(self.inner.unpack(image, dir))
    }

    /// See [`crate::Client::unpack_with`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// client.unpack_with("127.0.0.1:5000/app:1", "/tmp/rootfs", hoist::UnpackOptions::default())?;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn unpack_with(
        &self,
        image: &str,
        dir: impl AsRef<Path>,
        options: UnpackOptions,
    ) -> Result<UnpackReport> {
        self.runtime
            .block_on(self.inner.unpack_with(image, dir, options))
    }

    /// See [`crate::Client::unpack_with_pull`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// client.unpack_with_pull(
    ///     "127.0.0.1:5000/app:1",
    ///     "/tmp/rootfs",
    ///     hoist::UnpackOptions::default(),
    ///     hoist::PullPolicy::Always,
    /// )?;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn unpack_with_pull(
        &self,
        image: &str,
        dir: impl AsRef<Path>,
        options: UnpackOptions,
        pull: PullPolicy,
    ) -> Result<UnpackReport> {
        self.runtime
            .block_on(self.inner.unpack_with_pull(image, dir, options, pull))
    }

    /// See [`crate::Client::rootfs`].
    ///
    /// ```no_run
    /// let client = hoist::blocking::Client::builder().build()?;
    /// let built = client.rootfs("127.0.0.1:5000/app:1", &hoist::RootfsOptions::new(hoist::Format::Erofs))?;
    /// # let _ = built;
    /// # Ok::<(), hoist::Error>(())
    /// ```
    pub fn rootfs(&self, image: &str, options: &RootfsOptions) -> Result<BuildResult> {
        self.runtime.block_on(self.inner.rootfs(image, options))
    }

    /// See [`crate::Client::gc`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::blocking::Client::builder().store(dir.path()).build().unwrap();
    /// assert_eq!(client.gc().unwrap().total().count, 0);
    /// ```
    pub fn gc(&self) -> Result<GcReport> {
        self.runtime.block_on(self.inner.gc())
    }

    /// See [`crate::Client::gc_with`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let client = hoist::blocking::Client::builder().store(dir.path()).build().unwrap();
    /// let mut opts = hoist::GcOptions::default();
    /// opts.dry_run = true;
    /// assert!(client.gc_with(opts).unwrap().dry_run);
    /// ```
    pub fn gc_with(&self, options: GcOptions) -> Result<GcReport> {
        self.runtime.block_on(self.inner.gc_with(options))
    }
}
