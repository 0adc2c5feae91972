//! Transports written outside hoist: object-safe, boxed forms of [`ImageSource`] and
//! [`ImageDestination`].
//!
//! The two traits return `impl Future`, so they cannot be made into trait objects. An
//! embedder implements the ordinary trait on its own type and boxes it: every
//! `ImageSource` is a [`DynImageSource`] and every `ImageDestination + 'static` a
//! [`DynImageDestination`] (blanket implementations), and
//! [`AnySource::Custom`](super::any::AnySource::Custom) /
//! [`AnyDestination::Custom`](super::any::AnyDestination::Custom) carry the box into the
//! copy engine ([`crate::copy::copy`]). The built-in transports stay on static dispatch;
//! only a custom transport pays for one boxed future per call.
//!
//! The capability hooks keep their defaults for a custom transport: a source without a
//! resumable reader ([`ImageSource::blob_fetcher`] `None`) is read with
//! [`get_blob`](ImageSource::get_blob); a destination that keeps no partial writes is
//! handed a stream from a registry's reader ([`ImageDestination::put_blob_from`]'s
//! default); `reuse`, `read_back`, `chosen_from`, `referrers` and `blob_locations` do
//! nothing unless the custom type overrides them.
//!
//! The methods of the two boxed traits end in `_dyn`, so that a type which implements
//! both the ordinary and the boxed trait (every transport) has no ambiguous method when
//! both traits are in scope. Callers use the ordinary traits, which
//! `Box<dyn DynImageSource>` and `Box<dyn DynImageDestination>` implement.
//!
//! ```
//! use hoist_transport::transports::any::AnyDestination;
//! use hoist_transport::transports::{
//!     BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ManifestTarget,
//!     RawManifest,
//! };
//! use hoist_transport::TransportError;
//! use hoist_types::{Descriptor, Progress};
//!
//! /// Takes nothing: every blob is "present", every manifest dropped.
//! struct Sink;
//!
//! impl ImageDestination for Sink {
//!     fn describe(&self) -> String {
//!         "sink:".to_owned()
//!     }
//!     fn capabilities(&self) -> DestinationCaps {
//!         DestinationCaps::default()
//!     }
//!     async fn has_blob(&self, _: &Descriptor, _: &[BlobLocation]) -> Result<bool, TransportError> {
//!         Ok(true)
//!     }
//!     async fn put_blob(&self, _: &Descriptor, _: BlobStream, _: &dyn Progress) -> Result<(), TransportError> {
//!         Ok(())
//!     }
//!     async fn put_manifest(&self, _: &RawManifest, _: &ManifestTarget) -> Result<(), TransportError> {
//!         Ok(())
//!     }
//!     async fn commit(self) -> Result<Committed, TransportError> {
//!         Err(TransportError::NotSupportedBy { location: self.describe(), reason: "a sink".into() })
//!     }
//! }
//!
//! let dst = AnyDestination::custom(Sink);
//! assert_eq!(dst.describe(), "sink:");
//! ```

use std::fmt;

use futures_util::future::BoxFuture;
use hoist_types::{BlobKind, Descriptor, Digest, Progress};

use super::stream::BlobStream;
use super::traits::{
    BlobLocation, Committed, DestinationCaps, ImageDestination, ImageSource, ManifestRef,
    ManifestTarget, RawManifest,
};
use crate::TransportError;
use crate::fetch::BlobFetcher;

/// The object-safe form of [`ImageSource`]: implemented for every `ImageSource`, so box
/// one as `Box<dyn DynImageSource>` (or use
/// [`AnySource::custom`](super::any::AnySource::custom)). Each method is the
/// `ImageSource` method of the same name without `_dyn`.
pub trait DynImageSource: Send + Sync {
    /// [`ImageSource::describe`].
    fn describe_dyn(&self) -> String;
    /// [`ImageSource::get_manifest`].
    fn get_manifest_dyn<'a>(
        &'a self,
        which: &'a ManifestRef,
    ) -> BoxFuture<'a, Result<RawManifest, TransportError>>;
    /// [`ImageSource::get_blob`].
    fn get_blob_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
    ) -> BoxFuture<'a, Result<BlobStream, TransportError>>;
    /// [`ImageSource::get_signatures`].
    fn get_signatures_dyn<'a>(
        &'a self,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, TransportError>>;
    /// [`ImageSource::tags`].
    fn tags_dyn(&self) -> BoxFuture<'_, Result<Vec<String>, TransportError>>;
    /// [`ImageSource::referrers`].
    fn referrers_dyn<'a>(
        &'a self,
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<Vec<Descriptor>, TransportError>>;
    /// [`ImageSource::blob_locations`].
    fn blob_locations_dyn(&self) -> Vec<BlobLocation>;
    /// [`ImageSource::index_of_top`].
    fn index_of_top_dyn(&self) -> BoxFuture<'_, Result<Option<RawManifest>, TransportError>>;
    /// [`ImageSource::read_before`].
    fn read_before_dyn(&self, desc: &Descriptor) -> Option<(Vec<u8>, String)>;
    /// [`ImageSource::blob_fetcher`].
    fn blob_fetcher_dyn(&self) -> Option<&BlobFetcher>;
}

