//! The contract every transport's source and destination keep (the
//! [`ImageSource`] / [`ImageDestination`] docs), as one in-process check an embedder can
//! run against a transport of its own, in the spirit of go-containerregistry's `validate`
//! package. Behind the `conformance` feature (off by default).
//!
//! A transport is checked by implementing [`Place`] (or, for anything an [`ImageRef`]
//! names, by one [`RefPlace`]) and calling [`check`] from a test. [`check`] writes two
//! small generated images through the destination and reads them back through the source,
//! and panics, with a message naming the place and the broken item, unless:
//!
//! 1. a name is not visible before it is written;
//! 2. `put_blob` verifies size and digest before the blob is visible: a corrupt stream, a
//!    short one and a long one each fail and `has_blob` stays false;
//! 3. `put_blob` of different blobs runs concurrently;
//! 4. `commit` comes last: after every blob and the top manifest are put, the name is still
//!    not visible; after `commit` it is, with the digest `commit` reported;
//! 5. the source returns the exact manifest bytes that were put (where the transport keeps
//!    them: `docker-archive:` synthesises its manifest) and their digest; a manifest asked
//!    for by a digest it does not have is an error;
//! 6. blob streams give exactly the bytes of their descriptor (size and digest);
//! 7. a destination dropped without commit leaves its name as it was (absent, or the image
//!    committed before), and nothing the place's own checker counts as garbage
//!    ([`Place::leftovers`]: the store's fsck, temp files in a directory).
//!
//! The image sent follows the destination's capabilities: Docker schema 2 where it takes
//! only that, uncompressed layers where it stores only those. The images are generated
//! here (deterministic tar layers, gzip, an OCI or Docker config), so the check needs
//! nothing but this crate.
//!
//! A transport written outside hoist is checked on the path the copy engine takes it by,
//! boxed: let its [`Place`] hand out [`AnySource::custom`] and [`AnyDestination::custom`].
//!
//! ```
//! use hoist_transport::transports::conformance::{RefPlace, check};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let template = format!("oci:{}/layout:{{}}", dir.path().display());
//! check(&RefPlace::files(template, dir.path())).await;
//! # }
//! ```

use std::future::Future;
use std::io::{Cursor, Read, Write as _};
use std::path::{Path, PathBuf};

use hoist_store::{FsckOptions, Store};
use hoist_types::{Compression, Descriptor, Digest, Manifest, NoProgress, Platform};

use crate::TransportError;
use crate::transports::any::{AnyDestination, AnySource, OpenOptions};
use crate::transports::{
    BlobStream, DestinationCaps, ImageDestination, ImageRef, ImageSource, ManifestFormat,
    ManifestRef, ManifestTarget, RawManifest, raw_manifest,
};

/// A place images can be written to and read back from, by name.
pub trait Place {
    /// The source type.
    type Src: ImageSource;
    /// The destination type.
    type Dst: ImageDestination;

    /// For messages.
    fn label(&self) -> String;

    /// A destination writing the image called `name` (a short `[a-z]+` word; the place
    /// maps it to a tag, a file, a directory...).
    fn destination(&self, name: &str) -> impl Future<Output = Result<Self::Dst, TransportError>>;

    /// A source reading the image called `name`; an error (now or at `get_manifest`) where
    /// there is none.
    fn source(&self, name: &str) -> impl Future<Output = Result<Self::Src, TransportError>>;

    /// What the place's own checker counts as garbage now (empty: none).
    fn leftovers(&self) -> Vec<String>;

    /// Whether the source hands back the manifest bytes the destination took.
    fn keeps_manifest_bytes(&self) -> bool {
        true
    }
}

/// Garbage a place can be checked for.
#[derive(Debug)]
pub enum Leftovers {
    /// Nothing the place itself can tell (a registry: upload sessions expire).
    Unchecked,
    /// Temp files and staging directories hoist writes (`.*.hoist-tmp`, `.hoist-*`) under
    /// this directory.
    TempFiles(PathBuf),
    /// Problems `Store::fsck` reports.
    Fsck(Store),
}

