//! Images: commit, index.json, resolve, tag/untag/remove, lineage.

mod common;

use std::fs;

use common::{Spec, build, build_index, commit, index_names, ls, r, store};
use hoist_store::{ANNOTATION_IMAGE_ID, ImageCommit, ImageRecord, RemoveReport, StoreError};
use hoist_types::{Digest, MediaType, Platform, chain_ids};

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync::<hoist_store::Store>();
    send::<hoist_store::BlobWriter>();
    send::<hoist_store::BlobLock>();
    send::<StoreError>();
}

#[test]
fn commit_writes_record_and_index() {
    let (_t, s) = store();
    let b = build(&s, &Spec::new("one", &[b"layer-a", b"layer-bb"]));
    let rec = commit(&s, &b, Some("127.0.0.1:5000/ns/repo:tag"));

    assert_eq!(rec.id, b.config.digest);
    assert_eq!(rec.names, vec![r("127.0.0.1:5000/ns/repo:tag")]);
    assert_eq!(
        rec.repo_digests,
        vec![format!("127.0.0.1:5000/ns/repo@{}", b.manifest.digest)]
    );
    assert_eq!(rec.manifest, b.manifest);
    assert_eq!(rec.index, None);
    assert_eq!(rec.config_media_type, MediaType::OciConfig);
    assert_eq!(rec.config_size, b.config.size);
    assert_eq!(rec.layers, b.layers);
    assert_eq!(rec.diff_ids, b.diff_ids);
    assert_eq!(rec.chain_ids, chain_ids(&b.diff_ids));
    assert_eq!(rec.platform, Platform::new("linux", "amd64", None));
    assert_eq!(rec.created.as_deref(), Some("2024-05-01T12:00:00Z"));
    assert_eq!(rec.size, b.config.size + 7 + 8);
    assert_eq!(rec.added.len(), "2024-05-01T12:00:00Z".len());
    assert!(rec.added.ends_with('Z'));

    // The record file, and its round trip.
    let path = s
        .root()
        .join(format!("hoist/images/sha256-{}.json", rec.id.hex()));
    let on_disk: ImageRecord = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(on_disk, rec);
    assert_eq!(s.image(&rec.id).unwrap(), Some(rec.clone()));
    assert_eq!(s.images().unwrap(), vec![rec.clone()]);

    // index.json: a valid OCI index with one entry per tag.
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(s.root().join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["schemaVersion"], 2);
    assert_eq!(idx["mediaType"], "application/vnd.oci.image.index.v1+json");
    let e = &idx["manifests"][0];
    assert_eq!(e["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(e["digest"], b.manifest.digest.to_string());
    assert_eq!(e["size"], b.manifest.size);
    assert_eq!(e["platform"]["os"], "linux");
    assert_eq!(e["platform"]["architecture"], "amd64");
    assert_eq!(
        e["annotations"]["org.opencontainers.image.ref.name"],
        "127.0.0.1:5000/ns/repo:tag"
    );
    assert_eq!(e["annotations"][ANNOTATION_IMAGE_ID], rec.id.to_string());
    assert_eq!(
        fs::read_to_string(s.root().join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert_eq!(
        fs::read_to_string(s.root().join("hoist/version"))
            .unwrap()
            .trim(),
        "1"
    );
    // Nothing left behind.
    assert!(ls(&s.root().join("hoist/ingest")).is_empty());
    assert!(
        ls(&s.root().join("hoist/images"))
            .iter()
            .all(|n| !n.starts_with('.'))
    );
    assert!(ls(s.root()).iter().all(|n| !n.starts_with('.')));
}

#[test]
fn commit_from_index_and_by_digest() {
    let (_t, s) = store();
    let amd = build(&s, &Spec::new("amd", &[b"l1"]));
    let arm = build(
        &s,
        &Spec {
            arch: "arm64",
            ..Spec::new("arm", &[b"l2"])
        },
    );
    let idx = build_index(&s, &[(&amd, "amd64"), (&arm, "arm64")]);
    let rec = s
        .commit_image(ImageCommit {
            name: Some(r("alpine:3")),
            manifest: arm.manifest.clone(),
            index: Some(idx.clone()),
            source: Some("alpine:3".into()),
        })
        .unwrap();
    assert_eq!(rec.index, Some(idx.clone()));
    assert_eq!(rec.platform, Platform::new("linux", "arm64", None));
    // Docker's RepoDigests name what was pulled: the index.
    assert_eq!(
        rec.repo_digests,
        vec![format!("docker.io/library/alpine@{}", idx.digest)]
    );
    // Resolvable by the index digest and by name@digest.
    assert_eq!(s.resolve(&idx.digest.to_string()).unwrap().id, rec.id);
    assert_eq!(
        s.resolve(&format!("alpine@{}", idx.digest)).unwrap().id,
        rec.id
    );

    // A pull by digest without tag: no name, no index.json entry, a repo digest from the source.
    let by_digest = s
        .commit_image(ImageCommit {
            name: None,
            manifest: amd.manifest.clone(),
            index: None,
            source: Some(format!("ghcr.io/o/r@{}", amd.manifest.digest)),
        })
        .unwrap();
    assert!(by_digest.names.is_empty());
    assert_eq!(
        by_digest.repo_digests,
        vec![format!("ghcr.io/o/r@{}", amd.manifest.digest)]
    );
    assert_eq!(index_names(s.root()), ["docker.io/library/alpine:3"]);

    // An index that does not list the manifest is refused.
    let other = build_index(&s, &[(&amd, "amd64")]);
    let e = s
        .commit_image(ImageCommit {
            name: Some(r("x")),
            manifest: arm.manifest.clone(),
            index: Some(other),
            source: None,
        })
        .unwrap_err();
    assert!(matches!(e, StoreError::IndexMissingManifest { .. }), "{e}");
}

#[test]
fn refused_commits_change_nothing() {
    let (_t, s) = store();
    let good = build(&s, &Spec::new("good", &[b"g"]));
    commit(&s, &good, Some("good"));
    let snapshot = |s: &hoist_store::Store| {
        (
            fs::read(s.root().join("index.json")).unwrap(),
            ls(&s.root().join("hoist/images")),
        )
    };
    let before = snapshot(&s);

    // Layers vs diff IDs.
    let extra = build(
        &s,
        &Spec {
            diff_ids_override: Some(vec![common::diff_id(b"a"), common::diff_id(b"b")]),
            ..Spec::new("mismatch", &[b"a"])
        },
    );
    // A layer blob missing.
    let missing = build(&s, &Spec::new("missing", &[b"gone-layer"]));
    fs::remove_file(s.blob_path(&missing.layers[0].digest)).unwrap();
    // A layer blob of the wrong size (the store holds other bytes under that name).
    let short = build(&s, &Spec::new("short", &[b"short-layer"]));
    fs::write(s.blob_path(&short.layers[0].digest), b"x").unwrap();
    // The manifest blob absent.
    let mut absent = build(&s, &Spec::new("absent", &[b"q"]));
    absent.manifest.digest = Digest::sha256_of(b"no such manifest");
    // The manifest descriptor with the wrong size.
    let mut wrong_size = build(&s, &Spec::new("size", &[b"w"]));
    wrong_size.manifest.size += 1;
    // A "manifest" that is a config.
    let mut not_manifest = build(&s, &Spec::new("nm", &[b"n"]));
    not_manifest.manifest = not_manifest.config.clone();

    type Check = fn(&StoreError) -> bool;
    let cases: Vec<(&str, &common::Built, Check)> = vec![
        ("layer count", &extra, |e| {
            matches!(
                e,
                StoreError::LayerCountMismatch {
                    layers: 1,
                    diff_ids: 2,
                    ..
                }
            )
        }),
        ("missing layer", &missing, |e| {
            matches!(e, StoreError::BlobNotFound { .. })
        }),
        ("short layer", &short, |e| {
            matches!(
                e,
                StoreError::SizeMismatch {
                    expected: 11,
                    actual: 1,
                    ..
                }
            )
        }),
        ("absent manifest", &absent, |e| {
            matches!(e, StoreError::BlobNotFound { .. })
        }),
        ("manifest size", &wrong_size, |e| {
            matches!(e, StoreError::SizeMismatch { .. })
        }),
        ("not a manifest", &not_manifest, |e| {
            matches!(e, StoreError::InvalidDocument { .. })
        }),
    ];
    for (what, b, check) in cases {
        let e = s
            .commit_image(ImageCommit {
                name: Some(r("good")),
                manifest: b.manifest.clone(),
                index: None,
                source: None,
            })
            .unwrap_err();
        assert!(check(&e), "{what}: {e:?}");
        assert_eq!(snapshot(&s), before, "{what} changed the store");
    }
    // The error names the manifest and config.
    let e = s
        .commit_image(ImageCommit {
            name: None,
            manifest: extra.manifest.clone(),
            index: None,
            source: None,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains(&extra.manifest.digest.to_string()), "{e}");
    assert!(e.contains(&extra.config.digest.to_string()), "{e}");
}

#[test]
fn recommit_merges_and_moving_a_tag_keeps_the_old_image() {
    let (_t, s) = store();
    let v1 = build(&s, &Spec::new("v1", &[b"base", b"v1"]));
    let v2 = build(&s, &Spec::new("v2", &[b"base", b"v2"]));
    let a = commit(&s, &v1, Some("app:latest"));
    let again = commit(&s, &v1, Some("app:1"));
    assert_eq!(again.id, a.id);
    assert_eq!(again.names, vec![r("app:1"), r("app:latest")]);
    assert_eq!(again.added, a.added);
    assert_eq!(again.repo_digests.len(), 1);

    let b = commit(&s, &v2, Some("app:latest"));
    assert_eq!(b.names, vec![r("app:latest")]);
    let old = s.image(&a.id).unwrap().unwrap();
    assert_eq!(old.names, vec![r("app:1")]);
    assert_eq!(
        index_names(s.root()),
        ["docker.io/library/app:1", "docker.io/library/app:latest"]
    );
    // Move the last name away: the old image stays, dangling.
    commit(&s, &v2, Some("app:1"));
    let old = s.image(&a.id).unwrap().unwrap();
    assert!(old.names.is_empty());
    assert_eq!(s.images().unwrap().len(), 2);
    assert_eq!(s.resolve("app:1").unwrap().id, b.id);
}

#[test]
fn resolve_like_docker_inspect() {
    let (_t, s) = store();
    let imgs: Vec<ImageRecord> = (0..3)
        .map(|i| {
            let label = format!("img{i}");
            let layer = format!("layer{i}");
            let b = build(&s, &Spec::new(&label, &[layer.as_bytes()]));
            commit(&s, &b, Some(&format!("repo{i}:t")))
        })
        .collect();
    let a = &imgs[0];
    let unique = &a.id.hex()[..12];
    let cases: Vec<(String, Result<&Digest, &str>)> = vec![
        ("repo0:t".into(), Ok(&a.id)),
        ("docker.io/library/repo0:t".into(), Ok(&a.id)),
        ("repo1:t".into(), Ok(&imgs[1].id)),
        ("repo0".into(), Err("notfound")), // means repo0:latest
        (a.id.to_string(), Ok(&a.id)),
        (a.id.hex().to_owned(), Ok(&a.id)),
        (unique.to_owned(), Ok(&a.id)),
        (format!("sha256:{unique}"), Ok(&a.id)),
        (a.manifest.digest.to_string(), Ok(&a.id)),
        (format!("repo0@{}", a.manifest.digest), Ok(&a.id)),
        (Digest::sha256_of(b"nothing").to_string(), Err("notfound")),
        ("sha256:ab".into(), Err("short")),
        ("NOT VALID".into(), Err("invalid")),
    ];
    for (input, want) in cases {
        match (s.resolve(&input), want) {
            (Ok(rec), Ok(id)) => assert_eq!(&rec.id, id, "{input}"),
            (Err(StoreError::ImageNotFound { query }), Err("notfound")) => {
                assert_eq!(query, input)
            }
            (Err(e @ StoreError::PrefixTooShort { .. }), Err("short")) => {
                assert!(e.to_string().contains("at least 4"), "{e}")
            }
            (Err(StoreError::InvalidQuery { .. }), Err("invalid")) => {}
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }
}

/// A zero-layer image whose config carries `label`.
fn zero_layer_config(label: u32) -> String {
    format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"n":"{label}"}}}}}}"#
    )
}

