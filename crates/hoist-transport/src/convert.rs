//! Format conversion and layer recompression for `hoist copy`.
//!
//! - **Manifests** (`--format oci|v2s2`): pure functions that rewrite an image manifest or
//!   index into the other family's media types. Documents are serialised with the field
//!   order and compact form containers/image (Go) writes, so a conversion by hoist and by
//!   skopeo give the same bytes. Docker schema 2 keeps no annotations, subject or artifact
//!   type, and has no zstd layer type: such a conversion is refused. The config's bytes are
//!   never changed, only the media type its descriptor carries.
//! - **Layers** (`--dest-compress-format gzip|zstd`): a layer is decompressed, its diff ID
//!   checked against the config, and compressed again into a temp file, hashed as written
//!   (the new digest and size go into the rewritten manifest). gzip is compressed on all
//!   cores as independent 1 MiB deflate blocks joined into one gzip member (the way
//!   `pigz --independent` does; any gzip reader reads it); zstd uses its multithreaded
//!   encoder.

use std::io::{self, Read, Write};

use flate2::{Compress, FlushCompress, Status};
use hoist_types::{
    Compression, Descriptor, Digest, Hasher, ImageIndex, ImageManifest, MediaType, Platform,
};
use serde::Serialize;

use crate::TransportError;
use crate::transports::ManifestFormat;

/// Size of the independent blocks of a parallel gzip stream.
const GZIP_BLOCK: usize = 1024 * 1024;

/// The manifest media type of `format`.
pub fn manifest_type(format: ManifestFormat) -> MediaType {
    match format {
        ManifestFormat::Oci => MediaType::OciManifest,
        ManifestFormat::V2s2 => MediaType::DockerManifest,
    }
}

/// The index media type of `format`.
pub fn index_type(format: ManifestFormat) -> MediaType {
    match format {
        ManifestFormat::Oci => MediaType::OciIndex,
        ManifestFormat::V2s2 => MediaType::DockerManifestList,
    }
}

/// The config media type of `format` (an unknown config type is kept: an artifact).
pub fn config_type(format: ManifestFormat, current: &MediaType) -> MediaType {
    if !current.is_config() {
        return current.clone();
    }
    match format {
        ManifestFormat::Oci => MediaType::OciConfig,
        ManifestFormat::V2s2 => MediaType::DockerConfig,
    }
}