/// A place named by a `transport:reference` template, opened through `AnySource` /
/// `AnyDestination`: `{}` in `template` is replaced by the image's name.
#[derive(Debug)]
pub struct RefPlace {
    /// E.g. `oci:/tmp/x/layout:{}`.
    pub template: String,
    /// How it is opened (the store, registry settings).
    pub opts: OpenOptions,
    /// What counts as garbage.
    pub leftovers: Leftovers,
    /// See [`Place::keeps_manifest_bytes`].
    pub keeps_manifest_bytes: bool,
}

impl RefPlace {
    /// A place for `template` with default options, checked for temp files under `root`.
    pub fn files(template: String, root: &Path) -> RefPlace {
        RefPlace {
            template,
            opts: OpenOptions::default(),
            leftovers: Leftovers::TempFiles(root.to_owned()),
            keeps_manifest_bytes: true,
        }
    }

    fn image_ref(&self, name: &str) -> ImageRef {
        let s = self.template.replace("{}", name);
        ImageRef::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
}

impl Place for RefPlace {
    type Src = AnySource;
    type Dst = AnyDestination;

    fn label(&self) -> String {
        self.template.clone()
    }

    async fn destination(&self, name: &str) -> Result<AnyDestination, TransportError> {
        AnyDestination::open(&self.image_ref(name), &self.opts).await
    }

    async fn source(&self, name: &str) -> Result<AnySource, TransportError> {
        AnySource::open(&self.image_ref(name), &self.opts).await
    }

    fn leftovers(&self) -> Vec<String> {
        match &self.leftovers {
            Leftovers::Unchecked => Vec::new(),
            Leftovers::TempFiles(root) => {
                let mut found = Vec::new();
                temp_files(root, 0, &mut found);
                found
            }
            Leftovers::Fsck(store) => {
                let report = store
                    .fsck(&FsckOptions::default())
                    .unwrap_or_else(|e| panic!("fsck: {e}"));
                report.problems.iter().map(|p| format!("{p:?}")).collect()
            }
        }
    }

    fn keeps_manifest_bytes(&self) -> bool {
        self.keeps_manifest_bytes
    }
}

/// hoist's temp names below `dir` (at most 8 levels down).
fn temp_files(dir: &Path, depth: usize, found: &mut Vec<String>) {
    let Ok(it) = std::fs::read_dir(dir) else {
        return;
    };
    for e in it.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.ends_with(".hoist-tmp") || name.starts_with(".hoist-") {
            found.push(path.display().to_string());
        } else if depth < 8 && e.file_type().is_ok_and(|t| t.is_dir()) {
            temp_files(&path, depth + 1, found);
        }
    }
}

/// One generated image, as the destination is handed it.
struct Sample {
    manifest: RawManifest,
    /// Config first, then layers.
    blobs: Vec<(Descriptor, Vec<u8>)>,
}

impl Sample {
    /// An image that `caps` can hold as it is; `seed` makes its layer content (and so
    /// every digest) differ from another sample's.
    fn new(caps: &DestinationCaps, seed: u64) -> Sample {
        let docker = caps.format == Some(ManifestFormat::V2s2);
        let plain = caps.layer_compression == Some(Compression::None);
        let (manifest_type, config_type, layer_type) = match (docker, plain) {
            (false, false) => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
            (false, true) => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar",
            ),
            (true, false) => (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            (true, true) => (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar",
            ),
        };
        let tars = [
            tar_of(&[
                ("etc/", None),
                (
                    "etc/conformance",
                    Some(format!("seed {seed}\n").into_bytes()),
                ),
            ]),
            tar_of(&[("data.bin", Some(seeded_bytes(300 * 1024, seed)))]),
        ];
        let layers: Vec<Vec<u8>> = tars
            .iter()
            .map(|t| if plain { t.clone() } else { gzip(t) })
            .collect();
        let platform = Platform::host();
        let diff_ids: Vec<String> = tars
            .iter()
            .map(|t| Digest::sha256_of(t).to_string())
            .collect();
        let created = "2024-01-01T00:00:00Z";
        let config = serde_json::to_vec(&serde_json::json!({
            "created": created,
            "architecture": platform.architecture,
            "os": platform.os,
            "config": { "Labels": { "conformance": seed.to_string() } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": [
                { "created": created, "created_by": "hoist conformance layer 1" },
                { "created": created, "created_by": "hoist conformance layer 2" },
            ],
        }))
        .expect("a JSON config");
        let desc = |media_type: &str, bytes: &[u8]| {
            serde_json::json!({
                "mediaType": media_type,
                "digest": Digest::sha256_of(bytes).to_string(),
                "size": bytes.len(),
            })
        };
        let manifest_bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": desc(config_type, &config),
            "layers": layers.iter().map(|l| desc(layer_type, l)).collect::<Vec<_>>(),
        }))
        .expect("a JSON manifest");
        let manifest =
            raw_manifest(manifest_bytes, None, None).expect("the sample manifest parses");
        let Manifest::Image(m) = &manifest.manifest else {
            panic!("the sample is an image manifest");
        };
        let blobs = std::iter::once((m.config.clone(), config))
            .chain(m.layers.iter().cloned().zip(layers))
            .collect();
        Sample { manifest, blobs }
    }
}