#[test]
fn ambiguous_prefix_lists_candidates() {
    let (_t, s) = store();
    // Find two configs whose digests share 4 hex characters (a birthday search over 16
    // bits: a few hundred tries).
    let mut seen = std::collections::HashMap::<String, String>::new();
    let (c1, c2, prefix) = (0..1_000_000u32)
        .find_map(|i| {
            let c = zero_layer_config(i);
            let p = Digest::sha256_of(c.as_bytes()).hex()[..4].to_owned();
            seen.insert(p.clone(), c.clone()).map(|first| (first, c, p))
        })
        .unwrap();
    let mut ids = Vec::new();
    for config in [&c1, &c2] {
        let d = Digest::sha256_of(config.as_bytes());
        s.put_blob(&d, config.as_bytes()).unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":{}}},"layers":[]}}"#,
            config.len()
        );
        let md = Digest::sha256_of(manifest.as_bytes());
        s.put_blob(&md, manifest.as_bytes()).unwrap();
        s.commit_image(ImageCommit {
            name: None,
            manifest: hoist_types::Descriptor::new(
                MediaType::OciManifest,
                md,
                manifest.len() as u64,
            ),
            index: None,
            source: None,
        })
        .unwrap();
        ids.push(d);
    }
    for q in [prefix.clone(), format!("sha256:{prefix}")] {
        match s.resolve(&q) {
            Err(e @ StoreError::AmbiguousPrefix { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&ids[0].to_string()), "{msg}");
                assert!(msg.contains(&ids[1].to_string()), "{msg}");
            }
            other => panic!("{q}: {other:?}"),
        }
    }
    assert_eq!(s.resolve(&ids[0].hex()[..20]).unwrap().id, ids[0]);
    // rmi with an ambiguous prefix removes nothing.
    assert!(s.remove_image(&prefix, true).is_err());
    assert_eq!(s.images().unwrap().len(), 2);
}