/// The layer media type of `format` for a layer of type `current` compressed with
/// `compression`. Foreign (non-distributable) layers stay foreign, with their
/// compression; unknown types are kept.
pub fn layer_type(
    format: ManifestFormat,
    current: &MediaType,
    compression: Compression,
) -> Result<MediaType, TransportError> {
    if current.layer_compression().is_none() {
        return Ok(current.clone());
    }
    let foreign = current.is_foreign_layer();
    Ok(match (format, compression, foreign) {
        (ManifestFormat::Oci, Compression::None, true) => MediaType::OciLayerNondistributable,
        (ManifestFormat::Oci, Compression::Gzip, true) => MediaType::OciLayerNondistributableGzip,
        (ManifestFormat::Oci, Compression::Zstd, true) => MediaType::OciLayerNondistributableZstd,
        (ManifestFormat::V2s2, Compression::None, true) => MediaType::DockerForeignLayer,
        (ManifestFormat::V2s2, Compression::Gzip, true) => MediaType::DockerForeignLayerGzip,
        (ManifestFormat::Oci, Compression::None, _) => MediaType::OciLayer,
        (ManifestFormat::Oci, Compression::Gzip, _) => MediaType::OciLayerGzip,
        (ManifestFormat::Oci, Compression::Zstd, _) => MediaType::OciLayerZstd,
        (ManifestFormat::V2s2, Compression::None, _) => MediaType::DockerLayer,
        (ManifestFormat::V2s2, Compression::Gzip, _) => MediaType::DockerLayerGzip,
        (ManifestFormat::V2s2, Compression::Zstd, _) => {
            return Err(TransportError::ZstdInDockerSchema2 { manifest: None });
        }
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DockerDescriptor<'a> {
    media_type: &'a MediaType,
    size: u64,
    digest: &'a Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    urls: Option<&'a Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<GoPlatform<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DockerManifest<'a> {
    schema_version: u32,
    media_type: &'a MediaType,
    config: DockerDescriptor<'a>,
    layers: Vec<DockerDescriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DockerList<'a> {
    schema_version: u32,
    media_type: &'a MediaType,
    manifests: Vec<DockerDescriptor<'a>>,
}

/// A platform in Go's field order.
#[derive(Serialize)]
struct GoPlatform<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none")]
    os_version: Option<&'a String>,
    #[serde(rename = "os.features", skip_serializing_if = "Option::is_none")]
    os_features: Option<&'a Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a String>,
}

impl<'a> GoPlatform<'a> {
    fn of(p: &'a Platform) -> GoPlatform<'a> {
        GoPlatform {
            architecture: &p.architecture,
            os: &p.os,
            os_version: p.os_version.as_ref(),
            os_features: p.os_features.as_ref(),
            variant: p.variant.as_ref(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciDescriptor<'a> {
    media_type: &'a MediaType,
    digest: &'a Digest,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    urls: Option<&'a Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<GoPlatform<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a String>,
}

impl<'a> OciDescriptor<'a> {
    fn of(d: &'a Descriptor) -> OciDescriptor<'a> {
        OciDescriptor {
            media_type: &d.media_type,
            digest: &d.digest,
            size: d.size,
            urls: d.urls.as_ref(),
            annotations: d.annotations.as_ref(),
            platform: d.platform.as_ref().map(GoPlatform::of),
            artifact_type: d.artifact_type.as_ref(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciIndexDoc<'a> {
    schema_version: u32,
    media_type: &'a MediaType,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a String>,
    manifests: Vec<OciDescriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<OciDescriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a std::collections::BTreeMap<String, String>>,
}

fn docker_desc(d: &Descriptor) -> DockerDescriptor<'_> {
    DockerDescriptor {
        media_type: &d.media_type,
        size: d.size,
        digest: &d.digest,
        urls: d.urls.as_ref(),
        platform: d.platform.as_ref().map(GoPlatform::of),
    }
}

/// The bytes of `m` with `config` and `layers` (already carrying their new media types,
/// digests and sizes), in `format`.
pub fn image_manifest_bytes(
    m: &ImageManifest,
    format: ManifestFormat,
    config: &Descriptor,
    layers: &[Descriptor],
) -> Vec<u8> {
    let mt = manifest_type(format);
    match format {
        ManifestFormat::V2s2 => serde_json::to_vec(&DockerManifest {
            schema_version: 2,
            media_type: &mt,
            config: docker_desc(config),
            layers: layers.iter().map(docker_desc).collect(),
        }),
        ManifestFormat::Oci => {
            let out = ImageManifest {
                schema_version: 2,
                media_type: Some(mt),
                artifact_type: m.artifact_type.clone(),
                config: config.clone(),
                layers: layers.to_vec(),
                subject: m.subject.clone(),
                annotations: m.annotations.clone(),
            };
            serde_json::to_vec(&out)
        }
    }
    .expect("manifests serialise")
}

/// The bytes of index `idx` with `entries` (new digests, sizes, media types), in `format`.
pub fn index_bytes(idx: &ImageIndex, format: ManifestFormat, entries: &[Descriptor]) -> Vec<u8> {
    let mt = index_type(format);
    match format {
        ManifestFormat::V2s2 => serde_json::to_vec(&DockerList {
            schema_version: 2,
            media_type: &mt,
            manifests: entries.iter().map(docker_desc).collect(),
        }),
        ManifestFormat::Oci => serde_json::to_vec(&OciIndexDoc {
            schema_version: 2,
            media_type: &mt,
            artifact_type: idx.artifact_type.as_ref(),
            manifests: entries.iter().map(OciDescriptor::of).collect(),
            subject: idx.subject.as_ref().map(OciDescriptor::of),
            annotations: idx.annotations.as_ref(),
        }),
    }
    .expect("indexes serialise")
}

/// Whether `m` can be written as Docker schema 2 without losing anything it declares.
pub fn check_v2s2(m: &ImageManifest, digest: &Digest) -> Result<(), TransportError> {
    let lossy = m.subject.is_some()
        || m.artifact_type.is_some()
        || m.annotations.as_ref().is_some_and(|a| !a.is_empty())
        || m.layers
            .iter()
            .any(|l| l.annotations.as_ref().is_some_and(|a| !a.is_empty()));
    if lossy {
        return Err(TransportError::ConversionRefused {
            digest: digest.clone(),
            reason: "annotations, subject or artifactType cannot be kept in Docker schema 2"
                .to_owned(),
        });
    }
    Ok(())
}

/// What recompressing one layer produced.
#[derive(Debug)]
pub struct Recompressed {
    /// The new blob, in an unnamed temp file positioned at 0.
    pub file: std::fs::File,
    /// Its digest (sha256).
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: Hasher,
    n: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decompress `input` (compressed with `from`), check its diff ID when known, and
/// compress it with `to` into a temp file in `tmp_dir`. Blocking; uses every core.
pub fn recompress(
    input: impl Read,
    from: Compression,
    to: Compression,
    diff_id: Option<&Digest>,
    tmp_dir: &std::path::Path,
    what: &str,
) -> Result<Recompressed, TransportError> {
    let io_err = |what: &str| {
        let what = what.to_owned();
        move |source| TransportError::Stream { what, source }
    };
    // The one layer decoder: hoist-unpack's, with its limits on the decompressed size and
    // the zstd window (the layer is untrusted input), hashing the diff ID as it reads.
    let algorithm = diff_id.map_or(hoist_types::Algorithm::Sha256, Digest::algorithm);
    let mut plain = hoist_unpack::LayerStream::with_compression(
        input,
        from,
        algorithm,
        &hoist_unpack::Limits::default(),
        &hoist_types::NoProgress,
    )
    .map_err(|e| TransportError::Stream {
        what: format!("decompressing {what}"),
        source: io::Error::other(e),
    })?;
    let file = tempfile::tempfile_in(tmp_dir).map_err(|source| TransportError::Io {
        op: "create a temp file in",
        path: Some(tmp_dir.to_path_buf()),
        source,
    })?;
    let mut out = Hashing {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        hasher: Hasher::new(hoist_types::Algorithm::Sha256),
        n: 0,
    };
    let ctx = format!("recompressing {what}");
    match to {
        Compression::None => return decompress_to(plain, diff_id, out.inner.into_parts().0, what),
        Compression::Gzip => parallel_gzip(&mut plain, &mut out).map_err(io_err(&ctx))?,
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(&mut out, 3).map_err(io_err(&ctx))?;
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            if threads > 1 {
                enc.multithread(threads).map_err(io_err(&ctx))?;
            }
            io::copy(&mut plain, &mut enc).map_err(io_err(&ctx))?;
            enc.finish().map_err(io_err(&ctx))?;
        }
    }
    let (actual, _) = plain.finish(false).map_err(|e| TransportError::Stream {
        what: format!("decompressing {what}"),
        source: io::Error::other(e),
    })?;
    check_diff_id(diff_id, actual, what)?;
    let Hashing { inner, hasher, n } = out;
    let mut file = inner
        .into_inner()
        .map_err(|e| io_err(&ctx)(e.into_error()))?;
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0)).map_err(io_err(&ctx))?;
    Ok(Recompressed {
        file,
        digest: hasher.finish(),
        size: n,
    })
}

fn check_diff_id(
    diff_id: Option<&Digest>,
    actual: Digest,
    what: &str,
) -> Result<(), TransportError> {
    if let Some(d) = diff_id
        && &actual != d
    {
        return Err(TransportError::DigestMismatch {
            what: format!("diff ID of {what}"),
            expected: d.clone(),
            actual,
        });
    }
    Ok(())
}

/// Chunks in flight between the decompressing thread and the writing one.
const DECOMPRESSED_CHUNK: usize = 1 << 20;

/// [`recompress`] to no compression: the output is the decompressed stream itself, so its
/// digest is the diff ID (when that is a SHA-256), hashed once. This thread reads and
/// inflates while a second one hashes and writes (inflate is the heavier half): one layer
/// keeps two cores busy.
fn decompress_to(
    plain: hoist_unpack::LayerStream<'_, impl Read>,
    diff_id: Option<&Digest>,
    mut file: std::fs::File,
    what: &str,
) -> Result<Recompressed, TransportError> {
    use std::sync::mpsc::sync_channel;
    // A diff ID of another algorithm is still hashed by the stream itself.
    let same = diff_id.is_none_or(|d| d.algorithm() == hoist_types::Algorithm::Sha256);
    let mut plain = if same { plain.without_hashing() } else { plain };
    let decompressing = |e: hoist_unpack::UnpackError| TransportError::Stream {
        what: format!("decompressing {what}"),
        source: io::Error::other(e),
    };
    let writing = |source| TransportError::Stream {
        what: format!("writing {what} decompressed"),
        source,
    };
    let (digest, size, stream_digest) = std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let (back, spare) = sync_channel::<Vec<u8>>(6);
        let file = &mut file;
        let writer = s.spawn(move || -> io::Result<(Digest, u64)> {
            let mut hasher = Hasher::new(hoist_types::Algorithm::Sha256);
            let mut n = 0u64;
            for chunk in rx {
                hasher.update(&chunk);
                file.write_all(&chunk)?;
                n += chunk.len() as u64;
                let _ = back.try_send(chunk);
            }
            Ok((hasher.finish(), n))
        });
        let read = (|| -> Result<Digest, TransportError> {
            loop {
                let mut chunk = spare.try_recv().unwrap_or_default();
                chunk.resize(DECOMPRESSED_CHUNK, 0);
                let mut filled = 0;
                while filled < chunk.len() {
                    match plain.read(&mut chunk[filled..]) {
                        Ok(0) => break,
                        Ok(k) => filled += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(source) => {
                            return Err(TransportError::Stream {
                                what: format!("decompressing {what}"),
                                source,
                            });
                        }
                    }
                }
                chunk.truncate(filled);
                let last = filled < DECOMPRESSED_CHUNK;
                // A writer gone has failed: its error is the one reported.
                if filled > 0 && tx.send(chunk).is_err() || last {
                    break;
                }
            }
            drop(tx);
            let (d, _) = plain.finish(false).map_err(decompressing)?;
            Ok(d)
        })();
        let written = writer.join().unwrap_or_else(|_| {
            Err(io::Error::other(
                "the thread writing the decompressed layer panicked",
            ))
        });
        // The writer's failure first: the reader stopped because of it.
        let (digest, size) = written.map_err(writing)?;
        Ok::<_, TransportError>((digest, size, read?))
    })?;
    check_diff_id(
        diff_id,
        if same { digest.clone() } else { stream_digest },
        what,
    )?;
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0)).map_err(writing)?;
    Ok(Recompressed { file, digest, size })
}

/// Compress one block as raw deflate; all but the last end on a byte boundary with a
/// sync flush, the last with the final block.
fn deflate_block(input: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(6), false);
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_in = c.total_in() as usize == input.len();
        match status {
            Status::StreamEnd => return Ok(out),
            _ if done_in && !last && out.capacity() > out.len() => return Ok(out),
            _ => {}
        }
    }
}

