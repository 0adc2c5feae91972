//! Disk usage: by kind, shared against unique per image, and what GC would reclaim.

use std::collections::HashMap;

use hoist_types::Digest;
use serde::Serialize;

use crate::fsutil::LockMode;
use crate::gc::{Amount, GcOptions, GcReport};
use crate::mark;
use crate::record::ImageRecord;
use crate::rootfs::{self, RootfsKind};
use crate::{Store, StoreError};

/// What the store holds ([`Store::disk_usage`]).
#[derive(Debug, Clone, Serialize)]
pub struct DiskUsage {
    /// Every blob but the layer tars.
    pub blobs: Amount,
    /// The layers' uncompressed tars (blobs named by a diff ID that no image has as a
    /// manifest, config or layer), written for erofs tar indexes.
    pub layer_tars: Amount,
    /// Flattened rootfs cache entries.
    pub rootfs_flat: Amount,
    /// Per-layer rootfs cache entries.
    pub rootfs_layer: Amount,
    /// Partial downloads and temp files in the ingest area.
    pub ingests: Amount,
    /// Per image.
    pub images: Vec<ImageUsage>,
    /// What `gc` would remove now.
    pub reclaimable: GcReport,
}

/// One image's share of the store.
#[derive(Debug, Clone, Serialize)]
pub struct ImageUsage {
    /// Image ID.
    pub id: Digest,
    /// Its names.
    pub names: Vec<String>,
    /// Bytes of the blobs it needs (config, manifests, layers) that are present.
    pub size: u64,
    /// Of which other images need too.
    pub shared: u64,
    /// Of which only it needs (what removing it frees).
    pub unique: u64,
    /// Bytes of rootfs cache entries only it needs.
    pub rootfs_unique: u64,
    /// Bytes of rootfs cache entries other images need too.
    pub rootfs_shared: u64,
    /// Bytes of the uncompressed tars of its layers in the store (erofs tar indexes),
    /// not counted in `size`.
    pub layer_tars: u64,
}

/// Split each image's blobs (and rootfs entries) into shared and unique. `blobs` maps a
/// digest to its bytes; `rootfs` lists (kind, key, bytes). Pure.
pub(crate) fn split(
    records: &[ImageRecord],
    blobs: &HashMap<Digest, u64>,
    rootfs: &[(RootfsKind, Digest, u64)],
) -> Vec<ImageUsage> {
    let mut users: HashMap<Digest, usize> = HashMap::new();
    let needs: Vec<Vec<Digest>> = records.iter().map(ImageRecord::blobs).collect();
    for n in &needs {
        for d in n {
            *users.entry(d.clone()).or_default() += 1;
        }
    }
    let marks: Vec<mark::Marks> = records
        .iter()
        .map(|r| mark::mark(std::slice::from_ref(r), &[], &Default::default()))
        .collect();
    let rootfs_users: Vec<usize> = rootfs
        .iter()
        .map(|(k, key, _)| {
            marks
                .iter()
                .filter(|m| mark::keep_rootfs(m, *k, key))
                .count()
        })
        .collect();
    records
        .iter()
        .zip(needs)
        .zip(&marks)
        .map(|((rec, need), m)| {
            let mut u = ImageUsage {
                id: rec.id.clone(),
                names: rec.names.iter().map(ToString::to_string).collect(),
                size: 0,
                shared: 0,
                unique: 0,
                rootfs_unique: 0,
                rootfs_shared: 0,
                layer_tars: 0,
            };
            for d in &rec.diff_ids {
                if !need.contains(d) {
                    u.layer_tars += blobs.get(d).copied().unwrap_or(0);
                }
            }
            for d in &need {
                let Some(bytes) = blobs.get(d) else { continue };
                u.size += bytes;
                if users.get(d).copied().unwrap_or(0) > 1 {
                    u.shared += bytes;
                } else {
                    u.unique += bytes;
                }
            }
            for ((k, key, bytes), n) in rootfs.iter().zip(&rootfs_users) {
                if mark::keep_rootfs(m, *k, key) {
                    if *n > 1 {
                        u.rootfs_shared += bytes;
                    } else {
                        u.rootfs_unique += bytes;
                    }
                }
            }
            u
        })
        .collect()
}

