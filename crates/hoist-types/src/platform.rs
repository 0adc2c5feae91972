//! Platforms (`os/arch[/variant]`) and how an index entry is chosen for one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Descriptor, Digest, MediaType, TypeError};

/// An image platform as it appears in an index entry or an image config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture in Go's spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Variant, e.g. `v8` or `v7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version (Windows images).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features (Windows images).
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
}

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
            os_version: None,
            os_features: None,
        }
        .normalized()
    }

    /// The platform of the running host, in Go's names.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform::new("linux", arch, None)
    }

    /// Normalise aliases the way containerd's `platforms.Normalize` does:
    /// `x86_64`/`x86-64` → `amd64`, `aarch64` → `arm64`, arm64's default variant `v8`
    /// is dropped, `arm` without variant means `v7`.
    pub fn normalized(mut self) -> Platform {
        self.os = self.os.to_ascii_lowercase();
        let arch = self.architecture.to_ascii_lowercase();
        self.architecture = match arch.as_str() {
            "x86_64" | "x86-64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            "i386" => "386".into(),
            "armhf" => "arm".into(),
            "armel" => {
                self.variant = Some("v6".into());
                "arm".into()
            }
            _ => arch,
        };
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", Some("v8" | "8")) => self.variant = None,
            ("arm", None) => self.variant = Some("v7".into()),
            ("arm", Some(v)) if !v.starts_with('v') => self.variant = Some(format!("v{v}")),
            ("amd64", Some("v1")) => self.variant = None,
            _ => {}
        }
        if self.variant.as_deref() == Some("") {
            self.variant = None;
        }
        self
    }

    /// Whether an index entry with platform `candidate` can run where `self` is wanted
    /// (see [`Platform::match_rank`]).
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.match_rank(candidate).is_some()
    }

    /// How well an index entry with platform `candidate` fits where `self` is wanted:
    /// `Some(0)` for an exact fit, a larger number for a less preferred but compatible one,
    /// `None` when it cannot run there.
    ///
    /// OS and architecture must be equal after normalisation. Variants follow containerd
    /// and containers/image: when no variant is wanted, any variant fits (one without a
    /// variant fits best); a wanted `arm` variant also runs older ones (`v7` runs `v6` and
    /// `v5`), and an `amd64` microarchitecture level runs the lower levels (`v3` runs
    /// `v2` and plain `amd64`), each step down ranked one worse.
    ///
    /// ```
    /// use hoist_types::Platform;
    ///
    /// let arm_v7 = Platform::new("linux", "arm", Some("v7"));
    /// assert_eq!(arm_v7.match_rank(&Platform::new("linux", "arm", Some("v7"))), Some(0));
    /// assert_eq!(arm_v7.match_rank(&Platform::new("linux", "arm", Some("v6"))), Some(1));
    /// assert_eq!(arm_v7.match_rank(&Platform::new("linux", "arm", Some("v8"))), None);
    /// assert_eq!(arm_v7.match_rank(&Platform::new("linux", "arm64", None)), None);
    ///
    /// // No variant wanted: any variant fits, none fits best.
    /// let arm64 = Platform::new("linux", "arm64", None);
    /// assert_eq!(arm64.match_rank(&Platform::new("linux", "aarch64", None)), Some(0));
    /// assert_eq!(arm64.match_rank(&Platform::new("linux", "arm64", Some("v9"))), Some(1));
    /// ```
    pub fn match_rank(&self, candidate: &Platform) -> Option<u32> {
        let want = self.clone().normalized();
        let have = candidate.clone().normalized();
        if want.os != have.os || want.architecture != have.architecture {
            return None;
        }
        let (w, h) = (want.variant.as_deref(), have.variant.as_deref());
        if w == h {
            return Some(0);
        }
        match (w, h) {
            (None, _) => Some(1),
            (Some(w), h) => {
                let level = |v: &str| v.strip_prefix('v')?.parse::<u32>().ok();
                let lowest = match want.architecture.as_str() {
                    "arm" => 5,
                    "amd64" => 1,
                    _ => return None,
                };
                // amd64 without a variant is v1 (normalised away).
                let have_level = match h {
                    Some(h) => level(h)?,
                    None if want.architecture == "amd64" => 1,
                    None => return None,
                };
                let want_level = level(w)?;
                (have_level >= lowest && have_level <= want_level).then(|| want_level - have_level)
            }
        }
    }
}

/// Annotation buildkit puts on the index entries of attestation manifests.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// Why an index entry was not chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySkip {
    /// Its platform cannot run where the image is wanted.
    PlatformMismatch,
    /// An attestation manifest (`vnd.docker.reference.type: attestation-manifest`).
    Attestation,
    /// An artifact (its `artifactType`), not an image.
    Artifact(String),
    /// Its media type is not an image manifest or an index.
    NotAManifest(MediaType),
}

