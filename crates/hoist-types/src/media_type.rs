//! Media types of the OCI and Docker image formats.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A media type. Known types are variants; anything else is kept verbatim in `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaType {
    /// `application/vnd.oci.image.manifest.v1+json`
    OciManifest,
    /// `application/vnd.oci.image.index.v1+json`
    OciIndex,
    /// `application/vnd.oci.image.config.v1+json`
    OciConfig,
    /// `application/vnd.oci.image.layer.v1.tar`
    OciLayer,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`
    OciLayerGzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`
    OciLayerZstd,
    /// `application/vnd.oci.image.layer.nondistributable.v1.tar` (deprecated by the
    /// image spec, still written by older tools; read like a distributable layer).
    OciLayerNondistributable,
    /// `application/vnd.oci.image.layer.nondistributable.v1.tar+gzip`
    OciLayerNondistributableGzip,
    /// `application/vnd.oci.image.layer.nondistributable.v1.tar+zstd`
    OciLayerNondistributableZstd,
    /// `application/vnd.oci.empty.v1+json`
    OciEmpty,
    /// `application/vnd.docker.distribution.manifest.v2+json`
    DockerManifest,
    /// `application/vnd.docker.distribution.manifest.list.v2+json`
    DockerManifestList,
    /// `application/vnd.docker.distribution.manifest.v1+prettyjws`
    DockerManifestV1Signed,
    /// `application/vnd.docker.distribution.manifest.v1+json`
    DockerManifestV1,
    /// `application/vnd.docker.container.image.v1+json`
    DockerConfig,
    /// `application/vnd.docker.image.rootfs.diff.tar.gzip`
    DockerLayerGzip,
    /// `application/vnd.docker.image.rootfs.diff.tar` (uncompressed, as in docker-archive)
    DockerLayer,
    /// `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`
    DockerForeignLayerGzip,
    /// `application/vnd.docker.image.rootfs.foreign.diff.tar` (uncompressed)
    DockerForeignLayer,
    /// Anything else, verbatim.
    Other(String),
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

