//! Dispatch over the transports: [`AnySource`] and [`AnyDestination`] hold one concrete
//! source or destination and forward each call by `match`, so the copy engine is compiled
//! once, with no `dyn` for the built-in transports and no per-pair monomorphisation. A
//! transport written outside hoist rides in the `Custom` variants, boxed
//! ([`DynImageSource`], [`DynImageDestination`]): one boxed future per call, for it only.

use hoist_store::Store;
use hoist_types::{Descriptor, Digest, Progress};

use super::dir::{DirDestination, DirSource};
use super::docker::{DockerDestination, DockerSource};
use super::docker_archive::{DockerArchiveDestination, DockerArchiveSource};
use super::dyn_traits::{DynImageDestination, DynImageSource};
use super::hoist::{HoistDestination, HoistSource};
use super::oci::{OciDestination, OciSource};
use super::oci_archive::{OciArchiveDestination, OciArchiveSource};
use super::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ImageRef, ImageSource,
    ManifestRef, ManifestTarget, RawManifest,
};
use crate::TransportError;
use crate::options::PullOptions;

/// What opening a source or destination needs besides its reference.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// The store, for `hoist:` (and as the default when no transport is given).
    pub store: Option<Store>,
    /// Registry settings and mirrors, for `docker://`.
    pub pull: PullOptions,
    /// Where the image comes from (recorded by a `hoist:` destination).
    pub source_label: Option<String>,
}

fn need_store(o: &OpenOptions, r: &ImageRef) -> Result<Store, TransportError> {
    o.store
        .clone()
        .ok_or_else(|| TransportError::NotSupportedBy {
            location: r.to_string(),
            reason: "no store given".to_owned(),
        })
}

/// One source of any transport.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnySource {
    /// `docker://`
    Docker(DockerSource),
    /// `oci:`
    Oci(OciSource),
    /// `dir:`
    Dir(DirSource),
    /// `hoist:`
    Hoist(HoistSource),
    /// `oci-archive:`
    OciArchive(OciArchiveSource),
    /// `docker-archive:`
    DockerArchive(DockerArchiveSource),
    /// A source written outside hoist ([`AnySource::custom`]).
    Custom(Box<dyn DynImageSource>),
}

/// One destination of any transport.
// One value per copy, matched on every call: boxing the larger variants buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyDestination {
    /// `docker://`
    Docker(DockerDestination),
    /// `oci:`
    Oci(OciDestination),
    /// `dir:`
    Dir(DirDestination),
    /// `hoist:`
    Hoist(HoistDestination),
    /// `oci-archive:`
    OciArchive(OciArchiveDestination),
    /// `docker-archive:`
    DockerArchive(DockerArchiveDestination),
    /// A destination written outside hoist ([`AnyDestination::custom`]).
    Custom(Box<dyn DynImageDestination>),
}

impl AnySource {
    /// A source written outside hoist, for the copy engine: any [`ImageSource`], boxed.
    ///
    /// ```
    /// # async fn f(dir: std::path::PathBuf) -> Result<(), hoist_transport::TransportError> {
    /// use hoist_transport::transports::any::AnySource;
    /// use hoist_transport::transports::oci::OciSource;
    /// // Any ImageSource will do; here a built-in one, wrapped as an outside one would be.
    /// let src = AnySource::custom(OciSource::open(dir, Some("app".into())).await?);
    /// # let _ = src;
    /// # Ok(()) }
    /// ```
    pub fn custom(source: impl ImageSource + 'static) -> AnySource {
        AnySource::Custom(Box::new(source))
    }

    /// Open `r` for reading.
    pub async fn open(r: &ImageRef, o: &OpenOptions) -> Result<AnySource, TransportError> {
        Ok(match r {
            ImageRef::Docker(reference) => {
                AnySource::Docker(DockerSource::new(reference.clone(), &o.pull))
            }
            ImageRef::Oci { dir, name } => {
                AnySource::Oci(OciSource::open(dir.clone(), name.clone()).await?)
            }
            ImageRef::Dir { dir } => AnySource::Dir(DirSource::open(dir.clone()).await?),
            ImageRef::Hoist { name } => {
                AnySource::Hoist(HoistSource::open(need_store(o, r)?, name.clone()).await?)
            }
            ImageRef::OciArchive { file, name } => {
                AnySource::OciArchive(OciArchiveSource::open(file.clone(), name.clone()).await?)
            }
            ImageRef::DockerArchive { file, selector } => AnySource::DockerArchive(
                DockerArchiveSource::open(file.clone(), selector.clone()).await?,
            ),
        })
    }
}

impl From<Box<dyn DynImageSource>> for AnySource {
    fn from(source: Box<dyn DynImageSource>) -> AnySource {
        AnySource::Custom(source)
    }
}

impl From<Box<dyn DynImageDestination>> for AnyDestination {
    fn from(destination: Box<dyn DynImageDestination>) -> AnyDestination {
        AnyDestination::Custom(destination)
    }
}

