//! The `docker_archive` target: arbitrary bytes as a `docker save` archive, read with
//! `hoist-transport`'s reader (index, `manifest.json`, configs, tags, layers).

use std::io::{self, Write};

use hoist_archive::docker::{Choice, DockerArchive};
use hoist_archive::{ArchiveIndex, clean_member};
use hoist_types::{Digest, ImageConfig, Manifest, MediaType, NoProgress};

use crate::scratch::scratch;

/// Images of one archive looked at, at most.
const MAX_IMAGES: usize = 4;

/// Writes `data` to a file and reads it as a docker-archive; checks what the reader
/// accepts: each image's config hashes to its ID and lists one diff ID per layer, layer
/// entries are clean names that resolve (through links between members) to regular files
/// inside the archive (the decompressed one, for a compressed archive), tags are
/// `NAME:TAG` that select their image, every layer that reads back matches its diff ID and size, and the
/// synthesised manifest parses as a Docker schema 2 manifest of those layers.
pub fn check(data: &[u8]) {
    let sc = scratch();
    let mut file = tempfile::Builder::new()
        .prefix("hoist-fuzz-archive-")
        .tempfile_in(&sc.dir)
        .expect("temp file");
    file.write_all(data).expect("write the archive");
    let path = file.path().to_owned();
    let Ok(index) = ArchiveIndex::open(&path) else {
        return;
    };
    let Ok(archive) = DockerArchive::from_index(index) else {
        return;
    };
    let items = archive.items();
    assert!(!items.is_empty(), "an archive without images was accepted");
    assert_eq!(
        archive.select(None).is_ok(),
        items.len() == 1,
        "default selection"
    );
    for (i, item) in items.iter().enumerate().take(MAX_IMAGES) {
        assert_eq!(archive.select(Some(Choice::Position(i))).ok(), Some(i));
        let Ok(img) = archive.image(i) else {
            continue;
        };
        assert_eq!(img.position, i);
        assert_eq!(
            img.config_digest,
            Digest::sha256_of(&img.config_bytes),
            "image ID"
        );
        assert_eq!(
            ImageConfig::parse(&img.config_bytes).ok().as_ref(),
            Some(&img.config),
            "the config is the parsed config bytes"
        );
        assert_eq!(
            img.layers.len(),
            item.layers.len(),
            "one layer per Layers entry"
        );
        assert_eq!(
            img.layers.len(),
            img.config.rootfs.diff_ids.len(),
            "layers vs diff IDs"
        );
        for t in &img.tags {
            assert!(
                t.tag().is_some() && t.digest().is_none(),
                "tag {t} is NAME:TAG"
            );
            let found = archive
                .select(Some(Choice::Tag(t)))
                .unwrap_or_else(|e| panic!("tag {t} of image {i} selects nothing: {e}"));
            assert!(found <= i, "tag {t} selects a later image");
        }
        let mut sizes = Vec::new();
        for (layer, diff_id) in img.layers.iter().zip(&img.config.rootfs.diff_ids) {
            assert_eq!(&layer.diff_id, diff_id);
            assert_eq!(
                clean_member(&layer.entry).as_deref(),
                Some(layer.entry.as_str())
            );
            let (offset, size) = archive
                .index()
                .file(&layer.entry, "a layer")
                .expect("a checked layer is a regular file");
            // A compressed archive is indexed decompressed: its offsets are not the input's.
            if hoist_unpack::detect(&data[..data.len().min(512)]) == Ok(hoist_unpack::Codec::None) {
                assert!(
                    offset + size <= data.len() as u64,
                    "entry beyond the archive"
                );
            }
            assert_eq!(size, layer.entry_size);
            let mut counted = Counter(0);
            match archive.copy_layer(layer, &mut counted, &NoProgress) {
                Ok(n) => {
                    assert_eq!(n, counted.0, "bytes copied vs size reported");
                    assert_eq!(
                        archive.layer_size(layer).ok(),
                        Some(n),
                        "layer_size of a layer that copies"
                    );
                    sizes.push(n);
                }
                Err(_) => break,
            }
        }
        if sizes.len() == img.layers.len() {
            manifest(&img.manifest(&sizes), &img, &sizes);
        }
    }
}

fn manifest(bytes: &[u8], img: &hoist_archive::docker::ArchiveImage, sizes: &[u64]) {
    match Manifest::parse(bytes, Some(&MediaType::DockerManifest)) {
        Ok((Manifest::Image(m), MediaType::DockerManifest)) => {
            assert_eq!(m.config.digest, img.config_digest);
            assert_eq!(m.config.size, img.config_bytes.len() as u64);
            let got: Vec<(&Digest, u64)> = m.layers.iter().map(|l| (&l.digest, l.size)).collect();
            let want: Vec<(&Digest, u64)> = img
                .config
                .rootfs
                .diff_ids
                .iter()
                .zip(sizes.iter().copied())
                .collect();
            assert_eq!(got, want, "synthesised manifest layers");
        }
        other => panic!("the synthesised manifest reads back as {other:?}"),
    }
}

/// Counts the bytes written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
