//! `transport:reference`: the grammar of image locations ([`ImageRef`]) and the
//! transports it names ([`Transport`]). Pure parsing, no I/O; the table of forms is in the
//! [`transports`](super) module docs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use hoist_types::Reference;

use crate::TransportError;

/// The transports, by their prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `docker://`: a registry.
    Docker,
    /// `oci:`: an OCI image layout directory.
    Oci,
    /// `oci-archive:`: an OCI image layout in a tar file.
    OciArchive,
    /// `docker-archive:`: what `docker save` writes.
    DockerArchive,
    /// `dir:`: skopeo's directory layout.
    Dir,
    /// `hoist:`: the local store.
    Hoist,
}

impl Transport {
    /// Every transport, in the order of the table above.
    pub const ALL: [Transport; 6] = [
        Transport::Docker,
        Transport::Oci,
        Transport::OciArchive,
        Transport::DockerArchive,
        Transport::Dir,
        Transport::Hoist,
    ];

    /// The name before the `:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Docker => "docker",
            Transport::Oci => "oci",
            Transport::OciArchive => "oci-archive",
            Transport::DockerArchive => "docker-archive",
            Transport::Dir => "dir",
            Transport::Hoist => "hoist",
        }
    }

    fn from_name(s: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which image of a `docker-archive:` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveSelector {
    /// The image with this tag (`docker-archive:FILE:NAME:TAG`); as a destination, the
    /// tag written into `manifest.json` and `repositories`.
    Named(Reference),
    /// The N-th image of `manifest.json`, from 0 (`docker-archive:FILE:@N`; source only).
    Index(usize),
}

/// Where an image is: a transport and its reference, parsed from `transport:reference`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `docker://HOST/REPO[:TAG|@DIGEST]`.
    Docker(Reference),
    /// `oci:DIR[:REF]`.
    Oci {
        /// The layout directory.
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` to read or write; `None`: the only
        /// image of the layout (source), no name (destination).
        name: Option<String>,
    },
    /// `oci-archive:FILE[:REF]`.
    OciArchive {
        /// The tar file.
        file: PathBuf,
        /// The `org.opencontainers.image.ref.name`, as for `oci:`.
        name: Option<String>,
    },
    /// `docker-archive:FILE[:REF|:@N]`.
    DockerArchive {
        /// The tar file.
        file: PathBuf,
        /// Which image (source) or the tag to record (destination); `None`: the only
        /// image (source), no tag (destination).
        selector: Option<ArchiveSelector>,
    },
    /// `dir:DIR`.
    Dir {
        /// The directory.
        dir: PathBuf,
    },
    /// `hoist:REF` or a bare `REF`: a name, image ID (or unique prefix) or digest in the
    /// store. As a destination it must be a name (`host/repo:tag`, normalised).
    Hoist {
        /// The reference as given.
        name: String,
    },
}

impl ImageRef {
    /// Parse `transport:reference`; a string whose prefix is no transport name is a
    /// `hoist:` reference.
    ///
    /// # Errors
    ///
    /// [`TransportError::InvalidImageRef`] naming the input and what is wrong with it (an
    /// invalid image reference after `docker://`, an empty path, a bad name or `@N`).
    ///
    /// ```
    /// use std::path::PathBuf;
    /// use hoist_transport::transports::{ImageRef, Transport};
    ///
    /// let r = ImageRef::parse("docker://alpine")?;
    /// assert_eq!(r.transport(), Transport::Docker);
    /// assert_eq!(r.to_string(), "docker://docker.io/library/alpine:latest");
    ///
    /// assert_eq!(
    ///     ImageRef::parse("oci:/srv/layout:app")?,
    ///     ImageRef::Oci { dir: PathBuf::from("/srv/layout"), name: Some("app".into()) },
    /// );
    /// // No transport prefix: an image in the store.
    /// assert_eq!(ImageRef::parse("alpine:3")?, ImageRef::Hoist { name: "alpine:3".into() });
    /// # Ok::<(), hoist_transport::TransportError>(())
    /// ```
    pub fn parse(s: &str) -> Result<ImageRef, TransportError> {
        let bad = |reason: &str| TransportError::InvalidImageRef {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let Some((prefix, rest)) = s.split_once(':') else {
            return hoist_ref(s, s);
        };
        let Some(transport) = Transport::from_name(prefix) else {
            return hoist_ref(s, s);
        };
        match transport {
            Transport::Docker => {
                let r = rest
                    .strip_prefix("//")
                    .ok_or_else(|| bad("the docker transport is written docker://HOST/REPO"))?;
                let reference = Reference::parse(r).map_err(|e| bad(&e.to_string()))?;
                Ok(ImageRef::Docker(reference))
            }
            Transport::Oci | Transport::OciArchive => {
                let (path, name) = split_path(rest);
                let path = nonempty_path(path).ok_or_else(|| bad("missing path"))?;
                let name = match name {
                    Some(n) => Some(check_ref_name(n).map_err(|r| bad(&r))?.to_owned()),
                    None => None,
                };
                Ok(match transport {
                    Transport::Oci => ImageRef::Oci { dir: path, name },
                    _ => ImageRef::OciArchive { file: path, name },
                })
            }
            Transport::DockerArchive => {
                let (path, sel) = split_path(rest);
                let file = nonempty_path(path).ok_or_else(|| bad("missing path"))?;
                let selector = match sel {
                    None => None,
                    Some(n) => Some(match n.strip_prefix('@') {
                        Some(i) => ArchiveSelector::Index(
                            i.parse()
                                .map_err(|_| bad("`@N` needs a non-negative number"))?,
                        ),
                        None => {
                            let r = Reference::parse(n).map_err(|e| bad(&e.to_string()))?;
                            if r.digest().is_some() || r.tag().is_none() {
                                return Err(bad("a docker-archive reference is NAME:TAG"));
                            }
                            ArchiveSelector::Named(r)
                        }
                    }),
                };
                Ok(ImageRef::DockerArchive { file, selector })
            }
            Transport::Dir => {
                let dir = nonempty_path(rest).ok_or_else(|| bad("missing path"))?;
                Ok(ImageRef::Dir { dir })
            }
            Transport::Hoist => hoist_ref(s, rest),
        }
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        match self {
            ImageRef::Docker(_) => Transport::Docker,
            ImageRef::Oci { .. } => Transport::Oci,
            ImageRef::OciArchive { .. } => Transport::OciArchive,
            ImageRef::DockerArchive { .. } => Transport::DockerArchive,
            ImageRef::Dir { .. } => Transport::Dir,
            ImageRef::Hoist { .. } => Transport::Hoist,
        }
    }
}

fn hoist_ref(input: &str, name: &str) -> Result<ImageRef, TransportError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TransportError::InvalidImageRef {
            input: input.to_owned(),
            reason: "a store reference is a name, an image ID or a digest".to_owned(),
        });
    }
    Ok(ImageRef::Hoist {
        name: name.to_owned(),
    })
}

