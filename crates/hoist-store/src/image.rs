//! Changing images: commit, tag, untag, remove. Every change runs under the exclusive
//! store lock: load the records, change them, write the changed records, then rewrite
//! `index.json` last.

use std::collections::BTreeSet;
use std::time::SystemTime;

use hoist_types::{
    Descriptor, Digest, ImageConfig, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, Manifest, Platform,
    Reference, chain_ids,
};

use crate::fsutil::{self, LockMode};
use crate::query::{self, Query};
use crate::record::{ImageCommit, ImageManifest, ImageRecord, NameTarget, RemoveReport};
use crate::{Store, StoreError};

/// Records loaded under the exclusive lock, and what changed.
struct Txn {
    records: Vec<ImageRecord>,
    dirty: BTreeSet<Digest>,
    deleted: BTreeSet<Digest>,
    /// The record that gained a name, written first.
    gaining: Option<Digest>,
}

impl Txn {
    fn get_mut(&mut self, id: &Digest) -> Option<&mut ImageRecord> {
        self.records.iter_mut().find(|r| &r.id == id)
    }

    /// Put `name` on `id` alone, pointing at the manifest `v` of that image.
    fn move_name(&mut self, name: &Reference, id: &Digest, v: &ImageManifest) {
        for rec in &mut self.records {
            let has = rec.names.contains(name);
            if &rec.id == id {
                if !has || rec.target_of(name) != *v {
                    rec.set_target(name, v);
                    self.dirty.insert(rec.id.clone());
                    self.gaining = Some(rec.id.clone());
                }
            } else if has {
                rec.drop_name(name);
                self.dirty.insert(rec.id.clone());
            }
        }
    }

    fn delete(&mut self, id: &Digest) {
        self.records.retain(|r| &r.id != id);
        self.dirty.remove(id);
        self.deleted.insert(id.clone());
    }
}

