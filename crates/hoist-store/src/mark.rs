//! GC marking and sweep decisions: pure functions over records, roots and facts about
//! files, table-tested without I/O.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use hoist_types::{Descriptor, Digest, MAX_INDEX_DEPTH, Manifest};

use crate::record::ImageRecord;
use crate::rootfs::RootfsKind;

/// What must be kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Marks {
    /// Blobs.
    pub blobs: HashSet<Digest>,
    /// Keys of flattened rootfs entries (top chain IDs).
    pub flat: HashSet<Digest>,
    /// Keys of per-layer rootfs entries (diff IDs).
    pub layer: HashSet<Digest>,
}

/// The chain ID of an image without layers (what hoist-mkfs keys its rootfs by).
pub(crate) fn empty_chain() -> Digest {
    Digest::sha256_of(b"")
}

/// Mark from the roots: every image record (all its manifests, indexes, config and
/// layers; its diff IDs, as the blobs of the layers' uncompressed tars and as keys of the
/// rootfs cache; its top chain ID), the blobs reached from
/// `index.json` entries hoist does not manage (`foreign`), and every leased digest (as a
/// blob and as a rootfs key).
pub(crate) fn mark(
    records: &[ImageRecord],
    foreign: &[Digest],
    leased: &BTreeSet<Digest>,
) -> Marks {
    let mut m = Marks::default();
    for rec in records {
        m.blobs.extend(rec.blobs());
        // The layers' uncompressed tars (blobs named by their diff IDs, written for erofs
        // tar indexes) stay while an image has the layer.
        m.blobs.extend(rec.diff_ids.iter().cloned());
        m.flat
            .insert(rec.chain_ids.last().cloned().unwrap_or_else(empty_chain));
        m.layer.extend(rec.diff_ids.iter().cloned());
    }
    m.blobs.extend(foreign.iter().cloned());
    for d in leased {
        m.blobs.insert(d.clone());
        m.flat.insert(d.clone());
        m.layer.insert(d.clone());
    }
    m
}

/// Whether a blob stays: marked, younger than the grace period, or locked by a writer.
pub(crate) fn keep_blob(
    marks: &Marks,
    d: &Digest,
    age: Duration,
    grace: Duration,
    busy: bool,
) -> bool {
    marks.blobs.contains(d) || age < grace || busy
}

/// Whether a rootfs cache entry stays.
pub(crate) fn keep_rootfs(marks: &Marks, kind: RootfsKind, key: &Digest) -> bool {
    match kind {
        RootfsKind::Flat => marks.flat.contains(key),
        RootfsKind::Layer => marks.layer.contains(key),
    }
}

/// What a partial download in the ingest area is, for GC and fsck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartialFacts {
    /// A live process holds it.
    pub locked: bool,
    /// The blob it is for is already in the store.
    pub blob_present: bool,
    /// Its record is readable and matches.
    pub has_meta: bool,
    /// Time since it last changed.
    pub age: Duration,
}

/// Why a partial goes, or `None` when it stays (in use, or resumable and recent).
pub(crate) fn partial_verdict(p: PartialFacts, grace: Duration) -> Option<&'static str> {
    if p.locked {
        None
    } else if p.blob_present {
        Some("its blob is already stored")
    } else if !p.has_meta && p.age >= crate::TEMP_MIN_AGE {
        Some("it has no valid record")
    } else if p.age >= grace {
        Some("older than the grace period")
    } else {
        None
    }
}

