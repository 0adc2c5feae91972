//! Manifests and indexes: parsed from the exact bytes served, classified strictly.
//!
//! The raw bytes stay the source of truth (house rule 4). These structs are read-only
//! views used to walk the graph; nothing here re-serialises a document that is stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema1::Schema1Manifest;
use crate::{Descriptor, Digest, MediaType, Platform, TypeError};

/// Largest manifest or config accepted, in bytes (guide §4).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;
/// Largest config accepted, in bytes.
pub const MAX_CONFIG_SIZE: u64 = 4 * 1024 * 1024;
/// Largest token response or error body read, in bytes.
pub const MAX_SMALL_BODY: u64 = 1024 * 1024;
/// How deep indexes may nest inside indexes.
pub const MAX_INDEX_DEPTH: usize = 4;

/// An image manifest: OCI or Docker schema 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The media type the document declares, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
    /// Subject, for referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageManifest {
    /// This image manifest as an OCI image manifest over the same config and layer blobs:
    /// the manifest's media type becomes `application/vnd.oci.image.manifest.v1+json`,
    /// the config's and layers' are mapped by [`MediaType::docker_to_oci`], every other
    /// field (digests, sizes, `urls`, annotations, subject) is kept. The bytes are
    /// compact JSON in the field order of Go's image-spec types, which is what skopeo
    /// writes when it converts a Docker schema 2 image to OCI, so the result (and its
    /// digest) is a pure function of the input. Meant for Docker schema 2 manifests; an
    /// OCI manifest comes back re-serialised with its types unchanged.
    pub fn to_oci_bytes(&self) -> Vec<u8> {
        let map = |d: &Descriptor| Descriptor {
            media_type: d.media_type.docker_to_oci(),
            ..d.clone()
        };
        let oci = ImageManifest {
            schema_version: 2,
            media_type: Some(MediaType::OciManifest),
            artifact_type: self.artifact_type.clone(),
            config: map(&self.config),
            layers: self.layers.iter().map(map).collect(),
            subject: self.subject.clone(),
            annotations: self.annotations.clone(),
        };
        serde_json::to_vec(&oci).expect("a manifest serialises")
    }
}

/// An OCI index or a Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The media type the document declares, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The entries.
    pub manifests: Vec<Descriptor>,
    /// Subject, for referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageIndex {
    /// The entry to use for `want` (an image manifest, or a nested index to follow), by
    /// the one rule of [`choose_entry`](crate::choose_entry); the error lists every entry
    /// and why it was passed over.
    pub fn choose(&self, want: &Platform) -> Result<&Descriptor, Box<crate::NoPlatformMatch>> {
        crate::choose_entry(&self.manifests, want)
    }
}

/// A parsed manifest of any supported kind.
// Short-lived values, matched once: boxing the common variants buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An image manifest (OCI or Docker schema 2).
    Image(ImageManifest),
    /// An index or manifest list.
    Index(ImageIndex),
    /// Docker schema 1 (read-only; converted before storing).
    Schema1(Box<Schema1Manifest>),
}

/// Only the fields needed to classify a document.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
    fs_layers: Option<serde_json::Value>,
}

