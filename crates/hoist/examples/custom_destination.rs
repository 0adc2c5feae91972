//! A destination written outside hoist, plugged into the copy engine: each blob becomes a
//! file named by its digest, the image's manifest `manifest.json`, all in one directory.
//!
//! ```sh
//! cargo run -p hoist --example custom_destination -- 127.0.0.1:5000/library/alpine:3 /tmp/drop
//! ```

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use hoist::transport::TransportError;
use hoist::transport::transports::{
    BlobLocation, BlobStream, Committed, DestinationCaps, ImageDestination, ManifestTarget,
    RawManifest, Staged,
};
use hoist::types::{Descriptor, Progress};

/// Writes `DIR/sha256-HEX` per blob, then `DIR/manifest.json` at commit.
#[derive(Debug)]
pub struct FileDrop {
    dir: PathBuf,
    staged: Staged,
}

fn io(e: std::io::Error) -> TransportError {
    TransportError::Io {
        op: "write into the drop directory",
        path: None,
        source: e,
    }
}

impl FileDrop {
    fn path(&self, desc: &Descriptor) -> PathBuf {
        self.dir.join(desc.digest.to_string().replace(':', "-"))
    }
}

impl ImageDestination for FileDrop {
    fn describe(&self) -> String {
        format!("file-drop:{}", self.dir.display())
    }

    fn capabilities(&self) -> DestinationCaps {
        // One image: the copy engine picks the client's platform from an index.
        DestinationCaps {
            index: false,
            ..DestinationCaps::default()
        }
    }

    async fn has_blob(
        &self,
        desc: &Descriptor,
        _: &[BlobLocation],
    ) -> Result<bool, TransportError> {
        Ok(self.path(desc).exists())
    }

    async fn put_blob(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        _: &dyn Progress,
    ) -> Result<(), TransportError> {
        // Streamed into a temp file while hashed; renamed only once size and digest match.
        let (dir, dest, desc) = (self.dir.clone(), self.path(desc), desc.clone());
        let write = move || -> Result<(), TransportError> {
            let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io)?;
            let (mut read, mut hasher) = (stream.into_read(), desc.digest.algorithm().hasher());
            let (mut buf, mut size) = (vec![0; 64 * 1024], 0u64);
            loop {
                let n = read.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                tmp.write_all(&buf[..n]).map_err(io)?;
                size += n as u64;
            }
            if size != desc.size || hasher.finish() != desc.digest {
                return Err(TransportError::SizeMismatch {
                    what: format!("blob {} (or its digest)", desc.digest),
                    expected: desc.size,
                    actual: size,
                });
            }
            tmp.persist(dest).map_err(|e| io(e.error))?;
            Ok(())
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| TransportError::Task {
                what: e.to_string(),
            })?
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        target: &ManifestTarget,
    ) -> Result<(), TransportError> {
        self.staged.record(manifest, target);
        Ok(())
    }

    async fn commit(self) -> Result<Committed, TransportError> {
        let location = self.describe();
        let top = self.staged.take().take_top(&location)?;
        std::fs::write(self.dir.join("manifest.json"), &top.bytes).map_err(io)?;
        Ok(Committed {
            digest: top.digest,
            location,
        })
    }
}

/// Copies `reference` from its registry into a [`FileDrop`] at `out` (created).
pub async fn run(reference: &str, store: &Path, out: &Path) -> hoist::Result<hoist::CopyReport> {
    std::fs::create_dir_all(out).map_err(|source| hoist::Error::Io {
        op: "create",
        path: Some(out.into()),
        source,
    })?;
    let client = hoist::Client::builder().store(store).build()?;
    let drop = FileDrop {
        dir: out.to_owned(),
        staged: Staged::new(),
    };
    client.copy_to(&format!("docker://{reference}"), drop).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [reference, out] = args.as_slice() else {
        return Err("usage: custom_destination REFERENCE DIR".into());
    };
    let store = std::env::var("HOIST_STORE").unwrap_or_else(|_| "hoist-store".into());
    let report = run(reference, Path::new(&store), Path::new(out)).await?;
    println!(
        "{:?}: {} blobs written to {}",
        report.digest, report.blobs_copied, report.location
    );
    Ok(())
}
