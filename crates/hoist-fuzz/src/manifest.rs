//! The `manifest` target: manifest and index classification, digests of served bytes, and
//! Docker schema 1 reading and conversion.

use hoist_types::schema1::{self, Schema1Manifest};
use hoist_types::{
    Digest, ImageConfig, ImageIndex, ImageManifest, MAX_MANIFEST_SIZE, MediaType, Platform,
};
use hoist_types::{Manifest, MediaType as M};
use serde_json::Value;

/// The media types a server may declare for a document: none, each manifest kind, and one
/// that is not a manifest (which must be ignored).
const HINTS: &[Option<MediaType>] = &[
    None,
    Some(M::OciManifest),
    Some(M::OciIndex),
    Some(M::DockerManifest),
    Some(M::DockerManifestList),
    Some(M::DockerManifestV1Signed),
    Some(M::DockerManifestV1),
    Some(M::OciConfig),
];

/// Classifies `data` with and without each media type hint, and checks what is accepted:
/// the size limit, no document with both `manifests` and `layers`, media types consistent
/// with the kind and with the declared type, digests of the exact bytes, a serialisation
/// round trip, and for schema 1 a conversion that gives a manifest and config hoist reads.
pub fn check(data: &[u8]) {
    for hint in HINTS {
        classify(data, hint.as_ref());
    }
    signed_payload(data);
}

