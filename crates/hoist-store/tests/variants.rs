//! Several manifests of one image (one config): each name keeps the manifest (and index)
//! it was committed with.

mod common;

use std::fs;

use common::{Spec, build, build_index, commit, r, store};
use hoist_store::{ImageCommit, ResolvedImage, Store};
use hoist_types::{Descriptor, Digest, MediaType};

/// The Docker schema 2 twin of an OCI image: same config and layers, other manifest.
fn docker_twin(s: &Store, b: &common::Built) -> Descriptor {
    let mut layers = b.layers.clone();
    for l in &mut layers {
        l.media_type = MediaType::DockerLayerGzip;
    }
    let mut config = b.config.clone();
    config.media_type = MediaType::DockerConfig;
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config,
        "layers": layers,
    }))
    .unwrap();
    let d = Digest::sha256_of(&bytes);
    s.put_blob(&d, &bytes).unwrap();
    Descriptor::new(MediaType::DockerManifest, d, bytes.len() as u64)
}

/// name → manifest digest, from `index.json` as raw JSON.
fn index_targets(s: &Store) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(s.root().join("index.json")).unwrap()).unwrap();
    let mut out: Vec<(String, String)> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                e["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn commit_with(s: &Store, name: &str, manifest: &Descriptor, index: Option<&Descriptor>) {
    s.commit_image(ImageCommit {
        name: Some(r(name)),
        manifest: manifest.clone(),
        index: index.cloned(),
        source: Some(name.to_owned()),
    })
    .unwrap();
}

fn resolved(s: &Store, q: &str) -> ResolvedImage {
    s.resolve_image(q).unwrap_or_else(|e| panic!("{q}: {e}"))
}