/// A tar of `entries` (a path ending in `/` is a directory, else a file with the bytes
/// given), every header field fixed, so the same entries give the same bytes.
fn tar_of(entries: &[(&str, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_704_067_200);
        h.set_uid(0);
        h.set_gid(0);
        let data = content.as_deref().unwrap_or_default();
        if content.is_some() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
        } else {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
        }
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data)
            .expect("a tar entry in memory");
    }
    b.into_inner().expect("a tar in memory")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    z.write_all(bytes).expect("gzip in memory");
    z.finish().expect("gzip in memory")
}

/// `size` pseudo-random (incompressible) bytes from `seed` (xorshift64*).
fn seeded_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(size);
    out
}

fn stream(bytes: Vec<u8>, size: u64) -> BlobStream {
    BlobStream::from_reader(Box::new(Cursor::new(bytes)), size, "the conformance suite")
}

/// Whether `name` can be opened and its top manifest read.
async fn visible<P: Place>(place: &P, name: &str) -> Option<RawManifest> {
    let src = place.source(name).await.ok()?;
    src.get_manifest(&ManifestRef::Top).await.ok()
}

/// Put every blob of `sample` into `dst`, all at once; each must succeed.
async fn put_all<D: ImageDestination>(label: &str, dst: &D, sample: &Sample) {
    let puts = sample
        .blobs
        .iter()
        .map(|(d, b)| dst.put_blob(d, stream(b.clone(), d.size), &NoProgress));
    for (r, (d, _)) in futures_util::future::join_all(puts)
        .await
        .into_iter()
        .zip(&sample.blobs)
    {
        r.unwrap_or_else(|e| panic!("{label}: concurrent put_blob {}: {e}", d.digest));
    }
}