impl Store {
    /// Run `f` on the records under the exclusive store lock, then persist: changed
    /// records that gained names first, then the others, then deletions, then
    /// `index.json`.
    fn transact<T>(
        &self,
        f: impl FnOnce(&mut Txn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = self.lock_store(LockMode::Exclusive)?;
        let mut records = self.load_records()?;
        let repaired = self.dedupe_names(&mut records)?;
        let mut txn = Txn {
            records,
            dirty: repaired.into_iter().collect(),
            deleted: BTreeSet::new(),
            gaining: None,
        };
        let out = f(&mut txn)?;
        // A record that lost a name, or whose name moved, drops the manifests nothing
        // reaches any more (their blobs become garbage).
        for rec in &mut txn.records {
            if txn.dirty.contains(&rec.id) {
                rec.prune();
            }
        }
        // Every Docker schema 2 manifest gets its OCI view before index.json names it.
        // A record this change does not touch but that lacks a view (written by an older
        // hoist) gets one too; if its manifest cannot be read, it is left for fsck.
        for rec in &mut txn.records {
            match self.ensure_oci_views(rec) {
                Ok(true) => {
                    txn.dirty.insert(rec.id.clone());
                }
                Ok(false) => {}
                Err(e) if txn.dirty.contains(&rec.id) => return Err(e),
                Err(_) => {}
            }
        }
        // Records first, index.json last; the marker says a crash may lie in between, and
        // the next open rewrites index.json from the records (`Store::heal_index`).
        let marker = self.txn_marker();
        std::fs::File::create(&marker).map_err(|e| StoreError::io("create", &marker, e))?;
        // The record that gains a name is written before those that lose it: a crash in
        // between leaves the name on two records, which reads resolve through
        // index.json (not yet rewritten, so the old owner keeps it).
        let mut order: Vec<&Digest> = txn.dirty.iter().collect();
        order.sort_by_key(|id| Some(*id) != txn.gaining.as_ref());
        for id in order {
            if let Some(rec) = txn.records.iter().find(|r| &r.id == id) {
                self.save_record(rec)?;
            }
        }
        for id in &txn.deleted {
            self.delete_record(id)?;
        }
        self.write_index(&txn.records)?;
        fsutil::remove_if_exists(&marker)?;
        Ok(out)
    }

    /// `hoist/txn-pending`: present while a transaction writes records and `index.json`.
    pub(crate) fn txn_marker(&self) -> std::path::PathBuf {
        self.hoist_dir().join("txn-pending")
    }

    /// After a transaction was killed between its record writes and `index.json` (the
    /// marker is left): rewrite `index.json` from the records, the source of truth. A
    /// name two records claim stays with its `index.json` owner (the write that moved it
    /// did not finish). Called by `Store::open` under the exclusive store lock.
    pub(crate) fn heal_index(&self) -> Result<(), StoreError> {
        let marker = self.txn_marker();
        if !marker.exists() {
            return Ok(());
        }
        let mut records = self.load_records()?;
        let repaired = self.dedupe_names(&mut records)?;
        for rec in &mut records {
            let mut changed = false;
            if repaired.contains(&rec.id) {
                rec.prune();
                changed = true;
            }
            // The view a killed commit may not have recorded; unreadable: left for fsck.
            changed |= self.ensure_oci_views(rec).unwrap_or(false);
            if changed {
                self.save_record(rec)?;
            }
        }
        self.write_index(&records)?;
        fsutil::remove_if_exists(&marker)
    }

    /// Record an image whose blobs are all in the store, and point `c.name` at it.
    ///
    /// Reads and verifies the manifest (and index) and the config from their blobs,
    /// checks that every layer blob is present with its size and that the manifest has
    /// as many layers as the config has diff IDs, computes chain IDs, then writes or
    /// merges the record and rewrites `index.json`. A name moved from another image
    /// leaves that image in place without it. On any error nothing is written.
    pub fn commit_image(&self, c: ImageCommit) -> Result<ImageRecord, StoreError> {
        let fresh = self.build_record(&c)?;
        let id = fresh.id.clone();
        let needed = fresh.blobs();
        self.transact(|txn| {
            // Checked again under the lock, which a GC holds while it sweeps: a record
            // never names a blob that was collected after it was checked above.
            for d in &needed {
                if self.stat_blob(d)?.is_none() {
                    return Err(StoreError::BlobNotFound {
                        digest: d.clone(),
                        path: self.blob_path(d),
                    });
                }
            }
            let merged = match txn.records.iter().find(|r| r.id == id) {
                Some(old) => merge(old, fresh),
                None => fresh,
            };
            let names: Vec<Reference> = c
                .name
                .as_ref()
                .and_then(|n| n.tag().and_then(|t| n.with_tag(t).ok()))
                .into_iter()
                .collect();
            let variant = merged.latest();
            match txn.get_mut(&id) {
                Some(slot) => *slot = merged,
                None => txn.records.push(merged),
            }
            txn.dirty.insert(id.clone());
            txn.gaining = Some(id.clone());
            for n in &names {
                txn.move_name(n, &id, &variant);
            }
            Ok(txn
                .records
                .iter()
                .find(|r| r.id == id)
                .cloned()
                .expect("just inserted"))
        })
    }

    /// Read and check everything `c` points at, and build the record it describes.
    fn build_record(&self, c: &ImageCommit) -> Result<ImageRecord, StoreError> {
        let mdesc = &c.manifest;
        let raw = self.read_sized(&mdesc.digest, mdesc.size, MAX_MANIFEST_SIZE)?;
        let invalid = |what, digest: &Digest| {
            let digest = digest.clone();
            move |source| StoreError::InvalidDocument {
                what,
                digest,
                source,
            }
        };
        let (parsed, mt) = Manifest::parse(&raw, Some(&mdesc.media_type))
            .map_err(invalid("manifest", &mdesc.digest))?;
        let Manifest::Image(m) = parsed else {
            return Err(StoreError::NotAnImageManifest {
                digest: mdesc.digest.clone(),
                media_type: mt,
            });
        };
        let mut index_platform = None;
        if let Some(idesc) = &c.index {
            let raw = self.read_sized(&idesc.digest, idesc.size, MAX_MANIFEST_SIZE)?;
            let (parsed, imt) = Manifest::parse(&raw, Some(&idesc.media_type))
                .map_err(invalid("index", &idesc.digest))?;
            let Manifest::Index(idx) = parsed else {
                return Err(StoreError::NotAnIndex {
                    digest: idesc.digest.clone(),
                    media_type: imt,
                });
            };
            let entry = idx
                .manifests
                .iter()
                .find(|e| e.digest == mdesc.digest)
                .ok_or_else(|| StoreError::IndexMissingManifest {
                    index: idesc.digest.clone(),
                    manifest: mdesc.digest.clone(),
                })?;
            index_platform = entry.platform.clone();
        }
        let raw_config = self.read_sized(&m.config.digest, m.config.size, MAX_CONFIG_SIZE)?;
        let config =
            ImageConfig::parse(&raw_config).map_err(invalid("config", &m.config.digest))?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(StoreError::LayerCountMismatch {
                manifest: mdesc.digest.clone(),
                config: m.config.digest.clone(),
                layers: m.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        for layer in &m.layers {
            match self.has_blob(&layer.digest)? {
                None => {
                    return Err(StoreError::BlobNotFound {
                        digest: layer.digest.clone(),
                        path: self.blob_path(&layer.digest),
                    });
                }
                Some(size) if size != layer.size => {
                    return Err(StoreError::SizeMismatch {
                        digest: layer.digest.clone(),
                        expected: layer.size,
                        actual: size,
                    });
                }
                Some(_) => {}
            }
        }

        let platform = if !config.os.is_empty() && !config.architecture.is_empty() {
            Platform::new(&config.os, &config.architecture, config.variant.as_deref())
        } else {
            index_platform
                .or_else(|| mdesc.platform.clone())
                .unwrap_or_default()
        };
        let name = c
            .name
            .as_ref()
            .and_then(|n| n.tag().map(|t| n.with_tag(t)))
            .transpose()
            .map_err(|source| StoreError::InvalidQuery {
                input: c.name.as_ref().map(ToString::to_string).unwrap_or_default(),
                source,
            })?;
        // The repository it came from: the name, else the source if it is a reference.
        let repo = c
            .name
            .clone()
            .or_else(|| c.source.as_deref().and_then(|s| Reference::parse(s).ok()));
        let pulled = c.index.as_ref().unwrap_or(mdesc);
        let repo_digests = repo
            .map(|r| vec![format!("{}@{}", r.name(), pulled.digest)])
            .unwrap_or_default();
        let size = m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
        let manifest = Descriptor {
            media_type: mt,
            ..mdesc.clone()
        };
        // A commit without a name (a pull by digest) is a digest reference.
        let digest_refs = if name.is_none() {
            vec![pulled.digest.clone()]
        } else {
            Vec::new()
        };
        let targets = name
            .iter()
            .map(|n| NameTarget {
                name: n.clone(),
                manifest: manifest.digest.clone(),
                index: c.index.as_ref().map(|i| i.digest.clone()),
            })
            .collect();
        Ok(ImageRecord {
            id: m.config.digest.clone(),
            names: name.into_iter().collect(),
            targets,
            manifests: Vec::new(),
            repo_digests,
            manifest,
            index: c.index.clone(),
            config_media_type: m.config.media_type.clone(),
            config_size: m.config.size,
            layers: m.layers.clone(),
            chain_ids: chain_ids(&config.rootfs.diff_ids),
            diff_ids: config.rootfs.diff_ids.clone(),
            platform,
            created: config.created.clone(),
            size,
            added: fsutil::rfc3339(SystemTime::now()),
            source: c.source.clone(),
            config_parent: config.parent.as_deref().and_then(|p| Digest::parse(p).ok()),
            digest_refs,
            oci_views: Vec::new(),
        })
    }

    /// Read and verify a blob that must have `size` bytes.
    fn read_sized(&self, d: &Digest, size: u64, limit: u64) -> Result<Vec<u8>, StoreError> {
        let bytes = self.read_blob(d, limit)?;
        if bytes.len() as u64 != size {
            return Err(StoreError::SizeMismatch {
                digest: d.clone(),
                expected: size,
                actual: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Point the tag `new` at the image `image` (anything [`Store::resolve`] takes),
    /// moving it from whichever image had it.
    pub fn tag(&self, image: &str, new: &Reference) -> Result<(), StoreError> {
        let name = tag_only(new)?;
        let q = query::parse_query(image)?;
        self.transact(|txn| {
            let owners = query::name_owners(&txn.records, &Default::default());
            let (rec, v) = query::find_variant(&txn.records, &owners, image, &q)?;
            let id = rec.id.clone();
            txn.move_name(&name, &id, &v);
            Ok(())
        })
    }

    /// Remove the tag `name`. The image stays, even with no name left (as a dangling
    /// image, like Docker's); [`Store::remove_image`] deletes images.
    pub fn untag(&self, name: &Reference) -> Result<(), StoreError> {
        let name = tag_only(name)?;
        self.transact(|txn| {
            let mut found = false;
            for rec in &mut txn.records {
                if rec.names.contains(&name) {
                    rec.drop_name(&name);
                    txn.dirty.insert(rec.id.clone());
                    found = true;
                }
            }
            if found {
                Ok(())
            } else {
                Err(StoreError::NameNotFound { name: name.clone() })
            }
        })
    }

    /// Remove an image or a name, like `docker rmi`:
    ///
    /// - a tag name: untag it, and delete the image when no name and no digest
    ///   reference (a pull by digest) is left; otherwise the manifests nothing reaches
    ///   any more leave the record, so that GC frees their blobs;
    /// - `name@digest`: drop that repo digest and digest reference (the image too when
    ///   nothing else names it);
    /// - an ID, digest or ID prefix: delete the image and all its names; when it has
    ///   several names this needs `force`.
    ///
    /// Blobs are left for garbage collection.
    pub fn remove_image(&self, s: &str, force: bool) -> Result<RemoveReport, StoreError> {
        let q = query::parse_query(s)?;
        self.transact(|txn| {
            let mut report = RemoveReport::default();
            let owners = query::name_owners(&txn.records, &Default::default());
            if let Query::Name { reference, .. } = &q {
                if reference.digest().is_none()
                    && let Some(id) = owners.get(reference).cloned()
                {
                    let rec = txn.get_mut(&id).expect("owner exists");
                    rec.drop_name(reference);
                    let now_unnamed = rec.names.is_empty() && rec.digest_refs.is_empty();
                    txn.dirty.insert(id.clone());
                    report.untagged.push(reference.clone());
                    if now_unnamed {
                        txn.delete(&id);
                        report.deleted.push(id);
                    }
                    return Ok(report);
                }
                if let Some(d) = reference.digest() {
                    let id = query::find(&txn.records, &owners, s, &q)?.id.clone();
                    let repo_digest = format!("{}@{d}", reference.name());
                    let rec = txn.get_mut(&id).expect("found above");
                    let refs_before = rec.digest_refs.len();
                    rec.digest_refs.retain(|x| x != d);
                    let dropped_ref = rec.digest_refs.len() != refs_before;
                    if !rec.names.is_empty() || !rec.digest_refs.is_empty() {
                        // Still named: only this repo digest (and digest reference) goes,
                        // as with `docker rmi`.
                        let before = rec.repo_digests.len();
                        rec.repo_digests.retain(|r| r != &repo_digest);
                        if rec.repo_digests.len() == before && !dropped_ref {
                            return Err(StoreError::ImageNotFound {
                                query: s.to_owned(),
                            });
                        }
                        txn.dirty.insert(id);
                        report.untagged.push(reference.clone());
                        return Ok(report);
                    }
                    txn.delete(&id);
                    report.untagged.push(reference.clone());
                    report.deleted.push(id);
                    return Ok(report);
                }
            }
            let rec = query::find(&txn.records, &owners, s, &q)?;
            if rec.names.len() > 1 && !force {
                return Err(StoreError::MultipleNames {
                    id: rec.id.clone(),
                    names: rec.names.clone(),
                });
            }
            let id = rec.id.clone();
            report.untagged.extend(rec.names.iter().cloned());
            txn.delete(&id);
            report.deleted.push(id);
            Ok(report)
        })
    }
}

/// `name` as a tag without digest, or [`StoreError::NotATag`].
fn tag_only(name: &Reference) -> Result<Reference, StoreError> {
    match (name.tag(), name.digest()) {
        (Some(t), None) => name.with_tag(t).map_err(|source| StoreError::InvalidQuery {
            input: name.to_string(),
            source,
        }),
        _ => Err(StoreError::NotATag {
            reference: name.clone(),
        }),
    }
}

/// Merge a fresh commit of an image into its existing record: names, manifests and repo
/// digests accumulate (the fresh manifest becomes the latest, its name points at it, the
/// other names keep theirs), the rest comes from the fresh commit, `added` is kept.
pub(crate) fn merge(old: &ImageRecord, fresh: ImageRecord) -> ImageRecord {
    let v = fresh.latest();
    let mut repo_digests = old.repo_digests.clone();
    for r in &fresh.repo_digests {
        if !repo_digests.contains(r) {
            repo_digests.push(r.clone());
        }
    }
    let fresh_names = fresh.names.clone();
    let mut digest_refs = old.digest_refs.clone();
    for d in &fresh.digest_refs {
        if !digest_refs.contains(d) {
            digest_refs.push(d.clone());
        }
    }
    let mut rec = ImageRecord {
        digest_refs,
        oci_views: old.oci_views.clone(),
        names: old.names.clone(),
        targets: old.targets.clone(),
        manifests: old.manifests.clone(),
        manifest: old.manifest.clone(),
        index: old.index.clone(),
        layers: old.layers.clone(),
        size: old.size,
        repo_digests,
        added: old.added.clone(),
        source: fresh.source.clone().or_else(|| old.source.clone()),
        ..fresh
    };
    rec.add_variant(&v, true);
    for n in &fresh_names {
        rec.set_target(n, &v);
    }
    rec
}