#[test]
fn tag_untag_remove() {
    let (_t, s) = store();
    let b = build(&s, &Spec::new("t", &[b"t1"]));
    let other = build(&s, &Spec::new("o", &[b"o1"]));
    let rec = commit(&s, &b, Some("alpine"));
    let orec = commit(&s, &other, Some("other"));

    s.tag("alpine", &r("127.0.0.1:5000/ns/repo:tag")).unwrap();
    s.tag(&rec.id.hex()[..8], &r("mine:v1")).unwrap();
    assert_eq!(s.resolve("127.0.0.1:5000/ns/repo:tag").unwrap().id, rec.id);
    assert_eq!(
        index_names(s.root()),
        [
            "127.0.0.1:5000/ns/repo:tag",
            "docker.io/library/alpine:latest",
            "docker.io/library/mine:v1",
            "docker.io/library/other:latest",
        ]
    );
    // A digest is not a tag; unknown images and names are errors naming them.
    let dref = r(&format!("alpine@{}", rec.id));
    assert!(matches!(
        s.tag("alpine", &dref),
        Err(StoreError::NotATag { .. })
    ));
    let e = s.tag("nosuch", &r("x")).unwrap_err();
    assert!(e.to_string().contains("nosuch"), "{e}");
    let e = s.untag(&r("nosuch:1")).unwrap_err();
    assert!(e.to_string().contains("docker.io/library/nosuch:1"), "{e}");

    // Move a tag by tagging.
    s.tag("other", &r("mine:v1")).unwrap();
    assert_eq!(s.resolve("mine:v1").unwrap().id, orec.id);
    s.untag(&r("mine:v1")).unwrap();
    assert!(s.resolve("mine:v1").is_err());
    assert_eq!(s.image(&orec.id).unwrap().unwrap().names, vec![r("other")]);

    // rmi by ID with several names needs force.
    let e = s.remove_image(&rec.id.to_string(), false).unwrap_err();
    assert!(matches!(e, StoreError::MultipleNames { .. }), "{e}");
    assert!(e.to_string().contains("docker.io/library/alpine:latest"));
    // rmi by name untags; the image stays while it has a name.
    let rep = s.remove_image("alpine", false).unwrap();
    assert_eq!(
        rep,
        RemoveReport {
            untagged: vec![r("alpine")],
            deleted: vec![]
        }
    );
    // The last name deletes it.
    let rep = s.remove_image("127.0.0.1:5000/ns/repo:tag", false).unwrap();
    assert_eq!(rep.deleted, vec![rec.id.clone()]);
    assert_eq!(s.image(&rec.id).unwrap(), None);
    // Blobs stay for GC.
    assert!(s.has_blob(&b.manifest.digest).unwrap().is_some());
    assert_eq!(index_names(s.root()), ["docker.io/library/other:latest"]);

    // rmi by ID with one name; force removes all names.
    s.tag("other", &r("other:2")).unwrap();
    let rep = s.remove_image(&orec.id.hex()[..6], true).unwrap();
    assert_eq!(rep.untagged, vec![r("other:2"), r("other")]);
    assert_eq!(rep.deleted, vec![orec.id.clone()]);
    assert!(s.images().unwrap().is_empty());
    assert!(index_names(s.root()).is_empty());

    // rmi of a dangling image by ID; rmi of a name@digest.
    let d = build(&s, &Spec::new("d", &[b"d1"]));
    let drec = commit(&s, &d, Some("dang"));
    s.untag(&r("dang")).unwrap();
    assert!(s.image(&drec.id).unwrap().unwrap().names.is_empty());
    let rep = s.remove_image(&drec.id.to_string(), false).unwrap();
    assert_eq!(rep.deleted, vec![drec.id.clone()]);
    let drec = commit(&s, &d, Some("dang"));
    let by_digest = format!("dang@{}", d.manifest.digest);
    let rep = s.remove_image(&by_digest, false).unwrap();
    assert!(rep.deleted.is_empty(), "still tagged");
    assert!(s.image(&drec.id).unwrap().unwrap().repo_digests.is_empty());
    // Gone already: a second time finds nothing to untag.
    assert!(matches!(
        s.remove_image(&by_digest, false),
        Err(StoreError::ImageNotFound { .. })
    ));
    s.untag(&r("dang")).unwrap();
    let rep = s.remove_image(&by_digest, false).unwrap();
    assert_eq!(rep.deleted, vec![drec.id]);
    assert!(matches!(
        s.remove_image("dang", false),
        Err(StoreError::ImageNotFound { .. })
    ));
}