impl AnyDestination {
    /// A destination written outside hoist, for the copy engine: any
    /// [`ImageDestination`], boxed (see [`super::dyn_traits`] for an example).
    pub fn custom(destination: impl ImageDestination + 'static) -> AnyDestination {
        AnyDestination::Custom(Box::new(destination))
    }

    /// Open `r` for writing.
    pub async fn open(r: &ImageRef, o: &OpenOptions) -> Result<AnyDestination, TransportError> {
        Ok(match r {
            ImageRef::Docker(reference) => AnyDestination::Docker(DockerDestination::new(
                reference.clone(),
                o.pull.registry.clone(),
            )),
            ImageRef::Oci { dir, name } => {
                AnyDestination::Oci(OciDestination::open(dir.clone(), name.clone()).await?)
            }
            ImageRef::Dir { dir } => AnyDestination::Dir(DirDestination::open(dir.clone()).await?),
            ImageRef::Hoist { name } => AnyDestination::Hoist(HoistDestination::open(
                need_store(o, r)?,
                name,
                o.source_label.clone(),
            )?),
            ImageRef::OciArchive { file, name } => AnyDestination::OciArchive(
                OciArchiveDestination::open(file.clone(), name.clone()).await?,
            ),
            ImageRef::DockerArchive { file, selector } => AnyDestination::DockerArchive(
                DockerArchiveDestination::open(file.clone(), selector.clone()).await?,
            ),
        })
    }
}

/// `$e` with `$s` bound to the one value of an [`AnySource`] or [`AnyDestination`] (both
/// have the same variants).
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Self::Docker($s) => $e,
            Self::Oci($s) => $e,
            Self::Dir($s) => $e,
            Self::Hoist($s) => $e,
            Self::OciArchive($s) => $e,
            Self::DockerArchive($s) => $e,
            Self::Custom($s) => $e,
        }
    };
}

impl ImageSource for AnySource {
    fn describe(&self) -> String {
        each!(self, s => s.describe())
    }

    async fn get_manifest(&self, which: &ManifestRef) -> Result<RawManifest, TransportError> {
        each!(self, s => s.get_manifest(which).await)
    }

    async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, TransportError> {
        each!(self, s => s.get_blob(desc).await)
    }

    async fn get_signatures(
        &self,
        instance: Option<&Digest>,
    ) -> Result<Vec<Vec<u8>>, TransportError> {
        each!(self, s => s.get_signatures(instance).await)
    }

    async fn tags(&self) -> Result<Vec<String>, TransportError> {
        each!(self, s => s.tags().await)
    }

    async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, TransportError> {
        each!(self, s => s.referrers(subject).await)
    }

    fn blob_locations(&self) -> Vec<BlobLocation> {
        each!(self, s => s.blob_locations())
    }

    async fn index_of_top(&self) -> Result<Option<RawManifest>, TransportError> {
        each!(self, s => s.index_of_top().await)
    }

    fn read_before(&self, desc: &Descriptor) -> Option<(Vec<u8>, String)> {
        each!(self, s => s.read_before(desc))
    }

    fn blob_fetcher(&self) -> Option<&crate::fetch::BlobFetcher> {
        each!(self, s => s.blob_fetcher())
    }
}

impl ImageDestination for AnyDestination {
    fn describe(&self) -> String {
        each!(self, d => d.describe())
    }

    fn capabilities(&self) -> DestinationCaps {
        each!(self, d => d.capabilities())
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        each!(self, d => d.has_blob(desc, hints).await)
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        each!(self, d => d.put_blob(desc, stream, progress).await)
    }

    async fn put_blob_from(
        &self,
        desc: &Descriptor,
        kind: hoist_types::BlobKind,
        fetcher: &crate::fetch::BlobFetcher,
        progress: &dyn Progress,
    ) -> Result<bool, TransportError> {
        each!(self, d => d.put_blob_from(desc, kind, fetcher, progress).await)
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        each!(self, d => d.put_manifest(manifest, target).await)
    }

    async fn reuse(&self, desc: &Descriptor) -> Result<Option<Vec<u8>>, TransportError> {
        each!(self, d => d.reuse(desc).await)
    }

    async fn read_back(&self, desc: &Descriptor) -> Result<Option<BlobStream>, TransportError> {
        each!(self, d => d.read_back(desc).await)
    }

    fn chosen_from(&self, indexes: &[RawManifest]) {
        each!(self, d => d.chosen_from(indexes))
    }

    async fn put_signatures(
        &self,
        instance: &Digest,
        signatures: &[Vec<u8>],
    ) -> Result<(), TransportError> {
        each!(self, d => d.put_signatures(instance, signatures).await)
    }

    async fn commit(self) -> Result<Committed, TransportError> {
        each!(self, d => d.commit().await)
    }
}