/// The blobs reached from `roots` (index.json entries hoist does not manage): each
/// manifest, and through it its config and layers, and through an index its manifests,
/// to [`MAX_INDEX_DEPTH`] levels, each digest once. `read` gives a manifest's bytes, or
/// `None` when it is absent or unreadable (the digest is still marked).
pub(crate) fn reach(
    roots: &[Descriptor],
    read: impl Fn(&Descriptor) -> Option<Vec<u8>>,
) -> Vec<Digest> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue: VecDeque<(Descriptor, usize)> = roots.iter().map(|d| (d.clone(), 0)).collect();
    while let Some((desc, depth)) = queue.pop_front() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        out.push(desc.digest.clone());
        if !(desc.media_type.is_manifest() || desc.media_type.is_index()) {
            continue;
        }
        let Some(bytes) = read(&desc) else { continue };
        match Manifest::parse(&bytes, Some(&desc.media_type)) {
            Ok((Manifest::Image(m), _)) => {
                for d in std::iter::once(&m.config).chain(&m.layers) {
                    if seen.insert(d.digest.clone()) {
                        out.push(d.digest.clone());
                    }
                }
            }
            Ok((Manifest::Index(idx), _)) if depth < MAX_INDEX_DEPTH => {
                queue.extend(idx.manifests.iter().map(|c| (c.clone(), depth + 1)));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_types::MediaType;
    use std::collections::HashMap;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn desc(mt: MediaType, s: &str) -> Descriptor {
        Descriptor::new(mt, d(s), 1)
    }

    fn rec(config: &str, manifest: &str, layers: &[&str], names: &[&str]) -> ImageRecord {
        let diff_ids = layers.iter().map(|l| d(&format!("diff-{l}"))).collect();
        let layers: Vec<Digest> = layers.iter().map(|l| d(l)).collect();
        crate::record::test_record(d(config), d(manifest), names, &layers, diff_ids)
    }

    #[test]
    fn mark_table() {
        let a = rec("cfg-a", "man-a", &["base", "a1"], &["a"]);
        let b = rec("cfg-b", "man-b", &["base", "b1"], &[]); // unnamed: still an image
        let mut twin = rec("cfg-t", "man-t", &["t1"], &["t"]);
        // A second manifest of one config (the Docker twin), reached through an index.
        twin.add_variant(
            &crate::record::ImageManifest {
                manifest: desc(MediaType::DockerManifest, "man-t2"),
                index: Some(desc(MediaType::OciIndex, "idx-t")),
                layers: vec![desc(MediaType::DockerLayerGzip, "t1-docker")],
            },
            false,
        );
        let empty = rec("cfg-e", "man-e", &[], &["scratch"]);
        let records = vec![a.clone(), b.clone(), twin.clone(), empty.clone()];
        let leased: BTreeSet<Digest> = [d("in-flight"), d("diff-leased")].into();
        let m = mark(&records, &[d("foreign-man")], &leased);
        let kept = [
            "cfg-a",
            "man-a",
            "base",
            "a1",
            "cfg-b",
            "man-b",
            "b1",
            "cfg-t",
            "man-t",
            "t1",
            "man-t2",
            "idx-t",
            "t1-docker",
            "cfg-e",
            "man-e",
            "foreign-man",
            "in-flight",
            // The layers' uncompressed tars (erofs tar indexes), by diff ID.
            "diff-base",
            "diff-a1",
            "diff-b1",
            "diff-t1",
        ];
        for k in kept {
            assert!(m.blobs.contains(&d(k)), "{k} kept");
        }
        assert_eq!(m.blobs.len(), kept.len() + 1, "and the leased diff ID");
        for gone in ["cfg-x", "layer-of-removed", "diff-layer-of-removed"] {
            assert!(!m.blobs.contains(&d(gone)), "{gone}");
        }
        // Rootfs keys: top chain IDs (the empty image's too) and diff IDs.
        assert!(keep_rootfs(
            &m,
            RootfsKind::Flat,
            a.chain_ids.last().unwrap()
        ));
        assert!(
            !keep_rootfs(&m, RootfsKind::Flat, &a.chain_ids[0]),
            "a lower chain ID"
        );
        assert!(keep_rootfs(&m, RootfsKind::Flat, &empty_chain()));
        assert!(keep_rootfs(&m, RootfsKind::Layer, &d("diff-base")));
        assert!(keep_rootfs(&m, RootfsKind::Layer, &d("diff-b1")));
        assert!(!keep_rootfs(&m, RootfsKind::Layer, &d("diff-zzz")));
        assert!(keep_rootfs(&m, RootfsKind::Layer, &d("diff-leased")));
        assert!(keep_rootfs(&m, RootfsKind::Flat, &d("in-flight")));
        // Nothing at all: nothing kept.
        assert_eq!(mark(&[], &[], &BTreeSet::new()), Marks::default());
    }

    #[test]
    fn keep_blob_table() {
        let m = mark(&[rec("c", "m", &["l"], &[])], &[], &BTreeSet::new());
        let s = Duration::from_secs;
        let cases = [
            ("l", s(1000), s(0), false, true),
            ("x", s(1000), s(0), false, false),
            ("x", s(5), s(60), false, true), // fresh
            ("x", s(60), s(60), false, false),
            ("x", s(1000), s(0), true, true), // a writer holds its lock
        ];
        for (name, age, grace, busy, keep) in cases {
            assert_eq!(
                keep_blob(&m, &d(name), age, grace, busy),
                keep,
                "{name} {age:?}"
            );
        }
    }

    #[test]
    fn partial_table() {
        let s = Duration::from_secs;
        let f = |locked, blob_present, has_meta, age| PartialFacts {
            locked,
            blob_present,
            has_meta,
            age: s(age),
        };
        let grace = s(3600);
        let cases = [
            (f(true, true, false, 99_999), false),
            (f(false, true, true, 0), true),
            (f(false, false, false, 10), false),
            (f(false, false, false, 120), true),
            (f(false, false, true, 120), false),
            (f(false, false, true, 3600), true),
        ];
        for (p, goes) in cases {
            assert_eq!(partial_verdict(p, grace).is_some(), goes, "{p:?}");
        }
    }

    #[test]
    fn reach_walks_indexes_once_and_bounded() {
        let mut blobs: HashMap<Digest, Vec<u8>> = HashMap::new();
        let cfg = desc(MediaType::OciConfig, "cfg");
        let layer = desc(MediaType::OciLayerGzip, "layer");
        let man = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cfg, "layers": [layer]});
        let man_bytes = serde_json::to_vec(&man).unwrap();
        let man_d = Descriptor::new(
            MediaType::OciManifest,
            Digest::sha256_of(&man_bytes),
            man_bytes.len() as u64,
        );
        blobs.insert(man_d.digest.clone(), man_bytes);
        let missing = desc(MediaType::OciManifest, "missing");
        let idx = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [man_d, missing, man_d]});
        let idx_bytes = serde_json::to_vec(&idx).unwrap();
        let idx_d = Descriptor::new(
            MediaType::OciIndex,
            Digest::sha256_of(&idx_bytes),
            idx_bytes.len() as u64,
        );
        blobs.insert(idx_d.digest.clone(), idx_bytes);
        let got = reach(&[idx_d.clone(), man_d.clone()], |x| {
            blobs.get(&x.digest).cloned()
        });
        let want = vec![
            idx_d.digest.clone(),
            man_d.digest.clone(),
            cfg.digest.clone(),
            layer.digest.clone(),
            missing.digest.clone(),
        ];
        assert_eq!(got, want);
        // A layer given as a root is marked alone; garbage bytes mark only the digest.
        assert_eq!(
            reach(std::slice::from_ref(&layer), |_| None),
            vec![layer.digest.clone()]
        );
        assert_eq!(
            reach(std::slice::from_ref(&man_d), |_| Some(
                b"{not json".to_vec()
            )),
            vec![man_d.digest.clone()]
        );
    }
}