impl Store {
    /// How much the store holds, by kind and per image, and what GC would reclaim.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let s = self.unleased();
        let (records, scan, rscan, ingests) = {
            let _lock = s.lock_store(LockMode::Shared)?;
            let records = s.snapshot()?;
            let scan = s.scan_blobs()?;
            let rscan = s.scan_rootfs()?;
            let mut ingests = Amount::default();
            if let Ok(list) = std::fs::read_dir(s.ingest_dir()) {
                for item in list.flatten() {
                    if let Ok(m) = item.metadata() {
                        ingests.add(m.len());
                    }
                }
            }
            (records, scan, rscan, ingests)
        };
        let needed: std::collections::HashSet<Digest> =
            records.iter().flat_map(ImageRecord::blobs).collect();
        let tars: std::collections::HashSet<&Digest> = records
            .iter()
            .flat_map(|r| &r.diff_ids)
            .filter(|d| !needed.contains(*d))
            .collect();
        let mut blobs = Amount::default();
        let mut layer_tars = Amount::default();
        let mut sizes = HashMap::new();
        for b in &scan.blobs {
            if tars.contains(&b.digest) {
                layer_tars.add(b.size);
            } else {
                blobs.add(b.size);
            }
            sizes.insert(b.digest.clone(), b.size);
        }
        let mut rootfs_flat = Amount::default();
        let mut rootfs_layer = Amount::default();
        let mut entries = Vec::new();
        for e in &rscan.entries {
            let bytes = rootfs::tree_bytes(&e.dir);
            match e.kind {
                RootfsKind::Flat => rootfs_flat.add(bytes),
                RootfsKind::Layer => rootfs_layer.add(bytes),
            }
            entries.push((e.kind, e.key.clone(), bytes));
        }
        let images = split(&records, &sizes, &entries);
        let mut reclaimable = s.gc(&GcOptions {
            dry_run: true,
            ..GcOptions::default()
        })?;
        reclaimable.removed.clear();
        Ok(DiskUsage {
            blobs,
            layer_tars,
            rootfs_flat,
            rootfs_layer,
            ingests,
            images,
            reclaimable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn rec(config: &str, layers: &[&str]) -> ImageRecord {
        let diff_ids = layers.iter().map(|l| d(&format!("diff-{l}"))).collect();
        let layers: Vec<Digest> = layers.iter().map(|l| d(l)).collect();
        let manifest = d(&format!("man-{config}"));
        crate::record::test_record(d(config), manifest, &[], &layers, diff_ids)
    }

    #[test]
    fn shared_and_unique() {
        let a = rec("a", &["base", "a1"]);
        let b = rec("b", &["base", "b1"]);
        let sizes: HashMap<Digest, u64> = [
            (d("a"), 1),
            (d("man-a"), 2),
            (d("base"), 1000),
            (d("a1"), 10),
            (d("b"), 1),
            (d("man-b"), 2),
            (d("b1"), 20),
            // The tar of layer base: counted apart, for both.
            (d("diff-base"), 3000),
        ]
        .into();
        let rootfs = vec![
            (RootfsKind::Layer, d("diff-base"), 500),
            (RootfsKind::Flat, a.chain_ids[1].clone(), 70),
            (RootfsKind::Flat, d("nobody"), 9),
        ];
        let got = split(&[a, b], &sizes, &rootfs);
        assert_eq!(
            (got[0].size, got[0].shared, got[0].unique),
            (1013, 1000, 13)
        );
        assert_eq!(
            (got[1].size, got[1].shared, got[1].unique),
            (1023, 1000, 23)
        );
        assert_eq!((got[0].rootfs_unique, got[0].rootfs_shared), (70, 500));
        assert_eq!((got[1].rootfs_unique, got[1].rootfs_shared), (0, 500));
        assert_eq!((got[0].layer_tars, got[1].layer_tars), (3000, 3000));
    }
}