fn present(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

fn classify(data: &[u8], declared: Option<&MediaType>) {
    let Ok((m, mt)) = Manifest::parse(data, declared) else {
        return;
    };
    let what = format!("{} bytes declared as {declared:?}", data.len());
    assert!(
        data.len() as u64 <= MAX_MANIFEST_SIZE,
        "{what}: over the size limit"
    );
    let v: Value = serde_json::from_slice(data).expect("an accepted manifest is JSON");
    assert!(
        !(present(&v, "manifests") && (present(&v, "layers") || present(&v, "config"))),
        "{what}: accepted a document with both `manifests` and `layers`/`config`"
    );
    let declared_manifest = declared.filter(|d| d.is_manifest());
    match &m {
        Manifest::Image(im) => {
            assert!(mt.is_image_manifest(), "{what}: image manifest typed {mt}");
            if let Some(d) = declared_manifest {
                assert_eq!(&mt, d, "{what}: the declared manifest type is kept");
            }
            image(im, &mt, &what);
        }
        Manifest::Index(ix) => {
            assert!(mt.is_index(), "{what}: index typed {mt}");
            if let Some(d) = declared_manifest {
                assert_eq!(&mt, d, "{what}: the declared manifest type is kept");
            }
            index(ix, &mt, &what);
        }
        Manifest::Schema1(s1) => {
            assert!(mt.is_schema1(), "{what}: schema 1 typed {mt}");
            if let Some(d) = declared_manifest.filter(|d| d.is_schema1()) {
                assert_eq!(&mt, d, "{what}: the declared schema 1 type is kept");
            }
            schema1(s1, &what);
        }
    }
    if !mt.is_schema1() {
        let d = Manifest::digest_of(data, &mt).expect("a schema 2 digest never fails");
        assert_eq!(
            d,
            Digest::sha256_of(data),
            "{what}: digest of the exact bytes"
        );
        Manifest::verify_digest(data, &mt, &d).expect("bytes verify against their digest");
    }
}

/// An accepted document, serialised and parsed again, is the same document.
fn round_trip(m: &Manifest, ser: &[u8], mt: &MediaType, what: &str) {
    let (again, mt2) = Manifest::parse(ser, Some(mt))
        .unwrap_or_else(|e| panic!("{what}: the serialised document does not parse: {e}"));
    assert_eq!(&again, m, "{what}: serialisation round trip");
    assert_eq!(&mt2, mt, "{what}: media type after the round trip");
}

fn image(im: &ImageManifest, mt: &MediaType, what: &str) {
    assert_eq!(im.schema_version, 2, "{what}");
    if let Some(own) = &im.media_type {
        assert_eq!(own, mt, "{what}: the document's own media type is kept");
    }
    let ser = serde_json::to_vec(im).expect("a manifest serialises");
    round_trip(&Manifest::Image(im.clone()), &ser, mt, what);
}

fn index(ix: &ImageIndex, mt: &MediaType, what: &str) {
    assert_eq!(ix.schema_version, 2, "{what}");
    if let Some(own) = &ix.media_type {
        assert_eq!(own, mt, "{what}: the document's own media type is kept");
    }
    for want in [Platform::host(), Platform::new("linux", "arm", Some("v6"))] {
        match ix.choose(&want) {
            Ok(d) => {
                assert!(
                    d.media_type.is_manifest(),
                    "{what}: chose an entry that is no manifest"
                );
                assert!(
                    d.platform.as_ref().is_none_or(|p| want.matches(p)),
                    "{what}: chose an entry of another platform"
                );
            }
            Err(e) => assert_eq!(
                e.entries.len(),
                ix.manifests.len(),
                "{what}: the error lists every entry"
            ),
        }
    }
    let ser = serde_json::to_vec(ix).expect("an index serialises");
    round_trip(&Manifest::Index(ix.clone()), &ser, mt, what);
}

fn schema1(m: &Schema1Manifest, what: &str) {
    assert_eq!(m.schema_version, 1, "{what}");
    assert!(!m.fs_layers.is_empty() && m.fs_layers.len() == m.history.len());
    let layers = m
        .layers()
        .expect("an accepted schema 1 manifest has readable layers");
    assert_eq!(layers.len(), m.fs_layers.len());
    let content = m
        .content_layers()
        .expect("content layers of an accepted manifest");
    assert_eq!(content.len(), layers.iter().filter(|l| !l.empty).count());
    // Conversion, with made-up diff IDs and sizes.
    let diff_ids: Vec<Digest> = (0..content.len())
        .map(|i| Digest::sha256_of(&i.to_le_bytes()))
        .collect();
    if let Some((_, fewer)) = diff_ids.split_last() {
        assert!(
            m.to_config(fewer).is_err(),
            "{what}: too few diff IDs accepted"
        );
    }
    let Ok(config) = m.to_config(&diff_ids) else {
        return;
    };
    let cfg = ImageConfig::parse(&config).unwrap_or_else(|e| {
        panic!("{what}: the config converted from schema 1 does not parse: {e}")
    });
    assert_eq!(cfg.rootfs.diff_ids, diff_ids, "{what}: converted diff IDs");
    assert_eq!(
        cfg.history.len(),
        layers.len(),
        "{what}: one history entry per layer"
    );
    assert_eq!(
        cfg.history.iter().filter(|h| !h.empty_layer).count(),
        content.len(),
        "{what}: non-empty history entries are the content layers"
    );
    let sizes: Vec<u64> = (0..content.len() as u64).collect();
    let converted = m
        .to_manifest(&config, &sizes)
        .unwrap_or_else(|e| panic!("{what}: to_manifest after to_config: {e}"));
    assert_eq!(converted.config.digest, Digest::sha256_of(&config));
    assert_eq!(converted.config.size, config.len() as u64);
    let got: Vec<&Digest> = converted.layers.iter().map(|l| &l.digest).collect();
    assert_eq!(
        got,
        content.iter().collect::<Vec<_>>(),
        "{what}: converted layers"
    );
    let bytes = serde_json::to_vec(&converted).expect("a manifest serialises");
    match Manifest::parse(&bytes, Some(&MediaType::DockerManifest)) {
        Ok((Manifest::Image(back), MediaType::DockerManifest)) => {
            assert_eq!(back, converted, "{what}: converted manifest round trip");
        }
        other => panic!("{what}: the converted manifest reads back as {other:?}"),
    }
    cfg.check_layer_count(converted.layers.len())
        .expect("the converted manifest and config agree");
}

/// `payload` on any document: an unsigned document is its own payload; a signed one's
/// payload is JSON without signatures and with the same layers.
fn signed_payload(data: &[u8]) {
    let Ok(p) = schema1::payload(data) else {
        return;
    };
    let v: Value = serde_json::from_slice(data).expect("payload() accepted non-JSON");
    if v.get("signatures").is_none() {
        assert_eq!(p, data, "an unsigned document is its own payload");
        return;
    }
    let pv: Value = serde_json::from_slice(&p).expect("a payload is JSON");
    assert!(
        pv.get("signatures").is_none(),
        "a payload has no signatures"
    );
    assert_eq!(
        pv.get("fsLayers"),
        v.get("fsLayers"),
        "a payload signs the layers"
    );
}