impl<T: ImageSource> DynImageSource for T {
    fn describe_dyn(&self) -> String {
        self.describe()
    }
    fn get_manifest_dyn<'a>(
        &'a self,
        which: &'a ManifestRef,
    ) -> BoxFuture<'a, Result<RawManifest, TransportError>> {
        Box::pin(self.get_manifest(which))
    }
    fn get_blob_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
    ) -> BoxFuture<'a, Result<BlobStream, TransportError>> {
        Box::pin(self.get_blob(desc))
    }
    fn get_signatures_dyn<'a>(
        &'a self,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, TransportError>> {
        Box::pin(self.get_signatures(instance))
    }
    fn tags_dyn(&self) -> BoxFuture<'_, Result<Vec<String>, TransportError>> {
        Box::pin(self.tags())
    }
    fn referrers_dyn<'a>(
        &'a self,
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<Vec<Descriptor>, TransportError>> {
        Box::pin(self.referrers(subject))
    }
    fn blob_locations_dyn(&self) -> Vec<BlobLocation> {
        self.blob_locations()
    }
    fn index_of_top_dyn(&self) -> BoxFuture<'_, Result<Option<RawManifest>, TransportError>> {
        Box::pin(self.index_of_top())
    }
    fn read_before_dyn(&self, desc: &Descriptor) -> Option<(Vec<u8>, String)> {
        self.read_before(desc)
    }
    fn blob_fetcher_dyn(&self) -> Option<&BlobFetcher> {
        self.blob_fetcher()
    }
}

impl fmt::Debug for dyn DynImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DynImageSource")
            .field(&self.describe_dyn())
            .finish()
    }
}

impl ImageSource for Box<dyn DynImageSource> {
    fn describe(&self) -> String {
        (**self).describe_dyn()
    }
    async fn get_manifest(&self, which: &ManifestRef) -> Result<RawManifest, TransportError> {
        (**self).get_manifest_dyn(which).await
    }
    async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, TransportError> {
        (**self).get_blob_dyn(desc).await
    }
    async fn get_signatures(
        &self,
        instance: Option<&Digest>,
    ) -> Result<Vec<Vec<u8>>, TransportError> {
        (**self).get_signatures_dyn(instance).await
    }
    async fn tags(&self) -> Result<Vec<String>, TransportError> {
        (**self).tags_dyn().await
    }
    async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, TransportError> {
        (**self).referrers_dyn(subject).await
    }
    fn blob_locations(&self) -> Vec<BlobLocation> {
        (**self).blob_locations_dyn()
    }
    async fn index_of_top(&self) -> Result<Option<RawManifest>, TransportError> {
        (**self).index_of_top_dyn().await
    }
    fn read_before(&self, desc: &Descriptor) -> Option<(Vec<u8>, String)> {
        (**self).read_before_dyn(desc)
    }
    fn blob_fetcher(&self) -> Option<&BlobFetcher> {
        (**self).blob_fetcher_dyn()
    }
}

/// The object-safe form of [`ImageDestination`]: implemented for every
/// `ImageDestination + 'static`, so box one as `Box<dyn DynImageDestination>` (or use
/// [`AnyDestination::custom`](super::any::AnyDestination::custom)). Each method is the
/// `ImageDestination` method of the same name without `_dyn`; `commit_dyn` takes the box.
pub trait DynImageDestination: Send + Sync {
    /// [`ImageDestination::describe`].
    fn describe_dyn(&self) -> String;
    /// [`ImageDestination::capabilities`].
    fn capabilities_dyn(&self) -> DestinationCaps;
    /// [`ImageDestination::has_blob`].
    fn has_blob_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
        hints: &'a [BlobLocation],
    ) -> BoxFuture<'a, Result<bool, TransportError>>;
    /// [`ImageDestination::put_blob`].
    fn put_blob_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
        stream: BlobStream,
        progress: &'a dyn Progress,
    ) -> BoxFuture<'a, Result<(), TransportError>>;
    /// [`ImageDestination::put_blob_from`].
    fn put_blob_from_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
        kind: BlobKind,
        fetcher: &'a BlobFetcher,
        progress: &'a dyn Progress,
    ) -> BoxFuture<'a, Result<bool, TransportError>>;
    /// [`ImageDestination::reuse`].
    fn reuse_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, TransportError>>;
    /// [`ImageDestination::read_back`].
    fn read_back_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
    ) -> BoxFuture<'a, Result<Option<BlobStream>, TransportError>>;
    /// [`ImageDestination::chosen_from`].
    fn chosen_from_dyn(&self, indexes: &[RawManifest]);
    /// [`ImageDestination::put_manifest`].
    fn put_manifest_dyn<'a>(
        &'a self,
        manifest: &'a RawManifest,
        target: &'a ManifestTarget,
    ) -> BoxFuture<'a, Result<(), TransportError>>;
    /// [`ImageDestination::put_signatures`].
    fn put_signatures_dyn<'a>(
        &'a self,
        instance: &'a Digest,
        signatures: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<(), TransportError>>;
    /// [`ImageDestination::commit`], of the boxed destination.
    fn commit_dyn(self: Box<Self>) -> BoxFuture<'static, Result<Committed, TransportError>>;
}

