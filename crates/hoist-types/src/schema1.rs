//! Docker schema 1 manifests: read, digest-verify, and convert to schema 2.
//!
//! Schema 1 is deprecated but still served by old registries. Its digest covers the
//! JSON payload without the JWS `signatures` block; the protected header of each
//! signature records where the payload ends (`formatLength`) and the bytes that
//! replace the signature block (`formatTail`). A schema 1 manifest is converted to a
//! Docker schema 2 manifest plus a synthesised image config before it is stored,
//! as Docker and containers/image do.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Descriptor, Digest, ImageManifest, MediaType, TypeError};

/// The digest of a gzip-compressed empty tar, used by schema 1 for empty layers.
pub const EMPTY_GZIP_LAYER: &str =
    "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";

/// A schema 1 manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schema1Manifest {
    /// Always 1.
    pub schema_version: u32,
    /// Repository name.
    #[serde(default)]
    pub name: String,
    /// Tag.
    #[serde(default)]
    pub tag: String,
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// Layers, top first.
    pub fs_layers: Vec<FsLayer>,
    /// History, top first, one entry per layer.
    pub history: Vec<V1History>,
}

/// One schema 1 layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsLayer {
    /// Digest of the compressed layer.
    pub blob_sum: Digest,
}

/// One schema 1 history entry: a JSON document in a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V1History {
    /// The v1 image JSON.
    pub v1_compatibility: String,
}

/// A schema 1 layer, bottom first, with whether it is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema1Layer {
    /// Digest of the compressed layer blob.
    pub blob_sum: Digest,
    /// Whether the layer is empty (`throwaway` or the empty gzip tar).
    pub empty: bool,
    /// The parsed v1 image JSON of this layer.
    pub v1: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Protected {
    format_length: usize,
    format_tail: String,
}

/// The signed payload of a schema 1 manifest: the bytes its digest covers.
/// An unsigned manifest is its own payload.
pub fn payload(bytes: &[u8]) -> Result<Vec<u8>, TypeError> {
    let bad = |reason: String| TypeError::Schema1 { reason };
    let v: Value = serde_json::from_slice(bytes).map_err(|source| TypeError::Json {
        what: "schema 1 manifest",
        source,
    })?;
    let Some(sigs) = v.get("signatures") else {
        return Ok(bytes.to_vec());
    };
    let sigs = sigs
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| bad("`signatures` is not a non-empty array".into()))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut result: Option<Vec<u8>> = None;
    for sig in sigs {
        let prot = sig
            .get("protected")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("signature without `protected` header".into()))?;
        let prot = b64
            .decode(prot.trim_end_matches('='))
            .map_err(|e| bad(format!("protected header is not base64url: {e}")))?;
        let prot: Protected =
            serde_json::from_slice(&prot).map_err(|e| bad(format!("protected header: {e}")))?;
        if prot.format_length > bytes.len() {
            return Err(bad("formatLength beyond the end of the manifest".into()));
        }
        let tail = b64
            .decode(prot.format_tail.trim_end_matches('='))
            .map_err(|e| bad(format!("formatTail is not base64url: {e}")))?;
        let mut p = bytes[..prot.format_length].to_vec();
        p.extend_from_slice(&tail);
        match &result {
            Some(prev) if prev != &p => {
                return Err(bad("signatures disagree about the payload".into()));
            }
            _ => result = Some(p),
        }
    }
    let p = result.unwrap_or_default();
    // The payload must itself be the manifest without signatures.
    let pv: Value = serde_json::from_slice(&p).map_err(|e| bad(format!("payload: {e}")))?;
    if pv.get("signatures").is_some() || pv.get("fsLayers") != v.get("fsLayers") {
        return Err(bad("payload does not match the signed manifest".into()));
    }
    Ok(p)
}

impl Schema1Manifest {
    /// Parse and check the structure: equal, non-empty layer and history lists, and
    /// each history entry a JSON object.
    pub fn parse(bytes: &[u8]) -> Result<Schema1Manifest, TypeError> {
        crate::check_utf8(bytes, "schema 1 manifest")?;
        let m: Schema1Manifest =
            serde_json::from_slice(bytes).map_err(|source| TypeError::Json {
                what: "schema 1 manifest",
                source,
            })?;
        if m.schema_version != 1 {
            return Err(TypeError::Schema1 {
                reason: format!("schemaVersion {} in a schema 1 document", m.schema_version),
            });
        }
        if m.fs_layers.is_empty() || m.fs_layers.len() != m.history.len() {
            return Err(TypeError::Schema1 {
                reason: format!(
                    "{} fsLayers but {} history entries",
                    m.fs_layers.len(),
                    m.history.len()
                ),
            });
        }
        // The config that conversion synthesises from the top layer's v1 JSON must be one
        // hoist reads; checked here, before any layer is fetched (found by the `manifest`
        // fuzz target: `"config": "a"` converted into a config nothing could parse).
        let placeholder = vec![Digest::sha256_of(b""); m.content_layers()?.len()];
        let config = m.to_config(&placeholder)?;
        crate::ImageConfig::parse(&config).map_err(|e| TypeError::Schema1 {
            reason: format!("the top layer's v1Compatibility is not a valid image config: {e}"),
        })?;
        Ok(m)
    }