impl fmt::Display for EntrySkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntrySkip::PlatformMismatch => f.write_str("platform does not match"),
            EntrySkip::Attestation => f.write_str("attestation manifest"),
            EntrySkip::Artifact(t) => write!(f, "artifact of type {t}"),
            EntrySkip::NotAManifest(mt) if mt.as_str().is_empty() => {
                f.write_str("no media type: not an image manifest")
            }
            EntrySkip::NotAManifest(mt) => write!(f, "media type {mt} is not an image manifest"),
        }
    }
}

/// One entry of an index that was not chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// The entry's digest.
    pub digest: Digest,
    /// The entry's platform, if it has one.
    pub platform: Option<Platform>,
    /// Why it was not chosen.
    pub reason: EntrySkip,
}

/// No entry of an index fits the wanted platform: every entry, with its platform and the
/// reason it was passed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoPlatformMatch {
    /// The platform asked for.
    pub wanted: Platform,
    /// Every entry of the index, in order.
    pub entries: Vec<SkippedEntry>,
}

impl fmt::Display for NoPlatformMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no image for platform {}; ", self.wanted)?;
        if self.entries.is_empty() {
            return f.write_str("the index has no entries");
        }
        f.write_str("the index lists ")?;
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} ", e.digest)?;
            match &e.platform {
                Some(p) => write!(f, "{p}")?,
                None => f.write_str("no platform")?,
            }
            write!(f, " ({})", e.reason)?;
        }
        Ok(())
    }
}