/// Run the whole contract against `place` (see the [module docs](self)).
///
/// # Panics
///
/// When `place` breaks an item of the contract, with a message naming the place
/// ([`Place::label`]) and the item. Call it from a test, on a multi-threaded Tokio
/// runtime (blob streams are read on blocking threads).
pub async fn check<P: Place>(place: &P) {
    let label = place.label();
    let label = label.as_str();

    // 1. Absent before anything is written.
    assert!(
        visible(place, "first").await.is_none(),
        "{label}: the name is visible before anything was written"
    );
    let dst = place
        .destination("first")
        .await
        .unwrap_or_else(|e| panic!("{label}: open the destination: {e}"));
    let caps = dst.capabilities();
    let sample = Sample::new(&caps, 1);

    // 2. Verified before visible: corrupt, short and long streams are refused.
    let (layer, bytes) = sample.blobs.last().expect("the sample has layers").clone();
    let mut corrupt = bytes.clone();
    corrupt[bytes.len() / 2] ^= 0x55;
    let mut long = bytes.clone();
    long.extend_from_slice(b"one byte too many");
    let bad: [(&str, Vec<u8>); 3] = [
        ("corrupt", corrupt),
        ("short", bytes[..bytes.len() - 1].to_vec()),
        ("long", long),
    ];
    for (what, b) in bad {
        let r = dst
            .put_blob(&layer, stream(b, layer.size), &NoProgress)
            .await;
        assert!(
            r.is_err(),
            "{label}: put_blob of a {what} stream for {} succeeded",
            layer.digest
        );
        let has = dst
            .has_blob(&layer, &[])
            .await
            .unwrap_or_else(|e| panic!("{label}: has_blob: {e}"));
        assert!(
            !has,
            "{label}: after a refused {what} stream, has_blob({}) says it is there",
            layer.digest
        );
    }

    // 3. Different blobs concurrently (read back after commit, in 6: the store, for one,
    // publishes its verified blobs only at commit, so `has_blob` may not see them yet).
    put_all(label, &dst, &sample).await;

    // 4. Commit last.
    dst.put_manifest(&sample.manifest, &ManifestTarget::Top)
        .await
        .unwrap_or_else(|e| panic!("{label}: put_manifest: {e}"));
    assert!(
        visible(place, "first").await.is_none(),
        "{label}: the name is visible before commit"
    );
    let committed = dst
        .commit()
        .await
        .unwrap_or_else(|e| panic!("{label}: commit: {e}"));
    let got = visible(place, "first")
        .await
        .unwrap_or_else(|| panic!("{label}: the name is not visible after commit"));

    // 5. Exact manifest bytes and their digest.
    assert_eq!(
        got.digest,
        Digest::sha256_of(&got.bytes),
        "{label}: the source's manifest digest is not that of its bytes"
    );
    if place.keeps_manifest_bytes() {
        assert!(
            got.bytes == sample.manifest.bytes,
            "{label}: the source's manifest bytes differ from those put"
        );
        assert_eq!(
            got.digest, sample.manifest.digest,
            "{label}: manifest digest"
        );
        assert_eq!(
            committed.digest, sample.manifest.digest,
            "{label}: committed digest"
        );
    }
    let src = place
        .source("first")
        .await
        .unwrap_or_else(|e| panic!("{label}: open the source: {e}"));
    let by_digest = src
        .get_manifest(&ManifestRef::Digest(got.digest.clone()))
        .await
        .unwrap_or_else(|e| panic!("{label}: get_manifest by its digest: {e}"));
    assert!(
        by_digest.bytes == got.bytes,
        "{label}: the manifest by digest differs from the top one"
    );
    let absent = Digest::sha256_of(b"no such manifest");
    assert!(
        src.get_manifest(&ManifestRef::Digest(absent.clone()))
            .await
            .is_err(),
        "{label}: get_manifest({absent}) of a manifest it does not have succeeded"
    );

    // 6. Exact blob bytes.
    let Manifest::Image(m) = &got.manifest else {
        panic!("{label}: the source's top manifest is not an image");
    };
    for d in std::iter::once(&m.config).chain(&m.layers) {
        let read = read_blob(&src, d)
            .await
            .unwrap_or_else(|e| panic!("{label}: get_blob {}: {e}", d.digest));
        assert_eq!(
            read.len() as u64,
            d.size,
            "{label}: size of blob {}",
            d.digest
        );
        assert_eq!(
            Digest::sha256_of(&read),
            d.digest,
            "{label}: digest of the bytes of blob {}",
            d.digest
        );
        if let Some((_, put)) = sample.blobs.iter().find(|(p, _)| p.digest == d.digest) {
            assert!(
                read == *put,
                "{label}: blob {} differs from what was put",
                d.digest
            );
        }
    }
    drop(src);

    // 7. Dropped without commit: a new name stays absent, an existing one unchanged.
    let other = Sample::new(&caps, 2);
    for name in ["second", "first"] {
        let dst = place
            .destination(name)
            .await
            .unwrap_or_else(|e| panic!("{label}: open the destination: {e}"));
        put_all(label, &dst, &other).await;
        dst.put_manifest(&other.manifest, &ManifestTarget::Top)
            .await
            .unwrap_or_else(|e| panic!("{label}: put_manifest: {e}"));
        drop(dst);
        let now = visible(place, name).await.map(|m| m.digest);
        let before = (name == "first").then(|| got.digest.clone());
        assert_eq!(
            now, before,
            "{label}: a destination dropped without commit changed {name:?}"
        );
    }
    let garbage = place.leftovers();
    assert!(
        garbage.is_empty(),
        "{label}: left behind after refused puts and dropped destinations: {garbage:#?}"
    );
}

/// A blob's bytes, read on a blocking thread as a destination would.
async fn read_blob<S: ImageSource>(src: &S, d: &Descriptor) -> Result<Vec<u8>, TransportError> {
    let stream = src.get_blob(d).await?;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        stream
            .into_read()
            .read_to_end(&mut out)
            .map(|_| out)
            .map_err(|e| TransportError::Stream {
                what: "reading a blob stream".to_owned(),
                source: e,
            })
    })
    .await
    .expect("the reading thread")
}
