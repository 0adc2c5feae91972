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
    assert_eq!(
        index_targets(&s),
        vec![
            ("127.0.0.1:5000/multi:latest".into(), oci.digest.to_string()),
            (
                "127.0.0.1:5000/multi:v2s2".into(),
                docker.digest.to_string()
            ),
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
    assert!(t.contains(&("docker.io/library/copy:1".into(), docker.digest.to_string())));
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
    assert_eq!(
        index_targets(&s),
        vec![
            (
                "docker.io/library/old:latest".into(),
                b.manifest.digest.to_string()
            ),
            (
                "docker.io/library/old:v2s2".into(),
                docker.digest.to_string()
            ),
        ]
    );
}