/// Choose the entry of an index to use where `want` is wanted. The one rule every path
/// (pull, copy, archive load) follows:
///
/// - Entries that are not images are never chosen: attestation manifests, artifacts
///   (`artifactType`), and media types that are neither an image manifest (OCI, Docker
///   schema 2 or schema 1) nor an index.
/// - An entry whose platform fits `want` ([`Platform::match_rank`]) is a candidate; an
///   entry **without** a platform is one too, of last resort: its platform is unknown, not
///   a mismatch (containers/image ranks it below every platform match; go-containerregistry
///   assumes the default platform). So an index whose only image has no platform yields
///   it, and an entry that fits wins over one without a platform.
/// - Among candidates: those with a platform first, then the better fit, then image
///   manifests before nested indexes, then the first in the index.
///
/// A nested index is returned like an image entry; the caller follows it.
///
/// # Errors
///
/// [`NoPlatformMatch`] (boxed: it lists every entry) when no entry is a candidate; each
/// [`SkippedEntry`] says why it was passed over.
///
/// ```
/// use hoist_types::{Descriptor, Digest, EntrySkip, MediaType, Platform, choose_entry};
///
/// let entry = |n: &[u8], p: &str| Descriptor {
///     platform: Some(p.parse().unwrap()),
///     ..Descriptor::new(MediaType::OciManifest, Digest::sha256_of(n), 100)
/// };
/// let entries = [entry(b"amd", "linux/amd64"), entry(b"arm", "linux/arm64")];
///
/// let chosen = choose_entry(&entries, &"linux/arm64".parse()?).unwrap();
/// assert_eq!(chosen.digest, Digest::sha256_of(b"arm"));
///
/// let none = choose_entry(&entries, &Platform::new("windows", "amd64", None)).unwrap_err();
/// assert_eq!(none.entries.len(), 2);
/// assert_eq!(none.entries[0].reason, EntrySkip::PlatformMismatch);
/// # Ok::<(), hoist_types::TypeError>(())
/// ```
pub fn choose_entry<'a>(
    entries: &'a [Descriptor],
    want: &Platform,
) -> Result<&'a Descriptor, Box<NoPlatformMatch>> {
    // (no platform, fit, nested index, position): the smallest wins.
    type Key = (bool, u32, bool, usize);
    let mut best: Option<(Key, &Descriptor)> = None;
    let mut skipped = Vec::new();
    for (pos, d) in entries.iter().enumerate() {
        let reason = if d
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REFERENCE_TYPE))
            .is_some_and(|t| t == "attestation-manifest")
        {
            Some(EntrySkip::Attestation)
        } else if let Some(t) = &d.artifact_type {
            Some(EntrySkip::Artifact(t.clone()))
        } else if !(d.media_type.is_image_manifest()
            || d.media_type.is_schema1()
            || d.media_type.is_index())
        {
            Some(EntrySkip::NotAManifest(d.media_type.clone()))
        } else {
            None
        };
        let rank = match (&reason, &d.platform) {
            (Some(_), _) => None,
            (None, None) => Some(0),
            (None, Some(p)) => want.match_rank(p),
        };
        let Some(rank) = rank else {
            skipped.push(SkippedEntry {
                digest: d.digest.clone(),
                platform: d.platform.clone(),
                reason: reason.unwrap_or(EntrySkip::PlatformMismatch),
            });
            continue;
        };
        let key = (d.platform.is_none(), rank, d.media_type.is_index(), pos);
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, d));
        }
    }
    match best {
        Some((_, d)) => Ok(d),
        None => Err(Box::new(NoPlatformMatch {
            wanted: want.clone(),
            entries: skipped,
        })),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = TypeError;
    /// Parse `os/arch[/variant]`, or `arch` alone meaning `linux/arch`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| TypeError::InvalidPlatform {
            input: s.to_owned(),
            reason,
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("empty component"));
        }
        if parts.iter().any(|p| {
            !p.starts_with(|c: char| c.is_ascii_alphanumeric())
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        }) {
            return Err(bad("invalid character"));
        }
        match parts.as_slice() {
            [arch] => Ok(Platform::new("linux", arch, None)),
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(bad("expected os/arch[/variant]")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let cases = [
            ("linux/amd64", "linux/amd64"),
            ("amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("Linux/ARM64", "linux/arm64"),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Platform>().unwrap().to_string(), want);
        }
        for bad in ["", "linux/", "a/b/c/d", "linux/am d64", "../x"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn matching() {
        let p = |s: &str| s.parse::<Platform>().unwrap();
        let raw = |os: &str, arch: &str, v: Option<&str>| Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: v.map(Into::into),
            ..Default::default()
        };
        assert!(p("linux/amd64").matches(&raw("linux", "amd64", None)));
        assert!(p("linux/arm64").matches(&raw("linux", "arm64", Some("v8"))));
        assert!(p("linux/arm64/v8").matches(&raw("linux", "arm64", None)));
        assert!(p("linux/arm/v7").matches(&raw("linux", "arm", Some("v6"))));
        assert!(!p("linux/arm/v6").matches(&raw("linux", "arm", Some("v7"))));
        assert!(!p("linux/amd64").matches(&raw("windows", "amd64", None)));
        assert!(!p("linux/amd64").matches(&raw("linux", "arm64", None)));
        assert!(Platform::host().os == "linux");
    }

    #[test]
    fn match_ranks() {
        let p = |s: &str| s.parse::<Platform>().unwrap();
        let cases: &[(&str, &str, Option<u32>)] = &[
            ("linux/amd64", "linux/amd64", Some(0)),
            ("linux/amd64", "linux/x86_64", Some(0)),
            ("linux/amd64", "linux/amd64/v3", Some(1)),
            ("linux/amd64/v3", "linux/amd64/v3", Some(0)),
            ("linux/amd64/v3", "linux/amd64/v2", Some(1)),
            ("linux/amd64/v3", "linux/amd64", Some(2)),
            ("linux/amd64/v2", "linux/amd64/v3", None),
            ("linux/arm64", "linux/arm64/v8", Some(0)),
            ("linux/arm/v7", "linux/arm/v7", Some(0)),
            ("linux/arm/v7", "linux/arm/v6", Some(1)),
            ("linux/arm/v7", "linux/arm/v5", Some(2)),
            ("linux/arm/v6", "linux/arm/v7", None),
            ("linux/arm/v8", "linux/arm/v7", Some(1)),
            ("linux/amd64", "windows/amd64", None),
            ("linux/amd64", "linux/arm64", None),
            ("linux/riscv64/rva22", "linux/riscv64", None),
            ("linux/amd64", "unknown/unknown", None),
        ];
        for (want, have, rank) in cases {
            assert_eq!(p(want).match_rank(&p(have)), *rank, "{want} vs {have}");
        }
    }

    /// One index entry for the choice table.
    fn entry(n: u8, mt: &str, platform: Option<&str>) -> Descriptor {
        let mut d = Descriptor::new(MediaType::parse(mt), Digest::sha256_of(&[n]), 1);
        d.platform = platform.map(|s| {
            let mut parts = s.split('/');
            Platform {
                os: parts.next().unwrap().into(),
                architecture: parts.next().unwrap().into(),
                variant: parts.next().map(Into::into),
                ..Default::default()
            }
        });
        d
    }

    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";

    #[test]
    fn choose_entry_table() {
        let attestation = {
            let mut d = entry(9, OCI, Some("unknown/unknown"));
            d.annotations = Some(
                [(
                    ANNOTATION_REFERENCE_TYPE.to_owned(),
                    "attestation-manifest".to_owned(),
                )]
                .into(),
            );
            d
        };
        let artifact = {
            let mut d = entry(8, OCI, None);
            d.artifact_type = Some("application/vnd.example.sbom".into());
            d
        };
        // (entries, wanted, index of the chosen entry or None)
        let cases: Vec<(Vec<Descriptor>, &str, Option<usize>)> = vec![
            // The only image has no platform: chosen.
            (vec![entry(1, OCI, None)], "linux/amd64", Some(0)),
            (vec![entry(1, DOCKER, None)], "linux/arm64", Some(0)),
            // A fitting platform wins over no platform, wherever it stands.
            (
                vec![entry(1, OCI, None), entry(2, OCI, Some("linux/amd64"))],
                "linux/amd64",
                Some(1),
            ),
            (
                vec![entry(2, OCI, Some("linux/amd64")), entry(1, OCI, None)],
                "linux/amd64",
                Some(0),
            ),
            // No fitting platform: the entry without one.
            (
                vec![entry(2, OCI, Some("linux/arm64")), entry(1, OCI, None)],
                "linux/amd64",
                Some(1),
            ),
            // Exact variant before a compatible one, wherever it stands.
            (
                vec![
                    entry(1, OCI, Some("linux/arm/v6")),
                    entry(2, OCI, Some("linux/arm/v7")),
                ],
                "linux/arm/v7",
                Some(1),
            ),
            (
                vec![entry(1, OCI, Some("linux/arm/v6"))],
                "linux/arm/v7",
                Some(0),
            ),
            // Two exact fits: the first.
            (
                vec![
                    entry(1, OCI, Some("linux/amd64")),
                    entry(2, DOCKER, Some("linux/amd64")),
                ],
                "linux/amd64",
                Some(0),
            ),
            // Attestations and artifacts are never chosen, platform or not.
            (
                vec![attestation.clone(), entry(1, OCI, Some("linux/amd64"))],
                "linux/amd64",
                Some(1),
            ),
            (vec![artifact.clone()], "linux/amd64", None),
            (vec![attestation.clone()], "unknown/unknown", None),
            // A media type that is no manifest is skipped even without platform.
            (
                vec![entry(1, "application/octet-stream", None)],
                "linux/amd64",
                None,
            ),
            (
                vec![
                    entry(1, "application/octet-stream", None),
                    entry(2, OCI, None),
                ],
                "linux/amd64",
                Some(1),
            ),
            // A nested index that fits, or has no platform, is followed; an image is
            // preferred to it at the same fit.
            (vec![entry(1, INDEX, None)], "linux/amd64", Some(0)),
            (
                vec![entry(1, INDEX, None), entry(2, OCI, None)],
                "linux/amd64",
                Some(1),
            ),
            (
                vec![entry(1, INDEX, Some("linux/amd64")), entry(2, OCI, None)],
                "linux/amd64",
                Some(0),
            ),
            (
                vec![entry(1, INDEX, Some("linux/arm64"))],
                "linux/amd64",
                None,
            ),
            (vec![], "linux/amd64", None),
        ];
        for (i, (entries, want, chosen)) in cases.iter().enumerate() {
            let want: Platform = want.parse().unwrap();
            let got = choose_entry(entries, &want);
            match (got, chosen) {
                (Ok(d), Some(c)) => assert_eq!(d, &entries[*c], "case {i}"),
                (Err(e), None) => assert_eq!(e.entries.len(), entries.len(), "case {i}"),
                (got, want) => panic!("case {i}: got {got:?}, want entry {want:?}"),
            }
        }
    }

    #[test]
    fn no_match_lists_every_entry_and_why() {
        let mut att = entry(3, OCI, Some("unknown/unknown"));
        att.annotations = Some(
            [(
                ANNOTATION_REFERENCE_TYPE.to_owned(),
                "attestation-manifest".to_owned(),
            )]
            .into(),
        );
        let entries = vec![
            entry(1, OCI, Some("linux/arm64/v8")),
            entry(2, "text/plain", None),
            att,
        ];
        let e = choose_entry(&entries, &"linux/s390x".parse().unwrap()).unwrap_err();
        let reasons: Vec<_> = e.entries.iter().map(|s| s.reason.clone()).collect();
        assert_eq!(
            reasons,
            [
                EntrySkip::PlatformMismatch,
                EntrySkip::NotAManifest(MediaType::parse("text/plain")),
                EntrySkip::Attestation
            ]
        );
        let msg = e.to_string();
        let want = format!(
            "no image for platform linux/s390x; the index lists {} linux/arm64/v8 (platform does not match), {} no platform (media type text/plain is not an image manifest), {} unknown/unknown (attestation manifest)",
            entries[0].digest, entries[1].digest, entries[2].digest
        );
        assert_eq!(msg, want);
        let none = choose_entry(&[], &"linux/amd64".parse().unwrap()).unwrap_err();
        assert_eq!(
            none.to_string(),
            "no image for platform linux/amd64; the index has no entries"
        );
    }
}