#[test]
fn two_manifests_one_config_two_tags() {
    let (_t, s) = store();
    let b = build(&s, &Spec::new("multi", &[b"layer-1", b"layer-22"]));
    let oci = b.manifest.clone();
    let docker = docker_twin(&s, &b);
    commit_with(&s, "127.0.0.1:5000/multi:latest", &oci, None);
    commit_with(&s, "127.0.0.1:5000/multi:v2s2", &docker, None);

    // One image, two manifests; each name keeps its own.
    let images = s.images().unwrap();
    assert_eq!(images.len(), 1);
    let rec = &images[0];
    assert_eq!(rec.variants().len(), 2);
    assert_eq!(rec.manifest, docker, "the latest commit");
    // The Docker manifest has an OCI view over the same blobs, which index.json lists.
    let view = rec.oci_view(&docker.digest).expect("a view").clone();
    assert_eq!(view.media_type, MediaType::OciManifest);
    assert!(
        rec.oci_view(&oci.digest).is_none(),
        "OCI manifests need none"
    );
    assert!(
        rec.blobs().contains(&view.digest),
        "the view is the image's"
    );
    let (parsed, mt) =
        hoist_types::Manifest::parse(&s.read_blob(&view.digest, 1 << 20).unwrap(), None).unwrap();
    let hoist_types::Manifest::Image(vm) = parsed else {
        panic!("not an image manifest")
    };
    assert_eq!(mt, MediaType::OciManifest);
    assert_eq!(vm.config.digest, b.config.digest);
    assert_eq!(vm.config.media_type, MediaType::OciConfig);
    assert_eq!(
        vm.layers.iter().map(|l| &l.digest).collect::<Vec<_>>(),
        b.layers.iter().map(|l| &l.digest).collect::<Vec<_>>()
    );
    assert!(
        vm.layers
            .iter()
            .all(|l| l.media_type == MediaType::OciLayerGzip)
    );
    assert_eq!(
        index_targets(&s),
        vec![
            ("127.0.0.1:5000/multi:latest".into(), oci.digest.to_string()),
            ("127.0.0.1:5000/multi:v2s2".into(), view.digest.to_string()),
        ]
    );
    let cases: Vec<(String, &Descriptor)> = vec![
        ("127.0.0.1:5000/multi:latest".into(), &oci),
        ("127.0.0.1:5000/multi".into(), &oci),
        ("127.0.0.1:5000/multi:v2s2".into(), &docker),
        (oci.digest.to_string(), &oci),
        (docker.digest.to_string(), &docker),
        (format!("127.0.0.1:5000/multi@{}", oci.digest), &oci),
        (format!("127.0.0.1:5000/multi@{}", docker.digest), &docker),
        (b.config.digest.to_string(), &docker),
        (b.config.digest.hex()[..12].to_owned(), &docker),
        // The view's digest reaches the Docker manifest it was made from.
        (view.digest.to_string(), &docker),
    ];
    for (q, want) in &cases {
        let got = resolved(&s, q);
        assert_eq!(&got.manifest, *want, "{q}");
        assert_eq!(got.index, None, "{q}");
        assert_eq!(got.record.manifest, **want, "{q}: the record is pinned");
        assert_eq!(s.resolve(q).unwrap().manifest, **want, "{q}");
    }
    let l = resolved(&s, "127.0.0.1:5000/multi:v2s2").record.layers;
    assert!(l.iter().all(|l| l.media_type == MediaType::DockerLayerGzip));
    let l = resolved(&s, "127.0.0.1:5000/multi:latest").record.layers;
    assert!(l.iter().all(|l| l.media_type == MediaType::OciLayerGzip));

    // Committing the OCI manifest again (a re-pull) moves nothing else.
    commit_with(&s, "127.0.0.1:5000/multi:latest", &oci, None);
    assert_eq!(resolved(&s, "127.0.0.1:5000/multi:v2s2").manifest, docker);
    assert_eq!(resolved(&s, &b.config.digest.to_string()).manifest, oci);

    // A tag made from a name points at that name's manifest.
    s.tag("127.0.0.1:5000/multi:v2s2", &r("copy:1")).unwrap();
    s.tag(&oci.digest.to_string(), &r("copy:2")).unwrap();
    assert_eq!(resolved(&s, "copy:1").manifest, docker);
    assert_eq!(resolved(&s, "copy:2").manifest, oci);
    let t = index_targets(&s);
    assert!(t.contains(&("docker.io/library/copy:1".into(), view.digest.to_string())));
    assert!(t.contains(&("docker.io/library/copy:2".into(), oci.digest.to_string())));

    // Untagging drops the name's target; the rest stay put.
    s.untag(&r("127.0.0.1:5000/multi:v2s2")).unwrap();
    let rec = s.image(&b.config.digest).unwrap().unwrap();
    assert!(
        rec.targets
            .iter()
            .all(|t| t.name != r("127.0.0.1:5000/multi:v2s2"))
    );
    assert_eq!(resolved(&s, "copy:1").manifest, docker);
    assert_eq!(resolved(&s, "127.0.0.1:5000/multi:latest").manifest, oci);
    // Both manifests stay recorded: their blobs are the image's.
    for d in [&oci.digest, &docker.digest, &b.config.digest] {
        assert!(rec.blobs().contains(d), "{d}");
    }
}

#[test]
fn one_manifest_through_two_indexes() {
    let (_t, s) = store();
    let amd = build(&s, &Spec::new("amd", &[b"a-layer"]));
    let mut arm_spec = Spec::new("arm", &[b"arm-layer"]);
    arm_spec.arch = "arm64";
    let arm = build(&s, &arm_spec);
    let i1 = build_index(&s, &[(&amd, "amd64"), (&arm, "arm64")]);
    let i2 = build_index(&s, &[(&amd, "amd64")]);
    commit_with(&s, "x:one", &amd.manifest, Some(&i1));
    commit_with(&s, "x:two", &amd.manifest, Some(&i2));
    commit_with(&s, "x:bare", &amd.manifest, None);
    let cases: Vec<(&str, Option<&Descriptor>)> =
        vec![("x:one", Some(&i1)), ("x:two", Some(&i2)), ("x:bare", None)];
    for (q, want) in cases {
        let got = resolved(&s, q);
        assert_eq!(got.manifest, amd.manifest, "{q}");
        assert_eq!(got.index.as_ref(), want, "{q}");
    }
    assert_eq!(resolved(&s, &i1.digest.to_string()).index, Some(i1.clone()));
    assert_eq!(resolved(&s, &i2.digest.to_string()).index, Some(i2.clone()));
    // index.json lists each name with the image manifest it resolves to.
    let t = index_targets(&s);
    assert!(
        t.iter().all(|(_, d)| *d == amd.manifest.digest.to_string()),
        "{t:?}"
    );
    let rec = s.image(&amd.config.digest).unwrap().unwrap();
    for d in [&i1.digest, &i2.digest] {
        assert!(rec.blobs().contains(d), "{d}");
    }
}

