//! The Distribution API's request grammar, pure: routes, repository names, tags, digests,
//! `Range`, `Accept` and paging. No I/O; table-tested.

use hoist_types::Digest;

use crate::error::ApiError;

/// Longest repository name accepted (Distribution's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Most entries one `tags/list` or `_catalog` page holds: a larger `n` is capped to it.
pub const MAX_PAGE: usize = 10_000;

/// What a request path under `/v2/` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags {
        /// Repository name.
        name: String,
    },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        /// Repository name.
        name: String,
        /// A tag or a digest.
        reference: ManifestRef,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// Repository name.
        name: String,
        /// The blob.
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/[<id>]`.
    Upload {
        /// Repository name.
        name: String,
    },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers {
        /// Repository name.
        name: String,
        /// The subject manifest.
        digest: Digest,
    },
}

/// A manifest reference from a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    /// A tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
    Tag(String),
    /// A digest (sha256 or sha512, strict).
    Digest(Digest),
}

/// Parse the raw (not percent-decoded) request path. A percent sign, `..`, empty
/// components and anything outside the grammar are refused, so nothing a client sends
/// reaches a file name unchecked.
pub fn parse_route(path: &str) -> Result<Route, ApiError> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Err(ApiError::NotFound);
    };
    let rest = match rest {
        "" | "/" => return Ok(Route::Base),
        r => r.strip_prefix('/').ok_or(ApiError::NotFound)?,
    };
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags {
            name: check_name(name)?,
        });
    }
    if let Some(i) = rest.rfind("/blobs/uploads") {
        let after = &rest[i + "/blobs/uploads".len()..];
        if after.is_empty() || after.starts_with('/') {
            return Ok(Route::Upload {
                name: check_name(&rest[..i])?,
            });
        }
    }
    // A reference or digest with a slash in it (`sha256:../../x`) is refused as what it
    // claims to be when no other route matches.
    let mut slashed = None;
    for (marker, kind) in [("/manifests/", 0), ("/blobs/", 1), ("/referrers/", 2)] {
        let Some(i) = rest.rfind(marker) else {
            continue;
        };
        let (name, arg) = (&rest[..i], &rest[i + marker.len()..]);
        if arg.contains('/') {
            slashed.get_or_insert(if kind == 0 {
                ApiError::TagInvalid {
                    tag: arg.to_owned(),
                }
            } else {
                ApiError::DigestInvalid {
                    digest: arg.to_owned(),
                }
            });
            continue;
        }
        let name = check_name(name)?;
        return Ok(match kind {
            0 => Route::Manifest {
                name,
                reference: parse_manifest_ref(arg)?,
            },
            1 => Route::Blob {
                name,
                digest: parse_digest(arg)?,
            },
            _ => Route::Referrers {
                name,
                digest: parse_digest(arg)?,
            },
        });
    }
    Err(slashed.unwrap_or(ApiError::NotFound))
}

/// A digest from a path: strict grammar, sha256 or sha512 only.
pub fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).map_err(|_| ApiError::DigestInvalid {
        digest: s.to_owned(),
    })
}

/// A tag or a digest (anything with a colon is read as a digest).
pub fn parse_manifest_ref(s: &str) -> Result<ManifestRef, ApiError> {
    if s.contains(':') {
        return parse_digest(s).map(ManifestRef::Digest);
    }
    if is_tag(s) {
        Ok(ManifestRef::Tag(s.to_owned()))
    } else {
        Err(ApiError::TagInvalid { tag: s.to_owned() })
    }
}

/// The tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Check a repository name against the Distribution grammar: components of lowercase
/// alphanumerics joined by `.`, `_`, `__` or runs of `-`, separated by `/`; at most
/// [`MAX_NAME_LEN`] bytes.
pub fn check_name(name: &str) -> Result<String, ApiError> {
    let bad = || ApiError::NameInvalid {
        name: name.to_owned(),
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(bad());
    }
    for comp in name.split('/') {
        if !is_component(comp) {
            return Err(bad());
        }
    }
    Ok(name.to_owned())
}

fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__", or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// What a `Range` header asks of a body of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No range (absent, another unit, or several ranges): the whole body, 200.
    Full,
    /// One satisfiable range, inclusive bounds: 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Malformed, or no byte of it inside the body: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Interpret a `Range` header for a body of `size` bytes, as Go's `http.ServeContent`
/// (and so the Distribution registry) does for one range: `a-b`, `a-` and `-n`; a
/// malformed `bytes=` range is 416. A unit other than `bytes` is ignored (RFC 9110), and
/// so are several ranges (the whole body is sent, which RFC 9110 allows).
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAnswer {
    let Some(h) = header else {
        return RangeAnswer::Full;
    };
    let h = h.trim();
    let Some(spec) = h.strip_prefix("bytes=") else {
        return if h.contains('=') {
            RangeAnswer::Full
        } else {
            RangeAnswer::Unsatisfiable
        };
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Unsatisfiable;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeAnswer::Unsatisfiable,
        // Suffix: the last n bytes.
        (true, false) => match num(b) {
            Some(0) | None => RangeAnswer::Unsatisfiable,
            Some(_) if size == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        },
        (false, open) => {
            let Some(start) = num(a) else {
                return RangeAnswer::Unsatisfiable;
            };
            let end = if open {
                size.saturating_sub(1)
            } else {
                match num(b) {
                    Some(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return RangeAnswer::Unsatisfiable,
                }
            };
            if start >= size {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial { start, end }
            }
        }
    }
}

/// Whether an `Accept` header lets the client take a manifest of `media_type`. No header,
/// `*/*` and `application/*` accept everything.
pub fn accepts(accept: &[&str], media_type: &str) -> bool {
    if accept.is_empty() {
        return true;
    }
    accept.iter().flat_map(|h| h.split(',')).any(|item| {
        let t = item.split(';').next().unwrap_or("").trim();
        t == media_type || t == "*/*" || t == "application/*"
    })
}

/// Paging of `tags/list` and `_catalog`: `n` (capped to [`MAX_PAGE`]) and `last`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// At most this many entries; `None`: all (still capped to [`MAX_PAGE`]).
    pub n: Option<usize>,
    /// Entries after this one (in sort order).
    pub last: Option<String>,
}

impl Page {
    /// From the query's `n` and `last`. `n` must be a non-negative integer; a huge one
    /// is capped, never used to size anything.
    pub fn parse(n: Option<&str>, last: Option<&str>) -> Result<Page, ApiError> {
        let n = match n {
            None | Some("") => None,
            Some(s) if s.bytes().all(|c| c.is_ascii_digit()) => {
                // Any run of digits is valid; beyond MAX_PAGE it means "as many as allowed".
                Some(s.parse::<usize>().unwrap_or(MAX_PAGE).min(MAX_PAGE))
            }
            Some(s) => {
                return Err(ApiError::PaginationInvalid { n: s.to_owned() });
            }
        };
        Ok(Page {
            n,
            last: last.filter(|l| !l.is_empty()).map(str::to_owned),
        })
    }

    /// One page of `sorted` (sorted, distinct), and whether more follow.
    pub fn apply<'a>(&self, sorted: &'a [String]) -> (&'a [String], bool) {
        let from = match &self.last {
            Some(l) => sorted.partition_point(|x| x.as_str() <= l.as_str()),
            None => 0,
        };
        let rest = &sorted[from..];
        let n = self.n.unwrap_or(MAX_PAGE);
        if rest.len() > n {
            // An empty page never links to a next one (its `last` would not move).
            (&rest[..n], n > 0)
        } else {
            (rest, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn routes() {
        let dg = Digest::parse(&d('a')).unwrap();
        let cases: Vec<(String, Result<Route, &str>)> = vec![
            ("/v2/".into(), Ok(Route::Base)),
            ("/v2".into(), Ok(Route::Base)),
            ("/v2/_catalog".into(), Ok(Route::Catalog)),
            (
                "/v2/ns/app/tags/list".into(),
                Ok(Route::Tags {
                    name: "ns/app".into(),
                }),
            ),
            (
                "/v2/ns/app/manifests/1.0".into(),
                Ok(Route::Manifest {
                    name: "ns/app".into(),
                    reference: ManifestRef::Tag("1.0".into()),
                }),
            ),
            (
                format!("/v2/a/manifests/b/manifests/{}", d('a')),
                Ok(Route::Manifest {
                    name: "a/manifests/b".into(),
                    reference: ManifestRef::Digest(dg.clone()),
                }),
            ),
            (
                format!("/v2/x/blobs/{}", d('a')),
                Ok(Route::Blob {
                    name: "x".into(),
                    digest: dg.clone(),
                }),
            ),
            (
                format!("/v2/x/referrers/{}", d('a')),
                Ok(Route::Referrers {
                    name: "x".into(),
                    digest: dg.clone(),
                }),
            ),
            (
                "/v2/x/blobs/uploads/".into(),
                Ok(Route::Upload { name: "x".into() }),
            ),
            (
                "/v2/x/blobs/uploads/abc".into(),
                Ok(Route::Upload { name: "x".into() }),
            ),
            ("/v2/../etc/manifests/x".into(), Err("NAME_INVALID")),
            ("/v2/a/../b/manifests/x".into(), Err("NAME_INVALID")),
            ("/v2/%2e%2e/manifests/x".into(), Err("NAME_INVALID")),
            ("/v2/A/manifests/x".into(), Err("NAME_INVALID")),
            ("/v2//a/manifests/x".into(), Err("NAME_INVALID")),
            ("/v2/a/manifests/..".into(), Err("TAG_INVALID")),
            ("/v2/a/manifests/.hidden".into(), Err("TAG_INVALID")),
            (
                "/v2/a/blobs/sha256:..%2f..%2fx".into(),
                Err("DIGEST_INVALID"),
            ),
            (
                "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".into(),
                Err("DIGEST_INVALID"),
            ),
            (format!("/v2/a/blobs/{}", d('A')), Err("DIGEST_INVALID")),
            ("/v2/a/blobs/sha384:00".into(), Err("DIGEST_INVALID")),
            ("/v2/a/manifests/sha256:abc".into(), Err("DIGEST_INVALID")),
            ("/v2/a/wat".into(), Err("NOT_FOUND")),
            ("/v1/_ping".into(), Err("NOT_FOUND")),
            ("/v2/a/manifests/x/y".into(), Err("TAG_INVALID")),
            ("/v2/a/blobs/sha256:../../x".into(), Err("DIGEST_INVALID")),
            (
                format!("/v2/{}/tags/list", "a".repeat(256)),
                Err("NAME_INVALID"),
            ),
        ];
        for (path, want) in cases {
            let got = parse_route(&path);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{path}"),
                (Err(e), Err(code)) => assert_eq!(e.code(), *code, "{path}"),
                _ => panic!("{path}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn names() {
        for ok in [
            "a",
            "ns/app",
            "a.b/c_d/e__f/g-h/i---j",
            "0/1",
            "library/alpine",
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/", "a/", "/a", "a//b", ".", "..", "a/../b", "a/./b", "A", "a_", "-a", "a.",
            "a___b", "a..b", "a._b", "a b", "a%2fb", "a:b", "a@b",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        use RangeAnswer::*;
        let p = |start, end| Partial { start, end };
        let cases: Vec<(Option<&str>, u64, RangeAnswer)> = vec![
            (None, 10, Full),
            (Some("bytes=0-4"), 10, p(0, 4)),
            (Some("bytes=500-1499"), 2000, p(500, 1499)),
            (Some("bytes=500-1499"), 1000, p(500, 999)),
            (Some("bytes=500-"), 2000, p(500, 1999)),
            (Some("bytes=-500"), 2000, p(1500, 1999)),
            (Some("bytes=-5000"), 2000, p(0, 1999)),
            (Some("bytes=2000-"), 2000, Unsatisfiable),
            (Some("bytes=2000-2100"), 2000, Unsatisfiable),
            (Some("bytes=5-4"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=-"), 10, Unsatisfiable),
            (Some("bytes=a-b"), 10, Unsatisfiable),
            (Some("bytes=0x1-2"), 10, Unsatisfiable),
            (Some("bytes=+1-2"), 10, Unsatisfiable),
            (Some("bytes=99999999999999999999999-"), 10, Unsatisfiable),
            (Some("bytes=1"), 10, Unsatisfiable),
            (Some("garbage"), 10, Unsatisfiable),
            (Some("bytes=0-0"), 0, Unsatisfiable),
            (Some("bytes=-1"), 0, Unsatisfiable),
            (Some("items=0-1"), 10, Full),
            (Some("bytes=0-1,3-4"), 10, Full),
        ];
        for (h, size, want) in cases {
            assert_eq!(parse_range(h, size), want, "{h:?} of {size}");
        }
    }

    #[test]
    fn accept() {
        let idx = "application/vnd.oci.image.index.v1+json";
        assert!(accepts(&[], idx));
        assert!(accepts(&["application/json, */*"], idx));
        assert!(accepts(&[&format!("{idx};q=0.5")], idx));
        assert!(!accepts(
            &["application/vnd.oci.image.manifest.v1+json"],
            idx
        ));
        assert!(accepts(
            &["application/vnd.oci.image.manifest.v1+json", idx],
            idx
        ));
    }

    #[test]
    fn paging() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let page = |n: Option<&str>, last: Option<&str>| {
            let p = Page::parse(n, last).unwrap();
            let (v, more) = p.apply(&all);
            (v.join(","), more)
        };
        assert_eq!(page(None, None), ("a,b,c,d".into(), false));
        assert_eq!(page(Some("2"), None), ("a,b".into(), true));
        assert_eq!(page(Some("2"), Some("b")), ("c,d".into(), false));
        assert_eq!(page(Some("2"), Some("bb")), ("c,d".into(), false));
        assert_eq!(page(Some("0"), None), ("".into(), false));
        assert_eq!(page(Some("4"), None), ("a,b,c,d".into(), false));
        assert_eq!(page(None, Some("d")), ("".into(), false));
        assert_eq!(
            page(Some("99999999999999999999999999999"), None),
            ("a,b,c,d".into(), false)
        );
        for bad in ["-1", "x", "1.5", " 1"] {
            assert_eq!(
                Page::parse(Some(bad), None).unwrap_err().code(),
                "PAGINATION_NUMBER_INVALID"
            );
        }
    }
}