    /// The layers bottom first, with their v1 JSON.
    pub fn layers(&self) -> Result<Vec<Schema1Layer>, TypeError> {
        let mut out = Vec::with_capacity(self.fs_layers.len());
        for (fs, h) in self.fs_layers.iter().zip(&self.history).rev() {
            let v1: Map<String, Value> =
                serde_json::from_str(&h.v1_compatibility).map_err(|e| TypeError::Schema1 {
                    reason: format!("v1Compatibility is not a JSON object: {e}"),
                })?;
            let empty = v1.get("throwaway").and_then(Value::as_bool) == Some(true)
                || fs.blob_sum.to_string() == EMPTY_GZIP_LAYER;
            out.push(Schema1Layer {
                blob_sum: fs.blob_sum.clone(),
                empty,
                v1,
            });
        }
        Ok(out)
    }

    /// The blobs that carry content, bottom first: what a pull must fetch.
    pub fn content_layers(&self) -> Result<Vec<Digest>, TypeError> {
        Ok(self
            .layers()?
            .into_iter()
            .filter(|l| !l.empty)
            .map(|l| l.blob_sum)
            .collect())
    }

    /// Synthesise the Docker image config. `diff_ids` are the uncompressed digests of
    /// [`content_layers`](Self::content_layers), in the same order.
    pub fn to_config(&self, diff_ids: &[Digest]) -> Result<Vec<u8>, TypeError> {
        let layers = self.layers()?;
        let n_content = layers.iter().filter(|l| !l.empty).count();
        if n_content != diff_ids.len() {
            return Err(TypeError::LayerCountMismatch {
                layers: n_content,
                diff_ids: diff_ids.len(),
            });
        }
        let top = layers.last().map(|l| l.v1.clone()).unwrap_or_default();
        let mut config = top;
        for k in ["id", "parent", "Size", "parent_id", "layer_id", "throwaway"] {
            config.remove(k);
        }
        let history: Vec<Value> = layers
            .iter()
            .map(|l| {
                let mut h = Map::new();
                for k in ["created", "author", "comment"] {
                    if let Some(v) = l.v1.get(k) {
                        h.insert(k.into(), v.clone());
                    }
                }
                let cmd =
                    l.v1.get("container_config")
                        .and_then(|c| c.get("Cmd"))
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(" ")
                        });
                if let Some(c) = cmd {
                    h.insert("created_by".into(), Value::String(c));
                }
                if l.empty {
                    h.insert("empty_layer".into(), Value::Bool(true));
                }
                Value::Object(h)
            })
            .collect();
        config.insert("history".into(), Value::Array(history));
        config.insert(
            "rootfs".into(),
            serde_json::json!({
                "type": "layers",
                "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        );
        if !config.contains_key("architecture") && !self.architecture.is_empty() {
            config.insert(
                "architecture".into(),
                Value::String(self.architecture.clone()),
            );
        }
        serde_json::to_vec(&Value::Object(config)).map_err(|source| TypeError::Json {
            what: "converted config",
            source,
        })
    }

    /// The Docker schema 2 manifest for the converted image. `layer_sizes` are the
    /// compressed sizes of [`content_layers`](Self::content_layers).
    pub fn to_manifest(
        &self,
        config: &[u8],
        layer_sizes: &[u64],
    ) -> Result<ImageManifest, TypeError> {
        let layers = self.content_layers()?;
        if layers.len() != layer_sizes.len() {
            return Err(TypeError::LayerCountMismatch {
                layers: layers.len(),
                diff_ids: layer_sizes.len(),
            });
        }
        Ok(ImageManifest {
            schema_version: 2,
            media_type: Some(MediaType::DockerManifest),
            artifact_type: None,
            config: Descriptor::new(
                MediaType::DockerConfig,
                Digest::sha256_of(config),
                config.len() as u64,
            ),
            layers: layers
                .into_iter()
                .zip(layer_sizes)
                .map(|(d, &s)| Descriptor::new(MediaType::DockerLayerGzip, d, s))
                .collect(),
            subject: None,
            annotations: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const L2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn unsigned() -> String {
        format!(
            r##"{{
   "schemaVersion": 1,
   "name": "library/x",
   "tag": "latest",
   "architecture": "amd64",
   "fsLayers": [
      {{"blobSum": "{EMPTY_GZIP_LAYER}"}},
      {{"blobSum": "{L2}"}},
      {{"blobSum": "{L1}"}}
   ],
   "history": [
      {{"v1Compatibility": "{{\"id\":\"c\",\"parent\":\"b\",\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Cmd\":[\"sh\"],\"Env\":[\"A=1\"]}},\"container_config\":{{\"Cmd\":[\"/bin/sh\",\"-c\",\"#(nop) CMD [\\\"sh\\\"]\"]}},\"created\":\"2020-01-03T00:00:00Z\",\"throwaway\":true}}"}},
      {{"v1Compatibility": "{{\"id\":\"b\",\"parent\":\"a\",\"created\":\"2020-01-02T00:00:00Z\",\"container_config\":{{\"Cmd\":[\"/bin/sh\",\"-c\",\"echo hi > /f\"]}}}}"}},
      {{"v1Compatibility": "{{\"id\":\"a\",\"created\":\"2020-01-01T00:00:00Z\"}}"}}
   ]
}}"##
        )
    }

    fn sign(doc: &str) -> String {
        // A JWS-like signature block spliced in before the final "\n}", as libtrust does.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let cut = doc.rfind('\n').unwrap();
        let tail = &doc[cut..];
        let prot = format!(
            r#"{{"formatLength":{},"formatTail":"{}","time":"2020-01-01T00:00:00Z"}}"#,
            cut,
            b64.encode(tail)
        );
        format!(
            "{},\n   \"signatures\": [{{\"header\":{{\"alg\":\"ES256\"}},\"signature\":\"AAAA\",\"protected\":\"{}\"}}]{}",
            &doc[..cut],
            b64.encode(prot),
            tail
        )
    }

    #[test]
    fn payload_strips_signatures() {
        let doc = unsigned();
        let signed = sign(&doc);
        assert_ne!(signed, doc);
        assert_eq!(payload(signed.as_bytes()).unwrap(), doc.as_bytes());
        assert_eq!(payload(doc.as_bytes()).unwrap(), doc.as_bytes());
        // Changing a layer changes the digest of the payload.
        let forged = signed.replace(L1, L2);
        assert_ne!(
            Digest::sha256_of(&payload(forged.as_bytes()).unwrap()),
            Digest::sha256_of(doc.as_bytes())
        );
        // A protected header pointing past the end is rejected.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let bad_prot = b64.encode(r#"{"formatLength":999999,"formatTail":""}"#);
        let start = signed.find("\"protected\":\"").unwrap() + 13;
        let end = start + signed[start..].find('"').unwrap();
        let broken = format!("{}{}{}", &signed[..start], bad_prot, &signed[end..]);
        assert!(payload(broken.as_bytes()).is_err());
    }

    #[test]
    fn convert() {
        let doc = sign(&unsigned());
        let m = Schema1Manifest::parse(doc.as_bytes()).unwrap();
        let content = m.content_layers().unwrap();
        assert_eq!(
            content.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [L1, L2]
        );
        let diffs = [Digest::sha256_of(b"a"), Digest::sha256_of(b"b")];
        let cfg = m.to_config(&diffs).unwrap();
        let parsed = crate::ImageConfig::parse(&cfg).unwrap();
        assert_eq!(parsed.rootfs.diff_ids, diffs);
        assert_eq!(parsed.history.len(), 3);
        assert!(parsed.history[2].empty_layer);
        assert_eq!(
            parsed.history[1].created_by.as_deref(),
            Some("/bin/sh -c echo hi > /f")
        );
        assert_eq!(parsed.os, "linux");
        let run = parsed.config.unwrap();
        assert_eq!(run.cmd, Some(vec!["sh".to_string()]));
        assert!(m.to_config(&diffs[..1]).is_err());
        let man = m.to_manifest(&cfg, &[10, 20]).unwrap();
        assert_eq!(man.layers.len(), 2);
        assert_eq!(man.config.digest, Digest::sha256_of(&cfg));
    }

    #[test]
    fn rejects_mismatched_history() {
        let doc =
            format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{L1}"}}],"history":[]}}"#);
        assert!(Schema1Manifest::parse(doc.as_bytes()).is_err());
    }

    /// A top layer whose v1 JSON would convert into a config hoist cannot read is refused
    /// when the manifest is parsed (found by the `manifest` fuzz target).
    #[test]
    fn rejects_top_v1_json_that_is_no_config() {
        let doc = |v1: &str| {
            format!(
                r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{L1}"}}],"history":[{{"v1Compatibility":{}}}]}}"#,
                serde_json::to_string(v1).unwrap()
            )
        };
        for (v1, ok) in [
            (r#"{"id":"a","os":"linux","config":{"Cmd":["sh"]}}"#, true),
            (r#"{"id":"a","config":"a"}"#, false),
            (r#"{"id":"a","architecture":5}"#, false),
            (r#"{"id":"a","history":"x"}"#, true), // replaced by the synthesised history
            (r#"{"id":"a","rootfs":{"diff_ids":["x"]}}"#, true), // replaced too
        ] {
            let r = Schema1Manifest::parse(doc(v1).as_bytes());
            assert_eq!(r.is_ok(), ok, "{v1}: {r:?}");
            if !ok {
                assert!(matches!(r, Err(TypeError::Schema1 { .. })), "{v1}");
            }
        }
    }
}