#[test]
fn records_without_targets_are_read_and_their_names_kept() {
    let (_t, s) = store();
    let b = build(&s, &Spec::new("old", &[b"layer-x"]));
    commit(&s, &b, Some("old:latest"));
    // Rewrite the record as the previous version wrote it: no manifests, no targets.
    let path = s.root().join(format!(
        "hoist/images/sha256-{}.json",
        b.config.digest.hex()
    ));
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let obj = v.as_object_mut().unwrap();
    assert!(obj.remove("targets").is_some());
    assert!(
        obj.remove("manifests").is_none(),
        "one manifest: not written"
    );
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let s = Store::open(s.root()).unwrap();
    assert_eq!(resolved(&s, "old:latest").manifest, b.manifest);

    let docker = docker_twin(&s, &b);
    commit_with(&s, "old:v2s2", &docker, None);
    assert_eq!(resolved(&s, "old:latest").manifest, b.manifest);
    assert_eq!(resolved(&s, "old:v2s2").manifest, docker);
    let view = s
        .image(&b.config.digest)
        .unwrap()
        .unwrap()
        .oci_view(&docker.digest)
        .unwrap()
        .clone();
    assert_eq!(
        index_targets(&s),
        vec![
            (
                "docker.io/library/old:latest".into(),
                b.manifest.digest.to_string()
            ),
            ("docker.io/library/old:v2s2".into(), view.digest.to_string()),
        ]
    );
}

/// The zstd twin of an image: same config, each layer stored again under other bytes
/// (what a recompression makes), in another manifest. Returns the manifest and layers.
fn zstd_twin(s: &Store, b: &common::Built) -> (Descriptor, Vec<Descriptor>) {
    let layers: Vec<Descriptor> = b
        .layers
        .iter()
        .map(|l| {
            let bytes = format!("zstd of {}", l.digest).into_bytes();
            let d = Digest::sha256_of(&bytes);
            s.put_blob(&d, &bytes).unwrap();
            Descriptor::new(MediaType::OciLayerZstd, d, bytes.len() as u64)
        })
        .collect();
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": b.config,
        "layers": layers,
    }))
    .unwrap();
    let d = Digest::sha256_of(&bytes);
    s.put_blob(&d, &bytes).unwrap();
    (
        Descriptor::new(MediaType::OciManifest, d, bytes.len() as u64),
        layers,
    )
}

fn gc(s: &Store) -> hoist_store::GcReport {
    s.gc(&hoist_store::GcOptions::default()).unwrap()
}

fn assert_clean(s: &Store) {
    let f = s.fsck(&hoist_store::FsckOptions::default()).unwrap();
    assert!(f.is_clean(), "{:#?}", f.problems);
}

#[test]
fn a_manifest_no_name_reaches_leaves_the_record_and_gc_frees_its_layers() {
    let (_t, s) = store();
    let b = build(&s, &Spec::new("twins", &[b"layer-1", b"layer-22"]));
    let (zstd, zlayers) = zstd_twin(&s, &b);
    let (gzip_ref, zstd_ref) = ("127.0.0.1:5000/app:gzip", "127.0.0.1:5000/app:zstd");
    commit_with(&s, gzip_ref, &b.manifest, None);
    commit_with(&s, zstd_ref, &zstd, None);
    assert_eq!(s.images().unwrap()[0].variants().len(), 2);

    // rmi of the zstd name: the image stays (gzip names it), the zstd manifest goes.
    let rep = s.remove_image(zstd_ref, false).unwrap();
    assert!(rep.deleted.is_empty());
    let rec = s.image(&b.config.digest).unwrap().unwrap();
    assert_eq!(rec.variants().len(), 1, "{rec:#?}");
    assert_eq!(rec.manifest, b.manifest);
    assert!(!rec.blobs().contains(&zstd.digest));
    assert!(
        rec.repo_digests
            .iter()
            .all(|r| !r.ends_with(&zstd.digest.to_string())),
        "{:?}",
        rec.repo_digests
    );
    assert!(
        s.resolve(&zstd.digest.to_string()).is_err(),
        "nothing holds it"
    );
    let report = gc(&s);
    assert_eq!(report.blobs.count, 1 + zlayers.len(), "{report:#?}");
    for d in zlayers.iter().map(|l| &l.digest).chain([&zstd.digest]) {
        assert!(s.has_blob(d).unwrap().is_none(), "{d} freed");
    }
    for d in b
        .layers
        .iter()
        .map(|l| &l.digest)
        .chain([&b.manifest.digest, &b.config.digest])
    {
        assert!(s.has_blob(d).unwrap().is_some(), "{d} kept");
    }
    assert_clean(&s);

    // A tag moved off the zstd manifest: the same.
    let (zstd, zlayers) = zstd_twin(&s, &b);
    commit_with(&s, zstd_ref, &zstd, None);
    assert_eq!(s.images().unwrap()[0].variants().len(), 2);
    s.tag(gzip_ref, &r(zstd_ref)).unwrap();
    assert_eq!(resolved(&s, zstd_ref).manifest, b.manifest);
    assert_eq!(s.images().unwrap()[0].variants().len(), 1);
    assert_eq!(gc(&s).blobs.count, 1 + zlayers.len());
    assert_clean(&s);
}