impl<T: ImageDestination + 'static> DynImageDestination for T {
    fn describe_dyn(&self) -> String {
        self.describe()
    }
    fn capabilities_dyn(&self) -> DestinationCaps {
        self.capabilities()
    }
    fn has_blob_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
        hints: &'a [BlobLocation],
    ) -> BoxFuture<'a, Result<bool, TransportError>> {
        Box::pin(self.has_blob(desc, hints))
    }
    fn put_blob_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
        stream: BlobStream,
        progress: &'a dyn Progress,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(self.put_blob(desc, stream, progress))
    }
    fn put_blob_from_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
        kind: BlobKind,
        fetcher: &'a BlobFetcher,
        progress: &'a dyn Progress,
    ) -> BoxFuture<'a, Result<bool, TransportError>> {
        Box::pin(self.put_blob_from(desc, kind, fetcher, progress))
    }
    fn reuse_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, TransportError>> {
        Box::pin(self.reuse(desc))
    }
    fn read_back_dyn<'a>(
        &'a self,
        desc: &'a Descriptor,
    ) -> BoxFuture<'a, Result<Option<BlobStream>, TransportError>> {
        Box::pin(self.read_back(desc))
    }
    fn chosen_from_dyn(&self, indexes: &[RawManifest]) {
        self.chosen_from(indexes)
    }
    fn put_manifest_dyn<'a>(
        &'a self,
        manifest: &'a RawManifest,
        target: &'a ManifestTarget,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(self.put_manifest(manifest, target))
    }
    fn put_signatures_dyn<'a>(
        &'a self,
        instance: &'a Digest,
        signatures: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(self.put_signatures(instance, signatures))
    }
    fn commit_dyn(self: Box<Self>) -> BoxFuture<'static, Result<Committed, TransportError>> {
        Box::pin((*self).commit())
    }
}

impl fmt::Debug for dyn DynImageDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DynImageDestination")
            .field(&self.describe_dyn())
            .finish()
    }
}

impl ImageDestination for Box<dyn DynImageDestination> {
    fn describe(&self) -> String {
        (**self).describe_dyn()
    }
    fn capabilities(&self) -> DestinationCaps {
        (**self).capabilities_dyn()
    }
    async fn has_blob(
        &self,
        desc: &Descriptor,
        hints: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        (**self).has_blob_dyn(desc, hints).await
    }
    async fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<(), TransportError> {
        (**self).put_blob_dyn(desc, stream, progress).await
    }
    async fn put_blob_from(
        &self,
        desc: &Descriptor,
        kind: BlobKind,
        fetcher: &BlobFetcher,
        progress: &dyn Progress,
    ) -> Result<bool, TransportError> {
        (**self)
            .put_blob_from_dyn(desc, kind, fetcher, progress)
            .await
    }
    async fn reuse(&self, desc: &Descriptor) -> Result<Option<Vec<u8>>, TransportError> {
        (**self).reuse_dyn(desc).await
    }
    async fn read_back(&self, desc: &Descriptor) -> Result<Option<BlobStream>, TransportError> {
        (**self).read_back_dyn(desc).await
    }
    fn chosen_from(&self, indexes: &[RawManifest]) {
        (**self).chosen_from_dyn(indexes)
    }
    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        (**self).put_manifest_dyn(manifest, target).await
    }
    async fn put_signatures(
        &self,
        instance: &Digest,
        signatures: &[Vec<u8>],
    ) -> Result<(), TransportError> {
        (**self).put_signatures_dyn(instance, signatures).await
    }
    async fn commit(self) -> Result<Committed, TransportError> {
        <dyn DynImageDestination as DynImageDestination>::commit_dyn(self).await
    }
}