const TABLE: &[(MediaType, &str)] = &[
    (
        MediaType::OciManifest,
        "application/vnd.oci.image.manifest.v1+json",
    ),
    (
        MediaType::OciIndex,
        "application/vnd.oci.image.index.v1+json",
    ),
    (
        MediaType::OciConfig,
        "application/vnd.oci.image.config.v1+json",
    ),
    (
        MediaType::OciLayer,
        "application/vnd.oci.image.layer.v1.tar",
    ),
    (
        MediaType::OciLayerGzip,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    (
        MediaType::OciLayerZstd,
        "application/vnd.oci.image.layer.v1.tar+zstd",
    ),
    (
        MediaType::OciLayerNondistributable,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    ),
    (
        MediaType::OciLayerNondistributableGzip,
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ),
    (
        MediaType::OciLayerNondistributableZstd,
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    ),
    (MediaType::OciEmpty, "application/vnd.oci.empty.v1+json"),
    (
        MediaType::DockerManifest,
        "application/vnd.docker.distribution.manifest.v2+json",
    ),
    (
        MediaType::DockerManifestList,
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ),
    (
        MediaType::DockerManifestV1Signed,
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ),
    (
        MediaType::DockerManifestV1,
        "application/vnd.docker.distribution.manifest.v1+json",
    ),
    (
        MediaType::DockerConfig,
        "application/vnd.docker.container.image.v1+json",
    ),
    (
        MediaType::DockerLayerGzip,
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ),
    (
        MediaType::DockerLayer,
        "application/vnd.docker.image.rootfs.diff.tar",
    ),
    (
        MediaType::DockerForeignLayerGzip,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ),
    (
        MediaType::DockerForeignLayer,
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
    ),
];

impl MediaType {
    /// Parse a media type string; parameters after `;` are ignored for matching, and
    /// known types match without regard to case. Never fails: an unknown type is kept in
    /// [`MediaType::Other`].
    ///
    /// ```
    /// use hoist_types::{Compression, MediaType};
    ///
    /// let mt = MediaType::parse("application/vnd.docker.image.rootfs.diff.tar.gzip");
    /// assert_eq!(mt, MediaType::DockerLayerGzip);
    /// assert_eq!(mt.layer_compression(), Some(Compression::Gzip));
    /// assert_eq!(mt.docker_to_oci(), MediaType::OciLayerGzip);
    ///
    /// let odd = MediaType::parse("text/plain; charset=utf-8");
    /// assert_eq!(odd.as_str(), "text/plain");
    /// assert_eq!(odd.layer_compression(), None);
    /// ```
    pub fn parse(s: &str) -> MediaType {
        let base = s.split(';').next().unwrap_or("").trim();
        TABLE
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(base))
            .map(|(mt, _)| mt.clone())
            .unwrap_or_else(|| MediaType::Other(base.to_owned()))
    }

    /// The canonical string.
    pub fn as_str(&self) -> &str {
        if let MediaType::Other(s) = self {
            return s;
        }
        TABLE
            .iter()
            .find(|(mt, _)| mt == self)
            .map(|(_, s)| *s)
            .unwrap_or("")
    }

    /// An image manifest (OCI or Docker schema 2).
    pub fn is_image_manifest(&self) -> bool {
        matches!(self, MediaType::OciManifest | MediaType::DockerManifest)
    }

    /// An index or manifest list.
    pub fn is_index(&self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }

    /// Docker schema 1, signed or not.
    pub fn is_schema1(&self) -> bool {
        matches!(
            self,
            MediaType::DockerManifestV1 | MediaType::DockerManifestV1Signed
        )
    }

    /// Any manifest kind (image, index or schema 1).
    pub fn is_manifest(&self) -> bool {
        self.is_image_manifest() || self.is_index() || self.is_schema1()
    }

    /// An image config.
    pub fn is_config(&self) -> bool {
        matches!(self, MediaType::OciConfig | MediaType::DockerConfig)
    }

    /// A layer media type we know how to read, with its compression. Non-distributable
    /// (foreign) layers are tars like the others: they unpack and build alike.
    pub fn layer_compression(&self) -> Option<Compression> {
        match self {
            MediaType::OciLayer
            | MediaType::OciLayerNondistributable
            | MediaType::DockerLayer
            | MediaType::DockerForeignLayer => Some(Compression::None),
            MediaType::OciLayerGzip
            | MediaType::OciLayerNondistributableGzip
            | MediaType::DockerLayerGzip
            | MediaType::DockerForeignLayerGzip => Some(Compression::Gzip),
            MediaType::OciLayerZstd | MediaType::OciLayerNondistributableZstd => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// A non-distributable (foreign) layer: its descriptor may name `urls` to fetch it
    /// from instead of the registry (off by default when pulling).
    pub fn is_foreign_layer(&self) -> bool {
        matches!(
            self,
            MediaType::DockerForeignLayerGzip
                | MediaType::DockerForeignLayer
                | MediaType::OciLayerNondistributable
                | MediaType::OciLayerNondistributableGzip
                | MediaType::OciLayerNondistributableZstd
        )
    }

    /// The OCI media type of a Docker schema 2 config or layer type, for converting a
    /// Docker schema 2 manifest to OCI over the same blobs: the config →
    /// `application/vnd.oci.image.config.v1+json`, a layer (tar, tar+gzip) → the OCI
    /// layer type of the same compression, a foreign layer → the OCI non-distributable
    /// type of the same compression. Every other type (OCI types included) is returned
    /// as it is.
    pub fn docker_to_oci(&self) -> MediaType {
        match self {
            MediaType::DockerConfig => MediaType::OciConfig,
            MediaType::DockerLayerGzip => MediaType::OciLayerGzip,
            MediaType::DockerLayer => MediaType::OciLayer,
            MediaType::DockerForeignLayerGzip => MediaType::OciLayerNondistributableGzip,
            MediaType::DockerForeignLayer => MediaType::OciLayerNondistributable,
            other => other.clone(),
        }
    }

    /// Whether this belongs to the Docker family (used for format conversion).
    pub fn is_docker(&self) -> bool {
        self.as_str().starts_with("application/vnd.docker.")
    }

    /// The `Accept` list a client sends when fetching a manifest.
    pub fn manifest_accept() -> &'static [&'static str] {
        &[
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "application/vnd.docker.distribution.manifest.v1+json",
        ]
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MediaType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(MediaType::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_known() {
        for (mt, s) in TABLE {
            assert_eq!(&MediaType::parse(s), mt);
            assert_eq!(mt.as_str(), *s);
        }
    }

    #[test]
    fn docker_to_oci_table() {
        let cases = [
            (
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.oci.image.config.v1+json",
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                "application/vnd.oci.image.layer.v1.tar",
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar",
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
            ),
            // Already OCI, or unknown: unchanged.
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
            ("application/x-custom", "application/x-custom"),
        ];
        for (from, to) in cases {
            assert_eq!(
                MediaType::parse(from).docker_to_oci().as_str(),
                to,
                "{from}"
            );
        }
    }

    #[test]
    fn classify() {
        let cases: &[(&str, bool, bool, Option<Compression>)] = &[
            (
                "application/vnd.oci.image.manifest.v1+json",
                true,
                false,
                None,
            ),
            (
                "application/vnd.docker.distribution.manifest.list.v2+json",
                false,
                true,
                None,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                false,
                false,
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                false,
                false,
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                false,
                false,
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                false,
                false,
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                false,
                false,
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                false,
                false,
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar",
                false,
                false,
                Some(Compression::None),
            ),
            ("text/plain; charset=utf-8", false, false, None),
        ];
        for (s, img, idx, comp) in cases {
            let mt = MediaType::parse(s);
            assert_eq!(mt.is_image_manifest(), *img, "{s}");
            assert_eq!(mt.is_index(), *idx, "{s}");
            assert_eq!(mt.layer_compression(), *comp, "{s}");
        }
        assert_eq!(
            MediaType::parse("application/json; charset=utf-8"),
            MediaType::Other("application/json".into())
        );
        assert_eq!(
            MediaType::parse("application/vnd.docker.distribution.manifest.v2+json; q=1"),
            MediaType::DockerManifest
        );
    }

    #[test]
    fn nondistributable_layers_are_foreign_tars() {
        for (s, c) in [
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Compression::None,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar",
                Compression::None,
            ),
        ] {
            let mt = MediaType::parse(s);
            assert!(!matches!(mt, MediaType::Other(_)), "{s}");
            assert_eq!(mt.layer_compression(), Some(c), "{s}");
            assert!(mt.is_foreign_layer(), "{s}");
        }
        assert!(!MediaType::OciLayerGzip.is_foreign_layer());
    }
}
