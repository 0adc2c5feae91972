//! Platforms (`os/arch[/variant]`) and how an index entry is chosen for one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TypeError;

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

    /// Whether an index entry with platform `candidate` can run where `self` is wanted.
    ///
    /// OS and architecture must match after normalisation. A wanted variant must match
    /// exactly; when no variant is wanted, any variant of the architecture matches.
    pub fn matches(&self, candidate: &Platform) -> bool {
        let want = self.clone().normalized();
        let have = candidate.clone().normalized();
        if want.os != have.os || want.architecture != have.architecture {
            return false;
        }
        match &want.variant {
            None => true,
            Some(v) => have.variant.as_deref() == Some(v.as_str()),
        }
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
        assert!(!p("linux/arm/v7").matches(&raw("linux", "arm", Some("v6"))));
        assert!(!p("linux/amd64").matches(&raw("windows", "amd64", None)));
        assert!(!p("linux/amd64").matches(&raw("linux", "arm64", None)));
        assert!(Platform::host().os == "linux");
    }
}