#[test]
fn parent_and_children() {
    let (_t, s) = store();
    let base = commit(&s, &build(&s, &Spec::new("base", &[b"L1"])), Some("debian"));
    let mid = commit(
        &s,
        &build(&s, &Spec::new("mid", &[b"L1", b"L2"])),
        Some("mid"),
    );
    let app = commit(
        &s,
        &build(&s, &Spec::new("app", &[b"L1", b"L2", b"L3"])),
        Some("app"),
    );
    let sibling = commit(
        &s,
        &build(&s, &Spec::new("sib", &[b"L1", b"L9"])),
        Some("sib"),
    );
    let stranger = commit(
        &s,
        &build(&s, &Spec::new("stranger", &[b"L9"])),
        Some("stranger"),
    );
    let built = commit(
        &s,
        &build(
            &s,
            &Spec {
                parent: Some(sibling.id.clone()),
                ..Spec::new("built", &[b"L1", b"L2", b"L3", b"L4"])
            },
        ),
        Some("built"),
    );
    let cases = [
        (&base, None),
        (&mid, Some(&base.id)),
        (&app, Some(&mid.id)),
        (&sibling, Some(&base.id)),
        (&stranger, None),
        (&built, Some(&sibling.id)),
    ];
    for (rec, want) in cases {
        assert_eq!(s.parent(&rec.id).unwrap().as_ref(), want, "{:?}", rec.names);
    }
    let mut want = vec![mid.id.clone(), sibling.id.clone()];
    want.sort();
    assert_eq!(s.children(&base.id).unwrap(), want);
    assert_eq!(s.children(&sibling.id).unwrap(), vec![built.id.clone()]);
    assert!(s.children(&app.id).unwrap().is_empty());
    assert!(matches!(
        s.parent(&Digest::sha256_of(b"none")),
        Err(StoreError::ImageNotFound { .. })
    ));
}