#[test]
fn a_pull_by_digest_keeps_its_manifest_until_removed_by_digest() {
    let (_t, s) = store();
    let b = build(&s, &Spec::new("pinned", &[b"layer-1"]));
    let (zstd, zlayers) = zstd_twin(&s, &b);
    let repo = "127.0.0.1:5000/app";
    let by_digest = format!("{repo}@{}", zstd.digest);
    // A pull by digest (no name), then the same manifest by tag, and the gzip one.
    s.commit_image(ImageCommit {
        name: None,
        manifest: zstd.clone(),
        index: None,
        source: Some(by_digest.clone()),
    })
    .unwrap();
    commit_with(&s, &format!("{repo}:zstd"), &zstd, None);
    commit_with(&s, &format!("{repo}:gzip"), &b.manifest, None);
    let rec = s.image(&b.config.digest).unwrap().unwrap();
    assert_eq!(rec.digest_refs, vec![zstd.digest.clone()]);

    // Neither name's removal drops what the digest reference reaches, nor the image.
    s.remove_image(&format!("{repo}:zstd"), false).unwrap();
    let rep = s.remove_image(&format!("{repo}:gzip"), false).unwrap();
    assert!(rep.deleted.is_empty(), "a digest reference keeps the image");
    let rec = s.image(&b.config.digest).unwrap().unwrap();
    assert!(rec.names.is_empty());
    assert_eq!(rec.variants().len(), 1, "the gzip manifest went");
    assert_eq!(resolved(&s, &by_digest).manifest, zstd);
    assert_eq!(
        gc(&s).blobs.count,
        1 + b.layers.len(),
        "gzip manifest and layers"
    );
    for d in zlayers.iter().map(|l| &l.digest) {
        assert!(s.has_blob(d).unwrap().is_some(), "{d} kept");
    }
    assert_clean(&s);

    // Removed by digest: the image goes.
    let rep = s.remove_image(&by_digest, false).unwrap();
    assert_eq!(rep.deleted, vec![b.config.digest.clone()]);
    assert!(s.images().unwrap().is_empty());
    assert_eq!(gc(&s).blobs.count, 2 + zlayers.len());
    assert_clean(&s);
}

#[test]
fn records_without_digest_refs_keep_every_unnamed_manifest() {
    let (_t, s) = store();
    let b = build(&s, &Spec::new("older", &[b"layer-1"]));
    let (zstd, _) = zstd_twin(&s, &b);
    commit_with(&s, "app:gzip", &b.manifest, None);
    commit_with(&s, "app:zstd", &zstd, None);
    // As an older hoist left it: no digest_refs, and the zstd name gone but its manifest
    // still listed (it may have been pulled by digest: nothing says it was not).
    let path = s.root().join(format!(
        "hoist/images/sha256-{}.json",
        b.config.digest.hex()
    ));
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let obj = v.as_object_mut().unwrap();
    assert!(obj.remove("digest_refs").is_some());
    obj.insert(
        "names".into(),
        serde_json::json!(["docker.io/library/app:gzip"]),
    );
    obj["targets"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["name"] == "docker.io/library/app:gzip");
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let s = Store::open(s.root()).unwrap();
    s.tag("app:gzip", &r("app:other")).unwrap();
    let rec = s.image(&b.config.digest).unwrap().unwrap();
    assert_eq!(rec.digest_refs, vec![zstd.digest.clone()]);
    assert_eq!(rec.variants().len(), 2);
}