/// `PATH[:REF]` split at the first `:`; an empty `REF` is none.
fn split_path(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((p, r)) if !r.is_empty() => (p, Some(r)),
        Some((p, _)) => (p, None),
        None => (s, None),
    }
}

fn nonempty_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// Check an `org.opencontainers.image.ref.name`: components of `[A-Za-z0-9]` joined by
/// one of `-._:@+` (or `--`), separated by `/` (the image-layout grammar).
pub fn check_ref_name(s: &str) -> Result<&str, String> {
    let bad = || format!("{s:?} is not a valid image-layout reference name");
    if s.is_empty() {
        return Err(bad());
    }
    for comp in s.split('/') {
        let b = comp.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()
        {
            return Err(bad());
        }
        let mut run = 0usize;
        let mut prev_sep = 0u8;
        for &c in b {
            if c.is_ascii_alphanumeric() {
                run = 0;
            } else if b"-._:@+".contains(&c) {
                run += 1;
                if run > 2 || (run == 2 && !(prev_sep == b'-' && c == b'-')) {
                    return Err(bad());
                }
                prev_sep = c;
            } else {
                return Err(bad());
            }
        }
    }
    Ok(s)
}

impl FromStr for ImageRef {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Docker(r) => write!(f, "docker://{r}"),
            ImageRef::Oci { dir, name } | ImageRef::OciArchive { file: dir, name } => {
                write!(f, "{}:{}", self.transport(), dir.display())?;
                match name {
                    Some(n) => write!(f, ":{n}"),
                    None => Ok(()),
                }
            }
            ImageRef::DockerArchive { file, selector } => {
                write!(f, "docker-archive:{}", file.display())?;
                match selector {
                    Some(ArchiveSelector::Named(r)) => write!(f, ":{r}"),
                    Some(ArchiveSelector::Index(i)) => write!(f, ":@{i}"),
                    None => Ok(()),
                }
            }
            ImageRef::Dir { dir } => write!(f, "dir:{}", dir.display()),
            ImageRef::Hoist { name } => write!(f, "hoist:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, &str)] = &[
            (
                "docker://alpine",
                "docker://docker.io/library/alpine:latest",
            ),
            (
                "docker://127.0.0.1:5000/ns/r:v1",
                "docker://127.0.0.1:5000/ns/r:v1",
            ),
            ("oci:/tmp/lay", "oci:/tmp/lay"),
            ("oci:/tmp/lay:v1.0", "oci:/tmp/lay:v1.0"),
            ("oci:rel:", "oci:rel"),
            ("oci-archive:/a.tar:x/y", "oci-archive:/a.tar:x/y"),
            ("docker-archive:/a.tar", "docker-archive:/a.tar"),
            ("docker-archive:/a.tar:@2", "docker-archive:/a.tar:@2"),
            (
                "docker-archive:/a.tar:busybox:1",
                "docker-archive:/a.tar:docker.io/library/busybox:1",
            ),
            ("dir:/x:y", "dir:/x:y"),
            ("hoist:alpine", "hoist:alpine"),
            ("alpine", "hoist:alpine"),
            ("localhost:5000/a:b", "hoist:localhost:5000/a:b"),
            ("sha256:abc", "hoist:sha256:abc"),
        ];
        for (input, want) in cases {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&r.to_string(), want, "{input}");
        }
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "docker:alpine",
            "docker://",
            "docker://host.example/UP",
            "oci:",
            "oci::tag",
            "oci:/x:bad tag",
            "oci:/x:-lead",
            "dir:",
            "hoist:",
            "",
            "docker-archive:/a.tar:@x",
            "docker-archive:/a.tar:repo@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "has space",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn ref_names() {
        for ok in ["latest", "v1.0", "a/b", "a--b", "x:y@z", "1"] {
            assert!(check_ref_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a/", "/a", "a b", "a-.b", "ü"] {
            assert!(check_ref_name(bad).is_err(), "{bad}");
        }
    }
}