/// gzip `input` into `out` using every core: independent 1 MiB deflate blocks, joined
/// into one gzip member with the CRC and size of the whole input.
pub fn parallel_gzip(input: &mut dyn Read, out: &mut dyn Write) -> io::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batch = threads * 2;
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
    let mut crc = flate2::Crc::new();
    let mut pending: Option<Vec<u8>> = None;
    loop {
        // Read up to `batch` blocks; one block is held back to know which is last.
        let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(batch + 1);
        if let Some(p) = pending.take() {
            blocks.push(p);
        }
        let mut eof = false;
        while blocks.len() <= batch {
            let mut b = vec![0u8; GZIP_BLOCK];
            let mut n = 0;
            while n < GZIP_BLOCK {
                match input.read(&mut b[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            b.truncate(n);
            if n == 0 {
                eof = true;
                break;
            }
            crc.update(&b);
            blocks.push(b);
            if n < GZIP_BLOCK {
                eof = true;
                break;
            }
        }
        if !eof {
            pending = blocks.pop();
        }
        let count = blocks.len();
        let compressed: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = blocks
                .iter()
                .enumerate()
                .map(|(i, b)| s.spawn(move || deflate_block(b, eof && i + 1 == count)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("gzip worker panicked")))
                })
                .collect()
        });
        for c in compressed {
            out.write_all(&c?)?;
        }
        if eof {
            if count == 0 {
                // Empty input: one empty final block.
                out.write_all(&deflate_block(&[], true)?)?;
            }
            break;
        }
    }
    out.write_all(&crc.sum().to_le_bytes())?;
    out.write_all(&crc.amount().to_le_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz_roundtrip(data: &[u8]) {
        let mut out = Vec::new();
        parallel_gzip(&mut &data[..], &mut out).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data, "len {}", data.len());
    }

    #[test]
    fn parallel_gzip_is_one_valid_member() {
        let mut big = Vec::new();
        for i in 0..(5 * GZIP_BLOCK + 123) {
            big.push((i * 31 % 251) as u8);
        }
        for data in [
            &[][..],
            b"x",
            &big[..GZIP_BLOCK],
            &big[..GZIP_BLOCK + 1],
            &big[..],
        ] {
            gz_roundtrip(data);
        }
    }

    #[test]
    fn layer_types_table() {
        use Compression::*;
        use ManifestFormat::*;
        let cases = [
            (
                Oci,
                MediaType::DockerLayerGzip,
                Gzip,
                MediaType::OciLayerGzip,
            ),
            (
                Oci,
                MediaType::DockerLayerGzip,
                Zstd,
                MediaType::OciLayerZstd,
            ),
            (
                V2s2,
                MediaType::OciLayerGzip,
                Gzip,
                MediaType::DockerLayerGzip,
            ),
            (V2s2, MediaType::OciLayer, None, MediaType::DockerLayer),
            (
                V2s2,
                MediaType::OciLayerNondistributableGzip,
                Gzip,
                MediaType::DockerForeignLayerGzip,
            ),
            (
                Oci,
                MediaType::DockerForeignLayer,
                None,
                MediaType::OciLayerNondistributable,
            ),
            (
                Oci,
                MediaType::OciLayerNondistributableZstd,
                Zstd,
                MediaType::OciLayerNondistributableZstd,
            ),
            (
                V2s2,
                MediaType::OciLayerNondistributable,
                None,
                MediaType::DockerForeignLayer,
            ),
            (
                Oci,
                MediaType::Other("x/y".into()),
                Gzip,
                MediaType::Other("x/y".into()),
            ),
        ];
        for (f, cur, c, want) in cases {
            assert_eq!(layer_type(f, &cur, c).unwrap(), want, "{f} {cur} {c:?}");
        }
        assert!(layer_type(V2s2, &MediaType::OciLayerGzip, Zstd).is_err());
        assert_eq!(
            config_type(V2s2, &MediaType::OciConfig),
            MediaType::DockerConfig
        );
        assert_eq!(
            config_type(V2s2, &MediaType::Other("a/b".into())),
            MediaType::Other("a/b".into())
        );
    }

    #[test]
    fn v2s2_bytes_in_go_order() {
        let c = Descriptor::new(MediaType::DockerConfig, Digest::sha256_of(b"c"), 3);
        let l = Descriptor::new(MediaType::DockerLayerGzip, Digest::sha256_of(b"l"), 5);
        let m = ImageManifest {
            schema_version: 2,
            media_type: None,
            artifact_type: None,
            config: c.clone(),
            layers: vec![l.clone()],
            subject: None,
            annotations: None,
        };
        let s = String::from_utf8(image_manifest_bytes(
            &m,
            ManifestFormat::V2s2,
            &c,
            std::slice::from_ref(&l),
        ))
        .unwrap();
        let want = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":3,"digest":"{}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":5,"digest":"{}"}}]}}"#,
            c.digest, l.digest
        );
        assert_eq!(s, want);
    }

    #[test]
    fn decompressing_to_a_plain_layer_checks_the_diff_id_with_its_algorithm() {
        // Several chunks of the writer thread, and a tail shorter than one.
        let tar: Vec<u8> = (0..(DECOMPRESSED_CHUNK * 2 + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut gz = Vec::new();
        parallel_gzip(&mut &tar[..], &mut gz).unwrap();
        let good = Digest::sha256_of(&tar);
        let dir = tempfile::tempdir().unwrap();
        let mut out = recompress(
            &gz[..],
            Compression::Gzip,
            Compression::None,
            Some(&good),
            dir.path(),
            "t",
        )
        .unwrap();
        assert_eq!(
            (out.digest.clone(), out.size),
            (good.clone(), tar.len() as u64)
        );
        let mut back = Vec::new();
        out.file.read_to_end(&mut back).unwrap();
        assert!(
            back == tar,
            "the temp file holds the decompressed layer from 0"
        );
        // No diff ID known: the digest is still the decompressed bytes'.
        let out = recompress(
            &gz[..],
            Compression::Gzip,
            Compression::None,
            None,
            dir.path(),
            "t",
        );
        assert_eq!(out.unwrap().digest, good);
        // A diff ID of another algorithm is checked with that algorithm.
        let sha512 = Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap();
        let err = recompress(
            &gz[..],
            Compression::Gzip,
            Compression::None,
            Some(&sha512),
            dir.path(),
            "t",
        )
        .unwrap_err();
        assert!(
            matches!(err, TransportError::DigestMismatch { .. }),
            "{err:?}"
        );
        // A wrong diff ID, and a truncated stream, are refused.
        let bad = Digest::sha256_of(b"no");
        let err = recompress(
            &gz[..],
            Compression::Gzip,
            Compression::None,
            Some(&bad),
            dir.path(),
            "t",
        )
        .unwrap_err();
        assert!(
            matches!(err, TransportError::DigestMismatch { .. }),
            "{err:?}"
        );
        let cut = &gz[..gz.len() - 9];
        let err = recompress(
            cut,
            Compression::Gzip,
            Compression::None,
            Some(&good),
            dir.path(),
            "t",
        )
        .unwrap_err();
        assert!(matches!(err, TransportError::Stream { .. }), "{err:?}");
    }

    #[test]
    fn recompress_checks_diff_id() {
        let tar = vec![1u8; 10_000];
        let good = Digest::sha256_of(&tar);
        let dir = tempfile::tempdir().unwrap();
        let z = recompress(
            &tar[..],
            Compression::None,
            Compression::Zstd,
            Some(&good),
            dir.path(),
            "t",
        )
        .unwrap();
        let back = recompress(
            z.file,
            Compression::Zstd,
            Compression::Gzip,
            Some(&good),
            dir.path(),
            "t",
        )
        .unwrap();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(back.file)
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, tar);
        let bad = Digest::sha256_of(b"no");
        assert!(
            recompress(
                &tar[..],
                Compression::None,
                Compression::Gzip,
                Some(&bad),
                dir.path(),
                "t"
            )
            .is_err()
        );
    }
}