/// Make the store look as an older hoist left a Docker image: no OCI view recorded or
/// stored, `index.json` naming the Docker manifest.
fn forget_view(s: &Store, id: &Digest, docker: &Descriptor, view: &Descriptor) {
    let path = s
        .root()
        .join(format!("hoist/images/sha256-{}.json", id.hex()));
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert!(v.as_object_mut().unwrap().remove("oci_views").is_some());
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    fs::remove_file(s.blob_path(&view.digest)).unwrap();
    let ipath = s.root().join("index.json");
    let mut idx: serde_json::Value = serde_json::from_slice(&fs::read(&ipath).unwrap()).unwrap();
    for e in idx["manifests"].as_array_mut().unwrap() {
        if e["digest"] == view.digest.to_string() {
            e["digest"] = docker.digest.to_string().into();
            e["size"] = docker.size.into();
            e["mediaType"] = docker.media_type.as_str().into();
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&idx).unwrap();
    bytes.push(b'\n');
    fs::write(&ipath, bytes).unwrap();
}

fn kinds(s: &Store, repair: bool) -> Vec<hoist_store::ProblemKind> {
    let mut opts = hoist_store::FsckOptions::default();
    opts.repair = repair;
    let f = s.fsck(&opts).unwrap();
    f.problems.iter().map(|p| p.kind).collect()
}

#[test]
fn a_docker_manifest_has_an_oci_view_that_fsck_checks_and_gc_keeps() {
    let (_t, s) = store();
    let b = build(&s, &Spec::new("docker", &[b"layer-1", b"layer-22"]));
    let docker = docker_twin(&s, &b);
    fs::remove_file(s.blob_path(&b.manifest.digest)).unwrap(); // only the Docker one
    commit_with(&s, "app:v2s2", &docker, None);
    let view = s
        .image(&b.config.digest)
        .unwrap()
        .unwrap()
        .oci_view(&docker.digest)
        .unwrap()
        .clone();
    let name = "docker.io/library/app:v2s2".to_owned();
    assert_eq!(
        index_targets(&s),
        vec![(name.clone(), view.digest.to_string())]
    );
    assert_eq!(gc(&s).blobs.count, 0, "the view is kept");
    assert_clean(&s);
    // The store's own reads keep the original manifest.
    assert_eq!(resolved(&s, "app:v2s2").manifest, docker);

    // Older stores: fsck finds the missing view, and --repair writes it.
    forget_view(&s, &b.config.digest, &docker, &view);
    assert_eq!(kinds(&s, false), vec![hoist_store::ProblemKind::OciView]);
    assert_eq!(kinds(&s, true), vec![hoist_store::ProblemKind::OciView]);
    assert_clean(&s);
    assert_eq!(
        index_targets(&s),
        vec![(name.clone(), view.digest.to_string())]
    );

    // ... and the next change of names writes it too.
    forget_view(&s, &b.config.digest, &docker, &view);
    s.tag("app:v2s2", &r("app:again")).unwrap();
    assert_eq!(
        index_targets(&s),
        vec![
            (
                "docker.io/library/app:again".to_owned(),
                view.digest.to_string()
            ),
            (name.clone(), view.digest.to_string()),
        ]
    );
    assert_clean(&s);

    // A corrupt view is written again.
    fs::write(s.blob_path(&view.digest), vec![b'x'; view.size as usize]).unwrap();
    let k = kinds(&s, true);
    assert!(k.contains(&hoist_store::ProblemKind::OciView), "{k:?}");
    assert_clean(&s);

    // The view goes with the image.
    s.remove_image(&b.config.digest.to_string(), true).unwrap();
    assert!(gc(&s).blobs.count >= 4);
    assert!(s.has_blob(&view.digest).unwrap().is_none());
    assert_clean(&s);
}