impl Manifest {
    /// Parse the exact bytes of a manifest.
    ///
    /// `declared` is the `Content-Type` the server sent (or the media type of the
    /// descriptor that pointed here). The result carries the effective media type: the
    /// document's own `mediaType` when present, else the declared one, else the OCI type
    /// for the detected kind. A document that has both `manifests` and `layers`, or whose
    /// own media type contradicts a declared manifest media type, is rejected.
    pub fn parse(
        bytes: &[u8],
        declared: Option<&MediaType>,
    ) -> Result<(Manifest, MediaType), TypeError> {
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(TypeError::TooLarge {
                what: "manifest",
                size: bytes.len() as u64,
                limit: MAX_MANIFEST_SIZE,
            });
        }
        crate::check_utf8(bytes, "manifest")?;
        let probe: Probe = serde_json::from_slice(bytes).map_err(|source| TypeError::Json {
            what: "manifest",
            source,
        })?;
        if probe.manifests.is_some() && (probe.layers.is_some() || probe.config.is_some()) {
            return Err(TypeError::InvalidManifest {
                reason: "document has both `manifests` and `layers`/`config`".into(),
            });
        }
        let own = probe.media_type.as_deref().map(MediaType::parse);
        if let (Some(own), Some(decl)) = (&own, declared)
            && decl.is_manifest()
            && own != decl
        {
            return Err(TypeError::MediaTypeMismatch {
                declared: decl.to_string(),
                document: own.to_string(),
            });
        }
        let declared_manifest = declared.filter(|d| d.is_manifest()).cloned();
        if probe.schema_version == Some(1) || probe.fs_layers.is_some() {
            let m = Schema1Manifest::parse(bytes)?;
            let mt = own
                .or(declared_manifest)
                .filter(MediaType::is_schema1)
                .unwrap_or(MediaType::DockerManifestV1Signed);
            return Ok((Manifest::Schema1(Box::new(m)), mt));
        }
        if probe.schema_version != Some(2) {
            return Err(TypeError::InvalidManifest {
                reason: format!(
                    "unsupported schemaVersion {:?} (want 1 or 2)",
                    probe.schema_version
                ),
            });
        }
        let mt = own.or(declared_manifest);
        if probe.manifests.is_some() || mt.as_ref().is_some_and(MediaType::is_index) {
            let idx: ImageIndex =
                serde_json::from_slice(bytes).map_err(|source| TypeError::Json {
                    what: "index",
                    source,
                })?;
            let mt = mt.unwrap_or(MediaType::OciIndex);
            if !mt.is_index() {
                return Err(TypeError::InvalidManifest {
                    reason: format!("document lists `manifests` but its media type is {mt}"),
                });
            }
            return Ok((Manifest::Index(idx), mt));
        }
        let m: ImageManifest = serde_json::from_slice(bytes).map_err(|source| TypeError::Json {
            what: "image manifest",
            source,
        })?;
        let mt = mt.unwrap_or(MediaType::OciManifest);
        if !mt.is_image_manifest() {
            return Err(TypeError::InvalidManifest {
                reason: format!("document has `layers` but its media type is {mt}"),
            });
        }
        Ok((Manifest::Image(m), mt))
    }

    /// The digest identifying these bytes: sha256 of the bytes, except for signed schema 1,
    /// whose digest covers the payload without its signatures.
    pub fn digest_of(bytes: &[u8], media_type: &MediaType) -> Result<Digest, TypeError> {
        if media_type.is_schema1() {
            Ok(Digest::sha256_of(&crate::schema1::payload(bytes)?))
        } else {
            Ok(Digest::sha256_of(bytes))
        }
    }

    /// Verify that `bytes` match `expected`, using `expected`'s algorithm (and, for signed
    /// schema 1, hashing the payload without its signatures).
    ///
    /// # Errors
    ///
    /// [`TypeError::DigestMismatch`] with both digests (its
    /// [`mismatch()`](TypeError::mismatch) gives the shared [`Mismatch`](crate::Mismatch));
    /// [`TypeError::Schema1`] when a schema 1 manifest's signed payload cannot be found.
    ///
    /// ```
    /// use hoist_types::{Digest, Manifest, MediaType, Mismatch};
    ///
    /// let bytes = br#"{"schemaVersion":2,"manifests":[]}"#;
    /// let good = Digest::sha256_of(bytes);
    /// Manifest::verify_digest(bytes, &MediaType::OciIndex, &good)?;
    ///
    /// let wrong = Digest::sha256_of(b"something else");
    /// let err = Manifest::verify_digest(bytes, &MediaType::OciIndex, &wrong).unwrap_err();
    /// assert!(matches!(err.mismatch(), Some(Mismatch::Digest { actual, .. }) if actual == good));
    /// # Ok::<(), hoist_types::TypeError>(())
    /// ```
    pub fn verify_digest(
        bytes: &[u8],
        media_type: &MediaType,
        expected: &Digest,
    ) -> Result<(), TypeError> {
        let got = if media_type.is_schema1() {
            expected.compute_like(&crate::schema1::payload(bytes)?)
        } else {
            expected.compute_like(bytes)
        };
        if &got == expected {
            Ok(())
        } else {
            Err(TypeError::DigestMismatch {
                expected: expected.clone(),
                actual: got,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image_json(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|m| format!("\"mediaType\":\"{m}\","))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":10}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":20}}]}}"#
        )
    }

    /// Invalid UTF-8 inside a field hoist ignores (found by the `manifest` fuzz target):
    /// the JSON parser skips such strings unchecked, so the document is refused up front.
    #[test]
    fn refuses_non_utf8() {
        let doc = image_json(None);
        for (at, bytes) in [
            (doc.len() - 1, &b",\"x\":\"\xed\x6c\""[..]),
            (doc.len() - 1, &b",\"signatures\":[\"\xff\"]"[..]),
        ] {
            let mut v = doc.clone().into_bytes();
            v.splice(at..at, bytes.iter().copied());
            assert!(
                matches!(Manifest::parse(&v, None), Err(TypeError::NotUtf8 { .. })),
                "{}",
                String::from_utf8_lossy(&v)
            );
            let mut ok = doc.clone().into_bytes();
            ok.splice(at..at, b",\"x\":\"\xc3\xa9\"".iter().copied());
            assert!(Manifest::parse(&ok, None).is_ok());
        }
        assert!(matches!(
            crate::ImageConfig::parse(b"{\"rootfs\":{},\"z\":\"\x80\"}"),
            Err(TypeError::NotUtf8 { offset: 18, .. })
        ));
    }

    #[test]
    fn classify_table() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        let docker = "application/vnd.docker.distribution.manifest.v2+json";
        let cases: Vec<(String, Option<MediaType>, Result<MediaType, ()>)> = vec![
            (image_json(Some(oci)), None, Ok(MediaType::OciManifest)),
            (image_json(None), None, Ok(MediaType::OciManifest)),
            (
                image_json(None),
                Some(MediaType::DockerManifest),
                Ok(MediaType::DockerManifest),
            ),
            (
                image_json(Some(docker)),
                Some(MediaType::Other("application/json".into())),
                Ok(MediaType::DockerManifest),
            ),
            (
                image_json(Some(docker)),
                Some(MediaType::OciManifest),
                Err(()),
            ),
            (image_json(None), Some(MediaType::OciIndex), Err(())),
            (
                format!(
                    r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{oci}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
                ),
                None,
                Ok(MediaType::OciIndex),
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"manifests":[],"layers":[],"config":{{"mediaType":"x","digest":"{D1}","size":1}}}}"#
                ),
                None,
                Err(()),
            ),
            (r#"{"schemaVersion":3}"#.into(), None, Err(())),
            ("not json".into(), None, Err(())),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:../../etc","size":1},"layers":[]}"#.to_string(),
                None,
                Err(()),
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{D1}","size":-1}},"layers":[]}}"#
                ),
                None,
                Err(()),
            ),
        ];
        for (i, (doc, declared, want)) in cases.into_iter().enumerate() {
            let got = Manifest::parse(doc.as_bytes(), declared.as_ref()).map(|(_, mt)| mt);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "case {i}"),
                (Err(_), Err(())) => {}
                (g, w) => panic!("case {i}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn docker_manifest_to_oci_bytes() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":10,"digest":"{D1}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":20,"digest":"{D2}"}},{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","size":30,"digest":"{D1}","urls":["https://example.invalid/l"]}}]}}"#
        );
        let (Manifest::Image(m), _) = Manifest::parse(doc.as_bytes(), None).unwrap() else {
            panic!("not an image manifest")
        };
        let want = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":10}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":20}},{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{D1}","size":30,"urls":["https://example.invalid/l"]}}]}}"#
        );
        let got = m.to_oci_bytes();
        assert_eq!(String::from_utf8(got.clone()).unwrap(), want);
        // It reads back as an OCI manifest over the same blobs, and converting that again
        // changes nothing (deterministic bytes, so a deterministic digest).
        let (Manifest::Image(back), mt) = Manifest::parse(&got, None).unwrap() else {
            panic!("not an image manifest")
        };
        assert_eq!(mt, MediaType::OciManifest);
        assert_eq!(back.config.digest, m.config.digest);
        assert_eq!(back.to_oci_bytes(), got);
    }

    #[test]
    fn too_large() {
        let big = vec![b' '; MAX_MANIFEST_SIZE as usize + 1];
        assert!(matches!(
            Manifest::parse(&big, None),
            Err(TypeError::TooLarge { .. })
        ));
    }

    #[test]
    fn choose_platform() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        let doc = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"{oci}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{oci}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let (Manifest::Index(idx), _) = Manifest::parse(doc.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        let p = |s: &str| s.parse::<Platform>().unwrap();
        assert_eq!(
            idx.choose(&p("linux/amd64")).unwrap().digest.to_string(),
            D2
        );
        assert_eq!(
            idx.choose(&p("linux/arm64")).unwrap().digest.to_string(),
            D1
        );
        assert_eq!(idx.choose(&p("linux/s390x")).unwrap_err().entries.len(), 2);
    }
}