#[test]
fn foreign_index_entries_survive() {
    let (_t, s) = store();
    let b = build(&s, &Spec::new("f", &[b"f1"]));
    // Another tool adds an entry by hand (as skopeo copy … oci:ROOT:foreign would).
    let mut idx: serde_json::Value =
        serde_json::from_slice(&fs::read(s.root().join("index.json")).unwrap()).unwrap();
    let mut entry = serde_json::to_value(&b.manifest).unwrap();
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "foreign"});
    idx["manifests"].as_array_mut().unwrap().push(entry);
    fs::write(
        s.root().join("index.json"),
        serde_json::to_vec(&idx).unwrap(),
    )
    .unwrap();
    commit(&s, &b, Some("ours"));
    assert_eq!(
        index_names(s.root()),
        ["docker.io/library/ours:latest", "foreign"]
    );
    assert_eq!(s.index_ref_names().unwrap().len(), 2);
}

#[test]
fn crash_mid_tag_move_is_resolved_and_repaired() {
    let (_t, s) = store();
    let v1 = commit(&s, &build(&s, &Spec::new("v1", &[b"1"])), Some("app"));
    let v2 = commit(&s, &build(&s, &Spec::new("v2", &[b"2"])), Some("other"));
    // Simulate a crash while moving `app` to v2: v2's record was written with the name,
    // v1's record and index.json were not.
    let path = s
        .root()
        .join(format!("hoist/images/sha256-{}.json", v2.id.hex()));
    let mut rec: ImageRecord = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    rec.names.push(r("app"));
    fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();

    // index.json, written last, still says v1: the move did not happen.
    assert_eq!(s.resolve("app").unwrap().id, v1.id);
    let names: Vec<usize> = s.images().unwrap().iter().map(|i| i.names.len()).collect();
    assert_eq!(names, [1, 1]);
    // The next change repairs the records on disk.
    s.tag("other", &r("other:2")).unwrap();
    let rec: ImageRecord = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(rec.names, vec![r("other:2"), r("other")]);
    assert_eq!(
        index_names(s.root()),
        [
            "docker.io/library/app:latest",
            "docker.io/library/other:2",
            "docker.io/library/other:latest"
        ]
    );
}
