//! Image configs (OCI and Docker), diff IDs and chain IDs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::MAX_CONFIG_SIZE;
use crate::{Digest, TypeError};

/// The image config document, as far as hoist reads it. Stored configs keep their raw
/// bytes; this is a view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The run config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// Layer diff IDs.
    pub rootfs: RootFs,
    /// History, base first.
    #[serde(default)]
    pub history: Vec<History>,
    /// Docker version that built the image (Docker configs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
    /// Parent image ID (Docker's local builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// The run config: what a container of this image runs, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// User (`name` or `uid[:gid]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment, `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Exposed ports, `80/tcp` → `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Volumes, path → `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// `rootfs` of a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Uncompressed layer digests, base first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct History {
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Whether this step made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// Parse a config's raw bytes (at most [`MAX_CONFIG_SIZE`], 4 MiB). Fields hoist does
    /// not model are ignored.
    ///
    /// # Errors
    ///
    /// [`TypeError::TooLarge`] over the limit, [`TypeError::NotUtf8`] or
    /// [`TypeError::Json`] for bytes that are not a JSON config.
    ///
    /// ```
    /// use hoist_types::{Digest, ImageConfig};
    ///
    /// let layer = Digest::sha256_of(b"layer tar");
    /// let json = format!(
    ///     r#"{{"architecture":"amd64","os":"linux",
    ///        "config":{{"Entrypoint":["/app"]}},
    ///        "rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#
    /// );
    /// let config = ImageConfig::parse(json.as_bytes())?;
    /// assert_eq!(config.rootfs.diff_ids, [layer]);
    /// assert_eq!(config.run_config().entrypoint, Some(vec!["/app".to_owned()]));
    /// config.check_layer_count(1)?;
    /// assert!(config.check_layer_count(2).is_err());
    /// # Ok::<(), hoist_types::TypeError>(())
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, TypeError> {
        if bytes.len() as u64 > MAX_CONFIG_SIZE {
            return Err(TypeError::TooLarge {
                what: "config",
                size: bytes.len() as u64,
                limit: MAX_CONFIG_SIZE,
            });
        }
        crate::check_utf8(bytes, "image config")?;
        serde_json::from_slice(bytes).map_err(|source| TypeError::Json {
            what: "image config",
            source,
        })
    }

    /// Check that a manifest with `layers` layers fits this config: the counts of
    /// layers and diff IDs must be equal.
    pub fn check_layer_count(&self, layers: usize) -> Result<(), TypeError> {
        if self.rootfs.diff_ids.len() != layers {
            return Err(TypeError::LayerCountMismatch {
                layers,
                diff_ids: self.rootfs.diff_ids.len(),
            });
        }
        Ok(())
    }

    /// Chain IDs of the layers, as Docker computes them.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.rootfs.diff_ids)
    }

    /// The run config, or an empty one.
    pub fn run_config(&self) -> RunConfig {
        self.config.clone().unwrap_or_default()
    }
}

/// Chain IDs: `chain[0] = diff[0]`, `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
///
/// A chain ID names a layer together with every layer below it (Docker's layer store and
/// hoist's unpack cache key by it).
///
/// ```
/// use hoist_types::{Digest, chain_ids};
///
/// let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
/// let chain = chain_ids(&[a.clone(), b.clone()]);
/// assert_eq!(chain[0], a);
/// assert_eq!(chain[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
/// ```
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_match_docker() {
        // Values from Docker's layer package test (TestChainID-style construction).
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let c = Digest::sha256_of(b"c");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
        assert_eq!(
            ids[2],
            Digest::sha256_of(format!("{} {c}", ids[1]).as_bytes())
        );
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn parse_docker_config() {
        let doc = br#"{"architecture":"amd64","os":"linux","docker_version":"24.0.1",
          "created":"2024-01-01T00:00:00Z",
          "config":{"User":"app","Env":["PATH=/bin"],"Entrypoint":["/init"],"Cmd":["run"],
                    "WorkingDir":"/srv","Labels":{"a":"b"},"ExposedPorts":{"80/tcp":{}}},
          "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
          "history":[{"created_by":"x"},{"created_by":"y","empty_layer":true}]}"#;
        let c = ImageConfig::parse(doc).unwrap();
        assert_eq!(c.docker_version.as_deref(), Some("24.0.1"));
        assert_eq!(c.run_config().user.as_deref(), Some("app"));
        assert_eq!(c.run_config().working_dir.as_deref(), Some("/srv"));
        assert!(c.check_layer_count(1).is_ok());
        assert!(matches!(
            c.check_layer_count(2),
            Err(TypeError::LayerCountMismatch {
                layers: 2,
                diff_ids: 1
            })
        ));
        assert!(c.history[1].empty_layer);
        assert!(ImageConfig::parse(br#"{"rootfs":{"diff_ids":["sha256:AB"]}}"#).is_err());
    }
}
